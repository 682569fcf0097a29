#!/bin/sh
# Configure this network namespace / container as a NAT router using nftables.
#
# The SAME script drives the netns lab (natlab.Lab runs it with `ip netns exec`)
# and docker compose (the nat-a / nat-b services run it at start-up), so the
# NAT behaviour under test is identical in both rigs.
#
# Usage:  router.sh [setup|set-loss|flush]
#   setup     (default) full configuration: sysctls + nft table "natlab"
#   set-loss  only replace the random-loss rule (keeps all NAT state)
#   flush     forget all mappings: conntrack table and the cone state sets
#
# Environment:
#   NAT_TYPE         full-cone | restricted-cone | port-restricted-cone |
#                    symmetric | udp-blocked | none
#   WAN_IF, LAN_IF   interface names (required)
#   WAN_IP           public address; default: first IPv4 address on WAN_IF
#   BINDING_TIMEOUT  UDP mapping idle timeout in seconds (default 30)
#   LOSS             percent of forwarded UDP dropped, both ways (default 0)
#   HAIRPIN          1/0 (default 0)
#   WAN_FIREWALL     1/0 (default 1): drop unsolicited inbound from the WAN
#
# RFC 4787 terms: EIM = endpoint-independent mapping, EIF/ADF/APDF =
# endpoint-independent / address-dependent / address-and-port-dependent filtering.
set -eu

ACTION=${1:-setup}
NAT_TYPE=${NAT_TYPE:-port-restricted-cone}
: "${WAN_IF:?WAN_IF is required}"
: "${LAN_IF:?LAN_IF is required}"
BINDING_TIMEOUT=${BINDING_TIMEOUT:-30}
LOSS=${LOSS:-0}
HAIRPIN=${HAIRPIN:-0}
WAN_FIREWALL=${WAN_FIREWALL:-1}

die() { echo "router.sh: $*" >&2; exit 2; }

is_uint() { case $1 in ''|*[!0-9]*) return 1 ;; *) return 0 ;; esac; }
is_uint "$BINDING_TIMEOUT" && [ "$BINDING_TIMEOUT" -ge 1 ] || die "bad BINDING_TIMEOUT=$BINDING_TIMEOUT"
is_uint "$LOSS" && [ "$LOSS" -le 100 ] || die "bad LOSS=$LOSS"
case $HAIRPIN in 0|1) ;; *) die "bad HAIRPIN=$HAIRPIN" ;; esac
case $WAN_FIREWALL in 0|1) ;; *) die "bad WAN_FIREWALL=$WAN_FIREWALL" ;; esac
case $NAT_TYPE in
    full-cone|restricted-cone|port-restricted-cone|symmetric|udp-blocked|none) ;;
    *) die "bad NAT_TYPE=$NAT_TYPE" ;;
esac

loss_rule() {
    # numgen is evaluated per packet, so this is independent random loss.
    if [ "$LOSS" -ge 100 ]; then
        echo "add rule ip natlab loss drop"   # nft rejects "< 100" (mod 100 range)
    elif [ "$LOSS" -gt 0 ]; then
        echo "add rule ip natlab loss numgen random mod 100 < $LOSS drop"
    fi
}

if [ "$ACTION" = set-loss ]; then
    { echo "flush chain ip natlab loss"; loss_rule; } | nft -f -
    exit 0
fi
if [ "$ACTION" = flush ]; then
    conntrack -F >/dev/null 2>&1 || true   # exits non-zero when already empty
    printf '%s\n' "flush map ip natlab pubmap" "flush map ip natlab revmap" \
        "flush set ip natlab allowed" | nft -f -
    exit 0
fi
[ "$ACTION" = setup ] || die "unknown action $ACTION"

if [ -z "${WAN_IP:-}" ]; then
    WAN_IP=$(ip -4 -o addr show dev "$WAN_IF" | awk '{split($4, a, "/"); print a[1]; exit}')
    [ -n "$WAN_IP" ] || die "no IPv4 address on $WAN_IF and WAN_IP unset"
fi

# All of these are per network namespace (verified on 6.x kernels), so they
# affect only this router, never the host or other routers.
sysctl -qw net.ipv4.ip_forward=1
# A hairpinned packet leaves via the interface it came in on; without this the
# router would send ICMP redirects telling the sender to bypass the NAT.
sysctl -qw net.ipv4.conf.all.send_redirects=0
sysctl -qw net.ipv4.conf.default.send_redirects=0
sysctl -qw "net.ipv4.conf.$LAN_IF.send_redirects=0"
# The UDP mapping lifetime is the conntrack lifetime: "udp_timeout" applies to
# unreplied flows, "udp_timeout_stream" to flows seen both ways.
sysctl -qw "net.netfilter.nf_conntrack_udp_timeout=$BINDING_TIMEOUT"
sysctl -qw "net.netfilter.nf_conntrack_udp_timeout_stream=$BINDING_TIMEOUT"

T=${BINDING_TIMEOUT}s
W=\"$WAN_IF\"
L=\"$LAN_IF\"

masq=masquerade
[ "$NAT_TYPE" = symmetric ] && masq="masquerade random"   # APDM: random port per flow

{
    # Idempotent: re-running replaces the whole configuration.
    echo "table ip natlab"
    echo "delete table ip natlab"
    cat <<EOF
table ip natlab {
    # Public (mapped) port -> inside endpoint. Learnt from outbound packets
    # after source NAT; used for full/restricted cone inbound and hairpin.
    map pubmap {
        type inet_service : ipv4_addr . inet_service
        flags dynamic,timeout
        timeout $T
    }
    # Inside endpoint -> its public mapping (to make hairpin traffic appear
    # from the sender's public mapping).
    map revmap {
        type ipv4_addr . inet_service : ipv4_addr . inet_service
        flags dynamic,timeout
        timeout $T
    }
    # (mapped port . remote ip) pairs the inside endpoint has sent to:
    # the address-dependent filter of a restricted cone.
    set allowed {
        type inet_service . ipv4_addr
        flags dynamic,timeout
        timeout $T
    }

    chain loss {
    }

    chain pre_nat {
        type nat hook prerouting priority dstnat; policy accept;
    }

    chain pre_filter {
        type filter hook prerouting priority dstnat + 10; policy accept;
    }

    chain forward {
        type filter hook forward priority filter; policy drop;
        meta l4proto udp jump loss
    }

    chain post_nat {
        type nat hook postrouting priority srcnat; policy accept;
    }

    # Runs after source NAT, so "udp sport" is the mapped public port while
    # the conntrack tuple still knows the inside endpoint.
    chain post_track {
        type filter hook postrouting priority srcnat + 10; policy accept;
    }
}
EOF

    case $NAT_TYPE in
    none)
        echo "add rule ip natlab forward accept"
        ;;
    udp-blocked)
        echo "add rule ip natlab forward meta l4proto udp drop"
        ;;
    esac

    if [ "$NAT_TYPE" != none ]; then
        echo "add rule ip natlab post_nat oifname $W $masq"
        # Outbound packets in the original direction: inside = ct original
        # source. Outbound packets of an inbound-initiated (DNAT'ed) flow are
        # in the reply direction: inside = ct reply source. Updating on every
        # packet refreshes the timeouts like conntrack does.
        for dir in original reply; do
            echo "add rule ip natlab post_track oifname $W meta l4proto udp ct direction $dir" \
                 "update @pubmap { udp sport : ct $dir ip saddr . ct $dir proto-src }"
            echo "add rule ip natlab post_track oifname $W meta l4proto udp ct direction $dir" \
                 "update @revmap { ct $dir ip saddr . ct $dir proto-src : ip saddr . udp sport }"
        done
        echo "add rule ip natlab post_track oifname $W meta l4proto udp" \
             "update @allowed { udp sport . ip daddr }"
    fi

    # Inbound filtering beyond conntrack's own (which is port-restricted):
    # a NEW inbound flow to a mapped port is DNAT'ed to the inside endpoint.
    # Its reply packets then match that conntrack entry and leave from the
    # same public port, so the mapping stays endpoint independent.
    case $NAT_TYPE in
    full-cone)
        echo "add rule ip natlab pre_nat iifname $W ip daddr $WAN_IP ct state new" \
             "meta l4proto udp dnat ip to udp dport map @pubmap"
        ;;
    restricted-cone)
        echo "add rule ip natlab pre_nat iifname $W ip daddr $WAN_IP ct state new" \
             "udp dport . ip saddr @allowed dnat ip to udp dport map @pubmap"
        ;;
    esac

    if [ "$HAIRPIN" = 1 ] && [ "$NAT_TYPE" != none ] && [ "$NAT_TYPE" != udp-blocked ]; then
        # ct mark 0x4850 ("HP") tags the flow so post_nat can source-NAT it to
        # the public address (iifname is unavailable in postrouting).
        echo "add rule ip natlab pre_nat iifname $L ip daddr $WAN_IP ct state new" \
             "meta l4proto udp ct mark set 0x4850 dnat ip to udp dport map @pubmap"
        # Prefer the sender's existing public mapping; else keep its port.
        echo "add rule ip natlab post_nat ct mark 0x4850 ct status dnat" \
             "snat ip to ip saddr . udp sport map @revmap"
        echo "add rule ip natlab post_nat ct mark 0x4850 ct status dnat snat ip to $WAN_IP"
    fi
    # LAN -> own public address that was not hairpinned: drop (the router
    # runs no services), which is also what HAIRPIN=0 means.
    echo "add rule ip natlab pre_filter iifname $L ip daddr $WAN_IP meta l4proto udp" \
         "ct status and dnat == 0 drop"

    if [ "$WAN_FIREWALL" = 1 ]; then
        # Drop unsolicited inbound before conntrack confirms the entry: a
        # confirmed entry for remote -> public:port would make masquerade
        # pick a different port for the next outbound flow to that remote,
        # turning a cone into an apparently symmetric NAT.
        echo "add rule ip natlab pre_filter iifname $W ct state new ct status and dnat == 0 drop"
    fi

    if [ "$NAT_TYPE" != none ]; then
        echo "add rule ip natlab forward ct state established,related accept"
        echo "add rule ip natlab forward iifname $L accept"
        echo "add rule ip natlab forward ct status dnat accept"
    fi
    loss_rule
} | nft -f -
