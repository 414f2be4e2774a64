//! Fake "i1" seller API (Akinon Seller Center integration): REST/JSON under `…/api/i1/`, Django REST
//! Framework style, authenticated by `Authorization: Bearer <token>`.
//!
//! Decisions where the document leaves room, each one something an adapter must cope with:
//! - **External id**: the order's `id` (a UUID). Order items and cancellation plans reference their order
//!   by that id, so it is what identifies an order; `number` is the human-facing order number (also unique,
//!   filterable with `number` and by items with `order__number`).
//! - **Lists** are DRF limit/offset pages `{count, next, previous, results}`: `limit` (default 10, capped at
//!   [`MAX_LIMIT`]; a value that is not a positive integer falls back to the default, as DRF does) and
//!   `offset`. `next`/`previous` are absolute URLs on the sandbox with the query's parameters sorted, `null`
//!   at the ends.
//! - **Ordering** is stable and fixed: orders by `date_placed` ascending, then creation order (like a
//!   viewset with `ordering = ("date_placed", "pk")`); items, addresses and plans in creation order. A status
//!   change never moves a row within a list, but it can move a row into or out of an `updated_at` filter,
//!   which shifts the offsets of the rows after it, as on the real API.
//! - **Status** is sent as the integer code (100 … 900) the document's example shows; `SandboxOrder::status`
//!   is that code as text. Items follow their order's status until one is rejected (900).
//! - **Currency** is mostly `TRY` but some orders use lowercase codes (`"usd"`, `"try"`), as the example.
//! - **Date-times** are UTC with `Z`, microseconds only when non-zero (`2024-05-01T08:23:11.123456Z`);
//!   `date_placed` is whole seconds. Orders and items also carry `created_at` and `updated_at` (the filter
//!   fields; the document's schema predates them). Datetime filters accept ISO 8601 with or without offset
//!   (no offset means UTC) or a bare date; an invalid value gets a DRF field error.
//! - **Errors**: 401 `{"detail": …}` with `WWW-Authenticate: Bearer`; 404 `{"detail": "Not found."}`;
//!   400 field errors `{"field": ["…"]}`; rejecting an item whose status is 400 or more (packaged, shipped,
//!   …, already cancelled or rejected) is 400 `{"non_field_errors": ["…"]}`.
//! - **Reject** (`POST order-items/{id}/reject/`, 204): the item goes to 900, its order's `updated_at` moves,
//!   `refund_amount` grows by the item's price, a completed cancel plan for the item appears, and an order
//!   whose items are all rejected or cancelled becomes 900 itself.
//! - **Changes** (`change_order`): 100→200→300→400→500→600 and 700→800; a waiting order (100, 200) sometimes
//!   goes to 700 (cancellation waiting) instead. 600, 800 and 900 are final. Packaging sets the invoice,
//!   shipping sets tracking data, and a 700 order gets a waiting cancel plan that completes at 800.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use axum::extract::{OriginalUri, Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use chrono::{DateTime, Duration, NaiveDate, NaiveDateTime, Utc};
use rust_decimal::Decimal;
use serde::Serialize;
use serde_json::{Value, json};

use super::audit::{Effect, Operation};
use super::generator::Generator;
use super::{FakeApi, SandboxOrder, Shared, lock};

/// The largest page the fake serves; a larger `limit` is silently capped, as DRF's `max_limit` does.
const MAX_LIMIT: usize = 1000;
const DEFAULT_LIMIT: usize = 10;

const SHIPPING_COMPANIES: &[&str] = &["yurtici", "aras", "mng", "hbexpress", "ptt"];

/// Which status codes no change leaves.
fn is_final(status: u16) -> bool {
    matches!(status, 600 | 800 | 900)
}

struct Order {
    id: String,
    number: String,
    datasource: String,
    shipping_address: usize,
    billing_address: usize,
    date_placed: DateTime<Utc>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    status: u16,
    currency: &'static str,
    amount: Decimal,
    discount_amount: Decimal,
    shipping_amount: Decimal,
    refund_amount: Decimal,
    invoice_number: Option<String>,
    invoice_date: Option<DateTime<Utc>>,
    tracking_number: Option<String>,
    shipping_company: Option<&'static str>,
    has_gift_box: bool,
    gift_box_note: Option<String>,
    cancel_status: Option<&'static str>,
    items: Vec<usize>,
    /// The cancel plan opened when the order went to 700.
    cancel_plan: Option<usize>,
}

struct Item {
    id: String,
    order: usize,
    sku: String,
    status: u16,
    price: Decimal,
    retail_price: Option<Decimal>,
    tax_rate: Decimal,
    discount_amount: Decimal,
    tracking_number: Option<String>,
    shipping_company: Option<&'static str>,
    shipped_date: Option<DateTime<Utc>>,
    delivered_date: Option<DateTime<Utc>>,
    estimated_delivery_date: Option<DateTime<Utc>>,
    cancel_status: Option<&'static str>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

struct CustomerAddress {
    id: String,
    email: String,
    phone_number: String,
    first_name: String,
    last_name: String,
    line: String,
    postcode: String,
    identity_number: String,
    city: String,
    township: String,
    district: String,
}

struct CancellationPlan {
    id: String,
    order: usize,
    order_items: Vec<usize>,
    refund_amount: Decimal,
    shipping_refund_amount: Decimal,
    status: &'static str,
    created_at: DateTime<Utc>,
}

/// Why the `reject/` action refuses an item; the message is the 400 body's `non_field_errors` entry.
#[derive(Debug, thiserror::Error)]
enum RejectError {
    #[error("Packaged order items cannot be rejected.")]
    Packaged,
    #[error("Order item is already rejected.")]
    AlreadyRejected,
    #[error("Order item with status {0} cannot be rejected.")]
    Status(u16),
}

/// The i1 seller's orders with their items, addresses and cancellation plans.
pub(super) struct Store {
    /// Sorted by `date_placed` (new orders are placed now, so appending keeps the order).
    orders: Vec<Order>,
    order_by_id: HashMap<String, usize>,
    order_by_number: HashMap<String, usize>,
    items: Vec<Item>,
    item_by_id: HashMap<String, usize>,
    addresses: Vec<CustomerAddress>,
    address_by_id: HashMap<String, usize>,
    plans: Vec<CancellationPlan>,
    /// UUIDs of countries, cities, townships and districts by name.
    places: HashMap<String, String>,
    datasource: String,
    next_number: u64,
}

/// Truncates to microseconds, the precision the API writes, so a value read back compares equal.
fn micros(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(t.timestamp_micros()).unwrap_or(t)
}

impl Store {
    pub(super) fn seeded(generator: &mut Generator, n: usize, now: DateTime<Utc>) -> Store {
        let mut store = Store {
            orders: Vec::with_capacity(n),
            order_by_id: HashMap::with_capacity(n),
            order_by_number: HashMap::with_capacity(n),
            items: Vec::with_capacity(n * 2),
            item_by_id: HashMap::with_capacity(n * 2),
            addresses: Vec::with_capacity(n * 2),
            address_by_id: HashMap::with_capacity(n * 2),
            plans: Vec::new(),
            places: HashMap::new(),
            datasource: generator.uuid(),
            next_number: 45_243_493,
        };
        store.place_name(generator, "country:TR".to_string());
        let mut placed: Vec<DateTime<Utc>> = (0..n).map(|_| generator.placed_at(now, 90)).collect();
        placed.sort();
        for date_placed in placed {
            let idx = store.place(generator, date_placed, now);
            // Older orders have gone further: replay their history with plausible change times.
            let age_days = (now - date_placed).num_days();
            let steps = match age_days {
                0 => generator.range(0, 2),
                1..=3 => generator.range(1, 3),
                4..=10 => generator.range(2, 5),
                _ => generator.range(4, 6),
            };
            let mut at = store.orders[idx].created_at;
            for _ in 0..steps {
                let room = (now - at).num_seconds().max(2) as usize;
                at += Duration::seconds(generator.range(1, room.min(2 * 86_400) / 2 + 1) as i64);
                at = micros(at + Duration::microseconds(generator.range(0, 999_999) as i64));
                if at >= now || !store.advance(generator, idx, at) {
                    break;
                }
            }
        }
        store
    }

    fn place_name(&mut self, generator: &mut Generator, name: String) -> String {
        self.places
            .entry(name)
            .or_insert_with(|| generator.uuid())
            .clone()
    }

    fn new_address(&mut self, generator: &mut Generator) -> usize {
        let person = generator.person();
        let address = generator.address();
        let line = format!("{} {}/{}", address.line, address.district, address.city);
        let city = self.place_name(generator, format!("city:{}", address.city));
        let township = self.place_name(
            generator,
            format!("township:{}:{}", address.city, address.district),
        );
        let district = self.place_name(
            generator,
            format!("district:{}:{}", address.city, address.district),
        );
        let identity_number = format!("{}{}", generator.range(1, 9), generator.digits(10));
        let idx = self.addresses.len();
        let record = CustomerAddress {
            id: generator.uuid(),
            email: person.email,
            phone_number: person.phone,
            first_name: person.first_name,
            last_name: person.last_name,
            line,
            postcode: address.postal_code,
            identity_number,
            city,
            township,
            district,
        };
        self.address_by_id.insert(record.id.clone(), idx);
        self.addresses.push(record);
        idx
    }

    /// Places a new order in status 100 at `date_placed`, its record created a moment later but not after
    /// `latest`; returns its index.
    fn place(
        &mut self,
        generator: &mut Generator,
        date_placed: DateTime<Utc>,
        latest: DateTime<Utc>,
    ) -> usize {
        let shipping_address = self.new_address(generator);
        let billing_address = if generator.chance(0.7) {
            shipping_address
        } else {
            self.new_address(generator)
        };
        let currency = *generator.pick(&[
            "TRY", "TRY", "TRY", "TRY", "TRY", "TRY", "TRY", "TRY", "TRY", "TRY", "TRY", "TRY",
            "try", "usd", "USD", "eur",
        ]);
        self.next_number += generator.range(1, 40) as u64;
        let number = self.next_number.to_string();
        let delay = Duration::microseconds(generator.range(200_000, 4_000_000) as i64);
        let created_at = micros((date_placed + delay).min(latest));
        let idx = self.orders.len();
        let mut items = Vec::new();
        let mut total = Decimal::ZERO;
        for _ in 0..generator.range(1, 4) {
            let product = generator.product();
            let retail_price = generator
                .chance(0.4)
                .then(|| product.unit_price + generator.amount(10, 200));
            let item = Item {
                id: generator.uuid(),
                order: idx,
                sku: product.sku,
                status: 100,
                price: product.unit_price,
                retail_price,
                tax_rate: Decimal::new(*generator.pick(&[1000, 2000, 2000, 100]), 2),
                discount_amount: Decimal::new(0, 2),
                tracking_number: None,
                shipping_company: None,
                shipped_date: None,
                delivered_date: None,
                estimated_delivery_date: None,
                cancel_status: None,
                created_at,
                updated_at: created_at,
            };
            total += item.price;
            self.item_by_id.insert(item.id.clone(), self.items.len());
            items.push(self.items.len());
            self.items.push(item);
        }
        let shipping_amount = if total >= Decimal::new(50_000, 2) {
            Decimal::new(0, 2)
        } else {
            Decimal::new(4_999, 2)
        };
        let discount_amount = if generator.chance(0.2) {
            (total / Decimal::TEN).round_dp(2)
        } else {
            Decimal::new(0, 2)
        };
        let has_gift_box = generator.chance(0.05);
        let order = Order {
            id: generator.uuid(),
            number: number.clone(),
            datasource: self.datasource.clone(),
            shipping_address,
            billing_address,
            date_placed,
            created_at,
            updated_at: created_at,
            status: 100,
            currency,
            amount: total + shipping_amount - discount_amount,
            discount_amount,
            shipping_amount,
            refund_amount: Decimal::new(0, 2),
            invoice_number: None,
            invoice_date: None,
            tracking_number: None,
            shipping_company: None,
            has_gift_box,
            gift_box_note: has_gift_box.then(|| "İyi ki doğdun!".to_string()),
            cancel_status: None,
            items,
            cancel_plan: None,
        };
        self.order_by_id.insert(order.id.clone(), idx);
        self.order_by_number.insert(number, idx);
        self.orders.push(order);
        idx
    }

    /// Moves an order one status forward at `at`; false when it is final.
    fn advance(&mut self, generator: &mut Generator, idx: usize, at: DateTime<Utc>) -> bool {
        let order = &self.orders[idx];
        let next = match order.status {
            100 | 200 if generator.chance(0.08) => 700,
            100 => 200,
            200 => 300,
            300 => 400,
            400 => 500,
            500 => 600,
            700 => 800,
            _ => return false,
        };
        let tracking = (next == 500).then(|| generator.digits(12));
        let company = *generator.pick(SHIPPING_COMPANIES);
        if next == 400 {
            let invoice = format!("SBX{}{}", at.format("%Y"), generator.digits(9));
            let order = &mut self.orders[idx];
            order.invoice_number = Some(invoice);
            order.invoice_date = Some(at);
        }
        if next == 700 {
            let plan = self.plans.len();
            let order = &self.orders[idx];
            let active: Vec<usize> = order
                .items
                .iter()
                .copied()
                .filter(|&i| self.items[i].status < 700)
                .collect();
            let refund = active.iter().map(|&i| self.items[i].price).sum();
            self.plans.push(CancellationPlan {
                id: generator.uuid(),
                order: idx,
                order_items: active,
                refund_amount: refund,
                shipping_refund_amount: order.shipping_amount,
                status: "waiting",
                created_at: at,
            });
            self.orders[idx].cancel_plan = Some(plan);
        }
        let order = &mut self.orders[idx];
        order.status = next;
        order.updated_at = at;
        match next {
            500 => {
                order.tracking_number.clone_from(&tracking);
                order.shipping_company = Some(company);
            }
            700 => order.cancel_status = Some("waiting"),
            800 => {
                order.cancel_status = Some("completed");
                if let Some(plan) = order.cancel_plan {
                    self.plans[plan].status = "completed";
                    order.refund_amount += self.plans[plan].refund_amount;
                }
            }
            _ => {}
        }
        for &i in &order.items {
            let item = &mut self.items[i];
            if item.status >= 800 {
                continue;
            }
            item.status = next;
            item.updated_at = at;
            match next {
                400 => {
                    item.estimated_delivery_date = Some(micros(at + Duration::days(3)));
                }
                500 => {
                    item.tracking_number.clone_from(&tracking);
                    item.shipping_company = Some(company);
                    item.shipped_date = Some(at);
                }
                600 => item.delivered_date = Some(at),
                700 => item.cancel_status = Some("waiting"),
                800 => item.cancel_status = Some("completed"),
                _ => {}
            }
        }
        true
    }

    /// Rejects an item (the `reject/` action).
    fn reject(
        &mut self,
        generator: &mut Generator,
        item_idx: usize,
        at: DateTime<Utc>,
    ) -> Result<String, RejectError> {
        let item = &self.items[item_idx];
        match item.status {
            400 => return Err(RejectError::Packaged),
            900 => return Err(RejectError::AlreadyRejected),
            status if status > 400 => return Err(RejectError::Status(status)),
            _ => {}
        }
        let order_idx = item.order;
        let price = item.price;
        let item = &mut self.items[item_idx];
        item.status = 900;
        item.cancel_status = Some("completed");
        item.updated_at = at;
        let item_id = item.id.clone();
        self.plans.push(CancellationPlan {
            id: generator.uuid(),
            order: order_idx,
            order_items: vec![item_idx],
            refund_amount: price,
            shipping_refund_amount: Decimal::new(0, 2),
            status: "completed",
            created_at: at,
        });
        let order = &mut self.orders[order_idx];
        order.refund_amount += price;
        order.updated_at = at;
        if order.items.iter().all(|&i| self.items[i].status >= 800) {
            order.status = 900;
        }
        Ok(format!(
            "order item {item_id} of order {} rejected; order status {}",
            order.id, order.status
        ))
    }

    fn order_wire<'a>(&'a self, order: &'a Order) -> OrderWire<'a> {
        OrderWire {
            id: &order.id,
            number: &order.number,
            datasource: &order.datasource,
            shipping_address: &self.addresses[order.shipping_address].id,
            billing_address: &self.addresses[order.billing_address].id,
            date_placed: wire_time(order.date_placed),
            status: order.status,
            currency: order.currency,
            amount: money(order.amount),
            discount_amount: money(order.discount_amount),
            shipping_amount: money(order.shipping_amount),
            shipping_tax_rate: (!order.shipping_amount.is_zero()).then_some("20.00"),
            refund_amount: money(order.refund_amount),
            discount_refund_amount: "0.00",
            shipping_refund_amount: "0.00",
            invoice_number: order.invoice_number.as_deref(),
            invoice_date: order.invoice_date.map(wire_time),
            e_archive_url: order
                .invoice_number
                .as_ref()
                .map(|n| format!("https://earsiv.sandbox-seller.example/{n}.pdf")),
            tracking_number: order.tracking_number.as_deref(),
            shipping_company: order.shipping_company,
            cargo_company: order.shipping_company,
            has_gift_box: order.has_gift_box,
            gift_box_note: order.gift_box_note.as_deref(),
            language_code: "tr-tr",
            notes: None,
            delivery_range: None,
            shipping_option_slug: "standard",
            extra_field: Empty {},
            cancel_status: order.cancel_status,
            shipping_interest_amount: "0.00",
            created_at: wire_time(order.created_at),
            updated_at: wire_time(order.updated_at),
        }
    }

    fn item_wire<'a>(&'a self, item: &'a Item) -> ItemWire<'a> {
        let order = &self.orders[item.order];
        ItemWire {
            id: &item.id,
            order: &order.id,
            sku: &item.sku,
            status: item.status,
            price_currency: order.currency,
            price: money(item.price),
            tax_rate: money(item.tax_rate),
            invoice_number: order.invoice_number.as_deref(),
            invoice_date: order.invoice_date.map(wire_time),
            e_archive_url: None,
            tracking_number: item.tracking_number.as_deref(),
            shipping_company: item.shipping_company,
            retail_price: item.retail_price.map(money),
            extra_field: Empty {},
            estimated_delivery_date: item.estimated_delivery_date.map(wire_time),
            discount_amount: money(item.discount_amount),
            shipped_date: item.shipped_date.map(wire_time),
            delivered_date: item.delivered_date.map(wire_time),
            cancel_status: item.cancel_status,
            created_at: wire_time(item.created_at),
            updated_at: wire_time(item.updated_at),
        }
    }

    fn address_json(&self, address: &CustomerAddress) -> Value {
        json!({
            "id": address.id,
            "email": address.email,
            "phone_number": address.phone_number,
            "first_name": address.first_name,
            "last_name": address.last_name,
            "line": address.line,
            "is_active": true,
            "postcode": address.postcode,
            "notes": null,
            "company_name": null,
            "tax_office": null,
            "tax_no": null,
            "e_bill_taxpayer": false,
            "identity_number": address.identity_number,
            "country": self.places.get("country:TR"),
            "city": address.city,
            "township": address.township,
            "district": address.district,
        })
    }

    fn plan_json(&self, plan: &CancellationPlan) -> Value {
        let order = &self.orders[plan.order];
        json!({
            "id": plan.id,
            "shipping_refund_amount": money(plan.shipping_refund_amount),
            "refund_amount": money(plan.refund_amount),
            "discount_refund_amount": "0.00",
            "status": plan.status,
            "plan_type": "cancel",
            "invoice_number": order.invoice_number,
            "payment_plan": {},
            "order": order.id,
            "order_items": plan.order_items.iter().map(|&i| &self.items[i].id).collect::<Vec<_>>(),
            "created_at": wire_time(plan.created_at),
        })
    }

    fn snapshot_of(&self, order: &Order) -> SandboxOrder {
        SandboxOrder {
            external_id: order.id.clone(),
            status: order.status.to_string(),
            updated_at: order.updated_at,
            total: order.amount,
            line_count: order.items.len(),
        }
    }
}

impl FakeApi for Store {
    fn add_orders(
        &mut self,
        generator: &mut Generator,
        n: usize,
        now: DateTime<Utc>,
    ) -> Vec<String> {
        let now = micros(now);
        let date_placed = now - Duration::nanoseconds(i64::from(now.timestamp_subsec_nanos()));
        (0..n)
            .map(|_| {
                let idx = self.place(generator, date_placed, now);
                let order = &mut self.orders[idx];
                // Placed now: its record is created now too, not a moment later.
                order.created_at = now;
                order.updated_at = now;
                for &i in &order.items {
                    self.items[i].created_at = now;
                    self.items[i].updated_at = now;
                }
                order.id.clone()
            })
            .collect()
    }

    fn change_orders(
        &mut self,
        generator: &mut Generator,
        n: usize,
        now: DateTime<Utc>,
    ) -> Vec<String> {
        let now = micros(now);
        let open: Vec<usize> = (0..self.orders.len())
            .filter(|&i| !is_final(self.orders[i].status))
            .collect();
        generator.change_some(open, n, |generator, idx| {
            self.advance(generator, idx, now)
                .then(|| self.orders[idx].id.clone())
        })
    }

    fn change_order(
        &mut self,
        generator: &mut Generator,
        external_id: &str,
        now: DateTime<Utc>,
    ) -> bool {
        match self.order_by_id.get(external_id) {
            Some(&idx) => self.advance(generator, idx, micros(now)),
            None => false,
        }
    }

    fn change_item(&mut self, external_id: &str, now: DateTime<Utc>) -> bool {
        let now = micros(now);
        let Some(&item) = self
            .order_by_id
            .get(external_id)
            .and_then(|&idx| self.orders[idx].items.first())
        else {
            return false;
        };
        let item = &mut self.items[item];
        item.estimated_delivery_date = Some(now + Duration::days(5));
        item.updated_at = now;
        true
    }

    fn snapshot(&self) -> Vec<SandboxOrder> {
        self.orders.iter().map(|o| self.snapshot_of(o)).collect()
    }
}

/// An order as `orders/` sends it (the document's fields in its order, then `created_at`/`updated_at`).
#[derive(Serialize)]
struct OrderWire<'a> {
    id: &'a str,
    number: &'a str,
    datasource: &'a str,
    shipping_address: &'a str,
    billing_address: &'a str,
    date_placed: String,
    status: u16,
    currency: &'static str,
    amount: String,
    discount_amount: String,
    shipping_amount: String,
    shipping_tax_rate: Option<&'static str>,
    refund_amount: String,
    discount_refund_amount: &'static str,
    shipping_refund_amount: &'static str,
    invoice_number: Option<&'a str>,
    invoice_date: Option<String>,
    e_archive_url: Option<String>,
    tracking_number: Option<&'a str>,
    shipping_company: Option<&'static str>,
    cargo_company: Option<&'static str>,
    has_gift_box: bool,
    gift_box_note: Option<&'a str>,
    language_code: &'static str,
    notes: Option<&'static str>,
    delivery_range: Option<&'static str>,
    shipping_option_slug: &'static str,
    extra_field: Empty,
    cancel_status: Option<&'static str>,
    shipping_interest_amount: &'static str,
    created_at: String,
    updated_at: String,
}

/// An order item as `order-items/` sends it.
#[derive(Serialize)]
struct ItemWire<'a> {
    id: &'a str,
    order: &'a str,
    sku: &'a str,
    status: u16,
    price_currency: &'static str,
    price: String,
    tax_rate: String,
    invoice_number: Option<&'a str>,
    invoice_date: Option<String>,
    e_archive_url: Option<&'static str>,
    tracking_number: Option<&'a str>,
    shipping_company: Option<&'static str>,
    retail_price: Option<String>,
    extra_field: Empty,
    estimated_delivery_date: Option<String>,
    discount_amount: String,
    shipped_date: Option<String>,
    delivered_date: Option<String>,
    cancel_status: Option<&'static str>,
    created_at: String,
    updated_at: String,
}

/// Serializes as `{}` (the payloads' empty `extra_field`).
#[derive(Serialize)]
struct Empty {}

/// One DRF limit/offset page.
#[derive(Serialize)]
struct Page<T> {
    count: usize,
    next: Option<String>,
    previous: Option<String>,
    results: Vec<T>,
}

fn money(amount: Decimal) -> String {
    format!("{:.2}", amount)
}

/// `2024-05-01T08:23:11Z`, or with six fractional digits when the microseconds are not zero (as DRF).
fn wire_time(t: DateTime<Utc>) -> String {
    if t.timestamp_subsec_micros() == 0 {
        t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
    } else {
        t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
    }
}

/// A DRF-style 400 body: field name → messages.
#[derive(Default)]
struct FieldErrors(BTreeMap<String, Vec<String>>);

impl FieldErrors {
    fn add(&mut self, field: &str, message: &str) {
        self.0
            .entry(field.to_string())
            .or_default()
            .push(message.to_string());
    }
}

/// The query string as DRF's `QueryDict.get` sees it: the last value of a repeated key wins.
struct Params(Vec<(String, String)>);

impl Params {
    fn parse(query: Option<&str>) -> Params {
        Params(
            url::form_urlencoded::parse(query.unwrap_or_default().as_bytes())
                .into_owned()
                .collect(),
        )
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    }

    fn time(&self, key: &str, errors: &mut FieldErrors) -> Option<DateTime<Utc>> {
        let value = self.get(key)?;
        let parsed = parse_time(value);
        if parsed.is_none() {
            errors.add(key, "Enter a valid date/time.");
        }
        parsed
    }

    fn int(&self, key: &str, errors: &mut FieldErrors) -> Option<i64> {
        let value = self.get(key)?;
        let parsed = value.trim().parse().ok();
        if parsed.is_none() {
            errors.add(key, "Enter a number.");
        }
        parsed
    }

    fn decimal(&self, key: &str, errors: &mut FieldErrors) -> Option<Decimal> {
        let value = self.get(key)?;
        let parsed = value.trim().parse().ok();
        if parsed.is_none() {
            errors.add(key, "Enter a number.");
        }
        parsed
    }

    fn boolean(&self, key: &str, errors: &mut FieldErrors) -> Option<bool> {
        let value = self.get(key)?;
        let parsed = match value.to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" => Some(true),
            "false" | "0" | "no" => Some(false),
            _ => None,
        };
        if parsed.is_none() {
            errors.add(
                key,
                "Select a valid choice. That choice is not one of the available choices.",
            );
        }
        parsed
    }

    fn time_range(&self, field: &str, errors: &mut FieldErrors) -> Range<DateTime<Utc>> {
        Range {
            gte: self.time(&format!("{field}__gte"), errors),
            gt: self.time(&format!("{field}__gt"), errors),
            lte: self.time(&format!("{field}__lte"), errors),
            lt: self.time(&format!("{field}__lt"), errors),
        }
    }

    fn decimal_range(&self, field: &str, errors: &mut FieldErrors) -> Range<Decimal> {
        Range {
            gte: self.decimal(&format!("{field}__gte"), errors),
            gt: self.decimal(&format!("{field}__gt"), errors),
            lte: self.decimal(&format!("{field}__lte"), errors),
            lt: self.decimal(&format!("{field}__lt"), errors),
        }
    }

    /// DRF's limit/offset: a bad or missing value falls back to the default rather than failing.
    fn page(&self) -> (usize, usize) {
        let limit = self
            .get("limit")
            .and_then(|v| v.parse::<usize>().ok())
            .filter(|&l| l > 0)
            .map_or(DEFAULT_LIMIT, |l| l.min(MAX_LIMIT));
        let offset = self
            .get("offset")
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or(0);
        (limit, offset)
    }
}

/// ISO 8601 date-time with or without offset (none means UTC, the server's zone), or a bare date.
fn parse_time(value: &str) -> Option<DateTime<Utc>> {
    let value = value.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(value) {
        return Some(t.with_timezone(&Utc));
    }
    if let Ok(t) = DateTime::parse_from_str(value, "%Y-%m-%d %H:%M:%S%.f%:z") {
        return Some(t.with_timezone(&Utc));
    }
    for format in [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%d %H:%M",
    ] {
        if let Ok(t) = NaiveDateTime::parse_from_str(value, format) {
            return Some(t.and_utc());
        }
    }
    NaiveDate::parse_from_str(value, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc())
}

/// The `__gte/__gt/__lte/__lt` lookups of one field.
struct Range<T> {
    gte: Option<T>,
    gt: Option<T>,
    lte: Option<T>,
    lt: Option<T>,
}

impl<T: PartialOrd> Range<T> {
    fn contains(&self, value: &T) -> bool {
        self.gte.as_ref().is_none_or(|b| value >= b)
            && self.gt.as_ref().is_none_or(|b| value > b)
            && self.lte.as_ref().is_none_or(|b| value <= b)
            && self.lt.as_ref().is_none_or(|b| value < b)
    }
}

/// The `orders/` filters.
struct OrderFilter {
    number: Option<String>,
    number_contains: Option<String>,
    number_icontains: Option<String>,
    status: Option<i64>,
    currency: Option<String>,
    has_gift_box: Option<bool>,
    date_placed: Range<DateTime<Utc>>,
    created_at: Range<DateTime<Utc>>,
    updated_at: Range<DateTime<Utc>>,
    amount: Range<Decimal>,
    discount_amount: Range<Decimal>,
}

impl OrderFilter {
    fn parse(params: &Params, errors: &mut FieldErrors) -> OrderFilter {
        OrderFilter {
            number: params.get("number").map(str::to_owned),
            number_contains: params.get("number__contains").map(str::to_owned),
            number_icontains: params.get("number__icontains").map(str::to_lowercase),
            status: params.int("status", errors),
            currency: params.get("currency").map(str::to_owned),
            has_gift_box: params.boolean("has_gift_box", errors),
            date_placed: params.time_range("date_placed", errors),
            created_at: params.time_range("created_at", errors),
            updated_at: params.time_range("updated_at", errors),
            amount: params.decimal_range("amount", errors),
            discount_amount: params.decimal_range("discount_amount", errors),
        }
    }

    fn matches(&self, order: &Order) -> bool {
        self.number.as_ref().is_none_or(|n| *n == order.number)
            && self
                .number_contains
                .as_ref()
                .is_none_or(|n| order.number.contains(n.as_str()))
            && self
                .number_icontains
                .as_ref()
                .is_none_or(|n| order.number.to_lowercase().contains(n.as_str()))
            && self.status.is_none_or(|s| s == i64::from(order.status))
            && self.currency.as_ref().is_none_or(|c| c == order.currency)
            && self.has_gift_box.is_none_or(|g| g == order.has_gift_box)
            && self.date_placed.contains(&order.date_placed)
            && self.created_at.contains(&order.created_at)
            && self.updated_at.contains(&order.updated_at)
            && self.amount.contains(&order.amount)
            && self.discount_amount.contains(&order.discount_amount)
    }
}

/// The `order-items/` filters.
struct ItemFilter {
    order: Option<String>,
    order_number: Option<String>,
    order_number_contains: Option<String>,
    order_status: Option<i64>,
    order_date_placed: Range<DateTime<Utc>>,
    status: Option<i64>,
    price_currency: Option<String>,
    price: Range<Decimal>,
    created_at: Range<DateTime<Utc>>,
    updated_at: Range<DateTime<Utc>>,
}

impl ItemFilter {
    fn parse(params: &Params, errors: &mut FieldErrors) -> ItemFilter {
        ItemFilter {
            order: params.get("order").map(str::to_owned),
            order_number: params.get("order__number").map(str::to_owned),
            order_number_contains: params.get("order__number__contains").map(str::to_owned),
            order_status: params.int("order__status", errors),
            order_date_placed: params.time_range("order__date_placed", errors),
            status: params.int("status", errors),
            price_currency: params.get("price_currency").map(str::to_owned),
            price: params.decimal_range("price", errors),
            created_at: params.time_range("created_at", errors),
            updated_at: params.time_range("updated_at", errors),
        }
    }

    fn matches(&self, store: &Store, item: &Item) -> bool {
        let order = &store.orders[item.order];
        self.order.as_ref().is_none_or(|o| *o == order.id)
            && self
                .order_number
                .as_ref()
                .is_none_or(|n| *n == order.number)
            && self
                .order_number_contains
                .as_ref()
                .is_none_or(|n| order.number.contains(n.as_str()))
            && self
                .order_status
                .is_none_or(|s| s == i64::from(order.status))
            && self.order_date_placed.contains(&order.date_placed)
            && self.status.is_none_or(|s| s == i64::from(item.status))
            && self
                .price_currency
                .as_ref()
                .is_none_or(|c| c == order.currency)
            && self.price.contains(&item.price)
            && self.created_at.contains(&item.created_at)
            && self.updated_at.contains(&item.updated_at)
    }
}

/// Where `next`/`previous` links point: the request's own absolute URL.
struct PageLinks {
    base: String,
    params: Vec<(String, String)>,
}

impl PageLinks {
    fn new(headers: &HeaderMap, uri: &axum::http::Uri, params: &Params) -> PageLinks {
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("localhost");
        PageLinks {
            base: format!("http://{host}{}", uri.path()),
            params: params.0.clone(),
        }
    }

    /// The URL with `limit` and `offset` replaced (`offset` dropped when zero), parameters sorted (as DRF's
    /// `replace_query_param` does).
    fn url(&self, limit: usize, offset: usize) -> String {
        let mut params: Vec<(String, String)> = self
            .params
            .iter()
            .filter(|(k, _)| k != "limit" && k != "offset")
            .cloned()
            .collect();
        params.push(("limit".into(), limit.to_string()));
        if offset > 0 {
            params.push(("offset".into(), offset.to_string()));
        }
        params.sort();
        let query = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(params)
            .finish();
        format!("{}?{query}", self.base)
    }
}

/// One DRF limit/offset page over the indices of the matching rows.
fn paginate<T>(
    links: &PageLinks,
    params: &Params,
    matching: &[usize],
    row: impl Fn(usize) -> T,
) -> Page<T> {
    let (limit, offset) = params.page();
    let count = matching.len();
    Page {
        count,
        next: (offset + limit < count).then(|| links.url(limit, offset + limit)),
        previous: (offset > 0).then(|| links.url(limit, offset.saturating_sub(limit))),
        results: matching
            .iter()
            .skip(offset)
            .take(limit)
            .map(|&i| row(i))
            .collect(),
    }
}

/// The authentication check every endpoint runs first: the 401 response, or `None` when authorized.
fn unauthorized(shared: &Shared, headers: &HeaderMap) -> Option<Response> {
    let header = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let mut words = header.split_whitespace();
    let detail = match (words.next(), words.next(), words.next()) {
        (Some(scheme), Some(token), None) if scheme.eq_ignore_ascii_case("bearer") => {
            if token == shared.credentials.i1_token {
                return None;
            }
            "Invalid token."
        }
        (Some(scheme), None, _) if scheme.eq_ignore_ascii_case("bearer") => {
            "Invalid token header. No credentials provided."
        }
        (Some(scheme), Some(_), Some(_)) if scheme.eq_ignore_ascii_case("bearer") => {
            "Invalid token header. Token string should not contain spaces."
        }
        _ => "Authentication credentials were not provided.",
    };
    Some(
        (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer realm=\"api\"")],
            Json(json!({ "detail": detail })),
        )
            .into_response(),
    )
}

fn named(operation: &'static str, response: impl IntoResponse) -> Response {
    (Extension(Operation(operation)), response).into_response()
}

fn not_found() -> Response {
    (StatusCode::NOT_FOUND, Json(json!({"detail": "Not found."}))).into_response()
}

fn bad_request(errors: FieldErrors) -> Response {
    (StatusCode::BAD_REQUEST, Json(json!(errors.0))).into_response()
}

/// Routes relative to `…/api/i1`.
pub(super) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/orders/", get(list_orders))
        .route("/orders/{id}/", get(get_order))
        .route("/order-items/", get(list_items))
        .route("/order-items/{id}/", get(get_item))
        .route("/order-items/{id}/reject/", post(reject_item))
        .route("/customer-addresses/", get(list_addresses))
        .route("/cancellation-plans/", get(list_plans))
        .with_state(shared)
}

async fn list_orders(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    OriginalUri(uri): OriginalUri,
) -> Response {
    named("orders.list", orders_page(&shared, &headers, &uri))
}

fn orders_page(shared: &Shared, headers: &HeaderMap, uri: &axum::http::Uri) -> Response {
    if let Some(response) = unauthorized(shared, headers) {
        return response;
    }
    let params = Params::parse(uri.query());
    let mut errors = FieldErrors::default();
    let filter = OrderFilter::parse(&params, &mut errors);
    if !errors.0.is_empty() {
        return bad_request(errors);
    }
    let store = lock(&shared.i1);
    let matching: Vec<usize> = match &filter.number {
        // The number is unique: look it up instead of scanning.
        Some(number) => store
            .order_by_number
            .get(number)
            .copied()
            .filter(|&i| filter.matches(&store.orders[i]))
            .into_iter()
            .collect(),
        None => (0..store.orders.len())
            .filter(|&i| filter.matches(&store.orders[i]))
            .collect(),
    };
    let links = PageLinks::new(headers, uri, &params);
    let page = paginate(&links, &params, &matching, |i| {
        store.order_wire(&store.orders[i])
    });
    Json(page).into_response()
}

async fn get_order(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let response = one(&shared, &headers, |store| {
        let &i = store.order_by_id.get(&id)?;
        Some(Json(store.order_wire(&store.orders[i])).into_response())
    });
    named("orders.get", response)
}

/// One resource by its id (`find` answers it, `None` when there is none): 401 without the token, 404
/// when `find` finds nothing.
fn one(
    shared: &Shared,
    headers: &HeaderMap,
    find: impl FnOnce(&Store) -> Option<Response>,
) -> Response {
    if let Some(response) = unauthorized(shared, headers) {
        return response;
    }
    find(&lock(&shared.i1)).unwrap_or_else(not_found)
}

async fn list_items(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    OriginalUri(uri): OriginalUri,
) -> Response {
    named("order-items.list", items_page(&shared, &headers, &uri))
}

fn items_page(shared: &Shared, headers: &HeaderMap, uri: &axum::http::Uri) -> Response {
    if let Some(response) = unauthorized(shared, headers) {
        return response;
    }
    let params = Params::parse(uri.query());
    let mut errors = FieldErrors::default();
    let filter = ItemFilter::parse(&params, &mut errors);
    if !errors.0.is_empty() {
        return bad_request(errors);
    }
    let store = lock(&shared.i1);
    // Filtering by one order reads that order's items instead of scanning every item.
    let order = match (&filter.order, &filter.order_number) {
        (Some(id), _) => Some(store.order_by_id.get(id).copied()),
        (None, Some(number)) => Some(store.order_by_number.get(number).copied()),
        (None, None) => None,
    };
    let matching: Vec<usize> = match order {
        Some(order) => order
            .map(|o| store.orders[o].items.clone())
            .unwrap_or_default()
            .into_iter()
            .filter(|&i| filter.matches(&store, &store.items[i]))
            .collect(),
        None => (0..store.items.len())
            .filter(|&i| filter.matches(&store, &store.items[i]))
            .collect(),
    };
    let links = PageLinks::new(headers, uri, &params);
    let page = paginate(&links, &params, &matching, |i| {
        store.item_wire(&store.items[i])
    });
    Json(page).into_response()
}

async fn get_item(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let response = one(&shared, &headers, |store| {
        let &i = store.item_by_id.get(&id)?;
        Some(Json(store.item_wire(&store.items[i])).into_response())
    });
    named("order-items.get", response)
}

async fn reject_item(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let response = match unauthorized(&shared, &headers) {
        Some(response) => response,
        None => {
            let mut store = lock(&shared.i1);
            match store.item_by_id.get(&id).copied() {
                None => not_found(),
                Some(i) => {
                    let result = {
                        let mut generator = lock(&shared.generator);
                        store.reject(&mut generator, i, micros(Utc::now()))
                    };
                    match result {
                        Ok(effect) => {
                            let mut response = StatusCode::NO_CONTENT.into_response();
                            response.extensions_mut().insert(Effect(effect));
                            response
                        }
                        Err(refusal) => (
                            StatusCode::BAD_REQUEST,
                            Json(json!({ "non_field_errors": [refusal.to_string()] })),
                        )
                            .into_response(),
                    }
                }
            }
        }
    };
    named("order-items.reject", response)
}

async fn list_addresses(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    OriginalUri(uri): OriginalUri,
) -> Response {
    named(
        "customer-addresses.list",
        addresses_page(&shared, &headers, &uri),
    )
}

/// Reads one text field of an address, for the exact-match filters.
type AddressField = fn(&CustomerAddress) -> &str;

fn addresses_page(shared: &Shared, headers: &HeaderMap, uri: &axum::http::Uri) -> Response {
    if let Some(response) = unauthorized(shared, headers) {
        return response;
    }
    let params = Params::parse(uri.query());
    let store = lock(&shared.i1);
    let exact: Vec<(&str, AddressField)> = vec![
        ("email", |a| &a.email),
        ("phone_number", |a| &a.phone_number),
        ("first_name", |a| &a.first_name),
        ("last_name", |a| &a.last_name),
        ("postcode", |a| &a.postcode),
        ("identity_number", |a| &a.identity_number),
        ("city", |a| &a.city),
        ("district", |a| &a.district),
    ];
    let wanted: Vec<(&str, AddressField)> = exact
        .into_iter()
        .filter_map(|(key, field)| params.get(key).map(|v| (v, field)))
        .collect();
    let matches = |a: &CustomerAddress| wanted.iter().all(|(v, field)| field(a) == *v);
    let matching: Vec<usize> = match params.get("id") {
        Some(id) => store
            .address_by_id
            .get(id)
            .copied()
            .filter(|&i| matches(&store.addresses[i]))
            .into_iter()
            .collect(),
        None => (0..store.addresses.len())
            .filter(|&i| matches(&store.addresses[i]))
            .collect(),
    };
    let links = PageLinks::new(headers, uri, &params);
    let page = paginate(&links, &params, &matching, |i| {
        store.address_json(&store.addresses[i])
    });
    Json(page).into_response()
}

async fn list_plans(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    OriginalUri(uri): OriginalUri,
) -> Response {
    named(
        "cancellation-plans.list",
        plans_page(&shared, &headers, &uri),
    )
}

fn plans_page(shared: &Shared, headers: &HeaderMap, uri: &axum::http::Uri) -> Response {
    if let Some(response) = unauthorized(shared, headers) {
        return response;
    }
    let params = Params::parse(uri.query());
    let mut errors = FieldErrors::default();
    let created_on = params.get("created_at__date").and_then(|d| {
        let parsed = NaiveDate::parse_from_str(d, "%Y-%m-%d").ok();
        if parsed.is_none() {
            errors.add("created_at__date", "Enter a valid date.");
        }
        parsed
    });
    if !errors.0.is_empty() {
        return bad_request(errors);
    }
    let store = lock(&shared.i1);
    let order = params.get("order");
    let order_number = params.get("order__number");
    let order_item = params.get("order_items");
    let status = params.get("status");
    let plan_type = params.get("plan_type");
    let matching: Vec<usize> = (0..store.plans.len())
        .filter(|&i| {
            let plan = &store.plans[i];
            let plan_order = &store.orders[plan.order];
            order.is_none_or(|o| o == plan_order.id)
                && order_number.is_none_or(|n| n == plan_order.number)
                && order_item
                    .is_none_or(|id| plan.order_items.iter().any(|&it| store.items[it].id == id))
                && status.is_none_or(|s| s == plan.status)
                && plan_type.is_none_or(|t| t == "cancel")
                && created_on.is_none_or(|d| plan.created_at.date_naive() == d)
        })
        .collect();
    let links = PageLinks::new(headers, uri, &params);
    let page = paginate(&links, &params, &matching, |i| {
        store.plan_json(&store.plans[i])
    });
    Json(page).into_response()
}
