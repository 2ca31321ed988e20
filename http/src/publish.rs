//! The REST publish bodies: `POST /v1/publish` and `POST /v1/publish/batch`, parsed and
//! validated into what the broker's publish path takes.
//!
//! ```json
//! {"topic": "devices/sensor-1/data", "payload": {"temp": 23.5}, "qos": 1, "retain": false}
//! ```
//!
//! A string `payload` is sent as its UTF-8 bytes; any other JSON value as its JSON text, exactly
//! as the client wrote it; `payload_base64` carries binary. Unknown fields are refused, so a
//! typo (`"retian"`) is a 400 rather than a silently different publish.

use std::fmt;

use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine as _;
use bytes::Bytes;
use ringmq_router::topic::{validate_topic_name, TopicError};
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;

/// Standard-alphabet base64, with or without `=` padding (clients differ).
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Longest MQTT string or binary field (content type, properties, correlation data): they
/// carry a 16-bit length prefix on the wire.
pub const MQTT_FIELD_BYTES_MAX: usize = 65_535;

/// Most user properties on one REST publish.
pub const USER_PROPERTIES_MAX: usize = 64;

/// Limits applied while parsing; the broker fills them from its configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PublishLimits {
    /// Largest payload in bytes, after base64 decoding (413 above it).
    pub payload_bytes_max: usize,
    /// Most topic levels, as for MQTT publishers.
    pub topic_levels_max: usize,
    /// Most messages in one batch.
    pub batch_max: usize,
}

impl Default for PublishLimits {
    /// 256 KiB payloads (the MQTT cap), 32 topic levels, 100 messages per batch.
    fn default() -> PublishLimits {
        PublishLimits {
            payload_bytes_max: 256 * 1024,
            topic_levels_max: 32,
            batch_max: 100,
        }
    }
}

/// A validated REST publish, ready for the broker's publish path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublishRequest {
    /// The topic name (no wildcards).
    pub topic: String,
    /// The payload bytes.
    pub payload: Bytes,
    /// 0 or 1.
    pub qos: u8,
    /// The retain flag.
    pub retain: bool,
    /// MQTT 5 content type.
    pub content_type: Option<String>,
    /// MQTT 5 message expiry interval in seconds.
    pub message_expiry: Option<u32>,
    /// MQTT 5 user properties, in the order given; at most [`USER_PROPERTIES_MAX`].
    pub user_properties: Vec<(String, String)>,
    /// MQTT 5 response topic (no wildcards).
    pub response_topic: Option<String>,
    /// MQTT 5 correlation data.
    pub correlation_data: Option<Bytes>,
}

/// Why a publish body was refused; `Display` is the human detail for the error response.
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
pub enum PublishError {
    /// The body is not JSON of the expected shape (serde's message: position, unknown field...).
    #[error("invalid JSON: {0}")]
    Json(String),
    /// The topic is not a valid MQTT topic name.
    #[error("invalid topic: {0}")]
    Topic(TopicError),
    /// The response topic is not a valid MQTT topic name.
    #[error("invalid response_topic: {0}")]
    ResponseTopic(TopicError),
    /// `qos` is 2, which needs a session REST does not have.
    #[error("qos 2 is not offered over REST; use 0 or 1")]
    QosTwo,
    /// `qos` is not 0, 1 or 2.
    #[error("qos must be 0 or 1, got {0}")]
    QosInvalid(i64),
    /// Neither `payload` nor `payload_base64`, or both.
    #[error("exactly one of payload and payload_base64 is required")]
    PayloadChoice,
    /// Both `correlation_data` and `correlation_data_base64`.
    #[error("at most one of correlation_data and correlation_data_base64 is allowed")]
    CorrelationChoice,
    /// A `*_base64` field is not valid base64.
    #[error("{0} is not valid base64")]
    Base64(&'static str),
    /// An MQTT string field contains U+0000 or is longer than 65535 bytes.
    #[error("{0} must be at most 65535 bytes and contain no U+0000")]
    Field(&'static str),
    /// The payload is larger than the limit (413).
    #[error("payload is larger than {limit} bytes")]
    TooLarge {
        /// The configured `payload_bytes_max`.
        limit: usize,
    },
    /// A batch with no messages.
    #[error("messages must not be empty")]
    BatchEmpty,
    /// A batch with more than `batch_max` messages.
    #[error("more than {limit} messages in one batch")]
    BatchTooLarge {
        /// The configured `batch_max`.
        limit: usize,
    },
}

impl PublishError {
    /// The HTTP status to answer with: 413 for an oversized payload, 400 otherwise.
    pub fn status(&self) -> u16 {
        match self {
            PublishError::TooLarge { .. } => 413,
            _ => 400,
        }
    }

    /// The human-readable detail for the error body.
    pub fn detail(&self) -> String {
        self.to_string()
    }
}

/// The body of `POST /v1/publish`, as sent.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPublish {
    topic: String,
    // `null` is a payload too (the text `null`), so absence is told apart by hand.
    #[serde(default, deserialize_with = "present")]
    payload: Option<Box<RawValue>>,
    #[serde(default)]
    payload_base64: Option<String>,
    #[serde(default)]
    qos: Option<i64>,
    #[serde(default)]
    retain: bool,
    #[serde(default)]
    content_type: Option<String>,
    #[serde(default)]
    message_expiry: Option<u32>,
    #[serde(default)]
    user_properties: Option<UserProperties>,
    #[serde(default)]
    response_topic: Option<String>,
    #[serde(default)]
    correlation_data: Option<String>,
    #[serde(default)]
    correlation_data_base64: Option<String>,
}

/// Deserializes a field that is present, whatever its value (including `null`).
fn present<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Box<RawValue>>, D::Error> {
    Box::<RawValue>::deserialize(deserializer).map(Some)
}

/// User properties as an object (`{"k": "v"}`) or a list of pairs (`[["k", "v"]]`), which can
/// repeat a key as MQTT allows; bounded by [`USER_PROPERTIES_MAX`] while parsing.
struct UserProperties(Vec<(String, String)>);

impl<'de> Deserialize<'de> for UserProperties {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<UserProperties, D::Error> {
        deserializer.deserialize_any(UserPropertiesVisitor)
    }
}

/// Visits either form of user properties.
struct UserPropertiesVisitor;

impl<'de> Visitor<'de> for UserPropertiesVisitor {
    type Value = UserProperties;

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("an object of strings or an array of [key, value] string pairs")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<UserProperties, A::Error> {
        let mut pairs = Vec::new();
        while let Some(pair) = map.next_entry::<String, String>()? {
            push_property(&mut pairs, pair)?;
        }
        Ok(UserProperties(pairs))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<UserProperties, A::Error> {
        let mut pairs = Vec::new();
        while let Some(pair) = seq.next_element::<(String, String)>()? {
            push_property(&mut pairs, pair)?;
        }
        Ok(UserProperties(pairs))
    }
}

/// Adds a property, refusing the one past the bound before the rest are even read.
fn push_property<E: de::Error>(
    pairs: &mut Vec<(String, String)>,
    pair: (String, String),
) -> Result<(), E> {
    if pairs.len() == USER_PROPERTIES_MAX {
        return Err(E::custom(format_args!(
            "more than {USER_PROPERTIES_MAX} user_properties"
        )));
    }
    pairs.push(pair);
    Ok(())
}

/// Parses and validates the body of `POST /v1/publish`.
pub fn parse_publish(body: &[u8], limits: &PublishLimits) -> Result<PublishRequest, PublishError> {
    // A derived struct also deserializes from an array, by position; only an object is meant.
    if body.trim_ascii_start().first() == Some(&b'[') {
        return Err(PublishError::Json(
            "expected a JSON object, found an array".to_string(),
        ));
    }
    let raw: RawPublish =
        serde_json::from_slice(body).map_err(|error| PublishError::Json(error.to_string()))?;
    validate(raw, limits)
}

/// The body of `POST /v1/publish/batch`: the messages, kept raw so each is judged on its own.
struct RawBatch {
    /// Up to `batch_max` messages.
    messages: Vec<Box<RawValue>>,
    /// Whether there were more than `batch_max` (the rest were skipped, not stored).
    overflow: bool,
}

/// Parses the body of `POST /v1/publish/batch` (`{"messages": [...]}`).
///
/// The outer error is for the whole request (bad JSON, no or too many messages); each inner
/// result is one message's, in order, so one bad message does not sink the others.
pub fn parse_batch(
    body: &[u8],
    limits: &PublishLimits,
) -> Result<Vec<Result<PublishRequest, PublishError>>, PublishError> {
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    let batch = deserializer
        .deserialize_map(BatchVisitor {
            batch_max: limits.batch_max,
        })
        .and_then(|batch| deserializer.end().map(|()| batch))
        .map_err(|error| PublishError::Json(error.to_string()))?;
    if batch.overflow {
        return Err(PublishError::BatchTooLarge {
            limit: limits.batch_max,
        });
    }
    if batch.messages.is_empty() {
        return Err(PublishError::BatchEmpty);
    }
    Ok(batch
        .messages
        .iter()
        .map(|message| parse_publish(message.get().as_bytes(), limits))
        .collect())
}

/// Visits the batch object: exactly one field, `messages`.
struct BatchVisitor {
    /// Most messages kept.
    batch_max: usize,
}

impl<'de> Visitor<'de> for BatchVisitor {
    type Value = RawBatch;

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("an object with a `messages` array")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawBatch, A::Error> {
        let mut batch = None;
        while let Some(key) = map.next_key::<String>()? {
            if key != "messages" {
                return Err(de::Error::unknown_field(&key, &["messages"]));
            }
            if batch.is_some() {
                return Err(de::Error::duplicate_field("messages"));
            }
            batch = Some(map.next_value_seed(MessagesSeed {
                batch_max: self.batch_max,
            })?);
        }
        batch.ok_or_else(|| de::Error::missing_field("messages"))
    }
}

/// Reads the `messages` array, storing at most `batch_max` entries.
struct MessagesSeed {
    /// Most messages kept.
    batch_max: usize,
}

impl<'de> de::DeserializeSeed<'de> for MessagesSeed {
    type Value = RawBatch;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<RawBatch, D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for MessagesSeed {
    type Value = RawBatch;

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("an array of messages")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<RawBatch, A::Error> {
        let mut batch = RawBatch {
            messages: Vec::with_capacity(self.batch_max.min(1024)),
            overflow: false,
        };
        while batch.messages.len() < self.batch_max {
            match seq.next_element::<Box<RawValue>>()? {
                Some(message) => batch.messages.push(message),
                None => return Ok(batch),
            }
        }
        // Past the bound: skip the rest so the JSON is still checked, but keep nothing.
        while seq.next_element::<IgnoredAny>()?.is_some() {
            batch.overflow = true;
        }
        Ok(batch)
    }
}

/// Applies every rule to a deserialized publish.
fn validate(raw: RawPublish, limits: &PublishLimits) -> Result<PublishRequest, PublishError> {
    validate_topic_name(&raw.topic, limits.topic_levels_max).map_err(PublishError::Topic)?;
    let qos = match raw.qos.unwrap_or(0) {
        0 => 0,
        1 => 1,
        2 => return Err(PublishError::QosTwo),
        other => return Err(PublishError::QosInvalid(other)),
    };
    let payload_max = limits.payload_bytes_max;
    let too_large = PublishError::TooLarge { limit: payload_max };
    let payload = match (raw.payload, raw.payload_base64) {
        (Some(value), None) => {
            let text: String = if value.get().starts_with('"') {
                // A JSON string: the payload is the text it encodes, not its quoted form.
                serde_json::from_str(value.get())
                    .map_err(|error| PublishError::Json(error.to_string()))?
            } else {
                String::from(Box::<str>::from(value))
            };
            if text.len() > payload_max {
                return Err(too_large);
            }
            Bytes::from(text)
        }
        (None, Some(encoded)) => {
            // Refuse before decoding: 4 base64 characters carry at most 3 bytes.
            if encoded.len() / 4 * 3 > payload_max.saturating_add(3) {
                return Err(too_large);
            }
            let decoded = decode_base64(&encoded, "payload_base64")?;
            if decoded.len() > payload_max {
                return Err(too_large);
            }
            decoded
        }
        _ => return Err(PublishError::PayloadChoice),
    };
    if let Some(content_type) = &raw.content_type {
        check_field(content_type, "content_type")?;
    }
    let user_properties = raw.user_properties.map_or_else(Vec::new, |list| list.0);
    for (key, value) in &user_properties {
        check_field(key, "user_properties key")?;
        check_field(value, "user_properties value")?;
    }
    if let Some(response_topic) = &raw.response_topic {
        validate_topic_name(response_topic, limits.topic_levels_max)
            .map_err(PublishError::ResponseTopic)?;
    }
    let correlation_data = match (raw.correlation_data, raw.correlation_data_base64) {
        (Some(_), Some(_)) => return Err(PublishError::CorrelationChoice),
        (Some(text), None) => Some(Bytes::from(text)),
        (None, Some(encoded)) => Some(decode_base64(&encoded, "correlation_data_base64")?),
        (None, None) => None,
    };
    if correlation_data
        .as_ref()
        .is_some_and(|data| data.len() > MQTT_FIELD_BYTES_MAX)
    {
        return Err(PublishError::Field("correlation_data"));
    }
    Ok(PublishRequest {
        topic: raw.topic,
        payload,
        qos,
        retain: raw.retain,
        content_type: raw.content_type,
        message_expiry: raw.message_expiry,
        user_properties,
        response_topic: raw.response_topic,
        correlation_data,
    })
}

/// Decodes a base64 field.
fn decode_base64(encoded: &str, field: &'static str) -> Result<Bytes, PublishError> {
    BASE64
        .decode(encoded)
        .map(Bytes::from)
        .map_err(|_| PublishError::Base64(field))
}

/// Checks an MQTT UTF-8 string field: at most 65535 bytes and no U+0000 (MQTT 5 1.5.4).
fn check_field(text: &str, field: &'static str) -> Result<(), PublishError> {
    if text.len() > MQTT_FIELD_BYTES_MAX || text.contains('\0') {
        return Err(PublishError::Field(field));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn limits() -> PublishLimits {
        PublishLimits::default()
    }

    fn parse(body: &str) -> Result<PublishRequest, PublishError> {
        parse_publish(body.as_bytes(), &limits())
    }

    fn payload_of(body: &str) -> Bytes {
        parse(body).unwrap().payload
    }

    #[test]
    fn the_blog_example() {
        let request = parse(
            r#"{ "topic": "devices/sensor-1/data", "payload": { "temp": 23.5 }, "qos": 1, "retain": false }"#,
        )
        .unwrap();
        assert_eq!(
            request,
            PublishRequest {
                topic: "devices/sensor-1/data".to_string(),
                payload: Bytes::from_static(b"{ \"temp\": 23.5 }"),
                qos: 1,
                retain: false,
                content_type: None,
                message_expiry: None,
                user_properties: Vec::new(),
                response_topic: None,
                correlation_data: None,
            }
        );
    }

    #[test]
    fn defaults_and_payload_forms() {
        let request = parse(r#"{"topic":"a/b","payload":"hello"}"#).unwrap();
        assert_eq!(request.payload, Bytes::from_static(b"hello"));
        assert_eq!((request.qos, request.retain), (0, false));
        // JSON values other than strings are sent as their JSON text, exactly as written.
        assert_eq!(
            payload_of(r#"{"topic":"t","payload":[1, 2,3]}"#),
            "[1, 2,3]"
        );
        assert_eq!(payload_of(r#"{"topic":"t","payload":42}"#), "42");
        assert_eq!(payload_of(r#"{"topic":"t","payload":1.50e3}"#), "1.50e3");
        assert_eq!(
            payload_of(r#"{"topic":"t","payload":123456789012345678901234567890}"#),
            "123456789012345678901234567890"
        );
        assert_eq!(payload_of(r#"{"topic":"t","payload":true}"#), "true");
        assert_eq!(payload_of(r#"{"topic":"t","payload":null}"#), "null");
        assert_eq!(
            payload_of(r#"{"topic":"t","payload":{"z":1,"a":{"b":[]}}}"#),
            r#"{"z":1,"a":{"b":[]}}"#
        );
        assert_eq!(payload_of(r#"{"topic":"t","payload":""}"#), "");
        // Escapes in a string payload are decoded.
        assert_eq!(
            payload_of(r#"{"topic":"t","payload":"line\nq\"\u00e9\ud83d\ude80"}"#),
            "line\nq\"é🚀"
        );
        assert_eq!(
            payload_of(r#"{"topic":"t","payload_base64":"AAEC/w=="}"#),
            &[0u8, 1, 2, 255][..]
        );
        assert_eq!(
            payload_of(r#"{"topic":"t","payload_base64":"AAEC/w"}"#),
            &[0u8, 1, 2, 255][..]
        );
        assert_eq!(payload_of(r#"{"topic":"t","payload_base64":""}"#), "");
        assert!(
            parse(r#"{"topic":"t","payload":"x","retain":true}"#)
                .unwrap()
                .retain
        );
    }

    #[test]
    fn unicode_topics_and_payloads() {
        let request = parse(r#"{"topic":"capteurs/salle-é/温度","payload":"23,5 °C"}"#).unwrap();
        assert_eq!(request.topic, "capteurs/salle-é/温度");
        assert_eq!(request.payload, "23,5 °C".as_bytes());
        let request = parse(r#"{"topic":"\u00e9/x","payload":"\u0000"}"#).unwrap();
        assert_eq!(request.topic, "é/x");
        // U+0000 is fine in a payload (it is bytes), not in a topic.
        assert_eq!(request.payload, &b"\0"[..]);
    }

    #[test]
    fn mqtt5_fields() {
        let request = parse(
            r#"{"topic":"req/1","payload":"p","content_type":"application/json",
"message_expiry":3600,"user_properties":{"b":"2","a":"1"},"response_topic":"resp/1",
"correlation_data":"abc"}"#,
        )
        .unwrap();
        assert_eq!(request.content_type.as_deref(), Some("application/json"));
        assert_eq!(request.message_expiry, Some(3600));
        assert_eq!(
            request.user_properties,
            [
                ("b".to_string(), "2".to_string()),
                ("a".to_string(), "1".to_string())
            ]
        );
        assert_eq!(request.response_topic.as_deref(), Some("resp/1"));
        assert_eq!(request.correlation_data, Some(Bytes::from_static(b"abc")));

        let request = parse(
            r#"{"topic":"t","payload":1,"user_properties":[["k","v1"],["k","v2"]],
"correlation_data_base64":"3q2+7w==","message_expiry":4294967295}"#,
        )
        .unwrap();
        assert_eq!(
            request.user_properties,
            [
                ("k".to_string(), "v1".to_string()),
                ("k".to_string(), "v2".to_string())
            ]
        );
        assert_eq!(
            request.correlation_data,
            Some(Bytes::from_static(&[0xde, 0xad, 0xbe, 0xef]))
        );
        assert_eq!(request.message_expiry, Some(u32::MAX));
        assert!(parse(r#"{"topic":"t","payload":1,"user_properties":{}}"#)
            .unwrap()
            .user_properties
            .is_empty());
    }

    #[test]
    fn json_errors_carry_serde_detail() {
        for (body, needle) in [
            ("", "EOF"),
            ("{", "EOF"),
            ("[]", "expected a JSON object"),
            (r#" ["t", "x"]"#, "expected a JSON object"),
            ("7", "invalid type"),
            (r#"{"payload":"x"}"#, "missing field `topic`"),
            (
                r#"{"topic":"t","payload":"x","retian":true}"#,
                "unknown field `retian`",
            ),
            (r#"{"topic":"t","payload":"x","qos":"1"}"#, "invalid type"),
            (r#"{"topic":"t","payload":"x","qos":1.0}"#, "invalid type"),
            (
                r#"{"topic":"t","payload":"x","retain":"yes"}"#,
                "invalid type",
            ),
            (
                r#"{"topic":"t","payload":"x","message_expiry":-1}"#,
                "invalid value",
            ),
            (
                r#"{"topic":"t","payload":"x","message_expiry":4294967296}"#,
                "invalid value",
            ),
            (r#"{"topic":"t","payload":"x","message_expiry":null}"#, ""),
            (
                r#"{"topic":"t","payload":"x","user_properties":{"k":1}}"#,
                "invalid type",
            ),
            (
                r#"{"topic":"t","payload":"x","user_properties":[["k"]]}"#,
                "invalid length",
            ),
            (
                r#"{"topic":"t","payload":"x","user_properties":"k=v"}"#,
                "an object of strings",
            ),
            (
                r#"{"topic":"t","payload":"x","payload_base64":1}"#,
                "invalid type",
            ),
            (r#"{"topic":1,"payload":"x"}"#, "invalid type"),
            (
                r#"{"topic":"t","topic":"u","payload":"x"}"#,
                "duplicate field `topic`",
            ),
            (
                r#"{"topic":"t","payload":"x"} trailing"#,
                "trailing characters",
            ),
        ] {
            match parse(body) {
                Err(PublishError::Json(detail)) => {
                    assert!(detail.contains(needle), "{body}: {detail}");
                    assert_eq!(PublishError::Json(detail).status(), 400);
                }
                // `null` for an optional field is allowed.
                Ok(_) if needle.is_empty() => {}
                other => panic!("{body}: {other:?}"),
            }
        }
    }

    #[test]
    fn validation_errors() {
        for (body, expected) in [
            (
                r#"{"topic":"","payload":"x"}"#,
                PublishError::Topic(TopicError::Empty),
            ),
            (
                r#"{"topic":"a/+/b","payload":"x"}"#,
                PublishError::Topic(TopicError::Wildcard),
            ),
            (
                r#"{"topic":"a/#","payload":"x"}"#,
                PublishError::Topic(TopicError::Wildcard),
            ),
            (
                r#"{"topic":"a\u0000b","payload":"x"}"#,
                PublishError::Topic(TopicError::NullChar),
            ),
            (
                r#"{"topic":"t","payload":"x","qos":2}"#,
                PublishError::QosTwo,
            ),
            (
                r#"{"topic":"t","payload":"x","qos":3}"#,
                PublishError::QosInvalid(3),
            ),
            (
                r#"{"topic":"t","payload":"x","qos":-1}"#,
                PublishError::QosInvalid(-1),
            ),
            (r#"{"topic":"t"}"#, PublishError::PayloadChoice),
            (
                r#"{"topic":"t","payload":"x","payload_base64":"eA=="}"#,
                PublishError::PayloadChoice,
            ),
            (
                r#"{"topic":"t","payload_base64":"not base64!"}"#,
                PublishError::Base64("payload_base64"),
            ),
            (
                r#"{"topic":"t","payload_base64":"eA=== "}"#,
                PublishError::Base64("payload_base64"),
            ),
            (
                r#"{"topic":"t","payload":"x","correlation_data_base64":"%%"}"#,
                PublishError::Base64("correlation_data_base64"),
            ),
            (
                r#"{"topic":"t","payload":"x","correlation_data":"a","correlation_data_base64":"YQ=="}"#,
                PublishError::CorrelationChoice,
            ),
            (
                r#"{"topic":"t","payload":"x","response_topic":"r/#"}"#,
                PublishError::ResponseTopic(TopicError::Wildcard),
            ),
            (
                r#"{"topic":"t","payload":"x","response_topic":""}"#,
                PublishError::ResponseTopic(TopicError::Empty),
            ),
            (
                r#"{"topic":"t","payload":"x","content_type":"a\u0000"}"#,
                PublishError::Field("content_type"),
            ),
            (
                r#"{"topic":"t","payload":"x","user_properties":{"k\u0000":"v"}}"#,
                PublishError::Field("user_properties key"),
            ),
            (
                r#"{"topic":"t","payload":"x","user_properties":[["k","\u0000"]]}"#,
                PublishError::Field("user_properties value"),
            ),
        ] {
            let error = parse(body).unwrap_err();
            assert_eq!(error, expected, "{body}");
            assert_eq!(error.status(), 400);
        }
        assert_eq!(
            PublishError::QosTwo.detail(),
            "qos 2 is not offered over REST; use 0 or 1"
        );
    }

    #[test]
    fn topic_levels_use_the_configured_limit() {
        let tight = PublishLimits {
            topic_levels_max: 3,
            ..limits()
        };
        assert!(parse_publish(br#"{"topic":"a/b/c","payload":""}"#, &tight).is_ok());
        assert_eq!(
            parse_publish(br#"{"topic":"a/b/c/d","payload":""}"#, &tight),
            Err(PublishError::Topic(TopicError::TooManyLevels {
                levels: 4,
                max: 3
            }))
        );
        assert_eq!(
            parse_publish(
                br#"{"topic":"a","payload":"","response_topic":"a/b/c/d"}"#,
                &tight
            ),
            Err(PublishError::ResponseTopic(TopicError::TooManyLevels {
                levels: 4,
                max: 3
            }))
        );
    }

    #[test]
    fn payload_limit_boundary_256_kib() {
        let max = 256 * 1024;
        let body = |payload: &str| format!(r#"{{"topic":"t","payload":"{payload}"}}"#);
        assert_eq!(parse(&body(&"a".repeat(max))).unwrap().payload.len(), max);
        let error = parse(&body(&"a".repeat(max + 1))).unwrap_err();
        assert_eq!(error, PublishError::TooLarge { limit: max });
        assert_eq!(error.status(), 413);
        // The limit is on bytes, not characters: 'é' is two bytes.
        assert!(parse(&body(&"é".repeat(max / 2))).is_ok());
        assert_eq!(
            parse(&body(&format!("{}é", "a".repeat(max - 1)))),
            Err(PublishError::TooLarge { limit: max })
        );
        // And on the decoded string, not the escaped text.
        assert!(parse(&body(&"\\n".repeat(max))).is_ok());

        let encoded = |length: usize| {
            format!(
                r#"{{"topic":"t","payload_base64":"{}"}}"#,
                base64::engine::general_purpose::STANDARD.encode(vec![7u8; length])
            )
        };
        assert_eq!(parse(&encoded(max)).unwrap().payload.len(), max);
        assert_eq!(
            parse(&encoded(max + 1)),
            Err(PublishError::TooLarge { limit: max })
        );
        assert_eq!(
            parse(&encoded(max * 4)),
            Err(PublishError::TooLarge { limit: max })
        );

        let array = |count: usize| {
            // `[0,0,...,0]` is 2 * count + 1 bytes.
            format!(
                r#"{{"topic":"t","payload":[{}]}}"#,
                vec!["0"; count].join(",")
            )
        };
        assert!(parse(&array(max / 2 - 1)).is_ok());
        assert_eq!(
            parse(&array(max / 2)),
            Err(PublishError::TooLarge { limit: max })
        );
    }

    #[test]
    fn mqtt_field_bounds() {
        let long = "x".repeat(MQTT_FIELD_BYTES_MAX + 1);
        assert_eq!(
            parse(&format!(
                r#"{{"topic":"t","payload":"","content_type":"{long}"}}"#
            )),
            Err(PublishError::Field("content_type"))
        );
        assert_eq!(
            parse(&format!(
                r#"{{"topic":"t","payload":"","correlation_data":"{long}"}}"#
            )),
            Err(PublishError::Field("correlation_data"))
        );
        let ok = "x".repeat(MQTT_FIELD_BYTES_MAX);
        assert!(parse(&format!(
            r#"{{"topic":"t","payload":"","content_type":"{ok}"}}"#
        ))
        .is_ok());

        let properties = |count: usize| {
            let pairs: Vec<String> = (0..count).map(|i| format!(r#"["k{i}","v"]"#)).collect();
            format!(
                r#"{{"topic":"t","payload":"","user_properties":[{}]}}"#,
                pairs.join(",")
            )
        };
        assert_eq!(
            parse(&properties(USER_PROPERTIES_MAX))
                .unwrap()
                .user_properties
                .len(),
            USER_PROPERTIES_MAX
        );
        match parse(&properties(USER_PROPERTIES_MAX + 1)) {
            Err(PublishError::Json(detail)) => {
                assert!(detail.contains("more than 64 user_properties"), "{detail}")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn batches() {
        let results = parse_batch(
            br#"{"messages":[{"topic":"a","payload":"1"},{"topic":"b/#","payload":"2"},
{"topic":"c","payload":3,"qos":1},{"bogus":true},{"topic":"d","payload_base64":"!!"}]}"#,
            &limits(),
        )
        .unwrap();
        assert_eq!(results.len(), 5);
        assert_eq!(results[0].as_ref().unwrap().topic, "a");
        assert_eq!(results[1], Err(PublishError::Topic(TopicError::Wildcard)));
        assert_eq!(results[2].as_ref().unwrap().payload, "3");
        assert_eq!(results[2].as_ref().unwrap().qos, 1);
        assert!(
            matches!(&results[3], Err(PublishError::Json(detail)) if detail.contains("unknown field `bogus`"))
        );
        assert_eq!(results[4], Err(PublishError::Base64("payload_base64")));
    }

    #[test]
    fn batch_whole_request_errors() {
        let three = PublishLimits {
            batch_max: 3,
            ..limits()
        };
        let messages = |count: usize| {
            format!(
                r#"{{"messages":[{}]}}"#,
                vec![r#"{"topic":"t","payload":"x"}"#; count].join(",")
            )
        };
        assert_eq!(
            parse_batch(messages(3).as_bytes(), &three).unwrap().len(),
            3
        );
        assert_eq!(
            parse_batch(messages(4).as_bytes(), &three),
            Err(PublishError::BatchTooLarge { limit: 3 })
        );
        assert_eq!(
            parse_batch(messages(0).as_bytes(), &three),
            Err(PublishError::BatchEmpty)
        );
        for (body, needle) in [
            ("", "EOF"),
            ("[]", "an object with a `messages` array"),
            ("{}", "missing field `messages`"),
            (r#"{"messages":{}}"#, "an array of messages"),
            (r#"{"messages":[],"extra":1}"#, "unknown field `extra`"),
            (
                r#"{"messages":[],"messages":[]}"#,
                "duplicate field `messages`",
            ),
            (r#"{"messages":[1,2,3,4,5,{]}"#, "key must be a string"),
            (r#"{"messages":[]} x"#, "trailing characters"),
        ] {
            match parse_batch(body.as_bytes(), &three) {
                Err(PublishError::Json(detail)) => {
                    assert!(detail.contains(needle), "{body}: {detail}")
                }
                other => panic!("{body}: {other:?}"),
            }
        }
        // Malformed JSON past the bound is still a JSON error, not a count error.
        assert!(matches!(
            parse_batch(br#"{"messages":[1,2,3,4,5,"#, &three),
            Err(PublishError::Json(_))
        ));
        // A non-object message is that message's error only.
        let results =
            parse_batch(br#"{"messages":[7,{"topic":"t","payload":"x"}]}"#, &three).unwrap();
        assert!(matches!(results[0], Err(PublishError::Json(_))));
        assert!(results[1].is_ok());
    }

    proptest! {
        #[test]
        fn string_payloads_round_trip(topic in "[a-zA-Z0-9é温/_-]{1,30}", payload in "\\PC{0,50}", qos in 0u8..2, retain: bool) {
            prop_assume!(topic.split('/').count() <= 32);
            let body = serde_json::json!({"topic": topic, "payload": payload, "qos": qos, "retain": retain});
            let request = parse_publish(body.to_string().as_bytes(), &limits()).unwrap();
            prop_assert_eq!(request.topic, topic);
            prop_assert_eq!(request.payload, Bytes::from(payload));
            prop_assert_eq!((request.qos, request.retain), (qos, retain));
        }

        #[test]
        fn arbitrary_bodies_never_panic(body in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = parse_publish(&body, &limits());
            let _ = parse_batch(&body, &limits());
        }
    }
}
