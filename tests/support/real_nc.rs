//! The real Nextcloud 33.0.2 (AppAPI 33.0.0, webhook_listeners 1.5.0) and the real HaRP 0.4.4
//! that `../shared/nextcloud/up.sh` and `../shared/harp/up.sh` run, for the end-to-end tests
//! (`tests/real_nc.rs`, `tests/real_harp.rs`) and `benches/ingest_real.rs`.
//!
//! [`real`] makes sure Nextcloud is up, [`real_harp`] also HaRP, once per test process: a Nextcloud whose `status.php`
//! answers `installed:true` on `HB_NC_PORT` (8480) is reused, otherwise `up.sh --port PORT
//! --dir HB_NC_DIR` (`/tmp/nc`) starts it; the same for HaRP (`HB_HARP_PORT` 8490,
//! `HB_HARP_DIR` `/tmp/harp`). The scripts are found beside the repository
//! (`$CARGO_MANIFEST_DIR/../shared/`), as CI clones it. They need root (apt, `runuser`), so
//! without root [`real`] prints why and gives `None`, and the test returns.
//!
//! What a test makes, it removes, also when it fails (Drop guards): users ([`User`]) and
//! registered ExApps ([`App`]). App ids (`hbe2e_<pid>_<n>`) and ports (23100–23999) are unique
//! per test. [`serial`] runs the tests of one process one at a time: some stop Nextcloud's
//! background workers, and all share one brute-force counter for 127.0.0.1.
//!
//! Only right passwords and secrets are ever sent: about five failures lock 127.0.0.1 out
//! of Nextcloud for 30 minutes. [`RealNc::reset_bruteforce`] lifts that at each test's start.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::Value;

use super::exapp::{remember_auth, unique_secret, ExApp, ExAppOptions};

/// HaRP's shared key in `../shared/harp/up.sh`.
pub const HARP_KEY: &str = "harp-shared-key-for-tests-0123456789";
/// The ExApp's top-menu entry, the last segment of its page's URL.
pub const MENU: &str = "harpbridge";

/// The running servers, as `up.sh` described them.
#[derive(Debug)]
pub struct RealNc {
    /// `http://127.0.0.1:8480`
    pub url: String,
    /// The Nextcloud installation (`$NC_DIR`), where `occ` runs.
    pub dir: PathBuf,
    /// The run directory of `up.sh` (`<dir>/run` beside `nextcloud/`): the loops' process groups.
    pub run_dir: PathBuf,
    pub admin: String,
    pub pass: String,
    /// `http://127.0.0.1:8490`: Nextcloud and `/exapps/` on one origin.
    pub harp_url: String,
    /// The HaRP deploy daemon (manual-install, ExApp direct): `harp_direct`.
    pub harp_daemon: String,
    harp_dir: PathBuf,
}

static SETUP: OnceLock<Result<RealNc, String>> = OnceLock::new();
static HARP: OnceLock<Result<(), String>> = OnceLock::new();
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
static COUNTER: AtomicU32 = AtomicU32::new(0);

/// The real servers, started if need be; `None` (with a message) when not root.
pub fn real() -> Option<&'static RealNc> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!(
            "skipped: the real Nextcloud and HaRP (../shared/*/up.sh) need root; CI runs as root"
        );
        return None;
    }
    match SETUP.get_or_init(setup) {
        Ok(nc) => Some(nc),
        Err(e) => panic!("the real Nextcloud/HaRP did not start: {e}"),
    }
}

/// The real servers with HaRP in front (started if need be); `None` when not root.
pub fn real_harp() -> Option<&'static RealNc> {
    let nc = real()?;
    if let Err(e) = HARP.get_or_init(|| nc.start_harp()) {
        panic!("the real HaRP did not start: {e}");
    }
    Some(nc)
}

/// Holds the tests of this process to one at a time.
pub async fn serial() -> tokio::sync::MutexGuard<'static, ()> {
    SERIAL.lock().await
}

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| default.to_owned())
}

fn setup() -> Result<RealNc, String> {
    let shared = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared");
    let port = env_or("HB_NC_PORT", "8480");
    let dir = PathBuf::from(env_or("HB_NC_DIR", "/tmp/nc"));
    let harp_port = env_or("HB_HARP_PORT", "8490");
    let harp_dir = env_or("HB_HARP_DIR", "/tmp/harp");
    let url = format!("http://127.0.0.1:{port}");
    let mut vars = std::collections::HashMap::new();
    let installed = |url: &str| {
        http_get(&format!("{url}/status.php"), &[])
            .is_some_and(|(s, b)| s == 200 && b.contains("\"installed\":true"))
    };
    if installed(&url) && dir.join("nextcloud/config/config.php").exists() {
        vars.insert("NC_URL".to_owned(), url.clone());
        vars.insert(
            "NC_DIR".to_owned(),
            dir.join("nextcloud").display().to_string(),
        );
        vars.insert("NC_ADMIN".to_owned(), "admin".to_owned());
        vars.insert("NC_PASS".to_owned(), "Admin-Passw0rd-for-tests".to_owned());
    } else {
        let script = shared.join("nextcloud/up.sh");
        eprintln!("starting the real Nextcloud: {}", script.display());
        let dir_s = dir.display().to_string();
        vars.extend(run_up(Command::new("bash").args([
            script.to_str().unwrap(),
            "--port",
            &port,
            "--dir",
            &dir_s,
        ]))?);
    }
    let get = |k: &str| {
        vars.get(k)
            .cloned()
            .ok_or_else(|| format!("up.sh set no {k}"))
    };
    let nc = RealNc {
        url: get("NC_URL")?,
        dir: PathBuf::from(get("NC_DIR")?),
        run_dir: dir.join("run"),
        admin: get("NC_ADMIN")?,
        pass: get("NC_PASS")?,
        harp_url: format!("http://127.0.0.1:{harp_port}"),
        harp_daemon: "harp_direct".into(),
        harp_dir: PathBuf::from(harp_dir),
    };
    nc.remove_leftovers();
    // New users get no skeleton files: Nextcloud copies ~65 of them on a user's first
    // request, and each copy is a NodeCreated/NodeWritten webhook job for every ExApp
    // registered on this Nextcloud, which the one webhook worker delivers in turn (3 s each
    // to an ExApp that is not running): thousands of jobs ahead of a test's own deliveries.
    for key in ["skeletondirectory", "templatedirectory"] {
        let current = nc.occ(&["config:system:get", key]);
        if !current.status.success() || !String::from_utf8_lossy(&current.stdout).trim().is_empty()
        {
            nc.occ_ok(&["config:system:set", key, "--value="]);
        }
    }
    Ok(nc)
}

/// Runs an `up.sh` and reads the `export K=V …` lines it prints.
fn run_up(command: &mut Command) -> Result<std::collections::HashMap<String, String>, String> {
    let out = command
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("cannot run up.sh: {e}"))?;
    if !out.status.success() {
        return Err(format!("up.sh failed with {}", out.status));
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.strip_prefix("export "))
        .flat_map(|l| l.split_whitespace())
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect())
}

/// A blocking HTTP/1.0 GET on loopback (no runtime needed): status and body.
pub fn http_get(url: &str, headers: &[(&str, &str)]) -> Option<(u16, String)> {
    let rest = url.strip_prefix("http://")?;
    let (host, path) = rest.split_once('/').map_or((rest, ""), |(h, p)| (h, p));
    let mut stream = std::net::TcpStream::connect(host).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    let mut request = format!("GET /{path} HTTP/1.0\r\nHost: {host}\r\n");
    for (k, v) in headers {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    request.push_str("Connection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.split_whitespace().nth(1)?.parse().ok()?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Some((status, body))
}

/// `<prefix><pid>x<n>` names: unique in this process, and between processes.
pub fn unique(prefix: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    format!("{prefix}{}x{n}", std::process::id())
}

/// A free TCP port on 127.0.0.1 in 23100–23999, unique in this process.
pub fn free_port() -> u16 {
    let start = 23100 + (std::process::id() % 600) as u16;
    for i in 0..900u16 {
        let port =
            23100 + (start - 23100 + i + COUNTER.fetch_add(1, Ordering::SeqCst) as u16) % 900;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in 23100–23999");
}

impl RealNc {
    /// Starts HaRP in front of this Nextcloud unless it answers already (its ports 8780,
    /// 9600 and 8200 are fixed: one HaRP per machine).
    fn start_harp(&self) -> Result<(), String> {
        let up = http_get(
            &format!("{}/exapps/app_api/info", self.harp_url),
            &[("harp-shared-key", HARP_KEY)],
        )
        .is_some_and(|(s, _)| s == 200);
        if up
            && self
                .occ_ok(&["app_api:daemon:list"])
                .contains(&self.harp_daemon)
        {
            return Ok(());
        }
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/harp/up.sh");
        eprintln!("starting the real HaRP: {}", script.display());
        let port = self
            .harp_url
            .rsplit(':')
            .next()
            .unwrap_or("8490")
            .to_owned();
        let harp = run_up(
            Command::new("bash")
                .arg(&script)
                .args(["--port", &port, "--dir"])
                .arg(&self.harp_dir)
                .env("NC_URL", &self.url)
                .env("NC_DIR", &self.dir),
        )?;
        match harp.get("HARP_URL") {
            Some(url) if *url == self.harp_url => Ok(()),
            other => Err(format!("HaRP's up.sh gave HARP_URL {other:?}")),
        }
    }

    /// `occ ARGS` as www-data in Nextcloud's directory, with `env` set, bounded by 5 minutes.
    pub fn occ_env(&self, env: &[(&str, &str)], args: &[&str]) -> Output {
        let mut command = Command::new("timeout");
        command
            .args(["-k", "5", "300", "runuser", "-u", "www-data", "--"])
            .arg("php")
            .arg("occ")
            .args(args)
            .current_dir(&self.dir)
            .stdin(Stdio::null());
        for (k, v) in env {
            command.env(k, v);
        }
        command.output().expect("running occ")
    }

    pub fn occ(&self, args: &[&str]) -> Output {
        self.occ_env(&[], args)
    }

    /// `occ ARGS`, which must succeed; its stdout.
    pub fn occ_ok(&self, args: &[&str]) -> String {
        let out = self.occ(args);
        assert!(
            out.status.success(),
            "occ {args:?}: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Unregisters the apps and deletes the users that earlier test processes made and could
    /// not remove (killed): those whose process (the number in their name) is gone.
    fn remove_leftovers(&self) {
        let stale = |name: &str, prefix: &str| {
            name.strip_prefix(prefix)
                .and_then(|rest| rest.split('x').next())
                .and_then(|pid| pid.parse::<u32>().ok())
                .is_some_and(|pid| !Path::new(&format!("/proc/{pid}")).exists())
        };
        for line in self.app_list().lines() {
            let id = line.split_whitespace().next().unwrap_or("");
            if stale(id, "hbe2e_") {
                eprintln!("unregistering {id}, left by an earlier test run");
                let _ = self.occ(&["app_api:app:unregister", id, "--force", "--silent"]);
            }
        }
        for line in self.occ_ok(&["user:list"]).lines() {
            let uid = line
                .trim()
                .trim_start_matches("- ")
                .split(':')
                .next()
                .unwrap_or("");
            if stale(uid, "hbe2eu") {
                eprintln!("deleting user {uid}, left by an earlier test run");
                let _ = self.occ(&["user:delete", uid]);
            }
        }
    }

    /// Lifts any brute-force delay on 127.0.0.1 (and forgets its attempts).
    pub fn reset_bruteforce(&self) {
        self.occ_ok(&["security:bruteforce:reset", "127.0.0.1"]);
    }

    /// `occ security:bruteforce:attempts 127.0.0.1`: the attempts counted against loopback.
    pub fn bruteforce_attempts(&self) -> u64 {
        let out = self.occ_ok(&["security:bruteforce:attempts", "127.0.0.1"]);
        out.lines()
            .find_map(|l| l.trim().trim_start_matches("- ").strip_prefix("attempts:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no attempts in {out:?}"))
    }

    /// A new user (an admin when `admin`), deleted when dropped.
    ///
    /// The shared release lacks core/fonts/NotoSans-Regular.ttf (a file over 4 MiB), so
    /// `occ user:add` makes the user and then fails (exit 1) drawing their avatar for the
    /// system address book, before it adds groups: groups are added on their own.
    pub fn user(&'static self, admin: bool) -> User {
        let name = unique("hbe2eu");
        let pass = format!("Pw-{}-{name}-9xZ", unique_secret());
        let user = User {
            nc: self,
            name,
            pass,
            http: reqwest::Client::new(),
        };
        let out = self.occ_env(
            &[("OC_PASS", &user.pass)],
            &["user:add", "--password-from-env", &user.name],
        );
        let exists = self.occ(&["user:info", &user.name]).status.success();
        assert!(
            exists,
            "user:add {}: {}{}",
            user.name,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if admin {
            self.occ_ok(&["group:adduser", "admin", &user.name]);
        }
        user
    }

    /// The ExApps `occ app_api:app:list` shows, one line each (`id (name): version [state]`).
    pub fn app_list(&self) -> String {
        self.occ_ok(&["app_api:app:list"])
    }

    /// Stops cron's loop and the webhook worker's loop of the shared Nextcloud (their process
    /// groups); [`Workers::drop`] starts them again as `up.sh` does.
    pub fn stop_background_workers(&'static self) -> Workers {
        for name in ["cron", "webhooks"] {
            let pgid = std::fs::read_to_string(self.run_dir.join(format!("{name}.pgid")))
                .unwrap_or_else(|e| panic!("{name}.pgid: {e}"));
            let _ = Command::new("kill")
                .arg("--")
                .arg(format!("-{}", pgid.trim()))
                .status();
        }
        Workers { nc: self }
    }

    /// A request to Nextcloud (`path` from the root) as `user` with Basic auth, or anonymous.
    pub fn request(
        &self,
        method: Method,
        url: &str,
        auth: Option<(&str, &str)>,
    ) -> reqwest::RequestBuilder {
        let mut request = reqwest::Client::new()
            .request(method, url)
            .header("OCS-APIRequest", "true");
        if let Some((user, pass)) = auth {
            request = request.basic_auth(user, Some(pass));
        }
        request
    }
}

/// Cron's and the webhook worker's loops stopped; started again when dropped.
pub struct Workers {
    nc: &'static RealNc,
}

impl Drop for Workers {
    fn drop(&mut self) {
        let nc_dir = self.nc.dir.display().to_string();
        let run = self.nc.run_dir.clone();
        // The same commands as ../shared/nextcloud/up.sh (cron every 5 s).
        let cron = Command::new("setsid")
            .args([
                "bash",
                "-c",
                r#"echo $$ > "$0"; cd "$1"; while :; do runuser -u www-data -- php -d memory_limit=512M cron.php; sleep "$2"; done"#,
            ])
            .arg(run.join("cron.pgid"))
            .arg(&nc_dir)
            .arg("5")
            .stdin(Stdio::null())
            .stdout(log_file(&run.join("cron.log")))
            .stderr(log_file(&run.join("cron.log")))
            .spawn();
        let webhooks = Command::new("setsid")
            .args([
                "bash",
                "-c",
                r#"echo $$ > "$0"; cd "$1"; while :; do runuser -u www-data -- php -d memory_limit=512M occ background-job:worker -q -i 1 -t 10m "OCA\WebhookListeners\BackgroundJobs\WebhookCall"; sleep 1; done"#,
            ])
            .arg(run.join("webhooks.pgid"))
            .arg(&nc_dir)
            .stdin(Stdio::null())
            .stdout(log_file(&run.join("webhooks.log")))
            .stderr(log_file(&run.join("webhooks.log")))
            .spawn();
        if let Err(e) = cron.and(webhooks) {
            eprintln!("could not restart Nextcloud's background workers: {e}");
        }
    }
}

fn log_file(path: &Path) -> Stdio {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map(Stdio::from)
        .unwrap_or_else(|_| Stdio::null())
}

/// A Nextcloud user made for one test; deleted (with their files) when dropped.
pub struct User {
    nc: &'static RealNc,
    pub name: String,
    pub pass: String,
    http: reqwest::Client,
}

impl Drop for User {
    fn drop(&mut self) {
        let _ = self.nc.occ(&["user:delete", &self.name]);
    }
}

/// `path` with each segment percent-encoded.
fn encode_path(path: &str) -> String {
    path.split('/')
        .map(|s| {
            percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
        })
        .collect::<Vec<_>>()
        .join("/")
}

impl User {
    pub fn auth(&self) -> Option<(&str, &str)> {
        Some((&self.name, &self.pass))
    }

    /// `/remote.php/dav/files/<user>/<path>`, absolute.
    pub fn dav_url(&self, path: &str) -> String {
        format!(
            "{}/remote.php/dav/files/{}/{}",
            self.nc.url,
            self.name,
            encode_path(path.trim_start_matches('/'))
        )
    }

    fn dav(&self, method: &str, url: &str) -> reqwest::RequestBuilder {
        self.http
            .request(Method::from_bytes(method.as_bytes()).unwrap(), url)
            .basic_auth(&self.name, Some(&self.pass))
    }

    async fn expect(
        &self,
        what: &str,
        request: reqwest::RequestBuilder,
        ok: &[u16],
    ) -> reqwest::Response {
        let response = request
            .send()
            .await
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        let status = response.status().as_u16();
        if !ok.contains(&status) {
            let body = response.text().await.unwrap_or_default();
            panic!("{what}: {status} {body}");
        }
        response
    }

    pub async fn mkdir(&self, path: &str) {
        let url = self.dav_url(path);
        self.expect(&format!("MKCOL {path}"), self.dav("MKCOL", &url), &[201])
            .await;
    }

    /// PUT `body` at `path`: 201 new, 204 overwritten.
    pub async fn put(&self, path: &str, body: impl Into<reqwest::Body>) -> u16 {
        let url = self.dav_url(path);
        self.expect(
            &format!("PUT {path}"),
            self.dav("PUT", &url).body(body),
            &[201, 204],
        )
        .await
        .status()
        .as_u16()
    }

    pub async fn get(&self, path: &str) -> bytes::Bytes {
        let url = self.dav_url(path);
        self.expect(&format!("GET {path}"), self.dav("GET", &url), &[200])
            .await
            .bytes()
            .await
            .unwrap()
    }

    /// SHA-256 of the file at `path`, streamed, as lowercase hex; `None` if there is none.
    pub async fn sha256(&self, path: &str) -> Option<String> {
        use futures_util::StreamExt;
        use sha2::Digest;
        let response = self.dav("GET", &self.dav_url(path)).send().await.ok()?;
        if response.status() != StatusCode::OK {
            return None;
        }
        let mut hasher = sha2::Sha256::new();
        let mut stream = response.bytes_stream();
        while let Some(chunk) = stream.next().await {
            hasher.update(&chunk.ok()?);
        }
        Some(
            hasher
                .finalize()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect(),
        )
    }

    /// The ETag of `path` (PROPFIND depth 0), `None` if there is nothing there.
    pub async fn etag(&self, path: &str) -> Option<String> {
        let response = self
            .dav("PROPFIND", &self.dav_url(path))
            .header("Depth", "0")
            .header("Content-Type", "application/xml")
            .body(r#"<?xml version="1.0"?><d:propfind xmlns:d="DAV:"><d:prop><d:getetag/></d:prop></d:propfind>"#)
            .send()
            .await
            .ok()?;
        if response.status().as_u16() != 207 {
            return None;
        }
        let body = response.text().await.ok()?;
        let etag = body
            .split("<d:getetag>")
            .nth(1)?
            .split("</d:getetag>")
            .next()?;
        Some(etag.to_owned())
    }

    pub async fn delete(&self, path: &str) {
        let url = self.dav_url(path);
        self.expect(&format!("DELETE {path}"), self.dav("DELETE", &url), &[204])
            .await;
    }

    /// MOVE (rename) `from` to `to`.
    pub async fn mv(&self, from: &str, to: &str) {
        let request = self
            .dav("MOVE", &self.dav_url(from))
            .header("Destination", self.dav_url(to));
        self.expect(&format!("MOVE {from} {to}"), request, &[201, 204])
            .await;
    }

    pub async fn copy(&self, from: &str, to: &str) {
        let request = self
            .dav("COPY", &self.dav_url(from))
            .header("Destination", self.dav_url(to));
        self.expect(&format!("COPY {from} {to}"), request, &[201, 204])
            .await;
    }

    /// Restores the trashed item whose original name is `name` to where it was.
    pub async fn restore(&self, name: &str) {
        let base = format!("{}/remote.php/dav/trashbin/{}", self.nc.url, self.name);
        let listing = self
            .expect(
                "PROPFIND trash",
                self.dav("PROPFIND", &format!("{base}/trash/"))
                    .header("Depth", "1")
                    .header("Content-Type", "application/xml")
                    .body(
                        r#"<?xml version="1.0"?><d:propfind xmlns:d="DAV:" xmlns:nc="http://nextcloud.org/ns"><d:prop><nc:trashbin-filename/></d:prop></d:propfind>"#,
                    ),
                &[207],
            )
            .await
            .text()
            .await
            .unwrap();
        // Each response: <d:href>…/trash/<name>.d<time></d:href> … <nc:trashbin-filename>name<
        let href = listing
            .split("<d:response>")
            .find(|r| r.contains(&format!("<nc:trashbin-filename>{name}<")))
            .and_then(|r| r.split("<d:href>").nth(1))
            .and_then(|r| r.split("</d:href>").next())
            .unwrap_or_else(|| panic!("{name} is not in the trash bin: {listing}"));
        let request = self.dav("MOVE", &format!("{}{href}", self.nc.url)).header(
            "Destination",
            format!("{base}/restore/{}", encode_path(name)),
        );
        self.expect(&format!("restore {name}"), request, &[201, 204])
            .await;
    }

    /// A request as this user (Basic auth) to any URL.
    pub fn request(&self, method: Method, url: &str) -> reqwest::RequestBuilder {
        self.nc.request(method, url, self.auth())
    }
}

/// An ExApp id, port and secret for one test, and its registration with AppAPI, removed
/// (`occ app_api:app:unregister --force`) when dropped.
pub struct App {
    pub nc: &'static RealNc,
    pub id: String,
    pub port: u16,
    pub secret: String,
    /// The deploy daemon it is registered on.
    pub daemon: String,
}

impl App {
    /// A new id, port and secret for `daemon` (not registered yet).
    pub fn new(nc: &'static RealNc, daemon: &str) -> App {
        let secret = unique_secret();
        App {
            nc,
            id: unique("hbe2e_"),
            port: free_port(),
            secret,
            daemon: daemon.to_owned(),
        }
    }

    /// `harpbridge manifest --json --daemon DAEMON` with APP_SECRET and APP_PORT in its
    /// environment, as an admin runs it; its `id` replaced by this test's app id.
    pub fn manifest(&self) -> Value {
        let out = Command::new(env!("CARGO_BIN_EXE_harpbridge"))
            .args(["manifest", "--json", "--daemon", &self.daemon])
            .env("APP_SECRET", &self.secret)
            .env("APP_PORT", self.port.to_string())
            .output()
            .expect("harpbridge manifest");
        assert!(out.status.success(), "manifest: {out:?}");
        let mut json: Value = serde_json::from_slice(&out.stdout).expect("manifest JSON");
        assert_eq!(json["daemon_config_name"], self.daemon.as_str());
        assert_eq!(json["port"], self.port);
        json["id"] = Value::String(self.id.clone());
        json
    }

    /// `occ app_api:app:register ID DAEMON --wait-finish --json-info …`.
    pub fn register(&self) -> Output {
        let json = self.manifest().to_string();
        self.nc.occ(&[
            "app_api:app:register",
            &self.id,
            &self.daemon,
            "--wait-finish",
            "--json-info",
            &json,
        ])
    }

    pub fn register_ok(&self) {
        let out = self.register();
        assert!(
            out.status.success(),
            "register {}: {}{}",
            self.id,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// This app's line in `occ app_api:app:list`, if listed.
    pub fn listed(&self) -> Option<String> {
        self.nc
            .app_list()
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("{} ", self.id)))
            .map(str::to_owned)
    }

    /// The environment `harpbridge serve` (and `doctor`) get: what AppAPI gives a
    /// manual-install ExApp, for this app.
    pub fn options(&self, data_dir: &Path, nextcloud_url: &str) -> ExAppOptions {
        let mut options = ExAppOptions::new(nextcloud_url, data_dir);
        options.app_id = self.id.clone();
        options.secret = self.secret.clone();
        // APP_HOST:APP_PORT, as AppAPI starts it (no --listen).
        options.listen = None;
        options.extra_env = vec![
            ("APP_PORT".into(), self.port.to_string()),
            // Everything of ours, but not libp2p's per-frame lines (100 MiB transfers).
            (
                "RUST_LOG".into(),
                "trace,libp2p_noise=info,yamux=info,libp2p_swarm=info,libp2p_tcp=info,\
                 libp2p_quic=info,quinn=info,quinn_proto=info,multistream_select=info,\
                 libp2p_gossipsub=info,libp2p_ping=info,libp2p_identify=info,libp2p_mdns=info,\
                 hyper=info,hyper_util=info,reqwest=debug,h2=info,rustls=info"
                    .into(),
            ),
        ];
        options
    }

    /// Starts `harpbridge serve` for this app (TCP on 127.0.0.1:PORT) with `extra_args`.
    pub fn serve(&self, data_dir: &Path, extra_args: &[String]) -> ExApp {
        let mut options = self.options(data_dir, &self.nc.url);
        if self.daemon == self.nc.harp_daemon {
            // AppAPI gives a HaRP daemon's ExApps the daemon's Nextcloud URL.
            options.nextcloud_url = self.nc.harp_url.clone();
        }
        options.extra_args = extra_args.to_vec();
        self.serve_with(options)
    }

    pub fn serve_with(&self, options: ExAppOptions) -> ExApp {
        remember_auth(&options.secret, "admin");
        ExApp::start(options)
    }

    /// Records `user`'s auth header value for the no-secrets-in-logs check.
    pub fn remember_user(&self, user: &str) {
        remember_auth(&self.secret, user);
    }

    /// The PHP proxy's URL of `path` (`/api/x`).
    pub fn proxy_url(&self, path: &str) -> String {
        format!(
            "{}/index.php/apps/app_api/proxy/{}{path}",
            self.nc.url, self.id
        )
    }

    /// HaRP's URL of `path` (`/api/x`).
    pub fn harp_url(&self, path: &str) -> String {
        format!("{}/exapps/{}{path}", self.nc.harp_url, self.id)
    }

    /// The top-menu page.
    pub fn page_url(&self) -> String {
        format!(
            "{}/index.php/apps/app_api/embedded/{}/{MENU}",
            self.nc.url, self.id
        )
    }

    pub fn unregister(&self) -> Output {
        self.nc
            .occ(&["app_api:app:unregister", &self.id, "--force", "--silent"])
    }
}

impl Drop for App {
    fn drop(&mut self) {
        if self.listed().is_some() {
            let out = self.unregister();
            if !out.status.success() {
                eprintln!(
                    "unregister {}: {}{}",
                    self.id,
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
    }
}

/// The status of `request`, and its body.
pub async fn status_of(request: reqwest::RequestBuilder) -> (u16, String) {
    let response = request.send().await.expect("request");
    let status = response.status().as_u16();
    (status, response.text().await.unwrap_or_default())
}

/// Polls `check` every 250 ms until it gives `Some`, failing after `limit` with `what`.
pub async fn poll<T, F, Fut>(limit: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(t) = check().await {
            return t;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?}: {what}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Runs `harpbridge doctor ARGS` with the environment serve got from `options` (as AppAPI
/// gives it to the ExApp's container), to completion.
pub fn doctor(options: &ExAppOptions, args: &[&str]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_harpbridge"));
    command
        .arg("doctor")
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("APP_ID", &options.app_id)
        .env("APP_SECRET", &options.secret)
        .env("APP_VERSION", &options.version)
        .env("APP_HOST", "127.0.0.1")
        .env("AA_VERSION", super::AA_VERSION)
        .env(
            "NEXTCLOUD_URL",
            format!("{}/index.php", options.nextcloud_url),
        )
        .env("APP_PERSISTENT_STORAGE", &options.data_dir)
        .stdin(Stdio::null());
    for (k, v) in &options.extra_env {
        command.env(k, v);
    }
    command.output().expect("running harpbridge doctor")
}

/// The chain entries serve lists, as `kind path` lines ([`ExApp::entry_lines`]), once those
/// after the first `seen` hold `expected` in order; fails after `limit` with what it saw.
pub async fn entries_after(
    exapp: &ExApp,
    seen: usize,
    expected: &[&str],
    limit: Duration,
) -> Vec<String> {
    let deadline = Instant::now() + limit;
    loop {
        let lines = exapp.entry_lines().await;
        let new = lines.get(seen..).unwrap_or_default();
        let mut want = expected.iter().peekable();
        for line in new {
            if want.peek().is_some_and(|w| *w == line) {
                want.next();
            }
        }
        if want.peek().is_none() {
            return lines;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {expected:?} after entry {seen}; entries: {lines:#?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
