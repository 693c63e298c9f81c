//! Checkpoints: a store opened from a checkpoint is the same store (heads, members, vectors,
//! tree, what it accepts next), entries after the checkpoint are still verified at open,
//! damage before it is named when read and by `verify`, and a damaged checkpoint is ignored.

use harpbridge::chain::{ChainError, ChainPath, ChainStore, ContentId, LibraryId, Op, ENTRIES};
use harpbridge::db::Db;
use harpbridge::identity::DeviceIdentity;
use redb::ReadableTable;

fn dev(n: u8) -> DeviceIdentity {
    DeviceIdentity::from_secret([n; 32])
}

fn put(path: &str, c: u8) -> Op {
    Op::Put {
        path: ChainPath::new(path).unwrap(),
        size: u64::from(c),
        mtime_ms: 0,
        content: ContentId([c; 32]),
        nextcloud: None,
    }
}

/// A library written by two devices, with a device added and then removed, concurrent
/// branches and a merge: every part of the index a checkpoint must carry.
fn busy_library(db: &Db) -> LibraryId {
    let (a, b, c) = (dev(1), dev(2), dev(3));
    let s = ChainStore::open(db.clone()).unwrap();
    let lib = LibraryId([7; 16]);
    s.create_library_with(lib, a.signing_key(), "a", 1).unwrap();
    let add = |d: &DeviceIdentity, name: &str| Op::AddDevice {
        device: d.device_key(),
        name: name.into(),
    };
    s.append_batch_at(&lib, a.signing_key(), vec![add(&b, "b"), add(&c, "c")], 2)
        .unwrap();
    let seen = s.heads(&lib).unwrap();
    for i in 0..50u8 {
        s.append_batch_at(
            &lib,
            a.signing_key(),
            vec![put(&format!("a{}", i % 7), i)],
            3,
        )
        .unwrap();
    }
    // b writes without having seen a's puts: a second branch.
    s.append_batch_after(
        &lib,
        b.signing_key(),
        vec![put("b", 1), put("a1", 9)],
        &seen,
    )
    .unwrap();
    s.merge(&lib, a.signing_key()).unwrap();
    s.append(
        &lib,
        b.signing_key(),
        Op::RemoveDevice {
            device: c.device_key(),
        },
    )
    .unwrap();
    lib
}

fn flip(db: &Db, lib: &LibraryId, at: u64) {
    let txn = db.begin_write().unwrap();
    {
        let mut t = txn.open_table(ENTRIES).unwrap();
        let mut v = t.get((lib.0, at)).unwrap().unwrap().value().to_vec();
        v[60] ^= 0x10;
        t.insert((lib.0, at), v.as_slice()).unwrap();
    }
    txn.commit().unwrap();
}

#[test]
fn a_store_opened_from_its_checkpoint_is_the_same_store() {
    let db = harpbridge::db::in_memory().unwrap();
    let lib = busy_library(&db);
    // Verified in full (no checkpoint yet): what the checkpointed store must equal.
    let full = ChainStore::open(db.clone()).unwrap();
    let (summary, vector, log, tree) = (
        full.summary(&lib).unwrap(),
        full.version_vector(&lib).unwrap(),
        full.log(&lib).unwrap(),
        full.tree(&lib).unwrap(),
    );
    assert_eq!(full.checkpoint().unwrap(), 1);
    assert_eq!(
        full.checkpoint().unwrap(),
        0,
        "nothing grew: nothing to save"
    );
    drop(full);

    let ck = ChainStore::open(db).unwrap();
    assert_eq!(ck.summary(&lib).unwrap(), summary);
    assert_eq!(ck.version_vector(&lib).unwrap(), vector);
    assert_eq!(ck.log(&lib).unwrap(), log);
    assert_eq!(ck.tree(&lib).unwrap(), tree);
    assert!(!ck.is_member(&lib, &dev(3).device_key()));
    assert!(ck.is_member(&lib, &dev(2).device_key()));
    assert_eq!(ck.checkpoint().unwrap(), 0, "opened from it: still current");

    // A replica that verified every entry through the sync path ...
    let replica = ChainStore::open(harpbridge::db::in_memory().unwrap()).unwrap();
    for batch in ck.missing_for_vector(&lib, &[], 7).unwrap() {
        replica.insert_remote(&lib, batch.unwrap()).unwrap();
    }
    assert_eq!(replica.heads(&lib).unwrap(), summary.heads);
    // ... accepts the same next entries, and both refuse the removed device.
    let a = dev(1);
    let next = |s: &ChainStore| s.append_batch_at(&lib, a.signing_key(), vec![put("z", 1)], 9);
    assert_eq!(next(&ck).unwrap(), next(&replica).unwrap());
    let c = dev(3);
    assert!(ck.append(&lib, c.signing_key(), put("c", 1)).is_err());
    assert!(replica.append(&lib, c.signing_key(), put("c", 1)).is_err());
}

#[test]
fn entries_after_the_checkpoint_are_verified_at_open() {
    let db = harpbridge::db::in_memory().unwrap();
    let lib = busy_library(&db);
    let s = ChainStore::open(db.clone()).unwrap();
    s.checkpoint().unwrap();
    let covered = s.len(&lib).unwrap() as u64;
    // Stored after the checkpoint, with no new one (a crash, not a clean close).
    for i in 0..5 {
        s.append(&lib, dev(1).signing_key(), put("late", i))
            .unwrap();
    }
    let heads = s.heads(&lib).unwrap();
    drop(s);
    assert_eq!(
        ChainStore::open(db.clone()).unwrap().heads(&lib).unwrap(),
        heads
    );
    flip(&db, &lib, covered + 2);
    match ChainStore::open(db).unwrap_err() {
        ChainError::Damaged { index, .. } => assert_eq!(index, covered + 2),
        other => panic!("expected Damaged, got {other}"),
    }
}

#[test]
fn damage_before_the_checkpoint_is_named_when_read_and_by_verify() {
    let db = harpbridge::db::in_memory().unwrap();
    let lib = busy_library(&db);
    let s = ChainStore::open(db.clone()).unwrap();
    s.checkpoint().unwrap();
    let victim = s.log(&lib).unwrap()[10];
    let at = {
        let entries = s.missing_for_vector(&lib, &[], 10_000).unwrap();
        let all: Vec<_> = entries.flat_map(|b| b.unwrap()).collect();
        assert!(all.iter().any(|e| e.hash() == victim));
        // Stored positions are the acceptance order; find the victim's.
        let txn = db.begin_read().unwrap();
        let t = txn.open_table(ENTRIES).unwrap();
        let found = t
            .iter()
            .unwrap()
            .map(|r| r.unwrap())
            .find(|(_, v)| {
                harpbridge::chain::Entry::from_bytes(v.value())
                    .unwrap()
                    .hash()
                    == victim
            })
            .unwrap();
        found.0.value().1
    };
    drop(s);
    flip(&db, &lib, at);

    // The checkpoint vouches for the prefix: open does not re-read it ...
    let s = ChainStore::open(db).unwrap();
    // ... but reading the damaged entry names it, and so does a full verify.
    match s.entries(&lib, &[victim]).unwrap_err() {
        ChainError::Damaged { index, hash, .. } => {
            assert_eq!((index, hash), (at, Some(victim)));
        }
        other => panic!("expected Damaged, got {other}"),
    }
    match s.verify().unwrap_err() {
        ChainError::Damaged { index, .. } => assert_eq!(index, at),
        other => panic!("expected Damaged, got {other}"),
    }
}

#[test]
fn a_damaged_checkpoint_is_ignored_and_the_chain_verified_in_full() {
    let db = harpbridge::db::in_memory().unwrap();
    let lib = busy_library(&db);
    let s = ChainStore::open(db.clone()).unwrap();
    s.checkpoint().unwrap();
    let heads = s.heads(&lib).unwrap();
    drop(s);
    let checkpoints: redb::TableDefinition<[u8; 16], &[u8]> =
        redb::TableDefinition::new("chain_checkpoints");
    let txn = db.begin_write().unwrap();
    {
        let mut t = txn.open_table(checkpoints).unwrap();
        let mut v = t.get(lib.0).unwrap().unwrap().value().to_vec();
        let mid = v.len() / 2;
        v[mid] ^= 1;
        t.insert(lib.0, v.as_slice()).unwrap();
    }
    txn.commit().unwrap();
    assert_eq!(
        ChainStore::open(db.clone()).unwrap().heads(&lib).unwrap(),
        heads
    );
    // Verified in full again: damage anywhere is refused at open.
    flip(&db, &lib, 3);
    match ChainStore::open(db).unwrap_err() {
        ChainError::Damaged { index, .. } => assert_eq!(index, 3),
        other => panic!("expected Damaged, got {other}"),
    }
}
