//! What a device does with its data directory when no Nextcloud is beside it, apart from
//! running the swarm itself ([`crate::p2p`]). The `node`, `cache` and `import` commands in
//! `src/cli/` parse their arguments, call these and print what they report.
//!
//! - [`cache`]: the office cache's prefetcher, which fetches the content every library's
//!   tree names before anyone asks for it.
//! - [`import`]: seeding a library from a local folder.
//! - [`peer_snapshot`]: the peer list a running `node` or `cache` keeps on disk, since it
//!   holds the database that `peers list` would otherwise open.

pub mod cache;
pub mod import;
pub mod peer_snapshot;
