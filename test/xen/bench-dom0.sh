#!/bin/sh
# dom0 script: the real-Xen throughput benchmark (bench/xen-dom0.ts), ours against Linux's drivers:
#   bun run bench:xen                                  # both sizes, every row
#   test/xen/run.sh test/xen/bench-dom0.sh 64 LL-up    # chosen sizes and/or rows
#   test/xen/run.sh test/xen/bench-dom0.sh rounds=2 pages=256 OL-down   # rounds; our Netfront's dataPages
cd /mnt/host || exit 1
exec bun run bench/xen-dom0.ts "$@"
