//! How MQTT bytes reach the broker: plain TCP, TLS (`--tls`), WebSocket (`--ws`) or both
//! (wss), on the same monoio (io_uring) socket.
//!
//! TLS is a rustls `Connection` driven by hand: ciphertext read from the socket is handed to
//! `read_tls`, plaintext taken from `reader()`; plaintext written goes through `writer()` and
//! the records `write_tls` yields are written to the socket. WebSocket frames are built and
//! parsed by [`crate::ws`]. No task ever holds the TLS state across an await, so a
//! connection's read half and write half can live in two tasks (as plain TCP halves do): they
//! share the rustls state through an `Rc<RefCell<..>>` on their thread.
//!
//! Plain TCP keeps the zero-copy path (the socket reads straight into the MQTT read buffer and
//! writes straight from the encode buffer); the layers cost one copy each way.
//!
//! Buffers are bounded: the socket is read only when the layers above have nothing left to
//! hand out, at most [`LINK_CHUNK_BYTES`] at a time; rustls buffers at most one record of
//! unread plaintext ahead; a WebSocket frame's payload streams through, whatever its length.
//!
//! Pings from the server are answered with the connection's next write (an MQTT ack or keep-
//! alive ping), since the write half belongs to another task; RFC 6455 allows answering only
//! the latest ping.

use std::cell::RefCell;
use std::io::{self, BufRead as _, Write as _};
use std::os::fd::{AsRawFd, RawFd};
use std::rc::Rc;
use std::sync::Arc;

use bytes::BytesMut;
use monoio::buf::{IoBufMut, SliceMut};
use monoio::io::{AsyncReadRent, AsyncWriteRentExt, OwnedReadHalf, OwnedWriteHalf, Splitable};
use monoio::net::TcpStream;
use rustls::pki_types::ServerName;

use crate::client::ClientError;
use crate::ws::{self, Control, MaskSource, Role};

/// Bytes read from the socket at a time below TLS or WebSocket.
pub const LINK_CHUNK_BYTES: usize = 64 * 1024;

/// Write buffers larger than this are given back after a write (a big batch once must not
/// pin memory on every one of many connections).
const SCRATCH_KEEP_BYTES: usize = 256 * 1024;

/// TLS for the clients of a run.
#[derive(Clone, Debug)]
pub struct TlsClient {
    /// rustls settings (trust, client certificate, resumption).
    pub config: Arc<rustls::ClientConfig>,
    /// The name sent as SNI and verified.
    pub server_name: ServerName<'static>,
}

/// WebSocket for the clients of a run.
#[derive(Clone, Debug)]
pub struct WsClient {
    /// Request path, e.g. `/mqtt`.
    pub path: String,
    /// `Host` header value (host:port).
    pub host: String,
}

/// The transport of a run's clients.
#[derive(Clone, Debug, Default)]
pub struct Transport {
    /// TLS, if `--tls`.
    pub tls: Option<TlsClient>,
    /// WebSocket, if `--ws`.
    pub ws: Option<WsClient>,
}

impl Transport {
    /// A short name for reports.
    pub fn label(&self) -> &'static str {
        match (self.tls.is_some(), self.ws.is_some()) {
            (false, false) => "TCP",
            (true, false) => "TLS",
            (false, true) => "WebSocket",
            (true, true) => "WebSocket over TLS",
        }
    }

    /// Whether this is plain TCP.
    pub fn is_plain(&self) -> bool {
        self.tls.is_none() && self.ws.is_none()
    }
}

/// State both halves of a layered connection use.
struct Shared {
    tls: Option<rustls::Connection>,
    /// Payload of the latest ping not answered yet.
    pong: Option<Vec<u8>>,
    /// A close frame arrived and has not been answered.
    close_reply: bool,
}

/// A rustls error as an IO error `TLS: ...` (see `ClientError::from`), with a hint for the
/// alerts a broker sends about client certificates.
fn tls_error(error: rustls::Error) -> io::Error {
    use rustls::AlertDescription as Alert;
    let hint = match &error {
        rustls::Error::AlertReceived(Alert::CertificateRequired) => {
            " (the broker wants a client certificate: --cert and --key)"
        }
        rustls::Error::AlertReceived(
            Alert::BadCertificate | Alert::UnknownCA | Alert::CertificateUnknown,
        ) => " (the broker refused the client certificate)",
        rustls::Error::InvalidCertificate(_) => {
            " (see --ca, --sni, or --insecure for test brokers)"
        }
        rustls::Error::InvalidMessage(_) => " (is the port a TLS listener?)",
        _ => "",
    };
    io::Error::new(io::ErrorKind::InvalidData, format!("TLS: {error}{hint}"))
}

/// One connection, whole; [`Connection::into_split`] gives the halves.
pub struct Connection {
    /// The read half.
    pub read: ReadSide,
    /// The write half.
    pub write: WriteSide,
    fd: RawFd,
}

/// The read half of a connection.
pub struct ReadSide {
    socket: OwnedReadHalf<TcpStream>,
    layers: Option<Box<ReadLayers>>,
}

struct ReadLayers {
    link: LinkReader,
    ws: Option<WsReader>,
}

/// Below WebSocket: the socket, through TLS if there is TLS.
struct LinkReader {
    shared: Rc<RefCell<Shared>>,
    tls: bool,
    /// Ciphertext read and not yet given to rustls, from `raw_start`.
    raw: Vec<u8>,
    raw_start: usize,
    eof: bool,
}

struct WsReader {
    decoder: ws::Decoder,
    /// Link bytes not yet decoded, from `start`.
    input: Vec<u8>,
    start: usize,
    eof: bool,
}

/// The write half of a connection.
pub struct WriteSide {
    socket: OwnedWriteHalf<TcpStream>,
    layers: Option<Box<WriteLayers>>,
}

struct WriteLayers {
    shared: Rc<RefCell<Shared>>,
    tls: bool,
    ws: Option<WsWriter>,
    /// WebSocket frames being written.
    frames: Vec<u8>,
    /// TLS records being written.
    records: Vec<u8>,
}

struct WsWriter {
    role: Role,
    masks: MaskSource,
}

impl WsWriter {
    fn mask(&mut self) -> Option<[u8; 4]> {
        (self.role == Role::Client).then(|| self.masks.next_mask())
    }
}

/// Reads from the socket into `out`, at most `room` bytes after what it holds.
async fn read_socket(
    socket: &mut OwnedReadHalf<TcpStream>,
    out: &mut Vec<u8>,
    room: usize,
) -> io::Result<usize> {
    out.reserve(room);
    let begin = out.len();
    let slice: SliceMut<Vec<u8>> = std::mem::take(out).slice_mut(begin..begin + room);
    let (result, slice) = socket.read(slice).await;
    *out = slice.into_inner();
    result
}

/// Drops the consumed front of `buffer`.
fn compact(buffer: &mut Vec<u8>, start: &mut usize) {
    if *start > 0 {
        buffer.drain(..*start);
        *start = 0;
    }
}

/// Gives rustls the ciphertext it will take and processes it; at the socket's end, tells it so.
fn feed_tls(
    connection: &mut rustls::Connection,
    raw: &[u8],
    start: &mut usize,
    eof: bool,
) -> io::Result<()> {
    while *start < raw.len() && connection.wants_read() {
        let mut pending = &raw[*start..];
        let taken = connection.read_tls(&mut pending)?;
        *start += taken;
        connection.process_new_packets().map_err(tls_error)?;
        if taken == 0 {
            break;
        }
    }
    if eof && *start == raw.len() {
        // An empty read is how rustls learns of the end of the stream.
        let _ = connection.read_tls(&mut &[][..]);
        connection.process_new_packets().map_err(tls_error)?;
    }
    Ok(())
}

impl LinkReader {
    /// Appends at most `room` bytes of the stream below WebSocket to `out`; 0 at its end.
    async fn read(
        &mut self,
        socket: &mut OwnedReadHalf<TcpStream>,
        out: &mut Vec<u8>,
        room: usize,
    ) -> io::Result<usize> {
        if !self.tls {
            return read_socket(socket, out, room).await;
        }
        loop {
            {
                let mut shared = self.shared.borrow_mut();
                let connection = shared.tls.as_mut().expect("a TLS link has TLS state");
                feed_tls(connection, &self.raw, &mut self.raw_start, self.eof)?;
                let mut reader = connection.reader();
                match reader.fill_buf() {
                    Ok(plain) if !plain.is_empty() => {
                        let count = plain.len().min(room);
                        out.extend_from_slice(&plain[..count]);
                        reader.consume(count);
                        return Ok(count);
                    }
                    // close_notify: a clean end.
                    Ok(_) => return Ok(0),
                    Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
                    // The peer closed without close_notify: an end all the same.
                    Err(error) if error.kind() == io::ErrorKind::UnexpectedEof => return Ok(0),
                    Err(error) => return Err(error),
                }
            }
            if self.eof {
                return Ok(0);
            }
            if self.raw.len() - self.raw_start >= LINK_CHUNK_BYTES {
                // rustls wants more yet took none of this: never grow without bound.
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "TLS: the TLS state takes no more input",
                ));
            }
            compact(&mut self.raw, &mut self.raw_start);
            if read_socket(socket, &mut self.raw, LINK_CHUNK_BYTES).await? == 0 {
                self.eof = true;
            }
        }
    }
}

impl ReadSide {
    /// Whether bytes come straight from the socket (plain TCP).
    pub fn is_plain(&self) -> bool {
        self.layers.is_none()
    }

    /// The socket half, for plain TCP's zero-copy reads.
    pub fn socket(&mut self) -> &mut OwnedReadHalf<TcpStream> {
        &mut self.socket
    }

    /// Appends at most `room` bytes of the MQTT stream to `out`; 0 when the peer closed.
    pub async fn read_into(&mut self, out: &mut Vec<u8>, room: usize) -> io::Result<usize> {
        let Some(layers) = self.layers.as_mut() else {
            return read_socket(&mut self.socket, out, room).await;
        };
        let Some(ws) = layers.ws.as_mut() else {
            return layers.link.read(&mut self.socket, out, room).await;
        };
        loop {
            let decoded = ws
                .decoder
                .decode(&ws.input[ws.start..], out, room)
                .map_err(|error| {
                    io::Error::new(io::ErrorKind::InvalidData, format!("WebSocket: {error}"))
                })?;
            ws.start += decoded.consumed;
            let had_control = decoded.control.is_some();
            match decoded.control {
                Some(Control::Ping(payload)) => {
                    layers.link.shared.borrow_mut().pong = Some(payload);
                }
                Some(Control::Close(_)) => {
                    layers.link.shared.borrow_mut().close_reply = true;
                }
                Some(Control::Pong) | None => {}
            }
            if decoded.produced > 0 {
                return Ok(decoded.produced);
            }
            if ws.decoder.is_closed() || ws.eof {
                return Ok(0);
            }
            if had_control {
                continue;
            }
            compact(&mut ws.input, &mut ws.start);
            let count = layers
                .link
                .read(&mut self.socket, &mut ws.input, LINK_CHUNK_BYTES)
                .await?;
            if count == 0 {
                ws.eof = true;
            }
        }
    }
}

impl WriteLayers {
    /// Writes `data` below WebSocket: encrypted if TLS, as is otherwise.
    async fn write_link(
        &mut self,
        socket: &mut OwnedWriteHalf<TcpStream>,
        data: Vec<u8>,
    ) -> (io::Result<()>, Vec<u8>) {
        if !self.tls {
            let (result, data) = socket.write_all(data).await;
            return (result.map(|_| ()), data);
        }
        let mut records = std::mem::take(&mut self.records);
        records.clear();
        let encrypted = {
            let mut shared = self.shared.borrow_mut();
            let connection = shared.tls.as_mut().expect("a TLS link has TLS state");
            encrypt(connection, &data, &mut records)
        };
        let result = match encrypted {
            Ok(()) if records.is_empty() => Ok(()),
            Ok(()) => {
                let (result, written) = socket.write_all(records).await;
                records = written;
                result.map(|_| ())
            }
            Err(error) => Err(error),
        };
        if records.capacity() <= SCRATCH_KEEP_BYTES {
            self.records = records;
        }
        (result, data)
    }
}

/// Encrypts `data` (none: only what rustls has queued) into TLS records appended to `records`.
fn encrypt(
    connection: &mut rustls::Connection,
    mut data: &[u8],
    records: &mut Vec<u8>,
) -> io::Result<()> {
    loop {
        while connection.wants_write() {
            connection.write_tls(records)?;
        }
        if data.is_empty() {
            return Ok(());
        }
        let taken = connection.writer().write(data)?;
        if taken == 0 && !connection.wants_write() {
            return Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "TLS: the connection takes no more data",
            ));
        }
        data = &data[taken..];
    }
}

impl WriteSide {
    /// Writes the MQTT bytes in `buf` and clears it (keeping its capacity).
    pub async fn write_all(&mut self, buf: &mut BytesMut) -> io::Result<()> {
        let Some(layers) = self.layers.as_mut() else {
            return crate::client::write_buffer(&mut self.socket, buf).await;
        };
        let mut out = std::mem::take(&mut layers.frames);
        out.clear();
        match layers.ws.as_mut() {
            Some(ws) => {
                let (pong, close) = {
                    let mut shared = layers.shared.borrow_mut();
                    (
                        shared.pong.take(),
                        std::mem::replace(&mut shared.close_reply, false),
                    )
                };
                if let Some(payload) = pong {
                    ws::encode_frame(ws::OP_PONG, &payload, ws.mask(), &mut out);
                }
                if close {
                    let code = ws::CLOSE_NORMAL.to_be_bytes();
                    ws::encode_frame(ws::OP_CLOSE, &code, ws.mask(), &mut out);
                }
                if !buf.is_empty() {
                    ws::encode_frame(ws::OP_BINARY, buf, ws.mask(), &mut out);
                }
            }
            None => out.extend_from_slice(buf),
        }
        buf.clear();
        let (result, out) = layers.write_link(&mut self.socket, out).await;
        if out.capacity() <= SCRATCH_KEEP_BYTES {
            layers.frames = out;
        }
        result
    }
}

impl Connection {
    /// Plain TCP: the halves of `stream`, no layers.
    pub fn plain(stream: TcpStream) -> Connection {
        let fd = stream.as_raw_fd();
        let (read, write) = stream.into_split();
        Connection {
            read: ReadSide {
                socket: read,
                layers: None,
            },
            write: WriteSide {
                socket: write,
                layers: None,
            },
            fd,
        }
    }

    fn layered(stream: TcpStream, tls: Option<rustls::Connection>) -> Connection {
        let fd = stream.as_raw_fd();
        let has_tls = tls.is_some();
        let shared = Rc::new(RefCell::new(Shared {
            tls,
            pong: None,
            close_reply: false,
        }));
        let (read, write) = stream.into_split();
        Connection {
            read: ReadSide {
                socket: read,
                layers: Some(Box::new(ReadLayers {
                    link: LinkReader {
                        shared: Rc::clone(&shared),
                        tls: has_tls,
                        raw: Vec::new(),
                        raw_start: 0,
                        eof: false,
                    },
                    ws: None,
                })),
            },
            write: WriteSide {
                socket: write,
                layers: Some(Box::new(WriteLayers {
                    shared,
                    tls: has_tls,
                    ws: None,
                    frames: Vec::new(),
                    records: Vec::new(),
                })),
            },
            fd,
        }
    }

    /// The client side over `transport`: the TLS handshake, then the WebSocket upgrade.
    pub async fn client(
        stream: TcpStream,
        transport: &Transport,
    ) -> Result<Connection, ClientError> {
        if transport.is_plain() {
            return Ok(Connection::plain(stream));
        }
        let tls = match &transport.tls {
            Some(settings) => Some(rustls::Connection::Client(
                rustls::ClientConnection::new(
                    Arc::clone(&settings.config),
                    settings.server_name.clone(),
                )
                .map_err(|error| ClientError::Tls(error.to_string()))?,
            )),
            None => None,
        };
        let mut connection = Connection::layered(stream, tls);
        if transport.tls.is_some() {
            connection.tls_handshake(Role::Client).await?;
        }
        if let Some(settings) = &transport.ws {
            connection.ws_client_upgrade(settings).await?;
        }
        Ok(connection)
    }

    /// The server side (the sink): TLS with `tls`, then a WebSocket upgrade if `ws`.
    pub async fn server(
        stream: TcpStream,
        tls: Option<&Arc<rustls::ServerConfig>>,
        ws: bool,
    ) -> Result<Connection, ClientError> {
        if tls.is_none() && !ws {
            return Ok(Connection::plain(stream));
        }
        let tls = match tls {
            Some(config) => Some(rustls::Connection::Server(
                rustls::ServerConnection::new(Arc::clone(config))
                    .map_err(|error| ClientError::Tls(error.to_string()))?,
            )),
            None => None,
        };
        let has_tls = tls.is_some();
        let mut connection = Connection::layered(stream, tls);
        if has_tls {
            connection.tls_handshake(Role::Server).await?;
        }
        if ws {
            connection.ws_server_upgrade().await?;
        }
        Ok(connection)
    }

    /// The socket, for a forced shutdown.
    pub fn fd(&self) -> RawFd {
        self.fd
    }

    /// The halves, for a reader task and a writer task.
    pub fn into_split(self) -> (ReadSide, WriteSide) {
        (self.read, self.write)
    }

    /// What TLS negotiated, if this is TLS.
    pub fn tls_description(&self) -> Option<String> {
        let layers = self.write.layers.as_ref()?;
        let shared = layers.shared.borrow();
        shared.tls.as_ref().map(crate::tls::describe)
    }

    /// Whether this is TLS with a resumed session.
    pub fn tls_resumed(&self) -> bool {
        self.write.layers.as_ref().is_some_and(|layers| {
            layers
                .shared
                .borrow()
                .tls
                .as_ref()
                .is_some_and(crate::tls::resumed)
        })
    }

    /// Runs the TLS handshake. A client leaves its last flight (TLS 1.3: Finished) queued to
    /// go out with its first write (CONNECT, or the upgrade request), saving a write; a server
    /// sends it at once (with TLS 1.2 the client waits for it).
    async fn tls_handshake(&mut self, role: Role) -> Result<(), ClientError> {
        let hint = |message: String| {
            ClientError::Tls(match role {
                Role::Client => format!("{message} (is the port a TLS listener?)"),
                Role::Server => message,
            })
        };
        let Some(read_layers) = self.read.layers.as_mut() else {
            return Ok(());
        };
        let link = &mut read_layers.link;
        loop {
            let mut records = Vec::new();
            let handshaking = {
                let mut shared = link.shared.borrow_mut();
                let connection = shared.tls.as_mut().expect("TLS state");
                let handshaking = connection.is_handshaking();
                if handshaking || role == Role::Server {
                    encrypt(connection, &[], &mut records)
                        .map_err(|error| ClientError::Tls(error.to_string()))?;
                }
                handshaking
            };
            if !records.is_empty() {
                let (result, _) = self.write.socket.write_all(records).await;
                result.map_err(|error| hint(format!("{error} during the TLS handshake")))?;
            }
            if !handshaking {
                return Ok(());
            }
            compact(&mut link.raw, &mut link.raw_start);
            let read = read_socket(&mut self.read.socket, &mut link.raw, LINK_CHUNK_BYTES).await;
            match read {
                Ok(0) => {
                    return Err(hint(
                        "connection closed during the TLS handshake".to_owned(),
                    ))
                }
                Ok(_) => {}
                Err(error) => return Err(hint(format!("{error} during the TLS handshake"))),
            }
            let failed = {
                let mut shared = link.shared.borrow_mut();
                let connection = shared.tls.as_mut().expect("TLS state");
                feed_tls(connection, &link.raw, &mut link.raw_start, false)
                    .err()
                    .map(|error| {
                        // Tell the peer why (the alert rustls queued), best effort.
                        let mut alert = Vec::new();
                        let _ = connection.write_tls(&mut alert);
                        (error, alert)
                    })
            };
            if let Some((error, alert)) = failed {
                if !alert.is_empty() {
                    let _ = self.write.socket.write_all(alert).await;
                }
                return Err(match ClientError::from(error) {
                    ClientError::Io(error) => hint(error.to_string()),
                    other => other,
                });
            }
        }
    }

    /// Reads the HTTP head of the upgrade (bounded); returns it with what followed.
    async fn read_head(
        &mut self,
        mut complete: impl FnMut(&[u8]) -> Result<Option<usize>, ws::WsError>,
        closed: &str,
    ) -> Result<(Vec<u8>, usize), ClientError> {
        let layers = self.read.layers.as_mut().expect("layers");
        let mut head = Vec::new();
        loop {
            let count = match layers
                .link
                .read(&mut self.read.socket, &mut head, 4096)
                .await
            {
                Ok(count) => count,
                // A TLS failure is reported as such; a reset is the upgrade's failure.
                Err(error) => {
                    return Err(match ClientError::from(error) {
                        ClientError::Io(error) => {
                            ClientError::WebSocket(format!("{error}: {closed}"))
                        }
                        other => other,
                    })
                }
            };
            if count == 0 {
                return Err(ClientError::WebSocket(closed.to_owned()));
            }
            match complete(&head) {
                Ok(Some(head_len)) => return Ok((head, head_len)),
                Ok(None) => {}
                Err(error) => return Err(ClientError::WebSocket(error.0)),
            }
        }
    }

    fn start_ws(&mut self, role: Role, masks: MaskSource, leftover: Vec<u8>) {
        if let Some(layers) = self.read.layers.as_mut() {
            layers.ws = Some(WsReader {
                decoder: ws::Decoder::new(role),
                input: leftover,
                start: 0,
                eof: false,
            });
        }
        if let Some(layers) = self.write.layers.as_mut() {
            layers.ws = Some(WsWriter { role, masks });
        }
    }

    async fn write_link(&mut self, data: Vec<u8>) -> io::Result<()> {
        let layers = self.write.layers.as_mut().expect("layers");
        layers.write_link(&mut self.write.socket, data).await.0
    }

    async fn ws_client_upgrade(&mut self, settings: &WsClient) -> Result<(), ClientError> {
        let mut masks = MaskSource::new();
        let key = ws::new_key(&mut masks);
        self.write_link(ws::client_request(&settings.path, &settings.host, &key))
            .await
            .map_err(|error| ClientError::WebSocket(format!("{error} sending the upgrade")))?;
        let (head, head_len) = self
            .read_head(
                |head| ws::check_response(head, &key),
                "connection closed during the WebSocket upgrade (is the port a WebSocket \
                 listener? see --ws-path)",
            )
            .await?;
        self.start_ws(Role::Client, masks, head[head_len..].to_vec());
        Ok(())
    }

    async fn ws_server_upgrade(&mut self) -> Result<(), ClientError> {
        let mut response = None;
        let outcome = self
            .read_head(
                |head| {
                    Ok(ws::server_accept(head)?.map(|(head_len, answer)| {
                        response = Some(answer);
                        head_len
                    }))
                },
                "connection closed before the upgrade request",
            )
            .await;
        let (head, head_len) = match outcome {
            Ok(head) => head,
            Err(error) => {
                let refusal = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n".to_vec();
                let _ = self.write_link(refusal).await;
                return Err(error);
            }
        };
        self.write_link(response.unwrap_or_default()).await?;
        self.start_ws(Role::Server, MaskSource::new(), head[head_len..].to_vec());
        Ok(())
    }
}
