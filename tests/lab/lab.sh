#!/usr/bin/env bash
# The LAN/WAN lab (docs/lab.md): two offices on a 1 Gbit/s bridge, each reaching the cloud
# through its own gateway over a 10 Mbit/s link, all in network namespaces on this machine. Used by tests/lan_wan.rs and bench/lan.
#
#   office-a 10.77.0.1 ─┐                      ┌─ gw-a 10.77.0.254 | 10.78.1.2 ══ 10 Mbit/s ══╗
#   office-b 10.77.0.2 ─┴─ lan: br0 (1 Gbit/s) ─┴─ gw-b 10.77.0.253 | 10.78.2.2 ══ 10 Mbit/s ══╣ wan ── cloud 10.78.0.2
#
# Usage (root):
#   lab.sh up            build the topology (tears down a leftover one first)
#   lab.sh down          stop what runs inside and delete every namespace of the lab
#   lab.sh ns NAME       print the namespace's full name (e.g. `lab.sh ns office-a`)
#   lab.sh wan-bytes     one line per gateway: `gw-a RX TX` (bytes on its WAN interface, as
#                        the kernel counts them: what really crossed the 10 Mbit/s link;
#                        RX = towards the office, TX = towards the cloud)
#   lab.sh wan-queue     send every packet the router forwards to NFQUEUE 0 (with
#                        --queue-bypass: untouched while nothing listens), for the
#                        user-space delay of tests/lab/delay.rs (the kernel has no netem)
#   lab.sh check         exit 0 if this machine can build the lab (root, `ip netns`), else
#                        print why and exit 1
#
# Namespace names are "$LAB_PREFIX-<name>" (default prefix `hblab`), so a lab never touches
# namespaces it did not make. Interfaces are created inside their namespaces, so their
# names never clash with the host's. No netem (this kernel lacks it): rates come from tbf on
# both ends of each link. Multicast (mDNS) crosses the bridge but is never routed, so the
# cloud must be dialled by address.
set -euo pipefail

P="${LAB_PREFIX:-hblab}"
NAMES=(lan office-a office-b gw-a gw-b wan cloud)
LAN_RATE=(rate 1gbit burst 256k latency 5ms)
WAN_RATE=(rate 10mbit burst 32k latency 100ms)

ns() { echo "$P-$1"; }
in_ns() { local n; n="$(ns "$1")"; shift; ip netns exec "$n" "$@"; }

down() {
  local n pids
  for name in "${NAMES[@]}"; do
    n="$(ns "$name")"
    ip netns list 2>/dev/null | grep -qw -- "^$n" || continue
    # Stop whatever still runs inside (a killed test's nodes) before deleting.
    pids="$(ip netns pids "$n" 2>/dev/null || true)"
    if [ -n "$pids" ]; then
      kill -TERM $pids 2>/dev/null || true
      sleep 0.3
      pids="$(ip netns pids "$n" 2>/dev/null || true)"
      [ -z "$pids" ] || kill -KILL $pids 2>/dev/null || true
    fi
    ip netns del "$n" 2>/dev/null || true
  done
}

# veth between two namespaces: `link NS_A IF_A NS_B IF_B`, both ends up.
link() {
  ip -n "$(ns "$1")" link add "$2" type veth peer name "$4" netns "$(ns "$3")"
  ip -n "$(ns "$1")" link set "$2" up
  ip -n "$(ns "$3")" link set "$4" up
}

shape() { # shape NS IF RATE...
  local n="$1" dev="$2"; shift 2
  ip -n "$(ns "$n")" link set "$dev" txqueuelen 1000
  tc -n "$(ns "$n")" qdisc replace dev "$dev" root tbf "$@"
}

up() {
  down
  for name in "${NAMES[@]}"; do
    ip netns add "$(ns "$name")"
    ip -n "$(ns "$name")" link set lo up
  done

  # The office LAN: a bridge in `lan`, one shaped port per host.
  ip -n "$(ns lan)" link add br0 type bridge
  # Flood multicast (mDNS) to every port without waiting for IGMP snooping to learn.
  ip -n "$(ns lan)" link set br0 type bridge mcast_snooping 0
  ip -n "$(ns lan)" link set br0 up
  local host port addr
  for spec in office-a:pa:10.77.0.1 office-b:pb:10.77.0.2 gw-a:ga:10.77.0.254 gw-b:gb:10.77.0.253; do
    IFS=: read -r host port addr <<<"$spec"
    link "$host" lan0 lan "$port"
    ip -n "$(ns lan)" link set "$port" master br0
    ip -n "$(ns "$host")" addr add "$addr/24" dev lan0
    shape "$host" lan0 "${LAN_RATE[@]}"
    shape lan "$port" "${LAN_RATE[@]}"
  done

  # The WAN: each gateway to the router over a 10 Mbit/s link; the cloud behind the router.
  link gw-a wan0 wan wa
  ip -n "$(ns gw-a)" addr add 10.78.1.2/24 dev wan0
  ip -n "$(ns wan)" addr add 10.78.1.1/24 dev wa
  link gw-b wan0 wan wb
  ip -n "$(ns gw-b)" addr add 10.78.2.2/24 dev wan0
  ip -n "$(ns wan)" addr add 10.78.2.1/24 dev wb
  for spec in gw-a:wan0 gw-b:wan0 wan:wa wan:wb; do
    IFS=: read -r host port <<<"$spec"
    shape "$host" "$port" "${WAN_RATE[@]}"
  done
  link cloud eth0 wan wc
  ip -n "$(ns cloud)" addr add 10.78.0.2/24 dev eth0
  ip -n "$(ns wan)" addr add 10.78.0.1/24 dev wc

  for r in gw-a gw-b wan; do
    in_ns "$r" sysctl -qw net.ipv4.ip_forward=1
  done
  # Routes: each office out through its own gateway; the router returns per office (no NAT).
  ip -n "$(ns office-a)" route add default via 10.77.0.254
  ip -n "$(ns office-b)" route add default via 10.77.0.253
  ip -n "$(ns gw-a)" route add default via 10.78.1.1
  ip -n "$(ns gw-b)" route add default via 10.78.2.1
  ip -n "$(ns cloud)" route add default via 10.78.0.1
  ip -n "$(ns wan)" route add 10.77.0.1/32 via 10.78.1.2
  ip -n "$(ns wan)" route add 10.77.0.2/32 via 10.78.2.2
}

wan_bytes() {
  local g rx tx
  for g in gw-a gw-b; do
    rx="$(in_ns "$g" cat /sys/class/net/wan0/statistics/rx_bytes)"
    tx="$(in_ns "$g" cat /sys/class/net/wan0/statistics/tx_bytes)"
    echo "$g $rx $tx"
  done
}

wan_queue() {
  if ! command -v iptables >/dev/null; then
    echo "iptables is not installed (apt-get install iptables)" >&2
    return 1
  fi
  in_ns wan iptables -A FORWARD -j NFQUEUE --queue-num 0 --queue-bypass
}

check() {
  if [ "$(id -u)" != 0 ]; then
    echo "not root: network namespaces need root"
    return 1
  fi
  if ! ip netns list >/dev/null 2>&1; then
    echo "\`ip netns\` is not available (install iproute2)"
    return 1
  fi
  if ! command -v tc >/dev/null; then
    echo "\`tc\` is not available (install iproute2)"
    return 1
  fi
  return 0
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  ns) ns "${2:?name}" ;;
  wan-bytes) wan_bytes ;;
  wan-queue) wan_queue ;;
  check) check ;;
  *) echo "usage: $0 up|down|ns NAME|wan-bytes|wan-queue|check" >&2; exit 2 ;;
esac
