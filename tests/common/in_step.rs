//! "The database equals the sandbox": the comparison the poller and reliability suites share.
//!
//! For one marketplace, every order the sandbox holds is in the database once (the database's key is
//! (account, external id), so a duplicate shows up as a count that differs), none is extra, and each
//! shows the sandbox's current raw status (none stale).

use std::collections::{BTreeSet, HashMap};

use ordersync::sandbox::{Api, Sandbox};
use sqlx::PgPool;

/// Orders in the database for an account: external id → (status code, status text).
pub async fn stored(
    pool: &PgPool,
    account_id: i64,
) -> HashMap<String, (Option<String>, Option<String>)> {
    sqlx::query_as::<_, (String, Option<String>, Option<String>)>(
        "select external_id, status_code, status_text from orders where account_id = $1",
    )
    .bind(account_id)
    .fetch_all(pool)
    .await
    .expect("read stored orders")
    .into_iter()
    .map(|(id, code, text)| (id, (code, text)))
    .collect()
}

/// Whether a stored raw status is the one the sandbox shows.
pub fn same_status(api: Api, sandbox: &str, code: &Option<String>, text: &Option<String>) -> bool {
    match api {
        // allesgo has no order status: both sides list the distinct package codes.
        Api::Allesgo => {
            let set = |s: &str| {
                s.split(',')
                    .map(str::trim)
                    .map(str::to_owned)
                    .collect::<BTreeSet<_>>()
            };
            code.as_deref().is_some_and(|c| set(c) == set(sandbox))
        }
        _ => code.as_deref() == Some(sandbox) || text.as_deref() == Some(sandbox),
    }
}

/// How the database differs from the sandbox for `api`.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Difference {
    pub sandbox_orders: usize,
    pub stored_orders: usize,
    /// In the sandbox, not in the database.
    pub missing: Vec<String>,
    /// In the database, not in the sandbox.
    pub extra: Vec<String>,
    /// In both, with another status in the database: "id sandbox=… db=…".
    pub stale: Vec<String>,
}

impl Difference {
    pub fn is_empty(&self) -> bool {
        self.missing.is_empty() && self.extra.is_empty() && self.stale.is_empty()
    }
}

/// Compares the database's orders of `account_id` with the sandbox's orders of `api`.
pub async fn difference(pool: &PgPool, account_id: i64, sandbox: &Sandbox, api: Api) -> Difference {
    let mut db = stored(pool, account_id).await;
    let orders = sandbox.orders(api);
    let mut diff = Difference {
        sandbox_orders: orders.len(),
        stored_orders: db.len(),
        ..Difference::default()
    };
    for order in &orders {
        match db.remove(&order.external_id) {
            None => diff.missing.push(order.external_id.clone()),
            Some((code, text)) if !same_status(api, &order.status, &code, &text) => {
                diff.stale.push(format!(
                    "{} sandbox={} db={code:?}/{text:?}",
                    order.external_id, order.status
                ))
            }
            Some(_) => {}
        }
    }
    diff.extra = db.into_keys().collect();
    diff.extra.sort();
    diff
}

/// Asserts the database holds exactly the sandbox's orders of `api`, each with its current status.
pub async fn assert_in_step(pool: &PgPool, account_id: i64, sandbox: &Sandbox, api: Api) {
    let diff = difference(pool, account_id, sandbox, api).await;
    assert_eq!(
        diff.stored_orders, diff.sandbox_orders,
        "{api}: order count differs: {diff:?}"
    );
    assert!(diff.missing.is_empty(), "{api}: orders missing: {diff:?}");
    assert!(
        diff.stale.is_empty(),
        "{api}: stale orders: {:?}",
        diff.stale
    );
}
