//! A connection's reading side: read rounds into the shard core, the adaptive read room, and
//! the park set where quiet connections wait without a task or a buffer.

use std::cell::RefCell;
use std::future::poll_fn;
use std::rc::Rc;
use std::task::Poll;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use ringmq_io::monoio;

use super::*;

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
    fn doze(&mut self, now: Instant) -> bool {
        let parked_long = self
            .since
            .is_some_and(|since| now.saturating_duration_since(since) >= DOZE_AFTER);
        !parked_long || self.conn.doze().is_ok()
    }
}

/// Walks on through the shard's parked connections and puts the sockets of those that have
/// been quiet a while to sleep ([`DormantTcp`]): an idle connection then holds its descriptor
/// instead of monoio's stream. `cursor` keeps the place between calls.
pub fn doze_parked(s: &mut Shard, cursor: &mut u32, now: Instant) {
    let Some(parks) = s.parks.as_mut() else {
        return;
    };
    let mut lost = Vec::new();
    parks.sweep(
        cursor,
        DOZE_SLOTS_PER_CALL,
        |parked| parked.doze(now),
        &mut lost,
    );
    for parked in lost {
        // It was counted while parked (as its guard would have been dropped when reading).
        s.live_connections = s.live_connections.saturating_sub(1);
        s.stats.sockets_open.add(-1);
        end_lost(s, parked.link.slot, &parked.conn, now);
        parked.conn.reader_finished();
    }
}

/// Ends the session's connection if `conn` is still the one attached (the socket is gone).
pub(super) fn end_lost(s: &mut Shard, slot: Slot, conn: &Rc<ConnShared>, now: Instant) {
    if s.entry_for_conn(slot, conn).is_some() {
        tracing::debug!(slot, "connection lost");
        s.end_connection(slot, None, true, now);
    }
}

/// Starts the read loops of parked connections whose sockets became ready (data, a hang-up or
/// an error), until `stop`. One per shard; without it (no epoll instance) connections never park.
pub async fn unpark_loop(
    shard: Rc<RefCell<Shard>>,
    stop: Rc<crate::broker::local_notify::LocalStop>,
) {
    let waiter = match shard.borrow().parks.as_ref().map(|parks| parks.waiter()) {
        Some(Ok(waiter)) => waiter,
        Some(Err(error)) => {
            tracing::warn!(%error, "cannot wait on the park set; quiet connections keep reading");
            shard.borrow_mut().parks = None;
            return;
        }
        None => return,
    };
    let mut ready = Vec::new();
    loop {
        let readable = monoio::select! {
            readable = waiter.readable(false) => readable,
            _ = stop.wait() => break,
        };
        if let Err(error) = readable {
            tracing::warn!(%error, "waiting on the park set failed");
            monoio::time::sleep(Duration::from_millis(10)).await;
        }
        let taken = match shard.borrow_mut().parks.as_mut() {
            Some(parks) => parks.take_ready(&mut ready),
            None => return,
        };
        if let Err(error) = taken {
            tracing::warn!(%error, "taking ready connections from the park set failed");
        }
        for parked in ready.drain(..) {
            let guard = LiveGuard::resume(&shard);
            monoio::spawn(read_loop(Rc::clone(&shard), parked, BytesMut::new(), guard));
        }
    }
}

/// Step 5: reads packets until the connection ends or goes quiet (then it parks in the shard's
/// park set, without a buffer or a task, until [`unpark_loop`] sees its socket ready).
pub(super) async fn read_loop(
    shard: Rc<RefCell<Shard>>,
    mut parked: Parked,
    mut buf: BytesMut,
    guard: LiveGuard,
) {
    // Woken from the park set: the socket is ready, so read before parking again (parking
    // first would only be woken at once, and that second, instant wake-up read as activity
    // kept every woken connection out of the park set until its next packet).
    let mut readable = false;
    if let Some(since) = parked.since.take() {
        parked.link.room.after_park(since.elapsed());
        readable = true;
    }
    let conn = Rc::clone(&parked.conn);
    let (shard, conn) = (&shard, &conn);
    let Some(mut reader) = conn.take_reader() else {
        // The sleeping socket could not be woken: the connection is lost.
        let mut s = shard.borrow_mut();
        let now = Instant::now();
        end_lost(&mut s, parked.link.slot, conn, now);
        s.flush(now);
        drop(s);
        conn.reader_finished();
        return;
    };
    let Connected {
        slot,
        version,
        packet_size_max,
        ..
    } = parked.link;
    let mut peer_closed = false;
    loop {
        let mut budget_spent = false;
        let stop = {
            let mut s = shard.borrow_mut();
            let now = Instant::now();
            // Apply what other shards already said (a subscription made on another shard just
            // before this publish, a pause) before handling the new packets.
            s.poll_mesh(now);
            let mut stop = false;
            let mut handled = 0;
            while !conn.is_closing() {
                if handled == PACKETS_PER_ROUND {
                    budget_spent = true;
                    break;
                }
                handled += 1;
                match decode_packet(&mut buf, version, packet_size_max) {
                    Ok(Some(packet)) => match s.handle(Input::Packet { slot, packet }, now) {
                        Flow::Continue => {
                            if conn.is_paused() {
                                break;
                            }
                        }
                        Flow::Close(_) => stop = true,
                    },
                    Ok(None) => break,
                    Err(error) => {
                        tracing::debug!(%error, "closing on malformed packet");
                        let reason = error.reason_code();
                        s.handle(Input::Malformed { slot, reason }, now);
                        stop = true;
                    }
                }
            }
            s.flush(now);
            stop || conn.is_closing()
        };
        if stop {
            break;
        }
        if budget_spent {
            shard.borrow_mut().poll_mesh(Instant::now());
            crate::broker::local_notify::yield_now().await;
            continue;
        }
        if conn.is_paused() {
            poll_fn(|cx| {
                conn.resumed.take();
                if conn.is_paused() {
                    conn.resumed.register(cx.waker());
                    Poll::Pending
                } else {
                    Poll::Ready(())
                }
            })
            .await;
            // Packets may already be buffered: decode them before reading more.
            if let Some(entry) = shard.borrow_mut().entry_for_conn(slot, conn) {
                if let Some(link) = entry.session.link.as_mut() {
                    link.last_rx = Instant::now();
                }
            }
            continue;
        }
        // Overload: stop reading publishers while the mesh cannot take more (TCP pushes back).
        loop {
            let (backlog, max, notify) = {
                let s = shard.borrow();
                (
                    s.mesh_backlog(),
                    s.settings.mesh_backlog_max,
                    Rc::clone(&s.backlog_notify),
                )
            };
            if backlog < max {
                break;
            }
            poll_fn(|cx| {
                if notify.take() {
                    Poll::Ready(())
                } else {
                    notify.register(cx.waker());
                    Poll::Pending
                }
            })
            .await;
        }
        let woken_ready = std::mem::take(&mut readable);
        if parked.link.room.quiet
            && !woken_ready
            && buf.is_empty()
            && reader.can_wait_readable()
            && !conn.is_closing()
        {
            let mut s = shard.borrow_mut();
            if let Some(entry) = s.entry_for_conn(slot, conn) {
                // Quiet now: give back what an idle session need not hold (empty queues, an
                // empty outbox's buffer). Once per park, so a busy subscriber keeps its buffers.
                entry.session.state.release_empty();
                if entry.session.out.is_empty() && entry.session.out.capacity() > 0 {
                    entry.session.out = BytesMut::new();
                }
            }
            match s.parks.as_mut() {
                Some(parks) => {
                    parked.since = Some(Instant::now());
                    conn.spare_reader.set(Some(reader));
                    match parks.park(conn.fd(), parked) {
                        Ok(()) => {
                            guard.keep();
                            return;
                        }
                        Err((error, back)) => {
                            tracing::debug!(%error, "cannot park; reading the normal way");
                            match conn.spare_reader.take() {
                                Some(back_reader) => reader = back_reader,
                                None => unreachable!("the reader was put in just above"),
                            }
                            parked = back;
                            parked.link.room.quiet = false;
                        }
                    }
                }
                None => parked.link.room.quiet = false,
            }
        }
        let room = &mut parked.link.room;
        room.prepare(&mut buf);
        let spare = buf.capacity() - buf.len();
        let started = Instant::now();
        let (result, back) = reader.read_append(buf).await;
        buf = back;
        if let Ok(n) = result {
            parked.link.room.after_read(n == spare, started.elapsed());
        }
        match result {
            Ok(0) | Err(_) => {
                peer_closed = true;
                let mut s = shard.borrow_mut();
                let now = Instant::now();
                end_lost(&mut s, slot, conn, now);
                s.flush(now);
                break;
            }
            Ok(_) => {}
        }
    }
    conn.finish(BytesMut::new());
    if !peer_closed {
        // Discard what the peer still sends until it closes; the writer cuts this short after
        // LINGER. Closing with unread input would send a reset that can destroy our DISCONNECT.
        loop {
            buf.clear();
            ensure_spare(&mut buf, READ_SPARE_MIN);
            let (result, back) = reader.read_append(buf).await;
            buf = back;
            if !matches!(result, Ok(n) if n > 0) {
                break;
            }
        }
    }
    conn.reader_finished();
}
