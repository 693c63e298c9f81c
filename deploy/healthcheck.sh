#!/bin/bash
# The image's HEALTHCHECK. AppAPI waits for a deployed container to turn healthy, so
# "healthy" means the ExApp answers, not only that a process exists:
#
#   serve under HaRP   frpc is running, and GET /heartbeat answers on /tmp/exapp.sock
#   serve without HaRP GET /heartbeat answers on APP_HOST:APP_PORT (0.0.0.0 → 127.0.0.1)
#   cache, node, …     harpbridge is running (they serve no HTTP)
#
# A `serve` started with `--listen` somewhere else is not probed over HTTP (this script
# cannot know where); it then counts as healthy while harpbridge runs.
set -u

role=$(cat /run/harpbridge.role 2>/dev/null || echo unknown)

heartbeat() {
    curl --silent --fail --max-time 2 --output /dev/null "$@"
}

case "$role" in
serve)
    for arg in $(tr '\0' ' ' </proc/1/cmdline 2>/dev/null); do
        if [ "$arg" = --listen ] || [[ "$arg" == --listen=* ]]; then
            exec pgrep -x harpbridge >/dev/null
        fi
    done
    if [ -n "${HP_SHARED_KEY:-}" ]; then
        # A live frpc: pgrep alone would also count a dead one that is not reaped yet.
        if [ -f /frpc.toml ] && ! ps -C frpc -o stat= | grep -qv '^Z'; then
            exit 1
        fi
        heartbeat --unix-socket /tmp/exapp.sock http://localhost/heartbeat
    else
        host="${APP_HOST:-127.0.0.1}"
        case "$host" in
        0.0.0.0 | "") host=127.0.0.1 ;;
        ::) host='[::1]' ;;
        *:*) host="[$host]" ;;
        esac
        heartbeat "http://$host:${APP_PORT:-23000}/heartbeat"
    fi
    ;;
*)
    pgrep -x harpbridge >/dev/null
    ;;
esac
