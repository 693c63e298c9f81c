//! Metrics for admins: bytes moved per peer and per class (LAN, WAN), whether the swarm
//! runs, the ingest backlog and each library's chain length.
//!
//! | route | answer |
//! |---|---|
//! | `GET /api/admin/metrics` | [`Metrics`] as JSON |
//! | `GET /metrics` | the same as Prometheus text, rendered by [`super::prometheus`] |
//!
//! Both are for Nextcloud admins only: AppAPI's signature like every route, then the same
//! admin check as `/api/admin/` (403 for other users). `/metrics` has its own route in
//! `appinfo/info.xml` (`^/metrics$`, GET, ADMIN), so a scraper goes through AppAPI's proxy
//! with an admin's app password.
//!
//! # Where the byte counts come from
//!
//! [`Traffic::from_peers`] sums the node's peer table ([`PeerInfo::bytes_in`] /
//! [`PeerInfo::bytes_out`], block payload bytes), classed by [`PeerInfo::lan`] (found by
//! mDNS = LAN, else WAN). Counters start at zero with the process, as Prometheus expects of
//! a `_total`. Swapping this source for a node-side traffic account changes only that one
//! function.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;

use super::api::{admin, ApiError};
use super::swarm::SwarmStatus;
use super::AppState;
use crate::appapi::auth::AppApiUser;
use crate::p2p::PeerInfo;

/// How a peer is reached, for byte accounting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Class {
    Lan,
    Wan,
}

impl Class {
    pub fn name(self) -> &'static str {
        match self {
            Class::Lan => "lan",
            Class::Wan => "wan",
        }
    }
}

/// Bytes one way and the other.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Bytes {
    pub bytes_in: u64,
    pub bytes_out: u64,
}

/// One peer's traffic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PeerTraffic {
    pub peer_id: String,
    pub class: Class,
    pub connected: bool,
    /// A member of a library held here.
    pub trusted: bool,
    #[serde(flatten)]
    pub bytes: Bytes,
}

/// Bytes moved with peers, per peer and per class.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Traffic {
    /// Ordered by peer id.
    pub peers: Vec<PeerTraffic>,
    /// `lan` and `wan`, both always present.
    pub classes: BTreeMap<Class, Bytes>,
}

impl Traffic {
    /// The traffic the node's peer table records.
    pub fn from_peers(infos: &[PeerInfo]) -> Traffic {
        let mut classes = BTreeMap::from([
            (Class::Lan, Bytes::default()),
            (Class::Wan, Bytes::default()),
        ]);
        let mut peers: Vec<PeerTraffic> = infos
            .iter()
            .map(|p| {
                let class = if p.lan { Class::Lan } else { Class::Wan };
                let total = classes.entry(class).or_default();
                total.bytes_in = total.bytes_in.saturating_add(p.bytes_in);
                total.bytes_out = total.bytes_out.saturating_add(p.bytes_out);
                PeerTraffic {
                    peer_id: p.peer.to_base58(),
                    class,
                    connected: p.connected,
                    trusted: p.trusted(),
                    bytes: Bytes {
                        bytes_in: p.bytes_in,
                        bytes_out: p.bytes_out,
                    },
                }
            })
            .collect();
        peers.sort_by(|a, b| a.peer_id.cmp(&b.peer_id));
        Traffic { peers, classes }
    }
}

/// The ingest side, when storage is there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Ingest {
    /// Events queued and not processed yet.
    pub backlog: u64,
    /// Events given up on.
    pub failed: u64,
    /// The engine's counters since start (see `GET /api/ingest`).
    pub counters: BTreeMap<&'static str, u64>,
}

/// One library's chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChainLength {
    pub library_id: String,
    pub entries: u64,
}

/// `GET /api/admin/metrics`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Metrics {
    pub swarm: SwarmStatus,
    pub traffic: Traffic,
    /// `null` without storage.
    pub ingest: Option<Ingest>,
    /// Every library the chain holds (joined ones too), ordered by id.
    pub chains: Vec<ChainLength>,
}

impl Metrics {
    /// Reads everything now.
    pub async fn collect(state: &AppState) -> Metrics {
        let infos = match state.swarm.node() {
            Some(node) => node.peers().await.unwrap_or_default(),
            None => Vec::new(),
        };
        let (ingest, chains) = match &state.engine {
            Some(engine) => {
                let ingest = Ingest {
                    backlog: engine.queue().len().unwrap_or(0),
                    failed: engine.queue().failed().map(|f| f.len() as u64).unwrap_or(0),
                    counters: engine.counters().snapshot(),
                };
                let chain = engine.chain();
                let mut libraries = chain.libraries();
                libraries.sort();
                let chains = libraries
                    .iter()
                    .map(|l| ChainLength {
                        library_id: l.to_hex(),
                        entries: chain.len(l).unwrap_or(0) as u64,
                    })
                    .collect();
                (Some(ingest), chains)
            }
            None => (None, Vec::new()),
        };
        Metrics {
            swarm: state.swarm.status(),
            traffic: Traffic::from_peers(&infos),
            ingest,
            chains,
        }
    }
}

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/admin/metrics", get(json_metrics))
        .route("/metrics", get(prometheus_metrics))
}

async fn json_metrics(
    State(state): State<AppState>,
    user: AppApiUser,
) -> Result<Response, ApiError> {
    admin(&state, user).await?;
    let metrics = Metrics::collect(&state).await;
    Ok(([(CACHE_CONTROL, "no-store")], Json(metrics)).into_response())
}

async fn prometheus_metrics(
    State(state): State<AppState>,
    user: AppApiUser,
) -> Result<Response, ApiError> {
    admin(&state, user).await?;
    let text = super::prometheus::render(&Metrics::collect(&state).await);
    Ok((
        [
            (CONTENT_TYPE, super::prometheus::CONTENT_TYPE),
            (CACHE_CONTROL, "no-store"),
        ],
        text,
    )
        .into_response())
}
