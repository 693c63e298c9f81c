//! Files and folders only their owner can read. A data directory holds the device's key,
//! every synced file's content and the chain of who changed what: nobody else on a shared
//! host has any business reading them, whatever the process's umask says.

use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;

/// The mode of every file harpbridge creates in a data directory.
pub const FILE_MODE: u32 = 0o600;
/// The mode of every directory it creates there.
pub const DIR_MODE: u32 = 0o700;

/// Creates `path` and its missing parents, each readable by the owner only.
pub fn create_dir_all(path: &Path) -> std::io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(path)
}

/// Takes group and other permissions away from `path` (a data directory made by an older
/// version, or a database file its library created with the umask's mode).
pub fn restrict(path: &Path) -> std::io::Result<()> {
    let meta = std::fs::metadata(path)?;
    let mode = meta.permissions().mode();
    let wanted = mode & 0o700;
    if mode & 0o777 != wanted {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(wanted))?;
    }
    Ok(())
}

/// Reads a JSON file of at most `max_len` bytes; a missing one is the default value.
pub fn read_json<T: Default + for<'de> serde::Deserialize<'de>>(
    path: &Path,
    max_len: u64,
) -> std::io::Result<T> {
    use std::io::Read;
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(T::default()),
        Err(e) => return Err(e),
    };
    let mut bytes = Vec::new();
    file.take(max_len + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > max_len {
        return Err(std::io::Error::other(format!(
            "{} is larger than {max_len} bytes",
            path.display()
        )));
    }
    serde_json::from_slice(&bytes)
        .map_err(|e| std::io::Error::other(format!("{}: {e}", path.display())))
}

/// Writes `value` to `dir/name` atomically, readable by the owner only.
pub fn write_json<T: serde::Serialize>(dir: &Path, name: &str, value: &T) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let bytes = serde_json::to_vec_pretty(value).map_err(std::io::Error::other)?;
    let temp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(FILE_MODE)
        .open(&temp)?;
    file.write_all(&bytes)?;
    file.sync_all()?;
    std::fs::rename(&temp, dir.join(name))
}
