//! The C2C fake against its document and the digest: credentials in the body and errors as a `hata` object
//! (HTTP 200), the six methods and their filters, Turkish order shapes, and `UpdateOrderStateByOrderCode`'s
//! per-order answers with their effects in the audit log.

use std::collections::BTreeSet;
use std::str::FromStr;

use chrono::{NaiveDateTime, Utc};
use chrono_tz::Europe::Istanbul;
use ordersync::sandbox::{Api, Sandbox, SandboxConfig};
use reqwest::StatusCode;
use rust_decimal::Decimal;
use serde_json::{Value, json};

const DATE_TIME: &str = "%d.%m.%Y %H:%M";

struct C2c {
    sandbox: Sandbox,
    http: reqwest::Client,
}

impl C2c {
    async fn start(orders: usize) -> C2c {
        let sandbox = Sandbox::start(SandboxConfig {
            orders_per_api: orders,
            ..SandboxConfig::default()
        })
        .await
        .expect("the sandbox starts");
        C2c {
            sandbox,
            http: reqwest::Client::new(),
        }
    }

    /// Posts `fields` plus the right credentials to `method`.
    async fn call(&self, method: &str, fields: Value) -> (StatusCode, Value) {
        let credentials = self.sandbox.credentials();
        let mut body = json!({
            "Domain": credentials.c2c_domain,
            "ApiKey": credentials.c2c_api_key,
            "ApiPassword": credentials.c2c_api_password,
        });
        body.as_object_mut()
            .unwrap()
            .extend(fields.as_object().cloned().unwrap_or_default());
        self.raw(method, body.to_string()).await
    }

    async fn raw(&self, method: &str, body: String) -> (StatusCode, Value) {
        let url = format!(
            "{}/api/c2c/StoreOrderServices/{method}",
            self.sandbox.base_url(Api::C2c)
        );
        let response = self
            .http
            .post(url)
            .header("Content-Type", "application/json; charset=utf-8")
            .body(body)
            .send()
            .await
            .expect("the request is answered");
        let status = response.status();
        (status, response.json().await.expect("a JSON body"))
    }

    /// A successful call's array.
    async fn rows(&self, method: &str, fields: Value) -> Vec<Value> {
        let (status, body) = self.call(method, fields).await;
        assert_eq!(status, StatusCode::OK);
        body.as_array()
            .unwrap_or_else(|| panic!("{method} answers an array: {body}"))
            .clone()
    }

    fn status_of(&self, code: &str) -> String {
        self.sandbox
            .orders(Api::C2c)
            .into_iter()
            .find(|o| o.external_id == code)
            .expect("a held order")
            .status
    }
}

fn assert_hata(status: StatusCode, body: &Value, expected: StatusCode) {
    assert_eq!(status, expected, "{body}");
    assert!(body.is_object(), "an error is an object: {body}");
    assert!(
        body["hata"].as_str().is_some_and(|h| !h.is_empty()),
        "{body}"
    );
}

fn decimal(value: &Value) -> Decimal {
    let text = value.to_string();
    assert!(value.is_number(), "{text} is a JSON number");
    let (_, fraction) = text
        .split_once('.')
        .unwrap_or_else(|| panic!("{text} has decimals"));
    assert_eq!(fraction.len(), 2, "{text} has two decimals");
    Decimal::from_str(&text).unwrap()
}

fn placed(order: &Value) -> NaiveDateTime {
    NaiveDateTime::parse_from_str(order["siparisTarihi"].as_str().unwrap(), DATE_TIME)
        .expect("siparisTarihi is dd.MM.yyyy HH:mm")
}

fn codes(orders: &[Value]) -> Vec<String> {
    orders
        .iter()
        .map(|o| o["siparisKodu"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn wrong_credentials_are_a_hata_object_with_http_200() {
    let api = C2c::start(5).await;
    let credentials = api.sandbox.credentials().clone();
    let wrong = [
        json!({"Domain": credentials.c2c_domain, "ApiKey": "wrong", "ApiPassword": credentials.c2c_api_password}),
        json!({"Domain": credentials.c2c_domain, "ApiKey": credentials.c2c_api_key, "ApiPassword": "wrong"}),
        json!({"Domain": credentials.c2c_domain.trim_start_matches("www."), "ApiKey": credentials.c2c_api_key,
               "ApiPassword": credentials.c2c_api_password}),
        json!({"ApiKey": credentials.c2c_api_key, "ApiPassword": credentials.c2c_api_password}),
    ];
    for body in wrong {
        let (status, answer) = api.raw("GetAll", body.to_string()).await;
        assert_hata(status, &answer, StatusCode::OK);
    }
    let (status, answer) = api.raw("GetAll", "{not json".into()).await;
    assert_hata(status, &answer, StatusCode::BAD_REQUEST);
    let (status, answer) = api.call("DeleteEverything", json!({})).await;
    assert_hata(status, &answer, StatusCode::NOT_FOUND);
    let operations: Vec<String> = api
        .sandbox
        .audit()
        .into_iter()
        .map(|e| e.operation)
        .collect();
    assert_eq!(operations[..5], ["GetAll"; 5]);
}

#[tokio::test]
async fn get_all_returns_every_order_in_the_documented_shape() {
    let api = C2c::start(120).await;
    let orders = api.rows("GetAll", json!({})).await;
    assert_eq!(orders.len(), 120);
    let held = api.sandbox.orders(Api::C2c);
    for order in &orders {
        for key in [
            "siparisKodu",
            "siparisSatici",
            "siparisAliciAdi",
            "siparisAliciMail",
            "siparisTeslimatAdresi",
            "siparisFaturaAdresi",
            "siparisNotu",
            "siparisDurumu",
        ] {
            assert!(order[key].is_string(), "{key} in {order}");
        }
        placed(order);
        assert!(
            ["IYZICO Pool", "bankTransfer"].contains(&order["siparisOdemeTuru"].as_str().unwrap())
        );
        assert!(["TL", "EUR", "USD"].contains(&order["siparisParaBirimi"].as_str().unwrap()));
        assert!(order["siparisTaksitSayisi"].is_u64());
        let mut goods = Decimal::ZERO;
        for line in order["siparisUrunleri"].as_array().unwrap() {
            assert!(line["urunAdi"].is_string() && line["urunAdet"].as_u64().unwrap() >= 1);
            assert_eq!(line["urunParaBirimi"], order["siparisParaBirimi"]);
            chrono::NaiveDate::parse_from_str(
                line["urunKargoTeslimTarihi"].as_str().unwrap(),
                "%d.%m.%Y",
            )
            .expect("urunKargoTeslimTarihi is dd.MM.yyyy");
            assert!(line["urunKargoTakipNo"].is_string() && line["urunKargo"].is_string());
            let count = Decimal::from(line["urunAdet"].as_u64().unwrap());
            let amount = decimal(&line["urunTutar"]);
            assert_eq!(
                amount,
                decimal(&line["urunFiyat"]) * count - decimal(&line["urunIndirim"])
            );
            goods += amount;
        }
        let total = decimal(&order["siparisToplamTutar"]);
        assert_eq!(decimal(&order["siparisTutari"]), goods);
        assert_eq!(total, goods + decimal(&order["siparisKargoTutari"]));
        assert_eq!(
            total,
            decimal(&order["siparisAltUyeIsYeri"])
                + decimal(&order["siparisUyeIsYeri"])
                + decimal(&order["siparisIyzicoKomisyonu"])
        );
        decimal(&order["siparisTaksitTutari"]);
        let mine = held
            .iter()
            .find(|h| h.external_id == order["siparisKodu"])
            .unwrap();
        assert_eq!(
            (mine.total, mine.status.as_str()),
            (total, order["siparisDurumu"].as_str().unwrap())
        );
        assert_eq!(
            mine.line_count,
            order["siparisUrunleri"].as_array().unwrap().len()
        );
    }
    let statuses: BTreeSet<&str> = orders
        .iter()
        .map(|o| o["siparisDurumu"].as_str().unwrap())
        .collect();
    assert!(
        statuses.iter().any(|s| s.contains(" - ")),
        "some marked statuses: {statuses:?}"
    );
}

#[tokio::test]
async fn orders_and_states_by_code_skip_unknown_codes() {
    let api = C2c::start(30).await;
    let all = codes(&api.rows("GetAll", json!({})).await);
    let asked = json!({"SiparisKodlari": [all[3], "SP00000000", all[7]]});
    let orders = api.rows("GetOrderInfoByOrdersCode", asked.clone()).await;
    assert_eq!(codes(&orders), [all[3].clone(), all[7].clone()]);

    let states = api.rows("GetOrdersStateByOrdersCode", asked).await;
    assert_eq!(states.len(), 2);
    for state in &states {
        let code = state["siparisKodu"].as_str().unwrap();
        let held = api.status_of(code);
        let expected = if held == "Tamamlandı" {
            "Sipariş Tamamlandı".to_string()
        } else {
            held
        };
        assert_eq!(state["siparisDurumu"], expected.as_str());
        assert_eq!(state.as_object().unwrap().len(), 2, "{state}");
    }
    for method in [
        "GetOrderInfoByOrdersCode",
        "GetOrdersStateByOrdersCode",
        "UpdateOrderStateByOrderCode",
    ] {
        let (status, body) = api.call(method, json!({"SiparisKodlari": []})).await;
        assert_hata(status, &body, StatusCode::OK);
    }
}

#[tokio::test]
async fn get_orders_date_filters_the_order_date_to_the_minute_inclusively() {
    let api = C2c::start(200).await;
    let all = api.rows("GetAll", json!({})).await;
    let pivot = placed(&all[100]);
    let text = pivot.format(DATE_TIME).to_string();
    let same_minute = api
        .rows(
            "GetOrdersDate",
            json!({"BaslangicTarihi": text, "BitisTarihi": text}),
        )
        .await;
    assert!(codes(&same_minute).contains(&all[100]["siparisKodu"].as_str().unwrap().to_string()));
    assert!(same_minute.iter().all(|o| placed(o) == pivot));

    let first = placed(&all[0]).format(DATE_TIME).to_string();
    let before = api
        .rows(
            "GetOrdersDate",
            json!({"BaslangicTarihi": first, "BitisTarihi": text}),
        )
        .await;
    let expected = all.iter().filter(|o| placed(o) <= pivot).count();
    assert_eq!(before.len(), expected);

    let now = Utc::now().with_timezone(&Istanbul);
    let added = api.sandbox.add_orders(Api::C2c, 2);
    let window = json!({
        "BaslangicTarihi": (now - chrono::Duration::minutes(1)).format(DATE_TIME).to_string(),
        "BitisTarihi": (now + chrono::Duration::minutes(1)).format(DATE_TIME).to_string(),
    });
    let recent = codes(&api.rows("GetOrdersDate", window).await);
    assert!(
        added.iter().all(|code| recent.contains(code)),
        "{added:?} in {recent:?}"
    );

    for bad in [
        json!({"BaslangicTarihi": "2024-01-01 00:00", "BitisTarihi": text}),
        json!({"BaslangicTarihi": text}),
        json!({"BaslangicTarihi": text, "BitisTarihi": first}),
    ] {
        let (status, body) = api.call("GetOrdersDate", bad).await;
        assert_hata(status, &body, StatusCode::OK);
    }
}

#[tokio::test]
async fn get_orders_state_groups_statuses_1_to_8() {
    let api = C2c::start(300).await;
    let all = api.rows("GetAll", json!({})).await;
    let shipped = ["Kargoya Verildi", "Teslim Edildi", "Tamamlandı"];
    let mut grouped = 0;
    for group in 1..=8 {
        let orders = api
            .rows(
                "GetOrdersState",
                json!({"SiparisDurumu": group.to_string()}),
            )
            .await;
        for order in &orders {
            let status = order["siparisDurumu"].as_str().unwrap();
            let fits = match group {
                1 => status == "Onay Bekliyor",
                2 => status == "Hazırlanıyor" || status == "Tedarik sürecinde",
                3 => status == "Kargoya Verildi",
                4 => status == "Teslim Edildi",
                5 => status == "Tamamlandı",
                6 => {
                    status == "İptal Edildi"
                        || status
                            .strip_suffix(" - İptal Edildi")
                            .is_some_and(|x| !shipped.contains(&x))
                }
                7 => status.ends_with(" - İtiraz Edildi"),
                _ => status
                    .strip_suffix(" - İptal Edildi")
                    .is_some_and(|x| shipped.contains(&x)),
            };
            assert!(fits, "{status} in group {group}");
        }
        grouped += orders.len();
    }
    let ungrouped = all
        .iter()
        .filter(|o| {
            ["Tamamlanmamış", "Ödeme Bekliyor"].contains(&o["siparisDurumu"].as_str().unwrap())
        })
        .count();
    assert_eq!(grouped + ungrouped, all.len());
    for bad in [
        json!({"SiparisDurumu": "9"}),
        json!({"SiparisDurumu": "Onay Bekliyor"}),
        json!({}),
    ] {
        let (status, body) = api.call("GetOrdersState", bad).await;
        assert_hata(status, &body, StatusCode::OK);
    }
}

#[tokio::test]
async fn update_order_state_answers_each_order_and_audits_the_changes() {
    let api = C2c::start(100).await;
    let waiting: Vec<String> = api
        .sandbox
        .add_orders(Api::C2c, 10)
        .into_iter()
        .filter(|code| api.status_of(code) == "Onay Bekliyor")
        .collect();
    assert!(waiting.len() >= 2, "new orders awaiting approval");
    let (first, second) = (waiting[0].clone(), waiting[1].clone());

    let rows = api
        .rows(
            "UpdateOrderStateByOrderCode",
            json!({"SiparisKodlari": [first, "SP00000000"], "SiparisDurumu": "Hazırlanıyor"}),
        )
        .await;
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0]["Durum"], "Başarılı", "{rows:?}");
    assert_eq!(rows[1]["Durum"], "Başarısız", "{rows:?}");
    assert!(rows.iter().all(|r| r["Aciklama"].is_string()));
    let entry = api.sandbox.audit().pop().unwrap();
    assert_eq!(entry.operation, "UpdateOrderStateByOrderCode");
    assert!(entry.effect.expect("an effect").contains(&first));
    assert_eq!(api.status_of(&first), "Hazırlanıyor");

    let back = api
        .rows(
            "UpdateOrderStateByOrderCode",
            json!({"SiparisKodlari": [first], "SiparisDurumu": "Onay Bekliyor"}),
        )
        .await;
    assert_eq!(back[0]["Durum"], "Başarısız", "no way back: {back:?}");
    let again = api
        .rows(
            "UpdateOrderStateByOrderCode",
            json!({"SiparisKodlari": [first], "SiparisDurumu": "Hazırlanıyor"}),
        )
        .await;
    assert_eq!(
        again[0]["Durum"], "Başarılı",
        "asking for the current status is harmless"
    );
    assert_eq!(api.sandbox.audit().pop().unwrap().effect, None);

    let shipped = api
        .rows(
            "UpdateOrderStateByOrderCode",
            json!({"SiparisKodlari": [first, second], "SiparisDurumu": "Kargoya Verildi"}),
        )
        .await;
    assert!(
        shipped.iter().all(|r| r["Durum"] == "Başarılı"),
        "{shipped:?}"
    );
    let orders = api
        .rows(
            "GetOrderInfoByOrdersCode",
            json!({"SiparisKodlari": [first, second]}),
        )
        .await;
    for order in &orders {
        assert_eq!(order["siparisDurumu"], "Kargoya Verildi");
        let lines = order["siparisUrunleri"].as_array().unwrap();
        assert!(
            lines
                .iter()
                .all(|l| !l["urunKargoTakipNo"].as_str().unwrap().is_empty())
        );
    }

    let delivered = api
        .rows(
            "UpdateOrderStateByOrderCode",
            json!({"SiparisKodlari": [first], "SiparisDurumu": "Hazırlanıyor"}),
        )
        .await;
    assert_eq!(delivered[0]["Durum"], "Başarısız");
    let (status, body) = api
        .call(
            "UpdateOrderStateByOrderCode",
            json!({"SiparisKodlari": [first], "SiparisDurumu": "Teslim Edildi"}),
        )
        .await;
    assert_hata(status, &body, StatusCode::OK);
    let effects = api
        .sandbox
        .audit()
        .into_iter()
        .filter(|e| e.effect.is_some())
        .count();
    assert_eq!(effects, 2);
}

#[tokio::test]
async fn changed_orders_show_their_new_state_by_code() {
    let api = C2c::start(100).await;
    let before = api.sandbox.orders(Api::C2c);
    let changed = api.sandbox.change_orders(Api::C2c, 10);
    assert_eq!(changed.len(), 10);
    let states = api
        .rows(
            "GetOrdersStateByOrdersCode",
            json!({"SiparisKodlari": changed}),
        )
        .await;
    assert_eq!(states.len(), 10);
    for state in &states {
        let held = api.status_of(state["siparisKodu"].as_str().unwrap());
        let shown = state["siparisDurumu"].as_str().unwrap();
        assert!(shown == held || (held == "Tamamlandı" && shown == "Sipariş Tamamlandı"));
        let was = before
            .iter()
            .find(|o| o.external_id == state["siparisKodu"])
            .unwrap();
        assert_ne!(was.status, held, "{} moved", was.external_id);
    }
}

#[tokio::test]
async fn the_shop_confirms_a_bank_transfer_by_moving_to_onay_bekliyor() {
    let api = C2c::start(10).await;
    let added = api.sandbox.add_orders(Api::C2c, 20);
    let unpaid = added
        .iter()
        .find(|code| api.status_of(code) == "Ödeme Bekliyor")
        .expect("a new order awaiting payment");
    let order = &api
        .rows(
            "GetOrderInfoByOrdersCode",
            json!({"SiparisKodlari": [unpaid]}),
        )
        .await[0];
    assert_eq!(order["siparisOdemeTuru"], "bankTransfer");
    let rows = api
        .rows(
            "UpdateOrderStateByOrderCode",
            json!({"SiparisKodlari": [unpaid], "SiparisDurumu": "Onay Bekliyor"}),
        )
        .await;
    assert_eq!(rows[0]["Durum"], "Başarılı", "{rows:?}");
    assert_eq!(api.status_of(unpaid), "Onay Bekliyor");
    assert!(api.sandbox.audit().pop().unwrap().effect.is_some());
}
