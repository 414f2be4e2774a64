//! The GittiGidiyor adapter: `IndividualSaleService.getSalesByDateRange` over SOAP 1.1.
//!
//! One stream, `sales`, over windows of at most seven days. The range filter's date is not documented,
//! so the poller re-reads from the oldest sale that is not final (`reread_open`), and each window is
//! paged with `pageNumber` from 1 (the page token is the next page number) while the service says
//! `nextPageAvailable`. Requests ask for `withData=true`, every status, ordered by last action,
//! newest first (`orderBy=A`, `orderType=D`). An incremental run reads the open range as one window
//! and ends it at the first page whose oldest sale's `lastActionDate` is before
//! [`PageRequest::changed_since`]: every later sale changed even earlier and was read by an earlier
//! run. A page that is not in that order (a service ignoring `orderType`) never ends a window early.
//! Newest first also keeps paging safe: a sale that changes while the window is paged moves to page 1,
//! so the sales not yet read shift towards later pages (read twice at worst, never skipped), and the
//! change itself is after the run's upper bound, for the next run.
//!
//! Each request is authenticated twice: HTTP basic auth with the role name and role password, and in
//! the envelope `apiKey`, `time` (Unix milliseconds, taken once per request) and `sign`, the lowercase
//! hex MD5 of `apiKey + secretKey + time`. The envelope carries secrets and is never logged. The
//! service may echo a request's `sign` or its basic-auth credential back (a Fault about a bad
//! signature, a 401 page listing the request's headers), so each request goes through a client that
//! scrubs both from every error it makes and every body it records, as it does the account's secrets.
//!
//! Responses: one `<sale>` or many alike; `ackCode` other than `success` and SOAP Faults (HTTP 500 or
//! 200) are rejections carrying the service's message. Amounts, dates and states are normalized in
//! `wire`; `Order.raw` is the `<sale>` element converted to JSON by `xml`.

#[cfg(test)]
mod proptests;
mod wire;
mod xml;

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use chrono_tz::Europe::Istanbul;
use md5::{Digest, Md5};
use reqwest::Method;
use reqwest::header::CONTENT_TYPE;
use url::Url;

use super::{Marketplace, MarketplaceError, Page, PageRequest, StatusMap, StreamPlan, StreamSpec};
use crate::config::{AccountConfig, Credentials, Secret};
use crate::domain::{Order, OrderState};
use crate::http::HttpClient;

/// The one stream: sales by date range.
const SALES: &str = "sales";

const STREAMS: &[StreamSpec] = &[StreamSpec {
    name: SALES,
    plan: StreamPlan::Windows {
        max_window: Some(Duration::from_secs(7 * 24 * 60 * 60)),
        adaptive: false,
        reread_open: true,
        changes_only: false,
    },
}];

/// The digest's `statusCode` → canonical state table.
const DEFAULT_STATUSES: &[(&str, OrderState)] = &[
    ("STATUS_WAITING_CARGO_INFO", OrderState::Approved),
    ("STATUS_WAITING_APPROVAL", OrderState::Shipped),
    ("STATUS_APPROVED", OrderState::Completed),
    ("STATUS_FRAUD_REPORTED", OrderState::Disputed),
    ("STATUS_GIVEN_BACK_PRODUCT", OrderState::ReturnRequested),
    ("STATUS_GIVEN_BACK_PAYMENT", OrderState::Returned),
    ("STATUS_PROVISION_CC_CHECK", OrderState::AwaitingPayment),
    ("STATUS_EARLY_CANCEL_REQUESTED", OrderState::CancelRequested),
    ("STATUS_EARLY_CANCEL_ACCEPTED", OrderState::Cancelled),
    ("STATUS_INSTANT_REFUNDED", OrderState::Cancelled),
    (
        "STATUS_COOLING_OFF_PERIOD_REQUESTED",
        OrderState::ReturnRequested,
    ),
    (
        "STATUS_COOLING_OFF_PERIOD_SHIPPING_SENT_BACK",
        OrderState::ReturnRequested,
    ),
    (
        "STATUS_COOLING_OFF_PERIOD_SELLER_APPROVED",
        OrderState::Returned,
    ),
    (
        "STATUS_COOLING_OFF_PERIOD_SELLER_CHARGEBACK_CLAIM",
        OrderState::Returned,
    ),
    (
        "STATUS_INSTANT_REFUND_AFTER_SHIPPING_WAITING_APPROVAL",
        OrderState::ReturnRequested,
    ),
    ("STATUS_INSTANT_REFUND_AFTER_SHIPPING", OrderState::Returned),
];

/// The shared client reports an HTTP 500 as `HTTP 500: <message>`; [`wire::fault_in`] makes the
/// message of a SOAP Fault start with this.
const FAULT_DETAIL_PREFIX: &str = "HTTP 500: SOAP Fault: ";

/// An account on GittiGidiyor.
pub struct Gittigidiyor {
    http: HttpClient,
    endpoint: Url,
    /// `None` when the account's credentials are not GittiGidiyor's (configuration validation
    /// prevents that; every request is then refused rather than sent unauthenticated).
    auth: Option<Auth>,
    statuses: StatusMap,
}

struct Auth {
    api_key: Secret,
    secret_key: Secret,
    role_name: String,
    role_password: Secret,
    lang: String,
}

impl Gittigidiyor {
    pub fn new(
        account: &AccountConfig,
        http: HttpClient,
        overrides: &HashMap<String, OrderState>,
    ) -> Gittigidiyor {
        let auth = match &account.credentials {
            Credentials::Gittigidiyor {
                api_key,
                secret_key,
                username,
                password,
                lang,
            } => Some(Auth {
                api_key: api_key.clone(),
                secret_key: secret_key.clone(),
                role_name: username.clone(),
                role_password: password.clone(),
                lang: lang.clone(),
            }),
            _ => None,
        };
        Gittigidiyor {
            http,
            // The service is the endpoint itself: the envelope is posted to `base_url` unchanged.
            endpoint: account.base_url.clone(),
            auth,
            statuses: StatusMap::new(DEFAULT_STATUSES, overrides),
        }
    }

    async fn fetch_sales(&self, request: &PageRequest) -> Result<Page, MarketplaceError> {
        let start = format_start(request.from);
        let end = format_end(request.to);
        let page_number = match request.page.as_deref() {
            None => 1,
            Some(token) => page_number(token).ok_or_else(|| {
                MarketplaceError::malformed(
                    &self.http,
                    &format!("POST getSalesByDateRange {start}–{end}"),
                    "the page token is not a page number",
                    token.as_bytes(),
                )
            })?,
        };
        let what = format!("POST getSalesByDateRange {start}–{end} page {page_number}");
        let auth = self
            .auth
            .as_ref()
            .ok_or_else(|| MarketplaceError::Rejected {
                what: what.clone(),
                status: None,
                message: "the account's credentials are not GittiGidiyor credentials".to_owned(),
            })?;
        // One `time` per request, used in both `sign` and `<time>`.
        let time = Utc::now().timestamp_millis();
        let sign = sign(auth.api_key.expose(), auth.secret_key.expose(), time);
        // The service may echo these back: every error of this request scrubs them.
        let http = self.http.with_secrets(vec![
            sign.clone(),
            basic_credential(&auth.role_name, auth.role_password.expose()),
        ]);
        let call = wire::GetSalesByDateRange {
            api_key: auth.api_key.expose(),
            sign: &sign,
            time,
            with_data: true,
            by_status: "",
            by_user: "",
            order_by: "A",
            order_type: "D",
            start_date: &start,
            end_date: &end,
            page_number,
            page_size: request.page_size,
            lang: &auth.lang,
        };
        let body = wire::envelope(&call).map_err(|e| MarketplaceError::Rejected {
            what: what.clone(),
            status: None,
            message: http
                .redactor()
                .redact(&format!("cannot build the request envelope: {e}")),
        })?;
        let builder = http
            .request(Method::POST, self.endpoint.as_str())
            .basic_auth(&auth.role_name, Some(auth.role_password.expose()))
            .header(CONTENT_TYPE, "text/xml; charset=utf-8")
            .header("SOAPAction", "\"\"")
            .body(body);
        let response = http
            .send(&what, builder, wire::fault_in)
            .await
            .map_err(fault_is_rejection)?;
        if let Some(content_type) = response.content_type.as_deref()
            && !is_xml(content_type)
        {
            return Err(MarketplaceError::malformed(
                &http,
                &what,
                format!("content type `{content_type}` is not XML"),
                &response.body,
            ));
        }
        let page = wire::parse_response(&response.body).map_err(|e| match e {
            wire::ResponseError::Malformed(reason) => {
                MarketplaceError::malformed(&http, &what, reason, &response.body)
            }
            wire::ResponseError::Rejected(message) => MarketplaceError::Rejected {
                what: what.clone(),
                status: None,
                message: http.redactor().redact(&message),
            },
        })?;
        let orders = page
            .sales
            .into_iter()
            .map(|sale| wire::sale_to_order(sale, &self.statuses))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|reason| MarketplaceError::malformed(&http, &what, reason, &response.body))?;
        // A page without sales ends the window whatever `nextPageAvailable` says, so that a service
        // bug cannot keep the poller paging forever.
        let next = (page.next_page_available
            && !orders.is_empty()
            && !request
                .changed_since
                .is_some_and(|since| older_than(&orders, since)))
        .then(|| (page_number + 1).to_string());
        Ok(Page {
            orders,
            next,
            requests: 1,
            more: None,
        })
    }
}

#[async_trait]
impl Marketplace for Gittigidiyor {
    fn streams(&self) -> Vec<StreamSpec> {
        STREAMS.to_vec()
    }

    /// Page tokens are page numbers.
    fn page_after(&self, _stream: &str, token: &str) -> Option<String> {
        page_number(token).map(|n| (n + 1).to_string())
    }

    async fn fetch_page(
        &self,
        stream: &str,
        request: &PageRequest,
    ) -> Result<Page, MarketplaceError> {
        match stream {
            SALES => self.fetch_sales(request).await,
            other => Err(MarketplaceError::Rejected {
                what: format!("stream {other}"),
                status: None,
                message: format!("GittiGidiyor has no stream `{other}` (only `{SALES}`)"),
            }),
        }
    }
}

/// The request signature: lowercase hex MD5 of `apiKey + secretKey + time`.
fn sign(api_key: &str, secret_key: &str, time_ms: i64) -> String {
    let mut md5 = Md5::new();
    md5.update(api_key.as_bytes());
    md5.update(secret_key.as_bytes());
    md5.update(time_ms.to_string().as_bytes());
    hex::encode(md5.finalize())
}

/// The HTTP basic-auth credential as reqwest's `basic_auth` sends it: base64 of `name:password`.
fn basic_credential(role_name: &str, role_password: &str) -> String {
    BASE64.encode(format!("{role_name}:{role_password}"))
}

/// The window's start in the service's format: Istanbul time, rounded down to the second.
fn format_start(from: DateTime<Utc>) -> String {
    let from = from.duration_trunc(TimeDelta::seconds(1)).unwrap_or(from);
    from.with_timezone(&Istanbul)
        .format(wire::DATE_FORMAT)
        .to_string()
}

/// The window's end: rounded up to the second, since the format has no fractions. The window is
/// half-open and the service's end is presumably inclusive: both only ever over-fetch.
fn format_end(to: DateTime<Utc>) -> String {
    let truncated = to.duration_trunc(TimeDelta::seconds(1)).unwrap_or(to);
    let to = if truncated < to {
        truncated + TimeDelta::seconds(1)
    } else {
        truncated
    };
    to.with_timezone(&Istanbul)
        .format(wire::DATE_FORMAT)
        .to_string()
}

/// Whether a page, newest change first, reaches changes before `since`: its last sale's
/// `lastActionDate` is earlier, and every sale has one, in non-increasing order.
fn older_than(orders: &[Order], since: DateTime<Utc>) -> bool {
    let changed: Option<Vec<DateTime<Utc>>> =
        orders.iter().map(|order| order.source_updated_at).collect();
    changed.is_some_and(|changed| {
        changed.windows(2).all(|pair| pair[0] >= pair[1])
            && changed.last().is_some_and(|last| *last < since)
    })
}

fn page_number(token: &str) -> Option<u32> {
    token.parse().ok().filter(|n| *n >= 1)
}

/// SOAP 1.1 answers `text/xml`; plain XML types are accepted too.
fn is_xml(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    essence == "text/xml" || essence == "application/xml" || essence == "application/soap+xml"
}

/// SOAP reports every Fault with HTTP 500, which the shared client classifies as transient. A Fault
/// is the service deliberately refusing the request (bad parameters, bad signature): retrying will not
/// help, so it becomes a rejection with the Fault's message. A 500 without a Fault stays transient.
fn fault_is_rejection(error: MarketplaceError) -> MarketplaceError {
    match error {
        MarketplaceError::Transient { what, detail, .. }
            if detail.starts_with(FAULT_DETAIL_PREFIX) =>
        {
            let message = detail.trim_start_matches("HTTP 500: ").to_owned();
            MarketplaceError::Rejected {
                what,
                status: Some(500),
                message,
            }
        }
        other => other,
    }
}

#[cfg(test)]
mod tests;
