use std::collections::HashMap;
use std::num::NonZeroU32;
use std::str::FromStr;
use std::sync::{Arc, Mutex};

use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use chrono::TimeZone;
use rust_decimal::Decimal;

use super::wire::{
    ListingProblem, Problem, api_message, parse_orders, parse_status_codes, read_orders,
};
use super::*;
use crate::domain::MarketplaceKind;
use crate::http::{HttpSettings, Redactor};

macro_rules! fixture {
    ($name:literal) => {
        include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/allesgo/",
            $name
        ))
    };
}

const TOKEN: &str = "tok-9f8e7d6c5b4a";

fn statuses() -> Statuses {
    Statuses::new(&HashMap::new())
}

fn dec(s: &str) -> Decimal {
    Decimal::from_str(s).unwrap()
}

fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, mo, d, h, mi, s).unwrap()
}

fn parse(body: &str) -> Result<Vec<crate::domain::Order>, Problem> {
    parse_orders(body.as_bytes(), &statuses(), &Redactor::default())
}

#[test]
fn a_single_order_object_is_read_in_full() {
    let orders = parse(fixture!("orders_single.json")).unwrap();
    assert_eq!(orders.len(), 1);
    let o = &orders[0];
    assert_eq!(o.external_id, "AG-2024050112");
    assert_eq!(o.state, OrderState::Shipped);
    assert_eq!(o.status.code.as_deref(), Some("3"));
    assert_eq!(o.status.text.as_deref(), Some("Kargoya Verildi"));
    assert_eq!(o.total_amount, Some(dec("919.89")));
    assert_eq!(o.shipping_amount, Some(dec("19.99")));
    assert_eq!(o.currency.as_ref().and_then(|c| c.iso), Some("TRY"));
    assert_eq!(
        o.customer_email.as_deref(),
        Some("ayse.yılmaz@example.com.tr")
    );
    // A local time without offset is Istanbul time (UTC+3).
    assert_eq!(o.placed_at, Some(utc(2024, 5, 1, 9, 34, 56)));
    assert_eq!(o.source_updated_at, None);
    assert_eq!(o.shipping_city, None);

    let p = &o.packages[0];
    assert_eq!(p.external_id, "PKG-77001");
    assert_eq!(p.carrier.as_deref(), Some("Yurtiçi Kargo"));
    assert_eq!(p.total_amount, Some(dec("919.89")));
    assert_eq!(
        p.raw.value()["invoice_draft"],
        "https://www.allesgo.com/fatura/PKG-77001"
    );

    let l = &o.lines[0];
    assert_eq!(l.external_id, "PKG-77001/1");
    assert_eq!(l.package_external_id.as_deref(), Some("PKG-77001"));
    assert_eq!(l.sku.as_deref(), Some("NVR-ĞÜŞ-001"));
    assert_eq!(
        l.product_name.as_deref(),
        Some("Çift Kişilik Pamuklu Nevresim Takımı – Gökyüzü")
    );
    assert_eq!(l.quantity, dec("2"));
    assert_eq!(l.unit_price, Some(dec("449.95")));
    // The literal's scale is kept: 899.90, not 899.9.
    assert_eq!(
        l.total_price.map(|d| d.to_string()).as_deref(),
        Some("899.90")
    );
    assert_eq!(l.state, OrderState::Shipped);
    assert_eq!(l.raw.value()["variant"]["Boyut"], "Çift Kişilik");
}

#[test]
fn raw_keeps_the_order_exactly_as_received() {
    let orders = parse(fixture!("orders_single.json")).unwrap();
    let sent: serde_json::Value = serde_json::from_str(fixture!("orders_single.json")).unwrap();
    assert_eq!(orders[0].raw, sent["data"]);
    // Number literals survive untouched (no f64 round trip).
    let text = orders[0].raw.to_string();
    assert!(text.contains("899.90"), "{text}");
}

#[test]
fn an_array_of_orders_with_mixed_scalar_types_is_read() {
    let orders = parse(fixture!("orders_many.json")).unwrap();
    assert_eq!(orders.len(), 2);

    let first = &orders[0];
    // One package delivered, one awaiting approval: the least advanced live package wins.
    assert_eq!(first.state, OrderState::AwaitingApproval);
    assert_eq!(first.status.code.as_deref(), Some("5,1"));
    assert_eq!(
        first.status.text.as_deref(),
        Some("Teslim Edildi | Onay Bekliyor")
    );
    assert_eq!(first.placed_at, Some(utc(2024, 5, 2, 6, 15, 0)));
    assert_eq!(first.shipping_city.as_deref(), Some("İzmir"));
    assert_eq!(first.total_amount, Some(dec("1265.2")));
    assert_eq!(
        first.packages[0].tracking_number.as_deref(),
        Some("ARS123456789")
    );
    assert_eq!(first.packages[0].state, OrderState::Delivered);
    assert_eq!(first.packages[1].carrier.as_deref(), Some("Aras Kargo"));
    assert_eq!(first.packages[1].tracking_number, None);

    let lines = &first.lines;
    assert_eq!(lines.len(), 3);
    assert_eq!(
        lines[0].unit_price,
        Some(dec("1249.90")),
        "Turkish notation"
    );
    assert_eq!(
        lines[0].currency.as_ref().map(|c| (c.raw.as_str(), c.iso)),
        Some(("TL", Some("TRY")))
    );
    assert_eq!(lines[1].external_id, "PKG-2/1");
    assert_eq!(lines[1].sku.as_deref(), Some("90017"));
    assert_eq!(lines[1].quantity, dec("3"));
    // A float literal is kept exactly as sent, including its binary-rounding noise.
    assert_eq!(lines[1].total_price, Some(dec("0.30000000000000004")));
    assert_eq!(
        lines[2].unit_price,
        Some(dec("15")),
        "integers are lira, not kuruş"
    );

    let second = &orders[1];
    assert_eq!(second.external_id, "1000042");
    assert_eq!(second.state, OrderState::Unknown, "an unknown description");
    assert_eq!(second.status.code.as_deref(), Some("16"));
    assert_eq!(second.packages[0].total_amount, Some(dec("150")));
    assert_eq!(second.packages[0].carrier, None);
    assert_eq!(second.placed_at, Some(utc(2024, 5, 2, 7, 0, 0)));
    assert_eq!(second.customer_email, None);
    assert_eq!(second.shipping_amount, None);
    assert!(second.lines.is_empty());
}

#[test]
fn operator_overrides_map_codes() {
    let mut overrides = HashMap::new();
    overrides.insert("16".to_owned(), OrderState::OnHold);
    let orders = parse_orders(
        fixture!("orders_many.json").as_bytes(),
        &Statuses::new(&overrides),
        &Redactor::default(),
    )
    .unwrap();
    assert_eq!(orders[1].state, OrderState::OnHold);
}

#[test]
fn empty_and_null_data_are_no_orders() {
    assert!(parse(fixture!("orders_empty.json")).unwrap().is_empty());
    assert!(parse(r#"{"data": null}"#).unwrap().is_empty());
}

#[test]
fn errors_inside_a_200_are_rejections() {
    assert_eq!(
        parse(fixture!("error_message.json")),
        Err(Problem::Rejected(
            "Bu mağazaya erişim yetkiniz yok".to_owned()
        ))
    );
    assert_eq!(
        parse(fixture!("error_plain.json")),
        Err(Problem::Rejected(
            "Geçersiz tarih aralığı: start_date end_date'ten büyük olamaz".to_owned()
        ))
    );
    assert_eq!(
        parse(fixture!("action_failed.json")),
        Err(Problem::Rejected("Sipariş bulunamadı".to_owned()))
    );
}

#[test]
fn garbage_is_malformed_never_a_panic() {
    for body in [
        fixture!("truncated.json"),
        fixture!("html.html"),
        fixture!("wrong_types.json"),
        "",
        "[]",
        r#"{"data": 5}"#,
        r#"{"data": [{"packages": []}]}"#,
        r#"{"data": [{"code": "A", "packages": [{"items": [{"product_name": "x"}]}]}]}"#,
        r#"{"data": [{"code": "A", "total_price": "on iki"}]}"#,
        r#"{"data": [{"code": "A", "email": 5}]}"#,
        r#"{"other": 1}"#,
    ] {
        assert!(
            matches!(parse(body), Err(Problem::Malformed(_))),
            "{body}: {:?}",
            parse(body)
        );
    }
}

/// A listing of `n` orders, each the single-order fixture's with its own code (`AG-1`, `AG-2`, …);
/// the order at `bad_at` (from 1) has none.
fn listing(n: usize, bad_at: Option<usize>) -> String {
    let single: serde_json::Value = serde_json::from_str(fixture!("orders_single.json")).unwrap();
    let orders: Vec<serde_json::Value> = (1..=n)
        .map(|i| {
            let mut order = single["data"].clone();
            order["code"] = if bad_at == Some(i) {
                serde_json::Value::Null
            } else {
                format!("AG-{i}").into()
            };
            order
        })
        .collect();
    serde_json::json!({ "data": orders }).to_string()
}

/// The external ids of each batch delivered, and whether it was the last.
type Delivered = Vec<(Vec<String>, bool)>;

/// Reads `body` as it would arrive, in batches of `batch_size`: what was delivered, and how the
/// reading ended.
fn read_in_batches(body: &str, batch_size: usize) -> (Delivered, Result<(), ListingProblem>) {
    let mut batches = Vec::new();
    let mut de = serde_json::Deserializer::from_reader(body.as_bytes());
    let read = read_orders(
        &mut de,
        &statuses(),
        &Redactor::default(),
        batch_size,
        |batch| {
            let ids = batch.orders.into_iter().map(|o| o.external_id).collect();
            batches.push((ids, batch.last));
            true
        },
    );
    (batches, read)
}

#[test]
fn a_listing_is_delivered_in_batches_as_it_is_read() {
    let (batches, read) = read_in_batches(&listing(5, None), 2);
    read.unwrap();
    let ids = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert_eq!(
        batches,
        [
            (ids(&["AG-1", "AG-2"]), false),
            (ids(&["AG-3", "AG-4"]), false),
            (ids(&["AG-5"]), true)
        ]
    );
    // A count that fills the batches exactly ends with an empty last one.
    let (batches, read) = read_in_batches(&listing(2, None), 2);
    read.unwrap();
    assert_eq!(batches, [(ids(&["AG-1", "AG-2"]), false), (vec![], true)]);
    // A single order, null and an error read the same as held whole.
    let (batches, _) = read_in_batches(fixture!("orders_single.json"), 2);
    assert_eq!(batches, [(ids(&["AG-2024050112"]), true)]);
    assert_eq!(read_in_batches(r#"{"data": null}"#, 2).0, [(vec![], true)]);
    assert!(matches!(
        read_in_batches(fixture!("error_plain.json"), 2).1,
        Err(ListingProblem::Body(Problem::Rejected(_)))
    ));
}

#[test]
fn a_bad_order_stops_the_listing_after_the_batches_before_it_and_keeps_its_text() {
    let (batches, read) = read_in_batches(&listing(5, Some(4)), 2);
    assert_eq!(batches.len(), 1, "{batches:?}");
    assert_eq!(batches[0].0, ["AG-1", "AG-2"]);
    let Err(ListingProblem::Order { index, reason, raw }) = read else {
        panic!("{read:?}");
    };
    assert_eq!(index, 4);
    assert!(reason.contains("code"), "{reason}");
    let order: serde_json::Value = serde_json::from_str(&raw).unwrap();
    assert!(
        order["code"].is_null() && order["packages"].is_array(),
        "{raw}"
    );

    let body = listing(5, None);
    let (batches, read) = read_in_batches(&body[..body.len() / 2], 2);
    assert!(!batches.is_empty() && batches.iter().all(|(_, last)| !last));
    assert!(
        matches!(&read, Err(ListingProblem::Body(Problem::Malformed(reason))) if reason.contains("EOF")),
        "{read:?}"
    );
}

#[test]
fn a_listing_stops_when_nobody_takes_its_batches() {
    let body = listing(5, None);
    let mut de = serde_json::Deserializer::from_reader(body.as_bytes());
    let read = read_orders(&mut de, &statuses(), &Redactor::default(), 2, |_| false);
    assert!(matches!(read, Err(ListingProblem::Stopped)), "{read:?}");
}

#[test]
fn secrets_are_scrubbed_from_raw() {
    let body = format!(
        r#"{{"data": {{"code": "A", "access_token": "{TOKEN}", "note": "sent with {TOKEN}", "packages": []}}}}"#
    );
    let orders = parse_orders(
        body.as_bytes(),
        &statuses(),
        &Redactor::new(vec![TOKEN.into()]),
    )
    .unwrap();
    let raw = orders[0].raw.to_string();
    assert!(!raw.contains(TOKEN), "{raw}");
    assert!(orders[0].raw.value().get("access_token").is_none());
    assert_eq!(orders[0].raw.value()["note"], "sent with ***");
}

#[test]
fn status_catalog_is_read() {
    let codes = parse_status_codes(fixture!("status_codes.json").as_bytes()).unwrap();
    assert_eq!(codes.len(), 5);
    assert_eq!(codes[3].code, "4");
    assert_eq!(codes[3].description, "İptal Edildi");
    assert_eq!(codes[4].code, "5");
    assert!(matches!(
        parse_status_codes(fixture!("truncated.json").as_bytes()),
        Err(Problem::Malformed(_))
    ));
}

#[test]
fn api_messages_are_found_in_error_bodies() {
    assert_eq!(
        api_message(fixture!("error_message.json").as_bytes()).as_deref(),
        Some("Bu mağazaya erişim yetkiniz yok")
    );
    assert_eq!(api_message(b"<html>"), None);
}

#[test]
fn new_orders_are_asked_for_by_unix_seconds() {
    let from = utc(2024, 5, 1, 10, 0, 0);
    let to = utc(2024, 5, 2, 10, 0, 0) + chrono::TimeDelta::milliseconds(250);
    let query = orders_query(STREAM_NEW, from, to).unwrap();
    assert_eq!(
        query,
        vec![
            ("start_date", (from.timestamp() - 1).to_string()),
            ("end_date", (to.timestamp() + 1).to_string()),
        ]
    );
    assert_eq!(query[0].1, "1714557599");
}

#[test]
fn updates_ask_for_whole_days_plus_one() {
    let from = utc(2024, 5, 1, 10, 0, 0);
    let days = |to| orders_query(STREAM_UPDATES, from, to).unwrap();
    assert_eq!(
        days(from + chrono::TimeDelta::minutes(5)),
        vec![("updates_only", "1".to_owned()), ("days", "2".to_owned())]
    );
    assert_eq!(days(from + chrono::TimeDelta::days(1))[1].1, "2");
    assert_eq!(days(from + chrono::TimeDelta::hours(25))[1].1, "3");
    assert_eq!(days(from)[1].1, "1");
    assert!(orders_query("sales", from, from).is_none());
}

#[test]
fn paths_are_appended_to_the_base_url() {
    let query = vec![("days", "2".to_owned())];
    for base in ["https://api.allesgo.com", "https://api.allesgo.com/"] {
        let url = orders_url(&Url::parse(base).unwrap(), "5f00aa", &query);
        assert_eq!(
            url.as_str(),
            "https://api.allesgo.com/v1.0/order/store/5f00aa?days=2"
        );
    }
    for base in ["http://127.0.0.1:9/allesgo", "http://127.0.0.1:9/allesgo/"] {
        let url = endpoint(
            &Url::parse(base).unwrap(),
            &["v1.0", "order", "status-codes"],
        );
        assert_eq!(
            url.as_str(),
            "http://127.0.0.1:9/allesgo/v1.0/order/status-codes"
        );
    }
}

#[test]
fn streams_follow_the_contract() {
    assert_eq!(STREAMS[0].name, "new");
    assert_eq!(
        STREAMS[0].plan,
        StreamPlan::Windows {
            max_window: Some(DAY),
            adaptive: true,
            reread_open: false,
            changes_only: false
        }
    );
    assert_eq!(STREAMS[1].name, "updates");
    assert_eq!(
        STREAMS[1].plan,
        StreamPlan::Windows {
            max_window: None,
            adaptive: false,
            reread_open: false,
            changes_only: true
        }
    );
}

/// What the stand-in service saw and should answer.
#[derive(Default)]
struct Exchange {
    queries: Vec<HashMap<String, String>>,
    reply: Option<(StatusCode, &'static str, &'static str)>,
}

type Shared = Arc<Mutex<Exchange>>;

async fn stand_in(
    State(exchange): State<Shared>,
    Query(query): Query<HashMap<String, String>>,
) -> impl IntoResponse {
    let mut exchange = exchange.lock().unwrap();
    exchange.queries.push(query);
    let (status, content_type, body) = exchange.reply.unwrap_or((
        StatusCode::OK,
        "application/json; charset=utf-8",
        fixture!("orders_single.json"),
    ));
    (status, [(header::CONTENT_TYPE, content_type)], body)
}

async fn serve() -> (Allesgo, Shared) {
    let exchange = Shared::default();
    let app = axum::Router::new()
        .route("/allesgo/v1.0/order/store/{store}", get(stand_in))
        .route("/allesgo/v1.0/order/status-codes", get(stand_in))
        .with_state(exchange.clone());
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
        &HttpSettings {
            timeout: account.timeout,
            requests_per_second: account.requests_per_second,
        },
        account.credentials.secret_values(),
    )
    .unwrap();
    (Allesgo::new(&account, http, &HashMap::new()), exchange)
}

/// The last `n` characters of `text`.
fn last_chars(text: &str, n: usize) -> String {
    let mut last: Vec<char> = text.chars().rev().take(n).collect();
    last.reverse();
    last.into_iter().collect()
}

#[tokio::test]
async fn a_large_answer_arrives_in_batches_and_a_cut_one_is_recorded_from_its_end() {
    let (allesgo, exchange) = serve().await;
    let body: &'static str = Box::leak(listing(1_200, None).into_boxed_str());
    exchange.lock().unwrap().reply = Some((StatusCode::OK, "application/json", body));
    let page = allesgo.fetch_page("updates", &window()).await.unwrap();
    let mut sizes = vec![page.orders.len()];
    let mut more = page.more.expect("the rest of the answer");
    loop {
        let batch = more.next().await.unwrap();
        sizes.push(batch.orders.len());
        if batch.last {
            break;
        }
    }
    assert_eq!(sizes, [500, 500, 200]);

    // Cut within the second batch: the first arrives, then the error, with the end of what came.
    let cut = &body[..body.len() * 3 / 4];
    exchange.lock().unwrap().reply = Some((StatusCode::OK, "application/json", cut));
    let page = allesgo.fetch_page("updates", &window()).await.unwrap();
    assert_eq!(page.orders.len(), 500);
    let error = page.more.expect("the rest").next().await.unwrap_err();
    let MarketplaceError::Malformed {
        reason, raw_body, ..
    } = &error
    else {
        panic!("{error}");
    };
    assert!(reason.contains("bytes received are recorded"), "{reason}");
    assert!(raw_body.len() <= 64 * 1024 + 8, "{}", raw_body.len());
    assert_eq!(last_chars(raw_body, 1_000), last_chars(cut, 1_000));
}

fn window() -> PageRequest {
    PageRequest {
        from: utc(2024, 5, 1, 10, 0, 0),
        to: utc(2024, 5, 2, 10, 0, 0),
        page: None,
        page_size: 200,
        order_ids: Vec::new(),
        changed_since: None,
        stored: None,
    }
}

#[tokio::test]
async fn exchanges_with_a_stand_in_service() {
    let (allesgo, exchange) = serve().await;

    let page = allesgo.fetch_page("new", &window()).await.unwrap();
    assert_eq!(page.orders.len(), 1);
    assert_eq!((page.next, page.requests), (None, 1));
    let seen = exchange.lock().unwrap().queries.pop().unwrap();
    assert_eq!(seen.get("access_token").map(String::as_str), Some(TOKEN));
    assert_eq!(
        seen.get("start_date").map(String::as_str),
        Some("1714557599")
    );
    assert_eq!(seen.get("end_date").map(String::as_str), Some("1714644000"));
    assert!(!seen.contains_key("days"));

    allesgo.fetch_page("updates", &window()).await.unwrap();
    let seen = exchange.lock().unwrap().queries.pop().unwrap();
    assert_eq!(seen.get("updates_only").map(String::as_str), Some("1"));
    assert_eq!(seen.get("days").map(String::as_str), Some("2"));
    assert!(!seen.contains_key("start_date"));

    exchange.lock().unwrap().reply = Some((
        StatusCode::OK,
        "application/json",
        fixture!("status_codes.json"),
    ));
    assert_eq!(allesgo.status_catalog().await.unwrap().len(), 5);

    exchange.lock().unwrap().reply = Some((StatusCode::OK, "text/html", fixture!("html.html")));
    let error = allesgo.fetch_page("new", &window()).await.unwrap_err();
    assert!(
        matches!(error, MarketplaceError::Malformed { .. }),
        "{error}"
    );

    exchange.lock().unwrap().reply = Some((
        StatusCode::OK,
        "application/json",
        fixture!("error_plain.json"),
    ));
    let error = allesgo.fetch_page("new", &window()).await.unwrap_err();
    assert!(
        matches!(&error, MarketplaceError::Rejected { status: None, message, .. } if message.starts_with("Geçersiz")),
        "{error}"
    );

    exchange.lock().unwrap().reply = Some((
        StatusCode::UNAUTHORIZED,
        "application/json",
        r#"{"error": {"message": "access_token tok-9f8e7d6c5b4a süresi doldu"}}"#,
    ));
    let error = allesgo.fetch_page("new", &window()).await.unwrap_err();
    assert!(
        matches!(error, MarketplaceError::Unauthorized { status: 401, .. }),
        "{error}"
    );
    assert!(!format!("{error} {error:?}").contains(TOKEN), "{error:?}");

    let error = allesgo.fetch_page("sales", &window()).await.unwrap_err();
    assert!(matches!(error, MarketplaceError::Rejected { .. }));
}
