#!/bin/sh
# Diagnostic, not a test (test/xen/run.sh test/xen/domu-env.sh): while a PV domU with a vif
# boots, served by LINUX xen-netback (no Bun driver anywhere), do unrelated dom0 processes
# survive? A loop of md5sum over /bin/busybox and a plain Bun JS loop run meanwhile.
# Seen 2026-12-03: `xl create` itself died with SIGABRT (rc 134) and one md5sum run crashed
# (empty output), the Bun loop survived. Without the vif line and the modprobe, the same run was
# clean (400 md5sums, the Bun loop, xl create rc 0). So the crashes of the domU test
# (test/xen/dom0/domu-netfront.xen.ts) come from the emulated machine, not from our driver.
cd /mnt/host || exit 1
mkdir -p /var/log/xen/console && xenconsoled --log=guest --log-dir=/var/log/xen/console
cat > /tmp/d.cfg <<CFG
name="domu1"
type="pv"
kernel="/boot/xen-rig/vmlinuz"
ramdisk="/boot/xen-rig/domu.cpio"
extra="console=hvc0 rdinit=/init quiet xenrig.ip=10.99.7.2/24 xenrig.peer=10.99.7.1"
memory=160
vcpus=1
vif=['mac=00:16:3e:00:00:61,script=/etc/xen/scripts/vif-selfloop']
on_poweroff="destroy"
CFG
modprobe xen-netback; echo "xen-netback loaded: $?"
sum0=$(md5sum /bin/busybox | cut -d' ' -f1)
( n=0; bad=0; while [ $n -lt 400 ]; do s=$(md5sum /bin/busybox | cut -d' ' -f1); [ "$s" = "$sum0" ] || { bad=$((bad+1)); echo "md5 MISMATCH $n $s"; }; n=$((n+1)); done; echo "md5 loop done: $n runs, $bad bad" ) &
bun -e 'const t0=Date.now(); let n=0; let h=0; while (Date.now()-t0 < 90000) { const a = new Array(1000).fill(0).map((_, i) => ({ i, s: "x" + i })); h = (h + a.reduce((x, o) => x + o.i + o.s.length, 0)) | 0; n++; if (n % 2000 === 0) console.log("bun loop", n, h); } console.log("bun loop done", n, h);' &
bunpid=$!
sleep 5
echo "xl create..."
timeout 120 xl create /tmp/d.cfg; echo "xl create rc=$?"
xl list
sleep 40
xl list
xl destroy domu1; echo "xl destroy rc=$?"
wait $bunpid; echo "bun loop rc=$?"
wait
