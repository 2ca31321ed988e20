//! One MQTT connection on a shard: a reader task (CONNECT, then packets into the session) and a
//! writer task (coalesced writes of the session's outbox).

use std::cell::{Cell, OnceCell, RefCell};
use std::future::poll_fn;
use std::os::fd::RawFd;
use std::rc::{Rc, Weak};
use std::task::Poll;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use ringmq_io::{monoio, ConnReader, ConnStream, ConnWriter, DormantTcp, SleepError};

use super::local_notify::LocalNotify;
use super::shard::{Shard, Slot};
use crate::mqtt::{
    decode_packet, encode_packet, ConnAck, ConnAckProperties, DecodeError, Packet, ProtocolVersion,
    ReasonCode, Str,
};
use crate::session::connect::{connack_accepted, connack_refused, negotiate};
use crate::session::{CloseReason, Flow};

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

/// Where a connection's write half is.
#[derive(Debug, Default)]
enum Half {
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
    half: Cell<Half>,
    /// The read half while no read loop runs (the connection is parked) and the socket is
    /// awake; the next read loop takes it.
    spare_reader: Cell<Option<ConnReader>>,
    /// The shard and slot a writer task works for, set once the session is installed.
    owner: OnceCell<(Weak<RefCell<Shard>>, Slot)>,
    /// Bytes to write before closing (boxed: only closing connections have any, and every
    /// connection carries this field).
    final_out: Cell<Option<Box<BytesMut>>>,
    closing: Cell<bool>,
    pauses: Cell<u32>,
    resumed: LocalNotify,
    reader_done: Cell<bool>,
    reader_exited: LocalNotify,
    fences: Cell<u32>,
    fd: RawFd,
    /// The verified TLS client certificate's CN (the device identity), when there is one
    /// (boxed twice: one thin pointer, since most connections have none).
    identity: Option<Box<Box<str>>>,
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
        monoio::spawn(write_loop(shard, slot, Rc::clone(self), writer));
    }

    /// The read half for a read loop that starts without one: the spare one a writer left, or
    /// the sleeping socket woken. `None` when the socket is lost.
    fn take_reader(&self) -> Option<ConnReader> {
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
    fn doze(&self) -> Result<(), ()> {
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
    fn reader_finished(&self) {
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

fn ensure_spare(buf: &mut BytesMut, chunk: usize) {
    if buf.capacity() - buf.len() < READ_SPARE_MIN.min(chunk) {
        buf.reserve(chunk);
    }
}

/// How much room the next read gets: an idle connection holds a small buffer (memory per idle
/// connection is what a fleet broker is judged by); a connection whose reads fill the room gets
/// twice as much next time, up to the read budget.
struct ReadRoom {
    // u32: every connection's parked state carries these (the budget is far below 4 GiB).
    room: u32,
    min: u32,
    max: u32,
    /// The connection is quiet: wait for data without a buffer (and without a reading task)
    /// once what was read is handled. Set after a long wait for data, cleared by a read that
    /// fills its room or by [`QUICK_WAKES_ACTIVE`] wake-ups in a row soon after parking.
    quiet: bool,
    /// Wake-ups in a row that came soon after parking.
    quick_wakes: u8,
}

/// Wake-ups in a row soon after parking that make a connection active (it then reads the
/// normal way instead of parking after each packet). More than one: a device that sends
/// SUBSCRIBE right after its CONNACK, and maybe a PUBLISH, and then nothing for minutes must
/// stay in the park set, or it keeps a pending read (a task, a buffer, an awake socket) until
/// its next packet.
const QUICK_WAKES_ACTIVE: u8 = 3;

impl ReadRoom {
    fn new(min: usize, max: usize) -> Self {
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
    fn prepare(&self, buf: &mut BytesMut) {
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
    fn after_read(&mut self, filled: bool, waited: Duration) {
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
    fn after_park(&mut self, parked: Duration) {
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

/// CONNECT, negotiation and the client-id claim. Boxed by the caller, so the large state it
/// holds while waiting (the CONNECT, the negotiation) is freed once the connection is up instead
/// of staying in every connection's future.
async fn handshake(
    shard: &Rc<RefCell<Shard>>,
    settings: &super::shard::ShardSettings,
    rules: &Rc<crate::session::Rules>,
    reader: &mut ConnReader,
    writer: &mut ConnWriter,
    buf: &mut BytesMut,
    (conn_id, peer, identity, foreign_origin): (u64, Option<std::net::IpAddr>, Option<&str>, bool),
) -> Option<Handshake> {
    // 1. CONNECT, within the deadline.
    let deadline = Instant::now() + settings.connect_timeout;
    let connect = loop {
        let level = declared_level(buf);
        match decode_packet(buf, ProtocolVersion::V311, settings.packet_size_max) {
            Ok(Some(Packet::Connect(connect))) => break connect,
            Ok(Some(other)) => {
                tracing::debug!(kind = other.kind_name(), "first packet is not CONNECT");
                return None;
            }
            Ok(None) => {}
            Err(DecodeError::UnsupportedProtocolVersion(_))
            | Err(DecodeError::InvalidProtocolName) => {
                // 3.1.2.2: answer with return code 0x01 in the v3.1.1 form, then close.
                let mut out = BytesMut::new();
                let ack = ConnAck {
                    session_present: false,
                    reason: ReasonCode(crate::mqtt::connack_v3::UNACCEPTABLE_PROTOCOL_VERSION),
                    properties: ConnAckProperties::default(),
                };
                let _ = encode_packet(&Packet::ConnAck(ack), ProtocolVersion::V311, &mut out);
                let _ = writer.write_all(out).await;
                return None;
            }
            Err(error) => {
                tracing::debug!(%error, "bad CONNECT");
                if level == Some(5) {
                    // A v5 client learns why (3.2.2.2: CONNACK with a reason code, then close).
                    let refusal = crate::session::connect::Refusal {
                        reason: error.reason_code(),
                        text: "malformed CONNECT",
                    };
                    let ack = connack_refused(ProtocolVersion::V5, &refusal);
                    let mut out = BytesMut::new();
                    let _ = encode_packet(&Packet::ConnAck(ack), ProtocolVersion::V5, &mut out);
                    let _ = writer.write_all(out).await;
                }
                return None;
            }
        }
        let Some(left) = deadline.checked_duration_since(Instant::now()) else {
            tracing::debug!("no CONNECT before the deadline");
            return None;
        };
        ensure_spare(buf, settings.read_buffer_bytes);
        match monoio::time::timeout(left, reader.read_append(std::mem::take(buf))).await {
            Err(_) => {
                tracing::debug!("no CONNECT before the deadline");
                return None;
            }
            Ok((Ok(0), _)) | Ok((Err(_), _)) => return None,
            Ok((Ok(_), back)) => *buf = back,
        }
    };
    let version = connect.version;
    let now = Instant::now();

    // 2. Validate and negotiate.
    let negotiated = match negotiate(&connect, rules, now, || assign_client_id(conn_id)) {
        Ok(n) => n,
        Err(refusal) => {
            tracing::debug!(reason = refusal.text, "CONNECT refused");
            let mut out = BytesMut::new();
            let ack = connack_refused(version, &refusal);
            let _ = encode_packet(&Packet::ConnAck(ack), version, &mut out);
            let _ = writer.write_all(out).await;
            return None;
        }
    };
    if shard.borrow().shutting_down {
        return None;
    }

    // 3. Authenticate, then put the client id and the will into the org's scope.
    let refuse = |refusal: crate::session::connect::Refusal| {
        let mut out = BytesMut::new();
        let ack = connack_refused(version, &refusal);
        let _ = encode_packet(&Packet::ConnAck(ack), version, &mut out);
        out
    };
    let admitted =
        match super::shard::authenticate(shard, &connect, peer, identity, foreign_origin).await {
            Ok(admitted) => admitted,
            Err(refusal) => {
                let _ = writer.write_all(refuse(refusal)).await;
                return None;
            }
        };
    let mut negotiated = negotiated;
    let mut access = admitted.access;
    // A verified client certificate names the device: streams filter on it (`?device=`).
    access.set_device(identity.map(crate::mqtt::Str::from));
    if let Some(will) = negotiated.link.will.as_mut() {
        let client = &*negotiated.client_id;
        if !access.may_publish(&will.topic, client) {
            let refusal = crate::session::connect::Refusal {
                reason: ReasonCode::NOT_AUTHORIZED,
                text: "will topic not authorized",
            };
            let _ = writer.write_all(refuse(refusal)).await;
            return None;
        }
        will.topic = access.scope_topic(will.topic.clone());
    }
    // The CONNECT's strings are slices of the read buffer: a client id kept for the session's
    // life (session, registry, owners) would pin that whole buffer. Own copies are a few bytes.
    negotiated.client_id = Str::from(&*negotiated.client_id);
    let scoped_id = access.scope_topic(negotiated.client_id.clone());
    let org = access.org;
    negotiated.link.access = access;

    // 4. Claim the client id at its home shard; wait for the session (or nothing) to arrive.
    let notify = Rc::new(LocalNotify::default());
    let token = {
        let mut s = shard.borrow_mut();
        let owner = admitted
            .principal
            .as_ref()
            .map_or(0, |principal| principal.owner());
        let token = s.begin_connect(
            scoped_id.clone(),
            negotiated.clean_start,
            owner,
            Rc::clone(&notify),
        );
        s.flush(now);
        token
    };
    let wait = poll_fn(|cx| {
        notify.take();
        let mut s = shard.borrow_mut();
        match s.pending.get_mut(&token) {
            None => Poll::Ready(None),
            Some(pending) if pending.refused => {
                s.pending.remove(&token);
                Poll::Ready(Some(Err(())))
            }
            Some(pending) => match pending.grant.take() {
                Some(grant) => {
                    let resume = pending.resume;
                    s.pending.remove(&token);
                    Poll::Ready(Some(Ok((grant, resume))))
                }
                None => {
                    notify.register(cx.waker());
                    Poll::Pending
                }
            },
        }
    });
    let (state, resume) = match monoio::time::timeout(GRANT_TIMEOUT, wait).await {
        Ok(Some(Ok(granted))) => granted,
        Ok(Some(Err(()))) => {
            let refusal = crate::session::connect::Refusal {
                reason: ReasonCode::NOT_AUTHORIZED,
                text: "client id in use by another user's session",
            };
            let _ = writer.write_all(refuse(refusal)).await;
            return None;
        }
        Ok(None) => {
            tracing::debug!(client_id = %negotiated.client_id, "connection superseded before CONNACK");
            return None;
        }
        Err(_) => {
            tracing::warn!(client_id = %negotiated.client_id, "no grant from the home shard");
            shard.borrow_mut().pending.remove(&token);
            return None;
        }
    };

    Some(Handshake {
        negotiated,
        scoped_id,
        token,
        state,
        resume,
        admitted: (org, admitted.principal),
    })
}

/// What a completed handshake hands to the connection.
struct Handshake {
    negotiated: crate::session::connect::Negotiated,
    /// The client id as registered and routed (in the org's scope).
    scoped_id: crate::mqtt::Str,
    token: u64,
    state: Option<Box<crate::session::SessionState>>,
    /// The session stayed in place on this shard (see `PendingConnect::resume`).
    resume: Option<(Slot, u32)>,
    admitted: (u32, Option<Rc<super::shard::Principal>>),
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

/// A connection's reading side while no task reads it: what the next read loop needs. This is
/// what an idle connection keeps besides its session and socket, so it stays a few words.
/// (Its read half waits in [`ConnShared`], or sleeps with the socket.)
pub struct Parked {
    conn: Rc<ConnShared>,
    link: Connected,
    /// When reading stopped (`None`: not yet started).
    since: Option<Instant>,
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
fn end_lost(s: &mut Shard, slot: Slot, conn: &Rc<ConnShared>, now: Instant) {
    if s.entry_for_conn(slot, conn).is_some() {
        tracing::debug!(slot, "connection lost");
        s.end_connection(slot, None, true, now);
    }
}

/// Starts the read loops of parked connections whose sockets became ready (data, a hang-up or
/// an error), until `stop`. One per shard; without it (no epoll instance) connections never park.
pub async fn unpark_loop(shard: Rc<RefCell<Shard>>, stop: Rc<super::local_notify::LocalStop>) {
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
                conn: Rc::clone(&conn),
                org: admitted.0,
                principal: admitted.1,
                resume,
            },
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

/// Step 5: reads packets until the connection ends or goes quiet (then it parks in the shard's
/// park set, without a buffer or a task, until [`unpark_loop`] sees its socket ready).
async fn read_loop(
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
                    Ok(Some(packet)) => match s.handle_packet(slot, packet, now) {
                        Flow::Continue => {
                            if conn.is_paused() {
                                break;
                            }
                        }
                        Flow::Close(CloseReason::ClientDisconnect { with_will }) => {
                            s.end_connection(slot, None, with_will, now);
                            stop = true;
                        }
                        Flow::Close(CloseReason::Violation { reason, text }) => {
                            tracing::debug!(
                                reason = reason.0,
                                text,
                                "closing on protocol violation"
                            );
                            s.end_connection(slot, Some((reason, text)), true, now);
                            stop = true;
                        }
                    },
                    Ok(None) => break,
                    Err(error) => {
                        tracing::debug!(%error, "closing on malformed packet");
                        s.end_connection(
                            slot,
                            Some((error.reason_code(), "malformed packet")),
                            true,
                            now,
                        );
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
            super::local_notify::yield_now().await;
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

/// What the writer does next.
enum Next {
    Chunk(BytesMut),
    Close,
    Idle,
}

/// Writes the session's outbox as it fills: everything queued while a write is in flight goes
/// out in the next single write.
async fn write_loop(
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
async fn close_gracefully(conn: &ConnShared) {
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

/// The protocol level a (possibly malformed) CONNECT at the front of `buf` declares, if readable.
fn declared_level(buf: &[u8]) -> Option<u8> {
    let first = *buf.first()?;
    if first >> 4 != 1 {
        return None;
    }
    // Skip the remaining-length varint (at most 4 bytes) without trusting its value.
    let mut index = 1;
    while index < 5 && buf.get(index)? & 0x80 != 0 {
        index += 1;
    }
    let rest = buf.get(index + 1..)?;
    let name_len = usize::from(u16::from_be_bytes([*rest.first()?, *rest.get(1)?]));
    rest.get(2 + name_len).copied()
}

fn assign_client_id(conn_id: u64) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    format!(
        "ringmq-{:016x}{:08x}",
        nanos ^ conn_id.rotate_left(17),
        conn_id as u32
    )
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
