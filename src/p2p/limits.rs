//! WAN bandwidth limits as an admin sets them: a global rate each way, and a rate each way
//! per library, in bytes per second (`None`: unlimited). LAN peers are never limited.
//!
//! Where they come from:
//! - `--wan-limit` (and `HARPBRIDGE_WAN_LIMIT`) sets the global rates a node starts with;
//! - the data directory's [`LIMITS_FILE`], written by the panel in `serve`
//!   (`PUT /api/admin/limits`) and by `harpbridge limits set` on any device: a kept setting
//!   is the admin's latest word, so it wins over the flag, and a running node picks up a
//!   change within a second ([`watch`]).
//!
//! A block moved with a WAN peer pays the global limit and its library's, and waits for
//! the slower of the two (see [`super::pace`]). A library's limit only narrows: with a
//! global 10 Mbit/s and a library at 2 Mbit/s, that library moves at most 2 and all
//! libraries together at most 10.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use super::NodeHandle;
use crate::chain::LibraryId;

/// The file in the data directory that keeps the panel's limits.
pub const LIMITS_FILE: &str = "wan-limits.json";

/// Libraries with a limit of their own, at most (each is a line in the panel).
pub const MAX_LIBRARY_LIMITS: usize = 256;

/// Rates each way, in bytes per second; `None`: unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rates {
    /// What is sent to WAN peers.
    pub up: Option<u64>,
    /// What is received from WAN peers.
    pub down: Option<u64>,
}

impl Rates {
    /// Neither way limited.
    pub fn is_unlimited(&self) -> bool {
        self.up.is_none() && self.down.is_none()
    }
}

/// Every WAN limit of a node.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WanLimits {
    /// For all WAN traffic together.
    #[serde(flatten)]
    pub global: Rates,
    /// For one library's blocks, by library id (hex).
    #[serde(default)]
    pub libraries: BTreeMap<String, Rates>,
}

/// Limits that cannot be used, said in one line.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LimitsError {
    #[error("{0:?} is not a library id")]
    NotALibrary(String),
    #[error("a rate of 0 would stop all WAN traffic (leave it empty for unlimited)")]
    Zero,
    #[error("at most {MAX_LIBRARY_LIMITS} libraries may have limits of their own")]
    TooMany,
}

impl WanLimits {
    /// Only global rates.
    pub fn global(up: Option<u64>, down: Option<u64>) -> WanLimits {
        WanLimits {
            global: Rates { up, down },
            libraries: BTreeMap::new(),
        }
    }

    /// Checks the limits and drops libraries without one.
    pub fn checked(mut self) -> Result<WanLimits, LimitsError> {
        self.libraries.retain(|_, r| !r.is_unlimited());
        if self.libraries.len() > MAX_LIBRARY_LIMITS {
            return Err(LimitsError::TooMany);
        }
        let mut rates = vec![self.global];
        for (id, r) in &self.libraries {
            id.parse::<LibraryId>()
                .map_err(|_| LimitsError::NotALibrary(id.clone()))?;
            rates.push(*r);
        }
        if rates.iter().any(|r| r.up == Some(0) || r.down == Some(0)) {
            return Err(LimitsError::Zero);
        }
        Ok(self)
    }

    /// The rates of `library`, if it has its own.
    pub fn library(&self, library: &LibraryId) -> Rates {
        self.libraries
            .get(&library.to_hex())
            .copied()
            .unwrap_or_default()
    }

    /// The limits kept in `dir` ([`LIMITS_FILE`]), if any were.
    pub fn load(dir: &Path) -> std::io::Result<Option<WanLimits>> {
        if !dir.join(LIMITS_FILE).exists() {
            return Ok(None);
        }
        let limits: WanLimits = crate::owner_only::read_json(&dir.join(LIMITS_FILE), 1 << 20)?;
        limits
            .checked()
            .map(Some)
            .map_err(|e| std::io::Error::other(format!("{LIMITS_FILE}: {e}")))
    }

    /// Keeps the limits in `dir` (atomically, owner-only).
    pub fn save(&self, dir: &Path) -> std::io::Result<()> {
        crate::owner_only::write_json(dir, LIMITS_FILE, self)
    }
}

/// How often [`watch`] looks at the file.
const RELOAD_EVERY: Duration = Duration::from_secs(1);

impl std::fmt::Display for WanLimits {
    /// `up 2mbit, down unlimited` and one `; library <id> up …, down …` per library.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        fn rate(r: Option<u64>) -> String {
            match r {
                None => "unlimited".into(),
                Some(n) if n % 125_000 == 0 => format!("{}mbit", n / 125_000),
                Some(n) if n % (1 << 20) == 0 => format!("{}MiB", n >> 20),
                Some(n) if n % 125 == 0 => format!("{}kbit", n / 125),
                Some(n) => format!("{n} bytes/s"),
            }
        }
        write!(
            f,
            "up {}, down {}",
            rate(self.global.up),
            rate(self.global.down)
        )?;
        for (id, r) in &self.libraries {
            write!(f, "; library {id} up {}, down {}", rate(r.up), rate(r.down))?;
        }
        Ok(())
    }
}

/// Applies the limits kept in `dir` to `node` now (if any are) and whenever the file
/// changes, for as long as the process runs; `report` is told each change (and a file that cannot be
/// used: the limits in force stay).
pub fn watch(
    node: NodeHandle,
    dir: &Path,
    report: impl Fn(String) + Send + 'static,
) -> tokio::task::JoinHandle<()> {
    let path = dir.join(LIMITS_FILE);
    // At once, so nothing moves under the flag's limits that the file overrides.
    let mut seen = stamp(&path);
    if seen.is_some() {
        apply(&node, WanLimits::load(dir), &report);
    }
    let dir = dir.to_path_buf();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(RELOAD_EVERY);
        loop {
            tick.tick().await;
            let stamp = stamp(&path);
            if stamp.is_none() || stamp == seen {
                continue;
            }
            seen = stamp;
            let d = dir.clone();
            match tokio::task::spawn_blocking(move || WanLimits::load(&d)).await {
                Ok(loaded) => apply(&node, loaded, &report),
                Err(_) => return,
            }
        }
    })
}

/// Puts `loaded` in force if it is new, and says so.
fn apply(node: &NodeHandle, loaded: std::io::Result<Option<WanLimits>>, report: &impl Fn(String)) {
    match loaded {
        Ok(Some(limits)) if limits != node.wan_limits() => match node.set_wan_limits(limits) {
            Ok(()) => report(format!("WAN limits: {}", node.wan_limits())),
            Err(e) => report(format!("WAN limits not changed: {e}")),
        },
        Ok(_) => {}
        Err(e) => report(format!("WAN limits not changed: {e}")),
    }
}

/// When the file was last written, and its length (`None`: there is none).
fn stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_round_trip_through_the_data_directory() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(WanLimits::load(dir.path()).unwrap(), None);
        let lib = LibraryId([3; 16]);
        let mut limits = WanLimits::global(Some(250_000), None);
        limits.libraries.insert(
            lib.to_hex(),
            Rates {
                up: None,
                down: Some(1000),
            },
        );
        limits.save(dir.path()).unwrap();
        let back = WanLimits::load(dir.path()).unwrap().unwrap();
        assert_eq!(back, limits);
        assert_eq!(back.library(&lib).down, Some(1000));
        assert_eq!(back.library(&LibraryId([4; 16])), Rates::default());
    }

    #[test]
    fn bad_limits_are_refused() {
        let mut l = WanLimits::global(Some(0), None);
        assert_eq!(l.clone().checked(), Err(LimitsError::Zero));
        l.global.up = None;
        l.libraries.insert(
            "nope".into(),
            Rates {
                up: Some(1),
                down: None,
            },
        );
        assert!(matches!(
            l.clone().checked(),
            Err(LimitsError::NotALibrary(_))
        ));
        // A library without a rate is simply dropped.
        let mut l = WanLimits::default();
        l.libraries
            .insert(LibraryId([1; 16]).to_hex(), Rates::default());
        assert!(l.checked().unwrap().libraries.is_empty());
    }
}
