//! The engine's events in the panel's words: the hub is the engine's [`EventSink`], and
//! each [`EngineEvent`] becomes the panel message that shows it.

use crate::engine::events::{Activity, EngineEvent, EventSink, LibraryState};

use super::events::{self as panel, ChainEntry};
use super::hub::Hub;

impl EventSink for Hub {
    fn emit(&self, event: EngineEvent) {
        self.publish(render(event));
    }
}

/// The panel message that shows `event`.
pub fn render(event: EngineEvent) -> panel::Event {
    match event {
        EngineEvent::EntryAppended { entry, user } => panel::Event::EntryAppended {
            entry: ChainEntry::from_chain(&entry, user),
        },
        EngineEvent::LibraryState(state) => panel::Event::LibraryState {
            library: library(state),
        },
        EngineEvent::LibraryRemoved(id) => panel::Event::LibraryRemoved {
            library_id: id.to_hex(),
        },
    }
}

fn library(state: LibraryState) -> panel::Library {
    let LibraryState {
        library,
        chain,
        activity,
    } = state;
    let (status, error) = match activity {
        Activity::Syncing => (panel::LibraryStatus::Syncing, None),
        Activity::Failed(error) => (panel::LibraryStatus::Error, error),
        Activity::Idle => (panel::LibraryStatus::Idle, None),
    };
    panel::Library {
        id: library.id.to_hex(),
        name: library.name,
        owner: library.uid,
        folder: format!("/{}", library.folder),
        heads: chain
            .as_ref()
            .map(|c| c.heads.iter().map(|h| h.to_hex()).collect())
            .unwrap_or_default(),
        entries: chain.as_ref().map(|c| c.entries).unwrap_or(0),
        verification: match &chain {
            Some(c) => panel::Verification {
                state: panel::VerificationState::Verified,
                checked_at_ms: Some(c.verified_at_ms),
                entries: c.entries,
                error: None,
            },
            None => panel::Verification::unverified(),
        },
        status,
        error,
    }
}
