//! The peer table: who is connected, LAN or WAN, how to reach them, and who is refused for a
//! while after sending invalid entries.

use super::*;

/// How long a peer that sent invalid entries is refused.
pub(super) const QUARANTINE: Duration = Duration::from_secs(600);

/// What the node knows about one peer.
#[derive(Debug, Default)]
pub(super) struct PeerEntry {
    pub(super) connections: usize,
    /// Found by mDNS.
    pub(super) lan: bool,
    /// Connected over an address on one of this host's subnets ([`super::subnet`]).
    pub(super) same_subnet: bool,
    pub(super) addresses: BTreeSet<Multiaddr>,
    pub(super) rtt: Option<Duration>,
    /// The smallest round trip seen: what classifies the peer (a busy link's RTT grows
    /// with its queue, its floor does not).
    pub(super) min_rtt: Option<Duration>,
    pub(super) agent: Option<String>,
    /// The addresses mDNS announces it at now (its records not expired): a peer still
    /// announced is still there, connected or not.
    pub(super) announced: BTreeSet<Multiaddr>,
    /// When it was last connected, announced or heard from.
    pub(super) last_seen: Option<tokio::time::Instant>,
    /// A LAN dial to it is under way (from [`Node::dial_lan`] until it connects or fails).
    pub(super) dialling: bool,
}

impl PeerEntry {
    /// Notes that the peer was seen now.
    pub(super) fn seen(&mut self) -> &mut Self {
        self.last_seen = Some(tokio::time::Instant::now());
        self
    }

    /// Disconnected, not announced on the LAN, and not seen for `after`.
    fn stale(&self, after: Duration, now: tokio::time::Instant) -> bool {
        self.connections == 0
            && self.announced.is_empty()
            && self
                .last_seen
                .is_none_or(|t| now.duration_since(t) >= after)
    }
}

impl Node {
    /// Disconnects `peer` and refuses its connections for [`QUARANTINE`].
    pub(super) fn quarantine(&mut self, peer: PeerId) {
        tracing::warn!(%peer, "quarantining a peer that sent invalid entries");
        self.quarantined
            .insert(peer, tokio::time::Instant::now() + QUARANTINE);
        let _ = self.swarm.disconnect_peer_id(peer);
    }

    /// True while `peer` is quarantined.
    pub(super) fn is_quarantined(&mut self, peer: &PeerId) -> bool {
        let now = tokio::time::Instant::now();
        self.quarantined.retain(|_, until| *until > now);
        self.quarantined.contains_key(peer)
    }

    /// The peer's class: LAN if mDNS found it; WAN if it is a configured peer (the cloud);
    /// otherwise LAN when a connection to it is on one of this host's subnets (see
    /// [`super::subnet`]: mDNS tells a node of a newcomer late), or when its smallest ping
    /// RTT is at most [`P2pConfig::lan_rtt`] (zero: never).
    pub(super) fn is_lan(&self, peer: &PeerId, e: &PeerEntry) -> bool {
        if e.lan {
            return true;
        }
        if self.is_configured(peer) {
            return false;
        }
        e.same_subnet
            || (!self.config.lan_rtt.is_zero()
                && e.min_rtt.is_some_and(|r| r <= self.config.lan_rtt))
    }

    /// Starts forgetting peers gone for [`P2pConfig::forget_after`]: those stale and not
    /// configured are checked against the chain's member lists off this task, and
    /// [`Node::forget`] drops the ones that are members of nothing we hold.
    pub(super) fn forget_stale(&mut self) {
        let now = tokio::time::Instant::now();
        let after = self.config.forget_after;
        let stale: Vec<PeerId> = self
            .peers
            .iter()
            .filter(|(p, e)| e.stale(after, now) && !self.is_configured(p))
            .map(|(p, _)| *p)
            .collect();
        if stale.is_empty() {
            return;
        }
        self.blocking(move |sync| Internal::Forget {
            peers: stale
                .into_iter()
                .filter(|p| sync.trust().shared_libraries(p).is_empty())
                .collect(),
        });
    }

    /// Drops `peers` from the table, unless one came back meanwhile.
    pub(super) fn forget(&mut self, peers: Vec<PeerId>) {
        let now = tokio::time::Instant::now();
        let after = self.config.forget_after;
        let before = self.peers.len();
        for peer in peers {
            if self.peers.get(&peer).is_some_and(|e| e.stale(after, now)) {
                self.peers.remove(&peer);
                self.meter.forget(&peer);
            }
        }
        let forgotten = before - self.peers.len();
        if forgotten > 0 {
            tracing::info!(forgotten, "forgot peers not seen for a while");
            self.publish_peers();
        }
    }

    /// True if `peer` answers at one of the configured addresses.
    fn is_configured(&self, peer: &PeerId) -> bool {
        self.configured
            .iter()
            .any(|(_, who)| who.as_ref() == Some(peer))
    }

    /// Tells fetches (and the byte counters) which peers are connected and their class, and
    /// which LAN peers are being dialled.
    pub(super) fn publish_peers(&mut self) {
        let mut views = Vec::new();
        for (peer, e) in &self.peers {
            let lan = self.is_lan(peer, e);
            self.meter.set_lan(*peer, lan);
            let connected = e.connections > 0;
            if connected || (lan && e.dialling) {
                views.push(PeerView {
                    peer: *peer,
                    connected,
                    lan,
                    rtt: e.rtt,
                });
            }
        }
        self.views.send_replace(views);
    }

    /// Dials a LAN peer at `addrs` unless connected or already dialling.
    ///
    /// From a fresh local port: two nodes that find each other by mDNS at the same moment
    /// dial each other at once, and from their listening ports that is a TCP simultaneous
    /// open, one socket on which both sides start the Noise handshake as initiator and fail.
    pub(super) fn dial_lan(&mut self, peer: PeerId, addrs: Vec<Multiaddr>) {
        if self.swarm.is_connected(&peer) || addrs.is_empty() {
            return;
        }
        let opts = DialOpts::peer_id(peer)
            .condition(PeerCondition::DisconnectedAndNotDialing)
            .addresses(addrs)
            .allocate_new_port()
            .build();
        match self.swarm.dial(opts) {
            Ok(()) => {
                self.peers.entry(peer).or_default().dialling = true;
                self.publish_peers();
            }
            Err(e) => tracing::debug!(%peer, error = %e, "dialling a LAN peer failed"),
        }
    }

    /// Dials the configured peers, and the LAN peers mDNS found, that are not connected.
    pub(super) fn redial(&mut self) {
        let lan: Vec<(PeerId, Vec<Multiaddr>)> = self
            .peers
            .iter()
            .filter(|(_, e)| e.lan)
            .map(|(p, e)| (*p, e.addresses.iter().cloned().collect()))
            .collect();
        for (peer, addrs) in lan {
            if !self.is_quarantined(&peer) {
                self.dial_lan(peer, addrs);
            }
        }
        let todo: Vec<Multiaddr> = self
            .configured
            .iter()
            .filter(|(_, who)| !who.is_some_and(|p| self.swarm.is_connected(&p)))
            .map(|(a, _)| a.clone())
            .collect();
        for addr in todo {
            if let Err(e) = self.swarm.dial(addr.clone()) {
                tracing::info!(%addr, error = %e, "dialling a configured peer failed");
            }
        }
    }
}

/// The `/p2p/<id>` at the end of an address, if any.
pub(super) fn peer_of(addr: &Multiaddr) -> Option<PeerId> {
    addr.iter().find_map(|p| match p {
        Protocol::P2p(id) => Some(id),
        _ => None,
    })
}

/// The address without its `/p2p/<id>` part.
pub(super) fn strip_p2p(addr: &Multiaddr) -> Multiaddr {
    addr.iter()
        .filter(|p| !matches!(p, Protocol::P2p(_)))
        .collect()
}
