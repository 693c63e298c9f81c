//! What the engine reports, for whoever shows it (the panel in `serve`).
//!
//! The engine emits [`EngineEvent`]s into an [`EventSink`] and never learns who listens or
//! how they render: the web layer implements the sink and turns each event into panel
//! messages. Events are emitted in the order things happened, synchronously, so that a
//! listener's view is up to date the moment an engine call returns.

use std::sync::Arc;

use crate::chain::{Entry, EntryHash, LibraryId};

use super::libraries::Library;

/// How many of a burst of entries stored from peers are reported one by one (the most
/// recent ones): enough for any activity view, few enough to read quickly.
pub const RECENT_ENTRIES: usize = 200;

/// Something the engine did that a user may want to see.
#[derive(Debug, Clone)]
pub enum EngineEvent {
    /// An entry was appended here, or stored from a peer. `user`: the Nextcloud user whose
    /// change it records, when the engine knows (the chain does not hold it).
    EntryAppended { entry: Entry, user: Option<String> },
    /// A library's current state (after it was created, scanned, or changed).
    LibraryState(LibraryState),
    /// A library is no longer synced here.
    LibraryRemoved(LibraryId),
}

/// A library as the engine sees it now.
#[derive(Debug, Clone)]
pub struct LibraryState {
    pub library: Library,
    /// The chain's heads, `None` when the chain could not be read.
    pub chain: Option<ChainState>,
    pub activity: Activity,
}

/// What the library's chain holds, checked when the store opened.
#[derive(Debug, Clone)]
pub struct ChainState {
    pub heads: Vec<EntryHash>,
    pub entries: u64,
    /// When every entry was checked (the store checks all of them when it opens, and each
    /// new one before storing it).
    pub verified_at_ms: u64,
}

/// What the engine is doing with a library.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Activity {
    Idle,
    /// Its scan runs.
    Syncing,
    /// Its last scan failed.
    Failed(Option<String>),
}

/// Where the engine's events go.
pub trait EventSink: Send + Sync {
    fn emit(&self, event: EngineEvent);
}

/// The engine's outlet: a sink, or nobody (tools that run the engine without a panel).
#[derive(Clone, Default)]
pub struct Events(Option<Arc<dyn EventSink>>);

impl Events {
    pub fn to(sink: Arc<dyn EventSink>) -> Events {
        Events(Some(sink))
    }

    pub fn none() -> Events {
        Events(None)
    }

    /// Whether anyone listens (so that nobody pays for an event nobody reads).
    pub fn listening(&self) -> bool {
        self.0.is_some()
    }

    pub fn emit(&self, event: EngineEvent) {
        if let Some(sink) = &self.0 {
            sink.emit(event);
        }
    }
}

impl std::fmt::Debug for Events {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Events").field(&self.listening()).finish()
    }
}
