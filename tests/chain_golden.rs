//! Golden vectors: fixed entries must hash (and encode) to fixed values forever. If one of
//! these changes, the wire format changed: bump `FORMAT_VERSION` instead.

use harpbridge::chain::{
    ChainPath, ChainStore, ContentId, DeviceKey, Entry, EntryHash, LibraryId, Meta, NextcloudRef,
    Op, TreeItem,
};
use harpbridge::identity::DeviceIdentity;
use sha3::{Digest, Sha3_256};

const WALL: u64 = 1_700_000_000_000;

fn key(n: u8) -> DeviceIdentity {
    DeviceIdentity::from_secret([n; 32])
}

fn path(s: &str) -> ChainPath {
    ChainPath::new(s).unwrap()
}

fn meta(author: &DeviceIdentity, seq: u64, lamport: u64, op: Op) -> Meta {
    Meta {
        library: LibraryId([0x11; 16]),
        author: author.device_key(),
        seq,
        lamport,
        wall_ms: WALL + lamport,
        op,
    }
}

/// The fixed chain: a genesis, a put, a second device, two concurrent entries, a merge,
/// a mkdir and a removal.
fn vectors() -> Vec<Entry> {
    let (a, b) = (key(1), key(2));
    let sa = a.signing_key();
    let sb = b.signing_key();
    let g = Entry::sign(
        meta(
            &a,
            1,
            1,
            Op::AddDevice {
                device: a.device_key(),
                name: "alpha".into(),
            },
        ),
        vec![],
        sa,
    );
    let e1 = Entry::sign(
        meta(
            &a,
            2,
            2,
            Op::Put {
                path: path("docs/report.pdf"),
                size: 12345,
                mtime_ms: 1_699_999_999_000,
                content: ContentId([0xcc; 32]),
                nextcloud: Some(NextcloudRef {
                    fileid: 42,
                    etag: "\"5f3a\"".into(),
                }),
            },
        ),
        vec![g.hash()],
        sa,
    );
    let e2 = Entry::sign(
        meta(
            &a,
            3,
            3,
            Op::AddDevice {
                device: b.device_key(),
                name: "beta".into(),
            },
        ),
        vec![e1.hash()],
        sa,
    );
    let e3 = Entry::sign(
        meta(
            &b,
            1,
            4,
            Op::Rename {
                from: path("docs/report.pdf"),
                to: path("docs/final.pdf"),
            },
        ),
        vec![e2.hash()],
        sb,
    );
    let e4 = Entry::sign(
        meta(
            &a,
            4,
            4,
            Op::Delete {
                path: path("docs/old.txt"),
            },
        ),
        vec![e2.hash()],
        sa,
    );
    let e5 = Entry::sign(meta(&a, 5, 5, Op::Merge), vec![e4.hash(), e3.hash()], sa);
    let e6 = Entry::sign(
        meta(
            &a,
            6,
            6,
            Op::Mkdir {
                path: path("Ünïcode/dir"),
            },
        ),
        vec![e5.hash()],
        sa,
    );
    let e7 = Entry::sign(
        meta(
            &a,
            7,
            7,
            Op::RemoveDevice {
                device: b.device_key(),
            },
        ),
        vec![e6.hash()],
        sa,
    );
    vec![g, e1, e2, e3, e4, e5, e6, e7]
}

const EXPECTED_HASHES: [&str; 8] = [
    "5dbe48a6ba577218aebc030a96a385d3bd2750a9523aa895d0e2196b7ba5f21e",
    "766bdd278d98d44523c5d5d02c44c89c6fe36db16fead5bc6c19b731bb656709",
    "9bcfd5bb394ecaaac532748c20d7a38d8b795b1da6162a0fd6fe94d7fd29473a",
    "ef79348fad638b9f4318c3adf3800affd8a489ea94b9659ea38ad7b39c56e921",
    "13b2e75f9e7ebd6918880f75c0c7e099aa14e0d836f46e9b8594963c99238819",
    "5255655697c16ab0aae829638c873d68b47e6bd2d987b9965f5b04081f2c3fdf",
    "a172cfe34ba82f4376dc9877ea4612b42627c30eda26e2d7758ee06b80ea9a7e",
    "1d7629d407dbf3a734edc99cc3da309685ffeb6e84baa1b18b3d90e174d71e51",
];

/// The full encoding (meta, parents, signature) of the genesis and of the merge.
const EXPECTED_GENESIS_BYTES: &str = concat!(
    "01111111111111111111111111111111118a88e3dd7409f195fd52db2d3cba5d",
    "72ca6709bf1d94121bf3748801b40f6f5c000000000000000100000000000000",
    "010000018bcfe56801068a88e3dd7409f195fd52db2d3cba5d72ca6709bf1d94",
    "121bf3748801b40f6f5c0005616c706861008f87bcc29b14e0249fcdc4d3e3dd",
    "acc037621c5e9e1cfc256449b9d1f1a442ac113b6cb3b1b2c3337c9f32490095",
    "0cd82fd0aa5bf8ef2bbe23a8ec2281d8b505",
);
const EXPECTED_MERGE_BYTES: &str = concat!(
    "01111111111111111111111111111111118a88e3dd7409f195fd52db2d3cba5d",
    "72ca6709bf1d94121bf3748801b40f6f5c000000000000000500000000000000",
    "050000018bcfe56805050213b2e75f9e7ebd6918880f75c0c7e099aa14e0d836",
    "f46e9b8594963c99238819ef79348fad638b9f4318c3adf3800affd8a489ea94",
    "b9659ea38ad7b39c56e92129e940510a9fe567dcd2bc68ded52aab90872f36cc",
    "a48d5997bf9e0e2abacb9a34ab578e8f6bd8373412ed4cd0f70f0402398c42f2",
    "0ea5d35eff4aa9ec2ad40e",
);

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[test]
fn golden_hashes() {
    let v = vectors();
    let got: Vec<String> = v.iter().map(|e| e.hash().to_hex()).collect();
    if std::env::var_os("PRINT_GOLDEN").is_some() {
        for (i, h) in got.iter().enumerate() {
            println!("hash {i}: {h}");
        }
        for (i, e) in v.iter().enumerate() {
            println!("bytes {i}: {}", hex(&e.to_bytes()));
        }
    }
    assert_eq!(got, EXPECTED_HASHES);
    assert_eq!(hex(&v[0].to_bytes()), EXPECTED_GENESIS_BYTES);
    assert_eq!(hex(&v[5].to_bytes()), EXPECTED_MERGE_BYTES);
}

#[test]
fn golden_entries_round_trip_and_form_a_valid_chain() {
    let v = vectors();
    for e in &v {
        let back = Entry::from_bytes(&e.to_bytes()).unwrap();
        assert_eq!(&back, e);
        assert_eq!(back.hash(), e.hash());
    }
    let store = ChainStore::open(harpbridge::db::in_memory().unwrap()).unwrap();
    let lib = LibraryId([0x11; 16]);
    let out = store.insert_remote(&lib, v.clone()).unwrap();
    assert_eq!(out.inserted, 8);
    assert_eq!(store.heads(&lib).unwrap(), vec![v[7].hash()]);
    assert_eq!(store.members(&lib).unwrap(), vec![key(1).device_key()]);
    let tree = store.tree(&lib).unwrap();
    let names: Vec<&str> = tree.items.keys().map(String::as_str).collect();
    assert_eq!(names, ["docs", "docs/final.pdf", "Ünïcode", "Ünïcode/dir"]);
    assert!(matches!(
        tree.items["docs/final.pdf"],
        TreeItem::File { size: 12345, .. }
    ));
}

/// The one-parent rule is Harp's `append_metadata(prev_hash, meta) =
/// SHA3-256(meta.serialize() || prev_hash)`, checked with the sha3 crate directly on metadata
/// bytes laid out by hand here (not by the codec).
#[test]
fn one_parent_rule_matches_independent_sha3() {
    let v = vectors();
    let (g, e1) = (&v[0], &v[1]);
    let a = key(1).device_key();

    let mut meta = vec![1u8]; // format version
    meta.extend_from_slice(&[0x11; 16]); // library
    meta.extend_from_slice(&a.0); // author
    meta.extend_from_slice(&2u64.to_be_bytes()); // seq
    meta.extend_from_slice(&2u64.to_be_bytes()); // lamport
    meta.extend_from_slice(&(WALL + 2).to_be_bytes()); // wall time
    meta.push(1); // Put
    meta.extend_from_slice(&15u16.to_be_bytes());
    meta.extend_from_slice(b"docs/report.pdf");
    meta.extend_from_slice(&12345u64.to_be_bytes());
    meta.extend_from_slice(&1_699_999_999_000i64.to_be_bytes());
    meta.extend_from_slice(&[0xcc; 32]);
    meta.push(1); // has Nextcloud ref
    meta.extend_from_slice(&42u64.to_be_bytes());
    meta.extend_from_slice(&6u16.to_be_bytes());
    meta.extend_from_slice(b"\"5f3a\"");
    assert_eq!(e1.meta().encode(), meta);

    let mut h = Sha3_256::new();
    h.update(&meta);
    h.update(g.hash().0);
    let append_metadata: [u8; 32] = h.finalize().into();
    assert_eq!(e1.hash(), EntryHash(append_metadata));

    // The genesis hashes against 32 zero bytes.
    let mut h = Sha3_256::new();
    h.update(g.meta().encode());
    h.update([0u8; 32]);
    let genesis: [u8; 32] = h.finalize().into();
    assert_eq!(g.hash(), EntryHash(genesis));

    // Several parents: ascending order, whatever order they were given in.
    let m = &v[5];
    let mut ps = [v[3].hash(), v[4].hash()];
    ps.sort();
    let mut h = Sha3_256::new();
    h.update(m.meta().encode());
    h.update(ps[0].0);
    h.update(ps[1].0);
    let merged: [u8; 32] = h.finalize().into();
    assert_eq!(m.hash(), EntryHash(merged));
}

#[test]
fn signatures_verify_with_the_libp2p_key() {
    let v = vectors();
    let pk = libp2p_identity::ed25519::PublicKey::try_from_bytes(&key(1).device_key().0).unwrap();
    assert!(pk.verify(&v[0].hash().0, v[0].signature()));
    let dk: DeviceKey = key(2).device_key();
    let pk2 = libp2p_identity::ed25519::PublicKey::try_from_bytes(&dk.0).unwrap();
    assert!(pk2.verify(&v[3].hash().0, v[3].signature()));
}
