//! The management API client behind the `ringmq` client commands (`auth`, `users`, `acl`, …).
//!
//! - [`http`]: the blocking `ureq` wrapper, request building and error mapping.
//! - [`credentials`]: the stored login and the flag > env > file precedence.
//! - [`output`]: tables, `key: value` lines and order-preserving pretty JSON.
//! - [`commands`]: one handler per noun, turning parsed arguments into API calls.
//!
//! Exit codes (see [`ClientError::exit_code`]): 0 success, 1 the server answered with an error
//! (or another failure), 2 usage or configuration error, 3 the server could not be reached.

pub mod commands;
pub mod credentials;
pub mod http;
pub mod output;

use std::convert::Infallible;
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use crate::cli::ClientCommand;

/// A secret string (API key, password, JWT) whose `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret itself, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// A prefix safe to show: the API's 10-character key prefix, but never more than a third
    /// of the value, so a short secret is not shown whole.
    pub fn prefix(&self) -> String {
        let len = self.0.chars().count();
        let shown = 10.min(len / 3);
        let mut prefix: String = self.0.chars().take(shown).collect();
        prefix.push('…');
        prefix
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl FromStr for Secret {
    type Err = Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Secret(s.to_string()))
    }
}

/// Everything a client command can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server answered with an error status.
    #[error("{code}: {detail} (HTTP {status})")]
    Api {
        /// HTTP status.
        status: u16,
        /// The body's `error` code, or `http_STATUS` when the body was not the API's JSON.
        code: String,
        /// The body's `detail`, or a snippet of a non-JSON body.
        detail: String,
    },
    /// Connecting, sending or receiving failed.
    #[error("cannot reach the server: {0}")]
    Transport(String),
    /// No URL or key from flags, env or stored login.
    #[error("{0}")]
    NotConfigured(String),
    /// The `--ca` file could not be read or holds no certificate.
    #[error("CA file {}: {reason}", path.display())]
    CaFile {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A URL that is not `http(s)://HOST[:PORT][/PATH]`.
    #[error("invalid server URL `{0}`: expected http://HOST[:PORT] or https://HOST[:PORT]")]
    InvalidUrl(String),
    /// Arguments that parse but make no sense together.
    #[error("{0}")]
    Usage(String),
    /// A success status with a body that is not the expected JSON.
    #[error("unexpected response from the server (HTTP {status}): {reason}")]
    BadResponse {
        /// HTTP status.
        status: u16,
        /// What was wrong.
        reason: String,
    },
    /// Reading or writing the credentials file failed.
    #[error("credentials file {}: {source}", path.display())]
    Credentials {
        /// The file or directory.
        path: PathBuf,
        /// The IO error.
        source: std::io::Error,
    },
    /// The credentials file is not valid TOML of the expected shape.
    #[error("credentials file {} is not valid: {reason}", path.display())]
    CredentialsFormat {
        /// The file.
        path: PathBuf,
        /// Why (never the file's content, which holds the key).
        reason: String,
    },
    /// Reading stdin or writing stdout failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

impl ClientError {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> i32 {
        match self {
            ClientError::Transport(_) => 3,
            ClientError::NotConfigured(_)
            | ClientError::CaFile { .. }
            | ClientError::InvalidUrl(_)
            | ClientError::Usage(_) => 2,
            ClientError::Api { .. }
            | ClientError::BadResponse { .. }
            | ClientError::Credentials { .. }
            | ClientError::CredentialsFormat { .. }
            | ClientError::Io(_) => 1,
        }
    }
}

/// Runs a client command against the process environment, stdin and stdout.
pub fn run(command: &ClientCommand) -> Result<(), ClientError> {
    let env = credentials::ProcessEnv;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    commands::run(command, &env, &mut out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_debug_and_prefix_hide_the_value() {
        let key = Secret::new("sk_abcdefghijklmnopqrstuvwxyz012345");
        assert_eq!(format!("{key:?}"), "Secret(<redacted>)");
        assert_eq!(key.prefix(), "sk_abcdefg…");
        // A short value shows at most a third of itself.
        assert_eq!(Secret::new("sk_abc").prefix(), "sk…");
        assert_eq!(Secret::new("").prefix(), "…");
    }

    #[test]
    fn exit_codes() {
        let api = ClientError::Api {
            status: 404,
            code: "not_found".into(),
            detail: "no such user".into(),
        };
        assert_eq!(api.exit_code(), 1);
        assert_eq!(api.to_string(), "not_found: no such user (HTTP 404)");
        assert_eq!(ClientError::Transport("refused".into()).exit_code(), 3);
        let ca = ClientError::CaFile {
            path: "ca.pem".into(),
            reason: "no certificate".into(),
        };
        assert_eq!(ca.exit_code(), 2);
        assert_eq!(ClientError::NotConfigured("x".into()).exit_code(), 2);
    }
}
