#!/usr/bin/env bash
# A throwaway PostgreSQL instance for tests (the PostgreSQL control plane: `ringmq serve --store
# postgres://…`, the Rust store tests under RINGMQ_TEST_POSTGRES, tests/python/test_cluster_control.py).
#
#   bash scripts/pg-test-instance.sh start DIR PORT   # initdb (first time) + start; last line: the URL
#   bash scripts/pg-test-instance.sh stop DIR         # stop fast; harmless when not running
#   bash scripts/pg-test-instance.sh destroy DIR      # stop, then delete the cluster's files
#   bash scripts/pg-test-instance.sh status DIR       # exit 0 when running
#
# `start` creates a cluster (initdb -A trust -U postgres, locale C, UTF8) the first time and starts
# it listening on 127.0.0.1:PORT only (no other address; its unix socket in the cluster's own
# directory, never /var/run/postgresql), with fsync, synchronous_commit and full_page_writes off:
# fast, and a crash may lose it, which is fine for a test. It waits until the server accepts
# connections on PORT, then prints `postgres://postgres@127.0.0.1:PORT/postgres` as the last line
# of stdout (progress goes to stderr, so `url=$(… start DIR PORT)` works). `start` again on the
# same DIR (after `stop`) restarts the same cluster, its data kept, on PORT.
#
# Binaries: PG_BIN when set, else the newest /usr/lib/postgresql/<version>/bin (Debian's
# `postgresql`, installed by scripts/install-test-deps.sh), else initdb and pg_ctl on PATH.
#
# Root: PostgreSQL refuses to run as root, so as root the server (and initdb) run as the
# `postgres` OS user (runuser, else su), and DIR is chowned to it. That user must be able to reach
# the cluster's files, which it cannot below a root-only directory such as pytest's tmp_path
# (/tmp/pytest-of-root is mode 0700). Rather than widen someone else's directories (chmod o+x on
# the parents: pytest narrows its own back on the next run, and it would open them to every user),
# the cluster then lives in a fresh `mktemp -d /tmp/ringmq-pg.XXXXXX` (/tmp is world-traversable),
# owned by postgres, and DIR keeps only a file `pg-location` naming it. The same happens when DIR's
# path is too long for a unix socket's path (about 107 bytes). `destroy` deletes that directory too;
# `stop` alone keeps it (a later `start DIR PORT` resumes it), so call `destroy` when done.
#
# Not root: everything runs as the current user, in DIR (or the /tmp fallback when DIR's path is
# too long for the socket).
set -euo pipefail

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }

die() { echo "pg-test-instance: $*" >&2; exit 1; }
say() { echo "pg-test-instance: $*" >&2; }

is_root() { [ "$(id -u)" = 0 ]; }

# Runs a command as the postgres OS user when root, else as ourselves; from / so that a cwd the
# postgres user cannot read (root's) draws no warnings.
as_pg() {
  if is_root; then
    if command -v runuser >/dev/null 2>&1; then
      (cd / && runuser -u postgres -- "$@")
    else
      # su hands the arguments after the user to the shell, which gets them as "$0" "$@": no
      # quoting needed (`--` first, or su would read the command's own options as its).
      # shellcheck disable=SC2016
      (cd / && su -s /bin/sh -c 'exec "$0" "$@"' -- postgres "$@")
    fi
  else
    (cd / && "$@")
  fi
}

find_bin() {
  if [ -n "${PG_BIN:-}" ]; then
    [ -x "$PG_BIN/initdb" ] || die "PG_BIN=$PG_BIN has no initdb"
    echo "$PG_BIN"
    return
  fi
  local newest
  newest=$(for d in /usr/lib/postgresql/*/bin; do [ -x "$d/initdb" ] && echo "$d"; done | sort -V | tail -1)
  if [ -n "$newest" ]; then
    echo "$newest"
  elif command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1; then
    dirname "$(command -v initdb)"
  else
    die "no PostgreSQL binaries (initdb, pg_ctl) under /usr/lib/postgresql/*/bin or on PATH: run scripts/install-test-deps.sh (Debian package postgresql)"
  fi
}

# The directory holding the cluster (data/, server.log, the unix socket): DIR itself, or the
# directory its pg-location file names.
base_of() {
  local dir=$1
  if [ -f "$dir/pg-location" ]; then
    cat "$dir/pg-location"
  else
    echo "$dir"
  fi
}

# Whether the postgres user (or we) can create files in DIR, and DIR's path leaves room for the
# socket's name (.s.PGSQL.65535 plus its lock file's suffix) within sun_path's 108 bytes.
usable_in_place() {
  local dir=$1
  [ $(( ${#dir} + 21 )) -le 107 ] || return 1
  as_pg test -w "$dir" -a -x "$dir" 2>/dev/null
}

cmd_start() {
  [ $# -eq 2 ] || die "usage: start DIR PORT"
  local dir=$1 port=$2
  case "$port" in ''|*[!0-9]*) die "PORT must be a number, not '$port'" ;; esac
  if [ "$port" -lt 1 ] || [ "$port" -gt 65535 ]; then die "PORT $port is out of range"; fi
  is_root && { id postgres >/dev/null 2>&1 || die "running as root, but there is no 'postgres' user to run the server as"; }
  local bin
  bin=$(find_bin)
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd -P)

  local base
  if [ -f "$dir/pg-location" ]; then
    base=$(cat "$dir/pg-location")
    [ -d "$base/data" ] || die "$dir/pg-location names $base, which has no cluster (deleted?); remove $dir/pg-location to start afresh"
  else
    is_root && chown postgres: "$dir"
    if usable_in_place "$dir"; then
      base=$dir
    else
      base=$(mktemp -d /tmp/ringmq-pg.XXXXXX)
      chmod 700 "$base"
      is_root && chown postgres: "$base"
      printf '%s\n' "$base" >"$dir/pg-location"
      say "the postgres user cannot use $dir (a root-only parent, or too long a path for a socket): the cluster lives in $base"
    fi
  fi

  if [ ! -f "$base/data/PG_VERSION" ]; then
    say "initdb in $base/data ($bin)"
    if ! as_pg "$bin/initdb" -D "$base/data" -A trust -U postgres -N --locale=C -E UTF8 >"$dir/initdb.log" 2>&1; then
      cat "$dir/initdb.log" >&2
      die "initdb failed"
    fi
    # Settings that change per start (the port) go to a file of ours, rewritten on every start.
    printf "\ninclude_if_exists = 'ringmq-test.conf'\n" | as_pg tee -a "$base/data/postgresql.conf" >/dev/null
  fi

  if as_pg "$bin/pg_ctl" -D "$base/data" status >/dev/null 2>&1; then
    die "already running in $base/data (stop it first)"
  fi

  local sockdir=${base//\'/\'\'}
  as_pg tee "$base/data/ringmq-test.conf" >/dev/null <<EOF
# Written by scripts/pg-test-instance.sh on every start: a throwaway test instance.
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$sockdir'
fsync = off
synchronous_commit = off
full_page_writes = off
max_connections = 200
log_min_messages = warning
EOF

  say "starting on 127.0.0.1:$port"
  if ! as_pg "$bin/pg_ctl" -D "$base/data" -l "$base/server.log" -w -t 30 start >/dev/null 2>&1; then
    tail -n 30 "$base/server.log" >&2 2>/dev/null || true
    # It may have half-started (pg_ctl gave up waiting): leave nothing behind.
    as_pg "$bin/pg_ctl" -D "$base/data" -m immediate -w -t 10 stop >/dev/null 2>&1 || true
    die "the server did not start on 127.0.0.1:$port (log: $base/server.log)"
  fi
  # pg_ctl waited for the server to be ready; make sure it is the one answering on the TCP port.
  local deadline=$(( $(date +%s) + 30 ))
  until "$bin/pg_isready" -q -h 127.0.0.1 -p "$port" -U postgres -d postgres -t 2; do
    if [ "$(date +%s)" -ge "$deadline" ]; then
      tail -n 30 "$base/server.log" >&2 2>/dev/null || true
      as_pg "$bin/pg_ctl" -D "$base/data" -m immediate -w -t 10 stop >/dev/null 2>&1 || true
      die "the server started but 127.0.0.1:$port does not accept connections"
    fi
    sleep 0.1
  done
  echo "postgres://postgres@127.0.0.1:$port/postgres"
}

cmd_stop() {
  [ $# -eq 1 ] || die "usage: stop DIR"
  local dir=$1 base bin
  [ -d "$dir" ] || { say "$dir does not exist: nothing to stop"; return 0; }
  base=$(base_of "$dir")
  [ -f "$base/data/PG_VERSION" ] || { say "no cluster in $base: nothing to stop"; return 0; }
  bin=$(find_bin)
  if ! as_pg "$bin/pg_ctl" -D "$base/data" status >/dev/null 2>&1; then
    say "not running"
    return 0
  fi
  # fast: open connections (the brokers') are cut at once; immediate if even that hangs.
  as_pg "$bin/pg_ctl" -D "$base/data" -m fast -w -t 10 stop >/dev/null 2>&1 \
    || as_pg "$bin/pg_ctl" -D "$base/data" -m immediate -w -t 10 stop >/dev/null 2>&1 \
    || die "could not stop the server in $base/data"
  say "stopped"
}

cmd_destroy() {
  [ $# -eq 1 ] || die "usage: destroy DIR"
  local dir=$1 base
  cmd_stop "$dir"
  [ -d "$dir" ] || return 0
  base=$(base_of "$dir")
  if [ "$base" != "$dir" ]; then
    case "$base" in
      /tmp/ringmq-pg.*) rm -rf "$base" ;;
      *) die "$dir/pg-location names $base, not a directory this script made: not deleting it" ;;
    esac
    rm -f "$dir/pg-location"
  fi
  rm -rf "$dir/data" "$dir/server.log" "$dir/initdb.log"
}

cmd_status() {
  [ $# -eq 1 ] || die "usage: status DIR"
  local base bin
  base=$(base_of "$1")
  [ -f "$base/data/PG_VERSION" ] || return 3
  bin=$(find_bin)
  as_pg "$bin/pg_ctl" -D "$base/data" status >/dev/null 2>&1
}

[ $# -ge 1 ] || { usage >&2; exit 2; }
action=$1
shift
case "$action" in
  start) cmd_start "$@" ;;
  stop) cmd_stop "$@" ;;
  destroy) cmd_destroy "$@" ;;
  status) cmd_status "$@" ;;
  -h|--help|help) usage ;;
  *) usage >&2; exit 2 ;;
esac
