//! harpbridge: the Harp protocol (private, real-time, peer-to-peer file sync between
//! trusted devices) packaged as a Nextcloud AppAPI External App.
//!
//! One binary, several roles (see `src/main.rs`). The modules follow the data flow:
//!
//! - [`config`]: every setting, read once at start-up from AppAPI's environment and flags.
//! - [`appapi`]: the Nextcloud AppAPI contract: authentication, lifecycle, the OCS client.
//! - [`web`]: the axum router that AppAPI, HaRP and the panel talk to.
//! - [`listener`]: where the router listens (TCP or HaRP's unix socket) and how it stops.
//! - [`logging`]: tracing set-up, readable or JSON.

pub mod appapi;
pub mod appinfo;
pub mod backend;
pub mod chain;
pub mod cli;
pub mod config;
pub mod content;
pub mod db;
pub mod engine;
pub mod identity;
pub mod listener;
pub mod logging;
pub mod owner_only;
pub mod p2p;
pub mod roles;
pub mod web;
