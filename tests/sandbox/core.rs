//! The sandbox core: the audit log, each injected fault, scripted fault order, rate-drawn faults,
//! change-while-paging triggers, the order-changing handle methods, seeding and shutdown. The i1 and Labs
//! fakes serve as the vehicles.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use ordersync::sandbox::faults::{Fault, FaultPlan};
use ordersync::sandbox::{Api, Sandbox, SandboxConfig};
use reqwest::StatusCode;
use reqwest::header::{CONTENT_TYPE, RETRY_AFTER};
use serde_json::Value;

async fn start(orders: usize) -> Sandbox {
    Sandbox::start(SandboxConfig {
        orders_per_api: orders,
        ..SandboxConfig::default()
    })
    .await
    .expect("the sandbox starts")
}

/// `GET …/orders/` on i1 with the right token.
async fn i1_orders(sandbox: &Sandbox, query: &str) -> reqwest::Response {
    reqwest::Client::new()
        .get(format!("{}orders/?{query}", sandbox.base_url(Api::I1)))
        .bearer_auth(&sandbox.credentials().i1_token)
        .send()
        .await
        .expect("the request is answered")
}

/// `GET /orders?page=1&limit=10` on Labs with the right token.
async fn labs_page(sandbox: &Sandbox) -> reqwest::Response {
    reqwest::Client::new()
        .get(format!(
            "{}/orders?page=1&limit=10",
            sandbox.base_url(Api::Labs)
        ))
        .bearer_auth(&sandbox.credentials().labs_token)
        .send()
        .await
        .expect("the request is answered")
}

#[tokio::test]
async fn base_urls_follow_the_digest_table() {
    let sandbox = start(1).await;
    let addr = sandbox.addr();
    assert_eq!(
        sandbox.base_url(Api::Allesgo),
        format!("http://{addr}/allesgo")
    );
    assert_eq!(sandbox.base_url(Api::C2c), format!("http://{addr}/c2c"));
    assert_eq!(
        sandbox.base_url(Api::I1),
        format!("http://{addr}/i1/api/i1/")
    );
    assert_eq!(
        sandbox.base_url(Api::Labs),
        format!("http://{addr}/labs/v1")
    );
    assert_eq!(
        sandbox.base_url(Api::Gittigidiyor),
        format!("http://{addr}/gittigidiyor/listingapi/ws/IndividualSaleService")
    );
    assert_eq!(
        Api::ALL.map(Api::name),
        ["allesgo", "c2c", "i1", "labs", "gittigidiyor"]
    );
    assert!(addr.ip().is_loopback());
}

#[tokio::test]
async fn the_audit_log_records_every_call_in_order() {
    let sandbox = start(20).await;
    let http = reqwest::Client::new();

    let ok = i1_orders(&sandbox, "limit=5").await;
    assert_eq!(ok.status(), StatusCode::OK);
    let denied = http
        .get(format!("{}orders/", sandbox.base_url(Api::I1)))
        .bearer_auth("wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(denied.status(), StatusCode::UNAUTHORIZED);
    let body = r#"{"orderId": 1, "statusCode": 1}"#;
    let refused = http
        .post(format!("{}/orders/status", sandbox.base_url(Api::Labs)))
        .bearer_auth(&sandbox.credentials().labs_token)
        .header(CONTENT_TYPE, "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::NOT_FOUND);
    let id = sandbox.orders(Api::Labs)[0].external_id.clone();
    let deleted = http
        .delete(format!("{}/orders/{id}", sandbox.base_url(Api::Labs)))
        .bearer_auth(&sandbox.credentials().labs_token)
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), StatusCode::OK);
    let unknown = http
        .get(format!("{}/nowhere", sandbox.base_url(Api::Labs)))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);

    let audit = sandbox.audit();
    let summary: Vec<(Api, &str, &str, &str, u16)> = audit
        .iter()
        .map(|e| {
            (
                e.api,
                e.method.as_str(),
                e.path.as_str(),
                e.operation.as_str(),
                e.status,
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (Api::I1, "GET", "/orders/", "orders.list", 200),
            (Api::I1, "GET", "/orders/", "orders.list", 401),
            (Api::Labs, "POST", "/orders/status", "orders.status", 404),
            (
                Api::Labs,
                "DELETE",
                &*format!("/orders/{id}"),
                "orders.delete",
                200
            ),
            (Api::Labs, "GET", "/nowhere", "GET /nowhere", 404),
        ]
    );
    assert_eq!(audit[0].query.as_deref(), Some("limit=5"));
    assert_eq!(audit[1].query, None);
    assert_eq!(audit[2].body.as_deref(), Some(body));
    assert_eq!(audit[0].body, None);
    let effects: Vec<Option<&str>> = audit.iter().map(|e| e.effect.as_deref()).collect();
    assert_eq!(
        effects,
        [
            None,
            None,
            None,
            Some(&*format!("order {id} deleted")),
            None
        ]
    );
    assert!(audit.iter().all(|e| e.fault.is_none()));
    assert!(audit.windows(2).all(|w| w[0].at <= w[1].at));

    sandbox.clear_audit();
    assert!(sandbox.audit().is_empty());
    i1_orders(&sandbox, "").await;
    assert_eq!(sandbox.audit().len(), 1);
}

#[tokio::test]
async fn scripted_faults_come_first_in_order_and_each_has_its_shape() {
    let sandbox = start(30).await;
    let full = i1_orders(&sandbox, "limit=30").await.bytes().await.unwrap();
    sandbox.clear_audit();
    sandbox.set_faults(
        Api::I1,
        FaultPlan::scripted([
            Fault::ServerError,
            Fault::RateLimited {
                retry_after_secs: 7,
            },
            Fault::Malformed,
            Fault::Truncated,
            Fault::WrongContentType,
            Fault::Slow(Duration::from_millis(50)),
        ]),
    );

    let server_error = i1_orders(&sandbox, "limit=30").await;
    assert!(
        [
            StatusCode::INTERNAL_SERVER_ERROR,
            StatusCode::SERVICE_UNAVAILABLE
        ]
        .contains(&server_error.status())
    );
    assert!(
        server_error.headers()[CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    assert!(!server_error.text().await.unwrap().is_empty());

    let limited = i1_orders(&sandbox, "limit=30").await;
    assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(limited.headers()[RETRY_AFTER], "7");

    let malformed = i1_orders(&sandbox, "limit=30").await;
    assert_eq!(malformed.status(), StatusCode::OK);
    assert!(
        malformed.headers()[CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );
    assert!(serde_json::from_slice::<Value>(&malformed.bytes().await.unwrap()).is_err());

    let truncated = i1_orders(&sandbox, "limit=30").await;
    assert_eq!(truncated.status(), StatusCode::OK);
    let cut = truncated.bytes().await.unwrap();
    assert_eq!(cut.len(), full.len() / 2);
    assert_eq!(&cut[..], &full[..cut.len()]);
    assert!(serde_json::from_slice::<Value>(&cut).is_err());

    let html = i1_orders(&sandbox, "limit=30").await;
    assert_eq!(html.status(), StatusCode::OK);
    assert!(
        html.headers()[CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    assert!(html.text().await.unwrap().contains("<html>"));

    let started = Instant::now();
    let slow = i1_orders(&sandbox, "limit=30").await;
    assert!(started.elapsed() >= Duration::from_millis(50));
    assert_eq!(slow.status(), StatusCode::OK);
    assert_eq!(slow.bytes().await.unwrap(), full);

    let after = i1_orders(&sandbox, "limit=30").await;
    assert_eq!(after.bytes().await.unwrap(), full);

    let faults: Vec<Option<Fault>> = sandbox.audit().into_iter().map(|e| e.fault).collect();
    assert_eq!(
        faults,
        [
            Some(Fault::ServerError),
            Some(Fault::RateLimited {
                retry_after_secs: 7
            }),
            Some(Fault::Malformed),
            Some(Fault::Truncated),
            Some(Fault::WrongContentType),
            Some(Fault::Slow(Duration::from_millis(50))),
            None,
        ]
    );
}

#[tokio::test]
async fn faults_are_per_api() {
    let sandbox = start(5).await;
    sandbox.set_faults(Api::I1, FaultPlan::scripted([Fault::ServerError]));
    assert_eq!(labs_page(&sandbox).await.status(), StatusCode::OK);
    assert!(i1_orders(&sandbox, "").await.status().is_server_error());
    assert_eq!(i1_orders(&sandbox, "").await.status(), StatusCode::OK);
}

#[tokio::test]
async fn malformed_bodies_suit_each_api() {
    let sandbox = start(5).await;
    sandbox.set_faults(Api::Labs, FaultPlan::scripted([Fault::Malformed]));
    let response = labs_page(&sandbox).await;
    assert_eq!(response.status(), StatusCode::OK);
    let text = response.text().await.unwrap();
    assert!(text.starts_with(r#"{"items""#));
    assert!(serde_json::from_str::<Value>(&text).is_err());

    sandbox.set_faults(Api::Gittigidiyor, FaultPlan::scripted([Fault::Malformed]));
    let response = reqwest::Client::new()
        .post(sandbox.base_url(Api::Gittigidiyor))
        .body("<x/>")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        response.headers()[CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/xml")
    );
    assert!(response.text().await.unwrap().ends_with("<sale><"));
}

#[tokio::test]
async fn rates_draw_faults_and_zero_rates_draw_none() {
    let sandbox = start(5).await;
    sandbox.set_faults(
        Api::Labs,
        FaultPlan {
            rate_limit_rate: 1.0,
            retry_after_secs: 3,
            ..FaultPlan::default()
        },
    );
    for _ in 0..3 {
        let response = labs_page(&sandbox).await;
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()[RETRY_AFTER], "3");
    }
    sandbox.set_faults(
        Api::Labs,
        FaultPlan {
            server_error_rate: 0.5,
            ..FaultPlan::default()
        },
    );
    let mut statuses = BTreeSet::new();
    for _ in 0..40 {
        statuses.insert(labs_page(&sandbox).await.status().as_u16());
    }
    assert!(statuses.contains(&200), "{statuses:?}");
    assert!(statuses.iter().any(|s| *s >= 500), "{statuses:?}");

    sandbox.set_faults(Api::Labs, FaultPlan::default());
    sandbox.clear_audit();
    for _ in 0..20 {
        assert_eq!(labs_page(&sandbox).await.status(), StatusCode::OK);
    }
    assert!(sandbox.audit().iter().all(|e| e.fault.is_none()));
}

/// How many orders differ between two snapshots of the same orders.
fn changed(
    before: &[ordersync::sandbox::SandboxOrder],
    after: &[ordersync::sandbox::SandboxOrder],
) -> usize {
    before
        .iter()
        .zip(after)
        .filter(|(b, a)| {
            assert_eq!(b.external_id, a.external_id);
            b != a
        })
        .count()
}

#[tokio::test]
async fn change_while_paging_fires_after_that_many_served_reads() {
    let sandbox = start(50).await;
    let before = sandbox.orders(Api::I1);
    sandbox.change_while_paging(Api::I1, 2, 4);

    // Neither a refused call nor one answered by a fault is a served read.
    let denied = reqwest::Client::new()
        .get(format!("{}orders/", sandbox.base_url(Api::I1)))
        .send()
        .await
        .unwrap();
    assert_eq!(denied.status(), StatusCode::UNAUTHORIZED);
    sandbox.set_faults(Api::I1, FaultPlan::scripted([Fault::ServerError]));
    assert!(i1_orders(&sandbox, "").await.status().is_server_error());
    // Reads of another API do not count either.
    assert_eq!(labs_page(&sandbox).await.status(), StatusCode::OK);

    assert_eq!(i1_orders(&sandbox, "").await.status(), StatusCode::OK);
    assert_eq!(changed(&before, &sandbox.orders(Api::I1)), 0);
    assert_eq!(i1_orders(&sandbox, "").await.status(), StatusCode::OK);
    // The change happened before the second read's response was sent.
    assert_eq!(changed(&before, &sandbox.orders(Api::I1)), 4);

    let settled = sandbox.orders(Api::I1);
    i1_orders(&sandbox, "").await;
    assert_eq!(
        changed(&settled, &sandbox.orders(Api::I1)),
        0,
        "a trigger fires once"
    );

    sandbox.change_while_paging(Api::I1, 0, 2);
    assert_eq!(
        changed(&settled, &sandbox.orders(Api::I1)),
        2,
        "0 means now"
    );
}

#[tokio::test]
async fn handle_methods_add_and_change_orders() {
    let sandbox = start(10).await;
    for api in [Api::I1, Api::Labs] {
        assert_eq!(sandbox.orders(api).len(), 10);
        let added = sandbox.add_orders(api, 3);
        assert_eq!(added.len(), 3);
        let orders = sandbox.orders(api);
        assert_eq!(orders.len(), 13);
        for id in &added {
            let order = orders
                .iter()
                .find(|o| &o.external_id == id)
                .expect("added order listed");
            assert!(order.line_count >= 1 && order.line_count <= 4);
            assert!(order.total > rust_decimal::Decimal::ZERO);
            assert_eq!(order.total.scale(), 2);
        }
        let id = &added[0];
        let status_before = orders
            .iter()
            .find(|o| &o.external_id == id)
            .unwrap()
            .clone();
        assert!(sandbox.change_order(api, id));
        let after = sandbox.orders(api);
        let status_after = after.iter().find(|o| &o.external_id == id).unwrap();
        assert!(
            status_after.updated_at > status_before.updated_at
                || status_after.status != status_before.status
        );
        assert!(!sandbox.change_order(api, "no-such-order"));

        let changed = sandbox.change_orders(api, 4);
        assert_eq!(changed.len(), 4);
        assert_eq!(changed.iter().collect::<BTreeSet<_>>().len(), 4);
    }
    // Asking for more changes than there are open orders changes what there is, then stops.
    let all = sandbox.change_orders(Api::Labs, 10_000);
    assert!(all.len() <= 13);
}

#[tokio::test]
async fn the_same_seed_gives_the_same_orders() {
    let key = |sandbox: &Sandbox, api| -> Vec<(String, String, rust_decimal::Decimal, usize)> {
        sandbox
            .orders(api)
            .into_iter()
            .map(|o| (o.external_id, o.status, o.total, o.line_count))
            .collect()
    };
    let one = start(40).await;
    let two = start(40).await;
    let other = Sandbox::start(SandboxConfig {
        seed: 7,
        orders_per_api: 40,
        ..SandboxConfig::default()
    })
    .await
    .unwrap();
    for api in [Api::I1, Api::Labs] {
        assert_eq!(key(&one, api), key(&two, api));
        assert_ne!(key(&one, api), key(&other, api));
    }
}

#[tokio::test]
async fn shutdown_stops_the_server() {
    let sandbox = start(1).await;
    let url = format!("{}orders/", sandbox.base_url(Api::I1));
    assert_eq!(i1_orders(&sandbox, "").await.status(), StatusCode::OK);
    sandbox.shutdown().await;
    let result = reqwest::Client::new().get(url).send().await;
    assert!(result.is_err(), "nothing listens after shutdown");
}
