//! The DAG: heads, merges, membership, the fold and its conflict names, what the sync protocol
//! calls (`heads`, `missing_for`, `insert_remote`) and what it must refuse, durability on
//! reopen and refusing a damaged store.

use harpbridge::chain::{
    conflict_name, ChainError, ChainPath, ChainStore, ContentId, DecodeError, Entry, EntryFault,
    EntryHash, LibraryId, Meta, Op, TreeItem, ENTRIES,
};
use harpbridge::identity::DeviceIdentity;
use redb::ReadableTable;

fn dev(n: u8) -> DeviceIdentity {
    DeviceIdentity::from_secret([n; 32])
}

fn mem() -> ChainStore {
    ChainStore::open(harpbridge::db::in_memory().unwrap()).unwrap()
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

fn path(s: &str) -> ChainPath {
    ChainPath::new(s).unwrap()
}

/// Everything `from` has that `to` lacks, through the sync calls, in small batches.
fn sync(from: &ChainStore, to: &ChainStore, lib: &LibraryId) -> usize {
    let theirs = to.heads(lib).unwrap_or_default();
    let mut n = 0;
    for batch in from.missing_for(lib, &theirs, 3).unwrap() {
        n += to.insert_remote(lib, batch.unwrap()).unwrap().inserted;
    }
    n
}

/// A library on `a` with `b` added as a member, known to both stores.
fn two_devices() -> (
    ChainStore,
    ChainStore,
    LibraryId,
    DeviceIdentity,
    DeviceIdentity,
) {
    let (da, db) = (dev(1), dev(2));
    let (a, b) = (mem(), mem());
    let (lib, _) = a.create_library(da.signing_key(), "a").unwrap();
    a.append(
        &lib,
        da.signing_key(),
        Op::AddDevice {
            device: db.device_key(),
            name: "b".into(),
        },
    )
    .unwrap();
    assert_eq!(sync(&a, &b, &lib), 2);
    (a, b, lib, da, db)
}

fn append_at(s: &ChainStore, lib: &LibraryId, d: &DeviceIdentity, op: Op, wall: u64) -> Entry {
    s.append_batch_at(lib, d.signing_key(), vec![op], wall)
        .unwrap()
        .pop()
        .unwrap()
}

#[test]
fn concurrent_appends_make_two_heads_then_merge_joins_them() {
    let (a, b, lib, da, db) = two_devices();
    let ea = a.append(&lib, da.signing_key(), put("x", 1)).unwrap();
    let eb = b.append(&lib, db.signing_key(), put("y", 2)).unwrap();
    assert_eq!(sync(&a, &b, &lib), 1);
    assert_eq!(sync(&b, &a, &lib), 1);
    let mut both = vec![ea.hash(), eb.hash()];
    both.sort();
    assert_eq!(a.heads(&lib).unwrap(), both);
    assert_eq!(b.heads(&lib).unwrap(), both);

    let m = b.merge(&lib, db.signing_key()).unwrap().unwrap();
    assert_eq!(m.parents(), &both[..]);
    assert!(matches!(m.meta().op, Op::Merge));
    assert_eq!(m.meta().lamport, 4);
    assert_eq!(b.merge(&lib, db.signing_key()).unwrap(), None);
    sync(&b, &a, &lib);
    assert_eq!(a.heads(&lib).unwrap(), vec![m.hash()]);
    assert_eq!(a.tree(&lib).unwrap(), b.tree(&lib).unwrap());
    assert_eq!(a.log(&lib).unwrap(), b.log(&lib).unwrap());
}

#[test]
fn the_next_append_names_every_head() {
    let (a, b, lib, da, db) = two_devices();
    a.append(&lib, da.signing_key(), put("x", 1)).unwrap();
    b.append(&lib, db.signing_key(), put("y", 2)).unwrap();
    sync(&b, &a, &lib);
    let heads = a.heads(&lib).unwrap();
    assert_eq!(heads.len(), 2);
    let e = a.append(&lib, da.signing_key(), put("z", 3)).unwrap();
    assert_eq!(e.parents(), &heads[..]);
    assert_eq!(a.heads(&lib).unwrap(), vec![e.hash()]);
}

#[test]
fn concurrent_writes_to_one_path_keep_both_with_a_deterministic_conflict_name() {
    let (a, b, lib, da, db) = two_devices();
    let ea = append_at(&a, &lib, &da, put("docs/report.pdf", 1), 1_795_628_988_000);
    let eb = append_at(&b, &lib, &db, put("docs/report.pdf", 2), 1_795_628_999_000);
    sync(&a, &b, &lib);
    sync(&b, &a, &lib);
    let (ta, tb) = (a.tree(&lib).unwrap(), b.tree(&lib).unwrap());
    assert_eq!(ta, tb);
    // Same Lamport clock: the larger hash is later in the order and keeps the name.
    let (winner, loser) = if ea.hash() > eb.hash() {
        (&ea, &eb)
    } else {
        (&eb, &ea)
    };
    let loser_name = conflict_name(
        "docs/report.pdf",
        loser.meta().wall_ms,
        &loser.meta().author,
    );
    let stamp = if loser.hash() == ea.hash() {
        "20261125-174948"
    } else {
        "20261125-174959"
    };
    assert_eq!(
        loser_name,
        format!(
            "docs/report.sync-conflict-{stamp}-{}.pdf",
            loser.meta().author.short_id()
        )
    );
    let names: Vec<&str> = ta.items.keys().map(String::as_str).collect();
    let mut expected = vec!["docs", "docs/report.pdf", loser_name.as_str()];
    expected.sort();
    assert_eq!(names, expected);
    match (&ta.items["docs/report.pdf"], &ta.items[&loser_name]) {
        (TreeItem::File { entry: w, .. }, TreeItem::File { entry: l, .. }) => {
            assert_eq!(*w, winner.hash());
            assert_eq!(*l, loser.hash());
        }
        other => panic!("expected two files, got {other:?}"),
    }
    // A write that saw both replaces the winner without a new conflict.
    let e = a
        .append(&lib, da.signing_key(), put("docs/report.pdf", 3))
        .unwrap();
    let t = a.tree(&lib).unwrap();
    assert_eq!(t.files(), 2);
    assert!(
        matches!(t.items["docs/report.pdf"], TreeItem::File { entry, .. } if entry == e.hash())
    );
}

#[test]
fn a_delete_does_not_remove_a_version_it_did_not_see() {
    let (a, b, lib, da, db) = two_devices();
    a.append(&lib, da.signing_key(), put("d/f", 1)).unwrap();
    a.append(&lib, da.signing_key(), put("d/g", 1)).unwrap();
    sync(&a, &b, &lib);
    // a deletes the directory; b concurrently edits d/f.
    a.append(&lib, da.signing_key(), Op::Delete { path: path("d") })
        .unwrap();
    b.append(&lib, db.signing_key(), put("d/f", 2)).unwrap();
    sync(&a, &b, &lib);
    sync(&b, &a, &lib);
    let t = a.tree(&lib).unwrap();
    assert_eq!(t, b.tree(&lib).unwrap());
    let names: Vec<&str> = t.items.keys().map(String::as_str).collect();
    assert_eq!(names, ["d", "d/f"]);
    assert!(matches!(t.items["d/f"], TreeItem::File { size: 2, .. }));
    // A delete that saw everything removes it all.
    a.append(&lib, da.signing_key(), Op::Delete { path: path("d") })
        .unwrap();
    assert!(a.tree(&lib).unwrap().items.is_empty());
}

#[test]
fn rename_moves_a_directory_and_mkdir_makes_one() {
    let s = mem();
    let d = dev(1);
    let (lib, _) = s.create_library(d.signing_key(), "a").unwrap();
    s.append_batch(
        &lib,
        d.signing_key(),
        vec![
            Op::Mkdir {
                path: path("empty"),
            },
            put("src/a.txt", 1),
            put("src/sub/b.txt", 2),
            Op::Rename {
                from: path("src"),
                to: path("dst/moved"),
            },
        ],
    )
    .unwrap();
    let t = s.tree(&lib).unwrap();
    let names: Vec<&str> = t.items.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        [
            "dst",
            "dst/moved",
            "dst/moved/a.txt",
            "dst/moved/sub",
            "dst/moved/sub/b.txt",
            "empty"
        ]
    );
    let err = s
        .append(
            &lib,
            d.signing_key(),
            Op::Rename {
                from: path("dst"),
                to: path("dst/x"),
            },
        )
        .unwrap_err();
    assert!(matches!(
        err,
        ChainError::Rejected {
            fault: EntryFault::RenameIntoItself,
            ..
        }
    ));
}

#[test]
fn missing_for_gives_exactly_what_the_other_side_lacks_ancestors_first() {
    let (a, b, lib, da, db) = two_devices();
    for i in 0..10 {
        a.append(&lib, da.signing_key(), put(&format!("f{i}"), i))
            .unwrap();
    }
    b.append(&lib, db.signing_key(), put("mine", 1)).unwrap();
    // With b's version vector, a knows exactly what b lacks even though b has an entry a
    // has never seen.
    let by_vector = a
        .missing_for_vector(&lib, &b.version_vector(&lib).unwrap(), 4)
        .unwrap();
    assert_eq!(by_vector.total(), 10);
    // With heads, a head a does not know tells it nothing: after a fetched it, exact too.
    assert_eq!(
        a.missing_for(&lib, &b.heads(&lib).unwrap(), 4)
            .unwrap()
            .total(),
        a.len(&lib).unwrap()
    );
    sync(&b, &a, &lib);
    let missing: Vec<Entry> = a
        .missing_for(&lib, &b.heads(&lib).unwrap(), 4)
        .unwrap()
        .map(|r| r.unwrap())
        .inspect(|batch| assert!(batch.len() <= 4))
        .flatten()
        .collect();
    assert_eq!(missing.len(), 10);
    let mut seen = std::collections::HashSet::new();
    for e in &missing {
        for p in e.parents() {
            assert!(
                b.contains(&lib, p) || seen.contains(p),
                "parent after child"
            );
        }
        seen.insert(e.hash());
    }
    // Unknown heads are ignored; everything is missing for an empty side.
    let all = a.missing_for(&lib, &[EntryHash([9; 32])], 100).unwrap();
    assert_eq!(all.total(), a.len(&lib).unwrap());
    // Nothing is missing for a side that has it all.
    assert_eq!(
        a.missing_for(&lib, &a.heads(&lib).unwrap(), 5)
            .unwrap()
            .total(),
        0
    );
}

fn expect_rejected(r: Result<harpbridge::chain::InsertOutcome, ChainError>) -> EntryFault {
    match r {
        Err(ChainError::Rejected { fault, .. }) => fault,
        other => panic!("expected a rejection, got {other:?}"),
    }
}

#[test]
fn insert_remote_refuses_bad_entries_and_stores_nothing_of_a_bad_batch() {
    let (a, b, lib, da, _db) = two_devices();
    let good = a.append(&lib, da.signing_key(), put("ok", 1)).unwrap();
    let next = a.append(&lib, da.signing_key(), put("ok2", 2)).unwrap();
    let before = b.heads(&lib).unwrap();

    // A bad signature (one bit), in a batch after a good entry: nothing is stored.
    let mut raw = next.to_bytes();
    let n = raw.len();
    raw[n - 10] ^= 1;
    let forged = Entry::from_bytes(&raw).unwrap();
    assert_eq!(forged.hash(), next.hash());
    let f = expect_rejected(b.insert_remote(&lib, vec![good.clone(), forged]));
    assert_eq!(f, EntryFault::BadSignature);
    assert_eq!(b.heads(&lib).unwrap(), before);
    assert!(!b.contains(&lib, &good.hash()));

    // Changed content after signing: the hash changes, the signature no longer fits.
    let mut raw = good.to_bytes();
    let at = raw.windows(2).position(|w| w == b"ok").unwrap();
    raw[at] = b'O';
    let tampered = Entry::from_bytes(&raw).unwrap();
    assert_ne!(tampered.hash(), good.hash());
    assert_eq!(
        expect_rejected(b.insert_remote(&lib, vec![tampered])),
        EntryFault::BadSignature
    );
    // Fetched by hash, other bytes are caught at decoding.
    assert!(matches!(
        Entry::from_bytes_expecting(&raw, &good.hash()),
        Err(DecodeError::HashMismatch { .. })
    ));

    // A missing parent.
    assert_eq!(
        expect_rejected(b.insert_remote(&lib, vec![next.clone()])),
        EntryFault::MissingParent(good.hash())
    );

    // An unknown author: a device nobody added.
    let stranger = dev(7);
    let heads = b.heads(&lib).unwrap();
    let m = Meta {
        library: lib,
        author: stranger.device_key(),
        seq: 1,
        lamport: 3,
        wall_ms: 0,
        op: put("evil", 6),
    };
    let evil = Entry::sign(m.clone(), heads.clone(), stranger.signing_key());
    assert!(matches!(
        expect_rejected(b.insert_remote(&lib, vec![evil])),
        EntryFault::NotMember(_)
    ));

    // Wrong Lamport clock, wrong sequence number, a second genesis, another library.
    let m2 = Meta {
        author: da.device_key(),
        seq: 3,
        lamport: 9,
        ..m.clone()
    };
    assert_eq!(
        expect_rejected(b.insert_remote(
            &lib,
            vec![Entry::sign(m2.clone(), heads.clone(), da.signing_key())]
        )),
        EntryFault::BadLamport {
            expected: 3,
            got: 9
        }
    );
    let m3 = Meta {
        seq: 5,
        lamport: 3,
        ..m2.clone()
    };
    assert_eq!(
        expect_rejected(
            b.insert_remote(&lib, vec![Entry::sign(m3, heads.clone(), da.signing_key())])
        ),
        EntryFault::BadSeq {
            expected: 3,
            got: 5
        }
    );
    let g2 = Meta {
        seq: 1,
        lamport: 1,
        op: Op::AddDevice {
            device: da.device_key(),
            name: "again".into(),
        },
        ..m2.clone()
    };
    assert_eq!(
        expect_rejected(b.insert_remote(&lib, vec![Entry::sign(g2, vec![], da.signing_key())])),
        EntryFault::SecondGenesis
    );
    let other = LibraryId([3; 16]);
    let m4 = Meta {
        library: other,
        seq: 3,
        lamport: 3,
        ..m2
    };
    assert_eq!(
        expect_rejected(b.insert_remote(&lib, vec![Entry::sign(m4, heads, da.signing_key())])),
        EntryFault::WrongLibrary(other)
    );

    // The good entries still go in, and repeating them is harmless.
    let out = b
        .insert_remote(&lib, vec![next.clone(), good.clone()])
        .unwrap();
    assert_eq!(out.inserted, 2);
    let out = b.insert_remote(&lib, vec![good, next]).unwrap();
    assert_eq!((out.inserted, out.already_had), (0, 2));
    assert_eq!(b.heads(&lib).unwrap(), a.heads(&lib).unwrap());
}

#[test]
fn a_second_entry_with_the_same_author_sequence_number_is_refused() {
    let (a, b, lib, da, _db) = two_devices();
    let x = a.append(&lib, da.signing_key(), put("x", 1)).unwrap();
    // The same device, from a restored backup, writes another seq 3 on the old head.
    let m = Meta {
        op: put("fork", 2),
        ..x.meta().clone()
    };
    let fork = Entry::sign(m, x.parents().to_vec(), da.signing_key());
    sync(&a, &b, &lib);
    assert_eq!(
        expect_rejected(b.insert_remote(&lib, vec![fork])),
        EntryFault::DuplicateSeq(3)
    );
}

#[test]
fn membership_follows_the_dag() {
    let (a, b, lib, da, db) = two_devices();
    assert_eq!(a.members(&lib).unwrap().len(), 2);
    // b writes concurrently with its removal: valid, it had not been removed in its history.
    let concurrent = b
        .append(&lib, db.signing_key(), put("b-was-here", 1))
        .unwrap();
    a.append(
        &lib,
        da.signing_key(),
        Op::RemoveDevice {
            device: db.device_key(),
        },
    )
    .unwrap();
    sync(&b, &a, &lib);
    assert!(a.contains(&lib, &concurrent.hash()));
    sync(&a, &b, &lib);
    assert!(!b.is_member(&lib, &db.device_key()));
    assert_eq!(a.members(&lib).unwrap(), vec![da.device_key()]);
    // After seeing its removal, b can no longer append.
    let err = b
        .append(&lib, db.signing_key(), put("again", 2))
        .unwrap_err();
    assert!(
        matches!(
            err,
            ChainError::Rejected {
                fault: EntryFault::NotMember(_),
                ..
            }
        ),
        "{err}"
    );
    // Re-added by a member, it can.
    a.append(
        &lib,
        da.signing_key(),
        Op::AddDevice {
            device: db.device_key(),
            name: "b again".into(),
        },
    )
    .unwrap();
    sync(&a, &b, &lib);
    b.append(&lib, db.signing_key(), put("back", 3)).unwrap();
}

#[test]
fn a_removal_concurrent_with_a_re_add_wins() {
    let (a, b, lib, da, db) = two_devices();
    let c = dev(3);
    a.append(
        &lib,
        da.signing_key(),
        Op::AddDevice {
            device: c.device_key(),
            name: "c".into(),
        },
    )
    .unwrap();
    sync(&a, &b, &lib);
    a.append(
        &lib,
        da.signing_key(),
        Op::RemoveDevice {
            device: c.device_key(),
        },
    )
    .unwrap();
    b.append(
        &lib,
        db.signing_key(),
        Op::AddDevice {
            device: c.device_key(),
            name: "c again".into(),
        },
    )
    .unwrap();
    sync(&a, &b, &lib);
    sync(&b, &a, &lib);
    assert!(!a.is_member(&lib, &c.device_key()));
    assert!(!b.is_member(&lib, &c.device_key()));
}

#[test]
fn a_reopened_store_has_every_entry_and_refuses_damage_naming_the_entry() {
    let dir = tempfile::tempdir().unwrap();
    let d = dev(1);
    let (lib, heads, tree) = {
        let db = harpbridge::db::open(dir.path()).unwrap();
        let s = ChainStore::open(db).unwrap();
        let (lib, _) = s.create_library(d.signing_key(), "a").unwrap();
        for i in 0..20 {
            s.append(&lib, d.signing_key(), put(&format!("f{}", i % 5), i))
                .unwrap();
        }
        (lib, s.heads(&lib).unwrap(), s.tree(&lib).unwrap())
    };
    let db = harpbridge::db::open(dir.path()).unwrap();
    {
        let s = ChainStore::open(db.clone()).unwrap();
        assert_eq!(s.heads(&lib).unwrap(), heads);
        assert_eq!(s.tree(&lib).unwrap(), tree);
        assert_eq!(s.len(&lib).unwrap(), 21);
        assert_eq!(s.verify().unwrap().entries, 21);
    }
    // Flip one bit in stored entry #7.
    let txn = db.begin_write().unwrap();
    {
        let mut t = txn.open_table(ENTRIES).unwrap();
        let mut v = t.get((lib.0, 7)).unwrap().unwrap().value().to_vec();
        v[60] ^= 0x10;
        t.insert((lib.0, 7), v.as_slice()).unwrap();
    }
    txn.commit().unwrap();
    let err = ChainStore::open(db.clone()).unwrap_err();
    match &err {
        ChainError::Damaged { library, index, .. } => {
            assert_eq!((*library, *index), (lib, 7));
        }
        other => panic!("expected Damaged, got {other}"),
    }
    assert!(err.to_string().contains("entry #7"), "{err}");

    // A gap (a lost entry) is named too.
    let txn = db.begin_write().unwrap();
    {
        let mut t = txn.open_table(ENTRIES).unwrap();
        t.remove((lib.0, 7)).unwrap();
    }
    txn.commit().unwrap();
    match ChainStore::open(db).unwrap_err() {
        ChainError::Damaged { index, .. } => assert_eq!(index, 7),
        other => panic!("expected Damaged, got {other}"),
    }
}

#[test]
fn a_second_store_on_the_same_database_cannot_overwrite_entries() {
    let db = harpbridge::db::in_memory().unwrap();
    let d = dev(1);
    let first = ChainStore::open(db.clone()).unwrap();
    let (lib, _) = first.create_library(d.signing_key(), "a").unwrap();
    let second = ChainStore::open(db.clone()).unwrap();
    first.append(&lib, d.signing_key(), put("x", 1)).unwrap();
    // `second` does not know about "x" and would write its own entry #1.
    let err = second
        .append(&lib, d.signing_key(), put("y", 2))
        .unwrap_err();
    assert!(matches!(err, ChainError::Internal(_)), "{err}");
    drop((first, second));
    let reopened = ChainStore::open(db).unwrap();
    assert_eq!(reopened.len(&lib).unwrap(), 2);
}

#[test]
fn an_append_after_the_heads_it_saw_is_concurrent_with_what_arrived_since() {
    // a looks at its tree and decides to record its own edit of notes.txt, while b's edit
    // of the same file arrives: a's entry, appended after what it saw, is concurrent with
    // b's, and both versions are kept.
    let (a, b, lib, da, db) = two_devices();
    a.append(&lib, da.signing_key(), put("notes.txt", 1))
        .unwrap();
    sync(&a, &b, &lib);
    let seen = a.heads(&lib).unwrap();
    b.append(&lib, db.signing_key(), put("notes.txt", 2))
        .unwrap();
    sync(&b, &a, &lib);
    let mine = a
        .append_batch_after(&lib, da.signing_key(), vec![put("notes.txt", 3)], &seen)
        .unwrap()
        .pop()
        .unwrap();
    assert_eq!(mine.parents(), &seen[..]);
    let t = a.tree(&lib).unwrap();
    assert_eq!(t.files(), 2, "{:?}", t.items.keys().collect::<Vec<_>>());
    sync(&a, &b, &lib);
    assert_eq!(b.tree(&lib).unwrap(), t);
    // A plain append would have replaced b's version unseen.
    let (a, b, lib, da, db) = two_devices();
    a.append(&lib, da.signing_key(), put("notes.txt", 1))
        .unwrap();
    sync(&a, &b, &lib);
    b.append(&lib, db.signing_key(), put("notes.txt", 2))
        .unwrap();
    sync(&b, &a, &lib);
    a.append(&lib, da.signing_key(), put("notes.txt", 3))
        .unwrap();
    assert_eq!(a.tree(&lib).unwrap().files(), 1);
    // a's own entries appended since what it saw stay in its line (no sequence clash).
    let (a, _b, lib, da, _db) = two_devices();
    let seen = a.heads(&lib).unwrap();
    let own = a.append(&lib, da.signing_key(), put("x", 5)).unwrap();
    let next = a
        .append_batch_after(&lib, da.signing_key(), vec![put("y", 6)], &seen)
        .unwrap()
        .pop()
        .unwrap();
    assert!(next.parents().contains(&own.hash()));
    assert_eq!(a.heads(&lib).unwrap(), vec![next.hash()]);
}
