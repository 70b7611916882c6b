//! A fingerprint of the files a reload reads, so that a change notice whose files hold the
//! same bytes as last time does not rebuild anything.
//!
//! File events only say that something may have changed: a kubelet volume update touches every
//! file's link, editors write a file several times, and the slow poll fires on a timer. The
//! fingerprint is what decides. It is a 64-bit SipHash of the bytes (with their lengths), not a
//! cryptographic digest: it detects change, and whoever could forge a collision could write the
//! files themselves.

use std::hash::{DefaultHasher, Hash as _, Hasher as _};
use std::path::Path;

/// The fingerprint of a sequence of byte strings and unreadable files.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fingerprint(u64);

/// Builds a [`Fingerprint`] piece by piece.
#[derive(Debug, Default)]
pub struct Prints(DefaultHasher);

impl Prints {
    /// A new, empty fingerprint.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `bytes`, length-prefixed so that `["ab", "c"]` and `["a", "bc"]` differ.
    pub fn bytes(&mut self, bytes: &[u8]) {
        0u8.hash(&mut self.0);
        bytes.hash(&mut self.0);
    }

    /// Adds the content of `path`, or, when it cannot be read, the kind of error: a file that
    /// is missing now and back later with the same bytes is a change both times.
    pub fn file(&mut self, path: &Path) {
        match std::fs::read(path) {
            Ok(bytes) => self.bytes(&bytes),
            Err(error) => {
                1u8.hash(&mut self.0);
                error.kind().to_string().hash(&mut self.0);
            }
        }
    }

    /// The fingerprint of everything added.
    pub fn finish(&self) -> Fingerprint {
        Fingerprint(self.0.finish())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn of(parts: &[&[u8]]) -> Fingerprint {
        let mut prints = Prints::new();
        for part in parts {
            prints.bytes(part);
        }
        prints.finish()
    }

    #[test]
    fn same_bytes_same_fingerprint_and_boundaries_count() {
        assert_eq!(of(&[b"ab", b"c"]), of(&[b"ab", b"c"]));
        assert_ne!(of(&[b"ab", b"c"]), of(&[b"a", b"bc"]));
        assert_ne!(of(&[b"ab"]), of(&[b"ab", b""]));
    }

    #[test]
    fn a_missing_file_differs_from_an_empty_one() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("tls.crt");
        let missing = {
            let mut p = Prints::new();
            p.file(&path);
            p.finish()
        };
        std::fs::write(&path, b"").expect("write");
        let mut empty = Prints::new();
        empty.file(&path);
        assert_ne!(missing, empty.finish());
        assert_eq!(empty.finish(), of(&[b""]));
    }
}
