//! ringmq-proto: the protocol half of ringmq, with no IO and no clock reads.
//!
//! - [`mqtt`]: the sans-IO MQTT 3.1 / 3.1.1 / 5.0 codec.
//! - [`session`]: the session state machine (packets and `now` in, bytes and actions out).
//! - [`message`]: the routed message, shared by every subscriber and shard.
//!
//! The broker (`ringmq`) drives these from its shards; the load generator (`ringmq-loadgen`)
//! uses the codec alone, without the broker's control plane.

pub mod message;
pub mod mqtt;
pub mod session;
