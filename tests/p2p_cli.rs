//! `harpbridge node` and `harpbridge peers add` as processes: device A makes a library and
//! pairs B by its PeerId; two `node` processes on loopback sync it; B's chain then holds it.

#[path = "support/cli.rs"]
mod cli;

use std::path::Path;
use std::time::Duration;

use cli::{peer_id, run, Proc};

const WAIT: Duration = Duration::from_secs(20);

/// `harpbridge node` over `dir`, on loopback with mDNS off, plus `extra` arguments.
fn node(name: &str, dir: &Path, extra: &[&str]) -> Proc {
    let args = [
        &["node", "--no-mdns", "--listen", "/ip4/127.0.0.1/tcp/0"],
        extra,
    ]
    .concat();
    Proc::harpbridge(name, &args, dir)
}

#[test]
fn two_node_processes_sync_a_paired_library() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let b_peer = peer_id(b.path());
    let init = run(&["chain", "init", "--name", "a"], a.path());
    let lib = init
        .split_whitespace()
        .nth(1)
        .expect("library id")
        .to_string();
    let added = run(
        &["peers", "add", "--library", &lib, &b_peer, "--name", "b"],
        a.path(),
    );
    assert!(added.starts_with(&format!("added {b_peer}")), "{added}");

    let node_a = node("node-a", a.path(), &[]);
    let a_peer = node_a.line("peer-id ", WAIT);
    let a_addr = node_a.line("listening ", WAIT);
    let dial = format!("{a_addr}/p2p/{a_peer}");
    let node_b = node("node-b", b.path(), &["--peer", &dial]);
    let synced = node_b.line(&format!("synced {lib} with "), WAIT);
    assert_eq!(synced, a_peer);
    node_b.stop();
    node_a.stop();

    let log = run(&["chain", "log", "--library", &lib], b.path());
    assert_eq!(log.matches("add-device").count(), 2, "{log}");
}
