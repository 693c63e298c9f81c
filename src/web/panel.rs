//! What the panel's routes share: the [`Hub`], the admin check, and the hand-over of
//! pairing requests to the swarm.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use tokio::sync::mpsc;

use super::access::Access;
use super::events::Device;
use super::hub::Hub;
use crate::appapi::client::NextcloudClient;
use crate::chain::{DeviceKey, LibraryId};

/// An admin asked to pair with a discovered device: make it a member of `libraries`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PairRequest {
    pub peer_id: String,
    /// The chain key inside `peer_id`.
    pub device: DeviceKey,
    /// The libraries to add it to (checked: held here, this device a member).
    pub libraries: Vec<LibraryId>,
    /// The name it is added under.
    pub name: String,
    /// The Nextcloud admin who asked.
    pub requested_by: String,
}

/// The panel's shared state (one per process, in [`super::AppState`]).
#[derive(Debug)]
pub struct Panel {
    pub hub: Hub,
    pub access: Access,
    pairing: OnceLock<mpsc::Sender<PairRequest>>,
    ping_ms: AtomicU64,
}

impl Panel {
    pub fn new(nextcloud: NextcloudClient, version: &str) -> Panel {
        Panel {
            hub: Hub::new(Device {
                device_id: None,
                version: version.to_owned(),
            }),
            access: Access::new(nextcloud),
            pairing: OnceLock::new(),
            ping_ms: AtomicU64::new(super::ws::PING_INTERVAL.as_millis() as u64),
        }
    }

    /// How often each WebSocket connection sends a `ping` (20 s; tests shorten it).
    pub fn ping_interval(&self) -> Duration {
        Duration::from_millis(self.ping_ms.load(Ordering::Relaxed).max(1))
    }

    /// Changes the ping interval for connections opened from now on.
    pub fn set_ping_interval(&self, interval: Duration) {
        self.ping_ms
            .store(interval.as_millis() as u64, Ordering::Relaxed);
    }

    /// The swarm calls this once it runs; until then pairing answers 503.
    /// Returns `false` if a receiver was already connected.
    pub fn connect_pairing(&self, tx: mpsc::Sender<PairRequest>) -> bool {
        self.pairing.set(tx).is_ok()
    }

    pub(crate) fn pairing(&self) -> Option<&mpsc::Sender<PairRequest>> {
        self.pairing.get()
    }
}
