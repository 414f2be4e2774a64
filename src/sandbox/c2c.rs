//! Fake C2C store order services: every call is `POST /api/c2c/StoreOrderServices/{Method}` with a JSON body
//! carrying `Domain`, `ApiKey` and `ApiPassword`; orders come back with Turkish field names.
//!
//! What the document leaves open and this fake decides:
//! - **External id**: `siparisKodu` (`SP` and eight digits). [`SandboxOrder::status`] is the order's
//!   `siparisDurumu` text as the order listings show it.
//! - **Errors** are a JSON object `{"hata":"…"}`, never an array: with HTTP 200 for wrong credentials and for
//!   invalid parameters (as published clients expect), HTTP 400 for a body that is not JSON and HTTP 404 for
//!   an unknown method. `Domain` must match including `www.` (host names compare case-insensitively).
//! - **Amounts** are JSON numbers with two decimals written as literals (`65.00`); mostly `TL`, a few orders in
//!   `EUR`/`USD`. `siparisToplamTutar` = `siparisTutari` + `siparisKargoTutari` = `siparisAltUyeIsYeri` +
//!   `siparisUyeIsYeri` + `siparisIyzicoKomisyonu`. [`SandboxOrder::total`] is `siparisToplamTutar`.
//! - **`GetOrdersDate`** filters the order date `siparisTarihi` (minute precision, Istanbul time), both ends
//!   inclusive. Nothing exposes a change time.
//! - **`GetOrdersState`** groups: 1 Onay Bekliyor, 2 Tedarik sürecinde and Hazırlanıyor, 3 Kargoya Verildi,
//!   4 Teslim Edildi, 5 Tamamlandı, 6 İptal Edildi and "X - İptal Edildi" for X before shipping, 7 any
//!   "X - İtiraz Edildi", 8 "X - İptal Edildi" for X shipped or later (a return). Tamamlanmamış and Ödeme
//!   Bekliyor are in no group.
//! - **`GetOrdersStateByOrdersCode`** shows the same text as the listings except that a plain Tamamlandı reads
//!   "Sipariş Tamamlandı" (the document's list for this method); unknown codes are left out of the answer,
//!   as `GetOrderInfoByOrdersCode` does.
//! - **`UpdateOrderStateByOrderCode`** answers one `{"Durum","Aciklama"}` per requested code, in request
//!   order, `Durum` being `Başarılı` or `Başarısız`. Allowed moves: Ödeme Bekliyor → Onay Bekliyor (the shop
//!   confirms a bank transfer); Onay Bekliyor | Tedarik sürecinde → Hazırlanıyor; Onay Bekliyor | Tedarik
//!   sürecinde | Hazırlanıyor → Kargoya Verildi (which assigns tracking numbers). Asking for the status an
//!   order already has succeeds and changes nothing; anything else fails for that order only.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Extension, Router};
use chrono::{DateTime, Duration, NaiveDateTime, Utc};
use chrono_tz::Europe::Istanbul;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize, Serializer};

use super::audit::{Effect, Operation};
use super::generator::Generator;
use super::{FakeApi, SandboxOrder, Shared, lock};

/// `siparisTarihi`, `BaslangicTarihi` and `BitisTarihi`.
const DATE_TIME_FORMAT: &str = "%d.%m.%Y %H:%M";
/// `urunKargoTeslimTarihi`.
const DATE_FORMAT: &str = "%d.%m.%Y";
const SELLER: &str = "sandbox-butik";
const CARGO_COMPANIES: [&str; 4] = ["Yurtiçi Kargo", "Aras Kargo", "MNG Kargo", "PTT Kargo"];

/// Rounds to two decimal places and always shows both (`65` → `65.00`).
fn money(value: Decimal) -> Decimal {
    let mut value = value.round_dp(2);
    value.rescale(2);
    value
}

fn istanbul(at: DateTime<Utc>, format: &str) -> String {
    at.with_timezone(&Istanbul).format(format).to_string()
}

/// Where an order is in its flow, before any dispute or cancellation mark.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Tamamlanmamis,
    OdemeBekliyor,
    OnayBekliyor,
    TedarikSurecinde,
    Hazirlaniyor,
    KargoyaVerildi,
    TeslimEdildi,
    IptalEdildi,
    Tamamlandi,
}

impl Stage {
    fn text(self) -> &'static str {
        match self {
            Stage::Tamamlanmamis => "Tamamlanmamış",
            Stage::OdemeBekliyor => "Ödeme Bekliyor",
            Stage::OnayBekliyor => "Onay Bekliyor",
            Stage::TedarikSurecinde => "Tedarik sürecinde",
            Stage::Hazirlaniyor => "Hazırlanıyor",
            Stage::KargoyaVerildi => "Kargoya Verildi",
            Stage::TeslimEdildi => "Teslim Edildi",
            Stage::IptalEdildi => "İptal Edildi",
            Stage::Tamamlandi => "Tamamlandı",
        }
    }

    fn shipped(self) -> bool {
        matches!(
            self,
            Stage::KargoyaVerildi | Stage::TeslimEdildi | Stage::Tamamlandi
        )
    }
}

/// A dispute or a cancellation on top of a stage ("Hazırlanıyor - İtiraz Edildi").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mark {
    Itiraz,
    Iptal,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Status {
    stage: Stage,
    mark: Option<Mark>,
}

impl Status {
    const fn plain(stage: Stage) -> Status {
        Status { stage, mark: None }
    }

    /// The next status in the flow; `None` when final.
    fn forward(self) -> Option<Status> {
        let stage = match self.mark {
            // A dispute ends in a cancellation of whatever stage it was raised in.
            Some(Mark::Itiraz) => {
                return Some(Status {
                    stage: self.stage,
                    mark: Some(Mark::Iptal),
                });
            }
            Some(Mark::Iptal) => return None,
            None => match self.stage {
                Stage::Tamamlanmamis | Stage::OdemeBekliyor => Stage::OnayBekliyor,
                Stage::OnayBekliyor | Stage::TedarikSurecinde => Stage::Hazirlaniyor,
                Stage::Hazirlaniyor => Stage::KargoyaVerildi,
                Stage::KargoyaVerildi => Stage::TeslimEdildi,
                Stage::TeslimEdildi => Stage::Tamamlandi,
                Stage::IptalEdildi | Stage::Tamamlandi => return None,
            },
        };
        Some(Status::plain(stage))
    }

    /// The `GetOrdersState` group (1–8), if any.
    fn group(self) -> Option<u8> {
        match (self.mark, self.stage) {
            (Some(Mark::Itiraz), _) => Some(7),
            (Some(Mark::Iptal), stage) if stage.shipped() => Some(8),
            (Some(Mark::Iptal), _) | (None, Stage::IptalEdildi) => Some(6),
            (None, Stage::OnayBekliyor) => Some(1),
            (None, Stage::TedarikSurecinde | Stage::Hazirlaniyor) => Some(2),
            (None, Stage::KargoyaVerildi) => Some(3),
            (None, Stage::TeslimEdildi) => Some(4),
            (None, Stage::Tamamlandi) => Some(5),
            (None, Stage::Tamamlanmamis | Stage::OdemeBekliyor) => None,
        }
    }

    /// The text `GetOrdersStateByOrdersCode` shows.
    fn state_text(self) -> String {
        if self == Status::plain(Stage::Tamamlandi) {
            "Sipariş Tamamlandı".to_string()
        } else {
            self.to_string()
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.stage.text())?;
        match self.mark {
            Some(Mark::Itiraz) => f.write_str(" - İtiraz Edildi"),
            Some(Mark::Iptal) => f.write_str(" - İptal Edildi"),
            None => Ok(()),
        }
    }
}

fn display<S: Serializer>(status: &Status, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_str(status)
}

fn date_time<S: Serializer>(at: &DateTime<Utc>, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_str(&at.with_timezone(&Istanbul).format(DATE_TIME_FORMAT))
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
struct Order {
    siparis_kodu: String,
    #[serde(serialize_with = "date_time")]
    siparis_tarihi: DateTime<Utc>,
    siparis_satici: &'static str,
    siparis_alici_adi: String,
    siparis_alici_mail: String,
    siparis_odeme_turu: &'static str,
    siparis_urunleri: Vec<Line>,
    #[serde(with = "rust_decimal::serde::arbitrary_precision")]
    siparis_tutari: Decimal,
    #[serde(with = "rust_decimal::serde::arbitrary_precision")]
    siparis_kargo_tutari: Decimal,
    #[serde(with = "rust_decimal::serde::arbitrary_precision")]
    siparis_toplam_tutar: Decimal,
    siparis_taksit_sayisi: u32,
    #[serde(with = "rust_decimal::serde::arbitrary_precision")]
    siparis_taksit_tutari: Decimal,
    #[serde(with = "rust_decimal::serde::arbitrary_precision")]
    siparis_alt_uye_is_yeri: Decimal,
    #[serde(with = "rust_decimal::serde::arbitrary_precision")]
    siparis_uye_is_yeri: Decimal,
    #[serde(with = "rust_decimal::serde::arbitrary_precision")]
    siparis_iyzico_komisyonu: Decimal,
    siparis_para_birimi: &'static str,
    siparis_teslimat_adresi: String,
    siparis_fatura_adresi: String,
    siparis_notu: String,
    #[serde(serialize_with = "display")]
    siparis_durumu: Status,
    /// When the status last changed; the API never shows it.
    #[serde(skip)]
    changed_at: DateTime<Utc>,
    #[serde(skip)]
    seq: u64,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
struct Line {
    urun_adi: String,
    urun_adet: u32,
    #[serde(with = "rust_decimal::serde::arbitrary_precision")]
    urun_fiyat: Decimal,
    #[serde(with = "rust_decimal::serde::arbitrary_precision")]
    urun_indirim: Decimal,
    #[serde(with = "rust_decimal::serde::arbitrary_precision")]
    urun_tutar: Decimal,
    urun_para_birimi: &'static str,
    urun_kargo_teslim_tarihi: String,
    urun_kargo_takip_no: String,
    urun_kargo: &'static str,
}

impl Order {
    fn set_status(&mut self, status: Status, now: DateTime<Utc>) {
        if status.stage.shipped() {
            for (n, line) in self.siparis_urunleri.iter_mut().enumerate() {
                if line.urun_kargo_takip_no.is_empty() {
                    line.urun_kargo_takip_no = format!("7{:011}", self.seq * 10 + n as u64);
                }
            }
        }
        self.siparis_durumu = status;
        self.changed_at = now.max(self.changed_at + Duration::milliseconds(1));
    }

    fn snapshot(&self) -> SandboxOrder {
        SandboxOrder {
            external_id: self.siparis_kodu.clone(),
            status: self.siparis_durumu.to_string(),
            updated_at: self.changed_at,
            total: self.siparis_toplam_tutar,
            line_count: self.siparis_urunleri.len(),
        }
    }
}

#[derive(Debug, Serialize)]
struct StateRow<'a> {
    #[serde(rename = "siparisKodu")]
    code: &'a str,
    #[serde(rename = "siparisDurumu")]
    status: String,
}

#[derive(Debug, Serialize)]
struct UpdateRow {
    #[serde(rename = "Durum")]
    durum: &'static str,
    #[serde(rename = "Aciklama")]
    aciklama: String,
}

/// The store's orders in order-date order.
pub(super) struct Store {
    orders: Vec<Order>,
    by_code: HashMap<String, usize>,
    next_seq: u64,
}

/// A plausible status for an order placed `age` ago: recent orders are early in the flow.
fn seeded_status(generator: &mut Generator, age: Duration) -> Status {
    use Stage::*;
    let plain = Status::plain;
    let marked = |stage, mark| Status {
        stage,
        mark: Some(mark),
    };
    if age < Duration::days(2) {
        *generator.pick(&[
            plain(Tamamlanmamis),
            plain(OdemeBekliyor),
            plain(OnayBekliyor),
            plain(OnayBekliyor),
            plain(OnayBekliyor),
            plain(TedarikSurecinde),
            plain(Hazirlaniyor),
            plain(Hazirlaniyor),
            marked(OnayBekliyor, Mark::Iptal),
        ])
    } else if age < Duration::days(10) {
        *generator.pick(&[
            plain(Hazirlaniyor),
            plain(KargoyaVerildi),
            plain(KargoyaVerildi),
            plain(KargoyaVerildi),
            plain(TeslimEdildi),
            plain(TeslimEdildi),
            plain(IptalEdildi),
            marked(KargoyaVerildi, Mark::Itiraz),
            marked(Hazirlaniyor, Mark::Iptal),
        ])
    } else {
        *generator.pick(&[
            plain(Tamamlandi),
            plain(Tamamlandi),
            plain(Tamamlandi),
            plain(Tamamlandi),
            plain(Tamamlandi),
            plain(TeslimEdildi),
            plain(IptalEdildi),
            marked(Tamamlandi, Mark::Itiraz),
            marked(TeslimEdildi, Mark::Iptal),
        ])
    }
}

impl Store {
    pub(super) fn seeded(generator: &mut Generator, n: usize, now: DateTime<Utc>) -> Store {
        let mut times: Vec<DateTime<Utc>> = (0..n).map(|_| generator.placed_at(now, 90)).collect();
        times.sort();
        let mut store = Store {
            orders: Vec::with_capacity(n),
            by_code: HashMap::with_capacity(n),
            next_seq: 1,
        };
        for placed_at in times {
            let status = seeded_status(generator, now - placed_at);
            let changed_at = if status.stage == Stage::Tamamlanmamis {
                placed_at
            } else {
                let span = (now - placed_at).num_seconds().max(0) as usize;
                placed_at + Duration::seconds(generator.range(0, span) as i64)
            };
            store.place(generator, placed_at, status, changed_at);
        }
        store
    }

    fn place(
        &mut self,
        generator: &mut Generator,
        placed_at: DateTime<Utc>,
        status: Status,
        changed_at: DateTime<Utc>,
    ) -> String {
        // The API shows order times to the minute; keeping them so makes its date filter exact.
        let placed_at = placed_at
            - Duration::seconds(placed_at.timestamp().rem_euclid(60))
            - Duration::nanoseconds(i64::from(placed_at.timestamp_subsec_nanos()));
        let seq = self.next_seq;
        self.next_seq += 1;
        let code = format!("SP{:08}", 10_000_000 + seq);
        let person = generator.person();
        let address = generator.address();
        let (currency, rate) = match generator.range(0, 39) {
            0 => ("EUR", Decimal::new(37, 0)),
            1 => ("USD", Decimal::new(34, 0)),
            _ => ("TL", Decimal::ONE),
        };
        let payment = if status.stage == Stage::OdemeBekliyor || generator.chance(0.2) {
            "bankTransfer"
        } else {
            "IYZICO Pool"
        };
        let cargo = *generator.pick(&CARGO_COMPANIES);
        let delivery = istanbul(
            placed_at + Duration::days(generator.range(2, 5) as i64),
            DATE_FORMAT,
        );
        let lines: Vec<Line> = (0..generator.range(1, 4))
            .map(|_| {
                let product = generator.product();
                let price = money(product.unit_price / rate);
                let count = *generator.pick(&[1u32, 1, 1, 2, 3]);
                let discount = if generator.chance(0.2) {
                    money(price * Decimal::new(10, 2))
                } else {
                    money(Decimal::ZERO)
                };
                Line {
                    urun_adi: product.name,
                    urun_adet: count,
                    urun_fiyat: price,
                    urun_indirim: discount,
                    urun_tutar: money(price * Decimal::from(count) - discount),
                    urun_para_birimi: currency,
                    urun_kargo_teslim_tarihi: delivery.clone(),
                    urun_kargo_takip_no: String::new(),
                    urun_kargo: cargo,
                }
            })
            .collect();
        let goods = money(lines.iter().map(|l| l.urun_tutar).sum());
        let shipping = money(if generator.chance(0.4) {
            Decimal::ZERO
        } else {
            *generator.pick(&[Decimal::new(2990, 2), Decimal::new(3990, 2)]) / rate
        });
        let total = money(goods + shipping);
        let installments = if payment == "IYZICO Pool" {
            *generator.pick(&[1u32, 1, 1, 3, 6])
        } else {
            1
        };
        let commission = money(total * Decimal::new(279, 4));
        let platform_share = money(total * Decimal::new(8, 2));
        let delivery_address = format!(
            "{} {} {}/{} Tel: {}",
            address.line, address.postal_code, address.district, address.city, person.phone
        );
        let mut order = Order {
            siparis_kodu: code.clone(),
            siparis_tarihi: placed_at,
            siparis_satici: SELLER,
            siparis_alici_adi: format!("{} {}", person.first_name, person.last_name),
            siparis_alici_mail: person.email,
            siparis_odeme_turu: payment,
            siparis_urunleri: lines,
            siparis_tutari: goods,
            siparis_kargo_tutari: shipping,
            siparis_toplam_tutar: total,
            siparis_taksit_sayisi: installments,
            siparis_taksit_tutari: money(if installments > 1 {
                total / Decimal::from(installments)
            } else {
                Decimal::ZERO
            }),
            siparis_alt_uye_is_yeri: money(total - platform_share - commission),
            siparis_uye_is_yeri: platform_share,
            siparis_iyzico_komisyonu: commission,
            siparis_para_birimi: currency,
            siparis_fatura_adresi: if generator.chance(0.8) {
                delivery_address.clone()
            } else {
                let other = generator.address();
                format!(
                    "{} {} {}/{}",
                    other.line, other.postal_code, other.district, other.city
                )
            },
            siparis_teslimat_adresi: delivery_address,
            siparis_notu: if generator.chance(0.15) {
                (*generator.pick(&[
                    "Kapıya bırakabilirsiniz.",
                    "Hediye paketi olsun lütfen.",
                    "Öğleden sonra teslim edin.",
                ]))
                .to_string()
            } else {
                String::new()
            },
            siparis_durumu: status,
            changed_at,
            seq,
        };
        order.set_status(status, changed_at);
        order.changed_at = changed_at;
        self.by_code.insert(code.clone(), self.orders.len());
        self.orders.push(order);
        code
    }

    fn get(&self, code: &str) -> Option<&Order> {
        self.by_code.get(code).map(|&i| &self.orders[i])
    }

    /// `UpdateOrderStateByOrderCode` for one order.
    fn update(
        &mut self,
        code: &str,
        target: Stage,
        now: DateTime<Utc>,
    ) -> (UpdateRow, Option<String>) {
        let failed = |aciklama: String| {
            (
                UpdateRow {
                    durum: "Başarısız",
                    aciklama,
                },
                None,
            )
        };
        let Some(&index) = self.by_code.get(code) else {
            return failed(format!("{code} kodlu sipariş bulunamadı."));
        };
        let order = &mut self.orders[index];
        let from = order.siparis_durumu;
        if from == Status::plain(target) {
            let row = UpdateRow {
                durum: "Başarılı",
                aciklama: format!("{code} kodlu sipariş zaten '{from}' durumunda."),
            };
            return (row, None);
        }
        let allowed = from.mark.is_none()
            && match target {
                Stage::OnayBekliyor => from.stage == Stage::OdemeBekliyor,
                Stage::Hazirlaniyor => {
                    matches!(from.stage, Stage::OnayBekliyor | Stage::TedarikSurecinde)
                }
                _ => matches!(
                    from.stage,
                    Stage::OnayBekliyor | Stage::TedarikSurecinde | Stage::Hazirlaniyor
                ),
            };
        if !allowed {
            return failed(format!(
                "{code} kodlu siparişin durumu '{from}' iken '{}' yapılamaz.",
                target.text()
            ));
        }
        let to = Status::plain(target);
        order.set_status(to, now);
        let row = UpdateRow {
            durum: "Başarılı",
            aciklama: format!("{code} kodlu siparişin durumu '{to}' olarak güncellendi."),
        };
        (row, Some(format!("order {code}: {from} → {to}")))
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
            .map(|_| {
                let status = Status::plain(*generator.pick(&[
                    Stage::OnayBekliyor,
                    Stage::OnayBekliyor,
                    Stage::OnayBekliyor,
                    Stage::OdemeBekliyor,
                    Stage::Tamamlanmamis,
                ]));
                self.place(generator, now, status, now)
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
            .filter(|&i| self.orders[i].siparis_durumu.forward().is_some())
            .collect();
        generator.change_some(open, n, |_, i| {
            let order = &mut self.orders[i];
            let next = order.siparis_durumu.forward()?;
            order.set_status(next, now);
            Some(order.siparis_kodu.clone())
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
        let order = &mut self.orders[index];
        match order.siparis_durumu.forward() {
            Some(next) => {
                order.set_status(next, now);
                true
            }
            None => false,
        }
    }

    fn snapshot(&self) -> Vec<SandboxOrder> {
        self.orders.iter().map(Order::snapshot).collect()
    }
}

/// The documented methods.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Method {
    GetAll,
    GetOrderInfoByOrdersCode,
    GetOrdersStateByOrdersCode,
    GetOrdersDate,
    GetOrdersState,
    UpdateOrderStateByOrderCode,
}

impl Method {
    const ALL: [Method; 6] = [
        Method::GetAll,
        Method::GetOrderInfoByOrdersCode,
        Method::GetOrdersStateByOrdersCode,
        Method::GetOrdersDate,
        Method::GetOrdersState,
        Method::UpdateOrderStateByOrderCode,
    ];

    fn name(self) -> &'static str {
        match self {
            Method::GetAll => "GetAll",
            Method::GetOrderInfoByOrdersCode => "GetOrderInfoByOrdersCode",
            Method::GetOrdersStateByOrdersCode => "GetOrdersStateByOrdersCode",
            Method::GetOrdersDate => "GetOrdersDate",
            Method::GetOrdersState => "GetOrdersState",
            Method::UpdateOrderStateByOrderCode => "UpdateOrderStateByOrderCode",
        }
    }
}

/// Every method's body; which fields are required depends on the method.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RequestBody {
    domain: Option<String>,
    api_key: Option<String>,
    api_password: Option<String>,
    siparis_kodlari: Option<Vec<String>>,
    baslangic_tarihi: Option<String>,
    bitis_tarihi: Option<String>,
    siparis_durumu: Option<String>,
}

/// A C2C error, answered as `{"hata":"…"}`.
#[derive(Debug, thiserror::Error)]
enum ApiError {
    #[error("Domain, ApiKey veya ApiPassword hatalı.")]
    Unauthorized,
    #[error("İstek gövdesi geçerli bir JSON değil.")]
    BadBody,
    #[error("Servis bulunamadı: {0}")]
    UnknownMethod(String),
    #[error("{0}")]
    Invalid(String),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = match self {
            ApiError::BadBody => StatusCode::BAD_REQUEST,
            ApiError::UnknownMethod(_) => StatusCode::NOT_FOUND,
            ApiError::Unauthorized | ApiError::Invalid(_) => StatusCode::OK,
        };
        json_response(status, &serde_json::json!({ "hata": self.to_string() }))
    }
}

fn ok<T: Serialize + ?Sized>(value: &T) -> Response {
    json_response(StatusCode::OK, value)
}

fn json_response<T: Serialize + ?Sized>(status: StatusCode, value: &T) -> Response {
    match serde_json::to_vec(value) {
        Ok(body) => (
            status,
            [(header::CONTENT_TYPE, "application/json; charset=utf-8")],
            body,
        )
            .into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

pub(super) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/api/c2c/StoreOrderServices/{method}", post(call))
        .fallback(unknown_path)
        .with_state(shared)
}

async fn unknown_path() -> ApiError {
    ApiError::UnknownMethod("bilinmeyen adres".into())
}

async fn call(
    State(shared): State<Arc<Shared>>,
    Path(method): Path<String>,
    body: Bytes,
) -> Response {
    let Some(method) = Method::ALL
        .into_iter()
        .find(|m| m.name().eq_ignore_ascii_case(&method))
    else {
        return ApiError::UnknownMethod(method).into_response();
    };
    let response = serve(&shared, method, &body).unwrap_or_else(IntoResponse::into_response);
    (Extension(Operation(method.name())), response).into_response()
}

fn serve(shared: &Shared, method: Method, body: &[u8]) -> Result<Response, ApiError> {
    let request: RequestBody = serde_json::from_slice(body).map_err(|_| ApiError::BadBody)?;
    let credentials = &shared.credentials;
    let authorized = request
        .domain
        .as_deref()
        .is_some_and(|d| d.eq_ignore_ascii_case(&credentials.c2c_domain))
        && request.api_key.as_deref() == Some(credentials.c2c_api_key.as_str())
        && request.api_password.as_deref() == Some(credentials.c2c_api_password.as_str());
    if !authorized {
        return Err(ApiError::Unauthorized);
    }
    match method {
        Method::GetAll => {
            let store = lock(&shared.c2c);
            Ok(ok(&store.orders))
        }
        Method::GetOrderInfoByOrdersCode => {
            let codes = codes(&request)?;
            let store = lock(&shared.c2c);
            let orders: Vec<&Order> = codes.iter().filter_map(|c| store.get(c)).collect();
            Ok(ok(&orders))
        }
        Method::GetOrdersStateByOrdersCode => {
            let codes = codes(&request)?;
            let store = lock(&shared.c2c);
            let rows: Vec<StateRow> = codes
                .iter()
                .filter_map(|c| store.get(c))
                .map(|o| StateRow {
                    code: &o.siparis_kodu,
                    status: o.siparis_durumu.state_text(),
                })
                .collect();
            Ok(ok(&rows))
        }
        Method::GetOrdersDate => {
            let from = date(request.baslangic_tarihi.as_deref(), "BaslangicTarihi")?;
            let until = date(request.bitis_tarihi.as_deref(), "BitisTarihi")?;
            if until < from {
                return Err(ApiError::Invalid(
                    "BitisTarihi BaslangicTarihi'nden önce olamaz.".into(),
                ));
            }
            let store = lock(&shared.c2c);
            let orders: Vec<&Order> = store
                .orders
                .iter()
                .filter(|o| o.siparis_tarihi >= from && o.siparis_tarihi <= until)
                .collect();
            Ok(ok(&orders))
        }
        Method::GetOrdersState => {
            let group = match request.siparis_durumu.as_deref().map(str::trim) {
                Some(g @ ("1" | "2" | "3" | "4" | "5" | "6" | "7" | "8")) => g.parse::<u8>().ok(),
                _ => None,
            }
            .ok_or_else(|| ApiError::Invalid("SiparisDurumu 1 ile 8 arasında olmalıdır.".into()))?;
            let store = lock(&shared.c2c);
            let orders: Vec<&Order> = store
                .orders
                .iter()
                .filter(|o| o.siparis_durumu.group() == Some(group))
                .collect();
            Ok(ok(&orders))
        }
        Method::UpdateOrderStateByOrderCode => {
            let codes = codes(&request)?;
            let target = match request.siparis_durumu.as_deref().map(str::trim) {
                Some("Onay Bekliyor") => Stage::OnayBekliyor,
                Some("Hazırlanıyor") => Stage::Hazirlaniyor,
                Some("Kargoya Verildi") => Stage::KargoyaVerildi,
                _ => {
                    return Err(ApiError::Invalid(
                        "SiparisDurumu 'Onay Bekliyor', 'Hazırlanıyor' veya 'Kargoya Verildi' olmalıdır.".into(),
                    ));
                }
            };
            let now = Utc::now();
            let mut store = lock(&shared.c2c);
            let mut rows = Vec::with_capacity(codes.len());
            let mut effects = Vec::new();
            for code in codes {
                let (row, effect) = store.update(code, target, now);
                rows.push(row);
                effects.extend(effect);
            }
            let mut response = ok(&rows);
            if !effects.is_empty() {
                response.extensions_mut().insert(Effect(effects.join("; ")));
            }
            Ok(response)
        }
    }
}

fn codes(request: &RequestBody) -> Result<Vec<&str>, ApiError> {
    let codes: Vec<&str> = request
        .siparis_kodlari
        .iter()
        .flatten()
        .map(|c| c.trim())
        .filter(|c| !c.is_empty())
        .collect();
    if codes.is_empty() {
        return Err(ApiError::Invalid("SiparisKodlari boş olamaz.".into()));
    }
    Ok(codes)
}

/// A `dd.MM.yyyy HH:mm` Istanbul time.
fn date(value: Option<&str>, name: &str) -> Result<DateTime<Utc>, ApiError> {
    let invalid = || ApiError::Invalid(format!("{name} 'gg.aa.yyyy ss:dd' biçiminde olmalıdır."));
    let naive = NaiveDateTime::parse_from_str(value.ok_or_else(invalid)?.trim(), DATE_TIME_FORMAT)
        .map_err(|_| invalid())?;
    naive
        .and_local_timezone(Istanbul)
        .single()
        .map(|at| at.with_timezone(&Utc))
        .ok_or_else(invalid)
}
