#!/usr/bin/env bash
# Installs what the integration tests need, idempotently:
#   - a Python venv at .venv with pinned pytest, pytest-timeout, paho-mqtt 2.x, httpx, websockets, PyJWT and
#     cryptography (token-exchange tests sign RS256 tokens)
#     (falls back to `pip install --user` when the venv module is unusable).
#   - tests/js: `npm ci` (MQTT.js, playwright-core; exact versions from package-lock.json), rerun
#     only when the lockfile changes (stamp: tests/js/node_modules/.ringmq-lock-sha256);
#   - Debian's `chromium` (for playwright-core; no browser download), `curl`, `nats-server`
#     (the cluster tests) and `postgresql` (the shared control plane's tests: scripts/test.sh and
#     tests/python/test_cluster_control.py start throwaway instances of it with
#     scripts/pg-test-instance.sh), via apt, only when missing. Installing `postgresql` also makes
#     Debian's own `main` cluster (port 5432, started where an init system allows): harmless, the
#     tests never use it, and a failure to start it does not fail this script.
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

# The apt packages the tests need and this machine lacks, one a line.
apt_missing() {
  [ -x /usr/bin/chromium ] || echo chromium
  command -v curl >/dev/null 2>&1 || echo curl
  # The cluster tests' NATS server (tests/python/test_cluster.py).
  command -v nats-server >/dev/null 2>&1 || [ -x /usr/sbin/nats-server ] || echo nats-server
  # PostgreSQL's server binaries (initdb, pg_ctl, postgres) for scripts/pg-test-instance.sh.
  compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || echo postgresql
}
mapfile -t missing < <(apt_missing)
if [ "${#missing[@]}" -gt 0 ] && ! apt_install "${missing[@]}"; then
  # Debian's postgresql creates and starts a `main` cluster in its postinst; where that cannot
  # start (no init system, port 5432 taken) dpkg may report an error with every binary in place.
  # Go on only if everything asked for is there.
  mapfile -t still < <(apt_missing)
  if [ "${#still[@]}" -gt 0 ]; then
    echo "apt-get install ${missing[*]} failed; still missing: ${still[*]}" >&2
    exit 1
  fi
  echo "warning: apt-get install ${missing[*]} reported an error (Debian's own PostgreSQL cluster" \
    "could not start?), but everything the tests need is installed; going on" >&2
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
