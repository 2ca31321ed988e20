"""Fixtures: a real ringmq broker on free loopback ports in a temp data dir.

`RINGMQ_BIN` names the broker binary (default `<repo>/target/debug/ringmq`). The module-scoped
`broker` is shared by the tests of one file (each test uses its own names); tests that change
broker-wide state (rate limits, restarts) take `fresh_broker`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import select
import shutil
import socket
import subprocess
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest

from ringmq import RingmqApi

REPO = Path(__file__).resolve().parents[3]
START_TIMEOUT = 15.0
TX_SECRET = "sdk-python-token-exchange-secret-0123456789"
TX_PROVIDER = "sdk-idp"
PASSWORD = "password-123"

_GIVEN: set[int] = set()


def free_port() -> int:
    """A free loopback port not handed out before in this run."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port not in _GIVEN:
            _GIVEN.add(port)
            return port


def unique(prefix: str = "t") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def wait_for(cond: Any, timeout: float = 10.0, interval: float = 0.05, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(interval)


def hs256_token(claims: dict[str, Any]) -> str:
    """An HS256 JWT signed with TX_SECRET."""
    def b64(b: bytes) -> str:
        return base64.urlsafe_b64encode(b).rstrip(b"=").decode()
    head = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = b64(json.dumps(claims).encode())
    sig = hmac.new(TX_SECRET.encode(), f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64(sig)}"


def tx_claims(sub: str = "agent", ttl: int = 120) -> dict[str, Any]:
    return {"iss": f"https://{TX_PROVIDER}.test/", "sub": sub, "exp": int(time.time()) + ttl,
            "jti": uuid.uuid4().hex}


class Broker:
    """A ringmq process: `.port` (MQTT), `.http_port`, `.url`, `.root_key`, `.data_dir`."""

    def __init__(self, workdir: Path, tls: tuple[Path, Path] | None = None) -> None:
        self.workdir = workdir
        self.tls = tls
        self.data_dir = workdir / "data"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.host = "127.0.0.1"
        self.port = free_port()
        self.http_port = free_port()
        self.url = f"http://{self.host}:{self.http_port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = workdir / "broker.log"
        self.config_path = workdir / "ringmq.toml"
        self.config_path.write_text(
            "[[auth.providers]]\n"
            f'name = "{TX_PROVIDER}"\norg_id = "default"\nissuer = "https://{TX_PROVIDER}.test/"\n'
            f'algorithm = "HS256"\nsecret = "{TX_SECRET}"\n'
        )
        if tls is not None:
            with self.config_path.open("a") as f:
                f.write(f'\n[tls]\ncert_path = "{tls[0]}"\nkey_path = "{tls[1]}"\n')
        self.mqtts_port = free_port()
        self.https_port = free_port()
        self.https_url = f"https://{self.host}:{self.https_port}"
        self.root_key = ""

    def binary(self) -> str:
        b = os.environ.get("RINGMQ_BIN") or str(REPO / "target" / "debug" / "ringmq")
        if not os.path.isabs(b):
            b = str(REPO / b)
        if not os.access(b, os.X_OK):
            pytest.exit(f"ringmq binary not found at {b}: build it or set RINGMQ_BIN", returncode=3)
        return b

    def start(self) -> None:
        cmd = [self.binary(), "serve", "--mqtt-listen", f"{self.host}:{self.port}",
               "--http-listen", f"{self.host}:{self.http_port}", "--data-dir", str(self.data_dir),
               "--shards", "1", "--config", str(self.config_path), "--log", "warn"]
        if self.tls is not None:
            cmd += ["--mqtts-listen", f"{self.host}:{self.mqtts_port}",
                    "--https-listen", f"{self.host}:{self.https_port}"]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"broker exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1.0).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"broker not ready within {START_TIMEOUT}s:\n{self.log_tail()}")
            time.sleep(0.05)
        self.root_key = (self.data_dir / "bootstrap-key").read_text().strip()

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()
        self.proc = None

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)

    def restart(self) -> None:
        self.stop()
        self.start()

    def log_tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no log)"

    def api(self, key: str | None = None, **kw: Any) -> RingmqApi:
        kw.setdefault("retries", 3)
        return RingmqApi(url=self.url, key=key if key is not None else self.root_key, **kw)


def _start(workdir: Path, tls: tuple[Path, Path] | None = None) -> Broker:
    b = Broker(workdir, tls)
    b.start()
    # Default deny: allow everything in the `default` set for the tests' users.
    with b.api() as api:
        # Room for the tests' management calls (management routes are rate-limited per org).
        api.org.update(settings={"rate_limit_per_sec": 10000, "rate_burst": 10000})
        api.acl.create("#", "all", "allow")
        api.users.create("tester", PASSWORD)
    return b


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    """One broker for the tests of a module, with user `tester` and an allow-all rule."""
    b = _start(tmp_path_factory.mktemp("ringmq"))
    try:
        yield b
    finally:
        b.stop()
        b.kill()


@pytest.fixture
def fresh_broker(tmp_path: Path) -> Iterator[Broker]:
    """A broker for this test only."""
    b = _start(tmp_path)
    try:
        yield b
    finally:
        b.stop()
        b.kill()


@pytest.fixture
def api(broker: Broker) -> Iterator[RingmqApi]:
    """A RingmqApi with the root key of the shared broker."""
    with broker.api() as a:
        yield a


class TcpProxy:
    """A loopback TCP proxy to `target_port` whose connections a test can cut (`drop()`)."""

    def __init__(self, target_port: int) -> None:
        self.target = ("127.0.0.1", target_port)
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.port = int(self.listener.getsockname()[1])
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self._closed = False
        self.accepted = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns += [client, upstream]
                self.accepted += 1
            threading.Thread(target=self._pipe, args=(client, upstream), daemon=True).start()

    def _pipe(self, a: socket.socket, b: socket.socket) -> None:
        try:
            while True:
                r, _, _ = select.select([a, b], [], [], 0.5)
                if self._closed:
                    return
                for s in r:
                    data = s.recv(65536)
                    if not data:
                        return
                    (b if s is a else a).sendall(data)
        except OSError:
            return
        finally:
            for s in (a, b):
                try:
                    s.close()
                except OSError:
                    pass

    def drop(self) -> None:
        """Cut every current connection (both sides see a reset/EOF)."""
        with self._lock:
            conns, self._conns = self._conns, []
        for s in conns:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def close(self) -> None:
        self._closed = True
        self.listener.close()
        self.drop()


@pytest.fixture
def proxy_factory() -> Iterator[Any]:
    made: list[TcpProxy] = []

    def make(port: int) -> TcpProxy:
        p = TcpProxy(port)
        made.append(p)
        return p

    yield make
    for p in made:
        p.close()


def make_pki(directory: Path) -> tuple[Path, Path, Path]:
    """(ca.pem, server.pem, server.key) for 127.0.0.1, made with the openssl CLI."""
    directory.mkdir(parents=True, exist_ok=True)
    ca, ca_key = directory / "ca.pem", directory / "ca.key"
    cert, key, csr, ext = (directory / n for n in ("server.pem", "server.key", "server.csr", "ext.cnf"))
    ext.write_text("subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    for cmd in (
        ["openssl", "req", "-x509", *ec, "-keyout", str(ca_key), "-out", str(ca), "-days", "2",
         "-subj", "/CN=ringmq sdk test CA"],
        ["openssl", "req", *ec, "-keyout", str(key), "-out", str(csr), "-subj", "/CN=127.0.0.1"],
        ["openssl", "x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key),
         "-CAcreateserial", "-out", str(cert), "-days", "2", "-extfile", str(ext)],
    ):
        subprocess.run(cmd, check=True, capture_output=True, timeout=30)
    return ca, cert, key


@pytest.fixture
def tls_broker(tmp_path: Path) -> Iterator[tuple[Broker, Path]]:
    """A broker with MQTT over TLS and HTTPS listeners too, and the CA that signed its certificate."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl CLI not installed")
    ca, cert, key = make_pki(tmp_path / "pki")
    b = _start(tmp_path / "broker", tls=(cert, key))
    try:
        yield b, ca
    finally:
        b.stop()
        b.kill()
