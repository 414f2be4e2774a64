//! The store's guarantees, against a real PostgreSQL.

mod common;

use chrono::{TimeZone, Utc};
use ordersync::domain::{Currency, MarketplaceKind, Order, OrderLine, OrderState, RawStatus};
use ordersync::store::leases::{self, Lease};
use ordersync::store::orders::{PageOrders, PageWrite, PagesWrite, write_page, write_pages};
use ordersync::store::{self, StoreError, accounts, cursors};
use rust_decimal::Decimal;
use sqlx::PgPool;

fn order(id: &str, state: OrderState, status: &str) -> Order {
    Order {
        external_id: id.to_owned(),
        order_number: Some(format!("N-{id}")),
        state,
        status: RawStatus {
            code: Some(status.to_owned()),
            text: None,
        },
        total_amount: Some(Decimal::new(123_456, 2)),
        shipping_amount: None,
        currency: Some(Currency::parse("TRY")),
        customer_name: Some("Çağrı Öztürk".into()),
        customer_email: None,
        shipping_city: Some("İstanbul".into()),
        placed_at: Some(Utc.with_ymd_and_hms(2026, 11, 1, 9, 30, 0).unwrap()),
        source_updated_at: None,
        lines: vec![OrderLine {
            external_id: format!("{id}-1"),
            package_external_id: None,
            sku: Some("SKU-1".into()),
            product_name: Some("Çay bardağı".into()),
            quantity: Decimal::from(2),
            unit_price: Some(Decimal::new(61_728, 2)),
            total_price: Some(Decimal::new(123_456, 2)),
            currency: Some(Currency::parse("TRY")),
            state,
            status: RawStatus::default(),
            raw: serde_json::json!({"sku": "SKU-1"}).into(),
        }],
        packages: Vec::new(),
        raw: serde_json::json!({"id": id, "status": status}).into(),
    }
}

async fn setup() -> (common::TestDb, i64) {
    let db = common::test_db().await;
    let ids = accounts::sync_with_config(
        &db.pool,
        &[common::account(
            "shop",
            MarketplaceKind::I1,
            "http://127.0.0.1:1/api/i1/",
        )],
    )
    .await
    .unwrap();
    (db, ids["shop"])
}

fn page<'a>(
    account_id: i64,
    orders: &'a [Order],
    checkpoint: Option<(&'a str, chrono::DateTime<Utc>)>,
) -> PageWrite<'a> {
    PageWrite {
        account_id,
        marketplace: MarketplaceKind::I1,
        orders,
        window_from: None,
        checkpoint,
        lease: None,
    }
}

async fn xmin(pool: &PgPool, external_id: &str) -> String {
    sqlx::query_scalar("select xmin::text from orders where external_id = $1")
        .bind(external_id)
        .fetch_one(pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn migrations_apply_once() {
    let db = common::test_db().await;
    assert_eq!(
        store::migrate(&db.pool).await.unwrap(),
        0,
        "a second run changes nothing"
    );
    assert!(store::migrations_current(&db.pool).await.unwrap());
    let tables: i64 = sqlx::query_scalar(
        "select count(*) from information_schema.tables where table_schema = 'public'
         and table_name in ('accounts', 'orders', 'order_lines', 'order_state_changes', 'sync_cursors', 'sync_runs')",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(tables, 6);
}

#[tokio::test]
async fn unchanged_orders_are_not_rewritten_and_changes_add_one_history_row() {
    let (db, account) = setup().await;
    let first = [
        order("1", OrderState::AwaitingApproval, "100"),
        order("2", OrderState::Approved, "200"),
    ];
    let counts = write_page(&db.pool, page(account, &first, None))
        .await
        .unwrap();
    assert_eq!(
        (counts.inserted, counts.updated, counts.unchanged),
        (2, 0, 0)
    );
    let before = xmin(&db.pool, "1").await;

    let again = write_page(&db.pool, page(account, &first, None))
        .await
        .unwrap();
    assert_eq!((again.inserted, again.updated, again.unchanged), (0, 0, 2));
    assert_eq!(
        xmin(&db.pool, "1").await,
        before,
        "unchanged row was rewritten"
    );

    let changed = [
        order("1", OrderState::Shipped, "500"),
        order("2", OrderState::Approved, "200"),
    ];
    let counts = write_page(&db.pool, page(account, &changed, None))
        .await
        .unwrap();
    assert_eq!(
        (counts.inserted, counts.updated, counts.unchanged),
        (0, 1, 1)
    );
    let history: Vec<(String, String, Option<String>, Option<String>)> = sqlx::query_as(
        "select from_state, to_state, from_status_code, to_status_code from order_state_changes",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(
        history,
        vec![(
            "awaiting_approval".into(),
            "shipped".into(),
            Some("100".into()),
            Some("500".into())
        )]
    );
    let (state, total, lines): (String, Decimal, i64) = sqlx::query_as(
        "select state, total_amount, (select count(*) from order_lines l where l.order_id = o.id)
         from orders o where external_id = '1'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(
        (state.as_str(), total, lines),
        ("shipped", Decimal::new(123_456, 2), 1)
    );
}

#[tokio::test]
async fn unknown_statuses_and_currencies_are_listed() {
    let (db, account) = setup().await;
    let mut odd = order("9", OrderState::Unknown, "950");
    odd.currency = Some(Currency::parse("XBT"));
    write_page(&db.pool, page(account, &[odd], None))
        .await
        .unwrap();
    let rows: Vec<(String, String, i64)> =
        sqlx::query_as("select field, value, occurrences from unknown_values order by field")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert_eq!(
        rows,
        vec![
            ("currency".into(), "XBT".into(), 1),
            ("status".into(), "950".into(), 1)
        ]
    );
}

#[tokio::test]
async fn the_cursor_never_moves_back() {
    let (db, account) = setup().await;
    let later = Utc.with_ymd_and_hms(2026, 11, 20, 0, 0, 0).unwrap();
    let earlier = Utc.with_ymd_and_hms(2026, 11, 10, 0, 0, 0).unwrap();
    write_page(&db.pool, page(account, &[], Some(("orders", later))))
        .await
        .unwrap();
    write_page(&db.pool, page(account, &[], Some(("orders", earlier))))
        .await
        .unwrap();
    assert_eq!(
        cursors::get(&db.pool, account, "orders").await.unwrap(),
        Some(later)
    );
    let direct = sqlx::query("update sync_cursors set value = $1 where account_id = $2")
        .bind(earlier)
        .bind(account)
        .execute(&db.pool)
        .await;
    assert!(direct.is_err(), "the trigger must refuse a backwards move");
    assert_eq!(
        cursors::get(&db.pool, account, "orders").await.unwrap(),
        Some(later)
    );
}

#[tokio::test]
async fn a_failure_in_the_middle_of_a_page_leaves_nothing_behind() {
    let (db, account) = setup().await;
    // The line insert fails after the orders were upserted.
    sqlx::raw_sql(
        "create function refuse_broken_line() returns trigger language plpgsql as
            $$ begin
                 if new.sku = 'broken' then raise exception 'a broken line'; end if;
                 return new;
               end $$;
         create trigger refuse_broken_line before insert on order_lines
            for each row execute function refuse_broken_line();",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    let mut bad = order("3", OrderState::Approved, "200");
    bad.lines[0].sku = Some("broken".into());
    let orders = [order("1", OrderState::Approved, "200"), bad];
    let checkpoint = Utc.with_ymd_and_hms(2026, 11, 20, 0, 0, 0).unwrap();
    let result = write_page(
        &db.pool,
        page(account, &orders, Some(("orders", checkpoint))),
    )
    .await;
    assert!(result.is_err(), "{result:?}");
    let stored: i64 = sqlx::query_scalar("select count(*) from orders")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(stored, 0, "no order of the failed page may remain");
    assert_eq!(
        cursors::get(&db.pool, account, "orders").await.unwrap(),
        None
    );
}

#[tokio::test]
async fn a_write_under_a_lost_lease_is_refused() {
    let (db, account) = setup().await;
    let ours = Lease {
        account_id: account,
        stream: "orders".into(),
        holder: "replica-a".into(),
        ttl: std::time::Duration::from_secs(60),
    };
    let theirs = Lease {
        holder: "replica-b".into(),
        ..ours.clone()
    };
    assert!(leases::acquire(&db.pool, &ours).await.unwrap());
    assert!(
        !leases::acquire(&db.pool, &theirs).await.unwrap(),
        "a held lease is not taken"
    );
    // The holder dies: its lease expires, and the other replica takes it over.
    sqlx::query("update sync_leases set expires_at = now() - interval '1 second'")
        .execute(&db.pool)
        .await
        .unwrap();
    assert!(leases::acquire(&db.pool, &theirs).await.unwrap());
    let orders = [order("1", OrderState::Approved, "200")];
    let result = write_page(
        &db.pool,
        PageWrite {
            lease: Some(&ours),
            ..page(account, &orders, None)
        },
    )
    .await;
    assert!(matches!(result, Err(StoreError::LeaseLost { .. })));
    let stored: i64 = sqlx::query_scalar("select count(*) from orders")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(stored, 0);
}

/// A replica's write can be stopped at any point (an aborted task, a timeout): the connection it held
/// goes back to the pool with no transaction left open, so the next statement on it commits on its own.
/// (sqlx before 0.9.1 left a `BEGIN` cancelled in flight open, and the next borrower's statements ran,
/// uncommitted, inside it.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_stopped_midway_leaves_no_transaction_open() {
    let (db, account) = setup().await;
    // One connection, so every write and every check below uses the same session.
    let pool = store::connect(&db.url, 1).await.unwrap();
    for step in 0..300u64 {
        let write = tokio::spawn({
            let pool = pool.clone();
            async move {
                let orders = [order(&step.to_string(), OrderState::Approved, "200")];
                write_page(&pool, page(account, &orders, None)).await
            }
        });
        // Stop the write a little later each time, so that the stops fall all along its statements.
        let until = std::time::Instant::now() + std::time::Duration::from_micros(step * 10);
        while std::time::Instant::now() < until {
            std::hint::spin_loop();
        }
        write.abort();
        let _ = write.await;
        // Its session, seen from another connection once a statement has run on it.
        let pid: i32 = sqlx::query_scalar("select pg_backend_pid()")
            .fetch_one(&pool)
            .await
            .unwrap();
        let state: String = sqlx::query_scalar("select state from pg_stat_activity where pid = $1")
            .bind(pid)
            .fetch_one(&db.pool)
            .await
            .unwrap();
        assert_eq!(
            state,
            "idle",
            "after a write stopped at {} µs the pool's connection is inside a transaction",
            step * 10
        );
    }
    pool.close().await;
}

/// Where a re-read of open orders starts: the earliest placement time or first window of the orders that
/// are not final; final orders and orders with neither date do not count.
#[tokio::test]
async fn open_orders_start_is_the_earliest_open_order() {
    let (db, account) = setup().await;
    let at = |day: u32| Utc.with_ymd_and_hms(2026, 10, day, 0, 0, 0).unwrap();
    let placed = |id: &str, state: OrderState, day: Option<u32>| Order {
        placed_at: day.map(at),
        ..order(id, state, "s")
    };
    let start = || async {
        store::orders::open_orders_start(&db.pool, account)
            .await
            .unwrap()
    };
    assert_eq!(start().await, None, "no orders");

    // A final order, however old, and an open order with no date do not count.
    let early = [
        placed("final", OrderState::Completed, Some(1)),
        placed("undated", OrderState::Approved, None),
    ];
    write_page(&db.pool, page(account, &early, None))
        .await
        .unwrap();
    assert_eq!(start().await, None);

    // An open order first returned by a window that starts before its placement counts from the window.
    let windowed = [placed("windowed", OrderState::Approved, Some(20))];
    write_page(
        &db.pool,
        PageWrite {
            window_from: Some(at(15)),
            ..page(account, &windowed, None)
        },
    )
    .await
    .unwrap();
    assert_eq!(start().await, Some(at(15)));

    let older = [placed("older", OrderState::Shipped, Some(10))];
    write_page(&db.pool, page(account, &older, None))
        .await
        .unwrap();
    assert_eq!(
        start().await,
        Some(at(10)),
        "the earliest of all open states"
    );

    // Once that order is final, the next earliest open one is where a re-read starts.
    let delivered = [placed("older", OrderState::Completed, Some(10))];
    write_page(&db.pool, page(account, &delivered, None))
        .await
        .unwrap();
    assert_eq!(start().await, Some(at(15)));
}

/// Several pages written together: an order in two of them is written once, as the later page has it,
/// with the earliest window that returned it, and with one history row from its stored state; the
/// checkpoint goes with them.
#[tokio::test]
async fn pages_written_together_keep_the_last_version_and_the_first_window() {
    let (db, account) = setup().await;
    write_page(
        &db.pool,
        page(account, &[order("1", OrderState::Approved, "200")], None),
    )
    .await
    .unwrap();
    let at = |day: u32| Utc.with_ymd_and_hms(2026, 11, day, 0, 0, 0).unwrap();
    let earlier = [
        order("1", OrderState::Shipped, "500"),
        order("2", OrderState::Approved, "200"),
    ];
    let later = [
        order("3", OrderState::Approved, "200"),
        order("1", OrderState::Delivered, "600"),
        order("2", OrderState::Approved, "200"),
    ];
    let counts = write_pages(
        &db.pool,
        PagesWrite {
            account_id: account,
            marketplace: MarketplaceKind::I1,
            pages: &[
                PageOrders {
                    orders: &earlier,
                    window_from: Some(at(2)),
                },
                PageOrders {
                    orders: &later,
                    window_from: Some(at(3)),
                },
            ],
            checkpoint: Some(("orders", at(4))),
            lease: None,
        },
    )
    .await
    .unwrap();
    assert_eq!(
        (
            counts.seen,
            counts.inserted,
            counts.updated,
            counts.unchanged
        ),
        (5, 2, 1, 2),
        "each order is counted once as written, its other occurrences as unchanged"
    );
    let stored: Vec<(String, String, Option<chrono::DateTime<Utc>>, String)> = sqlx::query_as(
        "select external_id, status_code, first_window_from, xmin::text from orders order by 1",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    let written: Vec<_> = stored
        .iter()
        .map(|(id, code, window, _)| (id.as_str(), code.as_str(), *window))
        .collect();
    assert_eq!(
        written,
        vec![
            ("1", "600", Some(at(2))),
            ("2", "200", Some(at(2))),
            ("3", "200", Some(at(3)))
        ],
        "the last version, and the earliest window"
    );
    let history: Vec<(String, String)> =
        sqlx::query_as("select from_state, to_state from order_state_changes")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert_eq!(history, vec![("approved".into(), "delivered".into())]);
    let cursor_xmin: String = sqlx::query_scalar("select xmin::text from sync_cursors")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert!(
        stored.iter().all(|(.., xmin)| *xmin == cursor_xmin),
        "one transaction: {stored:?}, cursor {cursor_xmin}"
    );
    assert_eq!(
        cursors::get(&db.pool, account, "orders").await.unwrap(),
        Some(at(4))
    );
}

/// PostgreSQL stores no NUL character, neither in `text` nor as `\u0000` in `jsonb`: an order carrying
/// one is stored with U+FFFD in its place (its page used to fail, and every later run with it, so the
/// account's later orders were never stored) and stays unchanged when it comes again; a text that only
/// looks like the escape is kept as sent. A payload error whose body holds one is recorded too.
#[tokio::test]
async fn orders_and_payload_errors_holding_nul_characters_are_stored() {
    let (db, account) = setup().await;
    let mut sent = order("1\0", OrderState::Approved, "2\u{0}00");
    sent.customer_name = Some("Ali\0Veli".into());
    sent.lines[0].product_name = Some("Çay\0".into());
    sent.raw = serde_json::json!({"id": "1", "note": "a\u{0}b", "looks_like": "\\u0000"}).into();
    let orders = [sent];
    let counts = write_page(&db.pool, page(account, &orders, None))
        .await
        .unwrap();
    assert_eq!(counts.inserted, 1);
    let stored: (String, String, String, String, String, String) = sqlx::query_as(
        "select o.external_id, o.customer_name, o.status_code, o.raw->>'note',
                o.raw->>'looks_like', l.product_name
         from orders o join order_lines l on l.order_id = o.id",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(
        stored,
        (
            "1\u{fffd}".to_owned(),
            "Ali\u{fffd}Veli".to_owned(),
            "2\u{fffd}00".to_owned(),
            "a\u{fffd}b".to_owned(),
            "\\u0000".to_owned(),
            "Çay\u{fffd}".to_owned(),
        )
    );
    let again = write_page(&db.pool, page(account, &orders, None))
        .await
        .unwrap();
    assert_eq!((again.inserted, again.updated, again.unchanged), (0, 0, 1));

    store::runs::record_payload_error(
        &db.pool,
        account,
        "orders",
        None,
        "GET orders",
        "malformed\0",
        "{\"id\": \0}",
    )
    .await
    .unwrap();
    let body: String = sqlx::query_scalar("select raw_body from payload_errors")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(body, "{\"id\": \u{fffd}}");
}

/// The daemon's connections give up a lock wait after a minute rather than wait for ever: a write of the
/// poller beside another holds its locks while it waits for that one to commit, which PostgreSQL's
/// deadlock detection cannot see (`store::connect`).
#[tokio::test]
async fn the_daemons_connections_bound_their_lock_waits() {
    let db = common::test_db().await;
    let pool = store::connect(&db.url, 1).await.unwrap();
    let lock_timeout: String = sqlx::query_scalar("show lock_timeout")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(lock_timeout, "1min");
}
