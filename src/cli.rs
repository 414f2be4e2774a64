//! The command line: argument definitions (clap) and one function per command. This is the edge of the
//! program, where errors become messages and exit codes (2 for configuration and usage errors, 1 for
//! everything else).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, NaiveDate, Utc};
use clap::{Parser, Subcommand};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use tracing::level_filters::LevelFilter;

use crate::config::{ConfigError, Credentials, LoadOptions, Settings};
use crate::daemon;
use crate::http::HttpClient;
use crate::marketplace::{self, Transition};
use crate::outbox::{self, EnqueueRequest, OutboxError};
use crate::poller::{PollSettings, RunMode, StreamOutcome, error_chain};
use crate::store;
use crate::store::outbox::{OperatorAction, OutboxState};

#[derive(Debug, Parser)]
#[command(
    name = "ordersync",
    version,
    about = "Keeps PostgreSQL in step with marketplace orders"
)]
pub struct Cli {
    /// Configuration file, read after config/default.toml.
    #[arg(long, global = true, env = "ORDERSYNC_CONFIG", value_name = "PATH")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon: poll every enabled account on its schedule until SIGTERM or Ctrl-C.
    Run,
    /// Apply the database migrations and exit.
    Migrate,
    /// Validate the configuration and print a summary with secrets hidden.
    CheckConfig,
    /// Show each account's streams (cursor, lag, last run, last error) and outbox counts by state.
    Status {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Poll one account once and exit; with --since/--until, replay that window without moving the cursor.
    Sync {
        #[arg(long)]
        account: String,
        /// Start of a replay window (RFC 3339 or YYYY-MM-DD, UTC).
        #[arg(long, value_parser = parse_instant, requires = "until")]
        since: Option<DateTime<Utc>>,
        /// End of a replay window (RFC 3339 or YYYY-MM-DD, UTC).
        #[arg(long, value_parser = parse_instant, requires = "since")]
        until: Option<DateTime<Utc>>,
    },
    /// Probe a running daemon's health endpoint; exit 0 when it answers 200, 1 otherwise (for Docker's
    /// HEALTHCHECK: the image needs no curl).
    Healthcheck {
        /// The URL to probe (default: /healthz on the configured http.listen address).
        #[arg(long)]
        url: Option<String>,
    },
    /// Queue, list, retry and cancel order transitions pushed to the marketplaces.
    Outbox {
        #[command(subcommand)]
        command: OutboxCommand,
    },
    /// Run the daemon against the five fake marketplaces, on DATABASE_URL or an embedded PostgreSQL.
    Demo {
        /// Stop after this long (e.g. 60s, 5m); runs until Ctrl-C otherwise.
        #[arg(long, value_parser = humantime::parse_duration)]
        duration: Option<Duration>,
        /// Where the embedded PostgreSQL cluster is kept (unused when DATABASE_URL is set).
        #[arg(long, default_value = ".ordersync/postgres")]
        data_dir: PathBuf,
        /// Orders each fake marketplace starts with.
        #[arg(long, default_value_t = 300)]
        orders: usize,
        /// Only start the demo database and print its URL, for psql, until Ctrl-C.
        #[arg(long)]
        db_only: bool,
    },
    /// Serve only the five fake marketplaces, and print a configuration pointing at them.
    Sandbox {
        #[arg(long, default_value_t = 8080)]
        port: u16,
        /// Orders each fake marketplace starts with.
        #[arg(long, default_value_t = 300)]
        orders: usize,
    },
}

#[derive(Debug, Subcommand)]
pub enum OutboxCommand {
    /// Queue a transition of an order, checked against the marketplace's rules and the order's last known
    /// state (e.g. `outbox add --account shop --order 1001 ship --arg package_id=77 --arg shipping_code=TR1`).
    Add {
        #[arg(long)]
        account: String,
        /// The order's external id.
        #[arg(long)]
        order: String,
        /// The transition, as the marketplace's adapter names it (accept, ship, set-state, …).
        kind: String,
        /// An argument: `key=value` (a string) or `key:=json` (any JSON value, e.g. `ids:=["A1","A2"]`).
        #[arg(long = "arg", value_name = "KEY=VALUE")]
        args: Vec<String>,
        /// Queuing the same key again yields the transition queued first (default: a new random key).
        #[arg(long)]
        idempotency_key: Option<String>,
        /// Attempts before a transition that keeps failing transiently is given up (dead); default
        /// `outbox.max_attempts` of the configuration.
        #[arg(long)]
        max_attempts: Option<i32>,
    },
    /// List transitions, newest first.
    List {
        #[arg(long)]
        state: Option<OutboxState>,
        #[arg(long)]
        account: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: i64,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Make a failed, dead or unknown transition due again now, with a fresh budget of attempts.
    Retry { id: i64 },
    /// Cancel a transition that is not running and not finished; later transitions of its order proceed.
    Cancel { id: i64 },
}

fn parse_instant(text: &str) -> Result<DateTime<Utc>, String> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Ok(t.with_timezone(&Utc));
    }
    NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .map(|d| d.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc())
        .map_err(|_| format!("`{text}` is neither an RFC 3339 time nor a YYYY-MM-DD date"))
}

/// Runs a command and turns its outcome into an exit code.
pub async fn execute(cli: Cli) -> ExitCode {
    let options = LoadOptions {
        file: cli.config.clone(),
        ..LoadOptions::default()
    };
    let (settings, warnings) = match Settings::load(&options) {
        Ok(loaded) => loaded,
        Err(e) => {
            eprintln!("ordersync: configuration error: {e}");
            return ExitCode::from(2);
        }
    };
    let mut log = settings.log.clone();
    if matches!(cli.command, Command::Demo { .. }) && std::env::var_os("RUST_LOG").is_none() {
        // The demo's own summary is the output; the daemon's routine lines would drown it.
        log.level = LevelFilter::WARN.into();
    }
    crate::telemetry::init(&log);
    for warning in &warnings {
        tracing::warn!("{warning}");
    }
    let result = match cli.command {
        Command::CheckConfig => {
            print_summary(&settings, &warnings);
            Ok(())
        }
        Command::Migrate => migrate(&settings).await,
        Command::Run => run(settings).await,
        Command::Status { json } => status(&settings, json).await,
        Command::Sync {
            account,
            since,
            until,
        } => sync(&settings, &account, since.zip(until)).await,
        Command::Healthcheck { url } => healthcheck(&settings, url).await,
        Command::Outbox { command } => outbox_command(&settings, command).await,
        Command::Demo {
            duration,
            data_dir,
            orders,
            db_only,
        } => {
            let options = crate::demo::DemoOptions {
                duration,
                data_dir,
                orders,
                db_only,
            };
            crate::demo::run(settings, options, shutdown_signal()).await
        }
        Command::Sandbox { port, orders } => {
            crate::demo::serve_sandbox(port, orders, shutdown_signal()).await
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let refused = matches!(
                e.downcast_ref::<OutboxError>(),
                Some(OutboxError::Refused(_))
            );
            let code = if refused || e.downcast_ref::<ConfigError>().is_some() {
                2
            } else {
                1
            };
            eprintln!("ordersync: {}", error_chain(e.as_ref()));
            ExitCode::from(code)
        }
    }
}

async fn connect(settings: &Settings) -> anyhow::Result<PgPool> {
    let url = settings
        .database
        .url
        .as_ref()
        .ok_or_else(|| ConfigError::Invalid {
            key: "database.url".to_owned(),
            problem: "is not set (set DATABASE_URL or database.url)".to_owned(),
            origin: "the built-in defaults".to_owned(),
        })?;
    store::connect(url.expose(), settings.database.max_connections)
        .await
        .context("cannot connect to PostgreSQL")
}

async fn migrate(settings: &Settings) -> anyhow::Result<()> {
    let pool = connect(settings).await?;
    let applied = store::migrate(&pool).await?;
    println!("migrations applied: {applied}");
    Ok(())
}

async fn run(settings: Settings) -> anyhow::Result<()> {
    let shutdown = shutdown_signal();
    let pool = connect(&settings).await?;
    daemon::run(settings, pool, shutdown).await?;
    Ok(())
}

/// Completes on SIGTERM or SIGINT. The handlers are installed when this is called, not when the future
/// is first polled, so a signal that arrives during start-up is not lost (nor fatal).
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{SignalKind, signal};
    let terminate = signal(SignalKind::terminate());
    let interrupt = signal(SignalKind::interrupt());
    async move {
        match (terminate, interrupt) {
            (Ok(mut terminate), Ok(mut interrupt)) => {
                tokio::select! {
                    _ = terminate.recv() => {}
                    _ = interrupt.recv() => {}
                }
            }
            _ => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
}

async fn sync(
    settings: &Settings,
    name: &str,
    replay: Option<(DateTime<Utc>, DateTime<Utc>)>,
) -> anyhow::Result<()> {
    let account = settings
        .accounts
        .iter()
        .find(|a| a.name == name)
        .ok_or_else(|| ConfigError::Invalid {
            key: "--account".to_owned(),
            problem: format!("no account named `{name}` is configured"),
            origin: "the command line".to_owned(),
        })?;
    if !account.enabled {
        tracing::warn!(
            account = name,
            "the account is disabled; polling it once anyway"
        );
    }
    let pool = connect(settings).await?;
    if settings.database.auto_migrate {
        store::migrate(&pool).await?;
    }
    let mut single = settings.clone();
    single
        .accounts
        .iter_mut()
        .for_each(|a| a.enabled = a.name == name);
    let workers = daemon::prepare(
        &single,
        &pool,
        &daemon::replica_id(),
        &PollSettings::default(),
    )
    .await?;
    let worker = &workers[name];
    let mode = match replay {
        Some((since, until)) => RunMode::Replay { since, until },
        None => RunMode::Live,
    };
    let shutdown = CancellationToken::new();
    let cancel = shutdown.clone();
    let signal = shutdown_signal();
    tokio::spawn(async move {
        signal.await;
        cancel.cancel();
    });
    let progress = crate::progress::Reporter::new();
    let span = tracing::info_span!("poll", account = %name, marketplace = %worker.poller.account().marketplace);
    let reports = worker
        .poller
        .poll(mode, &shutdown, &progress)
        .instrument(span)
        .await;
    progress.finish();
    let mut failed = false;
    for report in &reports {
        let c = report.totals.counts;
        let outcome = match &report.outcome {
            StreamOutcome::Succeeded => "succeeded".to_owned(),
            StreamOutcome::Busy => "skipped: another replica holds the stream".to_owned(),
            StreamOutcome::Interrupted => "interrupted".to_owned(),
            StreamOutcome::Failed(e) => {
                failed = true;
                format!("failed: {}", error_chain(e))
            }
        };
        println!(
            "{name}/{}: {outcome}; {} pages, {} requests, {} seen, {} inserted, {} updated, {} unchanged",
            report.stream,
            report.totals.pages,
            report.totals.requests,
            c.seen,
            c.inserted,
            c.updated,
            c.unchanged
        );
    }
    if failed {
        anyhow::bail!("the sync of account {name} failed");
    }
    Ok(())
}

async fn status(settings: &Settings, json: bool) -> anyhow::Result<()> {
    let pool = connect(settings).await?;
    let rows = store::status::streams(&pool).await?;
    let outbox = store::status::outbox(&pool).await?;
    if json {
        let both = serde_json::json!({ "streams": rows, "outbox": outbox });
        println!("{}", serde_json::to_string_pretty(&both)?);
        return Ok(());
    }
    let mut table = comfy_table::Table::new();
    table.load_style(comfy_table::presets::UTF8_BORDERS_ONLY);
    table.set_header([
        "account",
        "marketplace",
        "stream",
        "cursor",
        "lag",
        "last success",
        "last outcome",
        "last error",
    ]);
    for row in &rows {
        table.add_row([
            row.account.clone(),
            row.marketplace.clone(),
            row.stream.clone().unwrap_or_else(|| "—".into()),
            row.cursor
                .map(|c| c.format("%Y-%m-%d %H:%M:%S").to_string())
                .unwrap_or_else(|| "never synced".into()),
            row.lag_seconds
                .map(|s| {
                    humantime::format_duration(Duration::from_secs(s.max(0) as u64)).to_string()
                })
                .unwrap_or_default(),
            row.last_success_at
                .map(|c| c.format("%Y-%m-%d %H:%M:%S").to_string())
                .unwrap_or_default(),
            row.last_outcome.clone().unwrap_or_default(),
            row.last_error.clone().unwrap_or_default(),
        ]);
    }
    println!("{table}");
    let mut table = comfy_table::Table::new();
    table.load_style(comfy_table::presets::UTF8_BORDERS_ONLY);
    let mut header = vec!["outbox of account"];
    header.extend(OutboxState::ALL.map(OutboxState::as_str));
    table.set_header(header);
    for account in &outbox {
        let mut row = vec![account.account.clone()];
        row.extend(OutboxState::ALL.map(|state| {
            account
                .counts
                .get(state.as_str())
                .copied()
                .unwrap_or(0)
                .to_string()
        }));
        table.add_row(row);
    }
    println!("{table}");
    Ok(())
}

async fn healthcheck(settings: &Settings, url: Option<String>) -> anyhow::Result<()> {
    let url = match url {
        Some(url) => url,
        None => {
            if !settings.http.enabled {
                anyhow::bail!("the operations listener is disabled (http.enabled = false)");
            }
            let mut addr = settings.http.listen;
            // A daemon listening on every interface is reached on loopback.
            if addr.ip().is_unspecified() {
                addr.set_ip(match addr {
                    std::net::SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
                    std::net::SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
                });
            }
            format!("http://{addr}/healthz")
        }
    };
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .context("cannot build the HTTP client")?;
    let response = client
        .get(&url)
        .send()
        .await
        .with_context(|| format!("{url} did not answer"))?;
    let status = response.status();
    if !status.is_success() {
        anyhow::bail!("{url} answered {status}");
    }
    println!("{url}: {status}");
    Ok(())
}

async fn outbox_command(settings: &Settings, command: OutboxCommand) -> anyhow::Result<()> {
    match command {
        OutboxCommand::Add {
            account,
            order,
            kind,
            args,
            idempotency_key,
            max_attempts,
        } => {
            let transition = Transition {
                order_external_id: order,
                kind,
                args: outbox::parse_args(&args)?,
                idempotency_key: idempotency_key
                    .unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
            };
            let max_attempts = max_attempts.unwrap_or(settings.outbox.max_attempts);
            outbox_add(settings, &account, transition, max_attempts).await
        }
        OutboxCommand::List {
            state,
            account,
            limit,
            json,
        } => outbox_list(settings, state, account.as_deref(), limit, json).await,
        OutboxCommand::Retry { id } => {
            let pool = connect(settings).await?;
            match store::outbox::retry(&pool, id).await? {
                OperatorAction::Done => {
                    println!("transition {id} is pending again");
                    Ok(())
                }
                OperatorAction::NotAllowed { state } => Err(OutboxError::Refused(format!(
                    "transition {id} is {state}: only failed, dead, unknown or pending transitions can be retried"
                ))
                .into()),
                OperatorAction::NotFound => {
                    Err(OutboxError::Refused(format!("there is no transition {id}")).into())
                }
            }
        }
        OutboxCommand::Cancel { id } => {
            let pool = connect(settings).await?;
            match store::outbox::cancel(&pool, id).await? {
                OperatorAction::Done => {
                    println!("transition {id} is cancelled");
                    Ok(())
                }
                OperatorAction::NotAllowed { state } => Err(OutboxError::Refused(format!(
                    "transition {id} is {state}: only pending, failed, dead or unknown transitions can be cancelled"
                ))
                .into()),
                OperatorAction::NotFound => {
                    Err(OutboxError::Refused(format!("there is no transition {id}")).into())
                }
            }
        }
    }
}

async fn outbox_add(
    settings: &Settings,
    name: &str,
    transition: Transition,
    max_attempts: i32,
) -> anyhow::Result<()> {
    let account = settings
        .accounts
        .iter()
        .find(|a| a.name == name)
        .ok_or_else(|| ConfigError::Invalid {
            key: "--account".to_owned(),
            problem: format!("no account named `{name}` is configured"),
            origin: "the command line".to_owned(),
        })?;
    if !account.enabled {
        tracing::warn!(
            account = name,
            "the account is disabled: the transition waits until it is enabled"
        );
    }
    let pool = connect(settings).await?;
    if settings.database.auto_migrate {
        store::migrate(&pool).await?;
    }
    let ids = store::accounts::sync_with_config(&pool, &settings.accounts).await?;
    let http = HttpClient::new(
        &account.http_settings(),
        account.credentials.secret_values(),
    )
    .context("cannot build the HTTP client")?;
    let overrides = settings
        .status_map
        .get(&account.marketplace)
        .cloned()
        .unwrap_or_default();
    let adapter = marketplace::build(account, http, &overrides);
    let user = std::env::var("USER").unwrap_or_else(|_| "unknown".to_owned());
    let request = EnqueueRequest {
        account_id: ids[name],
        transition,
        max_attempts,
        queued_by: format!("cli:{user}"),
    };
    let queued = outbox::enqueue(&pool, adapter.as_ref(), &request).await?;
    let t = &request.transition;
    if queued.created {
        println!(
            "queued transition {}: {} of order {} on {name}",
            queued.id, t.kind, t.order_external_id
        );
    } else {
        println!(
            "already queued as transition {} (same idempotency key)",
            queued.id
        );
    }
    Ok(())
}

async fn outbox_list(
    settings: &Settings,
    state: Option<OutboxState>,
    account: Option<&str>,
    limit: i64,
    json: bool,
) -> anyhow::Result<()> {
    let pool = connect(settings).await?;
    let rows = store::outbox::list(&pool, state, account, limit).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    let mut table = comfy_table::Table::new();
    table.load_style(comfy_table::presets::UTF8_BORDERS_ONLY);
    table.set_header([
        "id",
        "account",
        "order",
        "kind",
        "args",
        "state",
        "attempts",
        "next attempt",
        "last error",
    ]);
    for listed in &rows {
        let row = &listed.row;
        table.add_row([
            row.id.to_string(),
            listed.account.clone(),
            row.order_external_id.clone(),
            row.kind.clone(),
            row.args.to_string(),
            row.state.clone(),
            format!("{}/{}", row.attempts, row.max_attempts),
            row.next_attempt_at
                .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
                .unwrap_or_default(),
            row.last_error.clone().unwrap_or_default(),
        ]);
    }
    println!("{table}");
    Ok(())
}

fn print_summary(settings: &Settings, warnings: &[String]) {
    println!("configuration is valid");
    let files: Vec<String> = settings
        .sources
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    println!(
        "files read: {}",
        if files.is_empty() {
            "none".to_owned()
        } else {
            files.join(", ")
        }
    );
    println!(
        "database: {} (max {} connections, auto_migrate = {})",
        if settings.database.url.is_some() {
            "url set (hidden)"
        } else {
            "url NOT set"
        },
        settings.database.max_connections,
        settings.database.auto_migrate
    );
    println!(
        "log: level {}, format {:?}",
        settings.log.level, settings.log.format
    );
    println!(
        "shutdown deadline: {}",
        humantime::format_duration(settings.shutdown_deadline)
    );
    if settings.http.enabled {
        println!(
            "operations listener: http://{} (/healthz, /readyz, /metrics)",
            settings.http.listen
        );
    } else {
        println!("operations listener: disabled");
    }
    for a in &settings.accounts {
        let credentials = match &a.credentials {
            Credentials::Allesgo { store_id, .. } => {
                format!("store_id={store_id} access_token=***")
            }
            Credentials::C2c { domain, .. } => {
                format!("domain={domain} api_key=*** api_password=***")
            }
            Credentials::I1 {
                auth_header,
                auth_scheme,
                ..
            } => {
                format!("token=*** (header {auth_header}, scheme {auth_scheme:?})")
            }
            Credentials::Labs { .. } => "token=***".to_owned(),
            Credentials::Gittigidiyor { username, lang, .. } => {
                format!("api_key=*** secret_key=*** username={username} password=*** lang={lang}")
            }
        };
        println!(
            "account {}: {} at {} — {}, schedule \"{}\", initial sync {} days, overlap {}, page size {}, {} req/s, timeout {}; {}",
            a.name,
            a.marketplace,
            a.base_url,
            if a.enabled { "enabled" } else { "disabled" },
            a.schedule,
            a.initial_sync_days,
            humantime::format_duration(a.overlap),
            a.page_size,
            a.requests_per_second,
            humantime::format_duration(a.timeout),
            credentials
        );
    }
    for (marketplace, map) in &settings.status_map {
        println!("status overrides for {marketplace}: {} entries", map.len());
    }
    for warning in warnings {
        println!("warning: {warning}");
    }
}
