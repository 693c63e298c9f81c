//! Changes no webhook delivered, and webhooks Nextcloud need not send.
//!
//! webhook_listeners delivers each event once and never retries, so harpbridge catches up
//! by folder ETags: at start, on enable, after gaps and every `--scan-interval`, one
//! depth-0 PROPFIND per library when nothing changed. Its webhooks carry an `eventFilter`
//! limited to the libraries' folders, which the double applies as the real server does.

mod support;

use std::time::{Duration, Instant};

use harpbridge::chain::{ChainStore, TreeItem};
use serde_json::{json, Value};
use support::webhooks::mongo;
use support::{ExApp, ExAppOptions, ExAppSpec, FakeNextcloud};

const WAIT: Duration = Duration::from_secs(120);

/// Starts serve with the library alice:/Team (registering it the first time, keeping the
/// registration on a restart) and waits for the library's scan and the catch-ups.
async fn started(nc: &FakeNextcloud, data: &std::path::Path, scan_interval: u64) -> ExApp {
    let mut options = ExAppOptions::new(&nc.url, data);
    if let Some(app) = nc.app("harpbridge") {
        options.secret = app.secret; // a restart keeps the registered secret
    }
    options.extra_args = vec![
        "--library".into(),
        "alice:/Team".into(),
        "--scan-interval".into(),
        scan_interval.to_string(),
    ];
    let exapp = ExApp::start(options);
    match nc.app("harpbridge") {
        None => {
            let spec = ExAppSpec::new("harpbridge", &exapp.options.secret, exapp.target());
            assert_eq!(nc.register(&spec).await.exit_code, 0);
        }
        Some(_) => {
            nc.state().apps.get_mut("harpbridge").unwrap().target = exapp.target();
        }
    }
    exapp.wait_libraries(1).await;
    exapp.wait_idle().await;
    exapp
}

/// Polls `/api/ingest` until `done` says yes.
async fn until_status(exapp: &ExApp, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let status = exapp.api("/api/ingest", "admin").await;
        if done(&status) {
            return status;
        }
        assert!(Instant::now() < deadline, "{what}: {status}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn library(status: &Value) -> &Value {
    &status["libraries"][0]
}

/// The library's tree in the chain (serve stopped): sorted (path, is a folder).
fn tree(dir: &std::path::Path) -> Vec<(String, bool)> {
    let db = harpbridge::db::open(dir).unwrap();
    let chain = ChainStore::open(db).unwrap();
    let lib = chain.libraries()[0];
    let mut paths: Vec<(String, bool)> = chain
        .tree(&lib)
        .unwrap()
        .items
        .iter()
        .map(|(p, i)| (p.clone(), matches!(i, TreeItem::Dir { .. })))
        .collect();
    paths.sort();
    paths
}

fn deliveries(nc: &FakeNextcloud) -> usize {
    nc.state()
        .sent
        .iter()
        .filter(|r| r.path.starts_with("/webhooks/"))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_made_while_serve_was_down_are_recorded_after_restart() {
    let nc = FakeNextcloud::start().await;
    nc.user_mkdir("alice", "Team");
    nc.user_mkdir("alice", "Team/docs");
    nc.user_mkdir("alice", "Team/still");
    nc.user_put("alice", "Team/keep.txt", "kept as it is");
    nc.user_put("alice", "Team/edit.txt", "v1");
    nc.user_put("alice", "Team/gone.txt", "deleted while down");
    nc.user_put("alice", "Team/docs/old-name.txt", "renamed while down");
    nc.user_put(
        "alice",
        "Team/still/quiet.txt",
        "in a folder nothing touches",
    );
    nc.discard_webhook_jobs();
    let dir = tempfile::tempdir().unwrap();
    let exapp = started(&nc, dir.path(), 3600).await;
    exapp.stop();

    // While serve is down: Nextcloud's deliveries fail (cURL error 7) and are never retried.
    nc.user_put("alice", "Team/new.txt", "created while down");
    nc.user_put("alice", "Team/edit.txt", "v2, written while down");
    nc.user_delete("alice", "Team/gone.txt");
    nc.user_move("alice", "Team/docs/old-name.txt", "Team/docs/new-name.txt")
        .unwrap();
    nc.user_mkdir("alice", "Team/docs/sub");
    nc.user_put("alice", "Team/docs/sub/deep.txt", "deep");
    assert!(nc.discard_webhook_jobs() > 0);
    nc.clear_traffic();

    let exapp = started(&nc, dir.path(), 3600).await;
    let status = until_status(&exapp, "the catch-up at start", |s| {
        library(s)["catch_up"]["runs"].as_u64() >= Some(1)
    })
    .await;
    let catch_up = &library(&status)["catch_up"];
    assert_eq!(catch_up["result"], "changes", "{status}");
    assert!(catch_up["changes_found"].as_u64().unwrap() >= 6, "{status}");
    assert_eq!(deliveries(&nc), 0, "no webhook delivered anything");
    // Files equal to what was recorded are not read again: only what changed is.
    let gets: Vec<String> = nc
        .state()
        .received
        .iter()
        .filter(|r| r.method == "GET" && r.path.starts_with("/remote.php/dav/"))
        .map(|r| r.path.clone())
        .collect();
    assert!(
        !gets
            .iter()
            .any(|p| p.ends_with("keep.txt") || p.ends_with("quiet.txt")),
        "{gets:?}"
    );
    // Nothing changed in Team/still: its listing was not asked for.
    assert!(
        !nc.received_matching("/Team/still")
            .iter()
            .any(|r| r.method == "PROPFIND"),
        "a folder whose ETag did not change is not walked"
    );
    let logs = exapp.stop();
    assert!(
        logs.contains("catch-up: alice:/Team:")
            && logs.contains("changes found that no webhook delivered"),
        "{logs}"
    );

    let paths = tree(dir.path());
    let want: Vec<(String, bool)> = [
        ("docs", true),
        ("docs/new-name.txt", false),
        ("docs/sub", true),
        ("docs/sub/deep.txt", false),
        ("edit.txt", false),
        ("keep.txt", false),
        ("new.txt", false),
        ("still", true),
        ("still/quiet.txt", false),
    ]
    .iter()
    .map(|(p, d)| (p.to_string(), *d))
    .collect();
    assert_eq!(paths, want);
    // The overwrite is the new version.
    let db = harpbridge::db::open(dir.path()).unwrap();
    let chain = ChainStore::open(db).unwrap();
    let lib = chain.libraries()[0];
    match chain.tree(&lib).unwrap().items.get("edit.txt") {
        Some(TreeItem::File { size, .. }) => {
            assert_eq!(*size, "v2, written while down".len() as u64)
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unchanged_library_costs_one_depth_0_propfind_per_catch_up() {
    let nc = FakeNextcloud::start().await;
    nc.user_mkdir("alice", "Team");
    nc.user_mkdir("alice", "Team/a");
    nc.user_put("alice", "Team/a/x.txt", "x");
    nc.user_put("alice", "Team/y.txt", "y");
    nc.discard_webhook_jobs();
    let dir = tempfile::tempdir().unwrap();
    let exapp = started(&nc, dir.path(), 1).await;
    let runs = |s: &Value| library(s)["catch_up"]["runs"].as_u64().unwrap_or(0);
    let first = until_status(&exapp, "a catch-up", |s| runs(s) >= 1).await;
    let before = runs(&first);
    nc.clear_traffic();
    let after = until_status(&exapp, "three more catch-ups", |s| {
        runs(s) >= before + 3 && !library(s)["catch_up"]["running"].as_bool().unwrap()
    })
    .await;
    let received = nc.state().received.clone();
    let n = runs(&after) - before;
    assert_eq!(
        library(&after)["catch_up"]["result"],
        "unchanged",
        "{after}"
    );
    let dav: Vec<_> = received
        .iter()
        .filter(|r| r.path.starts_with("/remote.php/dav/"))
        .collect();
    assert!(
        dav.iter().all(|r| r.method == "PROPFIND"
            && r.header("depth") == Some("0")
            && r.path.trim_end_matches('/') == "/remote.php/dav/files/alice/Team"),
        "{dav:#?}"
    );
    // One per catch-up; a catch-up may straddle either end of the count.
    let propfinds = dav.len() as u64;
    assert!(
        propfinds + 1 >= n && propfinds <= n + 1,
        "{propfinds} PROPFINDs for {n} catch-ups"
    );
    exapp.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_delivery_is_found_by_the_periodic_catch_up() {
    let nc = FakeNextcloud::start().await;
    nc.user_mkdir("alice", "Team");
    nc.user_mkdir("alice", "Team/docs");
    nc.discard_webhook_jobs();
    let dir = tempfile::tempdir().unwrap();
    let exapp = started(&nc, dir.path(), 2).await;

    // A delivery that never arrives (a timeout, a restart of the web server...).
    nc.user_put("alice", "Team/docs/lost.txt", "no webhook told about me");
    assert!(nc.discard_webhook_jobs() > 0);
    let status = until_status(&exapp, "the periodic catch-up to find the file", |s| {
        library(s)["catch_up"]["changes_found"].as_u64() >= Some(1)
    })
    .await;
    assert_eq!(deliveries(&nc), 0);
    assert!(library(&status)["catch_up"]["last_ms"].as_u64().is_some());
    exapp.wait_idle().await;
    assert!(exapp
        .entry_lines()
        .await
        .contains(&"put docs/lost.txt".to_string()));
    let logs = exapp.stop();
    assert!(
        logs.contains("catch-up: alice:/Team: 1 changes found that no webhook delivered"),
        "{logs}"
    );
}

/// Delivers the queued jobs one at a time, in this order of event names, each once the
/// ExApp is idle again (so no two land in one batch of the worker).
async fn deliver_one_by_one(nc: &FakeNextcloud, exapp: &ExApp, order: &[&str]) {
    let mut jobs = std::mem::take(&mut nc.state().webhook_jobs);
    for name in order {
        let at = jobs
            .iter()
            .position(|j| j.webhook.uri.ends_with(name))
            .unwrap_or_else(|| panic!("no {name} job"));
        let job = jobs.remove(at);
        nc.state().webhook_jobs.push(job);
        assert_eq!(nc.run_webhook_worker().await, [200]);
        exapp.wait_idle().await;
    }
    assert!(jobs.is_empty(), "{} jobs left", jobs.len());
}

fn gets_of(nc: &FakeNextcloud, path: &str) -> usize {
    nc.received_matching(path)
        .iter()
        .filter(|r| r.method == "GET")
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_that_fires_created_and_written_is_read_once() {
    let nc = FakeNextcloud::start().await;
    nc.user_mkdir("alice", "Team");
    nc.discard_webhook_jobs();
    let dir = tempfile::tempdir().unwrap();
    let exapp = started(&nc, dir.path(), 3600).await;

    // Nextcloud's background jobs deliver in any order: both orders.
    nc.user_put_generated("alice", "Team/one.bin", 1, 3 << 20);
    deliver_one_by_one(&nc, &exapp, &["NodeWrittenEvent", "NodeCreatedEvent"]).await;
    assert_eq!(gets_of(&nc, "/Team/one.bin"), 1);
    nc.user_put_generated("alice", "Team/two.bin", 2, 3 << 20);
    deliver_one_by_one(&nc, &exapp, &["NodeCreatedEvent", "NodeWrittenEvent"]).await;
    assert_eq!(gets_of(&nc, "/Team/two.bin"), 1);
    // A later write is read, even if Nextcloud kept the ETag (same second, same size).
    nc.user_put_content(
        "alice",
        "Team/one.bin",
        support::files::Content::Generated {
            seed: 3,
            len: 3 << 20,
        },
        Some(nc.file("alice", "Team/one.bin").unwrap().mtime),
    );
    deliver_one_by_one(&nc, &exapp, &["NodeWrittenEvent"]).await;
    assert_eq!(gets_of(&nc, "/Team/one.bin"), 2);
    let status = exapp.wait_idle().await;
    assert_eq!(status["failed"], 0, "{status}");
    let lines = exapp.entry_lines().await;
    assert_eq!(
        lines.iter().filter(|l| l.as_str() == "put one.bin").count(),
        2,
        "{lines:?}"
    );
    // Accepted deliveries are noted per library, with their lag.
    let deliveries = &library(&status)["deliveries"];
    assert!(
        deliveries["last_accepted_ms"].as_u64().is_some(),
        "{status}"
    );
    assert!(
        deliveries["lag_s"].as_i64().is_some_and(|l| l >= 0),
        "{status}"
    );
    exapp.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_are_filtered_to_the_libraries_folders() {
    let nc = FakeNextcloud::start().await;
    nc.user_mkdir("alice", "Team");
    nc.user_mkdir("alice", "Teamwork");
    nc.discard_webhook_jobs();
    let dir = tempfile::tempdir().unwrap();
    let exapp = started(&nc, dir.path(), 3600).await;
    nc.user_mkdir("admin", "Team");
    let rows = nc.webhooks_of("harpbridge");
    assert_eq!(rows.len(), 6);
    assert!(rows.iter().all(|r| r.event_filter == rows[0].event_filter));

    // Elsewhere: no job, no call.
    nc.user_put("alice", "Elsewhere.txt", "not synced");
    nc.user_put("alice", "Teamwork/a.txt", "not synced either");
    nc.user_put("admin", "Team/a.txt", "another user's Team");
    nc.user_move("alice", "Teamwork/a.txt", "Teamwork/b.txt")
        .unwrap();
    assert_eq!(nc.pending_webhook_jobs(), 0);
    // In the library, and moves into and out of it: delivered.
    nc.user_put("alice", "Team/in.txt", "synced");
    nc.user_move("alice", "Teamwork/b.txt", "Team/moved-in.txt")
        .unwrap();
    nc.user_move("alice", "Team/in.txt", "Out.txt").unwrap();
    assert_eq!(
        nc.pending_webhook_jobs(),
        4,
        "created, written, two renames"
    );
    let statuses = nc.run_webhook_worker().await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    let status = exapp.wait_idle().await;
    assert_eq!(status["counters"]["outside_libraries"], 0, "{status}");
    assert_eq!(
        exapp.entry_lines().await.last().unwrap(),
        "put moved-in.txt"
    );

    // A new library widens the filter; removing it narrows it again.
    let created = exapp
        .signed(reqwest::Method::POST, "/api/admin/libraries", "admin")
        .json(&json!({"owner": "alice", "folder": "/Teamwork", "name": "work"}))
        .send()
        .await
        .unwrap();
    assert!(created.status().is_success(), "{created:?}");
    let work: Value = created.json().await.unwrap();
    exapp.wait_libraries(2).await;
    let deadline = Instant::now() + WAIT;
    // Every kind's registration, not only the first: they are updated one after another.
    let changed = |old: &Value| {
        nc.webhooks_of("harpbridge")
            .iter()
            .all(|w| &w.event_filter != old)
    };
    while !changed(&rows[0].event_filter) {
        assert!(Instant::now() < deadline, "the filter was not updated");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(nc.webhooks_of("harpbridge").len(), 6, "updated, not added");
    nc.user_put("alice", "Teamwork/c.txt", "now synced");
    assert_eq!(nc.pending_webhook_jobs(), 2);
    nc.discard_webhook_jobs();
    let id = work["id"].as_str().unwrap_or_else(|| panic!("{work}"));
    let removed = exapp
        .signed(
            reqwest::Method::DELETE,
            &format!("/api/admin/libraries/{id}"),
            "admin",
        )
        .send()
        .await
        .unwrap();
    assert!(removed.status().is_success(), "{removed:?}");
    let deadline = Instant::now() + WAIT;
    let narrowed = || {
        nc.webhooks_of("harpbridge")
            .iter()
            .all(|w| w.event_filter == rows[0].event_filter)
    };
    while !narrowed() {
        assert!(Instant::now() < deadline, "the filter was not narrowed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    nc.user_put("alice", "Teamwork/d.txt", "not synced again");
    assert_eq!(nc.pending_webhook_jobs(), 0);
    exapp.stop();
}

/// The double's filter evaluation agrees with webhook_listeners' PHPMongoQuery, checked
/// by running the same filter and events through `lib/Service/PHPMongoQuery.php` of
/// Nextcloud 33.0.2 (and against a live 33.0.2: the in-library write and both moves
/// delivered, the others not).
#[test]
fn the_doubles_filter_evaluation_agrees_with_nextclouds() {
    let regex = r"/^(?:\/alice\/files\/Team|\/bob\.b\/files|\/carol\/files\/a\+b \(x\))(?:\/|$)/";
    let filter = json!({"$or": [
        {"event.node.path": regex},
        {"event.source.path": regex},
        {"event.target.path": regex},
    ]});
    let node = |p: &str| json!({"event": {"node": {"id": 1, "path": p}, "class": "X"}, "user": null, "time": 1});
    let two = |s: &str, t: &str| json!({"event": {"source": {"path": s}, "target": {"id": 2, "path": t}, "class": "R"}, "user": null, "time": 1});
    let cases = [
        (node("/alice/files/Team/a.txt"), true),
        (node("/alice/files/Team"), true),
        (node("/alice/files/Teamwork/a.txt"), false),
        (node("/alice/files/Elsewhere.txt"), false),
        (node("/alice/files"), false),
        (node("/bob.b/files/Team/a.txt"), true),
        (node("/bobXb/files/a"), false),
        (node("/carol/files/a+b (x)/[y].txt"), true),
        (two("/alice/files/Team/a.txt", "/alice/files/Out.txt"), true),
        (
            two("/alice/files/Out.txt", "/alice/files/Team/In (1).txt"),
            true,
        ),
        (
            two("/alice/files_trashbin/files/x.d1", "/alice/files/Team/x"),
            true,
        ),
    ];
    for (doc, want) in &cases {
        assert_eq!(mongo::filter_match(&filter, doc), *want, "{doc}");
    }
    let none = json!({"event.class": "harpbridge: no library"});
    assert!(!mongo::filter_match(&none, &cases[0].0));
    assert!(mongo::filter_match(&json!({}), &cases[0].0));
    assert!(mongo::filter_match(&json!([]), &cases[0].0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_scan_reads_small_files_a_tar_stream_per_32() {
    let nc = FakeNextcloud::start().await;
    nc.user_mkdir("alice", "Team");
    nc.user_mkdir("alice", "Team/docs");
    let small = |i: usize| format!("small file {i}\n").repeat(i % 7 + 1);
    for i in 0..70 {
        nc.user_put("alice", &format!("Team/f{i:02}.txt"), small(i));
    }
    for i in 0..3 {
        nc.user_put("alice", &format!("Team/docs/d{i}.txt"), small(100 + i));
    }
    // Over the size read in bundles: a GET of its own.
    let big: Vec<u8> = (0..(3u32 << 20)).map(|i| (i * 7 % 251) as u8).collect();
    nc.user_put("alice", "Team/big.bin", big.clone());
    nc.discard_webhook_jobs();
    let dir = tempfile::tempdir().unwrap();
    let exapp = started(&nc, dir.path(), 3600).await;

    let gets: Vec<(String, String)> = nc
        .state()
        .received
        .iter()
        .filter(|r| r.method == "GET" && r.path.starts_with("/remote.php/dav/files/"))
        .map(|r| (r.path.clone(), r.query.clone()))
        .collect();
    let tar_files = |folder: &str| -> Vec<usize> {
        let mut sizes: Vec<usize> = gets
            .iter()
            .filter(|(path, query)| path.ends_with(folder) && query.contains("files="))
            .map(|(_, query)| {
                let (_, files) = url::form_urlencoded::parse(query.as_bytes())
                    .find(|(k, _)| k == "files")
                    .unwrap();
                serde_json::from_str::<Vec<String>>(&files).unwrap().len()
            })
            .collect();
        sizes.sort();
        sizes
    };
    assert_eq!(tar_files("/Team"), [6, 32, 32], "{gets:#?}");
    assert_eq!(tar_files("/Team/docs"), [3], "{gets:#?}");
    let alone: Vec<&String> = gets
        .iter()
        .filter(|(_, query)| query.is_empty())
        .map(|(path, _)| path)
        .collect();
    assert_eq!(alone, ["/remote.php/dav/files/alice/Team/big.bin"]);
    exapp.stop();

    let files = support::exapp::chain_files(dir.path());
    assert_eq!(files.len(), 74);
    for (path, bytes) in files {
        let expected = match path.as_str() {
            "big.bin" => big.clone(),
            p => {
                let i: usize = match p.strip_prefix("docs/d") {
                    Some(rest) => 100 + rest.trim_end_matches(".txt").parse::<usize>().unwrap(),
                    None => p[1..3].parse().unwrap(),
                };
                small(i).into_bytes()
            }
        };
        assert!(bytes == expected, "{path}");
    }
}
