//! Labs transitions (`docs/labs.txt`):
//!
//! | kind | arguments | request |
//! |---|---|---|
//! | `set-status` | `status_code` 0–8 | `POST /orders/status {orderId, statusCode}` |
//! | `delete` | none | `DELETE /orders/{id}` |
//! | `invoice-link` | `invoice_link`, `invoice_number`, `invoice_date_time`, `marketplace`, `invoice_uuid`? | `POST /orders/invoice-link {payload: [{…}]}` |
//!
//! Status codes: 0 Onay Bekliyor, 1 Yeni, 2 Hazırlanıyor, 3 Paketlendi, 4 Kargoya Verildi,
//! 5 Tamamlandı, 6 İptal Edildi, 7 İade Sürecinde, 8 İade Edildi. Labs moves statuses **forward only**,
//! so `set-status` is refused when the order's current status, mapped to its code, is the target or
//! after it, and for a cancelled order. The list's status strings map to codes as follows (the list
//! has no strings for 3, 4 and 8; an unmapped string is let through and the API decides):
//! `PENDING_APPROVE`/`PENDING_APPROVED` → 0, `CREATED` → 1, `PREPARING` → 2, `COMPLETED` → 5,
//! `CANCELLED` → 6, `RETURN` → 7.
//!
//! `invoice-link` checks, before queuing: the link is an http(s) URL of a `.pdf` file (the document
//! asks for a downloadable PDF link); `invoice_number` is 3 letters or digits, a year 2020–2099 and
//! 9 digits; `invoice_date_time` is a 10-digit Unix time in seconds; `marketplace` is one the service
//! accepts today (`trendyol`, `hepsiburada`, `ciceksepeti`). The document and the digest mark
//! `marketplace` required, so it is required here too. Labs order ids are integers and sent as JSON
//! numbers. The service's answer is `{"status", "message"}`: any status but `success` is a rejection
//! carrying `message`, even with HTTP 200.
//!
//! Read-back: the list has no filter by Labs id, so [`Labs::read_back`] reads the orders updated
//! since yesterday (Istanbul date; an order whose transition took effect was updated then) and picks
//! the orders by id, giving up on those not found after [`READ_BACK_PAGES`] pages. One listing serves
//! every order re-read at the same time.

use std::collections::HashSet;

use chrono::{TimeDelta, Utc};
use reqwest::Method;
use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use serde_json::{Map, Value, json};
use url::Url;

use super::{Labs, wire};
use crate::domain::Order;
use crate::marketplace::args::{Args, refuse, unknown_kind};
use crate::marketplace::{
    AppliedTransition, MarketplaceError, PageRequest, Transition, TransitionRefusal,
};

const KINDS: &[&str] = &["set-status", "delete", "invoice-link"];

/// The marketplaces the invoice-link service accepts (others are "in development").
const INVOICE_MARKETPLACES: [&str; 3] = ["trendyol", "hepsiburada", "ciceksepeti"];

/// How many pages of 100 orders a read-back looks through.
pub(super) const READ_BACK_PAGES: u64 = 10;

/// The code of a status as the list spells it (see the module documentation).
pub(super) fn status_code(list_status: &str) -> Option<u8> {
    Some(match list_status.trim() {
        "PENDING_APPROVE" | "PENDING_APPROVED" => 0,
        "CREATED" => 1,
        "PREPARING" => 2,
        "COMPLETED" => 5,
        "CANCELLED" => 6,
        "RETURN" => 7,
        _ => return None,
    })
}

const CANCELLED: u8 = 6;

/// A validated transition.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Action {
    SetStatus { order_id: u64, code: u8 },
    Delete { order_id: u64 },
    InvoiceLink { entry: Map<String, Value> },
}

/// Reads and checks a transition's arguments (no I/O, no state).
pub(super) fn parse(transition: &Transition) -> Result<Action, TransitionRefusal> {
    let kind = KINDS
        .iter()
        .find(|k| **k == transition.kind)
        .ok_or_else(|| unknown_kind("labs", &transition.kind, KINDS))?;
    let id = transition.order_external_id.trim();
    let order_id: u64 = id
        .parse()
        .map_err(|_| refuse(format!("Labs order ids are whole numbers, not `{id}`")))?;
    let args = Args::new(transition);
    match *kind {
        "set-status" => {
            args.only(&["status_code"])?;
            let code = args.integer("status_code", 0, 8)?;
            Ok(Action::SetStatus {
                order_id,
                code: u8::try_from(code).unwrap_or(u8::MAX),
            })
        }
        "delete" => {
            args.only(&[])?;
            Ok(Action::Delete { order_id })
        }
        _ => {
            args.only(&[
                "invoice_link",
                "invoice_number",
                "invoice_date_time",
                "invoice_uuid",
                "marketplace",
            ])?;
            let link = args.text("invoice_link")?;
            if !is_pdf_link(&link) {
                return Err(refuse(format!(
                    "`invoice_link` `{link}` must be an http(s) link to a .pdf file"
                )));
            }
            let number = args.text("invoice_number")?;
            if !is_invoice_number(&number) {
                return Err(refuse(format!(
                    "invoice_number `{number}` must be 3 letters or digits, a year 2020–2099 and 9 digits"
                )));
            }
            let time = args.text("invoice_date_time")?;
            let seconds: u64 = time
                .parse()
                .ok()
                .filter(|_| time.len() == 10 && time.bytes().all(|b| b.is_ascii_digit()))
                .ok_or_else(|| {
                    refuse(format!(
                        "invoice_date_time `{time}` must be a 10-digit Unix time in seconds"
                    ))
                })?;
            let marketplace = args.text("marketplace")?.to_lowercase();
            if !INVOICE_MARKETPLACES.contains(&marketplace.as_str()) {
                return Err(refuse(format!(
                    "marketplace `{marketplace}` is not one Labs sends invoice links to (it takes {})",
                    INVOICE_MARKETPLACES.join(", ")
                )));
            }
            let mut entry = Map::new();
            entry.insert("orderId".into(), json!(order_id));
            entry.insert("marketplace".into(), json!(marketplace));
            entry.insert("invoiceLink".into(), json!(link));
            entry.insert("invoiceNumber".into(), json!(number));
            if let Some(uuid) = args.optional_text("invoice_uuid")? {
                entry.insert("invoiceUuid".into(), json!(uuid));
            }
            entry.insert("invoiceDateTime".into(), json!(seconds));
            Ok(Action::InvoiceLink { entry })
        }
    }
}

fn is_pdf_link(link: &str) -> bool {
    Url::parse(link).is_ok_and(|url| {
        matches!(url.scheme(), "http" | "https")
            && url.host_str().is_some()
            && url.path().to_ascii_lowercase().ends_with(".pdf")
    })
}

/// `[3 letters or digits][year 2020–2099][9 digits]`.
pub(super) fn is_invoice_number(number: &str) -> bool {
    let bytes = number.as_bytes();
    bytes.len() == 16
        && bytes[..3].iter().all(u8::is_ascii_alphanumeric)
        && bytes[3..].iter().all(u8::is_ascii_digit)
        && number[3..7]
            .parse::<u16>()
            .is_ok_and(|year| (2020..=2099).contains(&year))
}

/// Whether `action` is legal from the order's last known state.
pub(super) fn check_legal(
    action: &Action,
    current: Option<&Order>,
) -> Result<(), TransitionRefusal> {
    let (Action::SetStatus { code, .. }, Some(order)) = (action, current) else {
        return Ok(());
    };
    let Some((status, now)) = order
        .status
        .code
        .as_deref()
        .and_then(|s| status_code(s).map(|c| (s, c)))
    else {
        return Ok(());
    };
    if now == CANCELLED {
        return Err(refuse(format!(
            "order `{}` is {status} (code {now}): a cancelled order's status cannot move",
            order.external_id
        )));
    }
    if *code <= now {
        return Err(refuse(format!(
            "Labs statuses only move forward: order `{}` is {status} (code {now}), so `status_code` {code} is not after it",
            order.external_id
        )));
    }
    Ok(())
}

/// Whether the read-back order shows `action` done.
pub(super) fn took_effect(action: &Action, order: &Order) -> bool {
    match action {
        Action::SetStatus { code, .. } => order
            .status
            .code
            .as_deref()
            .and_then(status_code)
            .is_some_and(|now| now >= *code),
        // A deleted order is not read back at all.
        Action::Delete { .. } => false,
        Action::InvoiceLink { entry } => entry
            .get("invoiceNumber")
            .and_then(Value::as_str)
            .is_some_and(|number| mentions(&order.raw.value(), number)),
    }
}

/// Whether any string in `value` contains `needle`.
fn mentions(value: &Value, needle: &str) -> bool {
    match value {
        Value::String(s) => s.contains(needle),
        Value::Array(items) => items.iter().any(|v| mentions(v, needle)),
        Value::Object(map) => map.values().any(|v| mentions(v, needle)),
        _ => false,
    }
}

/// The method, the URL and the JSON body of an action.
pub(super) fn request_of(base: &Url, action: &Action) -> (Method, Url, Option<Value>) {
    let url = |segments: &[&str]| {
        let mut url = base.clone();
        url.set_query(None);
        url.set_fragment(None);
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        url
    };
    match action {
        Action::SetStatus { order_id, code } => (
            Method::POST,
            url(&["orders", "status"]),
            Some(json!({ "orderId": order_id, "statusCode": code })),
        ),
        Action::Delete { order_id } => (
            Method::DELETE,
            url(&["orders", &order_id.to_string()]),
            None,
        ),
        Action::InvoiceLink { entry } => (
            Method::POST,
            url(&["orders", "invoice-link"]),
            Some(json!({ "payload": [entry] })),
        ),
    }
}

/// Why an action's 200 answer is not a success.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Failure {
    Rejected(String),
    Malformed(String),
}

/// Reads an action's answer `{"status": "success"|…, "message"}`.
pub(super) fn outcome(body: &[u8]) -> Result<(), Failure> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| Failure::Malformed(format!("not JSON: {e}")))?;
    match value.get("status").and_then(Value::as_str) {
        Some(status) if status.eq_ignore_ascii_case("success") => Ok(()),
        Some(status) => Err(Failure::Rejected(
            value
                .get("message")
                .and_then(Value::as_str)
                .map_or_else(|| format!("status `{status}`"), str::to_owned),
        )),
        None => Err(Failure::Malformed("no `status` in the answer".to_owned())),
    }
}

impl Labs {
    pub(super) async fn send_action(
        &self,
        transition: &Transition,
    ) -> Result<AppliedTransition, MarketplaceError> {
        let base_what = format!("{} order {}", transition.kind, transition.order_external_id);
        let rejected = |what: &str, message: String| MarketplaceError::Rejected {
            what: what.to_owned(),
            status: None,
            message: self.http.redactor().redact(&message),
        };
        let action = parse(transition).map_err(|r| rejected(&base_what, r.0))?;
        let (method, url, body) = request_of(&self.base_url, &action);
        let what = format!("{method} {}", url.path());
        let request_summary = self.http.redactor().redact(&match &body {
            Some(body) => format!("{what} {body}"),
            None => what.clone(),
        });
        let auth = self.auth.clone().map_err(|m| rejected(&what, m))?;
        let mut request = self
            .http
            .request(method, url.as_str())
            .header(AUTHORIZATION, auth)
            .header(ACCEPT, "application/json")
            .header(CONTENT_TYPE, "application/json");
        if let Some(body) = &body {
            request = request.json(body);
        }
        let response = self.http.send(&what, request, wire::api_message).await?;
        let malformed =
            |reason: String| MarketplaceError::malformed(&self.http, &what, reason, &response.body);
        if let Some(ct) = response.content_type.as_deref()
            && !ct.to_ascii_lowercase().contains("json")
        {
            return Err(malformed(format!("content type `{ct}`, expected JSON")));
        }
        outcome(&response.body).map_err(|f| match f {
            Failure::Rejected(message) => rejected(&what, message),
            Failure::Malformed(reason) => malformed(reason),
        })?;
        Ok(AppliedTransition {
            request_summary,
            http_status: response.status.as_u16(),
            response_excerpt: self.http.redactor().excerpt(&response.body),
        })
    }

    /// The orders of `external_ids` among the recently updated ones (see the module documentation):
    /// pages are read until every one is found or [`READ_BACK_PAGES`] pages have been read.
    pub(super) async fn read_back(
        &self,
        external_ids: &[String],
    ) -> Result<Vec<Order>, MarketplaceError> {
        let mut wanted: HashSet<&str> = external_ids.iter().map(String::as_str).collect();
        let mut found = Vec::new();
        let now = Utc::now();
        let mut request = PageRequest {
            from: now - TimeDelta::days(1),
            to: now,
            page: None,
            page_size: 100,
            order_ids: Vec::new(),
            changed_since: None,
            stored: None,
        };
        for _ in 0..READ_BACK_PAGES {
            if wanted.is_empty() {
                break;
            }
            let page = self.fetch_orders(&request).await?;
            found.extend(
                page.orders
                    .into_iter()
                    .filter(|o| wanted.remove(o.external_id.as_str())),
            );
            match page.next {
                Some(next) => request.page = Some(next),
                None => break,
            }
        }
        Ok(found)
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

    use super::*;
    use crate::config::{AccountConfig, Credentials, Secret};
    use crate::domain::{MarketplaceKind, OrderState, RawStatus};
    use crate::http::HttpClient;
    use crate::marketplace::Marketplace;

    macro_rules! fixture {
        ($name:literal) => {
            include_str!(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/fixtures/labs/",
                $name
            ))
        };
    }

    const TOKEN: &str = "labs-transition-token-24680";
    const ORDER: &str = "2752190";

    fn transition(kind: &str, args: Value) -> Transition {
        Transition {
            order_external_id: ORDER.into(),
            kind: kind.into(),
            args: args.as_object().cloned().unwrap_or_default(),
            idempotency_key: "key-1".into(),
        }
    }

    fn order(status: &str) -> Order {
        Order {
            external_id: ORDER.into(),
            order_number: None,
            state: OrderState::Unknown,
            status: RawStatus {
                code: Some(status.into()),
                text: None,
            },
            total_amount: None,
            shipping_amount: None,
            currency: None,
            customer_name: None,
            customer_email: None,
            shipping_city: None,
            placed_at: None,
            source_updated_at: None,
            lines: Vec::new(),
            packages: Vec::new(),
            raw: Value::Null.into(),
        }
    }

    fn validate(t: &Transition, current: Option<&Order>) -> Result<(), String> {
        parse(t)
            .and_then(|a| check_legal(&a, current))
            .map_err(|r| r.0)
    }

    fn invoice() -> Value {
        json!({
            "invoice_link": "https://extfatura.example.com/324523-34523.pdf",
            "invoice_number": " FRY2024567890123 ",
            "invoice_date_time": "1747729029",
            "invoice_uuid": "324523-34523-52345-3453245",
            "marketplace": "Trendyol",
        })
    }

    #[test]
    fn every_kind_is_accepted() {
        let preparing = order("PREPARING");
        let set = transition("set-status", json!({"status_code": "4"}));
        assert_eq!(validate(&set, Some(&preparing)), Ok(()));
        assert_eq!(validate(&set, None), Ok(()));
        assert_eq!(validate(&set, Some(&order("ON_THE_WAY"))), Ok(()));
        assert_eq!(
            validate(&transition("delete", json!({})), Some(&preparing)),
            Ok(())
        );
        assert_eq!(
            validate(&transition("invoice-link", invoice()), Some(&preparing)),
            Ok(())
        );
        let mut numbers = invoice();
        numbers["invoice_date_time"] = json!(1747729029);
        numbers.as_object_mut().unwrap().remove("invoice_uuid");
        assert_eq!(validate(&transition("invoice-link", numbers), None), Ok(()));
    }

    #[test]
    fn every_kind_refuses_missing_and_bad_arguments() {
        let refusal =
            |kind: &str, args: Value| validate(&transition(kind, args), None).unwrap_err();
        assert_eq!(
            refusal("set-status", json!({})),
            "`set-status` needs the argument `status_code`"
        );
        assert_eq!(
            refusal("set-status", json!({"status_code": 9})),
            "`status_code` must be a whole number from 0 to 8, got 9"
        );
        assert_eq!(
            refusal("set-status", json!({"status_code": "dört"})),
            "`status_code` must be a whole number from 0 to 8, got `dört`"
        );
        assert_eq!(
            refusal("delete", json!({"force": true})),
            "`delete` takes no arguments, got `force`"
        );
        for name in [
            "invoice_link",
            "invoice_number",
            "invoice_date_time",
            "marketplace",
        ] {
            let mut args = invoice();
            args.as_object_mut().unwrap().remove(name);
            assert_eq!(
                refusal("invoice-link", args),
                format!("`invoice-link` needs the argument `{name}`")
            );
        }
        let bad = |name: &str, value: Value| {
            let mut args = invoice();
            args[name] = value;
            refusal("invoice-link", args)
        };
        assert_eq!(
            bad("invoice_number", json!("AB2024123")),
            "invoice_number `AB2024123` must be 3 letters or digits, a year 2020–2099 and 9 digits"
        );
        for number in [
            "FRY2019567890123",
            "FR-2024567890123",
            "FRY2024567890A23",
            "FRY20245678901234",
            "ĞRY202456789012",
        ] {
            assert!(
                bad("invoice_number", json!(number)).starts_with("invoice_number"),
                "{number}"
            );
        }
        for number in ["1232024567890123", "F1Y2099000000000", "fry2020123456789"] {
            assert!(is_invoice_number(number), "{number}");
        }
        assert_eq!(
            bad("invoice_date_time", json!("174772902")),
            "invoice_date_time `174772902` must be a 10-digit Unix time in seconds"
        );
        assert!(
            bad("invoice_date_time", json!(1747729029123_u64)).starts_with("invoice_date_time")
        );
        assert_eq!(
            bad("invoice_link", json!("ftp://x/a.pdf")),
            "`invoice_link` `ftp://x/a.pdf` must be an http(s) link to a .pdf file"
        );
        assert!(bad("invoice_link", json!("https://x.example/fatura")).contains(".pdf"));
        assert_eq!(
            bad("marketplace", json!("n11")),
            "marketplace `n11` is not one Labs sends invoice links to (it takes trendyol, hepsiburada, ciceksepeti)"
        );
        assert_eq!(
            bad("invoice_uuid", json!(" ")),
            "`invoice_uuid` must not be empty"
        );
        assert_eq!(
            validate(
                &Transition {
                    order_external_id: "LABS-1".into(),
                    ..transition("delete", json!({}))
                },
                None
            ),
            Err("Labs order ids are whole numbers, not `LABS-1`".to_owned())
        );
        assert_eq!(
            refusal("ship", json!({})),
            "labs has no transition `ship` (it has set-status, delete, invoice-link)"
        );
    }

    #[test]
    fn statuses_only_move_forward() {
        let to = |code: u8| transition("set-status", json!({ "status_code": code }));
        assert_eq!(
            validate(&to(2), Some(&order("PREPARING"))),
            Err(format!(
                "Labs statuses only move forward: order `{ORDER}` is PREPARING (code 2), so `status_code` 2 is not after it"
            ))
        );
        assert!(validate(&to(0), Some(&order("CREATED"))).is_err());
        assert!(validate(&to(1), Some(&order("PENDING_APPROVED"))).is_ok());
        assert!(validate(&to(8), Some(&order("RETURN"))).is_ok());
        assert!(validate(&to(4), Some(&order("COMPLETED"))).is_err());
        assert_eq!(
            validate(&to(7), Some(&order("CANCELLED"))),
            Err(format!(
                "order `{ORDER}` is CANCELLED (code 6): a cancelled order's status cannot move"
            ))
        );
    }

    #[test]
    fn effects_are_read_from_the_status_and_payload() {
        let to =
            |code: u8| parse(&transition("set-status", json!({ "status_code": code }))).unwrap();
        assert!(took_effect(&to(2), &order("PREPARING")));
        assert!(took_effect(&to(1), &order("PREPARING")));
        assert!(!took_effect(&to(4), &order("PREPARING")));
        assert!(!took_effect(&to(4), &order("ON_THE_WAY")));
        assert!(!took_effect(
            &parse(&transition("delete", json!({}))).unwrap(),
            &order("CREATED")
        ));
        let link = parse(&transition("invoice-link", invoice())).unwrap();
        let mut invoiced = order("COMPLETED");
        invoiced.raw = json!({"invoice": {"number": "FRY2024567890123"}}).into();
        assert!(took_effect(&link, &invoiced));
        assert!(!took_effect(&link, &order("COMPLETED")));
    }

    #[test]
    fn requests_are_built_from_the_actions() {
        let base = Url::parse("https://api.labsoffice.com/v1/").unwrap();
        let (method, url, body) = request_of(
            &base,
            &parse(&transition("set-status", json!({"status_code": 3}))).unwrap(),
        );
        assert_eq!(
            (method, url.as_str()),
            (Method::POST, "https://api.labsoffice.com/v1/orders/status")
        );
        assert_eq!(
            body.unwrap().to_string(),
            r#"{"orderId":2752190,"statusCode":3}"#
        );
        let (method, url, body) =
            request_of(&base, &parse(&transition("delete", json!({}))).unwrap());
        assert_eq!(
            (method, url.as_str(), body),
            (
                Method::DELETE,
                "https://api.labsoffice.com/v1/orders/2752190",
                None
            )
        );
        let (method, url, body) = request_of(
            &base,
            &parse(&transition("invoice-link", invoice())).unwrap(),
        );
        assert_eq!(
            (method, url.path()),
            (Method::POST, "/v1/orders/invoice-link")
        );
        assert_eq!(
            body.unwrap(),
            json!({"payload": [{
                "orderId": 2752190,
                "marketplace": "trendyol",
                "invoiceLink": "https://extfatura.example.com/324523-34523.pdf",
                "invoiceNumber": "FRY2024567890123",
                "invoiceUuid": "324523-34523-52345-3453245",
                "invoiceDateTime": 1747729029,
            }]})
        );
    }

    #[test]
    fn answers_are_read_by_their_status() {
        for ok in [
            fixture!("status_updated.json"),
            fixture!("order_deleted.json"),
            fixture!("invoice_queued.json"),
        ] {
            assert_eq!(outcome(ok.as_bytes()), Ok(()));
        }
        assert_eq!(
            outcome(fixture!("status_backwards.json").as_bytes()),
            Err(Failure::Rejected(
                "Geriye yönelik statü güncellemesi yapılamaz.".into()
            ))
        );
        assert_eq!(
            outcome(fixture!("error_validation.json").as_bytes()),
            Err(Failure::Rejected(
                "page ve limit parametrelerinin gönderilmesi zorunludur.".into()
            ))
        );
        for bad in [fixture!("no_status.json"), fixture!("truncated.json"), ""] {
            assert!(
                matches!(outcome(bad.as_bytes()), Err(Failure::Malformed(_))),
                "{bad}"
            );
        }
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
            .push((method.to_string(), uri.to_string(), auth, body.clone()));
        let json = [(axum::http::header::CONTENT_TYPE, "application/json")];
        let query = uri.query().unwrap_or_default();
        match (method.as_str(), uri.path()) {
            ("POST", "/labs/v1/orders/status") if body.contains("\"statusCode\":1") => {
                (json, fixture!("status_backwards.json")).into_response()
            }
            ("POST", "/labs/v1/orders/status") => {
                (json, fixture!("status_updated.json")).into_response()
            }
            ("POST", "/labs/v1/orders/invoice-link") => {
                (json, fixture!("invoice_queued.json")).into_response()
            }
            ("DELETE", "/labs/v1/orders/2752190") => {
                (json, fixture!("order_deleted.json")).into_response()
            }
            ("GET", "/labs/v1/orders") if query.starts_with("page=1&") => {
                (json, fixture!("orders_page.json")).into_response()
            }
            ("GET", "/labs/v1/orders") if query.starts_with("page=2&") => {
                (json, fixture!("orders_last_page.json")).into_response()
            }
            _ => (
                StatusCode::NOT_FOUND,
                json,
                r#"{"status": "error", "message": "Bulunamadı"}"#,
            )
                .into_response(),
        }
    }

    #[tokio::test]
    async fn actions_are_sent_with_the_token_in_the_header_only() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}/labs/v1", listener.local_addr().unwrap());
        let seen = Seen::default();
        let app = axum::Router::new()
            .fallback(fake_api)
            .with_state(seen.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        let account = AccountConfig {
            name: "shop".into(),
            marketplace: MarketplaceKind::Labs,
            base_url: Url::parse(&base).unwrap(),
            enabled: true,
            schedule: "0 */5 * * * *".into(),
            initial_sync_days: 30,
            overlap: Duration::from_secs(600),
            page_size: 2,
            requests_per_second: NonZeroU32::new(1000).unwrap(),
            timeout: Duration::from_secs(5),
            credentials: Credentials::Labs {
                token: Secret::new(TOKEN),
            },
        };
        let http = HttpClient::new(
            &account.http_settings(),
            account.credentials.secret_values(),
        )
        .unwrap();
        let labs = Labs::new(&account, http, &HashMap::new());

        let set = transition("set-status", json!({"status_code": 3}));
        let applied = labs.apply_transition(&set).await.unwrap();
        assert_eq!(
            applied.request_summary,
            r#"POST /labs/v1/orders/status {"orderId":2752190,"statusCode":3}"#
        );
        assert!(applied.response_excerpt.contains("başarıyla"));
        let (method, uri, auth, body) = seen.lock().unwrap().pop().unwrap();
        assert_eq!(
            (method.as_str(), uri.as_str()),
            ("POST", "/labs/v1/orders/status")
        );
        assert_eq!(auth, Some(format!("Bearer {TOKEN}")));
        assert_eq!(
            serde_json::from_str::<Value>(&body).unwrap(),
            json!({"orderId": 2752190, "statusCode": 3})
        );

        let error = labs
            .apply_transition(&transition("set-status", json!({"status_code": 1})))
            .await
            .unwrap_err();
        assert!(
            matches!(&error, MarketplaceError::Rejected { status: None, message, .. }
                if message == "Geriye yönelik statü güncellemesi yapılamaz."),
            "{error:?}"
        );

        let applied = labs
            .apply_transition(&transition("delete", json!({})))
            .await
            .unwrap();
        assert_eq!(applied.request_summary, "DELETE /labs/v1/orders/2752190");
        let applied = labs
            .apply_transition(&transition("invoice-link", invoice()))
            .await
            .unwrap();
        assert!(
            applied
                .request_summary
                .starts_with(r#"POST /labs/v1/orders/invoice-link {"payload":[{"#)
        );
        let (_, _, _, body) = seen.lock().unwrap().pop().unwrap();
        assert_eq!(
            serde_json::from_str::<Value>(&body).unwrap()["payload"][0]["invoiceDateTime"],
            1747729029
        );

        let order = labs.fetch_order("2752184").await.unwrap().unwrap();
        assert_eq!(order.status.code.as_deref(), Some("ON_THE_WAY"));
        assert!(!labs.transition_took_effect(&set, &order));
        let preparing = labs.fetch_order(ORDER).await.unwrap().unwrap();
        assert!(labs.transition_took_effect(
            &transition("set-status", json!({"status_code": 2})),
            &preparing
        ));
        assert_eq!(labs.fetch_order("1").await.unwrap(), None);
        let requests = seen.lock().unwrap().clone();
        assert!(requests.iter().any(|(_, uri, _, _)| {
            uri.starts_with("/labs/v1/orders?page=2&limit=100&updatedStartAfter=")
        }));
        assert!(
            requests
                .iter()
                .all(|(_, uri, _, body)| !uri.contains(TOKEN) && !body.contains(TOKEN))
        );
        assert!(!format!("{error} {error:?} {applied:?}").contains(TOKEN));
    }
}
