#!/bin/sh
# Smoke test of the real-Xen rig, run inside dom0 (busybox sh) by test/xen/run.sh:
# Xen devices, xenstore, Bun, and a self-loop vif between Linux's own xen-netfront and
# xen-netback in this one dom0, with a ping across it.
fails=0
pass() { echo "PASS: $*"; }
fail() { echo "FAIL: $*"; fails=$((fails + 1)); }
ms() { read up _ < /proc/uptime; echo "$up"; }

for d in /dev/xen/evtchn /dev/xen/gntalloc /dev/xen/gntdev /dev/xen/privcmd /dev/xen/xenbus; do
  if [ -c "$d" ]; then pass "$d exists"; else fail "$d missing"; fi
done

name=$(xenstore-read /local/domain/0/name 2>&1)
if [ "$name" = Domain-0 ]; then pass "xenstore-read /local/domain/0/name = $name"
else fail "xenstore-read /local/domain/0/name: $name"; fi

v=$(bun --version 2>&1)
case $v in [0-9]*.[0-9]*) pass "bun --version = $v" ;; *) fail "bun --version: $v" ;; esac
out=$(bun -e 'console.log(require("node:fs").statSync("/dev/xen/gntdev").isCharacterDevice())' 2>&1)
if [ "$out" = true ]; then pass "bun sees /dev/xen/gntdev"; else fail "bun -e: $out"; fi

# --- self-loop vif: dom0's netfront <-> dom0's netback ---
mac=00:16:3e:00:00:10
fe=/local/domain/0/device/vif/0
be=/local/domain/0/backend/vif/0/0
modprobe xen-netback && modprobe xen-netfront && pass "xen-netback and xen-netfront loaded" ||
  fail "modprobe xen-netback/xen-netfront"
t0=$(ms)
if xl network-attach 0 mac=$mac script=/etc/xen/scripts/vif-selfloop; then
  pass "xl network-attach 0 mac=$mac"
else
  fail "xl network-attach 0 (exit $?)"
fi
i=0
while :; do
  fs=$(xenstore-read $fe/state 2>/dev/null); bs=$(xenstore-read $be/state 2>/dev/null)
  [ "$fs" = 4 ] && [ "$bs" = 4 ] && break
  i=$((i + 1))
  [ $i -gt 200 ] && break
  usleep 50000
done
t1=$(ms)
if [ "$fs" = 4 ] && [ "$bs" = 4 ]; then
  pass "frontend and backend Connected (state 4) $(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }') s after network-attach"
else
  fail "vif states: frontend '$fs', backend '$bs' (want 4 and 4); hotplug-status '$(xenstore-read $be/hotplug-status 2>&1)'"
  xenstore-ls -f /local/domain/0 2>&1 | grep -E 'vif' | head -60
  cat /run/xen/hotplug.log 2>/dev/null
fi

# the frontend's netdev: the one with our MAC; the backend's: vif0.0
fedev=""
for n in /sys/class/net/*; do
  [ "$(cat "$n/address" 2>/dev/null)" = "$mac" ] && fedev=${n##*/}
done
bedev=vif0.0
if [ -n "$fedev" ] && [ -d /sys/class/net/$bedev ]; then
  pass "netdevs: frontend $fedev, backend $bedev"
  IP=/usr/sbin/ip
  $IP netns add fe &&
  $IP link set "$fedev" netns fe &&
  $IP -n fe link set lo up &&
  $IP -n fe addr add 10.99.0.2/24 dev "$fedev" &&
  $IP -n fe link set "$fedev" up &&
  $IP addr add 10.99.0.1/24 dev $bedev &&
  $IP link set $bedev up &&
  pass "addresses: $bedev 10.99.0.1/24 (root ns), $fedev 10.99.0.2/24 (netns fe)" ||
  fail "netns/address setup"
  if out=$(ping -c 3 -A -W 2 10.99.0.2 2>&1); then
    pass "ping backend -> frontend: $(echo "$out" | grep -E 'packets transmitted')"
  else
    fail "ping 10.99.0.2 from dom0:"; echo "$out"
  fi
  if out=$($IP netns exec fe ping -c 3 -A -W 2 10.99.0.1 2>&1); then
    pass "ping frontend -> backend: $(echo "$out" | grep -E 'packets transmitted')"
  else
    fail "ping 10.99.0.1 from netns fe:"; echo "$out"
  fi
else
  fail "netdevs: frontend '${fedev:-none with $mac}', backend $bedev $( [ -d /sys/class/net/$bedev ] && echo present || echo missing)"
  ls /sys/class/net
fi

if [ $fails -eq 0 ]; then echo "SMOKE PASS"; else echo "SMOKE FAIL: $fails check(s) failed"; fi
exit $fails
