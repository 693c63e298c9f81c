//! webhook_listeners in the test double: its OCS API (list, create, update, get, delete,
//! delete by app id), the queue of `WebhookCall` jobs that file changes create, and the
//! worker that delivers them through AppAPI (`occ background-job:worker`), as the
//! fixtures' `webhooks/` show: relative URIs go to the ExApp with AppAPI headers signed
//! as the *triggering* user, the registration's headers first, no `Content-Type` unless
//! registered, a 3 s timeout and no retry. Jobs of one run are delivered in reverse
//! order, because real deliveries come out of order.
//!
//! A row's `eventFilter` is applied as webhook_listeners applies it
//! (`lib/Listener/WebhooksEventListener.php`, `lib/Service/PHPMongoQuery.php`): `{}` (or
//! `[]`) matches everything; otherwise [`mongo`] evaluates it against the serialized event,
//! and an event that does not match queues no job. An operator the real server does not
//! know throws inside the user's request there; here it panics.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde_json::{json, Value};

use super::nextcloud::{FakeNextcloud, Inner, NcState};
use super::occ::send_to_exapp;
use super::ocs::{self, Version};

/// The event classes webhook_listeners accepts (others answer 400).
const CLASSES: [&str; 9] = [
    "OCP\\Files\\Events\\Node\\NodeCreatedEvent",
    "OCP\\Files\\Events\\Node\\NodeWrittenEvent",
    "OCP\\Files\\Events\\Node\\NodeDeletedEvent",
    "OCP\\Files\\Events\\Node\\NodeRenamedEvent",
    "OCP\\Files\\Events\\Node\\NodeCopiedEvent",
    "OCP\\Files\\Events\\Node\\NodeTouchedEvent",
    "OCP\\Files\\Events\\Node\\BeforeNodeDeletedEvent",
    "OCA\\Files_Trashbin\\Events\\NodeRestoredEvent",
    "OCP\\Files\\Events\\Node\\NodeUpdatedEvent",
];

/// A registered webhook row.
#[derive(Debug, Clone)]
pub struct WebhookRow {
    pub id: u64,
    pub app_id: Option<String>,
    pub user_id: Option<String>,
    pub http_method: String,
    pub uri: String,
    pub event: String,
    pub headers: Option<Value>,
    pub auth_method: String,
    /// `{}` when none (PHP lists it as `[]`).
    pub event_filter: Value,
}

impl WebhookRow {
    fn json(&self) -> Value {
        // PHP's json_encode of an empty array is a list.
        let filter = match &self.event_filter {
            Value::Object(m) if m.is_empty() => json!([]),
            f => f.clone(),
        };
        json!({
            "id": self.id, "appId": self.app_id, "userId": self.user_id, "httpMethod": self.http_method,
            "uri": self.uri, "event": self.event, "eventFilter": filter, "userIdFilter": "",
            "headers": self.headers, "authMethod": self.auth_method, "authData": null, "tokenNeeded": [],
        })
    }
}

/// A queued `WebhookCall` job.
#[derive(Debug, Clone)]
pub struct Job {
    pub webhook: WebhookRow,
    /// The user whose action fired the event (signs the delivery).
    pub user: Option<String>,
    pub body: String,
}

/// The kinds of file event the double fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fired {
    Created,
    Written,
    Deleted,
    Renamed,
    Copied,
    Restored,
}

impl Fired {
    fn class(self) -> &'static str {
        match self {
            Fired::Created => CLASSES[0],
            Fired::Written => CLASSES[1],
            Fired::Deleted => CLASSES[2],
            Fired::Renamed => CLASSES[3],
            Fired::Copied => CLASSES[4],
            Fired::Restored => CLASSES[7],
        }
    }
}

/// PHP's `json_encode`: slashes escaped.
fn php_json(value: &Value) -> String {
    value.to_string().replace('/', "\\/")
}

/// Queues one job per matching webhook for an event on `uid`'s `path`.
pub(crate) fn fire(
    state: &mut NcState,
    actor: Option<&str>,
    kind: Fired,
    uid: &str,
    path: &str,
    id: Option<u64>,
    source: Option<(String, Option<u64>)>,
) {
    let full = if path.is_empty() {
        format!("/{uid}/files")
    } else {
        format!("/{uid}/files/{path}")
    };
    let node = |p: String, id: Option<u64>| match id {
        Some(id) => json!({"id": id, "path": p}),
        None => json!({"path": p}),
    };
    let event = match source {
        Some((src, src_id)) => {
            json!({"source": node(src, src_id), "target": node(full, id), "class": kind.class()})
        }
        None => json!({"node": node(full, id), "class": kind.class()}),
    };
    let user = actor
        .map(|u| json!({"uid": u, "displayName": u}))
        .unwrap_or(Value::Null);
    let data = json!({
        "event": event,
        "user": user,
        "time": super::webdav::now(),
    });
    let mut payload = data.clone();
    payload["authentication"] = json!([]);
    let body = php_json(&payload);
    let matching: Vec<WebhookRow> = state
        .webhooks
        .values()
        .filter(|w| w.event.trim_start_matches('\\') == kind.class())
        .filter(|w| mongo::filter_match(&w.event_filter, &data))
        .cloned()
        .collect();
    for webhook in matching {
        state.webhook_jobs.push(Job {
            webhook,
            user: actor.map(str::to_owned),
            body: body.clone(),
        });
    }
}

fn version_of(ver: &str) -> Option<Version> {
    Version::from_segment(ver)
}

/// The OCS API of webhook_listeners: `AppApiAdminAccessWithoutUser`, CSRF-checked.
pub(crate) async fn api(
    State(inner): State<Arc<Inner>>,
    Path(params): Path<BTreeMap<String, String>>,
    method: Method,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(version) = params.get("ver").and_then(|v| version_of(v)) else {
        return (StatusCode::NOT_FOUND, "Page not found").into_response();
    };
    if !inner.lock().webhook_listeners_enabled {
        return (StatusCode::NOT_FOUND, "Page not found").into_response();
    }
    let login = match super::nextcloud::core_login(&inner, &headers, version) {
        Ok(l) => l,
        Err(r) => return r,
    };
    if headers.get("ocs-apirequest").and_then(|v| v.to_str().ok()) != Some("true") {
        return ocs::csrf_failed();
    }
    let mut state = inner.lock();
    if let Some(user) = &login.user {
        let admin = state
            .users
            .get(user)
            .is_some_and(|g| g.iter().any(|g| g == "admin"));
        if !admin {
            return ocs::failure(version, 403, "Logged in account must be an admin");
        }
    }
    let rest = params.get("rest").cloned().unwrap_or_default();
    let parsed: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let text = |k: &str| {
        parsed
            .get(k)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned()
    };
    let make_row = |id: u64, parsed: &Value| -> Result<WebhookRow, Response> {
        let event = text("event");
        if !CLASSES.contains(&event.trim_start_matches('\\')) {
            return Err(ocs::failure(
                version,
                400,
                &format!("{event} is not an event class compatible with webhooks"),
            ));
        }
        Ok(WebhookRow {
            id,
            app_id: Some(login.app_id.clone()),
            user_id: login.user.clone(),
            http_method: text("httpMethod"),
            uri: text("uri"),
            event: event.trim_start_matches('\\').to_owned(),
            headers: parsed.get("headers").cloned().filter(|h| !h.is_null()),
            auth_method: parsed
                .get("authMethod")
                .and_then(Value::as_str)
                .unwrap_or("none")
                .to_owned(),
            event_filter: match parsed.get("eventFilter") {
                None | Some(Value::Null) => json!({}),
                Some(Value::Array(a)) if a.is_empty() => json!({}),
                Some(f) => f.clone(),
            },
        })
    };
    match (method.as_str(), rest.as_str()) {
        ("GET", "") => ocs::ok(
            version,
            Value::Array(state.webhooks.values().map(WebhookRow::json).collect()),
        ),
        ("POST", "") => {
            state.next_webhook_id += 1;
            let id = state.next_webhook_id;
            match make_row(id, &parsed) {
                Ok(row) => {
                    let json = row.json();
                    state.webhooks.insert(id, row);
                    ocs::ok(version, json)
                }
                Err(r) => r,
            }
        }
        (m, id) => {
            if let Some(app) = id.strip_prefix("byappid/") {
                if m != "DELETE" {
                    return ocs::failure(version, 405, "Method not allowed");
                }
                let before = state.webhooks.len();
                state
                    .webhooks
                    .retain(|_, w| w.app_id.as_deref() != Some(app));
                return ocs::ok(version, json!(before - state.webhooks.len()));
            }
            let Ok(id) = id.parse::<u64>() else {
                return ocs::failure(version, 404, "Not found");
            };
            match m {
                "GET" => match state.webhooks.get(&id) {
                    Some(w) => ocs::ok(version, w.json()),
                    None => ocs::failure(version, 404, "Webhook not found"),
                },
                "POST" if state.webhooks.contains_key(&id) => match make_row(id, &parsed) {
                    Ok(row) => {
                        let json = row.json();
                        state.webhooks.insert(id, row);
                        ocs::ok(version, json)
                    }
                    Err(r) => r,
                },
                "DELETE" => ocs::ok(version, json!(state.webhooks.remove(&id).is_some())),
                _ => ocs::failure(version, 404, "Webhook not found"),
            }
        }
    }
}

impl FakeNextcloud {
    /// The webhook rows registered by `app_id`.
    pub fn webhooks_of(&self, app_id: &str) -> Vec<WebhookRow> {
        self.state()
            .webhooks
            .values()
            .filter(|w| w.app_id.as_deref() == Some(app_id))
            .cloned()
            .collect()
    }

    /// `occ background-job:worker -i 0 'OCA\WebhookListeners\BackgroundJobs\WebhookCall'`:
    /// delivers every queued job (in reverse order) and returns the ExApp's statuses.
    pub async fn run_webhook_worker(&self) -> Vec<u16> {
        let jobs: Vec<Job> = std::mem::take(&mut self.state().webhook_jobs);
        let mut statuses = Vec::new();
        for job in jobs.into_iter().rev() {
            let Some(app_id) = job
                .webhook
                .app_id
                .clone()
                .filter(|_| job.webhook.uri.starts_with('/'))
            else {
                continue;
            };
            let Some(app) = self.app(&app_id) else {
                continue;
            };
            if !app.enabled {
                // "Webhook(N) call failed: ExApp ... is disabled": the job is dropped.
                continue;
            }
            let mut headers: Vec<(&str, String)> = Vec::new();
            let extra: Vec<(String, String)> = job
                .webhook
                .headers
                .as_ref()
                .and_then(Value::as_object)
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_owned()))
                        .collect()
                })
                .unwrap_or_default();
            for (k, v) in &extra {
                headers.push((k.as_str(), v.clone()));
            }
            headers.push(("AA-VERSION", super::AA_VERSION.into()));
            headers.push(("EX-APP-ID", app.app_id.clone()));
            headers.push(("EX-APP-VERSION", app.version.clone()));
            headers.push((
                "AUTHORIZATION-APP-API",
                STANDARD.encode(format!(
                    "{}:{}",
                    job.user.as_deref().unwrap_or(""),
                    app.secret
                )),
            ));
            headers.push(("AA-REQUEST-ID", "CLI".into()));
            headers.push(("Accept-Language", "en".into()));
            headers.push(("User-Agent", super::NC_USER_AGENT.into()));
            let answer = send_to_exapp(
                &self.inner,
                &app.target,
                &job.webhook.http_method,
                &job.webhook.uri,
                &headers,
                Bytes::from(job.body.clone()),
                Duration::from_secs(3),
            )
            .await;
            statuses.push(answer.map(|(s, _)| s).unwrap_or(0));
        }
        statuses
    }
}

/// The part of webhook_listeners' `PHPMongoQuery` that filters can reach, line by line.
pub mod mongo {
    use serde_json::Value;

    /// `WebhooksEventListener::filterMatch`.
    pub fn filter_match(filter: &Value, data: &Value) -> bool {
        match filter {
            Value::Object(m) if m.is_empty() => true,
            Value::Array(a) if a.is_empty() => true,
            f => query(f, data, "$and"),
        }
    }

    /// PHP arrays: a JSON object or list, as (key, value) pairs; keys of a list are ints.
    fn entries(v: &Value) -> Vec<(Result<usize, String>, &Value)> {
        match v {
            Value::Object(m) => m.iter().map(|(k, v)| (Err(k.clone()), v)).collect(),
            Value::Array(a) => a.iter().enumerate().map(|(i, v)| (Ok(i), v)).collect(),
            _ => Vec::new(),
        }
    }

    /// A PHP array key as the string PHP would pass on.
    fn key(k: Result<usize, String>) -> String {
        match k {
            Ok(i) => i.to_string(),
            Err(s) => s,
        }
    }

    fn is_list(v: &Value) -> bool {
        matches!(v, Value::Array(a) if !a.is_empty())
    }

    fn is_array(v: &Value) -> bool {
        matches!(v, Value::Array(_) | Value::Object(_))
    }

    /// `_executeQuery`.
    fn query(q: &Value, doc: &Value, logical: &str) -> bool {
        if logical != "$and" && !is_list(q) {
            panic!("{logical} requires nonempty array (the real server throws inside the user's request)");
        }
        let indexed = is_list(q);
        for (k, sub) in entries(q) {
            let pass = match &k {
                Err(key) if key.starts_with('$') => {
                    if key == "$not" {
                        !query(sub, doc, "$and")
                    } else {
                        query(sub, doc, key)
                    }
                }
                _ if logical == "$and" => {
                    if indexed {
                        query(sub, doc, "$and")
                    } else {
                        let field = key(k.clone());
                        if is_array(sub) {
                            entries(sub)
                                .into_iter()
                                .all(|(op, val)| operator(&key(op), val, &field, doc))
                        } else {
                            operator("$e", sub, &field, doc)
                        }
                    }
                }
                _ => query(sub, doc, "$and"),
            };
            match logical {
                "$and" if !pass => return false,
                "$or" if pass => return true,
                "$nor" if pass => return false,
                "$and" | "$or" | "$nor" => {}
                _ => return false,
            }
        }
        matches!(logical, "$and" | "$nor")
    }

    /// PHP's `empty()`.
    fn empty(v: &Value) -> bool {
        match v {
            Value::Null => true,
            Value::Bool(b) => !b,
            Value::Number(n) => n.as_f64() == Some(0.0),
            Value::String(s) => s.is_empty() || s == "0",
            Value::Array(a) => a.is_empty(),
            Value::Object(m) => m.is_empty(),
        }
    }

    /// `_executeOperatorOnElement`.
    fn operator(op: &str, val: &Value, element: &str, doc: &Value) -> bool {
        if op == "$not" {
            return !entries(val)
                .into_iter()
                .all(|(o, v)| operator(&key(o), v, element, doc));
        }
        let segments: Vec<&str> = element.split('.').collect();
        let mut v = doc;
        let mut exists = true;
        for (index, es) in segments.iter().enumerate() {
            if empty(v) {
                exists = false;
                break;
            }
            if let Value::Array(items) = v {
                let rest = segments[index..].join(".");
                return items.iter().any(|item| operator(op, val, &rest, item));
            }
            match v.get(es) {
                Some(next) if !next.is_null() => v = next,
                _ => {
                    exists = false;
                    break;
                }
            }
        }
        match op {
            "$e" => exists && is_equal(v, val),
            "$ne" => (!exists && !val.is_null()) || (exists && !is_equal(v, val)),
            "$exists" => {
                let want = !empty(val);
                want == exists
            }
            "$in" => {
                let Value::Array(options) = val else {
                    panic!("$in requires array")
                };
                exists && !options.is_empty() && options.contains(v)
            }
            "$nin" => {
                let Value::Array(options) = val else {
                    panic!("$nin requires array")
                };
                !exists || !options.contains(v)
            }
            other => panic!(
                "Operator {other} is unknown (the real server throws inside the user's request)"
            ),
        }
    }

    /// PHP's string conversion of a scalar, for `preg_match`.
    fn php_string(v: &Value) -> String {
        match v {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            Value::Bool(true) => "1".into(),
            _ => String::new(),
        }
    }

    /// `_isEqual`: a string operand `/…/flags` is a regular expression.
    fn is_equal(v: &Value, operand: &Value) -> bool {
        if is_array(v) && is_array(operand) {
            return v == operand;
        }
        if let Value::Array(items) = v {
            return items.contains(operand);
        }
        if let Value::String(s) = operand {
            let outer = regex_lite::Regex::new(r"(?i)^/(.*?)/([a-z]*)$").expect("outer regex");
            if let Some(m) = outer.captures(s) {
                let mut flags = String::new();
                for f in m[2].chars() {
                    match f.to_ascii_lowercase() {
                        'i' | 'm' | 's' | 'x' => flags.push(f.to_ascii_lowercase()),
                        'u' => {}
                        other => panic!("regex flag {other} not modelled by the double"),
                    }
                }
                let pattern = if flags.is_empty() {
                    m[1].to_owned()
                } else {
                    format!("(?{flags}){}", &m[1])
                };
                let re = regex_lite::Regex::new(&pattern)
                    .unwrap_or_else(|e| panic!("filter regex {pattern:?}: {e}"));
                return re.is_match(&php_string(v));
            }
        }
        operand == v
    }
}
