//! The panel's REST API, reached through AppAPI's PHP proxy
//! (`/index.php/apps/app_api/proxy/<appid>/api/...`) or HaRP (`/exapps/<appid>/api/...`).
//!
//! | route | who | answer |
//! |---|---|---|
//! | `GET /api/snapshot` | user | [`Snapshot`](super::events::Snapshot): everything, as for a WebSocket client (polling fallback) |
//! | `GET /api/overview` | user | [`Overview`]: device, the caller and whether they are an admin, libraries |
//! | `GET /api/peers` | user | `{"peers":[Peer]}`, discovered devices included (`trusted: false`) |
//! | `GET /api/activity?library=ID&limit=N` | user | `{"entries":[ChainEntry]}`, oldest first, `limit` ≤ 200 (default 200) |
//! | `GET /api/transfers` | user | `{"transfers":[Transfer]}` |
//! | `GET /api/libraries` | user | `{"libraries":[Library]}` |
//! | `POST /api/admin/libraries` | admin | body [`NewLibrary`]; 201 with the [`Library`](super::events::Library); 400 bad input, 404 no such folder, 409 overlaps a library, 503 no storage |
//! | `DELETE /api/admin/libraries/{id}` | admin | 204; 404 if unknown |
//! | `POST /api/admin/peers/{id}/pair` | admin | optional body `{"libraries":[ID…],"name":"…"}` (default: every library of this ExApp, `device <short id>`); 202 `{"peer_id","libraries":[ID…]}` once handed to the swarm, which appends one `AddDevice` per library; 400 not a device id or bad body, 404 peer never met or library not held here, 409 already a member of them all (or no library), 503 swarm not running |
//! | `GET /api/admin/offers`, `POST /api/admin/offers/{id}/accept\|reject` | admin | libraries peers offer, see [`super::offers`] |
//! | `GET /api/admin/metrics` | admin | [`Metrics`](super::metrics::Metrics): swarm state, bytes per peer and per class (LAN/WAN), ingest backlog, chain entries per library |
//! | `GET /metrics` | admin | the same as Prometheus text (version 0.0.4), see [`super::prometheus`] |
//!
//! Mutations live under `/api/admin/` so that `appinfo/info.xml` can give them their
//! own route (`^/api/admin/.*$`, verbs GET, POST, PUT, DELETE, access level ADMIN): the
//! PHP proxy and HaRP then refuse non-admins before we are asked, and the read routes
//! (`^/api/.*$`) stay GET-only.
//!
//! "user" means any Nextcloud user, seeing only what [`Viewer`] allows (their own
//! libraries, an admin all); "admin" is checked with Nextcloud (see [`super::access`]).
//! A request without a user gets 403. Every answer is JSON with
//! `Cache-Control: no-store`: AppAPI's PHP proxy caches any answer for an hour that has
//! no `Cache-Control` and whose type is not exactly `application/json`. Errors are
//! `{"error":"…"}`.
//!
//! Libraries are the engine's ([`crate::engine::Engine::create_library`]): adding one
//! checks over WebDAV, as that user, that the folder exists, creates its chain (genesis
//! entry) and starts the first scan; the engine tells the panel through the hub
//! (`library_state`, `entry_appended`). Reads come from the hub, which the engine keeps
//! current. Without an engine (the data directory could not be opened) mutations answer
//! 503 with the reason.

use axum::extract::{Path, Query, Request, State};
use axum::http::header::{HeaderValue, CACHE_CONTROL};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use super::events::{ApiErrorBody, NewLibrary, Overview, Viewer, ACTIVITY_LIMIT};
use super::panel::PairRequest;
use super::AppState;
use crate::appapi::auth::AppApiUser;
use crate::appapi::client::ClientError;
use crate::backend::BackendError;
use crate::chain::LibraryId;
use crate::engine::libraries::LibraryError;
use crate::engine::{Engine, EngineError};

/// Why a panel request failed; the `Display` text is the `error` the client sees.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("a Nextcloud user is required")]
    NoUser,
    #[error("only Nextcloud admins may do this")]
    NotAdmin,
    #[error("cannot check the user's groups with Nextcloud: {0}")]
    Nextcloud(#[source] ClientError),
    #[error("{0}")]
    Invalid(String),
    #[error("{0} not found")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("the peer-to-peer swarm is not running, so pairing and offers are not possible now")]
    SwarmNotRunning,
    #[error("harpbridge has no storage: {0}")]
    NoStorage(String),
    #[error("Nextcloud: {0}")]
    Upstream(String),
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    fn status(&self) -> StatusCode {
        match self {
            ApiError::NoUser | ApiError::NotAdmin => StatusCode::FORBIDDEN,
            ApiError::Nextcloud(_) => StatusCode::BAD_GATEWAY,
            ApiError::Invalid(_) => StatusCode::BAD_REQUEST,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::SwarmNotRunning | ApiError::NoStorage(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Upstream(_) => StatusCode::BAD_GATEWAY,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ApiErrorBody {
            error: self.to_string(),
        };
        (self.status(), Json(body)).into_response()
    }
}

/// The REST routes, each answer marked `Cache-Control: no-store`.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/snapshot", get(snapshot))
        .route("/api/overview", get(overview))
        .route("/api/peers", get(peers))
        .route("/api/admin/peers/{id}/pair", post(pair))
        .route("/api/activity", get(activity))
        .route("/api/transfers", get(transfers))
        .route("/api/libraries", get(libraries))
        .route("/api/admin/libraries", post(add_library))
        .route("/api/admin/libraries/{id}", delete(remove_library))
        .merge(super::offers::routes())
        .merge(super::limits::routes())
        .layer(middleware::from_fn(no_store))
}

/// Marks every answer uncacheable (errors and axum's own rejections included).
async fn no_store(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    response
        .headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn uid(user: AppApiUser) -> Result<String, ApiError> {
    user.0.ok_or(ApiError::NoUser)
}

pub(crate) async fn viewer(state: &AppState, user: AppApiUser) -> Result<Viewer, ApiError> {
    let uid = uid(user)?;
    Ok(state.panel.access.viewer(&uid).await)
}

/// The acting user, if Nextcloud says they are an admin.
pub(crate) async fn admin(state: &AppState, user: AppApiUser) -> Result<String, ApiError> {
    let uid = uid(user)?;
    match state.panel.access.is_admin(&uid).await {
        Ok(true) => Ok(uid),
        Ok(false) => Err(ApiError::NotAdmin),
        Err(e) => Err(ApiError::Nextcloud(e)),
    }
}

async fn snapshot(State(state): State<AppState>, user: AppApiUser) -> Result<Response, ApiError> {
    let viewer = viewer(&state, user).await?;
    Ok(Json(state.panel.hub.snapshot(&viewer)).into_response())
}

async fn overview(State(state): State<AppState>, user: AppApiUser) -> Result<Response, ApiError> {
    let viewer = viewer(&state, user).await?;
    let hub = &state.panel.hub;
    Ok(Json(Overview {
        device: hub.device(),
        libraries: hub.libraries(&viewer),
        user: viewer.uid,
        is_admin: viewer.is_admin,
    })
    .into_response())
}

async fn peers(State(state): State<AppState>, user: AppApiUser) -> Result<Response, ApiError> {
    viewer(&state, user).await?;
    Ok(Json(json!({ "peers": state.panel.hub.peers() })).into_response())
}

#[derive(Debug, Deserialize)]
struct ActivityQuery {
    library: Option<String>,
    limit: Option<usize>,
}

async fn activity(
    State(state): State<AppState>,
    user: AppApiUser,
    Query(query): Query<ActivityQuery>,
) -> Result<Response, ApiError> {
    let viewer = viewer(&state, user).await?;
    let limit = query.limit.unwrap_or(ACTIVITY_LIMIT).min(ACTIVITY_LIMIT);
    let entries = state
        .panel
        .hub
        .activity(&viewer, query.library.as_deref(), limit);
    Ok(Json(json!({ "entries": entries })).into_response())
}

async fn transfers(State(state): State<AppState>, user: AppApiUser) -> Result<Response, ApiError> {
    let viewer = viewer(&state, user).await?;
    Ok(Json(json!({ "transfers": state.panel.hub.transfers(&viewer) })).into_response())
}

async fn libraries(State(state): State<AppState>, user: AppApiUser) -> Result<Response, ApiError> {
    let viewer = viewer(&state, user).await?;
    Ok(Json(json!({ "libraries": state.panel.hub.libraries(&viewer) })).into_response())
}

pub(crate) fn engine(state: &AppState) -> Result<&Engine, ApiError> {
    state.engine.as_ref().ok_or_else(|| {
        ApiError::NoStorage(
            state
                .engine_error
                .as_deref()
                .unwrap_or("the engine is not running")
                .to_owned(),
        )
    })
}

/// How the engine's refusals reach the panel.
pub(crate) fn from_engine(e: EngineError) -> ApiError {
    match e {
        EngineError::Library(LibraryError::BadUser(_) | LibraryError::BadFolder(..))
        | EngineError::NotAFolder { .. }
        | EngineError::BadPath { .. } => ApiError::Invalid(e.to_string()),
        EngineError::Library(LibraryError::Overlap { .. }) => ApiError::Conflict(e.to_string()),
        EngineError::Library(LibraryError::Unknown(_)) => ApiError::NotFound("library".into()),
        EngineError::Backend(BackendError::NotFound(path)) => {
            ApiError::NotFound(format!("the folder {path}"))
        }
        EngineError::Backend(e) => ApiError::Upstream(e.to_string()),
        other => ApiError::Internal(other.to_string()),
    }
}

async fn add_library(
    State(state): State<AppState>,
    user: AppApiUser,
    body: Result<Json<NewLibrary>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    let by = admin(&state, user).await?;
    let Json(new) = body.map_err(|e| ApiError::Invalid(e.body_text()))?;
    let name = valid_name(&new.name)?;
    let engine = engine(&state)?;
    let created = engine
        .create_library(&name, new.owner.trim(), &new.folder)
        .await
        .map_err(from_engine)?;
    tracing::info!(library = %created.id, owner = %created.uid, folder = %created.folder, by = %by, "library added from the panel");
    // The engine announced it to the hub; answer with what the panel shows.
    let library = state
        .panel
        .hub
        .library(&created.id.to_hex())
        .ok_or_else(|| ApiError::Internal("the new library was not announced".into()))?;
    Ok((StatusCode::CREATED, Json(library)).into_response())
}

async fn remove_library(
    State(state): State<AppState>,
    user: AppApiUser,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let by = admin(&state, user).await?;
    let engine = engine(&state)?;
    let library_id: LibraryId = id
        .parse()
        .map_err(|_| ApiError::NotFound("library".into()))?;
    engine.remove_library(&library_id).map_err(from_engine)?;
    tracing::info!(library = %id, by = %by, "library removed from the panel");
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `POST /api/admin/peers/{id}/pair`'s optional JSON body. The panel sends none: the
/// device is then added to every library of this ExApp, under a name made from its id.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PairBody {
    /// Library ids (32 hex characters).
    #[serde(default)]
    libraries: Vec<String>,
    #[serde(default)]
    name: Option<String>,
}

/// The body, if any: none, `null` and `[]` (what a proxy may make of no body) mean the
/// defaults.
fn pair_body(raw: &[u8]) -> Result<PairBody, ApiError> {
    if raw.iter().all(u8::is_ascii_whitespace) {
        return Ok(PairBody::default());
    }
    let value: serde_json::Value =
        serde_json::from_slice(raw).map_err(|e| ApiError::Invalid(e.to_string()))?;
    match value {
        serde_json::Value::Null => Ok(PairBody::default()),
        serde_json::Value::Array(a) if a.is_empty() => Ok(PairBody::default()),
        other => serde_json::from_value(other).map_err(|e| ApiError::Invalid(e.to_string())),
    }
}

async fn pair(
    State(state): State<AppState>,
    user: AppApiUser,
    Path(peer_id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let by = admin(&state, user).await?;
    // Only a device the swarm has met can be paired from the panel (the CLI takes any id).
    state
        .panel
        .hub
        .peer(&peer_id)
        .ok_or(ApiError::NotFound("peer".into()))?;
    let body = pair_body(&body)?;
    let device = peer_id
        .parse::<libp2p::PeerId>()
        .ok()
        .and_then(|p| crate::p2p::device_key(&p))
        .ok_or_else(|| ApiError::Invalid(format!("{peer_id} is not an ed25519 device id")))?;
    let name = match body.name.as_deref().map(valid_name).transpose()? {
        Some(n) if !n.is_empty() => n,
        _ => format!("device {}", device.short_id()),
    };
    if name.len() > crate::chain::entry::MAX_DEVICE_NAME_LEN {
        return Err(ApiError::Invalid("the name is too long".into()));
    }
    let engine = engine(&state)?;
    let me = engine.identity().device_key();
    let chain = engine.chain();
    let libraries: Vec<LibraryId> = if body.libraries.is_empty() {
        engine
            .libraries()
            .list()
            .into_iter()
            .map(|l| l.id)
            .filter(|id| chain.is_member(id, &me))
            .collect()
    } else {
        let mut ids = Vec::with_capacity(body.libraries.len());
        for raw in &body.libraries {
            let id: LibraryId = raw
                .parse()
                .map_err(|_| ApiError::Invalid(format!("{raw:?} is not a library id")))?;
            if !chain.is_member(&id, &me) {
                // Not held here, or held but this device may not add members.
                return Err(ApiError::NotFound(format!("library {raw}")));
            }
            ids.push(id);
        }
        ids.sort();
        ids.dedup();
        ids
    };
    if libraries.is_empty() {
        return Err(ApiError::Conflict(
            "there is no library to pair with".into(),
        ));
    }
    let libraries: Vec<LibraryId> = libraries
        .into_iter()
        .filter(|id| !chain.is_member(id, &device))
        .collect();
    if libraries.is_empty() {
        return Err(ApiError::Conflict(format!(
            "{peer_id} is already a member of these libraries"
        )));
    }
    let tx = state.panel.pairing().ok_or(ApiError::SwarmNotRunning)?;
    tx.try_send(PairRequest {
        peer_id: peer_id.clone(),
        device,
        libraries: libraries.clone(),
        name,
        requested_by: by,
    })
    .map_err(|_| ApiError::SwarmNotRunning)?;
    let libraries: Vec<String> = libraries.iter().map(|l| l.to_hex()).collect();
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "peer_id": peer_id, "libraries": libraries })),
    )
        .into_response())
}

const MAX_NAME: usize = 100;

/// A library's display name: at most [`MAX_NAME`] characters, no control characters;
/// empty lets the engine name it after the user and folder.
pub(crate) fn valid_name(raw: &str) -> Result<String, ApiError> {
    let name = raw.trim();
    if name.chars().count() > MAX_NAME || name.chars().any(char::is_control) {
        return Err(ApiError::Invalid(format!(
            "a library name has at most {MAX_NAME} characters and no control characters"
        )));
    }
    Ok(name.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pair_bodies_are_optional_and_strict() {
        for none in ["", " \n", "null", "[]", "{}"] {
            let body = pair_body(none.as_bytes()).unwrap();
            assert!(body.libraries.is_empty() && body.name.is_none(), "{none:?}");
        }
        let body = pair_body(br#"{"libraries":["ab"],"name":"x"}"#).unwrap();
        assert_eq!(
            (body.libraries, body.name),
            (vec!["ab".to_owned()], Some("x".to_owned()))
        );
        for bad in ["{", r#"{"librarys":[]}"#, "[1]", r#"{"libraries":"ab"}"#] {
            assert!(
                matches!(pair_body(bad.as_bytes()), Err(ApiError::Invalid(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn names_are_checked() {
        assert_eq!(valid_name("  Photos ").unwrap(), "Photos");
        assert_eq!(valid_name("").unwrap(), "");
        assert!(valid_name(&"x".repeat(101)).is_err());
        assert!(valid_name("a\nb").is_err());
    }

    #[test]
    fn engine_refusals_map_to_statuses() {
        let status = |e: EngineError| from_engine(e).status();
        assert_eq!(
            status(EngineError::Library(LibraryError::BadUser("x/y".into()))),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            status(EngineError::Library(LibraryError::Overlap {
                uid: "a".into(),
                folder: "f".into(),
                other: "l".into()
            })),
            StatusCode::CONFLICT
        );
        assert_eq!(
            status(EngineError::Backend(BackendError::NotFound("/x".into()))),
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            status(EngineError::Backend(BackendError::Unauthorized(
                "Nextcloud"
            ))),
            StatusCode::BAD_GATEWAY
        );
    }
}
