#!/bin/sh
# udhcpc event script for ovms-init: applies the lease to the interface.
case "$1" in
  deconfig)
    ip addr flush dev "$interface"
    ;;
  bound | renew)
    ip addr flush dev "$interface"
    ip addr add "$ip/${mask:-24}" dev "$interface"
    for r in $router; do ip route add default via "$r" dev "$interface" && break; done
    : >/run/ovms/resolv.conf
    for d in $dns; do echo "nameserver $d" >>/run/ovms/resolv.conf; done
    ;;
esac
exit 0
