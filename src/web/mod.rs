//! The HTTP face of harpbridge: one axum router for AppAPI, HaRP and the panel.
//!
//! Every route sits behind [`crate::appapi::auth::require_appapi`], except
//! `GET /heartbeat`. Handlers share one [`AppState`].
//!
//! | file | concept |
//! |---|---|
//! | [`lifecycle`] | `/heartbeat`, `/init`, `/enabled`: the routes AppAPI drives us with |
//! | [`api`] | the panel's REST API (`/api/…`, `/api/admin/…`) |
//! | [`ws`], [`hub`], [`events`] | the live panel: WebSocket, fan-out, wire format |
//! | [`engine_events`] | the engine's events rendered as panel messages |
//! | [`panel`], [`access`] | what the panel's routes share: hub, admin check, pairing hand-over |
//! | [`ingest`] | webhook deliveries in, ingest status out |
//! | [`swarm`] | the p2p node inside `serve`, wired to the engine and the panel |
//! | [`feed`] | the node's peers and transfers in the panel's words (states, rates) |
//! | [`metrics`], [`prometheus`] | bytes per peer and per class, as JSON and as Prometheus text |
//! | [`health`] | the admin's self-test: every step a change takes, and what to do when one fails |
//! | [`assets`] | the panel's built JS, CSS and icon |

pub mod access;
pub mod api;
pub mod assets;
pub mod engine_events;
pub mod events;
pub mod feed;
pub mod health;
pub mod hub;
pub mod ingest;
pub mod lifecycle;
pub mod limits;
pub mod metrics;
pub mod offers;
pub mod panel;
pub mod prometheus;
pub mod swarm;
pub mod ws;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::routing::{get, post, put};
use axum::{middleware, Router};

use crate::appapi::auth::{require_appapi, AppApiAuth};
use crate::appapi::client::{ClientError, NextcloudClient};

use crate::backend::nextcloud::NextcloudBackend;
use crate::config::Config;
use crate::engine::events::Events;
use crate::engine::{Engine, EngineOptions};

/// What every handler can reach. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub nextcloud: NextcloudClient,
    pub auth: Arc<AppApiAuth>,
    /// The panel: its hub (live state + WebSocket fan-out) and admin checks.
    pub panel: Arc<panel::Panel>,
    /// The engine (ingest, chain, content); `None` if the data directory could not be
    /// opened, with the reason in `engine_error` (reported to AppAPI by `/init`).
    pub engine: Option<Engine>,
    pub engine_error: Option<Arc<str>>,
    /// The peer-to-peer node, once [`swarm::start`] ran it (or why not).
    pub swarm: Arc<swarm::Swarm>,
    enabled: Arc<AtomicBool>,
}

impl AppState {
    pub fn new(config: Config) -> Result<Self, ClientError> {
        let nextcloud = NextcloudClient::new(&config)?;
        let auth = Arc::new(AppApiAuth::new(
            config.app_id.clone(),
            config.app_secret.clone(),
        ));
        let panel = Arc::new(panel::Panel::new(nextcloud.clone(), &config.app_version));
        Ok(AppState {
            config: Arc::new(config),
            nextcloud,
            panel,
            auth,
            engine: None,
            engine_error: None,
            swarm: Arc::default(),
            enabled: Arc::new(AtomicBool::new(false)),
        })
    }

    /// Opens the data directory and starts the engine; on failure keeps serving the
    /// lifecycle so that `/init` can tell the admin why (needs a tokio runtime).
    pub fn start_engine(mut self) -> Self {
        let options = EngineOptions {
            data_dir: self.config.data_dir.clone(),
            app_id: self.config.app_id.clone(),
            device_name: self.config.device_name.clone(),
            scan_interval: self.config.scan_interval,
            cache_limit: self.config.cache_limit,
            ingest_in_flight: self.config.ingest_in_flight,
            backend_serves_content: false,
        };
        match Engine::start(
            options,
            Some(self.nextcloud.clone()),
            Arc::new(NextcloudBackend::new(self.nextcloud.clone())),
            Events::to(Arc::new(self.panel.hub.clone())),
        ) {
            Ok(engine) => {
                self.panel
                    .hub
                    .set_device_id(Some(engine.identity().peer_id().to_string()));
                self.engine = Some(engine);
            }
            Err(e) => {
                let error = format!(
                    "cannot use the data directory {}: {e}",
                    self.config.data_dir.display()
                );
                tracing::error!(%error, "harpbridge runs without storage");
                self.engine_error = Some(error.into());
            }
        }
        self
    }

    /// Whether AppAPI last told us we are enabled (since this process started).
    pub fn is_enabled(&self) -> bool {
        self.enabled.load(Ordering::Relaxed)
    }

    pub(crate) fn set_enabled(&self, enabled: bool) {
        self.enabled.store(enabled, Ordering::Relaxed);
    }
}

/// The whole router, authentication included.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/heartbeat", get(lifecycle::heartbeat))
        .route("/init", post(lifecycle::init))
        .route("/enabled", put(lifecycle::enabled))
        .merge(assets::routes())
        .merge(api::routes())
        .merge(ws::routes())
        .merge(ingest::routes())
        .merge(metrics::routes())
        .merge(health::routes())
        .layer(middleware::from_fn_with_state(
            state.auth.clone(),
            require_appapi,
        ))
        .with_state(state)
}
