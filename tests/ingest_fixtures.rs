//! Every webhook delivery captured from a real Nextcloud 33 (fixtures `webhooks/01`–`17`),
//! replayed byte for byte through the ExApp's real HTTP endpoint, yields the expected chain
//! entry: the double's files are put in the state the captured operation left, then the
//! captured deliveries are sent in their captured (out-of-)order.

mod support;

use std::path::PathBuf;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde_json::Value;
use support::files::Content;
use support::{ExApp, ExAppOptions, ExAppSpec, FakeNextcloud};

fn fixture(name: &str) -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/fixtures/nextcloud-33/webhooks")
        .join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

/// Sends a fixture's deliveries as captured, re-signed with this ExApp's secret.
async fn replay(exapp: &ExApp, name: &str) {
    let f = fixture(name);
    let deliveries = f["deliveries"].as_array().expect("deliveries");
    assert!(!deliveries.is_empty(), "{name} has no deliveries");
    for d in deliveries {
        let request = &d["request"];
        let line = request["line"].as_str().unwrap();
        let path = line.split_whitespace().nth(1).unwrap();
        let mut builder = reqwest::Client::new().post(format!("{}{path}", exapp.base_url()));
        for h in request["headers"].as_array().unwrap() {
            let (k, v) = (h[0].as_str().unwrap(), h[1].as_str().unwrap());
            let v = match k.to_ascii_lowercase().as_str() {
                "host" | "content-length" => continue,
                "ex-app-id" => exapp.options.app_id.clone(),
                "authorization-app-api" => {
                    let decoded = String::from_utf8(STANDARD.decode(v).unwrap()).unwrap();
                    let user = decoded.split_once(':').unwrap().0;
                    STANDARD.encode(format!("{user}:{}", exapp.options.secret))
                }
                _ => v.to_owned(),
            };
            builder = builder.header(k, v);
        }
        let body = request["body"].as_str().unwrap().to_owned();
        let response = builder.body(body).send().await.unwrap();
        assert_eq!(response.status(), 200, "{name}: {line}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn captured_deliveries_become_the_expected_entries() {
    let nc = FakeNextcloud::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut options = ExAppOptions::new(&nc.url, dir.path());
    options.extra_args = vec!["--library".into(), "admin:/".into()];
    let exapp = ExApp::start(options);
    let spec = ExAppSpec::new("harpbridge", &exapp.options.secret, exapp.target());
    assert_eq!(nc.register(&spec).await.exit_code, 0);
    exapp.wait_libraries(1).await;
    let mut seen = exapp.entry_lines().await.len();

    type Setup = fn(&FakeNextcloud);
    let steps: Vec<(&str, Setup, Vec<&str>)> = vec![
        (
            "01-mkcol-folder.json",
            |nc| drop(nc.user_mkdir("admin", "fxev")),
            vec!["mkdir fxev"],
        ),
        (
            "02-put-new-file.json",
            |nc| drop(nc.user_put("admin", "fxev/a.txt", "hello a\n")),
            vec!["put fxev/a.txt"],
        ),
        (
            "03-put-overwrite.json",
            |nc| drop(nc.user_put("admin", "fxev/a.txt", "hello a, version 2\n")),
            vec!["put fxev/a.txt"],
        ),
        (
            "04-put-new-file-with-mtime.json",
            |nc| {
                drop(nc.user_put_content(
                    "admin",
                    "fxev/b.txt",
                    Content::Bytes("bee\n".into()),
                    Some(1_700_000_000),
                ))
            },
            vec!["put fxev/b.txt"],
        ),
        (
            // A touch changes the mtime only: no new entry.
            "05-proppatch-lastmodified.json",
            |nc| {
                drop(nc.user_put_content(
                    "admin",
                    "fxev/a.txt",
                    Content::Bytes("hello a, version 2\n".into()),
                    Some(1_800_000_000),
                ))
            },
            vec![],
        ),
        (
            "06-copy-file.json",
            |nc| {
                drop(
                    nc.user_copy("admin", "fxev/a.txt", "fxev/a-copy.txt", false)
                        .unwrap(),
                )
            },
            vec!["put fxev/a-copy.txt"],
        ),
        (
            "07-move-rename-file.json",
            |nc| {
                drop(
                    nc.user_move("admin", "fxev/a-copy.txt", "fxev/renamed.txt")
                        .unwrap(),
                )
            },
            vec!["rename fxev/a-copy.txt -> fxev/renamed.txt"],
        ),
        (
            "08-delete-file.json",
            |nc| nc.user_delete("admin", "fxev/renamed.txt"),
            vec!["delete fxev/renamed.txt"],
        ),
        (
            "09-restore-from-trash.json",
            |nc| drop(nc.user_restore("admin", "fxev/renamed.txt")),
            vec!["put fxev/renamed.txt"],
        ),
        (
            "10-move-to-other-folder.json",
            |nc| drop(nc.user_move("admin", "fxev/b.txt", "b-moved.txt").unwrap()),
            vec!["rename fxev/b.txt -> b-moved.txt"],
        ),
        (
            // Same content over the same name: the NodeDeleted of the old target must not
            // delete a file that is there, and nothing changed.
            "11-copy-overwrite-existing.json",
            |nc| {
                drop(
                    nc.user_copy("admin", "fxev/a.txt", "fxev/renamed.txt", true)
                        .unwrap(),
                )
            },
            vec![],
        ),
        (
            "12-delete-folder.json",
            |nc| nc.user_delete("admin", "fxev"),
            vec!["delete fxev"],
        ),
        (
            "13-delete-moved-file.json",
            |nc| nc.user_delete("admin", "b-moved.txt"),
            vec!["delete b-moved.txt"],
        ),
        (
            "16-no-user-session-occ-files-put.json",
            |nc| {
                nc.user_mkdir("admin", "fxdav");
                nc.user_put("admin", "fxdav/from-occ.txt", "from occ\n");
            },
            vec!["put fxdav/from-occ.txt"],
        ),
        (
            // The Text app rewrites markdown copies: three NodeWritten, one entry.
            "17-copy-markdown-file.json",
            |nc| {
                nc.user_put("admin", "fxdav/plain.md", "# plain\n");
                nc.user_mkdir("admin", "fxdav/sub");
                nc.user_copy("admin", "fxdav/plain.md", "fxdav/sub/q4.md", false)
                    .unwrap();
            },
            vec!["put fxdav/sub/q4.md"],
        ),
    ];
    for (name, setup, expected) in steps {
        setup(&nc);
        nc.discard_webhook_jobs();
        replay(&exapp, name).await;
        exapp.wait_idle().await;
        let lines = exapp.entry_lines().await;
        assert_eq!(&lines[seen..], expected.as_slice(), "{name}");
        seen = lines.len();
    }
    let status = exapp.wait_idle().await;
    assert_eq!(status["failed"], 0, "{status}");
    assert_eq!(status["counters"]["rejected"], 0, "{status}");
    exapp.stop();
}
