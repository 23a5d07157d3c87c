/**
 * Throughput over real Xen, run inside dom0 by the rig (`test/xen/run.sh test/xen/bench-dom0.sh`).
 * Xen and dom0 run under QEMU's software emulation here, so absolute figures mean little; the
 * two paths measured in the same boot can be compared with each other:
 *   - our Netfront → Linux xen-netback (frames counted on the kernel's vif netdev), and Linux
 *     xen-netback → our Netfront (the kernel sending UDP at us, frames counted by our listener);
 *   - our Netfront ↔ our Netback (both directions), over real grants and event channels.
 * mitata's measure() with a few fixed samples (emulation is too slow for its defaults).
 */
import { measure } from "mitata";
import pino from "pino";
import { Netback, Netfront, createVif } from "../src/main/index.ts";
import { createXenPlatform } from "../src/platform/xen/platform.ts";
import { Flow } from "./device-pair.ts";

const SIZE = Number(process.env.XEN_BENCH_SIZE ?? 1514);
const BATCH = 500;
const OPTS = { min_samples: 5, max_samples: 5, min_cpu_time: 0, warmup_samples: 1, batch_samples: 1, batch_unroll: 1 } as const;
const logger = pino({ level: "warn" });

function sh(cmd: string): string {
  const r = Bun.spawnSync(["sh", "-c", cmd], { stdout: "pipe", stderr: "pipe" });
  if (r.exitCode !== 0) throw new Error(`${cmd}: ${r.stderr.toString()}`);
  return r.stdout.toString();
}

function report(what: string, stats: { p50: number; min: number; max: number }): void {
  const ns = stats.p50 / BATCH;
  console.log(
    `${what.padEnd(36)} ${SIZE} B: ${(1e9 / ns).toFixed(0).padStart(7)} frames/s  ${((SIZE * 8 * 1e9) / ns / 1e6).toFixed(1).padStart(7)} Mbit/s  (median of 5 batches of ${BATCH}; ${(1e9 / (stats.max / BATCH)).toFixed(0)}–${(1e9 / (stats.min / BATCH)).toFixed(0)} frames/s)`,
  );
}

// 1. Our Netfront → Linux xen-netback.
for (const m of ["xen-netback", "xen-netfront"]) Bun.spawnSync(["rmmod", m]);
sh("modprobe xen-netback");
const MAC = "00:16:3e:00:00:41";
sh(`xl network-attach 0 mac=${MAC} script=/etc/xen/scripts/vif-selfloop`);
const devid = Number(sh("xenstore-list /local/domain/0/device/vif").split(/\s+/).find((d) => d && sh(`xenstore-read /local/domain/0/device/vif/${d}/mac`).trim() === MAC));
const p1 = await createXenPlatform({ domid: 0 });
const front1 = await Netfront.connect({ platform: p1, devid, logger, timeoutMs: 30_000 });
const vif = `vif0.${devid}`;
sh(`/usr/sbin/ip link set ${vif} up`);
const rxFile = `/sys/class/net/${vif}/statistics/rx_packets`;
const rxCount = async () => Number((await Bun.file(rxFile).text()).trim());
const frame = new Uint8Array(SIZE).fill(0xab);
frame.fill(0xff, 0, 6); // broadcast: the kernel counts it and lets it go
const toLinux = await measure(async () => {
  const start = await rxCount();
  for (let i = 0; i < BATCH; i++) await front1.write(frame);
  while ((await rxCount()) - start < BATCH) await Bun.sleep(1);
}, OPTS);
report("our netfront → Linux xen-netback", toLinux);

// The other way: the kernel sends UDP datagrams (from a second Bun process) to a neighbour
// whose MAC is ours; we count the frames that reach our netfront over a fixed time.
let got = 0;
front1.listen(() => got++);
sh(`/usr/sbin/ip addr add 10.99.3.1/24 dev ${vif} && /usr/sbin/ip link set ${vif} mtu ${SIZE - 14} && /usr/sbin/ip neigh add 10.99.3.2 lladdr ${MAC} dev ${vif}`);
const sender = `const s = await Bun.udpSocket({}); const b = new Uint8Array(${SIZE - 42}); for (;;) { for (let i = 0; i < 64; i++) s.send(b, 9, "10.99.3.2"); await Bun.sleep(0); }`;
const blast = Bun.spawn([process.execPath, "-e", sender], { stdout: "ignore", stderr: "inherit" });
await Bun.sleep(500); // let it reach a steady rate
const rates: number[] = [];
for (let i = 0; i < 5; i++) {
  const g0 = got;
  const t0 = performance.now();
  await Bun.sleep(1000);
  rates.push(((got - g0) * 1000) / (performance.now() - t0));
}
blast.kill();
rates.sort((a, b) => a - b);
const med = rates[2]!;
console.log(
  `${"Linux xen-netback → our netfront".padEnd(36)} ${SIZE} B: ${med.toFixed(0).padStart(7)} frames/s  ${((med * SIZE * 8) / 1e6).toFixed(1).padStart(7)} Mbit/s  (median of 5 one-second windows; ${rates[0]!.toFixed(0)}–${rates[4]!.toFixed(0)} frames/s; UDP through the kernel)`,
);
await front1.disconnect();
sh(`xl network-detach 0 ${devid}`);
Bun.spawnSync(["rmmod", "xen-netback"]);
p1.close();

// 2. Our Netfront ↔ our Netback.
const p2 = await createXenPlatform({ domid: 0 });
const p3 = await createXenPlatform({ domid: 0 });
await createVif(p2.xenstore, { frontDomid: 0, backDomid: 0, devid: 12, mac: "00:16:3e:00:00:42" });
const [back, front] = await Promise.all([
  Netback.serve({ platform: p2, frontendDomid: 0, devid: 12, logger, timeoutMs: 30_000 }),
  Netfront.connect({ platform: p3, devid: 12, logger, timeoutMs: 30_000 }),
]);
const up = new Flow(front, back, SIZE);
const down = new Flow(back, front, SIZE);
report("our netfront → our netback", await measure(() => up.batch(BATCH), OPTS));
report("our netback → our netfront", await measure(() => down.batch(BATCH), OPTS));
await front.disconnect();
await back.disconnect();
p2.close();
p3.close();
console.log("(Xen and dom0 under QEMU software emulation, 1 dom0 vCPU: compare the rows, not the absolute values)");
