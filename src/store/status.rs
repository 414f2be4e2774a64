//! What `ordersync status` shows: every configured account with its streams' cursors and last runs.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;

/// One account's stream, or an account that has no stream yet (`stream` is `None`).
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct StreamStatus {
    pub account: String,
    pub marketplace: String,
    pub stream: Option<String>,
    pub cursor: Option<DateTime<Utc>>,
    pub lag_seconds: Option<i64>,
    pub last_success_at: Option<DateTime<Utc>>,
    pub last_outcome: Option<String>,
    pub last_error: Option<String>,
}

pub async fn streams(pool: &PgPool) -> Result<Vec<StreamStatus>, sqlx::Error> {
    sqlx::query_as(
        "select a.name as account, a.marketplace, s.stream, s.cursor,
                extract(epoch from s.lag)::bigint as lag_seconds, s.last_success_at,
                s.last_outcome, s.last_error
         from accounts a
         left join sync_status s on s.account = a.name
         where a.removed_at is null
         order by a.name, s.stream",
    )
    .fetch_all(pool)
    .await
}
