#!/usr/bin/env bash
# Builds (once) what the real-Xen rig boots under QEMU: the Xen hypervisor, an uncompressed Linux
# dom0 kernel and a dom0 initramfs (busybox, Xen tools, kernel modules, Bun, /init).
#
# Everything comes from Debian packages installed on this machine; nothing here is committed.
# The result is cached under $XEN_RIG_CACHE (default <repo>/.cache/xen-rig), in a directory named
# after a hash of the package versions, the Bun binary and this script: a second run reuses it.
#
# Usage: test/xen/build-image.sh [--force]
# Last line of stdout: the image directory (holds xen, vmlinux, dom0.cpio, manifest.txt).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
cache=${XEN_RIG_CACHE:-$repo/.cache/xen-rig}
force=0
[ "${1:-}" = "--force" ] && force=1

log() { echo "[xen-rig build] $*" >&2; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

# --- 1. packages ---------------------------------------------------------------------------------
pkgs=(qemu-system-x86 xen-hypervisor-4.17-amd64 xen-utils-4.17 xenstore-utils linux-image-amd64
      busybox-static cpio kmod xz-utils iproute2 qemu-system-xen)
missing=()
for p in "${pkgs[@]}"; do
  if [ "$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)" != installed ]; then
    missing+=("$p")
  fi
done
if [ ${#missing[@]} -gt 0 ]; then
  [ "$(id -u)" = 0 ] || { log "missing packages (${missing[*]}) and not root: install them first"; exit 1; }
  t0=$(now)
  log "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
  log "packages installed in $(since "$t0") s"
fi

# The kernel: the newest Debian image that has both a bzImage and its modules.
kver=""
for v in $(ls /boot | sed -n 's/^vmlinuz-//p' | sort -V); do
  [ -d "/lib/modules/$v/kernel" ] && kver=$v
done
[ -n "$kver" ] || { log "no /boot/vmlinuz-* with /lib/modules/<version> found"; exit 1; }
xenver=4.17
xenbin=/usr/lib/xen-$xenver/bin
xengz=/boot/xen-$xenver-amd64.gz
[ -f "$xengz" ] || { log "$xengz not found"; exit 1; }

bunbin=$repo/node_modules/bun/bin/bun.exe
[ -x "$bunbin" ] || { log "$bunbin not found: run npm install in $repo"; exit 1; }

# --- 2. cache key --------------------------------------------------------------------------------
ver() { dpkg-query -W -f='${Package}=${Version}\n' "$@" 2>/dev/null; }
keysrc=$(
  ver xen-hypervisor-4.17-amd64 xen-utils-4.17 xenstore-utils "linux-image-$kver" busybox-static \
      iproute2 libc6 libgcc-s1 qemu-system-xen
  echo "bun=$(stat -c '%s-%Y' "$bunbin") $("$bunbin" --version)"
  sha256sum "$0" "$here/vif-selfloop" "$here/domu-init" | cut -d' ' -f1
)
key=$(printf '%s\n' "$keysrc" | sha256sum | cut -c1-16)
out=$cache/image-$key
if [ $force = 0 ] && [ -f "$out/manifest.txt" ]; then
  log "cached image: $out"
  echo "$out"
  exit 0
fi

# one build at a time (parallel runs): wait for the lock, then look again
mkdir -p "$cache"
exec 9>"$cache/.build.lock"
flock 9
if [ $force = 0 ] && [ -f "$out/manifest.txt" ]; then
  log "cached image: $out"
  echo "$out"
  exit 0
fi

t0=$(now)
log "building image $key (kernel $kver, Xen $xenver)"
work=$(mktemp -d "$cache/build.XXXXXX")
trap 'rm -rf "$work"' EXIT

# --- 3. xen --------------------------------------------------------------------------------------
zcat "$xengz" > "$work/xen"

# --- 4. vmlinux: the bzImage's payload, decompressed (as the kernel's scripts/extract-vmlinux) -------
bz=/boot/vmlinuz-$kver
try_payload() { # $1 magic (grep -P), $2 decompressor
  local off
  for off in $(LC_ALL=C grep -obUaP "$1" "$bz" | cut -d: -f1); do
    if tail -c +"$((off + 1))" "$bz" | $2 > "$work/vmlinux" 2>/dev/null || [ -s "$work/vmlinux" ]; then
      if [ "$(head -c 4 "$work/vmlinux" | od -An -tx1 | tr -d ' ')" = 7f454c46 ]; then
        return 0
      fi
    fi
  done
  return 1
}
try_payload '\xFD7zXZ\x00' 'xz -dc' || try_payload '\x1F\x8B\x08' 'gzip -dc' ||
  try_payload '\x28\xB5\x2F\xFD' 'zstd -dc' ||
  { log "could not find a compressed ELF payload in $bz"; exit 1; }

# --- 5. dom0 initramfs ---------------------------------------------------------------------------
r=$work/root
mkdir -p "$r"/{bin,sbin,usr/bin,usr/sbin,usr/lib64,usr/lib/x86_64-linux-gnu,etc/xen/scripts,proc,sys,dev,run,tmp,mnt/host,mnt/result,root,var/lib/xen,var/log/xen}
ln -s usr/lib "$r/lib"
ln -s usr/lib64 "$r/lib64"
ln -s ../run "$r/var/run"
ln -s ../run/lock "$r/var/lock"

# The helpers below fill the root at $root (dom0's first, then the domU's).
root=$r
# busybox, with every applet as a link in /bin or /sbin (never /usr/*: iproute2's ip lives there)
add_busybox() {
  cp /bin/busybox "$root/bin/busybox"
  local a
  for a in $(/bin/busybox --list-full); do
    case $a in usr/*) a=${a#usr/} ;; esac
    [ -e "$root/$a" ] || ln -s /bin/busybox "$root/$a"
  done
}
add_busybox

# copy a file and, for ELF executables, every library ldd resolves (merged /usr layout inside)
copied=" "
copy_file() { # $1 source, $2 destination in the image
  mkdir -p "$(dirname "$root/$2")"
  cp -L "$1" "$root/$2"
}
copy_libs() {
  local lib
  for lib in $(ldd "$1" 2>/dev/null | grep -oE '/[^ ]+\.so[^ ]*' | sort -u); do
    case $copied in *" $lib "*) continue ;; esac
    copied="$copied$lib "
    local dest=${lib#/usr}; dest=usr$dest
    [ -e "$root/$dest" ] || copy_file "$lib" "$dest"
  done
}
add_exe() { # $1 source, $2 destination
  copy_file "$1" "$2"
  copy_libs "$1"
}

for t in xl xenstored xenconsoled xen-init-dom0; do
  add_exe "$xenbin/$t" "usr/lib/xen-$xenver/bin/$t"
  ln -sf "/usr/lib/xen-$xenver/bin/$t" "$r/usr/sbin/$t"
done
for t in /usr/bin/xenstore*; do
  [ -L "$t" ] && continue   # xenstore-control: a wrapper link into xen-common
  add_exe "$t" "usr/bin/$(basename "$t")"
done
add_exe /usr/sbin/ip usr/sbin/ip     # iproute2 (netns); busybox's ip is /sbin/ip
add_exe /usr/sbin/bridge usr/sbin/bridge
# QEMU's userspace PV back ends (xen_nic: the `qnic` back end), from Debian's qemu-system-xen:
# test/xen/dom0/qemu-nic.xen.ts runs it against our Netfront.
add_exe /usr/libexec/xen-qemu-system-i386 usr/libexec/xen-qemu-system-i386
add_exe "$bunbin" usr/bin/bun
# dlopen()ed, not listed by ldd: libgcc_s (pthread_cancel in xl), Bun's libpthread/libdl/libm
for l in libgcc_s.so.1 libpthread.so.0 libdl.so.2 libm.so.6 librt.so.1 libresolv.so.2; do
  # awk reads to the end (no early exit): under pipefail, ldconfig killed by SIGPIPE would fail
  # the build silently, and only sometimes.
  p=$(ldconfig -p | awk -v l="$l" '$1 == l && /x86-64/ && !found { print $NF; found = 1 }')
  [ -n "$p" ] || { log "$l not found"; exit 1; }
  case $copied in *" $p "*) ;; *) copied="$copied$p "; copy_file "$p" "usr${p#/usr}" ;; esac
done
[ -e "$r/usr/lib64/ld-linux-x86-64.so.2" ] || copy_file /lib64/ld-linux-x86-64.so.2 usr/lib64/ld-linux-x86-64.so.2
# libxl's helpers look for these
for f in /etc/xen/xl.conf /etc/xen/scripts/hotplugpath.sh; do [ -f "$f" ] && copy_file "$f" "${f#/}"; done
install -m 0755 "$here/vif-selfloop" "$r/etc/xen/scripts/vif-selfloop"

# kernel modules, decompressed, with a modules.dep built by depmod (busybox modprobe reads it)
mods=(xen-evtchn xen-gntdev xen-gntalloc xen-privcmd xenfs xen-netback xen-netfront bridge veth tun
      virtio_pci 9pnet_virtio 9p)
# add_modules NAME...: each module and its dependencies, decompressed, into $root; the paths
# added, in load order, go to the array `order`.
add_modules() {
  order=()
  local m kind path rel dest
  for m in "$@"; do
    while read -r kind path _; do
      case $kind in
        insmod)
          rel=${path#/lib/modules/$kver/}
          dest=lib/modules/$kver/${rel%.xz}
          if [ ! -e "$root/$dest" ]; then
            mkdir -p "$(dirname "$root/$dest")"
            case $path in *.xz) xz -dc "$path" > "$root/$dest" ;; *) cp "$path" "$root/$dest" ;; esac
            order+=("/$dest")
          fi ;;
        builtin) ;;
        *) log "modprobe --show-depends $m: unexpected '$kind $path'"; exit 1 ;;
      esac
    done < <(modprobe -S "$kver" --show-depends "$m")
  done
}
add_modules "${mods[@]}"
cp "/lib/modules/$kver/modules.builtin" "/lib/modules/$kver/modules.builtin.modinfo" "/lib/modules/$kver/modules.order" "$r/lib/modules/$kver/" 2>/dev/null || true
depmod -b "$r" "$kver"
printf '%s\n' "${order[@]}" > "$r/etc/xen-rig-modules"   # load order, for insmod without modprobe

cat > "$r/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/bin/sh
EOF
cat > "$r/etc/group" <<'EOF'
root:x:0:
EOF
echo "127.0.0.1 localhost dom0" > "$r/etc/hosts"
: > "$r/etc/resolv.conf"

# The dom0 init (busybox sh). Kernel command line parameters:
#   xenrig.script=PATH   script to run, relative to the repo share (default test/xen/smoke-dom0.sh)
#   xenrig.timeout=SECS  time bound for it (default 120)
#   xenrig.args=A:B:C    arguments, ':'-separated (no spaces or commas possible on this line)
cat > "$r/init" <<'INIT'
#!/bin/sh
export PATH=/usr/sbin:/usr/bin:/sbin:/bin:/usr/lib/xen-4.17/bin HOME=/root TERM=dumb
mark() { read up _ < /proc/uptime; echo "[xen-rig $up] $*"; }
die() { echo "[xen-rig] FATAL: $*"; echo 1 > /proc/sys/kernel/sysrq; echo b > /proc/sysrq-trigger; sleep 60; }

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs -o mode=1777 tmpfs /dev/shm
mount -t tmpfs -o mode=0755 tmpfs /run
mount -t tmpfs -o mode=1777 tmpfs /tmp
mkdir -p /run/xen /run/xenstored /run/lock /run/netns /var/lib/xen /var/log/xen
echo 1 > /proc/sys/kernel/sysrq
mark "init started"

script=test/xen/smoke-dom0.sh; timeout=120; args=
for a in $(cat /proc/cmdline); do
  case $a in
    xenrig.script=*) script=${a#xenrig.script=} ;;
    xenrig.timeout=*) timeout=${a#xenrig.timeout=} ;;
    xenrig.args=*) args=$(echo "${a#xenrig.args=}" | tr ':' ' ') ;;
  esac
done

for m in xen-evtchn xen-gntdev xen-gntalloc xen-privcmd xenfs bridge veth tun virtio_pci 9pnet_virtio 9p; do
  modprobe "$m" || echo "[xen-rig] modprobe $m failed"
done
mark "modules loaded"

mkdir -p /proc/xen
mount -t xenfs xenfs /proc/xen || die "mount xenfs failed"
xenstored --pid-file=/run/xenstored.pid || die "xenstored failed"
i=0
until xenstore-read /local >/dev/null 2>&1; do
  i=$((i + 1)); [ $i -gt 200 ] && die "xenstored does not answer"
  usleep 50000
done
xen-init-dom0 >/run/xen-init-dom0.log 2>&1 || { cat /run/xen-init-dom0.log; die "xen-init-dom0 failed"; }
mark "xenstore up, dom0 initialised"

mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000 host0 /mnt/host || die "mount 9p host0 failed"
mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000 result0 /mnt/result || die "mount 9p result0 failed"
mark "host folders mounted"
res=/mnt/result
echo "$script" > $res/started

cd /mnt/host
if [ -f "/mnt/host/$script" ]; then
  mark "running $script${args:+ $args} (time bound ${timeout}s)"
  # output: echoed to the console and kept in a tmpfs file (copied to the result folder). The
  # script's end is known by its exit-code file, not by the pipe closing: daemons it leaves
  # behind cannot hold the run open.
  rm -f /run/rc /run/rc.tmp
  { timeout -s KILL "$timeout" sh "/mnt/host/$script" $args </dev/null 2>&1
    echo $? > /run/rc.tmp; mv /run/rc.tmp /run/rc; } | tee /run/output.log &
  teepid=$!
  until [ -f /run/rc ]; do usleep 50000; done
  i=0
  while kill -0 $teepid 2>/dev/null && [ $i -lt 10 ]; do usleep 50000; i=$((i + 1)); done
  kill $teepid 2>/dev/null
  rc=$(cat /run/rc)
  [ "$rc" = 137 ] && echo "[xen-rig] $script: killed after ${timeout}s" | tee -a /run/output.log
  cp /run/output.log $res/output.log
else
  echo "[xen-rig] no such script: /mnt/host/$script" | tee $res/output.log
  rc=127
fi
mark "script exit code $rc"
cd /
dmesg > $res/dmesg.log 2>&1
xl dmesg > $res/xl-dmesg.log 2>&1
echo "$rc" > $res/exit-code
sync
umount /mnt/result /mnt/host 2>/dev/null
mark "rebooting"
echo b > /proc/sysrq-trigger
sleep 60
INIT
chmod 0755 "$r/init"

# --- 6. a PV domU for the tests that need a separate domain -------------------------------------
# dom0 carries it in its own initramfs (no 9p read at `xl create`): the Debian bzImage (Xen's PV
# loader takes it) and a small initramfs with busybox, the xenstore tools, xen-netfront and an
# /init that brings eth0 up, pings dom0's side and writes what it saw under its own
# /local/domain/<id>/data/ (the only place a domU may write), then powers off.
u=$work/domu
mkdir -p "$u"/{bin,sbin,usr/bin,usr/sbin,usr/lib64,usr/lib/x86_64-linux-gnu,proc,sys,dev,run,tmp,etc}
ln -s usr/lib "$u/lib"
ln -s usr/lib64 "$u/lib64"
dom0_order=("${order[@]}")
root=$u
copied=" "
add_busybox
for t in xenstore-read xenstore-write; do add_exe "/usr/bin/$t" "usr/bin/$t"; done
add_exe /usr/sbin/ip usr/sbin/ip
[ -e "$u/usr/lib64/ld-linux-x86-64.so.2" ] || copy_file /lib64/ld-linux-x86-64.so.2 usr/lib64/ld-linux-x86-64.so.2
add_modules xen-netfront
printf '%s\n' "${order[@]}" > "$u/etc/modules-order"
root=$r
order=("${dom0_order[@]}")
install -m 0755 "$here/domu-init" "$u/init"
mkdir -p "$r/boot/xen-rig"
cp "$bz" "$r/boot/xen-rig/vmlinuz"
( cd "$u" && find . -print0 | LC_ALL=C sort -z | cpio --null -o -H newc --quiet ) > "$r/boot/xen-rig/domu.cpio"
rm -rf "$u"

( cd "$r" && find . -print0 | LC_ALL=C sort -z | cpio --null -o -H newc --quiet ) > "$work/dom0.cpio"

{
  echo "built: $(date -u +%FT%TZ) in $(since "$t0") s"
  echo "kernel: $kver"
  printf '%s\n' "$keysrc"
  echo "sizes:"
  ( cd "$work" && du -b xen vmlinux dom0.cpio )
  echo "modules:"
  printf '  %s\n' "${order[@]}"
} > "$work/manifest.txt"

rm -rf "$r"
rm -rf "$out"
mv "$work" "$out"
trap - EXIT
# keep only the newest three images
ls -1dt "$cache"/image-* 2>/dev/null | tail -n +4 | xargs -r rm -rf
log "built in $(since "$t0") s: $out ($(du -sh "$out" | cut -f1))"
echo "$out"
