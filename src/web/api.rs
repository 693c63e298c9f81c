//! The panel's REST API, reached through AppAPI's PHP proxy
//! (`/index.php/apps/app_api/proxy/<appid>/api/...`) or HaRP (`/exapps/<appid>/api/...`).
//!
//! | route | who | answer |
//! |---|---|---|
//! | `GET /api/snapshot` | user | [`Snapshot`]: everything, as for a WebSocket client (polling fallback) |
//! | `GET /api/overview` | user | [`Overview`]: device, the caller and whether they are an admin, libraries |
//! | `GET /api/peers` | user | `{"peers":[Peer]}`, discovered devices included (`trusted: false`) |
//! | `GET /api/activity?library=ID&limit=N` | user | `{"entries":[ChainEntry]}`, oldest first, `limit` ≤ 200 (default 200) |
//! | `GET /api/transfers` | user | `{"transfers":[Transfer]}` |
//! | `GET /api/libraries` | user | `{"libraries":[Library]}` |
//! | `POST /api/admin/libraries` | admin | body [`NewLibrary`]; 201 with the [`Library`]; 409 if that user's folder is one already |
//! | `DELETE /api/admin/libraries/{id}` | admin | 204; 404 if unknown |
//! | `POST /api/admin/peers/{id}/pair` | admin | 202 once handed to the swarm; 404 unknown, 409 already trusted, 503 swarm not running |
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
//! Libraries are kept in the [`Hub`](super::hub::Hub) for now: adding one announces it
//! to the panel (`library_state`); the sync engine and database take them over when they
//! land, and until then libraries do not survive a restart.

use axum::extract::{Path, Query, Request, State};
use axum::http::header::{HeaderValue, CACHE_CONTROL};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use super::events::{
    ApiErrorBody, Event, Library, LibraryStatus, NewLibrary, Overview, Verification, Viewer,
    ACTIVITY_LIMIT,
};
use super::panel::PairRequest;
use super::AppState;
use crate::appapi::auth::AppApiUser;
use crate::appapi::client::ClientError;

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
    NotFound(&'static str),
    #[error("{0}")]
    Conflict(String),
    #[error("the peer-to-peer swarm is not running, so pairing is not possible now")]
    SwarmNotRunning,
}

impl ApiError {
    fn status(&self) -> StatusCode {
        match self {
            ApiError::NoUser | ApiError::NotAdmin => StatusCode::FORBIDDEN,
            ApiError::Nextcloud(_) => StatusCode::BAD_GATEWAY,
            ApiError::Invalid(_) => StatusCode::BAD_REQUEST,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::SwarmNotRunning => StatusCode::SERVICE_UNAVAILABLE,
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

async fn viewer(state: &AppState, user: AppApiUser) -> Result<Viewer, ApiError> {
    let uid = uid(user)?;
    Ok(state.panel.access.viewer(&uid).await)
}

/// The acting user, if Nextcloud says they are an admin.
async fn admin(state: &AppState, user: AppApiUser) -> Result<String, ApiError> {
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

async fn add_library(
    State(state): State<AppState>,
    user: AppApiUser,
    body: Result<Json<NewLibrary>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    let by = admin(&state, user).await?;
    let Json(new) = body.map_err(|e| ApiError::Invalid(e.body_text()))?;
    let name = valid_name(&new.name)?;
    let owner = valid_owner(&new.owner)?;
    let folder = normalize_folder(&new.folder)?;
    let admin_view = Viewer {
        uid: by.clone(),
        is_admin: true,
    };
    let hub = &state.panel.hub;
    if let Some(existing) = hub
        .libraries(&admin_view)
        .into_iter()
        .find(|l| l.owner == owner && l.folder == folder)
    {
        return Err(ApiError::Conflict(format!(
            "{owner}'s folder {folder} is already the library {}",
            existing.name
        )));
    }
    let library = Library {
        id: library_id(&owner, &folder),
        name,
        owner,
        folder,
        heads: Vec::new(),
        entries: 0,
        verification: Verification::unverified(),
        status: LibraryStatus::Idle,
        error: None,
    };
    tracing::info!(library = %library.id, owner = %library.owner, folder = %library.folder, by = %by, "library added");
    hub.publish(Event::LibraryState {
        library: library.clone(),
    });
    Ok((StatusCode::CREATED, Json(library)).into_response())
}

async fn remove_library(
    State(state): State<AppState>,
    user: AppApiUser,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let by = admin(&state, user).await?;
    let hub = &state.panel.hub;
    if hub.library(&id).is_none() {
        return Err(ApiError::NotFound("library"));
    }
    tracing::info!(library = %id, by = %by, "library removed");
    hub.publish(Event::LibraryRemoved { library_id: id });
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn pair(
    State(state): State<AppState>,
    user: AppApiUser,
    Path(peer_id): Path<String>,
) -> Result<Response, ApiError> {
    let by = admin(&state, user).await?;
    let peer = state
        .panel
        .hub
        .peer(&peer_id)
        .ok_or(ApiError::NotFound("peer"))?;
    if peer.trusted {
        return Err(ApiError::Conflict(format!(
            "{peer_id} is already a trusted device"
        )));
    }
    let tx = state.panel.pairing().ok_or(ApiError::SwarmNotRunning)?;
    tx.try_send(PairRequest {
        peer_id: peer_id.clone(),
        requested_by: by,
    })
    .map_err(|_| ApiError::SwarmNotRunning)?;
    Ok((StatusCode::ACCEPTED, Json(json!({ "peer_id": peer_id }))).into_response())
}

const MAX_NAME: usize = 100;
const MAX_OWNER: usize = 64;
const MAX_FOLDER: usize = 4096;

fn valid_name(raw: &str) -> Result<String, ApiError> {
    let name = raw.trim();
    if name.is_empty() || name.chars().count() > MAX_NAME || name.chars().any(char::is_control) {
        return Err(ApiError::Invalid(format!(
            "a library name has 1 to {MAX_NAME} characters and no control characters"
        )));
    }
    Ok(name.to_owned())
}

fn valid_owner(raw: &str) -> Result<String, ApiError> {
    let owner = raw.trim();
    if owner.is_empty()
        || owner.len() > MAX_OWNER
        || owner
            .chars()
            .any(|c| c.is_control() || c == '/' || c == ':')
    {
        return Err(ApiError::Invalid(
            "the owner must be a Nextcloud user id".into(),
        ));
    }
    Ok(owner.to_owned())
}

/// `/`-separated, absolute, without empty, `.` or `..` segments or NUL; `""` means `/`.
fn normalize_folder(raw: &str) -> Result<String, ApiError> {
    if raw.len() > MAX_FOLDER || raw.contains('\0') {
        return Err(ApiError::Invalid("the folder path is not valid".into()));
    }
    let mut segments = Vec::new();
    for segment in raw.split('/') {
        match segment {
            "" => continue,
            "." | ".." => {
                return Err(ApiError::Invalid(
                    "the folder path may not contain . or .. segments".into(),
                ))
            }
            s if s.chars().any(char::is_control) => {
                return Err(ApiError::Invalid(
                    "the folder path may not contain control characters".into(),
                ))
            }
            s => segments.push(s),
        }
    }
    Ok(format!("/{}", segments.join("/")))
}

/// A stable id for a user's folder: a readable slug and a short hash.
fn library_id(owner: &str, folder: &str) -> String {
    // FNV-1a over "owner\0folder": fixed forever, unlike std's DefaultHasher.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in owner.bytes().chain([0]).chain(folder.bytes()) {
        hash = (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
    }
    let slug: String = folder
        .rsplit('/')
        .next()
        .unwrap_or("")
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .take(24)
        .collect::<String>()
        .to_ascii_lowercase();
    let slug = if slug.is_empty() { "root".into() } else { slug };
    format!("{slug}-{:08x}", hash as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folders_are_normalized_or_refused() {
        assert_eq!(normalize_folder("Photos/2024/").unwrap(), "/Photos/2024");
        assert_eq!(normalize_folder("//a//b").unwrap(), "/a/b");
        assert_eq!(normalize_folder("").unwrap(), "/");
        assert!(normalize_folder("/a/../b").is_err());
        assert!(normalize_folder("/a/./b").is_err());
        assert!(normalize_folder("/a\0b").is_err());
        assert!(normalize_folder("/a\nb").is_err());
    }

    #[test]
    fn names_and_owners_are_checked() {
        assert_eq!(valid_name("  Photos ").unwrap(), "Photos");
        assert!(valid_name("").is_err());
        assert!(valid_name(&"x".repeat(101)).is_err());
        assert!(valid_owner("alice").is_ok());
        assert!(valid_owner("a/b").is_err());
        assert!(valid_owner("").is_err());
    }

    #[test]
    fn library_ids_are_stable_and_distinct() {
        let a = library_id("alice", "/Photos");
        assert_eq!(a, library_id("alice", "/Photos"));
        assert!(a.starts_with("photos-"));
        assert_ne!(a, library_id("bob", "/Photos"));
        assert!(library_id("alice", "/").starts_with("root-"));
    }
}
