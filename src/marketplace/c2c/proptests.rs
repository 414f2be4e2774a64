//! Property tests of the C2C payload parsers: arbitrary and mutated bodies never panic, and every error
//! says what is wrong (see `marketplace::fuzz`).

use std::collections::HashMap;

use super::Statuses;
use super::wire::{Problem, api_message, parse_orders};
use crate::http::Redactor;
use crate::marketplace::fuzz::{check, inputs};

/// Every recorded fixture of c2c, as seeds for mutation.
const FIXTURES: &[&str] = &[
    include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/c2c/bad_date.json"
    )),
    include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/c2c/empty.json"
    )),
    include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/c2c/error_dotnet.json"
    )),
    include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/c2c/error_hata.json"
    )),
    include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/c2c/error_unknown_shape.json"
    )),
    include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/c2c/order_info.json"
    )),
    include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/c2c/orders_date.json"
    )),
    include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/c2c/truncated.json"
    )),
    include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/c2c/unknown_status.json"
    )),
    include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/c2c/update_bool.json"
    )),
    include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/c2c/update_failed.json"
    )),
    include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/c2c/update_ok.json"
    )),
    include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/c2c/update_unclear.json"
    )),
];

#[test]
fn order_lists_and_error_bodies() {
    let statuses = Statuses::new(&HashMap::new());
    let redactor = Redactor::new(vec!["key-secret".into(), "password-secret".into()]);
    check("c2c orders and error messages", inputs(FIXTURES), |body| {
        let _ = api_message(body);
        parse_orders(body, &statuses, &redactor)
            .map(drop)
            .map_err(|problem| match problem {
                Problem::Malformed(m) | Problem::Rejected(m) => m,
            })
    });
}
