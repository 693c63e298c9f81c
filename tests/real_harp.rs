//! End to end through the real HaRP 0.4.4 (HAProxy + HaRP's own agent) of `../shared/harp/`,
//! in front of the real Nextcloud 33.0.2, with its `harp_direct` daemon (manual-install,
//! ExApp direct: AppAPI and HaRP reach serve over TCP on APP_PORT).
//!
//! - Registered from `harpbridge manifest --json --daemon harp_direct` with `--wait-finish`:
//!   listed enabled; the panel's assets and the REST API through `/exapps/<appid>/` for an
//!   admin and a user (admin routes refused to the user), refused to anonymous visitors.
//! - The panel's WebSocket through HaRP: 101 with a user's Basic auth, a snapshot first, and
//!   a live `entry_appended` after a WebDAV upload into the user's library; refused (403)
//!   without a user.
//!
//! Needs root (see `support::real_nc`); elsewhere each test prints why and returns.

mod support;

use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use futures_util::StreamExt;
use harpbridge::web::events::{Body, Operation, ServerMessage};
use reqwest::Method;
use support::real_nc::{entries_after, real_harp, serial, status_of, App, RealNc};
use support::ExApp;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

const WAIT: Duration = Duration::from_secs(120);

/// serve for a new app on HaRP's daemon, registered, with `args`.
fn registered(nc: &'static RealNc, dir: &std::path::Path, args: &[String]) -> (App, ExApp) {
    let app = App::new(nc, &nc.harp_daemon);
    let exapp = app.serve(dir, args);
    app.register_ok();
    (app, exapp)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registers_on_harp_and_serves_the_panel_through_it() {
    let Some(nc) = real_harp() else { return };
    let _serial = serial().await;
    nc.reset_bruteforce();
    let user = nc.user(false);
    let dir = tempfile::tempdir().unwrap();
    let (app, exapp) = registered(nc, dir.path(), &[]);
    app.remember_user(&user.name);
    let line = app.listed().expect("the app is listed");
    assert!(line.contains("[enabled]"), "{line}");

    let admin = Some((nc.admin.as_str(), nc.pass.as_str()));
    let get = |url: String, auth: Option<(&str, &str)>| nc.request(Method::GET, &url, auth);

    // The top-menu page is Nextcloud's, whatever the daemon.
    let (status, body) = status_of(get(app.page_url(), user.auth())).await;
    assert_eq!(status, 200, "{}: {body:.300}", app.page_url());

    for asset in [
        "/js/harpbridge-main.js",
        "/css/harpbridge-main.css",
        "/img/app.svg",
    ] {
        let (status, body) = status_of(get(app.harp_url(asset), user.auth())).await;
        assert_eq!(status, 200, "{asset}: {body:.300}");
        assert!(!body.is_empty(), "{asset} is empty");
    }
    let codes = [
        ("/api/libraries", 200, 200),
        ("/api/overview", 200, 200),
        ("/api/admin/metrics", 200, 403),
        ("/api/admin/offers", 200, 403),
        ("/api/admin/limits", 200, 403),
        ("/metrics", 200, 403),
    ];
    for (path, for_admin, for_user) in codes {
        let (status, body) = status_of(get(app.harp_url(path), admin)).await;
        assert_eq!(status, for_admin, "admin {path}: {body:.300}");
        let (status, body) = status_of(get(app.harp_url(path), user.auth())).await;
        assert_eq!(status, for_user, "user {path}: {body:.300}");
    }
    for path in [
        "/api/libraries",
        "/api/admin/metrics",
        "/js/harpbridge-main.js",
    ] {
        let (status, body) = status_of(get(app.harp_url(path), None)).await;
        assert_eq!(status, 403, "anonymous {path}: {body:.300}");
    }
    nc.reset_bruteforce();

    let out = app.unregister();
    assert!(out.status.success(), "{out:?}");
    assert!(app.listed().is_none());
    exapp.stop();
}

type Client =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The next message that is not a ping.
async fn next_event(client: &mut Client) -> ServerMessage {
    loop {
        match client.next().await {
            Some(Ok(Message::Text(text))) => {
                let message: ServerMessage =
                    serde_json::from_str(&text).expect("a v1 server message");
                if !matches!(message.body, Body::Ping { .. }) {
                    return message;
                }
            }
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            other => panic!("expected a text message, got {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_through_harp_shows_a_live_entry_after_an_upload() {
    let Some(nc) = real_harp() else { return };
    let _serial = serial().await;
    nc.reset_bruteforce();
    let user = nc.user(false);
    user.mkdir("Team").await;
    let dir = tempfile::tempdir().unwrap();
    let args = vec!["--library".into(), format!("{}:/Team", user.name)];
    let (app, exapp) = registered(nc, dir.path(), &args);
    app.remember_user(&user.name);
    exapp.wait_libraries(1).await;

    let ws_url = app.harp_url("/ws").replacen("http://", "ws://", 1);
    // Anonymous: refused before it reaches serve.
    let anonymous = ws_url.as_str().into_client_request().unwrap();
    match tokio_tungstenite::connect_async(anonymous).await {
        Err(WsError::Http(response)) => assert_eq!(response.status().as_u16(), 403),
        Err(e) => panic!("expected an HTTP refusal, got {e}"),
        Ok(_) => panic!("an anonymous upgrade was accepted"),
    }
    nc.reset_bruteforce();

    // The user, with Basic auth as a script would (a browser sends its cookies).
    let mut request = ws_url.as_str().into_client_request().unwrap();
    let basic = STANDARD.encode(format!("{}:{}", user.name, user.pass));
    request.headers_mut().insert(
        "Authorization",
        HeaderValue::from_str(&format!("Basic {basic}")).unwrap(),
    );
    let (mut client, response) =
        tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(request))
            .await
            .expect("the upgrade in time")
            .expect("upgrade through HaRP");
    assert_eq!(response.status().as_u16(), 101);
    let first = tokio::time::timeout(WAIT, next_event(&mut client))
        .await
        .unwrap();
    assert!(matches!(first.body, Body::Snapshot { .. }), "{first:?}");

    user.put("Team/live.txt", "uploaded while the panel watched")
        .await;
    let entry = tokio::time::timeout(WAIT, async {
        loop {
            if let Body::EntryAppended { entry, .. } = next_event(&mut client).await.body {
                if matches!(&entry.op, Operation::Put { path, .. } if path == "live.txt") {
                    return entry;
                }
            }
        }
    })
    .await
    .expect("entry_appended for live.txt over the WebSocket");
    assert_eq!(entry.user.as_deref(), Some(user.name.as_str()), "{entry:?}");
    entries_after(&exapp, 0, &["put live.txt"], WAIT).await;
    let _ = client.close(None).await;
    drop(app);
    exapp.stop();
}
