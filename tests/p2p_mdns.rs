//! Two nodes with mDNS on find each other on the LAN, dial, and sync a library they share,
//! with nobody dialling by address.
//!
//! Multicast needs a non-loopback interface that carries it. Where the two nodes do not see
//! each other within a few seconds (a CI container without such an interface), the test
//! says so and skips; once they have found each other, the dial and the sync are asserted.

#[path = "support/swarm.rs"]
mod swarm;

use std::time::Duration;

use harpbridge::chain::{ChainPath, Op};
use harpbridge::p2p::P2pConfig;
use swarm::TestNode;

const FIND: Duration = Duration::from_secs(5);
const SYNC: Duration = Duration::from_secs(15);

/// A node on every interface with mDNS on.
async fn start() -> TestNode {
    TestNode::start(P2pConfig {
        mdns: true,
        ..swarm::listening_on(&["/ip4/0.0.0.0/tcp/0"])
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lan_peers_found_by_mdns_sync_on_their_own() {
    let a = start().await;
    let b = start().await;
    let (lib, _) = a.chain.create_library(a.id.signing_key(), "a").unwrap();
    a.add(&lib, b.id.device_key(), "b");
    // Published through the node, as serve does: mDNS may have connected the two before the
    // library existed, so the node must announce it to b, not wait for the next connection.
    a.publish(
        lib,
        vec![Op::Mkdir {
            path: ChainPath::new("found-by-mdns").unwrap(),
        }],
    )
    .await;

    let deadline = tokio::time::Instant::now() + FIND;
    let found = loop {
        let seen = b.node.peers().await.unwrap();
        if seen.iter().any(|p| p.peer == a.id.peer_id() && p.lan) {
            break true;
        }
        if tokio::time::Instant::now() > deadline {
            break false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    if !found {
        eprintln!(
            "SKIPPED: the nodes did not find each other by mDNS within {FIND:?} \
             (no multicast-capable interface here); the loopback tests cover sync"
        );
        swarm::shutdown([a, b]).await;
        return;
    }

    // Found by mDNS, then synced.
    swarm::converge(SYNC, &[&a, &b], lib).await;
    let peers = b.node.peers().await.unwrap();
    let pa = peers.iter().find(|p| p.peer == a.id.peer_id()).unwrap();
    assert!(pa.lan && pa.connected && pa.trusted());
    swarm::shutdown([a, b]).await;
}
