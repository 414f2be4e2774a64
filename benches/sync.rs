//! The ordersync benchmark: the real poller and outbox worker against the sandbox on loopback and a real
//! PostgreSQL, each figure printed next to the limit measured in the same run (see docs/BENCHMARKS.md).
//!
//! `cargo bench --bench sync` runs everything. Sizes come from the environment:
//! `ORDERSYNC_BENCH_ORDERS` (orders per marketplace, default 100,000), `ORDERSYNC_BENCH_APIS` (default
//! `labs,gittigidiyor,c2c,allesgo`; `i1` may be added), `ORDERSYNC_BENCH_TRANSITIONS` (default 100,000),
//! `ORDERSYNC_BENCH_LATENCY` (`0` skips the 50 ms runs), `DATABASE_URL` (otherwise a throw-away cluster
//! is started with the machine's PostgreSQL binaries).
//!
//! Every poll run happens in a child process (this same binary, `child` mode) that holds nothing but the
//! daemon's code, so its peak RSS and CPU time are the daemon's alone; the sandbox, the limits and the
//! outbox run in the parent.

use std::collections::HashMap;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use ordersync::config::{AccountConfig, Credentials, Secret};
use ordersync::domain::MarketplaceKind;
use ordersync::outbox::worker::WorkerAccount;
use ordersync::outbox::{OutboxSettings, OutboxWorker};
use ordersync::poller::{AccountPoller, NoProgress, PollSettings, RunMode, StreamOutcome};
use ordersync::sandbox::audit::AuditEntry;
use ordersync::sandbox::faults::FaultPlan;
use ordersync::sandbox::{Api, Sandbox, SandboxConfig};
use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// The latency added to every request in the latency runs.
const LATENCY: Duration = Duration::from_millis(50);

/// The requests in flight at once that the latency bound grants an API whose requests do not depend on
/// each other (page numbers, date windows). It is the poller's own fetch-ahead depth, so the bound is
/// what that depth can reach.
const PARALLEL: usize = ordersync::poller::FETCH_AHEAD;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
        .unwrap_or(default)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    if args.get(1).map(String::as_str) == Some("child") {
        runtime.block_on(child(&args[2], &args[3], &args[4]));
    } else {
        runtime.block_on(parent());
    }
}

// ---------------------------------------------------------------------------------------------------
// The child: one poll run of one account, reporting its time, requests, peak RSS and CPU.

fn kind_of(api: Api) -> MarketplaceKind {
    match api {
        Api::Allesgo => MarketplaceKind::Allesgo,
        Api::C2c => MarketplaceKind::C2c,
        Api::I1 => MarketplaceKind::I1,
        Api::Labs => MarketplaceKind::Labs,
        Api::Gittigidiyor => MarketplaceKind::Gittigidiyor,
    }
}

fn api_named(name: &str) -> Api {
    Api::ALL
        .into_iter()
        .find(|a| a.name() == name)
        .unwrap_or_else(|| panic!("no marketplace `{name}`"))
}

/// The account polling `api` at `base_url` with the sandbox's default credentials.
fn account(api: Api, base_url: &str) -> AccountConfig {
    let c = ordersync::sandbox::Credentials::default();
    let credentials = match api {
        Api::Allesgo => Credentials::Allesgo {
            store_id: c.allesgo_store_id,
            access_token: Secret::new(c.allesgo_access_token),
        },
        Api::C2c => Credentials::C2c {
            domain: c.c2c_domain,
            api_key: Secret::new(c.c2c_api_key),
            api_password: Secret::new(c.c2c_api_password),
        },
        Api::I1 => Credentials::I1 {
            token: Secret::new(c.i1_token),
            auth_header: "Authorization".into(),
            auth_scheme: "Bearer".into(),
        },
        Api::Labs => Credentials::Labs {
            token: Secret::new(c.labs_token),
        },
        Api::Gittigidiyor => Credentials::Gittigidiyor {
            api_key: Secret::new(c.gg_api_key),
            secret_key: Secret::new(c.gg_secret_key),
            username: c.gg_role_name,
            password: Secret::new(c.gg_role_password),
            lang: "tr".into(),
        },
    };
    let marketplace = kind_of(api);
    AccountConfig {
        name: api.name().to_owned(),
        marketplace,
        base_url: url::Url::parse(base_url).expect("base url"),
        enabled: true,
        schedule: "0 */5 * * * *".into(),
        initial_sync_days: 91,
        overlap: Duration::from_secs(600),
        page_size: ordersync::config::default_page_size(marketplace),
        requests_per_second: std::num::NonZeroU32::new(100_000).expect("non-zero"),
        timeout: Duration::from_secs(30),
        credentials,
    }
}

async fn child(api: &str, base_url: &str, db_url: &str) {
    let api = api_named(api);
    let pool = PgPoolOptions::new()
        .max_connections(4)
        .connect(db_url)
        .await
        .expect("connect");
    let account = account(api, base_url);
    let ids = ordersync::store::accounts::sync_with_config(&pool, std::slice::from_ref(&account))
        .await
        .expect("accounts");
    let http = ordersync::http::HttpClient::new(
        &account.http_settings(),
        account.credentials.secret_values(),
    )
    .expect("http client");
    let marketplace = Arc::from(ordersync::marketplace::build(
        &account,
        http,
        &HashMap::new(),
    ));
    let poller = AccountPoller::new(
        pool,
        ids[&account.name],
        account,
        marketplace,
        "bench".into(),
        PollSettings::default(),
    );
    let cpu_before = cpu_seconds();
    let started = Instant::now();
    let reports = poller
        .poll(RunMode::Live, &CancellationToken::new(), &NoProgress)
        .await;
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    let cpu = cpu_seconds() - cpu_before;
    let (mut requests, mut seen, mut written) = (0u64, 0u64, 0u64);
    for r in &reports {
        if !matches!(r.outcome, StreamOutcome::Succeeded) {
            eprintln!("stream {} did not succeed: {:?}", r.stream, r.outcome);
            std::process::exit(1);
        }
        requests += u64::from(r.totals.requests);
        seen += u64::from(r.totals.counts.seen);
        written += u64::from(r.totals.counts.inserted + r.totals.counts.updated);
    }
    println!(
        "RESULT {ms} {requests} {seen} {written} {cpu} {}",
        peak_rss_kb()
    );
}

/// User plus system CPU seconds of this process so far.
fn cpu_seconds() -> f64 {
    // SAFETY: getrusage writes into the zeroed struct we pass and reads nothing else.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

/// `VmHWM` of this process, in kB.
fn peak_rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

// ---------------------------------------------------------------------------------------------------
// The parent.

struct ChildRun {
    ms: f64,
    requests: u64,
    seen: u64,
    written: u64,
    cpu: f64,
    rss_kb: u64,
}

fn run_child(api: Api, base_url: &str, db_url: &str) -> ChildRun {
    let exe = std::env::current_exe().expect("current exe");
    let output = Command::new(exe)
        .args(["child", api.name(), base_url, db_url])
        .output()
        .expect("run the child");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let Some(line) = stdout.lines().find_map(|l| l.strip_prefix("RESULT ")) else {
        panic!(
            "{api}: the child failed: {}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    };
    let f: Vec<f64> = line.split(' ').map(|v| v.parse().unwrap()).collect();
    ChildRun {
        ms: f[0],
        requests: f[1] as u64,
        seen: f[2] as u64,
        written: f[3] as u64,
        cpu: f[4],
        rss_kb: f[5] as u64,
    }
}

fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split(' ').take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

struct Databases {
    admin: PgConnectOptions,
    admin_url: url::Url,
    /// The throw-away cluster and its directory, removed when the benchmark ends.
    cluster: Option<(ordersync::embedded_pg::Cluster, std::path::PathBuf)>,
}

impl Drop for Databases {
    fn drop(&mut self) {
        if let Some((cluster, dir)) = self.cluster.take() {
            drop(cluster);
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

impl Databases {
    fn start() -> Databases {
        let (url, cluster) = match std::env::var("DATABASE_URL") {
            Ok(url) => (url, None),
            Err(_) => {
                let dir = tempfile::Builder::new()
                    .prefix("ordersync-bench-pg-")
                    .tempdir()
                    .expect("temporary directory")
                    .keep();
                let cluster =
                    ordersync::embedded_pg::Cluster::start(&dir).expect("start PostgreSQL");
                (cluster.admin_url(), Some((cluster, dir)))
            }
        };
        Databases {
            admin: url.parse().expect("admin url"),
            admin_url: url::Url::parse(&url).expect("admin url"),
            cluster,
        }
    }

    /// A fresh, migrated database: its pool and URL.
    async fn fresh(&self, label: &str) -> (PgPool, String) {
        let name = format!("ordersync_bench_{label}_{}", uuid::Uuid::new_v4().simple());
        let admin = PgPool::connect_with(self.admin.clone())
            .await
            .expect("admin");
        // The name is made here from a label and a UUID.
        sqlx::query(sqlx::AssertSqlSafe(format!("create database {name}")))
            .execute(&admin)
            .await
            .expect("create database");
        admin.close().await;
        let pool = PgPoolOptions::new()
            .max_connections(32)
            .connect_with(self.admin.clone().database(&name))
            .await
            .expect("connect");
        ordersync::store::migrate(&pool).await.expect("migrate");
        let mut url = self.admin_url.clone();
        url.set_path(&format!("/{name}"));
        (pool, url.to_string())
    }
}

async fn parent() {
    let orders = env_usize("ORDERSYNC_BENCH_ORDERS", 100_000);
    let transitions = env_usize("ORDERSYNC_BENCH_TRANSITIONS", 100_000);
    let latency_runs = env_usize("ORDERSYNC_BENCH_LATENCY", 1) != 0;
    let apis: Vec<Api> = std::env::var("ORDERSYNC_BENCH_APIS")
        .unwrap_or_else(|_| "labs,gittigidiyor,c2c,allesgo".into())
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| api_named(s.trim()))
        .collect();
    println!(
        "ordersync benchmark: {orders} orders per marketplace, {transitions} transitions, {} cores, load average at start {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        load()
    );
    let databases = Databases::start();
    let seeding = Instant::now();
    let sandbox = Sandbox::start(SandboxConfig {
        orders_per_api: orders,
        ..Default::default()
    })
    .await
    .expect("sandbox");
    println!(
        "sandbox seeded in {:.1} s\n",
        seeding.elapsed().as_secs_f64()
    );

    for api in apis {
        bench_poller(&databases, &sandbox, api, orders, latency_runs).await;
    }
    drop(sandbox);
    if transitions > 0 {
        bench_outbox(&databases, transitions).await;
    }
    println!("\nload average at end {}", load());
}

async fn bench_poller(
    databases: &Databases,
    sandbox: &Sandbox,
    api: Api,
    orders: usize,
    latency_runs: bool,
) {
    let base = sandbox.base_url(api);
    println!("== {api}");

    // Initial sync.
    let (pool, url) = databases.fresh(api.name()).await;
    sandbox.clear_audit();
    let initial = run_child(api, &base, &url);
    let audit: Vec<AuditEntry> = sandbox
        .audit()
        .into_iter()
        .filter(|e| e.api == api)
        .collect();
    let fetch = replay(sandbox, api, &audit).await;
    let copy = copy_rows(&pool).await;
    let stored: i64 = sqlx::query_scalar("select count(*) from orders")
        .fetch_one(&pool)
        .await
        .unwrap();
    let limit_secs = fetch.as_secs_f64() + copy.as_secs_f64();
    let rate = stored as f64 / (initial.ms / 1000.0);
    let limit = stored as f64 / limit_secs;
    println!(
        "initial sync      {stored} orders in {:.2} s: {:.0} orders/s | limit {:.0} orders/s (fetch {} requests {:.2} s + COPY {:.2} s) | {:.0}% of the limit (target >= 50%)",
        initial.ms / 1000.0,
        rate,
        limit,
        audit.len(),
        fetch.as_secs_f64(),
        copy.as_secs_f64(),
        100.0 * rate / limit
    );
    println!(
        "  daemon          peak RSS {:.1} MB (target < 60 MB), CPU {:.3} s per 1,000 orders, {} requests made ({} needed by committed pages), {} orders written",
        initial.rss_kb as f64 / 1024.0,
        initial.cpu * 1000.0 / stored.max(1) as f64,
        audit.len(),
        initial.requests,
        initial.written
    );

    // Incremental runs.
    sandbox.clear_audit();
    let quiet = run_child(api, &base, &url);
    let quiet_requests = sandbox.audit().iter().filter(|e| e.api == api).count();
    println!(
        "incremental 0%    {quiet_requests} requests, {:.1} ms, {} orders re-read, {} written (target <= 2 requests, < 50 ms)",
        quiet.ms, quiet.seen, quiet.written
    );
    let changed = sandbox.change_orders(api, orders / 100).len();
    sandbox.clear_audit();
    let busy = run_child(api, &base, &url);
    let busy_requests = sandbox.audit().iter().filter(|e| e.api == api).count();
    println!(
        "incremental 1%    {busy_requests} requests, {:.1} ms, {changed} orders changed, {} re-read, {} written",
        busy.ms, busy.seen, busy.written
    );
    pool.close().await;

    if !latency_runs {
        println!();
        return;
    }
    // The same initial sync with 50 ms added to every request.
    let (pool, url) = databases.fresh(api.name()).await;
    sandbox.set_faults(
        api,
        FaultPlan {
            slow_rate: 1.0,
            slow_delay: LATENCY,
            ..FaultPlan::default()
        },
    );
    sandbox.clear_audit();
    let slow = run_child(api, &base, &url);
    sandbox.set_faults(api, FaultPlan::default());
    let made = sandbox.audit().iter().filter(|e| e.api == api).count();
    let (bound, how) = latency_bound(api, &audit, initial.requests as usize);
    println!(
        "50 ms latency     {:.2} s ({:.0} orders/s, {made} requests made) | latency bound {:.2} s ({how}) | {:.2}x the bound (target <= 1.2x)",
        slow.ms / 1000.0,
        slow.seen as f64 / (slow.ms / 1000.0),
        bound.as_secs_f64(),
        slow.ms / 1000.0 / bound.as_secs_f64()
    );
    pool.close().await;
    println!();
}

/// The least time the requests of a sync can take with [`LATENCY`] each, given which requests the API
/// lets run at once: `chain` requests that must follow one another, the rest `PARALLEL` at a time.
fn latency_bound(api: Api, audit: &[AuditEntry], needed: usize) -> (Duration, String) {
    let waves = |chain: usize| chain.max(needed.div_ceil(PARALLEL));
    let (waves, how) = match api {
        // The first page tells how many follow; every other page can be asked for at once.
        Api::Labs | Api::Gittigidiyor => (
            waves(2),
            format!("{needed} requests, page numbers: {PARALLEL} at a time"),
        ),
        // Fixed date windows, one request each: independent.
        Api::C2c => (
            waves(1),
            format!("{needed} requests, independent windows: {PARALLEL} at a time"),
        ),
        // Each adaptive window's length depends on the previous window's count.
        Api::Allesgo => (
            needed,
            format!("{needed} requests, each window sized by the previous one: one at a time"),
        ),
        // Pages follow `next` links; each page's items wait for the page.
        Api::I1 => {
            let lists = audit.iter().filter(|e| e.path == "/orders/").count();
            (
                waves(2 * lists),
                format!("{needed} requests, {lists} list pages each followed by its items"),
            )
        }
    };
    (LATENCY * waves as u32, how)
}

/// Sends the recorded requests again with a bare client, one after the other, reading every body and
/// doing nothing with it: what fetching alone costs.
async fn replay(sandbox: &Sandbox, api: Api, audit: &[AuditEntry]) -> Duration {
    let client = reqwest::Client::new();
    let credentials = sandbox.credentials().clone();
    let base = sandbox.base_url(api);
    let base = base.trim_end_matches('/');
    let requests: Vec<reqwest::Request> = audit
        .iter()
        .map(|e| {
            let mut url = format!("{base}{}", e.path);
            if let Some(q) = &e.query {
                url.push('?');
                url.push_str(q);
            }
            let method = e.method.parse().expect("method");
            let mut request = client.request(method, url);
            request = match api {
                Api::Labs => request.bearer_auth(&credentials.labs_token),
                Api::I1 => request.bearer_auth(&credentials.i1_token),
                Api::Gittigidiyor => request
                    .basic_auth(
                        &credentials.gg_role_name,
                        Some(&credentials.gg_role_password),
                    )
                    .header("content-type", "text/xml; charset=utf-8"),
                Api::C2c => request.header("content-type", "application/json"),
                Api::Allesgo => request,
            };
            if let Some(body) = &e.body {
                request = request.body(body.clone());
            }
            request.build().expect("request")
        })
        .collect();
    let started = Instant::now();
    let mut failed = 0;
    for request in requests {
        let response = client.execute(request).await.expect("replay");
        if !response.status().is_success() {
            failed += 1;
        }
        response.bytes().await.expect("body");
    }
    let elapsed = started.elapsed();
    if failed > 0 {
        println!("  (replay: {failed} requests were not answered with 2xx)");
    }
    elapsed
}

/// Copies every row the sync wrote (orders, lines, packages) into scratch tables with `COPY`, timing
/// only the `COPY … FROM STDIN`.
async fn copy_rows(pool: &PgPool) -> Duration {
    let mut elapsed = Duration::ZERO;
    for table in ["orders", "order_lines", "order_packages"] {
        let mut conn = pool.acquire().await.unwrap();
        let data: Vec<bytes::Bytes> = conn
            .copy_out_raw(&format!("copy {table} to stdout"))
            .await
            .unwrap()
            .try_collect()
            .await
            .unwrap();
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "create table scratch_{table} (like {table} including defaults)"
        )))
        .execute(&mut *conn)
        .await
        .unwrap();
        let started = Instant::now();
        let mut copy = conn
            .copy_in_raw(&format!("copy scratch_{table} from stdin"))
            .await
            .unwrap();
        for chunk in data {
            copy.send(chunk).await.unwrap();
        }
        copy.finish().await.unwrap();
        elapsed += started.elapsed();
    }
    elapsed
}

// ---------------------------------------------------------------------------------------------------
// The outbox.

async fn bench_outbox(databases: &Databases, transitions: usize) {
    // A small shop: the worker reads an order back after every success, and Labs can only read back by
    // listing yesterday's orders, so a large shop would measure that listing rather than the outbox.
    let sandbox = Sandbox::start(SandboxConfig {
        orders_per_api: 1_000,
        ..Default::default()
    })
    .await
    .expect("sandbox");
    let order_ids: Vec<String> = sandbox
        .orders(Api::Labs)
        .into_iter()
        .map(|o| o.external_id)
        .collect();
    let base = sandbox.base_url(Api::Labs);
    println!(
        "== outbox: {transitions} Labs invoice-link transitions over {} orders (each order's in queue order)",
        order_ids.len()
    );
    let token = sandbox.credentials().labs_token.clone();
    for concurrency in [1usize, 4, 16] {
        let (pool, _) = databases.fresh("outbox").await;
        let account = account(Api::Labs, &base);
        let ids =
            ordersync::store::accounts::sync_with_config(&pool, std::slice::from_ref(&account))
                .await
                .unwrap();
        let account_id = ids[&account.name];
        // Queued over time, round robin over the orders, already validated (as `outbox::enqueue` leaves
        // them).
        sqlx::query(
            "insert into outbox (account_id, order_external_id, kind, args, validated_at, next_attempt_at)
             select $1, ($2::text[])[1 + (n % cardinality($2::text[]))], 'invoice-link',
                jsonb_build_object('invoice_link', 'https://fatura.example.com/' || n || '.pdf',
                    'invoice_number', 'ABC2024' || lpad(n::text, 9, '0'),
                    'invoice_date_time', '1700000000', 'marketplace', 'trendyol'),
                now(), now() - interval '1 hour' + n * interval '1 microsecond'
             from generate_series(0, $3 - 1) n",
        )
        .bind(account_id)
        .bind(&order_ids)
        .bind(transitions as i64)
        .execute(&pool)
        .await
        .unwrap();
        sqlx::query("analyze outbox").execute(&pool).await.unwrap();

        let http = ordersync::http::HttpClient::new(
            &account.http_settings(),
            account.credentials.secret_values(),
        )
        .unwrap();
        let marketplace: Arc<dyn ordersync::marketplace::Marketplace> = Arc::from(
            ordersync::marketplace::build(&account, http, &HashMap::new()),
        );
        let worker = Arc::new(OutboxWorker::new(
            pool.clone(),
            WorkerAccount {
                account_id,
                name: account.name.clone(),
                kind: account.marketplace,
                marketplace,
                secrets: account.credentials.secret_values(),
            },
            "bench".into(),
            OutboxSettings {
                concurrency,
                poll_interval: Duration::from_millis(200),
                ..OutboxSettings::default()
            },
            None,
        ));
        sandbox.clear_audit();
        let shutdown = CancellationToken::new();
        let started = Instant::now();
        let running = tokio::spawn(worker.run(Arc::new(Notify::new()), shutdown.clone()));
        loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            // Through the index of live states: a count of every row would cost the worker's
            // PostgreSQL a scan of the table ten times a second.
            let open: bool = sqlx::query_scalar(
                "select exists (select 1 from outbox
                    where state in ('pending', 'running', 'failed', 'dead', 'unknown'))",
            )
            .fetch_one(&pool)
            .await
            .unwrap();
            if !open {
                break;
            }
        }
        let worker_secs = started.elapsed().as_secs_f64();
        shutdown.cancel();
        running.await.unwrap();
        let requests = sandbox.audit().len();
        let sent: Vec<String> = sandbox
            .audit()
            .into_iter()
            .filter(|e| e.path == "/orders/invoice-link")
            .filter_map(|e| e.body)
            .collect();
        sandbox.clear_audit();

        // The HTTP client alone posting the same requests at the same concurrency.
        let client = reqwest::Client::new();
        let url = format!("{}/orders/invoice-link", base.trim_end_matches('/'));
        let started = Instant::now();
        futures::stream::iter(sent.iter().cloned())
            .map(|body| {
                let request = client
                    .post(&url)
                    .bearer_auth(&token)
                    .header("content-type", "application/json")
                    .body(body);
                async move {
                    let response = request.send().await.expect("post");
                    response.bytes().await.expect("body");
                }
            })
            .buffer_unordered(concurrency)
            .collect::<Vec<()>>()
            .await;
        let alone_secs = started.elapsed().as_secs_f64();
        let rate = transitions as f64 / worker_secs;
        let limit = sent.len() as f64 / alone_secs;
        println!(
            "concurrency {concurrency:>2}    {rate:.0} transitions/s ({requests} requests) | HTTP client alone {limit:.0} requests/s | {:.0}% of the limit (target >= 50%)",
            100.0 * rate / limit
        );
        pool.close().await;
    }
}
