//! Why the broker could not start or run.

use std::net::SocketAddr;

use super::control::ControlError;

/// Errors that stop the broker from starting or running.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// The runtime could not start.
    #[error("runtime: {0}")]
    Io(#[from] ringmq_io::IoError),
    /// A listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// Address.
        addr: SocketAddr,
        /// Cause.
        source: std::io::Error,
    },
    /// A shard thread panicked.
    #[error("shard {0} panicked")]
    ShardPanicked(usize),
    /// Signal handling could not be installed.
    #[error("signals: {0}")]
    Signals(std::io::Error),
    /// The data directory could not be created.
    #[error("cannot create data dir {path}: {source}")]
    DataDir {
        /// Directory.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
    /// The control plane (store, auth providers) could not start.
    #[error(transparent)]
    Control(#[from] ControlError),
    /// The TLS certificate, key or client CA could not be loaded.
    #[error("TLS: {0}")]
    Tls(#[from] ringmq_io::tls::TlsError),
    /// The durable logs could not be read or written at start.
    #[error("durability: {0}")]
    Journal(#[from] super::journal::JournalError),
    /// The cluster bridge could not start.
    #[error("cluster: {0}")]
    Cluster(String),
}
