//! Test support: every test gets its own database, on `DATABASE_URL`'s server when set, otherwise on a
//! throw-away cluster started once per test binary with the machine's PostgreSQL binaries.
#![allow(dead_code)]

pub mod daemon;
pub mod in_step;

use std::sync::{Mutex, OnceLock};

use ordersync::embedded_pg::Cluster;
use sqlx::PgPool;
use sqlx::postgres::PgConnectOptions;

/// The throw-away cluster and its directory, removed when the test binary exits.
static CLUSTER: Mutex<Option<(Cluster, tempfile::TempDir)>> = Mutex::new(None);
static ADMIN_URL: OnceLock<String> = OnceLock::new();

extern "C" fn stop_cluster() {
    if let Ok(mut cluster) = CLUSTER.lock()
        && let Some((mut cluster, dir)) = cluster.take()
    {
        let _ = cluster.stop();
        drop(dir);
    }
}

/// The URL of a database on the test server with administrative rights.
pub fn admin_url() -> &'static str {
    ADMIN_URL.get_or_init(|| {
        if let Ok(url) = std::env::var("DATABASE_URL") {
            return url;
        }
        let dir = tempfile::Builder::new()
            .prefix("ordersync-test-pg-")
            .tempdir()
            .expect("temporary directory");
        let cluster = Cluster::start(dir.path()).expect("start a throw-away PostgreSQL cluster");
        let url = cluster.admin_url();
        *CLUSTER.lock().unwrap() = Some((cluster, dir));
        // SAFETY: registering a plain extern "C" function with no captured state.
        unsafe { libc::atexit(stop_cluster) };
        url
    })
}

/// A fresh, migrated database of its own.
pub struct TestDb {
    pub pool: PgPool,
    pub url: String,
    pub name: String,
}

pub async fn test_db() -> TestDb {
    let admin: PgConnectOptions = admin_url().parse().expect("admin url");
    let name = format!("ordersync_test_{}", uuid::Uuid::new_v4().simple());
    let admin_pool = PgPool::connect_with(admin.clone())
        .await
        .expect("connect admin");
    // The name is generated above from a UUID: nothing of it comes from outside.
    sqlx::query(sqlx::AssertSqlSafe(format!("create database {name}")))
        .execute(&admin_pool)
        .await
        .expect("create test database");
    admin_pool.close().await;
    let options = admin.database(&name);
    let url = db_url(&name);
    let pool = PgPool::connect_with(options)
        .await
        .expect("connect test db");
    ordersync::store::migrate(&pool).await.expect("migrate");
    TestDb { pool, url, name }
}

/// The URL of `database` on the test server.
pub fn db_url(database: &str) -> String {
    let mut url = url::Url::parse(admin_url()).expect("admin url is a URL");
    url.set_path(&format!("/{database}"));
    url.to_string()
}

/// An account configuration for tests, with the sandbox's default credentials.
pub fn account(
    name: &str,
    marketplace: ordersync::domain::MarketplaceKind,
    base_url: &str,
) -> ordersync::config::AccountConfig {
    use ordersync::config::{Credentials, Secret};
    use ordersync::domain::MarketplaceKind::*;
    let credentials = match marketplace {
        Allesgo => Credentials::Allesgo {
            store_id: "4242".into(),
            access_token: Secret::new("sandbox-allesgo-token"),
        },
        C2c => Credentials::C2c {
            domain: "www.sandbox-shop.com".into(),
            api_key: Secret::new("sandbox-c2c-key"),
            api_password: Secret::new("sandbox-c2c-password"),
        },
        I1 => Credentials::I1 {
            token: Secret::new("sandbox-i1-token"),
            auth_header: "Authorization".into(),
            auth_scheme: "Bearer".into(),
        },
        Labs => Credentials::Labs {
            token: Secret::new("sandbox-labs-token"),
        },
        Gittigidiyor => Credentials::Gittigidiyor {
            api_key: Secret::new("sandbox-gg-apikey"),
            secret_key: Secret::new("sandbox-gg-secret"),
            username: "sandbox-gg-role".into(),
            password: Secret::new("sandbox-gg-rolepass"),
            lang: "tr".into(),
        },
    };
    ordersync::config::AccountConfig {
        name: name.to_owned(),
        marketplace,
        base_url: url::Url::parse(base_url).expect("base url"),
        enabled: true,
        schedule: "0 */5 * * * *".into(),
        initial_sync_days: 91,
        overlap: std::time::Duration::from_secs(600),
        page_size: ordersync::config::default_page_size(marketplace),
        requests_per_second: std::num::NonZeroU32::new(100_000).unwrap(),
        timeout: std::time::Duration::from_secs(5),
        credentials,
    }
}

/// A sandbox with `orders` orders per marketplace, a fresh database, and a poller per marketplace.
pub struct SyncEnv {
    pub db: TestDb,
    pub sandbox: ordersync::sandbox::Sandbox,
    pub accounts: std::collections::HashMap<String, i64>,
}

pub fn kind_of(api: ordersync::sandbox::Api) -> ordersync::domain::MarketplaceKind {
    use ordersync::domain::MarketplaceKind;
    use ordersync::sandbox::Api;
    match api {
        Api::Allesgo => MarketplaceKind::Allesgo,
        Api::C2c => MarketplaceKind::C2c,
        Api::I1 => MarketplaceKind::I1,
        Api::Labs => MarketplaceKind::Labs,
        Api::Gittigidiyor => MarketplaceKind::Gittigidiyor,
    }
}

impl SyncEnv {
    pub async fn start(orders: usize) -> SyncEnv {
        let db = test_db().await;
        let sandbox = ordersync::sandbox::Sandbox::start(ordersync::sandbox::SandboxConfig {
            orders_per_api: orders,
            ..Default::default()
        })
        .await
        .expect("sandbox");
        SyncEnv {
            db,
            sandbox,
            accounts: Default::default(),
        }
    }

    /// The configuration of the account polling `api` in the sandbox.
    pub fn account(&self, api: ordersync::sandbox::Api) -> ordersync::config::AccountConfig {
        account(api.name(), kind_of(api), &self.sandbox.base_url(api))
    }

    /// A poller for `account` (as another replica when `holder` differs).
    pub async fn poller(
        &mut self,
        account: &ordersync::config::AccountConfig,
        holder: &str,
        settings: ordersync::poller::PollSettings,
    ) -> ordersync::poller::AccountPoller {
        let ids = ordersync::store::accounts::sync_with_config(
            &self.db.pool,
            std::slice::from_ref(account),
        )
        .await
        .expect("accounts");
        self.accounts.extend(ids.clone());
        let http = ordersync::http::HttpClient::new(
            &account.http_settings(),
            account.credentials.secret_values(),
        )
        .expect("http client");
        let marketplace: std::sync::Arc<dyn ordersync::marketplace::Marketplace> =
            std::sync::Arc::from(ordersync::marketplace::build(
                account,
                http,
                &Default::default(),
            ));
        ordersync::poller::AccountPoller::new(
            self.db.pool.clone(),
            ids[&account.name],
            account.clone(),
            marketplace,
            holder.to_owned(),
            settings,
        )
    }
}

/// Poll settings for tests: quick backoff.
pub fn fast_retries() -> ordersync::poller::PollSettings {
    ordersync::poller::PollSettings {
        min_backoff: std::time::Duration::from_millis(10),
        max_backoff: std::time::Duration::from_millis(200),
        ..Default::default()
    }
}
