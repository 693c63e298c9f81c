//! Writing received blocks: verified and stored in batches, off the async threads.
//!
//! One commit per block would cap a LAN transfer at a few hundred blocks per second (each
//! commit fsyncs), so the storer takes whatever has arrived (up to [`BATCH_BYTES`]) and hands
//! it to [`crate::content::ContentStore::put_blocks`] on the blocking pool: every block is
//! hashed against its name first, the good ones are stored with one round of fsyncs and one
//! index commit, the bad ones come back as rejected, each tagged with the peer that sent it.
//! While one batch is written the next one gathers, so disk and network overlap.

use std::collections::HashSet;

use libp2p::PeerId;
use tokio::sync::mpsc;

use crate::content::{BlockHash, ContentError, ContentStore};

/// Most bytes written per batch.
pub const BATCH_BYTES: usize = 16 << 20;

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

/// Stores blocks from `rx` until it closes, reporting each batch on `tx`; a store error
/// (disk full, database) is reported and ends the storer.
pub async fn run(
    content: ContentStore,
    mut rx: mpsc::UnboundedReceiver<Arrived>,
    tx: mpsc::UnboundedSender<Result<Vec<Outcome>, ContentError>>,
) {
    while let Some(first) = rx.recv().await {
        let mut bytes = first.bytes.len();
        let mut batch = vec![first];
        while bytes < BATCH_BYTES {
            match rx.try_recv() {
                Ok(a) => {
                    bytes += a.bytes.len();
                    batch.push(a);
                }
                Err(_) => break,
            }
        }
        let store = content.clone();
        let r = tokio::task::spawn_blocking(move || {
            let report = store.put_blocks(batch.iter().map(|a| (a.hash, a.bytes.as_slice())))?;
            let rejected: HashSet<BlockHash> = report.rejected.into_iter().collect();
            Ok(batch
                .iter()
                .map(|a| Outcome {
                    peer: a.peer,
                    slot: a.slot,
                    size: a.bytes.len() as u64,
                    good: !rejected.contains(&a.hash),
                })
                .collect())
        })
        .await
        .unwrap_or_else(|e| {
            Err(ContentError::Io {
                op: "storing received blocks",
                path: "blocks".into(),
                source: std::io::Error::other(e.to_string()),
            })
        });
        let failed = r.is_err();
        if tx.send(r).is_err() || failed {
            return;
        }
    }
}
