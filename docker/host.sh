#!/bin/sh
# A traffic container: takes its end of a veth pair (eth-$SIDE) from the shared
# namespace into a namespace of its own, gives it an address, and then either sends
# UDP to the other host once a second (ROLE=client) or echoes what it receives
# (ROLE=server). Both directions of the session cross the device. NETNS names the
# host's namespace (default: $SIDE).
set -eu
: "${SIDE:?outside or inside}" "${ADDR:?10.0.0.x/24}" "${PEER:?peer address}" "${PEER_MAC:?}" "${ROLE:?client or server}"
ns="${NETNS:-$SIDE}"
until ip link show "eth-$SIDE" >/dev/null 2>&1; do sleep 0.5; done
ip netns add "$ns" 2>/dev/null || true
ip link set "eth-$SIDE" netns "$ns"
ip -n "$ns" link set lo up
ip -n "$ns" addr add "$ADDR" dev "eth-$SIDE"
ip -n "$ns" link set "eth-$SIDE" up
# The device does not forward ARP (it goes to the firewall port): static neighbours.
ip -n "$ns" neigh replace "$PEER" lladdr "$PEER_MAC" dev "eth-$SIDE"
ip netns exec "$ns" ethtool -K "eth-$SIDE" tx off >/dev/null 2>&1 || true
if [ "$ROLE" = server ]; then
  exec ip netns exec "$ns" socat -v UDP-LISTEN:5001,fork,reuseaddr EXEC:cat
fi
n=0
while true; do
  n=$((n + 1))
  echo "hello $n from $ADDR" | ip netns exec "$ns" socat -t 0.5 - "UDP:$PEER:5001,sourceport=5000,reuseaddr" || true
  sleep 1
done
