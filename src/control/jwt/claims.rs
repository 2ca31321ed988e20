//! Reading a token's parts and claims: the compact form, NumericDates, the audience and the
//! topic patterns the credentials get.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ringmq_router::topic::validate_filter;
use serde_json::{Map, Value};

use super::JwtError;

/// Most patterns in `mqtt_publish` or `mqtt_subscribe`.
const PATTERNS_MAX: usize = 32;
/// Longest pattern in `mqtt_publish` or `mqtt_subscribe`, in bytes.
const PATTERN_BYTES_MAX: usize = 256;
/// Most levels in a pattern, as for the broker's own filters.
pub(super) const PATTERN_LEVELS_MAX: usize = 32;

/// True when every topic `inner` matches is matched by `outer` too (both valid filters), so a
/// token's pattern granted within a provider's `topics` cannot reach beyond them.
pub fn filter_within(inner: &str, outer: &str) -> bool {
    let mut inner_levels = inner.split('/');
    let mut outer_levels = outer.split('/');
    let mut first = true;
    loop {
        match (inner_levels.next(), outer_levels.next()) {
            (_, Some("#")) => {
                // A wildcard first level never matches `$` topics (MQTT 4.7.2), and `#` also
                // matches the parent level, which `inner` may end on.
                return !(first && inner.starts_with('$'));
            }
            (None, None) => return true,
            (Some(_), None) | (None, Some(_)) => return false,
            (Some("#"), Some(_)) => return false,
            (Some(level), Some("+")) => {
                if first && level.starts_with('$') {
                    return false;
                }
            }
            (Some(level), Some(other)) => {
                if level != other {
                    return false;
                }
            }
        }
        first = false;
    }
}

/// Splits a compact JWS into its encoded header and payload (the signature is jsonwebtoken's).
pub(super) fn split_token(token: &str) -> Result<(&str, &str), JwtError> {
    let mut parts = token.split('.');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(header), Some(payload), Some(_signature), None) => Ok((header, payload)),
        _ => Err(JwtError::Malformed("not three dot-separated parts")),
    }
}

/// Decodes a base64url JSON object: the header, or the payload before verification.
pub(super) fn decode_part(part: &str, what: &'static str) -> Result<Map<String, Value>, JwtError> {
    let bytes = URL_SAFE_NO_PAD.decode(part).map_err(|_| {
        JwtError::Malformed(if what == "header" {
            "header is not base64url"
        } else {
            "payload is not base64url"
        })
    })?;
    serde_json::from_slice(&bytes).map_err(|_| {
        JwtError::Malformed(if what == "header" {
            "header is not a JSON object"
        } else {
            "payload is not a JSON object"
        })
    })
}

/// Which way a fractional NumericDate is rounded: always towards refusing the token.
#[derive(Clone, Copy)]
pub(super) enum Rounding {
    Down,
    Up,
}

/// Reads a NumericDate claim (RFC 7519: seconds, possibly fractional) as whole unix seconds.
pub(super) fn numeric_date(
    value: &Value,
    claim: &'static str,
    rounding: Rounding,
) -> Result<u64, JwtError> {
    let invalid = JwtError::InvalidClaim {
        claim,
        reason: "must be a non-negative number of seconds",
    };
    let Value::Number(number) = value else {
        return Err(invalid);
    };
    if let Some(seconds) = number.as_u64() {
        return Ok(seconds);
    }
    match number.as_f64() {
        // `as` saturates, so a huge value stays huge instead of wrapping.
        Some(seconds) if seconds.is_finite() && seconds >= 0.0 => Ok(match rounding {
            Rounding::Down => seconds.floor() as u64,
            Rounding::Up => seconds.ceil() as u64,
        }),
        _ => Err(invalid),
    }
}

/// Checks that `aud` (a string or an array of strings) contains the provider's audience.
pub(super) fn check_audience(aud: Option<&Value>, audience: &str) -> Result<(), JwtError> {
    let invalid = JwtError::InvalidClaim {
        claim: "aud",
        reason: "must be a string or an array of strings",
    };
    match aud {
        None => Err(JwtError::MissingClaim("aud")),
        Some(Value::String(aud)) if aud == audience => Ok(()),
        Some(Value::String(_)) => Err(JwtError::WrongAudience),
        Some(Value::Array(items)) => {
            let mut found = false;
            for item in items {
                match item {
                    Value::String(aud) => found |= aud == audience,
                    _ => return Err(invalid),
                }
            }
            if found {
                Ok(())
            } else {
                Err(JwtError::WrongAudience)
            }
        }
        Some(_) => Err(invalid),
    }
}

/// Reads `mqtt_publish` or `mqtt_subscribe`; when absent the subject's own tree `{sub}/#`.
pub(super) fn topic_patterns(
    claims: &Map<String, Value>,
    claim: &'static str,
    subject: &str,
) -> Result<Vec<String>, JwtError> {
    let items = match claims.get(claim) {
        None => {
            // The subject becomes the first topic level: a wildcard or separator in it would
            // grant far more (or other) topics than the subject's own.
            if subject.contains(['+', '#', '/', '\0']) {
                return Err(JwtError::SubjectNotTopicLevel { claim });
            }
            let pattern = format!("{subject}/#");
            validate_filter(&pattern, PATTERN_LEVELS_MAX).map_err(|error| {
                JwtError::InvalidPattern {
                    claim,
                    index: 0,
                    error,
                }
            })?;
            return Ok(vec![pattern]);
        }
        Some(Value::Array(items)) => items,
        Some(_) => {
            return Err(JwtError::InvalidClaim {
                claim,
                reason: "must be an array of strings",
            })
        }
    };
    if items.len() > PATTERNS_MAX {
        return Err(JwtError::TooManyPatterns {
            claim,
            max: PATTERNS_MAX,
        });
    }
    let mut patterns = Vec::with_capacity(items.len());
    for (index, item) in items.iter().enumerate() {
        let Value::String(pattern) = item else {
            return Err(JwtError::InvalidClaim {
                claim,
                reason: "must be an array of strings",
            });
        };
        if pattern.len() > PATTERN_BYTES_MAX {
            return Err(JwtError::PatternTooLong {
                claim,
                index,
                max: PATTERN_BYTES_MAX,
            });
        }
        // Identity providers often write the glob `x/*`; it means the MQTT `x/#`.
        let pattern = match pattern.strip_suffix("/*") {
            Some(prefix) => format!("{prefix}/#"),
            None => pattern.clone(),
        };
        validate_filter(&pattern, PATTERN_LEVELS_MAX).map_err(|error| {
            JwtError::InvalidPattern {
                claim,
                index,
                error,
            }
        })?;
        patterns.push(pattern);
    }
    Ok(patterns)
}
