//! `harpbridge import --library new|ID PATH`: seed a library from a local tree (see
//! [`crate::roles::import`] for what is recorded and how a re-run stays idempotent).
//!
//! # Output
//!
//! - `library <ID> created` first when the import creates the library (`--library new`, or
//!   an id not held here), so scripts can read the id.
//! - `cannot read <path>: <error>` on stderr for each unreadable file or folder, as it is met.
//! - `skipped <path>: <why>` for each path not imported on purpose, then one `imported …`
//!   summary line.
//!
//! Exit 0 when everything was imported, 1 when something could not be read (the rest is
//! imported) or the import failed.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use clap::Args;

use super::DataDirArgs;
use crate::roles::import::{self, ImportSummary, LibraryChoice, Source};

/// Arguments of `harpbridge import`.
#[derive(Debug, Args)]
pub struct ImportArgs {
    #[command(flatten)]
    pub data_dir: DataDirArgs,
    /// `new`, or the library's id (32 hex characters; created if not held here).
    #[arg(long, value_name = "new|ID")]
    pub library: LibraryChoice,
    /// This device's name in a library the import creates.
    #[arg(long, default_value = "harpbridge")]
    pub name: String,
    /// The folder (or single file) to import.
    pub path: PathBuf,
}

/// Runs `import`. Exit 0 when everything was imported, 1 when something could not be read
/// (the rest is imported) or the import failed.
pub fn run(args: ImportArgs) -> ExitCode {
    let data_dir = match args.data_dir.resolve() {
        Ok(dir) => dir,
        Err(code) => return code,
    };
    match run_import(data_dir, &args) {
        Ok(summary) if summary.unreadable.is_empty() => ExitCode::SUCCESS,
        Ok(summary) => {
            eprintln!(
                "harpbridge: {} path(s) could not be read (listed above); the rest was imported",
                summary.unreadable.len()
            );
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("harpbridge: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run_import(data_dir: &Path, args: &ImportArgs) -> anyhow::Result<ImportSummary> {
    // The source first: a wrong PATH fails before anything touches the data directory.
    let source = Source::new(&args.path)?;
    let (id, chain, content) = super::node::open(data_dir)?;
    let (library, created) = import::choose_library(&chain, &id, args.library, &args.name)?;
    if created {
        println!("library {library} created");
    }

    let started = Instant::now();
    let summary = import::import(&chain, &content, &id, library, &source, |path, error| {
        eprintln!("cannot read {}: {error}", path.display());
    })?;
    let secs = started.elapsed().as_secs_f64();
    for (p, why) in &summary.skipped {
        println!("skipped {}: {why}", p.display());
    }
    println!(
        "imported {library}: {} file(s) ({} bytes) new or changed, {} unchanged, {} folder(s), \
         {} skipped, {} unreadable; read {} bytes in {secs:.2} s ({:.1} MB/s)",
        summary.files,
        summary.bytes,
        summary.unchanged,
        summary.folders,
        summary.skipped.len(),
        summary.unreadable.len(),
        summary.bytes_read,
        summary.bytes_read as f64 / 1e6 / secs.max(1e-9),
    );
    Ok(summary)
}
