//! Secrets in configuration: where a secret's value comes from (`{ env = "VAR" }`, `{ file = "/path" }`
//! or a literal) and [`Secret`], the type holding a value whose `Debug` never reveals it.

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

/// Secret values shorter than this (in bytes) are refused: scrubbing them from logs and errors would scrub
/// innocent text too, so they could not be kept out, and no real credential is that short.
pub const MIN_SECRET_LEN: usize = 4;

/// A secret value. `Debug` prints `Secret(***)`; there is deliberately no `Display`.
#[derive(Clone)]
pub struct Secret(SecretString);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(SecretString::from(value.into()))
    }

    /// The value, for the one place that must send it (a header, a query parameter, a signature).
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// How a secret is written in a configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum SecretSource {
    /// The value itself; accepted with a warning.
    Literal(String),
    /// Read from an environment variable.
    Env { env: String },
    /// Read from a file (systemd credentials, Docker secrets); one trailing newline is dropped.
    File { file: String },
}

/// Why a secret could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("environment variable `{0}` is not set")]
    MissingEnv(String),
    #[error("cannot read secret file `{path}`: {source}")]
    File {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the secret is empty")]
    Empty,
    #[error(
        "the secret is shorter than {MIN_SECRET_LEN} bytes: it could not be kept out of logs and errors (no real credential is that short)"
    )]
    TooShort,
}

impl SecretSource {
    /// Reads the value. `env` looks up environment variables.
    pub fn resolve(&self, env: &dyn Fn(&str) -> Option<String>) -> Result<Secret, SecretError> {
        let value = match self {
            SecretSource::Literal(v) => v.clone(),
            SecretSource::Env { env: var } => {
                env(var).ok_or_else(|| SecretError::MissingEnv(var.clone()))?
            }
            SecretSource::File { file } => {
                let text = std::fs::read_to_string(file).map_err(|source| SecretError::File {
                    path: file.clone(),
                    source,
                })?;
                text.strip_suffix('\n')
                    .map(|t| t.strip_suffix('\r').unwrap_or(t))
                    .unwrap_or(&text)
                    .to_owned()
            }
        };
        if value.is_empty() {
            return Err(SecretError::Empty);
        }
        if value.len() < MIN_SECRET_LEN {
            return Err(SecretError::TooShort);
        }
        Ok(Secret::new(value))
    }

    pub fn is_literal(&self) -> bool {
        matches!(self, SecretSource::Literal(_))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_reveals() {
        let s = Secret::new("hunter2-token");
        assert_eq!(format!("{s:?}"), "Secret(***)");
        assert_eq!(s.expose(), "hunter2-token");
    }

    #[test]
    fn env_and_file_sources_resolve() {
        let env = |k: &str| (k == "TOK").then(|| "from-env".to_owned());
        let src = SecretSource::Env { env: "TOK".into() };
        assert_eq!(src.resolve(&env).unwrap().expose(), "from-env");
        let missing = SecretSource::Env { env: "NOPE".into() };
        assert!(matches!(missing.resolve(&env), Err(SecretError::MissingEnv(v)) if v == "NOPE"));

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        std::fs::write(&path, "from-file\n").unwrap();
        let src = SecretSource::File {
            file: path.display().to_string(),
        };
        assert_eq!(src.resolve(&env).unwrap().expose(), "from-file");
    }

    #[test]
    fn a_secret_too_short_to_redact_is_refused() {
        let env = |_: &str| None;
        let short = SecretSource::Literal("abc".into());
        assert!(matches!(short.resolve(&env), Err(SecretError::TooShort)));
        let long_enough = SecretSource::Literal("abcd".into());
        assert_eq!(long_enough.resolve(&env).unwrap().expose(), "abcd");
    }
}
