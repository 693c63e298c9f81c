//! One fetch of one version: the coordinator that hands blocks to providers (the workers
//! that drive each provider's stream live in [`super::worker`], the storer in
//! [`super::store`]).
//!
//! ```text
//!             ┌── worker(peer 1): stream, writes Want/Get, reads Have/Block ──┐
//!  coordinator┼── worker(peer 2) …                                            ├─> FromWorker
//!   (this fn) └── storer: stages blocks as they arrive, commits in groups ────┘   (to the
//!                                                                                 coordinator)
//! ```
//!
//! The coordinator owns every decision (which provider gets which block, who is excluded)
//! and runs a `select!` over worker messages, storer outcomes and a tick; workers and the
//! storer only move bytes. A block counts against its provider's window from the `Get`
//! until it is staged: hashed and written under a temporary name, out of memory (or, asked
//! twice in the [`endgame`], until the losing copy was cancelled or arrived and was
//! dropped), so bytes held in memory never exceed the sum of the windows. The commit that
//! makes it durable comes later and does not hold the window: counted until then, the group
//! fsyncs' wait kept a 16 MiB LAN window from filling the link (bench/transfer over TCP,
//! same machine and session: 406 and 441 MB/s before, 427 to 542 in five runs after). See
//! the module docs of [`super`] for the rules.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::time::{Duration, Instant};

use libp2p::PeerId;
use std::sync::Arc;

use tokio::sync::{broadcast, mpsc, watch, Notify};
use tokio::task::JoinSet;

use crate::chain::{ContentId, LibraryId};
use crate::content::{BlockHash, BlockRef, ContentError, Manifest, ManifestId};
use crate::p2p::error::P2pError;
use crate::p2p::events::{FetchReport, NodeEvent, TransferProgress};

use super::endgame;
use super::rank::{self, PeerView};
use super::store::{self, Arrived, Outcome, Progress};
use super::wire::{Bits, Have};
use super::worker::{worker, FromWorker, ToWorker};
use super::Blocks;

/// How long a fetch waits for a LAN provider's first `Have` before it asks the WAN for
/// blocks that provider might hold.
const LAN_FIRST_ANSWER: Duration = Duration::from_secs(5);
/// WAN providers are asked what they hold again after this long without a block.
const WAN_REFRESH_AFTER: Duration = Duration::from_secs(2);
/// A LAN provider with blocks in flight that answered nothing for this long no longer keeps
/// the WAN out of the endgame (see [`endgame`]): a LAN link delivers a block in
/// milliseconds, so this is a stall, not a slow block.
const LAN_QUIET: Duration = Duration::from_secs(2);

/// The window a WAN provider starts with; it grows by every byte received from it (doubling
/// per window) up to [`FetchConfig::window_wan`], until its bandwidth × delay is measured
/// (see [`Provider::window`]). Small at first because a co-fetching LAN
/// peer may show up within the first round trips (it learnt of the version a moment after
/// us): what is already asked over the WAN when the split starts is paid twice.
const WAN_FIRST_WINDOW: u64 = 512 << 10;

/// How a fetch behaves (from [`crate::p2p::P2pConfig`]).
#[derive(Debug, Clone, Copy)]
pub struct FetchConfig {
    /// Bytes in flight per LAN provider.
    pub window_lan: u64,
    /// Bytes in flight per WAN provider.
    pub window_wan: u64,
    /// Give up after this long without a block stored.
    pub stall_timeout: Duration,
    /// How often progress is reported and LAN providers are asked for a fresh `Have`.
    pub tick: Duration,
}

/// Where a block of the fetch is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Pending,
    /// Asked of this provider.
    InFlight(PeerId),
    /// Received from this provider, being verified and stored.
    Storing(PeerId),
    Done,
}

#[derive(Debug)]
struct Slot {
    /// First index of the block in the manifest.
    index: u32,
    hash: BlockHash,
    size: u32,
    /// Bytes of the file it makes up (size × occurrences).
    weight: u64,
    state: State,
    /// While `InFlight`: the second provider the endgame asked too.
    also: Option<PeerId>,
    /// While `InFlight`: the fetch's count of asks when its owner was asked (which blocks
    /// an owner sends last).
    asked: u64,
    /// When the owner, and the second provider, were asked; and, while `Storing`, when the
    /// copy being stored was (its provider's delay, see [`Provider::min_delay`]).
    asked_at: Option<Instant>,
    also_at: Option<Instant>,
    storing_asked_at: Option<Instant>,
}

#[derive(Debug)]
struct Provider {
    view: PeerView,
    tx: mpsc::UnboundedSender<ToWorker>,
    answered: bool,
    want_pending: bool,
    have: Bits,
    fetching: Bits,
    /// It fetches this version too and has no manifest yet.
    starting: bool,
    /// Bytes asked and not yet stored.
    queued: u64,
    /// Block bytes received.
    received: u64,
    /// The shortest time from a `Get` to its block staged, so far.
    min_delay: Option<Duration>,
    first_get: Option<Instant>,
    /// The last answer of any kind (or when it last became busy).
    last_answer: Instant,
    /// When its worker started.
    added: Instant,
}

impl Provider {
    /// Bytes it may have in flight. LAN: the configured window. WAN: slow start (see
    /// [`WAN_FIRST_WINDOW`]) until its rate and delay are measured, then twice its
    /// bandwidth × delay within the configured window ([`rank::window`]).
    ///
    /// Not on the LAN: there a block's delay until it is staged is mostly the storer's
    /// (its batches of hashing and writing), which varies far more than the link; sized
    /// from the shortest delay seen, the window starved the link (bench/lan, same run as a
    /// 957 Mbit/s iperf3: office-b's pulls fell from a median 0.980 of the LAN to 0.817,
    /// measured when the delay still ran to the commit). On the WAN a block's own
    /// transmission dominates the delay, so the measure is steady.
    fn window(&self, c: &FetchConfig) -> u64 {
        if self.view.lan {
            return c.window_lan;
        }
        match self.min_delay {
            Some(delay) if self.received >= rank::MEASURE_AFTER => {
                let delay = delay.max(self.view.rtt.unwrap_or_default());
                rank::window(self.rate(), delay, c.window_wan)
            }
            _ => WAN_FIRST_WINDOW
                .saturating_add(self.received)
                .min(c.window_wan),
        }
    }

    fn rate(&self) -> f64 {
        let busy = self.first_get.map_or(Duration::ZERO, |t| t.elapsed());
        rank::rate(self.received, busy, self.view.rtt)
    }

    /// [`Provider::rate`], but never more than [`rank::MEASURE_AFTER`] more than it sent
    /// over the time it has been busy: before its rate is measured, a provider that sends
    /// nothing (or little) looks as slow as it is, for the [`endgame`].
    fn expected_rate(&self) -> f64 {
        let busy = self.first_get.map_or(0.0, |t| t.elapsed().as_secs_f64());
        let bound = (self.received + rank::MEASURE_AFTER) as f64 / busy.max(1e-3);
        self.rate().min(bound)
    }
}

/// Removes a version's remaining blocks from [`Blocks::active`] when the fetch ends, however
/// it ends.
struct ActiveGuard<'a> {
    blocks: &'a Blocks,
    id: ManifestId,
    hashes: HashSet<BlockHash>,
}

impl Drop for ActiveGuard<'_> {
    fn drop(&mut self) {
        self.blocks
            .stop_fetching(&self.id, std::mem::take(&mut self.hashes));
    }
}

/// Marks the version as wanted here while its manifest has not arrived (see
/// [`Have::starting`]).
struct StartingGuard<'a> {
    blocks: &'a Blocks,
    id: ManifestId,
}

impl Drop for StartingGuard<'_> {
    fn drop(&mut self) {
        self.blocks.stop_starting(&self.id);
    }
}

/// Everything [`fetch`] works with.
struct Fetch<'a> {
    blocks: &'a Blocks,
    peers: watch::Receiver<Vec<PeerView>>,
    events: broadcast::Sender<NodeEvent>,
    config: FetchConfig,
    local: PeerId,
    library: LibraryId,
    content: ContentId,
    id: ManifestId,
    started: Instant,

    manifest: Option<Manifest>,
    total: u64,
    slots: Vec<Slot>,
    by_index: HashMap<u32, usize>,
    pending: BTreeSet<usize>,
    /// Asks so far (see [`Slot::asked`]).
    asks: u64,
    /// Copies still to come of blocks another provider sent first in the endgame: dropped
    /// when they arrive, and counted against their provider's window until then.
    late: HashSet<(PeerId, usize)>,
    remaining: u64,
    done: usize,
    active: Option<ActiveGuard<'a>>,
    /// Set while the manifest is awaited.
    starting: Option<StartingGuard<'a>>,
    /// Rings when a peer asks about this version (see [`Blocks::fetching`]).
    asked: Arc<Notify>,

    providers: HashMap<PeerId, Provider>,
    /// Peers not asked again in this fetch: excluded (with why) or refused.
    excluded: Vec<(PeerId, String)>,
    refused: HashSet<PeerId>,
    /// LAN members (by our chain) not asking yet, with when they were first seen: those
    /// being dialled (mDNS found them a moment ago), and those that refused the version,
    /// whose chain is most likely a moment behind ours (the offices learn of a new version
    /// from the cloud or each other milliseconds apart). They are asked once connected, or
    /// again (every tick, and when they ask us about it), and count as unheard, until
    /// [`LAN_FIRST_ANSWER`] after they were first seen; a refusal after that is final.
    behind: HashMap<PeerId, Instant>,
    workers: JoinSet<()>,
    from_workers: mpsc::UnboundedSender<FromWorker>,
    to_store: Option<mpsc::UnboundedSender<Arrived>>,

    report: FetchReport,
    from: HashMap<PeerId, u64>,
    last_from: Option<PeerId>,
    last_progress: Instant,
    reported_done: Option<u64>,
    /// When the manifest was known, and the first and last block arrived (for the
    /// `fetch timings` debug line: where a slow fetch spent its time).
    manifest_at: Option<Duration>,
    first_block_at: Option<Duration>,
    last_block_at: Option<Duration>,
}

/// Fetches every block of `content` not held here; see the module docs of [`super`].
pub(crate) async fn fetch(
    blocks: &Blocks,
    peers: watch::Receiver<Vec<PeerView>>,
    events: broadcast::Sender<NodeEvent>,
    config: FetchConfig,
    local: PeerId,
    library: LibraryId,
    content: ContentId,
) -> Result<FetchReport, P2pError> {
    let (from_tx, mut from_rx) = mpsc::unbounded_channel();
    let (store_tx, store_rx) = mpsc::unbounded_channel();
    let (stored_tx, mut stored_rx) = mpsc::unbounded_channel();
    let mut f = Fetch {
        blocks,
        peers,
        events,
        config,
        local,
        library,
        content,
        id: ManifestId::from(content),
        started: Instant::now(),
        manifest: None,
        total: 0,
        slots: Vec::new(),
        by_index: HashMap::new(),
        pending: BTreeSet::new(),
        asks: 0,
        late: HashSet::new(),
        remaining: 0,
        done: 0,
        active: None,
        starting: None,
        asked: Arc::new(Notify::new()),
        providers: HashMap::new(),
        excluded: Vec::new(),
        refused: HashSet::new(),
        behind: HashMap::new(),
        workers: JoinSet::new(),
        from_workers: from_tx,
        to_store: Some(store_tx),
        report: FetchReport::default(),
        from: HashMap::new(),
        last_from: None,
        last_progress: Instant::now(),
        reported_done: None,
        manifest_at: None,
        first_block_at: None,
        last_block_at: None,
    };
    // Its own set: dropped with the fetch (aborted) if the fetch is, awaited otherwise.
    let mut storer = JoinSet::new();
    storer.spawn(store::run(blocks.content.clone(), store_rx, stored_tx));
    let result = f.run(&mut from_rx, &mut stored_rx).await;
    f.workers.abort_all();
    // The storer ends once its queue closes: what arrived is committed (kept for the next
    // try) or, after a store error, removed. A fetch that returns leaves no temporary files
    // behind it, and no commit still running.
    f.to_store = None;
    while storer.join_next().await.is_some() {}
    let error = result.as_ref().err().map(|e| e.to_string());
    f.progress(true, error);
    result
}

impl<'a> Fetch<'a> {
    async fn run(
        &mut self,
        from_rx: &mut mpsc::UnboundedReceiver<FromWorker>,
        stored_rx: &mut mpsc::UnboundedReceiver<Result<Progress, ContentError>>,
    ) -> Result<FetchReport, P2pError> {
        // A version whose manifest is here needs no provider to start.
        let store = self.blocks.content.clone();
        let id = self.id;
        let held = store::blocking("fetching blocks", move || store.manifest_bytes(&id)).await?;
        if let Some(bytes) = held {
            let m = Manifest::decode(&bytes).map_err(ContentError::from)?;
            self.setup(m).await?;
        } else {
            self.blocks.start_starting(self.id);
            self.starting = Some(StartingGuard {
                blocks: self.blocks,
                id: self.id,
            });
        }
        // Nothing missing: no provider needed either.
        if !(self.manifest.is_some() && self.slots.is_empty()) {
            self.add_providers().await;
            self.give_up_without_manifest()?;
        }
        let mut tick = tokio::time::interval(self.config.tick);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // A peer connecting (a LAN one found a moment ago) is asked at once, not at a tick.
        let mut peers_changed = self.peers.clone();
        peers_changed.mark_unchanged();
        loop {
            if self.manifest.is_some() && self.done == self.slots.len() {
                break;
            }
            self.schedule();
            let asked = self.asked.clone();
            tokio::select! {
                _ = asked.notified() => {
                    // A peer asked about this version: it may fetch it too, and it may be a
                    // LAN member that refused us a moment ago (see `behind`).
                    self.refresh(false);
                    self.add_providers().await;
                }
                Ok(()) = peers_changed.changed() => self.add_providers().await,
                Some(msg) = from_rx.recv() => self.on_worker(msg).await?,
                Some(progress) = stored_rx.recv() => match progress? {
                    Progress::Staged(outcomes) => self.on_staged(outcomes),
                    Progress::Stored(outcomes) => self.on_stored(outcomes),
                },
                _ = tick.tick() => {
                    self.progress(false, None);
                    self.drop_stalled();
                    self.refresh(false);
                    self.add_providers().await;
                    if self.last_progress.elapsed() > self.config.stall_timeout {
                        return Err(P2pError::Fetch(self.stall_reason()));
                    }
                }
            }
        }
        let mut from: Vec<(PeerId, u64)> = self.from.iter().map(|(p, n)| (*p, *n)).collect();
        from.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.to_bytes().cmp(&b.0.to_bytes())));
        self.report.from = from;
        self.report.excluded = self.excluded.clone();
        self.report.elapsed = self.started.elapsed();
        self.report.windows = self
            .providers
            .iter()
            .map(|(peer, p)| (*peer, p.window(&self.config)))
            .collect();
        tracing::debug!(
            content = %self.content,
            bytes = self.report.bytes_fetched,
            manifest = ?self.manifest_at,
            first_block = ?self.first_block_at,
            last_block = ?self.last_block_at,
            stored = ?self.report.elapsed,
            "fetch timings"
        );
        Ok(self.report.clone())
    }

    /// Without the manifest and with nobody left to ask (no connected member, or every one
    /// refused or lacks it), waiting cannot help: fail now rather than after the stall
    /// timeout. (Once the manifest is known, a vanished provider may come back, so the
    /// fetch waits.)
    fn give_up_without_manifest(&self) -> Result<(), P2pError> {
        let waiting = self
            .providers
            .values()
            .any(|p| !p.answered || p.have.count() > 0 || p.fetching.count() > 0)
            || self.behind_waiting();
        if self.manifest.is_none() && !waiting {
            return Err(P2pError::Fetch(format!(
                "no connected member holds {} or is fetching it yet ({} refused)",
                self.content,
                self.refused.len()
            )));
        }
        Ok(())
    }

    fn stall_reason(&self) -> String {
        if self.manifest.is_none() {
            format!(
                "no connected member sent the manifest of {} within {:?}",
                self.content, self.config.stall_timeout
            )
        } else {
            format!(
                "{} of {} blocks still missing and no provider delivered one within {:?}",
                self.slots.len() - self.done,
                self.slots.len(),
                self.config.stall_timeout
            )
        }
    }

    /// The manifest is known: protect the version, list what is missing, start counting.
    async fn setup(&mut self, m: Manifest) -> Result<(), P2pError> {
        let store = self.blocks.content.clone();
        let (id, library) = (self.id, self.library);
        let missing: Vec<BlockRef> = store::blocking("fetching blocks", move || {
            store.add_current(library, &id)?;
            store.missing_blocks(&id)
        })
        .await?;
        let mut occurrences: HashMap<BlockHash, (u32, u64)> = HashMap::new();
        for (i, b) in (0u32..).zip(&m.blocks) {
            let e = occurrences.entry(b.hash).or_insert((i, 0));
            e.1 += 1;
        }
        for b in missing {
            let (index, n) = occurrences.get(&b.hash).copied().unwrap_or((0, 1));
            let slot = self.slots.len();
            self.by_index.insert(index, slot);
            self.pending.insert(slot);
            self.remaining += u64::from(b.size) * n;
            self.slots.push(Slot {
                index,
                hash: b.hash,
                size: b.size,
                weight: u64::from(b.size) * n,
                state: State::Pending,
                also: None,
                asked: 0,
                asked_at: None,
                also_at: None,
                storing_asked_at: None,
            });
        }
        self.total = m.total_size;
        self.manifest_at = Some(self.started.elapsed());
        self.report.bytes_present = m.total_size - self.remaining;
        let hashes: HashSet<BlockHash> = self.slots.iter().map(|s| s.hash).collect();
        self.asked = self.blocks.start_fetching(self.id, hashes.iter().copied());
        self.active = Some(ActiveGuard {
            blocks: self.blocks,
            id: self.id,
            hashes,
        });
        let n = m.blocks.len() as u32;
        // Bitmaps that arrived before the manifest must fit it.
        let bad: Vec<PeerId> = self
            .providers
            .iter()
            .filter(|(_, p)| p.answered && !p.have.is_empty() && p.have.len() != n)
            .map(|(peer, _)| *peer)
            .collect();
        self.manifest = Some(m);
        self.starting = None;
        self.last_progress = Instant::now();
        for peer in bad {
            self.shun(peer, "its block bitmap does not fit the manifest".into());
        }
        // LAN peers learn that we fetch this version now (and we what they fetch).
        self.refresh(true);
        Ok(())
    }

    /// Starts a worker for every connected member not asked yet; notes LAN members being
    /// dialled (see `behind`).
    async fn add_providers(&mut self) {
        let candidates: Vec<PeerView> = self
            .peers
            .borrow()
            .iter()
            .filter(|v| {
                v.peer != self.local
                    && !self.providers.contains_key(&v.peer)
                    && !self.refused.contains(&v.peer)
                    && !self.excluded.iter().any(|(p, _)| *p == v.peer)
                    && !self.blocks.shunned.is_shunned(&self.library, &v.peer)
            })
            .cloned()
            .collect();
        if candidates.is_empty() {
            return;
        }
        let trust = self.blocks.trust.clone();
        let library = self.library;
        let members = tokio::task::spawn_blocking(move || {
            candidates
                .into_iter()
                .filter(|v| trust.check(&v.peer, &library).is_ok())
                .collect::<Vec<_>>()
        })
        .await
        .unwrap_or_default();
        for view in members {
            if !view.connected {
                self.behind.entry(view.peer).or_insert_with(Instant::now);
                continue;
            }
            // A LAN member seen before (refused, or dialled) keeps that time (see `behind`).
            let added = self
                .behind
                .get(&view.peer)
                .copied()
                .unwrap_or_else(Instant::now);
            tracing::debug!(peer = %view.peer, lan = view.lan, content = %self.content, "asking a provider");
            let (tx, rx) = mpsc::unbounded_channel();
            let _ = tx.send(ToWorker::Want {
                send_manifest: self.manifest.is_none(),
            });
            self.workers.spawn(worker(
                self.blocks.clone(),
                view.peer,
                self.library,
                self.content,
                rx,
                self.from_workers.clone(),
            ));
            self.providers.insert(
                view.peer,
                Provider {
                    view,
                    tx,
                    answered: false,
                    want_pending: true,
                    have: Bits::default(),
                    fetching: Bits::default(),
                    starting: false,
                    queued: 0,
                    received: 0,
                    min_delay: None,
                    first_get: None,
                    last_answer: Instant::now(),
                    added,
                },
            );
        }
    }

    /// Whether a LAN member not asking yet (see `behind`), still dialled or connected, is
    /// waiting to be asked and within [`LAN_FIRST_ANSWER`] of when it was first seen.
    fn behind_waiting(&self) -> bool {
        let peers = self.peers.borrow();
        self.behind.iter().any(|(peer, first)| {
            !self.providers.contains_key(peer)
                && first.elapsed() < LAN_FIRST_ANSWER
                && peers.iter().any(|v| v.peer == *peer)
        })
    }

    /// Asks LAN providers for a fresh `Have` (what they hold and fetch changes as they go),
    /// and WAN ones too while the fetch is stalled; `force`: even those whose last `Want`
    /// is unanswered.
    fn refresh(&mut self, force: bool) {
        if self.manifest.is_none() {
            return;
        }
        let lan = self.peers.borrow().clone();
        // WAN providers are asked again only while nothing arrives: what they hold may have
        // grown (a member fetching the same version), and nobody else is delivering.
        let stalled = self.last_progress.elapsed() > WAN_REFRESH_AFTER;
        for p in self.providers.values_mut() {
            // The class may have changed since the worker started (a ping answered).
            if let Some(v) = lan.iter().find(|v| v.peer == p.view.peer) {
                p.view.lan = v.lan;
                p.view.rtt = v.rtt;
            }
            if (p.view.lan || stalled) && (force || (p.answered && !p.want_pending)) {
                p.want_pending = true;
                let _ = p.tx.send(ToWorker::Want {
                    send_manifest: false,
                });
            }
        }
    }

    /// Hands pending blocks to providers with room in their window (see [`rank`]).
    fn schedule(&mut self) {
        if self.manifest.is_none() {
            return;
        }
        if self.pending.is_empty() {
            return self.endgame();
        }
        // Until every LAN provider has said what it holds (or had its chance), nothing goes
        // to the WAN: the first `Have` to arrive may well be the cloud's, and a LAN peer
        // still waiting for its manifest is about to fetch the same version. In the first
        // seconds a LAN peer's answer is stale as soon as we ask again (it may have started
        // fetching since it said "nothing": we asked again when we got the manifest, or
        // when it asked us), so an unanswered `Want` holds the WAN too.
        let lan_unheard = self.providers.values().any(|p| {
            p.view.lan
                && (!p.answered || p.starting || p.want_pending)
                && p.added.elapsed() < LAN_FIRST_ANSWER
        }) || self.behind_waiting();
        let mut assigned = Vec::new();
        for &s in &self.pending {
            let slot = &self.slots[s];
            let idx = slot.index;
            let has_room = |p: &Provider| {
                p.answered
                    && (p.queued == 0 || p.queued + u64::from(slot.size) <= p.window(&self.config))
            };
            if !self.providers.values().any(has_room) {
                break;
            }
            let lan_holder = self
                .providers
                .values()
                .any(|p| p.view.lan && p.have.get(idx));
            if !lan_holder {
                let co: Vec<&PeerId> = self
                    .providers
                    .iter()
                    .filter(|(_, p)| p.view.lan && p.fetching.get(idx) && !p.have.get(idx))
                    .map(|(peer, _)| peer)
                    .collect();
                if !co.is_empty()
                    && rank::owner(&slot.hash, co.into_iter().chain([&self.local]))
                        != Some(self.local)
                {
                    continue; // a LAN peer fetches it over the WAN for both of us
                }
            }
            if !lan_holder && lan_unheard {
                continue;
            }
            let best = self
                .providers
                .iter()
                .filter(|(_, p)| p.have.get(idx) && (!lan_holder || p.view.lan) && has_room(p))
                .map(|(peer, p)| (rank::eta(p.queued, slot.size, p.rate()), *peer))
                .min_by(|a, b| a.0.total_cmp(&b.0));
            if let Some((_, peer)) = best {
                tracing::debug!(%peer, index = idx, size = slot.size, lan = lan_holder, "asking a block");
                assigned.push((s, peer));
                if let Some(p) = self.providers.get_mut(&peer) {
                    if p.queued == 0 {
                        // Idle until now: its silence so far is not a stall.
                        p.last_answer = Instant::now();
                    }
                    p.queued += u64::from(slot.size);
                }
            }
        }
        for (s, peer) in assigned {
            self.pending.remove(&s);
            self.asks += 1;
            let slot = &mut self.slots[s];
            slot.state = State::InFlight(peer);
            slot.asked = self.asks;
            slot.asked_at = Some(Instant::now());
            if let Some(p) = self.providers.get_mut(&peer) {
                p.first_get.get_or_insert_with(Instant::now);
                if p.tx
                    .send(ToWorker::Get {
                        index: slot.index,
                        size: slot.size,
                    })
                    .is_err()
                {
                    // The worker ended; its Gone message will return the block.
                    tracing::debug!(%peer, "worker gone before a Get");
                }
            }
        }
        if self.pending.is_empty() {
            self.endgame();
        }
    }

    /// Once every block is asked, asks providers with nothing in flight for blocks in
    /// flight elsewhere (see [`endgame`] for which, and why).
    fn endgame(&mut self) {
        let idle: Vec<PeerId> = self
            .providers
            .iter()
            .filter(|(_, p)| p.answered && p.queued == 0)
            .map(|(peer, _)| *peer)
            .collect();
        if idle.is_empty() {
            return;
        }
        // LAN providers that answer: a block one of them holds stays off the WAN.
        let lan_answering: Vec<&Provider> = self
            .providers
            .values()
            .filter(|p| p.view.lan && !(p.queued > 0 && p.last_answer.elapsed() > LAN_QUIET))
            .collect();
        let outstanding: Vec<endgame::Outstanding> = self
            .slots
            .iter()
            .enumerate()
            .filter_map(|(s, slot)| {
                let State::InFlight(owner) = slot.state else {
                    return None;
                };
                if slot.also.is_some() {
                    return None;
                }
                self.providers.get(&owner)?;
                Some(endgame::Outstanding {
                    slot: s,
                    index: slot.index,
                    size: slot.size,
                    owner,
                    asked: slot.asked,
                    lan_held: lan_answering.iter().any(|p| p.have.get(slot.index)),
                })
            })
            .collect();
        if outstanding.is_empty() {
            return;
        }
        let rates: HashMap<PeerId, f64> = self
            .providers
            .iter()
            .map(|(peer, p)| (*peer, p.expected_rate()))
            .collect();
        let picks = {
            let helpers: Vec<(PeerId, &Provider)> = idle
                .iter()
                .filter_map(|peer| Some((*peer, self.providers.get(peer)?)))
                .collect();
            let has: Vec<Box<dyn Fn(u32) -> bool + '_>> = helpers
                .iter()
                .map(|(_, p)| Box::new(|i| p.have.get(i)) as Box<dyn Fn(u32) -> bool>)
                .collect();
            let idle: Vec<endgame::Idle<'_>> = helpers
                .iter()
                .zip(&has)
                .map(|((peer, p), has)| endgame::Idle {
                    peer: *peer,
                    lan: p.view.lan,
                    rate: p.expected_rate(),
                    window: p.window(&self.config),
                    has: has.as_ref(),
                })
                .collect();
            endgame::pick(outstanding, &rates, &idle)
        };
        for (s, helper) in picks {
            let slot = &mut self.slots[s];
            let Some(p) = self.providers.get_mut(&helper) else {
                continue;
            };
            tracing::debug!(peer = %helper, index = slot.index, "endgame: asking a block in flight elsewhere");
            if p.queued == 0 {
                p.last_answer = Instant::now();
            }
            p.first_get.get_or_insert_with(Instant::now);
            let get = ToWorker::Get {
                index: slot.index,
                size: slot.size,
            };
            if p.tx.send(get).is_ok() {
                p.queued += u64::from(slot.size);
                slot.also = Some(helper);
                slot.also_at = Some(Instant::now());
                self.report.endgame_asked += 1;
            }
        }
    }

    /// `peer`'s copy of slot `s` is no longer wanted (the other copy came first): it is
    /// cancelled, and dropped if it comes all the same (the provider had started sending
    /// it, or speaks `/harp/blocks/1`, which has no cancel). It counts against `peer`'s
    /// window until it came or was cancelled.
    fn drop_copy(&mut self, s: usize, peer: PeerId) {
        if let Some(p) = self.providers.get(&peer) {
            self.late.insert((peer, s));
            let cancel = ToWorker::Cancel {
                index: self.slots[s].index,
            };
            if p.tx.send(cancel).is_ok() {
                self.report.endgame_cancelled += 1;
            }
        }
    }

    /// A late copy (see [`Fetch::late`]) came, or will not: `peer`'s window has room again.
    /// Whether it was one.
    fn late_done(&mut self, s: usize, peer: PeerId) -> bool {
        if !self.late.remove(&(peer, s)) {
            return false;
        }
        if let Some(p) = self.providers.get_mut(&peer) {
            p.queued = p.queued.saturating_sub(u64::from(self.slots[s].size));
        }
        true
    }

    /// `peer` will not send slot `s` after all (it lacks it, or went away): the other
    /// provider the endgame asked keeps it, or it goes back to the queue.
    fn give_back(&mut self, s: usize, peer: PeerId) {
        let slot = &mut self.slots[s];
        match slot.state {
            State::InFlight(owner) if owner == peer => match slot.also.take() {
                Some(helper) => {
                    slot.state = State::InFlight(helper);
                    slot.asked_at = slot.also_at;
                }
                None => self.requeue(s),
            },
            State::InFlight(_) if slot.also == Some(peer) => slot.also = None,
            _ => {}
        }
    }

    /// `peer` answered slot `s` without its bytes (`Missing`, `Cancelled`): its window has
    /// room again, and a copy still wanted goes to the other provider or back to the queue.
    fn not_sent(&mut self, s: usize, peer: PeerId) {
        if self.late_done(s, peer) {
            return;
        }
        self.give_back(s, peer);
        if let Some(p) = self.providers.get_mut(&peer) {
            p.queued = p.queued.saturating_sub(u64::from(self.slots[s].size));
        }
    }

    async fn on_worker(&mut self, msg: FromWorker) -> Result<(), P2pError> {
        let from = match &msg {
            FromWorker::Have(p, _)
            | FromWorker::Block(p, ..)
            | FromWorker::Missing(p, _)
            | FromWorker::Cancelled(p, _) => Some(*p),
            _ => None,
        };
        if let Some(p) = from.and_then(|p| self.providers.get_mut(&p)) {
            p.last_answer = Instant::now();
        }
        match msg {
            FromWorker::Have(peer, have) => self.on_have(peer, have).await?,
            FromWorker::Block(peer, index, bytes) => {
                let Some(&s) = self.by_index.get(&index) else {
                    self.shun(peer, format!("sent block {index}, which was not asked"));
                    return Ok(());
                };
                if self.late_done(s, peer) {
                    // The endgame's other copy came first: this one is not stored again.
                    self.report.endgame_dropped += bytes.len() as u64;
                    return Ok(());
                }
                let slot = &mut self.slots[s];
                let other = match slot.state {
                    State::InFlight(owner) if owner == peer => {
                        slot.storing_asked_at = slot.asked_at;
                        slot.also.take()
                    }
                    State::InFlight(owner) if slot.also == Some(peer) => {
                        slot.storing_asked_at = slot.also_at;
                        slot.also = None;
                        self.report.endgame_won += 1;
                        Some(owner)
                    }
                    _ => return Ok(()), // asked before the provider was dropped
                };
                if let Some(other) = other {
                    self.drop_copy(s, other);
                }
                self.slots[s].state = State::Storing(peer);
                let now = self.started.elapsed();
                self.first_block_at.get_or_insert(now);
                self.last_block_at = Some(now);
                if let Some(p) = self.providers.get_mut(&peer) {
                    p.received += bytes.len() as u64;
                }
                let arrived = Arrived {
                    peer,
                    slot: s,
                    hash: self.slots[s].hash,
                    bytes,
                };
                if let Some(tx) = &self.to_store {
                    let _ = tx.send(arrived);
                }
            }
            FromWorker::Missing(peer, index) => {
                if let Some(&s) = self.by_index.get(&index) {
                    self.not_sent(s, peer);
                    if let Some(p) = self.providers.get_mut(&peer) {
                        p.have.clear(index);
                    }
                }
            }
            // Usually a late copy we cancelled; otherwise (asked again since) as if the
            // provider lacked it, though it holds it.
            FromWorker::Cancelled(peer, index) => {
                if let Some(&s) = self.by_index.get(&index) {
                    self.not_sent(s, peer);
                }
            }
            FromWorker::Refused(peer, reason) => {
                let behind = self
                    .providers
                    .get(&peer)
                    .filter(|p| p.view.lan && p.added.elapsed() < LAN_FIRST_ANSWER)
                    .map(|p| p.added);
                if let Some(first) = behind {
                    tracing::debug!(%peer, %reason, "a LAN member refused a block fetch; asking again");
                    self.behind.insert(peer, first);
                } else {
                    tracing::info!(%peer, %reason, "a provider refused a block fetch");
                    self.refused.insert(peer);
                }
                self.drop_provider(peer);
            }
            FromWorker::NoProtocol(peer) => {
                tracing::debug!(%peer, "a member speaks no version of /harp/blocks");
                self.refused.insert(peer);
                self.drop_provider(peer);
            }
            FromWorker::Gone(peer, why) => {
                tracing::info!(%peer, %why, "a provider went away during a fetch");
                self.drop_provider(peer);
            }
            FromWorker::Broken(peer, why) => self.shun(peer, why),
        }
        self.give_up_without_manifest()
    }

    async fn on_have(&mut self, peer: PeerId, have: Have) -> Result<(), P2pError> {
        if !self.providers.contains_key(&peer) {
            return Ok(());
        }
        if self.manifest.is_none() {
            if let Some(bytes) = have.manifest.clone() {
                let store = self.blocks.content.clone();
                let id = self.id;
                match store::blocking("fetching blocks", move || store.put_manifest(&id, &bytes))
                    .await
                {
                    Ok(m) => self.setup(m).await?,
                    Err(e) => {
                        self.shun(peer, format!("sent a bad manifest: {e}"));
                        return Ok(());
                    }
                }
            }
        }
        let n = self.manifest.as_ref().map(|m| m.blocks.len() as u32);
        if let Some(n) = n {
            if !have.have.is_empty() && have.have.len() != n {
                self.shun(peer, "its block bitmap does not fit the manifest".into());
                return Ok(());
            }
        }
        if let Some(p) = self.providers.get_mut(&peer) {
            tracing::debug!(
                %peer,
                lan = p.view.lan,
                have = have.have.count(),
                fetching = have.fetching.count(),
                starting = have.starting,
                "a provider answered"
            );
            p.answered = true;
            p.want_pending = false;
            p.have = have.have;
            p.fetching = have.fetching;
            p.starting = have.starting;
        }
        Ok(())
    }

    /// Blocks written under temporary names (or found bad): out of memory, so out of their
    /// provider's window; a bad one is asked again elsewhere and its sender shunned.
    fn on_staged(&mut self, outcomes: Vec<Outcome>) {
        for o in outcomes {
            let slot = &mut self.slots[o.slot];
            if let Some(p) = self.providers.get_mut(&o.peer) {
                p.queued = p.queued.saturating_sub(o.size);
                if let (true, Some(at)) = (o.good, slot.storing_asked_at.take()) {
                    let delay = at.elapsed();
                    p.min_delay = Some(p.min_delay.map_or(delay, |d| d.min(delay)));
                }
            }
            if !o.good && slot.state != State::Done {
                let index = slot.index;
                self.requeue(o.slot);
                self.shun(
                    o.peer,
                    format!("sent block {index} whose bytes do not match its hash"),
                );
            }
        }
    }

    /// Good blocks made durable: done.
    fn on_stored(&mut self, outcomes: Vec<Outcome>) {
        for o in outcomes {
            let slot = &mut self.slots[o.slot];
            if slot.state == State::Done {
                continue;
            }
            slot.state = State::Done;
            self.done += 1;
            self.remaining = self.remaining.saturating_sub(slot.weight);
            self.report.bytes_fetched += o.size;
            self.report.blocks_fetched += 1;
            *self.from.entry(o.peer).or_default() += o.size;
            self.last_from = Some(o.peer);
            self.last_progress = Instant::now();
            let h = slot.hash;
            self.blocks.stop_fetching(&self.id, [h]);
            if let Some(g) = &mut self.active {
                g.hashes.remove(&h);
            }
        }
    }

    /// Excludes providers that have requests outstanding but answered nothing for half the
    /// stall timeout (connected, but not serving): their blocks go to others before the
    /// whole fetch would give up.
    fn drop_stalled(&mut self) {
        let limit = self.config.stall_timeout / 2;
        let stalled: Vec<PeerId> = self
            .providers
            .iter()
            .filter(|(_, p)| p.queued > 0 && p.last_answer.elapsed() > limit)
            .map(|(peer, _)| *peer)
            .collect();
        for peer in stalled {
            self.exclude(peer, format!("answered nothing for {limit:?}"));
        }
    }

    fn requeue(&mut self, s: usize) {
        self.slots[s].state = State::Pending;
        self.slots[s].also = None;
        self.pending.insert(s);
    }

    /// The provider is gone: its asked blocks go back to the queue (blocks it already sent
    /// are being stored and stay).
    fn drop_provider(&mut self, peer: PeerId) {
        self.providers.remove(&peer);
        self.late.retain(|(p, _)| *p != peer);
        for s in 0..self.slots.len() {
            self.give_back(s, peer);
        }
    }

    /// The provider sent a bad block or broke the protocol: excluded from this fetch, and
    /// disconnected and shunned for the library ([`super::shun`]).
    fn shun(&mut self, peer: PeerId, why: String) {
        self.blocks.shunned.shun(self.library, peer);
        self.exclude(peer, why);
    }

    /// Not asked again in this fetch (it stalled, or misbehaved: see [`Fetch::shun`]).
    fn exclude(&mut self, peer: PeerId, why: String) {
        tracing::warn!(%peer, content = %self.content, %why, "excluding a provider from a fetch");
        self.drop_provider(peer);
        if !self.excluded.iter().any(|(p, _)| *p == peer) {
            self.excluded.push((peer, why.clone()));
        }
        let _ = self.events.send(NodeEvent::Transfer(TransferProgress {
            library: self.library,
            content: self.content,
            bytes_done: self.total - self.remaining,
            bytes_total: self.total,
            from: Some(peer),
            finished: false,
            error: Some(format!("excluded {peer}: {why}")),
        }));
    }

    /// Reports progress when it changed (always at the end).
    fn progress(&mut self, finished: bool, error: Option<String>) {
        let done = self.total - self.remaining;
        if !finished && (self.manifest.is_none() || self.reported_done == Some(done)) {
            return;
        }
        self.reported_done = Some(done);
        let _ = self.events.send(NodeEvent::Transfer(TransferProgress {
            library: self.library,
            content: self.content,
            bytes_done: done,
            bytes_total: self.total,
            from: self.last_from,
            finished,
            error,
        }));
    }
}
