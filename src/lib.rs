//! ringmq: a thread-per-core io_uring MQTT broker.
pub mod cli;
pub mod config;
