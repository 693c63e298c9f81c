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

/// Stores blocks from `rx` until it closes, reporting outcomes on `tx` (bad blocks when
/// they are staged, good ones when their commit is durable); a store error (disk full,
/// database) is reported and ends the storer.
pub async fn run(
    content: ContentStore,
    rx: mpsc::UnboundedReceiver<Arrived>,
    tx: mpsc::UnboundedSender<Result<Vec<Outcome>, ContentError>>,
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

type Report = mpsc::UnboundedSender<Result<Vec<Outcome>, ContentError>>;

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
            let (good, bad) = batch
                .iter()
                .map(|a| Outcome {
                    peer: a.peer,
                    slot: a.slot,
                    size: a.bytes.len() as u64,
                    good: !rejected.contains(&a.hash),
                })
                .partition(|o| o.good);
            Ok(((received, good), bad))
        })
        .await;
        match r {
            Ok((group, bad)) => {
                let bad: Vec<Outcome> = bad;
                if !bad.is_empty() && tx.send(Ok(bad)).is_err() {
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
            Ok(outcomes.into_iter().flatten().collect())
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
