//! The endpoints of the operations listener: `/healthz`, `/readyz` and `/metrics`.
//!
//! - `/healthz` answers 200 as long as the process serves HTTP at all: it touches nothing else, so a
//!   database outage never makes an orchestrator kill a daemon that would recover by itself.
//! - `/readyz` answers 200 when the database answers and every embedded migration is applied, 503
//!   otherwise (and while shutting down), with the reason in the body.
//! - `/metrics` refreshes the gauges read from the database, then renders every series in the
//!   Prometheus text format. A database failure does not fail the scrape: `ordersync_database_up` says so.

use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use super::metrics;
use crate::store;

/// How long a probe waits for the database: long enough for the pool to reconnect after an outage,
/// short enough that the prober gets our answer (with its reason) rather than its own timeout.
const DATABASE_PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// What the endpoints need.
#[derive(Clone)]
pub struct OpsState {
    pub pool: PgPool,
    pub metrics: PrometheusHandle,
    /// Cancelled when the daemon shuts down; `/readyz` then answers 503.
    pub shutdown: CancellationToken,
}

pub fn router(state: OpsState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(render_metrics))
        .with_state(state)
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(state): State<OpsState>) -> (StatusCode, String) {
    if state.shutdown.is_cancelled() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting down\n".to_owned(),
        );
    }
    match tokio::time::timeout(
        DATABASE_PROBE_TIMEOUT,
        store::migrations_current(&state.pool),
    )
    .await
    {
        Ok(Ok(true)) => (StatusCode::OK, "ready\n".to_owned()),
        Ok(Ok(false)) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "database migrations are pending (run `ordersync migrate`)\n".to_owned(),
        ),
        // The URL is not part of sqlx's error texts; the message is safe to show.
        Ok(Err(e)) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("database unreachable: {e}\n"),
        ),
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "database did not answer within {} s\n",
                DATABASE_PROBE_TIMEOUT.as_secs()
            ),
        ),
    }
}

async fn render_metrics(State(state): State<OpsState>) -> Response {
    match tokio::time::timeout(
        DATABASE_PROBE_TIMEOUT,
        metrics::refresh_from_database(&state.pool),
    )
    .await
    {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "metrics: could not read the database"),
        Err(_) => {
            ::metrics::gauge!(metrics::DATABASE_UP).set(0.0);
            tracing::warn!("metrics: the database did not answer in time");
        }
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    )
        .into_response()
}
