//! Configuration: the layers (built-in defaults → `config/default.toml` → `--config` file → environment
//! `ORDERSYNC__SECTION__KEY`, with `DATABASE_URL` overriding `database.url`), the typed [`Settings`] the
//! rest of the daemon reads, and validation whose every error names the key and the file it came from.

mod raw;
mod secret;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::time::Duration;

use tracing::level_filters::LevelFilter;
use tracing_subscriber::EnvFilter;
use url::Url;

use crate::domain::{MarketplaceKind, OrderState};
pub use secret::{MIN_SECRET_LEN, Secret, SecretSource};

/// The file read after the built-in defaults, relative to the working directory, when it exists.
pub const DEFAULT_FILE: &str = "config/default.toml";

/// A configuration problem, naming the key and where it was set.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read configuration: {0}")]
    Load(#[source] config::ConfigError),
    /// A configuration file that cannot be read.
    #[error("cannot read {file}: {source}")]
    Read {
        file: String,
        #[source]
        source: std::io::Error,
    },
    /// A file that is not TOML. The TOML parser's own error is not kept: its message quotes the
    /// offending line, which may hold a literal secret.
    #[error("{file}{}: not valid TOML: {reason}", at.map(|p| format!(", {p}")).unwrap_or_default())]
    Syntax {
        file: String,
        /// Where the parser stopped, when it says.
        at: Option<TextPosition>,
        /// The parser's reason, which never quotes the file.
        reason: String,
    },
    #[error("{key}: {problem} (set in {origin})")]
    Invalid {
        key: String,
        problem: String,
        origin: String,
    },
}

/// A place in a configuration file, counted from 1 as editors do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TextPosition {
    pub line: usize,
    /// In characters, not bytes.
    pub column: usize,
}

impl std::fmt::Display for TextPosition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {}, column {}", self.line, self.column)
    }
}

/// The whole, validated configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    pub database: DatabaseSettings,
    pub log: LogSettings,
    pub shutdown_deadline: Duration,
    /// The operations listener (`/healthz`, `/readyz`, `/metrics`).
    pub http: ListenerSettings,
    pub outbox: OutboxConfig,
    pub accounts: Vec<AccountConfig>,
    /// Operator overrides of the status → canonical state mapping, per marketplace.
    pub status_map: HashMap<MarketplaceKind, HashMap<String, OrderState>>,
    /// The files that were read, in order, for messages.
    pub sources: Vec<PathBuf>,
}

#[derive(Debug, Clone)]
pub struct DatabaseSettings {
    /// `None` when neither the files, the environment nor `DATABASE_URL` set one.
    pub url: Option<Secret>,
    pub max_connections: u32,
    pub auto_migrate: bool,
}

/// Where the operations endpoints listen (`[http]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenerSettings {
    pub enabled: bool,
    /// Port 0 picks a free port; the address taken is logged.
    pub listen: SocketAddr,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable on a terminal, JSON otherwise.
    Auto,
    Text,
    Json,
}

#[derive(Debug, Clone)]
pub struct LogSettings {
    pub level: LogFilter,
    pub format: LogFormat,
}

/// A valid `tracing` filter (`log.level` or `RUST_LOG`): a level, or directives such as
/// `info,ordersync=debug`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogFilter(String);

/// Why a `log.level` is refused.
#[derive(Debug, thiserror::Error)]
pub enum LogFilterError {
    #[error(
        "`{0}` is not a level (off, error, warn, info, debug, trace); a target takes one, as in `ordersync=debug`"
    )]
    NotALevel(String),
    #[error("`{text}` is not a filter like `info` or `info,ordersync=debug`: {source}")]
    Syntax {
        text: String,
        #[source]
        source: tracing_subscriber::filter::ParseError,
    },
}

impl LogFilter {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<LevelFilter> for LogFilter {
    fn from(level: LevelFilter) -> Self {
        LogFilter(level.to_string())
    }
}

impl std::str::FromStr for LogFilter {
    type Err = LogFilterError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        EnvFilter::try_new(text).map_err(|source| LogFilterError::Syntax {
            text: text.to_owned(),
            source,
        })?;
        // The filter reads a lone word that is not a level as a target enabled at every level, so a
        // misspelt level (`warning`, `verbose`, ` info` after a comma and a space) would silently
        // drop every other line. A target must name its level.
        let lone_word = text.split(',').find(|directive| {
            !directive.is_empty()
                && !directive.contains(['=', '['])
                && directive.parse::<LevelFilter>().is_err()
        });
        match lone_word {
            Some(word) => Err(LogFilterError::NotALevel(word.to_owned())),
            None => Ok(LogFilter(text.to_owned())),
        }
    }
}

impl std::fmt::Display for LogFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The outbox worker's tuning (`[outbox]`); the same for every account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxConfig {
    /// Transitions of one account sent at once (they share the account's rate limit with its poller).
    pub concurrency: usize,
    /// How long a claim lasts; it is renewed before a request once half of it has passed, and a worker
    /// that dies loses its claims after this.
    pub lease: Duration,
    /// How often each account's worker looks for due work when no notification arrives.
    pub poll_interval: Duration,
    /// The first retry delay after a transient failure; later ones double, with jitter, up to
    /// `max_backoff`, and are never shorter than the API's `Retry-After` (itself at most
    /// [`MAX_RETRY_AFTER`](crate::http::MAX_RETRY_AFTER)).
    pub min_backoff: Duration,
    pub max_backoff: Duration,
    /// The attempts of a transition queued by `ordersync outbox add` without `--max-attempts`. (SQL
    /// callers pass their own to `ordersync_enqueue`, whose default is the table's, 10.)
    pub max_attempts: i32,
}

impl Default for OutboxConfig {
    fn default() -> Self {
        OutboxConfig {
            concurrency: 4,
            lease: Duration::from_secs(300),
            poll_interval: Duration::from_secs(10),
            min_backoff: Duration::from_secs(5),
            max_backoff: Duration::from_secs(30 * 60),
            max_attempts: 10,
        }
    }
}

/// One shop's credentials on one marketplace, and how to poll it.
#[derive(Debug, Clone)]
pub struct AccountConfig {
    pub name: String,
    pub marketplace: MarketplaceKind,
    pub base_url: Url,
    pub enabled: bool,
    /// Cron expression with seconds, e.g. `0 */5 * * * *`.
    pub schedule: String,
    pub initial_sync_days: u32,
    pub overlap: Duration,
    pub page_size: u32,
    pub requests_per_second: NonZeroU32,
    pub timeout: Duration,
    pub credentials: Credentials,
}

/// The credentials of an account, per marketplace.
#[derive(Debug, Clone)]
pub enum Credentials {
    Allesgo {
        store_id: String,
        access_token: Secret,
    },
    C2c {
        domain: String,
        api_key: Secret,
        api_password: Secret,
    },
    I1 {
        token: Secret,
        /// The header carrying the token (default `Authorization`).
        auth_header: String,
        /// The word before the token (default `Bearer`; empty for none).
        auth_scheme: String,
    },
    Labs {
        token: Secret,
    },
    Gittigidiyor {
        api_key: Secret,
        secret_key: Secret,
        /// The role name for HTTP basic auth.
        username: String,
        /// The role password for HTTP basic auth.
        password: Secret,
        lang: String,
    },
}

impl Credentials {
    /// Every secret value, for redaction.
    pub fn secret_values(&self) -> Vec<String> {
        let secrets: Vec<&Secret> = match self {
            Credentials::Allesgo { access_token, .. } => vec![access_token],
            Credentials::C2c {
                api_key,
                api_password,
                ..
            } => vec![api_key, api_password],
            Credentials::I1 { token, .. } | Credentials::Labs { token } => vec![token],
            Credentials::Gittigidiyor {
                api_key,
                secret_key,
                password,
                ..
            } => vec![api_key, secret_key, password],
        };
        secrets.into_iter().map(|s| s.expose().to_owned()).collect()
    }
}

/// Where the configuration comes from.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// The operator's file (`--config` or `ORDERSYNC_CONFIG`).
    pub file: Option<PathBuf>,
    /// The directory holding `config/default.toml` (the working directory when `None`).
    pub base_dir: Option<PathBuf>,
    /// Environment variables to read instead of the process environment (tests).
    pub env: Option<HashMap<String, String>>,
}

impl Settings {
    /// Loads and validates the configuration. Literal secrets are accepted; [`Settings::warnings`]
    /// lists them so that start-up can warn.
    pub fn load(options: &LoadOptions) -> Result<(Settings, Vec<String>), ConfigError> {
        raw::load(options)
    }
}

impl AccountConfig {
    /// The HTTP settings of this account's client.
    pub fn http_settings(&self) -> crate::http::HttpSettings {
        crate::http::HttpSettings {
            timeout: self.timeout,
            requests_per_second: self.requests_per_second,
        }
    }
}

/// The production base URL of a marketplace, when it has a single one (i1 is hosted per seller).
pub fn default_base_url(marketplace: MarketplaceKind) -> Option<&'static str> {
    match marketplace {
        MarketplaceKind::Allesgo => Some("https://api.allesgo.com"),
        MarketplaceKind::C2c => Some("https://kmk.apiservisi.com"),
        MarketplaceKind::I1 => None,
        MarketplaceKind::Labs => Some("https://api.labsoffice.com/v1"),
        MarketplaceKind::Gittigidiyor => {
            Some("https://dev.gittigidiyor.com:8443/listingapi/ws/IndividualSaleService")
        }
    }
}

/// The page size used when an account sets none: as large as each API allows without strain.
pub fn default_page_size(marketplace: MarketplaceKind) -> u32 {
    match marketplace {
        // allesgo has no pagination: this is the order count above which a window is halved.
        MarketplaceKind::Allesgo => 200,
        // C2C: the number of order codes asked for per status request.
        MarketplaceKind::C2c => 50,
        MarketplaceKind::I1 | MarketplaceKind::Labs | MarketplaceKind::Gittigidiyor => 100,
    }
}
