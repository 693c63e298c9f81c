//! What the engine has done and how it is doing, for the REST API and the log.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use serde::Serialize;

/// Monotonic counters since start.
#[derive(Debug, Default)]
pub struct Counters {
    /// Deliveries accepted and queued.
    pub queued: AtomicU64,
    /// Deliveries seen before (acknowledged, not queued again).
    pub duplicates: AtomicU64,
    /// Deliveries about paths outside every library (acknowledged, dropped).
    pub outside: AtomicU64,
    /// Deliveries refused as malformed.
    pub rejected: AtomicU64,
    /// Events processed.
    pub processed: AtomicU64,
    /// Events answered by another event of the same batch about the same path.
    pub coalesced: AtomicU64,
    /// `NodeCreated` events answered by the mirror without a request: the file was read
    /// at its path after it was created (read ahead, see [`super::batch`]).
    pub answered: AtomicU64,
    /// Files read ahead of their deliveries (a batch's late delivery, [`super::batch`]).
    pub read_ahead: AtomicU64,
    /// Files read several to a request (a folder's tar stream, [`super::bundle`]).
    pub read_in_tar: AtomicU64,
    /// Chain entries appended.
    pub appended: AtomicU64,
    /// Files read whose content the chain already had (no new entry).
    pub unchanged: AtomicU64,
    /// Events recognised as the echo of our own writes.
    pub echoes: AtomicU64,
    /// Events given up on (moved to the failed table).
    pub failed: AtomicU64,
    /// Attempts that will be retried.
    pub retries: AtomicU64,
    /// Content bytes read from Nextcloud.
    pub bytes_in: AtomicU64,
    /// Changes write-back made in Nextcloud (PUT, MKCOL, MOVE, DELETE).
    pub written: AtomicU64,
    /// Content bytes write-back sent to Nextcloud.
    pub bytes_out: AtomicU64,
    /// Files changed in Nextcloud while a peer wrote them (both versions kept).
    pub conflicts: AtomicU64,
    /// Write-back runs that Nextcloud failed and that will be retried.
    pub writeback_retries: AtomicU64,
    /// Writes Nextcloud refused (412) because the file changed between write-back's look
    /// and its write; each is looked at again.
    pub writeback_raced: AtomicU64,
}

impl Counters {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> BTreeMap<&'static str, u64> {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        BTreeMap::from([
            ("queued", get(&self.queued)),
            ("duplicates", get(&self.duplicates)),
            ("outside_libraries", get(&self.outside)),
            ("rejected", get(&self.rejected)),
            ("processed", get(&self.processed)),
            ("coalesced", get(&self.coalesced)),
            ("answered", get(&self.answered)),
            ("read_ahead", get(&self.read_ahead)),
            ("read_in_tar", get(&self.read_in_tar)),
            ("entries_appended", get(&self.appended)),
            ("unchanged", get(&self.unchanged)),
            ("echoes", get(&self.echoes)),
            ("failed", get(&self.failed)),
            ("retries", get(&self.retries)),
            ("bytes_in", get(&self.bytes_in)),
            ("written", get(&self.written)),
            ("bytes_out", get(&self.bytes_out)),
            ("writeback_conflicts", get(&self.conflicts)),
            ("writeback_retries", get(&self.writeback_retries)),
            ("writeback_raced", get(&self.writeback_raced)),
        ])
    }
}

/// How webhooks stand.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum WebhookState {
    /// Not registered yet (the app was not enabled since start).
    Unknown,
    Registered {
        events: Vec<String>,
        refused: Vec<String>,
    },
    /// webhook_listeners is missing: only the periodic catch-ups see changes.
    Unavailable {
        reason: String,
    },
    Error {
        error: String,
    },
}

/// How Nextcloud answers the worker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum NextcloudState {
    Ok,
    /// Unreachable or failing; events wait and are retried with backoff.
    Unavailable {
        since_ms: u64,
        error: String,
        retry_in_ms: u64,
    },
    /// Nextcloud refused our credentials: the worker waits for an admin.
    Unauthorized {
        since_ms: u64,
        error: String,
    },
}

/// One library's scan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ScanProgress {
    pub state: ScanState,
    pub folders: u64,
    pub files_seen: u64,
    pub files_ingested: u64,
    pub bytes: u64,
    pub error: Option<String>,
    pub started_ms: u64,
    pub finished_ms: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ScanState {
    Running,
    Done,
    Failed,
}

/// How one library's changes come in, besides its scan.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct LibraryIngest {
    pub catch_up: CatchUpStatus,
    pub deliveries: DeliveryStatus,
}

/// The library's catch-ups ([`super::catchup`]) since start.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CatchUpStatus {
    pub running: bool,
    /// Catch-ups that ended.
    pub runs: u64,
    /// When the last one ended.
    pub last_ms: Option<u64>,
    pub result: Option<CatchUpResult>,
    pub error: Option<String>,
    /// Chain entries the last one recorded.
    pub last_changes: u64,
    /// Chain entries all of them recorded: changes no webhook delivered.
    pub changes_found: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CatchUpResult {
    /// The library's folder kept its ETag: nothing changed.
    Unchanged,
    /// Walked where ETags changed (`last_changes` says what it recorded).
    Changes,
    Failed,
}

/// The catch-up task: `pending` from a request until its round starts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CatchUpTask {
    pub state: CatchUpTaskState,
    /// Rounds (over every library) that ended.
    pub rounds: u64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CatchUpTaskState {
    #[default]
    Idle,
    Pending,
    Running,
}

/// The library's webhook deliveries since start.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DeliveryStatus {
    /// When the last delivery about the library was accepted.
    pub last_accepted_ms: Option<u64>,
    /// Its arrival minus the event's `time` (whole seconds; Nextcloud delivers from a
    /// background job, so this is the job queue's delay plus any clock skew).
    pub lag_s: Option<i64>,
}

/// Everything that is not a counter.
#[derive(Debug)]
pub struct Status {
    pub webhooks: Mutex<WebhookState>,
    pub nextcloud: Mutex<NextcloudState>,
    pub scans: Mutex<BTreeMap<String, ScanProgress>>,
    pub writeback: Mutex<super::writeback::WritebackState>,
    /// By library id (hex).
    pub libraries: Mutex<BTreeMap<String, LibraryIngest>>,
    pub catch_up: Mutex<CatchUpTask>,
}

impl Default for Status {
    fn default() -> Self {
        Status {
            webhooks: Mutex::new(WebhookState::Unknown),
            nextcloud: Mutex::new(NextcloudState::Ok),
            scans: Mutex::new(BTreeMap::new()),
            writeback: Mutex::new(Default::default()),
            libraries: Mutex::new(BTreeMap::new()),
            catch_up: Mutex::new(CatchUpTask::default()),
        }
    }
}

impl Status {
    /// How Nextcloud answers, as both directions see it: the worker's reads, and the
    /// write-back's writes when the reads are fine (a Nextcloud that refuses or fails
    /// our writes is not "ok" because no event happened to be read meanwhile).
    pub fn nextcloud_now(&self) -> NextcloudState {
        use super::writeback::WritebackState;
        let reads = lock(&self.nextcloud).clone();
        if reads != NextcloudState::Ok {
            return reads;
        }
        match &*lock(&self.writeback) {
            WritebackState::Ok { .. } => reads,
            WritebackState::Retrying {
                since_ms,
                error,
                retry_in_ms,
            } => NextcloudState::Unavailable {
                since_ms: *since_ms,
                error: format!("write-back: {error}"),
                retry_in_ms: *retry_in_ms,
            },
            WritebackState::Unauthorized { since_ms, error } => NextcloudState::Unauthorized {
                since_ms: *since_ms,
                error: format!("write-back: {error}"),
            },
        }
    }
}

/// Locks a status mutex, surviving a panicked holder.
pub use crate::locks::lock;
