//! A simulated MQTT client: it speaks real MQTT bytes (the broker's codec encodes and decodes
//! them, but the client's choices and bookkeeping are its own) and reports to the oracle.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use ringmq_proto::mqtt::{
    decode_packet, encode_packet, Connect, Disconnect, Packet, ProtocolVersion, PubResp, Publish,
    QoS, ReasonCode, RetainHandling, Str, Subscribe, SubscribeFilter, SubscriptionOptions,
    Unsubscribe, Will,
};

use crate::oracle::{shared, MsgId, Oracle};
use crate::trace::Trace;

/// Who a client is, fixed for the run.
#[derive(Debug, Clone)]
pub struct Spec {
    /// Its org (0: the default org).
    pub org: u32,
    /// Its client id (unscoped).
    pub client_id: String,
    /// Its user name (with the org, the principal that owns its session).
    pub username: String,
    /// May publish and subscribe under `secret/`.
    pub admin: bool,
    /// MQTT version spoken.
    pub version: ProtocolVersion,
    /// Keeps a session across connections (clean start 0, long expiry).
    pub persistent: bool,
}

/// Session expiry a persistent v5 client asks for: longer than any run's simulated time.
pub const EXPIRY_SECS: u32 = 6 * 3600;

/// A client and what it believes of its connection and session.
#[derive(Debug)]
pub struct SimClient {
    /// Its index.
    pub index: usize,
    /// Who it is.
    pub spec: Spec,
    /// The world's connection it talks through, if any.
    pub conn: Option<usize>,
    /// CONNACK accepted on the current connection.
    pub connected: bool,
    /// Bumped on every connection: messages name (client, incarnation, sequence).
    pub incarnation: u64,
    /// Bytes from the broker not yet read.
    pub inbox: BytesMut,
    /// The broker must hold a session for this client (it has had one and nothing ended it).
    pub has_session: bool,
    /// When it last saw its connection end.
    pub disconnected_at: Option<Instant>,
    /// Asked clean start on the current connection.
    clean_start: bool,
    /// Reads nothing while set (a stuck consumer).
    pub stuck: bool,
    /// When it last sent anything (keep-alive).
    pub last_sent: Instant,
    /// Keep-alive asked on the current connection.
    pub keep_alive: u16,
    next_pid: u16,
    /// Acknowledged subscriptions: filter → granted QoS.
    pub subs: BTreeMap<String, u8>,
    /// Every filter it has ever subscribed to (a receipt must match one).
    pub ever: BTreeSet<String>,
    pending_subs: BTreeMap<u16, Vec<(String, u8)>>,
    pending_unsubs: BTreeMap<u16, Vec<String>>,
    /// Filters whose SUBSCRIBE or UNSUBSCRIBE went out on a connection that ended before its
    /// ack: the session may or may not hold them, until it ends.
    maybe_subs: BTreeSet<String>,
    outgoing: BTreeMap<u16, MsgId>,
    seq: u64,
}

/// What a client did, for the world's trace.
pub type Said = String;

impl SimClient {
    /// A disconnected client.
    pub fn new(index: usize, spec: Spec, now: Instant) -> SimClient {
        SimClient {
            index,
            spec,
            conn: None,
            connected: false,
            incarnation: 0,
            inbox: BytesMut::new(),
            has_session: false,
            disconnected_at: None,
            clean_start: true,
            stuck: false,
            last_sent: now,
            keep_alive: 0,
            next_pid: 0,
            subs: BTreeMap::new(),
            ever: BTreeSet::new(),
            pending_subs: BTreeMap::new(),
            pending_unsubs: BTreeMap::new(),
            maybe_subs: BTreeSet::new(),
            outgoing: BTreeMap::new(),
            seq: 0,
        }
    }

    fn pid(&mut self) -> u16 {
        self.next_pid = self.next_pid % u16::MAX + 1;
        self.next_pid
    }

    fn send(&mut self, out: &mut BytesMut, packet: &Packet, now: Instant) {
        self.last_sent = now;
        encode_packet(packet, self.spec.version, out).expect("the simulator encodes valid packets");
    }

    /// The CONNECT for a new connection; `clean`: clean start; `will`: leave a will.
    pub fn connect(
        &mut self,
        out: &mut BytesMut,
        clean: bool,
        keep_alive: u16,
        will: bool,
        now: Instant,
    ) -> Said {
        self.incarnation += 1;
        self.connected = false;
        self.clean_start = clean;
        self.keep_alive = keep_alive;
        self.inbox.clear();
        self.outgoing.clear();
        self.pending_subs.clear();
        self.pending_unsubs.clear();
        let v5 = self.spec.version == ProtocolVersion::V5;
        let mut connect = Connect {
            version: self.spec.version,
            clean_start: clean,
            keep_alive,
            client_id: Str::from(self.spec.client_id.as_str()),
            username: Some(Str::from(self.spec.username.as_str())),
            ..Default::default()
        };
        if v5 {
            connect.properties.session_expiry_interval =
                Some(if self.spec.persistent { EXPIRY_SECS } else { 0 });
        }
        if will {
            connect.will = Some(Will {
                topic: Str::from("t/will"),
                payload: Bytes::from(format!("will|{}|{}", self.spec.org, self.index)),
                qos: QoS::AtLeastOnce,
                retain: false,
                delay_interval: None,
                properties: Default::default(),
            });
        }
        self.send(out, &Packet::Connect(Box::new(connect)), now);
        format!(
            "c{} connect clean={clean} ka={keep_alive} will={will}",
            self.index
        )
    }

    /// SUBSCRIBE to `filter` at `qos`.
    pub fn subscribe(
        &mut self,
        out: &mut BytesMut,
        filter: &str,
        qos: u8,
        oracle: &mut Oracle,
        now: Instant,
    ) -> Said {
        let pid = self.pid();
        self.ever.insert(filter.to_owned());
        if self.subs.get(filter).is_some_and(|&held| qos < held) {
            // A lower QoS may apply to messages published just before it (the broker reads
            // connections in its own order within a round): what was owed at the old QoS is not.
            oracle.unsubscribed(self.index, filter);
        }
        self.pending_subs
            .insert(pid, vec![(filter.to_owned(), qos)]);
        let packet = Packet::Subscribe(Subscribe {
            packet_id: pid,
            filters: vec![SubscribeFilter {
                filter: Str::from(filter),
                options: SubscriptionOptions {
                    qos: qos_of(qos),
                    no_local: false,
                    retain_as_published: false,
                    retain_handling: RetainHandling::SendAtSubscribe,
                },
            }],
            subscription_identifier: None,
            user_properties: Vec::new(),
        });
        self.send(out, &packet, now);
        format!("c{} subscribe {filter} q{qos}", self.index)
    }

    /// UNSUBSCRIBE from `filter`: from now on nothing on it is owed.
    pub fn unsubscribe(
        &mut self,
        out: &mut BytesMut,
        filter: &str,
        oracle: &mut Oracle,
        now: Instant,
    ) -> Said {
        let pid = self.pid();
        self.subs.remove(filter);
        // A SUBACK still to come for an earlier SUBSCRIBE of it must not put it back.
        for asked in self.pending_subs.values_mut().flatten() {
            if asked.0 == filter {
                asked.0.clear();
            }
        }
        oracle.unsubscribed(self.index, filter);
        self.pending_unsubs.insert(pid, vec![filter.to_owned()]);
        let packet = Packet::Unsubscribe(Unsubscribe {
            packet_id: pid,
            filters: vec![Str::from(filter)],
            user_properties: Vec::new(),
        });
        self.send(out, &packet, now);
        format!("c{} unsubscribe {filter}", self.index)
    }

    /// PUBLISH the next message of this connection; returns its id and what was said.
    pub fn publish(
        &mut self,
        out: &mut BytesMut,
        topic: &str,
        qos: u8,
        retain: bool,
        now: Instant,
    ) -> (MsgId, Said) {
        self.seq += 1;
        let id = (self.index, self.incarnation, self.seq);
        let payload = format!("{}|{}|{}|{}", self.spec.org, id.0, id.1, id.2);
        let pid = if qos > 0 { self.pid() } else { 0 };
        if qos > 0 {
            self.outgoing.insert(pid, id);
        }
        let packet = Packet::Publish(Publish {
            dup: false,
            qos: qos_of(qos),
            retain,
            topic: Str::from(topic),
            packet_id: pid,
            payload: Bytes::from(payload),
            properties: Default::default(),
        });
        self.send(out, &packet, now);
        (
            id,
            format!("c{} publish {topic} q{qos} r={retain} {id:?}", self.index),
        )
    }

    /// PINGREQ.
    pub fn ping(&mut self, out: &mut BytesMut, now: Instant) {
        self.send(out, &Packet::PingReq, now);
    }

    /// DISCONNECT (v5 reason 0x04 keeps the will).
    pub fn disconnect(&mut self, out: &mut BytesMut, with_will: bool, now: Instant) -> Said {
        let reason = if with_will && self.spec.version == ProtocolVersion::V5 {
            ReasonCode(0x04)
        } else {
            ReasonCode::SUCCESS
        };
        let packet = Packet::Disconnect(Disconnect {
            reason,
            properties: Default::default(),
        });
        self.send(out, &packet, now);
        format!("c{} disconnect will={with_will}", self.index)
    }

    /// Its connection is gone (closed by either side): the session lives on only if it was
    /// persistent.
    pub fn connection_ended(&mut self, oracle: &mut Oracle, now: Instant) {
        self.conn = None;
        if self.connected && !self.outlives_connection() {
            self.end_session(oracle);
        }
        if !self.connected && self.clean_start && (self.has_session || !self.subs.is_empty()) {
            // A clean start whose CONNACK never came: the broker may or may not have discarded
            // the old session (a crash right after its CONNECT was read, found by ringmq-sim's
            // restarts). Nothing it was owed can be asked for, and its subscriptions may still
            // be in force (a shared group may pick it): uncertain until a CONNACK says.
            oracle.session_ended(self.index);
            self.has_session = false;
            let held: Vec<String> = std::mem::take(&mut self.subs).into_keys().collect();
            self.maybe_subs.extend(held);
        }
        self.connected = false;
        self.disconnected_at = Some(now);
        self.outgoing.clear();
        if self.has_session {
            let asked = self.pending_subs.values().flatten().map(|(f, _)| f.clone());
            let dropped = self.pending_unsubs.values().flatten().cloned();
            self.maybe_subs.extend(asked.chain(dropped));
        }
        self.pending_subs.clear();
        self.pending_unsubs.clear();
    }

    /// Does the current connection's session outlive it? A v5 session lasts its expiry
    /// interval (clean start only discards the old one); a v3 one persists without clean session.
    fn outlives_connection(&self) -> bool {
        self.spec.persistent && (self.spec.version == ProtocolVersion::V5 || !self.clean_start)
    }

    fn end_session(&mut self, oracle: &mut Oracle) {
        self.has_session = false;
        self.subs.clear();
        self.maybe_subs.clear();
        oracle.session_ended(self.index);
    }

    /// Reads what the broker sent, answering as a client does; `Err` on a violation of the
    /// protocol by the broker (the world ends the run).
    pub fn read(
        &mut self,
        out: &mut BytesMut,
        oracle: &mut Oracle,
        trace: &mut Trace,
        step: u64,
        now: Instant,
    ) {
        loop {
            let packet = match decode_packet(&mut self.inbox, self.spec.version, u32::MAX) {
                Ok(Some(packet)) => packet,
                Ok(None) => return,
                Err(error) => {
                    oracle.violate(
                        "well-formed output",
                        format!(
                            "client {} cannot decode the broker's bytes: {error}",
                            self.index
                        ),
                    );
                    self.inbox.clear();
                    return;
                }
            };
            self.handle(packet, out, oracle, trace, step, now);
        }
    }

    fn handle(
        &mut self,
        packet: Packet,
        out: &mut BytesMut,
        oracle: &mut Oracle,
        trace: &mut Trace,
        step: u64,
        now: Instant,
    ) {
        let me = self.index;
        match packet {
            Packet::ConnAck(ack) => {
                trace.event(
                    step,
                    format!(
                        "c{me} connack {:#04x} present={}",
                        ack.reason.0, ack.session_present
                    ),
                );
                if ack.reason.0 != 0 {
                    return;
                }
                self.connected = true;
                if !ack.session_present {
                    // No session: none of the subscriptions it may have had is in force.
                    self.maybe_subs.clear();
                }
                if self.clean_start {
                    if ack.session_present {
                        oracle.violate(
                            "clean start",
                            format!("client {me} asked clean start and got session present"),
                        );
                    }
                    if self.has_session || !self.subs.is_empty() {
                        self.end_session(oracle);
                    }
                } else if !ack.session_present && self.has_session {
                    let away = self
                        .disconnected_at
                        .map_or(0, |at| now.saturating_duration_since(at).as_secs());
                    if self.spec.version == ProtocolVersion::V5
                        && away + 2 >= u64::from(EXPIRY_SECS)
                    {
                        self.end_session(oracle);
                    } else {
                        oracle.violate(
                            "persistent session kept",
                            format!("client {me} found no session after {away} s away"),
                        );
                        self.end_session(oracle);
                    }
                } else if !ack.session_present {
                    self.end_session(oracle);
                }
                self.has_session = self.outlives_connection();
            }
            Packet::SubAck(ack) => {
                let Some(asked) = self.pending_subs.remove(&ack.packet_id) else {
                    oracle.violate("acks", format!("client {me}: SUBACK for an unknown id"));
                    return;
                };
                for ((filter, _), reason) in asked.iter().zip(&ack.reasons) {
                    trace.event(step, format!("c{me} suback {filter} {:#04x}", reason.0));
                    if filter.is_empty() {
                        continue; // unsubscribed since
                    }
                    if reason.0 < 0x80 {
                        self.subs.insert(filter.clone(), reason.0);
                    } else {
                        let allowed = self.spec.admin || !filter.contains("secret/");
                        if allowed {
                            oracle.violate(
                                "acks",
                                format!("client {me}: {filter} refused ({:#04x})", reason.0),
                            );
                        }
                    }
                }
            }
            Packet::UnsubAck(ack) => {
                if self.pending_unsubs.remove(&ack.packet_id).is_none() {
                    oracle.violate("acks", format!("client {me}: UNSUBACK for an unknown id"));
                }
            }
            Packet::Publish(publish) => self.received(publish, out, oracle, trace, step, now),
            Packet::PubAck(ack) => {
                self.ours_acked(&ack, oracle, trace, step);
            }
            Packet::PubRec(rec) => {
                if self.ours_acked(&rec, oracle, trace, step) {
                    let rel = Packet::PubRel(PubResp {
                        packet_id: rec.packet_id,
                        ..Default::default()
                    });
                    self.send(out, &rel, now);
                }
            }
            Packet::PubRel(rel) => {
                let comp = Packet::PubComp(PubResp {
                    packet_id: rel.packet_id,
                    ..Default::default()
                });
                self.send(out, &comp, now);
            }
            Packet::PubComp(_) | Packet::PingResp => {}
            Packet::Disconnect(d) => {
                trace.event(
                    step,
                    format!("c{me} disconnected by broker {:#04x}", d.reason.0),
                );
            }
            other => oracle.violate(
                "client packets only",
                format!("client {me} got a {}", other.kind_name()),
            ),
        }
    }

    fn received(
        &mut self,
        publish: Publish,
        out: &mut BytesMut,
        oracle: &mut Oracle,
        trace: &mut Trace,
        step: u64,
        now: Instant,
    ) {
        let me = self.index;
        let qos = publish.qos as u8;
        match publish.qos {
            QoS::AtMostOnce => {}
            QoS::AtLeastOnce => {
                let ack = Packet::PubAck(PubResp {
                    packet_id: publish.packet_id,
                    ..Default::default()
                });
                self.send(out, &ack, now);
            }
            QoS::ExactlyOnce => {
                let rec = Packet::PubRec(PubResp {
                    packet_id: publish.packet_id,
                    ..Default::default()
                });
                self.send(out, &rec, now);
            }
        }
        let text = String::from_utf8_lossy(&publish.payload).into_owned();
        trace.event(
            step,
            format!(
                "c{me} got {} q{qos} r={} dup={} {text}",
                &*publish.topic, publish.retain, publish.dup
            ),
        );
        let topic = &*publish.topic;
        let subscribed_ever = self.ever.iter().any(|f| {
            let plain = shared(f).map_or(f.as_str(), |(_, filter)| filter);
            crate::oracle::matches(plain, topic)
        });
        let fields: Vec<&str> = text.split('|').collect();
        if let ["will", org, _client] = fields[..] {
            let from_org = org.parse().unwrap_or(u32::MAX);
            if from_org != self.spec.org {
                oracle.violate(
                    "org isolation",
                    format!(
                        "client {me} of org {} got org {from_org}'s will",
                        self.spec.org
                    ),
                );
            }
            return;
        }
        let parsed = match fields[..] {
            [org, client, incarnation, seq] => (|| {
                Some((
                    org.parse::<u32>().ok()?,
                    (
                        client.parse().ok()?,
                        incarnation.parse().ok()?,
                        seq.parse().ok()?,
                    ),
                ))
            })(),
            _ => None,
        };
        let Some((from_org, id)) = parsed else {
            oracle.violate(
                "payload intact",
                format!("client {me} got payload {text:?}"),
            );
            return;
        };
        let group = if topic.starts_with("s/") {
            self.ever
                .iter()
                .find_map(|f| shared(f).map(|(g, _)| g.to_owned()))
        } else {
            None
        };
        oracle.received(
            me,
            self.spec.org,
            self.spec.admin,
            id,
            from_org,
            topic,
            qos,
            publish.retain,
            group.as_deref(),
            subscribed_ever,
        );
    }

    /// A PUBACK or PUBREC for one of our publishes: true when it accepted the message.
    fn ours_acked(
        &mut self,
        ack: &PubResp,
        oracle: &mut Oracle,
        trace: &mut Trace,
        step: u64,
    ) -> bool {
        let me = self.index;
        let refused = ack.reason.0 >= 0x80;
        match self.outgoing.remove(&ack.packet_id) {
            Some(id) if !refused => {
                trace.event(step, format!("c{me} acked {id:?}"));
                oracle.acknowledged(id);
                true
            }
            Some(id) => {
                trace.event(step, format!("c{me} refused {id:?} {:#04x}", ack.reason.0));
                false
            }
            None => {
                oracle.violate(
                    "acks",
                    format!("client {me}: ack for unknown id {}", ack.packet_id),
                );
                false
            }
        }
    }

    /// Every subscription the broker may hold for this client: (filter, QoS, uncertain), where
    /// uncertain means a SUBSCRIBE or UNSUBSCRIBE of it is not yet acknowledged.
    pub fn sub_view(&self) -> Vec<(String, u8, bool)> {
        // A pending SUBSCRIBE of a filter already held may change its QoS: uncertain too.
        let unsubscribing: BTreeSet<&String> = self
            .pending_unsubs
            .values()
            .flatten()
            .chain(self.pending_subs.values().flatten().map(|(f, _)| f))
            .chain(&self.maybe_subs)
            .collect();
        let mut view: Vec<(String, u8, bool)> = self
            .subs
            .iter()
            .map(|(f, q)| (f.clone(), *q, unsubscribing.contains(f)))
            .collect();
        for (f, q) in self.pending_subs.values().flatten() {
            view.push((f.clone(), *q, true));
        }
        for f in unsubscribing {
            if !self.subs.contains_key(f) {
                view.push((f.clone(), 0, true));
            }
        }
        view
    }

    /// Filters whose subscriptions are acknowledged and in force.
    pub fn live_filters(&self) -> Vec<String> {
        self.subs.keys().cloned().collect()
    }
}

/// QoS from 0, 1 or 2.
pub fn qos_of(qos: u8) -> QoS {
    match qos {
        0 => QoS::AtMostOnce,
        1 => QoS::AtLeastOnce,
        _ => QoS::ExactlyOnce,
    }
}
