//! The webhook receiver and the ingest status.
//!
//! `POST /webhooks/<EventName>`: a file-event delivery from Nextcloud's webhook_listeners,
//! sent through AppAPI (so authenticated like every route). AppAPI waits 3 s and never
//! retries, so the handler only validates, queues durably and answers; the worker does the
//! rest. Answers: 200 `queued`, `duplicate` or `ignored` (outside every library); 400 for
//! a malformed body, 413 for an oversized one, 503 when the queue cannot take it (the
//! database cannot be written: a catch-up records its change once it can).
//!
//! `GET /api/ingest`: for a user, the scans and catch-ups of their own libraries and
//! whether the database can be written (`storage`: `state`); for an admin, all libraries
//! and also why not and since when (`storage`, see [`crate::engine::storage`]), backlog, failed events, counters, webhook and Nextcloud state, scans,
//! the catch-up task (`catch_up`: `state` `idle` | `pending` | `running`, `rounds`),
//! per library its catch-ups (`catch_up`: `running`, `last_ms`, `result` `unchanged` |
//! `changes` | `failed`, `error`, `last_changes`, `changes_found`) and its deliveries
//! (`deliveries`: `last_accepted_ms`, `lag_s`),
//! write-back's state (`writeback`: `ok` with the changes Nextcloud does not hold yet,
//! `pending`, of which `waiting_for_content` wait for their blocks; `retrying` with its
//! `error` and `retry_in_ms`; or `unauthorized`), and the swarm's state (`{"state":"running","peer_id":…,"listen":[…]}`, `off`, or
//! `failed` with its `error`).

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::header::CACHE_CONTROL;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;

use super::AppState;
use crate::appapi::auth::AppApiUser;
use crate::appapi::webhooks::{parse_delivery, MAX_BODY};
use crate::engine::queue::delivery_key;
use crate::engine::stats::{lock, Counters};
use crate::engine::Accepted;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/webhooks/{event}",
            post(receive).layer(DefaultBodyLimit::max(MAX_BODY)),
        )
        .route("/api/ingest", get(status))
}

fn answer(status: StatusCode, body: serde_json::Value) -> Response {
    (status, [(CACHE_CONTROL, "no-store")], Json(body)).into_response()
}

async fn receive(State(state): State<AppState>, body: Bytes) -> Response {
    let Some(engine) = &state.engine else {
        let error = state
            .engine_error
            .as_deref()
            .unwrap_or("storage unavailable");
        return answer(StatusCode::SERVICE_UNAVAILABLE, json!({ "error": error }));
    };
    let event = match parse_delivery(&body) {
        Ok(event) => event,
        Err(e) => {
            Counters::add(&engine.counters().rejected, 1);
            tracing::warn!(error = %e, "refused a malformed webhook delivery");
            engine.delivery_refused();
            return answer(StatusCode::BAD_REQUEST, json!({ "error": e.to_string() }));
        }
    };
    match engine.accept(delivery_key(&body), event).await {
        Ok(accepted) => {
            let status = match accepted {
                Accepted::Queued => "queued",
                Accepted::Duplicate => "duplicate",
                Accepted::Outside => "ignored",
            };
            answer(StatusCode::OK, json!({ "status": status }))
        }
        Err(e) => {
            tracing::error!(error = %e, "could not queue a webhook delivery");
            answer(
                StatusCode::SERVICE_UNAVAILABLE,
                json!({ "error": e.to_string() }),
            )
        }
    }
}

async fn status(State(state): State<AppState>, user: AppApiUser) -> Response {
    let Some(engine) = &state.engine else {
        return answer(
            StatusCode::SERVICE_UNAVAILABLE,
            json!({ "error": state.engine_error.as_deref().unwrap_or("storage unavailable") }),
        );
    };
    let viewer = match super::api::viewer(&state, user).await {
        Ok(v) => v,
        Err(e) => return e.into_response(),
    };
    let status = engine.status();
    let ingest = lock(&status.libraries).clone();
    let mine: Vec<_> = engine
        .libraries()
        .list()
        .into_iter()
        .filter(|l| viewer.sees_owner(&l.uid))
        .collect();
    let libraries: Vec<_> = mine
        .iter()
        .map(|l| {
            let id = l.id.to_hex();
            let li = ingest.get(&id).cloned().unwrap_or_default();
            json!({
                "id": id, "name": l.name, "uid": l.uid, "folder": l.folder,
                "catch_up": li.catch_up, "deliveries": li.deliveries,
            })
        })
        .collect();
    let scans: std::collections::BTreeMap<_, _> = lock(&status.scans)
        .iter()
        .filter(|(id, _)| mine.iter().any(|l| l.id.to_hex() == **id))
        .map(|(id, scan)| (id.clone(), scan.clone()))
        .collect();
    // The rest names other users' files (errors, write-back's state) and the swarm's
    // addresses: for admins only.
    let storage = engine.storage_status();
    if !viewer.is_admin {
        // Whether changes are recorded; why not (paths on the server) is for admins.
        let state = match storage.health {
            crate::db::DbHealth::Ok => "ok",
            crate::db::DbHealth::Failing { .. } => "failing",
        };
        return answer(
            StatusCode::OK,
            json!({ "scans": scans, "libraries": libraries, "storage": { "state": state } }),
        );
    }
    answer(
        StatusCode::OK,
        json!({
            "backlog": engine.queue().len().ok(),
            "failed": engine.queue().failed().map(|f| f.len()).ok(),
            "counters": engine.counters().snapshot(),
            "webhooks": *lock(&status.webhooks),
            "nextcloud": status.nextcloud_now(),
            "scans": scans,
            "catch_up": *lock(&status.catch_up),
            "writeback": *lock(&status.writeback),
            "swarm": state.swarm.status(),
            "storage": storage,
            "libraries": libraries,
        }),
    )
}
