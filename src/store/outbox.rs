//! The outbox tables: queuing transitions, claiming them under a lease, recording attempts and outcomes,
//! and the operator's retry and cancel.
//!
//! Architecture invariants, enforced here in SQL:
//! - Within one order, transitions run strictly in id order: [`claim`] never takes a transition while an
//!   earlier one of the same order is in any state but `succeeded` or `cancelled`.
//! - A claim sets a lease (owner and expiry) and increments the fencing counter; every outcome is written
//!   with `where fence = $claimed`, so a worker that lost its lease (it stalled past the expiry and another
//!   worker took the transition) cannot overwrite the newer outcome.
//! - A running transition whose lease expired is claimed again with `previous_state = running`: its send
//!   may have reached the marketplace, so the worker reads the order back before sending again.
//!
//! Statements that find a running transition by id test its lease (`lease_owner is not null`,
//! `lease_expires_at < now()`), never `state = 'running'`: the table's check constraint makes the two the
//! same, but the partial indexes on `state` let the planner answer `state = 'running'` by reading every
//! running transition, which it does whenever its statistics were taken while few ran (a queue just filled),
//! and a worker holds hundreds of claims.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::postgres::types::PgInterval;
use sqlx::{PgExecutor, PgPool};

use crate::domain::storable_text;

/// The states of a queued transition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OutboxState {
    Pending,
    Running,
    Succeeded,
    Failed,
    Dead,
    Cancelled,
    Unknown,
}

impl OutboxState {
    pub const ALL: [OutboxState; 7] = [
        OutboxState::Pending,
        OutboxState::Running,
        OutboxState::Succeeded,
        OutboxState::Failed,
        OutboxState::Dead,
        OutboxState::Cancelled,
        OutboxState::Unknown,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            OutboxState::Pending => "pending",
            OutboxState::Running => "running",
            OutboxState::Succeeded => "succeeded",
            OutboxState::Failed => "failed",
            OutboxState::Dead => "dead",
            OutboxState::Cancelled => "cancelled",
            OutboxState::Unknown => "unknown",
        }
    }
}

impl std::fmt::Display for OutboxState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Error for a state name that is not an outbox state.
#[derive(Debug, thiserror::Error)]
#[error(
    "unknown outbox state `{0}` (expected one of pending, running, succeeded, failed, dead, cancelled, unknown)"
)]
pub struct UnknownOutboxState(pub String);

impl std::str::FromStr for OutboxState {
    type Err = UnknownOutboxState;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        OutboxState::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| UnknownOutboxState(s.to_owned()))
    }
}

/// A transition to queue.
#[derive(Debug, Clone)]
pub struct NewTransition<'a> {
    pub account_id: i64,
    pub order_external_id: &'a str,
    pub kind: &'a str,
    pub args: &'a serde_json::Map<String, serde_json::Value>,
    pub idempotency_key: &'a str,
    pub max_attempts: i32,
    pub queued_by: &'a str,
}

/// One row of the outbox.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow, Serialize)]
pub struct OutboxRow {
    pub id: i64,
    pub account_id: i64,
    pub order_external_id: String,
    pub kind: String,
    pub args: serde_json::Value,
    pub state: String,
    pub attempts: i32,
    pub max_attempts: i32,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub lease_owner: Option<String>,
    pub lease_expires_at: Option<DateTime<Utc>>,
    pub fence: i64,
    pub idempotency_key: String,
    pub queued_by: String,
    pub validated_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
}

/// A transition a worker claimed.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct Claimed {
    pub id: i64,
    pub order_external_id: String,
    pub kind: String,
    pub args: serde_json::Value,
    pub idempotency_key: String,
    /// Counting this claim.
    pub attempts: i32,
    pub max_attempts: i32,
    /// The fencing counter this claim holds; outcomes are recorded only while it is current.
    pub fence: i64,
    /// Whether the row still needs checking (it was inserted by SQL).
    pub validated: bool,
    /// `pending` for a plain send; `unknown` or `running` (a dead worker's claim) when an earlier send may
    /// have taken effect and the order must be read back first.
    pub previous_state: String,
}

/// Inserts a transition; returns its id and whether it is new (`false`: the idempotency key was queued
/// before, and the id is the earlier row's).
pub async fn insert(
    db: impl PgExecutor<'_>,
    transition: &NewTransition<'_>,
) -> Result<(i64, bool), sqlx::Error> {
    sqlx::query_as(
        "with inserted as (
            insert into outbox (account_id, order_external_id, kind, args, idempotency_key,
                max_attempts, queued_by, validated_at)
            values ($1, $2, $3, $4, $5, $6, $7, now())
            on conflict (idempotency_key) do nothing
            returning id)
         select id, true from inserted
         union all
         select id, false from outbox where idempotency_key = $5 and not exists (select 1 from inserted)",
    )
    .bind(transition.account_id)
    .bind(transition.order_external_id)
    .bind(transition.kind)
    .bind(serde_json::Value::Object(transition.args.clone()))
    .bind(transition.idempotency_key)
    .bind(transition.max_attempts)
    .bind(transition.queued_by)
    .fetch_one(db)
    .await
}

/// Whether the order's stored state may be stale for a transition: an earlier transition of the order is
/// unfinished (it will change the state first), or one succeeded after the order was last stored.
/// `before_id`: only transitions queued before this one count (`None`: all of the order's).
pub async fn order_state_is_stale(
    db: impl PgExecutor<'_>,
    account_id: i64,
    order_external_id: &str,
    before_id: Option<i64>,
) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(
        "select exists (
            select 1 from outbox e
            left join orders o on o.account_id = e.account_id and o.external_id = e.order_external_id
            where e.account_id = $1 and e.order_external_id = $2 and e.id < coalesce($3, 9223372036854775807)
              and e.state <> 'cancelled'
              and (e.state <> 'succeeded' or e.finished_at > coalesce(o.last_changed_at, '-infinity')))",
    )
    .bind(account_id)
    .bind(order_external_id)
    .bind(before_id)
    .fetch_one(db)
    .await
}

/// What one claim took, and the database's time it looked at.
#[derive(Debug)]
pub struct Claims {
    pub transitions: Vec<Claimed>,
    /// The claim's `now()`: whatever was due by then and is not among `transitions` waits for an
    /// earlier transition of its order, or another worker holds it ([`next_due`] leaves it out).
    pub as_of: DateTime<Utc>,
}

/// Claims up to `limit` due transitions of the account for `owner`, for `ttl`.
///
/// Due: pending or unknown (read back) with `next_attempt_at` passed, or running with an expired lease.
/// A transition is skipped while an earlier one of its order is unfinished, and rows another worker is
/// claiming right now are skipped (`for update skip locked`) rather than waited for.
pub async fn claim(
    pool: &PgPool,
    account_id: i64,
    owner: &str,
    ttl: Duration,
    limit: i64,
) -> Result<Claims, sqlx::Error> {
    // PostgreSQL plans this statement anew for every claim: the plan for a known limit looks far cheaper
    // than the generic one (which assumes a tenth of the table), though both are the same index walks.
    // That planning cost more than running the query, so the cached generic plan is asked for (the
    // same statement reads the transaction's time, which the claim's `now()` is).
    let mut tx = pool.begin().await?;
    let as_of: DateTime<Utc> = sqlx::query_scalar(
        "select now() from set_config('plan_cache_mode', 'force_generic_plan', true)",
    )
    .fetch_one(&mut *tx)
    .await?;
    // The candidates are found with two index walks that stop at the limit (a queue of any length costs
    // the same); `due` locks them and checks each one's state again under its lock (a row another worker
    // changed since the statement's snapshot is re-read). Whether an earlier transition of the order is
    // unfinished is read from the snapshot, once: a second look in the same snapshot sees the same rows.
    // A transition another worker finished after the snapshot keeps its later ones waiting for the next
    // claim, never the other way round.
    let claimed = sqlx::query_as(
        "with candidates as (
            (select o.id from outbox o
             where o.account_id = $1 and o.lease_expires_at < now()
             order by o.lease_expires_at
             limit $4 * 2 + 8)
            union all
            (select o.id from outbox o
             where o.account_id = $1 and o.state in ('pending', 'unknown') and o.next_attempt_at <= now()
               and not exists (
                   select 1 from outbox e
                   where e.account_id = o.account_id and e.order_external_id = o.order_external_id
                     and e.id < o.id and e.state not in ('succeeded', 'cancelled'))
             order by o.next_attempt_at, o.id
             limit $4 * 2 + 8)),
         due as (
            select o.id, o.state as previous_state
            from outbox o
            where o.id in (select id from candidates)
              and ((o.state in ('pending', 'unknown') and o.next_attempt_at <= now())
                   or (o.state = 'running' and o.lease_expires_at < now()))
            order by o.next_attempt_at nulls first, o.id
            limit $4
            for update of o skip locked)
         update outbox o
            set state = 'running', lease_owner = $2, lease_expires_at = now() + $3,
                fence = o.fence + 1, attempts = o.attempts + 1, next_attempt_at = null,
                updated_at = now()
         from due
         where o.id = due.id
         returning o.id, o.order_external_id, o.kind, o.args, o.idempotency_key, o.attempts,
            o.max_attempts, o.fence, o.validated_at is not null as validated, due.previous_state",
    )
    .bind(account_id)
    .bind(owner)
    .bind(interval(ttl))
    .bind(limit)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Claims {
        transitions: claimed,
        as_of,
    })
}

/// Extends a claim's lease. Returns whether the claim is still ours (its fence is current).
pub async fn extend(
    db: impl PgExecutor<'_>,
    id: i64,
    fence: i64,
    ttl: Duration,
) -> Result<bool, sqlx::Error> {
    let rows = sqlx::query(
        "update outbox set lease_expires_at = now() + $3, updated_at = now()
         where id = $1 and fence = $2 and lease_owner is not null",
    )
    .bind(id)
    .bind(fence)
    .bind(interval(ttl))
    .execute(db)
    .await?
    .rows_affected();
    Ok(rows == 1)
}

/// Extends the leases of claims waiting for their worker's slot (the worker is alive and will send
/// them), each fenced, once a quarter of the lease has passed (checked every quarter lease, a lease never
/// has less than half of it left): a claim that waits longer than its lease would otherwise be taken
/// again, and read back before it is sent. `waiting`: (id, fence) pairs. Returns how
/// many were extended.
pub async fn extend_waiting(
    db: impl PgExecutor<'_>,
    waiting: &[(i64, i64)],
    ttl: Duration,
) -> Result<u64, sqlx::Error> {
    Ok(sqlx::query(
        "update outbox o set lease_expires_at = now() + $3, updated_at = now()
         from unnest($1::int8[], $2::int8[]) as w(id, fence)
         where o.id = w.id and o.fence = w.fence and o.lease_owner is not null
           and o.lease_expires_at < now() + $3 * 0.75",
    )
    .bind(waiting.iter().map(|&(id, _)| id).collect::<Vec<_>>())
    .bind(waiting.iter().map(|&(_, fence)| fence).collect::<Vec<_>>())
    .bind(interval(ttl))
    .execute(db)
    .await?
    .rows_affected())
}

/// Records that a claimed row passed validation.
pub async fn mark_validated(
    db: impl PgExecutor<'_>,
    id: i64,
    fence: i64,
) -> Result<bool, sqlx::Error> {
    let rows = sqlx::query(
        "update outbox set validated_at = now() where id = $1 and fence = $2 and lease_owner is not null",
    )
    .bind(id)
    .bind(fence)
    .execute(db)
    .await?
    .rows_affected();
    Ok(rows == 1)
}

/// What a claim ended in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolution<'a> {
    Succeeded,
    /// Refused or invalid: waits for an operator.
    Failed {
        error: &'a str,
    },
    /// Transient failures exhausted max_attempts.
    Dead {
        error: &'a str,
    },
    /// Send again after `delay`.
    Retry {
        delay: Duration,
        error: &'a str,
    },
    /// The outcome is unknown: read the order back after `delay`, or never (`None`: an operator decides).
    Unknown {
        read_back_in: Option<Duration>,
        error: &'a str,
    },
}

/// Records a claim's outcome, fenced. Returns `false` (and changes nothing) when the claim was lost.
pub async fn resolve(
    db: impl PgExecutor<'_>,
    id: i64,
    fence: i64,
    resolution: Resolution<'_>,
) -> Result<bool, sqlx::Error> {
    let (state, delay, error) = match resolution {
        Resolution::Succeeded => ("succeeded", None, None),
        Resolution::Failed { error } => ("failed", None, Some(error)),
        Resolution::Dead { error } => ("dead", None, Some(error)),
        Resolution::Retry { delay, error } => ("pending", Some(delay), Some(error)),
        Resolution::Unknown {
            read_back_in,
            error,
        } => ("unknown", read_back_in, Some(error)),
    };
    let rows = sqlx::query(
        "update outbox
            set state = $3, next_attempt_at = now() + $4, lease_owner = null, lease_expires_at = null,
                last_error = coalesce($5, last_error), updated_at = now(),
                finished_at = case when $3 in ('succeeded', 'failed', 'dead') then now() end
         where id = $1 and fence = $2 and lease_owner is not null",
    )
    .bind(id)
    .bind(fence)
    .bind(state)
    .bind(delay.map(interval))
    .bind(error.map(storable_text))
    .execute(db)
    .await?
    .rows_affected();
    Ok(rows == 1)
}

/// A successful send, to be recorded by [`succeed_all`].
#[derive(Debug, Clone)]
pub struct Sent {
    pub outbox_id: i64,
    pub attempt: i32,
    pub fence: i64,
    /// Secret-free, like every attempt column.
    pub request_summary: String,
    pub http_status: u16,
    pub response_excerpt: String,
    pub started_at: DateTime<Utc>,
    pub duration: Duration,
}

/// Records successful sends, each with its attempt row, in one statement (a group commit), each claim's
/// success fenced like [`resolve`] (the attempt is history and is written either way). Returns, per
/// outbox id, `None` when that claim was lost, else whether a later transition of the same order is still
/// to run (it will leave the order in its newest state, so reading the order back now can wait for it).
///
/// Running it again with the same sends changes nothing and answers the same, even while the first run
/// is still under way (it waits for it): a statement that failed may have committed, or may still
/// commit, so this is how a failure is tried again. A claim has one successful send at most (a unique
/// index), and a claim its success already ended counts as recorded.
pub async fn succeed_all(
    db: impl PgExecutor<'_>,
    worker: &str,
    sent: &[Sent],
) -> Result<HashMap<i64, Option<bool>>, sqlx::Error> {
    let rows: Vec<(i64, Option<bool>)> = sqlx::query_as(
        "with sent as (
            select * from unnest($2::int8[], $3::int4[], $4::int8[], $5::text[], $6::int4[],
                $7::text[], $8::timestamptz[], $9::int4[])
                as t(outbox_id, attempt, fence, request_summary, http_status, response_excerpt,
                     started_at, duration_ms)),
         attempts as (
            insert into outbox_attempts (outbox_id, attempt, fence, worker, action, outcome,
                request_summary, http_status, response_excerpt, started_at, duration_ms)
            select outbox_id, attempt, fence, $1, 'send', 'succeeded', request_summary, http_status,
                response_excerpt, started_at, duration_ms
            from sent
            on conflict (outbox_id, fence) where action = 'send' and outcome = 'succeeded'
            do nothing),
         succeeded as (
            update outbox o
               set state = 'succeeded', next_attempt_at = null, lease_owner = null,
                   lease_expires_at = null,
                   updated_at = case when o.lease_owner is null then o.updated_at else now() end,
                   finished_at = coalesce(o.finished_at, now())
            from sent
            where o.id = sent.outbox_id and o.fence = sent.fence
              and (o.lease_owner is not null or o.state = 'succeeded')
            returning o.id, exists (
                select 1 from outbox e
                where e.account_id = o.account_id and e.order_external_id = o.order_external_id
                  and e.id > o.id and e.state in ('pending', 'running', 'unknown')) as later)
         select sent.outbox_id, succeeded.later
         from sent left join succeeded on succeeded.id = sent.outbox_id",
    )
    .bind(worker)
    .bind(sent.iter().map(|s| s.outbox_id).collect::<Vec<_>>())
    .bind(sent.iter().map(|s| s.attempt).collect::<Vec<_>>())
    .bind(sent.iter().map(|s| s.fence).collect::<Vec<_>>())
    .bind(
        sent.iter()
            .map(|s| storable_text(&s.request_summary))
            .collect::<Vec<_>>(),
    )
    .bind(
        sent.iter()
            .map(|s| i32::from(s.http_status))
            .collect::<Vec<_>>(),
    )
    .bind(
        sent.iter()
            .map(|s| storable_text(&s.response_excerpt))
            .collect::<Vec<_>>(),
    )
    .bind(sent.iter().map(|s| s.started_at).collect::<Vec<_>>())
    .bind(
        sent.iter()
            .map(|s| duration_ms(s.duration))
            .collect::<Vec<_>>(),
    )
    .fetch_all(db)
    .await?;
    Ok(rows.into_iter().collect())
}

/// Gives a claim back unsent (its worker is stopping before the send): the transition is due at once as
/// it was, without the attempt the claim counted, and `unknown` (read back first) when it was claimed from
/// a worker that died. Returns `false` when the claim was lost.
pub async fn give_back(
    db: impl PgExecutor<'_>,
    id: i64,
    fence: i64,
    state: OutboxState,
) -> Result<bool, sqlx::Error> {
    let rows = sqlx::query(
        "update outbox
            set state = $3, attempts = attempts - 1, next_attempt_at = now(), lease_owner = null,
                lease_expires_at = null, updated_at = now()
         where id = $1 and fence = $2 and lease_owner is not null",
    )
    .bind(id)
    .bind(fence)
    .bind(state.as_str())
    .execute(db)
    .await?
    .rows_affected();
    Ok(rows == 1)
}

/// Gives back the claims `owner` still holds on the account (at shutdown, once its worker is done with
/// them: the workers of one process share their owner, and another account's may still be sending).
/// Their sends may be in flight, so they become `unknown` with an immediate read-back rather than
/// `pending`.
pub async fn release(
    db: impl PgExecutor<'_>,
    account_id: i64,
    owner: &str,
) -> Result<u64, sqlx::Error> {
    Ok(sqlx::query(
        "update outbox
            set state = 'unknown', next_attempt_at = now(), lease_owner = null,
                lease_expires_at = null, updated_at = now(),
                last_error = 'released at shutdown while running; the order is read back before any resend'
         where account_id = $1 and lease_owner = $2 and state = 'running'",
    )
    .bind(account_id)
    .bind(owner)
    .execute(db)
    .await?
    .rows_affected())
}

/// When the account's next transition falls due after `after` (the time of the last claim, whose
/// [`Claims::as_of`] it is: what was due by then and not taken waits for an earlier transition of its
/// order, which a claim after that one's outcome takes, or another worker holds it): the earliest next
/// attempt, or the earliest lease to expire. Each is the first entry of an index from `after`, whatever
/// the length of the history.
pub async fn next_due(
    db: impl PgExecutor<'_>,
    account_id: i64,
    after: Option<DateTime<Utc>>,
) -> Result<Option<DateTime<Utc>>, sqlx::Error> {
    sqlx::query_scalar(
        "select least(
            (select next_attempt_at from outbox
             where account_id = $1 and state in ('pending', 'unknown')
               and next_attempt_at > coalesce($2, '-infinity')
             order by next_attempt_at limit 1),
            (select lease_expires_at from outbox
             where account_id = $1 and lease_expires_at > coalesce($2, '-infinity')
             order by lease_expires_at limit 1))",
    )
    .bind(account_id)
    .bind(after)
    .fetch_one(db)
    .await
}

/// One attempt, for the attempts table.
#[derive(Debug, Clone)]
pub struct Attempt<'a> {
    pub outbox_id: i64,
    pub attempt: i32,
    pub fence: i64,
    pub worker: &'a str,
    /// `validate`, `send` or `read_back`.
    pub action: &'static str,
    /// One of the outcomes the table's check allows.
    pub outcome: &'static str,
    pub request_summary: Option<&'a str>,
    pub http_status: Option<u16>,
    pub response_excerpt: Option<&'a str>,
    pub error: Option<&'a str>,
    pub started_at: DateTime<Utc>,
    pub duration: Duration,
}

/// Records an attempt. Attempts are history: they are written whether or not the claim is still current.
pub async fn record_attempt(
    db: impl PgExecutor<'_>,
    attempt: &Attempt<'_>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "insert into outbox_attempts (outbox_id, attempt, fence, worker, action, outcome,
            request_summary, http_status, response_excerpt, error, started_at, duration_ms)
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
    )
    .bind(attempt.outbox_id)
    .bind(attempt.attempt)
    .bind(attempt.fence)
    .bind(attempt.worker)
    .bind(attempt.action)
    .bind(attempt.outcome)
    .bind(attempt.request_summary.map(storable_text))
    .bind(attempt.http_status.map(i32::from))
    .bind(attempt.response_excerpt.map(storable_text))
    .bind(attempt.error.map(storable_text))
    .bind(attempt.started_at)
    .bind(duration_ms(attempt.duration))
    .execute(db)
    .await?;
    Ok(())
}

/// One row by id.
pub async fn get(db: impl PgExecutor<'_>, id: i64) -> Result<Option<OutboxRow>, sqlx::Error> {
    sqlx::query_as("select * from outbox where id = $1")
        .bind(id)
        .fetch_optional(db)
        .await
}

/// A row of [`list`]: the transition with its account's name.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow, Serialize)]
pub struct Listed {
    pub account: String,
    #[sqlx(flatten)]
    #[serde(flatten)]
    pub row: OutboxRow,
}

/// Transitions, newest first, optionally of one state and/or account (by name).
pub async fn list(
    db: impl PgExecutor<'_>,
    state: Option<OutboxState>,
    account: Option<&str>,
    limit: i64,
) -> Result<Vec<Listed>, sqlx::Error> {
    sqlx::query_as(
        "select a.name as account, o.* from outbox o join accounts a on a.id = o.account_id
         where ($1::text is null or o.state = $1) and ($2::text is null or a.name = $2)
         order by o.id desc limit $3",
    )
    .bind(state.map(OutboxState::as_str))
    .bind(account)
    .bind(limit)
    .fetch_all(db)
    .await
}

/// The attempts of one transition, oldest first.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow, Serialize)]
pub struct AttemptRow {
    pub attempt: i32,
    pub fence: i64,
    pub worker: String,
    pub action: String,
    pub outcome: String,
    pub request_summary: Option<String>,
    pub http_status: Option<i32>,
    pub response_excerpt: Option<String>,
    pub error: Option<String>,
    pub started_at: DateTime<Utc>,
    pub duration_ms: i32,
}

pub async fn attempts(
    db: impl PgExecutor<'_>,
    outbox_id: i64,
) -> Result<Vec<AttemptRow>, sqlx::Error> {
    sqlx::query_as(
        "select attempt, fence, worker, action, outcome, request_summary, http_status,
            response_excerpt, error, started_at, duration_ms
         from outbox_attempts where outbox_id = $1 order by id",
    )
    .bind(outbox_id)
    .fetch_all(db)
    .await
}

/// What an operator's retry or cancel did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OperatorAction {
    Done,
    /// The transition is in a state the action does not apply to.
    NotAllowed {
        state: String,
    },
    NotFound,
}

/// Makes a failed, dead or unknown transition (or a pending one scheduled later) due now, with a fresh
/// budget of attempts (the attempts table keeps the history).
pub async fn retry(pool: &PgPool, id: i64) -> Result<OperatorAction, sqlx::Error> {
    let done = sqlx::query(
        "update outbox
            set state = 'pending', next_attempt_at = now(), finished_at = null, updated_at = now(),
                attempts = case when state = 'pending' then attempts else 0 end
         where id = $1 and state in ('failed', 'dead', 'unknown', 'pending')",
    )
    .bind(id)
    .execute(pool)
    .await?
    .rows_affected();
    operator_action(pool, id, done).await
}

/// Cancels a transition that is neither running nor finished (pending, failed, dead, unknown); later
/// transitions of its order may then run.
pub async fn cancel(pool: &PgPool, id: i64) -> Result<OperatorAction, sqlx::Error> {
    let done = sqlx::query(
        "update outbox
            set state = 'cancelled', next_attempt_at = null, finished_at = now(), updated_at = now()
         where id = $1 and state in ('pending', 'failed', 'dead', 'unknown')",
    )
    .bind(id)
    .execute(pool)
    .await?
    .rows_affected();
    operator_action(pool, id, done).await
}

async fn operator_action(pool: &PgPool, id: i64, done: u64) -> Result<OperatorAction, sqlx::Error> {
    if done == 1 {
        return Ok(OperatorAction::Done);
    }
    let state: Option<String> = sqlx::query_scalar("select state from outbox where id = $1")
        .bind(id)
        .fetch_optional(pool)
        .await?;
    Ok(state.map_or(OperatorAction::NotFound, |state| {
        OperatorAction::NotAllowed { state }
    }))
}

fn duration_ms(d: Duration) -> i32 {
    i32::try_from(d.as_millis()).unwrap_or(i32::MAX)
}

fn interval(d: Duration) -> PgInterval {
    PgInterval {
        months: 0,
        days: 0,
        microseconds: i64::try_from(d.as_micros()).unwrap_or(i64::MAX),
    }
}
