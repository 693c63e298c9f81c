//! The worker takes events a batch at a time, looks at their files in parallel and appends
//! their entries in one commit: one file Nextcloud fails to serve (a 500, or a 404 between
//! PROPFIND and GET) loses none of the others, and the chain records them in the order
//! their deliveries were queued, whether the worker looks ahead or goes one by one
//! (`--ingest-in-flight 1`). A delivery that comes late (Nextcloud's webhook queue behind)
//! has the worker read the folder's other new files ahead of their deliveries, which then
//! cost no download; one on time reads nothing more. Small files go a tar stream of their
//! folder per 32 ([`harpbridge::backend::Backend::read_tar`]): a file gone since the listing
//! costs a few requests, not the others; a Nextcloud without tar streams is read file by
//! file; refused credentials end the reading.

mod support;

use support::exapp::chain_files;
use support::{ExApp, ExAppOptions, ExAppSpec, FakeNextcloud};

const FILES: usize = 40;
/// The file Nextcloud fails to serve.
const BAD: usize = 17;

fn created(path: &str, n: usize) -> String {
    format!(
        r#"{{"event":{{"node":{{"id":{id},"path":"\/alice\/files\/{path}"}},"class":"OCP\\Files\\Events\\Node\\NodeCreatedEvent"}},"user":{{"uid":"alice","displayName":"alice"}},"time":{n},"authentication":[]}}"#,
        id = 1000 + n,
        path = path.replace('/', "\\/")
    )
}

fn name(i: usize) -> String {
    // Not in alphabetical order, so the chain's order is the queue's, not the names'.
    format!("f{:03}.txt", (i * 7) % FILES)
}

/// Alice's `Sync/` on the double, served as a library by a registered serve (with `extra`
/// arguments), idle.
async fn serving_sync(extra: &[&str]) -> (FakeNextcloud, ExApp, tempfile::TempDir) {
    let nc = FakeNextcloud::start().await;
    nc.user_mkdir("alice", "Sync");
    nc.discard_webhook_jobs();
    let dir = tempfile::tempdir().unwrap();
    let mut options = ExAppOptions::new(&nc.url, dir.path());
    options.extra_args = ["--library", "alice:/Sync"]
        .iter()
        .chain(extra)
        .map(|s| s.to_string())
        .collect();
    let exapp = ExApp::start(options);
    let spec = ExAppSpec::new("harpbridge", &exapp.options.secret, exapp.target());
    assert_eq!(nc.register(&spec).await.exit_code, 0);
    exapp.wait_libraries(1).await;
    exapp.wait_idle().await;
    (nc, exapp, dir)
}

/// Queues one delivery per new file while WebDAV is down (so the worker finds them all in
/// one batch once it is back), with the `BAD`th file failing `fail` once; returns the paths
/// of the chain's `Put`s, in the chain's order, and the ingest status.
async fn one_batch(fail: u16, extra: &[&str]) -> (Vec<String>, serde_json::Value) {
    let (nc, exapp, dir) = serving_sync(extra).await;

    nc.state().dav_down = true;
    for i in 0..FILES {
        nc.user_put("alice", &format!("Sync/{}", name(i)), format!("new {i}\n"));
    }
    nc.discard_webhook_jobs();
    nc.state()
        .fail_get
        .insert(("alice".into(), format!("Sync/{}", name(BAD))), (fail, 1));
    for i in 0..FILES {
        let r = exapp
            .signed(reqwest::Method::POST, "/webhooks/NodeCreatedEvent", "alice")
            .body(created(&format!("Sync/{}", name(i)), i))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    nc.state().dav_down = false;
    exapp.wait_idle().await;
    // A file that vanished between PROPFIND and GET is recorded with its next event (or
    // by the catch-up that follows Nextcloud's recovery).
    let again = created(&format!("Sync/{}", name(BAD)), 10_000).replace("Created", "Written");
    let r = exapp
        .signed(reqwest::Method::POST, "/webhooks/NodeWrittenEvent", "alice")
        .body(again)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let status = exapp.wait_idle().await;
    exapp.stop();
    (chain_paths(dir.path()), status)
}

/// The paths of the chain's `Put` entries, in the chain's order.
fn chain_paths(data: &std::path::Path) -> Vec<String> {
    chain_files(data)
        .into_iter()
        .map(|(path, _)| path)
        .collect()
}

/// The files in the order their deliveries were queued.
fn queued_order() -> Vec<String> {
    (0..FILES).map(name).collect()
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_get_failing_500_delays_the_batch_but_loses_and_reorders_nothing() {
    for extra in [&[][..], &["--ingest-in-flight", "1"][..]] {
        let (paths, status) = one_batch(500, extra).await;
        // Every file once. The files queued before the failing one were recorded in queue
        // order before the worker stopped to retry; the rest by its retry or by the catch-up
        // that follows Nextcloud's recovery (which walks the folder in name order).
        assert_eq!(sorted(paths.clone()), sorted(queued_order()), "{extra:?}");
        assert_eq!(paths[..BAD], queued_order()[..BAD], "{extra:?}");
        assert_eq!(status["failed"], 0, "{status}");
        assert!(
            status["counters"]["retries"].as_u64().unwrap_or(0) >= 1,
            "the 500 was retried: {status}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_vanishing_before_its_get_loses_none_of_the_others() {
    let (paths, status) = one_batch(404, &[]).await;
    let mut expected = queued_order();
    let bad = expected.remove(BAD);
    expected.push(bad);
    assert_eq!(paths, expected);
    assert_eq!(status["failed"], 0, "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_credentials_cost_one_request_not_one_per_file_in_flight() {
    let (nc, exapp, _dir) = serving_sync(&[]).await;

    nc.state().dav_down = true;
    for i in 0..FILES {
        nc.user_put("alice", &format!("Sync/{}", name(i)), format!("new {i}\n"));
    }
    nc.discard_webhook_jobs();
    for i in 0..FILES {
        let r = exapp
            .signed(reqwest::Method::POST, "/webhooks/NodeCreatedEvent", "alice")
            .body(created(&format!("Sync/{}", name(i)), i))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    // Nextcloud no longer takes serve's secret (an app re-registered elsewhere, say).
    {
        let mut state = nc.state();
        state.apps.get_mut("harpbridge").unwrap().secret = "another-secret".into();
        state.bruteforce_attempts = 0;
        state.dav_down = false;
    }
    // The worker retries within a few seconds of the 503s, then pauses for minutes.
    tokio::time::sleep(std::time::Duration::from_secs(4)).await;
    let refused: Vec<String> = nc
        .state()
        .received
        .iter()
        .filter(|r| r.status == 401)
        .map(|r| format!("{} {}", r.method, r.path))
        .collect();
    assert_eq!(
        nc.state().bruteforce_attempts,
        2,
        "one refused WebDAV request (the double counts 2 per refusal), not one per look in \
         flight: {refused:?}"
    );
    exapp.stop();
}

/// A delivery of `class` (`Created`, `Written`) for `alice`'s `path` with Nextcloud's file
/// id and the event's `time`.
fn delivery(class: &str, path: &str, id: u64, time: i64) -> String {
    format!(
        r#"{{"event":{{"node":{{"id":{id},"path":"\/alice\/files\/{path}"}},"class":"OCP\\Files\\Events\\Node\\Node{class}Event"}},"user":{{"uid":"alice","displayName":"alice"}},"time":{time},"authentication":[]}}"#,
        path = path.replace('/', "\\/")
    )
}

fn now_s() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// The GETs serve made of the files `Sync/f*`.
fn file_gets(nc: &FakeNextcloud) -> usize {
    nc.state()
        .received
        .iter()
        .filter(|r| r.method == "GET" && r.path.contains("/Sync/f"))
        .count()
}

/// The GETs serve made of `Sync/` as a tar stream, and the files each asked for.
fn tar_gets(nc: &FakeNextcloud) -> Vec<usize> {
    let mut sizes = nc
        .state()
        .received
        .iter()
        .filter(|r| r.method == "GET" && r.path.ends_with("/Sync"))
        .map(|r| {
            let (_, files) = url::form_urlencoded::parse(r.query.as_bytes())
                .find(|(k, _)| k == "files")
                .expect("a tar GET names its files");
            serde_json::from_str::<Vec<String>>(&files).unwrap().len()
        })
        .collect::<Vec<_>>();
    sizes.sort();
    sizes
}

async fn entries(exapp: &ExApp) -> u64 {
    exapp.api("/api/libraries", "admin").await["libraries"][0]["entries"]
        .as_u64()
        .unwrap_or(0)
}

/// `FILES` new files in `Sync/` whose webhooks Nextcloud has not delivered; serve, idle.
async fn undelivered_files() -> (FakeNextcloud, ExApp, tempfile::TempDir, Vec<u64>) {
    let (nc, exapp, dir) = serving_sync(&[]).await;
    let ids = (0..FILES)
        .map(|i| {
            nc.user_put("alice", &format!("Sync/{}", name(i)), format!("new {i}\n"))
                .fileid
        })
        .collect();
    nc.discard_webhook_jobs();
    (nc, exapp, dir, ids)
}

/// Nextcloud's webhook queue is ten minutes behind: the delivery of the first file arrives;
/// serve's status once idle.
async fn first_delivered_late(exapp: &ExApp, ids: &[u64]) -> serde_json::Value {
    let first = format!("Sync/{}", name(0));
    let (status, _) = exapp
        .deliver(
            "NodeCreatedEvent",
            "alice",
            delivery("Created", &first, ids[0], now_s() - 600),
        )
        .await;
    assert_eq!(status, 200);
    exapp.wait_idle().await
}

/// Every file the chain of the stopped serve in `data` records holds what was uploaded.
fn assert_recorded_as_uploaded(data: &std::path::Path) {
    for (path, bytes) in chain_files(data) {
        let i = (0..FILES).find(|i| name(*i) == path).unwrap();
        assert_eq!(
            String::from_utf8_lossy(&bytes),
            format!("new {i}\n"),
            "{path}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_delivery_reads_its_folder_ahead_and_the_later_deliveries_cost_no_get() {
    let (nc, exapp, dir, ids) = undelivered_files().await;
    let before = entries(&exapp).await;
    // Nextcloud's webhook queue is ten minutes behind: its first delivery arrives.
    let status = first_delivered_late(&exapp, &ids).await;
    assert_eq!(
        entries(&exapp).await - before,
        FILES as u64,
        "every new file of the folder is recorded, not only the one delivered: {status}"
    );
    assert_eq!(file_gets(&nc), 1, "the delivered file is read on its own");
    assert_eq!(
        tar_gets(&nc),
        [FILES - 1 - 32, 32],
        "the rest in tar streams of at most 32 files"
    );
    assert_eq!(status["counters"]["read_in_tar"], FILES as u64 - 1);
    assert_eq!(
        status["counters"]["read_ahead"],
        FILES as u64 - 1,
        "{status}"
    );

    // The rest of the backlog arrives: a NodeCreated and a NodeWritten per file.
    let time = now_s() - 600;
    for (i, id) in ids.iter().enumerate().skip(1) {
        let path = format!("Sync/{}", name(i));
        for class in ["Created", "Written"] {
            let body = delivery(class, &path, *id, time);
            let (status, _) = exapp
                .deliver(&format!("Node{class}Event"), "alice", body)
                .await;
            assert_eq!(status, 200);
        }
    }
    let status = exapp.wait_idle().await;
    assert_eq!(entries(&exapp).await - before, FILES as u64, "{status}");
    assert_eq!(
        (file_gets(&nc), tar_gets(&nc).len()),
        (1, 2),
        "the files read ahead are not read again for their deliveries: {status}"
    );
    assert_eq!(status["counters"]["answered"], FILES as u64 - 1, "{status}");
    assert_eq!(status["failed"], 0, "{status}");
    exapp.stop();
    // Each with what Nextcloud holds.
    assert_recorded_as_uploaded(dir.path());
    // Recorded in the folder's order after the delivered file, as the library owner's.
    let paths = chain_paths(dir.path());
    assert_eq!(paths[0], name(0));
    let mut rest = queued_order()[1..].to_vec();
    rest.sort();
    assert_eq!(paths[1..], rest[..]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_on_time_reads_nothing_ahead() {
    let (nc, exapp, _dir, ids) = undelivered_files().await;
    let before = entries(&exapp).await;
    let first = format!("Sync/{}", name(0));
    let (status, _) = exapp
        .deliver(
            "NodeCreatedEvent",
            "alice",
            delivery("Created", &first, ids[0], now_s()),
        )
        .await;
    assert_eq!(status, 200);
    let status = exapp.wait_idle().await;
    assert_eq!(entries(&exapp).await - before, 1, "{status}");
    assert_eq!(file_gets(&nc), 1);
    assert_eq!(status["counters"]["read_ahead"], 0, "{status}");
    exapp.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_gone_before_its_tar_stream_costs_a_few_requests_not_the_others() {
    let (nc, exapp, dir, ids) = undelivered_files().await;
    let before = entries(&exapp).await;
    // Nextcloud lists this file, but it is gone by the time the folder's files are read:
    // the tar stream naming it is refused (404) as a whole.
    let gone = 5;
    let gone_path = format!("Sync/{}", name(gone));
    nc.state()
        .fail_get
        .insert(("alice".into(), gone_path.clone()), (404, 1));
    let status = first_delivered_late(&exapp, &ids).await;
    assert_eq!(
        entries(&exapp).await - before,
        FILES as u64 - 1,
        "every file but the gone one: {status}"
    );
    assert_eq!(
        status["counters"]["read_ahead"],
        FILES as u64 - 2,
        "{status}"
    );
    let requests = file_gets(&nc) + tar_gets(&nc).len();
    assert!(
        requests <= 10,
        "the bundle with the gone file is halved until it is asked for alone: {requests} requests, {:?} tar streams",
        tar_gets(&nc)
    );
    let gone_gets = nc
        .state()
        .received
        .iter()
        .filter(|r| r.method == "GET" && r.path.ends_with(&name(gone)))
        .count();
    assert_eq!(gone_gets, 1, "the gone file, asked for alone");

    // Its own delivery comes (it is back): recorded then.
    let (status, _) = exapp
        .deliver(
            "NodeCreatedEvent",
            "alice",
            delivery("Created", &gone_path, ids[gone], now_s()),
        )
        .await;
    assert_eq!(status, 200);
    let status = exapp.wait_idle().await;
    assert_eq!(entries(&exapp).await - before, FILES as u64, "{status}");
    exapp.stop();
    assert_eq!(sorted(chain_paths(dir.path())), sorted(queued_order()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nextcloud_without_tar_streams_has_its_files_read_one_by_one() {
    let (nc, exapp, dir, ids) = undelivered_files().await;
    nc.state().no_tar = true;
    let before = entries(&exapp).await;
    let status = first_delivered_late(&exapp, &ids).await;
    assert_eq!(entries(&exapp).await - before, FILES as u64, "{status}");
    assert_eq!(file_gets(&nc), FILES, "each file read on its own");
    assert!(
        tar_gets(&nc).len() <= 2,
        "asked only until the first answer said no: {:?}",
        tar_gets(&nc)
    );
    assert_eq!(status["counters"]["read_in_tar"], 0, "{status}");
    exapp.stop();
    assert_recorded_as_uploaded(dir.path());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_refused_at_a_tar_stream_are_not_tried_again_file_by_file() {
    let (nc, exapp, _dir) = serving_sync(&[]).await;
    // Every file's delivery waits in one batch (WebDAV down meanwhile): their looks go a
    // tar stream a bundle, after the first look, alone.
    nc.state().dav_down = true;
    for i in 0..FILES {
        nc.user_put("alice", &format!("Sync/{}", name(i)), format!("new {i}\n"));
    }
    nc.discard_webhook_jobs();
    for i in 0..FILES {
        let path = format!("Sync/{}", name(i));
        let (status, _) = exapp
            .deliver("NodeCreatedEvent", "alice", created(&path, i))
            .await;
        assert_eq!(status, 200);
    }
    {
        let mut state = nc.state();
        state.secret_at_tar = Some("another-secret".into());
        state.bruteforce_attempts = 0;
        state.received.clear();
        state.dav_down = false;
    }
    tokio::time::sleep(std::time::Duration::from_secs(4)).await;
    let state = nc.state();
    let refused: Vec<String> = state
        .received
        .iter()
        .filter(|r| r.status == 401)
        .map(|r| format!("{} {}?{}", r.method, r.path, r.query))
        .collect();
    assert!(
        !refused.is_empty() && refused.iter().all(|r| r.contains("files=")) && refused.len() <= 2,
        "the tar streams in flight, no file on its own after them: {refused:?}"
    );
    drop(state);
    exapp.stop();
}
