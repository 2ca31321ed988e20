#!/usr/bin/env bash
# Crash test: kill -9 ringmq at random moments under QoS 1 and QoS 2 load (paho-mqtt publishers
# with sequence numbers, persistent paho-mqtt subscribers), restart, repeat; then check that
# every acknowledged message reached every subscriber (`sync`), or every message acknowledged
# more than one sync interval (plus --slack-ms, default 250) before the kill that followed it
# (`periodic`).
#
# Usage: scripts/crash-test.sh [--mode sync|periodic] [--kills N] [--shards K]
#                              [--interval-ms MS] [--slack-ms MS] [--run-max SECONDS]
#                              [--seed S] [--json]
# Defaults: sync, 20 kills, 2 shards, 200 ms interval, runs of 0.2..1.5 s. Loopback only;
# bounded by the kill count; exits 1 if a promise was broken (the report says which).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
case "${1:-}" in -h|--help) sed -n '2,12p' "$0"; exit 0 ;; esac
cd "$root"
cargo build --release --bin ringmq
target=${CARGO_TARGET_DIR:-$root/target}
python=$(bash scripts/install-test-deps.sh | sed -n 's/^PYTHON=//p' | tail -1)
[ -n "$python" ] || { echo "install-test-deps.sh did not report a python" >&2; exit 1; }
exec "$python" scripts/crash_test.py --binary "$target/release/ringmq" "$@"
