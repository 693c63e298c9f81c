//! The chain entry decoder on arbitrary bytes: it must return an error or an entry, never
//! panic, and whatever it accepts must re-encode to exactly the same bytes (one encoding
//! per entry). The path rules get the same bytes as a string.
//!
//! The codec is harpbridge's own source (`harpbridge_fuzz::chain`, see fuzz/src/lib.rs).
#![no_main]

use harpbridge_fuzz::chain::entry::Entry;
use harpbridge_fuzz::chain::path::ChainPath;
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
