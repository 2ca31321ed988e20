"""A cluster of ringmq nodes meeting on NATS (issue 14), driven with paho-mqtt.

Each test starts Debian's nats-server on a free loopback port (installed by
scripts/install-test-deps.sh) and ringmq nodes with `--cluster nats://… --node-id …`.
"""

import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import httpx
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from conftest import BROKER_KIND, Broker, free_port

pytestmark = pytest.mark.skipif(BROKER_KIND != "ringmq", reason="ringmq's cluster")


def nats_binary() -> str:
    found = shutil.which("nats-server") or ("/usr/sbin/nats-server" if os.access("/usr/sbin/nats-server", os.X_OK) else None)
    if not found:
        pytest.fail("nats-server is missing: run scripts/install-test-deps.sh (Debian package nats-server)")
    return found


class Nats:
    """A nats-server on a free loopback port."""

    def __init__(self, workdir: Path):
        self.port = free_port()
        self.workdir = workdir
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> None:
        log = open(self.workdir / "nats.log", "ab")
        # JetStream on (-js): the cluster's retained messages live in its key-value store.
        self.proc = subprocess.Popen([nats_binary(), "-a", "127.0.0.1", "-p", str(self.port), "-js",
                                      "-sd", str(self.workdir / "jetstream")],
                                     stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    pytest.fail("nats-server did not start:\n" + (self.workdir / "nats.log").read_text())
                time.sleep(0.05)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


@pytest.fixture
def nats(tmp_path):
    n = Nats(tmp_path)
    n.start()
    yield n
    n.stop()


@pytest.fixture
def nodes(nats, tmp_path):
    """Three nodes of one cluster (two shards each); stopped at the end."""
    started = []

    def start(count: int = 3, extra: list[str] | None = None, durability: str = "memory") -> list[Broker]:
        for i in range(count):
            workdir = tmp_path / f"node{len(started) + 1}"
            workdir.mkdir()
            node = Broker("ringmq", workdir, extra_args=[
                "--cluster", nats.url, "--node-id", f"n{len(started) + 1}", "--durability", durability,
                *(extra or [])])
            node.start()
            started.append(node)
        for node in started:
            wait_ready(node)
        return list(started[-count:])

    yield start
    for node in started:
        if node.alive():
            node.stop()


def wait_ready(node: Broker, want: int = 200, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        status = httpx.get(f"http://127.0.0.1:{node.http_port}/readyz", timeout=2).status_code
        if status == want:
            return
        if time.monotonic() > deadline:
            pytest.fail(f"/readyz stayed {status}, want {want}:\n{node.log_tail()}")
        time.sleep(0.1)


def metric_sum(node: Broker, name: str) -> float:
    text = httpx.get(f"http://127.0.0.1:{node.http_port}/metrics", timeout=2).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name + "{") or line.startswith(name + " "))


def metric(node: Broker, name: str) -> float:
    text = httpx.get(f"http://127.0.0.1:{node.http_port}/metrics", timeout=2).text
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in /metrics")


class Sub:
    """A paho subscriber collecting (topic, payload, qos)."""

    def __init__(self, node: Broker, client_id: str, filters: list[str], version=mqtt.MQTTv5):
        self.got: list[tuple[str, bytes, int]] = []
        self.lock = threading.Lock()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=version)
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", node.port)
        self.client.loop_start()
        for f in filters:
            result, mid = self.client.subscribe(f, qos=1)
            assert result == mqtt.MQTT_ERR_SUCCESS
        time.sleep(0.3)  # SUBACKs, and the node's NATS subscription

    def _on_message(self, client, userdata, message):
        with self.lock:
            self.got.append((message.topic, message.payload, message.qos))

    def wait(self, count: int, timeout: float = 10.0) -> list[tuple[str, bytes, int]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if len(self.got) >= count:
                    return list(self.got)
            time.sleep(0.02)
        with self.lock:
            return list(self.got)

    def wait_for(self, item, timeout: float = 10.0) -> list[tuple[str, bytes, int]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if item in self.got:
                    break
            time.sleep(0.02)
        with self.lock:
            return list(self.got)

    def close(self):
        self.client.disconnect()
        self.client.loop_stop()


def publisher(node: Broker, client_id: str, version=mqtt.MQTTv5) -> mqtt.Client:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=version)
    client.connect("127.0.0.1", node.port)
    client.loop_start()
    return client


@pytest.mark.parametrize("version", [mqtt.MQTTv311, mqtt.MQTTv5], ids=["v311", "v5"])
def test_messages_cross_nodes_in_order_once(nodes, version):
    n1, n2, n3 = nodes(3)
    # Overlapping filters on one node: NATS delivers a message once per matching subscription,
    # the node keeps one copy.
    sub = Sub(n2, "sub-a", ["fleet/#", "fleet/+/temp"], version)
    other = Sub(n3, "sub-b", ["fleet/site1/temp"], version)
    pub = publisher(n1, "pub-a", version)
    infos = [pub.publish("fleet/site1/temp" if i % 2 else "fleet/site2", str(i).encode(), qos=i % 2)
             for i in range(400)]
    for info in infos:
        info.wait_for_publish(5)
    pub.publish("fleet", b"parent", qos=1).wait_for_publish(5)
    sub.wait_for(("fleet", b"parent", 1))
    got = sub.wait(401, timeout=2)
    numbers = [int(p) for _, p, _ in got if p != b"parent"]
    # MQTT orders a publisher's messages per topic and QoS (4.6): QoS 0 ones may pass QoS 1 ones
    # waiting for the subscriber's window, and a subscriber too slow for them loses QoS 0 ones,
    # counted where they are dropped.
    assert [n for n in numbers if n % 2] == list(range(1, 400, 2)), "every QoS 1 message, in order"
    qos0 = [n for n in numbers if n % 2 == 0]
    assert qos0 == sorted(set(qos0)), "QoS 0: in order, once"
    dropped = metric_sum(n2, "ringmq_messages_dropped_total")
    crossed = metric(n2, "ringmq_cluster_received_total")
    assert crossed == 401, "every message reached n2, once"
    assert len(qos0) + dropped == 200, f"{200 - len(qos0)} QoS 0 messages missing, {dropped} counted"
    assert ("fleet", b"parent", 1) in got, "`fleet/#` matches `fleet` itself, across nodes too"
    assert {q for t, p, q in got if p != b"parent" and int(p) % 2} == {1}, "QoS kept"
    got_b = other.wait(200)
    assert [int(p) for _, p, _ in got_b] == list(range(1, 400, 2))
    assert metric(n1, "ringmq_cluster_sent_total") >= 401
    sub.close(), other.close()
    pub.loop_stop()


def test_a_node_without_interest_receives_nothing(nodes):
    n1, n2, n3 = nodes(3)
    sub = Sub(n2, "sub", ["a/#"])
    idle = Sub(n3, "idle", ["b/+"])
    pub = publisher(n1, "pub")
    for i in range(100):
        pub.publish(f"a/{i}", b"x", qos=0)
    pub.publish("b/1", b"y", qos=1).wait_for_publish(5)
    assert len(sub.wait(100)) == 100
    assert idle.wait(1) == [("b/1", b"y", 1)]
    time.sleep(0.3)
    assert metric(n3, "ringmq_cluster_received_total") == 1, "n3 got only what it subscribed to"
    # An unsubscribe takes the interest away.
    sub.client.unsubscribe("a/#")
    time.sleep(0.5)
    before = metric(n2, "ringmq_cluster_received_total")
    for i in range(50):
        pub.publish(f"a/{i}", b"x", qos=0)
    pub.publish("b/2", b"y", qos=1).wait_for_publish(5)
    idle.wait(2)
    time.sleep(0.3)
    assert metric(n2, "ringmq_cluster_received_total") == before
    sub.close(), idle.close()
    pub.loop_stop()


def test_sys_topics_and_local_delivery_stay_on_their_node(nodes):
    n1, n2 = nodes(2)
    remote = Sub(n2, "remote", ["#", "$SYS/#"])
    local = Sub(n1, "local", ["t/x"])
    pub = publisher(n1, "pub")
    pub.publish("t/x", b"one", qos=1).wait_for_publish(5)
    assert local.wait(1) == [("t/x", b"one", 1)]
    assert ("t/x", b"one", 1) in remote.wait_for(("t/x", b"one", 1))
    time.sleep(1.5)
    assert not [t for t, _, _ in remote.got if t.startswith("$SYS/") and "n1" in t], "n1's $SYS stays on n1"
    remote.close(), local.close()
    pub.loop_stop()


def test_nodes_go_on_without_nats_and_catch_up_when_it_returns(nats, nodes):
    n1, n2 = nodes(2)
    sub = Sub(n2, "sub", ["t/#"])
    local = Sub(n1, "local", ["t/#"])
    pub = publisher(n1, "pub")
    pub.publish("t/1", b"before", qos=1).wait_for_publish(5)
    assert sub.wait(1) == [("t/1", b"before", 1)]
    nats.stop()
    wait_ready(n1, want=503)
    assert "NATS" in httpx.get(f"http://127.0.0.1:{n1.http_port}/readyz").text
    # Local delivery goes on; the PUBACK waits, for node 2 wants the message too.
    alone = pub.publish("t/2", b"alone", qos=1)
    assert ("t/2", b"alone", 1) in local.wait(2)
    assert not alone.is_published(), "acknowledged while node 2 could not have it"
    nats.start()
    wait_ready(n1, timeout=20)
    wait_ready(n2, timeout=20)
    # Node 2 gets it: either its node acknowledges it after the outage, or the publisher is
    # closed unacknowledged (what went out just before the break may be lost) and paho sends
    # it again on its next connection.
    assert ("t/2", b"alone", 1) in sub.wait_for(("t/2", b"alone", 1), timeout=20)
    alone.wait_for_publish(20)
    assert alone.is_published()
    time.sleep(0.5)  # the client resubscribes after its reconnect
    pub.publish("t/3", b"after", qos=1).wait_for_publish(5)
    # (t/2 may be there twice: QoS 1 sent again.)
    assert ("t/3", b"after", 1) in sub.wait_for(("t/3", b"after", 1), timeout=10)
    assert n1.alive() and n2.alive()
    sub.close(), local.close()
    pub.loop_stop()


def wait_peers(node: Broker, count: int, timeout: float = 5.0) -> None:
    """Until the node hears `count` other nodes (their heartbeats, every 0.5 s)."""
    deadline = time.monotonic() + timeout
    while metric(node, "ringmq_cluster_peers") != count:
        if time.monotonic() > deadline:
            pytest.fail(f"{node.port} hears {metric(node, 'ringmq_cluster_peers')} peers, want {count}")
        time.sleep(0.1)


def test_a_qos1_puback_waits_for_the_nodes_that_want_the_message(nodes):
    n1, n2 = nodes(2)
    wait_peers(n1, 1), wait_peers(n2, 1)
    time.sleep(1.0)  # each node has the other's snapshot (asked for at the first heartbeat)
    sub = Sub(n2, "sub", ["want/#"])
    time.sleep(0.3)  # node 2's announcement of its filter reaches node 1
    pub = publisher(n1, "pub")
    pub.publish("want/1", b"1", qos=1).wait_for_publish(5)
    assert sub.wait(1) == [("want/1", b"1", 1)]
    # Node 2 frozen: the PUBACK waits for it, and comes once it took the message.
    n2.proc.send_signal(signal.SIGSTOP)
    try:
        held = pub.publish("want/2", b"2", qos=1)
        time.sleep(1.5)
        assert not held.is_published(), "acknowledged before node 2 had it"
    finally:
        n2.proc.send_signal(signal.SIGCONT)
    held.wait_for_publish(5)
    assert held.is_published()
    assert sub.wait(2) == [("want/1", b"1", 1), ("want/2", b"2", 1)]
    # Frozen past the timeout (3 s), node 2 counts as dead: the PUBACK stops waiting for it.
    n2.proc.send_signal(signal.SIGSTOP)
    try:
        started = time.monotonic()
        late = pub.publish("want/3", b"3", qos=1)
        late.wait_for_publish(10)
        waited = time.monotonic() - started
        assert late.is_published() and 2.0 < waited < 8.0, waited
    finally:
        n2.proc.send_signal(signal.SIGCONT)
    # Back, it is heard again and waited for again.
    wait_peers(n1, 1)
    assert metric(n1, "ringmq_cluster_acks_waiting") == 0
    sub.close()
    pub.loop_stop()


def test_a_qos1_flood_across_nodes_loses_nothing(nodes):
    n1, n2 = nodes(2)
    wait_peers(n1, 1)
    sub = Sub(n2, "sub", ["flood/#"])
    time.sleep(0.3)
    pubs = []
    for i in range(4):
        p = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"pub{i}", protocol=mqtt.MQTTv5)
        p.max_inflight_messages_set(100)
        p.max_queued_messages_set(0)
        p.connect("127.0.0.1", n1.port)
        p.loop_start()
        pubs.append(p)
    per = 1000

    def flood(i: int, p: mqtt.Client) -> None:
        infos = [p.publish(f"flood/{i}", str(n).encode(), qos=1) for n in range(per)]
        for info in infos:
            info.wait_for_publish(30)

    threads = [threading.Thread(target=flood, args=(i, p)) for i, p in enumerate(pubs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    # Every acknowledged message is on node 2 (in each publisher's order).
    got = sub.wait(4 * per, timeout=30)
    for i in range(4):
        mine = [int(payload) for topic, payload, _ in got if topic == f"flood/{i}"]
        assert sorted(set(mine)) == list(range(per)), f"publisher {i}: {len(set(mine))} of {per}"
        assert mine == sorted(mine), "in order"
    sub.close()
    for p in pubs:
        p.loop_stop()


class Device:
    """A paho v5 client that records why it was disconnected."""

    def __init__(self, node: Broker, client_id: str, clean_start: bool = True):
        self.reasons: list[int] = []
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
        self.client.on_disconnect = self._on_disconnect
        props = mqtt.Properties(mqtt.PacketTypes.CONNECT)
        props.SessionExpiryInterval = 600
        self.client.connect("127.0.0.1", node.port, clean_start=clean_start, properties=props)
        self.client.loop_start()
        deadline = time.monotonic() + 5
        while not self.client.is_connected():
            assert time.monotonic() < deadline, "not connected"
            time.sleep(0.02)

    def _on_disconnect(self, client, userdata, flags, reason_code, properties):
        self.reasons.append(reason_code.value if hasattr(reason_code, "value") else int(reason_code))

    def wait_reason(self, timeout: float = 5.0) -> list[int]:
        deadline = time.monotonic() + timeout
        while not self.reasons and time.monotonic() < deadline:
            time.sleep(0.02)
        return list(self.reasons)

    def close(self):
        self.client.disconnect()
        self.client.loop_stop()


def test_a_client_id_is_taken_over_across_nodes(nodes):
    n1, n2, n3 = nodes(3)
    first = Device(n1, "dev-7")
    # The same client id on another node: the first connection ends with 0x8E.
    second = Device(n2, "dev-7", clean_start=False)
    assert first.wait_reason() == [0x8E], "Session taken over"
    first.client.loop_stop()
    # And back again, on a third node: the second one goes the same way.
    third = Device(n3, "dev-7")
    assert second.wait_reason() == [0x8E]
    second.client.loop_stop()
    # Another id is not touched (the registry's keys carry the org too: subject.rs tests).
    other = Device(n1, "dev-8")
    time.sleep(1.0)
    assert other.reasons == [] and third.reasons == []
    other.close(), third.close()


class Persistent:
    """A paho v5 client with a kept session (expiry 600 s, no clean start)."""

    def __init__(self, node: Broker, client_id: str):
        self.got: list[tuple[str, bytes]] = []
        self.present: list[bool] = []
        self.reasons: list[int] = []
        self.lock = threading.Lock()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
        self.client.on_connect = lambda c, u, flags, rc, p: self.present.append(bool(flags.session_present))
        self.client.on_disconnect = lambda c, u, f, rc, p: self.reasons.append(rc.value)
        self.client.on_message = self._on_message
        props = mqtt.Properties(mqtt.PacketTypes.CONNECT)
        props.SessionExpiryInterval = 600
        self.client.connect("127.0.0.1", node.port, clean_start=False, properties=props)
        self.client.loop_start()
        deadline = time.monotonic() + 10
        while not self.present:
            assert time.monotonic() < deadline, "no CONNACK"
            time.sleep(0.02)

    def _on_message(self, client, userdata, message):
        with self.lock:
            self.got.append((message.topic, message.payload))

    def wait(self, count: int, timeout: float = 10.0) -> list[tuple[str, bytes]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if len(self.got) >= count:
                    break
            time.sleep(0.02)
        with self.lock:
            return list(self.got)

    def leave(self):
        self.client.disconnect()
        self.client.loop_stop()


def test_a_persistent_session_moves_with_its_client_id_across_nodes(nodes):
    n1, n2 = nodes(2)
    wait_peers(n1, 1), wait_peers(n2, 1)
    dev = Persistent(n1, "dev-9")
    assert dev.present == [False]
    dev.client.subscribe("cmd/dev-9", qos=1)
    time.sleep(0.5)
    dev.leave()
    pub = publisher(n2, "ops")
    pub.publish("cmd/dev-9", b"queued while away", qos=1).wait_for_publish(5)
    time.sleep(0.3)
    # The device comes back on the other node: its session (subscription, queued message)
    # comes with it, and the CONNACK says so.
    moved = Persistent(n2, "dev-9")
    assert moved.present == [True], "session present"
    assert moved.wait(1) == [("cmd/dev-9", b"queued while away")]
    pub.publish("cmd/dev-9", b"live", qos=1).wait_for_publish(5)
    assert moved.wait(2)[1:] == [("cmd/dev-9", b"live")]
    # While connected, a CONNECT on the first node takes it back: 0x8E here, present there.
    back = Persistent(n1, "dev-9")
    assert back.present == [True]
    deadline = time.monotonic() + 5
    while not moved.reasons and time.monotonic() < deadline:
        time.sleep(0.02)
    assert moved.reasons == [0x8E]
    moved.client.loop_stop()
    pub.publish("cmd/dev-9", b"again", qos=1).wait_for_publish(5)
    assert back.wait(1) == [("cmd/dev-9", b"again")]
    back.leave()
    pub.loop_stop()


def test_a_session_continues_from_its_nodes_log_after_a_crash(nodes):
    n1, n2 = nodes(2, durability="sync")
    wait_peers(n1, 1), wait_peers(n2, 1)
    dev = Persistent(n1, "dev-11")
    dev.client.subscribe("cmd/dev-11", qos=1)
    # Node 2 must know node 1 wants the topic before the PUBACK can wait for it: the filter's
    # announcement (or, for a node just met, its snapshot at the next heartbeat) must be in.
    time.sleep(1.5)
    dev.leave()
    pub = publisher(n2, "ops")
    # With `sync` durability the PUBACK means node 1's log holds the message: killed at once
    # after it, node 1 still has it.
    pub.publish("cmd/dev-11", b"kept on disk", qos=1).wait_for_publish(5)
    n1.proc.send_signal(signal.SIGKILL)
    n1.proc.wait(5)
    n1.start()
    wait_ready(n1, timeout=20)
    wait_peers(n2, 1, timeout=10)
    # Node 1 is back with the session its log kept: the device, now on node 2, gets it (the
    # fetch is addressed by node id, which outlives the crashed process).
    moved = Persistent(n2, "dev-11")
    assert moved.present == [True]
    assert moved.wait(1) == [("cmd/dev-11", b"kept on disk")]
    moved.leave()
    pub.loop_stop()


def test_orgs_stay_apart_across_nodes(nodes):
    """An org's messages cross to its own subscribers on other nodes and to nobody else's."""
    from test_security import SseStream, api, new_org, root_key

    n1, n2 = nodes(2)
    wait_peers(n1, 1)
    # Without --store each node has its own control plane (SQLite): orgs made in the same order
    # get the same routing number on both. (test_cluster_control.py: one shared PostgreSQL.)
    keys: dict[int, dict[str, str]] = {}
    for node in (n1, n2):
        keys[node.port] = {}
        with api(node, root_key(node)) as admin:
            for name in ("acme", "evil"):
                _, key = new_org(admin, name)
                with api(node, key) as org:
                    r = org.post("/v1/acl/rules", json={"topic": "#", "action": "all", "permission": "allow"})
                    assert r.status_code == 201, r.text
                keys[node.port][name] = key
    acme = SseStream(n2, keys[n2.port]["acme"], query="topic=x%2F%23")
    evil = SseStream(n2, keys[n2.port]["evil"], query="topic=%23")
    anonymous = Sub(n2, "default-org", ["#"])
    time.sleep(0.5)  # the node's interest reaches NATS and node 1
    with api(n1, keys[n1.port]["acme"]) as publisher_api:
        r = publisher_api.post("/v1/publish", json={"topic": "x/1", "payload": "for acme", "qos": 1})
        assert r.status_code == 200, r.text
    deadline = time.monotonic() + 10
    while "for acme" not in acme.payloads() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert acme.payloads() == ["for acme"], "its own org on the other node gets it"
    time.sleep(1.0)
    assert evil.payloads() == [], "another org's `#` gets nothing"
    assert [t for t, _, _ in anonymous.got if t.startswith("x/")] == [], "nor the default org's"
    anonymous.close()


def test_an_orgs_rate_limit_is_split_between_the_nodes(nodes):
    """Each node admits its share of an org's rate (its burst divided by the nodes alive)."""
    from test_security import api, root_key

    n1, n2 = nodes(2)
    wait_peers(n1, 1)
    with api(n1, root_key(n1)) as admin:
        r = admin.post("/v1/orgs", json={"name": "limited",
                                         "settings": {"rate_limit_per_sec": 4, "rate_burst": 20}})
        assert r.status_code == 201, r.text
        key = r.json()["key"]["key"]

    def burst(count: int) -> int:
        with api(n1, key) as org:
            codes = [org.get("/v1/acl/rules").status_code for _ in range(count)]
        assert set(codes) <= {200, 429}, codes
        return codes.count(200)

    # Two nodes: 20 / 2 = 10 at once on this one (plus what 2/s refills meanwhile).
    assert 9 <= burst(30) <= 13
    # Alone (the other node gone for 3 s), it gets the whole burst back as it refills.
    n2.proc.send_signal(signal.SIGKILL)
    n2.proc.wait(5)
    wait_peers(n1, 0, timeout=10)
    time.sleep(5.5)  # 4/s refills the whole burst of 20
    assert burst(40) >= 19


def test_the_rest_go_on_after_kill_9_of_a_node(nodes):
    n1, n2, n3 = nodes(3)
    sub = Sub(n2, "sub", ["t/#"])
    doomed = Sub(n3, "doomed", ["t/#"])
    pub = publisher(n1, "pub")
    pub.publish("t/1", b"1", qos=1).wait_for_publish(5)
    assert doomed.wait(1) and sub.wait(1)
    n3.proc.send_signal(signal.SIGKILL)
    n3.proc.wait(5)
    # (The first PUBACK waits until node 3 counts as dead, about 3 s.)
    for i in range(2, 52):
        pub.publish(f"t/{i}", str(i).encode(), qos=1).wait_for_publish(10)
    got = [int(p) for _, p, _ in sub.wait(51, timeout=20)]
    assert got == list(range(1, 52)), got
    sub.close()
    pub.loop_stop()


def test_a_shared_group_spans_the_nodes_each_message_once(nodes):
    n1, n2, n3 = nodes(3)
    members = [Sub(node, f"member-{i}", ["$share/workers/jobs/#"]) for i, node in enumerate((n1, n2, n3))]
    plain = Sub(n2, "plain", ["jobs/#"])
    pub = publisher(n1, "pub")
    for i in range(300):
        pub.publish(f"jobs/{i % 7}", str(i).encode(), qos=1).wait_for_publish(5)
    assert len(plain.wait(300)) == 300, "plain subscriptions are not affected"

    def receipts():
        return [int(p) for m in members for _, p, _ in m.got]

    deadline = time.monotonic() + 10
    while len(receipts()) < 300 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)
    got = receipts()
    assert sorted(got) == list(range(300)), "each message to one member in the whole cluster"
    assert sum(1 for m in members if m.got) >= 2, "NATS's queue group spreads them over the nodes"
    # A member leaves: the others take everything.
    members[2].close()
    time.sleep(0.5)
    for m in members:
        m.got.clear()
    for i in range(300, 360):
        pub.publish(f"jobs/{i % 7}", str(i).encode(), qos=1).wait_for_publish(5)
    deadline = time.monotonic() + 10
    while len(receipts()) < 60 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)
    assert sorted(receipts()) == list(range(300, 360))
    for m in members[:2]:
        m.close()
    plain.close()
    pub.loop_stop()


def test_retained_messages_are_cluster_wide(nodes):
    n1, n2 = nodes(2)
    pub = publisher(n1, "pub")
    pub.publish("state/a", b"on", qos=1, retain=True).wait_for_publish(5)
    pub.publish("state/b", b"off", qos=1, retain=True).wait_for_publish(5)
    time.sleep(0.5)
    late = Sub(n2, "late", ["state/#"])
    assert sorted(late.wait(2)) == [("state/a", b"on", 1), ("state/b", b"off", 1)], "set on n1, seen on n2"
    # A node that joins later loads them before it says it is ready.
    (n3,) = nodes(1)
    newcomer = Sub(n3, "newcomer", ["state/+"])
    assert sorted(newcomer.wait(2)) == [("state/a", b"on", 1), ("state/b", b"off", 1)]
    # Cleared on n2 (an empty retained message): gone for new subscriptions on every node.
    clearer = publisher(n2, "clearer")
    clearer.publish("state/a", b"", qos=1, retain=True).wait_for_publish(5)
    time.sleep(0.5)
    for node in (n1, n3):
        again = Sub(node, f"again-{node.port}", ["state/#"])
        assert again.wait(2, timeout=1.5) == [("state/b", b"off", 1)]
        again.close()
    late.close(), newcomer.close()
    pub.loop_stop(), clearer.loop_stop()


def test_hostile_envelopes_from_nats_are_dropped_and_counted(nats, nodes):
    (n1,) = nodes(1)
    sub = Sub(n1, "sub", ["t/#"])
    raw = socket.create_connection(("127.0.0.1", nats.port), timeout=5)
    raw.recv(4096)  # INFO
    bad = [b"", b"\x02" + bytes(40), b"\x01" + bytes(16) + b"\xff\xff\xff\xff", b"hello world"]
    commands = b'CONNECT {"verbose":false}\r\n'
    for payload in bad:
        commands += b"PUB rmq.0.t.x %d\r\n%s\r\n" % (len(payload), payload)
    raw.sendall(commands + b"PING\r\n")
    deadline = time.monotonic() + 5
    while metric(n1, 'ringmq_cluster_dropped_total{direction="in"}') < len(bad):
        assert time.monotonic() < deadline, "the bad envelopes were not counted"
        time.sleep(0.1)
    assert sub.got == []
    assert n1.alive()
    raw.close()
    sub.close()


def test_cluster_flags_are_checked(tmp_path):
    binary = os.environ.get("RINGMQ_BIN") or str(Path(__file__).resolve().parents[2] / "target" / "debug" / "ringmq")
    cases = [
        (["--node-id", "n1"], "cluster.nats"),
        (["--cluster", "http://127.0.0.1:4222", "--node-id", "n1"], "nats://"),
        (["--cluster", "nats://127.0.0.1:4222"], "cluster.node_id"),
        (["--cluster", "nats://127.0.0.1:4222", "--node-id", "a.b"], "cluster.node_id"),
        (["--cluster", "nats://user:hunter2@127.0.0.1:4222 x", "--node-id", "n1"], "***"),
    ]
    for args, expected in cases:
        proc = subprocess.run([binary, "serve", "--data-dir", str(tmp_path / "d"), "--mqtt-listen", "127.0.0.1:0",
                               "--http-listen", "127.0.0.1:0", *args], capture_output=True, text=True, timeout=20)
        assert proc.returncode != 0, args
        assert expected in proc.stderr, (args, proc.stderr)
        assert "hunter2" not in proc.stderr
    help_text = subprocess.run([binary, "serve", "--help"], capture_output=True, text=True).stdout
    assert "--cluster <URL>" in help_text and "--node-id <ID>" in help_text


def test_a_message_published_right_after_the_suback_crosses(nodes):
    """A SUBACK means the node's NATS subscription is in place: a message another node
    publishes the moment the SUBACK is received reaches the subscriber (each round a new filter,
    so each SUBACK waits for a new NATS subscription)."""
    n1, n2 = nodes(2)
    pub = publisher(n1, "suback-pub")
    got: list[str] = []
    lock = threading.Lock()
    subacked = threading.Event()
    sub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="suback-sub", protocol=mqtt.MQTTv5)
    sub.on_message = lambda c, u, m: (lock.acquire(), got.append(m.topic), lock.release())
    sub.on_subscribe = lambda c, u, mid, codes, props: subacked.set()
    sub.connect("127.0.0.1", n2.port)
    sub.loop_start()
    try:
        rounds = 30
        for i in range(rounds):
            subacked.clear()
            sub.subscribe(f"race/{i}", qos=0)
            assert subacked.wait(5), "no SUBACK"
            pub.publish(f"race/{i}", b"x", qos=0)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with lock:
                if len(got) >= rounds:
                    break
            time.sleep(0.02)
        with lock:
            assert sorted(got) == sorted(f"race/{i}" for i in range(rounds)), got
    finally:
        sub.disconnect()
        sub.loop_stop()
        pub.disconnect()
        pub.loop_stop()


def test_a_suback_does_not_wait_for_a_bridge_that_gave_up(tmp_path):
    """A NATS address the client cannot use (a port past 65535) ends the bridge at start (the
    node stays alone, logged): SUBACKs must not wait for it."""
    workdir = tmp_path / "alone"
    workdir.mkdir()
    node = Broker("ringmq", workdir, extra_args=["--cluster", "nats://127.0.0.1:99999", "--node-id", "n1"])
    node.start()
    try:
        sub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="alone-sub", protocol=mqtt.MQTTv5)
        subacked = threading.Event()
        sub.on_subscribe = lambda c, u, mid, codes, props: subacked.set()
        sub.connect("127.0.0.1", node.port)
        sub.loop_start()
        time.sleep(0.5)  # the bridge has given up by now
        sub.subscribe("alone/#", qos=1)
        assert subacked.wait(5), "the SUBACK waited for a bridge that is gone:\n" + node.log_tail(20)
        sub.disconnect()
        sub.loop_stop()
    finally:
        node.stop()
