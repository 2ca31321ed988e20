"""The streams of the HTTP front door: `/v1/mqtt/stream` over WebSocket (the `websockets`
client) and `/v1/stream` as Server-Sent Events (`httpx-sse`), fed by MQTT publishers on the other
shard and by REST publish."""

from __future__ import annotations

import base64
import json
import socket
import threading
import time

import httpx
import pytest
from httpx_sse import connect_sse
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect as ws_connect

from helpers import Client, unique, wait_until
from test_control_plane import PASSWORD, allow, api, create_user, new_org, root_key

pytestmark = pytest.mark.ringmq_only


def ws_url(broker, query: str) -> str:
    return f"ws://{broker.host}:{broker.http_port}/v1/mqtt/stream?{query}"


def publisher(broker, **kw) -> Client:
    return Client(broker.host, broker.port, kw.pop("client_id", None) or unique("sp"), **kw).connect()


def next_frame(ws, timeout: float = 5.0) -> dict:
    return json.loads(ws.recv(timeout=timeout))


def test_websocket_stream_frames_and_filters(broker):
    key = root_key(broker)
    with ws_connect(ws_url(broker, f"token={key}&topic=devices/%2B/temp")) as ws:
        time.sleep(0.2)
        p = publisher(broker, client_id="dev-1")
        p.publish("devices/d1/temp", b"21.5", qos=1)
        p.publish("devices/d1/humidity", b"40", qos=1)
        p.publish("devices/d2/temp", b"\xff\x00", qos=0)
        first = next_frame(ws)
        assert first["topic"] == "devices/d1/temp" and first["payload"] == "21.5"
        assert first["is_base64"] is False and first["retained"] is False
        assert first["qos"] == 1 and first["org_id"] == "default"
        assert abs(first["ts"] - time.time()) < 5 and first["ts_ms"] // 1000 == first["ts"]
        second = next_frame(ws)
        assert second["topic"] == "devices/d2/temp" and second["is_base64"] is True
        assert base64.b64decode(second["payload"]) == b"\xff\x00"
        # A live publish with the retain flag reads as retained (the flag of the publish).
        p.publish("devices/d3/temp", b"19", qos=1, retain=True)
        third = next_frame(ws)
        assert third["topic"] == "devices/d3/temp" and third["retained"] is True
        p.close()
    with ws_connect(ws_url(broker, f"token={key}&device=dev-2")) as ws:
        time.sleep(0.2)
        other = publisher(broker, client_id="dev-3")
        other.publish("x", b"not me", qos=1)
        mine = publisher(broker, client_id="dev-2")
        mine.publish("x", b"me", qos=1)
        assert next_frame(ws)["payload"] == "me"
        other.close()
        mine.close()


def test_websocket_auth_by_header_and_errors(broker):
    key = root_key(broker)
    with ws_connect(ws_url(broker, "topic=a"), additional_headers={"Authorization": f"Bearer {key}"}) as ws:
        time.sleep(0.2)
        with api(broker, key) as admin:
            assert admin.post("/v1/publish", json={"topic": "a", "payload": "via rest"}).status_code == 202
        assert next_frame(ws)["payload"] == "via rest"
    for query, status in [("topic=a", 401), ("token=sk_nope", 401), (f"token={key}&topic=a/%23/b", 400),
                          (f"token={key}&colour=red", 400)]:
        with pytest.raises(InvalidStatus) as refused:
            ws_connect(ws_url(broker, query))
        assert refused.value.response.status_code == status, query
    with api(broker, key) as admin:
        rk = admin.post("/v1/keys", json={"name": "only-alerts", "kind": "restricted",
                                          "permissions": [{"action": "subscribe", "topic": "alerts/#"}]}).json()["key"]
    with pytest.raises(InvalidStatus) as refused:
        ws_connect(ws_url(broker, f"token={rk}&topic=devices/%23"))
    assert refused.value.response.status_code == 403
    with ws_connect(ws_url(broker, f"token={rk}&topic=alerts/%23")):
        pass


def test_stream_gets_retained_first_and_stays_in_its_org(broker):
    key = root_key(broker)
    with api(broker, key) as admin:
        admin.post("/v1/publish", json={"topic": "cfg/a", "payload": "kept", "retain": True, "qos": 1})
        org_b, key_b = new_org(admin, "stream-tenant")
    with ws_connect(ws_url(broker, f"token={key}&topic=cfg/%23")) as ws:
        m = next_frame(ws)
        assert (m["topic"], m["payload"], m["retained"]) == ("cfg/a", "kept", True)
    with ws_connect(ws_url(broker, f"token={key_b}")) as ws_b:
        time.sleep(0.2)
        with api(broker, key) as admin:
            admin.post("/v1/publish", json={"topic": "cfg/b", "payload": "default-org"})
        with api(broker, key_b) as b:
            b.post("/v1/publish", json={"topic": "cfg/b", "payload": "org-b"})
        m = next_frame(ws_b)
        assert m["payload"] == "org-b" and m["org_id"] == org_b
        with pytest.raises(TimeoutError):
            ws_b.recv(timeout=0.3)


def test_namespace_filter(broker):
    key = root_key(broker)
    with api(broker, key) as admin:
        allow(admin, "#")
        create_user(admin, "fleet-a-1", namespace="fleet-a")
        create_user(admin, "fleet-b-1", namespace="fleet-b")
    with ws_connect(ws_url(broker, f"token={key}&ns=fleet-b")) as ws:
        time.sleep(0.2)
        a = publisher(broker, username="fleet-a-1", password=PASSWORD)
        b = publisher(broker, username="fleet-b-1", password=PASSWORD)
        a.publish("t", b"from-a", qos=1)
        b.publish("t", b"from-b", qos=1)
        assert next_frame(ws)["payload"] == "from-b"
        a.close()
        b.close()


def test_ping_and_clean_close(broker):
    key = root_key(broker)
    ws = ws_connect(ws_url(broker, f"token={key}"))
    ws.ping().wait(5)  # the server answers pings with pongs
    ws.close()
    assert ws.protocol.close_code == 1000


@pytest.mark.broker_config(limits={"stream_ring_frames": 8})
def test_a_stream_that_does_not_read_drops_oldest_and_never_stalls_publishers(broker):
    key = root_key(broker)
    # A raw WebSocket client that upgrades and then never reads.
    s = socket.create_connection((broker.host, broker.http_port))
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.sendall((f"GET /v1/mqtt/stream?token={key} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
               "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
               "Sec-WebSocket-Version: 13\r\n\r\n").encode())
    assert b"101" in s.recv(200)
    p = publisher(broker)
    started = time.monotonic()
    # ~24 MB of frames: more than the kernel's socket buffers can hide.
    for i in range(3000):
        p.publish("flood", b"x" * 8000, qos=1 if i % 100 == 99 else 0)
    assert time.monotonic() - started < 30, "publishers must not be held up by a stream"

    def dropped() -> float:
        text = httpx.get(f"http://{broker.host}:{broker.http_port}/metrics").text
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                   if line.startswith("ringmq_stream_frames_dropped_total{"))
    wait_until(lambda: dropped() > 0, what="dropped frames counted")
    p.close()
    s.close()


def test_shutdown_closes_streams_with_1001(broker):
    key = root_key(broker)
    ws = ws_connect(ws_url(broker, f"token={key}"))
    time.sleep(0.2)
    broker.stop()
    with pytest.raises(ConnectionClosed):
        ws.recv(timeout=5)
    assert ws.protocol.close_code == 1001


def test_sse_stream_events_ids_and_last_event_id(broker):
    key = root_key(broker)
    base = f"http://{broker.host}:{broker.http_port}"
    headers = {"Authorization": f"Bearer {key}"}
    got: list = []

    def listen(extra: dict, count: int, out: list):
        with httpx.Client(timeout=10) as client:
            with connect_sse(client, "GET", f"{base}/v1/stream?topic=sse/%23", headers={**headers, **extra}) as source:
                for event in source.iter_sse():
                    if not event.data and event.event == "message":
                        continue  # the `retry:` field arrives as an event without data
                    out.append(event)
                    if len(out) >= count:
                        return

    t = threading.Thread(target=listen, args=({}, 1, got), daemon=True)
    t.start()
    time.sleep(0.3)
    with api(broker, key) as admin:
        admin.post("/v1/publish", json={"topic": "sse/1", "payload": "one"})
        t.join(5)
        assert got and json.loads(got[0].data)["payload"] == "one"
        last_id = got[0].id
        # `{resume token: 32 hex digits}-{sequence number}` (docs/api.md).
        token, _, seq = last_id.partition("-")
        assert len(token) == 32 and int(token, 16) >= 0 and seq.isdigit(), last_id
        # While the client is away its ring keeps filling (on the shard that served it).
        time.sleep(0.2)
        admin.post("/v1/publish", json={"topic": "sse/2", "payload": "two"})
        admin.post("/v1/publish", json={"topic": "sse/3", "payload": "three"})
        resumed = False
        for _ in range(12):
            events: list = []
            t = threading.Thread(target=listen, args=({"Last-Event-ID": last_id}, 2, events), daemon=True)
            t.start()
            t.join(3)
            if events and events[0].event == "gap":
                continue  # landed on the other shard: the ring is not there
            assert [json.loads(e.data)["payload"] for e in events] == ["two", "three"]
            resumed = True
            break
        assert resumed, "never reconnected to the shard that kept the stream"

    events: list = []
    t = threading.Thread(target=listen, args=({"Last-Event-ID": "999"}, 1, events), daemon=True)
    t.start()
    t.join(3)
    assert events and events[0].event == "gap"


def test_sse_requires_a_key(broker):
    r = httpx.get(f"http://{broker.host}:{broker.http_port}/v1/stream")
    assert r.status_code == 401


def test_stream_tokens_are_redacted_in_the_log(broker):
    key = root_key(broker)
    with ws_connect(ws_url(broker, f"token={key}&topic=log/%23")):
        time.sleep(0.2)
    time.sleep(0.2)
    log = broker.log_path.read_text(errors="replace")
    assert "token=***" in log
    assert key not in log


def test_cors_lets_other_origins_publish_and_stream(broker):
    key = root_key(broker)
    base = f"http://{broker.host}:{broker.http_port}"
    pre = httpx.options(f"{base}/v1/publish", headers={"Origin": "https://app.example",
                                                      "Access-Control-Request-Method": "POST"})
    assert pre.status_code == 204
    assert "Authorization" in pre.headers["access-control-allow-headers"]
    r = httpx.post(f"{base}/v1/publish", json={"topic": "c", "payload": "x"},
                   headers={"Authorization": f"Bearer {key}", "Origin": "https://app.example"})
    assert r.headers["access-control-allow-origin"] == "*"
    assert "X-RateLimit-Remaining" in r.headers["access-control-expose-headers"]
    with httpx.stream("GET", f"{base}/v1/stream?token={key}", timeout=5) as s:
        assert s.headers["access-control-allow-origin"] == "*"
        assert s.headers["content-type"] == "text/event-stream"
