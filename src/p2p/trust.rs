//! Who may sync what: a peer may exchange a library's entries only if the key behind its
//! `PeerId` is a member of that library, as the chain's membership operations say.
//!
//! There is no other secret. A connection is authenticated by noise (or QUIC's TLS) with the
//! peer's libp2p key, so the `PeerId` the swarm reports is proven; an ed25519 `PeerId`
//! *contains* its public key (an identity multihash of the protobuf-encoded key), so we can
//! read the device key straight out of it without waiting for identify.
//!
//! Every decision is made against the local store, at the moment of the request: a device
//! removed from a library is refused from its next request on. A peer that is a member of no
//! library we hold is only "discovered": it can connect, and learns nothing.

use libp2p::PeerId;

use crate::chain::{ChainStore, DeviceKey, LibraryId};

/// The multihash code of the identity hash, which ed25519 `PeerId`s use.
const IDENTITY_MULTIHASH: u64 = 0x00;

/// The chain's device key behind a `PeerId`, or `None` if the id does not inline an ed25519
/// key (RSA and other long keys are hashed, and are not Harp devices anyway).
pub fn device_key(peer: &PeerId) -> Option<DeviceKey> {
    let mh = peer.as_ref();
    if mh.code() != IDENTITY_MULTIHASH {
        return None;
    }
    let public = libp2p::identity::PublicKey::try_decode_protobuf(mh.digest()).ok()?;
    let ed = public.try_into_ed25519().ok()?;
    Some(DeviceKey(ed.to_bytes()))
}

/// Why a peer gets nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// Its key is not a member of the library here, or the library is not held here (the two
    /// are not told apart, so a stranger cannot probe which libraries exist).
    #[error("not a member of the library")]
    NotAMember,
    /// Its `PeerId` does not carry an ed25519 key.
    #[error("not an ed25519 device")]
    NotADevice,
    /// This node failed while answering; the peer may ask again later.
    #[error("internal error")]
    Internal,
}

/// The trust decisions, made against one chain store.
#[derive(Debug, Clone)]
pub struct Trust {
    chain: ChainStore,
}

impl Trust {
    /// Decisions against `chain`.
    pub fn new(chain: ChainStore) -> Self {
        Trust { chain }
    }

    /// `Ok` if `peer` may exchange `library`'s entries with us.
    pub fn check(&self, peer: &PeerId, library: &LibraryId) -> Result<DeviceKey, Refusal> {
        let key = device_key(peer).ok_or(Refusal::NotADevice)?;
        if self.chain.is_member(library, &key) {
            Ok(key)
        } else {
            Err(Refusal::NotAMember)
        }
    }

    /// The libraries held here of which `peer` is a member, ascending.
    pub fn shared_libraries(&self, peer: &PeerId) -> Vec<LibraryId> {
        let Some(key) = device_key(peer) else {
            return Vec::new();
        };
        let mut libs: Vec<LibraryId> = self
            .chain
            .libraries()
            .into_iter()
            .filter(|lib| self.chain.is_member(lib, &key))
            .collect();
        libs.sort();
        libs
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::DeviceIdentity;

    #[test]
    fn device_key_round_trips_through_peer_id() {
        let id = DeviceIdentity::from_secret([7; 32]);
        assert_eq!(device_key(&id.peer_id()), Some(id.device_key()));
        assert_eq!(id.device_key().peer_id(), Some(id.peer_id()));
    }

    #[test]
    fn hashed_peer_ids_are_not_devices() {
        // A random PeerId is a SHA2-256 multihash of nothing in particular.
        assert_eq!(device_key(&PeerId::random()), None);
    }

    #[test]
    fn members_only() {
        let dir = tempfile::tempdir().unwrap();
        let chain = ChainStore::open_path(&dir.path().join("db.redb")).unwrap();
        let owner = DeviceIdentity::from_secret([1; 32]);
        let friend = DeviceIdentity::from_secret([2; 32]);
        let stranger = DeviceIdentity::from_secret([3; 32]);
        let (lib, _) = chain.create_library(owner.signing_key(), "owner").unwrap();
        chain
            .append(
                &lib,
                owner.signing_key(),
                crate::chain::Op::AddDevice {
                    device: friend.device_key(),
                    name: "friend".into(),
                },
            )
            .unwrap();
        let trust = Trust::new(chain);
        assert_eq!(
            trust.check(&friend.peer_id(), &lib),
            Ok(friend.device_key())
        );
        assert_eq!(
            trust.check(&stranger.peer_id(), &lib),
            Err(Refusal::NotAMember)
        );
        let other = LibraryId([9; 16]);
        assert_eq!(
            trust.check(&owner.peer_id(), &other),
            Err(Refusal::NotAMember)
        );
        assert_eq!(trust.shared_libraries(&friend.peer_id()), vec![lib]);
        assert!(trust.shared_libraries(&stranger.peer_id()).is_empty());
        assert_eq!(
            trust.check(&PeerId::random(), &lib),
            Err(Refusal::NotADevice)
        );
    }
}
