//! Test support: a test double of Nextcloud + AppAPI, and a harness that runs the real
//! `harpbridge` binary against it.
//!
//! The double speaks what `shared/fixtures/nextcloud-33/` recorded from a real
//! Nextcloud 33 with AppAPI 33: the same headers on AppAPI's calls to the ExApp, the
//! same OCS envelopes (v1 and v2), the same errors (wrong secret → 401 `997`, missing
//! `OCS-APIRequest` → 412 on core routes, brute-force lock-out → 429), and the same
//! lifecycle sequence, including `PUT /enabled` run *inside* the ExApp's status call.
//!
//! - [`nextcloud`]: the HTTP side of the double (OCS endpoints, recorded traffic).
//! - [`occ`]: AppAPI's occ commands (register, enable, disable, unregister), which drive
//!   the ExApp the way AppAPI does.
//! - [`exapp`]: spawns `harpbridge serve`, captures its logs, checks them for secrets.
//! - [`ocs`]: OCS envelopes and errors.
//! - [`raw_http`]: a minimal HTTP/1.1 client for unix sockets.
//! - [`files`], [`webdav`]: users' files and WebDAV over them.
//! - [`webhooks`]: webhook_listeners: registration API, jobs, delivery through AppAPI.
//! - [`actions`]: what a user does in Nextcloud's web UI (writes, moves, deletes), which
//!   fire the same events as WebDAV.
//! - [`real_nc`]: the real Nextcloud and HaRP of `../shared/` (end-to-end tests).
//! - [`swarm`]: in-process swarm nodes on loopback (the offices that dial serve).
//! - [`tmpfs`]: a small filesystem to fill (a full disk).
//!
//! `cli.rs` (the `harpbridge` binary as a process), `swarm.rs` and `tmpfs.rs` stand on their own: tests
//! that need nothing else include them by `#[path]` without this module.
#![allow(dead_code, unused_imports, clippy::result_large_err)]

pub mod actions;
pub mod cli;
pub mod exapp;
pub mod files;
pub mod nextcloud;
pub mod occ;
pub mod ocs;
pub mod raw_http;
pub mod real_nc;
pub mod swarm;
pub mod tmpfs;
pub mod webdav;
pub mod webhooks;

pub use exapp::{ExApp, ExAppOptions};
pub use nextcloud::FakeNextcloud;
pub use occ::ExAppSpec;

/// The AppAPI version the fixtures were captured with.
pub const AA_VERSION: &str = "33.0.0";
/// Nextcloud's crawler user agent on AppAPI → ExApp calls.
pub const NC_USER_AGENT: &str = "Nextcloud-Server-Crawler/33.0.2";
