//! The long-running daemon (`ordersync run`): keeps the `accounts` table in step with the configuration,
//! builds one poller per enabled account, schedules each on its cron expression, runs each account's
//! outbox worker, refreshes marketplace status catalogues daily, and shuts down within a deadline when
//! asked to.
//!
//! Shutdown is a future passed in by the caller (a signal in `main`, a token in tests): when it
//! completes, no new run starts, in-flight runs stop after the page they are writing, in-flight
//! transitions finish (or are released for a read-back), leases are released and the function returns.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use tokio::sync::{Mutex, Notify};
use tokio_cron_scheduler::{Job, JobScheduler, JobSchedulerError};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::config::Settings;
use crate::http::HttpClient;
use crate::marketplace::{self, Marketplace};
use crate::ops::metrics::ApiLabels;
use crate::ops::{self, OpsError};
use crate::outbox::worker::{self as outbox_worker, RepollHook, WorkerAccount};
use crate::outbox::{OutboxSettings, OutboxWorker};
use crate::poller::{AccountPoller, NoProgress, PollSettings, RunMode, StreamOutcome, error_chain};
use crate::store::{self, StoreError};

/// How often status catalogues are fetched again.
const CATALOG_REFRESH: Duration = Duration::from_secs(24 * 60 * 60);

/// Why the daemon could not start.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot build the HTTP client of account {account}: {source}")]
    Http {
        account: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("scheduler: {0}")]
    Scheduler(#[from] JobSchedulerError),
    #[error(transparent)]
    Ops(#[from] OpsError),
}

/// One enabled account, ready to poll.
#[derive(Clone)]
pub struct AccountWorker {
    pub poller: Arc<AccountPoller>,
    pub marketplace: Arc<dyn Marketplace>,
    /// Held while a run is in progress, so that a slow run is not overlapped by the next tick.
    running: Arc<Mutex<()>>,
}

/// A name for this replica in leases and runs: host, process and a random part.
pub fn replica_id() -> String {
    let host = hostname::get()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "unknown-host".to_owned());
    let nonce = uuid::Uuid::new_v4().simple().to_string();
    format!("{host}:{}:{}", std::process::id(), &nonce[..8])
}

/// Synchronizes the accounts table and builds a worker per enabled account.
pub async fn prepare(
    settings: &Settings,
    pool: &PgPool,
    holder: &str,
    poll: &PollSettings,
) -> Result<HashMap<String, AccountWorker>, DaemonError> {
    let ids = store::accounts::sync_with_config(pool, &settings.accounts)
        .await
        .map_err(StoreError::from)?;
    let mut workers = HashMap::new();
    for account in settings.accounts.iter().filter(|a| a.enabled) {
        let http = HttpClient::new(
            &account.http_settings(),
            account.credentials.secret_values(),
        )
        .map_err(|source| DaemonError::Http {
            account: account.name.clone(),
            source,
        })?
        .with_metrics(ApiLabels {
            account: account.name.clone(),
            marketplace: account.marketplace,
        });
        let overrides = settings
            .status_map
            .get(&account.marketplace)
            .cloned()
            .unwrap_or_default();
        let marketplace: Arc<dyn Marketplace> =
            Arc::from(marketplace::build(account, http, &overrides));
        let poller = Arc::new(AccountPoller::new(
            pool.clone(),
            ids[&account.name],
            account.clone(),
            marketplace.clone(),
            holder.to_owned(),
            poll.clone(),
        ));
        workers.insert(
            account.name.clone(),
            AccountWorker {
                poller,
                marketplace,
                running: Arc::new(Mutex::new(())),
            },
        );
    }
    Ok(workers)
}

/// Polls an account once unless a run of it is already in progress in this process.
pub async fn poll_once(worker: &AccountWorker, shutdown: &CancellationToken) {
    let Ok(_running) = worker.running.try_lock() else {
        tracing::info!("previous run still in progress; skipping this tick");
        return;
    };
    for report in worker
        .poller
        .poll(RunMode::Live, shutdown, &NoProgress)
        .await
    {
        if let StreamOutcome::Failed(e) = &report.outcome {
            tracing::error!(stream = report.stream, error = %error_chain(e), "stream failed");
        }
    }
}

/// Runs the daemon until `shutdown` completes.
pub async fn run(
    settings: Settings,
    pool: PgPool,
    shutdown: impl Future<Output = ()>,
) -> Result<(), DaemonError> {
    if settings.database.auto_migrate {
        let applied = store::migrate(&pool).await?;
        tracing::info!(applied, "database migrations checked");
    }
    let holder = replica_id();
    let workers = prepare(&settings, &pool, &holder, &PollSettings::default()).await?;
    for account in &settings.accounts {
        tracing::info!(
            account = %account.name,
            marketplace = %account.marketplace,
            enabled = account.enabled,
            schedule = %account.schedule,
            "account planned"
        );
    }
    tracing::info!(replica = %holder, accounts = workers.len(), "ordersync started");

    let token = CancellationToken::new();
    let tracker = TaskTracker::new();
    ops::start(&settings.http, &pool, &tracker, &token).await?;
    let scheduler = JobScheduler::new().await?;
    for (name, worker) in &workers {
        let span = tracing::info_span!("poll", account = %name, marketplace = %worker.poller.account().marketplace);
        spawn_poll(&tracker, worker.clone(), token.clone(), span.clone());
        spawn_catalog_refresh(&tracker, &pool, name, worker.clone(), token.clone());
        let schedule = worker.poller.account().schedule.clone();
        let (tracker, worker, token) = (tracker.clone(), worker.clone(), token.clone());
        let job = Job::new_async(schedule.as_str(), move |_, _| {
            spawn_poll(&tracker, worker.clone(), token.clone(), span.clone());
            Box::pin(async {})
        })?;
        scheduler.add(job).await?;
    }
    // Leave part of the deadline for releasing claims and closing the pool.
    let outbox = OutboxSettings::new(&settings.outbox, settings.shutdown_deadline.mul_f64(0.8));
    spawn_outbox(&tracker, &pool, &workers, &holder, &outbox, &token);
    scheduler.start().await?;
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
    // Pings until this function returns: systemd keeps the watchdog armed while the service stops.
    let _watchdog = ops::systemd::start_watchdog();

    shutdown.await;
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
    tracing::info!(
        deadline_s = settings.shutdown_deadline.as_secs(),
        "shutting down"
    );
    let mut scheduler = scheduler;
    if let Err(e) = scheduler.shutdown().await {
        tracing::warn!(error = %e, "scheduler did not stop cleanly");
    }
    token.cancel();
    tracker.close();
    if tokio::time::timeout(settings.shutdown_deadline, tracker.wait())
        .await
        .is_err()
    {
        tracing::error!(
            "in-flight runs did not finish within the deadline; their leases will expire"
        );
    }
    pool.close().await;
    tracing::info!("ordersync stopped");
    Ok(())
}

fn spawn_poll(
    tracker: &TaskTracker,
    worker: AccountWorker,
    token: CancellationToken,
    span: tracing::Span,
) {
    if token.is_cancelled() {
        return;
    }
    tracker.spawn(async move { poll_once(&worker, &token).await }.instrument(span));
}

/// Starts each account's outbox worker and the listener that wakes them.
fn spawn_outbox(
    tracker: &TaskTracker,
    pool: &PgPool,
    workers: &HashMap<String, AccountWorker>,
    holder: &str,
    settings: &OutboxSettings,
    token: &CancellationToken,
) {
    let mut wakers = HashMap::new();
    for (name, worker) in workers {
        let account = worker.poller.account();
        let wake = Arc::new(Notify::new());
        wakers.insert(worker.poller.account_id(), wake.clone());
        let repoll: RepollHook = {
            let (tracker, worker, token) = (tracker.clone(), worker.clone(), token.clone());
            let span = tracing::info_span!("poll", account = %name, marketplace = %account.marketplace, after = "transition");
            Arc::new(move || spawn_poll(&tracker, worker.clone(), token.clone(), span.clone()))
        };
        let outbox = Arc::new(OutboxWorker::new(
            pool.clone(),
            WorkerAccount {
                account_id: worker.poller.account_id(),
                name: name.clone(),
                kind: account.marketplace,
                marketplace: worker.marketplace.clone(),
                secrets: account.credentials.secret_values(),
            },
            holder.to_owned(),
            settings.clone(),
            Some(repoll),
        ));
        tracker.spawn(
            outbox
                .run(wake, token.clone())
                .instrument(tracing::info_span!("outbox", account = %name)),
        );
    }
    tracker.spawn(outbox_worker::listen(pool.clone(), wakers, token.clone()));
}

fn spawn_catalog_refresh(
    tracker: &TaskTracker,
    pool: &PgPool,
    name: &str,
    worker: AccountWorker,
    token: CancellationToken,
) {
    let pool = pool.clone();
    let span = tracing::info_span!("status_catalog", account = %name);
    tracker.spawn(
        async move {
            let mut every = tokio::time::interval(CATALOG_REFRESH);
            loop {
                tokio::select! {
                    _ = every.tick() => {}
                    () = token.cancelled() => return,
                }
                match worker.marketplace.status_catalog().await {
                    Ok(codes) if codes.is_empty() => return,
                    Ok(codes) => {
                        let kind = worker.poller.account().marketplace;
                        match store::catalog::replace(&pool, kind, &codes).await {
                            Ok(()) => {
                                tracing::info!(codes = codes.len(), "status catalogue stored")
                            }
                            Err(e) => {
                                tracing::warn!(error = %e, "could not store the status catalogue")
                            }
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "could not fetch the status catalogue"),
                }
            }
        }
        .instrument(span),
    );
}
