//! The command-line roles of the `harpbridge` binary, one file each.
//!
//! `main.rs` only parses arguments and hands over to one of these.

pub mod cache;
pub mod chain;
pub mod doctor;
pub mod id;
pub mod import;
pub mod manifest;
pub mod node;
pub mod pair;
pub mod peers;
pub mod serve;

use std::process::ExitCode;

/// Parses a `--peer` address (see [`crate::p2p::config::dialable`]).
pub fn peer_addr(s: &str) -> Result<libp2p::Multiaddr, String> {
    let addr: libp2p::Multiaddr = s.parse().map_err(|e| format!("{e}"))?;
    crate::p2p::config::dialable(&addr)?;
    Ok(addr)
}

/// Runs `job` on a new tokio runtime until it ends: exit 0, or exit 1 with the error's
/// chain on one stderr line (the roles that run until a signal: `node`, `cache`).
pub fn run_async(job: impl std::future::Future<Output = anyhow::Result<()>>) -> ExitCode {
    use anyhow::Context;
    let result = tokio::runtime::Runtime::new()
        .context("starting the tokio runtime")
        .and_then(|rt| rt.block_on(job));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("harpbridge: {e:#}");
            ExitCode::FAILURE
        }
    }
}
