//! Webhook deliveries that must not be trusted, and failures that must not lose events.

mod support;

use std::time::Duration;

use support::{ExApp, ExAppOptions, ExAppSpec, FakeNextcloud};

async fn started(nc: &FakeNextcloud, data: &std::path::Path, extra: &[&str]) -> ExApp {
    let mut options = ExAppOptions::new(&nc.url, data);
    if let Some(app) = nc.app("harpbridge") {
        options.secret = app.secret; // a restart keeps the registered secret
    }
    options.extra_args = ["--library", "alice:/Sync"]
        .iter()
        .chain(extra)
        .map(|s| s.to_string())
        .collect();
    let exapp = ExApp::start(options);
    if nc.app("harpbridge").is_none() {
        nc.user_mkdir("alice", "Sync");
        nc.discard_webhook_jobs();
        let spec = ExAppSpec::new("harpbridge", &exapp.options.secret, exapp.target());
        assert_eq!(nc.register(&spec).await.exit_code, 0);
    } else {
        let app = nc.app("harpbridge").unwrap();
        let mut state = nc.state();
        let row = state.apps.get_mut("harpbridge").unwrap();
        row.target = exapp.target();
        assert!(app.enabled);
    }
    exapp.wait_libraries(1).await;
    exapp
}

const WRITTEN: &str = r#"{"event":{"node":{"id":7,"path":"\/alice\/files\/Sync\/a.txt"},"class":"OCP\\Files\\Events\\Node\\NodeWrittenEvent"},"user":{"uid":"alice","displayName":"alice"},"time":1795627354,"authentication":[]}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_deliveries_get_a_clear_4xx_and_queue_nothing() {
    let nc = FakeNextcloud::start().await;
    let dir = tempfile::tempdir().unwrap();
    let exapp = started(&nc, dir.path(), &[]).await;

    let bad: Vec<(&str, String)> = vec![
        ("malformed JSON", "{\"event\": {".into()),
        (
            "wrong types",
            WRITTEN.replace(r#""id":7"#, r#""id":"seven""#),
        ),
        ("time is text", WRITTEN.replace("1795627354", "\"now\"")),
        (
            "unknown class",
            WRITTEN.replace("NodeWrittenEvent\"", "NodeReadEvent\""),
        ),
        (
            "outside /<uid>/files/",
            WRITTEN.replace(
                r#"\/alice\/files\/Sync"#,
                r#"\/alice\/files_versions\/Sync"#,
            ),
        ),
        (
            "dot-dot",
            WRITTEN.replace(r#"Sync\/a.txt"#, r#"Sync\/..\/..\/bob\/files\/x"#),
        ),
        ("missing node", WRITTEN.replace(r#""node""#, r#""nodes""#)),
    ];
    for (what, body) in &bad {
        let (status, answer) = exapp
            .deliver("NodeWrittenEvent", "alice", body.clone())
            .await;
        assert_eq!(status, 400, "{what}: {answer}");
        assert!(answer.contains("error"), "{what}: {answer}");
    }
    let huge = format!("{{\"pad\":\"{}\"}}", "x".repeat(100 * 1024));
    let (status, _) = exapp.deliver("NodeWrittenEvent", "alice", huge).await;
    assert_eq!(status, 413, "oversized body");
    let wrong_secret = reqwest::Client::new()
        .post(format!("{}/webhooks/NodeWrittenEvent", exapp.base_url()))
        .header("EX-APP-ID", "harpbridge")
        .header("EX-APP-VERSION", "0.1.0")
        .header("AUTHORIZATION-APP-API", "YWxpY2U6d3Jvbmc=")
        .body(WRITTEN)
        .send()
        .await
        .unwrap();
    assert_eq!(wrong_secret.status(), 401);

    let status = exapp.wait_idle().await;
    assert_eq!(status["counters"]["queued"], 0, "{status}");
    assert_eq!(status["counters"]["rejected"], bad.len(), "{status}");
    assert_eq!(exapp.entry_lines().await, Vec::<String>::new());

    // A valid delivery about a path in no library is acknowledged, counted and dropped.
    let outside = WRITTEN.replace(r#"Sync\/a.txt"#, r#"Elsewhere\/a.txt"#);
    let (status, answer) = exapp.deliver("NodeWrittenEvent", "alice", outside).await;
    assert_eq!(
        (status, answer.contains("ignored")),
        (200, true),
        "{answer}"
    );
    // The same valid delivery twice, while the first still waits, is queued once.
    nc.user_put("alice", "Sync/a.txt", "A");
    nc.discard_webhook_jobs();
    nc.state().dav_down = true;
    let first = exapp.deliver("NodeWrittenEvent", "alice", WRITTEN).await.1;
    let second = exapp.deliver("NodeWrittenEvent", "alice", WRITTEN).await.1;
    assert!(
        first.contains("queued") && second.contains("duplicate"),
        "{first} {second}"
    );
    nc.state().dav_down = false;
    let status = exapp.wait_idle().await;
    assert_eq!(status["counters"]["outside_libraries"], 1, "{status}");
    assert_eq!(status["counters"]["queued"], 1, "{status}");
    assert_eq!(exapp.entry_lines().await, ["put a.txt"]);

    // Two saves in one second give byte-identical deliveries: once the first is processed,
    // the second is a new change, and its content is recorded.
    nc.user_put("alice", "Sync/a.txt", "A, saved again within the second");
    nc.discard_webhook_jobs();
    let again = exapp.deliver("NodeWrittenEvent", "alice", WRITTEN).await.1;
    assert!(again.contains("queued"), "{again}");
    exapp.wait_idle().await;
    assert_eq!(exapp.entry_lines().await, ["put a.txt", "put a.txt"]);
    exapp.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acknowledged_delivery_survives_kill_9() {
    let nc = FakeNextcloud::start().await;
    let dir = tempfile::tempdir().unwrap();
    let exapp = started(&nc, dir.path(), &[]).await;

    // Nextcloud is down, so the worker cannot finish before the kill.
    nc.state().dav_down = true;
    nc.user_put("alice", "Sync/report.txt", "quarterly numbers");
    let statuses = nc.run_webhook_worker().await;
    assert!(
        !statuses.is_empty() && statuses.iter().all(|s| *s == 200),
        "{statuses:?}"
    );
    exapp.kill9();

    nc.state().dav_down = false;
    let exapp = started(&nc, dir.path(), &[]).await;
    exapp.wait_idle().await;
    let status = exapp.api("/api/ingest", "admin").await;
    assert_eq!(status["counters"]["entries_appended"], 1, "{status}");
    exapp.stop();
    // The entry is in the chain on disk, not only in the panel's memory.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_harpbridge"))
        .args(["chain", "log", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&out.stdout);
    assert!(log.contains("report.txt"), "chain log: {log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nextcloud_down_keeps_events_queued_and_visible_until_it_returns() {
    let nc = FakeNextcloud::start().await;
    let dir = tempfile::tempdir().unwrap();
    let exapp = started(&nc, dir.path(), &[]).await;

    nc.state().dav_down = true;
    nc.user_put("alice", "Sync/a.txt", "one");
    nc.user_put("alice", "Sync/b.txt", "two");
    nc.run_webhook_worker().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let status = loop {
        let status = exapp.api("/api/ingest", "admin").await;
        if status["nextcloud"]["state"] == "unavailable" {
            break status;
        }
        assert!(tokio::time::Instant::now() < deadline, "{status}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status["backlog"].as_u64().unwrap() >= 1, "{status}");
    assert_eq!(status["counters"]["entries_appended"], 0);

    nc.state().dav_down = false;
    let status = exapp.wait_idle().await;
    assert_eq!(status["nextcloud"]["state"], "ok", "{status}");
    assert!(
        status["counters"]["retries"].as_u64().unwrap() >= 1,
        "{status}"
    );
    let mut lines = exapp.entry_lines().await;
    lines.sort();
    assert_eq!(lines, ["put a.txt", "put b.txt"]);
    exapp.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_webhook_listeners_libraries_are_scanned() {
    let nc = FakeNextcloud::start().await;
    nc.state().webhook_listeners_enabled = false;
    let dir = tempfile::tempdir().unwrap();
    let exapp = started(&nc, dir.path(), &["--scan-interval", "1"]).await;
    let status = exapp.api("/api/ingest", "admin").await;
    assert_eq!(status["webhooks"]["state"], "unavailable", "{status}");
    assert!(status["webhooks"]["reason"]
        .as_str()
        .unwrap()
        .contains("webhook_listeners"));
    assert!(exapp
        .logs()
        .contains("only the periodic catch-ups see changes"));

    nc.user_mkdir("alice", "Sync/docs");
    nc.user_put("alice", "Sync/docs/new.txt", "found by the scan");
    assert_eq!(nc.pending_webhook_jobs(), 0, "no webhooks are registered");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let lines = exapp.entry_lines().await;
        if lines.contains(&"put docs/new.txt".to_string()) {
            assert!(lines.contains(&"mkdir docs".to_string()), "{lines:?}");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{lines:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Deleted behind our back: the next scan records it.
    nc.user_delete("alice", "Sync/docs");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !exapp
        .entry_lines()
        .await
        .contains(&"delete docs".to_string())
    {
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    exapp.stop();
}
