//! Operations: what an operator running ordersync under systemd, Docker or Kubernetes relies on — the
//! HTTP listener with `/healthz`, `/readyz` and `/metrics` ([`health`]), the Prometheus series
//! ([`metrics`]), and the systemd watchdog ([`systemd`]).
//!
//! Contract: [`start`] binds the listener before the daemon reports READY=1, so a port already in use
//! fails start-up instead of leaving a daemon nobody can probe; the listener and its helper tasks stop
//! when the daemon's shutdown token is cancelled. Nothing here writes to the database.

pub mod health;
pub mod metrics;
pub mod systemd;

use std::net::SocketAddr;
use std::time::Duration;

use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::ListenerSettings;
pub use health::OpsState;

/// How often the recorder's histograms are compacted (the exporter's recommended upkeep).
const METRICS_UPKEEP: Duration = Duration::from_secs(5);

/// Why the operations listener could not start.
#[derive(Debug, thiserror::Error)]
pub enum OpsError {
    #[error("cannot listen on {addr} (http.listen): {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// Installs the metrics recorder and, unless `http.enabled` is false, starts the listener. Returns the
/// address listened on (the port chosen when the configuration says 0).
pub async fn start(
    settings: &ListenerSettings,
    pool: &PgPool,
    tracker: &TaskTracker,
    shutdown: &CancellationToken,
) -> Result<Option<SocketAddr>, OpsError> {
    let handle = metrics::install();
    if !settings.enabled {
        tracing::info!("the operations listener is disabled (http.enabled = false)");
        return Ok(None);
    }
    let bind = |source| OpsError::Bind {
        addr: settings.listen,
        source,
    };
    let listener = TcpListener::bind(settings.listen).await.map_err(bind)?;
    let addr = listener.local_addr().map_err(bind)?;
    tracing::info!(%addr, "operations listener started (/healthz, /readyz, /metrics)");

    let upkeep = handle.clone();
    let token = shutdown.clone();
    tracker.spawn(async move {
        let mut every = tokio::time::interval(METRICS_UPKEEP);
        loop {
            tokio::select! {
                _ = every.tick() => upkeep.run_upkeep(),
                () = token.cancelled() => return,
            }
        }
    });

    let app = health::router(OpsState {
        pool: pool.clone(),
        metrics: handle,
        shutdown: shutdown.clone(),
    });
    let token = shutdown.clone();
    tracker.spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(token.cancelled_owned())
            .await;
        if let Err(e) = served {
            tracing::error!(error = %e, "the operations listener failed");
        }
    });
    Ok(Some(addr))
}
