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

use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use redb;
use redb::Database;

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

/// Opens (creating if needed) `<data_dir>/harpbridge.redb`.
pub fn open(data_dir: &Path) -> Result<Arc<Database>, DbError> {
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

/// Opens (creating if needed) a database file at an explicit path.
pub fn open_file(path: &Path) -> Result<Arc<Database>, DbError> {
    // redb checks a file's pages as it reads them and panics on one it cannot make sense
    // of: a damaged file is an error to report, not a crash.
    // Quiet while opening: the error below says what the panic would have, and more.
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let opened = std::panic::catch_unwind(|| Database::create(path));
    std::panic::set_hook(hook);
    let opened = opened.map_err(|panic| DbError::Damaged {
        path: path.to_path_buf(),
        detail: panic_text(&panic),
    })?;
    opened.map(Arc::new).map_err(|source| match source {
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

/// What a caught panic said.
pub fn panic_text(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_else(|| "unreadable page".to_owned())
}

/// A database held in memory only (tests and benchmarks of logic, not of durability).
pub fn in_memory() -> Result<Arc<Database>, redb::Error> {
    Ok(Arc::new(Database::builder().create_with_backend(
        redb::backends::InMemoryBackend::new(),
    )?))
}
