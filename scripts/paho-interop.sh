#!/usr/bin/env bash
# Runs the Eclipse Paho MQTT interoperability suites (client_test.py for 3.1.1, client_test5.py for
# 5.0) against a ringmq started here with `--profile conformance` on free ports.
#
# The suites are not on PyPI, so this is not part of CI. Set-up, once, outside the repository:
#   fetch github.com/eclipse/paho.mqtt.testing and unpack its interoperability/ folder, e.g.
#     git --git-dir=<mirror of eclipse/paho.mqtt.testing> archive HEAD interoperability | tar -x -C /work/scratch/paho
# Then:
#   PAHO_DIR=/work/scratch/paho/interoperability bash scripts/paho-interop.sh
#   SUITES=5 PAHO_DIR=... bash scripts/paho-interop.sh          # only the MQTT 5 suite
#
# Environment: PAHO_DIR (required), SHARDS (default 2: clients on different shards; 1 tells the
# suite's own races, such as publishing before a SUBACK it never waited for, apart),
# RINGMQ_BIN (default: $CARGO_TARGET_DIR or ./target, debug build;
# built if missing), PAHO_RUNNER (default ../shared/tools/paho/run_paho.sh), SUITES, LOGDIR.
# Prints one summary line per suite (the failing test names included) and exits non-zero if any
# test failed. The broker log is kept in $LOGDIR/ringmq.log.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
: "${PAHO_DIR:?set PAHO_DIR to the paho.mqtt.testing interoperability/ folder}"
[ -f "$PAHO_DIR/client_test5.py" ] || { echo "no client_test5.py in PAHO_DIR=$PAHO_DIR" >&2; exit 2; }
export PAHO_DIR
runner=${PAHO_RUNNER:-$root/../shared/tools/paho/run_paho.sh}
[ -x "$runner" ] || [ -f "$runner" ] || { echo "paho runner not found at $runner (set PAHO_RUNNER)" >&2; exit 2; }
target=${CARGO_TARGET_DIR:-$root/target}
bin=${RINGMQ_BIN:-$target/debug/ringmq}
if [ ! -x "$bin" ]; then
  cargo build --bin ringmq
fi
export LOGDIR=${LOGDIR:-/tmp/paho-logs-ringmq}
mkdir -p "$LOGDIR"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
port=$(free_port)
http_port=$(free_port)
data=$(mktemp -d "${TMPDIR:-/tmp}/ringmq-paho.XXXXXX")

"$bin" serve --mqtt-listen "127.0.0.1:$port" --http-listen "127.0.0.1:$http_port" \
  --shards "${SHARDS:-2}" --placement round-robin --data-dir "$data" --profile conformance \
  >"$LOGDIR/ringmq.log" 2>&1 &
pid=$!
cleanup() {
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -rf "$data"
}
trap cleanup EXIT

for _ in $(seq 200); do
  if ! kill -0 "$pid" 2>/dev/null; then
    echo "ringmq exited at start; log:" >&2; tail -30 "$LOGDIR/ringmq.log" >&2; exit 1
  fi
  python3 -c "import socket; socket.create_connection(('127.0.0.1', $port), 0.2).close()" 2>/dev/null && break
  sleep 0.05
done

echo "ringmq (conformance profile) on 127.0.0.1:$port; suite logs in $LOGDIR"
rc=0
bash "$runner" 127.0.0.1 "$port" || rc=$?
exit $rc
