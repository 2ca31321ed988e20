//! ringmq: a thread-per-core io_uring MQTT broker.
//!
//! The parts, as `DESIGN.md` lays them out:
//! - [`mqtt`]: the sans-IO MQTT 3.1 / 3.1.1 / 5.0 codec.
//! - [`session`]: the sans-IO session state machine (packets and `now` in, bytes and actions out).
//! - [`message`]: the routed message, shared by every subscriber and shard.
//! - [`broker`]: the shard loop, where IO (`ringmq-io`), protocol and routing (`ringmq-router`) meet.
//! - [`config`] and [`cli`]: tuning profiles, configuration layers and the command line.
//! - [`ratelimit`]: per-org token buckets for the HTTP API, shared lock-free by every shard.
//! - [`client`]: the management API client behind the CLI's `auth`, `users`, `keys`, … commands.

pub mod broker;
pub mod cli;
pub mod client;
pub mod config;
pub mod control;
pub mod message;
pub mod mqtt;
pub mod ratelimit;
pub mod session;
