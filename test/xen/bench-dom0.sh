#!/bin/sh
# dom0 script: the real-Xen throughput benchmark (bench/xen-dom0.ts), e.g.
#   test/xen/run.sh test/xen/bench-dom0.sh
cd /mnt/host || exit 1
exec bun run bench/xen-dom0.ts
