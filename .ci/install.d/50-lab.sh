#!/usr/bin/env bash
# The LAN/WAN lab test (tests/lan_wan.rs, tests/lab/lab.sh) builds network namespaces with
# `ip`/`tc` (iproute2) and delays the WAN in user space through an iptables NFQUEUE rule
# (iptables; tests/lab/delay.rs); bench/lan also measures the links with iperf3, and ping helps when
# looking at the lab by hand.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
need=()
command -v ip >/dev/null && command -v tc >/dev/null || need+=(iproute2)
command -v ping >/dev/null || need+=(iputils-ping)
command -v iperf3 >/dev/null || need+=(iperf3)
command -v iptables >/dev/null || need+=(iptables)
if [ "${#need[@]}" -gt 0 ]; then
  apt-get install -y -qq "${need[@]}" >/dev/null
fi
ip -V
iperf3 --version | sed -n 1p
