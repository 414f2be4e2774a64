//! The sync engine end to end: each marketplace adapter against its sandbox API, real PostgreSQL.

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, SubsecRound, Utc};
use common::{SyncEnv, fast_retries};
use ordersync::domain::{MarketplaceKind, Order, OrderState, RawStatus};
use ordersync::marketplace::{
    Marketplace, MarketplaceError, Page, PageRequest, StreamPlan, StreamSpec,
};
use ordersync::poller::{
    AccountPoller, FETCH_AHEAD, NoProgress, RunMode, StreamOutcome, StreamReport,
};
use ordersync::sandbox::Api;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// Orders in the database for the account of `api`: external id → (status code, status text).
async fn stored(env: &SyncEnv, api: Api) -> HashMap<String, (Option<String>, Option<String>)> {
    common::in_step::stored(&env.db.pool, env.accounts[api.name()]).await
}

/// Asserts the database holds exactly the sandbox's orders of `api`, each with its current status.
async fn assert_in_step(env: &SyncEnv, api: Api) {
    common::in_step::assert_in_step(&env.db.pool, env.accounts[api.name()], &env.sandbox, api).await
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

/// 10,000 orders per marketplace, as the acceptance asks; `ORDERSYNC_TEST_ORDERS` lowers it for quick runs.
fn orders_for_full_sync() -> usize {
    std::env::var("ORDERSYNC_TEST_ORDERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000)
}

async fn full_then_incremental(api: Api, orders: usize, changes: usize) {
    let mut env = SyncEnv::start(orders).await;
    let account = env.account(api);
    let poller = env.poller(&account, "replica-a", fast_retries()).await;
    let token = CancellationToken::new();

    env.sandbox.clear_audit();
    let reports = poller.poll(RunMode::Live, &token, &NoProgress).await;
    assert_succeeded(api, &reports);
    assert_in_step(&env, api).await;
    if api == Api::Allesgo {
        // The backfill is the `new` stream's: the `updates` stream's first run asks only for the changes
        // since the account was registered, not for every order of the backfill in one answer.
        let updates: Vec<String> = env
            .sandbox
            .audit()
            .into_iter()
            .filter_map(|entry| entry.query)
            .filter(|query| query.contains("updates_only=1"))
            .collect();
        assert_eq!(updates.len(), 1, "{updates:?}");
        assert!(updates[0].contains("days=2"), "{updates:?}");
    }
    // C2C re-reads its open orders by code for their status; those the backfill has just stored are
    // not asked for again in the same poll.
    let reread_by_code = |env: &SyncEnv| -> usize {
        env.sandbox
            .audit()
            .into_iter()
            .filter(|entry| entry.path.ends_with("GetOrderInfoByOrdersCode"))
            .map(|entry| {
                let body: serde_json::Value =
                    serde_json::from_str(entry.body.as_deref().unwrap_or("{}")).unwrap();
                body["SiparisKodlari"].as_array().map_or(0, Vec::len)
            })
            .sum()
    };
    if api == Api::C2c {
        assert_eq!(
            reread_by_code(&env),
            0,
            "{api}: the backfill re-read its own orders"
        );
    }
    let lines: i64 = sqlx::query_scalar("select count(*) from order_lines")
        .fetch_one(&env.db.pool)
        .await
        .unwrap();
    assert!(
        lines >= orders as i64,
        "{api}: every order comes with its lines ({lines})"
    );

    // A second run with nothing changed rewrites nothing.
    env.sandbox.clear_audit();
    let reports = poller.poll(RunMode::Live, &token, &NoProgress).await;
    assert_succeeded(api, &reports);
    let written: u32 = reports
        .iter()
        .map(|r| r.totals.counts.inserted + r.totals.counts.updated)
        .sum();
    assert_eq!(written, 0, "{api}: an unchanged run wrote orders");
    let quiet_requests = env.sandbox.audit().len();
    if api == Api::C2c {
        let open: i64 = sqlx::query_scalar(
            "select count(*) from orders \
             where state not in ('completed', 'cancelled', 'rejected', 'returned')",
        )
        .fetch_one(&env.db.pool)
        .await
        .unwrap();
        assert!(open > 0, "{api}: the sandbox holds open orders");
        assert_eq!(
            reread_by_code(&env) as i64,
            open,
            "{api}: the next poll re-reads every open order"
        );
    }
    // Where the API can say what changed, a quiet run costs one request per stream: allesgo's two
    // streams, GittiGidiyor's newest-first page that reaches past the cursor.
    if let Some(most) = match api {
        Api::Allesgo => Some(2),
        Api::Gittigidiyor => Some(1),
        _ => None,
    } {
        assert!(
            quiet_requests <= most,
            "{api}: a quiet run made {quiet_requests} requests, more than {most}"
        );
    }

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

/// Cursor values by stream for the account of `api`.
async fn cursors(env: &SyncEnv, api: Api) -> HashMap<String, chrono::DateTime<chrono::Utc>> {
    sqlx::query_as::<_, (String, chrono::DateTime<chrono::Utc>)>(
        "select stream, value from sync_cursors where account_id = $1",
    )
    .bind(env.accounts[api.name()])
    .fetch_all(&env.db.pool)
    .await
    .unwrap()
    .into_iter()
    .collect()
}

async fn changes_while_paging(api: Api) {
    let mut env = SyncEnv::start(300).await;
    let mut account = env.account(api);
    account.page_size = 20;
    let poller = env.poller(&account, "replica-a", fast_retries()).await;
    let token = CancellationToken::new();
    env.sandbox.change_while_paging(api, 2, 10);
    let first = poller.poll(RunMode::Live, &token, &NoProgress).await;
    assert_succeeded(api, &first);
    // Whatever changed behind the first run's back is found by the next one.
    let second = poller.poll(RunMode::Live, &token, &NoProgress).await;
    assert_succeeded(api, &second);
    assert_in_step(&env, api).await;
}

async fn killed_mid_run(api: Api) {
    let mut env = SyncEnv::start(400).await;
    let mut account = env.account(api);
    account.page_size = 20;
    let settings = ordersync::poller::PollSettings {
        lease_ttl: std::time::Duration::from_secs(60),
        ..fast_retries()
    };
    let first = std::sync::Arc::new(env.poller(&account, "replica-a", settings.clone()).await);
    env.sandbox.set_faults(
        api,
        ordersync::sandbox::faults::FaultPlan {
            slow_rate: 1.0,
            slow_delay: std::time::Duration::from_millis(30),
            ..Default::default()
        },
    );
    let running = {
        let first = first.clone();
        tokio::spawn(async move {
            first
                .poll(RunMode::Live, &CancellationToken::new(), &NoProgress)
                .await
        })
    };
    // Kill the run once some pages are committed.
    let started = std::time::Instant::now();
    loop {
        let n: i64 = sqlx::query_scalar("select count(*) from orders")
            .fetch_one(&env.db.pool)
            .await
            .unwrap();
        if n > 0 || running.is_finished() {
            break;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(60),
            "{api}: no page committed"
        );
        tokio::task::yield_now().await;
    }
    running.abort();
    let _ = running.await;
    env.sandbox.set_faults(api, Default::default());
    // The cursor never runs ahead of the data: every order the sandbox changed before the cursor is stored.
    let stored_ids = stored(&env, api).await;
    for (stream, cursor) in cursors(&env, api).await {
        assert!(
            cursor <= chrono::Utc::now(),
            "{api} {stream}: cursor in the future"
        );
    }
    assert!(stored_ids.len() <= 400);
    // The dead replica's lease expires; a new replica takes over and completes with nothing missing.
    sqlx::query("update sync_leases set expires_at = now() - interval '1 second'")
        .execute(&env.db.pool)
        .await
        .unwrap();
    let second = env.poller(&account, "replica-b", settings).await;
    let reports = second
        .poll(RunMode::Live, &CancellationToken::new(), &NoProgress)
        .await;
    assert_succeeded(api, &reports);
    assert_in_step(&env, api).await;
}

async fn transient_failures_are_retried(api: Api) {
    use ordersync::sandbox::faults::{Fault, FaultPlan};
    let mut env = SyncEnv::start(100).await;
    let account = env.account(api);
    let poller = env.poller(&account, "replica-a", fast_retries()).await;
    env.sandbox.set_faults(
        api,
        FaultPlan {
            script: [
                Fault::ServerError,
                Fault::RateLimited {
                    retry_after_secs: 1,
                },
                Fault::ServerError,
            ]
            .into(),
            ..Default::default()
        },
    );
    let started = std::time::Instant::now();
    let reports = poller
        .poll(RunMode::Live, &CancellationToken::new(), &NoProgress)
        .await;
    assert_succeeded(api, &reports);
    assert!(
        started.elapsed() >= std::time::Duration::from_secs(1),
        "{api}: Retry-After was not honoured"
    );
    let faults = env
        .sandbox
        .audit()
        .iter()
        .filter(|e| e.fault.is_some())
        .count();
    assert_eq!(faults, 3, "{api}: the scripted faults were served");
    assert_in_step(&env, api).await;
}

async fn malformed_page_fails_cleanly(api: Api) {
    use ordersync::sandbox::faults::{Fault, FaultPlan};
    let mut env = SyncEnv::start(100).await;
    let account = env.account(api);
    let poller = env.poller(&account, "replica-a", fast_retries()).await;
    let token = CancellationToken::new();
    assert_succeeded(api, &poller.poll(RunMode::Live, &token, &NoProgress).await);
    let before = cursors(&env, api).await;
    env.sandbox.change_orders(api, 5);
    env.sandbox.set_faults(
        api,
        FaultPlan {
            script: [Fault::Malformed].into(),
            ..Default::default()
        },
    );
    let reports = poller.poll(RunMode::Live, &token, &NoProgress).await;
    let failed: Vec<&StreamReport> = reports
        .iter()
        .filter(|r| matches!(r.outcome, StreamOutcome::Failed(_)))
        .collect();
    assert_eq!(failed.len(), 1, "{api}: {reports:?}");
    let StreamOutcome::Failed(error) = &failed[0].outcome else {
        unreachable!()
    };
    let message = error.to_string();
    assert!(
        message.contains(api.name()) && message.contains("malformed"),
        "{api}: {message}"
    );
    let after = cursors(&env, api).await;
    assert_eq!(
        after.get(failed[0].stream),
        before.get(failed[0].stream),
        "{api}: cursor moved"
    );
    let (request, raw_body): (String, String) =
        sqlx::query_as("select request, raw_body from payload_errors")
            .fetch_one(&env.db.pool)
            .await
            .unwrap();
    assert!(!request.is_empty() && !raw_body.is_empty());
    let (outcome, error): (String, Option<String>) = sqlx::query_as(
        "select outcome, error from sync_runs where outcome <> 'succeeded' order by id desc limit 1",
    )
    .fetch_one(&env.db.pool)
    .await
    .unwrap();
    assert_eq!(outcome, "failed");
    assert!(error.unwrap_or_default().contains("malformed"));
}

async fn two_engines_never_poll_a_stream_together(api: Api) {
    let mut env = SyncEnv::start(200).await;
    let mut account = env.account(api);
    account.page_size = 20;
    let a = env.poller(&account, "replica-a", fast_retries()).await;
    let b = env.poller(&account, "replica-b", fast_retries()).await;
    env.sandbox.set_faults(
        api,
        ordersync::sandbox::faults::FaultPlan {
            slow_rate: 1.0,
            slow_delay: std::time::Duration::from_millis(40),
            ..Default::default()
        },
    );
    let token = CancellationToken::new();
    let (ra, rb) = tokio::join!(
        a.poll(RunMode::Live, &token, &NoProgress),
        b.poll(RunMode::Live, &token, &NoProgress)
    );
    // Both started on the first stream at once: exactly one of them polled it.
    let first = [&ra[0].outcome, &rb[0].outcome];
    assert_eq!(
        first
            .iter()
            .filter(|o| matches!(o, StreamOutcome::Busy))
            .count(),
        1,
        "{api}: {first:?}"
    );
    // And no stream was ever polled by both at the same time.
    let runs: Vec<(
        String,
        chrono::DateTime<chrono::Utc>,
        chrono::DateTime<chrono::Utc>,
    )> = sqlx::query_as(
        "select stream, started_at, finished_at from sync_runs order by stream, started_at",
    )
    .fetch_all(&env.db.pool)
    .await
    .unwrap();
    for pair in runs.windows(2) {
        if pair[0].0 == pair[1].0 {
            assert!(
                pair[1].1 >= pair[0].2,
                "{api}: runs of stream {} overlap: {pair:?}",
                pair[0].0
            );
        }
    }
    assert!(runs.iter().all(|r| r.2 >= r.1));
    assert_in_step(&env, api).await;
}

macro_rules! marketplace_tests {
    ($($name:ident => $api:expr),* $(,)?) => {
        $(
            mod $name {
                use super::*;

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn full_sync_then_incremental() {
                    full_then_incremental($api, orders_for_full_sync(), 7).await;
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn changes_while_paging_are_picked_up() {
                    changes_while_paging($api).await;
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn a_killed_run_loses_nothing() {
                    killed_mid_run($api).await;
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn transient_failures_are_retried_honouring_retry_after() {
                    transient_failures_are_retried($api).await;
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn a_malformed_page_fails_the_run_and_keeps_the_cursor() {
                    malformed_page_fails_cleanly($api).await;
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn two_engines_do_not_poll_the_same_stream() {
                    two_engines_never_poll_a_stream_together($api).await;
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

/// An allesgo account of 3,000 orders after its first run. No overlap: the `new` stream's next run
/// reads only orders placed since, so every change is written by the `updates` stream.
async fn allesgo_synced_without_overlap(
    timeout: std::time::Duration,
) -> (SyncEnv, AccountPoller, CancellationToken) {
    let mut env = SyncEnv::start(3_000).await;
    let mut account = env.account(Api::Allesgo);
    account.overlap = std::time::Duration::ZERO;
    account.timeout = timeout;
    let poller = env.poller(&account, "replica-a", fast_retries()).await;
    let token = CancellationToken::new();
    let reports = poller.poll(RunMode::Live, &token, &NoProgress).await;
    assert_succeeded(Api::Allesgo, &reports);
    (env, poller, token)
}

/// allesgo has no pagination: a window whose answer holds more orders than `page_size` halves the next
/// one. The answer is read in batches of 500, and every batch counts, not only the first: with a
/// `page_size` of 500, a window of 600 orders is too large.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_allesgo_window_answering_more_orders_than_the_page_size_halves_the_next() {
    let api = Api::Allesgo;
    let mut env = SyncEnv::start(200).await;
    // A busy moment in the middle of the backfill, and of a day's window (the backfill's windows start
    // ten days back, a day long at most).
    let busy = (Utc::now() - chrono::TimeDelta::hours(5 * 24 + 12)).timestamp();
    let placed = env
        .sandbox
        .add_orders_at(api, 600, DateTime::from_timestamp(busy, 0).unwrap());
    assert_eq!(placed.len(), 600);
    let mut account = env.account(api);
    account.page_size = 500;
    account.initial_sync_days = 10;
    let poller = env.poller(&account, "replica-a", fast_retries()).await;
    env.sandbox.clear_audit();
    let reports = poller
        .poll(RunMode::Live, &CancellationToken::new(), &NoProgress)
        .await;
    assert_succeeded(api, &reports);
    let stored: i64 = sqlx::query_scalar(
        "select count(*) from orders where account_id = $1 and external_id = any($2)",
    )
    .bind(env.accounts[api.name()])
    .bind(&placed)
    .fetch_one(&env.db.pool)
    .await
    .unwrap();
    assert_eq!(stored, 600, "every order of the busy moment is stored");

    // The `new` stream's windows, as asked.
    let windows: Vec<(i64, i64)> = env
        .sandbox
        .audit()
        .into_iter()
        .filter_map(|entry| {
            let query = entry.query?;
            let param = |name: &str| {
                query
                    .split('&')
                    .find_map(|pair| pair.strip_prefix(name)?.strip_prefix('='))
                    .and_then(|value| value.parse::<i64>().ok())
            };
            Some((param("start_date")?, param("end_date")?))
        })
        .collect();
    let at = windows
        .iter()
        .position(|&(from, to)| from <= busy && busy < to)
        .unwrap_or_else(|| panic!("no window holds the busy moment: {windows:?}"));
    // A window is asked a little wider than planned: its start overlaps the window before by seconds.
    let day = 86_400..86_400 + 60;
    assert!(
        day.contains(&(windows[at].1 - windows[at].0)),
        "the window of the busy moment is a day long: {windows:?}"
    );
    let (from, to) = windows[at + 1];
    assert!(
        (43_200..43_200 + 60).contains(&(to - from)),
        "the window after 600 orders in one answer is half a day: {windows:?}"
    );
}

/// allesgo answers its `updates` stream in one unpaginated page: it is read as it arrives and written
/// in batches of 500 orders, each in its own transaction, and the cursor moves only with the last.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_unpaginated_answer_is_written_in_batches_as_it_arrives_with_the_cursor_last() {
    let api = Api::Allesgo;
    let (env, poller, token) = allesgo_synced_without_overlap(common_timeout()).await;

    // Every open order moves on (about 40 % of them).
    let changed = env.sandbox.change_orders(api, 3_000);
    env.sandbox.clear_audit();
    let reports = poller.poll(RunMode::Live, &token, &NoProgress).await;
    assert_succeeded(api, &reports);
    let updates: Vec<_> = env
        .sandbox
        .audit()
        .into_iter()
        .filter(|entry| {
            entry
                .query
                .as_deref()
                .is_some_and(|q| q.contains("updates_only=1"))
        })
        .collect();
    assert_eq!(updates.len(), 1, "the changes came in one answer");
    let answered = reports
        .iter()
        .find(|r| r.stream == "updates")
        .expect("an updates run")
        .totals
        .counts
        .seen as usize;
    assert!(
        answered > 1_000,
        "{answered} orders: too few for several batches"
    );
    assert_in_step(&env, api).await;

    // The transactions that wrote the changed orders, and the one that moved the `updates` cursor.
    let parts: Vec<(i64, i64)> = sqlx::query_as(
        "select xmin::text::bigint, count(*) from orders
         where account_id = $1 and external_id = any($2)
         group by 1 order by 1",
    )
    .bind(env.accounts[api.name()])
    .bind(&changed)
    .fetch_all(&env.db.pool)
    .await
    .unwrap();
    assert_eq!(
        parts.len(),
        answered.div_ceil(500),
        "{answered} orders in batches of 500: {parts:?}"
    );
    assert!(parts.iter().all(|(_, orders)| *orders <= 500), "{parts:?}");
    let cursor_written_by: i64 = sqlx::query_scalar(
        "select xmin::text::bigint from sync_cursors where account_id = $1 and stream = 'updates'",
    )
    .bind(env.accounts[api.name()])
    .fetch_one(&env.db.pool)
    .await
    .unwrap();
    // With the last batch, or after it in an empty one when the count fills the batches exactly.
    let last_part = parts.last().map(|(xid, _)| *xid).unwrap();
    assert!(
        cursor_written_by == last_part
            || (answered.is_multiple_of(500) && cursor_written_by > last_part),
        "the cursor moved in transaction {cursor_written_by}, the last batch in {last_part}"
    );
}

/// The account timeout of the tests that keep the default.
fn common_timeout() -> std::time::Duration {
    std::time::Duration::from_secs(5)
}

/// An unpaginated answer whose writes take longer than the account's timeout is still read to its
/// end: the timeout bounds each wait for the API, not the pauses the reader makes for the writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unpaginated_answer_written_slower_than_the_timeout_is_read_to_its_end() {
    let api = Api::Allesgo;
    let (env, poller, token) =
        allesgo_synced_without_overlap(std::time::Duration::from_secs(2)).await;
    for statement in [
        "create function slow_write() returns trigger language plpgsql as
            $$ begin perform pg_sleep(1); return null; end $$",
        "create trigger slow_write before insert on orders
            for each statement execute function slow_write()",
    ] {
        sqlx::query(statement).execute(&env.db.pool).await.unwrap();
    }
    env.sandbox.change_orders(api, 3_000);
    let reports = poller.poll(RunMode::Live, &token, &NoProgress).await;
    assert_succeeded(api, &reports);
    let updates = reports
        .iter()
        .find(|r| r.stream == "updates")
        .expect("an updates run");
    assert!(
        updates.totals.counts.seen > 1_000,
        "{:?}: too few orders for three slow batches",
        updates.totals.counts
    );
    assert_in_step(&env, api).await;
}

/// An unpaginated answer that breaks off midway: the batches read before the break are written, the
/// end of what arrived is recorded, the cursor stays, and the next run catches up with everything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unpaginated_answer_cut_midway_keeps_the_cursor_and_records_its_end() {
    use ordersync::sandbox::faults::{Fault, FaultPlan};
    let api = Api::Allesgo;
    let (env, poller, token) = allesgo_synced_without_overlap(common_timeout()).await;
    let before = cursors(&env, api).await;

    env.sandbox.change_orders(api, 3_000);
    // The `new` stream's one request is answered normally, the `updates` answer is cut in half.
    env.sandbox.set_faults(
        api,
        FaultPlan::scripted([Fault::Slow(std::time::Duration::ZERO), Fault::Truncated]),
    );
    let reports = poller.poll(RunMode::Live, &token, &NoProgress).await;
    let updates = reports
        .iter()
        .find(|r| r.stream == "updates")
        .expect("an updates run");
    let StreamOutcome::Failed(error) = &updates.outcome else {
        panic!("{reports:?}");
    };
    assert!(error.to_string().contains("malformed"), "{error}");
    assert!(
        updates.totals.counts.seen >= 500 && updates.totals.counts.updated > 0,
        "the first batch is written before the break: {:?}",
        updates.totals.counts
    );
    assert_eq!(
        cursors(&env, api).await.get("updates"),
        before.get("updates"),
        "the cursor moved"
    );
    let (request, error, raw_body): (String, String, String) =
        sqlx::query_as("select request, error, raw_body from payload_errors")
            .fetch_one(&env.db.pool)
            .await
            .unwrap();
    assert!(request.contains("updates_only=1"), "{request}");
    assert!(error.contains("bytes received are recorded"), "{error}");
    assert!(
        !raw_body.is_empty() && raw_body.len() <= 64 * 1024 + 8,
        "{} bytes recorded",
        raw_body.len()
    );
    assert!(!raw_body.contains("sandbox-allesgo-token"));

    assert_succeeded(api, &poller.poll(RunMode::Live, &token, &NoProgress).await);
    assert_in_step(&env, api).await;
}

/// A request window `[from, to)`.
type Window = (DateTime<Utc>, DateTime<Utc>);

/// A marketplace of one stream in three one-day windows (of a three-day backfill) whose pages the test
/// scripts: the first window's only page is held back until every other page has been served (and a
/// little longer), so those are all fetched and waiting when its turn to be written comes.
struct Scripted {
    /// Pages (or failures) by window, oldest first, then by page.
    pages: Vec<Vec<Result<Vec<Order>, String>>>,
    /// Each window's `[from, to)`, as the poller asked for it.
    windows: Mutex<BTreeMap<usize, Window>>,
    served: AtomicUsize,
    others_served: Notify,
}

impl Scripted {
    fn new(pages: Vec<Vec<Result<Vec<Order>, String>>>) -> Scripted {
        Scripted {
            pages,
            windows: Mutex::new(BTreeMap::new()),
            served: AtomicUsize::new(0),
            others_served: Notify::new(),
        }
    }

    /// A window as the database stores its bounds (to the microsecond).
    fn window(&self, lane: usize) -> Window {
        let (from, to) = self.windows.lock().unwrap()[&lane];
        (from.trunc_subsecs(6), to.trunc_subsecs(6))
    }
}

#[async_trait::async_trait]
impl Marketplace for Scripted {
    fn streams(&self) -> Vec<StreamSpec> {
        orders_stream(Some(std::time::Duration::from_secs(24 * 60 * 60)))
    }

    async fn fetch_page(
        &self,
        _stream: &str,
        request: &PageRequest,
    ) -> Result<Page, MarketplaceError> {
        // The backfill starts three days before the run, a moment ago.
        let lane = 3 - (Utc::now() - request.from).num_hours() as usize / 24;
        self.windows
            .lock()
            .unwrap()
            .insert(lane, (request.from, request.to));
        let index = request.page.as_deref().map_or(0, |p| p.parse().unwrap());
        if (lane, index) == (0, 0) {
            self.others_served.notified().await;
            // And slow: the poller has taken the other answers in by the time this one arrives.
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        } else {
            let others = self.pages.iter().map(Vec::len).sum::<usize>() - 1;
            if self.served.fetch_add(1, Ordering::SeqCst) + 1 == others {
                self.others_served.notify_one();
            }
        }
        let next = (index + 1 < self.pages[lane].len()).then(|| (index + 1).to_string());
        match &self.pages[lane][index] {
            Ok(orders) => Ok(Page {
                orders: orders.clone(),
                next,
                requests: 1,
                more: None,
            }),
            Err(message) => Err(MarketplaceError::Rejected {
                what: format!("window {lane} page {index}"),
                status: Some(400),
                message: message.clone(),
            }),
        }
    }
}

/// The one stream of a test marketplace: windows of at most `max_window` (`None`: one window).
fn orders_stream(max_window: Option<std::time::Duration>) -> Vec<StreamSpec> {
    vec![StreamSpec {
        name: "orders",
        plan: StreamPlan::Windows {
            max_window,
            adaptive: false,
            reread_open: false,
            changes_only: false,
        },
    }]
}

/// A poller of a test marketplace for an account in `db` that backfills `initial_sync_days`.
async fn test_marketplace_poller(
    pool: &sqlx::PgPool,
    marketplace: Arc<dyn Marketplace>,
    initial_sync_days: u32,
) -> AccountPoller {
    let mut account = common::account(
        "scripted",
        MarketplaceKind::Labs,
        "http://127.0.0.1:1/api/labs/",
    );
    account.initial_sync_days = initial_sync_days;
    let ids = ordersync::store::accounts::sync_with_config(pool, std::slice::from_ref(&account))
        .await
        .unwrap();
    AccountPoller::new(
        pool.clone(),
        ids["scripted"],
        account,
        marketplace,
        "replica-a".to_owned(),
        fast_retries(),
    )
}

fn scripted_order(id: &str, status: &str) -> Order {
    Order {
        external_id: id.to_owned(),
        order_number: None,
        state: OrderState::Approved,
        status: RawStatus {
            code: Some(status.to_owned()),
            text: None,
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
        raw: serde_json::json!({ "id": id, "status": status }).into(),
    }
}

fn scripted_orders(ids: &[&str]) -> Result<Vec<Order>, String> {
    Ok(ids.iter().map(|id| scripted_order(id, "1")).collect())
}

/// A fresh database with the `Scripted` marketplace's account, and a log of the cursor's moves: each
/// value with the transaction that wrote it.
async fn scripted_run(marketplace: Arc<Scripted>) -> (common::TestDb, Vec<StreamReport>) {
    let db = common::test_db().await;
    for statement in [
        "create table cursor_moves (value timestamptz not null,
            xid bigint not null default pg_current_xact_id()::text::bigint)",
        "create function log_cursor_move() returns trigger language plpgsql as
            $$ begin insert into cursor_moves (value) values (new.value); return new; end $$",
        "create trigger log_cursor_move after insert or update on sync_cursors
            for each row execute function log_cursor_move()",
    ] {
        sqlx::query(statement).execute(&db.pool).await.unwrap();
    }
    let poller = test_marketplace_poller(&db.pool, marketplace, 3).await;
    let reports = poller
        .poll(RunMode::Live, &CancellationToken::new(), &NoProgress)
        .await;
    (db, reports)
}

/// Stored orders: external id → (status code, first window, the transaction that wrote them).
async fn scripted_stored(
    db: &common::TestDb,
) -> HashMap<String, (Option<String>, Option<DateTime<Utc>>, i64)> {
    sqlx::query_as::<_, (String, Option<String>, Option<DateTime<Utc>>, i64)>(
        "select external_id, status_code, first_window_from, xmin::text::bigint from orders",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap()
    .into_iter()
    .map(|(id, code, window, xid)| (id, (code, window, xid)))
    .collect()
}

/// The cursor's moves, in order: (value, transaction).
async fn cursor_moves(db: &common::TestDb) -> Vec<(DateTime<Utc>, i64)> {
    sqlx::query_as("select value, xid from cursor_moves order by xid")
        .fetch_all(&db.pool)
        .await
        .unwrap()
}

/// Pages that are ready when their turn comes are written together, strictly in order, and the cursor
/// moves only with the last page of a window, in the same transaction, never before the data it covers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_pages_are_written_together_with_the_checkpoint_of_their_last_window() {
    let marketplace = Arc::new(Scripted::new(vec![
        vec![scripted_orders(&["a1", "a2"])],
        vec![
            scripted_orders(&["b1", "b2"]),
            scripted_orders(&["b3", "b4"]),
        ],
        vec![scripted_orders(&["c1"]), scripted_orders(&["c2", "c3"])],
    ]));
    let (db, reports) = scripted_run(marketplace.clone()).await;
    assert_eq!(reports.len(), 1);
    assert!(
        matches!(reports[0].outcome, StreamOutcome::Succeeded),
        "{reports:?}"
    );
    let totals = &reports[0].totals;
    assert_eq!((totals.pages, totals.requests), (5, 5));
    assert_eq!((totals.counts.seen, totals.counts.inserted), (9, 9));

    let stored = scripted_stored(&db).await;
    assert_eq!(stored.len(), 9);
    let (first, second, third) = (
        marketplace.window(0),
        marketplace.window(1),
        marketplace.window(2),
    );
    let xid = |id: &str| stored[id].2;
    // The first window's page was the last to arrive: the two windows behind it were waiting, and went
    // into its transaction.
    for id in ["a2", "b1", "b2", "b3"] {
        assert_eq!(xid(id), xid("a1"), "{id}: {stored:?}");
    }
    let transactions: HashSet<i64> = stored.values().map(|(.., xid)| *xid).collect();
    assert!(transactions.len() < 5, "{stored:?}");

    let moves = cursor_moves(&db).await;
    // The first window's checkpoint is not written on its own: the transaction that ends it also ends
    // the second window, and carries that window's (or the third's) checkpoint.
    assert!(
        moves.iter().all(|(value, _)| *value != first.1),
        "{moves:?}"
    );
    assert_eq!(moves.last().map(|(value, _)| *value), Some(third.1));
    for (value, moved_in) in &moves {
        assert!(
            [second.1, third.1].contains(value),
            "{value} is no window's end"
        );
        // Written with its window's last page, and never before the orders of the windows it covers.
        let last_page = if *value == second.1 { "b3" } else { "c3" };
        assert_eq!(*moved_in, xid(last_page), "{moves:?} {stored:?}");
        for (id, (_, window, written_in)) in &stored {
            if window.is_some_and(|w| w < *value) {
                assert!(written_in <= moved_in, "{id} {stored:?} {moves:?}");
            }
        }
    }
}

/// An order in two pages that are ready together is written twice, in order, so that its history keeps
/// the state between: the page that holds it again starts the next write. The later page wins, and the
/// earliest window that returned it is kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_in_two_ready_pages_keeps_each_state_in_its_history() {
    let marketplace = Arc::new(Scripted::new(vec![
        vec![Ok(vec![
            scripted_order("a1", "1"),
            scripted_order("twice", "first"),
        ])],
        vec![
            scripted_orders(&["b1"]),
            Ok(vec![
                scripted_order("twice", "second"),
                scripted_order("b2", "1"),
            ]),
        ],
        vec![scripted_orders(&["c1"])],
    ]));
    let (db, reports) = scripted_run(marketplace.clone()).await;
    assert!(
        matches!(reports[0].outcome, StreamOutcome::Succeeded),
        "{reports:?}"
    );
    let totals = &reports[0].totals.counts;
    assert_eq!((totals.seen, totals.inserted, totals.updated), (6, 5, 1));
    let stored = scripted_stored(&db).await;
    assert_eq!(
        stored["twice"].0.as_deref(),
        Some("second"),
        "the later page wins"
    );
    assert_eq!(
        stored["twice"].1,
        Some(marketplace.window(0).0),
        "the earliest window is kept"
    );
    assert_eq!(stored["b1"].2, stored["a1"].2, "written together");
    assert_ne!(
        stored["b2"].2, stored["a1"].2,
        "the page holding it again is written after"
    );
    let history: Vec<(String, String)> = sqlx::query_as(
        "select from_status_code, to_status_code from order_state_changes order by id",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(history, [("first".to_owned(), "second".to_owned())]);
}

/// A marketplace of one stream whose one window has three pages, each naming the next; it notes when
/// each page was asked for. The second page answers a little late, so that it arrives while the
/// first is being written. Page `i` holds order `P<i>` with status 1, or, with `same_order`, order
/// `P0` with status `i + 1`; and `more` orders `P<i>-<k>` after it (`later_more` on the pages after
/// the first, when set). Each order's raw payload carries `padding` bytes besides its id and status.
/// With `loops_back`, the last page names that page as its next instead of none.
#[derive(Default)]
struct NextLinks {
    asked_at: Mutex<BTreeMap<usize, DateTime<Utc>>>,
    same_order: bool,
    more: usize,
    later_more: Option<usize>,
    padding: usize,
    loops_back: Option<usize>,
}

#[async_trait::async_trait]
impl Marketplace for NextLinks {
    fn streams(&self) -> Vec<StreamSpec> {
        orders_stream(None)
    }

    async fn fetch_page(
        &self,
        _stream: &str,
        request: &PageRequest,
    ) -> Result<Page, MarketplaceError> {
        let index = request.page.as_deref().map_or(0, |p| p.parse().unwrap());
        self.asked_at.lock().unwrap().insert(index, Utc::now());
        if index == 1 {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        let first = if self.same_order {
            scripted_order("P0", &(index + 1).to_string())
        } else {
            scripted_order(&format!("P{index}"), "1")
        };
        let padded = |mut order: Order| {
            if self.padding > 0 {
                order.raw = serde_json::json!({
                    "id": order.external_id,
                    "padding": "x".repeat(self.padding),
                })
                .into();
            }
            order
        };
        let more = match self.later_more {
            Some(more) if index > 0 => more,
            _ => self.more,
        };
        let orders = std::iter::once(first)
            .chain((1..=more).map(|k| scripted_order(&format!("P{index}-{k}"), "1")))
            .map(padded)
            .collect();
        Ok(Page {
            orders,
            next: match index {
                2 => self.loops_back.map(|page| page.to_string()),
                _ => Some((index + 1).to_string()),
            },
            requests: 1,
            more: None,
        })
    }
}

/// A marketplace of one stream whose windows (one a day of the backfill, oldest first; one window when
/// there is one) hold `pages[w]` pages, paged by page number (so the poller guesses pages ahead,
/// [`Marketplace::page_after`]). Page `k` holds order `P<k>` in the first window, `W<w>-P<k>` in the
/// others, and `more` orders `<that>-<j>` after it; a page past a window's end is empty. The first
/// window's first page answers `first_delay` late. It notes each page asked for, `(window, page)`, and
/// when.
struct Numbered {
    pages: Vec<usize>,
    more: usize,
    first_delay: std::time::Duration,
    asked: Mutex<Vec<(WindowPage, DateTime<Utc>)>>,
}

/// A page of [`Numbered`]: `(window, page)`.
type WindowPage = (usize, usize);

impl Numbered {
    fn new(pages: Vec<usize>, more: usize) -> Numbered {
        Numbered {
            pages,
            more,
            first_delay: std::time::Duration::ZERO,
            asked: Mutex::new(Vec::new()),
        }
    }

    /// The pages asked for, `(window, page)`, before `at` (all of them when `None`).
    fn asked_before(&self, at: Option<DateTime<Utc>>) -> Vec<WindowPage> {
        let asked = self.asked.lock().unwrap();
        asked
            .iter()
            .filter(|(_, when)| at.is_none_or(|at| *when < at))
            .map(|(page, _)| *page)
            .collect()
    }
}

#[async_trait::async_trait]
impl Marketplace for Numbered {
    fn streams(&self) -> Vec<StreamSpec> {
        let day = std::time::Duration::from_secs(24 * 60 * 60);
        orders_stream((self.pages.len() > 1).then_some(day))
    }

    async fn fetch_page(
        &self,
        _stream: &str,
        request: &PageRequest,
    ) -> Result<Page, MarketplaceError> {
        // The backfill starts a day a window before the run, a moment ago.
        let window = self.pages.len() - (Utc::now() - request.from).num_hours() as usize / 24;
        let index = request.page.as_deref().map_or(0, |p| p.parse().unwrap());
        self.asked
            .lock()
            .unwrap()
            .push(((window, index), Utc::now()));
        if (window, index) == (0, 0) {
            tokio::time::sleep(self.first_delay).await;
        }
        let pages = self.pages[window];
        let id = match window {
            0 => format!("P{index}"),
            _ => format!("W{window}-P{index}"),
        };
        let ids = std::iter::once(id.clone()).chain((1..=self.more).map(|j| format!("{id}-{j}")));
        Ok(Page {
            orders: ids
                .filter(|_| index < pages)
                .map(|id| scripted_order(&id, "1"))
                .collect(),
            next: (index + 1 < pages).then(|| (index + 1).to_string()),
            requests: 1,
            more: None,
        })
    }

    fn page_after(&self, _stream: &str, token: &str) -> Option<String> {
        token
            .parse::<usize>()
            .ok()
            .map(|page| (page + 1).to_string())
    }
}

/// Statements that make the insert of order `P0` take a second, and note when it ends in `write_ends`.
const SLOW_FIRST_PAGE: &[&str] = &[
    "create table write_ends (at timestamptz not null)",
    "create function slow_first_page() returns trigger language plpgsql as
        $$ begin
             if new.external_id = 'P0' then
                 perform pg_sleep(1);
                 insert into write_ends values (clock_timestamp());
             end if;
             return new;
           end $$",
    "create trigger slow_first_page before insert on orders
        for each row execute function slow_first_page()",
];

/// Statements that log each insert into `orders`: the order, when, and the transaction.
const LOG_INSERTS: &[&str] = &[
    "create table inserts (external_id text not null, at timestamptz not null,
        xid bigint not null default pg_current_xact_id()::text::bigint)",
    "create function log_insert() returns trigger language plpgsql as
        $$ begin
             insert into inserts (external_id, at) values (new.external_id, clock_timestamp());
             return new;
           end $$",
    "create trigger log_insert before insert on orders
        for each row execute function log_insert()",
];

/// The inserts [`LOG_INSERTS`] logged: order → (when, transaction).
async fn logged_inserts(db: &common::TestDb) -> HashMap<String, (DateTime<Utc>, i64)> {
    sqlx::query_as::<_, (String, DateTime<Utc>, i64)>("select external_id, at, xid from inserts")
        .fetch_all(&db.pool)
        .await
        .unwrap()
        .into_iter()
        .map(|(id, at, xid)| (id, (at, xid)))
        .collect()
}

/// When the first page's orders were done ([`SLOW_FIRST_PAGE`]).
async fn first_write_end(db: &common::TestDb) -> DateTime<Utc> {
    sqlx::query_scalar("select at from write_ends")
        .fetch_one(&db.pool)
        .await
        .unwrap()
}

/// Asserts that order `id` went in while the first page's write was still under way (`beside`), or
/// after it ended ([`SLOW_FIRST_PAGE`] notes when).
async fn assert_inserted_beside_the_first_write(db: &common::TestDb, id: &str, beside: bool) {
    let inserted = logged_inserts(db).await[id].0;
    let first_ends = first_write_end(db).await;
    assert_eq!(
        inserted < first_ends,
        beside,
        "{id} was inserted at {inserted}; the first write's orders were done at {first_ends}"
    );
}

/// A fresh database prepared by `statements` (triggers that slow writes down or log them), and one live
/// poll of `marketplace`, by a poller whose pool has `max_connections`, each waited for at most half a
/// second (the test pool when `None`).
async fn next_links_run(
    statements: &[&'static str],
    marketplace: Arc<NextLinks>,
    max_connections: Option<u32>,
) -> (common::TestDb, Vec<StreamReport>) {
    marketplace_run(statements, marketplace, max_connections, 7).await
}

/// [`next_links_run`] for any marketplace, with a backfill of `initial_sync_days`.
async fn marketplace_run(
    statements: &[&'static str],
    marketplace: Arc<dyn Marketplace>,
    max_connections: Option<u32>,
    initial_sync_days: u32,
) -> (common::TestDb, Vec<StreamReport>) {
    let db = common::test_db().await;
    for &statement in statements {
        sqlx::query(statement).execute(&db.pool).await.unwrap();
    }
    let pool = match max_connections {
        Some(n) => sqlx::postgres::PgPoolOptions::new()
            .max_connections(n)
            .acquire_timeout(std::time::Duration::from_millis(500))
            .connect(&db.url)
            .await
            .unwrap(),
        None => db.pool.clone(),
    };
    let poller = test_marketplace_poller(&pool, marketplace, initial_sync_days).await;
    let reports = poller
        .poll(RunMode::Live, &CancellationToken::new(), &NoProgress)
        .await;
    (db, reports)
}

/// One live poll of three pages ([`NextLinks`]) into a database whose first page's write is slowed
/// down ([`SLOW_FIRST_PAGE`]) and whose inserts are logged ([`LOG_INSERTS`]), prepared further by
/// `statements`.
async fn slow_first_page_run(statements: &[&'static str]) -> (common::TestDb, Vec<StreamReport>) {
    next_links_run(
        &[SLOW_FIRST_PAGE, LOG_INSERTS, statements].concat(),
        Arc::new(NextLinks::default()),
        None,
    )
    .await
}

async fn stored_orders(db: &common::TestDb) -> i64 {
    sqlx::query_scalar("select count(*) from orders")
        .fetch_one(&db.pool)
        .await
        .unwrap()
}

/// A page naming as its next a page of its window already read (itself, or one before it) fails the run
/// with the reason, and the window's checkpoint is not written: following it would read the same pages
/// for ever (the run spun in place, or read them again and again).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_naming_a_page_already_read_as_its_next_fails_the_run() {
    for back_to in [2, 1] {
        let marketplace = Arc::new(NextLinks {
            loops_back: Some(back_to),
            ..NextLinks::default()
        });
        let (db, reports) = next_links_run(&[], marketplace, None).await;
        let StreamOutcome::Failed(failure) = &reports[0].outcome else {
            panic!("page 2 naming page {back_to}: {:?}", reports[0].outcome);
        };
        assert!(
            failure
                .to_string()
                .contains("names page `1` (already read) as its next")
                || failure
                    .to_string()
                    .contains("names page `2` (already read) as its next"),
            "{failure}"
        );
        let cursors: i64 = sqlx::query_scalar("select count(*) from sync_cursors")
            .fetch_one(&db.pool)
            .await
            .unwrap();
        assert_eq!(cursors, 0, "page 2 naming page {back_to}");
    }
}

/// A page that arrives while the page before it is being written has its next page asked for at
/// once, not after the write: the first page's write is slowed down by a second (a trigger), and the
/// third page is asked for before that write ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_next_page_named_during_a_write_is_asked_for_before_the_write_ends() {
    let marketplace = Arc::new(NextLinks::default());
    let (db, reports) = next_links_run(SLOW_FIRST_PAGE, marketplace.clone(), None).await;
    assert_succeeded(Api::Labs, &reports);
    assert_eq!(stored_orders(&db).await, 3);
    let first_written = first_write_end(&db).await;
    let asked_at = marketplace.asked_at.lock().unwrap().clone();
    assert!(
        asked_at[&2] < first_written,
        "the third page was asked for at {}, after the first page's write ended at {first_written}",
        asked_at[&2]
    );
}

/// Pages fetched ahead of a write that falls behind wait in places of their own, not in those of the
/// requests in flight: the first page's write is slowed down by a second, and pages of 501 light
/// orders (more than one write holds, so none is written beside it) wait; the run asks for more pages
/// than [`FETCH_AHEAD`] in flight could hold before that write ends, and no more than twice as many
/// (what it may hold ahead of its writes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_waiting_for_a_slow_write_leave_the_api_its_requests_in_flight() {
    let marketplace = Arc::new(Numbered::new(vec![24], 500));
    let (db, reports) = marketplace_run(SLOW_FIRST_PAGE, marketplace.clone(), None, 1).await;
    assert_succeeded(Api::Labs, &reports);
    assert_eq!(stored_orders(&db).await, 24 * 501);
    let asked = marketplace
        .asked_before(Some(first_write_end(&db).await))
        .len();
    assert!(
        asked > FETCH_AHEAD + 1 && asked <= 2 * FETCH_AHEAD + 1,
        "{asked} pages asked for before the first write ended"
    );
}

/// Pages are guessed past the length of the window before only as they turn out to exist: a window as
/// long as the one before it has at most one page asked for past its end, and a longer one is read
/// whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_window_as_long_as_the_one_before_has_at_most_one_page_asked_past_its_end() {
    let marketplace = Arc::new(Numbered::new(vec![20, 20, 40], 0));
    let (db, reports) = marketplace_run(&[], marketplace.clone(), None, 3).await;
    assert_succeeded(Api::Labs, &reports);
    assert_eq!(stored_orders(&db).await, 80);
    let asked = marketplace.asked_before(None);
    let past_end = |window: usize| {
        asked
            .iter()
            .filter(|&&(w, page)| w == window && page >= marketplace.pages[window])
            .count()
    };
    assert!(past_end(1) <= 1, "{asked:?}");
    assert!(past_end(2) <= FETCH_AHEAD, "{asked:?}");
}

/// A write goes beside the writes under way only once each of them holds its connection: with a pool
/// of one connection (each wait for it at most half a second), two one-page windows of 300 orders (more
/// than one write holds together), the first answering late and its write slowed down by a second, the
/// second window's page is ready when the first write starts, and is written after it, instead of
/// waiting beside it for the connection it holds, which failed the run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_goes_beside_others_only_once_they_hold_their_connections() {
    let marketplace = Arc::new(Numbered {
        first_delay: std::time::Duration::from_millis(200),
        ..Numbered::new(vec![1, 1], 299)
    });
    let (db, reports) = marketplace_run(
        &[SLOW_FIRST_PAGE, LOG_INSERTS].concat(),
        marketplace,
        Some(1),
        2,
    )
    .await;
    assert_succeeded(Api::Labs, &reports);
    assert_eq!(stored_orders(&db).await, 600);
    assert_inserted_beside_the_first_write(&db, "W1-P0", false).await;
}

/// The pages after a slow write are written beside it, in a transaction of their own, and still
/// commit after it: the first page's write is slowed down by a second (a trigger), the second page's
/// order is inserted before that write ends, and each write renews the lease (the first statement of
/// its commit) only after the write before it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pages_after_a_slow_write_are_written_beside_it_and_commit_after_it() {
    let (db, reports) = slow_first_page_run(&[
        "create table renewals (at timestamptz not null,
            xid bigint not null default pg_current_xact_id()::text::bigint)",
        "create function log_renewal() returns trigger language plpgsql as
            $$ begin insert into renewals (at) values (clock_timestamp()); return new; end $$",
        "create trigger log_renewal after update on sync_leases
            for each row execute function log_renewal()",
    ])
    .await;
    assert_succeeded(Api::Labs, &reports);
    assert_eq!(reports[0].totals.counts.inserted, 3, "{reports:?}");
    assert_inserted_beside_the_first_write(&db, "P1", true).await;
    let inserts = logged_inserts(&db).await;
    assert_ne!(inserts["P0"].1, inserts["P1"].1, "two transactions");
    let renewed: Vec<i64> = sqlx::query_scalar("select xid from renewals order by at")
        .fetch_all(&db.pool)
        .await
        .unwrap();
    let order_of = |id: &str| {
        renewed
            .iter()
            .position(|xid| *xid == inserts[id].1)
            .unwrap()
    };
    assert!(order_of("P0") < order_of("P1"), "{renewed:?} {inserts:?}");
    assert!(order_of("P1") <= order_of("P2"), "{renewed:?} {inserts:?}");
    assert_eq!(stored_orders(&db).await, 3);
}

/// Three writes may be under way at once: the first page's write is slowed down by a second and the
/// second page's by half a second (a trigger), and the third page's order goes in before the first
/// write ends, in a transaction of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_writes_are_under_way_at_once() {
    let (db, reports) = slow_first_page_run(&[
        "create function slow_second_page() returns trigger language plpgsql as
            $$ begin
                 if new.external_id = 'P1' then perform pg_sleep(0.5); end if;
                 return new;
               end $$",
        "create trigger slow_second_page before insert on orders
            for each row execute function slow_second_page()",
    ])
    .await;
    assert_succeeded(Api::Labs, &reports);
    assert_eq!(stored_orders(&db).await, 3);
    assert_inserted_beside_the_first_write(&db, "P2", true).await;
    let inserts = logged_inserts(&db).await;
    let transactions: HashSet<i64> = inserts.values().map(|(_, xid)| *xid).collect();
    assert_eq!(transactions.len(), 3, "{inserts:?}");
}

/// Whether the second page's orders went in while the first page's write was still under way (the
/// first slowed down by a second), for pages of `more` + 1 orders whose payloads carry `padding` bytes.
async fn second_page_written_beside_the_first(more: usize, padding: usize) -> bool {
    let marketplace = Arc::new(NextLinks {
        more,
        padding,
        ..NextLinks::default()
    });
    let (db, reports) =
        next_links_run(&[SLOW_FIRST_PAGE, LOG_INSERTS].concat(), marketplace, None).await;
    assert_succeeded(Api::Labs, &reports);
    assert_eq!(stored_orders(&db).await, 3 * (more as i64 + 1));
    let inserts = logged_inserts(&db).await;
    inserts["P1"].0 < first_write_end(&db).await
}

/// Two writes under way are bounded by the size of their payloads, not by a count of orders: two
/// pages of 300 light orders each (about 100 bytes) are written beside each other, though together
/// they hold more orders than one write may.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_of_light_orders_are_written_beside_each_other_up_to_a_full_write_each() {
    assert!(second_page_written_beside_the_first(299, 50).await);
}

/// Two pages of 300 orders of 4 KB each hold more payload together than two writes under way may
/// (2 MiB): the second is written after the first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_of_heavy_orders_are_not_written_beside_each_other() {
    assert!(!second_page_written_beside_the_first(299, 4_000).await);
}

/// With a pool of one connection nothing is written beside: a write beside another would wait for
/// the pool while the one before it, slowed down by a second, holds the only connection, and time out
/// after half a second. The second page's order goes in after the first page's write, and the run
/// succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_one_connection_the_writes_go_one_after_the_other() {
    let (db, reports) = next_links_run(
        &[SLOW_FIRST_PAGE, LOG_INSERTS].concat(),
        Arc::new(NextLinks::default()),
        Some(1),
    )
    .await;
    assert_succeeded(Api::Labs, &reports);
    assert_eq!(stored_orders(&db).await, 3);
    assert_inserted_beside_the_first_write(&db, "P1", false).await;
}

/// A write under way beside one that fails is rolled back: the second page's order was inserted in
/// its transaction (a sequence, which no rollback undoes, counts the attempts), but the run fails on
/// the first write's error and commits nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_beside_a_failed_one_is_rolled_back() {
    let (db, reports) = next_links_run(
        &[
            "create sequence inserts_tried",
            "create function fail_first_page() returns trigger language plpgsql as
            $$ begin
                 perform nextval('inserts_tried');
                 if new.external_id = 'P0' then
                     perform pg_sleep(1);
                     raise exception 'P0 refused';
                 end if;
                 return new;
               end $$",
            "create trigger fail_first_page before insert on orders
            for each row execute function fail_first_page()",
        ],
        Arc::new(NextLinks::default()),
        None,
    )
    .await;
    let StreamOutcome::Failed(error) = &reports[0].outcome else {
        panic!("{reports:?}");
    };
    let error = ordersync::poller::error_chain(error);
    assert!(error.contains("P0 refused"), "{error}");
    let tried: i64 = sqlx::query_scalar("select last_value from inserts_tried")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert!(
        tried >= 2,
        "the second page was not written beside the first ({tried} inserts)"
    );
    assert_eq!(stored_orders(&db).await, 0);
}

/// A page larger than one write is never written beside another: its parts commit one by one, so
/// they would commit before the write under way. The first page's one order is slowed down; the
/// second page, of 601 light orders (two writes' worth, though far below the payload two writes
/// under way may hold), goes in after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_larger_than_one_write_is_not_written_beside_another() {
    let marketplace = Arc::new(NextLinks {
        later_more: Some(600),
        ..NextLinks::default()
    });
    let (db, reports) =
        next_links_run(&[SLOW_FIRST_PAGE, LOG_INSERTS].concat(), marketplace, None).await;
    assert_succeeded(Api::Labs, &reports);
    assert_eq!(stored_orders(&db).await, 1 + 2 * 601);
    assert_inserted_beside_the_first_write(&db, "P1", false).await;
}

/// The orders of a page that the write under way holds too are written after it, in the page's own
/// transaction, while the page's other orders go in beside it: every page repeats order `P0` with a
/// new status beside an order of its own, and the first write is slowed down. `P1-1` goes in before
/// that write ends; `P0` ends with the last page's status, each change in its history.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orders_of_the_write_under_way_are_written_after_it_and_the_others_beside_it() {
    let marketplace = NextLinks {
        same_order: true,
        more: 1,
        ..NextLinks::default()
    };
    let (db, reports) = next_links_run(
        &[
            LOG_INSERTS,
            &[
                "create table write_ends (at timestamptz not null)",
                "create function slow_first_status() returns trigger language plpgsql as
                $$ begin
                     if new.status_code = '1' and new.external_id = 'P0' then
                         perform pg_sleep(1);
                         insert into write_ends values (clock_timestamp());
                     end if;
                     return new;
                   end $$",
                "create trigger slow_first_status before insert on orders
                for each row execute function slow_first_status()",
            ],
        ]
        .concat(),
        Arc::new(marketplace),
        None,
    )
    .await;
    assert_succeeded(Api::Labs, &reports);
    assert_eq!(stored_orders(&db).await, 4);
    assert_inserted_beside_the_first_write(&db, "P1-1", true).await;
    let status: String =
        sqlx::query_scalar("select status_code from orders where external_id = 'P0'")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(status, "3");
    let history: Vec<(String, String)> = sqlx::query_as(
        "select from_status_code, to_status_code from order_state_changes order by id",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    let changes = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(from, to)| (from.to_string(), to.to_string()))
            .collect()
    };
    assert_eq!(history, changes(&[("1", "2"), ("2", "3")]));
}

/// A page holding an order of the write under way writes it after that write, so that it sees what
/// that write stored: every page repeats order `P0` with a new status while the first write is
/// slowed down, and the change from the first status is in the order's history.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_holding_an_order_of_the_write_under_way_is_written_after_it() {
    let marketplace = NextLinks {
        same_order: true,
        ..NextLinks::default()
    };
    let (db, reports) = next_links_run(
        &[
            "create function slow_first_status() returns trigger language plpgsql as
            $$ begin
                 if new.status_code = '1' then
                     perform pg_sleep(0.5);
                 end if;
                 return new;
               end $$",
            "create trigger slow_first_status before insert on orders
            for each row execute function slow_first_status()",
        ],
        Arc::new(marketplace),
        None,
    )
    .await;
    assert_succeeded(Api::Labs, &reports);
    let status: String =
        sqlx::query_scalar("select status_code from orders where external_id = 'P0'")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(status, "3");
    let first_change: (String, String) = sqlx::query_as(
        "select from_status_code, to_status_code from order_state_changes order by id limit 1",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(first_change.0, "1", "{first_change:?}");
}

/// A page that failed ends the write before it: the pages ready before it are written together, with
/// the checkpoint of the last window they complete, and nothing after it is written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_page_ends_the_pages_written_together_before_it() {
    let marketplace = Arc::new(Scripted::new(vec![
        vec![scripted_orders(&["a1", "a2"])],
        vec![scripted_orders(&["b1"]), Err("refused".to_owned())],
        vec![scripted_orders(&["c1"]), scripted_orders(&["c2"])],
    ]));
    let (db, reports) = scripted_run(marketplace.clone()).await;
    assert!(
        matches!(reports[0].outcome, StreamOutcome::Failed(_)),
        "{reports:?}"
    );
    assert_eq!(reports[0].totals.pages, 2);
    let stored = scripted_stored(&db).await;
    let mut ids: Vec<&str> = stored.keys().map(String::as_str).collect();
    ids.sort_unstable();
    assert_eq!(ids, ["a1", "a2", "b1"]);
    let transactions: HashSet<i64> = stored.values().map(|(.., xid)| *xid).collect();
    assert_eq!(transactions.len(), 1, "{stored:?}");
    assert_eq!(
        cursor_moves(&db).await,
        vec![(marketplace.window(0).1, stored["b1"].2)],
        "the first window's checkpoint, with the pages"
    );
}

/// `ordersync run` (the daemon, in process) with one account of each marketplace keeps all five in step
/// with the sandbox while orders keep changing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_keeps_all_five_marketplaces_in_step() {
    let env = SyncEnv::start(150).await;
    let mut env_vars = HashMap::new();
    env_vars.insert("DATABASE_URL".to_owned(), env.db.url.clone());
    let (mut settings, _) = ordersync::config::Settings::load(&ordersync::config::LoadOptions {
        env: Some(env_vars),
        ..Default::default()
    })
    .unwrap();
    settings.accounts = ordersync::demo::sandbox_accounts(&env.sandbox, "*/2 * * * * *").unwrap();
    settings.http.listen.set_port(0);
    let stop = CancellationToken::new();
    let daemon = tokio::spawn(ordersync::daemon::run(
        settings,
        env.db.pool.clone(),
        stop.clone().cancelled_owned(),
    ));

    let wait_in_step = |round: &'static str| {
        let pool = env.db.pool.clone();
        let sandbox = &env.sandbox;
        async move {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(90);
            loop {
                let ids: HashMap<String, i64> =
                    sqlx::query_as::<_, (String, i64)>("select name, id from accounts")
                        .fetch_all(&pool)
                        .await
                        .unwrap()
                        .into_iter()
                        .collect();
                let mut found = Vec::new();
                for api in Api::ALL {
                    match ids.get(&format!("demo-{}", api.name())) {
                        Some(id) => {
                            let difference =
                                common::in_step::difference(&pool, *id, sandbox, api).await;
                            if !difference.is_empty() {
                                found.push(format!("{api}: {difference:?}"));
                            }
                        }
                        None => found.push(format!("{api}: no account yet")),
                    }
                }
                if found.is_empty() {
                    return;
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "{round}: not in step after 90 s: {:?}",
                    &found[..found.len().min(10)]
                );
                // The daemon polls every 2 s: look again after its next runs.
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            }
        }
    };
    wait_in_step("initial sync").await;
    for api in Api::ALL {
        env.sandbox.change_orders(api, 5);
        env.sandbox.add_orders(api, 2);
    }
    wait_in_step("after changes").await;
    stop.cancel();
    daemon.await.unwrap().unwrap();
}

/// i1 completes each listed order with requests of its own (its items, addresses and plans). A quiet
/// poll lists again the orders changed within the overlap but reads none of them again: two
/// requests, the list of changed orders and the list of changed items (the `item-changes` stream). An
/// item that changed without its order brings that order, and only it, back, whether the orders'
/// list shows the order again or not. An answer of changed items that cannot be read fails only that
/// stream's run. An order read torn (listed before a change, its items after it) is not taken for
/// stored as listed by the next run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_i1_poll_makes_two_requests_and_an_item_changed_alone_brings_its_order_back() {
    let api = Api::I1;
    let mut env = SyncEnv::start(40).await;
    let account = env.account(api);
    let poller = env.poller(&account, "replica-a", fast_retries()).await;
    let account_id = env.accounts[api.name()];
    let token = CancellationToken::new();
    let poll = || poller.poll(RunMode::Live, &token, &NoProgress);
    // The first poll: the orders' backfill reads the items changed since the account was registered
    // with their orders, so the first run of `item-changes` finds them stored and reads none again.
    let first_ids: Vec<String> = env
        .sandbox
        .orders(api)
        .into_iter()
        .take(3)
        .map(|o| o.external_id)
        .collect();
    for id in &first_ids {
        assert!(env.sandbox.change_item(api, id));
    }
    env.sandbox.clear_audit();
    assert_succeeded(api, &poll().await);
    let audit = env.sandbox.audit();
    let item_pages = audit
        .iter()
        .filter(|e| e.path == "/order-items/" && query_value(e, "updated_at__gte").is_some())
        .count();
    let read_by_id = audit
        .iter()
        .filter(|e| e.path.starts_with("/orders/") && e.path != "/orders/")
        .count();
    assert_eq!(
        (item_pages, read_by_id),
        (1, 0),
        "the changed items are listed, their orders not read again"
    );
    let changed = env.sandbox.change_orders(api, 5);
    assert_eq!(changed.len(), 5);
    assert_succeeded(api, &poll().await);

    // A quiet poll: one list of changed orders, one of changed items, nothing read again.
    env.sandbox.clear_audit();
    assert_succeeded(api, &poll().await);
    let audit = env.sandbox.audit();
    let asked: Vec<String> = audit
        .iter()
        .map(|e| format!("{} {}", e.path, e.query.as_deref().unwrap_or("")))
        .collect();
    assert_eq!(audit.len(), 2, "a quiet poll: {asked:#?}");
    assert_eq!(audit[0].path, "/orders/", "{asked:#?}");
    assert_eq!(audit[1].path, "/order-items/", "{asked:#?}");
    let listed_since = query_value(&audit[0], "updated_at__gte")
        .map(|since| since.parse::<DateTime<Utc>>().unwrap())
        .expect("the list asks for changes since a time");
    let relisted = env
        .sandbox
        .orders(api)
        .into_iter()
        .filter(|o| changed.contains(&o.external_id) && o.updated_at >= listed_since)
        .count();
    assert_eq!(
        relisted, 5,
        "the changed orders lie within the overlap and were listed again"
    );

    // An item changes without its order: of an order listed again (within the overlap), and of one
    // the orders' list no longer shows.
    let unlisted = env
        .sandbox
        .orders(api)
        .into_iter()
        .find(|o| o.updated_at < listed_since)
        .expect("an order changed before the overlap")
        .external_id;
    let pool = &env.db.pool;
    let items_of =
        |id: String| async move { stored_items_and_number(pool, account_id, &id).await.0 };
    let before = [
        items_of(changed[0].clone()).await,
        items_of(unlisted.clone()).await,
    ];
    assert!(env.sandbox.change_item(api, &changed[0]));
    assert!(env.sandbox.change_item(api, &unlisted));
    env.sandbox.clear_audit();
    assert_succeeded(api, &poll().await);
    let after = [
        items_of(changed[0].clone()).await,
        items_of(unlisted.clone()).await,
    ];
    assert_ne!(
        before[0], after[0],
        "the listed order's item change is stored"
    );
    assert_ne!(
        before[1], after[1],
        "the unlisted order's item change is stored"
    );
    let mut items_read: Vec<String> = env
        .sandbox
        .audit()
        .into_iter()
        .filter_map(|e| query_value(&e, "order__number"))
        .collect();
    items_read.sort();
    let mut numbers = vec![
        stored_items_and_number(pool, account_id, &changed[0])
            .await
            .1,
        stored_items_and_number(pool, account_id, &unlisted).await.1,
    ];
    numbers.sort();
    assert_eq!(
        items_read, numbers,
        "only the orders whose items changed are read again"
    );
    assert_in_step(&env, api).await;

    // Once stored, the items' changes are known.
    env.sandbox.clear_audit();
    assert_succeeded(api, &poll().await);
    assert_eq!(
        env.sandbox.audit().len(),
        2,
        "once stored, the items' changes are known"
    );

    // An unreadable list of changed items fails that stream's run, recorded with the body, and its
    // cursor stays; the next poll reads the change.
    let cursor = cursors(&env, api).await["item-changes"];
    assert!(env.sandbox.change_item(api, &unlisted));
    {
        use ordersync::sandbox::faults::{Fault, FaultPlan};
        env.sandbox.set_faults(
            api,
            FaultPlan::scripted([Fault::Slow(std::time::Duration::ZERO), Fault::Malformed]),
        );
    }
    let reports = poll().await;
    let outcomes: Vec<(&str, bool)> = reports
        .iter()
        .map(|r| (r.stream, matches!(r.outcome, StreamOutcome::Succeeded)))
        .collect();
    assert_eq!(outcomes, [("orders", true), ("item-changes", false)]);
    assert_eq!(cursors(&env, api).await["item-changes"], cursor);
    let (request, raw_body): (String, String) =
        sqlx::query_as("select request, raw_body from payload_errors")
            .fetch_one(&env.db.pool)
            .await
            .unwrap();
    assert!(request.contains("order-items/"), "{request}");
    assert!(!raw_body.is_empty());
    let before = items_of(unlisted.clone()).await;
    assert_succeeded(api, &poll().await);
    assert_ne!(before, items_of(unlisted.clone()).await);

    // Orders that change between the list and their items' requests are stored as listed, beside
    // their changed items: the next run still reads them again.
    env.sandbox.change_while_paging(api, 1, 40);
    assert_succeeded(api, &poll().await);
    assert_succeeded(api, &poll().await);
    assert_in_step(&env, api).await;
}

/// i1 lists orders by placement, filtered by change time: an order changing while a window is paged
/// leaves it and moves every later order one place forward, one of them into a page already read.
#[tokio::test]
async fn an_i1_backfill_misses_no_order_when_changes_move_its_pages() {
    let api = Api::I1;
    let mut env = SyncEnv::start(300).await;
    let mut account = env.account(api);
    account.page_size = 3;
    let poller = env.poller(&account, "replica-a", fast_retries()).await;
    let token = CancellationToken::new();
    for reads in 1..19 {
        env.sandbox.change_while_paging(api, reads * 5, 3);
    }
    assert_succeeded(api, &poller.poll(RunMode::Live, &token, &NoProgress).await);
    let read_again = env
        .sandbox
        .audit()
        .iter()
        .filter(|e| {
            e.path == "/orders/"
                && query_value(e, "limit").is_some_and(|limit| limit.parse::<u32>().unwrap() > 4)
        })
        .count();
    assert!(
        read_again > 0,
        "pages were read again from further back than the row they overlap"
    );
    assert_succeeded(api, &poller.poll(RunMode::Live, &token, &NoProgress).await);
    assert_in_step(&env, api).await;
}

/// An order's stored items (its raw payload's `items`, as JSON text) and its number.
async fn stored_items_and_number(
    pool: &sqlx::PgPool,
    account_id: i64,
    external_id: &str,
) -> (String, String) {
    sqlx::query_as(
        "select (raw->'items')::text, order_number from orders
         where account_id = $1 and external_id = $2",
    )
    .bind(account_id)
    .bind(external_id)
    .fetch_one(pool)
    .await
    .unwrap()
}

/// The value of the query parameter `name` of a request the sandbox received.
fn query_value(entry: &ordersync::sandbox::audit::AuditEntry, name: &str) -> Option<String> {
    url::form_urlencoded::parse(entry.query.as_deref()?.as_bytes())
        .find_map(|(key, value)| (key == name).then(|| value.into_owned()))
}
