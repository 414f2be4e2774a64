//! The Labs adapter: Labs' order API (REST/JSON, `docs/labs.txt`).
//!
//! It owns the single stream `orders`: one window from the cursor, read with
//! `GET {base}/orders?page=N&limit=page_size&updatedStartAfter=YYYY-MM-DD`. The filter takes a date
//! only, so the date sent is the Istanbul calendar date of the window's start and that whole day is
//! read again on every run (the store skips orders whose content did not change); there is no upper
//! bound. The page token is the next page number, while `currentPage < totalPage`.
//!
//! Every order arrives complete (lines, addresses, shipment) in the list, so a page is one request.
//! `Order.raw` is the listed order exactly as received. The mapping rules (totals, quantities,
//! packages) are on [`wire::into_order`]; payload dates in either documented format are Istanbul time.
//! Transitions (status, delete, invoice link) and reading one order back are in [`transitions`].

#[cfg(test)]
mod proptests;
mod transitions;
mod wire;

use std::collections::HashMap;

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, Utc};
use chrono_tz::Europe::Istanbul;
use reqwest::Method;
use reqwest::header::{ACCEPT, AUTHORIZATION, HeaderValue};
use url::Url;

use super::{
    AppliedTransition, Marketplace, MarketplaceError, Page, PageRequest, StatusMap, StreamPlan,
    StreamSpec, Transition, TransitionRefusal,
};
use crate::config::{AccountConfig, Credentials};
use crate::domain::{Order, OrderState};
use crate::http::HttpClient;
use wire::BodyError;

const STREAMS: &[StreamSpec] = &[StreamSpec {
    name: "orders",
    plan: StreamPlan::Windows {
        max_window: None,
        adaptive: false,
        reread_open: false,
        changes_only: false,
    },
}];

/// The Labs adapter for one account.
pub struct Labs {
    http: HttpClient,
    base_url: Url,
    /// The `Authorization` value, or why the configuration cannot produce one.
    auth: Result<HeaderValue, String>,
    statuses: StatusMap,
}

impl Labs {
    pub fn new(
        account: &AccountConfig,
        http: HttpClient,
        overrides: &HashMap<String, OrderState>,
    ) -> Labs {
        Labs {
            http,
            base_url: account.base_url.clone(),
            auth: bearer(&account.credentials),
            statuses: StatusMap::new(wire::STATUS_DEFAULTS, overrides),
        }
    }

    async fn fetch_orders(&self, request: &PageRequest) -> Result<Page, MarketplaceError> {
        let page = match request.page.as_deref() {
            None => 1,
            Some(token) => token
                .parse::<u64>()
                .map_err(|_| MarketplaceError::Rejected {
                    what: "GET orders".to_owned(),
                    status: None,
                    message: format!("`{token}` is not a Labs page token"),
                })?,
        };
        let since = updated_since(request.from);
        let what = format!("GET orders updatedStartAfter={since} page {page}");
        let auth = self
            .auth
            .clone()
            .map_err(|message| MarketplaceError::Rejected {
                what: what.clone(),
                status: None,
                message,
            })?;
        let http_request = self
            .http
            .request(
                Method::GET,
                orders_url(&self.base_url, since, page, request.page_size).as_str(),
            )
            .header(AUTHORIZATION, auth)
            .header(ACCEPT, "application/json");
        let response = self
            .http
            .send(&what, http_request, wire::api_message)
            .await?;
        let malformed =
            |reason: String| MarketplaceError::malformed(&self.http, &what, reason, &response.body);
        let list = match wire::parse_list(response.content_type.as_deref(), &response.body) {
            Ok(list) => list,
            Err(BodyError::Api(message)) => {
                return Err(MarketplaceError::Rejected {
                    what: what.clone(),
                    status: None,
                    message: self.http.redactor().redact(&message),
                });
            }
            Err(BodyError::Malformed(reason)) => return Err(malformed(reason)),
        };
        let next = list.next(page);
        let orders = list
            .items
            .into_iter()
            .enumerate()
            .map(|(i, raw)| {
                wire::into_order(raw, &self.statuses).map_err(|e| format!("items[{i}]: {e}"))
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(malformed)?;
        Ok(Page {
            orders,
            next,
            requests: 1,
            more: None,
        })
    }
}

#[async_trait]
impl Marketplace for Labs {
    fn streams(&self) -> Vec<StreamSpec> {
        STREAMS.to_vec()
    }

    async fn fetch_page(
        &self,
        stream: &str,
        request: &PageRequest,
    ) -> Result<Page, MarketplaceError> {
        match stream {
            "orders" => self.fetch_orders(request).await,
            other => Err(MarketplaceError::Rejected {
                what: format!("labs stream `{other}`"),
                status: None,
                message: "labs has no such stream".to_owned(),
            }),
        }
    }
    /// Page tokens are page numbers.
    fn page_after(&self, _stream: &str, token: &str) -> Option<String> {
        token.parse::<u64>().ok().map(|n| (n + 1).to_string())
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
        transitions::parse(transition).is_ok_and(|action| transitions::took_effect(&action, order))
    }
}

/// `Bearer <token>`, marked sensitive so that it never appears in debug output.
fn bearer(credentials: &Credentials) -> Result<HeaderValue, String> {
    let Credentials::Labs { token } = credentials else {
        return Err("the account has no Labs credentials".to_owned());
    };
    let mut value = HeaderValue::from_str(&format!("Bearer {}", token.expose()))
        .map_err(|_| "the token contains characters a header cannot carry".to_owned())?;
    value.set_sensitive(true);
    Ok(value)
}

/// The `updatedStartAfter` date of a window starting at `from`: its Istanbul calendar date.
fn updated_since(from: DateTime<Utc>) -> NaiveDate {
    from.with_timezone(&Istanbul).date_naive()
}

/// `{base}/orders?page&limit&updatedStartAfter`, whether or not the base URL ends with a slash.
fn orders_url(base: &Url, since: NaiveDate, page: u64, page_size: u32) -> Url {
    let mut url = base.clone();
    url.set_query(None);
    url.set_fragment(None);
    if let Ok(mut path) = url.path_segments_mut() {
        path.pop_if_empty().push("orders");
    }
    url.query_pairs_mut()
        .append_pair("page", &page.to_string())
        .append_pair("limit", &page_size.max(1).to_string())
        .append_pair("updatedStartAfter", &since.format("%Y-%m-%d").to_string());
    url
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroU32;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use axum::http::{HeaderMap, StatusCode, Uri};
    use axum::response::IntoResponse;
    use chrono::TimeZone;

    use super::*;
    use crate::config::Secret;
    use crate::domain::MarketplaceKind;

    macro_rules! fixture {
        ($name:literal) => {
            include_str!(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/fixtures/labs/",
                $name
            ))
        };
    }

    const TOKEN: &str = "labs-test-token-9876543210";

    fn adapter(base_url: &str, token: &str) -> Labs {
        let account = AccountConfig {
            name: "shop".into(),
            marketplace: MarketplaceKind::Labs,
            base_url: Url::parse(base_url).unwrap(),
            enabled: true,
            schedule: "0 */5 * * * *".into(),
            initial_sync_days: 30,
            overlap: Duration::from_secs(600),
            page_size: 2,
            requests_per_second: NonZeroU32::new(1000).unwrap(),
            timeout: Duration::from_secs(5),
            credentials: Credentials::Labs {
                token: Secret::new(token),
            },
        };
        let http = HttpClient::new(
            &account.http_settings(),
            account.credentials.secret_values(),
        )
        .unwrap();
        Labs::new(&account, http, &HashMap::new())
    }

    fn window(page: Option<&str>) -> PageRequest {
        PageRequest {
            // 22:30 UTC is already the next day in Istanbul.
            from: Utc.with_ymd_and_hms(2023, 11, 29, 22, 30, 0).unwrap(),
            to: Utc.with_ymd_and_hms(2023, 12, 1, 0, 0, 0).unwrap(),
            page: page.map(str::to_owned),
            page_size: 2,
            order_ids: Vec::new(),
            changed_since: None,
            stored: None,
        }
    }

    #[test]
    fn one_stream_read_in_one_window() {
        assert_eq!(STREAMS.len(), 1);
        assert_eq!(STREAMS[0].name, "orders");
        assert_eq!(
            STREAMS[0].plan,
            StreamPlan::Windows {
                max_window: None,
                adaptive: false,
                reread_open: false,
                changes_only: false
            }
        );
    }

    #[test]
    fn the_request_asks_for_the_istanbul_day_of_the_window_start() {
        let since = updated_since(window(None).from);
        assert_eq!(since.to_string(), "2023-11-30");
        for base in [
            "https://api.labsoffice.com/v1",
            "https://api.labsoffice.com/v1/",
        ] {
            let url = orders_url(&Url::parse(base).unwrap(), since, 3, 100);
            assert_eq!(
                url.as_str(),
                "https://api.labsoffice.com/v1/orders?page=3&limit=100&updatedStartAfter=2023-11-30"
            );
        }
        let sandbox = Url::parse("http://127.0.0.1:9/labs/v1").unwrap();
        assert_eq!(orders_url(&sandbox, since, 1, 0).path(), "/labs/v1/orders");
    }

    async fn serve(seen: Arc<Mutex<Vec<String>>>) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}/labs/v1", listener.local_addr().unwrap());
        let app = axum::Router::new().fallback(move |uri: Uri, headers: HeaderMap| {
            let seen = seen.clone();
            async move {
                seen.lock().unwrap().push(uri.to_string());
                let json = [(axum::http::header::CONTENT_TYPE, "application/json")];
                let authorized = headers.get("authorization").and_then(|v| v.to_str().ok())
                    == Some(&format!("Bearer {TOKEN}"));
                let page = uri.query().unwrap_or_default();
                match (authorized, uri.path()) {
                    (false, _) => (
                        StatusCode::UNAUTHORIZED,
                        json,
                        fixture!("error_status.json"),
                    )
                        .into_response(),
                    (true, "/labs/v1/orders") if page.contains("page=1&") => {
                        (json, fixture!("orders_page.json")).into_response()
                    }
                    (true, "/labs/v1/orders") if page.contains("page=2&") => {
                        (json, fixture!("orders_last_page.json")).into_response()
                    }
                    (true, "/labs/v1/orders") => {
                        (json, fixture!("error_validation.json")).into_response()
                    }
                    _ => StatusCode::NOT_FOUND.into_response(),
                }
            }
        });
        tokio::spawn(async move { axum::serve(listener, app).await });
        base
    }

    #[tokio::test]
    async fn pages_are_followed_by_number() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let base = serve(seen.clone()).await;
        let labs = adapter(&base, TOKEN);

        let first = labs.fetch_page("orders", &window(None)).await.unwrap();
        assert_eq!(
            (first.orders.len(), first.next.as_deref(), first.requests),
            (2, Some("2"), 1)
        );
        let last = labs.fetch_page("orders", &window(Some("2"))).await.unwrap();
        assert_eq!((last.orders.len(), last.next), (1, None));
        assert_eq!(
            *seen.lock().unwrap(),
            [
                "/labs/v1/orders?page=1&limit=2&updatedStartAfter=2023-11-30",
                "/labs/v1/orders?page=2&limit=2&updatedStartAfter=2023-11-30"
            ]
        );

        let rejected = labs
            .fetch_page("orders", &window(Some("7")))
            .await
            .unwrap_err();
        assert!(
            matches!(&rejected, MarketplaceError::Rejected { status: None, message, .. }
                if message == "page ve limit parametrelerinin gönderilmesi zorunludur."),
            "{rejected:?}"
        );
        assert!(matches!(
            labs.fetch_page("orders", &window(Some("iki"))).await,
            Err(MarketplaceError::Rejected { .. })
        ));
    }

    #[tokio::test]
    async fn a_refused_token_needs_an_operator_and_is_never_shown() {
        let base = serve(Arc::default()).await;
        let wrong = "wrong-token-123456";
        let error = adapter(&base, wrong)
            .fetch_page("orders", &window(None))
            .await
            .unwrap_err();
        assert!(
            matches!(&error, MarketplaceError::Unauthorized { status: 401, message, .. }
                if message == "Yetkisiz erişim: geçersiz veya süresi dolmuş token."),
            "{error:?}"
        );
        assert!(!format!("{error} {error:?}").contains(wrong));
    }
}
