//! Topic names and topic filters: validation, `$share` parsing and the reference matcher.
//!
//! The rules are MQTT 5.0 section 4.7 (also valid for 3.1.1). `matches` is the slow, obviously
//! correct matcher that the tries are tested against; the broker routes through the tries.

/// Largest topic name or filter in bytes: MQTT strings carry a 16-bit length prefix.
pub const TOPIC_BYTES_MAX: usize = 65_535;

/// Prefix of a shared subscription filter (`$share/{group}/{filter}`).
pub const SHARE_PREFIX: &str = "$share/";

/// Why a topic name or topic filter was refused.
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
pub enum TopicError {
    /// The topic name or filter is the empty string.
    #[error("topic is empty")]
    Empty,
    /// The topic name or filter is longer than 65535 bytes.
    #[error("topic is longer than {TOPIC_BYTES_MAX} bytes")]
    TooLong,
    /// A topic name (PUBLISH) contains `+` or `#`.
    #[error("topic name contains a wildcard")]
    Wildcard,
    /// A filter uses `+` or `#` as part of a level, or `#` before the last level.
    #[error("wildcard must be a whole level and '#' must be the last level")]
    InvalidWildcard,
    /// More levels than the configured maximum.
    #[error("topic has {levels} levels, at most {max} allowed")]
    TooManyLevels {
        /// Levels counted in the topic.
        levels: usize,
        /// Configured maximum.
        max: usize,
    },
    /// The topic contains U+0000, which the spec forbids.
    #[error("topic contains a null character")]
    NullChar,
    /// A `$share/` filter without a valid group name or filter.
    #[error("invalid shared subscription filter")]
    InvalidShare,
}

/// Checks a topic name for PUBLISH: non-empty, no wildcards, no U+0000, at most 65535 bytes and `levels_max` levels.
pub fn validate_topic_name(topic: &str, levels_max: usize) -> Result<(), TopicError> {
    check_length(topic)?;
    // One pass over the bytes: this runs for every PUBLISH. '/', '+', '#' and NUL are ASCII, so
    // they never occur inside a multi-byte UTF-8 sequence.
    let mut levels = 1;
    for &byte in topic.as_bytes() {
        match byte {
            b'/' => levels += 1,
            b'+' | b'#' => return Err(TopicError::Wildcard),
            0 => return Err(TopicError::NullChar),
            _ => {}
        }
    }
    check_levels(levels, levels_max)
}

/// Checks a topic filter for SUBSCRIBE; a `$share/` prefix must be stripped first with [`parse_shared`].
pub fn validate_filter(filter: &str, levels_max: usize) -> Result<(), TopicError> {
    check_length(filter)?;
    if filter.as_bytes().contains(&0) {
        return Err(TopicError::NullChar);
    }
    check_levels(level_count(filter), levels_max)?;
    let mut levels = filter.split('/').peekable();
    while let Some(level) = levels.next() {
        if level.contains('#') {
            if level != "#" || levels.peek().is_some() {
                return Err(TopicError::InvalidWildcard);
            }
        } else if level.contains('+') && level != "+" {
            return Err(TopicError::InvalidWildcard);
        }
    }
    Ok(())
}

/// A parsed `$share/{group}/{filter}` subscription, borrowing from the original string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SharedFilter<'a> {
    /// The share name: non-empty, without `/`, `+` or `#`.
    pub group: &'a str,
    /// The filter after the group, already validated.
    pub filter: &'a str,
}

/// `Ok(None)` if not a `$share/` filter; `Ok(Some)` for a well-formed shared filter; `Err(InvalidShare)` otherwise.
pub fn parse_shared(
    filter: &str,
    levels_max: usize,
) -> Result<Option<SharedFilter<'_>>, TopicError> {
    let Some(rest) = filter.strip_prefix(SHARE_PREFIX) else {
        return Ok(None);
    };
    let Some((group, inner)) = rest.split_once('/') else {
        return Err(TopicError::InvalidShare);
    };
    if group.is_empty() || group.contains(['+', '#']) {
        return Err(TopicError::InvalidShare);
    }
    // Every defect of a shared filter is reported as InvalidShare so the caller has one
    // reason code to map (MQTT 5 "Topic Filter invalid").
    validate_filter(inner, levels_max).map_err(|_| TopicError::InvalidShare)?;
    Ok(Some(SharedFilter {
        group,
        filter: inner,
    }))
}

/// Splits a `$share/{group}/{filter}` that the broker already validated (and may have put into
/// an org scope, which [`parse_shared`] would refuse as client input): `None` if not shared.
pub fn split_shared(filter: &str) -> Option<SharedFilter<'_>> {
    let rest = filter.strip_prefix(SHARE_PREFIX)?;
    let (group, inner) = rest.split_once('/')?;
    Some(SharedFilter {
        group,
        filter: inner,
    })
}

/// First characters of an org scope level. Topic names and filters from clients cannot contain
/// U+0000, so no client can name (or forge) another org's scope.
pub const ORG_MARK: &str = "$\u{0}";

/// The prefix that puts a topic or filter into org `org`'s namespace: empty for org 0 (the
/// default org, so a single-tenant broker routes exactly the client's strings), else
/// `$\0{org}/`. Its level starts with `$`, so no wildcard of another org reaches it, and the
/// matchers treat the level after it as a root level (the `$` rule applies there again).
pub fn org_scope(org: u32) -> String {
    if org == 0 {
        String::new()
    } else {
        format!("{ORG_MARK}{org}/")
    }
}

/// True for a topic level that is an org scope.
pub fn is_org_level(level: &str) -> bool {
    level.starts_with(ORG_MARK)
}

/// Puts a topic name or filter into a scope made by [`org_scope`]; for `$share/{group}/{filter}`
/// the scope goes in front of the filter part, so the group stays what the broker parses.
pub fn scoped(scope: &str, topic_or_filter: &str) -> String {
    if scope.is_empty() {
        return topic_or_filter.to_owned();
    }
    if let Some(rest) = topic_or_filter.strip_prefix(SHARE_PREFIX) {
        if let Some((group, filter)) = rest.split_once('/') {
            return format!("{SHARE_PREFIX}{group}/{scope}{filter}");
        }
    }
    format!("{scope}{topic_or_filter}")
}

/// The client's view of a scoped topic or filter, and its org number (0 when unscoped).
pub fn unscoped(topic_or_filter: &str) -> (u32, std::borrow::Cow<'_, str>) {
    use std::borrow::Cow;
    if let Some(rest) = topic_or_filter.strip_prefix(SHARE_PREFIX) {
        if let Some((group, filter)) = rest.split_once('/') {
            let (org, inner) = strip_scope(filter);
            if org != 0 {
                return (org, Cow::Owned(format!("{SHARE_PREFIX}{group}/{inner}")));
            }
        }
        return (0, Cow::Borrowed(topic_or_filter));
    }
    let (org, inner) = strip_scope(topic_or_filter);
    (org, Cow::Borrowed(inner))
}

/// Splits a leading org scope off a topic name (no `$share` handling): the hot-path form of
/// [`unscoped`], used when encoding deliveries.
pub fn strip_scope(topic: &str) -> (u32, &str) {
    let Some(rest) = topic.strip_prefix(ORG_MARK) else {
        return (0, topic);
    };
    match rest.split_once('/') {
        Some((number, inner)) => match number.parse() {
            Ok(org) => (org, inner),
            Err(_) => (0, topic),
        },
        None => (0, topic),
    }
}

/// Reference matcher: does `filter` match topic name `topic` under the spec rules (slow, for tests and one-off checks)?
pub fn matches(filter: &str, topic: &str) -> bool {
    // Inside an org scope the `$` rule applies to the level after the scope.
    if let (Some((f_org, f_rest)), Some((t_org, t_rest))) =
        (scope_split(filter), scope_split(topic))
    {
        return f_org == t_org && matches(f_rest, t_rest);
    }
    // Spec 4.7.2: a filter starting with a wildcard must not match a topic starting with '$'.
    if topic.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#')) {
        return false;
    }
    let mut filter_levels = filter.split('/');
    let mut topic_levels = topic.split('/');
    loop {
        match (filter_levels.next(), topic_levels.next()) {
            // '#' matches its parent level too, so `a/#` matches `a`.
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(filter_level), Some(topic_level)) => {
                if filter_level != topic_level {
                    return false;
                }
            }
            (None, None) => return true,
            (Some(_), None) | (None, Some(_)) => return false,
        }
    }
}

fn scope_split(s: &str) -> Option<(&str, &str)> {
    let (level, rest) = s.split_once('/')?;
    is_org_level(level).then_some((level, rest))
}

/// Number of levels in a topic name or filter (`/` separators plus one; `""` has one level).
pub fn level_count(s: &str) -> usize {
    s.bytes().filter(|&byte| byte == b'/').count() + 1
}

/// Splits off the first level: `("a", Some("b/c"))` for `a/b/c`, `("c", None)` for `c`.
pub(crate) fn split_level(s: &str) -> (&str, Option<&str>) {
    // A byte scan: levels are short, and `str::find(char)` cost a tenth of a QoS 0 fan-in
    // profile in its searcher set-up. `/` is ASCII, so the index is a char boundary.
    match s.bytes().position(|b| b == b'/') {
        Some(slash) => (&s[..slash], Some(&s[slash + 1..])),
        None => (s, None),
    }
}

fn check_length(s: &str) -> Result<(), TopicError> {
    if s.is_empty() {
        Err(TopicError::Empty)
    } else if s.len() > TOPIC_BYTES_MAX {
        Err(TopicError::TooLong)
    } else {
        Ok(())
    }
}

fn check_levels(levels: usize, levels_max: usize) -> Result<(), TopicError> {
    if levels > levels_max {
        Err(TopicError::TooManyLevels {
            levels,
            max: levels_max,
        })
    } else {
        Ok(())
    }
}

/// The FNV-1a offset basis: [`fnv1a`]'s usual start.
pub const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

/// 64-bit FNV-1a of `bytes` from `start` ([`FNV_OFFSET`] for the standard hash): stable across
/// processes, shards and nodes, unlike a randomly seeded hasher (homes of topics, queue names).
pub fn fnv1a(start: u64, bytes: &[u8]) -> u64 {
    bytes.iter().fold(start, |hash, &byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEVELS_MAX: usize = 16;

    #[test]
    fn multi_level_wildcard_matches_parent_level() {
        assert!(matches("sport/tennis/player1/#", "sport/tennis/player1"));
        assert!(matches(
            "sport/tennis/player1/#",
            "sport/tennis/player1/ranking"
        ));
        assert!(matches(
            "sport/tennis/player1/#",
            "sport/tennis/player1/score/wimbledon"
        ));
        assert!(matches("sport/#", "sport"));
        assert!(!matches("sport/tennis/player1/#", "sport/tennis"));
    }

    #[test]
    fn hash_alone_matches_everything_but_dollar_topics() {
        assert!(matches("#", "a"));
        assert!(matches("#", "a/b/c"));
        assert!(matches("#", "/"));
        assert!(!matches("#", "$SYS/x"));
        // Org scopes: no wildcard crosses into a scope, and the `$` rule holds inside one.
        let scope = org_scope(7);
        assert!(!matches("#", &scoped(&scope, "a/b")));
        assert!(!matches("+/a/b", &scoped(&scope, "a/b")));
        assert!(matches(&scoped(&scope, "#"), &scoped(&scope, "a/b")));
        assert!(!matches(&scoped(&scope, "#"), &scoped(&scope, "$SYS/x")));
        assert!(!matches(&scoped(&scope, "#"), &scoped(&org_scope(8), "a")));
        assert!(!matches(&scoped(&scope, "#"), "a/b"));
        assert!(!matches("#", "$SYS"));
    }

    #[test]
    fn single_level_wildcard() {
        assert!(matches("sport/tennis/+", "sport/tennis/player1"));
        assert!(!matches("sport/tennis/+", "sport/tennis/player1/ranking"));
        assert!(!matches("sport/+", "sport"));
        assert!(matches("sport/+", "sport/"));
        assert!(matches("+", "finance"));
        assert!(!matches("+", "finance/x"));
        assert!(matches("+/+", "/finance"));
        assert!(matches("/+", "/finance"));
        assert!(!matches("+", "/finance"));
        assert!(matches("+/+/+", "//"));
    }

    #[test]
    fn dollar_topics() {
        assert!(!matches("+/monitor/Clients", "$SYS/monitor/Clients"));
        assert!(matches("$SYS/monitor/+", "$SYS/monitor/Clients"));
        assert!(matches("$SYS/#", "$SYS/x"));
        assert!(matches("$SYS/#", "$SYS"));
        // The rule applies to the first level only.
        assert!(matches("a/+", "a/$b"));
        assert!(matches("a/#", "a/$b/c"));
    }

    #[test]
    fn exact_matching_is_case_sensitive_and_level_exact() {
        assert!(matches("a/b", "a/b"));
        assert!(!matches("a/b", "A/b"));
        assert!(!matches("a/b", "a/b/"));
        assert!(!matches("a", "a/b"));
        assert!(!matches("a/b", "a"));
    }

    #[test]
    fn filters_valid() {
        for filter in [
            "#",
            "+",
            "sport/#",
            "sport/tennis/+",
            "+/tennis/#",
            "/",
            "+/+",
            "$SYS/#",
            "a//b",
        ] {
            assert_eq!(validate_filter(filter, LEVELS_MAX), Ok(()), "{filter}");
        }
    }

    #[test]
    fn filters_invalid_wildcards() {
        for filter in [
            "sport/tennis#",
            "sport/tennis/#/ranking",
            "sport+",
            "sport/+tennis",
            "#/a",
            "##",
            "++",
            "a/#/",
        ] {
            assert_eq!(
                validate_filter(filter, LEVELS_MAX),
                Err(TopicError::InvalidWildcard),
                "{filter}"
            );
        }
    }

    #[test]
    fn filters_other_errors() {
        assert_eq!(validate_filter("", LEVELS_MAX), Err(TopicError::Empty));
        assert_eq!(
            validate_filter("a\0b", LEVELS_MAX),
            Err(TopicError::NullChar)
        );
        let long = "a".repeat(TOPIC_BYTES_MAX + 1);
        assert_eq!(validate_filter(&long, LEVELS_MAX), Err(TopicError::TooLong));
        assert_eq!(
            validate_filter("a/b/c/#", 3),
            Err(TopicError::TooManyLevels { levels: 4, max: 3 })
        );
        assert_eq!(validate_filter("a/b/#", 3), Ok(()));
    }

    #[test]
    fn topic_names() {
        assert_eq!(validate_topic_name("a/b", LEVELS_MAX), Ok(()));
        assert_eq!(validate_topic_name("/", LEVELS_MAX), Ok(()));
        assert_eq!(validate_topic_name("$SYS/x", LEVELS_MAX), Ok(()));
        assert_eq!(validate_topic_name("", LEVELS_MAX), Err(TopicError::Empty));
        assert_eq!(
            validate_topic_name("a/+", LEVELS_MAX),
            Err(TopicError::Wildcard)
        );
        assert_eq!(
            validate_topic_name("a/#", LEVELS_MAX),
            Err(TopicError::Wildcard)
        );
        assert_eq!(
            validate_topic_name("a+b", LEVELS_MAX),
            Err(TopicError::Wildcard)
        );
        assert_eq!(
            validate_topic_name("a\0", LEVELS_MAX),
            Err(TopicError::NullChar)
        );
        let long = "a".repeat(TOPIC_BYTES_MAX + 1);
        assert_eq!(
            validate_topic_name(&long, LEVELS_MAX),
            Err(TopicError::TooLong)
        );
        let exact = "a".repeat(TOPIC_BYTES_MAX);
        assert_eq!(validate_topic_name(&exact, LEVELS_MAX), Ok(()));
    }

    #[test]
    fn topic_name_levels_max() {
        assert_eq!(validate_topic_name("a/b/c", 3), Ok(()));
        assert_eq!(
            validate_topic_name("a/b/c/d", 3),
            Err(TopicError::TooManyLevels { levels: 4, max: 3 })
        );
        assert_eq!(
            validate_topic_name("///", 3),
            Err(TopicError::TooManyLevels { levels: 4, max: 3 })
        );
    }

    #[test]
    fn level_counts() {
        assert_eq!(level_count(""), 1);
        assert_eq!(level_count("a"), 1);
        assert_eq!(level_count("/"), 2);
        assert_eq!(level_count("a/b/c"), 3);
    }

    #[test]
    fn shared_filters() {
        assert_eq!(parse_shared("a/b", LEVELS_MAX), Ok(None));
        assert_eq!(parse_shared("$share", LEVELS_MAX), Ok(None));
        assert_eq!(parse_shared("$SYS/#", LEVELS_MAX), Ok(None));
        assert_eq!(
            parse_shared("$share/g/a/b", LEVELS_MAX),
            Ok(Some(SharedFilter {
                group: "g",
                filter: "a/b"
            }))
        );
        assert_eq!(
            parse_shared("$share/g/#", LEVELS_MAX),
            Ok(Some(SharedFilter {
                group: "g",
                filter: "#"
            }))
        );
        for bad in [
            "$share//a",
            "$share/g",
            "$share/g/",
            "$share/g+/a",
            "$share/g#/a",
            "$share/+/a",
            "$share/",
            "$share/g/a#",
            "$share/g/#/a",
        ] {
            assert_eq!(
                parse_shared(bad, LEVELS_MAX),
                Err(TopicError::InvalidShare),
                "{bad}"
            );
        }
        assert_eq!(
            parse_shared("$share/g/a/b/c", 2),
            Err(TopicError::InvalidShare)
        );
        assert!(parse_shared("$share/g/a/b", 2).is_ok());
    }

    #[test]
    fn split_levels() {
        assert_eq!(split_level("a/b/c"), ("a", Some("b/c")));
        assert_eq!(split_level("c"), ("c", None));
        assert_eq!(split_level("/"), ("", Some("")));
        assert_eq!(split_level(""), ("", None));
    }

    #[test]
    fn scoping_round_trips() {
        assert_eq!(org_scope(0), "");
        assert_eq!(scoped("", "a/b"), "a/b");
        let scope = org_scope(42);
        assert_eq!(scoped(&scope, "a/b"), "$\u{0}42/a/b");
        assert_eq!(scoped(&scope, "$share/g/a/#"), "$share/g/$\u{0}42/a/#");
        assert_eq!(unscoped(&scoped(&scope, "a/b")), (42, "a/b".into()));
        assert_eq!(
            unscoped(&scoped(&scope, "$share/g/a/#")),
            (42, "$share/g/a/#".into())
        );
        assert_eq!(unscoped("a/b"), (0, "a/b".into()));
        assert_eq!(strip_scope("$SYS/x"), (0, "$SYS/x"));
        let shared = scoped(&scope, "$share/g/a/+");
        // A client cannot send a scope; the broker's own split accepts it.
        assert!(parse_shared(&shared, LEVELS_MAX).is_err());
        let parsed = split_shared(&shared).unwrap();
        assert_eq!(parsed.group, "g");
        assert_eq!(parsed.filter, scoped(&scope, "a/+"));
    }
}
