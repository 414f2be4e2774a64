//! C2C transitions: one kind, `set-state {state}`, sent as `UpdateOrderStateByOrderCode
//! {SiparisKodlari: [order], SiparisDurumu: state}`.
//!
//! `state` is one of the three texts the API accepts — `Onay Bekliyor`, `Hazırlanıyor`,
//! `Kargoya Verildi` — matched without case, spacing or Turkish diacritics (`hazirlaniyor` works) and
//! sent in its exact spelling. Refused when the order's last known state is final (completed,
//! cancelled, rejected, returned) or delivered, or when its status text already is the target.
//!
//! The answer is one `{Durum, Aciklama}` per order. The document leaves `Durum`'s values blank, so it
//! is read as a yes/no word in Turkish or English (`true`/`1`/`Başarılı`/`OK`/`Success` against
//! `false`/`0`/`Başarısız`/`Hata`/`Error`/`Fail`); a "no" is a rejection carrying `Aciklama`, and an
//! answer that says neither is malformed (kept for an operator) rather than guessed. The error object
//! of the API (also on HTTP 200) is a rejection too.
//!
//! Read-back: `GetOrderInfoByOrdersCode` with the one code.

use serde::Deserialize;
use serde_json::{Value, json};

use super::{C2c, method_url, request_body, wire};
use crate::domain::{Order, OrderState};
use crate::marketplace::args::{Args, refuse, unknown_kind};
use crate::marketplace::payload::{fold, is_json};
use crate::marketplace::{AppliedTransition, MarketplaceError, Transition, TransitionRefusal};

const KIND: &str = "set-state";
const METHOD: &str = "UpdateOrderStateByOrderCode";

/// The states the update accepts, in the API's spelling.
const TARGETS: [&str; 3] = ["Onay Bekliyor", "Hazırlanıyor", "Kargoya Verildi"];

/// The target state of a `set-state` transition, in the API's spelling.
pub(super) fn parse(transition: &Transition) -> Result<&'static str, TransitionRefusal> {
    if transition.kind != KIND {
        return Err(unknown_kind("c2c", &transition.kind, &[KIND]));
    }
    let args = Args::new(transition);
    args.only(&["state"])?;
    let state = args.text("state")?;
    TARGETS
        .into_iter()
        .find(|t| fold(t) == fold(&state))
        .ok_or_else(|| {
            refuse(format!(
                "`state` `{state}` is not one C2C can set (it takes {})",
                TARGETS.join(", ")
            ))
        })
}

/// Whether moving the order to `target` is legal from its last known state.
pub(super) fn check_legal(target: &str, current: Option<&Order>) -> Result<(), TransitionRefusal> {
    let Some(order) = current else {
        return Ok(());
    };
    let text = order.status.text.as_deref().unwrap_or_default();
    if order.state.is_final() || order.state == OrderState::Delivered {
        return Err(refuse(format!(
            "order `{}` is {} (“{text}”) and can no longer be moved",
            order.external_id, order.state
        )));
    }
    if fold(text) == fold(target) {
        return Err(refuse(format!(
            "order `{}` already is “{target}”",
            order.external_id
        )));
    }
    Ok(())
}

/// Whether the read-back order carries the target status text.
pub(super) fn took_effect(target: &str, order: &Order) -> bool {
    order
        .status
        .text
        .as_deref()
        .is_some_and(|t| fold(t) == fold(target))
}

/// The method's own fields (the credentials are added by [`request_body`]).
pub(super) fn update_fields(order: &str, target: &str) -> Value {
    json!({ "SiparisKodlari": [order], "SiparisDurumu": target })
}

#[derive(Deserialize)]
struct Outcome {
    #[serde(rename = "Durum", alias = "durum")]
    durum: Option<Value>,
    #[serde(rename = "Aciklama", alias = "aciklama")]
    aciklama: Option<String>,
}

/// Why an update's 200 answer is not a success.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Failure {
    /// The API refused (its error object, or a "no" `Durum`), with its message.
    Rejected(String),
    /// The answer says neither yes nor no.
    Malformed(String),
}

/// Reads an update's answer: every element must say yes.
pub(super) fn outcome(body: &[u8]) -> Result<(), Failure> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| Failure::Malformed(format!("not JSON: {e}")))?;
    let elements = match value {
        Value::Array(elements) if !elements.is_empty() => elements,
        Value::Array(_) => return Err(Failure::Malformed("an empty answer".to_owned())),
        Value::Object(_) => {
            let message = wire::api_message(body).unwrap_or_else(|| value.to_string());
            return Err(Failure::Rejected(message));
        }
        other => {
            return Err(Failure::Malformed(format!(
                "the body is `{other}`, expected a list of outcomes"
            )));
        }
    };
    for element in elements {
        let outcome: Outcome = serde_json::from_value(element)
            .map_err(|e| Failure::Malformed(format!("an outcome: {e}")))?;
        let said = match &outcome.durum {
            Some(Value::Bool(b)) => Some(*b),
            Some(Value::Number(n)) => match n.as_str() {
                "1" => Some(true),
                "0" => Some(false),
                _ => None,
            },
            Some(Value::String(s)) => yes_or_no(s),
            _ => None,
        };
        let message = outcome.aciklama.unwrap_or_default();
        match said {
            Some(true) => {}
            Some(false) => {
                return Err(Failure::Rejected(if message.trim().is_empty() {
                    "the update failed without an explanation".to_owned()
                } else {
                    message
                }));
            }
            None => {
                return Err(Failure::Malformed(format!(
                    "`Durum` {} says neither success nor failure ({message})",
                    outcome
                        .durum
                        .map_or("missing".to_owned(), |d| d.to_string())
                )));
            }
        }
    }
    Ok(())
}

fn yes_or_no(text: &str) -> Option<bool> {
    match fold(text).as_str() {
        "true" | "1" | "basarili" | "ok" | "success" | "successful" | "tamam" | "evet" => {
            Some(true)
        }
        "false" | "0" | "basarisiz" | "hata" | "hatali" | "error" | "fail" | "failed"
        | "failure" | "hayir" => Some(false),
        _ => None,
    }
}

impl C2c {
    pub(super) async fn send_update(
        &self,
        transition: &Transition,
    ) -> Result<AppliedTransition, MarketplaceError> {
        let order = &transition.order_external_id;
        let what = format!("POST {METHOD} ({order})");
        let rejected = |message: String| MarketplaceError::Rejected {
            what: what.clone(),
            status: None,
            message: self.http.redactor().redact(&message),
        };
        let target = parse(transition).map_err(|r| rejected(r.0))?;
        let auth = self
            .auth
            .as_ref()
            .ok_or_else(|| rejected("the account has no C2C credentials".to_owned()))?;
        let fields = update_fields(order, target);
        let request_summary = self
            .http
            .redactor()
            .redact(&format!("POST {METHOD} {fields}"));
        let request = self
            .http
            .request(
                reqwest::Method::POST,
                method_url(&self.base_url, METHOD).as_str(),
            )
            .header(reqwest::header::ACCEPT, "application/json")
            .json(&request_body(auth, fields));
        let response = self.http.send(&what, request, wire::api_message).await?;
        let malformed =
            |reason: String| MarketplaceError::malformed(&self.http, &what, reason, &response.body);
        if !is_json(response.content_type.as_deref()) {
            return Err(malformed(format!(
                "content type `{}`, expected JSON",
                response.content_type.as_deref().unwrap_or_default()
            )));
        }
        outcome(&response.body).map_err(|f| match f {
            Failure::Rejected(message) => rejected(message),
            Failure::Malformed(reason) => malformed(reason),
        })?;
        Ok(AppliedTransition {
            request_summary,
            http_status: response.status.as_u16(),
            response_excerpt: self.http.redactor().excerpt(&response.body),
        })
    }

    /// The orders of `external_ids`, read with `GetOrderInfoByOrdersCode`, as many codes a request as
    /// the status stream asks for.
    pub(super) async fn read_back(
        &self,
        external_ids: &[String],
    ) -> Result<Vec<Order>, MarketplaceError> {
        let mut found = Vec::new();
        for codes in external_ids.chunks(self.codes_per_request) {
            let what = match codes {
                [code] => format!("POST GetOrderInfoByOrdersCode ({code})"),
                _ => format!("POST GetOrderInfoByOrdersCode ({} codes)", codes.len()),
            };
            let orders = self
                .call(
                    &what,
                    "GetOrderInfoByOrdersCode",
                    json!({ "SiparisKodlari": codes }),
                )
                .await?;
            found.extend(
                orders
                    .into_iter()
                    .filter(|o| codes.contains(&o.external_id)),
            );
        }
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::num::NonZeroU32;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use axum::extract::{Path, State};
    use axum::http::header;
    use axum::routing::post;
    use url::Url;

    use super::*;
    use crate::config::{AccountConfig, Credentials, Secret};
    use crate::domain::{MarketplaceKind, RawStatus};
    use crate::http::HttpClient;
    use crate::marketplace::Marketplace;

    macro_rules! fixture {
        ($name:literal) => {
            include_str!(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/fixtures/c2c/",
                $name
            ))
        };
    }

    const API_KEY: &str = "key-7h6g5f4e3d";
    const API_PASSWORD: &str = "pw-Ğ9ü8ş7!";
    const ORDER: &str = "C2C-100236";

    fn transition(kind: &str, args: Value) -> Transition {
        Transition {
            order_external_id: ORDER.into(),
            kind: kind.into(),
            args: args.as_object().cloned().unwrap_or_default(),
            idempotency_key: "key-1".into(),
        }
    }

    fn order(state: OrderState, text: &str) -> Order {
        Order {
            external_id: ORDER.into(),
            order_number: None,
            state,
            status: RawStatus {
                code: None,
                text: Some(text.into()),
            },
            total_amount: None,
            shipping_amount: None,
            currency: None,
            customer_name: None,
            customer_email: None,
            shipping_city: None,
            placed_at: None,
            source_updated_at: None,
            lines: Vec::new(),
            packages: Vec::new(),
            raw: Value::Null.into(),
        }
    }

    fn validate(t: &Transition, current: Option<&Order>) -> Result<(), String> {
        parse(t)
            .and_then(|target| check_legal(target, current))
            .map_err(|r| r.0)
    }

    #[test]
    fn the_three_states_are_accepted_in_any_spelling() {
        let waiting = order(OrderState::AwaitingApproval, "Onay Bekliyor");
        for (given, sent) in [
            ("Hazırlanıyor", "Hazırlanıyor"),
            ("  HAZIRLANIYOR ", "Hazırlanıyor"),
            ("hazirlaniyor", "Hazırlanıyor"),
            ("Kargoya  verildi", "Kargoya Verildi"),
        ] {
            let t = transition("set-state", json!({ "state": given }));
            assert_eq!(parse(&t), Ok(sent), "{given}");
            assert_eq!(validate(&t, Some(&waiting)), Ok(()));
            assert_eq!(validate(&t, None), Ok(()));
        }
        let preparing = order(OrderState::Preparing, "Hazırlanıyor");
        let back = transition("set-state", json!({"state": "Onay Bekliyor"}));
        assert_eq!(validate(&back, Some(&preparing)), Ok(()));
    }

    #[test]
    fn missing_and_bad_arguments_are_refused() {
        assert_eq!(
            validate(&transition("set-state", json!({})), None),
            Err("`set-state` needs the argument `state`".to_owned())
        );
        assert_eq!(
            validate(&transition("set-state", json!({"state": "Teslim Edildi"})), None),
            Err("`state` `Teslim Edildi` is not one C2C can set (it takes Onay Bekliyor, Hazırlanıyor, Kargoya Verildi)".to_owned())
        );
        assert_eq!(
            validate(&transition("set-state", json!({"state": 3})), None).unwrap_err(),
            "`state` `3` is not one C2C can set (it takes Onay Bekliyor, Hazırlanıyor, Kargoya Verildi)"
        );
        assert_eq!(
            validate(&transition("set-state", json!({"state": ""})), None),
            Err("`state` must not be empty".to_owned())
        );
        assert!(
            validate(
                &transition("set-state", json!({"state": "Hazırlanıyor", "note": "x"})),
                None
            )
            .unwrap_err()
            .contains("no argument `note`")
        );
        assert_eq!(
            validate(&transition("ship", json!({})), None),
            Err("c2c has no transition `ship` (it has set-state)".to_owned())
        );
    }

    #[test]
    fn final_orders_and_no_ops_are_refused() {
        let t = transition("set-state", json!({"state": "Kargoya Verildi"}));
        for (state, text) in [
            (OrderState::Completed, "Tamamlandı"),
            (OrderState::Cancelled, "Hazırlanıyor - İptal Edildi"),
            (OrderState::Delivered, "Teslim Edildi"),
            (OrderState::Returned, "İade Edildi"),
        ] {
            assert_eq!(
                validate(&t, Some(&order(state, text))),
                Err(format!(
                    "order `{ORDER}` is {state} (“{text}”) and can no longer be moved"
                ))
            );
        }
        assert_eq!(
            validate(&t, Some(&order(OrderState::Shipped, "Kargoya Verildi"))),
            Err(format!("order `{ORDER}` already is “Kargoya Verildi”"))
        );
    }

    #[test]
    fn effects_are_read_from_the_status_text() {
        assert!(took_effect(
            "Hazırlanıyor",
            &order(OrderState::Preparing, "Hazırlanıyor")
        ));
        assert!(!took_effect(
            "Hazırlanıyor",
            &order(OrderState::AwaitingApproval, "Onay Bekliyor")
        ));
    }

    #[test]
    fn update_answers_are_read_element_by_element() {
        assert_eq!(outcome(fixture!("update_ok.json").as_bytes()), Ok(()));
        assert_eq!(outcome(fixture!("update_bool.json").as_bytes()), Ok(()));
        assert_eq!(
            outcome(fixture!("update_failed.json").as_bytes()),
            Err(Failure::Rejected(
                "İptal edilmiş sipariş güncellenemez.".into()
            ))
        );
        assert_eq!(
            outcome(fixture!("error_hata.json").as_bytes()),
            Err(Failure::Rejected(
                "Girilen ApiKey veya ApiPassword hatalı. Lütfen bilgilerinizi kontrol ediniz."
                    .into()
            ))
        );
        assert_eq!(
            outcome(br#"[{"Durum": "true"}, {"Durum": "false", "Aciklama": "Yok"}]"#),
            Err(Failure::Rejected("Yok".into()))
        );
        for bad in [
            fixture!("update_unclear.json"),
            fixture!("truncated.json"),
            "[]",
            "5",
            r#"[{"Aciklama": "?"}]"#,
            r#"["x"]"#,
        ] {
            assert!(
                matches!(outcome(bad.as_bytes()), Err(Failure::Malformed(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn the_update_body_names_the_order_and_state() {
        assert_eq!(
            update_fields(ORDER, "Hazırlanıyor").to_string(),
            r#"{"SiparisDurumu":"Hazırlanıyor","SiparisKodlari":["C2C-100236"]}"#
        );
    }

    type Seen = Arc<Mutex<Vec<(String, Value)>>>;

    #[tokio::test]
    async fn updates_carry_credentials_in_the_body_but_never_in_the_summary() {
        let seen = Seen::default();
        let reply = Arc::new(Mutex::new(fixture!("update_ok.json")));
        let app = axum::Router::new()
            .route(
                "/c2c/api/c2c/StoreOrderServices/{method}",
                post(
                    |State((seen, reply)): State<(Seen, Arc<Mutex<&'static str>>)>,
                     Path(method): Path<String>,
                     axum::Json(body): axum::Json<Value>| async move {
                        seen.lock().unwrap().push((method.clone(), body));
                        let reply = if method == "GetOrderInfoByOrdersCode" {
                            fixture!("order_info.json")
                        } else {
                            *reply.lock().unwrap()
                        };
                        (
                            [(header::CONTENT_TYPE, "application/json; charset=utf-8")],
                            reply,
                        )
                    },
                ),
            )
            .with_state((seen.clone(), reply.clone()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        let account = AccountConfig {
            name: "cicekci".into(),
            marketplace: MarketplaceKind::C2c,
            base_url: Url::parse(&format!("http://{addr}/c2c/")).unwrap(),
            enabled: true,
            schedule: "0 */5 * * * *".into(),
            initial_sync_days: 7,
            overlap: Duration::from_secs(300),
            page_size: 25,
            requests_per_second: NonZeroU32::new(50).unwrap(),
            timeout: Duration::from_secs(5),
            credentials: Credentials::C2c {
                domain: "www.magaza.com.tr".into(),
                api_key: Secret::new(API_KEY),
                api_password: Secret::new(API_PASSWORD),
            },
        };
        let http = HttpClient::new(
            &account.http_settings(),
            account.credentials.secret_values(),
        )
        .unwrap();
        let c2c = C2c::new(&account, http, &HashMap::new());
        let t = transition("set-state", json!({"state": "hazırlanıyor"}));

        let applied = c2c.apply_transition(&t).await.unwrap();
        assert_eq!(
            applied.request_summary,
            r#"POST UpdateOrderStateByOrderCode {"SiparisDurumu":"Hazırlanıyor","SiparisKodlari":["C2C-100236"]}"#
        );
        assert_eq!(applied.http_status, 200);
        assert!(applied.response_excerpt.contains("güncellendi"));
        let (method, body) = seen.lock().unwrap().pop().unwrap();
        assert_eq!(method, "UpdateOrderStateByOrderCode");
        assert_eq!(
            body,
            json!({
                "Domain": "www.magaza.com.tr",
                "ApiKey": API_KEY,
                "ApiPassword": API_PASSWORD,
                "SiparisKodlari": [ORDER],
                "SiparisDurumu": "Hazırlanıyor",
            })
        );

        *reply.lock().unwrap() = fixture!("update_failed.json");
        let error = c2c.apply_transition(&t).await.unwrap_err();
        assert!(
            matches!(&error, MarketplaceError::Rejected { status: None, message, .. }
                if message == "İptal edilmiş sipariş güncellenemez."),
            "{error:?}"
        );
        *reply.lock().unwrap() = r#"{"hata": "ApiKey key-7h6g5f4e3d ve pw-Ğ9ü8ş7! geçersiz"}"#;
        let error = c2c.apply_transition(&t).await.unwrap_err();
        let text = format!("{error} {error:?}");
        assert!(
            !text.contains(API_KEY) && !text.contains(API_PASSWORD),
            "{text}"
        );
        *reply.lock().unwrap() = fixture!("update_unclear.json");
        let error = c2c.apply_transition(&t).await.unwrap_err();
        assert!(
            matches!(error, MarketplaceError::Malformed { .. }),
            "{error:?}"
        );

        let order = c2c.fetch_order(ORDER).await.unwrap().unwrap();
        let (method, body) = seen.lock().unwrap().pop().unwrap();
        assert_eq!(method, "GetOrderInfoByOrdersCode");
        assert_eq!(body["SiparisKodlari"], json!([ORDER]));
        assert!(!c2c.transition_took_effect(&t, &order));
        assert!(c2c.fetch_order("C2C-0").await.unwrap().is_none());
    }
}
