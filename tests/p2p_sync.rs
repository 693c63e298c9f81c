//! Real swarms on loopback: nodes with their own data directories (identity + redb) sync a
//! library's chain over `/harp/sync/1`, and a node that is not a member gets nothing.
//!
//! Peers are dialled by explicit loopback multiaddrs (mDNS is off: multicast on loopback is
//! not reliable in CI). Every wait is bounded; the whole file runs in a few seconds.

#[path = "support/swarm.rs"]
mod swarm;

use std::time::Duration;

use harpbridge::chain::{ChainPath, EntryHash, LibraryId, Op};
use harpbridge::p2p::{NodeEvent, P2pConfig, Refusal};
use swarm::{bounded, loopback, TestNode};
use tokio::sync::broadcast;

const WAIT: Duration = Duration::from_secs(15);

/// What these tests do with a node's chain.
impl TestNode {
    fn heads(&self, lib: &LibraryId) -> Vec<EntryHash> {
        self.chain.heads(lib).unwrap_or_default()
    }

    fn append(&self, lib: &LibraryId, op: Op) {
        self.chain.append(lib, self.id.signing_key(), op).unwrap();
    }
}

fn mkdir(p: &str) -> Op {
    Op::Mkdir {
        path: ChainPath::new(p).unwrap(),
    }
}

/// Polls `check` until it holds, failing the test after [`WAIT`].
async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    swarm::eventually(WAIT, what, || std::future::ready(check())).await;
}

/// Waits for the first event `pick` accepts, failing after [`WAIT`].
async fn event<T>(
    rx: &mut broadcast::Receiver<NodeEvent>,
    what: &str,
    mut pick: impl FnMut(&NodeEvent) -> Option<T>,
) -> T {
    let wait = async {
        loop {
            match rx.recv().await {
                Ok(e) => {
                    if let Some(t) = pick(&e) {
                        return t;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(e) => panic!("event stream ended: {e}"),
            }
        }
    };
    bounded(WAIT, what, wait).await
}

fn converged(nodes: &[&TestNode], lib: &LibraryId) -> bool {
    let first = nodes[0].heads(lib);
    let len = nodes[0].chain.len(lib).unwrap_or(0);
    !first.is_empty()
        && nodes
            .iter()
            .all(|n| n.heads(lib) == first && n.chain.len(lib).unwrap_or(0) == len)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_members_converge_over_tcp_and_quic() {
    let a = TestNode::start(loopback()).await;
    let b = TestNode::start(loopback()).await;
    let c = TestNode::start(loopback()).await;

    // A makes the library and adds B and C. B and C start with nothing.
    let (lib, _) = a.chain.create_library(a.id.signing_key(), "a").unwrap();
    a.add(&lib, b.id.device_key(), "b");
    a.add(&lib, c.id.device_key(), "c");
    a.append(&lib, mkdir("from-a"));

    // A line: A —tcp— B —quic— C. C hears of A's entries only through B.
    b.node.dial(a.addr(false)).await.unwrap();
    c.node.dial(b.addr(true)).await.unwrap();
    eventually("B and C to pull A's library", || {
        converged(&[&a, &b, &c], &lib)
    })
    .await;
    assert_eq!(c.chain.len(&lib).unwrap(), 4);
    assert!(c.chain.is_member(&lib, &b.id.device_key()));

    // Concurrent appends at B and C make two heads everywhere.
    b.append(&lib, mkdir("from-b"));
    c.append(&lib, mkdir("from-c"));
    b.node.library_changed(lib).await.unwrap();
    c.node.library_changed(lib).await.unwrap();
    eventually("the concurrent appends to reach every node", || {
        converged(&[&a, &b, &c], &lib) && a.heads(&lib).len() == 2
    })
    .await;
    assert_eq!(a.chain.len(&lib).unwrap(), 6);

    // A merges them; the merge travels A → B → C.
    a.chain.merge(&lib, a.id.signing_key()).unwrap().unwrap();
    a.node.library_changed(lib).await.unwrap();
    eventually("A's merge to reach C", || {
        converged(&[&a, &b, &c], &lib) && c.heads(&lib).len() == 1
    })
    .await;
    let names: Vec<String> = c.chain.tree(&lib).unwrap().items.into_keys().collect();
    for dir in ["from-a", "from-b", "from-c"] {
        assert!(
            names.iter().any(|n| n == dir),
            "{dir} missing from {names:?}"
        );
    }

    // The peer table: A and B are trusted, connected peers of each other.
    let peers = b.node.peers().await.unwrap();
    let pa = peers.iter().find(|p| p.peer == a.id.peer_id()).unwrap();
    assert!(pa.connected && pa.trusted() && !pa.lan);
    assert_eq!(pa.libraries, vec![lib]);
    assert_eq!(pa.device, Some(a.id.device_key()));

    for n in [&a, &b, &c] {
        n.node.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_is_not_a_member_gets_nothing() {
    let a = TestNode::start(loopback()).await;
    let stranger = TestNode::start(loopback()).await;
    let (lib, _) = a.chain.create_library(a.id.signing_key(), "a").unwrap();
    a.append(&lib, mkdir("secret"));

    let mut events = stranger.node.subscribe();
    stranger.node.dial(a.addr(false)).await.unwrap();
    let reason = event(&mut events, "A's refusal", |e| match e {
        NodeEvent::RefusedBy { peer, reason, .. } if *peer == a.id.peer_id() => Some(*reason),
        _ => None,
    })
    .await;
    assert_eq!(reason, Refusal::NotAMember);

    // Even told of new heads, the stranger cannot pull them: A refuses the fetch.
    a.append(&lib, mkdir("more"));
    a.node.library_changed(lib).await.unwrap();
    stranger.node.sync_all().await.unwrap();
    event(&mut events, "A's second refusal", |e| match e {
        NodeEvent::RefusedBy { peer, .. } if *peer == a.id.peer_id() => Some(()),
        _ => None,
    })
    .await;
    assert!(stranger.chain.libraries().is_empty());

    // A keeps the stranger as a connected, untrusted ("discovered") peer.
    let peers = a.node.peers().await.unwrap();
    let s = peers
        .iter()
        .find(|p| p.peer == stranger.id.peer_id())
        .unwrap();
    assert!(s.connected && !s.trusted());

    // Once A adds it, the next sync brings the whole library.
    a.add(&lib, stranger.id.device_key(), "now a friend");
    a.node.library_changed(lib).await.unwrap();
    eventually("the new member to pull the library", || {
        converged(&[&a, &stranger], &lib)
    })
    .await;

    a.node.shutdown().await;
    stranger.node.shutdown().await;
}

/// A pull cut off by the puller's shutdown resumes, after a restart on the same data
/// directory, from what it had stored: the entries it pulls then are exactly the rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_pull_resumes_from_what_was_stored() {
    let a = TestNode::start(loopback()).await;
    let small_batches = P2pConfig {
        sync_batch: 3,
        ..loopback()
    };
    let b = TestNode::start(small_batches.clone()).await;
    let (lib, _) = a.chain.create_library(a.id.signing_key(), "a").unwrap();
    a.add(&lib, b.id.device_key(), "b");
    let ops = (0..200).map(|i| mkdir(&format!("d{i}"))).collect();
    a.chain.append_batch(&lib, a.id.signing_key(), ops).unwrap();
    let total = a.chain.len(&lib).unwrap();

    let mut events = b.node.subscribe();
    b.node.dial(a.addr(false)).await.unwrap();
    event(&mut events, "B's first batch", |e| match e {
        NodeEvent::Pulled { inserted, .. } if *inserted > 0 => Some(()),
        _ => None,
    })
    .await;
    b.node.shutdown().await;
    let TestNode {
        dir,
        chain,
        content,
        node,
        ..
    } = b;
    drop((chain, content, node));

    let b = TestNode::start_in(dir, small_batches).await;
    let had = b.chain.len(&lib).unwrap();
    assert!(
        had >= 3 && had < total,
        "stored {had} of {total} before the restart"
    );
    let mut events = b.node.subscribe();
    b.node.dial(a.addr(true)).await.unwrap();
    let mut pulled = 0;
    event(&mut events, "the resumed pull to finish", |e| match e {
        NodeEvent::Pulled { inserted, .. } => {
            pulled += inserted;
            None
        }
        NodeEvent::PullDone { .. } => Some(()),
        _ => None,
    })
    .await;
    assert_eq!(pulled, total - had, "only the rest was pulled");
    assert!(converged(&[&a, &b], &lib));

    a.node.shutdown().await;
    b.node.shutdown().await;
}

/// A pull runs ahead of what is stored: the next fetch asks with the version vector the
/// batches received so far will give. In batches of 4 from two members at once, over entries
/// of three authors written concurrently, the puller must still converge without a single
/// batch refused (a vector counted wrongly would skip entries, and the next batch would lack
/// its parents) and without storing an entry twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipelined_pull_from_two_members_converges_in_small_batches() {
    let a = TestNode::start(loopback()).await;
    let c = TestNode::start(loopback()).await;
    let (lib, _) = a.chain.create_library(a.id.signing_key(), "a").unwrap();
    a.add(&lib, c.id.device_key(), "c");
    c.node.dial(a.addr(false)).await.unwrap();
    eventually("C to pull A's library", || converged(&[&a, &c], &lib)).await;
    // A and C write at once, each on its own chain of seqs, and each learns of the other's.
    for i in 0..60 {
        let ops = (0..3).map(|j| mkdir(&format!("a{i}-{j}"))).collect();
        a.chain.append_batch(&lib, a.id.signing_key(), ops).unwrap();
        c.append(&lib, mkdir(&format!("c{i}")));
    }
    a.node.library_changed(lib).await.unwrap();
    c.node.library_changed(lib).await.unwrap();
    eventually("A and C to exchange their writes", || {
        converged(&[&a, &c], &lib)
    })
    .await;
    let b = TestNode::start(P2pConfig {
        sync_batch: 4,
        ..loopback()
    })
    .await;
    a.add(&lib, b.id.device_key(), "b");
    c.add(&lib, b.id.device_key(), "b too");
    a.node.library_changed(lib).await.unwrap();
    c.node.library_changed(lib).await.unwrap();
    eventually("A and C to agree on B", || converged(&[&a, &c], &lib)).await;
    let total = a.chain.len(&lib).unwrap();

    let mut events = b.node.subscribe();
    b.node.dial(a.addr(false)).await.unwrap();
    b.node.dial(c.addr(true)).await.unwrap();
    let mut inserted = 0;
    let mut done = std::collections::HashSet::new();
    event(
        &mut events,
        "B's pulls from A and C to finish",
        |e| match e {
            NodeEvent::Pulled { inserted: n, .. } => {
                inserted += n;
                None
            }
            NodeEvent::SyncFailed { peer, error, .. } => {
                panic!("a pull from {peer} failed: {error}")
            }
            NodeEvent::PullDone { peer, .. } => {
                done.insert(*peer);
                (done.len() == 2 && inserted == total).then_some(())
            }
            _ => None,
        },
    )
    .await;
    assert!(converged(&[&a, &b, &c], &lib));
    assert_eq!(inserted, total, "every entry stored exactly once");
    assert_eq!(b.chain.verify().unwrap().entries, total as u64);

    for n in [a, b, c] {
        n.node.shutdown().await;
    }
}

/// With `join_offered` off, a library a peer offers is reported, not pulled, until the node
/// is told to join it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offered_library_waits_for_approval() {
    let a = TestNode::start(loopback()).await;
    let cautious = P2pConfig {
        join_offered: false,
        ..loopback()
    };
    let b = TestNode::start(cautious).await;
    let (lib, _) = a.chain.create_library(a.id.signing_key(), "a").unwrap();
    a.add(&lib, b.id.device_key(), "b");

    let mut events = b.node.subscribe();
    b.node.dial(a.addr(false)).await.unwrap();
    let offered = event(&mut events, "A's offer", |e| match e {
        NodeEvent::Offered { peer, library } if *peer == a.id.peer_id() => Some(*library),
        _ => None,
    })
    .await;
    assert_eq!(offered, lib);
    assert!(
        b.chain.libraries().is_empty(),
        "nothing pulled before approval"
    );

    b.node.join(lib).await.unwrap();
    eventually("B to pull the approved library", || {
        converged(&[&a, &b], &lib)
    })
    .await;
    a.node.shutdown().await;
    b.node.shutdown().await;
}

/// A stranger that connected once is forgotten a while after it left; a member that left is
/// kept (it will be back, and `peers list` should still name it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stranger_that_left_is_forgotten_a_member_is_kept() {
    let forgetful = P2pConfig {
        forget_after: Duration::from_millis(300),
        redial_every: Duration::from_millis(100),
        ..loopback()
    };
    let a = TestNode::start(forgetful).await;
    let member = TestNode::start(loopback()).await;
    let stranger = TestNode::start(loopback()).await;
    let (lib, _) = a.chain.create_library(a.id.signing_key(), "a").unwrap();
    a.add(&lib, member.id.device_key(), "member");

    for n in [&member, &stranger] {
        n.node.dial(a.addr(false)).await.unwrap();
    }
    swarm::eventually(WAIT, "A to see both connected", || async {
        let peers = a.node.peers().await.unwrap();
        peers.iter().filter(|p| p.connected).count() == 2
    })
    .await;
    let (m, s) = (member.id.peer_id(), stranger.id.peer_id());
    member.node.shutdown().await;
    stranger.node.shutdown().await;

    swarm::eventually(WAIT, "A to forget the stranger", || async {
        let peers = a.node.peers().await.unwrap();
        !peers.iter().any(|p| p.peer == s)
    })
    .await;
    // Several forget rounds later, the member is still there, disconnected.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let peers = a.node.peers().await.unwrap();
    let kept = peers.iter().find(|p| p.peer == m).expect("member kept");
    assert!(!kept.connected);
    a.node.shutdown().await;
}
