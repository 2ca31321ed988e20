//! Decoding packets from a read buffer (sans-IO).
//!
//! Two phases, as in mini-redis: the fixed header is read and checked first (type, flags and
//! size against `packet_size_max`), and only once the whole packet is buffered is its body
//! split off without copying and parsed. "Incomplete" is `Ok(None)`, never an error.

use bytes::{Buf, BytesMut};

use crate::mqtt::error::DecodeError;
use crate::mqtt::packet::{
    Auth, ConnAck, Connect, Disconnect, Packet, PubResp, Publish, RetainHandling, SubAck,
    Subscribe, SubscribeFilter, SubscriptionOptions, UnsubAck, Unsubscribe, Will,
};
use crate::mqtt::properties::{
    decode_ack_properties, decode_auth_properties, decode_connack_properties,
    decode_connect_properties, decode_disconnect_properties, decode_publish_properties,
    decode_subscribe_properties, decode_unsubscribe_properties, decode_will_properties,
    PublishProperties,
};
use crate::mqtt::reason::ReasonCode;
use crate::mqtt::types::{ProtocolVersion, QoS};
use crate::mqtt::wire::Reader;

/// Decodes one packet from the front of `buf`. Ok(None): incomplete, nothing consumed. Ok(Some(p)): the packet's bytes were split off `buf`.
///
/// CONNECT is decoded whatever `version` says (it carries its own level); every other packet
/// is decoded as `version`. `packet_size_max` bounds the whole packet (fixed header included)
/// and is checked as soon as the fixed header is readable, before the body is waited for.
/// After an error the connection must be closed; the bytes of a packet whose body failed to
/// parse have already been removed from `buf`.
pub fn decode_packet(
    buf: &mut BytesMut,
    version: ProtocolVersion,
    packet_size_max: u32,
) -> Result<Option<Packet>, DecodeError> {
    let Some((first_byte, remaining_length, header_len)) = peek_fixed_header(buf)? else {
        return Ok(None);
    };
    check_first_byte(first_byte, version)?;
    let size = header_len as u64 + u64::from(remaining_length);
    if size > u64::from(packet_size_max) {
        return Err(DecodeError::PacketTooLarge {
            size,
            max: packet_size_max,
        });
    }
    if (buf.len() as u64) < size {
        return Ok(None);
    }
    // `size` is at most `buf.len()` here, so the conversion and the split are in bounds.
    let mut frame = buf.split_to(size as usize);
    frame.advance(header_len);
    let mut reader = Reader::new(frame.freeze());
    let packet = decode_body(first_byte, &mut reader, version)?;
    Ok(Some(packet))
}

/// Reads only the fixed header: Ok(None) if incomplete; Ok(Some((first_byte, remaining_length, header_len))).
pub fn peek_fixed_header(buf: &[u8]) -> Result<Option<(u8, u32, usize)>, DecodeError> {
    let Some(&first_byte) = buf.first() else {
        return Ok(None);
    };
    let mut remaining_length: u32 = 0;
    for index in 0..4 {
        let Some(&byte) = buf.get(1 + index) else {
            return Ok(None);
        };
        remaining_length |= u32::from(byte & 0x7f) << (7 * index);
        if byte & 0x80 == 0 {
            return Ok(Some((first_byte, remaining_length, 2 + index)));
        }
    }
    Err(DecodeError::MalformedRemainingLength)
}

/// Checks the packet type and its reserved flags, so garbage fails before its body arrives.
fn check_first_byte(first_byte: u8, version: ProtocolVersion) -> Result<(), DecodeError> {
    let packet_type = first_byte >> 4;
    let flags = first_byte & 0x0f;
    match packet_type {
        0 => Err(DecodeError::InvalidPacketType(0)),
        15 if !version.is_v5() => Err(DecodeError::InvalidPacketType(15)),
        3 => {
            let qos = (flags >> 1) & 0x03;
            if qos == 3 {
                return Err(DecodeError::InvalidQoS(3));
            }
            // The DUP flag MUST be 0 for QoS 0 messages [MQTT-3.3.1-2].
            if qos == 0 && flags & 0x08 != 0 {
                return Err(DecodeError::InvalidHeaderFlags(first_byte));
            }
            Ok(())
        }
        6 | 8 | 10 if flags != 0b0010 => Err(DecodeError::InvalidHeaderFlags(first_byte)),
        6 | 8 | 10 => Ok(()),
        _ if flags != 0 => Err(DecodeError::InvalidHeaderFlags(first_byte)),
        _ => Ok(()),
    }
}

fn decode_body(
    first_byte: u8,
    reader: &mut Reader,
    version: ProtocolVersion,
) -> Result<Packet, DecodeError> {
    let packet = match first_byte >> 4 {
        1 => Packet::Connect(Box::new(decode_connect(reader)?)),
        2 => Packet::ConnAck(decode_connack(reader, version)?),
        3 => Packet::Publish(decode_publish(first_byte, reader, version)?),
        4 => Packet::PubAck(decode_pub_resp(reader, version)?),
        5 => Packet::PubRec(decode_pub_resp(reader, version)?),
        6 => Packet::PubRel(decode_pub_resp(reader, version)?),
        7 => Packet::PubComp(decode_pub_resp(reader, version)?),
        8 => Packet::Subscribe(decode_subscribe(reader, version)?),
        9 => Packet::SubAck(decode_suback(reader, version)?),
        10 => Packet::Unsubscribe(decode_unsubscribe(reader, version)?),
        11 => Packet::UnsubAck(decode_unsuback(reader, version)?),
        12 => {
            reader.finish()?;
            Packet::PingReq
        }
        13 => {
            reader.finish()?;
            Packet::PingResp
        }
        14 => Packet::Disconnect(decode_disconnect(reader, version)?),
        15 => Packet::Auth(decode_auth(reader)?),
        other => return Err(DecodeError::InvalidPacketType(other)),
    };
    Ok(packet)
}

fn packet_id(reader: &mut Reader) -> Result<u16, DecodeError> {
    match reader.u16()? {
        0 => Err(DecodeError::ZeroPacketId),
        id => Ok(id),
    }
}

fn decode_connect(reader: &mut Reader) -> Result<Connect, DecodeError> {
    let name = reader.binary()?;
    let level = reader.u8()?;
    let version = match (&name[..], level) {
        (b"MQIsdp", 3) => ProtocolVersion::V31,
        (b"MQTT", 4) => ProtocolVersion::V311,
        (b"MQTT", 5) => ProtocolVersion::V5,
        (b"MQTT", other) | (b"MQIsdp", other) => {
            return Err(DecodeError::UnsupportedProtocolVersion(other))
        }
        _ => return Err(DecodeError::InvalidProtocolName),
    };
    let flags = reader.u8()?;
    if flags & 0x01 != 0 {
        return Err(DecodeError::Malformed("CONNECT reserved flag set"));
    }
    let clean_start = flags & 0x02 != 0;
    let will_flag = flags & 0x04 != 0;
    let will_qos_value = (flags >> 3) & 0x03;
    let will_retain = flags & 0x20 != 0;
    let password_flag = flags & 0x40 != 0;
    let username_flag = flags & 0x80 != 0;
    let will_qos = QoS::from_u8(will_qos_value).ok_or(DecodeError::InvalidQoS(will_qos_value))?;
    if !will_flag && (will_qos_value != 0 || will_retain) {
        return Err(DecodeError::Malformed(
            "will QoS or retain set without the will flag",
        ));
    }
    // MQTT 5 allows a password without a user name; earlier versions do not [MQTT-3.1.2-22].
    if !version.is_v5() && password_flag && !username_flag {
        return Err(DecodeError::ProtocolError("password without user name"));
    }
    let keep_alive = reader.u16()?;
    let properties = if version.is_v5() {
        decode_connect_properties(reader)?
    } else {
        Default::default()
    };
    let client_id = reader.string()?;
    let will = if will_flag {
        let (will_properties, delay_interval) = if version.is_v5() {
            decode_will_properties(reader)?
        } else {
            (PublishProperties::default(), None)
        };
        let topic = reader.string()?;
        let payload = reader.binary()?;
        Some(Will {
            topic,
            payload,
            qos: will_qos,
            retain: will_retain,
            delay_interval,
            properties: will_properties,
        })
    } else {
        None
    };
    let username = if username_flag {
        Some(reader.string()?)
    } else {
        None
    };
    let password = if password_flag {
        Some(reader.binary()?)
    } else {
        None
    };
    reader.finish()?;
    Ok(Connect {
        version,
        clean_start,
        keep_alive,
        client_id,
        will,
        username,
        password,
        properties,
    })
}

fn decode_connack(reader: &mut Reader, version: ProtocolVersion) -> Result<ConnAck, DecodeError> {
    let flags = reader.u8()?;
    if flags & 0xfe != 0 {
        return Err(DecodeError::Malformed("CONNACK reserved flags set"));
    }
    let reason = ReasonCode(reader.u8()?);
    // Tolerate a v5 CONNACK without a property block; our encoder always writes one.
    let properties = if version.is_v5() && !reader.is_empty() {
        decode_connack_properties(reader)?
    } else {
        Default::default()
    };
    reader.finish()?;
    Ok(ConnAck {
        session_present: flags & 0x01 != 0,
        reason,
        properties,
    })
}

fn decode_publish(
    first_byte: u8,
    reader: &mut Reader,
    version: ProtocolVersion,
) -> Result<Publish, DecodeError> {
    let qos_value = (first_byte >> 1) & 0x03;
    // check_first_byte already rejected QoS 3.
    let qos = QoS::from_u8(qos_value).ok_or(DecodeError::InvalidQoS(qos_value))?;
    let topic = reader.string()?;
    let packet_id = if qos == QoS::AtMostOnce {
        0
    } else {
        packet_id(reader)?
    };
    let properties = if version.is_v5() {
        decode_publish_properties(reader)?
    } else {
        PublishProperties::default()
    };
    if topic.len_bytes() == 0 && properties.topic_alias.is_none() {
        return Err(DecodeError::ProtocolError(
            "empty topic name without a topic alias",
        ));
    }
    let payload = reader.rest();
    Ok(Publish {
        dup: first_byte & 0x08 != 0,
        qos,
        retain: first_byte & 0x01 != 0,
        topic,
        packet_id,
        payload,
        properties,
    })
}

fn decode_pub_resp(reader: &mut Reader, version: ProtocolVersion) -> Result<PubResp, DecodeError> {
    let packet_id = packet_id(reader)?;
    let mut response = PubResp {
        packet_id,
        ..Default::default()
    };
    // v5 short forms: remaining length 2 means Success without properties, 3 means a reason code
    // without properties.
    if version.is_v5() && !reader.is_empty() {
        response.reason = ReasonCode(reader.u8()?);
        if !reader.is_empty() {
            response.properties = decode_ack_properties(reader)?;
        }
    }
    reader.finish()?;
    Ok(response)
}

fn decode_subscription_options(
    value: u8,
    version: ProtocolVersion,
) -> Result<SubscriptionOptions, DecodeError> {
    let reserved_mask = if version.is_v5() { 0xc0 } else { 0xfc };
    if value & reserved_mask != 0 {
        return Err(DecodeError::Malformed(
            "subscription options reserved bits set",
        ));
    }
    let qos_value = value & 0x03;
    let qos = QoS::from_u8(qos_value).ok_or(DecodeError::InvalidQoS(qos_value))?;
    let retain_handling = RetainHandling::from_u8((value >> 4) & 0x03)
        .ok_or(DecodeError::Malformed("retain handling 3"))?;
    Ok(SubscriptionOptions {
        qos,
        no_local: value & 0x04 != 0,
        retain_as_published: value & 0x08 != 0,
        retain_handling,
    })
}

fn decode_subscribe(
    reader: &mut Reader,
    version: ProtocolVersion,
) -> Result<Subscribe, DecodeError> {
    let packet_id = packet_id(reader)?;
    let (subscription_identifier, user_properties) = if version.is_v5() {
        decode_subscribe_properties(reader)?
    } else {
        (None, Vec::new())
    };
    // Filters are pushed one by one: the count is never taken from the peer's lengths.
    let mut filters = Vec::new();
    while !reader.is_empty() {
        let filter = reader.string()?;
        let options = decode_subscription_options(reader.u8()?, version)?;
        filters.push(SubscribeFilter { filter, options });
    }
    if filters.is_empty() {
        return Err(DecodeError::ProtocolError(
            "SUBSCRIBE without topic filters",
        ));
    }
    Ok(Subscribe {
        packet_id,
        filters,
        subscription_identifier,
        user_properties,
    })
}

fn decode_reasons(reader: &mut Reader) -> Vec<ReasonCode> {
    reader.rest().iter().map(|&code| ReasonCode(code)).collect()
}

fn decode_suback(reader: &mut Reader, version: ProtocolVersion) -> Result<SubAck, DecodeError> {
    let packet_id = packet_id(reader)?;
    let properties = if version.is_v5() {
        decode_ack_properties(reader)?
    } else {
        Default::default()
    };
    let reasons = decode_reasons(reader);
    if reasons.is_empty() {
        return Err(DecodeError::ProtocolError("SUBACK without reason codes"));
    }
    // v3.1.1 reserves every return code but 0, 1, 2 and 0x80 [MQTT-3.9.3-2].
    if !version.is_v5()
        && reasons
            .iter()
            .any(|reason| !matches!(reason.0, 0 | 1 | 2 | 0x80))
    {
        return Err(DecodeError::Malformed(
            "SUBACK return code reserved in MQTT 3",
        ));
    }
    Ok(SubAck {
        packet_id,
        reasons,
        properties,
    })
}

fn decode_unsubscribe(
    reader: &mut Reader,
    version: ProtocolVersion,
) -> Result<Unsubscribe, DecodeError> {
    let packet_id = packet_id(reader)?;
    let user_properties = if version.is_v5() {
        decode_unsubscribe_properties(reader)?
    } else {
        Vec::new()
    };
    let mut filters = Vec::new();
    while !reader.is_empty() {
        filters.push(reader.string()?);
    }
    if filters.is_empty() {
        return Err(DecodeError::ProtocolError(
            "UNSUBSCRIBE without topic filters",
        ));
    }
    Ok(Unsubscribe {
        packet_id,
        filters,
        user_properties,
    })
}

fn decode_unsuback(reader: &mut Reader, version: ProtocolVersion) -> Result<UnsubAck, DecodeError> {
    let packet_id = packet_id(reader)?;
    if !version.is_v5() {
        reader.finish()?;
        return Ok(UnsubAck {
            packet_id,
            ..Default::default()
        });
    }
    let properties = decode_ack_properties(reader)?;
    let reasons = decode_reasons(reader);
    if reasons.is_empty() {
        return Err(DecodeError::ProtocolError("UNSUBACK without reason codes"));
    }
    Ok(UnsubAck {
        packet_id,
        reasons,
        properties,
    })
}

fn decode_disconnect(
    reader: &mut Reader,
    version: ProtocolVersion,
) -> Result<Disconnect, DecodeError> {
    let mut disconnect = Disconnect::default();
    // v5: remaining length 0 means Normal disconnection, 1 means a reason without properties.
    if version.is_v5() && !reader.is_empty() {
        disconnect.reason = ReasonCode(reader.u8()?);
        if !reader.is_empty() {
            disconnect.properties = decode_disconnect_properties(reader)?;
        }
    }
    reader.finish()?;
    Ok(disconnect)
}

fn decode_auth(reader: &mut Reader) -> Result<Auth, DecodeError> {
    let mut auth = Auth::default();
    // Remaining length 0 means Success without properties, as for DISCONNECT.
    if !reader.is_empty() {
        auth.reason = ReasonCode(reader.u8()?);
        if !reader.is_empty() {
            auth.properties = decode_auth_properties(reader)?;
        }
    }
    reader.finish()?;
    Ok(auth)
}
