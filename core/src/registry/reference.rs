//! Image references as registries and containerd read them:
//! `[host[:port]/]path[:tag][@digest]`, with Docker Hub's short forms
//! (`busybox` is `docker.io/library/busybox:latest`).

use crate::content::Digest;
use crate::error::{Error, Result};

/// Docker Hub's name in references.
pub const DOCKER_HUB: &str = "docker.io";

/// A parsed reference.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reference {
    /// The registry host, with its port if one was given.
    pub host: String,
    /// The repository path inside the registry (`library/busybox`).
    pub repository: String,
    /// The tag, if one was given (`latest` when neither tag nor digest was).
    pub tag: Option<String>,
    /// The digest, if one was given.
    pub digest: Option<Digest>,
}

impl Reference {
    /// Parses `reference`; the error names it.
    pub fn parse(reference: &str) -> Result<Self> {
        let invalid = |why: &str| Error::invalid_argument(format!("reference {reference:?}: {why}"));
        if reference.is_empty() {
            return Err(invalid("must not be empty"));
        }
        let (rest, digest) = match reference.split_once('@') {
            Some((rest, digest)) => (rest, Some(Digest::parse(digest).map_err(|e| invalid(&e.to_string()))?)),
            None => (reference, None),
        };
        // A tag follows the last ':' after the last '/'.
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => (&rest[..last_slash + i], Some(&rest[last_slash + i + 1..])),
            None => (rest, None),
        };
        if let Some(tag) = tag
            && !valid_tag(tag)
        {
            return Err(invalid(&format!("tag {tag:?} is not valid")));
        }
        let (host, repository) = match name.split_once('/') {
            Some((first, path)) if first.contains(['.', ':']) || first == "localhost" => {
                (first.to_string(), path.to_string())
            }
            Some(_) => (DOCKER_HUB.to_string(), name.to_string()),
            None => (DOCKER_HUB.to_string(), format!("library/{name}")),
        };
        if host.is_empty() || host.contains(char::is_whitespace) {
            return Err(invalid("the host is not valid"));
        }
        if repository.is_empty() || !repository.split('/').all(valid_path_component) {
            return Err(invalid("the repository path is not valid"));
        }
        let tag = match (tag, &digest) {
            (Some(tag), _) => Some(tag.to_string()),
            (None, None) => Some("latest".to_string()),
            (None, Some(_)) => None,
        };
        Ok(Self {
            host,
            repository,
            tag,
            digest,
        })
    }

    /// What the manifest endpoint takes: the digest if there is one, else
    /// the tag.
    pub fn object(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(digest), _) => digest.to_string(),
            (None, Some(tag)) => tag.clone(),
            (None, None) => "latest".to_string(),
        }
    }

    /// `host/repository` (the repository's name in auth scopes and labels).
    pub fn locator(&self) -> String {
        format!("{}/{}", self.host, self.repository)
    }
}

impl std::fmt::Display for Reference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.locator())?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

fn valid_tag(tag: &str) -> bool {
    let mut chars = tag.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphanumeric() || c == '_')
        && tag.len() <= 128
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// A path component: lowercase alphanumerics separated by `.`, `_`, `__`
/// or dashes, as the distribution spec's grammar allows.
fn valid_path_component(component: &str) -> bool {
    let bytes = component.as_bytes();
    !bytes.is_empty()
        && bytes
            .first()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && bytes
            .last()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_forms_are_docker_hubs() {
        let r = Reference::parse("busybox").unwrap();
        assert_eq!(
            (r.host.as_str(), r.repository.as_str()),
            ("docker.io", "library/busybox")
        );
        assert_eq!(r.tag.as_deref(), Some("latest"));
        let r = Reference::parse("me/app:1.0").unwrap();
        assert_eq!(r.repository, "me/app");
        assert_eq!(r.to_string(), "docker.io/me/app:1.0");
    }

    #[test]
    fn hosts_ports_tags_and_digests() {
        let d = format!("sha256:{}", "a".repeat(64));
        let r = Reference::parse(&format!("127.0.0.1:5000/x/y:v1@{d}")).unwrap();
        assert_eq!(r.host, "127.0.0.1:5000");
        assert_eq!(r.repository, "x/y");
        assert_eq!(r.tag.as_deref(), Some("v1"));
        assert_eq!(r.object(), d);
        let r = Reference::parse("localhost/a").unwrap();
        assert_eq!(r.host, "localhost");
        let r = Reference::parse(&format!("reg.example:443/a@{d}")).unwrap();
        assert_eq!(r.tag, None);
    }

    #[test]
    fn bad_references_are_named() {
        for bad in ["", "UPPER/case", "a//b", "a:bad tag", "a@sha256:short", "host.example/"] {
            let e = Reference::parse(bad).unwrap_err();
            assert!(e.to_string().contains(&format!("{bad:?}")), "{bad}: {e}");
        }
    }
}
