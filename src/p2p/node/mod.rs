//! The node: one tokio task owns the swarm; the rest of the program talks to it through a
//! [`NodeHandle`] (commands over a channel) and listens to its [`NodeEvent`]s.
//!
//! # Files
//!
//! - this file: starting the node and its run loop (swarm events, commands, internal
//!   messages);
//! - `handle`: [`NodeHandle`] and the commands it sends;
//! - `peers`: the peer table: LAN or WAN, dialling, quarantine, forgetting;
//! - `pull`: keeping chains in step: `Libraries`, batched pulls, announcements, and
//!   answering `/harp/sync/1`.
//!
//! # Why one task
//!
//! A libp2p `Swarm` is a state machine that must be polled to make progress and is mutated
//! by `&mut`. Rather than share it behind a lock, a single task owns it and `select!`s over
//! three sources, the same shape as mini-redis's connection handlers:
//!
//! ```text
//!   swarm events ─┐
//!   commands ─────┼──> Node::run (owns Swarm, peer table, pending requests)
//!   internal ─────┘        │
//!        ^                 └─ chain work (fetch, store) ─> spawn_blocking ─┐
//!        └─────────────────────────────────────────────────────────────────┘
//! ```
//!
//! Reading or committing the chain can take milliseconds (redb fsyncs), so it never runs on
//! this task: it goes to tokio's blocking pool, which sends the outcome back on the
//! `internal` channel as a message the loop acts on (reply to a request, send the next
//! fetch, announce new heads).
//!
//! # What the node does on its own
//!
//! - On the first connection to a peer (dialled, accepted, or found by mDNS and dialled), it
//!   asks `Libraries` and pulls every shared library whose heads it lacks.
//! - A pull fetches batches (ancestors first) until nothing remains, asking for the next
//!   batch while the last ones are verified and stored ([`pull::Pull`]); at most one pull
//!   per (peer, library) runs at a time, and a request to pull again while one runs is
//!   remembered and done afterwards.
//! - When a library changes (the engine calls [`NodeHandle::library_changed`], or a pull
//!   stored new entries) it publishes the new heads on the library's gossip topic
//!   ([`super::gossip`]) and sends `Announce` to connected members not yet subscribed to it;
//!   members that lack a head pull.
//! - A peer whose batch the chain rejects (bad signature, bad link, not a member) is
//!   disconnected and refused for ten minutes; one that sends a bad block is disconnected
//!   and not asked for that library's blocks for ten minutes ([`blocks::shun`]).
//! - Configured WAN peers, and LAN peers mDNS found, are re-dialled every
//!   [`P2pConfig::redial_every`] while not connected.
//! - A peer that left, is a member of nothing we hold, is not configured and is no longer
//!   announced by mDNS is forgotten after [`P2pConfig::forget_after`]; members are kept.
//!
//! # Starting it
//!
//! ```no_run
//! # async fn f(chain: harpbridge::chain::ChainStore, content: harpbridge::content::ContentStore,
//! #     lib: harpbridge::chain::LibraryId) -> Result<(), Box<dyn std::error::Error>> {
//! use harpbridge::identity::DeviceIdentity;
//! use harpbridge::p2p::{Node, P2pConfig};
//! let (identity, _) = DeviceIdentity::load_or_create("/var/lib/harp".as_ref())?;
//! let node = Node::start(P2pConfig::default(), &identity, chain, content).await?;
//! let mut events = node.subscribe();
//! node.library_changed(lib).await?;        // after every local append
//! node.dial("/ip4/203.0.113.7/tcp/4001".parse()?).await?;
//! let peers = node.peers().await?;
//! node.shutdown().await;
//! # Ok(()) }
//! ```

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use libp2p::futures::StreamExt;
use libp2p::gossipsub::{self, TopicHash};
use libp2p::multiaddr::Protocol;
use libp2p::request_response::{self, OutboundRequestId, ResponseChannel};
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::swarm::SwarmEvent;
use libp2p::{identify, mdns, noise, ping, tcp, yamux, Multiaddr, PeerId, Swarm};
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use crate::chain::{ChainError, ChainStore, ContentId, DeviceKey, InsertOutcome, LibraryId};
use crate::content::ContentStore;
use crate::identity::DeviceIdentity;

use super::behaviour::{Behaviour, BehaviourEvent};
use super::blocks::fetch::FetchConfig;
use super::blocks::rank::PeerView;
use super::blocks::{self, Blocks};
use super::config::P2pConfig;
use super::error::P2pError;
use super::events::{FetchReport, NodeEvent, PeerInfo};
use super::gossip;
use super::message::{LibraryHeads, Request, Response};
use super::metrics::{Meter, Traffic};
use super::sync::SyncService;
use super::trust;

mod handle;
mod peers;
mod pull;

pub use handle::NodeHandle;
use handle::{Command, COMMAND_BUFFER};
use peers::{peer_of, strip_p2p, PeerEntry};
use pull::{Pending, Pull};

/// Events buffered per subscriber before the slowest one starts missing some.
const EVENT_BUFFER: usize = 1024;

/// Outcomes of blocking chain work, sent back to the node's task.
enum Internal {
    Respond {
        peer: PeerId,
        channel: ResponseChannel<Response>,
        response: Response,
        pull: Vec<LibraryId>,
        offered: Vec<LibraryId>,
    },
    /// Our version vector of `library`, read to start pull number `pull`.
    Have {
        peer: PeerId,
        library: LibraryId,
        pull: u64,
        have: Vec<(DeviceKey, u64)>,
    },
    PullMany {
        peer: PeerId,
        libraries: Vec<LibraryId>,
        offered: Vec<LibraryId>,
    },
    /// A batch of pull number `pull` was stored (or refused).
    Stored {
        peer: PeerId,
        library: LibraryId,
        pull: u64,
        result: Result<InsertOutcome, ChainError>,
        remaining: u64,
    },
    Announce {
        heads: LibraryHeads,
        members: Vec<DeviceKey>,
        except: Option<PeerId>,
    },
    /// Stale peers that are members of nothing we hold ([`Node::forget_stale`]).
    Forget { peers: Vec<PeerId> },
    ChainFailed {
        peer: Option<PeerId>,
        library: LibraryId,
        error: ChainError,
    },
}

/// The task that owns the swarm. See the module docs.
pub struct Node {
    swarm: Swarm<Behaviour>,
    config: P2pConfig,
    sync: SyncService,
    events: broadcast::Sender<NodeEvent>,
    listening: Arc<Mutex<Vec<Multiaddr>>>,
    internal_tx: mpsc::UnboundedSender<Internal>,
    internal_rx: mpsc::UnboundedReceiver<Internal>,
    peers: HashMap<PeerId, PeerEntry>,
    pending: HashMap<OutboundRequestId, Pending>,
    /// Pulls under way ([`pull::Pull`]).
    pulls: HashMap<(PeerId, LibraryId), Pull>,
    /// The number the next pull gets, to tell its messages from an ended pull's.
    next_pull: u64,
    /// Configured peers: the address and, once known, who answers there.
    configured: Vec<(Multiaddr, Option<PeerId>)>,
    /// Block bytes and peer classes, shared with the block server and fetches.
    meter: Meter,
    /// Connected peers with their class and RTT, for fetches.
    views: watch::Sender<Vec<PeerView>>,
    /// The task answering `/harp/blocks/2` (and `/1`) streams.
    block_server: JoinHandle<()>,
    /// The gossip topics we follow, and their libraries.
    topics: HashMap<TopicHash, LibraryId>,
    /// Peers that sent entries the chain rejected, and until when we refuse them.
    quarantined: HashMap<PeerId, tokio::time::Instant>,
    /// Providers a fetch shunned for a bad block ([`blocks::shun`]): to disconnect.
    bad_providers: mpsc::UnboundedReceiver<PeerId>,
}

fn build_error(e: impl std::fmt::Display) -> P2pError {
    P2pError::Build(e.to_string())
}

impl Node {
    /// Builds the swarm with the device's key, binds every listen address (waiting until
    /// each is bound, so [`NodeHandle::listen_addrs`] holds real ports), dials the configured
    /// peers and starts the task.
    pub async fn start(
        config: P2pConfig,
        identity: &DeviceIdentity,
        chain: ChainStore,
        content: ContentStore,
    ) -> Result<NodeHandle, P2pError> {
        let behaviour_config = config.clone();
        let mut swarm = libp2p::SwarmBuilder::with_existing_identity(identity.keypair().clone())
            .with_tokio()
            .with_tcp(
                tcp::Config::default().nodelay(true),
                noise::Config::new,
                yamux::Config::default,
            )
            .map_err(build_error)?
            .with_quic()
            .with_behaviour(|key| Behaviour::new(key, &behaviour_config))
            .map_err(build_error)?
            .with_swarm_config(|c| c.with_idle_connection_timeout(config.idle_timeout))
            .build();

        let mut waiting = HashSet::new();
        for addr in &config.listen {
            let id = swarm
                .listen_on(addr.clone())
                .map_err(|e| P2pError::listen(addr.clone(), e))?;
            waiting.insert(id);
        }
        let mut control = swarm.behaviour().blocks.new_control();
        let incoming = control
            .accept(libp2p::StreamProtocol::new(blocks::wire::PROTOCOL))
            .map_err(build_error)?;
        let incoming_v1 = control
            .accept(libp2p::StreamProtocol::new(blocks::wire::PROTOCOL_V1))
            .map_err(build_error)?;
        let meter = Meter::with_wan_limits(config.wan_limit_up, config.wan_limit_down);
        let (disconnect_tx, disconnect_rx) = mpsc::unbounded_channel();
        let shunned = blocks::shun::Shunned::new(disconnect_tx);
        let blocks = Blocks::new(content, chain.clone(), meter.clone(), control, shunned);
        let block_server =
            tokio::spawn(blocks::server::serve(blocks.clone(), incoming, incoming_v1));
        let (views, views_rx) = watch::channel(Vec::new());
        let fetch_config = FetchConfig {
            window_lan: config.block_window_lan,
            window_wan: config.block_window_wan,
            stall_timeout: config.fetch_stall_timeout,
            tick: Duration::from_millis(250),
        };
        let (events, _) = broadcast::channel(EVENT_BUFFER);
        let (internal_tx, internal_rx) = mpsc::unbounded_channel();
        let configured = config
            .peers
            .iter()
            .map(|a| (a.clone(), peer_of(a)))
            .collect();
        let mut node = Node {
            swarm,
            sync: SyncService::new(chain),
            events: events.clone(),
            listening: Arc::default(),
            internal_tx,
            internal_rx,
            peers: HashMap::new(),
            pending: HashMap::new(),
            pulls: HashMap::new(),
            next_pull: 0,
            configured,
            topics: HashMap::new(),
            quarantined: HashMap::new(),
            bad_providers: disconnect_rx,
            config,
            meter,
            views,
            block_server,
        };
        for library in node.sync.chain().libraries() {
            node.follow(library);
        }

        let deadline = tokio::time::Instant::now() + node.config.listen_timeout;
        while !waiting.is_empty() {
            let event = tokio::time::timeout_at(deadline, node.swarm.select_next_some())
                .await
                .map_err(|_| P2pError::ListenTimeout(node.config.listen_timeout))?;
            match event {
                SwarmEvent::NewListenAddr { listener_id, .. } => {
                    waiting.remove(&listener_id);
                }
                SwarmEvent::ListenerClosed {
                    listener_id,
                    reason: Err(e),
                    ..
                } if waiting.contains(&listener_id) => {
                    return Err(P2pError::Build(format!("a listener failed: {e}")));
                }
                _ => {}
            }
            node.on_swarm_event(event);
        }

        let (commands, command_rx) = mpsc::channel(COMMAND_BUFFER);
        let handle = NodeHandle {
            peer_id: *node.swarm.local_peer_id(),
            commands,
            events,
            listening: node.listening.clone(),
            task: Arc::default(),
            blocks,
            views: views_rx,
            fetch_config,
        };
        node.redial();
        tracing::info!(peer_id = %handle.peer_id, addrs = ?handle.listen_addrs(), "p2p node started");
        let task = tokio::spawn(node.run(command_rx));
        *handle.task.lock().unwrap_or_else(|e| e.into_inner()) = Some(task);
        Ok(handle)
    }

    async fn run(mut self, mut commands: mpsc::Receiver<Command>) {
        let mut redial = tokio::time::interval(self.config.redial_every);
        redial.tick().await;
        loop {
            tokio::select! {
                event = self.swarm.select_next_some() => self.on_swarm_event(event),
                command = commands.recv() => match command {
                    Some(Command::Shutdown(done)) => {
                        let _ = done.send(());
                        break;
                    }
                    // Every handle is gone: nobody can drive the node any more.
                    None => break,
                    Some(c) => self.on_command(c),
                },
                Some(msg) = self.internal_rx.recv() => self.on_internal(msg),
                Some(peer) = self.bad_providers.recv() => {
                    tracing::warn!(%peer, "disconnecting a provider that sent a bad block");
                    let _ = self.swarm.disconnect_peer_id(peer);
                }
                _ = redial.tick() => {
                    self.redial();
                    self.forget_stale();
                }
            }
        }
        self.block_server.abort();
        tracing::info!("p2p node stopped");
    }

    fn emit(&self, event: NodeEvent) {
        // No subscriber is fine.
        let _ = self.events.send(event);
    }

    /// Runs `work` against the chain on the blocking pool; its outcome comes back as an
    /// internal message.
    fn blocking<F>(&self, work: F)
    where
        F: FnOnce(&SyncService) -> Internal + Send + 'static,
    {
        let sync = self.sync.clone();
        let tx = self.internal_tx.clone();
        tokio::task::spawn_blocking(move || {
            let _ = tx.send(work(&sync));
        });
    }

    fn on_command(&mut self, command: Command) {
        match command {
            Command::Dial(addr, reply) => {
                let result = self.swarm.dial(addr.clone()).map_err(|e| P2pError::Dial {
                    addr,
                    reason: e.to_string(),
                });
                let _ = reply.send(result);
            }
            Command::LibraryChanged(library) => self.announce(library, None),
            Command::Join(library) => {
                let connected: Vec<PeerId> = self.swarm.connected_peers().copied().collect();
                for peer in connected {
                    self.pull(peer, library);
                }
            }
            Command::SyncAll => {
                let connected: Vec<PeerId> = self.swarm.connected_peers().copied().collect();
                for peer in connected {
                    self.ask_libraries(peer);
                }
            }
            Command::Peers(reply) => {
                let raw: Vec<PeerInfo> = self
                    .peers
                    .iter()
                    .map(|(peer, e)| PeerInfo {
                        peer: *peer,
                        device: trust::device_key(peer),
                        connected: e.connections > 0,
                        lan: self.is_lan(peer, e),
                        addresses: e.addresses.iter().cloned().collect(),
                        rtt: e.rtt,
                        agent: e.agent.clone(),
                        libraries: Vec::new(),
                        bytes_in: self.meter.peer(peer).0,
                        bytes_out: self.meter.peer(peer).1,
                    })
                    .collect();
                let sync = self.sync.clone();
                tokio::task::spawn_blocking(move || {
                    let mut out = raw;
                    for p in &mut out {
                        p.libraries = sync.trust().shared_libraries(&p.peer);
                    }
                    out.sort_by_key(|p| p.peer.to_bytes());
                    let _ = reply.send(out);
                });
            }
            Command::Shutdown(_) => {}
        }
    }

    fn on_internal(&mut self, msg: Internal) {
        match msg {
            Internal::Respond {
                peer,
                channel,
                response,
                pull,
                offered,
            } => {
                if self
                    .swarm
                    .behaviour_mut()
                    .sync
                    .send_response(channel, response)
                    .is_err()
                {
                    tracing::debug!(%peer, "the peer went away before our answer");
                }
                self.pull_or_offer(peer, pull, offered);
            }
            Internal::Have {
                peer,
                library,
                pull,
                have,
            } => self.on_have(peer, library, pull, have),
            Internal::PullMany {
                peer,
                libraries,
                offered,
            } => self.pull_or_offer(peer, libraries, offered),
            Internal::Stored {
                peer,
                library,
                pull,
                result,
                remaining,
            } => self.on_stored(peer, library, pull, result, remaining),
            Internal::Announce {
                heads,
                members,
                except,
            } => {
                let library = heads.library;
                self.follow(library);
                let topic = gossip::topic_hash(&library);
                let gossip = &mut self.swarm.behaviour_mut().gossip;
                // Peers that follow the topic hear it by gossip; the rest get `Announce`.
                let subscribed: HashSet<PeerId> = gossip
                    .all_peers()
                    .filter(|(_, topics)| topics.contains(&&topic))
                    .map(|(p, _)| *p)
                    .collect();
                if !subscribed.is_empty() {
                    if let Err(e) = gossip.publish(topic, gossip::encode_heads(&heads.heads)) {
                        tracing::debug!(%library, error = %e, "publishing heads failed");
                    }
                }
                let members: HashSet<DeviceKey> = members.into_iter().collect();
                let targets: Vec<PeerId> = self
                    .swarm
                    .connected_peers()
                    .filter(|p| Some(**p) != except && !subscribed.contains(*p))
                    .filter(|p| trust::device_key(p).is_some_and(|k| members.contains(&k)))
                    .copied()
                    .collect();
                for peer in targets {
                    let id = self
                        .swarm
                        .behaviour_mut()
                        .sync
                        .send_request(&peer, Request::Announce(heads.clone()));
                    self.pending.insert(id, Pending::Announce(heads.library));
                }
            }
            Internal::Forget { peers } => self.forget(peers),
            Internal::ChainFailed {
                peer,
                library,
                error,
            } => {
                tracing::warn!(?peer, %library, %error, "chain error during sync");
                if let Some(peer) = peer {
                    self.emit(NodeEvent::SyncFailed {
                        peer,
                        library: Some(library),
                        error: error.to_string(),
                    });
                    self.end_pull(peer, library, false);
                }
            }
        }
    }

    fn on_swarm_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::Behaviour(BehaviourEvent::Sync(e)) => self.on_sync_event(e),
            SwarmEvent::Behaviour(BehaviourEvent::Gossip(e)) => self.on_gossip(e),
            SwarmEvent::Behaviour(BehaviourEvent::Mdns(mdns::Event::Discovered(found))) => {
                let mut by_peer: HashMap<PeerId, Vec<Multiaddr>> = HashMap::new();
                for (peer, addr) in found {
                    if peer != *self.swarm.local_peer_id() {
                        by_peer.entry(peer).or_default().push(addr);
                    }
                }
                for (peer, addrs) in by_peer {
                    let entry = self.peers.entry(peer).or_default().seen();
                    let new = !entry.lan;
                    entry.lan = true;
                    entry.addresses.extend(addrs.iter().cloned());
                    entry.announced.extend(addrs.iter().cloned());
                    if new {
                        tracing::info!(%peer, "found on the LAN");
                        self.emit(NodeEvent::Discovered {
                            peer,
                            addrs: addrs.clone(),
                        });
                    }
                    self.publish_peers();
                    self.dial_lan(peer, addrs);
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Mdns(mdns::Event::Expired(gone))) => {
                for (peer, addr) in gone {
                    if let Some(e) = self.peers.get_mut(&peer) {
                        e.addresses.remove(&addr);
                        e.announced.remove(&addr);
                        e.seen();
                    }
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Identify(identify::Event::Received {
                peer_id,
                info,
                ..
            })) => {
                let entry = self.peers.entry(peer_id).or_default().seen();
                entry.agent = Some(info.agent_version);
                entry.addresses.extend(info.listen_addrs);
            }
            SwarmEvent::Behaviour(BehaviourEvent::Identify(_)) => {}
            SwarmEvent::Behaviour(BehaviourEvent::Ping(ping::Event { peer, result, .. })) => {
                if let (Ok(rtt), Some(e)) = (result, self.peers.get_mut(&peer)) {
                    e.rtt = Some(rtt);
                    e.min_rtt = Some(e.min_rtt.map_or(rtt, |m| m.min(rtt)));
                    self.publish_peers();
                }
            }
            SwarmEvent::ConnectionEstablished {
                peer_id,
                endpoint,
                num_established,
                ..
            } => {
                let address = endpoint.get_remote_address().clone();
                let was_dialling = self
                    .peers
                    .get_mut(&peer_id)
                    .is_some_and(|e| std::mem::take(&mut e.dialling));
                if self.is_quarantined(&peer_id) {
                    tracing::info!(peer = %peer_id, "refusing a quarantined peer");
                    let _ = self.swarm.disconnect_peer_id(peer_id);
                    if was_dialling {
                        self.publish_peers();
                    }
                    return;
                }
                if endpoint.is_dialer() {
                    for (addr, who) in &mut self.configured {
                        if *addr == address || strip_p2p(addr) == strip_p2p(&address) {
                            *who = Some(peer_id);
                        }
                    }
                }
                let same_subnet = super::subnet::on_local_subnet(&address);
                let entry = self.peers.entry(peer_id).or_default().seen();
                entry.connections += 1;
                entry.same_subnet |= same_subnet;
                if endpoint.is_dialer() {
                    entry.addresses.insert(strip_p2p(&address));
                }
                self.publish_peers();
                if num_established.get() == 1 {
                    tracing::info!(peer = %peer_id, %address, "connected");
                    self.emit(NodeEvent::Connected {
                        peer: peer_id,
                        address,
                    });
                    self.ask_libraries(peer_id);
                }
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                num_established,
                ..
            } => {
                // A refused (quarantined) peer's connections were never counted, nor
                // reported as connected: its disconnection is not reported either.
                let was_connected = self.peers.get_mut(&peer_id).is_some_and(|e| {
                    e.seen();
                    let before = e.connections;
                    e.connections = num_established as usize;
                    before > 0
                });
                self.publish_peers();
                if num_established == 0 && was_connected {
                    tracing::info!(peer = %peer_id, "disconnected");
                    self.emit(NodeEvent::Disconnected { peer: peer_id });
                }
            }
            SwarmEvent::NewListenAddr { address, .. } => {
                tracing::info!(%address, "listening");
                self.listening
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(address.clone());
                self.emit(NodeEvent::Listening(address));
            }
            SwarmEvent::ExpiredListenAddr { address, .. } => {
                self.listening
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .retain(|a| *a != address);
            }
            SwarmEvent::OutgoingConnectionError { peer_id, error, .. } => {
                tracing::debug!(?peer_id, %error, "outgoing connection failed");
                if let Some(e) = peer_id.and_then(|p| self.peers.get_mut(&p)) {
                    if std::mem::take(&mut e.dialling) {
                        self.publish_peers();
                    }
                }
            }
            SwarmEvent::IncomingConnectionError { error, .. } => {
                tracing::debug!(%error, "incoming connection failed");
            }
            _ => {}
        }
    }
}
