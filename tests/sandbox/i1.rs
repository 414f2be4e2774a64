//! The i1 (Akinon seller API) fake against its document and the digest: bearer authentication and DRF's
//! 401 body, limit/offset pages followed to the end, every filter, items, addresses, cancellation plans,
//! the reject action's rules and effects, and orders added or changed while the sandbox runs.

use std::collections::{BTreeSet, HashMap};
use std::str::FromStr;

use chrono::{DateTime, Duration, SecondsFormat, Utc};
use ordersync::sandbox::{Api, Sandbox, SandboxConfig, SandboxOrder};
use reqwest::StatusCode;
use rust_decimal::Decimal;
use serde_json::Value;

struct I1 {
    sandbox: Sandbox,
    http: reqwest::Client,
}

impl I1 {
    async fn start(orders: usize) -> I1 {
        let sandbox = Sandbox::start(SandboxConfig {
            orders_per_api: orders,
            ..SandboxConfig::default()
        })
        .await
        .expect("the sandbox starts");
        I1 {
            sandbox,
            http: reqwest::Client::new(),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.sandbox.base_url(Api::I1))
    }

    /// `GET` a path (relative to the base URL) with the token and `query`.
    async fn get(&self, path: &str, query: &[(&str, &str)]) -> (StatusCode, Value) {
        self.get_url(&self.url(path), query).await
    }

    async fn get_url(&self, url: &str, query: &[(&str, &str)]) -> (StatusCode, Value) {
        let response = self
            .http
            .get(url)
            .query(query)
            .bearer_auth(&self.sandbox.credentials().i1_token)
            .header("Content-Type", "application/json")
            .send()
            .await
            .expect("the request is answered");
        let status = response.status();
        (status, response.json().await.expect("a JSON body"))
    }

    /// Every result of a list, following `next` to the end.
    async fn all(&self, path: &str, query: &[(&str, &str)]) -> Vec<Value> {
        let (status, mut page) = self.get(path, query).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        let count = page["count"].as_u64().unwrap() as usize;
        let mut results = Vec::new();
        loop {
            results.extend(page["results"].as_array().unwrap().iter().cloned());
            let Some(next) = page["next"].as_str().map(str::to_owned) else {
                break;
            };
            assert!(next.starts_with(&self.url(path)), "{next}");
            let (status, next_page) = self.get_url(&next, &[]).await;
            assert_eq!(status, StatusCode::OK);
            assert_eq!(next_page["count"].as_u64().unwrap() as usize, count);
            page = next_page;
        }
        assert_eq!(results.len(), count);
        results
    }

    async fn reject(&self, item_id: &str) -> (StatusCode, String) {
        let response = self
            .http
            .post(self.url(&format!("order-items/{item_id}/reject/")))
            .bearer_auth(&self.sandbox.credentials().i1_token)
            .header("Content-Type", "application/json")
            .send()
            .await
            .unwrap();
        (response.status(), response.text().await.unwrap())
    }

    fn snapshot(&self) -> HashMap<String, SandboxOrder> {
        self.sandbox
            .orders(Api::I1)
            .into_iter()
            .map(|o| (o.external_id.clone(), o))
            .collect()
    }
}

fn ids(results: &[Value]) -> Vec<String> {
    results
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect()
}

fn time(value: &Value) -> DateTime<Utc> {
    let text = value.as_str().expect("a date-time string");
    assert!(text.ends_with('Z'), "UTC with Z: {text}");
    DateTime::parse_from_rfc3339(text)
        .unwrap()
        .with_timezone(&Utc)
}

fn wire(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

#[tokio::test]
async fn authentication_failures_get_drf_401s() {
    let i1 = I1::start(3).await;
    let cases: [(Option<&str>, &str); 4] = [
        (None, "Authentication credentials were not provided."),
        (Some("Bearer nope"), "Invalid token."),
        (
            Some("Token sandbox-i1-token"),
            "Authentication credentials were not provided.",
        ),
        (
            Some("Bearer"),
            "Invalid token header. No credentials provided.",
        ),
    ];
    for (header, detail) in cases {
        let mut request = i1.http.get(i1.url("orders/"));
        if let Some(header) = header {
            request = request.header("Authorization", header);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert!(response.headers().contains_key("www-authenticate"));
        let body: Value = response.json().await.unwrap();
        assert_eq!(body, serde_json::json!({ "detail": detail }));
    }
    // The document's `Authentication:` header is a typo: it authenticates nothing.
    let typo = i1
        .http
        .get(i1.url("orders/"))
        .header("Authentication", "Bearer sandbox-i1-token")
        .send()
        .await
        .unwrap();
    assert_eq!(typo.status(), StatusCode::UNAUTHORIZED);
    let (status, _) = i1.get("orders/", &[]).await;
    assert_eq!(status, StatusCode::OK);
    let reject = i1
        .http
        .post(i1.url("order-items/x/reject/"))
        .send()
        .await
        .unwrap();
    assert_eq!(reject.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn pages_cover_a_thousand_orders_exactly_once() {
    let i1 = I1::start(1000).await;
    let results = i1.all("orders/", &[("limit", "75")]).await;
    let listed = ids(&results);
    let unique: BTreeSet<&String> = listed.iter().collect();
    assert_eq!(unique.len(), 1000, "no duplicates");
    let snapshot = i1.snapshot();
    assert_eq!(unique, snapshot.keys().collect(), "no misses");

    // A stable order: by date_placed.
    let placed: Vec<DateTime<Utc>> = results.iter().map(|r| time(&r["date_placed"])).collect();
    assert!(placed.windows(2).all(|w| w[0] <= w[1]));

    // The listed payload agrees with the snapshot.
    for order in &results {
        let snap = &snapshot[order["id"].as_str().unwrap()];
        assert_eq!(order["status"].to_string(), snap.status);
        assert_eq!(
            Decimal::from_str(order["amount"].as_str().unwrap()).unwrap(),
            snap.total
        );
        assert_eq!(time(&order["updated_at"]), snap.updated_at);
    }
}

#[tokio::test]
async fn page_links_and_limits_follow_drf() {
    let i1 = I1::start(25).await;
    let (_, first) = i1.get("orders/", &[]).await;
    assert_eq!(first["count"], 25);
    assert_eq!(
        first["results"].as_array().unwrap().len(),
        10,
        "default limit"
    );
    assert!(first["previous"].is_null());
    let next = first["next"].as_str().unwrap();
    assert_eq!(next, format!("{}?limit=10&offset=10", i1.url("orders/")));

    let (_, middle) = i1
        .get(
            "orders/",
            &[("status", "100"), ("limit", "2"), ("offset", "2")],
        )
        .await;
    if middle["count"].as_u64().unwrap() > 4 {
        assert_eq!(
            middle["next"].as_str().unwrap(),
            format!("{}?limit=2&offset=4&status=100", i1.url("orders/"))
        );
    }
    assert_eq!(
        middle["previous"].as_str().unwrap(),
        format!("{}?limit=2&status=100", i1.url("orders/"))
    );

    let (_, last) = i1
        .get("orders/", &[("limit", "10"), ("offset", "20")])
        .await;
    assert_eq!(last["results"].as_array().unwrap().len(), 5);
    assert!(last["next"].is_null());
    let (_, past) = i1.get("orders/", &[("offset", "100")]).await;
    assert_eq!(past["results"].as_array().unwrap().len(), 0);
    let (status, bad) = i1.get("orders/", &[("limit", "lots")]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        bad["results"].as_array().unwrap().len(),
        10,
        "a bad limit falls back to the default"
    );
}

#[tokio::test]
async fn order_payloads_have_the_documented_shape() {
    let i1 = I1::start(300).await;
    let results = i1.all("orders/", &[("limit", "300")]).await;
    let fields = [
        "id",
        "number",
        "shipping_address",
        "billing_address",
        "date_placed",
        "status",
        "currency",
        "amount",
        "discount_amount",
        "shipping_amount",
        "shipping_tax_rate",
        "refund_amount",
        "discount_refund_amount",
        "shipping_refund_amount",
        "invoice_number",
        "invoice_date",
        "e_archive_url",
        "tracking_number",
        "shipping_company",
        "cargo_company",
        "has_gift_box",
        "gift_box_note",
        "language_code",
        "notes",
        "delivery_range",
        "shipping_option_slug",
        "extra_field",
        "cancel_status",
        "shipping_interest_amount",
    ];
    let mut statuses = BTreeSet::new();
    let mut currencies = BTreeSet::new();
    for order in &results {
        for field in fields {
            assert!(order.get(field).is_some(), "{field} missing in {order}");
        }
        statuses.insert(order["status"].as_u64().unwrap());
        currencies.insert(order["currency"].as_str().unwrap().to_string());
        let amount = order["amount"].as_str().unwrap();
        assert_eq!(Decimal::from_str(amount).unwrap().scale(), 2, "{amount}");
        time(&order["date_placed"]);
    }
    assert!(
        statuses
            .iter()
            .all(|s| (100..=900).contains(s) && s % 100 == 0)
    );
    assert!(statuses.len() >= 5, "{statuses:?}");
    assert!(
        currencies
            .iter()
            .any(|c| c.chars().all(|ch| ch.is_ascii_lowercase())),
        "{currencies:?}"
    );
    assert!(currencies.contains("TRY"));
}

#[tokio::test]
async fn order_filters_select_what_they_say() {
    let i1 = I1::start(400).await;
    let snapshot = i1.snapshot();
    let all = i1.all("orders/", &[("limit", "1000")]).await;
    let by_id: HashMap<String, &Value> = all
        .iter()
        .map(|o| (o["id"].as_str().unwrap().to_string(), o))
        .collect();
    let mut times: Vec<DateTime<Utc>> = snapshot.values().map(|o| o.updated_at).collect();
    times.sort();
    let pivot = times[times.len() / 2];
    let pivot_text = wire(pivot);

    let expect = |pred: &dyn Fn(&SandboxOrder) -> bool| -> BTreeSet<String> {
        snapshot
            .values()
            .filter(|o| pred(o))
            .map(|o| o.external_id.clone())
            .collect()
    };
    let cases: Vec<(&str, BTreeSet<String>)> = vec![
        ("updated_at__gte", expect(&|o| o.updated_at >= pivot)),
        ("updated_at__gt", expect(&|o| o.updated_at > pivot)),
        ("updated_at__lte", expect(&|o| o.updated_at <= pivot)),
        ("updated_at__lt", expect(&|o| o.updated_at < pivot)),
    ];
    for (key, expected) in cases {
        let got: BTreeSet<String> = ids(&i1
            .all("orders/", &[(key, &pivot_text), ("limit", "100")])
            .await)
        .into_iter()
        .collect();
        assert_eq!(got, expected, "{key}");
    }
    // Both ends at once, and an offset other than Z.
    let from = pivot - Duration::days(5);
    let local = from.with_timezone(&chrono::FixedOffset::east_opt(3 * 3600).unwrap());
    let got: BTreeSet<String> = ids(&i1
        .all(
            "orders/",
            &[
                (
                    "updated_at__gte",
                    &local.to_rfc3339_opts(SecondsFormat::Micros, false),
                ),
                ("updated_at__lt", &pivot_text),
            ],
        )
        .await)
    .into_iter()
    .collect();
    assert_eq!(
        got,
        expect(&|o| o.updated_at >= from && o.updated_at < pivot)
    );

    // date_placed, by the payload's own values.
    let placed = |id: &str| time(&by_id[id]["date_placed"]);
    let day = pivot - Duration::days(10);
    for (key, op) in [
        (
            "date_placed__gte",
            (|a: DateTime<Utc>, b| a >= b) as fn(DateTime<Utc>, DateTime<Utc>) -> bool,
        ),
        ("date_placed__gt", |a, b| a > b),
        ("date_placed__lte", |a, b| a <= b),
        ("date_placed__lt", |a, b| a < b),
    ] {
        let got: BTreeSet<String> = ids(&i1
            .all("orders/", &[(key, &wire(day)), ("limit", "500")])
            .await)
        .into_iter()
        .collect();
        let expected: BTreeSet<String> = by_id
            .keys()
            .filter(|id| op(placed(id), day))
            .cloned()
            .collect();
        assert_eq!(got, expected, "{key}");
    }

    // status, number and currency.
    for status in [
        "100", "200", "300", "400", "500", "600", "700", "800", "900",
    ] {
        let got: BTreeSet<String> = ids(&i1
            .all("orders/", &[("status", status), ("limit", "500")])
            .await)
        .into_iter()
        .collect();
        assert_eq!(got, expect(&|o| o.status == status), "status {status}");
    }
    let sample = &all[17];
    let number = sample["number"].as_str().unwrap();
    let found = i1.all("orders/", &[("number", number)]).await;
    assert_eq!(ids(&found), [sample["id"].as_str().unwrap()]);
    let (_, none) = i1.get("orders/", &[("number", "0")]).await;
    assert_eq!(none["count"], 0);
    let contains = i1
        .all(
            "orders/",
            &[("number__contains", &number[..6]), ("limit", "500")],
        )
        .await;
    assert!(ids(&contains).contains(&sample["id"].as_str().unwrap().to_string()));
    let currency = sample["currency"].as_str().unwrap();
    let same_currency = i1
        .all("orders/", &[("currency", currency), ("limit", "500")])
        .await;
    assert!(same_currency.iter().all(|o| o["currency"] == currency));
    assert_eq!(
        same_currency.len(),
        all.iter().filter(|o| o["currency"] == currency).count()
    );
    let amount = sample["amount"].as_str().unwrap();
    let cheaper = i1
        .all("orders/", &[("amount__lt", amount), ("limit", "500")])
        .await;
    let bound = Decimal::from_str(amount).unwrap();
    assert!(
        cheaper
            .iter()
            .all(|o| Decimal::from_str(o["amount"].as_str().unwrap()).unwrap() < bound)
    );

    // Invalid values get DRF field errors.
    let (status, body) = i1
        .get(
            "orders/",
            &[("updated_at__gte", "yesterday"), ("status", "new")],
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["updated_at__gte"][0], "Enter a valid date/time.");
    assert_eq!(body["status"][0], "Enter a number.");
}

#[tokio::test]
async fn items_addresses_and_plans_belong_to_their_orders() {
    let i1 = I1::start(60).await;
    let snapshot = i1.snapshot();
    let orders = i1.all("orders/", &[("limit", "100")]).await;
    let items = i1.all("order-items/", &[("limit", "100")]).await;
    assert_eq!(
        items.len(),
        snapshot.values().map(|o| o.line_count).sum::<usize>()
    );
    for order in orders.iter().take(15) {
        let id = order["id"].as_str().unwrap();
        let number = order["number"].as_str().unwrap();
        let by_number = i1.all("order-items/", &[("order__number", number)]).await;
        let by_order = i1.all("order-items/", &[("order", id)]).await;
        assert_eq!(by_number, by_order);
        assert_eq!(by_number.len(), snapshot[id].line_count);
        for item in &by_number {
            assert_eq!(item["order"], id);
            assert_eq!(item["price_currency"], order["currency"]);
            time(&item["updated_at"]);
        }
        for key in ["shipping_address", "billing_address"] {
            let address_id = order[key].as_str().unwrap();
            let found = i1.all("customer-addresses/", &[("id", address_id)]).await;
            assert_eq!(ids(&found), [address_id]);
            assert!(
                found[0]["first_name"]
                    .as_str()
                    .is_some_and(|n| !n.is_empty())
            );
        }
    }
    let (_, none) = i1.get("order-items/", &[("order__number", "nope")]).await;
    assert_eq!(none["count"], 0);

    // Item filters by status and updated_at.
    let pivot = time(&items[items.len() / 2]["updated_at"]);
    let newer = i1
        .all(
            "order-items/",
            &[("updated_at__gte", &wire(pivot)), ("limit", "500")],
        )
        .await;
    assert_eq!(
        newer.len(),
        items
            .iter()
            .filter(|i| time(&i["updated_at"]) >= pivot)
            .count()
    );
    let shipped = i1
        .all("order-items/", &[("status", "500"), ("limit", "500")])
        .await;
    assert!(
        shipped
            .iter()
            .all(|i| i["status"] == 500 && i["tracking_number"].is_string())
    );

    // Cancellation plans reference real orders and items.
    let plans = i1.all("cancellation-plans/", &[("limit", "100")]).await;
    let item_ids: BTreeSet<String> = ids(&items).into_iter().collect();
    for plan in &plans {
        assert!(snapshot.contains_key(plan["order"].as_str().unwrap()));
        for item in plan["order_items"].as_array().unwrap() {
            assert!(item_ids.contains(item.as_str().unwrap()));
        }
    }
}

#[tokio::test]
async fn rejecting_an_item_follows_the_rules_and_is_audited() {
    let i1 = I1::start(200).await;
    let items = i1.all("order-items/", &[("limit", "1000")]).await;
    let waiting = items
        .iter()
        .find(|i| i["status"].as_u64() < Some(400))
        .expect("an unpackaged item");
    let packaged = items
        .iter()
        .find(|i| i["status"] == 400)
        .expect("a packaged item");
    let item_id = waiting["id"].as_str().unwrap();
    let order_id = waiting["order"].as_str().unwrap();
    let before = i1.snapshot()[order_id].clone();
    let since = wire(Utc::now());
    i1.sandbox.clear_audit();

    let (status, body) = i1.reject(item_id).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert!(body.is_empty());
    let audit = i1.sandbox.audit();
    assert_eq!(audit[0].operation, "order-items.reject");
    assert_eq!(audit[0].status, 204);
    assert!(audit[0].effect.as_deref().unwrap().contains(item_id));

    let (_, item) = i1.get(&format!("order-items/{item_id}/"), &[]).await;
    assert_eq!(item["status"], 900);
    let after = i1.snapshot()[order_id].clone();
    assert!(
        after.updated_at > before.updated_at,
        "the order's updated_at moves"
    );
    let changed = i1.all("orders/", &[("updated_at__gte", &since)]).await;
    assert_eq!(ids(&changed), [order_id]);
    let plans = i1.all("cancellation-plans/", &[("order", order_id)]).await;
    assert!(plans.iter().any(|p| {
        p["order_items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i == item_id)
    }));

    let (status, body) = i1.reject(item_id).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "already rejected");
    assert!(serde_json::from_str::<Value>(&body).unwrap()["non_field_errors"][0].is_string());
    let (status, body) = i1.reject(packaged["id"].as_str().unwrap()).await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "packaged items cannot be rejected"
    );
    assert!(serde_json::from_str::<Value>(&body).unwrap()["non_field_errors"][0].is_string());
    let (status, body) = i1.reject("00000000-0000-0000-0000-000000000000").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["detail"],
        "Not found."
    );
    assert!(i1.sandbox.audit()[1..].iter().all(|e| e.effect.is_none()));
}

#[tokio::test]
async fn rejecting_every_item_rejects_the_order() {
    let i1 = I1::start(100).await;
    let id = i1.sandbox.add_orders(Api::I1, 1).remove(0);
    let items = i1.all("order-items/", &[("order", &id)]).await;
    for item in &items {
        assert_eq!(
            i1.reject(item["id"].as_str().unwrap()).await.0,
            StatusCode::NO_CONTENT
        );
    }
    let (_, order) = i1.get(&format!("orders/{id}/"), &[]).await;
    assert_eq!(order["status"], 900);
    let decimal = |v: &Value| Decimal::from_str(v.as_str().unwrap()).unwrap();
    let prices: Decimal = items.iter().map(|i| decimal(&i["price"])).sum();
    assert_eq!(decimal(&order["refund_amount"]), prices);
    assert_eq!(
        decimal(&order["amount"]),
        prices + decimal(&order["shipping_amount"]) - decimal(&order["discount_amount"])
    );
    assert_eq!(i1.snapshot()[&id].status, "900");
}

#[tokio::test]
async fn added_and_changed_orders_show_through_the_filters() {
    let i1 = I1::start(150).await;
    let since = wire(Utc::now());
    let added: BTreeSet<String> = i1.sandbox.add_orders(Api::I1, 5).into_iter().collect();
    let placed = i1
        .all("orders/", &[("date_placed__gte", &since[..19])])
        .await;
    let placed_ids: BTreeSet<String> = ids(&placed).into_iter().collect();
    assert!(added.is_subset(&placed_ids));
    let newest = i1.all("orders/", &[("created_at__gte", &since)]).await;
    assert_eq!(ids(&newest).into_iter().collect::<BTreeSet<_>>(), added);
    assert!(newest.iter().all(|o| o["status"] == 100));
    let (_, last_page) = i1
        .get("orders/", &[("limit", "5"), ("offset", "150")])
        .await;
    assert_eq!(
        ids(last_page["results"].as_array().unwrap())
            .into_iter()
            .collect::<BTreeSet<_>>(),
        added,
        "new orders list last"
    );

    let since = wire(Utc::now());
    let changed: BTreeSet<String> = i1.sandbox.change_orders(Api::I1, 7).into_iter().collect();
    assert_eq!(changed.len(), 7);
    let got: BTreeSet<String> = ids(&i1.all("orders/", &[("updated_at__gte", &since)]).await)
        .into_iter()
        .collect();
    assert_eq!(got, changed);
    // Their items moved with them.
    let items = i1
        .all(
            "order-items/",
            &[("updated_at__gte", &since), ("limit", "100")],
        )
        .await;
    let item_orders: BTreeSet<String> = items
        .iter()
        .map(|i| i["order"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(item_orders, changed);
}

#[tokio::test]
async fn a_fixed_upper_bound_keeps_pages_consistent_while_orders_change() {
    let i1 = I1::start(300).await;
    let t0 = wire(Utc::now());
    // Change orders while the client pages; with `updated_at__lt = T0` they drop out of the listing, and
    // without a filter every order is still listed exactly once because the ordering does not depend on
    // updated_at.
    i1.sandbox.change_while_paging(Api::I1, 2, 10);
    let unfiltered = i1.all("orders/", &[("limit", "50")]).await;
    let listed: BTreeSet<String> = ids(&unfiltered).into_iter().collect();
    assert_eq!(listed.len(), 300);
    let after = i1
        .all("orders/", &[("updated_at__lt", &t0), ("limit", "1000")])
        .await;
    assert_eq!(after.len(), 290);
}
