#!/usr/bin/env bash
# Recovery benchmark: how long a start takes to read the durable logs and rebuild every replica,
# and what the broker holds afterwards. Writes a fixture (examples/journal_fixture.rs: retained
# messages and persistent sessions with subscriptions, as a broker would have left them), starts
# ringmq on it, times the start until the MQTT port accepts, reads its RSS, then stops it (the
# shutdown writes every shard's log) and starts it once more from its own logs.
#
# Usage: scripts/recovery-bench.sh [--retained N] [--sessions N] [--subs N] [--shards K]
# Defaults: 1000000 retained, 100000 sessions, 10 subscriptions each, 1 shard. Loopback only;
# the broker is stopped at the end (and on any exit).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
retained=1000000 sessions=100000 subs=10 shards=1
while [ $# -gt 0 ]; do
    case "$1" in
        --retained) retained="$2"; shift 2 ;;
        --sessions) sessions="$2"; shift 2 ;;
        --subs) subs="$2"; shift 2 ;;
        --shards) shards="$2"; shift 2 ;;
        -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
        *) echo "unknown argument: $1" >&2; exit 2 ;;
    esac
done
cd "$root"
cargo build --release --bin ringmq --example journal_fixture
target=${CARGO_TARGET_DIR:-$root/target}
work=$(mktemp -d "${TMPDIR:-/tmp}/ringmq-recovery.XXXXXX")
pid=""
cleanup() {
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT
"$target/release/examples/journal_fixture" "$work/data" "$retained" "$sessions" "$subs"
du -sh "$work/data/journal" | sed 's/^/log size: /'
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
http=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')

run() {
    local label="$1"
    local start end
    start=$(date +%s%N)
    "$target/release/ringmq" serve --mqtt-listen "127.0.0.1:$port" --http-listen "127.0.0.1:$http" \
        --shards "$shards" --data-dir "$work/data" >>"$work/broker.log" 2>&1 &
    pid=$!
    for _ in $(seq 1200); do
        if python3 -c "import socket; socket.create_connection(('127.0.0.1',$port),0.2).close()" 2>/dev/null; then
            break
        fi
        kill -0 "$pid" 2>/dev/null || { tail -20 "$work/broker.log"; exit 1; }
        sleep 0.05
    done
    end=$(date +%s%N)
    local rss
    rss=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status")
    echo "$label: ready in $(( (end - start) / 1000000 )) ms, RSS $(( rss / 1024 )) MiB" \
        "($(( rss * 1024 / (retained + sessions * subs) )) B per retained message or subscription)"
    start=$(date +%s%N)
    kill -TERM "$pid"
    wait "$pid" || true
    end=$(date +%s%N)
    echo "$label: SIGTERM to exit (last checkpoint written) $(( (end - start) / 1000000 )) ms"
    pid=""
}
echo "== $retained retained, $sessions sessions x $subs subscriptions, --shards $shards"
run "from the fixture"
run "from its own logs"
grep -E "durable state read|state restored|opening snapshot" "$work/broker.log" | tail -6 | sed 's/\x1b\[[0-9;]*m//g'
