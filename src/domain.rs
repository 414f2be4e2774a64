//! The domain vocabulary shared by adapters, the store and the poller: marketplaces, canonical order
//! states, and the normalized [`Order`] an adapter hands to the store.
//!
//! Everything here is marketplace-neutral. Adapters convert their private wire types into these types;
//! the store persists them. The raw payload always travels with the normalized fields so that nothing
//! a marketplace sent is ever lost.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

/// The marketplaces ordersync speaks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MarketplaceKind {
    Allesgo,
    C2c,
    I1,
    Labs,
    Gittigidiyor,
}

impl MarketplaceKind {
    pub const ALL: [MarketplaceKind; 5] = [
        MarketplaceKind::Allesgo,
        MarketplaceKind::C2c,
        MarketplaceKind::I1,
        MarketplaceKind::Labs,
        MarketplaceKind::Gittigidiyor,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            MarketplaceKind::Allesgo => "allesgo",
            MarketplaceKind::C2c => "c2c",
            MarketplaceKind::I1 => "i1",
            MarketplaceKind::Labs => "labs",
            MarketplaceKind::Gittigidiyor => "gittigidiyor",
        }
    }
}

impl fmt::Display for MarketplaceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Error for a marketplace name that is not one of [`MarketplaceKind::ALL`].
#[derive(Debug, thiserror::Error)]
#[error("unknown marketplace `{0}` (expected one of allesgo, c2c, i1, labs, gittigidiyor)")]
pub struct UnknownMarketplace(pub String);

impl FromStr for MarketplaceKind {
    type Err = UnknownMarketplace;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        MarketplaceKind::ALL
            .into_iter()
            .find(|m| m.as_str() == s)
            .ok_or_else(|| UnknownMarketplace(s.to_owned()))
    }
}

/// The canonical order state. Every marketplace status maps onto one of these; a status nobody has
/// mapped yet becomes [`OrderState::Unknown`] and its raw code and text are kept beside it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderState {
    AwaitingPayment,
    AwaitingApproval,
    Approved,
    Preparing,
    Packaged,
    Shipped,
    Delivered,
    Completed,
    OnHold,
    CancelRequested,
    Cancelled,
    Rejected,
    ReturnRequested,
    Returned,
    Disputed,
    Unknown,
}

impl OrderState {
    pub const ALL: [OrderState; 16] = [
        OrderState::AwaitingPayment,
        OrderState::AwaitingApproval,
        OrderState::Approved,
        OrderState::Preparing,
        OrderState::Packaged,
        OrderState::Shipped,
        OrderState::Delivered,
        OrderState::Completed,
        OrderState::OnHold,
        OrderState::CancelRequested,
        OrderState::Cancelled,
        OrderState::Rejected,
        OrderState::ReturnRequested,
        OrderState::Returned,
        OrderState::Disputed,
        OrderState::Unknown,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            OrderState::AwaitingPayment => "awaiting_payment",
            OrderState::AwaitingApproval => "awaiting_approval",
            OrderState::Approved => "approved",
            OrderState::Preparing => "preparing",
            OrderState::Packaged => "packaged",
            OrderState::Shipped => "shipped",
            OrderState::Delivered => "delivered",
            OrderState::Completed => "completed",
            OrderState::OnHold => "on_hold",
            OrderState::CancelRequested => "cancel_requested",
            OrderState::Cancelled => "cancelled",
            OrderState::Rejected => "rejected",
            OrderState::ReturnRequested => "return_requested",
            OrderState::Returned => "returned",
            OrderState::Disputed => "disputed",
            OrderState::Unknown => "unknown",
        }
    }

    /// Whether an order in this state can still change in the ordinary course of business. Pollers that
    /// cannot ask a marketplace for "what changed" re-read the orders that are not final.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            OrderState::Completed
                | OrderState::Cancelled
                | OrderState::Rejected
                | OrderState::Returned
        )
    }
}

impl fmt::Display for OrderState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Error for a state name that is not canonical.
#[derive(Debug, thiserror::Error)]
#[error("unknown order state `{0}`")]
pub struct UnknownOrderState(pub String);

impl FromStr for OrderState {
    type Err = UnknownOrderState;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        OrderState::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| UnknownOrderState(s.to_owned()))
    }
}

/// A currency as sent by a marketplace: the raw text is always kept, the normalized ISO code only when
/// the text is a currency ordersync knows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Currency {
    /// Exactly what the marketplace sent, e.g. `"usd"`, `"TL"`, `"TRY"`.
    pub raw: String,
    /// The ISO 4217 code (`TRY`, `USD`, `EUR`, `GBP`), or `None` when the raw text is not recognized.
    pub iso: Option<&'static str>,
}

impl Currency {
    /// Normalizes a marketplace's currency text. `TL` and `YTL` are the Turkish lira's local names.
    pub fn parse(raw: &str) -> Currency {
        let iso = match raw.trim().to_ascii_uppercase().as_str() {
            "TRY" | "TL" | "YTL" => Some("TRY"),
            "USD" => Some("USD"),
            "EUR" => Some("EUR"),
            "GBP" => Some("GBP"),
            _ => None,
        };
        Currency {
            raw: raw.to_owned(),
            iso,
        }
    }
}

/// A marketplace status as received: the code and/or the text, whichever the API sends.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RawStatus {
    pub code: Option<String>,
    pub text: Option<String>,
}

/// One order, normalized. Produced by an adapter from one marketplace order (plus whatever related
/// resources that marketplace keeps elsewhere, such as i1's items and addresses).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Order {
    /// The marketplace's identifier of the order, unique within one account.
    pub external_id: String,
    /// The number a shop operator sees, when it differs from the identifier.
    pub order_number: Option<String>,
    pub state: OrderState,
    pub status: RawStatus,
    pub total_amount: Option<Decimal>,
    pub shipping_amount: Option<Decimal>,
    pub currency: Option<Currency>,
    pub customer_name: Option<String>,
    pub customer_email: Option<String>,
    pub shipping_city: Option<String>,
    pub placed_at: Option<DateTime<Utc>>,
    /// The marketplace's own last-change time of the order, when it has one.
    pub source_updated_at: Option<DateTime<Utc>>,
    pub lines: Vec<OrderLine>,
    pub packages: Vec<Package>,
    /// Everything the marketplace sent for this order, exactly as received (XML converted to JSON).
    pub raw: RawPayload,
}

impl Order {
    /// The order with every NUL character, which PostgreSQL stores nowhere (neither in `text` nor as
    /// `\u0000` in `jsonb`), replaced by U+FFFD: in its texts, its lines' and packages', and all their
    /// raw payloads. Nothing else changes.
    pub fn without_nul(&self) -> Order {
        let mut order = self.clone();
        replace_nul(&mut order.external_id);
        replace_nul_in(&mut order.order_number);
        order.status.replace_nul();
        if let Some(currency) = &mut order.currency {
            replace_nul(&mut currency.raw);
        }
        for text in [
            &mut order.customer_name,
            &mut order.customer_email,
            &mut order.shipping_city,
        ] {
            replace_nul_in(text);
        }
        order.raw.replace_nul();
        for line in &mut order.lines {
            replace_nul(&mut line.external_id);
            for text in [
                &mut line.package_external_id,
                &mut line.sku,
                &mut line.product_name,
            ] {
                replace_nul_in(text);
            }
            if let Some(currency) = &mut line.currency {
                replace_nul(&mut currency.raw);
            }
            line.status.replace_nul();
            line.raw.replace_nul();
        }
        for package in &mut order.packages {
            replace_nul(&mut package.external_id);
            package.status.replace_nul();
            replace_nul_in(&mut package.carrier);
            replace_nul_in(&mut package.tracking_number);
            package.raw.replace_nul();
        }
        order
    }
}

impl RawStatus {
    fn replace_nul(&mut self) {
        replace_nul_in(&mut self.code);
        replace_nul_in(&mut self.text);
    }
}

/// `text` as PostgreSQL can store it: its `text` type holds no NUL character, which U+FFFD replaces
/// (what a marketplace sends, and its messages recorded as they came, may carry one).
pub fn storable_text(text: &str) -> Cow<'_, str> {
    if text.contains('\0') {
        Cow::Owned(text.replace('\0', "\u{fffd}"))
    } else {
        Cow::Borrowed(text)
    }
}

fn replace_nul(text: &mut String) {
    if let Cow::Owned(storable) = storable_text(text) {
        *text = storable;
    }
}

fn replace_nul_in(text: &mut Option<String>) {
    if let Some(text) = text {
        replace_nul(text);
    }
}

/// One line (item) of an order.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OrderLine {
    /// The marketplace's identifier of the line; adapters fall back to the line's position when the
    /// marketplace has none.
    pub external_id: String,
    /// The package this line ships in, for marketplaces that group lines into packages.
    pub package_external_id: Option<String>,
    pub sku: Option<String>,
    pub product_name: Option<String>,
    pub quantity: Decimal,
    pub unit_price: Option<Decimal>,
    pub total_price: Option<Decimal>,
    pub currency: Option<Currency>,
    pub state: OrderState,
    pub status: RawStatus,
    pub raw: RawPayload,
}

/// A package (shipment) of an order, for marketplaces that have them.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Package {
    pub external_id: String,
    pub state: OrderState,
    pub status: RawStatus,
    pub carrier: Option<String>,
    pub tracking_number: Option<String>,
    pub total_amount: Option<Decimal>,
    pub raw: RawPayload,
}

/// A payload as a marketplace sent it, kept as compact JSON text rather than a `serde_json::Value` tree,
/// which costs several times the text's size: a page of a few thousand orders stays a few megabytes.
/// It serializes as the JSON it holds (so it counts in an order's content hash exactly as the value did).
#[derive(Debug, Clone, Serialize)]
#[serde(transparent)]
pub struct RawPayload(Box<serde_json::value::RawValue>);

impl RawPayload {
    /// The JSON text.
    pub fn json(&self) -> &str {
        self.0.get()
    }

    /// The payload as a value, to look into.
    pub fn value(&self) -> serde_json::Value {
        serde_json::from_str(self.0.get()).unwrap_or(serde_json::Value::Null)
    }

    /// Replaces each `\u0000` escape of its strings (a NUL character) by `\ufffd`.
    fn replace_nul(&mut self) {
        const NUL: &str = "\\u0000";
        let json = self.json();
        if !json.contains(NUL) {
            return;
        }
        let mut replaced = String::with_capacity(json.len());
        let mut rest = json;
        while let Some(at) = rest.find('\\') {
            let (before, escape) = rest.split_at(at);
            replaced.push_str(before);
            // An escape is a backslash and one character (`\\u0000`'s second backslash is one).
            let length = if escape.starts_with(NUL) {
                replaced.push_str("\\ufffd");
                NUL.len()
            } else {
                let length = escape[1..].chars().next().map_or(1, |c| 1 + c.len_utf8());
                replaced.push_str(&escape[..length]);
                length
            };
            rest = &escape[length..];
        }
        replaced.push_str(rest);
        // Replacing one escape by another keeps the text JSON.
        if let Ok(raw) = serde_json::value::RawValue::from_string(replaced) {
            self.0 = raw;
        }
    }
}

impl From<serde_json::Value> for RawPayload {
    fn from(value: serde_json::Value) -> RawPayload {
        RawPayload::from(&value)
    }
}

impl From<&serde_json::Value> for RawPayload {
    fn from(value: &serde_json::Value) -> RawPayload {
        // A `Value` always serializes: its map keys are strings.
        let raw = serde_json::value::to_raw_value(value).unwrap_or_else(|_| {
            serde_json::value::RawValue::from_string("null".to_owned()).expect("null is JSON")
        });
        RawPayload(raw)
    }
}

impl PartialEq for RawPayload {
    fn eq(&self, other: &RawPayload) -> bool {
        self.json() == other.json()
    }
}

impl PartialEq<serde_json::Value> for RawPayload {
    fn eq(&self, other: &serde_json::Value) -> bool {
        self.value() == *other
    }
}

impl fmt::Display for RawPayload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.json())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nul_characters_are_replaced_for_postgresql_and_nothing_else() {
        let raw = |json: serde_json::Value| RawPayload::from(json);
        let order = Order {
            external_id: "A\0".into(),
            order_number: None,
            state: OrderState::Approved,
            status: RawStatus {
                code: None,
                text: Some("ok\0".into()),
            },
            total_amount: None,
            shipping_amount: None,
            currency: None,
            customer_name: Some("Ali".into()),
            customer_email: None,
            shipping_city: None,
            placed_at: None,
            source_updated_at: None,
            lines: Vec::new(),
            packages: vec![Package {
                external_id: "P".into(),
                state: OrderState::Approved,
                status: RawStatus::default(),
                carrier: Some("\0".into()),
                tracking_number: None,
                total_amount: None,
                raw: raw(serde_json::json!({"c": "x\u{0}"})),
            }],
            raw: raw(serde_json::json!({"a": "x\u{0}y\u{0}", "b": "\\u0000", "c": "é\\"})),
        };
        let stored = order.without_nul();
        assert_eq!(stored.external_id, "A\u{fffd}");
        assert_eq!(stored.status.text.as_deref(), Some("ok\u{fffd}"));
        assert_eq!(stored.customer_name, order.customer_name);
        assert_eq!(stored.packages[0].carrier.as_deref(), Some("\u{fffd}"));
        assert_eq!(stored.packages[0].raw.json(), r#"{"c":"x\ufffd"}"#);
        assert_eq!(
            stored.raw.json(),
            r#"{"a":"x\ufffdy\ufffd","b":"\\u0000","c":"é\\"}"#
        );
        assert_eq!(storable_text("no nul"), Cow::Borrowed("no nul"));
    }

    #[test]
    fn marketplace_names_round_trip() {
        for m in MarketplaceKind::ALL {
            assert_eq!(m.as_str().parse::<MarketplaceKind>().unwrap(), m);
        }
        assert!("amazon".parse::<MarketplaceKind>().is_err());
    }

    #[test]
    fn order_states_round_trip() {
        for s in OrderState::ALL {
            assert_eq!(s.as_str().parse::<OrderState>().unwrap(), s);
        }
    }

    #[test]
    fn raw_payloads_keep_compact_json_and_compare_as_values() {
        let value: serde_json::Value =
            serde_json::from_str(r#"{"b": [1, "x"], "a": {"amount": 12.50}}"#).unwrap();
        let raw = RawPayload::from(&value);
        assert_eq!(raw.json(), r#"{"a":{"amount":12.50},"b":[1,"x"]}"#);
        assert_eq!(raw, value);
        assert_eq!(raw.value(), value);
        assert_eq!(serde_json::to_string(&raw).unwrap(), raw.json());
        assert_eq!(raw.to_string(), raw.json());
    }

    #[test]
    fn currencies_normalize_local_names_and_keep_raw() {
        let c = Currency::parse("usd");
        assert_eq!((c.raw.as_str(), c.iso), ("usd", Some("USD")));
        assert_eq!(Currency::parse("TL").iso, Some("TRY"));
        let odd = Currency::parse("XBT");
        assert_eq!((odd.raw.as_str(), odd.iso), ("XBT", None));
    }
}
