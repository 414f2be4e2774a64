//! i1's wire format: the list envelope, orders, order items, customer addresses and cancellation plans
//! as the API sends them, and their conversion into a domain [`Order`].
//!
//! Every payload is first read as a `serde_json::Value` (kept verbatim for `Order.raw`), then the few
//! fields ordersync normalizes are read from it into the private types below. Fields the API documents
//! as decimals may arrive as strings (`"629.00"`) or JSON numbers; both are read from their literal
//! text. Enums (statuses) are read as text because new values appear over time.

use chrono::{DateTime, NaiveDateTime, Utc};
use rust_decimal::Decimal;
use serde::de::{DeserializeOwned, Error as _};
use serde::{Deserialize, Deserializer};
use serde_json::{Map, Value};

use crate::domain::{Currency, Order, OrderLine, OrderState, RawStatus};
use crate::marketplace::StatusMap;
use crate::marketplace::payload::istanbul;
use crate::marketplace::payload::{is_json, scalar_text};

/// Statuses of orders and order items (the same enum), keyed by their code as text.
pub(super) const STATUS_DEFAULTS: &[(&str, OrderState)] = &[
    ("100", OrderState::AwaitingApproval),
    ("200", OrderState::Approved),
    ("300", OrderState::Preparing),
    ("400", OrderState::Packaged),
    ("500", OrderState::Shipped),
    ("600", OrderState::Delivered),
    ("700", OrderState::CancelRequested),
    ("800", OrderState::Cancelled),
    ("900", OrderState::Rejected),
];

/// Status codes after which an order or item may have a cancellation plan.
const CANCELLATION_CODES: [&str; 3] = ["700", "800", "900"];

/// The envelope of every list endpoint: `{count, next, previous, results[]}`.
#[derive(Debug, Deserialize)]
pub(super) struct ListPage {
    #[serde(default)]
    count: Value,
    #[serde(default)]
    pub next: Option<String>,
    pub results: Vec<Value>,
}

impl ListPage {
    /// How many rows the filtered list holds, as the API counted them for this answer; `None` when
    /// it did not say.
    pub fn count(&self) -> Option<u64> {
        self.count.as_u64()
    }
}

/// What a 200 body of a list endpoint turned out to be when it is not a list.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum BodyError {
    /// Not JSON, not the documented shape, or the wrong content type.
    Malformed(String),
    /// The API's own error message (`{"detail": "…"}`) inside a successful response.
    Api(String),
}

/// Reads a 200 response of a list endpoint.
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
    if value.get("results").is_none() {
        if let Some(message) = api_message_of(&value) {
            return Err(BodyError::Api(message));
        }
        return Err(BodyError::Malformed(
            "no `results` list in the response".to_owned(),
        ));
    }
    serde_path_to_error::deserialize(&value).map_err(|e| BodyError::Malformed(e.to_string()))
}

/// The API's error message in an error body: Django REST framework's `{"detail": "…"}`, its
/// `non_field_errors`, or its per-field lists (`{"status": ["…"]}`).
pub(super) fn api_message(body: &[u8]) -> Option<String> {
    serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| api_message_of(&v))
}

fn api_message_of(value: &Value) -> Option<String> {
    let object = value.as_object()?;
    // A blank message is no message: the caller then says what it knows instead.
    if let Some(detail) = object
        .get("detail")
        .and_then(Value::as_str)
        .filter(|d| !d.trim().is_empty())
    {
        return Some(detail.to_owned());
    }
    let messages: Vec<String> = object
        .iter()
        .filter_map(|(field, messages)| {
            let texts: Vec<&str> = messages
                .as_array()?
                .iter()
                .filter_map(Value::as_str)
                .filter(|t| !t.trim().is_empty())
                .collect();
            if texts.is_empty() {
                return None;
            }
            Some(if field == "non_field_errors" {
                texts.join("; ")
            } else {
                format!("{field}: {}", texts.join("; "))
            })
        })
        .collect();
    (!messages.is_empty()).then(|| messages.join("; "))
}

/// Reads one result of a list into a wire type; the error names the offending field.
pub(super) fn parse<T: DeserializeOwned>(value: &Value) -> Result<T, String> {
    serde_path_to_error::deserialize(value).map_err(|e| e.to_string())
}

/// An order as listed by `orders/` (only the fields ordersync normalizes).
#[derive(Debug, Deserialize)]
pub(super) struct WireOrder {
    #[serde(deserialize_with = "crate::marketplace::payload::de::text")]
    pub id: String,
    /// Required: items can only be asked for by the order's number.
    #[serde(deserialize_with = "crate::marketplace::payload::de::text")]
    pub number: String,
    #[serde(
        default,
        deserialize_with = "crate::marketplace::payload::de::opt_text"
    )]
    pub status: Option<String>,
    #[serde(default)]
    pub currency: Option<String>,
    #[serde(default, deserialize_with = "crate::marketplace::payload::de::amount")]
    pub amount: Option<Decimal>,
    #[serde(default, deserialize_with = "crate::marketplace::payload::de::amount")]
    pub shipping_amount: Option<Decimal>,
    #[serde(default, deserialize_with = "date_time")]
    pub date_placed: Option<DateTime<Utc>>,
    #[serde(default, deserialize_with = "date_time")]
    pub updated_at: Option<DateTime<Utc>>,
    /// An address id (as documented) or, defensively, the address object itself.
    #[serde(default)]
    pub shipping_address: Option<Value>,
    #[serde(default)]
    pub billing_address: Option<Value>,
    #[serde(
        default,
        deserialize_with = "crate::marketplace::payload::de::opt_text"
    )]
    pub cancel_status: Option<String>,
}

/// How an order refers to one of its addresses.
#[derive(Debug, PartialEq)]
pub(super) enum AddressRef<'a> {
    /// By id: the address must be fetched from `customer-addresses/`.
    Id(String),
    /// Already expanded inside the order.
    Embedded(&'a Value),
}

impl WireOrder {
    pub fn shipping_ref(&self) -> Option<AddressRef<'_>> {
        address_ref(self.shipping_address.as_ref())
    }

    pub fn billing_ref(&self) -> Option<AddressRef<'_>> {
        address_ref(self.billing_address.as_ref())
    }
}

fn address_ref(value: Option<&Value>) -> Option<AddressRef<'_>> {
    match value? {
        Value::Object(_) => value.map(AddressRef::Embedded),
        other => scalar_text(other)
            .filter(|s| !s.is_empty())
            .map(AddressRef::Id),
    }
}

/// An order item as listed by `order-items/`.
#[derive(Debug, Deserialize)]
pub(super) struct WireItem {
    #[serde(deserialize_with = "crate::marketplace::payload::de::text")]
    pub id: String,
    #[serde(
        default,
        deserialize_with = "crate::marketplace::payload::de::opt_text"
    )]
    pub order: Option<String>,
    #[serde(
        default,
        deserialize_with = "crate::marketplace::payload::de::opt_text"
    )]
    pub sku: Option<String>,
    #[serde(
        default,
        deserialize_with = "crate::marketplace::payload::de::opt_text"
    )]
    pub status: Option<String>,
    #[serde(default)]
    pub price_currency: Option<String>,
    #[serde(default, deserialize_with = "crate::marketplace::payload::de::amount")]
    pub price: Option<Decimal>,
    #[serde(
        default,
        deserialize_with = "crate::marketplace::payload::de::opt_text"
    )]
    pub cancel_status: Option<String>,
}

/// A customer address as listed by `customer-addresses/`.
#[derive(Debug, Deserialize)]
pub(super) struct WireAddress {
    #[serde(
        default,
        deserialize_with = "crate::marketplace::payload::de::opt_text"
    )]
    pub id: Option<String>,
    #[serde(default)]
    pub email: Option<String>,
    #[serde(default)]
    pub first_name: Option<String>,
    #[serde(default)]
    pub last_name: Option<String>,
    /// A city id (as documented) or an expanded `{"name": …}` object.
    #[serde(default)]
    pub city: Option<Value>,
}

impl WireAddress {
    fn full_name(&self) -> Option<String> {
        let name = [self.first_name.as_deref(), self.last_name.as_deref()]
            .into_iter()
            .flatten()
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
            .join(" ");
        (!name.is_empty()).then_some(name)
    }

    /// The city's name. The documented payload holds only a city id, which is not a name: a UUID
    /// is not reported as the city.
    fn city_name(&self) -> Option<String> {
        match self.city.as_ref()? {
            Value::Object(city) => city.get("name").and_then(Value::as_str).map(str::to_owned),
            Value::String(s) if !s.trim().is_empty() && !is_uuid(s) => Some(s.clone()),
            _ => None,
        }
    }
}

/// A cancellation plan; only its order is read, the rest stays raw.
#[derive(Debug, Deserialize)]
pub(super) struct WirePlan {
    #[serde(
        default,
        deserialize_with = "crate::marketplace::payload::de::opt_text"
    )]
    pub order: Option<String>,
}

impl WireOrder {
    /// Whether the order or one of its items is in a state where a cancellation plan may exist.
    pub fn may_have_cancellation_plans(&self, items: &[(Value, WireItem)]) -> bool {
        let cancelling = |status: Option<&str>, cancel_status: Option<&str>| {
            cancel_status.is_some() || status.is_some_and(|s| CANCELLATION_CODES.contains(&s))
        };
        cancelling(self.status.as_deref(), self.cancel_status.as_deref())
            || items
                .iter()
                .any(|(_, i)| cancelling(i.status.as_deref(), i.cancel_status.as_deref()))
    }
}

/// An order as ordersync stored it (the `Order.raw` of [`Assembled::into_order`]), read back to tell
/// whether a listing shows anything new.
#[derive(Debug, Deserialize)]
pub(super) struct StoredOrder {
    order: Value,
    #[serde(default)]
    items: Vec<Value>,
    #[serde(default)]
    cancellation_plans: Option<Vec<Value>>,
}

impl StoredOrder {
    /// The stored copy in `text`; `None` when it is not one of an i1 order.
    pub fn read(text: &str) -> Option<StoredOrder> {
        serde_json::from_str(text).ok()
    }

    /// Whether this copy holds `raw`, the order's record as listed now (`order` read from it), and
    /// cancellation plans wherever the order may have some: a plan may be made after the change of
    /// its order, so a copy stored without one is read again while the order is listed.
    pub fn holds(&self, raw: &Value, order: &WireOrder) -> bool {
        self.order == *raw && self.has_plans_if_due(order)
    }

    /// Whether this copy holds each of `items` (items listed as changed) as it is now, and
    /// cancellation plans wherever its order may have some, as [`StoredOrder::holds`] asks.
    pub fn holds_items(&self, items: &[Value]) -> bool {
        items.iter().all(|item| self.items.contains(item))
            && parse::<WireOrder>(&self.order).is_ok_and(|order| self.has_plans_if_due(&order))
    }

    /// Whether this copy holds cancellation plans, if `order` with the stored items may have some.
    fn has_plans_if_due(&self, order: &WireOrder) -> bool {
        let items: Vec<(Value, WireItem)> = self
            .items
            .iter()
            .filter_map(|raw| Some((raw.clone(), parse::<WireItem>(raw).ok()?)))
            .collect();
        !order.may_have_cancellation_plans(&items)
            || self
                .cancellation_plans
                .as_ref()
                .is_some_and(|plans| !plans.is_empty())
    }
}

/// An address as fetched: its raw object and the fields read from it.
pub(super) type FetchedAddress = (Value, WireAddress);

/// An order with everything fetched for it, ready to become a domain [`Order`].
pub(super) struct Assembled<'a> {
    pub raw: Value,
    pub order: WireOrder,
    pub items: Vec<(Value, WireItem)>,
    pub shipping_address: Option<&'a FetchedAddress>,
    pub billing_address: Option<&'a FetchedAddress>,
    /// `None` when the order gave no reason to look for plans.
    pub cancellation_plans: Option<Vec<Value>>,
}

impl Assembled<'_> {
    /// The domain order. Customer name and e-mail come from the shipping address, else the billing
    /// address. i1 items are single units (a quantity of two is two items), so every line has
    /// quantity 1 and its price is both unit and line total. i1 has no packages in this API.
    pub fn into_order(self, statuses: &StatusMap) -> Order {
        let Assembled {
            raw,
            order,
            items,
            shipping_address,
            billing_address,
            cancellation_plans,
        } = self;
        let addresses = [shipping_address, billing_address];
        let first = |f: fn(&WireAddress) -> Option<String>| {
            addresses.iter().flatten().find_map(|(_, a)| f(a))
        };
        let customer_name = first(WireAddress::full_name);
        let customer_email = first(|a| a.email.clone().filter(|e| !e.trim().is_empty()));
        let shipping_city = shipping_address.and_then(|(_, a)| a.city_name());

        let lines = items
            .iter()
            .map(|(raw, item)| OrderLine {
                external_id: item.id.clone(),
                package_external_id: None,
                sku: item.sku.clone(),
                product_name: None,
                quantity: Decimal::ONE,
                unit_price: item.price,
                total_price: item.price,
                currency: item.price_currency.as_deref().map(Currency::parse),
                state: status_state(statuses, item.status.as_deref()),
                status: RawStatus {
                    code: item.status.clone(),
                    text: None,
                },
                raw: raw.into(),
            })
            .collect();

        let mut full = Map::new();
        full.insert("order".to_owned(), raw);
        full.insert(
            "items".to_owned(),
            Value::Array(items.into_iter().map(|(raw, _)| raw).collect()),
        );
        full.insert(
            "shipping_address".to_owned(),
            shipping_address.map_or(Value::Null, |(raw, _)| raw.clone()),
        );
        full.insert(
            "billing_address".to_owned(),
            billing_address.map_or(Value::Null, |(raw, _)| raw.clone()),
        );
        if let Some(plans) = cancellation_plans {
            full.insert("cancellation_plans".to_owned(), Value::Array(plans));
        }

        Order {
            external_id: order.id,
            order_number: Some(order.number),
            state: status_state(statuses, order.status.as_deref()),
            status: RawStatus {
                code: order.status,
                text: None,
            },
            total_amount: order.amount,
            shipping_amount: order.shipping_amount,
            currency: order.currency.as_deref().map(Currency::parse),
            customer_name,
            customer_email,
            shipping_city,
            placed_at: order.date_placed,
            source_updated_at: order.updated_at,
            lines,
            packages: Vec::new(),
            raw: Value::Object(full).into(),
        }
    }
}

fn status_state(statuses: &StatusMap, code: Option<&str>) -> OrderState {
    code.map_or(OrderState::Unknown, |c| statuses.map(c))
}

pub(super) fn is_uuid(s: &str) -> bool {
    s.len() == 36
        && s.char_indices().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => c == '-',
            _ => c.is_ascii_hexdigit(),
        })
}

fn date_time<'de, D: Deserializer<'de>>(d: D) -> Result<Option<DateTime<Utc>>, D::Error> {
    match Option::<String>::deserialize(d)? {
        None => Ok(None),
        Some(s) if s.trim().is_empty() => Ok(None),
        Some(s) => parse_date_time(&s).map(Some).map_err(D::Error::custom),
    }
}

/// An i1 date-time: RFC 3339 (the API sends UTC with `Z`); one without an offset is taken as
/// Istanbul time, the house rule for local times.
pub(super) fn parse_date_time(text: &str) -> Result<DateTime<Utc>, String> {
    let text = text.trim();
    if let Ok(dt) = DateTime::parse_from_rfc3339(text) {
        return Ok(dt.with_timezone(&Utc));
    }
    let naive = ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"]
        .iter()
        .find_map(|f| NaiveDateTime::parse_from_str(text, f).ok())
        .ok_or_else(|| format!("`{text}` is not an RFC 3339 date-time"))?;
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
                "/tests/fixtures/i1/",
                $name
            ))
        };
    }

    const JSON: Option<&str> = Some("application/json; charset=utf-8");

    fn list(body: &str) -> ListPage {
        parse_list(JSON, body.as_bytes()).unwrap()
    }

    fn dec(s: &str) -> Decimal {
        s.parse().unwrap()
    }

    fn items(body: &str) -> Vec<(Value, WireItem)> {
        list(body)
            .results
            .into_iter()
            .map(|raw| {
                let item = parse(&raw).unwrap();
                (raw, item)
            })
            .collect()
    }

    fn address(body: &str) -> FetchedAddress {
        let raw = list(body).results.remove(0);
        let address = parse(&raw).unwrap();
        (raw, address)
    }

    fn statuses() -> StatusMap {
        StatusMap::new(STATUS_DEFAULTS, &HashMap::new())
    }

    #[test]
    fn reads_the_documented_order_with_its_items_and_address() {
        let page = list(fixture!("orders_page.json"));
        assert!(page.next.as_deref().unwrap().contains("offset=2"));
        let raw = page.results[0].clone();
        let order: WireOrder = parse(&raw).unwrap();
        assert_eq!(
            order.shipping_ref(),
            Some(AddressRef::Id(
                "a4c0eb06-9ad5-40a1-adc2-d4ea4a9aed32".into()
            ))
        );
        let items = items(fixture!("order_items_45243493.json"));
        assert!(!order.may_have_cancellation_plans(&items));
        let addr = address(fixture!("customer_addresses.json"));
        let order = Assembled {
            raw: raw.clone(),
            order,
            items,
            shipping_address: Some(&addr),
            billing_address: Some(&addr),
            cancellation_plans: None,
        }
        .into_order(&statuses());

        assert_eq!(order.external_id, "e819386c-b406-43dc-86c9-212ff633afe2");
        assert_eq!(order.order_number.as_deref(), Some("45243493"));
        assert_eq!(order.state, OrderState::AwaitingApproval);
        assert_eq!(order.status.code.as_deref(), Some("100"));
        assert_eq!(order.total_amount, Some(dec("629.00")));
        assert_eq!(order.total_amount.unwrap().to_string(), "629.00");
        assert_eq!(order.shipping_amount, Some(Decimal::ZERO));
        let currency = order.currency.as_ref().unwrap();
        assert_eq!((currency.raw.as_str(), currency.iso), ("usd", Some("USD")));
        assert_eq!(order.customer_name.as_deref(), Some("Akinon Akinon"));
        assert_eq!(order.customer_email.as_deref(), Some("akinon@akinon.com"));
        // The documented address holds a city id, not a name.
        assert_eq!(order.shipping_city, None);
        assert_eq!(
            order.placed_at.unwrap().to_rfc3339(),
            "2019-01-01T00:00:00+00:00"
        );
        assert_eq!(
            order.source_updated_at.unwrap().to_rfc3339(),
            "2024-05-01T08:30:00+00:00"
        );
        assert!(order.packages.is_empty());

        let line = &order.lines[0];
        assert_eq!(line.external_id, "33a11761-43bc-41d4-8f7f-1e860028367b");
        assert_eq!(line.sku.as_deref(), Some("SP-A"));
        assert_eq!(line.quantity, Decimal::ONE);
        assert_eq!(line.unit_price, Some(dec("629.00")));
        assert_eq!(line.state, OrderState::Delivered);
        assert_eq!(
            line.raw.value()["tracking_number"],
            "5c0095dab3c087befe04c0d5a0155d3e"
        );

        assert_eq!(order.raw.value()["order"], raw);
        assert_eq!(
            order.raw.value()["items"][0]["id"],
            line.external_id.as_str()
        );
        assert_eq!(order.raw.value()["shipping_address"]["postcode"], "34000");
        assert_eq!(order.raw.value()["billing_address"]["postcode"], "34000");
        assert!(order.raw.value().get("cancellation_plans").is_none());
    }

    #[test]
    fn turkish_text_float_amounts_and_cancellation() {
        let raw = list(fixture!("orders_page.json")).results.remove(1);
        let order: WireOrder = parse(&raw).unwrap();
        let items = items(fixture!("order_items_45243494.json"));
        assert!(order.may_have_cancellation_plans(&items));
        let shipping = address(fixture!("customer_addresses_tr.json"));
        let billing = address(fixture!("customer_addresses.json"));
        let plans = list(fixture!("cancellation_plans.json")).results;
        let order = Assembled {
            raw,
            order,
            items,
            shipping_address: Some(&shipping),
            billing_address: Some(&billing),
            cancellation_plans: Some(plans),
        }
        .into_order(&statuses());

        assert_eq!(order.state, OrderState::Cancelled);
        // A JSON float is read from its literal: no binary rounding.
        assert_eq!(order.total_amount.unwrap().to_string(), "1234.5678");
        assert_eq!(order.shipping_amount, Some(dec("29.90")));
        assert_eq!(order.currency.as_ref().unwrap().iso, Some("TRY"));
        assert_eq!(
            order.customer_name.as_deref(),
            Some("Gülşen Çağlayan Öztürk")
        );
        assert_eq!(
            order.customer_email.as_deref(),
            Some("gulsen.caglayan@example.com.tr")
        );
        assert_eq!(order.shipping_city.as_deref(), Some("İstanbul"));
        assert_eq!(
            order.placed_at.unwrap().to_rfc3339(),
            "2024-04-30T21:15:42.123456+00:00"
        );
        assert_eq!(
            order.source_updated_at.unwrap().to_rfc3339(),
            "2024-05-01T09:00:00+00:00"
        );
        assert_eq!(order.lines.len(), 2);
        assert_eq!(order.lines[0].sku.as_deref(), Some("ÇİÇEK-ŞAL-Ğ1"));
        assert_eq!(order.lines[0].unit_price.unwrap().to_string(), "617.2839");
        assert_eq!(order.lines[1].unit_price.unwrap().to_string(), "617.2839");
        assert_eq!(order.lines[0].state, OrderState::Cancelled);
        assert_eq!(
            order.raw.value()["order"]["gift_box_note"],
            "Doğum günün kutlu olsun, İpek! Çok güzel şeyler dilerim: ğüşıöç"
        );
        assert_eq!(
            order.raw.value()["order"]["amount"].to_string(),
            "1234.5678"
        );
        assert_eq!(
            order.raw.value()["order"]["discount_amount"].to_string(),
            "0.1"
        );
        assert_eq!(
            order.raw.value()["cancellation_plans"][0]["status"],
            "waiting"
        );
        assert_eq!(
            order.raw.value()["shipping_address"]["city"]["name"],
            "İstanbul"
        );
    }

    /// A stored copy holds a listing when it holds the very record listed and, for an order that may
    /// have cancellation plans, some plans; it holds an item only as it is.
    #[test]
    fn a_stored_copy_holds_the_record_listed_and_the_plans_it_may_have() {
        let stored = |raw: &Value, plans: Vec<Value>, statuses: &StatusMap| {
            let order = Assembled {
                raw: raw.clone(),
                order: parse(raw).unwrap(),
                items: items(fixture!("order_items_45243494.json")),
                shipping_address: None,
                billing_address: None,
                cancellation_plans: Some(plans),
            }
            .into_order(statuses);
            StoredOrder::read(order.raw.json()).unwrap()
        };
        let cancelled = list(fixture!("orders_page.json")).results.remove(1);
        let order: WireOrder = parse(&cancelled).unwrap();
        let plans = list(fixture!("cancellation_plans.json")).results;
        let copy = stored(&cancelled, plans, &statuses());
        assert!(copy.holds(&cancelled, &order));
        let mut changed = cancelled.clone();
        changed["status"] = Value::from("800");
        assert!(!copy.holds(&changed, &order), "another record");
        let without_plans = stored(&cancelled, Vec::new(), &statuses());
        assert!(
            !without_plans.holds(&cancelled, &order),
            "a cancelled order stored before its plans"
        );

        let (item, _) = items(fixture!("order_items_45243494.json")).remove(0);
        assert!(copy.holds_items(std::slice::from_ref(&item)));
        let mut moved = item.clone();
        moved["tracking_number"] = Value::from("another");
        assert!(!copy.holds_items(&[item.clone(), moved]));
        assert!(
            !without_plans.holds_items(&[item]),
            "a cancelled order's items stored before its plans"
        );
        assert!(
            StoredOrder::read("{\"items\": []}").is_none(),
            "not an i1 copy"
        );
    }

    #[test]
    fn unknown_status_is_unknown_and_null_references_are_kept_null() {
        let raw = list(fixture!("orders_last_page.json")).results.remove(0);
        let order: WireOrder = parse(&raw).unwrap();
        assert_eq!(order.shipping_ref(), None);
        let order = Assembled {
            raw,
            order,
            items: Vec::new(),
            shipping_address: None,
            billing_address: None,
            cancellation_plans: None,
        }
        .into_order(&statuses());
        assert_eq!(order.state, OrderState::Unknown);
        assert_eq!(order.status.code.as_deref(), Some("550"));
        assert_eq!(order.shipping_amount, None);
        assert_eq!(order.customer_name, None);
        assert_eq!(order.raw.value()["shipping_address"], Value::Null);
        assert_eq!(
            order.raw.value()["order"]["a_field_added_later"]["nested"][1].to_string(),
            "2.50"
        );
    }

    #[test]
    fn operator_overrides_apply_to_orders_and_items() {
        let overrides = HashMap::from([("550".to_owned(), OrderState::OnHold)]);
        let statuses = StatusMap::new(STATUS_DEFAULTS, &overrides);
        assert_eq!(statuses.map("550"), OrderState::OnHold);
        assert_eq!(status_state(&statuses, Some("500")), OrderState::Shipped);
        assert_eq!(status_state(&statuses, None), OrderState::Unknown);
    }

    #[test]
    fn embedded_addresses_are_recognized() {
        let value: Value = serde_json::json!({"id": "x", "number": "1", "shipping_address": {"id": "a", "city": "Ankara"}});
        let order: WireOrder = parse(&value).unwrap();
        let Some(AddressRef::Embedded(embedded)) = order.shipping_ref() else {
            panic!("not embedded");
        };
        let address: WireAddress = parse(embedded).unwrap();
        assert_eq!(address.city_name().as_deref(), Some("Ankara"));
    }

    #[test]
    fn errors_inside_a_200_and_error_bodies() {
        assert_eq!(
            parse_list(JSON, fixture!("error_detail.json").as_bytes()).unwrap_err(),
            BodyError::Api("Geçersiz token: kimlik doğrulama başarısız.".into())
        );
        assert_eq!(
            api_message(fixture!("error_fields.json").as_bytes()).as_deref(),
            Some("Paketlenmiş ürün reddedilemez.; updated_at__gte: Geçerli bir tarih/saat girin.")
        );
        assert_eq!(api_message(b"<html>502</html>"), None);
    }

    #[test]
    fn garbage_is_malformed_never_a_panic() {
        for body in [
            fixture!("truncated.json"),
            fixture!("results_not_a_list.json"),
            "",
            "null",
            "[1, 2]",
            "{\"count\": 0}",
        ] {
            assert!(
                matches!(
                    parse_list(JSON, body.as_bytes()),
                    Err(BodyError::Malformed(_))
                ),
                "{body}"
            );
        }
        let html = parse_list(
            Some("text/html; charset=utf-8"),
            b"<html>maintenance</html>",
        );
        assert!(matches!(html, Err(BodyError::Malformed(r)) if r.contains("text/html")));

        let raw = list(fixture!("order_bad_amount.json")).results.remove(0);
        let reason = parse::<WireOrder>(&raw).unwrap_err();
        assert!(reason.starts_with("amount"), "{reason}");
        let no_id = parse::<WireOrder>(&serde_json::json!({"number": "1"})).unwrap_err();
        assert!(no_id.contains("id"), "{no_id}");
        let no_number = parse::<WireOrder>(&serde_json::json!({"id": "1"})).unwrap_err();
        assert!(no_number.contains("number"), "{no_number}");
        let bad_date = parse::<WireOrder>(
            &serde_json::json!({"id": "1", "number": "1", "date_placed": "dün"}),
        );
        assert!(bad_date.unwrap_err().starts_with("date_placed"));
    }

    #[test]
    fn date_times() {
        let utc = |s| parse_date_time(s).unwrap().to_rfc3339();
        assert_eq!(utc("2024-05-01T10:00:00Z"), "2024-05-01T10:00:00+00:00");
        assert_eq!(
            utc("2024-05-01T10:00:00.5+03:00"),
            "2024-05-01T07:00:00.500+00:00"
        );
        // No offset: Istanbul time.
        assert_eq!(utc("2024-05-01T10:00:00"), "2024-05-01T07:00:00+00:00");
        assert!(parse_date_time("01/05/2024").is_err());
    }

    #[test]
    fn uuids_are_recognized() {
        assert!(is_uuid("2e1adb7c-e1e8-471a-a483-0257d52fb0bc"));
        assert!(!is_uuid("İstanbul"));
        assert!(!is_uuid("2e1adb7c-e1e8-471a-a483-0257d52fb0bcx"));
    }
}
