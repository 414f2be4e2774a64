//! The poll run: for one account, plan each stream's requests from its cursor, fetch pages (retrying
//! transient failures with backoff and `Retry-After`), and write every page with the checkpoint it
//! justifies.
//!
//! Architecture invariants:
//! - The upper bound `T0` of a run is fixed when the run starts; changes after it belong to the next run.
//! - A window starts at the cursor minus the account's overlap (inclusive), so a change that landed
//!   late on the marketplace, or under a skewed clock, is read again rather than missed.
//! - The cursor moves to a window's end only in the transaction that writes the window's last page.
//! - Writes commit in write order. A write may write its orders beside the writes before it, on a
//!   connection of its own, but commits only after them; orders they hold too it writes only once
//!   they have committed.
//! - A stream is polled by one replica at a time: the run holds a lease, and every page write checks
//!   and renews it.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use backon::{ExponentialBuilder, Retryable};
use chrono::{DateTime, TimeDelta, Utc};
use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::FuturesOrdered;
use sqlx::PgPool;
use tokio::sync::{Notify, oneshot};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::config::AccountConfig;
use crate::domain::{MarketplaceKind, Order};
use crate::marketplace::{
    Disposition, Marketplace, MarketplaceError, MoreOrders, Page, PageRequest, StoredOrders,
    StreamPlan, StreamSpec,
};
use crate::ops::metrics;
use crate::store::leases::{self, Lease};
use crate::store::orders::{self, PageOrders, PagesWrite};
use crate::store::runs::{self, RunOutcome, RunTotals};
use crate::store::{self, StoreError};

/// How many page requests of one stream a run keeps in flight ahead of the page it is writing.
pub const FETCH_AHEAD: usize = 8;

/// How many pages a run may hold ahead of its writes, in flight or fetched and not written (its
/// places). Pages that arrived before their turn (out of order, or of later lanes) wait in places of
/// their own rather than in those of the [`FETCH_AHEAD`] requests in flight, so a write that falls
/// behind does not leave the API fewer requests to answer at once.
const HELD_AHEAD: usize = 2 * FETCH_AHEAD;

/// How many of the places the lanes after the one being written may hold while pages of that one can
/// still be guessed ahead: their pages wait until the lane is written, and the requests they hold are
/// the lane's parallelism.
const LANES_AHEAD_PLACES: usize = 2;

/// About how many fetched orders a run may hold ahead of its writes: pages of APIs without pagination
/// can hold a whole day of orders, and eight of those would cost more memory than the fetch-ahead gains.
const FETCH_AHEAD_ORDERS: usize = 1_000;

/// Or, where that allows more places (up to [`HELD_AHEAD`]), this much raw payload (the JSON text of the
/// orders, their lines and packages): what 500 Labs orders carry. Pages of light orders (GittiGidiyor's
/// 100 weigh about 150 KB) so get more places than pages of heavy ones.
const FETCH_AHEAD_PAYLOAD_BYTES: usize = 2 * 1024 * 1024;

/// The most orders one write transaction holds. Pages fetched ahead that are ready when their turn comes
/// are written together up to this many, so that a run spends one transaction on several small pages; a
/// larger page (an API without pagination answers with a whole window) is written in parts of this
/// size, the checkpoint with the last, so that the bound arrays and the statement buffer of a write stay
/// small whatever the page.
const WRITE_BATCH_ORDERS: usize = 500;

/// How many writes may be under way at once: the oldest commits while the others write their orders,
/// each on a connection of its own, and they commit in write order.
const WRITES_UNDER_WAY: usize = 3;

/// The writes under way hold at most [`WRITE_BATCH_ORDERS`] orders between them (what one write held
/// before writes went beside each other) or, where that allows more, this much raw payload (the JSON
/// text of the orders, their lines and packages): what 500 Labs orders carry (about 4 KB each with
/// their lines). Orders with lighter payloads (C2C, GittiGidiyor) so get several full writes without
/// those holding more than 500 heavy orders would.
const BESIDE_PAYLOAD_BYTES: usize = 2 * 1024 * 1024;

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
        // Orders stored from now on are read during this poll, so a re-read of the open orders later in
        // it leaves them out. The database's clock stamps them; without it, nothing is left out.
        let streams = self.marketplace.streams();
        let rereads_open = streams
            .iter()
            .any(|spec| matches!(spec.plan, StreamPlan::OpenOrders { .. }));
        let poll_started = if rereads_open && mode == RunMode::Live {
            orders::clock(&self.pool).await.ok()
        } else {
            None
        };
        let mut reports = Vec::new();
        for spec in &streams {
            if shutdown.is_cancelled() {
                break;
            }
            let poll = Poll {
                mode,
                started: poll_started,
                shutdown,
                progress,
            };
            reports.push(self.poll_stream(spec, &poll).await);
        }
        reports
    }

    async fn poll_stream(&self, spec: &StreamSpec, poll: &Poll<'_>) -> StreamReport {
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

        let result = self.run_stream(spec, poll, &lease, &mut totals).await;
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
        poll: &Poll<'_>,
        lease: &Lease,
        totals: &mut RunTotals,
    ) -> Result<bool, PollError> {
        let mode = poll.mode;
        let store_err = |source: StoreError| PollError::Store {
            account: self.account.name.clone(),
            stream: spec.name.to_owned(),
            source,
        };
        let t0 = Utc::now();
        let RunPlan {
            from,
            to,
            changed_since,
        } = self.plan(spec, mode, t0).await.map_err(store_err)?;
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

        let run = LaneRun {
            spec,
            mode,
            lease,
            run_id,
            range: (from, to),
            changed_since,
            shutdown: poll.shutdown,
            progress: poll.progress,
        };
        let result = match spec.plan {
            StreamPlan::Windows {
                max_window,
                adaptive,
                reread_open,
                ..
            } => {
                // An incremental re-read of the open range is one window, which an adapter listing the
                // newest changes first ends early.
                let max_window = max_window.filter(|_| !(reread_open && changed_since.is_some()));
                self.run_windows(&run, max_window, adaptive, totals).await
            }
            StreamPlan::OpenOrders { batch } => {
                match orders::open_order_ids(&self.pool, self.account_id, poll.started).await {
                    Ok(ids) => {
                        let batches = ids.chunks(batch.max(1)).map(<[String]>::to_vec).collect();
                        let run = LaneRun {
                            range: (to, to),
                            changed_since: None,
                            ..run
                        };
                        self.run_open_orders(&run, batches, totals).await
                    }
                    Err(e) => Err(store_err(e.into())),
                }
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
        metrics::poll_run(
            &self.account.name,
            self.account.marketplace,
            spec.name,
            outcome.as_str(),
            &totals.counts,
        );
        result
    }

    /// The range `[from, to)` a run covers, and where changes start to matter.
    async fn plan(
        &self,
        spec: &StreamSpec,
        mode: RunMode,
        t0: DateTime<Utc>,
    ) -> Result<RunPlan, StoreError> {
        let (since, changed_since) = match mode {
            RunMode::Replay { since, until } => {
                return Ok(RunPlan {
                    from: since,
                    to: until.min(t0),
                    changed_since: None,
                });
            }
            RunMode::Live => {
                let overlap =
                    TimeDelta::from_std(self.account.overlap).unwrap_or(TimeDelta::zero());
                let backfill_start =
                    t0 - TimeDelta::days(i64::from(self.account.initial_sync_days));
                match store::cursors::get(&self.pool, self.account_id, spec.name).await? {
                    Some(cursor) => {
                        if cursor > t0 {
                            tracing::warn!(stream = spec.name, %cursor, "cursor is ahead of the clock; reading from now instead");
                        }
                        let since = cursor.min(t0) - overlap;
                        (since, Some(since))
                    }
                    None if matches!(
                        spec.plan,
                        StreamPlan::Windows {
                            changes_only: true,
                            ..
                        }
                    ) =>
                    {
                        // Only changes since the registration matter: another stream backfills.
                        let registered =
                            store::accounts::registered_at(&self.pool, self.account_id).await?;
                        let since = (registered.min(t0) - overlap).max(backfill_start);
                        (since, Some(since))
                    }
                    None => (backfill_start, None),
                }
            }
        };
        let from = match spec.plan {
            StreamPlan::Windows {
                reread_open: true, ..
            } => match orders::open_orders_start(&self.pool, self.account_id).await? {
                Some(oldest) => since.min(oldest.max(t0 - REREAD_OPEN_LIMIT)),
                None => since,
            },
            _ => since,
        };
        Ok(RunPlan {
            from,
            to: t0,
            changed_since,
        })
    }

    async fn run_windows(
        &self,
        run: &LaneRun<'_>,
        max_window: Option<Duration>,
        adaptive: bool,
        totals: &mut RunTotals,
    ) -> Result<bool, PollError> {
        let (from, to) = run.range;
        let max_len = max_window
            .and_then(|d| TimeDelta::from_std(d).ok())
            .unwrap_or(to - from)
            .max(TimeDelta::seconds(1));
        let planner = LanePlanner::Windows {
            next_start: from,
            to,
            len: max_len,
            max_len,
            min_len: TimeDelta::minutes(1).min(max_len),
            adaptive,
            page_size: self.account.page_size as usize,
        };
        self.run_lanes(run, planner, totals).await
    }

    /// Re-reads the open orders in `batches` of ids; the run's range ends at `to`, where the cursor
    /// moves with the last batch.
    async fn run_open_orders(
        &self,
        run: &LaneRun<'_>,
        batches: VecDeque<Vec<String>>,
        totals: &mut RunTotals,
    ) -> Result<bool, PollError> {
        let (spec, to) = (run.spec, run.range.1);
        if batches.is_empty() {
            if run.mode == RunMode::Live {
                let nothing = Page {
                    orders: Vec::new(),
                    next: None,
                    requests: 0,
                    more: None,
                };
                self.write(
                    spec,
                    run.lease,
                    &[(&nothing, None)],
                    Some((spec.name, to)),
                    totals,
                )
                .await?;
            }
            return Ok(true);
        }
        self.run_lanes(run, LanePlanner::Batches { batches, to }, totals)
            .await
    }

    /// Fetches the pages of a run's lanes (windows or batches of ids) with up to [`FETCH_AHEAD`]
    /// requests in flight, and writes them strictly in order: a lane's pages in token order, lanes one
    /// after the other, so each checkpoint is written only after everything before it. The pages that
    /// are ready when their turn comes go into one write ([`coalesce`]), with the checkpoint of the last
    /// lane they complete. Requests go out ahead of the writes for pages that are certainly needed (the
    /// next lanes' first pages, a page a fetched page named as next) and, where the marketplace's page
    /// tokens are predictable ([`Marketplace::page_after`]), for the following pages of a lane known to
    /// have more than one; such a page turns out useless only past the lane's end, and is then dropped
    /// unread.
    ///
    /// Up to [`WRITES_UNDER_WAY`] writes may be under way at once: a group that fits one transaction
    /// starts beside the writes before it when all of them fit one transaction each, have begun it
    /// ([`Beginning`]) and together hold no more than 500 orders or [`BESIDE_PAYLOAD_BYTES`] of
    /// payload, and writes its orders in a transaction of its own while those commit; the orders they
    /// hold too, and then the lease, the cursor and the commit, wait until the write before it has
    /// committed ([`orders::prepare`], [`orders::PreparedWrite::add`],
    /// [`orders::PreparedWrite::commit`]).
    async fn run_lanes(
        &self,
        run: &LaneRun<'_>,
        planner: LanePlanner,
        totals: &mut RunTotals,
    ) -> Result<bool, PollError> {
        let spec = run.spec;
        let stored = run.changed_since.map(|_| {
            Arc::new(AccountOrders {
                pool: self.pool.clone(),
                account_id: self.account_id,
            }) as Arc<dyn StoredOrders>
        });
        let mut fetches = Fetches::new(
            planner,
            self.fetcher(spec, run),
            self.account.page_size,
            stored,
        );
        let beginning = Beginning::default();
        // The writes under way, in write order (at most `WRITES_UNDER_WAY`), and the orders of each
        // when the next may be written beside them.
        let mut writes: FuturesOrdered<BoxFuture<'_, Written>> = FuturesOrdered::new();
        let mut beside = UnderWay::default();
        // Signalled when the last write under way has committed.
        let mut last_committed: Option<oneshot::Receiver<()>> = None;
        // The page to write next: lane `lane`, its `index`-th confirmed token.
        let (mut lane, mut index) = (0usize, 0usize);
        loop {
            if run.shutdown.is_cancelled() {
                // The writes under way have their pages: they are finished, not thrown away.
                while let Some(written) = writes.next().await {
                    *totals += written.totals;
                    let pages = written.pages?;
                    self.report(run, &mut fetches.lanes, &pages, written.streamed, totals);
                }
                return Ok(false);
            }
            // Adaptive windows are planned only between writes: they serve APIs without pagination,
            // whose answers are as large as they come, so those fetched ahead could hold much more
            // than their count of pages suggests.
            let new_lanes = writes.is_empty() || !fetches.planner.is_adaptive();
            fetches.request_ahead(run.changed_since, (lane, index), new_lanes);
            if lane == fetches.lanes.len() && writes.is_empty() {
                // Every lane is written and none is left to plan.
                return Ok(true);
            }
            let startable = lane < fetches.lanes.len()
                && match fetches.peek(lane, index) {
                    None => false,
                    Some(Ok(Some(page))) => {
                        beside.is_empty()
                            || (beside.admits(page, page.orders.len(), payload_bytes(page))
                                && beginning.count.load(Ordering::SeqCst) == 0
                                && connection_free(&self.pool))
                    }
                    // A failure or an interruption ends the run once the writes before it are done.
                    Some(_) => writes.is_empty(),
                };
            if startable {
                let Some(page) = fetches.take(lane, index).expect("peeked")? else {
                    return Ok(false);
                };
                let (group, after) = coalesce(
                    &fetches.lanes,
                    &mut fetches.ready,
                    (lane, index),
                    page,
                    |page, orders, payload| {
                        beside.is_empty() || beside.admits(page, orders, payload)
                    },
                );
                let mut group = GroupWrite::new(run, &fetches.lanes, group);
                // The pages taken out make room for requests, which go out now rather than after
                // the write; pages keep arriving (and are parsed) while it runs.
                fetches.request_ahead(run.changed_since, after, true);
                let write: BoxFuture<'_, Written> = if group.fits_one() {
                    group.defer_orders_of(&beside);
                    beside.push(Some(group.beside()));
                    let (committed, signal) = oneshot::channel();
                    let previous = last_committed.replace(signal);
                    beginning.count.fetch_add(1, Ordering::SeqCst);
                    Box::pin(
                        self.write_in_one(
                            spec.name, run.lease, group, &beginning, previous, committed,
                        ),
                    )
                } else {
                    beside.push(None);
                    last_committed = None;
                    Box::pin(self.write_in_parts(spec, run.lease, fetches.fetcher.clone(), group))
                };
                writes.push_back(write);
                (lane, index) = after;
                continue;
            }
            tokio::select! {
                Some(written) = writes.next(), if !writes.is_empty() => {
                    beside.pop();
                    *totals += written.totals;
                    let pages = written.pages?;
                    self.report(run, &mut fetches.lanes, &pages, written.streamed, totals);
                }
                taken = fetches.take_in_one(), if !fetches.in_flight.is_empty() => {
                    if !taken {
                        return Ok(false);
                    }
                }
                // A write has its transaction: the next may go beside it.
                () = beginning.begun.notified(), if beginning.count.load(Ordering::SeqCst) > 0 => {}
            }
        }
    }

    /// Reports the pages of a committed write: `(lane, whether it is the lane's last page)`. The rest
    /// of a streamed answer it wrote (`streamed` orders, in its last page's lane) counts in that lane's
    /// size, which sizes the next adaptive window.
    fn report(
        &self,
        run: &LaneRun<'_>,
        lanes: &mut [Lane],
        pages: &[(usize, bool)],
        streamed: usize,
        totals: &RunTotals,
    ) {
        if let Some(&(lane, _)) = pages.last() {
            lanes[lane].orders += streamed;
            lanes[lane].reading = false;
        }
        let (from, to) = run.range;
        for &(lane, last) in pages {
            let position = if last {
                lanes[lane].to
            } else {
                lanes[lane].from
            };
            run.progress
                .page_written(run.spec.name, from, position.min(to), to, totals);
        }
    }

    /// Writes a group of pages in one transaction: its orders at once, beside the writes before it,
    /// and its deferred orders (those writes hold them too) and its commit — the lease, the
    /// checkpoint — only once `previous`, the write before it, has committed; then signals
    /// `committed`. It counts in `beginning` until its transaction has begun.
    async fn write_in_one(
        &self,
        stream: &'static str,
        lease: &Lease,
        group: GroupWrite,
        beginning: &Beginning,
        previous: Option<oneshot::Receiver<()>>,
        committed: oneshot::Sender<()>,
    ) -> Written {
        let GroupWrite {
            pages,
            deferred,
            lanes,
            checkpoint,
        } = group;
        let mut totals = RunTotals {
            pages: pages.len() as u32,
            requests: pages.iter().map(|(page, _)| page.requests).sum(),
            ..RunTotals::default()
        };
        let orders: Vec<PageOrders<'_>> = pages
            .iter()
            .map(|(page, window_from)| PageOrders {
                orders: &page.orders,
                window_from: *window_from,
            })
            .collect();
        let transaction = self.pool.begin().await;
        beginning.count.fetch_sub(1, Ordering::SeqCst);
        beginning.begun.notify_one();
        let prepared = match transaction {
            Ok(transaction) => {
                orders::prepare(
                    transaction,
                    self.account_id,
                    self.account.marketplace,
                    &orders,
                )
                .await
            }
            Err(error) => Err(error.into()),
        };
        // The orders are in the transaction: their pages are not needed while it waits to commit.
        drop(orders);
        drop(pages);
        let write = async {
            let mut prepared = prepared?;
            if let Some(previous) = previous
                && previous.await.is_err()
            {
                // The write before failed: the run ends with its error, which comes first, and
                // drops this one unfinished (its transaction rolls back).
                std::future::pending::<()>().await;
            }
            if !deferred.is_empty() {
                let deferred: Vec<PageOrders<'_>> = deferred
                    .iter()
                    .map(|(orders, window_from)| PageOrders {
                        orders,
                        window_from: *window_from,
                    })
                    .collect();
                prepared.add(&deferred).await?;
            }
            prepared.commit(checkpoint, Some(lease)).await
        };
        match write.await {
            Ok(counts) => {
                // Nobody waits for the signal when no write follows.
                let _ = committed.send(());
                totals.counts = counts;
                Written {
                    totals,
                    pages: Ok(lanes),
                    streamed: 0,
                }
            }
            Err(source) => Written {
                totals: RunTotals::default(),
                pages: Err(PollError::Store {
                    account: self.account.name.clone(),
                    stream: stream.to_owned(),
                    source,
                }),
                streamed: 0,
            },
        }
    }

    /// Writes a group of pages that does not fit one transaction — a page of more than
    /// [`WRITE_BATCH_ORDERS`] orders, or one whose answer is still being read — on its own.
    async fn write_in_parts(
        &self,
        spec: &StreamSpec,
        lease: &Lease,
        fetcher: PageFetcher,
        mut group: GroupWrite,
    ) -> Written {
        let mut totals = RunTotals::default();
        let mut streamed = 0;
        let more = group
            .pages
            .last_mut()
            .and_then(|(page, _)| page.more.take());
        let pages: Vec<(&Page, Option<DateTime<Utc>>)> = group
            .pages
            .iter()
            .map(|(page, from)| (page, *from))
            .collect();
        let written = async {
            let Some(more) = more else {
                return self
                    .write(spec, lease, &pages, group.checkpoint, &mut totals)
                    .await;
            };
            self.write(spec, lease, &pages, None, &mut totals).await?;
            let window_from = pages.last().and_then(|(_, from)| *from);
            let checkpoint = group.checkpoint;
            streamed = self
                .write_rest(lease, &fetcher, more, window_from, checkpoint, &mut totals)
                .await?;
            Ok(())
        }
        .await;
        Written {
            totals,
            pages: written.map(|()| group.lanes),
            streamed,
        }
    }

    /// What the fetches of `run` need, owned.
    fn fetcher(&self, spec: &StreamSpec, run: &LaneRun<'_>) -> PageFetcher {
        PageFetcher {
            marketplace: self.marketplace.clone(),
            pool: self.pool.clone(),
            account_id: self.account_id,
            account: self.account.name.clone(),
            kind: self.account.marketplace,
            stream: spec.name,
            run_id: run.run_id,
            settings: self.settings.clone(),
            shutdown: run.shutdown.clone(),
        }
    }

    /// Writes consecutive pages (each with the start of the window it answered) and the checkpoint they
    /// justify, in transactions of at most [`WRITE_BATCH_ORDERS`] orders: one for pages that fit
    /// together, parts of a larger page each in its own. The checkpoint goes with the last.
    async fn write(
        &self,
        spec: &StreamSpec,
        lease: &Lease,
        pages: &[(&Page, Option<DateTime<Utc>>)],
        checkpoint: Option<(&str, DateTime<Utc>)>,
        totals: &mut RunTotals,
    ) -> Result<(), PollError> {
        // An empty page is written too: it carries the checkpoint and renews the lease.
        let mut parts = Vec::new();
        let mut part = Vec::new();
        let mut room = WRITE_BATCH_ORDERS;
        for &(page, window_from) in pages {
            let mut rest = page.orders.as_slice();
            loop {
                let (now, later) = rest.split_at(rest.len().min(room));
                part.push(PageOrders {
                    orders: now,
                    window_from,
                });
                room -= now.len();
                rest = later;
                if rest.is_empty() {
                    break;
                }
                parts.push(std::mem::take(&mut part));
                room = WRITE_BATCH_ORDERS;
            }
        }
        parts.push(part);
        let count = parts.len();
        for (i, part) in parts.iter().enumerate() {
            let checkpoint = checkpoint.filter(|_| i + 1 == count);
            self.write_part(spec.name, lease, part, checkpoint, totals)
                .await?;
        }
        for (page, _) in pages {
            totals.pages += 1;
            totals.requests += page.requests;
        }
        Ok(())
    }

    /// Writes the rest of a page whose answer is still being read ([`Page::more`]), a transaction per
    /// batch as it arrives, the checkpoint with the last. A failure of the answer fails the run: the
    /// orders written so far stay (they are real), the cursor does not move. Returns how many orders
    /// the rest held.
    async fn write_rest(
        &self,
        lease: &Lease,
        fetcher: &PageFetcher,
        mut more: MoreOrders,
        window_from: Option<DateTime<Utc>>,
        checkpoint: Option<(&str, DateTime<Utc>)>,
        totals: &mut RunTotals,
    ) -> Result<usize, PollError> {
        let mut orders = 0;
        loop {
            let batch = match more.next().await {
                Ok(batch) => batch,
                Err(error) => return Err(fetcher.failed(error).await),
            };
            orders += batch.orders.len();
            let part = [PageOrders {
                orders: &batch.orders,
                window_from,
            }];
            let checkpoint = checkpoint.filter(|_| batch.last);
            self.write_part(fetcher.stream, lease, &part, checkpoint, totals)
                .await?;
            if batch.last {
                return Ok(orders);
            }
        }
    }

    /// Writes orders in one transaction, with the checkpoint they justify.
    async fn write_part(
        &self,
        stream: &str,
        lease: &Lease,
        pages: &[PageOrders<'_>],
        checkpoint: Option<(&str, DateTime<Utc>)>,
        totals: &mut RunTotals,
    ) -> Result<(), PollError> {
        let counts = orders::write_pages(
            &self.pool,
            PagesWrite {
                account_id: self.account_id,
                marketplace: self.account.marketplace,
                pages,
                checkpoint,
                lease: Some(lease),
            },
        )
        .await
        .map_err(|source| PollError::Store {
            account: self.account.name.clone(),
            stream: stream.to_owned(),
            source,
        })?;
        totals.counts += counts;
        Ok(())
    }
}

/// Pages to write together (from [`coalesce`]), with the start of the window each answered and the
/// checkpoint of the last lane they complete.
struct GroupWrite {
    pages: Vec<(Page, Option<DateTime<Utc>>)>,
    /// Orders of the pages that a write under way holds too, taken out of their pages (with their
    /// page's window start): they are written once that write has committed.
    deferred: Vec<(Vec<Order>, Option<DateTime<Utc>>)>,
    /// The lane of each page, and whether the page is its lane's last.
    lanes: Vec<(usize, bool)>,
    checkpoint: Option<(&'static str, DateTime<Utc>)>,
}

impl GroupWrite {
    fn new(run: &LaneRun<'_>, lanes: &[Lane], group: Vec<(usize, Page)>) -> GroupWrite {
        // Everything before the last lane that ends within the group is written in this write or
        // was committed before.
        let checkpoint = group
            .iter()
            .filter(|(_, page)| page.next.is_none())
            .filter_map(|(lane, _)| lanes[*lane].checkpoint)
            .next_back()
            .filter(|_| run.mode == RunMode::Live)
            .map(|at| (run.spec.name, at));
        let lanes_of = group
            .iter()
            .map(|(lane, page)| (*lane, page.next.is_none()))
            .collect();
        let pages = group
            .into_iter()
            .map(|(lane, page)| {
                let window_from = lanes[lane].window.then_some(lanes[lane].from);
                (page, window_from)
            })
            .collect();
        GroupWrite {
            pages,
            deferred: Vec::new(),
            lanes: lanes_of,
            checkpoint,
        }
    }

    /// Takes the orders that `under_way` holds out of the pages, to be written after it commits:
    /// written beside it, the two transactions would wait on each other's rows.
    fn defer_orders_of(&mut self, under_way: &UnderWay) {
        for (page, window_from) in &mut self.pages {
            if !page.orders.iter().any(|order| under_way.holds(order)) {
                continue;
            }
            let (later, now) = std::mem::take(&mut page.orders)
                .into_iter()
                .partition(|order| under_way.holds(order));
            page.orders = now;
            self.deferred.push((later, *window_from));
        }
    }

    /// Whether the group is written in one transaction: no page still being read, and not more
    /// orders than [`WRITE_BATCH_ORDERS`].
    fn fits_one(&self) -> bool {
        let orders: usize = self.pages.iter().map(|(page, _)| page.orders.len()).sum();
        orders <= WRITE_BATCH_ORDERS && self.pages.iter().all(|(page, _)| page.more.is_none())
    }

    /// What a group written beside this one must keep clear of.
    fn beside(&self) -> Beside {
        let deferred = self.deferred.iter().flat_map(|(orders, _)| orders);
        Beside {
            orders: self
                .pages
                .iter()
                .flat_map(|(page, _)| &page.orders)
                .chain(deferred.clone())
                .map(|o| o.external_id.clone())
                .collect(),
            payload: self
                .pages
                .iter()
                .map(|(page, _)| payload_bytes(page))
                .sum::<usize>()
                + deferred.map(order_payload_bytes).sum::<usize>(),
        }
    }
}

/// A write under way, as a group written beside it sees it: its orders and their payload's size.
struct Beside {
    orders: HashSet<String>,
    payload: usize,
}

/// The writes under way, in write order: `None` for a write in parts, which nothing goes beside.
#[derive(Default)]
struct UnderWay(VecDeque<Option<Beside>>);

impl UnderWay {
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn push(&mut self, write: Option<Beside>) {
        self.0.push_back(write);
    }

    /// The oldest write has committed.
    fn pop(&mut self) {
        self.0.pop_front();
    }

    /// Whether `page` may join a group of `orders` orders and `payload` bytes (the page's own
    /// included) written beside these writes: fewer than [`WRITES_UNDER_WAY`] are under way, each
    /// in one transaction; the group fits one transaction too (the parts of a larger one would
    /// commit before the writes under way), and the page is not being read still; and all of them
    /// together hold no more than [`WRITE_BATCH_ORDERS`] orders or [`BESIDE_PAYLOAD_BYTES`].
    fn admits(&self, page: &Page, orders: usize, payload: usize) -> bool {
        let mut held = (0, 0);
        for write in &self.0 {
            let Some(write) = write else {
                return false;
            };
            held = (held.0 + write.orders.len(), held.1 + write.payload);
        }
        self.0.len() < WRITES_UNDER_WAY
            && orders <= WRITE_BATCH_ORDERS
            && page.more.is_none()
            && (held.0 + orders <= WRITE_BATCH_ORDERS || held.1 + payload <= BESIDE_PAYLOAD_BYTES)
    }

    /// Whether a write under way holds `order`.
    fn holds(&self, order: &Order) -> bool {
        self.0
            .iter()
            .flatten()
            .any(|write| write.orders.contains(&order.external_id))
    }
}

/// The size of a page's raw payloads: its orders', their lines' and their packages' JSON text, most
/// of what a write of the page holds.
fn payload_bytes(page: &Page) -> usize {
    page.orders.iter().map(order_payload_bytes).sum()
}

/// The size of an order's raw payloads: its own, its lines' and its packages'.
fn order_payload_bytes(order: &Order) -> usize {
    order.raw.json().len()
        + order
            .lines
            .iter()
            .map(|l| l.raw.json().len())
            .sum::<usize>()
        + order
            .packages
            .iter()
            .map(|p| p.raw.json().len())
            .sum::<usize>()
}

/// A finished write: what it committed (a write in parts may fail after some), and the lanes of its
/// pages (with whether each is its lane's last) for the progress report, or its error.
struct Written {
    totals: RunTotals,
    pages: Result<Vec<(usize, bool)>, PollError>,
    /// Orders of a streamed answer after its first batch (its page, the last of the group, counted
    /// only that batch): they count in its lane's size.
    streamed: usize,
}

/// The writes of a run whose transaction has not begun, and a signal each time one has. A write goes
/// beside others only once each of them holds its connection: one that took the last connection
/// while a write before it still waited for one would wait for that write to commit, and that write
/// for its connection, until the pool's timeout failed the run.
#[derive(Default)]
struct Beginning {
    count: AtomicUsize,
    begun: Notify,
}

/// Whether the pool has a connection for a write beside another without waiting: an idle one, or
/// room to open one. Otherwise the write waits for the one before it (other runs and the outbox
/// share the pool, and a write that waited for a connection could time out).
fn connection_free(pool: &PgPool) -> bool {
    pool.num_idle() > 0 || pool.size() < pool.options().get_max_connections()
}

/// What a run covers: `[from, to)`, and [`PageRequest::changed_since`].
struct RunPlan {
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    changed_since: Option<DateTime<Utc>>,
}

/// What the streams of one poll share.
struct Poll<'a> {
    mode: RunMode,
    /// The database's time when a live poll started: a re-read of open orders leaves out the orders
    /// stored since (the poll's other streams have just read them).
    started: Option<DateTime<Utc>>,
    shutdown: &'a CancellationToken,
    progress: &'a dyn Progress,
}

/// What [`AccountPoller::run_lanes`] needs to know about the run.
struct LaneRun<'a> {
    spec: &'a StreamSpec,
    mode: RunMode,
    lease: &'a Lease,
    run_id: i64,
    /// `[from, to)` of the whole run.
    range: (DateTime<Utc>, DateTime<Utc>),
    /// [`PageRequest::changed_since`] of every request of the run.
    changed_since: Option<DateTime<Utc>>,
    shutdown: &'a CancellationToken,
    progress: &'a dyn Progress,
}

/// A run's pages on their way to being written: the lanes planned so far, the fetches in flight (each
/// a task of its own: the request, its retries and the parsing of the answer, so that parsing runs on
/// another core while the run's task drives the write; dropping this stops them), and the pages
/// fetched and not yet written.
struct Fetches {
    planner: LanePlanner,
    lanes: Vec<Lane>,
    in_flight: JoinSet<(Slot, Result<Option<Page>, PollError>)>,
    /// The slots of the fetches in flight.
    asked: HashSet<Slot>,
    ready: HashMap<Slot, Result<Option<Page>, PollError>>,
    /// Pages asked for ahead that turned out useless while in flight: dropped when they arrive.
    discarded: HashSet<Slot>,
    fetcher: PageFetcher,
    page_size: u32,
    /// [`PageRequest::stored`] of every request of the run.
    stored: Option<Arc<dyn StoredOrders>>,
}

impl Fetches {
    fn new(
        planner: LanePlanner,
        fetcher: PageFetcher,
        page_size: u32,
        stored: Option<Arc<dyn StoredOrders>>,
    ) -> Fetches {
        Fetches {
            planner,
            lanes: Vec::new(),
            in_flight: JoinSet::new(),
            asked: HashSet::new(),
            ready: HashMap::new(),
            discarded: HashSet::new(),
            fetcher,
            page_size,
            stored,
        }
    }

    /// Plans lanes and sends requests while there is room (up to [`FETCH_AHEAD`] in flight, within
    /// the places the run may hold ahead of its writes, [`Fetches::held_room`]; the lane being written
    /// has room of its own, [`Fetches::own_room`]), and always for the page to write next, `at`; with
    /// `new_lanes`, planning lanes as needed, else only asking for pages of lanes planned already. A
    /// fetched page whose answer is still being read ([`Page::more`]) fills the room: its reader holds
    /// a batch more.
    fn request_ahead(
        &mut self,
        changed_since: Option<DateTime<Utc>>,
        (lane, index): (usize, usize),
        new_lanes: bool,
    ) {
        let streaming = self
            .ready
            .values()
            .any(|page| matches!(page, Ok(Some(page)) if page.more.is_some()));
        loop {
            let room = if streaming { 0 } else { self.held_room() };
            let within = self.in_flight.len() < FETCH_AHEAD
                && self.in_flight.len() + self.ready.len() < room;
            let next_unasked = self
                .lanes
                .get(lane)
                .is_none_or(|l| l.requested_confirmed <= index);
            if !(within || next_unasked || self.own_room(lane, room)) {
                break;
            }
            let ahead = within && self.room_ahead(lane);
            let Some(slot) = self.next_slot(lane, new_lanes, ahead) else {
                break;
            };
            let request = self.lanes[slot.lane].request(
                slot.token.clone(),
                self.page_size,
                changed_since,
                self.stored.clone(),
            );
            self.asked.insert(slot.clone());
            let fetcher = self.fetcher.clone();
            self.in_flight.spawn(
                async move {
                    let page = fetcher.fetch(&request).await;
                    (slot, page)
                }
                .instrument(tracing::Span::current()),
            );
        }
    }

    /// Whether pages of lane `lane` can be guessed ahead: `None` while that is not known (its first
    /// page has not answered).
    fn guessable(&self, lane: usize) -> Option<bool> {
        let lane = self.lanes.get(lane)?;
        match lane.confirmed.last() {
            _ if lane.ended => Some(false),
            Some(Some(last)) => Some(
                self.fetcher
                    .marketplace
                    .page_after(self.fetcher.stream, last)
                    .is_some(),
            ),
            _ => None,
        }
    }

    /// The places (pages in flight or fetched and not written) that lanes matching `which` hold.
    fn places(&self, which: impl Fn(usize) -> bool) -> usize {
        self.asked
            .iter()
            .chain(self.ready.keys())
            .filter(|slot| which(slot.lane))
            .count()
    }

    /// Whether the lanes after `writing` may take another place: while they hold fewer than
    /// [`FETCH_AHEAD`], or than [`LANES_AHEAD_PLACES`] where pages of that lane can be guessed ahead
    /// (or, before its first page has answered, the lane before had several pages).
    fn room_ahead(&self, writing: usize) -> bool {
        let guessable = self.guessable(writing).unwrap_or_else(|| {
            writing
                .checked_sub(1)
                .and_then(|previous| self.lanes.get(previous))
                .is_some_and(|previous| previous.confirmed.len() > 1)
        });
        let allowed = if guessable {
            LANES_AHEAD_PLACES
        } else {
            FETCH_AHEAD
        };
        self.places(|lane| lane > writing) < allowed
    }

    /// Whether the lane being written, `writing`, may send another request whatever the lanes after
    /// it hold: its pages can be guessed ahead, fewer than [`FETCH_AHEAD`] requests are in flight, and
    /// it holds fewer of the run's `room` than the lanes after it leave it. Pages of later lanes
    /// fetched before it was known to be long would otherwise leave it one request at a time.
    fn own_room(&self, writing: usize, room: usize) -> bool {
        self.guessable(writing) == Some(true)
            && self.in_flight.len() < FETCH_AHEAD
            && self.places(|lane| lane == writing) < room.saturating_sub(LANES_AHEAD_PLACES)
    }

    /// How many places the run may hold, by the average page examined so far: up to [`FETCH_AHEAD`]
    /// pages within [`FETCH_AHEAD_ORDERS`] orders or, where that allows more, up to [`HELD_AHEAD`]
    /// pages within [`FETCH_AHEAD_PAYLOAD_BYTES`] of payload.
    fn held_room(&self) -> usize {
        let (pages, orders, payload) = self.lanes.iter().fold((0, 0, 0), |(p, o, b), lane| {
            (p + lane.checked, o + lane.orders, b + lane.payload)
        });
        let per_page = |total: usize| total.checked_div(pages).unwrap_or(0).max(1);
        (FETCH_AHEAD_ORDERS / per_page(orders))
            .min(FETCH_AHEAD)
            .max((FETCH_AHEAD_PAYLOAD_BYTES / per_page(payload)).min(HELD_AHEAD))
    }

    /// The next page worth asking for, planning a new lane (when `new_lanes`) if that is what comes
    /// next; with `ahead` false, only a page of the lane being written, planning it when it is not yet
    /// (whatever holds the room ahead, pages asked for past a lane's end say: the run needs it).
    fn next_slot(&mut self, writing: usize, new_lanes: bool, ahead: bool) -> Option<Slot> {
        let (marketplace, stream) = (&self.fetcher.marketplace, self.fetcher.stream);
        let previous = writing
            .checked_sub(1)
            .and_then(|previous| self.lanes.get(previous));
        let shown_before = previous.map_or(0, |previous| previous.checked.min(FETCH_AHEAD));
        let pages_before = previous
            .filter(|previous| previous.ended)
            .map(|previous| previous.confirmed.len());
        for (i, lane) in self.lanes.iter_mut().enumerate().skip(writing) {
            if i > writing && !ahead {
                return None;
            }
            if let Some(token) = lane.confirmed.get(lane.requested_confirmed).cloned() {
                lane.requested_confirmed += 1;
                return Some(Slot { lane: i, token });
            }
            // Guess further pages only of the lane being written, once it is known to have a second, and
            // no more pages ahead than the lane, or the lane before it, has shown so far (a short lane
            // wastes few requests) nor than [`FETCH_AHEAD`] (guesses answered ahead of an earlier page
            // no longer hold requests, and all of them are wasted past the lane's end), and past as
            // many pages as the lane before it had only as fast as pages past them turn out to exist.
            if i == writing
                && !lane.ended
                && lane.confirmed.len() > 1
                && lane.speculated.len() < lane.checked.max(shown_before).min(FETCH_AHEAD)
                && lane.may_guess_past(pages_before)
            {
                let guess = lane
                    .speculated
                    .last()
                    .or_else(|| lane.confirmed.last().and_then(Option::as_ref))
                    .and_then(|last| marketplace.page_after(stream, last));
                if let Some(token) = guess {
                    lane.speculated.push(token.clone());
                    return Some(Slot {
                        lane: i,
                        token: Some(token),
                    });
                }
            }
        }
        if !new_lanes || (!ahead && writing < self.lanes.len()) {
            return None;
        }
        if self.lanes.len() > writing + FETCH_AHEAD {
            return None;
        }
        let lane = self.planner.next_lane(self.lanes.last())?;
        self.lanes.push(lane);
        self.lanes.last_mut().unwrap().requested_confirmed = 1;
        Some(Slot {
            lane: self.lanes.len() - 1,
            token: None,
        })
    }

    /// The fetched page at lane `lane`, `index`-th confirmed token, when it has arrived.
    fn take(&mut self, lane: usize, index: usize) -> Option<Result<Option<Page>, PollError>> {
        self.ready
            .remove(&confirmed_slot(&self.lanes, (lane, index))?)
    }

    /// The fetched page at lane `lane`, `index`-th confirmed token, left where it is.
    fn peek(&self, lane: usize, index: usize) -> Option<&Result<Option<Page>, PollError>> {
        self.ready.get(&confirmed_slot(&self.lanes, (lane, index))?)
    }

    /// Waits for a fetch in flight and takes its page in; `false` when the runtime cancelled it (it
    /// is shutting down). Some fetch is always in flight when the page to write next has not arrived.
    async fn take_in_one(&mut self) -> bool {
        let Some(joined) = self.in_flight.join_next().await else {
            unreachable!("the page to write next is always requested");
        };
        let Some((slot, result)) = fetched(joined) else {
            return false;
        };
        self.asked.remove(&slot);
        self.arrived(slot, result);
        true
    }

    /// Takes in a fetched page: keeps it for writing, and learns from the lane's pages, in order,
    /// which page follows; pages asked for ahead that turn out useless are dropped.
    fn arrived(&mut self, slot: Slot, result: Result<Option<Page>, PollError>) {
        let (ready, discarded) = (&mut self.ready, &mut self.discarded);
        if discarded.remove(&slot) {
            return;
        }
        let index = slot.lane;
        ready.insert(slot, result);
        let lane = &mut self.lanes[index];
        while lane.checked < lane.confirmed.len() && !lane.ended {
            let key = Slot {
                lane: index,
                token: lane.confirmed[lane.checked].clone(),
            };
            let Some(result) = ready.get(&key) else {
                break;
            };
            lane.checked += 1;
            let next = match result {
                Ok(Some(page)) => {
                    lane.orders += page.orders.len();
                    lane.payload += payload_bytes(page);
                    lane.reading |= page.more.is_some();
                    page.next.clone()
                }
                // A failure or an interruption: the writer stops there.
                _ => None,
            };
            // A page naming one of the lane's pages already read as its next would have them read
            // for ever: it fails, and the writer stops there.
            let next = match next {
                Some(token) if lane.confirmed.contains(&Some(token.clone())) => {
                    let looping = self.fetcher.looping(lane, key.token.as_deref(), &token);
                    ready.insert(key, Err(looping));
                    None
                }
                next => next,
            };
            match next {
                Some(next) if lane.speculated.first() == Some(&next) => {
                    lane.speculated.remove(0);
                    lane.confirmed.push(Some(next));
                    lane.requested_confirmed += 1;
                }
                next => {
                    for token in lane.speculated.drain(..) {
                        let key = Slot {
                            lane: index,
                            token: Some(token),
                        };
                        if ready.remove(&key).is_none() {
                            discarded.insert(key);
                        }
                    }
                    match next {
                        Some(next) => lane.confirmed.push(Some(next)),
                        None => lane.ended = true,
                    }
                }
            }
        }
    }
}

/// What fetching a page of a run needs, owned, so that each fetch can be a task of its own.
#[derive(Clone)]
struct PageFetcher {
    marketplace: Arc<dyn Marketplace>,
    pool: PgPool,
    account_id: i64,
    account: String,
    kind: MarketplaceKind,
    stream: &'static str,
    run_id: i64,
    settings: PollSettings,
    shutdown: CancellationToken,
}

/// [`StoredOrders`] of one account, read from the store. A failed read is logged and answered with
/// nothing stored: the adapter then completes every order from the API.
#[derive(Debug)]
struct AccountOrders {
    pool: PgPool,
    account_id: i64,
}

#[async_trait]
impl StoredOrders for AccountOrders {
    async fn raw(&self, external_ids: &[String]) -> HashMap<String, String> {
        orders::raw_of(&self.pool, self.account_id, external_ids)
            .await
            .unwrap_or_else(|error| {
                tracing::warn!(%error, "could not read the stored orders; reading them all again");
                HashMap::new()
            })
    }
}

/// The wait before the next try of a page: the backoff's delay (`None` once its retries are spent),
/// at least the API's `Retry-After`. A `Retry-After` never adds a try: a page the API answers with one
/// every time would otherwise hold the run, and with it the account's polling, for ever.
fn retry_delay(error: &MarketplaceError, backoff: Option<Duration>) -> Option<Duration> {
    match error.disposition() {
        Disposition::Retry {
            retry_after: Some(after),
        } => backoff.map(|delay| delay.max(after)),
        _ => backoff,
    }
}

impl PageFetcher {
    /// Fetches a page, retrying transient failures. `Ok(None)` when shutdown interrupted it. A malformed
    /// answer is recorded with its raw body before the error is returned.
    async fn fetch(&self, request: &PageRequest) -> Result<Option<Page>, PollError> {
        let stream = self.stream;
        let backoff = ExponentialBuilder::default()
            .with_min_delay(self.settings.min_backoff)
            .with_max_delay(self.settings.max_backoff)
            .with_max_times(self.settings.max_retries)
            .with_jitter();
        let attempt = || self.marketplace.fetch_page(stream, request);
        let retrying = attempt
            .retry(backoff)
            .sleep(tokio::time::sleep)
            .when(|e: &MarketplaceError| matches!(e.disposition(), Disposition::Retry { .. }))
            .adjust(retry_delay)
            .notify(|e: &MarketplaceError, delay| {
                metrics::poll_retry(&self.account, self.kind, stream);
                tracing::warn!(stream, error = %e, retry_in_ms = delay.as_millis() as u64, "transient failure; retrying");
            });
        let result = tokio::select! {
            result = retrying => result,
            () = self.shutdown.cancelled() => return Ok(None),
        };
        match result {
            Ok(page) => Ok(Some(page)),
            Err(error) => Err(self.failed(error).await),
        }
    }

    /// The run's error for a page of `lane` (its `token`) that names `next`, a page of the lane
    /// already read, as its next.
    fn looping(&self, lane: &Lane, token: Option<&str>, next: &str) -> PollError {
        PollError::Marketplace {
            account: self.account.clone(),
            stream: self.stream.to_owned(),
            source: MarketplaceError::Malformed {
                what: format!(
                    "the pages of {}–{}",
                    lane.from.to_rfc3339(),
                    lane.to.to_rfc3339()
                ),
                reason: format!(
                    "page `{}` names page `{next}` (already read) as its next: its pages loop",
                    token.unwrap_or("the first")
                ),
                raw_body: String::new(),
            },
        }
    }

    /// The run's error for a failed page; a malformed answer is recorded with its raw body first.
    async fn failed(&self, error: MarketplaceError) -> PollError {
        if let MarketplaceError::Malformed { what, raw_body, .. } = &error
            && let Err(e) = runs::record_payload_error(
                &self.pool,
                self.account_id,
                self.stream,
                Some(self.run_id),
                what,
                &error.to_string(),
                raw_body,
            )
            .await
        {
            tracing::error!(error = %e, "could not record the malformed payload");
        }
        PollError::Marketplace {
            account: self.account.clone(),
            stream: self.stream.to_owned(),
            source: error,
        }
    }
}

/// A fetch task's result; `None` when the runtime cancelled it (it is shutting down). A panic in the
/// task is resumed here, as if the fetch had run in the run's own task.
fn fetched<T>(joined: Result<T, tokio::task::JoinError>) -> Option<T> {
    match joined {
        Ok(result) => Some(result),
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(_) => None,
    }
}

/// One page request of a run: the lane it belongs to and its page token.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Slot {
    lane: usize,
    token: Option<String>,
}

/// A unit of a run whose pages follow one another: a window, or a batch of ids to re-read.
#[derive(Debug)]
struct Lane {
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    order_ids: Vec<String>,
    /// Whether the lane is a window (its start is recorded with the orders it returns).
    window: bool,
    /// The cursor value its last page justifies, if it justifies one.
    checkpoint: Option<DateTime<Utc>>,
    /// The tokens of pages known to belong to the lane, in order (`None`: the first page).
    confirmed: Vec<Option<String>>,
    /// How many of `confirmed` have been asked for.
    requested_confirmed: usize,
    /// How many of `confirmed` have had their answer examined.
    checked: usize,
    /// Tokens asked for ahead of confirmation ([`Marketplace::page_after`]), in order.
    speculated: Vec<String>,
    /// Whether the lane's last page is known (or an answer ended what can be known of it).
    ended: bool,
    /// Orders in the examined pages: the window's size, for adaptive windows. A streamed answer counts
    /// its first batch here when it is examined, the rest once it is written ([`Written::streamed`]).
    orders: usize,
    /// Whether an examined page's answer is still being read, so `orders` is not the window's size yet.
    reading: bool,
    /// The raw payload of the examined pages' orders (of a streamed answer, its first batch).
    payload: usize,
}

impl Lane {
    fn new(
        (from, to): (DateTime<Utc>, DateTime<Utc>),
        order_ids: Vec<String>,
        window: bool,
        checkpoint: Option<DateTime<Utc>>,
    ) -> Lane {
        Lane {
            from,
            to,
            order_ids,
            window,
            checkpoint,
            confirmed: vec![None],
            requested_confirmed: 0,
            checked: 0,
            speculated: Vec::new(),
            ended: false,
            orders: 0,
            reading: false,
            payload: 0,
        }
    }

    fn request(
        &self,
        page: Option<String>,
        page_size: u32,
        changed_since: Option<DateTime<Utc>>,
        stored: Option<Arc<dyn StoredOrders>>,
    ) -> PageRequest {
        PageRequest {
            from: self.from,
            to: self.to,
            page,
            page_size,
            order_ids: self.order_ids.clone(),
            changed_since,
            stored,
        }
    }

    /// Whether the next page may be guessed, given `pages_before`, the pages of the lane before it
    /// when that one is known (windows of one length hold about as many orders): up to as many pages
    /// freely; past them, one page, then twice as many as have turned out to exist there. A lane as
    /// long as the one before so wastes at most one guess past its end, and a longer one gets its
    /// requests in flight back as fast as its pages past that length show up.
    fn may_guess_past(&self, pages_before: Option<usize>) -> bool {
        let next = self.confirmed.len() + self.speculated.len();
        pages_before.is_none_or(|before| {
            next < before || next - before <= 2 * self.confirmed.len().saturating_sub(before)
        })
    }
}

/// Where a run's lanes come from.
enum LanePlanner {
    /// Windows over `[next_start, to)`, each `len` long; with `adaptive`, a window's length follows the
    /// previous window's order count, so it is planned only once that window's pages are all in.
    Windows {
        next_start: DateTime<Utc>,
        to: DateTime<Utc>,
        len: TimeDelta,
        max_len: TimeDelta,
        min_len: TimeDelta,
        adaptive: bool,
        page_size: usize,
    },
    /// Batches of ids to re-read; the last one's end moves the cursor to `to`.
    Batches {
        batches: VecDeque<Vec<String>>,
        to: DateTime<Utc>,
    },
}

impl LanePlanner {
    /// Whether windows are sized by the answers to the previous ones.
    fn is_adaptive(&self) -> bool {
        matches!(self, LanePlanner::Windows { adaptive: true, .. })
    }

    fn next_lane(&mut self, previous: Option<&Lane>) -> Option<Lane> {
        match self {
            LanePlanner::Windows {
                next_start,
                to,
                len,
                max_len,
                min_len,
                adaptive,
                page_size,
            } => {
                if *next_start >= *to {
                    return None;
                }
                if *adaptive && let Some(previous) = previous {
                    if !previous.ended || previous.reading {
                        return None;
                    }
                    *len = if previous.orders > *page_size {
                        (*len / 2).max(*min_len)
                    } else if previous.orders < *page_size / 4 {
                        (*len * 2).min(*max_len)
                    } else {
                        *len
                    };
                }
                let start = *next_start;
                let end = (start + *len).min(*to);
                *next_start = end;
                Some(Lane::new((start, end), Vec::new(), true, Some(end)))
            }
            LanePlanner::Batches { batches, to } => {
                let ids = batches.pop_front()?;
                let last = batches.is_empty();
                Some(Lane::new((*to, *to), ids, false, last.then_some(*to)))
            }
        }
    }
}

/// The page to write next (lane and index) and the pages after it, in write order, that are ready to
/// be written with it: a run of fetched pages up to [`WRITE_BATCH_ORDERS`] orders (a single page may
/// hold more) that `admit` takes (given the group's orders and payload size with the page), ending before the
/// first page that is not in, failed or was interrupted, which the caller meets next on its own, or
/// that holds an order already in the run (written after it, the order's history keeps the state in
/// between), or with a page whose answer is still being read ([`Page::more`]). Returns the pages with
/// their lanes, and where the page after them is.
fn coalesce(
    lanes: &[Lane],
    ready: &mut HashMap<Slot, Result<Option<Page>, PollError>>,
    mut at: (usize, usize),
    first: Page,
    admit: impl Fn(&Page, usize, usize) -> bool,
) -> (Vec<(usize, Page)>, (usize, usize)) {
    let mut orders = first.orders.len();
    let mut payload = payload_bytes(&first);
    let mut ids: HashSet<String> = first.orders.iter().map(|o| o.external_id.clone()).collect();
    let mut group = Vec::new();
    let mut page = first;
    loop {
        let lane = at.0;
        at = following(at, &page);
        // The rest of a page still being read is written after it, so nothing can follow it here.
        let streamed = page.more.is_some();
        group.push((lane, page));
        if streamed {
            return (group, at);
        }
        let Some(slot) = confirmed_slot(lanes, at) else {
            return (group, at);
        };
        match ready.remove(&slot) {
            Some(Ok(Some(next)))
                if orders + next.orders.len() <= WRITE_BATCH_ORDERS
                    && admit(
                        &next,
                        orders + next.orders.len(),
                        payload + payload_bytes(&next),
                    )
                    && !next.orders.iter().any(|o| ids.contains(&o.external_id)) =>
            {
                orders += next.orders.len();
                payload += payload_bytes(&next);
                ids.extend(next.orders.iter().map(|o| o.external_id.clone()));
                page = next;
            }
            Some(other) => {
                ready.insert(slot, other);
                return (group, at);
            }
            None => return (group, at),
        }
    }
}

/// The slot of lane `lane`'s `index`-th confirmed page, once that page is known.
fn confirmed_slot(lanes: &[Lane], (lane, index): (usize, usize)) -> Option<Slot> {
    let token = lanes.get(lane)?.confirmed.get(index)?.clone();
    Some(Slot { lane, token })
}

/// Where the page after `page`, written at `(lane, index)`, is: the lane's next page, or the next lane's
/// first after its last.
fn following((lane, index): (usize, usize), page: &Page) -> (usize, usize) {
    if page.next.is_none() {
        (lane + 1, 0)
    } else {
        (lane, index + 1)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn rate_limited(retry_after: Option<Duration>) -> MarketplaceError {
        MarketplaceError::Transient {
            what: "GET orders".into(),
            detail: "HTTP 429: slow down".into(),
            retry_after,
            ambiguous: false,
        }
    }

    /// A marketplace the tests below never ask for a page.
    struct Unasked;

    #[async_trait]
    impl Marketplace for Unasked {
        fn streams(&self) -> Vec<StreamSpec> {
            Vec::new()
        }

        async fn fetch_page(
            &self,
            _stream: &str,
            _request: &PageRequest,
        ) -> Result<Page, MarketplaceError> {
            panic!("no page is asked for")
        }
    }

    /// The fetches of a run re-reading three batches of ids, none planned yet.
    fn batches_run() -> Fetches {
        let fetcher = PageFetcher {
            marketplace: Arc::new(Unasked),
            pool: PgPool::connect_lazy("postgres://nobody@127.0.0.1:1/none").unwrap(),
            account_id: 1,
            account: "a".to_owned(),
            kind: MarketplaceKind::C2c,
            stream: "status",
            run_id: 1,
            settings: PollSettings::default(),
            shutdown: CancellationToken::new(),
        };
        let batches = [["a"], ["b"], ["c"]].map(|ids| ids.map(String::from).to_vec());
        let planner = LanePlanner::Batches {
            batches: batches.into(),
            to: Utc::now(),
        };
        Fetches::new(planner, fetcher, 50, None)
    }

    /// Without room ahead (pages asked for past a lane's end may still fill it), the lane to write
    /// next is still planned; only lanes after it wait. When it was not, a run whose planned lanes
    /// were all written ended there, reporting success with the rest of its range unread.
    #[tokio::test]
    async fn the_lane_to_write_next_is_planned_without_room_ahead() {
        let mut fetches = batches_run();
        let first = fetches.next_slot(0, true, false).expect("the first lane");
        assert_eq!((first.lane, first.token), (0, None));
        assert!(fetches.next_slot(0, true, false).is_none(), "a lane ahead");
        let second = fetches.next_slot(1, true, false).expect("the second lane");
        assert_eq!((second.lane, second.token), (1, None));
        assert!(
            fetches.next_slot(2, false, false).is_none(),
            "new lanes refused"
        );
        assert_eq!(fetches.lanes.len(), 2);
    }

    #[test]
    fn retry_after_lengthens_a_backoff_delay_but_adds_no_try() {
        let after = Some(Duration::from_secs(5));
        let one = Some(Duration::from_secs(1));
        let ten = Some(Duration::from_secs(10));
        assert_eq!(retry_delay(&rate_limited(after), one), after);
        assert_eq!(retry_delay(&rate_limited(after), ten), ten);
        assert_eq!(retry_delay(&rate_limited(None), one), one);
        assert_eq!(retry_delay(&rate_limited(after), None), None);
    }

    #[tokio::test]
    async fn a_page_always_answered_with_retry_after_is_given_up() {
        // The API asks for a minute every time; were it retried without end, the fetch would stop at
        // the 100th try, succeeding.
        let tries = AtomicUsize::new(0);
        let fetch = || async {
            if tries.fetch_add(1, Ordering::SeqCst) == 99 {
                return Ok(());
            }
            Err(rate_limited(Some(Duration::from_secs(60))))
        };
        // The waits are recorded, not slept.
        let waits = Arc::new(std::sync::Mutex::new(Vec::new()));
        let sleeper = {
            let waits = waits.clone();
            move |wait: Duration| {
                waits.lock().unwrap().push(wait);
                std::future::ready(())
            }
        };
        let settings = PollSettings::default();
        let outcome = fetch
            .retry(
                ExponentialBuilder::default()
                    .with_min_delay(settings.min_backoff)
                    .with_max_delay(settings.max_backoff)
                    .with_max_times(settings.max_retries),
            )
            .sleep(sleeper)
            .adjust(retry_delay)
            .await;
        assert!(outcome.is_err());
        assert_eq!(tries.load(Ordering::SeqCst), settings.max_retries + 1);
        let waits = waits.lock().unwrap();
        assert_eq!(waits.len(), settings.max_retries);
        assert!(
            waits.iter().all(|&wait| wait >= Duration::from_secs(60)),
            "{waits:?}"
        );
    }
}
