//! harpbridge's WebDAV client against the test double: every verb, its typed errors, and
//! chunked upload v2 for large files.

mod support;

use bytes::Bytes;
use futures_util::{stream, StreamExt};
use harpbridge::appapi::client::NextcloudClient;
use harpbridge::backend::nextcloud::webdav::{
    DavError, Depth, PutOptions, WebDav, CHUNKED_THRESHOLD,
};
use harpbridge::config::Secret;
use support::files::Generator;
use support::nextcloud::{ExAppRow, ExAppTarget, InitStatus};
use support::FakeNextcloud;

async fn client(nc: &FakeNextcloud) -> WebDav {
    nc.state().apps.insert(
        "harpbridge".into(),
        ExAppRow {
            app_id: "harpbridge".into(),
            version: "0.1.0".into(),
            secret: "dav-secret".into(),
            target: ExAppTarget::Tcp("http://127.0.0.1:9".into()),
            enabled: true,
            status: InitStatus::default(),
        },
    );
    let c = NextcloudClient::with_identity(
        &nc.url,
        "harpbridge",
        "0.1.0",
        "33.0.0",
        Secret::new("dav-secret"),
    )
    .unwrap();
    WebDav::new(c)
}

fn body(
    bytes: &'static [u8],
) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> + Send + Unpin + 'static {
    stream::iter(vec![Ok(Bytes::from_static(bytes))])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_verb_and_its_errors() {
    let nc = FakeNextcloud::start().await;
    let dav = client(&nc).await;

    let made = dav.mkcol("alice", "Docs").await.unwrap();
    assert!(made.created && made.fileid.is_some());
    assert!(matches!(
        dav.mkcol("alice", "Docs").await,
        Err(DavError::AlreadyExists(_))
    ));
    assert!(matches!(
        dav.mkcol("alice", "No/Such/Parent").await,
        Err(DavError::Conflict(_))
    ));

    let put = dav
        .put(
            "alice",
            "Docs/a b.txt",
            body(b"hello"),
            5,
            &PutOptions {
                if_absent: true,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert!(put.created);
    let etag = put.etag.clone().unwrap();
    // `If-None-Match: *`: a second create at the same path is refused, as SabreDAV does.
    let taken = dav
        .put(
            "alice",
            "Docs/a b.txt",
            body(b"other"),
            5,
            &PutOptions {
                if_absent: true,
                ..Default::default()
            },
        )
        .await;
    assert!(
        matches!(taken, Err(DavError::PreconditionFailed(_))),
        "{taken:?}"
    );
    assert_eq!(
        nc.file("alice", "Docs/a b.txt")
            .unwrap()
            .content
            .unwrap()
            .to_vec(),
        b"hello"
    );
    let again = dav
        .put(
            "alice",
            "Docs/a b.txt",
            body(b"hello!"),
            6,
            &PutOptions {
                if_match: Some(etag.clone()),
                if_absent: false,
                mtime: Some(1_700_000_000),
                checksum: Some("SHA256:abc".into()),
            },
        )
        .await
        .unwrap();
    assert!(!again.created);
    assert_eq!(again.fileid, put.fileid, "an overwrite keeps the file id");
    let stale = dav
        .put(
            "alice",
            "Docs/a b.txt",
            body(b"lost"),
            4,
            &PutOptions {
                if_match: Some(etag),
                ..Default::default()
            },
        )
        .await;
    assert!(
        matches!(stale, Err(DavError::PreconditionFailed(_))),
        "{stale:?}"
    );

    let listing = dav.propfind("alice", "Docs", Depth::One).await.unwrap();
    assert_eq!(listing.len(), 2);
    assert!(listing[0].is_dir);
    let file = &listing[1];
    assert_eq!(file.href, "/remote.php/dav/files/alice/Docs/a b.txt");
    assert_eq!(
        (file.size, file.mtime, file.fileid),
        (Some(6), Some(1_700_000_000), put.fileid)
    );
    assert_eq!(file.checksums, ["SHA256:abc"]);
    assert_eq!(
        dav.propfind("alice", "Docs/a b.txt", Depth::Zero)
            .await
            .unwrap()
            .len(),
        1
    );

    let got = dav
        .get("alice", "Docs/a b.txt")
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(&got[..], b"hello!");
    let found = dav
        .search_by_fileid("alice", put.fileid.unwrap())
        .await
        .unwrap()
        .unwrap();
    assert!(found.href.ends_with("/Docs/a b.txt"));
    assert!(dav
        .search_by_fileid("alice", 999_999)
        .await
        .unwrap()
        .is_none());

    let copied = dav
        .copy("alice", "Docs/a b.txt", "Docs/copy.txt", false)
        .await
        .unwrap();
    assert!(copied.created && copied.fileid != put.fileid);
    assert!(matches!(
        dav.copy("alice", "Docs/a b.txt", "Docs/copy.txt", false)
            .await,
        Err(DavError::PreconditionFailed(_))
    ));
    dav.rename("alice", "Docs/copy.txt", "moved.txt", false)
        .await
        .unwrap();
    assert!(nc.file("alice", "moved.txt").is_some() && nc.file("alice", "Docs/copy.txt").is_none());
    dav.delete("alice", "moved.txt").await.unwrap();
    assert!(matches!(
        dav.delete("alice", "moved.txt").await,
        Err(DavError::NotFound(_))
    ));
    assert!(matches!(
        dav.get("alice", "nothing").await,
        Err(DavError::NotFound(_))
    ));

    // WebDAV needs the user of the URL: another user's files are refused.
    let bob = WebDav::new(
        NextcloudClient::with_identity(
            &nc.url,
            "harpbridge",
            "0.1.0",
            "33.0.0",
            Secret::new("wrong"),
        )
        .unwrap(),
    );
    assert!(matches!(
        bob.propfind("alice", "Docs", Depth::Zero).await,
        Err(DavError::Unauthorized)
    ));
    nc.state().bruteforce_attempts = 0;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_uploads_go_in_chunks_and_arrive_whole() {
    let nc = FakeNextcloud::start().await;
    let dav = client(&nc).await;
    let size = CHUNKED_THRESHOLD + 5 * (1 << 20) + 123;
    let pieces = Generator::new(7, size, 1 << 20).map(Ok::<_, std::io::Error>);
    let result = dav
        .put(
            "alice",
            "big.bin",
            stream::iter(pieces).boxed(),
            size,
            &PutOptions {
                mtime: Some(1_700_000_123),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert!(result.created);
    let node = nc.file("alice", "big.bin").unwrap();
    assert_eq!(node.mtime, 1_700_000_123);
    let stored = node.content.unwrap().to_vec();
    let expected: Vec<u8> = Generator::new(7, size, 1 << 20)
        .flat_map(|b| b.to_vec())
        .collect();
    assert!(stored == expected, "chunked upload changed the bytes");
    let chunk_puts = nc
        .received_matching("/remote.php/dav/uploads/alice/")
        .iter()
        .filter(|r| r.method == "PUT")
        .count();
    assert!(chunk_puts >= 5, "{chunk_puts} chunks");
    assert!(nc.state().uploads.is_empty(), "the upload folder is gone");
}

/// A chunked overwrite guarded by the ETag write-back read lands; with a stale ETag it is
/// refused (412) and nothing changes. The guard cannot ride on the MOVE: SabreDAV judges
/// If-Match there against the upload's `.file`, so the double (like Nextcloud 33) refuses
/// every conditional assembly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_overwrites_keep_the_lost_update_guard() {
    let nc = FakeNextcloud::start().await;
    let dav = client(&nc).await;
    // Each version a size of its own: Nextcloud's ETags (and the double's) come from
    // (mtime in whole seconds, size), so two writes of one size in one second share one.
    let size_of = |seed: u64| CHUNKED_THRESHOLD + 123 + seed;
    let upload = |seed: u64, if_match: Option<String>, if_absent: bool| {
        let size = size_of(seed);
        let pieces = Generator::new(seed, size, 1 << 20).map(Ok::<_, std::io::Error>);
        let dav = dav.clone();
        async move {
            dav.put(
                "alice",
                "big.bin",
                stream::iter(pieces).boxed(),
                size,
                &PutOptions {
                    if_match,
                    if_absent,
                    ..Default::default()
                },
            )
            .await
        }
    };
    let first = upload(1, None, true).await.unwrap();
    assert!(first.created);
    assert!(
        matches!(
            upload(2, None, true).await,
            Err(DavError::PreconditionFailed(_))
        ),
        "if_absent over an existing file"
    );
    let etag = first.etag.clone().expect("an ETag");
    let second = upload(2, Some(etag.clone()), false)
        .await
        .expect("an overwrite with the current ETag lands");
    assert!(!second.created);
    let expected: Vec<u8> = Generator::new(2, size_of(2), 1 << 20)
        .flat_map(|b| b.to_vec())
        .collect();
    assert!(
        nc.file("alice", "big.bin")
            .unwrap()
            .content
            .unwrap()
            .to_vec()
            == expected
    );
    assert!(
        matches!(
            upload(3, Some(etag), false).await,
            Err(DavError::PreconditionFailed(_))
        ),
        "a stale ETag is refused"
    );
    assert!(
        nc.file("alice", "big.bin")
            .unwrap()
            .content
            .unwrap()
            .to_vec()
            == expected
    );
    let conditional_moves = nc
        .received_matching("/remote.php/dav/uploads/alice/")
        .iter()
        .filter(|r| {
            r.method == "MOVE"
                && r.headers
                    .iter()
                    .any(|(h, _)| h.to_ascii_lowercase().starts_with("if-"))
        })
        .count();
    assert_eq!(conditional_moves, 0, "no MOVE carries a condition");
    assert!(
        nc.state().uploads.is_empty(),
        "failed uploads are cleaned up"
    );
}
