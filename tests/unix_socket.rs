//! With `HP_SHARED_KEY` set, harpbridge listens on HaRP's FRP unix socket
//! `/tmp/exapp.sock` beside `APP_HOST:APP_PORT` (HaRP in direct mode dials that over TCP),
//! and serves the same routes on both: the whole lifecycle runs over the socket.

mod support;

use std::os::unix::fs::FileTypeExt;
use std::path::Path;

use support::nextcloud::ExAppTarget;
use support::{ExApp, ExAppOptions, ExAppSpec, FakeNextcloud};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn harp_mode_serves_the_lifecycle_on_the_frp_socket() {
    let socket = Path::new("/tmp/exapp.sock");
    // A socket left by a killed process must not stop the start.
    if !socket.exists() {
        drop(std::os::unix::net::UnixListener::bind(socket).unwrap());
    }
    assert!(std::fs::symlink_metadata(socket)
        .unwrap()
        .file_type()
        .is_socket());

    let nc = FakeNextcloud::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut options = ExAppOptions::new(&nc.url, dir.path());
    options.listen = None;
    options.harp_shared_key = Some("harpSharedKeyU4".into());
    let exapp = ExApp::start(options);
    assert_eq!(exapp.listen, "tcp://127.0.0.1:23000,unix:///tmp/exapp.sock");
    assert!(matches!(exapp.target(), ExAppTarget::Unix(_)));
    let tcp = reqwest::get(format!("{}/heartbeat", exapp.base_url()))
        .await
        .unwrap();
    assert_eq!(tcp.status(), 200, "APP_HOST:APP_PORT answers too");

    let spec = ExAppSpec::new("harpbridge", &exapp.options.secret, exapp.target());
    let out = nc.register(&spec).await;
    assert_eq!(out.exit_code, 0, "{}", out.stdout);
    assert_eq!(
        nc.sent_lines(),
        [
            "GET /heartbeat",
            "POST /init",
            "GET /heartbeat",
            "PUT /enabled?enabled=1"
        ]
    );
    assert_eq!(nc.ui_rows("harpbridge", "top-menu").len(), 1);
    assert_eq!(nc.disable("harpbridge").await.exit_code, 0);
    assert!(nc.ui_rows("harpbridge", "top-menu").is_empty());

    // Without credentials the socket answers 401 like TCP does.
    let r = support::raw_http::request(socket, "PUT", "/enabled?enabled=1", &[])
        .await
        .unwrap();
    assert_eq!(r.status, 401);

    let logs = exapp.stop();
    assert!(!logs.contains("harpSharedKeyU4"), "the HaRP key was logged");
    assert!(!socket.exists(), "the socket is removed on shutdown");
}

#[test]
fn a_regular_file_at_the_socket_path_is_not_removed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("exapp.sock");
    std::fs::write(&path, b"keep me").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_harpbridge"))
        .arg("serve")
        .arg("--listen")
        .arg(format!("unix://{}", path.display()))
        .env_clear()
        .envs([
            ("APP_ID", "harpbridge"),
            ("APP_SECRET", "x"),
            ("APP_VERSION", "1"),
            ("APP_HOST", "127.0.0.1"),
            ("APP_PORT", "23000"),
            ("NEXTCLOUD_URL", "http://127.0.0.1:9"),
        ])
        .env("APP_PERSISTENT_STORAGE", dir.path().join("data"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a socket"));
    assert_eq!(std::fs::read(&path).unwrap(), b"keep me");
    assert!(
        !dir.path().join("data").exists(),
        "storage is opened only after binding"
    );
}
