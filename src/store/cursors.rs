//! Sync cursors: per account and stream, the instant before which every change is committed.

use chrono::{DateTime, Utc};
use sqlx::PgExecutor;

/// The cursor of a stream, if it has one yet.
pub async fn get(
    db: impl PgExecutor<'_>,
    account_id: i64,
    stream: &str,
) -> Result<Option<DateTime<Utc>>, sqlx::Error> {
    sqlx::query_scalar("select value from sync_cursors where account_id = $1 and stream = $2")
        .bind(account_id)
        .bind(stream)
        .fetch_optional(db)
        .await
}

/// Moves a cursor forward to `value`; a value behind the stored one leaves the cursor where it is.
/// Returns the cursor after the call.
pub async fn advance(
    db: impl PgExecutor<'_>,
    account_id: i64,
    stream: &str,
    value: DateTime<Utc>,
) -> Result<DateTime<Utc>, sqlx::Error> {
    sqlx::query_scalar(
        "insert into sync_cursors (account_id, stream, value) values ($1, $2, $3)
         on conflict (account_id, stream) do update
            set value = greatest(sync_cursors.value, excluded.value),
                updated_at = case when excluded.value > sync_cursors.value then now()
                                  else sync_cursors.updated_at end
         returning value",
    )
    .bind(account_id)
    .bind(stream)
    .bind(value)
    .fetch_one(db)
    .await
}
