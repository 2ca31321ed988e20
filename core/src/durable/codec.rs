//! The records of a shard's durable log and their binary form.
//!
//! A record is the latest state of one key (a retained topic, a session), so replaying a log
//! keeps the last record per key and compaction keeps only those. Integers are little-endian,
//! strings and byte strings carry a `u32` length, times are unix milliseconds (an `Instant`
//! means nothing after a restart; the [`Clock`] converts).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, Bytes};
use ringmq_proto::message::{Message, Origin, SharedMessage};
use ringmq_proto::mqtt::{PublishProperties, QoS, RetainHandling, Str, SubscriptionOptions, Will};
use ringmq_proto::session::{InFlight, Queued, SessionState, Stage, Subscription};

/// The first byte of every record: its kind and the format's version in one.
const RETAINED: u8 = 0x11;
const SESSION: u8 = 0x12;
const SESSION_ENDED: u8 = 0x13;
const IDEMPOTENT: u8 = 0x14;

/// Bounds a record read back must respect (a damaged length must not allocate gigabytes).
const ITEMS_MAX: u32 = 1 << 20;

/// Why a record could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    /// The record ends before its fields do.
    #[error("record truncated")]
    Truncated,
    /// A field holds a value no writer produces.
    #[error("invalid {0} in record")]
    Invalid(&'static str),
}

/// Wall time for an `Instant`, and back: the core's clock base.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    /// An instant and the unix time (ms) it stood for.
    pub base: (Instant, u64),
}

impl Clock {
    /// Unix milliseconds of `at`.
    pub fn unix_ms(&self, at: Instant) -> u64 {
        let (base, ms) = self.base;
        match at.checked_duration_since(base) {
            Some(after) => ms.saturating_add(after.as_millis() as u64),
            None => ms.saturating_sub(base.duration_since(at).as_millis() as u64),
        }
    }

    /// Unix nanoseconds of `at` (record versions: every shard shares the base, and a later
    /// change on any shard gets a larger version).
    pub fn unix_nanos(&self, at: Instant) -> u64 {
        let (base, ms) = self.base;
        let base_ns = ms.saturating_mul(1_000_000);
        match at.checked_duration_since(base) {
            Some(after) => base_ns.saturating_add(after.as_nanos() as u64),
            None => base_ns.saturating_sub(base.duration_since(at).as_nanos() as u64),
        }
    }

    /// The `Instant` of unix milliseconds `ms` (clamped to what an `Instant` can hold).
    pub fn instant(&self, ms: u64) -> Instant {
        let (base, base_ms) = self.base;
        if ms >= base_ms {
            base + Duration::from_millis(ms - base_ms)
        } else {
            base.checked_sub(Duration::from_millis(base_ms - ms))
                .unwrap_or(base)
        }
    }
}

/// One persistent session as a shard checkpoints it.
#[derive(Debug, Clone)]
pub struct SessionRecord {
    /// Client id in its org's scope.
    pub client_id: Str,
    /// Grows with every checkpoint of the session on any shard: replay keeps the highest.
    pub version: u64,
    /// The org the session belongs to.
    pub org: u32,
    /// Unix ms the session went offline; 0 for a session connected at its checkpoint (after a
    /// crash its expiry counts from the start: when the crash came is unknown).
    pub offline_since_ms: u64,
    /// A will waiting for its delay, with the unix ms it is due.
    pub will: Option<(Will, u64)>,
    /// Subscriptions, queues, in-flight messages, QoS 2 receipts.
    pub state: SessionState,
}

/// A live session as a checkpoint writes it: borrowed, so writing copies nothing.
#[derive(Debug, Clone, Copy)]
pub struct SessionView<'a> {
    /// Client id in its org's scope.
    pub client_id: &'a Str,
    /// The checkpoint's version.
    pub version: u64,
    /// The org the session belongs to.
    pub org: u32,
    /// Unix ms the session went offline (0 while connected).
    pub offline_since_ms: u64,
    /// A pending will and the unix ms it is due.
    pub will: Option<(&'a Will, u64)>,
    /// The session's state.
    pub state: &'a SessionState,
}

impl SessionRecord {
    /// The record as a [`SessionView`].
    pub fn view(&self) -> SessionView<'_> {
        SessionView {
            client_id: &self.client_id,
            version: self.version,
            org: self.org,
            offline_since_ms: self.offline_since_ms,
            will: self.will.as_ref().map(|(will, due)| (will, *due)),
            state: &self.state,
        }
    }
}

/// Appends a session record's binary form to `out`.
pub fn encode_session(view: &SessionView<'_>, clock: &Clock, out: &mut Vec<u8>) {
    out.put_u8(SESSION);
    put_session(out, view, clock);
}

/// One entry of a shard's log.
#[derive(Debug, Clone)]
pub enum Record {
    /// The retained message of a topic (scoped), or its removal.
    Retained {
        /// Topic in its org's scope.
        topic: Str,
        /// The message; `None` clears the topic.
        message: Option<SharedMessage>,
    },
    /// A persistent session's state.
    Session(Box<SessionRecord>),
    /// A session ended (expired, cleaned or taken by a clean start).
    SessionEnded {
        /// Client id in its org's scope.
        client_id: Str,
        /// The session's version when it ended.
        version: u64,
    },
    /// The first answer to a REST request with an `Idempotency-Key`.
    Idempotent(Box<IdempotentAnswer>),
}

/// The first answer to a REST publish with an `Idempotency-Key`: a retry with the same key and
/// body gets it again, also after a restart, for the key's window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotentAnswer {
    /// The org the key belongs to.
    pub org: u32,
    /// The key as the client sent it.
    pub key: Str,
    /// SHA-256 of the request (kind and body): another body under the same key is refused.
    pub fingerprint: [u8; 32],
    /// The answer's HTTP status.
    pub status: u16,
    /// The answer's JSON body.
    pub body: Bytes,
    /// Unix ms of the first answer (the window counts from it).
    pub at_ms: u64,
}

impl Record {
    /// Appends the record's binary form to `out`.
    pub fn encode(&self, clock: &Clock, out: &mut Vec<u8>) {
        match self {
            Record::Retained { topic, message } => {
                Record::encode_retained(topic, message.as_ref(), clock, out)
            }
            Record::Session(session) => encode_session(&session.view(), clock, out),
            Record::SessionEnded { client_id, version } => {
                out.put_u8(SESSION_ENDED);
                put_str(out, client_id);
                out.put_u64_le(*version);
            }
            Record::Idempotent(answer) => {
                out.put_u8(IDEMPOTENT);
                out.put_u32_le(answer.org);
                put_str(out, &answer.key);
                out.put_slice(&answer.fingerprint);
                out.put_u16_le(answer.status);
                put_bytes(out, &answer.body);
                out.put_u64_le(answer.at_ms);
            }
        }
    }

    /// Appends a retained record without building a [`Record`] (a compaction writes a
    /// million of them from shared messages).
    pub fn encode_retained(
        topic: &str,
        message: Option<&SharedMessage>,
        clock: &Clock,
        out: &mut Vec<u8>,
    ) {
        out.put_u8(RETAINED);
        put_str(out, topic);
        match message {
            Some(message) => {
                out.put_u8(1);
                put_message(out, message, clock);
            }
            None => out.put_u8(0),
        }
    }

    /// True when the record in `bytes` is a retained message's (a start decodes those on a
    /// thread of their own).
    pub fn is_retained(bytes: &[u8]) -> bool {
        bytes.first() == Some(&RETAINED)
    }

    /// The topic of a retained record (as stored: scoped) and whether it sets a message
    /// (`false`: it clears the topic); `None` for any other record, or one too short to say.
    pub fn retained_key(bytes: &[u8]) -> Option<(&[u8], bool)> {
        let (&kind, rest) = bytes.split_first()?;
        if kind != RETAINED {
            return None;
        }
        let n = u32::from_le_bytes(rest.get(..4)?.try_into().ok()?) as usize;
        let topic = rest.get(4..4 + n)?;
        let set = *rest.get(4 + n)? == 1;
        Some((topic, set))
    }

    /// Reads one record (the whole of `bytes`).
    pub fn decode(bytes: &[u8], clock: &Clock) -> Result<Record, DecodeError> {
        let mut r = Reader(bytes);
        let record = match r.u8()? {
            RETAINED => {
                let topic = r.str()?;
                let message = match r.u8()? {
                    0 => None,
                    1 => Some(r.message(clock)?),
                    _ => return Err(DecodeError::Invalid("retained flag")),
                };
                Record::Retained { topic, message }
            }
            SESSION => Record::Session(Box::new(r.session(clock)?)),
            SESSION_ENDED => Record::SessionEnded {
                client_id: r.str()?,
                version: r.u64()?,
            },
            IDEMPOTENT => {
                let org = r.u32()?;
                let key = r.str()?;
                let mut fingerprint = [0; 32];
                for byte in &mut fingerprint {
                    *byte = r.u8()?;
                }
                Record::Idempotent(Box::new(IdempotentAnswer {
                    org,
                    key,
                    fingerprint,
                    status: r.u16()?,
                    body: r.bytes()?,
                    at_ms: r.u64()?,
                }))
            }
            _ => return Err(DecodeError::Invalid("record kind")),
        };
        if !r.0.is_empty() {
            return Err(DecodeError::Invalid("trailing bytes"));
        }
        Ok(record)
    }
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    put_bytes(out, s.as_bytes());
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.put_u32_le(b.len() as u32);
    out.put_slice(b);
}

fn put_opt_str(out: &mut Vec<u8>, s: &Option<Str>) {
    match s {
        Some(s) => {
            out.put_u8(1);
            put_str(out, s);
        }
        None => out.put_u8(0),
    }
}

fn put_properties(out: &mut Vec<u8>, p: &PublishProperties) {
    out.put_u8(p.payload_format_indicator.map_or(0xFF, |v| v));
    out.put_u8(u8::from(p.message_expiry_interval.is_some()));
    out.put_u32_le(p.message_expiry_interval.unwrap_or(0));
    put_opt_str(out, &p.response_topic);
    match &p.correlation_data {
        Some(data) => {
            out.put_u8(1);
            put_bytes(out, data);
        }
        None => out.put_u8(0),
    }
    out.put_u32_le(p.user_properties.len() as u32);
    for (k, v) in &p.user_properties {
        put_str(out, k);
        put_str(out, v);
    }
    put_opt_str(out, &p.content_type);
}

/// Encodes one message alone (the body of a cluster envelope: what another node needs to
/// deliver it, expiry as wall time).
pub fn encode_message(m: &Message, clock: &Clock, out: &mut Vec<u8>) {
    put_message(out, m, clock);
}

/// Reads a message [`encode_message`] wrote (the whole of `bytes`; every length checked).
pub fn decode_message(bytes: &[u8], clock: &Clock) -> Result<SharedMessage, DecodeError> {
    let mut r = Reader(bytes);
    let message = r.message(clock)?;
    if !r.0.is_empty() {
        return Err(DecodeError::Invalid("trailing bytes"));
    }
    Ok(message)
}

fn put_message(out: &mut Vec<u8>, m: &Message, clock: &Clock) {
    put_str(out, &m.topic);
    put_bytes(out, &m.payload);
    out.put_u8(m.qos as u8);
    out.put_u8(u8::from(m.retain));
    put_properties(out, &m.properties);
    out.put_u64_le(m.expires_at.map_or(0, |at| clock.unix_ms(at).max(1)));
    put_str(out, &m.publisher);
    put_opt_str(out, &m.namespace);
    put_opt_str(out, &m.device);
}

fn put_queued(out: &mut Vec<u8>, q: &Queued, clock: &Clock) {
    put_message(out, &q.message, clock);
    out.put_u8(q.qos as u8);
    out.put_u8(u8::from(q.retain));
    out.put_u32_le(q.subscription_ids.len() as u32);
    for id in &q.subscription_ids {
        out.put_u32_le(*id);
    }
}

fn put_session(out: &mut Vec<u8>, s: &SessionView<'_>, clock: &Clock) {
    put_str(out, s.client_id);
    out.put_u64_le(s.version);
    out.put_u32_le(s.org);
    out.put_u64_le(s.state.owner);
    out.put_u64_le(s.offline_since_ms);
    match s.will {
        Some((will, due)) => {
            out.put_u8(1);
            put_str(out, &will.topic);
            put_bytes(out, &will.payload);
            out.put_u8(will.qos as u8);
            out.put_u8(u8::from(will.retain));
            out.put_u8(u8::from(will.delay_interval.is_some()));
            out.put_u32_le(will.delay_interval.unwrap_or(0));
            put_properties(out, &will.properties);
            out.put_u64_le(due);
        }
        None => out.put_u8(0),
    }
    let state = s.state;
    out.put_u32_le(state.expiry_interval_secs);
    out.put_u16_le(state.next_packet_id);
    out.put_u64_le(state.dropped_queue_full);
    out.put_u32_le(state.subscriptions.len() as u32);
    for (filter, sub) in &state.subscriptions {
        put_str(out, filter);
        out.put_u8(sub.options.qos as u8);
        out.put_u8(u8::from(sub.options.no_local));
        out.put_u8(u8::from(sub.options.retain_as_published));
        out.put_u8(sub.options.retain_handling as u8);
        out.put_u8(u8::from(sub.identifier.is_some()));
        out.put_u32_le(sub.identifier.unwrap_or(0));
    }
    out.put_u32_le(state.inflight.len() as u32);
    for flight in state.inflight.iter() {
        out.put_u16_le(flight.packet_id);
        out.put_u8(match flight.stage {
            Stage::AwaitPubAck => 0,
            Stage::AwaitPubRec => 1,
            Stage::AwaitPubComp => 2,
        });
        put_queued(out, &flight.item, clock);
    }
    out.put_u32_le(state.queue.len() as u32);
    for item in state.queue.iter() {
        put_queued(out, item, clock);
    }
    out.put_u32_le(state.incoming_qos2.len() as u32);
    for id in state.incoming_qos2.iter() {
        out.put_u16_le(*id);
    }
}

/// A cursor over a record's bytes; every read checks the length left.
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn need(&self, n: usize) -> Result<(), DecodeError> {
        if self.0.len() < n {
            Err(DecodeError::Truncated)
        } else {
            Ok(())
        }
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        self.need(1)?;
        Ok(self.0.get_u8())
    }

    fn u16(&mut self) -> Result<u16, DecodeError> {
        self.need(2)?;
        Ok(self.0.get_u16_le())
    }

    fn u32(&mut self) -> Result<u32, DecodeError> {
        self.need(4)?;
        Ok(self.0.get_u32_le())
    }

    fn u64(&mut self) -> Result<u64, DecodeError> {
        self.need(8)?;
        Ok(self.0.get_u64_le())
    }

    fn flag(&mut self) -> Result<bool, DecodeError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(DecodeError::Invalid("flag")),
        }
    }

    fn count(&mut self) -> Result<usize, DecodeError> {
        let n = self.u32()?;
        if n > ITEMS_MAX {
            return Err(DecodeError::Invalid("count"));
        }
        Ok(n as usize)
    }

    fn bytes(&mut self) -> Result<Bytes, DecodeError> {
        let n = self.u32()? as usize;
        self.need(n)?;
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(Bytes::copy_from_slice(head))
    }

    fn str(&mut self) -> Result<Str, DecodeError> {
        let n = self.u32()? as usize;
        self.need(n)?;
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        let text = std::str::from_utf8(head).map_err(|_| DecodeError::Invalid("UTF-8"))?;
        Ok(Str::from(text))
    }

    fn opt_str(&mut self) -> Result<Option<Str>, DecodeError> {
        Ok(if self.flag()? {
            Some(self.str()?)
        } else {
            None
        })
    }

    fn qos(&mut self) -> Result<QoS, DecodeError> {
        QoS::from_u8(self.u8()?).ok_or(DecodeError::Invalid("QoS"))
    }

    fn properties(&mut self) -> Result<PublishProperties, DecodeError> {
        let format = self.u8()?;
        let has_expiry = self.flag()?;
        let expiry = self.u32()?;
        let response_topic = self.opt_str()?;
        let correlation_data = if self.flag()? {
            Some(self.bytes()?)
        } else {
            None
        };
        let n = self.count()?;
        let mut user_properties = Vec::with_capacity(n.min(64));
        for _ in 0..n {
            user_properties.push((self.str()?, self.str()?));
        }
        Ok(PublishProperties {
            payload_format_indicator: (format != 0xFF).then_some(format),
            message_expiry_interval: has_expiry.then_some(expiry),
            topic_alias: None,
            response_topic,
            correlation_data,
            user_properties,
            subscription_identifiers: Vec::new(),
            content_type: self.opt_str()?,
        })
    }

    fn message(&mut self, clock: &Clock) -> Result<SharedMessage, DecodeError> {
        let topic = self.str()?;
        let payload = self.bytes()?;
        let qos = self.qos()?;
        let retain = self.flag()?;
        let properties = self.properties()?;
        let expires_ms = self.u64()?;
        Ok(Arc::new(Message {
            topic,
            payload,
            qos,
            retain,
            properties,
            expires_at: (expires_ms != 0).then(|| clock.instant(expires_ms)),
            publisher: self.str()?,
            // No connection of this run published it.
            origin: Origin::BROKER,
            namespace: self.opt_str()?,
            device: self.opt_str()?,
        }))
    }

    fn queued(&mut self, clock: &Clock) -> Result<Queued, DecodeError> {
        let message = self.message(clock)?;
        let qos = self.qos()?;
        let retain = self.flag()?;
        let n = self.count()?;
        let mut subscription_ids = Vec::with_capacity(n.min(64));
        for _ in 0..n {
            subscription_ids.push(self.u32()?);
        }
        Ok(Queued {
            message,
            qos,
            retain,
            subscription_ids,
        })
    }

    fn session(&mut self, clock: &Clock) -> Result<SessionRecord, DecodeError> {
        let client_id = self.str()?;
        let version = self.u64()?;
        let org = self.u32()?;
        let owner = self.u64()?;
        let offline_since_ms = self.u64()?;
        let will = if self.flag()? {
            let topic = self.str()?;
            let payload = self.bytes()?;
            let qos = self.qos()?;
            let retain = self.flag()?;
            let has_delay = self.flag()?;
            let delay = self.u32()?;
            let properties = self.properties()?;
            let due = self.u64()?;
            Some((
                Will {
                    topic,
                    payload,
                    qos,
                    retain,
                    delay_interval: has_delay.then_some(delay),
                    properties,
                },
                due,
            ))
        } else {
            None
        };
        let mut state = SessionState {
            expiry_interval_secs: self.u32()?,
            next_packet_id: self.u16()?,
            dropped_queue_full: self.u64()?,
            owner,
            ..SessionState::default()
        };
        for _ in 0..self.count()? {
            let filter = self.str()?;
            let qos = self.qos()?;
            let no_local = self.flag()?;
            let retain_as_published = self.flag()?;
            let retain_handling = RetainHandling::from_u8(self.u8()?)
                .ok_or(DecodeError::Invalid("retain handling"))?;
            let has_id = self.flag()?;
            let id = self.u32()?;
            state.subscriptions.insert(
                filter,
                Subscription {
                    options: SubscriptionOptions {
                        qos,
                        no_local,
                        retain_as_published,
                        retain_handling,
                    },
                    identifier: has_id.then_some(id),
                },
            );
        }
        for _ in 0..self.count()? {
            let packet_id = self.u16()?;
            let stage = match self.u8()? {
                0 => Stage::AwaitPubAck,
                1 => Stage::AwaitPubRec,
                2 => Stage::AwaitPubComp,
                _ => return Err(DecodeError::Invalid("stage")),
            };
            let item = self.queued(clock)?;
            if packet_id == 0 || state.inflight.contains(packet_id) {
                return Err(DecodeError::Invalid("packet id"));
            }
            state.inflight.push_back(InFlight {
                packet_id,
                item,
                stage,
            });
        }
        let n = self.count()?;
        let mut queue = VecDeque::with_capacity(n.min(1024));
        for _ in 0..n {
            queue.push_back(self.queued(clock)?);
        }
        if !queue.is_empty() {
            *state.queue = queue;
        }
        for _ in 0..self.count()? {
            let id = self.u16()?;
            state.incoming_qos2.push(id);
        }
        Ok(SessionRecord {
            client_id,
            version,
            org,
            offline_since_ms,
            will,
            state,
        })
    }
}
