//! AppAPI authentication of incoming requests (docs/appapi.md §3.2).
//!
//! In process, the layer guards a probe handler that counts its runs, so "no handler
//! ran" is checked directly; against the real binary, a refused `PUT /enabled` must not
//! reach Nextcloud at all.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use axum::body::Body;
use axum::extract::ws::WebSocketUpgrade;
use axum::http::{Request, StatusCode};
use axum::routing::get;
use axum::{middleware, Router};
use base64::engine::general_purpose::{STANDARD, URL_SAFE};
use base64::Engine;
use harpbridge::appapi::auth::{require_appapi, AppApiAuth, AppApiUser};
use harpbridge::config::Secret;
use support::{ExApp, ExAppOptions, ExAppSpec, FakeNextcloud};
use tower::ServiceExt;

/// A secret whose user:secret encodings hold `+` or `/`, so URL-safe base64 differs.
const SECRET: &str = "s?>~s?>~s?>~";

fn auth(user: &str) -> String {
    STANDARD.encode(format!("{user}:{SECRET}"))
}

/// Each way a request can fail authentication, as (name, headers).
fn bad_requests() -> Vec<(&'static str, Vec<(&'static str, String)>)> {
    let good_id = ("EX-APP-ID", "harpbridge".to_owned());
    let good_version = ("EX-APP-VERSION", "1.0.0".to_owned());
    let url_safe = URL_SAFE.encode(format!("admin:{SECRET}"));
    assert_ne!(
        url_safe,
        auth("admin"),
        "the test secret must exercise + and /"
    );
    vec![
        ("no headers", vec![]),
        (
            "missing auth header",
            vec![good_id.clone(), good_version.clone()],
        ),
        (
            "missing app id",
            vec![
                good_version.clone(),
                ("AUTHORIZATION-APP-API", auth("admin")),
            ],
        ),
        (
            "bad base64",
            vec![
                good_id.clone(),
                good_version.clone(),
                ("AUTHORIZATION-APP-API", "%%%not base64%%%".into()),
            ],
        ),
        (
            "url-safe base64",
            vec![
                good_id.clone(),
                good_version.clone(),
                ("AUTHORIZATION-APP-API", url_safe),
            ],
        ),
        (
            "no colon",
            vec![
                good_id.clone(),
                good_version.clone(),
                ("AUTHORIZATION-APP-API", STANDARD.encode(SECRET)),
            ],
        ),
        (
            "wrong secret",
            vec![
                good_id.clone(),
                good_version.clone(),
                (
                    "AUTHORIZATION-APP-API",
                    STANDARD.encode("admin:s?>~s?>~s?>X"),
                ),
            ],
        ),
        (
            "secret prefix",
            vec![
                good_id.clone(),
                good_version.clone(),
                ("AUTHORIZATION-APP-API", STANDARD.encode("admin:s?>~")),
            ],
        ),
        (
            "wrong app id",
            vec![
                ("EX-APP-ID", "other_app".into()),
                good_version.clone(),
                ("AUTHORIZATION-APP-API", auth("admin")),
            ],
        ),
        (
            "empty version",
            vec![
                good_id.clone(),
                ("EX-APP-VERSION", String::new()),
                ("AUTHORIZATION-APP-API", auth("admin")),
            ],
        ),
    ]
}

fn good_headers(user: &str) -> Vec<(&'static str, String)> {
    vec![
        ("EX-APP-ID", "harpbridge".into()),
        // Any non-empty version passes: it differs from ours during an update.
        ("EX-APP-VERSION", "9.9.9-update".into()),
        ("AUTHORIZATION-APP-API", auth(user)),
    ]
}

/// A router with the real layer around handlers that count their runs.
fn probe_router(runs: Arc<AtomicUsize>) -> Router {
    let auth = Arc::new(AppApiAuth::new("harpbridge", Secret::new(SECRET)));
    let counted = runs.clone();
    let ws_runs = runs.clone();
    Router::new()
        .route("/heartbeat", get(|| async { "ok" }))
        .route(
            "/whoami",
            get(move |AppApiUser(user): AppApiUser| {
                counted.fetch_add(1, Ordering::SeqCst);
                async move { user.unwrap_or_else(|| "<none>".into()) }
            }),
        )
        .route(
            "/ws",
            get(move |ws: WebSocketUpgrade| {
                ws_runs.fetch_add(1, Ordering::SeqCst);
                async move { ws.on_upgrade(|_socket| async {}) }
            }),
        )
        .layer(middleware::from_fn_with_state(auth, require_appapi))
}

async fn send(router: &Router, path: &str, headers: &[(&str, String)]) -> (StatusCode, String) {
    let mut request = Request::get(path);
    for (n, v) in headers {
        request = request.header(*n, v);
    }
    let response = router
        .clone()
        .oneshot(request.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let body = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test]
async fn every_bad_credential_gets_401_and_runs_no_handler() {
    let runs = Arc::new(AtomicUsize::new(0));
    let router = probe_router(runs.clone());
    for (name, headers) in bad_requests() {
        for path in ["/whoami", "/ws", "/no-such-route"] {
            let (status, body) = send(&router, path, &headers).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{name} on {path}");
            assert!(
                !body.contains(SECRET),
                "{name}: the answer echoes the secret"
            );
            assert!(
                body.starts_with("AppAPI authentication failed"),
                "{name}: {body}"
            );
        }
    }
    assert_eq!(runs.load(Ordering::SeqCst), 0, "a handler ran");
}

#[tokio::test]
async fn websocket_upgrade_without_credentials_is_refused() {
    let runs = Arc::new(AtomicUsize::new(0));
    let router = probe_router(runs.clone());
    let upgrade = [
        ("Connection", "upgrade".to_owned()),
        ("Upgrade", "websocket".to_owned()),
        ("Sec-WebSocket-Version", "13".to_owned()),
        ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==".to_owned()),
    ];
    let (status, _) = send(&router, "/ws", &upgrade).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(runs.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn heartbeat_is_open_and_the_user_reaches_handlers() {
    let runs = Arc::new(AtomicUsize::new(0));
    let router = probe_router(runs.clone());
    assert_eq!(send(&router, "/heartbeat", &[]).await.0, StatusCode::OK);
    assert_eq!(
        send(&router, "/whoami", &good_headers("admin")).await,
        (StatusCode::OK, "admin".into())
    );
    assert_eq!(
        send(&router, "/whoami", &good_headers("")).await,
        (StatusCode::OK, "<none>".into())
    );
    assert_eq!(runs.load(Ordering::SeqCst), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_refuses_bad_credentials_before_touching_nextcloud() {
    let nc = FakeNextcloud::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut options = ExAppOptions::new(&nc.url, dir.path());
    options.secret = SECRET.into();
    let exapp = ExApp::start(options);
    let http = reqwest::Client::new();
    let url = format!("{}/enabled?enabled=1", exapp.base_url());
    for (name, headers) in bad_requests() {
        let mut request = http.put(&url);
        for (n, v) in &headers {
            request = request.header(*n, v);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 401, "{name}");
    }
    assert!(
        nc.state().received.is_empty(),
        "a refused request reached a handler"
    );
    // Heartbeat needs nothing; unknown routes still need credentials.
    let r = http
        .get(format!("{}/heartbeat", exapp.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap(),
        serde_json::json!({"status": "ok"})
    );
    let r = http
        .get(format!("{}/nothing-here", exapp.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    // With good credentials the same call runs its handler (it registers the page).
    let spec = ExAppSpec::new("harpbridge", SECRET, exapp.target());
    assert_eq!(nc.register(&spec).await.exit_code, 0);
    let mut request = http.put(&url);
    for (n, v) in good_headers("") {
        request = request.header(n, v);
    }
    let answer: serde_json::Value = request.send().await.unwrap().json().await.unwrap();
    assert_eq!(answer, serde_json::json!({"error": ""}));
    exapp.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_refused_requests_is_one_log_line_per_source_and_interval() {
    let nc = FakeNextcloud::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut options = ExAppOptions::new(&nc.url, dir.path());
    options.secret = SECRET.into();
    let exapp = ExApp::start(options);
    let http = reqwest::Client::new();
    for n in 0..500 {
        let r = http
            .get(format!("{}/api/probe-{n}", exapp.base_url()))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401);
    }
    let logs = exapp.stop();
    let refused = logs
        .lines()
        .filter(|l| l.contains("refused a request without valid AppAPI authentication"))
        .count();
    assert_eq!(
        refused, 1,
        "one line for the first, the rest counted:\n{logs:.3000}"
    );
    assert!(logs.contains("127.0.0.1"), "the source is named");
}
