//! Group commit: many finished files, one round of flushes, one durable index transaction.
//!
//! # Why
//!
//! A finished file is durable only after its block files are fsync'd, renamed, their
//! directories fsync'd, and a redb transaction with [`Durability::Immediate`] names them. Each
//! of those flushes costs a journal commit and a device cache flush (milliseconds each, and
//! the same whether one file or a thousand rides on it). Paid per file, they cap small-file
//! ingest at a few hundred files per second whatever the CPU does; shared by every file that
//! is ready at the same moment, they cost each file almost nothing. The crash guarantee is
//! unchanged: a caller is told Ok only after the flushes *and* the commit that cover its file.
//!
//! # How: leader and followers
//!
//! A caller whose file is ready ([`Prepared`]: blocks written to temporary files, not yet
//! synced; the manifest to index) queues it and looks whether a commit is running:
//!
//! - none: it becomes the **leader**. It waits a little for others to join, but only when
//!   some other writer is open, or some caller is in a commit and will be back with its next
//!   file (at most [`GATHER`], or until [`MAX_FILES`] / [`MAX_BYTES`] are queued): a lone
//!   caller never waits. It then takes the queue and, outside the lock, makes every file's
//!   bytes durable (one `syncfs` for more than two files, see
//!   [`BlockFiles::publish_all`](super::files::BlockFiles::publish_all)), renames them, and
//!   syncs the directories touched. Then it gives up the leader role and commits **one**
//!   write transaction for all their index rows, manifests and current-set entries, hands
//!   each caller its result and wakes them.
//! - one: it is a **follower** and sleeps until its result is there, or until no round is
//!   flushing and its file is still queued: then it leads the next round.
//!
//! Rounds flush one at a time but overlap with the previous round's index commit, so the
//! file flushes and the database flush of two rounds run together instead of adding up.
//! Flushing one at a time keeps the order safe: a block a file finds already in place
//! (another file just had it renamed) was flushed by an earlier, finished flush stage.
//!
//! While a commit runs, the next callers queue up, so under load each round carries
//! everything that became ready during the previous one: the more callers, the larger the
//! groups, with no timer tuning. A single caller with many files (an initial scan, a folder)
//! need not spread them over threads: [`ContentStore::finish_all`] and
//! [`ContentStore::ingest_all`] hand a whole batch in as one job.
//!
//! # Failure
//!
//! A failed flush or commit fails every file of the round (each caller gets its own copy of
//! the error, [`ContentError::for_member`], so a full disk is still
//! [`ContentError::DiskFull`]); files already renamed are orphans the next open adopts, as
//! after any failed commit. A commit error goes through [`crate::db::Db::check`], so a
//! database that latched an I/O error is re-opened. A leader that panics gives its followers
//! an error before it unwinds, so none waits forever.
//!
//! [`Durability::Immediate`]: redb::Durability::Immediate

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::chain::LibraryId;

use super::error::ContentError;
use super::files::Pending;
use super::manifest::Manifest;
use super::store::{ContentStore, Pins};
use super::writer::Ingested;

/// Longest a leader waits for other open writers to join its round.
pub const GATHER: Duration = Duration::from_millis(2);
/// A round takes no further callers once this many files are queued…
pub const MAX_FILES: usize = 1024;
/// …or this many staged bytes.
pub const MAX_BYTES: u64 = 256 << 20;

/// A finished file waiting for its commit.
pub(crate) struct Prepared {
    /// The library whose current set receives the version.
    pub(crate) library: LibraryId,
    /// What the version is made of.
    pub(crate) manifest: Manifest,
    /// Its last block files, written under temporary names, not yet synced.
    pub(crate) pending: Pending,
    /// Directories whose entries must be durable before the index names the blocks.
    pub(crate) dirty_dirs: HashSet<PathBuf>,
    /// Its blocks, safe from eviction until the commit is over (held for its drop, which
    /// releases them).
    pub(crate) _pins: Pins,
}

/// One caller's files, and where its result goes.
struct Job {
    ticket: u64,
    files: Vec<Prepared>,
}

impl Job {
    fn bytes(&self) -> u64 {
        self.files.iter().map(|f| f.pending.bytes()).sum()
    }
}

/// What one caller gets back.
type Outcome = Result<Vec<Ingested>, ContentError>;

#[derive(Default)]
struct State {
    queue: Vec<Job>,
    leading: bool,
    /// Files of rounds in their index commit: their callers come back soon with the next.
    committing: usize,
    next_ticket: u64,
    done: HashMap<u64, Outcome>,
}

/// The store's group committer (one per [`ContentStore`]).
#[derive(Default)]
pub(crate) struct Committer {
    state: Mutex<State>,
    wake: Condvar,
    /// Writers open and not yet handed in: the callers a leader may wait for.
    open_writers: AtomicUsize,
    /// Rounds run so far (files per round = how well commits are grouped).
    rounds: AtomicUsize,
    /// Tests: the next rounds fail as on a full disk.
    #[cfg(test)]
    fail_rounds: std::sync::atomic::AtomicBool,
}

fn lock(m: &Mutex<State>) -> MutexGuard<'_, State> {
    // The state is plain data; a panic elsewhere cannot leave it half-changed.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Committer {
    /// A writer opened: a leader may wait for it.
    pub(crate) fn writer_opened(&self) {
        self.open_writers.fetch_add(1, Ordering::Relaxed);
    }

    /// Rounds of flushes and commit run so far.
    #[cfg(test)]
    pub(crate) fn rounds(&self) -> usize {
        self.rounds.load(Ordering::Relaxed)
    }

    /// A writer was handed in or abandoned.
    pub(crate) fn writer_closed(&self) {
        self.open_writers.fetch_sub(1, Ordering::Relaxed);
    }

    /// Makes `files` durable and indexed, together with whatever other callers hand in
    /// meanwhile. Returns one [`Ingested`] per file, in order, once they are durable.
    pub(crate) fn commit(
        &self,
        store: &ContentStore,
        files: Vec<Prepared>,
    ) -> Result<Vec<Ingested>, ContentError> {
        if files.is_empty() {
            return Ok(Vec::new());
        }
        let mut st = lock(&self.state);
        let ticket = st.next_ticket;
        st.next_ticket += 1;
        st.queue.push(Job { ticket, files });
        // A leader gathering its round may be waiting for this one.
        self.wake.notify_all();
        loop {
            if let Some(r) = st.done.remove(&ticket) {
                return r;
            }
            // Wait while a round is flushing, or while ours is already taken (it is being
            // committed by the leader that took it).
            if st.leading || !st.queue.iter().any(|j| j.ticket == ticket) {
                st = self.wake.wait(st).unwrap_or_else(|p| p.into_inner());
                continue;
            }
            st.leading = true;
            st = self.gather(st);
            let mut round = take_round(&mut st.queue);
            drop(st);
            self.rounds.fetch_add(1, Ordering::Relaxed);
            let tickets: Vec<u64> = round.iter().map(|j| j.ticket).collect();
            // Stage 1, one round at a time: the files' bytes and names made durable.
            let flushed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                #[cfg(test)]
                if self.fail_rounds.load(Ordering::Relaxed) {
                    let full = std::io::Error::from(std::io::ErrorKind::StorageFull);
                    return Err(ContentError::io("syncing", store.blocks_dir(), full));
                }
                flush(store, &mut round)
            }));
            // The next round may flush while this one commits: the two flushes of the
            // files and the commit of the index then overlap instead of adding up.
            let files: usize = round.iter().map(|j| j.files.len()).sum();
            st = lock(&self.state);
            st.leading = false;
            st.committing += files;
            self.wake.notify_all();
            drop(st);
            // Stage 2: the index rows, one durable transaction (redb runs one at a time).
            let outcome = flushed.and_then(|flushed| {
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    flushed.and_then(|()| index(store, &round))
                }))
            });
            // The files' pins go now that the commit is over.
            drop(round);
            st = lock(&self.state);
            st.committing -= files;
            match outcome {
                Ok(Ok(per_job)) => st.done.extend(per_job),
                Ok(Err(e)) => st
                    .done
                    .extend(tickets.into_iter().map(|t| (t, Err(e.for_member())))),
                Err(panic) => {
                    // Followers learn of it; the leader's own caller panics, as it would
                    // have committing alone.
                    for t in tickets {
                        let e = ContentError::Io {
                            op: "committing",
                            path: store.blocks_dir().to_path_buf(),
                            source: std::io::Error::other(
                                "the thread committing this file panicked",
                            ),
                        };
                        st.done.insert(t, Err(e));
                    }
                    st.done.remove(&ticket);
                    st.queue.retain(|j| j.ticket != ticket);
                    self.wake.notify_all();
                    drop(st);
                    std::panic::resume_unwind(panic);
                }
            }
            self.wake.notify_all();
        }
    }

    /// The leader's short wait for writers that may be about to hand their file in.
    fn gather<'a>(&self, mut st: MutexGuard<'a, State>) -> MutexGuard<'a, State> {
        let deadline = Instant::now() + GATHER;
        loop {
            let (files, bytes) = st
                .queue
                .iter()
                .fold((0, 0), |(f, b), j| (f + j.files.len(), b + j.bytes()));
            if files >= MAX_FILES
                || bytes >= MAX_BYTES
                || (self.open_writers.load(Ordering::Relaxed) == 0 && st.committing == 0)
            {
                return st;
            }
            let now = Instant::now();
            if now >= deadline {
                return st;
            }
            st = self
                .wake
                .wait_timeout(st, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }
}

/// The jobs of the next round, oldest first, within the round's bounds (at least one).
fn take_round(queue: &mut Vec<Job>) -> Vec<Job> {
    let (mut files, mut bytes, mut n) = (0usize, 0u64, 0usize);
    for j in queue.iter() {
        if n > 0 && (files >= MAX_FILES || bytes >= MAX_BYTES) {
            break;
        }
        files += j.files.len();
        bytes += j.bytes();
        n += 1;
    }
    queue.drain(..n).collect()
}

/// Stage 1 of a round: every file's bytes durable, then its real name, then the
/// directories touched. Rounds flush one at a time (the leader role), so a block that one
/// file finds already in place was flushed before its name appeared.
fn flush(store: &ContentStore, round: &mut [Job]) -> Result<(), ContentError> {
    let files = &store.inner.files;
    let mut pending: Vec<&mut Pending> = round
        .iter_mut()
        .flat_map(|j| j.files.iter_mut().map(|f| &mut f.pending))
        .collect();
    files.publish_all(&mut pending)?;
    let mut dirs = HashSet::new();
    for f in round.iter_mut().flat_map(|j| j.files.iter_mut()) {
        dirs.extend(f.dirty_dirs.drain());
    }
    files.sync_dirs(&mut dirs)
}

/// Stage 2 of a round: one durable transaction for every file's index rows; each job's
/// share of the results, by ticket.
fn index(store: &ContentStore, round: &[Job]) -> Result<Vec<(u64, Outcome)>, ContentError> {
    let mut all = store.commit_versions(
        round
            .iter()
            .flat_map(|j| j.files.iter().map(|f| (f.library, &f.manifest))),
    )?;
    let mut out = Vec::with_capacity(round.len());
    // `all` is in round order: hand each job its share, from the back.
    for j in round.iter().rev() {
        let mine = all.split_off(all.len().saturating_sub(j.files.len()));
        out.push((j.ticket, Ok(mine)));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;
    use crate::content::{ContentStore, StoreOptions};

    const LIB: LibraryId = LibraryId([9; 16]);

    fn store(dir: &std::path::Path) -> ContentStore {
        let db = crate::db::open(dir).unwrap();
        ContentStore::open(db, dir, StoreOptions::default()).unwrap()
    }

    fn file(i: u64) -> Vec<u8> {
        let len = 1 + (i as usize * 7919) % 20_000;
        (0..len).map(|k| (k as u64 ^ (i * 31)) as u8).collect()
    }

    fn read_back(s: &ContentStore, id: &crate::content::ManifestId) -> Vec<u8> {
        let mut v = Vec::new();
        s.open_reader(id).unwrap().read_to_end(&mut v).unwrap();
        v
    }

    #[test]
    fn concurrent_finishes_share_rounds_and_all_land() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path());
        let ids: Vec<(u64, crate::content::ManifestId)> = std::thread::scope(|sc| {
            let handles: Vec<_> = (0..6u64)
                .map(|t| {
                    let s = s.clone();
                    sc.spawn(move || {
                        (0..15u64)
                            .map(|i| {
                                let n = t * 1000 + i;
                                (n, s.ingest_reader(LIB, &file(n)[..]).unwrap().id)
                            })
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().unwrap())
                .collect()
        });
        assert_eq!(ids.len(), 90);
        let current: HashSet<_> = s.current(LIB).unwrap().into_iter().collect();
        for (n, id) in &ids {
            assert_eq!(read_back(&s, id), file(*n));
            assert!(current.contains(id));
        }
        let rounds = s.inner.committer.rounds();
        assert!(rounds < 90, "no two commits were grouped ({rounds} rounds)");
        assert!(s.verify_all().unwrap().is_empty());
        assert!(s.inner.inflight.lock().unwrap().is_empty(), "pins leaked");
    }

    #[test]
    fn ingest_all_answers_each_reader_in_order_and_a_failing_reader_alone() {
        struct Broken;
        impl Read for Broken {
            fn read(&mut self, _: &mut [u8]) -> std::io::Result<usize> {
                Err(std::io::Error::other("cut"))
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path());
        let readers: Vec<Box<dyn Read>> = (0..600u64)
            .map(|i| -> Box<dyn Read> {
                if i == 7 || i == 300 {
                    Box::new(Broken)
                } else {
                    Box::new(std::io::Cursor::new(file(i)))
                }
            })
            .collect();
        let before = s.inner.committer.rounds();
        let results = s.ingest_all(LIB, readers);
        assert_eq!(results.len(), 600);
        for (i, r) in results.iter().enumerate() {
            if i == 7 || i == 300 {
                assert!(r.is_err(), "{i}");
            } else {
                let v = r.as_ref().unwrap();
                assert_eq!(read_back(&s, &v.id), file(i as u64), "{i}");
            }
        }
        // 598 files in batches of at most INGEST_ALL_FILES: three rounds, not 598.
        assert_eq!(s.inner.committer.rounds() - before, 3);
        assert!(s.inner.inflight.lock().unwrap().is_empty(), "pins leaked");
        assert_eq!(s.inner.committer.open_writers.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn staged_versions_share_one_commit_and_a_dropped_one_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path());
        let mut staged = Vec::new();
        for i in 0..50u64 {
            let mut w = s.writer(LIB);
            w.write(&file(i)).unwrap();
            staged.push(w.stage().unwrap());
        }
        // Staged is not stored: nothing names it, and nothing of it is durable yet.
        let dropped = staged.remove(10);
        let dropped_id = dropped.id();
        assert_eq!(dropped.size(), file(10).len() as u64);
        assert!(s.open_reader(&dropped_id).is_err());
        drop(dropped);
        let ids: Vec<_> = staged.iter().map(|st| st.id()).collect();
        let before = s.inner.committer.rounds();
        let done = s.commit_staged(staged).unwrap();
        assert_eq!(s.inner.committer.rounds() - before, 1, "one commit for all");
        assert_eq!(done.iter().map(|d| d.id).collect::<Vec<_>>(), ids);
        let current: HashSet<_> = s.current(LIB).unwrap().into_iter().collect();
        for (k, i) in (0..50u64).filter(|&i| i != 10).enumerate() {
            assert_eq!(read_back(&s, &ids[k]), file(i), "{i}");
            assert!(current.contains(&ids[k]));
        }
        assert!(!current.contains(&dropped_id));
        assert!(s.open_reader(&dropped_id).is_err());
        fn temp_files(dir: &std::path::Path) -> usize {
            std::fs::read_dir(dir).map_or(0, |entries| {
                entries
                    .flatten()
                    .map(|e| match e.file_type() {
                        Ok(t) if t.is_dir() => temp_files(&e.path()),
                        _ => usize::from(e.file_name().to_string_lossy().ends_with(".tmp")),
                    })
                    .sum()
            })
        }
        assert_eq!(
            temp_files(s.blocks_dir()),
            0,
            "a staged version dropped left temporary files"
        );
        assert!(s.verify_all().unwrap().is_empty());
        assert!(s.inner.inflight.lock().unwrap().is_empty(), "pins leaked");
        assert_eq!(s.inner.committer.open_writers.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn finish_all_reports_a_bad_writer_alone() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path());
        let mut writers = Vec::new();
        for i in 0..4u64 {
            let mut w = s.writer(LIB);
            w.write(&file(i)).unwrap();
            writers.push(w);
        }
        writers[2].sink_poison_for_test();
        let results = s.finish_all(writers);
        assert!(matches!(results[2], Err(ContentError::WriterPoisoned)));
        for i in [0usize, 1, 3] {
            let v = results[i].as_ref().unwrap();
            assert_eq!(read_back(&s, &v.id), file(i as u64));
        }
        assert!(s.finish_all(Vec::new()).is_empty());
    }

    #[test]
    fn a_failed_round_fails_every_member_and_nobody_hangs() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path());
        s.inner.committer.fail_rounds.store(true, Ordering::Relaxed);
        let results = s.ingest_all(LIB, (0..5u64).map(|i| std::io::Cursor::new(file(i))));
        assert_eq!(results.len(), 5);
        assert!(results
            .iter()
            .all(|r| matches!(r, Err(e) if e.is_disk_full())));
        let full: Vec<bool> = std::thread::scope(|sc| {
            let hs: Vec<_> = (0..4u64)
                .map(|t| {
                    let s = s.clone();
                    sc.spawn(move || {
                        matches!(s.ingest_reader(LIB, &file(100 + t)[..]), Err(e) if e.is_disk_full())
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert_eq!(full, vec![true; 4]);
        assert!(s.inner.inflight.lock().unwrap().is_empty(), "pins leaked");
        assert!(s.current(LIB).unwrap().is_empty());
        // The staged temporary files went with the failed round.
        let tmp = crate::content::files::sweep(&s.inner.files).unwrap();
        assert_eq!(tmp.removed_temp, 0);
        // And the store works again once the disk does.
        s.inner
            .committer
            .fail_rounds
            .store(false, Ordering::Relaxed);
        let v = s.ingest_reader(LIB, &file(7)[..]).unwrap();
        assert_eq!(read_back(&s, &v.id), file(7));
    }

    #[test]
    fn a_database_that_fails_fails_the_round_and_nobody_hangs() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path());
        s.inner.db.fail_for_test("No space left on device");
        // Re-opened behind us after FIRST_RETRY: whether these fail depends on timing;
        // none may hang or leak its pins.
        std::thread::scope(|sc| {
            for t in 0..4u64 {
                let s = s.clone();
                sc.spawn(move || {
                    let _ = s.ingest_reader(LIB, &file(100 + t)[..]);
                });
            }
        });
        assert!(s.inner.inflight.lock().unwrap().is_empty(), "pins leaked");
    }

    #[test]
    fn errors_copied_for_members_keep_disk_full() {
        let full = ContentError::io(
            "writing",
            "/x",
            std::io::Error::from(std::io::ErrorKind::StorageFull),
        );
        assert!(full.for_member().is_disk_full());
        let db_full = ContentError::db(redb::Error::Io(std::io::Error::from(
            std::io::ErrorKind::StorageFull,
        )));
        assert!(db_full.for_member().is_disk_full());
        let other = ContentError::io("renaming", "/y", std::io::Error::other("boom"));
        let copy = other.for_member();
        assert!(matches!(copy, ContentError::Io { op: "renaming", .. }));
        assert_eq!(copy.to_string(), other.to_string());
    }
}
