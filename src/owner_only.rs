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
