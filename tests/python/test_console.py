"""The web console's page (console/index.html, app.js, app.css): its sources checked against the
Content-Security-Policy it is served with, and the page itself in headless Chromium
(tests/js/console.mjs: playwright-core driving Debian's /usr/bin/chromium, MQTT.js as the device)
against a fresh broker. The server side (assets, feed, search) is test_console_server.py's.

The browser test needs Node 20+, `npm ci` in tests/js and /usr/bin/chromium (all installed by
scripts/install-test-deps.sh); a missing one fails the test, saying which. RINGMQ_SKIP_BROWSER=1
skips it."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest

from test_control_plane import root_key

pytestmark = pytest.mark.ringmq_only

ROOT = Path(__file__).resolve().parents[2]
CONSOLE_DIR = ROOT / "console"
JS_DIR = ROOT / "tests" / "js"
CHROMIUM = "/usr/bin/chromium"
SCRIPT_SECS = 120  # console.mjs's own hard timeout; subprocess and pytest allow more on top
INSTALL_HINT = "run `bash scripts/install-test-deps.sh` (it installs Node modules, chromium and curl)"


def test_console_sources_need_no_exception_to_their_policy():
    """The page loads only its own two assets, has no inline script, style or event handler, and
    the script never turns text into markup (every value shown is hostile input)."""
    html = (CONSOLE_DIR / "index.html").read_text()
    js = (CONSOLE_DIR / "app.js").read_text()
    css = (CONSOLE_DIR / "app.css").read_text()
    assert re.findall(r'<script\b[^>]*>', html) == ['<script type="module" src="/console/app.js">'], \
        "one script: the module, by absolute path"
    assert '<link rel="stylesheet" href="/console/app.css">' in html
    assert not re.search(r"<style\b|\sstyle\s*=|\son[a-z]+\s*=", html, re.I), "inline style or handler in index.html"
    assert not re.search(r"https?://", html), "an absolute URL in index.html"
    markup = re.search(r"\.(innerHTML|outerHTML|insertAdjacentHTML|write|writeln)\b|\beval\(|\bnew Function\b|"
                       r"setAttribute\(\s*['\"](style|on)|\blocalStorage\b|\.srcdoc\b", js)
    assert markup is None, f"app.js: {markup.group(0) if markup else ''}"
    # The only absolute URL in the script is the SVG namespace (a name, never fetched).
    assert set(re.findall(r"https?://[^\s'\"`]+", js)) == {"http://www.w3.org/2000/svg"}
    assert not re.search(r"@import|url\(|https?://", css), "app.css loads something"


def _node_or_fail() -> str:
    if os.environ.get("RINGMQ_SKIP_BROWSER") == "1":
        pytest.skip("RINGMQ_SKIP_BROWSER=1")
    node = shutil.which("node")
    missing = ([] if node else ["node (Node 20+) on PATH"]) + ([] if os.access(CHROMIUM, os.X_OK) else [CHROMIUM])
    if missing:
        # As for the other browser tests: a missing tool fails, it is never silently skipped.
        pytest.fail(f"the console's browser test needs {' and '.join(missing)}: {INSTALL_HINT}",
                    pytrace=False)
    modules = [f"tests/js/node_modules/{p}" for p in ("mqtt", "playwright-core")
               if not (JS_DIR / "node_modules" / p).is_dir()]
    if modules:
        pytest.fail(f"missing {', '.join(modules)}: {INSTALL_HINT}", pytrace=False)
    assert node is not None
    return node


@pytest.mark.timeout(SCRIPT_SECS + 40)
def test_console_in_headless_chromium(broker):
    """Log in with the root key; an MQTT.js client is counted live and listed, then disconnected
    from the page; an ACL rule and a user made on the page let MQTT.js log in; a watched topic
    shows a REST publish; a key made on the page works until revoked there; a revoked key's next
    call brings back the login. No page or console error, no request off 127.0.0.1."""
    node = _node_or_fail()
    with httpx.Client(base_url=f"http://{broker.host}:{broker.http_port}", timeout=10) as http:
        for name in ("index.html", "app.js", "app.css"):
            served = http.get("/console" if name == "index.html" else f"/console/{name}")
            assert served.status_code == 200, f"GET /console ({name}): {served.status_code} {served.text[:200]}"
            if served.content != (CONSOLE_DIR / name).read_bytes():
                pytest.fail(f"the broker serves another console/{name} than the one on disk: the binary "
                            f"compiles the console in; rebuild it (cargo build)", pytrace=False)
    cmd = [node, "console.mjs", "--host", broker.host, "--mqtt-port", str(broker.port),
           "--http-port", str(broker.http_port), "--key", root_key(broker), "--timeout", str(SCRIPT_SECS)]
    try:
        done = subprocess.run(cmd, cwd=JS_DIR, capture_output=True, text=True, timeout=SCRIPT_SECS + 20,
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
        pytest.fail(f"console.mjs still running after {e.timeout}s:\n{out}\n--- broker log ---\n{broker.log_tail()}")
    output = f"{done.stdout}{done.stderr}".strip()
    if done.returncode != 0:
        pytest.fail(f"console.mjs exited {done.returncode}:\n{output}\n--- broker log ---\n{broker.log_tail(30)}",
                    pytrace=False)
    print(output)
