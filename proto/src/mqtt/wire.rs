//! Wire primitives shared by the decoder and encoder: a bounds-checked reader over a frozen
//! packet body, and a `Sink` that either writes bytes or only counts them.
//!
//! Encoding runs the same code twice, first into a `Counter` and then into the buffer, so the
//! computed length and the written bytes cannot disagree and the buffer is reserved exactly once.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::mqtt::error::{DecodeError, EncodeError};
use crate::mqtt::types::Str;

/// Largest value of an MQTT Variable Byte Integer (four 7-bit groups).
pub const VARIABLE_BYTE_INTEGER_MAX: u32 = 268_435_455;

/// Largest string or binary field, in bytes (two-byte length prefix).
pub(crate) const FIELD_LENGTH_MAX: usize = u16::MAX as usize;

const SHORT: DecodeError = DecodeError::Malformed("packet shorter than its fields");

/// Cursor over one packet's body; every read is bounds-checked and slices share the buffer.
pub(crate) struct Reader {
    buf: Bytes,
}

impl Reader {
    pub(crate) fn new(buf: Bytes) -> Reader {
        Reader { buf }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    pub(crate) fn u8(&mut self) -> Result<u8, DecodeError> {
        if self.buf.is_empty() {
            return Err(SHORT);
        }
        Ok(self.buf.get_u8())
    }

    pub(crate) fn u16(&mut self) -> Result<u16, DecodeError> {
        if self.buf.len() < 2 {
            return Err(SHORT);
        }
        Ok(self.buf.get_u16())
    }

    pub(crate) fn u32(&mut self) -> Result<u32, DecodeError> {
        if self.buf.len() < 4 {
            return Err(SHORT);
        }
        Ok(self.buf.get_u32())
    }

    /// Reads a Variable Byte Integer of at most four bytes.
    pub(crate) fn varint(&mut self) -> Result<u32, DecodeError> {
        let mut value: u32 = 0;
        for index in 0..4 {
            let byte = self.u8()?;
            value |= u32::from(byte & 0x7f) << (7 * index);
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(DecodeError::Malformed(
            "variable byte integer longer than 4 bytes",
        ))
    }

    /// Splits off the next `length` bytes without copying.
    pub(crate) fn bytes(&mut self, length: usize) -> Result<Bytes, DecodeError> {
        if self.buf.len() < length {
            return Err(SHORT);
        }
        Ok(self.buf.split_to(length))
    }

    /// Reads a two-byte-length-prefixed binary field.
    pub(crate) fn binary(&mut self) -> Result<Bytes, DecodeError> {
        let length = self.u16()?;
        self.bytes(usize::from(length))
    }

    /// Reads a two-byte-length-prefixed UTF-8 string and validates it.
    pub(crate) fn string(&mut self) -> Result<Str, DecodeError> {
        Str::try_from(self.binary()?)
    }

    /// Reads a string pair (user property).
    pub(crate) fn string_pair(&mut self) -> Result<(Str, Str), DecodeError> {
        let key = self.string()?;
        let value = self.string()?;
        Ok((key, value))
    }

    /// A sub-reader over the next `length` bytes (a property block).
    pub(crate) fn take(&mut self, length: usize) -> Result<Reader, DecodeError> {
        Ok(Reader::new(self.bytes(length)?))
    }

    /// Everything left (a payload that runs to the end of the packet).
    pub(crate) fn rest(&mut self) -> Bytes {
        std::mem::take(&mut self.buf)
    }

    /// Fails if bytes remain: the remaining length claimed more than the fields hold.
    pub(crate) fn finish(&self) -> Result<(), DecodeError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::Malformed(
                "trailing bytes after the packet's fields",
            ))
        }
    }
}

/// Destination of encoded bytes: the real buffer, or a `Counter` that only measures.
pub(crate) trait Sink {
    fn put_u8(&mut self, value: u8);
    fn put_u16(&mut self, value: u16);
    fn put_u32(&mut self, value: u32);
    fn put_slice(&mut self, value: &[u8]);
}

impl Sink for BytesMut {
    fn put_u8(&mut self, value: u8) {
        BufMut::put_u8(self, value);
    }

    fn put_u16(&mut self, value: u16) {
        BufMut::put_u16(self, value);
    }

    fn put_u32(&mut self, value: u32) {
        BufMut::put_u32(self, value);
    }

    fn put_slice(&mut self, value: &[u8]) {
        BufMut::put_slice(self, value);
    }
}

/// A `Sink` that counts bytes instead of writing them.
#[derive(Default)]
pub(crate) struct Counter {
    pub(crate) length: usize,
}

impl Sink for Counter {
    fn put_u8(&mut self, _value: u8) {
        self.length += 1;
    }

    fn put_u16(&mut self, _value: u16) {
        self.length += 2;
    }

    fn put_u32(&mut self, _value: u32) {
        self.length += 4;
    }

    fn put_slice(&mut self, value: &[u8]) {
        self.length += value.len();
    }
}

/// Number of bytes the Variable Byte Integer encoding of `value` takes.
pub(crate) fn varint_len(value: usize) -> usize {
    match value {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    }
}

pub(crate) fn put_varint<S: Sink>(sink: &mut S, value: usize) -> Result<(), EncodeError> {
    if value > VARIABLE_BYTE_INTEGER_MAX as usize {
        return Err(EncodeError::PacketTooLarge);
    }
    let mut rest = value;
    loop {
        let mut byte = (rest % 128) as u8;
        rest /= 128;
        if rest > 0 {
            byte |= 0x80;
        }
        sink.put_u8(byte);
        if rest == 0 {
            return Ok(());
        }
    }
}

/// Writes a two-byte-length-prefixed string or binary field.
pub(crate) fn put_binary<S: Sink>(sink: &mut S, value: &[u8]) -> Result<(), EncodeError> {
    if value.len() > FIELD_LENGTH_MAX {
        return Err(EncodeError::StringTooLong);
    }
    sink.put_u16(value.len() as u16);
    sink.put_slice(value);
    Ok(())
}
