"""TLS end to end: MQTT over TLS with paho-mqtt, HTTPS with httpx, client certificates (mTLS) whose
CN logs a device in as a user, certificate reload on SIGHUP, and start-up errors.

Each test makes its own CA, server certificate (SAN localhost / 127.0.0.1) and client certificates
with `cryptography`, writes them as PEM files in the test's directory and starts the broker with a
`[tls]` section and `--mqtts-listen` / `--https-listen`.
"""

from __future__ import annotations

import datetime
import json
import os
import signal
import socket
import ssl
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from conftest import Broker, free_port
from helpers import Client, unique, wait_until

pytestmark = pytest.mark.ringmq_only

PASSWORD = "correct horse battery"


# -- certificates ----------------------------------------------------------------------------------
def new_key():
    return ec.generate_private_key(ec.SECP256R1())


def key_pem(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def cert_pem(cert) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def issue(cn: str, key, issuer=None, issuer_key=None, *, ca: bool = False, server: bool = False,
          client: bool = False):
    now = datetime.datetime.now(datetime.timezone.utc)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    builder = (x509.CertificateBuilder()
               .subject_name(subject)
               .issuer_name(issuer.subject if issuer else subject)
               .public_key(key.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5))
               .not_valid_after(now + datetime.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                          key_encipherment=False, data_encipherment=False, key_agreement=False,
                          encipher_only=False, decipher_only=False), critical=True)
        builder = builder.add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                                        critical=False)
    if server:
        import ipaddress
        builder = builder.add_extension(x509.SubjectAlternativeName(
            [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        builder = builder.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    if client:
        builder = builder.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
    if issuer is not None:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), critical=False)
    return builder.sign(issuer_key or key, hashes.SHA256())


class Pki:
    """A CA with a server certificate, in PEM files under `dir`."""

    def __init__(self, directory: Path):
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.ca_key = new_key()
        self.ca = issue("ringmq test CA", self.ca_key, ca=True)
        self.ca_path = self.write("ca.pem", cert_pem(self.ca))
        self.cert_path = self.dir / "server.pem"
        self.key_path = self.dir / "server-key.pem"
        self.server = self.new_server_cert()

    def write(self, name: str, data: bytes) -> Path:
        path = self.dir / name
        path.write_bytes(data)
        return path

    def new_server_cert(self, cn: str = "ringmq test server"):
        """Issues a server certificate and (re)writes server.pem and server-key.pem."""
        key = new_key()
        cert = issue(cn, key, self.ca, self.ca_key, server=True)
        # Write beside, then rename: the broker never reads a half-written file.
        for path, data in ((self.key_path, key_pem(key)), (self.cert_path, cert_pem(cert))):
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(data)
            os.replace(tmp, path)
        return cert

    def client_cert(self, cn: str) -> tuple[Path, Path]:
        key = new_key()
        cert = issue(cn, key, self.ca, self.ca_key, client=True)
        name = cn.replace("@", "_at_")
        return (self.write(f"client-{name}.pem", cert_pem(cert)),
                self.write(f"client-{name}-key.pem", key_pem(key)))


# -- broker ------------------------------------------------------------------------------------------
class TlsBroker(Broker):
    def __init__(self, workdir: Path, pki: Pki, client_auth: str = "none", mqtt: dict | None = None,
                 tls: dict | None = None):
        self.mqtts_port = free_port()
        self.https_port = free_port()
        tls = {"cert_path": str(pki.cert_path), "key_path": str(pki.key_path),
               "client_ca_path": str(pki.ca_path), "client_auth": client_auth, **(tls or {})}
        super().__init__("ringmq", workdir, config={"tls": tls, "mqtt": mqtt or {}},
                         extra_args=["--mqtts-listen", f"127.0.0.1:{self.mqtts_port}",
                                     "--https-listen", f"127.0.0.1:{self.https_port}"])


@pytest.fixture
def pki(tmp_path) -> Pki:
    return Pki(tmp_path / "pki")


@pytest.fixture
def tls_broker(request, tmp_path, pki):
    marker = request.node.get_closest_marker("broker_config")
    kw = dict(marker.kwargs) if marker else {}
    b = TlsBroker(tmp_path, pki, **kw)
    b.start()
    yield b
    if b.proc is not None and b.proc.returncode is None:
        rc = b.stop()
        assert rc == 0, f"broker exited with {rc} on SIGTERM (want 0):\n{b.log_tail()}"


def tls_client(broker: TlsBroker, pki: Pki, cert: tuple[Path, Path] | None = None, **kw) -> Client:
    c = Client(broker.host, broker.mqtts_port, **kw)
    if cert:
        c.c.tls_set(ca_certs=str(pki.ca_path), certfile=str(cert[0]), keyfile=str(cert[1]))
    else:
        c.c.tls_set(ca_certs=str(pki.ca_path))
    return c


def tls_socket(broker: TlsBroker, pki: Pki, cert: tuple[Path, Path] | None = None) -> ssl.SSLSocket:
    ctx = ssl.create_default_context(cafile=str(pki.ca_path))
    if cert:
        ctx.load_cert_chain(str(cert[0]), str(cert[1]))
    sock = socket.create_connection((broker.host, broker.mqtts_port), timeout=5)
    return ctx.wrap_socket(sock, server_hostname="localhost")


CONNECT_V311 = bytes([0x10, 14, 0, 4]) + b"MQTT" + bytes([4, 2, 0, 60, 0, 2]) + b"id"


# -- tests -------------------------------------------------------------------------------------------
def test_mqtt_over_tls_with_paho(tls_broker, pki):
    sub = tls_client(tls_broker, pki, version=5).connect()
    plain = tls_broker.client(version=5).connect()
    try:
        assert sub.subscribe("tls/#", qos=1) == [1]
        plain.publish("tls/a", b"over tcp", qos=1)
        m = sub.get()
        assert (m.topic, m.payload) == ("tls/a", b"over tcp")
        # And the other way, with a payload spanning several TLS records.
        assert plain.subscribe("back/#", qos=1) == [1]
        big = os.urandom(100_000)
        sub.publish("back/big", big, qos=1)
        assert plain.get().payload == big
    finally:
        sub.close()
        plain.close()


def test_https_healthz_with_the_test_ca(tls_broker, pki):
    ctx = ssl.create_default_context(cafile=str(pki.ca_path))
    with httpx.Client(verify=ctx, timeout=5) as http:
        r = http.get(f"https://127.0.0.1:{tls_broker.https_port}/healthz")
        assert r.status_code == 200
        assert r.text == "ok\n"
        # Keep-alive: a second request on the same TLS connection.
        assert http.get(f"https://127.0.0.1:{tls_broker.https_port}/healthz").status_code == 200
        # The web console is served on the HTTPS listener too.
        page = http.get(f"https://127.0.0.1:{tls_broker.https_port}/console")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    # A client that does not trust the CA refuses the server.
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"https://127.0.0.1:{tls_broker.https_port}/healthz", timeout=5)


def root_key(broker) -> str:
    path = broker.data_dir / "bootstrap-key"
    wait_until(path.exists, what="bootstrap key file")
    return path.read_text().strip()


@pytest.mark.broker_config(client_auth="required", mqtt={"anonymous": "deny"})
def test_required_client_certificate_logs_in_as_the_cn_user(tls_broker, pki):
    # No certificate: the handshake fails (a TLS 1.3 client may only learn it on its first read),
    # and no CONNACK ever comes.
    with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
        s = tls_socket(tls_broker, pki)
        s.sendall(CONNECT_V311)
        data = s.recv(4)
        s.close()
        if not data:
            raise ConnectionError("closed without CONNACK")

    # A certificate whose CN is a user: CONNECT without a username logs in as that user.
    with httpx.Client(base_url=f"http://127.0.0.1:{tls_broker.http_port}",
                      headers={"Authorization": f"Bearer {root_key(tls_broker)}"}, timeout=10) as admin:
        # The default ACL set: each user may use its own `devices/{username}/#` only.
        r = admin.post("/v1/acl/rules", json={"topic": "devices/{username}/#", "action": "all",
                                              "permission": "allow"})
        assert r.status_code == 201, r.text
        r = admin.post("/v1/users", json={"username": "sensor-1", "password": PASSWORD})
        assert r.status_code == 201, r.text
    device = pki.client_cert("sensor-1")
    wait_until(lambda: try_connect(tls_broker, pki, device) == 0, what="login with the certificate's CN")
    c = tls_client(tls_broker, pki, device, version=5).connect()
    try:
        # The ACL sees the user the CN named.
        assert c.subscribe("devices/sensor-1/#", qos=1) == [1]
        assert c.subscribe("devices/sensor-2/#", qos=1) == [0x87]
        c.publish("devices/sensor-1/temp", b"hello", qos=1)
        assert c.get().payload == b"hello"
    finally:
        c.close()
    # `name@org_id` names the same user in the default org.
    assert try_connect(tls_broker, pki, pki.client_cert("sensor-1@default")) == 0

    # A verified certificate whose CN names no user: the anonymous rules apply (denied here).
    assert try_connect(tls_broker, pki, pki.client_cert("ghost")) == 0x87
    # A certificate from another CA fails the handshake.
    stranger = Pki(pki.dir / "other")
    foreign = stranger.client_cert("sensor-1")
    with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
        s = tls_socket(tls_broker, pki, foreign)
        s.sendall(CONNECT_V311)
        if not s.recv(4):
            raise ConnectionError("closed without CONNACK")


def try_connect(broker, pki, cert) -> int | None:
    c = tls_client(broker, pki, cert, version=5)
    try:
        c.connect(expect_rc=None)
        return c.connack_rc
    finally:
        c.close()


@pytest.mark.broker_config(client_auth="optional")
def test_optional_client_certificate(tls_broker, pki):
    # Without a certificate: anonymous (loopback default) as before.
    assert try_connect(tls_broker, pki, None) == 0
    assert try_connect(tls_broker, pki, pki.client_cert("any-device")) == 0


@pytest.mark.broker_config(tls={"handshake_timeout_ms": 300})
def test_stalled_handshake_is_dropped(tls_broker, pki):
    # A peer that opens the TLS port and says nothing is closed after handshake_timeout_ms.
    with socket.create_connection((tls_broker.host, tls_broker.mqtts_port), timeout=5) as s:
        started = time.monotonic()
        assert s.recv(16) == b""
        assert time.monotonic() - started < 3
    # The listener goes on serving.
    assert try_connect(tls_broker, pki, None) == 0


def peer_serial(broker: TlsBroker, pki: Pki) -> int:
    with tls_socket(broker, pki) as s:
        der = s.getpeercert(binary_form=True)
    return x509.load_der_x509_certificate(der).serial_number


def test_sighup_reloads_the_certificate_and_keeps_connections(tls_broker, pki):
    first = pki.server.serial_number
    assert peer_serial(tls_broker, pki) == first
    held = tls_client(tls_broker, pki, version=5).connect()
    try:
        assert held.subscribe("held/#", qos=1) == [1]
        second = pki.new_server_cert("ringmq renewed server")
        tls_broker.signal(signal.SIGHUP)
        wait_until(lambda: peer_serial(tls_broker, pki) == second.serial_number,
                   what="new handshakes to use the new certificate")
        # A reload that fails (a key that is not the certificate's) keeps the renewed certificate.
        pki.key_path.write_bytes(key_pem(new_key()))
        tls_broker.signal(signal.SIGHUP)
        time.sleep(0.3)
        assert tls_broker.alive()
        assert peer_serial(tls_broker, pki) == second.serial_number
        # The connection made before the reload is still up and working.
        held.publish("held/x", b"still here", qos=1)
        assert held.get().payload == b"still here"
        assert not held.disconnected.is_set()
    finally:
        held.close()
    assert "TLS reload failed" in tls_broker.log_path.read_text()


def run_broker(tmp_path: Path, tls: dict, extra: list[str]) -> subprocess.CompletedProcess:
    b = Broker("ringmq", tmp_path, config={"tls": tls})
    cmd = b.command() + extra
    return subprocess.run(cmd, capture_output=True, text=True, timeout=20, stdin=subprocess.DEVNULL)


def test_start_fails_for_bad_certificate_files(tmp_path, pki):
    listen = ["--mqtts-listen", f"127.0.0.1:{free_port()}"]
    other_key = pki.write("other-key.pem", key_pem(new_key()))
    cases = [
        ({"cert_path": str(pki.cert_path), "key_path": str(other_key)}, "other-key.pem"),
        ({"cert_path": str(pki.dir / "missing.pem"), "key_path": str(pki.key_path)}, "missing.pem"),
        ({"cert_path": str(pki.cert_path), "key_path": str(pki.cert_path)}, "no PEM private key"),
        ({"cert_path": str(pki.cert_path), "key_path": str(pki.key_path), "client_auth": "required",
          "client_ca_path": str(pki.key_path)}, "server-key.pem"),
        ({}, "tls.cert_path"),
    ]
    for i, (tls, expected) in enumerate(cases):
        work = tmp_path / f"case{i}"
        work.mkdir()
        result = run_broker(work, tls, listen)
        out = result.stdout + result.stderr
        assert result.returncode != 0, f"started with {tls}:\n{out}"
        assert expected in out, f"want {expected!r} for {tls}:\n{out}"


@pytest.mark.broker_config(client_auth="optional")
def test_certificate_cn_is_the_device_of_the_stream_filter(tls_broker, pki):
    from websockets.sync.client import connect as ws_connect
    key = root_key(tls_broker)
    url = f"ws://127.0.0.1:{tls_broker.http_port}/v1/mqtt/stream?token={key}&device=cam-7"
    with ws_connect(url) as ws:
        time.sleep(0.2)
        other = tls_client(tls_broker, pki, pki.client_cert("cam-8"), version=5).connect()
        other.publish("video/status", b"not me", qos=1)
        cam = tls_client(tls_broker, pki, pki.client_cert("cam-7"), version=5).connect()
        cam.publish("video/status", b"cam-7 online", qos=1)
        frame = json.loads(ws.recv(timeout=5))
        assert frame["payload"] == "cam-7 online"
        other.close()
        cam.close()


def test_cli_speaks_https_with_a_private_ca(tls_broker, pki, tmp_path):
    """The CLI over HTTPS: `--ca` trusts a private CA, `auth login` keeps it for later
    commands, and without it the server's certificate is refused with a clear error."""
    import json
    import subprocess

    binary = tls_broker.command()[0]
    url = f"https://127.0.0.1:{tls_broker.https_port}"
    env = dict(os.environ, RINGMQ_CONFIG_DIR=str(tmp_path / "cli-config"))
    env.pop("RINGMQ_URL", None)
    env.pop("RINGMQ_KEY", None)
    env.pop("RINGMQ_CA", None)

    def cli(*args: str, key: str | None = None) -> subprocess.CompletedProcess:
        extra = {"RINGMQ_KEY": key} if key else {}
        return subprocess.run([binary, *args], env={**env, **extra}, capture_output=True, text=True,
                              timeout=30)

    key = root_key(tls_broker)
    p = cli("users", "list", "--json", "--url", url, "--ca", str(pki.ca_path), key=key)
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["items"] == []
    # The public roots do not know the test CA: refused, naming the certificate problem.
    p = cli("users", "list", "--url", url, key=key)
    assert p.returncode == 3, (p.returncode, p.stdout, p.stderr)
    assert "certificate" in p.stderr.lower(), p.stderr
    # A CA file that holds no certificate is a usage error naming the file.
    bad = tmp_path / "not-a-ca.pem"
    bad.write_text("hello\n")
    p = cli("users", "list", "--url", url, "--ca", str(bad), key=key)
    assert p.returncode == 2 and str(bad) in p.stderr, p.stderr
    # Logged in with --ca: later commands use the stored URL and CA.
    p = cli("auth", "login", "--url", url, "--ca", str(pki.ca_path), key=key)
    assert p.returncode == 0, p.stderr
    p = subprocess.run([binary, "users", "create", "--username", "tls-user", "--password-stdin"], env=env,
                       input="a-long-password\n", capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, p.stderr
    p = cli("users", "list", "--json")
    assert p.returncode == 0, p.stderr
    assert [u["username"] for u in json.loads(p.stdout)["items"]] == ["tls-user"]
