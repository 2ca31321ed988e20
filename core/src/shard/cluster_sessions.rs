//! Persistent sessions moving between the nodes of a cluster: a CONNECT without clean start
//! of a client id whose session is on another node takes the session along.
//!
//! At the client id's home shard a claim for which this node holds no session is parked and
//! the bridge asked ([`Output::ClusterFetch`]); the bridge asks the node the cluster's
//! registry names, whose shards answer [`Input::ClusterGiveUp`]: the one holding the session
//! ends its connection (v5 DISCONNECT 0x8E), encodes the session as its log would (the durable
//! codec's session record: subscriptions, queued and in-flight messages, QoS 2 receipts, a
//! pending will) and ends it there ([`Output::ClusterSessionOut`]). The record comes back as
//! [`Input::ClusterAdopt`]: the home shard seats it offline, announcing its subscriptions,
//! and the parked claim goes on as any claim of a session held on this node (taken over in
//! place, or moved to the connection's shard). Without an answer (no such session, the other
//! node gone, a timeout in the bridge) the claim goes on without one: a new session, and the
//! CONNACK says so.
//!
//! [`Output::ClusterFetch`]: super::Output::ClusterFetch
//! [`Output::ClusterSessionOut`]: super::Output::ClusterSessionOut
//! [`Input::ClusterGiveUp`]: super::Input::ClusterGiveUp
//! [`Input::ClusterAdopt`]: super::Input::ClusterAdopt

use std::time::Instant;

use ringmq_proto::mqtt::Str;

use super::durability::session_view;
use super::{Output, Shard};
use crate::durable::{encode_session, SessionRecord};

/// A claim waiting for the cluster's answer.
#[derive(Debug)]
pub(super) struct ParkedClaim {
    client_id: Str,
    shard: u16,
    owner: u64,
}

/// The largest session record that moves (NATS carries at most 1 MiB per message by
/// default): a larger session stays here, offline, until it expires, and the other node's
/// connection starts a new one (its CONNACK says so) rather than lose this one.
pub const RECORD_MAX: usize = 900 * 1024;

/// Claims parked at most per shard; past it a claim goes on without asking the cluster (a new
/// session), so a connect storm cannot make a shard hold without bound.
pub const PARKED_MAX: usize = 65_536;

impl Shard {
    /// Parks the claim of `token` and asks the cluster for the session of `client_id`.
    pub(super) fn fetch_from_cluster(
        &mut self,
        client_id: Str,
        shard: u16,
        token: u64,
        owner: u64,
    ) {
        if self.parked.len() >= PARKED_MAX {
            self.claim(client_id, shard, token, false, owner);
            return;
        }
        self.parked.insert(
            token,
            ParkedClaim {
                client_id: client_id.clone(),
                shard,
                owner,
            },
        );
        self.outputs.push_back(Output::ClusterFetch {
            client_id,
            token,
            home: self.id,
        });
    }

    /// The cluster's answer to the fetch for the claim of `token`: the session record, if
    /// another node had one.
    pub fn adopt_from_cluster(
        &mut self,
        token: u64,
        record: Option<Box<SessionRecord>>,
        now: Instant,
    ) {
        let Some(parked) = self.parked.remove(&token) else {
            return;
        };
        if let Some(record) = record {
            // A record for another id, or one arriving after this node got a session of the
            // id meanwhile (a claim that did not wait), is not taken.
            if record.client_id == parked.client_id && !self.owners.contains_key(&record.client_id)
            {
                let expiry =
                    std::time::Duration::from_secs(u64::from(record.state.expiry_interval_secs));
                if expiry > std::time::Duration::ZERO {
                    tracing::debug!(client_id = %record.client_id, "session taken from another node");
                    self.restore_session(&record, now, now, true);
                }
            }
        }
        self.claim(parked.client_id, parked.shard, token, false, parked.owner);
    }

    /// Another node takes the client id's session: if this shard holds it, its connection
    /// ends (0x8E) and the session leaves as a record (`None`: not here).
    pub fn give_up_to_cluster(&mut self, client_id: &Str, request: u64, now: Instant) {
        let record = self.give_up(client_id, now);
        self.outputs
            .push_back(Output::ClusterSessionOut { request, record });
    }

    fn give_up(&mut self, client_id: &Str, now: Instant) -> Option<Vec<u8>> {
        let slot = self.by_client_id.get(&self.entries, client_id.as_bytes())?;
        let clock = self.wall_clock();
        let entry = self.entries.get(slot)?;
        // A session that ends with its connection has nothing to move.
        let record = (entry.session.state.expiry_interval_secs > 0).then(|| {
            let mut out = Vec::new();
            let version = clock.unix_nanos(now);
            encode_session(&session_view(entry, version, now, &clock), &clock, &mut out);
            out
        });
        let too_big = record.as_ref().is_some_and(|r| r.len() > RECORD_MAX);
        // Its will moves with the session (due at its delay there, or cancelled by the
        // connection that takes it): not published here.
        self.end_for_another_node(slot, false, now);
        if too_big {
            tracing::warn!(%client_id, "session too large to move to another node; it stays here until it expires");
            return None;
        }
        if let Some(entry) = self.entries.get_mut(slot) {
            entry.pending_will = None;
            self.end_session(slot, now);
        }
        record
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use ringmq_proto::mqtt::QoS;

    use super::super::tests::{clustered, connect, outputs, pump, shard, subscribe, v5_connect};
    use super::super::{Input, Output};
    use super::*;
    use crate::durable::Record;
    use crate::test_util::test_message;

    /// A session handed over by one node's shard is seated by another node's home shard with
    /// its subscriptions and queued messages, and the parked claim resumes it.
    #[test]
    fn a_session_moves_between_nodes() {
        let now = Instant::now();
        // Node A: a persistent session with a subscription and a queued QoS 1 message.
        let mut a = clustered(shard(2));
        let (slot, _) = connect(&mut a[1], "dev", v5_connect("dev", 0, 600), now);
        subscribe(&mut a[1], slot, "t/#", now);
        pump(&mut a, now);
        a[1].end_connection(slot, None, false, now);
        a[0].publish(test_message("t/1", b"queued", QoS::AtLeastOnce, false), now);
        pump(&mut a, now);
        let client_id = a[1]
            .entry_mut(slot)
            .expect("kept")
            .session
            .client_id
            .clone();
        // Asked by the cluster: every shard answers, only the holder with a record.
        a[0].handle(
            Input::ClusterGiveUp {
                client_id: client_id.clone(),
                request: 9,
            },
            now,
        );
        a[1].handle(
            Input::ClusterGiveUp {
                client_id: client_id.clone(),
                request: 9,
            },
            now,
        );
        let answer = |s: &mut Shard| {
            outputs(s).into_iter().find_map(|o| match o {
                Output::ClusterSessionOut { request, record } => Some((request, record)),
                _ => None,
            })
        };
        assert_eq!(answer(&mut a[0]), Some((9, None)));
        let (_, record) = answer(&mut a[1]).expect("an answer");
        let record = record.expect("the session");
        assert!(a[1].entry_mut(slot).is_none(), "gone from node A");
        let Ok(Record::Session(record)) = Record::decode(&record, &a[1].wall_clock()) else {
            panic!("a session record");
        };
        assert_eq!(record.state.queue.len(), 1);
        // Node B: the claim of a CONNECT without clean start is parked and fetched.
        let mut b = clustered(shard(2));
        let home = b[0].home_of(&client_id) as usize;
        let token = b[1].begin_connect(client_id.clone(), false, record.state.owner);
        pump(&mut b, now);
        let fetch = outputs(&mut b[home]).into_iter().find_map(|o| match o {
            Output::ClusterFetch { token, home, .. } => Some((token, home)),
            _ => None,
        });
        assert_eq!(fetch, Some((token, home as u16)));
        b[home].handle(
            Input::ClusterAdopt {
                token,
                record: Some(record),
            },
            now,
        );
        pump(&mut b, now);
        let granted = b[1].pending.get(&token).is_some_and(|p| p.grant.is_some());
        assert!(granted, "the parked claim went on");
        // The adopted session's subscription is in every shard's index.
        for s in &b {
            assert_ne!(
                s.replica
                    .index
                    .matching_shards(&record_topic(&client_id, "t/2")),
                0
            );
        }
    }

    /// Asked for a session it does not hold, a node's claim goes on with a new one; a clean
    /// start never asks.
    #[test]
    fn without_an_answer_the_claim_goes_on() {
        let now = Instant::now();
        let mut b = clustered(shard(1));
        let token = b[0].begin_connect(Str::from("x"), false, 0);
        pump(&mut b, now);
        assert!(
            b[0].pending.get(&token).is_some_and(|p| p.grant.is_none()),
            "parked"
        );
        b[0].handle(
            Input::ClusterAdopt {
                token,
                record: None,
            },
            now,
        );
        pump(&mut b, now);
        assert!(b[0].pending.get(&token).is_some_and(|p| p.grant.is_some()));
        let clean = b[0].begin_connect(Str::from("y"), true, 0);
        pump(&mut b, now);
        assert!(b[0].pending.get(&clean).is_some_and(|p| p.grant.is_some()));
        assert!(!outputs(&mut b[0])
            .iter()
            .any(|o| matches!(o, Output::ClusterFetch { token: t, .. } if *t == clean)));
    }

    /// The topic `t` in the org scope of `client_id`.
    fn record_topic(client_id: &str, topic: &str) -> String {
        let (org, _) = ringmq_router::strip_scope(client_id);
        ringmq_router::topic::scoped(&ringmq_router::topic::org_scope(org), topic)
    }
}
