//! Poll leases: at most one replica polls an account's stream at a time. A lease is a row with an expiry
//! that its holder renews while it works (every page write renews it, see
//! [`orders::write_pages`](super::orders::write_pages)); a holder that dies stops renewing, and the lease
//! is free once it expires.

use std::time::Duration;

use sqlx::PgExecutor;

/// Who holds a lease, and on what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub account_id: i64,
    pub stream: String,
    pub holder: String,
    pub ttl: Duration,
}

/// Takes the lease if it is free, expired, or already ours. Returns whether we hold it now.
pub async fn acquire(db: impl PgExecutor<'_>, lease: &Lease) -> Result<bool, sqlx::Error> {
    let got: Option<String> = sqlx::query_scalar(
        "insert into sync_leases (account_id, stream, holder, expires_at)
         values ($1, $2, $3, now() + $4)
         on conflict (account_id, stream) do update
            set holder = excluded.holder, acquired_at = now(), expires_at = excluded.expires_at
            where sync_leases.expires_at < now() or sync_leases.holder = excluded.holder
         returning holder",
    )
    .bind(lease.account_id)
    .bind(&lease.stream)
    .bind(&lease.holder)
    .bind(ttl_interval(lease.ttl))
    .fetch_optional(db)
    .await?;
    Ok(got.is_some())
}

/// Extends the lease if we still hold it. Returns whether we do.
pub async fn renew(db: impl PgExecutor<'_>, lease: &Lease) -> Result<bool, sqlx::Error> {
    let rows = sqlx::query(
        "update sync_leases set expires_at = now() + $4
         where account_id = $1 and stream = $2 and holder = $3 and expires_at >= now()",
    )
    .bind(lease.account_id)
    .bind(&lease.stream)
    .bind(&lease.holder)
    .bind(ttl_interval(lease.ttl))
    .execute(db)
    .await?
    .rows_affected();
    Ok(rows == 1)
}

/// Gives the lease up, if we hold it.
pub async fn release(db: impl PgExecutor<'_>, lease: &Lease) -> Result<(), sqlx::Error> {
    sqlx::query("delete from sync_leases where account_id = $1 and stream = $2 and holder = $3")
        .bind(lease.account_id)
        .bind(&lease.stream)
        .bind(&lease.holder)
        .execute(db)
        .await?;
    Ok(())
}

fn ttl_interval(ttl: Duration) -> sqlx::postgres::types::PgInterval {
    sqlx::postgres::types::PgInterval {
        months: 0,
        days: 0,
        microseconds: i64::try_from(ttl.as_micros()).unwrap_or(i64::MAX),
    }
}
