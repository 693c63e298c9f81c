//! Every setting of `harpbridge serve`, in one place.
//!
//! AppAPI configures an ExApp only through environment variables (docs/appapi.md §4); each one
//! can also be given as a flag, which wins. Values are read as plain strings and checked
//! here, once, so that a missing or malformed value stops start-up with one line that names
//! it (exit code 2) instead of clap's multi-line usage text.

use std::fmt;
use std::path::PathBuf;

use clap::Args;
use libp2p::Multiaddr;

/// The raw settings as clap reads them from flags and the environment.
///
/// Everything is a string so that validation, and its error message, stays ours.
#[derive(Debug, Clone, Default, Args)]
pub struct ConfigArgs {
    /// The ExApp's id as registered in AppAPI.
    #[arg(long, env = "APP_ID")]
    pub app_id: Option<String>,
    /// The shared secret AppAPI signs requests with (never logged).
    #[arg(long, env = "APP_SECRET", hide_env_values = true)]
    pub app_secret: Option<String>,
    /// The ExApp version AppAPI deployed.
    #[arg(long, env = "APP_VERSION")]
    pub app_version: Option<String>,
    /// Address to listen on (without HaRP).
    #[arg(long, env = "APP_HOST")]
    pub app_host: Option<String>,
    /// Port to listen on (without HaRP); with HaRP the FRP remote port.
    #[arg(long, env = "APP_PORT")]
    pub app_port: Option<String>,
    /// Human name shown in Nextcloud (default: the manifest's `<name>`, "Harp Bridge").
    #[arg(long, env = "APP_DISPLAY_NAME")]
    pub app_display_name: Option<String>,
    /// AppAPI's version; sent back as AA-VERSION, never validated.
    #[arg(long, env = "AA_VERSION")]
    pub aa_version: Option<String>,
    /// Where Nextcloud answers this ExApp (a trailing `/index.php` and `/` are stripped).
    #[arg(long, env = "NEXTCLOUD_URL")]
    pub nextcloud_url: Option<String>,
    /// Directory for the identity key, database and blocks.
    #[arg(long = "data-dir", env = "APP_PERSISTENT_STORAGE")]
    pub data_dir: Option<String>,
    /// CPU, CUDA or ROCM (harpbridge only needs CPU).
    #[arg(long, env = "COMPUTE_DEVICE")]
    pub compute_device: Option<String>,
    /// HaRP's shared key; when set, also listen on HaRP's FRP unix socket (never logged).
    #[arg(long, env = "HP_SHARED_KEY", hide_env_values = true)]
    pub hp_shared_key: Option<String>,
    /// HaRP's FRP server host (used by the container's frpc, kept for reference).
    #[arg(long, env = "HP_FRP_ADDRESS")]
    pub hp_frp_address: Option<String>,
    /// HaRP's FRP server port.
    #[arg(long, env = "HP_FRP_PORT")]
    pub hp_frp_port: Option<String>,
    /// Override where to listen: `tcp://HOST:PORT` or `unix://PATH`, comma-separated.
    #[arg(long)]
    pub listen: Option<String>,
    /// Sync this user's folder as a library (created at start if missing): `UID:/FOLDER`.
    #[arg(long = "library", value_name = "UID:/FOLDER")]
    pub libraries: Vec<String>,
    /// This device's name in membership entries (default: `<app id>@<hostname>`).
    #[arg(long, env = "HARPBRIDGE_DEVICE_NAME")]
    pub device_name: Option<String>,
    /// Seconds between library scans when webhooks are unavailable.
    #[arg(long, env = "HARPBRIDGE_SCAN_INTERVAL", default_value = "300")]
    pub scan_interval: String,
    /// Size limit of the block cache in MiB.
    #[arg(long, env = "HARPBRIDGE_CACHE_LIMIT_MIB", default_value = "16384")]
    pub cache_limit_mib: String,
    /// WebDAV requests the ingest worker keeps in flight to Nextcloud (default 12); `1`
    /// processes events one at a time with one commit each (the worker before it read
    /// ahead: a baseline for benchmarks, and a fallback for a Nextcloud that cannot take
    /// parallel requests).
    #[arg(long, env = "HARPBRIDGE_INGEST_IN_FLIGHT")]
    pub ingest_in_flight: Option<String>,
    /// Run the peer-to-peer swarm: `on` or `off`.
    #[arg(long, env = "HARPBRIDGE_P2P", default_value = "on")]
    pub p2p: String,
    /// The swarm's port, TCP and UDP (QUIC), on every IPv4 interface; 0 lets the kernel
    /// choose. Ignored when `--p2p-listen` is given.
    #[arg(long, env = "HARPBRIDGE_P2P_PORT", default_value = "4001")]
    pub p2p_port: String,
    /// The swarm's listen multiaddrs, comma-separated (overrides `--p2p-port`).
    #[arg(long, env = "HARPBRIDGE_P2P_LISTEN", value_name = "MULTIADDR,…")]
    pub p2p_listen: Option<String>,
    /// Peers to dial and keep dialling (the WAN), comma-separated multiaddrs such as
    /// `/dns4/office.example.org/tcp/4001/p2p/12D3Koo…`.
    #[arg(long, env = "HARPBRIDGE_P2P_PEERS", value_name = "MULTIADDR,…")]
    pub p2p_peers: Option<String>,
    /// Find peers on the LAN by multicast DNS: `on` or `off`.
    #[arg(long, env = "HARPBRIDGE_MDNS", default_value = "on")]
    pub mdns: String,
    /// Limit block transfers with WAN peers to this rate, each way (`2mbit`, `500kbit`,
    /// `1MiB`); LAN peers are never limited. Default: unlimited.
    #[arg(long, env = "HARPBRIDGE_WAN_LIMIT", value_name = "RATE")]
    pub wan_limit: Option<String>,
}

/// Most WebDAV requests `--ingest-in-flight` may ask for: more would only queue in
/// Nextcloud's PHP workers, beside its users' requests.
const MAX_INGEST_IN_FLIGHT: usize = 64;

/// A secret that never shows itself in `Debug` or `Display` output.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret itself, for signing and comparing only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Where the HTTP server listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listen {
    /// A TCP address, `host:port` (host may be a name or an IP literal).
    Tcp { host: String, port: u16 },
    /// A unix socket path, as HaRP's FRP tunnel expects (`/tmp/exapp.sock`).
    Unix(PathBuf),
}

impl fmt::Display for Listen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Listen::Tcp { host, port } if host.contains(':') => write!(f, "tcp://[{host}]:{port}"),
            Listen::Tcp { host, port } => write!(f, "tcp://{host}:{port}"),
            Listen::Unix(path) => write!(f, "unix://{}", path.display()),
        }
    }
}

/// The unix socket that HaRP's FRP client forwards to (docs/appapi.md §12).
pub const HARP_SOCKET: &str = "/tmp/exapp.sock";

/// What AppAPI told the container about HaRP.
#[derive(Debug, Clone)]
pub struct Harp {
    pub shared_key: Secret,
    pub frp_address: Option<String>,
    pub frp_port: Option<u16>,
}

/// The device the container was deployed for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ComputeDevice {
    Cpu,
    Cuda,
    Rocm,
}

/// Validated settings of `harpbridge serve`.
#[derive(Debug, Clone)]
pub struct Config {
    pub app_id: String,
    pub app_secret: Secret,
    pub app_version: String,
    pub app_display_name: String,
    pub aa_version: String,
    /// Nextcloud's base URL, without `/index.php` and without a trailing `/`.
    pub nextcloud_url: String,
    pub data_dir: PathBuf,
    pub compute_device: ComputeDevice,
    pub harp: Option<Harp>,
    /// Where the HTTP server listens: one or more addresses, all serving the same router.
    pub listen: Vec<Listen>,
    /// Libraries to create at start if missing: (user id, folder).
    pub libraries: Vec<(String, String)>,
    pub device_name: String,
    pub scan_interval: std::time::Duration,
    /// Block cache limit in bytes.
    pub cache_limit: u64,
    /// WebDAV requests the ingest worker keeps in flight (1: one event at a time);
    /// `None`: the engine's default.
    pub ingest_in_flight: Option<usize>,
    /// The swarm's settings; `None` when it is turned off.
    pub p2p: Option<P2p>,
}

/// Validated swarm settings of `harpbridge serve` (see [`crate::p2p::P2pConfig`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct P2p {
    /// Where to listen: TCP and QUIC on `0.0.0.0:4001` unless told otherwise.
    pub listen: Vec<Multiaddr>,
    /// WAN peers to dial and keep dialling.
    pub peers: Vec<Multiaddr>,
    pub mdns: bool,
    /// Block bytes per second with WAN peers, each way; `None`: unlimited.
    pub wan_limit: Option<u64>,
}

impl P2p {
    /// The node's configuration. `serve` does not join libraries that peers offer on
    /// their own: any device that reaches the port could make a library, add this node and
    /// fill its disk, and a library here needs a Nextcloud folder anyway.
    pub fn node_config(&self) -> crate::p2p::P2pConfig {
        crate::p2p::P2pConfig {
            listen: self.listen.clone(),
            peers: self.peers.clone(),
            mdns: self.mdns,
            join_offered: false,
            wan_limit_up: self.wan_limit,
            wan_limit_down: self.wan_limit,
            ..crate::p2p::P2pConfig::default()
        }
    }
}

/// A setting that is missing or cannot be used. Its `Display` is the one line printed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("missing required setting {var} (set the environment variable or {flag})")]
    Missing {
        var: &'static str,
        flag: &'static str,
    },
    #[error("malformed setting {var}: {reason}")]
    Malformed { var: &'static str, reason: String },
}

fn required(
    value: &Option<String>,
    var: &'static str,
    flag: &'static str,
) -> Result<String, ConfigError> {
    match value.as_deref().map(str::trim) {
        Some(v) if !v.is_empty() => Ok(v.to_owned()),
        _ => Err(ConfigError::Missing { var, flag }),
    }
}

fn optional(value: &Option<String>) -> Option<String> {
    value
        .as_deref()
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
}

fn port(value: &str, var: &'static str) -> Result<u16, ConfigError> {
    match value.parse::<u16>() {
        Ok(p) if p != 0 => Ok(p),
        _ => Err(ConfigError::Malformed {
            var,
            reason: format!("{value:?} is not a TCP port (1-65535)"),
        }),
    }
}

/// Strips `/index.php` and trailing slashes, and checks the URL is http(s) with a host.
pub fn normalize_nextcloud_url(raw: &str) -> Result<String, ConfigError> {
    let malformed = |reason: String| ConfigError::Malformed {
        var: "NEXTCLOUD_URL",
        reason,
    };
    let mut url = raw.trim().trim_end_matches('/').to_owned();
    if let Some(stripped) = url.strip_suffix("/index.php") {
        url = stripped.trim_end_matches('/').to_owned();
    }
    let parsed = url::Url::parse(&url).map_err(|e| malformed(format!("{raw:?}: {e}")))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        return Err(malformed(format!("{raw:?} is not an http(s) URL")));
    }
    Ok(url)
}

/// `on`/`off` (also `true`/`false`, `yes`/`no`, `1`/`0`).
fn switch(value: &str, var: &'static str) -> Result<bool, ConfigError> {
    match value.trim().to_ascii_lowercase().as_str() {
        "on" | "true" | "yes" | "1" => Ok(true),
        "off" | "false" | "no" | "0" => Ok(false),
        other => Err(ConfigError::Malformed {
            var,
            reason: format!("{other:?} is not on or off"),
        }),
    }
}

/// A comma- or whitespace-separated list of multiaddrs.
fn multiaddrs(raw: &str, var: &'static str) -> Result<Vec<Multiaddr>, ConfigError> {
    raw.split(|c: char| c == ',' || c.is_whitespace())
        .filter(|a| !a.is_empty())
        .map(|a| {
            a.parse::<Multiaddr>().map_err(|e| ConfigError::Malformed {
                var,
                reason: format!("{a:?} is not a multiaddr: {e}"),
            })
        })
        .collect()
}

fn parse_p2p(args: &ConfigArgs) -> Result<Option<P2p>, ConfigError> {
    let port = match args.p2p_port.trim().parse::<u16>() {
        Ok(p) => p,
        Err(_) => {
            return Err(ConfigError::Malformed {
                var: "HARPBRIDGE_P2P_PORT",
                reason: format!("{:?} is not a port (0-65535)", args.p2p_port),
            })
        }
    };
    let listen = match optional(&args.p2p_listen) {
        Some(raw) => multiaddrs(&raw, "HARPBRIDGE_P2P_LISTEN")?,
        None => Vec::new(),
    };
    let listen = if listen.is_empty() {
        multiaddrs(
            &format!("/ip4/0.0.0.0/tcp/{port},/ip4/0.0.0.0/udp/{port}/quic-v1"),
            "HARPBRIDGE_P2P_PORT",
        )?
    } else {
        listen
    };
    let peers = match optional(&args.p2p_peers) {
        Some(raw) => multiaddrs(&raw, "HARPBRIDGE_P2P_PEERS")?,
        None => Vec::new(),
    };
    for peer in &peers {
        crate::p2p::config::dialable(peer).map_err(|reason| ConfigError::Malformed {
            var: "HARPBRIDGE_P2P_PEERS",
            reason,
        })?;
    }
    let mdns = switch(&args.mdns, "HARPBRIDGE_MDNS")?;
    let wan_limit =
        match optional(&args.wan_limit) {
            Some(raw) => Some(crate::p2p::pace::parse_rate(&raw).map_err(|reason| {
                ConfigError::Malformed {
                    var: "HARPBRIDGE_WAN_LIMIT",
                    reason,
                }
            })?),
            None => None,
        };
    // Checked last so that a bad swarm value is reported even while it is off.
    if !switch(&args.p2p, "HARPBRIDGE_P2P")? {
        return Ok(None);
    }
    Ok(Some(P2p {
        listen,
        peers,
        mdns,
        wan_limit,
    }))
}

fn parse_listen(raw: &str) -> Result<Listen, ConfigError> {
    let malformed = |reason: String| ConfigError::Malformed {
        var: "--listen",
        reason,
    };
    if let Some(path) = raw.strip_prefix("unix://") {
        if path.is_empty() {
            return Err(malformed("unix:// needs a socket path".into()));
        }
        return Ok(Listen::Unix(PathBuf::from(path)));
    }
    let Some(addr) = raw.strip_prefix("tcp://") else {
        return Err(malformed(format!(
            "{raw:?}: expected tcp://HOST:PORT or unix://PATH"
        )));
    };
    let (host, port_str) = addr
        .rsplit_once(':')
        .ok_or_else(|| malformed(format!("{raw:?}: expected tcp://HOST:PORT")))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(malformed(format!("{raw:?}: missing host")));
    }
    let port = port_str
        .parse::<u16>()
        .map_err(|_| malformed(format!("{raw:?}: {port_str:?} is not a port")))?;
    Ok(Listen::Tcp {
        host: host.to_owned(),
        port,
    })
}

impl ConfigArgs {
    /// Checks every setting and builds the [`Config`]; the first problem wins.
    pub fn validate(&self) -> Result<Config, ConfigError> {
        let app_id = required(&self.app_id, "APP_ID", "--app-id")?;
        if !app_id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(ConfigError::Malformed {
                var: "APP_ID",
                reason: format!("{app_id:?} may hold only letters, digits, '_' and '-'"),
            });
        }
        let app_secret = Secret::new(required(&self.app_secret, "APP_SECRET", "--app-secret")?);
        let app_version = required(&self.app_version, "APP_VERSION", "--app-version")?;
        let app_host = required(&self.app_host, "APP_HOST", "--app-host")?;
        let app_port = port(
            &required(&self.app_port, "APP_PORT", "--app-port")?,
            "APP_PORT",
        )?;
        let nextcloud_url = normalize_nextcloud_url(&required(
            &self.nextcloud_url,
            "NEXTCLOUD_URL",
            "--nextcloud-url",
        )?)?;
        let compute_device = match optional(&self.compute_device)
            .map(|d| d.to_ascii_uppercase())
            .as_deref()
        {
            None | Some("CPU") => ComputeDevice::Cpu,
            Some("CUDA") => ComputeDevice::Cuda,
            Some("ROCM") => ComputeDevice::Rocm,
            Some(other) => {
                return Err(ConfigError::Malformed {
                    var: "COMPUTE_DEVICE",
                    reason: format!("{other:?} is not CPU, CUDA or ROCM"),
                })
            }
        };
        let harp = match optional(&self.hp_shared_key) {
            None => None,
            Some(key) => Some(Harp {
                shared_key: Secret::new(key),
                frp_address: optional(&self.hp_frp_address),
                frp_port: optional(&self.hp_frp_port)
                    .map(|p| port(&p, "HP_FRP_PORT"))
                    .transpose()?,
            }),
        };
        // AppAPI gives every ExApp a port, and HaRP in direct mode (the only mode of a
        // manual-install HaRP daemon) dials APP_HOST:APP_PORT over TCP; HP_SHARED_KEY is set
        // only for docker-install without direct mode, where frpc ends the tunnel at the
        // unix socket. So: always TCP, and the socket too when HaRP's key is there.
        let listen = match optional(&self.listen) {
            Some(raw) => raw
                .split(',')
                .map(str::trim)
                .filter(|r| !r.is_empty())
                .map(parse_listen)
                .collect::<Result<Vec<_>, _>>()?,
            None => {
                let mut listen = vec![Listen::Tcp {
                    host: app_host,
                    port: app_port,
                }];
                if harp.is_some() {
                    listen.push(Listen::Unix(PathBuf::from(HARP_SOCKET)));
                }
                listen
            }
        };
        if listen.is_empty() {
            return Err(ConfigError::Malformed {
                var: "--listen",
                reason: "no address given".into(),
            });
        }
        let libraries = self
            .libraries
            .iter()
            .map(|spec| match spec.split_once(':') {
                Some((uid, folder)) if !uid.trim().is_empty() => {
                    Ok((uid.trim().to_owned(), folder.trim().to_owned()))
                }
                _ => Err(ConfigError::Malformed {
                    var: "--library",
                    reason: format!("{spec:?} is not UID:/FOLDER"),
                }),
            })
            .collect::<Result<Vec<_>, _>>()?;
        let scan_interval = match self.scan_interval.trim().parse::<u64>() {
            Ok(s) if s > 0 => std::time::Duration::from_secs(s),
            _ => {
                return Err(ConfigError::Malformed {
                    var: "HARPBRIDGE_SCAN_INTERVAL",
                    reason: format!(
                        "{:?} is not a positive number of seconds",
                        self.scan_interval
                    ),
                })
            }
        };
        let cache_limit = match self.cache_limit_mib.trim().parse::<u64>() {
            Ok(m) if m > 0 => m.saturating_mul(1 << 20),
            _ => {
                return Err(ConfigError::Malformed {
                    var: "HARPBRIDGE_CACHE_LIMIT_MIB",
                    reason: format!("{:?} is not a positive number of MiB", self.cache_limit_mib),
                })
            }
        };
        let ingest_in_flight = match optional(&self.ingest_in_flight) {
            None => None,
            Some(raw) => match raw.parse::<usize>() {
                Ok(n) if (1..=MAX_INGEST_IN_FLIGHT).contains(&n) => Some(n),
                _ => {
                    return Err(ConfigError::Malformed {
                        var: "HARPBRIDGE_INGEST_IN_FLIGHT",
                        reason: format!("{raw:?} is not a number from 1 to {MAX_INGEST_IN_FLIGHT}"),
                    })
                }
            },
        };
        let device_name = optional(&self.device_name).unwrap_or_else(|| {
            let host = std::fs::read_to_string("/etc/hostname")
                .map(|h| h.trim().to_owned())
                .unwrap_or_default();
            if host.is_empty() {
                app_id.clone()
            } else {
                format!("{app_id}@{host}")
            }
        });
        let p2p = parse_p2p(self)?;
        let data_dir = optional(&self.data_dir)
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(format!("{app_id}_data")));
        Ok(Config {
            // AppAPI sets APP_DISPLAY_NAME for docker-install only; a manual install would
            // otherwise show the bare app id in the top menu.
            app_display_name: optional(&self.app_display_name).unwrap_or_else(|| {
                crate::appinfo::Manifest::shipped()
                    .map(|m| m.name)
                    .unwrap_or_else(|_| app_id.clone())
            }),
            aa_version: optional(&self.aa_version).unwrap_or_else(|| "32.0.0".to_owned()),
            app_id,
            app_secret,
            app_version,
            nextcloud_url,
            data_dir,
            compute_device,
            harp,
            listen,
            libraries,
            device_name,
            scan_interval,
            cache_limit,
            ingest_in_flight,
            p2p,
        })
    }
}

/// AppAPI generates 64-character secrets; a much shorter one is guessable.
pub const SHORT_SECRET: usize = 32;

impl Config {
    /// Settings that work but that an admin should change, one sentence each (never
    /// quoting a secret).
    pub fn warnings(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        let length = self.app_secret.expose().len();
        if length < SHORT_SECRET {
            warnings.push(format!(
                "APP_SECRET is {length} bytes long: anyone who guesses it acts as AppAPI; \
                 use at least {SHORT_SECRET} random bytes (AppAPI generates 64)"
            ));
        }
        warnings
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full() -> ConfigArgs {
        ConfigArgs {
            app_id: Some("harpbridge".into()),
            app_secret: Some("s3cret".into()),
            app_version: Some("0.1.0".into()),
            app_host: Some("127.0.0.1".into()),
            app_port: Some("23001".into()),
            nextcloud_url: Some("http://nc.local/index.php/".into()),
            scan_interval: "300".into(),
            cache_limit_mib: "1024".into(),
            p2p: "on".into(),
            p2p_port: "4001".into(),
            mdns: "on".into(),
            ..Default::default()
        }
    }

    #[test]
    fn strips_index_php_and_slashes() {
        let c = full().validate().unwrap();
        assert_eq!(c.nextcloud_url, "http://nc.local");
        assert_eq!(
            normalize_nextcloud_url("https://x.org/nc/").unwrap(),
            "https://x.org/nc"
        );
        assert!(normalize_nextcloud_url("ftp://x").is_err());
    }

    #[test]
    fn harp_key_adds_the_unix_socket_to_tcp_unless_overridden() {
        let mut a = full();
        let tcp = match &a.validate().unwrap().listen[..] {
            [tcp @ Listen::Tcp { .. }] => tcp.clone(),
            other => panic!("without HaRP: {other:?}"),
        };
        a.hp_shared_key = Some("k".into());
        assert_eq!(
            a.validate().unwrap().listen,
            vec![tcp, Listen::Unix(HARP_SOCKET.into())]
        );
        a.listen = Some("tcp://[::1]:9000, unix:///tmp/x.sock".into());
        assert_eq!(
            a.validate().unwrap().listen,
            vec![
                Listen::Tcp {
                    host: "::1".into(),
                    port: 9000
                },
                Listen::Unix("/tmp/x.sock".into())
            ]
        );
    }

    #[test]
    fn malformed_values_are_named() {
        let mut a = full();
        a.app_port = Some("eighty".into());
        assert!(matches!(
            a.validate(),
            Err(ConfigError::Malformed {
                var: "APP_PORT",
                ..
            })
        ));
        let mut a = full();
        a.compute_device = Some("tpu".into());
        assert!(matches!(
            a.validate(),
            Err(ConfigError::Malformed {
                var: "COMPUTE_DEVICE",
                ..
            })
        ));
    }

    #[test]
    fn swarm_defaults_to_a_fixed_port_on_every_interface() {
        let p2p = full().validate().unwrap().p2p.unwrap();
        let listen: Vec<String> = p2p.listen.iter().map(|a| a.to_string()).collect();
        assert_eq!(
            listen,
            ["/ip4/0.0.0.0/tcp/4001", "/ip4/0.0.0.0/udp/4001/quic-v1"]
        );
        assert!(p2p.mdns && p2p.peers.is_empty());
        assert!(!p2p.node_config().join_offered);
    }

    #[test]
    fn swarm_settings_are_checked() {
        let mut a = full();
        a.p2p_listen = Some("/ip4/127.0.0.1/tcp/0, /ip4/127.0.0.1/udp/0/quic-v1".into());
        a.p2p_peers = Some("/ip4/203.0.113.7/tcp/4001".into());
        a.mdns = "off".into();
        let p2p = a.validate().unwrap().p2p.unwrap();
        assert_eq!(p2p.listen.len(), 2);
        assert_eq!(p2p.peers.len(), 1);
        assert!(!p2p.mdns);
        a.p2p = "OFF".into();
        assert_eq!(a.validate().unwrap().p2p, None);
        let bad = |f: fn(&mut ConfigArgs)| {
            let mut a = full();
            f(&mut a);
            match a.validate() {
                Err(ConfigError::Malformed { var, .. }) => var,
                other => panic!("{other:?}"),
            }
        };
        assert_eq!(bad(|a| a.p2p = "maybe".into()), "HARPBRIDGE_P2P");
        assert_eq!(bad(|a| a.p2p_port = "70000".into()), "HARPBRIDGE_P2P_PORT");
        assert_eq!(
            bad(|a| a.p2p_listen = Some("tcp://x".into())),
            "HARPBRIDGE_P2P_LISTEN"
        );
        assert_eq!(
            bad(|a| a.p2p_peers = Some("/ip4/1.2.3.4/tcp/x".into())),
            "HARPBRIDGE_P2P_PEERS"
        );
        assert_eq!(bad(|a| a.mdns = "2".into()), "HARPBRIDGE_MDNS");
    }

    #[test]
    fn a_short_secret_is_warned_about_without_quoting_it() {
        let short = full().validate().unwrap();
        let warnings = short.warnings();
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].contains("APP_SECRET is 6 bytes"));
        assert!(!warnings[0].contains("s3cret"));
        let long = ConfigArgs {
            app_secret: Some("x".repeat(64)),
            ..full()
        };
        assert!(long.validate().unwrap().warnings().is_empty());
    }

    #[test]
    fn secret_debug_is_redacted() {
        let c = full().validate().unwrap();
        assert!(!format!("{c:?}").contains("s3cret"));
    }
}
