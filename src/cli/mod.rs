//! The command-line roles of the `harpbridge` binary, one file each.
//!
//! `main.rs` only parses arguments and hands over to one of these; each holds its clap
//! arguments, calls into the library (what a role *does* lives in [`crate::roles`], the
//! chain, the content store and the swarm) and prints what it reports.

pub mod cache;
pub mod chain;
pub mod doctor;
pub mod folder;
pub mod id;
pub mod import;
pub mod limits;
pub mod manifest;
pub mod node;
pub mod offers;
pub mod pair;
pub mod peers;
pub mod progress;
pub mod serve;
pub mod shown;
pub mod status;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Arg, Args};

/// The id of the `--data-dir` argument, for a command that adjusts it with `mut_arg` (see
/// [`DataDirArgs`]).
pub const DATA_DIR: &str = "data_dir";

/// `--data-dir DIR` (or `APP_PERSISTENT_STORAGE`): the directory holding this device's key,
/// database and blocks. Every command that opens one flattens this.
///
/// Required, so clap refuses a command line without it. A command that can run without one
/// (`pair`, which says so itself), or that takes it before or after its subcommand (`chain`,
/// `peers`: a global argument cannot be required, and `chain bench` needs none), loosens it
/// with `#[command(mut_arg(DATA_DIR, DataDirArgs::optional))]` (or `::global`), and
/// [`DataDirArgs::resolve`] then gives the usual error.
#[derive(Debug, Clone, Args)]
pub struct DataDirArgs {
    /// The data directory (holds identity.key and harpbridge.redb).
    #[arg(
        id = DATA_DIR,
        long = "data-dir",
        env = "APP_PERSISTENT_STORAGE",
        value_name = "DIR",
        required = true
    )]
    path: Option<PathBuf>,
}

impl DataDirArgs {
    /// The data directory, or (without one) the error line on stderr and exit code 2.
    pub fn resolve(&self) -> Result<&Path, ExitCode> {
        self.path.as_deref().ok_or_else(|| {
            eprintln!("harpbridge: --data-dir (or APP_PERSISTENT_STORAGE) is required");
            ExitCode::from(2)
        })
    }

    /// For `mut_arg`: the command line parses without one.
    pub fn optional(arg: Arg) -> Arg {
        arg.required(false)
    }

    /// For `mut_arg`: optional, and accepted after the command's subcommand too.
    pub fn global(arg: Arg) -> Arg {
        arg.required(false).global(true)
    }
}

/// Parses a `--peer` address (see [`crate::p2p::config::dialable`]).
pub fn peer_addr(s: &str) -> Result<libp2p::Multiaddr, String> {
    let addr: libp2p::Multiaddr = s.parse().map_err(|e| format!("{e}"))?;
    crate::p2p::config::dialable(&addr)?;
    Ok(addr)
}

/// Saves the chain's checkpoint at a clean close, so the next start verifies only what is
/// stored after it (see `chain::checkpoint`). A failure costs only the next start's time.
pub async fn save_checkpoint(chain: crate::chain::ChainStore) {
    let t = std::time::Instant::now();
    match tokio::task::spawn_blocking(move || chain.checkpoint()).await {
        Ok(Ok(0)) => {}
        Ok(Ok(n)) => tracing::info!(
            libraries = n,
            ms = t.elapsed().as_millis() as u64,
            "chain checkpoint saved"
        ),
        Ok(Err(e)) => tracing::warn!(error = %e, "chain checkpoint not saved"),
        Err(e) => tracing::warn!(error = %e, "chain checkpoint not saved"),
    }
}

/// The exit code of a finished command: 0, or 1 with the error's chain on one stderr line.
pub fn exit_code(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("harpbridge: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs `job` on a new tokio runtime until it ends: exit 0, or exit 1 with the error's
/// chain on one stderr line (the roles that run until a signal: `node`, `cache`).
pub fn run_async(job: impl std::future::Future<Output = anyhow::Result<()>>) -> ExitCode {
    use anyhow::Context;
    let result = tokio::runtime::Runtime::new()
        .context("starting the tokio runtime")
        .and_then(|rt| rt.block_on(job));
    exit_code(result)
}
