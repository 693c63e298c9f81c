//! `harpbridge node --dir` as processes on loopback: real folders kept in two-way sync.
//!
//! Each device is one `node --dir` process over its own data directory and folder; the
//! first makes the library from its folder and pairs the others (`--pair`), which join it
//! (`--library`). Changes are made in the folders as a person would (write, edit, rename,
//! delete, mkdir, rmdir), and each test waits until every folder holds the same files
//! (`.harp/` aside), then checks that nothing was lost: every replaced or deleted version
//! is in a trash can or a conflict copy.

#[path = "support/cli.rs"]
mod cli;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cli::{peer_id, write_random_file, Proc};

const WAIT: Duration = Duration::from_secs(60);

/// One device: its data directory, its folder, and its running node (if any).
struct Device {
    name: &'static str,
    data: tempfile::TempDir,
    folder: PathBuf,
    peer: String,
    node: Option<Proc>,
}

impl Device {
    fn new(name: &'static str, root: &Path) -> Device {
        let data = tempfile::tempdir().unwrap();
        let folder = root.join(name);
        fs::create_dir_all(&folder).unwrap();
        let peer = peer_id(data.path());
        Device {
            name,
            data,
            folder,
            peer,
            node: None,
        }
    }

    /// Starts `node --dir` with `extra` arguments; returns the library line's id.
    fn start(&mut self, extra: &[&str]) -> String {
        let folder = self.folder.to_str().unwrap().to_owned();
        let args = [
            &[
                "node",
                "--no-mdns",
                "--listen",
                "/ip4/127.0.0.1/tcp/0",
                "--dir",
                &folder,
                "--settle-ms",
                "50",
            ],
            extra,
        ]
        .concat();
        let log = self.data.path().join(format!("{}.log", self.name));
        let mut command = cli::harpbridge(&args, self.data.path());
        command.env("RUST_LOG", "harpbridge=info");
        let node = Proc::start(self.name, command, Some(&log));
        let library = node.line("library ", WAIT);
        self.node = Some(node);
        library.split_whitespace().next().unwrap().to_owned()
    }

    /// The address others dial it at.
    fn dial(&self) -> String {
        let node = self.node.as_ref().unwrap();
        // Its first lines, however many later ones a test has read past already.
        let peer = node.first_line("peer-id ", WAIT);
        let addr = node.first_line("listening ", WAIT);
        format!("{addr}/p2p/{peer}")
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.folder.join(rel)
    }
}

/// Every file below `folder` (`.harp/` aside): relative path → bytes; folders as `None`.
fn contents(folder: &Path) -> BTreeMap<String, Option<Vec<u8>>> {
    let mut out = BTreeMap::new();
    let mut dirs = vec![folder.to_owned()];
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let rel = path
                .strip_prefix(folder)
                .unwrap()
                .to_str()
                .unwrap()
                .to_owned();
            if rel == ".harp" {
                continue;
            }
            if path.is_dir() {
                out.insert(rel, None);
                dirs.push(path);
            } else {
                out.insert(rel, fs::read(&path).ok());
            }
        }
    }
    out
}

/// Every file in a folder's trash can.
fn trashed(folder: &Path) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut dirs = vec![folder.join(".harp/trash")];
    while let Some(dir) = dirs.pop() {
        for entry in fs::read_dir(&dir).into_iter().flatten().flatten() {
            if entry.path().is_dir() {
                dirs.push(entry.path());
            } else {
                out.push(fs::read(entry.path()).unwrap());
            }
        }
    }
    out
}

fn listing(map: &BTreeMap<String, Option<Vec<u8>>>) -> Vec<String> {
    map.iter()
        .map(|(p, c)| match c {
            None => format!("{p}/"),
            Some(b) => format!("{p} ({} bytes)", b.len()),
        })
        .collect()
}

/// Waits until every folder holds the same files and `check` accepts them.
fn converge(
    devices: &[&Device],
    what: &str,
    check: impl Fn(&BTreeMap<String, Option<Vec<u8>>>) -> bool,
) -> BTreeMap<String, Option<Vec<u8>>> {
    let deadline = Instant::now() + WAIT;
    loop {
        let all: Vec<_> = devices.iter().map(|d| contents(&d.folder)).collect();
        if all.windows(2).all(|w| w[0] == w[1]) && check(&all[0]) {
            return all[0].clone();
        }
        if Instant::now() > deadline {
            let shown: Vec<String> = devices
                .iter()
                .zip(&all)
                .map(|(d, c)| format!("{}: {:?}", d.name, listing(c)))
                .collect();
            panic!(
                "{what}: the folders did not converge:\n{}",
                shown.join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A and B, B joined to A's library; returns them and A's library id.
fn two_devices(root: &Path) -> (Device, Device, String) {
    let mut a = Device::new("a", root);
    let mut b = Device::new("b", root);
    let library = a.start(&["--pair", &b.peer.clone()]);
    let dial = a.dial();
    let joined = b.start(&["--library", &library, "--peer", &dial]);
    assert_eq!(joined, library);
    (a, b, library)
}

fn has(map: &BTreeMap<String, Option<Vec<u8>>>, rel: &str, bytes: &[u8]) -> bool {
    map.get(rel) == Some(&Some(bytes.to_vec()))
}

#[test]
fn two_devices_sync_every_kind_of_change_both_ways() {
    let root = tempfile::tempdir().unwrap();
    // What A holds before the library exists is its first content.
    let a_folder = root.path().join("a");
    fs::create_dir_all(a_folder.join("docs")).unwrap();
    fs::write(a_folder.join("docs/plan.txt"), b"plan v1").unwrap();
    fs::write(a_folder.join("readme.md"), b"# readme").unwrap();
    let (mut a, b, library) = two_devices(root.path());
    converge(&[&a, &b], "initial", |m| {
        has(m, "docs/plan.txt", b"plan v1")
    });
    // The first device said what its initial scan found.
    let scanned = format!(
        "scanned {}: 2 files, 15 bytes",
        a.folder.canonicalize().unwrap().display()
    );
    let deadline = Instant::now() + WAIT;
    while !a.node.as_ref().unwrap().saw(&scanned) {
        assert!(Instant::now() < deadline, "no {scanned:?} line");
        std::thread::sleep(Duration::from_millis(50));
    }

    // Created on B, edited on A, renamed, deleted, folders made and removed.
    fs::create_dir_all(b.path("photos/2026")).unwrap();
    fs::write(b.path("photos/2026/cat.jpg"), b"meow").unwrap();
    fs::write(a.path("docs/plan.txt"), b"plan v2").unwrap();
    converge(&[&a, &b], "create and edit", |m| {
        has(m, "photos/2026/cat.jpg", b"meow") && has(m, "docs/plan.txt", b"plan v2")
    });
    fs::rename(a.path("readme.md"), a.path("docs/README.md")).unwrap();
    fs::remove_file(b.path("photos/2026/cat.jpg")).unwrap();
    fs::remove_dir(b.path("photos/2026")).unwrap();
    fs::create_dir(a.path("empty")).unwrap();
    let end = converge(&[&a, &b], "rename, delete, rmdir, mkdir", |m| {
        has(m, "docs/README.md", b"# readme")
            && !m.contains_key("readme.md")
            && !m.contains_key("photos/2026")
            && m.get("empty") == Some(&None)
    });
    assert_eq!(
        listing(&end),
        vec![
            "docs/",
            "docs/README.md (8 bytes)",
            "docs/plan.txt (7 bytes)",
            "empty/",
            "photos/"
        ]
    );
    // Nothing lost: what syncs deleted or replaced at A is in A's trash.
    let a_trash = trashed(&a.folder);
    assert!(a_trash.contains(&b"meow".to_vec()), "{a_trash:?}");
    let b_trash = trashed(&b.folder);
    assert!(b_trash.contains(&b"plan v1".to_vec()), "{b_trash:?}");
    // Our own writes were not recorded again (no echo): B's file was written at A, not
    // recorded by A.
    let a_lines = a.node.as_ref().unwrap();
    assert!(!a_lines.saw("recorded: put photos/2026/cat.jpg"));

    // `status` says what A keeps, that it is in sync, and who its peer is.
    let deadline = Instant::now() + WAIT;
    let shown = loop {
        let shown = cli::run(&["status"], a.data.path());
        if (shown.contains("in sync:") && shown.contains("\npeer ")) || Instant::now() > deadline {
            break shown;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(shown.starts_with("node: running"), "{shown}");
    assert!(
        shown.contains(&format!(
            "library {library} {}",
            a.folder.canonicalize().unwrap().display()
        )),
        "{shown}"
    );
    assert!(shown.contains("(2 files, "), "{shown}");
    assert!(
        shown.contains("in sync: 0 to record, 0 to write"),
        "{shown}"
    );
    assert!(
        shown.contains(&format!("peer {} WAN connected", b.peer)),
        "{shown}"
    );
    drop(b);
    a.node.take().unwrap().stop();
    let shown = cli::run(&["status"], a.data.path());
    assert!(shown.starts_with("node: not running"), "{shown}");
    assert!(shown.contains("(2 files, "), "{shown}");
}

#[test]
fn an_offline_edit_and_a_concurrent_one_keep_both_named_alike_everywhere() {
    let root = tempfile::tempdir().unwrap();
    let (a, mut b, library) = two_devices(root.path());
    fs::write(a.path("notes.txt"), b"first").unwrap();
    fs::write(a.path("old-name.txt"), b"moved while offline").unwrap();
    converge(&[&a, &b], "first version", |m| {
        has(m, "notes.txt", b"first") && has(m, "old-name.txt", b"moved while offline")
    });

    // B goes offline; both edit the same file; B also adds one and renames one.
    b.node.take().unwrap().stop();
    // A clean stop saves the chain's checkpoint; the restart below opens from it.
    let log = fs::read_to_string(b.data.path().join("b.log")).unwrap();
    assert!(log.contains("chain checkpoint saved"), "{log}");
    fs::write(a.path("notes.txt"), b"edited on a").unwrap();
    fs::write(b.path("notes.txt"), b"edited on b while offline").unwrap();
    fs::write(b.path("offline.txt"), b"made offline").unwrap();
    fs::rename(b.path("old-name.txt"), b.path("new-name.txt")).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let dial = a.dial_again();
    b.start(&["--library", &library, "--peer", &dial]);

    let end = converge(&[&a, &b], "after reconnecting", |m| {
        has(m, "offline.txt", b"made offline")
            && m.keys().any(|k| k.starts_with("notes.sync-conflict-"))
    });
    // The offline rename, found by B's start-up rescan, reached A as one move.
    assert!(has(&end, "new-name.txt", b"moved while offline") && !end.contains_key("old-name.txt"));
    let deadline = Instant::now() + WAIT;
    let moved = ": rename old-name.txt -> new-name.txt";
    while !a
        .node
        .as_ref()
        .unwrap()
        .lines_so_far()
        .iter()
        .any(|l| l.ends_with(moved))
    {
        assert!(
            Instant::now() < deadline,
            "the offline rename did not arrive as a move: {:?}",
            a.node.as_ref().unwrap().lines_so_far()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let conflicts: Vec<&String> = end
        .keys()
        .filter(|k| k.starts_with("notes.sync-conflict-"))
        .collect();
    assert_eq!(conflicts.len(), 1, "{:?}", listing(&end));
    assert!(conflicts[0].ends_with(".txt"), "{conflicts:?}");
    // Both versions are there, one under the name and one as the conflict copy.
    let mut both = vec![
        end["notes.txt"].clone().unwrap(),
        end[conflicts[0]].clone().unwrap(),
    ];
    both.sort();
    assert_eq!(
        both,
        vec![
            b"edited on a".to_vec(),
            b"edited on b while offline".to_vec()
        ]
    );
}

impl Device {
    /// The address others dial it at, from the lines it printed at start.
    fn dial_again(&self) -> String {
        let node = self.node.as_ref().unwrap();
        let lines = node.lines_so_far();
        let peer = lines
            .iter()
            .find_map(|l| l.strip_prefix("peer-id "))
            .unwrap()
            .to_owned();
        let addr = lines
            .iter()
            .find_map(|l| l.strip_prefix("listening "))
            .unwrap()
            .to_owned();
        format!("{addr}/p2p/{peer}")
    }
}

#[test]
fn three_devices_in_a_line_reach_the_same_folder() {
    let root = tempfile::tempdir().unwrap();
    let mut a = Device::new("a", root.path());
    let mut b = Device::new("b", root.path());
    let mut c = Device::new("c", root.path());
    let library = a.start(&["--pair", &b.peer.clone(), "--pair", &c.peer.clone()]);
    let a_dial = a.dial();
    b.start(&["--library", &library, "--peer", &a_dial]);
    let b_dial = b.dial();
    // C knows only B: what A changes reaches C through B, and back.
    c.start(&["--library", &library, "--peer", &b_dial]);
    fs::write(a.path("from-a.txt"), b"a").unwrap();
    fs::create_dir(c.path("from-c")).unwrap();
    fs::write(c.path("from-c/c.txt"), b"c").unwrap();
    converge(&[&a, &b, &c], "three devices", |m| {
        has(m, "from-a.txt", b"a") && has(m, "from-c/c.txt", b"c")
    });
    fs::remove_dir_all(a.path("from-c")).unwrap();
    fs::write(b.path("from-a.txt"), b"b's edit").unwrap();
    converge(&[&a, &b, &c], "delete on a, edit on b", |m| {
        has(m, "from-a.txt", b"b's edit") && !m.contains_key("from-c")
    });
}

#[test]
fn a_device_killed_while_writing_a_large_file_leaves_no_partial_file_and_finishes() {
    let root = tempfile::tempdir().unwrap();
    let (a, mut b, library) = two_devices(root.path());
    // Written aside and moved in: A reads it once, complete.
    let staged = write_random_file(root.path(), "big.bin", 200 << 20, 7);
    fs::rename(&staged, a.path("big.bin")).unwrap();
    let want = fs::read(a.path("big.bin")).unwrap();
    // Kill B as soon as its write of the file has begun (its temporary file exists).
    let deadline = Instant::now() + WAIT;
    loop {
        let writing = fs::read_dir(&b.folder)
            .unwrap()
            .flatten()
            .any(|e| e.file_name().to_string_lossy().ends_with(".tmp"));
        if writing || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    b.node.take().unwrap().kill();
    // Whatever B holds under the real name is the whole file, or nothing.
    if let Ok(held) = fs::read(b.path("big.bin")) {
        assert!(held == want, "a partial file under the real name");
    }
    let dial = a.dial_again();
    b.start(&["--library", &library, "--peer", &dial]);
    converge(&[&a, &b], "after the restart", |m| has(m, "big.bin", &want));
}

/// Bytes of every file below `dir` but the database (the block store, mostly).
fn stored_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    let mut dirs = vec![dir.to_owned()];
    while let Some(d) = dirs.pop() {
        for entry in fs::read_dir(&d).into_iter().flatten().flatten() {
            let meta = entry.metadata().unwrap();
            if meta.is_dir() {
                dirs.push(entry.path());
            } else if entry.file_name() != "harpbridge.redb" {
                total += meta.len();
            }
        }
    }
    total
}

#[test]
fn a_folder_is_not_stored_twice_and_peers_are_served_from_its_files() {
    let root = tempfile::tempdir().unwrap();
    let mut a = Device::new("a", root.path());
    let mut b = Device::new("b", root.path());
    let staged = write_random_file(root.path(), "video.bin", 24 << 20, 11);
    fs::rename(&staged, a.path("video.bin")).unwrap();
    let want = fs::read(a.path("video.bin")).unwrap();
    let library = a.start(&["--pair", &b.peer.clone(), "--cache-mib", "1"]);
    // A records the file; its blocks then count as cache, and the cache holds 1 MiB.
    let node_a = a.node.as_ref().unwrap();
    node_a.line("recorded: put video.bin", WAIT);
    let deadline = Instant::now() + WAIT;
    while stored_bytes(a.data.path()) > 2 << 20 {
        assert!(
            Instant::now() < deadline,
            "A's store keeps {} bytes of a 24 MiB folder",
            stored_bytes(a.data.path())
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // So B gets the blocks from A's file.
    let dial = a.dial();
    b.start(&["--library", &library, "--peer", &dial, "--cache-mib", "1"]);
    converge(&[&a, &b], "served from the file", |m| {
        has(m, "video.bin", &want)
    });
    let deadline = Instant::now() + WAIT;
    while stored_bytes(b.data.path()) > 2 << 20 {
        assert!(Instant::now() < deadline, "B keeps a second copy");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn several_folders_in_one_process_are_one_library_each() {
    let root = tempfile::tempdir().unwrap();
    let mut a = Device::new("a", root.path());
    let mut b = Device::new("b", root.path());
    let work = root.path().join("a-work");
    fs::create_dir_all(&work).unwrap();
    fs::write(work.join("w.txt"), b"work").unwrap();
    fs::write(a.path("p.txt"), b"photos").unwrap();
    // A keeps two folders; B joins only the second.
    let first = a.start(&["--dir", work.to_str().unwrap(), "--pair", &b.peer.clone()]);
    let second = a.node.as_ref().unwrap().line("library ", WAIT);
    let second = second.split_whitespace().next().unwrap().to_owned();
    assert_ne!(first, second);
    let (photos_lib, work_lib) = if a.node.as_ref().unwrap().saw(&format!(
        "library {first} {}",
        a.folder.canonicalize().unwrap().display()
    )) {
        (first, second)
    } else {
        (second, first)
    };
    let dial = a.dial();
    b.start(&["--library", &work_lib, "--peer", &dial]);
    converge_pair(&work, &b.folder, |m| has(m, "w.txt", b"work"));
    // B got the work folder's files only, not the other library's.
    assert!(!b.path("p.txt").exists());
    // A keeps both.
    assert!(a
        .node
        .as_ref()
        .unwrap()
        .saw(&format!("library {photos_lib} ")));
}

/// Waits until two folders hold the same files and `check` accepts them.
fn converge_pair(x: &Path, y: &Path, check: impl Fn(&BTreeMap<String, Option<Vec<u8>>>) -> bool) {
    let deadline = Instant::now() + WAIT;
    loop {
        let (cx, cy) = (contents(x), contents(y));
        if cx == cy && check(&cx) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{} and {} did not converge: {:?} vs {:?}",
            x.display(),
            y.display(),
            listing(&cx),
            listing(&cy)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
