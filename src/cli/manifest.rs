//! `harpbridge manifest`: print the ExApp manifest, as XML or as the JSON that
//! `occ app_api:app:register --json-info` takes for a manual-install daemon.

use std::process::ExitCode;

use clap::Args;

use crate::appinfo::{Manifest, INFO_XML};

#[derive(Debug, Args)]
pub struct ManifestArgs {
    /// Print the `--json-info` form instead of info.xml.
    #[arg(long)]
    pub json: bool,
    /// The deploy daemon's name (JSON form).
    #[arg(long, default_value = "manual_install")]
    pub daemon: String,
    /// The secret to register (JSON form); the same value as APP_SECRET.
    #[arg(long, env = "APP_SECRET", hide_env_values = true, default_value = "")]
    pub secret: String,
    /// The port AppAPI calls (JSON form); the same value as APP_PORT.
    #[arg(long, env = "APP_PORT", default_value_t = 23000)]
    pub port: u16,
}

pub fn run(args: ManifestArgs) -> ExitCode {
    if !args.json {
        print!("{INFO_XML}");
        return ExitCode::SUCCESS;
    }
    let json = Manifest::shipped().and_then(|m| m.json_info(&args.daemon, &args.secret, args.port));
    match json {
        Ok(json) => {
            println!("{json}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("harpbridge: {e}");
            ExitCode::FAILURE
        }
    }
}
