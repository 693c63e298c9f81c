//! `harpbridge pair` as a process, offline on a data directory: it appends one `AddDevice`
//! per library (every library of this device by default), is idempotent, refuses what is not
//! a device id, and `peers add` still does the same for one library.

#[path = "support/cli.rs"]
mod cli;

use std::path::Path;
use std::process::Output;

use harpbridge::chain::{ChainStore, LibraryId};
use harpbridge::identity::DeviceIdentity;

/// `harpbridge ARGS --data-dir DIR` to completion, logging warnings only.
fn run(args: &[&str], dir: &Path) -> Output {
    cli::harpbridge(args, dir)
        .env("RUST_LOG", "warn")
        .output()
        .expect("running harpbridge")
}

/// The stdout of a run that must have succeeded.
fn stdout(out: &Output) -> String {
    cli::stdout(out, &[])
}

/// Two libraries made by this device, and one made by another device that only lists it.
fn data_dir() -> (tempfile::TempDir, [LibraryId; 3]) {
    let dir = tempfile::tempdir().unwrap();
    let (me, _) = DeviceIdentity::load_or_create(dir.path()).unwrap();
    let chain = ChainStore::open(harpbridge::db::open(dir.path()).unwrap()).unwrap();
    let (a, _) = chain.create_library(me.signing_key(), "me").unwrap();
    let (b, _) = chain.create_library(me.signing_key(), "me").unwrap();
    // A library whose chain was copied here, of which this device is not a member.
    let other = DeviceIdentity::from_secret([8; 32]);
    let elsewhere = tempfile::tempdir().unwrap();
    let theirs = ChainStore::open_path(&elsewhere.path().join("db.redb")).unwrap();
    let (c, genesis) = theirs.create_library(other.signing_key(), "other").unwrap();
    chain.insert_remote(&c, vec![genesis]).unwrap();
    (dir, [a, b, c])
}

fn members(dir: &Path, lib: &LibraryId) -> usize {
    let chain = ChainStore::open(harpbridge::db::open(dir).unwrap()).unwrap();
    chain.members(lib).unwrap().len()
}

#[test]
fn pair_adds_the_device_to_this_devices_libraries() {
    let (dir, [a, b, c]) = data_dir();
    let friend = DeviceIdentity::from_secret([9; 32]);
    let peer = friend.peer_id().to_base58();

    let out = stdout(&run(
        &["pair", &peer, "--name", "office laptop"],
        dir.path(),
    ));
    assert_eq!(
        out.lines().filter(|l| l.starts_with("added")).count(),
        2,
        "{out}"
    );
    assert_eq!(members(dir.path(), &a), 2);
    assert_eq!(members(dir.path(), &b), 2);
    assert_eq!(members(dir.path(), &c), 1, "not this device's to share");

    // Again: nothing new.
    let out = stdout(&run(&["pair", &peer], dir.path()));
    assert_eq!(out.matches("already a member").count(), 2, "{out}");
    assert_eq!(members(dir.path(), &a), 2);

    // A library this device cannot add members to is refused.
    let out = run(&["pair", &peer, "--library", &c.to_hex()], dir.path());
    assert!(!out.status.success());
    assert_eq!(members(dir.path(), &c), 1);

    // Not a device id: refused before anything is opened.
    let out = run(&["pair", "not-a-peer-id"], dir.path());
    assert_eq!(out.status.code(), Some(2), "clap refuses it");
    let hashed = libp2p::PeerId::random().to_base58();
    let out = run(&["pair", &hashed], dir.path());
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not an ed25519 device id"));
}

#[test]
fn peers_add_is_pair_for_one_library() {
    let (dir, [a, b, _]) = data_dir();
    let friend = DeviceIdentity::from_secret([10; 32]).peer_id().to_base58();
    let out = stdout(&run(
        &["peers", "add", "--library", &a.to_hex(), &friend],
        dir.path(),
    ));
    assert!(out.starts_with("added"), "{out}");
    assert_eq!(members(dir.path(), &a), 2);
    assert_eq!(members(dir.path(), &b), 1);
}
