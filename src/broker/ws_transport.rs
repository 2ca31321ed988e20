//! MQTT over WebSocket (`GET /mqtt`, subprotocol `mqtt`): the WebSocket framing as a layered
//! transport, so `conn::serve` runs the MQTT connection exactly as over TCP or TLS.
//!
//! Reading yields the bytes of binary messages in order (MQTT packets may span frames and
//! frames may carry several packets, as MQTT over WebSocket allows); pings are answered, a close
//! ends the stream. Every write becomes one binary frame. Control frames the reader owes the peer
//! (pong, close) wait in a small shared buffer that the writer sends first; a connection that
//! writes nothing for a while answers a ping late, which browsers and MQTT.js never notice
//! (they send no pings: MQTT has its own PINGREQ).

use std::cell::RefCell;
use std::rc::Rc;

use bytes::BytesMut;
use ringmq_http::ws::{self, FrameDecoder, MessageAssembler, WsLimits};
use ringmq_io::{ConnReader, ConnWriter, FramedRead, FramedWrite, LocalIoFuture};

/// Control frames owed to the peer, sent before the next data frame. Bounded: one close and at
/// most a few pongs of 125 bytes.
const PENDING_CONTROL_BYTES_MAX: usize = 4096;

/// Room reserved for one read of the underlying connection.
const READ_CHUNK: usize = 4096;

/// Shared between the halves: control frames to send, and whether a close was sent.
#[derive(Debug, Default)]
struct Pending {
    control: BytesMut,
    closed: bool,
}

/// The reading half of MQTT over WebSocket.
pub struct WsReader {
    inner: ConnReader,
    raw: BytesMut,
    decoder: FrameDecoder,
    assembler: MessageAssembler,
    pending: Rc<RefCell<Pending>>,
    ended: bool,
}

/// The writing half of MQTT over WebSocket.
pub struct WsWriter {
    inner: ConnWriter,
    pending: Rc<RefCell<Pending>>,
}

/// Wraps the halves of an upgraded HTTP connection; `rest` is what was read after the request
/// head (the client may send its CONNECT right behind the upgrade). `message_bytes_max` bounds
/// one WebSocket message (an MQTT packet plus framing).
pub fn wrap(
    reader: ConnReader,
    writer: ConnWriter,
    rest: BytesMut,
    message_bytes_max: usize,
) -> (WsReader, WsWriter) {
    let pending = Rc::new(RefCell::new(Pending::default()));
    let limits = WsLimits {
        frame_payload_max: message_bytes_max,
        message_bytes_max,
    };
    (
        WsReader {
            inner: reader,
            raw: rest,
            decoder: FrameDecoder::new(limits),
            assembler: MessageAssembler::new(message_bytes_max),
            pending: Rc::clone(&pending),
            ended: false,
        },
        WsWriter {
            inner: writer,
            pending,
        },
    )
}

impl WsReader {
    /// Moves the payload of complete binary messages already buffered into `out`; true when
    /// something was moved or the stream ended.
    fn drain_frames(&mut self, out: &mut BytesMut) -> Result<bool, ()> {
        let mut progressed = false;
        loop {
            let frame = match self.decoder.decode(&mut self.raw) {
                Ok(Some(frame)) => frame,
                Ok(None) => return Ok(progressed),
                Err(problem) => {
                    self.owe_close(problem.close_code());
                    return Err(());
                }
            };
            match self.assembler.push(frame) {
                Ok(None) => {}
                Ok(Some(ws::Message::Binary(bytes))) => {
                    out.extend_from_slice(&bytes);
                    progressed = true;
                }
                Ok(Some(ws::Message::Ping(payload))) => {
                    let mut pending = self.pending.borrow_mut();
                    if pending.control.len() < PENDING_CONTROL_BYTES_MAX {
                        ws::encode_pong(&payload, &mut pending.control);
                    }
                }
                Ok(Some(ws::Message::Pong(_))) => {}
                Ok(Some(ws::Message::Close { .. })) => {
                    self.owe_close(ws::CLOSE_NORMAL);
                    self.ended = true;
                    return Ok(true);
                }
                Ok(Some(ws::Message::Text(_))) => {
                    // MQTT over WebSocket is binary only (MQTT 5.0 section 6).
                    self.owe_close(ws::CLOSE_PROTOCOL_ERROR);
                    return Err(());
                }
                Err(problem) => {
                    self.owe_close(problem.close_code());
                    return Err(());
                }
            }
        }
    }

    fn owe_close(&self, code: u16) {
        let mut pending = self.pending.borrow_mut();
        if !pending.closed {
            pending.closed = true;
            ws::encode_close(code, "", &mut pending.control);
        }
    }

    async fn read_inner(&mut self, mut out: BytesMut) -> (std::io::Result<usize>, BytesMut) {
        let before = out.len();
        loop {
            if self.ended {
                return (Ok(0), out);
            }
            match self.drain_frames(&mut out) {
                Ok(true) => {
                    if self.ended && out.len() == before {
                        return (Ok(0), out);
                    }
                    if out.len() > before {
                        return (Ok(out.len() - before), out);
                    }
                }
                Ok(false) => {}
                Err(()) => {
                    return (
                        Err(std::io::Error::new(
                            std::io::ErrorKind::InvalidData,
                            "WebSocket protocol error",
                        )),
                        out,
                    )
                }
            }
            if self.raw.capacity() - self.raw.len() < READ_CHUNK / 4 {
                self.raw.reserve(READ_CHUNK);
            }
            let raw = std::mem::take(&mut self.raw);
            let (result, back) = self.inner.read_append(raw).await;
            self.raw = back;
            match result {
                Ok(0) => return (Ok(0), out),
                Ok(_) => {}
                Err(error) => return (Err(error), out),
            }
        }
    }
}

impl FramedRead for WsReader {
    fn read_append(&mut self, buf: BytesMut) -> LocalIoFuture<'_> {
        Box::pin(self.read_inner(buf))
    }
}

impl WsWriter {
    async fn write_inner(&mut self, buf: BytesMut) -> (std::io::Result<usize>, BytesMut) {
        let len = buf.len();
        let mut framed = {
            let mut pending = self.pending.borrow_mut();
            pending.control.split()
        };
        if !buf.is_empty() {
            ws::encode_binary(&buf, &mut framed);
        }
        if framed.is_empty() {
            return (Ok(0), buf);
        }
        let (result, _) = self.inner.write_all(framed).await;
        // The caller reuses its buffer: hand back the (unchanged) bytes it gave.
        (result.map(|_| len), buf)
    }

    async fn close_inner(&mut self) {
        let control = {
            let mut pending = self.pending.borrow_mut();
            if !pending.closed {
                pending.closed = true;
                ws::encode_close(ws::CLOSE_NORMAL, "", &mut pending.control);
            }
            pending.control.split()
        };
        if !control.is_empty() {
            let _ = self.inner.write_all(control).await;
        }
        self.inner.close_notify().await;
    }
}

impl FramedWrite for WsWriter {
    fn write_all(&mut self, buf: BytesMut) -> LocalIoFuture<'_> {
        Box::pin(self.write_inner(buf))
    }

    fn close(&mut self) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + '_>> {
        Box::pin(self.close_inner())
    }
}
