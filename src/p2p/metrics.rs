//! Counting block bytes: per peer, and per class of link (LAN or WAN), for `harpbridge
//! peers`, the REST API and Prometheus `/metrics`.
//!
//! Only `/harp/blocks/2` payloads are counted (the bytes of blocks sent and received), not
//! the framing, the manifests or the chain sync: those are a few bytes per MiB moved, and the
//! figure the office story cares about is "how much file content crossed the WAN".
//!
//! A byte is counted in the class its peer had *when it moved*: the node reclassifies a peer
//! as it learns more (mDNS finds it, a ping answers), and the node's task keeps the class
//! table here up to date ([`Meter::set_lan`]). The fetcher and the block server, which run
//! outside the node's task, count through a shared [`Meter`] (a mutex around two small maps,
//! taken once per block).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use libp2p::PeerId;

use super::limits::WanLimits;
use super::pace::{self, Pace};
use crate::chain::LibraryId;

/// Block bytes moved, as [`super::NodeHandle::traffic`] reports them. Totals since the node
/// started.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Traffic {
    /// Block bytes received from LAN peers.
    pub lan_in: u64,
    /// Block bytes sent to LAN peers.
    pub lan_out: u64,
    /// Block bytes received from WAN peers.
    pub wan_in: u64,
    /// Block bytes sent to WAN peers.
    pub wan_out: u64,
    /// Per peer, ordered by `PeerId` bytes.
    pub per_peer: Vec<PeerTraffic>,
}

/// Block bytes moved with one peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerTraffic {
    /// The peer.
    pub peer: PeerId,
    /// Its class now (see [`super::PeerInfo::lan`]).
    pub lan: bool,
    /// Block bytes received from it.
    pub bytes_in: u64,
    /// Block bytes sent to it.
    pub bytes_out: u64,
}

#[derive(Debug, Default)]
struct State {
    /// Peers known to be on the LAN (absent: WAN).
    lan: HashMap<PeerId, bool>,
    /// (in, out) per peer.
    per_peer: HashMap<PeerId, (u64, u64)>,
    totals: Traffic,
}

/// The shared counters, and the WAN limits that use their classes. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Meter {
    state: Arc<Mutex<State>>,
    /// WAN limits and their buckets (see [`super::pace`] and [`super::limits`]).
    paces: Arc<Mutex<Paces>>,
}

/// A bucket each way (up, down); `None`: that way is not limited.
type Buckets = (Option<Arc<Pace>>, Option<Arc<Pace>>);

/// The running buckets of a [`WanLimits`].
#[derive(Debug, Default)]
struct Paces {
    limits: WanLimits,
    up: Option<Arc<Pace>>,
    down: Option<Arc<Pace>>,
    /// (up, down) per library with a limit of its own.
    libraries: HashMap<LibraryId, Buckets>,
}

/// A bucket for `rate`: `old` if it already runs at that rate (so its debt carries over).
fn bucket(old: Option<&Arc<Pace>>, rate: Option<u64>) -> Option<Arc<Pace>> {
    let rate = rate?;
    match old {
        Some(p) if p.rate() == rate => Some(p.clone()),
        _ => Some(Arc::new(Pace::new(rate))),
    }
}

impl Meter {
    /// A meter whose WAN traffic is limited to `up` and `down` bytes per second (`None`:
    /// unlimited).
    pub fn with_wan_limits(up: Option<u64>, down: Option<u64>) -> Meter {
        let m = Meter::default();
        m.set_wan_limits(WanLimits::global(up, down));
        m
    }

    /// Replaces the WAN limits (already [`WanLimits::checked`]); a bucket whose rate did
    /// not change keeps its state.
    pub fn set_wan_limits(&self, limits: WanLimits) {
        let mut p = crate::locks::lock(&self.paces);
        p.up = bucket(p.up.as_ref(), limits.global.up);
        p.down = bucket(p.down.as_ref(), limits.global.down);
        let mut libraries = HashMap::new();
        for id in limits.libraries.keys() {
            let Ok(library) = id.parse::<LibraryId>() else {
                continue;
            };
            let rates = limits.library(&library);
            let old = p.libraries.get(&library);
            let up = bucket(old.and_then(|o| o.0.as_ref()), rates.up);
            let down = bucket(old.and_then(|o| o.1.as_ref()), rates.down);
            libraries.insert(library, (up, down));
        }
        p.libraries = libraries;
        p.limits = limits;
    }

    /// The WAN limits in force.
    pub fn wan_limits(&self) -> WanLimits {
        crate::locks::lock(&self.paces).limits.clone()
    }

    /// The buckets a block of `library` pays, one way.
    fn paces(&self, library: &LibraryId, up: bool) -> Vec<Arc<Pace>> {
        let p = crate::locks::lock(&self.paces);
        let lib = p.libraries.get(library);
        let (global, own) = if up {
            (&p.up, lib.and_then(|l| l.0.as_ref()))
        } else {
            (&p.down, lib.and_then(|l| l.1.as_ref()))
        };
        global.iter().chain(own).cloned().collect()
    }

    /// Whether block bytes of `library` from `peer` are paced (a WAN peer, with a download
    /// limit).
    pub fn paces_in(&self, library: &LibraryId, peer: &PeerId) -> bool {
        !self.is_lan(peer) && !self.paces(library, false).is_empty()
    }

    /// Before `n` block bytes of `library` are asked from `peer`: waits as the WAN
    /// download limits ask (never for a LAN peer).
    pub async fn pace_in(&self, library: &LibraryId, peer: &PeerId, n: u64) {
        if n > 0 && !self.is_lan(peer) {
            pace::pay_all(&self.paces(library, false), n, std::future::pending()).await;
        }
    }

    /// Before `n` block bytes of `library` are written to `peer`: waits as the WAN upload
    /// limits ask (never for a LAN peer). If `withdrawn` completes first (the block was
    /// cancelled), stops waiting, gives the bytes back and returns false.
    pub async fn pace_out(
        &self,
        library: &LibraryId,
        peer: &PeerId,
        n: u64,
        withdrawn: impl std::future::Future<Output = ()>,
    ) -> bool {
        if n == 0 || self.is_lan(peer) {
            return true;
        }
        pace::pay_all(&self.paces(library, true), n, withdrawn).await
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        crate::locks::lock(&self.state)
    }

    /// Records the class of `peer` (called by the node's task as it learns it).
    pub fn set_lan(&self, peer: PeerId, lan: bool) {
        self.lock().lan.insert(peer, lan);
    }

    /// Forgets a peer the node forgot: its class and its own counters (the totals keep
    /// its bytes).
    pub fn forget(&self, peer: &PeerId) {
        let mut s = self.lock();
        s.lan.remove(peer);
        s.per_peer.remove(peer);
    }

    /// Whether `peer` is on the LAN as far as the node knows.
    pub fn is_lan(&self, peer: &PeerId) -> bool {
        self.lock().lan.get(peer).copied().unwrap_or(false)
    }

    /// Counts `n` block bytes received from `peer`.
    pub fn add_in(&self, peer: PeerId, n: u64) {
        let mut s = self.lock();
        let lan = s.lan.get(&peer).copied().unwrap_or(false);
        s.per_peer.entry(peer).or_default().0 += n;
        if lan {
            s.totals.lan_in += n;
        } else {
            s.totals.wan_in += n;
        }
    }

    /// Counts `n` block bytes sent to `peer`.
    pub fn add_out(&self, peer: PeerId, n: u64) {
        let mut s = self.lock();
        let lan = s.lan.get(&peer).copied().unwrap_or(false);
        s.per_peer.entry(peer).or_default().1 += n;
        if lan {
            s.totals.lan_out += n;
        } else {
            s.totals.wan_out += n;
        }
    }

    /// Bytes (in, out) moved with `peer`.
    pub fn peer(&self, peer: &PeerId) -> (u64, u64) {
        self.lock().per_peer.get(peer).copied().unwrap_or_default()
    }

    /// A snapshot of every counter.
    pub fn traffic(&self) -> Traffic {
        let s = self.lock();
        let mut out = s.totals.clone();
        out.per_peer = s
            .per_peer
            .iter()
            .map(|(peer, &(bytes_in, bytes_out))| PeerTraffic {
                peer: *peer,
                lan: s.lan.get(peer).copied().unwrap_or(false),
                bytes_in,
                bytes_out,
            })
            .collect();
        out.per_peer.sort_by_key(|p| p.peer.to_bytes());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_go_to_the_class_the_peer_had_when_they_moved() {
        let m = Meter::default();
        let p = PeerId::random();
        m.add_in(p, 10);
        m.set_lan(p, true);
        m.add_in(p, 5);
        m.add_out(p, 3);
        let t = m.traffic();
        assert_eq!((t.wan_in, t.lan_in, t.lan_out, t.wan_out), (10, 5, 3, 0));
        assert_eq!(t.per_peer.len(), 1);
        assert_eq!((t.per_peer[0].bytes_in, t.per_peer[0].bytes_out), (15, 3));
        assert_eq!(m.peer(&p), (15, 3));
    }
}
