//! A plain TCP connection with neither half in use, kept as its bare descriptor.
//!
//! monoio's split halves share one reference-counted stream (about 100 bytes) on top of a
//! reference-counted descriptor record (about 50 bytes). An idle fleet connection uses neither
//! for minutes at a time, so a shard puts quiet connections to sleep as their descriptor alone
//! and wakes them (two allocations, no system call on io_uring) when there is something to read
//! or write. The descriptor number stays the same, so whatever the broker registered it with
//! (its park set's epoll instance) still applies.

use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicI64, Ordering};

use monoio::net::TcpStream;

use crate::error::IoError;
use crate::tls::{ConnReader, ConnWriter};

/// Sockets asleep in this process (a gauge for `/metrics`).
static ASLEEP: AtomicI64 = AtomicI64::new(0);

/// How many connections' sockets are asleep right now, over all shards.
pub fn asleep_count() -> i64 {
    ASLEEP.load(Ordering::Relaxed)
}

/// A plain TCP connection's socket while nothing reads or writes it.
#[derive(Debug)]
pub struct DormantTcp(Option<OwnedFd>);

impl Drop for DormantTcp {
    fn drop(&mut self) {
        if self.0.is_some() {
            ASLEEP.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// Why halves could not be put to sleep.
#[derive(Debug)]
pub enum SleepError {
    /// Not both plain TCP halves of one stream (TLS and layered transports stay awake): they
    /// come back unchanged.
    Unsupported(ConnReader, ConnWriter),
    /// An operation on the socket was still in flight, so monoio would not give the descriptor
    /// up. The stream is gone and the socket closes once that operation ends: the connection
    /// is lost. (Callers only put connections to sleep that have been idle for a while, so
    /// this is a bug guard, not a path taken.)
    Lost,
}

impl DormantTcp {
    /// Puts a connection's two halves to sleep, keeping only the descriptor.
    pub fn sleep(reader: ConnReader, writer: ConnWriter) -> Result<DormantTcp, SleepError> {
        let stream = match (reader, writer) {
            (ConnReader::Tcp(read), ConnWriter::Tcp(write)) => match read.reunite(write) {
                Ok(stream) => stream,
                // Halves of two different streams (the type is not exported; its fields are).
                Err(halves) => {
                    return Err(SleepError::Unsupported(
                        ConnReader::Tcp(halves.0),
                        ConnWriter::Tcp(halves.1),
                    ))
                }
            },
            (reader, writer) => return Err(SleepError::Unsupported(reader, writer)),
        };
        // monoio panics (instead of failing) when another reference to the descriptor exists,
        // which only an operation still in flight holds. The panic happens before anything is
        // closed or freed twice: the remaining reference closes the socket when it is dropped.
        match catch_unwind(AssertUnwindSafe(|| stream.into_raw_fd())) {
            // SAFETY: `into_raw_fd` gave up monoio's ownership of `fd` (deregistered it from the
            // driver; it will not close it), so this is now its only owner.
            Ok(fd) => {
                ASLEEP.fetch_add(1, Ordering::Relaxed);
                Ok(DormantTcp(Some(unsafe { OwnedFd::from_raw_fd(fd) })))
            }
            Err(_) => Err(SleepError::Lost),
        }
    }

    /// Wakes the connection on the current shard's driver: its two halves again.
    ///
    /// On an error (the epoll driver could not register the descriptor) the socket is closed.
    pub fn wake(mut self) -> Result<(ConnReader, ConnWriter), IoError> {
        let Some(fd) = self.0.take() else {
            unreachable!("only wake and drop take the descriptor, and both consume the value")
        };
        ASLEEP.fetch_sub(1, Ordering::Relaxed);
        let stream = TcpStream::from_std(std::net::TcpStream::from(fd))?;
        let (read, write) = monoio::io::Splitable::into_split(stream);
        Ok((ConnReader::Tcp(read), ConnWriter::Tcp(write)))
    }

    /// The socket descriptor (the same number it had awake).
    pub fn fd(&self) -> RawFd {
        self.0.as_ref().map_or(-1, AsRawFd::as_raw_fd)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::ConnStream;

    async fn sleep_and_wake_keep_the_connection() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let mut client = std::net::TcpStream::connect(addr).expect("connect");
        let (accepted, _) = listener.accept().expect("accept");
        let stream = crate::adopt_stream(accepted).expect("adopt");
        let fd = stream.as_raw_fd();
        let (reader, writer) = ConnStream::Tcp(stream).into_split();

        let asleep = asleep_count();
        let dormant = DormantTcp::sleep(reader, writer).expect("plain halves sleep");
        assert_eq!(dormant.fd(), fd, "the descriptor number is kept");
        assert_eq!(asleep_count(), asleep + 1);
        // Asleep, the socket is still open: the client's bytes wait in the kernel.
        std::io::Write::write_all(&mut client, b"ping").expect("client write");

        let (mut reader, mut writer) = dormant.wake().expect("wake");
        assert_eq!(asleep_count(), asleep);
        let (read, buf) = reader.read_append(bytes::BytesMut::with_capacity(64)).await;
        assert_eq!(read.expect("read"), 4);
        assert_eq!(&buf[..], b"ping");
        let (written, _) = writer.write_all(bytes::BytesMut::from(&b"pong"[..])).await;
        written.expect("write");
        let mut answer = [0u8; 4];
        std::io::Read::read_exact(&mut client, &mut answer).expect("client read");
        assert_eq!(&answer, b"pong");

        // A second sleep after use works the same.
        let dormant = DormantTcp::sleep(reader, writer).expect("sleep again");
        assert_eq!(asleep_count(), asleep + 1);
        drop(dormant);
        assert_eq!(asleep_count(), asleep);
        let mut rest = Vec::new();
        std::io::Read::read_to_end(&mut client, &mut rest).expect("eof");
        assert!(rest.is_empty(), "dropping a dormant socket closes it");
    }

    #[test]
    fn sleep_and_wake_on_io_uring_and_on_epoll() {
        if let Ok(mut runtime) = monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
            .enable_timer()
            .build()
        {
            runtime.block_on(sleep_and_wake_keep_the_connection());
        }
        let mut runtime = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .enable_timer()
            .build()
            .expect("epoll runtime");
        runtime.block_on(sleep_and_wake_keep_the_connection());
    }
}
