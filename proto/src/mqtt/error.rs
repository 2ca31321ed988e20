//! Decode and encode errors, and the table from decode error to MQTT 5 reason code.

use crate::mqtt::reason::ReasonCode;

/// Why an inbound packet was rejected; the connection must be closed after any of these.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The remaining length varint is longer than 4 bytes.
    #[error("malformed remaining length")]
    MalformedRemainingLength,
    /// The packet (fixed header + remaining length) exceeds the configured maximum.
    #[error("packet of {size} bytes exceeds the maximum of {max} bytes")]
    PacketTooLarge {
        /// Total packet size declared by the fixed header, in bytes.
        size: u64,
        /// The limit it was checked against, in bytes.
        max: u32,
    },
    /// Packet type 0, or AUTH (15) before MQTT 5.
    #[error("invalid packet type {0}")]
    InvalidPacketType(u8),
    /// Reserved fixed-header flags are wrong; holds the whole first byte.
    #[error("invalid fixed header flags in first byte {0:#04x}")]
    InvalidHeaderFlags(u8),
    /// CONNECT protocol name is neither "MQTT" nor "MQIsdp".
    #[error("invalid protocol name")]
    InvalidProtocolName,
    /// CONNECT protocol level is not one we speak.
    #[error("unsupported protocol level {0}")]
    UnsupportedProtocolVersion(u8),
    /// A string is not valid UTF-8 or contains U+0000.
    #[error("invalid UTF-8 string")]
    InvalidUtf8,
    /// A QoS field holds 3.
    #[error("invalid QoS {0}")]
    InvalidQoS(u8),
    /// A packet identifier that must be non-zero is zero.
    #[error("packet identifier is zero")]
    ZeroPacketId,
    /// A property that may appear once appears twice; holds the property id.
    #[error("duplicate property {0:#04x}")]
    DuplicateProperty(u8),
    /// The property id is not defined by MQTT 5.
    #[error("unknown property id {0:#04x}")]
    InvalidPropertyId(u8),
    /// The property id is defined but not allowed in this packet type.
    #[error("property {0:#04x} not allowed in this packet")]
    PropertyNotAllowed(u8),
    /// The property value is out of its allowed range.
    #[error("invalid value for property {0:#04x}")]
    InvalidPropertyValue(u8),
    /// Any other malformed packet; the text says which rule was broken.
    #[error("malformed packet: {0}")]
    Malformed(&'static str),
    /// A well-formed packet that breaks a protocol rule.
    #[error("protocol error: {0}")]
    ProtocolError(&'static str),
}

impl DecodeError {
    /// The MQTT 5 reason code to put in the CONNACK or DISCONNECT that reports this error.
    pub fn reason_code(&self) -> ReasonCode {
        match self {
            DecodeError::PacketTooLarge { .. } => ReasonCode::PACKET_TOO_LARGE,
            DecodeError::UnsupportedProtocolVersion(_) | DecodeError::InvalidProtocolName => {
                ReasonCode::UNSUPPORTED_PROTOCOL_VERSION
            }
            // A topic alias of 0 has its own reason code in the spec (3.3.2.3.4).
            DecodeError::InvalidPropertyValue(
                crate::mqtt::properties::property_id::TOPIC_ALIAS,
            ) => ReasonCode::TOPIC_ALIAS_INVALID,
            // The spec calls duplicates and out-of-range property values "a Protocol Error".
            DecodeError::ProtocolError(_)
            | DecodeError::ZeroPacketId
            | DecodeError::DuplicateProperty(_)
            | DecodeError::InvalidPropertyValue(_) => ReasonCode::PROTOCOL_ERROR,
            _ => ReasonCode::MALFORMED_PACKET,
        }
    }
}

/// Why a packet could not be encoded; nothing is written to the buffer in that case.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// A string or binary field is longer than 65535 bytes.
    #[error("string or binary field longer than 65535 bytes")]
    StringTooLong,
    /// The remaining length would exceed 268435455 bytes.
    #[error("packet larger than the MQTT maximum")]
    PacketTooLarge,
    /// A field holds a value the spec does not allow (the text says which).
    #[error("invalid value: {0}")]
    InvalidValue(&'static str),
}
