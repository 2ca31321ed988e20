"""Quiet connections: a connection that sent nothing for half a second parks (no read buffer
and no reading task, only a readiness wait: memory per idle connection) and is served again as
soon as it speaks. Parked connections still count as open and still end on keep-alive,
DISCONNECT and a closed socket. Clients: paho-mqtt and raw sockets."""

import time

import httpx
import pytest

import mqttraw as mr
from helpers import is_ringmq, unique

# Longer than the broker's quiet threshold (500 ms), so every wait below parks the connection.
QUIET = 0.7

pytestmark = pytest.mark.skipif(not is_ringmq(), reason="ringmq's metrics and parking")


def gauge(broker, name: str) -> float:
    """The sum over shards of a /metrics gauge (or its value, when it has no shard label)."""
    text = httpx.get(f"http://{broker.host}:{broker.http_port}/metrics", timeout=10).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith((name + "{", name + " ")))


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


# After a second parked, with nothing to write, a connection's socket is put to sleep (kept as
# its bare descriptor); the shard's sweep reaches every parked connection within about a second.
ASLEEP = 2.5


def asleep(broker) -> float:
    """Sockets asleep in the broker."""
    return gauge(broker, "ringmq_sockets_asleep")


def wait_asleep(broker, count: int) -> None:
    deadline = time.monotonic() + 5
    while asleep(broker) < count and time.monotonic() < deadline:
        time.sleep(0.1)
    assert asleep(broker) >= count, "idle connections were not put to sleep"


def settle(*clients) -> None:
    """Makes each client's connection park: a packet after a quiet spell (a read that waited
    long) sends the connection to the park set once it is handled."""
    time.sleep(QUIET)
    for c in clients:
        c.ping(timeout=2.0)


def test_sleeping_connections_are_served_as_before(broker, raw, version):
    sub = raw(version)
    sub.connect(unique("asleep-sub"))
    sub.subscribe("idle/asleep", qos=1)
    pub = raw(version)
    pub.connect(unique("asleep-pub"))
    pinger = raw(version)
    pinger.connect(unique("asleep-ping"))
    for round_ in range(3):
        settle(sub, pub, pinger)
        time.sleep(ASLEEP)
        wait_asleep(broker, 3)
        # A sleeping publisher is read, a sleeping subscriber is written (and acks are read).
        for i in range(20):
            pub.publish("idle/asleep", b"%d-%d" % (round_, i), qos=1)
        for i in range(20):
            m = sub.expect(mr.PUBLISH, timeout=3)
            assert m.payload == b"%d-%d" % (round_, i)
            sub.ack(m)
        pinger.ping(timeout=2.0)


def test_a_socket_woken_by_a_write_is_read_again(broker, connect, raw):
    # The subscriber's socket is woken by the writer while its reader stays parked: the next
    # packet it sends must still be read through the half the writer left behind.
    sub = raw(5)
    sub.connect(unique("asleep-sub"))
    sub.subscribe("idle/woken", qos=0)
    pub = connect(version=5)
    settle(sub)
    time.sleep(ASLEEP)
    wait_asleep(broker, 1)
    pub.publish("idle/woken", b"wake", qos=0)
    assert sub.recv(timeout=3).payload == b"wake"
    sub.ping(timeout=2.0)
    sub.subscribe("idle/woken2", qos=0)
    pub.publish("idle/woken2", b"again", qos=0)
    assert sub.recv(timeout=3).payload == b"again"


def test_sleeping_connections_end_on_keep_alive_and_close(broker, raw):
    quiet = raw(5)
    quiet.connect(unique("asleep-ka"), keepalive=3)
    closer = raw(5)
    closer.connect(unique("asleep-close"))
    settle(quiet, closer)
    time.sleep(ASLEEP)
    wait_asleep(broker, 2)
    closer.close()
    got = quiet.expect_closed(timeout=8)
    assert got and got[-1].type == mr.DISCONNECT and got[-1].reason_code == 0x8D, got  # Keep Alive timeout
    deadline = time.monotonic() + 5
    while gauge(broker, "ringmq_sockets_open") > 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert gauge(broker, "ringmq_sockets_open") == 0
    assert asleep(broker) == 0


def test_shutdown_reaches_sleeping_connections(broker, raw):
    clients = [raw(5) for _ in range(5)]
    for i, c in enumerate(clients):
        c.connect(unique(f"asleep-stop-{i}"))
    time.sleep(ASLEEP)
    wait_asleep(broker, 5)
    assert broker.stop() == 0
    for c in clients:
        got = c.expect_closed(timeout=5)
        assert got and got[-1].reason_code == 0x8B, got  # Server shutting down


def test_a_device_that_subscribes_and_goes_quiet_sleeps(broker, raw, version):
    # CONNECT, SUBSCRIBE and a PUBLISH in quick succession, then nothing: the pattern of a
    # fleet device. It must not keep a pending read (and an awake socket) until its next ping.
    devices = [raw(version) for _ in range(4)]
    for i, d in enumerate(devices):
        d.connect(unique(f"device-{i}"))
        d.subscribe(f"idle/device/{i}", qos=1)
        d.publish(f"idle/device/{i}/hello", b"up", qos=1)
    time.sleep(ASLEEP)
    wait_asleep(broker, len(devices))
    sender = raw(version)
    sender.connect(unique("device-sender"))
    for i in range(len(devices)):
        sender.publish(f"idle/device/{i}", b"cmd", qos=1)
    for d in devices:
        m = d.expect(mr.PUBLISH, timeout=3)
        assert m.payload == b"cmd"
        d.ack(m)
