//! What a connection's reader and writer tasks and the shard share: the socket's halves (or
//! the sleeping socket), pauses, fences, the bytes to write before closing.

use std::cell::{Cell, OnceCell};
use std::os::fd::RawFd;
use std::rc::{Rc, Weak};

use bytes::BytesMut;
use ringmq_io::{ConnReader, ConnWriter, DormantTcp, SleepError};

use crate::broker::local_notify::LocalNotify;
use ringmq_core::shard::Slot;

/// What runs a connection's writer task when there is something to write (the shard's
/// mailbox; a trait, so the shared half needs nothing of the shard).
pub trait WriterHost {
    /// Starts the writer of `conn`, attached to `slot`, with its write half.
    fn spawn_writer(self: Rc<Self>, slot: Slot, conn: Rc<ConnShared>, writer: ConnWriter);
}

/// Where a connection's write half is.
#[derive(Debug, Default)]
pub(super) enum Half {
    /// A writer task has it.
    #[default]
    Busy,
    /// No writer task runs: an idle connection has none at all (memory per idle connection);
    /// [`ConnShared::wake_writer`] starts one when there is data.
    Idle(ConnWriter),
    /// Parked and idle for a while: both halves are put to sleep as the bare socket (see
    /// [`doze_parked`]).
    Dormant(DormantTcp),
    /// The sleeping socket could not be woken (it is closed): the doze sweep or the next read
    /// loop ends the connection.
    Lost,
}

/// What the shard and the connection's two tasks share.
pub struct ConnShared {
    /// Shard-unique connection id.
    pub id: u64,
    /// The write half, or the sleeping socket.
    pub(super) half: Cell<Half>,
    /// The read half while no read loop runs (the connection is parked) and the socket is
    /// awake; the next read loop takes it.
    pub(super) spare_reader: Cell<Option<ConnReader>>,
    /// The shard and slot a writer task works for, set once the session is installed.
    pub(super) owner: OnceCell<(Weak<dyn WriterHost>, Slot)>,
    /// Bytes to write before closing (boxed: only closing connections have any, and every
    /// connection carries this field).
    pub(super) final_out: Cell<Option<Box<BytesMut>>>,
    pub(super) closing: Cell<bool>,
    pub(super) pauses: Cell<u32>,
    pub(super) resumed: LocalNotify,
    pub(super) reader_done: Cell<bool>,
    pub(super) reader_exited: LocalNotify,
    pub(super) fences: Cell<u32>,
    pub(super) fd: RawFd,
    /// The verified TLS client certificate's CN (the device identity), when there is one
    /// (boxed twice: one thin pointer, since most connections have none).
    pub(super) identity: Option<Box<Box<str>>>,
}

impl std::fmt::Debug for ConnShared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnShared")
            .field("id", &self.id)
            .field("fd", &self.fd)
            .field("closing", &self.closing.get())
            .field("pauses", &self.pauses.get())
            .field("fences", &self.fences.get())
            .finish_non_exhaustive()
    }
}

impl ConnShared {
    /// A connection's shared half; `fd` -1 for one without a socket (the simulator's).
    pub fn new(id: u64, fd: RawFd) -> Self {
        ConnShared {
            id,
            half: Cell::new(Half::Busy),
            spare_reader: Cell::new(None),
            owner: OnceCell::new(),
            final_out: Cell::new(None),
            closing: Cell::new(false),
            pauses: Cell::new(0),
            resumed: LocalNotify::default(),
            reader_done: Cell::new(false),
            reader_exited: LocalNotify::default(),
            fences: Cell::new(0),
            fd,
            identity: None,
        }
    }

    /// The verified TLS client certificate's CN, for features that filter by device.
    pub fn identity(&self) -> Option<&str> {
        self.identity.as_deref().map(|cn| &**cn)
    }

    /// Stops reading this connection until a matching [`ConnShared::resume`] (pauses nest: one
    /// per slow subscriber it feeds).
    pub fn pause(&self) {
        self.pauses.set(self.pauses.get() + 1);
    }

    /// Undoes one pause; the reader goes on once none is left.
    pub fn resume(&self) {
        let left = self.pauses.get().saturating_sub(1);
        self.pauses.set(left);
        if left == 0 {
            self.resumed.notify();
        }
    }

    /// Holds the writer until `count` fence answers arrived.
    pub fn fence_add(&self, count: u32) {
        self.fences.set(self.fences.get() + count);
    }

    /// One fence answer arrived; the writer goes on once all have.
    pub fn fence_done(self: &Rc<Self>) {
        let left = self.fences.get().saturating_sub(1);
        self.fences.set(left);
        if left == 0 {
            self.wake_writer();
        }
    }

    /// The core closed the connection: no fence holds its last bytes any more (a SUBACK that
    /// waited went out with the answers before the close, or was dropped with its session).
    pub fn unfence(&self) {
        self.fences.set(0);
    }

    /// There is something to write: start a writer task unless one runs (a running one sees
    /// the new data when its current write completes).
    pub fn wake_writer(self: &Rc<Self>) {
        let owner = self.owner.get().cloned();
        let Some((shard, slot)) = owner.and_then(|(shard, slot)| Some((shard.upgrade()?, slot)))
        else {
            return;
        };
        let writer = match self.half.take() {
            Half::Busy => return,
            Half::Idle(writer) => writer,
            Half::Dormant(socket) => match socket.wake() {
                Ok((reader, writer)) => {
                    self.spare_reader.set(Some(reader));
                    writer
                }
                Err(error) => {
                    // The socket is closed, so the parked read loop is never woken: the doze
                    // sweep takes it out and ends the connection.
                    tracing::warn!(%error, "cannot wake a sleeping connection");
                    self.half.set(Half::Lost);
                    self.closing.set(true);
                    return;
                }
            },
            Half::Lost => {
                self.half.set(Half::Lost);
                return;
            }
        };
        shard.spawn_writer(slot, Rc::clone(self), writer);
    }

    /// The read half for a read loop that starts without one: the spare one a writer left, or
    /// the sleeping socket woken. `None` when the socket is lost.
    pub(super) fn take_reader(&self) -> Option<ConnReader> {
        if let Some(reader) = self.spare_reader.take() {
            return Some(reader);
        }
        match self.half.take() {
            Half::Dormant(socket) => match socket.wake() {
                Ok((reader, writer)) => {
                    self.half.set(Half::Idle(writer));
                    Some(reader)
                }
                Err(error) => {
                    tracing::warn!(%error, "cannot wake a sleeping connection");
                    self.half.set(Half::Lost);
                    None
                }
            },
            other => {
                self.half.set(other);
                None
            }
        }
    }

    /// Puts a parked connection's socket to sleep if neither half is in use. `Err` when the
    /// socket turned out to be lost.
    pub(super) fn doze(&self) -> Result<(), ()> {
        let half = self.half.take();
        if matches!(half, Half::Lost) {
            self.half.set(half);
            return Err(());
        }
        let Some(reader) = self.spare_reader.take() else {
            self.half.set(half);
            return Ok(());
        };
        let writer = match half {
            Half::Idle(writer) if !self.is_closing() => writer,
            other => {
                self.half.set(other);
                self.spare_reader.set(Some(reader));
                return Ok(());
            }
        };
        match DormantTcp::sleep(reader, writer) {
            Ok(socket) => {
                self.half.set(Half::Dormant(socket));
                Ok(())
            }
            Err(SleepError::Unsupported(reader, writer)) => {
                self.half.set(Half::Idle(writer));
                self.spare_reader.set(Some(reader));
                Ok(())
            }
            Err(SleepError::Lost) => {
                tracing::warn!(conn = self.id, "socket still in use while idle; dropped");
                self.half.set(Half::Lost);
                self.closing.set(true);
                Err(())
            }
        }
    }

    /// The read side is done: a closing writer waiting for it goes on.
    pub(super) fn reader_finished(&self) {
        self.reader_done.set(true);
        self.reader_exited.notify();
    }

    /// True while the writer waits for fence answers (a SUBACK waits for every replica).
    pub fn is_fenced(&self) -> bool {
        self.fences.get() > 0
    }

    /// The bytes left to write before the close (what a driver without a writer task sends).
    pub fn take_final_out(&self) -> Option<BytesMut> {
        self.final_out.take().map(|out| *out)
    }

    /// True while reading is paused for a slow subscriber.
    pub fn is_paused(&self) -> bool {
        self.pauses.get() > 0 && !self.closing.get()
    }

    /// Ends the connection: the writer flushes `rest`, then shuts the socket down.
    pub fn finish(self: &Rc<Self>, rest: BytesMut) {
        if !rest.is_empty() {
            let mut out = self.final_out.take();
            out.get_or_insert_with(Box::default).unsplit(rest);
            self.final_out.set(out);
        }
        self.closing.set(true);
        self.wake_writer();
        self.resumed.notify();
    }

    /// True once the connection is ending.
    pub fn is_closing(&self) -> bool {
        self.closing.get()
    }

    /// The socket, for questions to the kernel (peer address).
    pub fn fd(&self) -> RawFd {
        self.fd
    }
}
