//! The outbox: order transitions (accept, ship, cancel…) queued by operators ([`enqueue`], `ordersync
//! outbox add`) or other programs (SQL, see the migration), and the worker ([`worker`]) that delivers them
//! to the marketplaces.
//!
//! Contract:
//! - **Checked when queued.** [`enqueue`] asks the account's adapter
//!   ([`Marketplace::validate_transition`]) whether the kind exists, the arguments are valid and the
//!   transition is legal from the order's last known state; a refusal says why and nothing is queued.
//!   When an earlier transition of the same order is still queued (or succeeded after the order was last
//!   stored) the stored state is stale, so only the kind and the arguments are checked. Rows inserted by
//!   SQL are checked the same way by the worker before their first send, and marked failed when invalid.
//! - **In order, once in effect.** Within an order, transitions run strictly in queue order; each is sent
//!   until it succeeds, is refused (failed), or exhausts its attempts (dead). After an ambiguous send (a
//!   timeout after the request left) the order is read back and the send is repeated only when it did not
//!   take effect. Failed, dead and unknown transitions block their order until an operator retries or
//!   cancels them.
//! - **Transient failures back off.** Delays grow exponentially with jitter (backon), never below the
//!   API's `Retry-After`, and are stored as `next_attempt_at`, so a restart keeps the schedule.

pub mod worker;

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};

use crate::config::OutboxConfig;
use crate::marketplace::{Marketplace, Transition, TransitionRefusal};
use crate::store::outbox::{self as store_outbox, NewTransition};
use crate::store::{self, StoreError};

pub use worker::{OutboxWorker, Outcome};

/// The notification channel the outbox trigger raises (payload: the account id).
pub const CHANNEL: &str = "ordersync_outbox";

/// A failure of an outbox operation.
#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    /// The request was refused; nothing changed. Shown to the operator as is.
    #[error("refused: {0}")]
    Refused(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A send succeeded but its success could not be recorded (tried again while the failure could
    /// pass); the claim expires and the order is read back before anything is sent again.
    #[error("the success of transition {id} could not be recorded: {reason}")]
    Unrecorded { id: i64, reason: String },
}

impl From<sqlx::Error> for OutboxError {
    fn from(e: sqlx::Error) -> Self {
        OutboxError::Store(StoreError::Database(e))
    }
}

impl From<TransitionRefusal> for OutboxError {
    fn from(e: TransitionRefusal) -> Self {
        OutboxError::Refused(e.0)
    }
}

/// Tuning of the outbox worker.
#[derive(Debug, Clone)]
pub struct OutboxSettings {
    /// How long a claim lasts; it is renewed before a request once half of it has passed. A worker
    /// that dies loses its claims after this.
    pub lease_ttl: Duration,
    /// Transitions of one account talking to the marketplace at once (they share the account's rate limit
    /// with its poller); the running worker claims up to [`worker::CLAIMS_PER_SLOT`] times as many.
    pub concurrency: usize,
    /// How often the worker looks for due work when no notification arrives.
    pub poll_interval: Duration,
    /// The first retry delay; later ones grow exponentially (factor 2) with jitter, up to `max_backoff`.
    pub min_backoff: Duration,
    pub max_backoff: Duration,
    /// How long in-flight transitions may take to finish at shutdown before their claims are released.
    pub shutdown_grace: Duration,
}

impl Default for OutboxSettings {
    fn default() -> Self {
        OutboxSettings::new(&OutboxConfig::default(), Duration::from_secs(20))
    }
}

impl OutboxSettings {
    /// The settings configured in `[outbox]`, with `shutdown_grace` for in-flight transitions.
    pub fn new(config: &OutboxConfig, shutdown_grace: Duration) -> Self {
        OutboxSettings {
            lease_ttl: config.lease,
            concurrency: config.concurrency,
            poll_interval: config.poll_interval,
            min_backoff: config.min_backoff,
            max_backoff: config.max_backoff,
            shutdown_grace,
        }
    }

    /// The delay before attempt `attempts + 1`, after `attempts` attempts ended in a transient failure:
    /// the backoff sequence's `attempts`-th delay, at least `retry_after`.
    pub fn backoff(&self, attempts: u32, retry_after: Option<Duration>) -> Duration {
        let delay = ExponentialBuilder::new()
            .with_min_delay(self.min_backoff)
            .with_max_delay(self.max_backoff)
            .with_factor(2.0)
            .with_jitter()
            .without_max_times()
            .build()
            .nth(attempts.saturating_sub(1) as usize)
            .unwrap_or(self.max_backoff);
        // Jitter adds up to one delay on top; keep the cap a cap.
        delay
            .min(self.max_backoff)
            .max(retry_after.unwrap_or_default())
    }
}

/// A transition to queue, as an operator or a program asks for it.
#[derive(Debug, Clone)]
pub struct EnqueueRequest {
    pub account_id: i64,
    pub transition: Transition,
    pub max_attempts: i32,
    /// Who asks (e.g. `cli:alice`), kept on the row.
    pub queued_by: String,
}

/// What [`enqueue`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Enqueued {
    pub id: i64,
    /// `false` when the idempotency key was queued before; `id` is then the earlier transition's.
    pub created: bool,
}

/// Checks a transition with the account's adapter and queues it.
pub async fn enqueue(
    pool: &sqlx::PgPool,
    marketplace: &dyn Marketplace,
    request: &EnqueueRequest,
) -> Result<Enqueued, OutboxError> {
    let t = &request.transition;
    if !(1..=1000).contains(&request.max_attempts) {
        return Err(OutboxError::Refused(format!(
            "max attempts must be between 1 and 1000, not {}",
            request.max_attempts
        )));
    }
    if let Some(existing) =
        sqlx::query_scalar::<_, i64>("select id from outbox where idempotency_key = $1")
            .bind(&t.idempotency_key)
            .fetch_optional(pool)
            .await?
    {
        return same_transition(pool, existing, request).await;
    }
    check(pool, marketplace, request.account_id, t, None).await?;
    let (id, created) = store_outbox::insert(
        pool,
        &NewTransition {
            account_id: request.account_id,
            order_external_id: &t.order_external_id,
            kind: &t.kind,
            args: &t.args,
            idempotency_key: &t.idempotency_key,
            max_attempts: request.max_attempts,
            queued_by: &request.queued_by,
        },
    )
    .await?;
    if !created {
        return same_transition(pool, id, request).await;
    }
    Ok(Enqueued { id, created })
}

/// A repeated idempotency key is accepted only for the same transition.
async fn same_transition(
    pool: &sqlx::PgPool,
    id: i64,
    request: &EnqueueRequest,
) -> Result<Enqueued, OutboxError> {
    let t = &request.transition;
    let row = store_outbox::get(pool, id)
        .await?
        .ok_or_else(|| OutboxError::Refused(format!("transition {id} vanished")))?;
    if row.account_id != request.account_id
        || row.order_external_id != t.order_external_id
        || row.kind != t.kind
        || row.args != serde_json::Value::Object(t.args.clone())
    {
        return Err(OutboxError::Refused(format!(
            "idempotency key `{}` was already used for transition {id} ({} of order {}) with other content",
            t.idempotency_key, row.kind, row.order_external_id
        )));
    }
    Ok(Enqueued { id, created: false })
}

/// Asks the adapter whether `transition` is valid, against the order's last known state when that state
/// is still meaningful (see the module docs). `before_id`: the transition's own id, when it is queued.
pub(crate) async fn check(
    pool: &sqlx::PgPool,
    marketplace: &dyn Marketplace,
    account_id: i64,
    transition: &Transition,
    before_id: Option<i64>,
) -> Result<(), OutboxError> {
    let stale = store_outbox::order_state_is_stale(
        pool,
        account_id,
        &transition.order_external_id,
        before_id,
    )
    .await?;
    let current = if stale {
        None
    } else {
        store::orders::load(pool, account_id, &transition.order_external_id).await?
    };
    marketplace.validate_transition(transition, current.as_ref())?;
    Ok(())
}

/// Parses `key=value` (a string) or `key:=json` (any JSON value) into the arguments map.
pub fn parse_args(
    pairs: &[String],
) -> Result<serde_json::Map<String, serde_json::Value>, OutboxError> {
    let mut args = serde_json::Map::new();
    for pair in pairs {
        let (key, value) = if let Some((key, json)) = pair.split_once(":=") {
            let value = serde_json::from_str(json).map_err(|e| {
                OutboxError::Refused(format!("argument `{key}`: `{json}` is not JSON: {e}"))
            })?;
            (key, value)
        } else if let Some((key, text)) = pair.split_once('=') {
            (key, serde_json::Value::String(text.to_owned()))
        } else {
            return Err(OutboxError::Refused(format!(
                "argument `{pair}` is neither key=value nor key:=json"
            )));
        };
        if key.is_empty() {
            return Err(OutboxError::Refused(format!(
                "argument `{pair}` has no name"
            )));
        }
        if args.insert(key.to_owned(), value).is_some() {
            return Err(OutboxError::Refused(format!(
                "argument `{key}` is given twice"
            )));
        }
    }
    Ok(args)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn args_are_strings_or_json() {
        let args = parse_args(&[
            "package_id=77".into(),
            "order_numbers:=[\"A1\",\"A2\"]".into(),
            "reason=a=b".into(),
        ])
        .unwrap();
        assert_eq!(args["package_id"], serde_json::json!("77"));
        assert_eq!(args["order_numbers"], serde_json::json!(["A1", "A2"]));
        assert_eq!(args["reason"], serde_json::json!("a=b"));
        assert!(parse_args(&["novalue".into()]).is_err());
        assert!(parse_args(&["=x".into()]).is_err());
        assert!(parse_args(&["a=1".into(), "a=2".into()]).is_err());
        assert!(parse_args(&["a:=[".into()]).is_err());
    }

    #[test]
    fn backoff_grows_is_capped_and_honours_retry_after() {
        let settings = OutboxSettings {
            min_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(60),
            ..OutboxSettings::default()
        };
        let first = settings.backoff(1, None);
        assert!(first >= Duration::from_secs(1) && first <= Duration::from_secs(2));
        let fourth = settings.backoff(4, None);
        assert!(fourth >= Duration::from_secs(8) && fourth <= Duration::from_secs(16));
        assert!(settings.backoff(30, None) <= Duration::from_secs(60));
        assert!(settings.backoff(1, Some(Duration::from_secs(120))) >= Duration::from_secs(120));
    }
}
