//! `ordersync demo` as a new user runs it: no DATABASE_URL, an embedded PostgreSQL, the five fake
//! marketplaces, the real daemon.

use std::process::Command;

use ordersync::embedded_pg::Cluster;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_syncs_all_five_marketplaces_into_an_embedded_postgres() {
    let dir = tempfile::Builder::new()
        .prefix("ordersync-demo-")
        .tempdir()
        .unwrap();
    let data_dir = dir.path().join("pg");
    let output = Command::new(env!("CARGO_BIN_EXE_ordersync"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env_remove("DATABASE_URL")
        .env_remove("ORDERSYNC_CONFIG")
        .env("ORDERSYNC__HTTP__LISTEN", "127.0.0.1:0")
        .args(["demo", "--duration", "15s", "--orders", "50", "--data-dir"])
        .arg(&data_dir)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("psql"),
        "it says how to look at the data: {stdout}"
    );

    // The cluster was stopped on exit; the data is still there.
    let cluster = tokio::task::spawn_blocking(move || Cluster::start(&data_dir))
        .await
        .unwrap()
        .unwrap();
    let pool = sqlx::PgPool::connect(&cluster.url("ordersync_demo"))
        .await
        .unwrap();
    let per_marketplace: Vec<(String, i64)> = sqlx::query_as(
        "select a.marketplace, count(o.id) from accounts a left join orders o on o.account_id = a.id
         group by a.marketplace order by a.marketplace",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(per_marketplace.len(), 5, "{per_marketplace:?}");
    for (marketplace, orders) in &per_marketplace {
        assert!(*orders >= 50, "{marketplace}: only {orders} orders");
    }
    pool.close().await;
}
