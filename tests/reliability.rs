//! The reliability suite: the real `ordersync` binary, as a process, against the in-process sandbox and
//! real PostgreSQL, under what production does to it — injected faults while orders keep changing,
//! SIGKILL during a backfill and during outbox processing, PostgreSQL restarted mid-run, three replicas
//! at once — and after each, the database equals the sandbox (no order missing, none duplicated, none
//! stale), no transition took effect twice, and no secret is found in the logs, the tables, the
//! command-line output or the configuration's `Debug`.
//!
//! The tests wait on the database and the sandbox with a deadline, never sleep for work. The default
//! `cargo test` runs a small scale of each scenario; the soak (`soak`, ignored) runs them large and prints
//! the figures recorded in docs/RELIABILITY.md:
//!
//! ```sh
//! ORDERSYNC_SOAK=1 cargo test --release --lib --test reliability -- --include-ignored --nocapture soak proptests
//! ```

mod common;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::daemon::{
    Daemon, DaemonConfig, Dice, Tuning, account_name, distinctive_credentials, expire_leases_of,
    ordersync, password_of, secret_values, wait_until, with_password,
};
use common::in_step;
use ordersync::config::{LoadOptions, Settings};
use ordersync::embedded_pg::Cluster;
use ordersync::sandbox::faults::{Fault, FaultPlan};
use ordersync::sandbox::{Api, Sandbox, SandboxConfig};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

/// How large a run of the scenarios is.
#[derive(Debug, Clone)]
struct Scale {
    /// Orders per marketplace in the faults scenario.
    fault_orders: usize,
    /// How long faults are injected while orders change.
    fault_duration: Duration,
    /// Orders per marketplace in the crash scenario's backfill (five marketplaces).
    backfill_orders: usize,
    backfill_kills: usize,
    outbox_kills: usize,
    /// Transitions queued per marketplace that has them (allesgo, c2c, labs).
    transitions: i64,
    replica_orders: usize,
    /// How long the database may take to catch up once the disturbance is over.
    settle: Duration,
}

impl Scale {
    fn ci() -> Scale {
        Scale {
            fault_orders: 60,
            fault_duration: Duration::from_secs(12),
            backfill_orders: 300,
            backfill_kills: 3,
            outbox_kills: 2,
            transitions: 8,
            replica_orders: 150,
            settle: Duration::from_secs(150),
        }
    }

    fn soak() -> Scale {
        Scale {
            fault_orders: 1000,
            fault_duration: Duration::from_secs(180),
            backfill_orders: 4000,
            backfill_kills: 12,
            outbox_kills: 10,
            transitions: 60,
            replica_orders: 2000,
            settle: Duration::from_secs(900),
        }
    }
}

const DATABASE_PASSWORD: &str = "rel-PGPASS-0e4c7b";

/// A sandbox with distinctive credentials, a database, and a configuration for the five marketplaces.
struct Env {
    sandbox: Arc<Sandbox>,
    pool: PgPool,
    /// The daemon's database URL (with a password, see [`with_password`]).
    url: String,
    config: DaemonConfig,
    logs: tempfile::TempDir,
    /// The embedded cluster, when the scenario needs to restart PostgreSQL.
    cluster: Option<Cluster>,
}

impl Drop for Env {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let kept = std::mem::replace(
                &mut self.logs,
                tempfile::tempdir().expect("temporary directory"),
            )
            .keep();
            eprintln!("the daemon logs are kept in {}", kept.display());
        }
    }
}

impl Env {
    async fn start(orders: usize, tuning: &Tuning, own_cluster: bool) -> Env {
        let sandbox = Sandbox::start(SandboxConfig {
            orders_per_api: orders,
            seed: 7,
            credentials: distinctive_credentials(),
            ..SandboxConfig::default()
        })
        .await
        .expect("sandbox");
        let (pool, url, cluster) = if own_cluster {
            let dir = tempfile::Builder::new()
                .prefix("ordersync-rel-pg-")
                .tempdir()
                .expect("temporary directory")
                .keep();
            let cluster = tokio::task::spawn_blocking(move || Cluster::start(&dir))
                .await
                .unwrap()
                .expect("start a PostgreSQL cluster of the test's own");
            let admin = PgPool::connect(&cluster.admin_url()).await.expect("admin");
            sqlx::query("create database reliability")
                .execute(&admin)
                .await
                .expect("create database");
            admin.close().await;
            let url = cluster.url("reliability");
            (
                PgPool::connect(&url).await.expect("connect"),
                url,
                Some(cluster),
            )
        } else {
            let db = common::test_db().await;
            (db.pool, db.url, None)
        };
        let config = DaemonConfig::write(&sandbox, tuning);
        Env {
            sandbox: Arc::new(sandbox),
            pool,
            url: with_password(&url, DATABASE_PASSWORD),
            config,
            logs: tempfile::Builder::new()
                .prefix("ordersync-rel-logs-")
                .tempdir()
                .expect("log directory"),
            cluster,
        }
    }

    fn log(&self, replica: &str) -> PathBuf {
        self.logs.path().join(format!("{replica}.log"))
    }

    fn daemon(&self, replica: &str) -> Daemon {
        Daemon::start(&self.config, &self.url, &self.log(replica))
    }

    /// The five accounts' ids, once a daemon has written them.
    async fn accounts(&self) -> HashMap<Api, i64> {
        wait_until(Duration::from_secs(60), "accounts written", || async {
            let rows: Vec<(String, i64)> = sqlx::query_as("select name, id from accounts")
                .fetch_all(&self.pool)
                .await
                .map_err(|e| e.to_string())?;
            let ids: HashMap<Api, i64> = Api::ALL
                .into_iter()
                .filter_map(|api| {
                    let name = account_name(api);
                    rows.iter()
                        .find(|(n, _)| *n == name)
                        .map(|(_, id)| (api, *id))
                })
                .collect();
            if ids.len() == Api::ALL.len() {
                Ok(ids)
            } else {
                Err(format!("{rows:?}"))
            }
        })
        .await
    }

    /// Every marketplace's difference between database and sandbox, or `Ok` when there is none.
    async fn in_step(&self, ids: &HashMap<Api, i64>) -> Result<(), String> {
        let mut problems = Vec::new();
        for api in Api::ALL {
            let diff = in_step::difference(&self.pool, ids[&api], &self.sandbox, api).await;
            if !diff.is_empty() {
                problems.push(format!(
                    "{api}: {} in sandbox, {} stored, {} missing, {} extra, {} stale (e.g. {:?})",
                    diff.sandbox_orders,
                    diff.stored_orders,
                    diff.missing.len(),
                    diff.extra.len(),
                    diff.stale.len(),
                    diff.stale.first().or(diff.missing.first())
                ));
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("; "))
        }
    }

    async fn stored_orders(&self) -> i64 {
        sqlx::query_scalar("select count(*) from orders")
            .fetch_one(&self.pool)
            .await
            .unwrap_or(0)
    }
}

/// Keeps the shop working: every `every`, a few orders change and one is placed on each marketplace.
fn churn(
    sandbox: Arc<Sandbox>,
    every: Duration,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<usize> {
    tokio::spawn(async move {
        let mut changes = 0;
        let mut tick = tokio::time::interval(every);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = stop.cancelled() => return changes,
            }
            for api in Api::ALL {
                changes += sandbox.change_orders(api, 2).len();
                changes += sandbox.add_orders(api, 1).len();
            }
        }
    })
}

/// Injected faults by kind, from the sandbox's audit log.
fn faults_injected(sandbox: &Sandbox) -> BTreeMap<&'static str, usize> {
    let mut counts = BTreeMap::new();
    for entry in sandbox.audit() {
        let kind = match entry.fault {
            None => continue,
            Some(Fault::ServerError) => "5xx",
            Some(Fault::RateLimited { .. }) => "429 with Retry-After",
            Some(Fault::Slow(_)) => "slow",
            Some(Fault::Malformed) => "malformed body",
            Some(Fault::Truncated) => "truncated body",
            Some(Fault::WrongContentType) => "wrong content type",
        };
        *counts.entry(kind).or_default() += 1;
    }
    counts
}

/// Requests the daemon logged as timed out.
fn timeouts_logged(env: &Env) -> usize {
    std::fs::read_dir(env.logs.path())
        .expect("log directory")
        .map(|entry| std::fs::read_to_string(entry.expect("log file").path()).unwrap_or_default())
        .map(|log| log.lines().filter(|l| l.contains("timed out")).count())
        .sum()
}

/// The figures one scenario contributes to the report.
#[derive(Debug, Default)]
struct Figures {
    orders_held: usize,
    requests: usize,
    faults: BTreeMap<&'static str, usize>,
    kills: usize,
    postgres_restarts: usize,
    transitions: usize,
    transition_states: BTreeMap<String, i64>,
    duplicate_effects: usize,
    orders_lost: usize,
    secrets_checked: usize,
    bytes_scanned: usize,
}

impl Figures {
    fn print(&self, scenario: &str, took: Duration) {
        println!(
            "[{scenario}] {:.0?}: {} orders held in step ({} lost), {} requests, faults injected {:?} (total {}), \
             {} kills survived, {} PostgreSQL restarts, {} transitions {:?}, {} duplicate effects, \
             {} secret values checked in {} bytes: none found",
            took,
            self.orders_held,
            self.orders_lost,
            self.requests,
            self.faults,
            self.faults.values().sum::<usize>(),
            self.kills,
            self.postgres_restarts,
            self.transitions,
            self.transition_states,
            self.duplicate_effects,
            self.secrets_checked,
            self.bytes_scanned
        );
    }
}

// ---------------------------------------------------------------------------------------------------
// Outbox: transitions queued the way other programs queue them (the SQL function), and their effects.

/// Queues up to `per_account` transitions on each of allesgo (accept a package), c2c (set-state
/// Hazırlanıyor) and labs (set-status 2) for stored orders that allow them and have none queued yet.
async fn queue_transitions(pool: &PgPool, per_account: i64) -> usize {
    let order_level: Vec<i64> = sqlx::query_scalar(
        "select ordersync_enqueue(a.name, o.external_id, d.kind, d.args,
                'rel:' || a.name || ':' || o.external_id, 20)
         from accounts a
         join (values ('rel-c2c', 'awaiting_approval', 'set-state', '{\"state\": \"Hazırlanıyor\"}'::jsonb),
                      ('rel-labs', 'approved', 'set-status', '{\"status_code\": 2}'::jsonb))
              as d(account, state, kind, args) on d.account = a.name
         cross join lateral (
            select o.external_id from orders o
            where o.account_id = a.id and o.state = d.state
              and not exists (select 1 from outbox t
                              where t.account_id = a.id and t.order_external_id = o.external_id)
            order by o.external_id limit $1) o",
    )
    .bind(per_account)
    .fetch_all(pool)
    .await
    .expect("queue c2c and labs transitions");
    let packages: Vec<i64> = sqlx::query_scalar(
        "select ordersync_enqueue('rel-allesgo', x.order_id, 'accept',
                jsonb_build_object('package_id', x.package_id), 'rel:allesgo:' || x.order_id, 20)
         from (select distinct on (o.external_id) o.external_id as order_id, p.external_id as package_id
               from order_packages p join orders o on o.id = p.order_id join accounts a on a.id = o.account_id
               where a.name = 'rel-allesgo' and p.status_code = '2'
                 and not exists (select 1 from outbox t
                                 where t.account_id = a.id and t.order_external_id = o.external_id)
               order by o.external_id, p.external_id
               limit $1) x",
    )
    .bind(per_account)
    .fetch_all(pool)
    .await
    .expect("queue allesgo transitions");
    order_level.len() + packages.len()
}

/// `Ok` when no transition is still moving (pending, running, or unknown with a read-back planned).
async fn outbox_settled(pool: &PgPool) -> Result<(), String> {
    let moving: Vec<(i64, String, Option<String>)> = sqlx::query_as(
        "select id, state, last_error from outbox
         where state in ('pending', 'running') or (state = 'unknown' and next_attempt_at is not null)",
    )
    .fetch_all(pool)
    .await
    .map_err(|e| e.to_string())?;
    if moving.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{} transitions still moving: {moving:?}",
            moving.len()
        ))
    }
}

async fn transition_states(pool: &PgPool) -> BTreeMap<String, i64> {
    sqlx::query_as::<_, (String, i64)>("select state, count(*) from outbox group by state")
        .fetch_all(pool)
        .await
        .expect("outbox states")
        .into_iter()
        .collect()
}

/// The sandbox API of an account name.
fn api_of(account: &str) -> Api {
    Api::ALL
        .into_iter()
        .find(|api| account_name(*api) == account)
        .expect("a reliability account")
}

/// For every queued transition, how many calls changed the sandbox's order; asserts none did twice and
/// returns the number of transitions. The sandbox names the order in every effect (`order <id>:`,
/// `order <id> status …`, `package … of order <id>:`), and each order has at most one transition here.
async fn assert_no_effect_twice(pool: &PgPool, sandbox: &Sandbox) -> usize {
    let queued: Vec<(String, String, String, String)> = sqlx::query_as(
        "select a.name, t.order_external_id, t.kind, t.state from outbox t join accounts a on a.id = t.account_id",
    )
    .fetch_all(pool)
    .await
    .expect("outbox rows");
    let effects: Vec<(Api, String)> = sandbox
        .audit()
        .into_iter()
        .filter_map(|e| e.effect.map(|effect| (e.api, effect)))
        .collect();
    let mut twice = Vec::new();
    for (account, order, kind, state) in &queued {
        let api = api_of(account);
        let (colon, space) = (format!("order {order}:"), format!("order {order} "));
        let calls = effects
            .iter()
            .filter(|(a, e)| *a == api && (e.contains(&colon) || e.contains(&space)))
            .count();
        if calls > 1 {
            twice.push(format!(
                "{kind} of {account}/{order} ({state}): {calls} effects"
            ));
        }
    }
    assert!(twice.is_empty(), "transitions took effect twice: {twice:?}");
    queued.len()
}

// ---------------------------------------------------------------------------------------------------
// Secrets.

/// The `<sign>` values GittiGidiyor requests carried (an MD5 over the secret key): signatures are secrets
/// too.
fn signatures(sandbox: &Sandbox) -> Vec<String> {
    let mut found: Vec<String> = sandbox
        .audit()
        .into_iter()
        .filter_map(|e| e.body)
        .filter_map(|body| {
            let start = body.find("<sign>")? + "<sign>".len();
            let end = start + body[start..].find("</sign>")?;
            Some(body[start..end].to_owned())
        })
        .filter(|s| s.len() >= 16)
        .collect();
    found.sort();
    found.dedup();
    found.truncate(500);
    found
}

/// Every text and JSON column of every table, as one text per table.
async fn dump_tables(pool: &PgPool) -> Vec<(String, String)> {
    let columns: Vec<(String, String)> = sqlx::query_as(
        "select c.table_name::text, c.column_name::text
         from information_schema.columns c
         join information_schema.tables t on t.table_schema = c.table_schema and t.table_name = c.table_name
         where c.table_schema = 'public' and t.table_type = 'BASE TABLE'
           and c.data_type in ('text', 'character varying', 'json', 'jsonb', 'ARRAY', 'USER-DEFINED')
         order by 1, 2",
    )
    .fetch_all(pool)
    .await
    .expect("list columns");
    let mut dumps = Vec::new();
    for (table, column) in columns {
        // Names come from the catalogue, quoted as identifiers.
        let text: String = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "select coalesce(string_agg(\"{column}\"::text, E'\\n'), '') from \"{table}\""
        )))
        .fetch_one(pool)
        .await
        .expect("dump a column");
        dumps.push((format!("{table}.{column}"), text));
    }
    dumps
}

/// Scans the daemon's logs, every table, the operator commands' output and the configuration's `Debug`
/// for every secret value: the sandbox credentials, GittiGidiyor signatures, the database password.
/// Returns (secret values checked, bytes scanned).
async fn assert_no_secret_anywhere(env: &Env) -> (usize, usize) {
    let mut secrets = secret_values(env.sandbox.credentials());
    secrets.extend(signatures(&env.sandbox));
    secrets.extend(password_of(&env.url));
    let mut texts: Vec<(String, String)> = Vec::new();
    for entry in std::fs::read_dir(env.logs.path()).expect("log directory") {
        let path = entry.expect("log file").path();
        texts.push((
            path.display().to_string(),
            String::from_utf8_lossy(&std::fs::read(&path).expect("read log")).into_owned(),
        ));
    }
    texts.extend(dump_tables(&env.pool).await);
    for args in [
        &["status", "--json"][..],
        &["status"][..],
        &["outbox", "list", "--json"][..],
        &["check-config"][..],
        &["sync", "--account", "no-such-account"][..],
    ] {
        let output = ordersync()
            .args(args)
            .arg("--config")
            .arg(&env.config.path)
            .envs(env.config.env.iter().map(|(k, v)| (k, v)))
            .env("DATABASE_URL", &env.url)
            .env("ORDERSYNC__LOG__FORMAT", "json")
            .output()
            .expect("run an operator command");
        texts.push((
            format!("ordersync {}", args.join(" ")),
            format!(
                "{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ),
        ));
    }
    let (settings, warnings) = Settings::load(&LoadOptions {
        file: Some(env.config.path.clone()),
        env: Some(env.config.env_map(&env.url)),
        ..LoadOptions::default()
    })
    .expect("the configuration loads");
    texts.push((
        "Settings Debug".into(),
        format!("{settings:?}\n{settings:#?}\n{warnings:?}"),
    ));
    // The check is only meaningful if the secrets were in use: the configuration holds them.
    assert!(
        settings
            .accounts
            .iter()
            .flat_map(|a| a.credentials.secret_values())
            .any(|s| s == env.sandbox.credentials().labs_token)
    );
    let mut leaks = Vec::new();
    let mut bytes = 0;
    for (place, text) in &texts {
        bytes += text.len();
        for secret in &secrets {
            if text.contains(secret.as_str()) {
                leaks.push(format!("{place} contains a secret ({}…)", &secret[..4]));
            }
        }
    }
    assert!(leaks.is_empty(), "secrets found: {leaks:?}");
    (secrets.len(), bytes)
}

// ---------------------------------------------------------------------------------------------------
// The scenarios.

/// All five marketplaces with 20% 5xx, 5% 429 with Retry-After, responses slower than the client's 1 s
/// timeout and malformed bodies, while orders keep changing; then faults off: the database catches up
/// with the sandbox. A malformed response fails its run (the cursor stays) and the next run retries.
async fn faults(scale: &Scale) -> Figures {
    let started = Instant::now();
    let tuning = Tuning {
        timeout: Duration::from_secs(1),
        page_size: Some(25),
        ..Tuning::default()
    };
    let env = Env::start(scale.fault_orders, &tuning, false).await;
    let plan = FaultPlan {
        server_error_rate: 0.20,
        rate_limit_rate: 0.05,
        retry_after_secs: 1,
        slow_rate: 0.03,
        slow_delay: Duration::from_millis(1500),
        malformed_rate: 0.02,
        ..FaultPlan::default()
    };
    for api in Api::ALL {
        env.sandbox.set_faults(api, plan.clone());
    }
    let mut daemon = env.daemon("faults");
    let ids = env.accounts().await;
    let stop = CancellationToken::new();
    let changing = churn(env.sandbox.clone(), Duration::from_secs(1), stop.clone());
    tokio::time::sleep(scale.fault_duration).await;
    stop.cancel();
    changing.await.expect("churn");
    for api in Api::ALL {
        env.sandbox.set_faults(api, FaultPlan::default());
    }
    wait_until(scale.settle, "database in step after faults", || {
        env.in_step(&ids)
    })
    .await;
    assert!(daemon.exited().is_none(), "the daemon died under faults");

    let mut faults = faults_injected(&env.sandbox);
    // A request the client gave up on is dropped by the server before the sandbox logs it: those slow
    // responses are counted where they show, in the daemon's log.
    faults.insert("slower than the timeout", timeouts_logged(&env));
    for kind in [
        "5xx",
        "429 with Retry-After",
        "slower than the timeout",
        "malformed body",
    ] {
        assert!(
            faults.get(kind).copied().unwrap_or(0) > 0,
            "no {kind} injected: {faults:?}"
        );
    }
    // The malformed pages were recorded for an operator and failed their runs.
    let (payload_errors, failed_runs): (i64, i64) = sqlx::query_as(
        "select (select count(*) from payload_errors), (select count(*) from sync_runs where outcome = 'failed')",
    )
    .fetch_one(&env.pool)
    .await
    .unwrap();
    assert!(
        payload_errors > 0 && failed_runs > 0,
        "{payload_errors} {failed_runs}"
    );

    let status = daemon.stop(Duration::from_secs(30));
    assert!(status.success(), "exit status after SIGTERM: {status}");
    let (secrets_checked, bytes_scanned) = assert_no_secret_anywhere(&env).await;
    let figures = Figures {
        orders_held: Api::ALL.iter().map(|a| env.sandbox.orders(*a).len()).sum(),
        requests: env.sandbox.audit().len(),
        faults,
        secrets_checked,
        bytes_scanned,
        ..Figures::default()
    };
    figures.print("faults", started.elapsed());
    figures
}

/// SIGKILL at random moments during a backfill, then during outbox processing, restarting each time.
async fn crashes(scale: &Scale) -> Figures {
    let started = Instant::now();
    let mut dice = Dice::from_env();
    let tuning = Tuning {
        page_size: Some(50),
        ..Tuning::default()
    };
    let env = Env::start(scale.backfill_orders, &tuning, false).await;
    // Every request a little slow, so that the backfill and the sends are in flight when the kill comes.
    for api in Api::ALL {
        env.sandbox.set_faults(
            api,
            FaultPlan {
                slow_rate: 1.0,
                slow_delay: Duration::from_millis(15),
                ..FaultPlan::default()
            },
        );
    }
    let mut daemon = env.daemon("crashes");
    let ids = env.accounts().await;
    let stop = CancellationToken::new();
    let changing = churn(env.sandbox.clone(), Duration::from_secs(2), stop.clone());
    let total = scale.backfill_orders * Api::ALL.len();
    let mut kills = 0;
    let mut killed_during_backfill = 0;

    for _ in 0..scale.backfill_kills {
        // Wait for this incarnation to commit something, then kill it a random moment later.
        let before = env.stored_orders().await;
        wait_until(
            scale.settle,
            "a page committed after the restart",
            || async {
                let now = env.stored_orders().await;
                if now > before || now as usize >= total {
                    Ok(())
                } else {
                    Err(format!("{now} orders"))
                }
            },
        )
        .await;
        tokio::time::sleep(dice.between(Duration::from_millis(100), Duration::from_millis(1500)))
            .await;
        if (env.stored_orders().await as usize) < total {
            killed_during_backfill += 1;
        }
        daemon.kill();
        kills += 1;
        expire_leases_of(&env.pool, &daemon.holder_pattern()).await;
        daemon = env.daemon("crashes");
    }

    // Outbox processing: transitions on three marketplaces, sends slower, kills while claims are held.
    // The transitions are queued for stored orders, so the backfill finishes first.
    wait_until(scale.settle, "the backfill finished", || async {
        let n = env.stored_orders().await;
        if n as usize >= total {
            Ok(())
        } else {
            Err(format!("{n} of {total} orders"))
        }
    })
    .await;
    for api in [Api::Allesgo, Api::C2c, Api::Labs] {
        env.sandbox.set_faults(
            api,
            FaultPlan {
                slow_rate: 0.5,
                slow_delay: Duration::from_millis(400),
                ..FaultPlan::default()
            },
        );
    }
    let mut queued = 0;
    let mut killed_while_running = 0;
    for _ in 0..scale.outbox_kills {
        queued +=
            queue_transitions(&env.pool, scale.transitions / scale.outbox_kills as i64 + 1).await;
        let running = wait_until(Duration::from_secs(60), "a transition claimed", || async {
            let running: i64 =
                sqlx::query_scalar("select count(*) from outbox where state = 'running'")
                    .fetch_one(&env.pool)
                    .await
                    .map_err(|e| e.to_string())?;
            let moving = outbox_settled(&env.pool).await.is_err();
            if running > 0 || !moving {
                Ok(running)
            } else {
                Err("nothing claimed yet".into())
            }
        })
        .await;
        tokio::time::sleep(dice.between(Duration::from_millis(0), Duration::from_millis(400)))
            .await;
        if running > 0 {
            killed_while_running += 1;
        }
        daemon.kill();
        kills += 1;
        expire_leases_of(&env.pool, &daemon.holder_pattern()).await;
        daemon = env.daemon("crashes");
    }
    stop.cancel();
    changing.await.expect("churn");
    for api in Api::ALL {
        env.sandbox.set_faults(api, FaultPlan::default());
    }
    wait_until(scale.settle, "outbox settled after the kills", || {
        outbox_settled(&env.pool)
    })
    .await;
    wait_until(scale.settle, "database in step after the kills", || {
        env.in_step(&ids)
    })
    .await;
    println!(
        "[crashes] {kills} kills: {killed_during_backfill} during the backfill, {killed_while_running} while transitions were claimed; {queued} transitions queued"
    );
    assert!(
        killed_during_backfill > 0,
        "no kill landed during the backfill"
    );
    let transitions = assert_no_effect_twice(&env.pool, &env.sandbox).await;
    if transitions == 0 {
        let states: Vec<(String, String, Option<String>, i64)> = sqlx::query_as(
            "select a.name, o.state, o.status_code, count(*) from orders o join accounts a on a.id = o.account_id
             group by 1, 2, 3 order by 1, 2, 3",
        )
        .fetch_all(&env.pool)
        .await
        .unwrap();
        panic!("no transition was queued; stored states: {states:?}");
    }
    let states = transition_states(&env.pool).await;
    assert!(
        states.get("succeeded").copied().unwrap_or(0) > 0,
        "{states:?}"
    );
    assert!(daemon.exited().is_none());
    let status = daemon.stop(Duration::from_secs(30));
    assert!(status.success(), "exit status after SIGTERM: {status}");
    let (secrets_checked, bytes_scanned) = assert_no_secret_anywhere(&env).await;
    let figures = Figures {
        orders_held: Api::ALL.iter().map(|a| env.sandbox.orders(*a).len()).sum(),
        requests: env.sandbox.audit().len(),
        kills,
        transitions,
        transition_states: states,
        secrets_checked,
        bytes_scanned,
        ..Figures::default()
    };
    figures.print("crashes", started.elapsed());
    figures
}

/// PostgreSQL stopped and started again in the middle of a backfill: the daemon reconnects by itself.
async fn postgres_restart(scale: &Scale) -> Figures {
    let started = Instant::now();
    let tuning = Tuning {
        page_size: Some(25),
        ..Tuning::default()
    };
    let mut env = Env::start(scale.backfill_orders / 2, &tuning, true).await;
    for api in Api::ALL {
        env.sandbox.set_faults(
            api,
            FaultPlan {
                slow_rate: 1.0,
                slow_delay: Duration::from_millis(15),
                ..FaultPlan::default()
            },
        );
    }
    let mut daemon = env.daemon("postgres-restart");
    let ids = env.accounts().await;
    wait_until(
        Duration::from_secs(60),
        "a first page committed",
        || async {
            let n = env.stored_orders().await;
            if n > 0 {
                Ok(())
            } else {
                Err("no orders yet".into())
            }
        },
    )
    .await;
    let mut cluster = env.cluster.take().expect("own cluster");
    let cluster = tokio::task::spawn_blocking(move || {
        cluster.stop().expect("stop PostgreSQL");
        // An outage of a few seconds: the daemon's runs fail meanwhile, the process stays up.
        std::thread::sleep(Duration::from_secs(3));
        cluster.restart().expect("start PostgreSQL again");
        cluster
    })
    .await
    .unwrap();
    env.cluster = Some(cluster);
    let restarted_at = chrono::Utc::now();
    for api in Api::ALL {
        env.sandbox.set_faults(api, FaultPlan::default());
    }
    wait_until(
        scale.settle,
        "database in step after the PostgreSQL restart",
        || env.in_step(&ids),
    )
    .await;
    assert!(
        daemon.exited().is_none(),
        "the daemon exited when PostgreSQL went away"
    );
    // The work after the restart was done by the same process, with no operator action.
    let later: i64 = sqlx::query_scalar(
        "select count(*) from sync_runs where outcome = 'succeeded' and started_at > $1",
    )
    .bind(restarted_at)
    .fetch_one(&env.pool)
    .await
    .unwrap();
    assert!(later > 0, "no successful run after the restart");
    let status = daemon.stop(Duration::from_secs(30));
    assert!(status.success(), "exit status after SIGTERM: {status}");
    let (secrets_checked, bytes_scanned) = assert_no_secret_anywhere(&env).await;
    env.pool.close().await;
    let figures = Figures {
        orders_held: Api::ALL.iter().map(|a| env.sandbox.orders(*a).len()).sum(),
        requests: env.sandbox.audit().len(),
        postgres_restarts: 1,
        secrets_checked,
        bytes_scanned,
        ..Figures::default()
    };
    figures.print("postgres restart", started.elapsed());
    figures
}

/// Three replicas on one database: in step, the work shared, no transition pushed twice.
async fn replicas(scale: &Scale) -> Figures {
    let started = Instant::now();
    let tuning = Tuning {
        page_size: Some(25),
        ..Tuning::default()
    };
    let env = Env::start(scale.replica_orders, &tuning, false).await;
    for api in Api::ALL {
        env.sandbox.set_faults(
            api,
            FaultPlan {
                slow_rate: 1.0,
                slow_delay: Duration::from_millis(10),
                ..FaultPlan::default()
            },
        );
    }
    let mut daemons: Vec<Daemon> = (0..3)
        .map(|i| env.daemon(&format!("replica-{i}")))
        .collect();
    let ids = env.accounts().await;
    let stop = CancellationToken::new();
    let changing = churn(env.sandbox.clone(), Duration::from_secs(2), stop.clone());
    wait_until(scale.settle, "orders to act on", || async {
        let n = env.stored_orders().await;
        let total = scale.replica_orders * Api::ALL.len();
        if n as usize >= total {
            Ok(())
        } else {
            Err(format!("{n} of {total} orders"))
        }
    })
    .await;
    let queued = queue_transitions(&env.pool, scale.transitions).await;
    stop.cancel();
    changing.await.expect("churn");
    for api in Api::ALL {
        env.sandbox.set_faults(api, FaultPlan::default());
    }
    wait_until(scale.settle, "outbox settled with three replicas", || {
        outbox_settled(&env.pool)
    })
    .await;
    wait_until(scale.settle, "database in step with three replicas", || {
        env.in_step(&ids)
    })
    .await;
    let holders: Vec<String> = sqlx::query_scalar(
        "select distinct holder from sync_runs where outcome = 'succeeded' and pages > 0",
    )
    .fetch_all(&env.pool)
    .await
    .unwrap();
    assert!(
        holders.len() > 1,
        "one replica did all the polling: {holders:?}"
    );
    let workers: Vec<String> = sqlx::query_scalar("select distinct worker from outbox_attempts")
        .fetch_all(&env.pool)
        .await
        .unwrap();
    // Sent once: a transition's sends are one unless a send was ambiguous (none is, without faults).
    let resent: Vec<(i64, i64)> = sqlx::query_as(
        "select outbox_id, count(*) from outbox_attempts where action = 'send' group by outbox_id having count(*) > 1",
    )
    .fetch_all(&env.pool)
    .await
    .unwrap();
    assert!(
        resent.is_empty(),
        "transitions sent more than once: {resent:?}"
    );
    let transitions = assert_no_effect_twice(&env.pool, &env.sandbox).await;
    assert!(transitions > 0, "no transition was queued");
    println!(
        "[replicas] {} replicas polled, {} sent transitions; {queued} transitions queued",
        holders.len(),
        workers.len()
    );
    for daemon in &mut daemons {
        assert!(daemon.exited().is_none());
        let status = daemon.stop(Duration::from_secs(30));
        assert!(status.success(), "exit status after SIGTERM: {status}");
    }
    let (secrets_checked, bytes_scanned) = assert_no_secret_anywhere(&env).await;
    let figures = Figures {
        orders_held: Api::ALL.iter().map(|a| env.sandbox.orders(*a).len()).sum(),
        requests: env.sandbox.audit().len(),
        transitions,
        transition_states: transition_states(&env.pool).await,
        secrets_checked,
        bytes_scanned,
        ..Figures::default()
    };
    figures.print("replicas", started.elapsed());
    figures
}

// ---------------------------------------------------------------------------------------------------
// The fast subset (default `cargo test`) and the soak.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_faults_while_orders_change_the_database_ends_equal_to_the_marketplaces() {
    faults(&Scale::ci()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_during_backfill_and_outbox_nothing_is_lost_and_nothing_takes_effect_twice() {
    crashes(&Scale::ci()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restarted_mid_run_the_daemon_reconnects_by_itself() {
    postgres_restart(&Scale::ci()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_share_the_work_and_push_each_transition_once() {
    replicas(&Scale::ci()).await;
}

/// The long run: every scenario at soak scale, one after the other, with the figures of the report.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "the soak: ORDERSYNC_SOAK=1 cargo test --release --test reliability -- --ignored --nocapture soak"]
async fn soak() {
    let scale = if std::env::var_os("ORDERSYNC_SOAK").is_some() {
        Scale::soak()
    } else {
        Scale::ci()
    };
    println!("soak at {scale:?}");
    let started = Instant::now();
    let all = [
        faults(&scale).await,
        crashes(&scale).await,
        postgres_restart(&scale).await,
        replicas(&scale).await,
    ];
    let sum = |f: fn(&Figures) -> usize| all.iter().map(f).sum::<usize>();
    println!();
    println!(
        "== ordersync reliability soak: {:.0?} ==",
        started.elapsed()
    );
    println!(
        "load held:          {} orders in the crash backfill ({} per marketplace); {} requests served",
        scale.backfill_orders * Api::ALL.len(),
        scale.backfill_orders,
        sum(|f| f.requests)
    );
    println!(
        "faults injected:    {} ({:?})",
        all[0].faults.values().sum::<usize>(),
        all[0].faults
    );
    println!(
        "kills survived:     {} (SIGKILL, restarted each time)",
        sum(|f| f.kills)
    );
    println!("postgres restarts:  {}", sum(|f| f.postgres_restarts));
    println!("transitions pushed: {}", sum(|f| f.transitions));
    println!("orders lost:        {}", sum(|f| f.orders_lost));
    println!("duplicate effects:  {}", sum(|f| f.duplicate_effects));
    println!(
        "secrets found:      0 ({} values checked in {} bytes of logs, tables and output)",
        all.iter().map(|f| f.secrets_checked).max().unwrap_or(0),
        sum(|f| f.bytes_scanned)
    );
    println!(
        "(inputs tried by the parser property tests: see the `proptests` lines of the same run)"
    );
}
