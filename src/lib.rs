//! ringmq: a thread-per-core io_uring MQTT broker.
//!
//! The parts, as `DESIGN.md` lays them out:
//! - [`mqtt`], [`session`], [`message`]: the sans-IO codec, session state machine and routed
//!   message, from `ringmq-proto` (re-exported so the broker's paths stay `crate::mqtt`, …).
//! - [`broker`]: the shard loop, where IO (`ringmq-io`), protocol and routing (`ringmq-router`) meet.
//! - [`config`] and [`cli`]: tuning profiles, configuration layers and the command line.
//! - [`ratelimit`]: per-org token buckets for the HTTP API, shared lock-free by every shard.
//! - [`client`]: the management API client behind the CLI's `auth`, `users`, `keys`, … commands.

pub mod broker;
pub mod cli;
pub mod client;
pub mod client_tls;
pub mod config;
pub mod control;
pub mod ratelimit;

pub use ringmq_proto::{message, mqtt, session};
