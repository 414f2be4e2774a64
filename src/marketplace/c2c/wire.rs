//! C2C's wire format — an array of orders on success, an error object otherwise (even with HTTP 200)
//! — and the conversion of orders into the domain types.
//!
//! **Amounts** arrive as JSON floats (`23.19`); they are read from the literal text (serde_json keeps
//! it with `arbitrary_precision`), never through `f64`, so `23.19` stays exactly 23.19. Strings such
//! as `"23,19"` are accepted too.
//!
//! **Dates**: `siparisTarihi` is `dd.MM.yyyy HH:mm` (seconds accepted when present) in
//! Europe/Istanbul time; anything else is malformed.
//!
//! **Lines and packages**: C2C gives lines no identifier, so a line is named by its position (1, 2, …)
//! in `siparisUrunleri`, and lines carry no status, so each takes the order's. C2C has no packages, but
//! each line may carry a carrier and tracking number; lines sharing a tracking number form one
//! package named by that number, so shipments become visible in the normalized columns.

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use serde::Deserialize;
use serde_json::{Map, Value};

use super::Statuses;
use crate::domain::{Currency, Order, OrderLine, OrderState, Package, RawStatus};
use crate::http::Redactor;
use crate::marketplace::payload::istanbul;
use crate::marketplace::payload::{Json, amount, kind, scrub};

/// Why a 200 response could not be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Problem {
    /// The body is not what the document describes.
    Malformed(String),
    /// The API answered with its error object.
    Rejected(String),
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireOrder {
    siparis_kodu: Option<Value>,
    siparis_tarihi: Option<String>,
    siparis_alici_adi: Option<String>,
    siparis_alici_mail: Option<String>,
    siparis_urunleri: Option<Vec<Value>>,
    siparis_kargo_tutari: Option<Value>,
    siparis_toplam_tutar: Option<Value>,
    siparis_para_birimi: Option<String>,
    siparis_durumu: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireItem {
    urun_adi: Option<String>,
    urun_adet: Option<Value>,
    urun_fiyat: Option<Value>,
    urun_tutar: Option<Value>,
    urun_para_birimi: Option<String>,
    urun_kargo_takip_no: Option<Value>,
}

/// The orders of a `GetAll`, `GetOrdersDate`, `GetOrdersState` or `GetOrderInfoByOrdersCode`
/// response.
pub(super) fn parse_orders(
    body: &[u8],
    statuses: &Statuses,
    redactor: &Redactor,
) -> Result<Vec<Order>, Problem> {
    let orders = match Json::parse(body)
        .map_err(|e| Problem::Malformed(format!("not JSON: {e}")))?
    {
        Json::Array(orders) => orders,
        // A .NET service may serialize an empty result as `null`.
        Json::Other(Value::Null) => Vec::new(),
        Json::Other(Value::Object(error)) => return Err(Problem::Rejected(error_message(&error))),
        Json::Other(other) => {
            return Err(Problem::Malformed(format!(
                "the body is a {}, expected an array of orders",
                kind(&other)
            )));
        }
    };
    orders
        .into_iter()
        .enumerate()
        .map(|(i, text)| {
            let order = |e: String| Problem::Malformed(format!("order #{}: {e}", i + 1));
            let mut raw: Value =
                serde_json::from_str(text.get()).map_err(|e| order(e.to_string()))?;
            scrub(&mut raw, redactor, &["apikey", "apipassword"]);
            convert_order(raw, statuses).map_err(order)
        })
        .collect()
}

/// The API's own message in an error body, for 4xx responses.
pub(super) fn api_message(body: &[u8]) -> Option<String> {
    match serde_json::from_slice::<Value>(body).ok()? {
        Value::Object(error) => Some(error_message(&error)),
        _ => None,
    }
}

/// The message of an `OrderErrorResponse`. Its shape is not published; published clients read
/// `hata`, so that comes first, then the usual .NET names; failing all, the object itself.
fn error_message(error: &Map<String, Value>) -> String {
    const KEYS: [&str; 7] = [
        "hata",
        "mesaj",
        "message",
        "aciklama",
        "error",
        "errormessage",
        "exceptionmessage",
    ];
    KEYS.iter()
        .find_map(|wanted| {
            error
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(wanted))
                .and_then(|(_, v)| match v {
                    Value::String(s) if !s.trim().is_empty() => Some(s.clone()),
                    Value::Object(inner) => Some(error_message(inner)),
                    _ => None,
                })
        })
        .unwrap_or_else(|| Value::Object(error.clone()).to_string())
}

fn convert_order(raw: Value, statuses: &Statuses) -> Result<Order, String> {
    let wire = WireOrder::deserialize(&raw).map_err(|e| e.to_string())?;
    let external_id = wire
        .siparis_kodu
        .as_ref()
        .and_then(scalar)
        .filter(|c| !c.is_empty())
        .ok_or("no `siparisKodu`")?;
    let placed_at = wire
        .siparis_tarihi
        .as_deref()
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .map(|d| parse_date(d).ok_or_else(|| format!("`siparisTarihi` `{d}` is not a date")))
        .transpose()?;
    let status = RawStatus {
        code: None,
        text: wire.siparis_durumu,
    };
    let state = status
        .text
        .as_deref()
        .map_or(OrderState::Unknown, |t| statuses.state(t));

    let lines = wire
        .siparis_urunleri
        .unwrap_or_default()
        .into_iter()
        .enumerate()
        .map(|(i, item)| {
            convert_item(item, i + 1, state, &status).map_err(|e| format!("item #{}: {e}", i + 1))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let packages = packages(&lines, state, &status);

    Ok(Order {
        external_id,
        order_number: None,
        state,
        total_amount: amount(wire.siparis_toplam_tutar.as_ref())
            .map_err(|e| format!("`siparisToplamTutar`: {e}"))?,
        shipping_amount: amount(wire.siparis_kargo_tutari.as_ref())
            .map_err(|e| format!("`siparisKargoTutari`: {e}"))?,
        currency: currency(wire.siparis_para_birimi),
        customer_name: non_empty(wire.siparis_alici_adi),
        customer_email: non_empty(wire.siparis_alici_mail),
        // The delivery address is free text; a city cannot be told from it reliably.
        shipping_city: None,
        placed_at,
        // C2C sends no change time.
        source_updated_at: None,
        status,
        lines,
        packages,
        raw: raw.into(),
    })
}

fn convert_item(
    raw: Value,
    position: usize,
    state: OrderState,
    status: &RawStatus,
) -> Result<OrderLine, String> {
    let wire = WireItem::deserialize(&raw).map_err(|e| e.to_string())?;
    let quantity = amount(wire.urun_adet.as_ref())
        .map_err(|e| format!("`urunAdet`: {e}"))?
        .ok_or("no `urunAdet`")?;
    let tracking = wire
        .urun_kargo_takip_no
        .as_ref()
        .and_then(scalar)
        .filter(|t| !t.is_empty());
    Ok(OrderLine {
        external_id: position.to_string(),
        package_external_id: tracking,
        sku: None,
        product_name: non_empty(wire.urun_adi),
        quantity,
        unit_price: amount(wire.urun_fiyat.as_ref()).map_err(|e| format!("`urunFiyat`: {e}"))?,
        total_price: amount(wire.urun_tutar.as_ref()).map_err(|e| format!("`urunTutar`: {e}"))?,
        currency: currency(wire.urun_para_birimi),
        state,
        status: status.clone(),
        raw: raw.into(),
    })
}

/// One package per distinct tracking number, in line order (see the module documentation). Its raw
/// payload is the carrier and tracking fields of its first line.
fn packages(lines: &[OrderLine], state: OrderState, status: &RawStatus) -> Vec<Package> {
    let mut packages: Vec<Package> = Vec::new();
    for line in lines {
        let Some(tracking) = &line.package_external_id else {
            continue;
        };
        if let Some(package) = packages.iter_mut().find(|p| &p.external_id == tracking) {
            package.total_amount = package
                .total_amount
                .zip(line.total_price)
                .map(|(a, b)| a + b);
            continue;
        }
        let line_raw = line.raw.value();
        let carrier = line_raw
            .get("urunKargo")
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .map(str::to_owned);
        let raw: Map<String, Value> = ["urunKargo", "urunKargoTakipNo", "urunKargoTeslimTarihi"]
            .iter()
            .filter_map(|k| line_raw.get(*k).map(|v| ((*k).to_owned(), v.clone())))
            .collect();
        packages.push(Package {
            external_id: tracking.clone(),
            state,
            status: status.clone(),
            carrier,
            tracking_number: Some(tracking.clone()),
            total_amount: line.total_price,
            raw: Value::Object(raw).into(),
        });
    }
    packages
}

fn currency(raw: Option<String>) -> Option<Currency> {
    non_empty(raw).map(|c| Currency::parse(&c))
}

fn non_empty(text: Option<String>) -> Option<String> {
    text.filter(|t| !t.trim().is_empty())
}

/// A string or number as text; `None` for anything else.
fn scalar(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.trim().to_owned()),
        Value::Number(n) => Some(n.as_str().to_owned()),
        _ => None,
    }
}

/// `dd.MM.yyyy HH:mm[:ss]` or `dd.MM.yyyy`, Istanbul time.
fn parse_date(text: &str) -> Option<DateTime<Utc>> {
    let naive = ["%d.%m.%Y %H:%M", "%d.%m.%Y %H:%M:%S"]
        .iter()
        .find_map(|f| NaiveDateTime::parse_from_str(text, f).ok())
        .or_else(|| {
            NaiveDate::parse_from_str(text, "%d.%m.%Y")
                .ok()
                .and_then(|d| d.and_hms_opt(0, 0, 0))
        })?;
    istanbul(&naive)
}
