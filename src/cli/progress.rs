//! What a running `node` tells the person watching it: one line per change always, and on a
//! terminal a progress bar per transfer in flight (`indicatif`), drawn below the lines.
//! Piped into a file or a test, there are only the lines.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::Mutex;

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

use crate::chain::ContentId;
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
