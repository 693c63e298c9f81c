//! The HTTP side of the Nextcloud + AppAPI test double.
//!
//! It serves, on a real socket, the OCS endpoints harpbridge calls, authenticates them
//! the way `OC::handleLogin` + AppAPI do, and records every request and answer so tests
//! can check what was sent. State lives behind one mutex that is never held across an
//! `.await`: the status call must be able to call the ExApp's `/enabled`, whose handler
//! calls back into this server, all at once.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use axum::body::{to_bytes, Body, Bytes};
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post, put};
use axum::Router;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde_json::{json, Value};

use super::files::UserFiles;
use super::ocs::{self, Version};
use super::webhooks::{Job, WebhookRow};

/// Where AppAPI reaches an ExApp.
#[derive(Debug, Clone)]
pub enum ExAppTarget {
    /// `http://host:port`, as for a manual-install daemon.
    Tcp(String),
    /// A unix socket, standing in for HaRP's FRP tunnel.
    Unix(PathBuf),
}

/// `oc_ex_apps.status`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct InitStatus {
    pub deploy: u8,
    pub init: u8,
    pub action: String,
    pub kind: String,
    pub error: String,
}

/// One row of `oc_ex_apps`.
#[derive(Debug, Clone)]
pub struct ExAppRow {
    pub app_id: String,
    pub version: String,
    pub secret: String,
    pub target: ExAppTarget,
    pub enabled: bool,
    pub status: InitStatus,
}

/// A UI row: top-menu entry, script, style or initial state, as AppAPI stores them.
#[derive(Debug, Clone, PartialEq)]
pub struct UiRow {
    pub id: i64,
    pub app_id: String,
    /// `top-menu`, `script`, `style` or `initial-state`.
    pub kind: String,
    /// The fields that identify the row (name; type+name+path; type+name+key).
    pub key: Vec<String>,
    /// Everything AppAPI returns for the row.
    pub data: Value,
}

/// One HTTP exchange seen by the double, either way.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub query: String,
    pub headers: Vec<(String, String)>,
    pub body: String,
    pub status: u16,
    pub answer: String,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Debug, Default)]
pub struct NcState {
    pub apps: BTreeMap<String, ExAppRow>,
    pub ui: Vec<UiRow>,
    /// Users and their groups.
    pub users: BTreeMap<String, Vec<String>>,
    /// Requests the ExApp sent to Nextcloud.
    pub received: Vec<Recorded>,
    /// Requests AppAPI sent to the ExApp, with its answers.
    pub sent: Vec<Recorded>,
    /// What ExApps wrote to Nextcloud's log: (app id, level, message).
    pub app_log: Vec<(String, i64, String)>,
    /// Brute-force attempts counted against 127.0.0.1.
    pub bruteforce_attempts: u32,
    /// When set, AppAPI's UI endpoints fail with this OCS status (a broken server).
    pub fail_ui_with: Option<u16>,
    next_id: i64,
    /// Each user's files.
    pub user_files: BTreeMap<String, UserFiles>,
    pub next_fileid: u64,
    /// Chunked uploads in progress: (uid, folder) → chunk name → bytes.
    pub uploads: BTreeMap<(String, String), BTreeMap<String, Bytes>>,
    /// Whether the webhook_listeners app is enabled (its routes 404 otherwise).
    pub webhook_listeners_enabled: bool,
    pub webhooks: BTreeMap<u64, WebhookRow>,
    pub next_webhook_id: u64,
    /// `WebhookCall` jobs waiting for the worker.
    pub webhook_jobs: Vec<Job>,
    /// When set, WebDAV answers 503 (Nextcloud down for maintenance).
    pub dav_down: bool,
    /// `(uid, path)` → `(status, times)`: the next `times` GETs of that file answer
    /// `status` (a file Nextcloud fails to serve, among others it serves).
    pub fail_get: BTreeMap<(String, String), (u16, u32)>,
    /// When set, a folder's GET is never a tar stream (a Nextcloud before 30, whose Sabre
    /// answers 501 "GET is only implemented on File objects").
    pub no_tar: bool,
    /// When set, the first folder's tar GET finds the calling app's secret changed to this
    /// (re-registered elsewhere): credentials refused in the middle of a batch.
    pub secret_at_tar: Option<String>,
    /// `(uid, path, bytes)`: a user writes this file the moment the ExApp's next WebDAV PUT
    /// to that path arrives, before the PUT is judged; stages a user's write landing
    /// between the ExApp's look and its write.
    pub user_write_before_put: Option<(String, String, Bytes)>,
}

pub(crate) struct Inner {
    pub(crate) state: Mutex<NcState>,
    pub(crate) http: reqwest::Client,
}

impl Inner {
    pub(crate) fn lock(&self) -> MutexGuard<'_, NcState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A running test double. Dropping it stops the server.
pub struct FakeNextcloud {
    pub url: String,
    pub(crate) inner: Arc<Inner>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeNextcloud {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeNextcloud {
    /// Starts the double on 127.0.0.1 with users `admin` (group admin) and `alice`.
    pub async fn start() -> FakeNextcloud {
        let inner = Arc::new(Inner {
            state: Mutex::new(NcState::default()),
            http: reqwest::Client::builder()
                .user_agent(super::NC_USER_AGENT)
                .build()
                .expect("reqwest client"),
        });
        {
            let mut s = inner.lock();
            s.users.insert("admin".into(), vec!["admin".into()]);
            s.users.insert("alice".into(), vec!["users".into()]);
            s.webhook_listeners_enabled = true;
            s.next_fileid = 100;
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the double");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let app = routes(inner.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakeNextcloud { url, inner, task }
    }

    pub fn state(&self) -> MutexGuard<'_, NcState> {
        self.inner.lock()
    }

    pub fn app(&self, app_id: &str) -> Option<ExAppRow> {
        self.state().apps.get(app_id).cloned()
    }

    /// UI rows of `kind` registered by `app_id`.
    pub fn ui_rows(&self, app_id: &str, kind: &str) -> Vec<UiRow> {
        self.state()
            .ui
            .iter()
            .filter(|r| r.app_id == app_id && r.kind == kind)
            .cloned()
            .collect()
    }

    /// Requests the ExApp made to Nextcloud whose path contains `needle`.
    pub fn received_matching(&self, needle: &str) -> Vec<Recorded> {
        self.state()
            .received
            .iter()
            .filter(|r| r.path.contains(needle))
            .cloned()
            .collect()
    }

    /// `METHOD /path?query` of every call AppAPI made to the ExApp, in order.
    pub fn sent_lines(&self) -> Vec<String> {
        self.state()
            .sent
            .iter()
            .map(|r| {
                if r.query.is_empty() {
                    format!("{} {}", r.method, r.path)
                } else {
                    format!("{} {}?{}", r.method, r.path, r.query)
                }
            })
            .collect()
    }

    pub fn clear_traffic(&self) {
        let mut s = self.state();
        s.received.clear();
        s.sent.clear();
    }
}

fn routes(inner: Arc<Inner>) -> Router {
    Router::new()
        .route(
            "/ocs/{ver}/apps/app_api/ex-app/status",
            put(set_init_status),
        )
        .route("/ocs/{ver}/apps/app_api/ex-app/state", get(ex_app_state))
        .route("/ocs/{ver}/apps/app_api/api/v1/ui/{kind}", any(ui_row))
        .route("/ocs/{ver}/apps/app_api/api/v1/log", post(app_log))
        .route("/ocs/{ver}/cloud/users/{uid}/groups", get(user_groups))
        .route(
            "/ocs/{ver}/apps/webhook_listeners/api/v1/webhooks",
            any(super::webhooks::api),
        )
        .route(
            "/ocs/{ver}/apps/webhook_listeners/api/v1/webhooks/{*rest}",
            any(super::webhooks::api),
        )
        .fallback(dav_or_404)
        .layer(middleware::from_fn_with_state(inner.clone(), record))
        .with_state(inner)
}

/// WebDAV lives under `/remote.php/dav/`; anything else is Nextcloud's 404 page.
async fn dav_or_404(State(inner): State<Arc<Inner>>, request: Request) -> Response {
    if request.uri().path().starts_with("/remote.php/dav/") {
        if inner.lock().dav_down {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                "Nextcloud is in maintenance mode",
            )
                .into_response();
        }
        return super::webdav::handle(State(inner), request).await;
    }
    (StatusCode::NOT_FOUND, "Page not found").into_response()
}

/// A core/other-app OCS login (`AppApiAdminAccessWithoutUser` lets user-less calls in).
pub(crate) fn core_login(
    inner: &Inner,
    headers: &HeaderMap,
    version: Version,
) -> Result<Login, Response> {
    login(inner, headers, version, RouteKind::Core, |_| false)
}

/// Records every exchange the ExApp makes with us.
async fn record(State(inner): State<Arc<Inner>>, request: Request, next: Next) -> Response {
    if request.uri().path().starts_with("/remote.php/dav/") {
        // File bodies can be gigabytes: record the exchange, not the bytes.
        let (method, path, query) = (
            request.method().to_string(),
            request.uri().path().to_owned(),
            request.uri().query().unwrap_or("").to_owned(),
        );
        let headers = headers_vec(request.headers());
        let response = next.run(request).await;
        inner.lock().received.push(Recorded {
            method,
            path,
            query,
            headers,
            body: String::new(),
            status: response.status().as_u16(),
            answer: String::new(),
        });
        return response;
    }
    let (parts, body) = request.into_parts();
    let bytes = to_bytes(body, 64 << 20).await.unwrap_or_default();
    let mut entry = Recorded {
        method: parts.method.to_string(),
        path: parts.uri.path().to_owned(),
        query: parts.uri.query().unwrap_or("").to_owned(),
        headers: headers_vec(&parts.headers),
        body: String::from_utf8_lossy(&bytes).into_owned(),
        status: 0,
        answer: String::new(),
    };
    let response = next
        .run(Request::from_parts(parts, Body::from(bytes)))
        .await;
    let (parts, body) = response.into_parts();
    let bytes = to_bytes(body, 64 << 20).await.unwrap_or_default();
    entry.status = parts.status.as_u16();
    entry.answer = String::from_utf8_lossy(&bytes).into_owned();
    inner.lock().received.push(entry);
    Response::from_parts(parts, Body::from(bytes))
}

pub(crate) fn headers_vec(headers: &HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|(n, v)| {
            (
                n.to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect()
}

/// Who a successful AppAPI login made the request act as.
pub(crate) struct Login {
    pub app_id: String,
    pub user: Option<String>,
}

/// How a route treats AppAPI logins.
#[derive(Clone, Copy, PartialEq, Eq)]
enum RouteKind {
    /// AppAPI's own controllers (`#[AppAPIAuth]`, no CSRF check); `exempt` skips the
    /// "ExApp must be enabled" rule.
    AppApi { exempt: bool },
    /// Core and other apps' OCS routes: CSRF-checked, 401 997 "not logged in" on failure.
    Core,
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> &'a str {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

/// `validateExAppRequestToNC`, with the brute-force counter of fixture `bruteforce-lockout`.
fn login(
    inner: &Inner,
    headers: &HeaderMap,
    version: Version,
    kind: RouteKind,
    exempt_if: impl Fn(&ExAppRow) -> bool,
) -> Result<Login, Response> {
    let fail = |version| match kind {
        RouteKind::AppApi { .. } => ocs::appapi_auth_failed(version),
        RouteKind::Core => ocs::not_logged_in(version),
    };
    let auth = header(headers, "authorization-app-api");
    if auth.is_empty() {
        return Err(fail(version));
    }
    let mut state = inner.lock();
    if state.bruteforce_attempts > 10 {
        return Err(ocs::throttled(version));
    }
    let app_id = header(headers, "ex-app-id").to_owned();
    let Some(app) = state.apps.get(&app_id).cloned() else {
        state.bruteforce_attempts += 2;
        return Err(fail(version));
    };
    let decoded = STANDARD.decode(auth).unwrap_or_default();
    let decoded = String::from_utf8_lossy(&decoded).into_owned();
    let (user, secret) = decoded.split_once(':').unwrap_or(("", ""));
    if secret != app.secret {
        state.bruteforce_attempts += 2;
        return Err(fail(version));
    }
    let exempt = matches!(kind, RouteKind::AppApi { exempt: true }) || exempt_if(&app);
    if !app.enabled && !exempt {
        return Err(fail(version));
    }
    if header(headers, "ex-app-version").trim().is_empty() {
        return Err(fail(version));
    }
    if !user.is_empty() && !state.users.contains_key(user) {
        return Err(fail(version));
    }
    state.bruteforce_attempts = 0;
    Ok(Login {
        app_id,
        user: (!user.is_empty()).then(|| user.to_owned()),
    })
}

fn csrf_ok(headers: &HeaderMap) -> bool {
    header(headers, "ocs-apirequest").eq_ignore_ascii_case("true")
}

fn version_of(ver: &str) -> Result<Version, Response> {
    Version::from_segment(ver)
        .ok_or_else(|| (StatusCode::NOT_FOUND, "Page not found").into_response())
}

/// OCS parameters: the JSON body, merged over the query string.
fn params(query: &BTreeMap<String, String>, body: &[u8]) -> serde_json::Map<String, Value> {
    let mut map: serde_json::Map<String, Value> = query
        .iter()
        .map(|(k, v)| (k.clone(), Value::from(v.clone())))
        .collect();
    if let Ok(Value::Object(body)) = serde_json::from_slice::<Value>(body) {
        map.extend(body);
    }
    map
}

/// `PUT ex-app/status`: progress reports; 100 runs the enable step inside this request.
async fn set_init_status(
    State(inner): State<Arc<Inner>>,
    Path(ver): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let version = match version_of(&ver) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let login = match login(
        &inner,
        &headers,
        version,
        RouteKind::AppApi { exempt: false },
        |app| matches!(app.status.kind.as_str(), "install" | "update"),
    ) {
        Ok(l) => l,
        Err(r) => return r,
    };
    let params = params(&BTreeMap::new(), &body);
    let Some(progress) = params.get("progress").and_then(Value::as_i64) else {
        return ocs::failure(version, 400, "progress is required");
    };
    if !(0..=100).contains(&progress) {
        return ocs::failure(version, 400, "Invalid ExApp status progress value");
    }
    let error = params
        .get("error")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    let run_enable = {
        let mut state = inner.lock();
        let Some(app) = state.apps.get_mut(&login.app_id) else {
            return ocs::appapi_auth_failed(version);
        };
        if app.status.init == 100 {
            false
        } else if progress == 0 {
            app.status.init = 0;
            app.status.error.clear();
            false
        } else {
            if !error.is_empty() {
                app.status.error = error.clone();
            }
            if progress == 100 && error.is_empty() {
                // Marked done after the enable step below, so `--wait-finish` (which
                // polls for 100) returns only once /enabled has run.
                true
            } else {
                app.status.init = progress as u8;
                false
            }
        }
    };
    if run_enable {
        super::occ::enable_exapp(&inner, &login.app_id).await;
        if let Some(app) = inner.lock().apps.get_mut(&login.app_id) {
            app.status.init = 100;
            app.status.action.clear();
            app.status.kind.clear();
        }
    }
    ocs::ok(version, json!([]))
}

/// `GET ex-app/state`: 1 or 0; allowed while disabled.
async fn ex_app_state(
    State(inner): State<Arc<Inner>>,
    Path(ver): Path<String>,
    headers: HeaderMap,
) -> Response {
    let version = match version_of(&ver) {
        Ok(v) => v,
        Err(r) => return r,
    };
    match login(
        &inner,
        &headers,
        version,
        RouteKind::AppApi { exempt: true },
        |_| true,
    ) {
        Ok(login) => {
            let enabled = inner
                .lock()
                .apps
                .get(&login.app_id)
                .map(|a| a.enabled)
                .unwrap_or(false);
            ocs::ok(version, json!(if enabled { 1 } else { 0 }))
        }
        Err(r) => r,
    }
}

/// Which parameters identify a UI row of each kind, and its "not found" message.
fn ui_key_fields(kind: &str) -> Option<(&'static [&'static str], &'static str)> {
    match kind {
        "top-menu" => Some((&["name"], "No such Top Menu entry")),
        "script" => Some((&["type", "name", "path"], "No such script")),
        "style" => Some((&["type", "name", "path"], "No such style")),
        "initial-state" => Some((&["type", "name", "key"], "No such initial state")),
        _ => None,
    }
}

/// `POST|GET|DELETE api/v1/ui/{top-menu,script,style,initial-state}`.
/// `POST api/v1/log`: a line in Nextcloud's log, kept in [`NcState::app_log`].
async fn app_log(
    State(inner): State<Arc<Inner>>,
    Path(ver): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let version = match version_of(&ver) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let login = match login(
        &inner,
        &headers,
        version,
        RouteKind::AppApi { exempt: false },
        |_| false,
    ) {
        Ok(l) => l,
        Err(r) => return r,
    };
    let params = params(&BTreeMap::new(), &body);
    let (Some(level), Some(message)) = (
        params.get("level").and_then(Value::as_i64),
        params.get("message").and_then(Value::as_str),
    ) else {
        return ocs::failure(version, 400, "level and message are required");
    };
    inner
        .lock()
        .app_log
        .push((login.app_id.clone(), level, message.to_owned()));
    ocs::ok(version, Value::Null)
}

async fn ui_row(
    State(inner): State<Arc<Inner>>,
    Path((ver, kind)): Path<(String, String)>,
    method: Method,
    Query(query): Query<BTreeMap<String, String>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let version = match version_of(&ver) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let Some((fields, not_found)) = ui_key_fields(&kind) else {
        return (StatusCode::NOT_FOUND, "Page not found").into_response();
    };
    let login = match login(
        &inner,
        &headers,
        version,
        RouteKind::AppApi { exempt: false },
        |_| false,
    ) {
        Ok(l) => l,
        Err(r) => return r,
    };
    if let Some(code) = inner.lock().fail_ui_with {
        return ocs::failure(version, code, "Internal Server Error");
    }
    let params = params(&query, &body);
    let text = |name: &str| match params.get(name) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    };
    let key: Vec<String> = fields.iter().map(|f| text(f)).collect();
    if key.iter().any(String::is_empty) {
        return ocs::failure(version, 400, "Missing parameters");
    }
    let mut state = inner.lock();
    let position = state
        .ui
        .iter()
        .position(|r| r.app_id == login.app_id && r.kind == kind && r.key == key);
    match method {
        Method::POST => {
            let mut data = match kind.as_str() {
                "top-menu" => json!({
                    "appid": login.app_id, "name": text("name"), "display_name": text("displayName"),
                    "icon": text("icon"), "admin_required": params.get("adminRequired").and_then(Value::as_i64).unwrap_or(0),
                }),
                "initial-state" => json!({
                    "appid": login.app_id, "type": text("type"), "name": text("name"),
                    "key": text("key"), "value": params.get("value").cloned().unwrap_or(Value::Null),
                }),
                _ => json!({
                    "appid": login.app_id, "type": text("type"), "name": text("name"),
                    "path": text("path"), "after_app_id": text("afterAppId"),
                }),
            };
            match position {
                Some(i) => {
                    data["id"] = json!(state.ui[i].id);
                    state.ui[i].data = data;
                }
                None => {
                    state.next_id += 1;
                    let id = state.next_id;
                    data["id"] = json!(id);
                    state.ui.push(UiRow {
                        id,
                        app_id: login.app_id.clone(),
                        kind: kind.clone(),
                        key,
                        data,
                    });
                }
            }
            ocs::ok(version, json!([]))
        }
        Method::GET => match position {
            Some(i) => ocs::ok(version, state.ui[i].data.clone()),
            None => ocs::failure(version, 404, not_found),
        },
        Method::DELETE => match position {
            Some(i) => {
                let row = state.ui.remove(i);
                if kind == "top-menu" {
                    // Deleting a page also deletes its scripts, styles and initial states.
                    let name = row.key[0].clone();
                    state.ui.retain(|r| {
                        !(r.app_id == row.app_id
                            && r.kind != "top-menu"
                            && r.key.get(1) == Some(&name))
                    });
                }
                ocs::ok(version, json!([]))
            }
            None => ocs::failure(version, 404, not_found),
        },
        _ => (StatusCode::METHOD_NOT_ALLOWED, "").into_response(),
    }
}

/// `GET cloud/users/{uid}/groups`: a user may read their own groups, an admin anyone's.
async fn user_groups(
    State(inner): State<Arc<Inner>>,
    Path((ver, uid)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let version = match version_of(&ver) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let login = match login(&inner, &headers, version, RouteKind::Core, |_| false) {
        Ok(l) => l,
        Err(r) => return r,
    };
    if !csrf_ok(&headers) {
        return ocs::csrf_failed();
    }
    let state = inner.lock();
    let Some(caller) = login.user else {
        return ocs::not_logged_in(version);
    };
    let caller_is_admin = state
        .users
        .get(&caller)
        .is_some_and(|g| g.iter().any(|g| g == "admin"));
    if caller != uid && !caller_is_admin {
        return ocs::failure(
            version,
            403,
            "Logged in user must be a subadmin or an admin",
        );
    }
    match state.users.get(&uid) {
        Some(groups) => ocs::ok(version, json!({ "groups": groups })),
        None => ocs::failure(version, 404, "User does not exist"),
    }
}
