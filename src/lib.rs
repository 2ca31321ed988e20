//! ringmq: a thread-per-core io_uring MQTT broker.
