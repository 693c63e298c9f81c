//! What can go wrong at a backend, in the terms the engine decides by: retry later
//! ([`BackendError::is_transient`]), the path is gone, the lost-update guard fired, a parent
//! is missing, or the backend refused us.

/// A backend's refusal or failure. `backend` names it in messages ("Nextcloud").
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("not found: {0}")]
    NotFound(String),
    #[error("conflict (a parent folder is missing?): {0}")]
    Conflict(String),
    #[error("precondition failed (changed since read): {0}")]
    PreconditionFailed(String),
    #[error("locked: {0}")]
    Locked(String),
    #[error("{backend} storage is full: {path}")]
    Full { backend: &'static str, path: String },
    #[error("already exists: {0}")]
    AlreadyExists(String),
    #[error("{0} refused our credentials for this user (HTTP 401); not retrying")]
    Unauthorized(&'static str),
    #[error("{backend} answered HTTP {status} for {path}: {message}")]
    Status {
        backend: &'static str,
        status: u16,
        path: String,
        message: String,
    },
    #[error("cannot reach {backend}: {source}")]
    Unreachable {
        backend: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A local file system call failed.
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// A file's bytes stopped coming part-way.
    #[error("the read was cut off: {0}")]
    ReadCut(#[source] std::io::Error),
    /// The path is left out here (a local folder's ignore rules): not written.
    #[error("ignored here (built-in rules or .harpignore): {0}")]
    Ignored(String),
    #[error("unexpected answer from {backend}: {message}")]
    Malformed {
        backend: &'static str,
        message: String,
    },
}

impl BackendError {
    /// Worth retrying later: the backend was unreachable, overloaded, locked or full.
    pub fn is_transient(&self) -> bool {
        match self {
            BackendError::Unreachable { .. }
            | BackendError::ReadCut(_)
            | BackendError::Locked(_)
            | BackendError::Full { .. } => true,
            BackendError::Status { status, .. } => *status >= 500 || *status == 429,
            _ => false,
        }
    }

    /// The backend refused our credentials.
    pub fn is_unauthorized(&self) -> bool {
        matches!(self, BackendError::Unauthorized(_))
    }
}
