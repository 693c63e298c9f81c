//! Catching up with changes no webhook delivered.
//!
//! webhook_listeners delivers each event once, from a background job, and gives up on any
//! failure (harpbridge down, a 3 s timeout, an error answer): nothing retries. So the
//! engine reconciles every library with Nextcloud now and then, cheaply, by Nextcloud's
//! folder ETags (a folder's ETag changes whenever anything below it changes):
//!
//! 1. PROPFIND depth 0 of the library's folder: an ETag equal to the one recorded after the
//!    last complete reconcile means nothing changed; stop there (one request).
//! 2. Otherwise walk it as a scan does ([`Engine::walk`](super::ingest)), descending only
//!    into folders whose ETag differs from the recorded one; files whose file id, ETag and
//!    size equal the mirror's are trusted unchanged, and deletions are only of what the
//!    mirror says Nextcloud held.
//! 3. Once everything below a library's folder was recorded, the ETags the walk saw are
//!    recorded ([`FolderEtags`], table `folder_etags`). A walk that fails records none, so
//!    the next one looks again wherever the last did not finish.
//!
//! It runs (never before AppAPI has enabled the app: calls made before then count as
//! brute-force attempts against our address): at start, on every enable, after any gap the
//! engine can see (a delivery answered with an error, webhooks that could not be
//! registered, Nextcloud unreachable for the worker) and every `--scan-interval`.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};

use super::libraries::Library;
use super::mirror::{Held, Mirror};
use super::stats::{lock, CatchUpResult, CatchUpTaskState, NextcloudState};
use super::{Engine, EngineError};
use crate::backend::BackendError;
use crate::chain::LibraryId;
use crate::db::Db;

/// (library, folder path) → the folder's ETag when everything below it was last recorded.
const FOLDER_ETAGS: TableDefinition<([u8; 16], &str), &str> = TableDefinition::new("folder_etags");

/// How long a round waits for queued deliveries to be processed first (so that what it
/// finds is what no webhook delivered).
const QUEUE_GRACE: Duration = Duration::from_secs(30);
/// First retry after a failed round; doubles up to the scan interval.
const FIRST_RETRY: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
#[error("folder ETag storage: {0}")]
pub struct FolderEtagsError(String);

/// The catch-up task's state: what it last saw, and what it was asked for.
pub(crate) struct CatchUpState {
    /// Folder ETags of complete reconciles.
    pub(super) etags: FolderEtags,
    /// Wakes the task.
    pub(super) wake: tokio::sync::Notify,
    /// Why it was asked to run (said in the log and the status).
    pub(super) reasons: Mutex<Vec<String>>,
    /// Joined libraries whose chain had not arrived at the last round: their first entries
    /// ask for a round (what the folder held meanwhile is recorded then).
    pub(super) awaiting_chain: Mutex<std::collections::HashSet<LibraryId>>,
}

impl CatchUpState {
    pub(super) fn new(etags: FolderEtags) -> Self {
        CatchUpState {
            etags,
            wake: tokio::sync::Notify::new(),
            reasons: Mutex::new(Vec::new()),
            awaiting_chain: Mutex::new(std::collections::HashSet::new()),
        }
    }
}

fn storage(e: impl std::fmt::Display) -> FolderEtagsError {
    FolderEtagsError(e.to_string())
}

type Etags = BTreeMap<String, String>;

/// The folder ETags of complete reconciles, per library; cheap to clone.
#[derive(Clone)]
pub struct FolderEtags {
    db: Db,
    map: Arc<Mutex<HashMap<LibraryId, Etags>>>,
}

impl std::fmt::Debug for FolderEtags {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FolderEtags").finish_non_exhaustive()
    }
}

/// Every row of the table.
fn load_etags(db: &Database) -> Result<HashMap<LibraryId, Etags>, FolderEtagsError> {
    let mut map: HashMap<LibraryId, Etags> = HashMap::new();
    let txn = db.begin_read().map_err(storage)?;
    let table = txn.open_table(FOLDER_ETAGS).map_err(storage)?;
    for row in table.iter().map_err(storage)? {
        let (key, value) = row.map_err(storage)?;
        let (lib, path) = key.value();
        map.entry(LibraryId(lib))
            .or_default()
            .insert(path.to_owned(), value.value().to_owned());
    }
    Ok(map)
}

impl FolderEtags {
    pub fn open(db: Db) -> Result<FolderEtags, FolderEtagsError> {
        let txn = db.begin_write().map_err(storage)?;
        txn.open_table(FOLDER_ETAGS).map_err(storage)?;
        txn.commit().map_err(storage)?;
        let map = Arc::new(Mutex::new(db.with(load_etags).map_err(storage)??));
        db.on_reopen(&map, |map, database| {
            *lock(map) = load_etags(database).map_err(|e| e.to_string())?;
            Ok(())
        });
        Ok(FolderEtags { db, map })
    }

    /// The recorded ETag of a folder ("" = the library's own).
    pub fn get(&self, lib: &LibraryId, path: &str) -> Option<String> {
        lock(&self.map).get(lib)?.get(path).cloned()
    }

    /// Records the ETags a complete walk saw, and forgets those of folders Nextcloud no
    /// longer holds (as the mirror, just brought up to date, says). Durable at once: this
    /// commit also makes the mirror's last rows durable, which the ETags vouch for.
    pub fn record(
        &self,
        lib: &LibraryId,
        seen: Vec<(String, String)>,
        mirror: &Mirror,
    ) -> Result<(), FolderEtagsError> {
        let mut map = lock(&self.map);
        // Memory follows the table only once the table has it: ETags recorded in memory
        // but not on disk would make the next catch-up skip what they vouch for.
        let mut etags = map.get(lib).cloned().unwrap_or_default();
        let mut changes: Vec<(String, Option<String>)> = Vec::new();
        for (path, etag) in seen {
            if etags.get(&path) != Some(&etag) {
                etags.insert(path.clone(), etag.clone());
                changes.push((path, Some(etag)));
            }
        }
        let gone: Vec<String> = etags
            .keys()
            .filter(|p| !p.is_empty() && mirror.get(lib, p) != Some(Held::Dir))
            .cloned()
            .collect();
        for path in gone {
            etags.remove(&path);
            changes.push((path, None));
        }
        self.persist(lib, &changes)?;
        map.insert(*lib, etags);
        Ok(())
    }

    /// Forgets a library's ETags.
    pub fn forget(&self, lib: &LibraryId) -> Result<(), FolderEtagsError> {
        let mut map = lock(&self.map);
        let changes: Vec<(String, Option<String>)> = map
            .get(lib)
            .map(|etags| etags.keys().map(|p| (p.clone(), None)).collect())
            .unwrap_or_default();
        self.persist(lib, &changes)?;
        map.remove(lib);
        Ok(())
    }

    fn persist(
        &self,
        lib: &LibraryId,
        changes: &[(String, Option<String>)],
    ) -> Result<(), FolderEtagsError> {
        let mut txn = self.db.begin_write().map_err(storage)?;
        txn.set_durability(Durability::Immediate).map_err(storage)?;
        {
            let mut table = txn.open_table(FOLDER_ETAGS).map_err(storage)?;
            for (path, etag) in changes {
                match etag {
                    Some(etag) => {
                        table
                            .insert((lib.0, path.as_str()), etag.as_str())
                            .map_err(storage)?;
                    }
                    None => {
                        table.remove((lib.0, path.as_str())).map_err(storage)?;
                    }
                }
            }
        }
        txn.commit().map_err(storage)
    }
}

impl Engine {
    /// A library's entries arrived from a peer: if it was waiting for its chain, a catch-up
    /// records what its folder holds.
    pub(crate) fn chain_arrived(&self, library: &LibraryId) {
        if lock(&self.inner.catch_up.awaiting_chain).remove(library) {
            self.request_catch_up("a joined library's chain arrived");
        }
    }

    /// Asks for a catch-up of every library soon, saying why (for the log).
    pub fn request_catch_up(&self, why: &str) {
        {
            let mut reasons = lock(&self.inner.catch_up.reasons);
            if !reasons.iter().any(|r| r == why) {
                reasons.push(why.to_owned());
            }
            let mut task = lock(&self.inner.status.catch_up);
            if task.state == CatchUpTaskState::Idle {
                task.state = CatchUpTaskState::Pending;
            }
        }
        self.inner.catch_up.wake.notify_one();
    }

    /// Brings a library's chain up to date with Nextcloud, looking only below folders
    /// whose ETag changed since the last complete reconcile. `Ok(None)`: the library's
    /// folder kept its ETag (one PROPFIND); `Ok(Some(n))`: `n` chain entries recorded.
    pub(crate) async fn reconcile_library(
        &self,
        library: &Library,
        progress_key: Option<&str>,
    ) -> Result<Option<u64>, EngineError> {
        let lock_ = self.write_lock(&library.id);
        let _guard = lock_.lock().await;
        let Some(root) = self.stat(library, "").await? else {
            return Err(EngineError::NotAFolder {
                uid: library.uid.clone(),
                folder: format!("/{}", library.folder),
            });
        };
        let recorded = self.inner.catch_up.etags.get(&library.id, "");
        if root.etag.is_some() && root.etag == recorded {
            return Ok(None);
        }
        let walked = self
            .walk(library, "", super::ingest::Walk::Full, progress_key, true)
            .await?;
        self.inner
            .catch_up
            .etags
            .record(&library.id, walked.folder_etags, &self.inner.mirror)?;
        if walked.appended > 0 {
            self.refresh_current(&library.id).await?;
        }
        Ok(Some(walked.appended))
    }

    /// Whether `library`'s initial scan is running.
    fn scan_running(&self, library: &LibraryId) -> bool {
        lock(&self.inner.status.scans)
            .get(&library.to_hex())
            .is_some_and(|scan| scan.state == super::stats::ScanState::Running)
    }

    /// One catch-up of one library, with its outcome in the status and the log.
    pub async fn catch_up(&self, library: &Library, why: &str) -> Result<u64, EngineError> {
        let key = library.id.to_hex();
        lock(&self.inner.status.libraries)
            .entry(key.clone())
            .or_default()
            .catch_up
            .running = true;
        let result = self.reconcile_library(library, None).await;
        let now = crate::chain::now_ms();
        let name = format!("{}:/{}", library.uid, library.folder);
        let mut libraries = lock(&self.inner.status.libraries);
        let status = &mut libraries.entry(key.clone()).or_default().catch_up;
        status.running = false;
        status.runs += 1;
        status.last_ms = Some(now);
        match &result {
            Ok(None) => {
                status.result = Some(CatchUpResult::Unchanged);
                status.last_changes = 0;
                status.error = None;
                tracing::debug!(library = %key, %why, "catch-up: {name}: unchanged");
            }
            Ok(Some(n)) => {
                status.result = Some(CatchUpResult::Changes);
                status.last_changes = *n;
                status.changes_found += n;
                status.error = None;
                if *n > 0 {
                    tracing::info!(library = %key, %why, changes = n, "catch-up: {name}: {n} changes found that no webhook delivered");
                } else {
                    tracing::debug!(library = %key, %why, "catch-up: {name}: nothing new");
                }
            }
            Err(e) => {
                status.result = Some(CatchUpResult::Failed);
                status.error = Some(e.to_string());
                tracing::warn!(library = %key, %why, error = %e, "catch-up: {name} failed");
            }
        }
        drop(libraries);
        result.map(|n| n.unwrap_or(0))
    }
}

/// The catch-up task: a round at start, then every scan interval or when asked.
///
/// Nextcloud refusing our credentials (401, from the catch-up or from the worker) stops
/// the rounds until AppAPI enables the app again or the worker gets through: each refused
/// call counts toward Nextcloud's brute-force lock-out of our address.
pub(crate) async fn run(engine: Engine) {
    let interval = engine.inner.options.scan_interval;
    let mut enables = engine.inner.enablement.enables.subscribe();
    let mut wait = Duration::ZERO;
    let mut retry = FIRST_RETRY;
    let mut rounds = 0u64;
    loop {
        let asked = tokio::select! {
            _ = tokio::time::sleep(wait) => false,
            _ = engine.inner.catch_up.wake.notified() => true,
        };
        wait = interval;
        let mut reasons = {
            let mut reasons = lock(&engine.inner.catch_up.reasons);
            lock(&engine.inner.status.catch_up).state = CatchUpTaskState::Running;
            std::mem::take(&mut *reasons)
        };
        if !engine.was_enabled() {
            round_ended(&engine, false);
            continue;
        }
        let enabled_again = enables.has_changed().unwrap_or(false);
        enables.borrow_and_update();
        if unauthorized(&engine) && !enabled_again {
            round_ended(&engine, false);
            continue;
        }
        if reasons.is_empty() {
            let why = match (rounds, asked) {
                (0, _) => "start",
                (_, false) => "periodic",
                (_, true) => "asked",
            };
            reasons.push(why.to_owned());
        }
        rounds += 1;
        let why = reasons.join(", ");
        // Webhooks not known to be in place (since start, or after a failure): try again.
        if !engine.webhooks_registered() {
            engine.update_webhooks().await;
            if engine.webhooks_refused_us() {
                refused(&engine, "registering webhooks");
                round_ended(&engine, true);
                continue;
            }
        }
        let deadline = tokio::time::Instant::now() + QUEUE_GRACE;
        while engine.inner.queue.len().unwrap_or(0) > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let mut failed = false;
        let mut denied = false;
        let held = engine.inner.chain.libraries();
        for library in engine.inner.libraries.list() {
            if !held.contains(&library.id) {
                // Joined, and its chain not pulled yet: nothing to record into.
                lock(&engine.inner.catch_up.awaiting_chain).insert(library.id);
                continue;
            }
            if engine.scan_running(&library.id) {
                // Its initial scan is this library's catch-up; a second walk beside it would
                // record what the scan is about to, and the scan would report less than it saw.
                continue;
            }
            match engine.catch_up(&library, &why).await {
                Ok(_) => {}
                Err(EngineError::Backend(BackendError::Unauthorized(_))) => {
                    refused(&engine, "reading a library");
                    denied = true;
                    break;
                }
                Err(_) => failed = true,
            }
        }
        if !denied && !failed && unauthorized(&engine) {
            // Through again after an enable.
            *lock(&engine.inner.status.nextcloud) = NextcloudState::Ok;
        }
        if failed {
            wait = retry.min(interval);
            retry = (retry * 2).min(interval);
        } else {
            retry = FIRST_RETRY;
        }
        round_ended(&engine, true);
    }
}

fn unauthorized(engine: &Engine) -> bool {
    matches!(
        *lock(&engine.inner.status.nextcloud),
        NextcloudState::Unauthorized { .. }
    )
}

fn refused(engine: &Engine, doing: &str) {
    tracing::error!("Nextcloud refused harpbridge's credentials ({doing}); catch-ups wait for an enable (check APP_SECRET, and the brute-force lock-out)");
    *lock(&engine.inner.status.nextcloud) = NextcloudState::Unauthorized {
        since_ms: crate::chain::now_ms(),
        error: crate::backend::BackendError::Unauthorized("Nextcloud").to_string(),
    };
}

/// The round is over: the task is idle, or pending if asked again meanwhile.
fn round_ended(engine: &Engine, counted: bool) {
    let reasons = lock(&engine.inner.catch_up.reasons);
    let mut task = lock(&engine.inner.status.catch_up);
    task.state = if reasons.is_empty() {
        CatchUpTaskState::Idle
    } else {
        CatchUpTaskState::Pending
    };
    if counted {
        task.rounds += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::{ChainPath, Op, Tree};

    #[test]
    fn etags_are_recorded_durably_and_forgotten_with_their_folders() {
        let dir = tempfile::tempdir().unwrap();
        let db = crate::db::open(dir.path()).unwrap();
        let lib = LibraryId([5; 16]);
        let mirror = Mirror::open(db.clone()).unwrap();
        mirror.adopt(&lib, &Tree::default()).unwrap();
        let p = |s: &str| ChainPath::new(s).unwrap();
        mirror
            .record(
                &lib,
                &[Op::Mkdir { path: p("a") }, Op::Mkdir { path: p("a/b") }],
            )
            .unwrap();
        let etags = FolderEtags::open(db.clone()).unwrap();
        let seen = |list: &[(&str, &str)]| {
            list.iter()
                .map(|(p, e)| (p.to_string(), e.to_string()))
                .collect::<Vec<_>>()
        };
        etags
            .record(
                &lib,
                seen(&[("", "r1"), ("a", "a1"), ("a/b", "b1")]),
                &mirror,
            )
            .unwrap();
        assert_eq!(etags.get(&lib, "a/b").as_deref(), Some("b1"));
        // a/b is gone from Nextcloud (the mirror): its ETag goes with it.
        mirror
            .record(&lib, &[Op::Delete { path: p("a/b") }])
            .unwrap();
        etags
            .record(&lib, seen(&[("", "r2"), ("a", "a2")]), &mirror)
            .unwrap();
        drop(etags);
        let again = FolderEtags::open(db).unwrap();
        assert_eq!(again.get(&lib, "").as_deref(), Some("r2"));
        assert_eq!(again.get(&lib, "a").as_deref(), Some("a2"));
        assert_eq!(again.get(&lib, "a/b"), None);
        again.forget(&lib).unwrap();
        assert_eq!(again.get(&lib, ""), None);
    }
}
