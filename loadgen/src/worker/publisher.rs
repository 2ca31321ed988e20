//! Publishers: pacing to `--rate`, QoS 0 batches bounded by TCP backpressure only, and the
//! QoS 1/2 window of `--inflight` messages freed by an ack reader task.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use ringmq_proto::mqtt::{PubRespKind, QoS};

use crate::client::{append_pub_resp, encode_disconnect, PublishTemplate, ReadBuffer};
use crate::control::{LocalNotify, Phase};
use crate::metrics::LatencyKind;
use crate::template::expand;
use crate::transport::{Connection, ReadSide};

use super::{open, Role, ThreadState, WRITE_BATCH_BYTES};

/// Paces a publisher: how many messages it may send now, and when to look again.
#[derive(Debug, Clone, Copy)]
pub struct Pacer {
    rate: Option<f64>,
    started: Instant,
}

impl Pacer {
    /// A pacer for `rate` messages per second starting now (`None`: unlimited).
    pub fn new(rate: Option<f64>, started: Instant) -> Pacer {
        Pacer { rate, started }
    }

    /// Messages allowed at `now` given `sent` so far (the first is due at once).
    pub fn allowance(&self, sent: u64, now: Instant) -> u64 {
        match self.rate {
            None => u64::MAX,
            Some(rate) => {
                let due = (now.duration_since(self.started).as_secs_f64() * rate) as u64 + 1;
                due.saturating_sub(sent)
            }
        }
    }

    /// When the next message after `sent` is due, but not sooner than `tick_min` from `now`.
    pub fn next_wake(&self, sent: u64, now: Instant, tick_min: Duration) -> Instant {
        let earliest = now + tick_min;
        match self.rate {
            None => earliest,
            Some(rate) => {
                let due = self.started + Duration::from_secs_f64(sent as f64 / rate);
                due.max(earliest)
            }
        }
    }
}

/// Sleeps until the pacer's next wake-up or a control change.
async fn pace(
    state: &ThreadState,
    slot: usize,
    pacer: &Pacer,
    sent: u64,
    notify: Option<&LocalNotify>,
) {
    let seen = state.control.generation();
    let wake = pacer.next_wake(sent, Instant::now(), state.tick_min);
    let sleep = monoio::time::sleep_until(monoio::time::Instant::from_std(wake));
    match notify {
        Some(notify) => monoio::select! {
            _ = sleep => {}
            _ = notify.notified() => {}
            _ = state.control.changed(slot, seen) => {}
        },
        None => monoio::select! {
            _ = sleep => {}
            _ = state.control.changed(slot, seen) => {}
        },
    }
}

/// A publisher: connect, wait for `Publishing`, publish until `Draining` or `--count`.
pub(super) async fn publisher_task(state: Rc<ThreadState>, publisher: usize, index: usize) {
    let slot = state.register();
    let client_id = state.client_id(Role::Publisher(publisher));
    let mut reader = ReadBuffer::with_capacity(4096);
    let mut buf = BytesMut::with_capacity(256);
    let Some(stream) = open(&state, slot, &client_id, index, &mut reader, &mut buf).await else {
        return;
    };
    state.global.connected.fetch_add(1, Ordering::Relaxed);
    state.set_socket(slot, Some(stream.fd()));
    let plan = &state.plan;
    let topic = expand(&plan.topic, publisher, &client_id);
    let template = PublishTemplate::new(
        &topic,
        plan.qos,
        plan.retain,
        plan.run_id,
        publisher as u32,
        plan.payload_bytes,
        plan.client.version,
    );
    state.control.reach(slot, Phase::Publishing).await;
    if plan.qos == QoS::AtMostOnce {
        publish_unacked(&state, slot, &client_id, stream, &template).await;
    } else {
        publish_acked(&state, slot, &client_id, stream, reader, &template).await;
    }
    state.set_socket(slot, None);
}

fn batch_max(template: &PublishTemplate) -> u64 {
    (WRITE_BATCH_BYTES / template.encoded_len()).max(1) as u64
}

/// QoS 0: encode a batch, write it, repeat; TCP backpressure is the only flow control.
async fn publish_unacked(
    state: &ThreadState,
    slot: usize,
    client_id: &str,
    stream: Connection,
    template: &PublishTemplate,
) {
    // Nothing is read at QoS 0: the read half only has to stay open.
    let (_read_half, mut stream) = stream.into_split();
    let plan = &state.plan;
    let batch = batch_max(template);
    let mut buf = BytesMut::with_capacity(batch as usize * template.encoded_len());
    let pacer = Pacer::new(plan.rate_per_publisher, Instant::now());
    let mut sequence = 0u64;
    while state.control.phase() == Phase::Publishing {
        let remaining = plan.count.map_or(u64::MAX, |count| count - sequence);
        if remaining == 0 {
            state.global.publishers_done.fetch_add(1, Ordering::Relaxed);
            break;
        }
        let allowed = pacer
            .allowance(sequence, Instant::now())
            .min(batch)
            .min(remaining);
        if allowed == 0 {
            pace(state, slot, &pacer, sequence, None).await;
            continue;
        }
        let now_ns = state.global.now_ns();
        for _ in 0..allowed {
            template.append(&mut buf, 0, sequence, now_ns);
            sequence += 1;
        }
        if let Err(error) = stream.write_all(&mut buf).await {
            if state.control.phase() < Phase::Stopping {
                state.error(client_id, format!("write: {error}"));
            }
            return;
        }
        state.global.sent.fetch_add(allowed, Ordering::Relaxed);
    }
    state.control.reach(slot, Phase::Stopping).await;
    encode_disconnect(plan.client.version, &mut buf);
    let _ = stream.write_all(&mut buf).await;
}

/// In-flight bookkeeping shared by a QoS 1/2 publisher and its ack reader.
struct AckWindow {
    in_flight: Cell<usize>,
    /// PUBRECs received whose PUBREL is still to be written (at most the window).
    pubrel: RefCell<Vec<u16>>,
    /// Send time per packet id slot, for publish→ack latency.
    sent_ns: RefCell<Vec<u64>>,
    notify: LocalNotify,
    closed: Cell<bool>,
}

impl AckWindow {
    fn slot_of(&self, packet_id: u16) -> usize {
        usize::from(packet_id) & (self.sent_ns.borrow().len() - 1)
    }
}

/// QoS 1/2: a window of `--inflight` unacknowledged messages; an ack reader task frees it.
async fn publish_acked(
    state: &Rc<ThreadState>,
    slot: usize,
    client_id: &str,
    stream: Connection,
    reader: ReadBuffer,
    template: &PublishTemplate,
) {
    let plan = &state.plan;
    let version = plan.client.version;
    let window_max = usize::from(plan.inflight);
    let window = Rc::new(AckWindow {
        in_flight: Cell::new(0),
        pubrel: RefCell::new(Vec::with_capacity(window_max)),
        sent_ns: RefCell::new(vec![0; (window_max * 2).next_power_of_two()]),
        notify: LocalNotify::default(),
        closed: Cell::new(false),
    });
    let (read_half, mut write_half) = stream.into_split();
    let ack_reader = monoio::spawn(read_acks(
        Rc::clone(state),
        client_id.to_owned(),
        read_half,
        reader,
        Rc::clone(&window),
    ));
    let batch = batch_max(template);
    let mut buf = BytesMut::with_capacity(batch as usize * template.encoded_len() + 1024);
    let pacer = Pacer::new(plan.rate_per_publisher, Instant::now());
    let mut sequence = 0u64;
    let mut next_packet_id: u16 = 0;
    let mut done_counted = false;
    loop {
        if window.closed.get() {
            break;
        }
        let phase = state.control.phase();
        for packet_id in window.pubrel.borrow_mut().drain(..) {
            append_pub_resp(PubRespKind::PubRel, packet_id, version, &mut buf);
        }
        let remaining = plan.count.map_or(u64::MAX, |count| count - sequence);
        if remaining == 0 && !done_counted {
            done_counted = true;
            state.global.publishers_done.fetch_add(1, Ordering::Relaxed);
        }
        let publishing = phase == Phase::Publishing && remaining > 0;
        let mut added = 0u64;
        if publishing {
            let room = (window_max - window.in_flight.get()) as u64;
            let allowed = pacer
                .allowance(sequence, Instant::now())
                .min(batch)
                .min(remaining)
                .min(room);
            let now_ns = state.global.now_ns();
            let mut sent_ns = window.sent_ns.borrow_mut();
            let mask = sent_ns.len() - 1;
            for _ in 0..allowed {
                next_packet_id = next_packet_id.checked_add(1).unwrap_or(1);
                sent_ns[usize::from(next_packet_id) & mask] = now_ns;
                template.append(&mut buf, next_packet_id, sequence, now_ns);
                sequence += 1;
            }
            window
                .in_flight
                .set(window.in_flight.get() + allowed as usize);
            added = allowed;
        }
        if !buf.is_empty() {
            if let Err(error) = write_half.write_all(&mut buf).await {
                if state.control.phase() < Phase::Stopping {
                    state.error(client_id, format!("write: {error}"));
                }
                break;
            }
            if added > 0 {
                state.global.sent.fetch_add(added, Ordering::Relaxed);
            }
            continue;
        }
        if phase == Phase::Stopping || (!publishing && window.in_flight.get() == 0) {
            break;
        }
        if publishing && window.in_flight.get() < window_max {
            pace(state, slot, &pacer, sequence, Some(&window.notify)).await;
        } else {
            let seen = state.control.generation();
            monoio::select! {
                _ = window.notify.notified() => {}
                _ = state.control.changed(slot, seen) => {}
            }
        }
    }
    if !window.closed.get() {
        state.control.reach(slot, Phase::Stopping).await;
        encode_disconnect(version, &mut buf);
        let _ = write_half.write_all(&mut buf).await;
    }
    // Dropping the write half sends FIN; the broker closes and the ack reader sees EOF.
    drop(write_half);
    ack_reader.await;
}

/// Reads PUBACK / PUBREC / PUBCOMP for a QoS 1/2 publisher.
async fn read_acks(
    state: Rc<ThreadState>,
    client_id: String,
    mut read_half: ReadSide,
    mut reader: ReadBuffer,
    window: Rc<AckWindow>,
) {
    let qos = state.plan.qos;
    let record_latency = state.plan.latency == Some(LatencyKind::PublishAck);
    loop {
        match reader.fill_from(&mut read_half).await {
            Ok(0) => break,
            Err(error) => {
                if state.control.phase() < Phase::Stopping && !window.closed.get() {
                    state.error(&client_id, format!("read: {error}"));
                    window.closed.set(true);
                }
                break;
            }
            Ok(_) => {}
        }
        let now_ns = state.global.now_ns();
        let measure_from_ns = state.control.measure_from_ns();
        let mut completed = 0u64;
        let mut failure = None;
        loop {
            let frame = match reader.next_frame() {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                Err(error) => {
                    failure = Some(error.to_string());
                    break;
                }
            };
            let body = reader.bytes(frame.body.clone());
            let packet_id = match body {
                [high, low, ..] => u16::from_be_bytes([*high, *low]),
                _ => 0,
            };
            let completes = match (frame.first_byte >> 4, qos) {
                (4, QoS::AtLeastOnce) | (7, QoS::ExactlyOnce) => true,
                (5, QoS::ExactlyOnce) => {
                    window.pubrel.borrow_mut().push(packet_id);
                    false
                }
                (14, _) => {
                    failure = Some("DISCONNECT from the broker".to_owned());
                    break;
                }
                _ => false,
            };
            if completes {
                completed += 1;
                if record_latency {
                    let sent_ns = window.sent_ns.borrow()[window.slot_of(packet_id)];
                    let measured = sent_ns >= measure_from_ns;
                    state
                        .metrics
                        .borrow_mut()
                        .record(now_ns.saturating_sub(sent_ns), measured);
                }
            }
        }
        if completed > 0 {
            let in_flight = window.in_flight.get();
            window
                .in_flight
                .set(in_flight.saturating_sub(completed as usize));
            state.global.acked.fetch_add(completed, Ordering::Relaxed);
        }
        window.notify.notify();
        if let Some(message) = failure {
            if state.control.phase() < Phase::Stopping {
                state.error(&client_id, message);
            }
            break;
        }
    }
    if state.control.phase() < Phase::Stopping && !window.closed.get() {
        state.error(&client_id, "connection closed by the broker".to_owned());
    }
    window.closed.set(true);
    window.notify.notify();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pacer_spreads_messages_over_time() {
        let start = Instant::now();
        let pacer = Pacer::new(Some(1000.0), start);
        assert_eq!(pacer.allowance(0, start), 1);
        assert_eq!(pacer.allowance(1, start), 0);
        assert_eq!(pacer.allowance(1, start + Duration::from_millis(10)), 10);
        let wake = pacer.next_wake(5, start, Duration::from_micros(1));
        assert_eq!(wake, start + Duration::from_millis(5));
        let unlimited = Pacer::new(None, start);
        assert_eq!(unlimited.allowance(1 << 40, start), u64::MAX);
    }
}
