//! Fake allesgo (formerly ipsizcambaz) order API: REST/JSON under `/v1.0/order/…`, authenticated by an
//! `access_token` query parameter on every request, POSTs included (the digest's decision).
//!
//! The document leaves much open; this fake decides, and an adapter must cope with each decision:
//! - **External id**: the order's `code` (a numeric string). Packages carry a Mongo-style 24-hex
//!   `package_id`; every item repeats its order's code as `order_number`, so the `order_numbers` of `cancel`
//!   and `accept-cancel` are order codes.
//! - **Status codes** 1–16 and their Turkish descriptions are this fake's own table ([`STATUS_CODES`]; the
//!   document defines them only through `GET /v1.0/order/status-codes`). Status lives on packages; items
//!   mirror their package. [`SandboxOrder::status`] is the order's distinct package codes joined by `,` in
//!   package order (`"3"`, `"5,3"`).
//! - **Amounts** are JSON numbers in lira with two decimals written as literals (`149.90`), never kuruş.
//!   A package's `total_price` is the sum of its items' `paid_amount`; the order's `total_price` is what the
//!   buyer paid: its packages' totals plus `total_shipping_price`. [`SandboxOrder::total`] is that value.
//! - **`order_date`** is ISO 8601 in UTC with milliseconds (`2024-05-01T08:23:11.000Z`).
//! - **Windows**: `days=N` lists from now − N days; `start_date`/`end_date` (Unix seconds) is `[start, end)`.
//!   With `updates_only=1` the window applies to the time of the last status change instead of the order
//!   date. `days` and the date pair are mutually exclusive; one of them is required.
//! - **`data`** is an array, except that exactly one matching order is sent as a bare object (as the
//!   document's example shows).
//! - **Errors** are `{"error":{"status":N,"message":"…"}}`: 401 for a missing or wrong token, 404 for
//!   another store, an unknown package or an unknown path, 400 for bad parameters or bodies and for a package
//!   transition the package's status does not allow. `cancel` and `accept-cancel` answer a refusal with 200
//!   and `data.success: false` and then change nothing (all orders of the request or none).
//!
//! Package transitions (from → to): `accept` 2|4 → 3, `postpone` 2|3 → 4, `ship` 3|15 → 5 (with a known
//! `company_id`, see [`SHIPPING_COMPANIES`]), `reject-cancel` 8 → the status before the cancel request,
//! `accept-return` 11 → 12, `reject-return` 11 → 13. Order transitions: `cancel` moves every package of each
//! order from 2|3|4|15 to 10; `accept-cancel` moves the packages in 8 to 9 (each order needs one).

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use chrono::{DateTime, Duration, SecondsFormat, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::audit::{Effect, Operation};
use super::generator::Generator;
use super::{FakeApi, SandboxOrder, Shared, lock};

/// The status codes `GET /v1.0/order/status-codes` serves.
const STATUS_CODES: [(u8, &str); 16] = [
    (1, "Ödeme bekleniyor"),
    (2, "Yeni sipariş, satıcı onayı bekleniyor"),
    (3, "Sipariş onaylandı, hazırlanıyor"),
    (4, "Sipariş satıcı tarafından bekletiliyor"),
    (5, "Kargoya verildi"),
    (6, "Teslim edildi"),
    (7, "Tamamlandı"),
    (8, "Alıcı iptal talebinde bulundu"),
    (9, "İptal edildi"),
    (10, "Satıcı tarafından reddedildi"),
    (11, "Alıcı iade talebinde bulundu"),
    (12, "İade talebi onaylandı"),
    (13, "İade talebi reddedildi"),
    (14, "İade tamamlandı, ödeme iade edildi"),
    (15, "Kargolama süresi aşıldı"),
    (16, "Sorunlu sipariş, allesgo inceliyor"),
];

/// `company_id` values `ship` accepts, with the company name the package then shows.
const SHIPPING_COMPANIES: [(&str, &str); 5] = [
    ("1", "Yurtiçi Kargo"),
    ("2", "Aras Kargo"),
    ("3", "MNG Kargo"),
    ("4", "PTT Kargo"),
    ("5", "Sürat Kargo"),
];

/// Variant names with their values.
const VARIANTS: [(&str, &[&str]); 2] = [
    ("Beden", &["S", "M", "L", "XL"]),
    ("Renk", &["Siyah", "Kırmızı", "Lacivert", "Yeşil"]),
];

/// Share of the paid amount allesgo keeps as commission.
const COMMISSION_RATE: Decimal = Decimal::from_parts(12, 0, 0, false, 2);

fn describe(code: u8) -> &'static str {
    STATUS_CODES
        .iter()
        .find(|(c, _)| *c == code)
        .map_or("Bilinmeyen durum", |(_, text)| text)
}

/// The status the shop's or buyer's next step moves a package to; `None` for final statuses (7, 9, 10, 14,
/// 16).
fn forward(code: u8) -> Option<u8> {
    match code {
        1 => Some(2),
        2 | 4 => Some(3),
        3 | 15 => Some(5),
        5 => Some(6),
        6 | 13 => Some(7),
        8 => Some(9),
        11 => Some(12),
        12 => Some(14),
        _ => None,
    }
}

/// Rounds to two decimal places and always shows both (`150` → `150.00`).
fn money(value: Decimal) -> Decimal {
    let mut value = value.round_dp(2);
    value.rescale(2);
    value
}

/// A change time strictly after `previous`, so a change is always visible to `updates_only` windows.
fn bump(previous: DateTime<Utc>, now: DateTime<Utc>) -> DateTime<Utc> {
    now.max(previous + Duration::milliseconds(1))
}

#[derive(Debug, Clone, Serialize)]
struct Order {
    code: String,
    packages: Vec<Package>,
    #[serde(with = "rust_decimal::serde::arbitrary_precision")]
    total_price: Decimal,
    #[serde(with = "rust_decimal::serde::arbitrary_precision")]
    total_shipping_price: Decimal,
    order_date: String,
    payment_type: &'static str,
    payment_type_explained: &'static str,
    email: String,
    shipping_address: String,
    #[serde(skip)]
    placed_at: DateTime<Utc>,
    /// When a package of the order last changed status (the order's placement until then).
    #[serde(skip)]
    changed_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize)]
struct Package {
    shipping: Shipping,
    status: u8,
    status_explained: &'static str,
    items: Vec<Item>,
    package_id: String,
    #[serde(with = "rust_decimal::serde::arbitrary_precision")]
    total_price: Decimal,
    invoice_draft: String,
    /// The status a buyer's cancel request interrupted, restored by `reject-cancel`.
    #[serde(skip)]
    before_cancel_request: Option<u8>,
}

#[derive(Debug, Clone, Serialize)]
struct Shipping {
    shipping_discount_code: String,
    shipping_company: String,
    #[serde(with = "rust_decimal::serde::arbitrary_precision")]
    total_shipping_price: Decimal,
    /// The id of the buyer's address book entry (a number, as the document's example shows).
    shipping_address: u64,
}

#[derive(Debug, Clone, Serialize)]
struct Item {
    product_name: String,
    product_code: String,
    product_uid: String,
    product_id: String,
    count: u32,
    order_number: String,
    #[serde(with = "rust_decimal::serde::arbitrary_precision")]
    product_price: Decimal,
    #[serde(with = "rust_decimal::serde::arbitrary_precision")]
    paid_amount: Decimal,
    #[serde(with = "rust_decimal::serde::arbitrary_precision")]
    store_payout_amount: Decimal,
    #[serde(with = "rust_decimal::serde::arbitrary_precision")]
    ipsizcambaz_commission_amount: Decimal,
    payment_id: u64,
    #[serde(with = "rust_decimal::serde::arbitrary_precision")]
    shipping_amount: Decimal,
    shipping_time_exceeded: bool,
    installment_count: u32,
    #[serde(with = "rust_decimal::serde::arbitrary_precision")]
    installment_commission: Decimal,
    currency: &'static str,
    currency_rate: u32,
    order_platform: &'static str,
    status: u8,
    status_explained: &'static str,
    #[serde(with = "rust_decimal::serde::arbitrary_precision")]
    discount_amount: Decimal,
    product_url: String,
    product_images: Vec<String>,
    variant: Option<Variant>,
}

#[derive(Debug, Clone, Serialize)]
struct Variant {
    name: &'static str,
    value: &'static str,
}

impl Package {
    fn set_status(&mut self, code: u8) {
        self.status = code;
        self.status_explained = describe(code);
        for item in &mut self.items {
            item.status = code;
            item.status_explained = describe(code);
            item.shipping_time_exceeded = code == 15;
        }
    }
}

impl Order {
    /// Moves every non-final package one step; false when all packages are final.
    fn advance(&mut self, now: DateTime<Utc>) -> bool {
        let mut moved = false;
        for package in &mut self.packages {
            if let Some(next) = forward(package.status) {
                package.set_status(next);
                moved = true;
            }
        }
        if moved {
            self.changed_at = bump(self.changed_at, now);
        }
        moved
    }

    fn is_final(&self) -> bool {
        self.packages.iter().all(|p| forward(p.status).is_none())
    }

    fn snapshot(&self) -> SandboxOrder {
        let mut codes: Vec<String> = Vec::new();
        for package in &self.packages {
            let code = package.status.to_string();
            if !codes.contains(&code) {
                codes.push(code);
            }
        }
        SandboxOrder {
            external_id: self.code.clone(),
            status: codes.join(","),
            updated_at: self.changed_at,
            total: self.total_price,
            line_count: self.packages.iter().map(|p| p.items.len()).sum(),
        }
    }
}

/// allesgo's orders for the one sandbox store, in placement order.
pub(super) struct Store {
    orders: Vec<Order>,
    by_code: HashMap<String, usize>,
    /// Package id → (order index, package index).
    by_package: HashMap<String, (usize, usize)>,
    next_seq: u64,
}

impl Store {
    pub(super) fn seeded(generator: &mut Generator, n: usize, now: DateTime<Utc>) -> Store {
        let mut times: Vec<DateTime<Utc>> = (0..n).map(|_| generator.placed_at(now, 90)).collect();
        times.sort();
        let mut store = Store {
            orders: Vec::with_capacity(n),
            by_code: HashMap::with_capacity(n),
            by_package: HashMap::with_capacity(n * 2),
            next_seq: 1,
        };
        for placed_at in times {
            let status = seeded_status(generator, placed_at, now);
            store.place(generator, placed_at, now, status);
        }
        store
    }

    /// Creates one order; `status` is its first package's status.
    fn place(
        &mut self,
        generator: &mut Generator,
        placed_at: DateTime<Utc>,
        now: DateTime<Utc>,
        status: u8,
    ) -> String {
        let seq = self.next_seq;
        self.next_seq += 1;
        let code = (2_100_000_000 + seq).to_string();
        let person = generator.person();
        let address = generator.address();
        let (payment_type, payment_type_explained) = if status == 1 || generator.chance(0.15) {
            ("bank_transfer", "Havale/EFT")
        } else {
            ("credit_card", "Kredi Kartı")
        };
        let installment_count = if payment_type == "credit_card" {
            *generator.pick(&[1, 1, 1, 3, 6])
        } else {
            1
        };
        let platform = *generator.pick(&["web", "web", "android", "ios"]);
        let address_id = 300_000 + generator.range(0, 699_999) as u64;
        let package_count = *generator.pick(&[1, 1, 1, 2, 2, 3]);
        let mut line_budget = generator.range(package_count, 4);
        let mut packages = Vec::with_capacity(package_count);
        for p in 0..package_count {
            let lines = if p + 1 == package_count {
                line_budget
            } else {
                let lines = generator.range(1, line_budget - (package_count - p - 1));
                line_budget -= lines;
                lines
            };
            let package_status = if p > 0 && status > 2 && generator.chance(0.2) {
                forward(status).unwrap_or(status)
            } else {
                status
            };
            let package_id = format!("{:08x}{:016x}", placed_at.timestamp(), seq * 8 + p as u64);
            let shipping_price = if generator.chance(0.4) {
                Decimal::ZERO
            } else {
                *generator.pick(&[
                    Decimal::new(2999, 2),
                    Decimal::new(3990, 2),
                    Decimal::new(4990, 2),
                ])
            };
            let mut items = Vec::with_capacity(lines);
            for line in 0..lines {
                let product = generator.product();
                let count = *generator.pick(&[1u32, 1, 1, 2, 3]);
                let discount = if generator.chance(0.2) {
                    money(product.unit_price * Decimal::new(10, 2))
                } else {
                    Decimal::ZERO
                };
                let paid = money(product.unit_price * Decimal::from(count) - discount);
                let commission = money(paid * COMMISSION_RATE);
                let installment_commission = if installment_count > 1 {
                    money(paid * Decimal::new(3, 2))
                } else {
                    money(Decimal::ZERO)
                };
                let product_id = format!(
                    "5f3a{:020x}",
                    0x00c0_ffee_0000_u64 + generator.range(0, 9_999_999) as u64
                );
                let slug = product.sku.to_lowercase();
                items.push(Item {
                    product_url: format!("https://www.allesgo.com/urun/{slug}-{product_id}"),
                    product_images: vec![format!(
                        "https://cdn.allesgo.com/urun/{product_id}/1.jpg"
                    )],
                    product_name: product.name,
                    product_code: product.sku,
                    product_uid: generator.uuid(),
                    product_id,
                    count,
                    order_number: code.clone(),
                    product_price: money(product.unit_price),
                    paid_amount: paid,
                    store_payout_amount: money(paid - commission - installment_commission),
                    ipsizcambaz_commission_amount: commission,
                    payment_id: 80_000_000 + seq,
                    shipping_amount: money(if line == 0 {
                        shipping_price
                    } else {
                        Decimal::ZERO
                    }),
                    shipping_time_exceeded: false,
                    installment_count,
                    installment_commission,
                    currency: "TRY",
                    currency_rate: 1,
                    order_platform: platform,
                    status: package_status,
                    status_explained: describe(package_status),
                    discount_amount: money(discount),
                    variant: generator.chance(0.4).then(|| {
                        let (name, values) = *generator.pick(&VARIANTS);
                        let value = *generator.pick(values);
                        Variant { name, value }
                    }),
                });
            }
            let total = money(items.iter().map(|i| i.paid_amount).sum());
            let mut package = Package {
                shipping: Shipping {
                    shipping_discount_code: if generator.chance(0.1) {
                        format!("KARGO{}", generator.digits(4))
                    } else {
                        String::new()
                    },
                    shipping_company: SHIPPING_COMPANIES
                        [generator.range(0, SHIPPING_COMPANIES.len() - 1)]
                    .1
                    .to_string(),
                    total_shipping_price: money(shipping_price),
                    shipping_address: address_id,
                },
                status: package_status,
                status_explained: describe(package_status),
                items,
                invoice_draft: format!("https://api.allesgo.com/fatura-taslak/{package_id}.pdf"),
                package_id,
                total_price: total,
                before_cancel_request: None,
            };
            if package_status == 8 {
                package.before_cancel_request = Some(3);
            }
            package.set_status(package_status);
            packages.push(package);
        }
        let shipping_total = money(
            packages
                .iter()
                .map(|p| p.shipping.total_shipping_price)
                .sum(),
        );
        let goods_total: Decimal = packages.iter().map(|p| p.total_price).sum();
        let changed_at = if status <= 2 {
            placed_at
        } else {
            let span = (now - placed_at).num_seconds().max(0) as usize;
            placed_at + Duration::seconds(generator.range(0, span) as i64)
        };
        let index = self.orders.len();
        for (p, package) in packages.iter().enumerate() {
            self.by_package
                .insert(package.package_id.clone(), (index, p));
        }
        self.by_code.insert(code.clone(), index);
        self.orders.push(Order {
            code: code.clone(),
            packages,
            total_price: money(goods_total + shipping_total),
            total_shipping_price: shipping_total,
            order_date: placed_at.to_rfc3339_opts(SecondsFormat::Millis, true),
            payment_type,
            payment_type_explained,
            email: person.email,
            shipping_address: format!(
                "{} {}, {}, {} {}/{}",
                person.first_name,
                person.last_name,
                address.line,
                address.postal_code,
                address.district,
                address.city
            ),
            placed_at,
            changed_at,
        });
        code
    }

    fn package_mut(&mut self, package_id: &str) -> Option<(&mut Order, usize)> {
        let (o, p) = *self.by_package.get(package_id)?;
        Some((&mut self.orders[o], p))
    }

    /// Applies a package transition; the response's `data` and the effect.
    fn package_transition(
        &mut self,
        action: Action,
        body: &TransitionBody,
        now: DateTime<Utc>,
    ) -> Result<(serde_json::Value, String), ApiError> {
        let package_id = required(&body.package_id, "package_id")?;
        match action {
            Action::Postpone | Action::RejectCancel | Action::RejectReturn => {
                required(&body.reason, "reason")?;
            }
            Action::AcceptReturn => {
                required(&body.message, "message")?;
            }
            _ => {}
        }
        let company = if action == Action::Ship {
            let company_id = required(&body.company_id, "company_id")?;
            required(&body.shipping_code, "shipping_code")?;
            let company = SHIPPING_COMPANIES
                .iter()
                .find(|(id, _)| *id == company_id)
                .ok_or_else(|| {
                    ApiError::BadRequest(format!("Geçersiz company_id: {company_id}"))
                })?;
            Some(company.1)
        } else {
            None
        };
        let (order, p) = self
            .package_mut(package_id)
            .ok_or_else(|| ApiError::NotFound(format!("Paket bulunamadı: {package_id}")))?;
        let package = &mut order.packages[p];
        let from = package.status;
        let to = match (action, from) {
            (Action::Accept, 2 | 4) => 3,
            (Action::Postpone, 2 | 3) => 4,
            (Action::Ship, 3 | 15) => 5,
            (Action::RejectCancel, 8) => package.before_cancel_request.unwrap_or(3),
            (Action::AcceptReturn, 11) => 12,
            (Action::RejectReturn, 11) => 13,
            _ => {
                return Err(ApiError::BadRequest(format!(
                    "Paket bu işlem için uygun durumda değil ({from}: {})",
                    describe(from)
                )));
            }
        };
        package.set_status(to);
        package.before_cancel_request = None;
        let data = match company {
            Some(name) => {
                package.shipping.shipping_company = name.to_string();
                json!({"shipping_company": name, "shippingCode": body.shipping_code})
            }
            None => json!({"status": "success"}),
        };
        order.changed_at = bump(order.changed_at, now);
        let effect = format!(
            "package {package_id} of order {}: {from} → {to} ({})",
            order.code,
            action.name()
        );
        Ok((data, effect))
    }

    /// Applies `cancel` or `accept-cancel` to every listed order, or to none when one of them refuses.
    fn order_transition(
        &mut self,
        action: Action,
        body: &TransitionBody,
        now: DateTime<Utc>,
    ) -> Result<(serde_json::Value, Option<String>), ApiError> {
        required(&body.reason, "reason")?;
        let numbers: Vec<&str> = match &body.order_numbers {
            Some(OrderNumbers::Many(list)) => list.iter().map(String::as_str).collect(),
            Some(OrderNumbers::One(one)) => vec![one.as_str()],
            None => Vec::new(),
        };
        if numbers.is_empty() || numbers.iter().any(|n| n.trim().is_empty()) {
            return Err(ApiError::BadRequest(
                "order_numbers alanı zorunludur".into(),
            ));
        }
        let (from, to): (&[u8], u8) = match action {
            Action::Cancel => (&[2, 3, 4, 15], 10),
            _ => (&[8], 9),
        };
        let mut indices = Vec::with_capacity(numbers.len());
        for number in &numbers {
            let Some(&index) = self.by_code.get(*number) else {
                return Ok((refusal(format!("Sipariş bulunamadı: {number}")), None));
            };
            let order = &self.orders[index];
            let allowed = match action {
                Action::Cancel => order.packages.iter().all(|p| from.contains(&p.status)),
                _ => order.packages.iter().any(|p| from.contains(&p.status)),
            };
            if !allowed {
                let statuses: Vec<String> = order
                    .packages
                    .iter()
                    .map(|p| p.status.to_string())
                    .collect();
                return Ok((
                    refusal(format!(
                        "Sipariş {number} bu işlem için uygun durumda değil (paket durumları: {})",
                        statuses.join(",")
                    )),
                    None,
                ));
            }
            indices.push(index);
        }
        for &index in &indices {
            let order = &mut self.orders[index];
            for package in order
                .packages
                .iter_mut()
                .filter(|p| from.contains(&p.status))
            {
                package.set_status(to);
                package.before_cancel_request = None;
            }
            order.changed_at = bump(order.changed_at, now);
        }
        let effect = format!("orders {}: → {to} ({})", numbers.join(","), action.name());
        Ok((
            json!({"success": true, "message": "İşlem başarılı"}),
            Some(effect),
        ))
    }
}

fn refusal(message: String) -> serde_json::Value {
    json!({"success": false, "message": message})
}

/// A plausible first status for an order placed at `placed_at`: recent orders are early in the flow.
fn seeded_status(generator: &mut Generator, placed_at: DateTime<Utc>, now: DateTime<Utc>) -> u8 {
    let age = now - placed_at;
    if age < Duration::days(2) {
        *generator.pick(&[1, 2, 2, 2, 3, 3, 4, 8, 15])
    } else if age < Duration::days(10) {
        *generator.pick(&[3, 5, 5, 6, 6, 7, 8, 11, 13, 15])
    } else {
        *generator.pick(&[7, 7, 7, 7, 6, 9, 10, 11, 12, 13, 14, 16])
    }
}

impl FakeApi for Store {
    fn add_orders(
        &mut self,
        generator: &mut Generator,
        n: usize,
        now: DateTime<Utc>,
    ) -> Vec<String> {
        let placed_at = now - Duration::nanoseconds(i64::from(now.timestamp_subsec_nanos()));
        (0..n)
            .map(|_| {
                let status = if generator.chance(0.2) { 1 } else { 2 };
                self.place(generator, placed_at, now, status)
            })
            .collect()
    }

    fn change_orders(
        &mut self,
        generator: &mut Generator,
        n: usize,
        now: DateTime<Utc>,
    ) -> Vec<String> {
        let open: Vec<usize> = (0..self.orders.len())
            .filter(|&i| !self.orders[i].is_final())
            .collect();
        generator.change_some(open, n, |_, i| {
            let order = &mut self.orders[i];
            order.advance(now);
            Some(order.code.clone())
        })
    }

    fn change_order(
        &mut self,
        _gen: &mut Generator,
        external_id: &str,
        now: DateTime<Utc>,
    ) -> bool {
        match self.by_code.get(external_id) {
            Some(&index) => self.orders[index].advance(now),
            None => false,
        }
    }

    fn snapshot(&self) -> Vec<SandboxOrder> {
        self.orders.iter().map(Order::snapshot).collect()
    }
}

/// An allesgo error, answered as `{"error":{"status":N,"message":"…"}}`.
#[derive(Debug, thiserror::Error)]
enum ApiError {
    #[error("Geçersiz veya eksik access_token")]
    Unauthorized,
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = match self {
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
        };
        let body = json!({"error": {"status": status.as_u16(), "message": self.to_string()}});
        (status, Json(body)).into_response()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Accept,
    Postpone,
    Ship,
    Cancel,
    AcceptCancel,
    RejectCancel,
    AcceptReturn,
    RejectReturn,
}

impl Action {
    const ALL: [Action; 8] = [
        Action::Accept,
        Action::Postpone,
        Action::Ship,
        Action::Cancel,
        Action::AcceptCancel,
        Action::RejectCancel,
        Action::AcceptReturn,
        Action::RejectReturn,
    ];

    /// The path segment.
    fn name(self) -> &'static str {
        match self {
            Action::Accept => "accept",
            Action::Postpone => "postpone",
            Action::Ship => "ship",
            Action::Cancel => "cancel",
            Action::AcceptCancel => "accept-cancel",
            Action::RejectCancel => "reject-cancel",
            Action::AcceptReturn => "accept-return",
            Action::RejectReturn => "reject-return",
        }
    }

    fn operation(self) -> &'static str {
        match self {
            Action::Accept => "order.accept",
            Action::Postpone => "order.postpone",
            Action::Ship => "order.ship",
            Action::Cancel => "order.cancel",
            Action::AcceptCancel => "order.accept-cancel",
            Action::RejectCancel => "order.reject-cancel",
            Action::AcceptReturn => "order.accept-return",
            Action::RejectReturn => "order.reject-return",
        }
    }
}

/// Every transition's body; which fields are required depends on the action.
#[derive(Debug, Deserialize)]
struct TransitionBody {
    package_id: Option<String>,
    reason: Option<String>,
    message: Option<String>,
    company_id: Option<String>,
    shipping_code: Option<String>,
    order_numbers: Option<OrderNumbers>,
}

/// The table says Array; the document's examples send one string. Both are accepted.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum OrderNumbers {
    Many(Vec<String>),
    One(String),
}

fn required<'a>(field: &'a Option<String>, name: &str) -> Result<&'a str, ApiError> {
    match field.as_deref().map(str::trim) {
        Some(value) if !value.is_empty() => Ok(value),
        _ => Err(ApiError::BadRequest(format!("{name} alanı zorunludur"))),
    }
}

fn query_params(raw: Option<&str>) -> HashMap<String, String> {
    url::form_urlencoded::parse(raw.unwrap_or_default().as_bytes())
        .into_owned()
        .collect()
}

fn authorize(shared: &Shared, params: &HashMap<String, String>) -> Result<(), ApiError> {
    match params.get("access_token") {
        Some(token) if *token == shared.credentials.allesgo_access_token => Ok(()),
        _ => Err(ApiError::Unauthorized),
    }
}

fn check_store(shared: &Shared, store_id: &str) -> Result<(), ApiError> {
    if store_id == shared.credentials.allesgo_store_id {
        Ok(())
    } else {
        Err(ApiError::NotFound(format!("Mağaza bulunamadı: {store_id}")))
    }
}

/// Which orders a list request asks for.
struct ListFilter {
    /// Inclusive lower bound, Unix seconds.
    from: i64,
    /// Exclusive upper bound, Unix seconds; `None` for `days`.
    until: Option<i64>,
    status: Option<u8>,
    updates_only: bool,
}

impl ListFilter {
    fn parse(params: &HashMap<String, String>, now: DateTime<Utc>) -> Result<ListFilter, ApiError> {
        fn number(params: &HashMap<String, String>, name: &str) -> Result<Option<i64>, ApiError> {
            params
                .get(name)
                .map(|v| {
                    v.trim()
                        .parse::<i64>()
                        .map_err(|_| ApiError::BadRequest(format!("{name} bir tam sayı olmalıdır")))
                })
                .transpose()
        }
        let days = number(params, "days")?;
        let start = number(params, "start_date")?;
        let end = number(params, "end_date")?;
        let (from, until) = match (days, start, end) {
            (Some(days), None, None) => {
                if days < 1 {
                    return Err(ApiError::BadRequest("days en az 1 olmalıdır".into()));
                }
                (now.timestamp() - days.saturating_mul(86_400), None)
            }
            (None, Some(start), Some(end)) => {
                if end < start {
                    return Err(ApiError::BadRequest(
                        "end_date start_date'den önce olamaz".into(),
                    ));
                }
                (start, Some(end))
            }
            (None, Some(_), None) | (None, None, Some(_)) => {
                return Err(ApiError::BadRequest(
                    "start_date ve end_date birlikte kullanılmalıdır".into(),
                ));
            }
            (None, None, None) => {
                return Err(ApiError::BadRequest(
                    "days veya start_date ile end_date gereklidir".into(),
                ));
            }
            _ => {
                return Err(ApiError::BadRequest(
                    "days ile start_date/end_date birlikte kullanılamaz".into(),
                ));
            }
        };
        let status = match number(params, "status")? {
            None => None,
            Some(code @ 1..=16) => Some(code as u8),
            Some(_) => {
                return Err(ApiError::BadRequest(
                    "status 1 ile 16 arasında olmalıdır".into(),
                ));
            }
        };
        let updates_only = match number(params, "updates_only")? {
            None | Some(0) => false,
            Some(1) => true,
            Some(_) => {
                return Err(ApiError::BadRequest(
                    "updates_only 0 veya 1 olmalıdır".into(),
                ));
            }
        };
        Ok(ListFilter {
            from,
            until,
            status,
            updates_only,
        })
    }

    fn matches(&self, order: &Order) -> bool {
        let at = if self.updates_only {
            order.changed_at
        } else {
            order.placed_at
        }
        .timestamp();
        at >= self.from
            && self.until.is_none_or(|until| at < until)
            && self
                .status
                .is_none_or(|s| order.packages.iter().any(|p| p.status == s))
    }
}

#[derive(Serialize)]
struct Envelope<T> {
    data: T,
}

#[derive(Serialize)]
struct StatusCodeEntry {
    code: u8,
    description: &'static str,
}

pub(super) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/v1.0/order/status-codes", get(status_codes))
        .route("/v1.0/order/store/{store_id}", get(list_orders))
        .route("/v1.0/order/{action}/store/{store_id}", post(transition))
        .fallback(unknown_path)
        .with_state(shared)
}

async fn unknown_path() -> ApiError {
    ApiError::NotFound("Kaynak bulunamadı".into())
}

async fn status_codes(State(shared): State<Arc<Shared>>, RawQuery(query): RawQuery) -> Response {
    let result = authorize(&shared, &query_params(query.as_deref())).map(|()| {
        let data: Vec<StatusCodeEntry> = STATUS_CODES
            .iter()
            .map(|&(code, description)| StatusCodeEntry { code, description })
            .collect();
        Json(Envelope { data })
    });
    (Extension(Operation("status-codes")), result).into_response()
}

async fn list_orders(
    State(shared): State<Arc<Shared>>,
    Path(store_id): Path<String>,
    RawQuery(query): RawQuery,
) -> Response {
    let result = list(&shared, &store_id, query.as_deref());
    (Extension(Operation("orders.list")), result).into_response()
}

fn list(shared: &Shared, store_id: &str, query: Option<&str>) -> Result<Response, ApiError> {
    let params = query_params(query);
    authorize(shared, &params)?;
    check_store(shared, store_id)?;
    let filter = ListFilter::parse(&params, Utc::now())?;
    let store = lock(&shared.allesgo);
    let matched: Vec<&Order> = store.orders.iter().filter(|o| filter.matches(o)).collect();
    Ok(match matched.as_slice() {
        [one] => Json(Envelope { data: *one }).into_response(),
        _ => Json(Envelope { data: matched }).into_response(),
    })
}

async fn transition(
    State(shared): State<Arc<Shared>>,
    Path((action, store_id)): Path<(String, String)>,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Response {
    let Some(action) = Action::ALL.into_iter().find(|a| a.name() == action) else {
        return (
            Extension(Operation("order.unknown-action")),
            ApiError::NotFound(format!("Bilinmeyen işlem: {action}")),
        )
            .into_response();
    };
    let result = transit(&shared, action, &store_id, query.as_deref(), &body);
    (Extension(Operation(action.operation())), result).into_response()
}

fn transit(
    shared: &Shared,
    action: Action,
    store_id: &str,
    query: Option<&str>,
    body: &[u8],
) -> Result<Response, ApiError> {
    authorize(shared, &query_params(query))?;
    check_store(shared, store_id)?;
    let body: TransitionBody = serde_json::from_slice(body)
        .map_err(|e| ApiError::BadRequest(format!("Geçersiz JSON gövdesi: {e}")))?;
    let now = Utc::now();
    let mut store = lock(&shared.allesgo);
    let (data, effect) = match action {
        Action::Cancel | Action::AcceptCancel => store.order_transition(action, &body, now)?,
        _ => {
            let (data, effect) = store.package_transition(action, &body, now)?;
            (data, Some(effect))
        }
    };
    let mut response = Json(Envelope { data }).into_response();
    if let Some(effect) = effect {
        response.extensions_mut().insert(Effect(effect));
    }
    Ok(response)
}
