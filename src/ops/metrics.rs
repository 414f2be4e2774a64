//! The Prometheus metrics: their names, the functions that record them, and the gauges read from the
//! database when `/metrics` is scraped.
//!
//! Two kinds of series:
//! - **Counters and the latency histogram** count what this process did (requests, runs, orders written,
//!   retries, outbox attempts). They start at zero when the process starts; sum them across replicas.
//! - **Gauges of state** (freshness, last success, outbox depth and oldest pending age) are read from the
//!   database at scrape time, so every replica reports the same, correct values whichever replica did the
//!   work. Take `max` across replicas, not the sum.
//!
//! Every label has a small, fixed set of values: account names come from the configuration, marketplaces,
//! streams, outcomes, states and status classes from the code. No label ever holds an order id, a URL or
//! an error message.
//!
//! Recording goes through the [`metrics`] facade: without an installed recorder (the one-shot commands,
//! most tests) it costs a branch and records nothing.

use std::sync::OnceLock;
use std::time::Duration;

use metrics::{
    Label, Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram,
};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use sqlx::PgPool;

use crate::domain::MarketplaceKind;
use crate::store::orders::PageCounts;

pub const API_REQUESTS: &str = "ordersync_api_requests_total";
pub const API_REQUEST_DURATION: &str = "ordersync_api_request_duration_seconds";
pub const API_RATE_LIMITED: &str = "ordersync_api_rate_limited_total";
pub const POLL_RETRIES: &str = "ordersync_poll_retries_total";
pub const POLL_RUNS: &str = "ordersync_poll_runs_total";
pub const ORDERS: &str = "ordersync_orders_total";
pub const POLL_LAST_SUCCESS: &str = "ordersync_poll_last_success_timestamp_seconds";
pub const POLL_FRESHNESS: &str = "ordersync_poll_freshness_seconds";
pub const OUTBOX_TRANSITIONS: &str = "ordersync_outbox_transitions";
pub const OUTBOX_OLDEST_PENDING_AGE: &str = "ordersync_outbox_oldest_pending_age_seconds";
pub const OUTBOX_ATTEMPTS: &str = "ordersync_outbox_attempts_total";
pub const DATABASE_UP: &str = "ordersync_database_up";
pub const BUILD_INFO: &str = "ordersync_build_info";

/// Upper bounds of the request latency buckets, in seconds.
const LATENCY_BUCKETS: [f64; 12] = [
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// The outbox states that are work still to do or waiting for an operator; `succeeded` and `cancelled`
/// are history and are not counted (they only grow).
const LIVE_OUTBOX_STATES: [&str; 5] = ["pending", "running", "failed", "dead", "unknown"];

/// The process's recorder, installed by the first call.
static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the Prometheus recorder as the global one (once per process) and returns its handle.
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Full(API_REQUEST_DURATION.to_owned()),
                    &LATENCY_BUCKETS,
                )
                .expect("the bucket list is not empty");
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            if let Err(e) = metrics::set_global_recorder(recorder) {
                // Only an embedding program (or a test) that installed its own recorder gets here; this
                // process's counters then go to that recorder and `/metrics` shows the gauges alone.
                tracing::warn!(error = %e, "another metrics recorder is installed");
            }
            describe();
            gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
            handle
        })
        .clone()
}

fn describe() {
    describe_counter!(
        API_REQUESTS,
        Unit::Count,
        "Marketplace API requests, by HTTP status class (2xx, 3xx, 4xx, 5xx, or error when no response arrived)."
    );
    describe_histogram!(
        API_REQUEST_DURATION,
        Unit::Seconds,
        "Marketplace API request latency, from sending to the end of the body."
    );
    describe_counter!(
        API_RATE_LIMITED,
        Unit::Count,
        "Marketplace API responses with HTTP 429 Too Many Requests."
    );
    describe_counter!(
        POLL_RETRIES,
        Unit::Count,
        "Page fetches retried after a transient failure."
    );
    describe_counter!(
        POLL_RUNS,
        Unit::Count,
        "Poll runs of a stream, by outcome (succeeded, failed, interrupted)."
    );
    describe_counter!(
        ORDERS,
        Unit::Count,
        "Orders received by poll runs, by what was written (inserted, updated, unchanged)."
    );
    describe_gauge!(
        POLL_LAST_SUCCESS,
        Unit::Seconds,
        "Unix time at which the stream's last successful live run finished (from the database)."
    );
    describe_gauge!(
        POLL_FRESHNESS,
        Unit::Seconds,
        "Now minus the stream's cursor: every change older than this is in the database."
    );
    describe_gauge!(
        OUTBOX_TRANSITIONS,
        Unit::Count,
        "Outbox transitions by state (pending, running, failed, dead, unknown; from the database)."
    );
    describe_gauge!(
        OUTBOX_OLDEST_PENDING_AGE,
        Unit::Seconds,
        "Age of the oldest pending outbox transition of the account (0 when none)."
    );
    describe_counter!(
        OUTBOX_ATTEMPTS,
        Unit::Count,
        "Outbox attempts by action (validate, send, read_back) and outcome."
    );
    describe_gauge!(
        DATABASE_UP,
        Unit::Count,
        "1 when the last scrape could read the database, 0 otherwise."
    );
    describe_gauge!(
        BUILD_INFO,
        Unit::Count,
        "Always 1; the version label names the running build."
    );
}

/// The labels of one account's API traffic, given to its HTTP client when the client is built.
#[derive(Debug, Clone)]
pub struct ApiLabels {
    pub account: String,
    pub marketplace: MarketplaceKind,
}

/// Records one API request: `status` is `None` when no response arrived (connect failure, timeout).
pub fn api_request(labels: &ApiLabels, status: Option<u16>, elapsed: Duration) {
    let class = match status {
        Some(200..=299) => "2xx",
        Some(300..=399) => "3xx",
        Some(400..=499) => "4xx",
        Some(500..=599) => "5xx",
        Some(_) => "other",
        None => "error",
    };
    let account = vec![
        Label::new("account", labels.account.clone()),
        Label::new("marketplace", labels.marketplace.as_str()),
    ];
    let mut with_class = account.clone();
    with_class.push(Label::new("status_class", class));
    counter!(API_REQUESTS, with_class).increment(1);
    histogram!(API_REQUEST_DURATION, account.clone()).record(elapsed.as_secs_f64());
    if status == Some(429) {
        counter!(API_RATE_LIMITED, account).increment(1);
    }
}

/// Records a page fetch about to be retried after a transient failure.
pub fn poll_retry(account: &str, marketplace: MarketplaceKind, stream: &str) {
    counter!(POLL_RETRIES, stream_labels(account, marketplace, stream)).increment(1);
}

/// Records a finished poll run and the orders it wrote.
pub fn poll_run(
    account: &str,
    marketplace: MarketplaceKind,
    stream: &str,
    outcome: &'static str,
    counts: &PageCounts,
) {
    let labels = stream_labels(account, marketplace, stream);
    let with_outcome = |outcome: &'static str| {
        let mut labels = labels.clone();
        labels.push(Label::new("outcome", outcome));
        labels
    };
    counter!(POLL_RUNS, with_outcome(outcome)).increment(1);
    for (written, n) in [
        ("inserted", counts.inserted),
        ("updated", counts.updated),
        ("unchanged", counts.unchanged),
    ] {
        counter!(ORDERS, with_outcome(written)).increment(u64::from(n));
    }
}

/// Records an outbox attempt as the worker stored it in `outbox_attempts`.
pub fn outbox_attempt(
    account: &str,
    marketplace: MarketplaceKind,
    action: &'static str,
    outcome: &'static str,
) {
    let labels = vec![
        Label::new("account", account.to_owned()),
        Label::new("marketplace", marketplace.as_str()),
        Label::new("action", action),
        Label::new("outcome", outcome),
    ];
    counter!(OUTBOX_ATTEMPTS, labels).increment(1);
}

fn stream_labels(account: &str, marketplace: MarketplaceKind, stream: &str) -> Vec<Label> {
    vec![
        Label::new("account", account.to_owned()),
        Label::new("marketplace", marketplace.as_str()),
        Label::new("stream", stream.to_owned()),
    ]
}

/// Sets the gauges that come from the database. Cheap: one row per stream and one per account.
pub async fn refresh_from_database(pool: &PgPool) -> Result<(), sqlx::Error> {
    let result = refresh(pool).await;
    gauge!(DATABASE_UP).set(if result.is_ok() { 1.0 } else { 0.0 });
    result
}

/// One stream's state, as the gauges need it.
#[derive(sqlx::FromRow)]
struct StreamRow {
    account: String,
    marketplace: String,
    stream: String,
    freshness: Option<f64>,
    last_success: Option<f64>,
}

async fn refresh(pool: &PgPool) -> Result<(), sqlx::Error> {
    let streams: Vec<StreamRow> = sqlx::query_as(
        "select a.name as account, a.marketplace, s.stream,
                extract(epoch from s.lag)::float8 as freshness,
                extract(epoch from s.last_success_at)::float8 as last_success
         from accounts a
         join sync_status s on s.account = a.name
         where a.removed_at is null",
    )
    .fetch_all(pool)
    .await?;
    for row in streams {
        let labels = [
            ("account", row.account),
            ("marketplace", row.marketplace),
            ("stream", row.stream),
        ];
        if let Some(freshness) = row.freshness {
            gauge!(POLL_FRESHNESS, &labels).set(freshness);
        }
        if let Some(last_success) = row.last_success {
            gauge!(POLL_LAST_SUCCESS, &labels).set(last_success);
        }
    }

    let outbox: Vec<(String, String, Vec<i64>, Option<f64>)> = sqlx::query_as(
        "select a.name, a.marketplace,
                array[count(o.id) filter (where o.state = 'pending'),
                      count(o.id) filter (where o.state = 'running'),
                      count(o.id) filter (where o.state = 'failed'),
                      count(o.id) filter (where o.state = 'dead'),
                      count(o.id) filter (where o.state = 'unknown')],
                extract(epoch from now() - min(o.created_at) filter (where o.state = 'pending'))::float8
         from accounts a
         left join outbox o on o.account_id = a.id
                           and o.state in ('pending', 'running', 'failed', 'dead', 'unknown')
         where a.removed_at is null
         group by a.id, a.name, a.marketplace",
    )
    .fetch_all(pool)
    .await?;
    for (account, marketplace, counts, oldest_pending) in outbox {
        for (state, n) in LIVE_OUTBOX_STATES.iter().zip(counts) {
            let labels = vec![
                Label::new("account", account.clone()),
                Label::new("marketplace", marketplace.clone()),
                Label::new("state", *state),
            ];
            gauge!(OUTBOX_TRANSITIONS, labels).set(n as f64);
        }
        let labels = vec![
            Label::new("account", account),
            Label::new("marketplace", marketplace),
        ];
        gauge!(OUTBOX_OLDEST_PENDING_AGE, labels).set(oldest_pending.unwrap_or(0.0).max(0.0));
    }
    Ok(())
}
