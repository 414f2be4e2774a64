//! allesgo transitions: the eight order actions of `docs/allesgo.txt`, each a
//! `POST {base_url}/v1.0/order/{action}/store/{storeId}?access_token=…` with a JSON body.
//!
//! | kind | arguments | legal when (the order's last known state) |
//! |---|---|---|
//! | `accept` | `package_id` | the package awaits approval |
//! | `postpone` | `package_id`, `reason` | the package awaits approval, is approved, preparing or packaged |
//! | `ship` | `package_id`, `company_id`, `shipping_code` | the package is approved, preparing or packaged |
//! | `cancel` | `order_numbers`?, `reason` | the order has not shipped and has not ended |
//! | `accept-cancel` | `order_numbers`?, `reason` | the order has a cancellation request |
//! | `reject-cancel` | `package_id`, `reason` | the package has a cancellation request |
//! | `accept-return` | `package_id`, `message` | the package has a return request |
//! | `reject-return` | `package_id`, `reason` | the package has a return request |
//!
//! `order_numbers` (a list, or comma-separated text) defaults to the transition's own order and must
//! include it. When the order is known, `package_id` must be one of its packages. A package or order
//! whose state is `unknown` (allesgo's codes are only published at run time) is let through: the API
//! has the last word. A `data.success: false` or an `error` in a 200 body is a rejection carrying the
//! API's message.
//!
//! Read-back: allesgo has no single-order read, so [`Allesgo::read_back`] uses the narrowest listing
//! that must hold an order whose transition took effect: the orders whose status changed within the
//! last two days (`updates_only=1&days=2`), picking the order by its code.

use serde_json::{Map, Value, json};

use super::wire;
use super::{Allesgo, endpoint, orders_url};
use crate::domain::{Order, OrderState};
use crate::marketplace::args::{Args, refuse, unknown_kind};
use crate::marketplace::payload::is_json;
use crate::marketplace::{AppliedTransition, MarketplaceError, Transition, TransitionRefusal};

const KINDS: &[&str] = &[
    "accept",
    "postpone",
    "ship",
    "cancel",
    "accept-cancel",
    "reject-cancel",
    "accept-return",
    "reject-return",
];

/// A validated action: what to POST where.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Action {
    /// The path segment, which is also the transition's kind.
    pub name: &'static str,
    /// The package acted on (package actions).
    pub package_id: Option<String>,
    /// The orders acted on (`cancel`, `accept-cancel`).
    pub order_numbers: Vec<String>,
    pub body: Map<String, Value>,
}

/// Reads and checks a transition's arguments (no I/O, no state).
pub(super) fn parse(transition: &Transition) -> Result<Action, TransitionRefusal> {
    let args = Args::new(transition);
    let name = KINDS
        .iter()
        .copied()
        .find(|k| *k == transition.kind)
        .ok_or_else(|| unknown_kind("allesgo", &transition.kind, KINDS))?;
    let fields: &[&str] = match name {
        "accept" => &["package_id"],
        "postpone" | "reject-cancel" | "reject-return" => &["package_id", "reason"],
        "ship" => &["package_id", "company_id", "shipping_code"],
        "accept-return" => &["package_id", "message"],
        _ => &["order_numbers", "reason"],
    };
    args.only(fields)?;
    let mut body = Map::new();
    let mut order_numbers = Vec::new();
    for field in fields {
        if *field == "order_numbers" {
            order_numbers = args
                .optional_list(field)?
                .unwrap_or_else(|| vec![transition.order_external_id.clone()]);
            if !order_numbers.contains(&transition.order_external_id) {
                return Err(refuse(format!(
                    "`order_numbers` must include this transition's order `{}`",
                    transition.order_external_id
                )));
            }
            body.insert((*field).to_owned(), json!(order_numbers));
        } else {
            body.insert((*field).to_owned(), Value::String(args.text(field)?));
        }
    }
    Ok(Action {
        name,
        package_id: body
            .get("package_id")
            .and_then(Value::as_str)
            .map(str::to_owned),
        order_numbers,
        body,
    })
}

/// Package states an action may start from.
fn package_states(name: &str) -> &'static [OrderState] {
    use OrderState::*;
    match name {
        "accept" => &[AwaitingApproval],
        "postpone" => &[AwaitingApproval, Approved, Preparing, Packaged],
        "ship" => &[Approved, Preparing, Packaged],
        "reject-cancel" => &[CancelRequested],
        _ => &[ReturnRequested],
    }
}

/// Order states an order action may start from.
fn order_states(name: &str) -> &'static [OrderState] {
    use OrderState::*;
    match name {
        "cancel" => &[
            AwaitingPayment,
            AwaitingApproval,
            Approved,
            Preparing,
            Packaged,
            OnHold,
        ],
        _ => &[CancelRequested],
    }
}

/// Whether `action` is legal from the order's last known state.
pub(super) fn check_legal(
    action: &Action,
    current: Option<&Order>,
) -> Result<(), TransitionRefusal> {
    let Some(order) = current else {
        return Ok(());
    };
    match &action.package_id {
        Some(package_id) => {
            let package = order
                .packages
                .iter()
                .find(|p| p.external_id == *package_id)
                .ok_or_else(|| {
                    let known: Vec<&str> = order
                        .packages
                        .iter()
                        .map(|p| p.external_id.as_str())
                        .collect();
                    refuse(format!(
                        "package `{package_id}` is not part of order `{}` (its packages: {})",
                        order.external_id,
                        if known.is_empty() {
                            "none".to_owned()
                        } else {
                            known.join(", ")
                        }
                    ))
                })?;
            let allowed = package_states(action.name);
            if package.state != OrderState::Unknown && !allowed.contains(&package.state) {
                return Err(refuse(format!(
                    "package `{package_id}` is {}{}; `{}` needs it {}",
                    package.state,
                    raw_text(package.status.text.as_deref()),
                    action.name,
                    list(allowed)
                )));
            }
        }
        None => {
            let allowed = order_states(action.name);
            if order.state != OrderState::Unknown && !allowed.contains(&order.state) {
                return Err(refuse(format!(
                    "order `{}` is {}{}; `{}` needs it {}",
                    order.external_id,
                    order.state,
                    raw_text(order.status.text.as_deref()),
                    action.name,
                    list(allowed)
                )));
            }
        }
    }
    Ok(())
}

fn raw_text(text: Option<&str>) -> String {
    text.map(|t| format!(" (“{t}”)")).unwrap_or_default()
}

fn list(states: &[OrderState]) -> String {
    states
        .iter()
        .map(|s| s.as_str())
        .collect::<Vec<_>>()
        .join(" or ")
}

/// Whether the read-back `order` shows `action` done.
pub(super) fn took_effect(action: &Action, order: &Order) -> bool {
    use OrderState::*;
    let package = || {
        action
            .package_id
            .as_ref()
            .and_then(|id| order.packages.iter().find(|p| p.external_id == *id))
    };
    let package_in = |states: &[OrderState]| package().is_some_and(|p| states.contains(&p.state));
    match action.name {
        "accept" => package_in(&[Approved, Preparing, Packaged, Shipped, Delivered, Completed]),
        "postpone" => package_in(&[OnHold]),
        "ship" => {
            let code = action.body.get("shipping_code").and_then(Value::as_str);
            package_in(&[Shipped, Delivered, Completed])
                || package().is_some_and(|p| p.tracking_number.as_deref() == code)
        }
        "cancel" => matches!(order.state, Cancelled | Rejected),
        "accept-cancel" => order.state == Cancelled,
        "reject-cancel" => {
            package().is_some_and(|p| !matches!(p.state, CancelRequested | Cancelled | Unknown))
        }
        "accept-return" => package_in(&[Returned]),
        _ => package().is_some_and(|p| !matches!(p.state, ReturnRequested | Returned | Unknown)),
    }
}

impl Allesgo {
    pub(super) async fn send_action(
        &self,
        transition: &Transition,
    ) -> Result<AppliedTransition, MarketplaceError> {
        let what = format!(
            "POST order/{}/store for order {}",
            transition.kind, transition.order_external_id
        );
        let action = parse(transition).map_err(|refusal| MarketplaceError::Rejected {
            what: what.clone(),
            status: None,
            message: refusal.0,
        })?;
        let auth = self.auth(&what)?;
        let url = endpoint(
            &self.base_url,
            &["v1.0", "order", action.name, "store", &auth.store_id],
        );
        let body = Value::Object(action.body);
        let request_summary = self
            .http
            .redactor()
            .redact(&format!("POST {} {body}", url.path()));
        let mut url = url;
        url.query_pairs_mut()
            .append_pair("access_token", auth.access_token.expose());
        let request = self
            .http
            .request(reqwest::Method::POST, url.as_str())
            .header(reqwest::header::ACCEPT, "application/json")
            .json(&body);
        let response = self.http.send(&what, request, wire::api_message).await?;
        if !is_json(response.content_type.as_deref()) {
            return Err(MarketplaceError::malformed(
                &self.http,
                &what,
                format!(
                    "content type `{}`, expected JSON",
                    response.content_type.as_deref().unwrap_or_default()
                ),
                &response.body,
            ));
        }
        wire::action_result(&response.body)
            .map_err(|p| super::problem(&self.http, &what, p, &response.body))?;
        Ok(AppliedTransition {
            request_summary,
            http_status: response.status.as_u16(),
            response_excerpt: self.http.redactor().excerpt(&response.body),
        })
    }

    /// The order `external_id` from the listing of recently changed orders (see the module docs).
    pub(super) async fn read_back(
        &self,
        external_id: &str,
    ) -> Result<Option<Order>, MarketplaceError> {
        let query = vec![("updates_only", "1".to_owned()), ("days", "2".to_owned())];
        let what = format!("GET order/store updates_only=1 days=2 (read back {external_id})");
        let auth = self.auth(&what)?;
        let url = orders_url(&self.base_url, &auth.store_id, &query);
        let response = self.get(&what, url, auth).await?;
        let orders = wire::parse_orders(&response.body, &self.statuses, self.http.redactor())
            .map_err(|p| super::problem(&self.http, &what, p, &response.body))?;
        Ok(orders.into_iter().find(|o| o.external_id == external_id))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::num::NonZeroU32;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use axum::extract::{Path, Query, State};
    use axum::http::{StatusCode, header};
    use axum::response::IntoResponse;
    use axum::routing::{get, post};
    use url::Url;

    use super::*;
    use crate::config::{AccountConfig, Credentials, Secret};
    use crate::domain::{MarketplaceKind, Package, RawStatus};
    use crate::http::HttpClient;
    use crate::marketplace::Marketplace;

    macro_rules! fixture {
        ($name:literal) => {
            include_str!(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/fixtures/allesgo/",
                $name
            ))
        };
    }

    const TOKEN: &str = "tok-5e4d3c2b1a09";
    const ORDER: &str = "AG-2024050201";

    fn transition(kind: &str, args: Value) -> Transition {
        Transition {
            order_external_id: ORDER.into(),
            kind: kind.into(),
            args: args.as_object().cloned().unwrap_or_default(),
            idempotency_key: "key-1".into(),
        }
    }

    fn package(id: &str, state: OrderState) -> Package {
        Package {
            external_id: id.into(),
            state,
            status: RawStatus::default(),
            carrier: None,
            tracking_number: None,
            total_amount: None,
            raw: Value::Null.into(),
        }
    }

    fn order(state: OrderState, packages: Vec<Package>) -> Order {
        Order {
            external_id: ORDER.into(),
            order_number: None,
            state,
            status: RawStatus::default(),
            total_amount: None,
            shipping_amount: None,
            currency: None,
            customer_name: None,
            customer_email: None,
            shipping_city: None,
            placed_at: None,
            source_updated_at: None,
            lines: Vec::new(),
            packages,
            raw: Value::Null.into(),
        }
    }

    fn validate(t: &Transition, current: Option<&Order>) -> Result<(), String> {
        parse(t)
            .and_then(|a| check_legal(&a, current))
            .map_err(|r| r.0)
    }

    /// Every kind with valid arguments, and the package state it is legal from.
    fn valid() -> Vec<(Transition, OrderState)> {
        use OrderState::*;
        vec![
            (
                transition("accept", json!({"package_id": "PKG-2"})),
                AwaitingApproval,
            ),
            (
                transition(
                    "postpone",
                    json!({"package_id": "PKG-2", "reason": "Stok bekleniyor"}),
                ),
                Preparing,
            ),
            (
                transition(
                    "ship",
                    json!({"package_id": "PKG-2", "company_id": 12, "shipping_code": " YK123 "}),
                ),
                Packaged,
            ),
            (
                transition("cancel", json!({"reason": "Stokta yok"})),
                Approved,
            ),
            (
                transition("accept-cancel", json!({"reason": "Müşteri istedi"})),
                CancelRequested,
            ),
            (
                transition(
                    "reject-cancel",
                    json!({"package_id": "PKG-2", "reason": "Kargoda"}),
                ),
                CancelRequested,
            ),
            (
                transition(
                    "accept-return",
                    json!({"package_id": "PKG-2", "message": "İade onaylandı"}),
                ),
                ReturnRequested,
            ),
            (
                transition(
                    "reject-return",
                    json!({"package_id": "PKG-2", "reason": "Ürün kullanılmış"}),
                ),
                ReturnRequested,
            ),
        ]
    }

    #[test]
    fn every_kind_is_accepted_from_its_state_and_without_a_known_order() {
        for (t, state) in valid() {
            let known = order(
                state,
                vec![
                    package("PKG-1", OrderState::Delivered),
                    package("PKG-2", state),
                ],
            );
            assert_eq!(validate(&t, Some(&known)), Ok(()), "{}", t.kind);
            assert_eq!(validate(&t, None), Ok(()), "{}", t.kind);
            // allesgo's codes are published at run time: an unmapped state is left to the API.
            let unknown = order(
                OrderState::Unknown,
                vec![package("PKG-2", OrderState::Unknown)],
            );
            assert_eq!(validate(&t, Some(&unknown)), Ok(()), "{}", t.kind);
        }
    }

    #[test]
    fn every_kind_refuses_a_missing_argument() {
        for (t, _) in valid() {
            for name in t.args.keys() {
                if name == "order_numbers" {
                    continue;
                }
                let mut missing = t.clone();
                missing.args.remove(name);
                assert_eq!(
                    validate(&missing, None),
                    Err(format!("`{}` needs the argument `{name}`", t.kind)),
                );
            }
        }
    }

    #[test]
    fn every_kind_refuses_a_bad_argument() {
        for (t, _) in valid() {
            let name = t.args.keys().next().unwrap().clone();
            let mut empty = t.clone();
            empty.args.insert(name.clone(), json!("  "));
            assert_eq!(
                validate(&empty, None),
                Err(format!("`{name}` must not be empty"))
            );
            let mut typo = t.clone();
            typo.args.insert("reasn".into(), json!("x"));
            assert!(
                validate(&typo, None)
                    .unwrap_err()
                    .contains("no argument `reasn`")
            );
        }
        assert_eq!(
            validate(
                &transition(
                    "ship",
                    json!({"package_id": {"id": 1}, "company_id": 1, "shipping_code": "X"})
                ),
                None
            ),
            Err("`package_id` must be a text, not an object".to_owned())
        );
        assert_eq!(
            validate(
                &transition("cancel", json!({"order_numbers": ["AG-9"], "reason": "x"})),
                None
            ),
            Err(format!(
                "`order_numbers` must include this transition's order `{ORDER}`"
            ))
        );
        assert_eq!(
            validate(&transition("refund", json!({})), None),
            Err("allesgo has no transition `refund` (it has accept, postpone, ship, cancel, accept-cancel, reject-cancel, accept-return, reject-return)".to_owned())
        );
    }

    #[test]
    fn every_kind_refuses_an_illegal_state() {
        use OrderState::*;
        let illegal = [Shipped, Delivered, Cancelled, Returned];
        for (t, _) in valid() {
            for state in illegal {
                let known = order(state, vec![package("PKG-2", state)]);
                let refusal = validate(&t, Some(&known)).unwrap_err();
                assert!(
                    refusal.contains(&format!("is {state}")),
                    "{}: {refusal}",
                    t.kind
                );
            }
        }
        let mut waiting = package("PKG-2", AwaitingApproval);
        waiting.status.text = Some("Onay Bekliyor".into());
        assert_eq!(
            validate(&valid()[2].0, Some(&order(AwaitingApproval, vec![waiting]))),
            Err("package `PKG-2` is awaiting_approval (“Onay Bekliyor”); `ship` needs it approved or preparing or packaged".to_owned())
        );
        assert_eq!(
            validate(
                &valid()[0].0,
                Some(&order(
                    AwaitingApproval,
                    vec![package("PKG-1", AwaitingApproval)]
                ))
            ),
            Err(format!(
                "package `PKG-2` is not part of order `{ORDER}` (its packages: PKG-1)"
            ))
        );
    }

    #[test]
    fn bodies_hold_the_trimmed_arguments_as_text() {
        let ship = parse(&valid()[2].0).unwrap();
        assert_eq!(ship.name, "ship");
        assert_eq!(
            Value::Object(ship.body).to_string(),
            r#"{"company_id":"12","package_id":"PKG-2","shipping_code":"YK123"}"#
        );
        let cancel = parse(&transition(
            "cancel",
            json!({"order_numbers": "AG-1, AG-2024050201", "reason": "Stok"}),
        ))
        .unwrap();
        assert_eq!(cancel.order_numbers, ["AG-1", ORDER]);
        assert_eq!(
            Value::Object(cancel.body).to_string(),
            r#"{"order_numbers":["AG-1","AG-2024050201"],"reason":"Stok"}"#
        );
        let default = parse(&valid()[4].0).unwrap();
        assert_eq!(default.body["order_numbers"], json!([ORDER]));
    }

    #[test]
    fn action_responses_are_read() {
        for ok in [
            fixture!("action_accepted.json"),
            fixture!("action_shipped.json"),
            fixture!("action_cancelled.json"),
        ] {
            assert_eq!(wire::action_result(ok.as_bytes()), Ok(()), "{ok}");
        }
        assert_eq!(
            wire::action_result(fixture!("action_cancel_refused.json").as_bytes()),
            Err(wire::Problem::Rejected(
                "Kargoya verilmiş sipariş iptal edilemez".into()
            ))
        );
        assert_eq!(
            wire::action_result(fixture!("error_message.json").as_bytes()),
            Err(wire::Problem::Rejected(
                "Bu mağazaya erişim yetkiniz yok".into()
            ))
        );
        for bad in [
            fixture!("action_no_data.json"),
            fixture!("truncated.json"),
            "",
        ] {
            assert!(matches!(
                wire::action_result(bad.as_bytes()),
                Err(wire::Problem::Malformed(_))
            ));
        }
    }

    #[test]
    fn effects_are_read_from_the_packages() {
        use OrderState::*;
        let seen = |kind: usize, state: OrderState| {
            took_effect(
                &parse(&valid()[kind].0).unwrap(),
                &order(state, vec![package("PKG-2", state)]),
            )
        };
        assert!(seen(0, Approved) && !seen(0, AwaitingApproval));
        assert!(seen(1, OnHold) && !seen(1, Preparing));
        assert!(seen(2, Shipped) && !seen(2, Packaged));
        assert!(seen(3, Cancelled) && !seen(3, Approved));
        assert!(seen(4, Cancelled) && !seen(4, CancelRequested));
        assert!(seen(5, Preparing) && !seen(5, CancelRequested));
        assert!(seen(6, Returned) && !seen(6, ReturnRequested));
        assert!(seen(7, Delivered) && !seen(7, ReturnRequested));
        let mut tracked = package("PKG-2", Unknown);
        tracked.tracking_number = Some("YK123".into());
        assert!(took_effect(
            &parse(&valid()[2].0).unwrap(),
            &order(Unknown, vec![tracked])
        ));
    }

    /// What the stand-in service saw: method, path, query and body of every request.
    type Seen = Arc<Mutex<Vec<(String, HashMap<String, String>, Value)>>>;

    async fn action(
        State((seen, reply)): State<(Seen, Arc<Mutex<&'static str>>)>,
        Path((name, store)): Path<(String, String)>,
        Query(query): Query<HashMap<String, String>>,
        axum::Json(body): axum::Json<Value>,
    ) -> impl IntoResponse {
        seen.lock()
            .unwrap()
            .push((format!("{name} {store}"), query, body));
        let reply = *reply.lock().unwrap();
        let status = if reply.contains("Bu mağazaya") {
            StatusCode::FORBIDDEN
        } else {
            StatusCode::OK
        };
        (status, [(header::CONTENT_TYPE, "application/json")], reply)
    }

    async fn listing(
        State((seen, _)): State<(Seen, Arc<Mutex<&'static str>>)>,
        Query(query): Query<HashMap<String, String>>,
    ) -> impl IntoResponse {
        seen.lock()
            .unwrap()
            .push(("list".into(), query, Value::Null));
        (
            [(header::CONTENT_TYPE, "application/json")],
            fixture!("orders_many.json"),
        )
    }

    #[tokio::test]
    async fn actions_are_posted_with_the_token_in_the_query_only() {
        let seen = Seen::default();
        let reply = Arc::new(Mutex::new(fixture!("action_shipped.json")));
        let app = axum::Router::new()
            .route("/allesgo/v1.0/order/{name}/store/{store}", post(action))
            .route("/allesgo/v1.0/order/store/{store}", get(listing))
            .with_state((seen.clone(), reply.clone()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        let account = AccountConfig {
            name: "magaza".into(),
            marketplace: MarketplaceKind::Allesgo,
            base_url: Url::parse(&format!("http://{addr}/allesgo")).unwrap(),
            enabled: true,
            schedule: "0 */5 * * * *".into(),
            initial_sync_days: 7,
            overlap: Duration::from_secs(300),
            page_size: 200,
            requests_per_second: NonZeroU32::new(50).unwrap(),
            timeout: Duration::from_secs(5),
            credentials: Credentials::Allesgo {
                store_id: "5f00aa".into(),
                access_token: Secret::new(TOKEN),
            },
        };
        let http = HttpClient::new(
            &account.http_settings(),
            account.credentials.secret_values(),
        )
        .unwrap();
        let allesgo = Allesgo::new(&account, http, &HashMap::new());

        let applied = allesgo.apply_transition(&valid()[2].0).await.unwrap();
        assert_eq!(
            applied.request_summary,
            r#"POST /allesgo/v1.0/order/ship/store/5f00aa {"company_id":"12","package_id":"PKG-2","shipping_code":"YK123"}"#
        );
        assert_eq!(applied.http_status, 200);
        assert!(applied.response_excerpt.contains("YK123456789"));
        let (target, query, body) = seen.lock().unwrap().pop().unwrap();
        assert_eq!(target, "ship 5f00aa");
        assert_eq!(
            query,
            HashMap::from([("access_token".to_owned(), TOKEN.to_owned())])
        );
        assert_eq!(
            body,
            json!({"package_id": "PKG-2", "company_id": "12", "shipping_code": "YK123"})
        );

        *reply.lock().unwrap() = fixture!("action_cancel_refused.json");
        let error = allesgo.apply_transition(&valid()[3].0).await.unwrap_err();
        assert!(
            matches!(&error, MarketplaceError::Rejected { status: None, message, .. } if message == "Kargoya verilmiş sipariş iptal edilemez"),
            "{error:?}"
        );
        assert!(!format!("{error} {error:?}").contains(TOKEN));
        let (target, _, body) = seen.lock().unwrap().pop().unwrap();
        assert_eq!(target, "cancel 5f00aa");
        assert_eq!(
            body,
            json!({"order_numbers": [ORDER], "reason": "Stokta yok"})
        );

        *reply.lock().unwrap() = fixture!("error_message.json");
        let error = allesgo.apply_transition(&valid()[0].0).await.unwrap_err();
        assert!(
            matches!(error, MarketplaceError::Unauthorized { status: 403, .. }),
            "{error:?}"
        );
        assert!(!format!("{error} {error:?}").contains(TOKEN));

        let order = allesgo.fetch_order(ORDER).await.unwrap().unwrap();
        assert_eq!(order.packages[1].external_id, "PKG-2");
        let (target, query, _) = seen.lock().unwrap().pop().unwrap();
        assert_eq!(target, "list");
        assert_eq!(query.get("updates_only").map(String::as_str), Some("1"));
        assert_eq!(query.get("days").map(String::as_str), Some("2"));
        assert!(!allesgo.transition_took_effect(&valid()[0].0, &order));
        assert!(allesgo.fetch_order("AG-0").await.unwrap().is_none());
    }
}
