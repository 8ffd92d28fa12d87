//! A tiny registry that serves one image from an OCI archive over plain
//! HTTP on a loopback port, and misbehaves on purpose: corrupted bytes for
//! a blob, a body that stops sending or pauses, a manifest over any sane size. For
//! the faults a real registry never shows.

use std::collections::HashMap;
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How the registry misbehaves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Serve every blob faithfully.
    None,
    /// Serve this blob with its bytes changed (same length).
    Corrupt(String),
    /// Send half of this blob, then nothing for a minute.
    Stall(String),
    /// Send half of this blob, wait two seconds, then send the rest.
    Pause(String),
    /// As `Pause`, with bytes of the second half changed.
    PauseCorrupt(String),
    /// Serve the tag's manifest padded to this many bytes.
    HugeManifest(usize),
}

/// A running fake registry; stops when dropped.
pub struct FakeRegistry {
    /// `127.0.0.1:<port>`.
    pub address: String,
    /// Request lines seen (`GET /v2/...`).
    pub requests: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
}

impl std::fmt::Debug for FakeRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeRegistry").field("address", &self.address).finish()
    }
}

struct Content {
    manifest_digest: String,
    manifest_type: String,
    blobs: HashMap<String, Vec<u8>>,
}

/// Reads an OCI archive's blobs and the digest its index names first.
fn load(archive: &Path) -> Content {
    let mut blobs = HashMap::new();
    let mut index = None;
    let mut tar = tar::Archive::new(std::fs::File::open(archive).expect("open the OCI archive"));
    for entry in tar.entries().expect("read the OCI archive") {
        let mut entry = entry.expect("archive entry");
        let path = entry.path().expect("entry path").display().to_string();
        let path = path.trim_start_matches("./").to_string();
        let mut data = Vec::new();
        entry.read_to_end(&mut data).expect("entry data");
        if path == "index.json" {
            index = Some(data);
        } else if let Some(hex) = path.strip_prefix("blobs/sha256/") {
            blobs.insert(format!("sha256:{hex}"), data);
        }
    }
    let index: serde_json::Value = serde_json::from_slice(&index.expect("index.json")).expect("index JSON");
    let first = &index["manifests"][0];
    Content {
        manifest_digest: first["digest"].as_str().expect("manifest digest").to_string(),
        manifest_type: first["mediaType"]
            .as_str()
            .unwrap_or("application/vnd.oci.image.manifest.v1+json")
            .to_string(),
        blobs,
    }
}

impl FakeRegistry {
    /// Serves the image of `archive` as `<repository>:<tag>`, with `fault`.
    pub fn serve(archive: &Path, repository: &str, tag: &str, fault: Fault) -> Self {
        let content = Arc::new(load(archive));
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let address = listener.local_addr().expect("address").to_string();
        let stop = Arc::new(AtomicBool::new(false));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let (stop_flag, seen) = (Arc::clone(&stop), Arc::clone(&requests));
        let (repository, tag) = (repository.to_string(), tag.to_string());
        std::thread::spawn(move || {
            while !stop_flag.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let (content, fault, seen, stop) = (
                            Arc::clone(&content),
                            fault.clone(),
                            Arc::clone(&seen),
                            Arc::clone(&stop_flag),
                        );
                        let (repository, tag) = (repository.clone(), tag.clone());
                        std::thread::spawn(move || {
                            let _ = answer(stream, &content, &repository, &tag, &fault, &seen, &stop);
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        Self {
            address,
            requests,
            stop,
        }
    }

    /// How many requests asked for `path_part`.
    pub fn count(&self, path_part: &str) -> usize {
        self.requests
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.contains(path_part))
            .count()
    }
}

impl Drop for FakeRegistry {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn answer(
    stream: TcpStream,
    content: &Content,
    repository: &str,
    tag: &str,
    fault: &Fault,
    seen: &Mutex<Vec<String>>,
    stop: &AtomicBool,
) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let request = line.trim().to_string();
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header)? == 0 || header == "\r\n" {
            break;
        }
    }
    seen.lock().unwrap().push(request.clone());
    let path = request.split(' ').nth(1).unwrap_or("/").to_string();
    let head = request.starts_with("HEAD ");
    let mut stream = stream;
    let respond = |stream: &mut TcpStream, status: &str, media_type: &str, digest: &str, body: &[u8]| {
        let headers = format!(
            "HTTP/1.1 {status}\r\nContent-Type: {media_type}\r\nContent-Length: {}\r\nDocker-Content-Digest: {digest}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        stream.write_all(headers.as_bytes())?;
        if !head {
            stream.write_all(body)?;
        }
        stream.flush()
    };
    if path == "/v2/" {
        return respond(&mut stream, "200 OK", "application/json", "", b"{}");
    }
    let manifests = format!("/v2/{repository}/manifests/");
    let blobs = format!("/v2/{repository}/blobs/");
    if let Some(object) = path.strip_prefix(&manifests) {
        if object != tag && object != content.manifest_digest {
            return respond(
                &mut stream,
                "404 Not Found",
                "application/json",
                "",
                br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}"#,
            );
        }
        let mut body = content.blobs[&content.manifest_digest].clone();
        if let Fault::HugeManifest(size) = fault {
            body.resize(*size, b' ');
        }
        let digest = content.manifest_digest.clone();
        return respond(&mut stream, "200 OK", &content.manifest_type, &digest, &body);
    }
    if let Some(digest) = path.strip_prefix(&blobs) {
        let Some(blob) = content.blobs.get(digest) else {
            return respond(
                &mut stream,
                "404 Not Found",
                "application/json",
                "",
                br#"{"errors":[{"code":"BLOB_UNKNOWN","message":"blob unknown"}]}"#,
            );
        };
        match fault {
            Fault::Corrupt(bad) if bad == digest => {
                let mut changed = blob.clone();
                let middle = changed.len() / 2;
                for byte in changed.iter_mut().skip(middle).take(16) {
                    *byte ^= 0xff;
                }
                return respond(&mut stream, "200 OK", "application/octet-stream", digest, &changed);
            }
            Fault::Stall(slow) | Fault::Pause(slow) | Fault::PauseCorrupt(slow) if slow == digest => {
                let headers = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    blob.len()
                );
                stream.write_all(headers.as_bytes())?;
                stream.write_all(&blob[..blob.len() / 2])?;
                stream.flush()?;
                let resumes = !matches!(fault, Fault::Stall(_));
                let pause = if resumes { 20 } else { 600 };
                for _ in 0..pause {
                    if stop.load(Ordering::Relaxed) {
                        return Ok(());
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
                if resumes {
                    let mut rest = blob[blob.len() / 2..].to_vec();
                    if matches!(fault, Fault::PauseCorrupt(_)) {
                        let middle = rest.len() / 2;
                        for byte in rest.iter_mut().skip(middle).take(16) {
                            *byte ^= 0xff;
                        }
                    }
                    stream.write_all(&rest)?;
                    stream.flush()?;
                }
                return Ok(());
            }
            _ => return respond(&mut stream, "200 OK", "application/octet-stream", digest, blob),
        }
    }
    respond(&mut stream, "404 Not Found", "text/plain", "", b"not found")
}
