//! `harpbridge serve` with its swarm, end to end: the real binary against the Nextcloud
//! double, its swarm on loopback, and an office node (an in-process [`Node`] over its own
//! data directory) that dials it by multiaddr.
//!
//! - The office node is only "discovered" until an admin pairs it through the REST API;
//!   pairing appends the membership entry, and the node then pulls the library.
//! - A file a user writes in Nextcloud (a webhook delivery) reaches the office node's chain.
//! - An entry the office node writes reaches serve's chain view (REST and WebSocket).
//! - Pairing without a body (the panel's button) adds a second office to every library; it
//!   gets the first office's entries through serve.
//! - A library an office offers waits for an admin: listed in `/api/admin/offers`, joined
//!   into the Nextcloud folder the admin names (write-back creates its contents), or refused.
//! - `/metrics` is valid Prometheus text with per-peer and per-class byte counters, for
//!   admins only (403 for a user, 401 without AppAPI's signature).

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use futures_util::StreamExt;
use harpbridge::chain::{ChainPath, LibraryId, Op, TreeItem};
use harpbridge::web::events::{Body, Operation, ServerMessage};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
// An office node: its own identity and chain, dialling serve.
use support::swarm::TestNode as Office;
use support::swarm::{bounded, until};
use support::{ExApp, ExAppOptions, ExAppSpec, FakeNextcloud};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message;

const WAIT: Duration = Duration::from_secs(60);

/// What these tests read of an office's chain.
impl Office {
    fn paths(&self, lib: &LibraryId) -> Vec<String> {
        self.chain
            .tree(lib)
            .map(|t| t.items.keys().map(|p| p.as_str().to_owned()).collect())
            .unwrap_or_default()
    }
}

async fn status_of(
    exapp: &ExApp,
    method: Method,
    path: &str,
    user: &str,
    body: Option<Value>,
) -> (StatusCode, String) {
    let mut request = exapp.signed(method, path, user);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    (status, response.text().await.unwrap_or_default())
}

/// The WebSocket, signed as AppAPI signs it for `user`, past its snapshot.
async fn websocket(
    exapp: &ExApp,
    user: &str,
) -> tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>> {
    let url = exapp.base_url().replacen("http://", "ws://", 1) + "/ws";
    let mut request = url.into_client_request().unwrap();
    let auth = STANDARD.encode(format!("{user}:{}", exapp.options.secret));
    for (name, value) in [
        ("ex-app-id", exapp.options.app_id.clone()),
        ("ex-app-version", exapp.options.version.clone()),
        ("authorization-app-api", auth),
        ("aa-version", support::AA_VERSION.to_owned()),
    ] {
        request
            .headers_mut()
            .insert(name, HeaderValue::from_str(&value).unwrap());
    }
    let (mut ws, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    match ws.next().await {
        Some(Ok(Message::Text(text))) => {
            let first: ServerMessage = serde_json::from_str(&text).unwrap();
            assert!(matches!(first.body, Body::Snapshot { .. }), "{text}");
        }
        other => panic!("expected the snapshot, got {other:?}"),
    }
    ws
}

/// Parses Prometheus text exposition strictly enough to catch a malformed line: every
/// sample belongs to a family announced by `# HELP` and `# TYPE` before it, names and
/// label names are valid, label values are quoted and escaped, values are numbers.
/// Returns the samples as `name{labels}` → value.
fn parse_prometheus(text: &str) -> BTreeMap<String, f64> {
    fn valid_name(n: &str) -> bool {
        let mut chars = n.chars();
        chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    }
    assert!(text.ends_with('\n'), "the exposition ends with a line feed");
    let mut typed: BTreeMap<String, String> = BTreeMap::new();
    let mut helped = std::collections::BTreeSet::new();
    let mut samples = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let name = rest.split(' ').next().unwrap();
            assert!(valid_name(name), "{line}");
            assert!(helped.insert(name.to_owned()), "HELP twice: {line}");
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect(line);
            assert!(
                ["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind),
                "{line}"
            );
            assert!(
                typed.insert(name.to_owned(), kind.to_owned()).is_none(),
                "TYPE twice: {line}"
            );
            continue;
        }
        assert!(
            !line.starts_with('#') && !line.is_empty(),
            "stray line {line:?}"
        );
        let (series, value) = line.rsplit_once(' ').expect(line);
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("value in {line}"));
        let name = series.split('{').next().unwrap();
        assert!(valid_name(name), "{line}");
        let kind = typed
            .get(name)
            .unwrap_or_else(|| panic!("no TYPE before {line}"));
        assert!(helped.contains(name), "no HELP before {line}");
        if kind == "counter" {
            assert!(name.ends_with("_total") && value >= 0.0, "{line}");
        }
        if let Some(labels) = series.strip_prefix(name).filter(|l| !l.is_empty()) {
            let inner = labels
                .strip_prefix('{')
                .and_then(|l| l.strip_suffix('}'))
                .unwrap_or_else(|| panic!("labels in {line}"));
            // name="value" pairs, separated by commas; values may hold escaped quotes.
            let mut rest = inner;
            while !rest.is_empty() {
                let (label, after) = rest.split_once("=\"").unwrap_or_else(|| panic!("{line}"));
                assert!(valid_name(label), "label {label} in {line}");
                let mut end = None;
                let mut escaped = false;
                for (i, c) in after.char_indices() {
                    match (escaped, c) {
                        (true, '\\' | '"' | 'n') => escaped = false,
                        (true, _) => panic!("bad escape in {line}"),
                        (false, '\\') => escaped = true,
                        (false, '"') => {
                            end = Some(i);
                            break;
                        }
                        (false, '\n') => panic!("raw line feed in {line}"),
                        _ => {}
                    }
                }
                let end = end.unwrap_or_else(|| panic!("unterminated value in {line}"));
                rest = after[end + 1..]
                    .strip_prefix(',')
                    .unwrap_or(&after[end + 1..]);
            }
        }
        assert!(
            samples.insert(series.to_owned(), value).is_none(),
            "twice: {line}"
        );
    }
    samples
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_pairs_and_syncs_with_an_office_node() {
    let nc = FakeNextcloud::start().await;
    nc.user_mkdir("alice", "Team");
    nc.user_put("alice", "Team/before.txt", "there before the swarm");
    nc.discard_webhook_jobs();
    let dir = tempfile::tempdir().unwrap();
    let mut options = ExAppOptions::new(&nc.url, dir.path());
    options.extra_args = vec!["--library".into(), "alice:/Team".into()];
    let exapp = ExApp::start(options);
    let spec = ExAppSpec::new("harpbridge", &exapp.options.secret, exapp.target());
    assert_eq!(nc.register(&spec).await.exit_code, 0);
    let lib_hex = exapp.wait_libraries(1).await.remove(0);
    let lib: LibraryId = lib_hex.parse().unwrap();
    let (serve_id, serve_addr) = exapp.swarm_addr().await;

    // The office dials serve: it is listed, but only as discovered, and gets nothing.
    let office = Office::dialling(vec![serve_addr.clone()]).await;
    let office_id = office.id.peer_id().to_base58();
    let peer = until(WAIT, "serve to list the office", || {
        exapp.peer(&office_id, "alice")
    })
    .await;
    assert_eq!(peer["trusted"], false, "{peer}");
    assert_eq!(peer["state"], "discovered", "{peer}");
    assert_eq!(
        peer["link"], "wan",
        "dialled by address, not found by mDNS: {peer}"
    );
    assert!(
        office.chain.libraries().is_empty(),
        "a stranger gets nothing"
    );

    // Pairing is for admins, checks what it is given, then appends the membership entry.
    let pair = format!("/api/admin/peers/{office_id}/pair");
    let body = json!({"libraries": [lib_hex], "name": "office-b"});
    let (status, _) = status_of(&exapp, Method::POST, &pair, "alice", Some(body.clone())).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, text) = status_of(
        &exapp,
        Method::POST,
        &pair,
        "admin",
        Some(json!({"libraries": ["00".repeat(16)]})),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "a library not held here: {text}"
    );
    let (status, text) = status_of(&exapp, Method::POST, &pair, "admin", Some(body.clone())).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{text}");
    let answer: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(answer["libraries"], json!([lib_hex]));

    // The paired office pulls the library: the scanned file and its own membership.
    until(WAIT, "the office to pull the library", || async {
        office
            .paths(&lib)
            .contains(&"before.txt".to_owned())
            .then_some(())
    })
    .await;
    assert!(office.chain.is_member(&lib, &office.id.device_key()));
    let activity = exapp.api("/api/activity", "admin").await;
    let added = activity["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["op"]["kind"] == "add_device" && e["op"]["device"] == office_id.as_str())
        .unwrap_or_else(|| panic!("no add_device entry for the office: {activity}"));
    assert_eq!(added["op"]["name"], "office-b");
    assert_eq!(added["author"], serve_id.as_str());
    let (status, _) = status_of(&exapp, Method::POST, &pair, "admin", Some(body)).await;
    assert_eq!(status, StatusCode::CONFLICT, "already a member");
    until(WAIT, "the panel to show the office as trusted", || async {
        exapp
            .peer(&office_id, "admin")
            .await
            .filter(|p| p["state"] == "connected")
            .map(|p| {
                assert_eq!(p["trusted"], true);
                assert_eq!(p["name"], "office-b", "the name it was paired under");
            })
    })
    .await;

    // A user's write in Nextcloud reaches the office through the webhook and the swarm.
    nc.user_put("alice", "Team/from-nextcloud.txt", "written in the web UI");
    let statuses = nc.run_webhook_worker().await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    until(WAIT, "the office to get the webhook's entry", || async {
        office
            .paths(&lib)
            .contains(&"from-nextcloud.txt".to_owned())
            .then_some(())
    })
    .await;
    let put = office
        .chain
        .tree(&lib)
        .unwrap()
        .items
        .get("from-nextcloud.txt")
        .cloned();
    assert!(
        matches!(put, Some(TreeItem::File { size: 21, .. })),
        "{put:?}"
    );

    // The office's own entry reaches serve: its chain view and the WebSocket.
    let mut ws = websocket(&exapp, "admin").await;
    let mut alice_ws = websocket(&exapp, "alice").await;
    office
        .publish(
            lib,
            vec![Op::Mkdir {
                path: ChainPath::new("from-office").unwrap(),
            }],
        )
        .await;
    for client in [&mut ws, &mut alice_ws] {
        let entry = bounded(WAIT, "the office's entry on the WebSocket", async {
            loop {
                let Some(Ok(Message::Text(text))) = client.next().await else {
                    panic!("the WebSocket closed");
                };
                let message: ServerMessage = serde_json::from_str(&text).unwrap();
                if let Body::EntryAppended { entry, .. } = message.body {
                    if entry.op
                        == (Operation::Mkdir {
                            path: "from-office".into(),
                        })
                    {
                        return entry;
                    }
                }
            }
        })
        .await;
        assert_eq!(entry.author, office_id, "the office signed it");
        assert_eq!(entry.library_id, lib_hex);
    }
    let office_heads: Vec<String> = office
        .chain
        .heads(&lib)
        .unwrap()
        .iter()
        .map(|h| h.to_hex())
        .collect();
    until(
        WAIT,
        "serve's library to reach the office's heads",
        || async {
            let libraries = exapp.api("/api/libraries", "alice").await;
            let library = libraries["libraries"].as_array()?.first()?.clone();
            (library["heads"] == json!(office_heads)).then_some(())
        },
    )
    .await;
    let lines = exapp.entry_lines().await;
    assert!(lines.contains(&"mkdir from-office".to_owned()), "{lines:?}");

    // A pull of many batches (more entries than one sync batch) shows each entry once.
    let bulk: Vec<Op> = (0..300)
        .map(|i| Op::Mkdir {
            path: ChainPath::new(&format!("bulk/{i:03}")).unwrap(),
        })
        .collect();
    office
        .chain
        .append_batch(&lib, office.id.signing_key(), bulk)
        .unwrap();
    office.node.library_changed(lib).await.unwrap();
    let total = office.chain.len(&lib).unwrap() as u64;
    until(
        WAIT,
        "serve to hold the office's 300 new entries",
        || async {
            let libraries = exapp.api("/api/libraries", "admin").await;
            (libraries["libraries"][0]["entries"] == total).then_some(())
        },
    )
    .await;
    let activity = exapp.api("/api/activity", "admin").await;
    let entries = activity["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 200, "the panel keeps the last 200");
    let paths: Vec<&str> = entries
        .iter()
        .map(|e| e["op"]["path"].as_str().unwrap_or(""))
        .collect();
    let expected: Vec<String> = (100..300).map(|i| format!("bulk/{i:03}")).collect();
    assert_eq!(paths, expected, "each entry once, ancestors first");

    // The panel's pair button sends no body: a second office joins every library, and gets
    // the first office's entry through serve.
    let second = Office::dialling(vec![serve_addr.clone()]).await;
    let second_id = second.id.peer_id().to_base58();
    until(WAIT, "serve to list the second office", || {
        exapp.peer(&second_id, "admin")
    })
    .await;
    let (status, text) = status_of(
        &exapp,
        Method::POST,
        &format!("/api/admin/peers/{second_id}/pair"),
        "admin",
        None,
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{text}");
    let answer: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        answer["libraries"],
        json!([lib_hex]),
        "every library by default"
    );
    until(WAIT, "the second office to catch up", || async {
        let heads = second.chain.heads(&lib).ok()?;
        (heads == office.chain.heads(&lib).ok()?
            && second.paths(&lib).contains(&"from-office".to_owned()))
        .then_some(())
    })
    .await;

    // Metrics: JSON for the panel, Prometheus text for scrapers; admins only.
    let metrics = exapp.api("/api/admin/metrics", "admin").await;
    let peer = metrics["traffic"]["peers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["peer_id"] == office_id.as_str())
        .unwrap_or_else(|| panic!("{metrics}"))
        .clone();
    assert_eq!(peer["class"], "wan");
    assert_eq!(peer["trusted"], true);
    assert!(
        peer["bytes_in"].is_u64() && peer["bytes_out"].is_u64(),
        "{peer}"
    );
    assert!(
        metrics["traffic"]["classes"]["lan"]["bytes_in"].is_u64(),
        "{metrics}"
    );
    assert_eq!(metrics["ingest"]["backlog"], 0, "{metrics}");

    let response = exapp
        .signed(Method::GET, "/metrics", "admin")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    assert_eq!(response.headers()["cache-control"], "no-store");
    let samples = parse_prometheus(&response.text().await.unwrap());
    assert_eq!(samples["harpbridge_p2p_up"], 1.0);
    assert!(samples["harpbridge_p2p_peers{state=\"trusted\"}"] >= 1.0);
    for direction in ["received", "sent"] {
        let per_peer = format!(
            "harpbridge_p2p_peer_{direction}_bytes_total{{peer=\"{office_id}\",class=\"wan\"}}"
        );
        assert!(
            samples.contains_key(&per_peer),
            "{per_peer} missing: {samples:?}"
        );
        for class in ["lan", "wan"] {
            let key = format!("harpbridge_p2p_{direction}_bytes_total{{class=\"{class}\"}}");
            assert!(samples.contains_key(&key), "{key} missing");
        }
    }
    let entries = office.chain.len(&lib).unwrap() as f64;
    assert_eq!(
        samples[&format!("harpbridge_chain_entries{{library=\"{lib_hex}\"}}")],
        entries,
        "serve holds as many entries as the office"
    );
    assert_eq!(samples["harpbridge_ingest_backlog"], 0.0);

    let (status, _) = status_of(&exapp, Method::GET, "/metrics", "alice", None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = status_of(&exapp, Method::GET, "/api/admin/metrics", "alice", None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let unsigned = reqwest::get(format!("{}/metrics", exapp.base_url()))
        .await
        .unwrap();
    assert_eq!(unsigned.status(), StatusCode::UNAUTHORIZED);

    office.node.shutdown().await;
    second.node.shutdown().await;
    let logs = exapp.stop();
    assert!(
        logs.contains("swarm running"),
        "the log says the swarm runs"
    );
}

/// A swarm that cannot start (its port is taken) leaves serve serving, and says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_keeps_serving_when_the_swarm_cannot_start() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let nc = FakeNextcloud::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut options = ExAppOptions::new(&nc.url, dir.path());
    options.extra_env = vec![(
        "HARPBRIDGE_P2P_LISTEN".into(),
        format!("/ip4/127.0.0.1/tcp/{port}"),
    )];
    let exapp = ExApp::start(options);
    let spec = ExAppSpec::new("harpbridge", &exapp.options.secret, exapp.target());
    assert_eq!(nc.register(&spec).await.exit_code, 0);
    let ingest = exapp.api("/api/ingest", "admin").await;
    assert_eq!(ingest["swarm"]["state"], "failed", "{ingest}");
    assert!(ingest["swarm"]["error"]
        .as_str()
        .is_some_and(|e| !e.is_empty()));
    let (status, text) = status_of(&exapp, Method::GET, "/metrics", "admin", None).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    assert!(text.contains("\nharpbridge_p2p_up 0\n"), "{text}");
    let (status, _) = status_of(
        &exapp,
        Method::POST,
        "/api/admin/peers/12D3KooWx/pair",
        "admin",
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "no swarm, no peer met");
    drop(taken);
    let secret = exapp.options.secret.clone();
    exapp.stop();

    // Turned off, it is off. (The same registration: Nextcloud answers whether "admin" is
    // an admin, and the swarm's state is for admins.)
    let mut options = ExAppOptions::new(&nc.url, dir.path());
    options.secret = secret;
    options.extra_env = vec![("HARPBRIDGE_P2P".into(), "off".into())];
    let exapp = ExApp::start(options);
    let ingest = exapp.api("/api/ingest", "admin").await;
    assert_eq!(ingest["swarm"]["state"], "off", "{ingest}");
    exapp.stop();
}

/// `HARPBRIDGE_P2P_PEERS`: serve dials the peers it is given (an office behind a known
/// address), and lists them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_dials_the_configured_peers() {
    let office = Office::dialling(Vec::new()).await;
    let office_id = office.id.peer_id().to_base58();
    let nc = FakeNextcloud::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut options = ExAppOptions::new(&nc.url, dir.path());
    options.extra_env = vec![(
        "HARPBRIDGE_P2P_PEERS".into(),
        office.addr(false).to_string(),
    )];
    let exapp = ExApp::start(options);
    let peer = until(
        WAIT,
        "serve to connect to the configured office",
        || async {
            exapp
                .peer(&office_id, "admin")
                .await
                .filter(|p| p["addresses"].as_array().is_some_and(|a| !a.is_empty()))
        },
    )
    .await;
    assert_eq!(peer["state"], "discovered", "{peer}");
    assert_eq!(peer["link"], "wan", "{peer}");
    office.node.shutdown().await;
    exapp.stop();
}

/// An office makes a library, adds serve to it and offers it: serve joins nothing until an
/// admin accepts it into a folder (then write-back fills the folder); a refused one is
/// never joined and no longer listed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offered_library_waits_for_an_admin_in_the_panel() {
    let nc = FakeNextcloud::start().await;
    nc.user_mkdir("alice", "Shared");
    let dir = tempfile::tempdir().unwrap();
    let exapp = ExApp::start(ExAppOptions::new(&nc.url, dir.path()));
    let spec = ExAppSpec::new("harpbridge", &exapp.options.secret, exapp.target());
    assert_eq!(nc.register(&spec).await.exit_code, 0);
    let (serve_id, serve_addr) = exapp.swarm_addr().await;
    let serve_key = harpbridge::p2p::device_key(&serve_id.parse().unwrap()).unwrap();

    let office = Office::dialling(Vec::new()).await;
    let mut offered = Vec::new();
    for name in ["wanted", "unwanted"] {
        let (lib, _) = office
            .chain
            .create_library(office.id.signing_key(), name)
            .unwrap();
        office.add(&lib, serve_key, "serve");
        office
            .publish(
                lib,
                vec![Op::Mkdir {
                    path: ChainPath::new(&format!("{name}-dir")).unwrap(),
                }],
            )
            .await;
        offered.push(lib.to_hex());
    }
    office.node.dial(serve_addr).await.unwrap();

    let offers = until(WAIT, "serve to list both offers", || async {
        let o = exapp.api("/api/admin/offers", "admin").await;
        (o["offers"].as_array().map_or(0, |a| a.len()) == 2).then_some(o)
    })
    .await;
    let office_id = office.id.peer_id().to_base58();
    assert_eq!(offers["offers"][0]["peers"], json!([office_id]), "{offers}");
    let (status, _) = status_of(&exapp, Method::GET, "/api/admin/offers", "alice", None).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "offers are for admins");
    let libraries = exapp.api("/api/libraries", "admin").await;
    assert_eq!(
        libraries["libraries"],
        json!([]),
        "nothing joined on its own"
    );

    // Accepting needs a valid folder, then joins it there.
    let accept = format!("/api/admin/offers/{}/accept", offered[0]);
    let bad = json!({"name": "Shared", "owner": "alice", "folder": "../x"});
    let (status, _) = status_of(&exapp, Method::POST, &accept, "admin", Some(bad)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let body = json!({"name": "Shared", "owner": "alice", "folder": "/Shared"});
    let (status, _) = status_of(&exapp, Method::POST, &accept, "alice", Some(body.clone())).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, text) = status_of(&exapp, Method::POST, &accept, "admin", Some(body)).await;
    assert_eq!(status, StatusCode::CREATED, "{text}");
    until(
        WAIT,
        "write-back to make the office's folder in Nextcloud",
        || async { nc.file("alice", "Shared/wanted-dir").filter(|f| f.is_dir()) },
    )
    .await;

    let reject = format!("/api/admin/offers/{}/reject", offered[1]);
    let (status, text) = status_of(&exapp, Method::POST, &reject, "admin", None).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{text}");
    let offers = exapp.api("/api/admin/offers", "admin").await;
    assert_eq!(offers["offers"], json!([]), "{offers}");
    let (status, _) = status_of(&exapp, Method::POST, &reject, "admin", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "no longer offered");
    let libraries = exapp.api("/api/libraries", "admin").await;
    let ids: Vec<&str> = libraries["libraries"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|l| l["id"].as_str())
        .collect();
    assert_eq!(ids, vec![offered[0].as_str()], "{libraries}");
    office.node.shutdown().await;
    exapp.stop();
}

/// The panel's WAN limits: `HARPBRIDGE_WAN_LIMIT` is what serve starts with; an admin
/// changes it (globally and for one library) with `PUT /api/admin/limits`, a user cannot,
/// bad rates are refused with a reason, and the setting outlives a restart (the panel's
/// latest word wins over the flag).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wan_limits_are_an_admin_setting_kept_across_restarts() {
    let nc = FakeNextcloud::start().await;
    let dir = tempfile::tempdir().unwrap();
    let start = |secret: Option<String>| {
        let mut options = ExAppOptions::new(&nc.url, dir.path());
        if let Some(s) = secret {
            options.secret = s;
        }
        options.extra_env = vec![("HARPBRIDGE_WAN_LIMIT".into(), "2mbit".into())];
        ExApp::start(options)
    };
    let exapp = start(None);
    let spec = ExAppSpec::new("harpbridge", &exapp.options.secret, exapp.target());
    assert_eq!(nc.register(&spec).await.exit_code, 0);
    exapp.swarm_addr().await;

    let limits = exapp.api("/api/admin/limits", "admin").await;
    assert_eq!(
        limits,
        json!({"up": 250_000, "down": 250_000, "libraries": {}})
    );
    let (status, _) = status_of(&exapp, Method::GET, "/api/admin/limits", "alice", None).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "limits are for admins");

    let lib = LibraryId([9; 16]).to_hex();
    let wanted =
        json!({"up": "10mbit", "down": null, "libraries": {lib.clone(): {"down": "1MiB"}}});
    let (status, _) = status_of(
        &exapp,
        Method::PUT,
        "/api/admin/limits",
        "alice",
        Some(wanted.clone()),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    for (bad, why) in [
        (json!({"up": "fast"}), "is not a rate"),
        (json!({"up": 0}), "0 would stop"),
        (
            json!({"libraries": {"nope": {"up": "1mbit"}}}),
            "not a library id",
        ),
    ] {
        let (status, text) =
            status_of(&exapp, Method::PUT, "/api/admin/limits", "admin", Some(bad)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{text}");
        assert!(text.contains(why), "{text}");
    }
    let expected = json!({
        "up": 1_250_000,
        "down": null,
        "libraries": {lib.clone(): {"up": null, "down": 1_048_576}},
    });
    let (status, text) = status_of(
        &exapp,
        Method::PUT,
        "/api/admin/limits",
        "admin",
        Some(wanted),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{text}");
    assert_eq!(serde_json::from_str::<Value>(&text).unwrap(), expected);
    assert_eq!(exapp.api("/api/admin/limits", "admin").await, expected);

    let secret = exapp.options.secret.clone();
    exapp.stop();
    let exapp = start(Some(secret));
    exapp.swarm_addr().await;
    assert_eq!(exapp.api("/api/admin/limits", "admin").await, expected);
    exapp.stop();
}
