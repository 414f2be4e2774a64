//! The configuration as written (serde structs that refuse unknown keys), the layering of its sources,
//! and the conversion into validated [`Settings`](super::Settings).

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::path::Path;
use std::time::Duration;

use config::{Config, Environment, File, FileFormat};
use reqwest::header::{HeaderName, HeaderValue};
use serde::Deserialize;
use url::Url;

use super::secret::SecretSource;
use super::{
    AccountConfig, ConfigError, Credentials, DatabaseSettings, ListenerSettings, LoadOptions,
    LogFilterError, LogFormat, LogSettings, OutboxConfig, Secret, Settings, TextPosition,
};
use crate::domain::{MarketplaceKind, OrderState};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSettings {
    #[serde(default)]
    database: RawDatabase,
    #[serde(default)]
    log: RawLog,
    #[serde(default)]
    shutdown: RawShutdown,
    #[serde(default)]
    http: RawHttp,
    #[serde(default)]
    outbox: RawOutbox,
    #[serde(default)]
    accounts: Vec<RawAccount>,
    #[serde(default)]
    status_map: HashMap<String, HashMap<String, String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawDatabase {
    url: Option<SecretSource>,
    max_connections: u32,
    auto_migrate: bool,
}

impl Default for RawDatabase {
    fn default() -> Self {
        RawDatabase {
            url: None,
            max_connections: 10,
            auto_migrate: true,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawLog {
    level: String,
    format: LogFormat,
}

impl Default for RawLog {
    fn default() -> Self {
        RawLog {
            level: "info".to_owned(),
            format: LogFormat::Auto,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawShutdown {
    #[serde(with = "humantime_serde")]
    deadline: Duration,
}

impl Default for RawShutdown {
    fn default() -> Self {
        RawShutdown {
            deadline: Duration::from_secs(30),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawHttp {
    enabled: bool,
    listen: String,
}

impl Default for RawHttp {
    fn default() -> Self {
        RawHttp {
            enabled: true,
            listen: "127.0.0.1:9187".to_owned(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawOutbox {
    concurrency: usize,
    #[serde(with = "humantime_serde")]
    lease: Duration,
    #[serde(with = "humantime_serde")]
    poll_interval: Duration,
    #[serde(with = "humantime_serde")]
    min_backoff: Duration,
    #[serde(with = "humantime_serde")]
    max_backoff: Duration,
    max_attempts: i32,
}

impl Default for RawOutbox {
    fn default() -> Self {
        let d = OutboxConfig::default();
        RawOutbox {
            concurrency: d.concurrency,
            lease: d.lease,
            poll_interval: d.poll_interval,
            min_backoff: d.min_backoff,
            max_backoff: d.max_backoff,
            max_attempts: d.max_attempts,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAccount {
    name: String,
    marketplace: String,
    base_url: Option<String>,
    #[serde(default = "yes")]
    enabled: bool,
    #[serde(default = "default_schedule")]
    schedule: String,
    #[serde(default = "default_initial_sync_days")]
    initial_sync_days: u32,
    #[serde(default = "default_overlap", with = "humantime_serde")]
    overlap: Duration,
    page_size: Option<u32>,
    #[serde(default = "default_requests_per_second")]
    requests_per_second: u32,
    #[serde(default = "default_timeout", with = "humantime_serde")]
    timeout: Duration,
    // Credentials: which ones are required depends on the marketplace.
    store_id: Option<String>,
    access_token: Option<SecretSource>,
    domain: Option<String>,
    api_key: Option<SecretSource>,
    api_password: Option<SecretSource>,
    token: Option<SecretSource>,
    auth_header: Option<String>,
    auth_scheme: Option<String>,
    secret_key: Option<SecretSource>,
    username: Option<String>,
    password: Option<SecretSource>,
    lang: Option<String>,
}

fn yes() -> bool {
    true
}
fn default_schedule() -> String {
    "0 */5 * * * *".to_owned()
}
fn default_initial_sync_days() -> u32 {
    30
}
/// Why `url` is no PostgreSQL connection URL, in words that never quote it (it may hold a password);
/// `None` when it is one.
fn database_url_problem(url: &str) -> Option<String> {
    let parsed = match Url::parse(url) {
        Ok(parsed) => parsed,
        Err(e) => return Some(format!("is not a URL ({e})")),
    };
    if !matches!(parsed.scheme(), "postgres" | "postgresql") {
        return Some("must be a postgres:// or postgresql:// URL".to_owned());
    }
    let problem = url.parse::<sqlx::postgres::PgConnectOptions>().err()?;
    let mut problem = problem.to_string();
    let passwords = parsed.password().into_iter().map(str::to_owned).chain(
        parsed
            .query_pairs()
            .filter(|(key, _)| key == "password")
            .map(|(_, value)| value.into_owned()),
    );
    for password in passwords.filter(|p| !p.is_empty()).collect::<Vec<_>>() {
        problem = problem.replace(&password, "***");
    }
    Some(format!("is not a PostgreSQL connection URL ({problem})"))
}

fn default_overlap() -> Duration {
    Duration::from_secs(600)
}
fn default_requests_per_second() -> u32 {
    5
}
fn default_timeout() -> Duration {
    Duration::from_secs(30)
}

/// Upper bounds of the durations that reach clock arithmetic, each far above any useful value: the
/// poller subtracts the overlap from a cursor (chrono panics when the result is out of range), reqwest
/// adds the timeout to the clock for every chunk it reads (std panics on overflow), and PostgreSQL adds
/// the lease and the retry delays to `now()` (an out-of-range timestamp fails every claim or retry).
const MAX_OVERLAP: Duration = Duration::from_secs(7 * 24 * 60 * 60);
const MAX_TIMEOUT: Duration = Duration::from_secs(60 * 60);
const MAX_LEASE: Duration = Duration::from_secs(24 * 60 * 60);
const MAX_BACKOFF: Duration = Duration::from_secs(24 * 60 * 60);

/// "must be at most <bound>", the bound written as the configuration writes durations.
fn at_most(bound: Duration) -> String {
    format!("must be at most {}", humantime::format_duration(bound))
}

/// Which credential keys each marketplace takes; any other credential key on the account is an error.
fn credential_keys(marketplace: MarketplaceKind) -> &'static [&'static str] {
    match marketplace {
        MarketplaceKind::Allesgo => &["store_id", "access_token"],
        MarketplaceKind::C2c => &["domain", "api_key", "api_password"],
        MarketplaceKind::I1 => &["token", "auth_header", "auth_scheme"],
        MarketplaceKind::Labs => &["token"],
        MarketplaceKind::Gittigidiyor => &["api_key", "secret_key", "username", "password", "lang"],
    }
}

pub(super) fn load(options: &LoadOptions) -> Result<(Settings, Vec<String>), ConfigError> {
    let base = options.base_dir.clone().unwrap_or_default();
    let default_file = base.join(super::DEFAULT_FILE);
    let mut sources = Vec::new();
    let mut builder = Config::builder();
    if default_file.is_file() {
        builder = builder.add_source(File::from(default_file.clone()).format(FileFormat::Toml));
        sources.push(default_file);
    }
    if let Some(file) = &options.file {
        builder = builder.add_source(
            File::from(file.clone())
                .format(FileFormat::Toml)
                .required(true),
        );
        sources.push(file.clone());
    }
    for file in &sources {
        check_syntax(file)?;
    }
    let env_map = options.env.clone();
    let lookup = |key: &str| match &env_map {
        Some(map) => map.get(key).cloned(),
        None => std::env::var(key).ok(),
    };
    let mut environment = Environment::with_prefix("ORDERSYNC")
        .prefix_separator("__")
        .separator("__")
        .try_parsing(true);
    if let Some(map) = &env_map {
        environment = environment.source(Some(map.clone().into_iter().collect()));
    }
    builder = builder.add_source(environment);
    if let Some(url) = lookup("DATABASE_URL") {
        builder = builder
            .set_override("database.url", url)
            .map_err(ConfigError::Load)?;
    }
    let config = builder.build().map_err(ConfigError::Load)?;

    // Each layer alone, highest precedence first, to tell which one set a key.
    let mut layers: Vec<(String, Config)> = Vec::new();
    if env_map.is_some() || std::env::vars().any(|(k, _)| k.starts_with("ORDERSYNC__")) {
        let mut alone = Environment::with_prefix("ORDERSYNC")
            .prefix_separator("__")
            .separator("__");
        if let Some(map) = &env_map {
            alone = alone.source(Some(map.clone().into_iter().collect()));
        }
        if let Ok(c) = Config::builder().add_source(alone).build() {
            layers.push(("the environment (ORDERSYNC__…)".to_owned(), c));
        }
    }
    for file in sources.iter().rev() {
        if let Ok(c) = Config::builder()
            .add_source(File::from(file.clone()).format(FileFormat::Toml))
            .build()
        {
            layers.push((file.display().to_string(), c));
        }
    }
    let database_url_from_env = lookup("DATABASE_URL").is_some();
    let rust_log = lookup("RUST_LOG");
    let origin = |key: &str| -> String {
        if key == "database.url" && database_url_from_env {
            return "DATABASE_URL".to_owned();
        }
        if key == "log.level" && rust_log.is_some() {
            return "RUST_LOG".to_owned();
        }
        let mut path = key.to_owned();
        loop {
            if let Some((name, _)) = layers
                .iter()
                .find(|(_, c)| c.get::<config::Value>(&path).is_ok())
            {
                return name.clone();
            }
            match path.rfind(['.', '[']) {
                Some(i) => path.truncate(i),
                None => return "the built-in defaults".to_owned(),
            }
        }
    };
    let invalid = |key: String, problem: String| {
        let origin = origin(&key);
        ConfigError::Invalid {
            key,
            problem,
            origin,
        }
    };

    let raw: RawSettings = serde_path_to_error::deserialize(config.clone()).map_err(|e| {
        let key = e.path().to_string();
        invalid(key, e.into_inner().to_string())
    })?;

    let mut warnings = Vec::new();
    let mut resolve = |key: String, source: &SecretSource| -> Result<Secret, ConfigError> {
        let from = origin(&key);
        // Literals from the environment are how containers pass secrets; only files are warned about.
        if source.is_literal() && !from.starts_with("the environment") && from != "DATABASE_URL" {
            warnings.push(format!(
                "{key} is written as a literal secret in {from}; prefer {{ env = \"VAR\" }} or {{ file = \"/path\" }}"
            ));
        }
        source
            .resolve(&lookup)
            .map_err(|e| invalid(key, e.to_string()))
    };

    let database = DatabaseSettings {
        url: match &raw.database.url {
            Some(source) => {
                let url = resolve("database.url".to_owned(), source)?;
                if let Some(problem) = database_url_problem(url.expose()) {
                    return Err(invalid("database.url".to_owned(), problem));
                }
                Some(url)
            }
            None => None,
        },
        max_connections: raw.database.max_connections.max(1),
        auto_migrate: raw.database.auto_migrate,
    };

    let mut accounts = Vec::with_capacity(raw.accounts.len());
    for (i, account) in raw.accounts.iter().enumerate() {
        let parsed = account_config(i, account, &mut resolve, &invalid)?;
        if accounts
            .iter()
            .any(|a: &AccountConfig| a.name == parsed.name)
        {
            return Err(invalid(
                format!("accounts[{i}].name"),
                format!("account name `{}` is used twice", parsed.name),
            ));
        }
        accounts.push(parsed);
    }

    let mut status_map = HashMap::new();
    for (marketplace, entries) in &raw.status_map {
        let kind: MarketplaceKind =
            marketplace
                .parse()
                .map_err(|e: crate::domain::UnknownMarketplace| {
                    invalid(format!("status_map.{marketplace}"), e.to_string())
                })?;
        let mut map = HashMap::new();
        for (raw_status, state) in entries {
            let state: OrderState =
                state
                    .parse()
                    .map_err(|e: crate::domain::UnknownOrderState| {
                        invalid(
                            format!("status_map.{marketplace}.{raw_status}"),
                            e.to_string(),
                        )
                    })?;
            map.insert(raw_status.clone(), state);
        }
        status_map.insert(kind, map);
    }

    let http = ListenerSettings {
        enabled: raw.http.enabled,
        listen: raw.http.listen.parse().map_err(|e| {
            invalid(
                "http.listen".to_owned(),
                format!(
                    "`{}` is not an address with a port, like 127.0.0.1:9187: {e}",
                    raw.http.listen
                ),
            )
        })?,
    };
    let outbox = outbox_config(&raw.outbox, &accounts, &invalid)?;

    let level = rust_log.clone().unwrap_or(raw.log.level);
    let log = LogSettings {
        level: level
            .parse()
            .map_err(|e: LogFilterError| invalid("log.level".to_owned(), e.to_string()))?,
        format: raw.log.format,
    };
    Ok((
        Settings {
            database,
            log,
            shutdown_deadline: raw.shutdown.deadline,
            http,
            outbox,
            accounts,
            status_map,
            sources,
        },
        warnings,
    ))
}

/// Reads and parses `file` as the `config` crate does (a leading UTF-8 byte order mark skipped, invalid
/// UTF-8 replaced), so that a syntax error is reported here, by its position and reason alone, before
/// the `config` crate reads the file.
fn check_syntax(file: &Path) -> Result<(), ConfigError> {
    let bytes = std::fs::read(file).map_err(|source| ConfigError::Read {
        file: file.display().to_string(),
        source,
    })?;
    let text = String::from_utf8_lossy(bytes.strip_prefix(b"\xef\xbb\xbf").unwrap_or(&bytes));
    match toml::de::DeTable::parse(&text) {
        Ok(_) => Ok(()),
        Err(e) => Err(ConfigError::Syntax {
            file: file.display().to_string(),
            at: e.span().map(|span| text_position(&text, span.start)),
            reason: e.message().to_owned(),
        }),
    }
}

/// The line and column of byte `offset` in `text`.
fn text_position(text: &str, offset: usize) -> TextPosition {
    let before = &text[..text.floor_char_boundary(offset)];
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    TextPosition {
        line: before.matches('\n').count() + 1,
        column: before[line_start..].chars().count() + 1,
    }
}

fn outbox_config(
    raw: &RawOutbox,
    accounts: &[AccountConfig],
    invalid: &dyn Fn(String, String) -> ConfigError,
) -> Result<OutboxConfig, ConfigError> {
    let key = |field: &str| format!("outbox.{field}");
    if !(1..=64).contains(&raw.concurrency) {
        return Err(invalid(
            key("concurrency"),
            "must be between 1 and 64".to_owned(),
        ));
    }
    // A claim is renewed before a request once it is older than half its lease, so at least half the
    // lease is left when a request starts: one request must fit in that half, or a slow answer
    // outlives the claim and another worker takes the transition over while it is still on the wire.
    if let Some((i, slowest)) = accounts
        .iter()
        .enumerate()
        .filter(|(_, a)| a.enabled)
        .max_by_key(|(_, a)| a.timeout)
        .filter(|(_, a)| a.timeout.saturating_mul(2) >= raw.lease)
    {
        return Err(invalid(
            key("lease"),
            format!(
                "must be longer than twice the longest request timeout (accounts[{i}].timeout = {})",
                humantime::format_duration(slowest.timeout)
            ),
        ));
    }
    if raw.lease < Duration::from_secs(1) {
        return Err(invalid(key("lease"), "must be at least 1s".to_owned()));
    }
    if raw.lease > MAX_LEASE {
        return Err(invalid(key("lease"), at_most(MAX_LEASE)));
    }
    if raw.poll_interval.is_zero() {
        return Err(invalid(
            key("poll_interval"),
            "must be more than zero".to_owned(),
        ));
    }
    if raw.min_backoff.is_zero() {
        return Err(invalid(
            key("min_backoff"),
            "must be more than zero".to_owned(),
        ));
    }
    if raw.max_backoff < raw.min_backoff {
        return Err(invalid(
            key("max_backoff"),
            format!(
                "must not be less than outbox.min_backoff ({})",
                humantime::format_duration(raw.min_backoff)
            ),
        ));
    }
    if raw.max_backoff > MAX_BACKOFF {
        return Err(invalid(key("max_backoff"), at_most(MAX_BACKOFF)));
    }
    // The outbox table's check constraint.
    if !(1..=1000).contains(&raw.max_attempts) {
        return Err(invalid(
            key("max_attempts"),
            "must be between 1 and 1000".to_owned(),
        ));
    }
    Ok(OutboxConfig {
        concurrency: raw.concurrency,
        lease: raw.lease,
        poll_interval: raw.poll_interval,
        min_backoff: raw.min_backoff,
        max_backoff: raw.max_backoff,
        max_attempts: raw.max_attempts,
    })
}

fn account_config(
    i: usize,
    raw: &RawAccount,
    resolve: &mut dyn FnMut(String, &SecretSource) -> Result<Secret, ConfigError>,
    invalid: &dyn Fn(String, String) -> ConfigError,
) -> Result<AccountConfig, ConfigError> {
    let key = |field: &str| format!("accounts[{i}].{field}");
    if raw.name.is_empty()
        || !raw
            .name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
    {
        return Err(invalid(
            key("name"),
            format!("`{}` must match [a-z0-9_-]+", raw.name),
        ));
    }
    let marketplace: MarketplaceKind =
        raw.marketplace
            .parse()
            .map_err(|e: crate::domain::UnknownMarketplace| {
                invalid(key("marketplace"), e.to_string())
            })?;

    let present: [(&str, bool); 12] = [
        ("store_id", raw.store_id.is_some()),
        ("access_token", raw.access_token.is_some()),
        ("domain", raw.domain.is_some()),
        ("api_key", raw.api_key.is_some()),
        ("api_password", raw.api_password.is_some()),
        ("token", raw.token.is_some()),
        ("auth_header", raw.auth_header.is_some()),
        ("auth_scheme", raw.auth_scheme.is_some()),
        ("secret_key", raw.secret_key.is_some()),
        ("username", raw.username.is_some()),
        ("password", raw.password.is_some()),
        ("lang", raw.lang.is_some()),
    ];
    let allowed = credential_keys(marketplace);
    if let Some((field, _)) = present
        .iter()
        .find(|(field, set)| *set && !allowed.contains(field))
    {
        return Err(invalid(
            key(field),
            format!(
                "is not a setting of a {marketplace} account (it takes {})",
                allowed.join(", ")
            ),
        ));
    }

    let base_url_text = match (&raw.base_url, super::default_base_url(marketplace)) {
        (Some(url), _) => url.clone(),
        (None, Some(default)) => default.to_owned(),
        (None, None) => {
            return Err(invalid(
                key("base_url"),
                format!("is required for {marketplace} accounts (the seller's own API address)"),
            ));
        }
    };
    let base_url = Url::parse(&base_url_text).map_err(|e| {
        // Text with an `@` may hold a password before it, and is not quoted.
        let problem = if base_url_text.contains('@') {
            format!("is not a URL: {e}")
        } else {
            format!("`{base_url_text}` is not a URL: {e}")
        };
        invalid(key("base_url"), problem)
    })?;
    if !matches!(base_url.scheme(), "http" | "https") {
        return Err(invalid(
            key("base_url"),
            "must be an http or https URL".to_owned(),
        ));
    }
    // The base URL is stored (accounts.base_url) and shown (check-config, status); credentials go in
    // the account's credential keys.
    if !base_url.username().is_empty() || base_url.password().is_some() {
        return Err(invalid(
            key("base_url"),
            "must not hold a user name or password (`user:password@`); the account's credentials \
             have keys of their own"
                .to_owned(),
        ));
    }

    tokio_cron_scheduler::Job::new_async(raw.schedule.as_str(), |_, _| Box::pin(async {}))
        .map_err(|e| {
            invalid(
                key("schedule"),
                format!(
                    "`{}` is not a cron expression with seconds: {e}",
                    raw.schedule
                ),
            )
        })?;
    if raw.initial_sync_days == 0 || raw.initial_sync_days > 3650 {
        return Err(invalid(
            key("initial_sync_days"),
            "must be between 1 and 3650".to_owned(),
        ));
    }
    if raw.overlap > MAX_OVERLAP {
        return Err(invalid(key("overlap"), at_most(MAX_OVERLAP)));
    }
    if raw.timeout.is_zero() {
        return Err(invalid(key("timeout"), "must be more than zero".to_owned()));
    }
    if raw.timeout > MAX_TIMEOUT {
        return Err(invalid(key("timeout"), at_most(MAX_TIMEOUT)));
    }
    let requests_per_second = NonZeroU32::new(raw.requests_per_second)
        .ok_or_else(|| invalid(key("requests_per_second"), "must be at least 1".to_owned()))?;
    let page_size = raw
        .page_size
        .unwrap_or_else(|| super::default_page_size(marketplace));
    if page_size == 0 || page_size > 1000 {
        return Err(invalid(
            key("page_size"),
            "must be between 1 and 1000".to_owned(),
        ));
    }

    let mut secret = |field: &str, source: &Option<SecretSource>| -> Result<Secret, ConfigError> {
        match source {
            Some(source) => resolve(key(field), source),
            None => Err(invalid(
                key(field),
                format!("is required for {marketplace} accounts"),
            )),
        }
    };
    let plain = |field: &str, value: &Option<String>| -> Result<String, ConfigError> {
        match value {
            Some(v) if !v.trim().is_empty() => Ok(v.clone()),
            _ => Err(invalid(
                key(field),
                format!("is required for {marketplace} accounts"),
            )),
        }
    };
    // i1 and Labs send the token in a header; one that cannot be a header value (a secret file with a
    // line break inside) would fail every request. The value is never shown.
    let header_token = |token: Secret| -> Result<Secret, ConfigError> {
        match HeaderValue::from_str(token.expose()) {
            Ok(_) => Ok(token),
            Err(_) => Err(invalid(
                key("token"),
                "holds a line break or another character an HTTP header cannot carry (when read \
                 from a file, the file must hold the token on one line)"
                    .to_owned(),
            )),
        }
    };
    let credentials = match marketplace {
        MarketplaceKind::Allesgo => Credentials::Allesgo {
            store_id: plain("store_id", &raw.store_id)?,
            access_token: secret("access_token", &raw.access_token)?,
        },
        MarketplaceKind::C2c => Credentials::C2c {
            domain: plain("domain", &raw.domain)?,
            api_key: secret("api_key", &raw.api_key)?,
            api_password: secret("api_password", &raw.api_password)?,
        },
        MarketplaceKind::I1 => {
            let auth_header = raw
                .auth_header
                .clone()
                .unwrap_or_else(|| "Authorization".to_owned());
            if HeaderName::from_bytes(auth_header.trim().as_bytes()).is_err() {
                return Err(invalid(
                    key("auth_header"),
                    format!(
                        "`{}` is not an HTTP header name",
                        auth_header.escape_debug()
                    ),
                ));
            }
            let auth_scheme = raw
                .auth_scheme
                .clone()
                .unwrap_or_else(|| "Bearer".to_owned());
            if HeaderValue::from_str(&auth_scheme).is_err() {
                return Err(invalid(
                    key("auth_scheme"),
                    format!(
                        "`{}` holds a character an HTTP header cannot carry",
                        auth_scheme.escape_debug()
                    ),
                ));
            }
            Credentials::I1 {
                token: header_token(secret("token", &raw.token)?)?,
                auth_header,
                auth_scheme,
            }
        }
        MarketplaceKind::Labs => Credentials::Labs {
            token: header_token(secret("token", &raw.token)?)?,
        },
        MarketplaceKind::Gittigidiyor => Credentials::Gittigidiyor {
            api_key: secret("api_key", &raw.api_key)?,
            secret_key: secret("secret_key", &raw.secret_key)?,
            username: plain("username", &raw.username)?,
            password: secret("password", &raw.password)?,
            lang: raw.lang.clone().unwrap_or_else(|| "tr".to_owned()),
        },
    };

    Ok(AccountConfig {
        name: raw.name.clone(),
        marketplace,
        base_url,
        enabled: raw.enabled,
        schedule: raw.schedule.clone(),
        initial_sync_days: raw.initial_sync_days,
        overlap: raw.overlap,
        page_size,
        requests_per_second,
        timeout: raw.timeout,
        credentials,
    })
}
