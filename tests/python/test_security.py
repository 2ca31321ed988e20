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


# == 2. sessions API and control plane: org checks, token exchange, org limits (findings 2, 5, 7, 8) =


# == 3. sessions belong to their principal; ACL changes reach live subscriptions (finding 3) ========


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
