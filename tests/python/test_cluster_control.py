"""The control plane on PostgreSQL, shared by every node of a cluster (`ringmq serve --store
postgres://…`), driven with paho-mqtt (logins) and httpx (the management API).

Each test starts its own throwaway PostgreSQL with scripts/pg-test-instance.sh (Debian's
`postgresql`, installed by scripts/install-test-deps.sh; as root the server runs as the `postgres`
user), a nats-server (test_cluster.Nats) and ringmq nodes with `--cluster nats://… --node-id nN
--store postgres://…`, all on loopback. The first node to start bootstraps the empty store and
writes the root key to its data dir's `bootstrap-key`; the others find the orgs there and write none.

What the broker is expected to do (asserted below):
  - a user, key, rule or org written through one node's API reaches every node's snapshot
    (logins, API keys, ACL) within 5 s;
  - concurrent first starts against an empty database bootstrap it once;
  - without PostgreSQL, logins go on from the in-memory snapshot, API writes fail with a 5xx
    (not a hang), and /readyz is 503 naming the store; all of it recovers within 10 s of
    PostgreSQL's return;
  - a malformed `--store` URL stops the start with a non-zero exit and a message naming it.
"""

from __future__ import annotations

import concurrent.futures
import os
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from conftest import BROKER_KIND, ROOT, Broker, free_port
from helpers import Client, unique
from test_cluster import nats, wait_peers, wait_ready  # noqa: F401  (nats: the fixture)
from test_security import PASSWORD, SseStream, api, new_org, root_key

pytestmark = pytest.mark.skipif(BROKER_KIND != "ringmq", reason="ringmq's cluster")

PG_SCRIPT = ROOT / "scripts" / "pg-test-instance.sh"
# Polling logins fails many of them on purpose: the per-address throttle (10 a minute by default)
# would then refuse even the right password.
NODE_CONFIG = {"auth": {"login_failures_per_minute_max": 100000}}
BAD_USER_NAME_OR_PASSWORD = 0x86


def ringmq_binary() -> str:
    binary = os.environ.get("RINGMQ_BIN") or str(ROOT / "target" / "debug" / "ringmq")
    return str((ROOT / binary) if not os.path.isabs(binary) else Path(binary))


class Postgres:
    """A throwaway PostgreSQL on a free loopback port (scripts/pg-test-instance.sh); `.url`."""

    def __init__(self, workdir: Path):
        self.dir = workdir / "postgres"
        self.port = free_port()
        self.url = f"postgres://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, action: str, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["bash", str(PG_SCRIPT), action, str(self.dir), *args],
                              capture_output=True, text=True, timeout=90, stdin=subprocess.DEVNULL)

    def start(self) -> None:
        """Starts it (a fresh cluster the first time; the same one, same port, after `stop`)."""
        p = self._run("start", str(self.port))
        if p.returncode != 0:
            pytest.fail(f"PostgreSQL did not start ({PG_SCRIPT.name} start, exit {p.returncode}); "
                        f"is Debian's `postgresql` installed (scripts/install-test-deps.sh)?\n"
                        f"{p.stdout}{p.stderr}")
        lines = p.stdout.strip().splitlines()
        assert lines and lines[-1] == self.url, p.stdout

    def stop(self) -> None:
        p = self._run("stop")
        assert p.returncode == 0, p.stderr

    def destroy(self) -> None:
        self._run("destroy")


@pytest.fixture
def postgres(tmp_path):
    pg = Postgres(tmp_path)
    pg.start()
    try:
        yield pg
    finally:
        pg.destroy()


@pytest.fixture
def nodes(nats, postgres, tmp_path):  # noqa: F811  (nats: the imported fixture)
    """nodes(count=3, extra=None, together=False) -> that many new nodes of one cluster sharing
    the PostgreSQL store, all ready. `together`: their processes start at the same time."""
    started: list[Broker] = []

    def start(count: int = 3, extra: list[str] | None = None, together: bool = False) -> list[Broker]:
        new = []
        for _ in range(count):
            n = len(started) + 1
            workdir = tmp_path / f"node{n}"
            workdir.mkdir()
            node = Broker("ringmq", workdir, config=NODE_CONFIG, extra_args=[
                "--cluster", nats.url, "--node-id", f"n{n}", "--durability", "memory",
                "--store", postgres.url, *(extra or [])])
            started.append(node)
            new.append(node)
        if together:
            # Broker.start spawns, then waits for the MQTT port: in threads, the processes start
            # within milliseconds of each other. (.result() raises a failed start here.)
            with concurrent.futures.ThreadPoolExecutor(len(new)) as pool:
                for future in [pool.submit(node.start) for node in new]:
                    future.result()
        else:
            for node in new:
                node.start()
        for node in started:
            wait_ready(node)
        return new

    yield start
    for node in started:
        if node.alive():
            node.stop()


def bootstrap_key(nodes: list[Broker], timeout: float = 10.0) -> str:
    """The root key, from whichever node bootstrapped the store (the only one with the file)."""
    deadline = time.monotonic() + timeout
    while True:
        for node in nodes:
            path = node.data_dir / "bootstrap-key"
            if path.exists() and path.read_text().strip():
                return root_key(node)
        if time.monotonic() > deadline:
            pytest.fail("no node wrote a bootstrap-key file:\n" + "\n".join(n.log_tail(20) for n in nodes))
        time.sleep(0.05)


def login(node: Broker, username: str, password: str = PASSWORD, timeout: float = 3.0) -> int | None:
    """One MQTT v5 login (paho); the CONNACK's reason code, or None when none came."""
    c = Client(node.host, node.port, unique("login"), version=5, username=username, password=password)
    try:
        c.connect(timeout=timeout, expect_rc=None)
        return c.connack_rc
    except (AssertionError, OSError):
        return None
    finally:
        c.close()


def poll_login(node: Broker, username: str, accepted: bool, since: float, within: float = 5.0) -> float:
    """Logs in every 0.1 s until the login is accepted (or refused, `accepted=False`); returns the
    seconds from `since` (time.monotonic()) until then; fails after `within` seconds from `since`."""
    seen = []
    while True:
        rc = login(node, username)
        seen.append(rc)
        if (rc == 0) if accepted else (rc not in (0, None)):
            return time.monotonic() - since
        if time.monotonic() - since > within:
            want = "accepted" if accepted else "refused"
            pytest.fail(f"{username!r} not {want} on node {node.port} within {within}s "
                        f"(CONNACK codes seen: {sorted(set(seen), key=str)}):\n{node.log_tail(30)}")
        time.sleep(0.1)


def create_user(client: httpx.Client, username: str) -> None:
    r = client.post("/v1/users", json={"username": username, "password": PASSWORD})
    assert r.status_code == 201, r.text


def wait_key_known(node: Broker, key: str, org_id: str, within: float = 5.0) -> float:
    """Until `key` authenticates on `node` as org `org_id` (its snapshot has the key); seconds taken."""
    started = time.monotonic()
    with api(node, key) as client:
        while True:
            r = client.get("/v1/org")
            if r.status_code == 200:
                assert r.json()["id"] == org_id, r.text
                return time.monotonic() - started
            if time.monotonic() - started > within:
                pytest.fail(f"node {node.port}: the key of {org_id} still gets {r.status_code} after "
                            f"{within}s: {r.text}\n{node.log_tail(30)}")
            time.sleep(0.1)


def test_a_user_made_on_one_node_logs_in_on_the_others_and_its_deletion_reaches_them(nodes):
    n1, n2, n3 = nodes(3)
    key = bootstrap_key([n1, n2, n3])
    with api(n1, key) as admin:
        create_user(admin, "shared-user")
    since = time.monotonic()
    took = {name: poll_login(node, "shared-user", accepted=True, since=since)
            for name, node in (("n2", n2), ("n3", n3))}
    print(f"user created on n1 logs in on: n2 after {took['n2']:.2f}s, n3 after {took['n3']:.2f}s")
    assert all(t < 5.0 for t in took.values()), took
    assert login(n1, "shared-user") == 0, "and on the node that made it"

    with api(n3, key) as admin:
        r = admin.delete("/v1/users/shared-user")
        assert r.status_code == 204, r.text
    since = time.monotonic()
    took = {name: poll_login(node, "shared-user", accepted=False, since=since)
            for name, node in (("n1", n1), ("n2", n2))}
    print(f"user deleted on n3 refused on: n1 after {took['n1']:.2f}s, n2 after {took['n2']:.2f}s")
    assert all(t < 5.0 for t in took.values()), took
    for node in (n1, n2, n3):
        assert login(node, "shared-user") == BAD_USER_NAME_OR_PASSWORD


def test_orgs_agree_across_nodes(nodes):
    """An org made once, through one node, is the same org on every node: its key works on all
    of them, and its messages cross to its own subscribers on other nodes and to nobody else's."""
    n1, n2, n3 = nodes(3)
    wait_peers(n1, 2), wait_peers(n3, 2)
    key = bootstrap_key([n1, n2, n3])
    orgs: dict[str, tuple[str, str]] = {}
    rules: dict[str, object] = {}
    with api(n2, key) as admin:
        for name in ("acme", "evil"):
            orgs[name] = new_org(admin, name)
            with api(n2, orgs[name][1]) as org:
                r = org.post("/v1/acl/rules", json={"topic": "#", "action": "all", "permission": "allow"})
                assert r.status_code == 201, r.text
                rules[name] = r.json()["id"]
    for name, (org_id, org_key) in orgs.items():
        for node in (n1, n3):
            took = wait_key_known(node, org_key, org_id)
            print(f"{name}'s key known on node {node.port} after {took:.2f}s")
    with api(n1, orgs["acme"][1]) as a1, api(n3, orgs["acme"][1]) as a3:
        # The rule made through node 2, seen (under the same id) through the others.
        seen = [sorted(str(r["id"]) for r in c.get("/v1/acl/rules").json()["items"]) for c in (a1, a3)]
        assert seen[0] == seen[1] and str(rules["acme"]) in seen[0], (rules, seen)
        assert str(rules["evil"]) not in seen[0]

    acme = SseStream(n3, orgs["acme"][1], query="topic=%23")
    evil = SseStream(n3, orgs["evil"][1], query="topic=%23")
    assert acme.status == 200 and evil.status == 200, (acme.status, evil.status)
    time.sleep(0.5)  # the streams' interest reaches NATS and node 1
    statuses = []
    with api(n1, orgs["acme"][1]) as publisher_api:
        # Again every 0.5 s until it arrives: node 1 may hear of node 3's new interest (or of the
        # rule) a moment later. A repeat may then arrive twice; what must not arrive is asserted.
        deadline = time.monotonic() + 10
        while "for acme" not in acme.payloads() and time.monotonic() < deadline:
            r = publisher_api.post("/v1/publish", json={"topic": "x/1", "payload": "for acme", "qos": 1})
            statuses.append(r.status_code)
            end = time.monotonic() + 0.5
            while "for acme" not in acme.payloads() and time.monotonic() < end:
                time.sleep(0.02)
    assert "for acme" in acme.payloads(), f"publish statuses {statuses}:\n{n3.log_tail(30)}"
    assert 200 in statuses, statuses
    assert set(acme.payloads()) == {"for acme"}
    assert {m["org_id"] for m in acme.messages()} == {orgs["acme"][0]}
    time.sleep(1.0)
    assert evil.payloads() == [], "another org's `#` gets nothing"


@pytest.mark.timeout(90)
def test_nodes_starting_together_bootstrap_an_empty_store_once(nodes):
    started = nodes(3, together=True)
    key = bootstrap_key(started)
    time.sleep(1.0)  # a second, late bootstrap would have written its file by now
    holders = [n for n in started if (n.data_dir / "bootstrap-key").exists()]
    assert len(holders) == 1, f"bootstrap-key written by {[n.port for n in holders]}"
    assert key.startswith("sk_")
    for node in started:
        wait_key_known(node, key, "default")
        assert node.alive()
    with api(started[0], key) as admin:
        r = admin.get("/v1/orgs")
        assert r.status_code == 200, r.text
        ids = [o["id"] for o in r.json()["items"]]
    assert ids.count("default") == 1 and len(ids) == len(set(ids)), ids
    for node in started:
        wait_ready(node)


@pytest.mark.timeout(120)
def test_without_postgres_logins_go_on_the_api_fails_fast_and_all_recovers(nodes, postgres):
    n1, n2, n3 = nodes(3)
    key = bootstrap_key([n1, n2, n3])
    with api(n1, key) as admin:
        create_user(admin, "never-logged-in")  # its password is checked first during the outage
        create_user(admin, "seen")
    # A node whose snapshot has `seen` has `never-logged-in` too (made before it).
    since = time.monotonic()
    for node in (n1, n2, n3):
        poll_login(node, "seen", accepted=True, since=since)

    postgres.stop()
    for node in (n1, n2, n3):
        for user in ("never-logged-in", "seen"):
            assert login(node, user) == 0, f"{user} refused on node {node.port} without PostgreSQL"
    with api(n2, key) as admin:  # (httpx timeout 10 s)
        started = time.monotonic()
        try:
            r = admin.post("/v1/users", json={"username": "during-outage", "password": PASSWORD})
        except httpx.TimeoutException:
            pytest.fail(f"the API hung (> 10 s) without PostgreSQL:\n{n2.log_tail(30)}")
        print(f"API write without PostgreSQL: {r.status_code} after {time.monotonic() - started:.2f}s")
        assert 500 <= r.status_code < 600, r.text
    for node in (n1, n2, n3):
        wait_ready(node, want=503, timeout=10)
        text = httpx.get(f"http://127.0.0.1:{node.http_port}/readyz", timeout=5).text
        assert "postgres" in text.lower() or "store" in text.lower(), text
    print(f"/readyz without PostgreSQL: {text.strip()!r}")

    postgres.start()
    since = time.monotonic()
    with api(n3, key) as admin:
        while True:
            try:
                r = admin.post("/v1/users", json={"username": "after-outage", "password": PASSWORD})
                # 409: an earlier try went in though its answer did not come back.
                if r.status_code in (201, 409):
                    break
            except httpx.TimeoutException:
                r = None
            if time.monotonic() - since > 10:
                pytest.fail(f"the API still fails 10 s after PostgreSQL's return: "
                            f"{r.status_code if r else 'timeout'} {r.text if r else ''}\n{n3.log_tail(30)}")
            time.sleep(0.2)
    print(f"API back {time.monotonic() - since:.2f}s after PostgreSQL's return")
    poll_login(n1, "after-outage", accepted=True, since=time.monotonic(), within=10)
    for node in (n1, n2, n3):
        wait_ready(node, timeout=10)


def test_a_monthly_quota_counts_every_nodes_rest_publishes(nodes):
    """The org's month is one row every node adds to, and each node's quota counts the others'."""
    n1, n2 = nodes(2)
    key = bootstrap_key([n1, n2])
    with api(n1, key) as one, api(n2, key) as two:
        r = one.patch("/v1/org", json={"settings": {"monthly_quota": 10}})
        assert r.status_code == 200, r.text
        deadline = time.monotonic() + 5
        while two.get("/v1/org").json()["settings"]["monthly_quota"] != 10:
            assert time.monotonic() < deadline, "the new quota did not reach node 2"
            time.sleep(0.05)
        time.sleep(0.5)  # node 2's snapshot (and with it the quota in force) is in
        for i in range(6):
            r = one.post("/v1/publish", json={"topic": f"quota/{i}", "payload": "x"})
            assert r.status_code == 202, r.text
        # Node 1 adds its count to the shared row within its housekeeping interval (5 s) ...
        deadline = time.monotonic() + 15
        while two.get("/v1/org").json()["usage"]["rest_publishes"] < 6:
            assert time.monotonic() < deadline, "node 1's publishes never reached the shared usage"
            time.sleep(0.2)
        # ... and node 2 reads it into its quota within its own.
        time.sleep(5.5)
        statuses = [two.post("/v1/publish", json={"topic": f"quota/b{i}", "payload": "x"}).status_code
                    for i in range(5)]
    assert statuses == [202, 202, 202, 202, 429], statuses


def test_malformed_store_urls_stop_the_start(tmp_path):
    binary = ringmq_binary()
    if not os.access(binary, os.X_OK):
        pytest.fail(f"ringmq binary not found at {binary}")
    # (url, what stderr must say): the setting's name, what it wants, the password masked.
    cases = [
        ("mysql://x", ["control.store", "postgres://"]),
        ("x", ["control.store", "postgres://"]),
        ("postgres://user:hunter2@127.0.0.1:notaport/db", ["control.store", "***"]),
        ("postgres://127.0.0.1:99999/db", ["control.store"]),
        ("postgres://user:hunter2@[::1/db", ["control.store", "***"]),
        ("postgres://", ["store"]),  # no host: refused when the store opens, still at start
    ]
    for url, expected in cases:
        proc = subprocess.run([binary, "serve", "--data-dir", str(tmp_path / "d"), "--mqtt-listen", "127.0.0.1:0",
                               "--http-listen", "127.0.0.1:0", "--store", url],
                              capture_output=True, text=True, timeout=20, stdin=subprocess.DEVNULL)
        assert proc.returncode != 0, (url, proc.stderr)
        for text in expected:
            assert text in proc.stderr, (url, text, proc.stderr)
        assert "hunter2" not in proc.stderr + proc.stdout, "the password is not echoed"
    help_text = subprocess.run([binary, "serve", "--help"], capture_output=True, text=True).stdout
    assert "--store <URL>" in help_text


def _tls_files(directory: Path, hosts: list[str]) -> tuple[Path, Path, Path]:
    """A CA and a server certificate for `hosts` (IPs) signed by it: (ca.pem, server.crt, server.key)."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    span = (now - datetime.timedelta(days=1), now + datetime.timedelta(days=1))
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, unique("test-ca"))])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(span[0]).not_valid_after(span[1])
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "postgres")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(span[0]).not_valid_after(span[1])
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(h)) for h in hosts]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    ca_path, cert_path, key_path = directory / "ca.pem", directory / "server.crt", directory / "server.key"
    ca_path.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return ca_path, cert_path, key_path


def _psql(url: str, *sql: str) -> str:
    args = ["psql", url, "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1"]
    for statement in sql:
        args += ["-c", statement]
    p = subprocess.run(args, capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    assert p.returncode == 0, p.stderr
    return p.stdout.strip()


def test_the_store_over_tls_is_verified(postgres, tmp_path):
    """`sslmode=require&sslrootcert=CA`: the node's connection is encrypted (pg_stat_ssl says so);
    a server whose certificate the CA did not sign is refused at start, never used in clear."""
    import pwd
    import shutil

    if os.geteuid() != 0:
        pytest.skip("installs the server's key as the postgres user")
    certs = tmp_path / "certs"
    certs.mkdir()
    ca, cert, key = _tls_files(certs, ["127.0.0.1"])
    other_ca, _, _ = _tls_files(tmp_path, ["127.0.0.1"])
    data_dir = Path(_psql(postgres.url, "SHOW data_directory"))
    owner = pwd.getpwnam("postgres")
    for src in (cert, key):
        dst = data_dir / f"ringmq-test-{src.name}"
        shutil.copy(src, dst)
        os.chown(dst, owner.pw_uid, owner.pw_gid)
        os.chmod(dst, 0o600)
    _psql(postgres.url, f"ALTER SYSTEM SET ssl_cert_file = '{data_dir / 'ringmq-test-server.crt'}'",
          f"ALTER SYSTEM SET ssl_key_file = '{data_dir / 'ringmq-test-server.key'}'",
          "ALTER SYSTEM SET ssl = on", "SELECT pg_reload_conf()")
    deadline = time.monotonic() + 10
    while _psql(postgres.url, "SHOW ssl") != "on":
        assert time.monotonic() < deadline, "PostgreSQL did not turn TLS on"
        time.sleep(0.1)

    url = f"{postgres.url}?sslmode=require&sslrootcert={ca}"
    workdir = tmp_path / "tls-node"
    workdir.mkdir()
    node = Broker("ringmq", workdir, config=NODE_CONFIG, extra_args=["--store", url])
    node.start()
    try:
        wait_ready(node)
        encrypted = _psql(postgres.url, "SELECT count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) "
                                        "WHERE a.application_name = 'ringmq' AND s.ssl")
        plain = _psql(postgres.url, "SELECT count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) "
                                    "WHERE a.application_name = 'ringmq' AND NOT s.ssl")
        assert (int(encrypted), int(plain)) == (1, 0)
        with api(node, root_key(node)) as admin:
            create_user(admin, unique("tlsuser"))
    finally:
        node.stop()

    wrong = f"{postgres.url}?sslmode=verify-full&sslrootcert={other_ca}"
    proc = subprocess.run([ringmq_binary(), "serve", "--data-dir", str(tmp_path / "wrong"),
                           "--mqtt-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0", "--store", wrong],
                          capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    assert proc.returncode != 0, proc.stderr
    assert "certificate" in proc.stderr.lower(), proc.stderr


def test_a_frozen_store_shows_in_readyz_and_logins_go_on(nodes, postgres):
    """A PostgreSQL that stops answering but keeps its sockets open (SIGSTOP: the kernel still
    acknowledges, so no TCP timeout fires) holds the control thread's query; /readyz says the
    control plane is stuck, logins go on from the snapshot, and all recovers when it resumes."""
    import signal

    (n1,) = nodes(1)
    key = bootstrap_key([n1])
    with api(n1, key) as admin:
        name = unique("frozen")
        create_user(admin, name)
    assert login(n1, name) == 0
    backend = int(_psql(postgres.url, "SELECT pg_backend_pid()"))
    postmaster = int(Path(f"/proc/{backend}/stat").read_text().rsplit(")", 1)[1].split()[1])
    frozen = [postmaster] + [int(p) for p in subprocess.run(
        ["pgrep", "-P", str(postmaster)], capture_output=True, text=True).stdout.split()]
    for pid in frozen:
        os.kill(pid, signal.SIGSTOP)
    try:
        deadline = time.monotonic() + 40
        while True:
            r = httpx.get(f"http://{n1.host}:{n1.http_port}/readyz", timeout=5)
            if r.status_code == 503 and "stuck" in r.text:
                break
            assert time.monotonic() < deadline, (r.status_code, r.text)
            time.sleep(0.5)
        assert login(n1, name) == 0, "logins go on from the snapshot"
    finally:
        for pid in frozen:
            os.kill(pid, signal.SIGCONT)
    deadline = time.monotonic() + 20
    while httpx.get(f"http://{n1.host}:{n1.http_port}/readyz", timeout=5).status_code != 200:
        assert time.monotonic() < deadline, "the node did not recover after PostgreSQL resumed"
        time.sleep(0.2)
