#!/usr/bin/env bash
# Installs what the integration tests need, idempotently:
#   - a Python venv at .venv with pinned pytest, pytest-timeout, paho-mqtt 2.x, httpx, websockets, PyJWT and
#     cryptography (token-exchange tests sign RS256 tokens)
#     (falls back to `pip install --user` when the venv module is unusable).
#   - tests/js: `npm ci` (MQTT.js, playwright-core; exact versions from package-lock.json), rerun
#     only when the lockfile changes (stamp: tests/js/node_modules/.ringmq-lock-sha256);
#   - Debian's `chromium` (for playwright-core; no browser download), `curl` and `nats-server`
#     (the cluster tests), via apt, only when missing.
# Prints the python interpreter to use as its last line ("PYTHON=<path>").
# `BROKER=mosquitto` runs (optional, for checking
# the tests themselves against a reference broker) need `apt-get install -y mosquitto`, which this
# script does only when INSTALL_MOSQUITTO=1.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

PINS=(
  "pytest==8.3.5"
  "pytest-timeout==2.3.1"
  "paho-mqtt==2.1.0"
  "httpx==0.28.1"
  "websockets==13.1"
  "httpx-sse==0.4.0"
  "PyJWT==2.10.1"
  "cryptography==44.0.0"
)
stamp_want=$(printf '%s\n' "${PINS[@]}")

python=""
if [ -x .venv/bin/python ] || python3 -m venv .venv >/dev/null 2>&1; then
  python="$root/.venv/bin/python"
  if ! "$python" -m pip --version >/dev/null 2>&1; then
    # A venv without pip (Debian without python3-venv's ensurepip): rebuild it the slow way.
    rm -rf .venv
    python=""
  fi
fi

if [ -n "$python" ]; then
  stamp=.venv/.ringmq-test-deps
  if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$stamp_want" ]; then
    "$python" -m pip install -q --disable-pip-version-check "${PINS[@]}"
    printf '%s\n' "$stamp_want" >"$stamp"
  fi
else
  python=$(command -v python3)
  "$python" -m pip install -q --disable-pip-version-check --user "${PINS[@]}" \
    || "$python" -m pip install -q --disable-pip-version-check --user --break-system-packages "${PINS[@]}"
fi

apt_updated=0
apt_install() {
  if [ "$apt_updated" = 0 ]; then
    apt-get update -qq
    apt_updated=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

missing=()
[ -x /usr/bin/chromium ] || missing+=(chromium)
command -v curl >/dev/null 2>&1 || missing+=(curl)
# The cluster tests' NATS server (tests/python/test_cluster.py).
command -v nats-server >/dev/null 2>&1 || [ -x /usr/sbin/nats-server ] || missing+=(nats-server)
if [ "${#missing[@]}" -gt 0 ]; then
  apt_install "${missing[@]}"
fi

js=tests/js
if [ -f "$js/package-lock.json" ]; then
  command -v npm >/dev/null 2>&1 || { echo "npm is needed for tests/js (install Node 20+)" >&2; exit 1; }
  js_stamp="$js/node_modules/.ringmq-lock-sha256"
  js_want=$(sha256sum "$js/package-lock.json" | cut -d' ' -f1)
  if [ ! -f "$js_stamp" ] || [ "$(cat "$js_stamp")" != "$js_want" ]; then
    (cd "$js" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error >/dev/null)
    printf '%s\n' "$js_want" >"$js_stamp"
  fi
fi

if [ "${INSTALL_MOSQUITTO:-0}" = 1 ] && ! command -v mosquitto >/dev/null 2>&1; then
  apt_install mosquitto
fi

"$python" -c 'import pytest, paho.mqtt, pytest_timeout, httpx, websockets' >/dev/null
echo "PYTHON=$python"
