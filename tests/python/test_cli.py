"""The `ringmq` CLI end to end against a running broker: login, noun-verb commands, --json,
exit codes with the server's error detail, and the key never printed."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from helpers import Client
from test_control_plane import root_key

pytestmark = pytest.mark.ringmq_only

ROOT = Path(__file__).resolve().parents[2]


def ringmq_bin() -> str:
    binary = os.environ.get("RINGMQ_BIN") or str(ROOT / "target" / "debug" / "ringmq")
    return binary if os.path.isabs(binary) else str(ROOT / binary)


@pytest.fixture
def cli(broker, tmp_path):
    env = dict(os.environ)
    env["RINGMQ_CONFIG_DIR"] = str(tmp_path / "cli-config")
    env.pop("RINGMQ_URL", None)
    env.pop("RINGMQ_KEY", None)

    def run(*args: str, check: bool = True, stdin: str | None = None) -> subprocess.CompletedProcess:
        p = subprocess.run([ringmq_bin(), *args], env=env, capture_output=True, text=True, timeout=30,
                           input=stdin)
        if check:
            assert p.returncode == 0, f"ringmq {' '.join(args)} -> {p.returncode}\n{p.stdout}\n{p.stderr}"
        return p

    return run


def test_cli_end_to_end(broker, cli):
    key = root_key(broker)
    url = f"http://{broker.host}:{broker.http_port}"
    p = cli("auth", "login", "--url", url, "--key", key)
    assert key not in p.stdout + p.stderr
    status = cli("auth", "status")
    assert key not in status.stdout and url in status.stdout

    cli("acl", "create", "--topic", "agents/{username}/#", "--action", "all", "--permission", "allow")
    cli("users", "create", "--username", "agent-01", "--password-stdin", stdin="secure-password\n")
    users = json.loads(cli("users", "list", "--json").stdout)
    assert [u["username"] for u in users["items"]] == ["agent-01"]
    got = json.loads(cli("users", "get", "agent-01", "--json").stdout)
    assert got["enabled"] is True

    # The user the CLI made logs in over MQTT and its ACL applies.
    c = Client(broker.host, broker.port, "cli-agent", username="agent-01", password="secure-password").connect()
    assert c.subscribe("agents/agent-01/#", qos=1) == [1]
    sessions = json.loads(cli("sessions", "list", "--json").stdout)
    assert any(s["client_id"] == "cli-agent" for s in sessions["items"])
    cli("sessions", "disconnect", "cli-agent")
    assert c.wait_disconnected(2.0) == 0x98
    c.close()

    # Errors: non-zero exit with the server's code and detail.
    dup = cli("users", "create", "--username", "agent-01", "--password", "another-password", check=False)
    assert dup.returncode == 1
    assert "conflict" in dup.stderr
    missing = cli("users", "get", "nobody", check=False)
    assert missing.returncode == 1 and "not_found" in missing.stderr

    created = cli("keys", "create", "--name", "alerts", "--kind", "restricted",
                  "--permission", "publish:alerts/#", "--json")
    secret = json.loads(created.stdout)["key"]
    assert secret.startswith("rk_")
    keys = cli("keys", "list").stdout
    assert secret not in keys

    org = json.loads(cli("org", "show", "--json").stdout)
    assert org["id"] == "default"
    # `ringmq publish` goes through REST publish.
    watcher = Client(broker.host, broker.port, "cli-watch").connect()
    assert watcher.subscribe("test/#", qos=1) == [1]
    out = cli("publish", "--topic", "test/hello", "--message", "Hello from CLI", "--qos", "1", "--json")
    assert json.loads(out.stdout)["matched"] == 1
    assert watcher.get().payload == b"Hello from CLI"
    watcher.close()

    cli("users", "delete", "agent-01")
    assert json.loads(cli("users", "list", "--json").stdout)["items"] == []


def test_cli_unreachable_server_exits_3(cli):
    p = cli("users", "list", "--url", "http://127.0.0.1:9", "--key", "sk_x", check=False)
    assert p.returncode == 3


def test_cli_help_on_every_noun(cli):
    for noun in ("auth", "users", "acl", "acl-sets", "keys", "sessions", "org", "orgs", "publish"):
        p = cli(noun, "--help")
        assert "Usage" in p.stdout, noun
