//! berthd's configuration file (`/etc/berth/config.toml`).
//!
//! The layout follows containerd's version 2 config where the settings
//! mean the same (`root`, `state`, `[grpc] address`, `disabled_plugins`,
//! `[plugins."<type>.<id>"]`), so an operator finds things where they
//! expect. Command-line flags override the file; the file overrides the
//! defaults `berthd config default` prints.

use std::path::{Path, PathBuf};

use berth_core::{Error, Result};
use serde::{Deserialize, Serialize};

/// Default persistent root.
pub const DEFAULT_ROOT: &str = "/var/lib/berth";
/// Default per-boot state directory.
pub const DEFAULT_STATE: &str = "/run/berth";
/// Default gRPC socket.
pub const DEFAULT_ADDRESS: &str = "/run/berth/berth.sock";
/// Default config file.
pub const DEFAULT_CONFIG: &str = "/etc/berth/config.toml";

/// The whole configuration.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Config layout version (2, as containerd's current layout).
    pub version: u32,
    /// Persistent data: metadata, content, snapshots.
    pub root: PathBuf,
    /// Per-boot state: bundles, shim sockets.
    pub state: PathBuf,
    /// Plugins not to load, as `<type>.<id>`.
    pub disabled_plugins: Vec<String>,
    /// The gRPC listener.
    pub grpc: GrpcConfig,
    /// The ttrpc listener shims send events to.
    pub ttrpc: TtrpcConfig,
    /// The metrics endpoint.
    pub metrics: MetricsConfig,
    /// How pulls through the Transfer service reach registries.
    pub registry: RegistrySection,
    /// Logging.
    pub debug: DebugConfig,
    /// Seconds a graceful shutdown waits for calls in flight.
    pub shutdown_timeout: u64,
    /// Per-plugin sections, keyed `<type>.<id>`.
    pub plugins: toml::Table,
}

/// `[grpc]`.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct GrpcConfig {
    /// Unix socket path.
    pub address: PathBuf,
    /// Owner of the socket.
    pub uid: u32,
    /// Group of the socket (members may use the daemon: mode is 0660).
    pub gid: u32,
    /// Largest request accepted, in bytes.
    pub max_recv_message_size: usize,
    /// Largest response sent, in bytes.
    pub max_send_message_size: usize,
    /// `host:port` to serve the same API on over TCP; empty for none.
    pub tcp_address: String,
    /// CA whose certificates clients must present (mutual TLS); empty
    /// for server-only TLS.
    pub tcp_tls_ca: PathBuf,
    /// The server's certificate chain (PEM).
    pub tcp_tls_cert: PathBuf,
    /// The server's private key (PEM).
    pub tcp_tls_key: PathBuf,
    /// Serve plain TCP without TLS (anyone who reaches the port owns the
    /// host): only when said explicitly.
    pub tcp_insecure: bool,
    /// Open connections at most, Unix socket and TCP together; past it a
    /// new connection is closed at once.
    pub max_connections: usize,
    /// Calls in flight on one connection at most (HTTP/2's
    /// SETTINGS_MAX_CONCURRENT_STREAMS: clients queue the others).
    pub max_concurrent_streams: u32,
    /// Seconds of silence after which a connection is pinged.
    pub keepalive_interval: u64,
    /// Seconds an unanswered ping waits before the connection is closed.
    pub keepalive_timeout: u64,
}

/// `[metrics]`, as containerd's.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// `host:port` serving `/v1/metrics`; empty for no listener.
    pub address: String,
    /// Also keep per-method handling-time histograms (more series).
    pub grpc_histogram: bool,
}

/// `[registry]`: the registry client of the Transfer service.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RegistrySection {
    /// The root of the per-host directories (`<host>/hosts.toml`), as
    /// containerd's `config_path`.
    pub config_path: PathBuf,
    /// A docker-style config.json with credentials per host; empty for
    /// none.
    pub docker_config: PathBuf,
    /// Seconds a registry transfer may send nothing before it fails.
    pub stall_timeout: u64,
    /// Seconds connecting to a registry may take.
    pub connect_timeout: u64,
    /// Blobs one pull downloads at once.
    pub max_concurrent_downloads: usize,
    /// The largest manifest, index or config accepted, in bytes.
    pub max_manifest_size: usize,
}

impl Default for RegistrySection {
    fn default() -> Self {
        Self {
            config_path: "/etc/berth/certs.d".into(),
            docker_config: PathBuf::new(),
            stall_timeout: 60,
            connect_timeout: 30,
            max_concurrent_downloads: 3,
            max_manifest_size: 4 << 20,
        }
    }
}

impl RegistrySection {
    /// The core's form of these settings.
    pub fn to_core(&self) -> berth_core::registry::RegistryConfig {
        berth_core::registry::RegistryConfig {
            config_path: self.config_path.clone(),
            connect_timeout: std::time::Duration::from_secs(self.connect_timeout.max(1)),
            stall_timeout: std::time::Duration::from_secs(self.stall_timeout.max(1)),
            max_manifest_size: self.max_manifest_size,
            attempts: 4,
            max_concurrent_downloads: self.max_concurrent_downloads.max(1),
            docker_config: (!self.docker_config.as_os_str().is_empty()).then(|| self.docker_config.clone()),
        }
    }
}

/// `[ttrpc]`.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct TtrpcConfig {
    /// Unix socket path; empty means `<grpc address>.ttrpc`.
    pub address: PathBuf,
}

/// `[debug]`.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct DebugConfig {
    /// trace, debug, info, warn or error.
    pub level: String,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            version: 2,
            root: DEFAULT_ROOT.into(),
            state: DEFAULT_STATE.into(),
            disabled_plugins: Vec::new(),
            grpc: GrpcConfig::default(),
            ttrpc: TtrpcConfig::default(),
            metrics: MetricsConfig::default(),
            registry: RegistrySection::default(),
            debug: DebugConfig::default(),
            shutdown_timeout: 10,
            plugins: toml::Table::new(),
        }
    }
}

impl Default for GrpcConfig {
    fn default() -> Self {
        Self {
            address: DEFAULT_ADDRESS.into(),
            uid: 0,
            gid: 0,
            max_recv_message_size: 16 << 20,
            max_send_message_size: 16 << 20,
            tcp_address: String::new(),
            tcp_tls_ca: PathBuf::new(),
            tcp_tls_cert: PathBuf::new(),
            tcp_tls_key: PathBuf::new(),
            tcp_insecure: false,
            max_connections: 1024,
            max_concurrent_streams: 1000,
            keepalive_interval: 7200,
            keepalive_timeout: 20,
        }
    }
}

impl GrpcConfig {
    /// The TCP listener's settings hang together: an address that parses,
    /// a certificate with its key, a CA only with them, and TLS unless
    /// `tcp_insecure` says otherwise.
    fn validate_limits(&self) -> Result<()> {
        for (name, value) in [
            ("grpc.max_connections", self.max_connections as u64),
            ("grpc.max_concurrent_streams", u64::from(self.max_concurrent_streams)),
            ("grpc.keepalive_interval", self.keepalive_interval),
            ("grpc.keepalive_timeout", self.keepalive_timeout),
        ] {
            if value == 0 {
                return Err(Error::invalid_argument(format!("{name} must be at least 1")));
            }
        }
        Ok(())
    }

    fn validate_tcp(&self) -> Result<()> {
        let set = |path: &PathBuf| !path.as_os_str().is_empty();
        let (ca, cert, key) = (set(&self.tcp_tls_ca), set(&self.tcp_tls_cert), set(&self.tcp_tls_key));
        if self.tcp_address.is_empty() {
            if ca || cert || key || self.tcp_insecure {
                return Err(Error::invalid_argument(
                    "grpc.tcp_tls_* and grpc.tcp_insecure need grpc.tcp_address",
                ));
            }
            return Ok(());
        }
        if self.tcp_address.parse::<std::net::SocketAddr>().is_err() {
            return Err(Error::invalid_argument(format!(
                "grpc.tcp_address {:?} is not an IP address and port (127.0.0.1:1337, [::1]:1337)",
                self.tcp_address
            )));
        }
        if cert != key {
            return Err(Error::invalid_argument(
                "grpc.tcp_tls_cert and grpc.tcp_tls_key go together",
            ));
        }
        if ca && !cert {
            return Err(Error::invalid_argument(
                "grpc.tcp_tls_ca needs grpc.tcp_tls_cert and grpc.tcp_tls_key",
            ));
        }
        if cert && self.tcp_insecure {
            return Err(Error::invalid_argument(
                "grpc.tcp_insecure = true contradicts grpc.tcp_tls_cert",
            ));
        }
        if !cert && !self.tcp_insecure {
            return Err(Error::invalid_argument(format!(
                "grpc.tcp_address {:?} needs grpc.tcp_tls_cert and grpc.tcp_tls_key; \
                 plain TCP only with grpc.tcp_insecure = true",
                self.tcp_address
            )));
        }
        Ok(())
    }

    /// The TLS files, when TCP is served with TLS.
    pub fn tls_files(&self) -> Option<crate::tcp_tls::TlsFiles> {
        (!self.tcp_tls_cert.as_os_str().is_empty()).then(|| crate::tcp_tls::TlsFiles {
            ca: (!self.tcp_tls_ca.as_os_str().is_empty()).then(|| self.tcp_tls_ca.clone()),
            cert: self.tcp_tls_cert.clone(),
            key: self.tcp_tls_key.clone(),
        })
    }
}

impl Default for TtrpcConfig {
    fn default() -> Self {
        Self {
            address: PathBuf::new(),
        }
    }
}

impl Default for DebugConfig {
    fn default() -> Self {
        Self { level: "info".into() }
    }
}

impl Config {
    /// Reads a config file. A missing file is an error only when `required`
    /// (the operator named it); the default path may be absent.
    pub fn load(path: &Path, required: bool) -> Result<Self> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => {
                return Ok(Self::default());
            }
            Err(e) => return Err(Error::io(format!("reading config {}", path.display()), &e)),
        };
        Self::parse(&text).map_err(|e| e.with_context(format!("config {}", path.display())))
    }

    /// Parses config text and checks it.
    pub fn parse(text: &str) -> Result<Self> {
        let config: Self =
            toml::from_str(text).map_err(|e| Error::invalid_argument(e.to_string().trim().to_string()))?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<()> {
        if self.version != 2 {
            return Err(Error::invalid_argument(format!(
                "version = {} is not supported; use version = 2",
                self.version
            )));
        }
        for (name, path) in [
            ("root", &self.root),
            ("state", &self.state),
            ("grpc.address", &self.grpc.address),
        ] {
            if !path.is_absolute() {
                return Err(Error::invalid_argument(format!(
                    "{name} {:?} must be an absolute path",
                    path
                )));
            }
        }
        if !self.ttrpc.address.as_os_str().is_empty() && !self.ttrpc.address.is_absolute() {
            return Err(Error::invalid_argument(format!(
                "ttrpc.address {:?} must be an absolute path",
                self.ttrpc.address
            )));
        }
        if self.root == self.state {
            return Err(Error::invalid_argument("root and state must be different directories"));
        }
        crate::logging::parse_level(&self.debug.level)?;
        self.grpc.validate_tcp()?;
        self.grpc.validate_limits()?;
        if !self.metrics.address.is_empty() && self.metrics.address.parse::<std::net::SocketAddr>().is_err() {
            return Err(Error::invalid_argument(format!(
                "metrics.address {:?} is not an IP address and port (127.0.0.1:1338)",
                self.metrics.address
            )));
        }
        for (key, section) in &self.plugins {
            if !section.is_table() {
                return Err(Error::invalid_argument(format!("plugins.{key:?} must be a table")));
            }
        }
        Ok(())
    }

    /// The ttrpc socket path (`<grpc address>.ttrpc` unless set).
    pub fn ttrpc_address(&self) -> PathBuf {
        if self.ttrpc.address.as_os_str().is_empty() {
            let mut path = self.grpc.address.clone().into_os_string();
            path.push(".ttrpc");
            PathBuf::from(path)
        } else {
            self.ttrpc.address.clone()
        }
    }

    /// The full default configuration, plugin sections included, as TOML.
    pub fn default_toml(plugin_defaults: toml::Table) -> String {
        let config = Self {
            plugins: plugin_defaults,
            ..Self::default()
        };
        toml::to_string_pretty(&config).unwrap_or_else(|e| format!("# cannot render defaults: {e}\n"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_core::ErrorKind;

    #[test]
    fn the_printed_default_parses_back_to_the_default() {
        let text = Config::default_toml(toml::Table::new());
        assert_eq!(Config::parse(&text).unwrap(), Config::default());
        assert!(text.contains("root = \"/var/lib/berth\""), "{text}");
        assert!(text.contains("[grpc]"), "{text}");
    }

    #[test]
    fn partial_files_keep_the_other_defaults() {
        let config = Config::parse("version = 2\nroot = \"/tmp/r\"\n[grpc]\naddress = \"/tmp/s.sock\"\n").unwrap();
        assert_eq!(config.root, PathBuf::from("/tmp/r"));
        assert_eq!(config.state, PathBuf::from(DEFAULT_STATE));
        assert_eq!(config.grpc.max_recv_message_size, 16 << 20);
        assert_eq!(config.ttrpc_address(), PathBuf::from("/tmp/s.sock.ttrpc"));
    }

    #[test]
    fn tcp_needs_tls_unless_told_insecure() {
        let tcp = |rest: &str| Config::parse(&format!("[grpc]\ntcp_address = \"127.0.0.1:7000\"\n{rest}"));
        let err = tcp("").unwrap_err();
        assert!(err.to_string().contains("tcp_insecure"), "{err}");
        assert!(tcp("tcp_insecure = true").is_ok());
        assert!(tcp("tcp_tls_cert = \"/c.pem\"\ntcp_tls_key = \"/k.pem\"").is_ok());
        let err = tcp("tcp_tls_cert = \"/c.pem\"").unwrap_err();
        assert!(err.to_string().contains("go together"), "{err}");
        let err = tcp("tcp_tls_ca = \"/ca.pem\"\ntcp_insecure = true").unwrap_err();
        assert!(err.to_string().contains("tcp_tls_ca"), "{err}");
        let err = Config::parse("[grpc]\ntcp_address = \"localhost\"\ntcp_insecure = true").unwrap_err();
        assert!(err.to_string().contains("\"localhost\""), "{err}");
        let err = Config::parse("[grpc]\ntcp_insecure = true").unwrap_err();
        assert!(err.to_string().contains("need grpc.tcp_address"), "{err}");
    }

    #[test]
    fn mistakes_are_named() {
        let err = Config::parse("roots = \"/x\"").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument);
        assert!(err.to_string().contains("roots"), "{err}");
        let err = Config::parse("root = \"relative\"").unwrap_err();
        assert!(err.to_string().contains("absolute"), "{err}");
        let err = Config::parse("version = 1").unwrap_err();
        assert!(err.to_string().contains("version = 1"), "{err}");
        let err = Config::parse("[debug]\nlevel = \"loud\"").unwrap_err();
        assert!(err.to_string().contains("loud"), "{err}");
    }

    #[test]
    fn a_missing_default_file_is_fine_but_a_named_one_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("none.toml");
        assert_eq!(Config::load(&path, false).unwrap(), Config::default());
        let err = Config::load(&path, true).unwrap_err();
        assert!(err.to_string().contains("none.toml"), "{err}");
    }
}
