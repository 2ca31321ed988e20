//! A connection's reading state while no task reads it (parked), and the adaptive read room
//! it carries: what a quiet connection keeps besides its session and socket.

use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::BytesMut;

use super::link::ConnShared;
use crate::mqtt::ProtocolVersion;
use ringmq_core::shard::Slot;

/// A read that waited this long for data means the connection is quiet: its read room shrinks.
pub(super) const QUIET_AFTER: Duration = Duration::from_millis(500);

/// How long a connection stays parked before its socket is put to sleep (if its writer is idle
/// then too): long enough that a client in a request/response exchange never pays for it.
pub(super) const DOZE_AFTER: Duration = Duration::from_secs(1);

/// Reads smaller than this much spare room make us reserve a fresh chunk first.
pub(super) const READ_SPARE_MIN: usize = 4096;

/// Makes room for a read of about `chunk` bytes when little is left.
pub(super) fn ensure_spare(buf: &mut BytesMut, chunk: usize) {
    if buf.capacity() - buf.len() < READ_SPARE_MIN.min(chunk) {
        buf.reserve(chunk);
    }
}

/// How much room the next read gets: an idle connection holds a small buffer (memory per idle
/// connection is what a fleet broker is judged by); a connection whose reads fill the room gets
/// twice as much next time, up to the read budget.
pub(super) struct ReadRoom {
    // u32: every connection's parked state carries these (the budget is far below 4 GiB).
    pub(super) room: u32,
    pub(super) min: u32,
    pub(super) max: u32,
    /// The connection is quiet: wait for data without a buffer (and without a reading task)
    /// once what was read is handled. Set after a long wait for data, cleared by a read that
    /// fills its room or by [`QUICK_WAKES_ACTIVE`] wake-ups in a row soon after parking.
    pub(super) quiet: bool,
    /// Wake-ups in a row that came soon after parking.
    pub(super) quick_wakes: u8,
}

/// Wake-ups in a row soon after parking that make a connection active (it then reads the
/// normal way instead of parking after each packet). More than one: a device that sends
/// SUBSCRIBE right after its CONNACK, and maybe a PUBLISH, and then nothing for minutes must
/// stay in the park set, or it keeps a pending read (a task, a buffer, an awake socket) until
/// its next packet.
pub(super) const QUICK_WAKES_ACTIVE: u8 = 3;

impl ReadRoom {
    pub(super) fn new(min: usize, max: usize) -> Self {
        let max = u32::try_from(max).unwrap_or(u32::MAX);
        let min = u32::try_from(min)
            .unwrap_or(u32::MAX)
            .clamp(64, max.max(64));
        ReadRoom {
            room: min,
            min,
            max: max.max(min),
            // A new connection parks until its client sends more than its CONNECT: most idle
            // fleet connections never do.
            quiet: true,
            quick_wakes: 0,
        }
    }

    /// Prepares `buf` for the next read.
    pub(super) fn prepare(&self, buf: &mut BytesMut) {
        let room = self.room as usize;
        if buf.is_empty() && buf.capacity() > room * 4 {
            // Quiet again after a burst or a large packet: give the memory back.
            *buf = BytesMut::with_capacity(room);
        } else if buf.capacity() - buf.len() < room.min(READ_SPARE_MIN) {
            buf.reserve(room);
        }
    }

    /// Adapts to the last read: one that used all its room gets the whole read budget next; one
    /// that waited a long time for data falls back to the minimum. A busy connection keeps its room even when
    /// a read comes back short: shrinking it would cut a fan-out publisher's rounds to a few
    /// messages and with them every subscriber's write coalescing (7 M → 1.6 M deliveries/s in
    /// `ringmq-loadgen fanout --subs 1000`).
    pub(super) fn after_read(&mut self, filled: bool, waited: Duration) {
        if filled {
            // Data is waiting: go straight to the full budget (doubling step by step left
            // fan-out rounds small for too long).
            self.room = self.max;
            self.quiet = false;
        } else if waited >= QUIET_AFTER {
            self.room = self.min;
            self.quiet = true;
            self.quick_wakes = 0;
        }
    }

    /// Adapts to a wake-up after `parked`: data that came soon after parking means the
    /// connection is active again, and parking before every read would cost it a task and a
    /// poll per packet.
    pub(super) fn after_park(&mut self, parked: Duration) {
        if parked >= QUIET_AFTER {
            self.quick_wakes = 0;
            return;
        }
        self.quick_wakes = self.quick_wakes.saturating_add(1);
        if self.quick_wakes >= QUICK_WAKES_ACTIVE {
            self.quiet = false;
            self.quick_wakes = 0;
        }
    }
}

/// A connection's reading side while no task reads it: what the next read loop needs. This is
/// what an idle connection keeps besides its session and socket, so it stays a few words.
/// (Its read half waits in [`ConnShared`], or sleeps with the socket.)
pub struct Parked {
    pub(super) conn: Rc<ConnShared>,
    pub(super) link: Connected,
    /// When reading stopped (`None`: not yet started).
    pub(super) since: Option<Instant>,
}

impl Parked {
    /// Puts the socket to sleep if it has been parked a while and its writer is idle. `false`
    /// when the socket turned out to be lost: the value must leave the park set.
    pub(super) fn doze(&mut self, now: Instant) -> bool {
        let parked_long = self
            .since
            .is_some_and(|since| now.saturating_duration_since(since) >= DOZE_AFTER);
        !parked_long || self.conn.doze().is_ok()
    }
}

/// What the read loop needs of a connected session.
pub struct Connected {
    pub(super) slot: Slot,
    pub(super) version: ProtocolVersion,
    pub(super) packet_size_max: u32,
    pub(super) room: ReadRoom,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_connection_parks_until_it_is_busy() {
        let room = ReadRoom::new(256, 65536);
        assert!(
            room.quiet,
            "a fresh connection waits for data without a buffer"
        );
        assert_eq!(room.room, 256);
    }

    #[test]
    fn data_soon_after_parking_ends_quiet_mode() {
        let mut room = ReadRoom::new(256, 65536);
        for _ in 1..QUICK_WAKES_ACTIVE {
            room.after_park(Duration::from_millis(2));
        }
        assert!(
            room.quiet,
            "a device that subscribes right after connecting, then idles, stays parked"
        );
        room.after_park(Duration::from_millis(2));
        assert!(
            !room.quiet,
            "an active client must not pay a park per packet"
        );
        let mut slow = ReadRoom::new(256, 65536);
        for _ in 0..10 {
            slow.after_park(Duration::from_millis(2));
            slow.after_park(QUIET_AFTER);
        }
        slow.after_park(Duration::from_millis(2));
        assert!(slow.quiet, "only wake-ups in a row count");
        let mut idle = ReadRoom::new(256, 65536);
        idle.after_park(QUIET_AFTER);
        assert!(
            idle.quiet,
            "a device that speaks once a minute stays parked"
        );
    }

    #[test]
    fn a_long_wait_makes_a_connection_quiet_and_a_full_read_makes_it_busy() {
        let mut room = ReadRoom::new(256, 65536);
        room.after_park(Duration::ZERO);
        room.after_read(true, Duration::ZERO);
        assert!(!room.quiet);
        assert_eq!(room.room, 65536, "a full read gets the whole budget");
        room.after_read(false, Duration::from_millis(10));
        assert!(
            !room.quiet,
            "a short read of a busy connection keeps its room"
        );
        assert_eq!(room.room, 65536);
        room.after_read(false, QUIET_AFTER);
        assert!(room.quiet);
        assert_eq!(room.room, 256, "a quiet connection shrinks back");
        room.after_read(true, QUIET_AFTER);
        assert!(!room.quiet);
    }

    #[test]
    fn quiet_buffers_are_given_back() {
        let room = ReadRoom::new(256, 65536);
        let mut buf = BytesMut::with_capacity(65536);
        room.prepare(&mut buf);
        assert!(
            buf.capacity() < 4096,
            "an empty big buffer shrinks to the room"
        );
        let mut empty = BytesMut::new();
        room.prepare(&mut empty);
        assert!(empty.capacity() >= 256);
    }
}
