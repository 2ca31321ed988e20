//! TLS on shard connections: a rustls server session over monoio's owned-buffer TCP IO.
//!
//! - [`TlsFiles`] + [`load_server_config`]: certificate chain, key and client CA read from PEM
//!   files, checked (a key that does not match the certificate is an error naming both files).
//! - [`ReloadableTls`]: the server config the shards share; [`ReloadableTls::reload`] re-reads
//!   the files (SIGHUP) and new handshakes use the result, established sessions keep theirs.
//! - [`accept`]: the server handshake on an accepted [`TcpStream`], giving a [`TlsStream`] whose
//!   halves ([`TlsStream::into_split`]) read and write concurrently, as the TCP halves do.
//! - [`ConnReader`] / [`ConnWriter`]: one type for the plain and the TLS halves, so MQTT and
//!   HTTP are served by the same code over both.
//!
//! Why not `monoio-rustls`: it has no access to the session after the handshake (the client
//! certificate's CN is the device identity) and holds two 16 KiB buffers per connection. Here
//! the read half keeps one small raw buffer and the write half one that is freed when large;
//! there is no `unsafe`: the halves share the session through an `Rc<RefCell<_>>` that is never
//! borrowed across an await.

use std::cell::RefCell;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use bytes::{Buf, BytesMut};
use monoio::io::{AsyncWriteRentExt, OwnedReadHalf, OwnedWriteHalf, Splitable};
use monoio::net::TcpStream;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::sign::{CertifiedKey, SingleCertAndKey};
use rustls::{RootCertStore, ServerConfig, ServerConnection};
use simple_asn1::{oid, ASN1Block, ASN1Class};

use crate::buf::read_append;

/// Raw (encrypted) bytes read from the socket at a time.
const RAW_READ_CHUNK: usize = 4096;

/// Most plaintext one read hands out: two full TLS records. The room handed to rustls is zeroed
/// first, so a large read buffer is not zeroed whole for every record.
const PLAINTEXT_READ_MAX: usize = 32 * 1024;

/// A write half's ciphertext buffer larger than this is freed after the write, so a connection
/// that once sent a large burst does not keep the memory while idle.
const OUT_KEEP_MAX: usize = 16 * 1024;

/// Whether and how clients present certificates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientAuth {
    /// No client certificates are asked for.
    None,
    /// A client may present a certificate signed by the client CA; one that does not still connects.
    Optional,
    /// A client without a certificate signed by the client CA fails the handshake.
    Required,
}

/// Where the server's certificate, key and client CA are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM certificate chain, end-entity first.
    pub cert_path: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key_path: PathBuf,
    /// PEM CA certificates that sign client certificates; `None` when client auth is off.
    pub client_ca_path: Option<PathBuf>,
    /// Whether clients present certificates.
    pub client_auth: ClientAuth,
}

/// Why a TLS configuration could not be loaded; every variant names the file.
#[derive(thiserror::Error, Debug)]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The underlying IO error.
        source: io::Error,
    },
    /// The certificate file holds no PEM certificate.
    #[error("{}: no PEM certificate found (expected -----BEGIN CERTIFICATE-----)", path.display())]
    NoCertificate {
        /// The file.
        path: PathBuf,
    },
    /// The key file holds no PEM private key.
    #[error("{}: no PEM private key found (expected PKCS#8, PKCS#1 or SEC1)", path.display())]
    NoKey {
        /// The file.
        path: PathBuf,
    },
    /// A PEM file is malformed or its contents are not usable.
    #[error("{}: {detail}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// The private key is not the key of the certificate.
    #[error("{} does not match the certificate in {}", key.display(), cert.display())]
    KeyMismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
    },
    /// Client certificates are asked for but no client CA is configured.
    #[error("client certificates are enabled but no client CA file is configured")]
    NoClientCa,
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    })
}

fn invalid(path: &Path, detail: impl std::fmt::Display) -> TlsError {
    TlsError::Invalid {
        path: path.to_path_buf(),
        detail: detail.to_string(),
    }
}

/// Reads every certificate of a PEM file; none is an error.
fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| invalid(path, format!("bad PEM: {error}")))?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.to_path_buf(),
        });
    }
    Ok(certs)
}

/// Reads and checks the files and builds the server configuration.
pub fn load_server_config(files: &TlsFiles) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain = read_certs(&files.cert_path)?;
    let key_pem = read(&files.key_path)?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|error| match error {
        rustls::pki_types::pem::Error::NoItemsFound => TlsError::NoKey {
            path: files.key_path.clone(),
        },
        other => invalid(&files.key_path, format!("bad PEM: {other}")),
    })?;
    let signing = provider
        .key_provider
        .load_private_key(key)
        .map_err(|error| invalid(&files.key_path, error))?;
    let certified = CertifiedKey::new(chain, signing);
    match certified.keys_match() {
        Ok(()) => {}
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
            return Err(TlsError::KeyMismatch {
                cert: files.cert_path.clone(),
                key: files.key_path.clone(),
            })
        }
        // The provider cannot tell for this key type: rustls accepts it too.
        Err(rustls::Error::InconsistentKeys(_)) => {}
        Err(error) => return Err(invalid(&files.cert_path, error)),
    }
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(rustls::DEFAULT_VERSIONS)?;
    let builder = match files.client_auth {
        ClientAuth::None => builder.with_no_client_auth(),
        ClientAuth::Optional | ClientAuth::Required => {
            let Some(ca_path) = &files.client_ca_path else {
                return Err(TlsError::NoClientCa);
            };
            let mut roots = RootCertStore::empty();
            for cert in read_certs(ca_path)? {
                roots
                    .add(cert)
                    .map_err(|error| invalid(ca_path, format!("bad CA certificate: {error}")))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let verifier = if files.client_auth == ClientAuth::Optional {
                verifier.allow_unauthenticated()
            } else {
                verifier
            };
            let verifier = verifier.build().map_err(|error| invalid(ca_path, error))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_cert_resolver(Arc::new(SingleCertAndKey::from(certified)));
    // Stateless resumption tickets (rotating keys, shared by every shard through this config):
    // the default session cache held 256 sessions, so under a reconnect storm of a fleet
    // (ringmq-loadgen --tls-resume, 10k at 10k/s) only 140 of 10,000 resumed.
    config.ticketer = rustls::crypto::ring::Ticketer::new()?;
    Ok(Arc::new(config))
}

/// The server configuration every shard uses, replaced as a whole by [`ReloadableTls::reload`].
#[derive(Debug)]
pub struct ReloadableTls {
    files: TlsFiles,
    current: RwLock<Arc<ServerConfig>>,
    version: AtomicU64,
}

impl ReloadableTls {
    /// Loads the files once; an error here should stop the broker before it listens.
    pub fn load(files: TlsFiles) -> Result<ReloadableTls, TlsError> {
        let config = load_server_config(&files)?;
        Ok(ReloadableTls {
            files,
            current: RwLock::new(config),
            version: AtomicU64::new(1),
        })
    }

    /// Re-reads the files; on error the configuration in use stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        let config = load_server_config(&self.files)?;
        // A poisoned lock only means a reader panicked; the value is a plain Arc, still whole.
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = config;
        self.version.fetch_add(1, Ordering::Release);
        Ok(())
    }

    /// The configuration new handshakes use.
    pub fn current(&self) -> Arc<ServerConfig> {
        Arc::clone(&self.current.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// Bumped by every successful reload, so a shard can cache [`ReloadableTls::current`].
    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }
}

fn tls_error(error: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, error)
}

/// Writes everything rustls has queued for the peer.
async fn flush_tls<W: monoio::io::AsyncWriteRent>(
    session: &mut ServerConnection,
    tcp: &mut W,
) -> io::Result<()> {
    while session.wants_write() {
        let mut out = Vec::new();
        while session.wants_write() {
            session.write_tls(&mut out)?;
        }
        let (result, _) = tcp.write_all(out).await;
        result?;
    }
    Ok(())
}

/// Runs the server handshake on an accepted stream (bound it with a timeout: a peer that stops
/// mid-handshake is waited for).
pub async fn accept(mut tcp: TcpStream, config: Arc<ServerConfig>) -> io::Result<TlsStream> {
    let fd = tcp.as_raw_fd();
    let peer = tcp.peer_addr().ok();
    let mut session = ServerConnection::new(config).map_err(tls_error)?;
    let mut raw = BytesMut::new();
    loop {
        flush_tls(&mut session, &mut tcp).await?;
        if !session.is_handshaking() {
            break;
        }
        if raw.is_empty() {
            raw.reserve(RAW_READ_CHUNK);
            let (result, back) = read_append(&mut tcp, raw).await;
            raw = back;
            if result? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "peer closed during the TLS handshake",
                ));
            }
        }
        let used = session.read_tls(&mut &raw[..])?;
        raw.advance(used);
        if let Err(error) = session.process_new_packets() {
            // Send the alert (bad certificate, no shared cipher…) so the peer learns why.
            let _ = flush_tls(&mut session, &mut tcp).await;
            return Err(tls_error(error));
        }
    }
    Ok(TlsStream {
        tcp,
        session,
        raw,
        fd,
        peer,
    })
}

/// An established server-side TLS connection.
#[derive(Debug)]
pub struct TlsStream {
    tcp: TcpStream,
    session: ServerConnection,
    /// Ciphertext read past the handshake (the client's first records may come with its Finished).
    raw: BytesMut,
    fd: RawFd,
    peer: Option<SocketAddr>,
}

impl TlsStream {
    /// The subject CN of the client certificate, when the client presented one and the
    /// configured client CA verified it (unverified certificates fail the handshake).
    pub fn peer_common_name(&self) -> Option<String> {
        let cert = self.session.peer_certificates()?.first()?;
        subject_common_name(cert.as_ref())
    }

    /// The socket descriptor.
    pub fn fd(&self) -> RawFd {
        self.fd
    }

    /// The peer's address.
    pub fn peer_addr(&self) -> Option<SocketAddr> {
        self.peer
    }

    /// Splits into a read and a write half that can be used concurrently.
    pub fn into_split(self) -> (TlsReadHalf, TlsWriteHalf) {
        let (tcp_read, tcp_write) = self.tcp.into_split();
        let session = Rc::new(RefCell::new(self.session));
        (
            TlsReadHalf {
                tcp: tcp_read,
                session: Rc::clone(&session),
                raw: self.raw,
            },
            TlsWriteHalf {
                tcp: tcp_write,
                session,
                out: Vec::new(),
            },
        )
    }
}

/// The reading half of a [`TlsStream`].
#[derive(Debug)]
pub struct TlsReadHalf {
    tcp: OwnedReadHalf<TcpStream>,
    session: Rc<RefCell<ServerConnection>>,
    raw: BytesMut,
}

impl TlsReadHalf {
    /// Reads plaintext into the spare capacity of `buf` (as [`read_append`]): 0 means the peer
    /// closed (or `buf` has no spare room).
    pub async fn read_append(&mut self, mut buf: BytesMut) -> (io::Result<usize>, BytesMut) {
        loop {
            {
                let mut session = self.session.borrow_mut();
                let len = buf.len();
                let spare = (buf.capacity() - len).min(PLAINTEXT_READ_MAX);
                if spare == 0 {
                    return (Ok(0), buf);
                }
                // rustls reads into initialised memory; zeroing the room is cheap next to
                // decryption and keeps this free of `unsafe`.
                buf.resize(len + spare, 0);
                match session.reader().read(&mut buf[len..]) {
                    Ok(n) => {
                        buf.truncate(len + n);
                        return (Ok(n), buf);
                    }
                    Err(error) if error.kind() == io::ErrorKind::WouldBlock => buf.truncate(len),
                    Err(error) => {
                        buf.truncate(len);
                        return (Err(error), buf);
                    }
                }
                if !self.raw.is_empty() {
                    let used = match session.read_tls(&mut &self.raw[..]) {
                        Ok(used) => used,
                        Err(error) => return (Err(error), buf),
                    };
                    self.raw.advance(used);
                    if let Err(error) = session.process_new_packets() {
                        return (Err(tls_error(error)), buf);
                    }
                    if used > 0 {
                        continue;
                    }
                    // rustls took nothing and produced no plaintext: it cannot make progress.
                    return (
                        Err(io::Error::new(io::ErrorKind::InvalidData, "TLS stalled")),
                        buf,
                    );
                }
            }
            if self.raw.capacity() < RAW_READ_CHUNK {
                self.raw.reserve(RAW_READ_CHUNK);
            }
            let (result, back) = read_append(&mut self.tcp, std::mem::take(&mut self.raw)).await;
            self.raw = back;
            match result {
                Ok(0) => {
                    // End of the TCP stream: rustls tells a clean close (close_notify, read
                    // gives 0) from a truncation (an UnexpectedEof error).
                    let mut session = self.session.borrow_mut();
                    let _ = session.read_tls(&mut &[][..]);
                    if let Err(error) = session.process_new_packets() {
                        return (Err(tls_error(error)), buf);
                    }
                    drop(session);
                    let len = buf.len();
                    buf.resize(len + (buf.capacity() - len).min(PLAINTEXT_READ_MAX), 0);
                    let result = self.session.borrow_mut().reader().read(&mut buf[len..]);
                    return match result {
                        Ok(n) => {
                            buf.truncate(len + n);
                            (Ok(n), buf)
                        }
                        Err(error) => {
                            buf.truncate(len);
                            // Treated as the end of the stream by callers either way.
                            if error.kind() == io::ErrorKind::UnexpectedEof {
                                (Ok(0), buf)
                            } else {
                                (Err(error), buf)
                            }
                        }
                    };
                }
                Ok(_) => {}
                Err(error) => return (Err(error), buf),
            }
        }
    }
}

/// The writing half of a [`TlsStream`].
#[derive(Debug)]
pub struct TlsWriteHalf {
    tcp: OwnedWriteHalf<TcpStream>,
    session: Rc<RefCell<ServerConnection>>,
    out: Vec<u8>,
}

impl TlsWriteHalf {
    /// Encrypts and writes all of `data`.
    pub async fn write_all<T: AsRef<[u8]>>(&mut self, data: T) -> (io::Result<usize>, T) {
        let bytes = data.as_ref();
        let mut written = 0;
        loop {
            {
                let mut session = self.session.borrow_mut();
                while written < bytes.len() {
                    match session.writer().write(&bytes[written..]) {
                        Ok(0) => break,
                        Ok(n) => written += n,
                        Err(error) => return (Err(error), data),
                    }
                }
                while session.wants_write() {
                    if let Err(error) = session.write_tls(&mut self.out) {
                        return (Err(error), data);
                    }
                }
            }
            if !self.out.is_empty() {
                let (result, mut back) = self.tcp.write_all(std::mem::take(&mut self.out)).await;
                back.clear();
                if back.capacity() <= OUT_KEEP_MAX {
                    self.out = back;
                }
                if let Err(error) = result {
                    return (Err(error), data);
                }
            } else if written < bytes.len() {
                // rustls accepted nothing and has nothing to send: a closed session.
                return (
                    Err(io::Error::new(
                        io::ErrorKind::BrokenPipe,
                        "TLS session closed",
                    )),
                    data,
                );
            }
            if written == bytes.len() {
                let len = bytes.len();
                return (Ok(len), data);
            }
        }
    }

    /// Sends close_notify, so the peer knows the stream was not cut short.
    pub async fn close_notify(&mut self) -> io::Result<()> {
        self.session.borrow_mut().send_close_notify();
        let (result, _) = self.write_all(&b""[..]).await;
        result.map(|_| ())
    }
}

/// A future returned by a framed transport's read or write.
pub type LocalIoFuture<'a> =
    std::pin::Pin<Box<dyn std::future::Future<Output = (io::Result<usize>, BytesMut)> + 'a>>;

/// The reading half of a transport layered on a connection (MQTT over WebSocket): it yields
/// the inner byte stream, frames removed.
pub trait FramedRead {
    /// Appends the next bytes of the inner stream to `buf`; `Ok(0)` at its end.
    fn read_append(&mut self, buf: BytesMut) -> LocalIoFuture<'_>;
}

/// The writing half of a layered transport: every write is framed.
pub trait FramedWrite {
    /// Writes all of `buf` as the transport's frames.
    fn write_all(&mut self, buf: BytesMut) -> LocalIoFuture<'_>;
    /// Ends the transport cleanly (e.g. a WebSocket close frame) before the FIN.
    fn close(&mut self) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + '_>>;
}

/// The reading half of a plain or TLS connection.
pub enum ConnReader {
    /// Plain TCP.
    Tcp(OwnedReadHalf<TcpStream>),
    /// TLS over TCP (boxed, so a plain connection's half stays pointer-sized).
    Tls(Box<TlsReadHalf>),
    /// A transport layered on one of the others (MQTT over WebSocket); boxed twice so the
    /// variant is one thin pointer and plain halves stay small.
    Framed(Box<Box<dyn FramedRead>>),
}

impl std::fmt::Debug for ConnReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ConnReader::Tcp(_) => "ConnReader::Tcp",
            ConnReader::Tls(_) => "ConnReader::Tls",
            ConnReader::Framed(_) => "ConnReader::Framed",
        })
    }
}

impl ConnReader {
    /// Reads into the spare capacity of `buf` (see [`read_append`]).
    pub async fn read_append(&mut self, buf: BytesMut) -> (io::Result<usize>, BytesMut) {
        match self {
            ConnReader::Tcp(half) => read_append(half, buf).await,
            // Boxed: this future is part of every connection's task while it waits for data,
            // and the TLS read is several times larger than the plain one (an allocation per
            // read is small next to the decryption).
            ConnReader::Tls(half) => Box::pin(half.read_append(buf)).await,
            ConnReader::Framed(half) => half.read_append(buf).await,
        }
    }

    /// True when the socket's readiness says whether data is waiting: plain TCP only, since a
    /// TLS or layered transport may hold decoded bytes the socket no longer shows (so only
    /// plain connections park while quiet).
    pub fn can_wait_readable(&self) -> bool {
        matches!(self, ConnReader::Tcp(_))
    }
}

/// The writing half of a plain or TLS connection.
pub enum ConnWriter {
    /// Plain TCP.
    Tcp(OwnedWriteHalf<TcpStream>),
    /// TLS over TCP (boxed, so a plain connection's half stays pointer-sized).
    Tls(Box<TlsWriteHalf>),
    /// A transport layered on one of the others (MQTT over WebSocket); boxed twice so the
    /// variant is one thin pointer and plain halves stay small.
    Framed(Box<Box<dyn FramedWrite>>),
}

impl std::fmt::Debug for ConnWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ConnWriter::Tcp(_) => "ConnWriter::Tcp",
            ConnWriter::Tls(_) => "ConnWriter::Tls",
            ConnWriter::Framed(_) => "ConnWriter::Framed",
        })
    }
}

impl ConnWriter {
    /// Writes all of `buf`.
    pub async fn write_all(&mut self, buf: BytesMut) -> (io::Result<usize>, BytesMut) {
        match self {
            ConnWriter::Tcp(half) => half.write_all(buf).await,
            ConnWriter::Tls(half) => half.write_all(buf).await,
            ConnWriter::Framed(half) => half.write_all(buf).await,
        }
    }

    /// Ends the stream cleanly at the TLS level (close_notify); nothing for plain TCP, whose
    /// FIN the caller sends.
    pub async fn close_notify(&mut self) {
        match self {
            ConnWriter::Tcp(_) => {}
            ConnWriter::Tls(half) => {
                let _ = half.close_notify().await;
            }
            ConnWriter::Framed(half) => half.close().await,
        }
    }
}

/// An accepted connection, plain or TLS.
#[derive(Debug)]
pub enum ConnStream {
    /// Plain TCP.
    Tcp(TcpStream),
    /// TLS over TCP (boxed: the session is large, a plain stream should not pay for it).
    Tls(Box<TlsStream>),
    /// Halves of a layered transport (MQTT over WebSocket), with what the socket says about
    /// the peer.
    Layered(Box<Layered>),
}

/// A layered transport's halves and the underlying socket's facts.
#[derive(Debug)]
pub struct Layered {
    /// Reading half.
    pub reader: ConnReader,
    /// Writing half.
    pub writer: ConnWriter,
    /// The underlying socket.
    pub fd: RawFd,
    /// The peer's address.
    pub peer: Option<SocketAddr>,
    /// The verified client certificate's CN, when the layer runs over mTLS.
    pub identity: Option<String>,
}

impl ConnStream {
    /// The socket descriptor.
    pub fn fd(&self) -> RawFd {
        match self {
            ConnStream::Tcp(stream) => stream.as_raw_fd(),
            ConnStream::Tls(stream) => stream.fd(),
            ConnStream::Layered(layered) => layered.fd,
        }
    }

    /// The peer's address.
    pub fn peer_addr(&self) -> Option<SocketAddr> {
        match self {
            ConnStream::Tcp(stream) => stream.peer_addr().ok(),
            ConnStream::Tls(stream) => stream.peer_addr(),
            ConnStream::Layered(layered) => layered.peer,
        }
    }

    /// The verified client certificate's CN (TLS with client auth only).
    pub fn peer_common_name(&self) -> Option<String> {
        match self {
            ConnStream::Tcp(_) => None,
            ConnStream::Tls(stream) => stream.peer_common_name(),
            ConnStream::Layered(layered) => layered.identity.clone(),
        }
    }

    /// Splits into halves that can be used concurrently.
    pub fn into_split(self) -> (ConnReader, ConnWriter) {
        match self {
            ConnStream::Tcp(stream) => {
                let (read, write) = stream.into_split();
                (ConnReader::Tcp(read), ConnWriter::Tcp(write))
            }
            ConnStream::Tls(stream) => {
                let (read, write) = stream.into_split();
                (
                    ConnReader::Tls(Box::new(read)),
                    ConnWriter::Tls(Box::new(write)),
                )
            }
            ConnStream::Layered(layered) => (layered.reader, layered.writer),
        }
    }
}

/// Deepest nesting of DER elements handed to `simple_asn1`, which recurses once per level: a
/// certificate nests about 6 levels at its subject and 8 in its extensions, so 32 is ample, and a
/// hostile certificate (thousands of nested SEQUENCEs) cannot overflow a shard's stack.
const DER_DEPTH_MAX: usize = 32;
/// Longest certificate read: far beyond any real client certificate, and it bounds the work.
const CERT_BYTES_MAX: usize = 64 * 1024;

/// The subject's (last) commonName of a DER X.509 certificate; `None` when the certificate is
/// not DER, has no subject CN, or its last CN is not a UTF8String, PrintableString or IA5String.
pub fn subject_common_name(cert: &[u8]) -> Option<String> {
    if cert.len() > CERT_BYTES_MAX || !der_depth_within(cert, DER_DEPTH_MAX) {
        return None;
    }
    let blocks = simple_asn1::from_der(cert).ok()?;
    // Certificate ::= SEQUENCE { tbsCertificate, signatureAlgorithm, signature }
    let [ASN1Block::Sequence(_, certificate), ..] = blocks.as_slice() else {
        return None;
    };
    let Some(ASN1Block::Sequence(_, tbs)) = certificate.first() else {
        return None;
    };
    // TBSCertificate ::= SEQUENCE { [0] version OPTIONAL, serialNumber, signature, issuer,
    // validity, subject, ... }: the subject is the fifth field after the version.
    let fields = match tbs.first() {
        Some(ASN1Block::Explicit(ASN1Class::ContextSpecific, _, tag, _)) if *tag == 0u8.into() => {
            &tbs[1..]
        }
        _ => &tbs[..],
    };
    let Some(ASN1Block::Sequence(_, subject)) = fields.get(4) else {
        return None;
    };
    let cn = oid!(2, 5, 4, 3);
    let mut found = None;
    // Name ::= SEQUENCE OF SET OF SEQUENCE { type OBJECT IDENTIFIER, value }
    for attribute in subject.iter().filter_map(|rdn| match rdn {
        ASN1Block::Set(_, attributes) => Some(attributes),
        _ => None,
    }) {
        for pair in attribute {
            // Anything but a (type, value) pair is skipped, as any attribute but the CN is.
            let ASN1Block::Sequence(_, pair) = pair else {
                continue;
            };
            let [ASN1Block::ObjectIdentifier(_, oid), value] = pair.as_slice() else {
                continue;
            };
            if oid != cn {
                continue;
            }
            // The last CN decides: one of another string type gives `None`, not an earlier CN.
            found = match value {
                ASN1Block::UTF8String(_, text) | ASN1Block::PrintableString(_, text) => {
                    Some(text.clone())
                }
                // simple_asn1 maps IA5String bytes to chars one for one; IA5 is ASCII.
                ASN1Block::IA5String(_, text) if text.is_ascii() => Some(text.clone()),
                _ => None,
            };
        }
    }
    found
}

/// True when no DER element of `der` lies more than `max` elements deep (and every header is
/// well formed): checked before `simple_asn1`, whose recursion has no bound of its own. Reads
/// tags and lengths only; elements are descended into as `simple_asn1` does (constructed ones,
/// and universal SEQUENCE and SET tags even when marked primitive).
fn der_depth_within(der: &[u8], max: usize) -> bool {
    // Ends of the elements the walk is inside of, innermost last.
    let mut open: Vec<usize> = Vec::new();
    let mut at = 0;
    while at < der.len() {
        let Some((descend, content, end)) = der_header(der, at) else {
            return false;
        };
        if open.last().is_some_and(|&parent| end > parent) {
            return false;
        }
        if descend && content < end {
            if open.len() == max {
                return false;
            }
            open.push(end);
            at = content;
        } else {
            at = end;
        }
        while open.last() == Some(&at) {
            open.pop();
        }
    }
    true
}

/// The header of the DER element at `at`: whether `simple_asn1` parses its contents as elements,
/// where they start, and where the element ends.
fn der_header(der: &[u8], at: usize) -> Option<(bool, usize, usize)> {
    let tag = *der.get(at)?;
    let mut next = at + 1;
    let mut number = u64::from(tag & 0x1f);
    if number == 0x1f {
        // High tag number: base-128 digits, the last without the top bit.
        number = 0;
        loop {
            let byte = *der.get(next)?;
            next += 1;
            number = number.checked_mul(128)? | u64::from(byte & 0x7f);
            if byte & 0x80 == 0 {
                break;
            }
        }
    }
    let universal = tag & 0xc0 == 0;
    let descend = tag & 0x20 != 0 || (universal && (number == 0x10 || number == 0x11));
    let first = *der.get(next)?;
    next += 1;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let count = usize::from(first & 0x7f);
        if count > std::mem::size_of::<usize>() {
            return None;
        }
        let bytes = der.get(next..next.checked_add(count)?)?;
        next += count;
        bytes.iter().try_fold(0usize, |len, &b| {
            len.checked_mul(256).map(|l| l | usize::from(b))
        })?
    };
    let end = next.checked_add(len)?;
    (end <= der.len()).then_some((descend, next, end))
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_halves_stay_small() {
        // Every idle connection holds its halves: TLS must not make plain TCP ones larger.
        assert_eq!(std::mem::size_of::<ConnReader>(), 16);
        assert_eq!(std::mem::size_of::<ConnWriter>(), 16);
    }

    fn self_signed(cn: &str) -> rcgen::CertifiedKey {
        let mut params =
            rcgen::CertificateParams::new(vec!["localhost".to_owned()]).expect("params");
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "ringmq test");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = params.self_signed(&key).expect("cert");
        rcgen::CertifiedKey {
            cert,
            key_pair: key,
        }
    }

    #[test]
    fn common_name_is_read_from_the_subject() {
        let cert = self_signed("sensor-7@acme");
        assert_eq!(
            subject_common_name(cert.cert.der()).as_deref(),
            Some("sensor-7@acme")
        );
        assert_eq!(subject_common_name(b"\x30\x03\x02\x01"), None);
        assert_eq!(subject_common_name(&[]), None);
    }

    /// A certificate signed by a CA: both with the given subject CNs (`None`: no CN).
    fn issued(issuer_cn: &str, subject_cn: Option<&str>) -> Vec<u8> {
        let mut ca = rcgen::CertificateParams::new(Vec::new()).expect("params");
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(rcgen::DnType::CommonName, issuer_cn);
        let ca_key = rcgen::KeyPair::generate().expect("key");
        let ca_cert = ca.self_signed(&ca_key).expect("ca");
        let mut leaf = rcgen::CertificateParams::new(vec!["client".to_owned()]).expect("params");
        leaf.distinguished_name = rcgen::DistinguishedName::new();
        leaf.distinguished_name
            .push(rcgen::DnType::OrganizationName, "ringmq test");
        if let Some(cn) = subject_cn {
            leaf.distinguished_name.push(rcgen::DnType::CommonName, cn);
        }
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = leaf.signed_by(&key, &ca_cert, &ca_key).expect("leaf");
        cert.der().to_vec()
    }

    #[test]
    fn the_issuers_common_name_is_never_taken() {
        assert_eq!(
            subject_common_name(&issued("issuer-ca", Some("device-1"))).as_deref(),
            Some("device-1")
        );
        assert_eq!(subject_common_name(&issued("issuer-ca", None)), None);
    }

    /// A certificate-shaped DER value (unsigned) whose subject holds `subject` (RDN sets of
    /// (OID, value) pairs), and whose issuer has a CN.
    fn shaped(subject: Vec<ASN1Block>) -> Vec<u8> {
        use simple_asn1::{to_der, BigInt};
        let int = |n: i32| ASN1Block::Integer(0, BigInt::from(n));
        let cn = |text: &str| {
            ASN1Block::Set(
                0,
                vec![ASN1Block::Sequence(
                    0,
                    vec![
                        ASN1Block::ObjectIdentifier(0, oid!(2, 5, 4, 3)),
                        ASN1Block::UTF8String(0, text.to_owned()),
                    ],
                )],
            )
        };
        let tbs = ASN1Block::Sequence(
            0,
            vec![
                ASN1Block::Explicit(ASN1Class::ContextSpecific, 0, 0u8.into(), Box::new(int(2))),
                int(7),
                ASN1Block::Sequence(0, vec![ASN1Block::ObjectIdentifier(0, oid!(1, 2, 3))]),
                ASN1Block::Sequence(0, vec![cn("the-issuer")]),
                ASN1Block::Sequence(0, vec![int(0), int(1)]),
                ASN1Block::Sequence(0, subject),
            ],
        );
        let certificate = ASN1Block::Sequence(
            0,
            vec![
                tbs,
                ASN1Block::Sequence(0, vec![ASN1Block::ObjectIdentifier(0, oid!(1, 2, 3))]),
                ASN1Block::BitString(0, 8, vec![0]),
            ],
        );
        to_der(&certificate).expect("der")
    }

    fn rdn(oid: simple_asn1::OID, value: ASN1Block) -> ASN1Block {
        ASN1Block::Set(
            0,
            vec![ASN1Block::Sequence(
                0,
                vec![ASN1Block::ObjectIdentifier(0, oid), value],
            )],
        )
    }

    #[test]
    fn the_last_common_name_of_the_subject_wins() {
        let utf8 = |text: &str| ASN1Block::UTF8String(0, text.to_owned());
        let two = shaped(vec![
            rdn(oid!(2, 5, 4, 3), utf8("first")),
            rdn(oid!(2, 5, 4, 10), utf8("org")),
            rdn(
                oid!(2, 5, 4, 3),
                ASN1Block::PrintableString(0, "last".into()),
            ),
        ]);
        assert_eq!(subject_common_name(&two).as_deref(), Some("last"));
        let ia5 = shaped(vec![rdn(
            oid!(2, 5, 4, 3),
            ASN1Block::IA5String(0, "a@b".into()),
        )]);
        assert_eq!(subject_common_name(&ia5).as_deref(), Some("a@b"));
        // The issuer has a CN; a subject without one gives none.
        let none = shaped(vec![rdn(oid!(2, 5, 4, 10), utf8("org"))]);
        assert_eq!(subject_common_name(&none), None);
        // The last CN decides even when it is not text.
        let odd = shaped(vec![
            rdn(oid!(2, 5, 4, 3), utf8("first")),
            rdn(oid!(2, 5, 4, 3), ASN1Block::Integer(0, 5.into())),
        ]);
        assert_eq!(subject_common_name(&odd), None);
    }

    #[test]
    fn hostile_certificates_give_none() {
        let good = self_signed("sensor-7@acme").cert.der().to_vec();
        // Every truncation.
        for end in 0..good.len() {
            assert_eq!(
                subject_common_name(&good[..end]),
                None,
                "prefix of {end} bytes"
            );
        }
        // Lengths past the end, or too long for any buffer.
        let mut long = good.clone();
        long[1] = 0x84;
        assert_eq!(subject_common_name(&long), None);
        for header in [
            &[0x30, 0x85, 1, 0, 0, 0, 0][..],
            &[0x30, 0x88, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
            &[0x30, 0x89, 1, 0, 0, 0, 0, 0, 0, 0, 0],
            &[0x30, 0x81],
            &[0x30],
            &[
                0x1f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f, 0,
            ],
        ] {
            assert_eq!(subject_common_name(header), None, "{header:02x?}");
        }
        // Wrong tags: a SET, an INTEGER, or a context tag where the SEQUENCEs belong.
        for tag in [0x31, 0x02, 0xa0, 0x04] {
            let mut wrong = good.clone();
            wrong[0] = tag;
            assert_eq!(subject_common_name(&wrong), None, "outer tag {tag:02x}");
        }
        let tbs_tag = good.iter().skip(1).position(|&b| b == 0x30).expect("tbs") + 1;
        let mut wrong = good.clone();
        wrong[tbs_tag] = 0x31;
        assert_eq!(subject_common_name(&wrong), None);
        // Deep nesting within the length bound: refused before simple_asn1 recurses.
        let depth = 12_000;
        let mut deep = Vec::with_capacity(depth * 5 + 2);
        for level in 0..depth {
            // Each level: a SEQUENCE header with a 3-byte length of what is inside it.
            let inside = (depth - level - 1) * 5 + 2;
            deep.extend_from_slice(&[0x30, 0x83, (inside >> 16) as u8, (inside >> 8) as u8]);
            deep.push(inside as u8);
        }
        deep.extend_from_slice(&[0x05, 0x00]);
        assert!(deep.len() <= CERT_BYTES_MAX);
        assert_eq!(subject_common_name(&deep), None);
        assert_eq!(subject_common_name(&vec![0u8; CERT_BYTES_MAX + 1]), None);
        // Random bytes, and the certificate with random bytes flipped: never a panic.
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for round in 0..2_000 {
            let len = (next() % 600) as usize;
            let random: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            let _ = subject_common_name(&random);
            let mut flipped = good.clone();
            for _ in 0..1 + round % 4 {
                let at = (next() as usize) % flipped.len();
                flipped[at] = next() as u8;
            }
            let _ = subject_common_name(&flipped);
        }
    }

    #[test]
    fn depth_is_counted_as_simple_asn1_recurses() {
        let nest = |depth: usize, tag: u8| {
            let mut der = vec![0x05, 0x00];
            for _ in 0..depth {
                der = [vec![tag, der.len() as u8], der].concat();
            }
            der
        };
        assert!(der_depth_within(&nest(32, 0x30), 32));
        assert!(!der_depth_within(&nest(33, 0x30), 32));
        // A primitive-tagged SEQUENCE and a constructed context tag are descended into too.
        assert!(!der_depth_within(&nest(33, 0x10), 32));
        assert!(!der_depth_within(&nest(33, 0xa3), 32));
        // A primitive OCTET STRING is not.
        assert!(der_depth_within(&nest(60, 0x04), 32));
        // A child longer than its parent.
        assert!(!der_depth_within(
            &[0x30, 0x02, 0x04, 0x05, 0, 0, 0, 0, 0],
            32
        ));
        assert!(der_depth_within(&[], 32));
    }

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).expect("write");
        path
    }

    #[test]
    fn load_errors_name_the_file() {
        let dir = std::env::temp_dir().join(format!("ringmq-tls-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let one = self_signed("one");
        let two = self_signed("two");
        let cert = write(&dir, "cert.pem", &one.cert.pem());
        let key = write(&dir, "key.pem", &one.key_pair.serialize_pem());
        let other_key = write(&dir, "other.pem", &two.key_pair.serialize_pem());
        let empty = write(&dir, "empty.pem", "nothing here\n");
        let files = |cert: &Path, key: &Path| TlsFiles {
            cert_path: cert.to_path_buf(),
            key_path: key.to_path_buf(),
            client_ca_path: None,
            client_auth: ClientAuth::None,
        };
        let config = load_server_config(&files(&cert, &key)).expect("valid");
        assert!(config.ticketer.enabled(), "resumption survives a storm");
        let error = load_server_config(&files(&cert, &other_key)).expect_err("mismatch");
        assert!(matches!(error, TlsError::KeyMismatch { .. }), "{error}");
        assert!(error.to_string().contains("other.pem"), "{error}");
        let error = load_server_config(&files(&empty, &key)).expect_err("no cert");
        assert!(matches!(error, TlsError::NoCertificate { .. }), "{error}");
        let error = load_server_config(&files(&cert, &empty)).expect_err("no key");
        assert!(matches!(error, TlsError::NoKey { .. }), "{error}");
        let missing = dir.join("missing.pem");
        let error = load_server_config(&files(&missing, &key)).expect_err("missing");
        assert!(error.to_string().contains("missing.pem"), "{error}");
        let mut with_ca = files(&cert, &key);
        with_ca.client_auth = ClientAuth::Required;
        assert!(matches!(
            load_server_config(&with_ca),
            Err(TlsError::NoClientCa)
        ));
        with_ca.client_ca_path = Some(empty.clone());
        assert!(load_server_config(&with_ca).is_err());
        with_ca.client_ca_path = Some(cert.clone());
        assert!(load_server_config(&with_ca).is_ok());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
