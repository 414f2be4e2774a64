//! Progress of `ordersync sync`: a progress bar on a terminal, plain log lines otherwise.

use std::io::IsTerminal;
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use indicatif::{ProgressBar, ProgressStyle};

use crate::poller::Progress;
use crate::store::runs::RunTotals;

/// Reports each committed page.
pub struct Reporter {
    bar: Option<ProgressBar>,
    last_stream: Mutex<String>,
}

impl Reporter {
    pub fn new() -> Reporter {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::new(1000);
            bar.set_style(
                ProgressStyle::with_template("{spinner} {prefix} [{bar:40}] {percent:>3}% {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> "),
            );
            bar
        });
        Reporter {
            bar,
            last_stream: Mutex::new(String::new()),
        }
    }

    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

impl Default for Reporter {
    fn default() -> Self {
        Reporter::new()
    }
}

impl Progress for Reporter {
    fn page_written(
        &self,
        stream: &str,
        from: DateTime<Utc>,
        position: DateTime<Utc>,
        to: DateTime<Utc>,
        totals: &RunTotals,
    ) {
        let span = (to - from).num_seconds().max(1);
        let done = ((position - from).num_seconds().clamp(0, span) * 1000) / span;
        let message = format!(
            "{} pages, {} orders ({} new, {} changed)",
            totals.pages, totals.counts.seen, totals.counts.inserted, totals.counts.updated
        );
        match &self.bar {
            Some(bar) => {
                if let Ok(mut last) = self.last_stream.lock()
                    && *last != stream
                {
                    *last = stream.to_owned();
                    bar.set_prefix(stream.to_owned());
                }
                bar.set_position(done as u64);
                bar.set_message(message);
            }
            None => tracing::info!(stream, %position, "{message}"),
        }
    }
}
