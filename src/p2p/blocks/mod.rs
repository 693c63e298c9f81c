//! `/harp/blocks/2` (and `/1`): moving file content (blocks) between trusted peers, LAN
//! first (docs/wire.md §5).
//!
//! # Pieces, one file each
//!
//! | file | concept |
//! |---|---|
//! | [`wire`] | the messages and their bounded encoding on a stream |
//! | [`server`] | answering other peers' streams: who may read what, bitmaps, blocks from disk |
//! | [`rank`] | choosing a provider for a block: LAN first, RTT, throughput; the LAN split |
//! | [`fetch`] | one fetch of one version: providers, the window, verify, store, resume |
//! | [`endgame`] | the last blocks asked of a second provider; the first copy wins, the other is cancelled |
//! | [`shun`] | providers that sent a bad block: disconnected, not asked again for a while |
//! | [`worker`] | one provider's streams during a fetch: requests out, answers in, in order |
//! | [`store`] | writing verified blocks in batches (one fsync round per batch) |
//!
//! # Why streams and not request-response
//!
//! A request-response message is capped (`/harp/sync/1` answers are at most 4 MiB) and each
//! one opens a stream. Bulk data wants the opposite: long-lived streams per (fetcher,
//! provider) carrying a *window* of requests, so the provider always has the next block to
//! send while the previous one is on the wire (and reads it from disk meanwhile). A few
//! streams share the requests ([`worker`]'s lanes), because one yamux stream's flow-control
//! window leaves a 1 Gbit/s LAN idle part of the time. libp2p-stream gives the raw stream; its
//! [`libp2p_stream::Control`] lives outside the swarm task (in the [`Blocks`] shared here),
//! so a fetch never waits for the node's event loop, and the swarm task never touches a
//! block.
//!
//! # A fetch, step by step
//!
//! 1. Ask every connected member of the library `Want` (the manifest too, if we lack it);
//!    the first manifest whose BLAKE3 equals the `ContentId` is stored
//!    ([`crate::content::ContentStore::put_manifest`] checks), the version is added to the
//!    library's current set (so the cache never evicts what we are fetching), and
//!    [`crate::content::ContentStore::missing_blocks`] gives the work (a fetch that was
//!    interrupted resumes here: what was stored stays stored).
//! 2. Each block goes to one provider that has it, chosen by [`rank`]: LAN providers first
//!    (a block a LAN peer holds is never asked over the WAN, and nothing goes to the WAN
//!    until every LAN provider has answered its first `Want`, or had 5 s to), then the provider expected to
//!    deliver it soonest (bytes already queued there over its rate: measured throughput
//!    once known, a prior from its ping RTT before). Every provider has a window of bytes in
//!    flight (16 MiB on the LAN, 4 MiB on the WAN by default), so several providers work at
//!    once and memory stays bounded by the sum of the windows, whatever the file's size. A
//!    WAN provider's window starts at 512 KiB and grows by every byte it delivers (slow
//!    start): what is asked over the WAN before a co-fetching LAN peer shows up is paid
//!    twice, so little is asked before the split is known. Once its rate and delay are
//!    measured it holds twice its bandwidth × delay (within the 4 MiB), so a slow WAN
//!    link does not hold seconds of blocks ([`rank::window`]; a LAN window stays fixed).
//! 3. Every block is verified (BLAKE3 against the manifest) by
//!    [`crate::content::ContentStore::stage_blocks`] as it arrives, before it is written
//!    ([`store`] commits the staged blocks in groups); a provider that sends
//!    a bad block (or breaks the protocol) is excluded, named in
//!    [`crate::p2p::FetchReport::excluded`], disconnected and not asked for that library's
//!    blocks again for [`shun::SHUN_FOR`]; its blocks go back to the queue. A provider
//!    that vanishes (stream reset, connection closed) also gives its in-flight blocks back.
//!    When no provider is left, the fetch looks for newly connected members every tick and
//!    fails after [`crate::p2p::P2pConfig::fetch_stall_timeout`] without progress.
//! 4. The endgame ([`endgame`]): once every block is asked, a provider with nothing in
//!    flight is also asked for blocks in flight at one it is expected to beat by 2x (a slow
//!    or stalled provider); the first copy is stored, the other dropped when it comes. A
//!    WAN provider joins only for blocks no answering LAN provider holds, so a LAN pull
//!    never trickles over the WAN.
//!
//! # The office story: two offices, one cloud
//!
//! Office B pulling a file office A already holds: A is a LAN peer (found by mDNS, or on
//! B's subnet), A's `Have`
//! covers every block, so rule 2 sends everything to A and nothing to the cloud (the WAN
//! carries only the `Want`/`Have` exchange and, at most, the manifest: 36 bytes per MiB).
//!
//! Both offices fetching the same new version at once: each `Have` also carries a
//! `fetching` bitmap, the blocks the answering node is fetching itself right now (from its
//! own active fetches, kept in [`Blocks`]). For a block no LAN peer *holds* but
//! some LAN peers are *fetching*, the co-fetchers split the WAN work deterministically by
//! rendezvous hashing ([`rank::owner`]): among ourselves and the LAN peers fetching it, the
//! node with the lowest `BLAKE3(block hash ‖ peer id)` fetches it over the WAN; the others
//! leave it *deferred* and ask again (`Want`) every tick, and take it from that LAN peer as
//! soon as its `Have` shows it. A `Want` for a version we are fetching also makes our fetch
//! ask its LAN providers again at once (the asker may have just started fetching it too),
//! and a fetch asks its LAN providers again as soon as it has the manifest, so two offices
//! starting together see each other within a round trip. Both sides compute the same owner from the same facts, so
//! neither waits on the other; when the owner goes away (its stream ends) or stops fetching
//! the block without having it, the block is ours again and goes to the WAN. With two offices
//! each pulls about half over the WAN and the other half over the LAN: WAN bytes ≈ 1× the
//! file, plus the overlap while the two have not yet seen each other's `fetching` bits (at
//! most the first, slow-start WAN window each: a block or so). A node that wants the version but has no manifest yet (or has
//! just stored it and not yet marked its blocks as fetching) says so in its `Have`
//! (`starting`), and a fetcher waits for such a LAN peer's next `Have` (up to
//! 5 s) before it asks the WAN, so two offices that start at the same moment do not both
//! fill a WAN window before they see each other. For the same reason, in a LAN peer's
//! first 5 s, a `Want` it has not answered yet holds the WAN: its last answer ("nothing")
//! may predate its own fetch, which started a millisecond later.
//!
//! The offices learn of a new version milliseconds apart (each pulls the chain from the
//! cloud, or from the other), so the first `Want` can reach a LAN peer whose chain does
//! not reference the version *yet*, and the server refuses it (see below). A refusal from
//! a LAN peer that our chain says is a member is therefore not final for its first 5 s:
//! the fetch asks it again every tick (and when it asks us about the version) and holds
//! the WAN meanwhile. Taking such a refusal as final would make an office fetch the whole
//! file over the WAN while the other splits it with it (1.4–1.6× the file on the WAN in the
//! lab's concurrent fetch, docs/lab.md §4).
//!
//! # Which peers are LAN
//!
//! A peer is LAN if mDNS found it; a peer dialled because it is configured
//! ([`crate::p2p::P2pConfig::peers`]: the cloud) is WAN; any other peer (dialled by hand,
//! or that dialled us) is LAN if its ping RTT is at most [`crate::p2p::P2pConfig::lan_rtt`]
//! (off by default: then only mDNS makes a LAN peer). On loopback every peer answers in well
//! under a millisecond, so tests set `lan_rtt` to make loopback peers LAN and make the
//! "cloud" WAN by listing it in `peers`.
//!
//! # Who may read what (the server)
//!
//! A `Want` is answered only if the asker's key is a member of the library here *and* the
//! library's chain references the version (a `Put` with that content, current or past):
//! a member of library X cannot read library Y's content by naming its hash. Both refusals
//! look the same. A stream serves one version; `Get` names blocks by their index in that
//! version's manifest. Blocks are read (and verified) on the blocking pool.

pub mod endgame;
pub mod fetch;
pub mod rank;
pub mod server;
pub mod shun;
pub mod store;
pub mod wire;
pub mod worker;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::chain::{ChainStore, ContentId, LibraryId, Op, TreeItem};
use crate::content::{BlockHash, ContentStore, ManifestId};

use super::metrics::Meter;
use super::trust::Trust;

/// What the fetcher, the server and the node share. Cheap to clone.
#[derive(Clone)]
pub struct Blocks {
    pub(crate) content: ContentStore,
    pub(crate) chain: ChainStore,
    pub(crate) trust: Trust,
    pub(crate) meter: Meter,
    pub(crate) control: libp2p_stream::Control,
    /// Providers that sent bad blocks, per library ([`shun`]).
    pub(crate) shunned: shun::Shunned,
    active: Arc<Mutex<HashMap<ManifestId, Active>>>,
    /// Versions being fetched here whose manifest has not arrived yet (how many fetches).
    starting: Arc<Mutex<HashMap<ManifestId, usize>>>,
    referenced: Arc<Mutex<HashSet<(LibraryId, ContentId)>>>,
    /// Where versions are besides the block store (a synced folder's files), if anywhere.
    placed: Arc<std::sync::RwLock<Option<Arc<dyn PlacedFiles>>>>,
}

/// Files that hold whole versions outside the block store: a synced folder's, whose blocks
/// need not be stored twice. A block served from one is read at its offset and checked
/// against its hash first; a file changed since it was hashed is never served (the peer is
/// told the block is missing, and the folder's watcher records the new version).
pub trait PlacedFiles: Send + Sync {
    /// The file that holds `content` of `library` now, if one does.
    fn file_of(&self, library: &LibraryId, content: &ContentId) -> Option<std::path::PathBuf>;
}

/// One version being fetched here: the blocks still missing, and a bell the server rings
/// when another peer asks about the version (it may be fetching it too: see "The office
/// story" above), so the fetch asks its LAN providers for a fresh `Have` at once.
#[derive(Debug, Default)]
struct Active {
    blocks: HashSet<BlockHash>,
    asked: Arc<tokio::sync::Notify>,
}

impl std::fmt::Debug for Blocks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Blocks").finish_non_exhaustive()
    }
}

/// Versions remembered as referenced by a library's chain before the memo is cleared.
const REFERENCED_MEMO: usize = 65_536;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    crate::locks::lock(m)
}

impl Blocks {
    /// The shared state of one node.
    pub(crate) fn new(
        content: ContentStore,
        chain: ChainStore,
        meter: Meter,
        control: libp2p_stream::Control,
        shunned: shun::Shunned,
    ) -> Self {
        Blocks {
            content,
            shunned,
            trust: Trust::new(chain.clone()),
            chain,
            meter,
            control,
            active: Arc::default(),
            starting: Arc::default(),
            referenced: Arc::default(),
            placed: Arc::default(),
        }
    }

    /// Serves versions from these files too ([`PlacedFiles`]).
    pub(crate) fn set_placed(&self, placed: Arc<dyn PlacedFiles>) {
        *self.placed.write().unwrap_or_else(|e| e.into_inner()) = Some(placed);
    }

    /// The file that holds `content` of `library`, if a [`PlacedFiles`] knows one.
    pub(crate) fn placed_file(
        &self,
        library: &LibraryId,
        content: &ContentId,
    ) -> Option<std::path::PathBuf> {
        let placed = self
            .placed
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        placed?.file_of(library, content)
    }

    /// Blocks of `id` this node is fetching right now. Rings the fetch's bell: a peer is
    /// asking about a version we fetch.
    pub(crate) fn fetching(&self, id: &ManifestId) -> HashSet<BlockHash> {
        match lock(&self.active).get(id) {
            Some(a) => {
                a.asked.notify_one();
                a.blocks.clone()
            }
            None => HashSet::new(),
        }
    }

    /// Whether a fetch here wants `id` but has no manifest yet.
    pub(crate) fn starting(&self, id: &ManifestId) -> bool {
        lock(&self.starting).get(id).is_some_and(|n| *n > 0)
    }

    /// Marks `id` as wanted by a fetch that has no manifest yet; undone by
    /// [`Blocks::stop_starting`].
    pub(crate) fn start_starting(&self, id: ManifestId) {
        *lock(&self.starting).entry(id).or_default() += 1;
    }

    /// Undoes one [`Blocks::start_starting`].
    pub(crate) fn stop_starting(&self, id: &ManifestId) {
        let mut s = lock(&self.starting);
        if let Some(n) = s.get_mut(id) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                s.remove(id);
            }
        }
    }

    /// Marks blocks of `id` as being fetched here; the returned bell rings when a peer asks
    /// about `id`.
    pub(crate) fn start_fetching(
        &self,
        id: ManifestId,
        blocks: impl IntoIterator<Item = BlockHash>,
    ) -> Arc<tokio::sync::Notify> {
        let mut a = lock(&self.active);
        let e = a.entry(id).or_default();
        e.blocks.extend(blocks);
        e.asked.clone()
    }

    /// Unmarks blocks of `id` (stored, or the fetch ended).
    pub(crate) fn stop_fetching(
        &self,
        id: &ManifestId,
        blocks: impl IntoIterator<Item = BlockHash>,
    ) {
        let mut a = lock(&self.active);
        if let Some(e) = a.get_mut(id) {
            for b in blocks {
                e.blocks.remove(&b);
            }
            if e.blocks.is_empty() {
                a.remove(id);
            }
        }
    }

    /// Whether `library`'s chain references `content` (a `Put` of it, now or in the past).
    /// Blocking. The chain is append-only, so a yes is remembered.
    pub(crate) fn references(
        &self,
        library: &LibraryId,
        content: &ContentId,
    ) -> Result<bool, crate::chain::ChainError> {
        if lock(&self.referenced).contains(&(*library, *content)) {
            return Ok(true);
        }
        // The current tree first (kept between calls by the chain), then the whole history.
        let tree = self.chain.tree(library)?;
        let mut found = tree
            .items
            .values()
            .any(|i| matches!(i, TreeItem::File { content: c, .. } if c == content));
        if !found {
            let log = self.chain.log(library)?;
            for chunk in log.chunks(4096) {
                let entries = self.chain.entries(library, chunk)?;
                if entries
                    .iter()
                    .flatten()
                    .any(|e| matches!(&e.meta().op, Op::Put { content: c, .. } if c == content))
                {
                    found = true;
                    break;
                }
            }
        }
        if found {
            let mut memo = lock(&self.referenced);
            if memo.len() >= REFERENCED_MEMO {
                memo.clear();
            }
            memo.insert((*library, *content));
        }
        Ok(found)
    }
}
