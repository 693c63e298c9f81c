//! Property tests for the manifest decoder: manifests come from peers, so any bytes must give
//! a value or an error, never a panic, and whatever decodes must re-encode to the same bytes.

use harpbridge::content::manifest::{HEADER_LEN, MAX_BLOCK_SIZE};
use harpbridge::content::{BlockHash, BlockRef, ChunkerParams, Manifest};
use proptest::prelude::*;

fn arb_manifest() -> impl Strategy<Value = Manifest> {
    let p = ChunkerParams::DEFAULT;
    (
        prop::collection::vec((any::<[u8; 32]>(), p.min..=p.max), 0..40),
        1u32..=p.max,
    )
        .prop_map(move |(mut body, last)| {
            if let Some(l) = body.last_mut() {
                l.1 = last;
            }
            let blocks = body
                .into_iter()
                .map(|(h, size)| BlockRef {
                    hash: BlockHash(h),
                    size,
                })
                .collect();
            Manifest::new(p, blocks)
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
        if let Ok(m) = Manifest::decode(&bytes) {
            prop_assert_eq!(m.encode(), bytes);
        }
    }

    #[test]
    fn random_bytes_after_a_valid_header_never_panic(
        tail in prop::collection::vec(any::<u8>(), 0..400),
        n in any::<u32>(),
        total in any::<u64>(),
    ) {
        let mut bytes = Manifest::new(ChunkerParams::DEFAULT, vec![]).encode();
        bytes.truncate(HEADER_LEN - 12);
        bytes.extend_from_slice(&total.to_be_bytes());
        bytes.extend_from_slice(&n.to_be_bytes());
        bytes.extend_from_slice(&tail);
        if let Ok(m) = Manifest::decode(&bytes) {
            prop_assert_eq!(m.encode(), bytes);
        }
    }

    #[test]
    fn valid_manifests_round_trip(m in arb_manifest()) {
        let enc = m.encode();
        prop_assert_eq!(Manifest::decode(&enc).unwrap(), m);
    }

    #[test]
    fn truncated_manifests_are_errors(m in arb_manifest(), cut in any::<prop::sample::Index>()) {
        let enc = m.encode();
        let at = cut.index(enc.len());
        prop_assert!(Manifest::decode(&enc[..at]).is_err());
    }

    #[test]
    fn mutated_manifests_never_panic(
        m in arb_manifest(),
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
    ) {
        let mut enc = m.encode();
        for (i, v) in flips {
            let at = i.index(enc.len());
            enc[at] = v;
        }
        if let Ok(d) = Manifest::decode(&enc) {
            prop_assert_eq!(d.encode(), enc);
            prop_assert!(d.blocks.iter().all(|b| b.size >= 1 && b.size <= MAX_BLOCK_SIZE));
        }
    }
}

#[test]
fn a_huge_block_count_is_refused_before_allocating() {
    let mut bytes = Manifest::new(ChunkerParams::DEFAULT, vec![]).encode();
    let n = bytes.len() - 4;
    bytes[n..].copy_from_slice(&u32::MAX.to_be_bytes());
    assert!(Manifest::decode(&bytes).is_err());
    bytes[n..].copy_from_slice(&1_000_000u32.to_be_bytes());
    assert!(Manifest::decode(&bytes).is_err());
}
