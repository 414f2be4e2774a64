//! Loading and validation, from files written as an operator writes them.

use std::collections::HashMap;

use super::*;

const LABS: &str = "[[accounts]]\nname = \"a\"\nmarketplace = \"labs\"\n";

/// Loads `text` as the operator's file, with no `config/default.toml` and only `env` as the environment.
fn load_with_env(text: impl AsRef<[u8]>, env: &[(&str, &str)]) -> Result<Settings, ConfigError> {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("ordersync.toml");
    std::fs::write(&file, text).unwrap();
    let env: HashMap<String, String> = env
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    Settings::load(&LoadOptions {
        file: Some(file),
        base_dir: Some(dir.path().to_owned()),
        env: Some(env),
    })
    .map(|(settings, _)| settings)
}

fn load(text: impl AsRef<[u8]>) -> Result<Settings, ConfigError> {
    load_with_env(text, &[])
}

/// The message of the error `text` is refused with.
fn refused(text: &str) -> String {
    match load(text) {
        Ok(_) => panic!("accepted:\n{text}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn a_syntax_error_names_the_file_line_and_column_but_never_quotes_the_line() {
    let secret = "tok-abc-secret";
    for (text, column) in [
        // The closing quote missing: the parser stops at the end of the line.
        (format!("{LABS}token = \"{secret}\n").into_bytes(), 24),
        (format!("{LABS}token = '{secret}\n").into_bytes(), 24),
        // Something after the value.
        (format!("{LABS}token = \"{secret}\" x\n").into_bytes(), 26),
        // A byte order mark, and a byte that is not UTF-8 (a Latin-1 é) after the secret.
        (
            [
                b"\xef\xbb\xbf",
                format!("{LABS}token = \"{secret}").as_bytes(),
                b"\xe9\n",
            ]
            .concat(),
            25,
        ),
    ] {
        let error = load(&text).unwrap_err();
        let message = error.to_string();
        assert!(
            matches!(&error, ConfigError::Syntax { file, at: Some(TextPosition { line: 4, column: c }), .. }
                if file.ends_with("ordersync.toml") && *c == column),
            "{message}"
        );
        assert!(message.contains("line 4, column"), "{message}");
        assert!(message.contains("expected"), "{message}");
        assert!(!message.contains("tok-abc"), "the secret leaked: {message}");
    }
}

#[test]
fn a_file_that_cannot_be_read_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.toml");
    let error = Settings::load(&LoadOptions {
        file: Some(missing.clone()),
        base_dir: Some(dir.path().to_owned()),
        env: Some(HashMap::new()),
    })
    .unwrap_err();
    assert!(
        matches!(&error, ConfigError::Read { file, .. } if *file == missing.display().to_string()),
        "{error}"
    );
}

#[test]
fn durations_beyond_their_bounds_are_refused_by_key() {
    let account = format!("{LABS}token = \"tok-t\"\n");
    for (setting, key) in [
        // Panicked in the poller (cursor - overlap).
        ("overlap = \"300000y\"", "accounts[0].overlap"),
        // Became a zero overlap (TimeDelta::from_std failed).
        ("overlap = \"300000000y\"", "accounts[0].overlap"),
        ("overlap = \"8d\"", "accounts[0].overlap"),
        ("timeout = \"300000y\"", "accounts[0].timeout"),
        ("timeout = \"61m\"", "accounts[0].timeout"),
        ("[outbox]\nlease = \"300000y\"", "outbox.lease"),
        ("[outbox]\nlease = \"25h\"", "outbox.lease"),
        ("[outbox]\nmax_backoff = \"300000y\"", "outbox.max_backoff"),
        ("[outbox]\nmax_backoff = \"25h\"", "outbox.max_backoff"),
    ] {
        let message = refused(&format!("{account}{setting}\n"));
        assert!(
            message.starts_with(&format!("{key}: must be at most ")),
            "{setting}: {message}"
        );
    }
    let at_the_bounds = load(format!(
        "{account}overlap = \"7d\"\ntimeout = \"1h\"\n[outbox]\nlease = \"1d\"\nmax_backoff = \"1d\"\n"
    ))
    .unwrap();
    assert_eq!(
        at_the_bounds.accounts[0].overlap,
        Duration::from_secs(7 * 86_400)
    );
}

/// A claim is renewed before a request only once it is older than half its lease: the outbox's lease
/// must hold two of the longest request timeout, or a slow answer could outlive the claim.
#[test]
fn an_outbox_lease_shorter_than_two_request_timeouts_is_refused() {
    let account = format!("{LABS}token = \"tok-t\"\n");
    let message = refused(&format!(
        "{account}timeout = \"30s\"\n[outbox]\nlease = \"60s\"\n"
    ));
    assert!(
        message.starts_with(
            "outbox.lease: must be longer than twice the longest request timeout \
             (accounts[0].timeout = 30s)"
        ),
        "{message}"
    );
    load(format!(
        "{account}timeout = \"29s\"\n[outbox]\nlease = \"60s\"\n"
    ))
    .unwrap();
}

#[test]
fn a_log_level_that_is_not_a_filter_is_refused_by_key() {
    // A lone word that is not a level reads as a target at every level: no line of the daemon would
    // show. The others fell back to `info`.
    for level in [
        "loud",
        "warning",
        "info,ordersync=loud",
        "info, sqlx=warn",
        "info ,sqlx=warn",
        "info,[",
    ] {
        let message = refused(&format!("[log]\nlevel = \"{level}\"\n"));
        assert!(
            message.starts_with("log.level: `") && message.contains("` is not a "),
            "{level}: {message}"
        );
        assert!(message.contains("ordersync.toml"), "{message}");
    }
    // RUST_LOG overrides log.level, and is named when it is the one at fault.
    let message = load_with_env("[log]\nlevel = \"info\"\n", &[("RUST_LOG", "verbose")])
        .unwrap_err()
        .to_string();
    assert!(
        message.starts_with("log.level: `verbose` is not a level")
            && message.ends_with("(set in RUST_LOG)"),
        "{message}"
    );
    for level in [
        "debug",
        "WARN",
        "off",
        "info,ordersync=debug,sqlx=warn",
        "ordersync::poller=trace",
    ] {
        let settings = load(format!("[log]\nlevel = \"{level}\"\n")).unwrap();
        assert_eq!(settings.log.level.as_str(), level);
    }
}

#[test]
fn header_credentials_that_cannot_be_sent_are_refused_by_key() {
    let i1 = "[[accounts]]\nname = \"a\"\nmarketplace = \"i1\"\nbase_url = \"https://seller.example/api/\"\n";
    let env = [("TOKEN", "tok-abc"), ("TWO_LINES", "tok-abc\ntok-def")];
    for (setting, key) in [
        ("auth_header = \"X Token\"", "accounts[0].auth_header"),
        ("auth_header = \"X-Token:\"", "accounts[0].auth_header"),
        ("auth_header = \"\"", "accounts[0].auth_header"),
        ("auth_scheme = \"Bearer\\n\"", "accounts[0].auth_scheme"),
    ] {
        let message = load_with_env(
            format!("{i1}token = {{ env = \"TOKEN\" }}\n{setting}\n"),
            &env,
        )
        .unwrap_err()
        .to_string();
        assert!(
            message.starts_with(&format!("{key}: ")),
            "{setting}: {message}"
        );
    }

    // A secret file with a line break inside (one trailing line break is dropped), and a variable.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("token");
    std::fs::write(&file, "tok-abc\ntok-def\n").unwrap();
    let from_file = format!("token = {{ file = \"{}\" }}\n", file.display());
    for account in [i1, LABS] {
        for source in [from_file.as_str(), "token = { env = \"TWO_LINES\" }\n"] {
            let message = load_with_env(format!("{account}{source}"), &env)
                .unwrap_err()
                .to_string();
            assert!(message.starts_with("accounts[0].token: "), "{message}");
            assert!(!message.contains("tok-"), "the secret leaked: {message}");
        }
    }

    let settings = load_with_env(
        format!(
            "{i1}token = {{ env = \"TOKEN\" }}\nauth_header = \"X-Api-Token\"\nauth_scheme = \"\"\n"
        ),
        &env,
    )
    .unwrap();
    assert!(matches!(
        &settings.accounts[0].credentials,
        Credentials::I1 { auth_header, auth_scheme, .. } if auth_header == "X-Api-Token" && auth_scheme.is_empty()
    ));
}

#[test]
fn a_secret_too_short_to_keep_out_of_logs_is_refused_by_key_without_showing_it() {
    let c2c = "[[accounts]]\nname = \"a\"\nmarketplace = \"c2c\"\ndomain = \"www.shop.example\"\napi_key = { env = \"KEY\" }\n";
    let message = load_with_env(
        format!("{c2c}api_password = {{ env = \"PASSWORD\" }}\n"),
        &[("KEY", "key-abc-123"), ("PASSWORD", "p9x")],
    )
    .unwrap_err()
    .to_string();
    assert!(
        message.starts_with("accounts[0].api_password: the secret is shorter than 4 bytes"),
        "{message}"
    );
    assert!(!message.contains("p9x"), "the secret leaked: {message}");
}

#[test]
fn a_base_url_holding_credentials_is_refused_without_showing_them() {
    let account = format!("{LABS}token = \"tok-t\"\n");
    for url in [
        "https://seller:s3cr3t-pass@seller.example/api/",
        "https://:s3cr3t-pass@seller.example/api/",
        "https://s3cr3t-token@seller.example/api/",
        // Not a URL (a port that is not a number), with a password in it.
        "https://seller:s3cr3t-pass@seller.example:port/api/",
    ] {
        let message = refused(&format!("{account}base_url = \"{url}\"\n"));
        assert!(message.starts_with("accounts[0].base_url: "), "{message}");
        assert!(!message.contains("s3cr3t"), "the secret leaked: {message}");
    }
    // A URL without credentials is still quoted when it does not parse.
    let message = refused(&format!(
        "{account}base_url = \"https://seller.example:port/api/\"\n"
    ));
    assert!(
        message.contains("`https://seller.example:port/api/` is not a URL"),
        "{message}"
    );
    let settings = load(format!(
        "{account}base_url = \"https://seller.example/api/\"\n"
    ))
    .unwrap();
    assert_eq!(
        settings.accounts[0].base_url.as_str(),
        "https://seller.example/api/"
    );
}

#[test]
fn a_database_url_that_cannot_connect_anywhere_is_refused_by_key_without_showing_it() {
    let password = "pw-s3cret";
    for (url, problem) in [
        (
            format!("postgres://u:{password}@host:notaport/db"),
            "is not a URL",
        ),
        (
            format!("mysql://u:{password}@host/db"),
            "must be a postgres://",
        ),
        (
            format!("postgres://u:{password}@host/db?sslmode=bogus"),
            "is not a PostgreSQL connection URL",
        ),
        (format!("u:{password}@host/db"), "must be a postgres://"),
        (password.to_owned(), "is not a URL"),
    ] {
        for (file, env) in [
            (format!("[database]\nurl = \"{url}\"\n"), vec![]),
            (String::new(), vec![("DATABASE_URL", url.as_str())]),
        ] {
            let message = match load_with_env(format!("{file}{LABS}token = \"t0ken\"\n"), &env) {
                Ok(_) => panic!("accepted: {url}"),
                Err(e) => e.to_string(),
            };
            assert!(message.contains("database.url"), "{message}");
            assert!(message.contains(problem), "{message}");
            assert!(!message.contains(password), "{message}");
            if !env.is_empty() {
                assert!(message.contains("DATABASE_URL"), "{message}");
            }
        }
    }
    for url in [
        "postgres://u:p@127.0.0.1:5432/db?sslmode=disable",
        "postgresql:///ordersync?host=/var/run/postgresql",
    ] {
        let settings = load_with_env(
            LABS.to_owned() + "token = \"t0ken\"\n",
            &[("DATABASE_URL", url)],
        )
        .unwrap_or_else(|e| panic!("{url}: {e}"));
        assert_eq!(settings.database.url.unwrap().expose(), url);
    }
}
