//! The sans-IO session state machine.
//!
//! A [`Session`] takes decoded packets, deliveries and `now`, and produces encoded bytes in its
//! outbox plus [`Action`]s for the shard (route a message, change a subscription, close). It owns
//! no socket and reads no clock, so every protocol rule here is unit-testable with a simulated
//! clock (see `tests.rs`).
//!
//! Call order for one connection: [`connect::negotiate`] → write the CONNACK with
//! [`Session::write_packet`] → [`Session::attach`] → then any number of [`Session::handle`],
//! [`Session::deliver`] and [`Session::pump`] calls → [`Session::detach`] when the connection ends.

pub mod access;
pub mod connect;
pub mod rules;
pub mod state;
#[cfg(test)]
mod tests;
pub mod window;

use std::time::{Duration, Instant};

use ahash::AHashMap;
use bytes::BytesMut;

use crate::message::{Message, Origin, SharedMessage};
use crate::mqtt::{
    encode_packet, encode_pub_resp, encode_publish, publish_encoded_len, AckProperties, Disconnect,
    DisconnectProperties, OutgoingPublish, Packet, ProtocolVersion, PubResp, PubRespKind, Publish,
    QoS, ReasonCode, Str, SubAck, Subscribe, UnsubAck, Unsubscribe, Will,
};

pub use access::{Access, Authorizer, Labels};
pub use rules::{Qos0Overflow, Rules};
pub use state::{InFlight, Queued, SessionState, Stage, Subscription};
pub use window::InFlightWindow;

/// Connection parameters negotiated at CONNECT; replaced on every reconnect.
#[derive(Debug)]
pub struct Link {
    /// Protocol version of this connection.
    pub version: ProtocolVersion,
    /// Effective keep-alive in seconds (0: none).
    pub keep_alive_secs: u16,
    /// When the last packet arrived.
    pub last_rx: Instant,
    /// The client's Receive Maximum (our outbound window is the minimum of it and ours).
    pub receive_maximum: u16,
    /// The client's Maximum Packet Size.
    pub packet_size_max: u32,
    /// Topic aliases the client accepts from us.
    pub topic_alias_max: u16,
    /// Topic alias tables, made on first use (most connections use none, and every connected
    /// session carries this field: memory per idle connection).
    pub aliases: Option<Box<Aliases>>,
    /// Will message, cleared on a normal DISCONNECT (boxed: most connections have none, and
    /// every connection carries this field).
    pub will: Option<Box<Will>>,
    /// v5 Request Problem Information: reason strings only when the client wants them.
    pub problem_information: bool,
    /// The org this connection's topics live in and what it may publish and subscribe to.
    pub access: Access,
}

/// A connection's topic alias tables (v5).
#[derive(Debug, Default)]
pub struct Aliases {
    /// Inbound alias table, index = alias - 1.
    pub inbound: Vec<Option<Str>>,
    /// Outbound aliases we assigned on this connection.
    pub outbound: AHashMap<Str, u16>,
}

/// What the shard must do after a packet was handled.
#[derive(Debug)]
pub enum Action {
    /// Route this message to subscribers (and retained storage when it carries RETAIN).
    Publish(SharedMessage),
    /// Add (or replace) a subscription in the shard's index; deliver retained messages as asked.
    Subscribe {
        /// Full filter text (with `$share/group/` when shared).
        filter: Str,
        /// Granted subscription.
        subscription: Subscription,
        /// True when the session had no subscription on this filter before.
        is_new: bool,
    },
    /// Remove a subscription from the shard's index.
    Unsubscribe {
        /// Full filter text.
        filter: Str,
    },
}

/// Whether the connection goes on after a packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Flow {
    /// Keep reading.
    Continue,
    /// Close the connection (after flushing the outbox).
    Close(CloseReason),
}

/// Why a connection closes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloseReason {
    /// The client sent DISCONNECT; `with_will` for v5 reason 0x04.
    ClientDisconnect {
        /// Publish the will anyway (v5 "Disconnect with Will Message").
        with_will: bool,
    },
    /// A protocol violation: DISCONNECT with this reason (v5) and close; the will is published.
    Violation {
        /// v5 reason code.
        reason: ReasonCode,
        /// Reason string.
        text: &'static str,
    },
}

/// What happened to a delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivered {
    /// Encoded into the outbox.
    Sent,
    /// Waiting in the session queue.
    Queued,
    /// Dropped: expired, too large for the client, QoS 0 while offline or with a full outbox.
    Dropped,
    /// QoS 1/2 dropped because the session queue is full: the shard disconnects an online
    /// client with 0x97 so the loss is never silent.
    Overflow,
}

/// What the shard says about room for the PUBLISHes a session is about to accept.
pub struct Room<'a> {
    /// Room for one more retained message of this scoped topic and payload size (the org's
    /// and the broker's caps).
    pub retained: &'a dyn Fn(&str, usize) -> bool,
    /// The shard's log cannot be written (disk full): QoS 1/2 publishes are refused (v5 0x97,
    /// v3 closed) and QoS 0 ones are not kept as retained.
    pub storage_full: bool,
}

/// One client's session: persistent state plus, while connected, its link and outbox.
#[derive(Debug)]
pub struct Session {
    /// Client identifier.
    pub client_id: Str,
    /// State that survives the connection.
    pub state: SessionState,
    /// Present while a connection is attached.
    pub link: Option<Link>,
    /// Encoded packets waiting for the writer; many packets coalesce into one write.
    pub out: BytesMut,
    /// When the last connection ended (for session expiry).
    pub disconnected_at: Option<Instant>,
    /// The attached connection, stamped on the messages it publishes.
    pub origin: Origin,
}

impl Session {
    /// A new, empty session.
    pub fn new(client_id: Str, expiry_interval_secs: u32) -> Self {
        Session {
            client_id,
            state: SessionState {
                expiry_interval_secs,
                ..SessionState::default()
            },
            link: None,
            out: BytesMut::new(),
            disconnected_at: None,
            origin: Origin::BROKER,
        }
    }

    /// Rebuilds a session from state moved from another shard (or, later, from disk).
    pub fn from_state(client_id: Str, state: SessionState) -> Self {
        Session {
            client_id,
            state,
            link: None,
            out: BytesMut::new(),
            disconnected_at: None,
            origin: Origin::BROKER,
        }
    }

    /// Protocol version of the attached connection (v3.1.1 when detached).
    pub fn version(&self) -> ProtocolVersion {
        self.link
            .as_ref()
            .map_or(ProtocolVersion::V311, |l| l.version)
    }

    /// True while a connection is attached.
    pub fn is_connected(&self) -> bool {
        self.link.is_some()
    }

    /// Encodes any packet into the outbox (CONNACK, DISCONNECT, …).
    pub fn write_packet(&mut self, packet: &Packet, version: ProtocolVersion) {
        if let Err(error) = encode_packet(packet, version, &mut self.out) {
            tracing::warn!(%error, kind = packet.kind_name(), "could not encode packet");
        }
    }

    /// Attaches a new connection. With `resume`, in-flight messages are sent again (DUP set,
    /// PUBREL for those past PUBREC) and the queue is pumped, as MQTT requires on reconnect.
    pub fn attach(&mut self, link: Link, resume: bool, now: Instant, rules: &Rules) {
        let version = link.version;
        self.link = Some(link);
        self.disconnected_at = None;
        if resume {
            for index in 0..self.state.inflight.len() {
                let flight = &self.state.inflight[index];
                let (packet_id, stage) = (flight.packet_id, flight.stage);
                match stage {
                    Stage::AwaitPubComp => encode_pub_resp(
                        PubRespKind::PubRel,
                        packet_id,
                        ReasonCode::SUCCESS,
                        version,
                        &mut self.out,
                    ),
                    Stage::AwaitPubAck | Stage::AwaitPubRec => {
                        let item = self.state.inflight[index].item.clone();
                        self.encode_delivery(&item, packet_id, true, now);
                    }
                }
            }
        } else {
            self.state.inflight.clear();
            self.state.queue.clear();
            self.state.qos0_queue.clear();
            self.state.incoming_qos2.clear();
        }
        self.pump(now, rules);
    }

    /// Detaches the connection; returns the will to publish unless it was cleared.
    pub fn detach(&mut self, now: Instant) -> Option<Box<Will>> {
        self.disconnected_at = Some(now);
        self.out.clear();
        // QoS 0 is never kept for an offline session.
        self.state.qos0_queue.clear();
        self.link.take().and_then(|l| l.will)
    }

    /// When the keep-alive runs out (1.5 times the keep-alive after the last packet).
    pub fn keep_alive_deadline(&self) -> Option<Instant> {
        let link = self.link.as_ref()?;
        if link.keep_alive_secs == 0 {
            return None;
        }
        Some(link.last_rx + Duration::from_millis(u64::from(link.keep_alive_secs) * 1500))
    }

    /// When a detached session expires.
    pub fn expiry_deadline(&self) -> Option<Instant> {
        let at = self.disconnected_at?;
        Some(at + Duration::from_secs(u64::from(self.state.expiry_interval_secs)))
    }

    /// Writes a v5 DISCONNECT with this reason (v3 has no server DISCONNECT: nothing is written).
    pub fn write_disconnect(&mut self, reason: ReasonCode, text: &'static str) {
        let Some(link) = &self.link else { return };
        if link.version != ProtocolVersion::V5 {
            return;
        }
        let mut properties = DisconnectProperties::default();
        if link.problem_information && !text.is_empty() {
            properties.reason_string = Some(Str::from_static(text));
        }
        let packet = Packet::Disconnect(Disconnect { reason, properties });
        self.write_packet(&packet, ProtocolVersion::V5);
    }

    /// Handles one packet from the client.
    pub fn handle(
        &mut self,
        packet: Packet,
        now: Instant,
        rules: &Rules,
        actions: &mut Vec<Action>,
    ) -> Flow {
        let room = Room {
            retained: &|_, _| true,
            storage_full: false,
        };
        self.handle_with(packet, now, rules, actions, &room)
    }

    /// Handles one packet from the client; `room` says whether the org may keep one more
    /// retained message of a size (its quota) and whether the shard can store at all, else the
    /// PUBLISH is refused with 0x97 Quota exceeded (see [`Room`]).
    pub fn handle_with(
        &mut self,
        packet: Packet,
        now: Instant,
        rules: &Rules,
        actions: &mut Vec<Action>,
        room: &Room<'_>,
    ) -> Flow {
        let Some(link) = self.link.as_mut() else {
            return violation(ReasonCode::PROTOCOL_ERROR, "no connection");
        };
        link.last_rx = now;
        match packet {
            Packet::Publish(publish) => self.handle_publish(publish, now, rules, actions, room),
            Packet::PubAck(ack) => {
                if let Some(pos) = self.state.inflight_position(ack.packet_id) {
                    if self.state.inflight[pos].stage == Stage::AwaitPubAck {
                        self.state.inflight.remove(pos);
                        self.pump(now, rules);
                    }
                }
                Flow::Continue
            }
            Packet::PubRec(rec) => self.handle_pubrec(rec, now, rules),
            Packet::PubRel(rel) => {
                let version = self.version();
                let reason = match self
                    .state
                    .incoming_qos2
                    .iter()
                    .position(|id| *id == rel.packet_id)
                {
                    Some(pos) => {
                        self.state.incoming_qos2.swap_remove(pos);
                        ReasonCode::SUCCESS
                    }
                    None => ReasonCode::PACKET_IDENTIFIER_NOT_FOUND,
                };
                encode_pub_resp(
                    PubRespKind::PubComp,
                    rel.packet_id,
                    reason,
                    version,
                    &mut self.out,
                );
                Flow::Continue
            }
            Packet::PubComp(comp) => {
                if let Some(pos) = self.state.inflight_position(comp.packet_id) {
                    if self.state.inflight[pos].stage == Stage::AwaitPubComp {
                        self.state.inflight.remove(pos);
                        self.pump(now, rules);
                    }
                }
                Flow::Continue
            }
            Packet::Subscribe(subscribe) => self.handle_subscribe(subscribe, rules, actions),
            Packet::Unsubscribe(unsubscribe) => self.handle_unsubscribe(unsubscribe, actions),
            Packet::PingReq => {
                self.write_packet(&Packet::PingResp, ProtocolVersion::V311);
                Flow::Continue
            }
            Packet::Disconnect(disconnect) => self.handle_disconnect(disconnect),
            Packet::Connect(_) => violation(ReasonCode::PROTOCOL_ERROR, "second CONNECT"),
            Packet::Auth(_) => violation(
                ReasonCode::PROTOCOL_ERROR,
                "AUTH without enhanced authentication",
            ),
            Packet::ConnAck(_) | Packet::SubAck(_) | Packet::UnsubAck(_) | Packet::PingResp => {
                violation(
                    ReasonCode::PROTOCOL_ERROR,
                    "server-to-client packet from a client",
                )
            }
        }
    }

    fn handle_publish(
        &mut self,
        mut publish: Publish,
        now: Instant,
        rules: &Rules,
        actions: &mut Vec<Action>,
        room: &Room<'_>,
    ) -> Flow {
        let Some(link) = self.link.as_mut() else {
            return Flow::Continue;
        };
        let version = link.version;
        if publish.qos > rules.maximum_qos {
            return violation(ReasonCode::QOS_NOT_SUPPORTED, "QoS above the maximum QoS");
        }
        if publish.retain && !rules.retain_available {
            return violation(
                ReasonCode::RETAIN_NOT_SUPPORTED,
                "retained messages are not supported",
            );
        }
        let mut properties = publish.properties;
        let topic = match properties.topic_alias.take() {
            None => publish.topic,
            Some(alias) => {
                if alias == 0 || alias > rules.topic_alias_max || version != ProtocolVersion::V5 {
                    return violation(ReasonCode::TOPIC_ALIAS_INVALID, "topic alias out of range");
                }
                let slot = usize::from(alias) - 1;
                // The table grows to the highest alias the client uses (most use none), so an
                // idle v5 connection does not carry a table of `topic_alias_max` entries.
                let inbound = &mut link.aliases.get_or_insert_with(Box::default).inbound;
                if inbound.len() <= slot {
                    inbound.resize(slot + 1, None);
                }
                let entry = &mut inbound[slot];
                if publish.topic.is_empty() {
                    match entry {
                        Some(topic) => topic.clone(),
                        None => {
                            return violation(ReasonCode::PROTOCOL_ERROR, "unknown topic alias")
                        }
                    }
                } else {
                    *entry = Some(publish.topic.clone());
                    publish.topic
                }
            }
        };
        if ringmq_router::validate_topic_name(&topic, rules.topic_levels_max).is_err() {
            return violation(ReasonCode::TOPIC_NAME_INVALID, "invalid topic name");
        }
        if !link
            .access
            .may_publish(&topic, ringmq_router::strip_scope(&self.client_id).1)
        {
            return self.refuse_publish(
                publish.qos,
                publish.packet_id,
                &topic,
                rules,
                ReasonCode::NOT_AUTHORIZED,
            );
        }
        let topic = link.access.scope_topic(topic);
        // Nothing is acknowledged that cannot be stored. v3 has no negative acknowledgement
        // (an acknowledged drop would be a loss): its connection is closed instead.
        let unstorable = room.storage_full && publish.qos != QoS::AtMostOnce;
        if unstorable && version != ProtocolVersion::V5 {
            return violation(ReasonCode::QUOTA_EXCEEDED, "the broker's storage is full");
        }
        if room.storage_full && publish.qos == QoS::AtMostOnce {
            // QoS 0 promises nothing: delivered live, not kept as retained (it could not be
            // stored, and a retained value that vanishes at restart would mislead).
            publish.retain = false;
        }
        if unstorable
            || (publish.retain
                && !publish.payload.is_empty()
                && !(room.retained)(&topic, publish.payload.len()))
        {
            let plain = ringmq_router::strip_scope(&topic).1.to_owned();
            return self.refuse_publish(
                publish.qos,
                publish.packet_id,
                &plain,
                rules,
                ReasonCode::QUOTA_EXCEEDED,
            );
        }
        if properties.payload_format_indicator == Some(1)
            && std::str::from_utf8(&publish.payload).is_err()
        {
            return violation(
                ReasonCode::PAYLOAD_FORMAT_INVALID,
                "payload is not UTF-8 as its format indicator says",
            );
        }
        properties.subscription_identifiers.clear();
        let expires_at = properties
            .message_expiry_interval
            .map(|secs| now + Duration::from_secs(u64::from(secs)));
        let message = Message {
            topic,
            payload: publish.payload,
            qos: publish.qos,
            retain: publish.retain,
            properties,
            expires_at,
            publisher: self.client_id.clone(),
            origin: self.origin,
            namespace: link.access.namespace().cloned(),
            device: link.access.device().cloned(),
        };
        match publish.qos {
            QoS::AtMostOnce => actions.push(Action::Publish(SharedMessage::new(message))),
            QoS::AtLeastOnce => {
                actions.push(Action::Publish(SharedMessage::new(message)));
                encode_pub_resp(
                    PubRespKind::PubAck,
                    publish.packet_id,
                    ReasonCode::SUCCESS,
                    version,
                    &mut self.out,
                );
            }
            QoS::ExactlyOnce => {
                // Method A of the spec: route on PUBLISH, remember the id until PUBREL so a
                // resent PUBLISH (DUP) is acknowledged but not routed twice.
                if !self.state.incoming_qos2.contains(&publish.packet_id) {
                    if self.state.incoming_qos2.len() >= usize::from(rules.inflight_max) {
                        return violation(
                            ReasonCode::RECEIVE_MAXIMUM_EXCEEDED,
                            "more unreleased QoS 2 publishes than Receive Maximum",
                        );
                    }
                    self.state.incoming_qos2.push(publish.packet_id);
                    actions.push(Action::Publish(SharedMessage::new(message)));
                }
                encode_pub_resp(
                    PubRespKind::PubRec,
                    publish.packet_id,
                    ReasonCode::SUCCESS,
                    version,
                    &mut self.out,
                );
            }
        }
        Flow::Continue
    }

    /// A PUBLISH the ACL does not allow (0x87) or the org's quota cannot take (0x97): v5 learns
    /// it from the PUBACK / PUBREC reason; v3 has no negative acknowledgement, so the message
    /// is acknowledged and dropped (as mosquitto does) and the refusal is logged.
    fn refuse_publish(
        &mut self,
        qos: QoS,
        packet_id: u16,
        topic: &str,
        rules: &Rules,
        refusal: ReasonCode,
    ) -> Flow {
        let version = self.version();
        tracing::info!(client_id = %self.client_id, topic, reason = refusal.0, "publish refused");
        let reason = if version == ProtocolVersion::V5 {
            refusal
        } else {
            ReasonCode::SUCCESS
        };
        match qos {
            QoS::AtMostOnce => {}
            QoS::AtLeastOnce => {
                encode_pub_resp(
                    PubRespKind::PubAck,
                    packet_id,
                    reason,
                    version,
                    &mut self.out,
                );
            }
            QoS::ExactlyOnce => {
                // A v3 sender goes on with PUBREL; remember the id so PUBCOMP answers it. A v5
                // sender's flow ends at the error PUBREC.
                if version != ProtocolVersion::V5 && !self.state.incoming_qos2.contains(&packet_id)
                {
                    if self.state.incoming_qos2.len() >= usize::from(rules.inflight_max) {
                        return violation(
                            ReasonCode::RECEIVE_MAXIMUM_EXCEEDED,
                            "more unreleased QoS 2 publishes than Receive Maximum",
                        );
                    }
                    self.state.incoming_qos2.push(packet_id);
                }
                encode_pub_resp(
                    PubRespKind::PubRec,
                    packet_id,
                    reason,
                    version,
                    &mut self.out,
                );
            }
        }
        Flow::Continue
    }

    fn handle_pubrec(&mut self, rec: PubResp, now: Instant, rules: &Rules) -> Flow {
        let version = self.version();
        match self.state.inflight_position(rec.packet_id) {
            Some(pos) if self.state.inflight[pos].stage != Stage::AwaitPubAck => {
                if rec.reason.is_error() {
                    // The receiver refused the message: the flow ends here (v5 4.3.3).
                    self.state.inflight.remove(pos);
                    self.pump(now, rules);
                } else {
                    self.state.inflight[pos].stage = Stage::AwaitPubComp;
                    encode_pub_resp(
                        PubRespKind::PubRel,
                        rec.packet_id,
                        ReasonCode::SUCCESS,
                        version,
                        &mut self.out,
                    );
                }
            }
            _ => encode_pub_resp(
                PubRespKind::PubRel,
                rec.packet_id,
                ReasonCode::PACKET_IDENTIFIER_NOT_FOUND,
                version,
                &mut self.out,
            ),
        }
        Flow::Continue
    }

    fn handle_subscribe(
        &mut self,
        subscribe: Subscribe,
        rules: &Rules,
        actions: &mut Vec<Action>,
    ) -> Flow {
        let version = self.version();
        let v5 = version == ProtocolVersion::V5;
        if subscribe.subscription_identifier.is_some() && !rules.subscription_identifiers {
            return violation(
                ReasonCode::SUBSCRIPTION_IDENTIFIERS_NOT_SUPPORTED,
                "subscription identifiers are not supported",
            );
        }
        let mut reasons = Vec::with_capacity(subscribe.filters.len());
        for entry in subscribe.filters {
            let reason = match check_filter(&entry.filter, entry.options.no_local, rules) {
                Err(FilterProblem::Violation(reason, text)) => return violation(reason, text),
                Err(FilterProblem::Refused(reason)) => reason,
                Ok(())
                    if !self.link.as_ref().is_some_and(|link| {
                        link.access.may_subscribe(
                            &entry.filter,
                            ringmq_router::strip_scope(&self.client_id).1,
                        )
                    }) =>
                {
                    tracing::info!(client_id = %self.client_id, filter = %entry.filter, "subscribe not authorized");
                    ReasonCode::NOT_AUTHORIZED
                }
                Ok(()) => {
                    let filter = match &self.link {
                        Some(link) => link.access.scope_filter(entry.filter),
                        None => entry.filter,
                    };
                    let exists = self.state.subscriptions.contains_key(&filter);
                    if !exists
                        && self.state.subscriptions.len() >= rules.subscriptions_per_client_max
                    {
                        ReasonCode::QUOTA_EXCEEDED
                    } else {
                        let mut options = entry.options;
                        options.qos = options.qos.min(rules.maximum_qos);
                        let subscription = Subscription {
                            options,
                            identifier: subscribe.subscription_identifier,
                        };
                        self.state
                            .subscriptions
                            .insert(filter.clone(), subscription);
                        actions.push(Action::Subscribe {
                            filter,
                            subscription,
                            is_new: !exists,
                        });
                        ReasonCode(options.qos as u8)
                    }
                }
            };
            // v3 SUBACK knows only 0x80 for failure.
            reasons.push(if !v5 && reason.is_error() {
                ReasonCode::UNSPECIFIED_ERROR
            } else {
                reason
            });
        }
        let mut properties = AckProperties::default();
        let wants_text = self.link.as_ref().is_some_and(|l| l.problem_information);
        if v5 && wants_text {
            properties.reason_string = reasons
                .iter()
                .find(|r| r.is_error())
                .map(|r| Str::from_static(refusal_text(*r)));
        }
        let suback = SubAck {
            packet_id: subscribe.packet_id,
            reasons,
            properties,
        };
        self.write_packet(&Packet::SubAck(suback), version);
        Flow::Continue
    }

    fn handle_unsubscribe(&mut self, unsubscribe: Unsubscribe, actions: &mut Vec<Action>) -> Flow {
        let version = self.version();
        let mut reasons = Vec::with_capacity(unsubscribe.filters.len());
        for filter in unsubscribe.filters {
            let filter = match &self.link {
                Some(link) => link.access.scope_filter(filter),
                None => filter,
            };
            if self.state.subscriptions.remove(&filter).is_some() {
                actions.push(Action::Unsubscribe { filter });
                reasons.push(ReasonCode::SUCCESS);
            } else {
                reasons.push(ReasonCode::NO_SUBSCRIPTION_EXISTED);
            }
        }
        let unsuback = UnsubAck {
            packet_id: unsubscribe.packet_id,
            reasons,
            properties: AckProperties::default(),
        };
        self.write_packet(&Packet::UnsubAck(unsuback), version);
        Flow::Continue
    }

    fn handle_disconnect(&mut self, disconnect: Disconnect) -> Flow {
        if let Some(expiry) = disconnect.properties.session_expiry_interval {
            // v5 3.14.2.2.2: a session that was to end with the connection cannot be revived here.
            if self.state.expiry_interval_secs == 0 && expiry != 0 {
                return violation(
                    ReasonCode::PROTOCOL_ERROR,
                    "session expiry set on DISCONNECT after CONNECT had 0",
                );
            }
            self.state.expiry_interval_secs = expiry;
        }
        let with_will = disconnect.reason == ReasonCode::DISCONNECT_WITH_WILL_MESSAGE;
        if !with_will {
            if let Some(link) = self.link.as_mut() {
                link.will = None;
            }
        }
        Flow::Close(CloseReason::ClientDisconnect { with_will })
    }

    /// Offers a message to this session at the given QoS and RETAIN flag.
    pub fn deliver(&mut self, item: Queued, now: Instant, rules: &Rules) -> Delivered {
        if item.message.is_expired(now) {
            return Delivered::Dropped;
        }
        let Some(link) = &self.link else {
            if item.qos == QoS::AtMostOnce {
                return Delivered::Dropped;
            }
            return self.enqueue(item, rules);
        };
        let window = usize::from(link.receive_maximum.min(rules.inflight_max));
        if item.qos == QoS::AtMostOnce {
            if self.out.len() >= rules.outbox_bytes_max || !self.state.qos0_queue.is_empty() {
                return match rules.qos0_overflow {
                    Qos0Overflow::DropNew => Delivered::Dropped,
                    Qos0Overflow::Disconnect => Delivered::Overflow,
                    Qos0Overflow::DropOldest => {
                        let mut outcome = Delivered::Queued;
                        if self.state.qos0_queue.len() >= rules.queue_messages_max {
                            self.state.qos0_queue.pop_front();
                            outcome = Delivered::Dropped;
                        }
                        self.state.qos0_queue.push_back(item);
                        outcome
                    }
                };
            }
            return if self.encode_delivery(&item, 0, false, now) {
                Delivered::Sent
            } else {
                Delivered::Dropped
            };
        }
        // Order per publisher: nothing overtakes what already waits in the queue.
        if self.state.queue.is_empty()
            && self.state.inflight.len() < window
            && self.out.len() < rules.outbox_bytes_max
        {
            return self.send_reliable(item, now);
        }
        self.enqueue(item, rules)
    }

    fn enqueue(&mut self, item: Queued, rules: &Rules) -> Delivered {
        let limit = if self.link.is_some() {
            rules.queue_messages_max + rules.queue_overshoot_max
        } else {
            rules.queue_messages_max
        };
        if self.state.queue.len() >= limit {
            self.state.dropped_queue_full += 1;
            return Delivered::Overflow;
        }
        self.state.queue.push_back(item);
        Delivered::Queued
    }

    fn send_reliable(&mut self, item: Queued, now: Instant) -> Delivered {
        if !self.fits_client(&item, now) {
            return Delivered::Dropped;
        }
        let packet_id = self.state.allocate_packet_id();
        self.encode_delivery(&item, packet_id, false, now);
        let stage = if item.qos == QoS::AtLeastOnce {
            Stage::AwaitPubAck
        } else {
            Stage::AwaitPubRec
        };
        self.state.inflight.push_back(InFlight {
            packet_id,
            item,
            stage,
        });
        Delivered::Sent
    }

    /// Moves queued messages into the window while it and the outbox have room.
    pub fn pump(&mut self, now: Instant, rules: &Rules) {
        let Some(link) = &self.link else { return };
        let window = usize::from(link.receive_maximum.min(rules.inflight_max));
        while self.out.len() < rules.outbox_bytes_max {
            let Some(item) = self.state.qos0_queue.pop_front() else {
                break;
            };
            if !item.message.is_expired(now) {
                self.encode_delivery(&item, 0, false, now);
            }
        }
        while self.state.inflight.len() < window && self.out.len() < rules.outbox_bytes_max {
            let Some(item) = self.state.queue.pop_front() else {
                break;
            };
            if item.message.is_expired(now) {
                continue;
            }
            self.send_reliable(item, now);
        }
    }

    /// True when the client's Maximum Packet Size admits this delivery (v5 3.1.2.11.4: else it
    /// is dropped as if delivered).
    fn fits_client(&self, item: &Queued, now: Instant) -> bool {
        let Some(link) = &self.link else { return true };
        if link.packet_size_max == u32::MAX {
            return true;
        }
        let message = &item.message;
        let outgoing = OutgoingPublish {
            dup: false,
            qos: item.qos,
            retain: item.retain,
            packet_id: 1,
            topic: ringmq_router::strip_scope(&message.topic).1,
            topic_alias: None,
            subscription_identifiers: &item.subscription_ids,
            message_expiry_interval: message.remaining_expiry_secs(now),
            properties: &message.properties,
            payload: &message.payload,
        };
        publish_encoded_len(&outgoing, link.version) <= link.packet_size_max as usize
    }

    /// Encodes a PUBLISH for this delivery; false if it does not fit the client's limit.
    fn encode_delivery(&mut self, item: &Queued, packet_id: u16, dup: bool, now: Instant) -> bool {
        let Some(link) = self.link.as_mut() else {
            return false;
        };
        let message = &item.message;
        let version = link.version;
        // The client sees its topics without the org scope they are routed under.
        let mut topic: &str = ringmq_router::strip_scope(&message.topic).1;
        let mut topic_alias = None;
        if link.topic_alias_max > 0 {
            let outbound = &mut link.aliases.get_or_insert_with(Box::default).outbound;
            if let Some(alias) = outbound.get(&message.topic) {
                topic_alias = Some(*alias);
                topic = "";
            } else if outbound.len() < usize::from(link.topic_alias_max) {
                let alias = outbound.len() as u16 + 1;
                outbound.insert(message.topic.clone(), alias);
                topic_alias = Some(alias);
            }
        }
        let outgoing = OutgoingPublish {
            dup,
            qos: item.qos,
            retain: item.retain,
            packet_id,
            topic,
            topic_alias,
            subscription_identifiers: &item.subscription_ids,
            message_expiry_interval: message.remaining_expiry_secs(now),
            properties: &message.properties,
            payload: &message.payload,
        };
        if link.packet_size_max != u32::MAX
            && publish_encoded_len(&outgoing, version) > link.packet_size_max as usize
        {
            return false;
        }
        match encode_publish(&outgoing, version, &mut self.out) {
            Ok(()) => true,
            Err(error) => {
                tracing::warn!(%error, "could not encode PUBLISH");
                false
            }
        }
    }
}

enum FilterProblem {
    /// Refuse this filter in the SUBACK.
    Refused(ReasonCode),
    /// Close the connection.
    Violation(ReasonCode, &'static str),
}

fn check_filter(filter: &str, no_local: bool, rules: &Rules) -> Result<(), FilterProblem> {
    use ringmq_router::{parse_shared, validate_filter};
    let plain = match parse_shared(filter, rules.topic_levels_max) {
        Err(_) => return Err(FilterProblem::Refused(ReasonCode::TOPIC_FILTER_INVALID)),
        Ok(Some(shared)) => {
            if !rules.shared_subscriptions {
                return Err(FilterProblem::Refused(
                    ReasonCode::SHARED_SUBSCRIPTIONS_NOT_SUPPORTED,
                ));
            }
            if no_local {
                return Err(FilterProblem::Violation(
                    ReasonCode::PROTOCOL_ERROR,
                    "No Local on a shared subscription",
                ));
            }
            shared.filter
        }
        Ok(None) => {
            if validate_filter(filter, rules.topic_levels_max).is_err() {
                return Err(FilterProblem::Refused(ReasonCode::TOPIC_FILTER_INVALID));
            }
            filter
        }
    };
    if !rules.wildcard_subscriptions && (plain.contains('+') || plain.contains('#')) {
        return Err(FilterProblem::Refused(
            ReasonCode::WILDCARD_SUBSCRIPTIONS_NOT_SUPPORTED,
        ));
    }
    let refused = rules.refused_topics.iter().any(|pattern| {
        pattern == plain || (!plain.contains(['+', '#']) && ringmq_router::matches(pattern, plain))
    });
    if refused {
        return Err(FilterProblem::Refused(ReasonCode::UNSPECIFIED_ERROR));
    }
    Ok(())
}

fn refusal_text(reason: ReasonCode) -> &'static str {
    match reason {
        ReasonCode::TOPIC_FILTER_INVALID => "invalid topic filter",
        ReasonCode::QUOTA_EXCEEDED => "too many subscriptions",
        ReasonCode::SHARED_SUBSCRIPTIONS_NOT_SUPPORTED => "shared subscriptions are disabled",
        ReasonCode::WILDCARD_SUBSCRIPTIONS_NOT_SUPPORTED => "wildcard subscriptions are disabled",
        _ => "subscription refused by server policy",
    }
}

fn violation(reason: ReasonCode, text: &'static str) -> Flow {
    Flow::Close(CloseReason::Violation { reason, text })
}
