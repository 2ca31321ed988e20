//! MQTT topics and filters as NATS subjects, for a cluster whose nodes meet on NATS.
//!
//! A topic `a/b` of org 7 is the subject `PREFIX.7.a.b`: the org as the token after the prefix
//! (an org's messages never reach another org's subscriptions, and a node's interest is per
//! org), then one token per MQTT level. A filter maps level by level, `+` to `*` and `#` to `>`;
//! since MQTT's `a/#` also matches `a` itself and NATS's `a.>` does not, a filter ending in `#`
//! maps to two subjects (`a` and `a.>`).
//!
//! NATS reserves `.` (the separator), `*` and `>` (wildcards) and whitespace, and a token may
//! not be empty; MQTT levels may hold any of them, or be empty. A level made only of ASCII
//! letters, digits, `-` and `_` is its own token (the common case: `fleet/site7/dev-107`); any
//! other byte is written `~XX` (two lowercase hex digits), `~` itself included, and an empty
//! level is the token `~`. The mapping is one-to-one: a token without `~` is a plain level, and
//! decoding refuses anything the encoder cannot produce.

use std::fmt::Write as _;

/// A subject longer than this is not sent: NATS refuses a control line past its
/// `max_control_line` (4096 bytes by default), and a PUB line holds the subject and a size.
pub const SUBJECT_MAX: usize = 4000;

/// Why a topic or filter has no subject.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubjectError {
    /// The subject would pass [`SUBJECT_MAX`] bytes.
    #[error("the NATS subject would be {0} bytes, more than {SUBJECT_MAX}")]
    TooLong(usize),
    /// A subject token that no topic maps to.
    #[error("not a ringmq subject: {0}")]
    Invalid(&'static str),
}

fn plain(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_'
}

/// Appends the token of one MQTT level.
fn push_level(out: &mut String, level: &str) {
    if level.is_empty() {
        out.push('~');
        return;
    }
    for &byte in level.as_bytes() {
        if plain(byte) {
            out.push(char::from(byte));
        } else {
            // Writing to a String cannot fail.
            let _ = write!(out, "~{byte:02x}");
        }
    }
}

fn start(prefix: &str, org: u32) -> String {
    let mut out = String::with_capacity(prefix.len() + 16);
    out.push_str(prefix);
    out.push('.');
    let _ = write!(out, "{org}");
    out
}

fn bounded(subject: String) -> Result<String, SubjectError> {
    if subject.len() > SUBJECT_MAX {
        Err(SubjectError::TooLong(subject.len()))
    } else {
        Ok(subject)
    }
}

/// The subject a message on `topic` (unscoped) of `org` is published to.
pub fn topic_subject(prefix: &str, org: u32, topic: &str) -> Result<String, SubjectError> {
    let mut out = start(prefix, org);
    for level in topic.split('/') {
        out.push('.');
        push_level(&mut out, level);
    }
    bounded(out)
}

/// The subjects a node subscribes to for `filter` (unscoped, not `$share`) of `org`: one, or
/// two for a filter ending in `#`.
pub fn filter_subjects(prefix: &str, org: u32, filter: &str) -> Result<Vec<String>, SubjectError> {
    let mut out = start(prefix, org);
    let mut levels = filter.split('/').peekable();
    while let Some(level) = levels.next() {
        match level {
            "#" if levels.peek().is_none() => {
                // `a/#` matches `a` too; a lone `#` matches every topic (each has a level).
                let parent = (out.len() > prefix.len() + 1 + org_len(org)).then(|| out.clone());
                out.push_str(".>");
                let mut subjects = vec![bounded(out)?];
                if let Some(parent) = parent {
                    subjects.insert(0, bounded(parent)?);
                }
                return Ok(subjects);
            }
            "+" => out.push_str(".*"),
            _ => {
                out.push('.');
                push_level(&mut out, level);
            }
        }
    }
    Ok(vec![bounded(out)?])
}

fn org_len(org: u32) -> usize {
    org.checked_ilog10().map_or(1, |digits| digits as usize + 1)
}

/// The NATS queue group of the MQTT shared subscription `$share/{group}/{filter}` of `org`:
/// the same name on every node (so NATS picks one member node per message), different for
/// every (org, group, filter), and made only of characters NATS takes in a queue name.
pub fn queue_name(prefix: &str, org: u32, group: &str, filter: &str) -> String {
    let mut out = format!("{prefix}_{org}_");
    push_level(&mut out, group);
    // The filter by its hash: a name stays short whatever the filter's length.
    let hash = crate::topic::fnv1a(crate::topic::FNV_OFFSET, filter.as_bytes());
    let _ = write!(out, "_{hash:016x}");
    out
}

/// The JetStream key-value key of the retained message on `topic` of `org`: the subject's
/// tokens after the prefix, with `=` for `~` (a key may hold `=`, not `~`), so it is one-to-one
/// as the subject is.
pub fn retained_key(org: u32, topic: &str) -> Result<String, SubjectError> {
    Ok(topic_subject("k", org, topic)?[2..].replace('~', "="))
}

/// The org and topic of a key [`retained_key`] made.
pub fn key_topic(key: &str) -> Result<(u32, String), SubjectError> {
    if key.contains('~') {
        return Err(SubjectError::Invalid("character"));
    }
    subject_topic("k", &format!("k.{}", key.replace('=', "~")))
}

/// The JetStream key-value key of the cluster's registration of `client_id` in `org`: the org
/// and the whole id as one token (a `/` in it escaped too), `=` for `~`; one-to-one.
pub fn client_key(org: u32, client_id: &str) -> Result<String, SubjectError> {
    let mut key = String::with_capacity(client_id.len() + 12);
    let _ = write!(key, "{org}.");
    push_level(&mut key, client_id);
    bounded(key.replace('~', "="))
}

/// The org and client id of a key [`client_key`] made.
pub fn key_client(key: &str) -> Result<(u32, String), SubjectError> {
    if key.contains('~') {
        return Err(SubjectError::Invalid("character"));
    }
    let (org, token) = key.split_once('.').ok_or(SubjectError::Invalid("no id"))?;
    if token.contains('.') {
        return Err(SubjectError::Invalid("more than one token"));
    }
    subject_topic("k", &format!("k.{org}.{}", token.replace('=', "~")))
}

/// The org and topic of a subject [`topic_subject`] made under `prefix`.
pub fn subject_topic(prefix: &str, subject: &str) -> Result<(u32, String), SubjectError> {
    let rest = subject
        .strip_prefix(prefix)
        .and_then(|rest| rest.strip_prefix('.'))
        .ok_or(SubjectError::Invalid("another prefix"))?;
    let (org, tokens) = rest
        .split_once('.')
        .ok_or(SubjectError::Invalid("no topic"))?;
    if org.is_empty()
        || !org.bytes().all(|b| b.is_ascii_digit())
        || (org.len() > 1 && org.starts_with('0'))
    {
        return Err(SubjectError::Invalid("org"));
    }
    let org: u32 = org.parse().map_err(|_| SubjectError::Invalid("org"))?;
    let mut topic = Vec::with_capacity(tokens.len());
    for (i, token) in tokens.split('.').enumerate() {
        if i > 0 {
            topic.push(b'/');
        }
        decode_token(token, &mut topic)?;
    }
    let topic = String::from_utf8(topic).map_err(|_| SubjectError::Invalid("not UTF-8"))?;
    Ok((org, topic))
}

fn decode_token(token: &str, out: &mut Vec<u8>) -> Result<(), SubjectError> {
    if token == "~" {
        return Ok(());
    }
    let bytes = token.as_bytes();
    if bytes.is_empty() {
        return Err(SubjectError::Invalid("empty token"));
    }
    let mut i = 0;
    while i < bytes.len() {
        let byte = bytes[i];
        if plain(byte) {
            out.push(byte);
            i += 1;
            continue;
        }
        if byte != b'~' {
            return Err(SubjectError::Invalid("character"));
        }
        let hex = bytes
            .get(i + 1..i + 3)
            .ok_or(SubjectError::Invalid("escape"))?;
        let value = hex_digit(hex[0])? << 4 | hex_digit(hex[1])?;
        if plain(value) {
            // The encoder never escapes a plain byte: one topic, one subject.
            return Err(SubjectError::Invalid("escape of a plain byte"));
        }
        out.push(value);
        i += 3;
    }
    Ok(())
}

fn hex_digit(byte: u8) -> Result<u8, SubjectError> {
    match byte {
        b'0'..=b'9' => Ok(byte - b'0'),
        b'a'..=b'f' => Ok(byte - b'a' + 10),
        _ => Err(SubjectError::Invalid("escape")),
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::topic::matches;

    /// NATS's own rule: `*` matches one token, `>` (last) one or more.
    fn nats_matches(pattern: &str, subject: &str) -> bool {
        let mut p = pattern.split('.');
        let mut s = subject.split('.');
        loop {
            match (p.next(), s.next()) {
                (Some(">"), Some(_)) => return true,
                (Some("*"), Some(_)) => {}
                (Some(a), Some(b)) if a == b => {}
                (None, None) => return true,
                _ => return false,
            }
        }
    }

    #[test]
    fn plain_levels_stay_readable_and_the_rest_is_escaped() {
        assert_eq!(
            topic_subject("rmq", 0, "fleet/site7/dev-107").unwrap(),
            "rmq.0.fleet.site7.dev-107"
        );
        assert_eq!(
            topic_subject("rmq", 12, "a.b/*/>/ /x~").unwrap(),
            "rmq.12.a~2eb.~2a.~3e.~20.x~7e"
        );
        assert_eq!(topic_subject("rmq", 0, "/a//").unwrap(), "rmq.0.~.a.~.~");
        assert_eq!(topic_subject("rmq", 0, "é").unwrap(), "rmq.0.~c3~a9");
        assert_eq!(filter_subjects("rmq", 0, "a/+/c").unwrap(), ["rmq.0.a.*.c"]);
        assert_eq!(
            filter_subjects("rmq", 0, "a/#").unwrap(),
            ["rmq.0.a", "rmq.0.a.>"]
        );
        assert_eq!(filter_subjects("rmq", 3, "#").unwrap(), ["rmq.3.>"]);
        assert_eq!(
            filter_subjects("rmq", 0, "+/#").unwrap(),
            ["rmq.0.*", "rmq.0.*.>"]
        );
        assert_eq!(
            subject_topic("rmq", "rmq.12.a~2eb.~.x").unwrap(),
            (12, "a.b//x".to_owned())
        );
    }

    #[test]
    fn retained_keys_round_trip_in_the_key_value_alphabet() {
        let key = retained_key(3, "fleet/a.b//é").unwrap();
        assert_eq!(key, "3.fleet.a=2eb.=.=c3=a9");
        assert!(key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-/_=.".contains(&b)));
        assert_eq!(key_topic(&key).unwrap(), (3, "fleet/a.b//é".to_owned()));
        for bad in ["", "x.a", "0.a~20", "0..a", "0.=zz"] {
            assert!(key_topic(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn client_keys_round_trip_as_one_token() {
        let key = client_key(7, "dev/1.a+#é").unwrap();
        assert_eq!(key, "7.dev=2f1=2ea=2b=23=c3=a9");
        assert_eq!(key_client(&key).unwrap(), (7, "dev/1.a+#é".to_owned()));
        assert_eq!(client_key(0, "").unwrap(), "0.=");
        assert_eq!(key_client("0.=").unwrap(), (0, String::new()));
        for bad in ["", "7", "7.a.b", "x.a", "7.a~2f", "07.a"] {
            assert!(key_client(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn queue_names_are_safe_and_distinct() {
        let a = queue_name("rmq", 0, "workers", "jobs/#");
        assert_eq!(
            a,
            queue_name("rmq", 0, "workers", "jobs/#"),
            "the same on every node"
        );
        assert!(a.starts_with("rmq_0_workers_"));
        for other in [
            queue_name("rmq", 1, "workers", "jobs/#"),
            queue_name("rmq", 0, "workers2", "jobs/#"),
            queue_name("rmq", 0, "workers", "jobs/+"),
        ] {
            assert_ne!(a, other);
        }
        let odd = queue_name("rmq", 0, "a b.c*>", "x");
        assert!(
            odd.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_-~".contains(&b)),
            "{odd}"
        );
    }

    #[test]
    fn hostile_subjects_are_refused() {
        for bad in [
            "other.0.a",
            "rmq.0",
            "rmq..a",
            "rmq.01.a",
            "rmq.x.a",
            "rmq.99999999999.a",
            "rmq.0.a..b",
            "rmq.0.a~",
            "rmq.0.a~4",
            "rmq.0.~41",
            "rmq.0.~zz",
            "rmq.0.~ff",
            "rmq.0.a b",
            "rmq.0.*",
        ] {
            assert!(subject_topic("rmq", bad).is_err(), "{bad}");
        }
        let long = "a/".repeat(3000);
        assert!(matches!(
            topic_subject("rmq", 0, &long),
            Err(SubjectError::TooLong(_))
        ));
        assert!(filter_subjects("rmq", 0, &format!("{long}#")).is_err());
    }

    fn level() -> impl Strategy<Value = String> {
        prop_oneof![
            "[a-z0-9_-]{0,6}",
            "[a-z.*> ~é/]{0,4}".prop_map(|s| s.replace('/', "")),
            Just(String::new()),
        ]
    }

    fn topic() -> impl Strategy<Value = String> {
        proptest::collection::vec(level(), 1..5).prop_map(|levels| levels.join("/"))
    }

    fn filter() -> impl Strategy<Value = String> {
        (
            proptest::collection::vec(prop_oneof![level(), Just("+".to_owned())], 1..5),
            any::<bool>(),
        )
            .prop_map(|(levels, hash)| {
                let mut filter = levels.join("/");
                if hash {
                    filter.push_str("/#");
                }
                filter
            })
    }

    proptest! {
        #[test]
        fn a_subject_decodes_to_its_topic(org in 0u32..100_000, topic in topic()) {
            let subject = topic_subject("rmq", org, &topic).unwrap();
            prop_assert!(!subject.contains(' '));
            prop_assert!(subject.split('.').all(|t| !t.is_empty() && t != "*" && t != ">"));
            prop_assert_eq!(subject_topic("rmq", &subject).unwrap(), (org, topic.clone()));
            let key = retained_key(org, &topic).unwrap();
            prop_assert_eq!(key_topic(&key).unwrap(), (org, topic));
        }

        /// Any client id has one key, in the key-value alphabet, that gives it back.
        #[test]
        fn a_client_key_decodes_to_its_id(org in 0u32..100_000, id in "\\PC{0,40}") {
            let key = client_key(org, &id).unwrap();
            prop_assert!(key.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_=.".contains(&b)));
            prop_assert_eq!(key.matches('.').count(), 1);
            prop_assert_eq!(key_client(&key).unwrap(), (org, id));
        }

        /// NATS delivers a message to a node exactly when one of its MQTT filters matches.
        #[test]
        fn nats_interest_is_mqtt_matching(org in 0u32..3, filter in filter(), topic in topic(), other in 0u32..3) {
            let subject = topic_subject("rmq", org, &topic).unwrap();
            let subjects = filter_subjects("rmq", other, &filter).unwrap();
            let nats = subjects.iter().any(|s| nats_matches(s, &subject));
            prop_assert_eq!(nats, org == other && matches(&filter, &topic), "{:?} {:?}", subjects, subject);
        }

        #[test]
        fn arbitrary_subjects_never_panic(subject in "rmq\\.[0-9a-z~.]{0,12}") {
            if let Ok((org, topic)) = subject_topic("rmq", &subject) {
                prop_assert_eq!(topic_subject("rmq", org, &topic).unwrap(), subject);
            }
        }
    }
}
