//! The durable event queue between the webhook receiver and the worker.
//!
//! AppAPI gives a delivery 3 seconds and never retries (docs/appapi.md §8.2), so the receiver
//! must answer at once, yet must not lose an event it answered: [`Queue::enqueue`]
//! returns only after the event is committed to the database with an fsync. To keep
//! that cheap under load, enqueues are *group-committed*: one task drains every enqueue
//! waiting at that moment into a single transaction, so 64 concurrent deliveries cost
//! one fsync, not 64.
//!
//! A delivery is identified by the SHA3-256 of its body. While an event waits, the same
//! body again is acknowledged but not queued a second time. Once the event is processed its
//! key is forgotten: a later identical body is a new change (two saves in one second give
//! identical bodies) and is queued again; processing it records nothing if nothing changed.
//! The worker reads events oldest first, removes them once done, and moves ones that can
//! never succeed to a failed table with the reason, so nothing is dropped silently.

use std::sync::Arc;

use redb::{Durability, ReadableTable, ReadableTableMetadata, TableDefinition};
use serde::{Deserialize, Serialize};
use sha3::{Digest, Sha3_256};
use tokio::sync::{mpsc, oneshot, Notify};

use crate::appapi::event::FileEvent;
use crate::db::Db;

const QUEUE: TableDefinition<u64, &[u8]> = TableDefinition::new("event_queue");
const FAILED: TableDefinition<u64, &[u8]> = TableDefinition::new("event_failed");
/// Keys of the deliveries waiting in the queue → their sequence number.
const SEEN: TableDefinition<[u8; 32], u64> = TableDefinition::new("event_seen");
const COUNTERS: TableDefinition<&str, u64> = TableDefinition::new("event_counters");

/// Most enqueues folded into one commit.
const MAX_GROUP: usize = 1024;

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("event queue storage: {0}")]
    Storage(String),
    #[error("the event queue has stopped")]
    Stopped,
}

fn storage(e: impl std::fmt::Display) -> QueueError {
    QueueError::Storage(e.to_string())
}

/// An event waiting in the queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueuedEvent {
    pub event: FileEvent,
    pub received_ms: u64,
    #[serde(default)]
    pub attempts: u32,
    #[serde(default)]
    pub last_error: Option<String>,
    /// The delivery's de-duplication key.
    #[serde(default)]
    pub key: Option<[u8; 32]>,
}

/// What [`Queue::enqueue`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enqueued {
    /// Durably queued under this sequence number.
    Queued(u64),
    /// The same delivery was queued before.
    Duplicate,
}

/// The de-duplication key of a delivery body.
pub fn delivery_key(body: &[u8]) -> [u8; 32] {
    Sha3_256::digest(body).into()
}

struct Pending {
    key: [u8; 32],
    event: FileEvent,
    reply: oneshot::Sender<Result<Enqueued, QueueError>>,
}

/// A handle to the queue; cheap to clone.
#[derive(Clone)]
pub struct Queue {
    db: Db,
    tx: mpsc::Sender<Pending>,
    notify: Arc<Notify>,
}

impl std::fmt::Debug for Queue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queue").finish_non_exhaustive()
    }
}

impl Queue {
    /// Opens the queue's tables and starts the committer (needs a tokio runtime).
    pub fn open(db: Db) -> Result<Self, QueueError> {
        let txn = db.begin_write().map_err(storage)?;
        txn.open_table(QUEUE).map_err(storage)?;
        txn.open_table(FAILED).map_err(storage)?;
        txn.open_table(SEEN).map_err(storage)?;
        txn.open_table(COUNTERS).map_err(storage)?;
        txn.commit().map_err(storage)?;
        let (tx, rx) = mpsc::channel(MAX_GROUP * 4);
        let notify = Arc::new(Notify::new());
        tokio::spawn(committer(db.clone(), rx, notify.clone()));
        Ok(Queue { db, tx, notify })
    }

    /// Queues an event durably; returns once it is on disk (or known already).
    pub async fn enqueue(&self, key: [u8; 32], event: FileEvent) -> Result<Enqueued, QueueError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Pending { key, event, reply })
            .await
            .map_err(|_| QueueError::Stopped)?;
        answer.await.map_err(|_| QueueError::Stopped)?
    }

    /// Resolves when events may have been added since the last call.
    pub async fn wait(&self) {
        self.notify.notified().await
    }

    /// Wakes the worker (for example after a retry delay).
    pub fn wake(&self) {
        self.notify.notify_one();
    }

    /// Up to `limit` events, oldest first.
    pub fn peek(&self, limit: usize) -> Result<Vec<(u64, QueuedEvent)>, QueueError> {
        let txn = self.db.begin_read().map_err(storage)?;
        let table = txn.open_table(QUEUE).map_err(storage)?;
        let mut out = Vec::new();
        for row in table.iter().map_err(storage)?.take(limit) {
            let (seq, bytes) = row.map_err(storage)?;
            let queued: QueuedEvent = serde_json::from_slice(bytes.value())
                .map_err(|e| storage(format!("queued event {}: {e}", seq.value())))?;
            out.push((seq.value(), queued));
        }
        Ok(out)
    }

    /// Events waiting.
    pub fn len(&self) -> Result<u64, QueueError> {
        let txn = self.db.begin_read().map_err(storage)?;
        let table = txn.open_table(QUEUE).map_err(storage)?;
        table.len().map_err(storage)
    }

    pub fn is_empty(&self) -> Result<bool, QueueError> {
        Ok(self.len()? == 0)
    }

    /// Events that could not be processed, with their reasons.
    pub fn failed(&self) -> Result<Vec<(u64, QueuedEvent)>, QueueError> {
        let txn = self.db.begin_read().map_err(storage)?;
        let table = txn.open_table(FAILED).map_err(storage)?;
        let mut out = Vec::new();
        for row in table.iter().map_err(storage)? {
            let (seq, bytes) = row.map_err(storage)?;
            if let Ok(q) = serde_json::from_slice(bytes.value()) {
                out.push((seq.value(), q));
            }
        }
        Ok(out)
    }

    /// Removes processed events, and forgets their delivery keys.
    pub fn complete(&self, seqs: &[u64]) -> Result<(), QueueError> {
        self.write(|txn| {
            let mut table = txn.open_table(QUEUE).map_err(storage)?;
            let mut seen = txn.open_table(SEEN).map_err(storage)?;
            for seq in seqs {
                let key = table
                    .remove(seq)
                    .map_err(storage)?
                    .and_then(|bytes| serde_json::from_slice::<QueuedEvent>(bytes.value()).ok())
                    .and_then(|q| q.key);
                if let Some(key) = key {
                    seen.remove(&key).map_err(storage)?;
                }
            }
            Ok(())
        })
    }

    /// Records a failed attempt on an event that stays queued.
    pub fn record_attempt(&self, seq: u64, queued: &QueuedEvent) -> Result<(), QueueError> {
        let bytes = serde_json::to_vec(queued).map_err(storage)?;
        self.write(|txn| {
            let mut table = txn.open_table(QUEUE).map_err(storage)?;
            table.insert(seq, bytes.as_slice()).map_err(storage)?;
            Ok(())
        })
    }

    /// Moves an event that can never succeed to the failed table.
    pub fn fail(&self, seq: u64, queued: &QueuedEvent) -> Result<(), QueueError> {
        let bytes = serde_json::to_vec(queued).map_err(storage)?;
        self.write(|txn| {
            txn.open_table(QUEUE)
                .map_err(storage)?
                .remove(seq)
                .map_err(storage)?;
            if let Some(key) = &queued.key {
                txn.open_table(SEEN)
                    .map_err(storage)?
                    .remove(key)
                    .map_err(storage)?;
            }
            txn.open_table(FAILED)
                .map_err(storage)?
                .insert(seq, bytes.as_slice())
                .map_err(storage)?;
            Ok(())
        })
    }

    fn write<T>(
        &self,
        f: impl FnOnce(&redb::WriteTransaction) -> Result<T, QueueError>,
    ) -> Result<T, QueueError> {
        let mut txn = self.db.begin_write().map_err(storage)?;
        txn.set_durability(Durability::Immediate).map_err(storage)?;
        let value = f(&txn)?;
        txn.commit().map_err(|e| {
            self.db.check(&e);
            storage(e)
        })?;
        Ok(value)
    }
}

/// Folds waiting enqueues into one durable transaction each round.
async fn committer(db: Db, mut rx: mpsc::Receiver<Pending>, notify: Arc<Notify>) {
    while let Some(first) = rx.recv().await {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(p) => group.push(p),
                Err(_) => break,
            }
        }
        let items: Vec<([u8; 32], FileEvent)> =
            group.iter().map(|p| (p.key, p.event.clone())).collect();
        let db = db.clone();
        let results = tokio::task::spawn_blocking(move || commit_group(&db, &items))
            .await
            .unwrap_or_else(|e| Err(storage(e)));
        match results {
            Ok(results) => {
                for (pending, result) in group.into_iter().zip(results) {
                    let _ = pending.reply.send(Ok(result));
                }
                notify.notify_one();
            }
            Err(e) => {
                tracing::error!(error = %e, "could not queue webhook deliveries");
                for pending in group {
                    let _ = pending.reply.send(Err(QueueError::Storage(e.to_string())));
                }
            }
        }
    }
}

fn commit_group(db: &Db, items: &[([u8; 32], FileEvent)]) -> Result<Vec<Enqueued>, QueueError> {
    let mut txn = db.begin_write().map_err(storage)?;
    txn.set_durability(Durability::Immediate).map_err(storage)?;
    let mut results = Vec::with_capacity(items.len());
    {
        let mut queue = txn.open_table(QUEUE).map_err(storage)?;
        let mut seen = txn.open_table(SEEN).map_err(storage)?;
        let mut counters = txn.open_table(COUNTERS).map_err(storage)?;
        let mut next = counters
            .get("next_seq")
            .map_err(storage)?
            .map(|v| v.value())
            .unwrap_or(1);
        let now = crate::clock::now_ms();
        for (key, event) in items {
            if seen.get(key).map_err(storage)?.is_some() {
                results.push(Enqueued::Duplicate);
                continue;
            }
            seen.insert(key, next).map_err(storage)?;
            let queued = QueuedEvent {
                event: event.clone(),
                received_ms: now,
                attempts: 0,
                last_error: None,
                key: Some(*key),
            };
            let bytes = serde_json::to_vec(&queued).map_err(storage)?;
            queue.insert(next, bytes.as_slice()).map_err(storage)?;
            results.push(Enqueued::Queued(next));
            next += 1;
        }
        counters.insert("next_seq", next).map_err(storage)?;
    }
    txn.commit().map_err(|e| {
        db.check(&e);
        storage(e)
    })?;
    Ok(results)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::appapi::event::{Area, EventKind, Node};

    fn event(path: &str) -> FileEvent {
        FileEvent {
            kind: EventKind::Written,
            user: Some("alice".into()),
            time: 1,
            node: Node {
                id: Some(7),
                uid: "alice".into(),
                area: Area::Files,
                path: path.into(),
            },
            source: None,
        }
    }

    #[tokio::test]
    async fn queues_durably_once_and_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let db = crate::db::open(dir.path()).unwrap();
        let q = Queue::open(db.clone()).unwrap();
        let a = q.enqueue(delivery_key(b"a"), event("a")).await.unwrap();
        let b = q.enqueue(delivery_key(b"b"), event("b")).await.unwrap();
        assert_eq!(
            q.enqueue(delivery_key(b"a"), event("a")).await.unwrap(),
            Enqueued::Duplicate
        );
        assert!(matches!((a, b), (Enqueued::Queued(1), Enqueued::Queued(2))));
        let waiting = q.peek(10).unwrap();
        assert_eq!(
            waiting
                .iter()
                .map(|(_, e)| e.event.node.path.as_str())
                .collect::<Vec<_>>(),
            ["a", "b"]
        );
        // Once processed, the same body is a new change (two saves in one second).
        q.complete(&[1]).unwrap();
        let again = q.enqueue(delivery_key(b"a"), event("a")).await.unwrap();
        assert_eq!(again, Enqueued::Queued(3));
        let dup = q.enqueue(delivery_key(b"a"), event("a")).await.unwrap();
        assert_eq!(dup, Enqueued::Duplicate);
        q.complete(&[3]).unwrap();
        let mut second = waiting[1].1.clone();
        second.attempts = 3;
        q.fail(2, &second).unwrap();
        assert!(q.is_empty().unwrap());
        assert_eq!(q.failed().unwrap()[0].1.attempts, 3);
        // Sequence numbers keep growing after the queue empties; a failed event's key is
        // forgotten too.
        let b_again = q.enqueue(delivery_key(b"b"), event("b")).await.unwrap();
        assert_eq!(b_again, Enqueued::Queued(4));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_enqueues_all_land() {
        let dir = tempfile::tempdir().unwrap();
        let q = Queue::open(crate::db::open(dir.path()).unwrap()).unwrap();
        let mut tasks = Vec::new();
        for i in 0..200u32 {
            let q = q.clone();
            tasks.push(tokio::spawn(async move {
                q.enqueue(delivery_key(&i.to_be_bytes()), event(&format!("f{i}")))
                    .await
            }));
        }
        for t in tasks {
            assert!(matches!(t.await.unwrap().unwrap(), Enqueued::Queued(_)));
        }
        assert_eq!(q.len().unwrap(), 200);
    }
}
