"""Wills: fired on an abrupt close (FIN or RST), not on a normal DISCONNECT, retained wills, will
properties, and v5 Will Delay Interval (including a reconnect within the delay)."""

import time

import pytest

import mqttraw as mr
from helpers import unique


def _will(topic, payload=b"offline", qos=1, retain=False, props=None):
    return {"topic": topic, "payload": payload, "qos": qos, "retain": retain, "props": props}


def test_will_on_abrupt_close(connect, version):
    watcher = connect(version=version)
    watcher.subscribe("w/abrupt", qos=1)
    c = connect(version=version, will=_will("w/abrupt"))  # the other shard
    c.drop()
    m = watcher.get(timeout=3)
    assert (m.topic, m.payload, m.qos) == ("w/abrupt", b"offline", 1)


def test_will_on_tcp_reset(connect, raw, version):
    watcher = connect(version=version)
    watcher.subscribe("w/rst", qos=1)
    r = raw(version)
    r.connect(unique("rst"), will=_will("w/rst"))
    r.abort()
    assert watcher.get(timeout=3).payload == b"offline"


def test_no_will_on_normal_disconnect(connect, version):
    watcher = connect(version=version)
    watcher.subscribe("w/normal", qos=1)
    c = connect(version=version, will=_will("w/normal"))
    c.disconnect()
    watcher.expect_none(1.0)


def test_retained_will(connect, version):
    c = connect(version=version, will=_will("w/ret", payload=b"last words", retain=True))
    c.drop()
    time.sleep(0.3)
    late = connect(version=version)
    late.subscribe("w/ret", qos=1)
    m = late.get(timeout=3)
    assert (m.payload, m.retain) == (b"last words", True)


def test_v5_will_properties_passed_through(raw, connect):
    watcher = raw(5)
    watcher.connect(unique("wp"))
    watcher.subscribe("w/props", qos=1)
    c = connect(will=_will("w/props", props={"ContentType": "text/plain", "UserProperty": [("why", "test")],
                                             "ResponseTopic": "w/reply", "CorrelationData": b"\x01\x02"}))
    c.drop()
    p = watcher.expect(mr.PUBLISH, timeout=3)
    assert p.payload == b"offline"
    assert p.props.get("content_type") == "text/plain"
    assert p.props.get("user_property") == [("why", "test")]
    assert p.props.get("response_topic") == "w/reply"
    assert p.props.get("correlation_data") == b"\x01\x02"


def test_v5_will_delay(connect):
    watcher = connect()
    watcher.subscribe("w/delay", qos=1)
    c = connect(unique("wd"), session_expiry=30, will=_will("w/delay", props={"WillDelayInterval": 2}))
    c.drop()
    t0 = time.monotonic()
    watcher.expect_none(1.2)
    m = watcher.get(timeout=4)
    elapsed = time.monotonic() - t0
    assert m.payload == b"offline"
    assert 1.5 <= elapsed <= 4.0, f"will delay 2s, will after {elapsed:.2f}s"


def test_v5_will_delay_cancelled_by_reconnect(connect):
    watcher = connect()
    watcher.subscribe("w/cancel", qos=1)
    cid = unique("wc")
    c = connect(cid, session_expiry=30, will=_will("w/cancel", props={"WillDelayInterval": 2}))
    c.drop()
    time.sleep(0.5)
    back = connect(cid, clean=False, session_expiry=30)  # the same session, within the delay
    assert back.session_present
    watcher.expect_none(3.0)


def test_v5_will_at_session_expiry_when_shorter_than_delay(connect):
    watcher = connect()
    watcher.subscribe("w/exp", qos=1)
    c = connect(unique("we"), session_expiry=1, will=_will("w/exp", props={"WillDelayInterval": 30}))
    c.drop()
    t0 = time.monotonic()
    m = watcher.get(timeout=4)
    elapsed = time.monotonic() - t0
    assert m.payload == b"offline"
    assert elapsed <= 3.0, f"the session ended at 1s; the will came after {elapsed:.2f}s"


@pytest.mark.parametrize("will_qos", [0, 1, 2])
def test_will_qos(connect, version, will_qos):
    watcher = connect(version=version)
    watcher.subscribe("w/qos", qos=2)
    c = connect(version=version, will=_will("w/qos", qos=will_qos))
    c.drop()
    assert watcher.get(timeout=3).qos == will_qos
