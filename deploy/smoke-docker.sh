#!/usr/bin/env bash
# Proves the Docker image by running it: builds deploy/Dockerfile, runs the image with --network=host against a
# throw-away database and the sandbox (the five fake marketplaces), and checks that the health check turns
# healthy, the orders arrive, the process is not root, the log is JSON without a secret, and `docker stop`
# exits 0 within the shutdown deadline. Prints the image's size. Then it validates deploy/docker-compose.yml
# (both profiles) with `docker compose config` or `docker-compose config`, runs the image's `demo` command as
# the compose demo service does, and checks the dependencies' layer: the build of the real sources compiled
# only ordersync (read off the build's log), and after a change under src/ the `deps` stage comes from the
# cache (the same image id). It builds with DOCKER_BUILDKIT=0, the builder this engine has.
# Disk: under the engine's vfs storage every layer is a whole copy of its file system (the build stage's are
# a toolchain and a target directory, gigabytes each), so the script says how much room the engine has, keeps
# the `deps` stage under the name ordersync-smoke-cache:deps for the next run, and on exit removes the
# engine's images without a name (`docker image prune`): this run's build stages and the images it replaced.
#
#   deploy/smoke-docker.sh                      # from the repository root
#   DATABASE_URL=postgres://… deploy/smoke-docker.sh   # a fresh database on that server instead of a private cluster
#   SMOKE_BREAK=health   deploy/smoke-docker.sh # the listener is turned off: must fail "never healthy"
#   SMOKE_BREAK=shutdown deploy/smoke-docker.sh # stop signal the process ignores: must fail "docker stop"
#
# Engine: ../shared/tools/docker-up.sh when present, else any running engine; without one it says so and exits 0.
# Environment: SMOKE_IMAGE (tag, default ordersync:smoke), SMOKE_BIN_OUT (copy the image's binary there, for
# deploy/smoke-systemd.sh), SMOKE_ORDERS (orders per fake marketplace, default 40), SMOKE_NO_BUILD=1 (reuse an
# existing $SMOKE_IMAGE instead of building it, and skip the check of the dependencies' layer).
set -euo pipefail
cd "$(dirname "$0")/.."
NAME=smoke-docker
export DOCKER_BUILDKIT=0
WORK=$(mktemp -d /tmp/ordersync-smoke-docker.XXXXXX)
chmod 0755 "$WORK"
. deploy/smoke-lib.sh
IMAGE=${SMOKE_IMAGE:-ordersync:smoke}
BREAK=${SMOKE_BREAK:-}
ORDERS_PER_API=${SMOKE_ORDERS:-40}
DEADLINE=30  # shutdown.deadline of config/default.toml
CONTAINER=ordersync-smoke-$$
DEPS_CACHE=ordersync-smoke-cache:deps
cleanup() {
  if [ -n "${STARTED:-}" ]; then
    docker logs "$CONTAINER" >"$WORK/container.log" 2>&1 || true
    [ "${OK:-}" = 1 ] || { say "last lines of the container's log:"; tail -n 15 "$WORK/container.log" >&2; }
    docker rm -f "$CONTAINER" >/dev/null 2>&1 || true
  fi
  [ -z "${ENGINE:-}" ] || docker image prune -f >/dev/null 2>&1 || true
  cleanup_common
}
trap cleanup EXIT
# A stage's image id, built from the cache the image's build left (the context unchanged).
stage_image() {
  docker build -q --force-rm --network=host --target "$1" -f "$ctx/deploy/Dockerfile" "$ctx" 2>>"$WORK/stages.log" \
    || { tail -n 20 "$WORK/stages.log" >&2; fail "the build of the $1 stage failed"; }
}

case "$BREAK" in ""|health|shutdown) ;; *) fail "SMOKE_BREAK must be health or shutdown, not $BREAK" ;; esac
if ! engine_up; then
  say "SKIPPED: no Docker engine (../shared/tools/docker-up.sh absent and \`docker info\` fails)"
  exit 0
fi
ENGINE=1
# Measured under vfs: a build that compiles the dependencies too takes about 12 GB at its peak, one that
# finds them in $DEPS_CACHE about 7 GB; reusing an image takes little.
if [ "${SMOKE_NO_BUILD:-}" = 1 ]; then report_docker_disk 2
elif docker image inspect "$DEPS_CACHE" >/dev/null 2>&1; then report_docker_disk 9
else report_docker_disk 14
fi
t0=$(now)
# The build context as it is now (Dockerfile, .dockerignore and what that lets in), for both builds.
ctx=$WORK/context
mkdir -p "$ctx/config" "$ctx/deploy"
cp -R Cargo.toml Cargo.lock src migrations .dockerignore "$ctx/"
cp config/default.toml "$ctx/config/"
cp deploy/Dockerfile "$ctx/deploy/"

if [ "${SMOKE_NO_BUILD:-}" = 1 ] && docker image inspect "$IMAGE" >/dev/null 2>&1; then
  say "SMOKE_NO_BUILD=1: using the existing image $IMAGE"
else
  say "docker build -f deploy/Dockerfile -t $IMAGE (a snapshot of the context)"
  # From the snapshot with a change no earlier build saw, so that the step building the real sources runs
  # (and its output can be checked below) even when an earlier run left everything in the cache.
  printf '\n// smoke-docker.sh: build %s\n' "$(date +%s%N)" >>"$ctx/src/main.rs"
  docker build --force-rm --network=host -f "$ctx/deploy/Dockerfile" -t "$IMAGE" "$ctx" >"$WORK/build.log" 2>&1 \
    || { tail -n 30 "$WORK/build.log" >&2; fail "docker build failed"; }
  # Kept under a name as the next run's cache, whatever this run finds below; the images this run and
  # earlier ones left without a name (build stages, replaced images: whole copies each under vfs) are
  # removed at exit.
  deps_image=$(stage_image deps)
  docker tag "$deps_image" "$DEPS_CACHE"
fi
t_build=$(($(now) - t0))
size=$(docker image inspect -f '{{.Size}}' "$IMAGE")
say "ok: built $IMAGE in ${t_build}s; image size $((size / 1000000)) MB"

BIN=$WORK/ordersync
binary_from_image "$IMAGE" "$BIN"
[ -n "${SMOKE_BIN_OUT:-}" ] && install -m 0755 "$BIN" "$SMOKE_BIN_OUT"
start_database "$BIN"
start_sandbox "$BIN" "$ORDERS_PER_API"
say "database $DB_URL; sandbox with $EXPECTED_ORDERS orders"

# The operator's file: the sandbox's accounts (their fake secrets as literals, as the sandbox prints them);
# the database URL comes from the environment.
cp "$SANDBOX_TOML" "$WORK/ordersync.toml"
chmod 0644 "$WORK/ordersync.toml"
HTTP_PORT=$(free_port)
extra=()
case "$BREAK" in
  health) extra+=(-e ORDERSYNC__HTTP__ENABLED=false); say "SMOKE_BREAK=health: the health endpoint is turned off" ;;
  shutdown) extra+=(--stop-signal SIGUSR2); say "SMOKE_BREAK=shutdown: the container is stopped with a signal it ignores" ;;
esac
# The image's HEALTHCHECK probes every 30 s; the smoke test probes every 2 s (same command).
docker run -d --name "$CONTAINER" --network=host \
  --stop-timeout $((DEADLINE + 15)) --health-interval 2s --health-start-period 60s \
  -e DATABASE_URL="$DB_URL" \
  -e ORDERSYNC_CONFIG=/etc/ordersync/ordersync.toml \
  -e ORDERSYNC__HTTP__LISTEN="127.0.0.1:$HTTP_PORT" \
  -v "$WORK/ordersync.toml:/etc/ordersync/ordersync.toml:ro" \
  "${extra[@]}" "$IMAGE" >/dev/null || fail "docker run failed"
STARTED=1

t1=$(now); health=starting
while [ $(($(now) - t1)) -lt 60 ]; do
  health=$(docker inspect -f '{{.State.Health.Status}}' "$CONTAINER")
  state=$(docker inspect -f '{{.State.Status}}' "$CONTAINER")
  [ "$health" = healthy ] && break
  [ "$state" = running ] || fail "the container stopped ($state) before it was healthy"
  [ "$health" = unhealthy ] && break
  sleep 1
done
[ "$health" = healthy ] || fail "the container never became healthy (health: $health; last probe: $(docker inspect -f '{{with .State.Health}}{{range .Log}}{{.Output}}{{end}}{{end}}' "$CONTAINER" | tail -n 2 | tr '\n' ' '))"
say "ok: healthy after $(($(now) - t1))s"

wait_orders 90 || fail "only $ORDERS of the sandbox's $EXPECTED_ORDERS orders arrived in 90 s"
check_orders

uid=$(docker exec "$CONTAINER" awk '/^Uid:/ {print $2}' /proc/1/status)
[ -n "$uid" ] && [ "$uid" != 0 ] || fail "the daemon runs as root (uid '$uid')"
say "ok: the daemon (pid 1 in the container) runs as uid $uid"

t2=$(now)
docker stop "$CONTAINER" >/dev/null || fail "docker stop failed"
took=$(($(now) - t2))
code=$(docker inspect -f '{{.State.ExitCode}}' "$CONTAINER")
[ "$code" = 0 ] || fail "docker stop: the daemon exited with $code after ${took}s (killed after the stop timeout?), not 0"
[ "$took" -le "$DEADLINE" ] || fail "docker stop took ${took}s, more than the shutdown deadline (${DEADLINE}s)"
say "ok: docker stop → exit 0 in ${took}s"

docker logs "$CONTAINER" >"$WORK/container.log" 2>&1
check_log "$WORK/container.log"

# docker-compose.yml: valid as written, in both profiles (with the env file a user copies from the example).
compose=()
if docker compose version >/dev/null 2>&1; then compose=(docker compose)
elif command -v docker-compose >/dev/null 2>&1; then compose=(docker-compose)
fi
if [ ${#compose[@]} -gt 0 ]; then
  mkdir -p "$WORK/compose"
  cp deploy/docker-compose.yml deploy/ordersync.toml "$WORK/compose/"
  cp deploy/ordersync.env.example "$WORK/compose/ordersync.env"
  for profile in default demo; do
    "${compose[@]}" -f "$WORK/compose/docker-compose.yml" --profile "$profile" config -q \
      || fail "${compose[*]} config: deploy/docker-compose.yml is not valid (profile $profile)"
  done
  services=$("${compose[@]}" -f "$WORK/compose/docker-compose.yml" --profile demo config --services | sort | tr '\n' ' ')
  [ "$services" = "demo ordersync postgres " ] || fail "the compose services are '$services'"
  say "ok: ${compose[*]} config: deploy/docker-compose.yml is valid, services: $services"
else
  say "SKIPPED the compose check: neither \`docker compose\` nor docker-compose is installed"
fi

# The compose demo service's command: `ordersync demo` on a database of its own, stopped by its duration.
DEMO_DB=ordersync_smoke_demo
sql "create database $DEMO_DB" >/dev/null
DEMO_URL=$(python3 -c 'import sys,urllib.parse as u; p=u.urlsplit(sys.argv[1]); print(u.urlunsplit(p._replace(path="/"+sys.argv[2])))' "$DB_URL" "$DEMO_DB")
docker run --rm --network=host -e DATABASE_URL="$DEMO_URL" -e ORDERSYNC__HTTP__LISTEN=127.0.0.1:0 \
  "$IMAGE" demo --duration 15s --orders 20 >"$WORK/demo.log" 2>&1 || { tail -n 15 "$WORK/demo.log" >&2; fail "the image's demo command failed"; }
demo_orders=$(psql "$DEMO_URL" -qAtX -c "select count(*) from orders")
[ "$demo_orders" -ge 100 ] || { tail -n 15 "$WORK/demo.log" >&2; fail "the demo synced only $demo_orders orders, not the sandbox's 5 x 20"; }
say "ok: \`docker run $IMAGE demo\` synced $demo_orders orders and exited 0"

# The dependencies' layer serves every source change: the real build step compiled nothing but ordersync
# (the dummy build covered every dependency), and after a change under src/ the `deps` stage comes
# entirely from the cache. The first is read off the build's log (the classic builder, forced above, prints
# each step's output under its `Step N/M : INSTRUCTION` line); no container is made from the build stages,
# whose file systems (a toolchain and a target directory) the engine's vfs storage would copy whole.
if [ "${SMOKE_NO_BUILD:-}" = 1 ]; then
  say "SMOKE_NO_BUILD=1: no check of the dependencies' layer"
else
  # The crates cargo compiled in the step that builds the real sources (the one that runs `touch src/...`);
  # the builder wraps what a step writes to stderr in colour codes, taken off first.
  compiled=$(sed 's/\x1b\[[0-9;]*m//g' "$WORK/build.log" \
    | awk '/^Step [0-9]+\/[0-9]+ : / { real = /: RUN touch src\// } real && $1 == "Compiling" { print $2 }' \
    | sort -u | tr '\n' ' ')
  [ "$compiled" = "ordersync " ] || fail "the build step of the real sources compiled: ${compiled:-nothing}(expected only ordersync)"
  printf '\n// smoke-docker.sh: a source change, %s\n' "$(date +%s%N)" >>"$ctx/src/main.rs"
  [ "$(stage_image deps)" = "$deps_image" ] \
    || fail "after a change under src/ the dependencies' layer was built again, not taken from the cache"
  say "ok: the build of the real sources compiled only ordersync, and a change under src/ keeps the dependencies' layer"
fi
OK=1
say "PASSED in $(($(now) - t0))s (build ${t_build}s); image $IMAGE: $((size / 1000000)) MB"
