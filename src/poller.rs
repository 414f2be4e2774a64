//! The poll run: for one account, plan each stream's requests from its cursor, fetch pages (retrying
//! transient failures with backoff and `Retry-After`), and write every page with the checkpoint it
//! justifies.
//!
//! Architecture invariants:
//! - The upper bound `T0` of a run is fixed when the run starts; changes after it belong to the next run.
//! - A window starts at the cursor minus the account's overlap (inclusive), so a change that landed
//!   late on the marketplace, or under a skewed clock, is read again rather than missed.
//! - The cursor moves to a window's end only in the transaction that writes the window's last page.
//! - A stream is polled by one replica at a time: the run holds a lease, and every page write checks
//!   and renews it.

use std::sync::Arc;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use chrono::{DateTime, TimeDelta, Utc};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::config::AccountConfig;
use crate::marketplace::{
    Disposition, Marketplace, MarketplaceError, Page, PageRequest, StreamPlan, StreamSpec,
};
use crate::store::leases::{self, Lease};
use crate::store::orders::{self, PageWrite};
use crate::store::runs::{self, RunOutcome, RunTotals};
use crate::store::{self, StoreError};

/// How many page requests of one stream a run keeps in flight ahead of the page it is writing.
pub const FETCH_AHEAD: usize = 8;

/// How far back a stream that re-reads open orders may reach, whatever the oldest open order.
const REREAD_OPEN_LIMIT: TimeDelta = TimeDelta::days(90);

/// Tuning of poll runs.
#[derive(Debug, Clone)]
pub struct PollSettings {
    /// How long a lease lasts without renewal; a dead replica's streams are free after this.
    pub lease_ttl: Duration,
    /// Retries of one page after a transient failure.
    pub max_retries: usize,
    /// The first backoff delay; later ones grow exponentially, with jitter.
    pub min_backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for PollSettings {
    fn default() -> Self {
        PollSettings {
            lease_ttl: Duration::from_secs(120),
            max_retries: 6,
            min_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(30),
        }
    }
}

/// Live polling moves the cursor; a replay re-reads a past window and leaves the cursor alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunMode {
    Live,
    Replay {
        since: DateTime<Utc>,
        until: DateTime<Utc>,
    },
}

/// Receives progress of a run (a progress bar, log lines).
pub trait Progress: Send + Sync {
    /// A page was committed. `position` is how far the stream has got, out of `[from, to)`.
    fn page_written(
        &self,
        stream: &str,
        from: DateTime<Utc>,
        position: DateTime<Utc>,
        to: DateTime<Utc>,
        totals: &RunTotals,
    );
}

/// Progress that goes nowhere.
pub struct NoProgress;

impl Progress for NoProgress {
    fn page_written(
        &self,
        _: &str,
        _: DateTime<Utc>,
        _: DateTime<Utc>,
        _: DateTime<Utc>,
        _: &RunTotals,
    ) {
    }
}

/// Why a stream's run did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum PollError {
    #[error("account {account} stream {stream}: {source}")]
    Marketplace {
        account: String,
        stream: String,
        #[source]
        source: MarketplaceError,
    },
    #[error("account {account} stream {stream}: {source}")]
    Store {
        account: String,
        stream: String,
        #[source]
        source: StoreError,
    },
}

/// How one stream's run ended.
#[derive(Debug)]
pub enum StreamOutcome {
    Succeeded,
    /// Another replica holds the stream's lease; nothing was done.
    Busy,
    Interrupted,
    Failed(PollError),
}

/// The report of one stream's run.
#[derive(Debug)]
pub struct StreamReport {
    pub stream: &'static str,
    pub outcome: StreamOutcome,
    pub totals: RunTotals,
}

/// Polls one account.
pub struct AccountPoller {
    pool: PgPool,
    account_id: i64,
    account: AccountConfig,
    marketplace: Arc<dyn Marketplace>,
    holder: String,
    settings: PollSettings,
}

impl AccountPoller {
    pub fn new(
        pool: PgPool,
        account_id: i64,
        account: AccountConfig,
        marketplace: Arc<dyn Marketplace>,
        holder: String,
        settings: PollSettings,
    ) -> AccountPoller {
        AccountPoller {
            pool,
            account_id,
            account,
            marketplace,
            holder,
            settings,
        }
    }

    pub fn account(&self) -> &AccountConfig {
        &self.account
    }

    /// The account's id in the `accounts` table.
    pub fn account_id(&self) -> i64 {
        self.account_id
    }

    /// Runs every stream of the account once, one after the other.
    pub async fn poll(
        &self,
        mode: RunMode,
        shutdown: &CancellationToken,
        progress: &dyn Progress,
    ) -> Vec<StreamReport> {
        let mut reports = Vec::new();
        for spec in &self.marketplace.streams() {
            if shutdown.is_cancelled() {
                break;
            }
            reports.push(self.poll_stream(spec, mode, shutdown, progress).await);
        }
        reports
    }

    async fn poll_stream(
        &self,
        spec: &StreamSpec,
        mode: RunMode,
        shutdown: &CancellationToken,
        progress: &dyn Progress,
    ) -> StreamReport {
        let mut totals = RunTotals::default();
        let lease = Lease {
            account_id: self.account_id,
            stream: spec.name.to_owned(),
            holder: self.holder.clone(),
            ttl: self.settings.lease_ttl,
        };
        let store_failure = |source: StoreError| StreamReport {
            stream: spec.name,
            outcome: StreamOutcome::Failed(PollError::Store {
                account: self.account.name.clone(),
                stream: spec.name.to_owned(),
                source,
            }),
            totals,
        };
        match leases::acquire(&self.pool, &lease).await {
            Ok(true) => {}
            Ok(false) => {
                tracing::info!(stream = spec.name, "another replica is polling this stream");
                return StreamReport {
                    stream: spec.name,
                    outcome: StreamOutcome::Busy,
                    totals,
                };
            }
            Err(e) => return store_failure(e.into()),
        }

        let result = self
            .run_stream(spec, mode, &lease, shutdown, progress, &mut totals)
            .await;
        if let Err(e) = leases::release(&self.pool, &lease).await {
            tracing::warn!(stream = spec.name, error = %e, "could not release the lease; it will expire");
        }
        let outcome = match result {
            Ok(true) => StreamOutcome::Succeeded,
            Ok(false) => StreamOutcome::Interrupted,
            Err(e) => StreamOutcome::Failed(e),
        };
        StreamReport {
            stream: spec.name,
            outcome,
            totals,
        }
    }

    /// Returns `Ok(false)` when shutdown interrupted the run.
    async fn run_stream(
        &self,
        spec: &StreamSpec,
        mode: RunMode,
        lease: &Lease,
        shutdown: &CancellationToken,
        progress: &dyn Progress,
        totals: &mut RunTotals,
    ) -> Result<bool, PollError> {
        let store_err = |source: StoreError| PollError::Store {
            account: self.account.name.clone(),
            stream: spec.name.to_owned(),
            source,
        };
        let t0 = Utc::now();
        let (from, to) = self.plan(spec, mode, t0).await.map_err(store_err)?;
        let replay = matches!(mode, RunMode::Replay { .. });
        let run_id = runs::start(
            &self.pool,
            self.account_id,
            spec.name,
            &self.holder,
            replay,
            (from, to),
        )
        .await
        .map_err(|e| store_err(e.into()))?;
        tracing::info!(stream = spec.name, run_id, %from, %to, replay, "poll run started");

        let result = match spec.plan {
            StreamPlan::Windows {
                max_window,
                adaptive,
                ..
            } => {
                self.run_windows(
                    spec,
                    mode,
                    lease,
                    run_id,
                    (from, to),
                    max_window,
                    adaptive,
                    shutdown,
                    progress,
                    totals,
                )
                .await
            }
            StreamPlan::OpenOrders { batch } => {
                self.run_open_orders(
                    spec, mode, lease, run_id, to, batch, shutdown, progress, totals,
                )
                .await
            }
        };

        let (outcome, error) = match &result {
            Ok(true) => (RunOutcome::Succeeded, None),
            Ok(false) => (RunOutcome::Interrupted, None),
            Err(e) => (RunOutcome::Failed, Some(error_chain(e))),
        };
        match &result {
            Ok(_) => tracing::info!(
                stream = spec.name,
                run_id,
                outcome = outcome.as_str(),
                pages = totals.pages,
                requests = totals.requests,
                seen = totals.counts.seen,
                inserted = totals.counts.inserted,
                updated = totals.counts.updated,
                unchanged = totals.counts.unchanged,
                "poll run finished"
            ),
            Err(e) => {
                tracing::error!(stream = spec.name, run_id, error = %error_chain(e), "poll run failed")
            }
        }
        runs::finish(&self.pool, run_id, totals, outcome, error.as_deref())
            .await
            .map_err(|e| store_err(e.into()))?;
        result
    }

    /// The range `[from, to)` a run covers.
    async fn plan(
        &self,
        spec: &StreamSpec,
        mode: RunMode,
        t0: DateTime<Utc>,
    ) -> Result<(DateTime<Utc>, DateTime<Utc>), StoreError> {
        let (since, until) = match mode {
            RunMode::Replay { since, until } => return Ok((since, until.min(t0))),
            RunMode::Live => {
                let backfill_start =
                    t0 - TimeDelta::days(i64::from(self.account.initial_sync_days));
                let overlap =
                    TimeDelta::from_std(self.account.overlap).unwrap_or(TimeDelta::zero());
                let since = match store::cursors::get(&self.pool, self.account_id, spec.name)
                    .await?
                {
                    Some(cursor) => {
                        if cursor > t0 {
                            tracing::warn!(stream = spec.name, %cursor, "cursor is ahead of the clock; reading from now instead");
                        }
                        cursor.min(t0) - overlap
                    }
                    None => backfill_start,
                };
                (since, t0)
            }
        };
        let since = match spec.plan {
            StreamPlan::Windows {
                reread_open: true, ..
            } => match orders::open_orders_start(&self.pool, self.account_id).await? {
                Some(oldest) => since.min(oldest.max(t0 - REREAD_OPEN_LIMIT)),
                None => since,
            },
            _ => since,
        };
        Ok((since, until))
    }

    #[allow(clippy::too_many_arguments)]
    async fn run_windows(
        &self,
        spec: &StreamSpec,
        mode: RunMode,
        lease: &Lease,
        run_id: i64,
        (from, to): (DateTime<Utc>, DateTime<Utc>),
        max_window: Option<Duration>,
        adaptive: bool,
        shutdown: &CancellationToken,
        progress: &dyn Progress,
        totals: &mut RunTotals,
    ) -> Result<bool, PollError> {
        let max_len = max_window
            .and_then(|d| TimeDelta::from_std(d).ok())
            .unwrap_or(to - from)
            .max(TimeDelta::seconds(1));
        let min_len = TimeDelta::minutes(1).min(max_len);
        let mut len = max_len;
        let mut start = from;
        while start < to {
            let end = (start + len).min(to);
            let mut token = None;
            let mut window_orders = 0usize;
            loop {
                if shutdown.is_cancelled() {
                    return Ok(false);
                }
                let request = PageRequest {
                    from: start,
                    to: end,
                    page: token.take(),
                    page_size: self.account.page_size,
                    order_ids: Vec::new(),
                };
                let Some(page) = self.fetch(spec, run_id, &request, shutdown).await? else {
                    return Ok(false);
                };
                window_orders += page.orders.len();
                let checkpoint =
                    (mode == RunMode::Live && page.next.is_none()).then_some((spec.name, end));
                self.write(spec, lease, &page, Some(start), checkpoint, totals)
                    .await?;
                progress.page_written(
                    spec.name,
                    from,
                    if page.next.is_none() { end } else { start },
                    to,
                    totals,
                );
                match page.next {
                    Some(next) => token = Some(next),
                    None => break,
                }
            }
            if adaptive {
                len = if window_orders > self.account.page_size as usize {
                    (len / 2).max(min_len)
                } else if window_orders < self.account.page_size as usize / 4 {
                    (len * 2).min(max_len)
                } else {
                    len
                };
            }
            start = end;
        }
        Ok(true)
    }

    #[allow(clippy::too_many_arguments)]
    async fn run_open_orders(
        &self,
        spec: &StreamSpec,
        mode: RunMode,
        lease: &Lease,
        run_id: i64,
        to: DateTime<Utc>,
        batch: usize,
        shutdown: &CancellationToken,
        progress: &dyn Progress,
        totals: &mut RunTotals,
    ) -> Result<bool, PollError> {
        let ids = orders::open_order_ids(&self.pool, self.account_id)
            .await
            .map_err(|e| PollError::Store {
                account: self.account.name.clone(),
                stream: spec.name.to_owned(),
                source: e.into(),
            })?;
        let batches: Vec<&[String]> = ids.chunks(batch.max(1)).collect();
        let last = batches.len();
        for (i, chunk) in batches.into_iter().enumerate() {
            let mut token = None;
            loop {
                if shutdown.is_cancelled() {
                    return Ok(false);
                }
                let request = PageRequest {
                    from: to,
                    to,
                    page: token.take(),
                    page_size: self.account.page_size,
                    order_ids: chunk.to_vec(),
                };
                let Some(page) = self.fetch(spec, run_id, &request, shutdown).await? else {
                    return Ok(false);
                };
                let done = i + 1 == last && page.next.is_none();
                let checkpoint = (mode == RunMode::Live && done).then_some((spec.name, to));
                self.write(spec, lease, &page, None, checkpoint, totals)
                    .await?;
                progress.page_written(spec.name, to, to, to, totals);
                match page.next {
                    Some(next) => token = Some(next),
                    None => break,
                }
            }
        }
        if last == 0 && mode == RunMode::Live {
            self.write(
                spec,
                lease,
                &Page {
                    orders: Vec::new(),
                    next: None,
                    requests: 0,
                },
                None,
                Some((spec.name, to)),
                totals,
            )
            .await?;
        }
        Ok(true)
    }

    /// Fetches a page, retrying transient failures. `Ok(None)` when shutdown interrupted it.
    async fn fetch(
        &self,
        spec: &StreamSpec,
        run_id: i64,
        request: &PageRequest,
        shutdown: &CancellationToken,
    ) -> Result<Option<Page>, PollError> {
        let backoff = ExponentialBuilder::default()
            .with_min_delay(self.settings.min_backoff)
            .with_max_delay(self.settings.max_backoff)
            .with_max_times(self.settings.max_retries)
            .with_jitter();
        let attempt = || self.marketplace.fetch_page(spec.name, request);
        let retrying = attempt
            .retry(backoff)
            .sleep(tokio::time::sleep)
            .when(|e: &MarketplaceError| matches!(e.disposition(), Disposition::Retry { .. }))
            .adjust(|e: &MarketplaceError, delay| match e.disposition() {
                Disposition::Retry {
                    retry_after: Some(after),
                } => Some(delay.map_or(after, |d| d.max(after))),
                _ => delay,
            })
            .notify(|e: &MarketplaceError, delay| {
                tracing::warn!(stream = spec.name, error = %e, retry_in_ms = delay.as_millis() as u64, "transient failure; retrying");
            });
        let result = tokio::select! {
            result = retrying => result,
            () = shutdown.cancelled() => return Ok(None),
        };
        match result {
            Ok(page) => Ok(Some(page)),
            Err(error) => {
                if let MarketplaceError::Malformed { what, raw_body, .. } = &error
                    && let Err(e) = runs::record_payload_error(
                        &self.pool,
                        self.account_id,
                        spec.name,
                        Some(run_id),
                        what,
                        &error.to_string(),
                        raw_body,
                    )
                    .await
                {
                    tracing::error!(error = %e, "could not record the malformed payload");
                }
                Err(PollError::Marketplace {
                    account: self.account.name.clone(),
                    stream: spec.name.to_owned(),
                    source: error,
                })
            }
        }
    }

    async fn write(
        &self,
        spec: &StreamSpec,
        lease: &Lease,
        page: &Page,
        window_from: Option<DateTime<Utc>>,
        checkpoint: Option<(&str, DateTime<Utc>)>,
        totals: &mut RunTotals,
    ) -> Result<(), PollError> {
        let counts = orders::write_page(
            &self.pool,
            PageWrite {
                account_id: self.account_id,
                marketplace: self.account.marketplace,
                orders: &page.orders,
                window_from,
                checkpoint,
                lease: Some(lease),
            },
        )
        .await
        .map_err(|source| PollError::Store {
            account: self.account.name.clone(),
            stream: spec.name.to_owned(),
            source,
        })?;
        totals.pages += 1;
        totals.requests += page.requests;
        totals.counts += counts;
        Ok(())
    }
}

/// An error with its `source()` chain, for the `sync_runs.error` column and logs.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text.push_str(": ");
            text.push_str(&s_text);
        }
        source = s.source();
    }
    text
}
