"""Persistent sessions (v3.1.1 clean session 0, v5 Session Expiry) with offline queueing up to the
configured bound, session expiry, and session takeover across shards."""

import time

import pytest

import mqttraw as mr
from helpers import assert_in_order, is_ringmq, unique


def _persist(version, expiry=60):
    return {"clean": False, "session_expiry": expiry} if version == 5 else {"clean": False}


def test_offline_queue_qos1_qos2(connect, version):
    cid = unique("off")
    sub = connect(cid, version=version, **_persist(version))
    sub.subscribe("off/q1", qos=1)
    sub.subscribe("off/q2", qos=2)
    sub.disconnect()

    pub = connect(version=version)
    for i in range(3):
        pub.publish("off/q1", b"one-%d" % i, qos=1)
    for i in range(2):
        pub.publish("off/q2", b"two-%d" % i, qos=2)

    back = connect(cid, version=version, **_persist(version))  # may land on the other shard
    assert back.session_present
    got = back.get_n(5)
    assert [m.payload for m in got if m.topic == "off/q1"] == [b"one-0", b"one-1", b"one-2"]
    assert [m.payload for m in got if m.topic == "off/q2"] == [b"two-0", b"two-1"]
    assert {m.topic: m.qos for m in got} == {"off/q1": 1, "off/q2": 2}
    back.expect_none(0.3)


def test_offline_queue_keeps_order_of_many(connect, version):
    cid = unique("offo")
    sub = connect(cid, version=version, **_persist(version))
    sub.subscribe("offo/t", qos=1)
    sub.disconnect()
    pub = connect(version=version)
    n = 200
    for i in range(n):
        pub.publish("offo/t", b"%06d" % i, qos=1, wait=(i == n - 1))
    back = connect(cid, version=version, **_persist(version))
    assert_in_order(back.get_n(n, timeout=15), n)


@pytest.mark.broker_config(limits={"offline_queue_max": 5})
def test_offline_queue_bound(connect, version):
    cid = unique("bound")
    sub = connect(cid, version=version, **_persist(version))
    sub.subscribe("bound/t", qos=1)
    sub.disconnect()
    pub = connect(version=version)
    for i in range(10):
        pub.publish("bound/t", b"%d" % i, qos=1)
    back = connect(cid, version=version, **_persist(version))
    got = back.drain(1.5)
    # The bound holds the first five; the overflow is not delivered.
    assert [m.payload for m in got] == [b"0", b"1", b"2", b"3", b"4"], [m.payload for m in got]


def test_clean_session_has_no_offline_queue(connect, version):
    cid = unique("clean")
    sub = connect(cid, version=version, clean=True)
    sub.subscribe("clean/t", qos=1)
    sub.disconnect()
    connect(version=version).publish("clean/t", b"x", qos=1)
    back = connect(cid, version=version, clean=False)
    assert not back.session_present
    back.expect_none(0.5)


def test_v5_session_expiry_elapses(connect):
    cid = unique("exp")
    sub = connect(cid, clean=False, session_expiry=1)
    sub.subscribe("exp/t", qos=1)
    sub.disconnect()
    connect().publish("exp/t", b"too late", qos=1)
    time.sleep(2.2)
    back = connect(cid, clean=False, session_expiry=60)
    assert back.session_present is False, "the session expired after 1s"
    back.expect_none(0.5)
    # and the subscription went with it
    connect().publish("exp/t", b"after", qos=1)
    back.expect_none(0.5)


def test_v5_session_expiry_not_yet_elapsed(connect):
    cid = unique("keep")
    sub = connect(cid, clean=False, session_expiry=5)
    sub.subscribe("keep/t", qos=1)
    sub.disconnect()
    connect().publish("keep/t", b"kept", qos=1)
    time.sleep(1.0)
    back = connect(cid, clean=False, session_expiry=5)
    assert back.session_present
    assert back.get().payload == b"kept"


def test_v5_session_expiry_zero_ends_at_disconnect(connect):
    cid = unique("zero")
    sub = connect(cid, clean=False, session_expiry=0)
    sub.subscribe("zero/t", qos=1)
    sub.disconnect()
    back = connect(cid, clean=False, session_expiry=0)
    assert back.session_present is False


def test_takeover(connect, version):
    cid = unique("take")
    first = connect(cid, version=version, **_persist(version))
    first.subscribe("take/t", qos=1)
    second = connect(cid, version=version, **_persist(version))  # next accept: the other shard
    rc = first.wait_disconnected(timeout=5)
    if version == 5 and is_ringmq():  # mosquitto 2.0.11 closes without a DISCONNECT
        assert rc == 0x8E, f"want DISCONNECT 0x8E Session taken over, got {rc!r}"
    assert second.session_present, "the persistent session moved to the new connection"
    pub = connect(version=version)
    pub.publish("take/t", b"to-the-new-one", qos=1)
    assert second.get().payload == b"to-the-new-one"
    first.expect_none(0.3)


def test_takeover_raw_bytes_v5(raw, connect):
    cid = unique("takeraw")
    a = raw(5)
    a.connect(cid, clean=False, props={"session_expiry_interval": 60})
    a.subscribe("tr/t", qos=1)
    b = raw(5)
    ack = b.connect(cid, clean=False, props={"session_expiry_interval": 60})
    assert ack.session_present
    got = a.expect_closed(5)
    if is_ringmq():  # mosquitto 2.0.11 closes the old connection without a DISCONNECT
        assert got and got[-1].type == mr.DISCONNECT and got[-1].reason_code == 0x8E, got
    connect().publish("tr/t", b"x", qos=1)
    assert b.expect(mr.PUBLISH).payload == b"x"


def test_takeover_moves_unacked_messages(raw, connect, version):
    cid = unique("takeinf")
    props = {"session_expiry_interval": 60} if version == 5 else None
    a = raw(version)
    a.connect(cid, clean=False, props=props)
    a.subscribe("ti/t", qos=1)
    connect(version=version).publish("ti/t", b"unacked", qos=1)
    first = a.expect(mr.PUBLISH)  # never acknowledged
    b = raw(version)
    assert b.connect(cid, clean=False, props=props).session_present
    again = b.expect(mr.PUBLISH, timeout=5)
    assert again.payload == b"unacked" and again.dup and again.packet_id == first.packet_id
    b.ack(again)


def test_takeover_with_clean_start_drops_subscriptions(connect, version):
    cid = unique("takeclean")
    first = connect(cid, version=version, **_persist(version))
    first.subscribe("tc/t", qos=1)
    second = connect(cid, version=version, clean=True)
    first.wait_disconnected(5)
    assert not second.session_present
    connect(version=version).publish("tc/t", b"x", qos=1)
    second.expect_none(0.5)


def test_takeover_repeated_alternating_shards(connect, version):
    cid = unique("flip")
    clients = []
    for _ in range(4):
        c = connect(cid, version=version, **_persist(version))
        if clients:
            clients[-1].wait_disconnected(5)
        clients.append(c)
    clients[-1].subscribe("flip/t", qos=1)
    connect(version=version).publish("flip/t", b"last", qos=1)
    assert clients[-1].get().payload == b"last"
