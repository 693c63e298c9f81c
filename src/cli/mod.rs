//! The command-line roles of the `harpbridge` binary, one file each.
//!
//! `main.rs` only parses arguments and hands over to one of these.

pub mod cache;
pub mod chain;
pub mod id;
pub mod import;
pub mod manifest;
pub mod node;
pub mod pair;
pub mod peers;
pub mod serve;

/// Parses a `--peer` address (see [`crate::p2p::config::dialable`]).
pub fn peer_addr(s: &str) -> Result<libp2p::Multiaddr, String> {
    let addr: libp2p::Multiaddr = s.parse().map_err(|e| format!("{e}"))?;
    crate::p2p::config::dialable(&addr)?;
    Ok(addr)
}
