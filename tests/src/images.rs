//! Test images built from Debian's busybox-static with no network.
//!
//! [`busybox`] writes a one-layer image as an OCI layout tar and as a
//! docker-archive tar. The output is reproducible: the same busybox binary
//! gives byte-identical archives (sorted entries, fixed times, root
//! ownership, gzip without a name or time). Archives are cached under the
//! system temp dir, keyed by the busybox binary's digest, and published
//! with an atomic rename so parallel test processes share them safely.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use sha2::{Digest as _, Sha256};

/// Fixed time of every tar entry and of the image config (2024-01-01).
pub const EPOCH: u64 = 1_704_067_200;

/// The image name the archives carry.
pub const BUSYBOX_NAME: &str = "docker.io/berth/busybox:latest";

/// A built image and its archives.
#[derive(Clone, Debug)]
pub struct TestImage {
    /// Name recorded in the archives.
    pub name: String,
    /// OCI image layout as a tar (`ctr images import` input).
    pub oci_tar: PathBuf,
    /// docker-archive tar (`docker save` format).
    pub docker_tar: PathBuf,
    /// Digest of the OCI manifest.
    pub manifest_digest: String,
    /// Digest of the image config.
    pub config_digest: String,
    /// Digest of the (first) compressed layer blob.
    pub layer_digest: String,
    /// Digest of the (first) uncompressed layer (its diff id).
    pub diff_id: String,
    /// Every layer blob's digest, bottom first.
    pub layer_digests: Vec<String>,
    /// Every layer's diff id, bottom first.
    pub diff_ids: Vec<String>,
    /// The chain id of the whole stack: the committed snapshot an unpack
    /// leaves.
    pub chain_id: String,
}

fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// The OCI architecture name of this machine.
pub fn oci_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "arm" => "arm",
        "riscv64" => "riscv64",
        "s390x" => "s390x",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

/// One entry of a layer tar. Whiteouts are empty files named `.wh.<name>`.
enum Entry {
    Dir(u32),
    File(u32, Vec<u8>),
    Symlink(String),
    /// A hard link to an earlier entry of the same layer.
    Hardlink(String),
    /// A character device (major, minor).
    Char(u32, u32),
    Fifo,
    /// A file with an owner other than root.
    Owned {
        mode: u32,
        uid: u64,
        gid: u64,
        data: Vec<u8>,
    },
    /// A file with extended attributes (PAX `SCHILY.xattr.*` records).
    WithXattrs {
        data: Vec<u8>,
        xattrs: Vec<(&'static str, &'static [u8])>,
    },
}

fn tar_bytes(entries: &BTreeMap<String, Entry>) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for (path, entry) in entries {
        let mut header = tar::Header::new_gnu();
        header.set_mtime(EPOCH);
        header.set_uid(0);
        header.set_gid(0);
        match entry {
            Entry::Hardlink(target) => {
                header.set_entry_type(tar::EntryType::Link);
                header.set_mode(0o644);
                header.set_size(0);
                builder.append_link(&mut header, path, target).expect("tar hardlink");
            }
            Entry::Char(major, minor) => {
                header.set_entry_type(tar::EntryType::Char);
                header.set_mode(0o666);
                header.set_size(0);
                header.set_device_major(*major).expect("major");
                header.set_device_minor(*minor).expect("minor");
                builder
                    .append_data(&mut header, path, std::io::empty())
                    .expect("tar char");
            }
            Entry::Fifo => {
                header.set_entry_type(tar::EntryType::Fifo);
                header.set_mode(0o600);
                header.set_size(0);
                builder
                    .append_data(&mut header, path, std::io::empty())
                    .expect("tar fifo");
            }
            Entry::Owned { mode, uid, gid, data } => {
                header.set_entry_type(tar::EntryType::Regular);
                header.set_mode(*mode);
                header.set_uid(*uid);
                header.set_gid(*gid);
                header.set_size(data.len() as u64);
                builder
                    .append_data(&mut header, path, data.as_slice())
                    .expect("tar owned");
            }
            Entry::WithXattrs { data, xattrs } => {
                let records: Vec<(String, &[u8])> =
                    xattrs.iter().map(|(k, v)| (format!("SCHILY.xattr.{k}"), *v)).collect();
                builder
                    .append_pax_extensions(records.iter().map(|(k, v)| (k.as_str(), *v)))
                    .expect("pax");
                header.set_entry_type(tar::EntryType::Regular);
                header.set_mode(0o644);
                header.set_size(data.len() as u64);
                builder
                    .append_data(&mut header, path, data.as_slice())
                    .expect("tar xattr file");
            }
            Entry::Dir(mode) => {
                header.set_entry_type(tar::EntryType::Directory);
                header.set_mode(*mode);
                header.set_size(0);
                builder
                    .append_data(&mut header, format!("{path}/"), std::io::empty())
                    .expect("tar dir");
            }
            Entry::File(mode, data) => {
                header.set_entry_type(tar::EntryType::Regular);
                header.set_mode(*mode);
                header.set_size(data.len() as u64);
                builder
                    .append_data(&mut header, path, data.as_slice())
                    .expect("tar file");
            }
            Entry::Symlink(target) => {
                header.set_entry_type(tar::EntryType::Symlink);
                header.set_mode(0o777);
                header.set_size(0);
                builder.append_link(&mut header, path, target).expect("tar symlink");
            }
        }
    }
    builder.into_inner().expect("tar finish")
}

/// How a fixture layer is stored.
#[derive(Clone, Copy, Debug)]
pub enum Compression {
    /// A plain tar (`application/vnd.oci.image.layer.v1.tar`).
    None,
    /// gzip (`...tar+gzip`).
    Gzip,
    /// Zstandard (`...tar+zstd`).
    Zstd,
}

impl Compression {
    fn media_type(self) -> &'static str {
        match self {
            Self::None => "application/vnd.oci.image.layer.v1.tar",
            Self::Gzip => "application/vnd.oci.image.layer.v1.tar+gzip",
            Self::Zstd => "application/vnd.oci.image.layer.v1.tar+zstd",
        }
    }

    fn compress(self, tar: &[u8]) -> Vec<u8> {
        match self {
            Self::None => tar.to_vec(),
            Self::Gzip => gzip(tar),
            Self::Zstd => zstd::encode_all(tar, 3).expect("zstd"),
        }
    }
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::GzBuilder::new()
        .mtime(0)
        .write(Vec::new(), flate2::Compression::new(6));
    encoder.write_all(data).expect("gzip");
    encoder.finish().expect("gzip finish")
}

/// The busybox root filesystem: the binary, a symlink per applet, and a few
/// files in /etc.
fn busybox_rootfs(busybox: &Path) -> BTreeMap<String, Entry> {
    let mut entries = BTreeMap::new();
    for dir in [
        "bin", "sbin", "usr", "usr/bin", "usr/sbin", "etc", "proc", "sys", "dev", "run", "var", "var/www",
    ] {
        entries.insert(dir.to_string(), Entry::Dir(0o755));
    }
    entries.insert("root".into(), Entry::Dir(0o700));
    entries.insert("tmp".into(), Entry::Dir(0o1777));
    let binary =
        std::fs::read(busybox).unwrap_or_else(|e| panic!("{}: {e} (install busybox-static)", busybox.display()));
    entries.insert("bin/busybox".into(), Entry::File(0o755, binary));
    let list = std::process::Command::new(busybox)
        .arg("--list-full")
        .output()
        .expect("busybox --list-full");
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        let applet = applet.trim().trim_start_matches('/');
        if applet.is_empty() || applet == "bin/busybox" {
            continue;
        }
        if let Some(parent) = Path::new(applet).parent().and_then(Path::to_str)
            && !parent.is_empty()
        {
            entries.entry(parent.to_string()).or_insert(Entry::Dir(0o755));
        }
        entries.insert(applet.to_string(), Entry::Symlink("/bin/busybox".into()));
    }
    let file = |text: &str| Entry::File(0o644, text.as_bytes().to_vec());
    entries.insert(
        "etc/passwd".into(),
        file("root:x:0:0:root:/root:/bin/sh\ndaemon:x:1:1:daemon:/usr/sbin:/bin/false\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"),
    );
    entries.insert("etc/group".into(), file("root:x:0:\ndaemon:x:1:\nnogroup:x:65534:\n"));
    entries.insert("etc/hosts".into(), file("127.0.0.1\tlocalhost\n::1\tlocalhost\n"));
    entries.insert(
        "var/www/index.html".into(),
        file("<html><body>busybox httpd</body></html>\n"),
    );
    entries
}

/// The chain id of a stack of diff ids, as snapshots of it are named.
pub fn chain_id(diff_ids: &[String]) -> String {
    let mut chain = diff_ids[0].clone();
    for diff_id in &diff_ids[1..] {
        chain = format!("sha256:{}", sha256_hex(format!("{chain} {diff_id}").as_bytes()));
    }
    chain
}

/// Builds both archives of an image with the given layers (bottom first)
/// into `dir`, its config naming `user` when given.
fn build_with_user(dir: &Path, name: &str, user: Option<&str>, layers: &[(Compression, Vec<u8>)]) -> TestImage {
    let diff_ids: Vec<String> = layers
        .iter()
        .map(|(_, tar)| format!("sha256:{}", sha256_hex(tar)))
        .collect();
    let blobs: Vec<(Compression, Vec<u8>, String)> = layers
        .iter()
        .map(|(compression, tar)| {
            let blob = compression.compress(tar);
            let digest = format!("sha256:{}", sha256_hex(&blob));
            (*compression, blob, digest)
        })
        .collect();
    let arch = oci_arch();
    let quoted_diff_ids: Vec<String> = diff_ids.iter().map(|d| format!("\"{d}\"")).collect();
    let config = format!(
        concat!(
            r#"{{"created":"2024-01-01T00:00:00Z","architecture":"{arch}","os":"linux","#,
            r#""config":{{{user}"Env":["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],"Cmd":["sh"],"WorkingDir":"/"}},"#,
            r#""rootfs":{{"type":"layers","diff_ids":[{diff_ids}]}},"#,
            r#""history":[{{"created":"2024-01-01T00:00:00Z","created_by":"berth test fixture"}}]}}"#
        ),
        arch = arch,
        user = user
            .map(|u| format!("\"User\":{},", serde_json::Value::from(u)))
            .unwrap_or_default(),
        diff_ids = quoted_diff_ids.join(",")
    );
    let config_digest = format!("sha256:{}", sha256_hex(config.as_bytes()));
    let layer_descriptors: Vec<String> = blobs
        .iter()
        .map(|(compression, blob, digest)| {
            format!(
                r#"{{"mediaType":"{}","digest":"{digest}","size":{}}}"#,
                compression.media_type(),
                blob.len()
            )
        })
        .collect();
    let manifest = format!(
        concat!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","#,
            r#""config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config_digest}","size":{config_size}}},"#,
            r#""layers":[{layers}]}}"#
        ),
        config_digest = config_digest,
        config_size = config.len(),
        layers = layer_descriptors.join(",")
    );
    let manifest_digest = format!("sha256:{}", sha256_hex(manifest.as_bytes()));
    let tag = name.rsplit_once(':').map(|(_, t)| t).unwrap_or("latest");
    let index = format!(
        concat!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{{"#,
            r#""mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{manifest_digest}","size":{manifest_size},"#,
            r#""platform":{{"architecture":"{arch}","os":"linux"}},"#,
            r#""annotations":{{"io.containerd.image.name":"{name}","org.opencontainers.image.ref.name":"{tag}"}}}}]}}"#
        ),
        manifest_digest = manifest_digest,
        manifest_size = manifest.len(),
        arch = arch,
        name = name,
        tag = tag
    );

    let blob_path = |digest: &str| format!("blobs/sha256/{}", digest.trim_start_matches("sha256:"));
    let mut oci = BTreeMap::new();
    oci.insert("blobs".to_string(), Entry::Dir(0o755));
    oci.insert("blobs/sha256".to_string(), Entry::Dir(0o755));
    oci.insert(
        blob_path(&config_digest),
        Entry::File(0o644, config.clone().into_bytes()),
    );
    oci.insert(blob_path(&manifest_digest), Entry::File(0o644, manifest.into_bytes()));
    for (_, blob, digest) in &blobs {
        oci.insert(blob_path(digest), Entry::File(0o644, blob.clone()));
    }
    oci.insert("index.json".to_string(), Entry::File(0o644, index.into_bytes()));
    oci.insert(
        "oci-layout".to_string(),
        Entry::File(0o644, br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec()),
    );

    let config_file = format!("{}.json", config_digest.trim_start_matches("sha256:"));
    let mut docker = BTreeMap::new();
    let mut docker_layers = Vec::new();
    for ((_, tar), diff_id) in layers.iter().zip(&diff_ids) {
        let layer_dir = diff_id.trim_start_matches("sha256:").to_string();
        docker.insert(layer_dir.clone(), Entry::Dir(0o755));
        docker.insert(format!("{layer_dir}/layer.tar"), Entry::File(0o644, tar.clone()));
        docker_layers.push(format!("\"{layer_dir}/layer.tar\""));
    }
    let docker_manifest = format!(
        r#"[{{"Config":"{config_file}","RepoTags":["{name}"],"Layers":[{}]}}]"#,
        docker_layers.join(",")
    );
    docker.insert(config_file, Entry::File(0o644, config.into_bytes()));
    docker.insert(
        "manifest.json".to_string(),
        Entry::File(0o644, docker_manifest.into_bytes()),
    );

    let image = TestImage {
        name: name.to_string(),
        oci_tar: dir.join("oci.tar"),
        docker_tar: dir.join("docker.tar"),
        manifest_digest,
        config_digest,
        layer_digest: blobs[0].2.clone(),
        diff_id: diff_ids[0].clone(),
        layer_digests: blobs.iter().map(|b| b.2.clone()).collect(),
        chain_id: chain_id(&diff_ids),
        diff_ids,
    };
    std::fs::write(&image.oci_tar, tar_bytes(&oci)).expect("write oci tar");
    std::fs::write(&image.docker_tar, tar_bytes(&docker)).expect("write docker tar");
    image
}

/// An image of the given layers (bottom first, plain tar bytes with how to
/// store each), its config naming `user` when given; built once per `key`.
pub fn custom(
    key: &str,
    name: &str,
    user: Option<&str>,
    layers: impl FnOnce() -> Vec<(Compression, Vec<u8>)>,
) -> TestImage {
    cached_with_user(&format!("custom-v1-{key}"), name, user, layers)
}

/// The busybox image with `user` as its config's `User`.
pub fn busybox_as_user(name: &str, user: &str) -> TestImage {
    let busybox = PathBuf::from("/bin/busybox");
    let binary = std::fs::read(&busybox).expect("/bin/busybox (install busybox-static)");
    let key = format!(
        "busybox-user-{}-{}",
        &sha256_hex(format!("{name} {user}").as_bytes())[..12],
        &sha256_hex(&binary)[..16]
    );
    custom(&key, name, Some(user), || {
        vec![(Compression::Gzip, tar_bytes(&busybox_rootfs(&busybox)))]
    })
}

/// Builds (once per cache key) and returns an image made by `make_layer`.
fn cached(key: &str, name: &str, make_layers: impl FnOnce() -> Vec<(Compression, Vec<u8>)>) -> TestImage {
    cached_with_user(key, name, None, make_layers)
}

fn cached_with_user(
    key: &str,
    name: &str,
    user: Option<&str>,
    make_layers: impl FnOnce() -> Vec<(Compression, Vec<u8>)>,
) -> TestImage {
    let root = std::env::temp_dir().join("berth-fixtures");
    let final_dir = root.join(key);
    let marker = final_dir.join("image.txt");
    if let Ok(text) = std::fs::read_to_string(&marker) {
        return parse_marker(&final_dir, &text);
    }
    std::fs::create_dir_all(&root).expect("fixture root");
    let staging = tempfile::Builder::new()
        .prefix(".staging")
        .tempdir_in(&root)
        .expect("staging dir");
    let image = build_with_user(staging.path(), name, user, &make_layers());
    let mut marker_text = format!("{}\n{}\n{}\n", image.name, image.manifest_digest, image.config_digest);
    for (digest, diff_id) in image.layer_digests.iter().zip(&image.diff_ids) {
        marker_text.push_str(&format!("{digest} {diff_id}\n"));
    }
    std::fs::write(staging.path().join("image.txt"), marker_text).expect("marker");
    let staged = staging.keep();
    // Another process may have published the same image meanwhile; either copy is identical.
    if std::fs::rename(&staged, &final_dir).is_err() {
        let _ = std::fs::remove_dir_all(&staged);
    }
    parse_marker(
        &final_dir,
        &std::fs::read_to_string(&marker).expect("published fixture"),
    )
}

fn parse_marker(dir: &Path, text: &str) -> TestImage {
    let lines: Vec<&str> = text.lines().collect();
    let (layer_digests, diff_ids): (Vec<String>, Vec<String>) = lines[3..]
        .iter()
        .map(|line| {
            let (digest, diff_id) = line.split_once(' ').expect("layer line");
            (digest.to_string(), diff_id.to_string())
        })
        .unzip();
    TestImage {
        name: lines[0].to_string(),
        oci_tar: dir.join("oci.tar"),
        docker_tar: dir.join("docker.tar"),
        manifest_digest: lines[1].to_string(),
        config_digest: lines[2].to_string(),
        layer_digest: layer_digests[0].clone(),
        diff_id: diff_ids[0].clone(),
        chain_id: chain_id(&diff_ids),
        layer_digests,
        diff_ids,
    }
}

/// The one-layer busybox image (OCI tar and docker-archive tar).
pub fn busybox() -> TestImage {
    static IMAGE: OnceLock<TestImage> = OnceLock::new();
    IMAGE
        .get_or_init(|| {
            let busybox = PathBuf::from("/bin/busybox");
            let binary = std::fs::read(&busybox).expect("/bin/busybox (install busybox-static)");
            let key = format!("busybox-v2-{}", &sha256_hex(&binary)[..16]);
            cached(&key, BUSYBOX_NAME, || {
                vec![(Compression::Gzip, tar_bytes(&busybox_rootfs(&busybox)))]
            })
        })
        .clone()
}

/// An image whose one layer holds `size` bytes of deterministic noise (it
/// does not compress), for imports that must take a while.
pub fn noise(name: &str, size: usize) -> TestImage {
    let key = format!("noise-v2-{size}-{}", &sha256_hex(name.as_bytes())[..12]);
    cached(&key, name, || {
        let mut data = vec![0u8; size];
        let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
        for chunk in data.chunks_mut(8) {
            // xorshift64*: cheap, deterministic, incompressible enough.
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            let value = state.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes();
            chunk.copy_from_slice(&value[..chunk.len()]);
        }
        let mut entries = BTreeMap::new();
        entries.insert("noise".to_string(), Entry::File(0o644, data));
        vec![(Compression::Gzip, tar_bytes(&entries))]
    })
}

/// Name of the [`layered`] image.
pub const LAYERED_NAME: &str = "docker.io/berth/layered:latest";

/// A three-layer image (gzip, zstd and plain tar layers) over busybox that
/// exercises unpacking: whiteouts of files and directories, opaque
/// directories, a file replaced by a directory and back, hard links,
/// device nodes and fifos, setuid and sticky modes, non-root owners,
/// extended attributes, and a thousand small files.
pub fn layered() -> TestImage {
    static IMAGE: OnceLock<TestImage> = OnceLock::new();
    IMAGE
        .get_or_init(|| {
            let busybox = PathBuf::from("/bin/busybox");
            let binary = std::fs::read(&busybox).expect("/bin/busybox (install busybox-static)");
            let key = format!("layered-v1-{}", &sha256_hex(&binary)[..16]);
            cached(&key, LAYERED_NAME, || layered_layers(&busybox))
        })
        .clone()
}

fn layered_layers(busybox: &Path) -> Vec<(Compression, Vec<u8>)> {
    let file = |text: &str| Entry::File(0o644, text.as_bytes().to_vec());
    let whiteout = || Entry::File(0o644, Vec::new());

    let mut first = busybox_rootfs(busybox);
    for (dir, mode) in [
        ("data", 0o755),
        ("data/a", 0o750),
        ("data/b", 0o755),
        ("data/b/inner", 0o700),
        ("data/links", 0o755),
        ("data/special", 0o755),
        ("data/modes", 0o755),
        ("data/modes/sticky", 0o1777),
        ("data/small", 0o755),
    ] {
        first.insert(dir.into(), Entry::Dir(mode));
    }
    first.insert("data/a/one".into(), file("1\n"));
    first.insert("data/a/two".into(), file("2\n"));
    first.insert("data/b/inner/deep".into(), file("deep\n"));
    first.insert("data/c".into(), file("c is a file\n"));
    first.insert("data/links/h1".into(), file("shared by two names\n"));
    first.insert("data/links/h2".into(), Entry::Hardlink("data/links/h1".into()));
    first.insert("data/special/null".into(), Entry::Char(1, 3));
    first.insert("data/special/fifo".into(), Entry::Fifo);
    first.insert("data/modes/setuid".into(), Entry::File(0o4755, b"#!/bin/sh\n".to_vec()));
    first.insert(
        "data/modes/owned".into(),
        Entry::Owned {
            mode: 0o640,
            uid: 1000,
            gid: 1001,
            data: b"owned by 1000:1001\n".to_vec(),
        },
    );
    first.insert(
        "data/xattr".into(),
        Entry::WithXattrs {
            data: b"has attributes\n".to_vec(),
            xattrs: vec![("user.berth.test", b"yes"), ("user.berth.other", b"1234")],
        },
    );
    for d in 0..20 {
        first.insert(format!("data/small/d{d:02}"), Entry::Dir(0o755));
        for f in 0..50 {
            first.insert(
                format!("data/small/d{d:02}/f{f:02}"),
                Entry::File(0o644, format!("small file {d}/{f}\n").repeat(f + 1).into_bytes()),
            );
        }
    }

    let mut second = BTreeMap::new();
    second.insert("data".into(), Entry::Dir(0o755));
    second.insert("data/a".into(), Entry::Dir(0o750));
    second.insert("data/a/one".into(), file("1, changed in layer 2\n"));
    second.insert("data/.wh.b".into(), whiteout());
    second.insert("data/c".into(), Entry::Dir(0o755));
    second.insert("data/c/now-a-directory".into(), file("c became a directory\n"));
    second.insert("data/new".into(), file("added by layer 2\n"));
    second.insert("data/small".into(), Entry::Dir(0o755));
    second.insert("data/small/.wh.d00".into(), whiteout());
    second.insert("etc".into(), Entry::Dir(0o755));
    second.insert("etc/hosts".into(), file("127.0.0.1\tlocalhost layered\n"));

    let mut third = BTreeMap::new();
    third.insert("data".into(), Entry::Dir(0o755));
    third.insert("data/a".into(), Entry::Dir(0o755));
    third.insert("data/a/.wh..wh..opq".into(), whiteout());
    third.insert("data/a/three".into(), file("3, alone after the opaque marker\n"));
    third.insert("data/b".into(), file("b is a file again\n"));
    third.insert("data/.wh.new".into(), whiteout());
    third.insert("data/small".into(), Entry::Dir(0o755));
    third.insert("data/small/d01".into(), Entry::Dir(0o755));
    third.insert("data/small/d01/.wh..wh..opq".into(), whiteout());
    third.insert("data/small/d01/only".into(), file("the only file left in d01\n"));
    third.insert("data/small/d02".into(), Entry::Dir(0o755));
    third.insert("data/small/d02/.wh.f00".into(), whiteout());

    vec![
        (Compression::Gzip, tar_bytes(&first)),
        (Compression::Zstd, tar_bytes(&second)),
        (Compression::None, tar_bytes(&third)),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_are_byte_identical() {
        let rootfs = || tar_bytes(&busybox_rootfs(Path::new("/bin/busybox")));
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let first = build_with_user(a.path(), BUSYBOX_NAME, None, &[(Compression::Gzip, rootfs())]);
        let second = build_with_user(b.path(), BUSYBOX_NAME, None, &[(Compression::Gzip, rootfs())]);
        assert_eq!(first.manifest_digest, second.manifest_digest);
        assert_eq!(
            std::fs::read(&first.oci_tar).unwrap(),
            std::fs::read(&second.oci_tar).unwrap()
        );
        assert_eq!(
            std::fs::read(&first.docker_tar).unwrap(),
            std::fs::read(&second.docker_tar).unwrap()
        );
    }

    #[test]
    fn the_layer_holds_busybox_and_its_applets() {
        let dir = tempfile::tempdir().unwrap();
        let layer = tar_bytes(&busybox_rootfs(Path::new("/bin/busybox")));
        let image = build_with_user(dir.path(), BUSYBOX_NAME, None, &[(Compression::Gzip, layer.clone())]);
        assert_eq!(image.diff_id, format!("sha256:{}", sha256_hex(&layer)));
        let mut archive = tar::Archive::new(layer.as_slice());
        let names: Vec<String> = archive
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().display().to_string())
            .collect();
        for wanted in ["bin/busybox", "bin/sh", "etc/passwd", "tmp/"] {
            assert!(names.iter().any(|n| n == wanted), "{wanted} in {names:?}");
        }
    }
}
