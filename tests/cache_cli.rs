//! `harpbridge cache` as a process on loopback: it joins a library a node offers, tries to
//! prefetch its content, and while it runs (holding the database) `harpbridge peers list`
//! on its data directory prints the cache's own peer list.
//!
//! Fetching itself (bytes, from whom, LAN first) is shown by the LAN/WAN lab test
//! (`tests/lan_wan.rs`) and the block-transfer tests.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_harpbridge");
const WAIT: Duration = Duration::from_secs(30);

fn run(args: &[&str], dir: &Path) -> String {
    let out = Command::new(BIN)
        .args(args)
        .arg("--data-dir")
        .arg(dir)
        .env_remove("APP_PERSISTENT_STORAGE")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A running `harpbridge` role, stopped with SIGTERM (then SIGKILL) when dropped.
struct Proc {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Proc {
    fn start(args: &[&str], dir: &Path) -> Proc {
        let mut child = Command::new(BIN)
            .args(args)
            .arg("--data-dir")
            .arg(dir)
            .env("RUST_LOG", "warn")
            .env_remove("APP_PERSISTENT_STORAGE")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Proc { child, lines }
    }

    fn line(&self, prefix: &str) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => {
                    if let Some(rest) = l.strip_prefix(prefix) {
                        return rest.trim().to_string();
                    }
                }
                Err(e) => panic!("no line starting with {prefix:?} within {WAIT:?}: {e}"),
            }
        }
    }

    fn stop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            // SAFETY: signalling our own child by its pid.
            unsafe {
                libc::kill(self.child.id() as i32, libc::SIGTERM);
            }
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop();
    }
}

#[test]
fn a_running_cache_syncs_the_chain_and_peers_list_shows_its_peers() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let src = tempfile::tempdir().unwrap();
    std::fs::write(src.path().join("f.txt"), b"some content").unwrap();
    let b_peer = run(&["id"], b.path())
        .lines()
        .find_map(|l| l.strip_prefix("peer id:"))
        .unwrap()
        .trim()
        .to_string();
    let imported = run(
        &["import", "--library", "new", src.path().to_str().unwrap()],
        a.path(),
    );
    let lib = imported
        .lines()
        .find_map(|l| l.strip_prefix("library "))
        .and_then(|r| r.split_whitespace().next())
        .unwrap()
        .to_string();
    run(&["peers", "add", "--library", &lib, &b_peer], a.path());

    let node = Proc::start(
        &["node", "--no-mdns", "--listen", "/ip4/127.0.0.1/tcp/0"],
        a.path(),
    );
    let a_peer = node.line("peer-id ");
    let a_addr = node.line("listening ");
    let dial = format!("{a_addr}/p2p/{a_peer}");
    let mut cache = Proc::start(
        &[
            "cache",
            "--no-mdns",
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
            "--peer",
            &dial,
        ],
        b.path(),
    );
    assert_eq!(cache.line(&format!("synced {lib} with ")), a_peer);
    // The Put is seen and its content asked for (fetched, or a failure line to retry).
    let deadline = Instant::now() + WAIT;
    let outcome = loop {
        let l = cache
            .lines
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("a fetch outcome line");
        if l.starts_with(&format!("fetched {lib} "))
            || l.starts_with(&format!("fetch-failed {lib} "))
        {
            break l;
        }
    };
    assert!(outcome.contains(" f.txt"), "{outcome}");

    // The cache holds the database: peers list prints the cache's own list (written every
    // 5 s), where node A is a trusted, connected WAN peer (it was dialled, not found by mDNS).
    let deadline = Instant::now() + WAIT;
    let listed = loop {
        let out = Command::new(BIN)
            .args(["peers", "list", "--no-mdns", "--data-dir"])
            .arg(b.path())
            .env_remove("APP_PERSISTENT_STORAGE")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if out.status.success() && text.contains(&a_peer) {
            break text;
        }
        assert!(
            Instant::now() < deadline,
            "peers list never showed {a_peer}: {text} {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    assert!(
        listed.contains("in use by a running harpbridge cache"),
        "{listed}"
    );
    let row = listed
        .lines()
        .find(|l| l.starts_with(&a_peer))
        .unwrap_or_else(|| panic!("{listed}"));
    assert!(
        row.contains("  trusted  wan  connected  rtt ") && row.contains(" libraries 1 "),
        "{row}"
    );

    cache.stop();
    assert!(
        !b.path().join("peers.json").exists(),
        "a stopped cache leaves no peer list behind"
    );
}
