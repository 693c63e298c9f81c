//! Bounded memory: ingesting a large generated stream (never a file on disk, never a buffer
//! of its size) and many small files keeps the process's peak RSS within a fixed margin of
//! where it started, and every byte reads back.
//!
//! The work runs in a child process (this test binary re-executed with
//! `HB_CONTENT_MEMORY_CHILD` set) so the peak (`VmHWM` in `/proc/self/status`) is that of
//! the ingest alone, not of other tests running in parallel threads.
//!
//! Sizes: `HB_CONTENT_MEMORY_BYTES` (default 1 GiB: about 15 s in a debug build on the
//! 2-core CI machine) and `HB_CONTENT_SMALL_FILES` (default 300: each is its own fsync'd
//! commit). `bench/content` runs the same workload in release with 10,000 small files and
//! reports throughput and peak RSS.

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::Instant;

use harpbridge::chain::LibraryId;
use harpbridge::content::{ContentStore, StoreOptions};

/// A deterministic byte stream of `left` bytes: byte `i` depends only on the seed and `i`
/// (splitmix64 of `i / 8`), so reads of any sizes give the same bytes.
struct Prng {
    seed: u64,
    pos: u64,
    left: u64,
}

impl Prng {
    fn new(seed: u64, len: u64) -> Self {
        Prng {
            seed: seed.wrapping_mul(0x9E37_79B9_7F4A_7C15),
            pos: 0,
            left: len,
        }
    }

    fn word(&self, i: u64) -> [u8; 8] {
        let mut z = self
            .seed
            .wrapping_add(i.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        (z ^ (z >> 31)).to_le_bytes()
    }
}

impl Read for Prng {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = (buf.len() as u64).min(self.left) as usize;
        let mut out = &mut buf[..n];
        while !out.is_empty() {
            let off = (self.pos % 8) as usize;
            let w = self.word(self.pos / 8);
            let take = (8 - off).min(out.len());
            out[..take].copy_from_slice(&w[off..off + take]);
            out = &mut out[take..];
            self.pos += take as u64;
        }
        self.left -= n as u64;
        Ok(n)
    }
}

fn status_kib(field: &str) -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[test]
fn memory_child() {
    let Ok(dir) = std::env::var("HB_CONTENT_MEMORY_CHILD") else {
        return;
    };
    let big = env_u64("HB_CONTENT_MEMORY_BYTES", 1 << 30);
    let small = env_u64("HB_CONTENT_SMALL_FILES", 300);
    let data = std::path::Path::new(&dir);
    let db = harpbridge::db::open(data).unwrap();
    let store = ContentStore::open(db, data, StoreOptions::default()).unwrap();
    let lib = LibraryId([1; 16]);
    let start = status_kib("VmHWM:");

    // One large file, fed in 64 KiB pieces as a network body would arrive.
    let t = Instant::now();
    let mut w = store.writer(lib);
    let mut src = Prng::new(1, big);
    let mut piece = vec![0u8; 64 * 1024];
    loop {
        let n = src.read(&mut piece).unwrap();
        if n == 0 {
            break;
        }
        w.write(&piece[..n]).unwrap();
    }
    let v = w.finish().unwrap();
    let ingest_s = t.elapsed().as_secs_f64();
    assert_eq!(v.size, big);
    let peak_big = status_kib("VmHWM:");

    // Read it back and compare with the regenerated stream.
    let t = Instant::now();
    let mut r = store.open_reader(&v.id).unwrap();
    let mut expect = Prng::new(1, big);
    let (mut a, mut b) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    let mut total = 0u64;
    loop {
        let n = r.read(&mut a).unwrap();
        if n == 0 {
            break;
        }
        expect.read_exact(&mut b[..n]).unwrap();
        assert!(a[..n] == b[..n], "mismatch near byte {total}");
        total += n as u64;
    }
    assert_eq!(total, big);
    let read_s = t.elapsed().as_secs_f64();

    // Many small files, each its own version.
    let t = Instant::now();
    let mut ids = Vec::new();
    for i in 0..small {
        let len = 100 + (i * 7919) % 60_000;
        let v = store.ingest_reader(lib, Prng::new(1000 + i, len)).unwrap();
        ids.push((v.id, i, len));
    }
    let small_s = t.elapsed().as_secs_f64();
    for &(id, i, len) in ids.iter().step_by(97) {
        let mut got = Vec::new();
        store
            .open_reader(&id)
            .unwrap()
            .read_to_end(&mut got)
            .unwrap();
        let mut want = Vec::new();
        Prng::new(1000 + i, len).read_to_end(&mut want).unwrap();
        assert!(got == want, "small file {i}");
    }
    let peak = status_kib("VmHWM:");
    println!(
        "MEMORY start_hwm_kib={start} peak_after_big_kib={peak_big} peak_kib={peak} \
         big_bytes={big} blocks={} ingest_s={ingest_s:.2} read_s={read_s:.2} \
         small_files={small} small_s={small_s:.2}",
        v.blocks
    );
    std::io::stdout().flush().unwrap();
}

#[test]
fn large_stream_and_many_small_files_ingest_in_bounded_memory() {
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let out = Command::new(exe)
        .args(["memory_child", "--exact", "--nocapture", "--test-threads=1"])
        .env("HB_CONTENT_MEMORY_CHILD", dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "child failed:\n{text}");
    let line = text
        .lines()
        .find_map(|l| l.find("MEMORY ").map(|at| &l[at..]))
        .unwrap_or_else(|| panic!("no MEMORY line in:\n{text}"));
    eprintln!("{line}");
    let field = |name: &str| -> u64 {
        line.split_whitespace()
            .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {line}"))
    };
    let grew_mib = (field("peak_kib") - field("start_hwm_kib")) / 1024;
    assert!(
        grew_mib < 64,
        "peak RSS grew by {grew_mib} MiB during ingest ({line})"
    );
}
