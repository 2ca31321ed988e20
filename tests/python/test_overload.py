"""Overload: a QoS 1 subscriber that falls behind pauses its publishers (TCP pushes back) instead
of the broker acknowledging messages and then dropping them or disconnecting the subscriber."""
import time

import pytest

import mqttraw as mr
from helpers import unique


@pytest.mark.ringmq_only  # the pause-the-publisher policy is ringmq's; mosquitto acks then drops
@pytest.mark.broker_config(limits={"offline_queue_max": 100, "inflight_max": 10})
def test_slow_qos1_subscriber_pauses_publisher_nothing_lost(raw):
    sub = raw(4)
    sub.connect(unique("slow-sub"))
    sub.subscribe("flood/t", qos=1)
    pub = raw(4)
    pub.connect(unique("flood-pub"))
    n = 600
    for i in range(n):
        pub.send(mr.publish_packet("flood/t", b"%06d" % i, qos=1, packet_id=i % 60000 + 1, version=4))
    # The subscriber acknowledges nothing yet: the window (10) fills, the queue passes half its
    # bound (50), and the publisher stops being read, so its PUBACKs stop well short of n.
    acked = 0
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline:
        try:
            p = pub.recv(0.3)
        except TimeoutError:
            break
        if p.type == mr.PUBACK:
            acked += 1
    assert acked < n, "the publisher was never paused"
    assert acked <= 10 + 100 + 5, f"{acked} PUBACKs: more accepted than the subscriber can hold"
    # Now the subscriber drains everything, in order, and nothing acknowledged was lost.
    seen = []
    deadline = time.monotonic() + 30
    while len(seen) < n and time.monotonic() < deadline:
        p = sub.recv(5)
        if p.type == mr.PUBLISH:
            seen.append(int(p.payload))
            sub.ack(p)
    assert seen == list(range(n)), "messages lost or out of order under pushback"
    # The publisher got every PUBACK in the end.
    while acked < n:
        p = pub.recv(5)
        if p.type == mr.PUBACK:
            acked += 1
