"""api.stream(): SSE messages, resume with Last-Event-ID after a dropped connection."""

from __future__ import annotations

import threading
import time
from typing import Any, Callable, Iterator

import pytest

from conftest import PASSWORD, Broker, unique
from ringmq import RingmqApi, RingmqClient, StreamMessage, StreamRevokedError
from ringmq.stream import parse_sse


def next_message(stream: Any, timeout: float = 10.0) -> StreamMessage:
    """next(stream) bounded in time (the stream's read timeout is longer)."""
    out: list[Any] = []

    def read() -> None:
        try:
            out.append(next(stream))
        except Exception as e:  # handed back to the test
            out.append(e)

    t = threading.Thread(target=read, daemon=True)
    t.start()
    t.join(timeout)
    assert out, "no stream message in time"
    if isinstance(out[0], Exception):
        raise out[0]
    assert isinstance(out[0], StreamMessage)
    return out[0]


@pytest.fixture
def soon(api: RingmqApi) -> Iterator[Callable[..., None]]:
    """soon(fn) runs fn in 0.3 s on another thread (once the stream had time to open); joined
    before `api` is closed."""
    timers: list[threading.Timer] = []

    def run(fn: Callable[[], object], delay: float = 0.3) -> None:
        t = threading.Timer(delay, fn)
        t.start()
        timers.append(t)

    yield run
    for t in timers:
        t.join(10)


def test_stream_yields_rest_published_messages(broker: Broker, api: RingmqApi, soon: Any) -> None:
    base = unique("st")
    with api.stream(topic=f"{base}/#") as stream:
        soon(lambda: api.publish(f"{base}/json", {"x": 1}))
        m = next_message(stream)
        assert (m.topic, m.payload, m.raw, m.qos, m.org_id) == (f"{base}/json", {"x": 1}, b'{"x":1}', 0, "default")
        assert m.id and stream.last_event_id == m.id and m.ts > 0 and m.ts_ms >= m.ts * 1000
        api.publish(f"{base}/bin", b"\x00\xff\x10")
        m2 = next_message(stream)
        assert (m2.payload, m2.raw) == (b"\x00\xff\x10", b"\x00\xff\x10")
        api.publish(f"{base}/text", "plain")
        assert next_message(stream).payload == "plain"


def test_stream_filters_by_device(broker: Broker, api: RingmqApi, soon: Any) -> None:
    base = unique("dev")
    c = RingmqClient(host=broker.host, port=broker.port, username="tester", password=PASSWORD,
                     client_id=unique("device"))
    c.connect()
    try:
        with api.stream(topic=f"{base}/#", device=c.client_id) as stream:
            def later() -> None:
                api.publish(f"{base}/from-rest", "ignored")
                c.publish(f"{base}/from-device", {"by": "device"}, qos=1)
            soon(later)
            m = next_message(stream)
            assert (m.topic, m.payload) == (f"{base}/from-device", {"by": "device"})
    finally:
        c.disconnect()


def test_stream_resumes_after_dropped_connection(broker: Broker, api: RingmqApi, proxy_factory: Any, soon: Any) -> None:
    """The stream's TCP connection is cut; messages published while it is down arrive after the
    automatic reconnect (Last-Event-ID), without a gap."""
    proxy = proxy_factory(broker.http_port)
    base = unique("resume")
    via_proxy = RingmqApi(url=f"http://127.0.0.1:{proxy.port}", key=broker.root_key)
    with via_proxy.stream(topic=f"{base}/#") as stream:
        soon(lambda: api.publish(f"{base}/1", "one"))
        first = next_message(stream)
        assert first.payload == "one"
        proxy.drop()
        api.publish(f"{base}/2", "two")
        api.publish(f"{base}/3", "three")
        second = next_message(stream, timeout=15)
        third = next_message(stream)
        assert [second.payload, third.payload] == ["two", "three"]
        assert stream.reconnects >= 1 and stream.gaps == 0
        assert second.id and second.id.split("-")[0] == first.id.split("-")[0]  # same stream, resumed
    via_proxy.close()


def test_stream_resume_with_explicit_last_event_id(broker: Broker, api: RingmqApi, soon: Any) -> None:
    base = unique("explicit")
    with api.stream(topic=f"{base}/#") as s1:
        soon(lambda: api.publish(f"{base}/a", "a"))
        a = next_message(s1)
    api.publish(f"{base}/b", "b")  # while no stream is open
    with api.stream(topic=f"{base}/#", last_event_id=a.id) as s2:
        assert next_message(s2).payload == "b"
        assert s2.gaps == 0


def test_stream_drop_connection_method_resumes(broker: Broker, api: RingmqApi, soon: Any) -> None:
    base = unique("drop")
    with api.stream(topic=f"{base}/#") as stream:
        soon(lambda: api.publish(f"{base}/a", 1))
        assert next_message(stream).payload == 1
        stream.drop_connection()
        api.publish(f"{base}/b", 2)
        assert next_message(stream, timeout=15).payload == 2
        assert stream.reconnects == 1


def test_stream_revoked_key(broker: Broker, api: RingmqApi, soon: Any) -> None:
    k = api.keys.create(unique("streamkey"), "secret")
    assert k.key
    base = unique("rev")
    with broker.api(k.key) as keyed, keyed.stream(topic=f"{base}/#") as stream:
        soon(lambda: api.publish(f"{base}/a", "x"))
        next_message(stream)
        api.keys.delete(k.id)
        with pytest.raises(StreamRevokedError) as ei:
            next_message(stream)
        assert ei.value.error in ("unauthorized", "forbidden")


def test_parse_sse() -> None:
    lines = ["retry: 2000", "", ": heartbeat", "", "id: s-1", "data: {\"a\":", "data: 1}", "",
             "event: gap", "data: {}", ""]
    evs = list(parse_sse(iter(lines)))
    assert [(e.event, e.id, e.data) for e in evs] == [("message", "s-1", "{\"a\":\n1}"), ("gap", None, "{}")]
