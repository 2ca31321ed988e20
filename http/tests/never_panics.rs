//! Property tests: arbitrary bytes never panic the head parser or the body decoder.

use bytes::BytesMut;
use proptest::prelude::*;
use ringmq_http::{parse_head, BodyDecoder, BodyEvent, Limits};

/// Small limits so the oversize paths are exercised too.
fn small_limits() -> Limits {
    Limits {
        head_bytes_max: 256,
        headers_count_max: 8,
        body_bytes_max: 512,
    }
}

/// Drives a decoder over `input` fed in `step`-byte pieces until it finishes, fails or starves.
fn drive(mut decoder: BodyDecoder, input: &[u8], step: usize) {
    let mut buf = BytesMut::new();
    let mut fed = 0;
    let mut total = 0u64;
    loop {
        match decoder.decode(&mut buf) {
            Ok(BodyEvent::Data(data)) => {
                assert!(!data.is_empty());
                total += data.len() as u64;
                assert!(total <= 512);
            }
            Ok(BodyEvent::Done) | Err(_) => return,
            Ok(BodyEvent::NeedMore) => {
                if fed == input.len() {
                    return;
                }
                let end = (fed + step).min(input.len());
                buf.extend_from_slice(&input[fed..end]);
                fed = end;
            }
        }
    }
}

/// Bytes that look somewhat like HTTP, so the parser gets past the first byte often.
fn http_ish() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        Just(b"GET / HTTP/1.1\r\n".to_vec()),
        Just(b"POST /v1/publish HTTP/1.0\r\n".to_vec()),
        Just(b"Content-Length: 12\r\n".to_vec()),
        Just(b"Transfer-Encoding: chunked\r\n".to_vec()),
        Just(b"Connection: close\r\n".to_vec()),
        Just(b"\r\n".to_vec()),
        Just(b"5;x=y\r\nhello\r\n".to_vec()),
        Just(b"0\r\nA: b\r\n\r\n".to_vec()),
        proptest::collection::vec(any::<u8>(), 0..16),
    ];
    proptest::collection::vec(piece, 0..24).prop_map(|pieces| pieces.concat())
}

proptest! {
    #[test]
    fn parse_head_never_panics(input in proptest::collection::vec(any::<u8>(), 0..600)) {
        let limits = small_limits();
        if let Ok(Some((_, consumed))) = parse_head(&input, &limits) {
            prop_assert!(consumed <= input.len().min(limits.head_bytes_max));
        }
    }

    #[test]
    fn parse_head_never_panics_on_http_ish(input in http_ish()) {
        let limits = small_limits();
        if let Ok(Some((_, consumed))) = parse_head(&input, &limits) {
            prop_assert!(consumed <= input.len());
        }
    }

    #[test]
    fn body_decoder_never_panics(
        input in prop_oneof![http_ish(), proptest::collection::vec(any::<u8>(), 0..600)],
        step in 1usize..32,
        length in 0u64..1024,
    ) {
        drive(BodyDecoder::chunked(512), &input, step);
        if let Ok(decoder) = BodyDecoder::content_length(length, 512) {
            drive(decoder, &input, step);
        }
    }
}
