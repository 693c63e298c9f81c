//! `bench/transfer`: block transfer (`/harp/blocks/1`) of one large version between two
//! nodes on loopback, over TCP (noise + yamux) and over QUIC, beside a raw TCP copy of the
//! same bytes measured in the same run (and Syncthing, when `bench/syncthing-baseline` is
//! there: see the script).
//!
//! Phases (each prints a line):
//! 1. node A ingests a generated file (default 512 MiB, `HB_BENCH_MIB`);
//! 2. node B, dialled to A over TCP only, fetches it (every block verified and fsync'd into
//!    B's store); then node C over QUIC only; each reports MB/s and B's / C's bytes in;
//! 3. baseline: the same bytes as a plain file, sent over a plain loopback TCP socket into a
//!    file that is fsync'd at the end (what `nc` + `sync` would do), in the same run.
//!
//! Ends with one JSON line, also written to `bench/out/transfer.json`. MB = 10^6 bytes.
//! Under `cargo test --all-targets` (no `--bench` argument) it runs an 8 MiB smoke version.

#[path = "../tests/support/swarm.rs"]
mod swarm;

use std::io::Write;
use std::time::{Duration, Instant};

use harpbridge::chain::{ChainPath, ContentId, LibraryId, Op};
use harpbridge::p2p::P2pConfig;
use libp2p::Multiaddr;
use serde_json::{json, Value};
use swarm::TestNode;

const MIB: u64 = 1 << 20;

/// A node on loopback listening on `listen` only.
async fn start(listen: &[&str]) -> TestNode {
    let config = P2pConfig {
        // Loopback peers are LAN peers here (mDNS would find them on a real LAN), so the
        // fetch uses the LAN window.
        lan_rtt: Duration::from_millis(50),
        ..swarm::listening_on(listen)
    };
    TestNode::start(config).await
}

/// `size` bytes of a seeded BLAKE3 XOF, 1 MiB at a time.
fn generate(size: u64, sink: impl FnMut(&[u8])) {
    swarm::seeded(9, size, sink);
}

fn peak_rss_mib() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024)
}

/// Fetches the version at `b` from `a` dialled at `addr`; MB/s.
async fn fetch(
    a: &TestNode,
    b: &TestNode,
    lib: LibraryId,
    content: ContentId,
    addr: Multiaddr,
) -> f64 {
    b.node.dial(addr).await.unwrap();
    swarm::converge(Duration::from_secs(60), &[a, b], lib).await;
    let report = b.node.fetch_content(lib, content).await.unwrap();
    let mb_s = report.bytes_fetched as f64 / report.elapsed.as_secs_f64() / 1e6;
    // Check the bytes (untimed): every block was verified on arrival; this reads them back.
    let store = b.content.clone();
    let n = tokio::task::spawn_blocking(move || {
        let mut r = store.open_reader(&content.into()).unwrap();
        std::io::copy(&mut r, &mut std::io::sink()).unwrap()
    })
    .await
    .unwrap();
    assert_eq!(n, report.bytes_fetched + report.bytes_present);
    mb_s
}

/// The baseline: the same bytes as a plain file, over a plain loopback TCP socket into a
/// file fsync'd at the end, with 1 MiB reads and writes on two threads (what `nc` + `sync`
/// would do, minus their small buffers); MB/s.
fn raw_tcp(size: u64) -> f64 {
    use std::io::Read;
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    let dst = dir.path().join("dst");
    {
        let mut f = std::io::BufWriter::new(std::fs::File::create(&src).unwrap());
        generate(size, |b| f.write_all(b).unwrap());
        f.into_inner().unwrap().sync_all().unwrap();
    }
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let t = Instant::now();
    let recv = std::thread::spawn(move || {
        let (mut sock, _) = listener.accept().unwrap();
        let mut out = std::fs::File::create(&dst).unwrap();
        let mut buf = vec![0u8; MIB as usize];
        let mut n = 0u64;
        loop {
            let k = sock.read(&mut buf).unwrap();
            if k == 0 {
                break;
            }
            out.write_all(&buf[..k]).unwrap();
            n += k as u64;
        }
        out.sync_all().unwrap();
        n
    });
    let mut sock = std::net::TcpStream::connect(addr).unwrap();
    let mut file = std::fs::File::open(&src).unwrap();
    let mut buf = vec![0u8; MIB as usize];
    loop {
        let k = file.read(&mut buf).unwrap();
        if k == 0 {
            break;
        }
        sock.write_all(&buf[..k]).unwrap();
    }
    sock.shutdown(std::net::Shutdown::Write).unwrap();
    let n = recv.join().unwrap();
    assert_eq!(n, size);
    n as f64 / t.elapsed().as_secs_f64() / 1e6
}

/// Runs `bench/syncthing-baseline MIB` if it exists and takes its last JSON line.
fn syncthing(mib: u64) -> Value {
    let script = std::path::Path::new("bench/syncthing-baseline");
    if !script.exists() {
        return Value::Null;
    }
    let out = std::process::Command::new(script)
        .arg(mib.to_string())
        .output();
    match out {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout)
            .lines()
            .rev()
            .find_map(|l| serde_json::from_str::<Value>(l).ok())
            .unwrap_or(Value::Null),
        _ => Value::Null,
    }
}

async fn run(mib: u64, full: bool) -> Value {
    let size = mib * MIB;
    // A listens on both transports; B and C each on (and dial A over) one only.
    let a = start(&[swarm::TCP, swarm::QUIC]).await;
    let b = start(&[swarm::TCP]).await;
    let c = start(&[swarm::QUIC]).await;
    let (lib, _) = a.chain.create_library(a.id.signing_key(), "a").unwrap();
    for n in [&b, &c] {
        a.add(&lib, n.id.device_key(), "bench");
    }
    let t = Instant::now();
    let store = a.content.clone();
    let ingested = tokio::task::spawn_blocking(move || {
        let mut w = store.writer(lib);
        generate(size, |b| w.write_all(b).unwrap());
        w.finish().unwrap()
    })
    .await
    .unwrap();
    println!(
        "ingest at A: {mib} MiB in {:.2}s ({} blocks)",
        t.elapsed().as_secs_f64(),
        ingested.blocks
    );
    let content: ContentId = ingested.id.into();
    a.chain
        .append(
            &lib,
            a.id.signing_key(),
            Op::Put {
                path: ChainPath::new("big.bin").unwrap(),
                size,
                mtime_ms: 0,
                content,
                nextcloud: None,
            },
        )
        .unwrap();

    let tcp = fetch(&a, &b, lib, content, a.addr(false)).await;
    println!("blocks over TCP (noise+yamux): {tcp:.0} MB/s");
    let quic = fetch(&a, &c, lib, content, a.addr(true)).await;
    println!("blocks over QUIC:              {quic:.0} MB/s");
    let raw = tokio::task::spawn_blocking(move || raw_tcp(size))
        .await
        .unwrap();
    println!("raw TCP copy to a file:        {raw:.0} MB/s (baseline)");
    let rss = peak_rss_mib();
    println!("peak RSS of the bench process (three nodes): {rss:?} MiB");
    for n in [&a, &b, &c] {
        n.node.shutdown().await;
    }
    let st = if full { syncthing(mib) } else { Value::Null };
    if !st.is_null() {
        println!("syncthing baseline: {st}");
    }
    // Syncthing's `mb_s` runs from placing the file to its arrival and so includes its
    // sender's scan (hashing); ours starts with the version already ingested at A, so the
    // fair comparison is with its rate after the scan.
    let st_after_scan = st.get("after_scan_mb_s").and_then(Value::as_f64);
    let vs_syncthing = st_after_scan.map(|s| (tcp.max(quic) / s * 1000.0).round() / 1000.0);
    if let Some(r) = vs_syncthing {
        println!("best of TCP/QUIC vs Syncthing after its scan: {r:.2}x");
    }
    json!({
        "bench": "transfer",
        "best_vs_syncthing_after_scan": vs_syncthing,
        "mib": mib,
        "blocks": ingested.blocks,
        "tcp_mb_s": (tcp * 10.0).round() / 10.0,
        "quic_mb_s": (quic * 10.0).round() / 10.0,
        "peak_rss_mib": rss,
        "tcp_vs_raw": (tcp / raw * 1000.0).round() / 1000.0,
        "quic_vs_raw": (quic / raw * 1000.0).round() / 1000.0,
        "baseline": {
            "raw_tcp_mb_s": (raw * 10.0).round() / 10.0,
            "syncthing": st,
        },
    })
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let mib = if full {
        std::env::var("HB_BENCH_MIB")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(512)
    } else {
        8
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let result = runtime.block_on(run(mib, full));
    println!("{result}");
    if full {
        let _ = std::fs::create_dir_all("bench/out");
        let _ = std::fs::write("bench/out/transfer.json", format!("{result}\n"));
    }
}
