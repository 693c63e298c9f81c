//! AppAPI authentication, both ways (docs/appapi.md §3).
//!
//! Every request AppAPI or HaRP sends us carries `EX-APP-ID`, `EX-APP-VERSION` and
//! `AUTHORIZATION-APP-API = base64("<user>:<APP_SECRET>")`. One axum middleware,
//! [`require_appapi`], checks them on every route except `GET /heartbeat` (which
//! AppAPI calls without headers on manual and legacy daemons), WebSocket upgrades
//! included, and hands the acting user to handlers through the [`AppApiUser`] extractor.
//! A failure answers 401 before any handler runs, and the answer never echoes the secret.

use std::sync::Arc;

use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use subtle::ConstantTimeEq;

use super::refusals::RefusalLog;
use crate::config::Secret;

pub const EX_APP_ID: &str = "ex-app-id";
pub const EX_APP_VERSION: &str = "ex-app-version";
pub const AUTHORIZATION_APP_API: &str = "authorization-app-api";
pub const AA_VERSION: &str = "aa-version";

/// The credentials incoming requests must prove they know.
#[derive(Debug, Clone)]
pub struct AppApiAuth {
    app_id: String,
    secret: Secret,
    /// Refusals, logged once per source and interval.
    refusals: std::sync::Arc<RefusalLog>,
}

/// Why a request was refused; the `Display` text is what the client sees.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthFailure {
    #[error("missing or empty header {0}")]
    MissingHeader(&'static str),
    #[error("EX-APP-ID does not name this app")]
    WrongAppId,
    #[error("AUTHORIZATION-APP-API is not standard base64")]
    NotBase64,
    #[error("AUTHORIZATION-APP-API has no user:secret pair")]
    Malformed,
    #[error("wrong app secret")]
    WrongSecret,
}

/// Signs as `user` (empty for the app itself): the `AUTHORIZATION-APP-API` value.
pub fn authorization_value(user: &str, secret: &Secret) -> String {
    STANDARD.encode(format!("{user}:{}", secret.expose()))
}

fn header<'a>(headers: &'a HeaderMap, name: &'static str) -> Result<&'a str, AuthFailure> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .ok_or(AuthFailure::MissingHeader(name))
}

impl AppApiAuth {
    pub fn new(app_id: impl Into<String>, secret: Secret) -> Self {
        AppApiAuth {
            app_id: app_id.into(),
            secret,
            refusals: Default::default(),
        }
    }

    /// Checks the AppAPI headers; on success returns the acting user (`None` for none).
    pub fn check(&self, headers: &HeaderMap) -> Result<Option<String>, AuthFailure> {
        let app_id = header(headers, EX_APP_ID)?;
        // Only non-empty: the version differs from ours while AppAPI updates the app.
        header(headers, EX_APP_VERSION)?;
        let encoded = header(headers, AUTHORIZATION_APP_API)?;
        if app_id != self.app_id {
            return Err(AuthFailure::WrongAppId);
        }
        let decoded = STANDARD
            .decode(encoded)
            .map_err(|_| AuthFailure::NotBase64)?;
        let colon = decoded
            .iter()
            .position(|&b| b == b':')
            .ok_or(AuthFailure::Malformed)?;
        let (user, secret) = (&decoded[..colon], &decoded[colon + 1..]);
        let expected = self.secret.expose().as_bytes();
        let same = secret.len() == expected.len() && bool::from(secret.ct_eq(expected));
        if !same {
            return Err(AuthFailure::WrongSecret);
        }
        let user = std::str::from_utf8(user).map_err(|_| AuthFailure::Malformed)?;
        Ok((!user.is_empty()).then(|| user.to_owned()))
    }
}

/// The Nextcloud user a request acts for, as AppAPI vouched; `None` for the system or
/// an anonymous visitor. Only present after [`require_appapi`] accepted the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppApiUser(pub Option<String>);

impl<S: Send + Sync> FromRequestParts<S> for AppApiUser {
    type Rejection = (StatusCode, &'static str);

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<AppApiUser>()
            .cloned()
            .ok_or((StatusCode::UNAUTHORIZED, "AppAPI authentication required"))
    }
}

/// The middleware: lets `GET /heartbeat` through, checks everything else.
pub async fn require_appapi(
    State(auth): State<Arc<AppApiAuth>>,
    mut request: Request,
    next: Next,
) -> Response {
    if request.method() == Method::GET && request.uri().path() == "/heartbeat" {
        return next.run(request).await;
    }
    match auth.check(request.headers()) {
        Ok(user) => {
            request.extensions_mut().insert(AppApiUser(user));
            next.run(request).await
        }
        Err(failure) => {
            let source = request
                .extensions()
                .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
                .map(|c| c.0.ip().to_string())
                .unwrap_or_else(|| "local socket".to_owned());
            auth.refusals.refused(
                &source,
                request.method().as_str(),
                request.uri().path(),
                &failure,
            );
            (
                StatusCode::UNAUTHORIZED,
                format!("AppAPI authentication failed: {failure}"),
            )
                .into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(id: &str, version: &str, auth: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(EX_APP_ID, HeaderValue::from_str(id).unwrap());
        h.insert(EX_APP_VERSION, HeaderValue::from_str(version).unwrap());
        h.insert(AUTHORIZATION_APP_API, HeaderValue::from_str(auth).unwrap());
        h
    }

    #[test]
    fn fixture_values_decode() {
        // From shared/fixtures/nextcloud-33/README.md.
        let auth = AppApiAuth::new("fx_app", Secret::new("fx-secret-0123456789abcdef"));
        assert_eq!(
            auth.check(&headers(
                "fx_app",
                "1.0.0",
                "OmZ4LXNlY3JldC0wMTIzNDU2Nzg5YWJjZGVm"
            )),
            Ok(None)
        );
        assert_eq!(
            auth.check(&headers(
                "fx_app",
                "1.0.0",
                "YWRtaW46Zngtc2VjcmV0LTAxMjM0NTY3ODlhYmNkZWY="
            )),
            Ok(Some("admin".into()))
        );
    }

    #[test]
    fn splits_at_the_first_colon() {
        let auth = AppApiAuth::new("a", Secret::new("x:y"));
        let value = authorization_value("bob", &Secret::new("x:y"));
        assert_eq!(
            auth.check(&headers("a", "1", &value)),
            Ok(Some("bob".into()))
        );
    }
}
