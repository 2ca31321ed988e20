#!/usr/bin/env bash
# REST publish throughput with keep-alive: ringmq's `POST /v1/publish` against a minimal HTTP
# server on the same runtime and parser (examples/minimal_http.rs), as a ratio.
#
# Both servers run one shard pinned to CPU 0; wrk runs pinned to CPU 1 (-t1 -c64 by default)
# with scripts/rest-publish.lua (QoS 0 JSON body, Bearer key). Rounds alternate ringmq,
# minimal, ringmq, minimal, ... so drift on a shared VM hits both alike; the medians and the
# ratio ringmq ÷ minimal are printed as markdown. One more ringmq run follows with an MQTT
# subscriber on `bench/#` (ringmq-loadgen sub, also on CPU 1), so every publish is delivered.
# With --perf, a last ringmq run is recorded with `perf record -g` and the top symbols printed.
#
# Usage: scripts/rest-bench.sh [--rounds N] [--duration S] [--connections C] [--perf]
# Needs: cargo, taskset, ss, curl; installs wrk with apt-get if missing.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
rounds=3
duration=10
connections=64
with_perf=0
while [ $# -gt 0 ]; do
    case "$1" in
        --rounds) rounds="$2"; shift 2 ;;
        --duration) duration="$2"; shift 2 ;;
        --connections) connections="$2"; shift 2 ;;
        --perf) with_perf=1; shift ;;
        -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
        *) echo "unknown argument: $1" >&2; exit 2 ;;
    esac
done

if ! command -v wrk >/dev/null; then
    apt-get update && apt-get install -y wrk
fi
if [ "$with_perf" = 1 ] && ! command -v perf >/dev/null; then
    apt-get update && apt-get install -y linux-perf
fi

# One build for everything (the release build takes minutes on a small VM).
(cd "$root" && cargo build --release -p ringmq -p ringmq-loadgen --bins --example minimal_http)
ringmq_bin="$root/target/release/ringmq"
loadgen_bin="$root/target/release/ringmq-loadgen"
minimal_bin="$root/target/release/examples/minimal_http"
lua="$root/scripts/rest-publish.lua"

work="$(mktemp -d /tmp/ringmq-rest-bench.XXXXXX)"
echo "working in $work" >&2

# Every process this script starts is recorded here and stopped on any exit.
pids=()
cleanup() {
    local pid
    for pid in "${pids[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${pids[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# A free port near $1 (other engineers' brokers may hold the usual ones).
free_port() {
    local port="$1"
    while ss -ltn "( sport = :$port )" | grep -q LISTEN; do port=$((port + 1)); done
    echo "$port"
}
wait_listening() {
    local port="$1" name="$2"
    for _ in $(seq 1 100); do
        ss -ltn "( sport = :$port )" | grep -q LISTEN && return 0
        sleep 0.1
    done
    echo "$name did not start listening on $port" >&2
    return 1
}

port_mqtt="$(free_port 32883)"
port_http="$(free_port $((port_mqtt + 1)))"
port_minimal="$(free_port $((port_http + 1)))"

taskset -c 0 "$ringmq_bin" serve --shards 1 --mqtt-listen "127.0.0.1:$port_mqtt" \
    --http-listen "127.0.0.1:$port_http" --data-dir "$work/ringmq-data" --log warn \
    > "$work/ringmq.log" 2>&1 &
ringmq_pid=$!
pids+=("$ringmq_pid")
taskset -c 0 "$minimal_bin" --listen "127.0.0.1:$port_minimal" > "$work/minimal.log" 2>&1 &
pids+=("$!")
wait_listening "$port_http" ringmq
wait_listening "$port_minimal" minimal_http

for _ in $(seq 1 50); do [ -s "$work/ringmq-data/bootstrap-key" ] && break; sleep 0.1; done
key="$(tr -d '[:space:]' < "$work/ringmq-data/bootstrap-key")"
export REST_BENCH_KEY="$key"

# The default org allows 100 publishes/s and 1M a month: raise both far above what one core
# can do so the bench measures the request path, not a 429.
curl -sS --fail-with-body -m 10 -X PATCH "http://127.0.0.1:$port_http/v1/org" \
    -H "Authorization: Bearer $key" -H "Content-Type: application/json" \
    -d '{"settings": {"rate_limit_per_sec": 4000000000, "rate_burst": 4000000000, "monthly_quota": 1000000000000}}' \
    > "$work/org.json"
echo >> "$work/org.json"

# run_wrk NAME PORT SECONDS: one wrk run on CPU 1; prints its REST_BENCH line, keeps the output.
run=0
run_wrk() {
    local name="$1" port="$2" seconds="$3" file line
    run=$((run + 1))
    file="$work/wrk-$run-$name.txt"
    timeout $((seconds + 30)) taskset -c 1 wrk -t1 -c"$connections" -d"${seconds}s" --latency \
        -s "$lua" "http://127.0.0.1:$port/v1/publish" > "$file" 2>&1
    line="$(grep '^REST_BENCH ' "$file")"
    # A 401/429/5xx would make the figure meaningless: stop rather than report it.
    if ! grep -q ' errors=0 ' <<< "$line "; then
        echo "wrk against $name reported errors; see $file:" >&2
        cat "$file" >&2
        return 1
    fi
    echo "$line"
}
field() { sed -n "s/.* $1=\([0-9.]*\).*/\1/p" <<< "$2"; }
median() { sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

# Warm both (allocator, page cache, branch predictors) before measuring.
run_wrk ringmq "$port_http" 2 > /dev/null
run_wrk minimal "$port_minimal" 2 > /dev/null

# The VM is shared: the load average before and after says how quiet the runs were.
load_before="$(cut -d' ' -f1-3 /proc/loadavg)"
declare -A rps p50 p99
for round in $(seq 1 "$rounds"); do
    for name in ringmq minimal; do
        port="$port_http"; [ "$name" = minimal ] && port="$port_minimal"
        line="$(run_wrk "$name" "$port" "$duration")"
        echo "round $round $name: $line" >&2
        rps[$name]+="$(field rps "$line") "
        p50[$name]+="$(field p50_us "$line") "
        p99[$name]+="$(field p99_us "$line") "
    done
done

load_after="$(cut -d' ' -f1-3 /proc/loadavg)"

# With a subscriber on bench/#: every publish is routed and written to an MQTT connection.
taskset -c 1 timeout $((duration + 40)) "$loadgen_bin" sub -p "$port_mqtt" -t 'bench/#' \
    -d $((duration + 5)) > "$work/sub.txt" 2>&1 &
sub_pid=$!
pids+=("$sub_pid")
sleep 2
sub_line="$(run_wrk ringmq-sub "$port_http" "$duration")"
echo "with subscriber: $sub_line" >&2
wait "$sub_pid" || echo "subscriber exited with $? (see $work/sub.txt)" >&2

if [ "$with_perf" = 1 ]; then
    # Record the broker only while wrk loads it; the report lists the hottest symbols.
    timeout $((duration + 30)) perf record -g -F 999 -p "$ringmq_pid" -o "$work/perf.data" \
        -- sleep $((duration + 1)) > "$work/perf-record.txt" 2>&1 &
    perf_pid=$!
    pids+=("$perf_pid")
    sleep 0.5
    run_wrk ringmq-perf "$port_http" "$duration" > /dev/null
    wait "$perf_pid" || true
    perf report -i "$work/perf.data" --stdio --no-children --percent-limit 1 \
        --sort symbol -g none > "$work/perf-report.txt" 2>/dev/null || true
fi

med() { tr ' ' '\n' <<< "$1" | grep . | median; }
ringmq_rps="$(med "${rps[ringmq]}")"
minimal_rps="$(med "${rps[minimal]}")"
ratio="$(awk -v a="$ringmq_rps" -v b="$minimal_rps" 'BEGIN { printf "%.2f", a / b }')"

cat <<EOF

## REST publish, keep-alive: wrk -t1 -c$connections -d${duration}s, median of $rounds rounds

| server | requests/s | p50 latency | p99 latency | rounds (requests/s) |
|---|---:|---:|---:|---|
| ringmq \`POST /v1/publish\` (no subscriber) | $ringmq_rps | $(med "${p50[ringmq]}") µs | $(med "${p99[ringmq]}") µs | ${rps[ringmq]}|
| minimal_http (same runtime and parser) | $minimal_rps | $(med "${p50[minimal]}") µs | $(med "${p99[minimal]}") µs | ${rps[minimal]}|
| ringmq with a \`bench/#\` subscriber (1 run) | $(field rps "$sub_line") | $(field p50_us "$sub_line") µs | $(field p99_us "$sub_line") µs | |

Ratio ringmq ÷ minimal_http (requests/s, no subscriber): **$ratio**

Load average before / after the measured rounds: $load_before / $load_after

Subscriber (ringmq-loadgen sub, last lines):
\`\`\`
$(tail -n 15 "$work/sub.txt")
\`\`\`
EOF
if [ "$with_perf" = 1 ]; then
    echo
    echo "perf (ringmq under wrk, self time, top symbols):"
    echo '```'
    grep -v '^#' "$work/perf-report.txt" | grep . | head -n 30
    echo '```'
fi
echo "raw outputs in $work" >&2
