//! `GET /ws`: the panel's live feed (appapi.md §7, harp.md §2).
//!
//! The browser opens `wss://<nextcloud>/exapps/<appid>/ws`; HaRP resolves the user from
//! the Nextcloud session cookie and injects the AppAPI headers, so the upgrade request is
//! authenticated by the same middleware as every other request
//! ([`crate::appapi::auth::require_appapi`]): without valid headers it gets 401 before any
//! upgrade. An upgrade without a user gets 403. AppAPI's PHP proxy cannot carry
//! WebSockets; there the panel polls `GET /api/snapshot` instead.
//!
//! A connection:
//!
//! 1. subscribes to the [`Hub`](super::hub::Hub) and sends its `snapshot` first;
//! 2. then forwards queued events as they come;
//! 3. sends a JSON `ping` every [`PING_INTERVAL`] (HaRP before v0.4.4 cut tunnels idle
//!    for 30 s; the browser cannot see WebSocket ping frames, a JSON message it can);
//! 4. ends when the client closes or errs, or when the hub drops it for reading too
//!    slowly: then it sends close code
//!    [`CLOSE_TOO_SLOW`](super::events::CLOSE_TOO_SLOW) (giving up after
//!    [`CLOSE_GRACE`]) and closes the socket.
//!
//! What the client sends is read (so that close frames and pongs are handled) and
//! otherwise ignored.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use futures_util::{SinkExt, StreamExt};
use tokio::time::{interval_at, timeout, Instant, MissedTickBehavior};

use super::api::ApiError;
use super::events::{Body, ServerMessage, Viewer, CLOSE_TOO_SLOW};
use super::hub::{Hub, Subscription};
use super::AppState;
use crate::appapi::auth::AppApiUser;

/// How often a connection sends a `ping` message.
pub const PING_INTERVAL: Duration = Duration::from_secs(20);
/// How long a dropped client gets to take its close frame.
pub const CLOSE_GRACE: Duration = Duration::from_secs(1);

pub fn routes() -> Router<AppState> {
    Router::new().route("/ws", get(upgrade))
}

async fn upgrade(
    State(state): State<AppState>,
    user: AppApiUser,
    ws: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    let uid = user.0.ok_or(ApiError::NoUser)?;
    let viewer = state.panel.access.viewer(&uid).await;
    let hub = state.panel.hub.clone();
    Ok(ws
        .on_upgrade(move |socket| serve(socket, hub, viewer))
        .into_response())
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Runs one WebSocket connection until it ends.
pub async fn serve(socket: WebSocket, hub: Hub, viewer: Viewer) {
    let mut sub: Subscription = hub.subscribe(viewer);
    let id = sub.id;
    let kicked = sub.kicked.clone();
    let (mut sink, mut stream) = socket.split();

    // The reader: answers nothing itself (axum queues pongs), ends on close or error.
    let mut reader = tokio::spawn(async move {
        while let Some(Ok(message)) = stream.next().await {
            if let Message::Close(_) = message {
                break;
            }
        }
    });

    let snapshot = std::mem::take(&mut sub.snapshot);
    let first = ServerMessage::new(Body::Snapshot { snapshot }).to_json();
    let mut outgoing = Some(Message::Text(Utf8Bytes::from(first)));
    let mut ping = interval_at(Instant::now() + PING_INTERVAL, PING_INTERVAL);
    ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut too_slow = false;

    loop {
        if let Some(message) = outgoing.take() {
            tokio::select! {
                sent = sink.send(message) => if sent.is_err() { break },
                _ = kicked.notified() => { too_slow = true; break },
                _ = &mut reader => break,
            }
        }
        tokio::select! {
            _ = kicked.notified() => { too_slow = true; break },
            _ = &mut reader => break,
            next = sub.rx.recv() => match next {
                Some(text) => outgoing = Some(Message::Text(text)),
                // The hub removed us (closed queue): treat as too slow.
                None => { too_slow = true; break },
            },
            _ = ping.tick() => {
                let text = ServerMessage::new(Body::Ping { time_ms: now_ms() }).to_json();
                outgoing = Some(Message::Text(Utf8Bytes::from(text)));
            }
        }
    }

    if too_slow {
        tracing::debug!(client = id, "closing a panel client that read too slowly");
        let close = Message::Close(Some(CloseFrame {
            code: CLOSE_TOO_SLOW,
            reason: Utf8Bytes::from_static("too slow: reconnect for a fresh snapshot"),
        }));
        let _ = timeout(CLOSE_GRACE, sink.send(close)).await;
    } else {
        let _ = timeout(CLOSE_GRACE, sink.close()).await;
    }
    reader.abort();
}
