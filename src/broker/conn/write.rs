//! A connection's writing side: coalesced writes of the session's outbox, then the graceful
//! close.

use std::cell::RefCell;
use std::future::poll_fn;
use std::rc::Rc;
use std::task::Poll;
use std::time::Instant;

use bytes::BytesMut;
use ringmq_io::{monoio, ConnWriter};

use super::*;

/// What the writer does next.
pub(super) enum Next {
    Chunk(BytesMut),
    Close,
    Idle,
}

/// Writes the session's outbox as it fills: everything queued while a write is in flight goes
/// out in the next single write.
pub(super) async fn write_loop(
    shard: Rc<RefCell<Shard>>,
    slot: Slot,
    conn: Rc<ConnShared>,
    mut writer: ConnWriter,
) {
    let batch = shard.borrow().settings.write_batch_bytes.max(1);
    loop {
        let next = {
            let mut s = shard.borrow_mut();
            let mut out = s.entry_for_conn(slot, &conn).map(|e| &mut e.session.out);
            if conn.fences.get() > 0 && !conn.is_closing() {
                // A SUBACK waits until every shard's replica has the new subscription; the
                // last fence answer starts a writer again.
                Next::Idle
            } else if let Some(out) = out.as_mut().filter(|o| !o.is_empty()) {
                let len = out.len().min(batch);
                Next::Chunk(out.split_to(len))
            } else if let Some(mut rest) = conn.final_out.take().filter(|r| !r.is_empty()) {
                let len = rest.len().min(batch);
                let chunk = rest.split_to(len);
                conn.final_out.set(Some(rest));
                Next::Chunk(chunk)
            } else if conn.is_closing() {
                Next::Close
            } else {
                Next::Idle
            }
        };
        let chunk = match next {
            Next::Chunk(chunk) => chunk,
            Next::Close => break,
            Next::Idle => {
                // Nothing to write: park the half and end this task.
                conn.half.set(Half::Idle(writer));
                return;
            }
        };
        let (result, _) = writer.write_all(chunk).await;
        if result.is_err() {
            let mut s = shard.borrow_mut();
            let now = Instant::now();
            if s.entry_for_conn(slot, &conn).is_some() {
                s.end_connection(slot, None, true, now);
                s.flush(now);
            }
            break;
        }
        let mut s = shard.borrow_mut();
        let now = Instant::now();
        s.after_write(slot, &conn, now);
        s.flush(now);
    }
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
