//! `ringmq-io`: the thread-per-core runtime under ringmq.
//!
//! The parts:
//! - [`runtime`] — one OS thread per shard, pinned to a core, each running its own monoio
//!   runtime (io_uring, falling back to epoll; `RINGMQ_DRIVER=legacy` forces epoll).
//!   [`spawn_shards`] starts them and hands each a [`ShardContext`].
//! - [`mesh`] — the cross-core mesh, one bounded queue per ordered pair of shards, drained in
//!   batches, with backpressure (a full queue hands the item back) and batched wake-ups.
//! - [`notify`] — [`CrossNotify`], the coalescing cross-thread wake-up the mesh is built on.
//! - [`listener`] — per-shard TCP listeners (SO_REUSEPORT), moving accepted streams between
//!   shards, process RSS for metrics.
//! - [`tls`] — rustls server sessions over the owned-buffer TCP IO, reloadable certificates,
//!   and [`ConnReader`]/[`ConnWriter`], one type for plain and TLS halves.
//! - [`error`] — [`IoError`].
//!
//! Mesh hand-off throughput between two shards (u64 items, batches of 64–256, one wake per
//! batch) measured 9–33 M msg/s on a loaded 2-core dev VM; rerun with
//! `cargo test -p ringmq-io --release --test mesh -- --ignored --nocapture mesh_throughput`.
//!
//! Nothing here knows MQTT: the broker's shard loop combines these parts.
#![warn(missing_docs)]

pub mod buf;
pub mod dormant;
pub mod error;
pub mod listener;
pub mod mesh;
pub mod notify;
pub mod runtime;
pub mod tls;

pub use buf::read_append;
pub use dormant::{DormantTcp, SleepError};
pub use error::IoError;
pub use listener::{
    adopt_stream, bind_tcp, detach_stream, probe_bind, process_rss_bytes, retry_in_use,
    tune_accepted, BIND_RETRY,
};
pub use mesh::{Mesh, MeshEndpoint};
pub use notify::{CrossNotify, Notified};
pub use runtime::{
    disable_transparent_huge_pages, spawn_shards, transparent_huge_pages_disabled,
    unpin_current_thread, DriverKind, ShardConfig, ShardContext,
};
pub use tls::{
    ConnReader, ConnStream, ConnWriter, FramedRead, FramedWrite, Layered, LocalIoFuture,
};

/// Re-exported so the broker builds TLS configurations with the same rustls.
pub use rustls;

/// Re-exported so the broker uses the same monoio as the IO layer.
pub use monoio;
