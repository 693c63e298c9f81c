//! Crash safety: a child process appends in a loop and prints each entry's hash only after
//! its commit returned; it is killed with SIGKILL at random moments, again and again, on the
//! same data directory. After every kill, the store opens (which verifies the whole chain)
//! and holds every entry that was acknowledged.

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use harpbridge::chain::{ChainStore, EntryHash};

const KILLS: usize = 24;

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[test]
fn acknowledged_appends_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let seed = getrandom::u64().unwrap() | 1;
    eprintln!("seed {seed}");
    let mut rng = Rng(seed);
    let mut acked: HashSet<EntryHash> = HashSet::new();
    let mut killed_mid_stream = 0;

    for round in 0..KILLS {
        let batch = if round % 3 == 2 { 4 } else { 1 };
        let mut child = Command::new(env!("CARGO_BIN_EXE_harpbridge"))
            .args(["chain", "stress-append", "--batch", &batch.to_string()])
            .arg("--data-dir")
            .arg(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn harpbridge");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel::<String>();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut lines: Vec<String> = Vec::new();
        if round % 4 == 3 {
            // Kill at a random moment after start (possibly while it opens the store).
            std::thread::sleep(Duration::from_millis(rng.below(60)));
        } else {
            // Kill a random few entries in, a random moment after an acknowledgement.
            let want = 1 + rng.below(6) as usize;
            while lines.len() < want {
                match rx.recv_timeout(Duration::from_secs(60)) {
                    Ok(l) => lines.push(l),
                    Err(_) => panic!("stress-append printed nothing for 60 s"),
                }
            }
            std::thread::sleep(Duration::from_micros(rng.below(3000)));
            killed_mid_stream += 1;
        }
        child.kill().expect("SIGKILL");
        let status = child.wait().unwrap();
        assert!(!status.success(), "the child was not killed: {status}");
        reader.join().unwrap();
        lines.extend(rx.try_iter());

        for l in &lines {
            // A line cut by the kill is not an acknowledgement we can read; skip it.
            if let Ok(h) = l.parse::<EntryHash>() {
                acked.insert(h);
            }
        }

        let db = harpbridge::db::open(dir.path()).unwrap();
        let store = ChainStore::open(db)
            .unwrap_or_else(|e| panic!("round {round}: the store does not open: {e}"));
        let libs = store.libraries();
        if acked.is_empty() {
            continue;
        }
        assert_eq!(libs.len(), 1, "round {round}");
        for h in &acked {
            assert!(
                store.contains(&libs[0], h),
                "round {round}: acknowledged entry {h} is gone"
            );
        }
        // Every acknowledged entry plus the genesis is there (unacknowledged ones may be too).
        assert!(store.len(&libs[0]).unwrap() > acked.len());
    }
    assert_eq!(killed_mid_stream, KILLS - KILLS / 4);
    assert!(
        acked.len() >= killed_mid_stream,
        "too few acknowledged entries"
    );
}
