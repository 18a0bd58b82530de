//! Seals: HMAC-SHA256 over rows the kernel trusts, keyed by a secret kept beside the database.
//!
//! The kernel treats a row as a grant (a capability), an answer (a human request) or an
//! image only if it carries the seal the kernel computed when it wrote it. Something that
//! writes the database by other means — a command given a path into it, a copied file —
//! cannot produce a seal without the key, so its rows are refused when they are read back.
//!
//! The key is 32 random bytes in a file created once, mode 0600, next to the database (see
//! [`super::layout::StateFiles`]); the kernel reserves that file like the database itself.

use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use hmac::{KeyInit, Mac};
use sha2::Sha256;

type HmacSha256 = hmac::Hmac<Sha256>;

/// Why the key could not be read or made.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("key file {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("key file {path} is not 64 hexadecimal characters; restore it from a backup of the state directory")]
    Malformed { path: PathBuf },
}

/// The key that seals rows and the audit head.
#[derive(Clone)]
pub struct Sealer {
    /// The HMAC keyed once: each seal clones it instead of hashing the key again (restoring
    /// a large store verifies several seals per process).
    keyed: HmacSha256,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer(..)")
    }
}

/// A field of a sealed record: text, or absent (never confused with empty text).
pub enum Field<'a> {
    Text(&'a str),
    Int(i64),
    Null,
}

impl<'a> From<&'a str> for Field<'a> {
    fn from(v: &'a str) -> Self {
        Field::Text(v)
    }
}

impl<'a> From<&'a String> for Field<'a> {
    fn from(v: &'a String) -> Self {
        Field::Text(v)
    }
}

impl From<i64> for Field<'_> {
    fn from(v: i64) -> Self {
        Field::Int(v)
    }
}

impl From<bool> for Field<'_> {
    fn from(v: bool) -> Self {
        Field::Int(v as i64)
    }
}

impl<'a, T: Into<Field<'a>>> From<Option<T>> for Field<'a> {
    fn from(v: Option<T>) -> Self {
        v.map(Into::into).unwrap_or(Field::Null)
    }
}

impl Sealer {
    /// A sealer with a given key (tests, benchmarks).
    pub fn from_key(key: [u8; 32]) -> Sealer {
        Sealer {
            keyed: <HmacSha256 as KeyInit>::new_from_slice(&key)
                .expect("HMAC accepts any key length"),
        }
    }

    /// Reads the key at `path`, or creates it (mode 0600) if there is none. Returns whether
    /// it was created now.
    pub fn load_or_create(path: &Path) -> Result<(Sealer, bool), KeyError> {
        let io = |source| KeyError::Io {
            path: path.to_path_buf(),
            source,
        };
        match std::fs::File::open(path) {
            Ok(mut file) => {
                let mut text = String::new();
                file.read_to_string(&mut text).map_err(io)?;
                let mode = file.metadata().map_err(io)?.permissions().mode();
                if mode & 0o077 != 0 {
                    tracing::warn!(path = %path.display(), "the key file is readable by other users; chmod 600 it");
                }
                let bytes = hex::decode(text.trim())
                    .ok()
                    .and_then(|b| <[u8; 32]>::try_from(b).ok())
                    .ok_or_else(|| KeyError::Malformed {
                        path: path.to_path_buf(),
                    })?;
                Ok((Sealer::from_key(bytes), false))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut key = [0u8; 32];
                std::fs::File::open("/dev/urandom")
                    .and_then(|mut r| r.read_exact(&mut key))
                    .map_err(io)?;
                let created = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(path);
                match created {
                    Ok(mut file) => {
                        file.write_all(format!("{}\n", hex::encode(key)).as_bytes())
                            .and_then(|_| file.sync_all())
                            .map_err(io)?;
                        Ok((Sealer::from_key(key), true))
                    }
                    // Another runtime made it first: use theirs.
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                        Sealer::load_or_create(path)
                    }
                    Err(e) => Err(io(e)),
                }
            }
            Err(e) => Err(io(e)),
        }
    }

    /// The seal (lowercase hex HMAC-SHA256) of a record of kind `domain` with `fields`. Each
    /// field is length-prefixed and typed, so no two field lists encode alike.
    pub fn seal(&self, domain: &str, fields: &[Field<'_>]) -> String {
        hex::encode(self.mac(domain, fields).finalize().into_bytes())
    }

    /// Whether `seal` is the seal of the record (compared in constant time).
    pub fn verify(&self, domain: &str, fields: &[Field<'_>], seal: Option<&str>) -> bool {
        let Some(bytes) = seal.and_then(|s| hex::decode(s).ok()) else {
            return false;
        };
        self.mac(domain, fields).verify_slice(&bytes).is_ok()
    }

    fn mac(&self, domain: &str, fields: &[Field<'_>]) -> HmacSha256 {
        let mut mac = self.keyed.clone();
        let mut put = |tag: &str, text: &str| {
            mac.update(tag.as_bytes());
            mac.update(text.len().to_string().as_bytes());
            mac.update(b":");
            mac.update(text.as_bytes());
            mac.update(b";");
        };
        put("d", domain);
        for field in fields {
            match field {
                Field::Text(t) => put("t", t),
                Field::Int(i) => put("i", &i.to_string()),
                Field::Null => put("n", ""),
            }
        }
        mac
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seals_bind_every_field_and_its_type() {
        let s = Sealer::from_key([7; 32]);
        let seal = s.seal("cap", &["a".into(), 1.into(), Field::Null]);
        assert!(s.verify("cap", &["a".into(), 1.into(), Field::Null], Some(&seal)));
        assert!(!s.verify("cap", &["a".into(), 2.into(), Field::Null], Some(&seal)));
        assert!(!s.verify("cap", &["a".into(), "1".into(), Field::Null], Some(&seal)));
        assert!(!s.verify("cap", &["a".into(), 1.into(), "".into()], Some(&seal)));
        assert!(!s.verify("req", &["a".into(), 1.into(), Field::Null], Some(&seal)));
        assert!(!s.verify("cap", &["a".into(), 1.into(), Field::Null], None));
        assert!(!s.verify("cap", &["a".into(), 1.into(), Field::Null], Some("zz")));
        let other = Sealer::from_key([8; 32]);
        assert!(!other.verify("cap", &["a".into(), 1.into(), Field::Null], Some(&seal)));
    }

    #[test]
    fn hmac_matches_rfc_4231_case_2() {
        // Key "Jefe", data "what do ya want for nothing?".
        let mut mac = <HmacSha256 as KeyInit>::new_from_slice(b"Jefe").unwrap();
        mac.update(b"what do ya want for nothing?");
        assert_eq!(
            hex::encode(mac.finalize().into_bytes()),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn the_key_file_is_created_once_with_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db.key");
        let (a, created) = Sealer::load_or_create(&path).unwrap();
        assert!(created);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let (b, created) = Sealer::load_or_create(&path).unwrap();
        assert!(!created);
        assert_eq!(a.seal("x", &[]), b.seal("x", &[]));
        std::fs::write(&path, "not hex").unwrap();
        assert!(matches!(
            Sealer::load_or_create(&path),
            Err(KeyError::Malformed { .. })
        ));
    }
}
