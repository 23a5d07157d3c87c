/**
 * Runs in dom0 under real Xen: OUR netfront against LINUX's xen-netback. The vif is created the
 * toolstack's way (`xl network-attach`), with no xen-netfront loaded, so our Netfront takes the
 * front end. A responder in the test answers ARP and ICMP for 10.99.1.2, so the kernel's own
 * `ping` through vif0.N works: at MTU 1500, and with scatter-gather frames at MTU 9000.
 */
import { expect, test } from "bun:test";
import pino from "pino";
import { Netfront } from "../../../src/main/index.ts";
import { createXenPlatform } from "../../../src/platform/xen/platform.ts";
import { respondAny } from "./responder.ts";
import { unloadModule } from "./shell.ts";

const logger = pino({ level: process.env.XEN_TEST_LOG ?? "info" });
const MAC = "00:16:3e:00:00:21";
/** The responder answers for 10.99.1.2 and, for the many-flow ping, 10.99.1.11 .. 10.99.1.18. */
const IPS = [[10, 99, 1, 2], ...Array.from({ length: 8 }, (_, i) => [10, 99, 1, 11 + i])];

function sh(cmd: string): { code: number; out: string } {
  const r = Bun.spawnSync(["sh", "-c", cmd], { stdout: "pipe", stderr: "pipe" });
  return { code: r.exitCode, out: r.stdout.toString() + r.stderr.toString() };
}

/** Run a command without blocking the event loop: our listener must answer while it runs. */
async function shAsync(cmd: string): Promise<{ code: number; out: string }> {
  const p = Bun.spawn(["sh", "-c", cmd], { stdout: "pipe", stderr: "pipe" });
  const [out, err] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text()]);
  return { code: await p.exited, out: out + err };
}

function must(cmd: string): string {
  const r = sh(cmd);
  if (r.code !== 0) throw new Error(`${cmd}: exit ${r.code}: ${r.out}`);
  return r.out;
}

test("our netfront <-> Linux xen-netback: two queues, the kernel pings us at MTU 1500 and 9000, flows over both queues", async () => {
  must("modprobe xen-netback");
  must(`xl network-attach 0 mac=${MAC} script=/etc/xen/scripts/vif-selfloop`);
  // Find the device id xl gave it, by MAC.
  const vifs = must("xenstore-list /local/domain/0/device/vif").split(/\s+/).filter(Boolean);
  const devid = Number(vifs.find((d) => sh(`xenstore-read /local/domain/0/device/vif/${d}/mac`).out.trim() === MAC));
  expect(Number.isInteger(devid)).toBe(true);

  const platform = await createXenPlatform({ domid: 0 });
  const front = await Netfront.connect({ platform, devid, logger, timeoutMs: 30_000, queues: 2 });
  // Linux netback offers a queue per dom0 CPU: two.
  expect(must(`xenstore-read /local/domain/0/device/vif/${devid}/multi-queue-num-queues`).trim()).toBe("2");
  expect(front.queues).toBe(2);
  expect(must(`xenstore-read /local/domain/0/backend/vif/0/${devid}/state`).trim()).toBe("4");
  let answered = 0;
  let seen = 0;
  front.listen((f) => {
    seen++;
    const r = respondAny(f, front.mac, IPS);
    if (r !== null) {
      answered++;
      void front.write(r);
    }
  });

  const vif = `vif0.${devid}`;
  must(`/usr/sbin/ip addr add 10.99.1.1/24 dev ${vif} && /usr/sbin/ip link set ${vif} up`);
  const ping1500 = await shAsync("ping -c 3 -W 3 10.99.1.2");
  console.log(ping1500.out.trim());
  expect(ping1500.out).toContain("3 packets received");

  must(`/usr/sbin/ip link set ${vif} mtu 9000`);
  const ping9000 = await shAsync("ping -c 3 -W 3 -s 8000 10.99.1.2");
  console.log(ping9000.out.trim());
  expect(ping9000.out).toContain("3 packets received");
  // The kernel's counters saw our frames: what we sent arrived on its vif netdev.
  const rx = Number(must(`cat /sys/class/net/${vif}/statistics/rx_packets`).trim());
  expect(rx).toBeGreaterThanOrEqual(answered);
  // Eight more flows: the kernel's netback hashes them over both queues, and so do we.
  must(`/usr/sbin/ip link set ${vif} mtu 1500`);
  // Neighbours known up front, so no ping waits on (or races) its ARP under emulation.
  const macText = [...front.mac].map((b) => b.toString(16).padStart(2, "0")).join(":");
  for (let i = 0; i < 8; i++) must(`/usr/sbin/ip neigh replace 10.99.1.${11 + i} lladdr ${macText} dev ${vif}`);
  const many = await Promise.all(Array.from({ length: 8 }, (_, i) => shAsync(`ping -c 2 -W 3 10.99.1.${11 + i}`)));
  // Every flow is answered (ping's own count can miss a reply that comes late under emulation).
  for (const p of many) expect(p.out).toMatch(/[12] packets received/);
  const qs = front.queueStats();
  console.log(`frames seen by our netfront: ${seen}; answered: ${answered}; kernel ${vif} rx_packets: ${rx}; stats ${JSON.stringify(front.stats())}; per queue ${JSON.stringify(qs)}`);
  for (const q of qs) expect(q.rxPackets > 0 && q.txPackets > 0).toBe(true);
  expect(front.stats().rxDrops + front.stats().txDrops).toBe(0);

  await front.disconnect();
  expect(must(`xenstore-read /local/domain/0/device/vif/${devid}/state`).trim()).toBe("6");
  // Take the vif away, as the toolstack would, so no later test's kernel netfront picks it up.
  must(`xl network-detach 0 ${devid}`);
  sh("rmmod xen-netback"); // and the kernel's back end, so it serves no other test's vif
  platform.close();
}, 180_000);

test("our netfront <-> Linux xen-netback loaded with separate_tx_rx_irq=0: one event channel per queue, the kernel pings us", async () => {
  const mac = "00:16:3e:00:00:22";
  must("modprobe xen-netback");
  // The parameter is read when netback probes a vif: set it on the loaded module (0644 in sysfs).
  const param = "/sys/module/xen_netback/parameters/separate_tx_rx_irq";
  must(`echo N > ${param}`);
  let devid = -1;
  let platform: Awaited<ReturnType<typeof createXenPlatform>> | null = null;
  try {
    must(`xl network-attach 0 mac=${mac} script=/etc/xen/scripts/vif-selfloop`);
    const vifs = must("xenstore-list /local/domain/0/device/vif").split(/\s+/).filter(Boolean);
    devid = Number(vifs.find((d) => sh(`xenstore-read /local/domain/0/device/vif/${d}/mac`).out.trim() === mac));
    expect(Number.isInteger(devid)).toBe(true);
    const backPath = `/local/domain/0/backend/vif/0/${devid}`;
    expect(sh(`xenstore-read ${backPath}/feature-split-event-channels`).out.trim()).toBe("0");

    platform = await createXenPlatform({ domid: 0 });
    const front = await Netfront.connect({ platform, devid, logger, timeoutMs: 30_000, queues: 2 });
    const frontPath = `/local/domain/0/device/vif/${devid}`;
    for (const q of [0, 1]) {
      expect(Number(must(`xenstore-read ${frontPath}/queue-${q}/event-channel`).trim())).toBeGreaterThan(0);
      expect(sh(`xenstore-read ${frontPath}/queue-${q}/event-channel-tx`).code).not.toBe(0);
    }
    expect(must(`xenstore-read ${backPath}/state`).trim()).toBe("4");
    front.listen((f) => {
      const r = respondAny(f, front.mac, IPS);
      if (r !== null) void front.write(r);
    });
    const vif = `vif0.${devid}`;
    must(`/usr/sbin/ip addr add 10.99.1.1/24 dev ${vif} && /usr/sbin/ip link set ${vif} up`);
    const ping = await shAsync("ping -c 3 -W 3 10.99.1.2");
    console.log(ping.out.trim());
    expect(ping.out).toContain("3 packets received");
    console.log(`one channel: stats ${JSON.stringify(front.stats())}`);
    expect(front.stats().rxDrops + front.stats().txDrops).toBe(0);
    await front.disconnect();
  } finally {
    // Whatever failed, the vif and the kernel's back end go, so the next test finds neither.
    if (devid >= 0) sh(`xl network-detach 0 ${devid}`);
    sh(`echo Y > ${param}`);
    await unloadModule("xen-netback").catch((e) => console.log(String(e)));
    platform?.close();
  }
}, 180_000);
