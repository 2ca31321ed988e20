//! The HTTP listener on the shards: `GET /healthz`, and the management API (`/v1/*`), whose
//! requests the control thread executes (see `control.rs`). REST publish and streams build on
//! the same loop.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use ringmq_http::{parse_head, BodyDecoder, BodyEvent, Limits, Method, RequestHead, Response};
use ringmq_io::{monoio, ConnStream};

use super::control::{ControlHandle, ControlJob, Reply};
use crate::control::api::{Api, ApiRequest, ApiResponse};

/// A request head must arrive within this time (slowloris).
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);

/// An idle keep-alive connection is closed after this long.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Largest management request body: JSON objects of a few fields.
const MANAGEMENT_BODY_BYTES_MAX: usize = 64 * 1024;

/// How long a management request waits for the control thread.
const CONTROL_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves one HTTP/1.1 connection (keep-alive and pipelining), plain or TLS, until it closes.
pub async fn serve(stream: ConnStream, control: Arc<ControlHandle>) {
    let (mut reader, mut stream) = stream.into_split();
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
                        Response::text(408, "request head timeout\n").encode(false, &mut out);
                        let _ = stream.write_all(out.split()).await;
                    }
                    return;
                }
                Ok((Ok(0), _)) | Ok((Err(_), _)) => return,
                Ok((Ok(_), back)) => buf = back,
            }
        };
        if head.expect_continue {
            out.extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
        }
        let mut body = BytesMut::new();
        if head.has_body() {
            let body_limits = Limits {
                body_bytes_max: MANAGEMENT_BODY_BYTES_MAX,
                ..limits
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
                        match monoio::time::timeout(HEAD_TIMEOUT, reader.read_append(buf)).await {
                            Err(_) | Ok((Ok(0), _)) | Ok((Err(_), _)) => return,
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
        route(&head, body.freeze(), &control)
            .await
            .encode(keep_alive, &mut out);
        // Pipelined requests already buffered are answered in the same write.
        if !keep_alive || !matches!(parse_head(&buf, &limits), Ok(Some(_))) {
            let (result, _) = stream.write_all(out.split()).await;
            if result.is_err() || !keep_alive {
                return;
            }
        }
    }
}

async fn route(head: &RequestHead, body: Bytes, control: &Arc<ControlHandle>) -> Response {
    match (&head.method, head.path.as_str()) {
        (Method::Get | Method::Head, "/healthz") => Response::text(200, "ok\n"),
        (_, "/healthz") => {
            Response::text(405, "method not allowed\n").with_header("Allow", "GET, HEAD")
        }
        (_, path) if path == "/v1" || path.starts_with("/v1/") => {
            management(head, body, control).await
        }
        _ => Response::json(
            404,
            &br#"{"error":"not_found","detail":"no such route"}"#[..],
        ),
    }
}

/// Hands a `/v1/*` request to the control thread and waits for its answer.
async fn management(head: &RequestHead, body: Bytes, control: &Arc<ControlHandle>) -> Response {
    let bearer = head.header("authorization").and_then(|value| {
        let (scheme, token) = value.trim().split_once(' ')?;
        scheme
            .eq_ignore_ascii_case("bearer")
            .then(|| token.trim().to_owned())
    });
    let request = ApiRequest {
        method: head.method.as_str().to_owned(),
        path: head.path.clone(),
        query: head.query.clone().unwrap_or_default(),
        bearer,
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
