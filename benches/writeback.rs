//! `bench/writeback`: how fast peers' changes reach Nextcloud through `harpbridge serve`
//! (the real binary, against the Nextcloud test double), beside plain WebDAV PUTs of the same
//! bytes to the same double in the same run.
//!
//! An office node (in-process, on loopback) appends the changes; serve pulls them and writes
//! them back. In phases 1 and 2 the versions are ones serve already holds (it read them from
//! Nextcloud in its initial scan), so those figures are write-back's own cost (plan,
//! lost-update check, SHA-256, streaming PUT, mirror), not block transfer's; phase 3 adds the
//! transfer.
//!
//! Phases (each prints a line):
//! 1. small files: the office puts N copies of N distinct 4 KiB files (new paths); time from
//!    the office's append until all N are in Nextcloud (files/s);
//! 2. a large file: one copy of a large file (chunked upload above 64 MiB); MB/s;
//! 3. a large file only the office has: fetched over `/harp/blocks/1`, then written (MB/s
//!    from the office's append to the file in Nextcloud);
//! 4. baselines: the same N small files, then the large file, PUT one after another straight
//!    to the double with reqwest (files/s, MB/s).
//!
//! Ends with one JSON line, also written to `bench/out/writeback.json`. Under
//! `cargo test --all-targets` (no `--bench` argument) it runs a small smoke version.

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use harpbridge::chain::{ChainPath, ContentId, LibraryId, Op};
use serde_json::{json, Value};
use support::files::Content;
// The office node that dials serve.
use support::swarm::TestNode as Office;
use support::{ExApp, ExAppOptions, ExAppSpec, FakeNextcloud};

struct Sizes {
    small_files: usize,
    big_mib: u64,
}

const SMALL: usize = 4096;

fn small_bytes(i: usize) -> Vec<u8> {
    let mut x = (i as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    (0..SMALL)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let sizes = if full {
        Sizes {
            small_files: 2_000,
            big_mib: 192,
        }
    } else {
        Sizes {
            small_files: 20,
            big_mib: 8,
        }
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
        let _ = std::fs::write("bench/out/writeback.json", format!("{result}\n"));
    }
}

impl Office {
    fn import(&self, lib: LibraryId, pieces: impl Iterator<Item = bytes::Bytes>) -> ContentId {
        let mut writer = self.content.writer(lib);
        for piece in pieces {
            writer.write(&piece).unwrap();
        }
        writer.finish().unwrap().id.into()
    }
}

/// The office imports a generated `len`-byte file (from `seed`) and puts it at `name`; MB/s
/// from its append until the file is whole in Nextcloud.
async fn write_back_large(
    office: &Office,
    nc: &FakeNextcloud,
    lib: LibraryId,
    name: &str,
    seed: u64,
    len: u64,
) -> f64 {
    let content = office.import(lib, Content::Generated { seed, len }.pieces(1 << 20));
    let t = Instant::now();
    office
        .publish(
            lib,
            vec![Op::Put {
                path: ChainPath::new(name).unwrap(),
                size: len,
                mtime_ms: 1_700_000_000_000,
                content,
                nextcloud: None,
            }],
        )
        .await;
    wait_for(&format!("{name} in Nextcloud"), || {
        nc.file("alice", &format!("Bench/{name}"))
            .and_then(|f| f.content)
            .is_some_and(|c| c.len() == len)
    })
    .await;
    len as f64 / t.elapsed().as_secs_f64() / 1e6
}

async fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(240);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn run(sizes: &Sizes) -> Value {
    let nc = FakeNextcloud::start().await;
    nc.user_mkdir("alice", "Bench");
    nc.user_mkdir("alice", "Bench/small");
    for i in 0..sizes.small_files {
        nc.user_put("alice", &format!("Bench/small/f{i:05}"), small_bytes(i));
    }
    let big = sizes.big_mib << 20;
    nc.user_put_generated("alice", "Bench/big.bin", 7, big);
    nc.discard_webhook_jobs();
    let dir = tempfile::tempdir().unwrap();
    let mut options = ExAppOptions::new(&nc.url, dir.path());
    options.extra_args = vec!["--library".into(), "alice:/Bench".into()];
    options.log = "warn,harpbridge::cli=info".into();
    let exapp = ExApp::start(options);
    let spec = ExAppSpec::new("harpbridge", &exapp.options.secret, exapp.target());
    assert_eq!(nc.register(&spec).await.exit_code, 0);
    let lib: LibraryId = exapp.wait_libraries(1).await.remove(0).parse().unwrap();

    // The office pairs and pulls the library.
    let office = Office::dialling(vec![exapp.swarm_addr().await.1]).await;
    let office_id = office.id.peer_id().to_base58();
    while exapp.peer(&office_id, "admin").await.is_none() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let response = exapp
        .signed(
            reqwest::Method::POST,
            &format!("/api/admin/peers/{office_id}/pair"),
            "admin",
        )
        .json(&json!({"libraries": [lib.to_hex()]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let chain = office.chain.clone();
    wait_for("the office to pull the library", || {
        chain
            .tree(&lib)
            .is_ok_and(|t| t.items.contains_key("big.bin"))
    })
    .await;

    // 1. Small files.
    let mut ops = vec![Op::Mkdir {
        path: ChainPath::new("copies").unwrap(),
    }];
    for i in 0..sizes.small_files {
        let content = office.import(lib, std::iter::once(small_bytes(i).into()));
        ops.push(Op::Put {
            path: ChainPath::new(&format!("copies/f{i:05}")).unwrap(),
            size: SMALL as u64,
            mtime_ms: 1_700_000_000_000,
            content,
            nextcloud: None,
        });
    }
    let count_copies = |nc: &FakeNextcloud| {
        let state = nc.state();
        state.user_files["alice"]
            .nodes
            .range("Bench/copies/".to_owned()..)
            .take_while(|(p, _)| p.starts_with("Bench/copies/"))
            .count()
    };
    let t = Instant::now();
    office.publish(lib, ops).await;
    wait_for("the copies in Nextcloud", || {
        count_copies(&nc) == sizes.small_files
    })
    .await;
    let small_secs = t.elapsed().as_secs_f64();
    let small_rate = sizes.small_files as f64 / small_secs;
    println!(
        "small files: {} × 4 KiB written back at {small_rate:.0} files/s ({small_secs:.2} s from the office's append)",
        sizes.small_files
    );

    // 2. A large file.
    let big_mb_s = write_back_large(&office, &nc, lib, "big-copy.bin", 7, big).await;
    println!(
        "large file: {} MiB written back at {big_mb_s:.0} MB/s (SHA-256, then PUT; chunked above 64 MiB)",
        sizes.big_mib
    );
    // 3. A large file only the office has: serve fetches its blocks (/harp/blocks/1 on
    // loopback), then writes it back.
    let fetched_mb_s = write_back_large(&office, &nc, lib, "fetched.bin", 8, big).await;
    println!(
        "fetched then written: {} MiB from the office's append to Nextcloud at {fetched_mb_s:.0} MB/s",
        sizes.big_mib
    );
    let status = exapp.api("/api/ingest", "admin").await;
    assert_eq!(status["writeback"]["pending"], 0, "{status}");
    let peak_rss_mib = exapp.peak_rss_kib() / 1024;

    // 4. Baselines: the same PUTs straight to the double, one after another.
    let client = reqwest::Client::new();
    let auth = STANDARD.encode(format!("alice:{}", exapp.options.secret));
    let put = |path: String, body: reqwest::Body| {
        client
            .put(format!("{}/remote.php/dav/files/alice/{path}", nc.url))
            .header("authorization-app-api", &auth)
            .header("ex-app-id", &exapp.options.app_id)
            .header("ex-app-version", &exapp.options.version)
            .header("aa-version", support::AA_VERSION)
            .body(body)
    };
    nc.user_mkdir("alice", "Bench/raw");
    let t = Instant::now();
    for i in 0..sizes.small_files {
        let r = put(format!("Bench/raw/f{i:05}"), small_bytes(i).into())
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{}", r.status());
    }
    let raw_small_rate = sizes.small_files as f64 / t.elapsed().as_secs_f64();
    let big_bytes = Content::Generated { seed: 7, len: big }.to_vec();
    let t = Instant::now();
    let r = put("Bench/raw-big.bin".into(), big_bytes.into())
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    let raw_big_mb_s = big as f64 / t.elapsed().as_secs_f64() / 1e6;
    println!("baseline: plain WebDAV PUTs to the double: {raw_small_rate:.0} small files/s, large file {raw_big_mb_s:.0} MB/s");
    nc.discard_webhook_jobs();
    office.node.shutdown().await;
    exapp.stop();
    json!({
        "bench": "writeback",
        "small_files": sizes.small_files,
        "small_files_per_s": small_rate,
        "large_mib": sizes.big_mib,
        "large_mb_s": big_mb_s,
        "fetched_then_written_mb_s": fetched_mb_s,
        "exapp_peak_rss_mib": peak_rss_mib,
        "baseline": {"plain_put_small_files_per_s": raw_small_rate, "plain_put_large_mb_s": raw_big_mb_s},
    })
}
