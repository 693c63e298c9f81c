//! harpbridge: the Harp protocol (private, real-time, peer-to-peer file sync between
//! trusted devices) packaged as a Nextcloud AppAPI External App, and the same engine for
//! devices without Nextcloud.
//!
//! One binary, several roles ([`cli`]). The modules, from the bottom up; each uses only
//! those above it in this list (`tests/layers.rs` checks it), and data flows one way each
//! direction: Nextcloud → engine → chain/content → swarm, and swarm → engine → Nextcloud.
//! See `docs/architecture.md` for the picture.
//!
//! - [`db`]: the one redb database of a data directory; a damaged file is an error, not a crash.
//! - [`owner_only`]: files and folders only their owner can read.
//! - [`clock`], [`locks`], [`cursor`]: the time as everything records it; a mutex guard
//!   that survives a panicked holder; the byte cursor every wire decoder reads with.
//! - [`chain`]: the signed SHA3-256 hash chain of file changes: format, DAG, fold to a tree.
//! - [`identity`]: the device's ed25519 key and PeerId.
//! - [`content`]: content-defined chunks, manifests and the block store.
//! - [`p2p`]: the libp2p swarm: discovery, `/harp/sync/1` for chains, `/harp/blocks/2` for
//!   content, trust and LAN/WAN classes.
//! - [`roles`]: what a device does with a data directory when there is no Nextcloud: the
//!   office cache's prefetcher, importing a tree, the peers snapshot.
//! - [`appinfo`]: `appinfo/info.xml`, the manifest AppAPI reads, compiled in.
//! - [`config`]: every setting of `serve`, read once from AppAPI's environment and flags.
//! - [`listener`], [`logging`]: where the HTTP server listens (TCP, HaRP's socket); tracing.
//! - [`appapi`]: the AppAPI contract: authentication both ways, the OCS client, webhooks
//!   and their file events, the top-menu page.
//! - [`backend`]: where a library's files live, behind one trait: Nextcloud over WebDAV,
//!   or a local folder.
//! - [`engine`]: backend changes → chain entries and content; peers' entries → the
//!   backend; reports what it does as an event stream.
//! - [`link`]: the engine and the swarm wired together (new entries both ways, content for
//!   write-back), as `serve` and `node --dir` run them.
//! - [`web`]: the axum router AppAPI, HaRP and the panel talk to; renders the engine's and
//!   the swarm's events for the panel.
//! - [`cli`]: argument parsing and printing for each role; calls into the rest.

pub mod appapi;
pub mod appinfo;
pub mod backend;
pub mod chain;
pub mod cli;
pub mod clock;
pub mod config;
pub mod content;
pub mod cursor;
pub mod db;
pub mod engine;
pub mod identity;
pub mod link;
pub mod listener;
pub mod locks;
pub mod logging;
pub mod owner_only;
pub mod p2p;
pub mod roles;
pub mod web;
