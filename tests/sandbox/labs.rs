//! The Labs fake against its document and the digest: bearer authentication, the required `page` and
//! `limit`, pages followed to the end, every filter (day-granular dates), both date formats, the
//! forward-only status transitions, deletion and invoice-link validation, with their audit effects.

use std::collections::{BTreeSet, HashMap};
use std::str::FromStr;

use chrono::{DateTime, Duration, NaiveDate, NaiveDateTime, Utc};
use chrono_tz::Europe::Istanbul;
use ordersync::sandbox::{Api, Sandbox, SandboxConfig, SandboxOrder};
use reqwest::StatusCode;
use rust_decimal::Decimal;
use serde_json::{Value, json};

struct Labs {
    sandbox: Sandbox,
    http: reqwest::Client,
}

impl Labs {
    async fn start(orders: usize) -> Labs {
        let sandbox = Sandbox::start(SandboxConfig {
            orders_per_api: orders,
            ..SandboxConfig::default()
        })
        .await
        .expect("the sandbox starts");
        Labs {
            sandbox,
            http: reqwest::Client::new(),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.sandbox.base_url(Api::Labs))
    }

    fn token(&self) -> String {
        self.sandbox.credentials().labs_token.clone()
    }

    async fn list(&self, query: &[(&str, &str)]) -> (StatusCode, Value) {
        let response = self
            .http
            .get(self.url("/orders"))
            .query(query)
            .bearer_auth(self.token())
            .send()
            .await
            .expect("the request is answered");
        let status = response.status();
        (status, response.json().await.expect("a JSON body"))
    }

    /// Every order the filters select, page by page.
    async fn all(&self, filters: &[(&str, &str)], limit: usize) -> Vec<Value> {
        let mut orders = Vec::new();
        let mut page = 1;
        loop {
            let (page_text, limit_text) = (page.to_string(), limit.to_string());
            let mut query = filters.to_vec();
            query.extend([("page", page_text.as_str()), ("limit", limit_text.as_str())]);
            let (status, body) = self.list(&query).await;
            assert_eq!(status, StatusCode::OK, "{body}");
            assert_eq!(body["currentPage"], page);
            assert_eq!(body["limit"], limit);
            let total = body["totalItems"].as_u64().unwrap() as usize;
            assert_eq!(
                body["totalPage"].as_u64().unwrap() as usize,
                total.div_ceil(limit)
            );
            orders.extend(body["items"].as_array().unwrap().iter().cloned());
            if page >= total.div_ceil(limit) {
                assert_eq!(orders.len(), total);
                return orders;
            }
            page += 1;
        }
    }

    async fn post(&self, path: &str, body: &Value) -> (StatusCode, Value) {
        let response = self
            .http
            .post(self.url(path))
            .bearer_auth(self.token())
            .json(body)
            .send()
            .await
            .unwrap();
        let status = response.status();
        (status, response.json().await.unwrap())
    }

    async fn delete(&self, id: &str) -> (StatusCode, Value) {
        let response = self
            .http
            .delete(self.url(&format!("/orders/{id}")))
            .bearer_auth(self.token())
            .send()
            .await
            .unwrap();
        let status = response.status();
        (status, response.json().await.unwrap())
    }

    fn snapshot(&self) -> HashMap<String, SandboxOrder> {
        self.sandbox
            .orders(Api::Labs)
            .into_iter()
            .map(|o| (o.external_id.clone(), o))
            .collect()
    }
}

fn id(order: &Value) -> String {
    order["id"].as_u64().expect("a numeric id").to_string()
}

fn ids(orders: &[Value]) -> BTreeSet<String> {
    orders.iter().map(id).collect()
}

/// A payload date-time in either documented format, Istanbul local time.
fn local(value: &Value) -> DateTime<Utc> {
    let text = value.as_str().expect("a date-time string");
    let naive = NaiveDateTime::parse_from_str(text, "%d/%m/%Y %H:%M:%S")
        .or_else(|_| NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S"))
        .unwrap_or_else(|_| panic!("an unknown date format: {text}"));
    naive
        .and_local_timezone(Istanbul)
        .single()
        .expect("Istanbul has no DST since 2016")
        .with_timezone(&Utc)
}

fn istanbul_day(t: DateTime<Utc>) -> NaiveDate {
    t.with_timezone(&Istanbul).date_naive()
}

#[tokio::test]
async fn authentication_failures_get_the_error_shape() {
    let labs = Labs::start(3).await;
    for token in [None, Some("Bearer wrong"), Some("sandbox-labs-token")] {
        let mut request = labs.http.get(labs.url("/orders?page=1&limit=10"));
        if let Some(token) = token {
            request = request.header("Authorization", token);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        let body: Value = response.json().await.unwrap();
        assert_eq!(
            body,
            json!({"status": "error", "message": "Unauthenticated."})
        );
    }
    let response = labs
        .http
        .delete(labs.url("/orders/1"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let (status, _) = labs.list(&[("page", "1"), ("limit", "1")]).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn page_and_limit_are_required() {
    let labs = Labs::start(3).await;
    for query in [
        vec![],
        vec![("page", "1")],
        vec![("limit", "10")],
        vec![("page", "0"), ("limit", "10")],
        vec![("page", "1"), ("limit", "0")],
        vec![("page", "one"), ("limit", "10")],
    ] {
        let (status, body) = labs.list(&query).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query:?}");
        assert_eq!(body["status"], "error");
        assert!(body["message"].is_string());
    }
    let (status, body) = labs.list(&[("page", "9"), ("limit", "10")]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["items"], json!([]));
    assert_eq!(body["totalItems"], 3);
    assert_eq!(body["totalPage"], 1);
    assert_eq!(body["currentPage"], 9);
}

#[tokio::test]
async fn pages_cover_a_thousand_orders_exactly_once() {
    let labs = Labs::start(1000).await;
    let orders = labs.all(&[], 70).await;
    let listed: Vec<String> = orders.iter().map(id).collect();
    let unique: BTreeSet<&String> = listed.iter().collect();
    assert_eq!(unique.len(), 1000, "no duplicates");
    let snapshot = labs.snapshot();
    assert_eq!(unique, snapshot.keys().collect(), "no misses");
    let numeric: Vec<u64> = orders.iter().map(|o| o["id"].as_u64().unwrap()).collect();
    assert!(numeric.windows(2).all(|w| w[0] < w[1]), "ascending ids");

    for order in &orders {
        let snap = &snapshot[&id(order)];
        assert_eq!(order["orderStatus"], snap.status.as_str());
        assert_eq!(local(&order["updatedAt"]), snap.updated_at);
        assert!(local(&order["createdAt"]) <= snap.updated_at);
        assert_eq!(
            Decimal::from_str(order["priceTotal"].as_str().unwrap()).unwrap(),
            snap.total
        );
        assert_eq!(order["lines"].as_array().unwrap().len(), snap.line_count);
    }
}

#[tokio::test]
async fn payloads_mix_both_date_formats_and_documented_statuses() {
    let labs = Labs::start(300).await;
    let orders = labs.all(&[], 300).await;
    let slashes = |v: &Value| v.as_str().unwrap().contains('/');
    assert!(orders.iter().any(|o| slashes(&o["createdAt"])));
    assert!(orders.iter().any(|o| !slashes(&o["createdAt"])));
    assert!(orders.iter().any(|o| slashes(&o["updatedAt"])));
    assert!(orders.iter().any(|o| !slashes(&o["updatedAt"])));
    let statuses: BTreeSet<&str> = orders
        .iter()
        .map(|o| o["orderStatus"].as_str().unwrap())
        .collect();
    let documented = [
        "PENDING_APPROVE",
        "PENDING_APPROVED",
        "CREATED",
        "PREPARING",
        "COMPLETED",
        "RETURN",
        "CANCELLED",
    ];
    assert!(
        statuses.iter().all(|s| documented.contains(s)),
        "{statuses:?}"
    );
    assert!(statuses.len() >= 4, "{statuses:?}");
    for order in &orders {
        for line in order["lines"].as_array().unwrap() {
            let price = line["price"].as_str().unwrap();
            assert_eq!(Decimal::from_str(price).unwrap().scale(), 4, "{price}");
            assert_eq!(line["status"], order["orderStatus"]);
        }
        for key in ["shipmentAddress", "invoiceAddress"] {
            assert!(order[key]["addressDetail"]["city"].is_string());
        }
    }
}

#[tokio::test]
async fn filters_select_what_they_say() {
    let labs = Labs::start(500).await;
    let all = labs.all(&[], 500).await;
    let expect = |pred: &dyn Fn(&Value) -> bool| -> BTreeSet<String> {
        all.iter().filter(|o| pred(o)).map(id).collect()
    };

    for status in ["CREATED", "PREPARING", "COMPLETED", "RETURN", "CANCELLED"] {
        let got = ids(&labs.all(&[("status", status)], 100).await);
        assert_eq!(got, expect(&|o| o["orderStatus"] == status), "{status}");
    }
    let pending = expect(&|o| {
        o["orderStatus"]
            .as_str()
            .unwrap()
            .starts_with("PENDING_APPROVE")
    });
    assert!(!pending.is_empty());
    for spelling in ["PENDING_APPROVE", "PENDING_APPROVED"] {
        assert_eq!(
            ids(&labs.all(&[("status", spelling)], 100).await),
            pending,
            "{spelling}"
        );
    }
    let (_, none) = labs
        .list(&[
            ("page", "1"),
            ("limit", "10"),
            ("status", "SHIPPED_TO_MARS"),
        ])
        .await;
    assert_eq!(none["totalItems"], 0);

    let sample = &all[42];
    for (param, field) in [("source", "source"), ("platformId", "marketplaceId")] {
        let value = sample[field].as_str().unwrap();
        assert_eq!(
            ids(&labs.all(&[(param, value)], 100).await),
            expect(&|o| o[field] == value),
            "{param}"
        );
    }
    let cargo = sample["shipment"]["cargoCompany"].as_str().unwrap();
    assert_eq!(
        ids(&labs.all(&[("cargoCode", cargo)], 100).await),
        expect(&|o| o["shipment"]["cargoCompany"] == cargo)
    );
    let warehouse = &sample["warehouseId"];
    assert_eq!(
        ids(&labs
            .all(&[("warehouseId", &warehouse.to_string())], 100)
            .await),
        expect(&|o| o["warehouseId"] == *warehouse)
    );

    // Day granularity: orders created/updated on or after that Istanbul day.
    let today = istanbul_day(Utc::now());
    for days_back in [0, 1, 7, 30] {
        let day = today - Duration::days(days_back);
        let text = day.format("%Y-%m-%d").to_string();
        assert_eq!(
            ids(&labs.all(&[("updatedStartAfter", &text)], 100).await),
            expect(&|o| istanbul_day(local(&o["updatedAt"])) >= day),
            "updatedStartAfter {text}"
        );
        assert_eq!(
            ids(&labs.all(&[("createdStartAfter", &text)], 100).await),
            expect(&|o| istanbul_day(local(&o["createdAt"])) >= day),
            "createdStartAfter {text}"
        );
    }
    let day = (today - Duration::days(20)).format("%Y-%m-%d").to_string();
    let combined = labs
        .all(&[("updatedStartAfter", &day), ("status", "COMPLETED")], 50)
        .await;
    assert!(combined.iter().all(|o| o["orderStatus"] == "COMPLETED"));

    for bad in ["29.11.2023", "2023-11-29T00:00:00", "yesterday"] {
        let (status, body) = labs
            .list(&[("page", "1"), ("limit", "10"), ("updatedStartAfter", bad)])
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
        assert_eq!(body["status"], "error");
    }
}

#[tokio::test]
async fn status_transitions_go_forward_only() {
    let labs = Labs::start(200).await;
    let snapshot = labs.snapshot();
    let pending = labs.all(&[("status", "CREATED")], 200).await;
    let order_id = pending[0]["id"].as_u64().unwrap();
    let key = order_id.to_string();
    labs.sandbox.clear_audit();

    let (status, body) = labs
        .post(
            "/orders/status",
            &json!({"orderId": order_id, "statusCode": 2}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["status"], "success");
    assert!(body["message"].is_string());
    let after = labs.snapshot();
    assert_eq!(after[&key].status, "PREPARING");
    assert!(after[&key].updated_at >= snapshot[&key].updated_at);
    let audit = labs.sandbox.audit();
    assert_eq!(audit[0].operation, "orders.status");
    assert_eq!(
        audit[0].effect.as_deref(),
        Some(&*format!("order {order_id} status 1 -> 2"))
    );

    // Backwards and same-status moves are refused with HTTP 200 and an error status.
    for code in [0, 1, 2] {
        let (status, body) = labs
            .post(
                "/orders/status",
                &json!({"orderId": order_id, "statusCode": code}),
            )
            .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["status"], "error", "{code}");
    }
    assert_eq!(
        labs.snapshot()[&key],
        after[&key],
        "refusals change nothing"
    );

    // Jumping forward is allowed; the id may be a string; the list shows the effect.
    let (_, body) = labs
        .post("/orders/status", &json!({"orderId": key, "statusCode": 5}))
        .await;
    assert_eq!(body["status"], "success");
    let completed = labs.all(&[("status", "COMPLETED")], 200).await;
    assert!(ids(&completed).contains(&key));
    let today = istanbul_day(Utc::now()).format("%Y-%m-%d").to_string();
    assert!(ids(&labs.all(&[("updatedStartAfter", &today)], 200).await).contains(&key));

    let (status, _) = labs
        .post(
            "/orders/status",
            &json!({"orderId": order_id, "statusCode": 9}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let (status, _) = labs.post("/orders/status", &json!({"statusCode": 6})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let (status, body) = labs
        .post("/orders/status", &json!({"orderId": 1, "statusCode": 6}))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["status"], "error");
    let garbage = labs
        .http
        .post(labs.url("/orders/status"))
        .bearer_auth(labs.token())
        .body("{orderId")
        .send()
        .await
        .unwrap();
    assert_eq!(garbage.status(), StatusCode::UNPROCESSABLE_ENTITY);

    let effects: Vec<Option<String>> = labs
        .sandbox
        .audit()
        .into_iter()
        .filter(|e| e.operation == "orders.status")
        .map(|e| e.effect)
        .collect();
    assert_eq!(
        effects.iter().filter(|e| e.is_some()).count(),
        2,
        "{effects:?}"
    );
}

#[tokio::test]
async fn deleting_removes_the_order() {
    let labs = Labs::start(20).await;
    let key = labs.snapshot().keys().next().unwrap().clone();
    let (status, body) = labs.delete(&key).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["status"], "success");
    assert!(!labs.snapshot().contains_key(&key));
    assert!(!ids(&labs.all(&[], 50).await).contains(&key));
    let (status, body) = labs.delete(&key).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["status"], "error");
    let (status, _) = labs.delete("not-a-number").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let effects: Vec<Option<String>> = labs
        .sandbox
        .audit()
        .into_iter()
        .filter(|e| e.operation == "orders.delete")
        .map(|e| e.effect)
        .collect();
    assert_eq!(effects, [Some(format!("order {key} deleted")), None, None]);
}

#[tokio::test]
async fn invoice_links_are_validated_before_queuing() {
    let labs = Labs::start(20).await;
    let mut keys: Vec<u64> = labs.snapshot().keys().map(|k| k.parse().unwrap()).collect();
    keys.sort();
    let entry = |order: u64, number: &str, time: Value| {
        json!({
            "orderId": order,
            "marketplace": "trendyol",
            "invoiceLink": "https://extfatura.faturaentegratoru.com/324523-34523-52345-3453245.pdf",
            "invoiceNumber": number,
            "invoiceUuid": "324523-34523-52345-3453245",
            "invoiceDateTime": time,
        })
    };
    // The document's valid examples.
    for number in [
        "FRY2024567890123",
        "FR12024567890123",
        "F1Y2024567890123",
        "1RY2024567890123",
        "12Y2024567890123",
        "1232024567890123",
        "F232024567890123",
    ] {
        let (status, body) = labs
            .post(
                "/orders/invoice-link",
                &json!({"payload": [entry(keys[0], number, json!(1747729029))]}),
            )
            .await;
        assert_eq!(
            (status, body["status"].as_str()),
            (StatusCode::OK, Some("success")),
            "{number}"
        );
    }
    let (status, _) = labs
        .post(
            "/orders/invoice-link",
            &json!({"payload": [entry(keys[0], "FRY2024567890123", json!("1747729029")), entry(keys[1], "ABC2099000000001", json!(1747729029))]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let last = labs.sandbox.audit().pop().unwrap();
    assert_eq!(
        last.effect,
        Some(format!(
            "invoice links queued for orders {},{}",
            keys[0], keys[1]
        ))
    );

    let bad = [
        entry(keys[0], "FRY12345", json!(1747729029)),
        entry(keys[0], "FRY2019567890123", json!(1747729029)),
        entry(keys[0], "FRY2024567890A23", json!(1747729029)),
        entry(keys[0], "FR-2024567890123", json!(1747729029)),
        entry(keys[0], "FRY2024567890123", json!(1747729029000u64)),
        entry(keys[0], "FRY2024567890123", json!("soon")),
        entry(1, "FRY2024567890123", json!(1747729029)),
        {
            let mut e = entry(keys[0], "FRY2024567890123", json!(1747729029));
            e["marketplace"] = json!("n11");
            e
        },
    ];
    labs.sandbox.clear_audit();
    for wrong in bad {
        // One bad entry refuses the whole batch.
        let payload =
            json!({"payload": [entry(keys[1], "FRY2024567890123", json!(1747729029)), wrong]});
        let (status, body) = labs.post("/orders/invoice-link", &payload).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{payload}");
        assert_eq!(body["status"], "error");
        assert!(
            body["message"].as_str().unwrap().contains("payload.1"),
            "{body}"
        );
    }
    let (status, _) = labs
        .post("/orders/invoice-link", &json!({"payload": []}))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(labs.sandbox.audit().iter().all(|e| e.effect.is_none()));

    // The document's example uses DELETE; the digest decided POST.
    let response = labs
        .http
        .delete(labs.url("/orders/invoice-link"))
        .bearer_auth(labs.token())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn added_and_changed_orders_show_through_the_filters() {
    let labs = Labs::start(200).await;
    let today = istanbul_day(Utc::now()).format("%Y-%m-%d").to_string();
    let before = ids(&labs.all(&[("updatedStartAfter", &today)], 100).await);

    let added: BTreeSet<String> = labs.sandbox.add_orders(Api::Labs, 4).into_iter().collect();
    let created_today = ids(&labs.all(&[("createdStartAfter", &today)], 100).await);
    assert!(added.is_subset(&created_today));
    let all = labs.all(&[], 300).await;
    assert_eq!(ids(&all[200..]), added, "new orders list last");
    assert!(all[200..].iter().all(|o| {
        o["orderStatus"]
            .as_str()
            .unwrap()
            .starts_with("PENDING_APPROVE")
    }));

    let changed: BTreeSet<String> = labs
        .sandbox
        .change_orders(Api::Labs, 6)
        .into_iter()
        .collect();
    assert_eq!(changed.len(), 6);
    let after = ids(&labs.all(&[("updatedStartAfter", &today)], 100).await);
    let expected: BTreeSet<String> = before
        .union(&added)
        .chain(changed.iter())
        .cloned()
        .collect();
    assert_eq!(after, expected);
}
