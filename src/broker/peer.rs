//! Questions to the kernel about a connection's socket.

/// The peer address of a socket, asked of the kernel only when someone lists sessions (an idle
/// connection does not carry it).
pub fn peer_address(fd: std::os::fd::RawFd) -> Option<std::net::SocketAddr> {
    // SAFETY: `storage` is a zeroed sockaddr_storage large enough for any address family and
    // `len` holds its size, as getpeername(2) requires; the fd belongs to a live connection.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: see above; getpeername writes at most `len` bytes into `storage`.
    let rc = unsafe {
        libc::getpeername(
            fd,
            (&mut storage as *mut libc::sockaddr_storage).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return None;
    }
    match i32::from(storage.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in.
            let addr: &libc::sockaddr_in =
                unsafe { &*(&storage as *const libc::sockaddr_storage).cast() };
            let ip = std::net::Ipv4Addr::from(u32::from_be(addr.sin_addr.s_addr));
            Some(std::net::SocketAddr::new(
                ip.into(),
                u16::from_be(addr.sin_port),
            ))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says the storage holds a sockaddr_in6.
            let addr: &libc::sockaddr_in6 =
                unsafe { &*(&storage as *const libc::sockaddr_storage).cast() };
            let ip = std::net::Ipv6Addr::from(addr.sin6_addr.s6_addr);
            Some(std::net::SocketAddr::new(
                ip.into(),
                u16::from_be(addr.sin6_port),
            ))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_address_reads_a_loopback_socket() {
        use std::os::fd::AsRawFd;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        assert_eq!(
            peer_address(server.as_raw_fd()),
            Some(client.local_addr().unwrap())
        );
        assert_eq!(peer_address(-1), None);
    }
}
