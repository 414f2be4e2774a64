//! The GittiGidiyor fake against its document and the digest: basic auth (401), the per-request
//! `apiKey`/`time`/`sign` checks (`ackCode` failure), SOAP Faults, the date window, filters, sorting and
//! paging, one sale or many, and `lastActionDate` moving when a sale changes.

use std::collections::BTreeSet;

use chrono::{DateTime, Duration, NaiveDateTime, Utc};
use chrono_tz::Europe::Istanbul;
use md5::{Digest, Md5};
use ordersync::sandbox::{Api, Sandbox, SandboxConfig};
use quick_xml::escape::unescape;
use reqwest::StatusCode;
use rust_decimal::Decimal;

const DATE: &str = "%d/%m/%Y %H:%M:%S";
const SERVICE_NS: &str = "http://sale.individual.ws.listingapi.gg.com";

struct Gg {
    sandbox: Sandbox,
    http: reqwest::Client,
}

/// One `getSalesByDateRange` call's parameters; `Default` asks for everything of the last 91 days.
#[derive(Clone)]
struct Call {
    api_key: Option<String>,
    sign: Option<String>,
    time: Option<String>,
    with_data: &'static str,
    by_status: &'static str,
    by_user: String,
    order_by: &'static str,
    order_type: &'static str,
    start: String,
    end: String,
    page_number: usize,
    page_size: usize,
    lang: &'static str,
}

impl Default for Call {
    fn default() -> Call {
        let now = Utc::now();
        Call {
            api_key: None,
            sign: None,
            time: None,
            with_data: "true",
            by_status: "",
            by_user: String::new(),
            order_by: "P",
            order_type: "A",
            start: istanbul(now - Duration::days(91)),
            end: istanbul(now + Duration::minutes(1)),
            page_number: 1,
            page_size: 100,
            lang: "tr",
        }
    }
}

fn istanbul(at: DateTime<Utc>) -> String {
    at.with_timezone(&Istanbul).format(DATE).to_string()
}

fn parse_date(text: &str) -> NaiveDateTime {
    NaiveDateTime::parse_from_str(text, DATE).expect("a dd/MM/yyyy HH:mm:ss date")
}

/// A parsed answer: the whole XML and its `sale` elements.
struct Answer {
    status: StatusCode,
    xml: String,
}

impl Answer {
    fn first(&self, tag: &str) -> Option<String> {
        values(&self.xml, tag).into_iter().next()
    }

    fn sales(&self) -> Vec<String> {
        elements(&self.xml, "sale")
    }

    fn codes(&self) -> Vec<String> {
        self.sales().iter().map(|s| field(s, "saleCode")).collect()
    }

    fn assert_failure(&self, error_code: &str) {
        assert_eq!(self.status, StatusCode::OK, "{}", self.xml);
        assert_eq!(
            self.first("ackCode").as_deref(),
            Some("failure"),
            "{}",
            self.xml
        );
        let error = elements(&self.xml, "error")
            .pop()
            .expect("an error element");
        assert_eq!(field(&error, "errorCode"), error_code);
        for tag in ["errorId", "message", "viewMessage"] {
            assert!(!field(&error, tag).is_empty(), "{tag} in {error}");
        }
    }
}

/// The inner XML of every `<tag>…</tag>` (or `""` for `<tag/>`), in document order; unnested tags only.
fn elements(xml: &str, tag: &str) -> Vec<String> {
    let (open, close, empty) = (format!("<{tag}>"), format!("</{tag}>"), format!("<{tag}/>"));
    let mut found = Vec::new();
    let mut rest = xml;
    loop {
        let next_open = rest.find(&open);
        let next_empty = rest.find(&empty);
        match (next_open, next_empty) {
            (Some(o), e) if e.is_none_or(|e| o < e) => {
                let body = &rest[o + open.len()..];
                let end = body.find(&close).expect("a closing tag");
                found.push(body[..end].to_string());
                rest = &body[end + close.len()..];
            }
            (_, Some(e)) => {
                found.push(String::new());
                rest = &rest[e + empty.len()..];
            }
            _ => return found,
        }
    }
}

fn values(xml: &str, tag: &str) -> Vec<String> {
    elements(xml, tag)
        .into_iter()
        .map(|v| unescape(&v).expect("escaped text").into_owned())
        .collect()
}

fn field(xml: &str, tag: &str) -> String {
    values(xml, tag)
        .into_iter()
        .next()
        .unwrap_or_else(|| panic!("{tag} in {xml}"))
}

impl Gg {
    async fn start(orders: usize) -> Gg {
        let sandbox = Sandbox::start(SandboxConfig {
            orders_per_api: orders,
            ..SandboxConfig::default()
        })
        .await
        .expect("the sandbox starts");
        Gg {
            sandbox,
            http: reqwest::Client::new(),
        }
    }

    /// The envelope for `call`, signed with the sandbox's keys unless `call` overrides them.
    fn envelope(&self, call: &Call) -> String {
        let credentials = self.sandbox.credentials();
        let api_key = call
            .api_key
            .clone()
            .unwrap_or_else(|| credentials.gg_api_key.clone());
        let time = call
            .time
            .clone()
            .unwrap_or_else(|| Utc::now().timestamp_millis().to_string());
        let sign = call.sign.clone().unwrap_or_else(|| {
            hex::encode(Md5::digest(format!(
                "{api_key}{}{time}",
                credentials.gg_secret_key
            )))
        });
        format!(
            "<soapenv:Envelope xmlns:soapenv=\"http://schemas.xmlsoap.org/soap/envelope/\" \
             xmlns:sale=\"{SERVICE_NS}\"><soapenv:Header/><soapenv:Body><sale:getSalesByDateRange>\
             <apiKey>{api_key}</apiKey><sign>{sign}</sign><time>{time}</time>\
             <withData>{}</withData><byStatus>{}</byStatus><byUser>{}</byUser>\
             <orderBy>{}</orderBy><orderType>{}</orderType>\
             <startDate>{}</startDate><endDate>{}</endDate>\
             <pageNumber>{}</pageNumber><pageSize>{}</pageSize><lang>{}</lang>\
             </sale:getSalesByDateRange></soapenv:Body></soapenv:Envelope>",
            call.with_data,
            call.by_status,
            call.by_user,
            call.order_by,
            call.order_type,
            call.start,
            call.end,
            call.page_number,
            call.page_size,
            call.lang
        )
    }

    async fn post(&self, body: String, auth: Option<(&str, &str)>, content_type: &str) -> Answer {
        let mut request = self
            .http
            .post(self.sandbox.base_url(Api::Gittigidiyor))
            .header("Content-Type", content_type)
            .header("SOAPAction", "\"\"")
            .body(body);
        if let Some((user, password)) = auth {
            request = request.basic_auth(user, Some(password));
        }
        let response = request.send().await.expect("the request is answered");
        Answer {
            status: response.status(),
            xml: response.text().await.expect("a body"),
        }
    }

    async fn send_raw(&self, body: String) -> Answer {
        let credentials = self.sandbox.credentials().clone();
        self.post(
            body,
            Some((&credentials.gg_role_name, &credentials.gg_role_password)),
            "text/xml;charset=UTF-8",
        )
        .await
    }

    async fn send(&self, call: &Call) -> Answer {
        self.send_raw(self.envelope(call)).await
    }

    /// A successful answer.
    async fn ok(&self, call: &Call) -> Answer {
        let answer = self.send(call).await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.xml);
        assert_eq!(
            answer.first("ackCode").as_deref(),
            Some("success"),
            "{}",
            answer.xml
        );
        answer
    }

    /// Every sale `call` selects, following `nextPageAvailable`.
    async fn all_pages(&self, call: &Call) -> Vec<String> {
        let mut sales = Vec::new();
        let mut call = call.clone();
        loop {
            let answer = self.ok(&call).await;
            let page = answer.sales();
            assert_eq!(answer.first("saleCount"), Some(page.len().to_string()));
            sales.extend(page);
            if answer.first("nextPageAvailable").as_deref() != Some("true") {
                return sales;
            }
            call.page_number += 1;
        }
    }
}

#[tokio::test]
async fn a_missing_or_wrong_basic_auth_pair_is_401() {
    let api = Gg::start(5).await;
    let body = api.envelope(&Call::default());
    let none = api.post(body.clone(), None, "text/xml").await;
    assert_eq!(none.status, StatusCode::UNAUTHORIZED);
    let role = api.sandbox.credentials().gg_role_name.clone();
    let wrong = api
        .post(body.clone(), Some((&role, "account-password")), "text/xml")
        .await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    let password = api.sandbox.credentials().gg_role_password.clone();
    let json = api
        .post(body, Some((&role, &password)), "application/json")
        .await;
    assert_eq!(json.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
}

#[tokio::test]
async fn a_wrong_api_key_time_or_sign_is_an_ack_code_failure() {
    let api = Gg::start(5).await;
    let wrong_key = Call {
        api_key: Some("someone-else".into()),
        ..Call::default()
    };
    api.send(&wrong_key)
        .await
        .assert_failure("ERR_INVALID_API_KEY");

    let seconds = Call {
        time: Some(Utc::now().timestamp().to_string()),
        ..Call::default()
    };
    api.send(&seconds).await.assert_failure("ERR_INVALID_TIME");
    let stale = Call {
        time: Some(
            (Utc::now() - Duration::hours(1))
                .timestamp_millis()
                .to_string(),
        ),
        ..Call::default()
    };
    api.send(&stale).await.assert_failure("ERR_INVALID_TIME");

    let time = Utc::now().timestamp_millis().to_string();
    let credentials = api.sandbox.credentials().clone();
    let right = hex::encode(Md5::digest(format!(
        "{}{}{time}",
        credentials.gg_api_key, credentials.gg_secret_key
    )));
    let upper = Call {
        time: Some(time.clone()),
        sign: Some(right.to_uppercase()),
        ..Call::default()
    };
    api.send(&upper).await.assert_failure("ERR_INVALID_SIGN");
    let unsalted = Call {
        time: Some(time.clone()),
        sign: Some(hex::encode(Md5::digest(format!(
            "{}{time}",
            credentials.gg_api_key
        )))),
        ..Call::default()
    };
    api.send(&unsalted).await.assert_failure("ERR_INVALID_SIGN");
    let signed = Call {
        time: Some(time),
        sign: Some(right),
        ..Call::default()
    };
    api.ok(&signed).await;

    let english = api
        .send(&Call {
            api_key: Some("x".into()),
            lang: "en",
            ..Call::default()
        })
        .await;
    assert!(english.first("message").unwrap().starts_with("Invalid"));
}

#[tokio::test]
async fn an_unparseable_envelope_is_a_soap_fault() {
    let api = Gg::start(5).await;
    let garbage = api.send_raw("<soapenv:Envelope><sale:get".into()).await;
    assert_eq!(garbage.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(
        garbage.xml.contains(":Fault>") && garbage.first("faultstring").is_some(),
        "{}",
        garbage.xml
    );
    assert_eq!(garbage.first("faultcode").as_deref(), Some("S:Client"));

    let soap12 = api.envelope(&Call::default()).replace(
        "http://schemas.xmlsoap.org/soap/envelope/",
        "http://www.w3.org/2003/05/soap-envelope",
    );
    let answer = api.send_raw(soap12).await;
    assert_eq!(answer.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(
        answer.first("faultcode").as_deref(),
        Some("S:VersionMismatch")
    );

    let other_operation = api
        .envelope(&Call::default())
        .replace("getSalesByDateRange", "getSales");
    let answer = api.send_raw(other_operation).await;
    assert_eq!(answer.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(answer.first("faultstring").unwrap().contains("getSales"));

    let unqualified = api
        .envelope(&Call::default())
        .replace("sale:getSalesByDateRange", "getSalesByDateRange");
    assert_eq!(
        api.send_raw(unqualified).await.status,
        StatusCode::INTERNAL_SERVER_ERROR
    );
}

#[tokio::test]
async fn bad_parameters_are_ack_code_failures() {
    let api = Gg::start(5).await;
    let bad = [
        Call {
            page_size: 0,
            ..Call::default()
        },
        Call {
            page_size: 101,
            ..Call::default()
        },
        Call {
            page_number: 0,
            ..Call::default()
        },
        Call {
            start: "2024-01-01 00:00:00".into(),
            ..Call::default()
        },
        Call {
            end: String::new(),
            ..Call::default()
        },
        Call {
            by_status: "X",
            ..Call::default()
        },
        Call {
            order_by: "Z",
            ..Call::default()
        },
        Call {
            order_type: "B",
            ..Call::default()
        },
        Call {
            with_data: "maybe",
            ..Call::default()
        },
        Call {
            start: istanbul(Utc::now()),
            end: istanbul(Utc::now() - Duration::days(1)),
            ..Call::default()
        },
    ];
    for call in &bad {
        api.send(call).await.assert_failure("ERR_INVALID_PARAMETER");
    }
}

#[tokio::test]
async fn paging_through_the_window_yields_every_sale_once_in_the_documented_shape() {
    let api = Gg::start(230).await;
    let call = Call {
        page_size: 40,
        ..Call::default()
    };
    let sales = api.all_pages(&call).await;
    let codes: Vec<String> = sales.iter().map(|s| field(s, "saleCode")).collect();
    let unique: BTreeSet<&String> = codes.iter().collect();
    assert_eq!(unique.len(), 230);
    let held: BTreeSet<String> = api
        .sandbox
        .orders(Api::Gittigidiyor)
        .into_iter()
        .map(|o| o.external_id)
        .collect();
    assert_eq!(unique.into_iter().cloned().collect::<BTreeSet<_>>(), held);
    let mut sorted = codes.clone();
    sorted.sort();
    assert_eq!(codes, sorted, "orderBy P, orderType A");

    let snapshot = api.sandbox.orders(Api::Gittigidiyor);
    for sale in &sales {
        for tag in [
            "status",
            "statusCode",
            "productId",
            "productTitle",
            "price",
            "cargoPayment",
            "cargoCode",
            "amount",
            "endDate",
            "thumbImageLink",
            "lastActionDate",
            "variantId",
            "itemId",
        ] {
            field(sale, tag);
        }
        let buyer = elements(sale, "buyerInfo").remove(0);
        for tag in [
            "username",
            "name",
            "surname",
            "phone",
            "mobilePhone",
            "address",
            "district",
            "city",
            "zipCode",
        ] {
            field(&buyer, tag);
        }
        let invoice = elements(sale, "invoiceInfo").remove(0);
        for tag in [
            "fullname",
            "address",
            "district",
            "cityCode",
            "zipCode",
            "phoneNumber",
            "tcCertificate",
        ] {
            field(&invoice, tag);
        }
        assert!(field(sale, "statusCode").starts_with("STATUS_"));
        parse_date(&field(sale, "endDate"));
        let last_action = parse_date(&field(sale, "lastActionDate"));
        assert!(last_action >= parse_date(&field(sale, "endDate")));
        let price: Decimal = field(sale, "price").parse().expect("a decimal price");
        let amount: Decimal = field(sale, "amount").parse().unwrap();
        let held = snapshot
            .iter()
            .find(|o| o.external_id == field(sale, "saleCode"))
            .unwrap();
        assert_eq!(held.total, price * amount);
        assert_eq!(held.status, field(sale, "statusCode"));
        let shipping = elements(sale, "shippingInfo").remove(0);
        if !shipping.is_empty() {
            let combined = field(&shipping, "combinedShipping");
            assert!(combined == "Y" || combined == "N");
            if combined == "Y" {
                assert!(values(&shipping, "saleCode").contains(&field(sale, "saleCode")));
                assert!(
                    field(&shipping, "shippingNotice").contains(&field(&shipping, "cargoCode"))
                );
            }
        }
    }
    assert!(
        sales
            .iter()
            .any(|s| s.contains("<combinedShipping>Y</combinedShipping>")),
        "some combined shipments"
    );
}

#[tokio::test]
async fn one_sale_and_several_sales_come_as_sale_elements_alike() {
    let api = Gg::start(50).await;
    let code = api.sandbox.add_orders(Api::Gittigidiyor, 1).remove(0);
    let sold = api.ok(&Call::default()).await;
    let sale = sold
        .sales()
        .into_iter()
        .find(|s| field(s, "saleCode") == code)
        .expect("the new sale is listed");
    let second = field(&sale, "endDate");
    // Seeded sales all sold before the sandbox started, so this second holds only added sales.
    let only = Call {
        start: second.clone(),
        end: second.clone(),
        ..Call::default()
    };
    let answer = api.ok(&only).await;
    assert_eq!(answer.first("saleCount").as_deref(), Some("1"));
    assert_eq!(answer.codes(), [code]);
    assert_eq!(answer.first("nextPageAvailable").as_deref(), Some("false"));

    let one_per_page = api
        .ok(&Call {
            page_size: 1,
            ..Call::default()
        })
        .await;
    assert_eq!(one_per_page.sales().len(), 1);
    assert_eq!(
        one_per_page.first("nextPageAvailable").as_deref(),
        Some("true")
    );

    let past = Call {
        start: "01/01/2001 00:00:00".into(),
        end: "02/01/2001 00:00:00".into(),
        ..Call::default()
    };
    let none = api.ok(&past).await;
    assert_eq!(none.first("saleCount").as_deref(), Some("0"));
    assert!(none.sales().is_empty());

    let codes_only = api
        .ok(&Call {
            with_data: "false",
            ..Call::default()
        })
        .await;
    assert_eq!(codes_only.sales().len(), 51);
    assert!(
        codes_only
            .sales()
            .iter()
            .all(|s| s.starts_with("<saleCode>") && !s.contains("<status>"))
    );
}

#[tokio::test]
async fn the_window_filters_the_sale_date_shown_as_end_date() {
    let api = Gg::start(200).await;
    let all = api.all_pages(&Call::default()).await;
    let mut dates: Vec<NaiveDateTime> = all
        .iter()
        .map(|s| parse_date(&field(s, "endDate")))
        .collect();
    dates.sort();
    let pivot = dates[120];
    let text = pivot.format(DATE).to_string();
    let before = api
        .all_pages(&Call {
            end: text.clone(),
            ..Call::default()
        })
        .await;
    let from = api
        .all_pages(&Call {
            start: text,
            ..Call::default()
        })
        .await;
    assert_eq!(before.len(), dates.iter().filter(|d| **d <= pivot).count());
    assert_eq!(from.len(), dates.iter().filter(|d| **d >= pivot).count());
    assert!(
        before
            .iter()
            .all(|s| parse_date(&field(s, "endDate")) <= pivot)
    );
}

#[tokio::test]
async fn status_and_user_filters_and_sorting() {
    let api = Gg::start(300).await;
    let all = api.all_pages(&Call::default()).await;
    let status_of = |sale: &String| field(sale, "statusCode");
    let single = [
        ("S", "STATUS_WAITING_CARGO_INFO"),
        ("C", "STATUS_WAITING_APPROVAL"),
        ("P", "STATUS_APPROVED"),
    ];
    for (letter, code) in single {
        let selected = api
            .all_pages(&Call {
                by_status: letter,
                ..Call::default()
            })
            .await;
        assert!(!selected.is_empty(), "{letter}");
        assert!(selected.iter().all(|s| status_of(s) == code), "{letter}");
        assert_eq!(
            selected.len(),
            all.iter().filter(|s| status_of(s) == code).count()
        );
    }
    let active = api
        .all_pages(&Call {
            by_status: "V",
            ..Call::default()
        })
        .await;
    let completed = api
        .all_pages(&Call {
            by_status: "O",
            ..Call::default()
        })
        .await;
    assert_eq!(active.len() + completed.len(), all.len());
    let waiting = api
        .all_pages(&Call {
            by_status: "I",
            ..Call::default()
        })
        .await;
    assert!(waiting.iter().all(|s| {
        [
            "STATUS_EARLY_CANCEL_REQUESTED",
            "STATUS_INSTANT_REFUND_AFTER_SHIPPING_WAITING_APPROVAL",
        ]
        .contains(&status_of(s).as_str())
    }));
    let returned = api
        .all_pages(&Call {
            by_status: "R",
            ..Call::default()
        })
        .await;
    assert!(!returned.is_empty());
    assert!(
        returned
            .iter()
            .all(|s| status_of(s) != "STATUS_APPROVED"
                && status_of(s) != "STATUS_WAITING_CARGO_INFO")
    );

    let buyer = field(&elements(&all[17], "buyerInfo")[0], "username");
    let bought = api
        .all_pages(&Call {
            by_user: buyer.clone(),
            ..Call::default()
        })
        .await;
    assert!(!bought.is_empty());
    assert!(
        bought
            .iter()
            .all(|s| field(&elements(s, "buyerInfo")[0], "username") == buyer)
    );

    let by_price = api
        .all_pages(&Call {
            order_by: "C",
            ..Call::default()
        })
        .await;
    let prices: Vec<Decimal> = by_price
        .iter()
        .map(|s| field(s, "price").parse().unwrap())
        .collect();
    assert!(prices.windows(2).all(|w| w[0] <= w[1]));
    let latest_first = api
        .all_pages(&Call {
            order_by: "A",
            order_type: "D",
            ..Call::default()
        })
        .await;
    let actions: Vec<NaiveDateTime> = latest_first
        .iter()
        .map(|s| parse_date(&field(s, "lastActionDate")))
        .collect();
    assert!(actions.windows(2).all(|w| w[0] >= w[1]));
}

#[tokio::test]
async fn a_changed_sale_keeps_its_window_and_moves_its_last_action_date() {
    let api = Gg::start(100).await;
    let active = api
        .all_pages(&Call {
            by_status: "V",
            ..Call::default()
        })
        .await;
    let sale = active.first().expect("an active sale");
    let code = field(sale, "saleCode");
    assert!(api.sandbox.change_order(Api::Gittigidiyor, &code));
    let again = api.all_pages(&Call::default()).await;
    let after = again
        .iter()
        .find(|s| field(s, "saleCode") == code)
        .expect("still in its window");
    assert_ne!(field(after, "statusCode"), field(sale, "statusCode"));
    assert_ne!(field(after, "status"), field(sale, "status"));
    assert_eq!(field(after, "endDate"), field(sale, "endDate"));
    let (before, moved) = (
        parse_date(&field(sale, "lastActionDate")),
        parse_date(&field(after, "lastActionDate")),
    );
    assert!(moved > before, "{before} → {moved}");
    let now = Utc::now().with_timezone(&Istanbul).naive_local();
    assert!((now - moved).num_seconds().abs() <= 5);

    let changed = api.sandbox.change_orders(Api::Gittigidiyor, 5);
    let latest = api
        .ok(&Call {
            order_by: "A",
            order_type: "D",
            page_size: 6,
            ..Call::default()
        })
        .await;
    let latest: BTreeSet<String> = latest.codes().into_iter().collect();
    assert!(
        changed.iter().all(|c| latest.contains(c)),
        "{changed:?} lead {latest:?}"
    );
}
