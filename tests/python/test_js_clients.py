"""Clients nobody here wrote, in JavaScript: MQTT.js over TCP and over WebSocket (`GET /mqtt`),
and headless Chromium (playwright-core driving Debian's /usr/bin/chromium) reading the WebSocket
and SSE streams while curl publishes. The scripts live in tests/js; each takes the broker's ports
(and key) as flags, has its own hard timeout and exits 0 on success.

They need Node 20+, `npm ci` in tests/js, curl and /usr/bin/chromium, all installed by
scripts/install-test-deps.sh; a missing one fails the test (it is not skipped).
RINGMQ_SKIP_BROWSER=1 skips the browser test only."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import free_port
from test_control_plane import root_key

pytestmark = pytest.mark.ringmq_only

JS_DIR = Path(__file__).resolve().parents[1] / "js"
CHROMIUM = "/usr/bin/chromium"
SCRIPT_SECS = 60  # each script's own hard timeout; subprocess and pytest allow more on top
INSTALL_HINT = "run `bash scripts/install-test-deps.sh` (it installs Node modules, chromium and curl)"


def require(*, browser: bool) -> str:
    """The node binary, or a test failure naming what is missing."""
    missing = []
    node = shutil.which("node")
    if not node:
        missing.append("node (Node 20+) on PATH")
    packages = ["mqtt"] + (["playwright-core"] if browser else [])
    missing += [f"tests/js/node_modules/{p}" for p in packages if not (JS_DIR / "node_modules" / p).is_dir()]
    if browser:
        if not shutil.which("curl"):
            missing.append("curl on PATH")
        if not os.access(CHROMIUM, os.X_OK):
            missing.append(CHROMIUM)
    if missing:
        pytest.fail(f"missing {', '.join(missing)}: {INSTALL_HINT}", pytrace=False)
    return node


def run_script(broker, node: str, script: str, *args: str) -> None:
    cmd = [node, script, "--host", broker.host, "--timeout", str(SCRIPT_SECS), *args]
    try:
        done = subprocess.run(cmd, cwd=JS_DIR, capture_output=True, text=True, timeout=SCRIPT_SECS + 20,
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as e:
        out = (e.stdout or b"").decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
        pytest.fail(f"{script} still running after {e.timeout}s:\n{out}\n--- broker log ---\n{broker.log_tail()}")
    output = f"{done.stdout}{done.stderr}".strip()
    if done.returncode != 0:
        pytest.fail(f"{script} {' '.join(args)} exited {done.returncode}:\n{output}\n"
                    f"--- broker log ---\n{broker.log_tail(30)}", pytrace=False)
    print(output)


@pytest.mark.timeout(SCRIPT_SECS + 40)
def test_mqttjs_over_tcp(broker):
    """MQTT.js 5.x at 3.1.1 and 5.0 over TCP: wildcard subscribe, QoS 0/1/2 in order from another
    shard, v5 user properties, retained on a late subscribe, clean disconnect (no will)."""
    node = require(browser=False)
    run_script(broker, node, "mqttjs.mjs", "--mqtt-port", str(broker.port), "--http-port", str(broker.http_port),
               "--cases", "tcp")


@pytest.mark.timeout(SCRIPT_SECS + 40)
def test_mqttjs_over_websocket(broker):
    """The same over `ws://…/mqtt` (MQTT over WebSocket on the HTTP port), both ends on WebSocket
    and each end on WebSocket with the other on TCP."""
    node = require(browser=False)
    run_script(broker, node, "mqttjs.mjs", "--mqtt-port", str(broker.port), "--http-port", str(broker.http_port),
               "--cases", "ws")


@pytest.fixture
def page_port(request) -> int:
    """The port browser_stream.mjs serves its page on, an origin the broker allows (the WebSocket
    stream refuses other sites' pages). Must come before `broker` in a test's arguments: the broker
    fixture reads the marker this adds."""
    port = free_port()
    request.node.add_marker(pytest.mark.broker_config(http={"allowed_origins": [f"http://127.0.0.1:{port}"]}))
    return port


@pytest.mark.timeout(SCRIPT_SECS + 40)
def test_browser_streams(page_port, broker):
    """A page in headless Chromium, from an allowed origin, receives curl's REST publishes through
    `new WebSocket` on /v1/mqtt/stream and through `EventSource` on /v1/stream; the same page from
    an origin not allowed gets neither that WebSocket nor /mqtt."""
    if os.environ.get("RINGMQ_SKIP_BROWSER") == "1":
        pytest.skip("RINGMQ_SKIP_BROWSER=1")
    node = require(browser=True)
    run_script(broker, node, "browser_stream.mjs", "--http-port", str(broker.http_port), "--key", root_key(broker),
               "--page-port", str(page_port))
