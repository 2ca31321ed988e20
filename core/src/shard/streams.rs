//! Stream subscribers (the WebSocket and SSE streams of the HTTP front door) on a shard.
//!
//! A stream subscriber is a subscriber of its own kind: it sits in the shard's stream trie under
//! its org-scoped filter (and in the replicated index, like a session's filter, so publishes on
//! other shards reach it), and every match leaves as [`Output::StreamItem`] for the driver's
//! bounded ring of that stream (drop oldest: a stream never stalls the shard or the publishers).
//!
//! A stream belongs to the API key that opened it. An SSE stream kept after its client left is
//! named by a random [`ResumeToken`] (carried in every event id), and is resumed only by the same
//! key of the same org asking for the same filter. Every new control-plane snapshot is checked
//! against the open streams ([`Shard::recheck_streams`]): a stream whose key was revoked, whose
//! org was deleted or whose key may no longer subscribe to its filter is ended at once, kept or
//! not. Each org holds at most `org_limits.streams_max` streams per shard, kept ones included.

use std::fmt;
use std::time::{Duration, Instant};

use ahash::AHashMap;

use super::{Output, Shard};
use crate::control::snapshot::{KeyAuth, KeyKind, OrgNum};
use ringmq_proto::message::SharedMessage;
use ringmq_proto::mqtt::Str;

/// How long a closed SSE stream keeps its ring (and keeps filling it) for a reconnect that
/// sends `Last-Event-ID`.
pub const DETACHED_KEEP: Duration = Duration::from_secs(60);

/// Closed SSE streams kept per shard at most; beyond it a closing stream is dropped at once
/// (clients that reconnect in a loop must not pile up rings).
pub const DETACHED_MAX: usize = 1024;

/// 128 random bits naming one stream for an SSE resume. Stream ids used to be small counters,
/// which anyone could guess; a token is only ever compared, never derived from or ordered.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ResumeToken(u128);

impl fmt::Debug for ResumeToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Half of what resumes a stream: kept out of logs like the keys themselves.
        f.write_str("ResumeToken(***)")
    }
}

impl ResumeToken {
    /// A fresh token from the operating system's random source.
    pub fn random() -> Result<ResumeToken, StreamRefused> {
        let mut bytes = [0u8; 16];
        getrandom::getrandom(&mut bytes).map_err(|_| StreamRefused::NoRandom)?;
        Ok(ResumeToken(u128::from_le_bytes(bytes)))
    }
}

/// An SSE event id: `{token}-{seq}`, the stream's [`ResumeToken`] as 32 lowercase hex digits,
/// a dash, and the event's sequence number within the stream in decimal (from 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventId {
    /// The stream.
    pub token: ResumeToken,
    /// The event within it.
    pub seq: u64,
}

/// Hex digits of a token in an event id.
const TOKEN_HEX_DIGITS: usize = 32;

/// Most decimal digits of a sequence number (`u64::MAX` has 20).
const SEQ_DIGITS_MAX: usize = 20;

impl EventId {
    /// Reads a `Last-Event-ID` value back; anything but the exact form is `None` (a hostile or
    /// stale value simply gets a fresh stream).
    pub fn parse(text: &str) -> Option<EventId> {
        let text = text.trim_matches(' ');
        if text.len() > TOKEN_HEX_DIGITS + 1 + SEQ_DIGITS_MAX {
            return None;
        }
        let (token, seq) = text.split_once('-')?;
        if token.len() != TOKEN_HEX_DIGITS
            || !token.bytes().all(|byte| byte.is_ascii_hexdigit())
            || seq.is_empty()
            || !seq.bytes().all(|byte| byte.is_ascii_digit())
        {
            return None;
        }
        Some(EventId {
            token: ResumeToken(u128::from_str_radix(token, 16).ok()?),
            seq: seq.parse().ok()?,
        })
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}-{}", self.token.0, self.seq)
    }
}

/// Why a stream could not be opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum StreamRefused {
    /// The org already holds `org_limits.streams_max` streams on this shard.
    #[error("the org already has {max} streams open on this shard (org_limits.streams_max)")]
    OrgStreamsFull {
        /// The cap.
        max: u64,
    },
    /// The operating system gave no random bytes for the resume token.
    #[error("no random bytes for the stream's resume token")]
    NoRandom,
    /// The shard is shutting down.
    #[error("the broker is shutting down")]
    ShuttingDown,
}

/// Why the shard ended a stream its client still had open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamEnd {
    /// The key that opened it was revoked.
    KeyRevoked,
    /// The key's org was deleted.
    OrgDeleted,
    /// The key's rules no longer let it subscribe to the stream's filter.
    Forbidden,
}

impl StreamEnd {
    /// The API error code the SSE `revoked` event carries (as `/v1` would answer the request now).
    pub fn code(self) -> &'static str {
        match self {
            StreamEnd::KeyRevoked | StreamEnd::OrgDeleted => "unauthorized",
            StreamEnd::Forbidden => "forbidden",
        }
    }

    /// One sentence for the client (also the WebSocket close reason, so at most 123 bytes).
    pub fn detail(self) -> &'static str {
        match self {
            StreamEnd::KeyRevoked => "the stream's API key was revoked",
            StreamEnd::OrgDeleted => "the stream's org was deleted",
            StreamEnd::Forbidden => "the stream's API key may no longer subscribe to its topic",
        }
    }
}

/// May `key` read a stream of `topic` (unscoped)? Secret keys read their whole org; public and
/// restricted keys what their rules let them subscribe to.
pub fn key_may_stream(key: &KeyAuth, topic: &str) -> bool {
    match key.kind {
        KeyKind::Secret => true,
        KeyKind::Public | KeyKind::Restricted => key.acl.may_subscribe(topic, "", ""),
    }
}

/// One entry of a stream's ring.
#[derive(Debug, Clone)]
pub struct StreamItem {
    /// Sequence number within the stream (the SSE event id's second part).
    pub seq: u64,
    /// The message.
    pub message: SharedMessage,
    /// Sent from the retained store when the stream opened.
    pub retained: bool,
    /// Unix milliseconds when the shard received it for this stream.
    pub received_ms: u64,
}

/// What a stream asks for; a resume must ask for exactly the same.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamFilter {
    /// The org (routing number).
    pub org: u32,
    /// MQTT filter as the client gave it (unscoped), e.g. `#` or `devices/+/temp`.
    pub topic: String,
    /// Only messages published by this client id.
    pub device: Option<String>,
    /// Only messages published by users with this namespace.
    pub namespace: Option<String>,
}

/// The API key a stream was opened with: checked on resume and on every snapshot change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamOwner {
    /// The key's org.
    pub org: OrgNum,
    /// `key_…`.
    pub key_id: String,
    /// SHA-256 of the key's secret (how the snapshot finds keys; the secret is not kept).
    pub key_hash: [u8; 32],
}

/// What the driver needs of a stream the shard opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamState {
    /// Shard-local id (the key of the shard's tables; never shown to clients).
    pub id: u32,
    /// Names the stream in SSE event ids.
    pub token: ResumeToken,
}

/// A stream registered on the shard.
#[derive(Debug)]
pub struct StreamEntry {
    state: StreamState,
    /// When the client went away (SSE keeps the stream for a while), if it did.
    detached_at: Option<Instant>,
    /// The org-scoped filter in the trie and index.
    filter: Str,
    /// What the client asked for.
    request: StreamFilter,
    /// Who asked.
    owner: StreamOwner,
}

/// The shard's bookkeeping of streams besides the entries themselves.
#[derive(Debug, Default)]
pub struct StreamBook {
    /// Last shard-local id handed out.
    counter: u32,
    /// Stream id by resume token.
    tokens: AHashMap<ResumeToken, u32>,
    /// Streams per org on this shard, kept (detached) ones included.
    per_org: AHashMap<OrgNum, u64>,
}

impl Shard {
    /// Registers a stream subscriber for `owner`; retained messages matching its filter leave
    /// first, as [`Output::StreamItem`]s. Refused when the org holds `streams_max` streams on
    /// this shard and none of them is a kept one to drop.
    pub fn open_stream(
        &mut self,
        filter: &StreamFilter,
        owner: &StreamOwner,
        streams_max: u64,
        now: Instant,
    ) -> Result<StreamState, StreamRefused> {
        let open = self.streams.book.per_org.get(&filter.org).copied();
        if open.unwrap_or(0) >= streams_max && !self.drop_oldest_detached(filter.org) {
            return Err(StreamRefused::OrgStreamsFull { max: streams_max });
        }
        let token = ResumeToken::random()?;
        let scope = ringmq_router::org_scope(filter.org);
        let scoped = Str::from(ringmq_router::scoped(&scope, &filter.topic));
        // Ids only key the shard's tables; skipping the ones in use keeps a long-lived stream
        // safe from a wrapped counter.
        let mut id = self.streams.book.counter.wrapping_add(1);
        while self.streams.entries.contains_key(&id) {
            id = id.wrapping_add(1);
        }
        self.streams.book.counter = id;
        let state = StreamState { id, token };
        let entry = StreamEntry {
            state,
            detached_at: None,
            filter: scoped.clone(),
            request: filter.clone(),
            owner: owner.clone(),
        };
        let mut retained = Vec::new();
        self.replica
            .retained
            .for_each_match(&scoped, |message| retained.push(message.clone()));
        for message in retained {
            if entry.wants(&message) {
                self.outputs.push_back(Output::StreamItem {
                    id,
                    message,
                    retained: true,
                });
            }
        }
        self.streams.trie.insert(&scoped, id, ());
        self.filter_added(&scoped);
        self.streams.entries.insert(id, entry);
        self.streams.book.tokens.insert(token, id);
        *self.streams.book.per_org.entry(filter.org).or_insert(0) += 1;
        self.stats.stream_subscribers.add(1);
        self.flush(now);
        Ok(state)
    }

    /// A detached stream of this shard named by `token`, reattached for a reconnecting client,
    /// but only when the same key of the same org asks for the same filter: anyone else gets
    /// `None` (and a fresh stream), whatever event id they send.
    pub fn reattach_stream(
        &mut self,
        token: ResumeToken,
        filter: &StreamFilter,
        owner: &StreamOwner,
    ) -> Option<StreamState> {
        let id = *self.streams.book.tokens.get(&token)?;
        let entry = self.streams.entries.get_mut(&id)?;
        entry.detached_at?;
        if entry.owner != *owner || entry.request != *filter {
            return None;
        }
        entry.detached_at = None;
        self.stats.stream_subscribers.add(1);
        Some(entry.state)
    }

    /// The client of a stream went away: drop it now, or (`keep`) after [`DETACHED_KEEP`].
    pub fn close_stream(&mut self, id: u32, keep: bool, now: Instant) {
        self.stats.stream_subscribers.add(-1);
        if keep && self.streams.entries.len() - self.attached_streams() < DETACHED_MAX {
            if let Some(entry) = self.streams.entries.get_mut(&id) {
                entry.detached_at = Some(now);
                return;
            }
        }
        self.remove_stream(id);
    }

    fn remove_stream(&mut self, id: u32) {
        let Some(entry) = self.streams.entries.remove(&id) else {
            return;
        };
        self.outputs.push_back(Output::StreamRemoved(id));
        self.streams.book.tokens.remove(&entry.state.token);
        if let Some(open) = self.streams.book.per_org.get_mut(&entry.request.org) {
            *open = open.saturating_sub(1);
            if *open == 0 {
                self.streams.book.per_org.remove(&entry.request.org);
            }
        }
        self.streams.trie.remove(&entry.filter, id);
        self.filter_removed(&entry.filter);
    }

    /// Drops the org's stream that has been detached longest, to make room; false if it has
    /// none (every stream it holds here has a client).
    fn drop_oldest_detached(&mut self, org: OrgNum) -> bool {
        let oldest = self
            .streams
            .entries
            .iter()
            .filter(|(_, entry)| entry.request.org == org)
            .filter_map(|(id, entry)| entry.detached_at.map(|at| (at, *id)))
            .min();
        match oldest {
            Some((_, id)) => {
                self.remove_stream(id);
                true
            }
            None => false,
        }
    }

    /// Ends every stream (attached or kept) whose key is gone, whose org is gone, or whose key
    /// may no longer subscribe to its filter, under the current snapshot. The shard calls it
    /// whenever it swaps in a new snapshot, so a revocation reaches open streams at once.
    pub fn recheck_streams(&mut self, now: Instant) {
        if self.streams.entries.is_empty() {
            return;
        }
        let snapshot = std::sync::Arc::clone(&self.snapshot);
        let ended: Vec<(u32, StreamEnd)> = self
            .streams
            .entries
            .iter()
            .filter_map(|(id, entry)| {
                let owner = &entry.owner;
                let verdict = if snapshot.org(owner.org).is_none() {
                    Some(StreamEnd::OrgDeleted)
                } else {
                    match snapshot.key_by_hash(&owner.key_hash) {
                        Some(key) if key.id == owner.key_id && key.org == owner.org => {
                            (!key_may_stream(key, &entry.request.topic))
                                .then_some(StreamEnd::Forbidden)
                        }
                        _ => Some(StreamEnd::KeyRevoked),
                    }
                };
                verdict.map(|why| (*id, why))
            })
            .collect();
        for (id, why) in ended {
            if self.streams.entries.contains_key(&id) {
                tracing::info!(stream = id, reason = why.detail(), "stream ended");
                self.outputs.push_back(Output::StreamEnded { id, why });
            }
            // Out of the trie and the resume table now: nothing more is delivered to it, and
            // a kept one cannot be resumed.
            self.remove_stream(id);
        }
        self.flush(now);
    }

    /// Streams with a client attached.
    pub fn attached_streams(&self) -> usize {
        self.streams
            .entries
            .values()
            .filter(|entry| entry.detached_at.is_none())
            .count()
    }

    /// Drops detached streams kept longer than [`DETACHED_KEEP`] (housekeeping).
    pub fn expire_streams(&mut self, now: Instant) {
        let expired: Vec<u32> = self
            .streams
            .entries
            .iter()
            .filter(|(_, entry)| {
                entry
                    .detached_at
                    .is_some_and(|at| now.saturating_duration_since(at) >= DETACHED_KEEP)
            })
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            self.remove_stream(id);
        }
        self.flush(now);
    }

    /// Hands a routed message to every matching stream on this shard.
    pub(super) fn deliver_streams(&mut self, message: &SharedMessage) {
        if self.streams.entries.is_empty() {
            return;
        }
        let (streams, outputs) = (&self.streams.entries, &mut self.outputs);
        self.streams.trie.for_each_match(&message.topic, |id, _| {
            if streams.get(&id).is_some_and(|entry| entry.wants(message)) {
                outputs.push_back(Output::StreamItem {
                    id,
                    message: SharedMessage::clone(message),
                    // The publish's own flag: a live retained publish reads as retained.
                    retained: message.retain,
                });
            }
        });
    }
}

impl StreamEntry {
    /// Whether the stream's `?device=` and `?ns=` let `message` through.
    fn wants(&self, message: &SharedMessage) -> bool {
        if let Some(device) = &self.request.device {
            let publisher = match &message.device {
                Some(certified) => &**certified,
                None => ringmq_router::strip_scope(&message.publisher).1,
            };
            if publisher != device.as_str() {
                return false;
            }
        }
        if let Some(namespace) = &self.request.namespace {
            if message.namespace.as_deref() != Some(namespace.as_str()) {
                return false;
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::control::acl::{Acl, Action, Permission, Rule};
    use crate::control::key_hash::key_hash;
    use crate::control::model::OrgSettings;
    use crate::control::snapshot::{OrgInfo, Snapshot};

    fn now() -> Instant {
        Instant::now()
    }

    /// The streams the shard ended so far, and why.
    fn ended(s: &mut Shard) -> Vec<(u32, StreamEnd)> {
        super::super::tests::outputs(s)
            .into_iter()
            .filter_map(|output| match output {
                Output::StreamEnded { id, why } => Some((id, why)),
                _ => None,
            })
            .collect()
    }

    fn shard() -> Shard {
        super::super::tests::shard(1).remove(0)
    }

    fn org(num: OrgNum) -> OrgInfo {
        OrgInfo {
            num,
            id: format!("org_{num}"),
            name: format!("org {num}"),
            settings: OrgSettings::default(),
        }
    }

    /// A public key of `org` that may subscribe to `allowed`.
    fn public_key(id: &str, org: OrgNum, allowed: &str) -> KeyAuth {
        KeyAuth {
            id: id.to_owned(),
            org,
            kind: KeyKind::Public,
            root: false,
            acl: Acl::from_rules(vec![Rule {
                permission: Permission::Allow,
                action: Action::Subscribe,
                topic: allowed.to_owned(),
            }]),
            generation: 1,
        }
    }

    fn owner(key: &KeyAuth) -> StreamOwner {
        StreamOwner {
            org: key.org,
            key_id: key.id.clone(),
            key_hash: key_hash(&key.id),
        }
    }

    fn filter(org: OrgNum, topic: &str) -> StreamFilter {
        StreamFilter {
            org,
            topic: topic.to_owned(),
            device: None,
            namespace: None,
        }
    }

    /// Orgs 0 and 1 with the given keys (each key's secret is its id, for the test).
    fn snapshot(version: u64, orgs: &[OrgNum], keys: &[&KeyAuth]) -> Arc<Snapshot> {
        let mut snapshot = Snapshot::new(version);
        for &num in orgs {
            snapshot.insert_org(org(num));
        }
        for key in keys {
            snapshot.insert_key(key_hash(&key.id), (*key).clone());
        }
        Arc::new(snapshot)
    }

    #[test]
    fn event_ids_round_trip_and_nothing_else_parses() {
        let id = EventId {
            token: ResumeToken(0x0123_4567_89ab_cdef_0011_2233_4455_6677),
            seq: 42,
        };
        let text = id.to_string();
        assert_eq!(text, "0123456789abcdef0011223344556677-42");
        assert_eq!(EventId::parse(&text), Some(id));
        assert_eq!(EventId::parse(&format!(" {text} ")), Some(id));
        let max = format!("{:032x}-{}", u128::MAX, u64::MAX);
        assert_eq!(EventId::parse(&max).map(|id| id.seq), Some(u64::MAX));
        for hostile in [
            "",
            "4294967296",
            "-1",
            "18446744073709551616",
            "0123456789abcdef0011223344556677",
            "0123456789abcdef0011223344556677-",
            "0123456789abcdef0011223344556677--1",
            "0123456789abcdef0011223344556677-+1",
            "0123456789abcdef0011223344556677-18446744073709551616",
            "0123456789abcdef001122334455667-1",
            "+123456789abcdef0011223344556677-1",
            "0123456789abcdef00112233445566zz-1",
            "0123456789abcdef0011223344556677-1\u{1}",
            "0123456789abcdef0011223344556677-１",
            "abc",
        ] {
            assert_eq!(EventId::parse(hostile), None, "{hostile:?}");
        }
        assert_eq!(EventId::parse(&"9".repeat(4096)), None);
    }

    #[test]
    fn resume_tokens_differ() {
        let a = ResumeToken::random().unwrap();
        let b = ResumeToken::random().unwrap();
        assert_ne!(a, b);
        assert_eq!(format!("{a:?}"), "ResumeToken(***)");
    }

    /// Finding 1: a kept stream resumes only for the same org, key and filter.
    #[test]
    fn a_kept_stream_resumes_only_for_its_key_org_and_filter() {
        let mut s = shard();
        let a = public_key("key_a", 0, "#");
        let a2 = public_key("key_a2", 0, "#");
        let b = public_key("key_b", 1, "#");
        s.snapshot = snapshot(1, &[0, 1], &[&a, &a2, &b]);
        let state = s
            .open_stream(&filter(0, "pay/#"), &owner(&a), 10, now())
            .unwrap();
        s.close_stream(state.id, true, now());
        let token = state.token;
        for (who, what) in [
            (owner(&b), filter(1, "pay/#")),
            (owner(&b), filter(0, "pay/#")),
            (owner(&a2), filter(0, "pay/#")),
            (owner(&a), filter(0, "#")),
            (
                owner(&a),
                StreamFilter {
                    device: Some("d".to_owned()),
                    ..filter(0, "pay/#")
                },
            ),
        ] {
            assert!(s.reattach_stream(token, &what, &who).is_none(), "{who:?}");
        }
        let other = ResumeToken::random().unwrap();
        assert!(s
            .reattach_stream(other, &filter(0, "pay/#"), &owner(&a))
            .is_none());
        let back = s
            .reattach_stream(token, &filter(0, "pay/#"), &owner(&a))
            .expect("its own key resumes it");
        assert_eq!(back.id, state.id);
        assert!(
            s.reattach_stream(token, &filter(0, "pay/#"), &owner(&a))
                .is_none(),
            "an attached stream is not taken over"
        );
    }

    /// Finding 6: revoking a key, deleting an org or taking a right ends the streams it governs,
    /// attached and kept alike.
    #[test]
    fn snapshot_changes_end_the_streams_they_govern() {
        let mut s = shard();
        let a = public_key("key_a", 1, "fin/#");
        let b = public_key("key_b", 1, "#");
        let c = public_key("key_c", 2, "#");
        s.snapshot = snapshot(1, &[0, 1, 2], &[&a, &b, &c]);
        let on_a = s
            .open_stream(&filter(1, "fin/#"), &owner(&a), 10, now())
            .unwrap();
        let kept_b = s
            .open_stream(&filter(1, "x"), &owner(&b), 10, now())
            .unwrap();
        s.close_stream(kept_b.id, true, now());
        let on_b = s
            .open_stream(&filter(1, "x"), &owner(&b), 10, now())
            .unwrap();
        let on_c = s
            .open_stream(&filter(2, "#"), &owner(&c), 10, now())
            .unwrap();

        s.snapshot = snapshot(2, &[0, 1, 2], &[&a, &b, &c]);
        s.recheck_streams(now());
        assert_eq!(s.streams.entries.len(), 4, "nothing changed");
        assert!(ended(&mut s).is_empty());

        // a loses its right to fin/#.
        let a_narrowed = public_key("key_a", 1, "other/#");
        s.snapshot = snapshot(3, &[0, 1, 2], &[&a_narrowed, &b, &c]);
        s.recheck_streams(now());
        assert_eq!(ended(&mut s), [(on_a.id, StreamEnd::Forbidden)]);

        // b is revoked: its attached and its kept stream go.
        s.snapshot = snapshot(4, &[0, 1, 2], &[&a_narrowed, &c]);
        s.recheck_streams(now());
        let mut revoked = ended(&mut s);
        revoked.sort_by_key(|(id, _)| *id);
        let mut expected = [
            (kept_b.id, StreamEnd::KeyRevoked),
            (on_b.id, StreamEnd::KeyRevoked),
        ];
        expected.sort_by_key(|(id, _)| *id);
        assert_eq!(revoked, expected);
        assert!(s
            .reattach_stream(kept_b.token, &filter(1, "x"), &owner(&b))
            .is_none());

        // Org 2 is deleted (its key with it).
        s.snapshot = snapshot(5, &[0, 1], &[&a_narrowed]);
        s.recheck_streams(now());
        assert_eq!(ended(&mut s), [(on_c.id, StreamEnd::OrgDeleted)]);
        assert!(s.streams.entries.is_empty() && s.streams.book.tokens.is_empty());
        assert!(s.streams.book.per_org.is_empty());
        for state in [&on_a, &on_b, &on_c] {
            s.close_stream(state.id, true, now());
        }
        assert!(s.streams.entries.is_empty());
    }

    /// Finding 7: an org holds at most `streams_max` streams per shard; kept ones make room.
    #[test]
    fn the_org_cap_drops_kept_streams_before_refusing() {
        let mut s = shard();
        let a = public_key("key_a", 1, "#");
        let b = public_key("key_b", 2, "#");
        let first = s
            .open_stream(&filter(1, "#"), &owner(&a), 2, now())
            .unwrap();
        let second = s
            .open_stream(&filter(1, "#"), &owner(&a), 2, now())
            .unwrap();
        assert_eq!(
            s.open_stream(&filter(1, "#"), &owner(&a), 2, now()).err(),
            Some(StreamRefused::OrgStreamsFull { max: 2 })
        );
        assert!(
            s.open_stream(&filter(2, "#"), &owner(&b), 2, now()).is_ok(),
            "another org is not affected"
        );
        s.close_stream(first.id, true, now());
        let third = s
            .open_stream(&filter(1, "#"), &owner(&a), 2, now())
            .unwrap();
        assert!(
            s.reattach_stream(first.token, &filter(1, "#"), &owner(&a))
                .is_none(),
            "the kept stream made room"
        );
        s.close_stream(second.id, false, now());
        assert!(s.open_stream(&filter(1, "#"), &owner(&a), 2, now()).is_ok());
        s.close_stream(third.id, false, now());
    }

    /// The frame's `retained` is the publish's retain flag: a live retained publish reads as
    /// retained, a plain one does not (the seed's stream frame).
    #[test]
    fn a_live_retained_publish_reaches_a_stream_as_retained() {
        let mut s = shard();
        let a = public_key("key_a", 0, "#");
        s.snapshot = snapshot(1, &[0], &[&a]);
        let state = s
            .open_stream(&filter(0, "live/#"), &owner(&a), 10, now())
            .unwrap();
        let scope = ringmq_router::org_scope(0);
        for (topic, retain) in [("live/kept", true), ("live/plain", false)] {
            let scoped = ringmq_router::scoped(&scope, topic);
            let message = crate::test_util::test_message(
                &scoped,
                b"v",
                ringmq_proto::mqtt::QoS::AtMostOnce,
                retain,
            );
            s.deliver_streams(&message);
        }
        let seen: Vec<(String, bool)> = super::super::tests::outputs(&mut s)
            .into_iter()
            .filter_map(|output| match output {
                Output::StreamItem {
                    id,
                    message,
                    retained,
                } if id == state.id => Some((message.topic.to_string(), retained)),
                _ => None,
            })
            .collect();
        let scoped = |t: &str| ringmq_router::scoped(&scope, t).to_string();
        assert_eq!(
            seen,
            [(scoped("live/kept"), true), (scoped("live/plain"), false)]
        );
    }
}
