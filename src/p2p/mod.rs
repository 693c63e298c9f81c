//! The swarm: trusted peers found on the LAN (or dialled over the WAN) and chain sync with
//! them over libp2p (docs/architecture.md §2, docs/wire.md §4–§7).
//!
//! # Pieces, one file each
//!
//! | file | concept |
//! |---|---|
//! | [`config`] | where to listen, whom to dial, batch sizes and timeouts |
//! | [`behaviour`] | the protocols: identify, ping, mDNS, `/harp/sync/1` (request-response) |
//! | [`gossip`] | head announcements by gossipsub, one topic per library |
//! | [`message`] | the `/harp/sync/1` messages, the conversation, and their bounded encoding |
//! | [`codec`] | framing those messages on a stream, with size limits checked first |
//! | [`trust`] | who may sync what: chain membership of the key inside the `PeerId` |
//! | [`sync`] | the chain side: answering requests and storing pulled batches |
//! | [`node`] | the task that owns the swarm, driven by commands over a channel |
//! | [`events`] | what the node reports: [`NodeEvent`]s and the [`PeerInfo`] table |
//! | [`blocks`] | `/harp/blocks/2`: block transfer between members, LAN first |
//! | [`metrics`] | block bytes per peer and per class (LAN / WAN): [`Traffic`] |
//! | [`offers`] | libraries peers offer, waiting for a person's approval (on disk) |
//! | [`error`] | [`P2pError`] |
//!
//! # Transports and identity
//!
//! TCP (noise + yamux) and QUIC (v1), on tokio. The swarm's key is the device key
//! ([`crate::identity::DeviceIdentity::keypair`]), so a peer's `PeerId` names the same
//! ed25519 key that signs its chain entries; libp2p 0.57 uses libp2p-identity 0.3, the same
//! crate and version as [`crate::identity`], so no conversion is needed.
//!
//! # Trust in one paragraph
//!
//! A peer gets a library's entries only if its key is a member of that library in our copy
//! of the chain; a peer that is a member of nothing is "discovered" and gets a refusal. What
//! we *receive* needs no trust in the sender: every entry is verified by
//! [`crate::chain::ChainStore::insert_remote`] (hash links, signature, the author's
//! membership), so any member can relay any other member's entries.
//!
//! # How the engine uses it
//!
//! Start one [`Node`] per process with the shared [`crate::chain::ChainStore`], call
//! [`NodeHandle::library_changed`] after each local append, and forward
//! [`NodeHandle::subscribe`]'s [`NodeEvent::Pulled`] to the engine (remote entries to apply)
//! and to the panel. See [`node`] for an example. For a version the tree needs and the
//! content store lacks, call [`NodeHandle::fetch_content`] (progress comes as
//! [`NodeEvent::Transfer`]); [`NodeHandle::traffic`] gives the block bytes moved per peer and
//! per class (LAN / WAN) for `/metrics` and the REST API.
//!
//! # Known limits
//!
//! - A library we do not hold is joined when a peer that holds it lists or announces it to
//!   us and we are a member of it there, unless [`P2pConfig::join_offered`] is off: then the
//!   offer is a [`NodeEvent::Offered`] until [`NodeHandle::join`] approves it. Any device
//!   can make a library and add us to it, so every role turns it off and asks a person
//!   ([`offers`]: `harpbridge offers accept`, or the panel for `serve`).
//! - Announcements go to connected members only; a member that is not connected catches up
//!   when it connects (every new connection starts with `Libraries`).
//! - Gossipsub lets a connected stranger see opaque topic names and, if it subscribes, the
//!   head hashes of a library as they change (see [`gossip`]); never entries or blocks.

pub mod behaviour;
pub mod blocks;
pub mod codec;
pub mod config;
pub mod error;
pub mod events;
pub mod gossip;
pub mod limits;
pub mod message;
pub mod metrics;
pub mod node;
pub mod offers;
pub mod pace;
pub mod subnet;
pub mod sync;
pub mod trust;

pub use config::P2pConfig;
pub use error::P2pError;
pub use events::{FetchReport, NodeEvent, PeerInfo, TransferProgress};
pub use message::{LibraryHeads, Request, Response, PROTOCOL};
pub use metrics::{PeerTraffic, Traffic};
pub use node::{Node, NodeHandle};
pub use sync::SyncService;
pub use trust::{device_key, Refusal, Trust};
