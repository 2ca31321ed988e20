//! Strict percent-decoding of URL path segments and query values.
//!
//! The decoding is the `percent-encoding` crate's; what is added is strictness: that crate
//! passes a malformed escape (`%zz`, `%4`) through as text, and a hand-rolled `from_str_radix`
//! takes `%+1` as byte 1. An id that arrives malformed is refused (400), never guessed at.

/// `%XX` decoding of one path segment or query value; `None` when an escape is not `%` and two
/// hex digits, or the result is not UTF-8. `+` stays `+` (it is not a space in this API, and it
/// is the MQTT wildcard in stream filters).
pub fn decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut at = 0;
    while let Some(found) = bytes[at..].iter().position(|&byte| byte == b'%') {
        let escape = at + found;
        let digits = bytes.get(escape + 1..escape + 3)?;
        if !digits.iter().all(u8::is_ascii_hexdigit) {
            return None;
        }
        at = escape + 3;
    }
    percent_encoding::percent_decode_str(text)
        .decode_utf8()
        .ok()
        .map(|decoded| decoded.into_owned())
}

#[cfg(test)]
mod tests {
    use super::decode;
    use proptest::prelude::*;

    #[test]
    fn escapes_decode_and_malformed_ones_are_refused() {
        assert_eq!(decode("a%2Fb%20c").as_deref(), Some("a/b c"));
        assert_eq!(decode("caf%C3%A9+x").as_deref(), Some("café+x"));
        assert_eq!(
            decode("%00").as_deref(),
            Some("\0"),
            "control bytes are the caller's to refuse"
        );
        for bad in ["%", "%4", "%zz", "%+1", "%-1", "a%g0", "%FF", "%C3"] {
            assert_eq!(decode(bad), None, "{bad:?}");
        }
    }

    proptest! {
        /// Any text encoded byte by byte decodes back to itself; any input decodes or is refused.
        #[test]
        fn encoded_text_round_trips(text in "\\PC{0,40}", noise in "[%0-9a-zA-Z+/]{0,20}") {
            let encoded: String = text.bytes().map(|byte| format!("%{byte:02X}")).collect();
            prop_assert_eq!(decode(&encoded), Some(text));
            let _ = decode(&noise);
        }
    }
}
