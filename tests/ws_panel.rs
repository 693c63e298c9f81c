//! The panel's WebSocket, end to end on a real socket with tokio-tungstenite:
//! authentication of the upgrade, snapshot then events, slow clients, 1,000 clients.

mod panel_harness;
mod support;

use std::time::Duration;

use futures_util::StreamExt;
use harpbridge::web::events::{Body, ServerMessage, CLOSE_TOO_SLOW};
use panel_harness::{appapi_headers, raise_nofile, Panel, SECRET};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Client = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Bounds every test so that a server that stalls fails instead of hanging.
const LIMIT: Duration = Duration::from_secs(120);

async fn next_message(client: &mut Client) -> ServerMessage {
    loop {
        match client.next().await {
            Some(Ok(Message::Text(text))) => {
                return serde_json::from_str(&text).expect("a v1 server message")
            }
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            other => panic!("expected a text message, got {other:?}"),
        }
    }
}

/// The next message that is not a `ping`.
async fn next_event(client: &mut Client) -> ServerMessage {
    loop {
        let message = next_message(client).await;
        if !matches!(message.body, Body::Ping { .. }) {
            return message;
        }
    }
}

async fn connect(panel: &Panel, user: &str) -> Client {
    let (mut client, _) = tokio_tungstenite::connect_async(panel.ws_request(user))
        .await
        .expect("upgrade");
    match next_message(&mut client).await.body {
        Body::Snapshot { .. } => client,
        other => panic!("first message must be a snapshot, got {other:?}"),
    }
}

fn status_of(result: Result<(Client, impl Sized), WsError>) -> u16 {
    match result {
        Err(WsError::Http(response)) => response.status().as_u16(),
        Err(e) => panic!("expected an HTTP refusal, got {e}"),
        Ok(_) => panic!("the upgrade was accepted"),
    }
}

#[tokio::test]
async fn upgrade_needs_valid_appapi_headers() {
    let panel = Panel::start().await;

    // No headers at all.
    let bare = panel.ws_url().into_client_request().unwrap();
    assert_eq!(status_of(tokio_tungstenite::connect_async(bare).await), 401);

    // A wrong secret.
    let mut wrong = panel.ws_url().into_client_request().unwrap();
    for (name, value) in appapi_headers("admin", "not-the-secret") {
        wrong
            .headers_mut()
            .insert(name, HeaderValue::from_str(&value).unwrap());
    }
    assert_eq!(
        status_of(tokio_tungstenite::connect_async(wrong).await),
        401
    );

    // Valid headers, but no user (an anonymous visitor): 403.
    let anonymous = panel.ws_request("");
    assert_eq!(
        status_of(tokio_tungstenite::connect_async(anonymous).await),
        403
    );
    assert_eq!(panel.state.panel.hub.client_count(), 0);

    // Valid: upgraded, and the snapshot comes first.
    let _client = connect(&panel, "admin").await;
    assert_eq!(panel.state.panel.hub.client_count(), 1);
    let _ = SECRET;
}

#[tokio::test]
async fn snapshot_then_events_in_order() {
    tokio::time::timeout(LIMIT, async {
        let panel = Panel::start().await;
        panel.publish_entry("lib", 1, 8);
        let (mut client, _) = tokio_tungstenite::connect_async(panel.ws_request("admin"))
            .await
            .unwrap();
        let Body::Snapshot { snapshot } = next_message(&mut client).await.body else {
            panic!("snapshot first");
        };
        assert_eq!(snapshot.seq, 1);
        assert_eq!(snapshot.activity.len(), 1);
        for n in 2..=5 {
            let seq = panel.publish_entry("lib", n, 8);
            match next_event(&mut client).await.body {
                Body::EntryAppended { seq: got, entry } => {
                    assert_eq!(got, seq);
                    assert_eq!(entry.seq, n);
                }
                other => panic!("expected entry_appended, got {other:?}"),
            }
        }
        // A non-admin does not see entries of a library that is not theirs.
        let mut alice = connect(&panel, "alice").await;
        panel.publish_entry("lib", 6, 8);
        let seq = panel
            .state
            .panel
            .hub
            .publish(harpbridge::web::events::Event::PeerRemoved {
                peer_id: "gone".into(),
            });
        match next_event(&mut alice).await.body {
            Body::PeerRemoved { seq: got, .. } => assert_eq!(got, seq),
            other => panic!("alice must only get the peer event, got {other:?}"),
        }
        client.close(None).await.unwrap();
    })
    .await
    .expect("test finished in time");
}

/// A client that never reads fills its queue and is dropped, while a client that reads
/// gets every event right after it is published (lock-step: if the server waited for
/// the slow client, the fast one would stall and the test would time out).
#[tokio::test]
async fn a_slow_client_is_dropped_and_never_delays_the_others() {
    tokio::time::timeout(LIMIT, async {
        let panel = Panel::start().await;
        let hub = panel.state.panel.hub.clone();

        // The slow client: a tiny receive buffer, and it never reads.
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let stream = socket.connect(panel.addr).await.unwrap();
        let (slow, _) = tokio_tungstenite::client_async(panel.ws_request("admin"), stream)
            .await
            .unwrap();
        let mut fast = connect(&panel, "admin").await;
        assert_eq!(hub.client_count(), 2);

        // 16 KiB events: the slow socket's buffers and its 256-message queue fill
        // within a few hundred events.
        let mut published = 0u64;
        while hub.dropped_slow() == 0 {
            published += 1;
            assert!(published < 20_000, "the slow client was never dropped");
            let seq = panel.publish_entry("lib", published, 16 * 1024);
            match next_event(&mut fast).await.body {
                Body::EntryAppended { seq: got, .. } => assert_eq!(got, seq),
                other => panic!("expected entry_appended, got {other:?}"),
            }
        }
        assert_eq!(hub.client_count(), 1, "only the slow client was dropped");

        // The fast client goes on as before.
        for _ in 0..10 {
            published += 1;
            let seq = panel.publish_entry("lib", published, 16);
            match next_event(&mut fast).await.body {
                Body::EntryAppended { seq: got, .. } => assert_eq!(got, seq),
                other => panic!("expected entry_appended, got {other:?}"),
            }
        }

        // The slow client, reading at last, finds its connection ended: after what was
        // already in flight, a close frame with CLOSE_TOO_SLOW or the end of the stream.
        let mut slow = slow;
        let mut texts = 0u64;
        let end = loop {
            match slow.next().await {
                Some(Ok(Message::Text(_))) => texts += 1,
                Some(Ok(Message::Close(frame))) => break frame.map(|f| u16::from(f.code)),
                Some(Ok(_)) => {}
                Some(Err(_)) | None => break None,
            }
        };
        assert!(
            texts < published,
            "the slow client cannot have got everything"
        );
        if let Some(code) = end {
            assert_eq!(code, CLOSE_TOO_SLOW);
        }
    })
    .await
    .expect("test finished in time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_clients_all_receive_an_event() {
    const CLIENTS: usize = 1000;
    let limit = raise_nofile(4 * CLIENTS as u64 + 256);
    assert!(
        limit >= 2 * CLIENTS as u64 + 64,
        "RLIMIT_NOFILE is {limit}: too low for {CLIENTS} clients and their server ends"
    );
    tokio::time::timeout(LIMIT, async {
        let panel = Panel::start().await;
        let hub = panel.state.panel.hub.clone();
        let clients: Vec<Client> = futures_util::stream::iter(0..CLIENTS)
            .map(|_| connect(&panel, "admin"))
            .buffer_unordered(64)
            .collect()
            .await;
        assert_eq!(hub.client_count(), CLIENTS);

        let seq = panel.publish_entry("lib", 1, 32);
        let received: Vec<u64> = futures_util::stream::iter(clients)
            .map(|mut client| async move {
                match next_event(&mut client).await.body {
                    Body::EntryAppended { seq, .. } => seq,
                    other => panic!("expected entry_appended, got {other:?}"),
                }
            })
            .buffer_unordered(CLIENTS)
            .collect()
            .await;
        assert_eq!(received.len(), CLIENTS);
        assert!(received.iter().all(|&s| s == seq));
        assert_eq!(hub.dropped_slow(), 0);
    })
    .await
    .expect("test finished in time");
}

/// An idle connection gets a JSON `ping` at the panel's interval (20 s in production,
/// shortened here) and stays open.
#[tokio::test]
async fn idle_connections_get_pings() {
    tokio::time::timeout(LIMIT, async {
        let panel = Panel::start().await;
        panel
            .state
            .panel
            .set_ping_interval(Duration::from_millis(50));
        let mut client = connect(&panel, "alice").await;
        let mut last = 0;
        for _ in 0..3 {
            match next_message(&mut client).await.body {
                Body::Ping { time_ms } => {
                    assert!(time_ms >= last);
                    last = time_ms;
                }
                other => panic!("expected a ping, got {other:?}"),
            }
        }
        assert_eq!(panel.state.panel.hub.client_count(), 1);
    })
    .await
    .expect("test finished in time");
}
