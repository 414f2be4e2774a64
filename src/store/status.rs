//! What `ordersync status` shows: every configured account with its streams' cursors and last runs, and
//! its outbox transitions counted by state.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;

use super::outbox::OutboxState;

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

/// One account's outbox: how many transitions are in each state (every state is present, zeros too).
#[derive(Debug, Clone, Serialize)]
pub struct OutboxCounts {
    pub account: String,
    pub counts: BTreeMap<String, i64>,
}

pub async fn outbox(pool: &PgPool) -> Result<Vec<OutboxCounts>, sqlx::Error> {
    let rows: Vec<(String, String, i64)> = sqlx::query_as(
        "select a.name, s.state, count(o.id)
         from accounts a
         cross join unnest($1::text[]) as s(state)
         left join outbox o on o.account_id = a.id and o.state = s.state
         where a.removed_at is null
         group by a.name, s.state
         order by a.name",
    )
    .bind(OutboxState::ALL.map(OutboxState::as_str).as_slice())
    .fetch_all(pool)
    .await?;
    let mut accounts: Vec<OutboxCounts> = Vec::new();
    for (account, state, n) in rows {
        match accounts.last_mut() {
            Some(last) if last.account == account => {
                last.counts.insert(state, n);
            }
            _ => accounts.push(OutboxCounts {
                account,
                counts: BTreeMap::from([(state, n)]),
            }),
        }
    }
    Ok(accounts)
}
