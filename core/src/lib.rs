//! ringmq-core: the shard's state, sans IO: no sockets, no threads, no clock reads.
//!
//! What it holds now, the leaves the broker's shard is built from:
//! - [`mesh_msg`]: what shards send each other over the mesh.
//! - [`stats`]: per-shard counters, written by their shard and read by `$SYS` and metrics.
//! - [`slots`]: session entries by slot number, in pages that never move.
//! - [`timers`]: the shard's timer heap (keep-alive, will delay, session expiry); the caller
//!   passes `now`.
//! - [`retained`]: the shard's replica of the retained messages, with each org's byte tally.
//! - [`control`]: the control-plane data the shards read: compiled ACLs, the API's model and
//!   the immutable snapshot logins and ACLs are checked against.
//!
//! What is to come (DESIGN.md, "Workspace layout"): the shard state machine itself (sessions,
//! the index replica, tenancy, streams), driven by inputs with `now` in and giving outputs out
//! (bytes, mesh messages, pauses, closes, records to persist). The broker crate (`ringmq`)
//! stays the only place where IO meets it.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod control;
pub mod mesh_msg;
pub mod retained;
pub mod shard;
pub mod slots;
pub mod stats;
pub mod timers;

#[cfg(test)]
mod test_util;
