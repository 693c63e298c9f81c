#!/bin/bash
# Build the harpbridge image from a prebuilt binary and check that it works.
#
#   deploy/check-image.sh                 (from anywhere; needs a running Docker daemon)
#
# What it checks, each one a line "ok …" or a failure that stops the script:
#   1. the image: root user, /start.sh entrypoint, `serve` by default, a healthcheck,
#      4001/tcp+udp exposed, the persistent-storage volume, bash curl pgrep and a CA store
#   2. `harpbridge --help` runs through the entrypoint
#   3. `serve` (AppAPI's environment, no HaRP) answers GET /heartbeat and turns healthy;
#      `docker stop` ends it with exit code 0
#   4. under HaRP's environment the entrypoint writes a /frpc.toml that parses as TOML and
#      holds the key, the port and the unix socket (and refuses to start without frpc)
#   5. `node` and `cache` start on the persistent volume and print their PeerId and
#      listen address; `id` on the same volume shows the same PeerId afterwards
#
# It does not compile inside Docker: the image is the Dockerfile's `runtime` stage plus a
# binary built on this machine (deploy/Dockerfile.prebuilt), so no Rust image is needed.
# The base image is debian:$SUITE-slim when Docker has it or can pull it; otherwise
# (no registry access) one is made with debootstrap --variant=minbase from a Debian mirror
# and `docker import`ed under a name of its own (root and the debootstrap package needed).
#
# Settings (environment):
#   HARPBRIDGE_BIN   the binary (default: $CARGO_TARGET_DIR or ./target, release/harpbridge;
#                    built with `cargo build --release --locked` when missing)
#   INSTALL_FRPC     true downloads and checks frpc as the real image does (needs GitHub);
#                    default false
#   RUNTIME_BASE     a base image to use as it is
#   DEBIAN_MIRROR    for debootstrap (default http://deb.debian.org/debian)
#   KEEP_IMAGES=1    keep the images afterwards (a re-run then skips debootstrap)
#
# Containers use --network host: bridge networks may be unavailable (a dockerd started
# with --bridge=none), and host networking is how an office runs the image anyway.
# Containers, volumes and images it made are removed on exit.
set -euo pipefail

SUITE=bookworm
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
TAG=harpbridge-check
BUILT_BASE=$TAG/debian:$SUITE-minbase
INSTALL_FRPC=${INSTALL_FRPC:-false}

WORK=$(mktemp -d)
CONTAINERS=()
VOLUMES=()
IMAGES=()

cleanup() {
    local status=$?
    for c in "${CONTAINERS[@]}"; do docker rm -f -v "$c" >/dev/null 2>&1 || true; done
    for v in "${VOLUMES[@]}"; do docker volume rm -f "$v" >/dev/null 2>&1 || true; done
    if [ "${KEEP_IMAGES:-0}" != 1 ]; then
        for i in "${IMAGES[@]}"; do docker image rm -f "$i" >/dev/null 2>&1 || true; done
    fi
    # Images of an earlier run that a rebuild untagged.
    docker image prune -f --filter label=harpbridge-check=1 >/dev/null 2>&1 || true
    rm -rf "$WORK"
    if [ "$status" -ne 0 ]; then echo "FAILED (exit $status)" >&2; fi
}
trap cleanup EXIT

fail() {
    echo "FAIL: $*" >&2
    exit 1
}
ok() { echo "ok   $*"; }

docker info >/dev/null 2>&1 || fail "no Docker daemon answers (start one, e.g. dockerd --iptables=false --bridge=none &)"

# --- the base image ---
base="${RUNTIME_BASE:-}"
if [ -z "$base" ]; then
    if docker image inspect "debian:$SUITE-slim" >/dev/null 2>&1 ||
        docker pull -q "debian:$SUITE-slim" >/dev/null 2>&1; then
        base="debian:$SUITE-slim"
    elif docker image inspect "$BUILT_BASE" >/dev/null 2>&1; then
        base=$BUILT_BASE
        IMAGES+=("$BUILT_BASE")
    else
        command -v debootstrap >/dev/null || fail "debian:$SUITE-slim cannot be pulled and debootstrap is missing (apt-get install debootstrap)"
        echo "..   debian:$SUITE-slim cannot be pulled: making a base with debootstrap (a few minutes)"
        debootstrap --variant=minbase "$SUITE" "$WORK/rootfs" "${DEBIAN_MIRROR:-http://deb.debian.org/debian}" >"$WORK/debootstrap.log" 2>&1 ||
            { tail -20 "$WORK/debootstrap.log" >&2; fail "debootstrap"; }
        rm -rf "$WORK/rootfs/var/cache/apt/archives/"*.deb "$WORK/rootfs/var/lib/apt/lists/"*
        tar -C "$WORK/rootfs" -c . | docker import --change 'CMD ["bash"]' --change 'LABEL harpbridge-check=1' - "$BUILT_BASE" >/dev/null
        rm -rf "$WORK/rootfs"
        base=$BUILT_BASE
        IMAGES+=("$BUILT_BASE")
    fi
fi
ok "base image $base"

# --- the binary ---
bin="${HARPBRIDGE_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release/harpbridge}"
if [ ! -x "$bin" ]; then
    echo "..   no $bin: cargo build --release --locked"
    (cd "$ROOT" && cargo build --release --locked --bin harpbridge)
fi
mkdir -p "$WORK/context"
cp "$bin" "$WORK/context/harpbridge"
# The release profile keeps line tables for benchmarks; the image does not need them.
strip --strip-debug "$WORK/context/harpbridge" 2>/dev/null || true
cp "$HERE/Dockerfile.prebuilt" "$WORK/context/Dockerfile"

# --- build: the Dockerfile's runtime stage, then the binary on top ---
IMAGES+=("$TAG:runtime" "$TAG:image")
docker build -q --force-rm --network host --label harpbridge-check=1 --target runtime --build-arg "RUNTIME_BASE=$base" \
    --build-arg "INSTALL_FRPC=$INSTALL_FRPC" -t "$TAG:runtime" "$ROOT" >/dev/null ||
    fail "docker build --target runtime"
docker build -q --force-rm --network host --label harpbridge-check=1 --build-arg "RUNTIME_IMAGE=$TAG:runtime" -t "$TAG:image" "$WORK/context" >/dev/null ||
    fail "docker build deploy/Dockerfile.prebuilt"
IMG=$TAG:image
ok "built $IMG (INSTALL_FRPC=$INSTALL_FRPC, $(docker image inspect -f '{{.Size}}' "$IMG" | awk '{printf "%.0f MB", $1/1e6}'))"

# --- 1. what AppAPI relies on ---
inspect() { docker image inspect -f "$1" "$IMG"; }
[ -z "$(inspect '{{.Config.User}}')" ] || fail "the image user is not root"
[ "$(inspect '{{json .Config.Entrypoint}}')" = '["/start.sh"]' ] || fail "entrypoint: $(inspect '{{json .Config.Entrypoint}}')"
[ "$(inspect '{{json .Config.Cmd}}')" = '["serve"]' ] || fail "cmd: $(inspect '{{json .Config.Cmd}}')"
grep -q healthcheck.sh <<<"$(inspect '{{json .Config.Healthcheck.Test}}')" || fail "no healthcheck"
grep -q '"4001/tcp"' <<<"$(inspect '{{json .Config.ExposedPorts}}')" || fail "4001/tcp not exposed"
grep -q '"4001/udp"' <<<"$(inspect '{{json .Config.ExposedPorts}}')" || fail "4001/udp not exposed"
grep -q '/nc_app_harpbridge_data' <<<"$(inspect '{{json .Config.Volumes}}')" || fail "no volume"
docker run --rm --network host --entrypoint bash "$IMG" -c \
    'command -v bash curl pgrep update-ca-certificates >/dev/null && test -s /etc/ssl/certs/ca-certificates.crt' ||
    fail "bash, curl, pgrep, update-ca-certificates or the CA bundle missing"
if [ "$INSTALL_FRPC" = true ]; then
    docker run --rm --network host --entrypoint frpc "$IMG" --version >/dev/null || fail "frpc does not run"
    ok "frpc $(docker run --rm --network host --entrypoint frpc "$IMG" --version)"
fi
ok "root user, /start.sh + serve, healthcheck, 4001/tcp+udp, volume, bash curl pgrep CA store"

# --- 2. the CLI through the entrypoint ---
help=$(docker run --rm --network host "$IMG" --help) || fail "harpbridge --help"
grep -q '^  serve ' <<<"$help" || fail "harpbridge --help"
ok "harpbridge --help"

# --- 3. serve, as AppAPI starts it without HaRP ---
port=""
for p in $(shuf -i 23000-23999 -n 50); do
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then port=$p; break; fi
done
[ -n "$port" ] || fail "no free port in 23000-23999"
VOLUMES+=("$TAG-serve")
CONTAINERS+=("$TAG-serve")
docker run -d --name "$TAG-serve" --network host -v "$TAG-serve:/nc_app_harpbridge_data" \
    -e APP_ID=harpbridge -e APP_SECRET=check-image-secret -e APP_VERSION=0.1.0 \
    -e APP_HOST=127.0.0.1 -e APP_PORT="$port" -e NEXTCLOUD_URL=http://127.0.0.1:9 \
    -e HARPBRIDGE_P2P_PORT=0 -e HARPBRIDGE_MDNS=off "$IMG" >/dev/null
body=""
for _ in $(seq 60); do
    body=$(curl -fsS --max-time 2 "http://127.0.0.1:$port/heartbeat" 2>/dev/null) && break
    [ "$(docker inspect -f '{{.State.Running}}' "$TAG-serve")" = true ] || break
    sleep 1
done
[ "$body" = '{"status":"ok"}' ] || { docker logs "$TAG-serve" 2>&1 | tail -20 >&2; fail "serve: GET /heartbeat answered '$body'"; }
ok "serve answers GET http://127.0.0.1:$port/heartbeat with $body"
health=""
for _ in $(seq 30); do
    health=$(docker inspect -f '{{.State.Health.Status}}' "$TAG-serve")
    [ "$health" = healthy ] && break
    sleep 1
done
[ "$health" = healthy ] || fail "serve: health '$health'"
ok "serve: the healthcheck says healthy"
docker stop -t 20 "$TAG-serve" >/dev/null
code=$(docker inspect -f '{{.State.ExitCode}}' "$TAG-serve")
[ "$code" = 0 ] || { docker logs "$TAG-serve" 2>&1 | tail -20 >&2; fail "serve: docker stop left exit code $code"; }
ok "serve: docker stop (SIGTERM) ends it with exit code 0"

# --- 4. the entrypoint under HaRP's environment ---
harp_env=(-e HP_SHARED_KEY='k"e\y' -e HP_FRP_ADDRESS=appapi-harp -e HP_FRP_PORT=8782
    -e APP_ID=harpbridge -e APP_PORT=23017)
if [ "$INSTALL_FRPC" != true ]; then
    out=$(docker run --rm --network host "${harp_env[@]}" "$IMG" 2>&1) && fail "started under HaRP without frpc"
    grep -q 'no frpc' <<<"$out" || fail "no frpc: unexpected output: $out"
    ok "without frpc, HP_SHARED_KEY stops the start with: ${out##*start.sh: }"
fi
# A stand-in frpc that records its arguments, then `serve --help` so harpbridge exits at once.
toml=$(docker run --rm --network host "${harp_env[@]}" --entrypoint bash "$IMG" -c '
    set -e
    stub=0
    if ! command -v frpc >/dev/null; then
        stub=1
        printf "#!/bin/sh\necho \"\$@\" >/tmp/frpc.args\nwhile :; do sleep 1; done\n" >/usr/local/bin/frpc
        chmod 0755 /usr/local/bin/frpc
    fi
    /start.sh serve --help >/dev/null
    test "$(stat -c %a /frpc.toml)" = 600
    if [ "$stub" = 1 ]; then
        for _ in $(seq 100); do [ -s /tmp/frpc.args ] && break; sleep 0.1; done
        grep -qx -- "-c /frpc.toml" /tmp/frpc.args
    else
        frpc verify -c /frpc.toml >&2
    fi
    test "$(cat /run/harpbridge.role)" = serve
    cat /frpc.toml') || fail "start.sh under HaRP"
if command -v python3 >/dev/null && python3 -c 'import tomllib' 2>/dev/null; then
    python3 - "$toml" <<'EOF' || fail "frpc.toml: $toml"
import sys, tomllib
c = tomllib.loads(sys.argv[1])
p = c["proxies"][0]
assert c["serverAddr"] == "appapi-harp" and c["serverPort"] == 8782, c
assert c["metadatas"]["token"] == 'k"e\\y', c["metadatas"]
assert c["loginFailExit"] is False and c["transport"]["tls"]["enable"] is False
assert p["name"] == "harpbridge" and p["type"] == "tcp" and p["remotePort"] == 23017, p
assert p["plugin"] == {"type": "unix_domain_socket", "unixPath": "/tmp/exapp.sock"}, p
EOF
    ok "under HaRP start.sh writes /frpc.toml (mode 600, TOML-valid, key escaped, unix socket plugin) and starts frpc"
else
    grep -q 'unixPath = "/tmp/exapp.sock"' <<<"$toml" || fail "frpc.toml: $toml"
    ok "under HaRP start.sh writes /frpc.toml and starts frpc (python3 with tomllib missing: not parsed)"
fi

# serve under HaRP: it listens on /tmp/exapp.sock, and the healthcheck probes that socket
# and frpc (a stand-in that stays up, as HaRP is not here to talk to).
CONTAINERS+=("$TAG-harp")
docker run -d --name "$TAG-harp" --network host "${harp_env[@]}" -e APP_SECRET=check-image-secret \
    -e APP_VERSION=0.1.0 -e APP_HOST=127.0.0.1 -e NEXTCLOUD_URL=http://127.0.0.1:9 -e HARPBRIDGE_P2P=off \
    --entrypoint bash "$IMG" -c '
        if [ ! -x /usr/local/bin/frpc ] || ! frpc --version >/dev/null 2>&1; then
            printf "#!/bin/sh\nwhile :; do sleep 1; done\n" >/usr/local/bin/frpc
            chmod 0755 /usr/local/bin/frpc
        fi
        exec /start.sh' >/dev/null
body=""
for _ in $(seq 60); do
    body=$(docker exec "$TAG-harp" curl -fsS --max-time 2 --unix-socket /tmp/exapp.sock http://localhost/heartbeat 2>/dev/null) && break
    [ "$(docker inspect -f '{{.State.Running}}' "$TAG-harp")" = true ] || break
    sleep 1
done
[ "$body" = '{"status":"ok"}' ] || { docker logs "$TAG-harp" 2>&1 | tail -20 >&2; fail "serve under HaRP: /tmp/exapp.sock answered '$body'"; }
docker exec "$TAG-harp" /healthcheck.sh || fail "serve under HaRP: the healthcheck fails while all runs"
# frpc dies while start.sh's loop is stopped: a dead, unreaped frpc must not count.
docker exec "$TAG-harp" bash -c '
    set -e
    frpc_pid=$(pgrep -x frpc)
    loop=$(ps -o ppid= -p "$frpc_pid" | tr -d " ")
    kill -STOP "$loop"
    kill "$frpc_pid"
    # gone, or dead but not reaped yet: both must count as "no frpc"
    while ps -o stat= -p "$frpc_pid" | grep -qv "^Z"; do sleep 0.1; done
    if /healthcheck.sh; then echo "healthy with a dead frpc" >&2; exit 1; fi
    kill -CONT "$loop"
    # the loop reaps it and starts a new one
    until ps -C frpc -o stat= | grep -qv "^Z"; do sleep 0.2; done
    /healthcheck.sh' || fail "serve under HaRP: frpc restart or healthcheck"
docker rm -f -v "$TAG-harp" >/dev/null
ok "serve under HaRP answers GET /heartbeat on /tmp/exapp.sock; a dead frpc makes it unhealthy and start.sh starts a new one"

# --- 5. the office roles on the persistent volume ---
for role in node cache; do
    if ! docker run --rm --network host "$IMG" "$role" --help >/dev/null 2>&1; then
        echo "SKIP $role: this binary has no '$role' subcommand"
        continue
    fi
    name="$TAG-$role"
    VOLUMES+=("$name")
    CONTAINERS+=("$name")
    docker run -d --name "$name" --network host -v "$name:/nc_app_harpbridge_data" "$IMG" \
        "$role" --no-mdns --listen /ip4/127.0.0.1/tcp/0 >/dev/null
    logs=""
    for _ in $(seq 30); do
        logs=$(docker logs "$name" 2>&1)
        grep -q '^listening /ip4/127.0.0.1/tcp/' <<<"$logs" && break
        [ "$(docker inspect -f '{{.State.Running}}' "$name")" = true ] || break
        sleep 1
    done
    grep -q '^listening /ip4/127.0.0.1/tcp/' <<<"$logs" || { echo "$logs" | tail -20 >&2; fail "$role did not start"; }
    peer=$(sed -n 's/^peer-id //p' <<<"$logs" | sed -n 1p)
    [ -n "$peer" ] || fail "$role printed no peer-id"
    health=""
    for _ in $(seq 15); do
        health=$(docker inspect -f '{{.State.Health.Status}}' "$name")
        [ "$health" = healthy ] && break
        sleep 1
    done
    [ "$health" = healthy ] || fail "$role: health '$health'"
    docker stop -t 20 "$name" >/dev/null
    again=$(docker run --rm --network host -v "$name:/nc_app_harpbridge_data" "$IMG" id 2>/dev/null |
        sed -n 's/^peer id: *//p')
    [ "$again" = "$peer" ] || fail "$role: id on the same volume shows '$again', not $peer"
    ok "$role runs (peer-id $peer, healthy), and its key persists in the volume"
done

# --- 6. the office compose file ---
if docker compose version >/dev/null 2>&1; then
    compose=(docker compose)
elif command -v docker-compose >/dev/null; then
    compose=(docker-compose)
else
    compose=()
    echo "SKIP compose: neither 'docker compose' nor docker-compose is installed"
fi
if [ "${#compose[@]}" -gt 0 ] && ! docker run --rm --network host "$IMG" cache --help >/dev/null 2>&1; then
    HARPBRIDGE_CLOUD_PEER=/ip4/192.0.2.1/tcp/4001 "${compose[@]}" -f "$ROOT/docker-compose.yml" config -q ||
        fail "docker-compose.yml does not validate"
    APP_SECRET=x NEXTCLOUD_URL=http://127.0.0.1:9 "${compose[@]}" -f "$HERE/compose.serve.yaml" config -q ||
        fail "deploy/compose.serve.yaml does not validate"
    ok "compose: both files validate"
    echo "SKIP compose up: this binary has no 'cache' subcommand"
elif [ "${#compose[@]}" -gt 0 ]; then
    # The "cloud": a node on loopback.
    CONTAINERS+=("$TAG-cloud")
    docker run -d --name "$TAG-cloud" --network host "$IMG" node --no-mdns --listen /ip4/127.0.0.1/tcp/0 >/dev/null
    cloud="" cloud_id=""
    for _ in $(seq 30); do
        logs=$(docker logs "$TAG-cloud" 2>&1)
        cloud_id=$(sed -n 's/^peer-id //p' <<<"$logs" | sed -n 1p)
        cloud_addr=$(grep -o '^listening /ip4/127\.0\.0\.1/tcp/[0-9]*$' <<<"$logs" | sed -n 1p | cut -d' ' -f2 || true)
        if [ -n "$cloud_id" ] && [ -n "$cloud_addr" ]; then cloud="$cloud_addr/p2p/$cloud_id"; break; fi
        sleep 1
    done
    [ -n "$cloud" ] || fail "the cloud node did not start"
    cache_port=""
    for p in $(shuf -i 40000-49999 -n 50); do
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then cache_port=$p; break; fi
    done
    [ -n "$cache_port" ] || fail "no free port in 40000-49999"
    export HARPBRIDGE_IMAGE=$IMG HARPBRIDGE_CLOUD_PEER=$cloud HARPBRIDGE_P2P_PORT=$cache_port
    "${compose[@]}" -f "$ROOT/docker-compose.yml" config -q || fail "docker-compose.yml does not validate"
    APP_SECRET=x NEXTCLOUD_URL=http://127.0.0.1:9 "${compose[@]}" -f "$HERE/compose.serve.yaml" config -q ||
        fail "deploy/compose.serve.yaml does not validate"
    # The file as it is, plus --no-mdns so that this check's cache stays invisible to other
    # swarms on the host (a compose override replaces the whole command list).
    printf '%s\n' 'services:' '  cache:' \
        "    command: [cache, --peer, \"$cloud\", --listen, /ip4/0.0.0.0/tcp/$cache_port, --listen, /ip4/0.0.0.0/udp/$cache_port/quic-v1, --cache-limit-mib, \"64\", --no-mdns]" \
        >"$WORK/no-mdns.yml"
    project=(-p harpbridge-check -f "$ROOT/docker-compose.yml" -f "$WORK/no-mdns.yml")
    trap '"${compose[@]}" "${project[@]}" down -v >/dev/null 2>&1 || true; cleanup' EXIT
    "${compose[@]}" "${project[@]}" up -d --no-build >/dev/null 2>&1 || fail "compose up"
    logs=""
    for _ in $(seq 60); do
        logs=$("${compose[@]}" "${project[@]}" logs --no-color cache 2>&1)
        grep -q "connected $cloud_id " <<<"$logs" && break
        sleep 1
    done
    grep -q "connected $cloud_id " <<<"$logs" || { echo "$logs" | tail -20 >&2; fail "the compose cache did not connect to $cloud"; }
    grep -q "listening /ip4/127.0.0.1/tcp/$cache_port\$" <<<"$logs" || fail "the compose cache does not listen on $cache_port"
    "${compose[@]}" "${project[@]}" down -v >/dev/null 2>&1 || fail "compose down"
    ok "compose: both files validate; the cache listens on $cache_port and connects to the cloud node $cloud_id"
fi

echo "all checks passed"
