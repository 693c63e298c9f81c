//! A data directory is its owner's alone: the directory, the database, every block file
//! and the device key are created without group or other permissions, whatever the umask,
//! and an older data directory that was readable by others is tightened when opened.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use harpbridge::chain::LibraryId;
use harpbridge::content::{ContentStore, StoreOptions};
use harpbridge::identity::DeviceIdentity;

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// Every file and directory below `dir`.
fn all_below(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            all_below(&path, out);
        }
        out.push(path);
    }
}

#[test]
fn nothing_in_a_data_directory_is_readable_by_others() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    // A world-readable umask, as a container's default is.
    let old = unsafe { libc::umask(0o022) };
    let (_id, created) = DeviceIdentity::load_or_create(&data).unwrap();
    assert!(created);
    let db = harpbridge::db::open(&data).unwrap();
    let store = ContentStore::open(db, &data, StoreOptions::default()).unwrap();
    let mut writer = store.writer(LibraryId([7; 16]));
    writer.write(&vec![42u8; 3 << 20]).unwrap();
    writer.finish().unwrap();
    unsafe { libc::umask(old) };

    assert_eq!(mode(&data), 0o700, "the data directory");
    let mut below = Vec::new();
    all_below(&data, &mut below);
    assert!(below.iter().any(|p| p.ends_with("harpbridge.redb")));
    assert!(
        below.iter().filter(|p| p.is_file()).count() >= 3,
        "{below:?}"
    );
    for path in &below {
        let m = mode(path);
        assert_eq!(m & 0o077, 0, "{} is {m:o}", path.display());
    }
}

#[test]
fn an_older_world_readable_data_directory_is_tightened() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    let db = harpbridge::db::open(&data).unwrap();
    drop(db);
    assert_eq!(mode(&data), 0o700);
    assert_eq!(mode(&data.join("harpbridge.redb")), 0o600);
}
