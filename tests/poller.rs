//! The sync engine end to end: each marketplace adapter against its sandbox API, real PostgreSQL.

mod common;

use std::collections::{BTreeSet, HashMap};

use common::{SyncEnv, fast_retries};
use ordersync::poller::{NoProgress, RunMode, StreamOutcome, StreamReport};
use ordersync::sandbox::Api;
use tokio_util::sync::CancellationToken;

/// Orders in the database for `account`: external id → (status code, status text).
async fn stored(env: &SyncEnv, api: Api) -> HashMap<String, (Option<String>, Option<String>)> {
    let account_id = env.accounts[api.name()];
    sqlx::query_as::<_, (String, Option<String>, Option<String>)>(
        "select external_id, status_code, status_text from orders where account_id = $1",
    )
    .bind(account_id)
    .fetch_all(&env.db.pool)
    .await
    .unwrap()
    .into_iter()
    .map(|(id, code, text)| (id, (code, text)))
    .collect()
}

/// Whether a stored raw status is the one the sandbox shows.
fn same_status(api: Api, sandbox: &str, code: &Option<String>, text: &Option<String>) -> bool {
    match api {
        // allesgo has no order status: both sides list the distinct package codes.
        Api::Allesgo => {
            let set = |s: &str| s.split(',').map(str::trim).map(str::to_owned).collect::<BTreeSet<_>>();
            code.as_deref().is_some_and(|c| set(c) == set(sandbox))
        }
        _ => code.as_deref() == Some(sandbox) || text.as_deref() == Some(sandbox),
    }
}

/// Asserts the database holds exactly the sandbox's orders of `api`, each with its current status.
async fn assert_in_step(env: &SyncEnv, api: Api) {
    let db = stored(env, api).await;
    let sandbox = env.sandbox.orders(api);
    assert_eq!(db.len(), sandbox.len(), "{api}: order count differs");
    let mut stale = Vec::new();
    for order in &sandbox {
        match db.get(&order.external_id) {
            None => panic!("{api}: order {} missing", order.external_id),
            Some((code, text)) if !same_status(api, &order.status, code, text) => {
                stale.push(format!("{} sandbox={} db={code:?}/{text:?}", order.external_id, order.status))
            }
            Some(_) => {}
        }
    }
    assert!(stale.is_empty(), "{api}: stale orders: {stale:?}");
}

fn assert_succeeded(api: Api, reports: &[StreamReport]) {
    assert!(!reports.is_empty());
    for r in reports {
        assert!(
            matches!(r.outcome, StreamOutcome::Succeeded),
            "{api} stream {}: {:?}",
            r.stream,
            r.outcome
        );
    }
}

async fn full_then_incremental(api: Api, orders: usize, changes: usize) {
    let mut env = SyncEnv::start(orders).await;
    let account = env.account(api);
    let poller = env.poller(&account, "replica-a", fast_retries()).await;
    let token = CancellationToken::new();

    let reports = poller.poll(RunMode::Live, &token, &NoProgress).await;
    assert_succeeded(api, &reports);
    assert_in_step(&env, api).await;
    let lines: i64 = sqlx::query_scalar("select count(*) from order_lines")
        .fetch_one(&env.db.pool)
        .await
        .unwrap();
    assert!(lines >= orders as i64, "{api}: every order comes with its lines ({lines})");

    // A second run with nothing changed rewrites nothing.
    env.sandbox.clear_audit();
    let reports = poller.poll(RunMode::Live, &token, &NoProgress).await;
    assert_succeeded(api, &reports);
    let written: u32 = reports.iter().map(|r| r.totals.counts.inserted + r.totals.counts.updated).sum();
    assert_eq!(written, 0, "{api}: an unchanged run wrote orders");
    let quiet_requests = env.sandbox.audit().len();

    // K changes and a few new orders are picked up, and only they are written.
    let changed = env.sandbox.change_orders(api, changes);
    let added = env.sandbox.add_orders(api, 3);
    env.sandbox.clear_audit();
    let reports = poller.poll(RunMode::Live, &token, &NoProgress).await;
    assert_succeeded(api, &reports);
    let requests = env.sandbox.audit().len();
    let updated: u32 = reports.iter().map(|r| r.totals.counts.updated).sum();
    let inserted: u32 = reports.iter().map(|r| r.totals.counts.inserted).sum();
    println!(
        "{api}: {orders} orders; quiet run {quiet_requests} requests; after {} changes and {} new: {requests} requests, {updated} updated, {inserted} inserted",
        changed.len(),
        added.len()
    );
    assert_eq!(inserted as usize, added.len(), "{api}: new orders");
    assert_eq!(updated as usize, changed.len(), "{api}: changed orders");
    assert_in_step(&env, api).await;
}

macro_rules! marketplace_tests {
    ($($name:ident => $api:expr),* $(,)?) => {
        $(
            mod $name {
                use super::*;

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn full_sync_then_incremental() {
                    full_then_incremental($api, 300, 7).await;
                }
            }
        )*
    };
}

marketplace_tests! {
    i1 => Api::I1,
    labs => Api::Labs,
    allesgo => Api::Allesgo,
    c2c => Api::C2c,
    gittigidiyor => Api::Gittigidiyor,
}
