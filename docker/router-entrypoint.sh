#!/bin/sh
# Container wrapper around natlab/router.sh: docker does not guarantee
# interface names, so find WAN/LAN by the addresses compose assigned, then
# run the router script and stay alive (the container IS the router).
# Usage: router-entrypoint.sh /natlab/router.sh [setup]
set -eu
ROUTER_SH=$1
shift
ifname_of() { ip -o -4 addr show | awk -v a="$1" '{split($4, p, "/"); if (p[1] == a) print $2}'; }
: "${WAN_IP:?WAN_IP is required}"
: "${LAN_IP:?LAN_IP is required}"
WAN_IF=${WAN_IF:-$(ifname_of "$WAN_IP")}
LAN_IF=${LAN_IF:-$(ifname_of "$LAN_IP")}
export WAN_IF LAN_IF WAN_IP
# Docker installs a default route via its own bridge gateway; the lab's
# internet is on-link, so drop it to keep traffic inside the rig.
ip route del default 2>/dev/null || true
sh "$ROUTER_SH" "$@"
echo "router up: NAT_TYPE=$NAT_TYPE WAN=$WAN_IF($WAN_IP) LAN=$LAN_IF($LAN_IP)"
exec tail -f /dev/null
