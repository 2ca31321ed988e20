//! The control plane: orgs, MQTT users, ACL rule sets, API keys and token exchange.
//!
//! State lives in an embedded SQLite database owned by the control thread (never a shard). The
//! shards read immutable [`snapshot::Snapshot`]s that the control thread replaces on every
//! change, so authentication and authorization on the hot path are memory lookups.
//!
//! - [`model`]: the API's JSON objects.
//! - [`store`]: SQLite schema, migrations and queries.
//! - [`secrets`]: password hashing (argon2), API key generation and hashing.
//! - [`acl`]: compiled ACL rules (`{username}` / `{clientid}` substitution, deny wins).
//! - [`snapshot`]: the immutable view the shards authenticate and authorize from.
//! - [`jwt`]: token-exchange JWT verification (HS256, RS256, ES256).
//! - [`api`]: the management REST API, sans-IO (request in, response out).
//!
//! [`model`], [`acl`] and [`snapshot`] are the data the shards read; they live in `ringmq-core`
//! and are re-exported here, so their paths stay `crate::control::…`.

pub mod api;
pub mod jwt;
pub mod secrets;
pub mod store;

pub use ringmq_core::control::{acl, model, snapshot};
