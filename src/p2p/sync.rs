//! The chain side of `/harp/sync/1`: answering requests and storing what a pull brings.
//!
//! Everything here is synchronous and touches the redb database (a fetch reads entries, a
//! store commits with fsync), so the node calls it on tokio's blocking pool, never on the
//! task that drives the swarm. Each function is one step of the conversation described in
//! [`super::message`]; the node only moves messages between the wire and these functions.
//!
//! Trust is checked here, on every request, against the store as it is now
//! ([`super::trust`]). A refusal is logged with the peer's id and the library's id, which are
//! public names; never with keys or entries.

use libp2p::PeerId;

use crate::chain::{ChainError, ChainStore, DeviceKey, Entry, InsertOutcome, LibraryId};

use super::message::{
    LibraryHeads, Request, Response, MAX_BATCH_ENTRIES, MAX_HEADS, MAX_LIBRARIES,
    MAX_RESPONSE_BYTES,
};
use super::trust::{Refusal, Trust};

/// Room left in a response frame for everything but the entries.
const FRAME_OVERHEAD: usize = 64;

/// What answering a request asks the node to do besides replying.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// The reply.
    pub response: Response,
    /// Pull this library from the asker (it announced heads we lack).
    pub pull: Option<LibraryId>,
}

impl Answer {
    fn reply(response: Response) -> Self {
        Answer {
            response,
            pull: None,
        }
    }
}

/// The chain store, seen from the sync protocol.
#[derive(Debug, Clone)]
pub struct SyncService {
    chain: ChainStore,
    trust: Trust,
}

impl SyncService {
    /// The protocol over `chain`.
    pub fn new(chain: ChainStore) -> Self {
        SyncService {
            trust: Trust::new(chain.clone()),
            chain,
        }
    }

    /// The store.
    pub fn chain(&self) -> &ChainStore {
        &self.chain
    }

    /// The trust decisions.
    pub fn trust(&self) -> &Trust {
        &self.trust
    }

    /// Answers one request from `peer`.
    pub fn answer(&self, peer: &PeerId, request: Request) -> Answer {
        let result = match request {
            Request::Libraries => self.libraries_for(peer).map(Answer::reply),
            Request::Fetch {
                library,
                have,
                limit,
            } => self.fetch(peer, &library, &have, limit).map(Answer::reply),
            Request::Announce(lh) => self.announced(peer, &lh),
        };
        match result {
            Ok(answer) => answer,
            Err(SyncError::Refused(r)) => {
                tracing::info!(%peer, reason = %r, "sync request refused");
                Answer::reply(Response::Refused(r))
            }
            Err(SyncError::Chain(e)) => {
                tracing::warn!(%peer, error = %e, "answering a sync request failed");
                Answer::reply(Response::Refused(Refusal::Internal))
            }
        }
    }

    /// The libraries `peer` shares with us and their heads here; a refusal if none.
    fn libraries_for(&self, peer: &PeerId) -> Result<Response, SyncError> {
        let libs = self.trust.shared_libraries(peer);
        if libs.is_empty() {
            return Err(SyncError::Refused(
                super::trust::device_key(peer)
                    .map(|_| Refusal::NotAMember)
                    .unwrap_or(Refusal::NotADevice),
            ));
        }
        let mut out = Vec::with_capacity(libs.len().min(MAX_LIBRARIES));
        for library in libs.into_iter().take(MAX_LIBRARIES) {
            out.push(self.heads(&library)?);
        }
        Ok(Response::Libraries(out))
    }

    /// At most `limit` entries (and one frame's worth of bytes) that a holder of `have`
    /// lacks, ancestors first.
    fn fetch(
        &self,
        peer: &PeerId,
        library: &LibraryId,
        have: &[(DeviceKey, u64)],
        limit: u32,
    ) -> Result<Response, SyncError> {
        self.trust.check(peer, library)?;
        let limit = (limit as usize).clamp(1, MAX_BATCH_ENTRIES);
        let (batch, total) = self.chain.missing_batch_for_vector(library, have, limit)?;
        let budget = MAX_RESPONSE_BYTES - FRAME_OVERHEAD;
        let mut used = 0usize;
        let mut entries: Vec<Entry> = Vec::with_capacity(batch.len());
        // One batch of `limit` entries, cut short where the frame would overflow.
        for e in batch {
            let size = 4 + e.to_bytes().len();
            if used + size > budget && !entries.is_empty() {
                break;
            }
            used += size;
            entries.push(e);
        }
        let remaining = (total - entries.len()) as u64;
        Ok(Response::Entries { entries, remaining })
    }

    /// `peer` says its copy of a library has these heads.
    fn announced(&self, peer: &PeerId, lh: &LibraryHeads) -> Result<Answer, SyncError> {
        let known = self.chain.libraries().contains(&lh.library);
        if known {
            // Only members may make us do work for a library we hold.
            self.trust.check(peer, &lh.library)?;
        }
        // A library we do not hold may be one we were just added to: pull it; the
        // announcer's own trust check decides whether we get anything.
        let pull = self.lacks_any(&lh.library, &lh.heads).then_some(lh.library);
        Ok(Answer {
            response: Response::Ack,
            pull,
        })
    }

    /// True if this store holds `library`.
    pub fn holds(&self, library: &LibraryId) -> bool {
        self.chain.libraries().contains(library)
    }

    /// True if we lack one of `heads` of `library` (or the whole library).
    pub fn lacks_any(&self, library: &LibraryId, heads: &[crate::chain::EntryHash]) -> bool {
        heads.iter().any(|h| !self.chain.contains(library, h))
            || (heads.is_empty() && !self.chain.libraries().contains(library))
    }

    /// The library's heads here (empty for a library we do not hold), capped at
    /// [`MAX_HEADS`].
    pub fn heads(&self, library: &LibraryId) -> Result<LibraryHeads, ChainError> {
        let mut heads = match self.chain.heads(library) {
            Ok(h) => h,
            Err(ChainError::UnknownLibrary(_)) => Vec::new(),
            Err(e) => return Err(e),
        };
        heads.truncate(MAX_HEADS);
        Ok(LibraryHeads {
            library: *library,
            heads,
        })
    }

    /// What we hold of `library`, as the `have` of a [`Request::Fetch`] (empty if we hold
    /// none of it).
    pub fn have(&self, library: &LibraryId) -> Result<Vec<(DeviceKey, u64)>, ChainError> {
        match self.chain.version_vector(library) {
            Ok(v) => Ok(v),
            Err(ChainError::UnknownLibrary(_)) => Ok(Vec::new()),
            Err(e) => Err(e),
        }
    }

    /// The fetch to send for `library` now: what we hold, asking for `limit` more.
    pub fn fetch_request(&self, library: &LibraryId, limit: u32) -> Result<Request, ChainError> {
        Ok(Request::Fetch {
            library: *library,
            have: self.have(library)?,
            limit,
        })
    }

    /// Stores a batch pulled from a peer: verified and committed all or nothing by
    /// [`ChainStore::insert_remote`]. What was stored stays stored, so a pull that stops
    /// here resumes with the next fetch's version vector.
    pub fn store(
        &self,
        library: &LibraryId,
        entries: Vec<Entry>,
    ) -> Result<InsertOutcome, ChainError> {
        if let Some(wrong) = entries.iter().find(|e| e.meta().library != *library) {
            return Err(ChainError::Rejected {
                hash: wrong.hash(),
                fault: crate::chain::EntryFault::WrongLibrary(wrong.meta().library),
            });
        }
        self.chain.insert_remote(library, entries)
    }

    /// The announcement of `library` and the members who should hear it.
    pub fn announcement(
        &self,
        library: &LibraryId,
    ) -> Result<(LibraryHeads, Vec<DeviceKey>), ChainError> {
        Ok((self.heads(library)?, self.chain.members(library)?))
    }
}

/// Why a request was not answered with data.
#[derive(Debug, thiserror::Error)]
enum SyncError {
    #[error(transparent)]
    Refused(#[from] Refusal),
    #[error(transparent)]
    Chain(#[from] ChainError),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::Op;
    use crate::identity::DeviceIdentity;

    fn store(dir: &tempfile::TempDir, name: &str) -> ChainStore {
        ChainStore::open_path(&dir.path().join(name)).unwrap()
    }

    fn mkdir(n: usize) -> Op {
        Op::Mkdir {
            path: crate::chain::ChainPath::new(&format!("d{n}")).unwrap(),
        }
    }

    /// A pull in small batches stops half-way (a new store over the same database, as after
    /// a restart) and resumes from what was stored: nothing is sent twice.
    #[test]
    fn pull_in_batches_resumes_after_interruption() {
        let dir = tempfile::tempdir().unwrap();
        let owner = DeviceIdentity::from_secret([1; 32]);
        let friend = DeviceIdentity::from_secret([2; 32]);
        let server = SyncService::new(store(&dir, "a.redb"));
        let (lib, _) = server
            .chain()
            .create_library(owner.signing_key(), "owner")
            .unwrap();
        let mut ops = vec![Op::AddDevice {
            device: friend.device_key(),
            name: "friend".into(),
        }];
        ops.extend((0..20).map(mkdir));
        server
            .chain()
            .append_batch(&lib, owner.signing_key(), ops)
            .unwrap();
        let total = server.chain().len(&lib).unwrap();
        let peer = friend.peer_id();

        let pulled_once = {
            let client = SyncService::new(store(&dir, "b.redb"));
            let req = client.fetch_request(&lib, 5).unwrap();
            let Answer { response, .. } = server.answer(&peer, req);
            let Response::Entries { entries, remaining } = response else {
                panic!("{response:?}")
            };
            assert_eq!(entries.len(), 5);
            assert_eq!(remaining as usize, total - 5);
            assert_eq!(client.store(&lib, entries).unwrap().inserted, 5);
            client.chain().len(&lib).unwrap()
        };
        assert_eq!(pulled_once, 5);

        let client = SyncService::new(store(&dir, "b.redb"));
        let mut rounds = 0;
        loop {
            rounds += 1;
            let req = client.fetch_request(&lib, 5).unwrap();
            let Response::Entries { entries, remaining } = server.answer(&peer, req).response
            else {
                panic!("refused")
            };
            if entries.is_empty() {
                break;
            }
            let out = client.store(&lib, entries).unwrap();
            assert_eq!(out.already_had, 0, "nothing is sent twice");
            if remaining == 0 {
                break;
            }
        }
        assert_eq!(rounds, (total - 5).div_ceil(5));
        assert_eq!(
            client.chain().heads(&lib).unwrap(),
            server.chain().heads(&lib).unwrap()
        );
    }

    #[test]
    fn strangers_get_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let owner = DeviceIdentity::from_secret([1; 32]);
        let stranger = DeviceIdentity::from_secret([3; 32]);
        let server = SyncService::new(store(&dir, "a.redb"));
        let (lib, _) = server
            .chain()
            .create_library(owner.signing_key(), "owner")
            .unwrap();
        let p = stranger.peer_id();
        for req in [
            Request::Libraries,
            Request::Fetch {
                library: lib,
                have: vec![],
                limit: 100,
            },
            Request::Fetch {
                library: LibraryId([7; 16]),
                have: vec![],
                limit: 100,
            },
        ] {
            assert_eq!(
                server.answer(&p, req).response,
                Response::Refused(Refusal::NotAMember)
            );
        }
        let ann = Request::Announce(server.heads(&lib).unwrap());
        assert_eq!(
            server.answer(&p, ann).response,
            Response::Refused(Refusal::NotAMember)
        );
        // The owner itself is told about its library, and an announcement of heads it
        // lacks makes it pull.
        let o = owner.peer_id();
        let Response::Libraries(libs) = server.answer(&o, Request::Libraries).response else {
            panic!()
        };
        assert_eq!(libs, vec![server.heads(&lib).unwrap()]);
        let unknown = LibraryHeads {
            library: lib,
            heads: vec![crate::chain::EntryHash([9; 32])],
        };
        assert_eq!(
            server.answer(&o, Request::Announce(unknown)).pull,
            Some(lib)
        );
    }
}
