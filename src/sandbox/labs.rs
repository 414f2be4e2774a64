//! Fake Labs order API: REST/JSON under `/v1`, authenticated by `Authorization: Bearer <token>`.
//!
//! Decisions where the document leaves room, each one something an adapter must cope with:
//! - **External id**: the order's numeric `id` (what `orderId`, `DELETE /orders/{id}` and the invoice links
//!   refer to), as text.
//! - **List** `GET /orders?page&limit`: both required and positive (else 400); `limit` is capped at
//!   [`MAX_LIMIT`] and the response's `limit` is the one applied. Orders come in ascending `id` (creation)
//!   order, so a status change never moves an order between pages. Filters: `status` (a list status string;
//!   both `PENDING_APPROVE` and `PENDING_APPROVED` select code 0), `source`, `cargoCode`, `warehouseId`,
//!   `platformId` (the order's `marketplaceId`), `createdStartAfter` and `updatedStartAfter` (`YYYY-MM-DD`:
//!   orders created/updated on or after that Istanbul day; anything else is 400).
//! - **Status**: every order has a code 0–8 (the transition codes). The list shows it as a string using only
//!   the documented names: 0 `PENDING_APPROVE` or `PENDING_APPROVED` (both spellings occur, per order, as in
//!   the document), 1 `CREATED`, 2–4 `PREPARING` (packed and handed-to-cargo orders are still "preparing" in
//!   the list's vocabulary), 5 `COMPLETED`, 6 `CANCELLED`, 7–8 `RETURN`. `SandboxOrder::status` is that
//!   string.
//! - **Dates** are Istanbul local time without offset, in two formats mixed across orders (`30/11/2023
//!   10:48:26` and `2023-12-29 11:47:22`); each order has `createdAt` and `updatedAt` (the latter is not in
//!   the document's list example, which predates it; the create response has `updated_at`).
//! - **Amounts**: line `price` as a four-decimal string (`"2825.0000"`), quantities as two-decimal strings;
//!   the order's `priceTotal` (the create request's field) is the lines' `price × requestedQty` plus the
//!   shipping fee, two decimals, and is `SandboxOrder::total`.
//! - **Answers** are `{"status": "success"|"error", "message": …}`. 401 `Unauthenticated.` for a missing or
//!   wrong token; 400 for a bad list query; 422 for an invalid body; 404 for an unknown order. A backwards
//!   (or same-status) transition is refused with **HTTP 200** and `"status": "error"`, so only the body tells.
//! - **Transitions**: `POST /orders/status {orderId, statusCode}` moves to any higher code 0–8;
//!   `DELETE /orders/{id}` removes the order; `POST /orders/invoice-link {payload: […]}` (the digest's
//!   decision; `DELETE` there is 405) validates every entry — known `orderId`, `marketplace` one of trendyol,
//!   hepsiburada, ciceksepeti, a link, `invoiceNumber` of 3 alphanumerics + a year 2020–2099 + 9 digits,
//!   10-digit Unix `invoiceDateTime` (number or string) — and queues all or none.
//! - **Changes** (`change_order`): 0→1→2→3→4→5 and 7→8; a waiting or new order (0, 1) sometimes goes to 6
//!   (cancelled) instead. 5, 6 and 8 are final.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Extension, Json, Router};
use chrono::{DateTime, Duration, NaiveDate, Utc};
use chrono_tz::Europe::Istanbul;
use rust_decimal::Decimal;
use serde::Serialize;
use serde_json::{Value, json};

use super::audit::{Effect, Operation};
use super::generator::{Address, Generator, Person};
use super::{FakeApi, SandboxOrder, Shared, lock};

/// The largest page the fake serves.
const MAX_LIMIT: usize = 1000;

const SOURCES: &[&str] = &["TRENDYOL", "TRENDYOL", "HEPSIBURADA", "GETIR", "VAGA"];
const CARGO_CODES: &[&str] = &["MNG", "ARAS", "SURAT", "YK", "HX"];
const WAREHOUSES: &[u64] = &[184, 184, 185, 201];
const INVOICE_MARKETPLACES: &[&str] = &["trendyol", "hepsiburada", "ciceksepeti"];

/// The list's status string for a status code.
fn status_name(code: u8, approved_spelling: bool) -> &'static str {
    match code {
        0 if approved_spelling => "PENDING_APPROVED",
        0 => "PENDING_APPROVE",
        1 => "CREATED",
        2..=4 => "PREPARING",
        5 => "COMPLETED",
        6 => "CANCELLED",
        _ => "RETURN",
    }
}

/// Which status codes no simulated change leaves.
fn is_final(code: u8) -> bool {
    matches!(code, 5 | 6 | 8)
}

/// How an order writes its date-times (both formats occur in the document).
#[derive(Clone, Copy)]
enum DateStyle {
    /// `30/11/2023 10:48:26`
    Slashes,
    /// `2023-12-29 11:47:22`
    Dashes,
    /// `createdAt` with slashes, `updatedAt` with dashes, as the document's create response.
    Mixed,
}

fn local(t: DateTime<Utc>, slashes: bool) -> String {
    let t = t.with_timezone(&Istanbul);
    if slashes {
        t.format("%d/%m/%Y %H:%M:%S").to_string()
    } else {
        t.format("%Y-%m-%d %H:%M:%S").to_string()
    }
}

struct Line {
    id: u64,
    barcode: String,
    description: String,
    requested_qty: u32,
    price: Decimal,
}

struct Order {
    id: u64,
    package_id: String,
    source: &'static str,
    marketplace_id: String,
    status: u8,
    approved_spelling: bool,
    date_style: DateStyle,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    customer: Person,
    shipment_address: Address,
    invoice_address: Address,
    warehouse_id: u64,
    cargo_code: &'static str,
    tracking_id: Option<String>,
    shipping_fee: Decimal,
    lines: Vec<Line>,
}

impl Order {
    fn status_name(&self) -> &'static str {
        status_name(self.status, self.approved_spelling)
    }

    fn total(&self) -> Decimal {
        self.lines
            .iter()
            .map(|l| l.price * Decimal::from(l.requested_qty))
            .sum::<Decimal>()
            + self.shipping_fee
    }

    fn address_wire<'a>(&'a self, address: &'a Address) -> AddressWire<'a> {
        AddressWire {
            address_name: "Ev",
            invoice_type: "personal",
            identifier: Identifier {
                customer_name: self.customer_name(),
                phone_number: self.phone(),
                identity: 11_111_111_111,
            },
            address_detail: AddressDetail {
                country_code: "TR",
                city: &address.city,
                district: &address.district,
                town: &address.district,
                state: "",
                address: format!("{} {} {}", address.line, address.district, address.city),
                postal_code: &address.postal_code,
            },
            is_default: 1,
            company: Company {
                company_name: "",
                tax_number: "",
                tax_office: "",
            },
        }
    }

    /// The phone number as the document writes it: with the country code, without `+`.
    fn phone(&self) -> String {
        format!("9{}", self.customer.phone)
    }

    fn customer_name(&self) -> String {
        format!("{} {}", self.customer.first_name, self.customer.last_name)
    }

    fn wire(&self) -> OrderWire<'_> {
        let (created_slashes, updated_slashes) = match self.date_style {
            DateStyle::Slashes => (true, true),
            DateStyle::Dashes => (false, false),
            DateStyle::Mixed => (true, false),
        };
        let cancelled = self.status == 6;
        let status = self.status_name();
        let lines = self
            .lines
            .iter()
            .map(|line| {
                let qty = if cancelled { 0 } else { line.requested_qty };
                LineWire {
                    id: line.id,
                    barcode_id: &line.barcode,
                    status,
                    qty: format!("{qty}.00"),
                    requested_qty: format!("{}.00", line.requested_qty),
                    cancelled_qty: line.requested_qty - qty,
                    price: format!("{:.4}", line.price),
                    currency: "TRY",
                    model_id: None,
                    attributes: [],
                    line_description: &line.description,
                    thumbnail: "https://static-labs.s3.eu-central-1.amazonaws.com/products/",
                    provision: Provision::default(),
                }
            })
            .collect();
        let total_product_qty = if cancelled {
            0
        } else {
            self.lines.iter().map(|l| l.requested_qty).sum()
        };
        let fee = if self.shipping_fee.is_zero() {
            "0".to_string()
        } else {
            format!("{:.2}", self.shipping_fee)
        };
        OrderWire {
            id: self.id,
            package_id: &self.package_id,
            manager_id: None,
            currency: "TRY",
            source: self.source,
            order_status: status,
            marketplace_id: &self.marketplace_id,
            manager_note: None,
            created_at: local(self.created_at, created_slashes),
            updated_at: local(self.updated_at, updated_slashes),
            is_transfered: 0,
            is_corporate: false,
            shipment_address: self.address_wire(&self.shipment_address),
            invoice_address: self.address_wire(&self.invoice_address),
            warehouse_id: self.warehouse_id,
            total_product_qty,
            price_total: format!("{:.2}", self.total()),
            customer: Customer {
                custumer_name: self.customer_name(),
                custumer_email: &self.customer.email,
                custumer_phone_number: self.phone(),
                custumer_identity: "11111111111",
            },
            payment: Payment {
                payment_id: None,
                payment_method: "MARKETPLACE",
                payment_status: "SUCCESS",
            },
            shipment: Shipment {
                dispatch_status: self.status >= 4 && !cancelled,
                dispatch_description: "",
                cargo_company: self.cargo_code,
                barcode_id: &self.package_id,
                tracking_id: self.tracking_id.as_deref(),
                tracking_url: self
                    .tracking_id
                    .as_ref()
                    .map(|t| format!("https://kargotakip.sandbox-labs.example/{t}")),
                // A JSON number written as this literal (serde_json's `arbitrary_precision` keeps the text).
                shipping_fee: fee.parse().ok(),
            },
            provision: Provision::default(),
            lines,
        }
    }

    fn snapshot(&self) -> SandboxOrder {
        SandboxOrder {
            external_id: self.id.to_string(),
            status: self.status_name().to_string(),
            updated_at: self.updated_at,
            total: self.total(),
            line_count: self.lines.len(),
        }
    }
}

/// An order as the list sends it (field names and order as in the document's example).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct OrderWire<'a> {
    id: u64,
    package_id: &'a str,
    manager_id: Option<u64>,
    currency: &'static str,
    source: &'static str,
    order_status: &'static str,
    marketplace_id: &'a str,
    manager_note: Option<&'a str>,
    created_at: String,
    updated_at: String,
    is_transfered: u8,
    is_corporate: bool,
    shipment_address: AddressWire<'a>,
    invoice_address: AddressWire<'a>,
    warehouse_id: u64,
    total_product_qty: u32,
    price_total: String,
    customer: Customer<'a>,
    payment: Payment,
    shipment: Shipment<'a>,
    provision: Provision,
    lines: Vec<LineWire<'a>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct AddressWire<'a> {
    address_name: &'static str,
    invoice_type: &'static str,
    identifier: Identifier,
    address_detail: AddressDetail<'a>,
    is_default: u8,
    company: Company,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Identifier {
    customer_name: String,
    phone_number: String,
    identity: u64,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct AddressDetail<'a> {
    country_code: &'static str,
    city: &'a str,
    district: &'a str,
    town: &'a str,
    state: &'static str,
    address: String,
    postal_code: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Company {
    company_name: &'static str,
    tax_number: &'static str,
    tax_office: &'static str,
}

/// The document spells these keys `custumer…`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Customer<'a> {
    custumer_name: String,
    custumer_email: &'a str,
    custumer_phone_number: String,
    custumer_identity: &'static str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Payment {
    payment_id: Option<&'static str>,
    payment_method: &'static str,
    payment_status: &'static str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Shipment<'a> {
    dispatch_status: bool,
    dispatch_description: &'static str,
    cargo_company: &'static str,
    barcode_id: &'a str,
    tracking_id: Option<&'a str>,
    tracking_url: Option<String>,
    shipping_fee: Option<serde_json::Number>,
}

#[derive(Serialize, Default)]
#[serde(rename_all = "camelCase")]
struct Provision {
    max_possible_amount: Option<u32>,
    min_possible_amount: Option<u32>,
    max_weight: Option<u32>,
    min_weight: Option<u32>,
    unit_id: Option<u32>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct LineWire<'a> {
    id: u64,
    barcode_id: &'a str,
    status: &'static str,
    qty: String,
    requested_qty: String,
    cancelled_qty: u32,
    price: String,
    currency: &'static str,
    model_id: Option<u64>,
    attributes: [u8; 0],
    line_description: &'a str,
    thumbnail: &'static str,
    provision: Provision,
}

/// `GET /orders`'s answer.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ListWire<'a> {
    items: Vec<OrderWire<'a>>,
    total_items: usize,
    total_page: usize,
    current_page: usize,
    limit: usize,
}

/// Whole seconds: the wire formats carry no fraction, so a value read back compares equal.
fn seconds(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp(t.timestamp(), 0).unwrap_or(t)
}

/// The Labs account's orders, by id.
pub(super) struct Store {
    orders: BTreeMap<u64, Order>,
    next_order_id: u64,
    next_line_id: u64,
}

impl Store {
    pub(super) fn seeded(generator: &mut Generator, n: usize, now: DateTime<Utc>) -> Store {
        let mut store = Store {
            orders: BTreeMap::new(),
            next_order_id: 2_663_229,
            next_line_id: 12_097_167,
        };
        let mut placed: Vec<DateTime<Utc>> = (0..n).map(|_| generator.placed_at(now, 90)).collect();
        placed.sort();
        for created_at in placed {
            let id = store.place(generator, created_at);
            let age_days = (now - created_at).num_days();
            let steps = match age_days {
                0 => generator.range(0, 2),
                1..=3 => generator.range(1, 4),
                _ => generator.range(3, 6),
            };
            let mut at = created_at;
            for _ in 0..steps {
                let room = (now - at).num_seconds().max(2) as usize;
                at += Duration::seconds(generator.range(1, room.min(2 * 86_400) / 2 + 1) as i64);
                if at >= now || !store.advance(generator, id, at) {
                    break;
                }
            }
        }
        store
    }

    /// Places a new order in status 0 (awaiting approval); returns its id.
    fn place(&mut self, generator: &mut Generator, created_at: DateTime<Utc>) -> u64 {
        let created_at = seconds(created_at);
        self.next_order_id += generator.range(1, 60) as u64;
        let id = self.next_order_id;
        let source = *generator.pick(SOURCES);
        let marketplace_id = match source {
            "HEPSIBURADA" => generator.uuid(),
            _ => format!("{}{}", generator.range(1, 9), generator.digits(10)),
        };
        let customer = generator.person();
        let shipment_address = generator.address();
        let invoice_address = if generator.chance(0.8) {
            shipment_address.clone()
        } else {
            generator.address()
        };
        let lines: Vec<Line> = (0..generator.range(1, 4))
            .map(|_| {
                let product = generator.product();
                self.next_line_id += generator.range(1, 9) as u64;
                Line {
                    id: self.next_line_id,
                    barcode: format!("869{}", generator.digits(10)),
                    description: product.name,
                    requested_qty: *generator.pick(&[1, 1, 1, 1, 2, 3]),
                    price: product.unit_price,
                }
            })
            .collect();
        let &cargo_code = generator.pick(CARGO_CODES);
        let date_style =
            *generator.pick(&[DateStyle::Slashes, DateStyle::Dashes, DateStyle::Mixed]);
        let order = Order {
            id,
            package_id: String::new(),
            source,
            marketplace_id,
            status: 0,
            approved_spelling: generator.chance(0.5),
            date_style,
            created_at,
            updated_at: created_at,
            customer,
            shipment_address,
            invoice_address,
            warehouse_id: *generator.pick(WAREHOUSES),
            cargo_code,
            tracking_id: None,
            shipping_fee: if generator.chance(0.6) {
                Decimal::ZERO
            } else {
                Decimal::new(3_999, 2)
            },
            lines,
        };
        self.orders.insert(id, order);
        id
    }

    /// Moves an order to `code` at `at` (the caller checked the move).
    fn set_status(&mut self, generator: &mut Generator, id: u64, code: u8, at: DateTime<Utc>) {
        let package_id = format!("LABS{}", generator.digits(12));
        let tracking = generator.digits(14);
        if let Some(order) = self.orders.get_mut(&id) {
            order.status = code;
            order.updated_at = seconds(at);
            if code >= 3 && order.package_id.is_empty() {
                order.package_id = package_id;
            }
            if code >= 4 && order.tracking_id.is_none() && code != 6 {
                order.tracking_id = Some(tracking);
            }
        }
    }

    /// One simulated step forward; false when the order is unknown or final.
    fn advance(&mut self, generator: &mut Generator, id: u64, at: DateTime<Utc>) -> bool {
        let Some(current) = self.orders.get(&id).map(|o| o.status) else {
            return false;
        };
        let next = match current {
            0 | 1 if generator.chance(0.06) => 6,
            code if is_final(code) => return false,
            7 => 8,
            code => code + 1,
        };
        self.set_status(generator, id, next, at);
        true
    }
}

impl FakeApi for Store {
    fn add_orders(
        &mut self,
        generator: &mut Generator,
        n: usize,
        now: DateTime<Utc>,
    ) -> Vec<String> {
        (0..n)
            .map(|_| self.place(generator, now).to_string())
            .collect()
    }

    fn change_orders(
        &mut self,
        generator: &mut Generator,
        n: usize,
        now: DateTime<Utc>,
    ) -> Vec<String> {
        let open: Vec<u64> = self
            .orders
            .values()
            .filter(|o| !is_final(o.status))
            .map(|o| o.id)
            .collect();
        generator.change_some(open, n, |generator, id| {
            self.advance(generator, id, now).then(|| id.to_string())
        })
    }

    fn change_order(
        &mut self,
        generator: &mut Generator,
        external_id: &str,
        now: DateTime<Utc>,
    ) -> bool {
        external_id
            .parse()
            .is_ok_and(|id| self.advance(generator, id, now))
    }

    fn snapshot(&self) -> Vec<SandboxOrder> {
        self.orders.values().map(Order::snapshot).collect()
    }
}

/// `{"status": …, "message": …}` with an HTTP status.
fn answer(status: StatusCode, ok: bool, message: &str) -> Response {
    let word = if ok { "success" } else { "error" };
    (status, Json(json!({"status": word, "message": message}))).into_response()
}

fn unauthorized(shared: &Shared, headers: &HeaderMap) -> Option<Response> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim());
    (token != Some(shared.credentials.labs_token.as_str()))
        .then(|| answer(StatusCode::UNAUTHORIZED, false, "Unauthenticated."))
}

fn named(operation: &'static str, response: Response) -> Response {
    (Extension(Operation(operation)), response).into_response()
}

fn with_effect(mut response: Response, effect: String) -> Response {
    response.extensions_mut().insert(Effect(effect));
    response
}

/// Routes relative to `/labs/v1`.
pub(super) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/orders", get(list_orders))
        .route("/orders/status", post(update_status))
        .route("/orders/invoice-link", post(invoice_links))
        .route("/orders/{id}", delete(delete_order))
        .with_state(shared)
}

/// Why a list query is refused; the message is the 400 body's `message`.
#[derive(Debug, thiserror::Error)]
enum QueryError {
    #[error("page ve limit parametrelerinin gönderilmesi zorunludur.")]
    PageRequired,
    #[error("{0} parametresi pozitif bir tam sayı olmalıdır.")]
    NotPositive(&'static str),
    #[error("{0} YYYY-MM-DD formatında olmalıdır.")]
    NotADate(&'static str),
}

/// The list query, validated.
struct ListQuery {
    page: usize,
    limit: usize,
    status: Option<String>,
    source: Option<String>,
    cargo_code: Option<String>,
    warehouse_id: Option<String>,
    platform_id: Option<String>,
    created_from: Option<NaiveDate>,
    updated_from: Option<NaiveDate>,
}

impl ListQuery {
    fn parse(query: Option<&str>) -> Result<ListQuery, QueryError> {
        let params: BTreeMap<String, String> =
            url::form_urlencoded::parse(query.unwrap_or_default().as_bytes())
                .into_owned()
                .filter(|(_, v)| !v.is_empty())
                .collect();
        let positive = |key: &'static str| -> Result<usize, QueryError> {
            let value = params.get(key).ok_or(QueryError::PageRequired)?;
            value
                .parse::<usize>()
                .ok()
                .filter(|&v| v > 0)
                .ok_or(QueryError::NotPositive(key))
        };
        let date = |key: &'static str| -> Result<Option<NaiveDate>, QueryError> {
            params
                .get(key)
                .map(|v| {
                    NaiveDate::parse_from_str(v, "%Y-%m-%d").map_err(|_| QueryError::NotADate(key))
                })
                .transpose()
        };
        Ok(ListQuery {
            page: positive("page")?,
            limit: positive("limit")?.min(MAX_LIMIT),
            status: params.get("status").cloned(),
            source: params.get("source").cloned(),
            cargo_code: params.get("cargoCode").cloned(),
            warehouse_id: params.get("warehouseId").cloned(),
            platform_id: params.get("platformId").cloned(),
            created_from: date("createdStartAfter")?,
            updated_from: date("updatedStartAfter")?,
        })
    }

    fn matches(&self, order: &Order) -> bool {
        let on_or_after =
            |t: DateTime<Utc>, day: NaiveDate| t.with_timezone(&Istanbul).date_naive() >= day;
        self.status.as_ref().is_none_or(|s| {
            s == order.status_name()
                || (order.status == 0 && (s == "PENDING_APPROVE" || s == "PENDING_APPROVED"))
        }) && self.source.as_ref().is_none_or(|s| s == order.source)
            && self
                .cargo_code
                .as_ref()
                .is_none_or(|c| c == order.cargo_code)
            && self
                .warehouse_id
                .as_ref()
                .is_none_or(|w| *w == order.warehouse_id.to_string())
            && self
                .platform_id
                .as_ref()
                .is_none_or(|p| *p == order.marketplace_id)
            && self
                .created_from
                .is_none_or(|d| on_or_after(order.created_at, d))
            && self
                .updated_from
                .is_none_or(|d| on_or_after(order.updated_at, d))
    }
}

async fn list_orders(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let response = match unauthorized(&shared, &headers) {
        Some(response) => response,
        None => match ListQuery::parse(query.as_deref()) {
            Err(error) => answer(StatusCode::BAD_REQUEST, false, &error.to_string()),
            Ok(query) => {
                let store = lock(&shared.labs);
                let matching: Vec<&Order> =
                    store.orders.values().filter(|o| query.matches(o)).collect();
                let skip = (query.page - 1).saturating_mul(query.limit);
                Json(ListWire {
                    items: matching
                        .iter()
                        .skip(skip)
                        .take(query.limit)
                        .map(|o| o.wire())
                        .collect(),
                    total_items: matching.len(),
                    total_page: matching.len().div_ceil(query.limit),
                    current_page: query.page,
                    limit: query.limit,
                })
                .into_response()
            }
        },
    };
    named("orders.list", response)
}

/// An integer field that may arrive as a JSON number or a numeric string.
fn integer(value: Option<&Value>) -> Option<u64> {
    match value? {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

async fn update_status(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(response) = unauthorized(&shared, &headers) {
        return named("orders.status", response);
    }
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        return named(
            "orders.status",
            answer(
                StatusCode::UNPROCESSABLE_ENTITY,
                false,
                "Geçersiz JSON gövdesi.",
            ),
        );
    };
    let (Some(order_id), Some(code)) = (
        integer(body.get("orderId")),
        integer(body.get("statusCode")),
    ) else {
        return named(
            "orders.status",
            answer(
                StatusCode::UNPROCESSABLE_ENTITY,
                false,
                "orderId ve statusCode alanları zorunludur.",
            ),
        );
    };
    let Some(code) = u8::try_from(code).ok().filter(|&c| c <= 8) else {
        return named(
            "orders.status",
            answer(
                StatusCode::UNPROCESSABLE_ENTITY,
                false,
                "statusCode 0 ile 8 arasında olmalıdır.",
            ),
        );
    };
    let mut store = lock(&shared.labs);
    let Some(current) = store.orders.get(&order_id).map(|o| o.status) else {
        return named(
            "orders.status",
            answer(StatusCode::NOT_FOUND, false, "Sipariş bulunamadı."),
        );
    };
    if code <= current {
        return named(
            "orders.status",
            answer(
                StatusCode::OK,
                false,
                "Sipariş durumu geriye doğru güncellenemez.",
            ),
        );
    }
    store.set_status(&mut lock(&shared.generator), order_id, code, Utc::now());
    let response = answer(StatusCode::OK, true, "Sipariş durumu başarıyla güncellendi");
    named(
        "orders.status",
        with_effect(
            response,
            format!("order {order_id} status {current} -> {code}"),
        ),
    )
}

async fn delete_order(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if let Some(response) = unauthorized(&shared, &headers) {
        return named("orders.delete", response);
    }
    let removed = id
        .parse::<u64>()
        .ok()
        .and_then(|id| lock(&shared.labs).orders.remove(&id));
    let response = match removed {
        Some(order) => with_effect(
            answer(StatusCode::OK, true, "Sipariş başarılı bir şekilde silindi"),
            format!("order {} deleted", order.id),
        ),
        None => answer(StatusCode::NOT_FOUND, false, "Sipariş bulunamadı."),
    };
    named("orders.delete", response)
}

/// `[3 alphanumerics][year 2020–2099][9 digits]`.
fn valid_invoice_number(number: &str) -> bool {
    let bytes = number.as_bytes();
    bytes.len() == 16
        && bytes[..3].iter().all(u8::is_ascii_alphanumeric)
        && bytes[3..].iter().all(u8::is_ascii_digit)
        && number[3..7]
            .parse::<u32>()
            .is_ok_and(|year| (2020..=2099).contains(&year))
}

/// A 10-digit Unix time in seconds, as a JSON number or string.
fn valid_invoice_time(value: Option<&Value>) -> bool {
    let text = match value {
        Some(Value::Number(n)) => n.to_string(),
        Some(Value::String(s)) => s.clone(),
        _ => return false,
    };
    text.len() == 10 && text.bytes().all(|b| b.is_ascii_digit())
}

/// Why one invoice-link entry is refused, if it is.
fn invoice_entry_error(store: &Store, index: usize, entry: &Value) -> Option<String> {
    let field = |name: &str| format!("payload.{index}.{name} geçersiz.");
    let text = |name: &str| {
        entry
            .get(name)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    };
    match integer(entry.get("orderId")) {
        None => return Some(field("orderId")),
        Some(id) if !store.orders.contains_key(&id) => {
            return Some(format!("payload.{index}.orderId: sipariş bulunamadı."));
        }
        Some(_) => {}
    }
    if !text("marketplace")
        .is_some_and(|m| INVOICE_MARKETPLACES.contains(&m.to_lowercase().as_str()))
    {
        return Some(field("marketplace"));
    }
    if text("invoiceLink").is_none() {
        return Some(field("invoiceLink"));
    }
    if !text("invoiceNumber").is_some_and(valid_invoice_number) {
        return Some(field("invoiceNumber"));
    }
    if !valid_invoice_time(entry.get("invoiceDateTime")) {
        return Some(field("invoiceDateTime"));
    }
    None
}

async fn invoice_links(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(response) = unauthorized(&shared, &headers) {
        return named("orders.invoice-link", response);
    }
    let entries = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|body| body.get("payload").and_then(Value::as_array).cloned())
        .filter(|entries| !entries.is_empty());
    let Some(entries) = entries else {
        return named(
            "orders.invoice-link",
            answer(
                StatusCode::UNPROCESSABLE_ENTITY,
                false,
                "payload alanı zorunludur.",
            ),
        );
    };
    let store = lock(&shared.labs);
    if let Some(error) = entries
        .iter()
        .enumerate()
        .find_map(|(i, entry)| invoice_entry_error(&store, i, entry))
    {
        return named(
            "orders.invoice-link",
            answer(StatusCode::UNPROCESSABLE_ENTITY, false, &error),
        );
    }
    let ids: Vec<String> = entries
        .iter()
        .filter_map(|e| integer(e.get("orderId")))
        .map(|id| id.to_string())
        .collect();
    let response = answer(
        StatusCode::OK,
        true,
        "Fatura linkleri gönderilmek üzere sıraya alındı.",
    );
    named(
        "orders.invoice-link",
        with_effect(
            response,
            format!("invoice links queued for orders {}", ids.join(",")),
        ),
    )
}
