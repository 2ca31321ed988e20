//! The final report: a table for people, JSON for machines, HTML with SVG charts.

use std::fmt::Write as _;

use crate::metrics::{LatencyKind, LatencySummary};
use crate::worker::Delivery;

/// One second of the run, for the progress line and the throughput chart.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct TimelinePoint {
    /// Seconds since the publishers started (negative while connecting).
    pub t_s: f64,
    /// PUBLISH packets written per second.
    pub sent_per_s: f64,
    /// PUBLISH packets received per second.
    pub received_per_s: f64,
    /// p99 latency of this second, µs.
    pub p99_us: f64,
    /// Connections up.
    pub connections: u64,
}

/// Broker memory sampled around a connection storm.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct BrokerMemory {
    /// Broker process id.
    pub pid: u32,
    /// RSS before the loadgen connected, bytes.
    pub rss_before_bytes: u64,
    /// RSS with every connection up, bytes.
    pub rss_after_bytes: u64,
    /// (after − before) ÷ connections, bytes.
    pub bytes_per_connection: f64,
}

/// Everything a run measured.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Report {
    /// Scenario name.
    pub scenario: String,
    /// Broker address.
    pub broker: String,
    /// TCP, TLS, WebSocket or WebSocket over TLS.
    pub transport: String,
    /// What the first TLS connection negotiated (protocol, cipher suite, key exchange).
    pub tls_session: Option<String>,
    /// TLS connections that resumed a session; the others made a full handshake.
    pub tls_resumed: Option<u64>,
    /// MQTT protocol level.
    pub mqtt_version: u8,
    /// Publish QoS.
    pub qos: u8,
    /// Subscription QoS.
    pub sub_qos: u8,
    /// Payload bytes.
    pub payload_bytes: usize,
    /// Publishers.
    pub publishers: usize,
    /// Subscribers.
    pub subscribers: usize,
    /// Idle connections (`conn`).
    pub idle_clients: usize,
    /// Loadgen threads.
    pub threads: usize,
    /// Connections up.
    pub connections_ok: u64,
    /// Connections that failed.
    pub connections_failed: u64,
    /// Seconds from the first connect until every connection was up (or failed).
    pub connect_seconds: f64,
    /// Connections per second achieved.
    pub connect_rate_per_s: f64,
    /// Seconds of measurement (after warm-up).
    pub measured_seconds: f64,
    /// PUBLISH packets written during measurement, per second.
    pub sent_per_s: f64,
    /// PUBLISH packets received during measurement, per second.
    pub received_per_s: f64,
    /// Acks received during measurement, per second.
    pub acked_per_s: f64,
    /// PUBLISH packets written in the whole run.
    pub sent_total: u64,
    /// PUBLISH packets received in the whole run.
    pub received_total: u64,
    /// Acks received in the whole run.
    pub acked_total: u64,
    /// What the latency figures measure.
    pub latency_kind: Option<LatencyKind>,
    /// Latency percentiles (measurement window only).
    pub latency: LatencySummary,
    /// Who should have received what.
    pub delivery: Option<Delivery>,
    /// Deliveries expected from what was sent (when the scenario knows).
    pub expected: Option<u64>,
    /// Messages lost.
    pub lost: u64,
    /// Messages received more than once.
    pub duplicated: u64,
    /// Messages received after a later one of the same publisher.
    pub out_of_order: u64,
    /// IO and protocol errors after connecting.
    pub errors: u64,
    /// A few error messages.
    pub error_samples: Vec<String>,
    /// Broker memory, if `--broker-pid` was given.
    pub broker_memory: Option<BrokerMemory>,
    /// One point per second.
    pub timeline: Vec<TimelinePoint>,
    /// (percentile, µs) points of the latency distribution.
    pub percentile_curve: Vec<(f64, f64)>,
    /// The process exit code this report leads to.
    pub exit_code: i32,
}

/// Formats a count with thousands separators.
pub fn thousands(value: f64) -> String {
    let rounded = value.round() as i64;
    let digits = rounded.unsigned_abs().to_string();
    let mut out = String::new();
    for (position, digit) in digits.chars().enumerate() {
        if position > 0 && (digits.len() - position).is_multiple_of(3) {
            out.push(',');
        }
        out.push(digit);
    }
    if rounded < 0 {
        out.insert(0, '-');
    }
    out
}

/// Formats microseconds with a unit that keeps 3 significant figures readable.
pub fn micros(value: f64) -> String {
    if value >= 1_000_000.0 {
        format!("{:.2}s", value / 1_000_000.0)
    } else if value >= 1_000.0 {
        format!("{:.2}ms", value / 1_000.0)
    } else {
        format!("{value:.0}µs")
    }
}

/// The human-readable table.
pub fn table(report: &Report) -> String {
    let mut out = String::new();
    let version = match report.mqtt_version {
        3 => "3.1",
        4 => "3.1.1",
        _ => "5",
    };
    let transport = if report.transport.is_empty() {
        String::new()
    } else {
        format!(" over {}", report.transport)
    };
    let _ = writeln!(
        out,
        "ringmq-loadgen {} → {} (MQTT {version}{transport}), {} thread(s)",
        report.scenario, report.broker, report.threads
    );
    if let Some(session) = &report.tls_session {
        let _ = writeln!(
            out,
            "  tls           {session}; {} of {} connections resumed, the others full handshakes",
            thousands(report.tls_resumed.unwrap_or(0) as f64),
            thousands(report.connections_ok as f64)
        );
    }
    if report.publishers + report.subscribers > 0 {
        let _ = writeln!(
            out,
            "  shape         {} pub → {} sub, QoS {}→{}, {} B payload, {:.1} s measured",
            report.publishers,
            report.subscribers,
            report.qos,
            report.sub_qos,
            report.payload_bytes,
            report.measured_seconds
        );
    }
    let _ = writeln!(
        out,
        "  connections   {} ok, {} failed, {} conn/s",
        thousands(report.connections_ok as f64),
        thousands(report.connections_failed as f64),
        thousands(report.connect_rate_per_s)
    );
    if report.publishers + report.subscribers > 0 {
        let _ = writeln!(
            out,
            "  throughput    in {} msg/s   out {} msg/s   acked {} msg/s",
            thousands(report.sent_per_s),
            thousands(report.received_per_s),
            thousands(report.acked_per_s)
        );
    }
    if let Some(kind) = report.latency_kind {
        let latency = &report.latency;
        if latency.count > 0 {
            let _ = writeln!(
                out,
                "  latency       {}: p50 {}  p90 {}  p99 {}  p99.9 {}  max {}  (n={})",
                kind.label(),
                micros(latency.p50_us),
                micros(latency.p90_us),
                micros(latency.p99_us),
                micros(latency.p999_us),
                micros(latency.max_us),
                thousands(latency.count as f64)
            );
        } else {
            let _ = writeln!(out, "  latency       {}: no samples", kind.label());
        }
    }
    if report.subscribers > 0 {
        let expected = report
            .expected
            .map_or_else(|| "?".to_owned(), |value| thousands(value as f64));
        let _ = writeln!(
            out,
            "  delivery      sent {}  expected {expected}  received {}  lost {}  duplicated {}  out of order {}",
            thousands(report.sent_total as f64),
            thousands(report.received_total as f64),
            thousands(report.lost as f64),
            thousands(report.duplicated as f64),
            thousands(report.out_of_order as f64)
        );
    }
    if let Some(memory) = &report.broker_memory {
        let _ = writeln!(
            out,
            "  broker RSS    {} → {} KiB: {} B per connection",
            thousands(memory.rss_before_bytes as f64 / 1024.0),
            thousands(memory.rss_after_bytes as f64 / 1024.0),
            thousands(memory.bytes_per_connection)
        );
    }
    let _ = writeln!(out, "  errors        {}", thousands(report.errors as f64));
    for sample in &report.error_samples {
        let _ = writeln!(out, "    {sample}");
    }
    out
}

/// The HTML page: the table, a latency percentile curve and throughput over time, as inline SVG.
pub fn html(report: &Report) -> String {
    let mut out = String::new();
    out.push_str("<!doctype html><html><head><meta charset=\"utf-8\"><title>ringmq-loadgen ");
    out.push_str(&escape(&report.scenario));
    out.push_str("</title><style>body{font-family:sans-serif;margin:2em;max-width:60em}pre{background:#f4f4f4;padding:1em}svg{background:#fff;border:1px solid #ccc;margin:1em 0}</style></head><body>");
    let _ = write!(out, "<h1>ringmq-loadgen {}</h1>", escape(&report.scenario));
    let _ = write!(out, "<pre>{}</pre>", escape(&table(report)));
    if !report.percentile_curve.is_empty() {
        out.push_str("<h2>Latency by percentile</h2>");
        // x: number of nines (0 = p0, 1 = p90, 2 = p99 ...), so the tail gets the room.
        let points: Vec<(f64, f64)> = report
            .percentile_curve
            .iter()
            .map(|&(percentile, us)| {
                let nines = if percentile >= 100.0 {
                    5.2
                } else {
                    -(1.0 - percentile / 100.0).log10()
                };
                (nines, us)
            })
            .collect();
        let ticks = [
            (0.0, "p0"),
            (1.0, "p90"),
            (2.0, "p99"),
            (3.0, "p99.9"),
            (4.0, "p99.99"),
            (5.0, "p99.999"),
        ];
        out.push_str(&svg_chart(
            &[("latency µs", "#c0392b", &points)],
            &ticks,
            "µs",
        ));
    }
    if !report.timeline.is_empty() {
        out.push_str("<h2>Throughput over time</h2>");
        let sent: Vec<(f64, f64)> = report
            .timeline
            .iter()
            .map(|p| (p.t_s, p.sent_per_s))
            .collect();
        let received: Vec<(f64, f64)> = report
            .timeline
            .iter()
            .map(|p| (p.t_s, p.received_per_s))
            .collect();
        let last = report.timeline.last().map_or(1.0, |p| p.t_s);
        let first = report.timeline.first().map_or(0.0, |p| p.t_s);
        let step = ((last - first) / 6.0).max(1.0).ceil();
        let mut labels = Vec::new();
        let mut t = first.ceil();
        while t <= last {
            labels.push((t, format!("{t:.0}s")));
            t += step;
        }
        let ticks: Vec<(f64, &str)> = labels.iter().map(|(t, l)| (*t, l.as_str())).collect();
        out.push_str(&svg_chart(
            &[
                ("sent/s", "#2471a3", &sent),
                ("received/s", "#27ae60", &received),
            ],
            &ticks,
            "msg/s",
        ));
    }
    out.push_str("</body></html>\n");
    out
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// One line of a chart: name, colour, (x, y) points.
type Series<'a> = (&'a str, &'a str, &'a [(f64, f64)]);

/// A line chart; `x_ticks` label the x axis.
fn svg_chart(series: &[Series<'_>], x_ticks: &[(f64, &str)], unit: &str) -> String {
    const WIDTH: f64 = 800.0;
    const HEIGHT: f64 = 320.0;
    const LEFT: f64 = 80.0;
    const BOTTOM: f64 = 30.0;
    const TOP: f64 = 20.0;
    let all = series.iter().flat_map(|(_, _, points)| points.iter());
    let (mut x_min, mut x_max, mut y_max) = (f64::MAX, f64::MIN, 0.0f64);
    for &(x, y) in all {
        x_min = x_min.min(x);
        x_max = x_max.max(x);
        y_max = y_max.max(y);
    }
    if x_max <= x_min {
        x_max = x_min + 1.0;
    }
    if y_max <= 0.0 {
        y_max = 1.0;
    }
    let y_max = y_max * 1.05;
    let x_of = |x: f64| LEFT + (x - x_min) / (x_max - x_min) * (WIDTH - LEFT - 10.0);
    let y_of = |y: f64| TOP + (1.0 - y / y_max) * (HEIGHT - TOP - BOTTOM);
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{HEIGHT}\" font-size=\"11\">"
    );
    for step in 0..=4 {
        let value = y_max * step as f64 / 4.0;
        let y = y_of(value);
        let _ = write!(
            svg,
            "<line x1=\"{LEFT}\" x2=\"{}\" y1=\"{y:.1}\" y2=\"{y:.1}\" stroke=\"#eee\"/><text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{} {unit}</text>",
            WIDTH - 10.0,
            LEFT - 4.0,
            y + 4.0,
            thousands(value)
        );
    }
    for &(x, label) in x_ticks {
        if x < x_min || x > x_max {
            continue;
        }
        let _ = write!(
            svg,
            "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">{}</text>",
            x_of(x),
            HEIGHT - 10.0,
            escape(label)
        );
    }
    for (index, (name, colour, points)) in series.iter().enumerate() {
        let path: Vec<String> = points
            .iter()
            .map(|&(x, y)| format!("{:.1},{:.1}", x_of(x), y_of(y)))
            .collect();
        let _ = write!(
            svg,
            "<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"2\" points=\"{}\"/><text x=\"{}\" y=\"{}\" fill=\"{colour}\">{}</text>",
            path.join(" "),
            LEFT + 10.0 + 120.0 * index as f64,
            TOP - 5.0,
            escape(name)
        );
    }
    svg.push_str("</svg>");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_numbers() {
        assert_eq!(thousands(1234567.4), "1,234,567");
        assert_eq!(thousands(999.0), "999");
        assert_eq!(thousands(-1000.0), "-1,000");
        assert_eq!(micros(12.3), "12µs");
        assert_eq!(micros(1500.0), "1.50ms");
    }

    #[test]
    fn html_has_both_charts() {
        let report = Report {
            scenario: "fanin".to_owned(),
            publishers: 1,
            subscribers: 1,
            percentile_curve: vec![(0.0, 10.0), (90.0, 20.0), (99.0, 50.0), (100.0, 80.0)],
            timeline: vec![
                TimelinePoint {
                    t_s: 0.0,
                    sent_per_s: 10.0,
                    ..TimelinePoint::default()
                },
                TimelinePoint {
                    t_s: 1.0,
                    sent_per_s: 20.0,
                    ..TimelinePoint::default()
                },
            ],
            ..Report::default()
        };
        let page = html(&report);
        assert_eq!(page.matches("<svg").count(), 2);
        assert!(page.contains("polyline"));
    }
}
