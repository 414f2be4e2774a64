//! The real `ordersync` binary as a child process, for the reliability suite: a configuration file
//! pointing at an in-process sandbox (secrets read from environment variables and files, as in
//! production), JSON logs appended to a file per replica, SIGKILL and SIGTERM, and waiting on the
//! database with a deadline instead of sleeping for work.

use std::fs::OpenOptions;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use ordersync::sandbox::{Api, Credentials, Sandbox};
use sqlx::PgPool;

/// Sandbox credentials unlike anything else in a log or a table, so that a scan for them means something.
pub fn distinctive_credentials() -> Credentials {
    Credentials {
        allesgo_store_id: "4242".into(),
        allesgo_access_token: "rel-allesgo-TOKEN-6f1c9a".into(),
        c2c_domain: "www.sandbox-shop.com".into(),
        c2c_api_key: "rel-c2c-KEY-83be27".into(),
        c2c_api_password: "rel-c2c-PASS-d40f5e".into(),
        i1_token: "rel-i1-TOKEN-1a7b3d".into(),
        labs_token: "rel-labs-TOKEN-92ce04".into(),
        gg_api_key: "rel-gg-APIKEY-5e8d21".into(),
        gg_secret_key: "rel-gg-SECRET-b7a610".into(),
        gg_role_name: "sandbox-gg-role".into(),
        gg_role_password: "rel-gg-ROLEPASS-3c9f88".into(),
    }
}

/// Every secret value among `credentials` (store id, domain and role name are not secrets).
pub fn secret_values(credentials: &Credentials) -> Vec<String> {
    vec![
        credentials.allesgo_access_token.clone(),
        credentials.c2c_api_key.clone(),
        credentials.c2c_api_password.clone(),
        credentials.i1_token.clone(),
        credentials.labs_token.clone(),
        credentials.gg_api_key.clone(),
        credentials.gg_secret_key.clone(),
        credentials.gg_role_password.clone(),
    ]
}

/// The database URL with a password in it, so that the scan covers the database password too. The test
/// servers trust local connections, so a password they did not ask for is never sent; a URL that already
/// has one keeps it.
pub fn with_password(url: &str, password: &str) -> String {
    let mut parsed = url::Url::parse(url).expect("database URL");
    if parsed.password().is_none() {
        parsed.set_password(Some(password)).expect("set password");
    }
    parsed.to_string()
}

/// The password in a database URL, if any.
pub fn password_of(url: &str) -> Option<String> {
    url::Url::parse(url)
        .ok()
        .and_then(|u| u.password().map(str::to_owned))
}

/// How the daemon polls the sandbox.
#[derive(Debug, Clone)]
pub struct Tuning {
    pub schedule: String,
    pub timeout: Duration,
    /// `None`: the marketplace's default.
    pub page_size: Option<u32>,
    pub requests_per_second: u32,
}

impl Default for Tuning {
    fn default() -> Self {
        Tuning {
            schedule: "*/2 * * * * *".into(),
            timeout: Duration::from_secs(5),
            page_size: None,
            requests_per_second: 500,
        }
    }
}

/// A configuration file for the five sandbox marketplaces, and the environment it reads secrets from.
pub struct DaemonConfig {
    pub path: PathBuf,
    pub env: Vec<(String, String)>,
    /// Keeps the secret files and the configuration alive.
    _dir: tempfile::TempDir,
}

/// The account names the configuration gives each marketplace.
pub fn account_name(api: Api) -> String {
    format!("rel-{}", api.name())
}

impl DaemonConfig {
    /// Half the secrets come from environment variables, half from files, as production sets them.
    pub fn write(sandbox: &Sandbox, tuning: &Tuning) -> DaemonConfig {
        let dir = tempfile::Builder::new()
            .prefix("ordersync-reliability-")
            .tempdir()
            .expect("temporary directory");
        let c = sandbox.credentials();
        let mut env = Vec::new();
        let mut n = 0;
        let mut secret = |value: &str| -> String {
            n += 1;
            if n % 2 == 0 {
                let var = format!("RELIABILITY_SECRET_{n}");
                env.push((var.clone(), value.to_owned()));
                format!("{{ env = \"{var}\" }}")
            } else {
                let file = dir.path().join(format!("secret-{n}"));
                std::fs::write(&file, format!("{value}\n")).expect("write secret file");
                format!("{{ file = \"{}\" }}", file.display())
            }
        };
        let mut toml = String::from(
            "[log]\nlevel = \"info\"\nformat = \"json\"\n\n[shutdown]\ndeadline = \"10s\"\n\n# Several daemons run at once: each takes a free port.\n[http]\nlisten = \"127.0.0.1:0\"\n",
        );
        for api in Api::ALL {
            let credentials = match api {
                Api::Allesgo => format!(
                    "store_id = \"{}\"\naccess_token = {}\n",
                    c.allesgo_store_id,
                    secret(&c.allesgo_access_token)
                ),
                Api::C2c => format!(
                    "domain = \"{}\"\napi_key = {}\napi_password = {}\n",
                    c.c2c_domain,
                    secret(&c.c2c_api_key),
                    secret(&c.c2c_api_password)
                ),
                Api::I1 => format!("token = {}\n", secret(&c.i1_token)),
                Api::Labs => format!("token = {}\n", secret(&c.labs_token)),
                Api::Gittigidiyor => format!(
                    "api_key = {}\nsecret_key = {}\nusername = \"{}\"\npassword = {}\nlang = \"tr\"\n",
                    secret(&c.gg_api_key),
                    secret(&c.gg_secret_key),
                    c.gg_role_name,
                    secret(&c.gg_role_password)
                ),
            };
            toml.push_str(&format!(
                "\n[[accounts]]\nname = \"{}\"\nmarketplace = \"{}\"\nbase_url = \"{}\"\nschedule = \"{}\"\n\
                 initial_sync_days = 91\noverlap = \"10m\"\nrequests_per_second = {}\ntimeout = \"{}ms\"\n",
                account_name(api),
                api.name(),
                sandbox.base_url(api),
                tuning.schedule,
                tuning.requests_per_second,
                tuning.timeout.as_millis()
            ));
            if let Some(page_size) = tuning.page_size {
                toml.push_str(&format!("page_size = {page_size}\n"));
            }
            toml.push_str(&credentials);
        }
        let path = dir.path().join("ordersync.toml");
        std::fs::write(&path, toml).expect("write configuration");
        DaemonConfig {
            path,
            env,
            _dir: dir,
        }
    }

    /// The environment as a map, for `LoadOptions::env`.
    pub fn env_map(&self, database_url: &str) -> std::collections::HashMap<String, String> {
        let mut map: std::collections::HashMap<String, String> = self.env.iter().cloned().collect();
        map.insert("DATABASE_URL".into(), database_url.into());
        map
    }
}

/// A running `ordersync run`.
pub struct Daemon {
    child: Option<Child>,
    pid: u32,
    pub log: PathBuf,
}

/// The binary with a clean environment: nothing of the developer's ORDERSYNC_* or DATABASE_URL.
pub fn ordersync() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_ordersync"));
    for (key, _) in std::env::vars() {
        if key.starts_with("ORDERSYNC") || key == "DATABASE_URL" || key == "RUST_LOG" {
            command.env_remove(key);
        }
    }
    command
}

impl Daemon {
    /// Starts `ordersync run` with `config`; its output is appended to `log`.
    pub fn start(config: &DaemonConfig, database_url: &str, log: &Path) -> Daemon {
        let open = || {
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(log)
                .expect("open the daemon's log")
        };
        let child = ordersync()
            .arg("run")
            .arg("--config")
            .arg(&config.path)
            .envs(config.env.iter().map(|(k, v)| (k, v)))
            .env("DATABASE_URL", database_url)
            .stdin(Stdio::null())
            .stdout(open())
            .stderr(open())
            .spawn()
            .expect("start ordersync run");
        Daemon {
            pid: child.id(),
            child: Some(child),
            log: log.to_owned(),
        }
    }

    /// A SQL `like` pattern matching this process's replica id (`host:pid:nonce`).
    pub fn holder_pattern(&self) -> String {
        format!("%:{}:%", self.pid)
    }

    /// Whether the process has ended (it should not, on its own).
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.as_mut()?.try_wait().expect("try_wait")
    }

    /// SIGKILL: no shutdown code runs, leases and claims stay behind.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: sending a signal to our own child process, which has not been reaped yet.
            unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
            child.wait().expect("reap the killed daemon");
        }
    }

    /// SIGTERM, then waits up to `deadline` for the exit.
    pub fn stop(&mut self, deadline: Duration) -> ExitStatus {
        let mut child = self.child.take().expect("the daemon is running");
        // SAFETY: sending a signal to our own child process, which has not been reaped yet.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let sent = Instant::now();
        loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                return status;
            }
            if sent.elapsed() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("the daemon did not exit within {deadline:?} of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// What a SIGKILL leaves behind, as the passing of time would clear it: the dead replica's poll leases
/// and outbox claims are made expired (the daemon's TTLs are 2 and 5 minutes) and the outbox workers
/// are woken. Nothing else of the dead process is touched.
pub async fn expire_leases_of(pool: &PgPool, holder_pattern: &str) {
    sqlx::query(
        "update sync_leases set expires_at = now() - interval '1 second' where holder like $1",
    )
    .bind(holder_pattern)
    .execute(pool)
    .await
    .expect("expire poll leases");
    let accounts: Vec<i64> = sqlx::query_scalar(
        "update outbox set lease_expires_at = now() - interval '1 second'
         where state = 'running' and lease_owner like $1 returning account_id",
    )
    .bind(holder_pattern)
    .fetch_all(pool)
    .await
    .expect("expire outbox claims");
    for account in accounts {
        sqlx::query("select pg_notify('ordersync_outbox', $1)")
            .bind(account.to_string())
            .execute(pool)
            .await
            .expect("notify");
    }
}

/// Checks `condition` every 200 ms until it holds; panics with `what` and the last answer after `deadline`.
pub async fn wait_until<F, Fut, T>(deadline: Duration, what: &str, mut condition: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let start = Instant::now();
    loop {
        match condition().await {
            Ok(value) => return value,
            Err(last) => {
                assert!(
                    start.elapsed() < deadline,
                    "{what}: not reached within {deadline:?}; last: {last}"
                );
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A small deterministic generator (splitmix64) for kill moments, seeded and printed so a failing run
/// can be repeated with `ORDERSYNC_SEED`.
pub struct Dice(u64);

impl Dice {
    pub fn from_env() -> Dice {
        let seed = std::env::var("ORDERSYNC_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos() as u64)
                    .unwrap_or(7)
            });
        println!("random seed: {seed} (repeat with ORDERSYNC_SEED={seed})");
        Dice(seed)
    }

    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A duration in `[low, high)`.
    pub fn between(&mut self, low: Duration, high: Duration) -> Duration {
        let span = (high - low).as_millis().max(1) as u64;
        low + Duration::from_millis(self.next() % span)
    }
}
