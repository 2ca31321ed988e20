//! A connection's reading side: read rounds run on the shard loop, and the park set where quiet
//! connections wait without a task or a buffer.

use std::future::poll_fn;
use std::rc::Rc;
use std::task::Poll;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use ringmq_io::monoio;

use super::link::ConnShared;
use super::parked::{ensure_spare, Connected, Parked, READ_SPARE_MIN};
use crate::broker::facts::ShardFacts;
use crate::broker::mailbox::ShardHandle;
use crate::broker::shard::{Input, Shard, Slot};
use crate::mqtt::decode_packet;
use crate::session::Flow;

/// Packets handled from one connection before the shard serves its other tasks (the round's
/// budget: bounds the latency one busy publisher adds to everyone else, and lets pauses from
/// slow subscribers on other shards arrive before the publisher has run far ahead). Large
/// enough that a fan-out publisher's round fills each subscriber's next write with many
/// messages: 64 cut fan-out deliveries by a quarter (`ringmq-loadgen fanout --subs 1000`).
pub(super) const PACKETS_PER_ROUND: usize = 1024;

/// Parked connections looked at per [`doze_parked`] call (one per housekeeping tick): bounds
/// the time one call takes while every parked connection is still reached within seconds.
pub(super) const DOZE_SLOTS_PER_CALL: u32 = 4096;

/// Decrements the shard's live connection count when the connection's reading ends.
pub(super) struct LiveGuard(Option<Rc<ShardHandle>>);

impl LiveGuard {
    /// Counts a new connection.
    pub(super) fn count(handle: &Rc<ShardHandle>) -> Self {
        handle
            .live_connections
            .set(handle.live_connections.get() + 1);
        handle.stats.sockets_open.add(1);
        LiveGuard(Some(Rc::clone(handle)))
    }

    /// The guard of a connection coming back from the park set (still counted).
    pub(super) fn resume(handle: &Rc<ShardHandle>) -> Self {
        LiveGuard(Some(Rc::clone(handle)))
    }

    /// The connection parks: it stays counted while no task reads it.
    pub(super) fn keep(mut self) {
        self.0 = None;
    }
}

impl Drop for LiveGuard {
    fn drop(&mut self) {
        let Some(handle) = self.0.take() else { return };
        uncount(&handle);
    }
}

/// A connection's reading ended (or a parked one was found lost).
pub(super) fn uncount(handle: &ShardFacts) {
    let live = handle.live_connections.get();
    handle.live_connections.set(live.saturating_sub(1));
    handle.stats.sockets_open.add(-1);
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
        uncount(s.facts());
        end_lost(s, parked.link.slot, &parked.conn, now);
        parked.conn.reader_finished();
    }
}

/// Ends the session's connection if `conn` is still the one attached (the socket is gone).
pub(super) fn end_lost(s: &mut Shard, slot: Slot, conn: &Rc<ConnShared>, now: Instant) {
    if s.entry_for_conn(slot, conn).is_some() {
        tracing::debug!(slot, "connection lost");
    }
    s.handle(
        Input::Lost {
            slot,
            conn: conn.id,
        },
        now,
    );
    s.flush(now);
}

/// Starts the read loops of parked connections whose sockets became ready (data, a hang-up or
/// an error), until `stop`. One per shard; without it (no epoll instance) connections never park.
pub async fn unpark_loop(
    handle: Rc<ShardHandle>,
    stop: Rc<crate::broker::local_notify::LocalStop>,
) {
    let waiter = handle
        .call(|s| s.parks.as_ref().map(|parks| parks.waiter()))
        .await
        .flatten();
    let waiter = match waiter {
        Some(Ok(waiter)) => waiter,
        Some(Err(error)) => {
            tracing::warn!(%error, "cannot wait on the park set; quiet connections keep reading");
            handle.post(|s| s.parks = None);
            return;
        }
        None => return,
    };
    loop {
        let readable = monoio::select! {
            readable = waiter.readable(false) => readable,
            _ = stop.wait() => break,
        };
        if let Err(error) = readable {
            tracing::warn!(%error, "waiting on the park set failed");
            monoio::time::sleep(Duration::from_millis(10)).await;
        }
        let taken = handle
            .call(|s| {
                let mut ready = Vec::new();
                let taken = s.parks.as_mut().map(|parks| parks.take_ready(&mut ready));
                (taken, ready)
            })
            .await;
        let Some((Some(taken), ready)) = taken else {
            return;
        };
        if let Err(error) = taken {
            tracing::warn!(%error, "taking ready connections from the park set failed");
        }
        for parked in ready {
            let guard = LiveGuard::resume(&handle);
            monoio::spawn(read_loop(
                Rc::clone(&handle),
                parked,
                BytesMut::new(),
                guard,
            ));
        }
    }
}

/// What one read round asks of the shard loop.
struct Round {
    /// The connection ended (closed by the client, the broker or a malformed packet).
    stop: bool,
    /// The round handled its packet budget: yield, then go on.
    budget_spent: bool,
    /// The read buffer, back with what was not decoded.
    buf: BytesMut,
}

/// Step 5: reads packets until the connection ends or goes quiet (then it parks in the shard's
/// park set, without a buffer or a task, until [`unpark_loop`] sees its socket ready).
pub(super) async fn read_loop(
    handle: Rc<ShardHandle>,
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
    let (handle, conn) = (&handle, &conn);
    let Some(mut reader) = conn.take_reader() else {
        // The sleeping socket could not be woken: the connection is lost.
        let lost = Rc::clone(conn);
        let slot = parked.link.slot;
        let _ = handle
            .call(move |s| end_lost(s, slot, &lost, Instant::now()))
            .await;
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
        let round_conn = Rc::clone(conn);
        let round = move |s: &mut Shard| {
            let conn = round_conn;
            let mut buf = buf;
            let now = Instant::now();
            let mut stop = false;
            let mut budget_spent = false;
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
            Round {
                stop: stop || conn.is_closing(),
                budget_spent,
                buf,
            }
        };
        // The loop applies what other shards already said (a subscription made on another
        // shard just before this publish, a pause) before it runs the round.
        let Some(round) = handle.call(round).await else {
            // The loop ended (shutdown).
            conn.finish(BytesMut::new());
            conn.reader_finished();
            return;
        };
        buf = round.buf;
        if round.stop {
            break;
        }
        if round.budget_spent {
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
            let resumed = Rc::clone(conn);
            handle.post(move |s| {
                if let Some(entry) = s.entry_for_conn(slot, &resumed) {
                    if let Some(link) = entry.session.link.as_mut() {
                        link.last_rx = Instant::now();
                    }
                }
            });
            continue;
        }
        // Overload: stop reading publishers while the mesh cannot take more (TCP pushes back).
        while handle.backlog.get() >= handle.settings.mesh_backlog_max {
            let drained = &handle.backlog_drained;
            poll_fn(|cx| {
                if drained.take() {
                    Poll::Ready(())
                } else {
                    drained.register(cx.waker());
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
            parked.since = Some(Instant::now());
            conn.spare_reader.set(Some(reader));
            let park = move |s: &mut Shard| {
                let conn = Rc::clone(&parked.conn);
                if let Some(entry) = s.entry_for_conn(slot, &conn) {
                    // Quiet now: give back what an idle session need not hold (empty queues,
                    // an empty outbox's buffer). Once per park, so a busy subscriber keeps its
                    // buffers.
                    entry.session.state.release_empty();
                    if entry.session.out.is_empty() && entry.session.out.capacity() > 0 {
                        entry.session.out = BytesMut::new();
                    }
                }
                match s.parks.as_mut() {
                    Some(parks) => parks.park(conn.fd(), parked).map_err(|(error, back)| {
                        tracing::debug!(%error, "cannot park; reading the normal way");
                        back
                    }),
                    None => Err(parked),
                }
            };
            match handle.call(park).await {
                Some(Ok(())) => {
                    guard.keep();
                    return;
                }
                Some(Err(back)) => {
                    parked = back;
                    parked.link.room.quiet = false;
                    match conn.spare_reader.take() {
                        Some(back_reader) => reader = back_reader,
                        None => unreachable!("the reader was put in just above"),
                    }
                }
                // The loop ended (shutdown): the parked state went with it.
                None => return,
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
                let lost = Rc::clone(conn);
                let _ = handle
                    .call(move |s| end_lost(s, slot, &lost, Instant::now()))
                    .await;
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
