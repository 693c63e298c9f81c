//! Echo suppression: not recording our own writes to Nextcloud a second time.
//!
//! When harpbridge writes a file into Nextcloud (applying a change that came from a peer),
//! Nextcloud fires webhooks for that write, with the impersonated user as the actor. The
//! chain already holds that version, so those events must not become new entries.
//!
//! Two guards, neither trusting ETags (an ETag can stay the same across two writes in one
//! second, fixtures `webdav/etag-unchanged-within-same-second.http`):
//!
//! 1. Every own write sends `OC-Checksum: SHA256:<hex>` and is remembered here for a
//!    while. Nextcloud keeps that checksum until the file is written again without one, so
//!    a PROPFIND that still lists our checksum proves the file is exactly what we wrote: the
//!    event is skipped without downloading anything.
//! 2. Otherwise the worker downloads the file and compares its content id with what
//!    Nextcloud was last known to hold there (the mirror, which write-back updates with
//!    each write before the library's lock is released) and with the tree's version: the
//!    same content never makes a new entry. This also absorbs duplicate events
//!    (NodeCreated + NodeWritten for one PUT).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long an own write is remembered.
const REMEMBER_FOR: Duration = Duration::from_secs(600);
/// How often forgotten writes are swept out (each write used to sweep: quadratic in a
/// burst of thousands of small files).
const SWEEP_EVERY: Duration = Duration::from_secs(60);

#[derive(Debug, Default)]
pub struct OwnWrites {
    writes: Mutex<HashMap<(String, String), (String, Instant)>>,
    /// When old writes were last forgotten (a sweep of the whole map: not on every write).
    swept: Mutex<Option<Instant>>,
}

impl OwnWrites {
    /// Remembers that we wrote `sha256_hex` to `uid`'s `path` (below the user's root).
    pub fn remember(&self, uid: &str, path: &str, sha256_hex: &str) {
        let mut writes = crate::locks::lock(&self.writes);
        let now = Instant::now();
        let mut swept = crate::locks::lock(&self.swept);
        if swept.is_none_or(|at| now.duration_since(at) >= SWEEP_EVERY) {
            writes.retain(|_, (_, at)| now.duration_since(*at) < REMEMBER_FOR);
            *swept = Some(now);
        }
        writes.insert(
            (uid.to_owned(), path.to_owned()),
            (sha256_hex.to_ascii_lowercase(), now),
        );
    }

    /// Whether a file whose PROPFIND listed `checksums` is still our own write.
    pub fn is_echo(&self, uid: &str, path: &str, checksums: &[String]) -> bool {
        let writes = crate::locks::lock(&self.writes);
        let Some((sum, at)) = writes.get(&(uid.to_owned(), path.to_owned())) else {
            return false;
        };
        at.elapsed() < REMEMBER_FOR
            && checksums.iter().any(|c| {
                c.split_once(':').is_some_and(|(algo, hex)| {
                    algo.eq_ignore_ascii_case("SHA256") && hex.eq_ignore_ascii_case(sum)
                })
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_our_checksum_on_our_path_is_an_echo() {
        let w = OwnWrites::default();
        w.remember("alice", "Docs/a.txt", "ABCD");
        assert!(w.is_echo(
            "alice",
            "Docs/a.txt",
            &["SHA1:00".into(), "SHA256:abcd".into()]
        ));
        assert!(!w.is_echo("alice", "Docs/a.txt", &[]));
        assert!(!w.is_echo("alice", "Docs/a.txt", &["SHA256:abce".into()]));
        assert!(!w.is_echo("bob", "Docs/a.txt", &["SHA256:abcd".into()]));
    }
}
