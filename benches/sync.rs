//! `bench/sync`: how fast a whole chain moves between two nodes over `/harp/sync/1`.
//!
//! Node A holds a library of N entries (default 1,000,000; B is a member), node B holds
//! nothing; B dials A over loopback TCP and pulls until its chain equals A's. Figures:
//!
//! 1. p2p sync, entries/s, from the dial to B holding every entry (verified: hash links,
//!    signatures, membership; committed in batches of [`P2pConfig::sync_batch`]);
//! 2. baseline, same run: the same pull without a network (`missing_batch_for_vector` +
//!    `insert_remote` store to store, same batch size), the chain's own ceiling;
//! 3. baseline, same run: a raw TCP copy over loopback of the same number of bytes as the
//!    entries' encodings.
//!
//! Ends with one JSON line, also written to `bench/out/sync.json`. Under
//! `cargo test --all-targets` (no `--bench` argument) it runs a 3,000-entry smoke version
//! that checks the two chains end equal.

use std::time::{Duration, Instant};

use harpbridge::chain::{ChainPath, ChainStore, ContentId, LibraryId, Op};
use harpbridge::content::{ContentStore, StoreOptions};
use harpbridge::identity::DeviceIdentity;
use harpbridge::p2p::{Node, NodeHandle, P2pConfig};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Entries per durable commit while A's chain is built.
const BUILD_BATCH: usize = 1000;

fn op(i: u64) -> Op {
    let mut content = [0u8; 32];
    content[..8].copy_from_slice(&i.to_be_bytes());
    Op::Put {
        path: ChainPath::new(&format!("dir-{}/file-{}.txt", i % 97, i % 10_007))
            .expect("a valid path"),
        size: i * 1000,
        mtime_ms: i as i64,
        content: ContentId(content),
        nextcloud: None,
    }
}

struct Side {
    id: DeviceIdentity,
    chain: ChainStore,
    content: ContentStore,
}

fn open(dir: &std::path::Path, secret: u8) -> Side {
    std::fs::create_dir_all(dir).expect("a work directory");
    let id = DeviceIdentity::from_secret([secret; 32]);
    let database = harpbridge::db::open(dir).expect("the database");
    let chain = ChainStore::open(database.clone()).expect("the chain");
    let content = ContentStore::open(database, dir, StoreOptions::default()).expect("content");
    Side { id, chain, content }
}

async fn start(side: &Side, config: P2pConfig) -> NodeHandle {
    Node::start(config, &side.id, side.chain.clone(), side.content.clone())
        .await
        .expect("the node starts")
}

fn rate(n: usize, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64()
}

/// Copies `bytes` over a loopback TCP connection; returns MB/s.
async fn raw_tcp(bytes: usize) -> f64 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let reader = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.expect("accept");
        let mut buf = vec![0u8; 1 << 20];
        let mut got = 0usize;
        loop {
            let n = s.read(&mut buf).await.expect("read");
            if n == 0 {
                break got;
            }
            got += n;
        }
    });
    let started = Instant::now();
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let chunk = vec![0x5au8; 1 << 20];
    let mut left = bytes;
    while left > 0 {
        let n = left.min(chunk.len());
        s.write_all(&chunk[..n]).await.expect("write");
        left -= n;
    }
    s.shutdown().await.expect("shutdown");
    let got = reader.await.expect("reader");
    assert_eq!(got, bytes);
    bytes as f64 / 1e6 / started.elapsed().as_secs_f64()
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let n: usize = std::env::var("HB_SYNC_ENTRIES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if full { 1_000_000 } else { 3_000 });
    let work = tempfile::Builder::new()
        .prefix("harpbridge-bench-sync-")
        .tempdir_in(if full { "bench/out" } else { "target" })
        .or_else(|_| tempfile::tempdir())
        .expect("a work directory");
    let mut config = P2pConfig {
        listen: vec!["/ip4/127.0.0.1/tcp/0".parse().expect("multiaddr")],
        mdns: false,
        ..P2pConfig::default()
    };
    if let Some(b) = std::env::var("HB_SYNC_BATCH")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        config.sync_batch = b;
    }
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "sync bench: {n} entries, batches of {}, load average {}",
        config.sync_batch,
        load.split_whitespace().next().unwrap_or("?")
    );

    // A's library: genesis, B added, then N entries.
    let a = open(&work.path().join("a"), 1);
    let b = open(&work.path().join("b"), 2);
    let (lib, _) = a
        .chain
        .create_library(a.id.signing_key(), "a")
        .expect("a library");
    a.chain
        .append(
            &lib,
            a.id.signing_key(),
            Op::AddDevice {
                device: b.id.device_key(),
                name: "b".into(),
            },
        )
        .expect("B added");
    let started = Instant::now();
    let mut i = 0u64;
    while (i as usize) < n {
        let k = BUILD_BATCH.min(n - i as usize) as u64;
        let ops = (i..i + k).map(op).collect();
        i += a
            .chain
            .append_batch(&lib, a.id.signing_key(), ops)
            .expect("append")
            .len() as u64;
    }
    let total = a.chain.len(&lib).expect("len");
    println!(
        "built A's chain: {total} entries in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    // Baseline: the same pull, store to store, no network.
    let c = open(&work.path().join("c"), 3);
    let (in_process, bytes) = pull_in_process(&a.chain, &c.chain, &lib, config.sync_batch);
    assert_eq!(c.chain.heads(&lib).ok(), a.chain.heads(&lib).ok());
    let in_process_rate = rate(total, in_process);
    println!(
        "baseline, no network: {in_process_rate:.0} entries/s ({:.1} s; {:.1} MB of entries)",
        in_process.as_secs_f64(),
        bytes as f64 / 1e6
    );
    drop(c);
    let tcp_mb_s = raw_tcp(bytes).await;
    println!(
        "baseline, raw TCP copy of those bytes: {tcp_mb_s:.0} MB/s ({:.0} entries/s if only bytes moved)",
        tcp_mb_s * 1e6 / (bytes as f64 / total as f64)
    );

    // p2p: B dials A and pulls everything.
    let node_a = start(&a, config.clone()).await;
    let node_b = start(&b, config.clone()).await;
    let addr = node_a.listen_addrs()[0]
        .clone()
        .with(libp2p::multiaddr::Protocol::P2p(node_a.peer_id()));
    let started = Instant::now();
    node_b.dial(addr).await.expect("dial");
    let deadline = Duration::from_secs(if full { 600 } else { 120 });
    loop {
        if b.chain.len(&lib).unwrap_or(0) == total {
            break;
        }
        assert!(
            started.elapsed() < deadline,
            "sync did not finish in {deadline:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let p2p = started.elapsed();
    assert_eq!(b.chain.heads(&lib).ok(), a.chain.heads(&lib).ok());
    let p2p_rate = rate(total, p2p);
    println!(
        "p2p sync over loopback TCP: {p2p_rate:.0} entries/s ({:.1} s, {:.2} of the no-network rate)",
        p2p.as_secs_f64(),
        p2p_rate / in_process_rate
    );
    node_b.shutdown().await;
    node_a.shutdown().await;

    let out = json!({
        "bench": "sync",
        "entries": total,
        "batch": config.sync_batch,
        "p2p_tcp_entries_per_s": p2p_rate.round(),
        "p2p_seconds": p2p.as_secs_f64(),
        "ratio_to_no_network": p2p_rate / in_process_rate,
        "entry_mb": bytes as f64 / 1e6,
        "baseline": {
            "no_network_entries_per_s": in_process_rate.round(),
            "raw_tcp_mb_per_s": tcp_mb_s.round(),
        },
    });
    println!("{out}");
    if full {
        std::fs::create_dir_all("bench/out").expect("bench/out");
        std::fs::write("bench/out/sync.json", format!("{out}\n")).expect("bench/out/sync.json");
    }
}

/// Pulls `lib` from `from` into `to` batch by batch, as a sync server would answer; returns
/// the time taken and the bytes of the entries' encodings.
fn pull_in_process(
    from: &ChainStore,
    to: &ChainStore,
    lib: &LibraryId,
    batch: u32,
) -> (Duration, usize) {
    let started = Instant::now();
    let mut bytes = 0usize;
    loop {
        let have = to.version_vector(lib).unwrap_or_default();
        let (entries, _) = from
            .missing_batch_for_vector(lib, &have, batch as usize)
            .expect("a batch");
        if entries.is_empty() {
            break;
        }
        bytes += entries.iter().map(|e| e.to_bytes().len()).sum::<usize>();
        to.insert_remote(lib, entries).expect("insert");
    }
    (started.elapsed(), bytes)
}
