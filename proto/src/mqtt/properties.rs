//! MQTT 5 properties (spec section 2.2.2): the id table, one struct per packet family, and the
//! decoding and encoding of property blocks with the spec's per-packet rules.

use bytes::Bytes;

use crate::mqtt::error::{DecodeError, EncodeError};
use crate::mqtt::types::Str;
use crate::mqtt::wire::{put_binary, put_varint, Counter, Reader, Sink, VARIABLE_BYTE_INTEGER_MAX};

/// Property identifiers (spec table 2-4).
pub mod property_id {
    /// Payload Format Indicator (byte): PUBLISH, Will.
    pub const PAYLOAD_FORMAT_INDICATOR: u8 = 0x01;
    /// Message Expiry Interval (four-byte integer): PUBLISH, Will.
    pub const MESSAGE_EXPIRY_INTERVAL: u8 = 0x02;
    /// Content Type (UTF-8 string): PUBLISH, Will.
    pub const CONTENT_TYPE: u8 = 0x03;
    /// Response Topic (UTF-8 string): PUBLISH, Will.
    pub const RESPONSE_TOPIC: u8 = 0x08;
    /// Correlation Data (binary): PUBLISH, Will.
    pub const CORRELATION_DATA: u8 = 0x09;
    /// Subscription Identifier (variable byte integer): PUBLISH, SUBSCRIBE.
    pub const SUBSCRIPTION_IDENTIFIER: u8 = 0x0B;
    /// Session Expiry Interval (four-byte integer): CONNECT, CONNACK, DISCONNECT.
    pub const SESSION_EXPIRY_INTERVAL: u8 = 0x11;
    /// Assigned Client Identifier (UTF-8 string): CONNACK.
    pub const ASSIGNED_CLIENT_IDENTIFIER: u8 = 0x12;
    /// Server Keep Alive (two-byte integer): CONNACK.
    pub const SERVER_KEEP_ALIVE: u8 = 0x13;
    /// Authentication Method (UTF-8 string): CONNECT, CONNACK, AUTH.
    pub const AUTHENTICATION_METHOD: u8 = 0x15;
    /// Authentication Data (binary): CONNECT, CONNACK, AUTH.
    pub const AUTHENTICATION_DATA: u8 = 0x16;
    /// Request Problem Information (byte): CONNECT.
    pub const REQUEST_PROBLEM_INFORMATION: u8 = 0x17;
    /// Will Delay Interval (four-byte integer): Will.
    pub const WILL_DELAY_INTERVAL: u8 = 0x18;
    /// Request Response Information (byte): CONNECT.
    pub const REQUEST_RESPONSE_INFORMATION: u8 = 0x19;
    /// Response Information (UTF-8 string): CONNACK.
    pub const RESPONSE_INFORMATION: u8 = 0x1A;
    /// Server Reference (UTF-8 string): CONNACK, DISCONNECT.
    pub const SERVER_REFERENCE: u8 = 0x1C;
    /// Reason String (UTF-8 string): CONNACK, acks, DISCONNECT, AUTH.
    pub const REASON_STRING: u8 = 0x1F;
    /// Receive Maximum (two-byte integer): CONNECT, CONNACK.
    pub const RECEIVE_MAXIMUM: u8 = 0x21;
    /// Topic Alias Maximum (two-byte integer): CONNECT, CONNACK.
    pub const TOPIC_ALIAS_MAXIMUM: u8 = 0x22;
    /// Topic Alias (two-byte integer): PUBLISH.
    pub const TOPIC_ALIAS: u8 = 0x23;
    /// Maximum QoS (byte): CONNACK.
    pub const MAXIMUM_QOS: u8 = 0x24;
    /// Retain Available (byte): CONNACK.
    pub const RETAIN_AVAILABLE: u8 = 0x25;
    /// User Property (UTF-8 string pair): every packet with properties; may repeat.
    pub const USER_PROPERTY: u8 = 0x26;
    /// Maximum Packet Size (four-byte integer): CONNECT, CONNACK.
    pub const MAXIMUM_PACKET_SIZE: u8 = 0x27;
    /// Wildcard Subscription Available (byte): CONNACK.
    pub const WILDCARD_SUBSCRIPTION_AVAILABLE: u8 = 0x28;
    /// Subscription Identifier Available (byte): CONNACK.
    pub const SUBSCRIPTION_IDENTIFIER_AVAILABLE: u8 = 0x29;
    /// Shared Subscription Available (byte): CONNACK.
    pub const SHARED_SUBSCRIPTION_AVAILABLE: u8 = 0x2A;

    /// True if `id` is defined by MQTT 5 at all.
    pub fn is_known(id: u8) -> bool {
        matches!(id, 0x01..=0x03 | 0x08 | 0x09 | 0x0B | 0x11..=0x13 | 0x15..=0x19 | 0x1A | 0x1C | 0x1F | 0x21..=0x2A)
    }
}

use property_id as id;

/// A list of MQTT 5 user properties (name, value), in wire order.
pub type UserProperties = Vec<(Str, Str)>;

/// PUBLISH properties; also the Will properties (where `topic_alias` and `subscription_identifiers` are unused).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PublishProperties {
    /// 0: unspecified bytes, 1: UTF-8 payload.
    pub payload_format_indicator: Option<u8>,
    /// Lifetime of the message in seconds.
    pub message_expiry_interval: Option<u32>,
    /// Topic alias (non-zero).
    pub topic_alias: Option<u16>,
    /// Topic for a request/response reply.
    pub response_topic: Option<Str>,
    /// Request/response correlation data.
    pub correlation_data: Option<Bytes>,
    /// User properties, in order.
    pub user_properties: Vec<(Str, Str)>,
    /// Identifiers of the matching subscriptions (server to client only).
    pub subscription_identifiers: Vec<u32>,
    /// Content type of the payload.
    pub content_type: Option<Str>,
}

/// CONNECT properties.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConnectProperties {
    /// Seconds the session outlives the connection.
    pub session_expiry_interval: Option<u32>,
    /// Client's limit of concurrent QoS>0 publishes it will receive (non-zero).
    pub receive_maximum: Option<u16>,
    /// Largest packet the client accepts, in bytes (non-zero).
    pub maximum_packet_size: Option<u32>,
    /// Highest topic alias the client accepts.
    pub topic_alias_maximum: Option<u16>,
    /// 0 or 1: whether CONNACK may carry Response Information.
    pub request_response_information: Option<u8>,
    /// 0 or 1: whether reason strings/user properties may be sent on failures.
    pub request_problem_information: Option<u8>,
    /// User properties, in order.
    pub user_properties: Vec<(Str, Str)>,
    /// Extended authentication method.
    pub authentication_method: Option<Str>,
    /// Extended authentication data.
    pub authentication_data: Option<Bytes>,
}

/// CONNACK properties.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConnAckProperties {
    /// Session expiry the server applies, in seconds.
    pub session_expiry_interval: Option<u32>,
    /// Server's limit of concurrent QoS>0 publishes it will receive (non-zero).
    pub receive_maximum: Option<u16>,
    /// 0 or 1: highest QoS the server supports (absent means 2).
    pub maximum_qos: Option<u8>,
    /// 0 or 1: whether retained messages are supported.
    pub retain_available: Option<u8>,
    /// Largest packet the server accepts, in bytes (non-zero).
    pub maximum_packet_size: Option<u32>,
    /// Client id assigned by the server when the client sent an empty one.
    pub assigned_client_identifier: Option<Str>,
    /// Highest topic alias the server accepts.
    pub topic_alias_maximum: Option<u16>,
    /// Human-readable diagnostic.
    pub reason_string: Option<Str>,
    /// User properties, in order.
    pub user_properties: Vec<(Str, Str)>,
    /// 0 or 1: whether wildcard subscriptions are supported.
    pub wildcard_subscription_available: Option<u8>,
    /// 0 or 1: whether subscription identifiers are supported.
    pub subscription_identifiers_available: Option<u8>,
    /// 0 or 1: whether shared subscriptions are supported.
    pub shared_subscription_available: Option<u8>,
    /// Keep alive the server imposes, in seconds.
    pub server_keep_alive: Option<u16>,
    /// Basis for response topics.
    pub response_information: Option<Str>,
    /// Another server to use.
    pub server_reference: Option<Str>,
    /// Extended authentication method.
    pub authentication_method: Option<Str>,
    /// Extended authentication data.
    pub authentication_data: Option<Bytes>,
}

/// Properties of PUBACK, PUBREC, PUBREL, PUBCOMP, SUBACK and UNSUBACK.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AckProperties {
    /// Human-readable diagnostic.
    pub reason_string: Option<Str>,
    /// User properties, in order.
    pub user_properties: Vec<(Str, Str)>,
}

impl AckProperties {
    /// True when no property is set (allows the short packet forms).
    pub fn is_empty(&self) -> bool {
        self.reason_string.is_none() && self.user_properties.is_empty()
    }
}

/// DISCONNECT properties.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DisconnectProperties {
    /// New session expiry interval in seconds (client to server only).
    pub session_expiry_interval: Option<u32>,
    /// Human-readable diagnostic.
    pub reason_string: Option<Str>,
    /// User properties, in order.
    pub user_properties: Vec<(Str, Str)>,
    /// Another server to use.
    pub server_reference: Option<Str>,
}

impl DisconnectProperties {
    /// True when no property is set (allows the short packet forms).
    pub fn is_empty(&self) -> bool {
        self.session_expiry_interval.is_none()
            && self.reason_string.is_none()
            && self.user_properties.is_empty()
            && self.server_reference.is_none()
    }
}

/// AUTH properties.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuthProperties {
    /// Extended authentication method.
    pub authentication_method: Option<Str>,
    /// Extended authentication data.
    pub authentication_data: Option<Bytes>,
    /// Human-readable diagnostic.
    pub reason_string: Option<Str>,
    /// User properties, in order.
    pub user_properties: Vec<(Str, Str)>,
}

impl AuthProperties {
    /// True when no property is set (allows the short packet form).
    pub fn is_empty(&self) -> bool {
        self.authentication_method.is_none()
            && self.authentication_data.is_none()
            && self.reason_string.is_none()
            && self.user_properties.is_empty()
    }
}

// ---------------------------------------------------------------------------------------------
// Decoding

/// Walks one property block, rejecting unknown ids and duplicates, and hands each property's id
/// to `handle`, which reads the value from the reader or rejects the id for this packet type.
fn decode_block(
    reader: &mut Reader,
    mut handle: impl FnMut(u8, &mut Reader) -> Result<(), DecodeError>,
) -> Result<(), DecodeError> {
    let length = reader.varint()? as usize;
    let mut block = reader.take(length)?;
    // Ids are below 64, so one bit per id tracks which single-use properties were seen.
    let mut seen: u64 = 0;
    while !block.is_empty() {
        // The id is a Variable Byte Integer, but every defined id is below 128, so any byte with
        // the continuation bit set is an unknown id.
        let property = block.u8()?;
        if !id::is_known(property) {
            return Err(DecodeError::InvalidPropertyId(property));
        }
        // User properties may repeat anywhere; subscription identifiers may repeat in PUBLISH,
        // which its handler allows and the SUBSCRIBE handler forbids itself.
        if property != id::USER_PROPERTY && property != id::SUBSCRIPTION_IDENTIFIER {
            let bit = 1u64 << property;
            if seen & bit != 0 {
                return Err(DecodeError::DuplicateProperty(property));
            }
            seen |= bit;
        }
        handle(property, &mut block)?;
    }
    Ok(())
}

fn not_allowed(property: u8) -> DecodeError {
    DecodeError::PropertyNotAllowed(property)
}

/// A byte property that may only be 0 or 1.
fn boolean(reader: &mut Reader, property: u8) -> Result<u8, DecodeError> {
    let value = reader.u8()?;
    if value > 1 {
        return Err(DecodeError::InvalidPropertyValue(property));
    }
    Ok(value)
}

fn nonzero_u16(reader: &mut Reader, property: u8) -> Result<u16, DecodeError> {
    match reader.u16()? {
        0 => Err(DecodeError::InvalidPropertyValue(property)),
        value => Ok(value),
    }
}

fn nonzero_u32(reader: &mut Reader, property: u8) -> Result<u32, DecodeError> {
    match reader.u32()? {
        0 => Err(DecodeError::InvalidPropertyValue(property)),
        value => Ok(value),
    }
}

fn subscription_identifier(reader: &mut Reader) -> Result<u32, DecodeError> {
    match reader.varint()? {
        0 => Err(DecodeError::InvalidPropertyValue(
            id::SUBSCRIPTION_IDENTIFIER,
        )),
        value => Ok(value),
    }
}

fn check_authentication(method: &Option<Str>, data: &Option<Bytes>) -> Result<(), DecodeError> {
    if data.is_some() && method.is_none() {
        return Err(DecodeError::ProtocolError(
            "authentication data without authentication method",
        ));
    }
    Ok(())
}

/// The properties PUBLISH and the Will share; `None` means the id is not one of them.
fn decode_message_property(
    properties: &mut PublishProperties,
    property: u8,
    reader: &mut Reader,
) -> Result<Option<()>, DecodeError> {
    match property {
        id::PAYLOAD_FORMAT_INDICATOR => {
            properties.payload_format_indicator = Some(boolean(reader, property)?)
        }
        id::MESSAGE_EXPIRY_INTERVAL => properties.message_expiry_interval = Some(reader.u32()?),
        id::CONTENT_TYPE => properties.content_type = Some(reader.string()?),
        id::RESPONSE_TOPIC => properties.response_topic = Some(reader.string()?),
        id::CORRELATION_DATA => properties.correlation_data = Some(reader.binary()?),
        id::USER_PROPERTY => properties.user_properties.push(reader.string_pair()?),
        _ => return Ok(None),
    }
    Ok(Some(()))
}

/// Decodes PUBLISH properties.
pub(crate) fn decode_publish_properties(
    reader: &mut Reader,
) -> Result<PublishProperties, DecodeError> {
    let mut properties = PublishProperties::default();
    decode_block(reader, |property, reader| {
        if decode_message_property(&mut properties, property, reader)?.is_some() {
            return Ok(());
        }
        match property {
            id::TOPIC_ALIAS => properties.topic_alias = Some(nonzero_u16(reader, property)?),
            id::SUBSCRIPTION_IDENTIFIER => properties
                .subscription_identifiers
                .push(subscription_identifier(reader)?),
            _ => return Err(not_allowed(property)),
        }
        Ok(())
    })?;
    Ok(properties)
}

/// Decodes Will properties: the message properties plus the Will Delay Interval.
pub(crate) fn decode_will_properties(
    reader: &mut Reader,
) -> Result<(PublishProperties, Option<u32>), DecodeError> {
    let mut properties = PublishProperties::default();
    let mut delay_interval = None;
    decode_block(reader, |property, reader| {
        if decode_message_property(&mut properties, property, reader)?.is_some() {
            return Ok(());
        }
        match property {
            id::WILL_DELAY_INTERVAL => delay_interval = Some(reader.u32()?),
            _ => return Err(not_allowed(property)),
        }
        Ok(())
    })?;
    Ok((properties, delay_interval))
}

/// Decodes CONNECT properties.
pub(crate) fn decode_connect_properties(
    reader: &mut Reader,
) -> Result<ConnectProperties, DecodeError> {
    let mut p = ConnectProperties::default();
    decode_block(reader, |property, reader| {
        match property {
            id::SESSION_EXPIRY_INTERVAL => p.session_expiry_interval = Some(reader.u32()?),
            id::RECEIVE_MAXIMUM => p.receive_maximum = Some(nonzero_u16(reader, property)?),
            id::MAXIMUM_PACKET_SIZE => p.maximum_packet_size = Some(nonzero_u32(reader, property)?),
            id::TOPIC_ALIAS_MAXIMUM => p.topic_alias_maximum = Some(reader.u16()?),
            id::REQUEST_RESPONSE_INFORMATION => {
                p.request_response_information = Some(boolean(reader, property)?)
            }
            id::REQUEST_PROBLEM_INFORMATION => {
                p.request_problem_information = Some(boolean(reader, property)?)
            }
            id::USER_PROPERTY => p.user_properties.push(reader.string_pair()?),
            id::AUTHENTICATION_METHOD => p.authentication_method = Some(reader.string()?),
            id::AUTHENTICATION_DATA => p.authentication_data = Some(reader.binary()?),
            _ => return Err(not_allowed(property)),
        }
        Ok(())
    })?;
    check_authentication(&p.authentication_method, &p.authentication_data)?;
    Ok(p)
}

/// Decodes CONNACK properties.
pub(crate) fn decode_connack_properties(
    reader: &mut Reader,
) -> Result<ConnAckProperties, DecodeError> {
    let mut p = ConnAckProperties::default();
    decode_block(reader, |property, reader| {
        match property {
            id::SESSION_EXPIRY_INTERVAL => p.session_expiry_interval = Some(reader.u32()?),
            id::RECEIVE_MAXIMUM => p.receive_maximum = Some(nonzero_u16(reader, property)?),
            id::MAXIMUM_QOS => p.maximum_qos = Some(boolean(reader, property)?),
            id::RETAIN_AVAILABLE => p.retain_available = Some(boolean(reader, property)?),
            id::MAXIMUM_PACKET_SIZE => p.maximum_packet_size = Some(nonzero_u32(reader, property)?),
            id::ASSIGNED_CLIENT_IDENTIFIER => p.assigned_client_identifier = Some(reader.string()?),
            id::TOPIC_ALIAS_MAXIMUM => p.topic_alias_maximum = Some(reader.u16()?),
            id::REASON_STRING => p.reason_string = Some(reader.string()?),
            id::USER_PROPERTY => p.user_properties.push(reader.string_pair()?),
            id::WILDCARD_SUBSCRIPTION_AVAILABLE => {
                p.wildcard_subscription_available = Some(boolean(reader, property)?)
            }
            id::SUBSCRIPTION_IDENTIFIER_AVAILABLE => {
                p.subscription_identifiers_available = Some(boolean(reader, property)?)
            }
            id::SHARED_SUBSCRIPTION_AVAILABLE => {
                p.shared_subscription_available = Some(boolean(reader, property)?)
            }
            id::SERVER_KEEP_ALIVE => p.server_keep_alive = Some(reader.u16()?),
            id::RESPONSE_INFORMATION => p.response_information = Some(reader.string()?),
            id::SERVER_REFERENCE => p.server_reference = Some(reader.string()?),
            id::AUTHENTICATION_METHOD => p.authentication_method = Some(reader.string()?),
            id::AUTHENTICATION_DATA => p.authentication_data = Some(reader.binary()?),
            _ => return Err(not_allowed(property)),
        }
        Ok(())
    })?;
    check_authentication(&p.authentication_method, &p.authentication_data)?;
    Ok(p)
}

/// Decodes the reason string / user property block of the acks.
pub(crate) fn decode_ack_properties(reader: &mut Reader) -> Result<AckProperties, DecodeError> {
    let mut p = AckProperties::default();
    decode_block(reader, |property, reader| {
        match property {
            id::REASON_STRING => p.reason_string = Some(reader.string()?),
            id::USER_PROPERTY => p.user_properties.push(reader.string_pair()?),
            _ => return Err(not_allowed(property)),
        }
        Ok(())
    })?;
    Ok(p)
}

/// Decodes SUBSCRIBE properties: (subscription identifier, user properties).
pub(crate) fn decode_subscribe_properties(
    reader: &mut Reader,
) -> Result<(Option<u32>, UserProperties), DecodeError> {
    let mut identifier = None;
    let mut user_properties = Vec::new();
    decode_block(reader, |property, reader| {
        match property {
            id::SUBSCRIPTION_IDENTIFIER => {
                // Only PUBLISH may repeat it; the generic check exempted it for PUBLISH's sake.
                if identifier.is_some() {
                    return Err(DecodeError::DuplicateProperty(property));
                }
                identifier = Some(subscription_identifier(reader)?);
            }
            id::USER_PROPERTY => user_properties.push(reader.string_pair()?),
            _ => return Err(not_allowed(property)),
        }
        Ok(())
    })?;
    Ok((identifier, user_properties))
}

/// Decodes UNSUBSCRIBE properties (user properties only).
pub(crate) fn decode_unsubscribe_properties(
    reader: &mut Reader,
) -> Result<UserProperties, DecodeError> {
    let mut user_properties = Vec::new();
    decode_block(reader, |property, reader| {
        match property {
            id::USER_PROPERTY => user_properties.push(reader.string_pair()?),
            _ => return Err(not_allowed(property)),
        }
        Ok(())
    })?;
    Ok(user_properties)
}

/// Decodes DISCONNECT properties.
pub(crate) fn decode_disconnect_properties(
    reader: &mut Reader,
) -> Result<DisconnectProperties, DecodeError> {
    let mut p = DisconnectProperties::default();
    decode_block(reader, |property, reader| {
        match property {
            id::SESSION_EXPIRY_INTERVAL => p.session_expiry_interval = Some(reader.u32()?),
            id::REASON_STRING => p.reason_string = Some(reader.string()?),
            id::USER_PROPERTY => p.user_properties.push(reader.string_pair()?),
            id::SERVER_REFERENCE => p.server_reference = Some(reader.string()?),
            _ => return Err(not_allowed(property)),
        }
        Ok(())
    })?;
    Ok(p)
}

/// Decodes AUTH properties.
pub(crate) fn decode_auth_properties(reader: &mut Reader) -> Result<AuthProperties, DecodeError> {
    let mut p = AuthProperties::default();
    decode_block(reader, |property, reader| {
        match property {
            id::AUTHENTICATION_METHOD => p.authentication_method = Some(reader.string()?),
            id::AUTHENTICATION_DATA => p.authentication_data = Some(reader.binary()?),
            id::REASON_STRING => p.reason_string = Some(reader.string()?),
            id::USER_PROPERTY => p.user_properties.push(reader.string_pair()?),
            _ => return Err(not_allowed(property)),
        }
        Ok(())
    })?;
    check_authentication(&p.authentication_method, &p.authentication_data)?;
    Ok(p)
}

// ---------------------------------------------------------------------------------------------
// Encoding

/// Something that writes a sequence of properties (without the block's length prefix).
pub(crate) trait WriteProperties {
    fn write_properties<S: Sink>(&self, sink: &mut S) -> Result<(), EncodeError>;
}

/// Writes a property block: its length as a Variable Byte Integer, then the properties.
pub(crate) fn put_property_block<S: Sink, P: WriteProperties + ?Sized>(
    sink: &mut S,
    properties: &P,
) -> Result<(), EncodeError> {
    let mut counter = Counter::default();
    properties.write_properties(&mut counter)?;
    put_varint(sink, counter.length)?;
    properties.write_properties(sink)
}

pub(crate) fn put_u8_property<S: Sink>(sink: &mut S, property: u8, value: Option<u8>) {
    if let Some(value) = value {
        sink.put_u8(property);
        sink.put_u8(value);
    }
}

pub(crate) fn put_u16_property<S: Sink>(sink: &mut S, property: u8, value: Option<u16>) {
    if let Some(value) = value {
        sink.put_u8(property);
        sink.put_u16(value);
    }
}

pub(crate) fn put_u32_property<S: Sink>(sink: &mut S, property: u8, value: Option<u32>) {
    if let Some(value) = value {
        sink.put_u8(property);
        sink.put_u32(value);
    }
}

pub(crate) fn put_binary_property<S: Sink>(
    sink: &mut S,
    property: u8,
    value: Option<&[u8]>,
) -> Result<(), EncodeError> {
    if let Some(value) = value {
        sink.put_u8(property);
        put_binary(sink, value)?;
    }
    Ok(())
}

pub(crate) fn put_string_property<S: Sink>(
    sink: &mut S,
    property: u8,
    value: &Option<Str>,
) -> Result<(), EncodeError> {
    put_binary_property(
        sink,
        property,
        value.as_ref().map(|value| &value.as_bytes()[..]),
    )
}

pub(crate) fn put_user_properties<S: Sink>(
    sink: &mut S,
    pairs: &[(Str, Str)],
) -> Result<(), EncodeError> {
    for (key, value) in pairs {
        sink.put_u8(id::USER_PROPERTY);
        put_binary(sink, key.as_bytes())?;
        put_binary(sink, value.as_bytes())?;
    }
    Ok(())
}

pub(crate) fn put_subscription_identifier<S: Sink>(
    sink: &mut S,
    value: u32,
) -> Result<(), EncodeError> {
    if value == 0 || value > VARIABLE_BYTE_INTEGER_MAX {
        return Err(EncodeError::InvalidValue(
            "subscription identifier out of 1..=268435455",
        ));
    }
    sink.put_u8(id::SUBSCRIPTION_IDENTIFIER);
    put_varint(sink, value as usize)
}

/// Writes the properties PUBLISH and the Will share.
pub(crate) fn put_message_properties<S: Sink>(
    sink: &mut S,
    p: &PublishProperties,
    message_expiry_interval: Option<u32>,
) -> Result<(), EncodeError> {
    put_u8_property(
        sink,
        id::PAYLOAD_FORMAT_INDICATOR,
        p.payload_format_indicator,
    );
    put_u32_property(sink, id::MESSAGE_EXPIRY_INTERVAL, message_expiry_interval);
    put_string_property(sink, id::CONTENT_TYPE, &p.content_type)?;
    put_string_property(sink, id::RESPONSE_TOPIC, &p.response_topic)?;
    put_binary_property(sink, id::CORRELATION_DATA, p.correlation_data.as_deref())?;
    put_user_properties(sink, &p.user_properties)
}

impl WriteProperties for ConnectProperties {
    fn write_properties<S: Sink>(&self, sink: &mut S) -> Result<(), EncodeError> {
        put_u32_property(
            sink,
            id::SESSION_EXPIRY_INTERVAL,
            self.session_expiry_interval,
        );
        put_u16_property(sink, id::RECEIVE_MAXIMUM, self.receive_maximum);
        put_u32_property(sink, id::MAXIMUM_PACKET_SIZE, self.maximum_packet_size);
        put_u16_property(sink, id::TOPIC_ALIAS_MAXIMUM, self.topic_alias_maximum);
        put_u8_property(
            sink,
            id::REQUEST_RESPONSE_INFORMATION,
            self.request_response_information,
        );
        put_u8_property(
            sink,
            id::REQUEST_PROBLEM_INFORMATION,
            self.request_problem_information,
        );
        put_user_properties(sink, &self.user_properties)?;
        put_string_property(sink, id::AUTHENTICATION_METHOD, &self.authentication_method)?;
        put_binary_property(
            sink,
            id::AUTHENTICATION_DATA,
            self.authentication_data.as_deref(),
        )
    }
}

impl WriteProperties for ConnAckProperties {
    fn write_properties<S: Sink>(&self, sink: &mut S) -> Result<(), EncodeError> {
        put_u32_property(
            sink,
            id::SESSION_EXPIRY_INTERVAL,
            self.session_expiry_interval,
        );
        put_u16_property(sink, id::RECEIVE_MAXIMUM, self.receive_maximum);
        put_u8_property(sink, id::MAXIMUM_QOS, self.maximum_qos);
        put_u8_property(sink, id::RETAIN_AVAILABLE, self.retain_available);
        put_u32_property(sink, id::MAXIMUM_PACKET_SIZE, self.maximum_packet_size);
        put_string_property(
            sink,
            id::ASSIGNED_CLIENT_IDENTIFIER,
            &self.assigned_client_identifier,
        )?;
        put_u16_property(sink, id::TOPIC_ALIAS_MAXIMUM, self.topic_alias_maximum);
        put_string_property(sink, id::REASON_STRING, &self.reason_string)?;
        put_user_properties(sink, &self.user_properties)?;
        put_u8_property(
            sink,
            id::WILDCARD_SUBSCRIPTION_AVAILABLE,
            self.wildcard_subscription_available,
        );
        put_u8_property(
            sink,
            id::SUBSCRIPTION_IDENTIFIER_AVAILABLE,
            self.subscription_identifiers_available,
        );
        put_u8_property(
            sink,
            id::SHARED_SUBSCRIPTION_AVAILABLE,
            self.shared_subscription_available,
        );
        put_u16_property(sink, id::SERVER_KEEP_ALIVE, self.server_keep_alive);
        put_string_property(sink, id::RESPONSE_INFORMATION, &self.response_information)?;
        put_string_property(sink, id::SERVER_REFERENCE, &self.server_reference)?;
        put_string_property(sink, id::AUTHENTICATION_METHOD, &self.authentication_method)?;
        put_binary_property(
            sink,
            id::AUTHENTICATION_DATA,
            self.authentication_data.as_deref(),
        )
    }
}

impl WriteProperties for AckProperties {
    fn write_properties<S: Sink>(&self, sink: &mut S) -> Result<(), EncodeError> {
        put_string_property(sink, id::REASON_STRING, &self.reason_string)?;
        put_user_properties(sink, &self.user_properties)
    }
}

impl WriteProperties for DisconnectProperties {
    fn write_properties<S: Sink>(&self, sink: &mut S) -> Result<(), EncodeError> {
        put_u32_property(
            sink,
            id::SESSION_EXPIRY_INTERVAL,
            self.session_expiry_interval,
        );
        put_string_property(sink, id::REASON_STRING, &self.reason_string)?;
        put_user_properties(sink, &self.user_properties)?;
        put_string_property(sink, id::SERVER_REFERENCE, &self.server_reference)
    }
}

impl WriteProperties for AuthProperties {
    fn write_properties<S: Sink>(&self, sink: &mut S) -> Result<(), EncodeError> {
        put_string_property(sink, id::AUTHENTICATION_METHOD, &self.authentication_method)?;
        put_binary_property(
            sink,
            id::AUTHENTICATION_DATA,
            self.authentication_data.as_deref(),
        )?;
        put_string_property(sink, id::REASON_STRING, &self.reason_string)?;
        put_user_properties(sink, &self.user_properties)
    }
}
