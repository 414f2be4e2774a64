//! The outbox worker of one account: claims due transitions, sends them through the account's adapter
//! (whose HTTP client, and so rate limit, it shares with the account's poller), records every attempt and
//! every outcome, and re-reads the order after a success so the database shows the marketplace's new state.
//!
//! [`OutboxWorker::run_once`] claims and handles one transition and says what happened, so tests drive
//! the worker step by step; [`OutboxWorker::run`] is the daemon's loop around the same steps, woken by
//! `LISTEN ordersync_outbox` ([`listen`]) with a polling fallback.
//!
//! Throughput: `run` keeps claims waiting for a slot, at least [`CLAIMS_PER_SLOT`] per slot of the
//! account's concurrency and more when sends start fast ([`ClaimsAhead`]), so a claim query serves many
//! transitions and the next claims go out while earlier outcomes commit. Only `concurrency` of them send
//! (or read back) at once (a semaphore; the re-read of an order after its success takes no slot).
//! Successes are recorded by group commit ([`Group`]): a send that succeeded leaves its slot to the
//! next transition and joins the queue of successes that one statement records together. The orders
//! re-read after their successes are grouped the same way: one read serves the orders waiting for it.
//!
//! What a claim ends in:
//! - success → `succeeded`; the order is read again and stored, unless a later transition of the order is
//!   queued: that one reads it after its own success, or when it ends `failed` or `dead`.
//! - transient failure (connect, timeout before sending, 5xx, 429) → `pending` after a backoff, or `dead`
//!   once `max_attempts` claims are used up.
//! - refusal (other 4xx, a failure in a 200 body), refused credentials, or an invalid SQL-queued row →
//!   `failed` with the API's message or the reason.
//! - ambiguous send (timeout or reset after sending, or an unreadable answer), or a claim taken over from a
//!   worker that died → the order is read back: took effect → `succeeded`; did not → sent again; the
//!   marketplace cannot tell → `unknown` for an operator; the read failed transiently → `unknown`, read
//!   back again after a backoff.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use backon::{ExponentialBuilder, Retryable};
use chrono::{DateTime, Utc};
use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio::sync::{Notify, Semaphore, SemaphorePermit, oneshot};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::{OutboxError, OutboxSettings};
use crate::domain::{MarketplaceKind, Order};
use crate::http::Redactor;
use crate::marketplace::{Marketplace, MarketplaceError, Transition};
use crate::ops::metrics;
use crate::store;
use crate::store::orders::{self, PageWrite};
use crate::store::outbox::{self as store_outbox, Attempt, Claimed, OutboxState, Resolution, Sent};

/// Claims `run` keeps waiting for a slot, at least, per slot of concurrency: enough that a claim query
/// and a group commit serve many transitions, few enough that claims waiting for a slot stay well inside
/// their lease.
pub const CLAIMS_PER_SLOT: usize = 16;

/// A worker whose sends start faster keeps more claims waiting: as many as start in this time, so the
/// slots never wait for a claim query (whose commit takes milliseconds) …
const CLAIMS_AHEAD_FOR: Duration = Duration::from_millis(50);

/// … up to this many (or [`CLAIMS_PER_SLOT`] per slot, when that is more). A claim query of more rows
/// gains little and holds transitions other replicas could send.
const MOST_CLAIMS_AHEAD: usize = 256;

/// Transitions `run` holds (waiting for a slot, sending, or waiting for their outcome to be recorded) per
/// claim it keeps waiting: bounds the work of a worker whose commits fall behind its sends.
const IN_FLIGHT_PER_CLAIM: usize = 4;

/// A group commit of successes that failed for a passing reason (see [`store::may_pass`]) is tried
/// again this many times, the first after this delay (and up to as much again, the jitter) and each later
/// one after twice the one before: 1.5 to 3 s of waiting in all, besides each try's own time (a try
/// waits for a connection up to the pool's acquire timeout). A claim whose lease ran out meanwhile is
/// fenced off as ever.
const RECORD_RETRIES: usize = 4;
const RECORD_RETRY_DELAY: Duration = Duration::from_millis(100);

/// Asks for the account to be polled soon (the daemon starts a poll run), for orders the adapter cannot
/// read back one by one.
pub type RepollHook = Arc<dyn Fn() + Send + Sync>;

/// What one handled claim ended in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Sent and accepted.
    Succeeded { id: i64 },
    /// Found to have taken effect by reading the order back, without sending (again).
    Confirmed { id: i64 },
    /// A transient failure; sent again after `delay`.
    Retrying { id: i64, delay: Duration },
    /// Refused by the marketplace or invalid; waits for an operator.
    Failed { id: i64, error: String },
    /// Attempts exhausted; waits for an operator.
    Dead { id: i64, error: String },
    /// Outcome unknown; read back after the delay, or (`None`) an operator must decide.
    Unknown {
        id: i64,
        read_back_in: Option<Duration>,
    },
    /// Another worker took the transition over (this worker stalled past its lease); nothing was
    /// recorded by this one.
    LeaseLost { id: i64 },
    /// Not sent: the worker was stopping. The transition is due again as it was before the claim.
    GivenBack { id: i64 },
}

impl Outcome {
    pub fn id(&self) -> i64 {
        match self {
            Outcome::Succeeded { id }
            | Outcome::Confirmed { id }
            | Outcome::Retrying { id, .. }
            | Outcome::Failed { id, .. }
            | Outcome::Dead { id, .. }
            | Outcome::Unknown { id, .. }
            | Outcome::LeaseLost { id }
            | Outcome::GivenBack { id } => *id,
        }
    }
}

/// What reading an order back told.
enum ReadBack {
    TookEffect,
    NotTaken,
    /// Recorded already; this is how the claim ended.
    Undecided(Outcome),
}

/// The outbox worker of one account.
pub struct OutboxWorker {
    pool: PgPool,
    account_id: i64,
    account: String,
    kind: MarketplaceKind,
    marketplace: Arc<dyn Marketplace>,
    owner: String,
    settings: OutboxSettings,
    redactor: Redactor,
    repoll: Option<RepollHook>,
    /// `concurrency` permits: held by a transition while it sends or reads back.
    slots: Semaphore,
    /// Claims of `run` still waiting for a slot.
    unsent: Unsent,
    /// Successful sends waiting to be recorded, one statement for each batch.
    successes: Group<Sent, Recorded>,
    /// Orders waiting to be re-read after their transitions succeeded, one read for each batch.
    refreshes: Group<String, ()>,
}

/// Who the worker works for.
pub struct WorkerAccount {
    pub account_id: i64,
    pub name: String,
    pub kind: MarketplaceKind,
    pub marketplace: Arc<dyn Marketplace>,
    /// The account's secret values, scrubbed from everything the worker records or logs (the adapters
    /// already keep secrets out of their errors; this is the second line).
    pub secrets: Vec<String>,
}

impl OutboxWorker {
    /// `owner` names this worker in leases and attempts (e.g. the replica id).
    pub fn new(
        pool: PgPool,
        account: WorkerAccount,
        owner: String,
        settings: OutboxSettings,
        repoll: Option<RepollHook>,
    ) -> OutboxWorker {
        OutboxWorker {
            pool,
            account_id: account.account_id,
            account: account.name,
            kind: account.kind,
            marketplace: account.marketplace,
            owner,
            redactor: Redactor::new(account.secrets),
            repoll,
            slots: Semaphore::new(settings.concurrency.max(1)),
            unsent: Unsent::default(),
            successes: Group::default(),
            refreshes: Group::default(),
            settings,
        }
    }

    pub fn account_id(&self) -> i64 {
        self.account_id
    }

    /// Claims one due transition and handles it. `Ok(None)`: nothing was due.
    pub async fn run_once(&self) -> Result<Option<Outcome>, OutboxError> {
        // Taken before the claim, so the lease is at least as young as this.
        let claimed_at = Instant::now();
        let claimed = store_outbox::claim(
            &self.pool,
            self.account_id,
            &self.owner,
            self.settings.lease_ttl,
            1,
        )
        .await?;
        match claimed.transitions.into_iter().next() {
            Some(claim) => {
                let span = self.span(&claim);
                let handled = async {
                    let slot = self.slot().await;
                    self.handle_to_the_end(claim, claimed_at, slot).await
                };
                Ok(Some(handled.instrument(span).await?))
            }
            None => Ok(None),
        }
    }

    /// Runs until `shutdown`: claims due transitions (as many waiting for a slot as [`ClaimsAhead`]
    /// says, topped up when half of them have started), handles them concurrently with at most
    /// `concurrency` talking to the marketplace, and sleeps until woken by `wake`, the next scheduled
    /// attempt or the poll interval. Claims waiting for a slot keep their leases while the worker runs.
    /// At shutdown, claims not yet sent are given back, transitions being
    /// sent get `shutdown_grace` to finish, and claims still held then are released (as `unknown`, read
    /// back before any resend).
    pub async fn run(self: Arc<Self>, wake: Arc<Notify>, shutdown: CancellationToken) {
        let mut in_flight: JoinSet<Result<Outcome, OutboxError>> = JoinSet::new();
        let mut ahead = ClaimsAhead::new(self.settings.concurrency.max(1) * CLAIMS_PER_SLOT);
        // Claims waiting for a slot keep their leases while they wait, however slowly the marketplace
        // answers the sends before them: every quarter lease, those past a quarter of it are extended.
        let every = (self.settings.lease_ttl / 4).max(Duration::from_millis(10));
        let mut keep_leases = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        keep_leases.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The database's time of the last claim: transitions due by then that it did not take wait for
        // something else (an earlier transition of their order, another worker), not for a timer.
        let mut last_claim = None;
        loop {
            // Claim again once half the claims waiting for a slot have started, so the slots never wait
            // for a claim query. Sent transitions waiting for their outcome to be recorded do not count:
            // the next claims go out while those commit. They are bounded all the same.
            let most = ahead.size(self.unsent.started_so_far(), Instant::now());
            let free = most.saturating_sub(self.unsent.count());
            let mut saturated = free < most / 2 || in_flight.len() >= most * IN_FLIGHT_PER_CLAIM;
            if !saturated && !shutdown.is_cancelled() {
                let claimed_at = Instant::now();
                match store_outbox::claim(
                    &self.pool,
                    self.account_id,
                    &self.owner,
                    self.settings.lease_ttl,
                    free as i64,
                )
                .await
                {
                    Ok(claims) => {
                        last_claim = Some(claims.as_of);
                        let claims = claims.transitions;
                        saturated = claims.len() == free;
                        self.unsent.add(&claims);
                        for claim in claims {
                            let worker = self.clone();
                            let span = self.span(&claim);
                            let stop = shutdown.clone();
                            in_flight.spawn(
                                async move { worker.handle_claimed(claim, claimed_at, &stop).await }
                                    .instrument(span),
                            );
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "could not claim outbox transitions"),
                }
            }
            // While enough claims are held, only a finished transition (or shutdown) matters: more work
            // is probably due, and the wake-up and timer branches below are off.
            let idle = if saturated {
                self.settings.poll_interval
            } else {
                self.until_next_due(last_claim).await
            };
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = wake.notified(), if !saturated => {}
                () = self.unsent.wake.notified(), if saturated => {}
                Some(joined) = in_flight.join_next(), if !in_flight.is_empty() => {
                    log_joined(joined);
                    // Every transition finished by now leaves the bound on those held.
                    while let Some(joined) = in_flight.try_join_next() {
                        log_joined(joined);
                    }
                }
                () = tokio::time::sleep(idle), if !saturated => {}
                _ = keep_leases.tick() => self.keep_leases().await,
            }
        }
        let drained = tokio::time::timeout(self.settings.shutdown_grace, async {
            while let Some(joined) = in_flight.join_next().await {
                log_joined(joined);
            }
        })
        .await;
        if drained.is_err() {
            in_flight.abort_all();
            tracing::warn!(
                "outbox transitions still in flight at the shutdown deadline were stopped"
            );
        }
        match store_outbox::release(&self.pool, self.account_id, &self.owner).await {
            Ok(0) => {}
            Ok(n) => tracing::warn!(
                released = n,
                "released outbox claims; they are read back before any resend"
            ),
            Err(e) => {
                tracing::warn!(error = %e, "could not release outbox claims; they will expire")
            }
        }
    }

    /// Extends the leases of the claims waiting for a slot that are past a quarter of them.
    async fn keep_leases(&self) {
        let waiting = self.unsent.held();
        if waiting.is_empty() {
            return;
        }
        if let Err(e) =
            store_outbox::extend_waiting(&self.pool, &waiting, self.settings.lease_ttl).await
        {
            tracing::warn!(error = %e, "could not extend the leases of claims waiting for a slot");
        }
    }

    /// The start of the body of an answer that could not be read, redacted, for its attempt's record.
    fn malformed_body(&self, error: &MarketplaceError) -> Option<String> {
        match error {
            MarketplaceError::Malformed { raw_body, .. } => {
                Some(self.redactor.excerpt(raw_body.as_bytes()))
            }
            _ => None,
        }
    }

    /// Stores an attempt and counts it in the metrics.
    async fn record_attempt(&self, attempt: &Attempt<'_>) -> Result<(), sqlx::Error> {
        store_outbox::record_attempt(&self.pool, attempt).await?;
        metrics::outbox_attempt(&self.account, self.kind, attempt.action, attempt.outcome);
        Ok(())
    }

    fn span(&self, claim: &Claimed) -> tracing::Span {
        tracing::info_span!(
            "transition",
            account = %self.account,
            id = claim.id,
            kind = %claim.kind,
            order = %claim.order_external_id,
            attempt = claim.attempts
        )
    }

    /// How long to sleep until the next transition falls due after `last_claim` (at most the poll
    /// interval).
    async fn until_next_due(&self, last_claim: Option<DateTime<Utc>>) -> Duration {
        let poll = self.settings.poll_interval;
        match store_outbox::next_due(&self.pool, self.account_id, last_claim).await {
            Ok(Some(at)) => (at - Utc::now())
                .to_std()
                .unwrap_or(Duration::ZERO)
                .min(poll),
            Ok(None) => poll,
            Err(e) => {
                tracing::warn!(error = %e, "could not read the next outbox due time");
                poll
            }
        }
    }

    /// Waits for a slot, then handles the claim; gives it back unsent when `stop` comes first.
    async fn handle_claimed(
        &self,
        claim: Claimed,
        claimed_at: Instant,
        stop: &CancellationToken,
    ) -> Result<Outcome, OutboxError> {
        let slot = tokio::select! {
            biased;
            () = stop.cancelled() => None,
            slot = self.slot() => Some(slot),
        };
        self.unsent.started(&claim);
        match slot {
            Some(slot) => self.handle_to_the_end(claim, claimed_at, slot).await,
            None => self.give_back(&claim).await,
        }
    }

    /// Handles one claim to its end in `slot`: validates, reads back and sends as the claim needs.
    async fn handle(
        &self,
        claim: Claimed,
        claimed_at: Instant,
        slot: SemaphorePermit<'_>,
    ) -> Result<Outcome, OutboxError> {
        let id = claim.id;
        let args = match &claim.args {
            serde_json::Value::Object(map) => map.clone(),
            // The table's check constraint makes this unreachable; fail the row rather than trust it.
            other => {
                let reason = format!("args must be a JSON object, not {other}");
                return self.invalid(&claim, &reason).await;
            }
        };
        let transition = Transition {
            order_external_id: claim.order_external_id.clone(),
            kind: claim.kind.clone(),
            args,
            idempotency_key: claim.idempotency_key.clone(),
        };
        if claim.attempts > claim.max_attempts {
            let error = format!(
                "gave up after {} attempts (the last claims ended without an outcome: their workers stopped)",
                claim.max_attempts
            );
            return self
                .resolve(&claim, Resolution::Dead { error: &error }, || {
                    Outcome::Dead {
                        id,
                        error: error.clone(),
                    }
                })
                .await;
        }
        if !claim.validated {
            match super::check(
                &self.pool,
                self.marketplace.as_ref(),
                self.account_id,
                &transition,
                Some(id),
            )
            .await
            {
                Ok(()) => {
                    if !store_outbox::mark_validated(&self.pool, id, claim.fence).await? {
                        return Ok(Outcome::LeaseLost { id });
                    }
                }
                Err(OutboxError::Refused(reason)) => return self.invalid(&claim, &reason).await,
                Err(e) => return Err(e),
            }
        }
        if claim.previous_state != "pending" {
            tracing::info!(
                previous = %claim.previous_state,
                "an earlier send may have taken effect; reading the order back first"
            );
            match self.read_back(&claim, &transition).await? {
                ReadBack::TookEffect => return self.confirmed(&claim).await,
                ReadBack::NotTaken => {}
                ReadBack::Undecided(outcome) => return Ok(outcome),
            }
        }
        self.send(&claim, claimed_at, &transition, slot).await
    }

    /// A slot to send or read back in.
    async fn slot(&self) -> SemaphorePermit<'_> {
        self.slots
            .acquire()
            .await
            .expect("the worker never closes its semaphore")
    }

    /// Returns an unsent claim at shutdown.
    async fn give_back(&self, claim: &Claimed) -> Result<Outcome, OutboxError> {
        // A claim taken over from a dead worker may have been sent by it: it stays one to read back.
        let state = if claim.previous_state == "pending" {
            OutboxState::Pending
        } else {
            OutboxState::Unknown
        };
        Ok(
            if store_outbox::give_back(&self.pool, claim.id, claim.fence, state).await? {
                Outcome::GivenBack { id: claim.id }
            } else {
                Outcome::LeaseLost { id: claim.id }
            },
        )
    }

    /// Sends the transition in `slot`, which is left as soon as the marketplace has answered.
    async fn send(
        &self,
        claim: &Claimed,
        claimed_at: Instant,
        transition: &Transition,
        slot: SemaphorePermit<'_>,
    ) -> Result<Outcome, OutboxError> {
        let id = claim.id;
        // A claim younger than half its lease holds at least that half still: only an older one is
        // renewed (and its fence checked) before the request.
        if claimed_at.elapsed() > self.settings.lease_ttl / 2
            && !store_outbox::extend(&self.pool, id, claim.fence, self.settings.lease_ttl).await?
        {
            return Ok(Outcome::LeaseLost { id });
        }
        let started_at = Utc::now();
        let clock = Instant::now();
        let result = self.marketplace.apply_transition(transition).await;
        let duration = clock.elapsed();
        let attempt = |action, outcome| Attempt {
            outbox_id: id,
            attempt: claim.attempts,
            fence: claim.fence,
            worker: &self.owner,
            action,
            outcome,
            request_summary: None,
            http_status: None,
            response_excerpt: None,
            error: None,
            started_at,
            duration,
        };
        let error = match result {
            Ok(applied) => {
                drop(slot);
                tracing::info!(
                    http_status = applied.http_status,
                    "transition sent and accepted"
                );
                let sent = Sent {
                    outbox_id: id,
                    attempt: claim.attempts,
                    fence: claim.fence,
                    request_summary: self.redactor.redact(&applied.request_summary),
                    http_status: applied.http_status,
                    response_excerpt: self.redactor.redact(&applied.response_excerpt),
                    started_at,
                    duration,
                };
                let succeeded = self.record_success(sent).await?;
                metrics::outbox_attempt(&self.account, self.kind, "send", "succeeded");
                return Ok(match succeeded {
                    None => {
                        tracing::warn!(
                            "the claim was taken over by another worker; outcome not recorded"
                        );
                        Outcome::LeaseLost { id }
                    }
                    Some(later) => {
                        // A later transition of the order re-reads it after its own send.
                        if !later {
                            self.refresh(transition.order_external_id.clone()).await;
                        }
                        Outcome::Succeeded { id }
                    }
                });
            }
            Err(error) => error,
        };
        let text = self.redactor.redact(&error.to_string());
        let (what, status) = request_of(&error);
        let what = self.redactor.redact(what);
        let body = self.malformed_body(&error);
        let failed = |outcome| Attempt {
            request_summary: Some(&what),
            http_status: status,
            response_excerpt: body.as_deref(),
            error: Some(&text),
            ..attempt("send", outcome)
        };
        match &error {
            MarketplaceError::Transient {
                ambiguous: false,
                retry_after,
                ..
            } => {
                self.record_attempt(&failed("transient")).await?;
                tracing::warn!(error = %text, "transient failure");
                self.retry_or_dead(claim, *retry_after, &text).await
            }
            MarketplaceError::Transient {
                ambiguous: true, ..
            }
            | MarketplaceError::Malformed { .. } => {
                self.record_attempt(&failed("ambiguous")).await?;
                tracing::warn!(error = %text, "the send may or may not have taken effect; reading the order back");
                match self.read_back(claim, transition).await? {
                    ReadBack::TookEffect => self.confirmed(claim).await,
                    ReadBack::NotTaken => self.retry_or_dead(claim, None, &text).await,
                    ReadBack::Undecided(outcome) => Ok(outcome),
                }
            }
            MarketplaceError::Rejected { .. } => {
                self.record_attempt(&failed("rejected")).await?;
                tracing::warn!(error = %text, "transition refused by the marketplace");
                self.resolve(claim, Resolution::Failed { error: &text }, || {
                    Outcome::Failed {
                        id,
                        error: text.clone(),
                    }
                })
                .await
            }
            MarketplaceError::Unauthorized { .. } => {
                self.record_attempt(&failed("unauthorized")).await?;
                tracing::error!(error = %text, "credentials refused; the transition waits for an operator");
                self.resolve(claim, Resolution::Failed { error: &text }, || {
                    Outcome::Failed {
                        id,
                        error: text.clone(),
                    }
                })
                .await
            }
        }
    }

    /// Reads the order back to learn whether an earlier send took effect.
    async fn read_back(
        &self,
        claim: &Claimed,
        transition: &Transition,
    ) -> Result<ReadBack, OutboxError> {
        let id = claim.id;
        if !store_outbox::extend(&self.pool, id, claim.fence, self.settings.lease_ttl).await? {
            return Ok(ReadBack::Undecided(Outcome::LeaseLost { id }));
        }
        let started_at = Utc::now();
        let clock = Instant::now();
        let result = self
            .marketplace
            .fetch_order(&transition.order_external_id)
            .await;
        let duration = clock.elapsed();
        let summary = format!("read order {} back", transition.order_external_id);
        let base = Attempt {
            outbox_id: id,
            attempt: claim.attempts,
            fence: claim.fence,
            worker: &self.owner,
            action: "read_back",
            outcome: "unreadable",
            request_summary: Some(&summary),
            http_status: None,
            response_excerpt: None,
            error: None,
            started_at,
            duration,
        };
        let error = match result {
            Ok(Some(order)) => {
                let took = self.marketplace.transition_took_effect(transition, &order);
                let outcome = if took {
                    "took_effect"
                } else {
                    "not_taken_effect"
                };
                self.record_attempt(&Attempt { outcome, ..base }).await?;
                tracing::info!(took_effect = took, "order read back");
                self.store_orders(std::slice::from_ref(&order)).await;
                return Ok(if took {
                    ReadBack::TookEffect
                } else {
                    ReadBack::NotTaken
                });
            }
            Ok(None) => {
                let error = "the outcome is unknown and the marketplace offers no way to read the \
                             order back: check the order, then retry or cancel";
                self.record_attempt(&Attempt {
                    error: Some(error),
                    ..base
                })
                .await?;
                tracing::warn!("{error}");
                let unknown = Resolution::Unknown {
                    read_back_in: None,
                    error,
                };
                let outcome = self
                    .resolve(claim, unknown, || Outcome::Unknown {
                        id,
                        read_back_in: None,
                    })
                    .await?;
                return Ok(ReadBack::Undecided(outcome));
            }
            Err(error) => error,
        };
        let text = self.redactor.redact(&error.to_string());
        let (_, status) = request_of(&error);
        let body = self.malformed_body(&error);
        let recorded = match error {
            MarketplaceError::Transient { .. } => "transient",
            MarketplaceError::Rejected { .. } | MarketplaceError::Malformed { .. } => "rejected",
            MarketplaceError::Unauthorized { .. } => "unauthorized",
        };
        self.record_attempt(&Attempt {
            outcome: recorded,
            error: Some(&text),
            http_status: status,
            response_excerpt: body.as_deref(),
            ..base
        })
        .await?;
        tracing::warn!(error = %text, "could not read the order back");
        let reason = format!("outcome unknown; reading the order back failed: {text}");
        let outcome = match error {
            MarketplaceError::Transient { retry_after, .. }
                if claim.attempts < claim.max_attempts =>
            {
                let delay = self.settings.backoff(claim.attempts as u32, retry_after);
                let unknown = Resolution::Unknown {
                    read_back_in: Some(delay),
                    error: &reason,
                };
                self.resolve(claim, unknown, || Outcome::Unknown {
                    id,
                    read_back_in: Some(delay),
                })
                .await?
            }
            MarketplaceError::Transient { .. } => {
                let error = format!("gave up after {} attempts: {reason}", claim.attempts);
                self.resolve(claim, Resolution::Dead { error: &error }, || {
                    Outcome::Dead {
                        id,
                        error: error.clone(),
                    }
                })
                .await?
            }
            _ => {
                let unknown = Resolution::Unknown {
                    read_back_in: None,
                    error: &reason,
                };
                self.resolve(claim, unknown, || Outcome::Unknown {
                    id,
                    read_back_in: None,
                })
                .await?
            }
        };
        Ok(ReadBack::Undecided(outcome))
    }

    /// After a transient failure: pending again after a backoff, or dead when the attempts are used up.
    async fn retry_or_dead(
        &self,
        claim: &Claimed,
        retry_after: Option<Duration>,
        error: &str,
    ) -> Result<Outcome, OutboxError> {
        let id = claim.id;
        if claim.attempts >= claim.max_attempts {
            let error = format!("gave up after {} attempts: {error}", claim.attempts);
            tracing::error!(error = %error, "transition is dead; it waits for an operator");
            return self
                .resolve(claim, Resolution::Dead { error: &error }, || {
                    Outcome::Dead {
                        id,
                        error: error.clone(),
                    }
                })
                .await;
        }
        let delay = self.settings.backoff(claim.attempts as u32, retry_after);
        tracing::info!(
            delay_ms = delay.as_millis() as u64,
            "transition will be sent again"
        );
        self.resolve(claim, Resolution::Retry { delay, error }, || {
            Outcome::Retrying { id, delay }
        })
        .await
    }

    /// The order read back shows the transition took effect.
    async fn confirmed(&self, claim: &Claimed) -> Result<Outcome, OutboxError> {
        let id = claim.id;
        tracing::info!("the transition had taken effect; not sending it again");
        self.resolve(claim, Resolution::Succeeded, || Outcome::Confirmed { id })
            .await
    }

    /// A row queued by SQL that the adapter refuses.
    async fn invalid(&self, claim: &Claimed, reason: &str) -> Result<Outcome, OutboxError> {
        let id = claim.id;
        let error = format!("invalid transition: {reason}");
        self.record_attempt(&Attempt {
            outbox_id: id,
            attempt: claim.attempts,
            fence: claim.fence,
            worker: &self.owner,
            action: "validate",
            outcome: "invalid",
            request_summary: None,
            http_status: None,
            response_excerpt: None,
            error: Some(&error),
            started_at: Utc::now(),
            duration: Duration::ZERO,
        })
        .await?;
        tracing::warn!(error = %error, "transition queued by SQL is invalid; marked failed");
        self.resolve(claim, Resolution::Failed { error: &error }, || {
            Outcome::Failed {
                id,
                error: error.clone(),
            }
        })
        .await
    }

    /// Records the claim's outcome, fenced: `outcome()` when it was recorded, `LeaseLost` when another
    /// worker had taken the transition over.
    async fn resolve(
        &self,
        claim: &Claimed,
        resolution: Resolution<'_>,
        outcome: impl FnOnce() -> Outcome,
    ) -> Result<Outcome, OutboxError> {
        if store_outbox::resolve(&self.pool, claim.id, claim.fence, resolution).await? {
            Ok(outcome())
        } else {
            tracing::warn!("the claim was taken over by another worker; outcome not recorded");
            Ok(Outcome::LeaseLost { id: claim.id })
        }
    }

    /// Handles one claim to its end in `slot` ([`Self::handle`]), then, out of the slot, re-reads the order
    /// of a transition that ended `failed` or `dead` (it waits for an operator) when an earlier transition
    /// of the order succeeded after the order was last stored: that success left the re-read to this
    /// transition. The outcome is recorded by then: a failure of the re-read is only logged.
    async fn handle_to_the_end(
        &self,
        claim: Claimed,
        claimed_at: Instant,
        slot: SemaphorePermit<'_>,
    ) -> Result<Outcome, OutboxError> {
        let (id, order) = (claim.id, claim.order_external_id.clone());
        let outcome = self.handle(claim, claimed_at, slot).await?;
        if matches!(outcome, Outcome::Failed { .. } | Outcome::Dead { .. }) {
            match store_outbox::order_state_is_stale(&self.pool, self.account_id, &order, Some(id))
                .await
            {
                Ok(true) => self.refresh(order).await,
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "could not tell whether the order needs reading again; a poll will")
                }
            }
        }
        Ok(outcome)
    }

    /// Records a successful send with the others queued meanwhile: `None` when the claim was lost, else
    /// whether a later transition of the order is still to run (see [`store_outbox::succeed_all`]).
    async fn record_success(&self, sent: Sent) -> Result<Option<bool>, OutboxError> {
        let id = sent.outbox_id;
        let record = |batch: Vec<Sent>| async move {
            // Run again, the statement finds what a run that failed yet committed recorded.
            let write = || store_outbox::succeed_all(&self.pool, &self.owner, &batch);
            let written = write
                .retry(
                    ExponentialBuilder::default()
                        .with_min_delay(RECORD_RETRY_DELAY)
                        .with_max_times(RECORD_RETRIES)
                        .with_jitter(),
                )
                .sleep(tokio::time::sleep)
                .when(store::may_pass)
                .notify(|e: &sqlx::Error, delay| {
                    tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "could not record successes; trying again");
                })
                .await;
            match written {
                Ok(recorded) => batch
                    .iter()
                    .map(|sent| {
                        recorded
                            .get(&sent.outbox_id)
                            .copied()
                            .ok_or_else(|| "the database did not answer for it".to_owned())
                    })
                    .collect(),
                Err(e) => vec![Err(e.to_string()); batch.len()],
            }
        };
        self.successes
            .join(sent, record)
            .await
            .unwrap_or_else(|| Err("the transition recording it was stopped".to_owned()))
            .map_err(|reason| OutboxError::Unrecorded { id, reason })
    }

    /// Re-reads an order after a transition succeeded, so the database shows the marketplace's new state,
    /// with the other orders waiting for it meanwhile ([`Marketplace::fetch_orders_by_id`]: one listing or
    /// one request for many where the API allows); asks for a poll of the account when the adapter cannot
    /// read an order. The read takes no slot: slots bound the sends, and a read changes nothing (the HTTP
    /// client's rate limit still applies).
    async fn refresh(&self, external_id: String) {
        let refresh = |mut batch: Vec<String>| async move {
            let asked = batch.len();
            batch.sort_unstable();
            batch.dedup();
            // Whatever is not stored now (not found, a failed read or write) is left to a poll, asked
            // for at once.
            let stored = match self.marketplace.fetch_orders_by_id(&batch).await {
                Ok(orders) => {
                    let found: HashSet<&str> =
                        orders.iter().map(|o| o.external_id.as_str()).collect();
                    let all_found = batch.iter().all(|id| found.contains(id.as_str()));
                    self.store_orders(&orders).await && all_found
                }
                Err(e) => {
                    tracing::warn!(
                        error = %self.redactor.redact(&e.to_string()),
                        orders = batch.len(),
                        "could not re-read the orders; a poll will"
                    );
                    false
                }
            };
            if !stored && let Some(repoll) = &self.repoll {
                repoll();
            }
            vec![(); asked]
        };
        self.refreshes.join(external_id, refresh).await;
    }

    /// Stores orders read back; `false` when they could not be stored.
    async fn store_orders(&self, orders: &[Order]) -> bool {
        if orders.is_empty() {
            return true;
        }
        let page = PageWrite {
            account_id: self.account_id,
            marketplace: self.kind,
            orders,
            window_from: None,
            checkpoint: None,
            lease: None,
        };
        match orders::write_page(&self.pool, page).await {
            Ok(_) => true,
            Err(e) => {
                tracing::warn!(error = %e, "could not store the orders read back; a poll will");
                false
            }
        }
    }
}

/// The claims of `run` waiting for a slot (id and fence, so their leases can be kept), and how many have
/// stopped waiting so far; `wake` wakes `run` each time one stops waiting.
#[derive(Default)]
struct Unsent {
    waiting: std::sync::Mutex<HashMap<i64, i64>>,
    started: AtomicU64,
    wake: Notify,
}

impl Unsent {
    fn count(&self) -> usize {
        self.waiting().len()
    }

    /// The waiting claims, as (id, fence).
    fn held(&self) -> Vec<(i64, i64)> {
        self.waiting()
            .iter()
            .map(|(&id, &fence)| (id, fence))
            .collect()
    }

    fn waiting(&self) -> std::sync::MutexGuard<'_, HashMap<i64, i64>> {
        self.waiting
            .lock()
            .expect("the waiting claims are never poisoned")
    }

    fn started_so_far(&self) -> u64 {
        self.started.load(Ordering::Acquire)
    }

    fn add(&self, claims: &[Claimed]) {
        self.waiting()
            .extend(claims.iter().map(|claim| (claim.id, claim.fence)));
    }

    fn started(&self, claim: &Claimed) {
        {
            let mut waiting = self.waiting();
            // A newer claim of the same transition (taken again after this one's lease ran out) stays.
            if waiting.get(&claim.id) == Some(&claim.fence) {
                waiting.remove(&claim.id);
            }
        }
        self.started.fetch_add(1, Ordering::AcqRel);
        self.wake.notify_one();
    }
}

/// How many claims `run` keeps waiting for a slot: those that start in [`CLAIMS_AHEAD_FOR`] at the rate
/// claims started lately, between `least` and [`MOST_CLAIMS_AHEAD`] (or `least` when that is more). A
/// worker whose marketplace answers slowly so keeps its claims young; a fast one claims in large batches.
struct ClaimsAhead {
    least: usize,
    /// Where the current measuring window began: when, and the claims started by then.
    since: Instant,
    started_then: u64,
    /// Claims started per second in the last full window.
    rate: f64,
}

impl ClaimsAhead {
    /// Windows shorter than this measure too few starts to go by.
    const WINDOW: Duration = Duration::from_millis(100);

    fn new(least: usize) -> ClaimsAhead {
        ClaimsAhead {
            least,
            since: Instant::now(),
            started_then: 0,
            rate: 0.0,
        }
    }

    /// The number of claims to keep waiting, given the claims started so far.
    fn size(&mut self, started: u64, now: Instant) -> usize {
        let elapsed = now.duration_since(self.since);
        if elapsed >= Self::WINDOW {
            self.rate = started.saturating_sub(self.started_then) as f64 / elapsed.as_secs_f64();
            self.since = now;
            self.started_then = started;
        }
        let wanted = (self.rate * CLAIMS_AHEAD_FOR.as_secs_f64()).ceil() as usize;
        wanted.clamp(self.least, MOST_CLAIMS_AHEAD.max(self.least))
    }
}

/// What recording a success answers: see [`OutboxWorker::record_success`]; `Err` holds why it was not
/// recorded.
type Recorded = Result<Option<bool>, String>;

/// Work of `run`'s transitions done together. Whichever waiting transition gets the turn does the work
/// of every item queued by then in one go; the others wait for its answers. A busy worker so does the
/// work (a statement, a read) once per batch, and the batch grows with the time the work takes.
struct Group<T, A> {
    queue: std::sync::Mutex<Vec<(T, oneshot::Sender<A>)>>,
    turn: tokio::sync::Mutex<()>,
}

impl<T, A> Default for Group<T, A> {
    fn default() -> Self {
        Group {
            queue: std::sync::Mutex::default(),
            turn: tokio::sync::Mutex::default(),
        }
    }
}

impl<T, A> Group<T, A> {
    /// Queues `item` and waits for its answer, doing the queued batch with `work` (which answers each
    /// item, in order) whenever this caller gets the turn. `None`: the caller doing this item's batch was
    /// stopped before answering.
    async fn join<F, Fut>(&self, item: T, work: F) -> Option<A>
    where
        F: Fn(Vec<T>) -> Fut,
        Fut: Future<Output = Vec<A>>,
    {
        let (reply, mut answer) = oneshot::channel();
        self.queue
            .lock()
            .expect("a group's queue is never poisoned")
            .push((item, reply));
        loop {
            tokio::select! {
                biased;
                answer = &mut answer => return answer.ok(),
                _turn = self.turn.lock() => {
                    // Empty: an earlier turn took this item, and its answer is already sent.
                    let batch = std::mem::take(
                        &mut *self.queue.lock().expect("a group's queue is never poisoned"),
                    );
                    if batch.is_empty() {
                        continue;
                    }
                    let (items, replies): (Vec<T>, Vec<_>) = batch.into_iter().unzip();
                    for (answer, reply) in work(items).await.into_iter().zip(replies) {
                        // A waiter that is gone (stopped at shutdown) needs no answer.
                        let _ = reply.send(answer);
                    }
                }
            }
        }
    }
}

/// The secret-free request description and HTTP status an error carries.
fn request_of(error: &MarketplaceError) -> (&str, Option<u16>) {
    match error {
        MarketplaceError::Rejected { what, status, .. } => (what, *status),
        MarketplaceError::Unauthorized { what, status, .. } => (what, Some(*status)),
        // `HttpClient::send` words an HTTP failure's detail as `HTTP <status>: <message>`.
        MarketplaceError::Transient { what, detail, .. } => (
            what,
            detail
                .strip_prefix("HTTP ")
                .and_then(|rest| rest.get(..3))
                .and_then(|code| code.parse().ok()),
        ),
        MarketplaceError::Malformed { what, .. } => (what, None),
    }
}

fn log_joined(joined: Result<Result<Outcome, OutboxError>, tokio::task::JoinError>) {
    match joined {
        Ok(Ok(outcome)) => tracing::debug!(?outcome, "outbox transition handled"),
        Ok(Err(e)) => tracing::error!(
            error = %crate::poller::error_chain(&e),
            "outbox transition could not be handled; its claim expires and it is taken again"
        ),
        Err(e) if e.is_cancelled() => {}
        Err(e) => tracing::error!(error = %e, "outbox task failed"),
    }
}

/// Wakes each account's worker when the outbox trigger notifies (`LISTEN ordersync_outbox`, the payload is
/// the account id) until `shutdown`. After a lost connection every worker is woken, since notifications
/// sent meanwhile are lost; the workers' polling covers the time the listener is down.
pub async fn listen(pool: PgPool, wakers: HashMap<i64, Arc<Notify>>, shutdown: CancellationToken) {
    let wake_all = || wakers.values().for_each(|w| w.notify_one());
    loop {
        let mut listener = match PgListener::connect_with(&pool).await {
            Ok(listener) => listener,
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for outbox notifications; polling only");
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(Duration::from_secs(30)) => continue,
                }
            }
        };
        if let Err(e) = listener.listen(super::CHANNEL).await {
            tracing::warn!(error = %e, "cannot listen for outbox notifications; polling only");
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(Duration::from_secs(30)) => continue,
            }
        }
        wake_all();
        loop {
            let received = tokio::select! {
                () = shutdown.cancelled() => return,
                received = listener.try_recv() => received,
            };
            match received {
                Ok(Some(notification)) => {
                    match notification
                        .payload()
                        .parse::<i64>()
                        .ok()
                        .and_then(|id| wakers.get(&id))
                    {
                        Some(waker) => waker.notify_one(),
                        None => tracing::debug!(
                            payload = notification.payload(),
                            "outbox notification for an account without a worker here"
                        ),
                    }
                }
                Ok(None) => wake_all(),
                Err(e) => {
                    tracing::warn!(error = %e, "outbox notifications interrupted; reconnecting");
                    break;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claims_ahead_follow_the_rate_sends_start_at_within_their_bounds() {
        let start = Instant::now();
        let mut ahead = ClaimsAhead::new(16);
        assert_eq!(ahead.size(0, start), 16, "no rate measured yet: the least");
        // 100 starts in 100 ms: 1,000 a second, 50 in 50 ms.
        let at = ahead.since + ClaimsAhead::WINDOW;
        assert_eq!(ahead.size(100, at), 50);
        // Within a window the last rate holds.
        assert_eq!(ahead.size(150, at + Duration::from_millis(10)), 50);
        // 10,000 a second would be 500: at most 256.
        let later = at + ClaimsAhead::WINDOW;
        assert_eq!(ahead.size(1_100, later), MOST_CLAIMS_AHEAD);
        // A marketplace that answers slowly: 2 starts in a second, back to the least.
        assert_eq!(ahead.size(1_102, later + Duration::from_secs(1)), 16);
        // A concurrency whose least is above the most keeps its least.
        let mut wide = ClaimsAhead::new(512);
        assert_eq!(wide.size(100_000, wide.since + Duration::from_secs(1)), 512);
    }
}
