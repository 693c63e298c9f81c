//! [`Metrics`] as Prometheus text exposition (format version 0.0.4): one `# HELP` and
//! `# TYPE` line per family, then its samples, label values escaped.
//!
//! | family | type | labels |
//! |---|---|---|
//! | `harpbridge_p2p_up` | gauge | |
//! | `harpbridge_p2p_peers` | gauge | `state` = `connected`, `trusted` |
//! | `harpbridge_p2p_peer_received_bytes_total` | counter | `peer`, `class` |
//! | `harpbridge_p2p_peer_sent_bytes_total` | counter | `peer`, `class` |
//! | `harpbridge_p2p_received_bytes_total` | counter | `class` = `lan`, `wan` |
//! | `harpbridge_p2p_sent_bytes_total` | counter | `class` |
//! | `harpbridge_ingest_backlog` | gauge | |
//! | `harpbridge_ingest_failed` | gauge | |
//! | `harpbridge_ingest_events_total` | counter | `counter` (the engine's counter names) |
//! | `harpbridge_chain_entries` | gauge | `library` |

use std::fmt::Write;

use super::metrics::Metrics;
use super::swarm::SwarmStatus;

/// The `Content-Type` of the text format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// One metric family being written.
struct Family<'a> {
    out: &'a mut String,
    name: &'static str,
}

impl Family<'_> {
    fn sample(&mut self, labels: &[(&str, &str)], value: u64) {
        self.out.push_str(self.name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (name, value)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{name}=\"{}\"", escape(value));
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {value}");
    }
}

fn family<'a>(out: &'a mut String, name: &'static str, kind: &str, help: &str) -> Family<'a> {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
    Family { out, name }
}

/// A label value: backslash, double quote and line feed escaped.
fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// The whole exposition.
pub fn render(m: &Metrics) -> String {
    let mut out = String::new();
    let up = matches!(m.swarm, SwarmStatus::Running { .. });
    family(
        &mut out,
        "harpbridge_p2p_up",
        "gauge",
        "Whether the peer-to-peer swarm runs.",
    )
    .sample(&[], u64::from(up));

    let peers = &m.traffic.peers;
    let mut f = family(
        &mut out,
        "harpbridge_p2p_peers",
        "gauge",
        "Peers known, by state.",
    );
    f.sample(
        &[("state", "connected")],
        peers.iter().filter(|p| p.connected).count() as u64,
    );
    f.sample(
        &[("state", "trusted")],
        peers.iter().filter(|p| p.trusted).count() as u64,
    );

    let mut f = family(
        &mut out,
        "harpbridge_p2p_peer_received_bytes_total",
        "counter",
        "Block bytes received from a peer since start.",
    );
    for p in peers {
        f.sample(
            &[("peer", &p.peer_id), ("class", p.class.name())],
            p.bytes.bytes_in,
        );
    }
    let mut f = family(
        &mut out,
        "harpbridge_p2p_peer_sent_bytes_total",
        "counter",
        "Block bytes sent to a peer since start.",
    );
    for p in peers {
        f.sample(
            &[("peer", &p.peer_id), ("class", p.class.name())],
            p.bytes.bytes_out,
        );
    }
    let mut f = family(
        &mut out,
        "harpbridge_p2p_received_bytes_total",
        "counter",
        "Block bytes received since start, by class of link (lan: found by mDNS or on a subnet of this host).",
    );
    for (class, bytes) in &m.traffic.classes {
        f.sample(&[("class", class.name())], bytes.bytes_in);
    }
    let mut f = family(
        &mut out,
        "harpbridge_p2p_sent_bytes_total",
        "counter",
        "Block bytes sent since start, by class of link (lan: found by mDNS or on a subnet of this host).",
    );
    for (class, bytes) in &m.traffic.classes {
        f.sample(&[("class", class.name())], bytes.bytes_out);
    }

    if let Some(ingest) = &m.ingest {
        family(
            &mut out,
            "harpbridge_ingest_backlog",
            "gauge",
            "File events queued and not processed yet.",
        )
        .sample(&[], ingest.backlog);
        family(
            &mut out,
            "harpbridge_ingest_failed",
            "gauge",
            "File events given up on.",
        )
        .sample(&[], ingest.failed);
        let mut f = family(
            &mut out,
            "harpbridge_ingest_events_total",
            "counter",
            "The ingest engine's counters since start.",
        );
        for (name, value) in &ingest.counters {
            f.sample(&[("counter", name)], *value);
        }
    }
    let mut f = family(
        &mut out,
        "harpbridge_chain_entries",
        "gauge",
        "Entries in a library's chain.",
    );
    for chain in &m.chains {
        f.sample(&[("library", &chain.library_id)], chain.entries);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::metrics::{Bytes, Class, PeerTraffic, Traffic};
    use super::*;

    #[test]
    fn renders_families_and_escapes_labels() {
        let mut traffic = Traffic::from_peers(&[]);
        traffic.peers.push(PeerTraffic {
            peer_id: "a\"b\\c\nd".into(),
            class: Class::Lan,
            connected: true,
            trusted: false,
            bytes: Bytes {
                bytes_in: 7,
                bytes_out: 9,
            },
        });
        let m = Metrics {
            swarm: SwarmStatus::Failed {
                error: "port taken".into(),
            },
            traffic,
            ingest: None,
            chains: vec![],
        };
        let text = render(&m);
        assert!(text.contains("harpbridge_p2p_up 0\n"), "{text}");
        assert!(
            text.contains(
                "harpbridge_p2p_peer_received_bytes_total{peer=\"a\\\"b\\\\c\\nd\",class=\"lan\"} 7\n"
            ),
            "{text}"
        );
        assert!(text.contains("harpbridge_p2p_sent_bytes_total{class=\"wan\"} 0\n"));
        assert!(!text.contains("ingest"), "no storage, no ingest families");
        // Every family is announced once, before its samples.
        let types: Vec<&str> = text.lines().filter(|l| l.starts_with("# TYPE")).collect();
        let mut unique = types.clone();
        unique.dedup();
        assert_eq!(types, unique);
    }
}
