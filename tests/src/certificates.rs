//! Certificates for TLS tests, made with `openssl` at test time: a CA,
//! server certificates for 127.0.0.1 and client certificates signed by it.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A throwaway certificate authority in a directory of its own.
pub struct Authority {
    dir: PathBuf,
    name: String,
}

/// A certificate and its key.
pub struct Issued {
    /// The certificate (PEM).
    pub cert: PathBuf,
    /// Its private key (PEM).
    pub key: PathBuf,
}

fn openssl(args: &[&str]) {
    let out = Command::new(crate::binaries::host("openssl"))
        .args(args)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Authority {
    /// A new CA named `name`, its files in `dir`.
    pub fn new(dir: &Path, name: &str) -> Self {
        let authority = Self {
            dir: dir.to_path_buf(),
            name: name.to_string(),
        };
        let (key, cert) = (authority.file("key"), authority.file("pem"));
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            &format!("/CN={name}"),
            "-keyout",
            &key,
            "-out",
            &cert,
        ]);
        authority
    }

    fn file(&self, extension: &str) -> String {
        self.dir
            .join(format!("{}.{extension}", self.name))
            .display()
            .to_string()
    }

    /// The CA's certificate (what a peer trusts).
    pub fn cert(&self) -> PathBuf {
        PathBuf::from(self.file("pem"))
    }

    /// A server certificate for 127.0.0.1 and localhost.
    pub fn server(&self, name: &str) -> Issued {
        self.issue(
            name,
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n",
        )
    }

    /// A client certificate.
    pub fn client(&self, name: &str) -> Issued {
        self.issue(name, "extendedKeyUsage=clientAuth\n")
    }

    fn issue(&self, name: &str, extensions: &str) -> Issued {
        let base = self.dir.join(format!("{}-{name}", self.name));
        let path = |extension: &str| format!("{}.{extension}", base.display());
        std::fs::write(path("ext"), extensions).expect("extensions file");
        openssl(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            &format!("/CN={name}"),
            "-keyout",
            &path("key"),
            "-out",
            &path("csr"),
        ]);
        openssl(&[
            "x509",
            "-req",
            "-in",
            &path("csr"),
            "-CA",
            &self.file("pem"),
            "-CAkey",
            &self.file("key"),
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            &path("ext"),
            "-out",
            &path("pem"),
        ]);
        Issued {
            cert: PathBuf::from(path("pem")),
            key: PathBuf::from(path("key")),
        }
    }
}

/// The SHA-256 fingerprint of the certificate a TLS server at `address`
/// presents (`openssl s_client`), given a client certificate to offer.
pub fn served_fingerprint(address: &str, ca: &Path, client: &Issued) -> String {
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "openssl s_client -connect {address} -CAfile {} -cert {} -key {} </dev/null 2>/dev/null \
             | openssl x509 -noout -fingerprint -sha256",
            ca.display(),
            client.cert.display(),
            client.key.display()
        ))
        .output()
        .expect("run openssl s_client");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The SHA-256 fingerprint of a certificate file.
pub fn fingerprint(cert: &Path) -> String {
    let out = Command::new(crate::binaries::host("openssl"))
        .args(["x509", "-noout", "-fingerprint", "-sha256", "-in"])
        .arg(cert)
        .output()
        .expect("run openssl");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}
