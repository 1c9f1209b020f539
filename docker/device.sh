#!/bin/sh
# The device container: makes the virtual wiring (four veth pairs) in its own network
# namespace, which the other containers of compose.yaml share, then runs offloadd on
# the device's ends of the pairs (AF_PACKET ports, docker/offloadd.toml; OFFLOADD_CONFIG
# names another).
set -eu
ip link set lo up
n=0
for side in outside inside firewall collector; do
  n=$((n + 1))
  ip link show "veth-$side" >/dev/null 2>&1 || ip link add "veth-$side" type veth peer name "eth-$side"
  # Fixed host MACs: the hosts' static neighbours name them (frames cross unchanged).
  ip link set "eth-$side" address "02:00:00:00:0a:0$n"
  ip link set "veth-$side" up
  ip link set "eth-$side" up
  # Frames are forwarded as they are: senders must put real checksums in them.
  ethtool -K "eth-$side" tx off >/dev/null 2>&1 || true
done
exec offloadd --config "${OFFLOADD_CONFIG:-/etc/offloadd/docker/offloadd.toml}" "$@"
