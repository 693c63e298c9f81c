//! The swarm's settings: where to listen, whom to dial, and how big a sync step is.
//!
//! Everything has a default that suits an office node, so the engine only names what it
//! changes:
//!
//! ```
//! use harpbridge::p2p::P2pConfig;
//! let config = P2pConfig {
//!     listen: vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()],
//!     mdns: false,
//!     ..P2pConfig::default()
//! };
//! assert_eq!(config.sync_batch, 2048);
//! ```

use std::time::Duration;

use libp2p::Multiaddr;

/// Settings of one node. See the field docs for the defaults.
#[derive(Debug, Clone)]
pub struct P2pConfig {
    /// Addresses to listen on. Default: every IPv4 interface on a port the kernel picks, both
    /// TCP (`/ip4/0.0.0.0/tcp/0`) and QUIC (`/ip4/0.0.0.0/udp/0/quic-v1`). A node that WAN
    /// peers dial (the cloud node) names a fixed port here.
    pub listen: Vec<Multiaddr>,
    /// Peers dialled at start and re-dialled every [`P2pConfig::redial_every`] while not
    /// connected: the WAN peers that mDNS cannot find, as multiaddrs ending in `/p2p/<id>`
    /// (or without it; the peer's id is then learned from the handshake).
    pub peers: Vec<Multiaddr>,
    /// Find peers on the LAN by multicast DNS and dial them. Default: on.
    pub mdns: bool,
    /// Join a library we do not hold yet as soon as a peer offers it (lists or announces it,
    /// and we are a member of its copy). Off: the offer is reported as
    /// [`super::NodeEvent::Offered`] and nothing is pulled until
    /// [`super::NodeHandle::join`] approves it. Default: on.
    pub join_offered: bool,
    /// Entries asked for per `/harp/sync/1` fetch (the server caps it at
    /// [`super::message::MAX_BATCH_ENTRIES`] and by bytes). Each batch is one durable
    /// commit on the receiving side, so bigger batches sync faster (bench/sync: 27,800
    /// entries/s at 256, 37,100 at 2,048); 2,048 entries are about 0.5 MB. Default: 2048.
    pub sync_batch: u32,
    /// How long a request may wait for its answer. Default: 30 s.
    pub request_timeout: Duration,
    /// How long a connection with no open stream stays up. Default: 1 hour, so that peers
    /// hear each other's announcements without re-dialling.
    pub idle_timeout: Duration,
    /// How often the configured [`P2pConfig::peers`] are re-dialled while disconnected.
    /// Default: 30 s.
    pub redial_every: Duration,
    /// A peer that is disconnected, not a member of any library we hold, not configured and
    /// no longer announced by mDNS is forgotten after this long unseen, so that the peer
    /// table (and `peers list`) does not grow with every stranger that ever connected.
    /// Checked every [`P2pConfig::redial_every`]. Default: 1 hour.
    pub forget_after: Duration,
    /// How long [`super::Node::start`] waits for every listener to be bound. Default: 10 s.
    pub listen_timeout: Duration,
    /// A peer that mDNS did not find and that is not configured counts as LAN when its ping
    /// round trip is at most this (a switched LAN answers in well under a millisecond, Wi-Fi
    /// in a few; a WAN path rarely in under 5). Default: zero, off: only mDNS makes a peer
    /// LAN, so a stranger dialling in from far away is never preferred by accident; set it
    /// (say 3 ms) where multicast is blocked, or to make loopback peers LAN in tests.
    pub lan_rtt: Duration,
    /// Block bytes in flight per LAN provider during a fetch. Default: 16 MiB.
    pub block_window_lan: u64,
    /// Block bytes in flight per WAN provider, at most: a WAN provider starts at 512 KiB
    /// and grows as it delivers, then holds twice its measured bandwidth × delay, within
    /// this. Default: 4 MiB (smaller, so two offices splitting a WAN download overlap by
    /// little before they see each other's progress).
    pub block_window_wan: u64,
    /// A fetch fails after this long without storing a block (no provider has what is
    /// missing, or none delivers). Default: 30 s.
    pub fetch_stall_timeout: Duration,
    /// Incoming connections still in their handshake, at most; more are closed at once.
    /// Default: 64.
    pub max_pending_incoming: u32,
    /// Established connections, in and out together, at most. Default: 512.
    pub max_established: u32,
    /// Established connections to one peer, at most (a LAN peer has one or two; TCP and
    /// QUIC, a re-dial). Default: 8.
    pub max_established_per_peer: u32,
    /// Block bytes per second sent to WAN peers, at most (`--wan-limit-up`). LAN peers are
    /// never limited. Default: `None`, unlimited.
    pub wan_limit_up: Option<u64>,
    /// Block bytes per second received from WAN peers, at most (`--wan-limit-down`).
    /// Default: `None`, unlimited.
    pub wan_limit_down: Option<u64>,
}

impl P2pConfig {
    /// The bounds [`libp2p::connection_limits`] enforces.
    pub fn connection_limits(&self) -> libp2p::connection_limits::ConnectionLimits {
        libp2p::connection_limits::ConnectionLimits::default()
            .with_max_pending_incoming(Some(self.max_pending_incoming))
            .with_max_established(Some(self.max_established))
            .with_max_established_per_peer(Some(self.max_established_per_peer))
    }
}

impl Default for P2pConfig {
    fn default() -> Self {
        P2pConfig {
            listen: vec![
                "/ip4/0.0.0.0/tcp/0".parse().expect("valid multiaddr"),
                "/ip4/0.0.0.0/udp/0/quic-v1"
                    .parse()
                    .expect("valid multiaddr"),
            ],
            peers: Vec::new(),
            mdns: true,
            join_offered: true,
            sync_batch: 2048,
            request_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(3600),
            redial_every: Duration::from_secs(30),
            forget_after: Duration::from_secs(3600),
            listen_timeout: Duration::from_secs(10),
            lan_rtt: Duration::ZERO,
            block_window_lan: 16 << 20,
            block_window_wan: 4 << 20,
            fetch_stall_timeout: Duration::from_secs(30),
            max_pending_incoming: 64,
            max_established: 512,
            max_established_per_peer: 8,
            wan_limit_up: None,
            wan_limit_down: None,
        }
    }
}

/// Checks that a peer address names where to dial: an empty multiaddr or a bare
/// `/p2p/<id>` parses, but could never be dialled, and would be re-dialled in silence
/// forever.
pub fn dialable(addr: &Multiaddr) -> Result<(), String> {
    use libp2p::multiaddr::Protocol;
    match addr.iter().next() {
        Some(
            Protocol::Ip4(_)
            | Protocol::Ip6(_)
            | Protocol::Dns(_)
            | Protocol::Dns4(_)
            | Protocol::Dns6(_),
        ) => Ok(()),
        _ => Err(format!(
            "{addr:?} is not a peer address: it must start with /ip4, /ip6 or /dns, \
             e.g. /ip4/203.0.113.7/tcp/4001/p2p/12D3Koo…"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_addresses_must_name_a_host() {
        assert!(dialable(&"/ip4/10.0.0.1/tcp/4001".parse().unwrap()).is_ok());
        assert!(dialable(&"/dns4/cloud.example/udp/4001/quic-v1".parse().unwrap()).is_ok());
        assert!(dialable(&Multiaddr::empty()).is_err());
        let bare = "/p2p/12D3KooWEpUZRwhvHJt7rYRM7rNtGXrwcnx84UxC9f3bokuhJ12f";
        assert!(dialable(&bare.parse().unwrap()).is_err());
    }
}
