//! Operations endpoints: `/readyz` (every shard answers through the mesh) and `/metrics`
//! (Prometheus text format).

use std::fmt::Write;
use std::time::{Duration, Instant};

use ringmq_http::Response;

use super::mailbox::ShardHandle;
use super::stats::{ShardStats, REST_STATUSES};

/// One metric: name, help text, and how to read it from a shard's counters.
type Metric<T> = (&'static str, &'static str, fn(&ShardStats) -> T);

/// How long the control thread may be on one piece of work before `/readyz` says it is stuck
/// (above the ~10 s a store query may wait, and the 2 s a sessions query waits for shards).
const CONTROL_STUCK_AFTER: Duration = Duration::from_secs(15);

/// How long `/readyz` waits for every shard to answer.
const READY_TIMEOUT: Duration = Duration::from_secs(1);

/// 200 once every other shard answered a ping through the mesh, else 503.
pub async fn readyz(shard: &ShardHandle) -> Response {
    let Some(asked) = shard.call(|s| s.ping_all(Instant::now())).await else {
        return Response::text(503, "shutting down\n");
    };
    let nats_down = shard
        .cluster
        .as_ref()
        .is_some_and(|link| !link.connected.load(std::sync::atomic::Ordering::Relaxed));
    let loading = shard.cluster.as_ref().is_some_and(|link| {
        !link
            .retained_loaded
            .load(std::sync::atomic::Ordering::Relaxed)
    });
    let store_down = shard
        .control
        .as_ref()
        .is_some_and(|control| !control.store_reachable());
    let control_stuck = shard
        .control
        .as_ref()
        .is_some_and(|control| control.stuck(CONTROL_STUCK_AFTER));
    match shard.wait_counts(asked, READY_TIMEOUT).await {
        Some(_) if shard.shutting_down.get() => Response::text(503, "shutting down\n"),
        Some(_) if nats_down => Response::text(503, "not connected to NATS (cluster)\n"),
        Some(_) if loading => Response::text(503, "loading the cluster's retained messages\n"),
        Some(_) if store_down => Response::text(503, "control-plane store unreachable\n"),
        Some(_) if control_stuck => Response::text(
            503,
            "control plane stuck: one piece of its work has taken over 15 s\n",
        ),
        Some(_) => Response::text(200, "ready\n"),
        None => Response::text(503, "a shard did not answer within 1 s\n"),
    }
}

/// The broker's counters in Prometheus text exposition format (version 0.0.4).
pub fn metrics(
    stats: &[std::sync::Arc<ShardStats>],
    cluster: Option<&super::cluster::ClusterLink>,
) -> Response {
    let mut out = String::with_capacity(4096);
    let gauges: [Metric<i64>; 7] = [
        ("ringmq_connections", "Connected MQTT clients.", |s| {
            s.clients_connected.get()
        }),
        (
            "ringmq_sockets_open",
            "Open MQTT sockets, including those before CONNECT.",
            |s| s.sockets_open.get(),
        ),
        (
            "ringmq_sessions",
            "Sessions (connected or persistent).",
            |s| s.sessions.get(),
        ),
        ("ringmq_subscriptions", "Local subscriptions.", |s| {
            s.subscriptions.get()
        }),
        (
            "ringmq_retained_messages",
            "Retained messages in the shard's replica.",
            |s| s.retained.get(),
        ),
        (
            "ringmq_stream_subscribers",
            "Open WebSocket and SSE stream subscribers.",
            |s| s.stream_subscribers.get(),
        ),
        (
            "ringmq_inflight",
            "QoS 1/2 deliveries awaiting their acknowledgement (refreshed once a second).",
            |s| s.inflight.get(),
        ),
    ];
    for (name, help, read) in gauges {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
        for (shard, s) in stats.iter().enumerate() {
            let _ = writeln!(out, "{name}{{shard=\"{shard}\"}} {}", read(s));
        }
    }
    let counters: [Metric<u64>; 5] = [
        (
            "ringmq_messages_received_total",
            "PUBLISH packets received from clients.",
            |s| s.messages_received.get(),
        ),
        (
            "ringmq_messages_sent_total",
            "PUBLISH packets written to subscribers.",
            |s| s.messages_sent.get(),
        ),
        (
            "ringmq_messages_dropped_total",
            "Deliveries dropped (expired, too large, QoS 0 overflow, full queue).",
            |s| s.messages_dropped.get(),
        ),
        (
            "ringmq_rate_limited_total",
            "REST requests refused by a rate limit or quota.",
            |s| s.rate_limited.get(),
        ),
        (
            "ringmq_stream_frames_dropped_total",
            "Stream frames dropped for subscribers that fell behind.",
            |s| s.stream_frames_dropped.get(),
        ),
    ];
    for (name, help, read) in counters {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
        for (shard, s) in stats.iter().enumerate() {
            let _ = writeln!(out, "{name}{{shard=\"{shard}\"}} {}", read(s));
        }
    }
    let name = "ringmq_sockets_asleep";
    let _ = writeln!(
        out,
        "# HELP {name} Idle MQTT sockets kept as a bare descriptor until they are used.\n# TYPE {name} gauge\n{name} {}",
        ringmq_io::dormant::asleep_count()
    );
    let name = "ringmq_rest_publishes_total";
    let _ = writeln!(
        out,
        "# HELP {name} REST publish requests by response status.\n# TYPE {name} counter"
    );
    for (index, status) in REST_STATUSES.iter().enumerate() {
        let total: u64 = stats.iter().map(|s| s.rest_publishes[index].get()).sum();
        let _ = writeln!(out, "{name}{{status=\"{status}\"}} {total}");
    }
    if let Some(link) = cluster {
        cluster_metrics(&mut out, link);
    }
    Response::new(200)
        .with_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
        .with_body(out)
}

/// The cluster bridge's figures (a node in a cluster only).
fn cluster_metrics(out: &mut String, link: &super::cluster::ClusterLink) {
    use std::sync::atomic::Ordering::Relaxed;
    let name = "ringmq_cluster_connected";
    let _ = writeln!(
        out,
        "# HELP {name} 1 while the NATS connection is up.\n# TYPE {name} gauge\n{name} {}",
        u8::from(link.connected.load(Relaxed))
    );
    let gauges = [
        (
            "ringmq_cluster_peers",
            "Other nodes this node hears (their heartbeats).",
            &link.peers,
        ),
        (
            "ringmq_cluster_acks_waiting",
            "QoS 1/2 messages published here whose acknowledgement waits for other nodes.",
            &link.waiting,
        ),
    ];
    for (name, help, value) in gauges {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {}",
            value.load(Relaxed)
        );
    }
    let counters = [
        (
            "ringmq_cluster_sent_total",
            "Messages sent to the other nodes.",
            &link.sent,
        ),
        (
            "ringmq_cluster_received_total",
            "Messages from other nodes handed to a shard.",
            &link.received,
        ),
    ];
    for (name, help, value) in counters {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
            value.load(Relaxed)
        );
    }
    let name = "ringmq_cluster_dropped_total";
    let _ = writeln!(
        out,
        "# HELP {name} Messages not carried between nodes: out (the queue to NATS was full or NATS refused), in (a full shard inbox, a bad envelope, the NATS client's slow-consumer drops).\n# TYPE {name} counter\n{name}{{direction=\"out\"}} {}\n{name}{{direction=\"in\"}} {}",
        link.dropped_out.load(Relaxed),
        link.dropped_in.load(Relaxed)
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_name_every_shard_and_status() {
        let stats = vec![
            std::sync::Arc::new(ShardStats::default()),
            std::sync::Arc::new(ShardStats::default()),
        ];
        stats[1].messages_received.inc();
        stats[0].count_rest(202);
        let response = metrics(&stats, None);
        let mut encoded = bytes::BytesMut::new();
        response.encode(false, &mut encoded);
        let text = String::from_utf8_lossy(&encoded);
        assert!(text.contains("ringmq_messages_received_total{shard=\"1\"} 1"));
        assert!(text.contains("ringmq_rest_publishes_total{status=\"202\"} 1"));
        assert!(text.contains("# TYPE ringmq_connections gauge"));
    }
}
