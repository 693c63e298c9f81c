//! What reading one file from the backend gave ([`Fetched`]), and which files are read
//! without a commit of their own ([`STAGE_MAX`]): the hand-over between reading
//! ([`super::ingest`], [`super::bundle`]) and deciding ([`super::batch`]).

use super::mirror::Held;

/// What [`super::Engine::fetch_file`] found: the part of ingesting a file that asks the backend.
#[derive(Debug)]
pub(super) enum Fetched {
    /// The file id, ETag and size are the mirror's (`held`, as it was when looked at):
    /// taken as unchanged, not read.
    Trusted { held: Option<Held> },
    /// Harpbridge's own write coming back (by its checksum): not read.
    Echo,
    /// Gone between the PROPFIND and the GET (its delete event follows).
    Vanished,
    /// Read into the content store.
    Got(crate::content::Ingested),
    /// Read into the content store, not yet durable: the batch that asked for it commits
    /// it with the others before recording it ([`super::batch`]).
    Staged(Box<crate::content::Staged>),
}

/// Files up to this size are read without a commit of their own when a batch looks at
/// them ([`super::Engine::fetch_file`] with `stage`): a commit is what a small file's ingest
/// costs most, and shared by a batch it costs each almost nothing. Bigger files gain
/// nothing from sharing one, and each staged file keeps its last blocks' temporary files
/// open until the batch commits.
pub(super) const STAGE_MAX: u64 = 1 << 20;
