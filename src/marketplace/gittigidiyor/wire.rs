//! The wire side of `getSalesByDateRange`: the request envelope (serialized with quick-xml's serde
//! support), the response envelope (read into an [`xml::Element`] tree), and the private `<sale>` wire
//! type with its conversion into a domain [`Order`].
//!
//! A `<sale>` is first converted to JSON faithfully (that JSON is `Order.raw`), and the typed wire
//! struct is then read from that JSON with serde, so the normalized columns and the raw payload come
//! from one parse and cannot disagree.

use std::str::FromStr;

use chrono::{DateTime, NaiveDateTime, Utc};
use rust_decimal::Decimal;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

use super::xml::{self, Element};
use crate::domain::{Currency, Order, OrderLine, Package, RawStatus};
use crate::marketplace::StatusMap;
use crate::marketplace::payload::istanbul;

/// The SOAP 1.1 envelope namespace.
pub(super) const SOAP_ENV: &str = "http://schemas.xmlsoap.org/soap/envelope/";
/// The namespace of the sale service's operation elements.
pub(super) const SALE_NS: &str = "http://sale.individual.ws.listingapi.gg.com";
/// The date-time format of requests and payloads (Istanbul local time).
pub(super) const DATE_FORMAT: &str = "%d/%m/%Y %H:%M:%S";

/// The parameters of one `getSalesByDateRange` call, in the order the service lists them (published
/// clients send the children in that order, unqualified).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct GetSalesByDateRange<'a> {
    pub api_key: &'a str,
    pub sign: &'a str,
    pub time: i64,
    pub with_data: bool,
    /// Empty: every status.
    pub by_status: &'a str,
    /// Empty: every buyer.
    pub by_user: &'a str,
    pub order_by: &'a str,
    pub order_type: &'a str,
    pub start_date: &'a str,
    pub end_date: &'a str,
    pub page_number: u32,
    pub page_size: u32,
    pub lang: &'a str,
}

#[derive(Serialize)]
#[serde(rename = "soapenv:Envelope")]
struct Envelope<'a> {
    #[serde(rename = "@xmlns:soapenv")]
    soapenv: &'static str,
    #[serde(rename = "@xmlns:sale")]
    sale: &'static str,
    #[serde(rename = "soapenv:Body")]
    body: Body<'a>,
}

#[derive(Serialize)]
struct Body<'a> {
    #[serde(rename = "sale:getSalesByDateRange")]
    call: &'a GetSalesByDateRange<'a>,
}

/// The request document: the SOAP 1.1 envelope around the operation element.
pub(super) fn envelope(call: &GetSalesByDateRange<'_>) -> Result<String, quick_xml::SeError> {
    let envelope = Envelope {
        soapenv: SOAP_ENV,
        sale: SALE_NS,
        body: Body { call },
    };
    Ok(format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>{}"#,
        quick_xml::se::to_string(&envelope)?
    ))
}

/// One successful page: the `<sale>` elements as JSON, in document order.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct SalesPage {
    pub sales: Vec<Value>,
    pub next_page_available: bool,
}

/// Why a response is not a page of sales.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum ResponseError {
    /// The body is not the documented response.
    Malformed(String),
    /// The service answered with an error: a SOAP Fault or an `ackCode` other than `success`.
    Rejected(String),
}

/// Reads a `getSalesByDateRange` response. One `<sale>` and many are treated alike. The document's
/// example shows the response element without its envelope; that form is accepted too.
pub(super) fn parse_response(body: &[u8]) -> Result<SalesPage, ResponseError> {
    let root = xml::parse(body).map_err(|e| ResponseError::Malformed(e.to_string()))?;
    let response = if root.name == "getSalesByDateRangeResponse" {
        root
    } else {
        let content = soap_body_content(root)?;
        if let Some(message) = fault_message(&content) {
            return Err(ResponseError::Rejected(message));
        }
        if content.name != "getSalesByDateRangeResponse" {
            return Err(ResponseError::Malformed(format!(
                "expected <getSalesByDateRangeResponse> in the SOAP body, found <{}>",
                content.name
            )));
        }
        content
    };
    let result = response
        .into_child("return")
        .ok_or_else(|| ResponseError::Malformed("no <return> in the response".to_owned()))?;
    let ack = result.child_text("ackCode").unwrap_or_default();
    if !ack.eq_ignore_ascii_case("success") {
        return Err(ResponseError::Rejected(ack_error_message(&result, ack)));
    }
    let next_page_available = match result.child_text("nextPageAvailable") {
        None => false,
        Some(t) if t.eq_ignore_ascii_case("true") => true,
        Some(t) if t.eq_ignore_ascii_case("false") => false,
        Some(other) => {
            return Err(ResponseError::Malformed(format!(
                "nextPageAvailable is `{other}`, not a boolean"
            )));
        }
    };
    let sales = result
        .into_children_named("sales")
        .flat_map(|sales| sales.into_children_named("sale"))
        .map(Element::into_json)
        .collect();
    Ok(SalesPage {
        sales,
        next_page_available,
    })
}

/// The message of a SOAP Fault, when `body` is an envelope holding one: for an HTTP 500 the shared
/// client asks for the API's own message, and SOAP puts it in `faultstring`.
pub(super) fn fault_in(body: &[u8]) -> Option<String> {
    let root = xml::parse(body).ok()?;
    fault_message(&soap_body_content(root).ok()?)
}

fn soap_body_content(root: Element) -> Result<Element, ResponseError> {
    if !root.is(SOAP_ENV, "Envelope") {
        return Err(ResponseError::Malformed(format!(
            "expected a SOAP 1.1 <Envelope>, found <{}> in namespace {}",
            root.name,
            root.namespace.as_deref().unwrap_or("(none)")
        )));
    }
    root.children
        .into_iter()
        .find(|c| c.is(SOAP_ENV, "Body"))
        .and_then(|body| body.children.into_iter().next())
        .ok_or_else(|| {
            ResponseError::Malformed("the SOAP envelope has an empty or no <Body>".to_owned())
        })
}

fn fault_message(content: &Element) -> Option<String> {
    if !content.is(SOAP_ENV, "Fault") {
        return None;
    }
    let text = content
        .child_text("faultstring")
        .or_else(|| content.child_text("faultcode"))
        .unwrap_or("(no faultstring)");
    Some(format!("SOAP Fault: {text}"))
}

fn ack_error_message(result: &Element, ack: &str) -> String {
    let error = result.child("error");
    let field = |name: &str| error.and_then(|e| e.child_text(name));
    let message = field("message").or_else(|| field("viewMessage"));
    match (field("errorCode"), message) {
        (Some(code), Some(message)) => format!("{code}: {message}"),
        (Some(code), None) => code.to_owned(),
        (None, Some(message)) => message.to_owned(),
        (None, None) => format!("ackCode `{ack}` without an error description"),
    }
}

/// The fields of a `<sale>` this adapter normalizes; everything else stays in the raw JSON.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SaleWire {
    sale_code: Option<String>,
    status: Option<String>,
    status_code: Option<String>,
    product_id: Option<String>,
    product_title: Option<String>,
    price: Option<String>,
    cargo_code: Option<String>,
    amount: Option<String>,
    last_action_date: Option<String>,
    item_id: Option<String>,
    #[serde(default, deserialize_with = "element")]
    buyer_info: Option<BuyerInfoWire>,
    #[serde(default, deserialize_with = "element")]
    invoice_info: Option<InvoiceInfoWire>,
    #[serde(default, deserialize_with = "element")]
    shipping_info: Option<ShippingInfoWire>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct BuyerInfoWire {
    username: Option<String>,
    name: Option<String>,
    surname: Option<String>,
    email: Option<String>,
    city: Option<String>,
}

#[derive(Debug, Deserialize)]
struct InvoiceInfoWire {
    fullname: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ShippingInfoWire {
    shipping_firm_name: Option<String>,
    cargo_code: Option<String>,
}

/// A child element that has children of its own; an empty element (`<shippingInfo/>`, converted to
/// `""`) means "absent".
fn element<'de, D: Deserializer<'de>, T: DeserializeOwned>(d: D) -> Result<Option<T>, D::Error> {
    match Value::deserialize(d)? {
        Value::String(s) if s.trim().is_empty() => Ok(None),
        value => T::deserialize(value)
            .map(Some)
            .map_err(serde::de::Error::custom),
    }
}

/// The product fields of a sale, kept as the line's raw payload.
const LINE_FIELDS: [&str; 8] = [
    "productId",
    "productTitle",
    "price",
    "amount",
    "variantId",
    "itemId",
    "thumbImageLink",
    "endDate",
];

/// Converts one `<sale>` (as faithful JSON) into an order. The error is the reason it is malformed.
///
/// A sale is one product bought in some quantity: one order with one line. `price` is read as the unit
/// price ("Ürün fiyatı", next to `amount`, "Adet"), so the line and order total is `price × amount`,
/// computed exactly. The payload carries no currency (GittiGidiyor sells in Turkish lira only) and no
/// shipping amount (only who pays for shipping). It has no sale date either (`endDate` is the listing's
/// end), so `placed_at` stays empty; `lastActionDate` is the change marker.
pub(super) fn sale_to_order(raw: Value, statuses: &StatusMap) -> Result<Order, String> {
    let sale = SaleWire::deserialize(&raw).map_err(|e| format!("unexpected <sale> shape: {e}"))?;
    let sale_code = non_empty(sale.sale_code).ok_or("a <sale> without <saleCode>")?;
    let status_code = non_empty(sale.status_code);
    let state = statuses.map(status_code.as_deref().unwrap_or_default());
    let status = RawStatus {
        code: status_code,
        text: non_empty(sale.status),
    };
    let unit_price = non_empty(sale.price)
        .map(|p| parse_amount(&p))
        .transpose()
        .map_err(|e| format!("sale {sale_code}: price: {e}"))?;
    let quantity = non_empty(sale.amount)
        .ok_or_else(|| format!("sale {sale_code}: no <amount>"))
        .and_then(|a| parse_amount(&a).map_err(|e| format!("sale {sale_code}: amount: {e}")))?;
    let total = match unit_price {
        Some(price) => Some(
            price
                .checked_mul(quantity)
                .ok_or_else(|| format!("sale {sale_code}: price × amount overflows"))?,
        ),
        None => None,
    };
    let source_updated_at = non_empty(sale.last_action_date)
        .map(|d| parse_local_date(&d))
        .transpose()
        .map_err(|e| format!("sale {sale_code}: lastActionDate: {e}"))?;
    let currency = Currency::parse("TRY");

    let buyer = sale.buyer_info;
    let buyer_name = buyer.as_ref().and_then(|b| {
        let full = [b.name.as_deref(), b.surname.as_deref()]
            .into_iter()
            .flatten()
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .collect::<Vec<_>>()
            .join(" ");
        (!full.is_empty()).then_some(full)
    });
    let customer_name = buyer_name
        .or_else(|| sale.invoice_info.and_then(|i| non_empty(i.fullname)))
        .or_else(|| buyer.as_ref().and_then(|b| non_empty(b.username.clone())));
    let customer_email = buyer.as_ref().and_then(|b| non_empty(b.email.clone()));
    let shipping_city = buyer.and_then(|b| non_empty(b.city));

    let shipping = sale.shipping_info;
    let carrier = shipping
        .as_ref()
        .and_then(|s| non_empty(s.shipping_firm_name.clone()));
    let package_code = shipping
        .and_then(|s| non_empty(s.cargo_code))
        .or_else(|| non_empty(sale.cargo_code));
    let packages: Vec<Package> = package_code
        .iter()
        .map(|code| Package {
            external_id: code.clone(),
            state,
            status: status.clone(),
            carrier: carrier.clone(),
            tracking_number: None,
            total_amount: None,
            raw: package_raw(&raw, code).into(),
        })
        .collect();

    let line = OrderLine {
        external_id: sale_code.clone(),
        package_external_id: package_code,
        sku: non_empty(sale.item_id).or_else(|| non_empty(sale.product_id)),
        product_name: non_empty(sale.product_title),
        quantity,
        unit_price,
        total_price: total,
        currency: Some(currency.clone()),
        state,
        status: status.clone(),
        raw: pick(&raw, &LINE_FIELDS).into(),
    };
    Ok(Order {
        external_id: sale_code,
        order_number: None,
        state,
        status,
        total_amount: total,
        shipping_amount: None,
        currency: Some(currency),
        customer_name,
        customer_email,
        shipping_city,
        placed_at: None,
        source_updated_at,
        lines: vec![line],
        packages,
        raw: raw.into(),
    })
}

/// The package's raw payload: the sale's `shippingInfo` when it has one, else the sale's `cargoCode`.
fn package_raw(sale: &Value, code: &str) -> Value {
    match sale.get("shippingInfo") {
        Some(info @ Value::Object(_)) => info.clone(),
        _ => serde_json::json!({ "cargoCode": code }),
    }
}

/// The listed keys of a JSON object, when present.
fn pick(object: &Value, keys: &[&str]) -> Value {
    Value::Object(
        keys.iter()
            .filter_map(|k| object.get(*k).map(|v| ((*k).to_owned(), v.clone())))
            .collect(),
    )
}

fn non_empty(text: Option<String>) -> Option<String> {
    text.map(|t| t.trim().to_owned()).filter(|t| !t.is_empty())
}

/// An amount as sent: a plain decimal (`1249.990`, `15`), or with a decimal comma and no other
/// separator (`89,90`). Anything else is refused rather than guessed.
pub(super) fn parse_amount(text: &str) -> Result<Decimal, String> {
    let text = text.trim();
    let normalized = if !text.contains('.') && text.matches(',').count() == 1 {
        text.replace(',', ".")
    } else {
        text.to_owned()
    };
    Decimal::from_str(&normalized).map_err(|e| format!("`{text}` is not a decimal amount: {e}"))
}

/// A payload date-time, `dd/MM/yyyy HH:mm:ss` (seconds optional) in Istanbul time, as UTC.
pub(super) fn parse_local_date(text: &str) -> Result<DateTime<Utc>, String> {
    let text = text.trim();
    let naive = NaiveDateTime::parse_from_str(text, DATE_FORMAT)
        .or_else(|_| NaiveDateTime::parse_from_str(text, "%d/%m/%Y %H:%M"))
        .map_err(|e| format!("`{text}` is not dd/MM/yyyy HH:mm:ss: {e}"))?;
    istanbul(&naive).ok_or_else(|| format!("`{text}` does not exist in Istanbul time"))
}
