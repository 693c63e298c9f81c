//! The peer list a running `node` or `cache` keeps in `<data dir>/peers.json`.
//!
//! A running process holds the data directory's database, so `harpbridge peers list` cannot
//! start a swarm of its own there to look around. Instead the running process writes what
//! its swarm knows (trusted or only discovered, LAN or WAN, round trip, block bytes in and
//! out per peer since it started) every [`SNAPSHOT_EVERY`], atomically, and removes the file
//! when it stops, since the list is only true while it runs. `peers list` reads it with
//! [`read`]. (`serve` writes none yet.)

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::p2p::{NodeHandle, PeerInfo};

/// Where a running `node` or `cache` keeps its peer list for `peers list` (the database is
/// locked while it runs). Rewritten every [`SNAPSHOT_EVERY`], atomically.
pub const SNAPSHOT_FILE: &str = "peers.json";
/// How often [`SnapshotWriter`] rewrites [`SNAPSHOT_FILE`].
pub const SNAPSHOT_EVERY: Duration = Duration::from_secs(5);
/// A snapshot larger than this is refused (it holds one short row per peer).
const MAX_SNAPSHOT_LEN: usize = 16 * 1024 * 1024;

/// The role of a snapshot that names none.
fn cache_role() -> String {
    "cache".to_string()
}

/// The peer list a running `node` or `cache` writes to [`SNAPSHOT_FILE`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// What runs: `node` or `cache` (files written before this field existed came from a
    /// cache).
    #[serde(default = "cache_role")]
    pub role: String,
    /// The running node's PeerId.
    pub peer_id: String,
    /// When it was written, ms since the epoch.
    pub written_ms: u64,
    /// Its peers.
    pub peers: Vec<PeerRow>,
}

/// One peer of a [`Snapshot`] (one line of `peers list`): who, trusted or only discovered,
/// LAN or WAN, connected, the latest ping round trip, block bytes received from it and sent
/// to it since the node started, the libraries shared with it, its addresses.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PeerRow {
    /// Its PeerId.
    pub peer: String,
    /// A member of one of our libraries.
    pub trusted: bool,
    /// Counted as LAN (found by mDNS, or on a subnet of this host).
    pub lan: bool,
    /// At least one connection is open.
    pub connected: bool,
    /// The latest ping round trip in ms.
    pub rtt_ms: Option<f64>,
    /// Block bytes received from it.
    pub bytes_in: u64,
    /// Block bytes sent to it.
    pub bytes_out: u64,
    /// Libraries held here of which it is a member.
    pub libraries: usize,
    /// Its addresses.
    pub addresses: Vec<String>,
}

impl From<&PeerInfo> for PeerRow {
    fn from(p: &PeerInfo) -> Self {
        PeerRow {
            peer: p.peer.to_string(),
            trusted: p.trusted(),
            lan: p.lan,
            connected: p.connected,
            rtt_ms: p.rtt.map(|d| d.as_secs_f64() * 1e3),
            bytes_in: p.bytes_in,
            bytes_out: p.bytes_out,
            libraries: p.libraries.len(),
            addresses: p.addresses.iter().map(|a| a.to_string()).collect(),
        }
    }
}

/// The snapshot in `data_dir`: `None` when there is none to read (no process keeps one
/// there), an error when the file is there but too large or not a snapshot.
pub fn read(data_dir: &Path) -> anyhow::Result<Option<Snapshot>> {
    let path = data_dir.join(SNAPSHOT_FILE);
    let Ok(bytes) = std::fs::read(&path) else {
        return Ok(None);
    };
    if bytes.len() > MAX_SNAPSHOT_LEN {
        bail!("{} is larger than {MAX_SNAPSHOT_LEN} bytes", path.display());
    }
    let snapshot =
        serde_json::from_slice(&bytes).with_context(|| format!("reading {}", path.display()))?;
    Ok(Some(snapshot))
}

/// Writes `peers` as `data_dir`'s [`SNAPSHOT_FILE`] (a temporary file renamed over it, so
/// a reader never sees half of one).
fn write(data_dir: &Path, role: &str, peer_id: &str, peers: &[PeerInfo]) -> std::io::Result<()> {
    let snapshot = Snapshot {
        role: role.to_string(),
        peer_id: peer_id.to_string(),
        written_ms: crate::chain::now_ms(),
        peers: peers.iter().map(PeerRow::from).collect(),
    };
    let bytes = serde_json::to_vec_pretty(&snapshot).map_err(std::io::Error::other)?;
    let tmp = data_dir.join(format!("{SNAPSHOT_FILE}.tmp"));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, data_dir.join(SNAPSHOT_FILE))
}

/// Keeps `<data dir>/`[`SNAPSHOT_FILE`] current while a `node` or `cache` holds the
/// database: rewritten every [`SNAPSHOT_EVERY`], removed by [`SnapshotWriter::stop`] (the
/// list is only true while the process runs).
pub struct SnapshotWriter {
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl SnapshotWriter {
    /// Starts writing `node`'s peer list into `data_dir`; `role` (`node`, `cache`) is what
    /// `peers list` names the running process.
    pub fn start(node: NodeHandle, data_dir: PathBuf, role: &'static str) -> Self {
        let (stop, mut stopped) = oneshot::channel();
        let task = tokio::spawn(async move {
            let mut every = tokio::time::interval(SNAPSHOT_EVERY);
            loop {
                tokio::select! {
                    _ = &mut stopped => break,
                    _ = every.tick() => {}
                }
                let Ok(peers) = node.peers().await else { break };
                let dir = data_dir.clone();
                let me = node.peer_id().to_string();
                // Awaited even when stopping, so no write lands after the removal below.
                let written =
                    tokio::task::spawn_blocking(move || write(&dir, role, &me, &peers)).await;
                if let Ok(Err(e)) = written {
                    tracing::warn!(error = %e, "cannot write the peer list snapshot");
                }
            }
            let _ = std::fs::remove_file(data_dir.join(SNAPSHOT_FILE));
        });
        SnapshotWriter { stop, task }
    }

    /// Stops writing and removes the file.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}
