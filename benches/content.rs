//! `bench/content`: content-store throughput beside the raw hash speeds of the same run.
//!
//! Phases (each prints a line):
//! 1. ingest one generated stream (default 1 GiB, `HB_BENCH_BYTES`) in 64 KiB pieces, as the
//!    worker feeds a WebDAV body: chunk, hash, write block files, commit; peak RSS after it;
//! 2. read it back through `open_reader` (every block verified), then check the bytes against
//!    the stream (untimed);
//! 3. ingest small files (1-64 KiB), each its own durable version, three ways: one at a time
//!    from one thread (every file pays its own flushes and commit: the old path, a fifth of
//!    `HB_BENCH_SMALL` files since it is slow), batched through `ingest_all` (default 10,000,
//!    `HB_BENCH_SMALL`), and concurrently from 8 threads calling `ingest_reader` (group
//!    commit, `HB_BENCH_SMALL` in all);
//! 4. baselines, measured now on this machine: BLAKE3 and SHA3-256 over 1 MiB pieces (one
//!    core), FastCDC cutting alone, the generator alone, sequential disk writes + fsync, and
//!    small files created, written and fsync'd one by one (the floor of the one-at-a-time
//!    path).
//!
//! JSON: `small_files_per_s` is the one-at-a-time rate (as before group commit),
//! `small_batched_files_per_s` and `small_concurrent_files_per_s` the other two.
//!
//! Ends with one JSON line, also written to `bench/out/content.json`. MB = 10^6 bytes.
//! Run through `bench/content` (release build). Under `cargo test --all-targets` (no
//! `--bench` argument) it runs a small smoke version instead, so CI stays fast.

use std::io::{Read, Write};
use std::time::Instant;

use harpbridge::chain::LibraryId;
use harpbridge::content::{ChunkerParams, ContentStore, StoreOptions};
use sha3::Digest;

/// Deterministic stream: byte `i` depends only on the seed and `i` (splitmix64 of `i / 8`).
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
    #[inline]
    fn word(&self, i: u64) -> u64 {
        let mut z = self
            .seed
            .wrapping_add(i.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

impl Read for Prng {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = (buf.len() as u64).min(self.left) as usize;
        let mut out = &mut buf[..n];
        // Unaligned head, whole words, tail.
        while !out.is_empty() && !self.pos.is_multiple_of(8) {
            out[0] = self.word(self.pos / 8).to_le_bytes()[(self.pos % 8) as usize];
            out = &mut out[1..];
            self.pos += 1;
        }
        let mut words = out.chunks_exact_mut(8);
        for c in &mut words {
            c.copy_from_slice(&self.word(self.pos / 8).to_le_bytes());
            self.pos += 8;
        }
        let rest = words.into_remainder();
        for b in rest.iter_mut() {
            *b = self.word(self.pos / 8).to_le_bytes()[(self.pos % 8) as usize];
            self.pos += 1;
        }
        self.left -= n as u64;
        Ok(n)
    }
}

fn status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
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

fn mb_s(bytes: u64, secs: f64) -> f64 {
    (bytes as f64 / 1e6 / secs.max(1e-9) * 10.0).round() / 10.0
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let (big, small) = if full {
        (
            env_u64("HB_BENCH_BYTES", 1 << 30),
            env_u64("HB_BENCH_SMALL", 10_000),
        )
    } else {
        println!("content bench: smoke run (pass --bench, or use bench/content, for figures)");
        (8 << 20, 20)
    };
    let tmp = tempfile::tempdir().expect("temporary directory");
    let data = tmp.path().join("data");
    let db = harpbridge::db::open(&data).expect("database");
    let store = ContentStore::open(db, &data, StoreOptions::default()).expect("store");
    let lib = LibraryId([1; 16]);
    let start_kib = status_kib("VmHWM:");
    println!(
        "content bench: {} MiB stream + {small} small files in {}",
        big >> 20,
        data.display()
    );

    // 1. Large ingest.
    let mut piece = vec![0u8; 64 * 1024];
    let t = Instant::now();
    let mut w = store.writer(lib);
    let mut src = Prng::new(1, big);
    loop {
        let n = src.read(&mut piece).expect("generator");
        if n == 0 {
            break;
        }
        w.write(&piece[..n]).expect("ingest write");
    }
    let v = w.finish().expect("ingest finish");
    let ingest_s = t.elapsed().as_secs_f64();
    let peak_big_kib = status_kib("VmHWM:");
    let ingest = mb_s(big, ingest_s);
    println!(
        "ingest    {ingest:>8.1} MB/s  {} MiB in {ingest_s:.2} s, {} blocks (avg {:.2} MiB), \
         peak RSS {:.1} MiB (+{:.1} MiB over start)",
        big >> 20,
        v.blocks,
        big as f64 / v.blocks.max(1) as f64 / 1048576.0,
        peak_big_kib as f64 / 1024.0,
        (peak_big_kib - start_kib) as f64 / 1024.0
    );

    // 2. Read back (verified per block), then compare untimed.
    let mut buf = vec![0u8; 1 << 20];
    let t = Instant::now();
    let mut r = store.open_reader(&v.id).expect("reader");
    let mut total = 0u64;
    loop {
        let n = r.read(&mut buf).expect("read back");
        if n == 0 {
            break;
        }
        total += n as u64;
    }
    let read_s = t.elapsed().as_secs_f64();
    assert_eq!(total, big);
    let read_back = mb_s(big, read_s);
    let mut r = store.open_reader(&v.id).expect("reader");
    let mut expect = Prng::new(1, big);
    let mut want = vec![0u8; 1 << 20];
    let mut checked = 0u64;
    loop {
        let n = r.read(&mut buf).expect("read back");
        if n == 0 {
            break;
        }
        expect.read_exact(&mut want[..n]).expect("generator");
        assert!(
            buf[..n] == want[..n],
            "read-back differs near byte {checked}"
        );
        checked += n as u64;
    }
    println!(
        "read back {read_back:>8.1} MB/s  (every block BLAKE3-verified); {checked} bytes identical"
    );
    drop(buf);
    drop(want);

    // 3. Small files, 1-64 KiB, each its own durable version, three ways.
    let small_len = |i: u64| 1024 + (i.wrapping_mul(2_654_435_761) % (63 * 1024));
    // 3a. One at a time from one thread: every file pays its own flushes and commit.
    let one = (small / 5).max(1);
    let t = Instant::now();
    let mut one_bytes = 0u64;
    for i in 0..one {
        one_bytes += small_len(i);
        store
            .ingest_reader(lib, Prng::new(10_000 + i, small_len(i)))
            .expect("small ingest");
    }
    let one_s = t.elapsed().as_secs_f64();
    let one_rate = (one as f64 / one_s.max(1e-9)).round();
    println!(
        "small     {one_rate:>8.0} files/s  one at a time: {one} files, {:.1} MB in {one_s:.2} s \
         (each its own fsyncs and commit)",
        one_bytes as f64 / 1e6
    );
    // 3b. Batched: one thread hands them all to `ingest_all`.
    let t = Instant::now();
    let mut batch_bytes = 0u64;
    let readers = (0..small).map(|i| {
        batch_bytes += small_len(i);
        Prng::new(20_000_000 + i, small_len(i))
    });
    let results = store.ingest_all(lib, readers);
    let batch_s = t.elapsed().as_secs_f64();
    assert_eq!(results.len() as u64, small);
    for r in &results {
        r.as_ref().expect("batched small ingest");
    }
    let batch_rate = (small as f64 / batch_s.max(1e-9)).round();
    println!(
        "small     {batch_rate:>8.0} files/s  batched (ingest_all): {small} files, {:.1} MB in \
         {batch_s:.2} s",
        batch_bytes as f64 / 1e6
    );
    // 3c. Concurrent: THREADS threads, each ingesting its share one at a time; their
    // commits are grouped.
    const THREADS: u64 = 8;
    let per = (small / THREADS).max(1);
    let t = Instant::now();
    std::thread::scope(|s| {
        for th in 0..THREADS {
            let store = store.clone();
            s.spawn(move || {
                for i in 0..per {
                    let k = th * per + i;
                    store
                        .ingest_reader(lib, Prng::new(40_000_000 + k, small_len(k)))
                        .expect("concurrent small ingest");
                }
            });
        }
    });
    let conc_s = t.elapsed().as_secs_f64();
    let conc_files = per * THREADS;
    let conc_bytes: u64 = (0..conc_files).map(small_len).sum();
    let conc_rate = (conc_files as f64 / conc_s.max(1e-9)).round();
    let peak_kib = status_kib("VmHWM:");
    println!(
        "small     {conc_rate:>8.0} files/s  concurrent ({THREADS} threads, group commit): \
         {conc_files} files, {:.1} MB in {conc_s:.2} s; peak RSS {:.1} MiB",
        conc_bytes as f64 / 1e6,
        peak_kib as f64 / 1024.0
    );

    // 4. Baselines on the same machine, same run.
    let pool_len = if full { 64usize << 20 } else { 4 << 20 };
    let mut pool = vec![0u8; pool_len];
    Prng::new(7, pool_len as u64)
        .read_exact(&mut pool)
        .expect("pool");
    let rounds = if full { 8 } else { 1 };
    let hashed = (pool_len * rounds) as u64;
    let t = Instant::now();
    let mut acc = 0u8;
    for _ in 0..rounds {
        for c in pool.chunks(1 << 20) {
            acc ^= blake3::hash(c).as_bytes()[0];
        }
    }
    let blake3_mb_s = mb_s(hashed, t.elapsed().as_secs_f64());
    let sha_rounds = rounds.div_ceil(4).max(1);
    let t = Instant::now();
    for _ in 0..sha_rounds {
        for c in pool.chunks(1 << 20) {
            acc ^= sha3::Sha3_256::digest(c)[0];
        }
    }
    let sha3_mb_s = mb_s((pool_len * sha_rounds) as u64, t.elapsed().as_secs_f64());
    let p = ChunkerParams::DEFAULT;
    let t = Instant::now();
    let mut cuts = 0usize;
    for _ in 0..rounds {
        cuts += fastcdc::v2020::FastCDC::new(&pool, p.min, p.avg, p.max).count();
    }
    let fastcdc_mb_s = mb_s(hashed, t.elapsed().as_secs_f64());
    let t = Instant::now();
    let mut g = Prng::new(3, hashed);
    while g.read(&mut piece).expect("generator") > 0 {}
    let prng_mb_s = mb_s(hashed, t.elapsed().as_secs_f64());
    let disk_bytes = if full { 512u64 << 20 } else { 8 << 20 };
    let disk_path = tmp.path().join("raw-write");
    let t = Instant::now();
    {
        let mut f = std::fs::File::create(&disk_path).expect("raw file");
        for c in 0..(disk_bytes >> 20) as usize {
            let off = (c % (pool_len >> 20)) << 20;
            f.write_all(&pool[off..off + (1 << 20)]).expect("raw write");
        }
        f.sync_all().expect("raw fsync");
    }
    let disk_mb_s = mb_s(disk_bytes, t.elapsed().as_secs_f64());
    std::fs::remove_file(&disk_path).ok();
    // The floor for durable small files written one by one: create, write, fsync each.
    let raw_n = if full { 300u64 } else { 10 };
    let raw_dir = tmp.path().join("raw-small");
    std::fs::create_dir(&raw_dir).expect("raw dir");
    let t = Instant::now();
    for i in 0..raw_n {
        let len = small_len(i) as usize;
        let mut f = std::fs::File::create(raw_dir.join(i.to_string())).expect("raw small");
        f.write_all(&pool[..len]).expect("raw small write");
        f.sync_all().expect("raw small fsync");
    }
    let raw_small_rate = (raw_n as f64 / t.elapsed().as_secs_f64().max(1e-9)).round();
    std::fs::remove_dir_all(&raw_dir).ok();
    println!("baseline  BLAKE3 {blake3_mb_s:.1} MB/s, SHA3-256 {sha3_mb_s:.1} MB/s (one core, 1 MiB inputs)");
    println!(
        "baseline  FastCDC cutting {fastcdc_mb_s:.1} MB/s ({cuts} cuts), generator {prng_mb_s:.1} MB/s, \
         disk write+fsync {disk_mb_s:.1} MB/s ({} MiB file) [{acc}]",
        disk_bytes >> 20
    );
    println!(
        "baseline  small files created+written+fsync'd one by one: {raw_small_rate:.0} files/s"
    );

    let r1 = |kib: u64| (kib as f64 / 1024.0 * 10.0).round() / 10.0;
    // Written by hand so that "bench" comes first and "baseline" last, as the benchmark convention asks.
    let line = format!(
        "{{\"bench\":\"content\",\"ingest_mb_s\":{ingest},\"read_back_mb_s\":{read_back},\
         \"bytes\":{big},\"blocks\":{},\"peak_rss_mib_after_large\":{},\
         \"rss_growth_mib_large\":{},\"small_files\":{one},\"small_files_per_s\":{one_rate},\
         \"small_mb_s\":{},\"small_batched_files\":{small},\
         \"small_batched_files_per_s\":{batch_rate},\"small_batched_mb_s\":{},\
         \"small_concurrent_threads\":{THREADS},\"small_concurrent_files\":{conc_files},\
         \"small_concurrent_files_per_s\":{conc_rate},\"small_concurrent_mb_s\":{},\
         \"peak_rss_mib\":{},\"baseline\":{{\"blake3_mb_s\":{blake3_mb_s},\
         \"sha3_256_mb_s\":{sha3_mb_s},\"fastcdc_mb_s\":{fastcdc_mb_s},\
         \"generator_mb_s\":{prng_mb_s},\"disk_write_fsync_mb_s\":{disk_mb_s},\
         \"small_file_fsync_files_per_s\":{raw_small_rate}}}}}",
        v.blocks,
        r1(peak_big_kib),
        r1(peak_big_kib - start_kib),
        mb_s(one_bytes, one_s),
        mb_s(batch_bytes, batch_s),
        mb_s(conc_bytes, conc_s),
        r1(peak_kib),
    );
    debug_assert!(serde_json::from_str::<serde_json::Value>(&line).is_ok());
    if full {
        let out = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("bench/out");
        if std::fs::create_dir_all(&out).is_ok() {
            let _ = std::fs::write(out.join("content.json"), format!("{line}\n"));
        }
    }
    println!("{line}");
}
