//! The retained part of a compacted log, taken from the log itself instead of the shard: the
//! last record of each topic (a removal drops the topic), framed again. A compaction runs this
//! on a thread of its own, so a shard with a million retained messages spends no round on them
//! (collecting them from its replica held the shard for ~0.6 s at a million).
//!
//! Two passes over the log's first `len` bytes, read in pieces: the first notes, per topic,
//! where its last record is; the second copies those records. Memory: one entry per topic
//! (its name and an offset) and one piece of the log, whatever the log's size.

use std::io::{Read, Seek, SeekFrom};

use ahash::AHashMap;

use super::codec::Record;
use super::frame;

/// Bytes read from the log at a time (a frame longer than this is read whole).
const PIECE: usize = 8 << 20;

/// Why the retained part could not be taken from the log.
#[derive(Debug, thiserror::Error)]
pub enum CompactError {
    /// The log could not be read.
    #[error("reading the log: {0}")]
    Io(#[from] std::io::Error),
    /// The log holds a frame that is not whole or not intact before `len` (it was written
    /// whole: the disk changed it).
    #[error("the log is damaged at byte {0}")]
    Damaged(u64),
}

/// Appends to `out`, framed, the latest retained record of every topic in the first `len`
/// bytes of `log` that still holds a message; returns how many.
pub fn retained_of_log<R: Read + Seek>(
    log: &mut R,
    len: u64,
    out: &mut Vec<u8>,
) -> Result<usize, CompactError> {
    // Topic (as stored) → offset of its last retained record; `None` when that record clears it.
    let mut last: AHashMap<Box<[u8]>, Option<u64>> = AHashMap::new();
    frames(log, len, |offset, payload| {
        if let Some((topic, set)) = Record::retained_key(payload) {
            let at = set.then_some(offset);
            match last.get_mut(topic) {
                Some(held) => *held = at,
                None => {
                    last.insert(topic.into(), at);
                }
            }
        }
    })?;
    let mut kept = 0;
    frames(log, len, |offset, payload| {
        if let Some((topic, true)) = Record::retained_key(payload) {
            if last.get(topic).copied().flatten() == Some(offset) {
                frame::append(out, payload);
                kept += 1;
            }
        }
    })?;
    Ok(kept)
}

/// Calls `each(offset, payload)` for every frame in the first `len` bytes of `log`.
fn frames<R: Read + Seek>(
    log: &mut R,
    len: u64,
    mut each: impl FnMut(u64, &[u8]),
) -> Result<(), CompactError> {
    log.seek(SeekFrom::Start(0))?;
    let mut piece: Vec<u8> = Vec::new();
    // Log offset of piece[0].
    let mut base = 0u64;
    let mut read = 0u64;
    loop {
        let want = (len - read).min(PIECE as u64) as usize;
        let had = piece.len();
        piece.resize(had + want, 0);
        log.read_exact(&mut piece[had..])?;
        read += want as u64;
        let end = frame::scan(&piece, |at, payload| {
            each(base + at as u64, payload);
            Ok::<(), ()>(())
        })
        .map_err(|(at, ())| CompactError::Damaged(base + at as u64))?;
        match end {
            frame::End::Clean => {
                base += piece.len() as u64;
                piece.clear();
            }
            frame::End::TornTail { len: whole } => {
                // The rest of a frame is in the next piece.
                piece.drain(..whole);
                base += whole as u64;
            }
            frame::End::Damaged { offset } => {
                return Err(CompactError::Damaged(base + offset as u64))
            }
        }
        if read == len {
            return if piece.is_empty() {
                Ok(())
            } else {
                Err(CompactError::Damaged(base))
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;
    use std::sync::Arc;

    use bytes::Bytes;
    use ringmq_proto::message::Message;
    use ringmq_proto::mqtt::{QoS, Str};

    use super::*;
    use crate::durable::tests::clock;
    use crate::durable::{Clock, Replay};

    fn retained(topic: &str, payload: Option<&str>, clock: &Clock, log: &mut Vec<u8>) {
        let message = payload.map(|p| {
            Arc::new(Message {
                retain: true,
                payload: Bytes::copy_from_slice(p.as_bytes()),
                ..(*crate::test_util::test_message(topic, b"", QoS::AtMostOnce, true)).clone()
            })
        });
        let record = Record::Retained {
            topic: Str::from(topic),
            message,
        };
        frame::append_with(log, |out| record.encode(clock, out));
    }

    fn replay(log: &[u8], clock: &Clock) -> Vec<(String, Bytes)> {
        let mut replay = Replay::default();
        let end = frame::scan(log, |_, payload| {
            replay.apply(Record::decode(payload, clock)?);
            Ok::<(), crate::durable::DecodeError>(())
        })
        .expect("decodes");
        assert_eq!(end, frame::End::Clean);
        let mut got: Vec<(String, Bytes)> = replay
            .finish()
            .retained
            .iter()
            .map(|(topic, message)| (topic.to_string(), message.payload.clone()))
            .collect();
        got.sort();
        got
    }

    /// The compacted part replays to what the whole log replays to, with one record per
    /// topic, whatever the piece boundaries cut through (pieces of 8 MiB are forced across
    /// frames by a payload larger than one).
    #[test]
    fn the_last_record_of_each_topic_is_kept_and_removals_drop_topics() {
        let clock = clock();
        let mut log = Vec::new();
        retained("a", Some("1"), &clock, &mut log);
        retained("b", Some("1"), &clock, &mut log);
        // A session record in between is not retained: skipped.
        crate::durable::frame::append(&mut log, &[2, 0, 0, 0, 0]);
        retained("a", Some("2"), &clock, &mut log);
        retained("c", Some("1"), &clock, &mut log);
        retained("b", None, &clock, &mut log);
        let big = "x".repeat(PIECE + 100);
        retained("d", Some(&big), &clock, &mut log);
        retained("c", Some("2"), &clock, &mut log);
        retained("e", None, &clock, &mut log);
        let mut whole = Vec::new();
        frame::scan(&log, |_, payload| {
            if Record::retained_key(payload).is_some() {
                frame::append(&mut whole, payload);
            }
            Ok::<(), ()>(())
        })
        .expect("scans");
        let mut out = Vec::new();
        let kept =
            retained_of_log(&mut Cursor::new(&log), log.len() as u64, &mut out).expect("compacts");
        assert_eq!(kept, 3);
        assert_eq!(replay(&out, &clock), replay(&whole, &clock));
        assert_eq!(
            replay(&out, &clock)
                .into_iter()
                .map(|(t, p)| (t, p.len()))
                .collect::<Vec<_>>(),
            vec![("a".into(), 1), ("c".into(), 1), ("d".into(), big.len())]
        );
    }

    /// Damage inside the part to compact is an error, never a silent loss; so is a length
    /// that cuts a frame.
    #[test]
    fn damage_and_a_cut_frame_are_errors() {
        let clock = clock();
        let mut log = Vec::new();
        retained("a", Some("1"), &clock, &mut log);
        let first = log.len();
        retained("b", Some("1"), &clock, &mut log);
        retained("c", Some("1"), &clock, &mut log);
        let mut damaged = log.clone();
        damaged[first + frame::HEADER + 2] ^= 0xff;
        let mut out = Vec::new();
        assert!(matches!(
            retained_of_log(&mut Cursor::new(&damaged), damaged.len() as u64, &mut out),
            Err(CompactError::Damaged(at)) if at == first as u64
        ));
        assert!(matches!(
            retained_of_log(&mut Cursor::new(&log), log.len() as u64 - 1, &mut out),
            Err(CompactError::Damaged(_))
        ));
    }
}
