//! Property tests of the allesgo payload parsers: arbitrary and mutated bodies never panic, and every
//! error says what is wrong (see `marketplace::fuzz`).

use std::collections::HashMap;

use super::state::Statuses;
use super::wire::{Problem, action_result, api_message, parse_orders, parse_status_codes};
use crate::http::Redactor;
use crate::marketplace::fuzz::{check, inputs};

/// Every recorded fixture of allesgo, as seeds for mutation.
const FIXTURES: &[&str] = &[
    include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/allesgo/action_accepted.json"
    )),
    include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/allesgo/action_cancel_refused.json"
    )),
    include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/allesgo/action_cancelled.json"
    )),
    include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/allesgo/action_failed.json"
    )),
    include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/allesgo/action_no_data.json"
    )),
    include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/allesgo/action_shipped.json"
    )),
    include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/allesgo/error_message.json"
    )),
    include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/allesgo/error_plain.json"
    )),
    include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/allesgo/html.html"
    )),
    include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/allesgo/orders_empty.json"
    )),
    include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/allesgo/orders_many.json"
    )),
    include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/allesgo/orders_single.json"
    )),
    include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/allesgo/status_codes.json"
    )),
    include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/allesgo/truncated.json"
    )),
    include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/allesgo/wrong_types.json"
    )),
];

fn message(problem: Problem) -> String {
    match problem {
        Problem::Malformed(m) | Problem::Rejected(m) => m,
    }
}

#[test]
fn order_lists() {
    let statuses = Statuses::new(&HashMap::new());
    let redactor = Redactor::new(vec!["tok-secret-1234".into()]);
    check("allesgo orders", inputs(FIXTURES), |body| {
        parse_orders(body, &statuses, &redactor)
            .map(drop)
            .map_err(message)
    });
}

#[test]
fn status_codes_actions_and_error_bodies() {
    check(
        "allesgo status codes, action results, error messages",
        inputs(FIXTURES),
        |body| {
            let _ = api_message(body);
            action_result(body).map_err(message)?;
            parse_status_codes(body).map(drop).map_err(message)
        },
    );
}

/// Found by the property test: `{"data": {"success": false, "message": ""}}` used to be refused with an
/// empty message.
#[test]
fn a_blank_api_message_is_not_the_error() {
    for body in [
        &br#"{"data": {"success": false, "message": ""}}"#[..],
        br#"{"error": "", "message": " "}"#,
    ] {
        let error = action_result(body).unwrap_err();
        assert!(!message(error).trim().is_empty());
    }
}
