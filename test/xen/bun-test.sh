#!/bin/sh
# dom0 script: runs `bun test` on the given files from the repo checkout (/mnt/host), e.g.
#   test/xen/run.sh test/xen/bun-test.sh ./test/xen/dom0/rig.xen.ts
# With no argument it runs every test/xen/dom0/*.xen.ts.
cd /mnt/host || exit 1
[ $# -gt 0 ] || set -- $(ls ./test/xen/dom0/*.xen.ts)
exec bun test "$@"
