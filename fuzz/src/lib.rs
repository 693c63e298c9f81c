//! harpbridge's peer-facing decoders, compiled here from harpbridge's own source files
//! (`#[path]`), the same files the server is built from, so a fuzz build compiles the codecs
//! and their few dependencies, not the whole server (tokio, axum, reqwest, rustls, QUIC …),
//! and the CI run stays short.
//!
//! The modules mirror `harpbridge`'s paths (`crate::chain`, `crate::p2p::…`) so the source
//! files compile unchanged. Where a file names something this build leaves out, a small
//! stand-in below takes its place: keep those in step with the files they stand for.

#![allow(dead_code, unused_imports)]

use std::alloc::{GlobalAlloc, Layout, System};

/// The chain's entry codec (harpbridge `src/chain/`), with the re-exports the p2p files use.
#[path = "../../src/chain"]
pub mod chain {
    pub mod codec;
    pub mod entry;
    pub mod error;
    pub mod path;
    pub mod types;

    pub use entry::Entry;
    pub use types::{ContentId, DeviceKey, EntryHash, LibraryId};
}

/// The byte cursor every decoder reads with (harpbridge `src/cursor.rs`).
#[path = "../../src/cursor.rs"]
pub mod cursor;

/// Stand-in for harpbridge's `content` module: only the manifest bounds `/harp/blocks/1`
/// checks lengths against (the real module needs blake3 and the store). The same lines as
/// `src/content/manifest.rs` (`fuzz_stand_ins_match_the_sources` in tests/p2p_wire_props.rs
/// checks).
pub mod content {
    pub use manifest::{MAX_BLOCK_SIZE, MAX_MANIFEST_LEN};

    pub mod manifest {
        pub const MAX_BLOCK_SIZE: u32 = 16 * 1024 * 1024;
        pub const MAX_BLOCKS: u32 = 4 * 1024 * 1024;
        pub const HEADER_LEN: usize = 4 + 1 + 1 + (1 + 1 + 4 + 4 + 4) + 8 + 4;
        pub const BLOCK_ENTRY_LEN: usize = 32 + 4;
        pub const MAX_MANIFEST_LEN: usize = HEADER_LEN + MAX_BLOCKS as usize * BLOCK_ENTRY_LEN;
    }
}

/// The swarm's wire formats (harpbridge `src/p2p/`): `/harp/sync/1` messages and framing,
/// `/harp/blocks/1` messages, gossip head announcements.
#[path = "../../src/p2p"]
pub mod p2p {
    pub mod codec;
    pub mod message;

    /// Only the message format (`gossip/heads.rs`): `gossip.rs` itself is the gossipsub
    /// behaviour and topics, and gossipsub would double this build.
    pub mod gossip {
        pub mod heads;
        pub use heads::{decode_heads, encode_heads, GossipError, MAX_MESSAGE_BYTES};
    }

    pub mod blocks {
        pub mod wire;
    }

    /// Stand-in for `src/p2p/trust.rs` (which needs the chain store): only `Refusal`, the
    /// reason code both protocols carry. The codecs match on it exhaustively, so a variant
    /// added there fails this build until it is added here.
    pub mod trust {
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum Refusal {
            NotAMember,
            NotADevice,
            Internal,
        }
    }
}

/// No single allocation may exceed this, whatever length a peer claims: the largest a
/// decoder makes by design is one `/harp/sync/1` response frame (4 MiB).
pub const MAX_ALLOCATION: usize = 16 * 1024 * 1024;

/// The system allocator, aborting on an allocation over [`MAX_ALLOCATION`]: libFuzzer
/// reports the abort as a crash and saves the input. (`-malloc_limit_mb` needs a sanitizer's
/// allocator hooks; the CI build has no sanitizer.) Every target links it.
pub struct Capped;

#[global_allocator]
static ALLOCATOR: Capped = Capped;

fn over_limit() -> ! {
    // Unbuffered, no allocation.
    let _ = std::io::Write::write_all(
        &mut std::io::stderr(),
        b"an allocation over MAX_ALLOCATION: a claimed length was trusted\n",
    );
    std::process::abort()
}

unsafe impl GlobalAlloc for Capped {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.size() > MAX_ALLOCATION {
            over_limit();
        }
        System.alloc(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if layout.size() > MAX_ALLOCATION {
            over_limit();
        }
        System.alloc_zeroed(layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size > MAX_ALLOCATION {
            over_limit();
        }
        System.realloc(ptr, layout, new_size)
    }
}
