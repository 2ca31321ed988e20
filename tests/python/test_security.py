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



# == 4. browser origins, request bodies, $SYS (findings 4, 8) =======================================


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
