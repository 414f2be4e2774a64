//! The C2C store order services adapter (POST/JSON, `docs/c2c.txt`): it owns the order requests, the
//! status text mapping and the conversion of C2C orders.
//!
//! Every call is `POST {base_url}/api/c2c/StoreOrderServices/{Method}` with a JSON body carrying the
//! credentials (`Domain`, `ApiKey`, `ApiPassword`): bodies are never logged or put into errors (the
//! shared client never copies request bodies), and only the method name goes into `what`.
//!
//! Request plan (one request per page, no pagination):
//! - stream `new`: windows of at most six hours over the order date with `GetOrdersDate`;
//!   `BaslangicTarihi`/`BitisTarihi` are `dd.MM.yyyy HH:mm` Istanbul time, `from` rounded down and `to`
//!   rounded up to the minute (the API has minute precision; the overlap is harmless). Six hours, not a
//!   day: the answer is unpaginated, and a busy shop's day is thousands of orders held at once.
//! - stream `status`: the orders the store still holds open (except those the `new` stream stored
//!   during the same poll), a batch at a time, re-read whole with `GetOrderInfoByOrdersCode`.
//!   `GetOrdersStateByOrdersCode` is not used: it returns only code and
//!   status text (in a different vocabulary, e.g. `Sipariş Tamamlandı`), cannot produce a complete order
//!   and, without the previously stored status, cannot even save the second request — one full read
//!   per batch costs the same one request and brings every change, not only the status.
//!
//! A success is a JSON array; an error is a JSON object, also with HTTP 200, and is detected by shape.
//! Status texts map as the digest says (see [`DEFAULTS`]); amount and date rules are in [`wire`];
//! the one transition and its read-back are in [`transitions`].

#[cfg(test)]
mod proptests;
mod transitions;
mod wire;

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, TimeDelta, Utc};
use chrono_tz::Europe::Istanbul;
use reqwest::Method;
use serde_json::{Value, json};
use url::Url;

use super::{
    AppliedTransition, Marketplace, MarketplaceError, Page, PageRequest, StatusMap, StreamPlan,
    StreamSpec, Transition, TransitionRefusal,
};
use crate::config::{AccountConfig, Credentials, Secret};
use crate::domain::{Order, OrderState};
use crate::http::HttpClient;
use crate::marketplace::payload::{fold, is_json};
use wire::Problem;

const STREAM_NEW: &str = "new";
const STREAM_STATUS: &str = "status";

/// The streams of an account whose status batches hold `batch` order codes.
fn stream_specs(batch: usize) -> [StreamSpec; 2] {
    [
        StreamSpec {
            name: STREAM_NEW,
            plan: StreamPlan::Windows {
                max_window: Some(Duration::from_secs(6 * 60 * 60)),
                adaptive: false,
                reread_open: false,
                changes_only: false,
            },
        },
        StreamSpec {
            name: STREAM_STATUS,
            plan: StreamPlan::OpenOrders { batch },
        },
    ]
}

/// The digest's status table. The order services answer with the texts above `İtiraz Edildi`;
/// `İtiraz Edildi` and `Sipariş Tamamlandı` come from the status query's vocabulary, and `İade Edildi`
/// from the "returned orders" category of `GetOrdersState`.
const DEFAULTS: &[(&str, OrderState)] = &[
    ("Tamamlanmamış", OrderState::AwaitingPayment),
    ("Ödeme Bekliyor", OrderState::AwaitingPayment),
    ("Onay Bekliyor", OrderState::AwaitingApproval),
    ("Tedarik sürecinde", OrderState::Preparing),
    ("Hazırlanıyor", OrderState::Preparing),
    ("Kargoya Verildi", OrderState::Shipped),
    ("Teslim Edildi", OrderState::Delivered),
    ("Tamamlandı", OrderState::Completed),
    ("Sipariş Tamamlandı", OrderState::Completed),
    ("İptal Edildi", OrderState::Cancelled),
    ("İtiraz Edildi", OrderState::Disputed),
    ("İade Edildi", OrderState::Returned),
];

/// Maps C2C status texts to canonical states: the operator's table or [`DEFAULTS`] by exact text,
/// then [`DEFAULTS`] ignoring case, spacing and Turkish diacritics, then the composite rule of the
/// digest: `X - İtiraz Edildi` is disputed and `X - İptal Edildi` cancelled, whatever X is.
#[derive(Debug, Clone)]
struct Statuses {
    map: StatusMap,
}

impl Statuses {
    fn new(overrides: &HashMap<String, OrderState>) -> Statuses {
        Statuses {
            map: StatusMap::new(DEFAULTS, overrides),
        }
    }

    fn state(&self, text: &str) -> OrderState {
        let exact = self.map.map(text.trim());
        if exact != OrderState::Unknown {
            return exact;
        }
        let folded = fold(text);
        if let Some((_, state)) = DEFAULTS.iter().find(|(raw, _)| fold(raw) == folded) {
            return *state;
        }
        match folded.rsplit_once(" - ") {
            Some((_, "itiraz edildi")) => OrderState::Disputed,
            Some((_, "iptal edildi")) => OrderState::Cancelled,
            _ => OrderState::Unknown,
        }
    }
}

/// A C2C store.
pub struct C2c {
    http: HttpClient,
    streams: [StreamSpec; 2],
    base_url: Url,
    /// `None` when the account's credentials are not C2C's (configuration validation prevents it);
    /// every request then fails with a clear message instead of a panic.
    auth: Option<Auth>,
    statuses: Statuses,
    /// Order codes per `GetOrderInfoByOrdersCode` request (the account's page size).
    codes_per_request: usize,
}

struct Auth {
    domain: String,
    api_key: Secret,
    api_password: Secret,
}

impl C2c {
    pub fn new(
        account: &AccountConfig,
        http: HttpClient,
        overrides: &HashMap<String, OrderState>,
    ) -> C2c {
        let auth = match &account.credentials {
            Credentials::C2c {
                domain,
                api_key,
                api_password,
            } => Some(Auth {
                domain: domain.clone(),
                api_key: api_key.clone(),
                api_password: api_password.clone(),
            }),
            _ => None,
        };
        let codes_per_request = usize::try_from(account.page_size)
            .unwrap_or(usize::MAX)
            .max(1);
        C2c {
            http,
            streams: stream_specs(codes_per_request),
            base_url: account.base_url.clone(),
            auth,
            statuses: Statuses::new(overrides),
            codes_per_request,
        }
    }

    /// Calls `method` with `fields` (the credentials are added here) and converts the orders.
    async fn call(
        &self,
        what: &str,
        method: &str,
        fields: Value,
    ) -> Result<Vec<crate::domain::Order>, MarketplaceError> {
        let auth = self
            .auth
            .as_ref()
            .ok_or_else(|| MarketplaceError::Rejected {
                what: what.to_owned(),
                status: None,
                message: "the account has no C2C credentials".to_owned(),
            })?;
        let request = self
            .http
            .request(Method::POST, method_url(&self.base_url, method).as_str())
            .header(reqwest::header::ACCEPT, "application/json")
            .json(&request_body(auth, fields));
        let response = self.http.send(what, request, wire::api_message).await?;
        let body = &response.body;
        if !is_json(response.content_type.as_deref()) {
            return Err(MarketplaceError::malformed(
                &self.http,
                what,
                format!(
                    "content type `{}`, expected JSON",
                    response.content_type.as_deref().unwrap_or_default()
                ),
                body,
            ));
        }
        wire::parse_orders(body, &self.statuses, self.http.redactor()).map_err(|p| match p {
            Problem::Malformed(reason) => {
                MarketplaceError::malformed(&self.http, what, reason, body)
            }
            Problem::Rejected(message) => MarketplaceError::Rejected {
                what: what.to_owned(),
                status: None,
                message: self.http.redactor().redact(&message),
            },
        })
    }
}

#[async_trait]
impl Marketplace for C2c {
    fn streams(&self) -> Vec<StreamSpec> {
        self.streams.to_vec()
    }

    async fn fetch_page(
        &self,
        stream: &str,
        request: &PageRequest,
    ) -> Result<Page, MarketplaceError> {
        let (what, method, fields) = match stream {
            STREAM_NEW => {
                let (start, end) = window_dates(request.from, request.to);
                (
                    format!("POST GetOrdersDate {start}–{end}"),
                    "GetOrdersDate",
                    json!({ "BaslangicTarihi": start, "BitisTarihi": end }),
                )
            }
            STREAM_STATUS => {
                if request.order_ids.is_empty() {
                    return Ok(Page {
                        orders: Vec::new(),
                        next: None,
                        requests: 0,
                        more: None,
                    });
                }
                (
                    format!(
                        "POST GetOrderInfoByOrdersCode ({} codes)",
                        request.order_ids.len()
                    ),
                    "GetOrderInfoByOrdersCode",
                    json!({ "SiparisKodlari": request.order_ids }),
                )
            }
            _ => {
                return Err(MarketplaceError::Rejected {
                    what: format!("c2c stream `{stream}`"),
                    status: None,
                    message: format!("C2C has no stream `{stream}`"),
                });
            }
        };
        let orders = self.call(&what, method, fields).await?;
        Ok(Page {
            orders,
            next: None,
            requests: 1,
            more: None,
        })
    }
    fn validate_transition(
        &self,
        transition: &Transition,
        current: Option<&Order>,
    ) -> Result<(), TransitionRefusal> {
        let target = transitions::parse(transition)?;
        transitions::check_legal(target, current)
    }

    async fn apply_transition(
        &self,
        transition: &Transition,
    ) -> Result<AppliedTransition, MarketplaceError> {
        self.send_update(transition).await
    }

    async fn fetch_order(&self, external_id: &str) -> Result<Option<Order>, MarketplaceError> {
        let found = self.read_back(&[external_id.to_owned()]).await?;
        Ok(found.into_iter().next())
    }

    async fn fetch_orders_by_id(
        &self,
        external_ids: &[String],
    ) -> Result<Vec<Order>, MarketplaceError> {
        self.read_back(external_ids).await
    }

    fn transition_took_effect(&self, transition: &Transition, order: &Order) -> bool {
        transitions::parse(transition).is_ok_and(|target| transitions::took_effect(target, order))
    }
}

/// `GetOrdersDate`'s bounds for `[from, to)`: `from` rounded down and `to` rounded up to the minute,
/// as Istanbul wall-clock time `dd.MM.yyyy HH:mm`.
fn window_dates(from: DateTime<Utc>, to: DateTime<Utc>) -> (String, String) {
    const FORMAT: &str = "%d.%m.%Y %H:%M";
    let minute_started = to.timestamp().rem_euclid(60) != 0 || to.timestamp_subsec_nanos() != 0;
    let end = if minute_started {
        to + TimeDelta::minutes(1)
    } else {
        to
    };
    (
        from.with_timezone(&Istanbul).format(FORMAT).to_string(),
        end.with_timezone(&Istanbul).format(FORMAT).to_string(),
    )
}

/// The JSON body of a call: the credentials, then the method's own fields.
fn request_body(auth: &Auth, fields: Value) -> Value {
    let mut body = json!({
        "Domain": auth.domain,
        "ApiKey": auth.api_key.expose(),
        "ApiPassword": auth.api_password.expose(),
    });
    if let (Value::Object(body), Value::Object(fields)) = (&mut body, fields) {
        body.extend(fields);
    }
    body
}

/// `base` with `/api/c2c/StoreOrderServices/{method}` appended to its path.
fn method_url(base: &Url, method: &str) -> Url {
    let mut url = base.clone();
    url.set_query(None);
    url.set_fragment(None);
    if let Ok(mut path) = url.path_segments_mut() {
        path.pop_if_empty()
            .extend(["api", "c2c", "StoreOrderServices", method]);
    }
    url
}

#[cfg(test)]
mod tests;
