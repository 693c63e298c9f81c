//! Offers in `serve`: libraries that peers offer to this ExApp, shown to admins in the panel
//! (Libraries view) and joined only when an admin accepts one into a Nextcloud folder.
//!
//! | route | who | answer |
//! |---|---|---|
//! | `GET /api/admin/offers` | admin | `{"offers":[Offer]}`: the offers not refused and not yet placed in a folder, oldest first |
//! | `POST /api/admin/offers/{id}/accept` | admin | body `{"name","owner","folder"}`; 201 with the [`Library`](super::events::Library) once joined (the swarm pulls it, write-back fills the folder); 400 bad input, 404 not offered, 409 the folder overlaps a library, 503 swarm not running |
//! | `POST /api/admin/offers/{id}/reject` | admin | 204; never joined, its offers no longer listed |
//!
//! The record is the data directory's [`OfferBook`] (see [`crate::p2p::offers`]), the same
//! files `harpbridge offers` reads. `serve` needs a folder for a library, so an offer
//! accepted on the command line (no folder) is still listed here until an admin places it.

use std::sync::{Arc, Mutex};

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;

use super::api::{admin, ApiError};
use super::events::NewLibrary;
use super::AppState;
use crate::appapi::auth::AppApiUser;
use crate::chain::LibraryId;
use crate::engine::Engine;
use crate::p2p::offers::{OfferBook, Verdict};
use crate::p2p::{NodeEvent, NodeHandle};

/// The offer routes (admin only, under `/api/admin/`).
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/admin/offers", get(list))
        .route("/api/admin/offers/{id}/accept", post(accept))
        .route("/api/admin/offers/{id}/reject", post(reject))
}

/// The process's offer record, shared by the watcher and the API.
pub type SharedBook = Arc<Mutex<OfferBook>>;

/// Records the node's offers until it stops. A library already placed in a folder (an
/// admin accepted it, and the pull did not finish before the peer left) is joined again
/// when offered; refused ones are ignored; the rest wait for the panel.
pub fn watch(engine: Engine, node: NodeHandle, book: SharedBook) {
    use tokio::sync::broadcast::error::RecvError;
    let mut events = node.subscribe();
    tokio::spawn(async move {
        loop {
            match events.recv().await {
                Ok(NodeEvent::Offered { peer, library }) => {
                    let placed = engine.libraries().get(&library).is_some();
                    let verdict = crate::locks::lock(&book).offered(&peer, library);
                    match verdict {
                        _ if placed => {
                            if node.join(library).await.is_err() {
                                return;
                            }
                        }
                        Verdict::Wait { new: true } | Verdict::Join => {
                            tracing::info!(%peer, %library, "a peer offers a library: an admin can accept it in the panel");
                        }
                        Verdict::Wait { new: false } | Verdict::Ignore => {}
                    }
                }
                Ok(NodeEvent::Pulled { library, .. }) => {
                    if engine.libraries().get(&library).is_some() {
                        crate::locks::lock(&book).held(&library);
                    }
                }
                Ok(_) | Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => return,
            }
        }
    });
}

fn book(state: &AppState) -> Result<SharedBook, ApiError> {
    state.swarm.offers().ok_or(ApiError::SwarmNotRunning)
}

/// The offers an admin can still act on: not refused, and not placed in a folder yet.
fn open_offers(state: &AppState, book: &SharedBook) -> Vec<crate::p2p::offers::Offer> {
    let placed = |o: &crate::p2p::offers::Offer| {
        let id = o.library.parse::<LibraryId>().ok();
        match (id, state.engine.as_ref()) {
            (Some(id), Some(engine)) => engine.libraries().get(&id).is_some(),
            _ => false,
        }
    };
    let all = crate::locks::lock(book).not_refused();
    all.into_iter().filter(|o| !placed(o)).collect()
}

fn offered(state: &AppState, id: &str) -> Result<(SharedBook, LibraryId), ApiError> {
    let book = book(state)?;
    let library: LibraryId = id.parse().map_err(|_| ApiError::NotFound("offer".into()))?;
    let known = open_offers(state, &book)
        .iter()
        .any(|o| o.library == library.to_hex());
    if !known {
        return Err(ApiError::NotFound("offer".into()));
    }
    Ok((book, library))
}

async fn list(State(state): State<AppState>, user: AppApiUser) -> Result<Response, ApiError> {
    admin(&state, user).await?;
    let pending = open_offers(&state, &book(&state)?);
    Ok(Json(json!({ "offers": pending })).into_response())
}

async fn accept(
    State(state): State<AppState>,
    user: AppApiUser,
    Path(id): Path<String>,
    body: Result<Json<NewLibrary>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    let by = admin(&state, user).await?;
    let Json(new) = body.map_err(|e| ApiError::Invalid(e.body_text()))?;
    let name = super::api::valid_name(&new.name)?;
    let (book, library) = offered(&state, &id)?;
    let node = state.swarm.node().ok_or(ApiError::SwarmNotRunning)?;
    let engine = super::api::engine(&state)?;
    let joined = engine
        .join_library(library, &name, new.owner.trim(), &new.folder)
        .await
        .map_err(super::api::from_engine)?;
    // Placed in a folder, it is joined whenever offered: the record is for `offers list`.
    if let Err(e) = crate::locks::lock(&book).decide(library, true) {
        tracing::warn!(%library, error = %e, "could not record the acceptance");
    }
    node.join(library)
        .await
        .map_err(|_| ApiError::SwarmNotRunning)?;
    tracing::info!(%library, owner = %joined.uid, folder = %joined.folder, by = %by, "offered library accepted from the panel");
    let shown = state
        .panel
        .hub
        .library(&library.to_hex())
        .ok_or_else(|| ApiError::Internal("the joined library was not announced".into()))?;
    Ok((StatusCode::CREATED, Json(shown)).into_response())
}

async fn reject(
    State(state): State<AppState>,
    user: AppApiUser,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let by = admin(&state, user).await?;
    let (book, library) = offered(&state, &id)?;
    crate::locks::lock(&book)
        .decide(library, false)
        .map_err(|e| ApiError::Internal(format!("recording the decision: {e}")))?;
    tracing::info!(%library, by = %by, "offered library refused from the panel");
    Ok(StatusCode::NO_CONTENT.into_response())
}
