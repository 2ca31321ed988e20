//! WebSocket (RFC 6455), server side: the upgrade handshake, a frame decoder, a message
//! assembler and frame encoders, with no socket.
//!
//! The shard loop checks an upgrade request with [`check_upgrade`], writes the 101 from
//! [`Upgrade::encode_response`], then feeds the connection's read buffer to a [`FrameDecoder`]
//! and each frame to a [`MessageAssembler`]. Any [`WsError`] ends the connection with a close
//! frame carrying [`WsError::close_code`].

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use bytes::{Buf, BufMut, Bytes, BytesMut};
use sha1::{Digest, Sha1};

use crate::request::{Method, RequestHead};
use crate::response::Response;

/// The GUID RFC 6455 section 1.3 appends to the client's key before hashing.
pub const WEBSOCKET_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// The only protocol version RFC 6455 defines.
pub const WEBSOCKET_VERSION: &str = "13";

/// Most subprotocols accepted in `Sec-WebSocket-Protocol`; browsers offer one or two.
pub const PROTOCOLS_MAX: usize = 16;

/// Longest subprotocol token accepted.
pub const PROTOCOL_BYTES_MAX: usize = 64;

/// Largest payload of a control frame (ping, pong, close).
pub const CONTROL_PAYLOAD_MAX: usize = 125;

/// Close code: normal closure.
pub const CLOSE_NORMAL: u16 = 1000;
/// Close code: the endpoint is going away (server shutdown, page navigation).
pub const CLOSE_GOING_AWAY: u16 = 1001;
/// Close code: protocol error.
pub const CLOSE_PROTOCOL_ERROR: u16 = 1002;
/// Close code: a text message (or close reason) is not valid UTF-8.
pub const CLOSE_INVALID_PAYLOAD: u16 = 1007;
/// Close code: the message violates a policy (auth, ACL).
pub const CLOSE_POLICY_VIOLATION: u16 = 1008;
/// Close code: a frame or message is larger than we accept.
pub const CLOSE_MESSAGE_TOO_BIG: u16 = 1009;
/// Close code: the server hit an unexpected condition.
pub const CLOSE_INTERNAL_ERROR: u16 = 1011;

/// The `Sec-WebSocket-Accept` value for a client's `Sec-WebSocket-Key` (RFC 6455 section 4.2.2).
pub fn accept_key(client_key: &str) -> String {
    let mut hasher = Sha1::new();
    hasher.update(client_key.as_bytes());
    hasher.update(WEBSOCKET_GUID.as_bytes());
    BASE64.encode(hasher.finalize())
}

/// Why an upgrade request was refused; each maps to the status it is answered with.
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
pub enum UpgradeError {
    /// The method is not GET (405).
    #[error("WebSocket upgrade must use GET")]
    NotGet,
    /// The request is HTTP/1.0 (400).
    #[error("WebSocket upgrade needs HTTP/1.1")]
    NotHttp11,
    /// `Upgrade` does not list `websocket` (426).
    #[error("Upgrade header does not offer websocket")]
    NoUpgradeWebSocket,
    /// `Connection` does not list `upgrade` (400).
    #[error("Connection header does not list upgrade")]
    NoConnectionUpgrade,
    /// `Sec-WebSocket-Version` is missing or not 13 (426).
    #[error("Sec-WebSocket-Version must be 13")]
    UnsupportedVersion,
    /// `Sec-WebSocket-Key` is missing, repeated, or not 16 bytes in base64 (400).
    #[error("Sec-WebSocket-Key must be 16 bytes in base64")]
    InvalidKey,
    /// `Sec-WebSocket-Protocol` has an empty or non-token entry, or too many (400).
    #[error("invalid Sec-WebSocket-Protocol list")]
    InvalidProtocols,
}

impl UpgradeError {
    /// The HTTP status code to answer this error with.
    pub fn status(&self) -> u16 {
        match self {
            UpgradeError::NotGet => 405,
            UpgradeError::NoUpgradeWebSocket | UpgradeError::UnsupportedVersion => 426,
            UpgradeError::NotHttp11
            | UpgradeError::NoConnectionUpgrade
            | UpgradeError::InvalidKey
            | UpgradeError::InvalidProtocols => 400,
        }
    }

    /// The JSON error response for this error, with the headers RFC 6455 and RFC 9110 ask for.
    pub fn response(&self) -> Response {
        let status = self.status();
        let response = Response::error(
            status,
            crate::response::error_code(status),
            &self.to_string(),
        );
        match self {
            UpgradeError::NotGet => response.with_header("Allow", "GET"),
            // RFC 6455 4.4: tell the client which version we speak.
            UpgradeError::UnsupportedVersion => {
                response.with_header("Sec-WebSocket-Version", WEBSOCKET_VERSION)
            }
            // RFC 9110 15.5.22: a 426 names the protocol to upgrade to.
            UpgradeError::NoUpgradeWebSocket => response
                .with_header("Upgrade", "websocket")
                .with_header("Connection", "Upgrade"),
            _ => response,
        }
    }
}

/// A valid WebSocket upgrade request: what the 101 needs and the subprotocols offered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Upgrade {
    /// The client's `Sec-WebSocket-Key`, as sent (trimmed).
    pub key: String,
    /// Subprotocols offered, in the client's order of preference; at most [`PROTOCOLS_MAX`].
    pub protocols: Vec<String>,
}

impl Upgrade {
    /// Whether the client offered `protocol` (subprotocol names are case-sensitive).
    pub fn offers(&self, protocol: &str) -> bool {
        self.protocols.iter().any(|offered| offered == protocol)
    }

    /// The 101 response, choosing `protocol` (which must be one the client offered, or None).
    ///
    /// `Response::encode` appends its own `Connection` header, so send
    /// [`Upgrade::encode_response`] instead; this is for callers that add headers first.
    pub fn response(&self, protocol: Option<&str>) -> Response {
        let mut response = Response::new(101)
            .with_header("Upgrade", "websocket")
            .with_header("Connection", "Upgrade")
            .with_header("Sec-WebSocket-Accept", accept_key(&self.key));
        if let Some(protocol) = protocol {
            response = response.with_header("Sec-WebSocket-Protocol", protocol);
        }
        response
    }

    /// Appends the complete 101 response (status line, headers, blank line) to `out`.
    pub fn encode_response(&self, protocol: Option<&str>, out: &mut BytesMut) {
        out.put_slice(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n");
        out.put_slice(b"Connection: Upgrade\r\nSec-WebSocket-Accept: ");
        out.put_slice(accept_key(&self.key).as_bytes());
        out.put_slice(b"\r\n");
        // Only a token may go on the wire, so a caller's mistake cannot inject headers.
        if let Some(protocol) = protocol.filter(|protocol| is_token(protocol)) {
            out.put_slice(b"Sec-WebSocket-Protocol: ");
            out.put_slice(protocol.as_bytes());
            out.put_slice(b"\r\n");
        }
        out.put_slice(b"\r\n");
    }
}

/// Checks that `head` is a WebSocket upgrade request (RFC 6455 section 4.2.1).
pub fn check_upgrade(head: &RequestHead) -> Result<Upgrade, UpgradeError> {
    if head.method != Method::Get {
        return Err(UpgradeError::NotGet);
    }
    if head.version_minor != 1 {
        return Err(UpgradeError::NotHttp11);
    }
    if !header_tokens(head, "upgrade").any(|token| token.eq_ignore_ascii_case("websocket")) {
        return Err(UpgradeError::NoUpgradeWebSocket);
    }
    if !header_tokens(head, "connection").any(|token| token.eq_ignore_ascii_case("upgrade")) {
        return Err(UpgradeError::NoConnectionUpgrade);
    }
    let mut versions = header_values(head, "sec-websocket-version");
    if versions.next().map(str::trim) != Some(WEBSOCKET_VERSION) || versions.next().is_some() {
        return Err(UpgradeError::UnsupportedVersion);
    }
    let mut keys = header_values(head, "sec-websocket-key");
    let key = keys.next().map(str::trim).ok_or(UpgradeError::InvalidKey)?;
    if keys.next().is_some() || !matches!(BASE64.decode(key), Ok(nonce) if nonce.len() == 16) {
        return Err(UpgradeError::InvalidKey);
    }
    let mut protocols = Vec::new();
    for protocol in header_values(head, "sec-websocket-protocol").flat_map(|value| value.split(','))
    {
        let protocol = protocol.trim_matches([' ', '\t']);
        if !is_token(protocol)
            || protocol.len() > PROTOCOL_BYTES_MAX
            || protocols.len() == PROTOCOLS_MAX
        {
            return Err(UpgradeError::InvalidProtocols);
        }
        protocols.push(protocol.to_string());
    }
    Ok(Upgrade {
        key: key.to_string(),
        protocols,
    })
}

/// Values of every header named `name` (already lowercase in the head).
fn header_values<'a>(head: &'a RequestHead, name: &'a str) -> impl Iterator<Item = &'a str> {
    head.headers
        .iter()
        .filter(move |(header, _)| header.eq_ignore_ascii_case(name))
        .map(|(_, value)| value.as_str())
}

/// Comma-separated tokens across every header named `name`, trimmed, empty ones skipped.
fn header_tokens<'a>(head: &'a RequestHead, name: &'a str) -> impl Iterator<Item = &'a str> {
    header_values(head, name)
        .flat_map(|value| value.split(','))
        .map(|token| token.trim_matches([' ', '\t']))
        .filter(|token| !token.is_empty())
}

/// Whether `text` is a non-empty HTTP token (RFC 9110 5.6.2).
fn is_token(text: &str) -> bool {
    !text.is_empty()
        && text
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&byte))
}

/// A frame opcode (RFC 6455 section 5.2); reserved opcodes are refused by the decoder.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Opcode {
    /// Continues a fragmented text or binary message.
    Continuation,
    /// Starts a text message.
    Text,
    /// Starts a binary message.
    Binary,
    /// Close handshake.
    Close,
    /// Ping; answered with a pong carrying the same payload.
    Ping,
    /// Pong.
    Pong,
}

impl Opcode {
    /// The opcode for a 4-bit value, or None for the reserved ones.
    pub fn from_u8(value: u8) -> Option<Opcode> {
        match value {
            0x0 => Some(Opcode::Continuation),
            0x1 => Some(Opcode::Text),
            0x2 => Some(Opcode::Binary),
            0x8 => Some(Opcode::Close),
            0x9 => Some(Opcode::Ping),
            0xa => Some(Opcode::Pong),
            _ => None,
        }
    }

    /// The 4-bit wire value.
    pub fn as_u8(self) -> u8 {
        match self {
            Opcode::Continuation => 0x0,
            Opcode::Text => 0x1,
            Opcode::Binary => 0x2,
            Opcode::Close => 0x8,
            Opcode::Ping => 0x9,
            Opcode::Pong => 0xa,
        }
    }

    /// Whether this is a control opcode (close, ping, pong).
    pub fn is_control(self) -> bool {
        matches!(self, Opcode::Close | Opcode::Ping | Opcode::Pong)
    }
}

/// One decoded frame, payload already unmasked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// Last frame of its message.
    pub fin: bool,
    /// The opcode.
    pub opcode: Opcode,
    /// The unmasked payload, split off the read buffer.
    pub payload: Bytes,
}

/// Why a WebSocket connection must be closed; each maps to a close code.
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
pub enum WsError {
    /// A client frame without the mask bit (1002).
    #[error("client frame is not masked")]
    Unmasked,
    /// RSV1-3 set with no extension negotiated (1002).
    #[error("reserved bits set")]
    ReservedBits,
    /// A reserved opcode (1002).
    #[error("unknown opcode {0:#x}")]
    UnknownOpcode(u8),
    /// A control frame with more than 125 bytes of payload (1002).
    #[error("control frame with {0} bytes of payload")]
    ControlTooLong(u64),
    /// A control frame without FIN (1002).
    #[error("fragmented control frame")]
    FragmentedControl,
    /// A continuation frame with no fragmented message in progress (1002).
    #[error("continuation frame without a message to continue")]
    UnexpectedContinuation,
    /// A text or binary frame while a fragmented message is still in progress (1002).
    #[error("new data frame inside a fragmented message")]
    ExpectedContinuation,
    /// A 64-bit payload length with the most significant bit set (1002).
    #[error("64-bit payload length has its most significant bit set")]
    LengthMsb,
    /// A close frame with a 1-byte payload or a code that may not be sent (1002).
    #[error("invalid close frame payload")]
    InvalidClose,
    /// A frame payload larger than `frame_payload_max` (1009).
    #[error("frame payload larger than {limit} bytes")]
    FrameTooLarge {
        /// The configured `frame_payload_max`.
        limit: usize,
    },
    /// A message larger than `message_bytes_max` (1009).
    #[error("message larger than {limit} bytes")]
    MessageTooLarge {
        /// The configured `message_bytes_max`.
        limit: usize,
    },
    /// A text message or close reason that is not valid UTF-8 (1007).
    #[error("text is not valid UTF-8")]
    InvalidUtf8,
}

impl WsError {
    /// The close code to send before closing the connection.
    pub fn close_code(&self) -> u16 {
        match self {
            WsError::FrameTooLarge { .. } | WsError::MessageTooLarge { .. } => {
                CLOSE_MESSAGE_TOO_BIG
            }
            WsError::InvalidUtf8 => CLOSE_INVALID_PAYLOAD,
            _ => CLOSE_PROTOCOL_ERROR,
        }
    }
}

/// Size limits for incoming frames and messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WsLimits {
    /// Largest payload of one frame.
    pub frame_payload_max: usize,
    /// Largest message, summed over its fragments.
    pub message_bytes_max: usize,
}

impl Default for WsLimits {
    /// 1 MiB each: above the 256 KiB publish cap plus MQTT and JSON overhead.
    fn default() -> WsLimits {
        WsLimits {
            frame_payload_max: 1 << 20,
            message_bytes_max: 1 << 20,
        }
    }
}

/// Decodes client-to-server frames from a read buffer, enforcing RFC 6455 framing rules.
#[derive(Clone, Debug)]
pub struct FrameDecoder {
    /// Size limits.
    limits: WsLimits,
    /// Payload bytes so far of the fragmented data message in progress, if any.
    fragmented: Option<u64>,
}

impl FrameDecoder {
    /// A decoder for frames from a client (which must mask them).
    pub fn new(limits: WsLimits) -> FrameDecoder {
        FrameDecoder {
            limits,
            fragmented: None,
        }
    }

    /// Whether a fragmented data message is in progress.
    pub fn in_message(&self) -> bool {
        self.fragmented.is_some()
    }

    /// Takes the next frame off the front of `buf`; Ok(None) when it is not all there yet.
    ///
    /// Header errors are reported as soon as the header is in, before the payload arrives, so
    /// an oversized frame never has to be buffered.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, WsError> {
        let Some(&[first, second]) = buf.get(..2) else {
            return Ok(None);
        };
        let fin = first & 0x80 != 0;
        if first & 0x70 != 0 {
            return Err(WsError::ReservedBits);
        }
        let opcode = Opcode::from_u8(first & 0x0f).ok_or(WsError::UnknownOpcode(first & 0x0f))?;
        if second & 0x80 == 0 {
            return Err(WsError::Unmasked);
        }
        if opcode.is_control() && !fin {
            return Err(WsError::FragmentedControl);
        }
        let (length, length_bytes) = match second & 0x7f {
            126 => match buf.get(2..4) {
                Some(&[high, low]) => (u64::from(u16::from_be_bytes([high, low])), 2),
                _ => return Ok(None),
            },
            127 => match buf.get(2..10) {
                Some(bytes) => {
                    let mut be = [0; 8];
                    be.copy_from_slice(bytes);
                    let length = u64::from_be_bytes(be);
                    if length >> 63 != 0 {
                        return Err(WsError::LengthMsb);
                    }
                    (length, 8)
                }
                None => return Ok(None),
            },
            short => (u64::from(short), 0),
        };
        if opcode.is_control() && length > CONTROL_PAYLOAD_MAX as u64 {
            return Err(WsError::ControlTooLong(length));
        }
        if length > self.limits.frame_payload_max as u64 {
            return Err(WsError::FrameTooLarge {
                limit: self.limits.frame_payload_max,
            });
        }
        let message_bytes = match (opcode, self.fragmented) {
            (Opcode::Continuation, None) => return Err(WsError::UnexpectedContinuation),
            (Opcode::Continuation, Some(so_far)) => so_far + length,
            (Opcode::Text | Opcode::Binary, Some(_)) => return Err(WsError::ExpectedContinuation),
            _ => length,
        };
        if message_bytes > self.limits.message_bytes_max as u64 {
            return Err(WsError::MessageTooLarge {
                limit: self.limits.message_bytes_max,
            });
        }
        // Within frame_payload_max, which is a usize, so the cast is exact.
        let length = length as usize;
        let header = 2 + length_bytes + 4;
        if buf.len() < header + length {
            return Ok(None);
        }
        let mut mask = [0; 4];
        mask.copy_from_slice(&buf[header - 4..header]);
        buf.advance(header);
        let mut payload = buf.split_to(length);
        apply_mask(&mut payload, mask);
        if !opcode.is_control() {
            self.fragmented = if fin { None } else { Some(message_bytes) };
        }
        Ok(Some(Frame {
            fin,
            opcode,
            payload: payload.freeze(),
        }))
    }
}

/// XORs `data` with the 4-byte masking key (masking and unmasking are the same operation).
fn apply_mask(data: &mut [u8], mask: [u8; 4]) {
    // Eight bytes at a time: the per-byte loop is the hot part of a large binary frame.
    let wide = u64::from_ne_bytes([
        mask[0], mask[1], mask[2], mask[3], mask[0], mask[1], mask[2], mask[3],
    ]);
    let mut chunks = data.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let mut word = [0; 8];
        word.copy_from_slice(chunk);
        chunk.copy_from_slice(&(u64::from_ne_bytes(word) ^ wide).to_ne_bytes());
    }
    for (byte, key) in chunks.into_remainder().iter_mut().zip(mask.iter().cycle()) {
        *byte ^= key;
    }
}

/// A complete message: data reassembled from fragments, or a control frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    /// A text message, valid UTF-8.
    Text(String),
    /// A binary message.
    Binary(Bytes),
    /// A ping; answer with [`encode_pong`] carrying the same payload.
    Ping(Bytes),
    /// A pong.
    Pong(Bytes),
    /// A close frame: the code (None when the payload was empty) and the UTF-8 reason.
    Close {
        /// The status code, if the peer sent one.
        code: Option<u16>,
        /// The reason text (empty when none was sent).
        reason: String,
    },
}

/// Joins fragments into messages and validates text and close payloads.
#[derive(Clone, Debug)]
pub struct MessageAssembler {
    /// Largest message accepted.
    message_bytes_max: usize,
    /// The opcode of the fragmented message in progress (Text or Binary), if any.
    opcode: Option<Opcode>,
    /// Fragments so far; bounded by `message_bytes_max`.
    buf: BytesMut,
    /// Bytes at the front of `buf` already known to be valid UTF-8 (text only).
    utf8_checked: usize,
}

impl MessageAssembler {
    /// An assembler for messages of at most `message_bytes_max` bytes.
    pub fn new(message_bytes_max: usize) -> MessageAssembler {
        MessageAssembler {
            message_bytes_max,
            opcode: None,
            buf: BytesMut::new(),
            utf8_checked: 0,
        }
    }

    /// Adds a frame; returns a message when one is complete.
    ///
    /// Control frames come back at once, even in the middle of a fragmented message.
    pub fn push(&mut self, frame: Frame) -> Result<Option<Message>, WsError> {
        match frame.opcode {
            Opcode::Ping => return Ok(Some(Message::Ping(frame.payload))),
            Opcode::Pong => return Ok(Some(Message::Pong(frame.payload))),
            Opcode::Close => return parse_close(&frame.payload).map(Some),
            Opcode::Text | Opcode::Binary if self.opcode.is_some() => {
                return Err(WsError::ExpectedContinuation)
            }
            Opcode::Continuation if self.opcode.is_none() => {
                return Err(WsError::UnexpectedContinuation)
            }
            _ => {}
        }
        if self.buf.len() + frame.payload.len() > self.message_bytes_max {
            return Err(WsError::MessageTooLarge {
                limit: self.message_bytes_max,
            });
        }
        let opcode = self.opcode.unwrap_or(frame.opcode);
        if frame.fin && self.opcode.is_none() {
            // Unfragmented: the common case, no copy for binary.
            return finish(opcode, frame.payload).map(Some);
        }
        self.opcode = Some(opcode);
        self.buf.extend_from_slice(&frame.payload);
        if opcode == Opcode::Text {
            // Fail fast on bad UTF-8, allowing a character split across fragments.
            match std::str::from_utf8(&self.buf[self.utf8_checked..]) {
                Ok(_) => self.utf8_checked = self.buf.len(),
                Err(error) if error.error_len().is_none() => {
                    self.utf8_checked += error.valid_up_to()
                }
                Err(_) => return Err(WsError::InvalidUtf8),
            }
        }
        if !frame.fin {
            return Ok(None);
        }
        self.opcode = None;
        self.utf8_checked = 0;
        let message = self.buf.split().freeze();
        finish(opcode, message).map(Some)
    }
}

/// Turns a whole data message into a [`Message`], validating text.
fn finish(opcode: Opcode, payload: Bytes) -> Result<Message, WsError> {
    if opcode == Opcode::Text {
        let text = String::from_utf8(Vec::from(payload)).map_err(|_| WsError::InvalidUtf8)?;
        Ok(Message::Text(text))
    } else {
        Ok(Message::Binary(payload))
    }
}

/// Parses a close payload: empty, or a sendable code and a UTF-8 reason (RFC 6455 5.5.1, 7.4).
fn parse_close(payload: &[u8]) -> Result<Message, WsError> {
    match payload {
        [] => Ok(Message::Close {
            code: None,
            reason: String::new(),
        }),
        [_] => Err(WsError::InvalidClose),
        [high, low, reason @ ..] => {
            let code = u16::from_be_bytes([*high, *low]);
            if !close_code_sendable(code) {
                return Err(WsError::InvalidClose);
            }
            let reason = std::str::from_utf8(reason).map_err(|_| WsError::InvalidUtf8)?;
            Ok(Message::Close {
                code: Some(code),
                reason: reason.to_string(),
            })
        }
    }
}

/// Whether a peer may put `code` in a close frame (defined codes minus 1004-1006 and 1015,
/// plus the registered and private ranges).
pub fn close_code_sendable(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

/// Appends one unmasked (server-to-client) frame to `out`.
pub fn encode_frame(opcode: Opcode, payload: &[u8], fin: bool, out: &mut BytesMut) {
    put_header(opcode, payload.len(), fin, false, out);
    out.put_slice(payload);
}

/// Appends one masked frame, as a client sends it; for test clients and load generators.
pub fn encode_frame_masked(
    opcode: Opcode,
    payload: &[u8],
    fin: bool,
    mask: [u8; 4],
    out: &mut BytesMut,
) {
    put_header(opcode, payload.len(), fin, true, out);
    out.put_slice(&mask);
    let start = out.len();
    out.put_slice(payload);
    apply_mask(&mut out[start..], mask);
}

/// Appends the first byte, the length (in its shortest form) and the mask bit.
fn put_header(opcode: Opcode, length: usize, fin: bool, masked: bool, out: &mut BytesMut) {
    out.reserve(14 + length);
    out.put_u8(if fin { 0x80 } else { 0 } | opcode.as_u8());
    let mask_bit = if masked { 0x80 } else { 0 };
    if length < 126 {
        out.put_u8(mask_bit | length as u8);
    } else if let Ok(length) = u16::try_from(length) {
        out.put_u8(mask_bit | 126);
        out.put_u16(length);
    } else {
        out.put_u8(mask_bit | 127);
        out.put_u64(length as u64);
    }
}

/// Appends a single-frame text message.
pub fn encode_text(text: &str, out: &mut BytesMut) {
    encode_frame(Opcode::Text, text.as_bytes(), true, out);
}

/// Appends a single-frame binary message.
pub fn encode_binary(payload: &[u8], out: &mut BytesMut) {
    encode_frame(Opcode::Binary, payload, true, out);
}

/// Appends a close frame; the reason is cut at a character boundary to fit in 123 bytes.
pub fn encode_close(code: u16, reason: &str, out: &mut BytesMut) {
    let mut end = reason.len().min(CONTROL_PAYLOAD_MAX - 2);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let mut payload = [0; CONTROL_PAYLOAD_MAX];
    payload[..2].copy_from_slice(&code.to_be_bytes());
    payload[2..2 + end].copy_from_slice(&reason.as_bytes()[..end]);
    encode_frame(Opcode::Close, &payload[..2 + end], true, out);
}

/// Appends a ping; a payload over 125 bytes is cut to 125.
pub fn encode_ping(payload: &[u8], out: &mut BytesMut) {
    encode_frame(
        Opcode::Ping,
        &payload[..payload.len().min(CONTROL_PAYLOAD_MAX)],
        true,
        out,
    );
}

/// Appends a pong; a payload over 125 bytes is cut to 125 (a decoded ping never has more).
pub fn encode_pong(payload: &[u8], out: &mut BytesMut) {
    encode_frame(
        Opcode::Pong,
        &payload[..payload.len().min(CONTROL_PAYLOAD_MAX)],
        true,
        out,
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::{parse_head, Limits};
    use proptest::prelude::*;

    /// The masking key of the RFC 6455 section 5.7 examples.
    const RFC_MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

    /// Parses a request head from text with CRLF line ends.
    fn head(text: &str) -> RequestHead {
        let raw = format!("{}\r\n\r\n", text.replace('\n', "\r\n"));
        parse_head(raw.as_bytes(), &Limits::default())
            .unwrap()
            .unwrap()
            .0
    }

    /// A valid upgrade request with `extra` header lines appended.
    fn upgrade_request(extra: &str) -> String {
        format!(
            "GET /v1/mqtt/stream HTTP/1.1\nHost: server.example.com\nUpgrade: websocket\n\
Connection: Upgrade\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\nSec-WebSocket-Version: 13{extra}"
        )
    }

    fn decoder() -> FrameDecoder {
        FrameDecoder::new(WsLimits::default())
    }

    /// Decodes every complete frame in `bytes`, which must all be consumed.
    fn decode_all(decoder: &mut FrameDecoder, bytes: &[u8]) -> Result<Vec<Frame>, WsError> {
        let mut buf = BytesMut::from(bytes);
        let mut frames = Vec::new();
        while let Some(frame) = decoder.decode(&mut buf)? {
            frames.push(frame);
        }
        assert!(buf.is_empty(), "left over: {buf:?}");
        Ok(frames)
    }

    fn masked(opcode: Opcode, payload: &[u8], fin: bool) -> Vec<u8> {
        let mut out = BytesMut::new();
        encode_frame_masked(opcode, payload, fin, RFC_MASK, &mut out);
        out.to_vec()
    }

    fn frame(opcode: Opcode, payload: &[u8], fin: bool) -> Frame {
        Frame {
            fin,
            opcode,
            payload: Bytes::copy_from_slice(payload),
        }
    }

    #[test]
    fn rfc_handshake_key() {
        assert_eq!(
            accept_key("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn valid_upgrade_and_101() {
        let upgrade = check_upgrade(&head(&upgrade_request(
            "\nSec-WebSocket-Protocol: chat, mqtt\nSec-WebSocket-Protocol:\tmqttv3.1",
        )))
        .unwrap();
        assert_eq!(upgrade.key, "dGhlIHNhbXBsZSBub25jZQ==");
        assert_eq!(upgrade.protocols, ["chat", "mqtt", "mqttv3.1"]);
        assert!(upgrade.offers("mqtt"));
        assert!(!upgrade.offers("MQTT"));

        let mut out = BytesMut::new();
        upgrade.encode_response(Some("mqtt"), &mut out);
        assert_eq!(
            &out[..],
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\nSec-WebSocket-Protocol: mqtt\r\n\r\n"
        );
        let mut out = BytesMut::new();
        upgrade.encode_response(Some("bad\r\nX: y"), &mut out);
        assert!(!out.windows(2).any(|pair| pair == b"X:"));
        assert!(out.ends_with(b"xOo=\r\n\r\n"));

        let response = upgrade.response(Some("mqtt"));
        assert_eq!(response.status, 101);
        assert!(response
            .headers
            .iter()
            .any(|(name, value)| name == "Sec-WebSocket-Accept"
                && value == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="));
        assert!(response
            .headers
            .iter()
            .any(|(name, value)| name == "Sec-WebSocket-Protocol" && value == "mqtt"));
        assert!(upgrade.response(None).headers.len() == 3);
    }

    #[test]
    fn upgrade_token_lists_are_case_insensitive() {
        let text = "GET /ws HTTP/1.1\nUpgrade: h2c, WebSocket\nConnection: keep-alive, UPGRADE\n\
Sec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAAAA==\nSec-WebSocket-Version: 13";
        let upgrade = check_upgrade(&head(text)).unwrap();
        assert!(upgrade.protocols.is_empty());
        // The tokens may also be spread over repeated headers.
        let text =
            "GET /ws HTTP/1.1\nUpgrade: websocket\nConnection: keep-alive\nConnection: upgrade\n\
Sec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAAAA==\nSec-WebSocket-Version: 13";
        assert!(check_upgrade(&head(text)).is_ok());
    }

    #[test]
    fn upgrade_refusals() {
        let cases = [
            (
                upgrade_request("").replace("GET", "POST"),
                UpgradeError::NotGet,
                405,
            ),
            (
                upgrade_request("").replace("HTTP/1.1", "HTTP/1.0"),
                UpgradeError::NotHttp11,
                400,
            ),
            (
                upgrade_request("").replace("Upgrade: websocket", "Upgrade: h2c"),
                UpgradeError::NoUpgradeWebSocket,
                426,
            ),
            (
                upgrade_request("").replace("Upgrade: websocket\n", ""),
                UpgradeError::NoUpgradeWebSocket,
                426,
            ),
            (
                upgrade_request("").replace("Connection: Upgrade", "Connection: keep-alive"),
                UpgradeError::NoConnectionUpgrade,
                400,
            ),
            (
                upgrade_request("").replace("Version: 13", "Version: 8"),
                UpgradeError::UnsupportedVersion,
                426,
            ),
            (
                upgrade_request("").replace("Sec-WebSocket-Version: 13", "X: y"),
                UpgradeError::UnsupportedVersion,
                426,
            ),
            (
                upgrade_request("\nSec-WebSocket-Version: 8"),
                UpgradeError::UnsupportedVersion,
                426,
            ),
            (
                upgrade_request("").replace("Sec-WebSocket-Key", "X-Key"),
                UpgradeError::InvalidKey,
                400,
            ),
            (
                // 15 bytes.
                upgrade_request("").replace("dGhlIHNhbXBsZSBub25jZQ==", "AAAAAAAAAAAAAAAAAAAA"),
                UpgradeError::InvalidKey,
                400,
            ),
            (
                upgrade_request("").replace("dGhlIHNhbXBsZSBub25jZQ==", "not base64!"),
                UpgradeError::InvalidKey,
                400,
            ),
            (
                upgrade_request("\nSec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAAAA=="),
                UpgradeError::InvalidKey,
                400,
            ),
            (
                upgrade_request("\nSec-WebSocket-Protocol: mqtt,,chat"),
                UpgradeError::InvalidProtocols,
                400,
            ),
            (
                upgrade_request("\nSec-WebSocket-Protocol: mq tt"),
                UpgradeError::InvalidProtocols,
                400,
            ),
            (
                upgrade_request(&format!(
                    "\nSec-WebSocket-Protocol: {}",
                    vec!["p"; PROTOCOLS_MAX + 1].join(",")
                )),
                UpgradeError::InvalidProtocols,
                400,
            ),
            (
                upgrade_request(&format!(
                    "\nSec-WebSocket-Protocol: {}",
                    "p".repeat(PROTOCOL_BYTES_MAX + 1)
                )),
                UpgradeError::InvalidProtocols,
                400,
            ),
        ];
        for (request, expected, status) in cases {
            let error = check_upgrade(&head(&request)).unwrap_err();
            assert_eq!(error, expected, "{request}");
            assert_eq!(error.status(), status);
            assert_eq!(error.response().status, status);
        }
        let version = UpgradeError::UnsupportedVersion.response();
        assert!(version
            .headers
            .iter()
            .any(|(name, value)| name == "Sec-WebSocket-Version" && value == "13"));
        let exact = upgrade_request(&format!(
            "\nSec-WebSocket-Protocol: {}",
            vec!["p"; PROTOCOLS_MAX].join(",")
        ));
        assert_eq!(
            check_upgrade(&head(&exact)).unwrap().protocols.len(),
            PROTOCOLS_MAX
        );
    }

    #[test]
    fn rfc_examples_encode_byte_for_byte() {
        let mut out = BytesMut::new();
        encode_text("Hello", &mut out);
        assert_eq!(&out[..], [0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f]);

        let mut out = BytesMut::new();
        encode_frame(Opcode::Text, b"Hel", false, &mut out);
        encode_frame(Opcode::Continuation, b"lo", true, &mut out);
        assert_eq!(
            &out[..],
            [0x01, 0x03, 0x48, 0x65, 0x6c, 0x80, 0x02, 0x6c, 0x6f]
        );

        let mut out = BytesMut::new();
        encode_ping(b"Hello", &mut out);
        assert_eq!(&out[..], [0x89, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f]);

        let mut out = BytesMut::new();
        encode_binary(&[7; 256], &mut out);
        assert_eq!(&out[..4], [0x82, 0x7e, 0x01, 0x00]);
        assert_eq!(out.len(), 4 + 256);

        let mut out = BytesMut::new();
        encode_binary(&vec![7; 65536], &mut out);
        assert_eq!(
            &out[..10],
            [0x82, 0x7f, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00]
        );
        assert_eq!(out.len(), 10 + 65536);

        // The masked examples, as a client sends them.
        assert_eq!(
            masked(Opcode::Text, b"Hello", true),
            [0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58]
        );
        assert_eq!(
            masked(Opcode::Pong, b"Hello", true),
            [0x8a, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58]
        );
    }

    #[test]
    fn rfc_examples_decode() {
        let frames = decode_all(
            &mut decoder(),
            &[
                0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58, 0x8a, 0x85, 0x37,
                0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
            ],
        )
        .unwrap();
        assert_eq!(
            frames,
            [
                frame(Opcode::Text, b"Hello", true),
                frame(Opcode::Pong, b"Hello", true)
            ]
        );
        for size in [0, 125, 126, 256, 65535, 65536, 70000] {
            let payload: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
            let bytes = masked(Opcode::Binary, &payload, true);
            let frames = decode_all(&mut decoder(), &bytes).unwrap();
            assert_eq!(frames, [frame(Opcode::Binary, &payload, true)], "{size}");
        }
    }

    #[test]
    fn incomplete_is_never_an_error() {
        let bytes = masked(Opcode::Binary, &[1; 70000], true);
        let mut decoder = decoder();
        for end in 0..bytes.len() {
            if end > 20 && end < bytes.len() - 20 {
                continue;
            }
            let mut buf = BytesMut::from(&bytes[..end]);
            assert_eq!(decoder.decode(&mut buf), Ok(None), "{end}");
            assert_eq!(buf.len(), end, "nothing consumed");
        }
    }

    #[test]
    fn protocol_violations() {
        let text = masked(Opcode::Text, b"hi", true);
        let mut unmasked = BytesMut::new();
        encode_text("hi", &mut unmasked);
        let with_first = |first: u8| {
            let mut bytes = text.clone();
            bytes[0] = first;
            bytes
        };
        let mut long_msb = vec![0x82, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 0];
        long_msb.extend_from_slice(&RFC_MASK);
        let mut long_ping = vec![0x89, 0xfe, 0x00, 0x7e];
        long_ping.extend_from_slice(&RFC_MASK);
        let cases: Vec<(Vec<u8>, WsError)> = vec![
            (unmasked.to_vec(), WsError::Unmasked),
            (with_first(0x81 | 0x40), WsError::ReservedBits),
            (with_first(0x81 | 0x20), WsError::ReservedBits),
            (with_first(0x81 | 0x10), WsError::ReservedBits),
            (with_first(0x83), WsError::UnknownOpcode(3)),
            (with_first(0x87), WsError::UnknownOpcode(7)),
            (with_first(0x8b), WsError::UnknownOpcode(0xb)),
            (with_first(0x8f), WsError::UnknownOpcode(0xf)),
            (with_first(0x09), WsError::FragmentedControl),
            (with_first(0x08), WsError::FragmentedControl),
            (with_first(0x80), WsError::UnexpectedContinuation),
            (with_first(0x00), WsError::UnexpectedContinuation),
            (
                masked(Opcode::Ping, &[0; 126], true),
                WsError::ControlTooLong(126),
            ),
            (
                masked(Opcode::Close, &[0; 200], true),
                WsError::ControlTooLong(200),
            ),
            (long_ping, WsError::ControlTooLong(126)),
            (long_msb, WsError::LengthMsb),
            (
                [
                    masked(Opcode::Text, b"a", false),
                    masked(Opcode::Binary, b"b", true),
                ]
                .concat(),
                WsError::ExpectedContinuation,
            ),
            (
                [
                    masked(Opcode::Text, b"a", true),
                    masked(Opcode::Continuation, b"b", true),
                ]
                .concat(),
                WsError::UnexpectedContinuation,
            ),
        ];
        for (bytes, expected) in cases {
            let error = decode_all(&mut decoder(), &bytes).unwrap_err();
            assert_eq!(error, expected, "{bytes:x?}");
            assert_eq!(error.close_code(), CLOSE_PROTOCOL_ERROR);
        }
        // A 125-byte ping is fine, and control frames may interleave a fragmented message.
        let bytes = [
            masked(Opcode::Text, b"a", false),
            masked(Opcode::Ping, &[9; 125], true),
            masked(Opcode::Continuation, b"b", false),
            masked(Opcode::Close, &[3, 232], true),
            masked(Opcode::Continuation, b"c", true),
            masked(Opcode::Binary, b"d", true),
        ]
        .concat();
        let frames = decode_all(&mut decoder(), &bytes).unwrap();
        assert_eq!(frames.len(), 6);
        assert_eq!(frames[1], frame(Opcode::Ping, &[9; 125], true));
    }

    #[test]
    fn errors_come_before_the_payload() {
        // A 2^40-byte frame is refused from its header alone.
        let mut header = vec![0x82, 0xff, 0, 0, 1, 0, 0, 0, 0, 0];
        header.extend_from_slice(&RFC_MASK);
        let error = decoder()
            .decode(&mut BytesMut::from(&header[..]))
            .unwrap_err();
        assert_eq!(error, WsError::FrameTooLarge { limit: 1 << 20 });
        assert_eq!(error.close_code(), CLOSE_MESSAGE_TOO_BIG);
        // Even before the mask key is in.
        let error = decoder()
            .decode(&mut BytesMut::from(&header[..10]))
            .unwrap_err();
        assert_eq!(error, WsError::FrameTooLarge { limit: 1 << 20 });
    }

    #[test]
    fn size_limits() {
        let limits = WsLimits {
            frame_payload_max: 10,
            message_bytes_max: 25,
        };
        let ok = decode_all(
            &mut FrameDecoder::new(limits),
            &masked(Opcode::Binary, &[0; 10], true),
        );
        assert!(ok.is_ok());
        let error = decode_all(
            &mut FrameDecoder::new(limits),
            &masked(Opcode::Binary, &[0; 11], true),
        )
        .unwrap_err();
        assert_eq!(error, WsError::FrameTooLarge { limit: 10 });

        let fragments = |last: usize| {
            [
                masked(Opcode::Text, &[b'a'; 10], false),
                masked(Opcode::Continuation, &[b'a'; 10], false),
                masked(Opcode::Continuation, &vec![b'a'; last], true),
            ]
            .concat()
        };
        let frames = decode_all(&mut FrameDecoder::new(limits), &fragments(5)).unwrap();
        let mut assembler = MessageAssembler::new(25);
        let messages: Vec<_> = frames
            .into_iter()
            .filter_map(|frame| assembler.push(frame).unwrap())
            .collect();
        assert_eq!(messages, [Message::Text("a".repeat(25))]);
        let error = decode_all(&mut FrameDecoder::new(limits), &fragments(6)).unwrap_err();
        assert_eq!(error, WsError::MessageTooLarge { limit: 25 });
        assert_eq!(error.close_code(), CLOSE_MESSAGE_TOO_BIG);

        // The assembler enforces its own bound too.
        let mut assembler = MessageAssembler::new(3);
        assert_eq!(
            assembler.push(frame(Opcode::Binary, b"ab", false)),
            Ok(None)
        );
        assert_eq!(
            assembler.push(frame(Opcode::Continuation, b"cd", true)),
            Err(WsError::MessageTooLarge { limit: 3 })
        );
    }

    #[test]
    fn fragmented_messages() {
        let mut assembler = MessageAssembler::new(1 << 20);
        let euro = "€".as_bytes();
        let frames = [
            frame(Opcode::Text, &[b'x', euro[0]], false),
            frame(Opcode::Ping, b"p", true),
            frame(Opcode::Continuation, &euro[1..2], false),
            frame(Opcode::Continuation, &[], false),
            frame(Opcode::Continuation, &[euro[2], b'y'], true),
            frame(Opcode::Binary, b"bin", true),
            frame(Opcode::Binary, b"b1", false),
            frame(Opcode::Continuation, b"b2", true),
            frame(Opcode::Text, b"", true),
            frame(Opcode::Pong, b"", true),
            frame(Opcode::Close, &[0x03, 0xe8, b'o', b'k'], true),
            frame(Opcode::Close, &[], true),
        ];
        let messages: Vec<_> = frames
            .into_iter()
            .filter_map(|frame| assembler.push(frame).unwrap())
            .collect();
        assert_eq!(
            messages,
            [
                Message::Ping(Bytes::from_static(b"p")),
                Message::Text("x€y".to_string()),
                Message::Binary(Bytes::from_static(b"bin")),
                Message::Binary(Bytes::from_static(b"b1b2")),
                Message::Text(String::new()),
                Message::Pong(Bytes::new()),
                Message::Close {
                    code: Some(1000),
                    reason: "ok".to_string()
                },
                Message::Close {
                    code: None,
                    reason: String::new()
                },
            ]
        );
    }

    #[test]
    fn assembler_violations() {
        let push_all = |frames: &[Frame]| {
            let mut assembler = MessageAssembler::new(100);
            for frame in frames {
                assembler.push(frame.clone())?;
            }
            Ok(())
        };
        let cases = [
            (
                vec![frame(Opcode::Text, &[0xff], true)],
                WsError::InvalidUtf8,
            ),
            (
                // Bad UTF-8 is caught at the first fragment, before the message ends.
                vec![frame(Opcode::Text, &[b'a', 0xc0, 0x80], false)],
                WsError::InvalidUtf8,
            ),
            (
                // A character cut short by the last fragment.
                vec![
                    frame(Opcode::Text, &[0xe2, 0x82], false),
                    frame(Opcode::Continuation, &[], true),
                ],
                WsError::InvalidUtf8,
            ),
            (
                vec![frame(Opcode::Close, &[0x03], true)],
                WsError::InvalidClose,
            ),
            (
                vec![frame(Opcode::Close, &1005u16.to_be_bytes(), true)],
                WsError::InvalidClose,
            ),
            (
                vec![frame(Opcode::Close, &999u16.to_be_bytes(), true)],
                WsError::InvalidClose,
            ),
            (
                vec![frame(Opcode::Close, &[0x03, 0xe8, 0xff], true)],
                WsError::InvalidUtf8,
            ),
            (
                vec![frame(Opcode::Continuation, b"a", true)],
                WsError::UnexpectedContinuation,
            ),
            (
                vec![
                    frame(Opcode::Binary, b"a", false),
                    frame(Opcode::Text, b"b", true),
                ],
                WsError::ExpectedContinuation,
            ),
        ];
        for (frames, expected) in cases {
            assert_eq!(push_all(&frames), Err(expected.clone()), "{frames:?}");
        }
        assert_eq!(WsError::InvalidUtf8.close_code(), CLOSE_INVALID_PAYLOAD);
        for code in [1000, 1001, 1002, 1003, 1007, 1011, 3000, 4999] {
            assert!(close_code_sendable(code), "{code}");
        }
        for code in [0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000] {
            assert!(!close_code_sendable(code), "{code}");
        }
    }

    #[test]
    fn close_and_control_encoders() {
        let mut out = BytesMut::new();
        encode_close(CLOSE_NORMAL, "bye", &mut out);
        assert_eq!(&out[..], [0x88, 0x05, 0x03, 0xe8, b'b', b'y', b'e']);

        // A long reason is cut at a character boundary so the frame stays a valid control frame.
        let reason = "é".repeat(100);
        let mut out = BytesMut::new();
        encode_close(CLOSE_INTERNAL_ERROR, &reason, &mut out);
        assert_eq!(out[1] as usize, out.len() - 2);
        assert!(out.len() - 2 <= CONTROL_PAYLOAD_MAX);
        let text = std::str::from_utf8(&out[4..]).unwrap();
        assert_eq!(text.len(), 122);

        let mut out = BytesMut::new();
        encode_pong(&[1; 300], &mut out);
        assert_eq!(&out[..2], [0x8a, 125]);
        assert_eq!(out.len(), 127);
        for code in [
            CLOSE_NORMAL,
            CLOSE_GOING_AWAY,
            CLOSE_PROTOCOL_ERROR,
            CLOSE_INVALID_PAYLOAD,
            CLOSE_POLICY_VIOLATION,
            CLOSE_MESSAGE_TOO_BIG,
            CLOSE_INTERNAL_ERROR,
        ] {
            assert!(close_code_sendable(code));
        }
    }

    #[test]
    fn mask_is_its_own_inverse() {
        for length in 0..40 {
            let data: Vec<u8> = (0..length).map(|i| i as u8).collect();
            let mut work = data.clone();
            apply_mask(&mut work, RFC_MASK);
            for (i, (&masked, &plain)) in work.iter().zip(&data).enumerate() {
                assert_eq!(masked, plain ^ RFC_MASK[i % 4]);
            }
            apply_mask(&mut work, RFC_MASK);
            assert_eq!(work, data);
        }
    }

    /// A well-formed frame sequence: data messages split into fragments, control frames between.
    fn frame_sequence() -> impl Strategy<Value = Vec<Frame>> {
        let control = (
            prop_oneof![Just(Opcode::Ping), Just(Opcode::Pong), Just(Opcode::Close)],
            proptest::collection::vec(any::<u8>(), 0..=CONTROL_PAYLOAD_MAX),
        )
            .prop_map(|(opcode, payload)| vec![frame(opcode, &payload, true)]);
        let data = (
            prop_oneof![Just(Opcode::Text), Just(Opcode::Binary)],
            proptest::collection::vec(
                (
                    proptest::collection::vec(any::<u8>(), 0..300),
                    proptest::option::of(proptest::collection::vec(any::<u8>(), 0..10)),
                ),
                1..4,
            ),
        )
            .prop_map(|(opcode, fragments)| {
                let count = fragments.len();
                let mut frames = Vec::new();
                for (i, (payload, ping)) in fragments.into_iter().enumerate() {
                    let opcode = if i == 0 { opcode } else { Opcode::Continuation };
                    frames.push(frame(opcode, &payload, i + 1 == count));
                    if let Some(ping) = ping.filter(|_| i + 1 < count) {
                        frames.push(frame(Opcode::Ping, &ping, true));
                    }
                }
                frames
            });
        proptest::collection::vec(prop_oneof![control, data], 0..8)
            .prop_map(|groups| groups.concat())
    }

    proptest! {
        #[test]
        fn split_frames_decode_to_the_same_frames(
            frames in frame_sequence(),
            masks in proptest::collection::vec(any::<[u8; 4]>(), 1..4),
            cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..6),
        ) {
            let mut wire = Vec::new();
            for (i, frame) in frames.iter().enumerate() {
                let mut out = BytesMut::new();
                encode_frame_masked(frame.opcode, &frame.payload, frame.fin, masks[i % masks.len()], &mut out);
                wire.extend_from_slice(&out);
            }
            let mut cuts: Vec<usize> = cuts.iter().map(|cut| cut.index(wire.len() + 1)).collect();
            cuts.push(wire.len());
            cuts.sort_unstable();
            let mut decoder = decoder();
            let mut buf = BytesMut::new();
            let mut decoded = Vec::new();
            let mut fed = 0;
            for cut in cuts {
                buf.extend_from_slice(&wire[fed..cut]);
                fed = cut;
                while let Some(frame) = decoder.decode(&mut buf).unwrap() {
                    decoded.push(frame);
                }
            }
            prop_assert!(buf.is_empty());
            prop_assert_eq!(decoded, frames);
        }

        #[test]
        fn text_split_anywhere_reassembles(text in "\\PC{0,40}", cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..5)) {
            let bytes = text.as_bytes();
            let mut cuts: Vec<usize> = cuts.iter().map(|cut| cut.index(bytes.len() + 1)).collect();
            cuts.sort_unstable();
            cuts.push(bytes.len());
            let mut assembler = MessageAssembler::new(1 << 10);
            let mut start = 0;
            let mut result = None;
            for (i, &cut) in cuts.iter().enumerate() {
                let opcode = if i == 0 { Opcode::Text } else { Opcode::Continuation };
                result = assembler.push(frame(opcode, &bytes[start..cut], i + 1 == cuts.len())).unwrap();
                start = cut;
            }
            prop_assert_eq!(result, Some(Message::Text(text)));
        }

        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512), step in 1usize..64) {
            let limits = WsLimits { frame_payload_max: 200, message_bytes_max: 300 };
            let mut decoder = FrameDecoder::new(limits);
            let mut assembler = MessageAssembler::new(300);
            let mut buf = BytesMut::new();
            'feed: for chunk in bytes.chunks(step) {
                buf.extend_from_slice(chunk);
                loop {
                    match decoder.decode(&mut buf) {
                        Ok(Some(frame)) => {
                            if assembler.push(frame).is_err() {
                                break 'feed;
                            }
                        }
                        Ok(None) => break,
                        Err(_) => break 'feed,
                    }
                }
            }
        }
    }
}
