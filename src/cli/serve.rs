//! `harpbridge serve`: the ExApp itself: AppAPI lifecycle, webhooks, panel, and the swarm
//! (see [`crate::web::swarm`]), in one process.

use std::process::ExitCode;

use anyhow::Context;
use clap::Args;

use crate::config::ConfigArgs;
use crate::listener;
use crate::web::{self, AppState};

#[derive(Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
}

/// Validates the settings (exit 2 with one line on a bad one), then serves until stopped.
pub fn run(args: ServeArgs) -> ExitCode {
    let config = match args.config.validate() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("harpbridge: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("harpbridge: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("harpbridge: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(config: crate::config::Config) -> anyhow::Result<()> {
    for warning in config.warnings() {
        tracing::warn!("{warning}");
    }
    let listen = config.listen.clone();
    // Bind first: a taken port or a bad socket path fails before anything touches storage.
    let bound = listener::bind_all(&listen).await.context("cannot listen")?;
    let state = AppState::new(config)
        .context("cannot set up the Nextcloud client")?
        .start_engine();
    if let Some(engine) = &state.engine {
        // Only once AppAPI has enabled us are our credentials good: calls made before
        // registration count as brute-force attempts against this address. (The engine's
        // catch-up checks our webhooks at start; AppAPI does not call /enabled again when
        // serve merely restarts.)
        if engine.was_enabled() {
            let engine = engine.clone();
            let wanted = state.config.libraries.clone();
            tokio::spawn(async move { engine.ensure_libraries(&wanted).await });
        }
    }
    // Before "serving" is logged, so that the swarm's state is known to the first request.
    web::swarm::start(&state).await;
    let swarm = state.swarm.clone();
    let chain = state.engine.as_ref().map(|e| e.chain().clone());
    tracing::info!(
        app_id = %state.config.app_id,
        version = %state.config.app_version,
        nextcloud = %state.config.nextcloud_url,
        listen = %bound.iter().map(listener::Bound::describe).collect::<Vec<_>>().join(","),
        harp = state.config.harp.is_some(),
        "harpbridge serving"
    );
    let served = listener::serve_all(bound, web::router(state))
        .await
        .context("server failed");
    swarm.shutdown().await;
    if let Some(chain) = chain {
        super::save_checkpoint(chain).await;
    }
    served
}
