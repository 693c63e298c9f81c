//! Signatures, made and checked in bulk and spread over the machine's cores.
//!
//! Both directions are bounded by ed25519, so each uses the fastest sound way we measured
//! (`harpbridge chain bench` prints both beside their baselines):
//!
//! - **Signing** goes through aws-lc-rs (already linked for TLS and QUIC), whose assembly
//!   signs about 2.5× as fast as ed25519-dalek here. Ed25519 signing is deterministic
//!   (RFC 8032), so the bytes are the same whichever library makes them.
//! - **Checking** is a batch equation, as ed25519-dalek's `verify_batch`, with one change:
//!   the terms of entries by the same author are summed before the multi-scalar
//!   multiplication, so a chunk of n entries by k authors multiplies n + k + 1 points, not
//!   2n + 1. A library has few authors, so this is about 1.7× dalek's batch per core.
//!
//! The batch equation, for random 128-bit z_i:
//! `-(Σ z_i s_i)·B + Σ z_i·R_i + Σ_authors (Σ_{i by A} z_i h_i)·A = 0`, where
//! `h_i = SHA-512(R_i || A_i || M_i)`. The z_i are derived (BLAKE3) from everything being
//! checked, so a signer cannot choose signatures that cancel, and the result does not depend
//! on a random source. When a chunk fails, its signatures are checked one by one
//! (`verify_strict`) to name the first bad one.

use std::collections::HashMap;
use std::iter::once;

use curve25519_dalek::constants::ED25519_BASEPOINT_POINT;
use curve25519_dalek::edwards::{CompressedEdwardsY, EdwardsPoint};
use curve25519_dalek::scalar::Scalar;
use curve25519_dalek::traits::{IsIdentity, VartimeMultiscalarMul};
use ed25519_dalek::{Signature, SigningKey, VerifyingKey};
use sha2::{Digest, Sha512};

use super::types::EntryHash;

/// Signatures per batch equation.
const BATCH: usize = 2048;
/// Below this many signatures, one thread does all the work.
const PARALLEL_MIN: usize = 512;

/// One signature to check: the signed hash, the key, the signature.
pub(crate) type SigItem = (EntryHash, VerifyingKey, [u8; 64]);

/// Signs entry hashes with `key`, in order.
pub(crate) fn sign_all(hashes: &[EntryHash], key: &SigningKey) -> Vec<[u8; 64]> {
    // A key pair built from our own seed: the seed is 32 bytes, always accepted.
    let Ok(pair) = aws_lc_rs::signature::Ed25519KeyPair::from_seed_unchecked(key.as_bytes()) else {
        return hashes.iter().map(|h| sign_dalek(key, h)).collect();
    };
    let sign = |_at: usize, chunk: &[EntryHash]| -> Vec<[u8; 64]> {
        chunk
            .iter()
            .map(|h| {
                let mut out = [0u8; 64];
                out.copy_from_slice(pair.sign(&h.0).as_ref());
                out
            })
            .collect()
    };
    // A run whose thread panicked leaves the result short, which the caller refuses.
    spread(hashes, 256, sign)
        .into_iter()
        .flat_map(|(_, run)| run.unwrap_or_default())
        .collect()
}

fn sign_dalek(key: &SigningKey, h: &EntryHash) -> [u8; 64] {
    use ed25519_dalek::Signer;
    key.sign(&h.0).to_bytes()
}

/// Checks every signature; `Err(i)` names the first bad one.
pub(crate) fn verify_all(items: &[SigItem]) -> Result<(), usize> {
    let bad = spread(items, PARALLEL_MIN, |at, chunk| {
        verify_chunks(chunk).map(|i| at + i)
    })
    .into_iter()
    // A check that did not finish (its thread panicked) passes nothing.
    .filter_map(|(at, run)| run.unwrap_or(Some(at)))
    .min();
    bad.map_or(Ok(()), Err)
}

/// Runs `work(offset, run)` on `items` split into one run per core (scoped threads), or on
/// all of them here when there are fewer than `min`. Each result comes back in order with its
/// run's offset, `None` if its thread panicked.
fn spread<T: Sync, R: Send>(
    items: &[T],
    min: usize,
    work: impl Fn(usize, &[T]) -> R + Sync,
) -> Vec<(usize, Option<R>)> {
    let threads = threads();
    if items.len() < min || threads < 2 {
        return vec![(0, Some(work(0, items)))];
    }
    let per = items.len().div_ceil(threads);
    let work = &work;
    std::thread::scope(|s| {
        let runs: Vec<_> = items
            .chunks(per)
            .enumerate()
            .map(|(t, c)| (t * per, s.spawn(move || work(t * per, c))))
            .collect();
        runs.into_iter()
            .map(|(at, r)| (at, r.join().ok()))
            .collect()
    })
}

fn threads() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(8)
}

fn verify_chunks(items: &[SigItem]) -> Option<usize> {
    for (c, chunk) in items.chunks(BATCH).enumerate() {
        if !batch_holds(chunk) {
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

/// Whether the batch equation holds for every signature of `chunk`.
#[allow(non_snake_case)]
fn batch_holds(chunk: &[SigItem]) -> bool {
    // h_i, and a transcript of everything checked to derive the z_i from.
    let mut transcript = blake3::Hasher::new_derive_key("harpbridge 2026 ed25519 batch z");
    let mut hrams = Vec::with_capacity(chunk.len());
    for (msg, key, sig) in chunk {
        let wide: [u8; 64] = Sha512::new()
            .chain_update(&sig[..32])
            .chain_update(key.as_bytes())
            .chain_update(msg.0)
            .finalize()
            .into();
        transcript.update(&wide);
        transcript.update(&sig[32..]);
        hrams.push(Scalar::from_bytes_mod_order_wide(&wide));
    }
    let mut z_stream = transcript.finalize_xof();

    let mut B_coefficient = Scalar::ZERO;
    let mut zs = Vec::with_capacity(chunk.len());
    let mut Rs = Vec::with_capacity(chunk.len());
    let mut authors: HashMap<[u8; 32], (EdwardsPoint, Scalar)> = HashMap::new();
    for ((_, key, sig), hram) in chunk.iter().zip(hrams) {
        let mut s = [0u8; 32];
        s.copy_from_slice(&sig[32..]);
        let Some(s) = Option::<Scalar>::from(Scalar::from_canonical_bytes(s)) else {
            return false;
        };
        let mut r = [0u8; 32];
        r.copy_from_slice(&sig[..32]);
        let Some(R) = CompressedEdwardsY(r).decompress() else {
            return false;
        };
        let mut z = [0u8; 16];
        z_stream.fill(&mut z);
        let z = Scalar::from(u128::from_le_bytes(z));
        B_coefficient += z * s;
        authors
            .entry(key.to_bytes())
            .or_insert_with(|| (EdwardsPoint::from(*key), Scalar::ZERO))
            .1 += z * hram;
        zs.push(z);
        Rs.push(R);
    }
    let scalars = once(-B_coefficient)
        .chain(zs)
        .chain(authors.values().map(|a| a.1));
    let points = once(ED25519_BASEPOINT_POINT)
        .chain(Rs)
        .chain(authors.values().map(|a| a.0));
    EdwardsPoint::vartime_multiscalar_mul(scalars, points).is_identity()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn items(keys: &[SigningKey], n: usize) -> Vec<SigItem> {
        (0..n)
            .map(|i| {
                let key = &keys[i % keys.len()];
                let h = EntryHash(*blake3::hash(&i.to_le_bytes()).as_bytes());
                let sig = sign_all(&[h], key)[0];
                (h, key.verifying_key(), sig)
            })
            .collect()
    }

    fn keys(n: u8) -> Vec<SigningKey> {
        (1..=n).map(|i| SigningKey::from_bytes(&[i; 32])).collect()
    }

    #[test]
    fn signatures_are_those_of_ed25519_dalek() {
        let key = SigningKey::from_bytes(&[9; 32]);
        let hashes: Vec<EntryHash> = (0u32..600)
            .map(|i| EntryHash(*blake3::hash(&i.to_le_bytes()).as_bytes()))
            .collect();
        let ours = sign_all(&hashes, &key);
        let theirs: Vec<[u8; 64]> = hashes.iter().map(|h| sign_dalek(&key, h)).collect();
        assert_eq!(ours, theirs);
    }

    #[test]
    fn honest_signatures_by_several_authors_pass() {
        for n in [1, 3, 700, 2 * BATCH + 5] {
            assert_eq!(verify_all(&items(&keys(3), n)), Ok(()), "{n} signatures");
        }
    }

    #[test]
    fn the_first_bad_signature_is_named() {
        let mut all = items(&keys(2), 2 * BATCH + 100);
        for (at, byte) in [(5, 3), (BATCH + 7, 40), (2 * BATCH + 99, 63)] {
            let mut bad = all.clone();
            bad[at].2[byte] ^= 1;
            assert_eq!(verify_all(&bad), Err(at), "flipped byte {byte} of {at}");
        }
        // A signature by another member's key, and a hash it was not made for.
        all[11].1 = keys(3)[2].verifying_key();
        assert_eq!(verify_all(&all), Err(11));
        let mut wrong_hash = items(&keys(1), 40);
        wrong_hash[39].0 .0[0] ^= 1;
        assert_eq!(verify_all(&wrong_hash), Err(39));
    }

    #[test]
    fn a_non_canonical_s_fails_the_batch() {
        // s + ℓ verifies in a lax equation; ed25519 (and verify_strict) refuse it.
        let mut chunk = items(&keys(1), 4);
        let mut bytes = [0u8; 32];
        bytes.copy_from_slice(&chunk[2].2[32..]);
        add_group_order(&mut bytes);
        chunk[2].2[32..].copy_from_slice(&bytes);
        assert!(!batch_holds(&chunk));
        assert_eq!(verify_all(&chunk), Err(2));
    }

    /// Adds ℓ = 2^252 + 27742317777372353535851937790883648493 to a little-endian number.
    fn add_group_order(n: &mut [u8; 32]) {
        const L: [u8; 32] = [
            0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9,
            0xde, 0x14, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
        ];
        let mut carry = 0u16;
        for (a, b) in n.iter_mut().zip(L) {
            let sum = u16::from(*a) + u16::from(b) + carry;
            *a = sum as u8;
            carry = sum >> 8;
        }
    }
}
