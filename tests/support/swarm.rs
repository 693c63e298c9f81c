//! In-process swarm nodes on loopback, for the tests and benches that run real swarms
//! (`p2p_sync`, `p2p_blocks`, `p2p_mdns`, `serve_swarm`, `serve_writeback`, bench/transfer,
//! bench/writeback).
//!
//! A [`TestNode`] is a whole device: its own data directory (a temporary one), identity,
//! database, chain and content store, and a [`Node`] over them listening where its
//! [`P2pConfig`] says ([`loopback`]: TCP and QUIC on 127.0.0.1, mDNS off, since multicast on
//! loopback is not reliable in CI). Peers find each other by the multiaddrs [`TestNode::addr`]
//! gives, dialled by hand or listed in `peers`.
//!
//! Every wait here is bounded by the caller's `wait` ([`bounded`], [`until`], [`eventually`],
//! [`converge`]): a test fails with what it was waiting for, never hangs. The content helper
//! [`seeded`] makes the same bytes from the same seed in any store, so that two nodes can
//! hold one version without a transfer.
//!
//! Each test or bench adds what only it needs in its own `impl TestNode` block.
//!
//! Included on its own by `#[path]` from the tests and benches that need none of the
//! Nextcloud double, and as `support::swarm` by the rest.
#![allow(dead_code)]

use std::future::Future;
use std::time::Duration;

use harpbridge::chain::{ChainStore, DeviceKey, LibraryId, Op};
use harpbridge::content::{ContentStore, StoreOptions};
use harpbridge::identity::DeviceIdentity;
use harpbridge::p2p::{Node, NodeHandle, P2pConfig};
use libp2p::multiaddr::Protocol;
use libp2p::Multiaddr;

/// TCP on loopback, any port.
pub const TCP: &str = "/ip4/127.0.0.1/tcp/0";
/// QUIC on loopback, any port.
pub const QUIC: &str = "/ip4/127.0.0.1/udp/0/quic-v1";
/// How long a node waits for the database a just-stopped node over the same directory may
/// still hold.
const REOPEN_WAIT: Duration = Duration::from_secs(15);

/// Listening on `addrs` only, with mDNS off; the rest is the default.
pub fn listening_on(addrs: &[&str]) -> P2pConfig {
    P2pConfig {
        listen: addrs.iter().map(|a| a.parse().unwrap()).collect(),
        mdns: false,
        ..P2pConfig::default()
    }
}

/// TCP and QUIC on loopback, mDNS off.
pub fn loopback() -> P2pConfig {
    listening_on(&[TCP, QUIC])
}

/// A device with its own data directory and a running node.
pub struct TestNode {
    /// Its data directory (identity and database), removed when the node is dropped.
    pub dir: tempfile::TempDir,
    pub id: DeviceIdentity,
    pub chain: ChainStore,
    pub content: ContentStore,
    pub node: NodeHandle,
}

impl TestNode {
    /// A new device in a fresh temporary directory, its node started with `config`.
    pub async fn start(config: P2pConfig) -> TestNode {
        TestNode::start_in(tempfile::tempdir().unwrap(), config).await
    }

    /// An office: a new device listening on loopback TCP only, which dials `peers` (serve)
    /// itself and keeps dialling them.
    pub async fn dialling(peers: Vec<Multiaddr>) -> TestNode {
        TestNode::start(P2pConfig {
            peers,
            ..listening_on(&[TCP])
        })
        .await
    }

    /// A node over `dir` (its identity and database, made if new): a restart when `dir` held
    /// a node before.
    pub async fn start_in(dir: tempfile::TempDir, config: P2pConfig) -> TestNode {
        // HB_TEST_LOG=<filter> shows the nodes' logs (for a look at a failing or slow test).
        if let Ok(filter) = std::env::var("HB_TEST_LOG") {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_test_writer()
                .try_init();
        }
        let (id, _) = DeviceIdentity::load_or_create(dir.path()).unwrap();
        // A just-stopped node's last blocking task may still hold the database for a moment.
        let database = bounded(REOPEN_WAIT, "the database to open", async {
            loop {
                match harpbridge::db::open(dir.path()) {
                    Ok(d) => break d,
                    Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                }
            }
        })
        .await;
        let chain = ChainStore::open(database.clone()).unwrap();
        let content = ContentStore::open(database, dir.path(), StoreOptions::default()).unwrap();
        let node = Node::start(config, &id, chain.clone(), content.clone())
            .await
            .unwrap();
        assert_eq!(node.peer_id(), id.peer_id());
        TestNode {
            dir,
            id,
            chain,
            content,
            node,
        }
    }

    /// Appends `ops` to `lib`, signed by this device, and announces the new heads.
    pub async fn publish(&self, lib: LibraryId, ops: Vec<Op>) {
        self.chain
            .append_batch(&lib, self.id.signing_key(), ops)
            .unwrap();
        self.node.library_changed(lib).await.unwrap();
    }

    /// The node's address over TCP or QUIC, ending in `/p2p/<id>`.
    pub fn addr(&self, quic: bool) -> Multiaddr {
        let a = self
            .node
            .listen_addrs()
            .into_iter()
            .find(|a| a.iter().any(|p| matches!(p, Protocol::QuicV1)) == quic)
            .expect("a listen address of that kind");
        a.with(Protocol::P2p(self.node.peer_id()))
    }

    /// Appends `AddDevice` for `device` (named `name`) to `lib`, signed by this device.
    pub fn add(&self, lib: &LibraryId, device: DeviceKey, name: &str) {
        self.chain
            .append(
                lib,
                self.id.signing_key(),
                Op::AddDevice {
                    device,
                    name: name.into(),
                },
            )
            .unwrap();
    }
}

/// Shuts the nodes down, one after another.
pub async fn shutdown(nodes: impl IntoIterator<Item = TestNode>) {
    for n in nodes {
        n.node.shutdown().await;
    }
}

/// `f`'s output, failing the test after `wait`.
pub async fn bounded<T>(wait: Duration, what: &str, f: impl Future<Output = T>) -> T {
    tokio::time::timeout(wait, f)
        .await
        .unwrap_or_else(|_| panic!("timed out after {wait:?} waiting for {what}"))
}

/// Polls `check` every 50 ms until it returns `Some` (what it holds), failing the test after
/// `wait`.
pub async fn until<T, F, Fut>(wait: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    bounded(wait, what, async {
        loop {
            if let Some(t) = check().await {
                return t;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
}

/// Polls `check` every 20 ms until it holds, failing the test after `wait`.
pub async fn eventually<F, Fut>(wait: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + wait;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {wait:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits (up to `wait`) until every node holds the same, non-empty heads of `lib`.
pub async fn converge(wait: Duration, nodes: &[&TestNode], lib: LibraryId) {
    let chains: Vec<ChainStore> = nodes.iter().map(|n| n.chain.clone()).collect();
    eventually(wait, "the chains to converge", move || {
        let chains = chains.clone();
        async move {
            let first = chains[0].heads(&lib).unwrap_or_default();
            !first.is_empty()
                && chains
                    .iter()
                    .all(|c| c.heads(&lib).unwrap_or_default() == first)
        }
    })
    .await;
}

/// `size` bytes of a BLAKE3 XOF keyed by `seed`, handed to `sink` 1 MiB at a time: the same
/// seed gives the same bytes (and so the same version id) in any store.
pub fn seeded(seed: u8, size: u64, mut sink: impl FnMut(&[u8])) {
    const MIB: u64 = 1 << 20;
    let mut xof = blake3::Hasher::new_keyed(&[seed; 32]).finalize_xof();
    let mut buf = vec![0u8; MIB as usize];
    let mut left = size;
    while left > 0 {
        let n = left.min(MIB) as usize;
        xof.fill(&mut buf[..n]);
        sink(&buf[..n]);
        left -= n as u64;
    }
}
