//! The fifteen MQTT control packets as plain data, shared by MQTT 3.1, 3.1.1 and 5.
//!
//! Fields that only exist in MQTT 5 (reason codes, properties) hold their defaults in
//! packets decoded from, or meant for, earlier versions.

use bytes::Bytes;

use crate::mqtt::properties::{
    AckProperties, AuthProperties, ConnAckProperties, ConnectProperties, DisconnectProperties,
    PublishProperties,
};
use crate::mqtt::reason::ReasonCode;
use crate::mqtt::types::{ProtocolVersion, QoS, Str};

/// The Will message a client leaves with CONNECT, published if it disconnects abnormally.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Will {
    /// Topic the Will is published to.
    pub topic: Str,
    /// Will payload.
    pub payload: Bytes,
    /// QoS of the Will publish.
    pub qos: QoS,
    /// Whether the Will is published as retained.
    pub retain: bool,
    /// MQTT 5 Will Delay Interval in seconds.
    pub delay_interval: Option<u32>,
    /// MQTT 5 Will properties (`topic_alias` and `subscription_identifiers` are not used here).
    pub properties: PublishProperties,
}

/// CONNECT: the first packet of a client.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Connect {
    /// Protocol level the client asked for; later packets are decoded with it.
    pub version: ProtocolVersion,
    /// Clean Start (MQTT 5) / Clean Session (3.1.1).
    pub clean_start: bool,
    /// Keep alive in seconds; 0 disables it.
    pub keep_alive: u16,
    /// Client identifier; may be empty.
    pub client_id: Str,
    /// The Will, if the Will flag is set.
    pub will: Option<Will>,
    /// User name, if the flag is set.
    pub username: Option<Str>,
    /// Password, if the flag is set.
    pub password: Option<Bytes>,
    /// MQTT 5 CONNECT properties.
    pub properties: ConnectProperties,
}

/// CONNACK: the server's answer to CONNECT.
///
/// For v3.1/v3.1.1 `reason.0` is written as the raw return code (see `connack_v3`) and the
/// properties are ignored.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConnAck {
    /// Whether the server resumed a stored session.
    pub session_present: bool,
    /// MQTT 5 reason code, or the v3 return code.
    pub reason: ReasonCode,
    /// MQTT 5 CONNACK properties.
    pub properties: ConnAckProperties,
}

/// PUBLISH: an application message.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Publish {
    /// Redelivery flag; only meaningful for QoS > 0.
    pub dup: bool,
    /// Delivery QoS.
    pub qos: QoS,
    /// Retain flag.
    pub retain: bool,
    /// Topic name; empty when a v5 topic alias replaces it. Wildcards are not checked here.
    pub topic: Str,
    /// Packet identifier; 0 for QoS 0.
    pub packet_id: u16,
    /// Application payload (a zero-copy slice of the read buffer).
    pub payload: Bytes,
    /// MQTT 5 PUBLISH properties.
    pub properties: PublishProperties,
}

/// PUBACK, PUBREC, PUBREL or PUBCOMP (which one is given by the `Packet` variant).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PubResp {
    /// Identifier of the PUBLISH being acknowledged.
    pub packet_id: u16,
    /// MQTT 5 reason code; `SUCCESS` for earlier versions.
    pub reason: ReasonCode,
    /// MQTT 5 properties.
    pub properties: AckProperties,
}

/// Which of the four publish-response packets `encode_pub_resp` writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PubRespKind {
    /// PUBACK (QoS 1 acknowledgement).
    PubAck,
    /// PUBREC (QoS 2, step 1).
    PubRec,
    /// PUBREL (QoS 2, step 2).
    PubRel,
    /// PUBCOMP (QoS 2, step 3).
    PubComp,
}

impl PubRespKind {
    /// First byte of the fixed header (PUBREL carries the reserved flags 0b0010).
    pub fn first_byte(self) -> u8 {
        match self {
            PubRespKind::PubAck => 0x40,
            PubRespKind::PubRec => 0x50,
            PubRespKind::PubRel => 0x62,
            PubRespKind::PubComp => 0x70,
        }
    }
}

/// MQTT 5 Retain Handling subscription option.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum RetainHandling {
    /// Send retained messages at the time of the subscribe.
    #[default]
    SendAtSubscribe = 0,
    /// Send retained messages only if the subscription did not exist.
    SendIfNew = 1,
    /// Do not send retained messages.
    DoNotSend = 2,
}

impl RetainHandling {
    /// Converts a wire value; `None` for 3, which is malformed.
    pub fn from_u8(value: u8) -> Option<RetainHandling> {
        match value {
            0 => Some(RetainHandling::SendAtSubscribe),
            1 => Some(RetainHandling::SendIfNew),
            2 => Some(RetainHandling::DoNotSend),
            _ => None,
        }
    }
}

/// The options byte of one SUBSCRIBE entry (only `qos` exists before MQTT 5).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct SubscriptionOptions {
    /// Maximum QoS the client accepts on this subscription.
    pub qos: QoS,
    /// MQTT 5: do not forward messages published by this same client.
    pub no_local: bool,
    /// MQTT 5: keep the retain flag as published instead of clearing it.
    pub retain_as_published: bool,
    /// MQTT 5: when to send retained messages.
    pub retain_handling: RetainHandling,
}

/// One topic filter of a SUBSCRIBE with its options.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SubscribeFilter {
    /// Topic filter; wildcards are validated by the router, not here.
    pub filter: Str,
    /// Subscription options.
    pub options: SubscriptionOptions,
}

/// SUBSCRIBE: one or more topic filters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Subscribe {
    /// Packet identifier (non-zero).
    pub packet_id: u16,
    /// The filters, at least one.
    pub filters: Vec<SubscribeFilter>,
    /// MQTT 5 Subscription Identifier (1..=268435455).
    pub subscription_identifier: Option<u32>,
    /// MQTT 5 user properties.
    pub user_properties: Vec<(Str, Str)>,
}

/// SUBACK: one reason code per filter (v3: 0, 1, 2 or 0x80).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SubAck {
    /// Identifier of the SUBSCRIBE.
    pub packet_id: u16,
    /// Granted QoS or failure, one per filter, in order.
    pub reasons: Vec<ReasonCode>,
    /// MQTT 5 properties.
    pub properties: AckProperties,
}

/// UNSUBSCRIBE: one or more topic filters to remove.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Unsubscribe {
    /// Packet identifier (non-zero).
    pub packet_id: u16,
    /// The filters, at least one.
    pub filters: Vec<Str>,
    /// MQTT 5 user properties.
    pub user_properties: Vec<(Str, Str)>,
}

/// UNSUBACK: one reason code per filter in MQTT 5, none before.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UnsubAck {
    /// Identifier of the UNSUBSCRIBE.
    pub packet_id: u16,
    /// MQTT 5 reason codes, one per filter; empty for v3.
    pub reasons: Vec<ReasonCode>,
    /// MQTT 5 properties.
    pub properties: AckProperties,
}

/// DISCONNECT: orderly close (sent by either side in MQTT 5, by the client before).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Disconnect {
    /// MQTT 5 reason code; `NORMAL_DISCONNECTION` for v3.
    pub reason: ReasonCode,
    /// MQTT 5 properties.
    pub properties: DisconnectProperties,
}

/// AUTH: MQTT 5 extended authentication exchange.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Auth {
    /// `SUCCESS`, `CONTINUE_AUTHENTICATION` or `RE_AUTHENTICATE`.
    pub reason: ReasonCode,
    /// AUTH properties.
    pub properties: AuthProperties,
}

/// Any MQTT control packet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Packet {
    /// CONNECT (boxed: it is much larger than the hot-path packets).
    Connect(Box<Connect>),
    /// CONNACK.
    ConnAck(ConnAck),
    /// PUBLISH.
    Publish(Publish),
    /// PUBACK.
    PubAck(PubResp),
    /// PUBREC.
    PubRec(PubResp),
    /// PUBREL.
    PubRel(PubResp),
    /// PUBCOMP.
    PubComp(PubResp),
    /// SUBSCRIBE.
    Subscribe(Subscribe),
    /// SUBACK.
    SubAck(SubAck),
    /// UNSUBSCRIBE.
    Unsubscribe(Unsubscribe),
    /// UNSUBACK.
    UnsubAck(UnsubAck),
    /// PINGREQ.
    PingReq,
    /// PINGRESP.
    PingResp,
    /// DISCONNECT.
    Disconnect(Disconnect),
    /// AUTH (MQTT 5 only).
    Auth(Auth),
}

impl Packet {
    /// Upper-case packet name for logs and metrics labels.
    pub fn kind_name(&self) -> &'static str {
        match self {
            Packet::Connect(_) => "CONNECT",
            Packet::ConnAck(_) => "CONNACK",
            Packet::Publish(_) => "PUBLISH",
            Packet::PubAck(_) => "PUBACK",
            Packet::PubRec(_) => "PUBREC",
            Packet::PubRel(_) => "PUBREL",
            Packet::PubComp(_) => "PUBCOMP",
            Packet::Subscribe(_) => "SUBSCRIBE",
            Packet::SubAck(_) => "SUBACK",
            Packet::Unsubscribe(_) => "UNSUBSCRIBE",
            Packet::UnsubAck(_) => "UNSUBACK",
            Packet::PingReq => "PINGREQ",
            Packet::PingResp => "PINGRESP",
            Packet::Disconnect(_) => "DISCONNECT",
            Packet::Auth(_) => "AUTH",
        }
    }
}
