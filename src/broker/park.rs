//! Where quiet connections wait: one epoll instance per shard holds their sockets.
//!
//! A connection that sent nothing for a while stops reading: its state moves into this set
//! (a few words in a page of [`Slots`]) and its socket is armed once (`EPOLLONESHOT`) in the
//! shard's epoll instance. No task, future, read buffer or pending io_uring operation is left
//! per idle connection, which is most of what a fleet broker's memory is spent on. One shard
//! task waits for the epoll descriptor to become readable (through the runtime, so it works on
//! both io_uring and epoll drivers), takes every ready connection out and starts its read loop.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use super::slots::Slots;

/// Ready events taken per `epoll_wait`.
const EVENTS_PER_WAIT: usize = 256;

/// Values parked until their socket is readable.
pub struct ParkSet<T> {
    epoll: OwnedFd,
    waiting: Slots<T>,
    events: Vec<libc::epoll_event>,
}

impl<T> ParkSet<T> {
    /// A new, empty set with its own epoll instance.
    pub fn new() -> io::Result<Self> {
        // SAFETY: epoll_create1 takes a flag and returns a new descriptor or -1.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just returned by epoll_create1, is open, and nothing else owns it.
        let epoll = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(ParkSet {
            epoll,
            waiting: Slots::default(),
            events: Vec::with_capacity(EVENTS_PER_WAIT),
        })
    }

    /// Keeps `value` until `fd` has data, is hung up or fails. On an error the value comes back
    /// (the caller keeps reading the normal way).
    pub fn park(&mut self, fd: RawFd, value: T) -> Result<(), (io::Error, T)> {
        let slot = self.waiting.insert(value);
        let mut event = libc::epoll_event {
            events: (libc::EPOLLIN | libc::EPOLLRDHUP | libc::EPOLLONESHOT) as u32,
            u64: u64::from(slot),
        };
        // A socket parked before is still registered (one-shot disarmed it): re-arm it. The
        // first park of a socket adds it. Level-triggered: data that arrived before the arm
        // is reported too.
        let armed = epoll_ctl(self.epoll.as_raw_fd(), libc::EPOLL_CTL_MOD, fd, &mut event).or_else(
            |error| match error.raw_os_error() {
                Some(libc::ENOENT) => {
                    epoll_ctl(self.epoll.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut event)
                }
                _ => Err(error),
            },
        );
        match armed {
            Ok(()) => Ok(()),
            Err(error) => match self.waiting.take(slot) {
                Some(value) => Err((error, value)),
                None => unreachable!("the slot was filled just above"),
            },
        }
    }

    /// Moves every value whose socket is ready into `ready` without blocking.
    pub fn take_ready(&mut self, ready: &mut Vec<T>) -> io::Result<()> {
        loop {
            self.events.clear();
            // SAFETY: the buffer has room for EVENTS_PER_WAIT events and the kernel writes at
            // most that many; a zero timeout never blocks.
            let count = unsafe {
                libc::epoll_wait(
                    self.epoll.as_raw_fd(),
                    self.events.as_mut_ptr(),
                    EVENTS_PER_WAIT as libc::c_int,
                    0,
                )
            };
            if count < 0 {
                let error = io::Error::last_os_error();
                if error.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(error);
            }
            // SAFETY: epoll_wait initialised the first `count` events.
            unsafe { self.events.set_len(count as usize) };
            for event in &self.events {
                let slot = event.u64 as u32;
                if let Some(value) = self.waiting.take(slot) {
                    ready.push(value);
                }
            }
            if (count as usize) < EVENTS_PER_WAIT {
                return Ok(());
            }
        }
    }

    /// Visits up to `count` slots from `*cursor` on (wrapping at the end) with `visit`; a value
    /// it answers `false` for leaves the set and goes to `removed`. Bounded, so a walk over
    /// many parked connections is spread over several calls.
    pub fn sweep(
        &mut self,
        cursor: &mut u32,
        count: u32,
        mut visit: impl FnMut(&mut T) -> bool,
        removed: &mut Vec<T>,
    ) {
        let bound = self.waiting.bound();
        if bound == 0 {
            return;
        }
        for _ in 0..count.min(bound) {
            let slot = *cursor % bound;
            *cursor = (slot + 1) % bound;
            let keep = match self.waiting.get_mut(slot) {
                Some(value) => visit(value),
                None => true,
            };
            if !keep {
                removed.extend(self.waiting.take(slot));
            }
        }
    }

    /// A runtime handle on the epoll descriptor, to await its readiness (readable = some parked
    /// socket is ready).
    pub fn waiter(&self) -> io::Result<monoio::net::UnixStream> {
        let copy = self.epoll.try_clone()?;
        // SAFETY: `copy` is an open descriptor we own; the stream takes it over and only ever
        // polls it for readiness (it is never read or written), then closes it on drop.
        let std_stream = unsafe {
            std::os::unix::net::UnixStream::from_raw_fd(std::os::fd::IntoRawFd::into_raw_fd(copy))
        };
        monoio::net::UnixStream::from_std(std_stream)
    }

    /// How many values are parked.
    pub fn len(&self) -> usize {
        self.waiting.iter().count()
    }

    /// True when nothing is parked.
    pub fn is_empty(&self) -> bool {
        self.waiting.iter().next().is_none()
    }
}

fn epoll_ctl(
    epoll: RawFd,
    op: libc::c_int,
    fd: RawFd,
    event: &mut libc::epoll_event,
) -> io::Result<()> {
    // SAFETY: `event` is a valid epoll_event for the duration of the call; the kernel checks
    // both descriptors.
    if unsafe { libc::epoll_ctl(epoll, op, fd, event) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::net::UnixStream;

    #[test]
    fn parked_values_come_back_once_their_socket_is_readable() {
        let mut set = ParkSet::new().expect("epoll");
        let (mut a_peer, a) = UnixStream::pair().expect("pair");
        let (b_peer, b) = UnixStream::pair().expect("pair");
        set.park(a.as_raw_fd(), "a").expect("park a");
        set.park(b.as_raw_fd(), "b").expect("park b");
        let mut ready = Vec::new();
        set.take_ready(&mut ready).expect("wait");
        assert!(ready.is_empty(), "nothing was written yet");
        assert_eq!(set.len(), 2);

        a_peer.write_all(b"x").expect("write");
        set.take_ready(&mut ready).expect("wait");
        assert_eq!(ready, ["a"]);
        // One-shot: the same readiness is not reported again until the socket is parked anew.
        ready.clear();
        set.take_ready(&mut ready).expect("wait");
        assert!(ready.is_empty());

        // Parking again re-arms the registration; unread data is reported at once.
        set.park(a.as_raw_fd(), "a again").expect("re-park");
        set.take_ready(&mut ready).expect("wait");
        assert_eq!(ready, ["a again"]);

        // A hang-up counts as ready, so a parked connection sees its peer close.
        ready.clear();
        drop(b_peer);
        set.take_ready(&mut ready).expect("wait");
        assert_eq!(ready, ["b"]);
        assert!(set.is_empty());
    }

    #[test]
    fn a_bad_descriptor_gives_the_value_back() {
        let mut set: ParkSet<u32> = ParkSet::new().expect("epoll");
        let (error, value) = set.park(-1, 7).expect_err("fd -1");
        assert_eq!(value, 7);
        assert_eq!(error.raw_os_error(), Some(libc::EBADF));
        assert!(set.is_empty());
    }

    #[test]
    fn many_ready_sockets_are_taken_in_one_call() {
        let mut set = ParkSet::new().expect("epoll");
        let mut pairs = Vec::new();
        for i in 0..(EVENTS_PER_WAIT + 10) {
            let (mut peer, sock) = UnixStream::pair().expect("pair");
            set.park(sock.as_raw_fd(), i).expect("park");
            peer.write_all(b"x").expect("write");
            pairs.push((peer, sock));
        }
        let mut ready = Vec::new();
        set.take_ready(&mut ready).expect("wait");
        ready.sort_unstable();
        assert_eq!(ready, (0..EVENTS_PER_WAIT + 10).collect::<Vec<_>>());
    }

    #[test]
    fn a_sweep_visits_a_bounded_run_and_wraps() {
        let mut set = ParkSet::new().expect("epoll");
        let mut sockets = Vec::new();
        for i in 0..10u32 {
            let (peer, sock) = UnixStream::pair().expect("pair");
            set.park(sock.as_raw_fd(), i).expect("park");
            sockets.push((peer, sock));
        }
        let mut cursor = 0;
        let mut seen = Vec::new();
        let mut removed = Vec::new();
        set.sweep(
            &mut cursor,
            4,
            |v| {
                seen.push(*v);
                true
            },
            &mut removed,
        );
        assert_eq!(seen, [0, 1, 2, 3]);
        // Odd values leave; the walk goes on where it stopped and wraps past the last page.
        seen.clear();
        set.sweep(
            &mut cursor,
            70,
            |v| {
                seen.push(*v);
                *v % 2 == 0
            },
            &mut removed,
        );
        assert_eq!(seen, [4, 5, 6, 7, 8, 9, 0, 1, 2, 3]);
        assert_eq!(removed, [5, 7, 9, 1, 3]);
        assert_eq!(set.len(), 5);
        let mut empty: ParkSet<u32> = ParkSet::new().expect("epoll");
        empty.sweep(&mut cursor, 10, |_| false, &mut removed);
    }

    /// The waiter wakes the runtime when a parked socket gets data, on either driver.
    async fn waiter_wakes_when_a_parked_socket_is_ready() {
        let mut set = ParkSet::new().expect("epoll");
        let waiter = set.waiter().expect("waiter");
        let (mut peer, sock) = UnixStream::pair().expect("pair");
        set.park(sock.as_raw_fd(), "sock").expect("park");
        let writer = monoio::spawn(async move {
            monoio::time::sleep(std::time::Duration::from_millis(30)).await;
            peer.write_all(b"x").expect("write");
            peer
        });
        let started = std::time::Instant::now();
        waiter.readable(false).await.expect("readable");
        assert!(started.elapsed() >= std::time::Duration::from_millis(20));
        let mut ready = Vec::new();
        set.take_ready(&mut ready).expect("take");
        assert_eq!(ready, ["sock"]);
        drop(writer.await);
    }

    #[test]
    fn waiter_wakes_on_io_uring_and_on_epoll() {
        if let Ok(mut runtime) = monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
            .enable_timer()
            .build()
        {
            runtime.block_on(waiter_wakes_when_a_parked_socket_is_ready());
        }
        let mut runtime = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .enable_timer()
            .build()
            .expect("epoll runtime");
        runtime.block_on(waiter_wakes_when_a_parked_socket_is_ready());
    }
}
