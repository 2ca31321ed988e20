//! Request bodies: an incremental decoder for Content-Length and chunked framing.
//!
//! The decoder takes bytes from the connection's read buffer as they arrive and hands body
//! data back as `Bytes` split off that buffer (no copy). Bytes after the body stay in the
//! buffer: they are the next pipelined request.

use bytes::{Bytes, BytesMut};

use crate::error::HttpError;
use crate::request::{Limits, RequestHead};

/// Longest chunk-size line (size and extensions) accepted; extensions carry nothing we use.
pub const CHUNK_LINE_BYTES_MAX: usize = 4096;

/// Most bytes of trailer fields accepted after the last chunk; trailers are read and discarded.
pub const TRAILER_BYTES_MAX: usize = 8192;

/// What one call to [`BodyDecoder::decode`] produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BodyEvent {
    /// A piece of the body, in order; never empty.
    Data(Bytes),
    /// The buffer holds no more body bytes; read more and call again.
    NeedMore,
    /// The body is complete; further calls return `Done` and consume nothing.
    Done,
}

/// Where a body decoder is in its framing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Content-Length framing with this many bytes still to come.
    Length { remaining: u64 },
    /// Chunked: expecting a chunk-size line.
    ChunkSize,
    /// Chunked: inside a chunk with this many data bytes still to come.
    ChunkData { remaining: u64 },
    /// Chunked: expecting the CRLF that ends a chunk's data.
    ChunkDataEnd,
    /// Chunked: after the last chunk, reading trailer lines until an empty one.
    Trailers { bytes_read: usize },
    /// The body is complete.
    Done,
}

/// An incremental decoder for one request body, bounded by `body_bytes_max`.
#[derive(Clone, Debug)]
pub struct BodyDecoder {
    /// Current framing state.
    state: State,
    /// Body bytes returned so far.
    received: u64,
    /// Most body bytes allowed.
    body_bytes_max: u64,
}

impl BodyDecoder {
    /// A decoder for the framing the head declares; refuses an oversized Content-Length at once
    /// (so the server answers 413 instead of `100 Continue`).
    pub fn for_head(head: &RequestHead, limits: &Limits) -> Result<BodyDecoder, HttpError> {
        if head.chunked {
            Ok(BodyDecoder::chunked(limits.body_bytes_max))
        } else {
            BodyDecoder::content_length(head.content_length.unwrap_or(0), limits.body_bytes_max)
        }
    }

    /// A decoder for a body of exactly `length` bytes.
    pub fn content_length(length: u64, body_bytes_max: usize) -> Result<BodyDecoder, HttpError> {
        let body_bytes_max = body_bytes_max as u64;
        if length > body_bytes_max {
            return Err(HttpError::BodyTooLarge {
                limit: body_bytes_max as usize,
            });
        }
        let state = if length == 0 {
            State::Done
        } else {
            State::Length { remaining: length }
        };
        Ok(BodyDecoder {
            state,
            received: 0,
            body_bytes_max,
        })
    }

    /// A decoder for a chunked body of at most `body_bytes_max` decoded bytes.
    pub fn chunked(body_bytes_max: usize) -> BodyDecoder {
        BodyDecoder {
            state: State::ChunkSize,
            received: 0,
            body_bytes_max: body_bytes_max as u64,
        }
    }

    /// Whether the whole body has been decoded.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Body bytes returned so far.
    pub fn received(&self) -> u64 {
        self.received
    }

    /// Consumes framing and body bytes from the front of `buf` and returns the next event.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<BodyEvent, HttpError> {
        // Each pass consumes a line or some data, or returns, so this loop is bounded by buf.
        loop {
            match self.state {
                State::Done => return Ok(BodyEvent::Done),
                State::Length { remaining } => {
                    let Some(data) = take_data(buf, remaining) else {
                        return Ok(BodyEvent::NeedMore);
                    };
                    let remaining = remaining - data.len() as u64;
                    self.state = if remaining == 0 {
                        State::Done
                    } else {
                        State::Length { remaining }
                    };
                    self.received += data.len() as u64;
                    return Ok(BodyEvent::Data(data));
                }
                State::ChunkSize => {
                    let Some(line_end) = find_line(buf, CHUNK_LINE_BYTES_MAX)
                        .map_err(|()| HttpError::InvalidChunk("chunk-size line too long"))?
                    else {
                        return Ok(BodyEvent::NeedMore);
                    };
                    let size = parse_chunk_size(&buf[..line_end])?;
                    let _ = buf.split_to(line_end + 2);
                    if size == 0 {
                        self.state = State::Trailers { bytes_read: 0 };
                        continue;
                    }
                    if size > self.body_bytes_max - self.received {
                        return Err(HttpError::BodyTooLarge {
                            limit: self.body_bytes_max as usize,
                        });
                    }
                    self.state = State::ChunkData { remaining: size };
                }
                State::ChunkData { remaining } => {
                    let Some(data) = take_data(buf, remaining) else {
                        return Ok(BodyEvent::NeedMore);
                    };
                    let remaining = remaining - data.len() as u64;
                    self.state = if remaining == 0 {
                        State::ChunkDataEnd
                    } else {
                        State::ChunkData { remaining }
                    };
                    self.received += data.len() as u64;
                    return Ok(BodyEvent::Data(data));
                }
                State::ChunkDataEnd => {
                    if buf.len() < 2 {
                        // A lone byte that is not CR can already be refused.
                        if buf.first().is_some_and(|&byte| byte != b'\r') {
                            return Err(HttpError::InvalidChunk("chunk data not followed by CRLF"));
                        }
                        return Ok(BodyEvent::NeedMore);
                    }
                    if &buf[..2] != b"\r\n" {
                        return Err(HttpError::InvalidChunk("chunk data not followed by CRLF"));
                    }
                    let _ = buf.split_to(2);
                    self.state = State::ChunkSize;
                }
                State::Trailers { bytes_read } => {
                    let room = TRAILER_BYTES_MAX - bytes_read;
                    let Some(line_end) = find_line(buf, room)
                        .map_err(|()| HttpError::InvalidChunk("trailer section too large"))?
                    else {
                        return Ok(BodyEvent::NeedMore);
                    };
                    if line_end == 0 {
                        let _ = buf.split_to(2);
                        self.state = State::Done;
                        return Ok(BodyEvent::Done);
                    }
                    check_trailer_line(&buf[..line_end])?;
                    let _ = buf.split_to(line_end + 2);
                    self.state = State::Trailers {
                        bytes_read: bytes_read + line_end + 2,
                    };
                }
            }
        }
    }
}

/// Splits up to `remaining` bytes off the front of `buf`, or None when `buf` is empty.
fn take_data(buf: &mut BytesMut, remaining: u64) -> Option<Bytes> {
    if buf.is_empty() {
        return None;
    }
    let take = usize::try_from(remaining).map_or(buf.len(), |remaining| remaining.min(buf.len()));
    Some(buf.split_to(take).freeze())
}

/// Finds the CRLF ending the first line within `max` bytes (line + CRLF); Err when it cannot fit.
fn find_line(buf: &[u8], max: usize) -> Result<Option<usize>, ()> {
    let window = &buf[..buf.len().min(max)];
    match window.windows(2).position(|pair| pair == b"\r\n") {
        Some(end) => Ok(Some(end)),
        None if buf.len() >= max => Err(()),
        None => Ok(None),
    }
}

/// Parses `chunk-size [ chunk-ext ]` (RFC 9112 7.1), ignoring extensions.
fn parse_chunk_size(line: &[u8]) -> Result<u64, HttpError> {
    let digits_end = line
        .iter()
        .position(|byte| !byte.is_ascii_hexdigit())
        .unwrap_or(line.len());
    if digits_end == 0 {
        return Err(HttpError::InvalidChunk("chunk size is not hexadecimal"));
    }
    let mut size: u64 = 0;
    for &digit in &line[..digits_end] {
        let value = match digit {
            b'0'..=b'9' => digit - b'0',
            b'a'..=b'f' => digit - b'a' + 10,
            _ => digit - b'A' + 10,
        };
        size = size
            .checked_mul(16)
            .and_then(|size| size.checked_add(u64::from(value)))
            .ok_or(HttpError::InvalidChunk("chunk size overflows"))?;
    }
    let rest = &line[digits_end..];
    let extensions = rest.trim_ascii_start();
    if !extensions.is_empty() && extensions[0] != b';' {
        return Err(HttpError::InvalidChunk("junk after chunk size"));
    }
    // Extensions are skipped, but control characters in them are framing errors.
    if extensions
        .iter()
        .any(|&byte| byte != b'\t' && (byte < 0x20 || byte == 0x7f))
    {
        return Err(HttpError::InvalidChunk(
            "control character in chunk extension",
        ));
    }
    Ok(size)
}

/// Checks a trailer field line is `name: value` with a token name and no control characters.
fn check_trailer_line(line: &[u8]) -> Result<(), HttpError> {
    let Some(colon) = line.iter().position(|&byte| byte == b':') else {
        return Err(HttpError::InvalidChunk("trailer line without `:`"));
    };
    let name = &line[..colon];
    if name.is_empty() || !name.iter().all(|&byte| is_token_byte(byte)) {
        return Err(HttpError::InvalidChunk("invalid trailer field name"));
    }
    if line[colon + 1..]
        .iter()
        .any(|&byte| byte != b'\t' && (byte < 0x20 || byte == 0x7f))
    {
        return Err(HttpError::InvalidChunk(
            "control character in trailer value",
        ));
    }
    Ok(())
}

/// Whether a byte may appear in an HTTP token (RFC 9110 5.6.2).
fn is_token_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&byte)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `input` in pieces of `step` bytes and collects the body; returns leftover bytes.
    fn decode_all(
        mut decoder: BodyDecoder,
        input: &[u8],
        step: usize,
    ) -> Result<(Vec<u8>, Vec<u8>), HttpError> {
        let mut buf = BytesMut::new();
        let mut body = Vec::new();
        let mut fed = 0;
        loop {
            match decoder.decode(&mut buf)? {
                BodyEvent::Data(data) => {
                    assert!(!data.is_empty());
                    body.extend_from_slice(&data);
                }
                BodyEvent::Done => return Ok((body, buf.to_vec())),
                BodyEvent::NeedMore => {
                    assert!(fed < input.len(), "decoder wants more than the input has");
                    let end = (fed + step).min(input.len());
                    buf.extend_from_slice(&input[fed..end]);
                    fed = end;
                }
            }
        }
    }

    #[test]
    fn content_length_body_leaves_the_next_request() {
        let decoder = BodyDecoder::content_length(5, 100).unwrap();
        for step in [1, 2, 100] {
            let (body, rest) = decode_all(decoder.clone(), b"helloGET / HTTP/1.1", step).unwrap();
            assert_eq!(body, b"hello");
            // Only when fed in one go does the next request sit in the buffer already.
            if step == 100 {
                assert_eq!(rest, b"GET / HTTP/1.1");
            }
        }
    }

    #[test]
    fn empty_and_oversized_content_length() {
        let mut decoder = BodyDecoder::content_length(0, 10).unwrap();
        assert!(decoder.is_done());
        assert_eq!(
            decoder.decode(&mut BytesMut::from(&b"x"[..])),
            Ok(BodyEvent::Done)
        );
        let error = BodyDecoder::content_length(11, 10).unwrap_err();
        assert_eq!(error, HttpError::BodyTooLarge { limit: 10 });
        assert_eq!(error.status(), 413);
    }

    #[test]
    fn chunked_with_extensions_and_trailers() {
        let input = b"4;name=value\r\nWiki\r\n5 ; ext\r\npedia\r\nE\r\n in\r\n\r\nchunks.\r\n\
0;last\r\nExpires: never\r\nX-Sum: 1\r\n\r\nNEXT";
        for step in [1, 3, 7, input.len()] {
            let decoder = BodyDecoder::chunked(1000);
            let (body, rest) = decode_all(decoder, input, step).unwrap();
            assert_eq!(body, b"Wikipedia in\r\n\r\nchunks.", "step {step}");
            if step == input.len() {
                assert_eq!(rest, b"NEXT");
            }
        }
    }

    #[test]
    fn chunked_without_trailers_and_uppercase_hex() {
        let input = b"A\r\n0123456789\r\n0\r\n\r\n";
        let (body, rest) = decode_all(BodyDecoder::chunked(10), input, input.len()).unwrap();
        assert_eq!(body, b"0123456789");
        assert!(rest.is_empty());
    }

    #[test]
    fn chunked_errors() {
        for (input, expected) in [
            (&b"10000000000000000\r\n"[..], "chunk size overflows"),
            (b"ffffffffffffffffff\r\n", "chunk size overflows"),
            (b"zz\r\n", "chunk size is not hexadecimal"),
            (b"\r\n", "chunk size is not hexadecimal"),
            (b"-1\r\n", "chunk size is not hexadecimal"),
            (b"4 x\r\nWiki\r\n", "junk after chunk size"),
            (
                b"4;a\x01\r\nWiki\r\n",
                "control character in chunk extension",
            ),
            (b"4\r\nWikiXX", "chunk data not followed by CRLF"),
            (b"4\r\nWiki\rX", "chunk data not followed by CRLF"),
            (b"0\r\nno colon\r\n\r\n", "trailer line without `:`"),
            (b"0\r\nbad name: x\r\n\r\n", "invalid trailer field name"),
        ] {
            let error = decode_all(BodyDecoder::chunked(1 << 20), input, input.len()).unwrap_err();
            assert_eq!(error, HttpError::InvalidChunk(expected), "{input:?}");
            assert_eq!(error.status(), 400);
        }
    }

    #[test]
    fn chunked_limits() {
        // Total decoded size over the limit, across chunks.
        let input = b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n";
        let error = decode_all(BodyDecoder::chunked(10), input, input.len()).unwrap_err();
        assert_eq!(error, HttpError::BodyTooLarge { limit: 10 });

        // A size line that never ends.
        let long = vec![b'1'; CHUNK_LINE_BYTES_MAX + 1];
        let error = decode_all(BodyDecoder::chunked(10), &long, long.len()).unwrap_err();
        assert_eq!(error, HttpError::InvalidChunk("chunk-size line too long"));

        // Endless trailers.
        let mut trailers = b"0\r\n".to_vec();
        while trailers.len() < TRAILER_BYTES_MAX + 100 {
            trailers.extend_from_slice(b"X-Pad: aaaaaaaaaaaaaaaa\r\n");
        }
        let error = decode_all(BodyDecoder::chunked(10), &trailers, 64).unwrap_err();
        assert_eq!(error, HttpError::InvalidChunk("trailer section too large"));
    }

    #[test]
    fn decoder_for_head() {
        let limits = Limits {
            body_bytes_max: 4,
            ..Limits::default()
        };
        let (head, _) = crate::parse_head(b"POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\n", &limits)
            .unwrap()
            .unwrap();
        assert_eq!(
            BodyDecoder::for_head(&head, &limits).unwrap_err().status(),
            413
        );
        let (head, _) = crate::parse_head(b"GET / HTTP/1.1\r\n\r\n", &limits)
            .unwrap()
            .unwrap();
        assert!(BodyDecoder::for_head(&head, &limits).unwrap().is_done());
        let (head, _) = crate::parse_head(
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            &limits,
        )
        .unwrap()
        .unwrap();
        let decoder = BodyDecoder::for_head(&head, &limits).unwrap();
        let (body, _) = decode_all(decoder, b"4\r\nabcd\r\n0\r\n\r\n", 2).unwrap();
        assert_eq!(body, b"abcd");
    }
}
