//! Coordination between the main thread and the loadgen threads, and within one thread.
//!
//! The main thread drives the run through [`Phase`]s stored in [`Global`]; each loadgen thread
//! runs a control task that polls it every few milliseconds and, on a change (or when a
//! keep-alive ping round is due), wakes every connection task of its thread through
//! [`ThreadControl`]. Connection tasks therefore never touch another thread's memory except
//! the counters below, which they add to once per batch, not once per message.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::OnceLock;
use std::task::{Context, Poll, Waker};
use std::time::Instant;

/// Where the run is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub enum Phase {
    /// Clients connect and subscribe; publishers wait.
    Connecting = 0,
    /// Publishers publish (warm-up, then measurement).
    Publishing = 1,
    /// Publishers stop sending new messages and wait for their acks; subscribers keep reading.
    Draining = 2,
    /// Everyone disconnects.
    Stopping = 3,
}

impl Phase {
    fn from_u8(value: u8) -> Phase {
        match value {
            0 => Phase::Connecting,
            1 => Phase::Publishing,
            2 => Phase::Draining,
            _ => Phase::Stopping,
        }
    }
}

/// State shared by all threads of a run: the phase and the counters progress is printed from.
#[derive(Debug)]
pub struct Global {
    /// The run's clock origin; payload timestamps are nanoseconds since it.
    pub epoch: Instant,
    phase: AtomicU8,
    /// Latency samples count only for messages sent at or after this (ns since epoch).
    pub measure_from_ns: AtomicU64,
    /// Connections that completed CONNACK (and SUBACK for subscribers).
    pub connected: AtomicU64,
    /// Connections that failed to connect, were refused or were closed by the broker.
    pub connect_failed: AtomicU64,
    /// PUBLISH packets written.
    pub sent: AtomicU64,
    /// PUBLISH packets acknowledged (PUBACK, or PUBCOMP at QoS 2).
    pub acked: AtomicU64,
    /// PUBLISH packets received by subscribers.
    pub received: AtomicU64,
    /// Protocol or IO errors after connecting.
    pub errors: AtomicU64,
    /// Publishers that sent their `--count` messages.
    pub publishers_done: AtomicU64,
    /// What the first TLS connection negotiated (version, suite, group), for the report.
    tls_session: OnceLock<String>,
    /// TLS connections that resumed a session (`--tls-resume`) instead of a full handshake.
    pub tls_resumed: AtomicU64,
}

impl Global {
    /// A fresh run in the `Connecting` phase.
    pub fn new() -> Global {
        Global {
            epoch: Instant::now(),
            phase: AtomicU8::new(Phase::Connecting as u8),
            measure_from_ns: AtomicU64::new(u64::MAX),
            connected: AtomicU64::new(0),
            connect_failed: AtomicU64::new(0),
            sent: AtomicU64::new(0),
            acked: AtomicU64::new(0),
            received: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            publishers_done: AtomicU64::new(0),
            tls_session: OnceLock::new(),
            tls_resumed: AtomicU64::new(0),
        }
    }

    /// Whether a TLS session was described already.
    pub fn has_tls_session(&self) -> bool {
        self.tls_session.get().is_some()
    }

    /// Keeps the first description of a TLS session.
    pub fn set_tls_session(&self, description: String) {
        let _ = self.tls_session.set(description);
    }

    /// What the first TLS connection negotiated.
    pub fn tls_session(&self) -> Option<String> {
        self.tls_session.get().cloned()
    }

    /// The current phase.
    pub fn phase(&self) -> Phase {
        Phase::from_u8(self.phase.load(Ordering::Acquire))
    }

    /// Moves the run to `phase` (phases only move forward).
    pub fn set_phase(&self, phase: Phase) {
        self.phase.fetch_max(phase as u8, Ordering::AcqRel);
    }

    /// Nanoseconds since the epoch.
    pub fn now_ns(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }
}

impl Default for Global {
    fn default() -> Self {
        Global::new()
    }
}

/// One thread's view of the run, broadcast to its connection tasks.
///
/// Each task registers once and gets a waker slot, so the waker list is bounded by the number
/// of connections of the thread however often tasks wait.
#[derive(Debug, Default)]
pub struct ThreadControl {
    generation: Cell<u64>,
    wakers: RefCell<Vec<Option<Waker>>>,
    phase: Cell<Option<Phase>>,
    ping_round: Cell<u64>,
    measure_from_ns: Cell<u64>,
}

impl ThreadControl {
    /// A control in the `Connecting` phase.
    pub fn new() -> ThreadControl {
        ThreadControl {
            measure_from_ns: Cell::new(u64::MAX),
            ..ThreadControl::default()
        }
    }

    /// Gives a task its waker slot.
    pub fn register(&self) -> usize {
        let mut wakers = self.wakers.borrow_mut();
        wakers.push(None);
        wakers.len() - 1
    }

    /// The phase as last seen by this thread.
    pub fn phase(&self) -> Phase {
        self.phase.get().unwrap_or(Phase::Connecting)
    }

    /// How many keep-alive ping rounds have been announced.
    pub fn ping_round(&self) -> u64 {
        self.ping_round.get()
    }

    /// Latency samples count only for messages sent at or after this (ns since epoch).
    pub fn measure_from_ns(&self) -> u64 {
        self.measure_from_ns.get()
    }

    /// The generation to pass to [`ThreadControl::changed`].
    pub fn generation(&self) -> u64 {
        self.generation.get()
    }

    /// Resolves once something was announced after `seen` (a generation).
    pub fn changed(&self, slot: usize, seen: u64) -> Changed<'_> {
        Changed {
            control: self,
            slot,
            seen,
        }
    }

    /// Waits until the phase is at least `phase`.
    pub async fn reach(&self, slot: usize, phase: Phase) {
        while self.phase() < phase {
            let seen = self.generation();
            if self.phase() >= phase {
                return;
            }
            self.changed(slot, seen).await;
        }
    }

    /// Copies the global state; wakes every task if the phase or the measurement start changed.
    pub fn sync(&self, global: &Global) {
        let phase = global.phase();
        let measure_from_ns = global.measure_from_ns.load(Ordering::Acquire);
        if self.phase.get() != Some(phase) || self.measure_from_ns.get() != measure_from_ns {
            self.phase.set(Some(phase));
            self.measure_from_ns.set(measure_from_ns);
            self.wake_all();
        }
    }

    /// Announces a keep-alive ping round: idle tasks send PINGREQ.
    pub fn announce_ping(&self) {
        self.ping_round.set(self.ping_round.get() + 1);
        self.wake_all();
    }

    fn wake_all(&self) {
        self.generation.set(self.generation.get() + 1);
        for waker in self.wakers.borrow_mut().iter_mut() {
            if let Some(waker) = waker.take() {
                waker.wake();
            }
        }
    }
}

/// Future returned by [`ThreadControl::changed`].
pub struct Changed<'a> {
    control: &'a ThreadControl,
    slot: usize,
    seen: u64,
}

impl Future for Changed<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<()> {
        if self.control.generation.get() != self.seen {
            return Poll::Ready(());
        }
        let mut wakers = self.control.wakers.borrow_mut();
        if let Some(slot) = wakers.get_mut(self.slot) {
            *slot = Some(context.waker().clone());
        }
        Poll::Pending
    }
}

/// A single-waiter, level-triggered wake-up between two tasks of one thread (e.g. an ack
/// reader telling its publisher that the in-flight window has room).
#[derive(Debug, Default)]
pub struct LocalNotify {
    pending: Cell<bool>,
    waker: RefCell<Option<Waker>>,
}

impl LocalNotify {
    /// Wakes the waiter, or makes its next wait return at once.
    pub fn notify(&self) {
        self.pending.set(true);
        if let Some(waker) = self.waker.borrow_mut().take() {
            waker.wake();
        }
    }

    /// Resolves once `notify` was called since the last wait returned.
    pub fn notified(&self) -> Notified<'_> {
        Notified { notify: self }
    }
}

/// Future returned by [`LocalNotify::notified`].
pub struct Notified<'a> {
    notify: &'a LocalNotify,
}

impl Future for Notified<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<()> {
        if self.notify.pending.replace(false) {
            return Poll::Ready(());
        }
        *self.notify.waker.borrow_mut() = Some(context.waker().clone());
        Poll::Pending
    }
}
