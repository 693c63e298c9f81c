//! Changes a backend's own watcher saw (a local folder's), queued as the worker's events.
//!
//! Nextcloud tells the engine of changes by webhooks, validated into [`FileEvent`]s; a
//! watched folder's [`Change`]s become the same events, so one worker, one durable queue
//! and one way of looking ([`super::ingest`]) serve both. An event only says where to look:
//! a path becomes a "created" event (the worker reads what is there now, walks a folder's
//! new content, and records a delete if nothing is), a rename a "renamed" one (recorded as
//! one move when the file is the one the chain has at the old name).

use crate::appapi::event::{Area, EventKind, FileEvent, Node};
use crate::backend::Change;
use crate::chain::LibraryId;

use super::queue::QueueError;
use super::Engine;

impl Engine {
    /// Queues what a watcher saw in `library`'s folder; returns once it is durable.
    pub async fn folder_changed(
        &self,
        library: &LibraryId,
        changes: Vec<Change>,
    ) -> Result<(), QueueError> {
        let Some(library) = self.inner.libraries.get(library) else {
            return Ok(());
        };
        if !self.inner.chain.libraries().contains(&library.id) {
            // Joined, its chain not here yet: the catch-up when it arrives looks at all.
            return Ok(());
        }
        let time = (crate::chain::now_ms() / 1000) as i64;
        let node = |rel: &str| Node {
            id: None,
            uid: library.uid.clone(),
            area: Area::Files,
            path: library.user_path(rel),
        };
        for change in changes {
            let event = match change {
                Change::Path(rel) => FileEvent {
                    kind: EventKind::Created,
                    user: None,
                    time,
                    node: node(&rel),
                    source: None,
                },
                Change::Renamed { from, to } => FileEvent {
                    kind: EventKind::Renamed,
                    user: None,
                    time,
                    node: node(&to),
                    source: Some(node(&from)),
                },
                Change::Everything => {
                    self.request_catch_up("the folder's watcher lost changes");
                    continue;
                }
            };
            self.accept(unique_key(), event).await?;
        }
        Ok(())
    }
}

/// A queue key no other event has (the queue drops a key it has seen: webhooks are
/// delivered once, but a path may change many times).
fn unique_key() -> [u8; 32] {
    let mut key = [0u8; 32];
    if getrandom::fill(&mut key).is_err() {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        key[..16].copy_from_slice(&now.to_le_bytes());
        key[16..20].copy_from_slice(&std::process::id().to_le_bytes());
    }
    key
}
