//! The `harpbridge` binary: parse the command line, set up logging, run one role.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use harpbridge::{cli, logging};

#[derive(Debug, Parser)]
#[command(
    name = "harpbridge",
    version,
    about = "Harp peer-to-peer file sync for Nextcloud"
)]
struct Cli {
    #[command(flatten)]
    log: logging::LogArgs,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run as the Nextcloud ExApp: AppAPI lifecycle, webhooks, panel and swarm.
    Serve(Box<cli::serve::ServeArgs>),
    /// Check the running serve, Nextcloud, webhooks and background jobs, and say what to fix.
    Doctor(Box<cli::doctor::DoctorArgs>),
    /// Print the ExApp manifest (info.xml, or the JSON for `occ app_api:app:register --json-info`).
    Manifest(cli::manifest::ManifestArgs),
    /// Show this device's identity (its PeerId), creating its key on first use.
    Id(cli::id::IdArgs),
    /// Look at and verify the hash chains: log, show, verify.
    Chain(cli::chain::ChainArgs),
    /// Run the swarm over a data directory: find peers, keep shared libraries' chains in sync,
    /// and with `--dir PATH` keep a folder in two-way sync with a library.
    Node(cli::node::NodeArgs),
    /// Show what a device keeps in sync: libraries, peers (LAN/WAN), what is in flight.
    Status(cli::status::StatusArgs),
    /// List the peers around (trusted or only discovered), or pair a device with a library.
    Peers(cli::peers::PeersArgs),
    /// List the libraries peers offer to this device, and accept or reject them.
    Offers(cli::offers::OffersArgs),
    /// Show or change the WAN bandwidth limits (globally or per library); running nodes apply them.
    Limits(cli::limits::LimitsArgs),
    /// Pair a device: make it a member of this device's libraries (offline, on a data dir).
    Pair(cli::pair::PairArgs),
    /// Seed a library from a local folder: `--library new` (or an id) and a PATH.
    Import(cli::import::ImportArgs),
    /// Run as an office cache: keep every library's chain and prefetch its current content.
    Cache(cli::cache::CacheArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    logging::init(&cli.log);
    match cli.command {
        Command::Serve(args) => cli::serve::run(*args),
        Command::Id(args) => cli::id::run(args),
        Command::Chain(args) => cli::chain::run(args),
        Command::Node(args) => cli::node::run(args),
        Command::Status(args) => cli::status::run(args),
        Command::Peers(args) => cli::peers::run(args),
        Command::Offers(args) => cli::offers::run(args),
        Command::Limits(args) => cli::limits::run(args),
        Command::Pair(args) => cli::pair::run(args),
        Command::Manifest(args) => cli::manifest::run(args),
        Command::Doctor(args) => cli::doctor::run(*args),
        Command::Import(args) => cli::import::run(args),
        Command::Cache(args) => cli::cache::run(args),
    }
}
