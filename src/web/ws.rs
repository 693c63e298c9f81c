//! `GET /ws`: the panel's live feed (docs/appapi.md §7, §13).
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
//! 1. subscribes to the [`Hub`] and sends its `snapshot` first;
//! 2. then forwards queued events as they come;
//! 3. sends a JSON `ping` every [`PING_INTERVAL`] (HaRP before v0.4.4 cut tunnels idle
//!    for 30 s; the browser cannot see WebSocket ping frames, a JSON message it can);
//! 4. ends when the client closes or errs, or when the hub drops it for reading too
//!    slowly: then it sends close code
//!    [`CLOSE_TOO_SLOW`] (giving up after
//!    [`CLOSE_GRACE`]) and closes the socket.
//!
//! What the client sends is read (so that close frames and pongs are handled) and
//! otherwise ignored.

use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use futures_util::SinkExt;
use tokio::time::{interval_at, timeout, Instant, MissedTickBehavior};

use super::api::ApiError;
use super::events::{Body, ServerMessage, Viewer, CLOSE_TOO_SLOW};
use super::hub::{Hub, Subscription};
use super::AppState;
use crate::appapi::auth::AppApiUser;

/// How often a connection sends a `ping` message (see [`super::panel::Panel::ping_interval`]).
pub const PING_INTERVAL: Duration = Duration::from_secs(20);
/// Read buffer per connection. tungstenite's default (128 KiB) is zero-filled on every
/// read and held per connection; clients send next to nothing, so 4 KiB is plenty (and
/// 1,000 connections hold 4 MiB instead of 128 MiB).
pub const READ_BUFFER: usize = 4 * 1024;
/// Largest message or frame a client may send: it has nothing to say but close and pong.
pub const MAX_CLIENT_MESSAGE: usize = 16 * 1024;
/// Most queued events written with one flush.
pub const MAX_BATCH: usize = 64;
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
    let ping = state.panel.ping_interval();
    Ok(ws
        .read_buffer_size(READ_BUFFER)
        .max_message_size(MAX_CLIENT_MESSAGE)
        .max_frame_size(MAX_CLIENT_MESSAGE)
        .on_upgrade(move |socket| serve(socket, hub, viewer, ping))
        .into_response())
}

/// Runs one WebSocket connection until it ends.
///
/// One task per connection, without splitting the socket: it waits for whichever comes
/// first of a queued event, a message from the client, the ping timer or the hub's "too
/// slow". Events that queued up meanwhile are written as one batch with a single flush
/// (at most [`MAX_BATCH`]), so a busy connection costs one write per batch, not per event.
pub async fn serve(mut socket: WebSocket, hub: Hub, viewer: Viewer, ping_every: Duration) {
    let mut sub: Subscription = hub.subscribe(viewer);
    let id = sub.id;
    let kick = sub.kicked.clone();
    // One waiter for the whole connection: `notify_one` leaves a permit if it fires
    // while we are writing, so nothing is missed between polls.
    let kicked = kick.notified();
    tokio::pin!(kicked);
    let snapshot = std::mem::take(&mut sub.snapshot);
    let first = ServerMessage::new(Body::Snapshot { snapshot }).to_json();
    let mut batch: Vec<Message> = vec![Message::Text(Utf8Bytes::from(first))];
    let mut ping = interval_at(Instant::now() + ping_every, ping_every);
    ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut too_slow = false;

    loop {
        if !batch.is_empty() {
            let write = async {
                for message in batch.drain(..) {
                    socket.feed(message).await?;
                }
                socket.flush().await
            };
            tokio::select! {
                written = write => if written.is_err() { break },
                _ = &mut kicked => { too_slow = true; break },
            }
        }
        tokio::select! {
            _ = &mut kicked => { too_slow = true; break },
            incoming = socket.recv() => match incoming {
                // What the client says is ignored; axum answers its pings.
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
                Some(Ok(_)) => {}
            },
            next = sub.rx.recv() => match next {
                Some(text) => {
                    batch.push(Message::Text(text));
                    while batch.len() < MAX_BATCH {
                        match sub.rx.try_recv() {
                            Ok(text) => batch.push(Message::Text(text)),
                            Err(_) => break,
                        }
                    }
                }
                // The hub removed us (closed queue): treat as too slow.
                None => { too_slow = true; break },
            },
            _ = ping.tick() => {
                let text = ServerMessage::new(Body::Ping { time_ms: crate::clock::now_ms() }).to_json();
                batch.push(Message::Text(Utf8Bytes::from(text)));
            }
        }
    }

    if too_slow {
        tracing::debug!(client = id, "closing a panel client that read too slowly");
        let close = Message::Close(Some(CloseFrame {
            code: CLOSE_TOO_SLOW,
            reason: Utf8Bytes::from_static("too slow: reconnect for a fresh snapshot"),
        }));
        let _ = timeout(CLOSE_GRACE, socket.send(close)).await;
    } else {
        let _ = timeout(CLOSE_GRACE, socket.close()).await;
    }
}
