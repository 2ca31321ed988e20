//! A connection's handshake: CONNECT within the deadline, negotiation, the login, and the
//! client-id claim at its home shard.

use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use ringmq_io::{monoio, ConnReader, ConnWriter};

use super::parked::ensure_spare;
use crate::broker::login::authenticate;
use crate::broker::mailbox::ShardHandle;
use crate::broker::shard::{Granted, Principal, Slot};
use crate::mqtt::{
    decode_packet, encode_packet, ConnAck, ConnAckProperties, DecodeError, Packet, ProtocolVersion,
    ReasonCode, Str,
};
use crate::session::connect::{connack_refused, negotiate};

/// How long a connection waits for the client id's home shard to answer.
pub(super) const GRANT_TIMEOUT: Duration = Duration::from_secs(10);

/// CONNECT, negotiation and the client-id claim. Boxed by the caller, so the large state it
/// holds while waiting (the CONNECT, the negotiation) is freed once the connection is up instead
/// of staying in every connection's future.
pub(super) async fn handshake(
    handle: &Rc<ShardHandle>,
    reader: &mut ConnReader,
    writer: &mut ConnWriter,
    buf: &mut BytesMut,
    (conn_id, peer, identity, foreign_origin): (u64, Option<std::net::IpAddr>, Option<&str>, bool),
) -> Option<Handshake> {
    let (settings, rules) = (&handle.settings, &handle.rules);
    // 1. CONNECT, within the deadline.
    let deadline = Instant::now() + settings.connect_timeout;
    let connect = loop {
        let level = declared_level(buf);
        match decode_packet(buf, ProtocolVersion::V311, settings.packet_size_max) {
            Ok(Some(Packet::Connect(connect))) => break connect,
            Ok(Some(other)) => {
                tracing::debug!(kind = other.kind_name(), "first packet is not CONNECT");
                return None;
            }
            Ok(None) => {}
            Err(DecodeError::UnsupportedProtocolVersion(_))
            | Err(DecodeError::InvalidProtocolName) => {
                // 3.1.2.2: answer with return code 0x01 in the v3.1.1 form, then close.
                let mut out = BytesMut::new();
                let ack = ConnAck {
                    session_present: false,
                    reason: ReasonCode(crate::mqtt::connack_v3::UNACCEPTABLE_PROTOCOL_VERSION),
                    properties: ConnAckProperties::default(),
                };
                let _ = encode_packet(&Packet::ConnAck(ack), ProtocolVersion::V311, &mut out);
                let _ = writer.write_all(out).await;
                return None;
            }
            Err(error) => {
                tracing::debug!(%error, "bad CONNECT");
                if level == Some(5) {
                    // A v5 client learns why (3.2.2.2: CONNACK with a reason code, then close).
                    let refusal = crate::session::connect::Refusal {
                        reason: error.reason_code(),
                        text: "malformed CONNECT",
                    };
                    let ack = connack_refused(ProtocolVersion::V5, &refusal);
                    let mut out = BytesMut::new();
                    let _ = encode_packet(&Packet::ConnAck(ack), ProtocolVersion::V5, &mut out);
                    let _ = writer.write_all(out).await;
                }
                return None;
            }
        }
        let Some(left) = deadline.checked_duration_since(Instant::now()) else {
            tracing::debug!("no CONNECT before the deadline");
            return None;
        };
        ensure_spare(buf, settings.read_buffer_bytes);
        match monoio::time::timeout(left, reader.read_append(std::mem::take(buf))).await {
            Err(_) => {
                tracing::debug!("no CONNECT before the deadline");
                return None;
            }
            Ok((Ok(0), _)) | Ok((Err(_), _)) => return None,
            Ok((Ok(_), back)) => *buf = back,
        }
    };
    let version = connect.version;
    let now = Instant::now();

    // 2. Validate and negotiate.
    let negotiated = match negotiate(&connect, rules, now, || assign_client_id(conn_id)) {
        Ok(n) => n,
        Err(refusal) => {
            tracing::debug!(reason = refusal.text, "CONNECT refused");
            let mut out = BytesMut::new();
            let ack = connack_refused(version, &refusal);
            let _ = encode_packet(&Packet::ConnAck(ack), version, &mut out);
            let _ = writer.write_all(out).await;
            return None;
        }
    };
    if handle.shutting_down.get() {
        return None;
    }

    // 3. Authenticate, then put the client id and the will into the org's scope.
    let refuse = |refusal: crate::session::connect::Refusal| {
        let mut out = BytesMut::new();
        let ack = connack_refused(version, &refusal);
        let _ = encode_packet(&Packet::ConnAck(ack), version, &mut out);
        out
    };
    let admitted = match authenticate(handle, &connect, peer, identity, foreign_origin).await {
        Ok(admitted) => admitted,
        Err(refusal) => {
            let _ = writer.write_all(refuse(refusal)).await;
            return None;
        }
    };
    let mut negotiated = negotiated;
    let mut access = admitted.access;
    // A verified client certificate names the device: streams filter on it (`?device=`).
    access.set_device(identity.map(crate::mqtt::Str::from));
    if let Some(will) = negotiated.link.will.as_mut() {
        let client = &*negotiated.client_id;
        if !access.may_publish(&will.topic, client) {
            let refusal = crate::session::connect::Refusal {
                reason: ReasonCode::NOT_AUTHORIZED,
                text: "will topic not authorized",
            };
            let _ = writer.write_all(refuse(refusal)).await;
            return None;
        }
        will.topic = access.scope_topic(will.topic.clone());
    }
    // The CONNECT's strings are slices of the read buffer: a client id kept for the session's
    // life (session, registry, owners) would pin that whole buffer. Own copies are a few bytes.
    negotiated.client_id = Str::from(&*negotiated.client_id);
    let scoped_id = access.scope_topic(negotiated.client_id.clone());
    let org = access.org;
    negotiated.link.access = access;

    // 4. Claim the client id at its home shard; wait for the session (or nothing) to arrive.
    let owner = admitted
        .principal
        .as_ref()
        .map_or(0, |principal| principal.owner());
    let (claimed, clean_start) = (scoped_id.clone(), negotiated.clean_start);
    let (token, granted) = handle
        .call(move |s| s.begin_connect(claimed, clean_start, owner, Instant::now()))
        .await?;
    let (state, resume) = match monoio::time::timeout(GRANT_TIMEOUT, granted.wait()).await {
        Ok(Granted::Session(state, resume)) => (state, resume),
        Ok(Granted::Refused) => {
            let refusal = crate::session::connect::Refusal {
                reason: ReasonCode::NOT_AUTHORIZED,
                text: "client id in use by another user's session",
            };
            let _ = writer.write_all(refuse(refusal)).await;
            return None;
        }
        Ok(Granted::Superseded) => {
            tracing::debug!(client_id = %negotiated.client_id, "connection superseded before CONNACK");
            return None;
        }
        Err(_) => {
            tracing::warn!(client_id = %negotiated.client_id, "no grant from the home shard");
            handle.post(move |s| s.end_pending(token));
            return None;
        }
    };

    Some(Handshake {
        negotiated,
        scoped_id,
        token,
        state,
        resume,
        admitted: (org, admitted.principal),
    })
}

/// What a completed handshake hands to the connection.
pub(super) struct Handshake {
    pub(super) negotiated: crate::session::connect::Negotiated,
    /// The client id as registered and routed (in the org's scope).
    pub(super) scoped_id: crate::mqtt::Str,
    pub(super) token: u64,
    pub(super) state: Option<Box<crate::session::SessionState>>,
    /// The session stayed in place on this shard (see `PendingConnect::resume`).
    pub(super) resume: Option<(Slot, u32)>,
    pub(super) admitted: (u32, Option<Rc<Principal>>),
}

/// The protocol level a (possibly malformed) CONNECT at the front of `buf` declares, if readable.
pub(super) fn declared_level(buf: &[u8]) -> Option<u8> {
    let first = *buf.first()?;
    if first >> 4 != 1 {
        return None;
    }
    // Skip the remaining-length varint (at most 4 bytes) without trusting its value.
    let mut index = 1;
    while index < 5 && buf.get(index)? & 0x80 != 0 {
        index += 1;
    }
    let rest = buf.get(index + 1..)?;
    let name_len = usize::from(u16::from_be_bytes([*rest.first()?, *rest.get(1)?]));
    rest.get(2 + name_len).copied()
}

pub(super) fn assign_client_id(conn_id: u64) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    format!(
        "ringmq-{:016x}{:08x}",
        nanos ^ conn_id.rotate_left(17),
        conn_id as u32
    )
}
