//! Fuzzes the MQTT decoder: arbitrary bytes are decoded as every protocol version until the
//! buffer runs dry or an error stops it; every decoded packet must re-encode and decode to
//! itself.

#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use ringmq::mqtt::{decode_packet, encode_packet, ProtocolVersion};

/// Large enough that the limit never hides decoder paths, small enough to stay bounded.
const PACKET_SIZE_MAX: u32 = 1 << 20;

fuzz_target!(|data: &[u8]| {
    for version in [ProtocolVersion::V31, ProtocolVersion::V311, ProtocolVersion::V5] {
        let mut buf = BytesMut::from(data);
        while let Ok(Some(packet)) = decode_packet(&mut buf, version, PACKET_SIZE_MAX) {
            let mut encoded = BytesMut::new();
            encode_packet(&packet, version, &mut encoded).expect("a decoded packet must re-encode");
            let again = decode_packet(&mut encoded, version, PACKET_SIZE_MAX);
            assert_eq!(again, Ok(Some(packet)));
            assert!(encoded.is_empty(), "re-encoded packet not fully consumed");
        }
    }
});
