//! The control-plane data the shards read (the control thread and its SQLite store stay in
//! the broker crate, `ringmq::control`).
//!
//! - [`model`]: the API's JSON objects.
//! - [`acl`]: compiled ACL rules (`{username}` / `{clientid}` substitution, deny wins).
//! - [`snapshot`]: the immutable view the shards authenticate and authorize from.
//! - [`key_hash`](mod@key_hash): the SHA-256 an API key is looked up (and stored) by.
//! - [`sessions`]: the sessions API's questions to a shard, its answers, per-org counters.

pub mod acl;
pub mod key_hash;
pub mod model;
pub mod sessions;
pub mod snapshot;
