"""Tenant isolation and credential binding, tried as an attacker would (issue 11).

Each test is one attack from the threat model in docs/security.md, made with a client nobody here
wrote (httpx, paho-mqtt, websockets, raw sockets), and asserts that it fails. The broker runs
`--shards 2 --placement round-robin`, so consecutive connections sit on different shards.
"""

from __future__ import annotations

import time

import httpx
import pytest

from helpers import Client, unique, wait_until

pytestmark = pytest.mark.ringmq_only

PASSWORD = "correct horse battery"


def root_key(broker) -> str:
    path = broker.data_dir / "bootstrap-key"
    wait_until(path.exists, what="bootstrap key file")
    return path.read_text().strip()


def api(broker, key: str | None = None, **kw) -> httpx.Client:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.Client(base_url=f"http://{broker.host}:{broker.http_port}", headers=headers,
                        timeout=10, **kw)


@pytest.fixture
def admin(broker):
    """An httpx client with the root key (an `sk_` key of the `default` org)."""
    with api(broker, root_key(broker)) as client:
        yield client


def new_org(admin, name: str | None = None) -> tuple[str, str]:
    """Creates an org; returns (org_id, its first sk_ key)."""
    r = admin.post("/v1/orgs", json={"name": name or unique("org")})
    assert r.status_code == 201, r.text
    body = r.json()
    return body["org"]["id"], body["key"]["key"]


def new_key(client: httpx.Client, kind: str, **extra) -> dict:
    """Creates a key with `client`'s org key; the answer carries the secret as `key`."""
    r = client.post("/v1/keys", json={"name": unique("k"), "kind": kind, **extra})
    assert r.status_code == 201, r.text
    return r.json()


def mqtt(broker, username: str | None, password: str | None = PASSWORD, version: int = 5,
         client_id: str | None = None, expect_rc: int | None = 0, **kw) -> Client:
    c = Client(broker.host, broker.port, client_id, version=version, username=username,
               password=password, **kw)
    return c.connect(expect_rc=expect_rc)


# == 1. streams: SSE resume, unguessable ids, revocation closes streams (findings 1, 6, 8) ==========

import json  # noqa: E402
import re  # noqa: E402
import socket  # noqa: E402
import struct  # noqa: E402
import threading  # noqa: E402

from httpx_sse import connect_sse  # noqa: E402
from websockets.exceptions import ConnectionClosed, InvalidStatus  # noqa: E402
from websockets.sync.client import connect as ws_connect  # noqa: E402

STREAM_EVENT_ID = re.compile(r"^[0-9a-f]{32}-[0-9]+$")


class SseStream:
    """`GET /v1/stream` read by httpx-sse in a thread, until `done(events)` or the response ends.

    `events` holds every event but the `retry:`-only one; `opened` is set once the 200 head is in
    (the shard has registered the stream by then), `ended` when the reading stops."""

    def __init__(self, broker, key: str, query: str = "topic=%23", headers: dict | None = None,
                 done=None):
        self.url = f"http://{broker.host}:{broker.http_port}/v1/stream?{query}"
        self.headers = {"Authorization": f"Bearer {key}", **(headers or {})}
        self.done = done or (lambda events: False)
        self.events: list = []
        self.status: int | None = None
        self.opened = threading.Event()
        self.ended = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        assert self.opened.wait(5), "stream did not answer"

    def _run(self):
        try:
            with httpx.Client(timeout=httpx.Timeout(5, read=30)) as client:
                with connect_sse(client, "GET", self.url, headers=self.headers) as source:
                    self.status = source.response.status_code
                    self.opened.set()
                    if self.status != 200:
                        return
                    for event in source.iter_sse():
                        if event.event == "message" and not event.data:
                            continue  # the `retry:` field arrives as an event without data
                        self.events.append(event)
                        if self.done(self.events):
                            return
        except httpx.HTTPError:
            pass
        finally:
            self.opened.set()
            self.ended.set()

    def messages(self) -> list[dict]:
        return [json.loads(e.data) for e in self.events if e.event == "message"]

    def payloads(self) -> list[str]:
        return [m["payload"] for m in self.messages()]


def stream_saw(payload: str):
    """A `done` for SseStream: stop once a message with `payload` arrived."""
    return lambda events: any(e.event == "message" and json.loads(e.data)["payload"] == payload
                              for e in events)


def stream_ws(broker, key: str, query: str = "topic=%23"):
    return ws_connect(f"ws://{broker.host}:{broker.http_port}/v1/mqtt/stream?token={key}&{query}")


def stream_ws_payloads_until_closed(ws, timeout: float = 3.0) -> list[str]:
    """Frames' payloads until the server closes the WebSocket; fails if it stays open."""
    got = []
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        assert left > 0, f"the stream stayed open; got {got}"
        try:
            got.append(json.loads(ws.recv(timeout=left))["payload"])
        except ConnectionClosed:
            return got
        except TimeoutError:
            continue


def stream_publish(client: httpx.Client, topic: str, payload: str):
    r = client.post("/v1/publish", json={"topic": topic, "payload": payload})
    assert r.status_code == 202, r.text


def test_sse_resume_with_another_orgs_event_id_fails(broker, admin):
    """Finding 1: org B's pk_ key with org A's exact Last-Event-ID reattached A's kept stream."""
    org_a, sk_a = new_org(admin)
    org_b, sk_b = new_org(admin)
    with api(broker, sk_a) as a, api(broker, sk_b) as b:
        pk_a = new_key(a, "public")["key"]
        pk_a2 = new_key(a, "public")["key"]
        pk_b = new_key(b, "public")["key"]
        first = SseStream(broker, pk_a, "topic=payroll/%23", done=stream_saw("ceo-1"))
        stream_publish(a, "payroll/ceo", "ceo-1")
        first.thread.join(5)
        (event,) = first.events
        last_id = event.id
        # Unguessable: 128 random bits and a sequence number, not a small counter.
        assert STREAM_EVENT_ID.match(last_id), last_id
        time.sleep(0.3)  # the stream is kept, and fills, while its client is away
        stream_publish(a, "payroll/ceo", "ceo-2")
        time.sleep(0.2)

        # The kernel spreads HTTP connections over the two shards (SO_REUSEPORT): eight tries all
        # but surely reach the one that keeps A's stream.
        for attempt in range(8):
            sentinel = f"b-{attempt}"
            other = SseStream(broker, pk_b, "topic=payroll/%23", headers={"Last-Event-ID": last_id},
                              done=stream_saw(sentinel))
            stream_publish(b, "payroll/x", sentinel)
            other.thread.join(5)
            assert other.events and other.events[0].event == "gap", "a fresh stream, with a gap event"
            assert other.payloads() == [sentinel], "none of A's messages"
            assert {m["org_id"] for m in other.messages()} == {org_b}
            assert all(e.id != last_id and (not e.id or STREAM_EVENT_ID.match(e.id)) for e in other.events)

        # The same org with another key, or the same key with another filter: a fresh stream too.
        variants = [(pk_a2, "topic=payroll/%23"), (pk_a, "topic=%23"), (pk_a, "topic=payroll/%23&device=x")]
        for attempt, (key, query) in enumerate(variants * 4):
            sentinel = f"a-{attempt}"
            fresh = SseStream(broker, key, query, headers={"Last-Event-ID": last_id},
                              done=lambda events, s=sentinel: stream_saw(s)(events) or
                              any(e.event == "message" and "ceo" in e.data for e in events))
            time.sleep(0.1)
            stream_publish(a, "payroll/x" if "device" not in query else "payroll/y", sentinel)
            if "device" in query:
                time.sleep(0.5)  # nothing from device x arrives; only the gap shows
                assert fresh.events and fresh.events[0].event == "gap", query
                assert fresh.payloads() == [], query
                continue
            fresh.thread.join(5)
            assert fresh.events and fresh.events[0].event == "gap", (key, query)
            assert fresh.payloads() == [sentinel], (key, query)

        # A's own key and filter still resume it (so the id above was a live one).
        for _ in range(16):
            mine = SseStream(broker, pk_a, "topic=payroll/%23", headers={"Last-Event-ID": last_id},
                             done=lambda events: len(events) >= 1)
            mine.thread.join(5)
            if mine.events and mine.events[0].event == "gap":
                continue
            assert mine.payloads() == ["ceo-2"]
            break
        else:
            pytest.fail("never reached the shard that kept A's stream")


def test_sse_resume_with_hostile_last_event_ids_fails(broker, admin):
    """Finding 1: hostile Last-Event-ID values (huge, negative, junk, long) just get a fresh stream."""
    key = root_key(broker)
    values = ["4294967296", "18446744073709551615", "99999999999999999999999999", "-1", "abc",
              "0" * 32 + "-1", "f" * 32 + "-18446744073709551616", "1" * 4000, "%00%0a", "1 2"]
    for value in values:
        stream = SseStream(broker, key, "topic=hostile/%23", headers={"Last-Event-ID": value},
                           done=stream_saw("fresh"))
        assert stream.status == 200, value
        time.sleep(0.1)
        stream_publish(admin, "hostile/t", "fresh")
        stream.thread.join(5)
        assert [e.event for e in stream.events] == ["gap", "message"], value
        assert STREAM_EVENT_ID.match(stream.events[1].id)
    # Control bytes in the header never reach a stream: the request is refused as malformed, or
    # the value is ignored.
    for raw in [b"1\x01", b"\x00", b"1\x7f2", b"\t4294967296\t", b"\xff\xfe"]:
        with socket.create_connection((broker.host, broker.http_port), timeout=5) as s:
            s.sendall(b"GET /v1/stream?token=" + key.encode() + b" HTTP/1.1\r\nHost: x\r\n"
                      b"Last-Event-ID: " + raw + b"\r\n\r\n")
            head = s.recv(4096)
            if head.startswith(b"HTTP/1.1 200"):
                while b"event: gap" not in head:
                    more = s.recv(4096)
                    assert more, head
                    head += more
                assert b"\nid:" not in head, "nothing resumed"
            else:
                assert head.startswith(b"HTTP/1.1 400 "), head
    assert httpx.get(f"http://{broker.host}:{broker.http_port}/healthz").status_code == 200


def stream_revoked_event(stream: SseStream) -> dict:
    assert stream.ended.wait(2.5), "the SSE stream stayed open"
    assert stream.events and stream.events[-1].event == "revoked", stream.events
    body = json.loads(stream.events[-1].data)
    assert set(body) == {"error", "detail"}
    return body


def test_streams_survive_key_revocation_fails(broker, admin):
    """Finding 6: a /v1/stream and /v1/mqtt/stream kept receiving after DELETE /v1/keys/{id}."""
    org, sk = new_org(admin)
    with api(broker, sk) as a:
        pk = new_key(a, "public")
        sse = SseStream(broker, pk["key"], "topic=t/%23")
        # Several, so the kernel's spread of connections puts some on each shard.
        sockets = [stream_ws(broker, pk["key"], "topic=t/%23") for _ in range(4)]
        time.sleep(0.2)
        stream_publish(a, "t/1", "before")
        wait_until(lambda: sse.payloads() == ["before"], what="the SSE stream is live")
        for ws in sockets:
            assert json.loads(ws.recv(timeout=5))["payload"] == "before"
        started = time.monotonic()
        assert a.delete(f"/v1/keys/{pk['id']}").status_code == 204
        stream_publish(a, "t/1", "after")
        assert stream_revoked_event(sse)["error"] == "unauthorized"
        assert sse.payloads() == ["before"]
        for ws in sockets:
            assert stream_ws_payloads_until_closed(ws) == []
            assert ws.protocol.close_code == 1008
        assert time.monotonic() - started < 1.0, "at once: the control thread wakes every shard"
        with pytest.raises(InvalidStatus) as refused:
            stream_ws(broker, pk["key"])
        assert refused.value.response.status_code == 401


def test_streams_survive_org_deletion_fails(broker, admin):
    """Finding 6: deleting an org did not reach its open streams."""
    org, sk = new_org(admin)
    with api(broker, sk) as a:
        pk = new_key(a, "public")["key"]
    sse = SseStream(broker, sk, "topic=%23")
    ws = stream_ws(broker, pk)
    time.sleep(0.2)
    assert admin.delete(f"/v1/orgs/{org}").status_code == 204
    assert stream_revoked_event(sse)["error"] == "unauthorized"
    assert stream_ws_payloads_until_closed(ws) == []
    assert ws.protocol.close_code == 1008


def test_streams_survive_acl_change_fails(broker, admin):
    """Finding 6: deleting the allow rule of a pk_ key's ACL set left its streams open and resumable."""
    org, sk = new_org(admin)
    with api(broker, sk) as a:
        assert a.post("/v1/acl/sets", json={"name": "readers"}).status_code == 201
        rule = a.post("/v1/acl/rules", json={"set": "readers", "topic": "fin/#", "action": "subscribe",
                                             "permission": "allow"}).json()
        pk = new_key(a, "public", acl_sets=["readers"])["key"]
        # A kept stream (to be dropped with the right), and open ones spread over the shards.
        kept = SseStream(broker, pk, "topic=fin/%23", done=stream_saw("k"))
        stream_publish(a, "fin/pay", "k")
        kept.thread.join(5)
        last_id = kept.events[0].id
        sse = SseStream(broker, pk, "topic=fin/%23")
        sockets = [stream_ws(broker, pk, "topic=fin/%23") for _ in range(4)]
        time.sleep(0.2)
        assert a.delete(f"/v1/acl/rules/{rule['id']}").status_code == 204
        assert stream_revoked_event(sse)["error"] == "forbidden"
        for ws in sockets:
            assert stream_ws_payloads_until_closed(ws) == []
            assert ws.protocol.close_code == 1008
        # The right comes back, but the kept stream is gone: a resume gets a fresh stream.
        assert a.post("/v1/acl/rules", json={"set": "readers", "topic": "fin/#", "action": "subscribe",
                                             "permission": "allow"}).status_code == 201
        stream_publish(a, "fin/pay", "while-away")
        for attempt in range(4):
            again = SseStream(broker, pk, "topic=fin/%23", headers={"Last-Event-ID": last_id},
                              done=stream_saw(f"s-{attempt}"))
            time.sleep(0.1)
            stream_publish(a, "fin/pay", f"s-{attempt}")
            again.thread.join(5)
            assert again.events[0].event == "gap"
            assert again.payloads() == [f"s-{attempt}"]


def test_stream_ping_flood_without_reading_fails(broker):
    """Finding 8: a WebSocket stream's pong queue grew without bound for a client that never reads."""
    key = root_key(broker)

    def rss_kib() -> int:
        with open(f"/proc/{broker.proc.pid}/status") as status:
            return int(re.search(r"VmRSS:\s+(\d+)", status.read())[1])

    before = rss_kib()
    # Default socket buffers: a tiny receive buffer stalls loopback TCP both ways, which stops
    # the flood before it reaches the broker at all.
    s = socket.create_connection((broker.host, broker.http_port))
    s.sendall((f"GET /v1/mqtt/stream?token={key}&topic=nothing HTTP/1.1\r\nHost: x\r\n"
               "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
               "Sec-WebSocket-Version: 13\r\n\r\n").encode())
    assert b"101" in s.recv(200)
    ping = struct.pack("!BB", 0x89, 0x80 | 125) + b"\x00\x00\x00\x00" + b"p" * 125  # masked, mask 0
    burst = ping * 256
    s.settimeout(1)
    sent, stalls = 0, 0
    deadline = time.monotonic() + 15
    # Ping as fast as the broker takes them, never reading the pongs.
    while time.monotonic() < deadline and stalls < 3:
        try:
            s.sendall(burst)
            sent += len(burst)
        except TimeoutError:
            stalls += 1  # the broker reads no more (or TCP stalled both ways)
        except OSError:
            break  # reset: closed
    grown = rss_kib() - before
    # Now read: the pongs the broker managed to send, then the end of the connection.
    s.settimeout(5)
    closed = False
    try:
        while s.recv(65536):
            pass
        closed = True
    except (ConnectionResetError, BrokenPipeError):
        closed = True
    except TimeoutError:
        pass
    s.close()
    assert closed, f"the broker kept a non-reading ping flooder open ({sent} bytes of pings)"
    assert grown < 64 * 1024, f"memory grew by {grown} KiB with the flood"
    assert httpx.get(f"http://{broker.host}:{broker.http_port}/healthz").status_code == 200
    with stream_ws(broker, key, "topic=after") as ws:
        ws.ping().wait(5)


@pytest.mark.broker_config(org_limits={"streams_max": 2})
def test_streams_past_the_org_cap_fails(broker, admin):
    """Finding 7: one org could open any number of streams (org_limits.streams_max, per shard)."""
    org_a, sk_a = new_org(admin)
    org_b, sk_b = new_org(admin)
    open_ws, refused = [], None
    # Two shards with two streams each: the fifth try at the latest is refused.
    for _ in range(5):
        try:
            open_ws.append(stream_ws(broker, sk_a))
        except InvalidStatus as error:
            refused = error.response
            break
    assert refused is not None and len(open_ws) >= 2
    assert refused.status_code == 429
    body = json.loads(refused.body)
    assert body["error"] == "limit_exceeded" and "streams_max" in body["detail"]
    # An SSE stream counts the same way, and gets the same JSON.
    r = httpx.get(f"http://{broker.host}:{broker.http_port}/v1/stream?token={sk_a}", timeout=5) \
        if len(open_ws) == 4 else None
    if r is not None:
        assert r.status_code == 429 and r.json()["error"] == "limit_exceeded"
    # Another org is not affected.
    with stream_ws(broker, sk_b) as other:
        other.ping().wait(5)
    for ws in open_ws:
        ws.close()
    # Closed streams free their places.
    def opens() -> bool:
        try:
            stream_ws(broker, sk_a).close()
            return True
        except InvalidStatus:
            return False
    wait_until(opens, what="a stream opens again")


# == 2. sessions API and control plane: org checks, token exchange, org limits (findings 2, 5, 7, 8) =


# == 3. sessions belong to their principal; ACL changes reach live subscriptions (finding 3) ========


# == 4. browser origins, request bodies, $SYS (findings 4, 8) =======================================


# == 5. per-org caps on retained and offline-queue bytes (finding 7) ================================
