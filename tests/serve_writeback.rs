//! Write-back end to end: an office node's changes reach Nextcloud through `harpbridge
//! serve` (the real binary, against the Nextcloud double), exactly once.
//!
//! - The office appends a folder, a file, a move and a delete; serve pulls them and the
//!   double's files become the office's tree, byte for byte (with `OC-Checksum` and the
//!   office's mtime; the moved file keeps its Nextcloud file id). The webhooks Nextcloud
//!   fires for serve's own writes add no entry to the chain.
//! - A version only the office has is fetched from it (`/harp/blocks/2`), then written.
//! - A file a user edits in Nextcloud while the office writes it is not overwritten: both
//!   versions are kept, the office's under its conflict name, and the chain says so.
//! - Nextcloud down (503): write-back waits, shows `retrying` in `/api/ingest`, then writes.
//! - Nextcloud refusing serve's secret (401): one try, then a pause that pulls do not end;
//!   AppAPI's next enable resumes it.
//! - A folder the office deletes after a user added a file to it loses only what the office
//!   saw.
//! - Without webhooks, periodic full scans record no Delete for a file that came from a
//!   peer and is not written back yet (its blocks are nowhere to be had), while a file a
//!   user deleted is recorded as deleted; a user's file where a peer's version waits keeps
//!   both versions.
//! - A file a user creates at a new path after serve looked there and before its PUT is not
//!   overwritten: the PUT carries `If-None-Match: *`, Nextcloud answers 412, and both
//!   versions are kept as for an edit.

mod support;

use std::time::Duration;

use bytes::Bytes;
use harpbridge::chain::{conflict_name, ChainPath, ContentId, LibraryId, Op, TreeItem};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
// An office node over its own data directory, dialling serve.
use support::swarm::until;
use support::swarm::TestNode as Office;
use support::{ExApp, ExAppOptions, ExAppSpec, FakeNextcloud};

const WAIT: Duration = Duration::from_secs(60);
const ALPHA: &[u8] = b"alpha: written in Nextcloud before the swarm";
const BETA: &[u8] = b"beta: another file, moved by the office";
const EDITED: &[u8] = b"edited in Nextcloud while the office wrote it";

/// What these tests do with an office: import and read.
impl Office {
    /// Imports bytes into the office's content store; their version id.
    fn import(&self, lib: LibraryId, bytes: &[u8]) -> ContentId {
        let mut writer = self.content.writer(lib);
        writer.write(bytes).unwrap();
        writer.finish().unwrap().id.into()
    }

    /// The conflict name the office's latest version of `path` gets beside a user's.
    fn conflict_name(&self, lib: &LibraryId, path: &str) -> String {
        let written = self.chain.tree(lib).unwrap().items[path].clone();
        let TreeItem::File { entry, .. } = written else {
            panic!("{written:?}")
        };
        let (_, office_entry) = self.chain.entry(&entry).unwrap().unwrap();
        conflict_name(path, office_entry.meta().wall_ms, &self.id.device_key())
    }

    fn content_at(&self, lib: &LibraryId, path: &str) -> Option<ContentId> {
        match self.chain.tree(lib).ok()?.items.get(path)? {
            TreeItem::File { content, .. } => Some(*content),
            TreeItem::Dir { .. } => None,
        }
    }
}

fn path(p: &str) -> ChainPath {
    ChainPath::new(p).unwrap()
}

fn put(p: &str, content: ContentId, size: usize, mtime_ms: i64) -> Op {
    Op::Put {
        path: path(p),
        size: size as u64,
        mtime_ms,
        content,
        nextcloud: None,
    }
}

/// Starts serve with one library (alice's Team), an office, and pairs them; waits until
/// the office holds `seen`.
async fn setup(
    nc: &FakeNextcloud,
    dir: &std::path::Path,
    env: Vec<(String, String)>,
    seen: &str,
) -> (ExApp, LibraryId, Office) {
    let mut options = ExAppOptions::new(&nc.url, dir);
    options.extra_args = vec!["--library".into(), "alice:/Team".into()];
    options.extra_env = env;
    let exapp = ExApp::start(options);
    let spec = ExAppSpec::new("harpbridge", &exapp.options.secret, exapp.target());
    assert_eq!(nc.register(&spec).await.exit_code, 0);
    let lib_hex = exapp.wait_libraries(1).await.remove(0);
    let lib: LibraryId = lib_hex.parse().unwrap();
    let office = Office::dialling(vec![exapp.swarm_addr().await.1]).await;
    let office_id = office.id.peer_id().to_base58();
    until(WAIT, "serve to meet the office", || {
        exapp.peer(&office_id, "admin")
    })
    .await;
    let response = exapp
        .signed(
            Method::POST,
            &format!("/api/admin/peers/{office_id}/pair"),
            "admin",
        )
        .json(&json!({"libraries": [lib_hex], "name": "office"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    until(WAIT, "the office to pull the library", || async {
        office.content_at(&lib, seen).map(|_| ())
    })
    .await;
    (exapp, lib, office)
}

/// [`setup`] over a Team folder holding one file, `seed.txt`; the data directory is
/// returned to be kept until the end.
async fn seeded() -> (FakeNextcloud, tempfile::TempDir, ExApp, LibraryId, Office) {
    let nc = FakeNextcloud::start().await;
    nc.user_mkdir("alice", "Team");
    nc.user_put("alice", "Team/seed.txt", ALPHA);
    nc.discard_webhook_jobs();
    let dir = tempfile::tempdir().unwrap();
    let (exapp, lib, office) = setup(&nc, dir.path(), Vec::new(), "seed.txt").await;
    (nc, dir, exapp, lib, office)
}

async fn serve_entries(exapp: &ExApp) -> u64 {
    let libraries = exapp.api("/api/libraries", "admin").await;
    libraries["libraries"][0]["entries"].as_u64().unwrap()
}

/// Waits until serve holds every entry the office holds.
async fn pulled(exapp: &ExApp, office: &Office, lib: &LibraryId) -> u64 {
    let total = office.chain.len(lib).unwrap() as u64;
    until(WAIT, "serve to pull the office's entries", || async {
        (serve_entries(exapp).await == total).then_some(total)
    })
    .await
}

fn bytes_of(nc: &FakeNextcloud, p: &str) -> Option<Vec<u8>> {
    nc.file("alice", p)?.content.map(|c| c.to_vec())
}

/// Checks that Nextcloud kept the user's bytes at `path`, then waits until the office's
/// chain holds both versions: the user's under `path`, the office's `ours` under `conflict`.
async fn both_kept(
    nc: &FakeNextcloud,
    office: &Office,
    lib: LibraryId,
    path: &str,
    users: &[u8],
    conflict: &str,
    ours: ContentId,
) {
    assert_eq!(
        bytes_of(nc, &format!("Team/{path}")).as_deref(),
        Some(users),
        "the user's version keeps its name"
    );
    let theirs = office.import(lib, users);
    until(WAIT, "the office to learn both versions", || async {
        (office.content_at(&lib, path) == Some(theirs)
            && office.content_at(&lib, conflict) == Some(ours))
        .then_some(())
    })
    .await;
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_changes_reach_nextcloud_once_and_never_over_a_users_edit() {
    let nc = FakeNextcloud::start().await;
    nc.user_mkdir("alice", "Team");
    nc.user_put("alice", "Team/a.txt", ALPHA);
    nc.user_put("alice", "Team/b.txt", BETA);
    nc.discard_webhook_jobs();
    let b_fileid = nc.file("alice", "Team/b.txt").unwrap().fileid;
    let dir = tempfile::tempdir().unwrap();
    let (exapp, lib, office) = setup(&nc, dir.path(), Vec::new(), "b.txt").await;

    // The office writes a folder, a copy of a.txt's bytes, moves b.txt into the folder,
    // and deletes a.txt. serve has these bytes already (it read them from Nextcloud).
    let alpha = office.import(lib, ALPHA);
    assert_eq!(
        office.content_at(&lib, "a.txt"),
        Some(alpha),
        "the same bytes are the same version on both sides"
    );
    let mtime_ms = 1_700_000_000_000;
    office
        .publish(
            lib,
            vec![
                Op::Mkdir { path: path("docs") },
                put("docs/copy.txt", alpha, ALPHA.len(), mtime_ms),
                Op::Rename {
                    from: path("b.txt"),
                    to: path("docs/b.txt"),
                },
                Op::Delete {
                    path: path("a.txt"),
                },
            ],
        )
        .await;
    until(WAIT, "Nextcloud to hold the office's tree", || async {
        (nc.file("alice", "Team/a.txt").is_none()
            && nc.file("alice", "Team/b.txt").is_none()
            && nc.file("alice", "Team/docs").is_some_and(|d| d.is_dir())
            && bytes_of(&nc, "Team/docs/copy.txt").as_deref() == Some(ALPHA)
            && bytes_of(&nc, "Team/docs/b.txt").as_deref() == Some(BETA))
        .then_some(())
    })
    .await;
    let copy = nc.file("alice", "Team/docs/copy.txt").unwrap();
    assert_eq!(
        copy.checksum,
        Some(format!("SHA256:{}", sha256_hex(ALPHA))),
        "written with OC-Checksum"
    );
    assert_eq!(copy.mtime, mtime_ms / 1000, "written with X-OC-MTime");
    assert_eq!(
        nc.file("alice", "Team/docs/b.txt").unwrap().fileid,
        b_fileid,
        "a move, not a new upload"
    );

    // Nextcloud's webhooks for serve's own writes add nothing to the chain.
    let entries = pulled(&exapp, &office, &lib).await;
    let statuses = nc.run_webhook_worker().await;
    assert!(
        !statuses.is_empty() && statuses.iter().all(|s| *s == 200),
        "{statuses:?}"
    );
    exapp.wait_idle().await;
    assert_eq!(serve_entries(&exapp).await, entries, "no echo entries");
    until(WAIT, "write-back to report nothing pending", || async {
        let status = exapp.api("/api/ingest", "admin").await;
        (status["writeback"]["state"] == "ok" && status["writeback"]["pending"] == 0).then_some(())
    })
    .await;

    // A user edits docs/copy.txt in Nextcloud (its webhook not delivered yet) while the
    // office writes another version there: the user's edit is not overwritten, and both
    // versions are kept, the office's under its conflict name.
    nc.user_put("alice", "Team/docs/copy.txt", EDITED);
    let beta = office.import(lib, BETA);
    office
        .publish(
            lib,
            vec![put("docs/copy.txt", beta, BETA.len(), mtime_ms + 1000)],
        )
        .await;
    let conflict = office.conflict_name(&lib, "docs/copy.txt");
    until(
        WAIT,
        "the office's version under its conflict name",
        || async {
            (bytes_of(&nc, &format!("Team/{conflict}")).as_deref() == Some(BETA)).then_some(())
        },
    )
    .await;
    both_kept(&nc, &office, lib, "docs/copy.txt", EDITED, &conflict, beta).await;
    let entries = pulled(&exapp, &office, &lib).await;
    let statuses = nc.run_webhook_worker().await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    let status = exapp.wait_idle().await;
    assert_eq!(
        serve_entries(&exapp).await,
        entries,
        "the user's edit and the conflict copy were recorded once"
    );
    assert_eq!(status["counters"]["writeback_conflicts"], 1, "{status}");

    // Nextcloud down: write-back waits and says so, then writes.
    nc.state().dav_down = true;
    office
        .publish(
            lib,
            vec![Op::Mkdir {
                path: path("later"),
            }],
        )
        .await;
    let retrying = until(WAIT, "write-back to report Nextcloud down", || async {
        let status = exapp.api("/api/ingest", "admin").await;
        (status["writeback"]["state"] == "retrying").then_some(status)
    })
    .await;
    assert!(
        retrying["writeback"]["error"]
            .as_str()
            .is_some_and(|e| e.contains("503")),
        "{retrying}"
    );
    assert!(nc.file("alice", "Team/later").is_none());
    nc.state().dav_down = false;
    until(
        WAIT,
        "the folder to be written once Nextcloud is back",
        || async { nc.file("alice", "Team/later").map(|_| ()) },
    )
    .await;
    until(WAIT, "write-back to be ok again", || async {
        let status = exapp.api("/api/ingest", "admin").await;
        (status["writeback"]["state"] == "ok" && status["writeback"]["pending"] == 0).then_some(())
    })
    .await;

    // Nextcloud refuses serve's secret (401): write-back tries once, says so, and does not
    // try again when more entries arrive (each try counts toward Nextcloud's brute-force
    // lock-out); AppAPI enabling the app again resumes it.
    let secret = nc.app("harpbridge").unwrap().secret;
    nc.state().apps.get_mut("harpbridge").unwrap().secret = "not-the-secret".into();
    nc.clear_traffic();
    office
        .publish(
            lib,
            vec![Op::Mkdir {
                path: path("refused"),
            }],
        )
        .await;
    let refused = until(WAIT, "write-back to report the refused secret", || async {
        let status = exapp.api("/api/ingest", "admin").await;
        (status["writeback"]["state"] == "unauthorized").then_some(status)
    })
    .await;
    assert!(
        refused["writeback"]["error"]
            .as_str()
            .is_some_and(|e| e.contains("401")),
        "{refused}"
    );
    office
        .publish(
            lib,
            vec![Op::Mkdir {
                path: path("refused-too"),
            }],
        )
        .await;
    pulled(&exapp, &office, &lib).await;
    // Longer than write-back's first backoffs (0.5 s, then 1 s).
    tokio::time::sleep(Duration::from_secs(2)).await;
    let tries = nc.received_matching("/remote.php/dav/");
    assert_eq!(tries.len(), 1, "one try, then a pause: {tries:?}");
    assert_eq!(tries[0].status, 401);
    nc.state().apps.get_mut("harpbridge").unwrap().secret = secret;
    assert!(nc.appapi_enable("harpbridge").await);
    until(WAIT, "write-back to resume after the enable", || async {
        (nc.file("alice", "Team/refused").is_some()
            && nc.file("alice", "Team/refused-too").is_some())
        .then_some(())
    })
    .await;

    // The office deletes a folder a user has just added a file to: only what the office
    // saw goes, the user's file stays, and the chain learns it.
    nc.user_put("alice", "Team/docs/added.txt", ALPHA);
    office
        .publish(lib, vec![Op::Delete { path: path("docs") }])
        .await;
    until(WAIT, "the office's files in docs to go", || async {
        (nc.file("alice", "Team/docs/b.txt").is_none()
            && nc.file("alice", "Team/docs/copy.txt").is_none()
            && nc.file("alice", &format!("Team/{conflict}")).is_none())
        .then_some(())
    })
    .await;
    until(WAIT, "the office to learn the user's file", || async {
        (office.content_at(&lib, "docs/added.txt") == Some(alpha)).then_some(())
    })
    .await;
    assert_eq!(
        bytes_of(&nc, "Team/docs/added.txt").as_deref(),
        Some(ALPHA),
        "the user's file stays"
    );

    office.node.shutdown().await;
    exapp.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scans_without_webhooks_never_delete_what_a_peer_wrote() {
    let nc = FakeNextcloud::start().await;
    nc.state().webhook_listeners_enabled = false;
    nc.user_mkdir("alice", "Team");
    nc.user_put("alice", "Team/keep.txt", ALPHA);
    nc.user_put("alice", "Team/doomed.txt", BETA);
    nc.discard_webhook_jobs();
    let dir = tempfile::tempdir().unwrap();
    let env = vec![("HARPBRIDGE_SCAN_INTERVAL".to_owned(), "1".to_owned())];
    let (exapp, lib, office) = setup(&nc, dir.path(), env, "keep.txt").await;
    let status = exapp.api("/api/ingest", "admin").await;
    assert_eq!(status["webhooks"]["state"], "unavailable", "{status}");

    // A version no one can send (its blocks are on no device that is up): it stays
    // pending, and Nextcloud not having it is no deletion.
    let nowhere = ContentId([7; 32]);
    office
        .publish(
            lib,
            vec![
                Op::Mkdir {
                    path: path("from-office"),
                },
                put("from-office/pending.txt", nowhere, 10, 0),
            ],
        )
        .await;
    pulled(&exapp, &office, &lib).await;
    until(WAIT, "the office's folder in Nextcloud", || async {
        nc.file("alice", "Team/from-office").map(|_| ())
    })
    .await;
    // A user deletes a file: the scan must still record that.
    nc.user_delete("alice", "Team/doomed.txt");
    let lib_hex = lib.to_hex();
    // The periodic catch-ups stand in for webhooks.
    let runs = |status: &Value| {
        status["libraries"]
            .as_array()
            .and_then(|l| l.iter().find(|l| l["id"] == lib_hex.as_str()))
            .and_then(|l| l["catch_up"]["runs"].as_u64())
    };
    let mut last = runs(&exapp.api("/api/ingest", "admin").await);
    for _ in 0..2 {
        last = Some(
            until(WAIT, "another catch-up", || async {
                let status = exapp.api("/api/ingest", "admin").await;
                runs(&status).filter(|f| Some(*f) != last)
            })
            .await,
        );
    }
    let lines = exapp.entry_lines().await;
    assert!(lines.contains(&"delete doomed.txt".to_owned()), "{lines:?}");
    assert!(
        !lines.iter().any(|l| l.starts_with("delete from-office")),
        "{lines:?}"
    );
    let status = exapp.api("/api/ingest", "admin").await;
    assert_eq!(status["writeback"]["state"], "ok", "{status}");
    assert_eq!(status["writeback"]["waiting_for_content"], 1, "{status}");
    assert_eq!(status["writeback"]["pending"], 1, "{status}");
    until(
        WAIT,
        "the office to see the user's delete and nothing else",
        || async {
            let tree = office.chain.tree(&lib).ok()?;
            (!tree.items.contains_key("doomed.txt")).then_some(())
        },
    )
    .await;
    let tree = office.chain.tree(&lib).unwrap();
    let Some(TreeItem::File { entry, .. }) = tree.items.get("from-office/pending.txt") else {
        panic!("{tree:?}")
    };
    let (_, pending_entry) = office.chain.entry(entry).unwrap().unwrap();
    assert!(nc.file("alice", "Team/from-office/pending.txt").is_none());

    // A user writes that path in Nextcloud while the peer's version still waits: the scan
    // keeps both, Nextcloud's under the name, the peer's under its conflict name (still
    // waiting for its blocks).
    nc.user_put("alice", "Team/from-office/pending.txt", EDITED);
    let edited = office.import(lib, EDITED);
    let conflict = conflict_name(
        "from-office/pending.txt",
        pending_entry.meta().wall_ms,
        &office.id.device_key(),
    );
    until(WAIT, "the office to learn both versions", || async {
        (office.content_at(&lib, "from-office/pending.txt") == Some(edited)
            && office.content_at(&lib, &conflict) == Some(nowhere))
        .then_some(())
    })
    .await;
    let status = until(
        WAIT,
        "write-back to wait for the conflict copy only",
        || async {
            let status = exapp.api("/api/ingest", "admin").await;
            (status["writeback"]["pending"] == 1 && status["counters"]["writeback_conflicts"] == 1)
                .then_some(status)
        },
    )
    .await;
    assert_eq!(status["writeback"]["waiting_for_content"], 1, "{status}");
    assert_eq!(
        bytes_of(&nc, "Team/from-office/pending.txt").as_deref(),
        Some(EDITED)
    );

    office.node.shutdown().await;
    exapp.stop();
}

/// A version only the office has: serve fetches its blocks from the office, then writes
/// it into Nextcloud, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn versions_only_a_peer_has_are_fetched_then_written() {
    let (nc, _dir, exapp, lib, office) = seeded().await;
    // 3 MiB that do not compress or repeat: several blocks.
    let bytes: Vec<u8> = (0..3u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let fresh = office.import(lib, &bytes);
    office
        .publish(
            lib,
            vec![put("fresh.bin", fresh, bytes.len(), 1_700_000_000_000)],
        )
        .await;
    until(WAIT, "the office's bytes in Nextcloud", || async {
        (bytes_of(&nc, "Team/fresh.bin").as_deref() == Some(bytes.as_slice())).then_some(())
    })
    .await;
    assert_eq!(
        nc.file("alice", "Team/fresh.bin").unwrap().checksum,
        Some(format!("SHA256:{}", sha256_hex(&bytes)))
    );
    let entries = pulled(&exapp, &office, &lib).await;
    let statuses = nc.run_webhook_worker().await;
    assert!(
        !statuses.is_empty() && statuses.iter().all(|s| *s == 200),
        "{statuses:?}"
    );
    let status = exapp.wait_idle().await;
    assert_eq!(serve_entries(&exapp).await, entries, "no echo entries");
    assert_eq!(status["writeback"]["state"], "ok", "{status}");
    assert_eq!(status["writeback"]["pending"], 0, "{status}");
    assert!(
        status["counters"]["bytes_out"].as_u64() >= Some(bytes.len() as u64),
        "{status}"
    );
    office.node.shutdown().await;
    exapp.stop();
}

/// A file a user creates where the office's new file goes, after serve found the path
/// empty and before its PUT: the user's file keeps its name, the office's version becomes
/// the conflict copy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_a_user_creates_between_the_look_and_the_write_is_not_overwritten() {
    let (nc, _dir, exapp, lib, office) = seeded().await;

    // The office adds new.txt. serve looks (nothing there) and writes it; a user creates
    // new.txt in Nextcloud the moment serve's PUT arrives. Nextcloud refuses the PUT
    // (If-None-Match: *), and serve keeps both: the user's file under its name, the
    // office's under its conflict name.
    nc.state().user_write_before_put = Some((
        "alice".into(),
        "Team/new.txt".into(),
        Bytes::from_static(EDITED),
    ));
    let beta = office.import(lib, BETA);
    office
        .publish(
            lib,
            vec![put("new.txt", beta, BETA.len(), 1_700_000_000_000)],
        )
        .await;
    let conflict = office.conflict_name(&lib, "new.txt");
    // Either outcome ends the wait: the office's bytes over the user's file, or under
    // the conflict name.
    until(WAIT, "serve to write the office's version", || async {
        (bytes_of(&nc, "Team/new.txt").as_deref() == Some(BETA)
            || bytes_of(&nc, &format!("Team/{conflict}")).as_deref() == Some(BETA))
        .then_some(())
    })
    .await;
    assert!(
        nc.state().user_write_before_put.is_none(),
        "the user's write raced serve's PUT"
    );
    assert_eq!(
        bytes_of(&nc, &format!("Team/{conflict}")).as_deref(),
        Some(BETA),
        "the office's version is the conflict copy"
    );
    both_kept(&nc, &office, lib, "new.txt", EDITED, &conflict, beta).await;
    let status = exapp.wait_idle().await;
    assert_eq!(status["counters"]["writeback_conflicts"], 1, "{status}");
    office.node.shutdown().await;
    exapp.stop();
}
