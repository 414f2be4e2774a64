//! Property tests of the i1 payload parsers: arbitrary and mutated bodies never panic, and every error
//! says what is wrong (see `marketplace::fuzz`).

use std::collections::HashMap;

use super::wire::{
    self, Assembled, BodyError, STATUS_DEFAULTS, WireAddress, WireItem, WireOrder, WirePlan,
    api_message, parse_list,
};
use crate::marketplace::StatusMap;
use crate::marketplace::fuzz::{check, inputs};

/// Every recorded fixture of i1, as seeds for mutation.
const FIXTURES: &[&str] = &[
    include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/i1/cancellation_plans.json"
    )),
    include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/i1/customer_addresses.json"
    )),
    include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/i1/customer_addresses_tr.json"
    )),
    include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/i1/error_detail.json"
    )),
    include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/i1/error_fields.json"
    )),
    include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/i1/not_found.json"
    )),
    include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/i1/order_bad_amount.json"
    )),
    include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/i1/order_detail.json"
    )),
    include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/i1/order_items_45243493.json"
    )),
    include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/i1/order_items_45243494.json"
    )),
    include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/i1/order_items_empty.json"
    )),
    include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/i1/orders_by_number.json"
    )),
    include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/i1/orders_last_page.json"
    )),
    include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/i1/orders_page.json"
    )),
    include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/i1/reject_packaged.json"
    )),
    include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/i1/results_not_a_list.json"
    )),
    include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/i1/truncated.json"
    )),
];

#[test]
fn lists_orders_items_addresses_and_plans() {
    let statuses = StatusMap::new(STATUS_DEFAULTS, &HashMap::new());
    check(
        "i1 lists, orders, items, addresses, plans",
        inputs(FIXTURES),
        |body| {
            let _ = api_message(body);
            let list = parse_list(Some("application/json"), body).map_err(|e| match e {
                BodyError::Malformed(m) | BodyError::Api(m) => m,
            })?;
            for raw in list.results {
                let items: Vec<(serde_json::Value, WireItem)> = wire::parse::<WireItem>(&raw)
                    .map(|item| vec![(raw.clone(), item)])
                    .unwrap_or_default();
                let address = wire::parse::<WireAddress>(&raw)
                    .ok()
                    .map(|a| (raw.clone(), a));
                let plans = wire::parse::<WirePlan>(&raw)
                    .ok()
                    .map(|_| vec![raw.clone()]);
                let order = wire::parse::<WireOrder>(&raw)?;
                let _ = order.may_have_cancellation_plans(&items);
                Assembled {
                    raw: raw.clone(),
                    order,
                    items,
                    shipping_address: address.as_ref(),
                    billing_address: address.as_ref(),
                    cancellation_plans: plans,
                }
                .into_order(&statuses);
            }
            Ok(())
        },
    );
}

/// Found by the property test: `{"detail": ""}` used to become an error with an empty message.
#[test]
fn a_blank_api_message_is_not_the_error() {
    for body in [&br#"{"detail": ""}"#[..], br#"{"status": [""]}"#] {
        let error = parse_list(Some("application/json"), body).unwrap_err();
        assert!(
            matches!(&error, BodyError::Malformed(m) | BodyError::Api(m) if !m.trim().is_empty()),
            "{error:?}"
        );
    }
}
