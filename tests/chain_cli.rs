//! The `harpbridge id` and `harpbridge chain` commands, run as a user would.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

use harpbridge::chain::{ChainStore, ENTRIES};
use redb::ReadableTable;

fn run(data: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_harpbridge"))
        .args(args)
        .arg("--data-dir")
        .arg(data)
        .env_remove("APP_PERSISTENT_STORAGE")
        .output()
        .expect("run harpbridge")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn id_creates_a_private_key_once_and_refuses_a_loose_one() {
    let dir = tempfile::tempdir().unwrap();
    let first = run(dir.path(), &["id"]);
    assert!(first.status.success(), "{}", text(&first.stderr));
    let out = text(&first.stdout);
    let peer = out
        .lines()
        .find_map(|l| l.strip_prefix("peer id:"))
        .unwrap()
        .trim()
        .to_string();
    assert!(peer.starts_with("12D3KooW"), "{out}");
    let key = dir.path().join("identity.key");
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let again = run(dir.path(), &["id"]);
    assert!(text(&again.stdout).contains(&peer));

    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o640)).unwrap();
    let loose = run(dir.path(), &["id"]);
    assert_eq!(loose.status.code(), Some(1));
    assert!(
        text(&loose.stderr).contains("0640"),
        "{}",
        text(&loose.stderr)
    );
}

#[test]
fn chain_log_show_verify_and_a_damaged_chain() {
    let dir = tempfile::tempdir().unwrap();
    let init = run(dir.path(), &["chain", "init", "--name", "laptop"]);
    assert!(init.status.success(), "{}", text(&init.stderr));
    let append = run(dir.path(), &["chain", "stress-append", "--count", "12"]);
    assert!(append.status.success(), "{}", text(&append.stderr));
    let hashes: Vec<String> = text(&append.stdout).lines().map(str::to_string).collect();
    assert_eq!(hashes.len(), 11);

    let verify = run(dir.path(), &["chain", "verify"]);
    assert!(verify.status.success(), "{}", text(&verify.stderr));
    assert!(text(&verify.stdout).contains("12 entries verified"));

    let log = run(dir.path(), &["chain", "log"]);
    assert!(log.status.success());
    let log = text(&log.stdout);
    assert!(log.contains("12 entries, 1 head(s), 1 member(s)"), "{log}");
    assert!(log.contains("add-device"), "{log}");
    assert!(log.contains(&hashes[3][..12]), "{log}");

    let show = run(dir.path(), &["chain", "show", &hashes[3]]);
    assert!(show.status.success());
    let show = text(&show.stdout);
    assert!(
        show.contains(&format!("hash:      {}", hashes[3])),
        "{show}"
    );
    assert!(
        show.contains(&format!("parent:    {}", hashes[2])),
        "{show}"
    );
    let missing = run(dir.path(), &["chain", "show", &"0".repeat(64)]);
    assert_eq!(missing.status.code(), Some(1));

    // Damage stored entry #5: verify exits 1 and names it.
    {
        let db = harpbridge::db::open(dir.path()).unwrap();
        let store = ChainStore::open(db.clone()).unwrap();
        let lib = store.libraries()[0];
        drop(store);
        let txn = db.begin_write().unwrap();
        {
            let mut t = txn.open_table(ENTRIES).unwrap();
            let mut v = t.get((lib.0, 5)).unwrap().unwrap().value().to_vec();
            let n = v.len();
            v[n - 1] ^= 0x80;
            t.insert((lib.0, 5), v.as_slice()).unwrap();
        }
        txn.commit().unwrap();
    }
    let bad = run(dir.path(), &["chain", "verify"]);
    assert_eq!(bad.status.code(), Some(1));
    let err = text(&bad.stderr);
    assert!(err.contains("entry #5"), "{err}");
    assert!(err.contains(&hashes[4]), "{err}");
    assert!(err.contains("bad signature"), "{err}");
}

#[test]
fn chain_needs_a_data_dir() {
    let out = Command::new(env!("CARGO_BIN_EXE_harpbridge"))
        .args(["chain", "verify"])
        .env_remove("APP_PERSISTENT_STORAGE")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn verify_with_nothing_stored_is_not_damage() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(dir.path(), &["chain", "verify"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("nothing to verify"));
    // And nothing was created by looking.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn a_damaged_database_page_is_a_clear_error_not_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    assert!(run(dir.path(), &["chain", "init", "--name", "x"])
        .status
        .success());
    let appended = run(
        dir.path(),
        &["chain", "stress-append", "--count", "200", "--batch", "10"],
    );
    assert!(appended.status.success(), "{}", text(&appended.stderr));
    // 16 bytes flipped at the start of the first page after the header: the root page of
    // redb's table tree in a database this size.
    let file = dir.path().join("harpbridge.redb");
    let mut bytes = std::fs::read(&file).unwrap();
    bytes[4096..4096 + 16].fill(0xAA);
    std::fs::write(&file, bytes).unwrap();
    for command in [&["chain", "verify"][..], &["chain", "log"][..]] {
        let out = run(dir.path(), command);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{command:?}: {err}");
        assert!(err.contains("harpbridge.redb is damaged"), "{err}");
        assert!(err.contains("restore it from a backup"), "{err}");
        assert!(!err.contains("panicked"), "{err}");
    }
}

#[test]
fn names_from_members_never_reach_the_terminal_raw() {
    let dir = tempfile::tempdir().unwrap();
    let (id, _) = harpbridge::identity::DeviceIdentity::load_or_create(dir.path()).unwrap();
    let store = ChainStore::open(harpbridge::db::open(dir.path()).unwrap()).unwrap();
    let evil = "x\u{1b}[2J\r\nfake line\u{7}";
    let (lib, _) = store.create_library(id.signing_key(), evil).unwrap();
    // Paths the chain accepts with control characters, if any; device names always.
    for path in ["a\u{1b}[31mred", "b\rc", "plain dir"] {
        if let Ok(path) = harpbridge::chain::ChainPath::new(path) {
            store
                .append(
                    &lib,
                    id.signing_key(),
                    harpbridge::chain::Op::Mkdir { path },
                )
                .unwrap();
        }
    }
    drop(store);
    for args in [
        vec!["chain", "log"],
        vec!["chain", "tree", &lib.to_string()],
    ] {
        let out = run(dir.path(), &args);
        assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
        let shown = text(&out.stdout);
        assert!(
            !shown.chars().any(|c| c.is_control() && c != '\n'),
            "{args:?} printed a control character: {shown:?}"
        );
        assert!(
            !shown.contains("\nfake line"),
            "{args:?} forged a line: {shown}"
        );
    }
}
