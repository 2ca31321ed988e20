//! Durability, the sans-IO half: the records a shard writes to its log, their frames, and the
//! replay that turns every shard's log back into one state.
//!
//! The core produces framed records (a retained message set at its topic's home, a
//! persistent session's checkpoint, a session's end) into a buffer the driver takes; the
//! driver owns the files, the writes and the syncs. At start the driver reads every log into
//! a [`Replay`], and each shard core restores its part of the result ([`Recovered`]).

pub mod codec;
pub mod compact;
pub mod frame;

use std::sync::Arc;

use ahash::AHashMap;
use ringmq_proto::message::SharedMessage;
use ringmq_proto::mqtt::Str;

pub use codec::{
    decode_message, encode_message, encode_session, Clock, DecodeError, IdempotentAnswer, Record,
    SessionRecord, SessionView,
};

/// The state every log holds together: the latest record per key.
#[derive(Debug, Default)]
pub struct Replay {
    retained: AHashMap<Str, Option<SharedMessage>>,
    sessions: AHashMap<Str, Session>,
    idempotent: AHashMap<(u32, Str), Box<IdempotentAnswer>>,
    /// Records read (all logs).
    pub records: u64,
}

/// A session key's latest record: its state, or its end.
#[derive(Debug)]
enum Session {
    Live(Box<SessionRecord>),
    Ended(u64),
}

impl Session {
    fn version(&self) -> u64 {
        match self {
            Session::Live(record) => record.version,
            Session::Ended(version) => *version,
        }
    }
}

impl Replay {
    /// Applies one record: a later retained record for a topic replaces an earlier one; a
    /// session keeps its highest version (a session that moved between shards has records in
    /// both logs); at the same version the later record wins (one log's order: a clean start
    /// ends the old session and checkpoints the new one in the same instant, as the simulator
    /// found, whose clock stands still within a step).
    pub fn apply(&mut self, record: Record) {
        self.records += 1;
        match record {
            Record::Retained { topic, message } => {
                self.retained.insert(topic, message);
            }
            Record::Session(session) => {
                let newer = self
                    .sessions
                    .get(&session.client_id)
                    .is_none_or(|held| session.version >= held.version());
                if newer {
                    self.sessions
                        .insert(session.client_id.clone(), Session::Live(session));
                }
            }
            Record::SessionEnded { client_id, version } => {
                let newer = self
                    .sessions
                    .get(&client_id)
                    .is_none_or(|held| version >= held.version());
                if newer {
                    self.sessions.insert(client_id, Session::Ended(version));
                }
            }
            Record::Idempotent(answer) => {
                // The first answer stands (a compaction may write it again later).
                let slot = (answer.org, answer.key.clone());
                let older = self
                    .idempotent
                    .get(&slot)
                    .is_none_or(|held| answer.at_ms < held.at_ms);
                if older {
                    self.idempotent.insert(slot, answer);
                }
            }
        }
    }

    /// This replay's sessions and answers with the retained messages of `retained` (a replay
    /// of the same logs that applied only their retained records).
    pub fn with_retained_of(mut self, retained: Replay) -> Replay {
        self.retained = retained.retained;
        self.records += retained.records;
        self
    }

    /// The state to restore: retained messages and live sessions, ends dropped.
    pub fn finish(self) -> Recovered {
        // Unsorted: the order retained messages go into a replica changes nothing, and
        // sorting a million topics cost most of a second of every start.
        let retained: Vec<(Str, SharedMessage)> = self
            .retained
            .into_iter()
            .filter_map(|(topic, message)| Some((topic, message?)))
            .collect();
        let mut sessions: Vec<Box<SessionRecord>> = self
            .sessions
            .into_values()
            .filter_map(|session| match session {
                Session::Live(record) => Some(record),
                Session::Ended(_) => None,
            })
            .collect();
        sessions.sort_unstable_by(|a, b| a.client_id.cmp(&b.client_id));
        let mut idempotent: Vec<Box<IdempotentAnswer>> = self.idempotent.into_values().collect();
        idempotent.sort_unstable_by_key(|answer| answer.at_ms);
        Recovered {
            replica: Default::default(),
            retained,
            sessions,
            idempotent,
        }
    }
}

/// What a start recovered from the logs, shared by every shard: each restores the sessions
/// homed on it and every retained message and subscription into its replica.
#[derive(Debug, Default)]
pub struct Recovered {
    /// Retained messages by scoped topic, in no particular order.
    pub retained: Vec<(Str, SharedMessage)>,
    /// With one shard, its retained replica, filled while the logs were read (then
    /// `retained` is empty): the shard takes it instead of building one.
    pub replica: std::sync::Mutex<Option<crate::retained::RetainedReplica>>,
    /// Live persistent sessions, sorted by client id.
    pub sessions: Vec<Box<SessionRecord>>,
    /// First answers to REST requests with an `Idempotency-Key`, oldest first (the driver
    /// keeps those still in their window).
    pub idempotent: Vec<Box<IdempotentAnswer>>,
}

/// The handle shards share.
pub type SharedRecovered = Arc<Recovered>;

#[cfg(test)]
mod tests;
