//! MQTT over WebSocket (RFC 6455), without a socket: the opening handshake (request,
//! response check, and the server side for the sink), a streaming frame decoder and a frame
//! encoder.
//!
//! This is the loadgen's own implementation, not the broker's (`ringmq-http`), so a bug in one
//! does not hide the same bug in the other.
//!
//! The decoder streams: the payload of a data frame is handed on as it arrives, never
//! collected, so a frame's length costs no memory; a length beyond [`FRAME_BYTES_MAX`] (or an
//! invalid 64-bit one) is an error. MQTT does not care where WebSocket messages begin or end
//! (a frame may carry several MQTT packets or part of one), so fragmented messages are simply
//! concatenated. Control frames (ping, pong, close) are reported to the caller one at a time.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use sha1::{Digest, Sha1};

/// The GUID RFC 6455 section 1.3 appends to the client's key before hashing.
pub const WEBSOCKET_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// Largest payload of one frame the decoder accepts. Payloads stream through without being
/// buffered, so this only refuses nonsense lengths from a hostile or broken peer.
pub const FRAME_BYTES_MAX: u64 = 16 << 20;

/// Largest payload of a control frame (ping, pong, close).
pub const CONTROL_PAYLOAD_MAX: usize = 125;

/// Largest HTTP head (status line and headers) accepted in the opening handshake.
pub const HANDSHAKE_BYTES_MAX: usize = 16 * 1024;

/// Opcodes (RFC 6455 section 5.2).
pub const OP_CONTINUATION: u8 = 0x0;
/// Text frame (not allowed for MQTT).
pub const OP_TEXT: u8 = 0x1;
/// Binary frame: MQTT bytes.
pub const OP_BINARY: u8 = 0x2;
/// Close frame.
pub const OP_CLOSE: u8 = 0x8;
/// Ping frame.
pub const OP_PING: u8 = 0x9;
/// Pong frame.
pub const OP_PONG: u8 = 0xa;

/// Close code: normal closure.
pub const CLOSE_NORMAL: u16 = 1000;

/// Which end of the connection this is: clients mask what they send and must receive
/// unmasked frames; servers the other way round.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// The loadgen's clients.
    Client,
    /// The null sink.
    Server,
}

/// Why a WebSocket peer or handshake was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WsError(pub String);

impl std::fmt::Display for WsError {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(&self.0)
    }
}

fn error<T>(message: impl Into<String>) -> Result<T, WsError> {
    Err(WsError(message.into()))
}

/// The `Sec-WebSocket-Accept` value for `key` (RFC 6455 section 4.2.2).
pub fn accept_key(key: &str) -> String {
    let mut hasher = Sha1::new();
    hasher.update(key.as_bytes());
    hasher.update(WEBSOCKET_GUID.as_bytes());
    BASE64.encode(hasher.finalize())
}

/// A fresh `Sec-WebSocket-Key`: 16 random bytes in base64.
pub fn new_key(random: &mut MaskSource) -> String {
    let mut nonce = [0u8; 16];
    nonce[..8].copy_from_slice(&random.next_u64().to_le_bytes());
    nonce[8..].copy_from_slice(&random.next_u64().to_le_bytes());
    BASE64.encode(nonce)
}

/// The client's upgrade request for `path` on `host` (`Host` header value, with the port).
pub fn client_request(path: &str, host: &str, key: &str) -> Vec<u8> {
    format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: mqtt\r\n\r\n"
    )
    .into_bytes()
}

fn header<'h>(headers: &'h [httparse::Header<'_>], name: &str) -> Option<&'h [u8]> {
    headers
        .iter()
        .find(|header| header.name.eq_ignore_ascii_case(name))
        .map(|header| header.value)
}

fn has_token(value: Option<&[u8]>, token: &str) -> bool {
    value
        .and_then(|value| std::str::from_utf8(value).ok())
        .is_some_and(|value| {
            value
                .split(',')
                .any(|part| part.trim().eq_ignore_ascii_case(token))
        })
}

/// Checks the server's answer to [`client_request`]. `Ok(None)`: the head is not complete
/// yet; `Ok(Some(n))`: the upgrade succeeded and the first `n` bytes were the HTTP head (what
/// follows is WebSocket frames).
pub fn check_response(buffer: &[u8], key: &str) -> Result<Option<usize>, WsError> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut response = httparse::Response::new(&mut headers);
    let head_len = match response.parse(buffer) {
        Ok(httparse::Status::Complete(head_len)) => head_len,
        Ok(httparse::Status::Partial) if buffer.len() >= HANDSHAKE_BYTES_MAX => {
            return error(format!(
                "the upgrade response head exceeds {HANDSHAKE_BYTES_MAX} bytes"
            ))
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) if matches!(buffer, [0x15 | 0x16, 0x03, ..]) => {
            return error("the broker answered with TLS: the port is a wss listener (add --tls)")
        }
        Err(parse_error) => {
            let start = String::from_utf8_lossy(&buffer[..buffer.len().min(40)]).into_owned();
            return error(format!(
                "the answer to the upgrade request is not HTTP ({parse_error}): {start:?}"
            ));
        }
    };
    let code = response.code.unwrap_or(0);
    if code != 101 {
        return error(format!(
            "upgrade refused: HTTP {code} {} (is the path right? see --ws-path)",
            response.reason.unwrap_or("")
        ));
    }
    let headers = response.headers;
    if !has_token(header(headers, "upgrade"), "websocket") {
        return error("101 response without `Upgrade: websocket`");
    }
    if !has_token(header(headers, "connection"), "upgrade") {
        return error("101 response without `Connection: Upgrade`");
    }
    let expected = accept_key(key);
    match header(headers, "sec-websocket-accept") {
        Some(value) if value.trim_ascii() == expected.as_bytes() => {}
        Some(value) => {
            return error(format!(
                "Sec-WebSocket-Accept is {:?}, expected {expected:?}",
                String::from_utf8_lossy(value)
            ))
        }
        None => return error("101 response without Sec-WebSocket-Accept"),
    }
    // RFC 6455 4.1: a server may pick no subprotocol, but never one that was not offered.
    if let Some(protocol) = header(headers, "sec-websocket-protocol") {
        if protocol.trim_ascii() != b"mqtt" {
            return error(format!(
                "the server chose subprotocol {:?}, not mqtt",
                String::from_utf8_lossy(protocol)
            ));
        }
    }
    Ok(Some(head_len))
}

/// What the sink makes of a client's upgrade request: `Ok(None)`: incomplete;
/// `Ok(Some((head_len, response)))`: the 101 to send.
pub fn server_accept(buffer: &[u8]) -> Result<Option<(usize, Vec<u8>)>, WsError> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut request = httparse::Request::new(&mut headers);
    let head_len = match request.parse(buffer) {
        Ok(httparse::Status::Complete(head_len)) => head_len,
        Ok(httparse::Status::Partial) if buffer.len() >= HANDSHAKE_BYTES_MAX => {
            return error("upgrade request head too large")
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(parse_error) => return error(format!("not an HTTP request: {parse_error}")),
    };
    if request.method != Some("GET") {
        return error("upgrade request is not a GET");
    }
    let headers = request.headers;
    if !has_token(header(headers, "upgrade"), "websocket") {
        return error("upgrade request without `Upgrade: websocket`");
    }
    let Some(key) = header(headers, "sec-websocket-key")
        .and_then(|key| std::str::from_utf8(key).ok())
        .map(str::trim)
    else {
        return error("upgrade request without Sec-WebSocket-Key");
    };
    let mut response = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
Sec-WebSocket-Accept: {}\r\n",
        accept_key(key)
    );
    if has_token(header(headers, "sec-websocket-protocol"), "mqtt") {
        response.push_str("Sec-WebSocket-Protocol: mqtt\r\n");
    }
    response.push_str("\r\n");
    Ok(Some((head_len, response.into_bytes())))
}

/// Masking keys (and handshake nonces): xorshift64* seeded from the OS per connection.
/// RFC 6455 wants keys a proxy cannot predict; this is a load generator, not a browser.
#[derive(Clone, Debug)]
pub struct MaskSource(u64);

impl MaskSource {
    /// A source seeded from the operating system's random numbers.
    pub fn new() -> MaskSource {
        let mut seed = [0u8; 8];
        if getrandom::getrandom(&mut seed).is_err() {
            // No OS randomness: the clock and the address of a local still differ per call.
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |elapsed| elapsed.as_nanos() as u64);
            seed = (nanos ^ (&seed as *const _ as u64)).to_le_bytes();
        }
        MaskSource(u64::from_le_bytes(seed) | 1)
    }

    /// A source with a fixed seed (tests).
    #[cfg(test)]
    pub fn seeded(seed: u64) -> MaskSource {
        MaskSource(seed | 1)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// The next masking key.
    pub fn next_mask(&mut self) -> [u8; 4] {
        (self.next_u64() as u32).to_le_bytes()
    }
}

impl Default for MaskSource {
    fn default() -> Self {
        MaskSource::new()
    }
}

/// XORs `data` with `mask`, `data[0]` taking `mask[offset % 4]`.
pub fn apply_mask(data: &mut [u8], mask: [u8; 4], offset: usize) {
    let rotated = {
        let shift = offset % 4;
        [
            mask[shift],
            mask[(shift + 1) % 4],
            mask[(shift + 2) % 4],
            mask[(shift + 3) % 4],
        ]
    };
    let word = u32::from_ne_bytes(rotated);
    let wide = u64::from(word) | (u64::from(word) << 32);
    let mut chunks = data.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let value = u64::from_ne_bytes([
            chunk[0], chunk[1], chunk[2], chunk[3], chunk[4], chunk[5], chunk[6], chunk[7],
        ]) ^ wide;
        chunk.copy_from_slice(&value.to_ne_bytes());
    }
    for (index, byte) in chunks.into_remainder().iter_mut().enumerate() {
        *byte ^= rotated[index % 4];
    }
}

/// Appends one frame (FIN set) carrying `payload`, masked when `mask` is given.
pub fn encode_frame(opcode: u8, payload: &[u8], mask: Option<[u8; 4]>, out: &mut Vec<u8>) {
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    out.push(0x80 | opcode);
    let length = payload.len();
    if length < 126 {
        out.push(mask_bit | length as u8);
    } else if length <= usize::from(u16::MAX) {
        out.push(mask_bit | 126);
        out.extend_from_slice(&(length as u16).to_be_bytes());
    } else {
        out.push(mask_bit | 127);
        out.extend_from_slice(&(length as u64).to_be_bytes());
    }
    match mask {
        Some(key) => {
            out.extend_from_slice(&key);
            let payload_start = out.len();
            out.extend_from_slice(payload);
            apply_mask(&mut out[payload_start..], key, 0);
        }
        None => out.extend_from_slice(payload),
    }
}

/// A control frame received: ping, pong or close.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Control {
    /// A ping; it must be answered with a pong carrying the same payload.
    Ping(Vec<u8>),
    /// A pong (ignored).
    Pong,
    /// A close frame, with its status code if it had one.
    Close(Option<u16>),
}

/// What one call to [`Decoder::decode`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Decoded {
    /// Input bytes used (the rest must be offered again, with more after it).
    pub consumed: usize,
    /// Payload bytes appended to `out`.
    pub produced: usize,
    /// A control frame; decoding stops after each one so the caller can answer it.
    pub control: Option<Control>,
}

/// The streaming frame decoder (see the module documentation).
#[derive(Clone, Debug)]
pub struct Decoder {
    role: Role,
    /// Payload bytes of the current data frame still to come.
    frame_left: u64,
    /// The current data frame's masking key (frames from clients) and the position in it.
    mask: Option<[u8; 4]>,
    mask_offset: usize,
    /// A fragmented message is open: only continuation frames may follow.
    in_message: bool,
    /// A close frame arrived: nothing after it counts.
    closed: bool,
}

impl Decoder {
    /// A decoder for the `role` end of the connection.
    pub fn new(role: Role) -> Decoder {
        Decoder {
            role,
            frame_left: 0,
            mask: None,
            mask_offset: 0,
            in_message: false,
            closed: false,
        }
    }

    /// Whether a close frame arrived.
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// Decodes what it can of `input`, appending at most `room` payload bytes to `out`.
    pub fn decode(
        &mut self,
        input: &[u8],
        out: &mut Vec<u8>,
        room: usize,
    ) -> Result<Decoded, WsError> {
        let mut done = Decoded::default();
        while !self.closed {
            if self.frame_left > 0 {
                let available = input.len() - done.consumed;
                let take =
                    (self.frame_left.min(available as u64) as usize).min(room - done.produced);
                if take == 0 {
                    break;
                }
                let start = out.len();
                out.extend_from_slice(&input[done.consumed..done.consumed + take]);
                if let Some(mask) = self.mask {
                    apply_mask(&mut out[start..], mask, self.mask_offset);
                    self.mask_offset += take;
                }
                done.consumed += take;
                done.produced += take;
                self.frame_left -= take as u64;
                continue;
            }
            let Some((header, payload_len)) = self.parse_header(&input[done.consumed..])? else {
                break;
            };
            if header.opcode >= OP_CLOSE {
                let payload_len = payload_len as usize;
                let Some(payload) =
                    input.get(done.consumed + header.len..done.consumed + header.len + payload_len)
                else {
                    break;
                };
                let mut payload = payload.to_vec();
                if let Some(mask) = header.mask {
                    apply_mask(&mut payload, mask, 0);
                }
                done.consumed += header.len + payload_len;
                done.control = Some(match header.opcode {
                    OP_PING => Control::Ping(payload),
                    OP_PONG => Control::Pong,
                    _ => {
                        self.closed = true;
                        if payload.len() == 1 {
                            return error("close frame with a 1-byte payload");
                        }
                        Control::Close(
                            (payload.len() >= 2)
                                .then(|| u16::from_be_bytes([payload[0], payload[1]])),
                        )
                    }
                });
                return Ok(done);
            }
            done.consumed += header.len;
            self.in_message = !header.fin;
            self.frame_left = payload_len;
            self.mask = header.mask;
            self.mask_offset = 0;
        }
        Ok(done)
    }

    /// Parses and checks the frame header at the start of `input`; `None` if incomplete.
    fn parse_header(&self, input: &[u8]) -> Result<Option<(Header, u64)>, WsError> {
        let (Some(&first), Some(&second)) = (input.first(), input.get(1)) else {
            return Ok(None);
        };
        let fin = first & 0x80 != 0;
        if first & 0x70 != 0 {
            return error(format!(
                "frame with reserved bits 0x{:02x} set (no extension was agreed)",
                first & 0x70
            ));
        }
        let opcode = first & 0x0f;
        let masked = second & 0x80 != 0;
        match (self.role, masked) {
            (Role::Client, true) => return error("masked frame from the server (RFC 6455 5.1)"),
            (Role::Server, false) => return error("unmasked frame from a client (RFC 6455 5.1)"),
            _ => {}
        }
        let (length, mut header_len) = match second & 0x7f {
            126 => match input.get(2..4) {
                Some(bytes) => (u64::from(u16::from_be_bytes([bytes[0], bytes[1]])), 4),
                None => return Ok(None),
            },
            127 => match input.get(2..10) {
                Some(bytes) => {
                    let mut wide = [0u8; 8];
                    wide.copy_from_slice(bytes);
                    let length = u64::from_be_bytes(wide);
                    if length >> 63 != 0 {
                        return error(format!("frame length {length:#x} has its top bit set"));
                    }
                    (length, 10)
                }
                None => return Ok(None),
            },
            short => (u64::from(short), 2),
        };
        match opcode {
            OP_CONTINUATION if !self.in_message => {
                return error("continuation frame outside a fragmented message")
            }
            OP_CONTINUATION => {}
            OP_BINARY if self.in_message => {
                return error("new data frame inside a fragmented message")
            }
            OP_BINARY => {}
            OP_TEXT => return error("text frame (MQTT over WebSocket is binary only)"),
            OP_CLOSE | OP_PING | OP_PONG => {
                if !fin {
                    return error("fragmented control frame");
                }
                if length > CONTROL_PAYLOAD_MAX as u64 {
                    return error(format!("control frame of {length} bytes (at most 125)"));
                }
            }
            reserved => return error(format!("reserved opcode 0x{reserved:x}")),
        }
        if length > FRAME_BYTES_MAX {
            return error(format!(
                "frame of {length} bytes exceeds the {FRAME_BYTES_MAX}-byte limit"
            ));
        }
        let mask = if masked {
            let Some(key) = input.get(header_len..header_len + 4) else {
                return Ok(None);
            };
            header_len += 4;
            Some([key[0], key[1], key[2], key[3]])
        } else {
            None
        };
        Ok(Some((
            Header {
                fin,
                opcode,
                mask,
                len: header_len,
            },
            length,
        )))
    }
}

#[derive(Clone, Copy, Debug)]
struct Header {
    fin: bool,
    opcode: u8,
    mask: Option<[u8; 4]>,
    len: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes `input` offered in pieces of `step` bytes (as reads would deliver it).
    fn decode_in_steps(
        decoder: &mut Decoder,
        input: &[u8],
        step: usize,
        room: usize,
    ) -> Result<(Vec<u8>, Vec<Control>), WsError> {
        let mut out = Vec::new();
        let mut controls = Vec::new();
        let mut pending: Vec<u8> = Vec::new();
        let mut fed = 0;
        loop {
            if fed < input.len() {
                let end = (fed + step).min(input.len());
                pending.extend_from_slice(&input[fed..end]);
                fed = end;
            }
            loop {
                let before = out.len();
                let decoded = decoder.decode(&pending, &mut out, room)?;
                assert_eq!(out.len() - before, decoded.produced);
                assert!(decoded.produced <= room);
                pending.drain(..decoded.consumed);
                if let Some(control) = decoded.control {
                    controls.push(control);
                    continue;
                }
                if decoded.consumed == 0 && decoded.produced == 0 {
                    break;
                }
            }
            if fed == input.len() {
                return Ok((out, controls));
            }
        }
    }

    #[test]
    fn accept_key_matches_rfc_example() {
        // RFC 6455 section 1.3.
        assert_eq!(
            accept_key("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn masked_frame_matches_rfc_example() {
        // RFC 6455 section 5.7: a masked "Hello" (as text; the bytes are what matter).
        let mut out = Vec::new();
        encode_frame(OP_TEXT, b"Hello", Some([0x37, 0xfa, 0x21, 0x3d]), &mut out);
        assert_eq!(
            out,
            [0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58]
        );
    }

    #[test]
    fn mask_is_its_own_inverse_at_any_offset() {
        let data: Vec<u8> = (0..=255u8).cycle().take(1000).collect();
        let key = [1, 2, 3, 0xf0];
        for offset in 0..8 {
            let mut masked = data.clone();
            apply_mask(&mut masked, key, offset);
            for (index, (&plain, &byte)) in data.iter().zip(&masked).enumerate() {
                assert_eq!(plain ^ key[(index + offset) % 4], byte);
            }
            apply_mask(&mut masked, key, offset);
            assert_eq!(masked, data);
        }
    }

    #[test]
    fn frames_round_trip_for_every_length_class() {
        let mut random = MaskSource::seeded(7);
        for length in [0usize, 1, 125, 126, 127, 65_535, 65_536, 200_000] {
            let payload: Vec<u8> = (0..length).map(|index| (index * 31) as u8).collect();
            // Client to server: masked.
            let mut wire = Vec::new();
            encode_frame(OP_BINARY, &payload, Some(random.next_mask()), &mut wire);
            let mut server = Decoder::new(Role::Server);
            let (out, controls) = decode_in_steps(&mut server, &wire, 7919, 1 << 20).unwrap();
            assert_eq!(out, payload, "length {length}");
            assert!(controls.is_empty());
            // Server to client: unmasked.
            let mut wire = Vec::new();
            encode_frame(OP_BINARY, &payload, None, &mut wire);
            let mut client = Decoder::new(Role::Client);
            let (out, _) = decode_in_steps(&mut client, &wire, 3, 4096).unwrap();
            assert_eq!(out, payload, "length {length}");
        }
    }

    #[test]
    fn fragmented_messages_and_interleaved_control_frames() {
        // "MQTT" in three fragments with a ping between the second and the third (RFC 6455
        // 5.4 allows control frames in the middle of a fragmented message), then a pong.
        let mut wire = vec![0x02, 0x01, b'M']; // binary, FIN clear
        wire.extend_from_slice(&[0x00, 0x02, b'Q', b'T']); // continuation, FIN clear
        wire.extend_from_slice(&[0x89, 0x02, b'h', b'i']); // ping "hi"
        wire.extend_from_slice(&[0x80, 0x01, b'T']); // continuation, FIN set
        wire.extend_from_slice(&[0x8a, 0x00]); // pong
        wire.extend_from_slice(&[0x82, 0x02, 0xc0, 0x00]); // a whole binary frame
        for step in [1, 2, 5, wire.len()] {
            let mut decoder = Decoder::new(Role::Client);
            let (out, controls) = decode_in_steps(&mut decoder, &wire, step, 1 << 16).unwrap();
            assert_eq!(out, b"MQTT\xc0\x00", "step {step}");
            assert_eq!(
                controls,
                vec![Control::Ping(b"hi".to_vec()), Control::Pong],
                "step {step}"
            );
        }
    }

    #[test]
    fn room_bounds_the_output_of_one_call() {
        let payload = vec![9u8; 10_000];
        let mut wire = Vec::new();
        encode_frame(OP_BINARY, &payload, None, &mut wire);
        let mut decoder = Decoder::new(Role::Client);
        let mut out = Vec::new();
        let first = decoder.decode(&wire, &mut out, 1000).unwrap();
        assert_eq!(first.produced, 1000);
        let rest = decoder
            .decode(&wire[first.consumed..], &mut out, 1 << 20)
            .unwrap();
        assert_eq!(first.consumed + rest.consumed, wire.len());
        assert_eq!(out, payload);
    }

    #[test]
    fn oversized_and_invalid_lengths_are_errors_not_allocations() {
        // 64-bit length of 2^40 bytes: refused from the header alone.
        let mut wire = vec![0x82, 127];
        wire.extend_from_slice(&(1u64 << 40).to_be_bytes());
        let mut decoder = Decoder::new(Role::Client);
        let mut out = Vec::new();
        let refused = decoder.decode(&wire, &mut out, 1 << 20).unwrap_err();
        assert!(refused.0.contains("exceeds"), "{refused}");
        assert!(out.capacity() < 1 << 20);
        // The top bit of a 64-bit length must be clear.
        let mut wire = vec![0x82, 127];
        wire.extend_from_slice(&u64::MAX.to_be_bytes());
        assert!(Decoder::new(Role::Client)
            .decode(&wire, &mut Vec::new(), 16)
            .unwrap_err()
            .0
            .contains("top bit"));
        // Just over the limit.
        let mut wire = vec![0x82, 127];
        wire.extend_from_slice(&(FRAME_BYTES_MAX + 1).to_be_bytes());
        assert!(Decoder::new(Role::Client)
            .decode(&wire, &mut Vec::new(), 16)
            .is_err());
        // A control frame longer than 125 bytes.
        assert!(Decoder::new(Role::Client)
            .decode(&[0x89, 126, 0, 200], &mut Vec::new(), 16)
            .is_err());
    }

    #[test]
    fn protocol_violations_are_errors() {
        let cases: [(&[u8], &str); 7] = [
            (&[0x82, 0x81, 1, 2, 3, 4, 0], "masked frame from the server"),
            (&[0x81, 0x01, b'a'], "text frame"),
            (&[0x80, 0x01, b'a'], "continuation frame outside"),
            (
                &[0x02, 0x01, b'a', 0x82, 0x00],
                "inside a fragmented message",
            ),
            (&[0x09, 0x00], "fragmented control frame"),
            (&[0xc2, 0x00], "reserved bits"),
            (&[0x83, 0x00], "reserved opcode"),
        ];
        for (wire, expected) in cases {
            let outcome = decode_in_steps(&mut Decoder::new(Role::Client), wire, wire.len(), 64);
            let message = outcome.unwrap_err().0;
            assert!(message.contains(expected), "{wire:?}: {message}");
        }
        let unmasked = Decoder::new(Role::Server).decode(&[0x82, 0x00], &mut Vec::new(), 16);
        assert!(unmasked.unwrap_err().0.contains("unmasked"));
    }

    #[test]
    fn close_ends_the_stream() {
        let wire = [0x88, 0x02, 0x03, 0xe8, 0x82, 0x01, b'x'];
        let mut decoder = Decoder::new(Role::Client);
        let mut out = Vec::new();
        let decoded = decoder.decode(&wire, &mut out, 64).unwrap();
        assert_eq!(decoded.control, Some(Control::Close(Some(CLOSE_NORMAL))));
        assert!(decoder.is_closed());
        let after = decoder
            .decode(&wire[decoded.consumed..], &mut out, 64)
            .unwrap();
        assert_eq!(after, Decoded::default());
        assert!(out.is_empty());
    }

    #[test]
    fn handshake_round_trip_and_refusals() {
        let mut random = MaskSource::seeded(1);
        let key = new_key(&mut random);
        let request = client_request("/mqtt", "127.0.0.1:8083", &key);
        let text = String::from_utf8(request.clone()).unwrap();
        assert!(text.starts_with("GET /mqtt HTTP/1.1\r\n"));
        assert!(text.contains("Sec-WebSocket-Protocol: mqtt\r\n"));
        assert_eq!(server_accept(&request[..10]).unwrap(), None);
        let (head_len, response) = server_accept(&request).unwrap().unwrap();
        assert_eq!(head_len, request.len());
        let mut answer = response.clone();
        answer.extend_from_slice(&[0x82, 0x00]);
        assert_eq!(check_response(&answer, &key), Ok(Some(response.len())));
        assert_eq!(check_response(&response[..20], &key), Ok(None));
        // Wrong accept key (answer to another key).
        let wrong = check_response(&response, "AAAAAAAAAAAAAAAAAAAAAA==").unwrap_err();
        assert!(wrong.0.contains("Sec-WebSocket-Accept"), "{wrong}");
        // Refused upgrade.
        let refused = check_response(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n", &key)
            .unwrap_err();
        assert!(refused.0.contains("404"), "{refused}");
        // Not HTTP at all (an MQTT CONNACK).
        assert!(check_response(&[0x20, 0x02, 0x00, 0x00], &key).is_err());
        // Another subprotocol.
        let accept = accept_key(&key);
        let other = format!(
            "HTTP/1.1 101 OK\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\
             Sec-WebSocket-Accept: {accept}\r\nSec-WebSocket-Protocol: chat\r\n\r\n"
        );
        assert!(check_response(other.as_bytes(), &key).is_err());
        // An endless head.
        let endless = vec![b'a'; HANDSHAKE_BYTES_MAX];
        let mut endless_response = b"HTTP/1.1 101 OK\r\nX: ".to_vec();
        endless_response.extend_from_slice(&endless);
        assert!(check_response(&endless_response, &key).is_err());
    }
}
