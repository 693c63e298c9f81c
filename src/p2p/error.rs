//! What can go wrong in the swarm, as types the caller can match on.

use libp2p::{Multiaddr, TransportError};

use crate::chain::ChainError;

/// Why the node could not start, or a command could not be carried out.
#[derive(Debug, thiserror::Error)]
pub enum P2pError {
    /// Building a transport or behaviour failed (for example mDNS could not open its socket).
    #[error("building the swarm: {0}")]
    Build(String),
    /// A listen address was refused by every transport, or binding it failed.
    #[error("listening on {addr}: {reason}")]
    Listen {
        /// The address.
        addr: Multiaddr,
        /// The transport's reason.
        reason: String,
    },
    /// The node did not report a bound address for a listener in time.
    #[error("no listen address was bound within {0:?}")]
    ListenTimeout(std::time::Duration),
    /// Dialling an address failed at once (a later connection failure is an event instead).
    #[error("dialling {addr}: {reason}")]
    Dial {
        /// The address.
        addr: Multiaddr,
        /// Why.
        reason: String,
    },
    /// The node's task has stopped (shut down or crashed), so it takes no more commands.
    #[error("the p2p node has stopped")]
    Stopped,
    /// The chain store failed while serving or storing entries.
    #[error(transparent)]
    Chain(#[from] ChainError),
    /// The content store failed while fetching blocks (disk full, database).
    #[error(transparent)]
    Content(#[from] crate::content::ContentError),
    /// A block fetch could not finish: no provider had (or delivered) what was missing.
    /// What was stored stays stored; fetching again resumes.
    #[error("fetch failed: {0}")]
    Fetch(String),
}

impl P2pError {
    pub(crate) fn listen(addr: Multiaddr, e: TransportError<std::io::Error>) -> Self {
        P2pError::Listen {
            addr,
            reason: e.to_string(),
        }
    }
}
