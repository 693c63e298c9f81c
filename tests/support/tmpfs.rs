//! A small tmpfs a test mounts (root, or CAP_SYS_ADMIN) to see what a full disk does.
//! Where mounting is not allowed the test fails, unless `HARPBRIDGE_TEST_SKIP_MOUNT=1`
//! says to skip it. Stands on its own (tests include it by `#[path]` too).

use std::path::{Path, PathBuf};

pub const SKIP_VAR: &str = "HARPBRIDGE_TEST_SKIP_MOUNT";

/// A tmpfs mounted for the test, unmounted when dropped (also when the test fails).
pub struct Tmpfs(PathBuf);

impl Tmpfs {
    /// Mounts a tmpfs of `size` at `dir`; `None` when skipping is allowed and mounting is not.
    pub fn mount(dir: &Path, size: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(dir).unwrap();
        let out = std::process::Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(dir)
            .output();
        match out {
            Ok(out) if out.status.success() => Some(Tmpfs(dir.to_owned())),
            other => {
                let why = match other {
                    Ok(out) => String::from_utf8_lossy(&out.stderr).trim().to_owned(),
                    Err(e) => e.to_string(),
                };
                if std::env::var(SKIP_VAR).is_ok_and(|v| v == "1") {
                    eprintln!("SKIPPED ({SKIP_VAR}=1): cannot mount a tmpfs: {why}");
                    return None;
                }
                panic!("cannot mount a tmpfs at {} ({why}): this test needs root or CAP_SYS_ADMIN; set {SKIP_VAR}=1 to skip it", dir.display());
            }
        }
    }
}

impl Tmpfs {
    /// Changes its size (a disk that got space again).
    pub fn resize(&self, size: &str) {
        let status = std::process::Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.0)
            .status()
            .unwrap();
        assert!(status.success(), "remounting {} failed", self.0.display());
    }

    /// Where it is mounted.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let plain = std::process::Command::new("umount").arg(&self.0).status();
        if !plain.is_ok_and(|s| s.success()) {
            // Something still holds a file open there: detach it now, freed once closed.
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(&self.0)
                .status();
        }
    }
}
