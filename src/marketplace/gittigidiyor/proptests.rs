//! Property tests of the GittiGidiyor SOAP parsers: arbitrary and mutated XML never panics, and every
//! error says what is wrong (see `marketplace::fuzz`).

use std::collections::HashMap;

use super::wire::{ResponseError, fault_in, parse_response, sale_to_order};
use super::{DEFAULT_STATUSES, StatusMap};
use crate::marketplace::fuzz::{check, inputs};

/// Every recorded fixture of gittigidiyor, as seeds for mutation.
const FIXTURES: &[&str] = &[
    include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/gittigidiyor/ack_failure.xml"
    )),
    include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/gittigidiyor/bare_response.xml"
    )),
    include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/gittigidiyor/fault.xml"
    )),
    include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/gittigidiyor/sales_empty.xml"
    )),
    include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/gittigidiyor/sales_many.xml"
    )),
    include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/gittigidiyor/sales_one.xml"
    )),
];

#[test]
fn sales_responses_faults_and_sales() {
    let statuses = StatusMap::new(DEFAULT_STATUSES, &HashMap::new());
    check(
        "gittigidiyor SOAP responses and sales",
        inputs(FIXTURES),
        |body| {
            let _ = fault_in(body);
            let page = parse_response(body).map_err(|e| match e {
                ResponseError::Malformed(m) | ResponseError::Rejected(m) => m,
            })?;
            for sale in page.sales {
                sale_to_order(sale, &statuses)?;
            }
            Ok(())
        },
    );
}
