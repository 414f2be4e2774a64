//! allesgo's wire format — the `{"data": …}` envelope, orders, packages, items and status codes as
//! the API sends them — and their conversion into the domain types.
//!
//! The document gives field types only loosely ("Number", "Integer", "String"), so scalar fields are
//! read as JSON values and converted by hand: numbers and codes may come as JSON numbers or strings.
//!
//! **Amounts** are read as Turkish lira exactly as written (a JSON number's literal text, or a string
//! such as `"149.90"` or `"149,90"`), never through `f64`. The digest warns that some amounts may
//! arrive as integer kuruş, but no field is documented as such and an integer such as `150` is an
//! ordinary lira amount, so integers are never divided by 100; the literal stays in `raw` so a field
//! found to carry kuruş can be re-derived.
//!
//! **Dates** (`order_date`, type "String" without a format) are accepted as RFC 3339 with an offset,
//! Unix seconds (number or digits), or a local `YYYY-MM-DD[ T]HH:MM[:SS]`, `DD.MM.YYYY HH:MM[:SS]`,
//! `DD/MM/YYYY HH:MM[:SS]` or bare date taken as Europe/Istanbul time. Anything else is malformed.

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use std::collections::BTreeMap;

use serde::de::value::MapAccessDeserializer;
use serde::de::{DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use super::state::{Statuses, derive_order_state};
use crate::domain::{Currency, Order, OrderLine, Package, RawStatus};
use crate::http::Redactor;
use crate::marketplace::payload::istanbul;
use crate::marketplace::payload::{Json, amount, kind, scrub};
use crate::marketplace::{OrderBatch, StatusDescription};

/// Why a 200 response could not be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Problem {
    /// The body is not what the document describes.
    Malformed(String),
    /// The API reported an error inside the body.
    Rejected(String),
}

#[derive(Deserialize)]
struct WireOrder {
    code: Option<Value>,
    order_date: Option<Value>,
    email: Option<String>,
    shipping_address: Option<Value>,
    total_price: Option<Value>,
    total_shipping_price: Option<Value>,
    packages: Option<Vec<Value>>,
}

#[derive(Deserialize)]
struct WirePackage {
    package_id: Option<Value>,
    status: Option<Value>,
    status_explained: Option<String>,
    shipping: Option<WireShipping>,
    total_price: Option<Value>,
    items: Option<Vec<Value>>,
}

#[derive(Deserialize)]
struct WireShipping {
    shipping_company: Option<Value>,
    /// Not in the document's example, but the `ship` action sends the tracking number under this
    /// name; read it when a package echoes it.
    shipping_code: Option<Value>,
}

#[derive(Deserialize)]
struct WireItem {
    product_name: Option<String>,
    product_code: Option<Value>,
    count: Option<Value>,
    product_price: Option<Value>,
    paid_amount: Option<Value>,
    currency: Option<String>,
    status: Option<Value>,
    status_explained: Option<String>,
}

#[derive(Deserialize)]
struct WireStatusCode {
    code: Value,
    description: Option<String>,
}

/// The orders of a `GET /v1.0/order/store/{storeId}` response held whole (a read-back). `data` may be
/// an array, a single order or null (no orders).
pub(super) fn parse_orders(
    body: &[u8],
    statuses: &Statuses,
    redactor: &Redactor,
) -> Result<Vec<Order>, Problem> {
    let mut orders = Vec::new();
    let mut de = serde_json::Deserializer::from_slice(body);
    read_orders(&mut de, statuses, redactor, usize::MAX, |batch| {
        orders.extend(batch.orders);
        true
    })
    .map_err(|problem| match problem {
        ListingProblem::Body(problem) => problem,
        ListingProblem::Order { index, reason, .. } => {
            Problem::Malformed(format!("order #{index}: {reason}"))
        }
        ListingProblem::Read(e) => Problem::Malformed(format!("not JSON: {e}")),
        ListingProblem::Stopped => {
            Problem::Malformed("the listing was not read to its end".to_owned())
        }
    })?;
    Ok(orders)
}

/// Why reading a listing stopped.
#[derive(Debug)]
pub(super) enum ListingProblem {
    /// The body as a whole is not what the document describes, or reports an error.
    Body(Problem),
    /// The `index`-th order (from 1) could not be converted; `raw` is its text as received.
    Order {
        index: usize,
        reason: String,
        raw: String,
    },
    /// Reading the body failed: the connection broke off.
    Read(std::io::Error),
    /// `deliver` asked to stop: nobody waits for the orders any more.
    Stopped,
}

/// Reads the orders of a `GET /v1.0/order/store/{storeId}` response from `de` and hands them to
/// `deliver` in batches of at most `batch_size` as they are read, the last one (possibly empty) marked
/// as such; `deliver` returns `false` to stop. An array is read one order at a time, so an unpaginated
/// answer of any size costs one batch of orders in memory, not the whole body: orders before a problem
/// have been delivered when it is returned. Members other than `data` (an error, a message) are
/// judged after the whole envelope is read.
pub(super) fn read_orders<'de, R: serde_json::de::Read<'de>>(
    de: &mut serde_json::Deserializer<R>,
    statuses: &Statuses,
    redactor: &Redactor,
    batch_size: usize,
    deliver: impl FnMut(OrderBatch) -> bool,
) -> Result<(), ListingProblem> {
    let mut listing = Listing {
        statuses,
        redactor,
        batch_size,
        batch: Vec::new(),
        read: 0,
        deliver,
        failure: None,
    };
    let read = EnvelopeSeed(&mut listing)
        .deserialize(&mut *de)
        .and_then(|envelope| de.end().map(|()| envelope));
    let (members, data) = match read {
        Ok(envelope) => envelope,
        Err(e) => {
            return Err(listing.failure.take().unwrap_or_else(|| {
                if e.is_io() {
                    ListingProblem::Read(e.into())
                } else if e.is_data() {
                    ListingProblem::Body(Problem::Malformed(e.to_string()))
                } else {
                    ListingProblem::Body(Problem::Malformed(format!("not JSON: {e}")))
                }
            }));
        }
    };
    let data = judge(&members, data, |data| match data {
        Data::Value(Value::Object(inner)) => Some(inner),
        _ => None,
    })
    .map_err(ListingProblem::Body)?;
    match data {
        Data::Orders | Data::Value(Value::Null) => {}
        Data::Value(order @ Value::Object(_)) => {
            listing.order(&order.to_string())?;
        }
        Data::Value(other) => {
            return Err(ListingProblem::Body(Problem::Malformed(format!(
                "`data` is a {}, expected orders",
                kind(&other)
            ))));
        }
    }
    listing.flush(true)
}

/// A listing being read: the batch being filled and where it goes.
struct Listing<'a, F> {
    statuses: &'a Statuses,
    redactor: &'a Redactor,
    batch_size: usize,
    batch: Vec<Order>,
    /// Orders read so far.
    read: usize,
    deliver: F,
    /// Why the listing stopped, when an order or `deliver` stopped it (serde's error then only says
    /// that it stopped).
    failure: Option<ListingProblem>,
}

impl<F: FnMut(OrderBatch) -> bool> Listing<'_, F> {
    /// Converts one order from its text and delivers the batch when it is full.
    fn order(&mut self, text: &str) -> Result<(), ListingProblem> {
        self.read += 1;
        let order = serde_json::from_str(text)
            .map_err(|e| e.to_string())
            .and_then(|mut raw| {
                scrub(&mut raw, self.redactor, &["access_token"]);
                convert_order(raw, self.statuses)
            })
            .map_err(|reason| ListingProblem::Order {
                index: self.read,
                reason,
                raw: text.to_owned(),
            })?;
        self.batch.push(order);
        if self.batch.len() >= self.batch_size {
            self.flush(false)?;
        }
        Ok(())
    }

    fn flush(&mut self, last: bool) -> Result<(), ListingProblem> {
        let orders = std::mem::take(&mut self.batch);
        if (self.deliver)(OrderBatch { orders, last }) {
            Ok(())
        } else {
            Err(ListingProblem::Stopped)
        }
    }

    /// Records why reading stopped, as an error serde carries out.
    fn stop<E: serde::de::Error>(&mut self, problem: ListingProblem) -> E {
        self.failure = Some(problem);
        E::custom("the listing stopped")
    }
}

/// What the envelope's `data` member held.
enum Data {
    /// An array, whose orders were delivered as they were read.
    Orders,
    Value(Value),
}

/// The envelope: its members other than `data`, and `data` when present.
struct EnvelopeSeed<'l, 'a, F>(&'l mut Listing<'a, F>);

impl<'de, F: FnMut(OrderBatch) -> bool> DeserializeSeed<'de> for EnvelopeSeed<'_, '_, F> {
    type Value = (Map<String, Value>, Option<Data>);

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de, F: FnMut(OrderBatch) -> bool> Visitor<'de> for EnvelopeSeed<'_, '_, F> {
    type Value = (Map<String, Value>, Option<Data>);

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an object with `data`")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut members = Map::new();
        let mut data = None;
        while let Some(name) = map.next_key::<String>()? {
            if name == "data" {
                data = Some(map.next_value_seed(DataSeed(&mut *self.0))?);
            } else {
                members.insert(name, map.next_value()?);
            }
        }
        Ok((members, data))
    }
}

/// The `data` member: an array is read (and delivered) order by order, anything else as a value.
struct DataSeed<'l, 'a, F>(&'l mut Listing<'a, F>);

impl<'de, F: FnMut(OrderBatch) -> bool> DeserializeSeed<'de> for DataSeed<'_, '_, F> {
    type Value = Data;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Data, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de, F: FnMut(OrderBatch) -> bool> Visitor<'de> for DataSeed<'_, '_, F> {
    type Value = Data;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("orders")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Data, A::Error> {
        while let Some(text) = seq.next_element::<Box<RawValue>>()? {
            if let Err(problem) = self.0.order(text.get()) {
                return Err(self.0.stop(problem));
            }
        }
        Ok(Data::Orders)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Data, A::Error> {
        Value::deserialize(MapAccessDeserializer::new(map)).map(Data::Value)
    }

    fn visit_unit<E>(self) -> Result<Data, E> {
        Ok(Data::Value(Value::Null))
    }

    fn visit_bool<E>(self, v: bool) -> Result<Data, E> {
        Ok(Data::Value(Value::Bool(v)))
    }

    fn visit_str<E>(self, v: &str) -> Result<Data, E> {
        Ok(Data::Value(Value::String(v.to_owned())))
    }
}

/// The catalogue of a `GET /v1.0/order/status-codes` response.
pub(super) fn parse_status_codes(body: &[u8]) -> Result<Vec<StatusDescription>, Problem> {
    let data = match envelope_data(body)? {
        Value::Array(codes) => codes,
        one @ Value::Object(_) => vec![one],
        Value::Null => Vec::new(),
        other => {
            return Err(Problem::Malformed(format!(
                "`data` is a {}, expected status codes",
                kind(&other)
            )));
        }
    };
    data.into_iter()
        .map(|v| {
            let wire: WireStatusCode = serde_json::from_value(v)
                .map_err(|e| Problem::Malformed(format!("status code: {e}")))?;
            let code = scalar(&wire.code)
                .ok_or_else(|| Problem::Malformed("status code without a code".to_owned()))?;
            Ok(StatusDescription {
                code,
                description: wire.description.unwrap_or_default(),
            })
        })
        .collect()
}

/// The outcome of an action's 200 response (`POST /v1.0/order/{action}/store/…`): `{"data": {…}}`
/// is done; `data.success: false` or an `error` member is the API refusing it, with its message.
pub(super) fn action_result(body: &[u8]) -> Result<(), Problem> {
    envelope_data(body).map(|_| ())
}

/// The API's own message in an error body, for 4xx responses.
pub(super) fn api_message(body: &[u8]) -> Option<String> {
    match serde_json::from_slice::<Value>(body).ok()? {
        Value::Object(map) => error_message(&map).or_else(|| match map.get("data") {
            Some(Value::Object(data)) => error_message(data),
            _ => None,
        }),
        _ => None,
    }
}

/// The `data` member of a response, or the error the body reports instead.
fn envelope_data(body: &[u8]) -> Result<Value, Problem> {
    match envelope(body)? {
        Json::Array(elements) => elements
            .into_iter()
            .map(|text| serde_json::from_str(text.get()))
            .collect::<Result<Vec<Value>, _>>()
            .map(Value::Array)
            .map_err(|e| Problem::Malformed(format!("not JSON: {e}"))),
        Json::Other(value) => Ok(value),
    }
}

/// The `data` member of a response (an array as its elements' texts, see [`Json`]), or the error the
/// body reports instead.
fn envelope(body: &[u8]) -> Result<Json<'_>, Problem> {
    let malformed = |e: serde_json::Error| Problem::Malformed(format!("not JSON: {e}"));
    let whole: &RawValue = serde_json::from_slice(body).map_err(malformed)?;
    if !whole.get().trim_start().starts_with('{') {
        let value: Value = serde_json::from_str(whole.get()).map_err(malformed)?;
        return Err(Problem::Malformed(format!(
            "the body is a {}, expected an object with `data`",
            kind(&value)
        )));
    }
    // The members as texts: only `data` may be large, and it is read one level deep.
    let members: BTreeMap<String, &RawValue> =
        serde_json::from_str(whole.get()).map_err(malformed)?;
    let mut map = Map::new();
    let mut data = None;
    for (name, text) in members {
        if name == "data" {
            data = Some(Json::of(text).map_err(malformed)?);
        } else {
            map.insert(name, serde_json::from_str(text.get()).map_err(malformed)?);
        }
    }
    judge(&map, data, |data| match data {
        Json::Other(Value::Object(inner)) => Some(inner),
        _ => None,
    })
}

/// The envelope's verdict, from its members other than `data` and its `data` (`object` shows an
/// object `data` as a map): an `error` member, or a message without `data`, is the API refusing;
/// no `data` at all is malformed.
fn judge<D>(
    members: &Map<String, Value>,
    data: Option<D>,
    object: impl Fn(&D) -> Option<&Map<String, Value>>,
) -> Result<D, Problem> {
    if (members.get("error").is_some_and(|e| !e.is_null()) || data.is_none())
        && let Some(message) = error_message(members)
    {
        return Err(Problem::Rejected(message));
    }
    let data = data.ok_or_else(|| Problem::Malformed("no `data` member".to_owned()))?;
    // Actions answer `{"data": {"success": false, "message": …}}`; a listing could fail alike.
    if let Some(inner) = object(&data)
        && inner.get("success") == Some(&Value::Bool(false))
    {
        return Err(Problem::Rejected(
            error_message(inner).unwrap_or_else(|| "the API reported no success".to_owned()),
        ));
    }
    Ok(data)
}

/// The API's message; a blank one is no message (the caller then says what it knows instead).
fn error_message(map: &Map<String, Value>) -> Option<String> {
    let text = |v: &Value| {
        v.as_str()
            .filter(|s| !s.trim().is_empty())
            .map(str::to_owned)
    };
    let from_error = match map.get("error") {
        Some(s @ Value::String(_)) => text(s),
        Some(Value::Object(inner)) => ["message", "description", "error_description"]
            .iter()
            .find_map(|k| inner.get(*k).and_then(text))
            .or_else(|| Some(Value::Object(inner.clone()).to_string())),
        _ => None,
    };
    from_error.or_else(|| {
        ["message", "error_description", "notice"]
            .iter()
            .find_map(|k| map.get(*k).and_then(text))
    })
}

fn convert_order(raw: Value, statuses: &Statuses) -> Result<Order, String> {
    let wire = WireOrder::deserialize(&raw).map_err(|e| e.to_string())?;
    let external_id = wire
        .code
        .as_ref()
        .and_then(scalar)
        .filter(|c| !c.is_empty())
        .ok_or("no `code`")?;
    let placed_at = wire
        .order_date
        .as_ref()
        .map(|d| date(d).map_err(|e| format!("`order_date`: {e}")))
        .transpose()?
        .flatten();

    let mut packages = Vec::new();
    let mut lines = Vec::new();
    for (p, package_raw) in wire.packages.unwrap_or_default().into_iter().enumerate() {
        let (package, package_lines) = convert_package(package_raw, p + 1, statuses)
            .map_err(|e| format!("package #{}: {e}", p + 1))?;
        packages.push(package);
        lines.extend(package_lines);
    }

    let state = derive_order_state(&packages.iter().map(|p| p.state).collect::<Vec<_>>());
    let status = order_status(&packages);
    let currency = lines.iter().find_map(|l: &OrderLine| l.currency.clone());
    Ok(Order {
        external_id,
        order_number: None,
        state,
        status,
        total_amount: amount(wire.total_price.as_ref())
            .map_err(|e| format!("`total_price`: {e}"))?,
        shipping_amount: amount(wire.total_shipping_price.as_ref())
            .map_err(|e| format!("`total_shipping_price`: {e}"))?,
        currency,
        customer_name: None,
        customer_email: wire.email.filter(|e| !e.trim().is_empty()),
        shipping_city: wire.shipping_address.as_ref().and_then(city),
        placed_at,
        // allesgo sends no change time for an order.
        source_updated_at: None,
        lines,
        packages,
        raw: raw.into(),
    })
}

fn convert_package(
    raw: Value,
    position: usize,
    statuses: &Statuses,
) -> Result<(Package, Vec<OrderLine>), String> {
    let wire = WirePackage::deserialize(&raw).map_err(|e| e.to_string())?;
    let external_id = wire
        .package_id
        .as_ref()
        .and_then(scalar)
        .filter(|id| !id.is_empty())
        .unwrap_or_else(|| position.to_string());
    let status = RawStatus {
        code: wire.status.as_ref().and_then(scalar),
        text: wire.status_explained,
    };
    let shipping = wire.shipping;
    let lines = wire
        .items
        .unwrap_or_default()
        .into_iter()
        .enumerate()
        .map(|(i, item)| {
            convert_item(item, &external_id, i + 1, statuses)
                .map_err(|e| format!("item #{}: {e}", i + 1))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let package = Package {
        state: statuses.state(status.code.as_deref(), status.text.as_deref()),
        status,
        carrier: shipping
            .as_ref()
            .and_then(|s| s.shipping_company.as_ref())
            .and_then(scalar)
            .filter(|c| !c.is_empty()),
        tracking_number: shipping
            .as_ref()
            .and_then(|s| s.shipping_code.as_ref())
            .and_then(scalar)
            .filter(|c| !c.is_empty()),
        total_amount: amount(wire.total_price.as_ref())
            .map_err(|e| format!("`total_price`: {e}"))?,
        external_id,
        raw: raw.into(),
    };
    Ok((package, lines))
}

/// Items have no identifier of their own (`order_number` and `product_id` repeat across lines), so
/// a line is named by its package and its position in it: `{package_id}/{n}`.
fn convert_item(
    raw: Value,
    package_id: &str,
    position: usize,
    statuses: &Statuses,
) -> Result<OrderLine, String> {
    let wire = WireItem::deserialize(&raw).map_err(|e| e.to_string())?;
    let quantity = amount(wire.count.as_ref())
        .map_err(|e| format!("`count`: {e}"))?
        .ok_or("no `count`")?;
    let status = RawStatus {
        code: wire.status.as_ref().and_then(scalar),
        text: wire.status_explained,
    };
    Ok(OrderLine {
        external_id: format!("{package_id}/{position}"),
        package_external_id: Some(package_id.to_owned()),
        sku: wire
            .product_code
            .as_ref()
            .and_then(scalar)
            .filter(|s| !s.is_empty()),
        product_name: wire.product_name,
        quantity,
        unit_price: amount(wire.product_price.as_ref())
            .map_err(|e| format!("`product_price`: {e}"))?,
        total_price: amount(wire.paid_amount.as_ref())
            .map_err(|e| format!("`paid_amount`: {e}"))?,
        currency: wire
            .currency
            .filter(|c| !c.trim().is_empty())
            .map(|c| Currency::parse(&c)),
        state: statuses.state(status.code.as_deref(), status.text.as_deref()),
        status,
        raw: raw.into(),
    })
}

/// The order's raw status: the distinct codes and descriptions of its packages, in package order
/// (`"3"` / `"Kargoya Verildi"` for a one-package order, `"3,8"` / `"Kargoya Verildi | İptal Edildi"`
/// when packages differ).
fn order_status(packages: &[Package]) -> RawStatus {
    fn distinct<'a>(values: impl Iterator<Item = &'a str>, separator: &str) -> Option<String> {
        let mut seen: Vec<&str> = Vec::new();
        for v in values {
            if !seen.contains(&v) {
                seen.push(v);
            }
        }
        (!seen.is_empty()).then(|| seen.join(separator))
    }
    RawStatus {
        code: distinct(
            packages.iter().filter_map(|p| p.status.code.as_deref()),
            ",",
        ),
        text: distinct(
            packages.iter().filter_map(|p| p.status.text.as_deref()),
            " | ",
        ),
    }
}

/// The city of a shipping address, when the API sends the address as an object.
fn city(address: &Value) -> Option<String> {
    let Value::Object(map) = address else {
        return None;
    };
    ["city", "il", "province"]
        .iter()
        .find_map(|k| map.get(*k).and_then(scalar))
        .filter(|c| !c.is_empty())
}

/// A string, number or boolean as text; `None` for null, arrays and objects.
fn scalar(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.trim().to_owned()),
        Value::Number(n) => Some(n.as_str().to_owned()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// A date-time in one of the accepted forms (see the module documentation).
fn date(value: &Value) -> Result<Option<DateTime<Utc>>, String> {
    let text = match value {
        Value::Null => return Ok(None),
        Value::Number(n) => n.as_str().to_owned(),
        Value::String(s) if s.trim().is_empty() => return Ok(None),
        Value::String(s) => s.trim().to_owned(),
        other => return Err(format!("a {} is not a date", kind(other))),
    };
    parse_date(&text)
        .map(Some)
        .ok_or_else(|| format!("`{text}` is not a date"))
}

fn parse_date(text: &str) -> Option<DateTime<Utc>> {
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        let n: i64 = text.parse().ok()?;
        // Thirteen digits are milliseconds; ten are seconds.
        return if text.len() >= 13 {
            DateTime::from_timestamp_millis(n)
        } else {
            DateTime::from_timestamp(n, 0)
        };
    }
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Some(t.with_timezone(&Utc));
    }
    const LOCAL: [&str; 6] = [
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M",
        "%d.%m.%Y %H:%M:%S",
        "%d.%m.%Y %H:%M",
        "%d/%m/%Y %H:%M:%S",
    ];
    let naive = LOCAL
        .iter()
        .find_map(|f| NaiveDateTime::parse_from_str(text, f).ok())
        .or_else(|| {
            ["%Y-%m-%d", "%d.%m.%Y"]
                .iter()
                .find_map(|f| NaiveDate::parse_from_str(text, f).ok())
                .and_then(|d| d.and_hms_opt(0, 0, 0))
        })?;
    istanbul(&naive)
}
