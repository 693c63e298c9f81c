//! Library paths: the only file names the chain will carry.
//!
//! A path is relative to the library root, `/`-separated, in Unicode NFC, with no empty, `.`
//! or `..` segment, no NUL and at most [`MAX_PATH_LEN`] bytes. [`ChainPath::new`] normalises
//! to NFC and then checks; [`ChainPath::parse_canonical`] (used by the decoder, so for
//! everything a peer sends) refuses anything that is not already in that exact form, so one
//! path has exactly one encoding.

use std::fmt;

use unicode_normalization::{is_nfc, UnicodeNormalization};

use super::error::PathError;

/// Longest path, in bytes of UTF-8.
pub const MAX_PATH_LEN: usize = 4096;

/// A checked library path.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ChainPath(String);

impl ChainPath {
    /// Normalises `s` to NFC, then checks the rules.
    pub fn new(s: &str) -> Result<Self, PathError> {
        let nfc: String = s.nfc().collect();
        check(&nfc)?;
        Ok(ChainPath(nfc))
    }

    /// Accepts `s` only if it already follows every rule, NFC included.
    pub fn parse_canonical(s: &str) -> Result<Self, PathError> {
        check(s)?;
        if !is_nfc(s) {
            return Err(PathError::NotNfc);
        }
        Ok(ChainPath(s.to_string()))
    }

    /// The path as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// True if `self` is `other` or lies below it.
    pub fn is_within(&self, other: &ChainPath) -> bool {
        is_within(&self.0, &other.0)
    }
}

/// True if `path` equals `dir` or lies below it (`dir/…`).
pub(crate) fn is_within(path: &str, dir: &str) -> bool {
    path == dir
        || (path.len() > dir.len() && path.starts_with(dir) && path.as_bytes()[dir.len()] == b'/')
}

fn check(s: &str) -> Result<(), PathError> {
    if s.is_empty() {
        return Err(PathError::Empty);
    }
    if s.len() > MAX_PATH_LEN {
        return Err(PathError::TooLong(s.len()));
    }
    if s.contains('\0') {
        return Err(PathError::Nul);
    }
    if s.starts_with('/') {
        return Err(PathError::Absolute);
    }
    for seg in s.split('/') {
        match seg {
            "" => return Err(PathError::EmptySegment),
            "." | ".." => return Err(PathError::DotSegment),
            _ => {}
        }
    }
    Ok(())
}

impl fmt::Display for ChainPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ChainPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_paths() {
        for p in [
            "a",
            "a/b.txt",
            "Ordner/Übersicht.pdf",
            "x/.hidden",
            "a..b/c",
        ] {
            assert_eq!(ChainPath::new(p).unwrap().as_str(), p);
        }
    }

    #[test]
    fn rejects_bad_paths() {
        let long = "a".repeat(MAX_PATH_LEN + 1);
        for (p, e) in [
            ("", PathError::Empty),
            ("/a", PathError::Absolute),
            ("a//b", PathError::EmptySegment),
            ("a/", PathError::EmptySegment),
            ("./a", PathError::DotSegment),
            ("a/../b", PathError::DotSegment),
            ("..", PathError::DotSegment),
            ("a\0b", PathError::Nul),
            (long.as_str(), PathError::TooLong(MAX_PATH_LEN + 1)),
        ] {
            assert_eq!(ChainPath::new(p).unwrap_err(), e, "{p:?}");
        }
        assert!(ChainPath::new(&"a".repeat(MAX_PATH_LEN)).is_ok());
    }

    #[test]
    fn normalises_to_nfc_and_canonical_parse_refuses_nfd() {
        let nfd = "Cafe\u{301}.txt";
        let p = ChainPath::new(nfd).unwrap();
        assert_eq!(p.as_str(), "Caf\u{e9}.txt");
        assert_eq!(
            ChainPath::parse_canonical(nfd).unwrap_err(),
            PathError::NotNfc
        );
        assert!(ChainPath::parse_canonical("Caf\u{e9}.txt").is_ok());
    }

    #[test]
    fn within() {
        assert!(is_within("a/b", "a"));
        assert!(is_within("a", "a"));
        assert!(!is_within("ab", "a"));
        assert!(!is_within("a", "a/b"));
    }
}
