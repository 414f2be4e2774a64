# Shared by deploy/smoke-docker.sh and deploy/smoke-systemd.sh (sourced, not run): the engine, a throw-away
# database, the sandbox, and the checks both make. Expects NAME (the script's name for messages) and WORK (a
# scratch directory, removed at exit) to be set.

say() { printf '%s: %s\n' "$NAME" "$*" >&2; }
fail() { printf '%s: FAIL: %s\n' "$NAME" "$*" >&2; exit 1; }
now() { date +%s; }

# engine_up: 0 when a Docker engine answers (started with ../shared/tools/docker-up.sh when present), 1 otherwise.
engine_up() {
  local up=../shared/tools/docker-up.sh
  if [ -x "$up" ]; then
    "$up" >&2 || fail "$up could not bring up a Docker engine"
  fi
  command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1
}

# report_docker_disk NEED_GB: says how much room the engine's storage has, and fails, naming the shortfall,
# when it is under NEED_GB (or SMOKE_MIN_FREE_GB when set).
report_docker_disk() {
  local root free_gb need=${SMOKE_MIN_FREE_GB:-$1}
  root=$(docker info -f '{{.DockerRootDir}}' 2>/dev/null) || return 0
  free_gb=$(df -Pk "$root" | awk 'NR == 2 { print int($4 / 1048576) }')
  say "the engine's storage ($root): ${free_gb} GB free, ${need} GB needed"
  [ "$free_gb" -ge "$need" ] || fail "the engine's storage ($root) has ${free_gb} GB free, less than the ${need} GB this run needs (SMOKE_MIN_FREE_GB overrides)"
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' 2>/dev/null \
    || echo $((20000 + RANDOM % 20000))
}

# The image's binary, copied out to run the sandbox and the throw-away database on the host (one release build
# serves both smoke scripts). Usage: binary_from_image IMAGE DEST
binary_from_image() {
  local cid
  cid=$(docker create "$1") || fail "cannot create a container from $1"
  docker cp "$cid:/usr/local/bin/ordersync" "$2" >/dev/null || { docker rm "$cid" >/dev/null; fail "cannot copy the binary out of $1"; }
  docker rm "$cid" >/dev/null
  chmod 0755 "$2"
}

# start_database BIN: sets DB_URL to a fresh, empty database. With DATABASE_URL: a new database on that server
# (dropped at exit); otherwise a private cluster of the machine's PostgreSQL binaries (`ordersync demo --db-only`).
start_database() {
  local bin=$1
  if [ -n "${DATABASE_URL:-}" ]; then
    local db="ordersync_smoke_$$_$(now)"
    psql "$DATABASE_URL" -qAtc "create database $db" >/dev/null || fail "cannot create database $db on DATABASE_URL"
    DB_URL=$(python3 -c 'import sys,urllib.parse as u; p=u.urlsplit(sys.argv[1]); print(u.urlunsplit(p._replace(path="/"+sys.argv[2])))' "$DATABASE_URL" "$db")
    DROP_DB=$db
    return
  fi
  mkdir -p "$WORK/pg"; : >"$WORK/db.out"
  "$bin" demo --db-only --data-dir "$WORK/pg" >"$WORK/db.out" 2>"$WORK/db.err" &
  DB_PID=$!
  for _ in $(seq 1 60); do
    DB_URL=$(awk '/^  psql /{print $2; exit}' "$WORK/db.out")
    [ -n "$DB_URL" ] && return
    kill -0 "$DB_PID" 2>/dev/null || break
    sleep 1
  done
  cat "$WORK/db.err" >&2
  fail "the throw-away PostgreSQL did not start (ordersync demo --db-only); or set DATABASE_URL"
}

# start_sandbox BIN ORDERS: the five fake marketplaces on a free port; SANDBOX_TOML holds their accounts and
# SECRETS their (fake) secrets, one a line, which no log may contain.
start_sandbox() {
  local bin=$1 orders=$2 port
  port=$(free_port); : >"$WORK/sandbox.out"
  "$bin" sandbox --port "$port" --orders "$orders" >"$WORK/sandbox.out" 2>"$WORK/sandbox.err" &
  SANDBOX_PID=$!
  for _ in $(seq 1 30); do
    grep -q '^\[\[accounts\]\]' "$WORK/sandbox.out" && grep -q '^lang' "$WORK/sandbox.out" && break
    kill -0 "$SANDBOX_PID" 2>/dev/null || { cat "$WORK/sandbox.err" >&2; fail "the sandbox did not start"; }
    sleep 1
  done
  SANDBOX_TOML=$WORK/sandbox.toml
  sed -n '/^\[\[accounts\]\]/,$p' "$WORK/sandbox.out" >"$SANDBOX_TOML"
  SECRETS=$WORK/secrets
  sed -nE 's/^(access_token|api_key|api_password|token|secret_key|password) = "(.*)"$/\2/p' "$SANDBOX_TOML" | sort -u >"$SECRETS"
  [ -s "$SECRETS" ] || fail "found no secrets in the sandbox's configuration"
  EXPECTED_ORDERS=$((orders * 5))
}

sql() { psql "$DB_URL" -qAtX -c "$1"; }

# wait_orders SECONDS: until every one of the sandbox's orders is in the database (or the time is up).
wait_orders() {
  local until=$(($(now) + $1)) n=0
  while [ "$(now)" -lt "$until" ]; do
    n=$(sql "select count(*) from orders" 2>/dev/null || echo 0)
    [ "${n:-0}" -ge "$EXPECTED_ORDERS" ] && { ORDERS=$n; return 0; }
    sleep 1
  done
  ORDERS=$n
  return 1
}

# check_orders: exactly the sandbox's orders, none twice.
check_orders() {
  local n dup
  n=$(sql "select count(*) from orders")
  dup=$(sql "select count(*) from (select account_id, external_id from orders group by 1, 2 having count(*) > 1) d")
  [ "$dup" = 0 ] || fail "$dup external ids are stored more than once"
  [ "$n" = "$EXPECTED_ORDERS" ] || fail "$n orders in the database, the sandbox has $EXPECTED_ORDERS"
  say "ok: $n orders in the database, the sandbox's $EXPECTED_ORDERS, no external id twice"
}

# check_log FILE: every line is a JSON object, and none holds a sandbox secret or the database URL's password.
check_log() {
  local file=$1 lines bad
  lines=$(grep -c . "$file" || true)
  [ "$lines" -gt 0 ] || fail "the log is empty"
  bad=$(grep . "$file" | jq -R 'fromjson? | objects | select(has("timestamp")) | 1' 2>/dev/null | grep -c . || true)
  [ "$bad" = "$lines" ] || { grep . "$file" | head -5 >&2; fail "$((lines - bad)) of $lines log lines are not JSON objects with a timestamp"; }
  while IFS= read -r secret; do
    grep -qF -- "$secret" "$file" && fail "the log holds a secret of the sandbox (${secret:0:3}…)"
  done <"$SECRETS"
  say "ok: $lines log lines, all JSON, no secret among them"
}

cleanup_common() {
  [ -n "${SANDBOX_PID:-}" ] && kill "$SANDBOX_PID" 2>/dev/null && wait "$SANDBOX_PID" 2>/dev/null
  [ -n "${DB_PID:-}" ] && kill "$DB_PID" 2>/dev/null && wait "$DB_PID" 2>/dev/null
  [ -n "${DROP_DB:-}" ] && psql "$DATABASE_URL" -qAtc "drop database if exists $DROP_DB" >/dev/null 2>&1
  rm -rf "$WORK"
}
