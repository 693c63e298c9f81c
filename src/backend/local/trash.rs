//! A synced folder's trash can: every file a peer's change deletes or replaces is moved
//! to `.harp/trash/<unix ms>/<its path>`, so nothing a sync does is beyond undoing; after
//! some days (30 by default, as Syncthing's "trash can" versioning keeps them) it goes.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::{io_error, HARP_DIR};
use crate::backend::BackendError;

/// Where a folder's trash is.
pub fn dir(folder: &Path) -> std::path::PathBuf {
    folder.join(HARP_DIR).join("trash")
}

fn now_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_millis()
}

/// Moves `path` (which lies in `folder`) into the folder's trash.
pub(super) fn keep(folder: &Path, path: &Path) -> Result<(), BackendError> {
    let rel = path.strip_prefix(folder).unwrap_or(path);
    let into = dir(folder).join(now_ms().to_string()).join(rel);
    if let Some(parent) = into.parent() {
        std::fs::create_dir_all(parent).map_err(|e| io_error(parent, e))?;
    }
    std::fs::rename(path, &into).map_err(|e| io_error(path, e))
}

/// Removes what went into `folder`'s trash more than `keep_for` ago; returns how many
/// moments (each a folder of what one change replaced) were removed.
pub fn expire(folder: &Path, keep_for: Duration) -> std::io::Result<usize> {
    let cutoff = now_ms().saturating_sub(keep_for.as_millis());
    let entries = match std::fs::read_dir(dir(folder)) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    let mut removed = 0;
    for entry in entries {
        let entry = entry?;
        let stamp = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u128>().ok());
        // Only what this module put there (a number) is removed.
        if stamp.is_some_and(|s| s < cutoff) {
            std::fs::remove_dir_all(entry.path())?;
            removed += 1;
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn old_moments_go_and_recent_ones_and_strangers_stay() {
        let tmp = tempfile::tempdir().unwrap();
        let folder = tmp.path();
        std::fs::write(folder.join("a"), b"a").unwrap();
        keep(folder, &folder.join("a")).unwrap();
        let old = dir(folder).join("1000").join("docs");
        std::fs::create_dir_all(&old).unwrap();
        std::fs::write(old.join("b"), b"b").unwrap();
        std::fs::create_dir_all(dir(folder).join("mine")).unwrap();
        assert_eq!(expire(folder, Duration::from_secs(86_400)).unwrap(), 1);
        let left: Vec<String> = std::fs::read_dir(dir(folder))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n != "mine")
            .collect();
        assert_eq!(left.len(), 1);
        assert!(std::fs::read_dir(dir(folder).join(&left[0]))
            .unwrap()
            .any(|e| e.unwrap().file_name() == "a"));
        assert!(dir(folder).join("mine").exists());
    }
}
