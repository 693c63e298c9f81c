//! Logging with `tracing`: readable lines by default, JSON with `--log-format json`.
//!
//! Nothing in harpbridge logs request headers, and secrets are wrapped in
//! [`crate::config::Secret`], whose `Debug` hides them, so no log line can hold
//! `APP_SECRET`, `AUTHORIZATION-APP-API`, `harp-shared-key` or a cookie.

use std::io::IsTerminal;

use clap::{Args, ValueEnum};
use tracing_subscriber::EnvFilter;

#[derive(Debug, Clone, Copy, Default, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

#[derive(Debug, Clone, Args)]
pub struct LogArgs {
    /// Log line format.
    #[arg(
        long,
        global = true,
        value_enum,
        default_value_t,
        env = "HARPBRIDGE_LOG_FORMAT"
    )]
    pub log_format: LogFormat,
    /// Filter, in `RUST_LOG` syntax (e.g. `info,harpbridge=debug`).
    #[arg(long, global = true, env = "RUST_LOG", default_value = "info")]
    pub log: String,
}

/// Installs the global subscriber; logs go to stderr so stdout stays free for commands' output.
pub fn init(args: &LogArgs) {
    let filter = EnvFilter::try_new(&args.log).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let result = match args.log_format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    // A second init (only possible in tests) keeps the first subscriber.
    drop(result);
}
