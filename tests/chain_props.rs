//! Property tests: replicas that append concurrently and sync in any order converge; any
//! single flipped bit in a stored entry is found; the decoder never panics.

use harpbridge::chain::{ChainPath, ChainStore, ContentId, Entry, LibraryId, Op, ENTRIES};
use harpbridge::identity::DeviceIdentity;
use proptest::prelude::*;
use redb::ReadableTable;

fn mem() -> ChainStore {
    ChainStore::open(harpbridge::db::in_memory().unwrap()).unwrap()
}

const PATHS: [&str; 5] = ["a", "a/b", "a/c.txt", "d.txt", "e/f/g"];

#[derive(Debug, Clone)]
enum Action {
    /// Replica `r` appends an operation.
    Append {
        r: usize,
        kind: u8,
        p: usize,
        q: usize,
        c: u8,
    },
    /// Replica `from` sends what `to` lacks.
    Sync { from: usize, to: usize },
}

fn op(kind: u8, p: usize, q: usize, c: u8) -> Op {
    let path = ChainPath::new(PATHS[p]).unwrap();
    match kind % 5 {
        0 | 1 => Op::Put {
            path,
            size: u64::from(c),
            mtime_ms: 0,
            content: ContentId([c; 32]),
            nextcloud: None,
        },
        2 => Op::Delete { path },
        3 => Op::Mkdir { path },
        _ => {
            let to = ChainPath::new(&format!("r{q}")).unwrap();
            Op::Rename { from: path, to }
        }
    }
}

fn action(n: usize) -> impl Strategy<Value = Action> {
    prop_oneof![
        3 => (0..n, any::<u8>(), 0..PATHS.len(), 0..3usize, 0..4u8)
            .prop_map(|(r, kind, p, q, c)| Action::Append { r, kind, p, q, c }),
        2 => (0..n, 0..n).prop_map(|(from, to)| Action::Sync { from, to }),
    ]
}

fn scenario() -> impl Strategy<Value = (usize, Vec<Action>, Vec<(usize, usize)>, u64)> {
    (2..=5usize).prop_flat_map(|n| {
        (
            Just(n),
            prop::collection::vec(action(n), 1..30),
            // The final rounds: every ordered pair, shuffled.
            Just(
                (0..n)
                    .flat_map(|a| (0..n).map(move |b| (a, b)))
                    .collect::<Vec<_>>(),
            )
            .prop_shuffle(),
            any::<u64>(),
        )
    })
}

/// Syncs `from` → `to` the way a sync server answers: one batch at a time from `to`'s
/// current version vector (`missing_batch_for_vector`), checking each batch against the
/// whole sorted answer (`missing_for_vector`) computed first.
fn sync(from: &ChainStore, to: &ChainStore, lib: &LibraryId) {
    let theirs = to.version_vector(lib).unwrap_or_default();
    let whole: Vec<_> = from
        .missing_for_vector(lib, &theirs, usize::MAX)
        .unwrap()
        .flat_map(|b| b.unwrap())
        .collect();
    let mut sent = 0;
    loop {
        let theirs = to.version_vector(lib).unwrap_or_default();
        let (batch, total) = from.missing_batch_for_vector(lib, &theirs, 5).unwrap();
        assert_eq!(total, whole.len() - sent, "the count of what is missing");
        if batch.is_empty() {
            break;
        }
        let hashes: Vec<_> = batch.iter().map(|e| e.hash()).collect();
        let expected: Vec<_> = whole[sent..sent + batch.len()]
            .iter()
            .map(|e| e.hash())
            .collect();
        assert_eq!(
            hashes, expected,
            "a batch is the next part of the sorted answer"
        );
        sent += batch.len();
        to.insert_remote(lib, batch).unwrap();
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// 2–5 replicas append concurrently and sync in random pairs; after syncing every pair
    /// (twice, in a random order) they all have the same heads and the same tree, and a
    /// fresh store given all entries shuffled in one batch agrees.
    #[test]
    fn replicas_converge(sc in scenario()) {
        let (n, actions, pairs, seed) = sc;
        let devs: Vec<DeviceIdentity> = (0..n).map(|i| DeviceIdentity::from_secret([i as u8 + 1; 32])).collect();
        let stores: Vec<ChainStore> = (0..n).map(|_| mem()).collect();
        let lib = LibraryId([0x42; 16]);
        stores[0].create_library_with(lib, devs[0].signing_key(), "r0", 1).unwrap();
        let adds: Vec<Op> = devs[1..].iter().map(|d| Op::AddDevice { device: d.device_key(), name: "r".into() }).collect();
        stores[0].append_batch_at(&lib, devs[0].signing_key(), adds, 2).unwrap();
        for s in &stores[1..] {
            sync(&stores[0], s, &lib);
        }
        for (t, a) in actions.iter().enumerate() {
            match a {
                Action::Append { r, kind, p, q, c } => {
                    stores[*r]
                        .append_batch_at(&lib, devs[*r].signing_key(), vec![op(*kind, *p, *q, *c)], 1000 * t as u64)
                        .unwrap();
                }
                Action::Sync { from, to } => sync(&stores[*from], &stores[*to], &lib),
            }
            // Fold now and then, so later folds build on kept ones (the incremental path);
            // the fresh store below folds everything at once, and must agree.
            if t % 3 == 0 {
                let r = match a {
                    Action::Append { r, .. } => *r,
                    Action::Sync { to, .. } => *to,
                };
                stores[r].tree(&lib).unwrap();
            }
        }
        for _ in 0..2 {
            for (a, b) in &pairs {
                sync(&stores[*a], &stores[*b], &lib);
            }
        }
        let heads = stores[0].heads(&lib).unwrap();
        let tree = stores[0].tree(&lib).unwrap();
        let log = stores[0].log(&lib).unwrap();
        for s in &stores[1..] {
            prop_assert_eq!(&s.heads(&lib).unwrap(), &heads);
            prop_assert_eq!(&s.tree(&lib).unwrap(), &tree);
            prop_assert_eq!(&s.log(&lib).unwrap(), &log);
        }
        // One fresh store, everything in one shuffled batch.
        let mut all: Vec<Entry> = stores[0].missing_for(&lib, &[], 1000).unwrap().flat_map(|b| b.unwrap()).collect();
        let mut x = seed | 1;
        for i in (1..all.len()).rev() {
            x ^= x << 13; x ^= x >> 7; x ^= x << 17;
            all.swap(i, (x % (i as u64 + 1)) as usize);
        }
        let fresh = mem();
        fresh.insert_remote(&lib, all).unwrap();
        prop_assert_eq!(fresh.heads(&lib).unwrap(), heads);
        prop_assert_eq!(fresh.tree(&lib).unwrap(), tree);
        prop_assert_eq!(fresh.verify().unwrap().entries, log.len() as u64);
    }

    /// Any single flipped bit in any stored entry makes opening fail, naming that entry.
    #[test]
    fn any_flipped_bit_is_detected(which in any::<prop::sample::Index>(), bit in any::<prop::sample::Index>()) {
        let db = harpbridge::db::in_memory().unwrap();
        let store = ChainStore::open(db.clone()).unwrap();
        let d = DeviceIdentity::from_secret([5; 32]);
        let other = DeviceIdentity::from_secret([6; 32]);
        let lib = LibraryId([0x24; 16]);
        store.create_library_with(lib, d.signing_key(), "d", 10).unwrap();
        let mut ops: Vec<Op> = (0..6u8).map(|i| op(i, usize::from(i) % PATHS.len(), 1, i)).collect();
        ops.push(Op::AddDevice { device: other.device_key(), name: "o".into() });
        store.append_batch_at(&lib, d.signing_key(), ops, 11).unwrap();
        store.append_batch_at(&lib, other.signing_key(), vec![op(0, 2, 0, 9)], 12).unwrap();
        let len = store.len(&lib).unwrap() as u64;
        drop(store);

        let i = which.index(len as usize) as u64;
        let txn = db.begin_write().unwrap();
        {
            let mut t = txn.open_table(ENTRIES).unwrap();
            let mut v = t.get((lib.0, i)).unwrap().unwrap().value().to_vec();
            let b = bit.index(v.len() * 8);
            v[b / 8] ^= 1 << (b % 8);
            t.insert((lib.0, i), v.as_slice()).unwrap();
        }
        txn.commit().unwrap();
        match ChainStore::open(db) {
            Err(harpbridge::chain::ChainError::Damaged { index, .. }) => prop_assert_eq!(index, i),
            Err(other) => prop_assert!(false, "unexpected error {}", other),
            Ok(_) => prop_assert!(false, "a flipped bit in entry #{} went unnoticed", i),
        }
    }
}

fn sample_entries() -> &'static [Vec<u8>] {
    static SAMPLES: std::sync::OnceLock<Vec<Vec<u8>>> = std::sync::OnceLock::new();
    SAMPLES.get_or_init(make_samples)
}

fn make_samples() -> Vec<Vec<u8>> {
    let d = DeviceIdentity::from_secret([8; 32]);
    let s = mem();
    let lib = LibraryId([1; 16]);
    let g = s.create_library_with(lib, d.signing_key(), "x", 1).unwrap();
    let mut out = vec![g.to_bytes()];
    let ops: Vec<Op> = (0..5u8)
        .map(|k| op(k, usize::from(k), 2, k))
        .chain([Op::Put {
            path: ChainPath::new("nc/file.txt").unwrap(),
            size: 1,
            mtime_ms: -1,
            content: ContentId([1; 32]),
            nextcloud: Some(harpbridge::chain::NextcloudRef {
                fileid: 7,
                etag: "abc".into(),
            }),
        }])
        .collect();
    for e in s.append_batch_at(&lib, d.signing_key(), ops, 2).unwrap() {
        out.push(e.to_bytes());
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    /// Random bytes never panic the decoder.
    #[test]
    fn decoder_never_panics_on_random_bytes(bytes in prop::collection::vec(any::<u8>(), 0..700)) {
        let _ = Entry::from_bytes(&bytes);
    }

    /// Valid entries, truncated anywhere or with bytes changed, never panic the decoder;
    /// a truncation is always an error; whatever decodes re-encodes to the same bytes.
    #[test]
    fn decoder_is_total_and_canonical_on_mutations(
        which in any::<prop::sample::Index>(),
        cut in any::<prop::sample::Index>(),
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
    ) {
        let samples = sample_entries();
        let good = &samples[which.index(samples.len())];
        let n = cut.index(good.len());
        prop_assert!(Entry::from_bytes(&good[..n]).is_err());
        let mut m = good.clone();
        for (at, b) in edits {
            let k = at.index(m.len());
            m[k] = b;
        }
        if let Ok(e) = Entry::from_bytes(&m) {
            prop_assert_eq!(e.to_bytes(), m);
        }
    }
}

/// Exhaustively: every single-bit flip of a signed entry either fails to decode or changes
/// what the signature must cover (the hash), the signature or the key, so the signature can no
/// longer verify; checked with a real verification on every 16th bit.
#[test]
fn every_single_bit_flip_of_an_entry_breaks_it() {
    let samples = sample_entries();
    let good = samples.last().unwrap(); // a Put with a Nextcloud ref: the longest form
    let orig = Entry::from_bytes(good).unwrap();
    for bit in 0..good.len() * 8 {
        let mut m = good.clone();
        m[bit / 8] ^= 1 << (bit % 8);
        let Ok(e) = Entry::from_bytes(&m) else {
            continue;
        };
        assert!(
            e.hash() != orig.hash()
                || e.signature() != orig.signature()
                || e.meta().author != orig.meta().author,
            "flipping bit {bit} changed nothing the signature covers"
        );
        if bit % 16 == 0 {
            let valid = ed25519_dalek::VerifyingKey::from_bytes(&e.meta().author.0)
                .map(|k| {
                    k.verify_strict(
                        &e.hash().0,
                        &ed25519_dalek::Signature::from_bytes(e.signature()),
                    )
                    .is_ok()
                })
                .unwrap_or(false);
            assert!(!valid, "flipping bit {bit} left a valid entry");
        }
    }
}
