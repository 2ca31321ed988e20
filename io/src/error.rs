//! The one error type of the IO layer.

use std::net::SocketAddr;

/// Everything that can go wrong while starting shards, binding listeners or adopting sockets.
#[derive(thiserror::Error, Debug)]
pub enum IoError {
    /// A system call failed.
    #[error("io error: {0}")]
    Io(#[from] std::io::Error),
    /// A listener could not be bound (address in use, permission denied, ...).
    #[error("cannot bind {addr}: {source}")]
    Bind {
        /// The address we tried to bind.
        addr: SocketAddr,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A shard thread could not be spawned.
    #[error("cannot spawn shard thread {shard_id}: {source}")]
    Spawn {
        /// The shard whose thread failed to start.
        shard_id: usize,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A shard's runtime could not be built or died during startup.
    #[error("runtime: {0}")]
    Runtime(String),
    /// The caller passed a configuration we cannot run (zero shards, unknown driver name, ...).
    #[error("invalid configuration: {0}")]
    Config(String),
}
