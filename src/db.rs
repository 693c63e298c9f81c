//! The one embedded database of a data directory: `<data>/harpbridge.redb`.
//!
//! # Why redb
//!
//! [redb](https://docs.rs/redb) is pure Rust (no C toolchain, no system library), ACID, and
//! its commits with [`redb::Durability::Immediate`] (the only durability harpbridge uses)
//! return only after the data is fsync'd, so an acknowledged write survives `kill -9` and
//! power loss; after a crash it recovers to the last committed transaction on open. Several
//! typed tables share one file and one write lock, which is what harpbridge needs: the chain
//! (`chain_entries`, see [`crate::chain`]), the content index (`content_*`), the event queue
//! (`event_*`), the libraries, the mirror and the folder ETags, each with its own tables in
//! the same [`Arc<Database>`]. Alternatives weighed:
//! SQLite (C dependency, a SQL layer we do not need), sled (unmaintained, no fsync'd
//! commit guarantee), fjall/LSM stores (more moving parts than an append-mostly log needs).
//!
//! Handles are opened once per process and shared; redb refuses a second open of the same
//! file.
//!
//! # Re-opening after an I/O error
//!
//! redb latches the first failed write (a full disk, a failing device): every later
//! transaction fails with "Previous I/O error occurred. Please close and re-open the
//! database", and only a new [`Database`] clears that. So the stores do not hold a
//! [`Database`] but a [`Db`]: one shared slot that the chain, the content index, the queue,
//! the libraries, the mirror and the folder ETags (and all their clones) read it through.
//!
//! - A transaction that meets an I/O error ([`Db::begin_write`], [`Db::begin_read`], or a
//!   failed commit reported with [`Db::check`]) marks the database failed: it is taken out
//!   of the slot and closed (redb refuses to open a file while a handle to it lives), and a
//!   thread re-opens the file with backoff ([`FIRST_RETRY`] doubling to [`MAX_RETRY`]) once
//!   its disk has [`MIN_FREE`] free, until it opens *and* a durable probe write succeeds. (A
//!   probe alone passes on a disk still full, in pages redb freed before, and the next
//!   larger commit fails again.)
//! - Meanwhile every transaction fails at once, saying so ([`Db::health`] has since when
//!   and why); nothing waits on a disk that cannot take it.
//! - Before the new database goes into the slot, each store re-reads what it keeps in
//!   memory from it, as it did at start, through the hook it registered with
//!   [`Db::on_reopen`]: a failed commit, or a non-durable one the re-open dropped, may have
//!   left memory ahead of the file.
//! - [`Db::watch`] tells the engine, which reports the failure to the admin and, once the
//!   database is back, catches up with what it could not record meanwhile.
//!
//! Re-opening behind each store instead would leave the others on the failed handle (and
//! the file locked), and exiting for a supervisor to restart us would refuse AppAPI's
//! deliveries for as long, with nothing recovering by itself where there is no supervisor.
//! A database held in memory ([`in_memory`], [`Db::new`]) is never re-opened.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

pub use redb;
use redb::{
    CommitError, Database, Durability, ReadTransaction, ReadableDatabase, StorageError,
    TableDefinition, TransactionError, WriteTransaction,
};
use serde::Serialize;
use tokio::sync::watch;

/// File name of the database inside the data directory.
pub const DB_FILE: &str = "harpbridge.redb";

/// Why the database could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// The data directory could not be created.
    #[error("cannot create data directory {path}: {source}")]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// Another process holds the file: a running `serve`, `node` or `cache` of this data
    /// directory (redb allows one process at a time).
    #[error("{path} is in use by a running harpbridge (serve, node or cache of this data directory): stop it first, or ask the running one (the panel, /api/…, `harpbridge doctor`)")]
    InUse {
        /// The file.
        path: PathBuf,
    },
    /// The file's pages do not hold what redb expects (a disk or copy damaged them).
    #[error("the database {path} is damaged ({detail}): restore it from a backup, or move it aside and start again (the device key stays; peers send the libraries' chains back, and serve scans Nextcloud again)")]
    Damaged {
        /// The file.
        path: PathBuf,
        /// What redb found.
        detail: String,
    },
    /// Too little space is left on the file's disk to write to it again.
    #[error("No space left on device: {free} bytes free on the disk of {path}, {} MiB needed to re-open it", MIN_FREE >> 20)]
    NoSpace {
        /// The file.
        path: PathBuf,
        /// Bytes free.
        free: u64,
    },
    /// redb refused to open or create the file.
    #[error("cannot open database {path}: {source}")]
    Open {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: redb::DatabaseError,
    },
}

/// The database path for a data directory.
pub fn db_path(data_dir: &Path) -> PathBuf {
    data_dir.join(DB_FILE)
}

/// Opens (creating if needed) `<data_dir>/harpbridge.redb`, re-opened by itself after an
/// I/O error (see the module docs).
pub fn open(data_dir: &Path) -> Result<Db, DbError> {
    crate::owner_only::create_dir_all(data_dir)
        .and_then(|()| crate::owner_only::restrict(data_dir))
        .map_err(|source| DbError::CreateDir {
            path: data_dir.to_path_buf(),
            source,
        })?;
    let path = db_path(data_dir);
    let db = open_file(&path)?;
    if let Err(e) = crate::owner_only::restrict(&path) {
        tracing::warn!(path = %path.display(), error = %e, "cannot make the database private");
    }
    Ok(db)
}

/// Opens (creating if needed) a database file at an explicit path, re-opened by itself
/// after an I/O error.
pub fn open_file(path: &Path) -> Result<Db, DbError> {
    let database = create(path)?;
    let reopen_path = path.to_path_buf();
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_path_buf();
    Ok(Db::with_opener(
        database,
        path.display().to_string(),
        Box::new(move || {
            if let Some(free) = free_bytes(&dir).filter(|free| *free < MIN_FREE) {
                return Err(DbError::NoSpace {
                    path: reopen_path.clone(),
                    free,
                });
            }
            create(&reopen_path)
        }),
    ))
}

/// Bytes free for us on the filesystem holding `dir`; `None` where that cannot be asked.
#[cfg(unix)]
#[allow(clippy::unnecessary_cast)] // the field types differ between platforms
fn free_bytes(dir: &Path) -> Option<u64> {
    use std::os::fd::AsRawFd;
    let file = std::fs::File::open(dir).ok()?;
    let mut stat = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: fstatvfs fills the struct we pass, on a descriptor open for the call; the
    // struct is read only when it says it succeeded.
    let stat = unsafe {
        if libc::fstatvfs(file.as_raw_fd(), stat.as_mut_ptr()) != 0 {
            return None;
        }
        stat.assume_init()
    };
    Some((stat.f_bavail as u64).saturating_mul(stat.f_frsize as u64))
}

#[cfg(not(unix))]
fn free_bytes(_: &Path) -> Option<u64> {
    None
}

/// `Database::create`, with redb's panics and errors told apart.
fn create(path: &Path) -> Result<Database, DbError> {
    // redb checks a file's pages as it reads them and panics on one it cannot make sense
    // of: a damaged file is an error to report, not a crash.
    let opened = catch_quietly(|| Database::create(path));
    let opened = opened.map_err(|panic| DbError::Damaged {
        path: path.to_path_buf(),
        detail: panic_text(&panic),
    })?;
    opened.map_err(|source| match source {
        redb::DatabaseError::Storage(redb::StorageError::Corrupted(detail)) => DbError::Damaged {
            path: path.to_path_buf(),
            detail,
        },
        redb::DatabaseError::DatabaseAlreadyOpen => DbError::InUse {
            path: path.to_path_buf(),
        },
        source => DbError::Open {
            path: path.to_path_buf(),
            source,
        },
    })
}

thread_local! {
    /// Whether this thread's panics are being caught and reported as errors.
    static QUIET: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f`, catching its panic without printing it: the error made of a caught panic says
/// what its message would have, and more. The panic hook is process-wide, so it is wrapped
/// once and asks a thread-local flag; swapping the hook around each call would race with
/// other threads doing the same and could leave every later panic, anywhere, silent.
fn catch_quietly<T>(f: impl FnOnce() -> T + std::panic::UnwindSafe) -> std::thread::Result<T> {
    static WRAP: std::sync::Once = std::sync::Once::new();
    WRAP.call_once(|| {
        let loud = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !QUIET.with(|q| q.get()) {
                loud(info)
            }
        }));
    });
    // The panic is caught here, so the flag is always put back.
    let before = QUIET.with(|q| q.replace(true));
    let out = std::panic::catch_unwind(f);
    QUIET.with(|q| q.set(before));
    out
}

/// What a caught panic said.
pub fn panic_text(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_else(|| "unreadable page".to_owned())
}

/// A database held in memory only (tests and benchmarks of logic, not of durability).
pub fn in_memory() -> Result<Db, redb::Error> {
    Ok(Db::new(Database::builder().create_with_backend(
        redb::backends::InMemoryBackend::new(),
    )?))
}

/// First wait before re-opening a failed database.
pub const FIRST_RETRY: Duration = Duration::from_millis(250);
/// Longest wait between two tries.
pub const MAX_RETRY: Duration = Duration::from_secs(10);

/// Free space a re-open waits for on the database's disk.
pub const MIN_FREE: u64 = 4 << 20;

/// Where the probe write of a re-open goes.
const PROBE: TableDefinition<&str, u64> = TableDefinition::new("db_probe");

/// Whether the database can be written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum DbHealth {
    Ok,
    /// An I/O error made it unusable; it is being re-opened.
    Failing {
        /// When the first error was met (ms since the epoch).
        since_ms: u64,
        /// The first error, then why the last re-open failed.
        error: String,
        /// Re-opens tried so far.
        attempts: u32,
        /// Until the next try.
        retry_in_ms: u64,
    },
}

type Opener = Box<dyn Fn() -> Result<Database, DbError> + Send + Sync>;
/// A store's re-read of its memory from a re-opened database; `None` once the store is gone.
type Reload = Box<dyn Fn(&Database) -> Option<Result<(), String>> + Send + Sync>;

/// The database as the stores hold it: a shared slot, re-filled after an I/O error (see
/// the module docs). Cheap to clone; all clones share the slot.
#[derive(Clone)]
pub struct Db {
    shared: Arc<Shared>,
}

struct Shared {
    /// The file, for messages.
    name: String,
    /// How to open it again; `None`: never re-opened (held in memory).
    opener: Option<Opener>,
    slot: RwLock<Slot>,
    health: watch::Sender<DbHealth>,
    reloads: Mutex<Vec<Reload>>,
    /// A re-open thread runs.
    recovering: AtomicBool,
}

struct Slot {
    database: Option<Arc<Database>>,
    /// Which open of the file it is: an error met on an earlier one is old news.
    generation: u64,
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Db")
            .field("file", &self.shared.name)
            .finish_non_exhaustive()
    }
}

impl From<Database> for Db {
    fn from(database: Database) -> Db {
        Db::new(database)
    }
}

fn is_io(e: &StorageError) -> bool {
    matches!(e, StorageError::Io(_) | StorageError::PreviousIo)
}

impl Db {
    /// A handle that is never re-opened (a database in memory, or opened by the caller).
    pub fn new(database: Database) -> Db {
        Db::build(database, "the database".to_owned(), None)
    }

    fn with_opener(database: Database, name: String, opener: Opener) -> Db {
        Db::build(database, name, Some(opener))
    }

    fn build(database: Database, name: String, opener: Option<Opener>) -> Db {
        Db {
            shared: Arc::new(Shared {
                name,
                opener,
                slot: RwLock::new(Slot {
                    database: Some(Arc::new(database)),
                    generation: 0,
                }),
                health: watch::Sender::new(DbHealth::Ok),
                reloads: Mutex::new(Vec::new()),
                recovering: AtomicBool::new(false),
            }),
        }
    }

    /// The database now, and which open of it this is; an error while it is re-opened.
    fn current(&self) -> Result<(Arc<Database>, u64), StorageError> {
        let slot = crate::locks::read(&self.shared.slot);
        match &slot.database {
            Some(db) => Ok((db.clone(), slot.generation)),
            None => Err(self.unavailable()),
        }
    }

    /// What a transaction gets while the database is being re-opened.
    fn unavailable(&self) -> StorageError {
        let why = match &*self.shared.health.borrow() {
            DbHealth::Failing { error, .. } => error.clone(),
            DbHealth::Ok => "an I/O error".to_owned(),
        };
        StorageError::Io(std::io::Error::other(format!(
            "{} cannot be written ({why}); it is re-opened as soon as it can be",
            self.shared.name
        )))
    }

    /// Begins a write transaction (see [`Database::begin_write`]).
    pub fn begin_write(&self) -> Result<WriteTransaction, TransactionError> {
        let (db, generation) = self.current().map_err(TransactionError::Storage)?;
        let txn = db.begin_write();
        if let Err(TransactionError::Storage(e)) = &txn {
            self.met(generation, e);
        }
        txn
    }

    /// Begins a read transaction (see [`Database::begin_read`]).
    pub fn begin_read(&self) -> Result<ReadTransaction, TransactionError> {
        let (db, generation) = self.current().map_err(TransactionError::Storage)?;
        let txn = db.begin_read();
        if let Err(TransactionError::Storage(e)) = &txn {
            self.met(generation, e);
        }
        txn
    }

    /// Runs `f` on the database as it is now (for code written against [`Database`]).
    pub fn with<T>(&self, f: impl FnOnce(&Database) -> T) -> Result<T, StorageError> {
        let (db, _) = self.current()?;
        Ok(f(&db))
    }

    /// A commit failed: if the database latched an I/O error, it is re-opened. Cheap, and
    /// does not wait for another writer.
    pub fn check(&self, error: &CommitError) {
        let CommitError::Storage(e) = error else {
            return;
        };
        if !is_io(e) {
            return;
        }
        let Ok((db, generation)) = self.current() else {
            return;
        };
        // A latched error fails every new transaction; a busy writer will meet it itself.
        if let Err(TransactionError::Storage(e)) = db.try_begin_write() {
            self.met(generation, &e);
        }
    }

    /// How many times it was re-opened.
    pub fn reopens(&self) -> u64 {
        crate::locks::read(&self.shared.slot).generation
    }

    /// Whether it can be written, and since when not.
    pub fn health(&self) -> DbHealth {
        self.shared.health.borrow().clone()
    }

    /// Follows [`Self::health`].
    pub fn watch(&self) -> watch::Receiver<DbHealth> {
        self.shared.health.subscribe()
    }

    /// Registers how `owner` re-reads its memory from a re-opened database; forgotten once
    /// `owner` is dropped.
    pub fn on_reopen<T: Send + Sync + 'static>(
        &self,
        owner: &Arc<T>,
        reload: impl Fn(&T, &Database) -> Result<(), String> + Send + Sync + 'static,
    ) {
        if self.shared.opener.is_none() {
            return;
        }
        let owner = Arc::downgrade(owner);
        crate::locks::lock(&self.shared.reloads).push(Box::new(move |db| {
            owner.upgrade().map(|owner| reload(&owner, db))
        }));
    }

    /// A transaction on open number `generation` met `e`.
    fn met(&self, generation: u64, e: &StorageError) {
        if !is_io(e) || self.shared.opener.is_none() {
            return;
        }
        let old = {
            let mut slot = crate::locks::write(&self.shared.slot);
            if slot.generation != generation {
                return; // an older open's error, or already being re-opened
            }
            slot.database.take()
        };
        // Closed now if no transaction is beginning on it (else when the last one ends), so
        // that the file can be opened again.
        if let Some(Ok(database)) = old.map(Arc::try_unwrap) {
            let _ = database.close();
        }
        if self.shared.recovering.swap(true, Ordering::AcqRel) {
            return;
        }
        tracing::error!(file = %self.shared.name, error = %e, "the database cannot be written; re-opening it as soon as it can be");
        let error = match e {
            // redb's words ask the caller to re-open it: that is under way.
            StorageError::PreviousIo => "a write failed with an I/O error".to_owned(),
            e => e.to_string(),
        };
        self.shared.health.send_replace(DbHealth::Failing {
            since_ms: crate::clock::now_ms(),
            error,
            attempts: 0,
            retry_in_ms: FIRST_RETRY.as_millis() as u64,
        });
        let db = self.clone();
        let spawned = std::thread::Builder::new()
            .name("db-reopen".into())
            .spawn(move || db.recover());
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start re-opening the database");
            self.shared.recovering.store(false, Ordering::Release);
        }
    }

    /// Re-opens until a durable write succeeds, then re-fills the slot.
    fn recover(&self) {
        let mut wait = FIRST_RETRY;
        let mut attempts = 0u32;
        loop {
            std::thread::sleep(wait);
            attempts += 1;
            match self.reopen() {
                Ok(database) => {
                    let mut slot = crate::locks::write(&self.shared.slot);
                    slot.database = Some(Arc::new(database));
                    slot.generation += 1;
                    drop(slot);
                    self.shared.recovering.store(false, Ordering::Release);
                    tracing::info!(file = %self.shared.name, attempts, "the database is writable again");
                    self.shared.health.send_replace(DbHealth::Ok);
                    return;
                }
                Err(why) => {
                    wait = (wait * 2).min(MAX_RETRY);
                    // Said at first, then every 30 tries (5 minutes), not every 10 s.
                    if attempts <= 3 || attempts.is_multiple_of(30) {
                        tracing::warn!(file = %self.shared.name, error = %why, attempts, retry_in_ms = wait.as_millis() as u64, "the database cannot be re-opened yet");
                    } else {
                        tracing::debug!(file = %self.shared.name, error = %why, attempts, "the database cannot be re-opened yet");
                    }
                    self.shared.health.send_modify(|health| {
                        if let DbHealth::Failing {
                            error,
                            attempts: tried,
                            retry_in_ms,
                            ..
                        } = health
                        {
                            *error = why;
                            *tried = attempts;
                            *retry_in_ms = wait.as_millis() as u64;
                        }
                    });
                }
            }
        }
    }

    /// One try: open, write durably, and let the stores re-read their memory.
    fn reopen(&self) -> Result<Database, String> {
        let Some(opener) = &self.shared.opener else {
            return Err("held in memory: cannot be re-opened".to_owned());
        };
        let database = opener().map_err(|e| e.to_string())?;
        let probe = || -> Result<(), redb::Error> {
            let mut txn = database.begin_write()?;
            txn.set_durability(Durability::Immediate)?;
            {
                let mut table = txn.open_table(PROBE)?;
                table.insert("reopened_ms", crate::clock::now_ms())?;
            }
            txn.commit()?;
            Ok(())
        };
        if let Err(e) = probe() {
            let _ = database.close();
            return Err(e.to_string());
        }
        let mut reloads = crate::locks::lock(&self.shared.reloads);
        let mut failed = None;
        reloads.retain(|reload| match reload(&database) {
            None => false,
            Some(Ok(())) => true,
            Some(Err(e)) => {
                failed.get_or_insert(e);
                true
            }
        });
        drop(reloads);
        match failed {
            Some(e) => {
                let _ = database.close();
                Err(format!("re-reading it: {e}"))
            }
            None => Ok(database),
        }
    }

    /// Marks the database failed as an I/O error would (tests of recovery).
    #[doc(hidden)]
    pub fn fail_for_test(&self, why: &str) {
        let generation = crate::locks::read(&self.shared.slot).generation;
        self.met(
            generation,
            &StorageError::Io(std::io::Error::other(why.to_owned())),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: TableDefinition<&str, u64> = TableDefinition::new("t");

    fn put(db: &Db, value: u64) -> Result<(), redb::Error> {
        let txn = db.begin_write()?;
        txn.open_table(T)?.insert("k", value)?;
        txn.commit()?;
        Ok(())
    }

    #[test]
    fn a_failed_database_is_reopened_and_the_stores_reload() {
        let dir = tempfile::tempdir().unwrap();
        let db = open(dir.path()).unwrap();
        put(&db, 1).unwrap();
        let owner = Arc::new(Mutex::new(0u64));
        db.on_reopen(&owner, |seen, database| {
            let txn = database.begin_read().map_err(|e| e.to_string())?;
            let table = txn.open_table(T).map_err(|e| e.to_string())?;
            let value = table.get("k").map_err(|e| e.to_string())?;
            *crate::locks::lock(seen) = value.map(|v| v.value()).unwrap_or(0);
            Ok(())
        });
        let health = db.watch();
        db.fail_for_test("No space left on device");
        assert!(matches!(db.health(), DbHealth::Failing { .. }));
        let refused = put(&db, 2).unwrap_err().to_string();
        assert!(refused.contains("No space left on device"), "{refused}");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while db.health() != DbHealth::Ok {
            assert!(std::time::Instant::now() < deadline, "not re-opened");
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(health.has_changed().unwrap());
        assert_eq!(
            *crate::locks::lock(&owner),
            1,
            "the store re-read its memory"
        );
        put(&db, 3).unwrap();
        // An error met on the earlier open is old news: nothing is re-opened for it.
        db.met(0, &StorageError::PreviousIo);
        assert_eq!(db.health(), DbHealth::Ok);
    }

    #[test]
    fn in_memory_is_never_reopened() {
        let db = in_memory().unwrap();
        db.fail_for_test("x");
        assert_eq!(db.health(), DbHealth::Ok);
        put(&db, 1).unwrap();
    }
}
