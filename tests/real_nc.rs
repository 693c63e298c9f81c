//! End to end against the real Nextcloud 33.0.2 (AppAPI 33.0.0, webhook_listeners 1.5.0) of
//! `../shared/nextcloud/`, through AppAPI's PHP proxy, with the `manual_install` daemon: what
//! an admin and a user see.
//!
//! - Registered from `harpbridge manifest --json` with `--wait-finish`: listed enabled; the
//!   top-menu page, the panel's assets and the REST API through the PHP proxy for an admin
//!   and a user (admin routes refused to the user), nothing for anonymous visitors.
//! - Every kind of file change in Nextcloud (folder, new file, overwrite, rename, copy,
//!   delete, restore from the trash bin) becomes the right chain entry.
//! - Changes made while serve was stopped are recorded once it runs again.
//! - serve started while the app is disabled, or before it is registered, costs no failed
//!   login (Nextcloud's brute-force attempts for 127.0.0.1 stay 0).
//! - A peer's new version of a 100 MiB file lands in Nextcloud with the right SHA-256.
//! - `harpbridge doctor` names a stopped background-job worker.
//! - Two `node --dir` devices and serve keep one library: files made in Nextcloud reach both
//!   folders, files made in a folder reach Nextcloud and the other folder, and an edit in
//!   Nextcloud and a delete in a folder go everywhere.
//! - A library a device offers is listed for an admin (refused to a user), accepted with a
//!   POST through the proxy into a folder that did not exist, and its file lands there.
//! - A backlog of small files (deliveries late) is read ahead in tar streams of the folder,
//!   names with spaces, non-ASCII letters and over 100 bytes too, each with its own bytes;
//!   a library's first scan reads its small files the same way.
//!
//! Needs root (see `support::real_nc`); elsewhere each test prints why and returns. The
//! tests run one at a time; every wait is a generous deadline, not a timing assertion.

mod support;

use std::time::Duration;

use harpbridge::chain::{ChainPath, LibraryId, Op, TreeItem};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use support::exapp::assert_no_secret;
use support::real_nc::{doctor, entries_after, poll, real, serial, status_of, App, RealNc, User};
use support::swarm::{seeded, TestNode as Office};
use support::ExApp;

/// Webhooks leave Nextcloud from background jobs: about 1–3 s here, more on a busy machine.
const WAIT: Duration = Duration::from_secs(120);

/// serve for a new app on `manual_install`, registered, with `args` (e.g. a library).
async fn registered(nc: &'static RealNc, dir: &std::path::Path, args: &[String]) -> (App, ExApp) {
    let app = App::new(nc, "manual_install");
    let exapp = app.serve(dir, args);
    app.register_ok();
    (app, exapp)
}

fn library_arg(user: &User, folder: &str) -> Vec<String> {
    vec!["--library".into(), format!("{}:/{folder}", user.name)]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registers_and_serves_the_panel_through_the_php_proxy() {
    let Some(nc) = real() else { return };
    let _serial = serial().await;
    nc.reset_bruteforce();
    let user = nc.user(false);
    let dir = tempfile::tempdir().unwrap();
    let (app, exapp) = registered(nc, dir.path(), &[]).await;
    app.remember_user(&user.name);
    let line = app.listed().expect("the app is listed");
    assert!(line.contains("[enabled]"), "{line}");

    let admin = Some((nc.admin.as_str(), nc.pass.as_str()));
    let get = |url: String, auth: Option<(&str, &str)>| nc.request(Method::GET, &url, auth);

    // The top-menu page, for both (it is not admin-only); a visitor is sent to log in.
    for auth in [admin, user.auth()] {
        let (status, body) = status_of(get(app.page_url(), auth)).await;
        assert_eq!(status, 200, "{}: {body:.300}", app.page_url());
    }
    let (status, _) = status_of(
        reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap()
            .get(app.page_url()),
    )
    .await;
    assert_ne!(status, 200, "an anonymous visitor gets no page");

    // The panel's assets through the PHP proxy.
    for asset in [
        "/js/harpbridge-main.js",
        "/css/harpbridge-main.css",
        "/img/app.svg",
    ] {
        let (status, body) = status_of(get(app.proxy_url(asset), user.auth())).await;
        assert_eq!(status, 200, "{asset}: {body:.300}");
        assert!(!body.is_empty(), "{asset} is empty");
    }

    // The REST API: read routes for every user, admin routes for admins only. AppAPI's proxy
    // skips a route whose access level the user lacks and tries the next: `/metrics` then
    // matches nothing (404), `/api/admin/metrics` matches the read route `^/api/` and reaches
    // serve, which checks the user's groups itself (403).
    let codes = [
        ("/api/libraries", 200, 200),
        ("/api/overview", 200, 200),
        ("/api/ingest", 200, 200),
        ("/api/admin/metrics", 200, 403),
        ("/api/admin/offers", 200, 403),
        ("/api/admin/limits", 200, 403),
        ("/metrics", 200, 404),
    ];
    for (path, for_admin, for_user) in codes {
        let (status, body) = status_of(get(app.proxy_url(path), admin)).await;
        assert_eq!(status, for_admin, "admin {path}: {body:.300}");
        let (status, body) = status_of(get(app.proxy_url(path), user.auth())).await;
        assert_eq!(status, for_user, "user {path}: {body:.300}");
    }
    let (_, overview) = status_of(get(app.proxy_url("/api/overview"), user.auth())).await;
    let overview: Value = serde_json::from_str(&overview).unwrap();
    assert_eq!(overview["user"], user.name.as_str(), "{overview}");
    assert_eq!(overview["is_admin"], false, "{overview}");

    // Anonymous: refused, whatever the route
    // (AppAPI's proxy finds no route an anonymous visitor may use: 404, as for a path that
    // matches none.)
    for path in [
        "/api/libraries",
        "/api/admin/metrics",
        "/js/harpbridge-main.js",
    ] {
        let (status, body) = status_of(get(app.proxy_url(path), None)).await;
        assert_eq!(status, 404, "anonymous {path}: {body:.300}");
    }
    nc.reset_bruteforce();

    let out = app.unregister();
    assert!(out.status.success(), "{out:?}");
    assert!(app.listed().is_none());
    exapp.stop();
}

/// A user with a `Team` folder holding `seed.txt`, and serve (registered) keeping it as a
/// library; waits until the library's first scan recorded `seed.txt`.
async fn team(nc: &'static RealNc, dir: &std::path::Path) -> (User, App, ExApp) {
    let user = nc.user(false);
    user.mkdir("Team").await;
    user.put("Team/seed.txt", "seed").await;
    let (app, exapp) = registered(nc, dir, &library_arg(&user, "Team")).await;
    app.remember_user(&user.name);
    exapp.wait_libraries(1).await;
    entries_after(&exapp, 0, &["put seed.txt"], WAIT).await;
    (user, app, exapp)
}

/// Waits until the entries after the first `seen` are exactly `expected`; counts them seen.
async fn step(exapp: &ExApp, seen: &mut usize, expected: &[&str]) {
    let lines = entries_after(exapp, *seen, expected, WAIT).await;
    assert_eq!(&lines[*seen..], expected, "{lines:#?}");
    *seen += expected.len();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_kind_becomes_its_chain_entry() {
    let Some(nc) = real() else { return };
    let _serial = serial().await;
    nc.reset_bruteforce();
    let dir = tempfile::tempdir().unwrap();
    let (user, app, exapp) = team(nc, dir.path()).await;

    // Each change in Nextcloud, and the entries it must add (in this order, nothing else).
    let mut seen = exapp.entry_lines().await.len();
    user.mkdir("Team/docs").await;
    step(&exapp, &mut seen, &["mkdir docs"]).await;
    user.put("Team/docs/a.txt", "first version").await;
    step(&exapp, &mut seen, &["put docs/a.txt"]).await;
    assert_eq!(
        user.put("Team/docs/a.txt", "second, longer version").await,
        204
    );
    step(&exapp, &mut seen, &["put docs/a.txt"]).await;
    user.mv("Team/docs/a.txt", "Team/docs/b.txt").await;
    step(&exapp, &mut seen, &["rename docs/a.txt -> docs/b.txt"]).await;
    user.copy("Team/docs/b.txt", "Team/c.txt").await;
    step(&exapp, &mut seen, &["put c.txt"]).await;
    user.delete("Team/c.txt").await;
    step(&exapp, &mut seen, &["delete c.txt"]).await;
    user.restore("c.txt").await;
    step(&exapp, &mut seen, &["put c.txt"]).await;
    // A move out of the library is a delete; into it, a new file.
    user.mv("Team/docs/b.txt", "outside.txt").await;
    step(&exapp, &mut seen, &["delete docs/b.txt"]).await;
    user.mv("outside.txt", "Team/back.txt").await;
    step(&exapp, &mut seen, &["put back.txt"]).await;

    let activity = exapp.api("/api/activity", "admin").await;
    let last = activity["entries"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(last["user"], user.name.as_str(), "{last}");
    drop(app);
    exapp.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_made_while_serve_was_stopped_are_recorded_after_restart() {
    let Some(nc) = real() else { return };
    let _serial = serial().await;
    nc.reset_bruteforce();
    let dir = tempfile::tempdir().unwrap();
    let (user, app, exapp) = team(nc, dir.path()).await;
    exapp.wait_idle().await;
    let options = exapp.options.clone();
    let before = exapp.entry_lines().await;
    assert!(!before
        .iter()
        .any(|l| l.contains("while-down") || l == "delete seed.txt"));
    exapp.stop();

    // Nextcloud's deliveries for these fail (nothing listens) and are never retried.
    user.put("Team/while-down.txt", "written while serve was stopped")
        .await;
    user.mkdir("Team/new-folder").await;
    user.delete("Team/seed.txt").await;
    tokio::time::sleep(Duration::from_secs(10)).await;

    let exapp = app.serve_with(options);
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let lines = exapp.entry_lines().await;
        // (After a restart the panel's activity lists only what was appended since.)
        let has = |l: &str| lines.iter().any(|n| n == l);
        if has("put while-down.txt") && has("mkdir new-folder") && has("delete seed.txt") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the changes made while serve was stopped were not recorded in {WAIT:?}; entries: {lines:#?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    drop(app);
    exapp.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_while_unregistered_or_disabled_makes_no_failed_login() {
    let Some(nc) = real() else { return };
    let _serial = serial().await;
    let user = nc.user(false);
    user.mkdir("Team").await;
    user.put("Team/seed.txt", "seed").await;
    // How long serve runs before the attempts are counted: its start-up calls (libraries,
    // write-back, webhooks) happen in the first seconds.
    let settle = Duration::from_secs(20);

    // Never registered: serve asked for a library, which it must not touch yet.
    nc.reset_bruteforce();
    let dir = tempfile::tempdir().unwrap();
    let app = App::new(nc, "manual_install");
    let exapp = app.serve(dir.path(), &library_arg(&user, "Team"));
    tokio::time::sleep(settle).await;
    assert_eq!(nc.bruteforce_attempts(), 0, "serve before registration");

    // Registered, the library made, then disabled, and serve restarted.
    app.register_ok();
    exapp.wait_libraries(1).await;
    entries_after(&exapp, 0, &["put seed.txt"], WAIT).await;
    nc.occ_ok(&["app_api:app:disable", &app.id]);
    let options = exapp.options.clone();
    exapp.stop();
    nc.reset_bruteforce();
    let exapp = app.serve_with(options.clone());
    tokio::time::sleep(settle).await;
    assert_eq!(
        nc.bruteforce_attempts(),
        0,
        "serve while the app is disabled"
    );
    user.put("Team/while-disabled.txt", "x").await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(nc.bruteforce_attempts(), 0, "a change while disabled");

    // Unregistered (AppAPI forgot its secret), serve restarted over the same data.
    exapp.stop();
    let out = app.unregister();
    assert!(out.status.success(), "{out:?}");
    nc.reset_bruteforce();
    let exapp = app.serve_with(options);
    tokio::time::sleep(settle).await;
    assert_eq!(nc.bruteforce_attempts(), 0, "serve after unregistration");
    exapp.stop();
}

/// Bytes of a 100 MiB file made from `seed` (the same bytes for the same seed).
fn big(seed: u8) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(100 << 20);
    seeded(seed, 100 << 20, |b| bytes.extend_from_slice(b));
    bytes
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peers_overwrite_of_a_100_mib_file_lands_with_its_sha256() {
    let Some(nc) = real() else { return };
    let _serial = serial().await;
    nc.reset_bruteforce();
    let user = nc.user(false);
    user.mkdir("Team").await;
    user.put("Team/big.bin", big(1)).await;
    let dir = tempfile::tempdir().unwrap();
    let (app, exapp) = registered(nc, dir.path(), &library_arg(&user, "Team")).await;
    app.remember_user(&user.name);
    let lib_hex = exapp.wait_libraries(1).await.remove(0);
    let lib: LibraryId = lib_hex.parse().unwrap();
    entries_after(&exapp, 0, &["put big.bin"], WAIT).await;

    let before = user.etag("Team/big.bin").await.expect("big.bin's etag");

    // An office that dials serve, paired into the library, holding the library's tree.
    let office = Office::dialling(vec![exapp.swarm_addr().await.1]).await;
    let office_id = office.id.peer_id().to_base58();
    poll(WAIT, "serve to meet the office", || {
        exapp.peer(&office_id, "admin")
    })
    .await;
    let response = exapp
        .signed(
            Method::POST,
            &format!("/api/admin/peers/{office_id}/pair"),
            "admin",
        )
        .json(&json!({"libraries": [lib_hex], "name": "office"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    poll(WAIT, "the office to pull the library", || async {
        let tree = office.chain.tree(&lib).ok()?;
        matches!(tree.items.get("big.bin"), Some(TreeItem::File { .. })).then_some(())
    })
    .await;

    // The office's new version of big.bin: only the office has its bytes.
    let new = big(2);
    let want = sha256_hex(&new);
    let mut writer = office.content.writer(lib);
    writer.write(&new).unwrap();
    let content = writer.finish().unwrap().id.into();
    drop(new);
    office
        .publish(
            lib,
            vec![Op::Put {
                path: ChainPath::new("big.bin").unwrap(),
                size: 100 << 20,
                mtime_ms: 1_700_000_000_000,
                content,
                nextcloud: None,
            }],
        )
        .await;
    poll(
        Duration::from_secs(600),
        "Nextcloud to hold a new version of big.bin",
        || async { user.etag("Team/big.bin").await.filter(|e| *e != before) },
    )
    .await;
    assert_eq!(
        user.sha256("Team/big.bin").await.as_deref(),
        Some(want.as_str()),
        "the office's bytes, whole"
    );
    let status = exapp.api("/api/ingest", "admin").await;
    assert_eq!(status["writeback"]["state"], "ok", "{status}");
    office.node.shutdown().await;
    drop(app);
    exapp.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_names_a_stopped_background_job_worker() {
    let Some(nc) = real() else { return };
    let _serial = serial().await;
    nc.reset_bruteforce();
    let dir = tempfile::tempdir().unwrap();
    let (user, app, exapp) = team(nc, dir.path()).await;
    exapp.wait_idle().await;

    // Nextcloud's workers run: doctor finds nothing wrong with webhooks.
    let out = doctor(&exapp.options, &[]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_no_secret(&text, &app.secret);
    // (Checks this setup cannot pass, such as peers reaching a loopback swarm, may fail.)
    assert!(
        matches!(out.status.code(), Some(0 | 1)),
        "doctor with everything running:\n{text}"
    );
    assert!(
        !text
            .lines()
            .any(|l| l.starts_with("FAIL") && (l.contains("background") || l.contains("webhook"))),
        "doctor with Nextcloud's workers running:\n{text}"
    );

    // Without Nextcloud's background jobs, a change's delivery waits in the job list.
    let seen = exapp.entry_lines().await.len();
    let workers = nc.stop_background_workers();
    // doctor counts a change from the first seconds after serve started as found by its
    // start-up scan (2 s of slack): this one comes later.
    tokio::time::sleep(Duration::from_secs(5)).await;
    user.put("Team/late.txt", "its webhook waits for a background job")
        .await;
    tokio::time::sleep(Duration::from_secs(40)).await;
    let out = doctor(&exapp.options, &[]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_no_secret(&text, &app.secret);
    let context = format!(
        "ingest: {}\ndoctor:\n{text}\nentries since the upload: {:?}\nNextcloud's background-job workers: {}",
        exapp.api("/api/ingest", "admin").await,
        &exapp.entry_lines().await[seen..],
        String::from_utf8_lossy(
            &std::process::Command::new("pgrep")
                .args(["-af", "background-job:worker|cron.php"])
                .output()
                .unwrap()
                .stdout
        )
    );
    assert_eq!(out.status.code(), Some(1), "{context}");
    assert!(text.lines().any(|l| l.starts_with("FAIL")), "{context}");
    assert!(text.contains("background-job:worker"), "{context}");

    // Once the workers run again, the delivery leaves and the entry is recorded.
    drop(workers);
    entries_after(&exapp, seen, &["put late.txt"], WAIT).await;
    drop(app);
    exapp.stop();
}

/// A `node --dir` device on loopback dialling `serve_addr`, joining `library`.
struct FolderDevice {
    folder: std::path::PathBuf,
    peer: String,
    /// Kept for the device's lifetime: its data directory, and the process (stopped on drop).
    _data: tempfile::TempDir,
    _node: support::cli::Proc,
}

impl FolderDevice {
    fn start(name: &str, root: &std::path::Path, library: &str, serve_addr: &str) -> Self {
        let data = tempfile::tempdir().unwrap();
        let folder = root.join(name);
        let peer = support::cli::peer_id(data.path());
        let args = [
            "node",
            "--no-mdns",
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
            "--dir",
            folder.to_str().unwrap(),
            "--library",
            library,
            "--peer",
            serve_addr,
        ];
        let mut command = support::cli::harpbridge(&args, data.path());
        command.env("RUST_LOG", "harpbridge=info");
        let log = data.path().join("node.log");
        let node = support::cli::Proc::start(name, command, Some(&log));
        node.line("library ", WAIT);
        FolderDevice {
            folder,
            peer,
            _data: data,
            _node: node,
        }
    }

    async fn holds(&self, rel: &str, want: &[u8]) -> Option<()> {
        (std::fs::read(self.folder.join(rel)).ok()? == want).then_some(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn folder_devices_and_nextcloud_keep_one_library() {
    let Some(nc) = real() else { return };
    let _serial = serial().await;
    nc.reset_bruteforce();
    let user = nc.user(false);
    user.mkdir("Shared").await;
    user.put("Shared/from-nc.txt", "made in Nextcloud").await;
    let dir = tempfile::tempdir().unwrap();
    let (app, exapp) = registered(nc, dir.path(), &library_arg(&user, "Shared")).await;
    app.remember_user(&user.name);
    let lib = exapp.wait_libraries(1).await.remove(0);
    entries_after(&exapp, 0, &["put from-nc.txt"], WAIT).await;

    // Two folder devices dial serve; the admin pairs them from the panel's API.
    let serve_addr = exapp.swarm_addr().await.1.to_string();
    let root = tempfile::tempdir().unwrap();
    let a = FolderDevice::start("folder-a", root.path(), &lib, &serve_addr);
    let b = FolderDevice::start("folder-b", root.path(), &lib, &serve_addr);
    for device in [&a, &b] {
        poll(WAIT, "serve to meet the folder device", || {
            exapp.peer(&device.peer, "admin")
        })
        .await;
        let response = exapp
            .signed(
                Method::POST,
                &format!("/api/admin/peers/{}/pair", device.peer),
                "admin",
            )
            .json(&json!({"libraries": [lib], "name": "folder"}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::ACCEPTED);
    }
    for device in [&a, &b] {
        poll(WAIT, "Nextcloud's file in the folder", || {
            device.holds("from-nc.txt", b"made in Nextcloud")
        })
        .await;
    }

    // A file made in folder a: in Nextcloud, and in folder b.
    std::fs::write(a.folder.join("from-a.txt"), b"made in folder a").unwrap();
    poll(WAIT, "folder a's file in Nextcloud", || async {
        (user.etag("Shared/from-a.txt").await.is_some()
            && user.get("Shared/from-a.txt").await.as_ref() == b"made in folder a")
            .then_some(())
    })
    .await;
    poll(WAIT, "folder a's file in folder b", || {
        b.holds("from-a.txt", b"made in folder a")
    })
    .await;

    // An edit in Nextcloud, a delete in folder b.
    user.put("Shared/from-nc.txt", "edited in Nextcloud").await;
    std::fs::remove_file(b.folder.join("from-a.txt")).unwrap();
    for device in [&a, &b] {
        poll(WAIT, "Nextcloud's edit in the folder", || {
            device.holds("from-nc.txt", b"edited in Nextcloud")
        })
        .await;
    }
    poll(WAIT, "the delete in Nextcloud", || async {
        user.etag("Shared/from-a.txt").await.is_none().then_some(())
    })
    .await;
    poll(WAIT, "the delete in folder a", || async {
        (!a.folder.join("from-a.txt").exists()).then_some(())
    })
    .await;
    // Nothing lost: the deleted file is in folder a's trash can.
    let trashed = std::process::Command::new("grep")
        .args(["-rl", "made in folder a"])
        .arg(a.folder.join(".harp/trash"))
        .output()
        .unwrap();
    assert!(
        trashed.status.success(),
        "the deleted file is not in folder a's trash"
    );
    drop((a, b));
    drop(app);
    exapp.stop();
}

/// An office device that made its own library and paired serve offers it to serve. Through
/// AppAPI's PHP proxy an admin sees the offer (a user is refused), accepts it into a user's
/// folder with a POST, and the device's file lands in that folder in Nextcloud; a second
/// accept of the same offer is a 404.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_accepts_an_offered_library_through_the_php_proxy() {
    let Some(nc) = real() else { return };
    let _serial = serial().await;
    nc.reset_bruteforce();
    let user = nc.user(false);
    let dir = tempfile::tempdir().unwrap();
    let (app, exapp) = registered(nc, dir.path(), &[]).await;
    app.remember_user(&user.name);
    let (serve_peer, serve_addr) = exapp.swarm_addr().await;

    // The office: `node --dir` making a library from its folder, pairing serve.
    let root = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let folder = root.path().join("office");
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::write(folder.join("plans.txt"), b"office plans").unwrap();
    let args = [
        "node",
        "--no-mdns",
        "--listen",
        "/ip4/127.0.0.1/tcp/0",
        "--dir",
        folder.to_str().unwrap(),
        "--pair",
        &serve_peer,
        "--peer",
        &serve_addr.to_string(),
    ];
    let mut command = support::cli::harpbridge(&args, data.path());
    command.env("RUST_LOG", "harpbridge=info");
    let office = support::cli::Proc::start("office", command, Some(&data.path().join("node.log")));
    let library = office.line("library ", WAIT);
    let library = library.split_whitespace().next().unwrap().to_owned();

    let admin = Some((nc.admin.as_str(), nc.pass.as_str()));
    let offers_url = app.proxy_url("/api/admin/offers");
    let listed = poll(WAIT, "the offer listed for the admin", || async {
        let (status, body) = status_of(nc.request(Method::GET, &offers_url, admin)).await;
        assert_eq!(status, 200, "{body:.300}");
        let v: Value = serde_json::from_str(&body).ok()?;
        v["offers"]
            .as_array()?
            .iter()
            .find(|o| o["library"] == library.as_str())
            .cloned()
    })
    .await;
    assert!(
        listed["peers"]
            .to_string()
            .contains(&support::cli::peer_id(data.path())),
        "{listed}"
    );
    let (status, body) = status_of(nc.request(Method::GET, &offers_url, user.auth())).await;
    assert_eq!(status, 403, "a user lists no offers: {body:.300}");

    let accept_url = app.proxy_url(&format!("/api/admin/offers/{library}/accept"));
    let body = json!({"name": "Office plans", "owner": user.name, "folder": "/Office"});
    let (status, text) = status_of(
        nc.request(Method::POST, &accept_url, user.auth())
            .json(&body),
    )
    .await;
    // The admin route is skipped for a user, and no user route takes a POST: 404.
    assert_eq!(status, 404, "a user cannot accept: {text:.300}");
    let (status, text) = status_of(nc.request(Method::POST, &accept_url, admin).json(&body)).await;
    assert_eq!(status, 201, "{text:.300}");
    let shown: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(shown["id"], library.as_str(), "{shown}");

    // The WAN limits, set for the accepted library through the PHP proxy (a PUT: the admin
    // route's verbs list it; a user's PUT matches no route).
    let limits_url = app.proxy_url("/api/admin/limits");
    let limits = json!({"up": "2mbit", "libraries": {library.clone(): {"down": "1MiB"}}});
    let (status, text) = status_of(
        nc.request(Method::PUT, &limits_url, user.auth())
            .json(&limits),
    )
    .await;
    assert_eq!(status, 404, "a user cannot set limits: {text:.300}");
    let (status, text) = status_of(nc.request(Method::PUT, &limits_url, admin).json(&limits)).await;
    assert_eq!(status, 200, "{text:.300}");
    let (_, text) = status_of(nc.request(Method::GET, &limits_url, admin)).await;
    let set: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(set["up"], 250_000, "{set}");
    assert_eq!(
        set["libraries"][library.as_str()]["down"],
        1_048_576,
        "{set}"
    );

    poll(WAIT, "the office's file in the user's folder", || async {
        (user.etag("Office/plans.txt").await.is_some()
            && user.get("Office/plans.txt").await.as_ref() == b"office plans")
            .then_some(())
    })
    .await;
    let (status, text) = status_of(nc.request(Method::POST, &accept_url, admin).json(&body)).await;
    assert_eq!(status, 404, "placed: no longer offered: {text:.300}");
    drop(office);
    drop(app);
    exapp.stop();
}

/// Waits until serve's entries hold every one of `expected` (`kind path` lines), in any order.
async fn until_recorded(exapp: &ExApp, expected: &[String]) {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let lines = exapp.entry_lines().await;
        let missing: Vec<&String> = expected.iter().filter(|e| !lines.contains(e)).collect();
        if missing.is_empty() {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not recorded in {WAIT:?}: {missing:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_of_small_files_is_read_in_the_folders_tar_streams() {
    let Some(nc) = real() else { return };
    let _serial = serial().await;
    nc.reset_bruteforce();
    let dir = tempfile::tempdir().unwrap();
    let (user, app, exapp) = team(nc, dir.path()).await;
    let seen = exapp.entry_lines().await.len();
    user.mkdir("Team/backlog").await;
    // (Its delivery held back with the files' would have serve walk the new folder.)
    entries_after(&exapp, seen, &["mkdir backlog"], WAIT).await;
    exapp.wait_idle().await;

    // Nextcloud's webhook worker is stopped while the files are uploaded, so their
    // deliveries come late: serve reads the folder ahead of them.
    let mut names: Vec<String> = (0..24).map(|i| format!("f{i:02}.txt")).collect();
    names.push("a name with spaces.txt".into());
    names.push("Ünïcødé ✓ ü.txt".into());
    // Over 99 bytes: the archive names it in a GNU long-name entry.
    names.push(format!("{}.txt", "long-".repeat(24)));
    let body = |name: &str| format!("the bytes of {name}\n").repeat(1 + name.len() % 5);
    {
        let _workers = nc.stop_background_workers();
        for name in &names {
            user.put(&format!("Team/backlog/{name}"), body(name)).await;
        }
        // Later than a delivery on time can be (`READ_AHEAD_LAG`, 10 s).
        tokio::time::sleep(Duration::from_secs(12)).await;
    }
    let expected: Vec<String> = names.iter().map(|n| format!("put backlog/{n}")).collect();
    until_recorded(&exapp, &expected).await;
    let status = exapp.wait_idle().await;
    let in_tar = status["counters"]["read_in_tar"].as_u64().unwrap_or(0);
    assert!(
        in_tar as usize >= names.len() / 2,
        "most of the backlog came in tar streams, not a GET each: {status}"
    );
    assert_eq!(status["failed"], 0, "{status}");
    drop(app);
    exapp.stop();

    let files = support::exapp::chain_files(dir.path());
    for name in &names {
        let path = format!("backlog/{name}");
        let (_, bytes) = files
            .iter()
            .rev()
            .find(|(p, _)| *p == path)
            .unwrap_or_else(|| panic!("{path} not in the chain"));
        assert_eq!(String::from_utf8_lossy(bytes), body(name), "{path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_scan_reads_small_files_in_the_folders_tar_streams() {
    let Some(nc) = real() else { return };
    let _serial = serial().await;
    nc.reset_bruteforce();
    let user = nc.user(false);
    user.mkdir("Scan").await;
    user.mkdir("Scan/sub").await;
    let mut paths: Vec<String> = (0..40).map(|i| format!("f{i:02}.txt")).collect();
    paths.push(format!("sub/{}.md", "a long name ".repeat(10)));
    paths.push("sub/é à.txt".into());
    let body = |path: &str| format!("{path} as uploaded\n").repeat(1 + path.len() % 4);
    for path in &paths {
        user.put(&format!("Scan/{path}"), body(path)).await;
    }
    let dir = tempfile::tempdir().unwrap();
    let (app, exapp) = registered(nc, dir.path(), &library_arg(&user, "Scan")).await;
    app.remember_user(&user.name);
    exapp.wait_libraries(1).await;
    let expected: Vec<String> = paths.iter().map(|p| format!("put {p}")).collect();
    until_recorded(&exapp, &expected).await;
    let status = exapp.wait_idle().await;
    assert!(
        status["counters"]["read_in_tar"].as_u64() >= Some(40),
        "the files came in tar streams, not a GET each: {status}"
    );
    drop(app);
    exapp.stop();
    let files = support::exapp::chain_files(dir.path());
    for path in &paths {
        let (_, bytes) = files
            .iter()
            .find(|(p, _)| p == path)
            .unwrap_or_else(|| panic!("{path} not in the chain"));
        assert_eq!(String::from_utf8_lossy(bytes), body(path), "{path}");
    }
}
