#!/usr/bin/env bash
# The test command (README): installs the test dependencies (Python venv, npm modules of tests/js,
# chromium, curl, nats-server and postgresql), builds the workspace once, runs the Rust unit and
# integration tests (rumqttc; then the control plane's tests again against a throwaway
# PostgreSQL started with scripts/pg-test-instance.sh, named to them by RINGMQ_TEST_STORE),
# then the integration suite in tests/python (paho-mqtt, raw sockets, and the MQTT.js and
# headless-Chromium scripts of tests/js) against the freshly built broker, then the SDKs' suites
# (sdk/python: mypy --strict and pytest; sdk/js: node --test and headless Chromium).
#
#   bash scripts/test.sh                     # everything
#   bash scripts/test.sh -k "retained or will"   # arguments go to pytest (also PYTEST_ARGS="-x")
#   SKIP_CARGO_TEST=1 bash scripts/test.sh   # only the Python suite (still builds)
#   SKIP_SDK_TESTS=1 bash scripts/test.sh    # without the SDKs' suites (also skipped when pytest args are given)
#   BROKER=mosquitto ... pytest tests/python # check the Python tests against mosquitto (see tests/python/conftest.py)
#
# Honours CARGO_TARGET_DIR (default: ./target). Exits non-zero if any step fails.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$root/target}
case "$CARGO_TARGET_DIR" in /*) ;; *) CARGO_TARGET_DIR="$root/$CARGO_TARGET_DIR" ;; esac
export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}

start=$(date +%s)
stamp() { echo "==> [$(( $(date +%s) - start ))s] $*"; }

stamp "installing test dependencies"
python=$(bash scripts/install-test-deps.sh | sed -n 's/^PYTHON=//p' | tail -1)
[ -n "$python" ] || { echo "install-test-deps.sh did not report a python" >&2; exit 1; }

stamp "cargo build --workspace --all-targets"
cargo build --workspace --all-targets

logs=$(mktemp -d "${TMPDIR:-/tmp}/ringmq-test.XXXXXX")
# (`destroy`: the instance's files may live outside $logs, see scripts/pg-test-instance.sh.)
pg_dir="$logs/postgres"
trap 'bash "$root/scripts/pg-test-instance.sh" destroy "$pg_dir" >/dev/null 2>&1 || true; rm -rf "$logs"' EXIT

cargo_rc=0
if [ "${SKIP_CARGO_TEST:-0}" != 1 ]; then
  stamp "cargo test --workspace"
  { cargo test --workspace 2>&1 | tee "$logs/cargo.log"; } || cargo_rc=$?
  # The control plane's tests again, on PostgreSQL: a throwaway instance, each test in a database
  # of its own (RINGMQ_TEST_STORE; without it they run on in-memory SQLite, as above).
  stamp "cargo test --workspace --lib control:: on PostgreSQL (scripts/pg-test-instance.sh)"
  pg_port=$("$python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  if pg_url=$(bash scripts/pg-test-instance.sh start "$pg_dir" "$pg_port" 2>"$logs/pg-start.log") \
      && [ -n "$pg_url" ]; then
    # `--workspace` as above, so the test binaries built there are reused (`-p ringmq` would
    # resolve features differently and rebuild the crate).
    { RINGMQ_TEST_STORE="$pg_url" cargo test --workspace --lib control:: 2>&1 | tee -a "$logs/cargo.log"; } \
      || cargo_rc=$?
  else
    echo "FAILED: could not start a throwaway PostgreSQL for the store tests:" >&2
    sed 's/^/  /' "$logs/pg-start.log" >&2
    cargo_rc=1
  fi
  bash scripts/pg-test-instance.sh destroy "$pg_dir" >/dev/null 2>&1 || true
fi

stamp "pytest tests/python (paho-mqtt $("$python" -c 'import paho.mqtt; print(paho.mqtt.__version__)'))"
export RINGMQ_BIN="$CARGO_TARGET_DIR/debug/ringmq"
py_rc=0
# shellcheck disable=SC2086
"$python" -m pytest tests/python -c tests/python/pytest.ini --rootdir tests/python \
  --timeout 60 -q --junitxml "$logs/junit.xml" ${PYTEST_ARGS:-} "$@" || py_rc=$?

# The SDKs (sdk/python, sdk/js): each runner installs what it needs (mypy into the venv; npm ci)
# and tests against the same broker binary.
sdk_py_rc=0
sdk_js_rc=0
if [ "${SKIP_SDK_TESTS:-0}" != 1 ] && [ $# -eq 0 ]; then
  stamp "sdk/python (mypy --strict, pytest)"
  PYTHON="$python" bash sdk/python/test.sh || sdk_py_rc=$?
  stamp "sdk/js (generated types and dist fresh, node --test, headless Chromium)"
  bash sdk/js/test.sh || sdk_js_rc=$?
fi

echo
stamp "summary"
rust_pass=0 rust_fail=0 rust_skip=0
if [ -f "$logs/cargo.log" ]; then
  read -r rust_pass rust_fail rust_skip < <(awk '/^test result:/ {
      for (i = 1; i <= NF; i++) {
        if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i; if ($(i+1) ~ /^ignored/) s += $i
      } } END { print p+0, f+0, s+0 }' "$logs/cargo.log")
fi
py_pass=0 py_fail=0 py_skip=0
if [ -f "$logs/junit.xml" ]; then
  read -r py_pass py_fail py_skip < <("$python" - "$logs/junit.xml" <<'PY'
import sys, xml.etree.ElementTree as ET
root = ET.parse(sys.argv[1]).getroot()
suites = [root] if root.tag == "testsuite" else root.findall("testsuite")
t = f = s = 0
for x in suites:
    t += int(x.get("tests", 0)); f += int(x.get("failures", 0)) + int(x.get("errors", 0)); s += int(x.get("skipped", 0))
print(t - f - s, f, s)
PY
)
fi
if [ "${SKIP_CARGO_TEST:-0}" = 1 ]; then
  echo "cargo test: skipped"
elif [ "$cargo_rc" = 0 ]; then echo "cargo test: ok"; else echo "cargo test: FAILED (exit $cargo_rc)"; fi
case "$py_rc" in
  0) echo "pytest: ok" ;;
  5) echo "pytest: FAILED (no tests collected)" ;;
  *) echo "pytest: FAILED (exit $py_rc)" ;;
esac
if [ "$sdk_py_rc" = 0 ]; then echo "sdk/python: ok"; else echo "sdk/python: FAILED (exit $sdk_py_rc)"; fi
if [ "$sdk_js_rc" = 0 ]; then echo "sdk/js: ok"; else echo "sdk/js: FAILED (exit $sdk_js_rc)"; fi
echo "rust: $rust_pass passed, $rust_fail failed, $rust_skip skipped"
echo "python: $py_pass passed, $py_fail failed, $py_skip skipped"
echo "total: $((rust_pass + py_pass)) passed, $((rust_fail + py_fail)) failed, $((rust_skip + py_skip)) skipped"
[ "$cargo_rc" = 0 ] && [ "$py_rc" = 0 ] && [ "$sdk_py_rc" = 0 ] && [ "$sdk_js_rc" = 0 ]
