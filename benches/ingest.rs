//! `bench/ingest`: webhook acknowledgement and ingest rates of the real binary against the
//! Nextcloud test double, beside raw BLAKE3 and SHA3-256 speed measured in the same run.
//!
//! Phases (each prints a line):
//! 1. acknowledged deliveries/s and p50/p99 acknowledgement latency at 1, 8 and 64
//!    concurrent senders (Nextcloud's WebDAV is held down meanwhile, so the worker waits
//!    and only the receiver and the durable queue are measured);
//! 2. draining that backlog once Nextcloud is back (events/s: PROPFIND + GET each, content
//!    unchanged, so no entry);
//! 3. end to end: deliveries for new small files (8 senders) until their chain entries exist
//!    (entries/s); at the end again with `--ingest-in-flight 1`, the worker one event at a
//!    time with one commit each, as it was before it looked ahead (the baseline);
//! 4. content ingest of one large file, event to entry (MB/s);
//! 5. baselines: BLAKE3 and SHA3-256 over 1 MiB buffers on one core.
//!
//! `INGEST_NEW_FILES` and `INGEST_BIG_MIB` make a quick run smaller (2,000 and 1,024 by
//! default). Ends with one JSON line, also written to `bench/out/ingest.json`. Under
//! `cargo test --all-targets` (no `--bench` argument) it runs a small smoke version.

#[path = "../tests/support/mod.rs"]
mod support;

use std::sync::Arc;

use futures_util::StreamExt;
use std::time::Instant;

use serde_json::{json, Value};
use sha3::Digest;
use support::{ExApp, ExAppOptions, ExAppSpec, FakeNextcloud};

struct Sizes {
    acks: [usize; 3],
    new_files: usize,
    big_mib: u64,
    hash_mib: usize,
}

fn body(uid: &str, path: &str, n: u64) -> String {
    format!(
        r#"{{"event":{{"node":{{"id":{n},"path":"\/{uid}\/files\/{path}"}},"class":"OCP\\Files\\Events\\Node\\NodeWrittenEvent"}},"user":{{"uid":"{uid}","displayName":"{uid}"}},"time":{n},"authentication":[]}}"#,
        path = path.replace('/', "\\/")
    )
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// Sends `total` deliveries from `senders` concurrent tasks; returns (acks/s, p50 ms, p99 ms).
async fn ack_phase(exapp: &ExApp, senders: usize, total: usize, offset: u64) -> (f64, f64, f64) {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(senders)
        .build()
        .unwrap();
    let url = format!("{}/webhooks/NodeWrittenEvent", exapp.base_url());
    let auth = {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(format!("alice:{}", exapp.options.secret))
    };
    let started = Instant::now();
    let mut tasks = Vec::new();
    for s in 0..senders {
        let (client, url, auth) = (client.clone(), url.clone(), auth.clone());
        let count = total / senders;
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(count);
            for i in 0..count {
                let n = offset + (s * count + i) as u64;
                let t = Instant::now();
                let r = client
                    .post(&url)
                    .header("EX-APP-ID", "harpbridge")
                    .header("EX-APP-VERSION", "0.1.0")
                    .header("AUTHORIZATION-APP-API", &auth)
                    .body(body("alice", "Bench/hot.txt", n))
                    .send()
                    .await
                    .expect("delivery");
                assert_eq!(r.status(), 200);
                let _ = r.bytes().await;
                latencies.push(t.elapsed().as_secs_f64() * 1000.0);
            }
            latencies
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let secs = started.elapsed().as_secs_f64();
    all.sort_by(|a, b| a.total_cmp(b));
    (
        all.len() as f64 / secs,
        percentile(&all, 0.5),
        percentile(&all, 0.99),
    )
}

/// Deliveries in flight in phase 3: enough that acknowledging them (an fsync'd queue
/// commit each round) does not bound what is measured, the worker.
const SENDERS: usize = 8;

/// Phase 3: `count` new small files in `folder`, one delivery each, sent by [`SENDERS`]
/// tasks as fast as they are acknowledged; entries/s from the first delivery to the last
/// entry.
async fn new_files(nc: &FakeNextcloud, exapp: &ExApp, folder: &str, count: usize, id: u64) -> f64 {
    nc.user_mkdir("alice", folder);
    for i in 0..count {
        nc.user_put(
            "alice",
            &format!("{folder}/f{i:05}.txt"),
            format!("new file {i}\n"),
        );
    }
    nc.discard_webhook_jobs();
    exapp.wait_idle().await;
    let appended_before = counter(exapp, "entries_appended").await;
    let t = Instant::now();
    futures_util::stream::iter(0..count)
        .map(|i| async move {
            let r = exapp
                .signed(reqwest::Method::POST, "/webhooks/NodeCreatedEvent", "alice")
                .body(body(
                    "alice",
                    &format!("{folder}/f{i:05}.txt"),
                    id + i as u64,
                ))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
        })
        .buffer_unordered(SENDERS)
        .collect::<Vec<()>>()
        .await;
    exapp.wait_idle().await;
    let appended = counter(exapp, "entries_appended").await - appended_before;
    assert!(
        appended >= count as u64,
        "{appended} entries for {count} new files"
    );
    appended as f64 / t.elapsed().as_secs_f64()
}

async fn counter(exapp: &ExApp, name: &str) -> u64 {
    exapp.api("/api/ingest", "admin").await["counters"][name]
        .as_u64()
        .unwrap_or(0)
}

fn hash_rate(mib: usize) -> (f64, f64) {
    let buf: Vec<u8> = (0..1 << 20)
        .map(|i: u32| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let t = Instant::now();
    let mut h = blake3::Hasher::new();
    for _ in 0..mib {
        h.update(&buf);
    }
    std::hint::black_box(h.finalize());
    let blake3 = (mib << 20) as f64 / t.elapsed().as_secs_f64() / 1e6;
    let t = Instant::now();
    let mut h = sha3::Sha3_256::new();
    for _ in 0..mib {
        h.update(&buf);
    }
    std::hint::black_box(h.finalize());
    let sha3 = (mib << 20) as f64 / t.elapsed().as_secs_f64() / 1e6;
    (blake3, sha3)
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let sizes = if full {
        Sizes {
            acks: [3_000, 10_000, 20_000],
            new_files: 2_000,
            big_mib: 1024,
            hash_mib: 512,
        }
    } else {
        Sizes {
            acks: [50, 80, 128],
            new_files: 20,
            big_mib: 8,
            hash_mib: 8,
        }
    };
    // Quick runs: fewer new files, a smaller large file.
    let env = |name: &str| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
    };
    let sizes = Sizes {
        new_files: env("INGEST_NEW_FILES").map_or(sizes.new_files, |n| n as usize),
        big_mib: env("INGEST_BIG_MIB").unwrap_or(sizes.big_mib),
        ..sizes
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let result = runtime.block_on(run(&sizes));
    println!("{result}");
    if full {
        let _ = std::fs::create_dir_all("bench/out");
        let _ = std::fs::write("bench/out/ingest.json", format!("{result}\n"));
    }
}

async fn run(sizes: &Sizes) -> Value {
    let nc = Arc::new(FakeNextcloud::start().await);
    nc.user_mkdir("alice", "Bench");
    nc.user_put("alice", "Bench/hot.txt", "a file that does not change");
    nc.discard_webhook_jobs();
    let dir = tempfile::tempdir().unwrap();
    let mut options = ExAppOptions::new(&nc.url, dir.path());
    options.extra_args = vec!["--library".into(), "alice:/Bench".into()];
    options.log = "warn,harpbridge::cli=info,harpbridge::engine::worker=debug".into();
    let exapp = ExApp::start(options);
    let spec = ExAppSpec::new("harpbridge", &exapp.options.secret, exapp.target());
    assert_eq!(nc.register(&spec).await.exit_code, 0);
    exapp.wait_libraries(1).await;

    // 1. Acknowledgements, with the worker held back.
    nc.state().dav_down = true;
    let mut acks = serde_json::Map::new();
    let mut offset = 1_000_000u64;
    for (senders, total) in [1usize, 8, 64].into_iter().zip(sizes.acks) {
        let (rate, p50, p99) = ack_phase(&exapp, senders, total, offset).await;
        offset += total as u64;
        println!("acks, {senders:>2} senders: {rate:>8.0} deliveries/s, p50 {p50:.2} ms, p99 {p99:.2} ms ({total} deliveries)");
        acks.insert(
            format!("senders_{senders}"),
            json!({"deliveries_per_s": rate, "p50_ms": p50, "p99_ms": p99, "deliveries": total}),
        );
    }

    // 2. The backlog drains once Nextcloud is back.
    let backlog = exapp.api("/api/ingest", "admin").await["backlog"]
        .as_u64()
        .unwrap_or(0);
    let processed_before = counter(&exapp, "processed").await;
    let coalesced_before = counter(&exapp, "coalesced").await;
    nc.state().dav_down = false;
    let t = Instant::now();
    exapp.wait_idle().await;
    let secs = t.elapsed().as_secs_f64();
    let read = counter(&exapp, "processed").await - processed_before;
    let coalesced = counter(&exapp, "coalesced").await - coalesced_before;
    let drain_rate = backlog as f64 / secs;
    println!("drain: backlog of {backlog} events about one file cleared at {drain_rate:.0} events/s ({read} read over WebDAV, {coalesced} coalesced)");

    // 3. New files: delivery to chain entry.
    let e2e_rate = new_files(&nc, &exapp, "Bench/new", sizes.new_files, 5_000_000).await;
    println!(
        "end to end: {} new files, delivery to chain entry, {e2e_rate:.0} entries/s",
        sizes.new_files
    );

    // 4. One large file, event to entry.
    let big = sizes.big_mib << 20;
    nc.user_put_generated("alice", "Bench/big.bin", 99, big);
    nc.discard_webhook_jobs();
    let t = Instant::now();
    let r = exapp
        .signed(reqwest::Method::POST, "/webhooks/NodeWrittenEvent", "alice")
        .body(body("alice", "Bench/big.bin", 9_000_000))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    exapp.wait_idle().await;
    let ingest_mb_s = big as f64 / t.elapsed().as_secs_f64() / 1e6;
    let peak_rss_mib = exapp.peak_rss_kib() / 1024;
    println!("content ingest: {} MiB at {ingest_mb_s:.0} MB/s (download from the double, FastCDC, BLAKE3, block files, entry); ExApp peak RSS {peak_rss_mib} MiB", sizes.big_mib);
    let options = exapp.options.clone();
    exapp.stop();

    // 3 again, the baseline: the same serve one event at a time, one commit each (the
    // worker before it looked ahead), `--ingest-in-flight 1`.
    let mut options = options;
    options
        .extra_args
        .extend(["--ingest-in-flight".into(), "1".into()]);
    let exapp = ExApp::start(options);
    nc.state()
        .apps
        .get_mut("harpbridge")
        .expect("registered")
        .target = exapp.target();
    exapp.wait_libraries(1).await;
    exapp.wait_idle().await;
    let sequential_rate = new_files(&nc, &exapp, "Bench/seq", sizes.new_files, 7_000_000).await;
    println!(
        "baseline: the same, one event at a time (--ingest-in-flight 1): {sequential_rate:.0} entries/s"
    );
    exapp.stop();

    // 5. Baselines.
    let (blake3, sha3) = hash_rate(sizes.hash_mib);
    println!("baseline: BLAKE3 {blake3:.0} MB/s, SHA3-256 {sha3:.0} MB/s (one core)");
    json!({
        "bench": "ingest",
        "acks": acks,
        "drain_events_per_s": drain_rate,
        "end_to_end_entries_per_s": e2e_rate,
        "content_ingest_mb_s": ingest_mb_s,
        "content_ingest_mib": sizes.big_mib,
        "exapp_peak_rss_mib": peak_rss_mib,
        "baseline": {
            "blake3_mb_s": blake3,
            "sha3_256_mb_s": sha3,
            "end_to_end_sequential_entries_per_s": sequential_rate,
        },
        "end_to_end_ratio_to_sequential": e2e_rate / sequential_rate,
    })
}
