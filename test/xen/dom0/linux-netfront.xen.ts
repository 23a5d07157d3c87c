/**
 * Runs in dom0 under real Xen: LINUX's xen-netfront against OUR netback. The vif's xenstore
 * entries are written the toolstack's way (no xen-netback loaded, so the back end is ours); the
 * kernel's eth device goes into a network namespace and pings a responder behind our netback,
 * at MTU 1500 and with large frames at MTU 9000; then the kernel detaches (the driver unbound,
 * then the module unloaded) and our back end closes cleanly.
 */
import { expect, test } from "bun:test";
import pino from "pino";
import { Netback, createVif } from "../../../src/main/index.ts";
import { destroyVif } from "../../../src/main/xenbus/toolstack.ts";
import { createXenPlatform } from "../../../src/platform/xen/platform.ts";
import { must, netdevOf, sh, unloadModule, until } from "./shell.ts";
import { respondAny } from "./responder.ts";

const logger = pino({ level: process.env.XEN_TEST_LOG ?? "info" });
const MAC = "00:16:3e:00:00:31";
/** The responder answers for 10.99.2.1 and, for the many-flow ping, 10.99.2.11 .. 10.99.2.18. */
const IPS = [[10, 99, 2, 1], ...Array.from({ length: 8 }, (_, i) => [10, 99, 2, 11 + i])];
const DEVID = 9;

/** The kernel's netfront device: the netdev whose address is the vif's MAC, once it appears. */
function kernelNetdev(mac: string): Promise<string> {
  return netdevOf(mac, 10_000, "the kernel's netfront device");
}

test("Linux xen-netfront <-> our netback: two queues (one per dom0 CPU), pings through our back end at MTU 1500 and 9000, flows over both queues; the kernel detaching is handled", async () => {
  // The back end must be ours alone: no kernel netback may claim the vif.
  await unloadModule("xen-netback");
  const platform = await createXenPlatform({ domid: 0 });
  const paths = await createVif(platform.xenstore, { frontDomid: 0, backDomid: 0, devid: DEVID, mac: MAC });
  const serving = Netback.serve({ platform, frontendDomid: 0, devid: DEVID, logger, timeoutMs: 30_000 });
  await must("modprobe xen-netfront");
  const back = await serving;
  expect((await must(`xenstore-read ${paths.frontPath}/state`)).trim()).toBe("4");
  // Linux netfront asks for a queue per CPU, up to what we offer: dom0 has two of each.
  expect((await must(`xenstore-read ${paths.backPath}/multi-queue-max-queues`)).trim()).toBe("2");
  expect((await must(`xenstore-read ${paths.frontPath}/multi-queue-num-queues`)).trim()).toBe("2");
  expect(back.queues).toBe(2);
  let answered = 0;
  back.listen((f) => {
    const r = respondAny(f, back.mac, IPS);
    if (r !== null) {
      answered++;
      void back.write(r);
    }
  });

  // The kernel's device: the netdev whose address is the vif's MAC.
  const dev = await kernelNetdev(MAC);
  const IPC = "/usr/sbin/ip";
  await must(`${IPC} netns add nf && ${IPC} link set ${dev} netns nf && ${IPC} -n nf addr add 10.99.2.2/24 dev ${dev} && ${IPC} -n nf link set ${dev} up`);
  const p1 = await sh(`${IPC} netns exec nf ping -c 3 -W 3 10.99.2.1`);
  console.log(p1.out.trim());
  expect(p1.out).toContain("3 packets received");
  await must(`${IPC} -n nf link set ${dev} mtu 9000`);
  const p2 = await sh(`${IPC} netns exec nf ping -c 3 -W 3 -s 8000 10.99.2.1`);
  console.log(p2.out.trim());
  expect(p2.out).toContain("3 packets received");
  // Eight more flows (eight addresses): the kernel hashes them over both queues, and so do we.
  await must(`${IPC} -n nf link set ${dev} mtu 1500`);
  // Neighbours known up front, so no ping waits on (or races) its ARP under emulation.
  for (let i = 0; i < 8; i++) await must(`${IPC} -n nf neigh replace 10.99.2.${11 + i} lladdr fe:ff:ff:ff:ff:ff dev ${dev}`);
  const many = await Promise.all(Array.from({ length: 8 }, (_, i) => sh(`${IPC} netns exec nf ping -c 2 -W 3 10.99.2.${11 + i}`)));
  // Every flow is answered (ping's own count can miss a reply that comes late under emulation);
  // and every frame crossed: what the kernel's eth0 sent we received, and the other way round.
  for (const p of many) expect(p.out).toMatch(/[12] packets received/);
  const counters = async (name: string) => Number((await sh(`${IPC} netns exec nf cat /sys/class/net/${dev}/statistics/${name}`)).out.trim());
  expect([await counters("tx_packets"), await counters("rx_packets")]).toEqual([back.stats().rxPackets, back.stats().txPackets]);
  const qs = back.queueStats();
  console.log(`answered ${answered}; netback stats ${JSON.stringify(back.stats())}; per queue ${JSON.stringify(qs)}`);
  expect(qs.length).toBe(2);
  for (const q of qs) expect(q.rxPackets > 0 && q.txPackets > 0).toBe(true);
  expect(back.stats().rxDrops + back.stats().txDrops).toBe(0);

  // The kernel detaches: unbinding runs netfront's remove, which closes the device; our back
  // end follows and closes. Then the module goes (busybox rmmod does not wait for users).
  await must(`${IPC} netns del nf`);
  await must(`echo vif-${DEVID} > /sys/bus/xen/drivers/vif/unbind`);
  await until(() => !back.connected, 15_000, "our netback to notice the front end leaving");
  const rm = await sh("rmmod xen-netfront");
  console.log(`rmmod xen-netfront: exit ${rm.code} ${rm.out.trim()}`);
  await back.disconnect();
  expect((await must(`xenstore-read ${paths.backPath}/state`)).trim()).toBe("6");
  // Take the vif away, as the toolstack would: no later test may find it (the VifServer would serve it).
  await destroyVif(platform.xenstore, 0, 0, DEVID);
  platform.close();
}, 180_000);

test("Linux xen-netfront <-> our netback offering neither split channels nor scatter-gather (as QEMU's back end): one event channel, MTU 1500, pings through", async () => {
  await unloadModule("xen-netback");
  const devid = 10;
  const mac = "00:16:3e:00:00:32";
  const platform = await createXenPlatform({ domid: 0 });
  const paths = await createVif(platform.xenstore, { frontDomid: 0, backDomid: 0, devid, mac, mtu: 9000 });
  const serving = Netback.serve({ platform, frontendDomid: 0, devid, logger, timeoutMs: 30_000, splitEventChannels: false, scatterGather: false });
  await must("modprobe xen-netfront");
  const back = await serving;
  // Whatever fails, the kernel's netfront and the vif go, so the next test finds neither.
  try {
    expect((await must(`xenstore-read ${paths.backPath}/feature-split-event-channels`)).trim()).toBe("0");
    expect((await must(`xenstore-read ${paths.backPath}/feature-sg`)).trim()).toBe("0");
    // Linux netfront falls back to one channel per queue.
    const ec = (await sh(`xenstore-read ${paths.frontPath}/queue-0/event-channel || xenstore-read ${paths.frontPath}/event-channel`)).out.trim();
    expect(Number(ec)).toBeGreaterThan(0);
    expect((await sh(`xenstore-read ${paths.frontPath}/event-channel-tx`)).code).not.toBe(0);
    expect([back.mtu, back.maxFrameSize]).toEqual([1500, 1514]);
    back.listen((f) => {
      const r = respondAny(f, back.mac, IPS);
      if (r !== null) void back.write(r);
    });
    const dev = await kernelNetdev(mac);
    const IPC = "/usr/sbin/ip";
    await must(`${IPC} netns add nf2 && ${IPC} link set ${dev} netns nf2 && ${IPC} -n nf2 addr add 10.99.2.2/24 dev ${dev} && ${IPC} -n nf2 link set ${dev} up`);
    const p = await sh(`${IPC} netns exec nf2 ping -c 3 -W 3 -s 1472 10.99.2.1`);
    console.log(p.out.trim());
    expect(p.out).toContain("3 packets received");
    console.log(`one channel, no sg: netback stats ${JSON.stringify(back.stats())}`);
    expect(back.stats().rxDrops + back.stats().txDrops + back.stats().rxErrors).toBe(0);
    await must(`${IPC} netns del nf2`);
    await must(`echo vif-${devid} > /sys/bus/xen/drivers/vif/unbind`);
    await until(() => !back.connected, 15_000, "our netback to notice the front end leaving");
  } finally {
    await sh("/usr/sbin/ip netns del nf2 2>/dev/null");
    await sh("rmmod xen-netfront");
    await back.disconnect();
    await destroyVif(platform.xenstore, 0, 0, devid);
    platform.close();
  }
}, 180_000);
