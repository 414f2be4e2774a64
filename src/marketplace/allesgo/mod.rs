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
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use reqwest::Method;
use url::Url;

use super::{
    AppliedTransition, Marketplace, MarketplaceError, Page, PageRequest, StatusDescription,
    StreamPlan, StreamSpec, Transition, TransitionRefusal,
};
use crate::config::{AccountConfig, Credentials, Secret};
use crate::domain::{Order, OrderState};
use crate::http::{HttpClient, HttpResponse};
use crate::marketplace::payload::is_json;
use state::Statuses;
use wire::Problem;

const STREAM_NEW: &str = "new";
const STREAM_UPDATES: &str = "updates";
const DAY: Duration = Duration::from_secs(24 * 60 * 60);

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
    statuses: Statuses,
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
            statuses: Statuses::new(overrides),
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

    /// Sends a GET to `url` (the token is added here) and returns the body of a JSON response.
    async fn get(
        &self,
        what: &str,
        mut url: Url,
        auth: &Auth,
    ) -> Result<HttpResponse, MarketplaceError> {
        url.query_pairs_mut()
            .append_pair("access_token", auth.access_token.expose());
        let request = self
            .http
            .request(Method::GET, url.as_str())
            .header(reqwest::header::ACCEPT, "application/json");
        let response = self.http.send(what, request, wire::api_message).await?;
        if !is_json(response.content_type.as_deref()) {
            return Err(MarketplaceError::malformed(
                &self.http,
                what,
                format!(
                    "content type `{}`, expected JSON",
                    response.content_type.as_deref().unwrap_or_default()
                ),
                &response.body,
            ));
        }
        Ok(response)
    }

    fn problem(&self, what: &str, problem: Problem, body: &[u8]) -> MarketplaceError {
        match problem {
            Problem::Malformed(reason) => {
                MarketplaceError::malformed(&self.http, what, reason, body)
            }
            Problem::Rejected(message) => MarketplaceError::Rejected {
                what: what.to_owned(),
                status: None,
                message: self.http.redactor().redact(&message),
            },
        }
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
        let response = self.get(&what, url, auth).await?;
        let orders = wire::parse_orders(&response.body, &self.statuses, self.http.redactor())
            .map_err(|p| self.problem(&what, p, &response.body))?;
        Ok(Page {
            orders,
            next: None,
            requests: 1,
        })
    }

    async fn status_catalog(&self) -> Result<Vec<StatusDescription>, MarketplaceError> {
        let what = "GET order/status-codes";
        let auth = self.auth(what)?;
        let url = endpoint(&self.base_url, &["v1.0", "order", "status-codes"]);
        let response = self.get(what, url, auth).await?;
        wire::parse_status_codes(&response.body).map_err(|p| self.problem(what, p, &response.body))
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
