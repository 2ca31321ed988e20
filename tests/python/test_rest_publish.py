"""REST publish (`POST /v1/publish`, `/v1/publish/batch`) through httpx, received by paho-mqtt
subscribers on both shards: payload forms, QoS 0/1 answers, retained, MQTT 5 fields, key rights,
rate limits, the monthly quota, Idempotency-Key, org isolation."""

from __future__ import annotations

import base64
import json
import time

import httpx
import pytest

from helpers import Client, unique, wait_until
from test_control_plane import PASSWORD, allow, api, create_user, new_org, root_key

pytestmark = pytest.mark.ringmq_only


@pytest.fixture
def rest(broker):
    with api(broker, root_key(broker)) as client:
        yield client


def sub(broker, *filters: str, **kw) -> Client:
    c = Client(broker.host, broker.port, unique("rs"), **kw).connect()
    for f in filters:
        assert c.subscribe(f, qos=1) == [1]
    return c


def test_payload_forms_and_qos0_is_202(broker, rest):
    s = sub(broker, "rest/#")
    cases = [
        ({"payload": "héllo"}, "héllo".encode()),
        ({"payload": {"temp": 23.5}}, json.dumps({"temp": 23.5}, separators=(",", ":")).encode()),
        ({"payload": [1, 2]}, b"[1,2]"),
        ({"payload_base64": base64.b64encode(b"\x00\xffbin").decode()}, b"\x00\xffbin"),
    ]
    for body, expected in cases:
        r = rest.post("/v1/publish", json={"topic": "rest/a", **body})
        assert r.status_code == 202, r.text
        assert r.json()["status"] == "accepted"
        assert s.get().payload == expected
    s.close()


def test_qos1_is_200_after_queueing_on_every_shard_with_the_match_count(broker, rest):
    a = sub(broker, "q1/#")
    b = sub(broker, "q1/+")  # the next connection: the other shard
    c = sub(broker, "other/#")
    r = rest.post("/v1/publish", json={"topic": "q1/x", "payload": "one", "qos": 1})
    assert r.status_code == 200, r.text
    assert r.json()["matched"] == 2
    assert a.get().qos == 1 and b.get().qos == 1
    c.expect_none(0.2)
    r = rest.post("/v1/publish", json={"topic": "nobody/listens", "payload": "x", "qos": 1})
    assert r.status_code == 200 and r.json()["matched"] == 0
    for x in (a, b, c):
        x.close()


def test_retained_and_mqtt5_fields(broker, rest):
    body = {"topic": "cfg/dev1", "payload": "v2", "qos": 1, "retain": True, "content_type": "text/plain",
            "message_expiry": 300, "user_properties": {"source": "cron"}, "response_topic": "cfg/dev1/ack",
            "correlation_data": "req-7"}
    assert rest.post("/v1/publish", json=body).status_code == 200
    late = sub(broker, "cfg/#")
    m = late.get()
    assert (m.payload, m.retain) == (b"v2", True)
    assert m.props["content_type"] == "text/plain"
    assert m.props["response_topic"] == "cfg/dev1/ack"
    assert m.props["correlation_data"] == b"req-7"
    assert ("source", "cron") in m.props["user_property"]
    assert 0 < m.props["message_expiry_interval"] <= 300
    late.close()


def test_bad_requests_get_400_or_413_with_a_detail(rest):
    for body, status in [
        (b"{nope", 400),
        (json.dumps({"topic": "a/+", "payload": "x"}).encode(), 400),
        (json.dumps({"topic": "", "payload": "x"}).encode(), 400),
        (json.dumps({"topic": "a", "payload": "x", "qos": 2}).encode(), 400),
        (json.dumps({"topic": "a", "payload": "x", "extra": 1}).encode(), 400),
        (json.dumps({"topic": "a"}).encode(), 400),
        (json.dumps({"topic": "a", "payload_base64": "x" * 400_000}).encode(), 413),
    ]:
        r = rest.post("/v1/publish", content=body, headers={"Content-Type": "application/json"})
        assert r.status_code == status, (body[:40], r.text)
        assert r.json()["detail"]
    assert rest.get("/v1/publish").status_code == 405


def test_key_rights_restricted_and_public_keys(broker, rest):
    s = sub(broker, "#")
    rk = rest.post("/v1/keys", json={"name": "alerts", "kind": "restricted",
                                      "permissions": [{"action": "publish", "topic": "alerts/#"}]}).json()["key"]
    pk = rest.post("/v1/keys", json={"name": "web", "kind": "public"}).json()["key"]
    with api(broker, rk) as restricted:
        assert restricted.post("/v1/publish", json={"topic": "alerts/fire", "payload": "!"}).status_code == 202
        r = restricted.post("/v1/publish", json={"topic": "devices/x", "payload": "no"})
        assert r.status_code == 403 and "devices/x" in r.json()["detail"]
    with api(broker, pk) as public:
        assert public.post("/v1/publish", json={"topic": "alerts/x", "payload": "no"}).status_code == 403
    with api(broker) as nobody:
        assert nobody.post("/v1/publish", json={"topic": "a", "payload": "x"}).status_code == 401
    assert s.get().topic == "alerts/fire"
    s.expect_none(0.3)
    s.close()


def test_rate_limit_429_with_retry_after_and_headers(broker, rest):
    assert rest.patch("/v1/org", json={"settings": {"rate_limit_per_sec": 1, "rate_burst": 2}}).status_code == 200
    # The PATCH took a token of the same bucket (one pool per org): let it refill.
    time.sleep(1.1)
    statuses = []
    for _ in range(3):
        r = rest.post("/v1/publish", json={"topic": "rl", "payload": "x"})
        statuses.append(r.status_code)
        for header in ("x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset"):
            assert header in r.headers, (header, r.headers)
    assert statuses[:2] == [202, 202] and statuses[2] == 429
    assert int(r.headers["retry-after"]) >= 1
    assert r.json()["error"] == "rate_limited"
    time.sleep(1.1)
    assert rest.post("/v1/publish", json={"topic": "rl", "payload": "x"}).status_code == 202


def test_management_requests_share_the_orgs_rate_limit(broker, rest):
    # One pool per org (the seed): management calls take tokens of the bucket publishing uses,
    # and carry the same headers.
    _, key_b = new_org(rest, "pool-b")
    assert rest.patch("/v1/org", json={"settings": {"rate_limit_per_sec": 1, "rate_burst": 3}}).status_code == 200
    time.sleep(1.1)
    r = rest.get("/v1/users")
    assert r.status_code == 200 and r.headers["x-ratelimit-limit"] == "3"
    statuses = [rest.get("/v1/org").status_code for _ in range(4)]
    assert 429 in statuses, statuses
    r = rest.get("/v1/users")
    assert r.status_code == 429 and r.json()["error"] == "rate_limited"
    assert int(r.headers["retry-after"]) >= 1 and "x-ratelimit-reset" in r.headers
    # Another org's pool is its own; the public OpenAPI document is not counted.
    with api(broker, key_b) as other:
        r = other.get("/v1/users")
        assert r.status_code == 200 and r.headers["x-ratelimit-limit"] == "200", r.headers
    assert rest.get("/v1/openapi.json").status_code == 200
    time.sleep(1.1)
    assert rest.patch("/v1/org", json={"settings": {"rate_limit_per_sec": 100, "rate_burst": 200}}).status_code == 200


def test_monthly_quota_and_batch(broker, rest):
    assert rest.patch("/v1/org", json={"settings": {"monthly_quota": 4}}).status_code == 200
    s = sub(broker, "b/#")
    r = rest.post("/v1/publish/batch", json={"messages": [
        {"topic": "b/1", "payload": "one"},
        {"topic": "b/+", "payload": "bad"},
        {"topic": "b/2", "payload": "two", "qos": 1},
    ]})
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert [x["status"] for x in results] == [202, 400, 200]
    assert [m.payload for m in s.get_n(2)] == [b"one", b"two"]
    assert rest.post("/v1/publish", json={"topic": "b/3", "payload": "3"}).status_code == 202
    r = rest.post("/v1/publish/batch", json={"messages": [{"topic": "b/4", "payload": "4"},
                                                          {"topic": "b/5", "payload": "5"}]})
    assert r.status_code == 429 and r.json()["error"] == "quota_exceeded"
    assert "monthly quota" in r.json()["detail"]
    # Retry-After: the seconds to the start of next month (UTC), when the quota resets.
    now = time.gmtime()
    year, month = (now.tm_year + 1, 1) if now.tm_mon == 12 else (now.tm_year, now.tm_mon + 1)
    import calendar
    to_reset = calendar.timegm((year, month, 1, 0, 0, 0)) - time.time()
    assert abs(int(r.headers["retry-after"]) - to_reset) <= 5, (r.headers, to_reset)
    # Shards report usage once a second.
    wait_until(lambda: rest.get("/v1/org").json()["usage"]["rest_publishes"] >= 3, what="usage")
    s.close()


def test_idempotency_key_publishes_once(broker, rest):
    s = sub(broker, "idem/#")
    headers = {"Idempotency-Key": "job-42"}
    body = {"topic": "idem/a", "payload": "once", "qos": 1}
    first = rest.post("/v1/publish", json=body, headers=headers)
    again = rest.post("/v1/publish", json=body, headers=headers)
    assert first.status_code == again.status_code == 200
    assert again.json() == first.json()
    assert again.headers.get("idempotent-replayed") == "true"
    assert s.get().payload == b"once"
    s.expect_none(0.3)
    changed = rest.post("/v1/publish", json={**body, "payload": "other"}, headers=headers)
    assert changed.status_code == 422
    s.close()


def test_rest_publish_stays_in_the_keys_org(broker, rest):
    org_b, key_b = new_org(rest, "rest-tenant")
    mine = sub(broker, "#")
    with api(broker, key_b) as b:
        allow(b, "#")
        create_user(b, "listener")
        theirs = Client(broker.host, broker.port, unique("b"), username=f"listener@{org_b}",
                        password=PASSWORD).connect()
        assert theirs.subscribe("#", qos=1) == [1]
        assert b.post("/v1/publish", json={"topic": "t", "payload": "for-b", "qos": 1}).json()["matched"] == 1
    assert theirs.get().payload == b"for-b"
    mine.expect_none(0.3)
    mine.close()
    theirs.close()
