//! The command line as an operator uses it: the real binary, real configuration files, real PostgreSQL.

mod common;

use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const EXAMPLE_SECRETS: [(&str, &str); 9] = [
    (
        "DATABASE_URL",
        "postgres://ordersync:db-pass-1234@127.0.0.1:1/x",
    ),
    ("ALLESGO_TOKEN", "allesgo-secret-token"),
    ("C2C_API_KEY", "c2c-secret-key"),
    ("C2C_API_PASSWORD", "c2c-secret-password"),
    ("I1_TOKEN", "i1-secret-token"),
    ("LABS_TOKEN", "labs-secret-token"),
    ("GG_API_KEY", "gg-secret-apikey"),
    ("GG_SECRET_KEY", "gg-secret-key"),
    ("GG_ROLE_PASSWORD", "gg-secret-rolepass"),
];

fn ordersync() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_ordersync"));
    command.current_dir(env!("CARGO_MANIFEST_DIR"));
    for (key, _) in std::env::vars() {
        if key.starts_with("ORDERSYNC") || key == "DATABASE_URL" || key == "RUST_LOG" {
            command.env_remove(key);
        }
    }
    command
}

fn config_file(text: &str) -> tempfile::NamedTempFile {
    let mut file = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
    file.write_all(text.as_bytes()).unwrap();
    file
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[test]
fn the_example_configuration_is_valid_and_its_summary_hides_secrets() {
    let output = ordersync()
        .args(["check-config", "--config", "config/example.toml"])
        .envs(EXAMPLE_SECRETS)
        .output()
        .unwrap();
    let out = text(&output);
    assert!(output.status.success(), "{out}");
    assert!(
        out.contains("account my-gittigidiyor-shop: gittigidiyor"),
        "{out}"
    );
    for (_, secret) in EXAMPLE_SECRETS {
        assert!(!out.contains(secret), "secret leaked in: {out}");
    }
    assert!(!out.contains("db-pass-1234"));
}

fn check(config: &str, env: &[(&str, &str)]) -> (i32, String, String) {
    let file = config_file(config);
    let output = ordersync()
        .arg("check-config")
        .arg("--config")
        .arg(file.path())
        .envs(env.iter().copied())
        .output()
        .unwrap();
    (
        output.status.code().unwrap_or(-1),
        text(&output),
        file.path().display().to_string(),
    )
}

#[test]
fn a_missing_secret_variable_names_the_key_and_file() {
    let (code, out, path) = check(
        "[[accounts]]\nname = \"a\"\nmarketplace = \"labs\"\ntoken = { env = \"NO_SUCH_VAR_FOR_ORDERSYNC\" }\n",
        &[],
    );
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("accounts[0].token"), "{out}");
    assert!(out.contains("NO_SUCH_VAR_FOR_ORDERSYNC"), "{out}");
    assert!(out.contains(&path), "{out}");
    assert!(!out.contains("panicked"), "{out}");
}

#[test]
fn a_syntax_error_names_the_line_without_printing_a_literal_secret() {
    let (code, out, path) = check(
        "[[accounts]]\nname = \"a\"\nmarketplace = \"labs\"\ntoken = \"tok-abc-secret\n",
        &[],
    );
    assert_eq!(code, 2, "{out}");
    assert!(out.contains(&path), "{out}");
    assert!(out.contains("line 4, column 24"), "{out}");
    assert!(!out.contains("tok-abc"), "secret leaked in: {out}");
}

#[test]
fn an_unknown_marketplace_names_the_key() {
    let (code, out, path) = check(
        "[[accounts]]\nname = \"a\"\nmarketplace = \"amazon\"\ntoken = \"tok-x\"\n",
        &[],
    );
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("accounts[0].marketplace") && out.contains("amazon"),
        "{out}"
    );
    assert!(out.contains(&path), "{out}");
}

#[test]
fn an_unknown_key_names_the_key() {
    let (code, out, path) = check("[log]\nlevel = \"info\"\ncolour = \"blue\"\n", &[]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("log") && out.contains("colour"), "{out}");
    assert!(out.contains(&path), "{out}");

    let (code, out, _) = check(
        "[[accounts]]\nname = \"a\"\nmarketplace = \"labs\"\ntoken = { env = \"HOME\" }\ntokn = \"typo\"\n",
        &[],
    );
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("accounts[0]") && out.contains("tokn"), "{out}");

    // A credential of another marketplace is an unknown key for this one.
    let (code, out, _) = check(
        "[[accounts]]\nname = \"a\"\nmarketplace = \"labs\"\ntoken = { env = \"HOME\" }\nstore_id = \"1\"\n",
        &[],
    );
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("accounts[0].store_id"), "{out}");
}

#[test]
fn an_environment_override_is_named_as_such() {
    let (code, out, _) = check("", &[("ORDERSYNC__LOG__FORMAT", "yaml")]);
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("log.format") && out.contains("environment"),
        "{out}"
    );
}

#[test]
fn bad_command_line_input_is_a_usage_error_not_a_panic() {
    let output = ordersync()
        .args([
            "sync",
            "--account",
            "x",
            "--since",
            "yesterday",
            "--until",
            "2026-01-01",
        ])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(!text(&output).contains("panicked"));
}

#[tokio::test]
async fn migrate_creates_the_schema_once() {
    let db = common::test_db().await;
    // test_db migrated it already; a fresh database shows the first run.
    let fresh = format!("{}_fresh", db.name);
    sqlx::query(sqlx::AssertSqlSafe(format!("create database {fresh}")))
        .execute(&db.pool)
        .await
        .unwrap();
    let url = common::db_url(&fresh);
    let first = ordersync()
        .arg("migrate")
        .env("DATABASE_URL", &url)
        .output()
        .unwrap();
    assert!(first.status.success(), "{}", text(&first));
    let all = ordersync::store::MIGRATOR.iter().count();
    assert!(
        text(&first).contains(&format!("migrations applied: {all}")),
        "{}",
        text(&first)
    );
    let second = ordersync()
        .arg("migrate")
        .env("DATABASE_URL", &url)
        .output()
        .unwrap();
    assert!(
        text(&second).contains("migrations applied: 0"),
        "{}",
        text(&second)
    );
}

#[tokio::test]
async fn run_with_no_accounts_stops_on_sigterm() {
    let db = common::test_db().await;
    let mut child = ordersync()
        .arg("run")
        .env("DATABASE_URL", &db.url)
        .env("ORDERSYNC__LOG__FORMAT", "json")
        .env("ORDERSYNC__HTTP__LISTEN", "127.0.0.1:0")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until it says it started, by reading its log.
    let stderr = child.stderr.take().unwrap();
    let (started_tx, started_rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        use std::io::BufRead;
        let mut seen = Vec::new();
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if line.contains("ordersync started") {
                let _ = started_tx.send(());
            }
            seen.push(line);
        }
        seen
    });
    started_rx
        .recv_timeout(Duration::from_secs(30))
        .expect("ordersync run did not start");
    // SAFETY: sending a signal to our own child process.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let sent = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            sent.elapsed() < Duration::from_secs(10),
            "did not exit within 10 s of SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "exit status {status}");
    let log = reader.join().unwrap();
    for line in &log {
        assert!(
            serde_json::from_str::<serde_json::Value>(line).is_ok(),
            "not JSON: {line}"
        );
    }
    assert!(
        log.iter().any(|l| l.contains("ordersync stopped")),
        "{log:?}"
    );
}

/// A configuration file with one account polling `api` in `sandbox`.
fn sandbox_config(
    sandbox: &ordersync::sandbox::Sandbox,
    api: ordersync::sandbox::Api,
) -> tempfile::NamedTempFile {
    use ordersync::config::Credentials;
    let account = common::account(api.name(), common::kind_of(api), &sandbox.base_url(api));
    let credentials = match &account.credentials {
        Credentials::I1 { token, .. } | Credentials::Labs { token } => {
            format!("token = \"{}\"\n", token.expose())
        }
        other => panic!("no config writer for {other:?}"),
    };
    config_file(&format!(
        "[[accounts]]\nname = \"{}\"\nmarketplace = \"{}\"\nbase_url = \"{}\"\ninitial_sync_days = 91\npage_size = 50\nrequests_per_second = 1000\n{credentials}",
        account.name, account.marketplace, account.base_url
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_polls_once_and_a_replay_leaves_the_cursor_alone() {
    use ordersync::sandbox::{Api, Sandbox, SandboxConfig};
    let db = common::test_db().await;
    let sandbox = Sandbox::start(SandboxConfig {
        orders_per_api: 120,
        ..Default::default()
    })
    .await
    .unwrap();
    let config = sandbox_config(&sandbox, Api::Labs);
    let sync = |args: &[&str]| {
        let mut command = ordersync();
        command
            .arg("--config")
            .arg(config.path())
            .arg("sync")
            .args(["--account", "labs"])
            .args(args)
            .env("DATABASE_URL", &db.url);
        command
    };
    let first = tokio::task::spawn_blocking({
        let mut c = sync(&[]);
        move || c.output().unwrap()
    })
    .await
    .unwrap();
    assert!(first.status.success(), "{}", text(&first));
    assert!(
        text(&first).contains("labs/orders: succeeded"),
        "{}",
        text(&first)
    );
    let stored: i64 = sqlx::query_scalar("select count(*) from orders")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(stored, 120);
    let cursor: chrono::DateTime<chrono::Utc> =
        sqlx::query_scalar("select value from sync_cursors")
            .fetch_one(&db.pool)
            .await
            .unwrap();

    let replay = tokio::task::spawn_blocking({
        let mut c = sync(&["--since", "2020-01-01", "--until", "2020-01-02"]);
        move || c.output().unwrap()
    })
    .await
    .unwrap();
    assert!(replay.status.success(), "{}", text(&replay));
    let after: chrono::DateTime<chrono::Utc> = sqlx::query_scalar("select value from sync_cursors")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(after, cursor, "a replay moved the live cursor");
    let replays: i64 =
        sqlx::query_scalar("select count(*) from sync_runs where replay and outcome = 'succeeded'")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(replays, 1);

    let status = tokio::task::spawn_blocking({
        let mut c = ordersync();
        c.arg("--config")
            .arg(config.path())
            .args(["status", "--json"])
            .env("DATABASE_URL", &db.url);
        move || c.output().unwrap()
    })
    .await
    .unwrap();
    let status: serde_json::Value =
        serde_json::from_slice(&status.stdout).expect("status --json prints JSON");
    let rows = &status["streams"];
    assert_eq!(rows[0]["account"], "labs");
    assert_eq!(rows[0]["last_outcome"], "succeeded");
    assert_eq!(status["outbox"][0]["counts"]["pending"], 0);

    let unknown = tokio::task::spawn_blocking({
        let mut c = ordersync();
        c.arg("--config")
            .arg(config.path())
            .args(["sync", "--account", "nope"])
            .env("DATABASE_URL", &db.url);
        move || c.output().unwrap()
    })
    .await
    .unwrap();
    assert_eq!(unknown.status.code(), Some(2));
    assert!(text(&unknown).contains("nope"));
}

/// Asserts a refusal: the expected exit status, a message, and neither a panic nor a backtrace.
fn assert_refused(what: &str, output: &Output, code: i32) -> String {
    let out = text(output);
    assert_eq!(output.status.code(), Some(code), "{what}: {out}");
    assert!(!out.trim().is_empty(), "{what}: no message");
    for bad in ["panicked", "backtrace", "RUST_BACKTRACE"] {
        assert!(!out.contains(bad), "{what}: {out}");
    }
    out
}

#[test]
fn bad_configuration_files_are_refused_with_a_message_naming_the_problem() {
    let labs = "[[accounts]]\nname = \"a\"\nmarketplace = \"labs\"\ntoken = { env = \"HOME\" }\n";
    let cases: Vec<(&str, String, &str)> = vec![
        ("not TOML", "this is [not toml".into(), ""),
        ("wrong type", "[database]\nmax_connections = \"ten\"\n".into(), "max_connections"),
        ("negative count", "[database]\nmax_connections = -1\n".into(), "max_connections"),
        ("huge number", "[database]\nmax_connections = 99999999999999999999\n".into(), ""),
        ("bad duration", "[shutdown]\ndeadline = \"forever\"\n".into(), "deadline"),
        ("bad log format", "[log]\nformat = \"xml\"\n".into(), "format"),
        ("bad url", format!("{labs}base_url = \"not a url\"\n"), "base_url"),
        ("bad schedule", format!("{labs}schedule = \"every minute\"\n"), "schedule"),
        ("zero page size", format!("{labs}page_size = 0\n"), "page_size"),
        ("zero rate", format!("{labs}requests_per_second = 0\n"), "requests_per_second"),
        ("negative days", format!("{labs}initial_sync_days = -3\n"), "initial_sync_days"),
        ("bad name", labs.replace("name = \"a\"", "name = \"Bad Name!\""), "name"),
        ("duplicate names", format!("{labs}\n{labs}"), "a"),
        ("missing credential", "[[accounts]]\nname = \"a\"\nmarketplace = \"labs\"\n".into(), "token"),
        (
            "missing secret file",
            "[[accounts]]\nname = \"a\"\nmarketplace = \"labs\"\ntoken = { file = \"/no/such/secret\" }\n".into(),
            "/no/such/secret",
        ),
        (
            "unknown secret source",
            "[[accounts]]\nname = \"a\"\nmarketplace = \"labs\"\ntoken = { vault = \"x\" }\n".into(),
            "token",
        ),
        ("accounts not a list", "accounts = 3\n".into(), "accounts"),
        ("unknown state", "[status_map.labs]\nCREATED = \"shipped-ish\"\n".into(), "shipped-ish"),
        ("unknown marketplace map", "[status_map.amazon]\nX = \"shipped\"\n".into(), "amazon"),
    ];
    for (what, config, names) in cases {
        let file = config_file(&config);
        let output = ordersync()
            .arg("check-config")
            .arg("--config")
            .arg(file.path())
            .output()
            .unwrap();
        let out = assert_refused(what, &output, 2);
        assert!(
            out.contains(names),
            "{what}: the message does not name `{names}`: {out}"
        );
    }

    // Not a file, and not text.
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("garbage.toml");
    std::fs::write(&garbage, [0xff, 0xfe, 0x00, 0x9c, b'[', 0x80]).unwrap();
    for path in [
        dir.path().join("missing.toml"),
        dir.path().to_owned(),
        garbage,
    ] {
        let output = ordersync()
            .arg("check-config")
            .arg("--config")
            .arg(&path)
            .output()
            .unwrap();
        assert_refused(&path.display().to_string(), &output, 2);
    }

    // The environment layer is checked the same way.
    let output = ordersync()
        .arg("check-config")
        .env("ORDERSYNC__DATABASE__MAX_CONNECTIONS", "many")
        .output()
        .unwrap();
    assert_refused("environment override", &output, 2);
}

#[test]
fn bad_command_lines_are_usage_errors_with_a_message() {
    let cases: &[&[&str]] = &[
        &["no-such-command"],
        &["--no-such-flag"],
        &["sync"],
        &[
            "sync",
            "--account",
            "a",
            "--since",
            "2026-13-45",
            "--until",
            "2026-01-01",
        ],
        &["sync", "--account", "a", "--since", "2026-01-01"],
        &["outbox", "retry", "abc"],
        &["outbox", "cancel", "-5x"],
        &["outbox", "add", "--account", "a"],
        &["outbox", "list", "--state", "bogus"],
        &["outbox", "list", "--limit", "lots"],
        &["demo", "--duration", "forever"],
        &["demo", "--orders", "-1"],
        &["sandbox", "--port", "99999"],
        &["status", "--json=yes"],
    ];
    for args in cases {
        let output = ordersync().args(*args).output().unwrap();
        assert_refused(&args.join(" "), &output, 2);
    }
    // Commands that need a database say so when none is configured, and an unknown account is named.
    for args in [&["status"][..], &["migrate"], &["outbox", "list"]] {
        let output = ordersync().args(args).output().unwrap();
        let out = assert_refused(&args.join(" "), &output, 2);
        assert!(out.contains("database.url"), "{out}");
    }
    let output = ordersync()
        .args(["sync", "--account", "nobody"])
        .env("DATABASE_URL", "postgres://nobody@127.0.0.1:1/none")
        .output()
        .unwrap();
    let out = assert_refused("unknown account", &output, 2);
    assert!(out.contains("nobody"), "{out}");
    // A database that cannot be reached is an error (1) with its cause, not a panic; a URL that
    // cannot name one is a configuration error.
    let unreachable = "postgres://nobody@127.0.0.1:1/none";
    let output = ordersync()
        .arg("status")
        .env("DATABASE_URL", unreachable)
        .output()
        .unwrap();
    assert_refused(unreachable, &output, 1);
    let output = ordersync()
        .arg("status")
        .env("DATABASE_URL", "not a url at all")
        .output()
        .unwrap();
    let out = assert_refused("not a URL", &output, 2);
    assert!(
        out.contains("database.url") && out.contains("DATABASE_URL"),
        "{out}"
    );
}
