"""CONNECT/CONNACK, clean start and session present, keep-alive, PINGREQ, DISCONNECT both ways, the
CONNECT deadline, client identifiers and the v5 CONNACK properties."""

import time

import httpx
import pytest

import mqttraw as mr
from helpers import is_ringmq, unique


def test_connect_connack(connect, version):
    c = connect(version=version)
    assert c.connack_rc == 0
    assert c.session_present is False


def test_connect_raw_connack_bytes(raw, version):
    r = raw(version)
    ack = r.connect(unique("raw"))
    assert ack.reason_code == 0 and not ack.session_present
    r.ping()


def _persistent_kw(version):
    # v3.1.1: clean session 0; v5: clean start 0 plus a session expiry so the session outlives the link
    return {"clean": False, "session_expiry": 60} if version == 5 else {"clean": False}


def test_clean_start_and_session_present(connect, version):
    cid = unique("sp")
    c = connect(cid, version=version, **_persistent_kw(version))
    assert c.session_present is False, "a brand new session must not be 'present'"
    c.subscribe("sp/t", qos=1)
    c.disconnect()

    c = connect(cid, version=version, **_persistent_kw(version))
    assert c.session_present is True, "the persistent session should still exist"
    c.disconnect()

    c = connect(cid, version=version, clean=True)
    assert c.session_present is False, "clean start discards the session"
    c.disconnect()

    c = connect(cid, version=version, **_persistent_kw(version))
    assert c.session_present is False, "the clean connection replaced the old session"


def test_clean_start_discards_subscriptions(connect, version):
    cid = unique("cs")
    c = connect(cid, version=version, **_persistent_kw(version))
    c.subscribe("cs/t", qos=1)
    c.disconnect()
    c = connect(cid, version=version, clean=True)
    pub = connect(version=version)
    pub.publish("cs/t", b"x", qos=1)
    c.expect_none(0.5)


def _will(topic):
    return {"topic": topic, "payload": b"gone", "qos": 1}


def test_keepalive_timeout_closes_and_fires_will(connect, raw, version):
    watcher = connect(version=version)
    watcher.subscribe("will/ka", qos=1)
    r = raw(version)
    r.connect(unique("ka"), keepalive=1, will=_will("will/ka"))
    t0 = time.monotonic()
    got = r.expect_closed(timeout=9)
    elapsed = time.monotonic() - t0
    # The spec allows closing after 1.5 x keep-alive; earlier than the keep-alive itself is wrong.
    # mosquitto checks keep-alives only every few seconds, so it gets a looser upper bound.
    upper = 3.0 if is_ringmq() else 8.0
    assert 0.9 <= elapsed <= upper, f"closed after {elapsed:.2f}s for keep-alive 1s"
    if version == 5 and got:
        assert got[-1].type == mr.DISCONNECT and got[-1].reason_code == 0x8D, got  # Keep Alive timeout
    m = watcher.get(timeout=3)
    assert (m.topic, m.payload) == ("will/ka", b"gone")


def test_pingreq_keeps_connection_alive(raw, version):
    r = raw(version)
    r.connect(unique("ping"), keepalive=1)
    end = time.monotonic() + 3.2
    while time.monotonic() < end:
        r.ping(timeout=2)
        time.sleep(0.4)
    r.ping()  # still open after 3x the keep-alive


def test_normal_disconnect_does_not_fire_will(connect, version):
    watcher = connect(version=version)
    watcher.subscribe("will/normal", qos=1)
    c = connect(version=version, will=_will("will/normal"))
    c.disconnect()
    watcher.expect_none(1.0)


def test_v5_disconnect_with_will_message_fires_will(connect):
    watcher = connect()
    watcher.subscribe("will/0x04", qos=1)
    c = connect(will=_will("will/0x04"))
    c.disconnect(reason_code=0x04)  # Disconnect with Will Message
    m = watcher.get(timeout=3)
    assert (m.topic, m.payload) == ("will/0x04", b"gone")


def test_v5_disconnect_reason_code_normal_no_will(raw, connect):
    watcher = connect()
    watcher.subscribe("will/rc0", qos=1)
    r = raw(5)
    r.connect(unique("rc0"), will=_will("will/rc0"))
    r.send(mr.disconnect_packet(0x00, {"reason_string": "bye"}))
    r.expect_closed(3)
    watcher.expect_none(1.0)


def test_v5_disconnect_with_session_expiry_update(raw):
    # A client may raise a non-zero session expiry at DISCONNECT; the session is then kept.
    cid = unique("dse")
    r = raw(5)
    r.connect(cid, clean=True, props={"session_expiry_interval": 30})
    r.send(mr.disconnect_packet(0x00, {"session_expiry_interval": 60}))
    r.expect_closed(3)
    r2 = raw(5)
    ack = r2.connect(cid, clean=False, props={"session_expiry_interval": 60})
    assert ack.session_present


@pytest.mark.ringmq_only  # mosquitto has no CONNECT deadline setting
@pytest.mark.broker_config(limits={"connect_timeout_ms": 500})
def test_connect_deadline_closes_silent_socket(broker, connect, raw):
    r = raw(5)
    t0 = time.monotonic()
    r.expect_closed(timeout=4)
    elapsed = time.monotonic() - t0
    assert 0.3 <= elapsed <= 3.0, f"silent socket closed after {elapsed:.2f}s, connect_timeout_ms=500"
    # Others are unaffected.
    sub = connect()
    sub.subscribe("dl/t", qos=1)
    connect().publish("dl/t", b"ok", qos=1)
    assert sub.get().payload == b"ok"


@pytest.mark.ringmq_only
@pytest.mark.broker_config(limits={"connect_timeout_ms": 500})
def test_connect_deadline_partial_connect(raw):
    r = raw(5)
    r.send(mr.connect_packet(unique("half"))[:6])  # half a CONNECT, then silence
    r.expect_closed(timeout=4)


def test_v5_assigned_client_identifier(raw):
    ids = set()
    for _ in range(2):
        r = raw(5)
        ack = r.connect("")
        assigned = ack.props.get("assigned_client_identifier")
        assert assigned, f"CONNACK without Assigned Client Identifier: {ack!r}"
        ids.add(assigned)
        r.ping()
    assert len(ids) == 2, "two empty-id clients got the same identifier"


def test_v5_assigned_client_identifier_with_paho(connect):
    c = connect("", version=5)
    assert c.connack_props.get("assigned_client_identifier")
    c.subscribe("assigned/t", qos=1)
    c.publish("assigned/t", b"me", qos=1)
    assert c.get().payload == b"me"


def test_v311_empty_client_id_clean_session(raw):
    r = raw(4)
    ack = r.connect("", clean=True)
    assert ack.reason_code == 0
    r.ping()


def test_v311_empty_client_id_persistent_refused(raw):
    r = raw(4)
    ack = r.connect("", clean=False, expect_ok=False)
    assert ack.reason_code == 0x02, f"want CONNACK 0x02 identifier rejected, got {ack!r}"
    r.expect_closed(3)


def test_unsupported_protocol_level(raw):
    r = raw(4)
    body = mr.s16(b"MQTT") + bytes([9, 0x02]) + b"\x00\x3c" + mr.s16(b"lvl9")
    r.send(mr.packet(0x10, body))
    got = r.expect_closed(3)
    if got:
        assert got[0].type == mr.CONNACK and got[0].reason_code in (0x01, 0x84), got


@pytest.mark.broker_config(profile="conformance")
def test_server_keep_alive_conformance_profile(raw):
    r = raw(5)
    ack = r.connect(unique("ska"), keepalive=120)
    assert ack.props.get("server_keep_alive") == 60, f"want Server Keep Alive 60: {ack!r}"
    r2 = raw(5)
    ack2 = r2.connect(unique("ska"), keepalive=30)
    assert ack2.props.get("server_keep_alive", 30) == 30, ack2


@pytest.mark.broker_config(limits={"topic_alias_max": 10})
def test_topic_alias_maximum_in_connack(raw):
    ack = raw(5).connect(unique("tam"))
    assert ack.props.get("topic_alias_maximum") == 10, ack


def test_v5_connack_capabilities(raw):
    ack = raw(5).connect(unique("cap"))
    # QoS 2 supported: Maximum QoS must be absent (only 0 or 1 may be sent).
    assert "maximum_qos" not in ack.props, ack
    for flag in ("retain_available", "wildcard_subscription_available",
                 "subscription_identifier_available", "shared_subscription_available"):
        assert ack.props.get(flag, 1) == 1, f"{flag} should be available: {ack!r}"
    assert ack.props.get("receive_maximum", 65535) >= 1


@pytest.mark.ringmq_only  # mosquitto's max_inflight_messages is outbound only
@pytest.mark.broker_config(limits={"inflight_max": 10})
def test_receive_maximum_enforced(raw):
    r = raw(5)
    ack = r.connect(unique("rm"))
    assert ack.props.get("receive_maximum") == 10, ack
    # 10 unreleased QoS 2 publishes fill the window; the 11th exceeds it.
    for i in range(1, 11):
        r.send(mr.publish_packet("rm/t", b"x", qos=2, packet_id=i))
        assert r.expect(mr.PUBREC).packet_id == i
    r.send(mr.publish_packet("rm/t", b"x", qos=2, packet_id=11))
    got = r.expect_closed(3)
    assert got and got[-1].type == mr.DISCONNECT and got[-1].reason_code == 0x93, got


@pytest.mark.ringmq_only
def test_healthz(broker):
    resp = httpx.get(f"http://{broker.host}:{broker.http_port}/healthz", timeout=5)
    assert resp.status_code == 200
    assert resp.text.strip() == "ok"


def test_mqtt_31_protocol(raw):
    """MQTT 3.1 (protocol name MQIsdp, level 3) clients still connect and exchange messages."""
    sub = raw(3)
    ack = sub.connect(unique("v31s")[:23])  # 3.1 limits client ids to 23 bytes
    assert ack.reason_code == 0
    sub.subscribe("v31/t", qos=1)
    pub = raw(3)
    pub.connect(unique("v31p")[:23])
    pub.publish("v31/t", b"old but gold", qos=1)
    p = sub.expect(mr.PUBLISH)
    assert (p.topic, p.payload, p.qos) == ("v31/t", b"old but gold", 1)
    sub.ack(p)
