//! WAN limits in `serve`: the panel's setting for how fast blocks may move with WAN peers,
//! globally and per library (see [`crate::p2p::limits`]). LAN peers are never limited.
//!
//! | route | who | answer |
//! |---|---|---|
//! | `GET /api/admin/limits` | admin | the limits in force: `{"up","down","libraries":{id:{"up","down"}}}`, bytes per second, `null` unlimited |
//! | `PUT /api/admin/limits` | admin | the same shape; a rate is bytes per second or text as `--wan-limit` takes it (`2mbit`, `500kbit`, `1MiB`); applied at once (transfers under way follow from their next block), kept in the data directory, and answered with the limits in force; 400 bad input, 503 swarm not running |

use std::collections::BTreeMap;

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;

use super::api::{admin, ApiError};
use super::AppState;
use crate::appapi::auth::AppApiUser;
use crate::p2p::limits::{Rates, WanLimits};
use crate::p2p::NodeHandle;

/// Held while the setting is written.
static WRITING: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// The limit routes (admin only, under `/api/admin/`).
pub fn routes() -> Router<AppState> {
    Router::new().route("/api/admin/limits", get(show).put(set))
}

/// A rate as the panel sends it: bytes per second, or text such as `2mbit`; `null` or
/// empty text for unlimited.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum RateInput {
    Bytes(u64),
    Text(String),
}

#[derive(Debug, Default, Deserialize)]
struct RatesInput {
    #[serde(default)]
    up: Option<RateInput>,
    #[serde(default)]
    down: Option<RateInput>,
}

#[derive(Debug, Deserialize)]
struct LimitsInput {
    #[serde(flatten)]
    global: RatesInput,
    #[serde(default)]
    libraries: BTreeMap<String, RatesInput>,
}

fn rate(input: Option<RateInput>, what: &str) -> Result<Option<u64>, ApiError> {
    let bad = |reason: String| ApiError::Invalid(format!("{what}: {reason}"));
    match input {
        None => Ok(None),
        Some(RateInput::Bytes(0)) => Err(bad(
            "0 would stop all WAN traffic (leave it empty for unlimited)".into(),
        )),
        Some(RateInput::Bytes(n)) => Ok(Some(n)),
        Some(RateInput::Text(t)) if t.trim().is_empty() => Ok(None),
        Some(RateInput::Text(t)) => crate::p2p::pace::parse_rate(&t).map(Some).map_err(bad),
    }
}

fn rates(input: RatesInput, what: &str) -> Result<Rates, ApiError> {
    Ok(Rates {
        up: rate(input.up, &format!("{what} up"))?,
        down: rate(input.down, &format!("{what} down"))?,
    })
}

fn node(state: &AppState) -> Result<NodeHandle, ApiError> {
    state.swarm.node().ok_or(ApiError::SwarmNotRunning)
}

async fn show(
    State(state): State<AppState>,
    user: AppApiUser,
) -> Result<Json<WanLimits>, ApiError> {
    admin(&state, user).await?;
    Ok(Json(node(&state)?.wan_limits()))
}

async fn set(
    State(state): State<AppState>,
    user: AppApiUser,
    body: Result<Json<LimitsInput>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<WanLimits>, ApiError> {
    let by = admin(&state, user).await?;
    let Json(input) = body.map_err(|e| ApiError::Invalid(e.body_text()))?;
    let node = node(&state)?;
    let mut limits = WanLimits {
        global: rates(input.global, "WAN limit")?,
        libraries: BTreeMap::new(),
    };
    for (id, r) in input.libraries {
        let r = rates(r, &format!("library {id}"))?;
        limits.libraries.insert(id, r);
    }
    let limits = limits
        .checked()
        .map_err(|e| ApiError::Invalid(e.to_string()))?;
    let dir = state
        .engine
        .as_ref()
        .map(|e| e.data_dir().to_path_buf())
        .ok_or_else(|| ApiError::NoStorage("nowhere to keep the setting".into()))?;
    let applied = node.clone();
    tokio::task::spawn_blocking(move || {
        // One writer at a time (the file's temporary name is per process), and the file
        // and the node agree when two admins save at once.
        let _writing = crate::locks::lock(&WRITING);
        limits.save(&dir)?;
        applied
            .set_wan_limits(limits)
            .map_err(std::io::Error::other)
    })
    .await
    .map_err(|e| ApiError::Internal(e.to_string()))?
    .map_err(|e| ApiError::Internal(format!("cannot keep the WAN limits: {e}")))?;
    tracing::info!(by = %by, limits = ?node.wan_limits(), "WAN limits changed in the panel");
    Ok(Json(node.wan_limits()))
}
