"""The synchronous MQTT client against a real broker."""

from __future__ import annotations

import logging
import queue
import threading
from typing import Any

import pytest

from conftest import PASSWORD, Broker, unique, wait_for
from ringmq import Payload, RingmqClient, RingmqConnectionError, RingmqError


def client(broker: Broker, port: int | None = None, **kw: Any) -> RingmqClient:
    kw.setdefault("username", "tester")
    kw.setdefault("password", PASSWORD)
    return RingmqClient(host=broker.host, port=port or broker.port, **kw)


def test_round_trip_decodes_json_str_bytes(broker: Broker) -> None:
    base = unique("rt")
    got: queue.Queue[tuple[str, Payload]] = queue.Queue()
    c = client(broker)

    @c.on_message(f"{base}/+/state")
    def state(topic: str, payload: Payload) -> None:
        got.put((topic, payload))

    c.connect()
    try:
        assert c.is_connected
        c.publish(f"{base}/1/state", {"ok": True, "n": [1, 2]}, qos=1, wait=True)
        c.publish(f"{base}/2/state", ["a", 1])
        c.publish(f"{base}/3/state", "hello world")
        c.publish(f"{base}/4/state", b"\xff\x00\xfe", qos=1)
        c.publish(f"{base}/5/state", b'{"raw": 1}')
        c.publish(f"{base}/x/other", "not matched")
        received = [got.get(timeout=5) for _ in range(5)]
        assert received == [
            (f"{base}/1/state", {"ok": True, "n": [1, 2]}),
            (f"{base}/2/state", ["a", 1]),
            (f"{base}/3/state", "hello world"),
            (f"{base}/4/state", b"\xff\x00\xfe"),
            (f"{base}/5/state", {"raw": 1}),
        ]
        assert got.empty()
    finally:
        c.disconnect()
    assert not c.is_connected


def test_handler_exception_is_logged_not_fatal(broker: Broker, caplog: pytest.LogCaptureFixture) -> None:
    base = unique("boom")
    got: queue.Queue[Payload] = queue.Queue()
    c = client(broker)

    @c.on_message(f"{base}/#")
    def bad(topic: str, payload: Payload) -> None:
        if payload == "boom":
            raise ValueError("handler failed")
        got.put(payload)

    with caplog.at_level(logging.ERROR, logger="ringmq"):
        with c:
            c.publish(f"{base}/a", "boom")
            c.publish(f"{base}/a", "fine")
            assert got.get(timeout=5) == "fine"
            assert c.is_connected
    assert any("handler failed" in (r.exc_text or "") or r.exc_info for r in caplog.records)


def test_handler_added_after_connect_subscribes(broker: Broker) -> None:
    base = unique("late")
    got: queue.Queue[Payload] = queue.Queue()
    with client(broker) as c:
        c.add_handler(f"{base}/t", lambda t, p: got.put(p), qos=1)
        wait_for(lambda: any(s.filter == f"{base}/t" for s in broker.api().sessions.get(c.client_id).subscriptions),
                 what="subscription")
        c.publish(f"{base}/t", 42)
        assert got.get(timeout=5) == 42


def test_refused_connect_raises_with_reason(broker: Broker) -> None:
    c = client(broker, password="wrong-password")
    with pytest.raises(RingmqConnectionError) as ei:
        c.connect()
    err = ei.value
    assert isinstance(err, RingmqError) and isinstance(err, ConnectionError)
    assert err.error == "connection_refused"
    assert err.reason_code in (0x86, 0x87)  # bad user name or password / not authorized
    assert "0x8" in err.detail
    assert not c.is_running


def test_unreachable_broker_raises() -> None:
    from conftest import free_port
    c = RingmqClient(host="127.0.0.1", port=free_port(), connect_timeout=3)
    with pytest.raises(RingmqConnectionError) as ei:
        c.connect()
    assert ei.value.error == "connect_failed"


def test_mqtt_311(broker: Broker) -> None:
    base = unique("v3")
    got: queue.Queue[Payload] = queue.Queue()
    with client(broker, protocol=4) as c:
        c.add_handler(f"{base}/#", lambda t, p: got.put(p))
        wait_for(lambda: broker.api().sessions.get(c.client_id).subscriptions, what="subscription")
        c.publish(f"{base}/a", {"v": 3})
        assert got.get(timeout=5) == {"v": 3}


def test_reconnect_after_dropped_socket_resubscribes(broker: Broker, proxy_factory: Any) -> None:
    """The client's TCP connection is cut: it reconnects (backoff from 0.5 s) and subscribes
    again, so a message published after the reconnect arrives."""
    proxy = proxy_factory(broker.port)
    base = unique("rc")
    got: queue.Queue[Payload] = queue.Queue()
    c = client(broker, port=proxy.port)

    @c.on_message(f"{base}/#")
    def h(topic: str, payload: Payload) -> None:
        got.put(payload)

    c.connect()
    try:
        c.publish(f"{base}/x", "before")
        assert got.get(timeout=5) == "before"
        proxy.drop()
        wait_for(lambda: c.connections >= 2 and c.is_connected, timeout=15, what="reconnection")
        api = broker.api()
        wait_for(lambda: any(s.filter == f"{base}/#" for s in api.sessions.get(c.client_id).subscriptions),
                 what="resubscription")
        api.publish(f"{base}/x", "after")
        assert got.get(timeout=5) == "after"
    finally:
        c.disconnect()


def test_reconnect_after_broker_restart(fresh_broker: Broker) -> None:
    """The broker restarts on the same ports and data dir: the client comes back and resubscribes."""
    b = fresh_broker
    base = unique("restart")
    got: queue.Queue[Payload] = queue.Queue()
    c = client(b)
    c.add_handler(f"{base}/#", lambda t, p: got.put(p), qos=1)
    c.connect()
    try:
        b.restart()
        wait_for(lambda: c.connections >= 2 and c.is_connected, timeout=20, what="reconnection")
        with b.api() as api:
            wait_for(lambda: any(s.filter == f"{base}/#" for s in api.sessions.get(c.client_id).subscriptions),
                     what="resubscription")
            api.publish(f"{base}/x", {"after": "restart"}, qos=1)
        assert got.get(timeout=5) == {"after": "restart"}
    finally:
        c.disconnect()


def test_loop_forever_returns_on_disconnect(broker: Broker) -> None:
    base = unique("lf")
    c = client(broker)
    done = threading.Event()

    @c.on_message(f"{base}/stop")
    def stop(topic: str, payload: Payload) -> None:
        c.disconnect()  # from the network thread itself

    def run() -> None:
        c.loop_forever()
        done.set()

    threading.Thread(target=run, daemon=True).start()
    wait_for(lambda: c.is_connected, what="connection")
    wait_for(lambda: broker.api().sessions.get(c.client_id).subscriptions, what="subscription")
    broker.api().publish(f"{base}/stop", "now")
    assert done.wait(10)
    assert not c.is_connected and not c.is_running
    wait_for(lambda: c.client_id not in [s.client_id for s in broker.api().sessions.list(state="all")],
             what="session gone after DISCONNECT")
