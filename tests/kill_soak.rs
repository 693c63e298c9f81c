//! kill -9 soak (issue 14): `serve` is killed 20 times while 64 senders post webhook
//! deliveries, each about its own file, and restarted on the same data directory each
//! time. Every delivery answered 200 must be in the chain once it has drained, matched
//! path by path.
//!
//! A delivery that fails (serve down, or killed before it answered) is sent again until
//! it is answered 200, as if AppAPI retried, so every file ends up acknowledged once or
//! more. The library folder's ETag in the double is put back as it was after the files
//! are created, so that the catch-up at each restart finds nothing: only the queue can
//! have recorded them, and a delivery the queue lost shows up as a missing path.

mod support;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use harpbridge::chain::ChainStore;
use support::webhooks::Job;
use support::{ExApp, ExAppOptions, ExAppSpec, FakeNextcloud};

const SENDERS: usize = 64;
const PER_SENDER: usize = 16;
const KILLS: usize = 20;
/// The whole soak, restarts and drain included, must end within this.
const LIMIT: Duration = Duration::from_secs(300);

/// A small xorshift: random-ish moments, reproducible from the printed seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn between(&mut self, low_ms: u64, high_ms: u64) -> Duration {
        Duration::from_millis(low_ms + self.next() % (high_ms - low_ms + 1))
    }
}

fn start(nc: &FakeNextcloud, data: &std::path::Path, secret: Option<&str>) -> ExApp {
    let mut options = ExAppOptions::new(&nc.url, data);
    if let Some(secret) = secret {
        options.secret = secret.to_owned(); // a restart keeps the registered secret
    }
    options.extra_args = vec![
        "--library".into(),
        "alice:/Team".into(),
        "--scan-interval".into(),
        "3600".into(),
    ];
    // Debug logs of a thousand deliveries would slow serve more than the kills do.
    options
        .extra_env
        .push(("RUST_LOG".into(), "info,harpbridge=info".into()));
    ExApp::start(options)
}

/// The double's `changes` count of alice's Team folder (part of its ETag).
fn team_changes(nc: &FakeNextcloud) -> u64 {
    nc.state().user_files["alice"].nodes["Team"].changes
}

/// Posts `job` to serve at `base` as AppAPI would; the status and body, or why not.
async fn post(
    http: &reqwest::Client,
    base: &str,
    secret: &str,
    job: &Job,
) -> Result<(u16, String), String> {
    let user = job.user.as_deref().unwrap_or("");
    let response = http
        .post(format!("{base}{}", job.webhook.uri))
        .header("Content-Type", "application/json")
        .header("AA-VERSION", support::AA_VERSION)
        .header("EX-APP-ID", "harpbridge")
        .header("EX-APP-VERSION", "0.1.0")
        .header(
            "AUTHORIZATION-APP-API",
            STANDARD.encode(format!("{user}:{secret}")),
        )
        .body(job.body.clone())
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    Ok((status, response.text().await.unwrap_or_default()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_delivery_answered_200_survives_20_kills() {
    let began = Instant::now();
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1)
        | 1;
    eprintln!("kill soak seed {seed}");
    let nc = FakeNextcloud::start().await;
    nc.user_mkdir("alice", "Team");
    nc.discard_webhook_jobs();
    let dir = tempfile::tempdir().unwrap();
    let exapp = start(&nc, dir.path(), None);
    let secret = exapp.options.secret.clone();
    let spec = ExAppSpec::new("harpbridge", &secret, exapp.target());
    assert_eq!(nc.register(&spec).await.exit_code, 0);
    exapp.wait_libraries(1).await;
    exapp.wait_idle().await;

    // The files, each with its delivery; then Team's ETag as the catch-ups recorded it.
    let recorded_changes = team_changes(&nc);
    let mut jobs: Vec<Vec<(String, Job)>> = vec![Vec::new(); SENDERS];
    for (sender, jobs) in jobs.iter_mut().enumerate() {
        for i in 0..PER_SENDER {
            let path = format!("Team/s{sender:02}-{i:02}.txt");
            nc.user_put("alice", &path, format!("sender {sender}, file {i}"));
            // Created and Written fire; one delivery per path is the soak's unit.
            let fired = std::mem::take(&mut nc.state().webhook_jobs);
            let created = fired
                .into_iter()
                .find(|j| j.webhook.uri.ends_with("/NodeCreatedEvent"))
                .unwrap_or_else(|| panic!("no NodeCreatedEvent for {path}"));
            jobs.push((path, created));
        }
    }
    nc.state()
        .user_files
        .get_mut("alice")
        .unwrap()
        .nodes
        .get_mut("Team")
        .unwrap()
        .changes = recorded_changes;

    let base = Arc::new(RwLock::new(exapp.base_url()));
    let acked: Arc<Mutex<BTreeSet<String>>> = Arc::default();
    let stop_pacing = Arc::new(AtomicBool::new(false));
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(3)) // AppAPI's
        .build()
        .unwrap();
    let mut senders = Vec::new();
    for (sender, jobs) in jobs.into_iter().enumerate() {
        let (base, acked, stop_pacing, http, secret) = (
            base.clone(),
            acked.clone(),
            stop_pacing.clone(),
            http.clone(),
            secret.clone(),
        );
        senders.push(tokio::spawn(async move {
            let mut rng = Rng(seed ^ (sender as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
            let mut refused = 0u32;
            for (path, job) in jobs {
                if !stop_pacing.load(Ordering::Relaxed) {
                    tokio::time::sleep(rng.between(300, 2000)).await;
                }
                loop {
                    let url = base.read().unwrap().clone();
                    match post(&http, &url, &secret, &job).await {
                        Ok((200, body)) => {
                            assert!(!body.contains("ignored"), "{path}: {body}");
                            acked.lock().unwrap().insert(path.clone());
                            break;
                        }
                        // Down, killed mid-answer, or starting: send it again.
                        Ok(_) | Err(_) => {
                            refused += 1;
                            tokio::time::sleep(Duration::from_millis(25)).await;
                        }
                    }
                    assert!(began.elapsed() < LIMIT, "{path} never answered 200");
                }
            }
            refused
        }));
    }

    // Kill -9 at random-ish moments while they send; restart on the same data directory.
    let mut rng = Rng(seed);
    let mut exapp = exapp;
    for kill in 1..=KILLS {
        tokio::time::sleep(rng.between(200, 900)).await;
        let before = acked.lock().unwrap().len();
        exapp.kill9();
        exapp = start(&nc, dir.path(), Some(&secret));
        nc.state().apps.get_mut("harpbridge").unwrap().target = exapp.target();
        *base.write().unwrap() = exapp.base_url();
        eprintln!("kill {kill}: {before} deliveries acknowledged before it");
    }
    stop_pacing.store(true, Ordering::Relaxed);
    let mut retries = 0;
    for sender in senders {
        retries += sender.await.expect("a sender failed");
    }
    let acked = acked.lock().unwrap().clone();
    assert_eq!(acked.len(), SENDERS * PER_SENDER);
    eprintln!(
        "{} deliveries acknowledged ({retries} sends refused or cut by the kills), {:?} so far",
        acked.len(),
        began.elapsed()
    );

    // Drained: every acknowledged path is in the chain, looked up one by one.
    let status = exapp.wait_idle().await;
    assert_eq!(status["failed"], 0, "{status}");
    // Only the queue recorded them: the catch-ups found Team's ETag unchanged.
    assert_eq!(
        status["libraries"][0]["catch_up"]["changes_found"], 0,
        "{status}"
    );
    exapp.stop();
    let db = harpbridge::db::open(dir.path()).unwrap();
    let chain = ChainStore::open(db.clone()).unwrap();
    let tree = chain.tree(&chain.libraries()[0]).unwrap();
    // And every version the chain names is whole in the content store: nothing was
    // recorded before its content was durable.
    let content = harpbridge::content::ContentStore::open(
        db,
        dir.path(),
        harpbridge::content::StoreOptions::default(),
    )
    .unwrap();
    for (path, item) in &tree.items {
        if let harpbridge::chain::TreeItem::File {
            content: id, size, ..
        } = item
        {
            let mut bytes = Vec::new();
            std::io::Read::read_to_end(
                &mut content
                    .open_reader(&(*id).into())
                    .unwrap_or_else(|e| panic!("{path}: its content is not stored: {e}")),
                &mut bytes,
            )
            .unwrap_or_else(|e| panic!("{path}: its content cannot be read: {e}"));
            assert_eq!(bytes.len() as u64, *size, "{path}");
        }
    }
    let missing: Vec<&String> = acked
        .iter()
        .filter(|p| !tree.items.contains_key(p.trim_start_matches("Team/")))
        .collect();
    assert!(
        missing.is_empty(),
        "{} of {} deliveries answered 200 are not in the chain (seed {seed}): {missing:?}",
        missing.len(),
        acked.len()
    );
    eprintln!("kill soak took {:?}", began.elapsed());
}
