//! A private Debian `docker-registry` on a free loopback port, with its
//! own `config.yml` and a temporary storage directory; stopped on drop.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::{binaries, wait};

/// A running registry on 127.0.0.1: plain HTTP, or HTTPS, with or
/// without htpasswd basic auth.
#[derive(Debug)]
pub struct Registry {
    dir: tempfile::TempDir,
    /// `127.0.0.1:<port>`.
    pub address: String,
    child: Child,
    /// The CA that signed its certificate (HTTPS registries).
    pub ca: Option<std::path::PathBuf>,
    /// The user and password it requires, if any.
    pub login: Option<(String, String)>,
}

/// How a registry is set up.
#[derive(Debug, Default)]
pub struct RegistryOptions {
    /// Serve HTTPS with a certificate from a CA made for it.
    pub tls: bool,
    /// Require this user and password (htpasswd basic auth).
    pub login: Option<(String, String)>,
    /// Verbatim `auth:` section of the config (token auth), indented.
    pub auth: Option<String>,
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local addr").port()
}

impl Registry {
    /// Starts a plain HTTP registry and waits until it answers.
    pub fn start() -> Self {
        Self::start_with(RegistryOptions::default())
    }

    /// Starts a registry set up as `options` say.
    pub fn start_with(options: RegistryOptions) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("berth-registry")
            .tempdir()
            .expect("temp dir");
        let address = format!("127.0.0.1:{}", free_port());
        let config = dir.path().join("config.yml");
        let mut text = format!(
            "version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {address}\n",
            dir.path().join("storage").display()
        );
        let mut ca = None;
        if options.tls {
            let authority = crate::certificates::Authority::new(dir.path(), "registry-ca");
            let issued = authority.server("registry");
            text.push_str(&format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                issued.cert.display(),
                issued.key.display()
            ));
            ca = Some(authority.cert());
        }
        if let Some((user, password)) = &options.login {
            let htpasswd = dir.path().join("htpasswd");
            std::fs::write(&htpasswd, format!("{user}:{}\n", bcrypt(password))).expect("htpasswd");
            text.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: berth-tests\n    path: {}\n",
                htpasswd.display()
            ));
        } else if let Some(auth) = &options.auth {
            text.push_str("auth:\n");
            text.push_str(auth);
        }
        std::fs::write(&config, text).expect("registry config");
        let log = std::fs::File::create(dir.path().join("registry.log")).expect("log");
        let mut child = Command::new(binaries::host("docker-registry"))
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log fd"))
            .stderr(log)
            .spawn()
            .expect("spawn docker-registry (install docker-registry)");
        wait::until(Duration::from_secs(30), "the registry to answer", || {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("docker-registry exited during startup ({status})");
            }
            std::net::TcpStream::connect(&address).ok().map(|_| ())
        });
        Self {
            dir,
            address,
            child,
            ca,
            login: options.login,
        }
    }

    /// A hosts.toml directory for berthd's `[registry] config_path` that
    /// reaches this registry by HTTPS and trusts its CA.
    pub fn hosts_dir(&self, root: &Path) {
        let (host, port) = self.address.split_once(':').expect("host:port");
        let dir = root.join(format!("{host}_{port}_"));
        std::fs::create_dir_all(&dir).expect("hosts dir");
        let ca = self.ca.as_ref().expect("an HTTPS registry");
        std::fs::write(
            dir.join("hosts.toml"),
            format!("server = \"https://{}\"\nca = \"{}\"\n", self.address, ca.display()),
        )
        .expect("hosts.toml");
    }

    /// Pushes an OCI archive to `<address>/<repository>` with skopeo.
    pub fn push_oci_archive(&self, archive: &Path, repository: &str) {
        self.skopeo_copy(archive, repository, &[]);
    }

    /// Pushes an OCI archive holding an index, every platform of it.
    pub fn push_oci_archive_all(&self, archive: &Path, repository: &str) {
        self.skopeo_copy(archive, repository, &["--all"]);
    }

    fn skopeo_copy(&self, archive: &Path, repository: &str, extra: &[&str]) {
        let mut skopeo = Command::new(binaries::host("skopeo"));
        skopeo.args(["copy", "--quiet", "--dest-tls-verify=false"]).args(extra);
        if let Some((user, password)) = &self.login {
            skopeo.arg(format!("--dest-creds={user}:{password}"));
        }
        let output = skopeo
            .arg(format!("oci-archive:{}", archive.display()))
            .arg(format!("docker://{}/{repository}", self.address))
            .output()
            .expect("run skopeo (install skopeo)");
        assert!(
            output.status.success(),
            "skopeo copy {} failed: {}",
            extra.join(" "),
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// What the registry logged.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }
}

/// A bcrypt hash of `password` for htpasswd (libxcrypt through Python's
/// crypt module: no htpasswd tool needed).
fn bcrypt(password: &str) -> String {
    let out = Command::new("python3")
        .args([
            "-W",
            "ignore",
            "-c",
            "import crypt,sys; print(crypt.crypt(sys.argv[1], crypt.mksalt(crypt.METHOD_BLOWFISH)))",
            password,
        ])
        .output()
        .expect("python3 for bcrypt");
    assert!(out.status.success(), "bcrypt: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("utf-8").trim().to_string()
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
