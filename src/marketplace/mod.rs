//! The marketplace abstraction: the [`Marketplace`] trait every adapter implements, the errors they
//! report, status mapping with operator overrides, and [`build`], the one place that knows which adapter
//! serves which [`MarketplaceKind`].
//!
//! Adding a marketplace means one new module here and one arm in [`build`].

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::config::AccountConfig;
use crate::domain::{MarketplaceKind, Order, OrderState};
use crate::http::HttpClient;

pub mod allesgo;
mod args;
pub mod c2c;
#[cfg(test)]
mod fuzz;
pub mod gittigidiyor;
pub mod i1;
pub mod labs;
mod payload;

/// A source of orders on one marketplace for one account.
///
/// # Contract
///
/// * A marketplace is polled through one or more **streams** ([`Marketplace::streams`]), each with its
///   own cursor in the store. A stream's [`StreamPlan`] tells the poller how to ask for data.
/// * A **page** ([`Page`]) is what one call of [`Marketplace::fetch_page`] returns: a batch of complete,
///   normalized orders (an order always comes with its lines, packages and whatever related resources
///   the marketplace keeps elsewhere) plus the token of the next page, if any. The poller writes each page
///   in one transaction. The same order may appear in several pages or runs: writes are idempotent.
///   An answer too large to hold (allesgo's unpaginated listings) may be returned while it is still
///   being read: its first batch as the page's orders, the rest as [`Page::more`], which the poller
///   writes a batch per transaction as it arrives.
/// * For [`StreamPlan::Windows`] the poller asks for half-open windows `[from, to)` over the stream's
///   change time (or creation time, where the API has nothing better). The adapter must return every
///   order that changed (or was created) in the window, and may return more: over-fetching is safe,
///   under-fetching loses orders. The cursor moves to a window's `to` only after the window's last page
///   is committed, so a cursor promises: "every change before this instant is in the database".
/// * Errors say what to do next ([`MarketplaceError::disposition`]): transient ones (connect, timeout,
///   5xx, 429) are retried by the caller with backoff, honouring `retry_after`; permanent ones (other
///   4xx, a redirect, an error reported inside a 200 body) and malformed payloads fail the run with the
///   cursor unmoved; unauthorized needs an operator. Adapters never retry and never panic on input.
/// * Adapters never put a secret into an error, a log line or an order's raw payload.
/// * **Transitions** (the outbox): [`Marketplace::validate_transition`] decides, without any I/O, whether
///   a transition may be queued — the kind exists for this marketplace, its arguments are present and
///   valid, and it is legal from the order's last known state; a refusal says why.
///   [`Marketplace::apply_transition`] sends it once (the caller retries transient failures and never
///   calls it for a refused transition); a failure reported inside a 200 body is `Rejected`. When a
///   send ended ambiguously (timeout after sending), the caller reads the order back with
///   [`Marketplace::fetch_order`] and asks [`Marketplace::transition_took_effect`] before sending again.
///   After a success it re-reads the order, several orders at once where the API allows
///   ([`Marketplace::fetch_orders_by_id`]), so the database shows the new state.
#[async_trait]
pub trait Marketplace: Send + Sync {
    /// The streams this marketplace is polled by.
    fn streams(&self) -> Vec<StreamSpec>;

    /// Fetches one page of `stream` (one of the names in [`Marketplace::streams`]).
    async fn fetch_page(
        &self,
        stream: &str,
        request: &PageRequest,
    ) -> Result<Page, MarketplaceError>;

    /// The token of the page that follows the page named `token` in the same request, when the API's
    /// page tokens are predictable (page numbers), so the poller may ask for it before `token`'s page has
    /// answered. A page asked for this way is dropped unread when it lies past the end, or when the page
    /// before it names another next page. The default: tokens are opaque, and pages are asked for one
    /// after the other.
    fn page_after(&self, stream: &str, token: &str) -> Option<String> {
        let _ = (stream, token);
        None
    }

    /// The marketplace's catalogue of status codes with their descriptions, for marketplaces that
    /// publish one through the API (allesgo). Fetched at start-up and daily, and stored.
    async fn status_catalog(&self) -> Result<Vec<StatusDescription>, MarketplaceError> {
        Ok(Vec::new())
    }

    /// Whether `transition` may be queued, given the order's last known state (`None` when the order
    /// is not in the database). The default refuses everything: the marketplace is pull-only.
    fn validate_transition(
        &self,
        transition: &Transition,
        current: Option<&Order>,
    ) -> Result<(), TransitionRefusal> {
        let _ = (transition, current);
        Err(TransitionRefusal(
            "this marketplace documents no state-changing operation: it is pull-only".to_owned(),
        ))
    }

    /// Sends a validated transition once.
    async fn apply_transition(
        &self,
        transition: &Transition,
    ) -> Result<AppliedTransition, MarketplaceError> {
        Err(MarketplaceError::Rejected {
            what: format!("transition {}", transition.kind),
            status: None,
            message: "this marketplace documents no state-changing operation".to_owned(),
        })
    }

    /// Reads one order back, by external id; `Ok(None)` when the API offers no way to read a single
    /// order (or the order does not exist).
    async fn fetch_order(&self, external_id: &str) -> Result<Option<Order>, MarketplaceError> {
        let _ = external_id;
        Ok(None)
    }

    /// Reads several orders back, by external id, in as few requests as the API allows: the orders
    /// found, in no particular order (an id missing from the answer was not found, or the API offers no
    /// way to read single orders). The default asks [`Marketplace::fetch_order`] for each, all at once:
    /// the account's rate limit paces them.
    async fn fetch_orders_by_id(
        &self,
        external_ids: &[String],
    ) -> Result<Vec<Order>, MarketplaceError> {
        let reads = external_ids.iter().map(|id| self.fetch_order(id));
        let found = futures::future::try_join_all(reads).await?;
        Ok(found.into_iter().flatten().collect())
    }

    /// Whether `order`, as read back, shows that `transition` took effect.
    fn transition_took_effect(&self, transition: &Transition, order: &Order) -> bool {
        let _ = (transition, order);
        false
    }
}

/// A transition of one order, as queued in the outbox.
#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    /// The order's external id.
    pub order_external_id: String,
    /// The kind, e.g. `accept`, `ship`, `set-status` (see each adapter's module docs).
    pub kind: String,
    /// The kind's arguments, e.g. `{"package_id": "77", "shipping_code": "TR123"}`.
    pub args: serde_json::Map<String, serde_json::Value>,
    /// Sent to APIs that support idempotency keys; otherwise only used by the outbox.
    pub idempotency_key: String,
}

/// What a sent transition produced, for the attempts log (no secrets).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppliedTransition {
    /// e.g. `POST /v1.0/order/accept/store/4242 {"package_id":77}` (credentials left out).
    pub request_summary: String,
    pub http_status: u16,
    /// The first characters of the response body.
    pub response_excerpt: String,
}

/// Why a transition may not be queued.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct TransitionRefusal(pub String);

/// A stream of a marketplace and how it is planned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamSpec {
    pub name: &'static str,
    pub plan: StreamPlan,
}

/// How the poller plans a stream's requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamPlan {
    /// Half-open time windows from the cursor (minus the account's overlap) to the run's frozen upper
    /// bound, each at most `max_window` long (`None`: one window). With `adaptive`, the poller halves the
    /// window after one that returned more than a page size of orders and doubles it (up to
    /// `max_window`) after a quiet one — for APIs without pagination. With `reread_open`, the first window
    /// starts no later than the placement time of the oldest order of the account that is not final —
    /// for APIs whose filters cannot find changed orders; an incremental run then reads that range as
    /// one window, and an adapter that lists newest changes first ends it at the first order changed
    /// before [`PageRequest::changed_since`]. With `changes_only`, the stream lists changed orders
    /// only (another stream of the account backfills them by placement), so its first run starts when
    /// the account was registered (minus the overlap) rather than `initial_sync_days` back.
    Windows {
        max_window: Option<Duration>,
        adaptive: bool,
        reread_open: bool,
        changes_only: bool,
    },
    /// Re-read, by identifier, every order of the account the store holds in a non-final state, in
    /// batches of `batch` identifiers ([`PageRequest::order_ids`]). Used where the API offers no change
    /// filter at all. A live poll leaves out the orders stored since it started (a stream before this
    /// one has just read them; on a backfill, all of them). The stream's cursor records when the last
    /// full pass finished.
    OpenOrders { batch: usize },
}

/// One request for a page.
#[derive(Debug, Clone)]
pub struct PageRequest {
    /// The window `[from, to)`; for [`StreamPlan::OpenOrders`] both are the run's upper bound.
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    /// `None` for a window's first page, then the previous page's [`Page::next`].
    pub page: Option<String>,
    pub page_size: u32,
    /// For [`StreamPlan::OpenOrders`]: the external ids to re-read.
    pub order_ids: Vec<String>,
    /// On an incremental live run, the time from which changes matter (the cursor minus the overlap;
    /// on the first run of a `changes_only` stream, the account's registration minus the overlap, not
    /// before the backfill's start):
    /// an adapter whose pages list the newest changes first may end the window at the first order
    /// changed before it. `None` on a backfill or a replay, which read every page.
    pub changed_since: Option<DateTime<Utc>>,
    /// With [`PageRequest::changed_since`], what the database holds of the account's orders: an
    /// adapter that makes requests of their own to complete each listed order may leave out an order
    /// stored as it is listed. `None` on a backfill or a replay.
    pub stored: Option<Arc<dyn StoredOrders>>,
}

/// The account's orders as the database holds them, for an adapter deciding whether a listed order
/// changed since it was stored.
#[async_trait]
pub trait StoredOrders: fmt::Debug + Send + Sync {
    /// The raw payload ([`Order::raw`], as JSON text) stored for each of `external_ids` the database
    /// holds. Empty when the database cannot be read: every order is then completed from the API, as
    /// on a backfill.
    async fn raw(&self, external_ids: &[String]) -> HashMap<String, String>;
}

/// One page of orders.
#[derive(Debug)]
pub struct Page {
    pub orders: Vec<Order>,
    /// The token of the next page of the same window, or `None` when the window is complete.
    pub next: Option<String>,
    /// How many HTTP requests this page took (i1 fetches items and addresses separately).
    pub requests: u32,
    /// The rest of the page's orders when its answer is still being read (an unpaginated answer
    /// converted as it arrives, so that it is never held whole); `orders` are then its first batch.
    pub more: Option<MoreOrders>,
}

/// A batch of a page's orders, read from an answer still arriving.
#[derive(Debug)]
pub struct OrderBatch {
    pub orders: Vec<Order>,
    /// Whether the page ends with this batch.
    pub last: bool,
}

/// The batches of a page that come after its first ([`Page::more`]), in order. A failure here is
/// final for the page: the answer cannot be asked for again from where it broke off, so the caller
/// fails the run (the window's cursor stays) rather than retrying.
#[derive(Debug)]
pub struct MoreOrders {
    what: String,
    batches: tokio::sync::mpsc::Receiver<Result<OrderBatch, MarketplaceError>>,
}

impl MoreOrders {
    /// A page's batches as `what` (the request, for errors) sends them.
    pub fn new(
        what: &str,
        batches: tokio::sync::mpsc::Receiver<Result<OrderBatch, MarketplaceError>>,
    ) -> MoreOrders {
        MoreOrders {
            what: what.to_owned(),
            batches,
        }
    }

    /// The next batch. A reader that stops before sending the last batch is an error.
    pub async fn next(&mut self) -> Result<OrderBatch, MarketplaceError> {
        self.batches.recv().await.unwrap_or_else(|| {
            Err(MarketplaceError::Transient {
                what: self.what.clone(),
                detail: "the reading of the answer stopped before its end".to_owned(),
                retry_after: None,
                ambiguous: false,
            })
        })
    }
}

/// A status code and its description, as a marketplace publishes them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusDescription {
    pub code: String,
    pub description: String,
}

/// What the caller should do about an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// Try again after a backoff; at least `retry_after` when the API said so.
    Retry { retry_after: Option<Duration> },
    /// Give up on this request: the failure will not go away by itself.
    Fail,
    /// Stop and tell an operator: the credentials were refused.
    Operator,
}

/// A failure talking to a marketplace. Texts are already redacted.
#[derive(Debug, thiserror::Error)]
pub enum MarketplaceError {
    #[error("{what}: transient failure: {detail}")]
    Transient {
        what: String,
        detail: String,
        retry_after: Option<Duration>,
        /// The request may have reached the API (a timeout or reset after sending).
        ambiguous: bool,
    },
    #[error("{what}: refused{}: {message}", status.map(|s| format!(" with HTTP {s}")).unwrap_or_default())]
    Rejected {
        what: String,
        /// `None` when the API reported the error inside a successful response.
        status: Option<u16>,
        message: String,
    },
    #[error("{what}: credentials refused (HTTP {status}): {message}; an operator must renew them")]
    Unauthorized {
        what: String,
        status: u16,
        message: String,
    },
    #[error("{what}: malformed response: {reason}")]
    Malformed {
        what: String,
        reason: String,
        /// The body as received (redacted), so the payload can be recorded for an operator.
        raw_body: String,
    },
}

impl MarketplaceError {
    pub fn disposition(&self) -> Disposition {
        match self {
            MarketplaceError::Transient { retry_after, .. } => Disposition::Retry {
                retry_after: *retry_after,
            },
            MarketplaceError::Rejected { .. } | MarketplaceError::Malformed { .. } => {
                Disposition::Fail
            }
            MarketplaceError::Unauthorized { .. } => Disposition::Operator,
        }
    }

    /// A malformed-payload error for `what`, keeping the (redacted) body.
    pub fn malformed(
        http: &HttpClient,
        what: &str,
        reason: impl std::fmt::Display,
        body: &[u8],
    ) -> MarketplaceError {
        MarketplaceError::malformed_piece(http, what, reason, body, (false, false))
    }

    /// Like [`MarketplaceError::malformed`], recording only a piece of the body (its start or its
    /// end, for a body read as it arrives): `(cut_start, cut_end)` say where the piece was cut, so a
    /// secret cut through there is scrubbed too.
    pub fn malformed_piece(
        http: &HttpClient,
        what: &str,
        reason: impl std::fmt::Display,
        piece: &[u8],
        (cut_start, cut_end): (bool, bool),
    ) -> MarketplaceError {
        let redactor = http.redactor();
        MarketplaceError::Malformed {
            what: what.to_owned(),
            reason: redactor.redact(&reason.to_string()),
            raw_body: redactor.redact_piece(piece, cut_start, cut_end),
        }
    }
}

/// Maps a marketplace's raw status (code or text) to the canonical state: the adapter's defaults from
/// the digest, overridden per marketplace by the operator's `[status_map.<marketplace>]` table.
#[derive(Debug, Clone, Default)]
pub struct StatusMap {
    map: HashMap<String, OrderState>,
}

impl StatusMap {
    pub fn new(
        defaults: &[(&str, OrderState)],
        overrides: &HashMap<String, OrderState>,
    ) -> StatusMap {
        let mut map: HashMap<String, OrderState> = defaults
            .iter()
            .map(|(raw, state)| ((*raw).to_owned(), *state))
            .collect();
        map.extend(overrides.iter().map(|(k, v)| (k.clone(), *v)));
        StatusMap { map }
    }

    /// The canonical state of `raw`, or [`OrderState::Unknown`] when nobody mapped it.
    pub fn map(&self, raw: &str) -> OrderState {
        self.map.get(raw).copied().unwrap_or(OrderState::Unknown)
    }
}

/// Builds the adapter for an account. `overrides` are the operator's status mappings for the account's
/// marketplace.
pub fn build(
    account: &AccountConfig,
    http: HttpClient,
    overrides: &HashMap<String, OrderState>,
) -> Box<dyn Marketplace> {
    match account.marketplace {
        MarketplaceKind::Allesgo => Box::new(allesgo::Allesgo::new(account, http, overrides)),
        MarketplaceKind::C2c => Box::new(c2c::C2c::new(account, http, overrides)),
        MarketplaceKind::I1 => Box::new(i1::I1::new(account, http, overrides)),
        MarketplaceKind::Labs => Box::new(labs::Labs::new(account, http, overrides)),
        MarketplaceKind::Gittigidiyor => {
            Box::new(gittigidiyor::Gittigidiyor::new(account, http, overrides))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_win_and_unmapped_is_unknown() {
        let mut overrides = HashMap::new();
        overrides.insert("B".to_owned(), OrderState::OnHold);
        let map = StatusMap::new(
            &[("A", OrderState::Approved), ("B", OrderState::Shipped)],
            &overrides,
        );
        assert_eq!(map.map("A"), OrderState::Approved);
        assert_eq!(map.map("B"), OrderState::OnHold);
        assert_eq!(map.map("Z"), OrderState::Unknown);
    }
}
