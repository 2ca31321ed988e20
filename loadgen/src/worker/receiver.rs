//! Idle clients and subscribers: a reader task that is never cancelled (an io_uring read that
//! loses a `select!` may already have consumed bytes) and a writer task fed through an outbox.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::atomic::Ordering;

use bytes::BytesMut;
use ringmq_proto::mqtt::{ProtocolVersion, PubRespKind};

use crate::client::{
    append_pub_resp, encode_disconnect, parse_publish, subscribe, ClientError, ReadBuffer,
    READ_CHUNK_BYTES,
};
use crate::control::{LocalNotify, Phase};
use crate::metrics::LatencyKind;
use crate::payload::Header;
use crate::template::expand;
use crate::tracker::SequenceTracker;
use crate::transport::WriteSide;

use super::{open, Delivery, Role, ThreadState, OUTBOX_BYTES_MAX, TRACKED_PUBLISHERS_MAX};

/// Acks and pings a receiving connection's reader queues for its writer.
#[derive(Default)]
struct Outbox {
    pending: RefCell<BytesMut>,
    wake_writer: LocalNotify,
    drained: LocalNotify,
    reader_closed: Cell<bool>,
}

/// An idle client or a subscriber: connect, subscribe, then read until stopped.
pub(super) async fn receiver(state: Rc<ThreadState>, role: Role, index: usize) {
    let slot = state.register();
    let client_id = state.client_id(role);
    let mut reader = ReadBuffer::with_capacity(match role {
        Role::Idle(_) => 256,
        _ => READ_CHUNK_BYTES,
    });
    let mut buf = BytesMut::with_capacity(256);
    let Some(mut stream) = open(&state, slot, &client_id, index, &mut reader, &mut buf).await
    else {
        return;
    };
    let version = state.plan.client.version;
    if let Role::Subscriber(subscriber) = role {
        let filter = expand(&state.plan.filter, subscriber, &client_id);
        let subscribed = subscribe(
            &mut stream,
            &mut reader,
            &mut buf,
            &filter,
            state.plan.sub_qos,
            version,
        )
        .await;
        if let Err(error) = subscribed {
            state.connect_failed(&client_id, &error);
            return;
        }
    }
    state.global.connected.fetch_add(1, Ordering::Relaxed);
    state.set_socket(slot, Some(stream.fd()));
    let (mut read_half, write_half) = stream.into_split();
    let outbox = Rc::new(Outbox::default());
    let writer = monoio::spawn(receiver_writer(
        Rc::clone(&state),
        slot,
        write_half,
        Rc::clone(&outbox),
        version,
    ));

    let mut trackers: Vec<SequenceTracker> = Vec::new();
    let track = state.plan.delivery != Delivery::OneOfGroup;
    // An error already reported for this connection (not also "closed by the broker").
    let mut reported = false;
    loop {
        match reader.fill_from(&mut read_half).await {
            Ok(0) => break,
            Err(error) => {
                if state.control.phase() < Phase::Stopping {
                    state.error(&client_id, format!("read: {error}"));
                    reported = true;
                }
                break;
            }
            Ok(_) => {}
        }
        match handle_deliveries(&state, &mut reader, &outbox, &mut trackers, track, version) {
            Ok(received) => {
                if received > 0 {
                    state.global.received.fetch_add(received, Ordering::Relaxed);
                }
            }
            Err(error) => {
                if state.control.phase() < Phase::Stopping {
                    state.error(&client_id, error.to_string());
                    reported = true;
                }
                break;
            }
        }
        if !outbox.pending.borrow().is_empty() {
            outbox.wake_writer.notify();
        }
        while outbox.pending.borrow().len() > OUTBOX_BYTES_MAX {
            outbox.drained.notified().await;
        }
    }
    if state.control.phase() < Phase::Stopping && !reported {
        state.error(&client_id, "connection closed by the broker".to_owned());
    }
    outbox.reader_closed.set(true);
    outbox.wake_writer.notify();
    writer.await;
    let mut counts = state.counts.borrow_mut();
    for tracker in &trackers {
        counts.add(&tracker.counts());
    }
    state.set_socket(slot, None);
}

/// Handles every complete packet in the buffer; returns the PUBLISH count.
fn handle_deliveries(
    state: &ThreadState,
    reader: &mut ReadBuffer,
    outbox: &Outbox,
    trackers: &mut Vec<SequenceTracker>,
    track: bool,
    version: ProtocolVersion,
) -> Result<u64, ClientError> {
    let v5 = version.is_v5();
    let now_ns = state.global.now_ns();
    let measure_from_ns = state.control.measure_from_ns();
    let record_latency = state.plan.latency == Some(LatencyKind::EndToEnd);
    let mut received = 0;
    let mut metrics = state.metrics.borrow_mut();
    let mut pending = outbox.pending.borrow_mut();
    while let Some(frame) = reader.next_frame()? {
        match frame.first_byte >> 4 {
            3 => {
                let body = reader.bytes(frame.body.clone());
                let view = parse_publish(frame.first_byte, body, v5)
                    .ok_or_else(|| ClientError::Protocol("malformed PUBLISH".to_owned()))?;
                received += 1;
                match view.qos {
                    1 => {
                        append_pub_resp(PubRespKind::PubAck, view.packet_id, version, &mut pending)
                    }
                    2 => {
                        append_pub_resp(PubRespKind::PubRec, view.packet_id, version, &mut pending)
                    }
                    _ => {}
                }
                let Some(header) = Header::read(view.payload) else {
                    continue;
                };
                if state.plan.accept_run.is_some_and(|run| run != header.run) {
                    // A leftover of an earlier run: neither counted nor timed.
                    received -= 1;
                    continue;
                }
                if record_latency {
                    let measured = header.sent_ns >= measure_from_ns;
                    metrics.record(now_ns.saturating_sub(header.sent_ns), measured);
                }
                let publisher = header.publisher as usize;
                if track && publisher < TRACKED_PUBLISHERS_MAX {
                    if trackers.len() <= publisher {
                        trackers.resize_with(publisher + 1, SequenceTracker::default);
                    }
                    trackers[publisher].record(header.sequence);
                }
            }
            6 => {
                // PUBREL of an incoming QoS 2 message: complete it.
                let body = reader.bytes(frame.body.clone());
                let packet_id =
                    u16::from_be_bytes([*body.first().unwrap_or(&0), *body.get(1).unwrap_or(&0)]);
                append_pub_resp(PubRespKind::PubComp, packet_id, version, &mut pending);
            }
            14 => {
                return Err(ClientError::Refused(
                    "DISCONNECT from the broker".to_owned(),
                ))
            }
            // PINGRESP, SUBACK, UNSUBACK: nothing to do.
            _ => {}
        }
    }
    Ok(received)
}

/// Writes what the reader queued, keep-alive pings, and DISCONNECT at the end.
async fn receiver_writer(
    state: Rc<ThreadState>,
    slot: usize,
    mut write_half: WriteSide,
    outbox: Rc<Outbox>,
    version: ProtocolVersion,
) {
    let mut buf = BytesMut::with_capacity(4096);
    let mut ping_round = state.control.ping_round();
    loop {
        let seen = state.control.generation();
        std::mem::swap(&mut *outbox.pending.borrow_mut(), &mut buf);
        if state.control.ping_round() != ping_round {
            ping_round = state.control.ping_round();
            buf.extend_from_slice(&[0xc0, 0x00]);
        }
        let done = state.control.phase() == Phase::Stopping || outbox.reader_closed.get();
        if done && !outbox.reader_closed.get() {
            encode_disconnect(version, &mut buf);
        }
        if !buf.is_empty() {
            if write_half.write_all(&mut buf).await.is_err() {
                break;
            }
            outbox.drained.notify();
        }
        if done {
            break;
        }
        monoio::select! {
            _ = outbox.wake_writer.notified() => {}
            _ = state.control.changed(slot, seen) => {}
        }
    }
    outbox.drained.notify();
}
