//! Helpers shared by this crate's unit tests.

use std::sync::Arc;

use bytes::Bytes;
use ringmq_proto::message::{Message, Origin, SharedMessage};
use ringmq_proto::mqtt::{QoS, Str};

/// A message from the broker itself on `topic`, with no properties and no expiry.
pub(crate) fn test_message(
    topic: &str,
    payload: &'static [u8],
    qos: QoS,
    retain: bool,
) -> SharedMessage {
    Arc::new(Message {
        topic: Str::from(topic),
        payload: Bytes::from_static(payload),
        qos,
        retain,
        properties: Default::default(),
        expires_at: None,
        publisher: Str::from("p"),
        origin: Origin::BROKER,
        namespace: None,
        device: None,
    })
}
