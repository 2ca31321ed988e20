"""Retained messages: set, replace, clear with an empty payload, delivery on (wildcard) subscribe on
either shard, v5 Retain Handling 0/1/2 and Retain As Published."""

import time

import pytest

import mqttraw as mr
from helpers import unique


def test_retained_delivered_on_subscribe_both_shards(connect, version):
    pub = connect(version=version)
    pub.publish("ret/t", b"kept", qos=1, retain=True)
    # Two subscribers connected one after the other: one of them is on the publisher's shard,
    # the other is not.
    for _ in range(2):
        sub = connect(version=version)
        sub.subscribe("ret/t", qos=1)
        m = sub.get()
        assert (m.topic, m.payload, m.retain) == ("ret/t", b"kept", True)
        sub.expect_none(0.3)


def test_retained_replace(connect, version):
    pub = connect(version=version)
    pub.publish("ret/r", b"old", qos=1, retain=True)
    pub.publish("ret/r", b"new", qos=1, retain=True)
    sub = connect(version=version)
    sub.subscribe("ret/r", qos=1)
    assert sub.get().payload == b"new"
    sub.expect_none(0.3)


def test_retained_clear_with_empty_payload(connect, version):
    pub = connect(version=version)
    pub.publish("ret/c", b"doomed", qos=1, retain=True)
    pub.publish("ret/c", b"", qos=1, retain=True)
    sub = connect(version=version)
    sub.subscribe("ret/c", qos=1)
    sub.expect_none(0.5)
    sub.subscribe("ret/#", qos=1)
    sub.expect_none(0.3)


def test_retained_wildcard_subscribe_matches_several(connect, version):
    pub = connect(version=version)
    want = {"rw/1": b"one", "rw/2": b"two", "rw/x/3": b"three", "rw/x/y/4": b"four"}
    for t, p in want.items():
        pub.publish(t, p, qos=1, retain=True)
    pub.publish("other/5", b"five", qos=1, retain=True)
    sub = connect(version=version)
    sub.subscribe("rw/#", qos=1)
    got = sub.get_n(len(want))
    assert {m.topic: m.payload for m in got} == want
    assert all(m.retain for m in got)
    sub.expect_none(0.3)
    sub2 = connect(version=version)
    sub2.subscribe("rw/+", qos=1)
    assert {m.topic for m in sub2.get_n(2)} == {"rw/1", "rw/2"}
    sub2.expect_none(0.3)


def test_retained_qos_is_min_of_stored_and_granted(connect, version):
    pub = connect(version=version)
    pub.publish("rq/t", b"q2", qos=2, retain=True)
    sub = connect(version=version)
    sub.subscribe("rq/t", qos=1)
    m = sub.get()
    assert m.qos == 1 and m.retain


def test_live_message_to_existing_subscriber_has_retain_0(connect, version):
    sub = connect(version=version)
    sub.subscribe("rl/t", qos=1)
    pub = connect(version=version)
    pub.publish("rl/t", b"live", qos=1, retain=True)
    m = sub.get()
    assert m.payload == b"live" and m.retain is False  # v3.1.1 rule; v5 with RAP=0


def test_retained_not_delivered_by_dollar_wildcard(connect, version):
    pub = connect(version=version)
    pub.publish("$rt/x", b"dollar", qos=1, retain=True)
    pub.publish("rd/x", b"plain", qos=1, retain=True)
    sub = connect(version=version)
    sub.subscribe("#", qos=1)
    got = [m for m in sub.drain(0.8) if not m.topic.startswith("$SYS")]
    assert [m.topic for m in got] == ["rd/x"]


def test_v5_retain_handling_0_sends_on_every_subscribe(connect):
    connect().publish("rh/0", b"r", qos=1, retain=True)
    sub = connect()
    sub.subscribe("rh/0", qos=1, retain_handling=0)
    assert sub.get().retain
    sub.subscribe("rh/0", qos=1, retain_handling=0)
    assert sub.get().retain


def test_v5_retain_handling_1_only_new_subscription(connect):
    connect().publish("rh/1", b"r", qos=1, retain=True)
    sub = connect()
    sub.subscribe("rh/1", qos=1, retain_handling=1)
    assert sub.get().payload == b"r"
    sub.subscribe("rh/1", qos=1, retain_handling=1)
    sub.expect_none(0.5)


def test_v5_retain_handling_2_never(connect):
    connect().publish("rh/2", b"r", qos=1, retain=True)
    sub = connect()
    sub.subscribe("rh/2", qos=1, retain_handling=2)
    sub.expect_none(0.5)
    # Later live messages still arrive.
    connect().publish("rh/2", b"live", qos=1)
    assert sub.get().payload == b"live"


def test_v5_retain_as_published(connect):
    rap = connect()
    rap.subscribe("rap/t", qos=1, retain_as_published=True)
    norap = connect()
    norap.subscribe("rap/t", qos=1, retain_as_published=False)
    pub = connect()
    pub.publish("rap/t", b"flagged", qos=1, retain=True)
    pub.publish("rap/t", b"plain", qos=1, retain=False)
    a = rap.get_n(2)
    assert [(m.payload, m.retain) for m in a] == [(b"flagged", True), (b"plain", False)]
    b = norap.get_n(2)
    assert [(m.payload, m.retain) for m in b] == [(b"flagged", False), (b"plain", False)]


def test_v5_retained_message_keeps_properties(raw, connect):
    pub = connect()
    pub.publish("rp/t", b"{}", qos=1, retain=True,
                props={"ContentType": "application/json", "UserProperty": [("k", "v")]})
    sub = raw(5)
    sub.connect(unique("rp"))
    sub.subscribe("rp/t", qos=1)
    p = sub.expect(mr.PUBLISH)
    assert p.retain and p.payload == b"{}"
    assert p.props.get("content_type") == "application/json"
    assert p.props.get("user_property") == [("k", "v")]


@pytest.mark.parametrize("qos", [0, 1])
def test_retained_message_expiry(connect, qos):
    pub = connect()
    pub.publish("rx/t", b"short", qos=1, retain=True, props={"MessageExpiryInterval": 1})
    time.sleep(1.6)
    sub = connect()
    sub.subscribe("rx/t", qos=qos)
    sub.expect_none(0.5)

