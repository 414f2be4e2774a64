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
