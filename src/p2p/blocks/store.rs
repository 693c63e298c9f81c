//! Writing received blocks: verified and written as they arrive, made durable in groups,
//! off the async threads.
//!
//! Two stages run side by side, each on the blocking pool:
//!
//! - **stage**: whatever has arrived (up to [`STAGE_BYTES`]) is hashed against its name and
//!   written under temporary names ([`crate::content::ContentStore::stage_blocks`]); a
//!   block that does not match is reported at once, tagged with the peer that sent it.
//! - **commit**: everything staged since the last commit is flushed, named and indexed with
//!   one round of fsyncs and one index commit
//!   ([`crate::content::ContentStore::commit_blocks`]); only then are its blocks reported
//!   stored.
//!
//! One commit per block would cap a transfer at a few hundred blocks per second on a slow
//! disk, so commits group what arrived meanwhile: a slow flush makes the next group larger.
//! Hashing and writing happen while the bytes arrive, so when the last block comes only
//! its own small write and one short commit stand between it and a finished fetch (with
//! hashing and writing inside the commit, the last group was up to 16 MiB of both).

use std::collections::HashSet;

use libp2p::PeerId;
use tokio::sync::mpsc;

use crate::content::{BlockHash, ContentError, ContentStore, ReceivedBlocks};

/// Most bytes hashed and written per staging step (a group that small keeps the last
/// block's own staging short).
pub const STAGE_BYTES: usize = 4 << 20;

/// A block as received, not yet verified.
#[derive(Debug)]
pub struct Arrived {
    /// Who sent it.
    pub peer: PeerId,
    /// The fetch's slot for it.
    pub slot: usize,
    /// Its expected hash.
    pub hash: BlockHash,
    /// Its bytes.
    pub bytes: Vec<u8>,
}

/// The outcome of one block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// Who sent it.
    pub peer: PeerId,
    /// The fetch's slot.
    pub slot: usize,
    /// Its size.
    pub size: u64,
    /// Verified and stored (false: its bytes did not match its hash).
    pub good: bool,
}

/// What the storer reports about blocks, twice for a good one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// Hashed and written under temporary names, or found not to match their hash (`good`
    /// false): either way their bytes have left memory, so they stop counting against their
    /// provider's window here, not when the commit's fsyncs are done.
    Staged(Vec<Outcome>),
    /// Good blocks made durable by their group's commit.
    Stored(Vec<Outcome>),
}

/// Stores blocks from `rx` until it closes, reporting each block when it is staged and,
/// if good, again when its commit is durable; a store error (disk full, database) is
/// reported and ends the storer.
pub async fn run(
    content: ContentStore,
    rx: mpsc::UnboundedReceiver<Arrived>,
    tx: mpsc::UnboundedSender<Result<Progress, ContentError>>,
) {
    let (staged_tx, staged_rx) = mpsc::unbounded_channel();
    // One task, two loops: aborting the storer drops both, and with them whatever is staged
    // (its temporary files are removed).
    tokio::join!(
        stage(content.clone(), rx, staged_tx, tx.clone()),
        commit(content, staged_rx, tx),
    );
}

/// Blocks staged, and the outcomes to report once they are committed.
type Group = (ReceivedBlocks, Vec<Outcome>);

type Report = mpsc::UnboundedSender<Result<Progress, ContentError>>;

/// Stages what arrives; ends when `rx` closes (dropping `staged`, which ends the commits
/// after the last group) or on an error.
async fn stage(
    content: ContentStore,
    mut rx: mpsc::UnboundedReceiver<Arrived>,
    staged: mpsc::UnboundedSender<Group>,
    tx: Report,
) {
    while let Some(first) = rx.recv().await {
        let mut bytes = first.bytes.len();
        let mut batch = vec![first];
        while bytes < STAGE_BYTES {
            match rx.try_recv() {
                Ok(a) => {
                    bytes += a.bytes.len();
                    batch.push(a);
                }
                Err(_) => break,
            }
        }
        let store = content.clone();
        let r = blocking("storing received blocks", move || {
            let (received, rejected) =
                store.stage_blocks(batch.iter().map(|a| (a.hash, a.bytes.as_slice())))?;
            let rejected: HashSet<BlockHash> = rejected.into_iter().collect();
            let all: Vec<Outcome> = batch
                .iter()
                .map(|a| Outcome {
                    peer: a.peer,
                    slot: a.slot,
                    size: a.bytes.len() as u64,
                    good: !rejected.contains(&a.hash),
                })
                .collect();
            let good = all.iter().filter(|o| o.good).copied().collect();
            Ok(((received, good), all))
        })
        .await;
        match r {
            Ok((group, all)) => {
                if tx.send(Ok(Progress::Staged(all))).is_err() {
                    return;
                }
                if staged.send(group).is_err() {
                    return;
                }
            }
            Err(e) => {
                let _ = tx.send(Err(e));
                return;
            }
        }
    }
}

/// Commits every group staged since the last commit, until `staged` closes or an error.
async fn commit(content: ContentStore, mut staged: mpsc::UnboundedReceiver<Group>, tx: Report) {
    while let Some(first) = staged.recv().await {
        let mut groups = vec![first];
        while let Ok(g) = staged.try_recv() {
            groups.push(g);
        }
        let store = content.clone();
        let r = blocking("storing received blocks", move || {
            let (received, outcomes): (Vec<ReceivedBlocks>, Vec<Vec<Outcome>>) =
                groups.into_iter().unzip();
            store.commit_blocks(received)?;
            Ok(Progress::Stored(outcomes.into_iter().flatten().collect()))
        })
        .await;
        let failed = r.is_err();
        if tx.send(r).is_err() || failed {
            return;
        }
    }
}

/// Runs a content-store call `f` on the blocking pool (the store fsyncs and hashes); a
/// panic there becomes a store error naming `op`.
pub(super) async fn blocking<T: Send + 'static>(
    op: &'static str,
    f: impl FnOnce() -> Result<T, ContentError> + Send + 'static,
) -> Result<T, ContentError> {
    tokio::task::spawn_blocking(f).await.unwrap_or_else(|e| {
        Err(ContentError::Io {
            op,
            path: "blocks".into(),
            source: std::io::Error::other(e.to_string()),
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::content::StoreOptions;

    /// Every block is reported staged (bad ones only so, and at once), and the good ones
    /// again once their commit is durable, when they can be read back.
    #[tokio::test]
    async fn blocks_are_reported_staged_then_stored() {
        let dir = tempfile::tempdir().unwrap();
        let db = crate::db::open(dir.path()).unwrap();
        let content = ContentStore::open(db, dir.path(), StoreOptions::default()).unwrap();
        let peer = PeerId::random();
        let blocks: Vec<Vec<u8>> = (0..3u8).map(|i| vec![i; 1000 + usize::from(i)]).collect();
        let (tx, rx) = mpsc::unbounded_channel();
        let (report, mut reports) = mpsc::unbounded_channel();
        let storer = tokio::spawn(run(content.clone(), rx, report));
        for (slot, bytes) in blocks.iter().enumerate() {
            // Slot 1's bytes are not the block it was asked for (a fetch asks each hash once).
            let hash = match slot {
                1 => BlockHash::of(b"the block that was asked for"),
                _ => BlockHash::of(bytes),
            };
            tx.send(Arrived {
                peer,
                slot,
                hash,
                bytes: bytes.clone(),
            })
            .unwrap();
        }
        drop(tx);
        let (mut staged, mut stored) = (Vec::new(), Vec::new());
        while let Some(progress) = reports.recv().await {
            match progress.unwrap() {
                Progress::Staged(o) => {
                    // Nothing is reported stored before it was reported staged.
                    for s in &o {
                        assert!(!stored.iter().any(|d: &Outcome| d.slot == s.slot));
                    }
                    staged.extend(o)
                }
                Progress::Stored(o) => {
                    for s in &o {
                        assert!(staged.iter().any(|d| d.slot == s.slot && d.good));
                    }
                    stored.extend(o)
                }
            }
        }
        storer.await.unwrap();
        let mut staged: Vec<(usize, bool)> = staged.iter().map(|o| (o.slot, o.good)).collect();
        staged.sort();
        assert_eq!(staged, vec![(0, true), (1, false), (2, true)]);
        let mut stored: Vec<usize> = stored.iter().map(|o| o.slot).collect();
        stored.sort();
        assert_eq!(stored, vec![0, 2]);
        for slot in [0, 2] {
            let read = content.read_block(&BlockHash::of(&blocks[slot])).unwrap();
            assert_eq!(read, blocks[slot]);
        }
        assert!(!content.has_block(&BlockHash::of(&blocks[1])).unwrap());
    }
}
