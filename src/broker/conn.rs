//! One MQTT connection on a shard: a reader task (CONNECT, then packets into the session) and a
//! writer task (coalesced writes of the session's outbox).

use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use ringmq_io::{ConnReader, ConnStream};

use super::local_notify::LocalNotify;
use super::shard::{Input, Shard, Slot};
use crate::mqtt::{
    decode_packet, encode_packet, ConnAck, ConnAckProperties, DecodeError, Packet, ProtocolVersion,
    ReasonCode, Str,
};
use crate::session::connect::{connack_accepted, connack_refused, negotiate};
use crate::session::Flow;

/// How long a connection waits for the client id's home shard to answer.
const GRANT_TIMEOUT: Duration = Duration::from_secs(10);

/// Packets handled from one connection before the shard serves its other tasks (the round's
/// budget: bounds the latency one busy publisher adds to everyone else, and lets pauses from
/// slow subscribers on other shards arrive before the publisher has run far ahead). Large
/// enough that a fan-out publisher's round fills each subscriber's next write with many
/// messages: 64 cut fan-out deliveries by a quarter (`ringmq-loadgen fanout --subs 1000`).
const PACKETS_PER_ROUND: usize = 1024;

/// How long a closing connection keeps reading (and discarding) after our FIN, so the peer reads
/// our last packets (a DISCONNECT with its reason) instead of a reset.
const LINGER: Duration = Duration::from_secs(2);

/// A read that waited this long for data means the connection is quiet: its read room shrinks.
const QUIET_AFTER: Duration = Duration::from_millis(500);

/// How long a connection stays parked before its socket is put to sleep (if its writer is idle
/// then too): long enough that a client in a request/response exchange never pays for it.
const DOZE_AFTER: Duration = Duration::from_secs(1);

/// Parked connections looked at per [`doze_parked`] call (one per housekeeping tick): bounds
/// the time one call takes while every parked connection is still reached within seconds.
const DOZE_SLOTS_PER_CALL: u32 = 4096;

/// Reads smaller than this much spare room make us reserve a fresh chunk first.
const READ_SPARE_MIN: usize = 4096;

mod handshake;
mod link;
mod read;
mod write;

pub use link::ConnShared;
pub use read::{doze_parked, unpark_loop, Parked};

use handshake::{handshake, Handshake};
use link::Half;
#[cfg(test)]
use read::QUICK_WAKES_ACTIVE;
use read::{read_loop, ReadRoom};
use write::write_loop;

/// Decrements the shard's live connection count when the connection's reading ends.
struct LiveGuard(Option<Rc<RefCell<Shard>>>);

impl LiveGuard {
    /// Counts a new connection.
    fn count(shard: &Rc<RefCell<Shard>>) -> Self {
        let mut s = shard.borrow_mut();
        s.live_connections += 1;
        s.stats.sockets_open.add(1);
        LiveGuard(Some(Rc::clone(shard)))
    }

    /// The guard of a connection coming back from the park set (still counted).
    fn resume(shard: &Rc<RefCell<Shard>>) -> Self {
        LiveGuard(Some(Rc::clone(shard)))
    }

    /// The connection parks: it stays counted while no task reads it.
    fn keep(mut self) {
        self.0 = None;
    }
}

impl Drop for LiveGuard {
    fn drop(&mut self) {
        let Some(shard) = self.0.take() else { return };
        if let Ok(mut s) = shard.try_borrow_mut() {
            s.live_connections = s.live_connections.saturating_sub(1);
            s.stats.sockets_open.add(-1);
        };
    }
}

/// Serves one accepted MQTT connection (plain or TLS) until it closes. `foreign_origin`: a
/// browser page of another origin opened it (over WebSocket), so it may not log in anonymously.
pub async fn serve(
    shard: Rc<RefCell<Shard>>,
    stream: ConnStream,
    conn_id: u64,
    foreign_origin: bool,
) {
    let guard = LiveGuard::count(&shard);
    // Boxed: the handshake's locals would otherwise keep their room in this task's future (a
    // generator keeps storage for locals live across any of its awaits, even after they are
    // moved out). This task ends at the first park; a quiet connection then has no task at
    // all, only its `Parked` state in the shard's park set.
    let Some((conn, reader, buf, link)) =
        Box::pin(connect(&shard, stream, conn_id, foreign_origin)).await
    else {
        return;
    };
    conn.spare_reader.set(Some(reader));
    let parked = Parked {
        conn,
        link,
        since: None,
    };
    read_loop(shard, parked, buf, guard).await;
}

/// Handshake, session install and CONNACK: the connection's setup, up to the read loop.
async fn connect(
    shard: &Rc<RefCell<Shard>>,
    stream: ConnStream,
    conn_id: u64,
    foreign_origin: bool,
) -> Option<(Rc<ConnShared>, ConnReader, BytesMut, Connected)> {
    let (settings, rules) = {
        let s = shard.borrow();
        (s.settings.clone(), Rc::clone(&s.rules))
    };
    let fd = stream.fd();
    let peer = stream.peer_addr().map(|addr| addr.ip());
    let identity = stream.peer_common_name();
    let (mut reader, mut writer) = stream.into_split();
    let mut buf = BytesMut::with_capacity(settings.read_buffer_bytes);

    // Not boxed on its own: `connect` is boxed as a whole and freed once the connection is up.
    let handshake = handshake(
        shard,
        &settings,
        &rules,
        &mut reader,
        &mut writer,
        &mut buf,
        (conn_id, peer, identity.as_deref(), foreign_origin),
    );
    let Some(Handshake {
        negotiated,
        scoped_id,
        token,
        state,
        resume,
        admitted,
    }) = handshake.await
    else {
        // A layered transport says why it ends (a WebSocket close frame; TLS close_notify).
        writer.close_notify().await;
        return None;
    };
    let version = negotiated.link.version;

    // 4. Install the session, answer CONNACK, resume.
    let mut conn = ConnShared::new(conn_id, fd);
    conn.identity = identity.map(|cn| Box::new(cn.into_boxed_str()));
    let conn = Rc::new(conn);
    let slot = {
        let mut s = shard.borrow_mut();
        let now = Instant::now();
        let (slot, present) = s.install_session(
            super::shard::NewSession {
                client_id: scoped_id,
                token,
                state,
                clean_start: negotiated.clean_start,
                expiry_interval_secs: negotiated.expiry_interval_secs,
                conn: conn.id,
                org: admitted.0,
                principal: admitted.1,
                resume,
            },
            &conn,
            now,
        );
        let ack = connack_accepted(&negotiated, present, &rules);
        let entry = s.entry_mut(slot)?;
        entry.session.write_packet(&Packet::ConnAck(ack), version);
        entry.session.attach(negotiated.link, present, now, &rules);
        s.arm_keep_alive(slot, conn.id);
        s.flush(now);
        slot
    };
    tracing::debug!(client_id = %negotiated.client_id, slot, "connected");
    conn.half.set(Half::Idle(writer));
    let _ = conn.owner.set((Rc::downgrade(shard), slot));
    conn.wake_writer();
    let link = Connected {
        slot,
        version,
        packet_size_max: settings.packet_size_max,
        room: ReadRoom::new(settings.read_buffer_bytes, settings.read_budget_bytes),
    };
    Some((conn, reader, buf, link))
}

/// What the read loop needs of a connected session.
struct Connected {
    slot: Slot,
    version: ProtocolVersion,
    packet_size_max: u32,
    room: ReadRoom,
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

#[cfg(test)]
mod size_tests {
    use std::mem::size_of;

    #[test]
    fn idle_connection_parts_stay_small() {
        // An idle connection holds one of each (memory per idle connection): a field added
        // here costs every connection of a fleet. 136 + the Rc's 16 fits the 160-byte class.
        assert!(
            size_of::<super::ConnShared>() <= 136,
            "{}",
            size_of::<super::ConnShared>()
        );
        assert!(
            size_of::<super::Parked>() <= 56,
            "{}",
            size_of::<super::Parked>()
        );
        assert!(size_of::<super::super::shard::Entry>() <= 352);
    }
}
