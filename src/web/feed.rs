//! What the swarm reports, in the panel's words: [`PeerInfo`] → [`Peer`],
//! [`TransferProgress`] → [`Transfer`], with the rates the panel shows computed here.
//!
//! Both feeds keep the last view of each peer or transfer and say what changed, so the hub
//! publishes an event only when something the panel shows is different.
//!
//! - A peer is `discovered` while it is a member of no library held here (it gets nothing),
//!   else `connected` or `disconnected`. Its link is `lan` when mDNS found it, `wan` when it
//!   is connected otherwise, `unknown` before either. Throughput is the change of its byte
//!   counters between two looks, divided by the time between them.
//! - A transfer's rate is its bytes since the first report divided by the time since then
//!   (an average, steadier than the last step), and its ETA the bytes left at that rate.

use std::collections::HashMap;
use std::time::Instant;

use libp2p::PeerId;

use super::events::{
    Event, LinkKind, Peer, PeerState, Throughput, Transfer, TransferDirection, TransferState,
};
use crate::p2p::{PeerInfo, TransferProgress};

/// The last view of one peer, and the byte counters it was computed from.
#[derive(Debug, Clone)]
struct PeerSample {
    peer: Peer,
    connected: bool,
    bytes_in: u64,
    bytes_out: u64,
    at: Instant,
}

/// The peers as the panel last saw them.
#[derive(Debug, Default)]
pub struct PeerFeed {
    known: HashMap<PeerId, PeerSample>,
}

impl PeerFeed {
    /// Takes the node's peer table as of `now` (`now_ms` on the wall clock) and returns the
    /// hub events that bring the panel up to date: a `peer_changed` for each new or changed
    /// peer, a `peer_removed` for each one the node no longer lists. `name` gives a peer's
    /// name in the libraries' membership entries, if known.
    pub fn update(
        &mut self,
        infos: &[PeerInfo],
        name: impl Fn(&PeerInfo) -> Option<String>,
        now: Instant,
        now_ms: u64,
    ) -> Vec<Event> {
        let mut events = Vec::new();
        let mut next = HashMap::with_capacity(infos.len());
        for info in infos {
            let previous = self.known.get(&info.peer);
            let peer = peer_view(info, name(info), previous, now, now_ms);
            if previous.is_none_or(|p| p.peer != peer) {
                events.push(Event::PeerChanged { peer: peer.clone() });
            }
            next.insert(
                info.peer,
                PeerSample {
                    peer,
                    connected: info.connected,
                    bytes_in: info.bytes_in,
                    bytes_out: info.bytes_out,
                    at: now,
                },
            );
        }
        for (id, gone) in &self.known {
            if !next.contains_key(id) {
                events.push(Event::PeerRemoved {
                    peer_id: gone.peer.peer_id.clone(),
                });
            }
        }
        self.known = next;
        events
    }
}

fn peer_view(
    info: &PeerInfo,
    name: Option<String>,
    previous: Option<&PeerSample>,
    now: Instant,
    now_ms: u64,
) -> Peer {
    let state = if !info.trusted() {
        PeerState::Discovered
    } else if info.connected {
        PeerState::Connected
    } else {
        PeerState::Disconnected
    };
    let link = if info.lan {
        LinkKind::Lan
    } else if info.connected {
        LinkKind::Wan
    } else {
        previous.map(|p| p.peer.link).unwrap_or(LinkKind::Unknown)
    };
    let throughput = match previous {
        Some(p) => {
            let secs = now.saturating_duration_since(p.at).as_secs_f64();
            if secs > 0.0 {
                Throughput {
                    rx_bps: info.bytes_in.saturating_sub(p.bytes_in) as f64 / secs,
                    tx_bps: info.bytes_out.saturating_sub(p.bytes_out) as f64 / secs,
                }
            } else {
                p.peer.throughput
            }
        }
        None => Throughput::default(),
    };
    let was_connected = previous.is_some_and(|p| p.connected);
    // "Last seen" moves when the peer connects or goes away, not on every look, so that a
    // connected peer does not produce an event per look.
    let last_seen_ms = match (info.connected, was_connected) {
        (true, true) | (false, false) => previous.and_then(|p| p.peer.last_seen_ms),
        _ => Some(now_ms),
    };
    Peer {
        peer_id: info.peer.to_base58(),
        name,
        trusted: info.trusted(),
        state,
        link,
        addresses: info.addresses.iter().map(|a| a.to_string()).collect(),
        rtt_ms: info.rtt.map(|d| d.as_secs_f64() * 1e3),
        throughput,
        last_seen_ms,
    }
}

/// Where a transfer stands, beyond what its last report says.
#[derive(Debug, Clone)]
struct TransferTrack {
    path: String,
    started: Instant,
    bytes_at_start: u64,
}

/// The transfers under way, for their rates.
#[derive(Debug, Default)]
pub struct TransferFeed {
    running: HashMap<String, TransferTrack>,
}

/// A transfer's id on the panel: the library and the version, which together name one
/// fetch (a second fetch of the same version continues the first).
pub fn transfer_id(progress: &TransferProgress) -> String {
    format!("{}:{}", progress.library, progress.content)
}

impl TransferFeed {
    /// Whether this transfer has been seen (its path is known).
    pub fn knows(&self, progress: &TransferProgress) -> bool {
        self.running.contains_key(&transfer_id(progress))
    }

    /// The panel's view of a report at `now`; `path` names the file for a transfer not seen
    /// before (ignored after). A finished transfer is forgotten.
    pub fn update(
        &mut self,
        progress: &TransferProgress,
        path: impl FnOnce() -> String,
        now: Instant,
        now_ms: u64,
    ) -> Transfer {
        let id = transfer_id(progress);
        let track = self
            .running
            .entry(id.clone())
            .or_insert_with(|| TransferTrack {
                path: path(),
                started: now,
                bytes_at_start: progress.bytes_done,
            })
            .clone();
        let secs = now.saturating_duration_since(track.started).as_secs_f64();
        let moved = progress.bytes_done.saturating_sub(track.bytes_at_start);
        let rate_bps = if secs > 0.0 { moved as f64 / secs } else { 0.0 };
        let left = progress.bytes_total.saturating_sub(progress.bytes_done);
        let state = match (&progress.error, progress.finished) {
            (Some(_), _) => TransferState::Failed,
            (None, true) => TransferState::Done,
            (None, false) if progress.bytes_done == 0 => TransferState::Queued,
            (None, false) => TransferState::Running,
        };
        let eta_s = match state {
            TransferState::Done => Some(0.0),
            TransferState::Failed => None,
            _ if left == 0 => Some(0.0),
            _ if rate_bps > 0.0 => Some(left as f64 / rate_bps),
            _ => None,
        };
        if state.is_finished() {
            self.running.remove(&id);
        }
        Transfer {
            id,
            library_id: progress.library.to_hex(),
            path: track.path,
            direction: TransferDirection::Download,
            peer_id: progress.from.map(|p| p.to_base58()),
            bytes_done: progress.bytes_done,
            bytes_total: progress.bytes_total,
            rate_bps,
            eta_s,
            state,
            error: progress.error.clone(),
            updated_ms: now_ms,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::{ContentId, LibraryId};
    use crate::identity::DeviceIdentity;
    use std::time::Duration;

    fn info(libraries: usize, connected: bool, lan: bool, bytes: u64) -> PeerInfo {
        let id = DeviceIdentity::from_secret([4; 32]);
        PeerInfo {
            peer: id.peer_id(),
            device: Some(id.device_key()),
            connected,
            lan,
            addresses: vec!["/ip4/192.168.1.9/tcp/4001".parse().unwrap()],
            rtt: Some(Duration::from_micros(1500)),
            agent: None,
            libraries: vec![LibraryId([1; 16]); libraries],
            bytes_in: bytes,
            bytes_out: bytes / 2,
        }
    }

    #[test]
    fn peers_change_state_rate_and_go_away() {
        let mut feed = PeerFeed::default();
        let t0 = Instant::now();
        let events = feed.update(&[info(0, true, true, 0)], |_| None, t0, 1_000);
        let [Event::PeerChanged { peer }] = events.as_slice() else {
            panic!("{events:?}")
        };
        assert_eq!(peer.state, PeerState::Discovered);
        assert_eq!(peer.link, LinkKind::Lan);
        assert_eq!(peer.rtt_ms, Some(1.5));
        assert_eq!(peer.last_seen_ms, Some(1_000));
        // Nothing changed: nothing to publish, even later.
        assert!(feed
            .update(
                &[info(0, true, true, 0)],
                |_| None,
                t0 + Duration::from_secs(2),
                3_000
            )
            .is_empty());
        // Paired, and 4 MB in over the next 2 s.
        let events = feed.update(
            &[info(1, true, true, 4_000_000)],
            |_| Some("office".into()),
            t0 + Duration::from_secs(4),
            5_000,
        );
        let [Event::PeerChanged { peer }] = events.as_slice() else {
            panic!("{events:?}")
        };
        assert_eq!(peer.state, PeerState::Connected);
        assert_eq!(peer.name.as_deref(), Some("office"));
        assert!(peer.trusted);
        assert_eq!(peer.throughput.rx_bps, 2_000_000.0);
        assert_eq!(peer.throughput.tx_bps, 1_000_000.0);
        assert_eq!(peer.last_seen_ms, Some(1_000), "still connected since");
        let events = feed.update(
            &[info(1, false, false, 4_000_000)],
            |_| Some("office".into()),
            t0 + Duration::from_secs(6),
            7_000,
        );
        let [Event::PeerChanged { peer }] = events.as_slice() else {
            panic!("{events:?}")
        };
        assert_eq!(peer.state, PeerState::Disconnected);
        assert_eq!(peer.link, LinkKind::Lan, "the link it had");
        assert_eq!(peer.last_seen_ms, Some(7_000));
        assert_eq!(peer.throughput, Throughput::default());
        let events = feed.update(&[], |_| None, t0 + Duration::from_secs(8), 9_000);
        assert!(matches!(events.as_slice(), [Event::PeerRemoved { .. }]));
    }

    #[test]
    fn a_peer_dialled_by_address_is_wan() {
        let mut feed = PeerFeed::default();
        let events = feed.update(&[info(1, true, false, 0)], |_| None, Instant::now(), 1);
        let [Event::PeerChanged { peer }] = events.as_slice() else {
            panic!("{events:?}")
        };
        assert_eq!(peer.link, LinkKind::Wan);
    }

    #[test]
    fn transfers_get_a_rate_an_eta_and_an_end() {
        let mut feed = TransferFeed::default();
        let progress = |done: u64, finished: bool, error: Option<&str>| TransferProgress {
            library: LibraryId([2; 16]),
            content: ContentId([3; 32]),
            bytes_done: done,
            bytes_total: 10_000_000,
            from: Some(DeviceIdentity::from_secret([5; 32]).peer_id()),
            finished,
            error: error.map(str::to_owned),
        };
        let t0 = Instant::now();
        let first = feed.update(
            &progress(1_000_000, false, None),
            || "a/b.bin".into(),
            t0,
            1,
        );
        assert_eq!(first.path, "a/b.bin");
        assert_eq!(first.state, TransferState::Running);
        assert_eq!(first.eta_s, None, "no rate yet");
        let later = feed.update(
            &progress(5_000_000, false, None),
            || unreachable!("the path is known"),
            t0 + Duration::from_secs(2),
            2,
        );
        assert_eq!(later.path, "a/b.bin");
        assert_eq!(later.rate_bps, 2_000_000.0);
        assert_eq!(later.eta_s, Some(2.5));
        assert_eq!(later.id, first.id);
        let done = feed.update(
            &progress(10_000_000, true, None),
            || unreachable!(),
            t0 + Duration::from_secs(4),
            3,
        );
        assert_eq!(done.state, TransferState::Done);
        assert!(!feed.knows(&progress(0, false, None)));
        let failed = feed.update(
            &progress(0, true, Some("no provider")),
            || "a/b.bin".into(),
            t0,
            4,
        );
        assert_eq!(failed.state, TransferState::Failed);
        assert_eq!(failed.error.as_deref(), Some("no provider"));
    }
}
