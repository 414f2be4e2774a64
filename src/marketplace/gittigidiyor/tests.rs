//! Tests of the GittiGidiyor adapter: request building, the recorded response fixtures, and one
//! end-to-end exchange with a local HTTP server standing in for the service.

use std::collections::VecDeque;
use std::num::NonZeroU32;
use std::str::FromStr;
use std::sync::{Arc, Mutex};

use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use chrono::TimeZone;
use rust_decimal::Decimal;
use serde_json::json;

use super::wire::{ResponseError, SalesPage, parse_response, sale_to_order};
use super::*;
use crate::domain::MarketplaceKind;

macro_rules! fixture {
    ($name:literal) => {
        include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/gittigidiyor/",
            $name
        ))
    };
}

const SALES_ONE: &str = fixture!("sales_one.xml");
const SALES_MANY: &str = fixture!("sales_many.xml");
const SALES_EMPTY: &str = fixture!("sales_empty.xml");
const BARE_RESPONSE: &str = fixture!("bare_response.xml");
const ACK_FAILURE: &str = fixture!("ack_failure.xml");
const FAULT: &str = fixture!("fault.xml");

const API_KEY: &str = "BVFMj7BXV5fEEuVh8KEAgMAeJMRNDJY6";
const SECRET_KEY: &str = "S3cr3tK3y0123456789ab";
const ROLE_NAME: &str = "rol-adı";
const ROLE_PASSWORD: &str = "P4ss-w0rd-Örnek";

fn statuses() -> StatusMap {
    StatusMap::new(DEFAULT_STATUSES, &HashMap::new())
}

fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, mo, d, h, mi, s).unwrap()
}

fn dec(text: &str) -> Decimal {
    Decimal::from_str(text).unwrap()
}

fn page(body: &str) -> SalesPage {
    parse_response(body.as_bytes()).unwrap()
}

fn orders(body: &str) -> Vec<crate::domain::Order> {
    page(body)
        .sales
        .into_iter()
        .map(|s| sale_to_order(s, &statuses()).unwrap())
        .collect()
}

#[test]
fn signature_is_lowercase_hex_md5_of_key_secret_and_time() {
    // Pinned with `printf '%s' "$API_KEY$SECRET_KEY$TIME" | md5sum`.
    assert_eq!(
        sign(API_KEY, SECRET_KEY, 1586254267097),
        "8f71682dbfcc6512bfed1dcafd9a620f"
    );
    assert_eq!(sign("a", "b", 0), "449f2a4c69b93a105441494833db68e5");
    assert_ne!(sign(API_KEY, SECRET_KEY, 1), sign(API_KEY, SECRET_KEY, 2));
}

#[test]
fn envelope_lists_the_parameters_in_order_unqualified() {
    let call = wire::GetSalesByDateRange {
        api_key: "KEY",
        sign: "abc123",
        time: 1586254267097,
        with_data: true,
        by_status: "",
        by_user: "",
        order_by: "A",
        order_type: "D",
        start_date: "01/03/2020 00:00:00",
        end_date: "07/04/2020 23:59:00",
        page_number: 2,
        page_size: 100,
        lang: "tr",
    };
    assert_eq!(
        wire::envelope(&call).unwrap(),
        concat!(
            r#"<?xml version="1.0" encoding="UTF-8"?>"#,
            r#"<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" "#,
            r#"xmlns:sale="http://sale.individual.ws.listingapi.gg.com"><soapenv:Body>"#,
            "<sale:getSalesByDateRange><apiKey>KEY</apiKey><sign>abc123</sign><time>1586254267097</time>",
            "<withData>true</withData><byStatus/><byUser/><orderBy>A</orderBy><orderType>D</orderType>",
            "<startDate>01/03/2020 00:00:00</startDate><endDate>07/04/2020 23:59:00</endDate>",
            "<pageNumber>2</pageNumber><pageSize>100</pageSize><lang>tr</lang>",
            "</sale:getSalesByDateRange></soapenv:Body></soapenv:Envelope>"
        )
    );
}

#[test]
fn window_dates_are_istanbul_time_widened_to_whole_seconds() {
    let from = utc(2024, 5, 1, 7, 0, 0) + TimeDelta::milliseconds(900);
    let to = utc(2024, 5, 2, 20, 59, 59) + TimeDelta::milliseconds(1);
    assert_eq!(format_start(from), "01/05/2024 10:00:00");
    assert_eq!(format_end(to), "03/05/2024 00:00:00");
    assert_eq!(format_end(utc(2024, 5, 2, 7, 0, 0)), "02/05/2024 10:00:00");
}

#[test]
fn page_tokens_are_page_numbers_from_one() {
    assert_eq!(page_number("2"), Some(2));
    assert_eq!(page_number("0"), None);
    assert_eq!(page_number("-1"), None);
    assert_eq!(page_number("https://evil.example/"), None);
}

#[test]
fn one_sale_page_is_one_order() {
    let page = page(SALES_ONE);
    assert!(page.next_page_available);
    let orders = orders(SALES_ONE);
    assert_eq!(orders.len(), 1);
    let o = &orders[0];
    assert_eq!(o.external_id, "SC12345678");
    assert_eq!(o.state, OrderState::Returned);
    assert_eq!(o.status.code.as_deref(), Some("STATUS_GIVEN_BACK_PAYMENT"));
    assert_eq!(
        o.status.text.as_deref(),
        Some("Ürün bedeli tarafınıza iade edilmiştir.")
    );
    assert_eq!(o.total_amount, Some(dec("0.1")));
    assert_eq!(o.currency.as_ref().and_then(|c| c.iso), Some("TRY"));
    assert_eq!(o.customer_name.as_deref(), Some("ad soyad"));
    assert_eq!(o.customer_email, None);
    assert_eq!(o.shipping_city.as_deref(), Some("il"));
    assert_eq!(o.placed_at, None);
    // 06/04/2020 12:06:17 in Istanbul (UTC+3).
    assert_eq!(o.source_updated_at, Some(utc(2020, 4, 6, 9, 6, 17)));
    let line = &o.lines[0];
    assert_eq!(line.sku.as_deref(), Some("102gdktest"));
    assert_eq!(
        line.product_name.as_deref(),
        Some("__ggtest API test ürünü")
    );
    assert_eq!(
        (line.quantity, line.unit_price),
        (dec("1"), Some(dec("0.1")))
    );
    // `<shippingInfo/>` is empty: the package comes from the sale's group shipment code.
    assert_eq!(o.packages.len(), 1);
    assert_eq!(o.packages[0].external_id, "GGK12345678");
    assert_eq!(o.packages[0].raw, json!({"cargoCode": "GGK12345678"}));
    assert_eq!(line.package_external_id.as_deref(), Some("GGK12345678"));
}

#[test]
fn sale_converts_to_json_faithfully() {
    let o = &orders(SALES_ONE)[0];
    assert_eq!(
        o.raw,
        json!({
            "saleCode": "SC12345678",
            "status": "Ürün bedeli tarafınıza iade edilmiştir.",
            "statusCode": "STATUS_GIVEN_BACK_PAYMENT",
            "productId": "123456789",
            "productTitle": "__ggtest API test ürünü",
            "price": "0.1",
            "cargoPayment": "Satıcı Öder",
            "cargoCode": "GGK12345678",
            "amount": "1",
            "endDate": "10/03/2020 10:37:58",
            "buyerInfo": {
                "username": "testdenem2",
                "name": "ad",
                "surname": "soyad",
                "phone": "111 1111111",
                "mobilePhone": "111-1111111",
                "address": "kullanıcı adresi",
                "district": "ilçe",
                "city": "il",
                "zipCode": ""
            },
            "thumbImageLink": "https://mcdn01.gittigidiyor.net/53834/tn9/538349345_tn9_0.jpg",
            "lastActionDate": "06/04/2020 12:06:17",
            "invoiceInfo": {
                "fullname": "ad soyad",
                "address": "kullanıcı adresi",
                "district": "ilçe",
                "cityCode": "13",
                "zipCode": "34800",
                "phoneNumber": "1111111111",
                "companyTitle": "",
                "tcCertificate": "11111111111"
            },
            "variantId": "0",
            "itemId": "102gdktest",
            "shippingInfo": ""
        })
    );
    assert_eq!(
        o.lines[0].raw,
        json!({
            "productId": "123456789",
            "productTitle": "__ggtest API test ürünü",
            "price": "0.1",
            "amount": "1",
            "variantId": "0",
            "itemId": "102gdktest",
            "thumbImageLink": "https://mcdn01.gittigidiyor.net/53834/tn9/538349345_tn9_0.jpg",
            "endDate": "10/03/2020 10:37:58"
        })
    );
}

#[test]
fn a_newest_first_page_ends_the_window_only_past_changed_since() {
    let mut page = orders(SALES_MANY);
    let at = |hour| Some(utc(2024, 5, 1, hour, 0, 0));
    for (order, hour) in page.iter_mut().zip([12, 11, 9]) {
        order.source_updated_at = at(hour);
    }
    assert!(older_than(&page, utc(2024, 5, 1, 10, 0, 0)));
    assert!(!older_than(&page, utc(2024, 5, 1, 9, 0, 0)));
    // Not newest first: the service ignored `orderType`, so the order says nothing about later pages.
    page.swap(0, 1);
    assert!(!older_than(&page, utc(2024, 5, 1, 10, 0, 0)));
    page.swap(0, 1);
    page[1].source_updated_at = None;
    assert!(!older_than(&page, utc(2024, 5, 1, 10, 0, 0)));
    assert!(!older_than(&[], utc(2024, 5, 1, 10, 0, 0)));
}

#[test]
fn many_sales_page_keeps_turkish_text_amounts_and_combined_shipping() {
    assert!(!page(SALES_MANY).next_page_available);
    let orders = orders(SALES_MANY);
    assert_eq!(orders.len(), 3);

    let first = &orders[0];
    assert_eq!(first.state, OrderState::Approved);
    assert_eq!(first.customer_name.as_deref(), Some("Şükrü Öztürk"));
    assert_eq!(
        first.customer_email.as_deref(),
        Some("sukru@example.com.tr")
    );
    assert_eq!(first.shipping_city.as_deref(), Some("İstanbul"));
    let line = &first.lines[0];
    assert_eq!(
        line.product_name.as_deref(),
        Some("Çiçekli Şal & Eşarp — İpek Görünümlü Ğ ü ö ı")
    );
    // 1249.990 × 2, exact and with the literal's scale.
    assert_eq!(
        line.unit_price.map(|p| p.to_string()).as_deref(),
        Some("1249.990")
    );
    assert_eq!(
        first.total_amount.map(|p| p.to_string()).as_deref(),
        Some("2499.980")
    );
    assert_eq!(first.packages[0].external_id, "GGK90307978");
    assert_eq!(first.packages[0].carrier.as_deref(), Some("JETIZZ"));
    assert_eq!(
        first.raw.value()["shippingInfo"]["combinedSaleCodes"]["saleCode"],
        json!(["SC115713830", "SC115713831"])
    );
    assert_eq!(first.packages[0].raw, first.raw.value()["shippingInfo"]);

    let second = &orders[1];
    assert_eq!(
        second.lines[0].product_name.as_deref(),
        Some("Işıklı Ayna <Büyük> 50 cm")
    );
    assert_eq!(second.total_amount, Some(dec("89.90")));
    // An empty `<itemId/>` falls back to the product id.
    assert_eq!(second.lines[0].sku.as_deref(), Some("611234568"));
    // Without seconds.
    assert_eq!(second.source_updated_at, Some(utc(2020, 12, 25, 5, 59, 0)));
    assert_eq!(second.packages[0].carrier.as_deref(), Some("Yurtiçi Kargo"));

    let third = &orders[2];
    assert_eq!(third.state, OrderState::Unknown);
    assert_eq!(third.status.code.as_deref(), Some("STATUS_SOMETHING_NEW"));
    assert_eq!(third.customer_name.as_deref(), Some("Gülşah İnce"));
    assert_eq!(third.total_amount, Some(dec("45")));
    assert!(third.packages.is_empty());
    assert_eq!(third.lines[0].package_external_id, None);
}

#[test]
fn operator_overrides_win() {
    let mut overrides = HashMap::new();
    overrides.insert("STATUS_SOMETHING_NEW".to_owned(), OrderState::OnHold);
    let map = StatusMap::new(DEFAULT_STATUSES, &overrides);
    let sale = page(SALES_MANY).sales.remove(2);
    assert_eq!(sale_to_order(sale, &map).unwrap().state, OrderState::OnHold);
}

#[test]
fn empty_and_bare_responses() {
    assert_eq!(
        page(SALES_EMPTY),
        SalesPage {
            sales: vec![],
            next_page_available: false
        }
    );
    let bare = orders(BARE_RESPONSE);
    assert_eq!(bare.len(), 1);
    assert_eq!(bare[0].external_id, "SC12345678");
}

#[test]
fn ack_failure_is_rejected_with_code_and_message() {
    assert_eq!(
        parse_response(ACK_FAILURE.as_bytes()),
        Err(ResponseError::Rejected(
            "ERROR_SIGN_INVALID: İmza (sign) geçersiz; zaman değerini kontrol ediniz.".to_owned()
        ))
    );
}

#[test]
fn soap_fault_is_rejected_with_faultstring() {
    let expected = "SOAP Fault: Unmarshalling Error: Geçersiz tarih biçimi: 2024-05-01";
    assert_eq!(
        parse_response(FAULT.as_bytes()),
        Err(ResponseError::Rejected(expected.to_owned()))
    );
    assert_eq!(wire::fault_in(FAULT.as_bytes()).as_deref(), Some(expected));
    assert_eq!(wire::fault_in(SALES_ONE.as_bytes()), None);
}

#[test]
fn a_fault_behind_http_500_is_a_rejection_and_a_bare_500_stays_transient() {
    let transient = |detail: &str| MarketplaceError::Transient {
        what: "w".into(),
        detail: detail.into(),
        retry_after: None,
        ambiguous: false,
    };
    let fault = fault_is_rejection(transient("HTTP 500: SOAP Fault: bad date"));
    assert!(matches!(
        fault,
        MarketplaceError::Rejected { status: Some(500), ref message, .. } if message == "SOAP Fault: bad date"
    ));
    let plain = fault_is_rejection(transient("HTTP 500: <html>oops</html>"));
    assert!(matches!(plain, MarketplaceError::Transient { .. }));
}

#[test]
fn garbage_and_truncated_bodies_are_malformed() {
    let malformed = |body: &[u8]| matches!(parse_response(body), Err(ResponseError::Malformed(_)));
    for body in [
        &b""[..],
        b"not xml at all",
        b"{\"ackCode\":\"success\"}",
        b"<html><body>502 Bad Gateway</body></html>",
        b"<S:Envelope xmlns:S=\"http://schemas.xmlsoap.org/soap/envelope/\"><S:Body/></S:Envelope>",
        b"<Envelope><Body><x/></Body></Envelope>",
    ] {
        assert!(malformed(body), "{}", String::from_utf8_lossy(body));
    }
    let end = SALES_MANY.trim_end().len();
    for cut in 0..end {
        assert!(malformed(&SALES_MANY.as_bytes()[..cut]), "cut at {cut}");
    }
}

/// `depth` nested `<a>` (about 7 bytes a level).
fn nested(depth: usize) -> String {
    format!("{}{}", "<a>".repeat(depth), "</a>".repeat(depth))
}

#[test]
fn deeply_nested_bodies_are_malformed_not_a_stack_overflow() {
    let too_deep = format!("elements nested more than {} levels deep", xml::MAX_DEPTH);
    // 60,000 is within quick-xml's own limit (65,535 levels): without a limit of our own, that tree
    // would be built whole and overflow the stack when dropped.
    for depth in [60_000, 100_000] {
        let bare = nested(depth);
        let in_a_fault = format!(
            r#"<S:Envelope xmlns:S="{}"><S:Body><S:Fault><faultstring>x</faultstring><detail>{bare}</detail></S:Fault></S:Body></S:Envelope>"#,
            wire::SOAP_ENV
        );
        for body in [&bare, &in_a_fault] {
            assert_eq!(
                parse_response(body.as_bytes()),
                Err(ResponseError::Malformed(too_deep.clone()))
            );
            assert_eq!(wire::fault_in(body.as_bytes()), None);
        }
    }
}

/// A bare response holding one sale whose `<n>` elements nest down to level `depth`, each level
/// holding two `<n>` (an array in JSON) and the deepest an attribute: the sale's JSON as deep as
/// that depth allows.
fn sale_nested_to(depth: usize) -> String {
    // The response, `return`, `sales` and `sale` are levels 1 to 4.
    let chain = depth - 5;
    format!(
        r#"<getSalesByDateRangeResponse><return><ackCode>success</ackCode><sales><sale><saleCode>SC1</saleCode><amount>1</amount>{}<n k="v"/><n/>{}</sale></sales></return></getSalesByDateRangeResponse>"#,
        "<n>".repeat(chain),
        "</n><n/>".repeat(chain)
    )
}

#[test]
fn a_sale_nested_to_the_limit_parses_and_its_raw_payload_reads_back() {
    let orders = orders(&sale_nested_to(xml::MAX_DEPTH));
    // What reading the payload back from the store does: serde_json with its default recursion limit.
    let raw: serde_json::Value = serde_json::from_str(orders[0].raw.json()).unwrap();
    let mut deepest = &raw;
    for _ in 0..xml::MAX_DEPTH - 4 {
        deepest = &deepest["n"][0];
    }
    assert_eq!(deepest, &json!({"@k": "v"}));
    assert!(matches!(
        parse_response(sale_nested_to(xml::MAX_DEPTH + 1).as_bytes()),
        Err(ResponseError::Malformed(_))
    ));
}

#[test]
fn bad_sale_fields_are_reasons_not_panics() {
    let with = |key: &str, value: serde_json::Value| {
        let mut sale = page(SALES_ONE).sales.remove(0);
        sale[key] = value;
        sale_to_order(sale, &statuses())
    };
    assert!(with("price", json!("1.234,50")).is_err());
    assert!(with("price", json!("on ikı")).is_err());
    assert!(with("amount", json!("")).is_err());
    assert!(with("lastActionDate", json!("2020-04-06T12:06:17")).is_err());
    assert!(with("saleCode", json!("")).is_err());
    assert!(with("saleCode", json!(["SC1", "SC2"])).is_err());
    assert!(with("buyerInfo", json!("unexpected text")).is_err());
    assert!(with("price", json!("79228162514264337593543950335")).is_ok());
}

#[test]
fn content_types() {
    assert!(is_xml("text/xml; charset=utf-8"));
    assert!(is_xml("Application/SOAP+XML"));
    assert!(!is_xml("text/html; charset=utf-8"));
}

/// What the stand-in service received and what it answers next. An answer may echo its request:
/// `{sign}` in it becomes the request's `sign`, `{credential}` its basic-auth credential.
#[derive(Default)]
struct Exchange {
    requests: Vec<(HeaderMap, String)>,
    responses: VecDeque<(StatusCode, &'static str, String)>,
}

async fn stand_in(
    axum::extract::State(exchange): axum::extract::State<Arc<Mutex<Exchange>>>,
    headers: HeaderMap,
    body: String,
) -> (StatusCode, [(&'static str, &'static str); 1], String) {
    let (sign, credential) = echoed(&headers, &body);
    let mut exchange = exchange.lock().unwrap();
    exchange.requests.push((headers, body));
    let (status, content_type, answer) = exchange.responses.pop_front().unwrap();
    let answer = answer
        .replace("{sign}", &sign)
        .replace("{credential}", &credential);
    (status, [("content-type", content_type)], answer)
}

/// A request's `sign` and basic-auth credential, as sent.
fn echoed(headers: &HeaderMap, body: &str) -> (String, String) {
    let sign = body
        .split_once("<sign>")
        .and_then(|(_, rest)| rest.split_once("</sign>"))
        .map(|(sign, _)| sign.to_owned())
        .unwrap_or_default();
    let credential = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .unwrap_or_default()
        .to_owned();
    (sign, credential)
}

fn account(base_url: &str) -> AccountConfig {
    AccountConfig {
        name: "gg-test".into(),
        marketplace: MarketplaceKind::Gittigidiyor,
        base_url: Url::parse(base_url).unwrap(),
        enabled: true,
        schedule: "0 */5 * * * *".into(),
        initial_sync_days: 7,
        overlap: Duration::from_secs(600),
        page_size: 100,
        requests_per_second: NonZeroU32::new(50).unwrap(),
        timeout: Duration::from_secs(5),
        credentials: Credentials::Gittigidiyor {
            api_key: Secret::new(API_KEY),
            secret_key: Secret::new(SECRET_KEY),
            username: ROLE_NAME.into(),
            password: Secret::new(ROLE_PASSWORD),
            lang: "tr".into(),
        },
    }
}

/// Starts the stand-in service; the endpoint to give an account.
async fn serve(exchange: Arc<Mutex<Exchange>>) -> String {
    let path = "/gittigidiyor/listingapi/ws/IndividualSaleService";
    let app = axum::Router::new()
        .route(path, post(stand_in))
        .with_state(exchange);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}{path}")
}

fn adapter(endpoint: &str) -> Gittigidiyor {
    let account = account(endpoint);
    let http = HttpClient::new(
        &account.http_settings(),
        account.credentials.secret_values(),
    )
    .unwrap();
    Gittigidiyor::new(&account, http, &HashMap::new())
}

/// The first page of one day's window.
fn window_request() -> PageRequest {
    PageRequest {
        from: utc(2024, 5, 1, 7, 0, 0),
        to: utc(2024, 5, 2, 7, 0, 0),
        page: None,
        page_size: 100,
        order_ids: vec![],
        changed_since: None,
        stored: None,
    }
}

#[tokio::test]
async fn exchanges_with_a_stand_in_service() {
    let exchange = Arc::new(Mutex::new(Exchange::default()));
    let endpoint = serve(exchange.clone()).await;
    {
        let mut ex = exchange.lock().unwrap();
        let xml = "text/xml;charset=utf-8";
        ex.responses
            .push_back((StatusCode::OK, xml, SALES_ONE.into()));
        ex.responses
            .push_back((StatusCode::OK, xml, SALES_MANY.into()));
        ex.responses
            .push_back((StatusCode::INTERNAL_SERVER_ERROR, xml, FAULT.into()));
        ex.responses
            .push_back((StatusCode::OK, xml, ACK_FAILURE.into()));
        ex.responses.push_back((
            StatusCode::OK,
            "text/html",
            "<html>maintenance</html>".into(),
        ));
        ex.responses.push_back((
            StatusCode::UNAUTHORIZED,
            "text/html",
            "<html>401</html>".into(),
        ));
    }

    let gg = adapter(&endpoint);
    assert_eq!(gg.streams()[0].name, "sales");
    let mut request = window_request();

    let first = gg.fetch_page("sales", &request).await.unwrap();
    assert_eq!(
        (first.orders.len(), first.next.as_deref(), first.requests),
        (1, Some("2"), 1)
    );
    request.page = first.next;
    let second = gg.fetch_page("sales", &request).await.unwrap();
    assert_eq!((second.orders.len(), second.next), (3, None));

    let errors = [
        gg.fetch_page("sales", &request).await.unwrap_err(),
        gg.fetch_page("sales", &request).await.unwrap_err(),
        gg.fetch_page("sales", &request).await.unwrap_err(),
        gg.fetch_page("sales", &request).await.unwrap_err(),
    ];
    assert!(
        matches!(&errors[0], MarketplaceError::Rejected { status: Some(500), message, .. }
        if message.starts_with("SOAP Fault: Unmarshalling Error"))
    );
    assert!(
        matches!(&errors[1], MarketplaceError::Rejected { status: None, message, .. }
        if message.starts_with("ERROR_SIGN_INVALID: "))
    );
    assert!(
        matches!(&errors[2], MarketplaceError::Malformed { raw_body, .. }
        if raw_body == "<html>maintenance</html>")
    );
    assert!(matches!(
        &errors[3],
        MarketplaceError::Unauthorized { status: 401, .. }
    ));
    for e in &errors {
        let text = format!("{e} {e:?}");
        for secret in [API_KEY, SECRET_KEY, ROLE_PASSWORD] {
            assert!(!text.contains(secret), "{text}");
        }
    }
    assert!(matches!(
        gg.fetch_page("orders", &request).await,
        Err(MarketplaceError::Rejected { .. })
    ));

    let requests = std::mem::take(&mut exchange.lock().unwrap().requests);
    assert_eq!(requests.len(), 6);
    let mut times = Vec::new();
    for (number, (headers, body)) in requests.iter().enumerate() {
        assert_eq!(headers["content-type"], "text/xml; charset=utf-8");
        assert_eq!(headers["soapaction"], "\"\"");
        // base64("rol-adı:P4ss-w0rd-Örnek")
        assert_eq!(
            headers["authorization"],
            "Basic cm9sLWFkxLE6UDRzcy13MHJkLcOWcm5law=="
        );
        assert_eq!(
            headers["authorization"],
            format!("Basic {}", basic_credential(ROLE_NAME, ROLE_PASSWORD))
        );
        let envelope = xml::parse(body.as_bytes()).unwrap();
        assert!(envelope.is(wire::SOAP_ENV, "Envelope"));
        let call = &envelope.child("Body").unwrap().children[0];
        assert!(call.is(wire::SALE_NS, "getSalesByDateRange"));
        let names: Vec<&str> = call.children.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "apiKey",
                "sign",
                "time",
                "withData",
                "byStatus",
                "byUser",
                "orderBy",
                "orderType",
                "startDate",
                "endDate",
                "pageNumber",
                "pageSize",
                "lang"
            ]
        );
        assert!(call.children.iter().all(|c| c.namespace.is_none()));
        let text = |name: &str| call.child(name).unwrap().text.clone();
        let time = text("time");
        assert_eq!(time.len(), 13);
        let time_ms: i64 = time.parse().unwrap();
        assert_eq!(text("sign"), sign(API_KEY, SECRET_KEY, time_ms));
        assert_eq!(text("apiKey"), API_KEY);
        assert_eq!(text("withData"), "true");
        assert_eq!(text("orderBy"), "A");
        assert_eq!(text("orderType"), "D");
        assert_eq!(text("startDate"), "01/05/2024 10:00:00");
        assert_eq!(text("endDate"), "02/05/2024 10:00:00");
        assert_eq!(text("pageNumber"), if number == 0 { "1" } else { "2" });
        assert_eq!(text("pageSize"), "100");
        times.push(time_ms);
    }
    assert!(times.windows(2).all(|w| w[0] <= w[1]));
}

#[tokio::test]
async fn a_deeply_nested_answer_fails_the_page_cleanly() {
    // About 420 kB; quick-xml alone would build all of it (its own limit is 65,535 levels).
    let body = nested(60_000);
    let exchange = Arc::new(Mutex::new(Exchange::default()));
    {
        let mut ex = exchange.lock().unwrap();
        ex.responses
            .push_back((StatusCode::OK, "text/xml", body.clone()));
        ex.responses
            .push_back((StatusCode::INTERNAL_SERVER_ERROR, "text/xml", body.clone()));
    }
    let gg = adapter(&serve(exchange).await);
    let request = window_request();

    let error = gg.fetch_page("sales", &request).await.unwrap_err();
    let MarketplaceError::Malformed {
        reason, raw_body, ..
    } = &error
    else {
        panic!("{error:?}");
    };
    assert_eq!(
        reason,
        &format!("elements nested more than {} levels deep", xml::MAX_DEPTH)
    );
    assert_eq!(raw_body, &body);

    // A 500 whose body is no readable Fault stays a transient failure with an excerpt of the body.
    let error = gg.fetch_page("sales", &request).await.unwrap_err();
    assert!(
        matches!(&error, MarketplaceError::Transient { detail, .. } if detail.starts_with("HTTP 500: <a><a>")),
        "{error}"
    );
}

#[tokio::test]
async fn echoed_signatures_and_basic_auth_credentials_are_redacted() {
    let fault = format!(
        r#"<S:Envelope xmlns:S="{}"><S:Body><S:Fault><faultcode>S:Client</faultcode><faultstring>sign {{sign}} geçersiz; Authorization: Basic {{credential}}</faultstring></S:Fault></S:Body></S:Envelope>"#,
        wire::SOAP_ENV
    );
    let ack_failure = ACK_FAILURE.replace(
        "İmza (sign) geçersiz;",
        "İmza (sign={sign}, Basic {credential}) geçersiz;",
    );
    let echo_page =
        "<html><pre>Authorization: Basic {credential}\n<sign>{sign}</sign></pre></html>";
    // The credential straddles the end of the excerpt kept of a body that is no Fault.
    let cut_page = format!("{}Basic {{credential}} sign={{sign}}", "x".repeat(490));
    let not_soap = "<Envelope><Body><sign>{sign}</sign><auth>{credential}</auth></Body></Envelope>";
    let exchange = Arc::new(Mutex::new(Exchange::default()));
    {
        let mut ex = exchange.lock().unwrap();
        let xml = "text/xml;charset=utf-8";
        ex.responses
            .push_back((StatusCode::INTERNAL_SERVER_ERROR, xml, fault));
        ex.responses.push_back((StatusCode::OK, xml, ack_failure));
        ex.responses
            .push_back((StatusCode::UNAUTHORIZED, "text/html", echo_page.into()));
        ex.responses
            .push_back((StatusCode::UNAUTHORIZED, "text/html", cut_page));
        ex.responses
            .push_back((StatusCode::OK, "text/html", echo_page.into()));
        ex.responses
            .push_back((StatusCode::OK, xml, not_soap.into()));
    }
    let gg = adapter(&serve(exchange.clone()).await);
    let request = window_request();
    let mut errors = Vec::new();
    for _ in 0..6 {
        errors.push(gg.fetch_page("sales", &request).await.unwrap_err());
    }

    assert!(matches!(
        &errors[0],
        MarketplaceError::Rejected { status: Some(500), message, .. }
            if message == "SOAP Fault: sign *** geçersiz; Authorization: Basic ***"
    ));
    assert!(matches!(
        &errors[1],
        MarketplaceError::Rejected { status: None, message, .. }
            if message.starts_with("ERROR_SIGN_INVALID: İmza (sign=***, Basic ***) geçersiz;")
    ));
    assert!(matches!(
        &errors[2],
        MarketplaceError::Unauthorized { status: 401, message, .. }
            if message == "<html><pre>Authorization: Basic ***\n<sign>***</sign></pre></html>"
    ));
    assert!(matches!(
        &errors[3],
        MarketplaceError::Unauthorized { message, .. } if message.ends_with("xBasic *** …")
    ));
    assert!(matches!(
        &errors[4],
        MarketplaceError::Malformed { raw_body, .. }
            if raw_body == "<html><pre>Authorization: Basic ***\n<sign>***</sign></pre></html>"
    ));
    assert!(matches!(
        &errors[5],
        MarketplaceError::Malformed { raw_body, .. }
            if raw_body == "<Envelope><Body><sign>***</sign><auth>***</auth></Body></Envelope>"
    ));

    let requests = std::mem::take(&mut exchange.lock().unwrap().requests);
    assert_eq!(requests.len(), errors.len());
    for (error, (headers, body)) in errors.iter().zip(&requests) {
        let (sign, credential) = echoed(headers, body);
        assert_eq!(sign.len(), 32);
        assert_eq!(credential, basic_credential(ROLE_NAME, ROLE_PASSWORD));
        // The error's text, its raw body (in its Debug form) and no piece of either secret.
        let text = format!("{error} {error:?}");
        for secret in [&sign, &credential] {
            assert!(!text.contains(&secret[..8]), "{text}");
        }
    }
}

#[tokio::test]
async fn transitions_are_refused_because_the_service_is_pull_only() {
    use crate::marketplace::{Transition, TransitionRefusal};

    // Nothing listens here: no transition may reach the network.
    let account = account("http://127.0.0.1:9/gittigidiyor/listingapi/ws/IndividualSaleService");
    let http = HttpClient::new(
        &account.http_settings(),
        account.credentials.secret_values(),
    )
    .unwrap();
    let gg = Gittigidiyor::new(&account, http, &HashMap::new());
    let transition = Transition {
        order_external_id: "SC-1".into(),
        kind: "ship".into(),
        args: serde_json::Map::new(),
        idempotency_key: "key-1".into(),
    };
    assert_eq!(
        gg.validate_transition(&transition, None),
        Err(TransitionRefusal(
            "this marketplace documents no state-changing operation: it is pull-only".into()
        ))
    );
    let error = gg.apply_transition(&transition).await.unwrap_err();
    assert!(
        matches!(&error, MarketplaceError::Rejected { status: None, message, .. }
            if message == "this marketplace documents no state-changing operation"),
        "{error:?}"
    );
    assert_eq!(gg.fetch_order("SC-1").await.unwrap(), None);
}
