#!/bin/sh
# dom0 script: the separate-domain test, not yet in CI (see test/xen/dom0/domu-netfront.xen.ts):
#   test/xen/run.sh test/xen/domu-test.sh
cd /mnt/host || exit 1
export XEN_RIG_DOMU=1
exec bun test ./test/xen/dom0/domu-netfront.xen.ts
