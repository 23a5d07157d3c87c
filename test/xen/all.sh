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
for script in test/xen/smoke-dom0.sh test/xen/bun-test.sh; do
  if boot "$script"; then passed=$((passed + 1)); else failed=$((failed + 1)); fi
done
echo "xen: ${passed} passed, ${failed} failed"
[ "$failed" -eq 0 ]
