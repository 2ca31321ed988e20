//! One MQTT connection on a shard: a reader task (CONNECT, then packets into the session) and a
//! writer task (coalesced writes of the session's outbox).

use std::rc::Rc;
use std::time::Instant;

use bytes::BytesMut;
use ringmq_io::{ConnReader, ConnStream};

use super::mailbox::ShardHandle;
use super::shard::Shard;
use crate::mqtt::Packet;
use crate::session::connect::connack_accepted;

mod handshake;
pub mod link;
pub mod parked;
mod read;
mod write;

pub use link::ConnShared;
pub use parked::Parked;
pub use read::{doze_parked, unpark_loop};

use handshake::{handshake, Handshake};
use link::Half;
use parked::{Connected, ReadRoom};
use read::{read_loop, LiveGuard};

/// Serves one accepted MQTT connection (plain or TLS) until it closes. `foreign_origin`: a
/// browser page of another origin opened it (over WebSocket), so it may not log in anonymously.
pub async fn serve(
    handle: Rc<ShardHandle>,
    stream: ConnStream,
    conn_id: u64,
    foreign_origin: bool,
) {
    let guard = LiveGuard::count(&handle);
    // Boxed: the handshake's locals would otherwise keep their room in this task's future (a
    // generator keeps storage for locals live across any of its awaits, even after they are
    // moved out). This task ends at the first park; a quiet connection then has no task at
    // all, only its `Parked` state in the shard's park set.
    let Some((conn, reader, buf, link)) =
        Box::pin(connect(&handle, stream, conn_id, foreign_origin)).await
    else {
        return;
    };
    conn.spare_reader.set(Some(reader));
    let parked = Parked {
        conn,
        link,
        since: None,
    };
    read_loop(handle, parked, buf, guard).await;
}

/// Handshake, session install and CONNACK: the connection's setup, up to the read loop.
async fn connect(
    handle: &Rc<ShardHandle>,
    stream: ConnStream,
    conn_id: u64,
    foreign_origin: bool,
) -> Option<(Rc<ConnShared>, ConnReader, BytesMut, Connected)> {
    let settings = &handle.settings;
    let rules = Rc::clone(&handle.rules);
    let fd = stream.fd();
    let peer = stream.peer_addr().map(|addr| addr.ip());
    let identity = stream.peer_common_name();
    let (mut reader, mut writer) = stream.into_split();
    let mut buf = BytesMut::with_capacity(settings.read_buffer_bytes);

    // Not boxed on its own: `connect` is boxed as a whole and freed once the connection is up.
    let handshake = handshake(
        handle,
        &mut reader,
        &mut writer,
        &mut buf,
        (conn_id, peer, identity.as_deref(), foreign_origin),
    );
    let Some(Handshake {
        negotiated,
        scoped_id,
        token,
        state,
        resume,
        admitted,
    }) = handshake.await
    else {
        // A layered transport says why it ends (a WebSocket close frame; TLS close_notify).
        writer.close_notify().await;
        return None;
    };
    let version = negotiated.link.version;
    let client_id = negotiated.client_id.clone();

    // 4. Install the session, answer CONNACK, resume.
    let mut conn = ConnShared::new(conn_id, fd);
    conn.identity = identity.map(|cn| Box::new(cn.into_boxed_str()));
    let conn = Rc::new(conn);
    let installing = Rc::clone(&conn);
    let install = move |s: &mut Shard| {
        let now = Instant::now();
        let (slot, present) = s.install_session(
            super::shard::NewSession {
                client_id: scoped_id,
                token,
                state,
                clean_start: negotiated.clean_start,
                expiry_interval_secs: negotiated.expiry_interval_secs,
                conn: installing.id,
                org: admitted.0,
                principal: admitted.1,
                resume,
            },
            &installing,
            now,
        );
        let ack = connack_accepted(&negotiated, present, &rules);
        let entry = s.entry_mut(slot)?;
        entry.session.write_packet(&Packet::ConnAck(ack), version);
        entry.session.attach(negotiated.link, present, now, &rules);
        s.arm_keep_alive(slot, installing.id);
        s.flush(now);
        Some(slot)
    };
    let slot = handle.call(install).await.flatten()?;
    tracing::debug!(%client_id, slot, "connected");
    conn.half.set(Half::Idle(writer));
    let host: std::rc::Weak<dyn link::WriterHost> = Rc::downgrade(handle) as _;
    let _ = conn.owner.set((host, slot));
    conn.wake_writer();
    let link = Connected {
        slot,
        version,
        packet_size_max: settings.packet_size_max,
        room: ReadRoom::new(settings.read_buffer_bytes, settings.read_budget_bytes),
    };
    Some((conn, reader, buf, link))
}

#[cfg(test)]
mod size_tests {
    use std::mem::size_of;

    #[test]
    fn idle_connection_parts_stay_small() {
        // An idle connection holds one of each (memory per idle connection): a field added
        // here costs every connection of a fleet. 144 + the Rc's 16 fills the 160-byte class
        // exactly (the writer host is a fat `Weak<dyn WriterHost>`, so the shared half needs
        // nothing of the shard).
        assert!(
            size_of::<super::ConnShared>() <= 144,
            "{}",
            size_of::<super::ConnShared>()
        );
        assert!(
            size_of::<super::Parked>() <= 56,
            "{}",
            size_of::<super::Parked>()
        );
        assert!(size_of::<super::super::shard::Entry>() <= 352);
    }
}
