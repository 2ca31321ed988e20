//! Encoding packets into a write buffer (sans-IO).
//!
//! Every packet body is written by one generic function run twice: into a `Counter` to learn
//! the exact size (and to find every error before touching the buffer), then into the buffer,
//! which is reserved once for the exact total.

use bytes::BytesMut;

use crate::mqtt::error::EncodeError;
use crate::mqtt::packet::{
    Auth, ConnAck, Connect, Disconnect, Packet, PubResp, PubRespKind, SubAck, Subscribe, UnsubAck,
    Unsubscribe, Will,
};
use crate::mqtt::properties::{
    property_id as id, put_message_properties, put_property_block, put_subscription_identifier,
    put_u16_property, put_u32_property, put_user_properties, PublishProperties, WriteProperties,
};
use crate::mqtt::reason::ReasonCode;
use crate::mqtt::types::{ProtocolVersion, QoS};
use crate::mqtt::wire::{
    put_binary, put_varint, varint_len, Counter, Sink, VARIABLE_BYTE_INTEGER_MAX,
};

/// Borrowed view used for outbound deliveries so the broker never clones a Publish per subscriber.
#[derive(Clone, Copy, Debug)]
pub struct OutgoingPublish<'a> {
    /// DUP flag (must be false for QoS 0).
    pub dup: bool,
    /// Delivery QoS.
    pub qos: QoS,
    /// Retain flag.
    pub retain: bool,
    /// Packet identifier (ignored for QoS 0, non-zero otherwise).
    pub packet_id: u16,
    /// Topic name; "" when only an alias is sent.
    pub topic: &'a str,
    /// MQTT 5 topic alias to send.
    pub topic_alias: Option<u16>,
    /// MQTT 5 subscription identifiers of the matching subscriptions.
    pub subscription_identifiers: &'a [u32],
    /// MQTT 5 remaining message expiry, in seconds.
    pub message_expiry_interval: Option<u32>,
    /// Other MQTT 5 properties; its topic_alias, subscription_identifiers and message_expiry_interval are IGNORED (the fields above win).
    pub properties: &'a PublishProperties,
    /// Application payload.
    pub payload: &'a [u8],
}

/// Something whose body can be written into a `Sink` (run once to count, once to write).
trait Body {
    fn write<S: Sink>(&self, sink: &mut S) -> Result<(), EncodeError>;
}

/// Size of the remaining-length body, or the first error encoding would hit.
fn body_length<B: Body>(body: &B) -> Result<usize, EncodeError> {
    let mut counter = Counter::default();
    body.write(&mut counter)?;
    if counter.length > VARIABLE_BYTE_INTEGER_MAX as usize {
        return Err(EncodeError::PacketTooLarge);
    }
    Ok(counter.length)
}

/// Writes the fixed header and the body; on error `buf` is left as it was.
fn frame<B: Body>(buf: &mut BytesMut, first_byte: u8, body: &B) -> Result<(), EncodeError> {
    let remaining_length = body_length(body)?;
    let start = buf.len();
    buf.reserve(1 + varint_len(remaining_length) + remaining_length);
    buf.put_u8(first_byte);
    let written = put_varint(buf, remaining_length).and_then(|()| body.write(buf));
    if let Err(error) = written {
        // Unreachable in practice: the counting pass ran the same checks.
        buf.truncate(start);
        return Err(error);
    }
    debug_assert_eq!(
        buf.len() - start,
        1 + varint_len(remaining_length) + remaining_length
    );
    Ok(())
}

/// Encodes any packet; `Connect` uses its own `version` field, everything else `version`.
pub fn encode_packet(
    packet: &Packet,
    version: ProtocolVersion,
    buf: &mut BytesMut,
) -> Result<(), EncodeError> {
    let v5 = version.is_v5();
    match packet {
        Packet::Connect(connect) => frame(buf, 0x10, &**connect),
        Packet::ConnAck(connack) => frame(buf, 0x20, &Versioned(connack, v5)),
        Packet::Publish(publish) => {
            let outgoing = OutgoingPublish {
                dup: publish.dup,
                qos: publish.qos,
                retain: publish.retain,
                packet_id: publish.packet_id,
                topic: publish.topic.as_str(),
                topic_alias: publish.properties.topic_alias,
                subscription_identifiers: &publish.properties.subscription_identifiers,
                message_expiry_interval: publish.properties.message_expiry_interval,
                properties: &publish.properties,
                payload: &publish.payload,
            };
            encode_publish(&outgoing, version, buf)
        }
        Packet::PubAck(response) => frame(
            buf,
            PubRespKind::PubAck.first_byte(),
            &Versioned(response, v5),
        ),
        Packet::PubRec(response) => frame(
            buf,
            PubRespKind::PubRec.first_byte(),
            &Versioned(response, v5),
        ),
        Packet::PubRel(response) => frame(
            buf,
            PubRespKind::PubRel.first_byte(),
            &Versioned(response, v5),
        ),
        Packet::PubComp(response) => frame(
            buf,
            PubRespKind::PubComp.first_byte(),
            &Versioned(response, v5),
        ),
        Packet::Subscribe(subscribe) => frame(buf, 0x82, &Versioned(subscribe, v5)),
        Packet::SubAck(suback) => frame(buf, 0x90, &Versioned(suback, v5)),
        Packet::Unsubscribe(unsubscribe) => frame(buf, 0xa2, &Versioned(unsubscribe, v5)),
        Packet::UnsubAck(unsuback) => frame(buf, 0xb0, &Versioned(unsuback, v5)),
        Packet::PingReq => frame(buf, 0xc0, &Empty),
        Packet::PingResp => frame(buf, 0xd0, &Empty),
        Packet::Disconnect(disconnect) => frame(buf, 0xe0, &Versioned(disconnect, v5)),
        Packet::Auth(auth) => {
            if !v5 {
                return Err(EncodeError::InvalidValue("AUTH exists only in MQTT 5"));
            }
            frame(buf, 0xf0, auth)
        }
    }
}

/// Encodes a PUBLISH from a borrowed view (the fan-out path).
pub fn encode_publish(
    p: &OutgoingPublish<'_>,
    version: ProtocolVersion,
    buf: &mut BytesMut,
) -> Result<(), EncodeError> {
    frame(buf, publish_first_byte(p), &Versioned(p, version.is_v5()))
}

/// Exact number of bytes encode_publish would write (for the client's Maximum Packet Size check).
///
/// Returns `usize::MAX` when `encode_publish` would fail, so such a packet never fits a limit.
pub fn publish_encoded_len(p: &OutgoingPublish<'_>, version: ProtocolVersion) -> usize {
    match body_length(&Versioned(p, version.is_v5())) {
        Ok(remaining_length) => 1 + varint_len(remaining_length) + remaining_length,
        Err(_) => usize::MAX,
    }
}

/// Fast path for PUBACK/PUBREC/PUBREL/PUBCOMP without properties; v5 with Success writes the 2-byte short form.
pub fn encode_pub_resp(
    kind: PubRespKind,
    packet_id: u16,
    reason: ReasonCode,
    version: ProtocolVersion,
    buf: &mut BytesMut,
) {
    let [high, low] = packet_id.to_be_bytes();
    if version.is_v5() && reason != ReasonCode::SUCCESS {
        buf.extend_from_slice(&[kind.first_byte(), 3, high, low, reason.0]);
    } else {
        buf.extend_from_slice(&[kind.first_byte(), 2, high, low]);
    }
}

fn publish_first_byte(p: &OutgoingPublish<'_>) -> u8 {
    0x30 | (u8::from(p.dup) << 3) | ((p.qos as u8) << 1) | u8::from(p.retain)
}

/// A packet paired with "is this MQTT 5", which decides whether properties are written.
struct Versioned<'a, T: ?Sized>(&'a T, bool);

struct Empty;

impl Body for Empty {
    fn write<S: Sink>(&self, _sink: &mut S) -> Result<(), EncodeError> {
        Ok(())
    }
}

fn check_packet_id(packet_id: u16) -> Result<(), EncodeError> {
    if packet_id == 0 {
        return Err(EncodeError::InvalidValue("packet identifier 0"));
    }
    Ok(())
}

fn put_u16_be<S: Sink>(sink: &mut S, value: u16) {
    sink.put_u16(value);
}

/// The Will's properties: the message properties plus its delay interval.
struct WillProperties<'a>(&'a Will);

impl WriteProperties for WillProperties<'_> {
    fn write_properties<S: Sink>(&self, sink: &mut S) -> Result<(), EncodeError> {
        let will = self.0;
        put_u32_property(sink, id::WILL_DELAY_INTERVAL, will.delay_interval);
        put_message_properties(
            sink,
            &will.properties,
            will.properties.message_expiry_interval,
        )
    }
}

impl Body for Connect {
    fn write<S: Sink>(&self, sink: &mut S) -> Result<(), EncodeError> {
        let v5 = self.version.is_v5();
        let name: &[u8] = if self.version == ProtocolVersion::V31 {
            b"MQIsdp"
        } else {
            b"MQTT"
        };
        if !v5 && self.password.is_some() && self.username.is_none() {
            return Err(EncodeError::InvalidValue(
                "password without user name before MQTT 5",
            ));
        }
        put_binary(sink, name)?;
        sink.put_u8(self.version.level());
        let mut flags = 0u8;
        if self.clean_start {
            flags |= 0x02;
        }
        if let Some(will) = &self.will {
            flags |= 0x04 | ((will.qos as u8) << 3);
            if will.retain {
                flags |= 0x20;
            }
        }
        if self.password.is_some() {
            flags |= 0x40;
        }
        if self.username.is_some() {
            flags |= 0x80;
        }
        sink.put_u8(flags);
        put_u16_be(sink, self.keep_alive);
        if v5 {
            put_property_block(sink, &self.properties)?;
        }
        put_binary(sink, self.client_id.as_bytes())?;
        if let Some(will) = &self.will {
            if v5 {
                put_property_block(sink, &WillProperties(will))?;
            }
            put_binary(sink, will.topic.as_bytes())?;
            put_binary(sink, &will.payload)?;
        }
        if let Some(username) = &self.username {
            put_binary(sink, username.as_bytes())?;
        }
        if let Some(password) = &self.password {
            put_binary(sink, password)?;
        }
        Ok(())
    }
}

impl Body for Versioned<'_, ConnAck> {
    fn write<S: Sink>(&self, sink: &mut S) -> Result<(), EncodeError> {
        let Versioned(connack, v5) = *self;
        sink.put_u8(u8::from(connack.session_present));
        sink.put_u8(connack.reason.0);
        if v5 {
            put_property_block(sink, &connack.properties)?;
        }
        Ok(())
    }
}

impl WriteProperties for Versioned<'_, OutgoingPublish<'_>> {
    fn write_properties<S: Sink>(&self, sink: &mut S) -> Result<(), EncodeError> {
        let p = self.0;
        put_u16_property(sink, id::TOPIC_ALIAS, p.topic_alias);
        for &identifier in p.subscription_identifiers {
            put_subscription_identifier(sink, identifier)?;
        }
        put_message_properties(sink, p.properties, p.message_expiry_interval)
    }
}

impl Body for Versioned<'_, OutgoingPublish<'_>> {
    fn write<S: Sink>(&self, sink: &mut S) -> Result<(), EncodeError> {
        let Versioned(p, v5) = *self;
        if p.qos == QoS::AtMostOnce && p.dup {
            return Err(EncodeError::InvalidValue("DUP set on a QoS 0 PUBLISH"));
        }
        if p.topic.is_empty() && (!v5 || p.topic_alias.is_none()) {
            return Err(EncodeError::InvalidValue(
                "empty topic without a topic alias",
            ));
        }
        put_binary(sink, p.topic.as_bytes())?;
        if p.qos != QoS::AtMostOnce {
            check_packet_id(p.packet_id)?;
            put_u16_be(sink, p.packet_id);
        }
        if v5 {
            put_property_block(sink, self)?;
        }
        sink.put_slice(p.payload);
        Ok(())
    }
}

impl Body for Versioned<'_, PubResp> {
    fn write<S: Sink>(&self, sink: &mut S) -> Result<(), EncodeError> {
        let Versioned(response, v5) = *self;
        check_packet_id(response.packet_id)?;
        put_u16_be(sink, response.packet_id);
        // Short forms [MQTT-3.4.2-1]: reason and properties are omitted when they hold nothing.
        if v5 && (response.reason != ReasonCode::SUCCESS || !response.properties.is_empty()) {
            sink.put_u8(response.reason.0);
            if !response.properties.is_empty() {
                put_property_block(sink, &response.properties)?;
            }
        }
        Ok(())
    }
}

/// SUBSCRIBE properties: the subscription identifier and user properties.
struct SubscribeProperties<'a>(&'a Subscribe);

impl WriteProperties for SubscribeProperties<'_> {
    fn write_properties<S: Sink>(&self, sink: &mut S) -> Result<(), EncodeError> {
        if let Some(identifier) = self.0.subscription_identifier {
            put_subscription_identifier(sink, identifier)?;
        }
        put_user_properties(sink, &self.0.user_properties)
    }
}

/// UNSUBSCRIBE properties: user properties only.
struct UnsubscribeProperties<'a>(&'a [(crate::mqtt::types::Str, crate::mqtt::types::Str)]);

impl WriteProperties for UnsubscribeProperties<'_> {
    fn write_properties<S: Sink>(&self, sink: &mut S) -> Result<(), EncodeError> {
        put_user_properties(sink, self.0)
    }
}

impl Body for Versioned<'_, Subscribe> {
    fn write<S: Sink>(&self, sink: &mut S) -> Result<(), EncodeError> {
        let Versioned(subscribe, v5) = *self;
        check_packet_id(subscribe.packet_id)?;
        if subscribe.filters.is_empty() {
            return Err(EncodeError::InvalidValue("SUBSCRIBE without topic filters"));
        }
        put_u16_be(sink, subscribe.packet_id);
        if v5 {
            put_property_block(sink, &SubscribeProperties(subscribe))?;
        }
        for entry in &subscribe.filters {
            put_binary(sink, entry.filter.as_bytes())?;
            let options = entry.options;
            let mut byte = options.qos as u8;
            if v5 {
                byte |= u8::from(options.no_local) << 2;
                byte |= u8::from(options.retain_as_published) << 3;
                byte |= (options.retain_handling as u8) << 4;
            }
            sink.put_u8(byte);
        }
        Ok(())
    }
}

impl Body for Versioned<'_, SubAck> {
    fn write<S: Sink>(&self, sink: &mut S) -> Result<(), EncodeError> {
        let Versioned(suback, v5) = *self;
        check_packet_id(suback.packet_id)?;
        if suback.reasons.is_empty() {
            return Err(EncodeError::InvalidValue("SUBACK without reason codes"));
        }
        put_u16_be(sink, suback.packet_id);
        if v5 {
            put_property_block(sink, &suback.properties)?;
        }
        for reason in &suback.reasons {
            sink.put_u8(reason.0);
        }
        Ok(())
    }
}

impl Body for Versioned<'_, Unsubscribe> {
    fn write<S: Sink>(&self, sink: &mut S) -> Result<(), EncodeError> {
        let Versioned(unsubscribe, v5) = *self;
        check_packet_id(unsubscribe.packet_id)?;
        if unsubscribe.filters.is_empty() {
            return Err(EncodeError::InvalidValue(
                "UNSUBSCRIBE without topic filters",
            ));
        }
        put_u16_be(sink, unsubscribe.packet_id);
        if v5 {
            put_property_block(sink, &UnsubscribeProperties(&unsubscribe.user_properties))?;
        }
        for filter in &unsubscribe.filters {
            put_binary(sink, filter.as_bytes())?;
        }
        Ok(())
    }
}

impl Body for Versioned<'_, UnsubAck> {
    fn write<S: Sink>(&self, sink: &mut S) -> Result<(), EncodeError> {
        let Versioned(unsuback, v5) = *self;
        check_packet_id(unsuback.packet_id)?;
        put_u16_be(sink, unsuback.packet_id);
        // Before MQTT 5 UNSUBACK is only the packet identifier.
        if v5 {
            if unsuback.reasons.is_empty() {
                return Err(EncodeError::InvalidValue("UNSUBACK without reason codes"));
            }
            put_property_block(sink, &unsuback.properties)?;
            for reason in &unsuback.reasons {
                sink.put_u8(reason.0);
            }
        }
        Ok(())
    }
}

impl Body for Versioned<'_, Disconnect> {
    fn write<S: Sink>(&self, sink: &mut S) -> Result<(), EncodeError> {
        let Versioned(disconnect, v5) = *self;
        // Short forms [MQTT-3.14.2.1]: remaining length 0 for Normal disconnection without properties.
        if v5 && (disconnect.reason != ReasonCode::SUCCESS || !disconnect.properties.is_empty()) {
            sink.put_u8(disconnect.reason.0);
            if !disconnect.properties.is_empty() {
                put_property_block(sink, &disconnect.properties)?;
            }
        }
        Ok(())
    }
}

impl Body for Auth {
    fn write<S: Sink>(&self, sink: &mut S) -> Result<(), EncodeError> {
        if self.reason != ReasonCode::SUCCESS || !self.properties.is_empty() {
            sink.put_u8(self.reason.0);
            if !self.properties.is_empty() {
                put_property_block(sink, &self.properties)?;
            }
        }
        Ok(())
    }
}
