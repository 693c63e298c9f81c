//! Folding a library's DAG into its file tree.
//!
//! Entries are applied in the deterministic topological order (Lamport clock, then hash), so
//! every device that holds the same entries computes the same tree. "Did entry E see the
//! version it overwrites?" is answered by the vector clocks (see `dag.rs`); when it did not,
//! the two writes were concurrent and both versions are kept:
//!
//! - **Put on a file written concurrently** (different content): the later write in the order
//!   keeps the name; the earlier version moves to its conflict name.
//! - **Delete of a file written concurrently**: the write wins, the file stays (nothing a
//!   device did not see is deleted). Deleting a directory removes what the deleter saw and
//!   keeps the rest.
//! - **Rename onto a name written concurrently**: the version there moves to its conflict name.
//! - **A file where a directory must be** (Put/Mkdir below it): the file moves to its conflict
//!   name. **A Put onto a directory**: the new file takes its own conflict name.
//!
//! A conflict name is `stem.sync-conflict-YYYYMMDD-HHMMSS-XXXXXXX.ext`, from the wall time (UTC)
//! and author of the entry that wrote the displaced version (see
//! [`crate::chain::DeviceKey::short_id`] for `XXXXXXX`); if that name is taken too, `-2`, `-3`
//! … are added before the extension. Parent directories of every file exist in the tree.

use std::collections::BTreeMap;

use super::entry::{Entry, NextcloudRef, Op};
use super::path::is_within;
use super::types::{ContentId, DeviceKey, EntryHash};

/// What is at a path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TreeItem {
    /// A file version.
    File {
        /// Size in bytes.
        size: u64,
        /// Modification time, ms since the epoch.
        mtime_ms: i64,
        /// Content id.
        content: ContentId,
        /// Nextcloud's id, if it came from Nextcloud.
        nextcloud: Option<NextcloudRef>,
        /// The entry that wrote this version (or last moved it).
        entry: EntryHash,
    },
    /// A directory.
    Dir {
        /// The entry that created it (or last moved it).
        entry: EntryHash,
    },
}

/// A library's file tree: path → item, in path order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Tree {
    /// The items.
    pub items: BTreeMap<String, TreeItem>,
}

impl Tree {
    /// Number of files.
    pub fn files(&self) -> usize {
        self.items
            .values()
            .filter(|i| matches!(i, TreeItem::File { .. }))
            .count()
    }

    /// Every file version the tree names, once per path (conflict copies included): what
    /// the library needs kept (see [`crate::content::ContentStore::set_current`]).
    pub fn versions(&self) -> impl Iterator<Item = ContentId> + '_ {
        self.items.values().filter_map(|item| match item {
            TreeItem::File { content, .. } => Some(*content),
            TreeItem::Dir { .. } => None,
        })
    }
}

/// Who wrote an item last: enough to decide causality and to name a conflict.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Writer {
    pub node: u32,
    pub wall_ms: u64,
    pub author: DeviceKey,
}

#[derive(Debug, Clone)]
struct Slot {
    item: TreeItem,
    writer: Writer,
}

/// Folds entries, given in topological order with their node index, into a tree. Kept
/// between calls, it takes further entries as long as they come later in the order.
#[derive(Debug, Default)]
pub(crate) struct Folder {
    items: BTreeMap<String, Slot>,
}

/// The conflict name for `path` written at `wall_ms` by `author`.
pub fn conflict_name(path: &str, wall_ms: u64, author: &DeviceKey) -> String {
    conflict_name_n(path, wall_ms, author, 1)
}

fn conflict_name_n(path: &str, wall_ms: u64, author: &DeviceKey, n: u32) -> String {
    let (dir, name) = match path.rfind('/') {
        Some(i) => (&path[..=i], &path[i + 1..]),
        None => ("", path),
    };
    let (stem, ext) = match name.rfind('.') {
        Some(i) if i > 0 => (&name[..i], &name[i..]),
        _ => (name, ""),
    };
    let suffix = if n > 1 {
        format!("-{n}")
    } else {
        String::new()
    };
    format!(
        "{dir}{stem}.sync-conflict-{}-{}{suffix}{ext}",
        utc_stamp(wall_ms),
        author.short_id()
    )
}

/// `YYYYMMDD-HHMMSS` in UTC for milliseconds since the Unix epoch.
pub fn utc_stamp(wall_ms: u64) -> String {
    let secs = wall_ms / 1000;
    let days = i64::try_from(secs / 86_400).unwrap_or(i64::MAX / 2);
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}{m:02}{d:02}-{:02}{:02}{:02}",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60
    )
}

fn parents_of(path: &str) -> impl Iterator<Item = &str> {
    path.match_indices('/').map(move |(i, _)| &path[..i])
}

impl Folder {
    /// The tree so far.
    pub(crate) fn tree(&self) -> Tree {
        Tree {
            items: self
                .items
                .iter()
                .map(|(k, s)| (k.clone(), s.item.clone()))
                .collect(),
        }
    }

    /// Moves whatever is at `path` (a file) to a free conflict name.
    fn displace(&mut self, path: &str) {
        if let Some(slot) = self.items.remove(path) {
            let to = self.free_conflict_name(path, &slot.writer);
            self.items.insert(to, slot);
        }
    }

    fn free_conflict_name(&self, path: &str, w: &Writer) -> String {
        let mut n = 1;
        loop {
            let c = conflict_name_n(path, w.wall_ms, &w.author, n);
            if !self.items.contains_key(&c) {
                return c;
            }
            n += 1;
        }
    }

    /// Makes every parent directory of `path` exist, displacing files in the way.
    fn ensure_parents(&mut self, path: &str, w: Writer, hash: EntryHash) {
        let dirs: Vec<String> = parents_of(path).map(str::to_string).collect();
        for d in dirs {
            match self.items.get(&d) {
                Some(Slot {
                    item: TreeItem::Dir { .. },
                    ..
                }) => {}
                Some(_) => {
                    self.displace(&d);
                    self.mkdir(d, w, hash);
                }
                None => self.mkdir(d, w, hash),
            }
        }
    }

    fn mkdir(&mut self, d: String, w: Writer, hash: EntryHash) {
        self.items.insert(
            d,
            Slot {
                item: TreeItem::Dir { entry: hash },
                writer: w,
            },
        );
    }

    /// Applies one entry; `node` is its index in the DAG. `saw(x, y)` must say whether node
    /// `x` is an ancestor of node `y` (or `y` itself).
    pub(crate) fn apply(&mut self, node: u32, e: &Entry, saw: &impl Fn(u32, u32) -> bool) {
        let m = e.meta();
        let w = Writer {
            node,
            wall_ms: m.wall_ms,
            author: m.author,
        };
        let hash = e.hash();
        match &m.op {
            Op::Put {
                path,
                size,
                mtime_ms,
                content,
                nextcloud,
            } => {
                let p = path.as_str();
                self.ensure_parents(p, w, hash);
                let item = TreeItem::File {
                    size: *size,
                    mtime_ms: *mtime_ms,
                    content: *content,
                    nextcloud: nextcloud.clone(),
                    entry: hash,
                };
                let slot = Slot { item, writer: w };
                match self.items.get(p) {
                    None => {
                        self.items.insert(p.to_string(), slot);
                    }
                    Some(Slot {
                        item: TreeItem::Dir { .. },
                        ..
                    }) => {
                        let to = self.free_conflict_name(p, &w);
                        self.items.insert(to, slot);
                    }
                    Some(old) => {
                        let same = matches!(
                            (&old.item, &slot.item),
                            (TreeItem::File { content: a, size: x, .. }, TreeItem::File { content: b, size: y, .. })
                                if a == b && x == y
                        );
                        if !saw(old.writer.node, node) && !same {
                            self.displace(p);
                        }
                        self.items.insert(p.to_string(), slot);
                    }
                }
            }
            Op::Mkdir { path } => {
                let p = path.as_str();
                self.ensure_parents(p, w, hash);
                match self.items.get(p) {
                    Some(Slot {
                        item: TreeItem::Dir { .. },
                        ..
                    }) => {}
                    Some(_) => {
                        self.displace(p);
                        self.mkdir(p.to_string(), w, hash);
                    }
                    None => self.mkdir(p.to_string(), w, hash),
                }
            }
            Op::Delete { path } => {
                let p = path.as_str();
                let under: Vec<String> = self
                    .items
                    .range(p.to_string()..)
                    .take_while(|(k, _)| k.starts_with(p))
                    .filter(|(k, _)| is_within(k, p))
                    .map(|(k, _)| k.clone())
                    .collect();
                let mut kept: Vec<&str> = Vec::new();
                for k in under.iter().rev() {
                    let Some(slot) = self.items.get(k) else {
                        continue;
                    };
                    let seen = saw(slot.writer.node, node);
                    let is_dir = matches!(slot.item, TreeItem::Dir { .. });
                    let keeps_child = is_dir && kept.iter().any(|c| is_within(c, k));
                    if seen && !keeps_child {
                        self.items.remove(k);
                    } else {
                        kept.push(k);
                    }
                }
            }
            Op::Rename { from, to } => {
                let (f, t) = (from.as_str(), to.as_str());
                let moving: Vec<String> = self
                    .items
                    .range(f.to_string()..)
                    .take_while(|(k, _)| k.starts_with(f))
                    .filter(|(k, _)| is_within(k, f))
                    .map(|(k, _)| k.clone())
                    .collect();
                if moving.is_empty() {
                    return;
                }
                let mut slots = Vec::with_capacity(moving.len());
                for k in moving {
                    if let Some(s) = self.items.remove(&k) {
                        slots.push((format!("{t}{}", &k[f.len()..]), s));
                    }
                }
                self.ensure_parents(t, w, hash);
                for (target, mut slot) in slots {
                    match &mut slot.item {
                        TreeItem::File { entry, .. } | TreeItem::Dir { entry } => *entry = hash,
                    }
                    slot.writer = w;
                    let slot_is_dir = matches!(slot.item, TreeItem::Dir { .. });
                    let existing = self
                        .items
                        .get(&target)
                        .map(|o| (o.writer.node, matches!(o.item, TreeItem::Dir { .. })));
                    match existing {
                        None => {
                            self.items.insert(target, slot);
                        }
                        Some((_, true)) if slot_is_dir => {}
                        Some((_, true)) => {
                            let to = self.free_conflict_name(&target, &w);
                            self.items.insert(to, slot);
                        }
                        Some((old, false)) => {
                            if !saw(old, node) {
                                self.displace(&target);
                            }
                            self.items.insert(target, slot);
                        }
                    }
                }
            }
            Op::Merge | Op::AddDevice { .. } | Op::RemoveDevice { .. } => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps() {
        assert_eq!(utc_stamp(0), "19700101-000000");
        // 2026-11-25 17:49:48 UTC
        assert_eq!(utc_stamp(1_795_628_988_000), "20261125-174948");
        // 2000-02-29 23:59:59 UTC
        assert_eq!(utc_stamp(951_868_799_999), "20000229-235959");
    }

    #[test]
    fn conflict_names() {
        let k = DeviceKey([7; 32]);
        let s = k.short_id();
        assert_eq!(s.len(), 7);
        assert_eq!(
            conflict_name("a/b/report.pdf", 0, &k),
            format!("a/b/report.sync-conflict-19700101-000000-{s}.pdf")
        );
        assert_eq!(
            conflict_name(".bashrc", 0, &k),
            format!(".bashrc.sync-conflict-19700101-000000-{s}")
        );
        assert_eq!(
            conflict_name_n("x.tar.gz", 0, &k, 2),
            format!("x.tar.sync-conflict-19700101-000000-{s}-2.gz")
        );
    }
}
