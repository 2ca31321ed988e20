//! MQTT 5 reason codes (spec section 2.4) and the MQTT 3.1.1 CONNACK return codes.

/// An MQTT 5 reason code; values below 0x80 report success, 0x80 and above report failure.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ReasonCode(pub u8);

impl ReasonCode {
    /// Success (CONNACK, PUBACK, PUBREC, PUBREL, PUBCOMP, UNSUBACK, AUTH).
    pub const SUCCESS: ReasonCode = ReasonCode(0x00);
    /// Normal disconnection (DISCONNECT): close the connection normally, do not send the Will.
    pub const NORMAL_DISCONNECTION: ReasonCode = ReasonCode(0x00);
    /// Granted QoS 0 (SUBACK): the subscription is accepted with maximum QoS 0.
    pub const GRANTED_QOS_0: ReasonCode = ReasonCode(0x00);
    /// Granted QoS 1 (SUBACK): the subscription is accepted with maximum QoS 1.
    pub const GRANTED_QOS_1: ReasonCode = ReasonCode(0x01);
    /// Granted QoS 2 (SUBACK): the subscription is accepted with maximum QoS 2.
    pub const GRANTED_QOS_2: ReasonCode = ReasonCode(0x02);
    /// Disconnect with Will Message (DISCONNECT): the client wants its Will published.
    pub const DISCONNECT_WITH_WILL_MESSAGE: ReasonCode = ReasonCode(0x04);
    /// No matching subscribers (PUBACK, PUBREC): accepted, but nobody is subscribed.
    pub const NO_MATCHING_SUBSCRIBERS: ReasonCode = ReasonCode(0x10);
    /// No subscription existed (UNSUBACK): there was no matching subscription.
    pub const NO_SUBSCRIPTION_EXISTED: ReasonCode = ReasonCode(0x11);
    /// Continue authentication (AUTH): continue with another step.
    pub const CONTINUE_AUTHENTICATION: ReasonCode = ReasonCode(0x18);
    /// Re-authenticate (AUTH): the client starts a re-authentication.
    pub const RE_AUTHENTICATE: ReasonCode = ReasonCode(0x19);
    /// Unspecified error: the sender does not wish to reveal the reason, or none of the others apply.
    pub const UNSPECIFIED_ERROR: ReasonCode = ReasonCode(0x80);
    /// Malformed Packet: data within the packet could not be correctly parsed.
    pub const MALFORMED_PACKET: ReasonCode = ReasonCode(0x81);
    /// Protocol Error: data in the packet does not conform to this specification.
    pub const PROTOCOL_ERROR: ReasonCode = ReasonCode(0x82);
    /// Implementation specific error: valid, but not accepted by this implementation.
    pub const IMPLEMENTATION_SPECIFIC_ERROR: ReasonCode = ReasonCode(0x83);
    /// Unsupported Protocol Version (CONNACK): the server does not support this protocol level.
    pub const UNSUPPORTED_PROTOCOL_VERSION: ReasonCode = ReasonCode(0x84);
    /// Client Identifier not valid (CONNACK): the client id is valid UTF-8 but not allowed.
    pub const CLIENT_IDENTIFIER_NOT_VALID: ReasonCode = ReasonCode(0x85);
    /// Bad User Name or Password (CONNACK): the credentials were not accepted.
    pub const BAD_USER_NAME_OR_PASSWORD: ReasonCode = ReasonCode(0x86);
    /// Not authorized: the client is not authorized to do this.
    pub const NOT_AUTHORIZED: ReasonCode = ReasonCode(0x87);
    /// Server unavailable (CONNACK): the server is not available.
    pub const SERVER_UNAVAILABLE: ReasonCode = ReasonCode(0x88);
    /// Server busy: the server is busy, try again later.
    pub const SERVER_BUSY: ReasonCode = ReasonCode(0x89);
    /// Banned (CONNACK): this client has been banned by administrative action.
    pub const BANNED: ReasonCode = ReasonCode(0x8A);
    /// Server shutting down (DISCONNECT): the server is shutting down.
    pub const SERVER_SHUTTING_DOWN: ReasonCode = ReasonCode(0x8B);
    /// Bad authentication method: the authentication method is not supported or does not match.
    pub const BAD_AUTHENTICATION_METHOD: ReasonCode = ReasonCode(0x8C);
    /// Keep Alive timeout (DISCONNECT): nothing was received for 1.5 times the keep alive.
    pub const KEEP_ALIVE_TIMEOUT: ReasonCode = ReasonCode(0x8D);
    /// Session taken over (DISCONNECT): another connection using the same client id connected.
    pub const SESSION_TAKEN_OVER: ReasonCode = ReasonCode(0x8E);
    /// Topic Filter invalid: the topic filter is correctly formed but not accepted.
    pub const TOPIC_FILTER_INVALID: ReasonCode = ReasonCode(0x8F);
    /// Topic Name invalid: the topic name is correctly formed but not accepted.
    pub const TOPIC_NAME_INVALID: ReasonCode = ReasonCode(0x90);
    /// Packet Identifier in use: the packet identifier is already in use.
    pub const PACKET_IDENTIFIER_IN_USE: ReasonCode = ReasonCode(0x91);
    /// Packet Identifier not found: the packet identifier is not known.
    pub const PACKET_IDENTIFIER_NOT_FOUND: ReasonCode = ReasonCode(0x92);
    /// Receive Maximum exceeded (DISCONNECT): more QoS>0 publishes in flight than Receive Maximum.
    pub const RECEIVE_MAXIMUM_EXCEEDED: ReasonCode = ReasonCode(0x93);
    /// Topic Alias invalid (DISCONNECT): the topic alias is 0 or greater than the maximum.
    pub const TOPIC_ALIAS_INVALID: ReasonCode = ReasonCode(0x94);
    /// Packet too large: the packet exceeded the maximum permissible size.
    pub const PACKET_TOO_LARGE: ReasonCode = ReasonCode(0x95);
    /// Message rate too high (DISCONNECT): the received data rate is too high.
    pub const MESSAGE_RATE_TOO_HIGH: ReasonCode = ReasonCode(0x96);
    /// Quota exceeded: an implementation or administrative limit has been exceeded.
    pub const QUOTA_EXCEEDED: ReasonCode = ReasonCode(0x97);
    /// Administrative action (DISCONNECT): the connection is closed by administrative action.
    pub const ADMINISTRATIVE_ACTION: ReasonCode = ReasonCode(0x98);
    /// Payload format invalid: the payload does not match the Payload Format Indicator.
    pub const PAYLOAD_FORMAT_INVALID: ReasonCode = ReasonCode(0x99);
    /// Retain not supported: the server does not support retained messages.
    pub const RETAIN_NOT_SUPPORTED: ReasonCode = ReasonCode(0x9A);
    /// QoS not supported: the client asked for a QoS the server does not support.
    pub const QOS_NOT_SUPPORTED: ReasonCode = ReasonCode(0x9B);
    /// Use another server: the client should temporarily use another server.
    pub const USE_ANOTHER_SERVER: ReasonCode = ReasonCode(0x9C);
    /// Server moved: the client should permanently use another server.
    pub const SERVER_MOVED: ReasonCode = ReasonCode(0x9D);
    /// Shared Subscriptions not supported: the server does not support shared subscriptions.
    pub const SHARED_SUBSCRIPTIONS_NOT_SUPPORTED: ReasonCode = ReasonCode(0x9E);
    /// Connection rate exceeded: the connection rate limit has been exceeded.
    pub const CONNECTION_RATE_EXCEEDED: ReasonCode = ReasonCode(0x9F);
    /// Maximum connect time (DISCONNECT): the maximum connection time authorized was exceeded.
    pub const MAXIMUM_CONNECT_TIME: ReasonCode = ReasonCode(0xA0);
    /// Subscription Identifiers not supported: the server does not support subscription identifiers.
    pub const SUBSCRIPTION_IDENTIFIERS_NOT_SUPPORTED: ReasonCode = ReasonCode(0xA1);
    /// Wildcard Subscriptions not supported: the server does not support wildcard subscriptions.
    pub const WILDCARD_SUBSCRIPTIONS_NOT_SUPPORTED: ReasonCode = ReasonCode(0xA2);

    /// True for failure codes (0x80 and above).
    pub fn is_error(self) -> bool {
        self.0 >= 0x80
    }

    /// Maps an MQTT 5 CONNACK reason code to the nearest MQTT 3.1.1 CONNACK return code.
    ///
    /// Malformed packets and protocol errors have no v3 return code: a v3 server closes the
    /// connection without a CONNACK, so callers should not send one for those.
    pub fn to_connack_v3(self) -> u8 {
        match self {
            ReasonCode::SUCCESS => connack_v3::ACCEPTED,
            ReasonCode::UNSUPPORTED_PROTOCOL_VERSION => connack_v3::UNACCEPTABLE_PROTOCOL_VERSION,
            ReasonCode::CLIENT_IDENTIFIER_NOT_VALID => connack_v3::IDENTIFIER_REJECTED,
            // 3.1.1 code 4 says the credentials are *malformed*; wrong ones are "not authorized"
            // (5), which is also what mosquitto answers.
            ReasonCode::BAD_AUTHENTICATION_METHOD => connack_v3::BAD_USERNAME_OR_PASSWORD,
            ReasonCode::BAD_USER_NAME_OR_PASSWORD
            | ReasonCode::NOT_AUTHORIZED
            | ReasonCode::BANNED => connack_v3::NOT_AUTHORIZED,
            // Busy, shutting down, moved, rate limits, quotas and anything unspecified all mean
            // "try later" to a v3 client, which is what Server Unavailable says.
            _ => connack_v3::SERVER_UNAVAILABLE,
        }
    }

    /// The spec's name of a well-known code, for logs; "Unknown" otherwise.
    pub fn name(self) -> &'static str {
        match self.0 {
            0x00 => "Success",
            0x01 => "Granted QoS 1",
            0x02 => "Granted QoS 2",
            0x04 => "Disconnect with Will Message",
            0x10 => "No matching subscribers",
            0x11 => "No subscription existed",
            0x18 => "Continue authentication",
            0x19 => "Re-authenticate",
            0x80 => "Unspecified error",
            0x81 => "Malformed Packet",
            0x82 => "Protocol Error",
            0x83 => "Implementation specific error",
            0x84 => "Unsupported Protocol Version",
            0x85 => "Client Identifier not valid",
            0x86 => "Bad User Name or Password",
            0x87 => "Not authorized",
            0x88 => "Server unavailable",
            0x89 => "Server busy",
            0x8A => "Banned",
            0x8B => "Server shutting down",
            0x8C => "Bad authentication method",
            0x8D => "Keep Alive timeout",
            0x8E => "Session taken over",
            0x8F => "Topic Filter invalid",
            0x90 => "Topic Name invalid",
            0x91 => "Packet Identifier in use",
            0x92 => "Packet Identifier not found",
            0x93 => "Receive Maximum exceeded",
            0x94 => "Topic Alias invalid",
            0x95 => "Packet too large",
            0x96 => "Message rate too high",
            0x97 => "Quota exceeded",
            0x98 => "Administrative action",
            0x99 => "Payload format invalid",
            0x9A => "Retain not supported",
            0x9B => "QoS not supported",
            0x9C => "Use another server",
            0x9D => "Server moved",
            0x9E => "Shared Subscriptions not supported",
            0x9F => "Connection rate exceeded",
            0xA0 => "Maximum connect time",
            0xA1 => "Subscription Identifiers not supported",
            0xA2 => "Wildcard Subscriptions not supported",
            _ => "Unknown",
        }
    }
}

/// MQTT 3.1 / 3.1.1 CONNACK return codes (spec 3.1.1 section 3.2.2.3).
pub mod connack_v3 {
    /// Connection accepted.
    pub const ACCEPTED: u8 = 0;
    /// The server does not support the requested protocol level.
    pub const UNACCEPTABLE_PROTOCOL_VERSION: u8 = 1;
    /// The client identifier is correct UTF-8 but not allowed by the server.
    pub const IDENTIFIER_REJECTED: u8 = 2;
    /// The network connection is up but the MQTT service is unavailable.
    pub const SERVER_UNAVAILABLE: u8 = 3;
    /// The user name or password is malformed or wrong.
    pub const BAD_USERNAME_OR_PASSWORD: u8 = 4;
    /// The client is not authorized to connect.
    pub const NOT_AUTHORIZED: u8 = 5;
}
