//! `bench/ingest-real`: the time from a WebDAV upload's response to its chain entry, against
//! the real Nextcloud 33.0.2 of `../shared/nextcloud/` with its dedicated webhook worker
//! (`occ background-job:worker -i 1` for webhook_listeners' jobs, as `up.sh` runs it).
//!
//! A user uploads 50 small files one after another into a library that `harpbridge serve`
//! (release build, registered on the `manual_install` daemon) keeps. For each, the clock
//! starts when the PUT's response arrives and stops when serve's library holds one more entry
//! (polled every 5 ms). Baseline from the same run: the PUT's own round trip.
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

use serde_json::{json, Value};
use support::real_nc::{entries_after, real, App};

const UPLOADS: usize = 50;

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
    options.extra_args = vec!["--library".into(), format!("{}:/Bench", user.name)];
    // Info level: logging every request at trace would be part of what is measured.
    options.extra_env.retain(|(k, _)| k != "RUST_LOG");
    options.extra_env.push(("RUST_LOG".into(), "info".into()));
    let exapp = app.serve_with(options);
    app.register_ok();
    app.remember_user(&user.name);
    exapp.wait_libraries(1).await;
    entries_after(&exapp, 0, &["put seed.txt"], Duration::from_secs(120)).await;
    exapp.wait_idle().await;

    let mut latencies = Vec::with_capacity(UPLOADS);
    let mut puts = Vec::with_capacity(UPLOADS);
    for i in 0..UPLOADS {
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
    let (min, max) = (latencies[0], latencies[UPLOADS - 1]);
    let (put50, put99) = (percentile(&puts, 50.0), percentile(&puts, 99.0));
    println!(
        "upload to chain entry (real Nextcloud 33.0.2, dedicated webhook worker, {UPLOADS} uploads): \
         p50 {p50:.0} ms, p99 {p99:.0} ms (min {min:.0}, max {max:.0})"
    );
    println!("baseline: the WebDAV PUT itself, p50 {put50:.0} ms, p99 {put99:.0} ms");
    println!("other ExApps' webhooks on this Nextcloud, sharing the worker: {others}");
    Some(json!({
        "bench": "ingest-real",
        "nextcloud": "33.0.2",
        "webhook_worker": "occ background-job:worker -i 1 (dedicated)",
        "uploads": UPLOADS,
        "nextcloud_url": nc.url,
        "other_exapp_webhooks": others,
        "upload_to_entry_ms": {"p50": p50, "p99": p99, "min": min, "max": max},
        "baseline": {"webdav_put_ms": {"p50": put50, "p99": put99}},
    }))
}
