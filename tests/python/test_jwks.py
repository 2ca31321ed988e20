"""Token exchange with providers whose keys come from a JWKS URL (`jwks_url`).

The key set is served by a small HTTP server on 127.0.0.1 in a thread; tokens are signed with
PyJWT. The broker fetches the set on the first token (not at start), again when a token names a
kid it does not know (at most once per 30 s per provider), and when the set is 10 minutes old.
"""

from __future__ import annotations

import base64
import json
import socket
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

pytestmark = pytest.mark.ringmq_only

# The broker's refresh rate limit (REFRESH_INTERVAL_MIN in src/control/jwt/jwks.rs).
REFRESH_INTERVAL = 30
ISSUER = "https://jwks.test/"


def pick_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# Chosen at import: the broker_config markers below need the URLs.
SERVED_PORT = pick_port()
LATE_PORT = pick_port()
DEAD_PORT = pick_port()


def b64url_uint(value: int) -> str:
    raw = value.to_bytes((value.bit_length() + 7) // 8, "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def new_key():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def jwk(key, kid: str) -> dict:
    numbers = key.public_key().public_numbers()
    return {"kty": "RSA", "kid": kid, "use": "sig", "alg": "RS256",
            "n": b64url_uint(numbers.n), "e": b64url_uint(numbers.e)}


class JwksServer:
    """Serves `{"keys": self.keys}` at any path on 127.0.0.1:port and counts the requests."""

    def __init__(self, port: int, keys: list[dict]):
        self.keys = keys
        self.hits = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's name)
                server.hits += 1
                body = json.dumps({"keys": server.keys}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> JwksServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


def provider(name: str, port: int, issuer: str = ISSUER) -> dict:
    return {"name": name, "org_id": "default", "issuer": issuer, "algorithm": "RS256",
            "jwks_url": f"http://127.0.0.1:{port}/.well-known/jwks.json"}


def token(key, kid: str, issuer: str = ISSUER, sub: str = "device-1") -> str:
    claims = {"iss": issuer, "sub": sub, "jti": uuid.uuid4().hex, "exp": int(time.time()) + 120}
    return jwt.encode(claims, key, algorithm="RS256", headers={"kid": kid})


def root_key(broker) -> str:
    path = broker.data_dir / "bootstrap-key"
    deadline = time.monotonic() + 5
    while not path.exists():
        assert time.monotonic() < deadline, "no bootstrap key file"
        time.sleep(0.05)
    return path.read_text().strip()


@pytest.fixture
def admin(broker):
    with httpx.Client(base_url=f"http://{broker.host}:{broker.http_port}",
                      headers={"Authorization": f"Bearer {root_key(broker)}"}, timeout=15) as client:
        yield client


def exchange(admin, tok: str, name: str | None = None) -> httpx.Response:
    body = {"token": tok} if name is None else {"token": tok, "provider": name}
    return admin.post("/v1/token-exchange", json=body)


@pytest.mark.broker_config(auth={"providers": [provider("idp", SERVED_PORT)]})
def test_jwks_keys_rotation_and_strangers(broker, admin):
    first, second, stranger = new_key(), new_key(), new_key()
    with JwksServer(SERVED_PORT, [jwk(first, "k1")]) as idp:
        assert idp.hits == 0, "the set is fetched on the first token, not at start"
        started = time.monotonic()
        r = exchange(admin, token(first, "k1"))
        assert r.status_code == 201, r.text
        assert r.json()["allowed"]["publish"] == ["device-1/#"]
        assert idp.hits == 1

        # A kid the set lacks, signed by a stranger: refused, and (within the refresh window) the
        # identity provider is not asked again however many such tokens come.
        for i in range(5):
            r = exchange(admin, token(stranger, f"made-up-{i}"))
            assert r.status_code == 401, r.text
            assert "kid is not in the key set" in r.json()["detail"]
        # A stranger's token under the known kid: the signature fails.
        r = exchange(admin, token(stranger, "k1"))
        assert r.status_code == 401 and "signature" in r.json()["detail"], r.text
        assert idp.hits == 1

        # The provider rotates to a new key under a new kid. Within the window the new kid is
        # still unknown; once it has passed, the first token naming it refreshes the set.
        idp.keys = [jwk(second, "k2")]
        rotated = token(second, "k2", sub="device-2")
        assert exchange(admin, rotated).status_code == 401
        assert idp.hits == 1
        time.sleep(max(0.0, started + REFRESH_INTERVAL + 1 - time.monotonic()))
        r = exchange(admin, rotated)
        assert r.status_code == 201, r.text
        assert r.json()["allowed"]["publish"] == ["device-2/#"]
        assert idp.hits == 2
        # The withdrawn key no longer works, and a stranger still does not.
        r = exchange(admin, token(first, "k1"))
        assert r.status_code == 401, r.text
        r = exchange(admin, token(stranger, "k3"))
        assert r.status_code == 401, r.text
        assert idp.hits == 2
    assert broker.alive()


@pytest.mark.broker_config(auth={"providers": [
    provider("late", LATE_PORT),
    provider("dead", DEAD_PORT, issuer="https://dead.test/"),
]})
def test_jwks_server_down_at_start_does_not_stop_the_broker(broker, admin):
    # Neither key set was reachable when the broker started: it started all the same.
    assert broker.alive()
    key = new_key()
    # A provider whose key set cannot be fetched refuses with the reason, and quickly.
    began = time.monotonic()
    r = exchange(admin, token(key, "k1", issuer="https://dead.test/"), name="dead")
    assert r.status_code == 503 and r.json()["error"] == "unavailable", r.text
    assert r.headers["retry-after"] == "30"
    detail = r.json()["detail"]
    assert "dead" in detail and "could not be fetched" in detail, detail
    assert time.monotonic() - began < 6
    # The other identity provider comes up after the broker: its first token fetches the set.
    with JwksServer(LATE_PORT, [jwk(key, "k1")]) as idp:
        r = exchange(admin, token(key, "k1"), name="late")
        assert r.status_code == 201, r.text
        assert idp.hits == 1
    assert broker.alive()
    assert "could not be fetched" in broker.log_path.read_text(errors="replace")
