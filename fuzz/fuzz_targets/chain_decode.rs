//! The chain entry decoder on arbitrary bytes: it must return an error or an entry, never
//! panic, and whatever it accepts must re-encode to exactly the same bytes (one encoding
//! per entry). The path rules get the same bytes as a string.
//!
//! The codec's source files are compiled here directly (`#[path]`), the same files
//! `harpbridge::chain` is built from, so the fuzz build does not drag in the whole server.
#![no_main]

#[allow(dead_code, unused_imports)]
#[path = "../../src/chain"]
mod chain {
    pub mod codec;
    pub mod entry;
    pub mod error;
    pub mod path;
    pub mod types;
}

/// The byte cursor the codec reads with (`crate::cursor` in the codec's source).
#[allow(dead_code)]
#[path = "../../src/cursor.rs"]
mod cursor;

use chain::entry::Entry;
use chain::path::ChainPath;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(e) = Entry::from_bytes(data) {
        assert_eq!(e.to_bytes(), data, "accepted a non-canonical encoding");
        assert_eq!(Entry::from_bytes_expecting(data, &e.hash()).ok(), Some(e));
    }
    if let Ok(s) = std::str::from_utf8(data) {
        if let Ok(p) = ChainPath::parse_canonical(s) {
            assert_eq!(ChainPath::new(s).ok(), Some(p));
        }
    }
});
