//! AppAPI's occ commands, driving the ExApp the way AppAPI 33 does
//! (fixtures `lifecycle/01`–`12`): the same calls, headers, order and judgement.
//!
//! Time is compressed: heartbeats are retried every 100 ms instead of every second.

use std::time::Duration;

use axum::http::HeaderMap;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde_json::Value;

use super::nextcloud::{
    headers_vec, ExAppRow, ExAppTarget, FakeNextcloud, InitStatus, Inner, Recorded,
};
use super::raw_http;

/// What `app_api:app:register --json-info` is given.
#[derive(Debug, Clone)]
pub struct ExAppSpec {
    pub app_id: String,
    pub version: String,
    pub secret: String,
    pub target: ExAppTarget,
    /// Heartbeat attempts before giving up (AppAPI: 600 × 1 s; here × 100 ms).
    pub heartbeat_tries: u32,
    /// How long `--wait-finish` waits for progress 100 (AppAPI: 40 min).
    pub init_timeout: Duration,
}

impl ExAppSpec {
    pub fn new(app_id: &str, secret: &str, target: ExAppTarget) -> Self {
        ExAppSpec {
            app_id: app_id.into(),
            version: "0.1.0".into(),
            secret: secret.into(),
            target,
            heartbeat_tries: 100,
            init_timeout: Duration::from_secs(30),
        }
    }
}

/// An occ command's exit code and output.
#[derive(Debug, Clone)]
pub struct OccOutcome {
    pub exit_code: i32,
    pub stdout: String,
}

/// The three kinds of call AppAPI makes to an ExApp, with their fixture headers.
#[derive(Debug, Clone, Copy)]
enum Call {
    Heartbeat,
    Init,
    Enabled(bool),
}

/// An ExApp's answer, or the transport error AppAPI would see.
pub(crate) type Answer = Result<(u16, String), String>;

async fn call_exapp(inner: &Inner, app: &ExAppRow, call: Call) -> Answer {
    let (method, path_and_query, timeout) = match call {
        Call::Heartbeat => ("GET", "/heartbeat".to_owned(), 30),
        Call::Init => ("POST", "/init".to_owned(), 30),
        Call::Enabled(on) => ("PUT", format!("/enabled?enabled={}", u8::from(on)), 60),
    };
    let mut headers: Vec<(&str, String)> = Vec::new();
    match call {
        Call::Heartbeat => {
            headers.push(("Accept", "application/json".into()));
            headers.push(("Content-Type", "application/json".into()));
        }
        Call::Init | Call::Enabled(_) => {
            headers.push(("AA-VERSION", super::AA_VERSION.into()));
            headers.push(("EX-APP-ID", app.app_id.clone()));
            headers.push(("EX-APP-VERSION", app.version.clone()));
            headers.push((
                "AUTHORIZATION-APP-API",
                STANDARD.encode(format!(":{}", app.secret)),
            ));
            headers.push(("AA-REQUEST-ID", "CLI".into()));
            if matches!(call, Call::Enabled(_)) {
                headers.push(("Accept-Language", "en".into()));
            }
        }
    }
    headers.push(("User-Agent", super::NC_USER_AGENT.into()));
    send_to_exapp(
        inner,
        &app.target,
        method,
        &path_and_query,
        &headers,
        bytes::Bytes::new(),
        Duration::from_secs(timeout),
    )
    .await
}

/// Sends one request to an ExApp over TCP or its unix socket and records the exchange.
pub(crate) async fn send_to_exapp(
    inner: &Inner,
    target: &ExAppTarget,
    method: &str,
    path_and_query: &str,
    headers: &[(&str, String)],
    body: bytes::Bytes,
    timeout: Duration,
) -> Answer {
    let (path, query) = path_and_query
        .split_once('?')
        .map(|(p, q)| (p.to_owned(), q.to_owned()))
        .unwrap_or((path_and_query.to_owned(), String::new()));
    let mut header_map = HeaderMap::new();
    for (n, v) in headers {
        if let (Ok(n), Ok(v)) = (
            axum::http::HeaderName::from_bytes(n.as_bytes()),
            axum::http::HeaderValue::from_str(v),
        ) {
            header_map.append(n, v);
        }
    }
    // Recorded when sent, so the order is the order AppAPI made the calls in (an answer
    // can arrive after calls that the ExApp's own work triggered meanwhile).
    let index = {
        let mut state = inner.lock();
        state.sent.push(Recorded {
            method: method.into(),
            path,
            query,
            headers: headers_vec(&header_map),
            body: String::from_utf8_lossy(&body).into_owned(),
            status: 0,
            answer: String::new(),
        });
        state.sent.len() - 1
    };
    let answer: Answer = match target {
        ExAppTarget::Tcp(base) => {
            let mut request = inner
                .http
                .request(
                    reqwest::Method::from_bytes(method.as_bytes()).expect("method"),
                    format!("{base}{path_and_query}"),
                )
                .timeout(timeout);
            for (n, v) in headers {
                request = request.header(*n, v);
            }
            if method != "GET" && body.is_empty() {
                request = request.header("Content-Length", "0");
            }
            if !body.is_empty() {
                request = request.body(body.clone());
            }
            match request.send().await {
                Ok(r) => {
                    let status = r.status().as_u16();
                    Ok((status, r.text().await.unwrap_or_default()))
                }
                Err(e) if e.is_timeout() => Err("cURL error 28: Operation timed out".into()),
                Err(e) => Err(format!("cURL error: {e}")),
            }
        }
        ExAppTarget::Unix(path) => {
            match tokio::time::timeout(
                timeout,
                raw_http::request_with_body(path, method, path_and_query, headers, &body),
            )
            .await
            {
                Ok(Ok(r)) => Ok((r.status, r.body)),
                Ok(Err(e)) => Err(format!("cURL error: {e}")),
                Err(_) => Err("cURL error 28: Operation timed out".into()),
            }
        }
    };
    let (status, answer_body) = match &answer {
        Ok((s, b)) => (*s, b.clone()),
        Err(e) => (0, e.clone()),
    };
    if let Some(entry) = inner.lock().sent.get_mut(index) {
        entry.status = status;
        entry.answer = answer_body;
    }
    answer
}

fn app_row(inner: &Inner, app_id: &str) -> Option<ExAppRow> {
    inner.lock().apps.get(app_id).cloned()
}

fn set_enabled(inner: &Inner, app_id: &str, enabled: bool) {
    if let Some(app) = inner.lock().apps.get_mut(app_id) {
        app.enabled = enabled;
    }
}

/// The error AppAPI reads from `/enabled`: only the JSON `error` field counts; a body
/// that is not JSON counts as success, a transport error as failure.
fn enabled_error(answer: &Answer) -> Option<String> {
    match answer {
        Err(e) => Some(e.clone()),
        Ok((_, body)) => serde_json::from_str::<Value>(body)
            .ok()
            .and_then(|v| v.get("error").and_then(Value::as_str).map(str::to_owned))
            .filter(|e| !e.is_empty()),
    }
}

/// `AppAPIService::enableExApp`: mark enabled, heartbeat, `PUT /enabled?enabled=1`.
pub(crate) async fn enable_exapp(inner: &Inner, app_id: &str) -> bool {
    let Some(app) = app_row(inner, app_id) else {
        return false;
    };
    set_enabled(inner, app_id, true);
    if !heartbeat_ok(&call_exapp(inner, &app, Call::Heartbeat).await) {
        return false;
    }
    let answer = call_exapp(inner, &app, Call::Enabled(true)).await;
    if enabled_error(&answer).is_some() {
        set_enabled(inner, app_id, false);
        return false;
    }
    true
}

fn heartbeat_ok(answer: &Answer) -> bool {
    matches!(answer, Ok((200, body)) if serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| v.get("status").and_then(Value::as_str).map(|s| s == "ok"))
        .unwrap_or(false))
}

fn outcome(exit_code: i32, stdout: impl Into<String>) -> OccOutcome {
    OccOutcome {
        exit_code,
        stdout: stdout.into(),
    }
}

impl FakeNextcloud {
    /// `occ app_api:app:register <id> manual_install --json-info ... --wait-finish`.
    pub async fn register(&self, spec: &ExAppSpec) -> OccOutcome {
        let inner = &self.inner;
        let id = spec.app_id.clone();
        {
            let mut state = inner.lock();
            if state.apps.contains_key(&id) {
                return outcome(3, format!("ExApp {id} is already registered.\n"));
            }
            state.apps.insert(
                id.clone(),
                ExAppRow {
                    app_id: id.clone(),
                    version: spec.version.clone(),
                    secret: spec.secret.clone(),
                    target: spec.target.clone(),
                    enabled: false,
                    status: InitStatus {
                        deploy: 100,
                        init: 0,
                        action: "healthcheck".into(),
                        kind: "install".into(),
                        error: String::new(),
                    },
                },
            );
        }
        let mut stdout = format!("ExApp {id} deployed successfully.\n");
        let app = app_row(inner, &id).expect("just inserted");
        let mut healthy = false;
        for _ in 0..spec.heartbeat_tries {
            if heartbeat_ok(&call_exapp(inner, &app, Call::Heartbeat).await) {
                healthy = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        if !healthy {
            if let Some(a) = inner.lock().apps.get_mut(&id) {
                a.status.error = "Heartbeat check failed".into();
            }
            stdout.push_str(&format!("ExApp {id} heartbeat check failed. Make sure that Nextcloud instance and ExApp can reach it other.\n"));
            return outcome(1, stdout);
        }
        {
            let mut state = inner.lock();
            if let Some(a) = state.apps.get_mut(&id) {
                a.enabled = true;
                a.status.init = 0;
                a.status.action = "init".into();
            }
        }
        match call_exapp(inner, &app, Call::Init).await {
            Ok((404 | 501, _)) => {
                if let Some(a) = inner.lock().apps.get_mut(&id) {
                    a.status.init = 100;
                    a.status.action.clear();
                    a.status.kind.clear();
                }
                enable_exapp(inner, &id).await;
            }
            Ok((200..=299, _)) => {
                let deadline = tokio::time::Instant::now() + spec.init_timeout;
                loop {
                    let status = app_row(inner, &id).map(|a| a.status).unwrap_or_default();
                    if status.init == 100 || !status.error.is_empty() {
                        break;
                    }
                    if tokio::time::Instant::now() >= deadline {
                        if let Some(a) = inner.lock().apps.get_mut(&id) {
                            a.status.error = format!("ExApp {id} initialization timed out");
                        }
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
            other => {
                let message = match other {
                    Ok((status, body)) => format!(
                        "Server error: `POST /init` resulted in a `{status}` response:\n{body}\n"
                    ),
                    Err(e) => e,
                };
                if let Some(a) = inner.lock().apps.get_mut(&id) {
                    a.status.error = message;
                }
            }
        }
        let error = app_row(inner, &id)
            .map(|a| a.status.error)
            .unwrap_or_default();
        if !error.is_empty() {
            stdout.push_str(&format!(
                "ExApp {id} initialization step failed. Error: {error}\n"
            ));
            return outcome(1, stdout);
        }
        stdout.push_str(&format!("ExApp {id} successfully registered.\n"));
        outcome(0, stdout)
    }

    /// `AppAPIService::enableExApp` on its own (as `app:update` and init use it): it
    /// calls the ExApp's `/enabled?enabled=1` even when the app is enabled already.
    pub async fn appapi_enable(&self, app_id: &str) -> bool {
        enable_exapp(&self.inner, app_id).await
    }

    /// `occ app_api:app:enable <id>`; an enabled app is left as it is.
    pub async fn enable(&self, app_id: &str) -> OccOutcome {
        if app_row(&self.inner, app_id).is_some_and(|a| a.enabled) {
            return outcome(0, format!("ExApp {app_id} already enabled.\n"));
        }
        if enable_exapp(&self.inner, app_id).await {
            outcome(0, format!("ExApp {app_id} successfully enabled.\n"))
        } else {
            outcome(1, format!("Failed to enable ExApp {app_id}.\n"))
        }
    }

    /// `occ app_api:app:disable <id>`: the app ends disabled whatever the ExApp says.
    pub async fn disable(&self, app_id: &str) -> OccOutcome {
        let Some(app) = app_row(&self.inner, app_id) else {
            return outcome(1, format!("ExApp {app_id} not found.\n"));
        };
        if !app.enabled {
            return outcome(0, format!("ExApp {app_id} already disabled.\n"));
        }
        let answer = call_exapp(&self.inner, &app, Call::Enabled(false)).await;
        set_enabled(&self.inner, app_id, false);
        match enabled_error(&answer) {
            None => outcome(0, format!("ExApp {app_id} successfully disabled.\n")),
            Some(_) => outcome(1, format!("Failed to disable ExApp {app_id}.\n")),
        }
    }

    /// `occ app_api:app:unregister <id>`: disables an enabled app, then deletes its rows.
    pub async fn unregister(&self, app_id: &str) -> OccOutcome {
        let Some(app) = app_row(&self.inner, app_id) else {
            return outcome(1, format!("ExApp {app_id} not found.\n"));
        };
        if app.enabled {
            let _ = call_exapp(&self.inner, &app, Call::Enabled(false)).await;
        }
        let mut state = self.inner.lock();
        state.apps.remove(app_id);
        state.ui.retain(|r| r.app_id != app_id);
        state
            .webhooks
            .retain(|_, w| w.app_id.as_deref() != Some(app_id));
        outcome(0, format!("ExApp {app_id} successfully unregistered.\n"))
    }
}
