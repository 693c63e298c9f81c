//! Refused requests, logged so that a probe cannot flood the log: the first refusal from a
//! source in each interval is logged in full, the rest are counted and summarised in one
//! line when the next interval begins (or when the source comes back after it).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long refusals from one source are counted before the next is logged in full.
pub const INTERVAL: Duration = Duration::from_secs(60);
/// Sources remembered at once; beyond this the quietest are summarised and forgotten.
const MAX_SOURCES: usize = 1024;

/// Per source: when its interval began, and refusals since then that were not logged.
#[derive(Debug, Default)]
pub struct RefusalLog {
    sources: Mutex<HashMap<String, (Instant, u64)>>,
}

impl RefusalLog {
    /// Notes a refusal from `source`: logs it in full when it is the first of an interval
    /// (after a summary of the one before, if it held more), else counts it.
    pub fn refused(&self, source: &str, method: &str, path: &str, reason: &dyn std::fmt::Display) {
        let now = Instant::now();
        let mut sources = crate::locks::lock(&self.sources);
        if let Some((start, unlogged)) = sources.get_mut(source) {
            if now.duration_since(*start) < INTERVAL {
                *unlogged += 1;
                return;
            }
            summarise(source, *unlogged, now.duration_since(*start));
            *start = now;
            *unlogged = 0;
        } else {
            if sources.len() >= MAX_SOURCES {
                let expired: Vec<String> = sources
                    .iter()
                    .filter(|(_, (start, _))| now.duration_since(*start) >= INTERVAL)
                    .map(|(s, _)| s.clone())
                    .collect();
                for s in expired {
                    if let Some((start, n)) = sources.remove(&s) {
                        summarise(&s, n, now.duration_since(start));
                    }
                }
            }
            if sources.len() < MAX_SOURCES {
                sources.insert(source.to_owned(), (now, 0));
            }
        }
        tracing::warn!(
            %source,
            %method,
            %path,
            %reason,
            "refused a request without valid AppAPI authentication (more from this source within {}s are counted, not logged)",
            INTERVAL.as_secs()
        );
    }
}

fn summarise(source: &str, unlogged: u64, over: Duration) {
    if unlogged > 0 {
        tracing::warn!(
            %source,
            refused = unlogged,
            seconds = over.as_secs(),
            "refused more requests without valid AppAPI authentication"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_from_one_source_is_one_entry_per_interval() {
        let log = RefusalLog::default();
        for _ in 0..1000 {
            log.refused("10.0.0.9", "GET", "/api/x", &"no header");
        }
        log.refused("10.0.0.7", "GET", "/", &"no header");
        let sources = log.sources.lock().unwrap();
        assert_eq!(sources["10.0.0.9"].1, 999);
        assert_eq!(sources["10.0.0.7"].1, 0);
    }
}
