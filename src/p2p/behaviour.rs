//! The swarm's behaviour: the protocols every harpbridge node speaks, composed with
//! `#[derive(NetworkBehaviour)]`.
//!
//! | field | protocol | why |
//! |---|---|---|
//! | `identify` | `/ipfs/id/1.0.0` | learn the peer's listen addresses and agent |
//! | `ping` | `/ipfs/ping/1.0.0` | round-trip time: tells a LAN peer from a WAN one |
//! | `mdns` | multicast DNS | find peers on the LAN (off when the config says so) |
//! | `sync` | `/harp/sync/1` | chain sync (see [`super::message`]) |
//! | `blocks` | `/harp/blocks/2` | block transfer on raw streams (see [`super::blocks`]) |
//! | `gossip` | gossipsub | new heads of each library, relayed through the mesh (see [`super::gossip`]) |
//! | `limits` | none (local) | bounds on connections: half-open, per peer, in total ([`P2pConfig::connection_limits`]) |
//!
//! The derive macro makes an enum, `BehaviourEvent`, with one variant per field; the node's
//! event loop ([`super::node`]) matches on it.

use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::swarm::NetworkBehaviour;
use libp2p::{
    connection_limits, gossipsub, identify, identity::Keypair, mdns, ping, request_response,
    StreamProtocol,
};

use super::codec::SyncCodec;
use super::config::P2pConfig;
use super::message::PROTOCOL;

/// The identify protocol version harpbridge nodes announce.
pub const IDENTIFY_PROTOCOL: &str = "/harp/1.0.0";

/// All protocols of a node.
#[derive(NetworkBehaviour)]
pub struct Behaviour {
    /// Identify: addresses and agent version.
    pub identify: identify::Behaviour,
    /// Ping: liveness and round-trip time.
    pub ping: ping::Behaviour,
    /// mDNS on the LAN, when enabled.
    pub mdns: Toggle<mdns::tokio::Behaviour>,
    /// `/harp/sync/1`.
    pub sync: request_response::Behaviour<SyncCodec>,
    /// `/harp/blocks/2` and `/1`: streams handed to [`libp2p_stream::Control`]s outside the swarm.
    pub blocks: libp2p_stream::Behaviour,
    /// Head announcements, one topic per library.
    pub gossip: gossipsub::Behaviour,
    /// Refuses connections beyond the configured limits (a flood of half-open or idle
    /// connections must not exhaust the process's file descriptors).
    pub limits: connection_limits::Behaviour,
}

impl Behaviour {
    /// The behaviour for a node with `key`, as `config` says.
    pub fn new(
        key: &Keypair,
        config: &P2pConfig,
    ) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        let mdns = if config.mdns {
            Some(mdns::tokio::Behaviour::new(
                mdns::Config::default(),
                key.public().to_peer_id(),
            )?)
        } else {
            None
        };
        Ok(Behaviour {
            identify: identify::Behaviour::new(
                identify::Config::new(IDENTIFY_PROTOCOL.into(), key.public())
                    .with_agent_version(format!("harpbridge/{}", env!("CARGO_PKG_VERSION"))),
            ),
            ping: ping::Behaviour::new(ping::Config::new()),
            mdns: Toggle::from(mdns),
            sync: request_response::Behaviour::with_codec(
                SyncCodec,
                [(
                    StreamProtocol::new(PROTOCOL),
                    request_response::ProtocolSupport::Full,
                )],
                request_response::Config::default().with_request_timeout(config.request_timeout),
            ),
            blocks: libp2p_stream::Behaviour::new(),
            gossip: super::gossip::behaviour(key)?,
            limits: connection_limits::Behaviour::new(config.connection_limits()),
        })
    }
}
