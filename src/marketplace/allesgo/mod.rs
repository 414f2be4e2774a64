//! The allesgo adapter (formerly ipsizcambaz; REST/JSON, `docs/allesgo.txt`): it owns the order
//! listing requests, the status-code catalogue and the conversion of allesgo orders.
//!
//! Request plan (`GET {base_url}/v1.0/order/store/{storeId}`, no pagination, one request per page):
//! - stream `new`: windows of at most one day over the order date, halved by the poller when one
//!   returns many orders; `start_date = ⌊from⌋ − 1` and `end_date = ⌈to⌉` in Unix seconds, because the
//!   document says "after" and "before" without saying whether the bounds are inclusive and a second
//!   of over-fetch is harmless.
//! - stream `updates`: one window; `updates_only=1&days=N` with `N = ⌈(to − from) in days⌉ + 1`, since
//!   allesgo counts `days` back from now and the window ends at about now. It lists changes only
//!   (`changes_only`): its first run starts when the account was registered, since the `new` stream's
//!   backfill reads every order as it is after that moment; asking `days = initial_sync_days` would
//!   return every order of the backfill in one unpaginated answer.
//! - Listings are read as they arrive ([`Page::more`]): a blocking thread parses the body and converts
//!   its orders in batches of 500, at most a batch ahead of the writes, so an answer of any size
//!   costs about two batches of memory. An answer that breaks off fails the run after the batches before
//!   the break are written; a malformed one is recorded with the failing order's text, or with the
//!   last 64 KiB received when the JSON itself is broken.
//! - [`Marketplace::status_catalog`]: `GET {base_url}/v1.0/order/status-codes`.
//! - transitions and their read-back: see [`transitions`].
//!
//! The token travels as the `access_token` query parameter, so every request URL is secret-bearing:
//! URLs are never logged, put into errors (the shared client drops them) or returned. Statuses live on
//! packages and items; the order's state is derived from its packages ([`state`] documents both rules).
//! Amount and date rules are in [`wire`].

#[cfg(test)]
mod proptests;
mod state;
mod transitions;
mod wire;

use std::collections::HashMap;
use std::io::BufReader;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use reqwest::Method;
use url::Url;

use super::{
    AppliedTransition, Marketplace, MarketplaceError, MoreOrders, OrderBatch, Page, PageRequest,
    StatusDescription, StreamPlan, StreamSpec, Transition, TransitionRefusal,
};
use crate::config::{AccountConfig, Credentials, Secret};
use crate::domain::{Order, OrderState};
use crate::http::{HttpClient, HttpResponse};
use crate::marketplace::payload::{Tail, is_json};
use crate::poller::error_chain;
use state::Statuses;
use wire::{ListingProblem, Problem};

const STREAM_NEW: &str = "new";
const STREAM_UPDATES: &str = "updates";
const DAY: Duration = Duration::from_secs(24 * 60 * 60);
/// Orders converted per batch of a listing read as it arrives, and written per transaction: memory
/// holds two batches.
const LISTING_BATCH: usize = 500;
/// How much of a listing's body, read as it arrives, is recorded when it turns out malformed: the
/// bytes received last, up to where the parser stopped.
const RECORDED_TAIL_BYTES: usize = 64 * 1024;

static STREAMS: [StreamSpec; 2] = [
    StreamSpec {
        name: STREAM_NEW,
        plan: StreamPlan::Windows {
            max_window: Some(DAY),
            adaptive: true,
            reread_open: false,
            changes_only: false,
        },
    },
    StreamSpec {
        name: STREAM_UPDATES,
        plan: StreamPlan::Windows {
            max_window: None,
            adaptive: false,
            reread_open: false,
            changes_only: true,
        },
    },
];

/// An allesgo store.
pub struct Allesgo {
    http: HttpClient,
    base_url: Url,
    /// `None` when the account's credentials are not allesgo's (configuration validation prevents
    /// it); every request then fails with a clear message instead of a panic.
    auth: Option<Auth>,
    statuses: Arc<Statuses>,
}

struct Auth {
    store_id: String,
    access_token: Secret,
}

impl Allesgo {
    pub fn new(
        account: &AccountConfig,
        http: HttpClient,
        overrides: &HashMap<String, OrderState>,
    ) -> Allesgo {
        let auth = match &account.credentials {
            Credentials::Allesgo {
                store_id,
                access_token,
            } => Some(Auth {
                store_id: store_id.clone(),
                access_token: access_token.clone(),
            }),
            _ => None,
        };
        Allesgo {
            http,
            base_url: account.base_url.clone(),
            auth,
            statuses: Arc::new(Statuses::new(overrides)),
        }
    }

    fn auth(&self, what: &str) -> Result<&Auth, MarketplaceError> {
        self.auth
            .as_ref()
            .ok_or_else(|| MarketplaceError::Rejected {
                what: what.to_owned(),
                status: None,
                message: "the account has no allesgo credentials".to_owned(),
            })
    }

    /// A GET of `url` with the token added.
    fn request(&self, mut url: Url, auth: &Auth) -> reqwest::RequestBuilder {
        url.query_pairs_mut()
            .append_pair("access_token", auth.access_token.expose());
        self.http
            .request(Method::GET, url.as_str())
            .header(reqwest::header::ACCEPT, "application/json")
    }

    /// Sends a GET to `url` (the token is added here) and returns the body of a JSON response.
    async fn get(
        &self,
        what: &str,
        url: Url,
        auth: &Auth,
    ) -> Result<HttpResponse, MarketplaceError> {
        let response = self
            .http
            .send(what, self.request(url, auth), wire::api_message)
            .await?;
        if !is_json(response.content_type.as_deref()) {
            let reason = not_json_reason(response.content_type.as_deref());
            return Err(MarketplaceError::malformed(
                &self.http,
                what,
                reason,
                &response.body,
            ));
        }
        Ok(response)
    }

    /// Sends an order listing request to `url` and reads the answer as it arrives, on a blocking
    /// thread, converting its orders in batches of [`LISTING_BATCH`]: an unpaginated answer may hold
    /// every order changed in days. The reader runs at most a batch ahead of the caller and stops
    /// when the batches are dropped.
    async fn list(
        &self,
        what: &str,
        url: Url,
        auth: &Auth,
    ) -> Result<MoreOrders, MarketplaceError> {
        let response = self
            .http
            .send_streaming(what, self.request(url, auth), wire::api_message)
            .await?;
        if let Some(content_type) = response.content_type.clone()
            && !is_json(Some(&content_type))
        {
            // One byte more than is recorded shows whether the start is cut.
            let mut start = response.first_bytes(RECORDED_TAIL_BYTES + 1).await;
            let cut = start.len() > RECORDED_TAIL_BYTES;
            start.truncate(RECORDED_TAIL_BYTES);
            let reason = not_json_reason(Some(&content_type));
            return Err(MarketplaceError::malformed_piece(
                &self.http,
                what,
                reason,
                &start,
                (false, cut),
            ));
        }
        let body = response.into_reader();
        let (sender, batches) = tokio::sync::mpsc::channel(1);
        let (http, statuses, what_owned) =
            (self.http.clone(), self.statuses.clone(), what.to_owned());
        tokio::task::spawn_blocking(move || {
            read_listing(body, &http, &statuses, &what_owned, &sender);
        });
        Ok(MoreOrders::new(what, batches))
    }
}

#[async_trait]
impl Marketplace for Allesgo {
    fn streams(&self) -> Vec<StreamSpec> {
        STREAMS.to_vec()
    }

    async fn fetch_page(
        &self,
        stream: &str,
        request: &PageRequest,
    ) -> Result<Page, MarketplaceError> {
        let query = orders_query(stream, request.from, request.to).ok_or_else(|| {
            MarketplaceError::Rejected {
                what: format!("allesgo stream `{stream}`"),
                status: None,
                message: format!("allesgo has no stream `{stream}`"),
            }
        })?;
        let what = format!("GET order/store {}", describe(&query));
        let auth = self.auth(&what)?;
        let url = orders_url(&self.base_url, &auth.store_id, &query);
        let mut more = self.list(&what, url, auth).await?;
        let first = more.next().await?;
        Ok(Page {
            orders: first.orders,
            next: None,
            requests: 1,
            more: (!first.last).then_some(more),
        })
    }

    async fn status_catalog(&self) -> Result<Vec<StatusDescription>, MarketplaceError> {
        let what = "GET order/status-codes";
        let auth = self.auth(what)?;
        let url = endpoint(&self.base_url, &["v1.0", "order", "status-codes"]);
        let response = self.get(what, url, auth).await?;
        wire::parse_status_codes(&response.body)
            .map_err(|p| problem(&self.http, what, p, &response.body))
    }

    fn validate_transition(
        &self,
        transition: &Transition,
        current: Option<&Order>,
    ) -> Result<(), TransitionRefusal> {
        let action = transitions::parse(transition)?;
        transitions::check_legal(&action, current)
    }

    async fn apply_transition(
        &self,
        transition: &Transition,
    ) -> Result<AppliedTransition, MarketplaceError> {
        self.send_action(transition).await
    }

    async fn fetch_order(&self, external_id: &str) -> Result<Option<Order>, MarketplaceError> {
        self.read_back(external_id).await
    }

    fn transition_took_effect(&self, transition: &Transition, order: &Order) -> bool {
        transitions::parse(transition).is_ok_and(|action| transitions::took_effect(&action, order))
    }
}

/// Why an answer with this content type is not read.
fn not_json_reason(content_type: Option<&str>) -> String {
    format!(
        "content type `{}`, expected JSON",
        content_type.unwrap_or_default()
    )
}

/// The error of a 200 answer that could not be used; `body` is what is recorded of it.
fn problem(http: &HttpClient, what: &str, problem: Problem, body: &[u8]) -> MarketplaceError {
    match problem {
        Problem::Malformed(reason) => MarketplaceError::malformed(http, what, reason, body),
        Problem::Rejected(message) => MarketplaceError::Rejected {
            what: what.to_owned(),
            status: None,
            message: http.redactor().redact(&message),
        },
    }
}

/// Reads a listing's body on a blocking thread (within the runtime) and sends its orders in batches
/// of [`LISTING_BATCH`] to `batches`, then the error that stopped it, if any (nothing when the
/// receiver is gone).
fn read_listing(
    body: impl std::io::Read,
    http: &HttpClient,
    statuses: &Statuses,
    what: &str,
    batches: &tokio::sync::mpsc::Sender<Result<OrderBatch, MarketplaceError>>,
) {
    let runtime = tokio::runtime::Handle::current();
    let mut body = Tail::new(body, RECORDED_TAIL_BYTES);
    let read = {
        let mut de = serde_json::Deserializer::from_reader(BufReader::new(&mut body));
        wire::read_orders(&mut de, statuses, http.redactor(), LISTING_BATCH, |batch| {
            // Reading goes on only once the batch is taken: one batch being written and one being
            // read, never a third waiting between them.
            batches.blocking_send(Ok(batch)).is_ok() && runtime.block_on(batches.reserve()).is_ok()
        })
    };
    let error = match read {
        Ok(()) | Err(ListingProblem::Stopped) => return,
        Err(ListingProblem::Order { index, reason, raw }) => {
            let reason = format!("order #{index}: {reason} (its text is recorded)");
            MarketplaceError::malformed(http, what, reason, raw.as_bytes())
        }
        Err(ListingProblem::Body(Problem::Malformed(reason))) => {
            let (last, read) = body.last();
            let reason = format!(
                "{reason} (the last {} of the {read} bytes received are recorded)",
                last.len()
            );
            let cut = read > last.len() as u64;
            MarketplaceError::malformed_piece(http, what, reason, last, (cut, false))
        }
        Err(ListingProblem::Body(rejected)) => problem(http, what, rejected, &[]),
        Err(ListingProblem::Read(e)) => MarketplaceError::Transient {
            what: what.to_owned(),
            detail: http
                .redactor()
                .redact(&format!("the answer broke off: {}", error_chain(&e))),
            retry_after: None,
            ambiguous: false,
        },
    };
    let _ = batches.blocking_send(Err(error));
}

/// The query of an order listing for `stream` over `[from, to)`, without the token; `None` for a
/// stream allesgo does not have.
fn orders_query(
    stream: &str,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Option<Vec<(&'static str, String)>> {
    match stream {
        STREAM_NEW => {
            let end = if to.timestamp_subsec_nanos() > 0 {
                to.timestamp() + 1
            } else {
                to.timestamp()
            };
            Some(vec![
                ("start_date", (from.timestamp() - 1).to_string()),
                ("end_date", end.to_string()),
            ])
        }
        STREAM_UPDATES => {
            let span = (to - from).num_seconds().max(0);
            let days = (span + 86_399) / 86_400 + 1;
            Some(vec![
                ("updates_only", "1".to_owned()),
                ("days", days.to_string()),
            ])
        }
        _ => None,
    }
}

/// A secret-free description of a query, for `what`.
fn describe(query: &[(&str, String)]) -> String {
    query
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn orders_url(base: &Url, store_id: &str, query: &[(&str, String)]) -> Url {
    let mut url = endpoint(base, &["v1.0", "order", "store", store_id]);
    url.query_pairs_mut().extend_pairs(query);
    url
}

/// `base` with `segments` appended to its path (each one percent-encoded), whether or not the base
/// path ends with a slash.
fn endpoint(base: &Url, segments: &[&str]) -> Url {
    let mut url = base.clone();
    url.set_query(None);
    url.set_fragment(None);
    if let Ok(mut path) = url.path_segments_mut() {
        path.pop_if_empty().extend(segments);
    }
    url
}

#[cfg(test)]
mod tests;
