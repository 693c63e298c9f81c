//! OCS envelopes as Nextcloud 33 writes them (see the fixtures' `ocs/` folder).

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

/// Which OCS flavour a path uses: v1 answers HTTP 200 (except 401) with statuscode 100
/// on success; v2 mirrors the status in HTTP and uses statuscode 200.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    V1,
    V2,
}

impl Version {
    pub fn from_segment(segment: &str) -> Option<Self> {
        match segment {
            "v1.php" => Some(Version::V1),
            "v2.php" => Some(Version::V2),
            _ => None,
        }
    }
}

fn respond(status: StatusCode, body: Value) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE, "application/json; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache, no-store, must-revalidate"),
        ],
        body.to_string(),
    )
        .into_response()
}

fn meta(version: Version, status: &str, code: u16, message: &str) -> Value {
    match version {
        Version::V1 => {
            json!({"status": status, "statuscode": code, "message": message, "totalitems": "", "itemsperpage": ""})
        }
        Version::V2 => json!({"status": status, "statuscode": code, "message": message}),
    }
}

pub fn ok(version: Version, data: Value) -> Response {
    let code = if version == Version::V1 { 100 } else { 200 };
    respond(
        StatusCode::OK,
        json!({"ocs": {"meta": meta(version, "ok", code, "OK"), "data": data}}),
    )
}

/// An OCS failure with `statuscode` = the HTTP status (v2) or HTTP 200 (v1, except 401).
pub fn failure(version: Version, code: u16, message: &str) -> Response {
    let http = match version {
        Version::V2 => StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_REQUEST),
        Version::V1 if code == 401 => StatusCode::UNAUTHORIZED,
        Version::V1 => StatusCode::OK,
    };
    respond(
        http,
        json!({"ocs": {"meta": meta(version, "failure", code, message), "data": []}}),
    )
}

/// AppAPI's own controllers on a failed AppAPI login.
pub fn appapi_auth_failed(version: Version) -> Response {
    let code = 997;
    let http = StatusCode::UNAUTHORIZED;
    respond(
        http,
        json!({"ocs": {"meta": meta(version, "failure", code, "AppAPI authentication failed"), "data": []}}),
    )
}

/// Core and other apps' routes when nobody is logged in.
pub fn not_logged_in(version: Version) -> Response {
    respond(
        StatusCode::UNAUTHORIZED,
        json!({"ocs": {"meta": meta(version, "failure", 997, "Current user is not logged in"), "data": []}}),
    )
}

/// The brute-force lock-out after too many wrong secrets.
pub fn throttled(version: Version) -> Response {
    respond(
        StatusCode::TOO_MANY_REQUESTS,
        json!({"ocs": {"meta": meta(version, "failure", 429, "Reached maximum delay"), "data": []}}),
    )
}

/// Routes without `NoCSRFRequired` called without `OCS-APIRequest: true`.
pub fn csrf_failed() -> Response {
    respond(
        StatusCode::PRECONDITION_FAILED,
        json!({"message": "CSRF check failed"}),
    )
}
