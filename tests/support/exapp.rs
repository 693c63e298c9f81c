//! Runs the real `harpbridge serve` binary for a test and keeps everything it logs.
//!
//! Logs go to memory and to `target/test-logs/`, so that CI can also check a whole run's
//! logs for secrets. [`ExApp::stop`] sends SIGTERM (as `docker stop` does), waits, and
//! asserts that nothing logged holds the secret or an auth header built from it.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;

use super::nextcloud::ExAppTarget;

/// How to start the ExApp.
#[derive(Debug, Clone)]
pub struct ExAppOptions {
    pub app_id: String,
    pub secret: String,
    pub version: String,
    pub nextcloud_url: String,
    pub data_dir: PathBuf,
    /// `--listen`; `None` leaves the choice to the configuration (APP_HOST:APP_PORT, and
    /// HaRP's socket too with a HaRP key).
    pub listen: Option<String>,
    pub harp_shared_key: Option<String>,
    pub json_logs: bool,
    pub extra_env: Vec<(String, String)>,
    pub extra_args: Vec<String>,
    /// `RUST_LOG` of the ExApp (tests log everything, to check no secret leaks).
    pub log: String,
}

impl ExAppOptions {
    pub fn new(nextcloud_url: &str, data_dir: &Path) -> Self {
        ExAppOptions {
            app_id: "harpbridge".into(),
            secret: unique_secret(),
            version: "0.1.0".into(),
            nextcloud_url: nextcloud_url.into(),
            data_dir: data_dir.to_owned(),
            listen: Some("tcp://127.0.0.1:0".into()),
            harp_shared_key: None,
            json_logs: false,
            extra_env: Vec::new(),
            extra_args: Vec::new(),
            log: "trace,hyper=info,hyper_util=info,reqwest=debug,h2=info,rustls=info".into(),
        }
    }
}

/// A secret that cannot appear in a log by accident.
pub fn unique_secret() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("hbSecret{nanos:x}{:x}Zq", std::process::id())
}

pub struct ExApp {
    child: Child,
    pub options: ExAppOptions,
    /// `tcp://127.0.0.1:PORT` or `unix:///path`, as the ExApp logged it.
    pub listen: String,
    logs: Arc<Mutex<String>>,
    /// One client for every request a test makes to it: a new client per request loads the
    /// system's root certificates each time (a few milliseconds of CPU), which would bound
    /// what a benchmark measures.
    http: reqwest::Client,
}

impl ExApp {
    /// Spawns the binary and waits until it logs where it listens.
    pub fn start(options: ExAppOptions) -> ExApp {
        let mut command = Command::new(env!("CARGO_BIN_EXE_harpbridge"));
        command
            .arg("serve")
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env(
                "RUST_LOG",
                "trace,hyper=info,hyper_util=info,reqwest=debug,h2=info,rustls=info",
            )
            .env("APP_ID", &options.app_id)
            .env("APP_SECRET", &options.secret)
            .env("APP_VERSION", &options.version)
            .env("APP_HOST", "127.0.0.1")
            .env("APP_PORT", "23000")
            .env("APP_DISPLAY_NAME", "Harp Bridge")
            .env("AA_VERSION", super::AA_VERSION)
            .env(
                "NEXTCLOUD_URL",
                format!("{}/index.php", options.nextcloud_url),
            )
            .env("APP_PERSISTENT_STORAGE", &options.data_dir)
            .env("COMPUTE_DEVICE", "CPU")
            // The swarm on loopback, kernel-chosen ports, no mDNS: parallel tests must not
            // collide on port 4001 nor find each other. `extra_env` may change it.
            .env(
                "HARPBRIDGE_P2P_LISTEN",
                "/ip4/127.0.0.1/tcp/0,/ip4/127.0.0.1/udp/0/quic-v1",
            )
            .env("HARPBRIDGE_MDNS", "off")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(listen) = &options.listen {
            command.arg("--listen").arg(listen);
        }
        if let Some(key) = &options.harp_shared_key {
            command
                .env("HP_SHARED_KEY", key)
                .env("HP_FRP_ADDRESS", "appapi-harp")
                .env("HP_FRP_PORT", "8782");
        }
        if options.json_logs {
            command.arg("--log-format").arg("json");
        }
        for (k, v) in &options.extra_env {
            command.env(k, v);
        }
        command.args(&options.extra_args);
        let mut child = command.spawn().expect("spawn harpbridge");
        let logs = Arc::new(Mutex::new(String::new()));
        let log_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-logs");
        let _ = std::fs::create_dir_all(&log_dir);
        let log_file = log_dir.join(format!("harpbridge-{}.log", child.id()));
        remember_secret(&log_dir, &options.secret);
        for stream in [
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let logs = logs.clone();
            let log_file = log_file.clone();
            std::thread::spawn(move || {
                use std::io::Write;
                let mut file = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&log_file)
                    .ok();
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    if let Some(f) = file.as_mut() {
                        let _ = writeln!(f, "{line}");
                    }
                    let mut l = logs.lock().unwrap_or_else(|e| e.into_inner());
                    l.push_str(&line);
                    l.push('\n');
                }
            });
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        let listen = loop {
            if let Some(listen) = find_listen(&logs.lock().unwrap_or_else(|e| e.into_inner())) {
                break listen;
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "harpbridge exited early with {status}:\n{}",
                    logs.lock().unwrap_or_else(|e| e.into_inner())
                );
            }
            assert!(
                Instant::now() < deadline,
                "harpbridge did not start in 30 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        ExApp {
            child,
            options,
            listen,
            logs,
            http: reqwest::Client::new(),
        }
    }

    /// Where AppAPI (the double) reaches this ExApp: HaRP's socket when it listens on one
    /// (as FRP would), else TCP.
    pub fn target(&self) -> ExAppTarget {
        match self
            .listen
            .split(',')
            .find_map(|l| l.strip_prefix("unix://"))
        {
            Some(path) => ExAppTarget::Unix(PathBuf::from(path)),
            None => ExAppTarget::Tcp(self.base_url()),
        }
    }

    /// `http://127.0.0.1:PORT` of its (first) TCP listener.
    pub fn base_url(&self) -> String {
        let addr = self
            .listen
            .split(',')
            .find_map(|l| l.strip_prefix("tcp://"))
            .expect("not a TCP listener");
        format!("http://{addr}")
    }

    pub fn logs(&self) -> String {
        self.logs.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// SIGTERM, wait for a clean exit, and check the logs hold no secret. Returns the logs.
    pub fn stop(mut self) -> String {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        let status = loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                break status;
            }
            assert!(Instant::now() < deadline, "harpbridge ignored SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        };
        std::thread::sleep(Duration::from_millis(50));
        let logs = self.logs();
        assert!(status.success(), "harpbridge exited with {status}:\n{logs}");
        assert_no_secret(&logs, &self.options.secret);
        logs
    }
}

impl Drop for ExApp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Fails if `logs` hold the secret, or an `AUTHORIZATION-APP-API` value made from it.
pub fn assert_no_secret(logs: &str, secret: &str) {
    assert!(!logs.contains(secret), "a log line holds the app secret");
    for user in ["", "admin", "alice"] {
        let header = STANDARD.encode(format!("{user}:{secret}"));
        assert!(
            !logs.contains(&header),
            "a log line holds an AUTHORIZATION-APP-API value"
        );
    }
}

/// Appends the secret and the auth values made from it to `target/test-logs.secrets`,
/// so that `.ci/test.d/10-no-secrets-in-logs.sh` can check every log of the run.
fn remember_secret(log_dir: &Path, secret: &str) {
    use std::io::Write;
    let Some(parent) = log_dir.parent() else {
        return;
    };
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(parent.join("test-logs.secrets"))
    {
        // One write per call: tests in several threads append at once, and O_APPEND
        // keeps a single write whole, where `writeln!` may split a line in two.
        let mut lines = format!("{secret}\n");
        for user in ["", "admin", "alice"] {
            lines.push_str(&STANDARD.encode(format!("{user}:{secret}")));
            lines.push('\n');
        }
        let _ = f.write_all(lines.as_bytes());
    }
}

/// Adds `user`'s `AUTHORIZATION-APP-API` value for `secret` to `target/test-logs.secrets`
/// (the secret itself and the values for "", admin and alice are there once serve starts):
/// for tests whose users have other names.
pub fn remember_auth(secret: &str, user: &str) {
    use std::io::Write;
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-logs.secrets");
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    {
        let line = format!("{}\n", STANDARD.encode(format!("{user}:{secret}")));
        let _ = f.write_all(line.as_bytes());
    }
}

fn find_listen(logs: &str) -> Option<String> {
    let line = logs.lines().find(|l| l.contains("harpbridge serving"))?;
    if let Some(rest) = line.split("\"listen\":\"").nth(1) {
        return rest.split('"').next().map(str::to_owned);
    }
    let rest = line.split("listen=").nth(1)?;
    rest.split_whitespace().next().map(str::to_owned)
}

impl ExApp {
    /// A request to the ExApp signed as AppAPI does for `user` (empty = none).
    pub fn signed(
        &self,
        method: reqwest::Method,
        path: &str,
        user: &str,
    ) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.base_url()))
            .header("EX-APP-ID", &self.options.app_id)
            .header("EX-APP-VERSION", &self.options.version)
            .header("AA-VERSION", super::AA_VERSION)
            .header(
                "AUTHORIZATION-APP-API",
                STANDARD.encode(format!("{user}:{}", self.options.secret)),
            )
    }

    /// GET a JSON API as `user`.
    pub async fn api(&self, path: &str, user: &str) -> serde_json::Value {
        let response = self
            .signed(reqwest::Method::GET, path, user)
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        assert!(status.is_success(), "GET {path}: {status} {text}");
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("GET {path}: {e}: {text}"))
    }

    /// serve's swarm address for a node on this host, from the metrics the API reports: its
    /// TCP listen address ending in `/p2p/<peer id>`; and that peer id.
    pub async fn swarm_addr(&self) -> (String, libp2p::Multiaddr) {
        use libp2p::multiaddr::Protocol;
        let metrics = self.api("/api/admin/metrics", "admin").await;
        assert_eq!(metrics["swarm"]["state"], "running", "{metrics}");
        let peer_id = metrics["swarm"]["peer_id"]
            .as_str()
            .expect("serve's peer id")
            .to_owned();
        let tcp: libp2p::Multiaddr = metrics["swarm"]["listen"]
            .as_array()
            .expect("serve's listen addresses")
            .iter()
            .filter_map(|a| a.as_str()?.parse::<libp2p::Multiaddr>().ok())
            .find(|a| a.iter().any(|p| matches!(p, Protocol::Tcp(_))))
            .expect("a TCP listen address");
        let addr = tcp.with(Protocol::P2p(peer_id.parse().expect("a peer id")));
        (peer_id, addr)
    }

    /// serve's row for the peer `peer_id` in `/api/peers` as `user` sees it, if it lists it.
    pub async fn peer(&self, peer_id: &str, user: &str) -> Option<serde_json::Value> {
        let peers = self.api("/api/peers", user).await;
        peers["peers"]
            .as_array()?
            .iter()
            .find(|p| p["peer_id"] == peer_id)
            .cloned()
    }

    /// Waits until `n` libraries exist and have been scanned; returns their ids.
    pub async fn wait_libraries(&self, n: usize) -> Vec<String> {
        self.wait_libraries_for(n, Duration::from_secs(120)).await
    }

    pub async fn wait_libraries_for(&self, n: usize, limit: Duration) -> Vec<String> {
        let deadline = Instant::now() + limit;
        loop {
            let status = self.api("/api/ingest", "admin").await;
            let ids: Vec<String> = status["libraries"]
                .as_array()
                .map(|l| {
                    l.iter()
                        .filter_map(|l| l["id"].as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default();
            // A library without a scan entry was scanned by an earlier process.
            let scanned = ids
                .iter()
                .all(|id| status["scans"][id.as_str()]["state"] != "running");
            if ids.len() >= n && scanned {
                return ids;
            }
            assert!(
                Instant::now() < deadline,
                "libraries not ready after 120 s: {status}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until the ingest queue is empty, no scan runs and no catch-up is pending or
    /// running.
    pub async fn wait_idle(&self) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let status = self.api("/api/ingest", "admin").await;
            let scanning = status["scans"]
                .as_object()
                .is_some_and(|s| s.values().any(|p| p["state"] == "running"));
            let catching_up = status["catch_up"]["state"] != "idle";
            if status["backlog"] == 0 && !scanning && !catching_up {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "ExApp not idle after 120 s: {status}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The chain entries the panel lists, oldest first, as `kind path[ -> to]` strings.
    pub async fn entry_lines(&self) -> Vec<String> {
        let activity = self.api("/api/activity", "admin").await;
        activity["entries"]
            .as_array()
            .map(|entries| {
                entries
                    .iter()
                    .map(|e| {
                        let op = &e["op"];
                        match op["kind"].as_str().unwrap_or("") {
                            "rename" => format!(
                                "rename {} -> {}",
                                op["from"].as_str().unwrap_or(""),
                                op["to"].as_str().unwrap_or("")
                            ),
                            kind => format!("{kind} {}", op["path"].as_str().unwrap_or("")),
                        }
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl ExApp {
    /// SIGKILL: no shutdown, no flush. Returns the logs.
    pub fn kill9(mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        std::thread::sleep(Duration::from_millis(50));
        let logs = self.logs();
        assert_no_secret(&logs, &self.options.secret);
        logs
    }

    /// The process's peak resident set size so far, in KiB (`VmHWM`).
    pub fn peak_rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }

    /// POSTs a raw webhook delivery signed as `user`; returns the status and body.
    pub async fn deliver(
        &self,
        event_name: &str,
        user: &str,
        body: impl Into<reqwest::Body>,
    ) -> (u16, String) {
        let response = self
            .signed(
                reqwest::Method::POST,
                &format!("/webhooks/{event_name}"),
                user,
            )
            .body(body)
            .send()
            .await
            .expect("deliver");
        let status = response.status().as_u16();
        (status, response.text().await.unwrap_or_default())
    }
}

/// The `Put` entries of the (first) library in a stopped serve's data dir, in the chain's order: path, and the content stored for it.
pub fn chain_files(data: &std::path::Path) -> Vec<(String, Vec<u8>)> {
    let db = harpbridge::db::open(data).unwrap();
    let chain = harpbridge::chain::ChainStore::open(db.clone()).unwrap();
    let store = harpbridge::content::ContentStore::open(db, data, Default::default()).unwrap();
    let lib = chain.libraries()[0];
    chain
        .log(&lib)
        .unwrap()
        .iter()
        .filter_map(|h| chain.entry(h).ok().flatten())
        .filter_map(|(_, e)| match &e.meta().op {
            harpbridge::chain::Op::Put { path, content, .. } => {
                let mut bytes = Vec::new();
                let mut reader = store.open_reader(&(*content).into()).unwrap();
                std::io::Read::read_to_end(&mut reader, &mut bytes).unwrap();
                Some((path.as_str().to_owned(), bytes))
            }
            _ => None,
        })
        .collect()
}
