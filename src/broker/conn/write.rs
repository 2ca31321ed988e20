//! A connection's writing side: coalesced writes of the session's outbox, then the graceful
//! close.

use std::future::poll_fn;
use std::rc::Rc;
use std::task::Poll;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use ringmq_io::{monoio, ConnWriter};

use super::link::{ConnShared, Half, WriterHost};
use crate::broker::mailbox::ShardHandle;
use crate::broker::shard::{Input, Shard, Slot};

/// How long a closing connection keeps reading (and discarding) after our FIN, so the peer reads
/// our last packets (a DISCONNECT with its reason) instead of a reset.
pub(super) const LINGER: Duration = Duration::from_secs(2);

/// A shard's mailbox runs the writer tasks of its connections.
impl WriterHost for ShardHandle {
    fn spawn_writer(self: Rc<Self>, slot: Slot, conn: Rc<ConnShared>, writer: ConnWriter) {
        monoio::spawn(write_loop(self, slot, conn, writer));
    }
}

/// What the writer does next.
pub(super) enum Next {
    /// Write this, then ask again.
    Chunk(BytesMut, ConnWriter),
    /// Everything is written and the connection ends.
    Close(ConnWriter),
    /// Nothing to write: the half went back to the connection (decided and done in one job,
    /// so a delivery between the decision and the handover cannot be missed).
    Idle,
}

/// The writer's next step, decided on the shard loop.
fn next(s: &mut Shard, slot: Slot, conn: &Rc<ConnShared>, writer: ConnWriter) -> Next {
    let batch = s.settings.write_batch_bytes.max(1);
    let mut out = s.entry_for_conn(slot, conn).map(|e| &mut e.session.out);
    if conn.fences.get() > 0 {
        // A SUBACK waits until every shard's replica has the new subscription; the last fence
        // answer starts a writer again. Also while closing: the core sends the close, with
        // the SUBACK in its last bytes, only after the answers.
    } else if let Some(out) = out.as_mut().filter(|o| !o.is_empty()) {
        let len = out.len().min(batch);
        return Next::Chunk(out.split_to(len), writer);
    } else if let Some(mut rest) = conn.final_out.take().filter(|r| !r.is_empty()) {
        let len = rest.len().min(batch);
        let chunk = rest.split_to(len);
        conn.final_out.set(Some(rest));
        return Next::Chunk(chunk, writer);
    } else if conn.is_closing() {
        return Next::Close(writer);
    }
    conn.half.set(Half::Idle(writer));
    Next::Idle
}

/// Writes the session's outbox as it fills: everything queued while a write is in flight goes
/// out in the next single write.
pub(super) async fn write_loop(
    handle: Rc<ShardHandle>,
    slot: Slot,
    conn: Rc<ConnShared>,
    writer: ConnWriter,
) {
    let first = Rc::clone(&conn);
    let mut step = handle.call(move |s| next(s, slot, &first, writer)).await;
    let mut writer = loop {
        let (chunk, mut writer) = match step {
            Some(Next::Chunk(chunk, writer)) => (chunk, writer),
            Some(Next::Close(writer)) => break writer,
            // Idle, or the loop ended (shutdown) and the writer went with the job.
            Some(Next::Idle) | None => return,
        };
        let (result, _) = writer.write_all(chunk).await;
        let written = Rc::clone(&conn);
        if result.is_err() {
            let lost = move |s: &mut Shard| {
                let now = Instant::now();
                s.handle(
                    Input::Lost {
                        slot,
                        conn: written.id,
                    },
                    now,
                );
                s.flush(now);
            };
            let _ = handle.call(lost).await;
            break writer;
        }
        step = handle
            .call(move |s| {
                let now = Instant::now();
                s.after_write(slot, &written, now);
                s.flush(now);
                next(s, slot, &written, writer)
            })
            .await;
    };
    // A TLS peer learns the stream ended on purpose (nothing to do for plain TCP).
    writer.close_notify().await;
    // Boxed: the linger timer is large and only closing connections need it.
    Box::pin(close_gracefully(&conn)).await;
}

/// Sends our FIN after the last bytes, then waits (at most `LINGER`) for the reader to see the
/// peer close; a peer that keeps the connection open is cut off.
pub(super) async fn close_gracefully(conn: &ConnShared) {
    // SAFETY: `fd` belongs to the stream whose halves are still alive (the caller holds one), so
    // it is open; shutdown only changes the socket state and never invalidates the descriptor.
    unsafe {
        libc::shutdown(conn.fd, libc::SHUT_WR);
    }
    let reader_exit = poll_fn(|cx| {
        conn.reader_exited.take();
        if conn.reader_done.get() {
            Poll::Ready(())
        } else {
            conn.reader_exited.register(cx.waker());
            Poll::Pending
        }
    });
    if monoio::time::timeout(LINGER, reader_exit).await.is_err() {
        // SAFETY: as above; the caller still holds its half, so the descriptor is open.
        unsafe {
            libc::shutdown(conn.fd, libc::SHUT_RDWR);
        }
    }
}
