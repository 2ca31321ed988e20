"""The web console's server side (httpx and paho-mqtt): its page and assets compiled into the
binary with a strict Content-Security-Policy, the once-a-second figures feed (root key: the
broker per shard; an org key: only its org; a revoked key ends it), and the sessions search the
page's table uses. The page itself is driven in headless Chromium by test_console.py."""

from __future__ import annotations

import json
import time

import httpx
import pytest

from helpers import Client, unique
from test_control_plane import PASSWORD, admin, allow, api, create_user, new_org, root_key  # noqa: F401

pytestmark = pytest.mark.ringmq_only


def feed_frames(broker, key: str | None, count: int, timeout: float = 8.0) -> tuple[int, list[tuple[str, dict]]]:
    """Reads `count` SSE frames of /v1/console/feed: (status, [(event, data)])."""
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    frames: list[tuple[str, dict]] = []
    url = f"http://{broker.host}:{broker.http_port}/v1/console/feed"
    with httpx.stream("GET", url, headers=headers, timeout=timeout) as r:
        if r.status_code != 200:
            r.read()
            return r.status_code, [("error", r.json())]
        assert r.headers["content-type"] == "text/event-stream"
        event, data = "message", ""
        for line in r.iter_lines():
            if line.startswith("event:"):
                event = line[6:].strip()
            elif line.startswith("data:"):
                data += line[5:].strip()
            elif line == "" and data:
                frames.append((event, json.loads(data)))
                event, data = "message", ""
                if len(frames) >= count or frames[-1][0] == "end":
                    break
    return 200, frames


def test_console_page_and_assets_are_served_with_a_strict_policy(broker):
    with httpx.Client(base_url=f"http://{broker.host}:{broker.http_port}", timeout=10) as c:
        for path, kind in (("/console", "text/html"), ("/console/app.js", "text/javascript"),
                           ("/console/app.css", "text/css")):
            r = c.get(path)
            assert r.status_code == 200, (path, r.status_code)
            assert r.headers["content-type"].startswith(kind)
            csp = r.headers["content-security-policy"]
            assert "default-src 'self'" in csp and "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
            assert r.headers["x-content-type-options"] == "nosniff"
        r = c.get("/console/../../etc/passwd")
        assert r.status_code in (400, 404)
        r = c.get("/console/secret.js")
        assert r.status_code == 404 and r.json()["error"] == "not_found"


def test_feed_gives_the_root_key_every_shard(broker, admin):
    allow(admin, "#")
    create_user(admin, "feeder")
    c = Client(broker.host, broker.port, unique("feed"), username="feeder", password=PASSWORD).connect()
    try:
        status, frames = feed_frames(broker, root_key(broker), 2)
        assert status == 200
        (e1, first), (e2, second) = frames
        assert e1 == e2 == "stats"
        assert first["scope"] == "broker" and len(first["shards"]) == 2
        assert second["t"] - first["t"] >= 900
        assert first["totals"]["connections"] >= 1
        assert first["memory_bytes"] > 1 << 20 and first["asleep"] >= 0
        for key in ("connections", "sockets", "messages_in", "messages_out", "dropped", "inflight",
                    "streams", "sessions", "subscriptions", "retained"):
            assert key in first["totals"] and key in first["shards"][0], key
    finally:
        c.close()


def test_feed_of_an_org_key_shows_only_its_org_and_ends_when_revoked(broker, admin):
    _, key_b = new_org(admin, "console-b")
    status, frames = feed_frames(broker, key_b, 1)
    assert status == 200
    event, frame = frames[0]
    assert event == "stats" and frame["scope"] == "org"
    # Another tenant sees neither the shards nor the broker's memory.
    assert frame["shards"] == [] and frame["memory_bytes"] is None
    assert set(frame["totals"]) == {"connections", "messages_in", "messages_out"}
    # A second secret key of the default org, revoked while its feed is open: the feed ends.
    r = admin.post("/v1/keys", json={"name": "console", "kind": "secret"})
    assert r.status_code == 201, r.text
    created = r.json()
    url = f"http://{broker.host}:{broker.http_port}/v1/console/feed"
    with httpx.stream("GET", url, headers={"Authorization": f"Bearer {created['key']}"}, timeout=10) as s:
        assert s.status_code == 200
        lines = s.iter_lines()
        assert next(lines).startswith("event: stats")
        assert admin.delete(f"/v1/keys/{created['id']}").status_code == 204
        ended = False
        deadline = time.monotonic() + 8
        for line in lines:
            if line.startswith("event: end"):
                ended = True
                break
            assert time.monotonic() < deadline
        assert ended


def test_feed_refuses_missing_public_and_unknown_keys(broker, admin):
    assert feed_frames(broker, None, 1)[0] == 401
    assert feed_frames(broker, "sk_nope", 1)[0] == 401
    r = admin.post("/v1/keys", json={"name": "web", "kind": "public"})
    status, frames = feed_frames(broker, r.json()["key"], 1)
    assert status == 403 and frames[0][1]["error"] == "forbidden"


def test_sessions_search_by_client_id_or_username(broker, admin):
    allow(admin, "#")
    create_user(admin, "searcher")
    clients = [Client(broker.host, broker.port, cid, username=user, password=PASSWORD).connect()
               for cid, user in (("kiln-7", "searcher"), ("oven/2", "searcher"), ("pump-9", None))]
    try:
        def found(**params) -> list[str]:
            r = admin.get("/v1/sessions", params={"state": "all", **params})
            assert r.status_code == 200, r.text
            return sorted(s["client_id"] for s in r.json()["items"])
        assert found(search="kiln") == ["kiln-7"]
        assert found(search="/") == ["oven/2"]
        assert found(search="search") == ["kiln-7", "oven/2"]
        assert found(search="nothing-like-it") == []
        assert "pump-9" in found()
        r = admin.get("/v1/sessions", params={"search": "a\x01b"})
        assert r.status_code == 400 and r.json()["error"] == "bad_request"
        r = admin.get("/v1/sessions", params={"search": "x" * 257})
        assert r.status_code == 400
    finally:
        for c in clients:
            c.close()
