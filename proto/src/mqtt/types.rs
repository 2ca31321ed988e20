//! Small value types shared by every packet: QoS, protocol level and the MQTT string.

use std::fmt;
use std::ops::Deref;

use bytes::Bytes;

use crate::mqtt::error::DecodeError;

/// Delivery guarantee of a message ("Quality of Service").
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub enum QoS {
    /// QoS 0: fire and forget.
    #[default]
    AtMostOnce = 0,
    /// QoS 1: acknowledged by PUBACK, may be duplicated.
    AtLeastOnce = 1,
    /// QoS 2: four-way handshake, delivered exactly once.
    ExactlyOnce = 2,
}

impl QoS {
    /// Converts a wire value; `None` for 3 and above, which the spec calls malformed.
    pub fn from_u8(value: u8) -> Option<QoS> {
        match value {
            0 => Some(QoS::AtMostOnce),
            1 => Some(QoS::AtLeastOnce),
            2 => Some(QoS::ExactlyOnce),
            _ => None,
        }
    }
}

/// MQTT protocol level, as carried by CONNECT.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum ProtocolVersion {
    /// MQTT 3.1 (protocol name "MQIsdp", level 3).
    V31 = 3,
    /// MQTT 3.1.1 (protocol name "MQTT", level 4).
    #[default]
    V311 = 4,
    /// MQTT 5.0 (protocol name "MQTT", level 5).
    V5 = 5,
}

impl ProtocolVersion {
    /// True for MQTT 5, the only level with properties and reason codes.
    pub fn is_v5(self) -> bool {
        self == ProtocolVersion::V5
    }

    /// The protocol level byte written in CONNECT.
    pub fn level(self) -> u8 {
        self as u8
    }
}

/// Validated MQTT UTF-8 string (no U+0000, valid UTF-8) backed by Bytes, zero-copy from the read buffer.
///
/// Every constructor guarantees valid UTF-8; `From<&str>`/`From<String>` do not check for U+0000,
/// so strings built locally must not contain it (the peer would reject the packet).
#[derive(Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Str(Bytes);

impl Str {
    /// The empty string.
    pub fn new() -> Str {
        Str(Bytes::new())
    }

    /// Wraps a static string without copying.
    pub fn from_static(value: &'static str) -> Str {
        Str(Bytes::from_static(value.as_bytes()))
    }

    /// The string slice.
    ///
    /// Free: the bytes were validated when the `Str` was built (topics are read on the hot path).
    pub fn as_str(&self) -> &str {
        // SAFETY: the field is private and every constructor (`new`, `from_static`, `From<String>`,
        // `From<&str>`, `TryFrom<Bytes>`) takes bytes that are valid UTF-8, and `Bytes` is
        // immutable, so the bytes are still valid UTF-8 here. Tested by `str_views_match`.
        unsafe { std::str::from_utf8_unchecked(&self.0) }
    }

    /// The underlying bytes (cheap to clone and share).
    pub fn as_bytes(&self) -> &Bytes {
        &self.0
    }

    /// Gives up the string and returns its bytes.
    pub fn into_bytes(self) -> Bytes {
        self.0
    }

    /// Length in bytes.
    pub fn len_bytes(&self) -> usize {
        self.0.len()
    }
}

impl Deref for Str {
    type Target = str;

    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<str> for Str {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl fmt::Display for Str {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self.as_str(), f)
    }
}

impl fmt::Debug for Str {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl From<String> for Str {
    fn from(value: String) -> Str {
        // Bytes takes over the String's allocation, so this does not copy.
        Str(Bytes::from(value))
    }
}

impl From<&str> for Str {
    fn from(value: &str) -> Str {
        Str(Bytes::copy_from_slice(value.as_bytes()))
    }
}

impl TryFrom<Bytes> for Str {
    type Error = DecodeError;

    fn try_from(value: Bytes) -> Result<Str, DecodeError> {
        let text = std::str::from_utf8(&value).map_err(|_| DecodeError::InvalidUtf8)?;
        // The spec forbids U+0000 in every UTF-8 string field [MQTT-1.5.4-2].
        if text.as_bytes().contains(&0) {
            return Err(DecodeError::InvalidUtf8);
        }
        Ok(Str(value))
    }
}

impl PartialEq<str> for Str {
    fn eq(&self, other: &str) -> bool {
        self.0 == other.as_bytes()
    }
}

impl PartialEq<&str> for Str {
    fn eq(&self, other: &&str) -> bool {
        self.0 == other.as_bytes()
    }
}

#[cfg(test)]
mod str_safety_tests {
    use super::Str;
    use bytes::Bytes;

    #[test]
    fn str_views_match() {
        let cases = ["", "a/b", "ünïcødé/🚀", "$SYS/broker"];
        for case in cases {
            assert_eq!(Str::from(case).as_str(), case);
            assert_eq!(Str::from(case.to_owned()).as_str(), case);
            let from_bytes = Str::try_from(Bytes::copy_from_slice(case.as_bytes())).expect("valid");
            assert_eq!(from_bytes.as_str(), case);
        }
        assert_eq!(Str::from_static("x/y").as_str(), "x/y");
        assert!(Str::try_from(Bytes::from_static(b"\xff\xfe")).is_err());
    }
}
