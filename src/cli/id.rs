//! `harpbridge id`: show this device's identity (creating its key on first use).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use crate::identity::{DeviceIdentity, KEY_FILE};

/// Arguments of `harpbridge id`.
#[derive(Debug, Args)]
pub struct IdArgs {
    /// The data directory (holds identity.key and harpbridge.redb).
    #[arg(long, env = "APP_PERSISTENT_STORAGE", value_name = "DIR")]
    pub data_dir: PathBuf,
}

/// Prints the PeerId, the public key and where the key lives. Exit 1 if the key file is
/// unusable (loose mode, corrupt).
pub fn run(args: IdArgs) -> ExitCode {
    match DeviceIdentity::load_or_create(&args.data_dir) {
        Ok((id, created)) => {
            let path = args.data_dir.join(KEY_FILE);
            if created {
                eprintln!("created a new device key in {}", path.display());
            }
            println!("peer id:    {}", id.peer_id());
            println!("public key: {}", id.device_key());
            println!("key file:   {}", path.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("harpbridge: {e}");
            ExitCode::FAILURE
        }
    }
}
