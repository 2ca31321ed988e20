#!/usr/bin/env bash
# The test command (README): installs the Python test dependencies, builds the workspace once,
# runs the Rust unit and integration tests (rumqttc), then the paho-mqtt / raw-socket integration
# suite in tests/python against the freshly built broker.
#
#   bash scripts/test.sh                     # everything
#   PYTEST_ARGS="-k retained" bash scripts/test.sh
#   SKIP_CARGO_TEST=1 bash scripts/test.sh   # only the Python suite (still builds)
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

cargo_rc=0
if [ "${SKIP_CARGO_TEST:-0}" != 1 ]; then
  stamp "cargo test --workspace"
  cargo test --workspace || cargo_rc=$?
fi

stamp "pytest tests/python (paho-mqtt $("$python" -c 'import paho.mqtt; print(paho.mqtt.__version__)'))"
export RINGMQ_BIN="$CARGO_TARGET_DIR/debug/ringmq"
py_rc=0
# shellcheck disable=SC2086
"$python" -m pytest tests/python -c tests/python/pytest.ini --rootdir tests/python \
  --timeout 60 -q ${PYTEST_ARGS:-} || py_rc=$?

echo
stamp "summary"
if [ "${SKIP_CARGO_TEST:-0}" = 1 ]; then
  echo "cargo test: skipped"
elif [ "$cargo_rc" = 0 ]; then echo "cargo test: ok"; else echo "cargo test: FAILED (exit $cargo_rc)"; fi
case "$py_rc" in
  0) echo "pytest: ok" ;;
  5) echo "pytest: FAILED (no tests collected)" ;;
  *) echo "pytest: FAILED (exit $py_rc)" ;;
esac
[ "$cargo_rc" = 0 ] && [ "$py_rc" = 0 ]
