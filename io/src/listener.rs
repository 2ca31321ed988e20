//! TCP listeners and stream adoption on a shard, plus process metrics read from `/proc`.
//!
//! Everything here that creates a monoio socket must run on a shard thread (inside the
//! runtime): monoio registers the descriptor with the current thread's driver.

use std::net::SocketAddr;
use std::os::fd::{FromRawFd, IntoRawFd};
use std::sync::OnceLock;

use monoio::net::{ListenerOpts, TcpListener, TcpStream};

use crate::error::IoError;

/// Binds a TCP listener for a shard; `reuse_port: true` when every shard binds the same address (the kernel balances accepts).
///
/// SO_REUSEADDR is always on so a restarted broker can bind while old connections sit in
/// TIME_WAIT. `reuse_port` is always set explicitly because monoio's `ListenerOpts` turns it
/// on by default, which would silently let two brokers share a port.
///
/// To stop accepting, drop the pending `accept()` future (for example by losing a
/// `monoio::select!` against a shutdown signal), then drop the listener: the socket is closed
/// and new connections are refused (or go to the other shards' listeners with `reuse_port`).
/// Connections that were already queued in this listener's backlog are reset by the kernel.
pub fn bind_tcp(addr: SocketAddr, reuse_port: bool, backlog: i32) -> Result<TcpListener, IoError> {
    let options = ListenerOpts::new()
        .reuse_port(reuse_port)
        .reuse_addr(true)
        .backlog(backlog);
    retry_in_use(|| TcpListener::bind_with_config(addr, &options))
        .map_err(|source| IoError::Bind { addr, source })
}

/// Checks that `addr` is free by binding it (SO_REUSEADDR, no SO_REUSEPORT, so another
/// process's listener clashes) without listening, and letting it go: a probe that listened
/// would accept connections for a moment, before the broker is ready to answer them.
pub fn probe_bind(addr: SocketAddr) -> std::io::Result<()> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        None,
    )?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())
}

/// How long a bind is retried while its address is in use.
pub const BIND_RETRY: std::time::Duration = std::time::Duration::from_secs(3);

/// Runs `bind`, again every 50 ms while it fails with "address in use", for at most
/// [`BIND_RETRY`]: a broker restarted at once can find its ports still held by the process
/// before it, whose io_uring instance (and the listener a pending accept holds) the kernel
/// tears down asynchronously after the exit. Blocks the calling thread (a start only).
pub fn retry_in_use<T>(mut bind: impl FnMut() -> std::io::Result<T>) -> std::io::Result<T> {
    let deadline = std::time::Instant::now() + BIND_RETRY;
    loop {
        match bind() {
            Err(error)
                if error.kind() == std::io::ErrorKind::AddrInUse
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            other => return other,
        }
    }
}

/// Sets the options every accepted stream gets (TCP_NODELAY: the writer coalesces, so Nagle only adds latency).
pub fn tune_accepted(stream: &TcpStream) -> Result<(), IoError> {
    stream.set_nodelay(true)?;
    Ok(())
}

/// Converts an accepted std `TcpStream` (e.g. handed over from another shard by raw fd) into a monoio stream on the current shard; sets TCP_NODELAY.
///
/// The blocking mode is set to what the current driver expects: blocking for io_uring (as
/// monoio's own accept produces), non-blocking for epoll.
pub fn adopt_stream(stream: std::net::TcpStream) -> Result<TcpStream, IoError> {
    stream.set_nonblocking(monoio::utils::is_legacy())?;
    let stream = TcpStream::from_std(stream)?;
    tune_accepted(&stream)?;
    Ok(stream)
}

/// Releases a monoio stream from the current shard as a std stream, to hand it to another shard (which calls [`adopt_stream`]).
///
/// # Panics
/// If an IO operation on the stream is still in flight or the stream was split: monoio then
/// holds more than one reference to the descriptor. Detach only between reads and writes.
pub fn detach_stream(stream: TcpStream) -> std::net::TcpStream {
    let fd = stream.into_raw_fd();
    // SAFETY: `into_raw_fd` gave up monoio's ownership of `fd` (it deregistered it from the
    // driver and will not close it), so the std stream becomes its sole owner.
    unsafe { std::net::TcpStream::from_raw_fd(fd) }
}

/// Current RSS of this process in bytes (from /proc/self/statm), for metrics; `None` where /proc is unavailable.
pub fn process_rss_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let resident_pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(resident_pages * page_size_bytes())
}

/// The kernel page size, which /proc/self/statm counts in.
fn page_size_bytes() -> u64 {
    static PAGE_SIZE_BYTES: OnceLock<u64> = OnceLock::new();
    *PAGE_SIZE_BYTES.get_or_init(|| {
        // SAFETY: sysconf only reads a system constant; it has no memory-safety preconditions.
        let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        u64::try_from(size)
            .ok()
            .filter(|&size| size > 0)
            .unwrap_or(4096)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_probe_finds_a_clash_and_never_listens() {
        let held = std::net::TcpListener::bind("127.0.0.1:0").expect("listener");
        let taken = held.local_addr().expect("addr");
        let clash = probe_bind(taken).expect_err("a listener holds it");
        assert_eq!(clash.kind(), std::io::ErrorKind::AddrInUse);
        drop(held);
        // A free port: the probe binds it and lets it go without ever accepting.
        probe_bind(taken).expect("free again");
        let refused = std::net::TcpStream::connect(taken).expect_err("nobody listens");
        assert_eq!(refused.kind(), std::io::ErrorKind::ConnectionRefused);
    }

    #[test]
    fn a_bind_is_retried_while_its_address_is_in_use() {
        let mut tries = 0;
        let bound = retry_in_use(|| {
            tries += 1;
            if tries < 3 {
                Err(std::io::Error::from(std::io::ErrorKind::AddrInUse))
            } else {
                Ok(tries)
            }
        });
        assert_eq!(bound.expect("third try"), 3);
        let other = retry_in_use::<()>(|| Err(std::io::ErrorKind::PermissionDenied.into()));
        assert_eq!(
            other.expect_err("not retried").kind(),
            std::io::ErrorKind::PermissionDenied
        );
    }

    #[test]
    fn page_size_is_a_power_of_two() {
        let size = page_size_bytes();
        assert!(size >= 4096 && size.is_power_of_two());
    }

    #[test]
    fn rss_is_plausible() {
        let rss = process_rss_bytes().expect("/proc/self/statm");
        assert!(rss > 1024 * 1024, "rss {rss} bytes");
    }
}
