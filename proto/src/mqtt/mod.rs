//! Sans-IO MQTT 3.1, 3.1.1 and 5.0 codec: packet types, `decode_packet` and `encode_packet`.
//!
//! The codec never touches a socket: the shard loop feeds it bytes and writes what it returns.
//! Decoding is zero-copy: topics, strings and payloads are `Bytes` slices of the read buffer.
//! Layout: `types` (QoS, protocol level, `Str`), `reason` (reason code table), `properties`
//! (MQTT 5 properties), `packet` (packet structs), `decode`, `encode`, `error`; `wire` holds the
//! private byte-level reader and writer both sides share.

#![warn(missing_docs)]

mod decode;
mod encode;
mod error;
mod packet;
mod properties;
mod reason;
mod types;
mod wire;

#[cfg(test)]
mod tests;

pub use decode::{decode_packet, peek_fixed_header};
pub use encode::{
    encode_packet, encode_pub_resp, encode_publish, publish_encoded_len, OutgoingPublish,
};
pub use error::{DecodeError, EncodeError};
pub use packet::{
    Auth, ConnAck, Connect, Disconnect, Packet, PubResp, PubRespKind, Publish, RetainHandling,
    SubAck, Subscribe, SubscribeFilter, SubscriptionOptions, UnsubAck, Unsubscribe, Will,
};
pub use properties::{
    property_id, AckProperties, AuthProperties, ConnAckProperties, ConnectProperties,
    DisconnectProperties, PublishProperties, UserProperties,
};
pub use reason::{connack_v3, ReasonCode};
pub use types::{ProtocolVersion, QoS, Str};
pub use wire::VARIABLE_BYTE_INTEGER_MAX;
