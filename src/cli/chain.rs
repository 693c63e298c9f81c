//! `harpbridge chain …`: look at and check the hash chains in a data directory.
//!
//! - `chain log [--library L]`: every entry, in the fold order.
//! - `chain show HASH`: one entry in full.
//! - `chain verify`: re-verify everything; exit 1 naming the first bad entry.
//! - `chain init`: start a new library with this device as its only member.
//!
//! Hidden helpers for tests and benchmarks: `chain stress-append` (appends in a loop and
//! prints each hash once its commit returned: the crash-safety test kills it) and
//! `chain bench` (the figures `bench/chain` reports).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};

use super::{shown, DataDirArgs, DATA_DIR};
use crate::chain::{ChainPath, ChainStore, ContentId, EntryHash, LibraryId, Op, TreeItem};
use crate::db;
use crate::identity::DeviceIdentity;

/// Arguments of `harpbridge chain`.
#[derive(Debug, Args)]
#[command(mut_arg(DATA_DIR, DataDirArgs::global))]
pub struct ChainArgs {
    #[command(flatten)]
    pub data_dir: DataDirArgs,

    #[command(subcommand)]
    pub command: ChainCommand,
}

/// The `chain` subcommands.
#[derive(Debug, Subcommand)]
pub enum ChainCommand {
    /// List every entry, in the deterministic fold order (Lamport clock, then hash).
    Log {
        /// Only this library (32 hex characters).
        #[arg(long)]
        library: Option<LibraryId>,
    },
    /// Show one entry in full.
    Show {
        /// The entry's hash (64 hex characters).
        hash: EntryHash,
    },
    /// Verify every stored entry; exit 1 and name the first bad one.
    Verify,
    /// Start a new library with this device as its only member.
    Init {
        /// A name for this device in the library.
        #[arg(long, default_value = "harpbridge")]
        name: String,
    },
    /// Show a library's file tree as folded from its chain.
    Tree {
        /// The library (32 hex characters).
        library: LibraryId,
    },
    /// (testing) Append entries in a loop, printing each hash after its commit returned.
    #[command(hide = true)]
    StressAppend {
        /// Entries per durable transaction.
        #[arg(long, default_value_t = 1)]
        batch: usize,
        /// Stop after this many entries (default: never).
        #[arg(long)]
        count: Option<u64>,
    },
    /// (benchmark) Measure append, verify and fold rates; print lines and one JSON line.
    #[command(hide = true)]
    Bench {
        /// Entries in the big chain (batched append, verify, fold).
        #[arg(long, default_value_t = 200_000)]
        entries: usize,
        /// Single durable appends to time.
        #[arg(long, default_value_t = 500)]
        single: usize,
        /// Where to put the benchmark's databases (a real disk: fsync matters).
        #[arg(long)]
        work_dir: Option<PathBuf>,
        /// Also write the JSON line to this file.
        #[arg(long)]
        json_out: Option<PathBuf>,
    },
}

/// Runs a `chain` subcommand. Exit 0 on success, 1 when verification finds a fault (or any
/// other failure), 2 for bad usage.
pub fn run(args: ChainArgs) -> ExitCode {
    let result = match args.command {
        ChainCommand::Bench {
            entries,
            single,
            work_dir,
            json_out,
        } => bench(entries, single, work_dir, json_out),
        command => {
            let data_dir = match args.data_dir.resolve() {
                Ok(dir) => dir,
                Err(code) => return code,
            };
            match command {
                ChainCommand::Log { library } => log(data_dir, library),
                ChainCommand::Show { hash } => show(data_dir, hash),
                ChainCommand::Verify => verify(data_dir),
                ChainCommand::Init { name } => init(data_dir, &name),
                ChainCommand::Tree { library } => tree(data_dir, library),
                ChainCommand::StressAppend { batch, count } => {
                    stress_append(data_dir, batch.max(1), count)
                }
                ChainCommand::Bench { .. } => Ok(()),
            }
        }
    };
    super::exit_code(result)
}

fn open_store(data_dir: &Path) -> anyhow::Result<ChainStore> {
    if !data_dir.join(db::DB_FILE).exists() {
        bail!(
            "no database in {} (nothing to show yet)",
            data_dir.display()
        );
    }
    let database = db::open(data_dir)?;
    ChainStore::open(database).context("the chain does not verify")
}

pub(super) fn describe(op: &Op) -> String {
    match op {
        Op::Put {
            path,
            size,
            content,
            ..
        } => format!(
            "put {} ({size} bytes, content {})",
            shown::text(path.as_str()),
            &content.to_hex()[..12]
        ),
        Op::Delete { path } => format!("delete {}", shown::text(path.as_str())),
        Op::Rename { from, to } => format!(
            "rename {} -> {}",
            shown::text(from.as_str()),
            shown::text(to.as_str())
        ),
        Op::Mkdir { path } => format!("mkdir {}", shown::text(path.as_str())),
        Op::Merge => "merge".to_string(),
        Op::AddDevice { device, name } => {
            format!(
                "add-device {} ({})",
                device.display_name(),
                shown::text(name)
            )
        }
        Op::RemoveDevice { device } => format!("remove-device {}", device.display_name()),
    }
}

fn log(data_dir: &Path, only: Option<LibraryId>) -> anyhow::Result<()> {
    let store = open_store(data_dir)?;
    let libs = match only {
        Some(l) => vec![l],
        None => store.libraries(),
    };
    let mut out = std::io::stdout().lock();
    for lib in libs {
        let summary = store.summary(&lib)?;
        writeln!(
            out,
            "library {lib}: {} entries, {} head(s), {} member(s)",
            summary.entries,
            summary.heads.len(),
            summary.members.len()
        )?;
        let hashes = store.log(&lib)?;
        for chunk in hashes.chunks(4096) {
            for e in store.entries(&lib, chunk)?.into_iter().flatten() {
                let m = e.meta();
                writeln!(
                    out,
                    "{} L{:<5} {} #{:<4} {}",
                    e.hash().short(),
                    m.lamport,
                    m.author.short_id(),
                    m.seq,
                    describe(&m.op)
                )?;
            }
        }
    }
    Ok(())
}

fn show(data_dir: &Path, hash: EntryHash) -> anyhow::Result<()> {
    let store = open_store(data_dir)?;
    let Some((lib, e)) = store.entry(&hash)? else {
        bail!("no entry {hash}");
    };
    let m = e.meta();
    println!("hash:      {}", e.hash());
    println!("library:   {lib}");
    println!("author:    {} ({})", m.author.display_name(), m.author);
    println!("seq:       {}", m.seq);
    println!("lamport:   {}", m.lamport);
    println!(
        "wall time: {} ms ({} UTC)",
        m.wall_ms,
        crate::chain::fold::utc_stamp(m.wall_ms)
    );
    if e.parents().is_empty() {
        println!("parents:   (genesis)");
    }
    for p in e.parents() {
        println!("parent:    {p}");
    }
    println!("operation: {}", describe(&m.op));
    if let Op::Put {
        mtime_ms,
        content,
        nextcloud,
        ..
    } = &m.op
    {
        println!("mtime:     {mtime_ms} ms");
        println!("content:   {content}");
        if let Some(nc) = nextcloud {
            println!("nextcloud: fileid {} etag {}", nc.fileid, nc.etag);
        }
    }
    println!("signature: {}", crate::chain::types::to_hex(e.signature()));
    println!("bytes:     {}", e.to_bytes().len());
    Ok(())
}

fn verify(data_dir: &Path) -> anyhow::Result<()> {
    // Exit 1 means damage; a device that never stored anything has none.
    if !data_dir.join(db::DB_FILE).exists() {
        println!(
            "ok: nothing to verify (no database in {})",
            data_dir.display()
        );
        return Ok(());
    }
    // Opening verifies what no checkpoint covers; `verify` then re-reads and checks every
    // entry from scratch, checkpoint or not. Either refuses a damaged chain, naming it.
    let store = open_store(data_dir)?;
    let report = store.verify()?;
    println!(
        "ok: {} libraries, {} entries verified",
        report.libraries, report.entries
    );
    Ok(())
}

fn init(data_dir: &Path, name: &str) -> anyhow::Result<()> {
    let (id, _) = DeviceIdentity::load_or_create(data_dir)?;
    let database = db::open(data_dir)?;
    let store = ChainStore::open(database).context("the chain does not verify")?;
    let (lib, genesis) = store.create_library(id.signing_key(), name)?;
    println!("library {lib} (genesis {})", genesis.hash());
    Ok(())
}

fn tree(data_dir: &Path, lib: LibraryId) -> anyhow::Result<()> {
    let store = open_store(data_dir)?;
    for (path, item) in store.tree(&lib)?.items {
        match item {
            TreeItem::Dir { .. } => println!("{}/", shown::text(path.as_str())),
            TreeItem::File { size, content, .. } => {
                println!(
                    "{}  {size} bytes  {}",
                    shown::text(path.as_str()),
                    &content.to_hex()[..12]
                )
            }
        }
    }
    Ok(())
}

fn sample_op(i: u64) -> anyhow::Result<Op> {
    let mut content = [0u8; 32];
    content[..8].copy_from_slice(&i.to_be_bytes());
    Ok(Op::Put {
        path: ChainPath::new(&format!("dir-{}/file-{}.txt", i % 17, i % 1000))?,
        size: i * 1000,
        mtime_ms: i64::try_from(i).unwrap_or(0),
        content: ContentId(content),
        nextcloud: None,
    })
}

fn stress_append(data_dir: &Path, batch: usize, count: Option<u64>) -> anyhow::Result<()> {
    let (id, _) = DeviceIdentity::load_or_create(data_dir)?;
    let database = db::open(data_dir)?;
    let store = ChainStore::open(database).context("the chain does not verify")?;
    let lib = match store.libraries().first() {
        Some(l) => *l,
        None => store.create_library(id.signing_key(), "stress")?.0,
    };
    let mut i = store.len(&lib)? as u64;
    let mut out = std::io::stdout().lock();
    loop {
        let ops = (0..batch as u64)
            .map(|k| sample_op(i + k))
            .collect::<Result<Vec<_>, _>>()?;
        let entries = store.append_batch(&lib, id.signing_key(), ops)?;
        for e in &entries {
            writeln!(out, "{}", e.hash())?;
        }
        out.flush()?;
        i += entries.len() as u64;
        if count.is_some_and(|c| i >= c) {
            return Ok(());
        }
    }
}

fn rate(n: usize, secs: f64) -> f64 {
    if secs > 0.0 {
        n as f64 / secs
    } else {
        0.0
    }
}

fn bench(
    n: usize,
    single: usize,
    work_dir: Option<PathBuf>,
    json_out: Option<PathBuf>,
) -> anyhow::Result<()> {
    use ed25519_dalek::{Signer, Verifier};
    use sha3::{Digest, Sha3_256};

    let parent = work_dir.unwrap_or_else(std::env::temp_dir);
    std::fs::create_dir_all(&parent)?;
    let work = parent.join(format!("chain-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).context("cannot make a work directory")?;
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "chain bench: {n} entries, {threads} cores, load average {}, work dir {}",
        load.split_whitespace().next().unwrap_or("?"),
        work.display()
    );

    // Baselines, same run.
    let buf = vec![0x5au8; 64 << 20];
    let t = Instant::now();
    let mut reps = 0usize;
    let mut d = [0u8; 32];
    while t.elapsed().as_secs_f64() < 1.0 {
        d = Sha3_256::digest(&buf).into();
        reps += 1;
    }
    let sha3_mb_s = (reps * 64) as f64 / t.elapsed().as_secs_f64();
    let key = DeviceIdentity::generate();
    let sk = key.signing_key();
    let vk = sk.verifying_key();
    let sigs: Vec<_> = (0..4000u32)
        .map(|i| {
            let mut m = d;
            m[..4].copy_from_slice(&i.to_be_bytes());
            (m, sk.sign(&m))
        })
        .collect();
    let t = Instant::now();
    for (m, s) in &sigs {
        vk.verify(m, s).context("baseline signature")?;
    }
    let ed_verify = rate(sigs.len(), t.elapsed().as_secs_f64());
    let t = Instant::now();
    for (m, _) in &sigs {
        std::hint::black_box(sk.sign(m));
    }
    let ed_sign = rate(sigs.len(), t.elapsed().as_secs_f64());
    // The ceiling for checking peers' entries: ed25519-dalek's batch verify, 2048 per call,
    // on every core, nothing else.
    let t = Instant::now();
    let per = sigs.len().div_ceil(threads);
    std::thread::scope(|s| {
        for chunk in sigs.chunks(per) {
            s.spawn(move || {
                for part in chunk.chunks(2048) {
                    let msgs: Vec<&[u8]> = part.iter().map(|(m, _)| &m[..]).collect();
                    let ss: Vec<_> = part.iter().map(|(_, s)| *s).collect();
                    let ks = vec![vk; part.len()];
                    std::hint::black_box(ed25519_dalek::verify_batch(&msgs, &ss, &ks).is_ok());
                }
            });
        }
    });
    let ed_batch = rate(sigs.len(), t.elapsed().as_secs_f64());
    // The ceiling for local appends: signing on every core, nothing else.
    let t = Instant::now();
    std::thread::scope(|s| {
        for chunk in sigs.chunks(per) {
            s.spawn(move || {
                for (m, _) in chunk {
                    std::hint::black_box(sk.sign(m));
                }
            });
        }
    });
    let ed_sign_all = rate(sigs.len(), t.elapsed().as_secs_f64());
    println!(
        "baseline: SHA3-256 {sha3_mb_s:.0} MB/s; ed25519 one core: verify {ed_verify:.0}/s, sign {ed_sign:.0}/s; on {threads} cores: batch verify {ed_batch:.0}/s, sign {ed_sign_all:.0}/s"
    );

    // Single durable appends: one fsync'd transaction each.
    let store = ChainStore::open(db::open(&work.join("single"))?)?;
    let (lib, _) = store.create_library(sk, "bench")?;
    let t = Instant::now();
    for i in 0..single as u64 {
        store.append(&lib, sk, sample_op(i)?)?;
    }
    let single_rate = rate(single, t.elapsed().as_secs_f64());
    println!("durable append, one entry per commit: {single_rate:.0} entries/s");
    drop(store);

    // Batched durable appends.
    const BATCH: usize = 1000;
    let path = work.join("big");
    let store = ChainStore::open(db::open(&path)?)?;
    let (lib, _) = store.create_library(sk, "bench")?;
    let mut i = 0u64;
    let t = Instant::now();
    while (i as usize) < n {
        let ops = (0..BATCH as u64)
            .map(|k| sample_op(i + k))
            .collect::<Result<Vec<_>, _>>()?;
        i += store.append_batch(&lib, sk, ops)?.len() as u64;
    }
    let batched_rate = rate(i as usize, t.elapsed().as_secs_f64());
    println!("durable append, {BATCH} entries per commit: {batched_rate:.0} entries/s");

    // Verify: re-read everything from disk and check it all.
    let t = Instant::now();
    let report = store.verify()?;
    let verify_rate = rate(report.entries as usize, t.elapsed().as_secs_f64());
    println!("verify (read, decode, hash, links, signatures): {verify_rate:.0} entries/s");

    // Open = verify + build the index.
    drop(store);
    let t = Instant::now();
    let store = ChainStore::open(db::open(&path)?)?;
    let open_rate = rate(store.len(&lib)?, t.elapsed().as_secs_f64());
    println!("open without a checkpoint (verify and index): {open_rate:.0} entries/s");

    // A clean close saves a checkpoint; the next open reads it back.
    let t = Instant::now();
    store.checkpoint()?;
    let checkpoint_rate = rate(store.len(&lib)?, t.elapsed().as_secs_f64());
    drop(store);
    let t = Instant::now();
    let store = ChainStore::open(db::open(&path)?)?;
    let open_ck_rate = rate(store.len(&lib)?, t.elapsed().as_secs_f64());
    println!(
        "checkpoint at close: {checkpoint_rate:.0} entries/s; open after it: {open_ck_rate:.0} entries/s"
    );

    // Fold.
    let t = Instant::now();
    let tree = store.tree(&lib)?;
    let fold_rate = rate(store.len(&lib)?, t.elapsed().as_secs_f64());
    println!(
        "fold to tree ({} files): {fold_rate:.0} entries/s",
        tree.files()
    );

    // The fold kept between calls: one more local append, then the tree again.
    let mut after_append_ms = Vec::new();
    for k in 0..20u64 {
        store.append(&lib, sk, sample_op(n as u64 + k)?)?;
        let t = Instant::now();
        store.tree(&lib)?;
        after_append_ms.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    after_append_ms.sort_by(f64::total_cmp);
    let fold_incr_p50_ms = after_append_ms[after_append_ms.len() / 2];
    println!("tree after one more append (kept fold), p50: {fold_incr_p50_ms:.2} ms");

    // Sync ingest: everything into a fresh store, in batches as /harp/sync/1 fetches them
    // (the node's default), the sending side reading the next batch while the receiving side
    // stores this one (as two machines do).
    let sync_batch = crate::p2p::P2pConfig::default().sync_batch as usize;
    let other = ChainStore::open(db::open(&work.join("replica"))?)?;
    let t = Instant::now();
    let moved = std::thread::scope(|s| -> anyhow::Result<usize> {
        let (tx, rx) = std::sync::mpsc::sync_channel(2);
        let missing = store.missing_for(&lib, &[], sync_batch)?;
        s.spawn(move || {
            for batch in missing {
                if tx.send(batch).is_err() {
                    return;
                }
            }
        });
        let mut moved = 0usize;
        for batch in rx {
            moved += other.insert_remote(&lib, batch?)?.inserted;
        }
        Ok(moved)
    })?;
    let ingest_rate = rate(moved, t.elapsed().as_secs_f64());
    println!(
        "sync ingest (missing_for + insert_remote, {sync_batch} per batch): {ingest_rate:.0} entries/s"
    );
    if other.heads(&lib)? != store.heads(&lib)? {
        bail!("replica heads differ after sync");
    }

    // Written by hand so that "bench" comes first, as the convention shows it.
    let line = format!(
        concat!(
            r#"{{"bench":"chain","entries":{},"cores":{},"#,
            r#""append_single_entries_s":{:.0},"append_batched_entries_s":{:.0},"append_batch_size":{},"#,
            r#""verify_entries_s":{:.0},"open_entries_s":{:.0},"checkpoint_entries_s":{:.0},"open_after_checkpoint_entries_s":{:.0},"fold_entries_s":{:.0},"tree_after_append_p50_ms":{:.2},"#,
            r#""sync_ingest_entries_s":{:.0},"sync_batch":{},"verify_ratio_to_ed25519_one_core":{:.2},"#,
            r#""baseline":{{"sha3_256_mb_s":{:.0},"ed25519_verify_per_s":{:.0},"ed25519_sign_per_s":{:.0},"ed25519_batch_verify_all_cores_per_s":{:.0},"ed25519_sign_all_cores_per_s":{:.0}}}}}"#
        ),
        n,
        threads,
        single_rate,
        batched_rate,
        BATCH,
        verify_rate,
        open_rate,
        checkpoint_rate,
        open_ck_rate,
        fold_rate,
        fold_incr_p50_ms,
        ingest_rate,
        sync_batch,
        verify_rate / ed_verify,
        sha3_mb_s,
        ed_verify,
        ed_sign,
        ed_batch,
        ed_sign_all
    );
    println!("{line}");
    if let Some(p) = json_out {
        if let Some(dir) = p.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(&p, format!("{line}\n"))?;
    }
    drop((store, other));
    let _ = std::fs::remove_dir_all(&work);
    Ok(())
}
