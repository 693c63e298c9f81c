//! `harpbridge status --data-dir DIR`: what a device keeps in sync, and how far along it is.
//!
//! A running `node --dir` holds the data directory's database, so it writes what `status`
//! shows into `<data dir>/status.json` every [`STATUS_EVERY`] (atomically; removed when it
//! stops), beside the peer list of `peers.json` ([`crate::roles::peer_snapshot`]). Without
//! a running node, `status` reads the database itself: the libraries and their chains,
//! nothing in flight.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use serde::{Deserialize, Serialize};

use super::{shown, DataDirArgs};
use crate::chain::{ContentId, LibraryId};
use crate::engine::writeback::WritebackState;
use crate::engine::Engine;
use crate::p2p::{NodeEvent, NodeHandle};
use crate::roles::peer_snapshot;

/// Where a running `node --dir` keeps its status for `status`.
pub const STATUS_FILE: &str = "status.json";
/// How often it is rewritten.
pub const STATUS_EVERY: Duration = Duration::from_secs(2);

/// Arguments of `harpbridge status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub data_dir: DataDirArgs,
    /// Print the status as one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// What a running `node --dir` is doing.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Status {
    /// When it was written, ms since the epoch.
    pub written_ms: u64,
    pub libraries: Vec<LibraryRow>,
    /// Changes seen in the folders and not recorded yet.
    pub to_record: u64,
    /// Peers' changes not written into the folders yet, and of those, versions whose
    /// content no peer could send yet.
    pub to_write: u64,
    pub waiting_for_content: u64,
    /// Why writing into the folders fails, if it does.
    pub write_error: Option<String>,
    /// Versions being fetched from peers now.
    pub transfers: Vec<TransferRow>,
}

/// One library kept in a folder.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LibraryRow {
    pub id: String,
    pub folder: String,
    pub entries: u64,
    pub files: u64,
}

/// One version being fetched.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TransferRow {
    pub library: String,
    pub path: String,
    pub bytes_done: u64,
    pub bytes_total: u64,
}

/// Rewrites [`STATUS_FILE`] until the node stops; removes it then.
pub fn start_writer(engine: Engine, node: NodeHandle, data_dir: PathBuf) {
    tokio::spawn(async move {
        let mut events = node.subscribe();
        let mut transfers: HashMap<ContentId, crate::p2p::TransferProgress> = HashMap::new();
        let mut tick = tokio::time::interval(STATUS_EVERY);
        loop {
            tokio::select! {
                event = events.recv() => match event {
                    Ok(NodeEvent::Transfer(t)) if t.finished => { transfers.remove(&t.content); }
                    Ok(NodeEvent::Transfer(t)) => { transfers.insert(t.content, t); }
                    Ok(_) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                },
                _ = tick.tick() => {
                    let status = collect(&engine, transfers.values());
                    if let Err(e) = write(&data_dir, &status) {
                        tracing::debug!(error = %e, "cannot write status.json");
                    }
                }
            }
        }
        let _ = std::fs::remove_file(data_dir.join(STATUS_FILE));
    });
}

fn collect<'a>(
    engine: &Engine,
    transfers: impl Iterator<Item = &'a crate::p2p::TransferProgress>,
) -> Status {
    let libraries = engine
        .libraries()
        .list()
        .into_iter()
        .map(|l| {
            let tree = engine.tree(&l.id).ok();
            LibraryRow {
                id: l.id.to_hex(),
                folder: format!("/{}", l.folder),
                entries: engine.chain().len(&l.id).unwrap_or(0) as u64,
                files: tree.map_or(0, |t| {
                    t.items
                        .values()
                        .filter(|i| matches!(i, crate::chain::TreeItem::File { .. }))
                        .count() as u64
                }),
            }
        })
        .collect();
    let (to_write, waiting_for_content, write_error) =
        match &*crate::locks::lock(&engine.status().writeback) {
            WritebackState::Ok {
                pending,
                waiting_for_content,
            } => (*pending, *waiting_for_content, None),
            WritebackState::Retrying { error, .. } | WritebackState::Unauthorized { error, .. } => {
                (0, 0, Some(error.clone()))
            }
        };
    Status {
        written_ms: crate::chain::now_ms(),
        libraries,
        to_record: engine.queue().len().unwrap_or(0),
        to_write,
        waiting_for_content,
        write_error,
        transfers: transfers
            .map(|t| TransferRow {
                library: t.library.to_hex(),
                path: path_of(engine, &t.library, &t.content),
                bytes_done: t.bytes_done,
                bytes_total: t.bytes_total,
            })
            .collect(),
    }
}

/// The path of a version in its library's tree, else its id.
fn path_of(engine: &Engine, library: &LibraryId, content: &ContentId) -> String {
    engine
        .tree(library)
        .ok()
        .and_then(|t| {
            t.items.iter().find_map(|(p, i)| match i {
                crate::chain::TreeItem::File { content: c, .. } if c == content => {
                    Some(p.as_str().to_owned())
                }
                _ => None,
            })
        })
        .unwrap_or_else(|| content.to_hex())
}

fn write(data_dir: &Path, status: &Status) -> std::io::Result<()> {
    let bytes = serde_json::to_vec(status).map_err(std::io::Error::other)?;
    let temp = data_dir.join(format!("{STATUS_FILE}.tmp"));
    std::fs::write(&temp, bytes)?;
    std::fs::rename(temp, data_dir.join(STATUS_FILE))
}

/// Runs `status`. Exit 1 if the data directory cannot be read.
pub fn run(args: StatusArgs) -> ExitCode {
    let data_dir = match args.data_dir.resolve() {
        Ok(dir) => dir.to_path_buf(),
        Err(code) => return code,
    };
    super::exit_code(show(&data_dir, args.json))
}

fn show(data_dir: &Path, json: bool) -> anyhow::Result<()> {
    let running = match std::fs::read(data_dir.join(STATUS_FILE)) {
        Ok(bytes) => Some(
            serde_json::from_slice::<Status>(&bytes)
                .with_context(|| format!("reading {}", data_dir.join(STATUS_FILE).display()))?,
        ),
        Err(_) => None,
    };
    let status = match &running {
        Some(s) => s.clone(),
        None => offline(data_dir)?,
    };
    let peers = peer_snapshot::read(data_dir)?;
    if json {
        let value = serde_json::json!({
            "running": running.is_some(),
            "status": status,
            "peers": peers.map(|p| p.peers),
        });
        println!("{value}");
        return Ok(());
    }
    println!(
        "{}",
        if running.is_some() {
            "node: running"
        } else {
            "node: not running (the last state of the database)"
        }
    );
    for l in &status.libraries {
        println!(
            "library {} {} ({} files, {} entries)",
            l.id,
            shown::text(&l.folder),
            l.files,
            l.entries
        );
    }
    if running.is_some() {
        let in_sync = status.to_record == 0 && status.to_write == 0 && status.transfers.is_empty();
        println!(
            "{}: {} to record, {} to write ({} waiting for content from peers)",
            if in_sync { "in sync" } else { "out of sync" },
            status.to_record,
            status.to_write,
            status.waiting_for_content
        );
        if let Some(e) = &status.write_error {
            println!("writing fails: {}", shown::text(e));
        }
        for t in &status.transfers {
            println!(
                "fetching {} {}/{} bytes",
                shown::text(&t.path),
                t.bytes_done,
                t.bytes_total
            );
        }
    }
    if let Some(snapshot) = peers {
        for p in snapshot.peers {
            println!(
                "peer {} {} {}{}",
                p.peer,
                if p.lan { "LAN" } else { "WAN" },
                if p.connected {
                    "connected"
                } else {
                    "not connected"
                },
                if p.trusted { "" } else { " (not a member)" }
            );
        }
    }
    Ok(())
}

/// The libraries as the database has them (no node runs).
fn offline(data_dir: &Path) -> anyhow::Result<Status> {
    let db = crate::db::open(data_dir)?;
    let chain = crate::chain::ChainStore::open(db.clone()).context("the chain does not verify")?;
    let libraries = crate::engine::libraries::Libraries::open(db)?;
    Ok(Status {
        libraries: libraries
            .list()
            .into_iter()
            .map(|l| LibraryRow {
                id: l.id.to_hex(),
                folder: format!("/{}", l.folder),
                entries: chain.len(&l.id).unwrap_or(0) as u64,
                files: chain.tree(&l.id).map_or(0, |t| {
                    t.items
                        .values()
                        .filter(|i| matches!(i, crate::chain::TreeItem::File { .. }))
                        .count() as u64
                }),
            })
            .collect(),
        ..Status::default()
    })
}
