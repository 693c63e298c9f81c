//! `GET /api/admin/health`: serve checks the whole path a change takes, the way an admin
//! would, and says what to do about each failure (like notify_push's self-test).
//!
//! | check | passes when |
//! |---|---|
//! | `nextcloud` | `status.php` answers: installed, not in maintenance (its version is shown) |
//! | `app` | AppAPI has enabled harpbridge (asked only once it enabled us: a call from an unregistered app is a failed login) |
//! | `storage` | the database can be written (it is re-opened by itself after an I/O error such as a full disk; deliveries are refused meanwhile) |
//! | `webhooks` | our webhooks are registered with webhook_listeners |
//! | `webhook-deliveries` | no change Nextcloud made to a library has waited for its webhook longer than [`LATE`] |
//! | `background-jobs` | Nextcloud runs background jobs (cron or a worker) recently; needs an admin to ask |
//! | `panel` | AppAPI's proxy reaches the panel's script; needs an admin to ask |
//! | `swarm` | the peer-to-peer node runs, on addresses other hosts can reach |
//!
//! The caller is a Nextcloud admin (through AppAPI's proxy or HaRP), or the app itself: a
//! request signed with the app secret and no user, as `harpbridge doctor` sends. Checks
//! that must act as a user say so when there is none.

use std::time::Duration;

use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use super::api::{admin, ApiError};
use super::swarm::SwarmStatus;
use super::AppState;
use crate::appapi::auth::AppApiUser;
use crate::appapi::client::ClientError;
use crate::db::DbHealth;
use crate::engine::stats::{lock, WebhookState};

/// A change not delivered after this long means deliveries are late or stopped.
pub const LATE: Duration = Duration::from_secs(30);
/// Background jobs that last ran longer ago than this are not running.
pub const JOBS_STALE: Duration = Duration::from_secs(15 * 60);

/// The worker Nextcloud's admin manual advises for webhook deliveries.
pub const WEBHOOK_WORKER: &str =
    "occ background-job:worker -t 600 'OCA\\WebhookListeners\\BackgroundJobs\\WebhookCall'";

/// One check's outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Check {
    pub name: String,
    pub ok: bool,
    pub message: String,
    /// What to do, for a failed check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

impl Check {
    fn ok(name: &str, message: impl Into<String>) -> Check {
        Check {
            name: name.to_owned(),
            ok: true,
            message: message.into(),
            fix: None,
        }
    }

    fn fail(name: &str, message: impl Into<String>, fix: impl Into<String>) -> Check {
        Check {
            name: name.to_owned(),
            ok: false,
            message: message.into(),
            fix: Some(fix.into()),
        }
    }
}

/// Every check, in the order a change travels.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    pub ok: bool,
    pub checks: Vec<Check>,
}

impl Report {
    pub fn new(checks: Vec<Check>) -> Report {
        Report {
            ok: checks.iter().all(|c| c.ok),
            checks,
        }
    }
}

pub fn routes() -> Router<AppState> {
    Router::new().route("/api/admin/health", get(health))
}

#[derive(Debug, Deserialize)]
struct Params {
    /// Skip the checks that call Nextcloud (the panel polls with this).
    #[serde(default)]
    local: bool,
}

async fn health(
    State(state): State<AppState>,
    user: AppApiUser,
    Query(params): Query<Params>,
) -> Result<Response, ApiError> {
    // The app itself (no user) may ask; a user must be an admin.
    let admin_uid = match &user.0 {
        None => None,
        Some(_) => Some(admin(&state, user).await?),
    };
    let report = report(&state, admin_uid.as_deref(), params.local).await;
    Ok(Json(report).into_response())
}

/// Runs every check.
pub async fn report(state: &AppState, admin_uid: Option<&str>, local: bool) -> Report {
    let mut checks = Vec::new();
    let enabled = state.engine.as_ref().is_some_and(|e| e.was_enabled());
    if !local {
        checks.push(nextcloud(state).await);
        checks.push(app(state, enabled).await);
    }
    checks.push(storage(state));
    checks.push(webhooks(state));
    if !local && enabled {
        checks.push(deliveries(state).await);
        checks.push(background_jobs(state, admin_uid).await);
        checks.push(panel(state, admin_uid).await);
    }
    checks.push(swarm(state));
    Report::new(checks)
}

async fn nextcloud(state: &AppState) -> Check {
    let url = state.nextcloud.base_url();
    match state.nextcloud.server_status().await {
        Ok(s) if !s.installed => Check::fail(
            "nextcloud",
            format!("{url} answers but is not installed"),
            "finish Nextcloud's installation",
        ),
        Ok(s) if s.maintenance => Check::fail(
            "nextcloud",
            format!("Nextcloud {} at {url} is in maintenance mode", s.version),
            "occ maintenance:mode --off, once the maintenance is done",
        ),
        Ok(s) => Check::ok("nextcloud", format!("Nextcloud {} at {url}", s.version)),
        Err(e) => Check::fail(
            "nextcloud",
            format!("cannot reach Nextcloud at {url}: {e}"),
            "check NEXTCLOUD_URL, and that this host can reach it (DNS, firewall, TLS)",
        ),
    }
}

async fn app(state: &AppState, enabled: bool) -> Check {
    let id = &state.config.app_id;
    if !enabled {
        return Check::fail(
            "app",
            format!("AppAPI has not enabled {id} (not registered yet, or disabled)"),
            format!(
                "register it (README: \"Register it with a real Nextcloud\") or occ app_api:app:enable {id}"
            ),
        );
    }
    match state.nextcloud.ex_app_enabled().await {
        Ok(true) => Check::ok("app", format!("{id} is registered and enabled in AppAPI")),
        Ok(false) => Check::fail(
            "app",
            format!("AppAPI has {id} disabled"),
            format!("occ app_api:app:enable {id}"),
        ),
        Err(ClientError::Unauthorized { .. }) => Check::fail(
            "app",
            "Nextcloud refused harpbridge's credentials (401)",
            format!(
                "APP_SECRET must be the secret {id} was registered with (occ app_api:app:list); after repeated failures occ security:bruteforce:reset <this host's address>"
            ),
        ),
        Err(e) => Check::fail(
            "app",
            format!("cannot ask AppAPI for {id}'s state: {e}"),
            "see the nextcloud check",
        ),
    }
}

fn storage(state: &AppState) -> Check {
    const NAME: &str = "storage";
    let Some(engine) = &state.engine else {
        return Check::fail(
            NAME,
            state
                .engine_error
                .as_deref()
                .unwrap_or("no storage")
                .to_owned(),
            "fix the data directory (APP_PERSISTENT_STORAGE) and restart",
        );
    };
    let status = engine.storage_status();
    match &status.health {
        DbHealth::Ok => {
            let message = match &status.last_failure {
                Some(past) => format!(
                    "the database is writable (it was not for {} s: {}; the {} deliveries refused meanwhile were caught up with)",
                    past.until_ms.saturating_sub(past.since_ms) / 1000,
                    past.error,
                    past.refused_deliveries
                ),
                None => "the database is writable".to_owned(),
            };
            Check::ok(NAME, message)
        }
        DbHealth::Failing {
            since_ms,
            error,
            attempts,
            ..
        } => Check::fail(
            NAME,
            format!(
                "the database cannot be written for {} s ({error}); {} webhook deliveries refused so far; {attempts} re-opens tried",
                crate::chain::now_ms().saturating_sub(*since_ms) / 1000,
                status.refused_deliveries
            ),
            "free space on the data directory's disk (APP_PERSISTENT_STORAGE): harpbridge re-opens the database by itself, then catches up with the changes it could not record",
        ),
    }
}

fn webhooks(state: &AppState) -> Check {
    let Some(engine) = &state.engine else {
        return Check::fail(
            "webhooks",
            state
                .engine_error
                .as_deref()
                .unwrap_or("no storage")
                .to_owned(),
            "fix the data directory (APP_PERSISTENT_STORAGE) and restart",
        );
    };
    match &*lock(&engine.status().webhooks) {
        WebhookState::Registered { events, refused } if refused.is_empty() => {
            Check::ok("webhooks", format!("registered for {}", events.join(", ")))
        }
        WebhookState::Registered { refused, .. } => Check::fail(
            "webhooks",
            format!("Nextcloud refused some: {}", refused.join("; ")),
            "see nextcloud.log; disable and enable the app to register them again",
        ),
        WebhookState::Unavailable { reason } => Check::fail(
            "webhooks",
            format!("{reason}; scanning libraries instead"),
            "occ app:enable webhook_listeners, then occ app_api:app:disable and enable this app",
        ),
        WebhookState::Error { error } => Check::fail(
            "webhooks",
            format!("could not register: {error}"),
            "disable and enable the app once Nextcloud answers",
        ),
        WebhookState::Unknown => Check::fail(
            "webhooks",
            "not registered: AppAPI has not enabled the app since harpbridge started",
            format!("occ app_api:app:enable {}", state.config.app_id),
        ),
    }
}

/// Compares, per library, when Nextcloud last changed its folder (the folder's
/// modification time, which Nextcloud moves on every change below it) with the newest
/// change a webhook told us of: a change older than [`LATE`] that no delivery covers is
/// waiting in Nextcloud's background jobs, or was lost. (Changes a catch-up records are
/// not evidence: the one after a restart finds what changed while serve was down.)
async fn deliveries(state: &AppState) -> Check {
    const NAME: &str = "webhook-deliveries";
    let Some(engine) = &state.engine else {
        return Check::ok(NAME, "no storage, nothing delivered");
    };
    let now_s = crate::chain::now_ms() as i64 / 1000;
    let mut late = Vec::new();
    let mut errors = Vec::new();
    let libraries = engine.libraries().list();
    for library in &libraries {
        let changed = match engine.folder_changed_s(library).await {
            Ok(Some(changed)) => changed,
            Ok(None) => continue,
            Err(e) => {
                errors.push(format!("{}: {e}", library.name));
                continue;
            }
        };
        // What changed before serve started was found by its start-up catch-up.
        let delivered = engine
            .last_delivery_s(&library.id)
            .unwrap_or(0)
            .max(engine.started_s());
        let waiting = now_s - changed;
        if changed > delivered + 2 && waiting > LATE.as_secs() as i64 {
            late.push((library.name.clone(), waiting));
        }
    }
    let fix = format!(
        "run a worker for webhook deliveries (as the web server's user, kept running by systemd or a loop): {WEBHOOK_WORKER}; and system cron for the rest (occ background:cron, */5 * * * * php -f cron.php)"
    );
    if let Some((name, waiting)) = late.iter().max_by_key(|(_, w)| *w) {
        return Check::fail(
            NAME,
            format!(
                "Nextcloud changed {name} {waiting} s ago and no webhook has told harpbridge yet: webhook_listeners sends deliveries from background jobs, which are not running or are late{}",
                if late.len() > 1 { format!(" ({} libraries wait)", late.len()) } else { String::new() }
            ),
            fix,
        );
    }
    if !errors.is_empty() {
        return Check::fail(
            NAME,
            format!("cannot look at the libraries: {}", errors.join("; ")),
            "see the nextcloud and app checks",
        );
    }
    let status = lock(&engine.status().libraries).clone();
    let lag = status.values().filter_map(|l| l.deliveries.lag_s).max();
    Check::ok(
        NAME,
        match lag {
            Some(lag) => format!(
                "{} libraries up to date; deliveries arrive up to {lag} s after their change",
                libraries.len()
            ),
            None => format!("{} libraries up to date", libraries.len()),
        },
    )
}

async fn background_jobs(state: &AppState, admin_uid: Option<&str>) -> Check {
    const NAME: &str = "background-jobs";
    let Some(uid) = admin_uid else {
        return Check::ok(
            NAME,
            "not checked: needs an admin (open the panel as one, or harpbridge doctor --user ADMIN)",
        );
    };
    let mode = state
        .nextcloud
        .core_config(uid, "backgroundjobs_mode")
        .await;
    let last = state.nextcloud.core_config(uid, "lastcron").await;
    let (mode, last) = match (mode, last) {
        (Ok(mode), Ok(last)) => (mode, last.trim().parse::<i64>().unwrap_or(0)),
        (Err(e), _) | (_, Err(e)) => {
            return Check::fail(
                NAME,
                format!("cannot read Nextcloud's background job settings as {uid}: {e}"),
                "see the nextcloud and app checks",
            )
        }
    };
    let ago = crate::chain::now_ms() as i64 / 1000 - last;
    if mode == "ajax" {
        return Check::fail(
            NAME,
            format!("background jobs run in AJAX mode (last {ago} s ago): only while someone has Nextcloud open, so webhooks wait for a visitor"),
            format!("occ background:cron and a system cron entry (*/5 * * * * php -f cron.php as the web server's user), plus {WEBHOOK_WORKER}"),
        );
    }
    if last == 0 || ago > JOBS_STALE.as_secs() as i64 {
        return Check::fail(
            NAME,
            if last == 0 {
                format!("background jobs ({mode}) have never run")
            } else {
                format!("background jobs ({mode}) last ran {ago} s ago")
            },
            format!(
                "check the system cron entry for cron.php (or webcron), and run {WEBHOOK_WORKER}"
            ),
        );
    }
    Check::ok(NAME, format!("{mode}, last run {ago} s ago"))
}

async fn panel(state: &AppState, admin_uid: Option<&str>) -> Check {
    const NAME: &str = "panel";
    let Some(uid) = admin_uid else {
        return Check::ok(
            NAME,
            "not checked: needs an admin (open the panel as one, or harpbridge doctor --user ADMIN)",
        );
    };
    let path = format!(
        "/index.php/apps/app_api/proxy/{}/js/harpbridge-main.js",
        state.config.app_id
    );
    let answer = state
        .nextcloud
        .request(
            reqwest::Method::GET,
            &path,
            crate::appapi::client::Caller::User(uid),
        )
        .timeout(Duration::from_secs(15))
        .send()
        .await;
    match answer {
        Ok(r) if r.status().is_success() => Check::ok(
            NAME,
            "AppAPI's proxy reaches the panel; live updates need HaRP (the panel polls without it)",
        ),
        Ok(r) => Check::fail(
            NAME,
            format!("AppAPI's proxy answered {} for the panel's script", r.status()),
            "nextcloud.log names the cause (a route it cannot match, or the ExApp's address); re-register with the current appinfo/info.xml or manifest --json",
        ),
        Err(e) => Check::fail(
            NAME,
            format!("cannot ask AppAPI's proxy: {e}"),
            "see the nextcloud check",
        ),
    }
}

fn swarm(state: &AppState) -> Check {
    match state.swarm.status() {
        SwarmStatus::Off => Check::ok("swarm", "turned off (HARPBRIDGE_P2P=off)"),
        SwarmStatus::Failed { error } => Check::fail(
            "swarm",
            format!("not running: {error}"),
            "free the port (HARPBRIDGE_P2P_PORT) or choose another, then restart",
        ),
        SwarmStatus::Running { peer_id, listen } => {
            let reachable: Vec<&String> = listen
                .iter()
                .filter(|a| !a.starts_with("/ip4/127.") && !a.starts_with("/ip6/::1/"))
                .collect();
            if reachable.is_empty() {
                Check::fail(
                    "swarm",
                    format!("{peer_id} listens on loopback only ({}): no other host can reach it", listen.join(", ")),
                    "listen on the LAN's interface (HARPBRIDGE_P2P_LISTEN) and publish the port (TCP and UDP) if serve runs in a container",
                )
            } else {
                Check::ok(
                    "swarm",
                    format!(
                        "{peer_id} on {}; offices dial /ip4/<this host's public address>/tcp/<port>/p2p/{peer_id}",
                        reachable
                            .iter()
                            .map(|a| a.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                )
            }
        }
    }
}
