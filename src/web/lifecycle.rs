//! The routes AppAPI drives an ExApp with (docs/appapi.md §2).
//!
//! - `GET /heartbeat`: `{"status":"ok"}`, open to all (AppAPI sends no headers here on
//!   manual and legacy daemons); 503 `{"status":"error","error":…}` while the database
//!   cannot be written, so that the container's health check turns unhealthy (AppAPI
//!   calls it only on register and enable).
//! - `POST /init`: answers `200 {}` at once, then reports to `ex-app/status` in the
//!   background: progress 100, or the reason the data directory cannot be used.
//!   Progress 100 makes AppAPI call `/enabled` *inside* that status request, so this
//!   server must keep answering while its own call is pending (axum does).
//! - `PUT /enabled?enabled=1|0`: registers or removes the top-menu page. AppAPI reads
//!   only the JSON `error` field: empty means success, whatever the HTTP status. It also
//!   registers (or removes) our file-event webhooks; if that fails the engine falls back
//!   to scanning, and the enable still succeeds.

use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::appapi::client::ClientError;
use crate::appapi::ui;
use crate::web::AppState;

pub async fn heartbeat(State(app): State<AppState>) -> (StatusCode, Json<Value>) {
    match app.engine.as_ref().map(|e| e.storage_status().health) {
        // Open to all: the details are for admins (`/api/ingest`, the health check).
        Some(crate::db::DbHealth::Failing { .. }) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "error", "error": "the database cannot be written" })),
        ),
        _ => (StatusCode::OK, Json(json!({ "status": "ok" }))),
    }
}

pub async fn init(State(app): State<AppState>) -> Json<Value> {
    tokio::spawn(run_init(app));
    Json(json!({}))
}

/// The work behind `/init`: the storage was opened at start; report how that went.
async fn run_init(app: AppState) {
    match app.engine_error.as_deref() {
        Some(error) => {
            tracing::error!(%error, "initialisation failed");
            report_progress(&app, 1, Some(error)).await;
        }
        None => report_progress(&app, 100, None).await,
    }
}

/// Sends progress, retrying only when Nextcloud could not be reached at all.
async fn report_progress(app: &AppState, progress: u8, error: Option<&str>) {
    let mut delay = Duration::from_millis(200);
    for attempt in 1..=6 {
        match app.nextcloud.set_init_progress(progress, error).await {
            Ok(()) => {
                tracing::info!(progress, "reported initialisation progress");
                return;
            }
            Err(e @ ClientError::Transport(_)) if attempt < 6 => {
                tracing::warn!(error = %e, attempt, "could not report progress; retrying");
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
            Err(e) => {
                tracing::error!(error = %e, progress, "could not report initialisation progress");
                return;
            }
        }
    }
}

#[derive(Debug, Deserialize)]
pub struct EnabledQuery {
    enabled: Option<String>,
}

pub async fn enabled(
    State(app): State<AppState>,
    Query(query): Query<EnabledQuery>,
) -> (StatusCode, Json<Value>) {
    let enable = match query.enabled.as_deref() {
        Some("1") => true,
        Some("0") => false,
        other => {
            let error = format!("enabled must be 1 or 0, not {other:?}");
            return (StatusCode::BAD_REQUEST, Json(json!({ "error": error })));
        }
    };
    let result = if enable {
        ui::register(&app.nextcloud, &app.config).await
    } else {
        ui::unregister(&app.nextcloud).await
    };
    // AppAPI disables the app even when we answer with an error (and keeps it disabled
    // when an enable fails): remember a disable whatever happened.
    if !enable {
        if let Some(engine) = &app.engine {
            engine.remember_enabled(false);
        }
    }
    if result.is_ok() {
        if let Some(engine) = &app.engine {
            engine.remember_enabled(enable);
            // Webhook trouble does not fail the enable: the engine scans instead.
            if enable {
                engine.register_webhooks().await;
                let engine = engine.clone();
                let wanted = app.config.libraries.clone();
                tokio::spawn(async move { engine.ensure_libraries(&wanted).await });
            } else {
                engine.unregister_webhooks().await;
            }
        }
    }
    match result {
        Ok(()) => {
            app.set_enabled(enable);
            tracing::info!(enabled = enable, "AppAPI changed the app's state");
            (StatusCode::OK, Json(json!({ "error": "" })))
        }
        Err(e) => {
            let action = if enable { "enable" } else { "disable" };
            tracing::error!(error = %e, "could not {action}");
            (
                StatusCode::OK,
                Json(json!({ "error": format!("harpbridge could not {action}: {e}") })),
            )
        }
    }
}
