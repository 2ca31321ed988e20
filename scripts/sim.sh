#!/usr/bin/env bash
# Long simulator campaigns (CI runs a bounded batch through `cargo test -p ringmq-sim`).
#
# Usage: scripts/sim.sh [--seeds N] [--from S] [--steps M] [--shards K] [--clients C]
# Runs ringmq-sim (release build) over N seeds from S; stops at the first broken promise and
# prints how to reproduce it. Defaults: 200 seeds from 1, 5000 steps, 1 shard, 12 clients.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
seeds=200 from=1 steps=5000 shards=1 clients=12
while [ $# -gt 0 ]; do
    case "$1" in
        --seeds) seeds="$2"; shift 2 ;;
        --from) from="$2"; shift 2 ;;
        --steps) steps="$2"; shift 2 ;;
        --shards) shards="$2"; shift 2 ;;
        --clients) clients="$2"; shift 2 ;;
        -h|--help) sed -n '2,6p' "$0"; exit 0 ;;
        *) echo "unknown argument: $1" >&2; exit 2 ;;
    esac
done
cd "$root"
cargo build --release -p ringmq-sim
exec target/release/ringmq-sim --seed "$from" --seeds "$seeds" --steps "$steps" \
    --shards "$shards" --clients "$clients"
