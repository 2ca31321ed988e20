#!/usr/bin/env bash
# Runs the @ringmq/sdk tests against a real broker: the staleness checks of the generated types and
# dist/, then `node --test` (client over TCP and WebSocket, every API resource, streams, OpenAPI
# schemas against live answers, and the SDK in headless Chromium).
#   RINGMQ_BIN   the broker binary (default <repo>/target/debug/ringmq)
#   extra arguments go to `node --test` (e.g. --test-name-pattern=stream)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
export RINGMQ_BIN="${RINGMQ_BIN:-$repo/target/debug/ringmq}"
case "$RINGMQ_BIN" in /*) ;; *) RINGMQ_BIN="$repo/$RINGMQ_BIN" ;; esac
cd "$here"

# npm ci when node_modules is missing or package-lock.json changed since the last install.
stamp=node_modules/.ringmq-sdk-lock.sha256
want="$(sha256sum package-lock.json | cut -d' ' -f1)"
if [[ ! -d node_modules || "$(cat "$stamp" 2>/dev/null || true)" != "$want" ]]; then
  npm ci --no-audit --no-fund --loglevel=error
  echo "$want" > "$stamp"
fi

if [[ ! -x "$RINGMQ_BIN" ]]; then
  echo "ringmq binary not found or not executable at $RINGMQ_BIN: build it with cargo build or set RINGMQ_BIN" >&2
  exit 3
fi
if [[ ! -x /usr/bin/chromium ]]; then
  echo "/usr/bin/chromium is needed for test/browser.test.mjs (apt-get install chromium)" >&2
  exit 3
fi

node scripts/gen-types.mjs --check
node scripts/check-dist.mjs
exec timeout 600 node --test --test-concurrency=2 --test-timeout=120000 "$@" test/*.test.mjs
