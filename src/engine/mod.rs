//! The engine: turns Nextcloud's file changes into chain entries and stored content.
//!
//! ```text
//! webhook ─▶ receiver ─▶ queue (durable) ─▶ worker ─▶ WebDAV PROPFIND/GET ─▶ content store
//!                                                                         └─▶ chain entry
//! peers' entries ─▶ tree ≠ mirror ─▶ write-back ─▶ WebDAV MKCOL/PUT/MOVE/DELETE (If-Match)
//! ```
//!
//! - [`event`]: the validated file event.
//! - [`libraries`]: which user folders are synced, each as one chain.
//! - [`queue`]: the durable, de-duplicating queue between the receiver and the worker.
//! - [`ingest`]: reading one path's truth over WebDAV and recording it.
//! - [`worker`]: draining the queue, with retries and backoff when Nextcloud is down.
//! - [`catchup`]: finding, by folder ETags, the changes no webhook delivered.
//! - [`echo`]: not recording our own writes twice.
//! - [`mirror`]: what Nextcloud holds, as last known (the base both directions compare with).
//! - [`writeback`]: the other direction: peers' changes written into Nextcloud.
//! - [`stats`]: counters and states for the API and the log.
//! - [`peers`]: the engine's side of the swarm: local changes out, peers' entries in,
//!   pairing.

pub mod catchup;
pub mod echo;
pub mod event;
pub mod ingest;
pub mod libraries;
pub mod mirror;
pub mod peers;
pub mod queue;
pub mod stats;
pub mod worker;
pub mod writeback;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::appapi::client::NextcloudClient;
use crate::appapi::webdav::{DavError, Depth, WebDav};
use crate::appapi::webhooks::{self, Registration};
use crate::chain::{ChainStore, Entry, EntryHash, LibraryId, Op, Tree};
use crate::content::{ContentStore, StoreOptions};
use crate::identity::DeviceIdentity;
use crate::web::events as panel;
use crate::web::hub::Hub;

use catchup::FolderEtags;
use echo::OwnWrites;
use event::FileEvent;
use libraries::{Libraries, Library, LibraryError};
use mirror::{Mirror, MirrorError};
use queue::{Enqueued, Queue, QueueError};
use stats::{lock, Counters, Status, WebhookState};
use writeback::ContentSource;

/// The file in the data directory that says AppAPI has enabled us.
const ENABLED_MARKER: &str = "enabled";

/// How the engine is set up.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    pub data_dir: PathBuf,
    pub app_id: String,
    /// The name of this device in membership entries.
    pub device_name: String,
    /// Catch up with every library this often ([`catchup`]), webhooks or not.
    pub scan_interval: Duration,
    /// Size limit of the block store.
    pub cache_limit: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("cannot open the database: {0}")]
    Db(#[from] crate::db::DbError),
    #[error("identity: {0}")]
    Identity(#[from] crate::identity::IdentityError),
    #[error("chain: {0}")]
    Chain(#[from] crate::chain::ChainError),
    #[error("content store: {0}")]
    Content(#[from] crate::content::ContentError),
    #[error(transparent)]
    Library(#[from] LibraryError),
    #[error(transparent)]
    Queue(#[from] QueueError),
    #[error(transparent)]
    Mirror(#[from] MirrorError),
    #[error(transparent)]
    FolderEtags(#[from] catchup::FolderEtagsError),
    #[error("Nextcloud: {0}")]
    Dav(#[from] DavError),
    #[error("{path} read {got} bytes of {expected}: it changed while being read")]
    Truncated {
        path: String,
        expected: u64,
        got: u64,
    },
    #[error("{0}")]
    Invalid(String),
}

/// A folded tree and the heads it was folded at.
type CachedTree = (Vec<EntryHash>, Arc<Tree>);

/// A handle to the engine; cheap to clone.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

struct Inner {
    options: EngineOptions,
    chain: ChainStore,
    content: ContentStore,
    identity: DeviceIdentity,
    libraries: Libraries,
    queue: Queue,
    dav: WebDav,
    nextcloud: NextcloudClient,
    own_writes: OwnWrites,
    counters: Counters,
    status: Status,
    hub: Option<Hub>,
    /// Each library's folded tree, valid while the chain's heads are the ones noted.
    trees: Mutex<HashMap<LibraryId, CachedTree>>,
    /// When the stores were opened (and the chain checked).
    opened_ms: u64,
    /// One library is written by one task at a time.
    write_locks: Mutex<HashMap<LibraryId, Arc<tokio::sync::Mutex<()>>>>,
    /// Libraries changed here, for the swarm ([`Engine::library_changes`]).
    changes: tokio::sync::broadcast::Sender<LibraryId>,
    /// What the panel has been shown of each library (see [`peers`]).
    seen: Mutex<peers::Seen>,
    /// One reader of peers' entries at a time.
    remote_lock: tokio::sync::Mutex<()>,
    /// Devices' names from membership entries, for the panel's peer list.
    names: Mutex<HashMap<crate::chain::DeviceKey, String>>,
    /// What Nextcloud holds, as last known.
    mirror: Mirror,
    /// Wakes the write-back task.
    writeback_wake: tokio::sync::Notify,
    /// How many times AppAPI enabled the app since start: ends write-back's pause after a 401.
    enables: tokio::sync::watch::Sender<u64>,
    /// Whether AppAPI has enabled the app (remembered across restarts). Nextcloud counts a
    /// call from a disabled or unregistered ExApp as a failed login against our address,
    /// so nothing calls Nextcloud while this is false.
    enabled: tokio::sync::watch::Sender<bool>,
    /// Where write-back fetches versions it lacks (the swarm, once it runs).
    content_source: Mutex<Option<Arc<dyn ContentSource>>>,
    /// Folder ETags of complete reconciles ([`catchup`]).
    folder_etags: FolderEtags,
    /// Wakes the catch-up task, with the reasons it was asked for.
    catch_up_wake: tokio::sync::Notify,
    catch_up_reasons: Mutex<Vec<String>>,
    /// The events of one change that were processed ([`ingest::Bursts`]).
    bursts: ingest::Bursts,
    /// One webhook registration at a time.
    webhooks_lock: tokio::sync::Mutex<()>,
    /// The last registration got a 401.
    webhooks_refused: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("data_dir", &self.inner.options.data_dir)
            .finish_non_exhaustive()
    }
}

/// What the receiver did with a delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accepted {
    Queued,
    Duplicate,
    /// No library holds any of its paths: counted and dropped.
    Outside,
}

impl Engine {
    /// Opens the data directory's stores and starts the worker (needs a tokio runtime).
    pub fn start(
        options: EngineOptions,
        nextcloud: NextcloudClient,
        hub: Option<Hub>,
    ) -> Result<Engine, EngineError> {
        let db = crate::db::open(&options.data_dir)?;
        let (identity, _) = DeviceIdentity::load_or_create(&options.data_dir)?;
        let chain = ChainStore::open(db.clone())?;
        let content = ContentStore::open(
            db.clone(),
            &options.data_dir,
            StoreOptions {
                cache_limit: options.cache_limit,
                ..StoreOptions::default()
            },
        )?;
        let libraries = Libraries::open(db.clone())?;
        let mirror = Mirror::open(db.clone())?;
        let folder_etags = FolderEtags::open(db.clone())?;
        let queue = Queue::open(db)?;
        if let Some(hub) = &hub {
            hub.set_device_id(Some(identity.peer_id().to_string()));
        }
        let seen = peers::seen_now(&chain);
        let enabled = options.data_dir.join(ENABLED_MARKER).exists();
        let engine = Engine {
            inner: Arc::new(Inner {
                dav: WebDav::new(nextcloud.clone()),
                nextcloud,
                options,
                chain,
                content,
                identity,
                libraries,
                queue,
                own_writes: OwnWrites::default(),
                counters: Counters::default(),
                status: Status::default(),
                hub,
                trees: Mutex::new(HashMap::new()),
                opened_ms: crate::chain::now_ms(),
                write_locks: Mutex::new(HashMap::new()),
                changes: tokio::sync::broadcast::channel(peers::CHANGES_BUFFER).0,
                seen: Mutex::new(seen),
                remote_lock: tokio::sync::Mutex::new(()),
                names: Mutex::new(HashMap::new()),
                mirror,
                writeback_wake: tokio::sync::Notify::new(),
                enables: tokio::sync::watch::Sender::new(0),
                enabled: tokio::sync::watch::Sender::new(enabled),
                content_source: Mutex::new(None),
                folder_etags,
                catch_up_wake: tokio::sync::Notify::new(),
                catch_up_reasons: Mutex::new(Vec::new()),
                bursts: ingest::Bursts::default(),
                webhooks_lock: tokio::sync::Mutex::new(()),
                webhooks_refused: std::sync::atomic::AtomicBool::new(false),
            }),
        };
        for library in engine.inner.libraries.list() {
            if !engine.inner.mirror.knows(&library.id) {
                engine.adopt_tree(&library.id)?;
            }
            engine.publish_library(&library);
        }
        tokio::spawn(worker::run(engine.clone()));
        tokio::spawn(writeback::run(engine.clone()));
        tokio::spawn(catchup::run(engine.clone()));
        engine.wake_writeback();
        let names = engine.clone();
        tokio::task::spawn_blocking(move || names.learn_names());
        Ok(engine)
    }

    pub fn chain(&self) -> &ChainStore {
        &self.inner.chain
    }

    pub fn content(&self) -> &ContentStore {
        &self.inner.content
    }

    pub fn queue(&self) -> &Queue {
        &self.inner.queue
    }

    pub fn libraries(&self) -> &Libraries {
        &self.inner.libraries
    }

    pub fn counters(&self) -> &Counters {
        &self.inner.counters
    }

    pub fn status(&self) -> &Status {
        &self.inner.status
    }

    pub fn own_writes(&self) -> &OwnWrites {
        &self.inner.own_writes
    }

    pub fn identity(&self) -> &DeviceIdentity {
        &self.inner.identity
    }

    pub fn data_dir(&self) -> &Path {
        &self.inner.options.data_dir
    }

    /// Takes a validated delivery: drops it if it touches no library, else queues it.
    /// A delivery that cannot be queued is lost (Nextcloud never retries): a catch-up
    /// follows.
    pub async fn accept(&self, key: [u8; 32], event: FileEvent) -> Result<Accepted, QueueError> {
        let libraries = self.inner.libraries.matching(event.nodes());
        if libraries.is_empty() {
            Counters::add(&self.inner.counters.outside, 1);
            tracing::debug!(path = %event.node.path, "event outside every library dropped");
            return Ok(Accepted::Outside);
        }
        let time = event.time;
        let enqueued = self.inner.queue.enqueue(key, event).await;
        if enqueued.is_err() {
            self.request_catch_up("a delivery could not be queued");
        } else {
            let now = crate::chain::now_ms();
            let lag = (time > 0).then(|| (now / 1000) as i64 - time);
            let mut status = lock(&self.inner.status.libraries);
            for id in libraries {
                let deliveries = &mut status.entry(id.to_hex()).or_default().deliveries;
                deliveries.last_accepted_ms = Some(now);
                deliveries.lag_s = lag;
            }
        }
        match enqueued? {
            Enqueued::Queued(_) => {
                Counters::add(&self.inner.counters.queued, 1);
                Ok(Accepted::Queued)
            }
            Enqueued::Duplicate => {
                Counters::add(&self.inner.counters.duplicates, 1);
                Ok(Accepted::Duplicate)
            }
        }
    }

    /// A delivery was refused (malformed): whatever it said is lost, so a catch-up follows.
    pub fn delivery_refused(&self) {
        self.request_catch_up("a delivery was refused");
    }

    /// Registers our webhooks (on enable), then catches up with what happened while they
    /// were not delivered.
    pub async fn register_webhooks(&self) {
        self.update_webhooks().await;
        self.inner.queue.wake();
        // An enable is the admin's "try Nextcloud again" after a refused secret.
        self.inner.enables.send_modify(|n| *n += 1);
        self.wake_writeback();
        self.request_catch_up("enabled");
    }

    /// Webhooks filtered to the libraries' folders ([`webhooks::event_filter`]).
    fn webhook_filter(&self) -> serde_json::Value {
        let libraries = self.inner.libraries.list();
        let watched: Vec<webhooks::Watched<'_>> = libraries
            .iter()
            .map(|l| webhooks::Watched {
                uid: &l.uid,
                folder: &l.folder,
            })
            .collect();
        webhooks::event_filter(&watched)
    }

    /// Whether the last registration of our webhooks got a 401.
    pub(crate) fn webhooks_refused_us(&self) -> bool {
        self.inner
            .webhooks_refused
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Whether our webhooks are known to be in place.
    pub fn webhooks_registered(&self) -> bool {
        matches!(
            *lock(&self.inner.status.webhooks),
            WebhookState::Registered { .. }
        )
    }

    /// Registers our webhooks idempotently, filtered to the libraries as they are now;
    /// remembers and logs how it went.
    pub async fn update_webhooks(&self) {
        let _one = self.inner.webhooks_lock.lock().await;
        let filter = self.webhook_filter();
        let registered =
            webhooks::register(&self.inner.nextcloud, &self.inner.options.app_id, &filter).await;
        let refused_us =
            matches!(&registered, Err(e) if e.status() == Some(reqwest::StatusCode::UNAUTHORIZED));
        let state = match registered {
            Ok(Registration::Registered { kinds, refused }) => {
                for (kind, why) in &refused {
                    tracing::warn!(event = kind.name(), reason = %why, "Nextcloud refused a webhook");
                }
                tracing::info!(events = kinds.len(), "webhooks registered");
                WebhookState::Registered {
                    events: kinds.iter().map(|k| k.name().to_owned()).collect(),
                    refused: refused
                        .iter()
                        .map(|(k, why)| format!("{}: {why}", k.name()))
                        .collect(),
                }
            }
            Ok(Registration::Unavailable(reason)) => WebhookState::Unavailable { reason },
            Err(e) => WebhookState::Error {
                error: e.to_string(),
            },
        };
        self.inner
            .webhooks_refused
            .store(refused_us, std::sync::atomic::Ordering::Relaxed);
        let mut current = lock(&self.inner.status.webhooks);
        // Tried again every catch-up round while they are not in place: said once.
        if *current != state {
            match &state {
                WebhookState::Unavailable { reason } => {
                    tracing::warn!(%reason, interval_s = self.inner.options.scan_interval.as_secs(), "no webhooks: only the periodic catch-ups see changes");
                }
                WebhookState::Error { error } => {
                    tracing::error!(%error, "could not register webhooks");
                }
                _ => {}
            }
        }
        *current = state;
    }

    /// The libraries changed: their webhooks' filter with them (in the background; a
    /// catch-up follows if that fails). Only once AppAPI has enabled us.
    fn libraries_changed(&self) {
        if !self.was_enabled() {
            return;
        }
        let engine = self.clone();
        tokio::spawn(async move {
            engine.update_webhooks().await;
            if !engine.webhooks_registered() {
                engine.request_catch_up("webhooks could not be updated");
            }
        });
    }

    /// Removes our webhooks (on disable).
    pub async fn unregister_webhooks(&self) {
        if let Err(e) =
            webhooks::unregister(&self.inner.nextcloud, &self.inner.options.app_id).await
        {
            tracing::warn!(error = %e, "could not remove webhooks");
        }
        *lock(&self.inner.status.webhooks) = WebhookState::Unknown;
    }

    /// The event time (Unix seconds) of the last webhook delivery about the library.
    pub fn last_delivery_s(&self, id: &LibraryId) -> Option<i64> {
        let status = lock(&self.inner.status.libraries);
        let d = &status.get(&id.to_hex())?.deliveries;
        Some((d.last_accepted_ms? / 1000) as i64 - d.lag_s.unwrap_or(0))
    }

    /// When this engine started (Unix seconds): what changed before was found by scanning.
    pub fn started_s(&self) -> i64 {
        self.inner.opened_ms as i64 / 1000
    }

    /// When Nextcloud last changed anything in the library (its folder's modification
    /// time, which Nextcloud moves on every change below it); `None` if it is gone.
    pub async fn folder_changed_s(&self, library: &Library) -> Result<Option<i64>, EngineError> {
        Ok(self.stat(library, "").await?.and_then(|e| e.mtime))
    }

    /// Creates a library for `uid`'s `folder` and starts its initial scan.
    pub async fn create_library(
        &self,
        name: &str,
        uid: &str,
        folder: &str,
    ) -> Result<Library, EngineError> {
        libraries::validate_uid(uid)?;
        let folder = libraries::normalize_folder(folder)?;
        self.inner.libraries.check_free(uid, &folder)?;
        let root = self.inner.dav.propfind(uid, &folder, Depth::Zero).await?;
        if !root.first().is_some_and(|e| e.is_dir) {
            return Err(EngineError::Invalid(format!(
                "{uid}'s {folder:?} is not a folder"
            )));
        }
        let name = match name.trim() {
            "" => format!("{uid}/{folder}"),
            n => n.to_owned(),
        };
        let key = self.inner.identity.signing_key().clone();
        let device_name = self.inner.options.device_name.clone();
        let chain = self.inner.chain.clone();
        let (id, genesis) =
            tokio::task::spawn_blocking(move || chain.create_library(&key, &device_name))
                .await
                .map_err(|e| EngineError::Invalid(e.to_string()))??;
        self.local_entries(&id, std::slice::from_ref(&genesis));
        let library = Library {
            id,
            name,
            uid: uid.to_owned(),
            folder,
            created_ms: crate::chain::now_ms(),
        };
        self.mark_scan_running(&library);
        // Nextcloud holds nothing of the new library yet; its scan fills the mirror.
        self.inner.mirror.adopt(&id, &Tree::default())?;
        self.inner.libraries.insert(library.clone())?;
        tracing::info!(library = %id, uid, folder = %library.folder, "library created; initial scan starts");
        self.publish_library(&library);
        let engine = self.clone();
        let scanned = library.clone();
        tokio::spawn(async move {
            // Webhooks for its folder first: a change after the scan looked is delivered.
            engine.update_webhooks().await;
            engine.scan_library(&scanned).await;
        });
        Ok(library)
    }

    /// Creates the libraries given at start (`--library`) that do not exist yet.
    pub async fn ensure_libraries(&self, wanted: &[(String, String)]) {
        for (uid, folder) in wanted {
            let normalized = libraries::normalize_folder(folder).unwrap_or_default();
            let exists = self
                .inner
                .libraries
                .list()
                .iter()
                .any(|l| &l.uid == uid && l.folder == normalized);
            if exists {
                continue;
            }
            if let Err(e) = self.create_library("", uid, folder).await {
                tracing::error!(%uid, %folder, error = %e, "cannot create the library");
            }
        }
    }

    /// Whether AppAPI enabled this app before (remembered across restarts, since AppAPI
    /// does not call `/enabled` again when the container merely restarts).
    pub fn was_enabled(&self) -> bool {
        *self.inner.enabled.borrow()
    }

    /// Waits until AppAPI has enabled the app: the engine's tasks call Nextcloud only then.
    pub(crate) async fn until_enabled(&self) {
        let mut enabled = self.inner.enabled.subscribe();
        if !*enabled.borrow_and_update() {
            tracing::info!("waiting for AppAPI to enable the app before calling Nextcloud");
        }
        let _ = enabled.wait_for(|e| *e).await;
    }

    /// Remembers AppAPI's last enable or disable.
    pub fn remember_enabled(&self, enabled: bool) {
        self.inner.enabled.send_replace(enabled);
        let marker = self.inner.options.data_dir.join(ENABLED_MARKER);
        let result = if enabled {
            std::fs::write(&marker, b"1")
        } else {
            std::fs::remove_file(&marker).or_else(|e| {
                if e.kind() == std::io::ErrorKind::NotFound {
                    Ok(())
                } else {
                    Err(e)
                }
            })
        };
        if let Err(e) = result {
            tracing::warn!(error = %e, "cannot record the enabled state");
        }
    }

    /// Forgets a library (its chain and blocks stay until pruned).
    pub fn remove_library(&self, id: &LibraryId) -> Result<Library, EngineError> {
        let library = self.inner.libraries.remove(id)?;
        if let Err(e) = self.inner.mirror.forget(id) {
            tracing::warn!(error = %e, "could not forget what Nextcloud holds of the library");
        }
        if let Err(e) = self.inner.folder_etags.forget(id) {
            tracing::warn!(error = %e, "could not forget the library's folder ETags");
        }
        lock(&self.inner.status.libraries).remove(&id.to_hex());
        self.libraries_changed();
        if let Err(e) = self.inner.content.set_current(*id, &[]) {
            tracing::warn!(error = %e, "could not release the library's blocks");
        }
        lock(&self.inner.status.scans).remove(&id.to_hex());
        if let Some(hub) = &self.inner.hub {
            hub.publish(panel::Event::LibraryRemoved {
                library_id: id.to_hex(),
            });
        }
        Ok(library)
    }

    /// The library's tree as the chain folds it now (cached by heads).
    pub fn tree(&self, id: &LibraryId) -> Result<Arc<Tree>, EngineError> {
        let heads = self.inner.chain.heads(id)?;
        if let Some((cached, tree)) = lock(&self.inner.trees).get(id) {
            if *cached == heads {
                return Ok(tree.clone());
            }
        }
        let tree = Arc::new(self.inner.chain.tree(id)?);
        lock(&self.inner.trees).insert(*id, (heads, tree.clone()));
        Ok(tree)
    }

    fn write_lock(&self, id: &LibraryId) -> Arc<tokio::sync::Mutex<()>> {
        lock(&self.inner.write_locks)
            .entry(*id)
            .or_default()
            .clone()
    }

    /// Appends operations read from Nextcloud durably, notes that Nextcloud holds what they
    /// say ([`mirror`]), then tells the panel.
    pub(crate) async fn append(
        &self,
        library: &Library,
        ops: Vec<Op>,
        user: Option<&str>,
    ) -> Result<Vec<Entry>, EngineError> {
        let recorded = ops.clone();
        let entries = self.append_unmirrored(library, ops, user).await?;
        self.inner.mirror.record(&library.id, &recorded)?;
        Ok(entries)
    }

    /// Appends operations durably and tells the panel, leaving the mirror as it is (for
    /// entries Nextcloud does not hold yet: write-back's conflict copies).
    pub(crate) async fn append_unmirrored(
        &self,
        library: &Library,
        ops: Vec<Op>,
        user: Option<&str>,
    ) -> Result<Vec<Entry>, EngineError> {
        if ops.is_empty() {
            return Ok(Vec::new());
        }
        let chain = self.inner.chain.clone();
        let key = self.inner.identity.signing_key().clone();
        let id = library.id;
        let entries = tokio::task::spawn_blocking(move || chain.append_batch(&id, &key, ops))
            .await
            .map_err(|e| EngineError::Invalid(e.to_string()))??;
        Counters::add(&self.inner.counters.appended, entries.len() as u64);
        self.local_entries(&id, &entries);
        for entry in &entries {
            tracing::info!(library = %id, hash = %entry.hash(), op = entry.meta().op.kind(), "chain entry appended");
            if let Some(hub) = &self.inner.hub {
                hub.publish(panel::Event::EntryAppended {
                    entry: panel::ChainEntry::from_chain(entry, user.map(str::to_owned)),
                });
            }
        }
        self.publish_library(library);
        Ok(entries)
    }

    /// Tells the content store which versions the library's tree needs now, so their
    /// blocks are kept and replaced versions become evictable cache.
    pub async fn refresh_current(&self, id: &LibraryId) -> Result<(), EngineError> {
        let tree = self.tree(id)?;
        let versions: Vec<crate::content::ManifestId> = tree.versions().map(Into::into).collect();
        let content = self.inner.content.clone();
        let id = *id;
        tokio::task::spawn_blocking(move || content.set_current(id, &versions))
            .await
            .map_err(|e| EngineError::Invalid(e.to_string()))??;
        Ok(())
    }

    /// Tells the panel a library's current state.
    pub fn publish_library(&self, library: &Library) {
        let Some(hub) = &self.inner.hub else {
            return;
        };
        let summary = self.inner.chain.summary(&library.id).ok();
        let scan = lock(&self.inner.status.scans)
            .get(&library.id.to_hex())
            .cloned();
        let (status, error) = match &scan {
            Some(s) if s.state == stats::ScanState::Running => {
                (panel::LibraryStatus::Syncing, None)
            }
            Some(s) if s.state == stats::ScanState::Failed => {
                (panel::LibraryStatus::Error, s.error.clone())
            }
            _ => (panel::LibraryStatus::Idle, None),
        };
        hub.publish(panel::Event::LibraryState {
            library: panel::Library {
                id: library.id.to_hex(),
                name: library.name.clone(),
                owner: library.uid.clone(),
                folder: format!("/{}", library.folder),
                heads: summary
                    .as_ref()
                    .map(|s| s.heads.iter().map(|h| h.to_hex()).collect())
                    .unwrap_or_default(),
                entries: summary.as_ref().map(|s| s.entries as u64).unwrap_or(0),
                // The store checked every entry when it opened, and checks every entry
                // before it stores it; it refuses to open a damaged chain.
                verification: match &summary {
                    Some(s) => panel::Verification {
                        state: panel::VerificationState::Verified,
                        checked_at_ms: Some(self.inner.opened_ms),
                        entries: s.entries as u64,
                        error: None,
                    },
                    None => panel::Verification::unverified(),
                },
                status,
                error,
            },
        });
    }
}
