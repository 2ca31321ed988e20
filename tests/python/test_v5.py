"""MQTT 5 features: shared subscriptions, topic aliases both ways, message expiry (live and while
queued offline), subscription identifiers, No Local, properties passed through, Maximum Packet Size
both ways, reason strings."""

import time

import pytest

import mqttraw as mr
from helpers import is_ringmq, unique

# -- shared subscriptions ----------------------------------------------------------------------------


def test_shared_subscription_each_message_to_one_member(connect):
    m1 = connect()
    m2 = connect()  # the other shard
    assert m1.subscribe("$share/g/sh/t", qos=1) == [1]
    assert m2.subscribe("$share/g/sh/t", qos=1) == [1]
    plain = connect()
    plain.subscribe("sh/t", qos=1)
    pub = connect()
    n = 100
    for i in range(n):
        pub.publish("sh/t", b"%03d" % i, qos=1, wait=(i == n - 1))
    assert len(plain.get_n(n, timeout=15)) == n  # a normal subscriber still gets everything
    time.sleep(0.3)
    a = m1.drain(0.5)
    b = m2.drain(0.1)
    assert len(a) + len(b) == n, f"{len(a)} + {len(b)} != {n}"
    assert a and b, f"both members should get some: {len(a)} / {len(b)}"
    assert sorted(m.payload for m in a + b) == [b"%03d" % i for i in range(n)], "each message exactly once"
    assert all(m.topic == "sh/t" for m in a + b)


def test_shared_subscription_two_groups(connect):
    g1 = connect()
    g1.subscribe("$share/one/sg/#", qos=1)
    g2 = connect()
    g2.subscribe("$share/two/sg/#", qos=1)
    pub = connect()
    for i in range(10):
        pub.publish("sg/x", b"%d" % i, qos=1)
    assert len(g1.get_n(10)) == 10 and len(g2.get_n(10)) == 10
    g1.expect_none(0.2)


def test_shared_subscription_member_leaves(connect):
    m1 = connect()
    m1.subscribe("$share/g/sl/t", qos=1)
    m2 = connect()
    m2.subscribe("$share/g/sl/t", qos=1)
    m2.unsubscribe("$share/g/sl/t")
    pub = connect()
    for i in range(10):
        pub.publish("sl/t", b"%d" % i, qos=1)
    assert len(m1.get_n(10)) == 10
    m2.expect_none(0.2)


def test_shared_subscription_v311_members(connect):
    # $share is an MQTT 5 feature; brokers commonly accept it from 3.1.1 clients as well.
    m1 = connect(version=4)
    m2 = connect(version=4)
    m1.subscribe("$share/g/s3/t", qos=1)
    m2.subscribe("$share/g/s3/t", qos=1)
    pub = connect(version=4)
    for i in range(20):
        pub.publish("s3/t", b"%d" % i, qos=1)
    time.sleep(0.3)
    assert len(m1.drain(0.5)) + len(m2.drain(0.1)) == 20


# -- topic aliases -----------------------------------------------------------------------------------


@pytest.mark.broker_config(limits={"topic_alias_max": 10})
def test_topic_alias_inbound(raw, connect):
    sub = connect()
    sub.subscribe("ta/#", qos=1)
    pub = raw(5)
    ack = pub.connect(unique("tain"))
    assert ack.props.get("topic_alias_maximum", 0) >= 2
    pub.publish("ta/one", b"1", qos=1, props={"topic_alias": 1})
    pub.publish("", b"2", qos=1, props={"topic_alias": 1})
    pub.publish("ta/two", b"3", qos=1, props={"topic_alias": 2})
    pub.publish("", b"4", qos=1, props={"topic_alias": 2})
    pub.publish("ta/three", b"5", qos=1, props={"topic_alias": 1})  # re-map alias 1
    pub.publish("", b"6", qos=1, props={"topic_alias": 1})
    got = [(m.topic, m.payload) for m in sub.get_n(6)]
    assert got == [("ta/one", b"1"), ("ta/one", b"2"), ("ta/two", b"3"), ("ta/two", b"4"),
                   ("ta/three", b"5"), ("ta/three", b"6")]
    for m in got:
        assert m[0]


@pytest.mark.broker_config(limits={"topic_alias_max": 2})
def test_topic_alias_above_maximum_disconnects(raw, connect):
    pub = raw(5)
    pub.connect(unique("tamax"))
    pub.send(mr.publish_packet("tam/t", b"x", qos=0, props={"topic_alias": 3}))
    got = pub.expect_closed(3)
    if got:
        assert got[-1].type == mr.DISCONNECT and got[-1].reason_code == 0x94, got  # Topic Alias invalid
    elif is_ringmq():
        raise AssertionError("v5: want DISCONNECT 0x94 before the close")


def test_topic_alias_unknown_disconnects(raw):
    pub = raw(5)
    pub.connect(unique("taunk"))
    pub.send(mr.publish_packet("", b"x", qos=0, props={"topic_alias": 1}))
    got = pub.expect_closed(3)
    if is_ringmq():
        assert got and got[-1].type == mr.DISCONNECT and got[-1].reason_code in (0x82, 0x94), got


def _resolve_aliases(packets):
    table, out, used = {}, [], 0
    for p in packets:
        alias = p.props.get("topic_alias")
        topic = p.topic
        if alias is not None:
            if topic:
                table[alias] = topic
            else:
                topic = table[alias]
                used += 1
        out.append((topic, p.payload))
    return out, used


def test_topic_alias_outbound(raw, connect):
    sub = raw(5)
    sub.connect(unique("taout"), props={"topic_alias_maximum": 5})
    sub.subscribe("tao/#", qos=0)
    pub = connect()
    sent = [("tao/a", b"1"), ("tao/a", b"2"), ("tao/b", b"3"), ("tao/a", b"4"), ("tao/b", b"5")]
    for t, p in sent:
        pub.publish(t, p, qos=1)
    packets = [sub.expect(mr.PUBLISH) for _ in sent]
    for p in packets:
        assert p.props.get("topic_alias", 1) <= 5, p
    got, used = _resolve_aliases(packets)
    assert got == sent
    if is_ringmq():  # mosquitto 2.0.11 never uses outbound aliases (paho test_server_topic_alias)
        assert used >= 2, f"the broker should reuse aliases for repeated topics: {packets}"


def test_no_outbound_alias_without_client_maximum(raw, connect):
    sub = raw(5)
    sub.connect(unique("tanone"))
    sub.subscribe("tan/#", qos=0)
    pub = connect()
    for i in range(3):
        pub.publish("tan/a", b"%d" % i, qos=1)
    for _ in range(3):
        p = sub.expect(mr.PUBLISH)
        assert p.topic == "tan/a" and "topic_alias" not in p.props, p


def test_topic_alias_with_paho_subscriber_unaffected(connect):
    # paho does not announce a Topic Alias Maximum, so it must always get full topics.
    sub = connect()
    sub.subscribe("tap/#", qos=1)
    pub = connect()
    for i in range(5):
        pub.publish("tap/x", b"%d" % i, qos=1)
    assert [m.topic for m in sub.get_n(5)] == ["tap/x"] * 5


# -- message expiry ------------------------------------------------------------------------------------


def test_message_expiry_live_passes_interval(raw, connect):
    sub = raw(5)
    sub.connect(unique("mel"))
    sub.subscribe("mel/t", qos=1)
    connect().publish("mel/t", b"x", qos=1, props={"MessageExpiryInterval": 60})
    p = sub.expect(mr.PUBLISH)
    assert 58 <= p.props.get("message_expiry_interval", -1) <= 60, p


def test_message_expiry_while_queued_offline(raw, connect):
    cid = unique("meo")
    s = raw(5)
    s.connect(cid, clean=False, props={"session_expiry_interval": 60})
    s.subscribe("meo/t", qos=1)
    s.disconnect()
    pub = connect()
    pub.publish("meo/t", b"short", qos=1, props={"MessageExpiryInterval": 1})
    pub.publish("meo/t", b"long", qos=1, props={"MessageExpiryInterval": 60})
    pub.publish("meo/t", b"forever", qos=1)
    time.sleep(2.2)
    s2 = raw(5)
    assert s2.connect(cid, clean=False, props={"session_expiry_interval": 60}).session_present
    first = s2.expect(mr.PUBLISH)
    assert first.payload == b"long", f"the 1s message expired while queued: {first!r}"
    interval = first.props.get("message_expiry_interval")
    assert interval is not None and 50 <= interval <= 58, f"expiry not decremented: {first!r}"
    s2.ack(first)
    second = s2.expect(mr.PUBLISH)
    assert second.payload == b"forever" and "message_expiry_interval" not in second.props
    s2.ack(second)
    s2.expect_silence(0.3)


# -- subscription identifiers --------------------------------------------------------------------------


def test_subscription_identifier_single(raw, connect):
    sub = raw(5)
    sub.connect(unique("sid"))
    sub.subscribe("sid/t", qos=1, props={"subscription_identifier": 7})
    sub.subscribe("sid/none", qos=1)
    pub = connect()
    pub.publish("sid/t", b"x", qos=1)
    pub.publish("sid/none", b"y", qos=1)
    a = sub.expect(mr.PUBLISH)
    assert a.props.get("subscription_identifier") == [7], a
    sub.ack(a)
    b = sub.expect(mr.PUBLISH)
    assert "subscription_identifier" not in b.props, b
    sub.ack(b)


def test_subscription_identifiers_overlapping_one_copy(raw, connect):
    sub = raw(5)
    sub.connect(unique("sido"))
    sub.subscribe("sio/+", qos=1, props={"subscription_identifier": 1})
    sub.subscribe("sio/#", qos=1, props={"subscription_identifier": 2})
    connect().publish("sio/x", b"x", qos=1)
    p = sub.expect(mr.PUBLISH)
    sub.ack(p)
    if is_ringmq():  # mosquitto sends one copy per subscription (paho test_subscribe_identifiers)
        assert sorted(p.props.get("subscription_identifier", [])) == [1, 2], p
        sub.expect_silence(0.5)
    else:
        assert p.props.get("subscription_identifier")


def test_subscription_identifier_with_paho(connect):
    sub = connect()
    sub.subscribe("sip/t", qos=1, sub_id=42)
    connect().publish("sip/t", b"x", qos=1)
    assert sub.get().props.get("subscription_identifier") == [42]


# -- No Local, properties ---------------------------------------------------------------------------------


def test_no_local(connect):
    me = connect()
    me.subscribe("nl/t", qos=1, no_local=True)
    me.subscribe("nl/other", qos=1)
    other = connect()
    other.subscribe("nl/t", qos=1)
    me.publish("nl/t", b"mine", qos=1)
    me.publish("nl/other", b"echo", qos=1)
    assert other.get().payload == b"mine"
    m = me.get()
    assert m.topic == "nl/other", "No Local: own messages on nl/t must not come back"
    me.expect_none(0.3)
    connect().publish("nl/t", b"from-someone-else", qos=1)
    assert me.get().payload == b"from-someone-else"


def test_properties_passed_through(raw, connect):
    sub = raw(5)
    sub.connect(unique("props"))
    sub.subscribe("pp/t", qos=1)
    pub = raw(5)  # the other shard
    pub.connect(unique("propp"))
    users = [("a", "1"), ("b", "2"), ("a", "3"), ("ünï", "cödé")]
    pub.publish("pp/t", b"\xe2\x9c\x93", qos=1, props={
        "user_property": users, "response_topic": "pp/reply", "correlation_data": b"\x00\xffid",
        "content_type": "text/plain; charset=utf-8", "payload_format_indicator": 1})
    p = sub.expect(mr.PUBLISH)
    assert p.props.get("user_property") == users, "user properties in order, duplicates kept"
    assert p.props.get("response_topic") == "pp/reply"
    assert p.props.get("correlation_data") == b"\x00\xffid"
    assert p.props.get("content_type") == "text/plain; charset=utf-8"
    assert p.props.get("payload_format_indicator") == 1
    sub.ack(p)


def test_request_response_roundtrip_with_paho(connect):
    responder = connect()
    responder.subscribe("rr/req", qos=1)
    requester = connect()
    requester.subscribe("rr/resp/+", qos=1)
    requester.publish("rr/req", b"ping", qos=1,
                      props={"ResponseTopic": "rr/resp/1", "CorrelationData": b"corr-1"})
    req = responder.get()
    assert req.props["response_topic"] == "rr/resp/1" and req.props["correlation_data"] == b"corr-1"
    responder.publish(req.props["response_topic"], b"pong", qos=1,
                      props={"CorrelationData": req.props["correlation_data"]})
    resp = requester.get()
    assert (resp.topic, resp.payload, resp.props["correlation_data"]) == ("rr/resp/1", b"pong", b"corr-1")


# -- Maximum Packet Size ----------------------------------------------------------------------------------


@pytest.mark.broker_config(limits={"packet_size_max": 1024})
def test_maximum_packet_size_inbound(raw, connect):
    r = raw(5)
    ack = r.connect(unique("mps"))
    assert ack.props.get("maximum_packet_size") == 1024, ack
    r.publish("mps/t", b"x" * 900, qos=1)  # fits
    r.send(mr.publish_packet("mps/t", b"x" * 2000, qos=1, packet_id=9))
    got = r.expect_closed(3)
    if is_ringmq() or got:
        assert got and got[-1].type == mr.DISCONNECT and got[-1].reason_code == 0x95, got
        if is_ringmq():
            assert got[-1].props.get("reason_string"), "errors should carry a reason string"
    sub = connect()
    sub.subscribe("mps/ok", qos=1)
    connect().publish("mps/ok", b"fine", qos=1)
    assert sub.get().payload == b"fine"


@pytest.mark.broker_config(limits={"packet_size_max": 1024})
def test_maximum_packet_size_inbound_v311(raw):
    r = raw(4)
    r.connect(unique("mps3"))
    r.send(mr.publish_packet("mps/t", b"x" * 2000, qos=0, version=4))
    r.expect_closed(3)


def test_maximum_packet_size_outbound(raw, connect):
    small = raw(5)
    small.connect(unique("mpss"), props={"maximum_packet_size": 200})
    small.subscribe("mpo/t", qos=1)
    big = connect()
    big.subscribe("mpo/t", qos=1)
    pub = connect()
    pub.publish("mpo/t", b"B" * 500, qos=1)
    pub.publish("mpo/t", b"small", qos=1)
    assert [m.payload for m in big.get_n(2)] == [b"B" * 500, b"small"]
    p = small.expect(mr.PUBLISH)
    assert p.payload == b"small", "a message above the client's Maximum Packet Size is not sent to it"
    small.ack(p)
    small.expect_silence(0.3)


# -- reason strings ---------------------------------------------------------------------------------------


@pytest.mark.ringmq_only  # mosquitto sends no reason strings
def test_reason_string_on_protocol_error(raw):
    r = raw(5)
    r.connect(unique("rs"))
    r.send(mr.publish_packet("bad/+/topic", b"x", qos=0))
    got = r.expect_closed(3)
    assert got and got[-1].type == mr.DISCONNECT and got[-1].reason_code == 0x90, got
    assert got[-1].props.get("reason_string"), got
