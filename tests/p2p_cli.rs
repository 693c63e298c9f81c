//! `harpbridge node` and `harpbridge peers add` as processes: device A makes a library and
//! pairs B by its PeerId; two `node` processes on loopback sync it; B's chain then holds it.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_harpbridge");
const WAIT: Duration = Duration::from_secs(20);

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

/// A running `harpbridge node`, stopped (SIGTERM, then SIGKILL) when dropped.
struct NodeProc {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl NodeProc {
    fn start(dir: &Path, extra: &[&str]) -> NodeProc {
        let mut child = Command::new(BIN)
            .args(["node", "--no-mdns", "--listen", "/ip4/127.0.0.1/tcp/0"])
            .args(extra)
            .arg("--data-dir")
            .arg(dir)
            .env("RUST_LOG", "warn")
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
        NodeProc { child, lines }
    }

    /// The first line starting with `prefix` (its rest), within [`WAIT`].
    fn line(&self, prefix: &str) -> String {
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
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

    fn stop(mut self) {
        self.terminate();
    }

    fn terminate(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            unsafe {
                libc::kill(self.child.id() as i32, libc::SIGTERM);
            }
            let deadline = std::time::Instant::now() + Duration::from_secs(5);
            while std::time::Instant::now() < deadline {
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

impl Drop for NodeProc {
    fn drop(&mut self) {
        self.terminate();
    }
}

#[test]
fn two_node_processes_sync_a_paired_library() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let b_id = run(&["id"], b.path());
    let b_peer = b_id
        .lines()
        .find_map(|l| l.strip_prefix("peer id:"))
        .unwrap()
        .trim()
        .to_string();
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

    let node_a = NodeProc::start(a.path(), &[]);
    let a_peer = node_a.line("peer-id ");
    let a_addr = node_a.line("listening ");
    let dial = format!("{a_addr}/p2p/{a_peer}");
    let node_b = NodeProc::start(b.path(), &["--peer", &dial]);
    let synced = node_b.line(&format!("synced {lib} with "));
    assert_eq!(synced, a_peer);
    node_b.stop();
    node_a.stop();

    let log = run(&["chain", "log", "--library", &lib], b.path());
    assert_eq!(log.matches("add-device").count(), 2, "{log}");
}
