//! The engine: turns a backend's file changes (Nextcloud's, today) into chain entries and
//! stored content, and peers' entries back into the backend. It reports what it does as
//! [`events`] and never names the web layer or a backend's protocol.
//!
//! ```text
//! webhook ─▶ receiver ─▶ queue (durable) ─▶ worker ─▶ Backend::list/read ─▶ content store
//!                                                                        └─▶ chain entry
//! peers' entries ─▶ tree ≠ mirror ─▶ write-back ─▶ Backend::mkdir/write/rename/delete
//!                                                  (under the lost-update guard)
//! ```
//!
//! - [`libraries`]: which folders are synced, each as one chain.
//! - [`queue`]: the durable, de-duplicating queue between the receiver and the worker.
//! - [`ingest`]: reading one path's truth from the backend and recording it.
//! - [`worker`]: draining the queue, with retries and backoff when the backend is down.
//! - `batch`: one batch of the queue: paths looked at in parallel, decisions in queue
//!   order, one durable append.
//! - [`webhooks`]: asking Nextcloud for file events, filtered to the libraries' folders.
//! - [`changes`]: what a local folder's watcher saw, queued as the same events.
//! - [`catchup`]: finding, by folder ETags, the changes no webhook delivered.
//! - [`enablement`]: whether AppAPI has enabled us: nothing calls Nextcloud until it has.
//! - [`echo`]: not recording our own writes twice.
//! - [`mirror`]: what the backend holds, as last known (the base both directions compare with).
//! - [`writeback`]: the other direction: peers' changes written into the backend.
//! - [`events`]: what the engine reports (entries appended, libraries' states).
//! - [`stats`]: counters and states for the API and the log.
//! - [`storage`]: the database's failures (a full disk) told to the admin, and caught up
//!   with once it is writable again.
//! - [`peers`]: the engine's side of the swarm: local changes out, peers' entries in,
//!   pairing.

mod batch;
mod bundle;
pub mod catchup;
pub mod changes;
pub mod echo;
pub mod enablement;
pub mod events;
mod fetched;
pub mod ingest;
pub mod libraries;
pub mod mirror;
pub mod peers;
pub mod queue;
pub mod stats;
pub mod storage;
pub mod webhooks;
pub mod worker;
pub mod writeback;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::appapi::client::NextcloudClient;
use crate::backend::{Backend, BackendError, Depth, Root};
use crate::chain::{ChainStore, ContentId, Entry, EntryHash, LibraryId, Op, Tree, TreeItem};
use crate::content::{ContentStore, StoreOptions};
use crate::identity::DeviceIdentity;

use crate::appapi::event::FileEvent;
use catchup::FolderEtags;
use echo::OwnWrites;
use events::{Activity, EngineEvent, Events};
use libraries::{Libraries, Library, LibraryError};
use mirror::{Mirror, MirrorError};
use queue::{Enqueued, Queue, QueueError};
use stats::{lock, Counters, Status};

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
    /// Backend requests the ingest worker keeps in flight ([`worker::IN_FLIGHT`] when
    /// `None`); `Some(1)` processes events one at a time, one commit each.
    pub ingest_in_flight: Option<usize>,
    /// The backend's files are a source of their versions' bytes for peers (a local
    /// folder's are: [`crate::p2p`] can serve them): versions the backend holds as the tree
    /// has them need no blocks in the store, which then keeps only what waits to be
    /// written and a cache, not a second copy of the folder.
    pub backend_serves_content: bool,
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
    #[error(transparent)]
    Backend(#[from] BackendError),
    #[error("{path} read {got} bytes of {expected}: it changed while being read")]
    Truncated {
        path: String,
        expected: u64,
        got: u64,
    },
    /// The library's folder is gone, or is a file.
    #[error("{uid}'s {folder:?} is not a folder")]
    NotAFolder { uid: String, folder: String },
    /// A name the chain cannot hold.
    #[error("path {path:?}: {reason}")]
    BadPath { path: String, reason: String },
    /// A download stopped part-way; its version was not stored.
    #[error("the download was abandoned")]
    Abandoned,
    /// A blocking task (database, hashing) panicked or was cancelled.
    #[error("a background task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
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
    /// The database every store below reads through ([`crate::db::Db`]).
    db: crate::db::Db,
    /// Its failures, as reported ([`storage`]).
    storage: storage::StorageState,
    chain: ChainStore,
    content: ContentStore,
    identity: DeviceIdentity,
    libraries: Libraries,
    queue: Queue,
    /// Where the libraries' files live.
    backend: Arc<dyn Backend>,
    /// The AppAPI client that registers webhooks; `None` for a device without Nextcloud
    /// (local folders, whose watcher feeds the queue: [`Engine::folder_changed`]).
    nextcloud: Option<NextcloudClient>,
    own_writes: OwnWrites,
    counters: Counters,
    status: Status,
    /// Where what the engine does is reported (the panel, in `serve`).
    events: Events,
    /// Each library's folded tree, valid while the chain's heads are the ones noted.
    trees: Mutex<HashMap<LibraryId, CachedTree>>,
    /// When the stores were opened (and the chain checked).
    opened_ms: u64,
    /// One library is written by one task at a time.
    write_locks: Mutex<HashMap<LibraryId, Arc<tokio::sync::Mutex<()>>>>,
    /// The swarm's side: changes out, peers' entries in ([`peers`]).
    peers: peers::PeersState,
    /// What Nextcloud holds, as last known.
    mirror: Mirror,
    /// Whether AppAPI has enabled us ([`enablement`]).
    enablement: enablement::Enablement,
    /// The write-back task's wake-up and content source ([`writeback`]).
    writeback: writeback::WritebackTask,
    /// The catch-up task's folder ETags, wake-up and reasons ([`catchup`]).
    catch_up: catchup::CatchUpState,
    /// The events of one change that were processed ([`ingest::Bursts`]).
    bursts: ingest::Bursts,
    /// Our webhook registrations ([`webhooks`]).
    webhooks: webhooks::Webhooks,
    /// Each library's files by content, for [`Engine::placed_path`] (valid for its tree).
    placed_index: Mutex<HashMap<LibraryId, PlacedIndex>>,
}

/// A tree and the paths of its files by content.
type PlacedIndex = (Arc<Tree>, HashMap<ContentId, Vec<String>>);

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
    /// `backend` holds the libraries' files; `nextcloud` is the AppAPI client that
    /// registers the webhooks telling us of changes there, `None` where there is no
    /// Nextcloud (nothing to enable us then: the engine runs at once).
    pub fn start(
        options: EngineOptions,
        nextcloud: Option<NextcloudClient>,
        backend: Arc<dyn Backend>,
        events: Events,
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
        let queue = Queue::open(db.clone())?;
        let seen = peers::seen_now(&chain);
        let enabled = nextcloud.is_none() || options.data_dir.join(ENABLED_MARKER).exists();
        let engine = Engine {
            inner: Arc::new(Inner {
                backend,
                nextcloud,
                options,
                db,
                storage: storage::StorageState::default(),
                chain,
                content,
                identity,
                libraries,
                queue,
                own_writes: OwnWrites::default(),
                counters: Counters::default(),
                status: Status::default(),
                events,
                trees: Mutex::new(HashMap::new()),
                opened_ms: crate::chain::now_ms(),
                write_locks: Mutex::new(HashMap::new()),
                peers: peers::PeersState::new(seen),
                mirror,
                enablement: enablement::Enablement::new(enabled),
                writeback: writeback::WritebackTask::default(),
                catch_up: catchup::CatchUpState::new(folder_etags),
                bursts: ingest::Bursts::default(),
                webhooks: webhooks::Webhooks::default(),
                placed_index: Mutex::new(HashMap::new()),
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
        tokio::spawn(storage::run(engine.clone()));
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
            self.delivery_failed();
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
        let root = Root {
            owner: uid,
            folder: &folder,
        };
        let root = self.inner.backend.list(root, "", Depth::Zero).await?;
        if !root.first().is_some_and(|e| e.is_dir) {
            return Err(EngineError::NotAFolder {
                uid: uid.to_owned(),
                folder,
            });
        }
        let name = match name.trim() {
            "" => format!("{uid}/{folder}"),
            n => n.to_owned(),
        };
        let key = self.inner.identity.signing_key().clone();
        let device_name = self.inner.options.device_name.clone();
        let chain = self.inner.chain.clone();
        let (id, genesis) =
            tokio::task::spawn_blocking(move || chain.create_library(&key, &device_name)).await??;
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

    /// Takes `uid`'s `folder` as this device's copy of a library it does not hold yet (a
    /// member's offer it accepted): everything the library's chain has, once pulled, is
    /// written there; what the folder holds already is recorded by the next scan.
    pub async fn join_library(
        &self,
        id: LibraryId,
        name: &str,
        uid: &str,
        folder: &str,
    ) -> Result<Library, EngineError> {
        libraries::validate_uid(uid)?;
        let folder = libraries::normalize_folder(folder)?;
        if let Some(known) = self.inner.libraries.get(&id) {
            return Ok(known);
        }
        self.inner.libraries.check_free(uid, &folder)?;
        self.make_folder(uid, &folder).await?;
        let library = Library {
            id,
            name: name.to_owned(),
            uid: uid.to_owned(),
            folder,
            created_ms: crate::chain::now_ms(),
        };
        // The folder holds nothing of the library yet: write-back writes all of it.
        self.inner.mirror.adopt(&id, &Tree::default())?;
        if !self.inner.chain.libraries().contains(&id) {
            lock(&self.inner.catch_up.awaiting_chain).insert(id);
        }
        self.inner.libraries.insert(library.clone())?;
        tracing::info!(library = %id, uid, folder = %library.folder, "library joined");
        self.publish_library(&library);
        self.libraries_changed();
        self.request_catch_up("a library was joined");
        self.wake_writeback();
        Ok(library)
    }

    /// Makes `folder` (and the folders above it) in `uid`'s files if missing: a library
    /// joined into a new folder needs it before write-back can put anything in it
    /// (Nextcloud answers a PUT into a missing folder with 404).
    async fn make_folder(&self, uid: &str, folder: &str) -> Result<(), EngineError> {
        let library_root = Root { owner: uid, folder };
        match self.inner.backend.list(library_root, "", Depth::Zero).await {
            Err(BackendError::NotFound(_)) => {}
            Ok(_) => return Ok(()),
            Err(e) => return Err(e.into()),
        }
        let root = Root {
            owner: uid,
            folder: "",
        };
        let mut path = String::new();
        for segment in folder.split('/').filter(|s| !s.is_empty()) {
            if !path.is_empty() {
                path.push('/');
            }
            path.push_str(segment);
            match self.inner.backend.mkdir(root, &path).await {
                Ok(_) | Err(BackendError::AlreadyExists(_)) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
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

    /// Forgets a library (its chain and blocks stay until pruned).
    pub fn remove_library(&self, id: &LibraryId) -> Result<Library, EngineError> {
        let library = self.inner.libraries.remove(id)?;
        if let Err(e) = self.inner.mirror.forget(id) {
            tracing::warn!(error = %e, "could not forget what Nextcloud holds of the library");
        }
        if let Err(e) = self.inner.catch_up.etags.forget(id) {
            tracing::warn!(error = %e, "could not forget the library's folder ETags");
        }
        lock(&self.inner.status.libraries).remove(&id.to_hex());
        self.libraries_changed();
        if let Err(e) = self.inner.content.set_current(*id, &[]) {
            tracing::warn!(error = %e, "could not release the library's blocks");
        }
        lock(&self.inner.status.scans).remove(&id.to_hex());
        self.inner.events.emit(EngineEvent::LibraryRemoved(*id));
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
        self.append_after(library, ops, user, None).await
    }

    /// [`Self::append`] of operations decided looking at the library's tree at the heads
    /// `seen` (see [`ChainStore::append_batch_after`]): a peer's entry stored meanwhile is
    /// concurrent with them, and the fold keeps both where both wrote one path.
    pub(crate) async fn append_after(
        &self,
        library: &Library,
        ops: Vec<Op>,
        user: Option<&str>,
        seen: Option<&[EntryHash]>,
    ) -> Result<Vec<Entry>, EngineError> {
        let users = vec![user.map(str::to_owned); ops.len()];
        self.append_by(library, ops, users, seen).await
    }

    /// [`Self::append_after`] of operations from several events, each made by its own
    /// user (`users[i]` made `ops[i]`; the panel shows who): one durable commit for all.
    pub(crate) async fn append_by(
        &self,
        library: &Library,
        ops: Vec<Op>,
        users: Vec<Option<String>>,
        seen: Option<&[EntryHash]>,
    ) -> Result<Vec<Entry>, EngineError> {
        let recorded = ops.clone();
        let entries = self.append_inner(library, ops, users, seen).await?;
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
        let users = vec![user.map(str::to_owned); ops.len()];
        self.append_inner(library, ops, users, None).await
    }

    async fn append_inner(
        &self,
        library: &Library,
        ops: Vec<Op>,
        users: Vec<Option<String>>,
        seen: Option<&[EntryHash]>,
    ) -> Result<Vec<Entry>, EngineError> {
        if ops.is_empty() {
            return Ok(Vec::new());
        }
        let chain = self.inner.chain.clone();
        let key = self.inner.identity.signing_key().clone();
        let id = library.id;
        let seen = seen.map(<[EntryHash]>::to_vec);
        let entries = tokio::task::spawn_blocking(move || match seen {
            Some(seen) => chain.append_batch_after(&id, &key, ops, &seen),
            None => chain.append_batch(&id, &key, ops),
        })
        .await??;
        Counters::add(&self.inner.counters.appended, entries.len() as u64);
        self.local_entries(&id, &entries);
        for (entry, user) in entries.iter().zip(users) {
            tracing::info!(library = %id, hash = %entry.hash(), op = entry.meta().op.kind(), "chain entry appended");
            self.inner.events.emit(EngineEvent::EntryAppended {
                entry: entry.clone(),
                user,
            });
        }
        self.publish_library(library);
        Ok(entries)
    }

    /// Tells the content store which versions the library's tree needs now, so their
    /// blocks are kept and replaced versions become evictable cache.
    pub async fn refresh_current(&self, id: &LibraryId) -> Result<(), EngineError> {
        let tree = self.tree(id)?;
        let versions: Vec<crate::content::ManifestId> = if self.inner.options.backend_serves_content
        {
            // Only what the backend does not hold yet (see `backend_serves_content`).
            tree.items
                .iter()
                .filter_map(|(path, item)| match item {
                    TreeItem::File { content, .. } if !self.placed(id, path, content) => {
                        Some((*content).into())
                    }
                    _ => None,
                })
                .collect()
        } else {
            tree.versions().map(Into::into).collect()
        };
        let content = self.inner.content.clone();
        let id = *id;
        tokio::task::spawn_blocking(move || content.set_current(id, &versions)).await??;
        Ok(())
    }

    /// Whether the backend holds `content` at `path` of the library, as last known.
    fn placed(&self, id: &LibraryId, path: &str, content: &ContentId) -> bool {
        matches!(self.inner.mirror.get(id, path), Some(mirror::Held::File(f)) if f.content == *content)
    }

    /// A path of the library where the backend holds `content` now (as last known), for
    /// serving its bytes from there ([`EngineOptions::backend_serves_content`]).
    pub fn placed_path(&self, id: &LibraryId, content: &ContentId) -> Option<String> {
        let tree = self.tree(id).ok()?;
        let paths = {
            let mut index = lock(&self.inner.placed_index);
            let fresh = index.get(id).is_some_and(|(t, _)| Arc::ptr_eq(t, &tree));
            if !fresh {
                let mut by_content: HashMap<ContentId, Vec<String>> = HashMap::new();
                for (path, item) in &tree.items {
                    if let TreeItem::File { content, .. } = item {
                        by_content
                            .entry(*content)
                            .or_default()
                            .push(path.as_str().to_owned());
                    }
                }
                index.insert(*id, (tree.clone(), by_content));
            }
            index.get(id)?.1.get(content).cloned()?
        };
        paths.into_iter().find(|p| self.placed(id, p, content))
    }

    /// Reports a library's current state.
    pub fn publish_library(&self, library: &Library) {
        if !self.inner.events.listening() {
            return;
        }
        let chain = self
            .inner
            .chain
            .summary(&library.id)
            .ok()
            .map(|s| events::ChainState {
                heads: s.heads,
                entries: s.entries as u64,
                verified_at_ms: self.inner.opened_ms,
            });
        let scan = lock(&self.inner.status.scans)
            .get(&library.id.to_hex())
            .cloned();
        let activity = match scan {
            Some(s) if s.state == stats::ScanState::Running => Activity::Syncing,
            Some(s) if s.state == stats::ScanState::Failed => Activity::Failed(s.error),
            _ => Activity::Idle,
        };
        self.inner
            .events
            .emit(EngineEvent::LibraryState(events::LibraryState {
                library: library.clone(),
                chain,
                activity,
            }));
    }
}
