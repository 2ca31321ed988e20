//! The web console: its page and assets (compiled into the binary from `console/`, served on
//! the HTTP and HTTPS listeners), and `GET /v1/console/feed`, the once-a-second figures its
//! overview draws.
//!
//! The feed is an SSE stream read with `fetch` (an `EventSource` cannot send the key): one
//! `stats` frame a second, built from the shards' counters without asking their loops. The root
//! key gets the broker's figures per shard; another org's `sk_` key only its own org's totals
//! (one tenant never sees another's traffic). At most [`FEEDS_MAX`] feeds are open at once, and
//! a reader that stops reading holds one small frame, never a growing buffer.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::BytesMut;
use ringmq_http::{sse, RequestHead, Response};
use ringmq_io::{ConnReader, ConnWriter};

use super::stats::ShardStats;
use super::web::{bearer, HttpContext};
use crate::control::snapshot::KeyKind;

/// The console's page.
const INDEX_HTML: &str = include_str!("../../console/index.html");
/// Its script.
const APP_JS: &str = include_str!("../../console/app.js");
/// Its styles.
const APP_CSS: &str = include_str!("../../console/app.css");

/// What the page may load and where it may connect: its own origin only (no CDN, no font, no
/// request off the broker's host), no inline script, and no framing by another site.
const CSP: &str = "default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data:; \
                   style-src 'self'; script-src 'self'; frame-ancestors 'none'; base-uri 'none'; \
                   form-action 'none'";

/// Feeds open at once in the whole broker: each is a task and a timer; a console is for
/// operators, not for every client.
const FEEDS_MAX: usize = 32;

/// Feeds open now.
static FEEDS: AtomicUsize = AtomicUsize::new(0);

/// How often a feed sends its figures.
const FEED_INTERVAL: Duration = Duration::from_secs(1);

/// The console's page or one of its assets, for `path` (`None`: not the console's).
pub fn asset(path: &str) -> Option<Response> {
    let (content_type, body) = match path {
        "/console" | "/console/" => ("text/html; charset=utf-8", INDEX_HTML),
        "/console/app.js" => ("text/javascript; charset=utf-8", APP_JS),
        "/console/app.css" => ("text/css; charset=utf-8", APP_CSS),
        _ => return None,
    };
    Some(
        Response::new(200)
            .with_header("Content-Type", content_type)
            .with_header("Content-Security-Policy", CSP)
            .with_header("X-Content-Type-Options", "nosniff")
            .with_header("Referrer-Policy", "no-referrer")
            .with_header("Cache-Control", "no-cache")
            .with_body(body.as_bytes().to_vec()),
    )
}

/// Releases a feed's place when its task ends, however it ends.
struct FeedSlot;

impl FeedSlot {
    /// Takes a place, or `None` when [`FEEDS_MAX`] are open.
    fn take() -> Option<FeedSlot> {
        FEEDS
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |open| {
                (open < FEEDS_MAX).then_some(open + 1)
            })
            .ok()
            .map(|_| FeedSlot)
    }
}

impl Drop for FeedSlot {
    fn drop(&mut self) {
        FEEDS.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Who a feed is for: the whole broker (the root key) or one org.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Scope {
    Broker,
    Org(u32),
}

/// Serves `GET /v1/console/feed` on a connection it owns from here on.
pub async fn feed(
    reader: ConnReader,
    mut writer: ConnWriter,
    head: RequestHead,
    context: &HttpContext,
) {
    // The client sends nothing more; its half is dropped (a close shows up as a failed write).
    drop(reader);
    let mut out = BytesMut::with_capacity(1024);
    let Some(secret) = bearer(&head) else {
        refuse(
            &mut writer,
            Response::error(401, "unauthorized", "missing Authorization: Bearer key"),
        )
        .await;
        return;
    };
    let scope = match scope_of(&secret, context) {
        Ok(scope) => scope,
        Err(refusal) => {
            refuse(&mut writer, refusal).await;
            return;
        }
    };
    let Some(_slot) = FeedSlot::take() else {
        let refusal = Response::error(503, "unavailable", "too many console feeds are open")
            .with_header("Retry-After", "5");
        refuse(&mut writer, refusal).await;
        return;
    };
    out.extend_from_slice(
        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n\
X-Accel-Buffering: no\r\nConnection: close\r\n\r\n",
    );
    loop {
        // A key revoked (or an org deleted) meanwhile ends the feed.
        if scope_of(&secret, context).ok() != Some(scope) {
            sse::encode_event(
                &mut out,
                None,
                Some("end"),
                r#"{"error":"unauthorized","detail":"the key was revoked"}"#,
            );
            let _ = writer.write_all(out.split()).await;
            return;
        }
        let frame = figures(scope, context);
        sse::encode_event(&mut out, None, Some("stats"), &frame.to_string());
        let (result, _) = writer.write_all(out.split()).await;
        if result.is_err() || context.shard.shutting_down.get() {
            return;
        }
        ringmq_io::monoio::time::sleep(FEED_INTERVAL).await;
    }
}

/// The scope the key in `secret` may see, or the refusal.
fn scope_of(secret: &str, context: &HttpContext) -> Result<Scope, Response> {
    let snapshot = context.shard.snapshot();
    let Some(key) = snapshot.key(secret) else {
        return Err(Response::error(
            401,
            "unauthorized",
            "unknown or revoked API key",
        ));
    };
    if key.kind != KeyKind::Secret {
        return Err(Response::error(
            403,
            "forbidden",
            "the console needs a secret (sk_) key",
        ));
    }
    if snapshot.org(key.org).is_none() {
        return Err(Response::error(
            401,
            "unauthorized",
            "the key's org no longer exists",
        ));
    }
    Ok(if key.root {
        Scope::Broker
    } else {
        Scope::Org(key.org)
    })
}

/// Sends `refusal` and ends the connection.
async fn refuse(writer: &mut ConnWriter, refusal: Response) {
    let mut out = BytesMut::new();
    refusal.encode(false, &mut out);
    let _ = writer.write_all(out).await;
}

/// One frame's figures for `scope`.
fn figures(scope: Scope, context: &HttpContext) -> serde_json::Value {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    match scope {
        Scope::Broker => {
            let stats = &context.shared.stats;
            let shards: Vec<serde_json::Value> = stats
                .iter()
                .enumerate()
                .map(|(shard, s)| {
                    let mut figures = serde_json::Map::new();
                    figures.insert("shard".to_owned(), shard.into());
                    for (name, read) in SHARD_FIGURES {
                        figures.insert(name.to_owned(), read(s).into());
                    }
                    figures.into()
                })
                .collect();
            let mut totals = serde_json::Map::new();
            for (name, read) in SHARD_FIGURES {
                // Every shard holds all retained messages: one replica's count, not a sum.
                let total = if name == "retained" {
                    stats.iter().map(|s| read(s)).max().unwrap_or(0)
                } else {
                    stats.iter().map(|s| read(s)).sum()
                };
                totals.insert(name.to_owned(), total.into());
            }
            serde_json::json!({
                "t": t,
                "scope": "broker",
                "memory_bytes": resident_bytes(),
                "asleep": ringmq_io::dormant::asleep_count(),
                "shards": shards,
                "totals": totals,
            })
        }
        Scope::Org(org) => {
            let counters = context
                .shared
                .control
                .totals()
                .get(&org)
                .copied()
                .unwrap_or_default();
            serde_json::json!({
                "t": t,
                "scope": "org",
                "memory_bytes": null,
                "asleep": null,
                "shards": [],
                "totals": {
                    "connections": counters.connections,
                    "messages_in": counters.messages_in,
                    "messages_out": counters.messages_out,
                },
            })
        }
    }
}

/// One figure of a feed frame: its name, and how to read it from a shard's counters.
type Figure = (&'static str, fn(&ShardStats) -> i64);

/// A shard's figures in a feed frame.
const SHARD_FIGURES: [Figure; 10] = [
    ("connections", |s| s.clients_connected.get()),
    ("sockets", |s| s.sockets_open.get()),
    ("messages_in", |s| counter(s.messages_received.get())),
    ("messages_out", |s| counter(s.messages_sent.get())),
    ("dropped", |s| counter(s.messages_dropped.get())),
    ("inflight", |s| s.inflight.get()),
    ("streams", |s| s.stream_subscribers.get()),
    ("sessions", |s| s.sessions.get()),
    ("subscriptions", |s| s.subscriptions.get()),
    ("retained", |s| s.retained.get()),
];

/// A counter as a JSON integer (saturating: counters never come near `i64::MAX`).
fn counter(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// The process's resident memory in bytes (`/proc/self/statm`), if readable.
fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf only reads a configuration value; no memory is passed.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(pages * u64::try_from(page).ok().filter(|&p| p > 0).unwrap_or(4096))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assets_carry_their_type_and_a_strict_policy() {
        for (path, kind) in [
            ("/console", "text/html"),
            ("/console/", "text/html"),
            ("/console/app.js", "text/javascript"),
            ("/console/app.css", "text/css"),
        ] {
            let response = asset(path).expect(path);
            let header = |name: &str| {
                response
                    .headers
                    .iter()
                    .find(|(n, _)| n.eq_ignore_ascii_case(name))
                    .map(|(_, v)| v.clone())
                    .unwrap_or_default()
            };
            assert!(header("content-type").starts_with(kind), "{path}");
            assert!(header("content-security-policy").contains("default-src 'self'"));
            assert_eq!(header("x-content-type-options"), "nosniff");
        }
        for other in [
            "/console/../etc/passwd",
            "/console/app.js.map",
            "/consolex",
            "/",
        ] {
            assert!(asset(other).is_none(), "{other}");
        }
    }

    #[test]
    fn feeds_are_bounded_and_give_back_their_place() {
        let held: Vec<FeedSlot> = std::iter::from_fn(FeedSlot::take)
            .take(FEEDS_MAX + 5)
            .collect();
        assert_eq!(held.len(), FEEDS_MAX);
        assert!(FeedSlot::take().is_none());
        drop(held);
        assert!(FeedSlot::take().is_some());
    }

    #[test]
    fn resident_memory_is_read() {
        assert!(resident_bytes().is_some_and(|bytes| bytes > 1 << 20));
    }
}
