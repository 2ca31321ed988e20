//! The HTTP listener on the shards: `GET /healthz`, and the management API (`/v1/*`), whose
//! requests the control thread executes (see `control.rs`). REST publish and streams build on
//! the same loop.

use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use ringmq_http::origin::{OriginPolicy, OriginVerdict};
use ringmq_http::{parse_head, BodyDecoder, BodyEvent, Limits, Method, RequestHead, Response};
use ringmq_io::{monoio, ConnReader, ConnStream};

use super::control::{ControlHandle, ControlJob, Reply};
use super::mailbox::ShardHandle;
pub use super::web::HttpContext;
use super::web::{bearer, json_error};
use crate::control::api::{Api, ApiRequest, ApiResponse};
use crate::control::snapshot::{KeyKind, Snapshot};

/// A request head must arrive within this time (slowloris).
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);

/// An idle keep-alive connection is closed after this long.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Largest management request body: JSON objects of a few fields.
const MANAGEMENT_BODY_BYTES_MAX: usize = 64 * 1024;

/// How long a management request waits for the control thread.
const CONTROL_TIMEOUT: Duration = Duration::from_secs(10);

/// After a request refused before its body: how long, and how many bytes of what the client
/// still sends are read and dropped, so closing does not reset the connection before the client
/// read the answer (a kernel resets a socket closed with unread data).
const DRAIN_TIME: Duration = Duration::from_secs(1);
const DRAIN_BYTES_MAX: usize = 256 * 1024;

/// Open HTTP connections per shard at most; more are answered 503 and closed. Idle keep-alive
/// connections are closed after `IDLE_TIMEOUT`, so the bound frees itself.
const HTTP_CONNECTIONS_MAX: usize = 16_384;

/// Counts an open HTTP connection on its shard until dropped.
struct HttpGuard(Rc<ShardHandle>);

impl Drop for HttpGuard {
    fn drop(&mut self) {
        let open = &self.0.http_connections;
        open.set(open.get().saturating_sub(1));
    }
}

/// Serves one HTTP/1.1 connection (keep-alive and pipelining), plain or TLS, until it closes.
pub async fn serve(stream: ConnStream, context: Rc<HttpContext>) {
    // Kept for an upgrade to MQTT over WebSocket, whose connection needs the socket's facts.
    let socket = (stream.fd(), stream.peer_addr(), stream.peer_common_name());
    // A browser page's origin is judged against the scheme the request came in with.
    let tls = matches!(stream, ConnStream::Tls(_));
    let (mut reader, mut stream) = stream.into_split();
    let open = &context.shard.http_connections;
    open.set(open.get() + 1);
    let full = open.get() > HTTP_CONNECTIONS_MAX;
    let _guard = HttpGuard(Rc::clone(&context.shard));
    if full {
        let mut out = BytesMut::new();
        json_error(503, "unavailable", "too many HTTP connections; try again")
            .with_header("Retry-After", "1")
            .encode(false, &mut out);
        let _ = stream.write_all(out).await;
        return;
    }
    let limits = Limits::default();
    let mut buf = BytesMut::with_capacity(4096);
    let mut out = BytesMut::with_capacity(1024);
    loop {
        // Read until a whole head is buffered, within the deadline.
        let started = Instant::now();
        let head = loop {
            match parse_head(&buf, &limits) {
                Ok(Some((head, used))) => {
                    buf.advance(used);
                    break head;
                }
                Ok(None) => {}
                Err(error) => {
                    Response::from_error(&error).encode(false, &mut out);
                    let _ = stream.write_all(out.split()).await;
                    return;
                }
            }
            let limit = if buf.is_empty() {
                IDLE_TIMEOUT
            } else {
                HEAD_TIMEOUT
            };
            let Some(left) = limit.checked_sub(started.elapsed()) else {
                return;
            };
            if buf.capacity() - buf.len() < 1024 {
                buf.reserve(4096);
            }
            let partial = !buf.is_empty();
            match monoio::time::timeout(left, reader.read_append(buf)).await {
                Err(_) => {
                    if partial {
                        Response::error(
                            408,
                            "request_timeout",
                            "the request head did not arrive in time",
                        )
                        .encode(false, &mut out);
                        let _ = stream.write_all(out.split()).await;
                    }
                    return;
                }
                Ok((Ok(0), _)) | Ok((Err(_), _)) => return,
                Ok((Ok(_), back)) => buf = back,
            }
        };
        if head.method == Method::Get && head.path == "/mqtt" {
            let foreign = match check_origin(&head, &context, tls) {
                Ok(verdict) => verdict == OriginVerdict::Foreign,
                Err(refusal) => {
                    refusal.encode(false, &mut out);
                    let _ = stream.write_all(out).await;
                    return;
                }
            };
            mqtt_over_websocket(reader, stream, &head, buf, &context, (socket, foreign)).await;
            return;
        }
        if head.method == Method::Get {
            if let Some(kind) = super::stream::kind_of(&head.path) {
                if kind == super::stream::Kind::WebSocket {
                    // Streams need a key whatever the origin; a foreign page may use its own.
                    if let Err(refusal) = check_origin(&head, &context, tls) {
                        refusal.encode(false, &mut out);
                        let _ = stream.write_all(out).await;
                        return;
                    }
                }
                // The stream owns the connection from here on.
                super::stream::serve(reader, stream, head, buf, context, kind).await;
                return;
            }
        }
        if head.method == Method::Get && head.path == "/v1/console/feed" {
            // The console's figures: the feed owns the connection from here on.
            super::console::feed(reader, stream, head, &context).await;
            return;
        }
        if head.has_body() {
            // Who asks is known from the head: an unknown key is answered before any of the
            // body is read, so it cannot make the shard buffer (or wait for) a body.
            if let Some(refusal) = refuse_before_body(&head, &context) {
                refusal.encode(false, &mut out);
                let _ = stream.write_all(out).await;
                drop(stream);
                drain(reader, buf).await;
                return;
            }
        }
        if head.expect_continue {
            out.extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
        }
        let mut body = BytesMut::new();
        if head.has_body() {
            // The whole body arrives within one deadline, however it is trickled (slowloris).
            let deadline =
                Instant::now() + Duration::from_millis(context.shared.config.http.body_timeout_ms);
            // REST publish carries payloads up to the MQTT packet cap (JSON and base64 inflate
            // them): it gets the parser's full body limit; management bodies are small.
            let body_limits = if head.path.starts_with("/v1/publish") {
                limits
            } else {
                Limits {
                    body_bytes_max: MANAGEMENT_BODY_BYTES_MAX,
                    ..limits
                }
            };
            let mut decoder = match BodyDecoder::for_head(&head, &body_limits) {
                Ok(decoder) => decoder,
                Err(error) => {
                    Response::from_error(&error).encode(false, &mut out);
                    let _ = stream.write_all(out.split()).await;
                    return;
                }
            };
            loop {
                match decoder.decode(&mut buf) {
                    Ok(BodyEvent::Done) => break,
                    Ok(BodyEvent::NeedMore) => {
                        if !out.is_empty() {
                            let (result, _) = stream.write_all(out.split()).await;
                            if result.is_err() {
                                return;
                            }
                        }
                        buf.reserve(4096);
                        let left = deadline.saturating_duration_since(Instant::now());
                        match monoio::time::timeout(left, reader.read_append(buf)).await {
                            Err(_) => {
                                let detail = format!(
                                    "the request body did not arrive within {} ms",
                                    context.shared.config.http.body_timeout_ms
                                );
                                let response = json_error(408, "request_timeout", &detail);
                                with_cors(response).encode(false, &mut out);
                                let _ = stream.write_all(out.split()).await;
                                return;
                            }
                            Ok((Ok(0), _)) | Ok((Err(_), _)) => return,
                            Ok((Ok(_), back)) => buf = back,
                        }
                    }
                    Ok(BodyEvent::Data(data)) => body.extend_from_slice(&data),
                    Err(error) => {
                        Response::from_error(&error).encode(false, &mut out);
                        let _ = stream.write_all(out.split()).await;
                        return;
                    }
                }
            }
        }
        let keep_alive = head.keep_alive;
        let mut response = route(&head, body.freeze(), &context).await;
        if head.path.starts_with("/v1/") {
            response = with_cors(response);
        }
        response.encode(keep_alive, &mut out);
        // Pipelined requests already buffered are answered in the same write.
        if !keep_alive || !matches!(parse_head(&buf, &limits), Ok(Some(_))) {
            let (result, _) = stream.write_all(out.split()).await;
            if result.is_err() || !keep_alive {
                return;
            }
        }
    }
}

async fn route(head: &RequestHead, body: Bytes, context: &HttpContext) -> Response {
    match (&head.method, head.path.as_str()) {
        // CORS preflight: keys are bearer tokens, never cookies, so any origin may ask.
        (Method::Options, path) if path.starts_with("/v1/") => Response::new(204)
            .with_header(
                "Access-Control-Allow-Methods",
                "GET, POST, PATCH, DELETE, OPTIONS",
            )
            .with_header(
                "Access-Control-Allow-Headers",
                "Authorization, Content-Type, Idempotency-Key, Last-Event-ID",
            )
            .with_header("Access-Control-Max-Age", "600"),
        (Method::Get | Method::Head, "/healthz") => Response::text(200, "ok\n"),
        (Method::Get | Method::Head, path)
            if path == "/console" || path.starts_with("/console/") =>
        {
            super::console::asset(path)
                .unwrap_or_else(|| Response::error(404, "not_found", "no such console asset"))
        }
        (Method::Get | Method::Head, "/readyz") => super::ops::readyz(&context.shard).await,
        (Method::Get | Method::Head, "/metrics") => {
            super::ops::metrics(&context.shared.stats, context.shared.cluster.as_deref())
        }
        (Method::Post, "/v1/publish") => super::rest::publish(head, body, context, false).await,
        (Method::Post, "/v1/publish/batch") => {
            super::rest::publish(head, body, context, true).await
        }
        (_, "/v1/publish" | "/v1/publish/batch") => {
            api_response(Api::error(405, "method_not_allowed", "use POST"))
                .with_header("Allow", "POST")
        }
        (_, "/healthz" | "/readyz" | "/metrics") => {
            Response::error(405, "method_not_allowed", "use GET or HEAD")
                .with_header("Allow", "GET, HEAD")
        }
        (_, path) if path == "/v1" || path.starts_with("/v1/") => {
            rate_limited_management(head, body, context).await
        }
        _ => Response::error(404, "not_found", "no such route"),
    }
}

/// A management request, counted against its org's rate limit as publishing is (one token
/// of the same bucket, `X-RateLimit-*` on the answer, 429 + `Retry-After` past it). A key this
/// shard does not know yet, and the public OpenAPI document, go on to the control thread,
/// which answers them (401 for an unknown key).
async fn rate_limited_management(
    head: &RequestHead,
    body: Bytes,
    context: &HttpContext,
) -> Response {
    let known = (head.path != "/v1/openapi.json" && head.method != Method::Options)
        .then(|| super::web::bearer(head))
        .flatten()
        .and_then(|secret| {
            let snapshot = context.shard.snapshot();
            let key = snapshot.key(&secret)?;
            let org = snapshot.org(key.org)?;
            Some((key.org, org.settings, org.id.clone()))
        });
    let Some((org, settings, org_id)) = known else {
        return management(head, body, &context.shared.control).await;
    };
    let token = match super::rest::take_org_token(context, org, &settings, &org_id) {
        Ok(token) => token,
        Err(refusal) => return refusal,
    };
    let response = management(head, body, &context.shared.control).await;
    super::rest::with_rate_headers(response, &token.decision, token.burst)
}

/// Hands a `/v1/*` request to the control thread and waits for its answer.
async fn management(head: &RequestHead, body: Bytes, control: &Arc<ControlHandle>) -> Response {
    let request = ApiRequest {
        method: head.method.as_str().to_owned(),
        path: head.path.clone(),
        query: head.query.clone().unwrap_or_default(),
        bearer: bearer(head),
        body,
    };
    let reply = Reply::new();
    let job = ControlJob::Api {
        request: Box::new(request),
        reply: Arc::clone(&reply),
    };
    if control.submit(job).is_err() {
        return api_response(Api::error(
            503,
            "unavailable",
            "the control plane is busy; try again",
        ))
        .with_header("Retry-After", "1");
    }
    match reply.recv(CONTROL_TIMEOUT).await {
        Some(response) => api_response(response),
        None => api_response(Api::error(
            503,
            "unavailable",
            "the control plane did not answer in time",
        )),
    }
}

/// Judges a WebSocket upgrade's `Origin` (`/mqtt` and `/v1/mqtt/stream`) against
/// `[http] allowed_origins` and the broker's own HTTP listeners; `Err` is the 403 to send.
pub(super) fn check_origin(
    head: &RequestHead,
    context: &HttpContext,
    tls: bool,
) -> Result<OriginVerdict, Response> {
    let config = &context.shared.config;
    let listeners = [(false, config.listeners.http)]
        .into_iter()
        .chain(config.listeners.https.0.map(|addr| (true, addr)));
    let policy = OriginPolicy::new(
        config.http.allowed_origins.iter().map(String::as_str),
        listeners,
    );
    policy.check(head, tls).map_err(|refusal| {
        tracing::debug!(%refusal, path = head.path, "WebSocket upgrade refused");
        refusal.response()
    })
}

/// The answer to a `/v1/` request with a body whose key cannot be right (missing, unknown,
/// revoked, or a public key on REST publish), decided from the head alone; `None` reads on.
/// The key is looked up in this shard's snapshot, then in the control plane's newest one (a key
/// created a moment ago may not have reached the shard yet).
fn refuse_before_body(head: &RequestHead, context: &HttpContext) -> Option<Response> {
    let path = head.path.as_str();
    let api = path == "/v1" || path.starts_with("/v1/");
    // The OpenAPI document is public; a CORS preflight carries no key.
    if !api || path == "/v1/openapi.json" || head.method == Method::Options {
        return None;
    }
    let publish = path.starts_with("/v1/publish");
    let refusal = match bearer(head) {
        None => Some(json_error(
            401,
            "unauthorized",
            "missing Authorization: Bearer key",
        )),
        Some(secret) => {
            let kind_in = |snapshot: &Snapshot| {
                let key = snapshot.key(&secret)?;
                snapshot.org(key.org).map(|_| key.kind)
            };
            // The control plane's newest snapshot: the shard's may be a moment behind.
            let kind = kind_in(&context.shared.control.snapshot());
            match kind {
                None => Some(json_error(
                    401,
                    "unauthorized",
                    "unknown or revoked API key",
                )),
                Some(KeyKind::Public) if publish => Some(json_error(
                    403,
                    "forbidden",
                    "public (pk_) keys cannot publish",
                )),
                Some(_) => None,
            }
        }
    }?;
    if publish {
        context.shared.stats[usize::from(context.shard.id)].count_rest(refusal.status);
    }
    Some(with_cors(refusal))
}

/// Reads and drops what the client still sends, for at most [`DRAIN_TIME`] and
/// [`DRAIN_BYTES_MAX`], after the answer was written and the writing side shut.
async fn drain(mut reader: ConnReader, mut buf: BytesMut) {
    let deadline = Instant::now() + DRAIN_TIME;
    let mut drained = buf.len();
    while drained < DRAIN_BYTES_MAX {
        buf.clear();
        buf.reserve(16 * 1024);
        let left = deadline.saturating_duration_since(Instant::now());
        match monoio::time::timeout(left, reader.read_append(buf)).await {
            Ok((Ok(read), back)) if read > 0 => {
                drained += read;
                buf = back;
            }
            _ => return,
        }
    }
}

/// Upgrades to MQTT over WebSocket and serves the MQTT connection on this shard, exactly as
/// over TCP. A `foreign` page (another origin, allowed) must log in with a username: neither
/// anonymous access nor the browser's client certificate logs it in.
async fn mqtt_over_websocket(
    reader: ringmq_io::ConnReader,
    mut writer: ringmq_io::ConnWriter,
    head: &RequestHead,
    rest: BytesMut,
    context: &HttpContext,
    ((fd, peer, identity), foreign): (
        (
            std::os::fd::RawFd,
            Option<std::net::SocketAddr>,
            Option<String>,
        ),
        bool,
    ),
) {
    let mut out = BytesMut::new();
    let upgrade = match ringmq_http::ws::check_upgrade(head) {
        Ok(upgrade) => upgrade,
        Err(problem) => {
            problem.response().encode(false, &mut out);
            let _ = writer.write_all(out).await;
            return;
        }
    };
    // MQTT 5.0 section 6: the subprotocol is "mqtt" ("mqttv3.1" for old 3.1 clients).
    let protocol = ["mqtt", "mqttv3.1"].into_iter().find(|p| upgrade.offers(p));
    let full = context.shard.full() || context.shard.shutting_down.get();
    if full {
        Response::error(503, "unavailable", "connection limit reached").encode(false, &mut out);
        let _ = writer.write_all(out).await;
        return;
    }
    upgrade.encode_response(protocol, &mut out);
    let (result, _) = writer.write_all(out).await;
    if result.is_err() {
        return;
    }
    let packet_size_max = context.shard.settings.packet_size_max as usize;
    // One WebSocket message carries at most a packet plus slack for framing by the client.
    let (ws_reader, ws_writer) =
        super::ws_transport::wrap(reader, writer, rest, packet_size_max + 1024);
    let stream = ringmq_io::ConnStream::Layered(Box::new(ringmq_io::Layered {
        reader: ringmq_io::ConnReader::Framed(Box::new(Box::new(ws_reader))),
        writer: ringmq_io::ConnWriter::Framed(Box::new(Box::new(ws_writer))),
        fd,
        peer,
        // A browser presents its client certificate to any page's WebSocket: it proves nothing
        // about who wrote the page.
        identity: identity.filter(|_| !foreign),
    }));
    let conn_id = context
        .shared
        .conn_ids
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    super::conn::serve(Rc::clone(&context.shard), stream, conn_id, foreign).await;
}

/// Lets browser apps on any origin call the API and read its rate-limit headers (the
/// credentials are bearer keys, never cookies).
fn with_cors(response: Response) -> Response {
    response
        .with_header("Access-Control-Allow-Origin", "*")
        .with_header(
            "Access-Control-Expose-Headers",
            "X-RateLimit-Limit, X-RateLimit-Remaining, X-RateLimit-Reset, Retry-After, Idempotent-Replayed",
        )
}

fn api_response(response: ApiResponse) -> Response {
    let mut out = if response.body.is_empty() {
        Response::new(response.status)
    } else {
        Response::json(response.status, response.body)
    };
    for (name, value) in response.headers {
        out = out.with_header(name, value);
    }
    out
}
