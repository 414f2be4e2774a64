//! `ordersync demo` — the main job on an embedded default — and `ordersync sandbox`.
//!
//! The demo runs the real daemon against the sandbox's five fake marketplaces, whose orders keep
//! changing, on `DATABASE_URL` when it is set and otherwise on a private PostgreSQL cluster kept under a
//! data directory (created on first use, reused afterwards, stopped on exit). It prints a live summary
//! and, at the end, how to look at the data with psql.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::config::{AccountConfig, Credentials, Secret, Settings};
use crate::domain::MarketplaceKind;
use crate::embedded_pg::Cluster;
use crate::sandbox::{Api, Sandbox, SandboxConfig};
use crate::store;

/// The database the demo writes to on the embedded cluster.
const DEMO_DATABASE: &str = "ordersync_demo";

/// Options of `ordersync demo`.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Stop after this long; `None` runs until Ctrl-C.
    pub duration: Option<Duration>,
    /// Where the embedded cluster lives.
    pub data_dir: PathBuf,
    /// Orders each fake marketplace starts with.
    pub orders: usize,
    /// Only serve the demo database (for psql) until Ctrl-C.
    pub db_only: bool,
}

/// The marketplace each sandbox API fakes.
fn marketplace_of(api: Api) -> MarketplaceKind {
    match api {
        Api::Allesgo => MarketplaceKind::Allesgo,
        Api::C2c => MarketplaceKind::C2c,
        Api::I1 => MarketplaceKind::I1,
        Api::Labs => MarketplaceKind::Labs,
        Api::Gittigidiyor => MarketplaceKind::Gittigidiyor,
    }
}

/// One account per fake marketplace, with the sandbox's credentials.
pub fn sandbox_accounts(sandbox: &Sandbox, schedule: &str) -> anyhow::Result<Vec<AccountConfig>> {
    let c = sandbox.credentials();
    Api::ALL
        .into_iter()
        .map(|api| {
            let marketplace = marketplace_of(api);
            let credentials = match marketplace {
                MarketplaceKind::Allesgo => Credentials::Allesgo {
                    store_id: c.allesgo_store_id.clone(),
                    access_token: Secret::new(c.allesgo_access_token.clone()),
                },
                MarketplaceKind::C2c => Credentials::C2c {
                    domain: c.c2c_domain.clone(),
                    api_key: Secret::new(c.c2c_api_key.clone()),
                    api_password: Secret::new(c.c2c_api_password.clone()),
                },
                MarketplaceKind::I1 => Credentials::I1 {
                    token: Secret::new(c.i1_token.clone()),
                    auth_header: "Authorization".to_owned(),
                    auth_scheme: "Bearer".to_owned(),
                },
                MarketplaceKind::Labs => Credentials::Labs {
                    token: Secret::new(c.labs_token.clone()),
                },
                MarketplaceKind::Gittigidiyor => Credentials::Gittigidiyor {
                    api_key: Secret::new(c.gg_api_key.clone()),
                    secret_key: Secret::new(c.gg_secret_key.clone()),
                    username: c.gg_role_name.clone(),
                    password: Secret::new(c.gg_role_password.clone()),
                    lang: "tr".to_owned(),
                },
            };
            Ok(AccountConfig {
                name: format!("demo-{}", api.name()),
                marketplace,
                base_url: sandbox.base_url(api).parse().context("sandbox base URL")?,
                enabled: true,
                schedule: schedule.to_owned(),
                // The sandbox spreads its orders over the last 90 days.
                initial_sync_days: 91,
                overlap: Duration::from_secs(600),
                page_size: crate::config::default_page_size(marketplace),
                requests_per_second: std::num::NonZeroU32::new(200)
                    .unwrap_or(std::num::NonZeroU32::MIN),
                timeout: Duration::from_secs(10),
                credentials,
            })
        })
        .collect()
}

/// The database the demo uses: `DATABASE_URL` (or `database.url`) when set, else the embedded cluster.
struct DemoDatabase {
    url: String,
    cluster: Option<Cluster>,
}

async fn open_database(settings: &Settings, data_dir: &Path) -> anyhow::Result<DemoDatabase> {
    if let Some(url) = &settings.database.url {
        return Ok(DemoDatabase {
            url: url.expose().to_owned(),
            cluster: None,
        });
    }
    println!(
        "Starting the embedded PostgreSQL in {} …",
        data_dir.display()
    );
    let dir = data_dir.to_owned();
    let cluster = tokio::task::spawn_blocking(move || Cluster::start(&dir))
        .await
        .context("embedded PostgreSQL start-up task")?
        .context("cannot start the embedded PostgreSQL (or set DATABASE_URL)")?;
    let admin = PgPool::connect(&cluster.admin_url())
        .await
        .context("cannot connect to the embedded PostgreSQL")?;
    let exists: bool =
        sqlx::query_scalar("select exists (select 1 from pg_database where datname = $1)")
            .bind(DEMO_DATABASE)
            .fetch_one(&admin)
            .await?;
    if !exists {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "create database {DEMO_DATABASE}"
        )))
        .execute(&admin)
        .await?;
    }
    admin.close().await;
    Ok(DemoDatabase {
        url: cluster.url(DEMO_DATABASE),
        cluster: Some(cluster),
    })
}

/// Runs the demo until Ctrl-C, SIGTERM or the duration.
pub async fn run(
    settings: Settings,
    options: DemoOptions,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let mut database = open_database(&settings, &options.data_dir).await?;
    if options.db_only {
        println!("The demo database is being served until Ctrl-C. Open it with:");
        println!("  psql {}", database.url);
        shutdown.await;
        return stop(database);
    }
    let pool = store::connect(&database.url, settings.database.max_connections)
        .await
        .context("cannot connect to the demo database")?;
    store::migrate(&pool).await?;

    // A new market every run: the demo database keeps what earlier runs synced, and a fixed seed would
    // show those orders' statuses jumping back to their seeded values.
    let seed = u64::try_from(chrono::Utc::now().timestamp_micros()).unwrap_or_default();
    let sandbox = Sandbox::start(SandboxConfig {
        orders_per_api: options.orders,
        seed,
        ..SandboxConfig::default()
    })
    .await
    .context("cannot start the sandbox")?;
    println!(
        "Sandbox: five fake marketplaces on http://{} with {} orders each, changing every few seconds.",
        sandbox.addr(),
        options.orders
    );
    let mut demo_settings = settings.clone();
    demo_settings.accounts = sandbox_accounts(&sandbox, "*/10 * * * * *")?;
    demo_settings.database.url = Some(Secret::new(database.url.clone()));
    demo_settings.database.auto_migrate = true;
    // A daemon already running on this machine may hold the usual port.
    demo_settings.http.listen.set_port(0);

    let sandbox = Arc::new(sandbox);
    let stop_background = CancellationToken::new();
    let churn = tokio::spawn(churn(sandbox.clone(), stop_background.clone()));
    let summary = tokio::spawn(print_summaries(pool.clone(), stop_background.clone()));
    let operator = tokio::spawn(queue_decisions(pool.clone(), stop_background.clone()));

    let duration = options.duration;
    let until = async move {
        match duration {
            Some(d) => {
                tokio::select! {
                    () = shutdown => {}
                    () = tokio::time::sleep(d) => {}
                }
            }
            None => shutdown.await,
        }
    };
    let daemon_pool = store::connect(&database.url, settings.database.max_connections).await?;
    crate::daemon::run(demo_settings, daemon_pool, until).await?;

    stop_background.cancel();
    let _ = churn.await;
    let _ = summary.await;
    let _ = operator.await;
    println!();
    print_summary(&pool).await?;
    pool.close().await;
    if let Ok(sandbox) = Arc::try_unwrap(sandbox) {
        sandbox.shutdown().await;
    }

    println!();
    println!("Look at the data with psql:");
    match &database.cluster {
        Some(_) => {
            println!(
                "  ordersync demo --db-only          # serves the demo database and prints its URL"
            );
            println!(
                "  psql <that URL> -c 'select * from order_overview order by placed_at desc limit 20'"
            );
        }
        None => println!(
            "  psql \"$DATABASE_URL\" -c 'select * from order_overview order by placed_at desc limit 20'"
        ),
    }
    println!(
        "Other views and tables: sync_status, order_state_changes, sync_runs, outbox, unknown_values."
    );
    database.cluster.take().map_or(Ok(()), |mut c| {
        c.stop().context("cannot stop the embedded PostgreSQL")
    })
}

fn stop(mut database: DemoDatabase) -> anyhow::Result<()> {
    match database.cluster.take() {
        Some(mut cluster) => cluster
            .stop()
            .context("cannot stop the embedded PostgreSQL"),
        None => Ok(()),
    }
}

/// Keeps the fake marketplaces busy: new orders and status changes every few seconds.
async fn churn(sandbox: Arc<Sandbox>, stop: CancellationToken) {
    let mut every = tokio::time::interval(Duration::from_secs(3));
    loop {
        tokio::select! {
            _ = every.tick() => {}
            () = stop.cancelled() => return,
        }
        for api in Api::ALL {
            sandbox.add_orders(api, 1);
            sandbox.change_orders(api, 3);
        }
    }
}

/// Plays the shop operator: every few seconds, queues a decision for an order waiting for one, through
/// the SQL function other programs use (`ordersync_enqueue`), for the daemon's outbox worker to push.
async fn queue_decisions(pool: PgPool, stop: CancellationToken) {
    let mut every = tokio::time::interval(Duration::from_secs(4));
    loop {
        tokio::select! {
            _ = every.tick() => {}
            () = stop.cancelled() => return,
        }
        let queued = sqlx::query(
            "select ordersync_enqueue(a.name, o.external_id, d.kind, d.args,
                    'demo:' || a.name || ':' || o.external_id || ':' || d.kind, 5)
             from accounts a
             join (values ('demo-c2c', 'awaiting_approval', 'set-state', '{\"state\": \"Hazırlanıyor\"}'::jsonb),
                          ('demo-labs', 'approved', 'set-status', '{\"status_code\": 2}'::jsonb))
                  as d(account, state, kind, args) on d.account = a.name
             cross join lateral (
                select o.external_id from orders o
                where o.account_id = a.id and o.state = d.state
                  and not exists (select 1 from outbox t
                                  where t.account_id = a.id and t.order_external_id = o.external_id)
                order by o.placed_at desc limit 1) o",
        )
        .execute(&pool)
        .await;
        if let Err(e) = queued {
            eprintln!("could not queue a demo decision: {e}");
        }
    }
}

async fn print_summaries(pool: PgPool, stop: CancellationToken) {
    let mut every = tokio::time::interval(Duration::from_secs(5));
    loop {
        tokio::select! {
            _ = every.tick() => {}
            () = stop.cancelled() => return,
        }
        if let Err(e) = print_summary(&pool).await {
            eprintln!("summary unavailable: {e}");
        }
    }
}

async fn print_summary(pool: &PgPool) -> Result<(), sqlx::Error> {
    let rows: Vec<(String, i64, i64, i64)> = sqlx::query_as(
        "select a.marketplace,
                (select count(*) from orders o where o.account_id = a.id),
                (select count(*) from order_state_changes c join orders o on o.id = c.order_id
                  where o.account_id = a.id),
                (select count(*) from outbox t where t.account_id = a.id and t.state = 'succeeded')
         from accounts a where a.removed_at is null order by a.marketplace",
    )
    .fetch_all(pool)
    .await?;
    let line: Vec<String> = rows
        .iter()
        .map(|(m, orders, changes, pushed)| {
            format!("{m}: {orders} orders, {changes} state changes, {pushed} transitions pushed")
        })
        .collect();
    println!(
        "[{}] {}",
        chrono::Utc::now().format("%H:%M:%S"),
        line.join(" | ")
    );
    Ok(())
}

/// `ordersync sandbox`: only the fake marketplaces, until Ctrl-C.
pub async fn serve_sandbox(
    port: u16,
    orders: usize,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let sandbox = Sandbox::start(SandboxConfig {
        port,
        orders_per_api: orders,
        ..SandboxConfig::default()
    })
    .await
    .with_context(|| format!("cannot start the sandbox on port {port}"))?;
    println!(
        "Sandbox listening on http://{} — fake credentials, not secrets:",
        sandbox.addr()
    );
    for account in sandbox_accounts(&sandbox, "0 */5 * * * *")? {
        println!();
        println!("[[accounts]]");
        println!("name = \"{}\"", account.name);
        println!("marketplace = \"{}\"", account.marketplace);
        println!("base_url = \"{}\"", account.base_url);
        println!("initial_sync_days = 91");
        match &account.credentials {
            Credentials::Allesgo {
                store_id,
                access_token,
            } => {
                println!("store_id = \"{store_id}\"");
                println!("access_token = \"{}\"", access_token.expose());
            }
            Credentials::C2c {
                domain,
                api_key,
                api_password,
            } => {
                println!("domain = \"{domain}\"");
                println!("api_key = \"{}\"", api_key.expose());
                println!("api_password = \"{}\"", api_password.expose());
            }
            Credentials::I1 { token, .. } | Credentials::Labs { token } => {
                println!("token = \"{}\"", token.expose());
            }
            Credentials::Gittigidiyor {
                api_key,
                secret_key,
                username,
                password,
                lang,
            } => {
                println!("api_key = \"{}\"", api_key.expose());
                println!("secret_key = \"{}\"", secret_key.expose());
                println!("username = \"{username}\"");
                println!("password = \"{}\"", password.expose());
                println!("lang = \"{lang}\"");
            }
        }
    }
    shutdown.await;
    sandbox.shutdown().await;
    Ok(())
}
