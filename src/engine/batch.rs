//! One batch of queued events: paths looked at in parallel, decisions in queue order, one
//! durable append.
//!
//! Ingesting a small file is mostly waiting: a PROPFIND and a GET to Nextcloud (a round
//! trip each, tens of milliseconds on a real server, most of it PHP starting up), the
//! content store's fsyncs, and a chain commit with its fsync. One event after another,
//! those waits add up to about 90 files a second. A batch overlaps them:
//!
//! 1. **Look ahead.** Every event that only asks "what is at this path now?" (created,
//!    written, touched, deleted) in one library is looked at at once, up to
//!    [`IN_FLIGHT`] backend requests at a time over the client's one connection pool:
//!    PROPFIND, and for a file its GET streamed into the content store ([`Fetched`]); a
//!    small file is staged there, written but not yet durable ([`Fetched::Staged`]). A
//!    folder holding many of the batch's files is listed once (PROPFIND `Depth: 1`)
//!    instead of a PROPFIND per file, unless it is known to be much bigger than that
//!    ([`LIST_FROM`], [`LIST_RATIO`]); a path its listing lacks is still asked for alone.
//!    The small files a listing shows are then read a bundle at a time, one tar stream of
//!    the folder per request instead of a GET each ([`super::bundle`]).
//!    Looking decides nothing, so it may run ahead of the events before it: events are
//!    hints, and every event of the batch has arrived before any of it is looked at, so
//!    what a look sees is at least as new as what its event says.
//! 2. **Decide in order.** Events are applied in queue order against the tree and the mirror
//!    as the events before them left it ([`Engine::file_op`], [`Engine::gone`]). The
//!    operations they yield wait in the batch; before an event whose decision could depend
//!    on them (a path at, above or below one waiting, a file whose peer version waits for
//!    write-back), they are appended first. Moves, copies, restores, folders and events
//!    touching several libraries are applied the sequential way ([`Engine::process_in`]),
//!    after what waits was appended.
//! 3. **One commit.** The staged versions are made durable together (one flush round, one
//!    content index commit, [`crate::content::ContentStore::commit_staged`]), then what
//!    waits is appended in one durable transaction per library
//!    ([`Engine::append_by`]); only then are the batch's events done and may leave the
//!    queue. A kill -9 before that commit loses nothing: the events are still queued, and
//!    processing them again records what is new (contents already stored are found equal).
//!
//! **Reading ahead of late deliveries.** Nextcloud's webhook worker delivers a change
//! 0.1–0.5 s after it when it keeps up, but a backlog (the worker stopped, cron mode, a bulk
//! upload) is delivered at its pace, about 40 deliveries a second and two per new file:
//! half the rate at which the same Nextcloud serves the files. When a batch's event in a
//! folder was delivered [`READ_AHEAD_LAG`] or more after it happened, the folder is listed
//! (`Depth: 1`) and its small files ([`STAGE_MAX`]) whose file id, ETag or size differ from
//! the mirror's, that no event of the batch names, are read too, in bundles ([`READ_AHEAD`] at most per
//! batch, decided after the batch's events, recorded as the library owner's, as a catch-up
//! records what it finds). Their `NodeCreated` then asks nothing new: a file id the mirror
//! holds at a path was read there after it was created, so the event is answered without a
//! request ([`Plan::Answered`]), and the other events of its burst are looked at without a
//! download ([`super::ingest::Bursts`]). Nothing is read ahead that an event of the batch
//! is about (at or above the file), nor where a peer's version waits to be written, and
//! nothing is lost by not reading ahead: the events still come.
//!
//! Refused credentials (a 401) are found with one request: a batch's first look goes alone,
//! and after a refusal no more are made (about five refused logins lock the ExApp out of
//! Nextcloud for 30 minutes).
//!
//! The batch holds the write locks of the libraries it touches from the first look to the
//! last commit, so write-back and catch-ups never interleave with it: a look and the
//! decision made on it see one library, as the one-event-at-a-time worker did under the
//! same lock. A look whose trust in the mirror ([`Fetched::Trusted`]) no longer holds when its
//! turn comes (an earlier event changed the mirror there) is made again.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use futures_util::StreamExt;
use tokio::sync::{mpsc, OwnedMutexGuard};

use super::bundle::bundles;
use super::fetched::{Fetched, STAGE_MAX};
use super::ingest::touches;
use super::libraries::Library;
use super::mirror::{Held, HeldFile};
use super::queue::QueuedEvent;
use super::stats::Counters;
use super::{Engine, EngineError};
use crate::appapi::event::{EventKind, FileEvent};
use crate::backend::{BackendError, Depth, Item};
use crate::chain::{now_ms, ChainPath, EntryHash, LibraryId, Op, TreeItem};
use crate::content::Staged;

/// Backend requests in flight at once while a batch is looked at (the default of
/// `--ingest-in-flight`).
///
/// Why 12: a small file costs two round trips to Nextcloud, and most of each is the server
/// starting a PHP request, which runs on one of its PHP workers (php-fpm's default pool
/// has 5 children; a busy server a few dozen). A dozen requests keep a handful of workers
/// busy and hide the round trips' latency; more would only queue inside Nextcloud, beside
/// its users' own requests, and keep more downloads half-written in memory. All go over
/// the one reqwest client of the backend, whose connection pool keeps them alive.
pub const IN_FLIGHT: usize = 12;

/// A folder holding at least this many of a batch's files is listed once (PROPFIND
/// `Depth: 1`) instead of each file being looked at on its own: on a real Nextcloud most of
/// a PROPFIND's cost is the request itself (PHP starting up), not the entries it lists.
const LIST_FROM: usize = 8;
/// ... unless Nextcloud is known to hold more than this many children there for each of
/// the batch's files: listing a big folder for a few of its files costs more than asking
/// for those few.
const LIST_RATIO: usize = 16;

/// A delivery this many seconds after its event (Nextcloud's clock, the event's `time`)
/// means Nextcloud's webhook queue is behind: it holds changes it has not told us about,
/// and a batch reads ahead in the folder of that event (see the module docs). Deliveries
/// come 0.1–0.5 s after the change when its worker keeps up, so a few seconds of clock
/// skew between Nextcloud and harpbridge do not start it.
const READ_AHEAD_LAG: i64 = 10;
/// Files read ahead at most per batch, or a listing's worth ([`LIST_RATIO`] children per
/// file) if that is more: each holds the library's write lock a little longer (write-back
/// and catch-ups wait for the batch). In tar streams ([`super::bundle`]) 256 small files
/// are about a second of a busy Nextcloud; 1,024 a batch were read no faster
/// (bench/ingest-real), so the lock is not held longer for nothing.
const READ_AHEAD: usize = 256;
/// A folder whose last read-ahead listing left nothing unread is listed for it again only
/// after this long.
const RELIST_AFTER: Duration = Duration::from_secs(READ_AHEAD_LAG as u64);

/// What the worker remembers between batches of the folders it read ahead in: when each
/// was last listed for it, and how many changed files that listing left unread (then the
/// next batch lists it again at once).
#[derive(Debug, Clone, Default)]
pub(super) struct ReadAhead(Arc<std::sync::Mutex<AheadFolders>>);

/// (library, folder) → when it was last listed to read ahead, and what that left unread.
type AheadFolders = HashMap<(LibraryId, String), (Instant, usize)>;

impl ReadAhead {
    /// Whether a batch with a late delivery in `folder` should list it to read ahead.
    fn wanted(&self, library: LibraryId, folder: &str) -> bool {
        let folders = super::stats::lock(&self.0);
        match folders.get(&(library, folder.to_owned())) {
            None => true,
            Some((listed, unread)) => *unread > 0 || listed.elapsed() >= RELIST_AFTER,
        }
    }

    fn listed(&self, library: LibraryId, folder: &str, unread: usize) {
        let mut folders = super::stats::lock(&self.0);
        // Bounded: forgetting a folder costs at most one listing more.
        if folders.len() >= 1024 {
            folders.clear();
        }
        folders.insert((library, folder.to_owned()), (Instant::now(), unread));
    }
}

/// One folder's listing, made once by the first look that needs it.
type Listing = Arc<tokio::sync::OnceCell<Listed>>;

/// What listing a folder gave.
#[derive(Debug)]
enum Listed {
    /// Its items by path.
    Items(HashMap<String, Item>),
    /// It failed: each look asks for its own path.
    Failed,
    /// Nextcloud refused our credentials: no look asks again.
    Refused(&'static str),
}

/// What looking ahead found at an event's path.
#[derive(Debug)]
enum Seen {
    /// Nothing is there.
    Gone,
    /// A folder: applied the sequential way (it may need a walk).
    Dir,
    /// A file, and what fetching it gave.
    File { entry: Box<Item>, fetched: Fetched },
}

/// How one event of the batch is applied.
enum Plan {
    /// An earlier event of the batch asks the same: nothing to do.
    Coalesced,
    /// A `NodeCreated` whose file id the mirror holds at its path: the file was read there
    /// after it was created (read ahead, or by a catch-up), so the event asks nothing new.
    Answered,
    /// Looked at ahead: `rel` in `library`; the look arrives in `Batch::looks`.
    Ahead { library: LibraryId, rel: String },
    /// Applied the sequential way when its turn comes.
    InTurn,
}

/// One look to make ahead.
struct Job {
    index: usize,
    library: Library,
    rel: String,
    trust: bool,
    /// The folder to list instead of asking for `rel` alone, and its shared listing.
    listing: Option<(String, Listing)>,
}

/// A folder a batch lists to read ahead in.
struct AheadFolder {
    library: Library,
    folder: String,
    listing: Listing,
    /// The library paths the batch's events name: nothing at or below them is read ahead.
    named: Arc<HashSet<String>>,
}

/// What arrives from the looker.
enum Arrival {
    /// The look of the batch's `index`th event.
    Event(usize, Result<Seen, EngineError>),
    /// A file read ahead.
    Ahead {
        library: LibraryId,
        rel: String,
        seen: Result<Seen, EngineError>,
    },
}

/// A library the batch holds.
struct Locked {
    library: Library,
    _guard: OwnedMutexGuard<()>,
    /// The heads its decisions start from.
    seen: Vec<EntryHash>,
    /// Operations decided, not appended yet, and who made each.
    ops: Vec<Op>,
    users: Vec<Option<String>>,
    /// The paths whose events yielded them (a later event at, above or below one of these
    /// appends them first).
    paths: Vec<String>,
    /// The versions `ops` name that are not durable yet (small files read ahead,
    /// [`Fetched::Staged`]): committed together just before `ops` are appended.
    staged: Vec<Staged>,
}

/// A batch being applied; see the module docs.
pub(super) struct Batch {
    engine: Engine,
    plans: Vec<Plan>,
    locked: HashMap<LibraryId, Locked>,
    /// Looks as they arrive (in any order), by event index.
    looks: Vec<Option<Result<Seen, EngineError>>>,
    /// Files read ahead, as they arrive.
    read: Vec<(LibraryId, String, Result<Seen, EngineError>)>,
    arrivals: mpsc::Receiver<Arrival>,
    looker: Option<tokio::task::JoinHandle<()>>,
    /// Applied, their entries appended (or none to append): may leave the queue.
    durable: Vec<u64>,
    /// Applied, their entries waiting in `locked`.
    waiting: Vec<u64>,
}

/// Events that only ask "what is at this path now?" share a key; moves, copies and
/// restores, which relate two paths, are never coalesced.
pub(super) fn coalesce_key(event: &FileEvent) -> Option<(String, String)> {
    match event.kind {
        EventKind::Created | EventKind::Written | EventKind::Touched | EventKind::Deleted => {
            Some((event.node.uid.clone(), event.node.path.clone()))
        }
        _ => None,
    }
}

/// Whether one of two library paths is the other or lies below it.
fn related(a: &str, b: &str) -> bool {
    let below = |p: &str, folder: &str| {
        folder.is_empty()
            || p.strip_prefix(folder)
                .is_some_and(|rest| rest.starts_with('/'))
    };
    a == b || below(a, b) || below(b, a)
}

impl Batch {
    /// Plans the batch, takes the write locks of the libraries it touches, and starts
    /// looking ahead with `in_flight` requests at a time (1: nothing is looked at ahead,
    /// every event is applied the sequential way, with its own commit), and reading ahead
    /// where deliveries are late (`read_ahead` remembers where it did).
    pub(super) async fn begin(
        engine: &Engine,
        events: &[(u64, QueuedEvent)],
        in_flight: usize,
        read_ahead: &ReadAhead,
    ) -> Result<Batch, EngineError> {
        let libraries = engine.inner.libraries.list();
        let mut plans = Vec::with_capacity(events.len());
        let mut jobs = Vec::new();
        let mut looked_at = HashSet::new();
        let mut touched: Vec<&Library> = Vec::new();
        // Bursts ([`super::ingest::Bursts`]) whose `NodeCreated` the mirror answers: their
        // other events of this batch are trusted as if it had been processed already.
        let mut answered: HashSet<(&str, &str, u64, i64)> = HashSet::new();
        // Folders of events delivered late, and the paths each library's events name.
        let mut late: HashSet<(LibraryId, String)> = HashSet::new();
        let mut named: HashMap<LibraryId, HashSet<String>> = HashMap::new();
        // Per event: a `NodeCreated` the mirror answers (see [`answers`]).
        let mut by_mirror = Vec::with_capacity(events.len());
        let now_s = (now_ms() / 1000) as i64;
        for (_, queued) in events {
            let event = &queued.event;
            for library in libraries.iter().filter(|l| touches(l, event)) {
                let names = named.entry(library.id).or_default();
                for node in std::iter::once(&event.node).chain(event.source.as_ref()) {
                    if let Some(rel) = library.node_path(node) {
                        names.insert(rel.to_owned());
                    }
                }
            }
            let answered_here = in_flight > 1 && answers(engine, &libraries, event);
            if answered_here {
                answered.extend(burst(event));
            }
            by_mirror.push(answered_here);
        }
        for (index, (_, queued)) in events.iter().enumerate() {
            let event = &queued.event;
            let mine: Vec<&Library> = libraries.iter().filter(|l| touches(l, event)).collect();
            for library in &mine {
                if !touched.iter().any(|t| t.id == library.id) {
                    touched.push(library);
                }
            }
            let target = match mine.as_slice() {
                [library] => library.node_path(&event.node).map(|rel| (*library, rel)),
                _ => None,
            };
            if let Some((library, rel)) = target {
                if in_flight > 1 && event.time > 0 && now_s - event.time >= READ_AHEAD_LAG {
                    late.insert((library.id, parent(rel).to_owned()));
                }
            }
            // Every event in this batch has arrived, and processing reads the current
            // state: a path already reconciled in this batch needs no second look.
            let key = coalesce_key(event);
            if let Some(key) = &key {
                if looked_at.contains(key) {
                    plans.push(Plan::Coalesced);
                    continue;
                }
                if target.is_some() && by_mirror[index] {
                    plans.push(Plan::Answered);
                    continue;
                }
                looked_at.insert(key.clone());
            }
            match (key, target) {
                (Some(_), Some((library, rel))) if in_flight > 1 => {
                    let same_burst = matches!(event.kind, EventKind::Written | EventKind::Copied)
                        && burst(event).is_some_and(|b| answered.contains(&b));
                    jobs.push(Job {
                        index,
                        library: library.clone(),
                        rel: rel.to_owned(),
                        trust: same_burst || engine.burst_answered(event),
                        listing: None,
                    });
                    plans.push(Plan::Ahead {
                        library: library.id,
                        rel: rel.to_owned(),
                    });
                }
                _ => plans.push(Plan::InTurn),
            }
        }
        // One lock order for every batch (nothing else holds two).
        touched.sort_by_key(|l| l.id.0);
        let mut locked = HashMap::new();
        for library in touched {
            let guard = engine.write_lock(&library.id).lock_owned().await;
            let seen = engine.inner.chain.heads(&library.id)?;
            locked.insert(
                library.id,
                Locked {
                    library: library.clone(),
                    _guard: guard,
                    seen,
                    ops: Vec::new(),
                    users: Vec::new(),
                    paths: Vec::new(),
                    staged: Vec::new(),
                },
            );
        }
        let listed = share_listings(engine, &mut jobs, &late, read_ahead);
        let named: HashMap<LibraryId, Arc<HashSet<String>>> =
            named.into_iter().map(|(id, n)| (id, Arc::new(n))).collect();
        let ahead: Vec<AheadFolder> = listed
            .into_iter()
            .filter_map(|((id, folder), (listing, reading))| {
                let library = locked.get(&id)?.library.clone();
                reading.then(|| AheadFolder {
                    library,
                    folder,
                    listing,
                    named: named.get(&id).cloned().unwrap_or_default(),
                })
            })
            .collect();
        let (tx, arrivals) = mpsc::channel(events.len().max(1));
        let looker = (!jobs.is_empty() || !ahead.is_empty()).then(|| {
            let engine = engine.clone();
            let read_ahead = read_ahead.clone();
            tokio::spawn(run_looks(engine, jobs, ahead, read_ahead, in_flight, tx))
        });
        Ok(Batch {
            engine: engine.clone(),
            looks: (0..plans.len()).map(|_| None).collect(),
            read: Vec::new(),
            plans,
            locked,
            arrivals,
            looker,
            durable: Vec::new(),
            waiting: Vec::new(),
        })
    }

    /// Applies the `index`th event (`seq` in the queue). On error nothing of it was
    /// recorded; what earlier events decided still waits ([`Self::flush`]).
    pub(super) async fn apply(
        &mut self,
        index: usize,
        seq: u64,
        event: &FileEvent,
    ) -> Result<(), EngineError> {
        let plan = std::mem::replace(&mut self.plans[index], Plan::Coalesced);
        match plan {
            Plan::Coalesced => {
                Counters::add(&self.engine.inner.counters.coalesced, 1);
                self.waiting.push(seq);
                return Ok(());
            }
            Plan::Answered => Counters::add(&self.engine.inner.counters.answered, 1),
            Plan::InTurn => self.in_turn(event).await?,
            Plan::Ahead { library, rel } => match self.arrival(index).await {
                Some(look) => self.ahead(library, &rel, event, look?).await?,
                // The looker stopped (it cannot, short of a panic): the sequential way.
                None => self.in_turn(event).await?,
            },
        }
        self.engine.processed(event);
        self.waiting.push(seq);
        Ok(())
    }

    /// The sequential way: after what waits is appended, the event as the worker always
    /// processed it, in every library it touches.
    async fn in_turn(&mut self, event: &FileEvent) -> Result<(), EngineError> {
        let mut ids: Vec<LibraryId> = self
            .locked
            .values()
            .filter(|l| touches(&l.library, event))
            .map(|l| l.library.id)
            .collect();
        if ids.is_empty() {
            // In no library: nothing to record, nothing to wait for.
            return Ok(());
        }
        ids.sort_by_key(|id| id.0);
        self.flush().await?;
        let trust = self.engine.burst_answered(event);
        for id in ids {
            let Some(library) = self.locked.get(&id).map(|l| l.library.clone()) else {
                continue;
            };
            self.engine.process_in(&library, event, trust).await?;
        }
        Ok(())
    }

    /// Applies a look made ahead at `rel` of `library`.
    async fn ahead(
        &mut self,
        library: LibraryId,
        rel: &str,
        event: &FileEvent,
        seen: Seen,
    ) -> Result<(), EngineError> {
        let Some(lib) = self.locked.get(&library).map(|l| l.library.clone()) else {
            // Every library a look was made in is locked; were it not, the sequential way.
            return self.in_turn(event).await;
        };
        let engine = self.engine.clone();
        // A staged version its decision names, to commit with the batch's others.
        let mut keep = None;
        let depends = self
            .locked
            .get(&library)
            .is_some_and(|l| l.paths.iter().any(|p| related(p, rel)));
        let ops = match seen {
            Seen::Dir => return self.in_turn(event).await,
            Seen::Gone => {
                if depends {
                    self.flush().await?;
                }
                engine.gone(&lib, rel)?
            }
            Seen::File { entry, fetched } => {
                // Whether what waits is appended for this event: then its decision may
                // append at once, and its version must be durable first (`file_op`).
                let flushed = depends || self.awaits_write_back(&lib, rel)?;
                if flushed {
                    // A peer's version waits here: the decision may keep both, appending
                    // a conflict copy at once, after what the events before it decided.
                    self.flush().await?;
                }
                let fetched = match fetched {
                    Fetched::Trusted { held } if engine.inner.mirror.get(&lib.id, rel) != held => {
                        let trust = engine.burst_answered(event);
                        engine.fetch_file(&lib, rel, &entry, trust, true).await?
                    }
                    fetched => fetched,
                };
                match fetched {
                    // Nothing was flushed for it, so nothing is appended before `flush`:
                    // its version becomes durable there, with the batch's others (also
                    // when nothing is recorded: the store keeps what Nextcloud holds, as
                    // a download of its own would have).
                    Fetched::Staged(staged) if !flushed => {
                        let op = engine
                            .version_op(&lib, rel, &entry, staged.id(), staged.size())
                            .await?;
                        keep = Some(*staged);
                        op.into_iter().collect()
                    }
                    fetched => engine
                        .file_op(&lib, rel, &entry, fetched)
                        .await?
                        .into_iter()
                        .collect(),
                }
            }
        };
        if let Some(locked) = self.locked.get_mut(&library) {
            locked.staged.extend(keep);
            locked.paths.push(rel.to_owned());
            for op in ops {
                locked.ops.push(op);
                locked.users.push(event.user.clone());
            }
        }
        Ok(())
    }

    /// Whether the tree has a file at `rel` that Nextcloud does not hold yet (write-back's
    /// pending work, where a user's version means keeping both).
    fn awaits_write_back(&self, library: &Library, rel: &str) -> Result<bool, EngineError> {
        let tree = self.engine.tree(&library.id)?;
        Ok(match tree.items.get(rel) {
            Some(item @ TreeItem::File { .. }) => !self
                .engine
                .inner
                .mirror
                .get(&library.id, rel)
                .is_some_and(|held: Held| held.same_as(item)),
            _ => false,
        })
    }

    /// The look of the `index`th event, once it arrived; `None` if it never will.
    async fn arrival(&mut self, index: usize) -> Option<Result<Seen, EngineError>> {
        while self.looks[index].is_none() {
            match self.arrivals.recv().await? {
                Arrival::Event(i, look) => {
                    if let Some(slot) = self.looks.get_mut(i) {
                        *slot = Some(look);
                    }
                }
                Arrival::Ahead { library, rel, seen } => self.read.push((library, rel, seen)),
            }
        }
        self.looks[index].take()
    }

    /// Once every event of the batch was applied: decides the files read ahead (see the
    /// module docs), against the tree and the mirror as the events left them; their
    /// entries wait with the events' for the batch's commit. A file that cannot be read
    /// or decided here is left to its events.
    pub(super) async fn read_ahead(&mut self) {
        while let Some(arrival) = self.arrivals.recv().await {
            if let Arrival::Ahead { library, rel, seen } = arrival {
                self.read.push((library, rel, seen));
            }
        }
        // In the listing's order, not the order the reads finished: the same batch
        // records the same chain.
        let mut read = std::mem::take(&mut self.read);
        read.sort_by(|a, b| (a.0 .0, &a.1).cmp(&(b.0 .0, &b.1)));
        for (library, rel, seen) in read {
            let Some(lib) = self.locked.get(&library).map(|l| l.library.clone()) else {
                continue;
            };
            let (entry, fetched) = match seen {
                // Gone since the listing: its delete (or next) event tells.
                Ok(Seen::File {
                    fetched: Fetched::Vanished,
                    ..
                }) => continue,
                Ok(Seen::File { entry, fetched }) => (entry, fetched),
                Ok(_) => continue,
                Err(e) => {
                    tracing::debug!(library = %library, path = %rel, error = %e, "cannot read a file ahead; its events will");
                    continue;
                }
            };
            match self.decide_ahead(&lib, &rel, &entry, fetched).await {
                Ok(()) => Counters::add(&self.engine.inner.counters.read_ahead, 1),
                Err(e) => {
                    tracing::debug!(library = %library, path = %rel, error = %e, "a file read ahead is left to its events");
                }
            }
        }
    }

    /// [`Self::read_ahead`] of one file.
    async fn decide_ahead(
        &mut self,
        lib: &Library,
        rel: &str,
        entry: &Item,
        fetched: Fetched,
    ) -> Result<(), EngineError> {
        // A peer's version waits to be written there: the events decide (keeping both).
        if self.awaits_write_back(lib, rel)? {
            return Ok(());
        }
        let engine = self.engine.clone();
        let mut keep = None;
        let op = match fetched {
            Fetched::Staged(staged) => {
                let op = engine
                    .version_op(lib, rel, entry, staged.id(), staged.size())
                    .await?;
                keep = Some(*staged);
                op
            }
            Fetched::Got(ingested) => {
                engine
                    .version_op(lib, rel, entry, ingested.id, ingested.size)
                    .await?
            }
            Fetched::Echo => {
                Counters::add(&engine.inner.counters.echoes, 1);
                None
            }
            Fetched::Trusted { .. } | Fetched::Vanished => None,
        };
        if let Some(locked) = self.locked.get_mut(&lib.id) {
            locked.staged.extend(keep);
            locked.paths.push(rel.to_owned());
            if let Some(op) = op {
                locked.ops.push(op);
                // Nextcloud does not say who made a change no delivery named yet: it was
                // found in the library owner's folder, as a catch-up's finds are.
                locked.users.push(Some(lib.uid.clone()));
            }
        }
        Ok(())
    }

    /// Appends what the applied events decided, one durable commit per library; then
    /// they are done. On error they stay undone (their operations are dropped: processed
    /// again, they decide the same).
    pub(super) async fn flush(&mut self) -> Result<(), EngineError> {
        let mut ids: Vec<LibraryId> = self.locked.keys().copied().collect();
        ids.sort_by_key(|id| id.0);
        // The versions the operations name are made durable first, all in one commit.
        let staged: Vec<Staged> = self
            .locked
            .values_mut()
            .flat_map(|l| std::mem::take(&mut l.staged))
            .collect();
        if !staged.is_empty() {
            let store = self.engine.inner.content.clone();
            let committed = tokio::task::spawn_blocking(move || store.commit_staged(staged))
                .await
                .map_err(EngineError::from)
                .and_then(|r| r.map_err(EngineError::from));
            if let Err(e) = committed {
                for locked in self.locked.values_mut() {
                    locked.ops.clear();
                    locked.users.clear();
                    locked.paths.clear();
                }
                self.waiting.clear();
                return Err(e);
            }
        }
        let mut failure = None;
        for id in ids {
            let Some(locked) = self.locked.get_mut(&id) else {
                continue;
            };
            locked.paths.clear();
            if locked.ops.is_empty() {
                continue;
            }
            let ops = std::mem::take(&mut locked.ops);
            let users = std::mem::take(&mut locked.users);
            if failure.is_some() {
                continue;
            }
            let (library, seen) = (locked.library.clone(), locked.seen.clone());
            if let Err(e) = self
                .engine
                .append_by(&library, ops, users, Some(&seen))
                .await
            {
                failure = Some(e);
            }
        }
        match failure {
            Some(e) => {
                self.waiting.clear();
                Err(e)
            }
            None => {
                self.durable.append(&mut self.waiting);
                Ok(())
            }
        }
    }

    /// Ends the batch: stops looking ahead, appends what waits, releases the libraries.
    /// The events that are done (durable), and the error of the last append if it failed.
    pub(super) async fn finish(mut self) -> (Vec<u64>, Option<EngineError>) {
        if let Some(looker) = self.looker.take() {
            // Downloads cut here leave no version behind (see `Engine::download`).
            looker.abort();
        }
        let failure = self.flush().await.err();
        (std::mem::take(&mut self.durable), failure)
    }
}

impl Drop for Batch {
    fn drop(&mut self) {
        if let Some(looker) = self.looker.take() {
            looker.abort();
        }
    }
}

/// Whether Nextcloud refused harpbridge's credentials: the one error looking ahead must
/// not repeat, since about five refused logins lock the ExApp out of Nextcloud for 30
/// minutes.
fn refused(look: &Result<Seen, EngineError>) -> Option<&'static str> {
    match look {
        Err(EngineError::Backend(BackendError::Unauthorized(backend))) => Some(backend),
        _ => None,
    }
}

/// Makes the batch's looks, `in_flight` requests at a time, sending each as it arrives,
/// then reads ahead in the `ahead` folders. The first goes alone, so that refused
/// credentials cost one request, not `in_flight`; once one is refused, no more are made,
/// and every look not yet sent arrives as that refusal. Small files a folder's listing
/// shows are read a bundle a request ([`super::bundle`]).
async fn run_looks(
    engine: Engine,
    jobs: Vec<Job>,
    ahead: Vec<AheadFolder>,
    read_ahead: ReadAhead,
    in_flight: usize,
    tx: mpsc::Sender<Arrival>,
) {
    let mut unsent: std::collections::BTreeSet<usize> = jobs.iter().map(|j| j.index).collect();
    let refusal_of = |arrival: &Arrival| match arrival {
        Arrival::Event(_, seen) | Arrival::Ahead { seen, .. } => refused(seen),
    };
    let mut jobs = jobs.into_iter();
    let mut refusal = None;
    if let Some(first) = jobs.next() {
        let arrival = look_job(engine.clone(), first).await;
        refusal = refusal_of(&arrival);
        if let Arrival::Event(index, _) = &arrival {
            unsent.remove(index);
        }
        if tx.send(arrival).await.is_err() {
            return;
        }
    }
    if refusal.is_none() {
        // Every look owns what it uses (no closure borrowing into the spawned task).
        let (listed, alone): (Vec<Job>, Vec<Job>) = jobs.partition(|j| j.listing.is_some());
        let alone: Vec<Look> = alone
            .into_iter()
            .map(|job| Look::Event(engine.clone(), job))
            .collect();
        // Events in listed folders are looked at once their listing arrived, then the files
        // to read ahead, once theirs did: after every other event's look was started.
        let later: BoxFuture<'static, Vec<Look>> = Box::pin(async move {
            let mut looks = by_listing(&engine, listed).await;
            for folder in ahead {
                let (library, folder, items) = to_read_ahead(&engine, folder, &read_ahead).await;
                let files = items.into_iter().map(|item| Wanted {
                    index: None,
                    item,
                    trust: false,
                });
                looks.extend(
                    bundles(files.collect(), |w| &w.item.path)
                        .into_iter()
                        .map(|files| Look::Bundle {
                            engine: engine.clone(),
                            library: library.clone(),
                            folder: folder.clone(),
                            files,
                        }),
                );
            }
            looks
        });
        let looks = futures_util::stream::iter(alone)
            .chain(futures_util::stream::once(later).flat_map(futures_util::stream::iter))
            .map(Look::run)
            .buffer_unordered(in_flight)
            .flat_map(futures_util::stream::iter);
        let mut looks = std::pin::pin!(looks);
        while let Some(arrival) = looks.next().await {
            refusal = refusal_of(&arrival);
            if let Arrival::Event(index, _) = &arrival {
                unsent.remove(index);
            }
            if tx.send(arrival).await.is_err() {
                return;
            }
            if refusal.is_some() {
                break;
            }
        }
    }
    if let Some(backend) = refusal {
        for index in unsent {
            let refusal = Err(BackendError::Unauthorized(backend).into());
            if tx.send(Arrival::Event(index, refusal)).await.is_err() {
                return;
            }
        }
    }
}

/// One request's worth of [`run_looks`].
enum Look {
    /// An event's path.
    Event(Engine, Job),
    /// Small files of one folder, read together ([`Engine::fetch_bundle`]).
    Bundle {
        engine: Engine,
        library: Library,
        folder: String,
        files: Vec<Wanted>,
    },
}

/// A file of a [`Look::Bundle`].
struct Wanted {
    /// The event it is the look of, or `None` for a file read ahead.
    index: Option<usize>,
    /// As the folder's listing gave it.
    item: Item,
    /// Whether it may be trusted unchanged ([`Engine::fetch_file`]).
    trust: bool,
}

impl Look {
    async fn run(self) -> Vec<Arrival> {
        let (engine, library, folder, files) = match self {
            Look::Event(engine, job) => return vec![look_job(engine, job).await],
            Look::Bundle {
                engine,
                library,
                folder,
                files,
            } => (engine, library, folder, files),
        };
        let mut wanted: HashMap<String, (Option<usize>, bool)> = files
            .iter()
            .map(|w| (w.item.path.clone(), (w.index, w.trust)))
            .collect();
        let files = files.into_iter().map(|w| (w.item, w.trust)).collect();
        let (got, left) = engine.fetch_bundle(&library, &folder, files).await;
        let mut arrivals = Vec::with_capacity(got.len());
        let arrival = |index: Option<usize>, entry: Item, fetched: Result<Fetched, EngineError>| {
            let rel = entry.path.clone();
            let seen = fetched.map(|fetched| Seen::File {
                entry: Box::new(entry),
                fetched,
            });
            match index {
                Some(index) => Arrival::Event(index, seen),
                None => Arrival::Ahead {
                    library: library.id,
                    rel,
                    seen,
                },
            }
        };
        for (entry, fetched) in got {
            let (index, _) = wanted.remove(&entry.path).unwrap_or((None, false));
            arrivals.push(arrival(index, entry, fetched));
        }
        // What the bundle could not deliver: an event's file on its own, a file read
        // ahead left to its events.
        for entry in left {
            if let Some((Some(index), trust)) = wanted.remove(&entry.path) {
                let fetched = engine
                    .fetch_file(&library, &entry.path, &entry, trust, true)
                    .await;
                arrivals.push(arrival(Some(index), entry, fetched));
            }
        }
        arrivals
    }
}

/// The look of an event's path.
async fn look_job(engine: Engine, job: Job) -> Arrival {
    let listing = job.listing.as_ref().map(|(f, l)| (f.as_str(), l));
    let seen = look(&engine, &job.library, &job.rel, job.trust, listing).await;
    Arrival::Event(job.index, seen)
}

/// The looks of events whose folder is listed for them, once it is: the small files it
/// shows go a bundle at a time, every other event alone (a folder, a big file, a path the
/// listing lacks or a listing that failed).
async fn by_listing(engine: &Engine, jobs: Vec<Job>) -> Vec<Look> {
    let mut looks = Vec::new();
    let mut folders: Vec<(Library, String, Vec<Wanted>)> = Vec::new();
    for job in jobs {
        let Some((folder, listing)) = job.listing.clone() else {
            looks.push(Look::Event(engine.clone(), job));
            continue;
        };
        let item = match listed(engine, &job.library, &folder, &listing).await {
            Listed::Items(items) => items
                .get(&job.rel)
                .filter(|i| !i.is_dir && i.size.is_some_and(|size| size <= STAGE_MAX))
                .cloned(),
            Listed::Failed | Listed::Refused(_) => None,
        };
        let Some(item) = item else {
            looks.push(Look::Event(engine.clone(), job));
            continue;
        };
        let wanted = Wanted {
            index: Some(job.index),
            item,
            trust: job.trust,
        };
        match folders
            .iter_mut()
            .find(|(l, f, _)| l.id == job.library.id && *f == folder)
        {
            Some((_, _, files)) => files.push(wanted),
            None => folders.push((job.library, folder, vec![wanted])),
        }
    }
    for (library, folder, files) in folders {
        for files in bundles(files, |w| &w.item.path) {
            looks.push(Look::Bundle {
                engine: engine.clone(),
                library: library.clone(),
                folder: folder.clone(),
                files,
            });
        }
    }
    looks
}

/// The files of `folder`'s listing to read ahead: small ones whose file id, ETag or size
/// differ from the mirror's, that no event of the batch names (at or above them) and over
/// which no peer's version waits, at most [`READ_AHEAD`] (or a listing's worth); how many
/// it left unread is remembered in `read_ahead`.
async fn to_read_ahead(
    engine: &Engine,
    ahead: AheadFolder,
    read_ahead: &ReadAhead,
) -> (Library, String, Vec<Item>) {
    let AheadFolder {
        library,
        folder,
        listing,
        named,
    } = ahead;
    let Listed::Items(items) = listed(engine, &library, &folder, &listing).await else {
        return (library, folder, Vec::new());
    };
    let Ok(tree) = engine.tree(&library.id) else {
        return (library, folder, Vec::new());
    };
    let mirror = &engine.inner.mirror;
    let named_above = |rel: &str| {
        let mut at = Some(rel);
        while let Some(p) = at {
            if named.contains(p) {
                return true;
            }
            at = (!p.is_empty()).then(|| parent(p));
        }
        false
    };
    let mut changed: Vec<&Item> = items
        .values()
        .filter(|item| !item.is_dir && item.path != folder && parent(&item.path) == folder)
        // Small files only: a big file's download costs far more than waiting for its
        // delivery, and would hold the library's write lock meanwhile.
        .filter(|item| item.size.is_some_and(|size| size <= STAGE_MAX))
        .filter(|item| ChainPath::new(&item.path).is_ok() && !named_above(&item.path))
        .filter(|item| {
            let held = mirror.get(&library.id, &item.path);
            let known = matches!(&held, Some(Held::File(HeldFile { size, nextcloud: Some(nc), .. }))
                if Some(nc.fileid) == item.fileid
                    && Some(&nc.etag) == item.etag.as_ref()
                    && Some(*size) == item.size);
            // A peer's version waits for write-back there: left to the events.
            let waits = match tree.items.get(&item.path) {
                Some(t @ TreeItem::File { .. }) => !held.as_ref().is_some_and(|h| h.same_as(t)),
                _ => false,
            };
            !known && !waits
        })
        .collect();
    changed.sort_by(|a, b| a.path.cmp(&b.path));
    let most = READ_AHEAD.max(items.len() / LIST_RATIO);
    read_ahead.listed(library.id, &folder, changed.len().saturating_sub(most));
    let changed = changed.into_iter().take(most).cloned().collect();
    (library, folder, changed)
}

/// The folder of a library path (`""` for the library's root).
fn parent(rel: &str) -> &str {
    rel.rsplit_once('/').map_or("", |(folder, _)| folder)
}

/// The burst ([`super::ingest::Bursts`]) an event belongs to: user, path, file id, time.
fn burst(event: &FileEvent) -> Option<(&str, &str, u64, i64)> {
    let id = event.node.id?;
    Some((
        event.node.uid.as_str(),
        event.node.path.as_str(),
        id,
        event.time,
    ))
}

/// Whether `event` is a `NodeCreated` whose file id the mirror holds at its path, in the
/// one library it touches ([`Plan::Answered`]).
fn answers(engine: &Engine, libraries: &[Library], event: &FileEvent) -> bool {
    let (EventKind::Created, Some(id)) = (event.kind, event.node.id) else {
        return false;
    };
    let mut mine = libraries.iter().filter(|l| touches(l, event));
    let (Some(library), None) = (mine.next(), mine.next()) else {
        return false;
    };
    let Some(rel) = library.node_path(&event.node) else {
        return false;
    };
    matches!(
        engine.inner.mirror.get(&library.id, rel),
        Some(Held::File(HeldFile { nextcloud: Some(nc), .. })) if nc.fileid == id
    )
}

/// Lets the jobs of a folder holding many of them share one listing of it (see
/// [`LIST_FROM`], [`LIST_RATIO`]), and lists the folders of late deliveries to read ahead
/// in them (`late`, as `read_ahead` allows). Every listing, and whether it is read ahead in.
fn share_listings(
    engine: &Engine,
    jobs: &mut [Job],
    late: &HashSet<(LibraryId, String)>,
    read_ahead: &ReadAhead,
) -> HashMap<(LibraryId, String), (Listing, bool)> {
    let mut by_folder: HashMap<(LibraryId, &str), usize> = HashMap::new();
    for job in jobs.iter() {
        *by_folder
            .entry((job.library.id, parent(&job.rel)))
            .or_default() += 1;
    }
    let mut listed: HashMap<(LibraryId, String), (Listing, bool)> = by_folder
        .into_iter()
        .filter(|((library, folder), files)| {
            *files >= LIST_FROM
                && engine.inner.mirror.children(library, folder) <= files * LIST_RATIO
        })
        .map(|((library, folder), _)| ((library, folder.to_owned()), (Listing::default(), false)))
        .collect();
    for (library, folder) in late {
        if read_ahead.wanted(*library, folder) {
            listed
                .entry((*library, folder.clone()))
                .or_insert_with(|| (Listing::default(), false))
                .1 = true;
        }
    }
    for job in jobs.iter_mut() {
        let folder = parent(&job.rel).to_owned();
        if let Some((listing, _)) = listed.get(&(job.library.id, folder.clone())) {
            job.listing = Some((folder, listing.clone()));
        }
    }
    listed
}

/// `folder`'s listing, made by the first who asks for it.
async fn listed<'l>(
    engine: &Engine,
    library: &Library,
    folder: &str,
    listing: &'l Listing,
) -> &'l Listed {
    listing
        .get_or_init(|| async {
            let root = library.root();
            match engine.inner.backend.list(root, folder, Depth::One).await {
                Ok(items) => Listed::Items(items.into_iter().map(|i| (i.path.clone(), i)).collect()),
                Err(BackendError::Unauthorized(backend)) => Listed::Refused(backend),
                Err(e) => {
                    tracing::debug!(library = %library.id, error = %e, "cannot list a folder; its files are looked at one by one");
                    Listed::Failed
                }
            }
        })
        .await
}

/// What is at `rel` now, and for a file its content (stored), unless it can be trusted
/// unchanged or is harpbridge's own write. With `listing`, the item is taken from the
/// listing of its folder; a path it lacks is asked for on its own (an absence is never
/// concluded from a listing alone).
async fn look(
    engine: &Engine,
    library: &Library,
    rel: &str,
    trust: bool,
    listing: Option<(&str, &Listing)>,
) -> Result<Seen, EngineError> {
    let listed = match listing {
        Some((folder, listing)) => match listed(engine, library, folder, listing).await {
            Listed::Items(items) => items.get(rel).cloned(),
            Listed::Failed => None,
            Listed::Refused(backend) => {
                return Err(BackendError::Unauthorized(backend).into());
            }
        },
        None => None,
    };
    let item = match listed {
        Some(item) => Some(item),
        None => engine.stat(library, rel).await?,
    };
    Ok(match item {
        None => Seen::Gone,
        Some(entry) if entry.is_dir => Seen::Dir,
        Some(entry) => {
            let fetched = engine.fetch_file(library, rel, &entry, trust, true).await?;
            Seen::File {
                entry: Box::new(entry),
                fetched,
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_path_has_its_folder() {
        assert_eq!(parent("a/b/c.txt"), "a/b");
        assert_eq!(parent("c.txt"), "");
    }

    #[test]
    fn paths_relate_at_above_and_below() {
        assert!(related("a/b", "a/b"));
        assert!(related("a", "a/b"));
        assert!(related("a/b/c", "a"));
        assert!(related("", "x"), "the library's root is above everything");
        assert!(!related("a", "ab"));
        assert!(!related("a/b", "a/c"));
    }
}
