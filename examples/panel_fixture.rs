//! Test support for the panel's browser test (`tests/browser/`): the real harpbridge
//! router on 127.0.0.1, whose [`Hub`](harpbridge::web::hub::Hub) publishes the events it
//! reads from standard input, one JSON [`Event`] per line (`{"type":"entry_appended",
//! "entry":{…}}`), exactly as the chain, swarm and transfer code will publish them.
//!
//! Settings come from the usual AppAPI variables (`APP_ID`, `APP_SECRET`,
//! `APP_VERSION`, `NEXTCLOUD_URL`); the admin check asks `NEXTCLOUD_URL`, the harness's
//! stand-in for Nextcloud. Prints `listening 127.0.0.1:PORT` once it serves, and
//! `published SEQ` after each event. Ends when standard input closes.

use std::process::ExitCode;

use harpbridge::config::ConfigArgs;
use harpbridge::web::events::Event;
use harpbridge::web::{router, AppState};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

#[tokio::main]
async fn main() -> ExitCode {
    let config = ConfigArgs {
        app_id: env("APP_ID").or(Some("harpbridge".into())),
        app_secret: env("APP_SECRET"),
        app_version: env("APP_VERSION").or(Some("0.1.0".into())),
        app_host: Some("127.0.0.1".into()),
        app_port: Some("9".into()),
        nextcloud_url: env("NEXTCLOUD_URL"),
        data_dir: Some(
            std::env::temp_dir()
                .join("harpbridge-panel-fixture")
                .display()
                .to_string(),
        ),
        ..ConfigArgs::default()
    };
    let config = match config.validate() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("panel_fixture: {e}");
            return ExitCode::from(2);
        }
    };
    let state = match AppState::new(config) {
        Ok(state) => state,
        Err(e) => {
            eprintln!("panel_fixture: {e}");
            return ExitCode::FAILURE;
        }
    };
    let listener = match tokio::net::TcpListener::bind("127.0.0.1:0").await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("panel_fixture: cannot listen: {e}");
            return ExitCode::FAILURE;
        }
    };
    let addr = match listener.local_addr() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("panel_fixture: {e}");
            return ExitCode::FAILURE;
        }
    };
    let hub = state.panel.hub.clone();
    let app = router(state);
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            eprintln!("panel_fixture: server failed: {e}");
        }
    });

    let mut out = tokio::io::stdout();
    let _ = out
        .write_all(format!("listening {addr}\n").as_bytes())
        .await;
    let _ = out.flush().await;
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if line.trim().is_empty() {
            continue;
        }
        let reply = match serde_json::from_str::<Event>(&line) {
            Ok(event) => format!("published {}\n", hub.publish(event)),
            Err(e) => format!("error {e}\n"),
        };
        let _ = out.write_all(reply.as_bytes()).await;
        let _ = out.flush().await;
    }
    ExitCode::SUCCESS
}
