//! `bench/ingest-real`: harpbridge's ingest against the real Nextcloud 33.0.2 of
//! `../shared/nextcloud/` with its dedicated webhook worker (`occ background-job:worker -i 1`
//! for webhook_listeners' jobs, as `up.sh` runs it), `harpbridge serve` (release build)
//! registered on the `manual_install` daemon keeping one library.
//!
//! 1. **Latency.** A user uploads 50 small files (`HB_INGEST_REAL_UPLOADS`) one after
//!    another. For each, the clock starts when the PUT's response arrives and stops when
//!    serve's library holds one more entry (polled every 5 ms). Baseline from the same run:
//!    the PUT's own round trip.
//! 2. **Throughput.** The user uploads small files into one folder, 4 PUTs at a time, twice:
//!    - *live*: 1,000 files (`HB_INGEST_REAL_LIVE_FILES`); their webhooks come as
//!      Nextcloud's worker sends them during the upload. The last PUT's answer, the last
//!      delivery's arrival at serve and the last entry are timed: if the last entry follows
//!      the last delivery closely, serve keeps up and Nextcloud (its upload, its webhook
//!      worker) bounds the rate. The upload bounds this phase (a few files/s here), so more
//!      files would only make it longer;
//!    - *backlog*: 5,000 files (`HB_INGEST_REAL_FILES`, fewer for a smoke run) with
//!      Nextcloud's webhook worker stopped during the upload, then started:
//!      `end_to_end_entries_per_s` is files ÷ (worker started → last entry recorded), not
//!      bounded by how fast the files were uploaded. Nextcloud's worker delivers each
//!      upload's two webhooks (NodeCreated, NodeWritten) at its own pace, so the same run
//!      also gives files ÷ (worker started → last delivery arrived), the rate Nextcloud told
//!      serve about them, and `ratio_to_delivery`: how close serve stays to that. Above 1,
//!      serve recorded the files before Nextcloud had delivered their webhooks: it read
//!      ahead of late deliveries (`read_ahead` in `/api/ingest`). The periodic catch-up
//!      walk runs once an hour during the bench (`HB_INGEST_REAL_SCAN_SECS`), so that what
//!      is measured is the webhook path, not a walk that found the uploads first.
//!
//!    Baselines from the same run, of the same files from the same Nextcloud: plain
//!    sequential WebDAV GETs (a sample of 300), and parallel GETs with as many in flight as
//!    serve's worker uses (12), signed with AppAPI's headers as serve's are (a Basic-auth
//!    GET costs Nextcloud a password hash each); `ratio_to_parallel_get` is the backlog's
//!    entries/s over the parallel GETs' files/s. serve reads small files as tar streams of
//!    their folder, 32 to a request, so the same files read that way (bytes only, 12
//!    requests in flight) are the baseline of what this Nextcloud can serve at best:
//!    `ratio_to_tar_get`.
//!
//! Other ExApps registered on the same Nextcloud share that worker (their webhooks fire for
//! every change too): the JSON says how many webhooks they have. For a figure of harpbridge
//! alone, point it at a Nextcloud of its own: `HB_NC_PORT=8481 HB_NC_DIR=/tmp/nc-bench`.
//!
//! Prints p50/p99 (and min/max) in milliseconds, ends with one JSON line, written to
//! `bench/out/ingest-real.json` and added to `bench/out/ingest.json` (key `real_nextcloud`)
//! when that exists. Needs root (the real Nextcloud); under `cargo test --all-targets` (no
//! `--bench` argument) it does nothing.

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use harpbridge::appapi::client::NextcloudClient;
use harpbridge::backend::nextcloud::webdav::WebDav;
use harpbridge::config::Secret;
use serde_json::{json, Value};
use support::real_nc::{entries_after, real, App};

/// The worker's requests in flight (`harpbridge::engine`'s default `--ingest-in-flight`).
const IN_FLIGHT: usize = 12;
/// Files serve asks for in one tar request (`harpbridge::engine`'s bundles).
const TAR_FILES: usize = 32;
/// PUTs in flight while uploading, as a sync client does (Nextcloud's desktop client uses
/// up to 6; `up.sh` serves with 4 PHP workers).
const UPLOADERS: usize = 4;
/// Files fetched one at a time for the sequential baseline (a rate; all 5,000 would take
/// minutes).
const SEQUENTIAL_SAMPLE: usize = 300;

fn env_count(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .filter(|n: &usize| *n > 0)
        .unwrap_or(default)
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("ingest_real: run bench/ingest-real (needs the real Nextcloud and root)");
        return;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let Some(result) = runtime.block_on(run()) else {
        return;
    };
    println!("{result}");
    let _ = std::fs::create_dir_all("bench/out");
    let _ = std::fs::write("bench/out/ingest-real.json", format!("{result}\n"));
    if let Ok(text) = std::fs::read_to_string("bench/out/ingest.json") {
        if let Ok(mut ingest) = serde_json::from_str::<Value>(text.trim()) {
            ingest["real_nextcloud"] = result;
            let _ = std::fs::write("bench/out/ingest.json", format!("{ingest}\n"));
        }
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

async fn entries(exapp: &support::ExApp) -> u64 {
    let libraries = exapp.api("/api/libraries", "admin").await;
    libraries["libraries"][0]["entries"].as_u64().unwrap_or(0)
}

async fn run() -> Option<Value> {
    let nc = real()?;
    let _serial = support::real_nc::serial().await;
    nc.reset_bruteforce();
    let user = nc.user(false);
    user.mkdir("Bench").await;
    user.put("Bench/seed.txt", "seed").await;
    let dir = tempfile::tempdir().unwrap();
    let app = App::new(nc, "manual_install");
    let mut options = app.options(dir.path(), &nc.url);
    // The periodic catch-up walk (default every 300 s) would find much of the backlog
    // during its 5,000 uploads (about 14 minutes here) and record it before any webhook:
    // the figure would then be the walk's, not the webhook path's. It runs only once an
    // hour here unless `HB_INGEST_REAL_SCAN_SECS` says otherwise.
    let scan = std::env::var("HB_INGEST_REAL_SCAN_SECS").unwrap_or_else(|_| "3600".into());
    options.extra_args = vec![
        "--library".into(),
        format!("{}:/Bench", user.name),
        "--scan-interval".into(),
        scan,
    ];
    // Info level: logging every request at trace would be part of what is measured.
    // `HB_INGEST_REAL_LOG` sets another filter (e.g. the worker's per-batch timings at
    // debug) for finding where the time goes; serve's log is in `target/test-logs/`.
    let filter = std::env::var("HB_INGEST_REAL_LOG").unwrap_or_else(|_| "info".into());
    options.extra_env.retain(|(k, _)| k != "RUST_LOG");
    options.extra_env.push(("RUST_LOG".into(), filter));
    let exapp = app.serve_with(options);
    app.register_ok();
    app.remember_user(&user.name);
    exapp.wait_libraries(1).await;
    entries_after(&exapp, 0, &["put seed.txt"], Duration::from_secs(120)).await;
    exapp.wait_idle().await;

    let uploads = env_count("HB_INGEST_REAL_UPLOADS", 50);
    let files = env_count("HB_INGEST_REAL_FILES", 5_000);
    let live_files = env_count("HB_INGEST_REAL_LIVE_FILES", 1_000).min(files);
    let mut latencies = Vec::with_capacity(uploads);
    let mut puts = Vec::with_capacity(uploads);
    for i in 0..uploads {
        let before = entries(&exapp).await;
        let sent = Instant::now();
        user.put(&format!("Bench/upload-{i:02}.txt"), format!("upload {i}"))
            .await;
        let answered = Instant::now();
        let deadline = answered + Duration::from_secs(120);
        while entries(&exapp).await <= before {
            assert!(Instant::now() < deadline, "upload {i}: no entry in 120 s");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        latencies.push(answered.elapsed().as_secs_f64() * 1000.0);
        puts.push((answered - sent).as_secs_f64() * 1000.0);
    }
    let bulk = throughput(nc, &exapp, &user, live_files, files).await;
    // Other ExApps' webhooks share the one worker: each of these uploads also made a job
    // for each of them (3 s each to one that does not answer).
    let others = nc
        .occ_ok(&["webhook_listeners:list"])
        .lines()
        .filter_map(|l| l.split('|').nth(2).map(str::trim))
        .filter(|app_id| !app_id.is_empty() && *app_id != "appId" && *app_id != app.id)
        .count();
    app.unregister();
    exapp.stop();

    latencies.sort_by(f64::total_cmp);
    puts.sort_by(f64::total_cmp);
    let (p50, p99) = (percentile(&latencies, 50.0), percentile(&latencies, 99.0));
    let (min, max) = (latencies[0], latencies[uploads - 1]);
    let (put50, put99) = (percentile(&puts, 50.0), percentile(&puts, 99.0));
    println!(
        "upload to chain entry (real Nextcloud 33.0.2, dedicated webhook worker, {uploads} uploads): \
         p50 {p50:.0} ms, p99 {p99:.0} ms (min {min:.0}, max {max:.0})"
    );
    println!("baseline: the WebDAV PUT itself, p50 {put50:.0} ms, p99 {put99:.0} ms");
    println!("other ExApps' webhooks on this Nextcloud, sharing the worker: {others}");
    let e2e = bulk["end_to_end_entries_per_s"].as_f64().unwrap_or(0.0);
    let ratio = bulk["ratio_to_parallel_get"].as_f64().unwrap_or(0.0);
    Some(json!({
        "bench": "ingest-real",
        "nextcloud": "33.0.2",
        "webhook_worker": "occ background-job:worker -i 1 (dedicated)",
        "end_to_end_entries_per_s": e2e,
        "ratio_to_parallel_get": ratio,
        "ratio_to_tar_get": bulk["ratio_to_tar_get"],
        "ratio_to_delivery": bulk["ratio_to_delivery"],
        "throughput": bulk,
        "uploads": uploads,
        "nextcloud_url": nc.url,
        "other_exapp_webhooks": others,
        "upload_to_entry_ms": {"p50": p50, "p99": p99, "min": min, "max": max},
        "baseline": {
            "webdav_put_ms": {"p50": put50, "p99": put99},
            "sequential_get_files_per_s": bulk["baseline"]["sequential_get_files_per_s"],
            "parallel_get_files_per_s": bulk["baseline"]["parallel_get_files_per_s"],
            "tar_get_files_per_s": bulk["baseline"]["tar_get_files_per_s"],
        },
    }))
}

/// Deliveries serve accepted so far (queued, or known as duplicates).
fn deliveries(status: &Value) -> u64 {
    let c = &status["counters"];
    c["queued"].as_u64().unwrap_or(0) + c["duplicates"].as_u64().unwrap_or(0)
}

fn rate(count: usize, took: Duration) -> f64 {
    count as f64 / took.as_secs_f64().max(1e-9)
}

/// When serve had recorded `files` new files: the last delivery's and the last entry's
/// times since `start`, and the deliveries (each new file makes two: NodeCreated,
/// NodeWritten).
async fn watch(
    exapp: &support::ExApp,
    start: Instant,
    files: usize,
    base_entries: u64,
    base_deliveries: u64,
) -> (Duration, Duration, u64) {
    let mut last_delivery = Duration::ZERO;
    let mut delivered = 0u64;
    let mut last_entry = None;
    loop {
        let status = exapp.api("/api/ingest", "admin").await;
        let d = deliveries(&status) - base_deliveries;
        if d > delivered {
            delivered = d;
            last_delivery = start.elapsed();
        }
        if last_entry.is_none() && entries(exapp).await >= base_entries + files as u64 {
            last_entry = Some(start.elapsed());
        }
        if let Some(at) = last_entry {
            let quiet = start.elapsed().saturating_sub(last_delivery.max(at));
            if delivered >= 2 * files as u64 || quiet > Duration::from_secs(10) {
                return (last_delivery, at, delivered);
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(3600),
            "{files} files: not all recorded in an hour ({delivered} deliveries): {status}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Serve's entry and delivery counts once it is idle after making `folder`.
async fn settled(
    exapp: &support::ExApp,
    user: &support::real_nc::User,
    folder: &str,
) -> (u64, u64) {
    let before = entries(exapp).await;
    user.mkdir(folder).await;
    let deadline = Instant::now() + Duration::from_secs(120);
    while entries(exapp).await <= before {
        assert!(Instant::now() < deadline, "no entry for {folder}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    exapp.wait_idle().await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    (
        entries(exapp).await,
        deliveries(&exapp.api("/api/ingest", "admin").await),
    )
}

/// Uploads `files` small files into `folder`, [`UPLOADERS`] at a time; how long it took
/// since `start`.
async fn upload(
    user: &support::real_nc::User,
    folder: &str,
    files: usize,
    start: Instant,
) -> Duration {
    use futures_util::StreamExt;
    futures_util::stream::iter(0..files)
        .map(|i| async move {
            user.put(
                &format!("{folder}/f{i:05}.txt"),
                format!("{folder} file {i}\n"),
            )
            .await
        })
        .buffer_unordered(UPLOADERS)
        .collect::<Vec<_>>()
        .await;
    start.elapsed()
}

/// Phase 2: `files` small files uploaded at once; see the module docs.
async fn throughput(
    nc: &'static support::real_nc::RealNc,
    exapp: &support::ExApp,
    user: &support::real_nc::User,
    live_files: usize,
    files: usize,
) -> Value {
    use futures_util::StreamExt;
    // 2a. Live: deliveries as Nextcloud's worker sends them during the upload.
    let (base_entries, base_deliveries) = settled(exapp, user, "Bench/live").await;
    println!("throughput, live: uploading {live_files} small files, {UPLOADERS} PUTs at a time...");
    let start = Instant::now();
    let (uploaded, (last_delivery, last_entry, delivered)) = tokio::join!(
        upload(user, "Bench/live", live_files, start),
        watch(exapp, start, live_files, base_entries, base_deliveries)
    );
    let live = rate(live_files, last_entry);
    println!(
        "throughput, live: last PUT answered at {:.1} s ({:.1} files/s), last delivery arrived at {:.1} s \
         ({delivered} deliveries), last entry at {:.1} s: {live:.1} entries/s end to end",
        uploaded.as_secs_f64(),
        rate(live_files, uploaded),
        last_delivery.as_secs_f64(),
        last_entry.as_secs_f64()
    );
    let after_upload = |d: Duration| d.saturating_sub(uploaded).as_secs_f64() * 1000.0;
    println!(
        "throughput, live: after the last PUT, last delivery +{:.0} ms, last entry +{:.0} ms",
        after_upload(last_delivery),
        after_upload(last_entry),
    );
    let live_json = json!({
        "files": live_files,
        "end_to_end_entries_per_s": live,
        "upload_files_per_s": rate(live_files, uploaded),
        "deliveries": delivered,
        "last_put_s": uploaded.as_secs_f64(),
        "last_delivery_s": last_delivery.as_secs_f64(),
        "last_entry_s": last_entry.as_secs_f64(),
        "last_upload_to_last_delivery_ms": after_upload(last_delivery),
        "last_upload_to_last_entry_ms": after_upload(last_entry),
    });

    // 2b. Backlog: the upload first, with Nextcloud's webhook worker stopped; then the
    // worker sends what waits, and serve records it. Not bounded by the upload's speed.
    let (base_entries, base_deliveries) = settled(exapp, user, "Bench/backlog").await;
    println!("throughput, backlog: uploading {files} small files with Nextcloud's webhook worker stopped...");
    let workers = nc.stop_background_workers();
    upload(user, "Bench/backlog", files, Instant::now()).await;
    let start = Instant::now();
    drop(workers);
    let (last_delivery, last_entry, delivered) =
        watch(exapp, start, files, base_entries, base_deliveries).await;
    let e2e = rate(files, last_entry);
    let delivery_rate = delivered as f64 / last_delivery.as_secs_f64().max(1e-9);
    let delivered_files = rate(files, last_delivery);
    let ratio_to_delivery = e2e / delivered_files;
    println!(
        "throughput, backlog: worker started; last delivery at {:.1} s ({delivered} deliveries, \
         {delivery_rate:.1}/s), last entry at {:.1} s: {e2e:.1} entries/s end to end",
        last_delivery.as_secs_f64(),
        last_entry.as_secs_f64()
    );
    println!(
        "throughput, backlog: Nextcloud delivered the files' webhooks at {delivered_files:.1} files/s; \
         entries / deliveries = {ratio_to_delivery:.2}"
    );

    // Baselines: the same files from the same Nextcloud, as plain WebDAV GETs signed as
    // serve signs its own (AppAPI's headers naming the user: a Basic-auth GET would add
    // Nextcloud's password hashing to every request).
    let client = NextcloudClient::with_identity(
        &nc.url,
        &exapp.options.app_id,
        &exapp.options.version,
        "33.0.0",
        Secret::new(exapp.options.secret.clone()),
    )
    .expect("a client");
    let dav = &WebDav::new(client);
    let uid = user.name.as_str();
    let get = |i: usize| async move {
        let path = format!("Bench/backlog/f{i:05}.txt");
        let response = dav.get(uid, &path).await.expect("GET");
        response.bytes().await.expect("GET body").len()
    };
    let sample = files.min(SEQUENTIAL_SAMPLE);
    let t = Instant::now();
    for i in 0..sample {
        get(i).await;
    }
    let sequential = rate(sample, t.elapsed());
    let t = Instant::now();
    futures_util::stream::iter(0..files)
        .map(get)
        .buffer_unordered(IN_FLIGHT)
        .collect::<Vec<_>>()
        .await;
    let parallel = rate(files, t.elapsed());
    let ratio = e2e / parallel;
    println!(
        "baseline: WebDAV GETs of the same files, sequential {sequential:.1} files/s ({sample} files), \
         {IN_FLIGHT} in flight {parallel:.1} files/s; backlog end to end / parallel GETs = {ratio:.2}"
    );
    // And as serve reads them: the folder's tar stream, TAR_FILES names a request, as
    // many requests in flight; the bytes read, not unpacked or stored.
    let names: Vec<String> = (0..files).map(|i| format!("f{i:05}.txt")).collect();
    let tar = |chunk: &[String]| {
        let chunk = chunk.to_vec();
        async move {
            let names: Vec<&str> = chunk.iter().map(String::as_str).collect();
            let response = dav
                .get_tar(uid, "Bench/backlog", &names)
                .await
                .expect("tar GET")
                .expect("Nextcloud sends tar streams");
            response.bytes().await.expect("tar body").len()
        }
    };
    let t = Instant::now();
    futures_util::stream::iter(names.chunks(TAR_FILES))
        .map(tar)
        .buffer_unordered(IN_FLIGHT)
        .collect::<Vec<_>>()
        .await;
    let tar_rate = rate(files, t.elapsed());
    let ratio_to_tar = e2e / tar_rate;
    println!(
        "baseline: the same files as tar streams of the folder, {TAR_FILES} a request, {IN_FLIGHT} in flight \
         {tar_rate:.1} files/s; backlog end to end / tar GETs = {ratio_to_tar:.2}"
    );
    json!({
        "files": files,
        "uploaders": UPLOADERS,
        "end_to_end_entries_per_s": e2e,
        "ratio_to_parallel_get": ratio,
        "ratio_to_tar_get": ratio_to_tar,
        "ratio_to_delivery": ratio_to_delivery,
        "backlog": {
            "delivered_files_per_s": delivered_files,
            "deliveries": delivered,
            "deliveries_per_s": delivery_rate,
            "last_delivery_s": last_delivery.as_secs_f64(),
            "last_entry_s": last_entry.as_secs_f64(),
            "last_delivery_to_last_entry_ms": (last_entry.as_secs_f64() - last_delivery.as_secs_f64()) * 1000.0,
        },
        "live": live_json,
        "baseline": {
            "sequential_get_files_per_s": sequential,
            "sequential_sample": sample,
            "parallel_get_files_per_s": parallel,
            "parallel_in_flight": IN_FLIGHT,
            "tar_get_files_per_s": tar_rate,
            "tar_files_per_request": TAR_FILES,
        },
    })
}
