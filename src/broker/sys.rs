//! `$SYS/broker/…` statistics, published by shard 0 every `sys_interval_secs`.
//!
//! The broker-wide figures go to the `default` org only (the operator's own; a single-tenant
//! install has no other), retained as usual. Every other org with a connected client gets its
//! own figures in its own scope, so `$SYS/#` shows a tenant nothing of the others: its connected
//! clients and the messages its clients published and received since the broker started. They
//! are not retained (a tenant's `$SYS` costs it no retained memory and never goes stale); a
//! subscriber gets them at the next interval.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use super::control::{ControlHandle, OrgCounters};
use super::shard::Shard;
use super::stats::Totals;
use crate::control::snapshot::OrgNum;
use crate::message::Message;
use crate::mqtt::{PublishProperties, QoS, Str};

/// Orgs given their own figures per interval at most (each costs a few messages); when more
/// have clients, the next interval goes on after the last one served.
const ORGS_PER_ROUND_MAX: usize = 4096;

/// Publishes the statistics topics through the normal routing path. `cursor` keeps the place
/// among the orgs between calls.
pub fn publish(
    shard: &mut Shard,
    totals: &Totals,
    control: &ControlHandle,
    cursor: &mut OrgNum,
    started: Instant,
    now: Instant,
) {
    let uptime = now.duration_since(started).as_secs();
    let entries: [(&'static str, String); 9] = [
        ("$SYS/broker/version", version()),
        ("$SYS/broker/uptime", format!("{uptime} seconds")),
        (
            "$SYS/broker/clients/connected",
            totals.clients_connected.to_string(),
        ),
        ("$SYS/broker/sessions/count", totals.sessions.to_string()),
        (
            "$SYS/broker/messages/received",
            totals.messages_received.to_string(),
        ),
        (
            "$SYS/broker/messages/sent",
            totals.messages_sent.to_string(),
        ),
        (
            "$SYS/broker/messages/dropped",
            totals.messages_dropped.to_string(),
        ),
        (
            "$SYS/broker/subscriptions/count",
            totals.subscriptions.to_string(),
        ),
        (
            "$SYS/broker/retained messages/count",
            totals.retained.to_string(),
        ),
    ];
    for (topic, value) in entries {
        send(shard, Str::from_static(topic), value, true, now);
    }

    let active: Vec<(OrgNum, OrgCounters)> = control
        .totals()
        .into_iter()
        .filter(|(org, counters)| {
            *org != 0 && counters.connections > 0 && shard.snapshot.org(*org).is_some()
        })
        .collect();
    for (org, counters) in next_round(active, cursor) {
        let scope = ringmq_router::org_scope(org);
        for (topic, value) in org_entries(&counters, uptime) {
            let topic = Str::from(ringmq_router::scoped(&scope, topic));
            send(shard, topic, value, false, now);
        }
    }
}

fn version() -> String {
    format!("ringmq {}", env!("CARGO_PKG_VERSION"))
}

/// What an org other than `default` sees under `$SYS/broker/`: its own figures only.
fn org_entries(counters: &OrgCounters, uptime: u64) -> [(&'static str, String); 5] {
    [
        ("$SYS/broker/version", version()),
        ("$SYS/broker/uptime", format!("{uptime} seconds")),
        (
            "$SYS/broker/clients/connected",
            counters.connections.to_string(),
        ),
        (
            "$SYS/broker/messages/received",
            counters.messages_in.to_string(),
        ),
        (
            "$SYS/broker/messages/sent",
            counters.messages_out.to_string(),
        ),
    ]
}

/// The orgs served this interval: at most [`ORGS_PER_ROUND_MAX`], in org order from the one
/// after `cursor`, wrapping around; `cursor` moves on to the last one served (0 when all fit).
fn next_round<T>(mut orgs: Vec<(OrgNum, T)>, cursor: &mut OrgNum) -> Vec<(OrgNum, T)> {
    if orgs.len() <= ORGS_PER_ROUND_MAX {
        *cursor = 0;
        return orgs;
    }
    orgs.sort_unstable_by_key(|(org, _)| *org);
    let start = orgs.partition_point(|(org, _)| *org <= *cursor);
    orgs.rotate_left(start);
    orgs.truncate(ORGS_PER_ROUND_MAX);
    *cursor = orgs.last().map_or(0, |(org, _)| *org);
    orgs
}

fn send(shard: &mut Shard, topic: Str, value: String, retain: bool, now: Instant) {
    let message = Message {
        topic,
        payload: Bytes::from(value),
        qos: QoS::AtMostOnce,
        retain,
        properties: PublishProperties::default(),
        expires_at: None,
        publisher: Str::from_static("$SYS"),
        origin: crate::message::Origin::BROKER,
        namespace: None,
        device: None,
    };
    shard.publish(Arc::new(message), now);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tenant_sees_only_its_own_figures() {
        let counters = OrgCounters {
            connections: 2,
            messages_in: 5,
            messages_out: 7,
            rest_publishes: 1,
        };
        let entries = org_entries(&counters, 30);
        let value = |topic: &str| {
            entries
                .iter()
                .find(|(t, _)| *t == topic)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(value("$SYS/broker/clients/connected"), Some("2"));
        assert_eq!(value("$SYS/broker/messages/received"), Some("5"));
        assert_eq!(value("$SYS/broker/messages/sent"), Some("7"));
        // Figures only the whole broker has are not shown to a tenant.
        assert_eq!(value("$SYS/broker/sessions/count"), None);
        assert_eq!(value("$SYS/broker/subscriptions/count"), None);
    }

    #[test]
    fn rounds_serve_every_org_in_turn_within_the_bound() {
        let mut cursor = 0;
        let few: Vec<(OrgNum, ())> = vec![(3, ()), (1, ())];
        assert_eq!(next_round(few, &mut cursor).len(), 2);
        assert_eq!(cursor, 0);

        let total = ORGS_PER_ROUND_MAX + 10;
        let many = || {
            (1..=total as OrgNum)
                .rev()
                .map(|org| (org, ()))
                .collect::<Vec<_>>()
        };
        let first = next_round(many(), &mut cursor);
        assert_eq!(first.len(), ORGS_PER_ROUND_MAX);
        assert_eq!(first[0].0, 1);
        assert_eq!(cursor, ORGS_PER_ROUND_MAX as OrgNum);
        let second = next_round(many(), &mut cursor);
        assert_eq!(second[0].0, ORGS_PER_ROUND_MAX as OrgNum + 1);
        assert_eq!(second[9].0, total as OrgNum);
        assert_eq!(second[10].0, 1, "wraps around");
    }
}
