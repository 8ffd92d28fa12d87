//! Content digests: `algorithm:hex`, as the OCI image spec writes them.
//!
//! berth computes and stores sha256 (the canonical algorithm). sha384 and
//! sha512 digests are accepted as valid names, so asking for one is a clean
//! NotFound rather than a parse error, but no blob is ever stored under them.

use std::fmt;

use sha2::{Digest as _, Sha256};

use crate::error::{Error, Result};

/// A hash algorithm a digest may name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Algorithm {
    /// The canonical algorithm; every stored blob is addressed by it.
    Sha256,
    /// Valid in references, never produced by berth.
    Sha384,
    /// Valid in references, never produced by berth.
    Sha512,
}

impl Algorithm {
    /// The name before the colon.
    pub fn name(self) -> &'static str {
        match self {
            Self::Sha256 => "sha256",
            Self::Sha384 => "sha384",
            Self::Sha512 => "sha512",
        }
    }

    fn hex_len(self) -> usize {
        match self {
            Self::Sha256 => 64,
            Self::Sha384 => 96,
            Self::Sha512 => 128,
        }
    }
}

/// A validated digest.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    algorithm: Algorithm,
    hex: String,
}

impl Digest {
    /// Parses and checks `text`; a malformed digest is InvalidArgument and
    /// the message quotes it.
    pub fn parse(text: &str) -> Result<Self> {
        let invalid = |why: &str| Error::invalid_argument(format!("digest {text:?}: {why}"));
        let (algorithm, hex) = text.split_once(':').ok_or_else(|| invalid("must be algorithm:hex"))?;
        let algorithm = match algorithm {
            "sha256" => Algorithm::Sha256,
            "sha384" => Algorithm::Sha384,
            "sha512" => Algorithm::Sha512,
            _ => return Err(invalid("unsupported digest algorithm")),
        };
        if hex.len() != algorithm.hex_len() {
            return Err(invalid(&format!(
                "{} digests have {} hex characters",
                algorithm.name(),
                algorithm.hex_len()
            )));
        }
        if !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(invalid("must be lowercase hex"));
        }
        Ok(Self {
            algorithm,
            hex: hex.to_string(),
        })
    }

    /// The sha256 digest of a finished hash.
    pub fn from_sha256(hasher: Sha256) -> Self {
        Self {
            algorithm: Algorithm::Sha256,
            hex: hex::encode(hasher.finalize()),
        }
    }

    /// The sha256 digest of `data`.
    pub fn of(data: &[u8]) -> Self {
        Self::from_sha256(Sha256::new_with_prefix(data))
    }

    /// The algorithm.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// The hex part.
    pub fn hex(&self) -> &str {
        &self.hex
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.algorithm.name(), self.hex)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    const EMPTY: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn computes_sha256() {
        assert_eq!(Digest::of(b"").to_string(), EMPTY);
    }

    #[test]
    fn parses_valid_digests() {
        let d = Digest::parse(EMPTY).unwrap();
        assert_eq!(d.algorithm(), Algorithm::Sha256);
        assert_eq!(d.to_string(), EMPTY);
        Digest::parse(&format!("sha512:{}", "a".repeat(128))).unwrap();
    }

    #[test]
    fn rejects_malformed_digests_by_name() {
        for bad in [
            "",
            "sha256",
            "sha256:",
            "md5:abc",
            "sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855",
            "sha256:e3b0",
            &format!("sha256:{}", "g".repeat(64)),
            &format!("sha256:{}/../x", "a".repeat(58)),
        ] {
            let err = Digest::parse(bad).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{bad:?}");
            assert!(err.to_string().contains(&format!("{bad:?}")), "{err}");
        }
    }
}
