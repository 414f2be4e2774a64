//! Operations end to end: the real binary against the sandbox and real PostgreSQL — `/metrics` after a
//! sync, systemd notifications over a fake `NOTIFY_SOCKET`, SIGTERM in the middle of a slow sync — and
//! `/readyz` across a database outage on a cluster of the test's own.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::os::unix::net::UnixDatagram;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::SyncEnv;
use ordersync::config::ListenerSettings;
use ordersync::embedded_pg::Cluster;
use ordersync::sandbox::Api;
use ordersync::sandbox::faults::{Fault, FaultPlan};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How long anything in these tests may take before it counts as hung.
const PATIENCE: Duration = Duration::from_secs(60);

/// A running `ordersync run`, with its log lines as they arrive.
struct Daemon {
    child: Child,
    lines: Receiver<String>,
    log: Arc<Mutex<Vec<String>>>,
    _config: tempfile::NamedTempFile,
}

impl Daemon {
    fn start(config: &str, database_url: &str, env: &[(&str, &str)]) -> Daemon {
        let mut file = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
        file.write_all(config.as_bytes()).unwrap();
        let mut command = Command::new(env!("CARGO_BIN_EXE_ordersync"));
        command.current_dir(env!("CARGO_MANIFEST_DIR"));
        for (key, _) in std::env::vars() {
            if key.starts_with("ORDERSYNC")
                || key.starts_with("WATCHDOG_")
                || ["DATABASE_URL", "RUST_LOG", "NOTIFY_SOCKET"].contains(&key.as_str())
            {
                command.env_remove(key);
            }
        }
        let mut child = command
            .arg("run")
            .arg("--config")
            .arg(file.path())
            .env("DATABASE_URL", database_url)
            .env("ORDERSYNC__LOG__FORMAT", "json")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        let log = Arc::new(Mutex::new(Vec::new()));
        let kept = log.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                kept.lock().unwrap().push(line.clone());
                let _ = tx.send(line);
            }
        });
        Daemon {
            child,
            lines,
            log,
            _config: file,
        }
    }

    /// Waits for the first log line whose message contains `needle`, and returns it parsed.
    fn wait_for_log(&self, needle: &str) -> serde_json::Value {
        let deadline = Instant::now() + PATIENCE;
        loop {
            match self
                .lines
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            {
                Ok(line) => {
                    let Ok(event) = serde_json::from_str::<serde_json::Value>(&line) else {
                        continue;
                    };
                    if event["message"]
                        .as_str()
                        .is_some_and(|m| m.contains(needle))
                    {
                        return event;
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    panic!("no log line with `{needle}` in time: {:?}", self.log())
                }
                Err(RecvTimeoutError::Disconnected) => {
                    panic!(
                        "the daemon exited before logging `{needle}`: {:?}",
                        self.log()
                    )
                }
            }
        }
    }

    /// The base URL of the operations listener, from the start-up log.
    fn ops_url(&self) -> String {
        let event = self.wait_for_log("operations listener started");
        format!("http://{}", event["addr"].as_str().expect("addr field"))
    }

    fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    /// Sends SIGTERM and waits for the exit; returns the status and how long it took.
    fn terminate(&mut self) -> (ExitStatus, Duration) {
        // SAFETY: sending a signal to our own child process.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let sent = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return (status, sent.elapsed());
            }
            assert!(sent.elapsed() < PATIENCE, "no exit after SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A configuration with one Labs account polling the sandbox once at start-up (its schedule fires once a
/// year), the listener on a free port, and a short shutdown deadline.
fn labs_config(env: &SyncEnv, deadline: &str) -> String {
    let account = env.account(Api::Labs);
    format!(
        r#"
[http]
listen = "127.0.0.1:0"

[shutdown]
deadline = "{deadline}"

[[accounts]]
name = "shop"
marketplace = "labs"
base_url = "{base_url}"
token = "sandbox-labs-token"
schedule = "0 0 0 1 1 *"
initial_sync_days = {days}
requests_per_second = 1000
"#,
        base_url = account.base_url,
        days = account.initial_sync_days,
    )
}

/// Waits until `query` (a count) returns at least `n`.
async fn wait_for_count(pool: &PgPool, query: &'static str, n: i64) {
    let deadline = Instant::now() + PATIENCE;
    let mut every = tokio::time::interval(Duration::from_millis(25));
    loop {
        every.tick().await;
        let count: i64 = sqlx::query_scalar(query).fetch_one(pool).await.unwrap();
        if count >= n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "`{query}` stayed at {count} < {n}"
        );
    }
}

/// Series of a Prometheus text exposition: (name, labels) → value.
type Scrape = Vec<(String, HashMap<String, String>, f64)>;

fn parse_scrape(text: &str) -> Scrape {
    let mut series = Vec::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (key, value) = line.rsplit_once(' ').expect("series and value");
        let (name, labels) = match key.split_once('{') {
            Some((name, rest)) => {
                let labels = rest
                    .trim_end_matches('}')
                    .split("\",")
                    .filter(|pair| !pair.is_empty())
                    .map(|pair| {
                        let (k, v) = pair.split_once('=').expect("label pair");
                        (k.to_owned(), v.trim_matches('"').to_owned())
                    })
                    .collect();
                (name.to_owned(), labels)
            }
            None => (key.to_owned(), HashMap::new()),
        };
        series.push((name, labels, value.parse().expect("a number")));
    }
    series
}

/// The sum of the series named `name` whose labels include `labels`; `None` when there is none.
fn value(scrape: &Scrape, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let matching: Vec<f64> = scrape
        .iter()
        .filter(|(n, l, _)| {
            n == name
                && labels
                    .iter()
                    .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|(_, _, v)| *v)
        .collect();
    (!matching.is_empty()).then(|| matching.iter().sum())
}

async fn get(url: &str) -> (u16, String) {
    let response = reqwest::get(url).await.expect("the listener answers");
    let status = response.status().as_u16();
    (status, response.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_after_a_sync_against_the_sandbox_show_what_happened() {
    let env = SyncEnv::start(250).await;
    // One 429 first: the poller retries it, and both show in the metrics.
    env.sandbox.set_faults(
        Api::Labs,
        FaultPlan::scripted([Fault::RateLimited {
            retry_after_secs: 0,
        }]),
    );
    let mut daemon = Daemon::start(&labs_config(&env, "10s"), &env.db.url, &[]);
    let ops = daemon.ops_url();
    let pool = &env.db.pool;
    wait_for_count(
        pool,
        "select count(*) from sync_runs where outcome = 'succeeded'",
        1,
    )
    .await;

    let labs = [("account", "shop"), ("marketplace", "labs")];
    let stream = [("account", "shop"), ("stream", "orders")];
    // The run's counters are recorded just after its row is closed: scrape until they show.
    let deadline = Instant::now() + PATIENCE;
    let mut every = tokio::time::interval(Duration::from_millis(25));
    let scrape = loop {
        every.tick().await;
        let (status, text) = get(&format!("{ops}/metrics")).await;
        assert_eq!(status, 200, "{text}");
        let scrape = parse_scrape(&text);
        if value(&scrape, "ordersync_poll_runs_total", &stream).is_some() {
            break scrape;
        }
        assert!(Instant::now() < deadline, "no run counted: {text}");
    };

    let (inserted, updated, unchanged, finished_at, freshness): (i32, i32, i32, f64, f64) =
        sqlx::query_as(
            "select r.inserted, r.updated, r.unchanged, extract(epoch from r.finished_at)::float8,
                    extract(epoch from now() - c.value)::float8
             from sync_runs r join sync_cursors c using (account_id, stream)
             where r.outcome = 'succeeded'",
        )
        .fetch_one(pool)
        .await
        .unwrap();
    let stored: i64 = sqlx::query_scalar("select count(*) from orders")
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(stored as usize, env.sandbox.orders(Api::Labs).len());
    assert_eq!(inserted as i64, stored);

    let run = |outcome| {
        let mut labels = stream.to_vec();
        labels.push(("outcome", outcome));
        labels
    };
    assert_eq!(
        value(&scrape, "ordersync_poll_runs_total", &run("succeeded")),
        Some(1.0)
    );
    assert_eq!(
        value(&scrape, "ordersync_poll_runs_total", &run("failed")),
        None
    );
    assert_eq!(
        value(&scrape, "ordersync_orders_total", &run("inserted")),
        Some(inserted as f64)
    );
    assert_eq!(
        value(&scrape, "ordersync_orders_total", &run("updated")),
        Some(updated as f64)
    );
    assert_eq!(
        value(&scrape, "ordersync_orders_total", &run("unchanged")),
        Some(unchanged as f64)
    );

    // Every request the sandbox saw is counted once, in its status class, and timed.
    let audit = env.sandbox.audit();
    let ok = audit
        .iter()
        .filter(|e| (200..300).contains(&e.status))
        .count();
    let limited = audit.iter().filter(|e| e.status == 429).count();
    assert_eq!(limited, 1);
    assert_eq!(ok + limited, audit.len());
    let class = |c| {
        let mut labels = labs.to_vec();
        labels.push(("status_class", c));
        labels
    };
    assert_eq!(
        value(&scrape, "ordersync_api_requests_total", &class("2xx")),
        Some(ok as f64)
    );
    assert_eq!(
        value(&scrape, "ordersync_api_requests_total", &class("4xx")),
        Some(1.0)
    );
    assert_eq!(
        value(
            &scrape,
            "ordersync_api_request_duration_seconds_count",
            &labs
        ),
        Some(audit.len() as f64)
    );
    assert!(
        value(
            &scrape,
            "ordersync_api_request_duration_seconds_bucket",
            &[("account", "shop"), ("le", "+Inf")]
        ) == Some(audit.len() as f64)
    );
    assert_eq!(
        value(&scrape, "ordersync_api_rate_limited_total", &labs),
        Some(1.0)
    );
    assert_eq!(
        value(&scrape, "ordersync_poll_retries_total", &stream),
        Some(1.0)
    );

    // The gauges read from the database.
    let last_success = value(
        &scrape,
        "ordersync_poll_last_success_timestamp_seconds",
        &stream,
    )
    .expect("last success");
    assert!(
        (last_success - finished_at).abs() < 0.001,
        "{last_success} vs {finished_at}"
    );
    let scraped_freshness =
        value(&scrape, "ordersync_poll_freshness_seconds", &stream).expect("freshness");
    assert!(
        scraped_freshness >= 0.0 && scraped_freshness <= freshness + 0.001,
        "{scraped_freshness} vs {freshness} now"
    );
    for state in ["pending", "running", "failed", "dead", "unknown"] {
        let mut labels = labs.to_vec();
        labels.push(("state", state));
        assert_eq!(
            value(&scrape, "ordersync_outbox_transitions", &labels),
            Some(0.0),
            "{state}"
        );
    }
    assert_eq!(
        value(
            &scrape,
            "ordersync_outbox_oldest_pending_age_seconds",
            &labs
        ),
        Some(0.0)
    );
    assert_eq!(value(&scrape, "ordersync_database_up", &[]), Some(1.0));

    assert_eq!(get(&format!("{ops}/healthz")).await.0, 200);
    assert_eq!(
        get(&format!("{ops}/readyz")).await,
        (200, "ready\n".to_owned())
    );

    let (status, _) = daemon.terminate();
    assert!(status.success(), "exit status {status}");
}

#[tokio::test(flavor = "multi_thread")]
async fn systemd_hears_ready_watchdog_and_stopping() {
    let db = common::test_db().await;
    let dir = tempfile::tempdir().unwrap();
    let socket_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket.set_read_timeout(Some(PATIENCE)).unwrap();
    let receive = || {
        let mut buf = [0u8; 4096];
        let n = socket.recv(&mut buf).expect("a notification in time");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };

    let mut daemon = Daemon::start(
        "[http]\nlisten = \"127.0.0.1:0\"\n",
        &db.url,
        &[
            ("NOTIFY_SOCKET", socket_path.to_str().unwrap()),
            ("WATCHDOG_USEC", "200000"),
        ],
    );
    assert_eq!(receive(), "READY=1\n");
    // Pings every 100 ms from then on.
    assert_eq!(receive(), "WATCHDOG=1\n");
    assert_eq!(receive(), "WATCHDOG=1\n");
    let ops = daemon.ops_url();
    assert_eq!(get(&format!("{ops}/healthz")).await.0, 200);

    let (status, _) = daemon.terminate();
    assert!(status.success(), "exit status {status}");
    let mut after_ready = Vec::new();
    socket
        .set_read_timeout(Some(Duration::from_millis(1)))
        .unwrap();
    let mut buf = [0u8; 4096];
    while let Ok(n) = socket.recv(&mut buf) {
        after_ready.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    assert!(
        after_ready
            .iter()
            .all(|m| m == "WATCHDOG=1\n" || m == "STOPPING=1\n"),
        "{after_ready:?}"
    );
    assert_eq!(
        after_ready.iter().filter(|m| *m == "STOPPING=1\n").count(),
        1,
        "{after_ready:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn readyz_fails_while_the_database_is_down_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = Cluster::start(dir.path()).expect("a cluster of this test's own");
    let admin = PgPool::connect(&cluster.admin_url()).await.unwrap();
    sqlx::query("create database ops_readyz")
        .execute(&admin)
        .await
        .unwrap();
    admin.close().await;
    let pool = ordersync::store::connect(&cluster.url("ops_readyz"), 2)
        .await
        .unwrap();

    let tracker = TaskTracker::new();
    let token = CancellationToken::new();
    let settings = ListenerSettings {
        enabled: true,
        listen: "127.0.0.1:0".parse().unwrap(),
    };
    let addr = ordersync::ops::start(&settings, &pool, &tracker, &token)
        .await
        .unwrap()
        .expect("listening");
    let readyz = format!("http://{addr}/readyz");
    let healthz = format!("http://{addr}/healthz");

    let (status, body) = get(&readyz).await;
    assert_eq!(status, 503);
    assert!(body.contains("migrations are pending"), "{body}");
    ordersync::store::migrate(&pool).await.unwrap();
    assert_eq!(get(&readyz).await, (200, "ready\n".to_owned()));

    cluster.stop().unwrap();
    let (status, body) = get(&readyz).await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("database"), "{body}");
    assert_eq!(
        get(&healthz).await.0,
        200,
        "alive while the database is down"
    );
    let scrape = parse_scrape(&get(&format!("http://{addr}/metrics")).await.1);
    assert_eq!(value(&scrape, "ordersync_database_up", &[]), Some(0.0));

    cluster.restart().unwrap();
    let deadline = Instant::now() + PATIENCE;
    loop {
        let (status, body) = get(&readyz).await;
        if status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "still not ready: {body}");
    }

    token.cancel();
    tracker.close();
    tokio::time::timeout(PATIENCE, tracker.wait())
        .await
        .expect("the listener stops on shutdown");
    assert!(
        reqwest::get(&healthz).await.is_err(),
        "the listener is closed after shutdown"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_during_a_sync_exits_cleanly_and_the_next_start_resumes() {
    let env = SyncEnv::start(1500).await;
    env.sandbox.set_faults(
        Api::Labs,
        FaultPlan {
            slow_rate: 1.0,
            slow_delay: Duration::from_millis(300),
            ..FaultPlan::default()
        },
    );
    let config = labs_config(&env, "5s");
    let pool = &env.db.pool;

    let mut daemon = Daemon::start(&config, &env.db.url, &[]);
    // Some pages are in: the run is in the middle of its window.
    wait_for_count(pool, "select count(*) from orders", 1).await;
    let (status, took) = daemon.terminate();
    assert!(status.success(), "exit status {status}: {:?}", daemon.log());
    assert!(
        took < Duration::from_secs(5),
        "took {took:?}, the deadline is 5 s"
    );
    assert!(
        daemon.log().iter().any(|l| l.contains("ordersync stopped")),
        "{:?}",
        daemon.log()
    );
    let (outcome, leases, stored): (String, i64, i64) = sqlx::query_as(
        "select (select outcome from sync_runs order by id desc limit 1),
                (select count(*) from sync_leases),
                (select count(*) from orders)",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(outcome, "interrupted");
    assert_eq!(leases, 0, "the lease was released");
    let total = env.sandbox.orders(Api::Labs).len();
    assert!(
        (stored as usize) < total,
        "the sync was cut short ({stored} of {total})"
    );
    drop(daemon);

    // The next start reads what is missing; nothing is lost.
    env.sandbox.set_faults(Api::Labs, FaultPlan::default());
    let mut daemon = Daemon::start(&config, &env.db.url, &[]);
    wait_for_count(
        pool,
        "select count(*) from sync_runs where outcome = 'succeeded'",
        1,
    )
    .await;
    let mut ids: Vec<String> = sqlx::query_scalar("select external_id from orders")
        .fetch_all(pool)
        .await
        .unwrap();
    ids.sort();
    let mut expected: Vec<String> = env
        .sandbox
        .orders(Api::Labs)
        .into_iter()
        .map(|o| o.external_id)
        .collect();
    expected.sort();
    assert_eq!(ids, expected);
    let cursor: Option<chrono::DateTime<chrono::Utc>> =
        sqlx::query_scalar("select value from sync_cursors where stream = 'orders'")
            .fetch_optional(pool)
            .await
            .unwrap();
    assert!(cursor.is_some(), "the completed run set the cursor");
    let (status, _) = daemon.terminate();
    assert!(status.success());
}

/// The binary, for one-shot commands.
fn ordersync(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_ordersync"));
    command.current_dir(env!("CARGO_MANIFEST_DIR"));
    for (key, _) in std::env::vars() {
        if key.starts_with("ORDERSYNC") || key == "DATABASE_URL" || key == "RUST_LOG" {
            command.env_remove(key);
        }
    }
    command
        .args(args)
        .envs(env.iter().copied())
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn outbox_backlog_shows_in_status_and_metrics() {
    let db = common::test_db().await;
    let account = common::account(
        "shop",
        ordersync::domain::MarketplaceKind::Labs,
        "http://127.0.0.1:1/",
    );
    ordersync::store::accounts::sync_with_config(&db.pool, &[account])
        .await
        .unwrap();
    for order in ["1001", "1002"] {
        sqlx::query("select ordersync_enqueue('shop', $1, 'cancel')")
            .bind(order)
            .execute(&db.pool)
            .await
            .unwrap();
    }
    sqlx::query(
        "update outbox set created_at = now() - interval '1 hour' where order_external_id = '1001'",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    sqlx::query(
        "update outbox set state = 'dead', next_attempt_at = null, finished_at = now()
         where order_external_id = '1002'",
    )
    .execute(&db.pool)
    .await
    .unwrap();

    let output = ordersync(&["status", "--json"], &[("DATABASE_URL", &db.url)]);
    assert!(output.status.success(), "{output:?}");
    let status: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(status["outbox"][0]["account"], "shop", "{status}");
    let counts = &status["outbox"][0]["counts"];
    assert_eq!(counts["pending"], 1, "{status}");
    assert_eq!(counts["dead"], 1, "{status}");
    assert_eq!(counts["succeeded"], 0, "{status}");
    assert!(status["streams"].is_array(), "{status}");
    let output = ordersync(&["status"], &[("DATABASE_URL", &db.url)]);
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        text.contains("outbox of account") && text.contains("shop"),
        "{text}"
    );

    let tracker = TaskTracker::new();
    let token = CancellationToken::new();
    let settings = ListenerSettings {
        enabled: true,
        listen: "127.0.0.1:0".parse().unwrap(),
    };
    let addr = ordersync::ops::start(&settings, &db.pool, &tracker, &token)
        .await
        .unwrap()
        .expect("listening");
    let scrape = parse_scrape(&get(&format!("http://{addr}/metrics")).await.1);
    let labels = |state| {
        [
            ("account", "shop"),
            ("marketplace", "labs"),
            ("state", state),
        ]
    };
    assert_eq!(
        value(&scrape, "ordersync_outbox_transitions", &labels("pending")),
        Some(1.0)
    );
    assert_eq!(
        value(&scrape, "ordersync_outbox_transitions", &labels("dead")),
        Some(1.0)
    );
    let age = value(
        &scrape,
        "ordersync_outbox_oldest_pending_age_seconds",
        &[("account", "shop")],
    )
    .expect("oldest pending age");
    assert!((3600.0..3700.0).contains(&age), "{age}");
    token.cancel();
}

#[tokio::test(flavor = "multi_thread")]
async fn healthcheck_exits_0_when_healthy_and_1_otherwise() {
    let db = common::test_db().await;
    let daemon = Daemon::start("[http]\nlisten = \"127.0.0.1:0\"\n", &db.url, &[]);
    let ops = daemon.ops_url();
    let healthy = ordersync(&["healthcheck", "--url", &format!("{ops}/healthz")], &[]);
    assert_eq!(healthy.status.code(), Some(0), "{healthy:?}");
    drop(daemon);
    let gone = ordersync(&["healthcheck", "--url", &format!("{ops}/healthz")], &[]);
    assert_eq!(gone.status.code(), Some(1), "{gone:?}");
    // Without --url it probes the configured address.
    let configured = ordersync(
        &["healthcheck"],
        &[("ORDERSYNC__HTTP__LISTEN", ops.trim_start_matches("http://"))],
    );
    assert_eq!(configured.status.code(), Some(1), "{configured:?}");
    assert!(
        String::from_utf8_lossy(&configured.stderr).contains(&format!("{ops}/healthz")),
        "{configured:?}"
    );
}

#[test]
fn a_bad_listen_address_names_the_key() {
    let output = ordersync(
        &["check-config"],
        &[("ORDERSYNC__HTTP__LISTEN", "localhost")],
    );
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    let text = String::from_utf8_lossy(&output.stderr);
    assert!(
        text.contains("http.listen") && text.contains("environment"),
        "{text}"
    );
}
