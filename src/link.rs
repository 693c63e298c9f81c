//! The engine and the swarm wired together, the same in `serve` and in `node --dir`.
//!
//! ```text
//!   Engine::library_changes ──▶ NodeHandle::library_changed   (announce heads: members pull)
//!   NodeEvent::Pulled ────────▶ Engine::remote_entries        (tree, content, write-back)
//!   write-back lacks a version ▶ NodeHandle::fetch_content     (SwarmContent)
//!   NodeEvent::Connected ─────▶ Engine::wake_writeback        (it may have what waits)
//! ```
//!
//! [`connect`] starts one relay task that runs until the node stops; what the panel shows
//! of the swarm (peers, transfers) is `web`'s business, on its own subscription.

use std::collections::HashMap;
use std::sync::Arc;

use futures_util::future::BoxFuture;
use tokio::sync::{broadcast, Notify};

use crate::chain::{ContentId, LibraryId};
use crate::engine::writeback::ContentSource;
use crate::engine::Engine;
use crate::p2p::{NodeEvent, NodeHandle, P2pError};

/// Connects `engine` and `node` both ways until the node stops.
pub fn connect(engine: &Engine, node: &NodeHandle) {
    engine.set_content_source(Arc::new(SwarmContent(node.clone())));
    tokio::spawn(relay(
        engine.clone(),
        node.clone(),
        node.subscribe(),
        engine.library_changes(),
    ));
}

/// Write-back's way to a version's blocks: the swarm fetches them from the members that
/// have them.
struct SwarmContent(NodeHandle);

impl ContentSource for SwarmContent {
    fn fetch(
        &self,
        library: LibraryId,
        content: ContentId,
    ) -> BoxFuture<'static, Result<(), String>> {
        let node = self.0.clone();
        Box::pin(async move {
            node.fetch_content(library, content)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        })
    }
}

/// Carries new entries between the node and the engine until the node stops.
async fn relay(
    engine: Engine,
    node: NodeHandle,
    mut events: broadcast::Receiver<NodeEvent>,
    mut changes: broadcast::Receiver<LibraryId>,
) {
    use broadcast::error::RecvError;
    let mut readers = Readers::default();
    loop {
        let outcome: Result<(), P2pError> = tokio::select! {
            event = events.recv() => match event {
                Ok(NodeEvent::Pulled { library, inserted, .. }) if inserted > 0 => {
                    readers.wake(&engine, library);
                    Ok(())
                }
                // It may have the versions write-back waits for.
                Ok(NodeEvent::Connected { .. }) => {
                    engine.wake_writeback();
                    Ok(())
                }
                Ok(_) => Ok(()),
                Err(RecvError::Lagged(missed)) => {
                    tracing::warn!(missed, "fell behind the swarm's events; re-reading every library");
                    for library in engine.chain().libraries() {
                        readers.wake(&engine, library);
                    }
                    Ok(())
                }
                Err(RecvError::Closed) => Err(P2pError::Stopped),
            },
            changed = changes.recv() => match changed {
                Ok(library) => node.library_changed(library).await,
                Err(RecvError::Lagged(_)) => {
                    let mut result = Ok(());
                    for library in engine.chain().libraries() {
                        result = result.and(node.library_changed(library).await);
                    }
                    result
                }
                // The engine lives as long as the process.
                Err(RecvError::Closed) => Err(P2pError::Stopped),
            },
        };
        if let Err(P2pError::Stopped) = outcome {
            break;
        }
    }
    tracing::debug!("the swarm's relay stopped");
}

/// One task per library that takes what pulls stored ([`Engine::remote_entries`]), off the
/// relay's loop since reading the chain takes a while. A pull arrives in many batches; waking
/// a task that has not started reading yet adds nothing ([`Notify`] keeps one permit), so a
/// long pull costs a few reads, not one per batch.
#[derive(Default)]
struct Readers {
    tasks: HashMap<LibraryId, Arc<Notify>>,
}

impl Readers {
    fn wake(&mut self, engine: &Engine, library: LibraryId) {
        let notify = self.tasks.entry(library).or_insert_with(|| {
            let notify = Arc::new(Notify::new());
            let engine = engine.clone();
            let wakes = notify.clone();
            tokio::spawn(async move {
                loop {
                    wakes.notified().await;
                    if let Err(e) = engine.remote_entries(library).await {
                        tracing::warn!(%library, error = %e, "could not read the entries a peer sent");
                    }
                }
            });
            notify
        });
        notify.notify_one();
    }
}
