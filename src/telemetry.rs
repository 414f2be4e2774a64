//! Logging: human-readable output on a terminal, JSON lines for journald and Docker (`log.format`),
//! the level from `log.level` or `RUST_LOG`.
//!
//! Secrets never reach this module: configuration types hold them in [`Secret`](crate::config::Secret),
//! whose `Debug` hides the value, and HTTP errors are redacted before they are logged.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::config::{LogFormat, LogSettings};

/// Installs the global subscriber. Calling it twice is harmless (the second call does nothing).
pub fn init(settings: &LogSettings) {
    let filter = EnvFilter::new(settings.level.as_str());
    let json = match settings.format {
        LogFormat::Json => true,
        LogFormat::Text => false,
        LogFormat::Auto => !std::io::stderr().is_terminal(),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let result = if json {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init()
    } else {
        builder.try_init()
    };
    // Already installed (tests install one per process).
    drop(result);
}
