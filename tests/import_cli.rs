//! `harpbridge import` as a process: it seeds a library from a tree (folders, files, no
//! symlinks), re-running it records nothing new, a changed file is recorded once, and a
//! library id that is not held yet is created under that id.

#[path = "support/cli.rs"]
mod cli;

use std::fs;
use std::path::Path;

use cli::{imported_library, run};

/// The counts in the summary line: (new or changed files, unchanged, folders, skipped).
fn counts(out: &str) -> (u64, u64, u64, u64) {
    let line = out
        .lines()
        .find(|l| l.starts_with("imported "))
        .unwrap_or_else(|| panic!("no summary in {out:?}"));
    let num = |after: &str| -> u64 {
        let i = line
            .find(after)
            .unwrap_or_else(|| panic!("{after:?} in {line:?}"));
        line[..i]
            .split_whitespace()
            .last()
            .unwrap()
            .trim_start_matches(',')
            .parse()
            .unwrap()
    };
    (
        num(" file(s)"),
        num(" unchanged"),
        num(" folder(s)"),
        num(" skipped"),
    )
}

fn entries(dir: &Path, lib: &str) -> usize {
    run(&["chain", "log", "--library", lib], dir)
        .lines()
        .skip(1)
        .count()
}

#[test]
fn import_seeds_a_library_and_is_idempotent() {
    let data = tempfile::tempdir().unwrap();
    let src = tempfile::tempdir().unwrap();
    let s = src.path();
    fs::create_dir_all(s.join("docs/deep")).unwrap();
    fs::write(s.join("readme.txt"), b"hello").unwrap();
    fs::write(s.join("docs/a.bin"), vec![7u8; 3 * 1024 * 1024 + 5]).unwrap();
    fs::write(s.join("docs/deep/b.txt"), b"below").unwrap();
    std::os::unix::fs::symlink("/etc", s.join("escape")).unwrap();

    let out = run(
        &["import", "--library", "new", s.to_str().unwrap()],
        data.path(),
    );
    let lib = imported_library(&out);
    assert_eq!(counts(&out), (3, 0, 2, 1), "{out}");
    assert!(out.contains("escape: a symlink"), "{out}");
    let tree = run(&["chain", "tree", &lib], data.path());
    for line in [
        "docs/",
        "docs/deep/",
        "docs/a.bin  3145733 bytes",
        "docs/deep/b.txt  5 bytes",
        "readme.txt  5 bytes",
    ] {
        assert!(tree.contains(line), "{line:?} missing from {tree}");
    }
    assert!(!tree.contains("escape"), "{tree}");
    let before = entries(data.path(), &lib);
    assert_eq!(before, 1 + 2 + 3, "genesis, two folders, three files");

    // Again: nothing new.
    let again = run(
        &["import", "--library", &lib, s.to_str().unwrap()],
        data.path(),
    );
    assert_eq!(counts(&again), (0, 3, 0, 1), "{again}");
    assert!(!again.contains("created"), "{again}");
    assert_eq!(entries(data.path(), &lib), before);

    // New content in one file (same size): one Put. Same bytes rewritten (a new mtime):
    // read, found unchanged, not recorded.
    fs::write(s.join("readme.txt"), b"HELLO").unwrap();
    fs::write(s.join("docs/deep/b.txt"), b"below").unwrap();
    let changed = run(
        &["import", "--library", &lib, s.to_str().unwrap()],
        data.path(),
    );
    assert_eq!(counts(&changed), (1, 2, 0, 1), "{changed}");
    assert_eq!(entries(data.path(), &lib), before + 1);
}

#[test]
fn import_creates_a_library_under_a_given_id_and_takes_a_single_file() {
    let data = tempfile::tempdir().unwrap();
    let src = tempfile::tempdir().unwrap();
    let file = src.path().join("only.dat");
    fs::write(&file, b"one file").unwrap();
    let lib = "00112233445566778899aabbccddeeff";
    let out = run(
        &["import", "--library", lib, file.to_str().unwrap()],
        data.path(),
    );
    assert!(out.starts_with(&format!("library {lib} created")), "{out}");
    assert_eq!(counts(&out), (1, 0, 0, 0), "{out}");
    let tree = run(&["chain", "tree", lib], data.path());
    assert!(tree.contains("only.dat  8 bytes"), "{tree}");
}

#[test]
fn import_refuses_a_bad_library_argument() {
    let data = tempfile::tempdir().unwrap();
    let out = cli::output(&["import", "--library", "nope", "/tmp"], data.path());
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("`new` or a library id"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
