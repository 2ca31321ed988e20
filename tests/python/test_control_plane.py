"""The control plane end to end: the management API driven with httpx, enforced on MQTT
connections (paho-mqtt and raw sockets) on both shards.

Every broker here runs `--shards 2 --placement round-robin`, so consecutive MQTT connections sit on
different shards: a user created through the API must be accepted, restricted and revoked on each.
"""

from __future__ import annotations

import os
import stat
import time

import httpx
import pytest

from helpers import Client, unique, wait_until
from mqttraw import PUBACK, RawClient

pytestmark = pytest.mark.ringmq_only

PASSWORD = "correct horse battery"


def root_key(broker) -> str:
    path = broker.data_dir / "bootstrap-key"
    wait_until(path.exists, what="bootstrap key file")
    return path.read_text().strip()


def api(broker, key: str | None = None) -> httpx.Client:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.Client(base_url=f"http://{broker.host}:{broker.http_port}", headers=headers, timeout=10)


def mqtt(broker, username: str | None, password: str | None = PASSWORD, version: int = 5,
         client_id: str | None = None, expect_rc: int | None = 0) -> Client:
    c = Client(broker.host, broker.port, client_id, version=version, username=username, password=password)
    return c.connect(expect_rc=expect_rc)


def raw_login(broker, username: str, password: str = PASSWORD, version: int = 5, client_id: str = ""):
    r = RawClient(broker.host, broker.port, version)
    ack = r.connect(client_id or unique("raw"), username=username, password=password.encode(),
                    expect_ok=False)
    return r, ack


@pytest.fixture
def admin(broker):
    with api(broker, root_key(broker)) as client:
        yield client


def create_user(admin, username: str, **extra) -> dict:
    r = admin.post("/v1/users", json={"username": username, "password": PASSWORD, **extra})
    assert r.status_code == 201, r.text
    return r.json()


def allow(admin, topic: str, action: str = "all", permission: str = "allow", set_name: str | None = None):
    body = {"topic": topic, "action": action, "permission": permission}
    if set_name:
        body["set"] = set_name
    r = admin.post("/v1/acl/rules", json=body)
    assert r.status_code == 201, r.text
    return r.json()


# -- bootstrap and API basics -------------------------------------------------------------------------

def test_first_start_writes_the_root_key_once_with_mode_0600_and_never_logs_it(broker):
    key = root_key(broker)
    assert key.startswith("sk_")
    mode = stat.S_IMODE(os.stat(broker.data_dir / "bootstrap-key").st_mode)
    assert mode == 0o600
    assert key not in broker.log_path.read_text(errors="replace")
    broker.restart()
    assert root_key(broker) == key, "a restart must not mint another root key"
    with api(broker, key) as client:
        assert client.get("/v1/org").status_code == 200


def test_missing_or_unknown_key_is_401_and_errors_have_code_and_detail(broker):
    with api(broker) as anonymous:
        r = anonymous.get("/v1/users")
        assert r.status_code == 401
        body = r.json()
        assert body["error"] == "unauthorized" and body["detail"]
    with api(broker, "sk_not_a_real_key") as wrong:
        assert wrong.get("/v1/users").status_code == 401


def test_bad_json_unknown_fields_and_bad_patterns_are_400(admin):
    r = admin.post("/v1/users", content=b"{not json", headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and r.json()["error"] == "bad_request"
    r = admin.post("/v1/users", json={"username": "u1", "password": PASSWORD, "colour": "red"})
    assert r.status_code == 400
    r = admin.post("/v1/acl/rules", json={"topic": "a/#/b", "action": "publish", "permission": "allow"})
    assert r.status_code == 400
    r = admin.post("/v1/users", json={"username": "x", "password": "y" * 100_000})
    assert r.status_code in (400, 413)


def test_openapi_document_is_served_and_lists_the_routes(broker):
    with api(broker) as client:
        r = client.get("/v1/openapi.json")
    assert r.status_code == 200
    doc = r.json()
    assert doc["openapi"].startswith("3.")
    for path in ("/v1/users", "/v1/acl/rules", "/v1/acl/sets", "/v1/keys", "/v1/sessions", "/v1/org",
                 "/v1/orgs", "/v1/token-exchange"):
        assert path in doc["paths"], path


def test_users_crud(admin):
    created = create_user(admin, "crud-1", namespace="fleet-a")
    assert created["username"] == "crud-1" and created["namespace"] == "fleet-a"
    assert "password" not in created and "password_hash" not in created
    assert admin.post("/v1/users", json={"username": "crud-1", "password": PASSWORD}).status_code == 409
    assert admin.get("/v1/users/crud-1").json()["enabled"] is True
    r = admin.patch("/v1/users/crud-1", json={"enabled": False})
    assert r.status_code == 200 and r.json()["enabled"] is False
    names = [u["username"] for u in admin.get("/v1/users").json()["items"]]
    assert "crud-1" in names
    assert admin.delete("/v1/users/crud-1").status_code == 204
    assert admin.get("/v1/users/crud-1").status_code == 404


def test_user_list_paginates(admin):
    for i in range(5):
        create_user(admin, f"page-{i}")
    seen, cursor = [], None
    while True:
        params = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        page = admin.get("/v1/users", params=params).json()
        assert len(page["items"]) <= 2
        seen += [u["username"] for u in page["items"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert [n for n in seen if n.startswith("page-")] == [f"page-{i}" for i in range(5)]


# -- MQTT authentication and ACLs ------------------------------------------------------------------------

@pytest.mark.parametrize("version", [4, 5])
def test_login_on_both_shards_and_wrong_password_refused(broker, admin, version):
    create_user(admin, "dev-login")
    a = mqtt(broker, "dev-login", version=version)
    b = mqtt(broker, "dev-login@default", version=version)
    assert a.is_connected() and b.is_connected()
    # v3 gets return code 5 (not authorized, as mosquitto answers), which paho reports as 0x87.
    refused = 0x86 if version == 5 else 0x87
    for attempt in [("dev-login", "wrong password"), ("nobody", PASSWORD), ("dev-login@org_nosuchorg00", PASSWORD)]:
        c = mqtt(broker, attempt[0], attempt[1], version=version, expect_rc=None)
        assert c.connack_rc == refused, attempt
        c.close()
    a.close()
    b.close()


def test_failed_logins_are_throttled_per_source_address(broker, admin):
    create_user(admin, "dev-throttle")
    for _ in range(10):
        r, ack = raw_login(broker, "dev-throttle", "wrong")
        assert ack.reason_code == 0x86
        r.close()
    # Even the right password is refused until the minute is over.
    r, ack = raw_login(broker, "dev-throttle")
    assert ack.reason_code == 0x86
    assert "too many failed logins" in ack.props.get("reason_string", "")
    r.close()


@pytest.mark.broker_config(mqtt={"anonymous": "deny"})
def test_anonymous_clients_refused_when_configured(broker):
    # paho reports v3 return code 5 (not authorized) as reason code 0x87 too.
    for version, expected in ((5, 0x87), (4, 0x87)):
        c = Client(broker.host, broker.port, version=version)
        c.connect(expect_rc=None)
        assert c.connack_rc == expected
        c.close()


def test_acl_username_substitution_and_deny_wins(broker, admin):
    allow(admin, "devices/{username}/#")
    allow(admin, "devices/{username}/secret", permission="deny")
    create_user(admin, "sensor-1")
    create_user(admin, "sensor-2")
    sub = mqtt(broker, "sensor-1")
    assert sub.subscribe("devices/sensor-1/temp", qos=1) == [1]
    assert sub.subscribe("devices/sensor-2/#", qos=1) == [0x87]
    # Deny wins: a filter that would reach the denied topic is refused as a whole.
    assert sub.subscribe("devices/sensor-1/#", qos=1) == [0x87]
    assert sub.subscribe("devices/sensor-1/+", qos=1) == [0x87]
    pub = RawClient(broker.host, broker.port, 5)
    pub.connect("pub-sensor-1", username="sensor-1", password=PASSWORD.encode())
    pub.publish("devices/sensor-1/temp", b"21.5", qos=1)
    assert sub.get().payload == b"21.5"
    pid = pub.pid()
    from mqttraw import publish_packet
    pub.send(publish_packet("devices/sensor-2/temp", b"spoof", 1, False, pid, None, version=5))
    ack = pub.expect(PUBACK)
    assert ack.packet_id == pid and ack.reason_code == 0x87
    pub.send(publish_packet("devices/sensor-1/secret", b"x", 1, False, pub.pid(), None, version=5))
    assert pub.expect(PUBACK).reason_code == 0x87
    sub.expect_none(0.3)
    pub.close()
    sub.close()


def test_v3_unauthorized_publish_is_acked_and_dropped(broker, admin):
    allow(admin, "v3/{username}/#")
    create_user(admin, "v3dev")
    sub = mqtt(broker, "v3dev", version=4)
    assert sub.subscribe("v3/#", qos=1) == [0x80]
    assert sub.subscribe("v3/v3dev/#", qos=1) == [1]
    pub = RawClient(broker.host, broker.port, 4)
    pub.connect("v3pub", username="v3dev", password=PASSWORD.encode())
    pub.publish("v3/other/x", b"dropped", qos=1)  # PUBACK arrives (v3 has no negative ack)
    pub.publish("v3/v3dev/x", b"delivered", qos=1)
    assert sub.get().payload == b"delivered"
    sub.expect_none(0.3)
    pub.close()
    sub.close()


def test_acl_sets_attach_to_users(broker, admin):
    assert admin.post("/v1/acl/sets", json={"name": "backend", "description": "services"}).status_code == 201
    allow(admin, "jobs/#", set_name="backend")
    create_user(admin, "worker", acl_sets=["backend"])
    create_user(admin, "plain")
    w = mqtt(broker, "worker")
    p = mqtt(broker, "plain")
    assert w.subscribe("jobs/#", qos=1) == [1]
    assert p.subscribe("jobs/#", qos=1) == [0x87]
    assert admin.delete("/v1/acl/sets/backend").status_code == 409, "a set in use cannot be deleted"
    w.close()
    p.close()


def test_revocation_closes_live_connections_on_every_shard(broker, admin):
    allow(admin, "#")
    create_user(admin, "doomed")
    create_user(admin, "disabled-later")
    conns = [mqtt(broker, "doomed", client_id=unique("d")) for _ in range(2)]
    other = [mqtt(broker, "disabled-later", client_id=unique("e")) for _ in range(2)]
    assert admin.delete("/v1/users/doomed").status_code == 204
    for c in conns:
        assert c.wait_disconnected(2.0) == 0x87
    assert admin.patch("/v1/users/disabled-later", json={"enabled": False}).status_code == 200
    for c in other:
        assert c.wait_disconnected(2.0) == 0x87
    c = mqtt(broker, "doomed", expect_rc=None)
    assert c.connack_rc == 0x86
    for x in conns + other + [c]:
        x.close()


def test_acl_change_applies_to_live_connections_without_reconnecting(broker, admin):
    create_user(admin, "live-acl")
    c = mqtt(broker, "live-acl")
    assert c.subscribe("live/#", qos=1) == [0x87]
    allow(admin, "live/#")
    wait_until(lambda: c.subscribe("live/#", qos=1) == [1], what="new rule applied")
    assert c.is_connected()
    c.close()


# -- orgs and isolation ----------------------------------------------------------------------------------

def new_org(admin, name: str) -> tuple[str, str]:
    r = admin.post("/v1/orgs", json={"name": name})
    assert r.status_code == 201, r.text
    body = r.json()
    return body["org"]["id"], body["key"]["key"]


def test_orgs_are_isolated_for_wildcards_shared_and_retained(broker, admin):
    org_b, key_b = new_org(admin, "tenant-b")
    assert org_b.startswith("org_")
    allow(admin, "#")
    create_user(admin, "alice")
    with api(broker, key_b) as b_admin:
        allow(b_admin, "#")
        create_user(b_admin, "bob")
        # Org B's key sees only org B's users.
        names = [u["username"] for u in b_admin.get("/v1/users").json()["items"]]
        assert names == ["bob"]
        assert b_admin.get("/v1/users/alice").status_code == 404
        assert b_admin.delete("/v1/users/alice").status_code == 404
        assert b_admin.get("/v1/orgs").status_code == 403, "only the root key manages orgs"
    alice = mqtt(broker, "alice")
    assert alice.subscribe("#", qos=1) == [1]
    assert alice.subscribe("$share/g/#", qos=1) == [1]
    bob_pub = mqtt(broker, f"bob@{org_b}")
    bob_pub.publish("plant/1", b"retained-b", qos=1, retain=True)
    bob_pub.publish("plant/2", b"live-b", qos=1)
    alice.expect_none(0.5)
    late = mqtt(broker, "alice", client_id=unique("late"))
    late.subscribe("plant/#", qos=1)
    late.expect_none(0.3)
    bob_sub = mqtt(broker, f"bob@{org_b}")
    assert bob_sub.subscribe("#", qos=1) == [1]
    m = bob_sub.get()
    assert (m.topic, m.payload, m.retain) == ("plant/1", b"retained-b", True)
    # Same client id in two orgs: two sessions, no takeover.
    a_same = mqtt(broker, "alice", client_id="same-id")
    b_same = mqtt(broker, f"bob@{org_b}", client_id="same-id")
    time.sleep(0.3)
    assert a_same.is_connected() and b_same.is_connected()
    for c in (alice, bob_pub, late, bob_sub, a_same, b_same):
        c.close()


def test_deleting_an_org_closes_its_connections(broker, admin):
    org_c, key_c = new_org(admin, "tenant-c")
    with api(broker, key_c) as c_admin:
        create_user(c_admin, "carol")
    carol = mqtt(broker, f"carol@{org_c}")
    assert admin.delete(f"/v1/orgs/{org_c}").status_code == 204
    assert carol.wait_disconnected(2.0) == 0x87
    with api(broker, key_c) as c_admin:
        assert c_admin.get("/v1/org").status_code == 401
    carol.close()


# -- API keys --------------------------------------------------------------------------------------------

def test_keys_are_shown_once_restricted_keys_cannot_manage_and_revocation_is_immediate(broker, admin):
    r = admin.post("/v1/keys", json={"name": "alerts-only", "kind": "restricted",
                                     "permissions": [{"action": "publish", "topic": "alerts/*"}]})
    assert r.status_code == 201, r.text
    created = r.json()
    secret = created["key"]
    assert secret.startswith("rk_")
    assert created["permissions"][0]["topic"] == "alerts/#"
    listed = admin.get(f"/v1/keys/{created['id']}").json()
    assert "key" not in listed and secret not in str(listed)
    with api(broker, secret) as restricted:
        assert restricted.post("/v1/users", json={"username": "x1", "password": PASSWORD}).status_code == 403
        assert restricted.post("/v1/keys", json={"name": "k", "kind": "secret"}).status_code == 403
    r = admin.post("/v1/keys", json={"name": "ci", "kind": "secret"})
    sk = r.json()["key"]
    with api(broker, sk) as ci:
        assert ci.get("/v1/users").status_code == 200
        assert admin.delete(f"/v1/keys/{r.json()['id']}").status_code == 204
        assert ci.get("/v1/users").status_code == 401
    assert secret not in broker.log_path.read_text(errors="replace")


# -- sessions -------------------------------------------------------------------------------------------

def test_sessions_list_disconnect_and_delete(broker, admin):
    allow(admin, "#")
    create_user(admin, "sess")
    live = mqtt(broker, "sess", client_id="sess-live")
    live.subscribe("s/#", qos=1)
    parked = Client(broker.host, broker.port, "sess-parked", username="sess", password=PASSWORD,
                    clean=False, session_expiry=600).connect()
    parked.subscribe("p/#", qos=1)
    parked.disconnect()
    items = admin.get("/v1/sessions", params={"state": "all"}).json()["items"]
    by_id = {s["client_id"]: s for s in items}
    assert by_id["sess-live"]["connected"] is True
    assert by_id["sess-live"]["username"] == "sess"
    assert by_id["sess-live"]["address"].startswith("127.0.0.1:")
    assert by_id["sess-live"]["subscriptions"] == [{"filter": "s/#", "qos": 1}]
    assert by_id["sess-parked"]["connected"] is False
    active = [s["client_id"] for s in admin.get("/v1/sessions", params={"state": "active"}).json()["items"]]
    assert "sess-live" in active and "sess-parked" not in active
    # Without ?state= the list is the connected clients, as the seed's example reads.
    default = [s["client_id"] for s in admin.get("/v1/sessions").json()["items"]]
    assert default == active
    assert admin.post("/v1/sessions/sess-live/disconnect").status_code == 204
    assert live.wait_disconnected(2.0) == 0x98
    assert admin.delete("/v1/sessions/sess-parked").status_code == 204
    assert admin.get("/v1/sessions/sess-parked").status_code == 404
    assert admin.post("/v1/sessions/nobody/disconnect").status_code == 404
    live.close()
    parked.close()


# -- token exchange -------------------------------------------------------------------------------------

HS_SECRET = "0123456789abcdef0123456789abcdef-test-only"


def rsa_pair():
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    public = key.public_key().public_bytes(serialization.Encoding.PEM,
                                           serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    return private, public


RSA_PRIVATE, RSA_PUBLIC = rsa_pair()


@pytest.mark.broker_config(auth={"providers": [
    {"name": "hs", "org_id": "default", "issuer": "https://hs.test/", "algorithm": "HS256",
     "secret": HS_SECRET},
    {"name": "rs", "org_id": "default", "issuer": "https://rs.test/", "audience": "ringmq",
     "algorithm": "RS256", "public_key_pem": RSA_PUBLIC},
]})
def test_token_exchange_hs256_and_rs256_and_expired(broker, admin):
    import jwt
    now = int(time.time())
    hs = jwt.encode({"iss": "https://hs.test/", "sub": "agent-7", "jti": "hs-1", "exp": now + 60}, HS_SECRET,
                    algorithm="HS256")
    r = admin.post("/v1/token-exchange", json={"token": hs})
    assert r.status_code == 201, r.text
    creds = r.json()
    assert creds["allowed"]["publish"] == ["agent-7/#"]
    c = mqtt(broker, creds["username"], creds["password"])
    assert c.subscribe("agent-7/#", qos=1) == [1]
    assert c.subscribe("other/#", qos=1) == [0x87]
    c.close()

    rs = jwt.encode({"iss": "https://rs.test/", "aud": "ringmq", "sub": "svc", "jti": "rs-1", "exp": now + 3,
                     "mqtt_publish": ["svc/out/#"], "mqtt_subscribe": ["svc/in/#"]},
                    RSA_PRIVATE, algorithm="RS256")
    r = admin.post("/v1/token-exchange", json={"token": rs, "provider": "rs"})
    assert r.status_code == 201, r.text
    creds = r.json()
    assert creds["expires_at"] <= now + 3
    c = mqtt(broker, creds["username"], creds["password"])
    assert c.subscribe("svc/in/#", qos=1) == [1]
    # The credentials run out with the token: the live session is closed at expiry.
    assert c.wait_disconnected(6.0) == 0x87
    late = mqtt(broker, creds["username"], creds["password"], expect_rc=None)
    assert late.connack_rc == 0x86
    late.close()
    c.close()

    expired = jwt.encode({"iss": "https://hs.test/", "sub": "old", "jti": "hs-2", "exp": now - 10}, HS_SECRET,
                         algorithm="HS256")
    r = admin.post("/v1/token-exchange", json={"token": expired})
    assert r.status_code in (400, 401)
    assert "expired" in r.json()["detail"]
    forged = jwt.encode({"iss": "https://hs.test/", "sub": "x", "jti": "hs-3", "exp": now + 60},
                        "another-secret-another-secret!!",
                        algorithm="HS256")
    assert admin.post("/v1/token-exchange", json={"token": forged}).status_code in (400, 401)


def test_will_topic_is_checked_at_connect_and_scoped_to_the_org(broker, admin):
    allow(admin, "status/{username}")
    allow(admin, "status/#", action="subscribe")
    create_user(admin, "willy")
    r = RawClient(broker.host, broker.port, 5)
    ack = r.connect(unique("w"), username="willy", password=PASSWORD.encode(), expect_ok=False,
                    will={"topic": "status/someone-else", "payload": b"gone"})
    assert ack.reason_code == 0x87, "a will the user may not publish is refused at CONNECT"
    r.close()
    watcher = mqtt(broker, "willy")
    assert watcher.subscribe("status/#", qos=1) == [1]
    w = RawClient(broker.host, broker.port, 5)
    w.connect(unique("w"), username="willy", password=PASSWORD.encode(),
              will={"topic": "status/willy", "payload": b"offline"})
    w.abort()
    m = watcher.get()
    assert (m.topic, m.payload) == ("status/willy", b"offline")
    watcher.close()


def test_org_connection_limit(broker, admin):
    org_d, key_d = new_org(admin, "small-tenant")
    with api(broker, key_d) as d:
        # Org limits are the operator's: the root key sets them (issue 11, finding 7).
        assert d.patch("/v1/org", json={"settings": {"connections_max": 2}}).status_code == 403
        assert admin.patch(f"/v1/orgs/{org_d}", json={"settings": {"connections_max": 2}}).status_code == 200
        create_user(d, "dora")
    first = mqtt(broker, f"dora@{org_d}")
    second = mqtt(broker, f"dora@{org_d}")
    third = mqtt(broker, f"dora@{org_d}", expect_rc=None)
    assert third.connack_rc == 0x97, "the org's connections_max is reached"
    third.close()
    first.disconnect()
    wait_until(lambda: mqtt(broker, f"dora@{org_d}", expect_rc=None).connack_rc == 0, what="a slot freed")
    second.close()


def test_v3_wrong_password_gets_return_code_5_on_the_wire(broker, admin):
    create_user(admin, "v3-wire")
    r, ack = raw_login(broker, "v3-wire", "wrong password", version=4)
    assert ack.reason_code == 5
    r.close()
    r, ack = raw_login(broker, "v3-wire", version=4)
    assert ack.reason_code == 0
    r.close()
