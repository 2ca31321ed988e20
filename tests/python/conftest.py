"""Fixtures: a fresh broker per test, and factories for paho clients and raw sockets.

BROKER=ringmq (default) starts `$RINGMQ_BIN` (default `target/debug/ringmq` under the repository root)
with `--shards 2 --placement round-robin`: shard 0 accepts and hands connection k to shard k % 2, so
two clients connected one after the other sit on different shards. Tests connect the subscriber first,
wait for its CONNACK, then connect the publisher.

BROKER=mosquitto starts the system `mosquitto` instead (a check of the tests themselves against a
reference broker); tests marked `ringmq_only` are skipped then.

A test asks for broker settings with a marker:
    @pytest.mark.broker_config(limits={"offline_queue_max": 5}, mqtt={"sys_interval_secs": 1},
                               profile="conformance")
which becomes a `--config` TOML overlay (and `--profile`) for ringmq, and the nearest equivalent
mosquitto options for mosquitto.
"""

from __future__ import annotations

import os
import shutil
import signal as signals
import socket
import subprocess
import time
from pathlib import Path

import pytest

from helpers import BROKER_KIND, Client
from mqttraw import RawClient

ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT = 10.0
STOP_TIMEOUT = 10.0

# ringmq --config keys -> mosquitto.conf options, for the settings mosquitto also has.
MOSQUITTO_EQUIV = {
    ("limits", "offline_queue_max"): "max_queued_messages",
    ("limits", "packet_size_max"): "max_packet_size",
    ("limits", "topic_alias_max"): "max_topic_alias",
    ("limits", "keep_alive_max_secs"): "max_keepalive",
    ("limits", "inflight_max"): "max_inflight_messages",
    ("mqtt", "sys_interval_secs"): "sys_interval",
}


def pytest_configure(config):
    config.addinivalue_line("markers", "ringmq_only: behaviour mosquitto does not have; skipped with BROKER=mosquitto")
    config.addinivalue_line("markers", "broker_config(limits=..., mqtt=..., auth=..., listeners=..., tls=..., org_limits=..., http=..., "
                                       "profile=..., extra_args=...): broker settings for the test")


def pytest_collection_modifyitems(config, items):
    if BROKER_KIND == "ringmq":
        return
    skip = pytest.mark.skip(reason=f"ringmq_only (BROKER={BROKER_KIND})")
    for item in items:
        if item.get_closest_marker("ringmq_only"):
            item.add_marker(skip)


_GIVEN_PORTS: set[int] = set()


def free_port() -> int:
    """A port the kernel says is free and this run has not handed out before: two calls in a
    row could get the same just-closed port (a broker then failed to start, its MQTT and HTTP
    listeners on one port)."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _GIVEN_PORTS:
            _GIVEN_PORTS.add(port)
            return port


def toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return str(v)
    if isinstance(v, str):
        # Basic strings may not hold raw newlines (PEM keys): escape them.
        escaped = v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
        return '"' + escaped + '"'
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k} = {toml_value(x)}" for k, x in v.items()) + "}"
    raise TypeError(f"cannot write {v!r} as TOML")


def write_toml(path: Path, sections: dict) -> None:
    lines = []
    for section, kv in sections.items():
        if not kv:
            continue
        lines.append(f"[{section}]")
        lines += [f"{k} = {toml_value(v)}" for k, v in kv.items()]
        lines.append("")
    path.write_text("\n".join(lines))


class Broker:
    """A broker process on free loopback ports. `.host .port .http_port .proc .kind .data_dir`."""

    def __init__(self, kind: str, workdir: Path, config: dict | None = None, profile: str | None = None,
                 extra_args: list[str] | None = None):
        self.kind = kind
        self.host = "127.0.0.1"
        self.port = free_port()
        self.http_port = free_port()
        self.workdir = workdir
        self.data_dir = workdir / "data"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.config = config or {}
        self.profile = profile
        self.extra_args = list(extra_args or [])
        self.proc: subprocess.Popen | None = None
        self.log_path = workdir / "broker.log"
        self._log = None
        self.starts = 0

    # -- process ----------------------------------------------------------------------------------
    def command(self) -> list[str]:
        if self.kind == "mosquitto":
            conf = self.workdir / "mosquitto.conf"
            lines = [f"listener {self.port} {self.host}", "allow_anonymous true", "persistence false",
                     "log_dest stdout", "log_type error", "log_type warning", "log_type notice"]
            if self.profile == "conformance":
                lines.append("max_keepalive 60")
            for (section, key), opt in MOSQUITTO_EQUIV.items():
                if key in self.config.get(section, {}):
                    lines.append(f"{opt} {self.config[section][key]}")
            conf.write_text("\n".join(lines) + "\n")
            return [shutil.which("mosquitto") or "mosquitto", "-c", str(conf)]
        binary = os.environ.get("RINGMQ_BIN") or str(ROOT / "target" / "debug" / "ringmq")
        binary = str((ROOT / binary) if not os.path.isabs(binary) else Path(binary))
        if not os.access(binary, os.X_OK):
            pytest.exit(f"ringmq binary not found or not executable at {binary}: build it with "
                        f"`cargo build` or point RINGMQ_BIN at it", returncode=3)
        # Two shards unless the test names its own count.
        shards = [] if "--shards" in self.extra_args else ["--shards", "2"]
        cmd = [binary, "serve", "--mqtt-listen", f"{self.host}:{self.port}",
               "--http-listen", f"{self.host}:{self.http_port}", *shards,
               "--placement", "round-robin", "--data-dir", str(self.data_dir)]
        if self.profile:
            cmd += ["--profile", self.profile]
        if any(self.config.values()):
            path = self.workdir / "ringmq-test.toml"
            write_toml(path, self.config)
            cmd += ["--config", str(path)]
        return cmd + self.extra_args

    def start(self) -> None:
        cmd = self.command()
        self._log = open(self.log_path, "ab")
        self._log.write(f"\n=== start: {' '.join(cmd)}\n".encode())
        self._log.flush()
        env = dict(os.environ)
        env.setdefault("RUST_LOG", "info")
        env.setdefault("RUST_BACKTRACE", "1")
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, env=env,
                                     stdin=subprocess.DEVNULL)
        self.starts += 1
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if self.proc.poll() is not None:
                pytest.fail(f"broker exited at start with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                socket.create_connection((self.host, self.port), timeout=0.5).close()
                return
            except OSError:
                if time.monotonic() > deadline:
                    self.kill()
                    pytest.fail(f"broker did not accept on {self.port} within {START_TIMEOUT}s:\n{self.log_tail()}")
                time.sleep(0.02)

    def signal(self, sig: int = signals.SIGTERM) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def stop(self, sig: int = signals.SIGTERM, timeout: float = STOP_TIMEOUT) -> int:
        """SIGTERM, wait; returns the exit code (kills and fails if it does not exit in time)."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"broker did not exit within {timeout}s of signal {sig}:\n{self.log_tail()}")
        if self._log:
            self._log.close()
            self._log = None
        return rc

    def restart(self, extra_args: list[str] | None = None) -> None:
        """Graceful stop (asserting exit 0), then start again on the same ports and data dir."""
        rc = self.stop()
        assert rc == 0, f"broker exited with {rc} on SIGTERM:\n{self.log_tail()}"
        if extra_args is not None:
            self.extra_args = list(extra_args)
        self.start()

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, n: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no log)"

    # -- conveniences -------------------------------------------------------------------------------
    def client(self, client_id: str | None = None, **kw) -> Client:
        return Client(self.host, self.port, client_id, **kw)

    def raw(self, version: int = 5, timeout: float = 5.0) -> RawClient:
        return RawClient(self.host, self.port, version, timeout)


@pytest.fixture
def broker(request, tmp_path):
    marker = request.node.get_closest_marker("broker_config")
    kw = dict(marker.kwargs) if marker else {}
    config = {section: dict(kw.pop(section, {}) or {})
              for section in ("limits", "mqtt", "auth", "listeners", "tls", "org_limits", "http",
                              "durability")}
    b = Broker(BROKER_KIND, tmp_path, config=config, **kw)
    b.start()
    yield b
    if b.proc is not None and b.proc.returncode is None:
        rc = b.stop()
        assert rc == 0, f"broker exited with {rc} on SIGTERM (want 0):\n{b.log_tail()}"
    assert not b.alive()


@pytest.fixture
def connect(broker):
    """connect(client_id=None, version=5, clean=True, ...) -> a connected helpers.Client.
    Each call is one accepted connection, so consecutive calls land on different shards."""
    made: list[Client] = []

    def make(client_id: str | None = None, expect_rc: int | None = 0, **kw) -> Client:
        c = broker.client(client_id, **kw)
        made.append(c)
        return c.connect(expect_rc=expect_rc)

    yield make
    for c in made:
        c.close()


@pytest.fixture
def raw(broker):
    """raw(version=5) -> an unconnected mqttraw.RawClient (closed at teardown)."""
    made: list[RawClient] = []

    def make(version: int = 5, timeout: float = 5.0) -> RawClient:
        r = broker.raw(version, timeout)
        made.append(r)
        return r

    yield make
    for r in made:
        r.close()


@pytest.fixture(params=[4, 5], ids=["v311", "v5"])
def version(request):
    """Runs a test once for MQTT 3.1.1 (protocol level 4) and once for 5.0. helpers.Client takes
    version 3/4 as 3.1.1."""
    return request.param
