//! `harpbridge cache` as a process on loopback: it joins a library a node offers once
//! `harpbridge offers accept` approves it, tries to prefetch its content, keeps its block
//! store under `--cache-limit-mib`, and while the cache and the node run (each holding its database)
//! `harpbridge peers list` on either data directory prints that process's own peer list.
//!
//! Fetching itself (bytes, from whom, LAN first) is shown by the LAN/WAN lab test
//! (`tests/lan_wan.rs`) and the block-transfer tests.

#[path = "support/cli.rs"]
mod cli;

use std::path::Path;
use std::time::{Duration, Instant};

use cli::{imported_library, peer_id, run, Proc};

const WAIT: Duration = Duration::from_secs(30);

/// A library imported on `a` from `src` with `b`'s device added as a member; its id.
fn shared_library(a: &Path, b: &Path, src: &Path) -> String {
    let imported = run(&["import", "--library", "new", src.to_str().unwrap()], a);
    let lib = imported_library(&imported);
    run(&["peers", "add", "--library", &lib, &peer_id(b)], a);
    lib
}

/// `node` on `a`, and `cache` on `b` dialling it with `extra` arguments; A's peer id.
fn node_and_cache(a: &Path, b: &Path, extra: &[&str]) -> (Proc, Proc, String) {
    let node = Proc::harpbridge(
        "node",
        &["node", "--no-mdns", "--listen", "/ip4/127.0.0.1/tcp/0"],
        a,
    );
    let a_peer = node.line("peer-id ", WAIT);
    let a_addr = node.line("listening ", WAIT);
    let dial = format!("{a_addr}/p2p/{a_peer}");
    let args = [
        &[
            "cache",
            "--no-mdns",
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
            "--peer",
            &dial,
        ],
        extra,
    ]
    .concat();
    let cache = Proc::harpbridge("cache", &args, b);
    (node, cache, a_peer)
}

#[test]
fn a_running_cache_syncs_the_chain_and_peers_list_shows_its_and_the_nodes_peers() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let src = tempfile::tempdir().unwrap();
    std::fs::write(src.path().join("f.txt"), b"some content").unwrap();
    let b_peer = peer_id(b.path());
    let lib = shared_library(a.path(), b.path(), src.path());
    let (node, cache, a_peer) = node_and_cache(a.path(), b.path(), &[]);
    // A's offer waits for approval: reported once, listed, and nothing pulled meanwhile.
    let offered = cache.line(&format!("offered {lib} by "), WAIT);
    assert!(offered.starts_with(&a_peer), "{offered}");
    let listed = run(&["offers", "list"], b.path());
    assert!(
        listed.starts_with(&format!("{lib} pending ")) && listed.contains(&a_peer),
        "{listed}"
    );
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        !cache.saw(&format!("synced {lib}")),
        "pulled before approval"
    );

    let accepted = run(&["offers", "accept", &lib], b.path());
    assert!(
        accepted.starts_with(&format!("accepted {lib}")),
        "{accepted}"
    );
    assert_eq!(cache.line(&format!("synced {lib} with "), WAIT), a_peer);
    // The Put is seen and its content asked for (fetched, or a failure line to retry).
    let outcome = cache.line_where("fetch outcome line", WAIT, |l| {
        (l.starts_with(&format!("fetched {lib} "))
            || l.starts_with(&format!("fetch-failed {lib} ")))
        .then(|| l.to_string())
    });
    assert!(outcome.contains(" f.txt"), "{outcome}");

    // The cache holds the database: peers list prints the cache's own list (written every
    // 5 s), where node A is a trusted, connected WAN peer (it was dialled, not found by mDNS).
    lists_trusted_wan_peer(b.path(), "cache", &a_peer);
    // The node holds A's database the same way, and lists the cache it was dialled by.
    lists_trusted_wan_peer(a.path(), "node", &b_peer);

    cache.stop();
    assert!(
        !b.path().join("peers.json").exists(),
        "a stopped cache leaves no peer list behind"
    );
    node.stop();
    assert!(
        !a.path().join("peers.json").exists(),
        "a stopped node leaves no peer list behind"
    );
}

/// Checks that `peers list` on `dir`, held by a running `role` (`cache`, `node`), prints
/// that process's list, where `peer` is a trusted, connected WAN peer sharing one library.
fn lists_trusted_wan_peer(dir: &Path, role: &str, peer: &str) {
    let listed = listed_as_trusted(dir, peer);
    assert!(
        listed.contains(&format!("in use by a running harpbridge {role} (")),
        "{listed}"
    );
    let row = listed
        .lines()
        .find(|l| l.starts_with(peer))
        .unwrap_or_else(|| panic!("{listed}"));
    assert!(
        row.contains("  trusted  wan  connected  rtt ") && row.contains(" libraries 1 "),
        "{row}"
    );
}

/// Runs `peers list` on `dir` (held by a running process) until `peer`'s row says trusted;
/// returns that output.
fn listed_as_trusted(dir: &Path, peer: &str) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        let out = cli::output(&["peers", "list", "--no-mdns"], dir);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        // The list is a snapshot written every 5 s: the first may predate the sync that
        // made the peer a member here, so wait for its row to say trusted.
        let trusted = text
            .lines()
            .any(|l| l.starts_with(peer) && l.contains("  trusted  "));
        if out.status.success() && trusted {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "peers list never showed {peer} as trusted: {text} {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// A library four times the cache's limit: the cache fetches what fits, skips the rest
/// (saying so), and its block store stays under the limit.
#[test]
fn a_cache_keeps_its_limit_when_a_library_is_larger() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let src = tempfile::tempdir().unwrap();
    for i in 0..8 {
        cli::write_random_file(src.path(), &format!("f{i}.bin"), 512 * 1024, 2 * i + 1);
    }
    let lib = shared_library(a.path(), b.path(), src.path());
    // Accepted before it is offered: joined as soon as A offers it.
    run(&["offers", "accept", &lib], b.path());
    let (node, cache, _) = node_and_cache(a.path(), b.path(), &["--cache-limit-mib", "1"]);
    // Every one of the 8 versions is either fetched or skipped.
    let (mut fetched, mut skipped) = (0, 0);
    while fetched + skipped < 8 {
        let l = cache.line_where("a fetched or skipped line", WAIT, |l| {
            (l.starts_with("fetched ") || l.starts_with("skipped ")).then(|| l.to_string())
        });
        if l.starts_with("fetched ") {
            fetched += 1;
        } else {
            assert!(l.ends_with("the cache is full (--cache-limit-mib)"), "{l}");
            skipped += 1;
        }
    }
    assert!(fetched >= 1, "something fits");
    assert!(skipped >= 6, "at most two 512 KiB files fit in 1 MiB");
    let stored = dir_bytes(&b.path().join("blocks"));
    assert!(
        stored <= 1024 * 1024,
        "the block store holds {stored} bytes"
    );
    cache.stop();
    node.stop();
}

/// Bytes in the files under `dir`.
fn dir_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let meta = e.metadata().unwrap();
            if meta.is_dir() {
                todo.push(e.path());
            } else {
                total += meta.len();
            }
        }
    }
    total
}
