//! Labs' wire format: the order list envelope and its orders as the API sends them, and their
//! conversion into a domain [`Order`].
//!
//! Every order is first read as a `serde_json::Value` (kept verbatim for `Order.raw`), then the fields
//! ordersync normalizes are read from it into the private types below. The list example of the
//! document is camelCase while the create response is snake_case; the few normalized fields accept
//! both spellings (and the document's `custumer…` typo next to `customer…`). Amounts may be JSON
//! floats or strings and are read from their literal text.

use chrono::{DateTime, NaiveDateTime, Utc};
use rust_decimal::Decimal;
use serde::de::{DeserializeOwned, Error as _};
use serde::{Deserialize, Deserializer};
use serde_json::Value;

use crate::domain::{Currency, Order, OrderLine, OrderState, Package, RawStatus};
use crate::marketplace::StatusMap;
use crate::marketplace::payload::de::opt_text;
use crate::marketplace::payload::is_json;
use crate::marketplace::payload::istanbul;

/// List statuses, keyed by the string the API sends. The document lists `PENDING_APPROVED` as a
/// filter value while its example order says `PENDING_APPROVE`: both are mapped.
pub(super) const STATUS_DEFAULTS: &[(&str, OrderState)] = &[
    ("PENDING_APPROVE", OrderState::AwaitingApproval),
    ("PENDING_APPROVED", OrderState::AwaitingApproval),
    ("CREATED", OrderState::Approved),
    ("PREPARING", OrderState::Preparing),
    ("COMPLETED", OrderState::Completed),
    ("RETURN", OrderState::ReturnRequested),
    ("CANCELLED", OrderState::Cancelled),
];

/// The envelope of `GET /orders`: `{items[], totalItems, totalPage, currentPage, limit}`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct ListPage {
    pub items: Vec<Value>,
    #[serde(deserialize_with = "count")]
    pub total_page: u64,
    #[serde(default, deserialize_with = "opt_count")]
    pub current_page: Option<u64>,
}

impl ListPage {
    /// The token of the page after `requested`: the next page number while pages remain.
    pub fn next(&self, requested: u64) -> Option<String> {
        let current = self.current_page.unwrap_or(requested);
        (current < self.total_page).then(|| (current + 1).to_string())
    }
}

/// What a 200 body turned out to be when it is not an order list.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum BodyError {
    /// Not JSON, not the documented shape, or the wrong content type.
    Malformed(String),
    /// The API's own `{"status": "error", "message": "…"}` inside a successful response.
    Api(String),
}

/// Reads a 200 response of `GET /orders`.
pub(super) fn parse_list(content_type: Option<&str>, body: &[u8]) -> Result<ListPage, BodyError> {
    if let Some(ct) = content_type
        && !is_json(Some(ct))
    {
        return Err(BodyError::Malformed(format!(
            "expected JSON, got content type `{ct}`"
        )));
    }
    let value: Value =
        serde_json::from_slice(body).map_err(|e| BodyError::Malformed(format!("not JSON: {e}")))?;
    let reported = value.get("status").and_then(Value::as_str);
    if value.get("items").is_none() || reported.is_some_and(|s| s != "success") {
        if let Some(message) = api_message_of(&value) {
            return Err(BodyError::Api(message));
        }
        return Err(BodyError::Malformed(
            "no `items` list in the response".to_owned(),
        ));
    }
    serde_path_to_error::deserialize(&value).map_err(|e| BodyError::Malformed(e.to_string()))
}

/// The API's error message in an error body: `{"status": "error", "message": "…"}` (or `error`).
pub(super) fn api_message(body: &[u8]) -> Option<String> {
    serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| api_message_of(&v))
}

fn api_message_of(value: &Value) -> Option<String> {
    let object = value.as_object()?;
    // A blank message is no message: the caller then says what it knows instead.
    let text = |key: &str| {
        object
            .get(key)
            .and_then(Value::as_str)
            .filter(|s| !s.trim().is_empty())
    };
    ["message", "error"]
        .iter()
        .find_map(|key| text(key))
        .or_else(|| text("status"))
        .map(str::to_owned)
}

/// Reads an order or a line into a wire type; the error names the offending field.
pub(super) fn parse<T: DeserializeOwned>(value: &Value) -> Result<T, String> {
    serde_path_to_error::deserialize(value).map_err(|e| e.to_string())
}

/// An order of the list (only the fields ordersync normalizes).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct WireOrder {
    #[serde(deserialize_with = "crate::marketplace::payload::de::text")]
    pub id: String,
    #[serde(
        default,
        alias = "marketplace_id",
        deserialize_with = "crate::marketplace::payload::de::opt_text"
    )]
    pub marketplace_id: Option<String>,
    #[serde(
        default,
        alias = "package_id",
        deserialize_with = "crate::marketplace::payload::de::opt_text"
    )]
    pub package_id: Option<String>,
    #[serde(default)]
    pub currency: Option<String>,
    #[serde(
        default,
        alias = "order_status",
        deserialize_with = "crate::marketplace::payload::de::opt_text"
    )]
    pub order_status: Option<String>,
    #[serde(default, alias = "created_at", deserialize_with = "date_time")]
    pub created_at: Option<DateTime<Utc>>,
    #[serde(default, alias = "updated_at", deserialize_with = "date_time")]
    pub updated_at: Option<DateTime<Utc>>,
    /// Not in the list example; the create request's name for the order total.
    #[serde(
        default,
        alias = "price_total",
        deserialize_with = "crate::marketplace::payload::de::amount"
    )]
    pub price_total: Option<Decimal>,
    #[serde(
        default,
        alias = "cargo_fee",
        deserialize_with = "crate::marketplace::payload::de::amount"
    )]
    pub cargo_fee: Option<Decimal>,
    #[serde(default, alias = "shipment_address")]
    pub shipment_address: Option<WireAddress>,
    #[serde(default)]
    pub customer: Option<WireCustomer>,
    #[serde(default)]
    pub shipment: Option<WireShipment>,
    #[serde(default)]
    pub lines: Option<Vec<Value>>,
}

/// An address: nested in the list (`identifier`, `addressDetail`), flat in the create response.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct WireAddress {
    #[serde(default)]
    pub identifier: Option<WireIdentifier>,
    #[serde(default)]
    pub address_detail: Option<WireAddressDetail>,
    #[serde(default, alias = "customer_name")]
    pub customer_name: Option<String>,
    #[serde(default)]
    pub city: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct WireIdentifier {
    #[serde(default)]
    pub customer_name: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct WireAddressDetail {
    #[serde(default)]
    pub city: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct WireCustomer {
    #[serde(default, rename = "custumerName", alias = "customerName")]
    pub name: Option<String>,
    #[serde(default, rename = "custumerEmail", alias = "customerEmail")]
    pub email: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct WireShipment {
    #[serde(
        default,
        deserialize_with = "crate::marketplace::payload::de::opt_text"
    )]
    pub cargo_company: Option<String>,
    #[serde(
        default,
        deserialize_with = "crate::marketplace::payload::de::opt_text"
    )]
    pub tracking_id: Option<String>,
    #[serde(default, deserialize_with = "crate::marketplace::payload::de::amount")]
    pub shipping_fee: Option<Decimal>,
}

/// An order line.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct WireLine {
    #[serde(
        default,
        deserialize_with = "crate::marketplace::payload::de::opt_text"
    )]
    pub id: Option<String>,
    #[serde(
        default,
        alias = "barcode",
        deserialize_with = "crate::marketplace::payload::de::opt_text"
    )]
    pub barcode_id: Option<String>,
    #[serde(default, alias = "title")]
    pub line_description: Option<String>,
    #[serde(
        default,
        deserialize_with = "crate::marketplace::payload::de::opt_text"
    )]
    pub status: Option<String>,
    #[serde(default, deserialize_with = "crate::marketplace::payload::de::amount")]
    pub requested_qty: Option<Decimal>,
    #[serde(default, deserialize_with = "crate::marketplace::payload::de::amount")]
    pub qty: Option<Decimal>,
    #[serde(default, deserialize_with = "crate::marketplace::payload::de::amount")]
    pub quantity: Option<Decimal>,
    #[serde(default, deserialize_with = "crate::marketplace::payload::de::amount")]
    pub price: Option<Decimal>,
    #[serde(default)]
    pub currency: Option<String>,
}

/// Converts one listed order. The rules:
/// - `external_id` is Labs' own order id; `order_number` is the platform's order id (`marketplaceId`).
/// - `total_amount` is `priceTotal` when the order carries one, else empty: the list example has no
///   order total, and a sum of lines would ignore discounts and cancelled quantities.
/// - `shipping_amount` is `shipment.shippingFee`, else `cargoFee`.
/// - The customer is `customer.custumerName/Email`, else the shipment address's name.
/// - A line's quantity is what was ordered: `requestedQty`, else `qty` (which drops to 0 when the
///   line is cancelled), else `quantity`; a line with none of them is malformed. Lines carry a unit
///   price only, so `total_price` stays empty. A line without an id is numbered by its position.
/// - One package when `packageId` is not empty, with the shipment's carrier and tracking id and the
///   order's status; every line ships in it.
pub(super) fn into_order(raw: Value, statuses: &StatusMap) -> Result<Order, String> {
    let order: WireOrder = parse(&raw)?;
    let state = order
        .order_status
        .as_deref()
        .map_or(OrderState::Unknown, |s| statuses.map(s));
    let status = RawStatus {
        code: order.order_status.clone(),
        text: None,
    };
    let package_id = order.package_id.clone().filter(|p| !p.trim().is_empty());

    let lines = order
        .lines
        .iter()
        .flatten()
        .enumerate()
        .map(|(position, raw)| {
            let line: WireLine = parse(raw).map_err(|e| format!("lines[{position}]: {e}"))?;
            let quantity = line
                .requested_qty
                .or(line.qty)
                .or(line.quantity)
                .ok_or_else(|| format!("lines[{position}]: no quantity"))?;
            Ok(OrderLine {
                external_id: line.id.unwrap_or_else(|| (position + 1).to_string()),
                package_external_id: package_id.clone(),
                sku: line.barcode_id,
                product_name: line.line_description,
                quantity,
                unit_price: line.price,
                total_price: None,
                currency: line.currency.as_deref().map(Currency::parse),
                state: line
                    .status
                    .as_deref()
                    .map_or(OrderState::Unknown, |s| statuses.map(s)),
                status: RawStatus {
                    code: line.status,
                    text: None,
                },
                raw: raw.into(),
            })
        })
        .collect::<Result<Vec<_>, String>>()?;

    let shipment = order.shipment.unwrap_or_default();
    let address = order.shipment_address.unwrap_or_default();
    let customer = order.customer.unwrap_or_default();
    let non_empty = |s: Option<String>| s.filter(|s| !s.trim().is_empty());
    let address_name = non_empty(address.identifier.and_then(|i| i.customer_name))
        .or_else(|| non_empty(address.customer_name));
    let packages = package_id
        .map(|id| Package {
            external_id: id,
            state,
            status: status.clone(),
            carrier: non_empty(shipment.cargo_company),
            tracking_number: non_empty(shipment.tracking_id),
            total_amount: None,
            raw: raw.get("shipment").unwrap_or(&Value::Null).into(),
        })
        .into_iter()
        .collect();

    Ok(Order {
        external_id: order.id,
        order_number: non_empty(order.marketplace_id),
        state,
        status,
        total_amount: order.price_total,
        shipping_amount: shipment.shipping_fee.or(order.cargo_fee),
        currency: order.currency.as_deref().map(Currency::parse),
        customer_name: non_empty(customer.name).or(address_name),
        customer_email: non_empty(customer.email),
        shipping_city: non_empty(address.address_detail.and_then(|d| d.city))
            .or_else(|| non_empty(address.city)),
        placed_at: order.created_at,
        source_updated_at: order.updated_at,
        lines,
        packages,
        raw: raw.into(),
    })
}

fn count<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    opt_count(d)?.ok_or_else(|| D::Error::custom("expected a page number, found null"))
}

fn opt_count<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    match opt_text(d)? {
        None => Ok(None),
        Some(text) => text
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| D::Error::custom(format!("`{text}` is not a page number"))),
    }
}

fn date_time<'de, D: Deserializer<'de>>(d: D) -> Result<Option<DateTime<Utc>>, D::Error> {
    match Option::<String>::deserialize(d)? {
        None => Ok(None),
        Some(s) if s.trim().is_empty() => Ok(None),
        Some(s) => parse_date_time(&s).map(Some).map_err(D::Error::custom),
    }
}

/// A Labs date-time: `30/11/2023 10:48:26` or `2023-12-29 11:47:22`, both Istanbul time (an RFC 3339
/// value with an offset is honoured too).
pub(super) fn parse_date_time(text: &str) -> Result<DateTime<Utc>, String> {
    let text = text.trim();
    if let Ok(dt) = DateTime::parse_from_rfc3339(text) {
        return Ok(dt.with_timezone(&Utc));
    }
    let naive = [
        "%d/%m/%Y %H:%M:%S",
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%dT%H:%M:%S",
    ]
    .iter()
    .find_map(|f| NaiveDateTime::parse_from_str(text, f).ok())
    .ok_or_else(|| format!("`{text}` is not a Labs date-time"))?;
    istanbul(&naive).ok_or_else(|| format!("`{text}` does not exist in Istanbul time"))
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    macro_rules! fixture {
        ($name:literal) => {
            include_str!(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/fixtures/labs/",
                $name
            ))
        };
    }

    const JSON: Option<&str> = Some("application/json");

    fn orders(body: &str) -> Vec<Order> {
        let statuses = StatusMap::new(STATUS_DEFAULTS, &HashMap::new());
        parse_list(JSON, body.as_bytes())
            .unwrap()
            .items
            .into_iter()
            .map(|raw| into_order(raw, &statuses).unwrap())
            .collect()
    }

    fn dec(s: &str) -> Decimal {
        s.parse().unwrap()
    }

    fn utc(order_date: Option<DateTime<Utc>>) -> String {
        order_date.unwrap().to_rfc3339()
    }

    #[test]
    fn the_documented_order() {
        let order = &orders(fixture!("orders_page.json"))[0];
        assert_eq!(order.external_id, "2663229");
        assert_eq!(
            order.order_number.as_deref(),
            Some("65671a96-110c-0c10-3f24-24f406060606")
        );
        assert_eq!(order.state, OrderState::AwaitingApproval);
        assert_eq!(order.status.code.as_deref(), Some("PENDING_APPROVE"));
        assert_eq!(order.total_amount, None);
        assert_eq!(order.shipping_amount, Some(Decimal::ZERO));
        assert_eq!(order.currency.as_ref().unwrap().iso, Some("TRY"));
        assert_eq!(order.customer_name.as_deref(), Some("Gülay türk"));
        assert_eq!(
            order.customer_email.as_deref(),
            Some("234456998_7000037723_0@hepsifatura.com")
        );
        assert_eq!(order.shipping_city.as_deref(), Some("Balıkesir"));
        // `30/11/2023 10:48:26` Istanbul is 07:48:26 UTC.
        assert_eq!(utc(order.placed_at), "2023-11-30T07:48:26+00:00");
        assert_eq!(order.source_updated_at, None);
        assert!(order.packages.is_empty());

        let line = &order.lines[0];
        assert_eq!(line.external_id, "12097167");
        assert_eq!(line.package_external_id, None);
        assert_eq!(line.sku.as_deref(), Some("8693461064371E"));
        assert_eq!(line.product_name.as_deref(), Some("Pilsan Taş Ev"));
        assert_eq!(line.quantity, dec("1.00"));
        assert_eq!(line.unit_price.unwrap().to_string(), "2825.0000");
        assert_eq!(line.total_price, None);
        assert_eq!(line.state, OrderState::Cancelled);
        assert_eq!(line.raw.value()["cancelledQty"], 1);
        assert_eq!(
            order.raw.value()["invoiceAddress"]["addressDetail"]["district"],
            "Balya"
        );
        assert_eq!(
            order.raw.value()["shipmentAddress"]["identifier"]["identity"].to_string(),
            "11111111111"
        );
    }

    #[test]
    fn second_date_format_float_amounts_packages_and_turkish_text() {
        let order = &orders(fixture!("orders_page.json"))[1];
        assert_eq!(order.state, OrderState::Preparing);
        assert_eq!(order.total_amount.unwrap().to_string(), "1234.5678");
        assert_eq!(order.shipping_amount.unwrap().to_string(), "29.99");
        assert_eq!(order.currency.as_ref().unwrap().raw, "try");
        // The customer block has an empty name: the shipment address's name is used.
        assert_eq!(order.customer_name.as_deref(), Some("Çağrı Öğüt"));
        assert_eq!(order.shipping_city.as_deref(), Some("İzmir"));
        assert_eq!(utc(order.placed_at), "2023-12-29T08:47:22+00:00");
        assert_eq!(utc(order.source_updated_at), "2023-12-30T06:05:00+00:00");

        let package = &order.packages[0];
        assert_eq!(package.external_id, "LABS820748183841");
        assert_eq!(package.carrier.as_deref(), Some("ARAS"));
        assert_eq!(package.tracking_number.as_deref(), Some("ARS-3456789"));
        assert_eq!(package.state, OrderState::Preparing);
        assert_eq!(
            package.raw.value()["trackingUrl"],
            "https://kargotakip.araskargo.com.tr/?code=ARS-3456789"
        );

        let [first, second] = &order.lines[..] else {
            panic!("two lines expected");
        };
        assert_eq!(first.quantity, dec("2.00"));
        assert_eq!(first.unit_price.unwrap().to_string(), "199.9");
        assert_eq!(
            first.package_external_id.as_deref(),
            Some("LABS820748183841")
        );
        // No id: numbered by position; no requestedQty: `qty`.
        assert_eq!(second.external_id, "2");
        assert_eq!(second.quantity, Decimal::ONE);
        assert_eq!(second.state, OrderState::Unknown);
        assert_eq!(second.status.code.as_deref(), Some("NEW_LINE_STATUS"));
        assert_eq!(
            second.product_name.as_deref(),
            Some("Şemsiye — çift katlı, ığdır dokuma")
        );
        assert_eq!(order.raw.value()["priceTotal"].to_string(), "1234.5678");
        assert_eq!(
            order.raw.value()["shipment"]["shippingFee"].to_string(),
            "29.99"
        );
        assert_eq!(
            order.raw.value()["managerNote"],
            "Hediye paketi yapılsın; kartta 'İyi ki doğdun Şükrü' yazsın"
        );
    }

    #[test]
    fn snake_case_orders_and_unknown_statuses() {
        let order = &orders(fixture!("orders_last_page.json"))[0];
        assert_eq!(order.external_id, "2752184");
        assert_eq!(order.order_number.as_deref(), Some("1242341"));
        assert_eq!(order.state, OrderState::Unknown);
        assert_eq!(order.status.code.as_deref(), Some("ON_THE_WAY"));
        assert_eq!(order.shipping_amount, Some(Decimal::ZERO));
        assert_eq!(order.customer_name.as_deref(), Some("Sercan Yıldız"));
        assert_eq!(order.shipping_city.as_deref(), Some("Giresun"));
        assert_eq!(utc(order.placed_at), "2023-12-29T08:47:22+00:00");
        assert_eq!(utc(order.source_updated_at), "2023-12-29T08:47:22+00:00");
        assert_eq!(order.packages[0].external_id, "LABS820748183840");
        assert!(order.lines.is_empty());
    }

    #[test]
    fn pages_continue_while_current_is_below_total() {
        let first = parse_list(JSON, fixture!("orders_page.json").as_bytes()).unwrap();
        assert_eq!(first.next(1).as_deref(), Some("2"));
        let last = parse_list(JSON, fixture!("orders_last_page.json").as_bytes()).unwrap();
        assert_eq!(last.next(2), None);
        let empty = parse_list(JSON, fixture!("orders_empty.json").as_bytes()).unwrap();
        assert!(empty.items.is_empty());
        assert_eq!(empty.next(1), None);
    }

    #[test]
    fn errors_inside_a_200() {
        for (body, message) in [
            (
                fixture!("error_status.json"),
                "Yetkisiz erişim: geçersiz veya süresi dolmuş token.",
            ),
            (
                fixture!("error_validation.json"),
                "page ve limit parametrelerinin gönderilmesi zorunludur.",
            ),
        ] {
            assert_eq!(
                parse_list(JSON, body.as_bytes()).unwrap_err(),
                BodyError::Api(message.to_owned())
            );
            assert_eq!(api_message(body.as_bytes()).as_deref(), Some(message));
        }
        assert_eq!(api_message(b"Bad Gateway"), None);
    }

    #[test]
    fn garbage_is_malformed_never_a_panic() {
        for body in [
            fixture!("truncated.json"),
            "",
            "[]",
            "{\"items\": {}, \"totalPage\": 1}",
            "{\"items\": [], \"totalPage\": \"çok\"}",
            "{\"items\": []}",
        ] {
            assert!(
                matches!(
                    parse_list(JSON, body.as_bytes()),
                    Err(BodyError::Malformed(_))
                ),
                "{body}"
            );
        }
        assert!(matches!(
            parse_list(Some("text/html"), b"<html>Bakim</html>"),
            Err(BodyError::Malformed(_))
        ));
        let statuses = StatusMap::new(STATUS_DEFAULTS, &HashMap::new());
        for (body, expected) in [
            (
                fixture!("line_without_quantity.json"),
                "lines[0]: no quantity",
            ),
            (fixture!("bad_date.json"), "createdAt"),
        ] {
            let raw = parse_list(JSON, body.as_bytes()).unwrap().items.remove(0);
            let error = into_order(raw, &statuses).unwrap_err();
            assert!(error.contains(expected), "{error}");
        }
        let no_id = into_order(serde_json::json!({"orderStatus": "CREATED"}), &statuses);
        assert!(no_id.unwrap_err().contains("id"));
    }

    #[test]
    fn both_date_formats_are_istanbul_time() {
        let utc = |s| parse_date_time(s).unwrap().to_rfc3339();
        assert_eq!(utc("30/11/2023 10:48:26"), "2023-11-30T07:48:26+00:00");
        assert_eq!(utc("2023-12-29 11:47:22"), "2023-12-29T08:47:22+00:00");
        assert_eq!(utc("2023-12-29T11:47:22Z"), "2023-12-29T11:47:22+00:00");
        assert!(parse_date_time("29.12.2023 11:47").is_err());
    }

    #[test]
    fn overrides_win() {
        let overrides = HashMap::from([("ON_THE_WAY".to_owned(), OrderState::Shipped)]);
        let statuses = StatusMap::new(STATUS_DEFAULTS, &overrides);
        let raw = parse_list(JSON, fixture!("orders_last_page.json").as_bytes())
            .unwrap()
            .items
            .remove(0);
        assert_eq!(
            into_order(raw, &statuses).unwrap().state,
            OrderState::Shipped
        );
        assert_eq!(
            statuses.map("PENDING_APPROVED"),
            OrderState::AwaitingApproval
        );
        assert_eq!(statuses.map("RETURN"), OrderState::ReturnRequested);
    }
}
