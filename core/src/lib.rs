//! ringmq-core: the shard as a sans-IO state machine: no sockets, threads, wakers or clock
//! reads.
//!
//! - [`shard`]: one shard's state (sessions and client ids, the subscription index replica,
//!   shared groups, retained, tenancy, streams, sessions moving between shards) behind one
//!   entry point, [`shard::Shard::handle`], with `now` passed in; its effects come out as
//!   [`shard::Output`]s and mesh messages for the driver to carry out.
//! - [`mesh_msg`]: what shards send each other over the mesh.
//! - [`stats`]: per-shard counters, written by their shard and read by `$SYS` and metrics.
//! - [`slots`]: session entries by slot number, in pages that never move.
//! - [`timers`]: the shard's timer heap (keep-alive, will delay, session expiry).
//! - [`retained`]: the shard's replica of the retained messages, with each org's byte tally.
//! - [`control`]: the control-plane data the shards read: compiled ACLs, the API's model, the
//!   immutable snapshot logins and ACLs are checked against, the sessions API's questions.
//!
//! The broker crate (`ringmq`) is the only place where IO meets it; the simulator
//! (`ringmq-sim`) drives it without any.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod control;
pub mod durable;
pub mod mesh_msg;
pub mod retained;
pub mod shard;
pub mod slots;
pub mod stats;
pub mod timers;

#[cfg(test)]
mod test_util;
