//! The `accounts` table, kept in step with the configuration.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use crate::config::AccountConfig;

/// Inserts or updates every configured account, marks accounts that left the configuration as removed
/// (their orders stay), and returns the id of each configured account by name.
pub async fn sync_with_config(
    pool: &PgPool,
    accounts: &[AccountConfig],
) -> Result<HashMap<String, i64>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let mut ids = HashMap::with_capacity(accounts.len());
    for account in accounts {
        let changed: Option<i64> = sqlx::query_scalar(
            "insert into accounts (name, marketplace, base_url, enabled, schedule)
             values ($1, $2, $3, $4, $5)
             on conflict (name) do update
                set marketplace = excluded.marketplace, base_url = excluded.base_url,
                    enabled = excluded.enabled, schedule = excluded.schedule, removed_at = null,
                    updated_at = now()
                where (accounts.marketplace, accounts.base_url, accounts.enabled, accounts.schedule)
                      is distinct from
                      (excluded.marketplace, excluded.base_url, excluded.enabled, excluded.schedule)
                   or accounts.removed_at is not null
             returning id",
        )
        .bind(&account.name)
        .bind(account.marketplace.as_str())
        .bind(account.base_url.as_str())
        .bind(account.enabled)
        .bind(&account.schedule)
        .fetch_optional(&mut *tx)
        .await?;
        // An unchanged row is not updated, so RETURNING gives nothing: look its id up.
        let id = match changed {
            Some(id) => id,
            None => {
                sqlx::query_scalar("select id from accounts where name = $1")
                    .bind(&account.name)
                    .fetch_one(&mut *tx)
                    .await?
            }
        };
        ids.insert(account.name.clone(), id);
    }
    let names: Vec<&str> = accounts.iter().map(|a| a.name.as_str()).collect();
    sqlx::query(
        "update accounts set removed_at = now(), updated_at = now()
         where removed_at is null and not (name = any($1))",
    )
    .bind(&names)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(ids)
}

/// When the account was first added to the database from the configuration (before any of its orders
/// was read): a stream that lists only changes starts there, since another stream backfills.
pub async fn registered_at(pool: &PgPool, account_id: i64) -> Result<DateTime<Utc>, sqlx::Error> {
    sqlx::query_scalar("select created_at from accounts where id = $1")
        .bind(account_id)
        .fetch_one(pool)
        .await
}
