/**
 * Runs in dom0 under real Xen: what GSO is worth through a frame relay built on the package.
 * examples/firewall between two Linux xen-netfront stacks in network namespaces (as in
 * firewall.xen.ts), the same TCP stream twice in one boot: the firewall's Netbacks with
 * `gso: true` (Linux netfront sees feature-gso-tcpv4=1, sends 64 KiB TSO frames; the bridge
 * passes `info.gso` on and our Netback hands them to the other netfront whole, with the gap
 * slot) and with `gso: false` (keys 0: one MTU per packet). Both byte-exact by sha256; MB/s of
 * each and the ratio printed.
 */
import { expect, test } from "bun:test";
import pino from "pino";
import { availableParallelism } from "node:os";
import { configurePool, createVif, destroyVif, type Netback } from "../../../src/main/index.ts";
import { createXenPlatform } from "../../../src/platform/xen/platform.ts";
import { Firewall } from "../../../examples/firewall/firewall.ts";
import { must, netdevOf, sh, unloadModule, until } from "./shell.ts";

const logger = pino({ level: process.env.XEN_TEST_LOG ?? "info" });
const IPC = "/usr/sbin/ip";
const MIB = Number(process.env.FW_GSO_MIB ?? 4);
const SIDES = [
  { devid: 43, mac: "00:16:3e:00:00:63", ns: "fga", ip: "10.99.31.1" },
  { devid: 44, mac: "00:16:3e:00:00:64", ns: "fgb", ip: "10.99.31.2" },
];

interface Run {
  mbps: number;
  secs: number;
  /** Frames the firewall took from side a's netfront, and their mean size. */
  framesIn: number;
  meanFrame: number;
  keys: string;
}

/** One stream a -> b through a fresh firewall whose Netbacks have `gso`; everything torn down after. */
async function stream(gso: boolean): Promise<Run> {
  await unloadModule("xen-netback");
  await unloadModule("xen-netfront");
  const platform = await createXenPlatform({ domid: 0 });
  const fw = await Firewall.start({ platform, rules: { default: "allow", rules: [] }, uplink: false, logger, serve: { timeoutMs: 30_000, gso } });
  try {
    for (const s of SIDES) await createVif(platform.xenstore, { frontDomid: 0, backDomid: 0, devid: s.devid, mac: s.mac });
    await must("modprobe xen-netfront");
    await until(() => SIDES.every((s) => fw.ports.has(`vif0.${s.devid}`)), 60_000, "both vifs served");
    for (const s of SIDES) {
      const dev = await netdevOf(s.mac);
      await must(`${IPC} netns add ${s.ns} && ${IPC} link set ${dev} netns ${s.ns} && ${IPC} -n ${s.ns} addr add ${s.ip}/24 dev ${dev} && ${IPC} -n ${s.ns} link set ${dev} up && ${IPC} -n ${s.ns} link set lo up`);
    }
    const [a, b] = SIDES as [(typeof SIDES)[0], (typeof SIDES)[0]];
    const back = `/local/domain/0/backend/vif/0/${a.devid}`;
    const front = `/local/domain/0/device/vif/${a.devid}`;
    const keys = `back gso-tcpv4=${await platform.xenstore.read(`${back}/feature-gso-tcpv4`)}, front (Linux netfront) gso-tcpv4=${await platform.xenstore.read(`${front}/feature-gso-tcpv4`)} gso-tcpv6=${await platform.xenstore.read(`${front}/feature-gso-tcpv6`)}`;
    const p = await sh(`${IPC} netns exec ${a.ns} ping -c 2 -W 3 ${b.ip}`);
    expect(p.out).toMatch(/[12] packets received/);
    const devA = fw.ports.get(`vif0.${a.devid}`)!.device as unknown as Netback;
    const before = devA.stats();
    await must(`dd if=/dev/urandom of=/tmp/fg-send bs=1M count=${MIB} 2>/dev/null && rm -f /tmp/fg-hold /tmp/fg-recv && mkfifo /tmp/fg-hold`);
    // As in firewall.xen.ts: the server holds its stdin FIFO open, so busybox nc does not half-close.
    const server = Bun.spawn(["sh", "-c", `${IPC} netns exec ${b.ns} timeout 200 nc -l -p 5002 0<>/tmp/fg-hold > /tmp/fg-recv`], { stdout: "ignore", stderr: "pipe" });
    await Bun.sleep(500);
    const t0 = performance.now();
    const client = await sh(`${IPC} netns exec ${a.ns} timeout 200 nc ${b.ip} 5002 < /tmp/fg-send`);
    await server.exited;
    const secs = (performance.now() - t0) / 1000;
    const [sent, got] = await Promise.all([must("sha256sum < /tmp/fg-send"), must("sha256sum < /tmp/fg-recv")]);
    expect(client.code).toBe(0);
    expect(got).toBe(sent);
    const after = devA.stats();
    const framesIn = after.rxPackets - before.rxPackets;
    return { mbps: MIB / secs, secs, framesIn, meanFrame: (after.rxBytes - before.rxBytes) / framesIn, keys };
  } finally {
    for (const s of SIDES) await sh(`${IPC} netns del ${s.ns}`);
    await fw.close();
    for (const s of SIDES) await destroyVif(platform.xenstore, 0, 0, s.devid).catch(() => {});
    await unloadModule("xen-netfront").catch(() => {});
    platform.close();
  }
}

test(`GSO through the firewall: a ${MIB} MiB TCP stream between two Linux netfronts with the Netbacks at gso: true and gso: false, byte-exact both ways, MB/s and the ratio`, async () => {
  // One ring worker of each kind: under emulation a worker takes many seconds to start, and
  // four starting at once when the Linux netfronts connect outran the pool's 15 s bound on
  // taking a ring (twice in the rig), after which Linux netfront does not come back. Both
  // runs get the same pool; later test files get the default again.
  configurePool({ txWorkers: 1, rxWorkers: 1 });
  let on: Run;
  let off: Run;
  try {
    on = await stream(true);
    off = await stream(false);
  } finally {
    const n = Math.max(1, Math.min(4, availableParallelism()));
    configurePool({ txWorkers: n, rxWorkers: n });
  }
  for (const [name, r] of [["gso: true ", on], ["gso: false", off]] as const) {
    console.log(`firewall ${name}: ${MIB} MiB in ${r.secs.toFixed(2)} s = ${r.mbps.toFixed(2)} MB/s; ${r.framesIn} frames in from side a, mean ${r.meanFrame.toFixed(0)} B; keys: ${r.keys}`);
  }
  console.log(`firewall GSO ratio (on / off): ${(on.mbps / off.mbps).toFixed(2)}x`);
  // What the keys said happened: 64 KiB frames with GSO, none over the MTU without.
  expect(on.keys).toContain("back gso-tcpv4=1");
  expect(off.keys).toContain("back gso-tcpv4=0");
  expect(on.meanFrame).toBeGreaterThan(1514);
  expect(off.meanFrame).toBeLessThanOrEqual(1514);
}, 480_000);
