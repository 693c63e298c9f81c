//! Test support for the panel's browser test (`tests/browser/`): the real harpbridge
//! router and engine (on a fresh data directory) on 127.0.0.1, whose
//! [`Hub`](harpbridge::web::hub::Hub) also publishes the events it reads from standard
//! input, one JSON [`Event`] per line (`{"type":"entry_appended",
//! "entry":{…}}`), exactly as the chain, swarm and transfer code will publish them.
//!
//! Its swarm runs on loopback, and an office device in the same process offers it a
//! library ("Office plans"), so the panel has an offer for an admin to accept or refuse.
//!
//! Settings come from the usual AppAPI variables (`APP_ID`, `APP_SECRET`,
//! `APP_VERSION`, `NEXTCLOUD_URL`); the admin check asks `NEXTCLOUD_URL`, the harness's
//! stand-in for Nextcloud. Prints `listening 127.0.0.1:PORT` once it serves, and
//! `published SEQ` after each event. Ends when standard input closes.

use std::process::ExitCode;

use harpbridge::web::events::Event;
use harpbridge::web::{router, AppState};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
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

#[tokio::main]
async fn main() -> ExitCode {
    // A fresh data directory for this run's engine (chain, content, libraries).
    let data =
        std::env::temp_dir().join(format!("harpbridge-panel-fixture-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data);
    let config = settings(&[
        (
            "app-id",
            env("APP_ID").unwrap_or_else(|| "harpbridge".into()),
        ),
        ("app-secret", env("APP_SECRET").unwrap_or_default()),
        (
            "app-version",
            env("APP_VERSION").unwrap_or_else(|| "0.1.0".into()),
        ),
        ("app-host", "127.0.0.1".into()),
        ("app-port", "9".into()),
        ("nextcloud-url", env("NEXTCLOUD_URL").unwrap_or_default()),
        ("data-dir", data.display().to_string()),
        ("p2p-listen", "/ip4/127.0.0.1/tcp/0".into()),
        ("mdns", "off".into()),
    ]);
    let config = match config.validate() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("panel_fixture: {e}");
            return ExitCode::from(2);
        }
    };
    let state = match AppState::new(config) {
        Ok(state) => state.start_engine(),
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
    if let Some(error) = &state.engine_error {
        eprintln!("panel_fixture: {error}");
        return ExitCode::FAILURE;
    }
    // The swarm, and an office that offers it a library: the panel's offers to act on.
    harpbridge::web::swarm::start(&state).await;
    let office = match state.swarm.node() {
        Some(serve) => match office_offering(&serve, &data.join("office")).await {
            Ok(office) => Some(office),
            Err(e) => {
                eprintln!("panel_fixture: the offering office: {e:#}");
                return ExitCode::FAILURE;
            }
        },
        None => {
            eprintln!("panel_fixture: the swarm did not start");
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
    if let Some(office) = office {
        office.shutdown().await;
    }
    let _ = std::fs::remove_dir_all(&data);
    ExitCode::SUCCESS
}

/// An office device (its own data directory at `dir`) with a library, "Office plans",
/// that lists the fixture's device as a member: it dials the fixture, which is offered the
/// library and waits for an admin.
async fn office_offering(
    serve: &harpbridge::p2p::NodeHandle,
    dir: &std::path::Path,
) -> anyhow::Result<harpbridge::p2p::NodeHandle> {
    use harpbridge::chain::{ChainPath, ChainStore, Op};
    use harpbridge::content::{ContentStore, StoreOptions};
    use harpbridge::p2p::{Node, P2pConfig};
    std::fs::create_dir_all(dir)?;
    let (id, _) = harpbridge::identity::DeviceIdentity::load_or_create(dir)?;
    let database = harpbridge::db::open(dir)?;
    let chain = ChainStore::open(database.clone())?;
    let content = ContentStore::open(database, dir, StoreOptions::default())?;
    let (library, _) = chain.create_library(id.signing_key(), "Office plans")?;
    let serve_key = harpbridge::p2p::device_key(&serve.peer_id())
        .ok_or_else(|| anyhow::anyhow!("the fixture's id is not an ed25519 key"))?;
    let ops = vec![
        Op::AddDevice {
            device: serve_key,
            name: "panel fixture".into(),
        },
        Op::Mkdir {
            path: ChainPath::new("plans")?,
        },
    ];
    chain.append_batch(&library, id.signing_key(), ops)?;
    let config = P2pConfig {
        listen: vec!["/ip4/127.0.0.1/tcp/0".parse()?],
        mdns: false,
        ..P2pConfig::default()
    };
    let node = Node::start(config, &id, chain, content).await?;
    let serve_addr = serve
        .listen_addrs()
        .into_iter()
        .next()
        .ok_or_else(|| anyhow::anyhow!("the fixture's swarm has no address"))?;
    node.dial(serve_addr).await?;
    Ok(node)
}
