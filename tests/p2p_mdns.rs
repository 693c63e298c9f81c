//! Two nodes with mDNS on find each other on the LAN, dial, and sync a library they share,
//! with nobody dialling by address.
//!
//! Multicast needs a non-loopback interface that carries it. Where the two nodes do not see
//! each other within a few seconds (a CI container without such an interface), the test
//! says so and skips; once they have found each other, the dial and the sync are asserted.

use std::time::Duration;

use harpbridge::chain::{ChainPath, ChainStore, Op};
use harpbridge::content::{ContentStore, StoreOptions};
use harpbridge::identity::DeviceIdentity;
use harpbridge::p2p::{Node, NodeHandle, P2pConfig};

const FIND: Duration = Duration::from_secs(5);
const SYNC: Duration = Duration::from_secs(15);

async fn start(dir: &tempfile::TempDir) -> (DeviceIdentity, ChainStore, NodeHandle) {
    let (id, _) = DeviceIdentity::load_or_create(dir.path()).unwrap();
    let database = harpbridge::db::open(dir.path()).unwrap();
    let chain = ChainStore::open(database.clone()).unwrap();
    let content = ContentStore::open(database, dir.path(), StoreOptions::default()).unwrap();
    let config = P2pConfig {
        listen: vec!["/ip4/0.0.0.0/tcp/0".parse().unwrap()],
        mdns: true,
        ..P2pConfig::default()
    };
    let node = Node::start(config, &id, chain.clone(), content)
        .await
        .unwrap();
    (id, chain, node)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lan_peers_found_by_mdns_sync_on_their_own() {
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (a_id, a_chain, a) = start(&da).await;
    let (b_id, b_chain, b) = start(&db).await;
    let (lib, _) = a_chain.create_library(a_id.signing_key(), "a").unwrap();
    a_chain
        .append(
            &lib,
            a_id.signing_key(),
            Op::AddDevice {
                device: b_id.device_key(),
                name: "b".into(),
            },
        )
        .unwrap();
    a_chain
        .append(
            &lib,
            a_id.signing_key(),
            Op::Mkdir {
                path: ChainPath::new("found-by-mdns").unwrap(),
            },
        )
        .unwrap();

    let deadline = tokio::time::Instant::now() + FIND;
    let found = loop {
        let seen = b.peers().await.unwrap();
        if seen.iter().any(|p| p.peer == a_id.peer_id() && p.lan) {
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
        a.shutdown().await;
        b.shutdown().await;
        return;
    }

    let deadline = tokio::time::Instant::now() + SYNC;
    while b_chain.heads(&lib).unwrap_or_default() != a_chain.heads(&lib).unwrap() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "found by mDNS but not synced within {SYNC:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let peers = b.peers().await.unwrap();
    let pa = peers.iter().find(|p| p.peer == a_id.peer_id()).unwrap();
    assert!(pa.lan && pa.connected && pa.trusted());
    a.shutdown().await;
    b.shutdown().await;
}
