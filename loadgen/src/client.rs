//! The client side of MQTT as the loadgen needs it: TCP connect (optionally from a chosen
//! source address), the transport's handshakes (TLS, WebSocket: see `transport`),
//! CONNECT/CONNACK, SUBSCRIBE/SUBACK, a reusable read buffer that splits frames without
//! copying, pre-encoded PUBLISH templates and a PUBLISH fast path.
//!
//! Control packets go through the broker's own codec (`ringmq_proto::mqtt`); the per-message paths
//! (building a PUBLISH, reading one) patch and slice bytes in place so that nothing is
//! allocated per message.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::ops::Range;
use std::os::fd::AsRawFd;

use bytes::{Bytes, BytesMut};
use monoio::buf::{IoBufMut, SliceMut};
use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt};
use monoio::net::TcpStream;
use ringmq_proto::mqtt::{
    decode_packet, encode_packet, encode_publish, peek_fixed_header, Connect, ConnectProperties,
    OutgoingPublish, Packet, ProtocolVersion, PublishProperties, QoS, ReasonCode, Str, Subscribe,
    SubscribeFilter, SubscriptionOptions,
};

use crate::payload::{Header, HEADER_BYTES};
use crate::transport::{Connection, ReadSide, Transport};

/// Largest packet the loadgen accepts; bigger ones are a protocol error (bounds the read buffer).
pub const PACKET_BYTES_MAX: usize = 1 << 20;

/// Bytes requested from the kernel per read when the buffer is empty.
pub const READ_CHUNK_BYTES: usize = 64 * 1024;

/// Everything needed to open one client connection.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// Broker address.
    pub broker: SocketAddr,
    /// Where subscribers connect, when not to `broker` (another node of a cluster).
    pub sub_broker: Option<SocketAddr>,
    /// Protocol level.
    pub version: ProtocolVersion,
    /// User name.
    pub username: Option<String>,
    /// Password.
    pub password: Option<String>,
    /// Clean session / clean start.
    pub clean: bool,
    /// MQTT 5 session expiry for persistent sessions.
    pub session_expiry: u32,
    /// Keep alive in seconds.
    pub keepalive: u16,
    /// Source addresses, used round-robin by connection index.
    pub source_addresses: Vec<IpAddr>,
    /// TCP, TLS, WebSocket or both.
    pub transport: Transport,
}

/// Why a client could not connect or had to stop.
#[derive(Debug)]
pub enum ClientError {
    /// The socket failed.
    Io(io::Error),
    /// The broker closed the connection.
    Closed,
    /// The broker sent something undecodable or unexpected.
    Protocol(String),
    /// The broker refused CONNECT or SUBSCRIBE.
    Refused(String),
    /// The TLS handshake failed.
    Tls(String),
    /// The WebSocket upgrade failed.
    WebSocket(String),
}

impl std::fmt::Display for ClientError {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientError::Io(error) => write!(formatter, "io: {error}"),
            ClientError::Closed => formatter.write_str("connection closed by the broker"),
            ClientError::Protocol(message) => write!(formatter, "protocol: {message}"),
            ClientError::Refused(message) => write!(formatter, "refused: {message}"),
            ClientError::Tls(message) => write!(formatter, "tls: {message}"),
            ClientError::WebSocket(message) => write!(formatter, "websocket: {message}"),
        }
    }
}

impl From<io::Error> for ClientError {
    /// TLS and WebSocket failures below MQTT come as IO errors `TLS: ...` / `WebSocket: ...`.
    fn from(error: io::Error) -> Self {
        if error.kind() == io::ErrorKind::InvalidData {
            let message = error.to_string();
            if let Some(rest) = message.strip_prefix("TLS: ") {
                return ClientError::Tls(rest.to_owned());
            }
            if let Some(rest) = message.strip_prefix("WebSocket: ") {
                return ClientError::WebSocket(rest.to_owned());
            }
        }
        ClientError::Io(error)
    }
}

/// A read buffer that frames MQTT packets in place.
///
/// Bytes are read after what is buffered; frames are handed out as ranges into the buffer and
/// stay valid until the next `fill`, which first moves the unread tail to the front. Its size
/// is bounded by `PACKET_BYTES_MAX` plus one read chunk.
#[derive(Debug)]
pub struct ReadBuffer {
    data: Vec<u8>,
    start: usize,
}

/// One framed packet: its first byte and where its body lies in the buffer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// Fixed header byte 1 (type and flags).
    pub first_byte: u8,
    /// The whole packet, fixed header included.
    pub packet: Range<usize>,
    /// The body after the fixed header.
    pub body: Range<usize>,
}

impl ReadBuffer {
    /// An empty buffer reading `chunk_bytes` at a time.
    pub fn with_capacity(chunk_bytes: usize) -> ReadBuffer {
        ReadBuffer {
            data: Vec::with_capacity(chunk_bytes),
            start: 0,
        }
    }

    /// Slides the unread tail to the front: everything before `start` was consumed.
    fn compact(&mut self) {
        if self.start > 0 {
            self.data.copy_within(self.start.., 0);
            self.data.truncate(self.data.len() - self.start);
            self.start = 0;
        }
    }

    /// Reads once from a connection's read half (through its TLS and WebSocket layers, if
    /// any), at most one read chunk; returns the byte count (0: the peer closed).
    pub async fn fill_from(&mut self, side: &mut ReadSide) -> io::Result<usize> {
        if side.is_plain() {
            return self.fill(side.socket()).await;
        }
        self.compact();
        side.read_into(&mut self.data, READ_CHUNK_BYTES).await
    }

    /// The bytes received and not yet framed.
    pub fn unread(&self) -> &[u8] {
        &self.data[self.start..]
    }

    /// Reads once from `stream`; returns the byte count (0: the peer closed).
    pub async fn fill<R: AsyncReadRent>(&mut self, stream: &mut R) -> io::Result<usize> {
        self.compact();
        if self.data.capacity() - self.data.len() < 512 {
            let wanted =
                (self.data.len() + READ_CHUNK_BYTES).min(PACKET_BYTES_MAX + READ_CHUNK_BYTES);
            self.data.reserve(wanted.saturating_sub(self.data.len()));
        }
        let begin = self.data.len();
        let end = self.data.capacity();
        let slice: SliceMut<Vec<u8>> = std::mem::take(&mut self.data).slice_mut(begin..end);
        let (result, slice) = stream.read(slice).await;
        self.data = slice.into_inner();
        result
    }

    /// Splits the next complete packet off the buffer, if there is one.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, ClientError> {
        let unread = &self.data[self.start..];
        let header =
            peek_fixed_header(unread).map_err(|error| ClientError::Protocol(error.to_string()))?;
        let Some((first_byte, remaining_length, header_len)) = header else {
            return Ok(None);
        };
        let total = header_len + remaining_length as usize;
        if total > PACKET_BYTES_MAX {
            return Err(ClientError::Protocol(format!(
                "packet of {total} bytes exceeds {PACKET_BYTES_MAX}"
            )));
        }
        if unread.len() < total {
            return Ok(None);
        }
        let packet = self.start..self.start + total;
        let body = self.start + header_len..self.start + total;
        self.start += total;
        Ok(Some(Frame {
            first_byte,
            packet,
            body,
        }))
    }

    /// The bytes of a range handed out by `next_frame`.
    pub fn bytes(&self, range: Range<usize>) -> &[u8] {
        &self.data[range]
    }

    /// Decodes a framed packet with the codec (for the rare, non-PUBLISH packets: it copies).
    pub fn decode(&self, frame: &Frame, version: ProtocolVersion) -> Result<Packet, ClientError> {
        let mut bytes = BytesMut::from(&self.data[frame.packet.clone()]);
        match decode_packet(&mut bytes, version, PACKET_BYTES_MAX as u32) {
            Ok(Some(packet)) => Ok(packet),
            Ok(None) => Err(ClientError::Protocol("truncated packet".to_owned())),
            Err(error) => Err(ClientError::Protocol(error.to_string())),
        }
    }
}

/// Opens a TCP connection to the broker, from `source` if given; sets TCP_NODELAY.
pub async fn tcp_connect(broker: SocketAddr, source: Option<IpAddr>) -> io::Result<TcpStream> {
    let stream = match source {
        None => TcpStream::connect_addr(broker).await?,
        Some(source) => connect_from(broker, source).await?,
    };
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Connects from a chosen source address: a bound, non-blocking connect handed to monoio.
async fn connect_from(broker: SocketAddr, source: IpAddr) -> io::Result<TcpStream> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(
        Domain::for_address(broker),
        Type::STREAM,
        Some(Protocol::TCP),
    )?;
    if source.is_ipv4() {
        // Without IP_BIND_ADDRESS_NO_PORT, bind(port 0) reserves a port for every destination,
        // so each source address would still be limited to one ephemeral range in total.
        let enable: libc::c_int = 1;
        // SAFETY: a valid socket descriptor, a pointer to a live c_int and its size.
        let result = unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::IPPROTO_IP,
                libc::IP_BIND_ADDRESS_NO_PORT,
                (&enable as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if result != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    socket.bind(&SocketAddr::new(source, 0).into())?;
    socket.set_nonblocking(true)?;
    match socket.connect(&broker.into()) {
        Ok(()) => {}
        Err(error) if error.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(error) => return Err(error),
    }
    let std_stream: std::net::TcpStream = socket.into();
    let stream = TcpStream::from_std(std_stream)?;
    stream.writable(false).await?;
    let mut error: libc::c_int = 0;
    let mut length = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: a valid socket descriptor, a pointer to a live c_int and its length.
    let result = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_ERROR,
            (&mut error as *mut libc::c_int).cast(),
            &mut length,
        )
    };
    if result != 0 {
        return Err(io::Error::last_os_error());
    }
    if error != 0 {
        return Err(io::Error::from_raw_os_error(error));
    }
    Ok(stream)
}

/// Writes CONNECT for `client_id` into `buf`.
pub fn encode_connect(config: &ClientConfig, client_id: &str, buf: &mut BytesMut) {
    let session_expiry_interval =
        (config.version.is_v5() && !config.clean).then_some(config.session_expiry);
    let connect = Connect {
        version: config.version,
        clean_start: config.clean,
        keep_alive: config.keepalive,
        client_id: Str::from(client_id),
        will: None,
        username: config.username.as_deref().map(Str::from),
        password: config
            .password
            .as_ref()
            .map(|password| Bytes::copy_from_slice(password.as_bytes())),
        properties: ConnectProperties {
            session_expiry_interval,
            // Lets the broker keep as many QoS>0 deliveries in flight to us as it likes.
            receive_maximum: config.version.is_v5().then_some(u16::MAX),
            ..ConnectProperties::default()
        },
    };
    // Encoding only fails for values we never produce (e.g. an oversized string).
    if let Err(error) = encode_packet(&Packet::Connect(Box::new(connect)), config.version, buf) {
        panic!("CONNECT for {client_id:?} does not encode: {error}");
    }
}

/// Writes SUBSCRIBE (one filter) into `buf`.
pub fn encode_subscribe(
    filter: &str,
    qos: QoS,
    packet_id: u16,
    version: ProtocolVersion,
    buf: &mut BytesMut,
) {
    let subscribe = Subscribe {
        packet_id,
        filters: vec![SubscribeFilter {
            filter: Str::from(filter),
            options: SubscriptionOptions {
                qos,
                ..SubscriptionOptions::default()
            },
        }],
        subscription_identifier: None,
        user_properties: Vec::new(),
    };
    if let Err(error) = encode_packet(&Packet::Subscribe(subscribe), version, buf) {
        panic!("SUBSCRIBE {filter:?} does not encode: {error}");
    }
}

/// Writes DISCONNECT into `buf`.
pub fn encode_disconnect(version: ProtocolVersion, buf: &mut BytesMut) {
    let disconnect = Packet::Disconnect(ringmq_proto::mqtt::Disconnect::default());
    if let Err(error) = encode_packet(&disconnect, version, buf) {
        panic!("DISCONNECT does not encode: {error}");
    }
}

/// Writes `buf` to the stream and clears it (keeping its capacity).
pub async fn write_buffer<W: AsyncWriteRent>(stream: &mut W, buf: &mut BytesMut) -> io::Result<()> {
    let (result, mut written) = stream.write_all(std::mem::take(buf)).await;
    written.clear();
    *buf = written;
    result.map(|_| ())
}

/// Reads until a packet other than PUBLISH arrives and returns it; PUBLISH packets that race
/// ahead (retained messages, a persistent session's backlog) are skipped.
pub async fn read_control_packet(
    stream: &mut Connection,
    reader: &mut ReadBuffer,
    version: ProtocolVersion,
) -> Result<Packet, ClientError> {
    loop {
        while let Some(frame) = reader.next_frame()? {
            if frame.first_byte >> 4 == 3 {
                continue;
            }
            return reader.decode(&frame, version);
        }
        if reader.fill_from(&mut stream.read).await? == 0 {
            return Err(ClientError::Closed);
        }
    }
}

/// When the first bytes of a plain TCP or TLS answer are TLS or HTTP, the transport flags are
/// wrong: says which one to add.
fn wrong_transport(first: &[u8], transport: &Transport) -> Option<ClientError> {
    let tls_record = matches!(first, [0x15 | 0x16, 0x03, ..] | [0x15 | 0x16]);
    if tls_record && transport.tls.is_none() {
        return Some(ClientError::Protocol(
            "the broker answered with TLS: the port is a TLS listener (add --tls)".to_owned(),
        ));
    }
    let http = first.len() >= 5 && &first[..5] == b"HTTP/";
    if http && transport.ws.is_none() {
        return Some(ClientError::Protocol(
            "the broker answered with HTTP: the port is an HTTP/WebSocket listener (add --ws)"
                .to_owned(),
        ));
    }
    None
}

/// Connects, sends CONNECT and waits for a successful CONNACK.
pub async fn connect_client(
    config: &ClientConfig,
    broker: SocketAddr,
    client_id: &str,
    connection_index: usize,
    reader: &mut ReadBuffer,
    buf: &mut BytesMut,
) -> Result<Connection, ClientError> {
    let source = (!config.source_addresses.is_empty())
        .then(|| config.source_addresses[connection_index % config.source_addresses.len()]);
    let stream = tcp_connect(broker, source).await?;
    let mut stream = Connection::client(stream, &config.transport).await?;
    encode_connect(config, client_id, buf);
    stream.write.write_all(buf).await?;
    if config.transport.ws.is_none() {
        // The first bytes tell a wrong port (TLS or HTTP) from a broken broker.
        if reader.unread().is_empty() {
            let first = reader.fill_from(&mut stream.read).await;
            match first {
                Ok(0) => return Err(ClientError::Closed),
                Ok(_) => {}
                Err(error) if error.kind() == io::ErrorKind::ConnectionReset => {
                    // What TLS and WebSocket listeners do to plain MQTT, among other causes.
                    return Err(ClientError::Io(io::Error::new(
                        error.kind(),
                        format!(
                            "{error} before any answer to CONNECT (a TLS or WebSocket port? \
                             see --tls, --ws)"
                        ),
                    )));
                }
                Err(error) => return Err(error.into()),
            }
        }
        if let Some(error) = wrong_transport(reader.unread(), &config.transport) {
            return Err(error);
        }
    }
    match read_control_packet(&mut stream, reader, config.version).await? {
        Packet::ConnAck(connack) if connack.reason.0 == 0 => Ok(stream),
        Packet::ConnAck(connack) => Err(ClientError::Refused(format!(
            "CONNACK reason 0x{:02x}",
            connack.reason.0
        ))),
        other => Err(ClientError::Protocol(format!(
            "expected CONNACK, got {}",
            other.kind_name()
        ))),
    }
}

/// Subscribes to one filter and waits for a granting SUBACK.
pub async fn subscribe(
    stream: &mut Connection,
    reader: &mut ReadBuffer,
    buf: &mut BytesMut,
    filter: &str,
    qos: QoS,
    version: ProtocolVersion,
) -> Result<(), ClientError> {
    encode_subscribe(filter, qos, 1, version, buf);
    stream.write.write_all(buf).await?;
    match read_control_packet(stream, reader, version).await? {
        Packet::SubAck(suback) => match suback.reasons.first() {
            Some(reason) if reason.0 < 0x80 => Ok(()),
            Some(reason) => Err(ClientError::Refused(format!(
                "SUBACK reason 0x{:02x} for {filter:?}",
                reason.0
            ))),
            None => Err(ClientError::Protocol(
                "SUBACK without reason codes".to_owned(),
            )),
        },
        other => Err(ClientError::Protocol(format!(
            "expected SUBACK, got {}",
            other.kind_name()
        ))),
    }
}

/// One publisher's PUBLISH packet encoded once; each message copies it and patches the
/// packet id, sequence and timestamp in place.
#[derive(Clone, Debug)]
pub struct PublishTemplate {
    packet: Vec<u8>,
    packet_id_offset: Option<usize>,
    header_offset: usize,
}

impl PublishTemplate {
    /// Encodes the template for `topic` with a payload of `payload_bytes` (≥ the header).
    pub fn new(
        topic: &str,
        qos: QoS,
        retain: bool,
        run: u32,
        publisher: u32,
        payload_bytes: usize,
        version: ProtocolVersion,
    ) -> PublishTemplate {
        let payload_bytes = payload_bytes.max(HEADER_BYTES);
        let mut payload = vec![b'x'; payload_bytes];
        Header {
            run,
            publisher,
            sequence: 0,
            sent_ns: 0,
        }
        .write(&mut payload);
        let properties = PublishProperties::default();
        let outgoing = OutgoingPublish {
            dup: false,
            qos,
            retain,
            packet_id: 1,
            topic,
            topic_alias: None,
            subscription_identifiers: &[],
            message_expiry_interval: None,
            properties: &properties,
            payload: &payload,
        };
        let mut buf = BytesMut::new();
        if let Err(error) = encode_publish(&outgoing, version, &mut buf) {
            panic!("PUBLISH to {topic:?} does not encode: {error}");
        }
        let header_len = match peek_fixed_header(&buf) {
            Ok(Some((_, _, header_len))) => header_len,
            _ => unreachable!("a freshly encoded PUBLISH has a fixed header"),
        };
        let packet_id_offset = (qos != QoS::AtMostOnce).then_some(header_len + 2 + topic.len());
        let header_offset = buf.len() - payload_bytes;
        PublishTemplate {
            packet: buf.to_vec(),
            packet_id_offset,
            header_offset,
        }
    }

    /// Size of one encoded message.
    pub fn encoded_len(&self) -> usize {
        self.packet.len()
    }

    /// Appends one message to `out`.
    pub fn append(&self, out: &mut BytesMut, packet_id: u16, sequence: u64, sent_ns: u64) {
        let start = out.len();
        out.extend_from_slice(&self.packet);
        let message = &mut out[start..];
        if let Some(offset) = self.packet_id_offset {
            message[offset..offset + 2].copy_from_slice(&packet_id.to_be_bytes());
        }
        Header::patch(&mut message[self.header_offset..], sequence, sent_ns);
    }
}

/// What the PUBLISH fast path extracts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PublishView<'a> {
    /// Delivery QoS.
    pub qos: u8,
    /// Packet id (0 at QoS 0).
    pub packet_id: u16,
    /// The application payload.
    pub payload: &'a [u8],
}

/// Parses a PUBLISH body without allocating; `None` if it is malformed.
pub fn parse_publish(first_byte: u8, body: &[u8], v5: bool) -> Option<PublishView<'_>> {
    let qos = (first_byte >> 1) & 0b11;
    if qos > 2 {
        return None;
    }
    let topic_len = usize::from(u16::from_be_bytes([*body.first()?, *body.get(1)?]));
    let mut position = 2 + topic_len;
    let mut packet_id = 0;
    if qos > 0 {
        packet_id = u16::from_be_bytes([*body.get(position)?, *body.get(position + 1)?]);
        position += 2;
    }
    if v5 {
        let mut properties_len = 0usize;
        for index in 0..4 {
            let byte = *body.get(position)?;
            position += 1;
            properties_len |= usize::from(byte & 0x7f) << (7 * index);
            if byte & 0x80 == 0 {
                break;
            }
            if index == 3 {
                return None;
            }
        }
        position += properties_len;
    }
    Some(PublishView {
        qos,
        packet_id,
        payload: body.get(position..)?,
    })
}

/// Appends a PUBACK/PUBREC/PUBREL/PUBCOMP with success.
pub fn append_pub_resp(
    kind: ringmq_proto::mqtt::PubRespKind,
    packet_id: u16,
    version: ProtocolVersion,
    out: &mut BytesMut,
) {
    ringmq_proto::mqtt::encode_pub_resp(kind, packet_id, ReasonCode::SUCCESS, version, out);
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringmq_proto::mqtt::Publish;

    fn decode_one(bytes: &[u8], version: ProtocolVersion) -> Publish {
        let mut buffer = BytesMut::from(bytes);
        match decode_packet(&mut buffer, version, 1 << 20) {
            Ok(Some(Packet::Publish(publish))) => publish,
            other => panic!("not a PUBLISH: {other:?}"),
        }
    }

    #[test]
    fn template_patches_id_sequence_and_time() {
        for version in [ProtocolVersion::V311, ProtocolVersion::V5] {
            for qos in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce] {
                let template = PublishTemplate::new("bench/7", qos, false, 3, 7, 64, version);
                let mut out = BytesMut::new();
                template.append(&mut out, 513, 42, 99);
                template.append(&mut out, 514, 43, 100);
                assert_eq!(out.len(), 2 * template.encoded_len());
                let first = decode_one(&out[..template.encoded_len()], version);
                assert_eq!(first.topic, "bench/7");
                assert_eq!(first.qos, qos);
                assert_eq!(first.payload.len(), 64);
                if qos != QoS::AtMostOnce {
                    assert_eq!(first.packet_id, 513);
                }
                assert_eq!(
                    Header::read(&first.payload),
                    Some(Header {
                        run: 3,
                        publisher: 7,
                        sequence: 42,
                        sent_ns: 99
                    })
                );
                let second = &out[template.encoded_len()..];
                let (first_byte, _, header_len) = peek_fixed_header(second).unwrap().unwrap();
                let view = parse_publish(first_byte, &second[header_len..], version.is_v5())
                    .expect("fast path parses");
                assert_eq!(view.qos, qos as u8);
                assert_eq!(Header::read(view.payload).map(|h| h.sequence), Some(43));
                if qos != QoS::AtMostOnce {
                    assert_eq!(view.packet_id, 514);
                }
            }
        }
    }

    #[test]
    fn fast_path_rejects_truncated_bodies() {
        assert_eq!(parse_publish(0x30, &[0], false), None);
        assert_eq!(parse_publish(0x32, &[0, 1, b'a'], false), None);
        assert_eq!(
            parse_publish(0x30, &[0, 1, b'a', 0x80, 0x80, 0x80, 0x80], true),
            None
        );
    }

    #[test]
    fn read_buffer_frames_packets() {
        let mut reader = ReadBuffer::with_capacity(64);
        reader
            .data
            .extend_from_slice(&[0xd0, 0x00, 0x40, 0x02, 0x00, 0x05, 0x30]);
        let frame = reader.next_frame().unwrap().unwrap();
        assert_eq!(frame.first_byte, 0xd0);
        let frame = reader.next_frame().unwrap().unwrap();
        assert_eq!(frame.first_byte, 0x40);
        assert_eq!(reader.bytes(frame.body), &[0x00, 0x05]);
        assert_eq!(reader.next_frame().unwrap(), None);
    }
}
