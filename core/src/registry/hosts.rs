//! Which endpoints serve a registry host: containerd's per-host directory
//! `<config_path>/<host>/hosts.toml` (mirrors in file order, then the
//! server), or the defaults when there is none (Docker Hub's real host;
//! plain HTTP for a loopback host on a port other than 443; HTTPS else).

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// What an endpoint may be used for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Capabilities {
    /// Fetch blobs and manifests by digest.
    pub pull: bool,
    /// Turn a tag into a digest.
    pub resolve: bool,
    /// Upload.
    pub push: bool,
}

impl Capabilities {
    /// Everything, as an entry that names none gets.
    pub const ALL: Self = Self {
        pull: true,
        resolve: true,
        push: true,
    };
}

/// One endpoint of a registry host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// `http` or `https`.
    pub scheme: String,
    /// `host[:port]` to connect to.
    pub host: String,
    /// The API's path prefix (`/v2`).
    pub path: String,
    /// What it serves.
    pub capabilities: Capabilities,
    /// CA certificates (PEM files) trusted beside the system's.
    pub ca: Vec<PathBuf>,
    /// Client certificate and key files (the key may share the cert's file).
    pub client: Vec<(PathBuf, Option<PathBuf>)>,
    /// Accept any server certificate.
    pub skip_verify: bool,
    /// Extra request headers.
    pub headers: Vec<(String, String)>,
}

/// The endpoints for `host`, in the order to try them. `default_scheme`
/// (from the request; empty for none) applies where no hosts.toml names one.
pub fn endpoints(config_path: &Path, host: &str, default_scheme: &str) -> Result<Vec<Endpoint>> {
    let mut list = match host_dir(config_path, host)? {
        Some(dir) => load(&dir)?,
        None => Vec::new(),
    };
    if list.is_empty() {
        list.push(blank());
    }
    let last = list.last_mut().expect("one endpoint at least");
    if last.host.is_empty() {
        last.path = "/v2".into();
        if host == super::reference::DOCKER_HUB {
            last.scheme = "https".into();
            last.host = "registry-1.docker.io".into();
        } else {
            last.host = host.to_string();
            last.scheme = if !default_scheme.is_empty() {
                default_scheme.to_string()
            } else if is_loopback(host) && !matches!(port_of(host), None | Some("443")) {
                "http".into()
            } else {
                "https".into()
            };
        }
    }
    for endpoint in &list {
        if endpoint.scheme != "http" && endpoint.scheme != "https" {
            return Err(Error::invalid_argument(format!(
                "registry host {host}: scheme {:?} is neither http nor https",
                endpoint.scheme
            )));
        }
    }
    Ok(list)
}

fn blank() -> Endpoint {
    Endpoint {
        scheme: String::new(),
        host: String::new(),
        path: "/v2".into(),
        capabilities: Capabilities::ALL,
        ca: Vec::new(),
        client: Vec::new(),
        skip_verify: false,
        headers: Vec::new(),
    }
}

fn port_of(host: &str) -> Option<&str> {
    let (_, port) = host.rsplit_once(':')?;
    (!port.contains(']')).then_some(port)
}

/// `localhost`, `127.0.0.0/8` and `::1`, with or without a port.
pub fn is_loopback(host: &str) -> bool {
    let name = match port_of(host) {
        Some(port) => &host[..host.len() - port.len() - 1],
        None => host,
    };
    let name = name.trim_start_matches('[').trim_end_matches(']');
    name == "localhost" || name.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// `<root>/<host with ':' as '_'>_`, `<root>/<host>`, then `<root>/_default`.
fn host_dir(root: &Path, host: &str) -> Result<Option<PathBuf>> {
    let mut candidates = Vec::new();
    if let Some(i) = host.rfind(':') {
        candidates.push(root.join(format!("{}_{}_", &host[..i], &host[i + 1..])));
    }
    candidates.push(root.join(host));
    candidates.push(root.join("_default"));
    for dir in candidates {
        match std::fs::metadata(&dir) {
            Ok(_) => return Ok(Some(dir)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(format!("registry host directory {}", dir.display()), &e)),
        }
    }
    Ok(None)
}

/// Reads `dir/hosts.toml`; a directory without one gives no endpoint.
fn load(dir: &Path) -> Result<Vec<Endpoint>> {
    let file = dir.join("hosts.toml");
    let text = match std::fs::read_to_string(&file) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(file.display(), &e)),
    };
    parse(dir, &text).map_err(|e| e.with_context(file.display().to_string()))
}

/// Parses a hosts.toml: `[host."URL"]` tables in file order, then the
/// top-level `server` with the top-level settings.
pub fn parse(base: &Path, text: &str) -> Result<Vec<Endpoint>> {
    let table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| Error::invalid_argument(e.message().to_string()))?;
    let mut list = Vec::new();
    if let Some(hosts) = table.get("host") {
        let hosts = hosts
            .as_table()
            .ok_or_else(|| Error::invalid_argument("host must be a table of URLs"))?;
        for (url, settings) in hosts {
            let settings = settings
                .as_table()
                .ok_or_else(|| Error::invalid_argument(format!("host {url:?} must be a table")))?;
            list.push(endpoint(base, url, settings)?);
        }
    }
    let server = table.get("server").and_then(|s| s.as_str()).unwrap_or("");
    let mut top = endpoint(base, server, &table)?;
    if server.is_empty() {
        top.host.clear();
        top.scheme.clear();
    }
    list.push(top);
    Ok(list)
}

fn endpoint(base: &Path, url: &str, settings: &toml::Table) -> Result<Endpoint> {
    let mut e = blank();
    let context = |what: &str| format!("host {url:?}: {what}");
    if !url.is_empty() {
        let url = if url.starts_with("http") {
            url.to_string()
        } else {
            format!("https://{url}")
        };
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| Error::invalid_argument(context("not a URL")))?;
        let (host, path) = match rest.find('/') {
            Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
            None => (rest, ""),
        };
        if host.is_empty() {
            return Err(Error::invalid_argument(context("no host")));
        }
        let override_path = settings.get("override_path").and_then(|v| v.as_bool()) == Some(true);
        e.scheme = scheme.to_string();
        e.host = host.to_string();
        e.path = if override_path || path.ends_with("/v2") {
            path.to_string()
        } else {
            format!("{path}/v2")
        };
    }
    if let Some(caps) = settings.get("capabilities") {
        let caps = caps
            .as_array()
            .ok_or_else(|| Error::invalid_argument(context("capabilities must be a list")))?;
        e.capabilities = Capabilities {
            pull: false,
            resolve: false,
            push: false,
        };
        for cap in caps {
            match cap.as_str().map(str::to_ascii_lowercase).as_deref() {
                Some("pull") => e.capabilities.pull = true,
                Some("resolve") => e.capabilities.resolve = true,
                Some("push") => e.capabilities.push = true,
                Some("referrers") => {}
                _ => return Err(Error::invalid_argument(context(&format!("unknown capability {cap}")))),
            }
        }
    }
    let absolute = |p: &str| {
        let p = Path::new(p);
        if p.is_absolute() { p.to_path_buf() } else { base.join(p) }
    };
    match settings.get("ca") {
        None => {}
        Some(toml::Value::String(s)) => e.ca.push(absolute(s)),
        Some(toml::Value::Array(list)) => {
            for item in list {
                let s = item
                    .as_str()
                    .ok_or_else(|| Error::invalid_argument(context("ca must list paths")))?;
                e.ca.push(absolute(s));
            }
        }
        Some(_) => return Err(Error::invalid_argument(context("ca must be a path or a list"))),
    }
    match settings.get("client") {
        None => {}
        Some(toml::Value::String(s)) => e.client.push((absolute(s), None)),
        Some(toml::Value::Array(list)) => {
            for item in list {
                match item {
                    toml::Value::String(s) => e.client.push((absolute(s), None)),
                    toml::Value::Array(pair) if pair.len() == 2 => {
                        let (Some(cert), Some(key)) = (pair[0].as_str(), pair[1].as_str()) else {
                            return Err(Error::invalid_argument(context("client pairs are two paths")));
                        };
                        e.client.push((absolute(cert), Some(absolute(key))));
                    }
                    _ => return Err(Error::invalid_argument(context("client must list paths or pairs"))),
                }
            }
        }
        Some(_) => return Err(Error::invalid_argument(context("client must be a path or a list"))),
    }
    if let Some(skip) = settings.get("skip_verify") {
        e.skip_verify = skip
            .as_bool()
            .ok_or_else(|| Error::invalid_argument(context("skip_verify must be true or false")))?;
    }
    if let Some(headers) = settings.get("header") {
        let headers = headers
            .as_table()
            .ok_or_else(|| Error::invalid_argument(context("header must be a table")))?;
        for (name, value) in headers {
            match value {
                toml::Value::String(v) => e.headers.push((name.clone(), v.clone())),
                toml::Value::Array(values) => {
                    for v in values {
                        let v = v
                            .as_str()
                            .ok_or_else(|| Error::invalid_argument(context("header values are strings")))?;
                        e.headers.push((name.clone(), v.to_string()));
                    }
                }
                _ => return Err(Error::invalid_argument(context("header values are strings"))),
            }
        }
    }
    Ok(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_without_a_host_directory() {
        let root = Path::new("/nonexistent");
        let hub = endpoints(root, "docker.io", "").unwrap();
        assert_eq!(
            (hub[0].scheme.as_str(), hub[0].host.as_str()),
            ("https", "registry-1.docker.io")
        );
        let local = endpoints(root, "127.0.0.1:5000", "").unwrap();
        assert_eq!(local[0].scheme, "http");
        assert_eq!(endpoints(root, "localhost:443", "").unwrap()[0].scheme, "https");
        assert_eq!(endpoints(root, "reg.example", "").unwrap()[0].scheme, "https");
        assert_eq!(endpoints(root, "reg.example", "http").unwrap()[0].scheme, "http");
    }

    #[test]
    fn mirrors_in_file_order_then_the_server() {
        let text = r#"
server = "https://reg.example"
ca = "ca.pem"

[host."http://zz-mirror:5000"]
  capabilities = ["pull", "resolve"]
  header = { x-a = "1" }

[host."https://aa-mirror/base"]
  capabilities = ["pull"]
  skip_verify = true
"#;
        let list = parse(Path::new("/etc/berth/certs.d/reg.example"), text).unwrap();
        assert_eq!(list.len(), 3);
        assert_eq!(
            (list[0].scheme.as_str(), list[0].host.as_str()),
            ("http", "zz-mirror:5000")
        );
        assert!(!list[0].capabilities.push && list[0].capabilities.resolve);
        assert_eq!(list[0].headers, vec![("x-a".to_string(), "1".to_string())]);
        assert_eq!(list[1].path, "/base/v2");
        assert!(list[1].skip_verify && !list[1].capabilities.resolve);
        assert_eq!(list[2].host, "reg.example");
        assert_eq!(list[2].ca, vec![PathBuf::from("/etc/berth/certs.d/reg.example/ca.pem")]);
    }

    #[test]
    fn bad_files_are_refused_by_name() {
        let e = parse(Path::new("/x"), "[host.\"https://m\"]\ncapabilities = [\"fly\"]").unwrap_err();
        assert!(e.to_string().contains("fly"), "{e}");
    }
}
