//! Fake GittiGidiyor IndividualSaleService: SOAP 1.1 over HTTP, one operation, `getSalesByDateRange`.
//!
//! A request is a `POST` of a SOAP 1.1 envelope (`Content-Type: text/xml`) to the service path, with HTTP
//! basic auth (role name and role password) and, inside the operation element (namespace
//! `http://sale.individual.ws.listingapi.gg.com`, children unqualified), `apiKey`, `time` (Unix
//! milliseconds, 13 digits) and `sign` = lowercase hex MD5 of `apiKey + secretKey + time`.
//!
//! What the document leaves open and this fake decides:
//! - **External id**: `saleCode` (`SC` and nine digits). [`SandboxOrder::status`] is `statusCode`
//!   (`STATUS_…`); a sale is one product line; [`SandboxOrder::total`] is `price` × `amount` (`price` is the
//!   unit price, a decimal string with two places in lira).
//! - **The date range filters the sale date**, which the response shows as `endDate` (the listing ends when
//!   its item sells), both ends inclusive, to the second, Istanbul time. It does not filter `lastActionDate`,
//!   the change marker, which moves (by at least a second) on every status change.
//! - **Failures**: a missing or wrong basic-auth pair → HTTP 401; a content type other than `text/xml` →
//!   HTTP 415; an envelope that cannot be parsed, is not SOAP 1.1 or names another operation → HTTP 500 with
//!   a SOAP Fault; a wrong `apiKey`, `time` (not 13 digits, or more than ten minutes away from the server's
//!   clock), `sign` or parameter → HTTP 200 with `ackCode` `failure` and
//!   `error{errorId, errorCode, message, viewMessage}` (English when `lang` is `en`). `SOAPAction` is not
//!   checked.
//! - **Parameters**: `pageNumber` from 1, `pageSize` 1–100, both required; `startDate`/`endDate`
//!   (`dd/MM/yyyy HH:mm:ss`) required; `withData` defaults to false (only sale codes); `byStatus` empty means
//!   all, `S` WAITING_CARGO_INFO, `C` WAITING_APPROVAL, `P` APPROVED, `O` every final status, `V` every
//!   non-final status, `I` EARLY_CANCEL_REQUESTED and INSTANT_REFUND_AFTER_SHIPPING_WAITING_APPROVAL, `R` the
//!   returned and cancelled ones; `byUser` filters the buyer's username; `orderBy` `P` (sale code, the
//!   default), `C` (price) or `A` (last action), `orderType` `A` (default) or `D`.
//! - **Response**: `saleCount` is the number of sales on this page; `sales` holds one `sale` per sale (one
//!   element when there is one); `nextPageAvailable` tells whether another page follows.

use std::cmp::Ordering;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Extension, Router};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use chrono::{DateTime, Duration, NaiveDateTime, Utc};
use chrono_tz::Europe::Istanbul;
use md5::{Digest, Md5};
use quick_xml::escape::{escape, resolve_predefined_entity};
use quick_xml::events::Event;
use quick_xml::name::{QName, ResolveResult};
use quick_xml::reader::NsReader;
use rust_decimal::Decimal;

use super::audit::Operation;
use super::generator::Generator;
use super::{Credentials, FakeApi, SandboxOrder, Shared, lock};

const SERVICE_NS: &str = "http://sale.individual.ws.listingapi.gg.com";
const SOAP11_NS: &str = "http://schemas.xmlsoap.org/soap/envelope/";
const SOAP12_NS: &str = "http://www.w3.org/2003/05/soap-envelope";
const OPERATION: &str = "getSalesByDateRange";
const DATE_FORMAT: &str = "%d/%m/%Y %H:%M:%S";
const MAX_PAGE_SIZE: usize = 100;
/// How far `time` may be from the server's clock.
const TIME_TOLERANCE_MS: i64 = 10 * 60 * 1000;
const XML_CONTENT_TYPE: &str = "text/xml;charset=utf-8";

fn istanbul(at: DateTime<Utc>) -> String {
    at.with_timezone(&Istanbul).format(DATE_FORMAT).to_string()
}

fn whole_seconds(at: DateTime<Utc>) -> DateTime<Utc> {
    at - Duration::nanoseconds(i64::from(at.timestamp_subsec_nanos()))
}

/// The `statusCode` values the document lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SaleStatus {
    WaitingCargoInfo,
    WaitingApproval,
    Approved,
    FraudReported,
    GivenBackProduct,
    GivenBackPayment,
    ProvisionCcCheck,
    EarlyCancelRequested,
    EarlyCancelAccepted,
    InstantRefunded,
    CoolingOffPeriodRequested,
    CoolingOffPeriodShippingSentBack,
    CoolingOffPeriodSellerApproved,
    CoolingOffPeriodSellerChargebackClaim,
    InstantRefundAfterShippingWaitingApproval,
    InstantRefundAfterShipping,
}

impl SaleStatus {
    fn code(self) -> &'static str {
        use SaleStatus::*;
        match self {
            WaitingCargoInfo => "STATUS_WAITING_CARGO_INFO",
            WaitingApproval => "STATUS_WAITING_APPROVAL",
            Approved => "STATUS_APPROVED",
            FraudReported => "STATUS_FRAUD_REPORTED",
            GivenBackProduct => "STATUS_GIVEN_BACK_PRODUCT",
            GivenBackPayment => "STATUS_GIVEN_BACK_PAYMENT",
            ProvisionCcCheck => "STATUS_PROVISION_CC_CHECK",
            EarlyCancelRequested => "STATUS_EARLY_CANCEL_REQUESTED",
            EarlyCancelAccepted => "STATUS_EARLY_CANCEL_ACCEPTED",
            InstantRefunded => "STATUS_INSTANT_REFUNDED",
            CoolingOffPeriodRequested => "STATUS_COOLING_OFF_PERIOD_REQUESTED",
            CoolingOffPeriodShippingSentBack => "STATUS_COOLING_OFF_PERIOD_SHIPPING_SENT_BACK",
            CoolingOffPeriodSellerApproved => "STATUS_COOLING_OFF_PERIOD_SELLER_APPROVED",
            CoolingOffPeriodSellerChargebackClaim => {
                "STATUS_COOLING_OFF_PERIOD_SELLER_CHARGEBACK_CLAIM"
            }
            InstantRefundAfterShippingWaitingApproval => {
                "STATUS_INSTANT_REFUND_AFTER_SHIPPING_WAITING_APPROVAL"
            }
            InstantRefundAfterShipping => "STATUS_INSTANT_REFUND_AFTER_SHIPPING",
        }
    }

    /// The `status` text (the document's explanations; its example's wording for GIVEN_BACK_PAYMENT).
    fn text(self) -> &'static str {
        use SaleStatus::*;
        match self {
            WaitingCargoInfo => "Satıcının kargo bilgilerini girmesi bekleniyor.",
            WaitingApproval => "Satıcı kargo bilgilerini girdi. Alıcının onay vermesi bekleniyor.",
            Approved => "İşlem alıcı ya da GG tarafından otomatik onaylandı.",
            FraudReported => "Alıcı üründe sorun yaşadığını bildirdi.",
            GivenBackProduct => {
                "Alıcı ürünü iade etti ve iade kargo bilgilerini girdi. Satıcının iade onayı vermesi bekleniyor."
            }
            GivenBackPayment => "Ürün bedeli tarafınıza iade edilmiştir.",
            ProvisionCcCheck => "Alıcının yaptığı ödeme güvenliği için kontrol ediliyor.",
            EarlyCancelRequested => "Alıcı kargolanmamış ürün için iptal talep etti.",
            EarlyCancelAccepted => {
                "Satıcı alıcının kargolanmamış ürün için iptal talebini kabul etti."
            }
            InstantRefunded => "İşlem hızlı iade kapsamında iptal edildi.",
            CoolingOffPeriodRequested => "Alıcı onaylanmış işlemde sorun bildirdi.",
            CoolingOffPeriodShippingSentBack => {
                "Alıcı onaylanmış işlem için iade kargo bilgisi bildirdi."
            }
            CoolingOffPeriodSellerApproved => {
                "Satıcı onaylanmış işlemde iade ürünün kendisine geldiğini onayladı."
            }
            CoolingOffPeriodSellerChargebackClaim => {
                "Satıcı onaylanmış işlemde iade işlemine onay verdi ya da işlem GG tarafından otomatik iptal edildi."
            }
            InstantRefundAfterShippingWaitingApproval => "Alıcı hızlı iade talep etti.",
            InstantRefundAfterShipping => {
                "İşlem için hızlı iade talebi onaylandı. Ürün bedeli iade edilecek."
            }
        }
    }

    /// The next status of the sale's flow; `None` when final.
    fn forward(self) -> Option<SaleStatus> {
        use SaleStatus::*;
        match self {
            ProvisionCcCheck => Some(WaitingCargoInfo),
            WaitingCargoInfo => Some(WaitingApproval),
            WaitingApproval => Some(Approved),
            EarlyCancelRequested => Some(EarlyCancelAccepted),
            FraudReported => Some(GivenBackProduct),
            GivenBackProduct => Some(GivenBackPayment),
            CoolingOffPeriodRequested => Some(CoolingOffPeriodShippingSentBack),
            CoolingOffPeriodShippingSentBack => Some(CoolingOffPeriodSellerApproved),
            InstantRefundAfterShippingWaitingApproval => Some(InstantRefundAfterShipping),
            Approved
            | GivenBackPayment
            | EarlyCancelAccepted
            | InstantRefunded
            | CoolingOffPeriodSellerApproved
            | CoolingOffPeriodSellerChargebackClaim
            | InstantRefundAfterShipping => None,
        }
    }

    /// Whether the `byStatus` letter selects this status.
    fn selected_by(self, by_status: ByStatus) -> bool {
        use SaleStatus::*;
        match by_status {
            ByStatus::ToShip => self == WaitingCargoInfo,
            ByStatus::AwaitingApproval => self == WaitingApproval,
            ByStatus::PaymentTransfers => self == Approved,
            ByStatus::Completed => self.forward().is_none(),
            ByStatus::Active => self.forward().is_some(),
            ByStatus::CancelRequested => {
                matches!(
                    self,
                    EarlyCancelRequested | InstantRefundAfterShippingWaitingApproval
                )
            }
            ByStatus::CancelledOrReturned => matches!(
                self,
                GivenBackProduct
                    | GivenBackPayment
                    | EarlyCancelAccepted
                    | InstantRefunded
                    | CoolingOffPeriodRequested
                    | CoolingOffPeriodShippingSentBack
                    | CoolingOffPeriodSellerApproved
                    | CoolingOffPeriodSellerChargebackClaim
                    | InstantRefundAfterShipping
            ),
        }
    }
}

/// The `byStatus` filter letters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ByStatus {
    /// `S`: Kargo Yapılacaklar.
    ToShip,
    /// `C`: Onay Bekleyenler.
    AwaitingApproval,
    /// `P`: Para transferleri.
    PaymentTransfers,
    /// `O`: Tamamlananlar.
    Completed,
    /// `V`: Aktif Satışlar.
    Active,
    /// `I`: İptali beklenenler.
    CancelRequested,
    /// `R`: İptal olanlar / İade konumunda olanlar.
    CancelledOrReturned,
}

#[derive(Debug, Clone)]
struct Buyer {
    username: String,
    name: String,
    surname: String,
    phone: String,
    mobile_phone: String,
    address: String,
    district: String,
    city: String,
    zip_code: String,
}

#[derive(Debug, Clone)]
struct Invoice {
    fullname: String,
    address: String,
    district: String,
    city_code: u8,
    zip_code: String,
    phone_number: String,
    company_title: String,
    tc_certificate: String,
}

#[derive(Debug, Clone)]
struct ShippingInfo {
    delivery_option: &'static str,
    firm_name: &'static str,
    firm_id: u32,
    payment_type: &'static str,
    cargo_code: String,
    /// Every sale code of a combined shipment (this one included); empty when shipped alone.
    combined: Vec<String>,
    expire: DateTime<Utc>,
}

#[derive(Debug, Clone)]
struct Sale {
    code: String,
    status: SaleStatus,
    product_id: u64,
    title: String,
    /// Unit price.
    price: Decimal,
    cargo_payment: &'static str,
    cargo_code: String,
    amount: u32,
    /// When the item sold, shown as `endDate` and filtered by the date range.
    sold_at: DateTime<Utc>,
    buyer: Buyer,
    thumb: String,
    /// `lastActionDate`, whole seconds.
    last_action: DateTime<Utc>,
    invoice: Invoice,
    variant_id: u64,
    item_id: String,
    shipping: Option<ShippingInfo>,
}

impl Sale {
    fn set_status(&mut self, status: SaleStatus, now: DateTime<Utc>) {
        self.status = status;
        self.last_action = whole_seconds(now).max(self.last_action + Duration::seconds(1));
    }

    fn snapshot(&self) -> SandboxOrder {
        SandboxOrder {
            external_id: self.code.clone(),
            status: self.status.code().to_string(),
            updated_at: self.last_action,
            total: self.price * Decimal::from(self.amount),
            line_count: 1,
        }
    }
}

/// Turkish licence-plate city codes, which `invoiceInfo/cityCode` uses.
fn city_code(city: &str) -> u8 {
    match city {
        "Ankara" => 6,
        "Antalya" => 7,
        "Balıkesir" => 10,
        "Bursa" => 16,
        "Diyarbakır" => 21,
        "Eskişehir" => 26,
        "Gaziantep" => 27,
        "Giresun" => 28,
        "İstanbul" => 34,
        "İzmir" => 35,
        "Muğla" => 48,
        _ => 0,
    }
}

/// A plausible status for a sale made `age` ago: recent sales are early in the flow.
fn seeded_status(generator: &mut Generator, age: Duration) -> SaleStatus {
    use SaleStatus::*;
    if age < Duration::days(2) {
        *generator.pick(&[
            ProvisionCcCheck,
            WaitingCargoInfo,
            WaitingCargoInfo,
            WaitingCargoInfo,
            WaitingCargoInfo,
            EarlyCancelRequested,
        ])
    } else if age < Duration::days(14) {
        *generator.pick(&[
            WaitingCargoInfo,
            WaitingApproval,
            WaitingApproval,
            WaitingApproval,
            Approved,
            Approved,
            EarlyCancelAccepted,
            FraudReported,
            InstantRefundAfterShippingWaitingApproval,
        ])
    } else {
        *generator.pick(&[
            Approved,
            Approved,
            Approved,
            Approved,
            Approved,
            Approved,
            GivenBackPayment,
            GivenBackProduct,
            CoolingOffPeriodRequested,
            CoolingOffPeriodShippingSentBack,
            CoolingOffPeriodSellerApproved,
            CoolingOffPeriodSellerChargebackClaim,
            InstantRefunded,
            InstantRefundAfterShipping,
        ])
    }
}

/// The seller's sales.
///
/// Architecture Invariant: `sales` is in sale-date (`sold_at`) order, so a date window is found by binary
/// search.
pub(super) struct Store {
    sales: Vec<Sale>,
    by_code: HashMap<String, usize>,
    next_seq: u64,
}

impl Store {
    pub(super) fn seeded(generator: &mut Generator, n: usize, now: DateTime<Utc>) -> Store {
        let mut times: Vec<DateTime<Utc>> = (0..n).map(|_| generator.placed_at(now, 90)).collect();
        times.sort();
        let mut store = Store {
            sales: Vec::with_capacity(n),
            by_code: HashMap::with_capacity(n),
            next_seq: 1,
        };
        let mut k = 0;
        while k < n {
            let size = if k + 1 < n && generator.chance(0.1) {
                2
            } else {
                1
            };
            let sold_at = times[k];
            let status = seeded_status(generator, now - sold_at);
            let last_action = if status == SaleStatus::ProvisionCcCheck {
                sold_at
            } else {
                let span = (now - sold_at).num_seconds().max(0) as usize;
                sold_at + Duration::seconds(generator.range(0, span) as i64)
            };
            store.sell(generator, size, sold_at, status, last_action);
            k += size;
        }
        store
    }

    /// Records `size` sales to one buyer at `sold_at`, shipped together when more than one.
    fn sell(
        &mut self,
        generator: &mut Generator,
        size: usize,
        sold_at: DateTime<Utc>,
        status: SaleStatus,
        last_action: DateTime<Utc>,
    ) -> Vec<String> {
        // Keeps the sale-date order even if the clock steps back between two added sales.
        let sold_at = self
            .sales
            .last()
            .map_or(sold_at, |last| sold_at.max(last.sold_at));
        let person = generator.person();
        let address = generator.address();
        let username = person
            .email
            .split('@')
            .next()
            .unwrap_or_default()
            .replace('.', "_");
        let national = person.phone.trim_start_matches('0').to_string();
        let (area, number) = national.split_at(3.min(national.len()));
        let buyer = Buyer {
            username,
            name: person.first_name.clone(),
            surname: person.last_name.clone(),
            phone: format!("{area} {number}"),
            mobile_phone: format!("{area}-{number}"),
            address: address.line.clone(),
            district: address.district.clone(),
            city: address.city.clone(),
            zip_code: address.postal_code.clone(),
        };
        let invoice = Invoice {
            fullname: format!("{} {}", person.first_name, person.last_name),
            address: address.line,
            district: address.district,
            city_code: city_code(&address.city),
            zip_code: address.postal_code,
            phone_number: national.clone(),
            company_title: if generator.chance(0.1) {
                format!("{} Ticaret Ltd. Şti.", person.last_name)
            } else {
                String::new()
            },
            tc_certificate: format!("{}{}", generator.range(1, 9), generator.digits(10)),
        };
        let group_cargo_code = format!("GGK{}", 10_000_000 + generator.range(0, 89_999_999));
        let codes: Vec<String> = (0..size)
            .map(|i| format!("SC{}", 110_000_000 + (self.next_seq + i as u64) * 7))
            .collect();
        let shipped_by_contract = generator.chance(0.7);
        let (firm_name, firm_id) = *generator.pick(&[
            ("YURTICI", 1u32),
            ("ARAS", 2),
            ("MNG", 3),
            ("PTT", 4),
            ("JETIZZ", 25),
        ]);
        let delivery_option = if firm_name == "JETIZZ" {
            "SAME_DAY_DELIVERY"
        } else {
            "REGULAR"
        };
        let payment_type = *generator.pick(&[
            "PAY_IN_THE_BASKET",
            "PAY_IN_THE_BASKET",
            "SELLER",
            "BUYER",
            "PLATFORM",
        ]);
        let cargo_payment = if payment_type == "BUYER" {
            "Alıcı Öder"
        } else {
            "Satıcı Öder"
        };
        for code in &codes {
            let product = generator.product();
            let product_id = 500_000_000 + generator.range(0, 399_999_999) as u64;
            let shipping = shipped_by_contract.then(|| ShippingInfo {
                delivery_option,
                firm_name,
                firm_id,
                payment_type,
                cargo_code: if size > 1 {
                    group_cargo_code.clone()
                } else {
                    code.clone()
                },
                combined: if size > 1 { codes.clone() } else { Vec::new() },
                expire: sold_at + Duration::days(3),
            });
            let sale = Sale {
                code: code.clone(),
                status,
                product_id,
                title: product.name,
                price: product.unit_price,
                cargo_payment,
                cargo_code: group_cargo_code.clone(),
                amount: *generator.pick(&[1u32, 1, 1, 1, 2, 3]),
                sold_at,
                buyer: buyer.clone(),
                thumb: format!(
                    "https://mcdn01.gittigidiyor.net/{}/tn9/{product_id}_tn9_0.jpg",
                    product_id / 10_000
                ),
                last_action: whole_seconds(last_action.max(sold_at)),
                invoice: invoice.clone(),
                variant_id: if generator.chance(0.3) {
                    700_000_000 + generator.range(0, 99_999_999) as u64
                } else {
                    0
                },
                item_id: product.sku,
                shipping,
            };
            self.by_code.insert(code.clone(), self.sales.len());
            self.sales.push(sale);
        }
        self.next_seq += size as u64;
        codes
    }
}

impl FakeApi for Store {
    fn add_orders(
        &mut self,
        generator: &mut Generator,
        n: usize,
        now: DateTime<Utc>,
    ) -> Vec<String> {
        let sold_at = whole_seconds(now);
        (0..n)
            .flat_map(|_| {
                let status = if generator.chance(0.2) {
                    SaleStatus::ProvisionCcCheck
                } else {
                    SaleStatus::WaitingCargoInfo
                };
                self.sell(generator, 1, sold_at, status, sold_at)
            })
            .collect()
    }

    fn change_orders(
        &mut self,
        generator: &mut Generator,
        n: usize,
        now: DateTime<Utc>,
    ) -> Vec<String> {
        let open: Vec<usize> = (0..self.sales.len())
            .filter(|&i| self.sales[i].status.forward().is_some())
            .collect();
        generator.change_some(open, n, |_, i| {
            let sale = &mut self.sales[i];
            let next = sale.status.forward()?;
            sale.set_status(next, now);
            Some(sale.code.clone())
        })
    }

    fn change_order(
        &mut self,
        _generator: &mut Generator,
        external_id: &str,
        now: DateTime<Utc>,
    ) -> bool {
        let Some(&index) = self.by_code.get(external_id) else {
            return false;
        };
        let sale = &mut self.sales[index];
        match sale.status.forward() {
            Some(next) => {
                sale.set_status(next, now);
                true
            }
            None => false,
        }
    }

    fn snapshot(&self) -> Vec<SandboxOrder> {
        self.sales.iter().map(Sale::snapshot).collect()
    }
}

pub(super) fn router(shared: Arc<Shared>) -> Router {
    Router::new().route("/", post(soap)).with_state(shared)
}

async fn soap(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let response = answer(&shared, &headers, &body, Instant::now());
    (Extension(Operation(OPERATION)), response).into_response()
}

fn answer(shared: &Shared, headers: &HeaderMap, body: &[u8], started: Instant) -> Response {
    if !basic_auth_ok(headers, &shared.credentials) {
        return (
            StatusCode::UNAUTHORIZED,
            [
                (header::WWW_AUTHENTICATE, "Basic realm=\"listingapi\""),
                (header::CONTENT_TYPE, "text/html;charset=utf-8"),
            ],
            "<html><head><title>401 Unauthorized</title></head>\
             <body><h1>HTTP Status 401 - Unauthorized</h1></body></html>",
        )
            .into_response();
    }
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let essence = content_type.split(';').next().unwrap_or_default().trim();
    if !essence.eq_ignore_ascii_case("text/xml") {
        return (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            [(header::CONTENT_TYPE, "text/plain;charset=utf-8")],
            format!("Unsupported Content-Type: {content_type} Supported ones are: [text/xml]"),
        )
            .into_response();
    }
    let params = match std::str::from_utf8(body)
        .map_err(|_| SoapFault::client("Request is not valid UTF-8"))
        .and_then(parse_envelope)
    {
        Ok(params) => params,
        Err(fault) => return fault.into_response(),
    };
    let now = Utc::now();
    let lang = match params.get("lang").map(|l| l.trim()) {
        Some("en") => Lang::En,
        _ => Lang::Tr,
    };
    let xml = match SalesQuery::parse(&params, &shared.credentials, now) {
        Ok(query) => success_body(&lock(&shared.gittigidiyor), &query, now, started),
        Err(error) => failure_body(&error, lang, now, started),
    };
    ([(header::CONTENT_TYPE, XML_CONTENT_TYPE)], xml).into_response()
}

fn basic_auth_ok(headers: &HeaderMap, credentials: &Credentials) -> bool {
    let Some(value) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let Some((scheme, encoded)) = value.trim().split_once(' ') else {
        return false;
    };
    if !scheme.eq_ignore_ascii_case("basic") {
        return false;
    }
    let Ok(decoded) = BASE64.decode(encoded.trim()) else {
        return false;
    };
    let Ok(pair) = String::from_utf8(decoded) else {
        return false;
    };
    pair.split_once(':').is_some_and(|(user, password)| {
        user == credentials.gg_role_name && password == credentials.gg_role_password
    })
}

/// A SOAP 1.1 Fault (HTTP 500, as SOAP 1.1 over HTTP requires).
#[derive(Debug, thiserror::Error)]
#[error("{code}: {message}")]
struct SoapFault {
    code: &'static str,
    message: String,
}

impl SoapFault {
    fn client(message: impl Into<String>) -> SoapFault {
        SoapFault {
            code: "S:Client",
            message: message.into(),
        }
    }
}

impl From<quick_xml::Error> for SoapFault {
    fn from(error: quick_xml::Error) -> SoapFault {
        SoapFault::client(format!("Couldn't parse the request envelope: {error}"))
    }
}

impl IntoResponse for SoapFault {
    fn into_response(self) -> Response {
        let body = format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\
             <S:Envelope xmlns:S=\"{SOAP11_NS}\"><S:Body><S:Fault>\
             <faultcode>{}</faultcode><faultstring>{}</faultstring>\
             </S:Fault></S:Body></S:Envelope>",
            self.code,
            escape(self.message.as_str())
        );
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            [(header::CONTENT_TYPE, XML_CONTENT_TYPE)],
            body,
        )
            .into_response()
    }
}

/// An element start as the envelope parser needs it.
struct Element {
    namespace: Option<String>,
    local: String,
    qname: String,
    empty: bool,
}

/// One significant step through the envelope.
enum Node {
    Open(Element),
    Close,
    Text(String),
    Eof,
}

fn next_node(reader: &mut NsReader<&[u8]>) -> Result<Node, SoapFault> {
    loop {
        let (resolved, event) = reader.read_resolved_event()?;
        let namespace = match resolved {
            ResolveResult::Bound(ns) => Some(ns.0.to_string()),
            ResolveResult::Unbound => None,
            ResolveResult::Unknown(prefix) => {
                return Err(SoapFault::client(format!(
                    "Unbound namespace prefix: {prefix}"
                )));
            }
        };
        let element = |start: &quick_xml::events::BytesStart, empty| Element {
            namespace: namespace.clone(),
            local: start.local_name().as_ref().to_string(),
            qname: start.name().0.to_string(),
            empty,
        };
        return Ok(match event {
            Event::Start(start) => Node::Open(element(&start, false)),
            Event::Empty(start) => Node::Open(element(&start, true)),
            Event::End(_) => Node::Close,
            Event::Text(text) => Node::Text(text.xml10_content().into_owned()),
            Event::CData(data) => Node::Text(data.xml10_content().into_owned()),
            Event::GeneralRef(reference) => {
                let text = match reference.resolve_char_ref() {
                    Ok(Some(c)) => c.to_string(),
                    Ok(None) => {
                        let name = reference.xml10_content();
                        resolve_predefined_entity(&name)
                            .ok_or_else(|| SoapFault::client(format!("Unknown entity: &{name};")))?
                            .to_string()
                    }
                    Err(error) => return Err(error.into()),
                };
                Node::Text(text)
            }
            Event::DocType(_) => {
                return Err(SoapFault::client("DTDs are not allowed in SOAP messages"));
            }
            Event::Decl(_) | Event::Comment(_) | Event::PI(_) => continue,
            Event::Eof => Node::Eof,
        });
    }
}

fn skip(reader: &mut NsReader<&[u8]>, element: &Element) -> Result<(), SoapFault> {
    if !element.empty {
        reader.read_to_end(QName(&element.qname))?;
    }
    Ok(())
}

fn unexpected(what: &str) -> SoapFault {
    SoapFault::client(format!("Unexpected content in the envelope: {what}"))
}

/// The operation's parameters (unqualified child elements by local name) of a SOAP 1.1
/// `getSalesByDateRange` request.
fn parse_envelope(xml: &str) -> Result<HashMap<String, String>, SoapFault> {
    let mut reader = NsReader::from_str(xml);
    let root = loop {
        match next_node(&mut reader)? {
            Node::Open(element) => break element,
            Node::Text(text) if text.trim().is_empty() => {}
            _ => return Err(SoapFault::client("The request is not an XML document")),
        }
    };
    match root.namespace.as_deref() {
        Some(SOAP11_NS) if root.local == "Envelope" => {}
        Some(SOAP12_NS) => {
            return Err(SoapFault {
                code: "S:VersionMismatch",
                message: "Only SOAP 1.1 envelopes are supported".into(),
            });
        }
        _ => {
            return Err(SoapFault::client(
                "The root element is not a SOAP 1.1 Envelope",
            ));
        }
    }
    if root.empty {
        return Err(SoapFault::client("The envelope has no Body"));
    }
    let mut params = None;
    loop {
        match next_node(&mut reader)? {
            Node::Open(element)
                if element.namespace.as_deref() == Some(SOAP11_NS) && element.local == "Header" =>
            {
                skip(&mut reader, &element)?;
            }
            Node::Open(element)
                if element.namespace.as_deref() == Some(SOAP11_NS)
                    && element.local == "Body"
                    && params.is_none() =>
            {
                params = Some(read_body(&mut reader, &element)?);
            }
            Node::Open(element) => return Err(unexpected(&element.qname)),
            Node::Text(text) if text.trim().is_empty() => {}
            Node::Text(text) => return Err(unexpected(&text)),
            Node::Close => break,
            Node::Eof => return Err(SoapFault::client("The envelope ends early")),
        }
    }
    loop {
        match next_node(&mut reader)? {
            Node::Eof => break,
            Node::Text(text) if text.trim().is_empty() => {}
            _ => return Err(SoapFault::client("Content after the envelope")),
        }
    }
    params.ok_or_else(|| SoapFault::client("The envelope has no Body"))
}

fn read_body(
    reader: &mut NsReader<&[u8]>,
    body: &Element,
) -> Result<HashMap<String, String>, SoapFault> {
    if body.empty {
        return Err(SoapFault::client("The SOAP Body is empty"));
    }
    let mut params = None;
    loop {
        match next_node(reader)? {
            Node::Open(operation) if params.is_none() => {
                let known = operation.namespace.as_deref() == Some(SERVICE_NS)
                    && operation.local == OPERATION;
                if !known {
                    return Err(SoapFault::client(format!(
                        "Cannot find dispatch method for {{{}}}{}",
                        operation.namespace.as_deref().unwrap_or_default(),
                        operation.local
                    )));
                }
                params = Some(read_operation(reader, &operation)?);
            }
            Node::Open(element) => return Err(unexpected(&element.qname)),
            Node::Text(text) if text.trim().is_empty() => {}
            Node::Text(text) => return Err(unexpected(&text)),
            Node::Close => break,
            Node::Eof => return Err(SoapFault::client("The Body ends early")),
        }
    }
    params.ok_or_else(|| SoapFault::client("The SOAP Body is empty"))
}

/// The operation's unqualified children; qualified ones are ignored, as an unqualified schema does.
fn read_operation(
    reader: &mut NsReader<&[u8]>,
    operation: &Element,
) -> Result<HashMap<String, String>, SoapFault> {
    let mut params = HashMap::new();
    if operation.empty {
        return Ok(params);
    }
    loop {
        match next_node(reader)? {
            Node::Open(child) => {
                let value = if child.empty {
                    String::new()
                } else {
                    read_text(reader)?
                };
                if child.namespace.is_none() {
                    params.insert(child.local, value);
                }
            }
            Node::Text(text) if text.trim().is_empty() => {}
            Node::Text(text) => return Err(unexpected(&text)),
            Node::Close => return Ok(params),
            Node::Eof => return Err(SoapFault::client("The operation element ends early")),
        }
    }
}

/// The text of an element whose start was just read, up to its end (nested elements are skipped).
fn read_text(reader: &mut NsReader<&[u8]>) -> Result<String, SoapFault> {
    let mut text = String::new();
    loop {
        match next_node(reader)? {
            Node::Text(piece) => text.push_str(&piece),
            Node::Open(nested) => skip(reader, &nested)?,
            Node::Close => return Ok(text),
            Node::Eof => return Err(SoapFault::client("A parameter element ends early")),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lang {
    Tr,
    En,
}

/// An `ackCode` failure.
#[derive(Debug, thiserror::Error)]
enum ApiError {
    #[error("invalid api key")]
    ApiKey,
    #[error("invalid time")]
    Time,
    #[error("invalid sign")]
    Sign,
    #[error("invalid parameter {0}")]
    Parameter(&'static str),
}

impl ApiError {
    fn id(&self) -> u32 {
        match self {
            ApiError::ApiKey => 101,
            ApiError::Time => 102,
            ApiError::Sign => 103,
            ApiError::Parameter(_) => 201,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            ApiError::ApiKey => "ERR_INVALID_API_KEY",
            ApiError::Time => "ERR_INVALID_TIME",
            ApiError::Sign => "ERR_INVALID_SIGN",
            ApiError::Parameter(_) => "ERR_INVALID_PARAMETER",
        }
    }

    fn message(&self, lang: Lang) -> String {
        match (self, lang) {
            (ApiError::ApiKey, Lang::Tr) => "Geçersiz uygulama anahtarı (apiKey).".into(),
            (ApiError::ApiKey, Lang::En) => "Invalid application key (apiKey).".into(),
            (ApiError::Time, Lang::Tr) => {
                "İstek zamanı (time) geçersiz ya da zaman aşımına uğramış.".into()
            }
            (ApiError::Time, Lang::En) => "The request time (time) is invalid or expired.".into(),
            (ApiError::Sign, Lang::Tr) => "İstek imzası (sign) geçersiz.".into(),
            (ApiError::Sign, Lang::En) => "The request signature (sign) is invalid.".into(),
            (ApiError::Parameter(name), Lang::Tr) => {
                format!("{name} parametresi eksik ya da geçersiz.")
            }
            (ApiError::Parameter(name), Lang::En) => {
                format!("The {name} parameter is missing or invalid.")
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OrderBy {
    SaleCode,
    Price,
    LastAction,
}

/// A validated `getSalesByDateRange` request.
#[derive(Debug)]
struct SalesQuery {
    with_data: bool,
    by_status: Option<ByStatus>,
    by_user: Option<String>,
    order_by: OrderBy,
    descending: bool,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    page_number: usize,
    page_size: usize,
}

impl SalesQuery {
    fn parse(
        params: &HashMap<String, String>,
        credentials: &Credentials,
        now: DateTime<Utc>,
    ) -> Result<SalesQuery, ApiError> {
        let get = |name: &str| params.get(name).map(|v| v.trim()).filter(|v| !v.is_empty());
        let api_key = get("apiKey").ok_or(ApiError::ApiKey)?;
        if api_key != credentials.gg_api_key {
            return Err(ApiError::ApiKey);
        }
        let time = get("time").ok_or(ApiError::Time)?;
        let millis: i64 = time
            .parse()
            .ok()
            .filter(|_| time.len() == 13 && time.bytes().all(|b| b.is_ascii_digit()))
            .ok_or(ApiError::Time)?;
        if (now.timestamp_millis() - millis).abs() > TIME_TOLERANCE_MS {
            return Err(ApiError::Time);
        }
        let expected = hex::encode(Md5::digest(format!(
            "{api_key}{}{time}",
            credentials.gg_secret_key
        )));
        if get("sign") != Some(expected.as_str()) {
            return Err(ApiError::Sign);
        }
        let with_data = match get("withData") {
            None | Some("false" | "0") => false,
            Some("true" | "1") => true,
            Some(_) => return Err(ApiError::Parameter("withData")),
        };
        let by_status = match get("byStatus") {
            None => None,
            Some("S") => Some(ByStatus::ToShip),
            Some("C") => Some(ByStatus::AwaitingApproval),
            Some("P") => Some(ByStatus::PaymentTransfers),
            Some("O") => Some(ByStatus::Completed),
            Some("V") => Some(ByStatus::Active),
            Some("I") => Some(ByStatus::CancelRequested),
            Some("R") => Some(ByStatus::CancelledOrReturned),
            Some(_) => return Err(ApiError::Parameter("byStatus")),
        };
        let order_by = match get("orderBy") {
            None | Some("P") => OrderBy::SaleCode,
            Some("C") => OrderBy::Price,
            Some("A") => OrderBy::LastAction,
            Some(_) => return Err(ApiError::Parameter("orderBy")),
        };
        let descending = match get("orderType") {
            None | Some("A") => false,
            Some("D") => true,
            Some(_) => return Err(ApiError::Parameter("orderType")),
        };
        let date = |name: &'static str| {
            get(name)
                .and_then(|v| NaiveDateTime::parse_from_str(v, DATE_FORMAT).ok())
                .and_then(|naive| naive.and_local_timezone(Istanbul).single())
                .map(|at| at.with_timezone(&Utc))
                .ok_or(ApiError::Parameter(name))
        };
        let start = date("startDate")?;
        let end = date("endDate")?;
        if end < start {
            return Err(ApiError::Parameter("endDate"));
        }
        let page_number = get("pageNumber")
            .and_then(|v| v.parse::<usize>().ok())
            .filter(|&n| n >= 1)
            .ok_or(ApiError::Parameter("pageNumber"))?;
        let page_size = get("pageSize")
            .and_then(|v| v.parse::<usize>().ok())
            .filter(|&n| (1..=MAX_PAGE_SIZE).contains(&n))
            .ok_or(ApiError::Parameter("pageSize"))?;
        Ok(SalesQuery {
            with_data,
            by_status,
            by_user: get("byUser").map(str::to_string),
            order_by,
            descending,
            start,
            end,
            page_number,
            page_size,
        })
    }

    fn matches(&self, sale: &Sale) -> bool {
        sale.sold_at >= self.start
            && sale.sold_at <= self.end
            && self.by_status.is_none_or(|s| sale.status.selected_by(s))
            && self
                .by_user
                .as_deref()
                .is_none_or(|u| sale.buyer.username == u)
    }
}

/// A small XML text builder; every text goes through [`escape`].
struct Xml(String);

impl Xml {
    fn open(&mut self, name: &str) {
        self.0.push('<');
        self.0.push_str(name);
        self.0.push('>');
    }

    fn close(&mut self, name: &str) {
        self.0.push_str("</");
        self.0.push_str(name);
        self.0.push('>');
    }

    fn leaf(&mut self, name: &str, text: impl AsRef<str>) {
        let text = text.as_ref();
        if text.is_empty() {
            self.0.push('<');
            self.0.push_str(name);
            self.0.push_str("/>");
        } else {
            self.open(name);
            self.0.push_str(&escape(text));
            self.close(name);
        }
    }

    /// The envelope up to and including `ackCode`, `responseTime` and `timeElapsed`.
    fn begin_response(ack_code: &str, now: DateTime<Utc>, started: Instant) -> Xml {
        let mut xml = Xml(String::with_capacity(4096));
        xml.0.push_str(&format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><env:Envelope xmlns:env=\"{SOAP11_NS}\"><env:Header/><env:Body>\
             <sale:getSalesByDateRangeResponse xmlns:sale=\"{SERVICE_NS}\"><return>"
        ));
        xml.leaf("ackCode", ack_code);
        xml.leaf("responseTime", istanbul(now));
        xml.leaf(
            "timeElapsed",
            format!("{} ms", started.elapsed().as_millis()),
        );
        xml
    }

    fn finish(mut self) -> String {
        self.0
            .push_str("</return></sale:getSalesByDateRangeResponse></env:Body></env:Envelope>");
        self.0
    }
}

fn failure_body(error: &ApiError, lang: Lang, now: DateTime<Utc>, started: Instant) -> String {
    let mut xml = Xml::begin_response("failure", now, started);
    let message = error.message(lang);
    xml.open("error");
    xml.leaf("errorId", error.id().to_string());
    xml.leaf("errorCode", error.code());
    xml.leaf("message", &message);
    xml.leaf("viewMessage", &message);
    xml.close("error");
    xml.finish()
}

/// The requested page of the matching sales, in the requested order, and whether another page follows.
///
/// Two `select_nth_unstable_by` calls isolate the page and only the page is sorted, so a request costs
/// O(matches) however deep the page is: paging through 100,000 sales stays linear per page.
fn page<'a>(store: &'a Store, query: &SalesQuery) -> (Vec<&'a Sale>, bool) {
    let from = store.sales.partition_point(|s| s.sold_at < query.start);
    let to = store.sales.partition_point(|s| s.sold_at <= query.end);
    let mut matched: Vec<&Sale> = store.sales[from.min(to)..to]
        .iter()
        .filter(|s| query.matches(s))
        .collect();
    let order = |a: &&Sale, b: &&Sale| {
        let key = match query.order_by {
            OrderBy::SaleCode => Ordering::Equal,
            OrderBy::Price => a.price.cmp(&b.price),
            OrderBy::LastAction => a.last_action.cmp(&b.last_action),
        }
        .then_with(|| a.code.cmp(&b.code));
        if query.descending { key.reverse() } else { key }
    };
    let total = matched.len();
    let skip = (query.page_number - 1).saturating_mul(query.page_size);
    if skip >= total {
        return (Vec::new(), false);
    }
    let end = skip.saturating_add(query.page_size).min(total);
    if skip > 0 {
        matched.select_nth_unstable_by(skip, order);
    }
    let rest = &mut matched[skip..];
    let len = end - skip;
    if len < rest.len() {
        rest.select_nth_unstable_by(len - 1, order);
    }
    rest[..len].sort_by(order);
    (rest[..len].to_vec(), end < total)
}

fn success_body(store: &Store, query: &SalesQuery, now: DateTime<Utc>, started: Instant) -> String {
    let (page, next_page) = page(store, query);
    let mut xml = Xml::begin_response("success", now, started);
    xml.leaf("saleCount", page.len().to_string());
    if page.is_empty() {
        xml.leaf("sales", "");
    } else {
        xml.open("sales");
        for sale in page {
            write_sale(&mut xml, sale, query.with_data);
        }
        xml.close("sales");
    }
    xml.leaf(
        "nextPageAvailable",
        if next_page { "true" } else { "false" },
    );
    xml.finish()
}

fn write_sale(xml: &mut Xml, sale: &Sale, with_data: bool) {
    xml.open("sale");
    xml.leaf("saleCode", &sale.code);
    if with_data {
        xml.leaf("status", sale.status.text());
        xml.leaf("statusCode", sale.status.code());
        xml.leaf("productId", sale.product_id.to_string());
        xml.leaf("productTitle", &sale.title);
        xml.leaf("price", sale.price.to_string());
        xml.leaf("cargoPayment", sale.cargo_payment);
        xml.leaf("cargoCode", &sale.cargo_code);
        xml.leaf("amount", sale.amount.to_string());
        xml.leaf("endDate", istanbul(sale.sold_at));
        let buyer = &sale.buyer;
        xml.open("buyerInfo");
        xml.leaf("username", &buyer.username);
        xml.leaf("name", &buyer.name);
        xml.leaf("surname", &buyer.surname);
        xml.leaf("phone", &buyer.phone);
        xml.leaf("mobilePhone", &buyer.mobile_phone);
        xml.leaf("address", &buyer.address);
        xml.leaf("district", &buyer.district);
        xml.leaf("city", &buyer.city);
        xml.leaf("zipCode", &buyer.zip_code);
        xml.close("buyerInfo");
        xml.leaf("thumbImageLink", &sale.thumb);
        xml.leaf("lastActionDate", istanbul(sale.last_action));
        let invoice = &sale.invoice;
        xml.open("invoiceInfo");
        xml.leaf("fullname", &invoice.fullname);
        xml.leaf("address", &invoice.address);
        xml.leaf("district", &invoice.district);
        xml.leaf("cityCode", invoice.city_code.to_string());
        xml.leaf("zipCode", &invoice.zip_code);
        xml.leaf("phoneNumber", &invoice.phone_number);
        xml.leaf("companyTitle", &invoice.company_title);
        xml.leaf("tcCertificate", &invoice.tc_certificate);
        xml.close("invoiceInfo");
        xml.leaf("variantId", sale.variant_id.to_string());
        xml.leaf("itemId", &sale.item_id);
        match &sale.shipping {
            None => xml.leaf("shippingInfo", ""),
            Some(shipping) => {
                xml.open("shippingInfo");
                xml.leaf("deliveryOption", shipping.delivery_option);
                xml.leaf("shippingFirmName", shipping.firm_name);
                xml.leaf("shippingFirmId", shipping.firm_id.to_string());
                xml.leaf(
                    "combinedShipping",
                    if shipping.combined.is_empty() {
                        "N"
                    } else {
                        "Y"
                    },
                );
                xml.leaf("shippingPaymentType", shipping.payment_type);
                xml.leaf("cargoCode", &shipping.cargo_code);
                if !shipping.combined.is_empty() {
                    xml.leaf(
                        "shippingNotice",
                        format!(
                            "{} siparişlerini {} kargo kodu ile birlikte göndermelisiniz.",
                            shipping.combined.join(","),
                            shipping.cargo_code
                        ),
                    );
                    xml.open("combinedSaleCodes");
                    for code in &shipping.combined {
                        xml.leaf("saleCode", code);
                    }
                    xml.close("combinedSaleCodes");
                }
                xml.leaf("shippingExpireDate", istanbul(shipping.expire));
                xml.close("shippingInfo");
            }
        }
    }
    xml.close("sale");
}
