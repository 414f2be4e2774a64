//! The allesgo fake against its document and the digest: token on every call, the list's windows and
//! filters, one-object-or-array `data`, package transitions and their rules, and the audit log's effects.

use std::collections::BTreeSet;
use std::str::FromStr;

use chrono::Utc;
use ordersync::sandbox::{Api, Sandbox, SandboxConfig};
use reqwest::StatusCode;
use rust_decimal::Decimal;
use serde_json::{Value, json};

struct Allesgo {
    sandbox: Sandbox,
    http: reqwest::Client,
}

impl Allesgo {
    async fn start(orders: usize) -> Allesgo {
        let sandbox = Sandbox::start(SandboxConfig {
            orders_per_api: orders,
            ..SandboxConfig::default()
        })
        .await
        .expect("the sandbox starts");
        Allesgo {
            sandbox,
            http: reqwest::Client::new(),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}/v1.0/order/{path}", self.sandbox.base_url(Api::Allesgo))
    }

    fn token(&self) -> String {
        self.sandbox.credentials().allesgo_access_token.clone()
    }

    fn store(&self) -> String {
        self.sandbox.credentials().allesgo_store_id.clone()
    }

    /// `GET /v1.0/order/store/{store}` with the token and `query`.
    async fn list(&self, query: &[(&str, String)]) -> (StatusCode, Value) {
        let mut query = query.to_vec();
        query.push(("access_token", self.token()));
        let response = self
            .http
            .get(self.url(&format!("store/{}", self.store())))
            .query(&query)
            .send()
            .await
            .expect("the request is answered");
        let status = response.status();
        (status, response.json().await.expect("a JSON body"))
    }

    /// The listed orders, whether `data` is one object or an array.
    async fn orders(&self, query: &[(&str, String)]) -> Vec<Value> {
        let (status, body) = self.list(query).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        match &body["data"] {
            Value::Array(orders) => orders.clone(),
            Value::Object(_) => vec![body["data"].clone()],
            other => panic!("data is neither an array nor an object: {other}"),
        }
    }

    async fn all_orders(&self) -> Vec<Value> {
        self.orders(&[("days", "91".into())]).await
    }

    async fn order(&self, code: &str) -> Value {
        self.all_orders()
            .await
            .into_iter()
            .find(|o| o["code"] == code)
            .unwrap_or_else(|| panic!("order {code} is listed"))
    }

    async fn post(&self, action: &str, body: Value) -> (StatusCode, Value) {
        let response = self
            .http
            .post(self.url(&format!("{action}/store/{}", self.store())))
            .query(&[("access_token", self.token())])
            .json(&body)
            .send()
            .await
            .expect("the request is answered");
        let status = response.status();
        (status, response.json().await.expect("a JSON body"))
    }

    /// A new order whose packages all wait for the shop's approval (status 2).
    async fn awaiting_approval(&self) -> Value {
        let code = self.sandbox.add_orders(Api::Allesgo, 1).remove(0);
        let order = self.order(&code).await;
        if order["packages"][0]["status"] == 1 {
            assert!(self.sandbox.change_order(Api::Allesgo, &code));
        }
        let order = self.order(&code).await;
        assert!(
            order["packages"]
                .as_array()
                .unwrap()
                .iter()
                .all(|p| p["status"] == 2),
            "{order}"
        );
        order
    }

    /// The last audit entry's operation and effect.
    fn last_audit(&self) -> (String, Option<String>) {
        let entry = self.sandbox.audit().pop().expect("an audited request");
        (entry.operation, entry.effect)
    }
}

fn package_ids(order: &Value) -> Vec<String> {
    order["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["package_id"].as_str().unwrap().to_string())
        .collect()
}

fn package_statuses(order: &Value) -> Vec<u64> {
    order["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["status"].as_u64().unwrap())
        .collect()
}

fn decimal(value: &Value) -> Decimal {
    let text = value.to_string();
    assert!(value.is_number(), "{text} is a JSON number");
    let (_, fraction) = text
        .split_once('.')
        .unwrap_or_else(|| panic!("{text} has decimals"));
    assert_eq!(fraction.len(), 2, "{text} has two decimals");
    Decimal::from_str(&text).unwrap()
}

fn assert_error(status: StatusCode, body: &Value, expected: StatusCode) {
    assert_eq!(status, expected, "{body}");
    assert_eq!(body["error"]["status"], expected.as_u16(), "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{body}"
    );
}

#[tokio::test]
async fn a_missing_or_wrong_token_is_401_on_every_endpoint() {
    let api = Allesgo::start(20).await;
    let http = &api.http;
    let codes = http.get(api.url("status-codes")).send().await.unwrap();
    let status = codes.status();
    assert_error(
        status,
        &codes.json().await.unwrap(),
        StatusCode::UNAUTHORIZED,
    );

    let list = http
        .get(api.url(&format!("store/{}", api.store())))
        .query(&[("days", "1"), ("access_token", "wrong")])
        .send()
        .await
        .unwrap();
    let status = list.status();
    assert_error(
        status,
        &list.json().await.unwrap(),
        StatusCode::UNAUTHORIZED,
    );

    let accept = http
        .post(api.url(&format!("accept/store/{}", api.store())))
        .json(&json!({"package_id": "x"}))
        .send()
        .await
        .unwrap();
    let status = accept.status();
    assert_error(
        status,
        &accept.json().await.unwrap(),
        StatusCode::UNAUTHORIZED,
    );
    assert!(api.sandbox.audit().iter().all(|e| e.effect.is_none()));
}

#[tokio::test]
async fn status_codes_lists_codes_1_to_16_with_descriptions() {
    let api = Allesgo::start(1).await;
    let body: Value = api
        .http
        .get(api.url("status-codes"))
        .query(&[("access_token", api.token())])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let data = body["data"].as_array().expect("an array");
    let codes: Vec<u64> = data
        .iter()
        .map(|c| c["code"].as_u64().expect("a number"))
        .collect();
    assert_eq!(codes, (1..=16).collect::<Vec<u64>>());
    assert!(
        data.iter()
            .all(|c| c["description"].as_str().is_some_and(|d| !d.is_empty()))
    );
    assert_eq!(api.last_audit().0, "status-codes");
}

#[tokio::test]
async fn another_store_and_bad_parameters_are_refused() {
    let api = Allesgo::start(5).await;
    let response = api
        .http
        .get(api.url("store/9999"))
        .query(&[("days", "1"), ("access_token", &api.token())])
        .send()
        .await
        .unwrap();
    let status = response.status();
    assert_error(
        status,
        &response.json().await.unwrap(),
        StatusCode::NOT_FOUND,
    );

    let now = Utc::now().timestamp();
    let bad: [&[(&str, String)]; 7] = [
        &[],
        &[
            ("days", "1".into()),
            ("start_date", (now - 10).to_string()),
            ("end_date", now.to_string()),
        ],
        &[("start_date", now.to_string())],
        &[("days", "bir".into())],
        &[("days", "0".into())],
        &[("days", "1".into()), ("status", "17".into())],
        &[("days", "1".into()), ("updates_only", "2".into())],
    ];
    for query in bad {
        let (status, body) = api.list(query).await;
        assert_error(status, &body, StatusCode::BAD_REQUEST);
    }
}

#[tokio::test]
async fn orders_have_the_documented_shape_and_consistent_amounts() {
    let api = Allesgo::start(50).await;
    let orders = api.all_orders().await;
    assert_eq!(orders.len(), 50);
    let snapshot = api.sandbox.orders(Api::Allesgo);
    for order in &orders {
        for key in [
            "code",
            "order_date",
            "payment_type",
            "payment_type_explained",
            "email",
            "shipping_address",
        ] {
            assert!(order[key].is_string(), "{key} in {order}");
        }
        chrono::DateTime::parse_from_rfc3339(order["order_date"].as_str().unwrap())
            .expect("an ISO 8601 order_date");
        let mut goods = Decimal::ZERO;
        for package in order["packages"].as_array().unwrap() {
            for key in ["package_id", "status_explained", "invoice_draft"] {
                assert!(package[key].is_string(), "{key} in {package}");
            }
            assert!((1..=16).contains(&package["status"].as_u64().unwrap()));
            let shipping = &package["shipping"];
            assert!(
                shipping["shipping_company"].is_string()
                    && shipping["shipping_discount_code"].is_string()
            );
            assert!(shipping["shipping_address"].is_u64());
            decimal(&shipping["total_shipping_price"]);
            let mut paid = Decimal::ZERO;
            for item in package["items"].as_array().unwrap() {
                for key in [
                    "product_name",
                    "product_code",
                    "product_uid",
                    "product_id",
                    "order_number",
                    "currency",
                ] {
                    assert!(item[key].is_string(), "{key} in {item}");
                }
                for key in [
                    "product_price",
                    "paid_amount",
                    "store_payout_amount",
                    "ipsizcambaz_commission_amount",
                    "shipping_amount",
                    "installment_commission",
                    "discount_amount",
                ] {
                    decimal(&item[key]);
                }
                assert_eq!(item["order_number"], order["code"]);
                assert_eq!(item["status"], package["status"]);
                assert_eq!(item["status_explained"], package["status_explained"]);
                assert!(item["count"].as_u64().unwrap() >= 1);
                assert!(
                    item["shipping_time_exceeded"].is_boolean()
                        && item["product_images"].is_array()
                );
                assert!(item["variant"].is_null() || item["variant"].is_object());
                paid += decimal(&item["paid_amount"]);
            }
            assert_eq!(decimal(&package["total_price"]), paid);
            goods += paid;
        }
        let total = decimal(&order["total_price"]);
        assert_eq!(total, goods + decimal(&order["total_shipping_price"]));
        let held = snapshot
            .iter()
            .find(|o| o.external_id == order["code"])
            .expect("in the snapshot");
        assert_eq!(held.total, total);
    }
}

#[tokio::test]
async fn one_matching_order_is_an_object_several_an_array_none_an_empty_array() {
    let api = Allesgo::start(30).await;
    let code = api.sandbox.add_orders(Api::Allesgo, 1).remove(0);
    let placed = chrono::DateTime::parse_from_rfc3339(
        api.order(&code).await["order_date"].as_str().unwrap(),
    )
    .unwrap()
    .timestamp();
    // Seeded orders are all placed before the sandbox started, so this second holds only added orders.
    let window = [
        ("start_date", placed.to_string()),
        ("end_date", (placed + 1).to_string()),
    ];
    let (_, body) = api.list(&window).await;
    assert!(body["data"].is_object(), "{body}");
    assert_eq!(body["data"]["code"], code);

    let second = api.sandbox.add_orders(Api::Allesgo, 1).remove(0);
    let wide = [
        ("start_date", placed.to_string()),
        ("end_date", (Utc::now().timestamp() + 1).to_string()),
    ];
    let (_, body) = api.list(&wide).await;
    let codes: Vec<&Value> = body["data"]
        .as_array()
        .expect("an array")
        .iter()
        .map(|o| &o["code"])
        .collect();
    assert_eq!(codes, [&json!(code), &json!(second)]);

    let (_, body) = api
        .list(&[("start_date", "1000".into()), ("end_date", "2000".into())])
        .await;
    assert_eq!(body["data"], json!([]));
}

#[tokio::test]
async fn windows_filter_the_order_date() {
    let api = Allesgo::start(200).await;
    let all = api.all_orders().await;
    assert_eq!(all.len(), 200);
    let placed = |o: &Value| {
        chrono::DateTime::parse_from_rfc3339(o["order_date"].as_str().unwrap())
            .unwrap()
            .timestamp()
    };
    let recent = api.orders(&[("days", "7".into())]).await;
    let now = Utc::now().timestamp();
    assert!(!recent.is_empty() && recent.len() < all.len());
    assert!(recent.iter().all(|o| placed(o) >= now - 7 * 86_400 - 5));
    let expected = all
        .iter()
        .filter(|o| placed(o) >= now - 7 * 86_400 + 5)
        .count();
    assert!(recent.len() >= expected);

    let pivot = placed(&all[100]);
    let before = api
        .orders(&[("start_date", "0".into()), ("end_date", pivot.to_string())])
        .await;
    let after = api
        .orders(&[
            ("start_date", pivot.to_string()),
            ("end_date", (now + 1).to_string()),
        ])
        .await;
    assert_eq!(
        before.len() + after.len(),
        all.len(),
        "[start, end) windows partition the orders"
    );
    assert!(before.iter().all(|o| placed(o) < pivot) && after.iter().all(|o| placed(o) >= pivot));
}

#[tokio::test]
async fn the_status_filter_matches_any_package() {
    let api = Allesgo::start(200).await;
    let mut seen = 0;
    for status in 1..=16u64 {
        let orders = api
            .orders(&[("days", "91".into()), ("status", status.to_string())])
            .await;
        assert!(
            orders.iter().all(|o| package_statuses(o).contains(&status)),
            "status {status}"
        );
        seen += orders.len();
    }
    assert!(seen >= 200, "every order has a status");
}

#[tokio::test]
async fn updates_only_lists_the_orders_whose_status_changed_in_the_window() {
    let api = Allesgo::start(200).await;
    let before: BTreeSet<String> = api
        .orders(&[("days", "1".into()), ("updates_only", "1".into())])
        .await
        .iter()
        .map(|o| o["code"].as_str().unwrap().to_string())
        .collect();
    let changed = api.sandbox.change_orders(Api::Allesgo, 5);
    assert_eq!(changed.len(), 5);
    let updated: Vec<Value> = api
        .orders(&[("days", "1".into()), ("updates_only", "1".into())])
        .await;
    let after: BTreeSet<String> = updated
        .iter()
        .map(|o| o["code"].as_str().unwrap().to_string())
        .collect();
    for code in &changed {
        assert!(after.contains(code), "changed order {code} is listed");
    }
    assert_eq!(
        after,
        before
            .union(&changed.iter().cloned().collect())
            .cloned()
            .collect()
    );

    let day_ago = Utc::now() - chrono::Duration::days(1);
    let snapshot = api.sandbox.orders(Api::Allesgo);
    for order in &snapshot {
        let margin = chrono::Duration::seconds(5);
        if order.updated_at > day_ago + margin {
            assert!(after.contains(&order.external_id), "{order:?}");
        }
        if order.updated_at < day_ago - margin {
            assert!(!after.contains(&order.external_id), "{order:?}");
        }
    }
}

#[tokio::test]
async fn package_transitions_follow_the_rules_and_are_audited() {
    let api = Allesgo::start(10).await;
    let order = api.awaiting_approval().await;
    let code = order["code"].as_str().unwrap().to_string();
    let package = package_ids(&order).remove(0);

    let (status, body) = api.post("accept", json!({"package_id": package})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["data"]["status"], "success");
    let (operation, effect) = api.last_audit();
    assert_eq!(operation, "order.accept");
    assert!(effect.expect("an effect").contains(&package));
    let order = api.order(&code).await;
    assert_eq!(order["packages"][0]["status"], 3);
    assert_eq!(order["packages"][0]["items"][0]["status"], 3);

    let (status, body) = api.post("accept", json!({"package_id": package})).await;
    assert_error(status, &body, StatusCode::BAD_REQUEST);
    assert_eq!(api.last_audit(), ("order.accept".to_string(), None));

    let (status, body) = api.post("postpone", json!({"package_id": package})).await;
    assert_error(status, &body, StatusCode::BAD_REQUEST);
    let (status, _) = api
        .post(
            "postpone",
            json!({"package_id": package, "reason": "Stok bekleniyor"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(api.order(&code).await["packages"][0]["status"], 4);
    let (status, body) = api
        .post(
            "ship",
            json!({"package_id": package, "company_id": "1", "shipping_code": "YK123"}),
        )
        .await;
    assert_error(status, &body, StatusCode::BAD_REQUEST);
    api.post("accept", json!({"package_id": package})).await;

    let (status, body) = api
        .post(
            "ship",
            json!({"package_id": package, "company_id": "99", "shipping_code": "YK123"}),
        )
        .await;
    assert_error(status, &body, StatusCode::BAD_REQUEST);
    let (status, body) = api
        .post(
            "ship",
            json!({"package_id": package, "company_id": "2", "shipping_code": "AR98765"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body["data"],
        json!({"shipping_company": "Aras Kargo", "shippingCode": "AR98765"})
    );
    let order = api.order(&code).await;
    assert_eq!(order["packages"][0]["status"], 5);
    assert_eq!(
        order["packages"][0]["shipping"]["shipping_company"],
        "Aras Kargo"
    );
    let held = api.sandbox.orders(Api::Allesgo);
    let held = held.iter().find(|o| o.external_id == code).unwrap();
    assert!(held.status.split(',').any(|s| s == "5"), "{held:?}");

    let (status, body) = api
        .post("accept", json!({"package_id": "000000000000000000000000"}))
        .await;
    assert_error(status, &body, StatusCode::NOT_FOUND);
    let (status, body) = api.post("teleport", json!({"package_id": package})).await;
    assert_error(status, &body, StatusCode::NOT_FOUND);
    let (status, body) = api.post("accept", json!("not an object")).await;
    assert_error(status, &body, StatusCode::BAD_REQUEST);

    let effects: Vec<String> = api
        .sandbox
        .audit()
        .into_iter()
        .filter_map(|e| e.effect)
        .collect();
    assert_eq!(
        effects.len(),
        4,
        "accept, postpone, accept, ship: {effects:?}"
    );
}

#[tokio::test]
async fn cancel_is_all_or_nothing_and_a_refusal_is_200_with_success_false() {
    let api = Allesgo::start(10).await;
    let first = api.awaiting_approval().await["code"]
        .as_str()
        .unwrap()
        .to_string();
    let second = api.awaiting_approval().await["code"]
        .as_str()
        .unwrap()
        .to_string();

    let (status, body) = api
        .post(
            "cancel",
            json!({"order_numbers": [first, "404404"], "reason": "Stok yok"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["data"]["success"], false, "{body}");
    assert!(body["data"]["message"].is_string());
    assert_eq!(api.last_audit(), ("order.cancel".to_string(), None));
    assert!(
        package_statuses(&api.order(&first).await)
            .iter()
            .all(|&s| s == 2)
    );

    let (status, body) = api
        .post(
            "cancel",
            json!({"order_numbers": [first, second], "reason": "Stok yok"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["data"]["success"], true, "{body}");
    assert!(api.last_audit().1.expect("an effect").contains(&first));
    for code in [&first, &second] {
        assert!(
            package_statuses(&api.order(code).await)
                .iter()
                .all(|&s| s == 10)
        );
    }

    let (_, body) = api
        .post(
            "cancel",
            json!({"order_numbers": [first], "reason": "Tekrar"}),
        )
        .await;
    assert_eq!(
        body["data"]["success"], false,
        "a rejected order cannot be rejected again"
    );
    let (status, body) = api.post("cancel", json!({"order_numbers": [second]})).await;
    assert_error(status, &body, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn cancel_requests_and_returns_are_accepted_or_rejected() {
    let api = Allesgo::start(2000).await;
    let with_status = |status: u64| {
        let api = &api;
        async move {
            api.orders(&[("days", "91".into()), ("status", status.to_string())])
                .await
        }
    };
    let requested = with_status(8).await;
    assert!(requested.len() >= 2, "seeded cancel requests");
    let accepted = requested[0]["code"].as_str().unwrap().to_string();
    let (status, body) = api
        .post(
            "accept-cancel",
            json!({"order_numbers": [accepted], "reason": "Alıcı talebi"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["data"]["success"], true, "{body}");
    assert!(api.last_audit().1.is_some());
    let statuses = package_statuses(&api.order(&accepted).await);
    assert!(
        statuses.contains(&9) && !statuses.contains(&8),
        "{statuses:?}"
    );
    let (_, body) = api
        .post(
            "accept-cancel",
            json!({"order_numbers": [accepted], "reason": "Alıcı talebi"}),
        )
        .await;
    assert_eq!(body["data"]["success"], false, "nothing left to accept");

    let rejected = &requested[1];
    let package = rejected["packages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["status"] == 8)
        .unwrap()["package_id"]
        .clone();
    let (status, _) = api
        .post(
            "reject-cancel",
            json!({"package_id": package, "reason": "Kargolandı"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let order = api.order(rejected["code"].as_str().unwrap()).await;
    let after = order["packages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["package_id"] == package)
        .unwrap();
    assert_eq!(
        after["status"], 3,
        "back to where the cancel request found it"
    );

    let returns = with_status(11).await;
    assert!(returns.len() >= 2, "seeded return requests");
    let package_in_11 = |order: &Value| {
        order["packages"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["status"] == 11)
            .unwrap()["package_id"]
            .clone()
    };
    let (first, second) = (package_in_11(&returns[0]), package_in_11(&returns[1]));
    let (status, body) = api
        .post("accept-return", json!({"package_id": first}))
        .await;
    assert_error(status, &body, StatusCode::BAD_REQUEST);
    let (status, body) = api
        .post(
            "accept-return",
            json!({"package_id": first, "message": "İade onaylandı"}),
        )
        .await;
    assert_eq!(
        (status, &body["data"]["status"]),
        (StatusCode::OK, &json!("success"))
    );
    let (status, _) = api
        .post(
            "reject-return",
            json!({"package_id": second, "reason": "Kullanılmış ürün"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = api
        .post(
            "reject-return",
            json!({"package_id": first, "reason": "Geç kaldı"}),
        )
        .await;
    assert_error(status, &body, StatusCode::BAD_REQUEST);
    let order = api.order(returns[1]["code"].as_str().unwrap()).await;
    assert!(package_statuses(&order).contains(&13));
    let operations: Vec<String> = api
        .sandbox
        .audit()
        .into_iter()
        .filter(|e| e.effect.is_some())
        .map(|e| e.operation)
        .collect();
    assert_eq!(
        operations,
        [
            "order.accept-cancel",
            "order.reject-cancel",
            "order.accept-return",
            "order.reject-return"
        ]
    );
}
