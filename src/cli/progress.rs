//! What a running `node` tells the person watching it: one line per change always, and on a
//! terminal a progress bar per transfer in flight (`indicatif`), drawn below the lines.
//! Piped into a file or a test, there are only the lines.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::Mutex;

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

use crate::chain::{ContentId, LibraryId};
use crate::p2p::TransferProgress;

/// The node's output: lines, and bars when stdout is a terminal.
pub struct Progress {
    bars: Option<(MultiProgress, Mutex<HashMap<ContentId, ProgressBar>>)>,
}

impl Default for Progress {
    fn default() -> Self {
        Progress::new()
    }
}

impl Progress {
    pub fn new() -> Progress {
        let bars = std::io::stdout()
            .is_terminal()
            .then(|| (MultiProgress::new(), Mutex::new(HashMap::new())));
        Progress { bars }
    }

    /// Prints one line (above the bars, if any).
    pub fn line(&self, line: &str) {
        match &self.bars {
            Some((multi, _)) => {
                let _ = multi.println(line);
            }
            None => println!("{line}"),
        }
    }

    /// Follows the initial scan of `folder`'s library until it ends: a spinner with the
    /// count on a terminal, and one line at the end either way.
    pub fn follow_scan(
        self: &std::sync::Arc<Self>,
        engine: crate::engine::Engine,
        library: LibraryId,
        folder: String,
    ) {
        use crate::engine::stats::ScanState;
        let out = self.clone();
        tokio::spawn(async move {
            let key = library.to_hex();
            let spinner = out.bars.as_ref().map(|(multi, _)| {
                let bar = multi.add(ProgressBar::new_spinner());
                bar.set_style(
                    ProgressStyle::with_template("{spinner} scanning {msg}")
                        .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                );
                bar
            });
            loop {
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                let scan = crate::locks::lock(&engine.status().scans)
                    .get(&key)
                    .cloned();
                let Some(scan) = scan else { break };
                if let Some(bar) = &spinner {
                    bar.set_message(format!(
                        "{folder}: {} files, {}",
                        scan.files_seen,
                        indicatif::HumanBytes(scan.bytes)
                    ));
                    bar.tick();
                }
                if scan.state == ScanState::Running {
                    continue;
                }
                if let Some(bar) = &spinner {
                    bar.finish_and_clear();
                }
                let took = scan
                    .finished_ms
                    .unwrap_or(scan.started_ms)
                    .saturating_sub(scan.started_ms);
                match scan.state {
                    ScanState::Failed => out.line(&format!(
                        "scan of {folder} failed: {}",
                        scan.error.unwrap_or_default()
                    )),
                    _ => out.line(&format!(
                        "scanned {folder}: {} files, {} bytes in {:.1} s",
                        scan.files_seen,
                        scan.bytes,
                        took as f64 / 1000.0
                    )),
                }
                break;
            }
        });
    }

    /// Updates the bar of a transfer (a terminal only); `label` names what is fetched.
    pub fn transfer(&self, t: &TransferProgress, label: impl FnOnce() -> String) {
        let Some((multi, bars)) = &self.bars else {
            return;
        };
        let mut bars = crate::locks::lock(bars);
        if t.finished {
            if let Some(bar) = bars.remove(&t.content) {
                bar.finish_and_clear();
                multi.remove(&bar);
            }
            return;
        }
        let bar = bars.entry(t.content).or_insert_with(|| {
            let bar = multi.add(ProgressBar::new(t.bytes_total));
            let style = ProgressStyle::with_template(
                "{msg:30!} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
            bar.set_style(style);
            bar.set_message(label());
            bar
        });
        bar.set_length(t.bytes_total);
        bar.set_position(t.bytes_done);
    }
}
