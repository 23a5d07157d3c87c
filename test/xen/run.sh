#!/usr/bin/env bash
# Boots real Xen 4.17 with a Linux PV dom0 under QEMU (TCG, no KVM, no network device) and runs
# one script from this repository inside dom0, as root, with the repo checkout at /mnt/host.
#
# Usage: test/xen/run.sh [SCRIPT [ARG...]]
#   SCRIPT  path relative to the repo root (default: test/xen/smoke-dom0.sh); run with busybox sh
#           from /mnt/host. Arguments: no spaces, commas or colons (they travel on the kernel
#           command line).
# Environment:
#   XEN_RIG_TIMEOUT  time bound for the script inside dom0, seconds (default 120); the whole QEMU
#                    run gets this plus XEN_RIG_BOOT_BUDGET (default 60)
#   XEN_RIG_VERBOSE  1: stream the serial console (Xen + dom0) while it runs
#   XEN_RIG_CACHE    where images and run logs live (default <repo>/.cache/xen-rig)
# Exit status: the script's own exit status; 124 hung (time bound hit); 125 guest crashed or ended
# without a result; 2 usage or build error.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
export XEN_RIG_CACHE=${XEN_RIG_CACHE:-$repo/.cache/xen-rig}
script=${1:-test/xen/smoke-dom0.sh}
[ $# -gt 0 ] && shift
tbound=${XEN_RIG_TIMEOUT:-120}
budget=${XEN_RIG_BOOT_BUDGET:-60}

say() { echo "[xen-rig] $*"; }
now() { date +%s.%N; }
diff_s() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }

script=${script#./}
case $script in /*) script=${script#"$repo"/} ;; esac
[ -f "$repo/$script" ] || { say "no such script in the repo: $script"; exit 2; }
args=""
for a in "$@"; do
  case $a in *[[:space:],:]*|"") say "argument '$a': no spaces, commas, colons or empty arguments"; exit 2 ;; esac
  args=${args:+$args:}$a
done
case "$repo$script$XEN_RIG_CACHE" in *,*|*[[:space:]]*) say "paths must not contain commas or spaces (QEMU option syntax)"; exit 2 ;; esac

t_build=$(now)
# The build is cheap (about 2 s) and one CI run once saw it fail without a message: try twice.
img=$("$here/build-image.sh" | tail -n 1) || img=$("$here/build-image.sh" | tail -n 1) ||
  { say "image build failed twice (its messages are above)"; exit 2; }
t_boot=$(now)

run=$XEN_RIG_CACHE/runs/$(date +%Y%m%d-%H%M%S)-$$
mkdir -p "$run/result"
ls -1dt "$XEN_RIG_CACHE"/runs/* 2>/dev/null | tail -n +11 | xargs -r rm -rf   # keep 10 runs
serial=$run/serial.log
: > "$serial"

cmdline="console=hvc0 earlyprintk=xen rdinit=/init quiet xenrig.script=$script xenrig.timeout=$tbound"
[ -n "$args" ] && cmdline="$cmdline xenrig.args=$args"

say "image: $img (build/check $(diff_s "$t_build" "$t_boot") s)"
say "booting Xen + dom0 under QEMU (TCG), running $script${args:+ ($*)}; bound $((tbound + budget)) s"
say "serial log: $serial"

tailpid=""
if [ "${XEN_RIG_VERBOSE:-0}" = 1 ]; then
  tail -n +1 -F "$serial" 2>/dev/null &
  tailpid=$!
fi

set +e
timeout -k 5 "$((tbound + budget))" qemu-system-x86_64 \
  -accel tcg,thread=${XEN_RIG_TCG_THREAD:-multi} -cpu max,-smap,-smep${XEN_RIG_CPU_EXTRA:-} -smp 2 -m 2048 \
  -display none -nodefaults -no-reboot -monitor none -nic none \
  -serial "file:$serial" \
  -kernel "$img/xen" \
  -append "console=com1 com1=115200,8n1 dom0_mem=1024M,max:1024M dom0_max_vcpus=2${XEN_RIG_XEN_EXTRA:-}" \
  -initrd "$img/vmlinux $cmdline,$img/dom0.cpio" \
  -virtfs "local,path=$repo,mount_tag=host0,security_model=none,id=host0" \
  -virtfs "local,path=$run/result,mount_tag=result0,security_model=none,id=result0" \
  </dev/null >"$run/qemu.log" 2>&1
qrc=$?
set -e
t_end=$(now)
if [ -n "$tailpid" ]; then sleep 0.3; kill "$tailpid" 2>/dev/null; wait "$tailpid" 2>/dev/null || true; fi

res=$run/result
mt() { stat -c %.3Y "$1" 2>/dev/null; }
timings="total $(diff_s "$t_build" "$t_end") s (QEMU $(diff_s "$t_boot" "$t_end") s"
[ -f "$res/started" ] && timings="$timings; boot to script start $(diff_s "$t_boot" "$(mt "$res/started")") s"
[ -f "$res/exit-code" ] && [ -f "$res/started" ] &&
  timings="$timings; script $(diff_s "$(mt "$res/started")" "$(mt "$res/exit-code")") s"
timings="$timings)"

tail_serial() {
  echo "----- serial console (Xen + dom0), last ${1:-60} lines: $serial -----"
  tail -n "${1:-60}" "$serial" | tr -d '\r'
  [ -s "$run/qemu.log" ] && { echo "----- qemu stderr -----"; cat "$run/qemu.log"; }
  echo "-----"
}

[ -f "$res/output.log" ] && [ -z "$tailpid" ] && cat "$res/output.log"

if [ $qrc -eq 124 ] || [ $qrc -eq 137 ]; then
  tail_serial 80
  say "HUNG: QEMU still running after $((tbound + budget)) s and was killed; $timings"
  exit 124
fi
if [ ! -f "$res/exit-code" ]; then
  tail_serial 80
  why="ended without writing a result"
  grep -qE 'Panic on CPU|Kernel panic|FATAL|Unhandled|general protection|Oops' "$serial" &&
    why="crashed: $(grep -m1 -E 'Panic on CPU|Kernel panic|FATAL|Unhandled|general protection|Oops' "$serial" | tr -d '\r')"
  [ $qrc -ne 0 ] && why="$why (QEMU exit status $qrc)"
  say "CRASHED: guest $why; $timings"
  exit 125
fi
rc=$(cat "$res/exit-code")
if [ "$rc" != 0 ]; then
  tail_serial 40
  say "FAIL: $script exited $rc${rc:+$( [ "$rc" = 137 ] && echo " (killed at its ${tbound}s bound)")}; $timings; logs: $run"
  exit "$rc"
fi
say "PASS: $script; $timings; logs: $run"
