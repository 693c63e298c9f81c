//! `bench/ws`: event-to-client latency of the panel's WebSocket fan-out, with a baseline
//! measured in the same run.
//!
//! - **ws**: the real router (`harpbridge::web::router`, auth layer, hub, `/ws`) on
//!   127.0.0.1 in its own 2-thread runtime; CLIENTS tokio-tungstenite clients, each
//!   authenticated like HaRP forwards them, in another runtime. EVENTS chain entries are
//!   published through `Hub::publish`, one every INTERVAL; each client parses every
//!   message and records now − publish time.
//! - **baseline**: the same fan-out without WebSocket, axum or hub: a raw tokio TCP
//!   server, one bounded queue and one writer task per connection, the same serialized
//!   JSON bytes written as lines; the same clients' work (read, parse, compute).
//!
//! The publish instant travels inside the message (the entry's `lamport` field carries
//! nanoseconds since the bench started; both sides are in this process, so one clock).
//! Prints readable lines, then one JSON line `{"bench":"ws",…,"baseline":{…}}`.
//!
//! Usage: `ws_bench [CLIENTS] [EVENTS] [INTERVAL_MS]` (default 1000 200 50: 20 events a
//! second, i.e. 20,000 messages a second to 1,000 panels, far above what a panel sees).

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use axum::extract::Path;
use axum::routing::get;
use axum::{Json, Router};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use futures_util::StreamExt;
use harpbridge::web::events::{Body, ChainEntry, Event, Operation, ServerMessage};
use harpbridge::web::{router, AppState};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;

/// The baseline server's per-connection queues.
type Queues = Arc<std::sync::Mutex<Vec<mpsc::Sender<Arc<[u8]>>>>>;

const SECRET: &str = "bench-secret-0123456789";
static START: OnceLock<Instant> = OnceLock::new();

fn since_start_ns() -> u64 {
    START.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

fn entry(n: u64) -> ChainEntry {
    ChainEntry {
        library_id: "bench".into(),
        hash: format!("{n:064x}"),
        parents: vec![format!("{:064x}", n.saturating_sub(1))],
        author: "12D3KooWBenchAuthor00000000000000000000000000000000".into(),
        user: Some("admin".into()),
        seq: n,
        // The publish instant, in ns since START (see the module doc).
        lamport: since_start_ns(),
        time_ms: 1_764_090_000_000,
        op: Operation::Put {
            path: format!("Documents/report-{n}.odt"),
            size: 123_456,
        },
    }
}

/// Latency in ns of one received message text, if it is a chain entry.
fn latency_of(text: &str) -> Option<u64> {
    let message: ServerMessage = serde_json::from_str(text).ok()?;
    match message.body {
        Body::EntryAppended { entry, .. } => Some(since_start_ns().saturating_sub(entry.lamport)),
        _ => None,
    }
}

fn raise_nofile(want: u64) -> u64 {
    // SAFETY: getrlimit/setrlimit with a valid pointer to a local struct.
    unsafe {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return 0;
        }
        if limit.rlim_cur < want {
            limit.rlim_cur = want.min(limit.rlim_max);
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
            libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
        }
        limit.rlim_cur
    }
}

struct Stats {
    samples: usize,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    mean_ms: f64,
}

fn stats(mut ns: Vec<u64>) -> Stats {
    ns.sort_unstable();
    let pick = |q: f64| {
        if ns.is_empty() {
            return 0.0;
        }
        let i = ((ns.len() as f64 - 1.0) * q).round() as usize;
        ns[i] as f64 / 1e6
    };
    let mean = if ns.is_empty() {
        0.0
    } else {
        ns.iter().map(|&v| v as f64).sum::<f64>() / ns.len() as f64 / 1e6
    };
    Stats {
        samples: ns.len(),
        p50_ms: pick(0.50),
        p99_ms: pick(0.99),
        max_ms: pick(1.0),
        mean_ms: mean,
    }
}

/// Settings as `harpbridge serve` reads them from these flags, everything else at clap's
/// defaults (`ConfigArgs::default()` would leave defaulted strings empty).
fn settings(flags: &[(&str, String)]) -> harpbridge::config::ConfigArgs {
    #[derive(clap::Parser)]
    struct Flags {
        #[command(flatten)]
        config: harpbridge::config::ConfigArgs,
    }
    let argv = std::iter::once("harpbridge".to_owned()).chain(
        flags
            .iter()
            .map(|(name, value)| format!("--{name}={value}")),
    );
    <Flags as clap::Parser>::try_parse_from(argv)
        .expect("flags that clap accepts")
        .config
}

/// Binds on 127.0.0.1 from inside the server runtime, so that the listener and every
/// accepted socket belong to the server's reactor, not the clients'.
async fn bind_on(server_rt: &tokio::runtime::Runtime) -> TcpListener {
    server_rt
        .spawn(TcpListener::bind("127.0.0.1:0"))
        .await
        .expect("bind task")
        .expect("bind")
}

/// A Nextcloud stand-in answering the one call the panel makes: the user's groups.
async fn fake_nextcloud(rt: &tokio::runtime::Runtime) -> String {
    let app = Router::new().route(
        "/ocs/v2.php/cloud/users/{uid}/groups",
        get(|Path(_uid): Path<String>| async {
            Json(
                json!({"ocs": {"meta": {"status": "ok", "statuscode": 200, "message": "OK"},
                                 "data": {"groups": ["admin"]}}}),
            )
        }),
    );
    let listener = bind_on(rt).await;
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    rt.spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    url
}

async fn run_ws(
    server_rt: &tokio::runtime::Runtime,
    clients: usize,
    events: u64,
    interval: Duration,
) -> (Stats, usize) {
    let nextcloud = fake_nextcloud(server_rt).await;
    let data = std::env::temp_dir().join("harpbridge-ws-bench");
    let config = settings(&[
        ("app-id", "harpbridge".into()),
        ("app-secret", SECRET.into()),
        ("app-version", "0.1.0".into()),
        ("app-host", "127.0.0.1".into()),
        ("app-port", "9".into()),
        ("nextcloud-url", nextcloud),
        ("data-dir", data.display().to_string()),
    ])
    .validate()
    .expect("bench settings");
    let state = AppState::new(config).expect("state");
    let hub = state.panel.hub.clone();
    let listener = bind_on(server_rt).await;
    let addr = listener.local_addr().expect("addr");
    let app = router(state);
    server_rt.spawn(async move {
        let _ = axum::serve(listener, app).await;
    });

    let auth = STANDARD.encode(format!("admin:{SECRET}"));
    let connect = |_| {
        let auth = auth.clone();
        async move {
            let mut request = format!("ws://{addr}/ws")
                .into_client_request()
                .expect("request");
            let headers = request.headers_mut();
            headers.insert("ex-app-id", HeaderValue::from_static("harpbridge"));
            headers.insert("ex-app-version", HeaderValue::from_static("0.1.0"));
            headers.insert("aa-version", HeaderValue::from_static("32"));
            headers.insert(
                "authorization-app-api",
                HeaderValue::from_str(&auth).expect("auth"),
            );
            // An 8 KiB read buffer, like the baseline's BufReader: tungstenite's default
            // (128 KiB, zero-filled on every read) would make the clients the bottleneck.
            let config = WebSocketConfig::default().read_buffer_size(8 * 1024);
            let (mut ws, _) =
                tokio_tungstenite::connect_async_with_config(request, Some(config), false)
                    .await
                    .expect("connect");
            // The snapshot.
            let _ = ws.next().await;
            ws
        }
    };
    let sockets: Vec<_> = futures_util::stream::iter(0..clients)
        .map(connect)
        .buffer_unordered(64)
        .collect()
        .await;
    println!(
        "ws: {} clients connected, {} in the hub",
        sockets.len(),
        hub.client_count()
    );

    let (tx, mut rx) = mpsc::unbounded_channel::<Vec<u64>>();
    for mut ws in sockets {
        let tx = tx.clone();
        tokio::spawn(async move {
            let mut got = Vec::with_capacity(events as usize);
            while (got.len() as u64) < events {
                match ws.next().await {
                    Some(Ok(Message::Text(text))) => {
                        if let Some(ns) = latency_of(&text) {
                            got.push(ns);
                        }
                    }
                    Some(Ok(_)) => {}
                    _ => break,
                }
            }
            let _ = tx.send(got);
        });
    }
    drop(tx);

    let publisher = server_rt.spawn(async move {
        let mut tick = tokio::time::interval(interval);
        for n in 1..=events {
            tick.tick().await;
            hub.publish(Event::EntryAppended { entry: entry(n) });
        }
        hub.dropped_slow()
    });
    let mut all = Vec::with_capacity(clients * events as usize);
    let mut complete = 0;
    while let Some(got) = rx.recv().await {
        if got.len() as u64 == events {
            complete += 1;
        }
        all.extend(got);
    }
    let dropped = publisher.await.unwrap_or(0);
    if dropped > 0 {
        println!("ws: {dropped} clients were dropped as too slow");
    }
    (stats(all), complete)
}

/// The baseline: the same fan-out over raw TCP lines, one bounded queue and writer per
/// connection, no WebSocket framing, no axum, no hub.
async fn run_raw(
    server_rt: &tokio::runtime::Runtime,
    clients: usize,
    events: u64,
    interval: Duration,
) -> (Stats, usize) {
    let listener = bind_on(server_rt).await;
    let addr: SocketAddr = listener.local_addr().expect("addr");
    let queues: Queues = Arc::default();
    let accepted = queues.clone();
    server_rt.spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let (tx, mut rx) = mpsc::channel::<Arc<[u8]>>(256);
            accepted.lock().expect("lock").push(tx);
            tokio::spawn(async move {
                while let Some(bytes) = rx.recv().await {
                    if socket.write_all(&bytes).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    let sockets: Vec<TcpStream> = futures_util::stream::iter(0..clients)
        .map(|_| async move { TcpStream::connect(addr).await.expect("connect") })
        .buffer_unordered(64)
        .collect()
        .await;
    while queues.lock().expect("lock").len() < clients {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    println!("baseline: {} raw TCP clients connected", sockets.len());
    let (tx, mut rx) = mpsc::unbounded_channel::<Vec<u64>>();
    for socket in sockets {
        let tx = tx.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(socket).lines();
            let mut got = Vec::with_capacity(events as usize);
            while (got.len() as u64) < events {
                match lines.next_line().await {
                    Ok(Some(line)) => {
                        if let Some(ns) = latency_of(&line) {
                            got.push(ns);
                        }
                    }
                    _ => break,
                }
            }
            let _ = tx.send(got);
        });
    }
    drop(tx);
    server_rt.spawn(async move {
        let mut tick = tokio::time::interval(interval);
        for n in 1..=events {
            tick.tick().await;
            let message = ServerMessage::new(Body::from_event(
                n,
                Event::EntryAppended { entry: entry(n) },
            ));
            let mut line = message.to_json().into_bytes();
            line.push(b'\n');
            let bytes: Arc<[u8]> = line.into();
            for queue in queues.lock().expect("lock").iter() {
                let _ = queue.try_send(bytes.clone());
            }
        }
    });
    let mut all = Vec::with_capacity(clients * events as usize);
    let mut complete = 0;
    while let Some(got) = rx.recv().await {
        if got.len() as u64 == events {
            complete += 1;
        }
        all.extend(got);
    }
    (stats(all), complete)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize, default: u64| args.get(i).and_then(|a| a.parse().ok()).unwrap_or(default);
    let clients = arg(0, 1000) as usize;
    let events = arg(1, 200);
    let interval = Duration::from_millis(arg(2, 50));
    START.get_or_init(Instant::now);
    // Other work on the machine moves these figures: say how busy it was.
    let loadavg = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| {
            l.split_whitespace()
                .next()
                .and_then(|v| v.parse::<f64>().ok())
        })
        .unwrap_or(-1.0);
    println!("load average (1 min) at start: {loadavg}");
    let limit = raise_nofile(4 * clients as u64 + 512);
    println!(
        "ws bench: {clients} clients, {events} events every {interval:?}, RLIMIT_NOFILE {limit}"
    );

    // Server and clients in separate runtimes (2 worker threads each) on this 2-core machine.
    let server_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("server")
        .enable_all()
        .build()
        .expect("server runtime");
    let client_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("clients")
        .enable_all()
        .build()
        .expect("client runtime");

    let (ws, ws_complete) = client_rt.block_on(run_ws(&server_rt, clients, events, interval));
    println!(
        "ws:       p50 {:.2} ms  p99 {:.2} ms  max {:.2} ms  mean {:.2} ms  ({} deliveries, {}/{} clients got all)",
        ws.p50_ms, ws.p99_ms, ws.max_ms, ws.mean_ms, ws.samples, ws_complete, clients
    );
    let (raw, raw_complete) = client_rt.block_on(run_raw(&server_rt, clients, events, interval));
    println!(
        "baseline: p50 {:.2} ms  p99 {:.2} ms  max {:.2} ms  mean {:.2} ms  ({} deliveries, {}/{} clients got all)",
        raw.p50_ms, raw.p99_ms, raw.max_ms, raw.mean_ms, raw.samples, raw_complete, clients
    );
    let round = |v: f64| (v * 1000.0).round() / 1000.0;
    let ratio = if raw.p99_ms > 0.0 {
        ws.p99_ms / raw.p99_ms
    } else {
        0.0
    };
    let line = json!({
        "bench": "ws",
        "clients": clients,
        "events": events,
        "interval_ms": interval.as_millis() as u64,
        "loadavg_1m_at_start": loadavg,
        "deliveries": ws.samples,
        "clients_complete": ws_complete,
        "p50_ms": round(ws.p50_ms),
        "p99_ms": round(ws.p99_ms),
        "max_ms": round(ws.max_ms),
        "mean_ms": round(ws.mean_ms),
        "p99_ratio_to_baseline": round(ratio),
        "baseline": {
            "kind": "raw tokio TCP fan-out: same payload, one bounded queue and writer per connection",
            "deliveries": raw.samples,
            "clients_complete": raw_complete,
            "p50_ms": round(raw.p50_ms),
            "p99_ms": round(raw.p99_ms),
            "max_ms": round(raw.max_ms),
            "mean_ms": round(raw.mean_ms),
        }
    });
    println!("{line}");
    server_rt.shutdown_background();
    client_rt.shutdown_background();
}
