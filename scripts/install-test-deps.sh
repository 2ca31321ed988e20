#!/usr/bin/env bash
# Installs what the integration tests need, idempotently:
#   - a Python venv at .venv with pinned pytest, pytest-timeout, paho-mqtt 2.x, httpx, websockets, PyJWT and
#     cryptography (token-exchange tests sign RS256 tokens)
#     (falls back to `pip install --user` when the venv module is unusable).
# Prints the python interpreter to use as its last line ("PYTHON=<path>").
# Nothing from apt is needed for the default run; `BROKER=mosquitto` runs (optional, for checking
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

if [ "${INSTALL_MOSQUITTO:-0}" = 1 ] && ! command -v mosquitto >/dev/null 2>&1; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mosquitto
fi

"$python" -c 'import pytest, paho.mqtt, pytest_timeout, httpx, websockets' >/dev/null
echo "PYTHON=$python"
