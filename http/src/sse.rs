//! Server-Sent Events (HTML Living Standard, section 9.2): encoding events onto a stream.
//!
//! The shard loop writes [`encode_stream_head`] once, then one [`encode_event`] per message and
//! an [`encode_comment`] heartbeat when idle, so proxies do not time the stream out. On
//! reconnect the browser sends the last id it saw; [`last_event_id`] reads it back.

use bytes::{BufMut, BytesMut};

use crate::request::RequestHead;

/// Longest `Last-Event-ID` value read; the broker's ids (`{32 hex digits}-{u64}`) take at most 53
/// bytes, the rest is slack.
pub const LAST_EVENT_ID_BYTES_MAX: usize = 64;

/// Appends the response head of an event stream: 200, `text/event-stream`, no caching.
///
/// The body is delimited by closing the connection (RFC 9112 6.3), so there is no
/// Content-Length and no chunking; `X-Accel-Buffering: no` stops nginx holding events back.
pub fn encode_stream_head(out: &mut BytesMut) {
    out.put_slice(
        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n\
X-Accel-Buffering: no\r\nConnection: close\r\n\r\n",
    );
}

/// Appends one event: optional `id:` and `event:` fields, then one `data:` line per line of
/// `data` (CRLF, CR and LF all end a line, as for the parser), then the blank line.
///
/// CR and LF are removed from `id` and `event`, and NUL from `id` (browsers ignore an id with
/// NUL), so neither field can end early or inject another field. An empty `data` yields an
/// event that browsers do not dispatch, but an `id` in it still updates the last event id.
pub fn encode_event(out: &mut BytesMut, id: Option<&str>, event: Option<&str>, data: &str) {
    out.reserve(data.len() + 64);
    if let Some(id) = id {
        put_field(out, "id", id, |c| c != '\r' && c != '\n' && c != '\0');
    }
    if let Some(event) = event {
        put_field(out, "event", event, |c| c != '\r' && c != '\n');
    }
    for line in lines(data) {
        out.put_slice(b"data: ");
        out.put_slice(line.as_bytes());
        out.put_u8(b'\n');
    }
    out.put_u8(b'\n');
}

/// Appends a comment (one `:` line per line of `text`) and a blank line; clients ignore it.
pub fn encode_comment(out: &mut BytesMut, text: &str) {
    for line in lines(text) {
        out.put_u8(b':');
        if !line.is_empty() {
            out.put_u8(b' ');
            out.put_slice(line.as_bytes());
        }
        out.put_u8(b'\n');
    }
    out.put_u8(b'\n');
}

/// Appends a `retry:` field telling the browser how many milliseconds to wait before reconnecting.
pub fn encode_retry(out: &mut BytesMut, ms: u32) {
    out.put_slice(b"retry: ");
    out.put_slice(ms.to_string().as_bytes());
    out.put_slice(b"\n\n");
}

/// The `Last-Event-ID` header, trimmed, when it is a plausible id: 1..=[`LAST_EVENT_ID_BYTES_MAX`]
/// visible ASCII characters. What the id means is the caller's business.
pub fn last_event_id(head: &RequestHead) -> Option<&str> {
    let value = head.header("last-event-id")?.trim();
    if value.is_empty()
        || value.len() > LAST_EVENT_ID_BYTES_MAX
        || !value.bytes().all(|byte| byte.is_ascii_graphic())
    {
        return None;
    }
    Some(value)
}

/// Appends `name: value\n`, keeping only the characters `keep` allows.
fn put_field(out: &mut BytesMut, name: &str, value: &str, keep: impl Fn(char) -> bool) {
    out.put_slice(name.as_bytes());
    out.put_slice(b": ");
    if value.chars().all(&keep) {
        out.put_slice(value.as_bytes());
    } else {
        let clean: String = value.chars().filter(|&c| keep(c)).collect();
        out.put_slice(clean.as_bytes());
    }
    out.put_u8(b'\n');
}

/// Splits text into lines at CRLF, CR or LF; a trailing line end yields a last empty line, so
/// the parser rebuilds the text exactly (with LF line ends).
fn lines(text: &str) -> impl Iterator<Item = &str> {
    let mut rest = Some(text);
    std::iter::from_fn(move || {
        let current = rest?;
        match current.find(['\r', '\n']) {
            Some(end) => {
                let skip = if current[end..].starts_with("\r\n") {
                    2
                } else {
                    1
                };
                rest = Some(&current[end + skip..]);
                Some(&current[..end])
            }
            None => {
                rest = None;
                Some(current)
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::{parse_head, Limits};
    use proptest::prelude::*;

    fn event(id: Option<&str>, name: Option<&str>, data: &str) -> String {
        let mut out = BytesMut::new();
        encode_event(&mut out, id, name, data);
        String::from_utf8(out.to_vec()).unwrap()
    }

    /// A minimal SSE parser per the HTML standard: returns (id, event, data) per dispatched event.
    fn parse(stream: &str) -> Vec<(String, String, String)> {
        let mut events = Vec::new();
        let (mut id, mut name, mut data) = (String::new(), String::new(), String::new());
        let normalized = stream.replace("\r\n", "\n").replace('\r', "\n");
        for line in normalized.split('\n') {
            if line.is_empty() {
                if !data.is_empty() {
                    data.pop();
                    events.push((
                        id.clone(),
                        std::mem::take(&mut name),
                        std::mem::take(&mut data),
                    ));
                }
                name.clear();
                continue;
            }
            if line.starts_with(':') {
                continue;
            }
            let (field, value) = line.split_once(':').unwrap_or((line, ""));
            let value = value.strip_prefix(' ').unwrap_or(value);
            match field {
                "id" => id = value.to_string(),
                "event" => name = value.to_string(),
                "data" => {
                    data.push_str(value);
                    data.push('\n');
                }
                _ => {}
            }
        }
        events
    }

    #[test]
    fn single_and_multi_line_events() {
        assert_eq!(event(None, None, "hello"), "data: hello\n\n");
        assert_eq!(
            event(Some("42"), Some("message"), "{\"a\":1}"),
            "id: 42\nevent: message\ndata: {\"a\":1}\n\n"
        );
        assert_eq!(
            event(None, None, "a\nb\r\nc\rd"),
            "data: a\ndata: b\ndata: c\ndata: d\n\n"
        );
        assert_eq!(event(None, None, "a\n"), "data: a\ndata: \n\n");
        assert_eq!(event(None, None, ""), "data: \n\n");
        assert_eq!(event(None, None, " lead"), "data:  lead\n\n");
        assert_eq!(event(None, None, "ünï€ode 🚀"), "data: ünï€ode 🚀\n\n");
    }

    #[test]
    fn id_and_event_cannot_inject_fields() {
        assert_eq!(
            event(Some("1\r\ndata: x"), Some("a\nid: 9"), "d"),
            "id: 1data: x\nevent: aid: 9\ndata: d\n\n"
        );
        assert_eq!(event(Some("7\0"), None, "d"), "id: 7\ndata: d\n\n");
    }

    #[test]
    fn comments_and_retry() {
        let mut out = BytesMut::new();
        encode_comment(&mut out, "heartbeat");
        encode_comment(&mut out, "");
        encode_comment(&mut out, "two\nlines");
        encode_retry(&mut out, 3000);
        assert_eq!(
            &out[..],
            b": heartbeat\n\n:\n\n: two\n: lines\n\nretry: 3000\n\n"
        );
        assert!(parse(std::str::from_utf8(&out).unwrap()).is_empty());
    }

    #[test]
    fn stream_head() {
        let mut out = BytesMut::new();
        encode_stream_head(&mut out);
        let text = std::str::from_utf8(&out).unwrap();
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"));
        assert!(text.contains("Content-Type: text/event-stream\r\n"));
        assert!(!text.contains("Content-Length"));
        assert!(text.ends_with("\r\n\r\n"));
    }

    #[test]
    fn last_event_id_is_read_and_bounded() {
        let with = |value: &str| {
            let raw = format!("GET /v1/sse HTTP/1.1\r\nLast-Event-ID: {value}\r\n\r\n");
            let head = parse_head(raw.as_bytes(), &Limits::default())
                .unwrap()
                .unwrap()
                .0;
            last_event_id(&head).map(str::to_owned)
        };
        assert_eq!(with("42").as_deref(), Some("42"));
        assert_eq!(with(" 7 ").as_deref(), Some("7"));
        let broker_id = format!("{}-{}", "f".repeat(32), u64::MAX);
        assert_eq!(with(&broker_id).as_deref(), Some(broker_id.as_str()));
        assert_eq!(with("-1").as_deref(), Some("-1"));
        assert_eq!(with("a b").as_deref(), None);
        assert_eq!(with("").as_deref(), None);
        assert_eq!(with(&"0".repeat(65)).as_deref(), None);
        let head = parse_head(b"GET / HTTP/1.1\r\n\r\n", &Limits::default())
            .unwrap()
            .unwrap()
            .0;
        assert_eq!(last_event_id(&head), None);
    }

    proptest! {
        #[test]
        fn events_round_trip_through_a_parser(
            id in "[^\r\n\0]{0,10}",
            name in "[a-z]{1,8}",
            data in "\\PC{1,60}|[a-z\r\n]{1,30}",
        ) {
            let mut out = BytesMut::new();
            encode_event(&mut out, Some(&id), Some(&name), &data);
            let parsed = parse(std::str::from_utf8(&out).unwrap());
            let expected = data.replace("\r\n", "\n").replace('\r', "\n");
            prop_assert_eq!(parsed, vec![(id, name, expected)]);
        }
    }
}
