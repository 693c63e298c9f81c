//! The signed client for harpbridge's calls to Nextcloud (docs/appapi.md §3.3).
//!
//! Every request carries the AppAPI headers and is signed either as the app itself
//! ([`Caller::App`], an empty user) or as a named Nextcloud user ([`Caller::User`]).
//! OCS answers are unwrapped from their envelope, v1 and v2 alike, and judged by both
//! the HTTP status and `meta.statuscode`.
//!
//! Two rules protect the installation: nothing from a browser (cookies, `Authorization`)
//! is ever forwarded, and a 401 from Nextcloud is reported as
//! [`ClientError::Unauthorized`] so that callers stop instead of retrying: about five
//! wrong-secret calls lock the ExApp's address out of Nextcloud for 30 minutes.

use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderValue, ACCEPT};
use reqwest::{Method, RequestBuilder, StatusCode};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::Value;

use super::auth::{
    authorization_value, AA_VERSION, AUTHORIZATION_APP_API, EX_APP_ID, EX_APP_VERSION,
};
use crate::config::{Config, Secret};

/// Default time limit of one call.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// `PUT ex-app/status {progress:100}` runs our own `/enabled` inside it (docs/appapi.md §2.2).
const STATUS_TIMEOUT: Duration = Duration::from_secs(120);

/// Who a request is made as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caller<'a> {
    /// The app itself: an empty user, admin-like on `AppApiAdminAccessWithoutUser` routes.
    App,
    /// Impersonate this Nextcloud user (WebDAV needs one).
    User(&'a str),
}

impl Caller<'_> {
    fn uid(&self) -> &str {
        match self {
            Caller::App => "",
            Caller::User(uid) => uid,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("Nextcloud refused our AppAPI credentials (HTTP 401): {message}; not retrying, check APP_SECRET and that the app is enabled")]
    Unauthorized { message: String },
    #[error("Nextcloud is throttling this ExApp (HTTP 429): {message}")]
    Throttled { message: String },
    #[error("Nextcloud answered HTTP {status}: {message}")]
    Http { status: StatusCode, message: String },
    #[error("OCS call failed: HTTP {status}, statuscode {statuscode}: {message}")]
    Ocs {
        status: StatusCode,
        statuscode: i64,
        message: String,
    },
    #[error("cannot reach Nextcloud: {0}")]
    Transport(#[source] reqwest::Error),
    #[error("unexpected answer from Nextcloud: {0}")]
    Decode(String),
    #[error("invalid client setting: {0}")]
    Setup(String),
}

impl ClientError {
    /// The HTTP status Nextcloud answered, if it answered.
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            ClientError::Unauthorized { .. } => Some(StatusCode::UNAUTHORIZED),
            ClientError::Throttled { .. } => Some(StatusCode::TOO_MANY_REQUESTS),
            ClientError::Http { status, .. } | ClientError::Ocs { status, .. } => Some(*status),
            _ => None,
        }
    }
}

#[derive(Debug, Deserialize)]
struct Envelope {
    ocs: Ocs,
}

#[derive(Debug, Deserialize)]
struct Ocs {
    meta: Meta,
    #[serde(default)]
    data: Value,
}

#[derive(Debug, Deserialize)]
struct Meta {
    statuscode: i64,
    #[serde(default)]
    message: Option<String>,
}

/// A cheap-to-clone, signed HTTP client for one Nextcloud.
#[derive(Clone)]
pub struct NextcloudClient {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    base_url: String,
    secret: Secret,
}

impl std::fmt::Debug for NextcloudClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NextcloudClient")
            .field("base_url", &self.inner.base_url)
            .finish_non_exhaustive()
    }
}

impl NextcloudClient {
    pub fn new(config: &Config) -> Result<Self, ClientError> {
        Self::with_identity(
            &config.nextcloud_url,
            &config.app_id,
            &config.app_version,
            &config.aa_version,
            config.app_secret.clone(),
        )
    }

    /// A client for `base_url` (no trailing `/`), signing as the given app.
    pub fn with_identity(
        base_url: &str,
        app_id: &str,
        app_version: &str,
        aa_version: &str,
        secret: Secret,
    ) -> Result<Self, ClientError> {
        let value = |v: &str| {
            HeaderValue::from_str(v)
                .map_err(|_| ClientError::Setup(format!("{v:?} is not a valid header value")))
        };
        let mut headers = HeaderMap::new();
        headers.insert(AA_VERSION, value(aa_version)?);
        headers.insert(EX_APP_ID, value(app_id)?);
        headers.insert(EX_APP_VERSION, value(app_version)?);
        let http = reqwest::Client::builder()
            .default_headers(headers)
            .user_agent(format!("ExApp/{app_id}/{app_version} (harpbridge)"))
            .timeout(DEFAULT_TIMEOUT)
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| ClientError::Setup(e.to_string()))?;
        Ok(NextcloudClient {
            inner: Arc::new(Inner {
                http,
                base_url: base_url.trim_end_matches('/').to_owned(),
                secret,
            }),
        })
    }

    pub fn base_url(&self) -> &str {
        &self.inner.base_url
    }

    /// A signed request to `path` (starting with `/`) below Nextcloud's base URL.
    pub fn request(&self, method: Method, path: &str, caller: Caller<'_>) -> RequestBuilder {
        let mut auth =
            HeaderValue::from_str(&authorization_value(caller.uid(), &self.inner.secret))
                .unwrap_or_else(|_| HeaderValue::from_static(""));
        auth.set_sensitive(true);
        self.inner
            .http
            .request(method, format!("{}{}", self.inner.base_url, path))
            .header(AUTHORIZATION_APP_API, auth)
    }

    /// Calls an OCS endpoint and returns its `data`, checking HTTP status and `statuscode`.
    ///
    /// `path` is the full OCS path, e.g. `/ocs/v2.php/apps/app_api/api/v1/ui/top-menu`;
    /// `query` goes into the URL, `body` is sent as JSON.
    pub async fn ocs<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        caller: Caller<'_>,
        query: &[(&str, &str)],
        body: Option<&Value>,
    ) -> Result<T, ClientError> {
        self.ocs_with_timeout(method, path, caller, query, body, DEFAULT_TIMEOUT)
            .await
    }

    async fn ocs_with_timeout<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        caller: Caller<'_>,
        query: &[(&str, &str)],
        body: Option<&Value>,
        timeout: Duration,
    ) -> Result<T, ClientError> {
        let mut request = self
            .request(method, path, caller)
            .header("OCS-APIRequest", "true")
            .header(ACCEPT, "application/json")
            .query(&[("format", "json")])
            .query(query)
            .timeout(timeout);
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.map_err(ClientError::Transport)?;
        let status = response.status();
        let text = response.text().await.map_err(ClientError::Transport)?;
        parse_ocs(path, status, &text)
    }

    /// Reports `/init` progress (1..=100). Progress 100 makes AppAPI call our `/enabled`
    /// before it answers, hence the long time limit. Never send 0: it resets the install.
    pub async fn set_init_progress(
        &self,
        progress: u8,
        error: Option<&str>,
    ) -> Result<(), ClientError> {
        let progress = progress.clamp(1, 100);
        let mut body = serde_json::json!({ "progress": progress });
        if let Some(error) = error {
            body["error"] = Value::from(error);
        }
        let _: Value = self
            .ocs_with_timeout(
                Method::PUT,
                "/ocs/v2.php/apps/app_api/ex-app/status",
                Caller::App,
                &[],
                Some(&body),
                STATUS_TIMEOUT,
            )
            .await?;
        Ok(())
    }

    /// Writes `message` to Nextcloud's log under our app id (`POST api/v1/log`, level 0
    /// debug to 4 fatal), where an admin who never opens the panel reads it.
    pub async fn log(&self, level: LogLevel, message: &str) -> Result<(), ClientError> {
        let body = serde_json::json!({ "level": level as u8, "message": message });
        let _: Value = self
            .ocs(
                Method::POST,
                "/ocs/v1.php/apps/app_api/api/v1/log",
                Caller::App,
                &[],
                Some(&body),
            )
            .await?;
        Ok(())
    }

    /// Whether `uid` is in Nextcloud's `admin` group, asked as that user.
    pub async fn user_is_admin(&self, uid: &str) -> Result<bool, ClientError> {
        #[derive(Deserialize)]
        struct Groups {
            groups: Vec<String>,
        }
        let path = format!("/ocs/v2.php/cloud/users/{}/groups", urlencode_segment(uid));
        let groups: Groups = self
            .ocs(Method::GET, &path, Caller::User(uid), &[], None)
            .await?;
        Ok(groups.groups.iter().any(|g| g == "admin"))
    }
}

/// What Nextcloud's `status.php` says of itself.
#[derive(Debug, Clone, Deserialize)]
pub struct ServerStatus {
    #[serde(default)]
    pub installed: bool,
    #[serde(default)]
    pub maintenance: bool,
    #[serde(default, rename = "versionstring")]
    pub version: String,
}

impl NextcloudClient {
    /// `GET /status.php`, unsigned: it needs no login, so it can never count as a failed
    /// one (a check that may run while our credentials are not good yet).
    pub async fn server_status(&self) -> Result<ServerStatus, ClientError> {
        let response = self
            .inner
            .http
            .get(format!("{}/status.php", self.inner.base_url))
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .map_err(ClientError::Transport)?;
        let status = response.status();
        let text = response.text().await.map_err(ClientError::Transport)?;
        if !status.is_success() {
            return Err(ClientError::Http {
                status,
                message: text.chars().take(200).collect(),
            });
        }
        serde_json::from_str(&text)
            .map_err(|e| ClientError::Decode(format!("status.php is not Nextcloud's JSON: {e}")))
    }

    /// Whether AppAPI has this ExApp enabled (`ex-app/state`, which AppAPI answers even
    /// while the app is disabled). Only call it once AppAPI enabled us at least once: an
    /// unregistered app's call is a failed login.
    pub async fn ex_app_enabled(&self) -> Result<bool, ClientError> {
        let state: Value = self
            .ocs(
                Method::GET,
                "/ocs/v2.php/apps/app_api/ex-app/state",
                Caller::App,
                &[],
                None,
            )
            .await?;
        Ok(state.as_i64() == Some(1) || state.as_bool() == Some(true))
    }

    /// A core setting an admin may read (provisioning API), asked as the admin `uid`.
    pub async fn core_config(&self, uid: &str, key: &str) -> Result<String, ClientError> {
        #[derive(Deserialize)]
        struct Data {
            data: Value,
        }
        let path = format!(
            "/ocs/v2.php/apps/provisioning_api/api/v1/config/apps/core/{}",
            urlencode_segment(key)
        );
        let answer: Data = self
            .ocs(Method::GET, &path, Caller::User(uid), &[], None)
            .await?;
        Ok(match answer.data {
            Value::String(s) => s,
            other => other.to_string(),
        })
    }
}

/// Percent-encodes one URL path segment.
/// Nextcloud's log levels, as AppAPI's log endpoint takes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogLevel {
    Info = 1,
    Warning = 2,
    Error = 3,
}

pub fn urlencode_segment(segment: &str) -> String {
    url::form_urlencoded::byte_serialize(segment.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}

/// Judges an OCS answer: `data` on success, a typed error otherwise.
fn parse_ocs<T: DeserializeOwned>(
    path: &str,
    status: StatusCode,
    text: &str,
) -> Result<T, ClientError> {
    let envelope: Option<Envelope> = serde_json::from_str(text).ok();
    let message = || match &envelope {
        Some(e) => e.ocs.meta.message.clone().unwrap_or_default(),
        None => serde_json::from_str::<Value>(text)
            .ok()
            .and_then(|v| v.get("message").and_then(Value::as_str).map(str::to_owned))
            .unwrap_or_else(|| text.chars().take(200).collect()),
    };
    if status == StatusCode::UNAUTHORIZED {
        return Err(ClientError::Unauthorized { message: message() });
    }
    if status == StatusCode::TOO_MANY_REQUESTS {
        return Err(ClientError::Throttled { message: message() });
    }
    let Some(envelope) = envelope else {
        return Err(if status.is_success() {
            ClientError::Decode(format!("{path}: not an OCS JSON envelope"))
        } else {
            ClientError::Http {
                status,
                message: message(),
            }
        });
    };
    let ok_code = if path.starts_with("/ocs/v1.php") {
        100
    } else {
        200
    };
    if !status.is_success() || envelope.ocs.meta.statuscode != ok_code {
        return Err(ClientError::Ocs {
            status,
            statuscode: envelope.ocs.meta.statuscode,
            message: envelope.ocs.meta.message.unwrap_or_default(),
        });
    }
    serde_json::from_value(envelope.ocs.data)
        .map_err(|e| ClientError::Decode(format!("{path}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_success_is_statuscode_100() {
        let body = r#"{"ocs":{"meta":{"status":"ok","statuscode":100,"message":"OK","totalitems":"","itemsperpage":""},"data":[]}}"#;
        let data: Value = parse_ocs(
            "/ocs/v1.php/apps/app_api/ex-app/status",
            StatusCode::OK,
            body,
        )
        .unwrap();
        assert_eq!(data, serde_json::json!([]));
        assert!(parse_ocs::<Value>("/ocs/v2.php/x", StatusCode::OK, body).is_err());
    }

    #[test]
    fn v2_failure_and_csrf_and_401() {
        let body = r#"{"ocs":{"meta":{"status":"failure","statuscode":404,"message":"No such Top Menu entry"},"data":[]}}"#;
        match parse_ocs::<Value>("/ocs/v2.php/x", StatusCode::NOT_FOUND, body) {
            Err(ClientError::Ocs {
                statuscode: 404,
                message,
                ..
            }) => assert_eq!(message, "No such Top Menu entry"),
            other => panic!("{other:?}"),
        }
        match parse_ocs::<Value>(
            "/ocs/v2.php/x",
            StatusCode::PRECONDITION_FAILED,
            r#"{"message":"CSRF check failed"}"#,
        ) {
            Err(ClientError::Http { message, .. }) => assert_eq!(message, "CSRF check failed"),
            other => panic!("{other:?}"),
        }
        let body = r#"{"ocs":{"meta":{"status":"failure","statuscode":997,"message":"AppAPI authentication failed"},"data":[]}}"#;
        assert!(matches!(
            parse_ocs::<Value>("/ocs/v2.php/x", StatusCode::UNAUTHORIZED, body),
            Err(ClientError::Unauthorized { .. })
        ));
    }
}
