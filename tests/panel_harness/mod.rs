//! The real harpbridge router, in-process on 127.0.0.1:0, with a Nextcloud test double
//! for the admin checks: shared by the panel's WebSocket and REST tests.
#![allow(dead_code)]

use std::net::SocketAddr;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use harpbridge::web::events::{ChainEntry, Event, Operation};
use harpbridge::web::{router, AppState};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderValue, Request};

use crate::support::nextcloud::{ExAppRow, ExAppTarget, InitStatus};
use crate::support::FakeNextcloud;

pub const APP_ID: &str = "harpbridge";
pub const SECRET: &str = "panel-test-secret-0123456789";

pub struct Panel {
    pub addr: SocketAddr,
    pub state: AppState,
    pub nextcloud: FakeNextcloud,
    task: tokio::task::JoinHandle<()>,
    _data: tempfile::TempDir,
}

impl Drop for Panel {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Panel {
    /// Starts the double (users `admin` in group admin, `alice` not), the engine on a
    /// temporary data directory, and the router.
    pub async fn start() -> Panel {
        let nextcloud = FakeNextcloud::start().await;
        nextcloud.state().apps.insert(
            APP_ID.into(),
            ExAppRow {
                app_id: APP_ID.into(),
                version: "0.1.0".into(),
                secret: SECRET.into(),
                target: ExAppTarget::Tcp("http://127.0.0.1:1".into()),
                enabled: true,
                status: InitStatus::default(),
            },
        );
        let data = tempfile::tempdir().expect("data directory");
        let config = settings(&[
            ("app-id", APP_ID.into()),
            ("app-secret", SECRET.into()),
            ("app-version", "0.1.0".into()),
            ("app-host", "127.0.0.1".into()),
            // Unused: the test binds 127.0.0.1:0 itself.
            ("app-port", "9".into()),
            ("nextcloud-url", nextcloud.url.clone()),
            ("data-dir", data.path().display().to_string()),
        ])
        .validate()
        .expect("valid test settings");
        // The real engine (chain, content, libraries) on a fresh data directory.
        let state = AppState::new(config).expect("app state").start_engine();
        assert!(state.engine.is_some(), "engine: {:?}", state.engine_error);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let app = router(state.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Panel {
            addr,
            state,
            nextcloud,
            task,
            _data: data,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    /// A WebSocket upgrade request as HaRP forwards it for `user`.
    pub fn ws_request(&self, user: &str) -> Request<()> {
        let mut request = self.ws_url().into_client_request().expect("request");
        for (name, value) in appapi_headers(user, SECRET) {
            request
                .headers_mut()
                .insert(name, HeaderValue::from_str(&value).expect("header"));
        }
        request
    }

    pub fn publish_entry(&self, library_id: &str, n: u64, path_len: usize) -> u64 {
        self.state.panel.hub.publish(Event::EntryAppended {
            entry: entry(library_id, n, path_len),
        })
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

/// The headers HaRP injects: `EX-APP-ID`, `EX-APP-VERSION`, `AUTHORIZATION-APP-API`,
/// `AA-VERSION` (always "32" through HaRP).
pub fn appapi_headers(user: &str, secret: &str) -> Vec<(&'static str, String)> {
    vec![
        ("ex-app-id", APP_ID.to_owned()),
        ("ex-app-version", "0.1.0".to_owned()),
        (
            "authorization-app-api",
            STANDARD.encode(format!("{user}:{secret}")),
        ),
        ("aa-version", "32".to_owned()),
    ]
}

pub fn entry(library_id: &str, n: u64, path_len: usize) -> ChainEntry {
    ChainEntry {
        library_id: library_id.into(),
        hash: format!("{n:064x}"),
        parents: vec![],
        author: "12D3KooWtest".into(),
        user: Some("admin".into()),
        seq: n,
        lamport: n,
        time_ms: 1_764_090_000_000 + n,
        op: Operation::Put {
            path: "p".repeat(path_len.max(1)),
            size: n,
        },
    }
}

/// Raises the soft open-files limit to at least `want` (up to the hard limit).
pub fn raise_nofile(want: u64) -> u64 {
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
