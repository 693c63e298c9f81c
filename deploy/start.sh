#!/bin/bash
# The image's entrypoint: start HaRP's FRP client when AppAPI asks for it, then become
# harpbridge.
#
#   start.sh [SUBCOMMAND [ARGS…]]      default: serve
#
# AppAPI runs the image with no command, so the default is `serve`, the ExApp. Any other
# harpbridge subcommand (`cache`, `node`, `id`, `peers`, …) is passed through unchanged,
# which lets an office run the same image without Nextcloud.
#
# Under a HaRP deploy daemon (docs/appapi.md §12) AppAPI sets HP_SHARED_KEY, HP_FRP_ADDRESS and
# HP_FRP_PORT, and copies HaRP's client certificates to /certs/frp. HaRP cannot reach the
# container directly: frpc dials HaRP's frps and carries HaRP's requests back through the
# tunnel to the unix socket /tmp/exapp.sock, where `harpbridge serve` listens whenever
# HP_SHARED_KEY is set (src/config.rs, HARP_SOCKET). That is why the proxy below uses frp's
# unix_domain_socket plugin (as nc_py_api's ExApps do) and not a TCP localPort.
#
# Written for harpbridge after the behaviour of HaRP's exapps_dev/start.sh and the
# app-skeleton-python entrypoint: an existing /frpc.toml is kept (bring your own), and frpc
# runs in the background (restarted if it dies) while harpbridge becomes PID 1 so that
# `docker stop` reaches it.
set -euo pipefail

FRPC_CONFIG=/frpc.toml
ROLE_FILE=/run/harpbridge.role

if [ "$#" -eq 0 ]; then
    set -- serve
fi
role="$1"

# Quote a value as a TOML basic string: backslashes and double quotes escaped. Control
# characters cannot appear in an environment value that AppAPI generates; refuse them
# anyway rather than write a broken file.
toml_string() {
    local value="$1"
    if [[ "$value" == *[[:cntrl:]]* ]]; then
        echo "start.sh: $2 holds a control character" >&2
        exit 1
    fi
    value="${value//\\/\\\\}"
    value="${value//\"/\\\"}"
    printf '"%s"' "$value"
}

# A port as TOML wants it: digits only, 1–65535.
toml_port() {
    local value="$1"
    if ! [[ "$value" =~ ^[0-9]{1,5}$ ]] || [ "$value" -lt 1 ] || [ "$value" -gt 65535 ]; then
        echo "start.sh: $2 is not a port: '$value'" >&2
        exit 1
    fi
    printf '%s' "$((10#$value))"
}

write_frpc_config() {
    local server port remote name token tls=""
    server=$(toml_string "${HP_FRP_ADDRESS:?HP_SHARED_KEY is set but HP_FRP_ADDRESS is not}" HP_FRP_ADDRESS)
    port=$(toml_port "${HP_FRP_PORT:?HP_SHARED_KEY is set but HP_FRP_PORT is not}" HP_FRP_PORT)
    remote=$(toml_port "${APP_PORT:?HP_SHARED_KEY is set but APP_PORT is not}" APP_PORT)
    name=$(toml_string "${APP_ID:?HP_SHARED_KEY is set but APP_ID is not}" APP_ID)
    token=$(toml_string "$HP_SHARED_KEY" HP_SHARED_KEY)
    if [ -d /certs/frp ]; then
        echo "start.sh: /certs/frp found: the FRP tunnel uses TLS"
        tls='transport.tls.enable = true
transport.tls.certFile = "/certs/frp/client.crt"
transport.tls.keyFile = "/certs/frp/client.key"
transport.tls.trustedCaFile = "/certs/frp/ca.crt"
transport.tls.serverName = "harp.nc"'
    else
        echo "start.sh: no /certs/frp: the FRP tunnel runs without TLS"
        tls='transport.tls.enable = false'
    fi
    # The file holds the shared key: readable by root only.
    (
        umask 077
        cat >"$FRPC_CONFIG" <<EOF
serverAddr = $server
serverPort = $port
# Keep retrying when HaRP is not up yet instead of exiting.
loginFailExit = false
$tls
metadatas.token = $token

[[proxies]]
name = $name
type = "tcp"
remotePort = $remote
[proxies.plugin]
type = "unix_domain_socket"
unixPath = "/tmp/exapp.sock"
EOF
    )
}

if [ "$role" = serve ] && [ -n "${HP_SHARED_KEY:-}" ]; then
    if ! command -v frpc >/dev/null 2>&1; then
        echo "start.sh: HP_SHARED_KEY is set but this image has no frpc (built with INSTALL_FRPC=false)" >&2
        exit 1
    fi
    if [ -f "$FRPC_CONFIG" ]; then
        echo "start.sh: $FRPC_CONFIG exists: using it as it is"
    else
        write_frpc_config
        echo "start.sh: wrote $FRPC_CONFIG"
    fi
    # frpc retries a lost connection itself (loginFailExit = false); this loop also brings
    # it back if it dies. The loop is frpc's parent and reaps it, because harpbridge (PID 1
    # after the exec below) reaps no children.
    echo "start.sh: starting frpc in the background"
    (
        while :; do
            frpc -c "$FRPC_CONFIG" || true
            echo "start.sh: frpc exited; starting it again in 5 s" >&2
            sleep 5
        done
    ) &
fi

# The healthcheck reads what this container runs.
mkdir -p "$(dirname "$ROLE_FILE")"
printf '%s\n' "$role" >"$ROLE_FILE"

exec harpbridge "$@"
