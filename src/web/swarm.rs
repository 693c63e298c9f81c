//! The swarm inside `harpbridge serve`: one [`Node`] per process, over the engine's chain and
//! content store, wired to the engine ([`crate::link`]) and to the panel (docs/architecture.md
//! §3).
//!
//! ```text
//!   NodeEvent::{Discovered,Connected,…} ──┐
//!   every PEER_REFRESH: NodeHandle::peers ┴▶ PeerFeed ─▶ hub peer_changed / peer_removed
//!   NodeEvent::Transfer ──────────────────▶ TransferFeed ─▶ hub transfer_progress
//!   POST /api/admin/peers/{id}/pair ──────▶ pairing task ─▶ Engine::add_device (per library)
//!   NodeEvent::Offered ───────────────────▶ offers::watch ─▶ OfferBook (panel: accept/reject)
//! ```
//!
//! Everything runs in tasks (`relay`, `pairing`, and [`crate::link`]'s) started by
//! [`start`]. If the node cannot start (a port taken, no storage), `serve` goes on without
//! it: [`Swarm::status`] says why, in `GET /api/ingest`, `GET /api/admin/metrics` and the
//! log, and pairing answers 503.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::{broadcast, mpsc};

use super::feed::{PeerFeed, TransferFeed};
use super::hub::Hub;
use super::panel::PairRequest;
use super::AppState;

use crate::chain::TreeItem;
use crate::engine::Engine;
use crate::p2p::{Node, NodeEvent, NodeHandle, P2pError, TransferProgress};

/// How often the peer table is read for round trips and byte counters.
pub const PEER_REFRESH: Duration = Duration::from_secs(2);
/// Pairing requests waiting for the pairing task before the API answers 503.
const PAIRING_QUEUE: usize = 32;

/// Whether the swarm runs, as the API reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum SwarmStatus {
    /// Turned off by `HARPBRIDGE_P2P=off` (or not started yet).
    Off,
    /// Running as this peer, on these addresses.
    Running {
        peer_id: String,
        listen: Vec<String>,
    },
    /// It could not start; `serve` runs without it.
    Failed { error: String },
}

/// The process's swarm: its handle once running, and its status. One per [`AppState`].
#[derive(Debug)]
pub struct Swarm {
    node: Mutex<Option<NodeHandle>>,
    status: Mutex<SwarmStatus>,
    /// Libraries peers offer, once the node runs ([`super::offers`]).
    offers: Mutex<Option<super::offers::SharedBook>>,
}

impl Default for Swarm {
    fn default() -> Self {
        Swarm {
            node: Mutex::new(None),
            status: Mutex::new(SwarmStatus::Off),
            offers: Mutex::new(None),
        }
    }
}

impl Swarm {
    /// The running node, if any.
    pub fn node(&self) -> Option<NodeHandle> {
        crate::locks::lock(&self.node).clone()
    }

    /// The offer record, once the node runs.
    pub fn offers(&self) -> Option<super::offers::SharedBook> {
        crate::locks::lock(&self.offers).clone()
    }

    pub fn status(&self) -> SwarmStatus {
        let status = crate::locks::lock(&self.status).clone();
        match (status, self.node()) {
            // The addresses now (a listener may have come or gone since the start).
            (SwarmStatus::Running { peer_id, .. }, Some(node)) => SwarmStatus::Running {
                peer_id,
                listen: node.listen_addrs().iter().map(|a| a.to_string()).collect(),
            },
            (status, _) => status,
        }
    }

    fn set(&self, status: SwarmStatus, node: Option<NodeHandle>) {
        *crate::locks::lock(&self.status) = status;
        *crate::locks::lock(&self.node) = node;
    }

    /// Stops the node (closing its connections), if it runs.
    pub async fn shutdown(&self) {
        let node = crate::locks::lock(&self.node).take();
        if let Some(node) = node {
            node.shutdown().await;
            *crate::locks::lock(&self.status) = SwarmStatus::Off;
        }
    }
}

/// Starts the node as the settings say and wires it up; on failure logs why, records it in
/// [`Swarm::status`], and returns (serving goes on).
pub async fn start(state: &AppState) {
    let Some(settings) = &state.config.p2p else {
        tracing::info!("the peer-to-peer swarm is off (HARPBRIDGE_P2P=off)");
        return;
    };
    let Some(engine) = state.engine.clone() else {
        let error = "no storage, so no chain to sync".to_owned();
        tracing::error!(%error, "the swarm cannot start");
        state.swarm.set(SwarmStatus::Failed { error }, None);
        return;
    };
    let config = settings.node_config();
    let node = match Node::start(
        config,
        engine.identity(),
        engine.chain().clone(),
        engine.content().clone(),
    )
    .await
    {
        Ok(node) => node,
        Err(e) => {
            let error = e.to_string();
            tracing::error!(%error, listen = ?settings.listen, "the swarm could not start; serving without it");
            state.swarm.set(SwarmStatus::Failed { error }, None);
            return;
        }
    };
    let status = SwarmStatus::Running {
        peer_id: node.peer_id().to_base58(),
        listen: node.listen_addrs().iter().map(|a| a.to_string()).collect(),
    };
    tracing::info!(peer_id = %node.peer_id(), listen = ?node.listen_addrs(), mdns = settings.mdns, peers = settings.peers.len(), "swarm running");
    state.swarm.set(status, Some(node.clone()));
    // The panel's WAN limits, kept in the data directory, win over HARPBRIDGE_WAN_LIMIT.
    crate::p2p::limits::watch(node.clone(), engine.data_dir(), |l| tracing::info!("{l}"));
    crate::link::connect(&engine, &node);
    let book = std::sync::Arc::new(Mutex::new(crate::p2p::offers::OfferBook::open(
        engine.data_dir(),
    )));
    *crate::locks::lock(&state.swarm.offers) = Some(book.clone());
    super::offers::watch(engine.clone(), node.clone(), book);
    tokio::spawn(relay(
        engine.clone(),
        node.clone(),
        state.panel.hub.clone(),
        node.subscribe(),
    ));
    let (tx, rx) = mpsc::channel(PAIRING_QUEUE);
    if state.panel.connect_pairing(tx) {
        tokio::spawn(pairing(engine, rx));
    }
}

/// Carries the swarm's peers and transfers to the panel until the node stops.
async fn relay(
    engine: Engine,
    node: NodeHandle,
    hub: Hub,
    mut events: broadcast::Receiver<NodeEvent>,
) {
    use broadcast::error::RecvError;
    let mut peers = PeerFeed::default();
    let mut transfers = TransferFeed::default();
    let mut tick = tokio::time::interval(PEER_REFRESH);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let outcome: Result<(), P2pError> = tokio::select! {
            event = events.recv() => match event {
                Ok(NodeEvent::Discovered { .. } | NodeEvent::Connected { .. } | NodeEvent::Disconnected { .. }) => {
                    refresh_peers(&engine, &node, &hub, &mut peers).await
                }
                Ok(NodeEvent::Transfer(progress)) => {
                    publish_transfer(&engine, &hub, &mut transfers, &progress);
                    Ok(())
                }
                Ok(_) => Ok(()),
                Err(RecvError::Lagged(missed)) => {
                    tracing::warn!(missed, "fell behind the swarm's events; re-reading the peers");
                    refresh_peers(&engine, &node, &hub, &mut peers).await
                }
                Err(RecvError::Closed) => Err(P2pError::Stopped),
            },
            _ = tick.tick() => refresh_peers(&engine, &node, &hub, &mut peers).await,
        };
        if let Err(P2pError::Stopped) = outcome {
            break;
        }
    }
    tracing::debug!("the panel's swarm relay stopped");
}

async fn refresh_peers(
    engine: &Engine,
    node: &NodeHandle,
    hub: &Hub,
    feed: &mut PeerFeed,
) -> Result<(), P2pError> {
    let infos = node.peers().await?;
    let name = |p: &crate::p2p::PeerInfo| p.device.and_then(|d| engine.device_name(&d));
    for event in feed.update(&infos, name, Instant::now(), crate::chain::now_ms()) {
        hub.publish(event);
    }
    Ok(())
}

fn publish_transfer(
    engine: &Engine,
    hub: &Hub,
    feed: &mut TransferFeed,
    progress: &TransferProgress,
) {
    let transfer = feed.update(
        progress,
        || path_of(engine, progress),
        Instant::now(),
        crate::chain::now_ms(),
    );
    hub.publish(super::events::Event::TransferProgress { transfer });
}

/// The path of the file whose version a transfer fetches, as the library's tree has it now
/// (the first one, if several files hold the same content), else the version's id.
fn path_of(engine: &Engine, progress: &TransferProgress) -> String {
    engine
        .tree(&progress.library)
        .ok()
        .and_then(|tree| {
            tree.items.iter().find_map(|(path, item)| match item {
                TreeItem::File { content, .. } if *content == progress.content => {
                    Some(path.as_str().to_owned())
                }
                _ => None,
            })
        })
        .unwrap_or_else(|| progress.content.to_hex())
}

/// Appends the membership entries the panel's pairing requests ask for. The relay then
/// announces the libraries' new heads, so the paired device, if connected, pulls at once.
async fn pairing(engine: Engine, mut requests: mpsc::Receiver<PairRequest>) {
    while let Some(request) = requests.recv().await {
        for library in &request.libraries {
            match engine
                .add_device(*library, request.device, &request.name)
                .await
            {
                Ok(Some(entry)) => {
                    tracing::info!(peer = %request.peer_id, %library, by = %request.requested_by, hash = %entry.hash(), "paired from the panel")
                }
                Ok(None) => {
                    tracing::info!(peer = %request.peer_id, %library, "already a member")
                }
                Err(e) => {
                    tracing::error!(peer = %request.peer_id, %library, error = %e, "pairing failed")
                }
            }
        }
    }
}
