//! Block transfer (`/harp/blocks/2`) between real swarms on loopback: a 256 MiB file reaches
//! two members byte-identical, a provider killed mid-transfer is replaced, a provider that
//! serves corrupt blocks is excluded, disconnected and not asked for the library again, a stranger (and a member asking for another library's
//! content) gets nothing, two "offices" behind one "cloud" pull over the LAN, a LAN
//! member that refuses at first (its chain a moment behind) is asked again, and the
//! endgame: the last blocks, in flight at a slow provider, come from an idle one, but a
//! LAN pull turns to an idle WAN provider only once its LAN provider went quiet.
//!
//! Slow providers are real nodes behind their own upload limit (`wan_limit_up`: they count
//! the fetcher as WAN, while the fetcher counts them as LAN by RTT).
//!
//! mDNS is off (multicast on loopback is unreliable in CI); peers are dialled by loopback
//! multiaddrs. On loopback every peer answers pings in well under a millisecond, so the
//! nodes here set `lan_rtt` to count dialled peers as LAN, and the office test makes the
//! "cloud" WAN by listing it in `peers` (see `harpbridge::p2p::blocks`). The hostile peers
//! are small swarms in this file that speak the wire protocol themselves. Every wait is
//! bounded.

#[path = "support/swarm.rs"]
mod swarm;
#[path = "support/tmpfs.rs"]
mod tmpfs;

use std::io::Read;
use std::time::{Duration, Instant};

use harpbridge::chain::DeviceKey;
use harpbridge::chain::{ChainPath, ContentId, LibraryId, Op};
use harpbridge::content::{ContentStore, ManifestId};
use harpbridge::identity::DeviceIdentity;
use harpbridge::p2p::blocks::wire::{self, Answer, Ask, Bits, Have};
use harpbridge::p2p::{FetchReport, PeerInfo};
use harpbridge::p2p::{NodeEvent, P2pConfig, Refusal};
use libp2p::futures::StreamExt;
use libp2p::swarm::NetworkBehaviour;
use libp2p::{noise, ping, tcp, yamux, Multiaddr, PeerId, StreamProtocol};
use swarm::{shutdown, TestNode};

const WAIT: Duration = Duration::from_secs(60);
const MIB: u64 = 1 << 20;

fn loopback() -> P2pConfig {
    P2pConfig {
        // Loopback peers dialled by hand count as LAN (see the file docs); generous, so
        // that a first ping slowed by a loaded machine still counts.
        lan_rtt: Duration::from_secs(1),
        ..swarm::loopback()
    }
}

/// What these tests do with a node: put files, and wait for its peers.
impl TestNode {
    /// Writes `size` pseudo-random bytes (from `seed`) as a new version in the store and
    /// appends its `Put`; returns the version and the BLAKE3 of the bytes.
    async fn put_file(
        &self,
        lib: LibraryId,
        name: &str,
        seed: u8,
        size: u64,
    ) -> (ContentId, [u8; 32]) {
        let (id, hash) = ingest(&self.content, lib, seed, size).await;
        self.chain
            .append(
                &lib,
                self.id.signing_key(),
                Op::Put {
                    path: ChainPath::new(name).unwrap(),
                    size,
                    mtime_ms: 0,
                    content: id.into(),
                    nextcloud: None,
                },
            )
            .unwrap();
        self.node.library_changed(lib).await.unwrap();
        (id.into(), hash)
    }

    /// The encoded manifest of a version this node holds.
    fn manifest(&self, content: ContentId) -> Vec<u8> {
        self.content
            .manifest_bytes(&content.into())
            .unwrap()
            .expect("a held version")
    }

    /// Fetches `content` (within [`WAIT`]) and checks the stored bytes against `hash`.
    async fn fetch_checked(
        &self,
        lib: LibraryId,
        content: ContentId,
        hash: [u8; 32],
    ) -> FetchReport {
        let report = bounded("the fetch", self.node.fetch_content(lib, content))
            .await
            .unwrap();
        assert_eq!(
            stored_hash(&self.content, content).await,
            hash,
            "{report:?}"
        );
        report
    }

    /// Waits until each of `peers` is connected, pinged and classed LAN, so that byte
    /// counters and provider choice see the class the test expects from the start.
    async fn on_lan(&self, peers: &[PeerId]) {
        self.peers_are("the peers to be classed LAN", peers, |p| {
            p.connected && p.lan
        })
        .await;
    }

    /// Waits until each of `peers` is connected and pinged.
    async fn connected_to(&self, peers: &[PeerId]) {
        self.peers_are("the peers to connect", peers, |p| {
            p.connected && p.rtt.is_some()
        })
        .await;
    }

    /// Waits until this node's peer table has a row for each of `peers` that `ok` accepts.
    async fn peers_are(&self, what: &str, peers: &[PeerId], ok: fn(&PeerInfo) -> bool) {
        let node = self.node.clone();
        let want: Vec<PeerId> = peers.to_vec();
        eventually(what, move || {
            let node = node.clone();
            let want = want.clone();
            async move {
                let ps = node.peers().await.unwrap();
                want.iter()
                    .all(|w| ps.iter().any(|p| p.peer == *w && ok(p)))
            }
        })
        .await;
    }
}

/// Streams `size` bytes of a seeded BLAKE3 XOF into a writer: the same seed gives the same
/// file (and so the same version id) in any store.
async fn ingest(
    store: &ContentStore,
    lib: LibraryId,
    seed: u8,
    size: u64,
) -> (ManifestId, [u8; 32]) {
    let store = store.clone();
    tokio::task::spawn_blocking(move || {
        let mut hasher = blake3::Hasher::new();
        let mut w = store.writer(lib);
        swarm::seeded(seed, size, |bytes| {
            hasher.update(bytes);
            w.write(bytes).unwrap();
        });
        (w.finish().unwrap().id, *hasher.finalize().as_bytes())
    })
    .await
    .unwrap()
}

/// BLAKE3 of a stored version read back through the store's reader.
async fn stored_hash(store: &ContentStore, content: ContentId) -> [u8; 32] {
    let store = store.clone();
    tokio::task::spawn_blocking(move || {
        let mut r = store.open_reader(&content.into()).unwrap();
        let mut hasher = blake3::Hasher::new();
        let mut buf = vec![0u8; MIB as usize];
        loop {
            let n = r.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
        }
        *hasher.finalize().as_bytes()
    })
    .await
    .unwrap()
}

async fn eventually<F, Fut>(what: &str, check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    swarm::eventually(WAIT, what, check).await
}

async fn bounded<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    swarm::bounded(WAIT, what, f).await
}

/// Waits until every node holds the same heads of `lib` (and the `Put`s in them).
async fn converge(nodes: &[&TestNode], lib: LibraryId) {
    swarm::converge(WAIT, nodes, lib).await
}

/// A, B and C, with a new library of A's that lists B and C as members.
async fn three_members() -> (TestNode, TestNode, TestNode, LibraryId) {
    let a = TestNode::start(loopback()).await;
    let b = TestNode::start(loopback()).await;
    let c = TestNode::start(loopback()).await;
    let (lib, _) = a.chain.create_library(a.id.signing_key(), "a").unwrap();
    a.add(&lib, b.id.device_key(), "member");
    a.add(&lib, c.id.device_key(), "member");
    (a, b, c, lib)
}

/// A and B (started with `b_config`): A's new library lists B and `others` as members and
/// holds one `size`-byte file from `seed`; B has dialled A and their chains agree. Returns
/// the nodes, the library, the file's version and the BLAKE3 of its bytes.
async fn a_file_for_b(
    b_config: P2pConfig,
    others: &[DeviceKey],
    seed: u8,
    size: u64,
) -> (TestNode, TestNode, LibraryId, ContentId, [u8; 32]) {
    a_file_for_b_from(loopback(), b_config, others, seed, size).await
}

/// [`a_file_for_b`] with A started with `a_config`.
async fn a_file_for_b_from(
    a_config: P2pConfig,
    b_config: P2pConfig,
    others: &[DeviceKey],
    seed: u8,
    size: u64,
) -> (TestNode, TestNode, LibraryId, ContentId, [u8; 32]) {
    let a = TestNode::start(a_config).await;
    let b = TestNode::start(b_config).await;
    let (lib, _) = a.chain.create_library(a.id.signing_key(), "a").unwrap();
    a.add(&lib, b.id.device_key(), "member");
    for other in others {
        a.add(&lib, *other, "member");
    }
    let (content, hash) = a.put_file(lib, "f.bin", seed, size).await;
    b.node.dial(a.addr(false)).await.unwrap();
    converge(&[&a, &b], lib).await;
    (a, b, lib, content, hash)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_converge_and_a_256_mib_file_arrives_byte_identical() {
    let (a, b, c, lib) = three_members().await;
    b.node.dial(a.addr(false)).await.unwrap();
    c.node.dial(a.addr(true)).await.unwrap();
    c.node.dial(b.addr(false)).await.unwrap();
    let size = 256 * MIB;
    let (content, hash) = a.put_file(lib, "big.bin", 1, size).await;
    converge(&[&a, &b, &c], lib).await;
    b.on_lan(&[a.node.peer_id(), c.node.peer_id()]).await;
    c.on_lan(&[a.node.peer_id(), b.node.peer_id()]).await;

    let mut events = b.node.subscribe();
    let (rb, rc) = bounded("both fetches", async {
        tokio::join!(
            b.node.fetch_content(lib, content),
            c.node.fetch_content(lib, content)
        )
    })
    .await;
    let (rb, rc) = (rb.unwrap(), rc.unwrap());
    for (who, r) in [("B", &rb), ("C", &rc)] {
        eprintln!(
            "{who}: {} MiB in {:?} ({:.0} MiB/s), from {:?}",
            r.bytes_fetched / MIB,
            r.elapsed,
            r.bytes_fetched as f64 / MIB as f64 / r.elapsed.as_secs_f64(),
            r.from
        );
        assert_eq!(r.bytes_fetched + r.bytes_present, size, "{who}");
        assert!(r.excluded.is_empty(), "{who}: {:?}", r.excluded);
    }
    assert_eq!(stored_hash(&b.content, content).await, hash);
    assert_eq!(stored_hash(&c.content, content).await, hash);
    // The fetched version is current at B and C, so their caches keep it.
    assert!(b.content.current(lib).unwrap().contains(&content.into()));
    assert!(c.content.current(lib).unwrap().contains(&content.into()));

    // Progress went out, and the last event says finished.
    let mut last = None;
    while let Ok(e) = events.try_recv() {
        if let NodeEvent::Transfer(p) = e {
            if p.content == content {
                last = Some(p);
            }
        }
    }
    let last = last.expect("transfer events");
    assert!(last.finished && last.error.is_none());
    assert_eq!((last.bytes_done, last.bytes_total), (size, size));

    // Every byte received was stored or was a copy the endgame dropped (one that came after
    // another provider's, or after the fetch ended), all over the "LAN" here; every byte
    // received was sent by someone. The endgame's cost is bounded: at most a LAN window
    // from each of the two other providers per fetcher. Per-peer counts match the report
    // and the peer table.
    let ta = a.node.traffic();
    let tb = b.node.traffic();
    let tc = c.node.traffic();
    eprintln!("traffic A {ta:?}\nB {tb:?}\nC {tc:?}");
    let bound = 2 * 16 * MIB;
    for (t, r) in [(&tb, &rb), (&tc, &rc)] {
        assert!(
            t.lan_in >= r.bytes_fetched + r.endgame_dropped,
            "{t:?} {r:?}"
        );
        assert!(t.lan_in <= r.bytes_fetched + bound, "{t:?} {r:?}");
    }
    assert_eq!(tb.wan_in + tc.wan_in + ta.wan_out, 0);
    let sent = ta.lan_out + tb.lan_out + tc.lan_out;
    assert!(sent >= tb.lan_in + tc.lan_in);
    assert!(sent <= rb.bytes_fetched + rc.bytes_fetched + 2 * bound);
    let peers = b.node.peers().await.unwrap();
    for (peer, n) in &rb.from {
        let p = peers.iter().find(|p| p.peer == *peer).unwrap();
        assert!(p.bytes_in >= *n);
        assert!(p.lan);
    }
    assert_eq!(peers.iter().map(|p| p.bytes_in).sum::<u64>(), tb.lan_in);

    // Fetching again moves nothing.
    let again = bounded("a second fetch", b.node.fetch_content(lib, content))
        .await
        .unwrap();
    assert_eq!((again.bytes_fetched, again.bytes_present), (0, size));
    shutdown([a, b, c]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_killed_mid_transfer_is_replaced() {
    let (a, b, c, lib) = three_members().await;
    let size = 128 * MIB;
    let (content, hash) = a.put_file(lib, "f.bin", 2, size).await;
    // C holds the same bytes (same seed, same version) without any transfer.
    assert_eq!(ingest(&c.content, lib, 2, size).await.0, content.into());
    b.node.dial(a.addr(false)).await.unwrap();
    b.node.dial(c.addr(false)).await.unwrap();
    c.node.dial(a.addr(false)).await.unwrap();
    converge(&[&a, &b, &c], lib).await;
    b.connected_to(&[a.node.peer_id(), c.node.peer_id()]).await;

    let fetch = {
        let node = b.node.clone();
        tokio::spawn(async move { node.fetch_content(lib, content).await })
    };
    // Kill A as soon as B has received a block from it.
    let pa = a.node.peer_id();
    let bn = b.node.clone();
    eventually("B to receive from A", move || {
        let t = bn.traffic();
        async move { t.per_peer.iter().any(|p| p.peer == pa && p.bytes_in > 0) }
    })
    .await;
    assert!(
        !fetch.is_finished(),
        "the fetch ended before A could be killed"
    );
    let from_a_at_kill = b
        .node
        .traffic()
        .per_peer
        .iter()
        .find(|p| p.peer == pa)
        .unwrap()
        .bytes_in;
    a.node.shutdown().await;
    let report = bounded("the fetch", fetch).await.unwrap().unwrap();
    eprintln!(
        "killed A after {} MiB from it; report {:?}",
        from_a_at_kill / MIB,
        report.from
    );
    assert_eq!(stored_hash(&b.content, content).await, hash);
    assert_eq!(report.bytes_fetched, size);
    let from_c = report
        .from
        .iter()
        .find(|(p, _)| *p == c.node.peer_id())
        .map(|x| x.1);
    assert!(from_c.unwrap_or(0) > 0, "{:?}", report.from);
    assert!(
        report.excluded.is_empty(),
        "a vanished provider is not a bad one"
    );
    shutdown([b, c]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_fetch_resumes_from_what_was_stored() {
    let size = 96 * MIB;
    let (a, b, lib, content, hash) = a_file_for_b(loopback(), &[], 8, size).await;
    b.connected_to(&[a.node.peer_id()]).await;

    // The caller gives up (the future is dropped) once a quarter has arrived.
    let fetch = {
        let node = b.node.clone();
        tokio::spawn(async move { node.fetch_content(lib, content).await })
    };
    let bn = b.node.clone();
    eventually("a quarter of the file at B", move || {
        let t = bn.traffic();
        async move { t.lan_in >= size / 4 }
    })
    .await;
    fetch.abort();
    assert!(fetch.await.unwrap_err().is_cancelled());

    let report = bounded("the second fetch", b.node.fetch_content(lib, content))
        .await
        .unwrap();
    eprintln!(
        "resumed: {} MiB present, {} MiB fetched",
        report.bytes_present / MIB,
        report.bytes_fetched / MIB
    );
    assert!(report.bytes_present > 0);
    assert!(report.bytes_fetched < size);
    assert_eq!(stored_hash(&b.content, content).await, hash);
    shutdown([a, b]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fetch_into_a_full_disk_fails_clearly_and_resumes_once_there_is_room() {
    let outer = tempfile::tempdir().unwrap();
    let Some(disk) = tmpfs::Tmpfs::mount(&outer.path().join("small"), "24m") else {
        return;
    };
    let size = 48 * MIB;
    let a = TestNode::start(loopback()).await;
    let b = TestNode::start_in(tempfile::tempdir_in(disk.path()).unwrap(), loopback()).await;
    let (lib, _) = a.chain.create_library(a.id.signing_key(), "a").unwrap();
    a.add(&lib, b.id.device_key(), "member");
    let (content, hash) = a.put_file(lib, "f.bin", 12, size).await;
    b.node.dial(a.addr(false)).await.unwrap();
    converge(&[&a, &b], lib).await;
    b.connected_to(&[a.node.peer_id()]).await;

    let err = bounded(
        "the fetch into a full disk",
        b.node.fetch_content(lib, content),
    )
    .await
    .expect_err("48 MiB fit on a 24 MiB disk");
    eprintln!("fetch into a full disk: {err}");
    assert!(
        err.to_string().contains("disk full"),
        "the error does not say the disk is full: {err}"
    );
    // Nothing half-written is left: no temporary block files, every stored block whole.
    let leftovers: Vec<_> = walk(b.content.blocks_dir())
        .into_iter()
        .filter(|p| p.to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "left behind: {leftovers:?}");

    // Room again: the database, if a commit met the full disk, re-opens by itself; every
    // stored block is whole, and the same fetch finishes, keeping what was stored before.
    disk.resize("128m");
    let damaged = swarm::until(WAIT, "the store to be readable again", || async {
        b.content.verify_all().ok()
    })
    .await;
    assert!(damaged.is_empty(), "damaged blocks: {damaged:?}");
    let report = bounded(
        "the fetch after the disk grew",
        b.node.fetch_content(lib, content),
    )
    .await
    .unwrap();
    eprintln!(
        "resumed: {} MiB present, {} MiB fetched",
        report.bytes_present / MIB,
        report.bytes_fetched / MIB
    );
    assert!(report.bytes_present > 0, "{report:?}");
    assert_eq!(stored_hash(&b.content, content).await, hash);
    shutdown([a, b]).await;
}

/// Every file under `root`.
fn walk(root: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}

/// How a hand-made provider misbehaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Answers every `Get` with garbage of the right size.
    Corrupt,
    /// Answers the first `Want`, then nothing more (connected, but not serving).
    Silent,
    /// Refuses its first stream as a member whose chain does not reference the version yet
    /// would, then serves the real blocks (from the store given to [`RawPeer::start`]).
    BehindThenHonest,
    /// Drops its first stream unanswered, as libp2p-stream drops an inbound stream it cannot
    /// hand over at once, then serves the real blocks (from the store given).
    DropsFirstThenHonest,
}

/// A peer that speaks `/harp/blocks/1` by hand: it serves its manifest to anyone, claims
/// every block, and misbehaves on `Get` as its [`Mode`] says. Being version 1 only, it also
/// has every fetch against it fall back from `/harp/blocks/2`.
#[derive(NetworkBehaviour)]
struct RawBehaviour {
    ping: ping::Behaviour,
    stream: libp2p_stream::Behaviour,
}

struct RawPeer {
    peer: PeerId,
    control: libp2p_stream::Control,
    task: tokio::task::JoinHandle<()>,
}

impl RawPeer {
    /// A stream of `protocol` to `to`, opened again until the connection is up (within
    /// [`WAIT`]).
    async fn open(&self, to: PeerId, protocol: &'static str) -> libp2p::Stream {
        let mut control = self.control.clone();
        bounded("a block stream", async move {
            loop {
                match control.open_stream(to, StreamProtocol::new(protocol)).await {
                    Ok(st) => return st,
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
        })
        .await
    }
}

/// Writes `asks` and flushes them.
async fn send(st: &mut libp2p::Stream, asks: &[Ask]) {
    for a in asks {
        wire::write_ask(st, a).await.unwrap();
    }
    libp2p::futures::AsyncWriteExt::flush(st).await.unwrap();
}

/// The next answer, of at most `max` bytes (within [`WAIT`]).
async fn answer(st: &mut libp2p::Stream, max: usize) -> std::io::Result<Option<Answer>> {
    bounded("an answer", wire::read_answer(st, max)).await
}

impl RawPeer {
    /// A swarm with `id`'s key that dials `target` and, if `serve` is given, answers block
    /// streams with that manifest and garbage blocks of the right sizes.
    async fn start(
        id: &DeviceIdentity,
        target: Multiaddr,
        serve: Option<(Vec<u8>, Mode)>,
        blocks: Option<ContentStore>,
    ) -> RawPeer {
        let mut swarm = libp2p::SwarmBuilder::with_existing_identity(id.keypair().clone())
            .with_tokio()
            .with_tcp(
                tcp::Config::default(),
                noise::Config::new,
                yamux::Config::default,
            )
            .unwrap()
            .with_behaviour(|_| RawBehaviour {
                ping: ping::Behaviour::new(ping::Config::new()),
                stream: libp2p_stream::Behaviour::new(),
            })
            .unwrap()
            .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
            .build();
        let mut control = swarm.behaviour().stream.new_control();
        if let Some((manifest, mode)) = serve {
            let mut incoming = control
                .accept(StreamProtocol::new(wire::PROTOCOL_V1))
                .unwrap();
            tokio::spawn(async move {
                let mut first = true;
                while let Some((_, mut s)) = incoming.next().await {
                    let manifest = manifest.clone();
                    let blocks = blocks.clone();
                    let refuse = mode == Mode::BehindThenHonest && std::mem::take(&mut first);
                    if mode == Mode::DropsFirstThenHonest && std::mem::take(&mut first) {
                        drop(s);
                        continue;
                    }
                    tokio::spawn(async move {
                        let m = harpbridge::content::Manifest::decode(&manifest).unwrap();
                        let n = m.blocks.len() as u32;
                        let mut answered = false;
                        while let Ok(Some(ask)) = wire::read_ask(&mut s).await {
                            if answered && mode == Mode::Silent {
                                continue;
                            }
                            answered = true;
                            if refuse {
                                let no = Answer::Refused(Refusal::NotAMember);
                                let _ = wire::write_answer(&mut s, &no).await;
                                let _ = libp2p::futures::AsyncWriteExt::close(&mut s).await;
                                break;
                            }
                            let answer = match ask {
                                Ask::Want { send_manifest, .. } => {
                                    let mut have = Bits::new(n);
                                    (0..n).for_each(|i| have.set(i));
                                    Answer::Have(Have {
                                        manifest: send_manifest.then(|| manifest.clone()),
                                        have,
                                        fetching: Bits::new(n),
                                        starting: false,
                                    })
                                }
                                Ask::Get { index } => {
                                    let b = m.blocks[index as usize];
                                    let bytes = match &blocks {
                                        Some(store) => store.read_block(&b.hash).unwrap(),
                                        None => vec![0xAB; b.size as usize],
                                    };
                                    Answer::Block { index, bytes }
                                }
                                // Not in version 1: a real version 1 provider closes the
                                // stream on the unknown tag.
                                Ask::Cancel { .. } => break,
                            };
                            if wire::write_answer(&mut s, &answer).await.is_err() {
                                break;
                            }
                            let _ = libp2p::futures::AsyncWriteExt::flush(&mut s).await;
                        }
                    });
                }
            });
        }
        swarm.dial(target).unwrap();
        let peer = *swarm.local_peer_id();
        let task = tokio::spawn(async move {
            loop {
                swarm.select_next_some().await;
            }
        });
        RawPeer {
            peer,
            control,
            task,
        }
    }
}

impl Drop for RawPeer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A provider that serves corrupt blocks is excluded, the fetch finishes from A, and the
/// provider is disconnected; when it comes back it is not asked for the library's next
/// version (it stays shunned for [`harpbridge::p2p::blocks::shun::SHUN_FOR`]).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_that_serves_corrupt_blocks_is_disconnected_and_shunned() {
    let hostile = DeviceIdentity::from_secret([66; 32]);
    // Larger than A's window, so the hostile peer's Have arrives while blocks are left.
    let size = 48 * MIB;
    let (a, b, lib, content, hash) =
        a_file_for_b(loopback(), &[hostile.device_key()], 3, size).await;
    let manifest = a.manifest(content);
    // The hostile member dials B; B learns it is a member from A's chain.
    let h = RawPeer::start(
        &hostile,
        b.addr(false),
        Some((manifest, Mode::Corrupt)),
        None,
    )
    .await;
    b.connected_to(&[a.node.peer_id(), h.peer]).await;

    let report = b.fetch_checked(lib, content, hash).await;
    eprintln!("excluded {:?}, from {:?}", report.excluded, report.from);
    assert_eq!(report.excluded.len(), 1);
    assert_eq!(report.excluded[0].0, h.peer);
    assert!(report.excluded[0].1.contains("do not match"));
    assert!(report.from.iter().all(|(p, _)| *p == a.node.peer_id()));
    // The garbage crossed the wire (and is counted) but none of it was stored.
    assert!(b
        .node
        .traffic()
        .per_peer
        .iter()
        .any(|p| p.peer == h.peer && p.bytes_in > 0));
    assert!(b.content.verify_all().unwrap().is_empty());

    // B hangs up on it.
    let hostile_peer = h.peer;
    let bn = b.node.clone();
    eventually("B disconnects the hostile provider", move || {
        let bn = bn.clone();
        async move {
            let peers = bn.peers().await.unwrap();
            !peers.iter().any(|p| p.peer == hostile_peer && p.connected)
        }
    })
    .await;
    drop(h);

    // It comes back, claiming the library's next version too: B is connected to it again,
    // but asks only A for that version's blocks.
    let got_before = received_from(&b, hostile_peer);
    let (content2, hash2) = a.put_file(lib, "g.bin", 4, 8 * MIB).await;
    converge(&[&a, &b], lib).await;
    let h2 = RawPeer::start(
        &hostile,
        b.addr(false),
        Some((a.manifest(content2), Mode::Corrupt)),
        None,
    )
    .await;
    b.connected_to(&[a.node.peer_id(), h2.peer]).await;
    let report = b.fetch_checked(lib, content2, hash2).await;
    assert!(report.excluded.is_empty(), "{report:?}");
    assert_eq!(report.from, vec![(a.node.peer_id(), 8 * MIB)]);
    assert_eq!(received_from(&b, hostile_peer), got_before);
    drop(h2);
    shutdown([a, b]).await;
}

/// Block bytes `node` has received from `peer`.
fn received_from(node: &TestNode, peer: PeerId) -> u64 {
    node.node
        .traffic()
        .per_peer
        .iter()
        .find(|p| p.peer == peer)
        .map_or(0, |p| p.bytes_in)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_that_stops_answering_is_dropped() {
    let silent = DeviceIdentity::from_secret([67; 32]);
    let stalls_quickly = P2pConfig {
        fetch_stall_timeout: Duration::from_secs(4),
        ..loopback()
    };
    // A sends at most 2 MiB/s (its upload limit: it counts B as WAN, while B counts A as
    // LAN), so its own share of the file (at least 16 MiB, what does not fit the silent
    // peer's window) keeps it busy for 8 s: it has nothing in flight, and so could be asked
    // for the silent peer's blocks by the endgame, only long after the 2 s after which the
    // silent peer is cut off. Larger than A's window, so the silent peer's Have arrives
    // while blocks are left.
    let slow_a = P2pConfig {
        wan_limit_up: Some(2 * MIB),
        ..swarm::loopback()
    };
    let size = 32 * MIB;
    let (a, b, lib, content, hash) =
        a_file_for_b_from(slow_a, stalls_quickly, &[silent.device_key()], 7, size).await;
    let manifest = a.manifest(content);
    let s = RawPeer::start(&silent, b.addr(false), Some((manifest, Mode::Silent)), None).await;
    b.connected_to(&[a.node.peer_id(), s.peer]).await;
    let report = b.fetch_checked(lib, content, hash).await;
    eprintln!("excluded {:?} after {:?}", report.excluded, report.elapsed);
    assert_eq!(report.from, vec![(a.node.peer_id(), size)]);
    // The silent peer got requests (it ranks like A) and was dropped for not answering.
    assert_eq!(report.excluded.len(), 1);
    assert_eq!(report.excluded[0].0, s.peer);
    assert_eq!(report.endgame_asked, 0, "{report:?}");
    drop(s);
    shutdown([a, b]).await;
}

/// The endgame: a provider that is slow (not stalled: it keeps delivering, at its upload
/// limit) holds the last blocks of a fetch; A, idle once everything else is done, is asked
/// for them too and its copies win.
///
/// S sends at most 128 KiB/s (an upload limit towards B, whom it counts as WAN; B counts S
/// as LAN, so S ranks like A and is asked blocks up to its window at the start). Every
/// block S holds in flight costs it 8 s per MiB, so without the endgame the fetch would
/// outlast the test's deadline unless S was asked at most a few blocks; the counters show
/// what happened either way: blocks asked of S came from A, and S's copies were cancelled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_endgame_finishes_a_fetch_whose_last_blocks_sit_at_a_slow_provider() {
    let slow_s = P2pConfig {
        wan_limit_up: Some(128 * 1024),
        ..swarm::loopback()
    };
    let s = TestNode::start(slow_s).await;
    let size = 32 * MIB;
    let (a, b, lib, content, hash) = a_file_for_b(loopback(), &[s.id.device_key()], 11, size).await;
    // S holds the same bytes (same seed, same version) without any transfer.
    assert_eq!(ingest(&s.content, lib, 11, size).await.0, content.into());
    s.node.dial(a.addr(false)).await.unwrap();
    b.node.dial(s.addr(false)).await.unwrap();
    converge(&[&a, &b, &s], lib).await;
    b.on_lan(&[a.node.peer_id(), s.node.peer_id()]).await;

    let report = b.fetch_checked(lib, content, hash).await;
    let (pa, ps) = (a.node.peer_id(), s.node.peer_id());
    let from = |p: PeerId| report.from.iter().find(|f| f.0 == p).map_or(0, |f| f.1);
    let s_sent = s.node.traffic().wan_out;
    eprintln!(
        "in {:?}: {} B from A, {} B from S (S sent {s_sent} B); endgame asked {} blocks \
         again, {} came from the second provider first, {} B of late copies dropped, {} \
         losing copies cancelled",
        report.elapsed,
        from(pa),
        from(ps),
        report.endgame_asked,
        report.endgame_won,
        report.endgame_dropped,
        report.endgame_cancelled
    );
    assert_eq!(from(pa) + from(ps), size, "{report:?}");
    // Blocks asked of S were asked of A too, and A's copies came first.
    assert!(report.endgame_won >= 1, "{report:?}");
    assert!(report.endgame_asked >= report.endgame_won, "{report:?}");
    // Every losing copy was cancelled (S is still in the fetch). Whether S sees the
    // `Cancel` before the fetch ends and closes its streams is a race; what S then does is
    // `a_cancelled_get_is_answered_cancelled_in_its_turn`.
    assert!(report.endgame_cancelled >= report.endgame_won, "{report:?}");
    assert!(
        report.endgame_cancelled <= report.endgame_asked,
        "{report:?}"
    );
    // S was slow, not silent: it was never cut off; the endgame finished the fetch.
    assert!(report.excluded.is_empty(), "{report:?}");
    // What S sent before the fetch ended is all B took from it, or was dropped as late.
    assert!(from(ps) + report.endgame_dropped <= s_sent, "{report:?}");
    shutdown([a, b, s]).await;
}

/// B pulls from S, a slow LAN provider (its upload limit), while the cloud, a WAN provider
/// holding every block, has nothing in flight: the endgame does not ask the cloud for what
/// S holds and still sends, so nothing crosses the WAN.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_endgame_does_not_turn_a_lan_pull_to_the_wan() {
    let cloud = TestNode::start(loopback()).await;
    let s = TestNode::start(P2pConfig {
        wan_limit_up: Some(2 * MIB),
        ..swarm::loopback()
    })
    .await;
    let b = TestNode::start(P2pConfig {
        peers: vec![cloud.addr(false)],
        ..loopback()
    })
    .await;
    let (lib, _) = cloud
        .chain
        .create_library(cloud.id.signing_key(), "cloud")
        .unwrap();
    cloud.add(&lib, b.id.device_key(), "member");
    cloud.add(&lib, s.id.device_key(), "member");
    // 6 MiB at S's 2 MiB/s: 3 s, a block every half second (never quiet long enough to
    // count as stalled).
    let size = 6 * MIB;
    let (content, hash) = cloud.put_file(lib, "f.bin", 12, size).await;
    assert_eq!(ingest(&s.content, lib, 12, size).await.0, content.into());
    s.node.dial(cloud.addr(false)).await.unwrap();
    b.node.dial(s.addr(false)).await.unwrap();
    converge(&[&cloud, &b, &s], lib).await;
    b.connected_to(&[cloud.node.peer_id(), s.node.peer_id()])
        .await;
    b.on_lan(&[s.node.peer_id()]).await;
    assert!(b
        .node
        .peers()
        .await
        .unwrap()
        .iter()
        .any(|p| p.peer == cloud.node.peer_id() && !p.lan));

    let report = b.fetch_checked(lib, content, hash).await;
    eprintln!(
        "from {:?} in {:?}; {:?}",
        report.from,
        report.elapsed,
        b.node.traffic()
    );
    assert_eq!(report.from, vec![(s.node.peer_id(), size)]);
    assert_eq!(report.endgame_asked, 0, "{report:?}");
    assert_eq!(b.node.traffic().wan_in, 0);
    shutdown([cloud, b, s]).await;
}

/// A LAN provider that claims every block and then answers nothing holds the whole fetch;
/// once it has been quiet for 2 s the endgame may ask the WAN (the cloud) for its blocks, so
/// the fetch finishes long before the quiet provider would be cut off (half the 30 s stall
/// timeout).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_endgame_turns_to_the_wan_once_the_lan_provider_went_quiet() {
    let cloud = TestNode::start(loopback()).await;
    let b = TestNode::start(P2pConfig {
        peers: vec![cloud.addr(false)],
        ..loopback()
    })
    .await;
    let quiet = DeviceIdentity::from_secret([70; 32]);
    let (lib, _) = cloud
        .chain
        .create_library(cloud.id.signing_key(), "cloud")
        .unwrap();
    cloud.add(&lib, b.id.device_key(), "member");
    cloud.add(&lib, quiet.device_key(), "member");
    let size = 4 * MIB;
    let (content, hash) = cloud.put_file(lib, "f.bin", 13, size).await;
    converge(&[&cloud, &b], lib).await;
    let q = RawPeer::start(
        &quiet,
        b.addr(false),
        Some((cloud.manifest(content), Mode::Silent)),
        None,
    )
    .await;
    b.connected_to(&[cloud.node.peer_id(), q.peer]).await;
    b.on_lan(&[q.peer]).await;

    let report = b.fetch_checked(lib, content, hash).await;
    eprintln!("from {:?} in {:?}: {report:?}", report.from, report.elapsed);
    // Every block was asked of the quiet LAN peer first (it held them all), and every one
    // came from the cloud through the endgame; the quiet peer was not cut off.
    assert_eq!(report.from, vec![(cloud.node.peer_id(), size)]);
    assert_eq!(report.endgame_won, report.blocks_fetched, "{report:?}");
    assert!(report.excluded.is_empty(), "{report:?}");
    drop(q);
    shutdown([cloud, b]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_member_gets_nothing() {
    let a = TestNode::start(loopback()).await;
    let b = TestNode::start(loopback()).await;
    // Library X: A and B. Library Y: A alone, with a file.
    let (x, _) = a.chain.create_library(a.id.signing_key(), "a").unwrap();
    a.add(&x, b.id.device_key(), "member");
    let (y, _) = a.chain.create_library(a.id.signing_key(), "a").unwrap();
    let (secret, _) = a.put_file(y, "secret.bin", 4, 4 * MIB).await;
    b.node.dial(a.addr(false)).await.unwrap();
    converge(&[&a, &b], x).await;
    b.connected_to(&[a.node.peer_id()]).await;

    // B is a member of X, but X's chain does not reference Y's file: A refuses.
    let err = bounded("B's fetch through X", b.node.fetch_content(x, secret))
        .await
        .unwrap_err();
    eprintln!("B through X: {err}");
    // B is not a member of Y (and does not hold it): nobody is even asked.
    assert!(bounded("B's fetch of Y", b.node.fetch_content(y, secret))
        .await
        .is_err());
    assert_eq!(b.content.manifest_bytes(&secret.into()).unwrap(), None);
    assert_eq!(b.content.stats().unwrap().blocks, 0);
    assert_eq!(a.node.traffic().lan_out + a.node.traffic().wan_out, 0);

    // A stranger speaking the protocol itself: refused, and a Get without a granted Want
    // ends the stream.
    let stranger = DeviceIdentity::from_secret([77; 32]);
    let s = RawPeer::start(&stranger, a.addr(false), None, None).await;
    let mut st = s.open(a.node.peer_id(), wire::PROTOCOL).await;
    for (library, content) in [(y, secret), (x, secret)] {
        wire::write_ask(
            &mut st,
            &Ask::Want {
                library,
                content,
                send_manifest: true,
            },
        )
        .await
        .unwrap();
        let answer = bounded(
            "A's answer",
            wire::read_answer(&mut st, wire::MAX_HAVE_BYTES),
        )
        .await
        .unwrap();
        assert_eq!(answer, Some(Answer::Refused(Refusal::NotAMember)));
        st = s.open(a.node.peer_id(), wire::PROTOCOL).await;
    }
    wire::write_ask(&mut st, &Ask::Get { index: 0 })
        .await
        .unwrap();
    let r = bounded(
        "A's answer",
        wire::read_answer(&mut st, wire::MAX_BLOCK_BYTES),
    )
    .await;
    assert!(!matches!(r, Ok(Some(Answer::Block { .. }))), "{r:?}");
    assert_eq!(a.node.traffic().lan_out + a.node.traffic().wan_out, 0);
    s.task.abort();
    shutdown([a, b]).await;
}

/// `/harp/blocks/2`'s `Cancel`, spoken by hand to a real node: `Get`s queued behind a window
/// the fetcher does not read are answered `Cancelled` in their turn once cancelled, the rest
/// still come in request order, and the stream goes on. On a `/harp/blocks/1` stream a
/// `Cancel` ends the stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_get_is_answered_cancelled_in_its_turn() {
    let member = DeviceIdentity::from_secret([88; 32]);
    let (a, b, lib, content, _) =
        a_file_for_b(loopback(), &[member.device_key()], 12, 16 * MIB).await;
    let m = RawPeer::start(&member, a.addr(false), None, None).await;
    let want = Ask::Want {
        library: lib,
        content,
        send_manifest: true,
    };
    let mut st = m.open(a.node.peer_id(), wire::PROTOCOL).await;
    send(&mut st, &[want]).await;
    let have = answer(&mut st, wire::MAX_HAVE_BYTES).await;
    let Ok(Some(Answer::Have(have))) = have else {
        panic!("not a Have: {have:?}");
    };
    let manifest = harpbridge::content::Manifest::decode(&have.manifest.unwrap()).unwrap();
    let n = manifest.blocks.len() as u32;
    assert!(n >= 16, "{n} blocks");
    // Every block asked, nothing read: A can send no more than the stream's flow-control
    // window (256 KiB) before it waits, so the last blocks are still queued when the
    // cancels arrive. Cancelled: the last one and the third from last, and one that is not
    // asked (ignored).
    let cancelled = [n - 1, n - 3];
    let gets = (0..n).map(|index| Ask::Get { index });
    let cancels = cancelled
        .into_iter()
        .chain([n + 5])
        .map(|index| Ask::Cancel { index });
    send(&mut st, &gets.chain(cancels).collect::<Vec<_>>()).await;
    let mut sent = 0u64;
    for (index, b) in (0..n).zip(&manifest.blocks) {
        let got = answer(&mut st, wire::MAX_BLOCK_BYTES).await.unwrap();
        if cancelled.contains(&index) {
            assert_eq!(got, Some(Answer::Cancelled { index }));
        } else {
            let Some(Answer::Block { index: i, bytes }) = got else {
                panic!("block {index}: {got:?}");
            };
            assert_eq!(i, index);
            assert_eq!(harpbridge::content::BlockHash::of(&bytes), b.hash);
            sent += bytes.len() as u64;
        }
    }
    // A cancelled block can be asked again.
    send(&mut st, &[Ask::Get { index: n - 1 }]).await;
    let again = answer(&mut st, wire::MAX_BLOCK_BYTES).await;
    assert!(
        matches!(&again, Ok(Some(Answer::Block { index, .. })) if *index == n - 1),
        "{again:?}"
    );
    // The cancelled blocks' bytes never crossed: A counts only what it sent.
    let last = manifest.blocks[(n - 1) as usize].size as u64;
    assert_eq!(
        a.node.traffic().lan_out + a.node.traffic().wan_out,
        sent + last
    );

    // Version 1 is still served, and has no Cancel.
    let mut v1 = m.open(a.node.peer_id(), wire::PROTOCOL_V1).await;
    send(&mut v1, &[want, Ask::Get { index: 0 }]).await;
    let got = answer(&mut v1, wire::MAX_HAVE_BYTES).await;
    assert!(matches!(got, Ok(Some(Answer::Have(_)))), "{got:?}");
    let got = answer(&mut v1, wire::MAX_BLOCK_BYTES).await;
    assert!(
        matches!(got, Ok(Some(Answer::Block { index: 0, .. }))),
        "{got:?}"
    );
    send(&mut v1, &[Ask::Cancel { index: 0 }]).await;
    let got = answer(&mut v1, wire::MAX_BLOCK_BYTES).await;
    assert!(matches!(got, Ok(None) | Err(_)), "{got:?}");
    m.task.abort();
    shutdown([a, b]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offices_pull_over_the_lan_and_split_the_wan() {
    // The cloud; two offices that dial it as a configured (WAN) peer and each other by hand
    // (LAN by RTT here; by mDNS in the lab).
    let cloud = TestNode::start(loopback()).await;
    let office = || {
        let mut c = loopback();
        c.peers = vec![cloud.addr(false)];
        TestNode::start(c)
    };
    let oa = office().await;
    let ob = office().await;
    let (lib, _) = cloud
        .chain
        .create_library(cloud.id.signing_key(), "cloud")
        .unwrap();
    cloud.add(&lib, oa.id.device_key(), "member");
    cloud.add(&lib, ob.id.device_key(), "member");
    // The offices may have connected before the library existed: announce it.
    cloud.node.library_changed(lib).await.unwrap();
    ob.node.dial(oa.addr(false)).await.unwrap();
    converge(&[&cloud, &oa, &ob], lib).await;
    oa.connected_to(&[cloud.node.peer_id(), ob.node.peer_id()])
        .await;
    ob.connected_to(&[cloud.node.peer_id(), oa.node.peer_id()])
        .await;
    oa.on_lan(&[ob.node.peer_id()]).await;
    ob.on_lan(&[oa.node.peer_id()]).await;
    let pa = oa.node.peers().await.unwrap();
    assert!(pa.iter().any(|p| p.peer == cloud.node.peer_id() && !p.lan));
    assert!(pa.iter().any(|p| p.peer == ob.node.peer_id() && p.lan));

    // One file: office A over the WAN, then office B from A over the LAN.
    let size = 64 * MIB;
    let (f1, h1) = cloud.put_file(lib, "one.bin", 5, size).await;
    converge(&[&cloud, &oa, &ob], lib).await;
    let ra = bounded("A's fetch", oa.node.fetch_content(lib, f1))
        .await
        .unwrap();
    let wan_b_before = ob.node.traffic().wan_in;
    let rb = bounded("B's fetch", ob.node.fetch_content(lib, f1))
        .await
        .unwrap();
    let wan_b = ob.node.traffic().wan_in - wan_b_before;
    eprintln!(
        "office A (WAN) {:?}, office B (LAN) {:?}, B's WAN bytes {wan_b}",
        ra.elapsed, rb.elapsed
    );
    assert_eq!(stored_hash(&ob.content, f1).await, h1);
    assert_eq!(oa.node.traffic().wan_in, size);
    assert!(wan_b * 100 < size, "B pulled {wan_b} bytes over the WAN");
    assert_eq!(rb.from, vec![(oa.node.peer_id(), size)]);

    // A second file, fetched by both offices at once: they split the WAN work.
    let size2 = 128 * MIB;
    let (f2, h2) = cloud.put_file(lib, "two.bin", 6, size2).await;
    converge(&[&cloud, &oa, &ob], lib).await;
    let (wa, wb) = (oa.node.traffic().wan_in, ob.node.traffic().wan_in);
    let (ra, rb) = bounded("both fetches", async {
        tokio::join!(
            oa.node.fetch_content(lib, f2),
            ob.node.fetch_content(lib, f2)
        )
    })
    .await;
    let (ra, rb) = (ra.unwrap(), rb.unwrap());
    let wan = (oa.node.traffic().wan_in - wa) + (ob.node.traffic().wan_in - wb);
    eprintln!(
        "together: WAN {:.3} x the file; A from {:?}, B from {:?}",
        wan as f64 / size2 as f64,
        ra.from,
        rb.from
    );
    assert_eq!(stored_hash(&oa.content, f2).await, h2);
    assert_eq!(stored_hash(&ob.content, f2).await, h2);
    assert!(
        wan as f64 <= 1.1 * size2 as f64,
        "{wan} WAN bytes for a {size2}-byte file"
    );
    shutdown([cloud, oa, ob]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lan_member_that_refuses_at_first_is_asked_again() {
    // The offices learn of a new version milliseconds apart, so the first `Want` can reach
    // a LAN member whose chain does not reference it yet: it refuses. Taken as final, that
    // refusal sent the whole file over the WAN while the LAN peer held or fetched it.
    let cloud = TestNode::start(loopback()).await;
    let office = TestNode::start(P2pConfig {
        peers: vec![cloud.addr(false)],
        ..loopback()
    })
    .await;
    let neighbour = DeviceIdentity::from_secret([68; 32]);
    let (lib, _) = cloud
        .chain
        .create_library(cloud.id.signing_key(), "cloud")
        .unwrap();
    cloud.add(&lib, office.id.device_key(), "member");
    cloud.add(&lib, neighbour.device_key(), "member");
    cloud.node.library_changed(lib).await.unwrap();
    let size = 8 * MIB;
    let (content, hash) = cloud.put_file(lib, "f.bin", 9, size).await;
    let manifest = cloud.manifest(content);
    converge(&[&cloud, &office], lib).await;
    // The neighbour holds the blocks (served from the cloud's store: same bytes) but
    // refuses its first stream.
    let n = RawPeer::start(
        &neighbour,
        office.addr(false),
        Some((manifest, Mode::BehindThenHonest)),
        Some(cloud.content.clone()),
    )
    .await;
    office.connected_to(&[cloud.node.peer_id(), n.peer]).await;
    office.on_lan(&[n.peer]).await;
    let report = office.fetch_checked(lib, content, hash).await;
    eprintln!("from {:?} in {:?}", report.from, report.elapsed);
    // Every block from the LAN member; none over the WAN.
    assert_eq!(report.from, vec![(n.peer, size)]);
    assert_eq!(office.node.traffic().wan_in, 0);
    assert!(report.excluded.is_empty(), "{:?}", report.excluded);
    drop(n);
    shutdown([cloud, office]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_the_provider_dropped_unanswered_is_opened_again() {
    // Two fetchers opening streams to one provider at the same moment: libp2p-stream keeps
    // one inbound stream waiting and drops the other. Taken as "the provider went away",
    // that failed the fetch when the provider was the only one.
    let only = DeviceIdentity::from_secret([69; 32]);
    let size = 8 * MIB;
    let (a, b, lib, content, hash) = a_file_for_b(loopback(), &[only.device_key()], 10, size).await;
    let manifest = a.manifest(content);
    // A goes away; the only provider left serves A's blocks but drops its first stream.
    a.node.shutdown().await;
    b.peers_are("A to be gone", &[a.node.peer_id()], |p| !p.connected)
        .await;
    let r = RawPeer::start(
        &only,
        b.addr(false),
        Some((manifest, Mode::DropsFirstThenHonest)),
        Some(a.content.clone()),
    )
    .await;
    b.connected_to(&[r.peer]).await;
    let report = b.fetch_checked(lib, content, hash).await;
    assert_eq!(report.from, vec![(r.peer, size)]);
    assert!(report.excluded.is_empty(), "{:?}", report.excluded);
    drop(r);
    shutdown([b]).await;
}

/// `--wan-limit-down`: B's download from a WAN provider keeps to the limit, and a LAN
/// provider is not limited. The limit is checked as a floor on the time taken (the bytes
/// cannot arrive faster than the limit allows, however busy the machine), never a ceiling.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wan_download_keeps_to_the_wan_limit_and_a_lan_one_is_not_limited() {
    const LIMIT: u64 = 2 * MIB;
    const SIZE: u64 = 8 * MIB;
    // Loopback peers dialled by hand are WAN with this config (no LAN ping threshold).
    let wan = P2pConfig {
        wan_limit_down: Some(LIMIT),
        ..swarm::loopback()
    };
    let (a, b, lib, content, hash) = a_file_for_b(wan, &[], 43, SIZE).await;
    let started = Instant::now();
    let report = bounded("the WAN fetch", b.node.fetch_content(lib, content))
        .await
        .unwrap();
    let took = started.elapsed();
    assert_eq!(stored_hash(&b.content, content).await, hash);
    assert_eq!(report.bytes_fetched, SIZE);
    assert!(b.node.traffic().wan_in >= SIZE, "{:?}", b.node.traffic());
    // The bucket starts empty and holds at most BURST of credit.
    let floor = (SIZE as f64 - harpbridge::p2p::pace::BURST) / LIMIT as f64;
    let rate = SIZE as f64 / took.as_secs_f64();
    eprintln!(
        "WAN fetch at {:.2} MiB/s against a limit of {} MiB/s",
        rate / MIB as f64,
        LIMIT / MIB
    );
    assert!(
        took.as_secs_f64() >= floor,
        "{SIZE} bytes in {took:?}: faster than {LIMIT} bytes/s"
    );
    // A's window was sized from its measured bandwidth × delay (2 MiB/s and about half a
    // second from a Get to its block stored: some 2 MiB), not the 4 MiB that slow start
    // alone reaches after 8 MiB.
    let window = report.windows.iter().find(|w| w.0 == a.node.peer_id());
    eprintln!("A's window at the end: {window:?}");
    let window = window.expect("A in the report").1;
    assert!(
        window >= harpbridge::p2p::blocks::rank::WINDOW_FLOOR,
        "{window}"
    );
    assert!(window < 4 * MIB, "{window}");
    shutdown([a, b]).await;

    // The same limit with the provider on the LAN: the limit does not apply.
    // (64 KiB/s would take over two minutes for the file, past the fetch's deadline.)
    let lan = P2pConfig {
        wan_limit_down: Some(64 * 1024),
        ..loopback()
    };
    let (a, b, lib, content, hash) = a_file_for_b(lan, &[], 44, SIZE).await;
    let (bn, pa) = (b.node.clone(), a.node.peer_id());
    eventually("B to class A as LAN", move || {
        let bn = bn.clone();
        async move {
            bn.peers()
                .await
                .is_ok_and(|ps| ps.iter().any(|p| p.peer == pa && p.lan))
        }
    })
    .await;
    let report = bounded("the LAN fetch", b.node.fetch_content(lib, content))
        .await
        .unwrap();
    assert_eq!(stored_hash(&b.content, content).await, hash);
    assert_eq!(report.bytes_fetched, SIZE);
    // A LAN window stays as configured (see `Provider::window` in p2p/blocks/fetch.rs).
    assert_eq!(report.windows, vec![(a.node.peer_id(), 16 * MIB)]);
    assert!(b.node.traffic().lan_in >= SIZE, "{:?}", b.node.traffic());
    shutdown([a, b]).await;
}

/// A library's own WAN limit, set while the node runs (as the panel does): that library's
/// download keeps to it, another library's does not (a limit of 64 KiB/s would take two
/// minutes for its file, past the fetch's deadline). Checked as a floor on the time taken.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_library_limit_set_while_running_holds_for_that_library_only() {
    use harpbridge::p2p::limits::{Rates, WanLimits};
    const LIMIT: u64 = 2 * MIB;
    const SIZE: u64 = 8 * MIB;
    let (a, b, lib, content, hash) = a_file_for_b(swarm::loopback(), &[], 45, SIZE).await;
    let (other, _) = a.chain.create_library(a.id.signing_key(), "other").unwrap();
    a.add(&other, b.id.device_key(), "member");
    let (other_content, other_hash) = a.put_file(other, "o.bin", 46, SIZE).await;
    converge(&[&a, &b], other).await;

    let limited = |down: u64| {
        let mut l = WanLimits::default();
        l.libraries.insert(
            lib.to_hex(),
            Rates {
                up: None,
                down: Some(down),
            },
        );
        l
    };
    b.node.set_wan_limits(limited(64 * 1024)).unwrap();
    assert_eq!(b.node.wan_limits(), limited(64 * 1024));
    let report = bounded(
        "the other library's fetch",
        b.node.fetch_content(other, other_content),
    )
    .await
    .unwrap();
    assert_eq!(report.bytes_fetched, SIZE);
    assert_eq!(stored_hash(&b.content, other_content).await, other_hash);

    b.node.set_wan_limits(limited(LIMIT)).unwrap();
    let started = Instant::now();
    let report = bounded(
        "the limited library's fetch",
        b.node.fetch_content(lib, content),
    )
    .await
    .unwrap();
    let took = started.elapsed();
    assert_eq!(report.bytes_fetched, SIZE);
    assert_eq!(stored_hash(&b.content, content).await, hash);
    let floor = (SIZE as f64 - harpbridge::p2p::pace::BURST) / LIMIT as f64;
    eprintln!(
        "limited library at {:.2} MiB/s against {} MiB/s",
        SIZE as f64 / took.as_secs_f64() / MIB as f64,
        LIMIT / MIB
    );
    assert!(took.as_secs_f64() >= floor, "{SIZE} bytes in {took:?}");

    // A rate of zero is refused, not taken as "stop everything".
    assert!(b
        .node
        .set_wan_limits(WanLimits::global(Some(0), None))
        .is_err());
    shutdown([a, b]).await;
}
