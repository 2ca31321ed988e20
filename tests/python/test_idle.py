"""Quiet connections: a connection that sent nothing for half a second parks (no read buffer
and no reading task, only a readiness wait: memory per idle connection) and is served again as
soon as it speaks. Parked connections still count as open and still end on keep-alive,
DISCONNECT and a closed socket. Clients: paho-mqtt and raw sockets."""

import time

import httpx
import pytest

from helpers import is_ringmq, unique

# Longer than the broker's quiet threshold (500 ms), so every wait below parks the connection.
QUIET = 0.7

pytestmark = pytest.mark.skipif(not is_ringmq(), reason="ringmq's metrics and parking")


def gauge(broker, name: str) -> float:
    """The sum over shards of a /metrics gauge."""
    text = httpx.get(f"http://{broker.host}:{broker.http_port}/metrics", timeout=10).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name + "{"))


def test_a_parked_subscriber_receives_a_burst(connect, version):
    sub = connect(version=version)
    sub.subscribe("idle/burst", qos=1)
    pub = connect(version=version)
    time.sleep(QUIET)
    for i in range(200):
        pub.publish("idle/burst", b"%d" % i, qos=1)
    got = sub.get_n(200)
    assert [m.payload for m in got] == [b"%d" % i for i in range(200)]


def test_a_parked_publisher_is_read_each_time_it_speaks(connect, version):
    sub = connect(version=version)
    sub.subscribe("idle/pub", qos=1)
    pub = connect(version=version)
    for round_ in range(3):
        time.sleep(QUIET)
        pub.publish("idle/pub", b"r%d" % round_, qos=1)
        assert sub.get().payload == b"r%d" % round_


def test_parked_pings_are_answered(raw, version):
    r = raw(version)
    r.connect(unique("idle-ping"))
    for _ in range(3):
        time.sleep(QUIET)
        r.ping(timeout=2.0)


def test_parked_connections_count_until_their_sockets_close(broker, raw):
    clients = [raw(5) for _ in range(40)]
    for i, c in enumerate(clients):
        c.connect(unique(f"idle-{i}"))
    time.sleep(QUIET)
    assert gauge(broker, "ringmq_sockets_open") == 40
    assert gauge(broker, "ringmq_connections") == 40
    for c in clients:
        c.close()
    deadline = time.monotonic() + 5
    while gauge(broker, "ringmq_sockets_open") > 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert gauge(broker, "ringmq_sockets_open") == 0, "a parked connection's close went unseen"
    assert gauge(broker, "ringmq_connections") == 0
