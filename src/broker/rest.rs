//! REST publish: `POST /v1/publish` and `POST /v1/publish/batch`, served on the shard that
//! accepted the HTTP connection.
//!
//! A request becomes a PUBLISH on this shard exactly as if it had come over MQTT: the key's ACL,
//! the org's topic scope, retained handling and routing to every matching subscriber on every
//! shard. QoS 0 is answered 202 at once; QoS 1 is answered 200 once every shard with a match has
//! queued the message (their answers follow the deliveries on the FIFO mesh lanes), with the
//! number of subscribers it was queued for.
//!
//! Per org, shared by all shards: a token bucket (one token per request, a batch included), a
//! monthly quota (one per message), and an `Idempotency-Key` cache so a retried request is
//! answered with the first response and publishes nothing twice.

use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use ringmq_http::publish::{parse_batch, parse_publish, PublishLimits, PublishRequest};
use ringmq_http::{RequestHead, Response};
use sha2::{Digest, Sha256};

use super::facts::OrgCounters;
use super::front_door::{Quota, Remembered, IDEMPOTENCY_KEY_BYTES_MAX};
use super::web::{bearer, json_error as error, HttpContext};
use crate::control::snapshot::KeyKind;
use crate::message::Message;
use crate::mqtt::{PublishProperties, QoS, Str};
use crate::ratelimit::{monotonic_nanos, Decision};

/// How long a QoS 1 publish waits for the other shards to queue it.
const QUEUED_TIMEOUT: Duration = Duration::from_secs(5);

/// `YYYYMM` of now (UTC).
fn month_now() -> u64 {
    crate::control::store::month_number(crate::control::store::now_unix())
}

/// A token taken from an org's bucket: the decision and burst for the `X-RateLimit-*` headers,
/// and this shard's handles on the org's counters.
pub(super) struct OrgToken {
    /// The bucket's answer.
    pub decision: Decision,
    /// The org's burst (`X-RateLimit-Limit`).
    pub burst: u32,
    /// The org's bucket and quota.
    pub counters: OrgCounters,
}

/// Takes one token of `org`'s rate-limit pool (every key of the org, REST publish and management
/// alike, on every shard); `Err` is the answer to send: 503 when the registry of orgs is full,
/// 429 with `Retry-After` and the `X-RateLimit-*` headers past the rate.
pub(super) fn take_org_token(
    context: &HttpContext,
    org: u32,
    settings: &crate::control::model::OrgSettings,
    org_id: &str,
) -> Result<OrgToken, Response> {
    let rate = u32::try_from(settings.rate_limit_per_sec).unwrap_or(u32::MAX);
    let burst = u32::try_from(settings.rate_burst).unwrap_or(u32::MAX);
    let front = &context.shared.control.front;
    let Some(counters) = context.shard.org_counters(front, org, rate, burst) else {
        return Err(error(
            503,
            "unavailable",
            "too many orgs are rate limited; try again",
        ));
    };
    let decision = counters.bucket.try_take(1, monotonic_nanos());
    if !decision.allowed {
        context.shared.stats[usize::from(context.shard.id)]
            .rate_limited
            .inc();
        let response = error(
            429,
            "rate_limited",
            &format!("rate limit of {rate} requests per second (burst {burst}) exceeded for org {org_id}"),
        )
        .with_header("Retry-After", decision.retry_after_secs.max(1).to_string());
        return Err(with_rate_headers(response, &decision, burst));
    }
    Ok(OrgToken {
        decision,
        burst,
        counters,
    })
}

/// Adds the `X-RateLimit-*` headers of `decision` (the org's bucket of `limit` requests).
pub(super) fn with_rate_headers(response: Response, decision: &Decision, limit: u32) -> Response {
    response
        .with_header("X-RateLimit-Limit", limit.to_string())
        .with_header("X-RateLimit-Remaining", decision.remaining.to_string())
        .with_header("X-RateLimit-Reset", decision.reset_after_secs.to_string())
}

/// Serves `POST /v1/publish` (`batch` false) or `POST /v1/publish/batch`.
pub async fn publish(
    head: &RequestHead,
    body: Bytes,
    context: &HttpContext,
    batch: bool,
) -> Response {
    let shard_stats = Arc::clone(&context.shared.stats[usize::from(context.shard.id)]);
    let response = publish_inner(head, body, context, batch).await;
    shard_stats.count_rest(response.status);
    response
}

async fn publish_inner(
    head: &RequestHead,
    body: Bytes,
    context: &HttpContext,
    batch: bool,
) -> Response {
    // 1. Who is asking (the key's org, kind and ACL, from this shard's snapshot).
    let Some(secret) = bearer(head) else {
        return error(401, "unauthorized", "missing Authorization: Bearer key");
    };
    let (key, settings, org_id) = {
        let snapshot = context.shard.snapshot();
        let Some(key) = snapshot.key(&secret).cloned() else {
            return error(401, "unauthorized", "unknown or revoked API key");
        };
        let Some(org) = snapshot.org(key.org) else {
            return error(401, "unauthorized", "the key's org no longer exists");
        };
        (key, org.settings, org.id.clone())
    };
    if key.kind == KeyKind::Public {
        return error(403, "forbidden", "public (pk_) keys cannot publish");
    }

    // 2. One token per request from the org's bucket (shared by all its keys, on every shard).
    let OrgToken {
        decision,
        burst,
        counters,
    } = match take_org_token(context, key.org, &settings, &org_id) {
        Ok(taken) => taken,
        Err(refusal) => return refusal,
    };

    let front = &context.shared.control.front;

    // 3. A retried request with the same Idempotency-Key gets the first answer.
    let idempotency = match head.header("idempotency-key") {
        None => None,
        Some(value) if value.is_empty() || value.len() > IDEMPOTENCY_KEY_BYTES_MAX => {
            let response = error(400, "bad_request", "Idempotency-Key must be 1 to 255 bytes");
            return with_rate_headers(response, &decision, burst);
        }
        Some(value) => Some(value.to_owned()),
    };
    let fingerprint: [u8; 32] = {
        let mut hasher = Sha256::new();
        hasher.update(if batch {
            b"batch:" as &[u8]
        } else {
            b"single:"
        });
        hasher.update(&body);
        hasher.finalize().into()
    };
    if let Some(idempotency_key) = &idempotency {
        let Ok(mut cache) = front.idempotency.lock() else {
            return error(500, "internal", "idempotency cache unavailable");
        };
        let now = Instant::now();
        cache.expire(now);
        let slot = (key.org, idempotency_key.clone());
        match cache.entries.get(&slot).map(|(entry, _)| entry.clone()) {
            Some(Remembered::Done {
                fingerprint: first,
                status,
                body,
            }) if first == fingerprint => {
                let response =
                    Response::json(status, body).with_header("Idempotent-Replayed", "true");
                return with_rate_headers(response, &decision, burst);
            }
            Some(Remembered::InProgress { fingerprint: first }) if first == fingerprint => {
                let response = error(
                    409,
                    "conflict",
                    "a request with this Idempotency-Key is still in progress",
                );
                return with_rate_headers(response, &decision, burst);
            }
            Some(_) => {
                let response = error(
                    422,
                    "unprocessable",
                    "this Idempotency-Key was used with a different request body",
                );
                return with_rate_headers(response, &decision, burst);
            }
            None => {
                cache
                    .entries
                    .insert(slot.clone(), (Remembered::InProgress { fingerprint }, now));
                cache.order.push_back((now, slot.0, slot.1));
            }
        }
    }

    let quota = &counters.quota;
    let (status, body) = execute(&body, context, &key, &settings, &org_id, quota, batch).await;

    if let Some(idempotency_key) = idempotency {
        let mut first_at = None;
        if let Ok(mut cache) = front.idempotency.lock() {
            let slot = (key.org, idempotency_key.clone());
            // Server-side failures are not remembered: a retry may succeed.
            if status >= 500 {
                cache.entries.remove(&slot);
            } else if let Some(entry) = cache.entries.get_mut(&slot) {
                entry.0 = Remembered::Done {
                    fingerprint,
                    status,
                    body: body.clone(),
                };
                first_at = Some(entry.1);
            }
        }
        // Into the log too, so a retry after a restart gets the same answer (in `sync` mode
        // this answer waits until the log holds it).
        if let Some(at) = first_at {
            let (org, remembered) = (key.org, body.clone());
            let wait = context
                .shard
                .call(move |s| {
                    let answer = Box::new(ringmq_core::durable::IdempotentAnswer {
                        org,
                        key: ringmq_proto::mqtt::Str::from(idempotency_key.as_str()),
                        fingerprint,
                        status,
                        body: remembered,
                        at_ms: s.wall_clock().unix_ms(at),
                    });
                    s.remember_idempotent(answer, Instant::now())
                })
                .await
                .flatten();
            if let Some(wait) = wait {
                if context
                    .shard
                    .wait_counts(wait, QUEUED_TIMEOUT)
                    .await
                    .is_none()
                {
                    return error(
                        503,
                        "unavailable",
                        "the answer could not be stored in time; retry with the same key",
                    );
                }
            }
        }
    }
    let mut response = Response::json(status, body);
    if status == 429 {
        // The quota's refusal: it lifts when the next month begins.
        let now = crate::control::store::now_unix();
        let wait = crate::control::store::next_month_start(now).saturating_sub(now);
        response = response.with_header("Retry-After", wait.max(1).to_string());
    }
    with_rate_headers(response, &decision, burst)
}

/// A status and JSON body (what the idempotency cache stores).
fn answer(status: u16, value: serde_json::Value) -> (u16, Bytes) {
    (
        status,
        Bytes::from(serde_json::to_vec(&value).unwrap_or_default()),
    )
}

/// An `{"error", "detail"}` answer.
fn problem(status: u16, code: &str, detail: String) -> (u16, Bytes) {
    answer(
        status,
        serde_json::json!({ "error": code, "detail": detail }),
    )
}

/// The answer for a publish body that did not parse: 413 for a payload over the cap, else 400.
fn parse_problem(error: &ringmq_http::publish::PublishError) -> (u16, Bytes) {
    let code = if error.status() == 413 {
        "payload_too_large"
    } else {
        "bad_request"
    };
    problem(error.status(), code, error.detail())
}

/// Parses, checks the ACL and quota, publishes; returns the status and JSON body.
async fn execute(
    body: &Bytes,
    context: &HttpContext,
    key: &crate::control::snapshot::KeyAuth,
    settings: &crate::control::model::OrgSettings,
    org_id: &str,
    quota: &Quota,
    batch: bool,
) -> (u16, Bytes) {
    let rules = Rc::clone(&context.shard.rules);
    let limits = PublishLimits {
        payload_bytes_max: rules.packet_size_max as usize,
        topic_levels_max: rules.topic_levels_max,
        batch_max: context.shared.config.limits.rest_batch_max,
    };
    let requests = if batch {
        match parse_batch(body, &limits) {
            Ok(requests) => requests,
            Err(e) => return parse_problem(&e),
        }
    } else {
        match parse_publish(body, &limits) {
            Ok(request) => vec![Ok(request)],
            Err(e) => return parse_problem(&e),
        }
    };

    // The monthly quota counts messages, a batch's included.
    let valid = requests.iter().filter(|r| r.is_ok()).count() as u64;
    if valid > 0 && !quota.take(valid, settings.monthly_quota, month_now()) {
        context.shared.stats[usize::from(context.shard.id)]
            .rate_limited
            .inc();
        return problem(
            429,
            "quota_exceeded",
            format!(
                "the monthly quota of {} messages for org {org_id} is used up; it resets at the start of next month",
                settings.monthly_quota
            ),
        );
    }

    let mut results = Vec::with_capacity(requests.len());
    for request in requests {
        let outcome = match request {
            Err(e) => parse_problem(&e),
            Ok(request) => publish_one(request, context, key).await,
        };
        results.push(outcome);
    }
    if !batch {
        return results
            .pop()
            .unwrap_or_else(|| problem(500, "internal", "no result".into()));
    }
    let items: Vec<serde_json::Value> = results
        .into_iter()
        .map(|(status, body)| {
            let mut value: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
            if let Some(object) = value.as_object_mut() {
                object.insert("status".into(), serde_json::json!(status));
            }
            value
        })
        .collect();
    answer(200, serde_json::json!({ "results": items }))
}

/// Publishes one validated request; 202/200 with what happened, or 403 when the key's ACL
/// does not allow the topic.
async fn publish_one(
    request: PublishRequest,
    context: &HttpContext,
    key: &crate::control::snapshot::KeyAuth,
) -> (u16, Bytes) {
    if !key.acl.may_publish(&request.topic, "", "") {
        return problem(
            403,
            "forbidden",
            format!("this key may not publish to {}", request.topic),
        );
    }
    let now = Instant::now();
    let scope = ringmq_router::org_scope(key.org);
    let topic = Str::from(ringmq_router::scoped(&scope, &request.topic));
    let qos = if request.qos == 1 {
        QoS::AtLeastOnce
    } else {
        QoS::AtMostOnce
    };
    let properties = PublishProperties {
        payload_format_indicator: None,
        message_expiry_interval: request.message_expiry,
        topic_alias: None,
        response_topic: request.response_topic.map(Str::from),
        correlation_data: request.correlation_data,
        user_properties: request
            .user_properties
            .into_iter()
            .map(|(k, v)| (Str::from(k), Str::from(v)))
            .collect(),
        subscription_identifiers: Vec::new(),
        content_type: request.content_type.map(Str::from),
    };
    let expires_at = request
        .message_expiry
        .map(|secs| now + Duration::from_secs(u64::from(secs)));
    let message = Arc::new(Message {
        topic,
        payload: request.payload,
        qos,
        retain: request.retain,
        properties,
        expires_at,
        publisher: Str::from_static(""),
        origin: crate::broker::shard::shard_origin(context.shard.id),
        namespace: None,
        device: None,
    });
    let org = key.org;
    let published = context
        .shard
        .call(move |shard| {
            if shard.storage_full() && (message.qos != QoS::AtMostOnce || message.retain) {
                return Err(Unstored::StorageFull);
            }
            if message.retain
                && !message.payload.is_empty()
                && !shard.retained_room(&message.topic, message.payload.len())
            {
                return Err(Unstored::NoRetainedRoom);
            }
            shard.count_rest(org);
            if message.qos == QoS::AtMostOnce {
                shard.publish(message, now);
                shard.flush(now);
                Ok(None)
            } else {
                Ok(Some(shard.publish_counted(message, now)))
            }
        })
        .await;
    let token =
        match published {
            Some(Ok(token)) => token,
            Some(Err(Unstored::StorageFull)) => {
                return problem(
                    507,
                    "insufficient_storage",
                    "the broker cannot write its log (disk full): nothing that needs storing is \
                 accepted until it can; QoS 0 publishes without retain still are"
                        .into(),
                )
            }
            Some(Err(Unstored::NoRetainedRoom)) => return problem(
                403,
                "limit_exceeded",
                "no room for this retained message: the org's org_limits.retained_bytes_max (or \
                 the broker's limits.retained_messages_max) is reached; clear retained topics or \
                 publish without retain"
                    .into(),
            ),
            None => return problem(503, "unavailable", "the broker is shutting down".into()),
        };
    match token {
        None => answer(
            202,
            serde_json::json!({ "status": "accepted", "topic": request.topic, "qos": 0 }),
        ),
        Some(token) => match context.shard.wait_counts(token, QUEUED_TIMEOUT).await {
            Some(matched) => answer(
                200,
                serde_json::json!({
                    "status": "queued",
                    "topic": request.topic,
                    "qos": 1,
                    "matched": matched,
                }),
            ),
            None => problem(
                503,
                "unavailable",
                "a shard did not confirm queueing in time; the message may have been delivered"
                    .into(),
            ),
        },
    }
}

/// Why a REST publish was not taken.
enum Unstored {
    /// The log cannot be written: a QoS 1 or retained publish could not be kept.
    StorageFull,
    /// The org's or the broker's retained cap is reached.
    NoRetainedRoom,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::front_door::{IdempotencyCache, Quota, IDEMPOTENCY_WINDOW};

    #[test]
    fn quota_refuses_what_does_not_fit_and_restarts_each_month() {
        let quota = Quota::default();
        assert!(quota.take(3, 5, 202611));
        assert!(
            !quota.take(3, 5, 202611),
            "3 more would pass the quota of 5"
        );
        assert!(quota.take(2, 5, 202611));
        assert!(!quota.take(1, 5, 202611));
        assert!(quota.take(5, 5, 202612), "a new month starts over");
    }

    #[test]
    fn quota_counts_what_the_rest_of_the_cluster_used_that_month() {
        let quota = Quota::default();
        quota.set_others(202611, 3);
        assert!(quota.take(2, 5, 202611));
        assert!(!quota.take(1, 5, 202611), "3 elsewhere + 2 here fill 5");
        quota.set_others(202611, 1);
        assert!(
            quota.take(2, 5, 202611),
            "the others' count is replaced, not added"
        );
        assert!(
            quota.take(5, 5, 202612),
            "another month's count of the others does not apply"
        );
    }

    #[test]
    fn idempotency_cache_forgets_after_the_window_and_beyond_its_bound() {
        let mut cache = IdempotencyCache::default();
        let start = Instant::now();
        for i in 0..3u32 {
            let slot = (0, format!("k{i}"));
            cache.entries.insert(
                slot.clone(),
                (
                    Remembered::InProgress {
                        fingerprint: [0; 32],
                    },
                    start,
                ),
            );
            cache.order.push_back((start, slot.0, slot.1));
        }
        cache.expire(start + Duration::from_secs(60));
        assert_eq!(cache.entries.len(), 3);
        cache.expire(start + IDEMPOTENCY_WINDOW);
        assert!(cache.entries.is_empty());
    }
}
