//! A change to a Nextcloud user's files, as harpbridge queues and processes it.
//!
//! Events are hints, not truth: Nextcloud delivers them out of order, deletes and renames
//! carry no id for the old node, and one operation fires several events (docs/appapi.md §8.2,
//! fixtures `webhooks/op-event-matrix.json`). The worker therefore reads the current
//! state over WebDAV before it records anything.

use serde::{Deserialize, Serialize};

/// What happened, by webhook_listeners event class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    Created,
    Written,
    Deleted,
    Renamed,
    Copied,
    Restored,
    /// Only the modification time changed. Not registered by harpbridge, but understood.
    Touched,
}

impl EventKind {
    /// The fully qualified PHP event class Nextcloud uses.
    pub fn class(self) -> &'static str {
        match self {
            EventKind::Created => "OCP\\Files\\Events\\Node\\NodeCreatedEvent",
            EventKind::Written => "OCP\\Files\\Events\\Node\\NodeWrittenEvent",
            EventKind::Deleted => "OCP\\Files\\Events\\Node\\NodeDeletedEvent",
            EventKind::Renamed => "OCP\\Files\\Events\\Node\\NodeRenamedEvent",
            EventKind::Copied => "OCP\\Files\\Events\\Node\\NodeCopiedEvent",
            EventKind::Restored => "OCA\\Files_Trashbin\\Events\\NodeRestoredEvent",
            EventKind::Touched => "OCP\\Files\\Events\\Node\\NodeTouchedEvent",
        }
    }

    /// The short name used in our webhook URIs (`/webhooks/<name>`).
    pub fn name(self) -> &'static str {
        self.class().rsplit('\\').next().unwrap_or("")
    }

    pub fn from_class(class: &str) -> Option<Self> {
        let class = class.trim_start_matches('\\');
        Self::ALL
            .into_iter()
            .chain([EventKind::Touched])
            .find(|k| k.class() == class)
    }

    /// Events with a source and a target node.
    pub fn has_two_nodes(self) -> bool {
        matches!(
            self,
            EventKind::Renamed | EventKind::Copied | EventKind::Restored
        )
    }

    /// The kinds harpbridge registers webhooks for.
    pub const ALL: [EventKind; 6] = [
        EventKind::Created,
        EventKind::Written,
        EventKind::Deleted,
        EventKind::Renamed,
        EventKind::Copied,
        EventKind::Restored,
    ];
}

/// Which of a user's areas a node path points into.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Area {
    /// `/<uid>/files/…`: the user's files.
    Files,
    /// `/<uid>/files_trashbin/files/…`: the trash bin (only as a restore's source).
    Trash,
}

/// A node of an event: Nextcloud's id (absent for deleted nodes) and where it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    pub id: Option<u64>,
    pub uid: String,
    pub area: Area,
    /// The path below the area's root, without leading `/`; empty for the root itself.
    pub path: String,
}

/// One file event, validated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEvent {
    pub kind: EventKind,
    /// The user whose session caused it; `None` for occ, cron and background jobs.
    pub user: Option<String>,
    /// When it happened (Unix seconds).
    pub time: i64,
    /// One-node events: the node. Two-node events: the target.
    pub node: Node,
    /// Two-node events: where the node came from.
    pub source: Option<Node>,
}

impl FileEvent {
    /// Every node the event names.
    pub fn nodes(&self) -> impl Iterator<Item = &Node> {
        std::iter::once(&self.node).chain(self.source.iter())
    }
}
