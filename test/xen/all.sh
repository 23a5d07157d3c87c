#!/usr/bin/env bash
# The real-Xen integration run (`bun run test:xen`, and CI): two boots of Xen + dom0 under QEMU,
# one for the smoke test (Linux netfront <-> Linux netback), one for our tests in dom0
# (test/xen/dom0/*.xen.ts: our netfront <-> Linux netback, Linux netfront <-> our netback, ours
# <-> ours). Each boot is retried once, and only when the guest hung or crashed (exit 124/125:
# the emulator, not a failed check). Prints "xen: N passed, N failed" and exits non-zero on any failure.
set -u
cd "$(dirname "$0")/../.."

boot() {
  local rc=0
  test/xen/run.sh "$@" || rc=$?
  if [ "$rc" -eq 124 ] || [ "$rc" -eq 125 ]; then
    echo "real-Xen rig: the guest hung or crashed (exit $rc); one retry" >&2
    rc=0
    test/xen/run.sh "$@" || rc=$?
  fi
  return "$rc"
}

passed=0
failed=0
# Each boot gets its own bound for the script inside dom0. Under TCG one of our dom0 tests takes
# 30-40 s (a handshake alone 2-15 s, depending on how loaded the host is), so bun-test.sh gets
# 75 s per test plus slack (the firewall's test took 63 s); one CI run hit the old shared 120 s bound in the fifth file.
bound_for() {
  case $1 in
    test/xen/bun-test.sh) echo $(( $(cat test/xen/dom0/*.xen.ts | grep -c '^test(\|^  test(') * 75 + 60 )) ;;
    *) echo 120 ;;
  esac
}
for script in test/xen/smoke-dom0.sh test/xen/bun-test.sh; do
  if XEN_RIG_TIMEOUT=${XEN_RIG_TIMEOUT:-$(bound_for "$script")} boot "$script"; then
    passed=$((passed + 1))
  else
    failed=$((failed + 1))
  fi
done
echo "xen: ${passed} passed, ${failed} failed"
[ "$failed" -eq 0 ]
