#!/usr/bin/env bash
# ringmq side by side with mosquitto and rumqttd, per core (issue 3).
#
# Each broker runs pinned to CPU 0 (ringmq with --shards 1), the loadgen pinned to CPU 1. The
# same scenarios run against every broker, interleaved (round 1: ringmq, mosquitto, rumqttd;
# round 2: ...), each against a freshly started broker so one run's backlog cannot leak into
# the next. Medians over the rounds and ratios (ringmq ÷ peer) are printed as a markdown table
# and written to benches/results/<date>.md, with every raw loadgen report in <date>.json.
#
# Usage: scripts/bench-compare.sh [--rounds N] [--duration S] [--warmup S] [--no-50k]
#                                 [--no-two-shards] [--out DIR] [--baseline BIN] [--no-peers]
#                                 [--only SCENARIO,...] [--no-memory]
# --baseline BIN adds an earlier ringmq build ("base") to every round, for a before/after
# comparison in one run (ringmq ÷ base); --no-peers leaves mosquitto and rumqttd out.
# FLASHMQ_BIN=/path/to/flashmq adds FlashMQ as a peer, also with --no-peers (`thread_count 1`, per core like
# the rest); build it with `apt-get install cmake libssl-dev` and FlashMQ's Release cmake build.
# Needs: cargo, taskset, python3, ss; installs mosquitto and rumqttd via scripts/install-peers.sh
# (rumqttd is cached in $RINGMQ_PEERS_DIR, default $HOME/.cache/ringmq-peers).
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
rounds=3
duration=10
warmup=2
with_50k=1
with_two_shards=1
out_dir="$root/benches/results"
baseline_bin=""
with_peers=1
only=""
with_memory=1
while [ $# -gt 0 ]; do
    case "$1" in
        --rounds) rounds="$2"; shift 2 ;;
        --duration) duration="$2"; shift 2 ;;
        --warmup) warmup="$2"; shift 2 ;;
        --no-50k) with_50k=0; shift ;;
        --no-two-shards) with_two_shards=0; shift ;;
        --out) out_dir="$2"; shift 2 ;;
        --baseline) baseline_bin="$(realpath "$2")"; shift 2 ;;
        --no-peers) with_peers=0; shift ;;
        --only) only="$2"; shift 2 ;;
        --no-memory) with_memory=0; shift ;;
        -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
        *) echo "unknown argument: $1" >&2; exit 2 ;;
    esac
done

if [ -n "$baseline_bin" ] && [ ! -x "$baseline_bin" ]; then
    echo "--baseline: $baseline_bin is not an executable" >&2
    exit 2
fi
brokers=(ringmq)
[ -n "$baseline_bin" ] && brokers+=(base)
[ "$with_peers" = 1 ] && brokers+=(mosquitto rumqttd)
flashmq_bin="${FLASHMQ_BIN:-}"
if [ -n "$flashmq_bin" ]; then
    if [ ! -x "$flashmq_bin" ]; then
        echo "FLASHMQ_BIN: $flashmq_bin is not an executable" >&2
        exit 2
    fi
    brokers+=(flashmq)
fi
peers_dir="${RINGMQ_PEERS_DIR:-$HOME/.cache/ringmq-peers}"
[ "$with_peers" = 1 ] && "$root/scripts/install-peers.sh" "$peers_dir"
mosquitto_bin="$(command -v mosquitto || echo /usr/sbin/mosquitto)"
rumqttd_bin="$peers_dir/bin/rumqttd"

(cd "$root" && cargo build --release -p ringmq -p ringmq-loadgen)
ringmq_bin="$root/target/release/ringmq"
loadgen_bin="$root/target/release/ringmq-loadgen"

work="$(mktemp -d /tmp/ringmq-bench.XXXXXX)"
mkdir -p "$work/raw" "$out_dir"
stamp="$(date -u +%Y-%m-%d)"
echo "working in $work"

# Every connection is a descriptor, in the brokers and in the loadgen.
ulimit -n 200000 2>/dev/null || ulimit -n "$(ulimit -Hn)"

# A free port near $1 (other engineers' brokers may hold the usual ones).
free_port() {
    local port="$1"
    while ss -ltn "( sport = :$port )" | grep -q LISTEN; do port=$((port + 1)); done
    echo "$port"
}
port_ringmq="$(free_port 31883)"
port_mosquitto="$(free_port $((port_ringmq + 1)))"
port_rumqttd="$(free_port $((port_mosquitto + 1)))"
port_http="$(free_port 31880)"
port_base="$(free_port $((port_rumqttd + 1)))"
port_flashmq="$(free_port $((port_base + 1)))"

cat > "$work/mosquitto.conf" <<EOF
listener $port_mosquitto 127.0.0.1
allow_anonymous true
persistence false
log_dest none
# Like ringmq's defaults: Nagle off (ringmq coalesces its own writes), 1024 in flight per client.
set_tcp_nodelay true
max_inflight_messages 1024
max_queued_messages 1000
max_connections -1
EOF

cat > "$work/rumqttd.toml" <<EOF
id = 0

[router]
id = 0
max_connections = 60010
max_outgoing_packet_count = 200
max_segment_size = 104857600
max_segment_count = 10

[v4.1]
name = "v4-1"
listen = "127.0.0.1:$port_rumqttd"
next_connection_delay_ms = 0
    [v4.1.connections]
    connection_timeout_ms = 60000
    max_payload_size = 20480
    max_inflight_count = 1024
    dynamic_filters = true
EOF

cat > "$work/flashmq.conf" <<EOF
# One thread: per-core figures, like the other brokers here.
thread_count 1
allow_anonymous true
log_file $work/flashmq.log
log_level warning
listen {
    protocol mqtt
    inet4_bind_address 127.0.0.1
    port $port_flashmq
}
EOF

broker_pid=""
# start_broker NAME [SHARDS]: starts one broker (pinned to CPU 0 unless SHARDS > 1).
start_broker() {
    local name="$1" shards="${2:-1}" port
    case "$name" in
        ringmq|base)
            port="$port_ringmq"
            local bin="$ringmq_bin"
            if [ "$name" = base ]; then port="$port_base"; bin="$baseline_bin"; fi
            rm -rf "$work/ringmq-data"
            local pin=(taskset -c 0)
            [ "$shards" -gt 1 ] && pin=()
            "${pin[@]}" "$bin" serve --mqtt-listen "127.0.0.1:$port" \
                --http-listen "127.0.0.1:$port_http" --shards "$shards" \
                --data-dir "$work/ringmq-data" --log warn >> "$work/ringmq.log" 2>&1 &
            ;;
        mosquitto)
            port="$port_mosquitto"
            taskset -c 0 "$mosquitto_bin" -c "$work/mosquitto.conf" >> "$work/mosquitto.log" 2>&1 &
            ;;
        rumqttd)
            port="$port_rumqttd"
            taskset -c 0 "$rumqttd_bin" -q -c "$work/rumqttd.toml" >> "$work/rumqttd.log" 2>&1 &
            ;;
        flashmq)
            port="$port_flashmq"
            taskset -c 0 "$flashmq_bin" --config-file "$work/flashmq.conf" >> "$work/flashmq.out" 2>&1 &
            ;;
    esac
    broker_pid=$!
    for _ in $(seq 1 100); do
        if ss -ltn "( sport = :$port )" | grep -q LISTEN; then
            sleep 0.3
            return 0
        fi
        sleep 0.1
    done
    echo "$name did not start listening on $port" >&2
    return 1
}

stop_broker() {
    if [ -n "$broker_pid" ] && kill -0 "$broker_pid" 2>/dev/null; then
        kill "$broker_pid" 2>/dev/null || true
        for _ in $(seq 1 50); do kill -0 "$broker_pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$broker_pid" 2>/dev/null || true
        wait "$broker_pid" 2>/dev/null || true
    fi
    broker_pid=""
}
trap stop_broker EXIT

port_of() {
    case "$1" in
        ringmq|ringmq2) echo "$port_ringmq" ;;
        base) echo "$port_base" ;;
        mosquitto) echo "$port_mosquitto" ;;
        rumqttd) echo "$port_rumqttd" ;;
        flashmq) echo "$port_flashmq" ;;
    esac
}

# The scenarios of issue 3: name and loadgen arguments (port and output flags are added).
load=(-d "$duration" -w "$warmup" --drain 3 -s 64)
scenario_names=(fanin_qos0 fanin_qos1 fanout_1000 p2p_1000_qos1 latency_fixed conn_10k)
if [ -n "$only" ]; then
    IFS=, read -r -a scenario_names <<< "$only"
    for name in "${scenario_names[@]}"; do
        case "$name" in
            fanin_qos0|fanin_qos1|fanout_1000|p2p_1000_qos1|latency_fixed|conn_10k) ;;
            *) echo "--only: unknown scenario $name" >&2; exit 2 ;;
        esac
    done
fi
scenario_args() {
    case "$1" in
        fanin_qos0) echo "fanin --pubs 10 --subs 1 -q 0 ${load[*]}" ;;
        fanin_qos1) echo "fanin --pubs 10 --subs 1 -q 1 --inflight 64 ${load[*]}" ;;
        fanout_1000) echo "fanout --pubs 1 --subs 1000 -q 0 ${load[*]}" ;;
        p2p_1000_qos1) echo "p2p -c 1000 -q 1 --inflight 16 ${load[*]}" ;;
        # A load every broker sustains: 20k msg/s in, 20k out, QoS 0.
        latency_fixed) echo "fanin --pubs 10 --subs 1 -q 0 --rate-total 20000 ${load[*]}" ;;
        conn_10k) echo "conn -c 10000 --connect-rate 10000 --hold 1" ;;
    esac
}

# run_one BROKER SCENARIO ROUND [SHARDS]: fresh broker, one loadgen run, raw JSON kept.
run_one() {
    local broker="$1" scenario="$2" round="$3" shards="${4:-1}" label="$1"
    [ "$shards" -gt 1 ] && label="${broker}2"
    start_broker "$broker" "$shards"
    local args
    read -r -a args <<< "$(scenario_args "$scenario")"
    local extra=()
    [ "${args[0]}" = conn ] && extra=(--broker-pid "$broker_pid")
    local file="$work/raw/$label-$scenario-$round.json"
    echo "== round $round: $label $scenario" >&2
    set +e
    taskset -c 1 timeout 300 "$loadgen_bin" "${args[@]}" -p "$(port_of "$broker")" \
        "${extra[@]}" --json --quiet > "$file" 2> "$work/raw/$label-$scenario-$round.err"
    local code=$?
    set -e
    if [ ! -s "$file" ]; then
        echo "{\"error\": \"loadgen exited $code without a report\"}" > "$file"
    fi
    python3 - "$file" "$code" <<'PY'
import json, sys
path, code = sys.argv[1], int(sys.argv[2])
report = json.load(open(path))
report["exit_code_seen"] = code
json.dump(report, open(path, "w"))
if "error" in report:
    print("   ", report["error"], file=sys.stderr)
else:
    print("    out %.0f msg/s, in %.0f msg/s, p99 %.0f us, lost %d, errors %d, exit %d" % (
        report["received_per_s"], report["sent_per_s"], report["latency"]["p99_us"],
        report["lost"], report["errors"], code), file=sys.stderr)
PY
    stop_broker
}

# run_memory BROKER COUNT: idle connections from several source addresses, RSS delta.
run_memory() {
    local broker="$1" count="$2"
    start_broker "$broker" 1
    local file="$work/raw/$broker-idle_$count-1.json"
    echo "== memory: $broker $count idle connections" >&2
    set +e
    taskset -c 1 timeout 600 "$loadgen_bin" conn -c "$count" --connect-rate 10000 --hold 5 \
        --ifaddr 127.0.0.1,127.0.0.2,127.0.0.3,127.0.0.4 -p "$(port_of "$broker")" \
        --broker-pid "$broker_pid" --json --quiet > "$file" 2> "$work/raw/$broker-idle_$count.err"
    local code=$?
    set -e
    [ -s "$file" ] || echo "{\"error\": \"loadgen exited $code without a report\"}" > "$file"
    stop_broker
}

for round in $(seq 1 "$rounds"); do
    for scenario in "${scenario_names[@]}"; do
        for broker in "${brokers[@]}"; do
            run_one "$broker" "$scenario" "$round"
        done
    done
done
if [ "$with_two_shards" = 1 ]; then
    for scenario in "${scenario_names[@]}"; do
        run_one ringmq "$scenario" 1 2
    done
fi
memory_counts=(10000)
[ "$with_50k" = 1 ] && memory_counts+=(50000)
[ "$with_memory" = 1 ] || memory_counts=()
for count in "${memory_counts[@]}"; do
    for broker in "${brokers[@]}"; do
        run_memory "$broker" "$count"
    done
done

machine="$(lscpu | sed -n 's/^Model name:[[:space:]]*//p' | head -1), $(nproc) CPUs, Linux $(uname -r)"
python3 - "$work/raw" "$out_dir/$stamp.md" "$out_dir/$stamp.json" "$machine" "$rounds" "$duration" <<'PY'
import glob, json, os, statistics, sys

raw_dir, md_path, json_path, machine, rounds, duration = sys.argv[1:7]
runs = {}
for path in sorted(glob.glob(os.path.join(raw_dir, "*.json"))):
    broker, scenario, round_ = os.path.basename(path)[:-5].split("-")
    runs.setdefault((broker, scenario), []).append(json.load(open(path)))

def median(broker, scenario, pick):
    values = []
    for report in runs.get((broker, scenario), []):
        if "error" in report:
            continue
        try:
            values.append(pick(report))
        except (KeyError, TypeError):
            pass
    return statistics.median(values) if values else None

def problems(broker, scenario):
    notes = []
    for report in runs.get((broker, scenario), []):
        if "error" in report:
            notes.append(report["error"])
            continue
        if report.get("lost") and report.get("sub_qos", 0) > 0 and report.get("qos", 0) > 0:
            notes.append("lost %d at QoS %d" % (report["lost"], report["qos"]))
        if report.get("errors"):
            notes.append("%d errors" % report["errors"])
        if report.get("connections_failed"):
            notes.append("%d connections failed" % report["connections_failed"])
    return "; ".join(sorted(set(notes)))

rows = [
    ("QoS 0 fan-in 10→1, 64 B: delivered msg/s", "fanin_qos0", lambda r: r["received_per_s"], True),
    ("QoS 0 fan-in 10→1, 64 B: accepted msg/s", "fanin_qos0", lambda r: r["sent_per_s"], True),
    ("QoS 1 fan-in 10→1, 64 B: delivered msg/s", "fanin_qos1", lambda r: r["received_per_s"], True),
    ("fan-out 1→1000, QoS 0: deliveries/s", "fanout_1000", lambda r: r["received_per_s"], True),
    ("p2p 1000 pairs, QoS 1: msg/s", "p2p_1000_qos1", lambda r: r["received_per_s"], True),
    ("p99 latency at 20k msg/s QoS 0 (µs, lower is better)", "latency_fixed", lambda r: r["latency"]["p99_us"], False),
    ("p50 latency at 20k msg/s QoS 0 (µs)", "latency_fixed", lambda r: r["latency"]["p50_us"], False),
    ("connection storm 10k: connections/s", "conn_10k", lambda r: r["connect_rate_per_s"], True),
    ("connection storm 10k: CONNACK p99 (µs)", "conn_10k", lambda r: r["latency"]["p99_us"], False),
    ("memory per idle connection at 10k (B)", "idle_10000", lambda r: r["broker_memory"]["bytes_per_connection"], False),
    ("memory per idle connection at 50k (B)", "idle_50000", lambda r: r["broker_memory"]["bytes_per_connection"], False),
]

def fmt(value):
    if value is None:
        return "–"
    return "{:,.0f}".format(value)

def ratio(a, b):
    if a is None or b is None or b == 0:
        return "–"
    return "%.2f×" % (a / b)

lines = []
peers = [b for b in ("mosquitto", "rumqttd", "flashmq") if any(key[0] == b for key in runs)]
lines.append("# ringmq vs %s — %s" % (" vs ".join(peers) or "itself", os.path.basename(md_path)[:-3]))
lines.append("")
lines.append("Machine: %s. Brokers pinned to CPU 0 (ringmq `--shards 1`), loadgen pinned to CPU 1, "
             "loopback, no persistence, anonymous. Medians of %s rounds, %s s measured per run "
             "(memory: one run each)." % (machine, rounds, duration))
lines.append("")
present = [b for b in ("ringmq", "base", "mosquitto", "rumqttd", "flashmq")
           if any(key[0] == b for key in runs)]
others = [b for b in present if b != "ringmq"]
lines.append("| scenario | " + " | ".join(present) + "".join(" | ringmq ÷ %s" % b for b in others) + " |")
lines.append("| --- |" + " ---: |" * (len(present) + len(others)))
for label, scenario, pick, _ in rows:
    values = {b: median(b, scenario, pick) for b in present}
    if all(v is None for v in values.values()):
        continue
    cells = [fmt(values[b]) for b in present] + [ratio(values["ringmq"], values[b]) for b in others]
    lines.append("| %s | %s |" % (label, " | ".join(cells)))
lines.append("")
two = [(label, scenario, pick) for label, scenario, pick, _ in rows
       if median("ringmq2", scenario, pick) is not None]
if two:
    lines.append("## ringmq on 2 shards (reference; unpinned, shares CPU 1 with the loadgen)")
    lines.append("")
    lines.append("| scenario | ringmq 2 shards | ringmq 1 shard |")
    lines.append("| --- | ---: | ---: |")
    for label, scenario, pick in two:
        lines.append("| %s | %s | %s |" % (label, fmt(median("ringmq2", scenario, pick)),
                                           fmt(median("ringmq", scenario, pick))))
    lines.append("")
notes = []
for broker in ("ringmq", "base", "mosquitto", "rumqttd", "flashmq", "ringmq2"):
    for _, scenario, _, _ in rows:
        text = problems(broker, scenario)
        if text:
            notes.append("- %s %s: %s" % (broker, scenario, text))
if notes:
    lines.append("## Problems seen")
    lines.append("")
    lines.extend(sorted(set(notes)))
    lines.append("")
lines.append("Reproduce: `scripts/bench-compare.sh --rounds %s --duration %s`" % (rounds, duration))
text = "\n".join(lines) + "\n"
open(md_path, "w").write(text)
json.dump({"machine": machine, "rounds": int(rounds), "duration_s": float(duration),
           "runs": {"%s/%s" % key: value for key, value in runs.items()}},
          open(json_path, "w"))
print(text)
PY
echo "wrote $out_dir/$stamp.md and $out_dir/$stamp.json (raw reports in $work/raw)"
