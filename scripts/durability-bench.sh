#!/usr/bin/env bash
# What durability costs (issue 13): QoS 1 fan-in 10→1, 64 B, persistent sessions, one shard,
# against ringmq in --durability memory, periodic and sync, and mosquitto with persistence on.
# `sync` runs twice: as configured by default (a PUBACK whose copies the subscriber acknowledged
# within durability.consume_grace_us goes without waiting for a sync) and with
# consume_grace_us = 0 ("sync, no grace": every round of PUBACKs asks for its sync at once, what a
# publisher whose subscribers do not keep up gets).
#
# Each broker runs pinned to CPU 0 (ringmq with --shards 1), the loadgen pinned to CPU 1, all on
# 127.0.0.1. Rounds interleave the brokers (round 1: memory, periodic, sync, mosquitto; round 2:
# ...), each run against a freshly started broker with a fresh data directory. Medians per broker,
# ratios to memory (goals: periodic >= 0.9x, sync >= 0.5x) and the per-round ratios are printed as
# a markdown table and written to DIR/<date>-durability.md, every raw loadgen report to
# DIR/<date>-durability.json. mosquitto has no per-message sync mode: its nearest equivalent of
# periodic is `persistence true` with `autosave_interval 1` (the whole store written every second).
#
# Usage: scripts/durability-bench.sh [--rounds N] [--duration S] [--inflight N] [--no-mosquitto]
#                                    [--out DIR] [--build]
# Defaults: 5 rounds, 8 s measured per run, 64 unacknowledged messages per publisher, DIR
# benches/results. Uses target/release/ringmq and ringmq-loadgen as they are (built only when
# missing; --build rebuilds them first). Needs taskset, python3, ss; installs the mosquitto
# Debian package (as scripts/install-peers.sh does) when it is missing. A run takes about
# rounds x brokers x (S + 3) seconds.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
rounds=5
duration=8
inflight=64
with_mosquitto=1
out_dir="$root/benches/results"
build=0

usage() { awk 'NR > 1 && /^#/ { print; next } NR > 1 { exit }' "$0"; }
need_value() {
    if [ $# -lt 2 ] || [ -z "$2" ]; then
        echo "$1 needs a value (see --help)" >&2
        exit 2
    fi
}
# positive_int OPTION VALUE [MAX]
positive_int() {
    if ! [[ "$2" =~ ^[0-9]+$ ]] || [ "$2" -lt 1 ] || { [ $# -ge 3 ] && [ "$2" -gt "$3" ]; }; then
        echo "$1: expected a whole number from 1${3:+ to $3}, got '$2'" >&2
        exit 2
    fi
}
while [ $# -gt 0 ]; do
    case "$1" in
        --rounds) need_value "$@"; positive_int "$1" "$2"; rounds="$2"; shift 2 ;;
        --duration) need_value "$@"; positive_int "$1" "$2" 3600; duration="$2"; shift 2 ;;
        --inflight) need_value "$@"; positive_int "$1" "$2" 65535; inflight="$2"; shift 2 ;;
        --no-mosquitto) with_mosquitto=0; shift ;;
        --out) need_value "$@"; out_dir="$2"; shift 2 ;;
        --build) build=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
    esac
done

for tool in taskset python3 ss timeout; do
    command -v "$tool" >/dev/null 2>&1 || { echo "needs $tool on PATH" >&2; exit 1; }
done
if [ "$(nproc)" -lt 2 ]; then
    echo "needs at least 2 CPUs (broker on CPU 0, loadgen on CPU 1)" >&2
    exit 1
fi

ringmq_bin="$root/target/release/ringmq"
loadgen_bin="$root/target/release/ringmq-loadgen"
if [ "$build" = 1 ] || [ ! -x "$ringmq_bin" ] || [ ! -x "$loadgen_bin" ]; then
    (cd "$root" && cargo build --release -p ringmq -p ringmq-loadgen)
fi

brokers=(memory periodic sync sync_nograce)
mosquitto_bin=""
if [ "$with_mosquitto" = 1 ]; then
    brokers+=(mosquitto)
    mosquitto_bin="$(command -v mosquitto || true)"
    [ -z "$mosquitto_bin" ] && [ -x /usr/sbin/mosquitto ] && mosquitto_bin=/usr/sbin/mosquitto
    if [ -z "$mosquitto_bin" ]; then
        # Only the mosquitto step of scripts/install-peers.sh: its rumqttd step is a 3-5 minute
        # cargo install this benchmark does not need.
        echo "mosquitto: installing the Debian package"
        as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
        as_root apt-get update
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends mosquitto
        mosquitto_bin="$(command -v mosquitto || echo /usr/sbin/mosquitto)"
    fi
    [ -x "$mosquitto_bin" ] || { echo "mosquitto not found at $mosquitto_bin" >&2; exit 1; }
fi

work="$(mktemp -d /tmp/ringmq-durability.XXXXXX)"
mkdir -p "$work/raw" "$work/data" "$out_dir"
stamp="$(date -u +%Y-%m-%d)"
echo "working in $work"

ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

# A free port near $1 (other engineers' brokers may hold the usual ones).
free_port() {
    local port="$1"
    while ss -ltn "( sport = :$port )" | grep -q LISTEN; do port=$((port + 1)); done
    echo "$port"
}
port_ringmq="$(free_port 32883)"
port_mosquitto="$(free_port $((port_ringmq + 1)))"
port_http="$(free_port 32880)"

broker_pid=""
# start_broker BROKER DATA_DIR: starts one broker pinned to CPU 0 on a fresh data directory.
start_broker() {
    local broker="$1" data="$2" port log="$work/$1.log"
    rm -rf "$data"
    mkdir -p "$data"
    case "$broker" in
        memory|periodic|sync|sync_nograce)
            port="$port_ringmq"
            local mode="${broker%_nograce}" extra=()
            if [ "$broker" = sync_nograce ]; then
                printf '[durability]\nconsume_grace_us = 0\n' > "$work/nograce.toml"
                extra=(--config "$work/nograce.toml")
            fi
            taskset -c 0 "$ringmq_bin" serve --mqtt-listen "127.0.0.1:$port" \
                --http-listen "127.0.0.1:$port_http" --shards 1 --durability "$mode" \
                --data-dir "$data" --log warn "${extra[@]}" >> "$log" 2>&1 &
            ;;
        mosquitto)
            port="$port_mosquitto"
            cat > "$work/mosquitto.conf" <<EOF
listener $port 127.0.0.1
allow_anonymous true
# Started as root, mosquitto would switch to user "mosquitto", which cannot write $data.
user $(id -un)
persistence true
persistence_location $data/
# The nearest equivalent of ringmq's periodic mode: the whole store written every second.
autosave_interval 1
autosave_on_changes false
log_dest stderr
log_type error
log_type warning
# As scripts/bench-compare.sh: Nagle off (ringmq coalesces its own writes), 1024 in flight per
# client; the queue is large enough that a slow subscriber's backlog is kept, not dropped.
set_tcp_nodelay true
max_inflight_messages 1024
max_queued_messages 100000
max_connections -1
EOF
            taskset -c 0 "$mosquitto_bin" -c "$work/mosquitto.conf" >> "$log" 2>&1 &
            ;;
    esac
    broker_pid=$!
    for _ in $(seq 1 100); do
        if ss -ltn "( sport = :$port )" | grep -q LISTEN; then
            sleep 0.3
            return 0
        fi
        kill -0 "$broker_pid" 2>/dev/null || break
        sleep 0.1
    done
    echo "$broker did not start listening on $port; last lines of $log:" >&2
    tail -5 "$log" >&2 || true
    return 1
}

# stop_broker: SIGTERM (both brokers write their state on it), SIGKILL after 15 s.
stop_broker() {
    if [ -n "$broker_pid" ] && kill -0 "$broker_pid" 2>/dev/null; then
        kill "$broker_pid" 2>/dev/null || true
        for _ in $(seq 1 150); do kill -0 "$broker_pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$broker_pid" 2>/dev/null || true
        wait "$broker_pid" 2>/dev/null || true
    fi
    broker_pid=""
}
cleanup() {
    stop_broker
    rm -rf "$work/data"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

port_of() {
    case "$1" in
        mosquitto) echo "$port_mosquitto" ;;
        *) echo "$port_ringmq" ;;
    esac
}

# run_one BROKER ROUND: fresh broker and data directory, one loadgen run, raw JSON kept.
run_one() {
    local broker="$1" round="$2"
    local data="$work/data/$broker-$round"
    local file="$work/raw/$broker-$round.json"
    echo "== round $round: $broker" >&2
    if ! start_broker "$broker" "$data"; then
        echo "{\"error\": \"$broker did not start\"}" > "$file"
        stop_broker
        return 0
    fi
    set +e
    taskset -c 1 timeout $((duration + 60)) "$loadgen_bin" fanin --pubs 10 --subs 1 -q 1 \
        --inflight "$inflight" --persistent --duration "$duration" --json --quiet \
        -p "$(port_of "$broker")" > "$file" 2> "$work/raw/$broker-$round.err"
    local code=$?
    set -e
    local alive=1
    kill -0 "$broker_pid" 2>/dev/null || alive=0
    stop_broker
    local bytes
    bytes="$(du -sb "$data" 2>/dev/null | cut -f1)"
    rm -rf "$data"
    [ -s "$file" ] || echo "{\"error\": \"loadgen exited $code without a report\"}" > "$file"
    python3 - "$file" "$code" "$alive" "${bytes:-0}" <<'PY'
import json, sys
path, code, alive, size = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1", int(sys.argv[4])
try:
    report = json.load(open(path))
except ValueError:
    report = {"error": "loadgen report is not JSON (exit %d)" % code}
report["exit_code_seen"] = code
report["data_dir_bytes_after_stop"] = size
if not alive:
    report["broker_exited"] = True
json.dump(report, open(path, "w"))
if "error" in report:
    print("   ", report["error"], file=sys.stderr)
else:
    print("    delivered %.0f msg/s, accepted %.0f msg/s, p99 %.0f us, lost %d, errors %d, exit %d%s"
          % (report["received_per_s"], report["sent_per_s"], report["latency"]["p99_us"],
             report["lost"], report["errors"], code,
             "" if alive else ", BROKER EXITED DURING THE RUN"), file=sys.stderr)
PY
}

# Another engineer may rebuild target/release while this runs: note it when that happens.
built_at_start="$(date -u -r "$ringmq_bin" '+%Y-%m-%d %H:%M:%S UTC')"
for round in $(seq 1 "$rounds"); do
    for broker in "${brokers[@]}"; do
        run_one "$broker" "$round"
    done
done

machine="$(lscpu | sed -n 's/^Model name:[[:space:]]*//p' | head -1), $(nproc) CPUs, Linux $(uname -r)"
fs="$(df -PT "$work" | awk 'NR == 2 { print $2 " on " $1 }')"
head="$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)"
dirty=""
[ -n "$(git -C "$root" status --porcelain --untracked-files=no 2>/dev/null)" ] && dirty=" (tree has uncommitted changes)"
built="$(date -u -r "$ringmq_bin" '+%Y-%m-%d %H:%M:%S UTC')"
if [ "$built" != "$built_at_start" ]; then
    built="$built_at_start, REBUILT during the run ($built): the runs mix two builds"
fi
mosquitto_version=""
[ -n "$mosquitto_bin" ] && mosquitto_version="$("$mosquitto_bin" -h 2>/dev/null | sed -n '1s/^mosquitto version //p' || true)"
args="--rounds $rounds --duration $duration"
[ "$inflight" != 64 ] && args="$args --inflight $inflight"
[ "$with_mosquitto" = 0 ] && args="$args --no-mosquitto"

python3 - "$work/raw" "$out_dir/$stamp-durability.md" "$out_dir/$stamp-durability.json" \
    "$machine" "$rounds" "$duration" "$inflight" "$fs" "$head$dirty" "$built" \
    "$mosquitto_version" "$args" <<'PY'
import glob, json, os, statistics, sys

(raw_dir, md_path, json_path, machine, rounds, duration, inflight, fs, head, built,
 mosquitto_version, args) = sys.argv[1:13]
rounds = int(rounds)
runs = {}
for path in sorted(glob.glob(os.path.join(raw_dir, "*.json"))):
    broker, round_ = os.path.basename(path)[:-5].rsplit("-", 1)
    runs.setdefault(broker, {})[int(round_)] = json.load(open(path))
present = [b for b in ("memory", "periodic", "sync", "sync_nograce", "mosquitto") if b in runs]

def value(report, pick):
    if report is None or "error" in report:
        return None
    try:
        return pick(report)
    except (KeyError, TypeError):
        return None

def median(broker, pick):
    values = [v for v in (value(r, pick) for r in runs[broker].values()) if v is not None]
    return statistics.median(values) if values else None

def total(broker, pick):
    values = [v for v in (value(r, pick) for r in runs[broker].values()) if v is not None]
    return sum(values) if values else None

def fmt(v, digits=0):
    return "–" if v is None else "{:,.{}f}".format(v, digits)

delivered = lambda r: r["received_per_s"]
rows = [
    ("delivered msg/s (median)", lambda b: median(b, delivered), 0),
    ("accepted msg/s (median)", lambda b: median(b, lambda r: r["sent_per_s"]), 0),
    ("lost (sum over rounds)", lambda b: total(b, lambda r: r["lost"]), 0),
    ("p99 latency, µs (median)", lambda b: median(b, lambda r: r["latency"]["p99_us"]), 0),
    ("p50 latency, µs (median)", lambda b: median(b, lambda r: r["latency"]["p50_us"]), 0),
    ("data dir after stop, KiB (median)",
     lambda b: median(b, lambda r: r["data_dir_bytes_after_stop"] / 1024), 0),
]
labels = {"memory": "ringmq memory", "periodic": "ringmq periodic", "sync": "ringmq sync",
          "sync_nograce": "ringmq sync, no grace", "mosquitto": "mosquitto persistence"}

lines = []
lines.append("# ringmq durability modes vs mosquitto persistence — %s" % os.path.basename(md_path)[:-3])
lines.append("")
lines.append("Issue 13: QoS 1 fan-in 10→1, 64 B, `--inflight %s`, persistent sessions "
             "(`ringmq-loadgen fanin --pubs 10 --subs 1 -q 1 --inflight %s --persistent --duration %s`). "
             "Machine: %s; data directories on %s. Brokers pinned to CPU 0 (ringmq `--shards 1`, "
             "fresh `--data-dir` per run), loadgen pinned to CPU 1, loopback. Medians of %d "
             "interleaved rounds, %s s measured per run. ringmq at %s, binary built %s. "
             "\"sync, no grace\" is sync with `durability.consume_grace_us = 0`: every round of "
             "PUBACKs asks for its sync at once instead of first giving the subscriber's "
             "acknowledgements a moment to make the sync unneeded (what a publisher gets whose "
             "subscribers do not keep up)."
             % (inflight, inflight, duration, machine, fs, rounds, duration, head, built))
if "mosquitto" in present:
    lines.append("")
    lines.append("mosquitto %s: `persistence true`, `autosave_interval 1` (the whole store written "
                 "every second, its nearest equivalent of ringmq's periodic mode; mosquitto has no "
                 "per-message sync mode, so nothing compares with ringmq's sync), "
                 "`max_inflight_messages 1024`, `max_queued_messages 100000`."
                 % (mosquitto_version or "(version unknown)"))
lines.append("")
lines.append("| | " + " | ".join(labels[b] for b in present) + " |")
lines.append("| --- |" + " ---: |" * len(present))
for label, get, digits in rows:
    lines.append("| %s | %s |" % (label, " | ".join(fmt(get(b), digits) for b in present)))
lines.append("")

goals = {"periodic": 0.9, "sync": 0.5}
base = median("memory", delivered) if "memory" in present else None
ratio_rows = []
if base:
    lines.append("Delivered msg/s against ringmq memory (per-round ratios pair the runs of the same round):")
    lines.append("")
    lines.append("| ratio | of the medians | median of rounds | goal | per round |")
    lines.append("| --- | ---: | ---: | ---: | --- |")
    for broker in present:
        if broker == "memory":
            continue
        m = median(broker, delivered)
        per_round = []
        for rnd in range(1, rounds + 1):
            a = value(runs[broker].get(rnd), delivered)
            b = value(runs["memory"].get(rnd), delivered)
            per_round.append(a / b if a is not None and b else None)
        known = [r for r in per_round if r is not None]
        goal = goals.get(broker)
        ratio = m / base if m is not None else None
        verdict = "–"
        if goal is not None and ratio is not None:
            verdict = "≥ %.1f× %s" % (goal, "met" if ratio >= goal else "**not met**")
        lines.append("| %s ÷ memory | %s | %s | %s | %s |" % (
            broker, "–" if ratio is None else "%.2f×" % ratio,
            "%.2f×" % statistics.median(known) if known else "–", verdict,
            ", ".join("–" if r is None else "%.2f" % r for r in per_round)))
        ratio_rows.append({"broker": broker, "ratio_of_medians": ratio, "per_round": per_round,
                           "goal": goal})
    lines.append("")

notes = []
for broker in present:
    for rnd, report in sorted(runs[broker].items()):
        where = "%s round %d" % (broker, rnd)
        if "error" in report:
            notes.append("- %s: %s" % (where, report["error"]))
            continue
        if report.get("broker_exited"):
            notes.append("- %s: the broker exited during the run" % where)
        if report.get("lost"):
            notes.append("- %s: lost %d at QoS 1 (not delivered by the end of the 3 s drain)"
                         % (where, report["lost"]))
        if report.get("errors"):
            notes.append("- %s: %d errors" % (where, report["errors"]))
        if report.get("connections_failed"):
            notes.append("- %s: %d connections failed" % (where, report["connections_failed"]))
        if report.get("exit_code_seen"):
            notes.append("- %s: loadgen exited %d" % (where, report["exit_code_seen"]))
if notes:
    lines.append("## Problems seen")
    lines.append("")
    lines.extend(notes)
    lines.append("")
lines.append("Reproduce: `scripts/durability-bench.sh %s`" % args)
text = "\n".join(lines) + "\n"
open(md_path, "w").write(text)
json.dump({"machine": machine, "filesystem": fs, "ringmq": head, "rounds": rounds,
           "duration_s": float(duration), "inflight": int(inflight),
           "mosquitto": mosquitto_version or None, "ratios": ratio_rows,
           "runs": {"%s/%d" % (b, r): rep for b in runs for r, rep in runs[b].items()}},
          open(json_path, "w"))
print(text)
PY
echo "wrote $out_dir/$stamp-durability.md and $out_dir/$stamp-durability.json (raw reports in $work/raw)"
