//! Property tests of the Labs payload parsers: arbitrary and mutated bodies never panic, and every error
//! says what is wrong (see `marketplace::fuzz`).

use std::collections::HashMap;

use super::wire::{BodyError, STATUS_DEFAULTS, api_message, into_order, parse_list};
use crate::marketplace::StatusMap;
use crate::marketplace::fuzz::{check, inputs};

/// Every recorded fixture of labs, as seeds for mutation.
const FIXTURES: &[&str] = &[
    include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/labs/bad_date.json"
    )),
    include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/labs/error_status.json"
    )),
    include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/labs/error_validation.json"
    )),
    include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/labs/invoice_queued.json"
    )),
    include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/labs/line_without_quantity.json"
    )),
    include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/labs/no_status.json"
    )),
    include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/labs/order_deleted.json"
    )),
    include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/labs/orders_empty.json"
    )),
    include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/labs/orders_last_page.json"
    )),
    include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/labs/orders_page.json"
    )),
    include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/labs/status_backwards.json"
    )),
    include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/labs/status_updated.json"
    )),
    include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/labs/truncated.json"
    )),
];

#[test]
fn order_lists_and_error_bodies() {
    let statuses = StatusMap::new(STATUS_DEFAULTS, &HashMap::new());
    check("labs orders and error messages", inputs(FIXTURES), |body| {
        let _ = api_message(body);
        let list = parse_list(Some("application/json"), body).map_err(|e| match e {
            BodyError::Malformed(m) | BodyError::Api(m) => m,
        })?;
        let _ = list.next(1);
        for raw in list.items {
            into_order(raw, &statuses)?;
        }
        Ok(())
    });
}

/// Found by the property test: `{"message": ""}` used to become an error with an empty message.
#[test]
fn a_blank_api_message_is_not_the_error() {
    for body in [
        &br#"{"message": ""}"#[..],
        br#"{"status": "error", "message": " "}"#,
    ] {
        let error = parse_list(Some("application/json"), body).unwrap_err();
        assert!(
            matches!(&error, BodyError::Malformed(m) | BodyError::Api(m) if !m.trim().is_empty()),
            "{error:?}"
        );
    }
}
