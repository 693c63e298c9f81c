//! `harpbridge id`: show this device's identity (creating its key on first use).

use std::process::ExitCode;

use clap::Args;

use super::DataDirArgs;
use crate::identity::{DeviceIdentity, KEY_FILE};

/// Arguments of `harpbridge id`.
#[derive(Debug, Args)]
pub struct IdArgs {
    #[command(flatten)]
    pub data_dir: DataDirArgs,
}

/// Prints the PeerId, the public key and where the key lives. Exit 1 if the key file is
/// unusable (loose mode, corrupt).
pub fn run(args: IdArgs) -> ExitCode {
    let data_dir = match args.data_dir.resolve() {
        Ok(dir) => dir,
        Err(code) => return code,
    };
    match DeviceIdentity::load_or_create(data_dir) {
        Ok((id, created)) => {
            let path = data_dir.join(KEY_FILE);
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
