#!/usr/bin/env bash
# What crossing between nodes costs (issue 14): ringmq-loadgen fan-in with the subscriber on the
# publishers' node ("within") and on another node of the cluster ("across", --sub-port), side by
# side in one run, against a nats-server on loopback.
#
# Two nodes (`--shards 1`, `--durability memory`) and nats-server share CPU 0, the loadgen runs on
# CPU 1: on a 2-core machine the nodes and NATS compete for one core, so read ratios, not
# absolutes. Rows: as fast as possible (QoS 0 and QoS 1, 8 publishers, 1 subscriber, 64 B) and
# paced (8 x 1000 msg/s QoS 0: end-to-end latency p50 / p99, the added cost of the hop).
#
# Usage: scripts/cluster-bench.sh [--rounds N] [--duration S] [--out FILE]
# Defaults: 3 rounds, 6 s per run; writes the markdown table to FILE (default
# benches/results/<date>-cluster.md) and prints it. Needs nats-server (Debian package
# nats-server; scripts/install-test-deps.sh installs it), taskset, python3, and
# target/release/ringmq and ringmq-loadgen (built when missing). Loopback only; bounded.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
rounds=3
duration=6
out=""
usage() { awk 'NR > 1 && /^#/ { print; next } NR > 1 { exit }' "$0"; }
while [ $# -gt 0 ]; do
    case "$1" in
        --rounds) rounds="${2:?--rounds needs a value}"; shift 2 ;;
        --duration) duration="${2:?--duration needs a value}"; shift 2 ;;
        --out) out="${2:?--out needs a value}"; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
    esac
done
[[ "$rounds" =~ ^[1-9][0-9]?$ ]] || { echo "--rounds: 1 to 99" >&2; exit 2; }
[[ "$duration" =~ ^[1-9][0-9]{0,2}$ ]] || { echo "--duration: 1 to 999 seconds" >&2; exit 2; }
nats_bin="$(command -v nats-server || echo /usr/sbin/nats-server)"
[ -x "$nats_bin" ] || { echo "needs nats-server (apt-get install nats-server)" >&2; exit 1; }
ringmq_bin="$root/target/release/ringmq"
loadgen_bin="$root/target/release/ringmq-loadgen"
if [ ! -x "$ringmq_bin" ] || [ ! -x "$loadgen_bin" ]; then
    (cd "$root" && cargo build --release -p ringmq -p ringmq-loadgen)
fi
[ -n "$out" ] || out="$root/benches/results/$(date -u +%Y-%m-%d)-cluster.md"

work="$(mktemp -d /tmp/ringmq-cluster-bench.XXXXXX)"
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
nats_port="$(free_port)"
taskset -c 0 "$nats_bin" -a 127.0.0.1 -p "$nats_port" > "$work/nats.log" 2>&1 &
pids+=($!)
ports=()
for node in 1 2; do
    port="$(free_port)"
    http="$(free_port)"
    mkdir -p "$work/n$node"
    taskset -c 0 "$ringmq_bin" serve --mqtt-listen "127.0.0.1:$port" --http-listen "127.0.0.1:$http" \
        --shards 1 --durability memory --data-dir "$work/n$node" --log warn \
        --cluster "nats://127.0.0.1:$nats_port" --node-id "bench$node" > "$work/n$node.log" 2>&1 &
    pids+=($!)
    ports+=("$port")
    for _ in $(seq 1 100); do
        curl -sf "http://127.0.0.1:$http/readyz" > /dev/null 2>&1 && break
        sleep 0.1
    done
done

# run NAME EXTRA...: one loadgen run, its JSON report in $work/NAME.json
run() {
    local name="$1"
    shift
    taskset -c 1 timeout $((duration + 60)) "$loadgen_bin" fanin --pubs 8 --subs 1 -s 64 \
        --duration "$duration" --json --quiet -p "${ports[0]}" "$@" > "$work/$name.json" \
        2> "$work/$name.err" || true
}
for round in $(seq 1 "$rounds"); do
    for where in within across; do
        extra=()
        [ "$where" = across ] && extra=(--sub-port "${ports[1]}")
        echo "== round $round: $where" >&2
        run "q0-$where-$round" -q 0 "${extra[@]}"
        run "q1-$where-$round" -q 1 --inflight 64 "${extra[@]}"
        run "paced-$where-$round" -q 0 --rate 1000 "${extra[@]}"
    done
done

python3 - "$work" "$rounds" "$duration" "$out" <<'PY'
import json, os, statistics, sys
work, rounds, duration, out = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
def load(name):
    try:
        return json.load(open(os.path.join(work, name + ".json")))
    except (OSError, ValueError):
        return None
def med(kind, where, pick):
    values = []
    for r in range(1, rounds + 1):
        rep = load("%s-%s-%d" % (kind, where, r))
        try:
            values.append(pick(rep))
        except (TypeError, KeyError):
            pass
    return statistics.median(values) if values else None
rows = [
    ("QoS 0, as fast as possible: delivered msg/s", "q0", lambda r: r["received_per_s"]),
    ("QoS 0: lost", "q0", lambda r: r["lost"]),
    ("QoS 1 (window 64): delivered msg/s", "q1", lambda r: r["received_per_s"]),
    ("QoS 1: lost", "q1", lambda r: r["lost"]),
    ("8 x 1000 msg/s QoS 0: p50 latency, µs", "paced", lambda r: r["latency"]["p50_us"]),
    ("8 x 1000 msg/s QoS 0: p99 latency, µs", "paced", lambda r: r["latency"]["p99_us"]),
]
lines = ["# ringmq cluster: within a node vs across two nodes", "",
         "`scripts/cluster-bench.sh --rounds %d --duration %s`: two nodes (`--shards 1`) and "
         "nats-server on CPU 0, ringmq-loadgen (8 publishers, 1 subscriber, 64 B) on CPU 1; medians "
         "of %d interleaved rounds. \"across\": the subscriber on the other node (`--sub-port`)."
         % (rounds, duration, rounds), "",
         "| | within a node | across two nodes | across ÷ within |", "| --- | ---: | ---: | ---: |"]
for label, kind, pick in rows:
    a, b = med(kind, "within", pick), med(kind, "across", pick)
    ratio = "%.2f×" % (b / a) if a and b is not None else "–"
    fmt = lambda v: "–" if v is None else "{:,.0f}".format(v)
    lines.append("| %s | %s | %s | %s |" % (label, fmt(a), fmt(b), ratio))
text = "\n".join(lines) + "\n"
open(out, "w").write(text)
print(text)
PY
echo "wrote $out"
