//! The streams of the HTTP front door: `GET /v1/mqtt/stream` (WebSocket, one JSON text frame per
//! message) and `GET /v1/stream` (Server-Sent Events, the same JSON as `data:`).
//!
//! Both authenticate with an API key (`Authorization: Bearer`, or `?token=` for browsers, which
//! cannot set headers on a WebSocket or EventSource), count against the org's rate limit on
//! open, and filter with `?topic=` (MQTT filter, default `#`), `?device=` (publisher's client
//! id) and `?ns=` (publisher's namespace). The subscriber itself lives on the shard
//! (`shard/streams.rs`): a bounded ring, oldest dropped when the client falls behind.
//!
//! Each connection runs two tasks: `write_loop` drains the ring and writes frames, and
//! `read_client` reads what the client sends (WebSocket control frames; nothing for SSE).
//! They share a `Link`: the pong and close the reader owes the peer (one of each at most, so
//! a client that pings without reading holds no memory), and the flags that end the other task,
//! so the socket closes as soon as either side is done. When the shard ends a stream (its key
//! was revoked, its org deleted, its rules changed), the writer tells the client (WebSocket
//! close 1008, SSE `event: revoked`) and both tasks end.

use std::cell::{Cell, RefCell};
use std::future::{poll_fn, Future};
use std::pin::{pin, Pin};
use std::rc::Rc;
use std::task::Poll;
use std::time::{Duration, Instant};

use base64::Engine;
use bytes::{Bytes, BytesMut};
use ringmq_http::ws::{self, FrameDecoder, MessageAssembler, WsLimits};
use ringmq_http::{sse, RequestHead, Response};
use ringmq_io::{monoio, ConnReader, ConnWriter};

use super::local_notify::LocalNotify;
use super::shard::{
    key_may_stream, EventId, StreamEnd, StreamFilter, StreamItem, StreamOwner, StreamRefused,
};
use super::stream_ring::StreamRing;
use super::web::{bearer, json_error as error, HttpContext};
use crate::control::secrets::key_hash;
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

/// How long the last write (the close frame or `revoked` event, after a shutdown or a
/// revocation) may take; a client that does not read by then just loses the connection.
const LAST_WRITE_WAIT: Duration = Duration::from_secs(1);

/// Pings a client may send while one write of ours is stuck before it counts as a ping flood.
/// Pongs are coalesced (only the latest is owed, RFC 6455 section 5.5.3), so a flood costs no
/// memory; it is closed because a client that pings and never reads is not a stream reader.
/// Keep-alive pings (one every few seconds) never come near it.
const PINGS_WHILE_STUCK_MAX: u32 = 64;

/// How long a write must have been stuck before pings count towards a flood: a client that
/// reads, however fast it pings, lets every write finish well within it.
const STUCK_WRITE_FOR: Duration = Duration::from_secs(1);

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
        let value = ringmq_http::percent::decode(value)
            .ok_or_else(|| format!("bad percent-encoding in {name}"))?;
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
    owner: StreamOwner,
    org_id: String,
}

async fn admit(head: &RequestHead, context: &HttpContext) -> Result<Admission, Response> {
    let query = parse_query(head.query.as_deref()).map_err(|e| error(400, "bad_request", &e))?;
    let Some(secret) = bearer(head).or(query.token) else {
        return Err(error(
            401,
            "unauthorized",
            "an API key is required: Authorization: Bearer, or ?token= in browsers",
        ));
    };
    // A key revoked a moment ago must not open a stream on a shard that has not looked yet.
    let _ = context
        .shard
        .call(|s| s.refresh_snapshot(Instant::now()))
        .await;
    let snapshot = context.shard.snapshot();
    let Some(key) = snapshot.key(&secret).cloned() else {
        return Err(error(401, "unauthorized", "unknown or revoked API key"));
    };
    let Some(org) = snapshot.org(key.org) else {
        return Err(error(401, "unauthorized", "the key's org no longer exists"));
    };
    let topic = query.topic.unwrap_or_else(|| "#".to_owned());
    if ringmq_router::validate_filter(&topic, context.shard.rules.topic_levels_max).is_err()
        || topic.starts_with(ringmq_router::SHARE_PREFIX)
    {
        return Err(error(
            400,
            "bad_request",
            "topic must be a valid MQTT topic filter",
        ));
    }
    if !key_may_stream(&key, &topic) {
        return Err(error(
            403,
            "forbidden",
            &format!("this key may not subscribe to {topic}"),
        ));
    }
    let settings = org.settings;
    let org_id = org.id.clone();
    drop(snapshot);
    let rate = u32::try_from(settings.rate_limit_per_sec).unwrap_or(u32::MAX);
    let burst = u32::try_from(settings.rate_burst).unwrap_or(u32::MAX);
    let front = &context.shared.control.front;
    if let Some(counters) = context.shard.org_counters(front, key.org, rate, burst) {
        let decision = counters.bucket.try_take(1, monotonic_nanos());
        if !decision.allowed {
            context.shared.stats[usize::from(context.shard.id)]
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
        owner: StreamOwner {
            org: key.org,
            key_id: key.id.clone(),
            key_hash: key_hash(&secret),
        },
        org_id,
    })
}

/// The answer to a stream the shard would not open.
fn refusal(refused: StreamRefused, org_id: &str) -> Response {
    match refused {
        StreamRefused::OrgStreamsFull { max } => error(
            429,
            "limit_exceeded",
            &format!(
                "org {org_id} already has {max} streams open on this shard \
(org_limits.streams_max); close one first"
            ),
        ),
        StreamRefused::NoRandom | StreamRefused::ShuttingDown => {
            error(503, "unavailable", &refused.to_string())
        }
    }
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

/// What the reading and the writing task of one stream connection share.
#[derive(Debug, Default)]
struct Link {
    /// Payload of the latest ping not yet answered: only the latest pong is owed.
    pong: RefCell<Option<Bytes>>,
    /// The close frame owed to the client (one at most).
    close: RefCell<Option<BytesMut>>,
    /// The client is done (end of connection, close frame, protocol error): send what is owed
    /// and end.
    client_done: Cell<bool>,
    /// The client floods us without reading: end now, mid-write if need be.
    abandon: Cell<bool>,
    /// The writer ended: the reader stops too, so the socket closes.
    writer_done: Cell<bool>,
    /// Wakes the reader when the writer ends.
    reader_wake: LocalNotify,
    /// Since when the writer's current write has been waiting for the client, if it is.
    writing_since: Cell<Option<Instant>>,
    /// Pings received since the writer last finished a write.
    pings_since_write: Cell<u32>,
}

impl Link {
    /// The client is done; `close` is the close frame to send it first.
    fn client_done(&self, close: Option<(u16, &str)>, state: &StreamRing) {
        if let Some((code, reason)) = close {
            let mut owed = self.close.borrow_mut();
            if owed.is_none() {
                let mut frame = BytesMut::new();
                ws::encode_close(code, reason, &mut frame);
                *owed = Some(frame);
            }
        }
        self.client_done.set(true);
        state.notify.notify();
    }

    /// A ping arrived; true when it makes the client a flooder (it keeps pinging while a write
    /// of ours has been stuck for a while, i.e. it does not read).
    fn ping(&self, payload: Bytes, now: Instant) -> bool {
        *self.pong.borrow_mut() = Some(payload);
        let pings = self.pings_since_write.get().saturating_add(1);
        self.pings_since_write.set(pings);
        self.flooded(now)
    }

    /// Too many pings while a write of ours has been stuck for a while.
    fn flooded(&self, now: Instant) -> bool {
        self.pings_since_write.get() > PINGS_WHILE_STUCK_MAX
            && self
                .writing_since
                .get()
                .is_some_and(|since| now.duration_since(since) >= STUCK_WRITE_FOR)
    }

    /// Moves the owed control frames into `out`, close last.
    fn take_owed(&self, out: &mut BytesMut) {
        if let Some(payload) = self.pong.borrow_mut().take() {
            ws::encode_pong(&payload, out);
        }
        if let Some(close) = self.close.borrow_mut().take() {
            out.unsplit(close);
        }
    }
}

/// Awaits `io` unless `stop` turns true first (looked at whenever `wake` fires); `None` when it
/// did. `io` stays usable afterwards (e.g. to finish a write after all).
async fn unless<F: Future>(
    mut io: Pin<&mut F>,
    wake: &LocalNotify,
    stop: impl Fn() -> bool,
) -> Option<F::Output> {
    poll_fn(|cx| {
        if let Poll::Ready(output) = io.as_mut().poll(cx) {
            return Poll::Ready(Some(output));
        }
        // Consumed so the next notification wakes us again (one pending flag swallows the
        // rest); whoever else waits on it re-checks its own state after we return.
        wake.take();
        if stop() {
            return Poll::Ready(None);
        }
        wake.register(cx.waker());
        Poll::Pending
    })
    .await
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
    let admission = match admit(&head, &context).await {
        Ok(admission) => admission,
        Err(response) => {
            let mut out = BytesMut::new();
            response.encode(false, &mut out);
            let _ = stream.write_all(out).await;
            return;
        }
    };
    let capacity = context.shared.config.limits.stream_ring_frames;
    let streams_max = context.shared.config.org_limits.streams_max;
    let opened = match kind {
        Kind::WebSocket => {
            let (filter, owner) = (admission.filter.clone(), admission.owner.clone());
            context
                .shard
                .call(move |s| s.open_stream(&filter, &owner, capacity, streams_max))
                .await
                .unwrap_or(Err(StreamRefused::ShuttingDown))
                .map(|state| (state, false))
        }
        Kind::Sse => resume_or_open(&head, &context, &admission, capacity, streams_max).await,
    };
    let (state, gap) = match opened {
        Ok(opened) => opened,
        Err(refused) => {
            tracing::info!(org = %admission.org_id, %refused, "stream refused");
            let mut out = BytesMut::new();
            refusal(refused, &admission.org_id).encode(false, &mut out);
            let _ = stream.write_all(out).await;
            return;
        }
    };
    let mut out = BytesMut::with_capacity(4096);
    match &upgrade {
        Some(upgrade) => upgrade.encode_response(None, &mut out),
        None => {
            // The sans-IO stream head plus CORS, so an EventSource on another origin may read.
            out.extend_from_slice(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n\
X-Accel-Buffering: no\r\nAccess-Control-Allow-Origin: *\r\nConnection: close\r\n\r\n",
            );
            sse::encode_retry(&mut out, 2000);
        }
    }
    if gap {
        sse::encode_event(
            &mut out,
            None,
            Some("gap"),
            r#"{"detail":"some messages since Last-Event-ID are no longer available"}"#,
        );
    }
    let link = Rc::new(Link::default());
    monoio::spawn(read_client(
        reader,
        rest,
        kind,
        Rc::clone(&state),
        Rc::clone(&link),
    ));
    let keep = kind == Kind::Sse;
    let id = state.id;
    let query = redact_query(head.query.as_deref().unwrap_or_default());
    tracing::info!(path = %head.path, %query, stream = id, org = %admission.org_id, "stream opened");
    write_loop(
        stream,
        out,
        &context,
        &state,
        &link,
        kind,
        &admission.org_id,
    )
    .await;
    link.writer_done.set(true);
    link.reader_wake.notify();
    tracing::info!(stream = id, dropped = state.dropped.get(), "stream closed");
    // A flooder's stream is not kept for a resume; an ended one is already gone from the shard.
    let keep = keep && !link.abandon.get();
    context.shard.post(move |s| s.close_stream(id, keep));
}

/// An SSE client sending `Last-Event-ID` of a stream still kept on this shard, with the same
/// key, org and filter, gets what is left of it; anyone else a new stream, with a gap event
/// when a `Last-Event-ID` was sent (whatever its value).
async fn resume_or_open(
    head: &RequestHead,
    context: &HttpContext,
    admission: &Admission,
    capacity: usize,
    streams_max: u64,
) -> Result<(Rc<StreamRing>, bool), StreamRefused> {
    let asked = head.header("last-event-id").is_some();
    let last = sse::last_event_id(head).and_then(EventId::parse);
    let (filter, owner) = (admission.filter.clone(), admission.owner.clone());
    let opened = context
        .shard
        .call(move |shard| {
            if let Some(last) = last {
                if let Some(state) = shard.reattach_stream(last.token, &filter, &owner) {
                    state.forget_through(last.seq);
                    let (gap, _) = state.since(last.seq);
                    return Ok((state, gap));
                }
            }
            let state = shard.open_stream(&filter, &owner, capacity, streams_max)?;
            Ok((state, asked))
        })
        .await;
    opened.unwrap_or(Err(StreamRefused::ShuttingDown))
}

/// Writes frames until the client or the shard ends the stream.
async fn write_loop(
    mut writer: ConnWriter,
    mut out: BytesMut,
    context: &HttpContext,
    state: &Rc<StreamRing>,
    link: &Link,
    kind: Kind,
    org_id: &str,
) {
    let mut items = Vec::with_capacity(FRAMES_PER_WRITE);
    let mut last_write = Instant::now();
    loop {
        if kind == Kind::WebSocket {
            link.take_owed(&mut out);
        }
        if link.abandon.get() {
            return;
        }
        if link.client_done.get() {
            last_write_of(&mut writer, out).await;
            return;
        }
        if let Some(why) = state.ended() {
            encode_end(why, kind, &mut out);
            last_write_of(&mut writer, out).await;
            return;
        }
        if context.shard.shutting_down.get() {
            if kind == Kind::WebSocket {
                ws::encode_close(ws::CLOSE_GOING_AWAY, "server shutting down", &mut out);
            }
            last_write_of(&mut writer, out).await;
            return;
        }
        items.clear();
        state.drain(&mut items);
        for item in &items {
            let json = frame_json(item, org_id);
            match kind {
                Kind::WebSocket => ws::encode_text(&json, &mut out),
                Kind::Sse => {
                    let id = EventId {
                        token: state.token,
                        seq: item.seq,
                    };
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
            link.writing_since.set(Some(Instant::now()));
            let mut write = pin!(writer.write_all(out.split()));
            let stop = || {
                link.abandon.get()
                    || link.client_done.get()
                    || state.ended().is_some()
                    || context.shard.shutting_down.get()
            };
            let outcome = loop {
                // Woken at least every STUCK_WRITE_FOR: a flood may stop arriving once TCP
                // stalls both ways, and must still be noticed.
                let waited = unless(write.as_mut(), &state.notify, stop);
                match monoio::time::timeout(STUCK_WRITE_FOR, waited).await {
                    Ok(outcome) => break outcome,
                    Err(_) if link.flooded(Instant::now()) => {
                        tracing::info!(stream = state.id, "stream client pings without reading");
                        link.abandon.set(true);
                    }
                    Err(_) => {}
                }
            };
            let result = match outcome {
                Some((result, _)) => result,
                // A flooder is cut off mid-write; otherwise the write gets a moment to finish,
                // so the close frame or `revoked` event can follow it.
                None if link.abandon.get() => return,
                None => match monoio::time::timeout(LAST_WRITE_WAIT, write).await {
                    Ok((result, _)) => result,
                    Err(_) => return,
                },
            };
            if result.is_err() {
                return;
            }
            link.writing_since.set(None);
            link.pings_since_write.set(0);
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

/// The frame or event that tells the client the shard ended its stream.
fn encode_end(why: StreamEnd, kind: Kind, out: &mut BytesMut) {
    match kind {
        Kind::WebSocket => ws::encode_close(ws::CLOSE_POLICY_VIOLATION, why.detail(), out),
        Kind::Sse => {
            let data = serde_json::json!({"error": why.code(), "detail": why.detail()});
            sse::encode_event(out, None, Some("revoked"), &data.to_string());
        }
    }
}

/// Writes what is left, for at most [`LAST_WRITE_WAIT`].
async fn last_write_of(writer: &mut ConnWriter, out: BytesMut) {
    if !out.is_empty() {
        let _ = monoio::time::timeout(LAST_WRITE_WAIT, writer.write_all(out)).await;
    }
}

fn keepalive_every(kind: Kind) -> Duration {
    match kind {
        Kind::WebSocket => PING_EVERY,
        Kind::Sse => HEARTBEAT_EVERY,
    }
}

/// Reads what the client sends: WebSocket control frames (ping → pong, close → close), or for
/// SSE only the end of the connection. Ends with the writer, so the socket closes.
async fn read_client(
    mut reader: ConnReader,
    mut buf: BytesMut,
    kind: Kind,
    state: Rc<StreamRing>,
    link: Rc<Link>,
) {
    let limits = WsLimits {
        frame_payload_max: CLIENT_MESSAGE_BYTES_MAX,
        message_bytes_max: CLIENT_MESSAGE_BYTES_MAX,
    };
    let mut decoder = FrameDecoder::new(limits);
    let mut assembler = MessageAssembler::new(CLIENT_MESSAGE_BYTES_MAX);
    loop {
        if kind == Kind::WebSocket {
            loop {
                let message = match decoder.decode(&mut buf) {
                    Ok(None) => break,
                    Ok(Some(frame)) => assembler.push(frame),
                    Err(problem) => Err(problem),
                };
                match message {
                    Ok(None) | Ok(Some(ws::Message::Pong(_))) => {}
                    Ok(Some(ws::Message::Ping(payload))) => {
                        if link.ping(payload, Instant::now()) {
                            tracing::info!(
                                stream = state.id,
                                "stream client pings without reading"
                            );
                            link.abandon.set(true);
                            state.notify.notify();
                            return;
                        }
                        state.notify.notify();
                    }
                    Ok(Some(ws::Message::Close { .. })) => {
                        link.client_done(Some((ws::CLOSE_NORMAL, "")), &state);
                        return;
                    }
                    Ok(Some(ws::Message::Text(_) | ws::Message::Binary(_))) => {
                        // The stream is one-way; a client that talks is ignored.
                    }
                    Err(problem) => {
                        link.client_done(Some((problem.close_code(), "protocol error")), &state);
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
        let read = pin!(reader.read_append(buf));
        let Some((result, back)) = unless(read, &link.reader_wake, || link.writer_done.get()).await
        else {
            return;
        };
        buf = back;
        match result {
            Ok(0) | Err(_) => {
                link.client_done(None, &state);
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

    /// Finding 8: pongs owed to a client are coalesced (memory is one pong, however many pings),
    /// and pinging counts as a flood only while one of our writes has been stuck for a while.
    #[test]
    fn pongs_are_coalesced_and_a_flood_needs_a_stuck_write() {
        let link = Link::default();
        let now = Instant::now();
        for i in 0..10_000u32 {
            assert!(
                !link.ping(Bytes::from(i.to_string()), now),
                "no write is stuck"
            );
        }
        let mut out = BytesMut::new();
        link.take_owed(&mut out);
        assert_eq!(
            &out[..],
            &[0x8A, 4, b'9', b'9', b'9', b'9'][..],
            "only the latest pong"
        );
        link.take_owed(&mut out);
        assert_eq!(out.len(), 6, "owed once");

        link.pings_since_write.set(0);
        link.writing_since.set(Some(now));
        for _ in 0..PINGS_WHILE_STUCK_MAX + 10 {
            assert!(!link.ping(Bytes::new(), now), "stuck, but not for long yet");
        }
        assert!(link.ping(Bytes::new(), now + STUCK_WRITE_FOR));
        assert!(link.flooded(now + STUCK_WRITE_FOR));
        link.pings_since_write.set(0);
        assert!(
            !link.flooded(now + STUCK_WRITE_FOR),
            "a finished write forgives"
        );
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
