use std::num::NonZeroU32;
use std::str::FromStr;
use std::sync::{Arc, Mutex};

use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::post;
use chrono::TimeZone;
use rust_decimal::Decimal;

use super::wire::{Problem, api_message, parse_orders};
use super::*;
use crate::domain::{MarketplaceKind, Order};
use crate::http::{HttpSettings, Redactor};

macro_rules! fixture {
    ($name:literal) => {
        include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/c2c/",
            $name
        ))
    };
}

const API_KEY: &str = "key-1a2b3c4d5e";
const API_PASSWORD: &str = "pw-Ş3cr3t!";

fn dec(s: &str) -> Decimal {
    Decimal::from_str(s).unwrap()
}

fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, mo, d, h, mi, s).unwrap()
}

fn parse(body: &str) -> Result<Vec<Order>, Problem> {
    parse_orders(
        body.as_bytes(),
        &Statuses::new(&HashMap::new()),
        &Redactor::default(),
    )
}

#[test]
fn orders_by_date_are_read_in_full() {
    let orders = parse(fixture!("orders_date.json")).unwrap();
    assert_eq!(orders.len(), 2);

    let o = &orders[0];
    assert_eq!(o.external_id, "C2C-100234");
    assert_eq!(o.state, OrderState::Shipped);
    assert_eq!(o.status.text.as_deref(), Some("Kargoya Verildi"));
    assert_eq!(o.status.code, None);
    // 11:12 in Istanbul is 08:12 UTC.
    assert_eq!(o.placed_at, Some(utc(2019, 10, 5, 8, 12, 0)));
    assert_eq!(
        o.total_amount.map(|d| d.to_string()).as_deref(),
        Some("65.0")
    );
    assert_eq!(o.shipping_amount, Some(dec("15")));
    assert_eq!(
        o.currency.as_ref().map(|c| (c.raw.as_str(), c.iso)),
        Some(("TL", Some("TRY")))
    );
    assert_eq!(o.customer_name.as_deref(), Some("Şükrü Öztürk"));
    assert_eq!(
        o.customer_email.as_deref(),
        Some("sukru.ozturk@example.com")
    );
    assert_eq!(o.source_updated_at, None);
    let l = &o.lines[0];
    assert_eq!(l.external_id, "1");
    assert_eq!(l.product_name.as_deref(), Some("Işıl Işıl Orkide – Beyaz"));
    assert_eq!(
        (l.quantity, l.unit_price, l.total_price),
        (dec("1"), Some(dec("50")), Some(dec("50")))
    );
    assert_eq!(l.state, OrderState::Shipped);
    assert_eq!(l.package_external_id.as_deref(), Some("YK-998877"));
    let p = &o.packages[0];
    assert_eq!(p.tracking_number.as_deref(), Some("YK-998877"));
    assert_eq!(p.carrier.as_deref(), Some("Yurtiçi Kargo"));
    assert_eq!(p.raw.value()["urunKargoTeslimTarihi"], "07.10.2019");

    let o = &orders[1];
    assert_eq!(o.state, OrderState::Disputed, "X - İtiraz Edildi");
    assert_eq!(
        o.status.text.as_deref(),
        Some("Hazırlanıyor - İtiraz Edildi")
    );
    assert_eq!(o.placed_at, Some(utc(2023, 12, 31, 20, 59, 0)));
    assert_eq!(o.customer_email, None);
    assert_eq!(o.currency.as_ref().and_then(|c| c.iso), Some("EUR"));
    assert_eq!(o.total_amount, Some(dec("1247.79")));
    assert_eq!(o.lines.len(), 3);
    assert_eq!(
        o.lines[0].total_price,
        Some(dec("0.30000000000000004")),
        "exact literal"
    );
    assert_eq!(o.lines[0].package_external_id, None);
    // Lines sharing a tracking number form one package.
    assert_eq!(o.packages.len(), 1);
    assert_eq!(o.packages[0].external_id, "MNG-55");
    assert_eq!(o.packages[0].total_amount, Some(dec("1247.49")));
    assert_eq!(o.packages[0].state, OrderState::Disputed);
}

#[test]
fn raw_keeps_the_order_exactly_as_received() {
    let orders = parse(fixture!("orders_date.json")).unwrap();
    let sent: Value = serde_json::from_str(fixture!("orders_date.json")).unwrap();
    assert_eq!(orders[0].raw, sent[0]);
    assert_eq!(orders[1].lines[1].raw, sent[1]["siparisUrunleri"][1]);
    let text = orders[0].raw.to_string();
    assert!(text.contains("\"siparisUyeIsYeri\":23.19"), "{text}");
    assert!(text.contains("\"urunFiyat\":50.0"), "{text}");
}

#[test]
fn composite_and_unknown_statuses() {
    let orders = parse(fixture!("order_info.json")).unwrap();
    assert_eq!(orders[0].state, OrderState::Cancelled, "X - İptal Edildi");
    assert_eq!(orders[0].placed_at, Some(utc(2024, 5, 1, 6, 5, 30)));
    assert!(orders[0].packages.is_empty());

    let orders = parse(fixture!("unknown_status.json")).unwrap();
    let o = &orders[0];
    assert_eq!(o.external_id, "100237");
    assert_eq!(o.state, OrderState::Unknown);
    assert_eq!(o.status.text.as_deref(), Some("Kuryede Bekliyor"));
    assert_eq!(
        o.currency.as_ref().map(|c| (c.raw.as_str(), c.iso)),
        Some(("GBX", None))
    );
    assert_eq!(o.shipping_amount, None);
}

#[test]
fn status_texts_map_as_the_digest_says() {
    let s = Statuses::new(&HashMap::new());
    let cases = [
        ("Tamamlanmamış", OrderState::AwaitingPayment),
        ("Ödeme Bekliyor", OrderState::AwaitingPayment),
        ("Ödeme\nBekliyor", OrderState::AwaitingPayment),
        ("ONAY BEKLİYOR", OrderState::AwaitingApproval),
        ("Tedarik sürecinde", OrderState::Preparing),
        ("Teslim Edildi", OrderState::Delivered),
        ("Tamamlandı", OrderState::Completed),
        ("Sipariş Tamamlandı", OrderState::Completed),
        ("İptal Edildi", OrderState::Cancelled),
        ("İtiraz Edildi", OrderState::Disputed),
        ("Tamamlandı - İtiraz Edildi", OrderState::Disputed),
        ("İptal Edildi - İtiraz Edildi", OrderState::Disputed),
        ("Teslim Edildi - İptal Edildi", OrderState::Cancelled),
        ("Bilinmeyen", OrderState::Unknown),
    ];
    for (text, want) in cases {
        assert_eq!(s.state(text), want, "{text}");
    }
    let mut overrides = HashMap::new();
    overrides.insert(
        "Kargoya Verildi - İtiraz Edildi".to_owned(),
        OrderState::Shipped,
    );
    let s = Statuses::new(&overrides);
    assert_eq!(
        s.state("Kargoya Verildi - İtiraz Edildi"),
        OrderState::Shipped
    );
}

#[test]
fn an_empty_array_is_no_orders() {
    assert!(parse(fixture!("empty.json")).unwrap().is_empty());
    assert!(parse("null").unwrap().is_empty());
}

#[test]
fn an_error_object_is_a_rejection() {
    assert_eq!(
        parse(fixture!("error_hata.json")),
        Err(Problem::Rejected(
            "Girilen ApiKey veya ApiPassword hatalı. Lütfen bilgilerinizi kontrol ediniz."
                .to_owned()
        ))
    );
    assert_eq!(
        parse(fixture!("error_dotnet.json")),
        Err(Problem::Rejected("An error has occurred.".to_owned()))
    );
    assert_eq!(
        parse(fixture!("error_unknown_shape.json")),
        Err(Problem::Rejected(r#"{"Durum":false,"Kod":17}"#.to_owned()))
    );
    assert_eq!(
        api_message(fixture!("error_hata.json").as_bytes()).as_deref(),
        Some("Girilen ApiKey veya ApiPassword hatalı. Lütfen bilgilerinizi kontrol ediniz.")
    );
    assert_eq!(api_message(b"[]"), None);
}

#[test]
fn garbage_is_malformed_never_a_panic() {
    for body in [
        fixture!("truncated.json"),
        fixture!("bad_date.json"),
        "",
        "<html><body>Hata</body></html>",
        "\"ok\"",
        "[1, 2]",
        r#"[{"siparisTarihi": "05.10.2019 11:12"}]"#,
        r#"[{"siparisKodu": "A", "siparisUrunleri": [{"urunAdi": "x"}]}]"#,
        r#"[{"siparisKodu": "A", "siparisToplamTutar": "bedava"}]"#,
        r#"[{"siparisKodu": "A", "siparisUrunleri": {"urunAdi": "x"}}]"#,
    ] {
        let result = parse(body);
        assert!(
            matches!(result, Err(Problem::Malformed(_))),
            "{body}: {result:?}"
        );
    }
}

#[test]
fn echoed_credentials_are_scrubbed_from_raw() {
    let body = format!(
        r#"[{{"siparisKodu": "A", "ApiKey": "{API_KEY}", "siparisNotu": "{API_PASSWORD}", "siparisUrunleri": []}}]"#
    );
    let orders = parse_orders(
        body.as_bytes(),
        &Statuses::new(&HashMap::new()),
        &Redactor::new(vec![API_KEY.into(), API_PASSWORD.into()]),
    )
    .unwrap();
    let raw = orders[0].raw.to_string();
    assert!(
        !raw.contains(API_KEY) && !raw.contains(API_PASSWORD),
        "{raw}"
    );
    assert_eq!(orders[0].raw.value()["siparisNotu"], "***");
}

#[test]
fn window_dates_round_outwards_to_the_minute_in_istanbul() {
    let (start, end) = window_dates(
        utc(2024, 5, 1, 10, 0, 59) + TimeDelta::milliseconds(999),
        utc(2024, 5, 2, 10, 0, 1),
    );
    assert_eq!(
        (start.as_str(), end.as_str()),
        ("01.05.2024 13:00", "02.05.2024 13:01")
    );
    let (start, end) = window_dates(utc(2024, 12, 31, 21, 0, 0), utc(2024, 12, 31, 21, 30, 0));
    assert_eq!(
        (start.as_str(), end.as_str()),
        ("01.01.2025 00:00", "01.01.2025 00:30")
    );
    let (_, end) = window_dates(
        utc(2024, 5, 1, 10, 0, 0),
        utc(2024, 5, 1, 10, 5, 0) + TimeDelta::nanoseconds(1),
    );
    assert_eq!(end, "01.05.2024 13:06");
}

#[test]
fn bodies_carry_credentials_and_the_method_fields() {
    let auth = Auth {
        domain: "www.magaza.com.tr".into(),
        api_key: Secret::new(API_KEY),
        api_password: Secret::new(API_PASSWORD),
    };
    let body = request_body(&auth, json!({ "SiparisKodlari": ["A-1", "A-2"] }));
    assert_eq!(
        body,
        json!({
            "Domain": "www.magaza.com.tr",
            "ApiKey": API_KEY,
            "ApiPassword": API_PASSWORD,
            "SiparisKodlari": ["A-1", "A-2"],
        })
    );
}

#[test]
fn method_paths_are_appended_to_the_base_url() {
    for base in ["https://kmk.apiservisi.com", "https://kmk.apiservisi.com/"] {
        assert_eq!(
            method_url(&Url::parse(base).unwrap(), "GetOrdersDate").as_str(),
            "https://kmk.apiservisi.com/api/c2c/StoreOrderServices/GetOrdersDate"
        );
    }
    assert_eq!(
        method_url(&Url::parse("http://127.0.0.1:9/c2c/").unwrap(), "GetAll").as_str(),
        "http://127.0.0.1:9/c2c/api/c2c/StoreOrderServices/GetAll"
    );
}

/// What the stand-in service saw and should answer.
#[derive(Default)]
struct Exchange {
    calls: Vec<(String, Value)>,
    reply: Option<(StatusCode, &'static str, &'static str)>,
}

type Shared = Arc<Mutex<Exchange>>;

async fn stand_in(
    State(exchange): State<Shared>,
    Path(method): Path<String>,
    axum::Json(body): axum::Json<Value>,
) -> impl IntoResponse {
    let mut exchange = exchange.lock().unwrap();
    exchange.calls.push((method, body));
    let (status, content_type, body) = exchange.reply.unwrap_or((
        StatusCode::OK,
        "application/json; charset=utf-8",
        fixture!("orders_date.json"),
    ));
    (status, [(header::CONTENT_TYPE, content_type)], body)
}

async fn serve() -> (C2c, Shared) {
    let exchange = Shared::default();
    let app = axum::Router::new()
        .route("/c2c/api/c2c/StoreOrderServices/{method}", post(stand_in))
        .with_state(exchange.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let account = AccountConfig {
        name: "cicekci".into(),
        marketplace: MarketplaceKind::C2c,
        base_url: Url::parse(&format!("http://{addr}/c2c")).unwrap(),
        enabled: true,
        schedule: "0 */5 * * * *".into(),
        initial_sync_days: 7,
        overlap: Duration::from_secs(300),
        page_size: 25,
        requests_per_second: NonZeroU32::new(50).unwrap(),
        timeout: Duration::from_secs(5),
        credentials: Credentials::C2c {
            domain: "www.magaza.com.tr".into(),
            api_key: Secret::new(API_KEY),
            api_password: Secret::new(API_PASSWORD),
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
    (C2c::new(&account, http, &HashMap::new()), exchange)
}

fn request(order_ids: &[&str]) -> PageRequest {
    PageRequest {
        from: utc(2024, 5, 1, 10, 0, 0),
        to: utc(2024, 5, 2, 10, 0, 0),
        page: None,
        page_size: 25,
        order_ids: order_ids.iter().map(|s| (*s).to_owned()).collect(),
        changed_since: None,
        stored: None,
    }
}

#[tokio::test]
async fn exchanges_with_a_stand_in_service() {
    let (c2c, exchange) = serve().await;
    assert_eq!(c2c.streams()[1].plan, StreamPlan::OpenOrders { batch: 25 });

    let page = c2c.fetch_page("new", &request(&[])).await.unwrap();
    assert_eq!((page.orders.len(), page.next, page.requests), (2, None, 1));
    let (method, body) = exchange.lock().unwrap().calls.pop().unwrap();
    assert_eq!(method, "GetOrdersDate");
    assert_eq!(body["Domain"], "www.magaza.com.tr");
    assert_eq!(body["ApiKey"], API_KEY);
    assert_eq!(body["ApiPassword"], API_PASSWORD);
    assert_eq!(body["BaslangicTarihi"], "01.05.2024 13:00");
    assert_eq!(body["BitisTarihi"], "02.05.2024 13:00");

    exchange.lock().unwrap().reply = Some((
        StatusCode::OK,
        "application/json",
        fixture!("order_info.json"),
    ));
    let page = c2c
        .fetch_page("status", &request(&["C2C-100236", "C2C-9"]))
        .await
        .unwrap();
    assert_eq!(page.orders[0].external_id, "C2C-100236");
    let (method, body) = exchange.lock().unwrap().calls.pop().unwrap();
    assert_eq!(method, "GetOrderInfoByOrdersCode");
    assert_eq!(body["SiparisKodlari"], json!(["C2C-100236", "C2C-9"]));

    let page = c2c.fetch_page("status", &request(&[])).await.unwrap();
    assert_eq!((page.orders.len(), page.requests), (0, 0));

    exchange.lock().unwrap().reply = Some((
        StatusCode::OK,
        "application/json",
        fixture!("error_hata.json"),
    ));
    let error = c2c.fetch_page("new", &request(&[])).await.unwrap_err();
    assert!(
        matches!(&error, MarketplaceError::Rejected { status: None, message, .. } if message.starts_with("Girilen")),
        "{error}"
    );

    exchange.lock().unwrap().reply = Some((StatusCode::OK, "text/html", "<html>Bakımdayız</html>"));
    let error = c2c.fetch_page("new", &request(&[])).await.unwrap_err();
    assert!(
        matches!(error, MarketplaceError::Malformed { .. }),
        "{error}"
    );

    exchange.lock().unwrap().reply = Some((
        StatusCode::BAD_REQUEST,
        "application/json",
        r#"{"hata": "ApiKey key-1a2b3c4d5e geçersiz"}"#,
    ));
    let error = c2c.fetch_page("new", &request(&[])).await.unwrap_err();
    assert!(
        matches!(&error, MarketplaceError::Rejected { status: Some(400), message, .. } if message == "ApiKey *** geçersiz"),
        "{error:?}"
    );
    let text = format!("{error} {error:?}");
    assert!(
        !text.contains(API_KEY) && !text.contains(API_PASSWORD),
        "{text}"
    );

    let error = c2c.fetch_page("sales", &request(&[])).await.unwrap_err();
    assert!(matches!(error, MarketplaceError::Rejected { .. }));
}
