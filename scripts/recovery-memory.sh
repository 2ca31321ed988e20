#!/usr/bin/env bash
# Recovery memory check (issue 13): builds retained messages and persistent sessions live over
# MQTT, reads the broker's RSS, restarts it from its durable logs and reads the RSS again.
# Thin wrapper around scripts/recovery_memory.py (see --help); creates the test venv when missing.
#
# Usage: scripts/recovery-memory.sh [--retained R] [--sessions S] [--subs N] [--shards K] [--bin PATH]
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
python="$root/.venv/bin/python"
if ! [ -x "$python" ] || ! "$python" -c 'import paho.mqtt' 2>/dev/null; then
    # Its last line names the interpreter (the venv's, or python3 when no venv could be made).
    python=$(bash "$root/scripts/install-test-deps.sh" | tee /dev/stderr | sed -n 's/^PYTHON=//p' | tail -1)
    [ -n "$python" ] || { echo "scripts/install-test-deps.sh named no python" >&2; exit 1; }
fi
exec "$python" "$root/scripts/recovery_memory.py" "$@"
