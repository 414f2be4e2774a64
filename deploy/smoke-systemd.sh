#!/usr/bin/env bash
# Proves deploy/ordersync.service by running it under systemd (PID 1 of the ordersync-test/systemd container,
# host network): installs a release binary, the unit, a configuration pointing at the sandbox and a throw-away
# database (its URL handed over with LoadCredential=), and checks that `systemctl start` returns after READY=1
# with orders flowing, that the unit stays up three watchdog periods without a restart, that `kill -9` is
# followed by a restart that loses and duplicates nothing, that `systemctl stop` is a clean exit within the
# deadline, and that the journal holds the JSON log. Prints `systemd-analyze security` of the real unit.
#
#   deploy/smoke-systemd.sh                          # from the repository root
#   ORDERSYNC_BIN=path deploy/smoke-systemd.sh       # use that release binary (default: cargo build --release)
#   SMOKE_BREAK=readiness deploy/smoke-systemd.sh    # READY=1 never arrives (no NOTIFY_SOCKET): must fail at start
#   SMOKE_BREAK=restart   deploy/smoke-systemd.sh    # Restart=no: must fail after kill -9
#
# This sandbox cannot give a service every namespace: a test-only drop-in turns off exactly the directive that
# fails here (see TEST_DROPIN below); `systemd-analyze verify` and `security` are run on the real unit.
# Engine: ../shared/tools/docker-up.sh when present, else any running engine; without one it says so and exits 0.
set -euo pipefail
cd "$(dirname "$0")/.."
NAME=smoke-systemd
WORK=$(mktemp -d /tmp/ordersync-smoke-systemd.XXXXXX)
chmod 0755 "$WORK"
. deploy/smoke-lib.sh
BREAK=${SMOKE_BREAK:-}
ORDERS_PER_API=${SMOKE_ORDERS:-40}
WATCHDOG=30  # WatchdogSec= of the unit
DEADLINE=30  # shutdown.deadline of config/default.toml
CONTAINER=ordersync-smoke-systemd-$$
ctr() { docker exec "$CONTAINER" "$@" </dev/null; }
ctri() { docker exec -i "$CONTAINER" "$@"; }
prop() { ctr systemctl show -p "$1" --value ordersync; }
cleanup() {
  if [ -n "${STARTED:-}" ]; then
    if [ "${OK:-}" != 1 ]; then
      say "last lines of the journal:"; ctr journalctl -u ordersync --no-pager -n 15 >&2 2>/dev/null || true
    fi
    docker rm -f "$CONTAINER" >/dev/null 2>&1 || true
  fi
  cleanup_common
}
trap cleanup EXIT

# The directives of deploy/ordersync.service that this unprivileged container cannot grant a service. Measured
# one by one under its systemd 252: ProtectSystem=, ProtectHome=, PrivateTmp=, PrivateDevices=, ProtectKernel*=,
# ProtectControlGroups=, ProtectProc=, ProcSubset=, ProtectClock=, ProtectHostname= and LoadCredential= start;
# PrivateUsers=yes (a user namespace) fails with status 217/USER. So the drop-in turns off exactly that.
TEST_DROPIN='[Service]
PrivateUsers=no
'

case "$BREAK" in ""|readiness|restart) ;; *) fail "SMOKE_BREAK must be readiness or restart, not $BREAK" ;; esac
if ! engine_up; then
  say "SKIPPED: no Docker engine (../shared/tools/docker-up.sh absent and \`docker info\` fails)"
  exit 0
fi
docker image inspect ordersync-test/systemd >/dev/null 2>&1 || fail "no image ordersync-test/systemd (../shared/tools/docker-up.sh builds it)"
t0=$(now)

BIN=${ORDERSYNC_BIN:-}
if [ -z "$BIN" ]; then
  say "cargo build --release --locked"
  cargo build --release --locked --bin ordersync >&2 || fail "cargo build --release failed"
  BIN=${CARGO_TARGET_DIR:-target}/release/ordersync
fi
[ -x "$BIN" ] || fail "no binary at $BIN"

start_database "$BIN"
start_sandbox "$BIN" "$ORDERS_PER_API"
say "database $DB_URL; sandbox with $EXPECTED_ORDERS orders"

docker run -d --name "$CONTAINER" --network=host --tmpfs /run --tmpfs /run/lock \
  -v /sys/fs/cgroup:/sys/fs/cgroup:ro ordersync-test/systemd >/dev/null || fail "cannot start the systemd container"
STARTED=1
state=
for _ in $(seq 1 60); do  # systemctl answers once systemd's bus is up
  state=$(ctr systemctl is-system-running 2>/dev/null || true)
  case "$state" in running|degraded) break ;; esac
  sleep 1
done
case "$state" in running|degraded) ;; *) fail "systemd in the container did not boot (state '$state')" ;; esac
say "ok: systemd is up in $CONTAINER ($state)"

# Install exactly as the unit's header says.
HTTP_PORT=$(free_port)
{
  printf '[database]\nurl = { file = "/run/credentials/ordersync.service/database-url" }\n\n'
  printf '[http]\nlisten = "127.0.0.1:%s"\n\n' "$HTTP_PORT"
  cat "$SANDBOX_TOML"
} >"$WORK/ordersync.toml"
printf '%s\n' "$DB_URL" >"$WORK/database-url"
docker cp "$BIN" "$CONTAINER:/usr/local/bin/ordersync" >/dev/null
docker cp deploy/ordersync.service "$CONTAINER:/etc/systemd/system/ordersync.service" >/dev/null
docker cp "$WORK/ordersync.toml" "$CONTAINER:/tmp/ordersync.toml" >/dev/null
docker cp "$WORK/database-url" "$CONTAINER:/tmp/database-url" >/dev/null
ctr sh -ec '
  useradd --system --no-create-home --shell /usr/sbin/nologin ordersync
  chown root:root /usr/local/bin/ordersync && chmod 0755 /usr/local/bin/ordersync
  install -d -m 0755 /etc/ordersync && install -m 0644 /tmp/ordersync.toml /etc/ordersync/ordersync.toml
  install -d -m 0700 /etc/ordersync/credentials
  install -m 0600 /tmp/database-url /etc/ordersync/credentials/database-url
  rm /tmp/ordersync.toml /tmp/database-url'
verify=$(ctr systemd-analyze verify /etc/systemd/system/ordersync.service 2>&1 | grep -v -e 'dbus' || true)
[ -z "$verify" ] || fail "systemd-analyze verify: $verify"
say "ok: systemd-analyze verify deploy/ordersync.service"
ctr mkdir -p /etc/systemd/system/ordersync.service.d
printf '%s' "$TEST_DROPIN" | ctri sh -c 'cat >/etc/systemd/system/ordersync.service.d/10-smoke-no-namespaces.conf'
case "$BREAK" in
  readiness) say "SMOKE_BREAK=readiness: the daemon runs without NOTIFY_SOCKET, so READY=1 never arrives"
    printf '[Service]\nExecStart=\nExecStart=/usr/bin/env -u NOTIFY_SOCKET /usr/local/bin/ordersync run\nTimeoutStartSec=20s\n' | ctri sh -c 'cat >/etc/systemd/system/ordersync.service.d/90-break.conf' ;;
  restart) say "SMOKE_BREAK=restart: Restart=no"
    printf '[Service]\nRestart=no\n' | ctri sh -c 'cat >/etc/systemd/system/ordersync.service.d/90-break.conf' ;;
esac
ctr systemctl daemon-reload

# 1. start returns only once READY=1 arrived, and orders flow.
t1=$(now)
ctr systemctl start ordersync || fail "systemctl start ordersync failed ($(prop Result)) after $(($(now) - t1))s"
active=$(prop ActiveState); sub=$(prop SubState)
[ "$active/$sub" = active/running ] || fail "after systemctl start the unit is $active/$sub, not active/running"
say "ok: systemctl start returned after READY=1 in $(($(now) - t1))s (active/running)"
ctr curl -fsS "http://127.0.0.1:$HTTP_PORT/readyz" >/dev/null || fail "/readyz does not answer 200 after start"
flowing=0
for _ in $(seq 1 30); do
  n=$(sql "select count(*) from orders" 2>/dev/null || echo 0)
  [ "${n:-0}" -gt 0 ] && { flowing=$n; break; }
  sleep 1
done
[ "$flowing" -gt 0 ] || fail "no order arrived within 30 s of start"
say "ok: orders flowing ($flowing after $(($(now) - t1))s)"
[ "$(ctr stat -c %U "/proc/$(prop MainPID)")" = ordersync ] || fail "the main process does not run as user ordersync"
say "ok: main process runs as user ordersync"

# 2. three watchdog periods, no restart.
say "waiting three watchdog periods ($((3 * WATCHDOG))s)"
sleep $((3 * WATCHDOG))
[ "$(prop NRestarts)" = 0 ] || fail "NRestarts=$(prop NRestarts) after three watchdog periods"
[ "$(prop ActiveState)" = active ] || fail "the unit is $(prop ActiveState) after three watchdog periods"
wait_orders 60 || fail "only $ORDERS of $EXPECTED_ORDERS orders after three watchdog periods"
say "ok: up three watchdog periods, NRestarts=0, all $ORDERS orders in"

# 3. kill -9: systemd restarts it; nothing lost, nothing twice.
pid=$(prop MainPID)
ctr sh -c "kill -9 $pid"
t3=$(now); newpid=
while [ $(($(now) - t3)) -lt 40 ]; do
  newpid=$(prop MainPID)
  [ "$(prop ActiveState)" = active ] && [ "$newpid" != 0 ] && [ "$newpid" != "$pid" ] && break
  newpid=
  sleep 1
done
[ -n "$newpid" ] || fail "kill -9 of pid $pid: not restarted within 40 s (unit $(prop ActiveState)/$(prop SubState), Result=$(prop Result))"
[ "$(prop NRestarts)" = 1 ] || fail "NRestarts=$(prop NRestarts) after one kill -9, not 1"
say "ok: kill -9 → restarted as pid $newpid in $(($(now) - t3))s, NRestarts=1"
sleep 10  # the restarted daemon polls every account at start
check_orders

# 4. stop: a clean exit within the deadline.
t4=$(now)
ctr systemctl stop ordersync || fail "systemctl stop failed"
took=$(($(now) - t4))
result=$(prop Result); code=$(prop ExecMainStatus)
[ "$result" = success ] && [ "$code" = 0 ] || fail "systemctl stop: Result=$result, exit status $code"
[ "$took" -le "$DEADLINE" ] || fail "systemctl stop took ${took}s, more than the deadline (${DEADLINE}s)"
say "ok: systemctl stop → exit 0 in ${took}s"

# 5. the journal holds the structured log.
ctr journalctl -u ordersync -o cat --no-pager | grep '^{' >"$WORK/journal.log" || true
check_log "$WORK/journal.log"
grep -q '"message":"shutting down"' "$WORK/journal.log" || fail "the journal lacks the shutdown line"

# 6. the real unit (without the drop-in), as systemd-analyze rates it.
ctr rm -rf /etc/systemd/system/ordersync.service.d
ctr systemctl daemon-reload
ctr systemd-analyze security --no-pager ordersync.service >"$WORK/security.txt" 2>&1 || true
score=$(sed -nE 's/.*Overall exposure level for [^:]*: ([0-9.]+).*/\1/p' "$WORK/security.txt")
[ -n "$score" ] || { cat "$WORK/security.txt" >&2; fail "systemd-analyze security gave no score"; }
grep -E '^✗' "$WORK/security.txt" | sed 's/^/  /' >&2 || true
awk -v s="$score" 'BEGIN { exit !(s <= 2.0) }' || fail "systemd-analyze security rates the unit $score, above 2.0"
say "ok: $(grep 'Overall exposure level' "$WORK/security.txt")"
OK=1
say "PASSED in $(($(now) - t0))s"
