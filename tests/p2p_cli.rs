//! `harpbridge node` and `harpbridge peers add` as processes: device A makes a library and
//! pairs B by its PeerId; two `node` processes on loopback sync it; B's chain then holds it.

#[path = "support/cli.rs"]
mod cli;

use std::path::Path;
use std::time::Duration;

use cli::{output, peer_id, run, Proc};

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
    // B joins nothing on its own: A's offer waits until B's owner accepts it.
    let offered = node_b.line(&format!("offered {lib} by "), WAIT);
    assert!(offered.starts_with(&a_peer), "{offered}");
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        !node_b.saw(&format!("synced {lib}")),
        "joined before approval"
    );
    run(&["offers", "accept", &lib], b.path());
    let synced = node_b.line(&format!("synced {lib} with "), WAIT);
    assert_eq!(synced, a_peer);
    node_b.stop();
    node_a.stop();

    let log = run(&["chain", "log", "--library", &lib], b.path());
    assert_eq!(log.matches("add-device").count(), 2, "{log}");
}

/// Raises this process's open-file limit towards `want` (children inherit it); the limit now.
fn raise_nofile(want: u64) -> u64 {
    // SAFETY: getrlimit/setrlimit with a valid pointer to a local struct.
    unsafe {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return 0;
        }
        if limit.rlim_cur < want {
            limit.rlim_cur = want.min(limit.rlim_max);
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
            libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
        }
        limit.rlim_cur
    }
}

/// Open file descriptors of process `pid`.
fn fds_of(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

#[test]
fn a_flood_of_connections_is_bounded_and_the_node_serves_after_it() {
    const FLOOD: usize = 3000;
    let limit = raise_nofile(2 * FLOOD as u64 + 1024);
    if limit < FLOOD as u64 + 256 {
        eprintln!("skipping: RLIMIT_NOFILE is {limit}, too low for {FLOOD} connections");
        return;
    }
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let b_peer = peer_id(b.path());
    let init = run(&["chain", "init", "--name", "a"], a.path());
    let lib = init.split_whitespace().nth(1).unwrap().to_string();
    run(
        &["peers", "add", "--library", &lib, &b_peer, "--name", "b"],
        a.path(),
    );
    // B joins what A offers once accepted (here before it starts).
    run(&["offers", "accept", &lib], b.path());
    let node_a = node("node-a", a.path(), &[]);
    let a_peer = node_a.line("peer-id ", WAIT);
    let a_addr = node_a.line("listening ", WAIT);
    let port: u16 = a_addr.rsplit('/').next().unwrap().parse().unwrap();
    let pid = node_a.pid();
    let before = fds_of(pid);

    // 3,000 TCP connections that never finish a handshake, held open.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let mut held = Vec::with_capacity(FLOOD);
    for _ in 0..FLOOD {
        match std::net::TcpStream::connect(("127.0.0.1", port)) {
            Ok(s) => held.push(s),
            Err(_) => break,
        }
        assert!(
            std::time::Instant::now() < deadline,
            "connecting took too long"
        );
    }
    std::thread::sleep(Duration::from_secs(1));
    let during = fds_of(pid);
    assert!(
        during < before + 200,
        "{} connections took the node from {before} to {during} open files",
        held.len()
    );

    // Once the flood stops, the node serves again: B syncs the library.
    drop(held);
    let dial = format!("{a_addr}/p2p/{a_peer}");
    let node_b = node("node-b", b.path(), &["--peer", &dial]);
    node_b.line(&format!("synced {lib} with "), WAIT);
    node_b.stop();
    node_a.stop();
}

/// `harpbridge limits`: what is kept in the data directory wins over `--wan-limit` at the
/// start, and a change made while the node runs is in force within a second or two; bad
/// rates are refused before anything is written.
#[test]
fn wan_limits_set_on_the_command_line_reach_a_running_node() {
    let a = tempfile::tempdir().unwrap();
    let lib = "0123456789abcdef0123456789abcdef";
    let set = run(&["limits", "set", "--up", "2mbit"], a.path());
    assert_eq!(set.trim(), "WAN limits: up 2mbit, down unlimited");

    let node_a = node("node-a", a.path(), &["--wan-limit", "1mbit"]);
    // The kept setting replaces the flag's: up as kept, down unlimited.
    assert_eq!(
        node_a.line("WAN limits: ", WAIT),
        "up 2mbit, down unlimited"
    );
    run(
        &["limits", "set", "--library", lib, "--down", "1MiB"],
        a.path(),
    );
    assert_eq!(
        node_a.line("WAN limits: ", WAIT),
        format!("up 2mbit, down unlimited; library {lib} up unlimited, down 1MiB")
    );

    let out = output(&["limits", "set", "--up", "fast"], a.path());
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not a rate"));
    let shown = run(&["limits", "show"], a.path());
    assert_eq!(
        shown.trim(),
        format!("up 2mbit, down unlimited\nlibrary {lib} up unlimited, down 1MiB")
    );
    node_a.stop();
}
