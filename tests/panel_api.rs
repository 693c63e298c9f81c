//! The panel's REST API on a real socket: access per route, `Cache-Control: no-store`,
//! and mutations reaching WebSocket clients through the hub.

mod panel_harness;
mod support;

use futures_util::StreamExt;
use panel_harness::{appapi_headers, Panel, SECRET};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

async fn call(
    panel: &Panel,
    method: Method,
    path: &str,
    user: Option<&str>,
    body: Option<Value>,
) -> (StatusCode, Value, Option<String>) {
    let mut request = reqwest::Client::new().request(method, panel.url(path));
    if let Some(user) = user {
        for (name, value) in appapi_headers(user, SECRET) {
            request = request.header(name, value);
        }
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("request");
    let status = response.status();
    let cache = response
        .headers()
        .get("cache-control")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let text = response.text().await.expect("body");
    let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, value, cache)
}

#[tokio::test]
async fn reads_are_for_users_and_never_cached() {
    let panel = Panel::start().await;
    for path in [
        "/api/snapshot",
        "/api/overview",
        "/api/peers",
        "/api/activity?limit=5",
        "/api/transfers",
        "/api/libraries",
    ] {
        let (status, body, cache) = call(&panel, Method::GET, path, Some("alice"), None).await;
        assert_eq!(status, StatusCode::OK, "{path}: {body}");
        assert_eq!(cache.as_deref(), Some("no-store"), "{path}");
        assert!(body.is_object(), "{path}: {body}");

        let (status, _, cache) = call(&panel, Method::GET, path, Some(""), None).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{path} without a user");
        assert_eq!(cache.as_deref(), Some("no-store"), "{path}");

        let (status, _, _) = call(&panel, Method::GET, path, None, None).await;
        assert_eq!(
            status,
            StatusCode::UNAUTHORIZED,
            "{path} without AppAPI headers"
        );
    }
    let (_, overview, _) = call(&panel, Method::GET, "/api/overview", Some("alice"), None).await;
    assert_eq!(overview["user"], "alice");
    assert_eq!(overview["is_admin"], false);
    let (_, overview, _) = call(&panel, Method::GET, "/api/overview", Some("admin"), None).await;
    assert_eq!(overview["is_admin"], true);
    assert_eq!(overview["device"]["version"], "0.1.0");
}

/// The next WebSocket message of this type (others, such as the first scan's, skipped).
async fn next_of_type(
    ws: &mut tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
    kind: &str,
) -> Value {
    loop {
        let Some(Ok(Message::Text(text))) = ws.next().await else {
            panic!("the WebSocket ended while waiting for {kind}")
        };
        let message: Value = serde_json::from_str(&text).unwrap();
        if message["type"] == kind {
            return message;
        }
    }
}

#[tokio::test]
async fn only_admins_change_libraries_and_everyone_sees_it_live() {
    let panel = Panel::start().await;
    panel.nextcloud.user_mkdir("alice", "Photos");
    panel.nextcloud.user_mkdir("alice", "Photos/2024");
    panel.nextcloud.user_mkdir("admin", "Work");
    let (mut ws, _) = tokio_tungstenite::connect_async(panel.ws_request("alice"))
        .await
        .unwrap();
    let _snapshot = ws.next().await.unwrap().unwrap();

    let new = json!({"name": "Alice's photos", "owner": "alice", "folder": "Photos/2024/"});
    let (status, body, cache) = call(
        &panel,
        Method::POST,
        "/api/admin/libraries",
        Some("alice"),
        Some(new.clone()),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(cache.as_deref(), Some("no-store"));
    // The decision came from Nextcloud's groups, asked as alice.
    assert!(!panel
        .nextcloud
        .received_matching("/cloud/users/alice/groups")
        .is_empty());

    let (status, library, _) = call(
        &panel,
        Method::POST,
        "/api/admin/libraries",
        Some("admin"),
        Some(new.clone()),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{library}");
    assert_eq!(library["folder"], "/Photos/2024");
    assert_eq!(library["owner"], "alice");

    // Alice owns it, so her WebSocket gets it.
    let message = next_of_type(&mut ws, "library_state").await;
    assert_eq!(message["library"]["id"], library["id"]);

    // A folder that does not exist: 404. The same folder twice: 409. Bad input: 400.
    let (status, body, _) = call(
        &panel,
        Method::POST,
        "/api/admin/libraries",
        Some("admin"),
        Some(json!({"name": "x", "owner": "alice", "folder": "/Nowhere"})),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let (status, _, _) = call(
        &panel,
        Method::POST,
        "/api/admin/libraries",
        Some("admin"),
        Some(new),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT);
    let (status, body, _) = call(
        &panel,
        Method::POST,
        "/api/admin/libraries",
        Some("admin"),
        Some(json!({"name": "x", "owner": "alice", "folder": "/a/../b"})),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body["error"].as_str().unwrap().contains(".."));

    // A library of another user is invisible to alice.
    call(
        &panel,
        Method::POST,
        "/api/admin/libraries",
        Some("admin"),
        Some(json!({"name": "Admin's", "owner": "admin", "folder": "/Work"})),
    )
    .await;
    let (_, libs, _) = call(&panel, Method::GET, "/api/libraries", Some("alice"), None).await;
    assert_eq!(libs["libraries"].as_array().unwrap().len(), 1);
    let (_, libs, _) = call(&panel, Method::GET, "/api/libraries", Some("admin"), None).await;
    assert_eq!(libs["libraries"].as_array().unwrap().len(), 2);
    // So is its ingest status, and what names other users' files or the swarm.
    let (status, ingest, _) = call(&panel, Method::GET, "/api/ingest", Some("alice"), None).await;
    assert_eq!(status, StatusCode::OK, "{ingest}");
    let mine = ingest["libraries"].as_array().unwrap();
    assert_eq!(mine.len(), 1, "{ingest}");
    assert_eq!(mine[0]["uid"], "alice");
    assert!(ingest["scans"].as_object().unwrap().len() <= 1, "{ingest}");
    for admins_only in ["swarm", "writeback", "nextcloud", "webhooks", "counters"] {
        assert!(ingest.get(admins_only).is_none(), "{admins_only}: {ingest}");
    }
    let (_, ingest, _) = call(&panel, Method::GET, "/api/ingest", Some("admin"), None).await;
    assert_eq!(ingest["libraries"].as_array().unwrap().len(), 2, "{ingest}");
    assert!(ingest.get("swarm").is_some(), "{ingest}");

    // Removing: alice may not, the admin may.
    let path = format!("/api/admin/libraries/{}", library["id"].as_str().unwrap());
    let (status, _, _) = call(&panel, Method::DELETE, &path, Some("alice"), None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _, _) = call(&panel, Method::DELETE, &path, Some("admin"), None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _, _) = call(&panel, Method::DELETE, &path, Some("admin"), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let message = next_of_type(&mut ws, "library_removed").await;
    assert_eq!(message["library_id"], library["id"]);
}

#[tokio::test]
async fn pairing_is_for_admins_and_needs_a_discovered_peer() {
    let panel = Panel::start().await;
    let (status, _, _) = call(
        &panel,
        Method::POST,
        "/api/admin/peers/12D3KooWx/pair",
        Some("alice"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, body, _) = call(
        &panel,
        Method::POST,
        "/api/admin/peers/12D3KooWx/pair",
        Some("admin"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
}

#[tokio::test]
async fn assets_are_the_built_panel() {
    let panel = Panel::start().await;
    let client = reqwest::Client::new();
    for (path, kind) in [
        ("/js/harpbridge-main.js", "text/javascript"),
        ("/css/harpbridge-main.css", "text/css"),
        ("/img/app.svg", "image/svg+xml"),
    ] {
        let mut request = client.get(panel.url(path));
        for (name, value) in appapi_headers("alice", SECRET) {
            request = request.header(name, value);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        let content_type = response.headers()["content-type"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(content_type.starts_with(kind), "{path}: {content_type}");
        let etag = response.headers()["etag"].to_str().unwrap().to_owned();
        assert_eq!(response.headers()["cache-control"], "no-cache");
        let bytes = response.bytes().await.unwrap();
        assert_eq!(
            bytes.as_ref(),
            std::fs::read(format!("{}{path}", env!("CARGO_MANIFEST_DIR")))
                .unwrap()
                .as_slice(),
            "{path} is the committed build"
        );
        let mut again = client.get(panel.url(path)).header("if-none-match", &etag);
        for (name, value) in appapi_headers("alice", SECRET) {
            again = again.header(name, value);
        }
        assert_eq!(
            again.send().await.unwrap().status(),
            StatusCode::NOT_MODIFIED
        );
    }
}

/// When Nextcloud refuses harpbridge's credentials, the admin check stops asking (a few
/// wrong-secret calls lock the ExApp out of Nextcloud for 30 minutes).
#[tokio::test]
async fn a_refused_group_lookup_is_not_repeated() {
    let panel = Panel::start().await;
    // Nextcloud now holds another secret for the app: our signed calls get 401.
    panel
        .nextcloud
        .state()
        .apps
        .get_mut(panel_harness::APP_ID)
        .unwrap()
        .secret = "rotated-by-the-admin".into();
    for _ in 0..5 {
        let (status, body, _) = call(
            &panel,
            Method::POST,
            "/api/admin/libraries",
            Some("admin"),
            Some(json!({"name": "x", "owner": "admin", "folder": "/"})),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
        // Reads go on, without admin rights.
        let (status, overview, _) =
            call(&panel, Method::GET, "/api/overview", Some("admin"), None).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(overview["is_admin"], false);
    }
    assert_eq!(
        panel.nextcloud.received_matching("/groups").len(),
        1,
        "asked Nextcloud again after a 401"
    );
}
