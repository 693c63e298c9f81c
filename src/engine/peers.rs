//! The engine's side of the swarm: which libraries changed here, which entries arrived from
//! peers, and pairing a device with a library.
//!
//! Data flows one way each direction, and the engine never names the swarm:
//!
//! ```text
//!   append / create / pair ──▶ Engine::library_changes() ──▶ (serve) NodeHandle::library_changed
//!   NodeEvent::Pulled ──▶ (serve) Engine::remote_entries(lib) ──▶ events: EntryAppended, LibraryState
//! ```
//!
//! # Which entries are new
//!
//! A pull only says "n entries of library L were stored". The engine remembers, per library,
//! the version vector it has already shown the panel (per author, the highest sequence
//! number seen). Each author's entries form one chain, so
//! [`ChainStore::missing_for_vector`] against that vector yields exactly the entries not
//! shown yet, ancestors first. Local appends raise this device's own component as they
//! happen, so a pull never re-reads what the engine wrote itself.

use std::collections::{HashMap, VecDeque};

use tokio::sync::broadcast;

use super::{lock, Engine, EngineError};
use ed25519_dalek::SigningKey;

use super::events::{EngineEvent, RECENT_ENTRIES};
use crate::chain::{ChainError, ChainStore, DeviceKey, Entry, LibraryId, Op};

/// Library changes buffered for a slow listener before it misses some (it then re-announces
/// every library, see [`Engine::library_changes`]).
pub(crate) const CHANGES_BUFFER: usize = 1024;

/// Entries read per step while looking for what a pull brought.
const READ_BATCH: usize = 512;

/// Per library, per author: the highest sequence number the panel has been shown.
pub(crate) type Seen = HashMap<LibraryId, HashMap<DeviceKey, u64>>;

/// The engine's side of the swarm.
pub(crate) struct PeersState {
    /// Libraries changed here, for the swarm ([`Engine::library_changes`]).
    pub(super) changes: broadcast::Sender<LibraryId>,
    /// What has been reported of each library.
    pub(super) seen: std::sync::Mutex<Seen>,
    /// One reader of peers' entries at a time.
    pub(super) remote_lock: tokio::sync::Mutex<()>,
    /// Devices' names from membership entries, for the panel's peer list.
    pub(super) names: std::sync::Mutex<HashMap<DeviceKey, String>>,
}

impl PeersState {
    pub(super) fn new(seen: Seen) -> Self {
        PeersState {
            changes: broadcast::channel(CHANGES_BUFFER).0,
            seen: std::sync::Mutex::new(seen),
            remote_lock: tokio::sync::Mutex::new(()),
            names: std::sync::Mutex::new(HashMap::new()),
        }
    }
}

/// Appends an `AddDevice` for `device` to `library`, signed with `key`, unless `device` is
/// a member already (then `None`). Shared by `harpbridge pair` and the panel's pairing.
pub fn add_member(
    chain: &ChainStore,
    key: &SigningKey,
    library: &LibraryId,
    device: DeviceKey,
    name: &str,
) -> Result<Option<Entry>, ChainError> {
    if chain.is_member(library, &device) {
        return Ok(None);
    }
    let op = Op::AddDevice {
        device,
        name: name.to_owned(),
    };
    chain.append(library, key, op).map(Some)
}

impl Engine {
    /// Follows the libraries that changed here (appends, a new library, a paired device):
    /// the swarm announces their new heads to peers. A receiver that lags should treat every
    /// library as changed.
    pub fn library_changes(&self) -> broadcast::Receiver<LibraryId> {
        self.inner.peers.changes.subscribe()
    }

    /// Notes local entries: tells [`Engine::library_changes`] listeners, and marks them seen
    /// so that [`Engine::remote_entries`] does not read them again.
    pub(crate) fn local_entries(&self, library: &LibraryId, entries: &[Entry]) {
        self.note_names(entries.iter());
        let me = self.inner.identity.device_key();
        if let Some(top) = entries.iter().map(|e| e.meta().seq).max() {
            let mut seen = lock(&self.inner.peers.seen);
            let mine = seen.entry(*library).or_default().entry(me).or_default();
            *mine = (*mine).max(top);
        }
        // Nobody listening (no swarm) is fine.
        let _ = self.inner.peers.changes.send(*library);
    }

    /// Shows the entries that peers' pulls stored in `library` since the last call: each
    /// becomes an `entry_appended` on the panel (at most the last [`RECENT_ENTRIES`], which is
    /// all the panel keeps), then the library's state is published and the content store
    /// learns which versions its tree needs now. Returns how many entries were new.
    pub async fn remote_entries(&self, library: LibraryId) -> Result<usize, EngineError> {
        // One reader at a time, so two pulls in a row do not show the same entry twice.
        let _guard = self.inner.peers.remote_lock.lock().await;
        let engine = self.clone();
        let (count, shown) = tokio::task::spawn_blocking(move || engine.unseen(&library)).await??;
        if count == 0 {
            return Ok(0);
        }
        self.chain_arrived(&library);
        tracing::info!(%library, entries = count, "entries from peers stored");
        for entry in shown {
            self.inner
                .events
                .emit(EngineEvent::EntryAppended { entry, user: None });
        }
        if let Some(known) = self.inner.libraries.get(&library) {
            self.publish_library(&known);
            if let Err(e) = self.refresh_current(&library).await {
                tracing::warn!(%library, error = %e, "could not update the versions the library needs");
            }
            // Nextcloud is to hold the new tree: write-back applies the difference.
            self.wake_writeback();
        }
        Ok(count)
    }

    /// Reads the entries of `library` not seen yet (blocking): how many, and the last
    /// [`RECENT_ENTRIES`] of them written by other devices (this device's own come back only
    /// if its data directory lost them; they count, and are not shown twice).
    fn unseen(&self, library: &LibraryId) -> Result<(usize, Vec<Entry>), EngineError> {
        let me = self.inner.identity.device_key();
        let vector: Vec<(DeviceKey, u64)> = lock(&self.inner.peers.seen)
            .get(library)
            .map(|v| v.iter().map(|(k, n)| (*k, *n)).collect())
            .unwrap_or_default();
        let missing = self
            .inner
            .chain
            .missing_for_vector(library, &vector, READ_BATCH)?;
        let mut newest: HashMap<DeviceKey, u64> = HashMap::new();
        let mut shown = VecDeque::new();
        let mut count = 0;
        for batch in missing {
            for entry in batch? {
                if matches!(entry.meta().op, Op::AddDevice { .. }) {
                    self.note_names(std::iter::once(&entry));
                }
                let author = entry.meta().author;
                let top = newest.entry(author).or_default();
                *top = (*top).max(entry.meta().seq);
                count += 1;
                if author == me {
                    continue;
                }
                shown.push_back(entry);
                if shown.len() > RECENT_ENTRIES {
                    shown.pop_front();
                }
            }
        }
        let mut seen = lock(&self.inner.peers.seen);
        let vector = seen.entry(*library).or_default();
        for (author, top) in newest {
            let n = vector.entry(author).or_default();
            *n = (*n).max(top);
        }
        Ok((count, shown.into()))
    }

    /// Pairs `device` with `library`: appends its `AddDevice` (signed by this device, which
    /// must be a member), shows it on the panel and tells the swarm. `None` if it was a
    /// member already.
    pub async fn add_device(
        &self,
        library: LibraryId,
        device: DeviceKey,
        name: &str,
    ) -> Result<Option<Entry>, EngineError> {
        let lock = self.write_lock(&library);
        let _guard = lock.lock().await;
        let chain = self.inner.chain.clone();
        let key = self.inner.identity.signing_key().clone();
        let name = name.to_owned();
        let entry =
            tokio::task::spawn_blocking(move || add_member(&chain, &key, &library, device, &name))
                .await??;
        let Some(entry) = entry else {
            return Ok(None);
        };
        tracing::info!(%library, device = %device.display_name(), hash = %entry.hash(), "device paired");
        self.local_entries(&library, std::slice::from_ref(&entry));
        self.inner.events.emit(EngineEvent::EntryAppended {
            entry: entry.clone(),
            user: None,
        });
        if let Some(known) = self.inner.libraries.get(&library) {
            self.publish_library(&known);
        }
        Ok(Some(entry))
    }
}

impl Engine {
    /// A device's name, as the membership entry that added it says (the latest one seen by
    /// this process; names of entries older than the process are read by
    /// `learn_names` in the background after start).
    pub fn device_name(&self, device: &DeviceKey) -> Option<String> {
        lock(&self.inner.peers.names).get(device).cloned()
    }

    fn note_names<'a>(&self, entries: impl Iterator<Item = &'a Entry>) {
        let mut names = lock(&self.inner.peers.names);
        for entry in entries {
            if let Op::AddDevice { device, name } = &entry.meta().op {
                if !name.is_empty() {
                    names.insert(*device, name.clone());
                }
            }
        }
    }

    /// Reads every library's membership names (blocking: one pass over every entry), without
    /// replacing a name learned meanwhile from a newer entry.
    pub(crate) fn learn_names(&self) {
        let mut found: HashMap<DeviceKey, String> = HashMap::new();
        for library in self.inner.chain.libraries() {
            let Ok(all) = self
                .inner
                .chain
                .missing_for_vector(&library, &[], READ_BATCH)
            else {
                continue;
            };
            for batch in all {
                let Ok(batch) = batch else { break };
                for entry in batch {
                    if let Op::AddDevice { device, name } = &entry.meta().op {
                        if !name.is_empty() {
                            found.insert(*device, name.clone());
                        }
                    }
                }
            }
        }
        let mut names = lock(&self.inner.peers.names);
        for (device, name) in found {
            names.entry(device).or_insert(name);
        }
    }
}

/// The vectors every library held now has (the starting point of [`Seen`]).
pub(crate) fn seen_now(chain: &ChainStore) -> Seen {
    chain
        .libraries()
        .into_iter()
        .filter_map(|lib| {
            let vector = chain.version_vector(&lib).ok()?;
            Some((lib, vector.into_iter().collect()))
        })
        .collect()
}
