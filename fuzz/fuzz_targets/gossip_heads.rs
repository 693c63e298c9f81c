//! Gossip head announcements (`decode_heads`, src/p2p/gossip/heads.rs) on arbitrary bytes: an
//! error or 1..=MAX_HEADS heads, never a panic, and what is accepted re-encodes to exactly
//! the same bytes.
#![no_main]

use harpbridge_fuzz::p2p::gossip::{decode_heads, encode_heads};
use harpbridge_fuzz::p2p::message::MAX_HEADS;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(heads) = decode_heads(data) {
        assert!(!heads.is_empty() && heads.len() <= MAX_HEADS);
        assert_eq!(
            encode_heads(&heads),
            data,
            "accepted a non-canonical encoding"
        );
    }
});
