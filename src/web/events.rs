//! The panel's wire format: what the server tells the browser, over the WebSocket and
//! the REST API. `ui/src/protocol.ts` mirrors these types; this file is the reference.
//!
//! # Server → client messages (WebSocket `/ws`, text frames, JSON)
//!
//! Every message is one JSON object with the protocol version `v` (now `1`) and a `type`:
//!
//! | `type` | fields | meaning |
//! |---|---|---|
//! | `snapshot` | `snapshot`: [`Snapshot`] | the whole state; first message on every connection |
//! | `entry_appended` | `seq`, `entry`: [`ChainEntry`] | a chain entry was appended (local or from a peer) |
//! | `peer_changed` | `seq`, `peer`: [`Peer`] | a peer appeared or its state, link, RTT or throughput changed |
//! | `peer_removed` | `seq`, `peer_id` | a peer is gone from the list |
//! | `transfer_progress` | `seq`, `transfer`: [`Transfer`] | a transfer started, moved on, finished or failed |
//! | `library_state` | `seq`, `library`: [`Library`] | a library was added or its head, verification or status changed |
//! | `library_removed` | `seq`, `library_id` | a library was removed |
//! | `ping` | `time_ms` | sent every 20 s: keeps HaRP's tunnel open, lets the client spot a dead link |
//!
//! For example:
//!
//! ```json
//! {"v":1,"type":"entry_appended","seq":42,"entry":{"library_id":"photos","hash":"9f…",
//!  "parents":["41…"],"author":"12D3KooW…","user":"alice","seq":7,"lamport":42,
//!  "time_ms":1764090000000,"op":{"kind":"put","path":"a/b.jpg","size":1048576}}}
//! ```
//!
//! Rules:
//!
//! - `seq` is the hub's event counter, strictly increasing over the process's life. A
//!   snapshot carries the `seq` of the last event it includes, so a client drops any event
//!   with `seq <= snapshot.seq`. After a reconnect the server sends a fresh snapshot: that
//!   is how a client resumes, whatever it missed.
//! - A client that sees a `v` it does not know stops and asks the user to reload; one that
//!   sees an unknown `type` ignores it. Adding a type or an optional field keeps `v: 1`;
//!   changing or removing a field's meaning makes `v: 2`.
//! - Times are Unix milliseconds, sizes bytes, rates bytes per second, hashes lower-case
//!   hex (SHA3-256 for chain entries), device ids libp2p PeerIds.
//! - A client whose queue fills up (it reads too slowly) is disconnected with close code
//!   [`CLOSE_TOO_SLOW`]; it reconnects and gets a snapshot.
//! - The client sends nothing the server needs; what it sends is ignored.
//!
//! # Visibility
//!
//! Libraries belong to a Nextcloud user. An admin sees everything; another user sees the
//! device, every peer, and only the libraries they own with those libraries' entries and
//! transfers. Snapshots and events are filtered per connection ([`Viewer`]).
//!
//! # REST shapes
//!
//! `GET /api/snapshot` answers a [`Snapshot`], `GET /api/overview` an [`Overview`], the
//! list routes a JSON object with one list (`{"peers":[…]}`, `{"entries":[…]}`,
//! `{"transfers":[…]}`, `{"libraries":[…]}`), errors [`ApiErrorBody`]. See `api.rs`.

use serde::{Deserialize, Serialize};

/// The protocol version in every message's `v`.
pub const PROTOCOL_VERSION: u32 = 1;

/// How many recent chain entries a snapshot carries.
pub const ACTIVITY_LIMIT: usize = crate::engine::events::RECENT_ENTRIES;

/// WebSocket close code for a client dropped because its queue was full.
pub const CLOSE_TOO_SLOW: u16 = 4000;

/// How a peer is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LinkKind {
    Lan,
    Wan,
    Unknown,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PeerState {
    Connected,
    Disconnected,
    /// Found on the network, not trusted: gets nothing until an admin pairs it.
    Discovered,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Throughput {
    pub rx_bps: f64,
    pub tx_bps: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Peer {
    pub peer_id: String,
    pub name: Option<String>,
    /// On a library's membership list.
    pub trusted: bool,
    pub state: PeerState,
    pub link: LinkKind,
    pub addresses: Vec<String>,
    pub rtt_ms: Option<f64>,
    pub throughput: Throughput,
    pub last_seen_ms: Option<u64>,
}

/// What a chain entry records (the design's operations).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Operation {
    Put {
        path: String,
        size: u64,
    },
    Delete {
        path: String,
    },
    Rename {
        from: String,
        to: String,
    },
    Mkdir {
        path: String,
    },
    Merge,
    AddDevice {
        device: String,
        /// The name the device was added under.
        name: Option<String>,
    },
    RemoveDevice {
        device: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainEntry {
    pub library_id: String,
    pub hash: String,
    pub parents: Vec<String>,
    /// The authoring device's PeerId.
    pub author: String,
    /// The Nextcloud user whose change it records, when known.
    pub user: Option<String>,
    /// The author's sequence number.
    pub seq: u64,
    pub lamport: u64,
    pub time_ms: u64,
    pub op: Operation,
}

impl ChainEntry {
    /// The panel's view of a chain entry (`user`: the Nextcloud user whose change it
    /// records, which the chain itself does not hold).
    pub fn from_chain(entry: &crate::chain::Entry, user: Option<String>) -> ChainEntry {
        use crate::chain::Op;
        let meta = entry.meta();
        let op = match &meta.op {
            Op::Put { path, size, .. } => Operation::Put {
                path: path.as_str().to_owned(),
                size: *size,
            },
            Op::Delete { path } => Operation::Delete {
                path: path.as_str().to_owned(),
            },
            Op::Rename { from, to } => Operation::Rename {
                from: from.as_str().to_owned(),
                to: to.as_str().to_owned(),
            },
            Op::Mkdir { path } => Operation::Mkdir {
                path: path.as_str().to_owned(),
            },
            Op::Merge => Operation::Merge,
            Op::AddDevice { device, name } => Operation::AddDevice {
                device: device.display_name(),
                name: (!name.is_empty()).then(|| name.clone()),
            },
            Op::RemoveDevice { device } => Operation::RemoveDevice {
                device: device.display_name(),
            },
        };
        ChainEntry {
            library_id: meta.library.to_hex(),
            hash: entry.hash().to_hex(),
            parents: entry.parents().iter().map(|p| p.to_hex()).collect(),
            author: meta.author.display_name(),
            user,
            seq: meta.seq,
            lamport: meta.lamport,
            time_ms: meta.wall_ms,
            op,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VerificationState {
    Unverified,
    Verifying,
    Verified,
    Failed,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verification {
    pub state: VerificationState,
    pub checked_at_ms: Option<u64>,
    /// Entries covered by the last check.
    pub entries: u64,
    pub error: Option<String>,
}

impl Verification {
    pub fn unverified() -> Self {
        Verification {
            state: VerificationState::Unverified,
            checked_at_ms: None,
            entries: 0,
            error: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LibraryStatus {
    Idle,
    Syncing,
    Error,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Library {
    pub id: String,
    pub name: String,
    /// The Nextcloud user whose folder it is.
    pub owner: String,
    /// The folder, relative to the owner's files root, starting with `/`.
    pub folder: String,
    /// The chain's heads (several while concurrent appends are unmerged).
    pub heads: Vec<String>,
    pub entries: u64,
    pub verification: Verification,
    pub status: LibraryStatus,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TransferDirection {
    Download,
    Upload,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TransferState {
    Queued,
    Running,
    Done,
    Failed,
}

impl TransferState {
    pub fn is_finished(self) -> bool {
        matches!(self, TransferState::Done | TransferState::Failed)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Transfer {
    pub id: String,
    pub library_id: String,
    pub path: String,
    pub direction: TransferDirection,
    pub peer_id: Option<String>,
    pub bytes_done: u64,
    pub bytes_total: u64,
    pub rate_bps: f64,
    pub eta_s: Option<f64>,
    pub state: TransferState,
    pub error: Option<String>,
    pub updated_ms: u64,
}

/// This device.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Device {
    /// The device's PeerId; `None` until the identity exists.
    pub device_id: Option<String>,
    pub version: String,
}

/// Everything the panel shows, as one viewer may see it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// The `seq` of the last event included.
    pub seq: u64,
    pub device: Device,
    pub libraries: Vec<Library>,
    pub peers: Vec<Peer>,
    pub transfers: Vec<Transfer>,
    /// The most recent chain entries, oldest first, at most [`ACTIVITY_LIMIT`].
    pub activity: Vec<ChainEntry>,
}

/// A change the hub fans out. Carried in a [`ServerMessage`] with its `seq`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    EntryAppended { entry: ChainEntry },
    PeerChanged { peer: Peer },
    PeerRemoved { peer_id: String },
    TransferProgress { transfer: Transfer },
    LibraryState { library: Library },
    LibraryRemoved { library_id: String },
}

/// The body of one server → client message, without `v`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Body {
    Snapshot { snapshot: Snapshot },
    EntryAppended { seq: u64, entry: ChainEntry },
    PeerChanged { seq: u64, peer: Peer },
    PeerRemoved { seq: u64, peer_id: String },
    TransferProgress { seq: u64, transfer: Transfer },
    LibraryState { seq: u64, library: Library },
    LibraryRemoved { seq: u64, library_id: String },
    Ping { time_ms: u64 },
}

impl Body {
    pub fn from_event(seq: u64, event: Event) -> Body {
        match event {
            Event::EntryAppended { entry } => Body::EntryAppended { seq, entry },
            Event::PeerChanged { peer } => Body::PeerChanged { seq, peer },
            Event::PeerRemoved { peer_id } => Body::PeerRemoved { seq, peer_id },
            Event::TransferProgress { transfer } => Body::TransferProgress { seq, transfer },
            Event::LibraryState { library } => Body::LibraryState { seq, library },
            Event::LibraryRemoved { library_id } => Body::LibraryRemoved { seq, library_id },
        }
    }
}

/// One server → client message: `{"v":1,"type":…,…}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServerMessage {
    pub v: u32,
    #[serde(flatten)]
    pub body: Body,
}

impl ServerMessage {
    pub fn new(body: Body) -> Self {
        ServerMessage {
            v: PROTOCOL_VERSION,
            body,
        }
    }

    /// The JSON text sent in a WebSocket text frame.
    pub fn to_json(&self) -> String {
        // Serializing these plain structs cannot fail: no maps with non-string keys,
        // no custom serializers.
        serde_json::to_string(self).unwrap_or_else(|e| {
            tracing::error!(error = %e, "cannot serialize a panel message");
            String::from("{}")
        })
    }
}

/// Who is looking: decides what a snapshot or event shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Viewer {
    pub uid: String,
    pub is_admin: bool,
}

impl Viewer {
    /// Whether this viewer may see data of a library owned by `owner`.
    pub fn sees_owner(&self, owner: &str) -> bool {
        self.is_admin || self.uid == owner
    }
}

/// `GET /api/overview`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Overview {
    pub device: Device,
    pub user: String,
    pub is_admin: bool,
    pub libraries: Vec<Library>,
}

/// `POST /api/admin/libraries` (admin).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewLibrary {
    pub name: String,
    pub owner: String,
    pub folder: String,
}

/// The JSON body of every REST error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiErrorBody {
    pub error: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn entry() -> ChainEntry {
        ChainEntry {
            library_id: "lib".into(),
            hash: "ab".repeat(32),
            parents: vec!["cd".repeat(32)],
            author: "12D3KooWexample".into(),
            user: Some("alice".into()),
            seq: 7,
            lamport: 42,
            time_ms: 1_764_090_000_000,
            op: Operation::Put {
                path: "a/b.jpg".into(),
                size: 1_048_576,
            },
        }
    }

    /// The wire format is frozen: this is what `ui/src/protocol.ts` parses.
    #[test]
    fn entry_appended_wire_format() {
        let message = ServerMessage::new(Body::from_event(
            42,
            Event::EntryAppended { entry: entry() },
        ));
        let value: Value = serde_json::from_str(&message.to_json()).unwrap();
        assert_eq!(
            value,
            json!({
                "v": 1,
                "type": "entry_appended",
                "seq": 42,
                "entry": {
                    "library_id": "lib",
                    "hash": "ab".repeat(32),
                    "parents": ["cd".repeat(32)],
                    "author": "12D3KooWexample",
                    "user": "alice",
                    "seq": 7,
                    "lamport": 42,
                    "time_ms": 1_764_090_000_000u64,
                    "op": {"kind": "put", "path": "a/b.jpg", "size": 1_048_576}
                }
            })
        );
    }

    #[test]
    fn every_type_name_is_snake_case_and_round_trips() {
        let peer = Peer {
            peer_id: "p".into(),
            name: None,
            trusted: false,
            state: PeerState::Discovered,
            link: LinkKind::Lan,
            addresses: vec![],
            rtt_ms: Some(0.4),
            throughput: Throughput::default(),
            last_seen_ms: None,
        };
        let transfer = Transfer {
            id: "t".into(),
            library_id: "lib".into(),
            path: "x".into(),
            direction: TransferDirection::Download,
            peer_id: None,
            bytes_done: 1,
            bytes_total: 2,
            rate_bps: 3.0,
            eta_s: None,
            state: TransferState::Running,
            error: None,
            updated_ms: 5,
        };
        let cases = [
            (Body::Ping { time_ms: 1 }, "ping"),
            (
                Body::from_event(1, Event::PeerChanged { peer }),
                "peer_changed",
            ),
            (
                Body::from_event(
                    2,
                    Event::PeerRemoved {
                        peer_id: "p".into(),
                    },
                ),
                "peer_removed",
            ),
            (
                Body::from_event(3, Event::TransferProgress { transfer }),
                "transfer_progress",
            ),
            (
                Body::from_event(
                    4,
                    Event::LibraryRemoved {
                        library_id: "l".into(),
                    },
                ),
                "library_removed",
            ),
        ];
        for (body, name) in cases {
            let message = ServerMessage::new(body);
            let text = message.to_json();
            let value: Value = serde_json::from_str(&text).unwrap();
            assert_eq!(value["type"], name);
            assert_eq!(value["v"], 1);
            let back: ServerMessage = serde_json::from_str(&text).unwrap();
            assert_eq!(back, message);
        }
    }

    #[test]
    fn operations_are_tagged_by_kind() {
        let op = Operation::Rename {
            from: "a".into(),
            to: "b".into(),
        };
        assert_eq!(
            serde_json::to_value(&op).unwrap(),
            json!({"kind": "rename", "from": "a", "to": "b"})
        );
        assert_eq!(
            serde_json::to_value(Operation::Merge).unwrap(),
            json!({"kind": "merge"})
        );
    }

    #[test]
    fn chain_entries_convert_with_their_real_hash() {
        use crate::chain::{ChainPath, DeviceKey, Entry, EntryHash, LibraryId, Meta, Op};
        let meta = Meta {
            library: LibraryId([7; 16]),
            author: DeviceKey([9; 32]),
            seq: 3,
            lamport: 5,
            wall_ms: 1_764_090_000_000,
            op: Op::Rename {
                from: ChainPath::new("a/b.txt").unwrap(),
                to: ChainPath::new("a/c.txt").unwrap(),
            },
        };
        let entry = Entry::unsigned(meta, vec![EntryHash([1; 32])]);
        let view = ChainEntry::from_chain(&entry, Some("alice".into()));
        assert_eq!(view.hash, entry.hash().to_hex());
        assert_eq!(view.hash.len(), 64);
        assert_eq!(view.library_id, "07".repeat(16));
        assert_eq!(view.parents, vec!["01".repeat(32)]);
        assert_eq!(
            (view.seq, view.lamport, view.time_ms),
            (3, 5, 1_764_090_000_000)
        );
        assert_eq!(
            view.op,
            Operation::Rename {
                from: "a/b.txt".into(),
                to: "a/c.txt".into()
            }
        );
    }

    #[test]
    fn viewers_see_their_own_libraries_admins_all() {
        let alice = Viewer {
            uid: "alice".into(),
            is_admin: false,
        };
        let admin = Viewer {
            uid: "admin".into(),
            is_admin: true,
        };
        assert!(alice.sees_owner("alice"));
        assert!(!alice.sees_owner("bob"));
        assert!(admin.sees_owner("bob"));
    }
}
