//! A very large file and many small files, ingested from the test double with bounded
//! memory: the ExApp's peak RSS is reported and bounded, and the chain and the blocks
//! hold exactly what Nextcloud holds.
//!
//! Sizes: `HB_INGEST_BIG_MIB` (default 1024) and `HB_INGEST_SMALL_FILES` (default 10000).

mod support;

use std::io::Read;
use std::time::{Duration, Instant};

use harpbridge::chain::{ChainStore, TreeItem};
use harpbridge::content::{ContentStore, StoreOptions};
use support::files::Generator;
use support::{ExApp, ExAppOptions, ExAppSpec, FakeNextcloud};

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn small_content(i: u64) -> String {
    format!(
        "small file {i}: {}\n",
        "lorem ipsum ".repeat((i % 13) as usize)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_file_and_many_small_ones_with_bounded_memory() {
    let big = env_u64("HB_INGEST_BIG_MIB", 1024) << 20;
    let small = env_u64("HB_INGEST_SMALL_FILES", 10_000);
    let nc = FakeNextcloud::start().await;
    nc.user_mkdir("alice", "Big");
    nc.user_put_generated("alice", "Big/huge.bin", 42, big);
    nc.user_mkdir("alice", "Big/small");
    for i in 0..small {
        nc.user_put("alice", &format!("Big/small/f{i:05}.txt"), small_content(i));
    }
    nc.discard_webhook_jobs();

    let dir = tempfile::tempdir().unwrap();
    let mut options = ExAppOptions::new(&nc.url, dir.path());
    options.extra_args = vec!["--library".into(), "alice:/Big".into()];
    let exapp = ExApp::start(options);
    let rss_at_start = exapp.peak_rss_kib();
    let spec = ExAppSpec::new("harpbridge", &exapp.options.secret, exapp.target());
    assert_eq!(nc.register(&spec).await.exit_code, 0);
    let started = Instant::now();
    let ids = exapp.wait_libraries_for(1, Duration::from_secs(1200)).await;
    let took = started.elapsed();
    let peak = exapp.peak_rss_kib();
    let status = exapp.api("/api/ingest", "admin").await;
    println!(
        "ingested {} MiB + {small} small files in {:.1} s; ExApp peak RSS {} MiB (at start {} MiB)",
        big >> 20,
        took.as_secs_f64(),
        peak / 1024,
        rss_at_start / 1024
    );
    println!("scan: {}", status["scans"]);
    assert_eq!(
        status["scans"][&ids[0]]["files_ingested"],
        small + 1,
        "{status}"
    );
    // Memory is bounded by buffers, not by what was ingested.
    assert!(peak < 256 * 1024, "peak RSS {peak} KiB");
    exapp.stop();

    // Open what the ExApp left on disk and compare it with Nextcloud's files.
    let db = harpbridge::db::open(dir.path()).unwrap();
    let chain = ChainStore::open(db.clone()).unwrap();
    let content = ContentStore::open(db, dir.path(), StoreOptions::default()).unwrap();
    assert!(chain.verify().is_ok());
    let lib = chain.libraries()[0];
    let tree = chain.tree(&lib).unwrap();
    let file = |p: &str| match tree.items.get(p) {
        Some(TreeItem::File {
            content,
            size,
            nextcloud,
            ..
        }) => (*content, *size, nextcloud.clone()),
        other => panic!("{p}: {other:?}"),
    };
    assert_eq!(tree.files() as u64, small + 1);
    let (huge, size, nc_ref) = file("huge.bin");
    assert_eq!(size, big);
    assert_eq!(
        nc_ref.unwrap().fileid,
        nc.file("alice", "Big/huge.bin").unwrap().fileid
    );
    let mut reader = content.open_reader(&huge.into()).unwrap();
    let mut buf = vec![0u8; 1 << 20];
    for expected in Generator::new(42, big, 1 << 20) {
        reader.read_exact(&mut buf[..expected.len()]).unwrap();
        assert!(buf[..expected.len()] == expected[..], "huge.bin differs");
    }
    assert_eq!(reader.read(&mut buf).unwrap(), 0, "huge.bin is longer");
    for i in (0..small).step_by(97) {
        let (id, size, _) = file(&format!("small/f{i:05}.txt"));
        let mut text = String::new();
        content
            .open_reader(&id.into())
            .unwrap()
            .read_to_string(&mut text)
            .unwrap();
        assert_eq!(text, small_content(i));
        assert_eq!(size, text.len() as u64);
    }
}
