//! i1 transitions: one kind, `reject-item {item_id}`, sent as `POST order-items/{item_id}/reject/`
//! without a body (the document shows none and names no reason field) and answered `204`.
//!
//! Refused when the order is known and the item is not one of its items, or when the item's status is
//! 400 (packaged) or later — shipped, delivered, cancelling, cancelled and rejected items cannot be
//! rejected either. A `400` from the API (an item packaged meanwhile) is a rejection with the API's
//! message, like any other 4xx.
//!
//! Read-back ([`I1::read_back`]): orders are identified by their UUID, which no documented filter of
//! `orders/` takes. A UUID is read from the detail route `orders/{id}/` — Django REST framework's
//! companion of the documented list, which the document does not show: a 404 there reads as "not
//! available" (`None`). Any other identifier is taken for an order number and read with the documented
//! `orders/?number=…`. Either way the order is completed with its items (and addresses, plans) exactly
//! as the poller does.

use std::sync::atomic::{AtomicU32, Ordering};

use reqwest::Method;
use url::Url;

use super::wire;
use super::{I1, endpoint};
use crate::domain::{Order, OrderState};
use crate::marketplace::args::{Args, refuse, unknown_kind};
use crate::marketplace::{AppliedTransition, MarketplaceError, Transition, TransitionRefusal};

const KIND: &str = "reject-item";

/// The first status code from which an item can no longer be rejected (400, packaged).
const PACKAGED: u32 = 400;

/// The item a `reject-item` transition rejects.
pub(super) fn parse(transition: &Transition) -> Result<String, TransitionRefusal> {
    if transition.kind != KIND {
        return Err(unknown_kind("i1", &transition.kind, &[KIND]));
    }
    let args = Args::new(transition);
    args.only(&["item_id"])?;
    let item_id = args.text("item_id")?;
    if item_id.contains('/') {
        return Err(refuse(format!(
            "`item_id` `{item_id}` must not contain a slash"
        )));
    }
    Ok(item_id)
}

/// Whether rejecting `item_id` is legal from the order's last known state.
pub(super) fn check_legal(item_id: &str, current: Option<&Order>) -> Result<(), TransitionRefusal> {
    let Some(order) = current else {
        return Ok(());
    };
    // An order stored without items cannot tell; the API will.
    if order.lines.is_empty() {
        return Ok(());
    }
    let item = order
        .lines
        .iter()
        .find(|l| l.external_id == item_id)
        .ok_or_else(|| {
            let known: Vec<&str> = order.lines.iter().map(|l| l.external_id.as_str()).collect();
            refuse(format!(
                "item `{item_id}` is not part of order `{}` (its items: {})",
                order.order_number.as_deref().unwrap_or(&order.external_id),
                known.join(", ")
            ))
        })?;
    let code = item.status.code.as_deref().unwrap_or_default();
    if code.trim().parse::<u32>().is_ok_and(|c| c >= PACKAGED) {
        return Err(refuse(format!(
            "item `{item_id}` has status {code} ({}): items packaged or later (400 and up) cannot be rejected",
            item.state
        )));
    }
    Ok(())
}

/// Whether the read-back order shows the item rejected (or cancelled, which rejecting causes).
pub(super) fn took_effect(item_id: &str, order: &Order) -> bool {
    order.lines.iter().any(|l| {
        l.external_id == item_id
            && (matches!(l.state, OrderState::Rejected | OrderState::Cancelled)
                || matches!(l.status.code.as_deref(), Some("800" | "900")))
    })
}

/// `base_url` + `order-items/{item_id}/reject/`.
pub(super) fn reject_url(base: &Url, item_id: &str) -> Url {
    let mut url = endpoint(base, "order-items");
    if let Ok(mut path) = url.path_segments_mut() {
        path.pop_if_empty().push(item_id).push("reject").push("");
    }
    url
}

impl I1 {
    pub(super) async fn send_reject(
        &self,
        transition: &Transition,
    ) -> Result<AppliedTransition, MarketplaceError> {
        let item_id = parse(transition).map_err(|r| MarketplaceError::Rejected {
            what: "POST order-items/ reject".to_owned(),
            status: None,
            message: r.0,
        })?;
        let what = format!("POST order-items/{item_id}/reject/");
        let url = reject_url(&self.base_url, &item_id);
        let request = self.authorized(Method::POST, &what, &url)?;
        let response = self.http.send(&what, request, wire::api_message).await?;
        Ok(AppliedTransition {
            request_summary: self.http.redactor().redact(&format!("POST {}", url.path())),
            http_status: response.status.as_u16(),
            response_excerpt: self.http.redactor().excerpt(&response.body),
        })
    }

    /// One order, complete, by UUID or number (see the module documentation).
    pub(super) async fn read_back(
        &self,
        external_id: &str,
    ) -> Result<Option<Order>, MarketplaceError> {
        let counter = AtomicU32::new(0);
        let found = if wire::is_uuid(external_id) {
            self.order_record(external_id, &counter).await?
        } else {
            let what = format!("GET orders/ number={external_id}");
            let mut url = endpoint(&self.base_url, "orders");
            url.query_pairs_mut()
                .append_pair("number", external_id)
                .append_pair("limit", "10");
            let (list, body) = self.get_list(&what, url, &counter).await?;
            let mut found = None;
            for raw in list.results {
                let listed = self.listed(&what, raw, &body)?;
                if listed.order.number == external_id {
                    found = Some(listed);
                    break;
                }
            }
            found
        };
        let Some(found) =
            found.filter(|o| o.order.id == external_id || o.order.number == external_id)
        else {
            return Ok(None);
        };
        let orders = self.complete(vec![found], 100, &counter).await?;
        tracing::debug!(
            order = external_id,
            requests = counter.load(Ordering::Relaxed),
            "i1 order read back"
        );
        Ok(orders.into_iter().next())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::num::NonZeroU32;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use axum::http::{HeaderMap, Method as HttpMethod, StatusCode, Uri};
    use axum::response::IntoResponse;
    use rust_decimal::Decimal;
    use serde_json::json;

    use super::*;
    use crate::config::{AccountConfig, Credentials, Secret};
    use crate::domain::{MarketplaceKind, OrderLine, RawStatus};
    use crate::http::HttpClient;
    use crate::marketplace::Marketplace;
    use crate::marketplace::i1::order_url;
    use serde_json::Value;

    macro_rules! fixture {
        ($name:literal) => {
            include_str!(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/fixtures/i1/",
                $name
            ))
        };
    }

    const TOKEN: &str = "i1-reject-token-5566778899";
    const ORDER: &str = "e819386c-b406-43dc-86c9-212ff633afe2";
    const ITEM: &str = "33a11761-43bc-41d4-8f7f-1e860028367b";

    fn transition(kind: &str, args: Value) -> Transition {
        Transition {
            order_external_id: ORDER.into(),
            kind: kind.into(),
            args: args.as_object().cloned().unwrap_or_default(),
            idempotency_key: "key-1".into(),
        }
    }

    fn line(id: &str, code: &str, state: OrderState) -> OrderLine {
        OrderLine {
            external_id: id.into(),
            package_external_id: None,
            sku: None,
            product_name: None,
            quantity: Decimal::ONE,
            unit_price: None,
            total_price: None,
            currency: None,
            state,
            status: RawStatus {
                code: Some(code.into()),
                text: None,
            },
            raw: Value::Null.into(),
        }
    }

    fn order(lines: Vec<OrderLine>) -> Order {
        Order {
            external_id: ORDER.into(),
            order_number: Some("45243493".into()),
            state: OrderState::Approved,
            status: RawStatus::default(),
            total_amount: None,
            shipping_amount: None,
            currency: None,
            customer_name: None,
            customer_email: None,
            shipping_city: None,
            placed_at: None,
            source_updated_at: None,
            lines,
            packages: Vec::new(),
            raw: Value::Null.into(),
        }
    }

    fn validate(t: &Transition, current: Option<&Order>) -> Result<(), String> {
        parse(t)
            .and_then(|item| check_legal(&item, current))
            .map_err(|r| r.0)
    }

    fn reject() -> Transition {
        transition("reject-item", json!({ "item_id": format!(" {ITEM} ") }))
    }

    #[test]
    fn items_not_yet_packaged_may_be_rejected() {
        for (code, state) in [
            ("100", OrderState::AwaitingApproval),
            ("200", OrderState::Approved),
            ("300", OrderState::Preparing),
            ("150", OrderState::Unknown),
        ] {
            let known = order(vec![
                line(ITEM, code, state),
                line("other", "500", OrderState::Shipped),
            ]);
            assert_eq!(validate(&reject(), Some(&known)), Ok(()), "{code}");
        }
        assert_eq!(validate(&reject(), None), Ok(()));
        assert_eq!(validate(&reject(), Some(&order(Vec::new()))), Ok(()));
    }

    #[test]
    fn missing_and_bad_arguments_are_refused() {
        assert_eq!(
            validate(&transition("reject-item", json!({})), None),
            Err("`reject-item` needs the argument `item_id`".to_owned())
        );
        assert_eq!(
            validate(&transition("reject-item", json!({"item_id": ""})), None),
            Err("`item_id` must not be empty".to_owned())
        );
        assert_eq!(
            validate(
                &transition("reject-item", json!({"item_id": "a/../b"})),
                None
            ),
            Err("`item_id` `a/../b` must not contain a slash".to_owned())
        );
        assert!(
            validate(
                &transition("reject-item", json!({"item_id": "x", "reason": "y"})),
                None
            )
            .unwrap_err()
            .contains("no argument `reason`")
        );
        assert_eq!(
            validate(&transition("cancel", json!({})), None),
            Err("i1 has no transition `cancel` (it has reject-item)".to_owned())
        );
    }

    #[test]
    fn packaged_items_and_foreign_items_are_refused() {
        for (code, state) in [
            ("400", OrderState::Packaged),
            ("500", OrderState::Shipped),
            ("800", OrderState::Cancelled),
            ("900", OrderState::Rejected),
        ] {
            assert_eq!(
                validate(&reject(), Some(&order(vec![line(ITEM, code, state)]))),
                Err(format!(
                    "item `{ITEM}` has status {code} ({state}): items packaged or later (400 and up) cannot be rejected"
                ))
            );
        }
        assert_eq!(
            validate(
                &reject(),
                Some(&order(vec![line(
                    "other",
                    "100",
                    OrderState::AwaitingApproval
                )]))
            ),
            Err(format!(
                "item `{ITEM}` is not part of order `45243493` (its items: other)"
            ))
        );
    }

    #[test]
    fn effects_are_read_from_the_item() {
        let item = ITEM.to_owned();
        assert!(took_effect(
            &item,
            &order(vec![line(ITEM, "900", OrderState::Unknown)])
        ));
        assert!(took_effect(
            &item,
            &order(vec![line(ITEM, "x", OrderState::Cancelled)])
        ));
        assert!(!took_effect(
            &item,
            &order(vec![line(ITEM, "200", OrderState::Approved)])
        ));
        assert!(!took_effect(
            &item,
            &order(vec![line("other", "900", OrderState::Rejected)])
        ));
    }

    #[test]
    fn urls_append_to_the_base_path() {
        for base in ["https://example.com/api/i1/", "https://example.com/api/i1"] {
            let base = Url::parse(base).unwrap();
            assert_eq!(
                reject_url(&base, ITEM).as_str(),
                format!("https://example.com/api/i1/order-items/{ITEM}/reject/")
            );
            assert_eq!(
                order_url(&base, ORDER).as_str(),
                format!("https://example.com/api/i1/orders/{ORDER}/")
            );
        }
        assert_eq!(
            wire::api_message(fixture!("reject_packaged.json").as_bytes()).as_deref(),
            Some("Paketlenmiş sipariş kalemleri reddedilemez.")
        );
    }

    type Seen = Arc<Mutex<Vec<(String, String, Option<String>, String)>>>;

    async fn fake_api(
        axum::extract::State(seen): axum::extract::State<Seen>,
        method: HttpMethod,
        uri: Uri,
        headers: HeaderMap,
        body: String,
    ) -> axum::response::Response {
        let auth = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        seen.lock()
            .unwrap()
            .push((method.to_string(), uri.to_string(), auth, body));
        let json = [(axum::http::header::CONTENT_TYPE, "application/json")];
        let path = uri.path();
        let query = uri.query().unwrap_or_default();
        match (method.as_str(), path) {
            ("POST", p) if p == format!("/i1/api/i1/order-items/{ITEM}/reject/") => {
                StatusCode::NO_CONTENT.into_response()
            }
            ("POST", p) if p.ends_with("/reject/") => (
                StatusCode::BAD_REQUEST,
                json,
                fixture!("reject_packaged.json"),
            )
                .into_response(),
            ("GET", p) if p == format!("/i1/api/i1/orders/{ORDER}/") => {
                (json, fixture!("order_detail.json")).into_response()
            }
            ("GET", "/i1/api/i1/orders/") if query.contains("number=45243493") => {
                (json, fixture!("orders_by_number.json")).into_response()
            }
            ("GET", "/i1/api/i1/order-items/") if query.contains("order__number=45243493") => {
                (json, fixture!("order_items_45243493.json")).into_response()
            }
            ("GET", "/i1/api/i1/customer-addresses/") => {
                (json, fixture!("customer_addresses.json")).into_response()
            }
            _ => (StatusCode::NOT_FOUND, json, fixture!("not_found.json")).into_response(),
        }
    }

    #[tokio::test]
    async fn rejects_are_posted_and_orders_read_back() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}/i1/api/i1/", listener.local_addr().unwrap());
        let seen = Seen::default();
        let app = axum::Router::new()
            .fallback(fake_api)
            .with_state(seen.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        let account = AccountConfig {
            name: "shop".into(),
            marketplace: MarketplaceKind::I1,
            base_url: Url::parse(&base).unwrap(),
            enabled: true,
            schedule: "0 */5 * * * *".into(),
            initial_sync_days: 30,
            overlap: Duration::from_secs(600),
            page_size: 2,
            requests_per_second: NonZeroU32::new(1000).unwrap(),
            timeout: Duration::from_secs(5),
            credentials: Credentials::I1 {
                token: Secret::new(TOKEN),
                auth_header: "Authorization".into(),
                auth_scheme: "Bearer".into(),
            },
        };
        let http = HttpClient::new(
            &account.http_settings(),
            account.credentials.secret_values(),
        )
        .unwrap();
        let i1 = I1::new(&account, http, &HashMap::new());

        let applied = i1.apply_transition(&reject()).await.unwrap();
        assert_eq!(
            applied.request_summary,
            format!("POST /i1/api/i1/order-items/{ITEM}/reject/")
        );
        assert_eq!(
            (applied.http_status, applied.response_excerpt.as_str()),
            (204, "")
        );
        let (method, uri, auth, body) = seen.lock().unwrap().pop().unwrap();
        assert_eq!(method, "POST");
        assert_eq!(uri, format!("/i1/api/i1/order-items/{ITEM}/reject/"));
        assert_eq!(auth, Some(format!("Bearer {TOKEN}")));
        assert_eq!(body, "");

        let packaged = transition("reject-item", json!({"item_id": "f35de315"}));
        let error = i1.apply_transition(&packaged).await.unwrap_err();
        assert!(
            matches!(&error, MarketplaceError::Rejected { status: Some(400), message, .. }
                if message == "Paketlenmiş sipariş kalemleri reddedilemez."),
            "{error:?}"
        );
        assert!(!format!("{error} {error:?} {applied:?}").contains(TOKEN));

        let by_id = i1.fetch_order(ORDER).await.unwrap().unwrap();
        assert_eq!(by_id.order_number.as_deref(), Some("45243493"));
        assert_eq!(by_id.lines[0].external_id, ITEM);
        assert!(!i1.transition_took_effect(&reject(), &by_id));
        let by_number = i1.fetch_order("45243493").await.unwrap().unwrap();
        assert_eq!(by_number.external_id, ORDER);
        assert_eq!(
            i1.fetch_order("00000000-0000-0000-0000-000000000000")
                .await
                .unwrap(),
            None
        );
        let requests: Vec<String> = seen.lock().unwrap().iter().map(|s| s.1.clone()).collect();
        assert!(
            requests.contains(&format!("/i1/api/i1/orders/{ORDER}/")),
            "{requests:?}"
        );
        assert!(requests.contains(&"/i1/api/i1/orders/?number=45243493&limit=10".to_owned()));
    }
}
