//! Registry authorization as the distribution spec describes it: a 401
//! names its challenges (`WWW-Authenticate`); Basic sends the credentials,
//! Bearer trades them (or nothing, anonymously) at the token realm for a
//! token scoped to the repository and actions. Tokens are kept per host
//! and scope until they expire, then fetched again.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method};

use super::transport::{Connector, Payload, read_body};
use crate::error::{Error, ErrorKind, Result};

/// What a credential source answers for a host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Credentials {
    /// A user name and password (or token used as one).
    Basic {
        /// The user name.
        username: String,
        /// The password.
        secret: String,
    },
    /// An OAuth2 refresh token, traded at the realm.
    Refresh(String),
    /// A whole `Authorization` header value, sent as given.
    Header(String),
}

/// What credential sources return.
pub type CredentialsFuture<'a> = Pin<Box<dyn Future<Output = Result<Option<Credentials>>> + Send + 'a>>;

/// Where credentials come from: the client through its auth stream, a
/// docker config.json, or nowhere.
pub trait CredentialSource: Send + Sync {
    /// The credentials for `host` when pulling or pushing `reference`,
    /// given the registry's challenges; None for anonymous.
    fn credentials<'a>(&'a self, host: &'a str, reference: &'a str, challenges: &'a [String]) -> CredentialsFuture<'a>;
}

/// No credentials: anonymous access only.
#[derive(Debug)]
pub struct Anonymous;

impl CredentialSource for Anonymous {
    fn credentials<'a>(&'a self, _: &'a str, _: &'a str, _: &'a [String]) -> CredentialsFuture<'a> {
        Box::pin(async { Ok(None) })
    }
}

/// Credentials from a docker-style `config.json` (`auths.<host>.auth`,
/// `username`/`password`, or `identitytoken`).
#[derive(Debug, Default)]
pub struct DockerConfig {
    hosts: HashMap<String, Credentials>,
}

impl DockerConfig {
    /// Reads `path`; a missing file gives no credentials, a malformed one
    /// is an error naming it.
    pub fn load(path: &std::path::Path) -> Result<Self> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(e) => return Err(Error::io(path.display(), &e)),
        };
        Self::parse(&text).map_err(|e| e.with_context(path.display()))
    }

    /// Parses a config.json's text.
    pub fn parse(text: &str) -> Result<Self> {
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(|e| Error::invalid_argument(format!("not JSON: {e}")))?;
        let mut hosts = HashMap::new();
        let Some(auths) = value.get("auths").and_then(|a| a.as_object()) else {
            return Ok(Self { hosts });
        };
        for (key, entry) in auths {
            let host = key
                .trim_start_matches("https://")
                .trim_start_matches("http://")
                .split('/')
                .next()
                .unwrap_or_default();
            let host = if host == "index.docker.io" {
                super::reference::DOCKER_HUB
            } else {
                host
            };
            let text = |field: &str| {
                entry
                    .get(field)
                    .and_then(|v| v.as_str())
                    .unwrap_or_default()
                    .to_string()
            };
            let credentials = if !text("identitytoken").is_empty() {
                Credentials::Refresh(text("identitytoken"))
            } else if !text("auth").is_empty() {
                let decoded = base64::engine::general_purpose::STANDARD
                    .decode(text("auth"))
                    .map_err(|e| Error::invalid_argument(format!("auths.{key}.auth: {e}")))?;
                let decoded = String::from_utf8(decoded)
                    .map_err(|_| Error::invalid_argument(format!("auths.{key}.auth is not UTF-8")))?;
                let (username, secret) = decoded
                    .split_once(':')
                    .ok_or_else(|| Error::invalid_argument(format!("auths.{key}.auth is not user:password")))?;
                Credentials::Basic {
                    username: username.to_string(),
                    secret: secret.to_string(),
                }
            } else if !text("username").is_empty() {
                Credentials::Basic {
                    username: text("username"),
                    secret: text("password"),
                }
            } else {
                continue;
            };
            hosts.insert(host.to_string(), credentials);
        }
        Ok(Self { hosts })
    }
}

impl CredentialSource for DockerConfig {
    fn credentials<'a>(&'a self, host: &'a str, _: &'a str, _: &'a [String]) -> CredentialsFuture<'a> {
        let found = self.hosts.get(host).cloned();
        Box::pin(async move { Ok(found) })
    }
}

/// The first source that has credentials for a host.
pub struct Chain(pub Vec<Arc<dyn CredentialSource>>);

impl std::fmt::Debug for Chain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Chain({} sources)", self.0.len())
    }
}

impl CredentialSource for Chain {
    fn credentials<'a>(&'a self, host: &'a str, reference: &'a str, challenges: &'a [String]) -> CredentialsFuture<'a> {
        Box::pin(async move {
            for source in &self.0 {
                if let Some(found) = source.credentials(host, reference, challenges).await? {
                    return Ok(Some(found));
                }
            }
            Ok(None)
        })
    }
}

/// One challenge of a `WWW-Authenticate` header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Challenge {
    /// `basic` or `bearer`, lowercased.
    pub scheme: String,
    /// Its parameters (`realm`, `service`, `scope`).
    pub params: HashMap<String, String>,
}

/// Parses the challenges of `WWW-Authenticate` values.
pub fn parse_challenges(values: &[String]) -> Vec<Challenge> {
    let mut out: Vec<Challenge> = Vec::new();
    for value in values {
        let mut rest = value.trim();
        while !rest.is_empty() {
            rest = rest.trim_start_matches([',', ' ']);
            let token_end = rest.find([' ', ',', '=']).unwrap_or(rest.len());
            let token = &rest[..token_end];
            let after = &rest[token_end..];
            if token.is_empty() {
                break;
            }
            if !after.trim_start().starts_with('=') {
                out.push(Challenge {
                    scheme: token.to_ascii_lowercase(),
                    params: HashMap::new(),
                });
                rest = after;
                continue;
            }
            // A parameter of the current challenge.
            let after = after.trim_start()[1..].trim_start();
            let (param, remaining) = if let Some(quoted) = after.strip_prefix('"') {
                let mut value = String::new();
                let mut chars = quoted.char_indices();
                let mut end = quoted.len();
                while let Some((i, c)) = chars.next() {
                    match c {
                        '\\' => {
                            if let Some((_, next)) = chars.next() {
                                value.push(next);
                            }
                        }
                        '"' => {
                            end = i + 1;
                            break;
                        }
                        c => value.push(c),
                    }
                }
                (value, &quoted[end.min(quoted.len())..])
            } else {
                let end = after.find(',').unwrap_or(after.len());
                (after[..end].trim().to_string(), &after[end..])
            };
            if let Some(current) = out.last_mut() {
                current.params.insert(token.to_ascii_lowercase(), param);
            }
            rest = remaining;
        }
    }
    out
}

/// What is known about authorizing at one host.
#[derive(Clone, Debug)]
enum HostAuth {
    /// Send this header on every request.
    Fixed(HeaderValue),
    /// Fetch tokens at this challenge's realm, kept per scope.
    Bearer {
        challenge: Challenge,
        credentials: Option<Credentials>,
        tokens: HashMap<String, (HeaderValue, Instant)>,
    },
}

/// Authorizes requests to registry hosts, keeping what it learnt.
pub struct Authorizer {
    source: Arc<dyn CredentialSource>,
    hosts: Mutex<HashMap<String, HostAuth>>,
}

impl std::fmt::Debug for Authorizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authorizer").finish_non_exhaustive()
    }
}

/// A token's lifetime when the realm does not say.
const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(60);
/// The largest token response read.
const MAX_TOKEN_RESPONSE: usize = 1 << 20;

impl Authorizer {
    /// An authorizer asking `source` for credentials.
    pub fn new(source: Arc<dyn CredentialSource>) -> Self {
        Self {
            source,
            hosts: Mutex::new(HashMap::new()),
        }
    }

    /// The header to send to `host` for `scope`, if one is known and fresh.
    pub fn header(&self, host: &str, scope: &str) -> Option<HeaderValue> {
        let hosts = self.hosts.lock().unwrap_or_else(|e| e.into_inner());
        match hosts.get(host)? {
            HostAuth::Fixed(value) => Some(value.clone()),
            HostAuth::Bearer { tokens, .. } => tokens
                .get(scope)
                .filter(|(_, expires)| Instant::now() < *expires)
                .map(|(value, _)| value.clone()),
        }
    }

    /// Answers a 401 from `host` for `reference` (`scope` being what the
    /// request needs): learns the challenge, asks for credentials, fetches a
    /// token where the challenge is Bearer. Returns the header to retry with.
    pub async fn unauthorized(
        &self,
        connector: &Connector,
        host: &str,
        reference: &str,
        scope: &str,
        www_authenticate: &[String],
    ) -> Result<HeaderValue> {
        let challenges = parse_challenges(www_authenticate);
        let denied = |why: &str| {
            Error::new(
                ErrorKind::PermissionDenied,
                format!("registry {host}, {reference}: {why}"),
            )
        };
        let known = {
            let hosts = self.hosts.lock().unwrap_or_else(|e| e.into_inner());
            hosts.get(host).cloned()
        };
        let bearer = challenges.iter().find(|c| c.scheme == "bearer");
        let basic = challenges.iter().any(|c| c.scheme == "basic");
        let credentials = match &known {
            Some(HostAuth::Bearer { credentials, .. }) => credentials.clone(),
            // Fixed credentials that were refused again are wrong.
            Some(HostAuth::Fixed(_)) => return Err(denied("the registry refused the credentials")),
            None => self.source.credentials(host, reference, www_authenticate).await?,
        };
        if let Some(challenge) = bearer {
            let scope = challenge
                .params
                .get("scope")
                .filter(|s| !s.is_empty())
                .cloned()
                .unwrap_or_else(|| scope.to_string());
            let (token, lifetime) = fetch_token(connector, challenge, &scope, credentials.as_ref())
                .await
                .map_err(|e| e.with_context(format!("registry {host}, {reference}")))?;
            let value = HeaderValue::from_str(&format!("Bearer {token}"))
                .map_err(|_| denied("the token is not a header value"))?;
            let mut hosts = self.hosts.lock().unwrap_or_else(|e| e.into_inner());
            let entry = hosts.entry(host.to_string()).or_insert_with(|| HostAuth::Bearer {
                challenge: challenge.clone(),
                credentials: credentials.clone(),
                tokens: HashMap::new(),
            });
            if let HostAuth::Bearer {
                tokens, challenge: c, ..
            } = entry
            {
                *c = challenge.clone();
                tokens.insert(scope.to_string(), (value.clone(), Instant::now() + lifetime));
            }
            return Ok(value);
        }
        if basic || challenges.is_empty() {
            let value = match credentials {
                Some(Credentials::Basic { username, secret }) => basic_header(&username, &secret),
                Some(Credentials::Header(header)) => header,
                Some(Credentials::Refresh(_)) => return Err(denied("a refresh token needs a Bearer challenge")),
                None => return Err(denied("the registry asks for credentials and none are configured")),
            };
            let value = HeaderValue::from_str(&value).map_err(|_| denied("the credentials are not a header value"))?;
            self.hosts
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(host.to_string(), HostAuth::Fixed(value.clone()));
            return Ok(value);
        }
        Err(denied(&format!("unsupported challenge {:?}", www_authenticate)))
    }

    /// Forgets what was learnt for `host` after the registry refused it.
    pub fn forget(&self, host: &str) {
        self.hosts.lock().unwrap_or_else(|e| e.into_inner()).remove(host);
    }
}

fn basic_header(username: &str, secret: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{username}:{secret}"))
    )
}

/// Gets a token at the challenge's realm: GET with Basic credentials (or
/// none), or an OAuth2 POST for a refresh token.
async fn fetch_token(
    connector: &Connector,
    challenge: &Challenge,
    scope: &str,
    credentials: Option<&Credentials>,
) -> Result<(String, Duration)> {
    let realm = challenge
        .params
        .get("realm")
        .ok_or_else(|| Error::new(ErrorKind::PermissionDenied, "the Bearer challenge names no realm"))?;
    let service = challenge.params.get("service").cloned().unwrap_or_default();
    let mut headers = HeaderMap::new();
    let (method, url, body) = match credentials {
        Some(Credentials::Refresh(token)) => {
            headers.insert(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static("application/x-www-form-urlencoded"),
            );
            let form = format!(
                "grant_type=refresh_token&client_id=berth&service={}&scope={}&refresh_token={}",
                encode(&service),
                encode(scope),
                encode(token)
            );
            (Method::POST, realm.clone(), Payload::Bytes(Bytes::from(form)))
        }
        other => {
            match other {
                Some(Credentials::Basic { username, secret }) => {
                    if let Ok(value) = HeaderValue::from_str(&basic_header(username, secret)) {
                        headers.insert(http::header::AUTHORIZATION, value);
                    }
                }
                Some(Credentials::Header(value)) => {
                    if let Ok(value) = HeaderValue::from_str(value) {
                        headers.insert(http::header::AUTHORIZATION, value);
                    }
                }
                _ => {}
            }
            let separator = if realm.contains('?') { '&' } else { '?' };
            let mut url = format!("{realm}{separator}service={}", encode(&service));
            if !scope.is_empty() {
                url.push_str(&format!("&scope={}", encode(scope)));
            }
            (Method::GET, url, Payload::empty())
        }
    };
    let response = connector.send(method, &url, &headers, body).await?;
    let status = response.status();
    let body = read_body(
        response.into_body(),
        MAX_TOKEN_RESPONSE,
        connector.stall_timeout(),
        "the token response",
    )
    .await?;
    if status == http::StatusCode::UNAUTHORIZED || status == http::StatusCode::FORBIDDEN {
        return Err(Error::new(
            ErrorKind::PermissionDenied,
            format!("the token realm {realm} refused the credentials ({status})"),
        ));
    }
    if !status.is_success() {
        return Err(Error::unavailable(format!("the token realm {realm} answered {status}")));
    }
    let answer: serde_json::Value = serde_json::from_slice(&body)
        .map_err(|e| Error::unavailable(format!("the token realm {realm} answered no JSON: {e}")))?;
    let token = answer
        .get("token")
        .or_else(|| answer.get("access_token"))
        .and_then(|t| t.as_str())
        .filter(|t| !t.is_empty())
        .ok_or_else(|| Error::unavailable(format!("the token realm {realm} answered no token")))?;
    let lifetime = answer
        .get("expires_in")
        .and_then(|e| e.as_u64())
        .filter(|&s| s > 0)
        .map_or(DEFAULT_TOKEN_LIFETIME, Duration::from_secs);
    // Refresh a little before the realm's expiry.
    let lifetime = lifetime.saturating_sub(lifetime / 10);
    Ok((token.to_string(), lifetime))
}

/// Percent-encodes a query value.
fn encode(value: &str) -> String {
    let mut out = String::new();
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges_parse_with_quotes_and_several_schemes() {
        let c = parse_challenges(&[
            r#"Bearer realm="https://auth.example/token",service="reg",scope="repository:a/b:pull,push""#.into(),
            "Basic realm=x".into(),
        ]);
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].scheme, "bearer");
        assert_eq!(c[0].params["realm"], "https://auth.example/token");
        assert_eq!(c[0].params["scope"], "repository:a/b:pull,push");
        assert_eq!(c[1].scheme, "basic");
        assert_eq!(c[1].params["realm"], "x");
    }

    #[test]
    fn docker_config_entries() {
        let config = DockerConfig::parse(
            r#"{"auths":{"https://index.docker.io/v1/":{"auth":"dTpw"},"127.0.0.1:5000":{"username":"a","password":"b"},"t.example":{"identitytoken":"r"}}}"#,
        )
        .unwrap();
        assert_eq!(
            config.hosts["docker.io"],
            Credentials::Basic {
                username: "u".into(),
                secret: "p".into()
            }
        );
        assert!(matches!(&config.hosts["127.0.0.1:5000"], Credentials::Basic { username, .. } if username == "a"));
        assert_eq!(config.hosts["t.example"], Credentials::Refresh("r".into()));
        assert!(DockerConfig::parse(r#"{"auths":{"x":{"auth":"!!"}}}"#).is_err());
    }

    #[test]
    fn query_values_are_encoded() {
        assert_eq!(encode("repository:a/b:pull"), "repository%3Aa%2Fb%3Apull");
    }
}
