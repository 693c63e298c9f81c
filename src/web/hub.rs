//! The panel hub: the live state the panel shows, and its fan-out to WebSocket clients.
//!
//! The parts that do the work (chain, swarm, transfers, libraries) call
//! [`Hub::publish`] with an [`Event`]; the hub applies it to its state (what snapshots
//! and the REST API read) and hands the serialized message to every connected client that
//! may see it.
//!
//! Fan-out rules, decided for a server that must never be slowed by a browser:
//!
//! - Each client has a bounded queue (a `tokio::sync::mpsc` channel of
//!   [`DEFAULT_QUEUE`] messages). Publishing uses `try_send` only and never awaits.
//! - A client whose queue is full is removed at once and told to go (its connection task
//!   closes the socket with [`CLOSE_TOO_SLOW`](super::events::CLOSE_TOO_SLOW)). It
//!   reconnects and gets a fresh snapshot.
//! - A message is serialized once and shared by all clients (`Utf8Bytes` is
//!   reference-counted).
//! - State, sequence numbers and the client list sit behind one mutex, so a snapshot
//!   taken at subscription and the events after it line up exactly: the first event a
//!   new client gets has `seq = snapshot.seq + 1` (or later, for events it may not see).
//!   The lock is held for the fan-out loop: `try_send` is a few hundred nanoseconds, so
//!   even 1,000 clients cost well under a millisecond.
//!
//! The hub remembers the last [`ACTIVITY_LIMIT`] chain entries and the last
//! [`FINISHED_TRANSFERS`] finished transfers; everything else it holds is current state.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use axum::extract::ws::Utf8Bytes;
use tokio::sync::{mpsc, Notify};

use super::events::{
    Body, ChainEntry, Device, Event, Library, Peer, ServerMessage, Snapshot, Transfer, Viewer,
    ACTIVITY_LIMIT,
};

/// Messages a client may have waiting before it counts as too slow.
pub const DEFAULT_QUEUE: usize = 256;
/// Finished (done or failed) transfers kept for the panel.
pub const FINISHED_TRANSFERS: usize = 50;

/// The hub. Cheap to clone; all clones share one state.
#[derive(Clone)]
pub struct Hub {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub")
            .field("clients", &self.client_count())
            .finish_non_exhaustive()
    }
}

struct Inner {
    state: Mutex<State>,
    queue: usize,
}

struct State {
    seq: u64,
    device: Device,
    libraries: BTreeMap<String, Library>,
    peers: BTreeMap<String, Peer>,
    transfers: BTreeMap<String, Transfer>,
    activity: VecDeque<ChainEntry>,
    clients: HashMap<u64, Client>,
    next_client: u64,
    dropped_slow: u64,
}

struct Client {
    viewer: Viewer,
    tx: mpsc::Sender<Utf8Bytes>,
    kick: Arc<Notify>,
}

/// Who may see an event.
enum Audience {
    All,
    Owner(String),
    AdminsOnly,
}

impl Audience {
    fn admits(&self, viewer: &Viewer) -> bool {
        match self {
            Audience::All => true,
            Audience::Owner(owner) => viewer.sees_owner(owner),
            Audience::AdminsOnly => viewer.is_admin,
        }
    }
}

/// One client's end of the hub: its snapshot, its queue, and the signal that it was
/// dropped for being slow. Dropping it unsubscribes.
pub struct Subscription {
    pub id: u64,
    pub snapshot: Snapshot,
    pub rx: mpsc::Receiver<Utf8Bytes>,
    /// Notified when the hub dropped this client because its queue was full.
    pub kicked: Arc<Notify>,
    hub: Hub,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.hub.unsubscribe(self.id);
    }
}

impl Hub {
    /// A hub for this device, with the default queue size.
    pub fn new(device: Device) -> Hub {
        Hub::with_queue(device, DEFAULT_QUEUE)
    }

    /// A hub whose clients may have `queue` messages waiting (at least 1).
    pub fn with_queue(device: Device, queue: usize) -> Hub {
        Hub {
            inner: Arc::new(Inner {
                state: Mutex::new(State {
                    seq: 0,
                    device,
                    libraries: BTreeMap::new(),
                    peers: BTreeMap::new(),
                    transfers: BTreeMap::new(),
                    activity: VecDeque::new(),
                    clients: HashMap::new(),
                    next_client: 1,
                    dropped_slow: 0,
                }),
                queue: queue.max(1),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves consistent data (every update is a
        // single insert or remove), so a poisoned lock is still usable.
        crate::locks::lock(&self.inner.state)
    }

    /// Applies `event` and sends it to every client allowed to see it. Never waits for a
    /// client. Returns the event's `seq`.
    pub fn publish(&self, event: Event) -> u64 {
        let mut state = self.lock();
        state.seq += 1;
        let seq = state.seq;
        let audience = state.audience(&event);
        state.apply(&event);
        let text = Utf8Bytes::from(ServerMessage::new(Body::from_event(seq, event)).to_json());
        let mut slow = Vec::new();
        for (id, client) in &state.clients {
            if audience.admits(&client.viewer) && client.tx.try_send(text.clone()).is_err() {
                // Full: too slow. Closed: its task is ending; remove it either way.
                slow.push(*id);
            }
        }
        for id in slow {
            if let Some(client) = state.clients.remove(&id) {
                if !client.tx.is_closed() {
                    state.dropped_slow += 1;
                    tracing::info!(client = id, "dropped a panel client that read too slowly");
                }
                client.kick.notify_one();
            }
        }
        seq
    }

    /// Registers a client and returns its snapshot and queue, atomically with respect to
    /// [`publish`](Self::publish).
    pub fn subscribe(&self, viewer: Viewer) -> Subscription {
        let (tx, rx) = mpsc::channel(self.inner.queue);
        let kicked = Arc::new(Notify::new());
        let mut state = self.lock();
        let snapshot = state.snapshot(&viewer);
        let id = state.next_client;
        state.next_client += 1;
        state.clients.insert(
            id,
            Client {
                viewer,
                tx,
                kick: kicked.clone(),
            },
        );
        drop(state);
        Subscription {
            id,
            snapshot,
            rx,
            kicked,
            hub: self.clone(),
        }
    }

    fn unsubscribe(&self, id: u64) {
        self.lock().clients.remove(&id);
    }

    /// Connected clients.
    pub fn client_count(&self) -> usize {
        self.lock().clients.len()
    }

    /// Clients dropped so far because their queue was full.
    pub fn dropped_slow(&self) -> u64 {
        self.lock().dropped_slow
    }

    /// Sets this device's id once the identity exists (snapshots carry it).
    pub fn set_device_id(&self, device_id: Option<String>) {
        self.lock().device.device_id = device_id;
    }

    pub fn device(&self) -> Device {
        self.lock().device.clone()
    }

    pub fn snapshot(&self, viewer: &Viewer) -> Snapshot {
        self.lock().snapshot(viewer)
    }

    pub fn libraries(&self, viewer: &Viewer) -> Vec<Library> {
        self.lock().libraries(viewer)
    }

    pub fn library(&self, id: &str) -> Option<Library> {
        self.lock().libraries.get(id).cloned()
    }

    pub fn peers(&self) -> Vec<Peer> {
        self.lock().peers.values().cloned().collect()
    }

    pub fn peer(&self, peer_id: &str) -> Option<Peer> {
        self.lock().peers.get(peer_id).cloned()
    }

    pub fn transfers(&self, viewer: &Viewer) -> Vec<Transfer> {
        self.lock().transfers(viewer)
    }

    /// Recent chain entries the viewer may see, oldest first, optionally of one library,
    /// at most `limit`.
    pub fn activity(
        &self,
        viewer: &Viewer,
        library: Option<&str>,
        limit: usize,
    ) -> Vec<ChainEntry> {
        let state = self.lock();
        let mut entries: Vec<ChainEntry> = state
            .activity
            .iter()
            .rev()
            .filter(|e| library.is_none_or(|id| e.library_id == id))
            .filter(|e| state.library_visible(viewer, &e.library_id))
            .take(limit)
            .cloned()
            .collect();
        entries.reverse();
        entries
    }
}

impl State {
    fn owner_of(&self, library_id: &str) -> Audience {
        match self.libraries.get(library_id) {
            Some(library) => Audience::Owner(library.owner.clone()),
            None => Audience::AdminsOnly,
        }
    }

    fn library_visible(&self, viewer: &Viewer, library_id: &str) -> bool {
        self.owner_of(library_id).admits(viewer)
    }

    /// Who may see `event`, judged before it is applied (a removed library's owner).
    fn audience(&self, event: &Event) -> Audience {
        match event {
            Event::EntryAppended { entry } => self.owner_of(&entry.library_id),
            Event::PeerChanged { .. } | Event::PeerRemoved { .. } => Audience::All,
            Event::TransferProgress { transfer } => self.owner_of(&transfer.library_id),
            Event::LibraryState { library } => Audience::Owner(library.owner.clone()),
            Event::LibraryRemoved { library_id } => self.owner_of(library_id),
        }
    }

    fn apply(&mut self, event: &Event) {
        match event {
            Event::EntryAppended { entry } => {
                self.activity.push_back(entry.clone());
                while self.activity.len() > ACTIVITY_LIMIT {
                    self.activity.pop_front();
                }
            }
            Event::PeerChanged { peer } => {
                self.peers.insert(peer.peer_id.clone(), peer.clone());
            }
            Event::PeerRemoved { peer_id } => {
                self.peers.remove(peer_id);
            }
            Event::TransferProgress { transfer } => {
                self.transfers.insert(transfer.id.clone(), transfer.clone());
                self.prune_transfers();
            }
            Event::LibraryState { library } => {
                self.libraries.insert(library.id.clone(), library.clone());
            }
            Event::LibraryRemoved { library_id } => {
                self.libraries.remove(library_id);
                self.transfers.retain(|_, t| &t.library_id != library_id);
            }
        }
    }

    fn prune_transfers(&mut self) {
        let mut finished: Vec<(u64, String)> = self
            .transfers
            .values()
            .filter(|t| t.state.is_finished())
            .map(|t| (t.updated_ms, t.id.clone()))
            .collect();
        if finished.len() <= FINISHED_TRANSFERS {
            return;
        }
        finished.sort();
        let excess = finished.len() - FINISHED_TRANSFERS;
        for (_, id) in finished.into_iter().take(excess) {
            self.transfers.remove(&id);
        }
    }

    fn libraries(&self, viewer: &Viewer) -> Vec<Library> {
        self.libraries
            .values()
            .filter(|l| viewer.sees_owner(&l.owner))
            .cloned()
            .collect()
    }

    fn transfers(&self, viewer: &Viewer) -> Vec<Transfer> {
        self.transfers
            .values()
            .filter(|t| self.library_visible(viewer, &t.library_id))
            .cloned()
            .collect()
    }

    fn snapshot(&self, viewer: &Viewer) -> Snapshot {
        Snapshot {
            seq: self.seq,
            device: self.device.clone(),
            libraries: self.libraries(viewer),
            peers: self.peers.values().cloned().collect(),
            transfers: self.transfers(viewer),
            activity: self
                .activity
                .iter()
                .filter(|e| self.library_visible(viewer, &e.library_id))
                .cloned()
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::web::events::{
        LibraryStatus, Operation, TransferDirection, TransferState, Verification,
    };

    fn device() -> Device {
        Device {
            device_id: None,
            version: "0.1.0".into(),
        }
    }

    fn viewer(uid: &str, is_admin: bool) -> Viewer {
        Viewer {
            uid: uid.into(),
            is_admin,
        }
    }

    fn library(id: &str, owner: &str) -> Library {
        Library {
            id: id.into(),
            name: id.into(),
            owner: owner.into(),
            folder: "/Sync".into(),
            heads: vec![],
            entries: 0,
            verification: Verification::unverified(),
            status: LibraryStatus::Idle,
            error: None,
        }
    }

    fn entry(library_id: &str, n: u64) -> ChainEntry {
        ChainEntry {
            library_id: library_id.into(),
            hash: format!("{n:064x}"),
            parents: vec![],
            author: "dev".into(),
            user: None,
            seq: n,
            lamport: n,
            time_ms: n,
            op: Operation::Mkdir {
                path: format!("d{n}"),
            },
        }
    }

    fn transfer(id: &str, state: TransferState, updated_ms: u64) -> Transfer {
        Transfer {
            id: id.into(),
            library_id: "a".into(),
            path: "f".into(),
            direction: TransferDirection::Download,
            peer_id: None,
            bytes_done: 0,
            bytes_total: 10,
            rate_bps: 0.0,
            eta_s: None,
            state,
            error: None,
            updated_ms,
        }
    }

    fn seq_of(text: &str) -> u64 {
        let value: serde_json::Value = serde_json::from_str(text).unwrap();
        value["seq"].as_u64().unwrap()
    }

    #[test]
    fn snapshot_and_events_line_up() {
        let hub = Hub::new(device());
        hub.publish(Event::LibraryState {
            library: library("a", "alice"),
        });
        let mut sub = hub.subscribe(viewer("alice", false));
        assert_eq!(sub.snapshot.seq, 1);
        assert_eq!(sub.snapshot.libraries.len(), 1);
        hub.publish(Event::EntryAppended {
            entry: entry("a", 1),
        });
        let text = sub.rx.try_recv().unwrap();
        assert_eq!(seq_of(&text), 2);
        assert!(text.as_str().contains("\"type\":\"entry_appended\""));
    }

    #[test]
    fn users_see_only_their_libraries() {
        let hub = Hub::new(device());
        hub.publish(Event::LibraryState {
            library: library("a", "alice"),
        });
        hub.publish(Event::LibraryState {
            library: library("b", "bob"),
        });
        let mut alice = hub.subscribe(viewer("alice", false));
        let mut admin = hub.subscribe(viewer("admin", true));
        assert_eq!(alice.snapshot.libraries.len(), 1);
        assert_eq!(admin.snapshot.libraries.len(), 2);
        hub.publish(Event::EntryAppended {
            entry: entry("b", 1),
        });
        hub.publish(Event::EntryAppended {
            entry: entry("zzz", 2),
        });
        assert!(alice.rx.try_recv().is_err(), "bob's entry leaked to alice");
        assert_eq!(seq_of(&admin.rx.try_recv().unwrap()), 3);
        assert_eq!(seq_of(&admin.rx.try_recv().unwrap()), 4);
        assert_eq!(hub.activity(&viewer("alice", false), None, 10).len(), 0);
        assert_eq!(hub.activity(&viewer("admin", true), Some("b"), 10).len(), 1);
    }

    #[test]
    fn a_full_queue_drops_that_client_only() {
        let hub = Hub::with_queue(device(), 2);
        let slow = hub.subscribe(viewer("admin", true));
        let mut fast = hub.subscribe(viewer("admin", true));
        for n in 0..3 {
            hub.publish(Event::PeerRemoved {
                peer_id: format!("p{n}"),
            });
            // the fast client keeps up
            assert!(fast.rx.try_recv().is_ok());
        }
        assert_eq!(hub.client_count(), 1);
        assert_eq!(hub.dropped_slow(), 1);
        // the slow one was told
        let kicked = slow.kicked.clone();
        let notified = kicked.notified();
        futures_util::pin_mut!(notified);
        assert!(futures_util::FutureExt::now_or_never(notified).is_some());
        drop(slow);
        assert_eq!(hub.client_count(), 1);
        drop(fast);
        assert_eq!(hub.client_count(), 0);
    }

    #[test]
    fn activity_is_bounded_and_finished_transfers_pruned() {
        let hub = Hub::new(device());
        hub.publish(Event::LibraryState {
            library: library("a", "alice"),
        });
        for n in 0..(ACTIVITY_LIMIT as u64 + 10) {
            hub.publish(Event::EntryAppended {
                entry: entry("a", n),
            });
        }
        let admin = viewer("admin", true);
        let snapshot = hub.snapshot(&admin);
        assert_eq!(snapshot.activity.len(), ACTIVITY_LIMIT);
        assert_eq!(snapshot.activity[0].seq, 10);
        for n in 0..(FINISHED_TRANSFERS as u64 + 5) {
            hub.publish(Event::TransferProgress {
                transfer: transfer(&format!("t{n}"), TransferState::Done, n),
            });
        }
        hub.publish(Event::TransferProgress {
            transfer: transfer("running", TransferState::Running, 0),
        });
        let transfers = hub.transfers(&admin);
        assert_eq!(transfers.len(), FINISHED_TRANSFERS + 1);
        assert!(transfers.iter().any(|t| t.id == "running"));
        assert!(!transfers.iter().any(|t| t.id == "t0"));
    }
}
