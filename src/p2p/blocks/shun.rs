//! Providers that misbehaved: a peer that sent a bad block (bytes that do not match their
//! hash, a manifest that is not the version's, a block nobody asked for) is disconnected and
//! not asked for blocks of that library again for [`SHUN_FOR`].
//!
//! Excluding it from the one fetch is not enough: the next version of the same library
//! would ask it again, pay for its garbage again, and verify it away again. The shun is per
//! library (a peer is trusted per library, and may serve another library honestly), kept in
//! memory (a restart forgets it, as the node's quarantine of peers that sent bad entries),
//! and the disconnect is asked of the node's task through a channel, since only it holds
//! the swarm. A provider that only *stalls* is not shunned: a slow link is not a fault, and
//! it is cut off by the fetch's deadline instead.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use libp2p::PeerId;
use tokio::sync::mpsc;

use crate::chain::LibraryId;

/// How long a provider that sent a bad block is not asked again for that library.
pub const SHUN_FOR: Duration = Duration::from_secs(600);

/// The most shuns kept; the oldest go first (a flood of identities cannot grow it).
const MAX_SHUNNED: usize = 4096;

/// The shunned providers, shared by every fetch of a node. Cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct Shunned {
    until: Arc<Mutex<HashMap<(LibraryId, PeerId), Instant>>>,
    /// Peers the node's task should disconnect.
    disconnect: mpsc::UnboundedSender<PeerId>,
}

impl Shunned {
    /// An empty list; shunned peers are sent to `disconnect`.
    pub(crate) fn new(disconnect: mpsc::UnboundedSender<PeerId>) -> Shunned {
        Shunned {
            until: Arc::default(),
            disconnect,
        }
    }

    /// Shuns `peer` for `library` for [`SHUN_FOR`] and asks the node to disconnect it.
    pub(crate) fn shun(&self, library: LibraryId, peer: PeerId) {
        let now = Instant::now();
        {
            let mut until = crate::locks::lock(&self.until);
            until.retain(|_, t| *t > now);
            if until.len() >= MAX_SHUNNED {
                if let Some(oldest) = until.iter().min_by_key(|(_, t)| **t).map(|(k, _)| *k) {
                    until.remove(&oldest);
                }
            }
            until.insert((library, peer), now + SHUN_FOR);
        }
        // The node is gone when nobody receives: nothing left to disconnect then.
        let _ = self.disconnect.send(peer);
    }

    /// Whether `peer` is shunned for `library` now.
    pub(crate) fn is_shunned(&self, library: &LibraryId, peer: &PeerId) -> bool {
        crate::locks::lock(&self.until)
            .get(&(*library, *peer))
            .is_some_and(|t| *t > Instant::now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shun_is_per_library_and_asks_for_a_disconnect() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let shunned = Shunned::new(tx);
        let (peer, other) = (PeerId::random(), PeerId::random());
        let (lib, lib2) = (LibraryId([1; 16]), LibraryId([2; 16]));
        shunned.shun(lib, peer);
        assert!(shunned.is_shunned(&lib, &peer));
        assert!(!shunned.is_shunned(&lib2, &peer));
        assert!(!shunned.is_shunned(&lib, &other));
        assert_eq!(rx.try_recv().ok(), Some(peer));
    }

    #[test]
    fn the_list_is_bounded() {
        let (tx, _rx) = mpsc::unbounded_channel();
        let shunned = Shunned::new(tx);
        let lib = LibraryId([1; 16]);
        let first = PeerId::random();
        shunned.shun(lib, first);
        for _ in 0..MAX_SHUNNED {
            shunned.shun(lib, PeerId::random());
        }
        assert_eq!(crate::locks::lock(&shunned.until).len(), MAX_SHUNNED);
        assert!(!shunned.is_shunned(&lib, &first));
    }
}
