//! The `harpbridge` binary as a process, for the tests that drive its command line
//! (`cache_cli`, `p2p_cli`, `import_cli`, `pair_cli`, `lan_wan`).
//!
//! Two ways to run it:
//! - to completion ([`run`], [`output`]): one command over a data directory, its stdout
//!   read afterwards (`id`, `import`, `chain log`, `peers add`, …);
//! - as a long-running role ([`Proc`]): `node` or `cache`, whose stdout lines (`peer-id …`,
//!   `listening …`, `synced …`, `fetched …`) are waited for one at a time, and which is
//!   stopped with SIGTERM (SIGKILL after 5 s) when dropped, also when the test panics.
//!
//! A [`Proc`] starts any [`Command`]; [`command`] builds one with an optional prefix, so that
//! the LAN/WAN lab runs the same helper under `ip netns exec NS`.
//!
//! Included on its own by `#[path]` from the CLI tests (they need none of the Nextcloud
//! double), and as `support::cli` by the rest.
#![allow(dead_code)]

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

/// The `harpbridge` binary Cargo built for this test.
pub const BIN: &str = env!("CARGO_BIN_EXE_harpbridge");

/// `PREFIX… PROGRAM ARGS` (the prefix may be empty), without the ExApp's storage variable, so
/// that `--data-dir` is what decides where a process keeps its state.
pub fn command<S: AsRef<std::ffi::OsStr>>(prefix: &[&str], program: &Path, args: &[S]) -> Command {
    let mut c = match prefix.split_first() {
        Some((first, rest)) => {
            let mut c = Command::new(first);
            c.args(rest).arg(program);
            c
        }
        None => Command::new(program),
    };
    c.args(args).env_remove("APP_PERSISTENT_STORAGE");
    c
}

/// `harpbridge ARGS --data-dir DIR` on this host, not started yet.
pub fn harpbridge(args: &[&str], dir: &Path) -> Command {
    let mut c = command(&[], Path::new(BIN), args);
    c.arg("--data-dir").arg(dir);
    c
}

/// Runs `harpbridge ARGS --data-dir DIR` to completion, whatever its exit status.
pub fn output(args: &[&str], dir: &Path) -> Output {
    harpbridge(args, dir).output().expect("running harpbridge")
}

/// Runs `harpbridge ARGS --data-dir DIR` to completion; its stdout, which must be UTF-8.
/// Panics with its stderr if it failed.
pub fn run(args: &[&str], dir: &Path) -> String {
    stdout(&output(args, dir), args)
}

/// The stdout of a finished run that must have succeeded (`what` names it on failure).
pub fn stdout(out: &Output, what: &[&str]) -> String {
    assert!(
        out.status.success(),
        "{what:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).expect("UTF-8 on stdout")
}

/// The peer id of the device whose data directory is `dir` (`harpbridge id`).
pub fn peer_id(dir: &Path) -> String {
    run(&["id"], dir)
        .lines()
        .find_map(|l| l.strip_prefix("peer id:"))
        .expect("a peer id line")
        .trim()
        .to_string()
}

/// The library id `harpbridge import` printed (`library <id> …`).
pub fn imported_library(out: &str) -> String {
    out.lines()
        .find_map(|l| l.strip_prefix("library "))
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or_else(|| panic!("no library id in {out:?}"))
        .to_string()
}

/// `size` bytes that neither compress nor repeat (xorshift from `seed`), into `dir/name`.
pub fn write_random_file(dir: &Path, name: &str, size: u64, seed: u64) -> PathBuf {
    fs::create_dir_all(dir).unwrap();
    let path = dir.join(name);
    let mut f = std::io::BufWriter::new(fs::File::create(&path).unwrap());
    let mut x = seed | 1;
    let mut left = size;
    let mut buf = vec![0u8; 1 << 16];
    while left > 0 {
        for chunk in buf.chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
        }
        let n = left.min(buf.len() as u64) as usize;
        f.write_all(&buf[..n]).unwrap();
        left -= n as u64;
    }
    f.flush().unwrap();
    path
}

/// A running process whose stdout is read line by line; stopped (SIGTERM, then SIGKILL)
/// when dropped.
pub struct Proc {
    name: String,
    child: Child,
    lines: mpsc::Receiver<String>,
    /// Every stdout line so far, for checks after the fact.
    seen: Arc<Mutex<Vec<String>>>,
    /// Where its stderr goes, if kept: its tail is shown when a wait fails.
    log: Option<PathBuf>,
}

impl Proc {
    /// Starts `harpbridge ARGS --data-dir DIR` on this host, logging warnings only (to
    /// nowhere: its stdout is what tests read).
    pub fn harpbridge(name: &str, args: &[&str], dir: &Path) -> Proc {
        let mut c = harpbridge(args, dir);
        c.env("RUST_LOG", "warn");
        Proc::start(name, c, None)
    }

    /// Starts `command` with its stdout piped and its stderr into `log` (discarded without
    /// one). Each stdout line is echoed as `[name] line`, kept, and handed to [`Proc::line`].
    pub fn start(name: &str, mut command: Command, log: Option<&Path>) -> Proc {
        let stderr = match log {
            Some(path) => Stdio::from(fs::File::create(path).expect("creating a log file")),
            None => Stdio::null(),
        };
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name}: {e}"));
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, lines) = mpsc::channel();
        let tag = name.to_string();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let all = seen.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                println!("[{tag}] {line}");
                all.lock().unwrap().push(line.clone());
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Proc {
            name: name.to_string(),
            child,
            lines,
            seen,
            log: log.map(Path::to_path_buf),
        }
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Every stdout line printed so far.
    pub fn lines_so_far(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }

    /// Whether a line starting with `prefix` was printed so far.
    pub fn saw(&self, prefix: &str) -> bool {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.starts_with(prefix))
    }

    /// The rest of the first line ever printed that starts with `prefix` (one already read
    /// past by [`Proc::line`] too), waiting up to `wait` for it.
    pub fn first_line(&self, prefix: &str, wait: Duration) -> String {
        // A line enters `seen` before it is sent: absent here, it is still to come.
        let earlier = self
            .seen
            .lock()
            .unwrap()
            .iter()
            .find_map(|l| l.strip_prefix(prefix).map(|rest| rest.trim().to_string()));
        earlier.unwrap_or_else(|| self.line(prefix, wait))
    }

    /// The rest of the first line from now on that starts with `prefix`, within `wait`.
    pub fn line(&self, prefix: &str, wait: Duration) -> String {
        self.line_where(&format!("line starting with {prefix:?}"), wait, |l| {
            l.strip_prefix(prefix).map(|rest| rest.trim().to_string())
        })
    }

    /// The first line from now on that `pick` accepts (what it makes of it), within `wait`;
    /// panics otherwise, with the tail of the process's log if it has one.
    pub fn line_where<T>(
        &self,
        what: &str,
        wait: Duration,
        mut pick: impl FnMut(&str) -> Option<T>,
    ) -> T {
        let deadline = Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => {
                    if let Some(t) = pick(&l) {
                        return t;
                    }
                }
                Err(e) => {
                    let log = self
                        .log
                        .as_ref()
                        .and_then(|p| fs::read_to_string(p).ok())
                        .unwrap_or_default();
                    let tail: Vec<&str> = log.lines().rev().take(40).collect();
                    panic!(
                        "{}: no {what} within {wait:?} ({e}); log tail:\n{}",
                        self.name,
                        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                    );
                }
            }
        }
    }

    /// Stops the process now (SIGTERM, then SIGKILL after 5 s) and waits for it.
    pub fn stop(mut self) {
        self.terminate();
    }

    /// Kills the process at once (SIGKILL, as a crash or a power cut would) and waits.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn terminate(&mut self) {
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
        self.terminate();
    }
}
