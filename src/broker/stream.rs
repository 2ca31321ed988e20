//! The streams of the HTTP front door: `GET /v1/mqtt/stream` (WebSocket, one JSON text frame per
//! message) and `GET /v1/stream` (Server-Sent Events, the same JSON as `data:`).
//!
//! Both authenticate with an API key (`Authorization: Bearer`, or `?token=` for browsers, which
//! cannot set headers on a WebSocket or EventSource), count against the org's rate limit on
//! open, and filter with `?topic=` (MQTT filter, default `#`), `?device=` (publisher's client
//! id) and `?ns=` (publisher's namespace). The subscriber itself lives on the shard
//! (`shard/streams.rs`): a bounded ring, oldest dropped when the client falls behind.

use std::cell::{Cell, RefCell};
use std::future::poll_fn;
use std::rc::Rc;
use std::task::Poll;
use std::time::{Duration, Instant};

use base64::Engine;
use bytes::BytesMut;
use ringmq_http::ws::{self, FrameDecoder, MessageAssembler, WsLimits};
use ringmq_http::{sse, RequestHead, Response};
use ringmq_io::{monoio, ConnReader, ConnWriter};

use super::http::{bearer, json_error as error, HttpContext};
use super::shard::{StreamFilter, StreamItem, StreamState};
use crate::control::snapshot::KeyKind;
use crate::ratelimit::monotonic_nanos;

/// A WebSocket ping goes out after this much silence, so proxies keep the connection.
const PING_EVERY: Duration = Duration::from_secs(30);

/// An SSE heartbeat comment goes out after this much silence.
const HEARTBEAT_EVERY: Duration = Duration::from_secs(15);

/// How often a waiting stream looks at the shard's shutdown flag.
const SHUTDOWN_CHECK: Duration = Duration::from_millis(500);

/// Largest message a stream client may send (pings, pongs, close; nothing else is expected).
const CLIENT_MESSAGE_BYTES_MAX: usize = 4096;

/// Entries encoded per write at most, so one busy stream does not hold the shard for long.
const FRAMES_PER_WRITE: usize = 256;

/// Which stream a request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `GET /v1/mqtt/stream`.
    WebSocket,
    /// `GET /v1/stream`.
    Sse,
}

/// The stream route for a path, if it is one.
pub fn kind_of(path: &str) -> Option<Kind> {
    match path {
        "/v1/mqtt/stream" => Some(Kind::WebSocket),
        "/v1/stream" => Some(Kind::Sse),
        _ => None,
    }
}

/// RFC 3986 percent-decoding of one query value. `+` stays `+`: it is the MQTT wildcard far
/// more often than a form-encoded space here.
fn percent_decode(value: &str) -> Option<String> {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let text = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(text, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The stream's query parameters.
#[derive(Debug, Default)]
struct Query {
    token: Option<String>,
    topic: Option<String>,
    device: Option<String>,
    ns: Option<String>,
}

fn parse_query(query: Option<&str>) -> Result<Query, String> {
    let mut parsed = Query::default();
    for pair in query
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
    {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let value =
            percent_decode(value).ok_or_else(|| format!("bad percent-encoding in {name}"))?;
        let slot = match name {
            "token" => &mut parsed.token,
            "topic" => &mut parsed.topic,
            "device" => &mut parsed.device,
            "ns" => &mut parsed.ns,
            other => return Err(format!("unknown query parameter {other}")),
        };
        *slot = Some(value);
    }
    Ok(parsed)
}

/// The query string with the `token` value replaced by `***`, for logs.
pub fn redact_query(query: &str) -> String {
    query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some(("token", _)) => "token=***".to_owned(),
            _ => pair.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// Everything checked before the stream starts: who, which org, which filter.
struct Admission {
    filter: StreamFilter,
    org_id: String,
}

fn admit(head: &RequestHead, context: &HttpContext) -> Result<Admission, Response> {
    let query = parse_query(head.query.as_deref()).map_err(|e| error(400, "bad_request", &e))?;
    let Some(secret) = bearer(head).or(query.token) else {
        return Err(error(
            401,
            "unauthorized",
            "an API key is required: Authorization: Bearer, or ?token= in browsers",
        ));
    };
    let shard = context.shard.borrow();
    let Some(key) = shard.snapshot.key(&secret).cloned() else {
        return Err(error(401, "unauthorized", "unknown or revoked API key"));
    };
    let Some(org) = shard.snapshot.org(key.org) else {
        return Err(error(401, "unauthorized", "the key's org no longer exists"));
    };
    let topic = query.topic.unwrap_or_else(|| "#".to_owned());
    if ringmq_router::validate_filter(&topic, shard.rules.topic_levels_max).is_err()
        || topic.starts_with(ringmq_router::SHARE_PREFIX)
    {
        return Err(error(
            400,
            "bad_request",
            "topic must be a valid MQTT topic filter",
        ));
    }
    let allowed = match key.kind {
        KeyKind::Secret => true,
        KeyKind::Public | KeyKind::Restricted => key.acl.may_subscribe(&topic, "", ""),
    };
    if !allowed {
        return Err(error(
            403,
            "forbidden",
            &format!("this key may not subscribe to {topic}"),
        ));
    }
    let settings = org.settings;
    let org_id = org.id.clone();
    drop(shard);
    let rate = u32::try_from(settings.rate_limit_per_sec).unwrap_or(u32::MAX);
    let burst = u32::try_from(settings.rate_burst).unwrap_or(u32::MAX);
    let front = &context.shared.control.front;
    if let Ok(bucket) = front.rate_limits.get_or_insert(key.org, rate, burst) {
        let decision = bucket.try_take(1, monotonic_nanos());
        if !decision.allowed {
            context.shared.stats[usize::from(context.shard.borrow().id)]
                .rate_limited
                .inc();
            return Err(
                error(429, "rate_limited", "rate limit exceeded for this org")
                    .with_header("Retry-After", decision.retry_after_secs.to_string()),
            );
        }
    }
    Ok(Admission {
        filter: StreamFilter {
            org: key.org,
            topic,
            device: query.device,
            namespace: query.ns,
        },
        org_id,
    })
}

/// One message as a stream frame (JSON).
fn frame_json(item: &StreamItem, org_id: &str) -> String {
    let message = &item.message;
    let (payload, is_base64) = match std::str::from_utf8(&message.payload) {
        Ok(text) => (text.to_owned(), false),
        Err(_) => (
            base64::engine::general_purpose::STANDARD.encode(&message.payload),
            true,
        ),
    };
    let value = serde_json::json!({
        "topic": ringmq_router::strip_scope(&message.topic).1,
        "payload": payload,
        "is_base64": is_base64,
        "ts": item.received_ms / 1000,
        "ts_ms": item.received_ms,
        "retained": item.retained,
        "qos": message.qos as u8,
        "org_id": org_id,
    });
    value.to_string()
}

/// Takes over an HTTP connection for a stream; returns when the stream ends.
pub async fn serve(
    reader: ConnReader,
    mut stream: ConnWriter,
    head: RequestHead,
    rest: BytesMut,
    context: Rc<HttpContext>,
    kind: Kind,
) {
    let upgrade = if kind == Kind::WebSocket {
        match ws::check_upgrade(&head) {
            Ok(upgrade) => Some(upgrade),
            Err(problem) => {
                let mut out = BytesMut::new();
                problem.response().encode(false, &mut out);
                let _ = stream.write_all(out).await;
                return;
            }
        }
    } else {
        None
    };
    let admission = match admit(&head, &context) {
        Ok(admission) => admission,
        Err(response) => {
            let mut out = BytesMut::new();
            response.encode(false, &mut out);
            let _ = stream.write_all(out).await;
            return;
        }
    };
    let capacity = context.shared.config.limits.stream_ring_frames;
    let mut out = BytesMut::with_capacity(4096);
    let (state, gap) = match kind {
        Kind::WebSocket => {
            if let Some(upgrade) = &upgrade {
                upgrade.encode_response(None, &mut out);
            }
            let state = context
                .shard
                .borrow_mut()
                .open_stream(&admission.filter, capacity);
            (state, false)
        }
        Kind::Sse => {
            // The sans-IO stream head plus CORS, so an EventSource on another origin may read.
            out.extend_from_slice(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n\
X-Accel-Buffering: no\r\nAccess-Control-Allow-Origin: *\r\nConnection: close\r\n\r\n",
            );
            sse::encode_retry(&mut out, 2000);
            resume_or_open(&head, &context, &admission.filter, capacity)
        }
    };
    if gap {
        sse::encode_event(
            &mut out,
            None,
            Some("gap"),
            r#"{"detail":"some messages since Last-Event-ID are no longer available"}"#,
        );
    }
    let writer = stream;
    let closed = Rc::new(Cell::new(false));
    let control_out = Rc::new(RefCell::new(BytesMut::new()));
    monoio::spawn(read_client(
        reader,
        rest,
        kind,
        Rc::clone(&state),
        Rc::clone(&closed),
        Rc::clone(&control_out),
    ));
    let keep = kind == Kind::Sse;
    let id = state.id;
    let query = redact_query(head.query.as_deref().unwrap_or_default());
    tracing::info!(path = %head.path, %query, stream = id, org = %admission.org_id, "stream opened");
    write_loop(
        writer,
        out,
        &context,
        &state,
        &closed,
        &control_out,
        kind,
        &admission.org_id,
    )
    .await;
    tracing::info!(stream = id, dropped = state.dropped.get(), "stream closed");
    context.shard.borrow_mut().close_stream(id, keep);
}

/// An SSE client sending `Last-Event-ID` from a stream still kept on this shard gets what is
/// left of it; otherwise a new stream, with a gap event when an id was sent.
fn resume_or_open(
    head: &RequestHead,
    context: &HttpContext,
    filter: &StreamFilter,
    capacity: usize,
) -> (Rc<StreamState>, bool) {
    let mut shard = context.shard.borrow_mut();
    if let Some(last) = sse::parse_last_event_id(head) {
        let (id, seq) = ((last >> 32) as u32, last & u64::from(u32::MAX));
        if let Some(state) = shard.reattach_stream(id) {
            let (gap, _) = state.since(seq);
            state.forget_through(seq);
            return (state, gap);
        }
        return (shard.open_stream(filter, capacity), true);
    }
    (shard.open_stream(filter, capacity), false)
}

#[allow(clippy::too_many_arguments)]
async fn write_loop(
    mut writer: ConnWriter,
    mut out: BytesMut,
    context: &HttpContext,
    state: &Rc<StreamState>,
    closed: &Rc<Cell<bool>>,
    control_out: &Rc<RefCell<BytesMut>>,
    kind: Kind,
    org_id: &str,
) {
    let mut items = Vec::with_capacity(FRAMES_PER_WRITE);
    let mut last_write = Instant::now();
    loop {
        {
            let pending = control_out.borrow_mut().split();
            out.unsplit(pending);
        }
        if closed.get() {
            if !out.is_empty() {
                let _ = writer.write_all(out.split()).await;
            }
            return;
        }
        if context.shard.borrow().shutting_down {
            if kind == Kind::WebSocket {
                ws::encode_close(ws::CLOSE_GOING_AWAY, "server shutting down", &mut out);
            }
            let _ = writer.write_all(out.split()).await;
            return;
        }
        items.clear();
        state.drain(&mut items);
        for item in &items {
            let json = frame_json(item, org_id);
            match kind {
                Kind::WebSocket => ws::encode_text(&json, &mut out),
                Kind::Sse => {
                    let id = (u64::from(state.id) << 32) | (item.seq & u64::from(u32::MAX));
                    sse::encode_event(&mut out, Some(&id.to_string()), None, &json);
                }
            }
        }
        if out.is_empty() && last_write.elapsed() >= keepalive_every(kind) {
            match kind {
                Kind::WebSocket => ws::encode_ping(b"", &mut out),
                Kind::Sse => sse::encode_comment(&mut out, "heartbeat"),
            }
        }
        if !out.is_empty() {
            let (result, _) = writer.write_all(out.split()).await;
            if result.is_err() {
                return;
            }
            last_write = Instant::now();
            continue;
        }
        let wait = poll_fn(|cx| {
            if state.notify.take() {
                return Poll::Ready(());
            }
            state.notify.register(cx.waker());
            Poll::Pending
        });
        let _ = monoio::time::timeout(SHUTDOWN_CHECK, wait).await;
    }
}

fn keepalive_every(kind: Kind) -> Duration {
    match kind {
        Kind::WebSocket => PING_EVERY,
        Kind::Sse => HEARTBEAT_EVERY,
    }
}

/// Reads what the client sends: WebSocket control frames (ping → pong, close → close), or for
/// SSE only the end of the connection.
async fn read_client(
    mut reader: ConnReader,
    mut buf: BytesMut,
    kind: Kind,
    state: Rc<StreamState>,
    closed: Rc<Cell<bool>>,
    control_out: Rc<RefCell<BytesMut>>,
) {
    let limits = WsLimits {
        frame_payload_max: CLIENT_MESSAGE_BYTES_MAX,
        message_bytes_max: CLIENT_MESSAGE_BYTES_MAX,
    };
    let mut decoder = FrameDecoder::new(limits);
    let mut assembler = MessageAssembler::new(CLIENT_MESSAGE_BYTES_MAX);
    let finish = |code: Option<(u16, &str)>| {
        if let Some((code, reason)) = code {
            ws::encode_close(code, reason, &mut control_out.borrow_mut());
        }
        closed.set(true);
        state.notify.notify();
    };
    loop {
        if kind == Kind::WebSocket {
            loop {
                match decoder.decode(&mut buf) {
                    Ok(None) => break,
                    Ok(Some(frame)) => match assembler.push(frame) {
                        Ok(None) => {}
                        Ok(Some(ws::Message::Ping(payload))) => {
                            ws::encode_pong(&payload, &mut control_out.borrow_mut());
                            state.notify.notify();
                        }
                        Ok(Some(ws::Message::Pong(_))) => {}
                        Ok(Some(ws::Message::Close { .. })) => {
                            finish(Some((ws::CLOSE_NORMAL, "")));
                            return;
                        }
                        Ok(Some(ws::Message::Text(_) | ws::Message::Binary(_))) => {
                            // The stream is one-way; a client that talks is ignored.
                        }
                        Err(problem) => {
                            finish(Some((problem.close_code(), "protocol error")));
                            return;
                        }
                    },
                    Err(problem) => {
                        finish(Some((problem.close_code(), "protocol error")));
                        return;
                    }
                }
            }
        } else {
            // An SSE client sends nothing after its request: keep no bytes.
            buf.clear();
        }
        if buf.capacity() - buf.len() < 512 {
            buf.reserve(1024);
        }
        let (result, back) = reader.read_append(buf).await;
        buf = back;
        match result {
            Ok(0) | Err(_) => {
                finish(None);
                return;
            }
            Ok(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_are_percent_decoded_and_plus_stays_a_wildcard() {
        let q = parse_query(Some("topic=devices%2F+%2Ftemp&token=pk_x&device=d1")).unwrap();
        assert_eq!(q.topic.as_deref(), Some("devices/+/temp"));
        assert_eq!(q.token.as_deref(), Some("pk_x"));
        assert_eq!(q.device.as_deref(), Some("d1"));
        assert!(parse_query(Some("colour=red")).is_err());
        assert!(parse_query(Some("topic=%zz")).is_err());
        assert!(parse_query(Some("topic=%ff")).is_err(), "not UTF-8");
    }

    #[test]
    fn tokens_never_reach_the_logs() {
        assert_eq!(
            redact_query("topic=a&token=pk_secret&ns=x"),
            "topic=a&token=***&ns=x"
        );
        assert_eq!(redact_query("token=sk_1"), "token=***");
    }
}
