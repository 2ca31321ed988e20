//! Fuzzes the WebSocket frame decoder and message assembler: arbitrary bytes, fed in pieces
//! whose size the first byte picks, must never panic; every decoded frame must re-encode
//! (masked, as a client would) and decode to itself, and every frame must be whole-buffer
//! consistent: feeding the same bytes at once yields the same frames.

#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use ringmq_http::ws::{encode_frame_masked, Frame, FrameDecoder, MessageAssembler, WsLimits};

/// Small limits so the size checks are reachable with short inputs.
const LIMITS: WsLimits = WsLimits {
    frame_payload_max: 4096,
    message_bytes_max: 8192,
};

/// Decodes `data` fed `step` bytes at a time, passing frames to an assembler; stops at the
/// first error, as the server closes the connection then.
fn decode(data: &[u8], step: usize) -> Vec<Frame> {
    let mut decoder = FrameDecoder::new(LIMITS);
    let mut assembler = MessageAssembler::new(LIMITS.message_bytes_max);
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    for chunk in data.chunks(step) {
        buf.extend_from_slice(chunk);
        loop {
            match decoder.decode(&mut buf) {
                Ok(Some(frame)) => {
                    assert!(frame.payload.len() <= LIMITS.frame_payload_max);
                    frames.push(frame.clone());
                    if assembler.push(frame).is_err() {
                        return frames;
                    }
                }
                Ok(None) => break,
                Err(_) => return frames,
            }
        }
    }
    frames
}

fuzz_target!(|data: &[u8]| {
    let Some((&first, data)) = data.split_first() else {
        return;
    };
    let step = usize::from(first).max(1);
    let frames = decode(data, step);
    assert_eq!(
        frames,
        decode(data, data.len().max(1)),
        "result depends on read sizes"
    );
    let mut check = FrameDecoder::new(LIMITS);
    for frame in frames {
        let mut encoded = BytesMut::new();
        encode_frame_masked(
            frame.opcode,
            &frame.payload,
            frame.fin,
            [1, 2, 3, 4],
            &mut encoded,
        );
        assert_eq!(check.decode(&mut encoded), Ok(Some(frame)));
        assert!(encoded.is_empty());
    }
});
