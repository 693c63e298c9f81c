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
