//! The AppAPI lifecycle of the real binary against the Nextcloud + AppAPI test double:
//! install (register), enable, disable and unregister, with the top-menu calls checked.

mod support;

use std::time::Duration;

use serde_json::Value;
use support::{ExApp, ExAppOptions, ExAppSpec, FakeNextcloud};

const MENU_KINDS: [&str; 4] = ["top-menu", "script", "style", "initial-state"];

fn page_rows(nc: &FakeNextcloud) -> Vec<usize> {
    MENU_KINDS
        .iter()
        .map(|k| nc.ui_rows("harpbridge", k).len())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn install_disable_enable_unregister() {
    let nc = FakeNextcloud::start().await;
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let exapp = ExApp::start(ExAppOptions::new(&nc.url, &data_dir));
    let spec = ExAppSpec::new("harpbridge", &exapp.options.secret, exapp.target());

    // Install: heartbeat, init, (progress 100 → heartbeat, enabled=1 inside the status call).
    let out = nc.register(&spec).await;
    assert_eq!(out.exit_code, 0, "{}", out.stdout);
    assert!(out.stdout.contains("successfully registered"));
    assert_eq!(
        nc.sent_lines(),
        [
            "GET /heartbeat",
            "POST /init",
            "GET /heartbeat",
            "PUT /enabled?enabled=1"
        ]
    );
    let sent = nc.state().sent.clone();
    assert!(sent.iter().all(|r| r.status == 200), "{sent:?}");
    assert_eq!(sent[1].answer, "{}");
    assert_eq!(
        serde_json::from_str::<Value>(&sent[3].answer).unwrap(),
        serde_json::json!({"error": ""})
    );
    let app = nc.app("harpbridge").unwrap();
    assert!(app.enabled);
    assert_eq!(app.status.init, 100);
    assert_eq!(app.status.error, "");
    assert!(data_dir.is_dir(), "init prepares the data directory");

    // The progress report: OCS, signed as the app, answered only after /enabled ran.
    let received = nc.state().received.clone();
    let status_at = received
        .iter()
        .position(|r| r.path.ends_with("/ex-app/status"))
        .expect("progress reported");
    let status = &received[status_at];
    assert_eq!(status.method, "PUT");
    assert_eq!(
        serde_json::from_str::<Value>(&status.body).unwrap()["progress"],
        100
    );
    assert_eq!(status.header("ocs-apirequest"), Some("true"));
    assert_eq!(status.header("ex-app-id"), Some("harpbridge"));
    assert_eq!(status.header("ex-app-version"), Some("0.1.0"));
    assert_eq!(status.header("aa-version"), Some("33.0.0"));
    assert!(status.header("cookie").is_none());
    let menu_at = received
        .iter()
        .position(|r| r.path.ends_with("/ui/top-menu"))
        .expect("top menu registered");
    assert!(
        menu_at < status_at,
        "the status call returns only after AppAPI ran /enabled inside it"
    );
    assert_eq!(status.status, 200);

    // The page: one entry with its script, style and initial state.
    assert_eq!(page_rows(&nc), [1, 1, 1, 1]);
    let menu = &nc.ui_rows("harpbridge", "top-menu")[0].data;
    assert_eq!(menu["name"], "harpbridge");
    assert_eq!(menu["display_name"], "Harp Bridge");
    assert_eq!(menu["icon"], "img/app.svg");
    assert_eq!(menu["admin_required"], 0);
    assert_eq!(
        nc.ui_rows("harpbridge", "script")[0].data["path"],
        "js/harpbridge-main"
    );
    assert_eq!(
        nc.ui_rows("harpbridge", "style")[0].data["path"],
        "css/harpbridge-main"
    );
    let state = &nc.ui_rows("harpbridge", "initial-state")[0].data;
    assert_eq!(state["key"], "harpbridge-config");
    assert_eq!(state["value"]["appId"], "harpbridge");
    assert_eq!(state["value"]["wsPath"], "/exapps/harpbridge/ws");

    // The assets the page names are served (through AppAPI's proxy, so authenticated).
    let http = reqwest::Client::new();
    let signed = |path: &str| {
        http.get(format!("{}{path}", exapp.base_url()))
            .header("EX-APP-ID", "harpbridge")
            .header("EX-APP-VERSION", "0.1.0")
            .header(
                "AUTHORIZATION-APP-API",
                base64_auth("alice", &exapp.options.secret),
            )
    };
    for path in [
        "/js/harpbridge-main.js",
        "/css/harpbridge-main.css",
        "/img/app.svg",
    ] {
        let r = signed(path).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
    }

    // Enabling twice leaves one entry of each (AppAPI calls /enabled=1 again on update).
    nc.clear_traffic();
    for _ in 0..2 {
        assert!(nc.appapi_enable("harpbridge").await);
    }
    assert_eq!(
        nc.sent_lines(),
        [
            "GET /heartbeat",
            "PUT /enabled?enabled=1",
            "GET /heartbeat",
            "PUT /enabled?enabled=1"
        ]
    );
    assert_eq!(page_rows(&nc), [1, 1, 1, 1]);

    // Disable removes the page.
    nc.clear_traffic();
    let out = nc.disable("harpbridge").await;
    assert_eq!(out.exit_code, 0, "{}", out.stdout);
    assert_eq!(nc.sent_lines(), ["PUT /enabled?enabled=0"]);
    assert!(!nc.app("harpbridge").unwrap().enabled);
    assert_eq!(page_rows(&nc), [0, 0, 0, 0]);

    // Enable brings it back.
    nc.clear_traffic();
    let out = nc.enable("harpbridge").await;
    assert_eq!(out.exit_code, 0, "{}", out.stdout);
    assert_eq!(
        nc.sent_lines(),
        ["GET /heartbeat", "PUT /enabled?enabled=1"]
    );
    assert!(nc.app("harpbridge").unwrap().enabled);
    assert_eq!(page_rows(&nc), [1, 1, 1, 1]);

    // Unregister disables first, then AppAPI drops everything.
    nc.clear_traffic();
    let out = nc.unregister("harpbridge").await;
    assert_eq!(out.exit_code, 0);
    assert_eq!(nc.sent_lines(), ["PUT /enabled?enabled=0"]);
    assert!(nc.app("harpbridge").is_none());
    assert_eq!(page_rows(&nc), [0, 0, 0, 0]);

    let logs = exapp.stop();
    assert!(logs.contains("reported initialisation progress"), "{logs}");
}

fn base64_auth(user: &str, secret: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(format!("{user}:{secret}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_reports_an_error_when_the_data_directory_cannot_be_made() {
    let nc = FakeNextcloud::start().await;
    let dir = tempfile::tempdir().unwrap();
    let blocker = dir.path().join("not-a-dir");
    std::fs::write(&blocker, b"x").unwrap();
    let exapp = ExApp::start(ExAppOptions::new(&nc.url, &blocker.join("data")));
    let spec = ExAppSpec::new("harpbridge", &exapp.options.secret, exapp.target());

    let out = nc.register(&spec).await;
    assert_eq!(out.exit_code, 1, "{}", out.stdout);
    let app = nc.app("harpbridge").unwrap();
    assert!(
        app.status.error.contains("cannot use the data directory"),
        "{:?}",
        app.status
    );
    assert_ne!(app.status.init, 100);
    // No enable step ran, so no page was registered.
    assert_eq!(page_rows(&nc), [0, 0, 0, 0]);
    exapp.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enable_reports_nextclouds_refusal_and_stays_disabled() {
    let nc = FakeNextcloud::start().await;
    let dir = tempfile::tempdir().unwrap();
    let exapp = ExApp::start(ExAppOptions::new(&nc.url, dir.path()));
    let spec = ExAppSpec::new("harpbridge", &exapp.options.secret, exapp.target());
    assert_eq!(nc.register(&spec).await.exit_code, 0);
    assert_eq!(nc.disable("harpbridge").await.exit_code, 0);

    nc.state().fail_ui_with = Some(500);
    nc.clear_traffic();
    let out = nc.enable("harpbridge").await;
    assert_eq!(out.exit_code, 1, "{}", out.stdout);
    assert!(!nc.app("harpbridge").unwrap().enabled);
    let answer = &nc.state().sent.last().unwrap().answer.clone();
    let error = serde_json::from_str::<Value>(answer).unwrap()["error"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(error.contains("could not enable"), "{error}");

    nc.state().fail_ui_with = None;
    assert_eq!(nc.enable("harpbridge").await.exit_code, 0);
    assert_eq!(page_rows(&nc), [1, 1, 1, 1]);
    exapp.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_are_json_and_hold_no_secret() {
    let nc = FakeNextcloud::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut options = ExAppOptions::new(&nc.url, dir.path());
    options.json_logs = true;
    let exapp = ExApp::start(options);
    let spec = ExAppSpec::new("harpbridge", &exapp.options.secret, exapp.target());
    assert_eq!(nc.register(&spec).await.exit_code, 0);
    let logs = exapp.stop();
    let lines: Vec<&str> = logs.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(lines.len() >= 3, "{logs}");
    for line in lines {
        let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(v.get("level").is_some(), "{line}");
    }
}

/// Nextcloud counts a call from a disabled ExApp as a failed login against its address:
/// serve restarted while the app is disabled calls Nextcloud for nothing (no write-back
/// look, no queued event, no webhook check) until AppAPI enables it again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_while_disabled_calls_nextcloud_for_nothing_until_enabled() {
    let nc = FakeNextcloud::start().await;
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let mut options = ExAppOptions::new(&nc.url, &data_dir);
    options.extra_args = vec!["--library".into(), "alice:/".into()];
    let exapp = ExApp::start(options.clone());
    let spec = ExAppSpec::new("harpbridge", &exapp.options.secret, exapp.target());
    assert_eq!(nc.register(&spec).await.exit_code, 0);
    assert_eq!(nc.disable("harpbridge").await.exit_code, 0);
    exapp.stop();

    let before = nc.state().received.len();
    let exapp = ExApp::start(options);
    // serve has started (it logged "harpbridge serving" before ExApp::start returned); its
    // worker and write-back look at Nextcloud at once when they may.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(exapp
        .logs()
        .contains("waiting for AppAPI to enable the app before calling Nextcloud"));
    let calls: Vec<String> = nc.state().received[before..]
        .iter()
        .map(|r| format!("{} {}", r.method, r.path))
        .collect();
    assert!(
        calls.is_empty(),
        "serve called Nextcloud while disabled: {calls:?}"
    );
    assert_eq!(nc.state().bruteforce_attempts, 0);

    // AppAPI's enable is the go-ahead: the page and webhooks are registered again.
    // It listens on a new port: tell the double, as a re-deploy would.
    nc.state().apps.get_mut("harpbridge").unwrap().target = exapp.target();
    assert_eq!(nc.enable("harpbridge").await.exit_code, 0);
    assert_eq!(page_rows(&nc), [1, 1, 1, 1]);
    exapp.stop();
}
