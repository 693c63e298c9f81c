//! `harpbridge node --dir PATH`: keep local folders in two-way sync with libraries, on the
//! same engine `serve` runs for Nextcloud, with a [`LocalDir`] backend and no Nextcloud.
//!
//! ```text
//!   folder ─▶ watcher (settled paths) ─▶ Engine::folder_changed ─▶ queue ─▶ chain entries
//!   start-up and periodic rescans (catch-up) ───────────────────────────┘
//!   peers' entries ─▶ link ─▶ write-back ─▶ LocalDir (temp file, fsync, rename; trash)
//! ```
//!
//! Each `--dir` is one library: the one this data directory already keeps there, else the
//! `--library` given for it (joined: a member's offer of it is accepted, and every file of
//! it is written into the folder), else a new one made from the folder. `--pair` makes
//! devices members of the folders' libraries. Libraries of the data directory without a
//! `--dir` are kept as chains only, as a plain `node` does.
//!
//! Peers are served the folders' versions from the files themselves (each block read at its
//! offset and checked against its BLAKE3 hash before it is sent), so the block store keeps
//! only what waits to be written into the folder plus a bounded cache (`--cache-mib`): a
//! folder of N bytes costs N and the cache on disk, not 2 N. A file edited since it was
//! hashed fails the check and is not served; the watcher records its new version.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use libp2p::PeerId;

use super::progress::Progress;
use super::shown;
use crate::backend::local::{trash, watch, LocalDir};
use crate::chain::DeviceKey;
use crate::chain::{ContentId, LibraryId, Op};
use crate::engine::events::{EngineEvent, EventSink, Events};
use crate::engine::libraries::Library;
use crate::engine::{Engine, EngineOptions};

/// How often each folder's trash is swept of what is older than `--trash-days`.
const TRASH_SWEEP: Duration = Duration::from_secs(6 * 3600);

/// The owner recorded for local folders' libraries (a local folder has no user id).
pub const LOCAL_OWNER: &str = "local";

/// How `node --dir` keeps its folders.
#[derive(Debug, Clone)]
pub struct FolderOptions {
    /// The folders, each with the library it should be (if it is to join one).
    pub folders: Vec<(PathBuf, Option<LibraryId>)>,
    /// Devices to make members of every folder's library.
    pub pair: Vec<PeerId>,
    /// How long a changing file must be quiet before it is read.
    pub settle: Duration,
    /// How often every folder is rescanned, watcher or not.
    pub scan_interval: Duration,
    /// How long the trash keeps what syncs replaced or deleted.
    pub trash_days: u64,
    /// This device's name in the libraries it creates.
    pub device_name: String,
    /// Bytes of blocks kept beyond what waits to be written (the folders' files serve
    /// the rest).
    pub cache_limit: u64,
}

/// The running folders: the engine and one watch per folder.
pub struct Folders {
    pub engine: Engine,
    /// The folders' libraries, in `--dir` order.
    pub libraries: Vec<(PathBuf, LibraryId)>,
    /// Libraries to join when a member offers them.
    pub joining: Vec<LibraryId>,
    _watches: Vec<watch::FolderWatch>,
}

impl Folders {
    /// What the swarm serves peers from the folders' files ([`crate::p2p::blocks::PlacedFiles`]).
    pub fn placed_files(&self) -> Arc<dyn crate::p2p::blocks::PlacedFiles> {
        Arc::new(FolderFiles {
            engine: self.engine.clone(),
            folders: self
                .libraries
                .iter()
                .map(|(d, id)| (*id, d.clone()))
                .collect(),
        })
    }
}

/// Versions the folders hold, as files the swarm may serve blocks from.
struct FolderFiles {
    engine: Engine,
    folders: std::collections::HashMap<LibraryId, PathBuf>,
}

impl crate::p2p::blocks::PlacedFiles for FolderFiles {
    fn file_of(&self, library: &LibraryId, content: &ContentId) -> Option<PathBuf> {
        let folder = self.folders.get(library)?;
        let rel = self.engine.placed_path(library, content)?;
        Some(folder.join(rel))
    }
}

/// Prints one line per chain entry: recorded here, or received from a peer.
struct Printer {
    me: DeviceKey,
    out: Arc<Progress>,
}

impl EventSink for Printer {
    fn emit(&self, event: EngineEvent) {
        if let EngineEvent::EntryAppended { entry, .. } = event {
            let meta = entry.meta();
            if matches!(meta.op, Op::Merge) {
                return;
            }
            let who = if meta.author == self.me {
                "recorded".to_owned()
            } else {
                format!("received from {}", meta.author.display_name())
            };
            self.out
                .line(&format!("{who}: {}", super::chain::describe(&meta.op)));
        }
    }
}

/// Starts the engine over `data_dir` with `options`' folders (needs a tokio runtime).
pub async fn start(
    data_dir: &Path,
    options: FolderOptions,
    out: Arc<Progress>,
) -> anyhow::Result<Folders> {
    let backend = LocalDir::new();
    let (identity, _) = crate::identity::DeviceIdentity::load_or_create(data_dir)?;
    let engine = Engine::start(
        EngineOptions {
            data_dir: data_dir.to_owned(),
            app_id: "harpbridge".to_owned(),
            device_name: options.device_name.clone(),
            scan_interval: options.scan_interval,
            cache_limit: options.cache_limit,
            ingest_in_flight: None,
            backend_serves_content: true,
        },
        None,
        Arc::new(backend.clone()),
        Events::to(Arc::new(Printer {
            me: identity.device_key(),
            out: out.clone(),
        })),
    )?;
    let mut libraries = Vec::new();
    let mut joining = Vec::new();
    let mut watches = Vec::new();
    for (dir, wanted) in &options.folders {
        let dir = prepare(dir)?;
        let library = library_for(&engine, &dir, *wanted).await?;
        out.follow_scan(
            engine.clone(),
            library.id,
            shown::text(&dir.display().to_string()).into_owned(),
        );
        if !engine.chain().libraries().contains(&library.id) {
            joining.push(library.id);
        }
        println!(
            "library {} {}",
            library.id,
            shown::text(&dir.display().to_string())
        );
        let cut = crate::backend::local::remove_temporaries(&dir);
        if cut > 0 {
            tracing::info!(folder = %dir.display(), files = cut, "removed temporary files of writes a stop cut short");
        }
        let (watch, mut changes) = watch::watch(&dir, backend.clone(), options.settle)
            .with_context(|| format!("watching {}", dir.display()))?;
        watches.push(watch);
        let (engine2, id) = (engine.clone(), library.id);
        tokio::spawn(async move {
            while let Some(batch) = changes.recv().await {
                if let Err(e) = engine2.folder_changed(&id, batch).await {
                    tracing::error!(library = %id, error = %e, "cannot queue the folder's changes; a rescan follows");
                    engine2.request_catch_up("changes could not be queued");
                }
            }
        });
        libraries.push((dir, library.id));
    }
    let keep_for = Duration::from_secs(options.trash_days.saturating_mul(86_400));
    let dirs: Vec<PathBuf> = libraries.iter().map(|(d, _)| d.clone()).collect();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(TRASH_SWEEP);
        loop {
            every.tick().await;
            for dir in &dirs {
                match trash::expire(dir, keep_for) {
                    Ok(0) => {}
                    Ok(n) => {
                        tracing::info!(folder = %dir.display(), removed = n, "old trash removed")
                    }
                    Err(e) => {
                        tracing::warn!(folder = %dir.display(), error = %e, "cannot empty the old trash")
                    }
                }
            }
        }
    });
    for peer in &options.pair {
        let Some(device) = crate::p2p::device_key(peer) else {
            bail!("{peer} is not an ed25519 device id");
        };
        for (_, id) in &libraries {
            if joining.contains(id) {
                continue;
            }
            match engine.add_device(*id, device, "device").await? {
                Some(_) => println!("paired {peer} with {id}"),
                None => tracing::debug!(%peer, library = %id, "already a member"),
            }
        }
    }
    Ok(Folders {
        engine,
        libraries,
        joining,
        _watches: watches,
    })
}

/// The folder as an absolute, canonical path (made if missing), refusing `/`.
fn prepare(dir: &Path) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot make {}", dir.display()))?;
    let dir = dir
        .canonicalize()
        .with_context(|| format!("cannot resolve {}", dir.display()))?;
    if dir.parent().is_none() {
        bail!("the root of the file system cannot be a synced folder");
    }
    if dir.to_str().is_none() {
        bail!("{} is not a UTF-8 path", dir.display());
    }
    Ok(dir)
}

/// The library `dir` is: the one kept there already, the one to join, or a new one.
async fn library_for(
    engine: &Engine,
    dir: &Path,
    wanted: Option<LibraryId>,
) -> anyhow::Result<Library> {
    let folder = dir.to_str().unwrap_or_default();
    let normalized = folder.trim_start_matches('/');
    let existing = engine
        .libraries()
        .list()
        .into_iter()
        .find(|l| l.uid == LOCAL_OWNER && l.folder == normalized);
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    match (existing, wanted) {
        (Some(library), Some(id)) if library.id != id => bail!(
            "{} is the folder of library {} already, not of {id}",
            dir.display(),
            library.id
        ),
        (Some(library), _) => Ok(library),
        (None, Some(id)) => Ok(engine.join_library(id, &name, LOCAL_OWNER, folder).await?),
        (None, None) => Ok(engine.create_library(&name, LOCAL_OWNER, folder).await?),
    }
}
