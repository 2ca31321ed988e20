"""Durability: retained messages and persistent sessions (subscriptions, queued and in-flight
messages, expiry) survive a restart in `periodic` mode (the default), also a kill -9 once a sync
interval has passed and a change of the shard count; `memory` forgets; a torn last record is cut
off, damage in the middle stops the start unless --repair."""

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

import mqttraw as mr
from helpers import Client, is_ringmq, unique

pytestmark = pytest.mark.skipif(not is_ringmq(), reason="ringmq's durability modes and logs")


def wait_ports_free(broker, timeout: float = 5.0) -> None:
    """After a kill -9 the kernel tears the io_uring instance down asynchronously: its pending
    accepts keep the listening ports for a moment."""
    deadline = time.monotonic() + timeout
    for port in (broker.port, broker.http_port):
        while True:
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((broker.host, port))
                break
            except OSError:
                assert time.monotonic() < deadline, f"port {port} still bound"
                time.sleep(0.05)
            finally:
                s.close()


def logs(broker) -> list[Path]:
    return sorted((broker.data_dir / "journal").glob("gen-*/shard-*.log"))


def raw(broker, client_id: str, expiry: int = 600, clean: bool = False):
    r = broker.raw(5)
    ack = r.connect(client_id, clean=clean, props={"session_expiry_interval": expiry})
    return r, ack


def subscribe_offline(broker, client_id: str, *filters, qos: int = 1, expiry: int = 600):
    r, _ = raw(broker, client_id, expiry)
    r.subscribe(*filters, qos=qos)
    r.disconnect()


def publish(broker, topic: str, payloads, qos: int = 1, retain: bool = False):
    r = broker.raw(5)
    r.connect(unique("pub"))
    for payload in payloads:
        r.publish(topic, payload, qos=qos, retain=retain)
    r.disconnect()


def receive(r, n: int) -> list:
    """The next `n` PUBLISHes, each acknowledged (QoS 2: PUBREC, and PUBCOMP for each PUBREL
    as it comes: the broker may send more PUBLISHes first)."""
    got = []
    while len(got) < n:
        p = r.recv()
        if p.type == mr.PUBREL:
            r.send(mr.ack_packet(mr.PUBCOMP, p.packet_id, version=r.version))
            continue
        assert p.type == mr.PUBLISH, p
        got.append(p)
        if p.qos == 1:
            r.send(mr.ack_packet(mr.PUBACK, p.packet_id, version=r.version))
        elif p.qos == 2:
            r.send(mr.ack_packet(mr.PUBREC, p.packet_id, version=r.version))
    return got


def test_retained_and_queued_messages_survive_sigterm(broker):
    cid = unique("dur")
    subscribe_offline(broker, cid, "dur/q/#", qos=2)
    publish(broker, "dur/r/1", [b"kept"], retain=True)
    publish(broker, "dur/q/a", [b"q1-%d" % i for i in range(5)], qos=1)
    publish(broker, "dur/q/b", [b"q2-%d" % i for i in range(3)], qos=2)

    broker.restart()

    r, ack = raw(broker, cid)
    assert ack.session_present, "the persistent session came back"
    got = receive(r, 8)
    assert [p.payload for p in got if p.topic == "dur/q/a"] == [b"q1-%d" % i for i in range(5)]
    assert [p.payload for p in got if p.topic == "dur/q/b"] == [b"q2-%d" % i for i in range(3)]
    assert {p.topic: p.qos for p in got} == {"dur/q/a": 1, "dur/q/b": 2}
    # Its subscription is in force without a new SUBSCRIBE, on every shard.
    publish(broker, "dur/q/c", [b"after"])
    assert receive(r, 1)[0].payload == b"after"
    r.close()

    w = broker.raw(5)
    w.connect(unique("watch"))
    w.subscribe("dur/r/#")
    p = w.expect(mr.PUBLISH)
    assert (p.topic, p.payload, p.retain) == ("dur/r/1", b"kept", True)
    w.close()


def test_in_flight_messages_are_sent_again_with_dup(broker):
    cid = unique("infl")
    subscribe_offline(broker, cid, "infl/#", qos=1)
    r, _ = raw(broker, cid)
    publish(broker, "infl/x", [b"unacked-0", b"unacked-1"])
    first = [r.expect(mr.PUBLISH) for _ in range(2)]  # received, never acknowledged
    assert [p.payload for p in first] == [b"unacked-0", b"unacked-1"]
    r.abort()
    time.sleep(0.2)

    broker.restart()

    r, ack = raw(broker, cid)
    assert ack.session_present
    again = receive(r, 2)
    assert [(p.payload, p.dup, p.packet_id) for p in again] == [
        (p.payload, True, p.packet_id) for p in first
    ], "the same packet ids, marked DUP"
    r.expect_silence(0.3)
    r.close()


def test_an_ended_session_and_a_cleared_retained_message_stay_gone(broker):
    cid = unique("gone")
    subscribe_offline(broker, cid, "gone/#")
    publish(broker, "gone/r", [b"x"], retain=True)
    publish(broker, "gone/r", [b""], retain=True)  # cleared
    # A clean start ends the stored session.
    r, _ = raw(broker, cid, clean=True, expiry=0)
    r.disconnect()

    broker.restart()

    r, ack = raw(broker, cid)
    assert not ack.session_present
    r.subscribe("gone/#")
    r.expect_silence(0.3)
    r.close()


def test_session_expiry_counts_the_time_the_broker_was_down(broker):
    cid = unique("exp")
    subscribe_offline(broker, cid, "exp/#", expiry=2)
    broker.stop()
    time.sleep(2.5)
    broker.start()
    r, ack = raw(broker, cid)
    assert not ack.session_present, "expired while the broker was down"
    r.close()


@pytest.mark.broker_config(durability={"sync_interval_ms": 100})
def test_kill_9_loses_nothing_older_than_an_interval(broker):
    cid = unique("k9")
    subscribe_offline(broker, cid, "k9/#")
    publish(broker, "k9/q", [b"m%d" % i for i in range(10)])
    publish(broker, "k9/r", [b"kept"], retain=True)
    time.sleep(0.6)  # several sync intervals
    broker.signal(signal.SIGKILL)
    broker.proc.wait(5)
    wait_ports_free(broker)
    broker.start()
    r, ack = raw(broker, cid)
    assert ack.session_present
    got = receive(r, 11)
    assert [p.payload for p in got if p.topic == "k9/q"] == [b"m%d" % i for i in range(10)]
    assert [p.payload for p in got if p.topic == "k9/r"] == [b"kept"], "retained, via t/# match"
    r.close()


@pytest.mark.parametrize("shards", ["1", "3"])
def test_state_is_rehomed_when_the_shard_count_changes(broker, shards):
    cids = [unique("rh") for _ in range(6)]
    for cid in cids:
        subscribe_offline(broker, cid, "rh/" + cid)
        publish(broker, "rh/" + cid, [cid.encode()])
    publish(broker, "rh-r/1", [b"one"], retain=True)

    broker.restart(extra_args=["--shards", shards])

    for cid in cids:
        r, ack = raw(broker, cid)
        assert ack.session_present, cid
        assert receive(r, 1)[0].payload == cid.encode()
        # A new publish from any shard reaches it.
        publish(broker, "rh/" + cid, [b"new"])
        assert receive(r, 1)[0].payload == b"new"
        r.close()
    w = broker.raw(5)
    w.connect(unique("w"))
    w.subscribe("rh-r/#")
    assert w.expect(mr.PUBLISH).payload == b"one"
    w.close()


def test_memory_mode_forgets(broker):
    broker.restart(extra_args=["--durability", "memory"])
    cid = unique("mem")
    subscribe_offline(broker, cid, "mem/#")
    publish(broker, "mem/r", [b"x"], retain=True)
    broker.restart()
    r, ack = raw(broker, cid)
    assert not ack.session_present, "memory mode keeps nothing across a restart"
    r.subscribe("mem/#")
    r.expect_silence(0.3)
    r.close()


def test_a_torn_last_record_is_cut_off(broker):
    cid = unique("torn")
    subscribe_offline(broker, cid, "torn/#")
    publish(broker, "torn/q", [b"kept"])
    broker.stop()
    # A crash while writing: a frame header promising more than was written.
    with open(logs(broker)[0], "ab") as log:
        log.write(b"\x40\x00\x00\x00\xde\xad\xbe\xefpartial")
    broker.start()
    assert "cut short" in broker.log_tail(200)
    r, ack = raw(broker, cid)
    assert ack.session_present
    assert receive(r, 1)[0].payload == b"kept"
    r.disconnect()
    # The log carried on from the cut: what is written after it reads back whole.
    publish(broker, "torn/q", [b"after"])
    broker.stop()
    broker.start()
    r, ack = raw(broker, cid)
    assert ack.session_present
    assert receive(r, 1)[0].payload == b"after"
    r.close()


def test_damage_in_the_middle_stops_the_start_unless_repair(broker):
    cid = unique("dmg")
    subscribe_offline(broker, cid, "dmg/#")
    for i in range(20):
        publish(broker, "dmg/r%d" % i, [b"retained %d" % i], retain=True)
    broker.stop()
    damaged = max(logs(broker), key=lambda p: p.stat().st_size)
    data = bytearray(damaged.read_bytes())
    assert len(data) > 64
    data[12] ^= 0xFF  # inside the first record's payload: later records follow
    damaged.write_bytes(bytes(data))

    out = subprocess.run(broker.command(), capture_output=True, text=True, timeout=30)
    said = out.stdout + out.stderr
    assert out.returncode != 0, said[-2000:]
    assert str(damaged) in said and "--repair" in said, said[-2000:]

    broker.extra_args = ["--repair"]
    broker.start()
    assert "damaged" in broker.log_tail(200)
    w = broker.raw(5)
    w.connect(unique("w"))
    w.ping()
    w.close()


def test_a_paho_session_survives_a_restart(broker, version):
    """The same with paho-mqtt, MQTT 3.1.1 (clean session 0) and 5 (Session Expiry)."""
    persist = {"clean": False, "session_expiry": 600} if version == 5 else {"clean": False}
    cid = unique("paho")
    sub = broker.client(cid, version=version, **persist).connect()
    sub.subscribe("pd/#", qos=1)
    sub.disconnect()
    sub.close()
    pub = broker.client(unique("pp"), version=version).connect()
    pub.publish("pd/a", b"one", qos=1)
    pub.publish("pd/b", b"two", qos=1)
    pub.publish("pdr/x", b"ret", qos=1, retain=True)
    pub.disconnect()
    pub.close()

    broker.restart()

    back = broker.client(cid, version=version, **persist).connect()
    assert back.session_present
    assert [m.payload for m in back.get_n(2)] == [b"one", b"two"]
    back.subscribe("pdr/#", qos=1)
    m = back.get()
    assert (m.topic, m.payload, m.retain) == ("pdr/x", b"ret", True)
    back.close()


@pytest.mark.broker_config(durability={"sync_interval_ms": 50, "compact_log_bytes": 1048576})
def test_a_log_past_its_bound_is_compacted_and_still_complete(broker):
    # Overwriting the same 50 retained topics (over two shards' logs): the logs grow, the live
    # state does not.
    payload = b"x" * 1000
    r = broker.raw(5)
    r.connect(unique("pub"))
    for round_ in range(80):
        for i in range(50):
            r.publish("cmp/%d" % i, payload + b"%d" % round_, qos=1, retain=True)
    r.disconnect()
    deadline = time.monotonic() + 10
    while "log compacted" not in broker.log_tail(400):
        assert time.monotonic() < deadline, broker.log_tail(40)
        time.sleep(0.1)
    # About 4.4 MB was written; each shard's log stays near its 1 MiB bound.
    assert sum(p.stat().st_size for p in logs(broker)) < 2_400_000

    broker.restart()

    w = broker.raw(5)
    w.connect(unique("w"))
    w.subscribe("cmp/#")
    got = {p.topic: p.payload for p in receive(w, 50)}
    assert got == {"cmp/%d" % i: payload + b"79" for i in range(50)}
    w.close()


def kill_9_and_start(broker) -> None:
    broker.signal(signal.SIGKILL)
    broker.proc.wait(5)
    wait_ports_free(broker)
    broker.start()


@pytest.mark.parametrize("shards", ["1", "3"])
@pytest.mark.broker_config(durability={"mode": "sync", "sync_interval_ms": 60000})
def test_sync_mode_loses_nothing_acknowledged_to_kill_9(broker, shards):
    """With a sync interval of a minute, `periodic` would lose all of this to a kill -9: in
    `sync` every PUBACK, PUBREC and REST `qos: 1` answer came after the logs holding the
    message were synced, on every shard (the subscribers' sessions are spread over them)."""
    from test_control_plane import api, root_key

    broker.restart(extra_args=["--shards", shards])
    cids = [unique("sy") for _ in range(4)]
    for cid in cids:
        subscribe_offline(broker, cid, "sy/#", qos=2)
    publish(broker, "sy/q1", [b"a%d" % i for i in range(5)], qos=1)
    publish(broker, "sy/q2", [b"b%d" % i for i in range(3)], qos=2)
    publish(broker, "sy/r", [b"kept"], qos=1, retain=True)
    with api(broker, root_key(broker)) as rest:
        answer = rest.post("/v1/publish", json={"topic": "sy/rest", "payload": "r1", "qos": 1})
        assert answer.status_code == 200, answer.text
        assert answer.json()["matched"] == len(cids)

    kill_9_and_start(broker)

    for cid in cids:
        r, ack = raw(broker, cid)
        assert ack.session_present, cid
        got = receive(r, 10)
        assert [p.payload for p in got if p.topic == "sy/q1"] == [b"a%d" % i for i in range(5)]
        assert [p.payload for p in got if p.topic == "sy/q2"] == [b"b%d" % i for i in range(3)]
        assert [p.payload for p in got if p.topic == "sy/rest"] == [b"r1"]
        assert [p.payload for p in got if p.topic == "sy/r"] == [b"kept"]
        r.close()
    w = broker.raw(5)
    w.connect(unique("w"))
    w.subscribe("sy/r")
    assert w.expect(mr.PUBLISH).payload == b"kept", "the retained message survived"
    w.close()


@pytest.mark.broker_config(durability={"mode": "sync"})
def test_sync_mode_acknowledges_a_stream_of_publishes(broker):
    """Group commit keeps a pipelining publisher moving: 200 QoS 1 publishes in flight at once
    (paho's own flow) are all acknowledged, and a subscriber gets them in order."""
    s = Client(broker.host, broker.port, unique("sys")).connect()
    assert s.subscribe("sys/#", qos=1) == [1]
    p = Client(broker.host, broker.port, unique("syp")).connect()
    infos = [p.publish("sys/x", b"%d" % i, qos=1, wait=False) for i in range(200)]
    for info in infos:
        info.wait_for_publish(10)
        assert info.is_published()
    got = s.get_n(200, timeout=10)
    assert [m.payload for m in got] == [b"%d" % i for i in range(200)]
    p.disconnect()
    s.disconnect()


@pytest.fixture
def small_disk(broker):
    """The broker's data dir on a 4 MiB tmpfs (needs root; skipped where it cannot be mounted)."""
    broker.stop()
    mount = broker.data_dir
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)],
                          capture_output=True)
    if done.returncode != 0:
        broker.start()
        pytest.skip(f"cannot mount a tmpfs: {done.stderr.decode(errors='replace').strip()}")
    try:
        broker.start()
        yield mount
    finally:
        if broker.alive():
            broker.stop()
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(directory: Path) -> Path:
    """Writes a file until the filesystem is full; returns it."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while True:
            os.write(fd, b"\0" * 65536)
    except OSError:
        pass
    finally:
        os.close(fd)
    return filler


def publish_until(r, payload: bytes, want: int, acked: list, timeout: float = 5.0,
                  topic: str = "full/q") -> None:
    """QoS 1 publishes until one is answered with reason `want` (0 or 0x97, the other one on the
    way); the payloads acknowledged with success go to `acked`."""
    deadline = time.monotonic() + timeout
    n = 0
    while True:
        body = b"%s-%d" % (payload, n)
        pid = r.publish(topic, body, qos=1, wait=False)
        ack = r.expect(mr.PUBACK)
        assert ack.packet_id == pid
        if ack.reason_code == 0:
            acked.append(body)
        if ack.reason_code == want:
            return
        assert ack.reason_code in (0, 0x97), ack
        n += 1
        assert time.monotonic() < deadline, f"no PUBACK with reason {want:#x} in {timeout}s"
        time.sleep(0.05)


@pytest.mark.broker_config(durability={"sync_interval_ms": 100})
def test_a_full_disk_refuses_what_it_cannot_keep_and_recovers(broker, small_disk):
    from test_control_plane import api, root_key

    key = root_key(broker)
    cid = unique("full")
    subscribe_offline(broker, cid, "full/#")
    acked = []
    publish(broker, "full/q", [b"before"])
    acked.append(b"before")
    time.sleep(0.3)
    filler = fill(small_disk)
    # The next changes need the log (retained messages at their topics' home shards, more than
    # a log's last page holds): the disk is found full, and every shard refuses.
    for n in range(8):
        publish(broker, f"trigger/{n}", [b"t" * 2048], qos=0, retain=True)
    p5 = broker.raw(5)
    p5.connect(unique("p5"))
    publish_until(p5, b"probe", 0x97, acked)
    refused = p5.publish("full/q", b"refused", qos=2, wait=False)
    rec = p5.expect(mr.PUBREC)
    assert (rec.packet_id, rec.reason_code) == (refused, 0x97)
    # v3 has no negative acknowledgement: the connection is closed, nothing acknowledged.
    p3 = broker.raw(4)
    p3.connect(unique("p3"))
    p3.send(mr.publish_packet("full/q", b"refused-v3", qos=1, packet_id=1, version=4))
    assert all(p.type != mr.PUBACK for p in p3.expect_closed())
    with api(broker, key) as rest:
        answer = rest.post("/v1/publish", json={"topic": "full/q", "payload": "refused", "qos": 1})
        assert answer.status_code == 507, answer.text
        assert answer.json()["error"] == "insufficient_storage"
        # QoS 0 without retain needs no storage: still taken.
        assert rest.post("/v1/publish", json={"topic": "live/x", "payload": "x"}).status_code == 202

    # Room again: the broker finds out by itself.
    filler.unlink()
    publish_until(p5, b"after", 0, acked)
    p5.disconnect()

    broker.restart()
    r, ack = raw(broker, cid)
    assert ack.session_present
    got = [p.payload for p in receive(r, len(acked)) if p.topic == "full/q"]
    r.expect_silence(0.3)
    assert got == acked, "every acknowledged message, and none refused"
    r.close()


@pytest.mark.broker_config(durability={"sync_interval_ms": 100})
def test_wills_of_clients_connected_at_a_kill_9_go_out_after_restart(broker):
    """A crash ends every connection without DISCONNECT: after the restart the wills go out, at
    once for a session that ended with the connection (expiry 0, v3 and v5), at its delay for a
    persistent one; a client that said DISCONNECT before the crash leaves none."""
    watcher = unique("watch")
    subscribe_offline(broker, watcher, "will/#")
    v3 = broker.raw(4)
    v3.connect(unique("w3"), will={"topic": "will/v3", "payload": b"gone-v3", "qos": 1})
    v5 = broker.raw(5)
    v5.connect(unique("w5"), will={"topic": "will/v5", "payload": b"gone-v5", "qos": 1})
    late = broker.raw(5)
    late.connect(unique("wl"), clean=False, props={"session_expiry_interval": 600},
                 will={"topic": "will/late", "payload": b"late", "qos": 1,
                       "props": {"will_delay_interval": 3}})
    polite = broker.raw(5)
    polite.connect(unique("wp"), will={"topic": "will/polite", "payload": b"never", "qos": 1})
    polite.disconnect()
    time.sleep(0.5)  # several sync intervals

    kill_9_and_start(broker)

    r, ack = raw(broker, watcher)
    assert ack.session_present
    got = {p.topic: p.payload for p in receive(r, 2)}
    assert got == {"will/v3": b"gone-v3", "will/v5": b"gone-v5"}, "the delayed one waits"
    p = receive(r, 1)[0]
    assert (p.topic, p.payload) == ("will/late", b"late")
    r.expect_silence(0.3)
    r.close()


@pytest.mark.parametrize("mode", ["periodic", "sync"])
def test_an_idempotency_key_answers_the_same_after_a_restart(broker, mode):
    """A retried REST publish after a restart (SIGTERM in `periodic`, kill -9 in `sync`, whose
    answer waited for the log) gets the first answer again and publishes nothing twice."""
    from test_control_plane import api, root_key

    broker.restart(extra_args=["--durability", mode])
    cid = unique("idem")
    subscribe_offline(broker, cid, "idem/#")
    key = unique("order")
    body = {"topic": "idem/x", "payload": "once", "qos": 1}
    with api(broker, root_key(broker)) as rest:
        first = rest.post("/v1/publish", json=body, headers={"Idempotency-Key": key})
        assert first.status_code == 200, first.text

    if mode == "sync":
        kill_9_and_start(broker)
    else:
        broker.restart()

    with api(broker, root_key(broker)) as rest:
        again = rest.post("/v1/publish", json=body, headers={"Idempotency-Key": key})
        assert (again.status_code, again.json()) == (first.status_code, first.json())
        assert again.headers.get("Idempotent-Replayed") == "true"
        other = rest.post("/v1/publish", json={**body, "payload": "twice"},
                          headers={"Idempotency-Key": key})
        assert other.status_code == 422, other.text
    r, ack = raw(broker, cid)
    assert ack.session_present
    assert [p.payload for p in receive(r, 1)] == [b"once"]
    r.expect_silence(0.3)
    r.close()


@pytest.mark.broker_config(durability={"sync_interval_ms": 100})
def test_a_will_sent_at_a_restart_is_not_sent_again_at_the_next(broker):
    """The logs carry on across starts (same shard count): a session that ended while the
    broker was down (its will sent at the restart) must not come back at the next one."""
    watcher = unique("watch")
    subscribe_offline(broker, watcher, "will2/#")
    gone = broker.raw(5)
    gone.connect(unique("wg"), will={"topic": "will2/gone", "payload": b"once", "qos": 1})
    expiring = unique("we")
    subscribe_offline(broker, expiring, "x/#", expiry=1)
    time.sleep(0.5)  # several sync intervals
    broker.signal(signal.SIGKILL)
    broker.proc.wait(5)
    time.sleep(1.2)  # `expiring` expires while the broker is down
    wait_ports_free(broker)
    broker.start()

    r, ack = raw(broker, watcher)
    assert ack.session_present
    p = receive(r, 1)[0]
    assert (p.topic, p.payload) == ("will2/gone", b"once")
    r.expect_silence(0.3)
    r.disconnect()

    broker.stop()
    broker.start()
    r, ack = raw(broker, watcher)
    assert ack.session_present
    r.expect_silence(0.5)
    r.close()
    r, ack = raw(broker, expiring)
    assert not ack.session_present, "expired while down: it stays ended"
    r.close()


def test_one_shard_restores_its_retained_replica_as_it_reads(broker):
    """With one shard the retained replica is filled straight from the log: the latest record
    of a topic wins, a cleared one stays gone, an expired one is not restored; and it holds
    across a second restart (the log carried on)."""
    broker.restart(extra_args=["--shards", "1"])
    p = broker.raw(5)
    p.connect(unique("pub"))
    p.publish("one/a", b"a1", qos=1, retain=True)
    p.publish("one/a", b"a2", qos=1, retain=True)
    p.publish("one/b", b"b", qos=1, retain=True)
    p.publish("one/b", b"", qos=1, retain=True)
    p.publish("one/c", b"c", qos=1, retain=True, props={"message_expiry_interval": 1})
    p.disconnect()
    time.sleep(1.5)
    for _ in range(2):
        broker.restart()
        w = broker.raw(5)
        w.connect(unique("w"))
        w.subscribe("one/#")
        got = w.expect(mr.PUBLISH)
        assert (got.topic, got.payload) == ("one/a", b"a2")
        w.expect_silence(0.3)
        w.close()


@pytest.mark.broker_config(durability={"sync_interval_ms": 100, "compact_log_bytes": 1 << 20,
                                       "max_log_bytes": 1 << 20})
def test_a_log_at_max_log_bytes_refuses_until_consumers_make_room(broker):
    """A persistent subscriber's queue that outgrows `max_log_bytes` even compacted: QoS 1
    publishes are refused (0x97), nothing acknowledged is lost, and once it drains its queue
    the broker takes publishes again by itself."""
    cid = unique("cap")
    subscribe_offline(broker, cid, "cap/#")
    p = broker.raw(5)
    p.connect(unique("p"))
    acked = []
    publish_until(p, b"x" * 65536, 0x97, acked, timeout=20, topic="cap/q")
    assert 8 <= len(acked) < 200, len(acked)
    assert "max_log_bytes" in broker.log_tail(200)

    r, ack = raw(broker, cid)
    assert ack.session_present
    assert [m.payload for m in receive(r, len(acked))] == acked
    r.disconnect()
    resumed = []
    publish_until(p, b"after", 0, resumed, timeout=15, topic="cap/q")
    p.disconnect()
    # And the log holds what it acknowledged: the last message comes back after a restart.
    broker.restart()
    r, ack = raw(broker, cid)
    assert ack.session_present
    assert [m.payload for m in receive(r, 1)] == resumed
    r.close()


@pytest.mark.broker_config(durability={"mode": "sync", "compact_log_bytes": 1 << 20})
def test_compactions_run_beside_sync_commits_and_lose_nothing(broker):
    """A compaction writes its snapshot while acknowledgements go on: what is written to the
    old log meanwhile is carried into the new one after the snapshot. 2 MB of retained
    messages make each snapshot take a while; a publisher keeps overwriting them and queueing
    for an offline persistent subscriber throughout; after a kill -9 everything acknowledged
    is there."""
    broker.restart(extra_args=["--shards", "1"])
    subscribe_offline(broker, "carry-sub", "q/#", qos=1)
    filler = b"f" * 1000
    r = broker.raw(5)
    r.connect(unique("pub"))
    for i in range(2000):
        r.publish("big/%d" % i, filler, qos=1, retain=True)
    acked = []
    deadline = time.monotonic() + 60
    carried = False
    n = 0
    while not carried:
        assert time.monotonic() < deadline, broker.log_tail(40)
        for _ in range(200):
            r.publish("big/%d" % (n % 2000), filler + b"%d" % n, qos=1, retain=True)
            r.publish("q/x", b"%d" % n, qos=1)
            acked.append(n)
            n += 1
        carried = any(
            "log compacted" in line and "carried=0" not in line
            for line in broker.log_tail(2000).splitlines()
        )
    r.close()

    kill_9_and_start(broker)

    s, ack = raw(broker, "carry-sub")
    assert ack.session_present
    got = [int(p.payload) for p in receive(s, len(acked))]
    assert got == acked
    s.close()
    w = broker.raw(5)
    w.connect(unique("w"))
    w.subscribe("big/#")
    latest = {}
    for k in acked:
        latest["big/%d" % (k % 2000)] = filler + b"%d" % k
    got = {p.topic: p.payload for p in receive(w, 2000)}
    for i in range(2000):
        assert got["big/%d" % i] == latest.get("big/%d" % i, filler), i
    w.close()


@pytest.mark.broker_config(durability={"mode": "sync", "sync_interval_ms": 60000})
def test_sync_mode_keeps_sessions_and_subscriptions_it_acknowledged(broker):
    """In `sync` a new session's CONNACK and a kept session's SUBACK / UNSUBACK leave after the
    logs hold them: a kill -9 right after them (no publish, no interval in between to sync
    them otherwise) takes nothing back."""
    broker.restart(extra_args=["--shards", "2"])
    r, ack = raw(broker, "kept-sub")
    assert not ack.session_present
    r.subscribe("ks/a", "ks/b", qos=1)
    r.unsubscribe("ks/b")
    r.close()
    kill_9_and_start(broker)
    publish(broker, "ks/a", [b"a1"], qos=1)
    publish(broker, "ks/b", [b"b1"], qos=1)
    r, ack = raw(broker, "kept-sub")
    assert ack.session_present, "the session acknowledged by CONNACK survived"
    got = receive(r, 1)
    assert [(p.topic, p.payload) for p in got] == [("ks/a", b"a1")]
    with pytest.raises(TimeoutError):
        r.recv(timeout=0.5)
    r.close()


@pytest.mark.broker_config(durability={"sync_interval_ms": 100})
def test_a_session_connected_at_a_kill_9_is_not_expired_by_its_idle_time(broker):
    """A connected session is checkpointed when it changes, not while it idles: after a crash
    its expiry counts from the start (when the crash came is unknown), not from that last
    checkpoint — which would expire a long-lived connection's session at once."""
    r, _ = raw(broker, "idle-live", expiry=2)
    r.subscribe("il/#", qos=1)
    time.sleep(3)  # idle, connected: longer than the expiry, no change to checkpoint
    kill_9_and_start(broker)
    r.close()
    w, ack = raw(broker, "idle-live", expiry=2)
    assert ack.session_present, "kept: it was connected at the crash"
    w.close()
