//! End to end through the double's webhook_listeners: harpbridge registers its webhooks on
//! enable (idempotently) and removes them on disable; a user's changes in Nextcloud reach
//! the chain through real deliveries, out of order; the tree ends as Nextcloud's files are.

mod support;

use harpbridge::chain::{ChainStore, TreeItem};
use support::{ExApp, ExAppOptions, ExAppSpec, FakeNextcloud};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_changes_reach_the_chain_through_webhooks() {
    let nc = FakeNextcloud::start().await;
    nc.user_mkdir("alice", "Team");
    nc.user_put("alice", "Team/old.txt", "from before harpbridge");
    nc.discard_webhook_jobs();
    let dir = tempfile::tempdir().unwrap();
    let mut options = ExAppOptions::new(&nc.url, dir.path());
    options.extra_args = vec!["--library".into(), "alice:/Team".into()];
    let exapp = ExApp::start(options);
    let spec = ExAppSpec::new("harpbridge", &exapp.options.secret, exapp.target());
    assert_eq!(nc.register(&spec).await.exit_code, 0);
    exapp.wait_libraries(1).await;

    // Registered once per event, user-less, relative URI, asking for a JSON content type.
    let rows = nc.webhooks_of("harpbridge");
    assert_eq!(rows.len(), 6, "{rows:?}");
    for row in &rows {
        assert!(row.uri.starts_with("/webhooks/Node"), "{row:?}");
        assert_eq!(row.user_id, None);
        assert_eq!(
            row.headers.as_ref().unwrap()["Content-Type"],
            "application/json"
        );
    }
    assert!(nc.appapi_enable("harpbridge").await);
    assert_eq!(
        nc.webhooks_of("harpbridge").len(),
        6,
        "enabling again adds no rows"
    );
    assert_eq!(nc.disable("harpbridge").await.exit_code, 0);
    assert!(
        nc.webhooks_of("harpbridge").is_empty(),
        "disable removes them"
    );
    assert_eq!(nc.enable("harpbridge").await.exit_code, 0);
    assert_eq!(nc.webhooks_of("harpbridge").len(), 6);

    // A morning of work: created, written, copied, moved, deleted, restored.
    nc.user_mkdir("alice", "Team/docs");
    nc.user_put("alice", "Team/docs/plan.md", "# plan v1");
    nc.user_put("alice", "Team/docs/plan.md", "# plan v2, longer");
    nc.user_copy(
        "alice",
        "Team/docs/plan.md",
        "Team/docs/plan-copy.md",
        false,
    )
    .unwrap();
    let first = nc.run_webhook_worker().await;
    assert!(first.iter().all(|s| *s == 200), "{first:?}");
    exapp.wait_idle().await;
    nc.user_move("alice", "Team/docs/plan-copy.md", "Team/archive.md")
        .unwrap();
    nc.user_delete("alice", "Team/old.txt");
    nc.user_put("alice", "Team/scratch.txt", "temporary");
    nc.user_delete("alice", "Team/scratch.txt");
    nc.user_restore("alice", "Team/scratch.txt");
    nc.user_put("alice", "Elsewhere.txt", "not synced");
    let statuses = nc.run_webhook_worker().await;
    assert!(
        statuses.len() > 5 && statuses.iter().all(|s| *s == 200),
        "{statuses:?}"
    );
    let status = exapp.wait_idle().await;
    assert_eq!(status["failed"], 0, "{status}");
    // The webhooks' filter keeps Nextcloud from even calling about a file elsewhere.
    assert_eq!(status["counters"]["outside_libraries"], 0, "{status}");
    assert!(!nc.state().sent.iter().any(|r| r.body.contains("Elsewhere")));
    // Every delivery was signed as the user who made the change.
    let deliveries: Vec<_> = nc
        .state()
        .sent
        .iter()
        .filter(|r| r.path.starts_with("/webhooks/"))
        .cloned()
        .collect();
    assert!(deliveries
        .iter()
        .all(|d| d.header("authorization-app-api").is_some()
            && d.header("content-type") == Some("application/json")));
    exapp.stop();

    let db = harpbridge::db::open(dir.path()).unwrap();
    let chain = ChainStore::open(db.clone()).unwrap();
    let lib = chain.libraries()[0];
    let tree = chain.tree(&lib).unwrap();
    let mut paths: Vec<(&str, bool)> = tree
        .items
        .iter()
        .map(|(p, i)| (p.as_str(), matches!(i, TreeItem::Dir { .. })))
        .collect();
    paths.sort();
    assert_eq!(
        paths,
        [
            ("archive.md", false),
            ("docs", true),
            ("docs/plan.md", false),
            ("scratch.txt", false)
        ]
    );
    let log = chain.log(&lib).unwrap();
    let renames = log
        .iter()
        .filter_map(|h| chain.entry(h).ok().flatten())
        .filter(|(_, e)| e.meta().op.kind() == "rename")
        .count();
    assert_eq!(
        renames, 1,
        "the move is one rename entry, not a delete and a put"
    );
}
