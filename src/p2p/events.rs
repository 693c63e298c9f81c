//! What the node tells the rest of the program: events as they happen, and a table of peers
//! on request. The engine forwards these to the panel's hub (`crate::web`), which has its own
//! `Peer` type for the browser.

use std::time::Duration;

use libp2p::{Multiaddr, PeerId};

use crate::chain::{ContentId, DeviceKey, LibraryId};

use super::trust::Refusal;

/// Something that happened in the swarm.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeEvent {
    /// A listener was bound to this address.
    Listening(Multiaddr),
    /// mDNS found a peer on the LAN (it is dialled at once).
    Discovered {
        /// The peer.
        peer: PeerId,
        /// Where.
        addrs: Vec<Multiaddr>,
    },
    /// The first connection to a peer is up.
    Connected {
        /// The peer.
        peer: PeerId,
        /// Its address on that connection.
        address: Multiaddr,
    },
    /// The last connection to a peer closed.
    Disconnected {
        /// The peer.
        peer: PeerId,
    },
    /// A batch pulled from a peer was verified and stored.
    Pulled {
        /// From whom.
        peer: PeerId,
        /// Which library.
        library: LibraryId,
        /// Entries newly stored.
        inserted: usize,
        /// Entries the peer still had for us after this batch.
        remaining: u64,
    },
    /// A pull from a peer finished: we hold everything it offered.
    PullDone {
        /// From whom.
        peer: PeerId,
        /// Which library.
        library: LibraryId,
    },
    /// A peer offers a library we do not hold, and [`super::P2pConfig::join_offered`] is
    /// off: nothing is pulled until [`super::NodeHandle::join`].
    Offered {
        /// The peer.
        peer: PeerId,
        /// The library.
        library: LibraryId,
    },
    /// A peer refused us (we are not a member of its copy of the library, or it failed).
    RefusedBy {
        /// The peer.
        peer: PeerId,
        /// The library asked about, if the request named one.
        library: Option<LibraryId>,
        /// Its reason.
        reason: Refusal,
    },
    /// A block fetch made progress, finished or failed.
    Transfer(TransferProgress),
    /// A request failed (timeout, closed connection, an undecodable or invalid batch).
    SyncFailed {
        /// The peer.
        peer: PeerId,
        /// The library, if the request named one.
        library: Option<LibraryId>,
        /// What happened.
        error: String,
    },
}

/// How far a fetch of one file version has got, reported as it goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransferProgress {
    /// The library the version belongs to.
    pub library: LibraryId,
    /// The version (its manifest id).
    pub content: ContentId,
    /// Bytes of the version held here now.
    pub bytes_done: u64,
    /// The version's size.
    pub bytes_total: u64,
    /// The provider of the latest block, if any came from a peer.
    pub from: Option<PeerId>,
    /// The fetch ended (complete, or failed with `error`).
    pub finished: bool,
    /// Why it failed.
    pub error: Option<String>,
}

/// What a finished fetch moved, and from whom.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FetchReport {
    /// Bytes of blocks received from peers.
    pub bytes_fetched: u64,
    /// Blocks received and stored.
    pub blocks_fetched: u64,
    /// Bytes of blocks that were already here.
    pub bytes_present: u64,
    /// Bytes received per provider.
    pub from: Vec<(PeerId, u64)>,
    /// Wall time of the fetch.
    pub elapsed: Duration,
    /// Providers dropped for this fetch (a block that did not match its hash, a bad
    /// manifest, a broken protocol), with why.
    pub excluded: Vec<(PeerId, String)>,
    /// Blocks the endgame asked of a second provider while in flight at a first
    /// ([`super::blocks::endgame`]).
    pub endgame_asked: u64,
    /// Of those, blocks whose second copy came first.
    pub endgame_won: u64,
    /// Bytes of copies that came second and were dropped (the endgame's cost on the wire).
    pub endgame_dropped: u64,
    /// Losing copies cancelled: the `Get` withdrawn before it was written, or a `Cancel`
    /// sent (`/harp/blocks/2`), which stops the copy if its provider has not started
    /// sending it (see `p2p::blocks::wire`).
    pub endgame_cancelled: u64,
    /// Each provider still in the fetch at its end, with its window then (bytes it could
    /// have in flight: see `p2p::blocks::rank::window`).
    pub windows: Vec<(PeerId, u64)>,
}

/// One peer the node knows, for `harpbridge peers` and the panel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerInfo {
    /// Its id.
    pub peer: PeerId,
    /// The chain's key behind the id (ed25519 peers only).
    pub device: Option<DeviceKey>,
    /// At least one connection is open.
    pub connected: bool,
    /// On the LAN: found by mDNS, or (not a configured peer and) connected over an address
    /// on one of this host's subnets ([`super::subnet`]) or with a ping round trip of at most
    /// [`super::P2pConfig::lan_rtt`] (off by default). Configured peers (the cloud) are WAN
    /// unless mDNS finds them. Bytes are counted per class by this ([`super::metrics`]).
    pub lan: bool,
    /// Addresses it listens on (identify, mDNS) or was reached at.
    pub addresses: Vec<Multiaddr>,
    /// The latest ping round trip.
    pub rtt: Option<Duration>,
    /// Its identify agent, such as `harpbridge/0.1.0`.
    pub agent: Option<String>,
    /// The libraries held here of which it is a member. Empty: it is only "discovered".
    pub libraries: Vec<LibraryId>,
    /// Block bytes received from it (`/harp/blocks/2` payloads).
    pub bytes_in: u64,
    /// Block bytes sent to it.
    pub bytes_out: u64,
}

impl PeerInfo {
    /// A member of at least one library held here.
    pub fn trusted(&self) -> bool {
        !self.libraries.is_empty()
    }
}
