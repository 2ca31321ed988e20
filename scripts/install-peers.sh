#!/usr/bin/env bash
# Installs the peer brokers that scripts/bench-compare.sh measures ringmq against:
# mosquitto (Debian package) and rumqttd 0.20.0 (cargo install into a cache directory).
# Idempotent: each step is skipped when its binary is already there, because the rumqttd build
# takes 3-5 minutes.
#
# Usage: scripts/install-peers.sh [CACHE_DIR]
#   CACHE_DIR defaults to $RINGMQ_PEERS_DIR, else $HOME/.cache/ringmq-peers.
#   rumqttd ends up at CACHE_DIR/bin/rumqttd.
set -euo pipefail

cache_dir="${1:-${RINGMQ_PEERS_DIR:-$HOME/.cache/ringmq-peers}}"
rumqttd_version="0.20.0"
mkdir -p "$cache_dir"

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

if command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ]; then
    echo "mosquitto: already installed ($(command -v mosquitto || echo /usr/sbin/mosquitto))"
else
    echo "mosquitto: installing the Debian package"
    as_root apt-get update
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends mosquitto
fi

rumqttd_bin="$cache_dir/bin/rumqttd"
if [ -x "$rumqttd_bin" ] && "$rumqttd_bin" --version 2>/dev/null | grep -q "$rumqttd_version"; then
    echo "rumqttd: already installed ($rumqttd_bin)"
elif [ -x "$rumqttd_bin" ]; then
    # Older rumqttd builds may not print a version; trust the cache marker we write below.
    if [ -f "$cache_dir/.rumqttd-$rumqttd_version" ]; then
        echo "rumqttd: already installed ($rumqttd_bin)"
    else
        echo "rumqttd: $rumqttd_bin is not $rumqttd_version, reinstalling"
        cargo install rumqttd --version "$rumqttd_version" --root "$cache_dir" --force
        touch "$cache_dir/.rumqttd-$rumqttd_version"
    fi
else
    # Without --locked: the locked dependency set of 0.20.0 does not build on current Rust.
    echo "rumqttd: cargo install rumqttd $rumqttd_version (3-5 minutes)"
    cargo install rumqttd --version "$rumqttd_version" --root "$cache_dir"
    touch "$cache_dir/.rumqttd-$rumqttd_version"
fi

echo "peers ready: mosquitto=$(command -v mosquitto || echo /usr/sbin/mosquitto) rumqttd=$rumqttd_bin"
