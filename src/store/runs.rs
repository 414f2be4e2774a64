//! `sync_runs`: one row per poll of an account's stream, opened when the run starts and closed with its
//! counts and outcome.

use chrono::{DateTime, Utc};
use sqlx::PgExecutor;

use crate::domain::storable_text;

use super::orders::PageCounts;

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunOutcome {
    Succeeded,
    Failed,
    /// Stopped by shutdown before it finished; the cursor covers what was committed.
    Interrupted,
}

impl RunOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            RunOutcome::Succeeded => "succeeded",
            RunOutcome::Failed => "failed",
            RunOutcome::Interrupted => "interrupted",
        }
    }
}

/// What a run did, accumulated page by page.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RunTotals {
    pub pages: u32,
    pub requests: u32,
    pub counts: PageCounts,
}

impl std::ops::AddAssign for RunTotals {
    fn add_assign(&mut self, other: RunTotals) {
        self.pages += other.pages;
        self.requests += other.requests;
        self.counts += other.counts;
    }
}

/// Opens a run row and returns its id.
pub async fn start(
    db: impl PgExecutor<'_>,
    account_id: i64,
    stream: &str,
    holder: &str,
    replay: bool,
    window: (DateTime<Utc>, DateTime<Utc>),
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "insert into sync_runs (account_id, stream, holder, replay, window_from, window_to)
         values ($1, $2, $3, $4, $5, $6) returning id",
    )
    .bind(account_id)
    .bind(stream)
    .bind(holder)
    .bind(replay)
    .bind(window.0)
    .bind(window.1)
    .fetch_one(db)
    .await
}

/// Closes a run row.
pub async fn finish(
    db: impl PgExecutor<'_>,
    run_id: i64,
    totals: &RunTotals,
    outcome: RunOutcome,
    error: Option<&str>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "update sync_runs set finished_at = now(), pages = $2, requests = $3, seen = $4,
            inserted = $5, updated = $6, unchanged = $7, outcome = $8, error = $9
         where id = $1",
    )
    .bind(run_id)
    .bind(totals.pages as i32)
    .bind(totals.requests as i32)
    .bind(totals.counts.seen as i32)
    .bind(totals.counts.inserted as i32)
    .bind(totals.counts.updated as i32)
    .bind(totals.counts.unchanged as i32)
    .bind(outcome.as_str())
    .bind(error.map(storable_text))
    .execute(db)
    .await?;
    Ok(())
}

/// Records a payload that could not be parsed, with its (redacted) body.
pub async fn record_payload_error(
    db: impl PgExecutor<'_>,
    account_id: i64,
    stream: &str,
    run_id: Option<i64>,
    request: &str,
    error: &str,
    raw_body: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "insert into payload_errors (account_id, stream, run_id, request, error, raw_body)
         values ($1, $2, $3, $4, $5, $6)",
    )
    .bind(account_id)
    .bind(stream)
    .bind(run_id)
    .bind(storable_text(request))
    .bind(storable_text(error))
    .bind(storable_text(raw_body))
    .execute(db)
    .await?;
    Ok(())
}
