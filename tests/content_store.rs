//! The content store on real files and a real database: round trips, content-defined
//! chunking, verification, the cache policy, reopening, and a full disk.

use std::collections::HashSet;
use std::io::Read;
use std::path::Path;

use harpbridge::chain::{ContentId, LibraryId};
use harpbridge::content::{
    BlockHash, ChunkerParams, ContentError, ContentStore, Manifest, ManifestId, StoreOptions,
};

/// Deterministic pseudo-random bytes (xorshift64*), fast enough for tens of MiB in debug.
fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = vec![0u8; len];
    for c in out.chunks_mut(8) {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        let v = x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes();
        c.copy_from_slice(&v[..c.len()]);
    }
    out
}

const LIB: LibraryId = LibraryId([7; 16]);
const LIB2: LibraryId = LibraryId([8; 16]);

struct Fixture {
    _dir: tempfile::TempDir,
    store: ContentStore,
}

fn open_at(data: &Path, options: StoreOptions) -> ContentStore {
    let db = harpbridge::db::open(data).unwrap();
    ContentStore::open(db, data, options).unwrap()
}

fn fixture(options: StoreOptions) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let store = open_at(&data, options);
    Fixture { _dir: dir, store }
}

/// Small blocks (1 KiB / 4 KiB / 16 KiB) so cache tests have many blocks cheaply.
fn small_chunks() -> StoreOptions {
    StoreOptions {
        cache_limit: u64::MAX,
        chunker: ChunkerParams {
            min: 1024,
            avg: 4096,
            max: 16384,
            ..ChunkerParams::DEFAULT
        },
    }
}

fn read_all(store: &ContentStore, id: &ManifestId) -> Vec<u8> {
    let mut out = Vec::new();
    store
        .open_reader(id)
        .unwrap()
        .read_to_end(&mut out)
        .unwrap();
    out
}

fn block_files(root: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}

#[test]
fn round_trip_of_random_files_is_byte_identical() {
    let f = fixture(StoreOptions::default());
    let p = ChunkerParams::DEFAULT;
    let sizes = [
        0usize,
        1,
        p.min as usize - 1,
        p.min as usize,
        p.min as usize + 1,
        p.max as usize,
        p.max as usize + 1,
        20 * 1024 * 1024 + 12_345,
    ];
    for (i, &size) in sizes.iter().enumerate() {
        let data = random_bytes(size, i as u64 + 1);
        // Feed in odd-sized pieces, as a network stream would arrive.
        let mut w = f.store.writer(LIB);
        for piece in data.chunks(100_003) {
            w.write(piece).unwrap();
        }
        let got = w.finish().unwrap();
        assert_eq!(got.size, size as u64, "size {size}");
        assert_eq!(read_all(&f.store, &got.id), data, "size {size}");

        // The manifest is what the reference chunker (fastcdc's StreamCDC) cuts.
        let m = f.store.manifest(&got.id).unwrap();
        let reference: Vec<(BlockHash, u32)> =
            fastcdc::v2020::StreamCDC::new(&data[..], p.min, p.avg, p.max)
                .map(|c| {
                    let c = c.unwrap();
                    (BlockHash::of(&c.data), c.length as u32)
                })
                .collect();
        let ours: Vec<(BlockHash, u32)> = m.blocks.iter().map(|b| (b.hash, b.size)).collect();
        assert_eq!(ours, reference, "size {size}");
        assert_eq!(m.total_size, size as u64);
        // The id is the BLAKE3 of the encoded manifest, and converts to the chain's ContentId.
        assert_eq!(ManifestId::of(&m.encode()), got.id);
        let cid: ContentId = got.id.into();
        assert_eq!(ManifestId::from(cid), got.id);
        // ingest_reader of the same bytes gives the same version and stores nothing new.
        let again = f.store.ingest_reader(LIB, &data[..]).unwrap();
        assert_eq!(again.id, got.id);
        assert_eq!(again.new_blocks, 0);
    }
    assert!(f.store.verify_all().unwrap().is_empty());
    // Every block file is named by the BLAKE3 of its bytes.
    for path in block_files(f.store.blocks_dir()) {
        let name = path.file_name().unwrap().to_str().unwrap().to_string();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(BlockHash::of(&bytes).to_hex(), name);
    }
}

#[test]
fn an_edit_in_the_middle_changes_only_a_few_blocks() {
    let f = fixture(StoreOptions::default());
    let original = random_bytes(24 * 1024 * 1024, 42);
    let a = f.store.ingest_reader(LIB, &original[..]).unwrap();

    // Insert 100 bytes at 12 MiB: a fixed-size chunker would change every later block.
    let mut inserted = original.clone();
    let at = 12 * 1024 * 1024;
    inserted.splice(at..at, random_bytes(100, 9));
    let b = f.store.ingest_reader(LIB, &inserted[..]).unwrap();

    // Overwrite 10 bytes at 5 MiB.
    let mut overwritten = original.clone();
    overwritten[5 * 1024 * 1024..5 * 1024 * 1024 + 10].copy_from_slice(b"0123456789");
    let c = f.store.ingest_reader(LIB, &overwritten[..]).unwrap();

    let ma = f.store.manifest(&a.id).unwrap();
    let blocks_a: HashSet<BlockHash> = ma.blocks.iter().map(|b| b.hash).collect();
    assert!(ma.blocks.len() >= 10, "{} blocks", ma.blocks.len());
    for (v, name) in [(b, "insert"), (c, "overwrite")] {
        let m = f.store.manifest(&v.id).unwrap();
        let changed = m
            .blocks
            .iter()
            .filter(|b| !blocks_a.contains(&b.hash))
            .count();
        assert!(
            (1..=2).contains(&changed),
            "{name}: {changed} blocks changed"
        );
        assert_eq!(v.new_blocks as usize, changed, "{name}");
    }
    assert_eq!(read_all(&f.store, &b.id), inserted);
    assert_eq!(read_all(&f.store, &c.id), overwritten);
}

#[test]
fn a_corrupted_block_on_disk_is_detected_on_read() {
    let f = fixture(StoreOptions::default());
    let data = random_bytes(3 * 1024 * 1024, 5);
    let v = f.store.ingest_reader(LIB, &data[..]).unwrap();
    let m = f.store.manifest(&v.id).unwrap();
    let victim = m.blocks[1];
    let path = f.store.block_path(&victim.hash);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[1000] ^= 0x40;
    std::fs::write(&path, &bytes).unwrap();

    let mut out = Vec::new();
    let err = f
        .store
        .open_reader(&v.id)
        .unwrap()
        .read_to_end(&mut out)
        .unwrap_err();
    let inner = err.get_ref().and_then(|e| e.downcast_ref::<ContentError>());
    assert!(
        matches!(inner, Some(ContentError::CorruptBlock { hash }) if *hash == victim.hash),
        "{err:?}"
    );
    // The bad copy is gone, so the block is reported missing and can be fetched again.
    assert!(!path.exists());
    assert!(!f.store.has_block(&victim.hash).unwrap());
    let missing = f.store.missing_blocks(&v.id).unwrap();
    assert_eq!(
        missing.iter().map(|b| b.hash).collect::<Vec<_>>(),
        vec![victim.hash]
    );
    assert!(matches!(
        f.store.read_block(&victim.hash),
        Err(ContentError::BlockNotFound(_))
    ));

    // A good copy (as from a peer) repairs the version.
    let start: usize = m.blocks[0].size as usize;
    let good = &data[start..start + victim.size as usize];
    assert!(f.store.put_block(&victim.hash, good).unwrap());
    assert!(f.store.missing_blocks(&v.id).unwrap().is_empty());
    assert_eq!(read_all(&f.store, &v.id), data);
}

#[test]
fn put_block_rejects_bytes_that_do_not_match_the_hash() {
    let f = fixture(StoreOptions::default());
    let good = random_bytes(70_000, 1);
    let h = BlockHash::of(&good);
    let mut bad = good.clone();
    bad[0] ^= 1;
    match f.store.put_block(&h, &bad) {
        Err(ContentError::HashMismatch { expected, actual }) => {
            assert_eq!(expected, h);
            assert_eq!(actual, BlockHash::of(&bad));
        }
        other => panic!("expected HashMismatch, got {other:?}"),
    }
    assert!(!f.store.has_block(&h).unwrap());
    assert!(!f.store.block_path(&h).exists());
    assert!(block_files(f.store.blocks_dir()).is_empty());

    assert!(f.store.put_block(&h, &good).unwrap());
    assert!(
        !f.store.put_block(&h, &good).unwrap(),
        "second put is a no-op"
    );
    assert_eq!(f.store.read_block(&h).unwrap(), good);
    let too_big = vec![0u8; harpbridge::content::MAX_BLOCK_SIZE as usize + 1];
    assert!(matches!(
        f.store.put_block(&BlockHash::of(&too_big), &too_big),
        Err(ContentError::BlockTooLarge(_))
    ));
}

#[test]
fn manifests_from_peers_are_checked_and_missing_blocks_listed() {
    let a = fixture(StoreOptions::default());
    let b = fixture(StoreOptions::default());
    let data = random_bytes(5 * 1024 * 1024, 77);
    let v = a.store.ingest_reader(LIB, &data[..]).unwrap();
    let bytes = a.store.manifest_bytes(&v.id).unwrap().unwrap();

    // Wrong id, or tampered bytes: refused.
    assert!(matches!(
        b.store.put_manifest(&ManifestId([1; 32]), &bytes),
        Err(ContentError::ManifestIdMismatch { .. })
    ));
    let mut tampered = bytes.clone();
    tampered[67] ^= 1; // the first block's size: the sizes no longer add up
    assert!(b
        .store
        .put_manifest(&ManifestId::of(&tampered), &tampered)
        .is_err());

    // The transfer flow: hold the version, store the manifest, fetch what is missing.
    b.store.set_current(LIB, &[v.id]).unwrap();
    assert!(matches!(
        b.store.missing_blocks(&v.id),
        Err(ContentError::ManifestNotFound(_))
    ));
    let m = b.store.put_manifest(&v.id, &bytes).unwrap();
    let missing = b.store.missing_blocks(&v.id).unwrap();
    assert_eq!(missing.len(), m.blocks.len());
    for blk in &missing {
        let block = a.store.read_block(&blk.hash).unwrap();
        b.store.put_block(&blk.hash, &block).unwrap();
    }
    assert!(b.store.missing_blocks(&v.id).unwrap().is_empty());
    assert_eq!(read_all(&b.store, &v.id), data);
    let s = b.store.stats().unwrap();
    assert_eq!(s.needed_bytes, data.len() as u64);
}

#[test]
fn eviction_keeps_current_versions_and_follows_lru_order() {
    let f = fixture(small_chunks());
    let s = &f.store;
    // Four loose blocks (as received for nothing current yet), 10,000 bytes each.
    let loose: Vec<Vec<u8>> = (0..4).map(|i| random_bytes(10_000, 100 + i)).collect();
    let hashes: Vec<BlockHash> = loose.iter().map(|b| BlockHash::of(b)).collect();
    for (h, b) in hashes.iter().zip(&loose) {
        s.put_block(h, b).unwrap();
    }
    // A current version of library 1 (many small blocks).
    let file = random_bytes(200_000, 3);
    let v = s.ingest_reader(LIB, &file[..]).unwrap();
    let vm = s.manifest(&v.id).unwrap();
    assert!(vm.blocks.len() > 5);
    // Use order: read block 0 last, so blocks 1, 2, 3 are older.
    s.read_block(&hashes[0]).unwrap();

    let total = s.stats().unwrap().total_bytes;
    assert_eq!(total, 40_000 + 200_000);
    // Room for all but two loose blocks: the two least recently used (1 and 2) go.
    s.set_cache_limit(total - 15_000);
    let r = s.evict().unwrap();
    assert_eq!(r.evicted, 2);
    assert_eq!(r.freed_bytes, 20_000);
    assert!(!r.over_limit);
    let present: Vec<bool> = hashes.iter().map(|h| s.has_block(h).unwrap()).collect();
    assert_eq!(present, vec![true, false, false, true]);
    assert!(!s.block_path(&hashes[1]).exists());

    // A limit nothing can meet: every loose block goes, the version's blocks stay.
    s.set_cache_limit(1000);
    let r = s.evict().unwrap();
    assert_eq!(r.evicted, 2);
    assert!(r.over_limit);
    assert_eq!(r.total_bytes, 200_000);
    assert!(s.missing_blocks(&v.id).unwrap().is_empty());
    assert_eq!(read_all(s, &v.id), file);

    // Shared by two libraries: released by one, still needed by the other.
    s.set_current(LIB2, &[v.id]).unwrap();
    s.set_current(LIB, &[]).unwrap();
    assert!(s.missing_blocks(&v.id).unwrap().is_empty());
    assert_eq!(s.current(LIB2).unwrap(), vec![v.id]);
    // Released by both: evicted by the automatic pass that set_current runs.
    s.set_current(LIB2, &[]).unwrap();
    assert_eq!(s.missing_blocks(&v.id).unwrap().len(), vm.blocks.len());
    let st = s.stats().unwrap();
    assert_eq!((st.blocks, st.total_bytes), (0, 0));
    assert!(block_files(s.blocks_dir()).is_empty());
}

#[test]
fn an_ingest_over_the_limit_evicts_old_versions_not_the_new_one() {
    let f = fixture(StoreOptions {
        cache_limit: 300_000,
        ..small_chunks()
    });
    let s = &f.store;
    let old = random_bytes(200_000, 1);
    let new = random_bytes(200_000, 2);
    let v1 = s.ingest_reader(LIB, &old[..]).unwrap();
    // The tree moves on: only v2 will be current.
    let v2 = {
        let mut w = s.writer(LIB);
        w.write(&new).unwrap();
        let v2 = w.finish().unwrap();
        s.set_current(LIB, &[v2.id]).unwrap();
        v2
    };
    assert!(s.missing_blocks(&v2.id).unwrap().is_empty());
    assert_eq!(read_all(s, &v2.id), new);
    assert!(!s.missing_blocks(&v1.id).unwrap().is_empty());
    assert!(s.stats().unwrap().total_bytes <= 300_000);
}

#[test]
fn reopening_keeps_everything_and_the_lru_clock() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("d");
    let file = random_bytes(2_000_000, 11);
    let id = {
        let s = open_at(&data, StoreOptions::default());
        s.ingest_reader(LIB, &file[..]).unwrap().id
    };
    let s = open_at(&data, StoreOptions::default());
    assert_eq!(s.open_report(), &Default::default());
    assert_eq!(read_all(&s, &id), file);
    assert_eq!(s.current(LIB).unwrap(), vec![id]);
    assert_eq!(s.stats().unwrap().needed_bytes, 2_000_000);
}

#[test]
fn leftovers_of_a_crash_are_cleaned_or_adopted_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("d");
    let good = random_bytes(50_000, 1);
    let h = BlockHash::of(&good);
    let fake = random_bytes(1000, 2);
    let fake_name = BlockHash::of(b"something else");
    {
        let s = open_at(&data, StoreOptions::default());
        // Simulate what a kill -9 can leave: a whole block file the index never heard of
        // (killed between rename and commit), a partial temporary file, and a damaged file.
        let dir_of = |h: &BlockHash| s.block_path(h).parent().unwrap().to_path_buf();
        std::fs::create_dir_all(dir_of(&h)).unwrap();
        std::fs::write(s.block_path(&h), &good).unwrap();
        std::fs::write(
            dir_of(&h).join(format!("{}.1-1.tmp", h.to_hex())),
            &good[..10],
        )
        .unwrap();
        std::fs::create_dir_all(dir_of(&fake_name)).unwrap();
        std::fs::write(s.block_path(&fake_name), &fake).unwrap();
    }
    let s = open_at(&data, StoreOptions::default());
    let r = s.open_report();
    assert_eq!((r.removed_temp, r.adopted, r.discarded), (1, 1, 1));
    assert!(s.has_block(&h).unwrap());
    assert!(!s.has_block(&fake_name).unwrap());
    assert_eq!(block_files(s.blocks_dir()), vec![s.block_path(&h)]);
    assert_eq!(s.read_block(&h).unwrap(), good);
    // Adopted blocks are cache: evictable.
    s.set_cache_limit(0);
    assert_eq!(s.evict().unwrap().evicted, 1);
}

#[test]
fn manifest_decoding_names_the_algorithm() {
    let f = fixture(StoreOptions::default());
    let v = f
        .store
        .ingest_reader(LIB, &random_bytes(10, 1)[..])
        .unwrap();
    let bytes = f.store.manifest_bytes(&v.id).unwrap().unwrap();
    let m = Manifest::decode(&bytes).unwrap();
    assert_eq!(m.hash_alg, harpbridge::content::manifest::HASH_BLAKE3);
    assert_eq!(m.chunker, ChunkerParams::DEFAULT);
    let mut other = bytes.clone();
    other[5] = 9; // an algorithm this build does not know
    assert!(Manifest::decode(&other).is_err());
}

/// A full disk: the ingest fails with DiskFull, leaves no partial file and no manifest, and
/// the store keeps working once there is room. Needs a small tmpfs (root with mount
/// rights); skipped with a note otherwise.
#[test]
fn disk_full_is_a_clear_error_and_leaves_nothing_half_written() {
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("small");
    std::fs::create_dir_all(&mnt).unwrap();
    let ok = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=3m", "tmpfs"])
        .arg(&mnt)
        .stderr(std::process::Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !ok {
        eprintln!("SKIPPED: cannot mount a tmpfs here to fill a disk");
        return;
    }
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(&self.0).status();
        }
    }
    let _guard = Unmount(mnt.clone());
    // The database on the big disk, the blocks on the 3 MiB tmpfs.
    let db = harpbridge::db::open(&dir.path().join("db")).unwrap();
    let s = ContentStore::open(db.clone(), &mnt, StoreOptions::default()).unwrap();
    let big = random_bytes(8 * 1024 * 1024, 3);
    let err = s.ingest_reader(LIB, &big[..]).unwrap_err();
    assert!(err.is_disk_full(), "{err:?}");
    assert!(err.to_string().contains("disk full"), "{err}");
    for p in block_files(s.blocks_dir()) {
        let name = p.file_name().unwrap().to_str().unwrap();
        assert!(!name.ends_with(".tmp"), "left a temporary file {name}");
        assert_eq!(BlockHash::of(&std::fs::read(&p).unwrap()).to_hex(), name);
    }
    assert_eq!(s.stats().unwrap().manifests, 0);
    // Whole blocks written before the disk filled are adopted on reopen, then evictable.
    drop(s);
    let s = ContentStore::open(db, &mnt, StoreOptions::default()).unwrap();
    s.set_cache_limit(0);
    s.evict().unwrap();
    let small = random_bytes(500_000, 4);
    let v = s.ingest_reader(LIB, &small[..]).unwrap();
    assert_eq!(read_all(&s, &v.id), small);
}

#[test]
fn put_blocks_stores_the_good_ones_and_names_the_bad() {
    let f = fixture(StoreOptions::default());
    let blocks: Vec<Vec<u8>> = (0..5)
        .map(|i| random_bytes(100_000 + i, 50 + i as u64))
        .collect();
    let hashes: Vec<BlockHash> = blocks.iter().map(|b| BlockHash::of(b)).collect();
    let mut bad = blocks[2].clone();
    bad[7] ^= 0x80;
    let batch: Vec<(BlockHash, &[u8])> = hashes
        .iter()
        .zip(&blocks)
        .enumerate()
        .map(|(i, (h, b))| (*h, if i == 2 { &bad[..] } else { &b[..] }))
        .collect();
    let r = f.store.put_blocks(batch).unwrap();
    assert_eq!(r.stored, 4);
    assert_eq!(r.rejected, vec![hashes[2]]);
    for (i, h) in hashes.iter().enumerate() {
        assert_eq!(f.store.has_block(h).unwrap(), i != 2);
    }
    assert_eq!(f.store.read_block(&hashes[4]).unwrap(), blocks[4]);
    // Again, with the good copy: only that one is new.
    let again: Vec<(BlockHash, &[u8])> = hashes
        .iter()
        .zip(&blocks)
        .map(|(h, b)| (*h, &b[..]))
        .collect();
    let r = f.store.put_blocks(again).unwrap();
    assert_eq!((r.stored, r.rejected.len()), (1, 0));
    assert!(f.store.verify_all().unwrap().is_empty());
}

#[test]
fn staged_blocks_are_invisible_until_committed_and_dropping_them_leaves_nothing() {
    let f = fixture(StoreOptions::default());
    let blocks: Vec<Vec<u8>> = (0..6)
        .map(|i| random_bytes(70_000 + i, 90 + i as u64))
        .collect();
    let hashes: Vec<BlockHash> = blocks.iter().map(|b| BlockHash::of(b)).collect();
    let pairs = |r: std::ops::Range<usize>| -> Vec<(BlockHash, &[u8])> {
        r.map(|i| (hashes[i], &blocks[i][..])).collect()
    };
    let mut bad = blocks[5].clone();
    bad[0] ^= 1;

    // Two groups staged as they "arrive", a bad block among them.
    let (first, rejected) = f.store.stage_blocks(pairs(0..2)).unwrap();
    assert!(rejected.is_empty());
    let mut second_in = pairs(2..4);
    second_in.push((hashes[5], &bad[..]));
    let (second, rejected) = f.store.stage_blocks(second_in).unwrap();
    assert_eq!(rejected, vec![hashes[5]]);
    assert_eq!((first.len(), second.len()), (2, 2));
    // Written, not yet there.
    for h in &hashes {
        assert!(!f.store.has_block(h).unwrap());
    }
    assert!(!block_files(f.store.blocks_dir()).is_empty());

    // A third group is dropped (the fetch failed): its files go.
    let (dropped, _) = f.store.stage_blocks(pairs(4..5)).unwrap();
    drop(dropped);
    assert!(!f.store.has_block(&hashes[4]).unwrap());

    // One commit for both groups.
    assert_eq!(f.store.commit_blocks(vec![first, second]).unwrap(), 4);
    for (i, h) in hashes.iter().enumerate() {
        assert_eq!(f.store.has_block(h).unwrap(), i < 4, "block {i}");
    }
    assert_eq!(f.store.read_block(&hashes[3]).unwrap(), blocks[3]);
    let files = block_files(f.store.blocks_dir());
    assert_eq!(files.len(), 4, "{files:?}");
    assert!(files.iter().all(|p| !p.to_string_lossy().ends_with(".tmp")));
    assert!(f.store.verify_all().unwrap().is_empty());
    // Staging a block already stored writes nothing new, and committing it is not "new".
    let (again, _) = f.store.stage_blocks(pairs(0..1)).unwrap();
    assert_eq!(f.store.commit_blocks(vec![again]).unwrap(), 0);
    assert_eq!(block_files(f.store.blocks_dir()).len(), 4);
}

#[test]
fn an_abandoned_writer_leaves_no_temporary_files_and_its_blocks_as_cache() {
    let f = fixture(small_chunks());
    let data = random_bytes(400_000, 21);
    {
        let mut w = f.store.writer(LIB);
        w.write(&data).unwrap();
        // Dropped without finish: the download failed.
    }
    let files = block_files(f.store.blocks_dir());
    assert!(files.iter().all(|p| !p.to_string_lossy().ends_with(".tmp")));
    let s = f.store.stats().unwrap();
    assert_eq!(s.manifests, 0);
    assert_eq!(s.blocks as usize, files.len());
    assert!(s.blocks > 0, "no batch was published");
    assert_eq!(s.needed_bytes, 0);
    assert!(f.store.current(LIB).unwrap().is_empty());
    // The retry reuses them.
    let v = f.store.ingest_reader(LIB, &data[..]).unwrap();
    assert!(v.new_blocks < v.blocks);
    assert_eq!(read_all(&f.store, &v.id), data);
}

#[test]
fn a_block_file_deleted_behind_the_stores_back_is_reported_missing() {
    let f = fixture(StoreOptions::default());
    let data = random_bytes(1_000_000, 31);
    let v = f.store.ingest_reader(LIB, &data[..]).unwrap();
    let b = f.store.manifest(&v.id).unwrap().blocks[0];
    std::fs::remove_file(f.store.block_path(&b.hash)).unwrap();
    assert!(matches!(
        f.store.read_block(&b.hash),
        Err(ContentError::BlockNotFound(_))
    ));
    assert!(!f.store.has_block(&b.hash).unwrap());
    assert_eq!(f.store.missing_blocks(&v.id).unwrap(), vec![b]);
}
