//! Signature checks, batched and spread over the machine's cores.
//!
//! ed25519-dalek's `verify_batch` checks many signatures with one multi-scalar
//! multiplication (about 3× one-by-one here with 2048 per batch); chunks go to scoped threads. When a batch
//! fails, its signatures are checked one by one to name the first bad one.

use ed25519_dalek::{Signature, VerifyingKey};

use super::types::EntryHash;

/// Signatures per `verify_batch` call.
const BATCH: usize = 2048;
/// Below this many signatures, one thread does all the work.
const PARALLEL_MIN: usize = 512;

/// One signature to check: the signed hash, the key, the signature.
pub(crate) type SigItem = (EntryHash, VerifyingKey, [u8; 64]);

fn verify_chunk(items: &[SigItem]) -> Option<usize> {
    for (c, chunk) in items.chunks(BATCH).enumerate() {
        let msgs: Vec<&[u8]> = chunk.iter().map(|i| &i.0 .0[..]).collect();
        let sigs: Vec<Signature> = chunk.iter().map(|i| Signature::from_bytes(&i.2)).collect();
        let keys: Vec<VerifyingKey> = chunk.iter().map(|i| i.1).collect();
        if ed25519_dalek::verify_batch(&msgs, &sigs, &keys).is_err() {
            for (k, item) in chunk.iter().enumerate() {
                if item
                    .1
                    .verify_strict(&item.0 .0, &Signature::from_bytes(&item.2))
                    .is_err()
                {
                    return Some(c * BATCH + k);
                }
            }
            // The batch equation failed but every single check passed (possible only for
            // crafted signatures with small-order parts): treat the first as bad, so the
            // answer never depends on how entries were grouped.
            return Some(c * BATCH);
        }
    }
    None
}

/// Checks every signature; `Err(i)` names the first bad one.
pub(crate) fn verify_all(items: &[SigItem]) -> Result<(), usize> {
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(8);
    if items.len() < PARALLEL_MIN || threads < 2 {
        return verify_chunk(items).map_or(Ok(()), Err);
    }
    let per = items.len().div_ceil(threads);
    let bad = std::thread::scope(|s| {
        let handles: Vec<_> = items
            .chunks(per)
            .enumerate()
            .map(|(t, chunk)| s.spawn(move || verify_chunk(chunk).map(|i| t * per + i)))
            .collect();
        handles
            .into_iter()
            .filter_map(|h| h.join().unwrap_or(Some(0)))
            .min()
    });
    bad.map_or(Ok(()), Err)
}
