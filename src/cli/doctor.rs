//! `harpbridge doctor`: asks the running `serve` to check itself (`GET /api/admin/health`,
//! see [`crate::web::health`]) and prints each check with what to do about a failure.
//!
//! It reads the same settings as `serve` (`APP_ID`, `APP_SECRET`, `APP_PORT`,
//! `NEXTCLOUD_URL`, …), so it runs beside serve with the same environment (`docker exec`
//! into the container, or the shell that started it). It signs its request with the app
//! secret, as AppAPI does; with `--user ADMIN` it acts as that Nextcloud admin, which also
//! runs the checks that need one (background jobs, the panel through AppAPI's proxy).
//! Exit 0 when every check passes, 1 when one fails, 2 on bad settings.

use std::process::ExitCode;
use std::time::Duration;

use clap::Args;

use crate::appapi::client::{Caller, NextcloudClient};
use crate::config::{Config, ConfigArgs, Listen};
use crate::web::health::{Check, Report};

#[derive(Debug, Args)]
pub struct DoctorArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
    /// Act as this Nextcloud admin (runs the checks that need one).
    #[arg(long, value_name = "UID")]
    pub user: Option<String>,
    /// serve's address, if not APP_HOST:APP_PORT (e.g. `http://127.0.0.1:23000`).
    #[arg(long, value_name = "URL")]
    pub url: Option<String>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: DoctorArgs) -> ExitCode {
    let config = match args.config.validate() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("harpbridge: {e}");
            return ExitCode::from(2);
        }
    };
    let report = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt.block_on(ask(&config, args.url.as_deref(), args.user.as_deref())),
        Err(e) => {
            eprintln!("harpbridge: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    if args.json {
        match serde_json::to_string_pretty(&report) {
            Ok(json) => println!("{json}"),
            Err(e) => eprintln!("harpbridge: {e}"),
        }
    } else {
        for check in &report.checks {
            print!("{}", render(check));
        }
    }
    if report.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// One check as lines of text.
pub fn render(check: &Check) -> String {
    let mut out = format!(
        "{:<4}  {:<18}  {}\n",
        if check.ok { "ok" } else { "FAIL" },
        check.name,
        check.message
    );
    if let Some(fix) = &check.fix {
        out.push_str(&format!("{:<4}  {:<18}  → {fix}\n", "", ""));
    }
    out
}

/// Where serve answers: `--url`, else its first TCP address (a wildcard host is asked on
/// loopback).
fn serve_url(config: &Config, url: Option<&str>) -> Option<String> {
    if let Some(url) = url {
        return Some(url.trim_end_matches('/').to_owned());
    }
    config.listen.iter().find_map(|l| match l {
        Listen::Tcp { host, port } => {
            let host = match host.as_str() {
                "0.0.0.0" | "" => "127.0.0.1".to_owned(),
                "::" => "[::1]".to_owned(),
                h if h.contains(':') => format!("[{h}]"),
                h => h.to_owned(),
            };
            Some(format!("http://{host}:{port}"))
        }
        Listen::Unix(_) => None,
    })
}

async fn ask(config: &Config, url: Option<&str>, user: Option<&str>) -> Report {
    let Some(base) = serve_url(config, url) else {
        return Report::new(vec![serve_failed(
            "serve listens on a unix socket only".into(),
            "give its TCP address with --url".into(),
        )]);
    };
    let serve = match NextcloudClient::with_identity(
        &base,
        &config.app_id,
        &config.app_version,
        &config.aa_version,
        config.app_secret.clone(),
    ) {
        Ok(client) => client,
        Err(e) => {
            return Report::new(vec![serve_failed(
                e.to_string(),
                "check the settings".into(),
            )])
        }
    };
    let caller = match user {
        Some(uid) => Caller::User(uid),
        None => Caller::App,
    };
    let answer = serve
        .request(reqwest::Method::GET, "/api/admin/health", caller)
        .timeout(Duration::from_secs(120))
        .send()
        .await;
    let response = match answer {
        Ok(r) => r,
        Err(e) => {
            return Report::new(vec![serve_failed(
                format!("harpbridge serve does not answer at {base}: {e}"),
                "start it (harpbridge serve, or the container), or give its address with --url"
                    .into(),
            )])
        }
    };
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    match serde_json::from_str::<Report>(&text) {
        Ok(report) if status.is_success() => report,
        _ => Report::new(vec![serve_failed(
            format!(
                "serve at {base} answered {status}: {}",
                text.chars().take(300).collect::<String>()
            ),
            match status.as_u16() {
                401 => "APP_ID and APP_SECRET must be serve's".into(),
                403 => "--user must name a Nextcloud admin".into(),
                _ => "see serve's log".into(),
            },
        )]),
    }
}

fn serve_failed(message: String, fix: String) -> Check {
    Check {
        name: "serve".into(),
        ok: false,
        message,
        fix: Some(fix),
    }
}
