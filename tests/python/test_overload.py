"""Overload: a QoS 1 subscriber that falls behind pauses its publishers (TCP pushes back) instead
of the broker acknowledging messages and then dropping them or disconnecting the subscriber."""
import time

import pytest

import mqttraw as mr
from helpers import unique


def flood_against_slow_subscriber(raw, same_shard: bool, n: int, chunk: int):
    sub = raw(4)
    sub.connect(unique("slow-sub"))
    sub.subscribe("flood/t", qos=1)
    if same_shard:
        # Round-robin placement: the next connection lands on the other shard, the one after
        # that back on the subscriber's.
        spacer = raw(4)
        spacer.connect(unique("spacer"))
    pub = raw(4)
    pub.connect(unique("flood-pub"))
    for start in range(0, n, chunk):
        data = b"".join(mr.publish_packet("flood/t", b"%06d" % i, qos=1, packet_id=i + 1, version=4)
                        for i in range(start, min(n, start + chunk)))
        pub.send(data)
        time.sleep(0.005)
    # The subscriber acknowledges nothing yet: its window fills, its queue passes half its bound,
    # and the publisher stops being read, so its PUBACKs stop well short of n.
    acked = 0
    while True:
        try:
            p = pub.recv(0.5)
        except TimeoutError:
            break
        if p.type == mr.PUBACK:
            acked += 1
    assert acked < n, "the publisher was never paused"
    # Now the subscriber drains everything, in order: nothing acknowledged was lost.
    seen = []
    deadline = time.monotonic() + 30
    while len(seen) < n and time.monotonic() < deadline:
        p = sub.recv(5)
        if p.type == mr.PUBLISH:
            seen.append(int(p.payload))
            sub.ack(p)
    assert seen == list(range(n)), "messages lost or out of order under pushback"
    while acked < n:
        p = pub.recv(5)
        if p.type == mr.PUBACK:
            acked += 1
    return acked


@pytest.mark.ringmq_only  # the pause-the-publisher policy is ringmq's; mosquitto acks then drops
@pytest.mark.broker_config(limits={"offline_queue_max": 100, "inflight_max": 10})
def test_slow_subscriber_pauses_publisher_on_same_shard(raw):
    flood_against_slow_subscriber(raw, same_shard=True, n=600, chunk=600)


@pytest.mark.ringmq_only
@pytest.mark.broker_config(limits={"offline_queue_max": 1000, "inflight_max": 10})
def test_slow_subscriber_pauses_publisher_across_shards(raw):
    flood_against_slow_subscriber(raw, same_shard=False, n=3000, chunk=20)
