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


# == 5. per-org caps on retained and offline-queue bytes (finding 7) ================================
