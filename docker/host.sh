#!/bin/sh
# A traffic container: takes its end of a veth pair (eth-$SIDE) from the shared
# namespace into a namespace of its own, gives it an address, and then either sends
# a UDP datagram to PEER:PEER_PORT from PORT once a second (ROLE=client) or echoes
# what it receives on PORT (ROLE=server). Both directions of the session cross the
# device. NETNS names the host's namespace (default: $SIDE). PORT and PEER_PORT
# default to 5000 and 5001 for a client, 5001 for a server.
#
# On SIGTERM or SIGINT (`docker stop`) it stops its traffic and gives eth-$SIDE back
# to the shared namespace before exiting, so the device's port keeps its interface
# (a namespace destroyed with the interface in it would delete the whole veth pair)
# and a restarted container finds it again.
set -eu
: "${SIDE:?outside or inside}" "${ADDR:?10.0.0.x/24}" "${PEER:?peer address}" "${PEER_MAC:?}" "${ROLE:?client or server}"
ns="${NETNS:-$SIDE}"
case "$ROLE" in
  server) port="${PORT:-5001}" ;;
  client) port="${PORT:-5000}" peer_port="${PEER_PORT:-5001}" ;;
  *) echo "host.sh: ROLE must be client or server, not '$ROLE'" >&2; exit 2 ;;
esac
until ip link show "eth-$SIDE" >/dev/null 2>&1; do sleep 0.5; done
ip netns add "$ns" 2>/dev/null || true
ip link set "eth-$SIDE" netns "$ns"

traffic=""
give_back() {
  [ -z "$traffic" ] || kill "$traffic" 2>/dev/null || true
  ip -n "$ns" link set "eth-$SIDE" down 2>/dev/null || true
  ip -n "$ns" link set "eth-$SIDE" netns "$$" 2>/dev/null || true
  ip netns del "$ns" 2>/dev/null || true
  echo "host.sh: stopped; eth-$SIDE given back"
  exit 0
}
trap give_back TERM INT

ip -n "$ns" link set lo up
ip -n "$ns" addr add "$ADDR" dev "eth-$SIDE"
ip -n "$ns" link set "eth-$SIDE" up
# The device does not forward ARP (it goes to the firewall port): static neighbours.
ip -n "$ns" neigh replace "$PEER" lladdr "$PEER_MAC" dev "eth-$SIDE"
ip netns exec "$ns" ethtool -K "eth-$SIDE" tx off >/dev/null 2>&1 || true

send_forever() {
  n=0
  while true; do
    n=$((n + 1))
    echo "hello $n from $ADDR" | ip netns exec "$ns" socat -t 0.5 - "UDP:$PEER:$peer_port,sourceport=$port,reuseaddr" || true
    sleep 1
  done
}
if [ "$ROLE" = server ]; then
  ip netns exec "$ns" socat -v "UDP-LISTEN:$port,fork,reuseaddr" EXEC:cat &
else
  send_forever &
fi
traffic=$!
# wait returns early when a trapped signal arrives; give_back then exits.
while true; do wait "$traffic" || true; kill -0 "$traffic" 2>/dev/null || exit 1; done
