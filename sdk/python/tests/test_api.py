"""RingmqApi against a real broker: every resource, errors, rate limits, REST publish."""

from __future__ import annotations

import queue
import time
from typing import Any

import pytest

from conftest import PASSWORD, Broker, hs256_token, tx_claims, unique, wait_for
from ringmq import (
    AclRule,
    AclSet,
    ApiKey,
    AuthenticationError,
    BadRequestError,
    ConflictError,
    NotFoundError,
    Org,
    OrgSettings,
    Payload,
    PublishMessage,
    RateLimitedError,
    RingmqApi,
    RingmqClient,
    RingmqError,
    Session,
    User,
)


def name(prefix: str) -> str:
    return unique(prefix).replace("-", "_")


def test_users_crud(api: RingmqApi) -> None:
    u = name("u")
    created = api.users.create(u, PASSWORD, namespace="ns1")
    assert isinstance(created, User)
    assert (created.username, created.namespace, created.enabled, created.acl_sets) == (u, "ns1", True, [])
    assert created.created_at > 0 and created.expires_at is None
    assert api.users.get(u) == created
    assert u in [x.username for x in api.users.list()]
    s = name("set")
    api.acl_sets.create(s)
    updated = api.users.update(u, enabled=False, acl_sets=[s], namespace=None)
    assert (updated.enabled, updated.acl_sets, updated.namespace) == (False, [s], None)
    with pytest.raises(ConflictError) as ei:
        api.users.create(u, PASSWORD)
    assert (ei.value.status, ei.value.error) == (409, "conflict")
    api.users.delete(u)
    with pytest.raises(NotFoundError):
        api.users.get(u)


def test_list_follows_next_cursor(api: RingmqApi) -> None:
    names = sorted(name("page") for _ in range(5))
    for n in names:
        api.users.create(n, PASSWORD)
    listed = [x.username for x in api.users.list(limit=2)]  # three pages at least
    assert all(n in listed for n in names)
    assert listed == sorted(listed) and len(listed) == len(set(listed))
    first = api.users.page(limit=2)
    assert len(first.items) == 2 and first.next_cursor is not None
    second = api.users.page(cursor=first.next_cursor, limit=2)
    assert second.items[0].username > first.items[-1].username


def test_acl_sets_and_rules_crud(api: RingmqApi) -> None:
    s = name("set")
    created = api.acl_sets.create(s, description="first")
    assert isinstance(created, AclSet) and (created.name, created.description, created.rule_count) == (s, "first", 0)
    assert s in [x.name for x in api.acl_sets.list()]
    rule = api.acl.create("devices/{username}/#", "publish", "allow", set=s)
    assert isinstance(rule, AclRule)
    assert (rule.set, rule.topic, rule.action, rule.permission) == (s, "devices/{username}/#", "publish", "allow")
    assert rule.id.startswith("rule_")
    assert api.acl.get(rule.id) == rule
    assert [r.id for r in api.acl.list(set=s)] == [rule.id]
    got = api.acl_sets.get(s)
    assert got.rule_count == 1 and got.rules == [rule]
    changed = api.acl.update(rule.id, permission="deny", action="all")
    assert (changed.permission, changed.action, changed.topic) == ("deny", "all", rule.topic)
    assert api.acl_sets.update(s, description="second").description == "second"
    api.acl.delete(rule.id)
    with pytest.raises(NotFoundError):
        api.acl.get(rule.id)
    api.acl_sets.delete(s)
    with pytest.raises(NotFoundError):
        api.acl_sets.get(s)
    with pytest.raises(ConflictError):
        api.acl_sets.delete("default")


def test_keys_crud_and_restricted_key(broker: Broker, api: RingmqApi) -> None:
    k = api.keys.create(name("key"), "secret")
    assert isinstance(k, ApiKey) and k.kind == "secret" and k.key and k.key.startswith("sk_")
    assert k.prefix == k.key[:10]
    fetched = api.keys.get(k.id)
    assert fetched.key is None and fetched.id == k.id
    assert k.id in [x.id for x in api.keys.list()]
    assert api.keys.update(k.id, name="renamed").name == "renamed"
    # The new secret key works.
    with broker.api(k.key) as other:
        assert other.org.get().id == "default"
    r = api.keys.create(name("rk"), "restricted", permissions=[{"action": "publish", "topic": "rk/#"}])
    assert r.key and r.key.startswith("rk_") and [(p.action, p.topic) for p in r.permissions] == [("publish", "rk/#")]
    with broker.api(r.key) as restricted:
        assert restricted.publish("rk/a", "ok").status == "accepted"
        with pytest.raises(RingmqError) as ei:
            restricted.publish("other/a", "no")
        assert ei.value.status == 403
        with pytest.raises(RingmqError) as ei:
            restricted.users.list().__next__()
        assert ei.value.status == 403
    api.keys.delete(k.id)
    assert api.keys.get(k.id).revoked_at is not None
    with broker.api(k.key) as revoked, pytest.raises(AuthenticationError):
        revoked.org.get()


def test_sessions_list_get_disconnect_delete(broker: Broker, api: RingmqApi) -> None:
    cid = f"dev/{unique('sess')}/a b"  # `/` and a space: percent-encoded in the path
    c = RingmqClient(host=broker.host, port=broker.port, username="tester", password=PASSWORD,
                     client_id=cid, reconnect_min_delay=5, session_expiry=300)
    c.add_handler("sess/#", lambda t, p: None, qos=1)
    c.connect()
    try:
        wait_for(lambda: api.sessions.get(cid).subscriptions, what="subscription")
        s = api.sessions.get(cid)
        assert isinstance(s, Session)
        assert (s.client_id, s.username, s.connected) == (cid, "tester", True)
        assert [(x.filter, x.qos) for x in s.subscriptions] == [("sess/#", 1)]
        assert cid in [x.client_id for x in api.sessions.list(state="active")]
        assert cid in [x.client_id for x in api.sessions.list(state="all")]
        assert [x.client_id for x in api.sessions.list(state="all", search=cid)] == [cid]
        assert list(api.sessions.list(state="all", search=cid + "-nobody")) == []
        api.sessions.disconnect(cid)
        wait_for(lambda: not c.is_connected, what="disconnect")
        c.disconnect()  # stop reconnecting; the session is kept (session_expiry)
        kept = api.sessions.get(cid)
        assert not kept.connected and [x.filter for x in kept.subscriptions] == ["sess/#"]
        assert cid in [x.client_id for x in api.sessions.list(state="disconnected")]
        assert cid not in [x.client_id for x in api.sessions.list(state="active")]
        api.sessions.delete(cid)
        with pytest.raises(NotFoundError):
            api.sessions.get(cid)
    finally:
        c.disconnect()


def test_org_get_update_and_orgs_crud(broker: Broker, api: RingmqApi) -> None:
    org = api.org.get()
    assert isinstance(org, Org) and org.id == "default" and org.usage is not None
    assert org.settings.rate_limit_per_sec and org.usage.month
    renamed = api.org.update(name="Default Org")
    assert renamed.name == "Default Org"
    created = api.orgs.create(name("org"), settings={"monthly_quota": 5000})
    oid = created.org.id
    assert oid.startswith("org_") and created.org.settings.monthly_quota == 5000
    assert created.key.key and created.key.key.startswith("sk_")
    assert oid in [o.id for o in api.orgs.list()]
    assert api.orgs.get(oid).name == created.org.name
    up = api.orgs.update(oid, name="acme", settings=OrgSettings(connections_max=7))
    assert (up.name, up.settings.connections_max, up.settings.monthly_quota) == ("acme", 7, 5000)
    with broker.api(created.key.key) as other:
        assert other.org.get().id == oid
        with pytest.raises(RingmqError) as ei:
            other.org.update(settings={"rate_burst": 10**6})
        assert ei.value.status == 403
        with pytest.raises(NotFoundError):
            other.users.get("tester")  # another org's user
    api.orgs.delete(oid)
    with pytest.raises(NotFoundError):
        api.orgs.get(oid)


def test_token_exchange(broker: Broker, api: RingmqApi) -> None:
    creds = api.token_exchange(hs256_token(tx_claims(sub="robot")))
    assert creds.username.startswith("tx_") and creds.password and creds.expires_at > time.time()
    assert creds.allowed.publish == ["robot/#"] and creds.allowed.subscribe == ["robot/#"]
    # The credentials log in over MQTT.
    with RingmqClient(host=broker.host, port=broker.port, username=creds.username, password=creds.password) as c:
        assert c.is_connected
    with pytest.raises(AuthenticationError) as ei:
        api.token_exchange("not.a.jwt", provider="sdk-idp")
    assert ei.value.error == "unauthorized"


def test_error_fields_404_400_401(broker: Broker, api: RingmqApi) -> None:
    with pytest.raises(NotFoundError) as e404:
        api.users.get("nobody-here")
    assert (e404.value.status, e404.value.error) == (404, "not_found") and e404.value.detail
    with pytest.raises(BadRequestError) as e400:
        api.users.create("bad name!", PASSWORD)
    assert (e400.value.status, e400.value.error) == (400, "bad_request") and e400.value.detail
    with pytest.raises(BadRequestError):
        api.acl.create("a/#/b", "all", "allow")
    with RingmqApi(url=broker.url, key="sk_not_a_real_key") as bad, pytest.raises(AuthenticationError) as e401:
        bad.org.get()
    assert (e401.value.status, e401.value.error) == (401, "unauthorized") and e401.value.detail
    assert isinstance(e401.value, RingmqError)
    with RingmqApi(url=broker.url) as anonymous, pytest.raises(RingmqError) as e:
        anonymous.publish("a/b", "x")
    assert e.value.status == 401


def test_client_id_with_slash_is_percent_encoded(api: RingmqApi) -> None:
    with pytest.raises(NotFoundError):
        api.sessions.get("no/such/client")
    with pytest.raises(NotFoundError):
        api.sessions.disconnect("no/such client")


def subscriber(broker: Broker, pattern: str) -> tuple[RingmqClient, "queue.Queue[tuple[str, Payload]]"]:
    got: queue.Queue[tuple[str, Payload]] = queue.Queue()
    c = RingmqClient(host=broker.host, port=broker.port, username="tester", password=PASSWORD)
    c.add_handler(pattern, lambda t, p: got.put((t, p)), qos=1)
    c.connect()
    with broker.api() as api:
        wait_for(lambda: api.sessions.get(c.client_id).subscriptions, what="subscription")
    return c, got


def test_rest_publish_payloads(broker: Broker, api: RingmqApi) -> None:
    base = unique("rest")
    c, got = subscriber(broker, f"{base}/#")
    try:
        r = api.publish(f"{base}/json", {"a": [1, 2]})
        assert (r.status, r.topic, r.qos, r.replayed) == ("accepted", f"{base}/json", 0, False)
        r1 = api.publish(f"{base}/text", "hello", qos=1)
        assert r1.status == "queued" and r1.matched == 1
        api.publish(f"{base}/bin", b"\x00\xff", qos=1)
        received = [got.get(timeout=5) for _ in range(3)]
        assert received == [(f"{base}/json", {"a": [1, 2]}), (f"{base}/text", "hello"), (f"{base}/bin", b"\x00\xff")]
        with pytest.raises(BadRequestError):
            api.publish(f"{base}/+", "wildcard")
    finally:
        c.disconnect()


def test_publish_batch_with_idempotency_key(broker: Broker, api: RingmqApi) -> None:
    base = unique("batch")
    c, got = subscriber(broker, f"{base}/#")
    try:
        msgs: list[Any] = [
            PublishMessage(f"{base}/a", {"n": 1}, qos=1),
            {"topic": f"{base}/b", "payload": "two"},
            PublishMessage(f"{base}/+", "bad topic"),
        ]
        key = unique("idem")
        first = api.publish_batch(msgs, idempotency_key=key)
        assert [r.status for r in first.results] == [200, 202, 400]
        assert [r.ok for r in first.results] == [True, True, False]
        assert first.results[2].error == "bad_request" and not first.replayed
        again = api.publish_batch(msgs, idempotency_key=key)
        assert again.replayed and [r.status for r in again.results] == [200, 202, 400]
        received = sorted(got.get(timeout=5) for _ in range(2))
        assert received == [(f"{base}/a", {"n": 1}), (f"{base}/b", "two")]
        time.sleep(0.3)
        assert got.empty()  # the replay published nothing
        # Single publish: same key and body replays; same key, another body is refused.
        k2 = unique("idem")
        assert not api.publish(f"{base}/c", "one", idempotency_key=k2).replayed
        assert api.publish(f"{base}/c", "one", idempotency_key=k2).replayed
        with pytest.raises(RingmqError) as ei:
            api.publish(f"{base}/c", "other", idempotency_key=k2)
        assert ei.value.status == 422
    finally:
        c.disconnect()


def test_rate_limit_429_retry_after(broker: Broker, api: RingmqApi) -> None:
    """A tiny rate limit on a new org (set with the root key): without retries the second request
    is a RateLimitedError with retry_after; with retries the SDK sleeps Retry-After and succeeds."""
    created = api.orgs.create(name("slow"), settings={"rate_limit_per_sec": 1, "rate_burst": 1})
    key = created.key.key
    assert key
    with broker.api(key, retries=5) as patient:
        patient.acl.create("#", "all", "allow")
        # The bucket is full now.
        time.sleep(1.1)
    with broker.api(key, retries=0) as impatient:
        impatient.publish("slow/a", "1")
        with pytest.raises(RateLimitedError) as ei:
            for _ in range(5):
                impatient.publish("slow/a", "2")
        err = ei.value
        assert (err.status, err.error) == (429, "rate_limited")
        assert err.retry_after is not None and 0 < err.retry_after <= 60
        assert err.headers.get("retry-after")
    with broker.api(key, retries=5) as patient:
        t0 = time.monotonic()
        for i in range(3):
            assert patient.publish("slow/a", str(i)).status == "accepted"
        assert time.monotonic() - t0 >= 1.0  # waited for the bucket at least once
    api.orgs.delete(created.org.id)


def test_openapi(api: RingmqApi) -> None:
    doc = api.openapi()
    assert "paths" in doc and any(p.startswith("/v1/users") for p in doc["paths"])
