//! A token server for a registry's token auth, as the distribution spec
//! describes it: `GET /token?service=S&scope=repository:NAME:ACTIONS` with
//! Basic credentials answers `{"token": JWT}`, an RS256 JWT whose `x5c`
//! chain is a certificate of a CA the registry's `rootcertbundle` trusts.
//! Signed with `openssl` at request time.

use std::io::{BufRead as _, BufReader, Write as _};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use base64::Engine as _;

use crate::certificates::{Authority, Issued};

/// The registry's `service` and the tokens' issuer.
pub const SERVICE: &str = "berth-test-registry";
const ISSUER: &str = "berth-test-issuer";

/// A running token server; stops when dropped.
pub struct TokenServer {
    /// `http://127.0.0.1:<port>/token`.
    pub realm: String,
    /// The CA the registry must trust (`rootcertbundle`).
    pub ca: PathBuf,
    /// Tokens handed out.
    pub issued: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl std::fmt::Debug for TokenServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenServer").field("realm", &self.realm).finish()
    }
}

impl TokenServer {
    /// Serves tokens to `user`:`password`, signing in `dir`.
    pub fn start(dir: &Path, user: &str, password: &str) -> Self {
        let authority = Authority::new(dir, "token-ca");
        let signer = authority.server("token-signer");
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let realm = format!("http://{}/token", listener.local_addr().expect("address"));
        let expected = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
        );
        let (stop, issued) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicUsize::new(0)));
        let (stop_flag, count) = (Arc::clone(&stop), Arc::clone(&issued));
        let user = user.to_string();
        std::thread::spawn(move || {
            while !stop_flag.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let _ = stream.set_nonblocking(false);
                        let _ = serve(stream, &signer, &expected, &user, &count);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        Self {
            realm,
            ca: authority.cert(),
            issued,
            stop,
        }
    }

    /// The registry config's `auth:` section for this server, indented.
    pub fn registry_auth(&self) -> String {
        format!(
            "  token:\n    realm: {}\n    service: {SERVICE}\n    issuer: {ISSUER}\n    rootcertbundle: {}\n",
            self.realm,
            self.ca.display()
        )
    }
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn serve(
    stream: std::net::TcpStream,
    signer: &Issued,
    expected: &str,
    user: &str,
    issued: &AtomicUsize,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut authorization = String::new();
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header)? == 0 || header == "\r\n" {
            break;
        }
        if let Some((name, value)) = header.split_once(':')
            && name.eq_ignore_ascii_case("authorization")
        {
            authorization = value.trim().to_string();
        }
    }
    let mut stream = stream;
    if authorization != expected {
        let body = r#"{"errors":[{"code":"UNAUTHORIZED","message":"bad credentials"}]}"#;
        return write!(
            stream,
            "HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
    }
    let target = line.split(' ').nth(1).unwrap_or("/");
    let query = target.split_once('?').map_or("", |(_, q)| q);
    let mut access = Vec::new();
    for pair in query.split('&') {
        if let Some(scope) = pair.strip_prefix("scope=") {
            let scope = decode(scope);
            let parts: Vec<&str> = scope.splitn(3, ':').collect();
            if parts.len() == 3 {
                access.push(serde_json::json!({
                    "type": parts[0],
                    "name": parts[1],
                    "actions": parts[2].split(',').collect::<Vec<_>>(),
                }));
            }
        }
    }
    let token = sign(signer, user, access);
    issued.fetch_add(1, Ordering::Relaxed);
    let body = serde_json::json!({"token": token, "expires_in": 300}).to_string();
    write!(
        stream,
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

fn decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Ok(b) = u8::from_str_radix(&text[i + 1..i + 3], 16)
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(if bytes[i] == b'+' { b' ' } else { bytes[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// An RS256 JWT for `access`, its x5c the signer's certificate.
fn sign(signer: &Issued, user: &str, access: Vec<serde_json::Value>) -> String {
    let url = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let pem = std::fs::read_to_string(&signer.cert).expect("signer certificate");
    let der_b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let header = serde_json::json!({"typ": "JWT", "alg": "RS256", "x5c": [der_b64]});
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = serde_json::json!({
        "iss": ISSUER, "sub": user, "aud": SERVICE,
        "exp": now + 300, "nbf": now - 10, "iat": now,
        "jti": format!("{now}-{}", std::process::id()),
        "access": access,
    });
    let signing_input = format!("{}.{}", url.encode(header.to_string()), url.encode(claims.to_string()));
    let dir = tempfile::tempdir().expect("temp dir");
    let input = dir.path().join("input");
    std::fs::write(&input, &signing_input).expect("signing input");
    let out = Command::new(crate::binaries::host("openssl"))
        .args(["dgst", "-sha256", "-sign"])
        .arg(&signer.key)
        .arg(&input)
        .output()
        .expect("openssl dgst");
    assert!(
        out.status.success(),
        "signing: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    format!("{signing_input}.{}", url.encode(out.stdout))
}
