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


def publish_until_seen(client: httpx.Client, stream: SseStream, topic: str, payload: str,
                       timeout: float = 5.0):
    """Publish until `stream` (whose `done` waits for `payload`) ends.

    A stream is registered on its own shard when its 200 head is sent, but a REST publish may be
    routed by another shard, whose replica learns the new filter over the mesh a moment later: a
    single publish can race it. A repeat can therefore arrive twice; callers assert on what must
    not arrive, not on an exact count."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        stream_publish(client, topic, payload)
        if stream.ended.wait(0.5):
            return
    pytest.fail(f"{payload!r} never reached the stream")


def test_sse_resume_with_another_orgs_event_id_fails(broker, admin):
    """Finding 1: org B's pk_ key with org A's exact Last-Event-ID reattached A's kept stream."""
    org_a, sk_a = new_org(admin)
    org_b, sk_b = new_org(admin)
    with api(broker, sk_a) as a, api(broker, sk_b) as b:
        pk_a = new_key(a, "public")["key"]
        pk_a2 = new_key(a, "public")["key"]
        pk_b = new_key(b, "public")["key"]
        first = SseStream(broker, pk_a, "topic=payroll/%23", done=stream_saw("ceo-1"))
        publish_until_seen(a, first, "payroll/ceo", "ceo-1")
        last_id = first.events[-1].id
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
            publish_until_seen(b, other, "payroll/x", sentinel)
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
            if "device" in query:
                time.sleep(0.1)
                stream_publish(a, "payroll/y", sentinel)
                time.sleep(0.5)  # nothing from device x arrives; only the gap shows
                assert fresh.events and fresh.events[0].event == "gap", query
                assert fresh.payloads() == [], query
                continue
            publish_until_seen(a, fresh, "payroll/x", sentinel)
            assert fresh.events and fresh.events[0].event == "gap", (key, query)
            assert fresh.payloads()[-1] == sentinel, (key, query)
            assert not any("ceo" in p for p in fresh.payloads()), (key, query)

        # A's own key and filter still resume it (so the id above was a live one).
        for _ in range(16):
            mine = SseStream(broker, pk_a, "topic=payroll/%23", headers={"Last-Event-ID": last_id},
                             done=lambda events: events[0].event == "gap" or stream_saw("ceo-2")(events))
            mine.thread.join(5)
            if mine.events and mine.events[0].event == "gap":
                continue
            # What was kept after the resumed id: ceo-2 (and a late repeat of ceo-1, if any).
            assert mine.payloads()[-1] == "ceo-2"
            assert set(mine.payloads()) <= {"ceo-1", "ceo-2"}
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
        publish_until_seen(admin, stream, "hostile/t", "fresh")
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
        # Every stream is live once each has seen a "before" (repeated: see publish_until_seen).
        waiting = list(sockets)
        deadline = time.monotonic() + 5
        while waiting or "before" not in sse.payloads():
            assert time.monotonic() < deadline, "the streams never went live"
            stream_publish(a, "t/1", "before")
            for ws in list(waiting):
                try:
                    assert json.loads(ws.recv(timeout=0.3))["payload"] == "before"
                    waiting.remove(ws)
                except TimeoutError:
                    pass
            time.sleep(0.1)
        started = time.monotonic()
        assert a.delete(f"/v1/keys/{pk['id']}").status_code == 204
        stream_publish(a, "t/1", "after")
        assert stream_revoked_event(sse)["error"] == "unauthorized"
        assert set(sse.payloads()) == {"before"}
        for ws in sockets:
            assert set(stream_ws_payloads_until_closed(ws)) <= {"before"}
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
        publish_until_seen(a, kept, "fin/pay", "k")
        last_id = kept.events[-1].id
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
            publish_until_seen(a, again, "fin/pay", f"s-{attempt}")
            assert again.events[0].event == "gap"
            assert again.payloads()[-1] == f"s-{attempt}"
            assert not {"k", "while-away"} & set(again.payloads())


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

TX_SECRET = "issue-11-token-exchange-secret-0123456789"


def tx_provider(name: str, org_id: str, **extra) -> dict:
    """An HS256 `[[auth.providers]]` table serving `org_id`."""
    return {"name": name, "org_id": org_id, "issuer": f"https://{name}.test/", "algorithm": "HS256",
            "secret": TX_SECRET, **extra}


def tx_token(provider: str, jti: str | None = None, ttl: int = 60, **claims) -> str:
    import jwt
    body = {"iss": f"https://{provider}.test/", "sub": "agent", "exp": int(time.time()) + ttl, **claims}
    if jti is not None:
        body["jti"] = jti
    return jwt.encode(body, TX_SECRET, algorithm="HS256")


def assert_error(r: httpx.Response, status, code: str | None = None) -> dict:
    statuses = status if isinstance(status, tuple) else (status,)
    assert r.status_code in statuses, f"{r.status_code} {r.text}"
    assert r.headers["content-type"].startswith("application/json"), r.headers
    body = r.json()
    assert set(body) == {"error", "detail"}, body
    if code:
        assert body["error"] == code, body
    return body


def test_sessions_api_reaching_another_orgs_session_fails(broker, admin):
    """Finding 2: a default-org key cannot read, disconnect or delete org B's session."""
    b_id, b_key = new_org(admin)
    with api(broker, b_key) as b:
        assert b.post("/v1/acl/rules", json={"topic": "#", "permission": "allow",
                                             "action": "all"}).status_code == 201
        assert b.post("/v1/users", json={"username": "dev", "password": PASSWORD}).status_code == 201
        cid = unique("b-dev")
        victim = mqtt(broker, f"dev@{b_id}", client_id=cid, clean=False, session_expiry=600)
        assert victim.subscribe("b/secret", qos=1) == [1]
        # The router's org scope of org N is `$\0{N}/`; org B is one of the first few.
        ids = [f"%24%00{n}%2F{cid}" for n in range(0, 6)] + [cid, f"%24%00{b_id}%2F{cid}"]
        for enc in ids:
            r = admin.get(f"/v1/sessions/{enc}")
            assert r.status_code in (400, 404), (enc, r.status_code, r.text)
            assert_error(r, (400, 404))
            r = admin.post(f"/v1/sessions/{enc}/disconnect")
            assert_error(r, (400, 404))
            r = admin.delete(f"/v1/sessions/{enc}")
            assert_error(r, (400, 404))
        listed = [s["client_id"] for s in admin.get("/v1/sessions", params={"state": "all"}).json()["items"]]
        assert cid not in listed and not any(cid in c for c in listed)
        # B's session is still there, connected, with its subscription.
        victim.expect_none(0.3)
        assert victim.is_connected()
        r = b.get(f"/v1/sessions/{cid}")
        assert r.status_code == 200, r.text
        assert r.json()["connected"] is True
        assert r.json()["subscriptions"] == [{"filter": "b/secret", "qos": 1}]
        victim.close()


def test_ids_with_control_bytes_in_routes_fail(broker, admin):
    """Finding 2: NUL, LF and other control bytes in path ids are refused with 400."""
    for path in ["/v1/users/al%00ice", "/v1/users/al%0aice", "/v1/users/%24%001%2Falice",
                 "/v1/keys/key_%00x", "/v1/keys/key_%0ax", "/v1/acl/sets/default%00",
                 "/v1/acl/rules/rule_%0d", "/v1/orgs/org_%00x", "/v1/sessions/a%0ab",
                 "/v1/sessions/a%00b", "/v1/sessions/a%7fb", "/v1/acl/rules?set=a%00b"]:
        assert_error(admin.get(path), 400, "bad_request")
    assert_error(admin.delete("/v1/users/al%00ice"), 400, "bad_request")
    assert_error(admin.patch("/v1/keys/key_%00x", json={"name": "x"}), 400, "bad_request")


@pytest.mark.broker_config(auth={"providers": [tx_provider("idp-default", "default"),
                                               tx_provider("idp-ghost", "org_doesnotexist")]})
def test_token_exchange_across_orgs_fails(broker, admin):
    """Finding 5: a provider's token buys credentials only in the org the provider serves."""
    b_id, b_key = new_org(admin)
    with api(broker, b_key) as b:
        # B's key presents the default org's provider's token, by issuer and by name.
        body = assert_error(b.post("/v1/token-exchange", json={"token": tx_token("idp-default", unique("j"))}),
                            403, "forbidden")
        assert "does not serve this org" in body["detail"]
        assert_error(b.post("/v1/token-exchange", json={"token": tx_token("idp-default", unique("j")),
                                                        "provider": "idp-default"}), 403, "forbidden")
    # A provider whose org does not exist: the broker started, its tokens buy nothing.
    body = assert_error(admin.post("/v1/token-exchange", json={"token": tx_token("idp-ghost", unique("j"))}),
                        403, "forbidden")
    assert "idp-ghost" in body["detail"] and "does not exist" in body["detail"]
    assert "does not exist" in broker.log_path.read_text(errors="replace")
    r = admin.post("/v1/token-exchange", json={"token": tx_token("idp-default", unique("j"))})
    assert r.status_code == 201, r.text
    assert r.json()["username"].endswith("@default")

    # Bound to B after a restart: now B's key is served and the default org's key is not.
    broker.config["auth"]["providers"] = [tx_provider("idp-b", b_id)]
    broker.restart()
    with api(broker, b_key) as b:
        r = b.post("/v1/token-exchange", json={"token": tx_token("idp-b", unique("j"))})
        assert r.status_code == 201, r.text
        creds = r.json()
        assert creds["username"].endswith(f"@{b_id}")
    with api(broker, root_key(broker)) as root:
        assert_error(root.post("/v1/token-exchange", json={"token": tx_token("idp-b", unique("j"))}),
                     403, "forbidden")
    c = mqtt(broker, creds["username"], creds["password"])
    c.close()


@pytest.mark.broker_config(auth={"providers": [tx_provider("idp", "default"),
                                               tx_provider("lax", "default", require_jti=False),
                                               tx_provider("fenced", "default", topics=["devices/#"])]})
def test_token_exchange_replay_and_unbounded_tokens_fail(broker, admin):
    """Finding 5: a token is exchanged once; no jti, long-lived or out-of-bounds tokens are refused."""
    token = tx_token("idp", unique("jti"))
    assert admin.post("/v1/token-exchange", json={"token": token}).status_code == 201
    body = assert_error(admin.post("/v1/token-exchange", json={"token": token}), 409, "token_replayed")
    assert "once" in body["detail"]
    # Also after a restart: exchanged ids are kept in the store until the token expires.
    broker.restart()
    with api(broker, root_key(broker)) as root:
        assert_error(root.post("/v1/token-exchange", json={"token": token}), 409, "token_replayed")
        # No jti: refused, unless the provider says require_jti = false; then the token itself
        # is remembered and still exchanged once.
        body = assert_error(root.post("/v1/token-exchange", json={"token": tx_token("idp")}), 401)
        assert "jti" in body["detail"]
        lax = tx_token("lax")
        assert root.post("/v1/token-exchange", json={"token": lax}).status_code == 201
        assert_error(root.post("/v1/token-exchange", json={"token": lax}), 409, "token_replayed")
        # A token valid for more than 24 h would have to be remembered as long: refused.
        body = assert_error(root.post("/v1/token-exchange",
                                      json={"token": tx_token("idp", unique("j"), ttl=2 * 86400)}), 401)
        assert "expires more than" in body["detail"]
        # A provider's topics bound what its tokens may claim.
        r = root.post("/v1/token-exchange", json={"token": tx_token(
            "fenced", unique("j"), mqtt_publish=["devices/d1/up"], mqtt_subscribe=["devices/d1/#"])})
        assert r.status_code == 201, r.text
        body = assert_error(root.post("/v1/token-exchange", json={"token": tx_token(
            "fenced", unique("j"), mqtt_publish=["devices/d1/up"], mqtt_subscribe=["#"])}), 401)
        assert "outside the topics" in body["detail"]


@pytest.mark.broker_config(auth={"providers": [tx_provider("idp", "default")]},
                           org_limits={"token_exchanges_per_minute_max": 3})
def test_token_exchange_flood_fails(broker, admin):
    """Finding 5: token exchanges are rate-limited per org (429, Retry-After, JSON)."""
    for _ in range(3):
        assert admin.post("/v1/token-exchange", json={"token": tx_token("idp", unique("j"))}).status_code == 201
    r = admin.post("/v1/token-exchange", json={"token": tx_token("idp", unique("j"))})
    body = assert_error(r, 429, "rate_limited")
    assert "token_exchanges_per_minute_max" in body["detail"]
    assert 1 <= int(r.headers["retry-after"]) <= 60


def test_org_key_raising_its_own_limits_fails(broker, admin):
    """Finding 7: only the root key sets an org's rate, burst, quota and connection limit."""
    b_id, b_key = new_org(admin)
    with api(broker, b_key) as b:
        before = b.get("/v1/org").json()["settings"]
        for field in ("rate_limit_per_sec", "rate_burst", "monthly_quota", "connections_max"):
            body = assert_error(b.patch("/v1/org", json={"settings": {field: 10**12}}), 403, "forbidden")
            assert "root key" in body["detail"]
        assert_error(b.patch("/v1/org", json={"name": "B2", "settings": {"rate_burst": 1}}), 403)
        assert b.get("/v1/org").json()["settings"] == before
        # The org key may still read its settings and rename its org.
        r = b.patch("/v1/org", json={"name": "B2"})
        assert r.status_code == 200, r.text
        assert r.json()["name"] == "B2" and r.json()["settings"] == before
        # The root key sets them, for B and for the default org.
        r = admin.patch(f"/v1/orgs/{b_id}", json={"settings": {"rate_burst": 5, "connections_max": 3}})
        assert r.status_code == 200, r.text
        # B's management requests drew on its bucket, now of 5: let it refill (100/s).
        time.sleep(0.2)
        assert b.get("/v1/org").json()["settings"]["connections_max"] == 3
        assert_error(b.patch(f"/v1/orgs/{b_id}", json={"settings": {"rate_burst": 500}}), 403, "forbidden")
    r = admin.patch("/v1/org", json={"settings": {"rate_burst": 300}})
    assert r.status_code == 200 and r.json()["settings"]["rate_burst"] == 300

    # The CLI: `orgs update` with the root key; `org update` of settings with B's key is refused.
    import json
    import os
    import subprocess
    from pathlib import Path
    binary = os.environ.get("RINGMQ_BIN") or "target/debug/ringmq"
    if not os.path.isabs(binary):
        binary = str(Path(__file__).resolve().parents[2] / binary)

    def cli(key: str, *args: str) -> subprocess.CompletedProcess:
        env = dict(os.environ, RINGMQ_URL=f"http://{broker.host}:{broker.http_port}", RINGMQ_KEY=key,
                   RINGMQ_CONFIG_DIR=str(broker.workdir / "cli-config"))
        return subprocess.run([binary, *args, "--json"], env=env, capture_output=True, text=True, timeout=30)

    p = cli(root_key(broker), "orgs", "update", b_id, "--rate-limit", "7")
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["settings"]["rate_limit_per_sec"] == 7
    p = cli(b_key, "org", "update", "--connections-max", "100000000")
    assert p.returncode == 1 and "root key" in p.stdout + p.stderr, (p.stdout, p.stderr)


@pytest.mark.broker_config(org_limits={"users_max": 2, "acl_rules_max": 2, "keys_max": 2})
def test_org_past_its_caps_fails(broker, admin):
    """Finding 7: users, ACL rules and keys per org are capped (403 limit_exceeded), per org."""
    b_id, b_key = new_org(admin)
    with api(broker, b_key) as b:
        for client in (admin, b):
            for n in range(2):
                assert client.post("/v1/users", json={"username": f"u{n}", "password": PASSWORD}).status_code == 201
                assert client.post("/v1/acl/rules", json={"topic": f"t{n}/#", "permission": "allow",
                                                          "action": "all"}).status_code == 201
            # Each org starts with one key (the root key, B's first key).
            assert client.post("/v1/keys", json={"name": "k", "kind": "public"}).status_code == 201
        # The default org at its caps...
        body = assert_error(admin.post("/v1/users", json={"username": "u9", "password": PASSWORD}),
                            403, "limit_exceeded")
        assert "users_max" in body["detail"]
        body = assert_error(admin.post("/v1/acl/rules", json={"topic": "x/#", "permission": "allow",
                                                              "action": "all"}), 403, "limit_exceeded")
        assert "acl_rules_max" in body["detail"]
        body = assert_error(admin.post("/v1/keys", json={"name": "k", "kind": "secret"}), 403, "limit_exceeded")
        assert "keys_max" in body["detail"]
        # ... does not stop B's own changes, and B at its cap is refused the same way.
        assert b.delete("/v1/users/u0").status_code == 204
        assert b.post("/v1/users", json={"username": "u8", "password": PASSWORD}).status_code == 201
        assert_error(b.post("/v1/users", json={"username": "u9", "password": PASSWORD}), 403, "limit_exceeded")
        # A revoked key no longer counts.
        keys = b.get("/v1/keys").json()["items"]
        public = next(k for k in keys if k["kind"] == "public")
        assert b.delete(f"/v1/keys/{public['id']}").status_code == 204
        assert b.post("/v1/keys", json={"name": "k2", "kind": "public"}).status_code == 201


def test_data_files_readable_by_others_fails(broker, admin):
    """Finding 8: the data dir is 0700 and ringmq.db and its journals 0600."""
    import os
    import stat
    # The harness made the dir with the default umask (0755): the broker narrowed it.
    assert admin.post("/v1/users", json={"username": "modes", "password": PASSWORD}).status_code == 201
    assert stat.S_IMODE(os.stat(broker.data_dir).st_mode) == 0o700
    files = [broker.data_dir / name for name in ("ringmq.db", "ringmq.db-wal", "ringmq.db-shm",
                                                  "bootstrap-key")]
    assert files[0].exists()
    for path in files:
        if path.exists():
            assert stat.S_IMODE(os.stat(path).st_mode) == 0o600, path
    assert "narrowed it to 0700" in broker.log_path.read_text(errors="replace")


def test_parallel_login_burst_outrunning_the_throttle_fails(broker, admin):
    """Finding 8: a burst of parallel wrong-password CONNECTs gets at most 10 password checks."""
    import threading

    from mqttraw import CONNACK, RawClient, connect_packet
    assert admin.post("/v1/users", json={"username": "victim", "password": PASSWORD}).status_code == 201
    socks = [RawClient(broker.host, broker.port, 5, timeout=30) for _ in range(40)]
    packets = [connect_packet(unique("g"), 5, username="victim", password=b"wrong-password-%d" % i)
               for i in range(40)]
    go = threading.Event()
    acks: list = [None] * 40

    def attempt(i: int) -> None:
        go.wait()
        socks[i].send(packets[i])
        acks[i] = socks[i].expect(CONNACK)

    threads = [threading.Thread(target=attempt, args=(i,)) for i in range(40)]
    for t in threads:
        t.start()
    go.set()
    for t in threads:
        t.join(60)
    for s in socks:
        s.close()
    assert all(a is not None for a in acks), acks
    assert all(a.reason_code == 0x86 for a in acks), acks
    reasons = [a.props.get("reason_string", "") for a in acks]
    checked = sum("bad username or password" in r for r in reasons)
    throttled = sum("too many failed logins" in r for r in reasons)
    assert checked <= 10 and throttled >= 30, reasons
    # The right password is refused, unchecked, for the rest of the minute.
    r = RawClient(broker.host, broker.port, 5)
    ack = r.connect(unique("g"), username="victim", password=PASSWORD.encode(), expect_ok=False)
    assert ack.reason_code == 0x86 and "too many" in ack.props.get("reason_string", ""), ack
    r.close()



# == 3. sessions belong to their principal; ACL changes reach live subscriptions (finding 3) ========

def _user(admin, username: str, topic: str | None = None) -> None:
    """A user of the default org with its own rule set allowing `topic` (if any)."""
    sets = []
    if topic is not None:
        name = f"set-{username}"
        assert admin.post("/v1/acl/sets", json={"name": name}).status_code == 201
        r = admin.post("/v1/acl/rules", json={"topic": topic, "action": "all", "permission": "allow",
                                                "set": name})
        assert r.status_code == 201, r.text
        sets = [name]
    r = admin.post("/v1/users", json={"username": username, "password": PASSWORD, "acl_sets": sets})
    assert r.status_code == 201, r.text


@pytest.mark.parametrize("version", [3, 5])
def test_another_user_with_the_same_client_id_gets_no_session_fails(broker, admin, version):
    """Finding 3: mallory reusing alice's client id must not inherit her queued fin/ messages."""
    _user(admin, "alice", "fin/#")
    _user(admin, "mallory", "pub/#")
    _user(admin, "payer", "fin/#")
    cid = unique("shared-id")
    alice = mqtt(broker, "alice", client_id=cid, version=version, clean=False,
                 session_expiry=600 if version == 5 else None)
    alice.subscribe("fin/#", qos=1)
    alice.disconnect()
    payer = mqtt(broker, "payer")
    payer.publish("fin/pay", b"salary", qos=1).wait_for_publish(5)
    # v5: 0x87 Not authorized; v3.1.1: 5 (paho reports both as 0x87).
    expect = 0x87
    mallory = mqtt(broker, "mallory", client_id=cid, version=version, clean=False,
                   session_expiry=600 if version == 5 else None, expect_rc=expect)
    mallory.expect_none(0.5)
    mallory.close()
    # alice's session, with its queued message, is intact.
    back = mqtt(broker, "alice", client_id=cid, version=version, clean=False,
                session_expiry=600 if version == 5 else None)
    assert back.session_present is True
    msg = back.get()
    assert (msg.topic, msg.payload) == ("fin/pay", b"salary")
    back.close()
    payer.close()


def test_another_user_cannot_take_over_a_live_connection_fails(broker, admin):
    """Finding 3: a second principal's CONNECT with a live client id neither kicks nor joins it."""
    _user(admin, "alice", "fin/#")
    _user(admin, "mallory", "pub/#")
    cid = unique("live-id")
    alice = mqtt(broker, "alice", client_id=cid)
    alice.subscribe("fin/#", qos=1)
    mqtt(broker, "mallory", client_id=cid, expect_rc=0x87).close()
    assert alice.is_connected()
    # The same user may take its own session over, as MQTT says.
    again = mqtt(broker, "alice", client_id=cid)
    assert alice.wait_disconnected(3.0) == 0x8E
    again.close()
    alice.close()


def test_an_anonymous_client_cannot_take_a_users_session_fails(broker, admin):
    """Finding 3: anonymous (loopback default) is a principal of its own, not a wildcard."""
    _user(admin, "alice", "fin/#")
    cid = unique("anon-id")
    alice = mqtt(broker, "alice", client_id=cid, clean=False, session_expiry=600)
    alice.subscribe("fin/#", qos=1)
    alice.disconnect()
    anon = Client(broker.host, broker.port, cid, clean=False, session_expiry=600)
    anon.connect(expect_rc=0x87)
    anon.close()


def test_deleting_the_session_frees_the_client_id(broker, admin):
    """Finding 3: the documented way to hand a client id to another user is the sessions API."""
    _user(admin, "alice", "fin/#")
    _user(admin, "bob", "fin/#")
    cid = unique("handover")
    alice = mqtt(broker, "alice", client_id=cid, clean=False, session_expiry=600)
    alice.subscribe("fin/#", qos=1)
    alice.disconnect()
    mqtt(broker, "bob", client_id=cid, expect_rc=0x87).close()
    assert admin.delete(f"/v1/sessions/{cid}").status_code == 204
    bob = mqtt(broker, "bob", client_id=cid, clean=False, session_expiry=600)
    assert bob.session_present is False
    bob.close()


def test_subscription_outlives_the_rule_that_allowed_it_fails(broker, admin):
    """Finding 3: an ACL change removes live subscriptions it no longer allows, on every shard."""
    _user(admin, "watcher")
    r = admin.post("/v1/acl/rules", json={"topic": "fin/#", "action": "subscribe", "permission": "allow",
                                        "set": "default"})
    assert r.status_code == 201, r.text
    rule = r.json()["id"]
    admin.post("/v1/acl/rules", json={"topic": "#", "action": "publish", "permission": "allow"})
    subs = [mqtt(broker, "watcher") for _ in range(2)]  # one per shard
    for c in subs:
        assert c.subscribe("fin/#", qos=1) == [1]
    pub = Client(broker.host, broker.port)  # anonymous: every right on a loopback broker
    pub.connect()
    pub.publish("fin/a", b"before", qos=1).wait_for_publish(5)
    for c in subs:
        assert c.get().payload == b"before"
    assert admin.delete(f"/v1/acl/rules/{rule}").status_code == 204
    time.sleep(0.5)
    pub.publish("fin/a", b"after", qos=1).wait_for_publish(5)
    for c in subs:
        c.expect_none(0.5)
        assert c.is_connected()
    sessions = {s["client_id"]: s for s in admin.get("/v1/sessions").json()["items"]}
    for c in subs:
        assert sessions[c.client_id]["subscriptions"] == []
    for c in subs + [pub]:
        c.close()


def test_offline_session_resumes_with_revoked_subscriptions_fails(broker, admin):
    """Finding 3: a persistent session resumed after a rule change resumes only what is allowed,
    and its queued messages for topics no longer allowed are gone."""
    _user(admin, "sleeper")
    r = admin.post("/v1/acl/rules", json={"topic": "fin/#", "action": "subscribe", "permission": "allow"})
    rule = r.json()["id"]
    admin.post("/v1/acl/rules", json={"topic": "ok/#", "action": "subscribe", "permission": "allow"})
    cid = unique("sleeper")
    c = mqtt(broker, "sleeper", client_id=cid, clean=False, session_expiry=600)
    c.subscribe("fin/#", qos=1)
    c.subscribe("ok/#", qos=1)
    c.disconnect()
    pub = Client(broker.host, broker.port)
    pub.connect()
    pub.publish("fin/x", b"secret", qos=1).wait_for_publish(5)
    pub.publish("ok/x", b"fine", qos=1).wait_for_publish(5)
    assert admin.delete(f"/v1/acl/rules/{rule}").status_code == 204
    time.sleep(0.5)
    back = mqtt(broker, "sleeper", client_id=cid, clean=False, session_expiry=600)
    assert back.session_present is True
    got = back.drain(1.0)
    assert [(m.topic, m.payload) for m in got] == [("ok/x", b"fine")]
    pub.publish("fin/y", b"later", qos=1).wait_for_publish(5)
    back.expect_none(0.5)
    back.close()
    pub.close()


def test_deleting_a_user_discards_its_persistent_sessions(broker, admin):
    """Finding 3: a namesake created later must not inherit a deleted user's session."""
    _user(admin, "temp", "t/#")
    cid = unique("temp")
    c = mqtt(broker, "temp", client_id=cid, clean=False, session_expiry=600)
    c.subscribe("t/#", qos=1)
    c.disconnect()
    assert admin.delete("/v1/users/temp").status_code == 204
    wait_until(lambda: admin.get(f"/v1/sessions/{cid}").status_code == 404, what="session discarded")
    _user(admin, "temp2", "t/#")
    r = admin.post("/v1/users", json={"username": "temp", "password": PASSWORD})
    assert r.status_code == 201
    again = mqtt(broker, "temp", client_id=cid, clean=False, session_expiry=600)
    assert again.session_present is False
    again.close()



@pytest.mark.broker_config(auth={"providers": [tx_provider("idp-own", "default")]})
def test_token_subject_owns_its_sessions_across_exchanges(broker, admin):
    """Finding 3 with token exchange: each exchange makes a new user, but every exchange of one
    subject owns the same sessions (a renewed token resumes), and another subject's does not."""
    def creds(sub: str) -> dict:
        r = admin.post("/v1/token-exchange", json={"token": tx_token("idp-own", unique("j"), sub=sub)})
        assert r.status_code == 201, r.text
        return r.json()
    cid = unique("tx-dev")
    first = creds("dev-1")
    c = mqtt(broker, first["username"], first["password"], client_id=cid, clean=False, session_expiry=600)
    c.subscribe("dev-1/#", qos=1)
    c.disconnect()
    other = creds("dev-2")
    mqtt(broker, other["username"], other["password"], client_id=cid, clean=False,
         session_expiry=600, expect_rc=0x87).close()
    renewed = creds("dev-1")
    assert renewed["username"] != first["username"]
    back = mqtt(broker, renewed["username"], renewed["password"], client_id=cid, clean=False,
                session_expiry=600)
    assert back.session_present is True
    back.close()


def test_will_outlives_the_rule_that_allowed_it_fails(broker, admin):
    """Finding 3 (ACL changes reach live sessions): a will allowed at CONNECT is not published
    once the rule that allowed it is gone; with the rule in place it is."""
    _user(admin, "testator")
    r = admin.post("/v1/acl/rules", json={"topic": "wills/#", "action": "publish", "permission": "allow"})
    assert r.status_code == 201, r.text
    rule = r.json()["id"]
    watcher = Client(broker.host, broker.port)  # anonymous: every right on a loopback broker
    watcher.connect()
    watcher.subscribe("wills/#", qos=1)
    kept = mqtt(broker, "testator", will={"topic": "wills/kept", "payload": b"bye", "qos": 1})
    kept.drop()
    assert watcher.get().topic == "wills/kept"
    gone = mqtt(broker, "testator", will={"topic": "wills/gone", "payload": b"bye", "qos": 1})
    assert admin.delete(f"/v1/acl/rules/{rule}").status_code == 204
    time.sleep(0.3)
    gone.drop()
    watcher.expect_none(1.0)
    watcher.close()


# == 4. browser origins, request bodies, $SYS (findings 4, 8) =======================================

import json
import queue
import socket

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect as ws_connect

from mqttraw import connect_packet

ALLOWED_ORIGIN = "https://app.example"


def ws_mqtt_url(broker) -> str:
    return f"ws://{broker.host}:{broker.http_port}/mqtt"


def refused_upgrade(url: str, origin: str) -> tuple[int, dict]:
    """Opens a WebSocket from a page of `origin`; returns the refusal's status and JSON body."""
    with pytest.raises(InvalidStatus) as refused:
        ws_connect(url, origin=origin, subprotocols=["mqtt"], open_timeout=5)
    response = refused.value.response
    return response.status_code, json.loads(response.body)


def ws_connack(broker, origin: str | None, username: str | None = None, password: str | None = None,
               version: int = 5) -> int:
    """CONNECT over `ws://…/mqtt` with the `websockets` client; returns the CONNACK's code as sent
    (v5 reason code, v3.1.1 return code)."""
    password_bytes = password.encode() if password is not None else None
    with ws_connect(ws_mqtt_url(broker), origin=origin, subprotocols=["mqtt"], open_timeout=5) as ws:
        ws.send(connect_packet(unique("wso"), version=version, username=username, password=password_bytes))
        connack = ws.recv(timeout=5)
    assert connack[0] == 0x20, connack
    return connack[3]


def paho_ws_connack(broker, origin: str | None, version: int, username: str | None = None) -> int:
    """CONNECT with paho-mqtt's websockets transport sending `Origin: origin` (paho's own default,
    its target's origin, when None); returns paho's reason code (a v3.1.1 return code 5 is 0x87)."""
    got: queue.Queue = queue.Queue()
    protocol = paho.MQTTv5 if version == 5 else paho.MQTTv311
    c = paho.Client(CallbackAPIVersion.VERSION2, client_id=unique("pws"), protocol=protocol,
                     transport="websockets")
    c.ws_set_options(path="/mqtt", headers={"Origin": origin} if origin else None)
    if username is not None:
        c.username_pw_set(username, PASSWORD)
    c.on_connect = lambda cl, ud, flags, rc, props: got.put(rc)
    c.connect(broker.host, broker.http_port, 30)
    c.loop_start()
    try:
        rc = got.get(timeout=5)
    finally:
        c.disconnect()
        c.loop_stop()
    return rc.value


@pytest.mark.broker_config(http={"allowed_origins": [ALLOWED_ORIGIN]})
def test_cross_site_websocket_hijacking_fails(broker):
    """Finding 4: a page of another site opens ws://…/mqtt or /v1/mqtt/stream: 403 before the upgrade."""
    key = root_key(broker)
    stream_url = f"ws://{broker.host}:{broker.http_port}/v1/mqtt/stream?token={key}"
    for url in (ws_mqtt_url(broker), stream_url):
        for origin in ("https://evil.example", "null", f"http://{broker.host}:{broker.http_port + 1}",
                       "http://app.example", f"https://{broker.host}:{broker.http_port}"):
            status, body = refused_upgrade(url, origin)
            assert status == 403, (url, origin)
            assert body["error"] == "forbidden_origin" and body["detail"], body
    # Not a browser (no Origin) and the broker's own origin: unchanged, anonymous included.
    assert ws_connack(broker, None) == 0
    assert ws_connack(broker, f"http://{broker.host}:{broker.http_port}") == 0
    for version in (4, 5):
        assert paho_ws_connack(broker, None, version) == 0, "paho's default Origin is its target's"
    # An allowed origin opens the stream with its own key.
    with ws_connect(stream_url, origin=ALLOWED_ORIGIN, open_timeout=5):
        pass


@pytest.mark.broker_config(http={"allowed_origins": [ALLOWED_ORIGIN]})
def test_anonymous_mqtt_from_an_allowed_origin_fails(broker, admin):
    """Finding 4: a page of an allowed other origin connects without credentials: refused (0x87 / 5)."""
    created = admin.post("/v1/users", json={"username": "web", "password": PASSWORD})
    assert created.status_code == 201, created.text
    assert ws_connack(broker, ALLOWED_ORIGIN) == 0x87
    assert ws_connack(broker, ALLOWED_ORIGIN.upper() + ":443") == 0x87, "case and default port normalized"
    assert ws_connack(broker, ALLOWED_ORIGIN, version=4) == 5
    assert paho_ws_connack(broker, ALLOWED_ORIGIN, 5) == 0x87
    assert paho_ws_connack(broker, ALLOWED_ORIGIN, 4) == 0x87
    # A user of its own logs in from that page.
    assert ws_connack(broker, ALLOWED_ORIGIN, "web", PASSWORD) == 0
    assert paho_ws_connack(broker, ALLOWED_ORIGIN, 5, username="web") == 0
    assert paho_ws_connack(broker, ALLOWED_ORIGIN, 4, username="web") == 0
    assert ws_connack(broker, ALLOWED_ORIGIN, "web", "wrong password") == 0x86


def http_raw(broker, head: str, timeout: float = 5.0) -> socket.socket:
    s = socket.create_connection((broker.host, broker.http_port), timeout=timeout)
    s.sendall(head.replace("\n", "\r\n").encode())
    return s


def read_response(s: socket.socket) -> tuple[int, dict, bytes]:
    """Reads one response (status, lowercased headers, body) or raises on a close before it."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(4096)
        if not chunk:
            raise ConnectionError(f"closed before a response: {data!r}")
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    lines = head.decode().split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    headers = {k.lower(): v for k, v in headers.items()}
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = s.recv(4096)
        if not chunk:
            break
        body += chunk
    return int(lines[0].split()[1]), headers, body


def test_unauthenticated_request_body_is_read_fails(broker):
    """Finding 8: a big body with a bad or missing key is answered 401 before any of it is sent."""
    for path, auth in [("/v1/publish", "Authorization: Bearer sk_not_a_key\n"),
                       ("/v1/publish/batch", ""),
                       ("/v1/users", "Authorization: Bearer sk_not_a_key\n"),
                       ("/v1/orgs", "")]:
        started = time.monotonic()
        s = http_raw(broker, f"POST {path} HTTP/1.1\nHost: x\n{auth}Content-Type: application/json\n"
                             "Content-Length: 1000000\n\n")
        try:
            status, headers, body = read_response(s)
            assert status == 401, (path, status, body)
            assert json.loads(body)["error"] == "unauthorized"
            assert headers.get("connection") == "close"
            assert time.monotonic() - started < 2.0, "answered at once, not after a body"
        finally:
            s.close()
    # With a public key, REST publish is refused before the body too.
    with api(broker, root_key(broker)) as admin:
        pk = new_key(admin, "public")["key"]
    s = http_raw(broker, f"POST /v1/publish HTTP/1.1\nHost: x\nAuthorization: Bearer {pk}\n"
                         "Content-Length: 1000000\n\n")
    try:
        assert read_response(s)[0] == 403
    finally:
        s.close()
    # `Expect: 100-continue` with a bad key gets the 401 instead of the go-ahead.
    s = http_raw(broker, "POST /v1/publish HTTP/1.1\nHost: x\nExpect: 100-continue\n"
                         "Content-Length: 10\n\n")
    try:
        assert read_response(s)[0] == 401
    finally:
        s.close()


@pytest.mark.broker_config(http={"body_timeout_ms": 1000})
def test_slow_request_body_holds_the_connection_fails(broker):
    """Finding 8: a valid key trickling its body a byte a second is cut off after body_timeout_ms."""
    key = root_key(broker)
    body = json.dumps({"topic": "slow/body", "payload": "x" * 40}).encode()
    s = http_raw(broker, f"POST /v1/publish HTTP/1.1\nHost: x\nAuthorization: Bearer {key}\n"
                         f"Content-Type: application/json\nContent-Length: {len(body)}\n\n", timeout=10)
    started = time.monotonic()
    answer = None
    try:
        s.settimeout(0.05)
        for byte in body:
            try:
                s.sendall(bytes([byte]))
            except OSError:
                break  # the broker closed: the deadline passed
            # Meanwhile the broker serves others.
            with api(broker, key) as other:
                assert other.get("/healthz").status_code == 200
                ok = other.post("/v1/publish", json={"topic": "fast/body", "payload": "x"})
                assert ok.status_code == 202, ok.text
            try:
                answer = s.recv(4096)
                break
            except socket.timeout:
                pass
            if time.monotonic() - started > 5:
                break
            time.sleep(max(0.0, 1.0 - (time.monotonic() - started) % 1.0))
        if answer is None:
            s.settimeout(3)
            try:
                answer = s.recv(4096)
            except OSError:
                answer = b""
    finally:
        s.close()
    elapsed = time.monotonic() - started
    assert elapsed < 3.5, f"the slow body kept the connection {elapsed:.1f}s (body_timeout_ms = 1000)"
    if answer:
        assert answer.startswith(b"HTTP/1.1 408"), answer
        assert b'"request_timeout"' in answer and b"Connection: close" in answer


@pytest.mark.broker_config(mqtt={"sys_interval_secs": 1})
def test_sys_broker_totals_read_by_another_org_fails(broker, admin):
    """Finding 8: a user of org B subscribing $SYS/# sees its own org's figures, not the broker's."""
    others = [mqtt(broker, None) for _ in range(3)]  # anonymous, in the default org
    org_b, key_b = new_org(admin)
    with api(broker, key_b) as b:
        r = b.post("/v1/acl/rules", json={"topic": "$SYS/#", "action": "subscribe", "permission": "allow"})
        assert r.status_code == 201, r.text
        r = b.post("/v1/users", json={"username": "watcher", "password": PASSWORD})
        assert r.status_code == 201, r.text
    watcher = mqtt(broker, f"watcher@{org_b}")
    operator = mqtt(broker, None)
    try:
        assert watcher.subscribe("$SYS/#", qos=0) == [0]
        assert operator.subscribe("$SYS/broker/clients/connected", qos=0) == [0]
        seen: dict[str, list[str]] = {}
        deadline = time.monotonic() + 8
        while time.monotonic() < deadline and len(seen.get("$SYS/broker/clients/connected", [])) < 2:
            try:
                m = watcher.get(timeout=max(0.1, deadline - time.monotonic()))
            except Exception:
                break
            seen.setdefault(m.topic, []).append(m.payload.decode())
        connected = seen.get("$SYS/broker/clients/connected")
        assert connected, f"org B got no $SYS/broker/clients/connected within 8 s: {seen}"
        assert set(connected) <= {"0", "1"}, f"org B saw broker-wide client counts {connected}"
        assert connected[-1] == "1", connected
        assert all(not t.startswith("$SYS/broker/") or t in {
            "$SYS/broker/version", "$SYS/broker/uptime", "$SYS/broker/clients/connected",
            "$SYS/broker/messages/received", "$SYS/broker/messages/sent"} for t in seen), seen
        assert int(seen["$SYS/broker/messages/received"][-1]) == 0, "org B's clients published nothing"
        # The operator's default org still gets the broker-wide figures (5 clients at least).
        wait_until(lambda: any(int(m.payload) >= 5 for m in operator.drain(0.5)), timeout=8,
                   what="broker-wide clients/connected in the default org")
    finally:
        for c in [watcher, operator, *others]:
            c.close()


# == 5. per-org caps on retained and offline-queue bytes (finding 7) ================================

@pytest.mark.broker_config(org_limits={"retained_bytes_max": 4096})
def test_one_org_fills_the_retained_store_fails(broker, admin):
    """Finding 7: retained bytes are capped per org (v5 PUBACK 0x97), and another org keeps its room."""
    from mqttraw import PUBACK, RawClient, publish_packet
    org_b, key_b = new_org(admin)
    with api(broker, key_b) as b:
        assert b.post("/v1/acl/rules", json={"topic": "#", "action": "all", "permission": "allow"}).status_code == 201
        assert b.post("/v1/users", json={"username": "hog", "password": PASSWORD}).status_code == 201
    hog = RawClient(broker.host, broker.port, 5)
    hog.connect(unique("hog"), username=f"hog@{org_b}", password=PASSWORD.encode())
    codes = []
    for i in range(8):
        pid = hog.pid()
        hog.send(publish_packet(f"r/{i}", b"x" * 1000, 1, True, pid, None, version=5))
        ack = hog.expect(PUBACK)
        assert ack.packet_id == pid
        codes.append(ack.reason_code or 0)
    # Three messages of ~1004 bytes fit in 4096; the rest are refused with 0x97, not dropped silently.
    assert codes[:3] == [0, 0, 0] and codes[4:] == [0x97] * 4, codes
    # Replacing a kept topic still works: it frees its own bytes first.
    pid = hog.pid()
    hog.send(publish_packet("r/0", b"y" * 1000, 1, True, pid, None, version=5))
    assert (hog.expect(PUBACK).reason_code or 0) == 0
    # Clearing one makes room for another.
    pid = hog.pid()
    hog.send(publish_packet("r/1", b"", 1, True, pid, None, version=5))
    assert (hog.expect(PUBACK).reason_code or 0) == 0
    pid = hog.pid()
    hog.send(publish_packet("r/7", b"w" * 1000, 1, True, pid, None, version=5))
    assert (hog.expect(PUBACK).reason_code or 0) == 0
    sub = mqtt(broker, f"hog@{org_b}")
    sub.subscribe("r/#", qos=0)
    kept = {m.topic: m.payload for m in sub.drain(1.0)}
    assert kept.get("r/0") == b"y" * 1000 and kept.get("r/7") == b"w" * 1000 and "r/1" not in kept, kept
    assert sum(len(t) + len(p) for t, p in kept.items()) <= 4096
    # The default org is not touched by org B's quota.
    anon = Client(broker.host, broker.port)
    anon.connect()
    anon.publish("mine/1", b"z" * 3000, qos=1, retain=True)
    check = Client(broker.host, broker.port)
    check.connect()
    check.subscribe("mine/#", qos=0)
    assert check.get().payload == b"z" * 3000
    # REST publish meets the same quota: 403 with a JSON body, nothing retained.
    with api(broker, key_b) as b:
        r = b.post("/v1/publish", json={"topic": "r/9", "payload": "v" * 3000, "retain": True})
        assert r.status_code == 403 and r.json()["error"] == "limit_exceeded", r.text
        r = b.post("/v1/publish", json={"topic": "r/9", "payload": "v" * 3000})
        assert r.status_code == 202, r.text
    hog.close()
    for c in (sub, anon, check):
        c.close()


@pytest.mark.broker_config(org_limits={"offline_queue_bytes_max": 2000})
def test_one_org_fills_the_offline_queues_fails(broker, admin):
    """Finding 7: bytes queued for an org's disconnected sessions are capped per org (per shard);
    the excess is refused (counted as dropped), and another org's offline sessions still queue."""
    org_b, key_b = new_org(admin)
    with api(broker, key_b) as b:
        assert b.post("/v1/acl/rules", json={"topic": "#", "action": "all", "permission": "allow"}).status_code == 201
        assert b.post("/v1/users", json={"username": "dev", "password": PASSWORD}).status_code == 201
    cid = unique("b-sleeper")
    sleeper = mqtt(broker, f"dev@{org_b}", client_id=cid, clean=False, session_expiry=600)
    sleeper.subscribe("q/#", qos=1)
    sleeper.disconnect()
    a_cid = unique("a-sleeper")
    a_sleeper = Client(broker.host, broker.port, a_cid, clean=False, session_expiry=600)
    a_sleeper.connect()
    a_sleeper.subscribe("q/#", qos=1)
    a_sleeper.disconnect()
    pub_b = mqtt(broker, f"dev@{org_b}")
    for i in range(10):
        pub_b.publish(f"q/{i}", b"b" * 500, qos=1)
    pub_a = Client(broker.host, broker.port)
    pub_a.connect()
    for i in range(3):
        pub_a.publish(f"q/{i}", b"a" * 500, qos=1)
    back = mqtt(broker, f"dev@{org_b}", client_id=cid, clean=False, session_expiry=600)
    got = back.drain(1.0)
    assert 1 <= len(got) <= 4, len(got)  # 2000 bytes hold three messages of 503 bytes
    assert [m.topic for m in got] == [f"q/{i}" for i in range(len(got))], "the oldest are kept, in order"
    a_back = Client(broker.host, broker.port, a_cid, clean=False, session_expiry=600)
    a_back.connect()
    assert len(a_back.drain(1.0)) == 3, "the default org's offline sessions were not charged for org B"
    for c in (pub_b, pub_a, back, a_back):
        c.close()


def test_a_client_id_carrying_another_orgs_scope_bytes_fails(broker, admin):
    """Findings 2/3, MQTT side: a client id holding the router's org-scope bytes (`$` NUL N `/`)
    is refused (U+0000 is not allowed in MQTT strings), so a default-org client cannot name
    another org's session."""
    from mqttraw import CONNACK, RawClient, connect_packet
    new_org(admin)
    for version in (4, 5):
        r = RawClient(broker.host, broker.port, version)
        try:
            r.send(connect_packet(b"$\x001/victim", version))
            closed = r.expect_closed(3.0)
            assert not any(p.type == CONNACK and not p.reason_code for p in closed), closed
        finally:
            r.close()


def _retained_gauges(broker) -> list[int]:
    text = httpx.get(f"http://{broker.host}:{broker.http_port}/metrics", timeout=5).text
    return [int(float(line.rsplit(" ", 1)[1])) for line in text.splitlines()
            if line.startswith("ringmq_retained_messages{")]


def test_a_deleted_orgs_retained_messages_linger_fails(broker, admin):
    """Finding 7 (bounded memory): deleting an org drops its retained messages on every replica."""
    org_b, key_b = new_org(admin)
    with api(broker, key_b) as b:
        assert b.post("/v1/acl/rules", json={"topic": "#", "action": "all", "permission": "allow"}).status_code == 201
        for i in range(5):
            r = b.post("/v1/publish", json={"topic": f"keep/{i}", "payload": "x", "retain": True, "qos": 1})
            assert r.status_code == 200, r.text
    anon = Client(broker.host, broker.port)
    anon.connect()
    anon.publish("mine/kept", b"y", qos=1, retain=True)
    wait_until(lambda: _retained_gauges(broker) and min(_retained_gauges(broker)) >= 6,
               what="6 retained messages on every shard")
    assert admin.delete(f"/v1/orgs/{org_b}").status_code == 204
    # (A generous wait: on a loaded 2-core CI machine the snapshot reached every shard after
    # more than the default 5 s once.)
    wait_until(lambda: _retained_gauges(broker) == [1] * len(_retained_gauges(broker)),
               timeout=20, what="only the default org's retained message left on every shard")
    check = Client(broker.host, broker.port)
    check.connect()
    check.subscribe("mine/#", qos=0)
    assert check.get().payload == b"y"
    anon.close()
    check.close()


# == 6. found by the simulator (ringmq-sim; docs/simulator.md) ======================================


def test_a_shared_subscription_in_another_org_is_delivered(broker, admin):
    """A `$share` subscription in an org other than the default one was acknowledged and never
    joined its group: nothing published to it arrived. It does now, to exactly one member, and
    never to the same group name in another org."""
    org_b, key_b = new_org(admin)
    with api(broker, key_b) as b:
        assert b.post("/v1/acl/rules", json={"topic": "#", "action": "all",
                                             "permission": "allow"}).status_code == 201
        assert b.post("/v1/users", json={"username": "w", "password": PASSWORD}).status_code == 201
    # Two members in org B (on both shards: round-robin placement), one in the default org.
    members = [mqtt(broker, f"w@{org_b}") for _ in range(2)]
    for m in members:
        assert m.subscribe("$share/g/jobs/#", qos=1) == [1]
    other_org = Client(broker.host, broker.port)
    other_org.connect()
    assert other_org.subscribe("$share/g/jobs/#", qos=1) == [1]
    publisher = mqtt(broker, f"w@{org_b}")
    for i in range(6):
        publisher.publish("jobs/x", f"job-{i}".encode(), qos=1).wait_for_publish(5)
    got = []
    deadline = time.monotonic() + 5
    while len(got) < 6 and time.monotonic() < deadline:
        for m in members:
            got.extend(msg.payload for msg in m.drain(0.1))
    assert sorted(got) == sorted(f"job-{i}".encode() for i in range(6)), "each job once, in org B"
    other_org.expect_none(0.3)
    for c in [*members, other_org, publisher]:
        c.close()


def test_a_session_reconnecting_on_the_other_shard_loses_nothing(broker):
    """A persistent subscriber that reconnects while QoS 1 messages stream in gets every one of
    them, whether its new connection lands on its session's shard or the other one (round-robin
    placement alternates). End to end only: the window the simulator found (a message routed
    while the session moves) is too short to hit from here on purpose; the regression tests are
    `broker::shard::tests::a_message_routed_while_a_session_{resumes_on_its_shard,moves_to_another_shard}_is_kept`."""
    cid = unique("mover")
    sub = Client(broker.host, broker.port, cid, clean=False, session_expiry=600)
    sub.connect()
    assert sub.subscribe("stream/#", qos=1) == [1]
    publisher = Client(broker.host, broker.port)
    publisher.connect()
    sent = 0
    received: set[bytes] = set()
    for move in range(4):
        # A burst in flight while the subscriber leaves and comes back.
        infos = [publisher.publish("stream/x", f"{sent + i:05d}".encode(), qos=1) for i in range(200)]
        sent += 200
        received.update(m.payload for m in sub.drain(0.01))
        sub.drop()
        received.update(m.payload for m in sub.drain(0.01))  # taken in before the drop
        if move % 2:
            Client(broker.host, broker.port).connect().close()  # shifts the next one's shard
        sub = Client(broker.host, broker.port, cid, clean=False, session_expiry=600)
        sub.connect()
        assert sub.session_present
        for info in infos:
            info.wait_for_publish(5)
    deadline = time.monotonic() + 10
    while len(received) < sent and time.monotonic() < deadline:
        received.update(m.payload for m in sub.drain(0.2))
    missing = sorted({f"{i:05d}".encode() for i in range(sent)} - received)
    assert not missing, f"{len(missing)} acknowledged messages lost, first {missing[:5]}"
    sub.close()
    publisher.close()


def test_a_client_id_stays_its_owners_across_a_restart_fails(broker, admin):
    """Finding 3 after a restart: the session comes back from the log with its owner, so
    another user is still refused it (and does not get its queued message)."""
    _user(admin, "alice", "fin/#")
    _user(admin, "mallory", "fin/#")
    cid = unique("kept-id")
    alice = mqtt(broker, "alice", client_id=cid, clean=False, session_expiry=600)
    alice.subscribe("fin/#", qos=1)
    alice.disconnect()
    payer = mqtt(broker, "alice", client_id=unique("payer"))
    payer.publish("fin/pay", b"salary", qos=1).wait_for_publish(5)
    payer.close()

    broker.restart()

    mallory = mqtt(broker, "mallory", client_id=cid, clean=False, session_expiry=600,
                   expect_rc=0x87)
    mallory.expect_none(0.5)
    mallory.close()
    back = mqtt(broker, "alice", client_id=cid, clean=False, session_expiry=600)
    assert back.session_present is True
    msg = back.get()
    assert (msg.topic, msg.payload) == ("fin/pay", b"salary")
    back.close()
