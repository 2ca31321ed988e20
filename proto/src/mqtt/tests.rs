//! Codec tests: property-based round trips for every packet type and version, streaming
//! (byte-at-a-time) decoding, hostile input, and fixed byte vectors from real clients and the spec.

use bytes::{Bytes, BytesMut};
use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;

use crate::mqtt::*;

/// Packet size limit used by the tests, in bytes.
const PACKET_SIZE_MAX: u32 = 1 << 20;

const V31: ProtocolVersion = ProtocolVersion::V31;
const V311: ProtocolVersion = ProtocolVersion::V311;
const V5: ProtocolVersion = ProtocolVersion::V5;
const ALL_VERSIONS: [ProtocolVersion; 3] = [V31, V311, V5];

// ---------------------------------------------------------------------------------------------
// Strategies

fn arb_version() -> impl Strategy<Value = ProtocolVersion> {
    prop_oneof![Just(V31), Just(V311), Just(V5)]
}

fn arb_str() -> impl Strategy<Value = Str> {
    "[a-zA-Z0-9/+#$ _é€]{0,12}".prop_map(Str::from)
}

fn arb_nonempty_str() -> impl Strategy<Value = Str> {
    "[a-zA-Z0-9/ _é€]{1,12}".prop_map(Str::from)
}

fn arb_bytes() -> impl Strategy<Value = Bytes> {
    vec(any::<u8>(), 0..24).prop_map(Bytes::from)
}

fn arb_user_properties() -> impl Strategy<Value = Vec<(Str, Str)>> {
    vec((arb_str(), arb_str()), 0..3)
}

fn arb_qos() -> impl Strategy<Value = QoS> {
    prop_oneof![
        Just(QoS::AtMostOnce),
        Just(QoS::AtLeastOnce),
        Just(QoS::ExactlyOnce)
    ]
}

fn arb_packet_id() -> impl Strategy<Value = u16> {
    1..=u16::MAX
}

fn arb_flag() -> impl Strategy<Value = Option<u8>> {
    option::of(0u8..=1)
}

fn arb_reason() -> impl Strategy<Value = ReasonCode> {
    any::<u8>().prop_map(ReasonCode)
}

fn arb_subscription_identifier() -> impl Strategy<Value = u32> {
    1..=VARIABLE_BYTE_INTEGER_MAX
}

/// Authentication data is only allowed together with a method.
fn arb_authentication() -> impl Strategy<Value = (Option<Str>, Option<Bytes>)> {
    prop_oneof![
        Just((None, None)),
        (arb_str(), option::of(arb_bytes())).prop_map(|(method, data)| (Some(method), data)),
    ]
}

fn arb_ack_properties(version: ProtocolVersion) -> BoxedStrategy<AckProperties> {
    if !version.is_v5() {
        return Just(AckProperties::default()).boxed();
    }
    (option::of(arb_str()), arb_user_properties())
        .prop_map(|(reason_string, user_properties)| AckProperties {
            reason_string,
            user_properties,
        })
        .boxed()
}

fn arb_publish_properties() -> impl Strategy<Value = PublishProperties> {
    (
        arb_flag(),
        option::of(any::<u32>()),
        option::of(1..=u16::MAX),
        option::of(arb_str()),
        option::of(arb_bytes()),
        arb_user_properties(),
        vec(arb_subscription_identifier(), 0..3),
        option::of(arb_str()),
    )
        .prop_map(
            |(
                payload_format_indicator,
                message_expiry_interval,
                topic_alias,
                response_topic,
                correlation_data,
                user_properties,
                subscription_identifiers,
                content_type,
            )| PublishProperties {
                payload_format_indicator,
                message_expiry_interval,
                topic_alias,
                response_topic,
                correlation_data,
                user_properties,
                subscription_identifiers,
                content_type,
            },
        )
}

fn arb_will(version: ProtocolVersion) -> impl Strategy<Value = Will> {
    (
        arb_str(),
        arb_bytes(),
        arb_qos(),
        any::<bool>(),
        option::of(any::<u32>()),
        arb_publish_properties(),
    )
        .prop_map(
            move |(topic, payload, qos, retain, delay_interval, mut properties)| {
                // The Will has no topic alias or subscription identifiers.
                properties.topic_alias = None;
                properties.subscription_identifiers.clear();
                let v5 = version.is_v5();
                Will {
                    topic,
                    payload,
                    qos,
                    retain,
                    delay_interval: if v5 { delay_interval } else { None },
                    properties: if v5 {
                        properties
                    } else {
                        PublishProperties::default()
                    },
                }
            },
        )
}

fn arb_connect_properties() -> impl Strategy<Value = ConnectProperties> {
    (
        option::of(any::<u32>()),
        option::of(1..=u16::MAX),
        option::of(1..=u32::MAX),
        option::of(any::<u16>()),
        arb_flag(),
        arb_flag(),
        arb_user_properties(),
        arb_authentication(),
    )
        .prop_map(
            |(
                session_expiry_interval,
                receive_maximum,
                maximum_packet_size,
                topic_alias_maximum,
                request_response_information,
                request_problem_information,
                user_properties,
                (authentication_method, authentication_data),
            )| ConnectProperties {
                session_expiry_interval,
                receive_maximum,
                maximum_packet_size,
                topic_alias_maximum,
                request_response_information,
                request_problem_information,
                user_properties,
                authentication_method,
                authentication_data,
            },
        )
}

fn arb_connect(version: ProtocolVersion) -> impl Strategy<Value = Packet> {
    (
        any::<bool>(),
        any::<u16>(),
        arb_str(),
        option::of(arb_will(version)),
        option::of(arb_str()),
        option::of(arb_bytes()),
        arb_connect_properties(),
    )
        .prop_map(
            move |(
                clean_start,
                keep_alive,
                client_id,
                will,
                mut username,
                password,
                properties,
            )| {
                // Before MQTT 5 a password requires a user name [MQTT-3.1.2-22].
                if !version.is_v5() && password.is_some() && username.is_none() {
                    username = Some(Str::from_static("user"));
                }
                Packet::Connect(Box::new(Connect {
                    version,
                    clean_start,
                    keep_alive,
                    client_id,
                    will,
                    username,
                    password,
                    properties: if version.is_v5() {
                        properties
                    } else {
                        ConnectProperties::default()
                    },
                }))
            },
        )
}

fn arb_connack_properties() -> impl Strategy<Value = ConnAckProperties> {
    let first = (
        option::of(any::<u32>()),
        option::of(1..=u16::MAX),
        arb_flag(),
        arb_flag(),
        option::of(1..=u32::MAX),
        option::of(arb_str()),
        option::of(any::<u16>()),
        option::of(arb_str()),
        arb_user_properties(),
    );
    let second = (
        arb_flag(),
        arb_flag(),
        arb_flag(),
        option::of(any::<u16>()),
        option::of(arb_str()),
        option::of(arb_str()),
        arb_authentication(),
    );
    (first, second).prop_map(
        |(
            (
                session_expiry_interval,
                receive_maximum,
                maximum_qos,
                retain_available,
                maximum_packet_size,
                assigned_client_identifier,
                topic_alias_maximum,
                reason_string,
                user_properties,
            ),
            (
                wildcard_subscription_available,
                subscription_identifiers_available,
                shared_subscription_available,
                server_keep_alive,
                response_information,
                server_reference,
                (authentication_method, authentication_data),
            ),
        )| ConnAckProperties {
            session_expiry_interval,
            receive_maximum,
            maximum_qos,
            retain_available,
            maximum_packet_size,
            assigned_client_identifier,
            topic_alias_maximum,
            reason_string,
            user_properties,
            wildcard_subscription_available,
            subscription_identifiers_available,
            shared_subscription_available,
            server_keep_alive,
            response_information,
            server_reference,
            authentication_method,
            authentication_data,
        },
    )
}

fn arb_connack(version: ProtocolVersion) -> BoxedStrategy<Packet> {
    if !version.is_v5() {
        return (any::<bool>(), 0u8..=5)
            .prop_map(|(session_present, code)| {
                Packet::ConnAck(ConnAck {
                    session_present,
                    reason: ReasonCode(code),
                    properties: ConnAckProperties::default(),
                })
            })
            .boxed();
    }
    (any::<bool>(), arb_reason(), arb_connack_properties())
        .prop_map(|(session_present, reason, properties)| {
            Packet::ConnAck(ConnAck {
                session_present,
                reason,
                properties,
            })
        })
        .boxed()
}

fn arb_publish(version: ProtocolVersion) -> impl Strategy<Value = Packet> {
    (
        arb_qos(),
        any::<bool>(),
        any::<bool>(),
        arb_str(),
        arb_packet_id(),
        vec(any::<u8>(), 0..64),
        arb_publish_properties(),
    )
        .prop_map(
            move |(qos, dup, retain, mut topic, packet_id, payload, properties)| {
                let mut properties = if version.is_v5() {
                    properties
                } else {
                    PublishProperties::default()
                };
                // An empty topic is only valid with a v5 topic alias.
                if topic.len_bytes() == 0 {
                    if version.is_v5() {
                        properties.topic_alias.get_or_insert(1);
                    } else {
                        topic = Str::from_static("t");
                    }
                }
                let at_most_once = qos == QoS::AtMostOnce;
                Packet::Publish(Publish {
                    dup: dup && !at_most_once,
                    qos,
                    retain,
                    topic,
                    packet_id: if at_most_once { 0 } else { packet_id },
                    payload: Bytes::from(payload),
                    properties,
                })
            },
        )
}

fn arb_pub_resp(version: ProtocolVersion) -> impl Strategy<Value = PubResp> {
    let v5 = version.is_v5();
    (arb_packet_id(), arb_reason(), arb_ack_properties(version)).prop_map(
        move |(packet_id, reason, properties)| PubResp {
            packet_id,
            reason: if v5 { reason } else { ReasonCode::SUCCESS },
            properties,
        },
    )
}

fn arb_options(version: ProtocolVersion) -> impl Strategy<Value = SubscriptionOptions> {
    let retain_handling = prop_oneof![
        Just(RetainHandling::SendAtSubscribe),
        Just(RetainHandling::SendIfNew),
        Just(RetainHandling::DoNotSend),
    ];
    (arb_qos(), any::<bool>(), any::<bool>(), retain_handling).prop_map(
        move |(qos, no_local, retain_as_published, retain_handling)| {
            if version.is_v5() {
                SubscriptionOptions {
                    qos,
                    no_local,
                    retain_as_published,
                    retain_handling,
                }
            } else {
                SubscriptionOptions {
                    qos,
                    ..Default::default()
                }
            }
        },
    )
}

fn arb_subscribe(version: ProtocolVersion) -> impl Strategy<Value = Packet> {
    let filter = (arb_nonempty_str(), arb_options(version))
        .prop_map(|(filter, options)| SubscribeFilter { filter, options });
    (
        arb_packet_id(),
        vec(filter, 1..4),
        option::of(arb_subscription_identifier()),
        arb_user_properties(),
    )
        .prop_map(
            move |(packet_id, filters, subscription_identifier, user_properties)| {
                let v5 = version.is_v5();
                Packet::Subscribe(Subscribe {
                    packet_id,
                    filters,
                    subscription_identifier: if v5 { subscription_identifier } else { None },
                    user_properties: if v5 { user_properties } else { Vec::new() },
                })
            },
        )
}

fn arb_suback(version: ProtocolVersion) -> impl Strategy<Value = Packet> {
    let reason: BoxedStrategy<ReasonCode> = if version.is_v5() {
        arb_reason().boxed()
    } else {
        prop_oneof![Just(0u8), Just(1), Just(2), Just(0x80)]
            .prop_map(ReasonCode)
            .boxed()
    };
    (
        arb_packet_id(),
        vec(reason, 1..5),
        arb_ack_properties(version),
    )
        .prop_map(|(packet_id, reasons, properties)| {
            Packet::SubAck(SubAck {
                packet_id,
                reasons,
                properties,
            })
        })
}

fn arb_unsubscribe(version: ProtocolVersion) -> impl Strategy<Value = Packet> {
    (arb_packet_id(), vec(arb_str(), 1..4), arb_user_properties()).prop_map(
        move |(packet_id, filters, user_properties)| {
            Packet::Unsubscribe(Unsubscribe {
                packet_id,
                filters,
                user_properties: if version.is_v5() {
                    user_properties
                } else {
                    Vec::new()
                },
            })
        },
    )
}

fn arb_unsuback(version: ProtocolVersion) -> impl Strategy<Value = Packet> {
    (
        arb_packet_id(),
        vec(arb_reason(), 1..5),
        arb_ack_properties(version),
    )
        .prop_map(move |(packet_id, reasons, properties)| {
            Packet::UnsubAck(UnsubAck {
                packet_id,
                reasons: if version.is_v5() { reasons } else { Vec::new() },
                properties,
            })
        })
}

fn arb_disconnect(version: ProtocolVersion) -> BoxedStrategy<Packet> {
    if !version.is_v5() {
        return Just(Packet::Disconnect(Disconnect::default())).boxed();
    }
    (
        arb_reason(),
        option::of(any::<u32>()),
        option::of(arb_str()),
        arb_user_properties(),
        option::of(arb_str()),
    )
        .prop_map(
            |(
                reason,
                session_expiry_interval,
                reason_string,
                user_properties,
                server_reference,
            )| {
                Packet::Disconnect(Disconnect {
                    reason,
                    properties: DisconnectProperties {
                        session_expiry_interval,
                        reason_string,
                        user_properties,
                        server_reference,
                    },
                })
            },
        )
        .boxed()
}

fn arb_auth() -> impl Strategy<Value = Packet> {
    (
        arb_reason(),
        arb_authentication(),
        option::of(arb_str()),
        arb_user_properties(),
    )
        .prop_map(
            |(
                reason,
                (authentication_method, authentication_data),
                reason_string,
                user_properties,
            )| {
                Packet::Auth(Auth {
                    reason,
                    properties: AuthProperties {
                        authentication_method,
                        authentication_data,
                        reason_string,
                        user_properties,
                    },
                })
            },
        )
}

/// Any valid packet for `version`.
fn arb_packet(version: ProtocolVersion) -> BoxedStrategy<Packet> {
    let mut kinds = vec![
        arb_connect(version).boxed(),
        arb_connack(version),
        arb_publish(version).boxed(),
        arb_pub_resp(version).prop_map(Packet::PubAck).boxed(),
        arb_pub_resp(version).prop_map(Packet::PubRec).boxed(),
        arb_pub_resp(version).prop_map(Packet::PubRel).boxed(),
        arb_pub_resp(version).prop_map(Packet::PubComp).boxed(),
        arb_subscribe(version).boxed(),
        arb_suback(version).boxed(),
        arb_unsubscribe(version).boxed(),
        arb_unsuback(version).boxed(),
        Just(Packet::PingReq).boxed(),
        Just(Packet::PingResp).boxed(),
        arb_disconnect(version),
    ];
    if version.is_v5() {
        kinds.push(arb_auth().boxed());
    }
    proptest::strategy::Union::new(kinds).boxed()
}

// ---------------------------------------------------------------------------------------------
// Helpers

fn encode(packet: &Packet, version: ProtocolVersion) -> Bytes {
    let mut buf = BytesMut::new();
    encode_packet(packet, version, &mut buf).expect("test packets are valid");
    buf.freeze()
}

fn decode(bytes: &[u8], version: ProtocolVersion) -> Result<Option<Packet>, DecodeError> {
    decode_packet(&mut BytesMut::from(bytes), version, PACKET_SIZE_MAX)
}

/// Encodes, checks streaming decode byte by byte, decodes and compares.
fn check_round_trip(packet: &Packet, version: ProtocolVersion) -> Result<(), TestCaseError> {
    let encoded = encode(packet, version);
    // Fed one byte at a time, the decoder must say "incomplete" and consume nothing until the
    // last byte arrives.
    let mut stream = BytesMut::new();
    for (index, &byte) in encoded.iter().enumerate() {
        stream.extend_from_slice(&[byte]);
        let result = decode_packet(&mut stream, version, PACKET_SIZE_MAX);
        if index + 1 < encoded.len() {
            prop_assert_eq!(result, Ok(None), "prefix of {} bytes", index + 1);
            prop_assert_eq!(stream.len(), index + 1);
        } else {
            prop_assert_eq!(result, Ok(Some(packet.clone())));
            prop_assert!(stream.is_empty());
        }
    }
    // A second packet behind the first must stay in the buffer untouched.
    let mut two = BytesMut::from(&encoded[..]);
    two.extend_from_slice(&[0xc0, 0x00]);
    prop_assert_eq!(
        decode_packet(&mut two, version, PACKET_SIZE_MAX),
        Ok(Some(packet.clone()))
    );
    prop_assert_eq!(&two[..], &[0xc0, 0x00][..]);
    // The size limit is inclusive: exactly the packet's size passes, one byte less fails.
    let size = encoded.len() as u32;
    prop_assert!(decode_packet(&mut BytesMut::from(&encoded[..]), version, size).is_ok());
    let too_large = decode_packet(&mut BytesMut::from(&encoded[..]), version, size - 1);
    prop_assert!(
        matches!(too_large, Err(DecodeError::PacketTooLarge { .. })),
        "{:?}",
        too_large
    );

    if let Packet::Publish(publish) = packet {
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
        let mut direct = BytesMut::new();
        prop_assert_eq!(encode_publish(&outgoing, version, &mut direct), Ok(()));
        prop_assert_eq!(&direct[..], &encoded[..]);
        prop_assert_eq!(publish_encoded_len(&outgoing, version), encoded.len());
    }
    Ok(())
}

/// Decodes packets from `bytes` until incomplete or an error; must never panic.
fn decode_all(bytes: &[u8], version: ProtocolVersion) {
    let mut buf = BytesMut::from(bytes);
    while let Ok(Some(packet)) = decode_packet(&mut buf, version, PACKET_SIZE_MAX) {
        // Whatever decodes must re-encode and decode to the same packet. CONNECT carries its own
        // version, which the re-decode then uses for nothing else.
        let encoded = encode(&packet, version);
        assert_eq!(decode(&encoded, version), Ok(Some(packet)));
    }
}

fn with_version<S, F>(strategy: F) -> impl Strategy<Value = (ProtocolVersion, Packet)>
where
    S: Strategy<Value = Packet> + 'static,
    F: Fn(ProtocolVersion) -> S + 'static,
{
    arb_version().prop_flat_map(move |version| (Just(version), strategy(version)))
}

// ---------------------------------------------------------------------------------------------
// Property tests

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn round_trip_connect((version, packet) in with_version(arb_connect)) {
        check_round_trip(&packet, version)?;
    }

    #[test]
    fn round_trip_connack((version, packet) in with_version(arb_connack)) {
        check_round_trip(&packet, version)?;
    }

    #[test]
    fn round_trip_publish((version, packet) in with_version(arb_publish)) {
        check_round_trip(&packet, version)?;
    }

    #[test]
    fn round_trip_puback((version, packet) in with_version(|v| arb_pub_resp(v).prop_map(Packet::PubAck))) {
        check_round_trip(&packet, version)?;
    }

    #[test]
    fn round_trip_pubrec((version, packet) in with_version(|v| arb_pub_resp(v).prop_map(Packet::PubRec))) {
        check_round_trip(&packet, version)?;
    }

    #[test]
    fn round_trip_pubrel((version, packet) in with_version(|v| arb_pub_resp(v).prop_map(Packet::PubRel))) {
        check_round_trip(&packet, version)?;
    }

    #[test]
    fn round_trip_pubcomp((version, packet) in with_version(|v| arb_pub_resp(v).prop_map(Packet::PubComp))) {
        check_round_trip(&packet, version)?;
    }

    #[test]
    fn round_trip_subscribe((version, packet) in with_version(arb_subscribe)) {
        check_round_trip(&packet, version)?;
    }

    #[test]
    fn round_trip_suback((version, packet) in with_version(arb_suback)) {
        check_round_trip(&packet, version)?;
    }

    #[test]
    fn round_trip_unsubscribe((version, packet) in with_version(arb_unsubscribe)) {
        check_round_trip(&packet, version)?;
    }

    #[test]
    fn round_trip_unsuback((version, packet) in with_version(arb_unsuback)) {
        check_round_trip(&packet, version)?;
    }

    #[test]
    fn round_trip_disconnect((version, packet) in with_version(arb_disconnect)) {
        check_round_trip(&packet, version)?;
    }

    #[test]
    fn round_trip_auth(packet in arb_auth()) {
        check_round_trip(&packet, V5)?;
    }

    #[test]
    fn round_trip_any_packet((version, packet) in with_version(arb_packet)) {
        check_round_trip(&packet, version)?;
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in vec(any::<u8>(), 0..256)) {
        for version in ALL_VERSIONS {
            decode_all(&bytes, version);
        }
    }

    #[test]
    fn mutated_valid_packets_never_panic(
        (version, packet) in with_version(arb_packet),
        position in any::<usize>(),
        value in any::<u8>(),
    ) {
        // Flipping one byte of a valid packet reaches far deeper into the decoder than random bytes.
        let mut bytes = encode(&packet, version).to_vec();
        let index = position % bytes.len();
        bytes[index] = value;
        decode_all(&bytes, version);
    }

    #[test]
    fn truncated_valid_packets_are_incomplete((version, packet) in with_version(arb_packet)) {
        let encoded = encode(&packet, version);
        for cut in 0..encoded.len() {
            prop_assert_eq!(decode(&encoded[..cut], version), Ok(None));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Fixed vectors from real clients and the spec

#[test]
fn mosquitto_v311_connect() {
    // mosquitto_pub -V mqttv311 -i test (keep alive 60, clean session).
    let bytes = [
        0x10, 0x10, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0x02, 0x00, 0x3c, 0x00, 0x04, b't',
        b'e', b's', b't',
    ];
    let expected = Packet::Connect(Box::new(Connect {
        version: V311,
        clean_start: true,
        keep_alive: 60,
        client_id: Str::from("test"),
        ..Default::default()
    }));
    // CONNECT is decoded whatever version the caller assumes.
    for version in ALL_VERSIONS {
        assert_eq!(decode(&bytes, version), Ok(Some(expected.clone())));
    }
    assert_eq!(&encode(&expected, V5)[..], &bytes[..]);
}

#[test]
fn v31_connect_with_mqisdp() {
    let bytes = [
        0x10, 0x12, 0x00, 0x06, b'M', b'Q', b'I', b's', b'd', b'p', 0x03, 0x02, 0x00, 0x3c, 0x00,
        0x04, b't', b'e', b's', b't',
    ];
    let Ok(Some(Packet::Connect(connect))) = decode(&bytes, V311) else {
        panic!("MQIsdp CONNECT did not decode");
    };
    assert_eq!(connect.version, V31);
    assert_eq!(connect.client_id, "test");
    assert_eq!(&encode(&Packet::Connect(connect), V31)[..], &bytes[..]);
}

#[test]
fn v311_connect_with_will_user_and_password() {
    // Flags 0xEE: user name, password, will retain, will QoS 1, will, clean session.
    let bytes = [
        0x10, 0x1a, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0xee, 0x00, 0x3c, 0x00, 0x01, b'c',
        0x00, 0x01, b'w', 0x00, 0x02, b'b', b'y', 0x00, 0x01, b'u', 0x00, 0x01, b'p',
    ];
    let expected = Packet::Connect(Box::new(Connect {
        version: V311,
        clean_start: true,
        keep_alive: 60,
        client_id: Str::from("c"),
        will: Some(Will {
            topic: Str::from("w"),
            payload: Bytes::from_static(b"by"),
            qos: QoS::AtLeastOnce,
            retain: true,
            ..Default::default()
        }),
        username: Some(Str::from("u")),
        password: Some(Bytes::from_static(b"p")),
        properties: ConnectProperties::default(),
    }));
    assert_eq!(decode(&bytes, V311), Ok(Some(expected.clone())));
    assert_eq!(&encode(&expected, V311)[..], &bytes[..]);
}

#[test]
fn v5_connect_with_session_expiry() {
    let bytes = [
        0x10, 0x16, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x05, 0x02, 0x00, 0x3c, 0x05, 0x11, 0x00,
        0x00, 0x00, 0x0a, 0x00, 0x04, b't', b'e', b's', b't',
    ];
    let expected = Packet::Connect(Box::new(Connect {
        version: V5,
        clean_start: true,
        keep_alive: 60,
        client_id: Str::from("test"),
        properties: ConnectProperties {
            session_expiry_interval: Some(10),
            ..Default::default()
        },
        ..Default::default()
    }));
    assert_eq!(decode(&bytes, V311), Ok(Some(expected.clone())));
    assert_eq!(&encode(&expected, V5)[..], &bytes[..]);
}

#[test]
fn v311_publish_qos0() {
    let bytes = [0x30, 0x07, 0x00, 0x03, b'a', b'/', b'b', b'h', b'i'];
    let expected = Packet::Publish(Publish {
        topic: Str::from("a/b"),
        payload: Bytes::from_static(b"hi"),
        ..Default::default()
    });
    assert_eq!(decode(&bytes, V311), Ok(Some(expected.clone())));
    assert_eq!(&encode(&expected, V311)[..], &bytes[..]);
}

#[test]
fn v5_publish_qos1_with_topic_alias() {
    let bytes = [
        0x32, 0x0d, 0x00, 0x03, b'a', b'/', b'b', 0x00, 0x0a, 0x03, 0x23, 0x00, 0x01, b'h', b'i',
    ];
    let expected = Packet::Publish(Publish {
        qos: QoS::AtLeastOnce,
        topic: Str::from("a/b"),
        packet_id: 10,
        payload: Bytes::from_static(b"hi"),
        properties: PublishProperties {
            topic_alias: Some(1),
            ..Default::default()
        },
        ..Default::default()
    });
    assert_eq!(decode(&bytes, V5), Ok(Some(expected.clone())));
    assert_eq!(&encode(&expected, V5)[..], &bytes[..]);
}

#[test]
fn publish_payload_is_a_zero_copy_slice() {
    let bytes = [0x30, 0x07, 0x00, 0x03, b'a', b'/', b'b', b'h', b'i'];
    let mut buf = BytesMut::from(&bytes[..]);
    let start = buf.as_ptr() as usize;
    let Ok(Some(Packet::Publish(publish))) = decode_packet(&mut buf, V311, PACKET_SIZE_MAX) else {
        panic!("PUBLISH did not decode");
    };
    assert_eq!(publish.payload.as_ptr() as usize, start + 7);
    assert_eq!(publish.topic.as_bytes().as_ptr() as usize, start + 4);
}

#[test]
fn v311_subscribe_and_suback() {
    let bytes = [0x82, 0x08, 0x00, 0x01, 0x00, 0x03, b'a', b'/', b'b', 0x01];
    let expected = Packet::Subscribe(Subscribe {
        packet_id: 1,
        filters: vec![SubscribeFilter {
            filter: Str::from("a/b"),
            options: SubscriptionOptions {
                qos: QoS::AtLeastOnce,
                ..Default::default()
            },
        }],
        ..Default::default()
    });
    assert_eq!(decode(&bytes, V311), Ok(Some(expected.clone())));
    assert_eq!(&encode(&expected, V311)[..], &bytes[..]);
    let suback = Packet::SubAck(SubAck {
        packet_id: 1,
        reasons: vec![ReasonCode::GRANTED_QOS_1, ReasonCode(0x80)],
        ..Default::default()
    });
    assert_eq!(
        &encode(&suback, V311)[..],
        &[0x90, 0x04, 0x00, 0x01, 0x01, 0x80][..]
    );
}

#[test]
fn v5_subscribe_with_identifier_and_options() {
    // Options 0x2d: QoS 1, no local, retain as published, retain handling 2.
    let bytes = [
        0x82, 0x0b, 0x00, 0x01, 0x02, 0x0b, 0x05, 0x00, 0x03, b'a', b'/', b'#', 0x2d,
    ];
    let expected = Packet::Subscribe(Subscribe {
        packet_id: 1,
        filters: vec![SubscribeFilter {
            filter: Str::from("a/#"),
            options: SubscriptionOptions {
                qos: QoS::AtLeastOnce,
                no_local: true,
                retain_as_published: true,
                retain_handling: RetainHandling::DoNotSend,
            },
        }],
        subscription_identifier: Some(5),
        user_properties: Vec::new(),
    });
    assert_eq!(decode(&bytes, V5), Ok(Some(expected.clone())));
    assert_eq!(&encode(&expected, V5)[..], &bytes[..]);
}

#[test]
fn short_fixed_packets() {
    let connack = Packet::ConnAck(ConnAck::default());
    assert_eq!(&encode(&connack, V311)[..], &[0x20, 0x02, 0x00, 0x00][..]);
    assert_eq!(
        &encode(&connack, V5)[..],
        &[0x20, 0x03, 0x00, 0x00, 0x00][..]
    );
    let refused = Packet::ConnAck(ConnAck {
        reason: ReasonCode(connack_v3::NOT_AUTHORIZED),
        ..Default::default()
    });
    assert_eq!(&encode(&refused, V311)[..], &[0x20, 0x02, 0x00, 0x05][..]);
    assert_eq!(&encode(&Packet::PingReq, V311)[..], &[0xc0, 0x00][..]);
    assert_eq!(&encode(&Packet::PingResp, V5)[..], &[0xd0, 0x00][..]);
    let disconnect = Packet::Disconnect(Disconnect {
        reason: ReasonCode::SERVER_SHUTTING_DOWN,
        ..Default::default()
    });
    // v3 has no reason codes: DISCONNECT is always e0 00.
    assert_eq!(&encode(&disconnect, V311)[..], &[0xe0, 0x00][..]);
    assert_eq!(&encode(&disconnect, V5)[..], &[0xe0, 0x01, 0x8b][..]);
    assert_eq!(
        &encode(&Packet::Disconnect(Disconnect::default()), V5)[..],
        &[0xe0, 0x00][..]
    );
    let unsuback = Packet::UnsubAck(UnsubAck {
        packet_id: 7,
        ..Default::default()
    });
    assert_eq!(&encode(&unsuback, V311)[..], &[0xb0, 0x02, 0x00, 0x07][..]);
    // v5 PUBACK with only a reason code uses the 3-byte form; Success the 2-byte form.
    let puback = Packet::PubAck(PubResp {
        packet_id: 1,
        reason: ReasonCode::NO_MATCHING_SUBSCRIBERS,
        ..Default::default()
    });
    assert_eq!(
        &encode(&puback, V5)[..],
        &[0x40, 0x03, 0x00, 0x01, 0x10][..]
    );
    assert_eq!(
        decode(&[0x40, 0x03, 0x00, 0x01, 0x10], V5),
        Ok(Some(puback))
    );
}

#[test]
fn pub_resp_fast_path_matches_encode_packet() {
    let kinds = [
        (PubRespKind::PubAck, Packet::PubAck as fn(PubResp) -> Packet),
        (PubRespKind::PubRec, Packet::PubRec),
        (PubRespKind::PubRel, Packet::PubRel),
        (PubRespKind::PubComp, Packet::PubComp),
    ];
    for version in ALL_VERSIONS {
        for (kind, wrap) in kinds {
            for reason in [ReasonCode::SUCCESS, ReasonCode::PACKET_IDENTIFIER_NOT_FOUND] {
                let mut fast = BytesMut::new();
                encode_pub_resp(kind, 0x1234, reason, version, &mut fast);
                let packet = wrap(PubResp {
                    packet_id: 0x1234,
                    reason: if version.is_v5() {
                        reason
                    } else {
                        ReasonCode::SUCCESS
                    },
                    properties: AckProperties::default(),
                });
                assert_eq!(&fast[..], &encode(&packet, version)[..]);
                assert_eq!(decode(&fast, version), Ok(Some(packet)));
            }
        }
    }
    let mut buf = BytesMut::new();
    encode_pub_resp(PubRespKind::PubRel, 1, ReasonCode::SUCCESS, V5, &mut buf);
    assert_eq!(&buf[..], &[0x62, 0x02, 0x00, 0x01][..]);
}

// ---------------------------------------------------------------------------------------------
// Hostile input

#[test]
fn oversized_remaining_length_fails_before_the_body_arrives() {
    // 200 MB declared in a 4-byte varint, with no body at all.
    let mut bytes = vec![0x30];
    let mut length = 200_000_000u32;
    while length > 0 {
        let mut byte = (length % 128) as u8;
        length /= 128;
        if length > 0 {
            byte |= 0x80;
        }
        bytes.push(byte);
    }
    assert_eq!(
        decode(&bytes, V311),
        Err(DecodeError::PacketTooLarge {
            size: 200_000_000 + 5,
            max: PACKET_SIZE_MAX
        })
    );
    assert_eq!(
        decode(&[0x30, 0xff, 0xff, 0xff, 0x7f], V5),
        Err(DecodeError::PacketTooLarge {
            size: u64::from(VARIABLE_BYTE_INTEGER_MAX) + 5,
            max: PACKET_SIZE_MAX
        })
    );
    assert_eq!(
        DecodeError::PacketTooLarge { size: 1, max: 0 }.reason_code(),
        ReasonCode::PACKET_TOO_LARGE
    );
}

#[test]
fn five_byte_remaining_length_is_malformed() {
    assert_eq!(
        decode(&[0x30, 0xff, 0xff, 0xff, 0xff, 0x01], V311),
        Err(DecodeError::MalformedRemainingLength)
    );
    assert_eq!(
        decode(&[0x30, 0x80, 0x80, 0x80, 0x80], V5),
        Err(DecodeError::MalformedRemainingLength)
    );
    // Three continuation bytes so far: still waiting for the fourth.
    assert_eq!(decode(&[0x30, 0x80, 0x80, 0x80], V5), Ok(None));
    assert_eq!(peek_fixed_header(&[0x30]), Ok(None));
    assert_eq!(
        peek_fixed_header(&[0x30, 0x80, 0x01]),
        Ok(Some((0x30, 128, 3)))
    );
}

#[test]
fn invalid_strings_are_rejected() {
    // 0xff is never valid UTF-8.
    assert_eq!(
        decode(&[0x30, 0x05, 0x00, 0x03, b'a', 0xff, b'b'], V311),
        Err(DecodeError::InvalidUtf8)
    );
    // U+0000 is forbidden in MQTT strings.
    assert_eq!(
        decode(&[0x30, 0x05, 0x00, 0x03, b'a', 0x00, b'b'], V311),
        Err(DecodeError::InvalidUtf8)
    );
    // A UTF-16 surrogate (U+D800 as UTF-8 bytes) is not valid UTF-8.
    assert_eq!(
        decode(&[0x30, 0x05, 0x00, 0x03, 0xed, 0xa0, 0x80], V311),
        Err(DecodeError::InvalidUtf8)
    );
    assert!(Str::try_from(Bytes::from_static(b"ok/\xc3\xa9")).is_ok());
}

#[test]
fn header_flag_rules() {
    // PUBLISH QoS 3.
    assert_eq!(
        decode(&[0x36, 0x05, 0x00, 0x01, b'a', 0x00, 0x01], V311),
        Err(DecodeError::InvalidQoS(3))
    );
    // PUBLISH DUP with QoS 0.
    assert_eq!(
        decode(&[0x38, 0x03, 0x00, 0x01, b'a'], V311),
        Err(DecodeError::InvalidHeaderFlags(0x38))
    );
    // SUBSCRIBE, UNSUBSCRIBE and PUBREL must carry 0b0010.
    assert_eq!(
        decode(&[0x80, 0x00], V311),
        Err(DecodeError::InvalidHeaderFlags(0x80))
    );
    assert_eq!(
        decode(&[0xa0, 0x00], V311),
        Err(DecodeError::InvalidHeaderFlags(0xa0))
    );
    assert_eq!(
        decode(&[0x60, 0x02, 0x00, 0x01], V311),
        Err(DecodeError::InvalidHeaderFlags(0x60))
    );
    // Every other packet must carry 0.
    assert_eq!(
        decode(&[0x41, 0x02, 0x00, 0x01], V311),
        Err(DecodeError::InvalidHeaderFlags(0x41))
    );
    assert_eq!(
        decode(&[0xc1, 0x00], V311),
        Err(DecodeError::InvalidHeaderFlags(0xc1))
    );
    // The flags are checked before the body has arrived.
    assert_eq!(
        decode(&[0x80, 0x10], V311),
        Err(DecodeError::InvalidHeaderFlags(0x80))
    );
    assert_eq!(
        decode(&[0x00, 0x00], V5),
        Err(DecodeError::InvalidPacketType(0))
    );
    // AUTH only exists in MQTT 5.
    assert_eq!(
        decode(&[0xf0, 0x00], V311),
        Err(DecodeError::InvalidPacketType(15))
    );
    assert_eq!(
        decode(&[0xf0, 0x00], V5),
        Ok(Some(Packet::Auth(Auth::default())))
    );
}

#[test]
fn zero_packet_ids_are_rejected() {
    assert_eq!(
        decode(&[0x40, 0x02, 0x00, 0x00], V311),
        Err(DecodeError::ZeroPacketId)
    );
    assert_eq!(
        decode(&[0x62, 0x02, 0x00, 0x00], V5),
        Err(DecodeError::ZeroPacketId)
    );
    assert_eq!(
        decode(&[0x32, 0x05, 0x00, 0x01, b'a', 0x00, 0x00], V311),
        Err(DecodeError::ZeroPacketId)
    );
    assert_eq!(
        decode(&[0x82, 0x06, 0x00, 0x00, 0x00, 0x01, b'a', 0x00], V311),
        Err(DecodeError::ZeroPacketId)
    );
    assert_eq!(
        decode(&[0xa2, 0x05, 0x00, 0x00, 0x00, 0x01, b'a'], V311),
        Err(DecodeError::ZeroPacketId)
    );
    assert_eq!(
        DecodeError::ZeroPacketId.reason_code(),
        ReasonCode::PROTOCOL_ERROR
    );
}

#[test]
fn empty_subscribe_and_unsubscribe_are_protocol_errors() {
    assert!(matches!(
        decode(&[0x82, 0x02, 0x00, 0x01], V311),
        Err(DecodeError::ProtocolError(_))
    ));
    assert!(matches!(
        decode(&[0x82, 0x03, 0x00, 0x01, 0x00], V5),
        Err(DecodeError::ProtocolError(_))
    ));
    assert!(matches!(
        decode(&[0xa2, 0x02, 0x00, 0x01], V311),
        Err(DecodeError::ProtocolError(_))
    ));
}

#[test]
fn subscription_option_rules() {
    // v3: bits 2-7 are reserved.
    assert!(matches!(
        decode(&[0x82, 0x06, 0x00, 0x01, 0x00, 0x01, b'a', 0x04], V311),
        Err(DecodeError::Malformed(_))
    ));
    // v5: bits 6-7 reserved, retain handling 3, QoS 3.
    assert!(matches!(
        decode(&[0x82, 0x07, 0x00, 0x01, 0x00, 0x00, 0x01, b'a', 0x40], V5),
        Err(DecodeError::Malformed(_))
    ));
    assert!(matches!(
        decode(&[0x82, 0x07, 0x00, 0x01, 0x00, 0x00, 0x01, b'a', 0x30], V5),
        Err(DecodeError::Malformed(_))
    ));
    assert_eq!(
        decode(&[0x82, 0x07, 0x00, 0x01, 0x00, 0x00, 0x01, b'a', 0x03], V5),
        Err(DecodeError::InvalidQoS(3))
    );
}

/// A v5 QoS 0 PUBLISH to "a" with the given property block contents.
fn v5_publish_with_properties(properties: &[u8]) -> Vec<u8> {
    let mut bytes = vec![
        0x30,
        (3 + 1 + properties.len()) as u8,
        0x00,
        0x01,
        b'a',
        properties.len() as u8,
    ];
    bytes.extend_from_slice(properties);
    bytes
}

#[test]
fn property_rules() {
    // Duplicate payload format indicator.
    assert_eq!(
        decode(&v5_publish_with_properties(&[0x01, 0x00, 0x01, 0x01]), V5),
        Err(DecodeError::DuplicateProperty(0x01))
    );
    // Unknown property id 0x05, and one with the continuation bit.
    assert_eq!(
        decode(&v5_publish_with_properties(&[0x05, 0x00]), V5),
        Err(DecodeError::InvalidPropertyId(0x05))
    );
    assert_eq!(
        decode(&v5_publish_with_properties(&[0x81, 0x00]), V5),
        Err(DecodeError::InvalidPropertyId(0x81))
    );
    // Session expiry is defined, but not for PUBLISH.
    assert_eq!(
        decode(&v5_publish_with_properties(&[0x11, 0, 0, 0, 1]), V5),
        Err(DecodeError::PropertyNotAllowed(0x11))
    );
    // Out-of-range values: payload format 2, topic alias 0, subscription identifier 0.
    assert_eq!(
        decode(&v5_publish_with_properties(&[0x01, 0x02]), V5),
        Err(DecodeError::InvalidPropertyValue(0x01))
    );
    let alias_zero = decode(&v5_publish_with_properties(&[0x23, 0x00, 0x00]), V5);
    assert_eq!(alias_zero, Err(DecodeError::InvalidPropertyValue(0x23)));
    assert_eq!(
        alias_zero.unwrap_err().reason_code(),
        ReasonCode::TOPIC_ALIAS_INVALID
    );
    assert_eq!(
        decode(&v5_publish_with_properties(&[0x0b, 0x00]), V5),
        Err(DecodeError::InvalidPropertyValue(0x0b))
    );
    // Subscription identifier varint longer than 4 bytes.
    assert!(matches!(
        decode(
            &v5_publish_with_properties(&[0x0b, 0xff, 0xff, 0xff, 0xff, 0x01]),
            V5
        ),
        Err(DecodeError::Malformed(_))
    ));
    // Repeated subscription identifiers are fine in PUBLISH ...
    let Ok(Some(Packet::Publish(publish))) =
        decode(&v5_publish_with_properties(&[0x0b, 0x01, 0x0b, 0x02]), V5)
    else {
        panic!("repeated subscription identifiers rejected");
    };
    assert_eq!(publish.properties.subscription_identifiers, vec![1, 2]);
    // ... but not in SUBSCRIBE.
    assert_eq!(
        decode(
            &[0x82, 0x0a, 0x00, 0x01, 0x04, 0x0b, 0x01, 0x0b, 0x02, 0x00, 0x01, b'a', 0x00],
            V5
        ),
        Err(DecodeError::DuplicateProperty(0x0b))
    );
    // A property block longer than the packet.
    assert!(matches!(
        decode(&[0x30, 0x04, 0x00, 0x01, b'a', 0x05], V5),
        Err(DecodeError::Malformed(_))
    ));
    // An empty topic without a topic alias.
    assert!(matches!(
        decode(&[0x30, 0x03, 0x00, 0x00, 0x00], V5),
        Err(DecodeError::ProtocolError(_))
    ));
    assert!(matches!(
        decode(&[0x30, 0x02, 0x00, 0x00], V311),
        Err(DecodeError::ProtocolError(_))
    ));
    assert_eq!(
        DecodeError::DuplicateProperty(1).reason_code(),
        ReasonCode::PROTOCOL_ERROR
    );
    assert_eq!(
        DecodeError::InvalidPropertyId(5).reason_code(),
        ReasonCode::MALFORMED_PACKET
    );
}

/// A v5 CONNECT with client id "c" and the given CONNECT property block contents.
fn v5_connect_with_properties(properties: &[u8]) -> Vec<u8> {
    let mut body = vec![
        0x00,
        0x04,
        b'M',
        b'Q',
        b'T',
        b'T',
        0x05,
        0x02,
        0x00,
        0x3c,
        properties.len() as u8,
    ];
    body.extend_from_slice(properties);
    body.extend_from_slice(&[0x00, 0x01, b'c']);
    let mut bytes = vec![0x10, body.len() as u8];
    bytes.extend_from_slice(&body);
    bytes
}

#[test]
fn connect_rules() {
    assert!(decode(&v5_connect_with_properties(&[]), V5)
        .unwrap()
        .is_some());
    // Receive maximum 0, maximum packet size 0, request problem information 2.
    assert_eq!(
        decode(&v5_connect_with_properties(&[0x21, 0x00, 0x00]), V5),
        Err(DecodeError::InvalidPropertyValue(0x21))
    );
    assert_eq!(
        decode(&v5_connect_with_properties(&[0x27, 0, 0, 0, 0]), V5),
        Err(DecodeError::InvalidPropertyValue(0x27))
    );
    assert_eq!(
        decode(&v5_connect_with_properties(&[0x17, 0x02]), V5),
        Err(DecodeError::InvalidPropertyValue(0x17))
    );
    // Authentication data without a method.
    assert!(matches!(
        decode(&v5_connect_with_properties(&[0x16, 0x00, 0x00]), V5),
        Err(DecodeError::ProtocolError(_))
    ));

    let connect = |name: &[u8], level: u8, flags: u8| {
        let mut body = vec![0x00, name.len() as u8];
        body.extend_from_slice(name);
        body.extend_from_slice(&[level, flags, 0x00, 0x3c, 0x00, 0x01, b'c']);
        let mut bytes = vec![0x10, body.len() as u8];
        bytes.extend_from_slice(&body);
        bytes
    };
    assert!(decode(&connect(b"MQTT", 4, 0x02), V311).unwrap().is_some());
    assert_eq!(
        decode(&connect(b"MQTT", 6, 0x02), V311),
        Err(DecodeError::UnsupportedProtocolVersion(6))
    );
    assert_eq!(
        decode(&connect(b"MQIsdp", 4, 0x02), V311),
        Err(DecodeError::UnsupportedProtocolVersion(4))
    );
    assert_eq!(
        decode(&connect(b"HTTP", 4, 0x02), V311),
        Err(DecodeError::InvalidProtocolName)
    );
    assert_eq!(
        DecodeError::UnsupportedProtocolVersion(6).reason_code(),
        ReasonCode::UNSUPPORTED_PROTOCOL_VERSION
    );
    // Reserved flag, will QoS/retain without will, will QoS 3.
    assert!(matches!(
        decode(&connect(b"MQTT", 4, 0x03), V311),
        Err(DecodeError::Malformed(_))
    ));
    assert!(matches!(
        decode(&connect(b"MQTT", 4, 0x08), V311),
        Err(DecodeError::Malformed(_))
    ));
    assert!(matches!(
        decode(&connect(b"MQTT", 4, 0x20), V311),
        Err(DecodeError::Malformed(_))
    ));
    assert_eq!(
        decode(&connect(b"MQTT", 4, 0x1c), V311),
        Err(DecodeError::InvalidQoS(3))
    );
    // Password without user name: protocol error before v5 (the password field is then missing
    // too, but the flag check comes first).
    assert!(matches!(
        decode(&connect(b"MQTT", 4, 0x40), V311),
        Err(DecodeError::ProtocolError(_))
    ));
    // Trailing bytes after the last field.
    let mut trailing = connect(b"MQTT", 4, 0x02);
    trailing[1] += 1;
    trailing.push(0x00);
    assert!(matches!(
        decode(&trailing, V311),
        Err(DecodeError::Malformed(_))
    ));
}

#[test]
fn password_without_user_name_is_allowed_in_v5() {
    let packet = Packet::Connect(Box::new(Connect {
        version: V5,
        password: Some(Bytes::from_static(b"secret")),
        ..Default::default()
    }));
    assert_eq!(decode(&encode(&packet, V5), V5), Ok(Some(packet)));
}

#[test]
fn trailing_and_short_packets_are_malformed() {
    // v3.1.1 PUBACK is exactly 2 bytes.
    assert!(matches!(
        decode(&[0x40, 0x03, 0x00, 0x01, 0x00], V311),
        Err(DecodeError::Malformed(_))
    ));
    assert!(matches!(
        decode(&[0x40, 0x01, 0x00], V311),
        Err(DecodeError::Malformed(_))
    ));
    // PINGREQ with a body, v3 DISCONNECT with a body, v3 CONNACK too long.
    assert!(matches!(
        decode(&[0xc0, 0x01, 0x00], V311),
        Err(DecodeError::Malformed(_))
    ));
    assert!(matches!(
        decode(&[0xe0, 0x01, 0x00], V311),
        Err(DecodeError::Malformed(_))
    ));
    assert!(matches!(
        decode(&[0x20, 0x03, 0x00, 0x00, 0x00], V311),
        Err(DecodeError::Malformed(_))
    ));
    // CONNACK reserved acknowledge flags.
    assert!(matches!(
        decode(&[0x20, 0x02, 0x02, 0x00], V311),
        Err(DecodeError::Malformed(_))
    ));
    // v3 UNSUBACK is exactly 2 bytes; v3 SUBACK return code 3 is reserved.
    assert!(matches!(
        decode(&[0xb0, 0x03, 0x00, 0x01, 0x00], V311),
        Err(DecodeError::Malformed(_))
    ));
    assert!(matches!(
        decode(&[0x90, 0x03, 0x00, 0x01, 0x03], V311),
        Err(DecodeError::Malformed(_))
    ));
    // Topic length running past the end of the packet.
    assert!(matches!(
        decode(&[0x30, 0x03, 0x00, 0x05, b'a'], V311),
        Err(DecodeError::Malformed(_))
    ));
    // v5 DISCONNECT with a property block longer than the packet.
    assert!(matches!(
        decode(&[0xe0, 0x02, 0x00, 0x05], V5),
        Err(DecodeError::Malformed(_))
    ));
}

#[test]
fn every_prefix_of_a_large_packet_is_incomplete() {
    let packet = Packet::Publish(Publish {
        qos: QoS::ExactlyOnce,
        topic: Str::from("sensors/temperature"),
        packet_id: 42,
        payload: Bytes::from(vec![7u8; 300]),
        ..Default::default()
    });
    for version in ALL_VERSIONS {
        let encoded = encode(&packet, version);
        for cut in 0..encoded.len() {
            assert_eq!(
                decode(&encoded[..cut], version),
                Ok(None),
                "{version:?} cut at {cut}"
            );
        }
        assert_eq!(decode(&encoded, version), Ok(Some(packet.clone())));
    }
}

// ---------------------------------------------------------------------------------------------
// Encoder errors and small types

#[test]
fn encode_errors_leave_the_buffer_untouched() {
    let long = "x".repeat(70_000);
    let packet = Packet::Publish(Publish {
        topic: Str::from(long.as_str()),
        ..Default::default()
    });
    let mut buf = BytesMut::from(&b"prefix"[..]);
    assert_eq!(
        encode_packet(&packet, V311, &mut buf),
        Err(EncodeError::StringTooLong)
    );
    assert_eq!(&buf[..], b"prefix");
    let outgoing = OutgoingPublish {
        dup: false,
        qos: QoS::AtMostOnce,
        retain: false,
        packet_id: 0,
        topic: &long,
        topic_alias: None,
        subscription_identifiers: &[],
        message_expiry_interval: None,
        properties: &PublishProperties::default(),
        payload: b"",
    };
    assert_eq!(publish_encoded_len(&outgoing, V311), usize::MAX);

    let auth = Packet::Auth(Auth::default());
    assert!(matches!(
        encode_packet(&auth, V311, &mut buf),
        Err(EncodeError::InvalidValue(_))
    ));
    let empty_subscribe = Packet::Subscribe(Subscribe {
        packet_id: 1,
        ..Default::default()
    });
    assert!(matches!(
        encode_packet(&empty_subscribe, V5, &mut buf),
        Err(EncodeError::InvalidValue(_))
    ));
    let zero_id = Packet::PubAck(PubResp::default());
    assert!(matches!(
        encode_packet(&zero_id, V5, &mut buf),
        Err(EncodeError::InvalidValue(_))
    ));
    assert_eq!(&buf[..], b"prefix");
}

#[test]
fn outgoing_publish_fields_override_properties() {
    // The broker reuses the publisher's properties but sets alias, identifiers and expiry per subscriber.
    let properties = PublishProperties {
        topic_alias: Some(9),
        subscription_identifiers: vec![99],
        message_expiry_interval: Some(1000),
        content_type: Some(Str::from("text/plain")),
        ..Default::default()
    };
    let outgoing = OutgoingPublish {
        dup: false,
        qos: QoS::AtLeastOnce,
        retain: true,
        packet_id: 5,
        topic: "",
        topic_alias: Some(3),
        subscription_identifiers: &[1, 2],
        message_expiry_interval: Some(10),
        properties: &properties,
        payload: b"x",
    };
    let mut buf = BytesMut::new();
    encode_publish(&outgoing, V5, &mut buf).unwrap();
    assert_eq!(publish_encoded_len(&outgoing, V5), buf.len());
    let Ok(Some(Packet::Publish(publish))) = decode_packet(&mut buf, V5, PACKET_SIZE_MAX) else {
        panic!("outgoing publish did not decode");
    };
    assert_eq!(publish.topic, "");
    assert_eq!(publish.properties.topic_alias, Some(3));
    assert_eq!(publish.properties.subscription_identifiers, vec![1, 2]);
    assert_eq!(publish.properties.message_expiry_interval, Some(10));
    assert_eq!(
        publish.properties.content_type,
        Some(Str::from("text/plain"))
    );
}

#[test]
fn str_behaves_like_a_string() {
    let value = Str::from("a/b");
    assert_eq!(value.as_str(), "a/b");
    assert_eq!(&*value, "a/b");
    assert_eq!(value.len(), 3);
    assert_eq!(format!("{value}"), "a/b");
    assert_eq!(format!("{value:?}"), "\"a/b\"");
    assert_eq!(Str::from(String::from("a/b")), value);
    assert_eq!(Str::from_static("a/b"), value);
    assert!(Str::new().is_empty());
    assert_eq!(value.clone().into_bytes(), Bytes::from_static(b"a/b"));
    let (lower, higher) = (Str::from("a"), Str::from("b"));
    assert!(lower < higher);
}

#[test]
fn reason_codes() {
    assert!(!ReasonCode::SUCCESS.is_error());
    assert!(!ReasonCode::NO_MATCHING_SUBSCRIBERS.is_error());
    assert!(ReasonCode::UNSPECIFIED_ERROR.is_error());
    assert_eq!(ReasonCode::SUCCESS.to_connack_v3(), connack_v3::ACCEPTED);
    assert_eq!(
        ReasonCode::UNSUPPORTED_PROTOCOL_VERSION.to_connack_v3(),
        connack_v3::UNACCEPTABLE_PROTOCOL_VERSION
    );
    assert_eq!(
        ReasonCode::CLIENT_IDENTIFIER_NOT_VALID.to_connack_v3(),
        connack_v3::IDENTIFIER_REJECTED
    );
    assert_eq!(
        ReasonCode::BAD_USER_NAME_OR_PASSWORD.to_connack_v3(),
        connack_v3::NOT_AUTHORIZED
    );
    assert_eq!(
        ReasonCode::NOT_AUTHORIZED.to_connack_v3(),
        connack_v3::NOT_AUTHORIZED
    );
    assert_eq!(
        ReasonCode::BANNED.to_connack_v3(),
        connack_v3::NOT_AUTHORIZED
    );
    assert_eq!(
        ReasonCode::SERVER_BUSY.to_connack_v3(),
        connack_v3::SERVER_UNAVAILABLE
    );
    assert_eq!(
        ReasonCode::TOPIC_ALIAS_INVALID.name(),
        "Topic Alias invalid"
    );
    assert_eq!(
        DecodeError::InvalidUtf8.reason_code(),
        ReasonCode::MALFORMED_PACKET
    );
}
