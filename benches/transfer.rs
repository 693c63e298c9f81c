//! `bench/transfer`: block transfer (`/harp/blocks/2`) of one large version between two
//! nodes on loopback, over TCP (noise + yamux) and over QUIC, beside a raw TCP copy of the
//! same bytes measured in the same run (and Syncthing, when `bench/syncthing-baseline` is
//! there: see the script).
//!
//! Phases (each prints a line):
//! 1. node A ingests a generated file (default 512 MiB, `HB_BENCH_MIB`);
//! 2. node B, dialled to A over TCP only, fetches it (every block verified and fsync'd into
//!    B's store); then node C over QUIC only; each reports MB/s and B's / C's bytes in;
//! 3. baseline: the same bytes as a plain file, sent over a plain loopback TCP socket into a
//!    file that is fsync'd at the end (what `nc` + `sync` would do), in the same run;
//! 4. the floor: what one core spends per byte on the work a block transfer cannot skip and
//!    the raw copy does not do (noise's ChaCha20-Poly1305 seal and open, BLAKE3 at both
//!    ends), and from it the fastest any transfer could go on this machine's cores.
//!
//! Every phase also reports its CPU time per byte (user + system, both ends: all nodes live
//! in this process), so a slow figure says whether the cores were busy or waiting.
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

/// CPU time (user + system) this process has used, over all its threads.
fn cpu_time() -> Duration {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage fills in the struct it is given, and RUSAGE_SELF is always valid.
    let usage = unsafe {
        assert_eq!(libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr()), 0);
        usage.assume_init()
    };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// A phase's figures: its rate, and the CPU it spent per byte moved.
#[derive(Clone, Copy)]
struct Rate {
    mb_s: f64,
    cpu_ns_per_byte: f64,
}

impl Rate {
    fn new(bytes: u64, elapsed: Duration, cpu: Duration) -> Rate {
        Rate {
            mb_s: bytes as f64 / elapsed.as_secs_f64() / 1e6,
            cpu_ns_per_byte: cpu.as_nanos() as f64 / bytes as f64,
        }
    }
}

/// Fetches the version at `b` from `a` dialled at `addr`.
async fn fetch(
    a: &TestNode,
    b: &TestNode,
    lib: LibraryId,
    content: ContentId,
    addr: Multiaddr,
) -> Rate {
    b.node.dial(addr).await.unwrap();
    swarm::converge(Duration::from_secs(60), &[a, b], lib).await;
    let cpu = cpu_time();
    let report = b.node.fetch_content(lib, content).await.unwrap();
    let rate = Rate::new(report.bytes_fetched, report.elapsed, cpu_time() - cpu);
    // Check the bytes (untimed): every block was verified on arrival; this reads them back.
    let store = b.content.clone();
    let n = tokio::task::spawn_blocking(move || {
        let mut r = store.open_reader(&content.into()).unwrap();
        std::io::copy(&mut r, &mut std::io::sink()).unwrap()
    })
    .await
    .unwrap();
    assert_eq!(n, report.bytes_fetched + report.bytes_present);
    rate
}

/// The baseline: the same bytes as a plain file, over a plain loopback TCP socket into a
/// file fsync'd at the end, with 1 MiB reads and writes on two threads (what `nc` + `sync`
/// would do, minus their small buffers).
fn raw_tcp(size: u64) -> Rate {
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
    let cpu = cpu_time();
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
    Rate::new(n, t.elapsed(), cpu_time() - cpu)
}

/// What one core spends per byte, in ns, on the work every block transfer does beyond a raw
/// copy: noise seals and opens each byte once (ring's ChaCha20-Poly1305, in 64 KiB frames
/// as libp2p-noise sends them), and the provider and the fetcher each hash it (BLAKE3, in
/// 4 MiB blocks). Returns (seal + open, hash × 2).
fn floor_ns_per_byte() -> (f64, f64) {
    use harpbridge::content::BlockHash;
    use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305};
    const BYTES: usize = 64 << 20;
    const FRAME: usize = 65535 - 16;
    let mut data = Vec::with_capacity(BYTES);
    generate(BYTES as u64, |b| data.extend_from_slice(b));
    let key = LessSafeKey::new(UnboundKey::new(&CHACHA20_POLY1305, &[7; 32]).unwrap());
    let nonce = |n: u64| {
        let mut b = [0; 12];
        b[4..].copy_from_slice(&n.to_le_bytes());
        Nonce::assume_unique_for_key(b)
    };
    let t = Instant::now();
    let mut sealed = Vec::with_capacity(FRAME + 16);
    for (n, frame) in data.chunks(FRAME).enumerate() {
        sealed.clear();
        sealed.extend_from_slice(frame);
        key.seal_in_place_append_tag(nonce(n as u64), Aad::empty(), &mut sealed)
            .unwrap();
        let opened = key
            .open_in_place(nonce(n as u64), Aad::empty(), &mut sealed)
            .unwrap();
        assert_eq!(opened.len(), frame.len());
    }
    let cipher = t.elapsed();
    let t = Instant::now();
    for _ in 0..2 {
        for block in data.chunks(4 << 20) {
            std::hint::black_box(BlockHash::of(block));
        }
    }
    let hash = t.elapsed();
    let per_byte = |d: Duration| d.as_nanos() as f64 / BYTES as f64;
    (per_byte(cipher), per_byte(hash))
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
    print_rate("blocks over TCP (noise+yamux):", tcp);
    let quic = fetch(&a, &c, lib, content, a.addr(true)).await;
    print_rate("blocks over QUIC:             ", quic);
    let raw = tokio::task::spawn_blocking(move || raw_tcp(size))
        .await
        .unwrap();
    print_rate("raw TCP copy to a file:       ", raw);
    let (cipher, hash) = tokio::task::spawn_blocking(floor_ns_per_byte)
        .await
        .unwrap();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    // The least CPU a block transfer can cost per byte: the raw copy's (the same reads,
    // socket and writes) plus the cipher and the hashes. All cores busy and nothing else
    // running, this is the fastest it can go here.
    let ceiling = cores as f64 * 1e3 / (raw.cpu_ns_per_byte + cipher + hash);
    println!(
        "floor per byte, one core: seal + open {cipher:.2} ns, BLAKE3 x2 {hash:.2} ns; \
         with the raw copy's CPU, at most {ceiling:.0} MB/s on {cores} cores \
         (0.8 of the raw copy would be {:.0} MB/s)",
        0.8 * raw.mb_s
    );
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
    let vs_syncthing = st_after_scan.map(|s| round(tcp.mb_s.max(quic.mb_s) / s, 3));
    if let Some(r) = vs_syncthing {
        println!("best of TCP/QUIC vs Syncthing after its scan: {r:.2}x");
    }
    json!({
        "bench": "transfer",
        "best_vs_syncthing_after_scan": vs_syncthing,
        "mib": mib,
        "blocks": ingested.blocks,
        "tcp_mb_s": round(tcp.mb_s, 1),
        "quic_mb_s": round(quic.mb_s, 1),
        "tcp_cpu_ns_per_byte": round(tcp.cpu_ns_per_byte, 2),
        "quic_cpu_ns_per_byte": round(quic.cpu_ns_per_byte, 2),
        "peak_rss_mib": rss,
        "tcp_vs_raw": round(tcp.mb_s / raw.mb_s, 3),
        "quic_vs_raw": round(quic.mb_s / raw.mb_s, 3),
        "tcp_vs_ceiling": round(tcp.mb_s / ceiling, 3),
        "baseline": {
            "raw_tcp_mb_s": round(raw.mb_s, 1),
            "raw_tcp_cpu_ns_per_byte": round(raw.cpu_ns_per_byte, 2),
            "floor": {
                "cores": cores,
                "seal_open_ns_per_byte": round(cipher, 2),
                "blake3_x2_ns_per_byte": round(hash, 2),
                "ceiling_mb_s": round(ceiling, 1),
            },
            "syncthing": st,
        },
    })
}

fn print_rate(what: &str, r: Rate) {
    println!(
        "{what} {:.0} MB/s, CPU {:.2} ns per byte",
        r.mb_s, r.cpu_ns_per_byte
    );
}

/// `x` rounded to `digits` decimals, for the JSON.
fn round(x: f64, digits: i32) -> f64 {
    let scale = 10f64.powi(digits);
    (x * scale).round() / scale
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
