//! What the broker promised, kept independently of the broker: who must receive what, in
//! which order, and who must never receive it. The world reports every publish, ack, receipt
//! and session change here; [`Oracle::final_check`] runs once the system is quiet.

use std::collections::{BTreeMap, BTreeSet};

/// A message the simulation published: (publisher, connection incarnation, sequence number).
pub type MsgId = (usize, u64, u64);

/// A broken promise: what, and a line saying which.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The promise's short name.
    pub promise: &'static str,
    /// What was seen.
    pub detail: String,
}

/// Does MQTT filter `filter` match `topic`? Written here from the spec (4.7), not taken from
/// the broker's router, so the oracle does not share its bugs.
pub fn matches(filter: &str, topic: &str) -> bool {
    if topic.starts_with('$') && !filter.starts_with('$') {
        return false;
    }
    let mut f = filter.split('/');
    let mut t = topic.split('/');
    loop {
        match (f.next(), t.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// `$share/{group}/{filter}` split into its group and filter.
pub fn shared(filter: &str) -> Option<(&str, &str)> {
    let rest = filter.strip_prefix("$share/")?;
    rest.split_once('/')
}

/// A subscriber that must get a message unless its session or subscription changed since.
#[derive(Debug, Clone)]
struct Due {
    client: usize,
    /// The filter it was due through.
    filter: String,
    session_epoch: u64,
    sub_epoch: u64,
}

/// A shared group that must get a message (one member, exactly).
#[derive(Debug, Clone)]
struct GroupDue {
    key: (u32, String),
    /// The members then, with their session and subscription epochs.
    members: Vec<Due>,
}

/// A published message and what it obliges.
#[derive(Debug)]
struct Published {
    topic: String,
    /// Receivers due once the publisher has its acknowledgement.
    due: Vec<Due>,
    groups: Vec<GroupDue>,
    acked: bool,
    step: u64,
}

/// The promises' bookkeeping.
#[derive(Debug, Default)]
pub struct Oracle {
    published: BTreeMap<MsgId, Published>,
    /// (receiver, message): every receipt, duplicates included once.
    received: BTreeSet<(usize, MsgId)>,
    /// Highest first-seen sequence per (receiver, publisher, incarnation, topic, delivered QoS):
    /// MQTT orders each topic (4.6, "Ordered Topic"); across topics a session moving between
    /// shards may see two publishers' routes settle at different times.
    order: BTreeMap<(usize, usize, u64, String, u8), u64>,
    /// Receivers of each message through each shared group.
    group_receipts: BTreeMap<(MsgId, u32, String), BTreeSet<usize>>,
    /// Per client: bumped whenever its session ends (its queue and subscriptions go).
    pub session_epoch: Vec<u64>,
    /// Per (client, filter): bumped on every unsubscribe.
    sub_epoch: BTreeMap<(usize, String), u64>,
    /// Violations found so far.
    pub violations: Vec<Violation>,
    /// Messages acknowledged to their publishers.
    pub acked: u64,
    /// Receipts checked.
    pub receipts: u64,
}

/// One acknowledged subscription of a client, as the world tells the oracle at a publish.
#[derive(Debug, Clone)]
pub struct LiveSub {
    /// The subscriber.
    pub client: usize,
    /// Its org.
    pub org: u32,
    /// The filter as subscribed (with `$share/g/` for shared ones).
    pub filter: String,
    /// Granted QoS.
    pub qos: u8,
    /// Its SUBSCRIBE or an UNSUBSCRIBE is not acknowledged yet: the broker may or may not
    /// route by it.
    pub uncertain: bool,
}

impl Oracle {
    /// An oracle for `clients` clients.
    pub fn new(clients: usize) -> Oracle {
        Oracle {
            session_epoch: vec![0; clients],
            ..Default::default()
        }
    }

    /// Client `client`'s session ended: nothing queued for it is owed any more.
    pub fn session_ended(&mut self, client: usize) {
        self.session_epoch[client] += 1;
    }

    /// Client `client` unsubscribed from `filter` (or lost it some other way).
    pub fn unsubscribed(&mut self, client: usize, filter: &str) {
        *self
            .sub_epoch
            .entry((client, filter.to_owned()))
            .or_insert(0) += 1;
    }

    fn due(&self, client: usize, filter: &str) -> Due {
        Due {
            client,
            filter: filter.to_owned(),
            session_epoch: self.session_epoch[client],
            sub_epoch: self
                .sub_epoch
                .get(&(client, filter.to_owned()))
                .copied()
                .unwrap_or(0),
        }
    }

    /// The session and the subscription it was due through both lived on.
    fn still_due(&self, due: &Due) -> bool {
        let now = self.due(due.client, &due.filter);
        now.session_epoch == due.session_epoch && now.sub_epoch == due.sub_epoch
    }

    /// A client sent a PUBLISH of `id` on `topic` at `qos` in org `org`; `subs` are the
    /// subscriptions acknowledged before it was sent. `authorized`: the publisher may publish there.
    #[allow(clippy::too_many_arguments)]
    pub fn published(
        &mut self,
        id: MsgId,
        org: u32,
        topic: &str,
        qos: u8,
        authorized: bool,
        subs: &[LiveSub],
        step: u64,
    ) {
        let mut due = Vec::new();
        // Per group: its members then, and whether each one is sure to get a QoS 1/2 copy (a
        // group delivers to any member; a QoS 0 member or one still subscribing may be picked
        // and then lose it by the QoS 0 rules, so such a group owes nothing).
        let mut groups: BTreeMap<(u32, String), (Vec<Due>, bool)> = BTreeMap::new();
        if authorized && qos > 0 {
            for sub in subs.iter().filter(|s| s.org == org) {
                match shared(&sub.filter) {
                    Some((group, filter)) if matches(filter, topic) => {
                        let entry = groups
                            .entry((org, group.to_owned()))
                            .or_insert((Vec::new(), true));
                        entry.0.push(self.due(sub.client, &sub.filter));
                        entry.1 &= sub.qos > 0 && !sub.uncertain;
                    }
                    Some(_) => {}
                    None if sub.qos > 0 && !sub.uncertain && matches(&sub.filter, topic) => {
                        due.push(self.due(sub.client, &sub.filter));
                    }
                    None => {}
                }
            }
        }
        let groups = groups
            .into_iter()
            .filter(|(_, (_, sure))| *sure)
            .map(|(key, (members, _))| GroupDue { key, members })
            .collect();
        self.published.insert(
            id,
            Published {
                topic: topic.to_owned(),
                due,
                groups,
                acked: false,
                step,
            },
        );
    }

    /// The publisher got its PUBACK (QoS 1) or PUBREC (QoS 2) with success.
    pub fn acknowledged(&mut self, id: MsgId) {
        if let Some(p) = self.published.get_mut(&id) {
            if !p.acked {
                p.acked = true;
                self.acked += 1;
            }
        }
    }

    /// `client` (of `org`, allowed `secret/` when `admin`) received message `id` published in
    /// `from_org` on `topic` at delivered QoS `qos`; `retained`: sent as a retained message;
    /// `group`: the shared group it came through, if any.
    #[allow(clippy::too_many_arguments)]
    pub fn received(
        &mut self,
        client: usize,
        org: u32,
        admin: bool,
        id: MsgId,
        from_org: u32,
        topic: &str,
        qos: u8,
        retained: bool,
        group: Option<&str>,
        subscribed_ever: bool,
    ) {
        self.receipts += 1;
        if from_org != org {
            self.violate(
                "org isolation",
                format!("client {client} of org {org} got {id:?} from org {from_org} on {topic}"),
            );
        }
        if topic.starts_with("secret/") && !admin {
            self.violate(
                "acl",
                format!("client {client} may not read secret/ but got {id:?} on {topic}"),
            );
        }
        if !subscribed_ever {
            self.violate(
                "routing",
                format!("client {client} got {id:?} on {topic}, which no filter of its matches"),
            );
        }
        if let Some(p) = self.published.get(&id) {
            if p.topic != topic {
                self.violate(
                    "routing",
                    format!("{id:?} was published on {} but arrived on {topic}", p.topic),
                );
            }
        }
        let first = self.received.insert((client, id));
        if !first || retained {
            return;
        }
        if let Some(group) = group {
            self.group_receipt(client, org, id, group);
            // Not ordered: a member leaving a shard makes the broker pass that shard's messages
            // on to another member shard, behind later ones (docs/simulator.md).
            return;
        }
        let key = (client, id.0, id.1, topic.to_owned(), qos);
        let last = self.order.entry(key).or_insert(0);
        if id.2 < *last {
            let last = *last;
            self.violate(
                "per-publisher order",
                format!(
                    "client {client} got {id:?} on {topic} (QoS {qos}) after sequence {last} of the same publisher there"
                ),
            );
        } else {
            *last = id.2;
        }
    }

    fn group_receipt(&mut self, client: usize, org: u32, id: MsgId, group: &str) {
        let receivers = self
            .group_receipts
            .entry((id, org, group.to_owned()))
            .or_default();
        receivers.insert(client);
        if receivers.len() > 1 {
            let receivers = receivers.clone();
            self.violate(
                "one delivery per shared group",
                format!("{id:?} reached {receivers:?} through group {group}"),
            );
        }
    }

    /// Records a violation found by the world itself.
    pub fn violate(&mut self, promise: &'static str, detail: String) {
        self.violations.push(Violation { promise, detail });
    }

    /// After the quiet phase: every acknowledged QoS 1/2 message reached every subscriber
    /// (and one member of every shared group) whose session and subscription lived on.
    pub fn final_check(&mut self, sub_filters: &dyn Fn(usize) -> Vec<String>) {
        let mut found = Vec::new();
        for (id, p) in &self.published {
            if !p.acked {
                continue;
            }
            // Per client, the filters it was owed the message through.
            let mut owed: BTreeMap<usize, Vec<&str>> = BTreeMap::new();
            for due in &p.due {
                if sub_filters(due.client).contains(&due.filter) && self.still_due(due) {
                    owed.entry(due.client).or_default().push(&due.filter);
                }
            }
            for (client, filters) in owed {
                if !self.received.contains(&(client, *id)) {
                    found.push(Violation {
                        promise: "no acknowledged message lost",
                        detail: format!(
                            "{id:?} on {} (step {}) never reached client {client}, whose session and subscription ({}) lived on",
                            p.topic, p.step, filters.join(", ")
                        ),
                    });
                }
            }
            for group in &p.groups {
                let undisturbed = group
                    .members
                    .iter()
                    .all(|m| sub_filters(m.client).contains(&m.filter) && self.still_due(m));
                let got = self
                    .group_receipts
                    .get(&(*id, group.key.0, group.key.1.clone()))
                    .map_or(0, BTreeSet::len);
                if undisturbed && got == 0 {
                    found.push(Violation {
                        promise: "one delivery per shared group",
                        detail: format!(
                            "{id:?} on {} (step {}) reached no member of group {} (members then: {:?})",
                            p.topic,
                            p.step,
                            group.key.1,
                            group.members.iter().map(|m| m.client).collect::<Vec<_>>()
                        ),
                    });
                }
            }
        }
        self.violations.extend(found);
    }

    /// Messages published.
    pub fn published_count(&self) -> usize {
        self.published.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_match_as_the_spec_says() {
        assert!(matches("t/#", "t"));
        assert!(matches("t/#", "t/a/b"));
        assert!(matches("t/+", "t/a"));
        assert!(!matches("t/+", "t/a/b"));
        assert!(!matches("#", "$SYS/x"));
        assert!(matches("+/+", "/a"));
        assert!(!matches("t/a", "t/b"));
        assert_eq!(shared("$share/g/s/#"), Some(("g", "s/#")));
    }

    #[test]
    fn an_acknowledged_message_never_received_is_a_violation() {
        let mut o = Oracle::new(2);
        let sub = LiveSub {
            client: 1,
            org: 0,
            filter: "t/#".into(),
            qos: 1,
            uncertain: false,
        };
        o.published((0, 0, 1), 0, "t/a", 1, true, &[sub], 1);
        o.acknowledged((0, 0, 1));
        o.final_check(&|_| vec!["t/#".to_owned()]);
        assert_eq!(o.violations.len(), 1);
        // A session that ended owes nothing.
        let mut o = Oracle::new(2);
        let sub = LiveSub {
            client: 1,
            org: 0,
            filter: "t/#".into(),
            qos: 1,
            uncertain: false,
        };
        o.published((0, 0, 1), 0, "t/a", 1, true, &[sub], 1);
        o.acknowledged((0, 0, 1));
        o.session_ended(1);
        o.final_check(&|_| vec!["t/#".to_owned()]);
        assert!(o.violations.is_empty());
    }

    #[test]
    fn out_of_order_and_cross_org_receipts_are_violations() {
        let mut o = Oracle::new(2);
        o.received(1, 0, false, (0, 0, 2), 0, "t/a", 1, false, None, true);
        o.received(1, 0, false, (0, 0, 1), 0, "t/a", 1, false, None, true);
        o.received(1, 0, false, (0, 0, 3), 1, "t/a", 1, false, None, true);
        let promises: Vec<_> = o.violations.iter().map(|v| v.promise).collect();
        assert_eq!(promises, ["per-publisher order", "org isolation"]);
    }
}
