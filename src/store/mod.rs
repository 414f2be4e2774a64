//! The PostgreSQL store: connecting, the embedded migrations, and plain functions over
//! [`sqlx::PgExecutor`] for each table family (accounts, orders, cursors, runs, leases, outbox).
//!
//! Architecture invariant: a page of orders (or several consecutive pages) and the cursor checkpoint it
//! justifies are written in one transaction ([`orders::write_pages`]); the cursor never moves back
//! (checked here and by a trigger).

pub mod accounts;
pub mod catalog;
pub mod cursors;
pub mod leases;
pub mod orders;
pub mod outbox;
pub mod runs;
pub mod status;

use std::time::Duration;

use sqlx::PgPool;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

/// The migrations, embedded in the binary.
pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// A store failure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("the lease on account {account_id} stream `{stream}` was lost to another replica")]
    LeaseLost { account_id: i64, stream: String },
}

/// Whether a statement that failed with `error` may succeed when run again: the connection failed or
/// none could be had in time, or PostgreSQL ended the statement for a passing reason (a serialization
/// failure or deadlock, a server shutting down or starting, too many connections, short of memory).
pub fn may_pass(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut => true,
        sqlx::Error::Database(e) => e.code().is_some_and(|code| {
            (code.starts_with("08") && code != "08P01")
                || [
                    "40001", "40P01", "53000", "53200", "53300", "57P01", "57P02", "57P03",
                ]
                .contains(&code.as_ref())
        }),
        _ => false,
    }
}

/// How long a statement waits for a row or table lock before it fails. A write of the poller that goes
/// beside the one before it holds its orders' locks while it waits for that write to commit, a wait
/// PostgreSQL cannot see: were the write before it to wait for a third transaction that waits for those
/// locks (another writer of the same orders, in another order), none would ever end. With this bound
/// the write before fails after a minute, its run and the write beside it end, and the next run goes
/// on; no legitimate wait for a lock of ordersync's own lasts that long.
const LOCK_TIMEOUT: &str = "1min";

/// Opens a pool. The URL is a secret (it may hold a password): errors never include it.
pub async fn connect(url: &str, max_connections: u32) -> Result<PgPool, StoreError> {
    let options: PgConnectOptions = url.parse()?;
    let pool = PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(10))
        .connect_with(
            options
                .application_name("ordersync")
                .options([("lock_timeout", LOCK_TIMEOUT)]),
        )
        .await?;
    Ok(pool)
}

/// Applies pending migrations; returns how many were applied.
pub async fn migrate(pool: &PgPool) -> Result<usize, StoreError> {
    let before = applied_migrations(pool).await?;
    MIGRATOR.run(pool).await?;
    Ok(applied_migrations(pool).await? - before)
}

/// Whether every embedded migration has been applied.
pub async fn migrations_current(pool: &PgPool) -> Result<bool, StoreError> {
    Ok(applied_migrations(pool).await? >= MIGRATOR.iter().count())
}

async fn applied_migrations(pool: &PgPool) -> Result<usize, StoreError> {
    let exists: bool = sqlx::query_scalar("select to_regclass('_sqlx_migrations') is not null")
        .fetch_one(pool)
        .await?;
    if !exists {
        return Ok(0);
    }
    let n: i64 = sqlx::query_scalar("select count(*) from _sqlx_migrations where success")
        .fetch_one(pool)
        .await?;
    Ok(n as usize)
}
