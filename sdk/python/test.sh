#!/usr/bin/env bash
# Runs the Python SDK's checks: installs the SDK and the test tools into $PYTHON's environment
# (skipped when nothing changed since the last run), `mypy --strict` on the package, then the
# pytest suite against a real broker.
#
#   PYTHON     interpreter of an existing virtualenv (default: python3)
#   RINGMQ_BIN the broker binary (default: <repo>/target/debug/ringmq)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
PYTHON="${PYTHON:-python3}"
export RINGMQ_BIN="${RINGMQ_BIN:-$REPO/target/debug/ringmq}"

MYPY_VERSION=2.4.1
PYTEST_VERSION=8.3.5
PYTEST_TIMEOUT_VERSION=2.3.1

if [ ! -x "$RINGMQ_BIN" ]; then
    echo "test.sh: broker binary not found at $RINGMQ_BIN (build it, or set RINGMQ_BIN)" >&2
    exit 2
fi

# Reinstall only when the interpreter, the pins or the package's files changed, or an import fails.
stamp_file="$HERE/.test-stamp"
stamp="$(
    {
        command -v "$PYTHON" || echo "$PYTHON"
        echo "$MYPY_VERSION $PYTEST_VERSION $PYTEST_TIMEOUT_VERSION"
        cd "$HERE" && find pyproject.toml README.md ringmq -type f ! -name '*.pyc' -print0 \
            | sort -z | xargs -0 sha256sum
    } | sha256sum | cut -d' ' -f1
)"
if [ ! -f "$stamp_file" ] || [ "$(cat "$stamp_file")" != "$stamp" ] \
    || ! "$PYTHON" -c 'import ringmq, mypy, pytest, pytest_timeout' >/dev/null 2>&1; then
    echo "test.sh: installing the SDK and test tools into $("$PYTHON" -c 'import sys; print(sys.prefix)')"
    "$PYTHON" -m pip install -q --disable-pip-version-check "$HERE" \
        "mypy==$MYPY_VERSION" "pytest==$PYTEST_VERSION" "pytest-timeout==$PYTEST_TIMEOUT_VERSION"
    echo "$stamp" >"$stamp_file"
fi

echo "test.sh: mypy --strict ringmq"
(cd "$HERE" && "$PYTHON" -m mypy --strict ringmq)

echo "test.sh: pytest (broker: $RINGMQ_BIN)"
cd "$REPO"
"$PYTHON" -m pytest "$HERE/tests" -q --timeout 60
