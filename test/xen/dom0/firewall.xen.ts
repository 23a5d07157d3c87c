/**
 * Runs in dom0 under real Xen: examples/firewall between two Linux network stacks. Two vifs
 * (front and back both dom0, as the toolstack writes them); LINUX's xen-netfront takes the front
 * ends, the firewall's VifServer the back ends (no xen-netback loaded). Each kernel netdev goes
 * into a network namespace of its own, on one subnet: they ping each other and run a TCP stream
 * (busybox nc) through the firewall, byte for byte, and a rule drops TCP to port 7777.
 */
import { expect, test } from "bun:test";
import pino from "pino";
import { createVif, destroyVif, type Netback } from "../../../src/main/index.ts";
import { createXenPlatform } from "../../../src/platform/xen/platform.ts";
import { Firewall, formatStats } from "../../../examples/firewall/firewall.ts";
import { mac } from "../../../examples/firewall/packets.ts";
import { must, netdevOf, sh, unloadModule, until } from "./shell.ts";

const logger = pino({ level: process.env.XEN_TEST_LOG ?? "info" });
const IPC = "/usr/sbin/ip";
const SIDES = [
  { devid: 41, mac: "00:16:3e:00:00:61", ns: "fwa", ip: "10.99.30.1" },
  { devid: 42, mac: "00:16:3e:00:00:62", ns: "fwb", ip: "10.99.30.2" },
];
const RULES = {
  default: "allow",
  rules: [
    { name: "no 7777", action: "drop", proto: "tcp", dport: 7777 },
    { name: "arp", action: "allow", ethertype: "arp" },
  ],
};

test("Linux netfront <-> the firewall <-> Linux netfront: ping both ways, a TCP stream byte for byte, TCP to port 7777 dropped by its rule, counters to match", async () => {
  // The back ends must be the firewall's alone.
  await unloadModule("xen-netback");
  await unloadModule("xen-netfront");
  const platform = await createXenPlatform({ domid: 0 });
  const fw = await Firewall.start({ platform, rules: RULES, uplink: false, logger, serve: { timeoutMs: 30_000 } });
  try {
    for (const s of SIDES) await createVif(platform.xenstore, { frontDomid: 0, backDomid: 0, devid: s.devid, mac: s.mac });
    await must("modprobe xen-netfront");
    await until(() => SIDES.every((s) => fw.ports.has(`vif0.${s.devid}`)), 60_000, "both vifs served");
    for (const s of SIDES) {
      const dev = await netdevOf(s.mac);
      await must(`${IPC} netns add ${s.ns} && ${IPC} link set ${dev} netns ${s.ns} && ${IPC} -n ${s.ns} addr add ${s.ip}/24 dev ${dev} && ${IPC} -n ${s.ns} link set ${dev} up && ${IPC} -n ${s.ns} link set lo up`);
    }
    const [a, b] = SIDES as [(typeof SIDES)[0], (typeof SIDES)[0]];
    const portA = fw.ports.get(`vif0.${a.devid}`)!;
    const portB = fw.ports.get(`vif0.${b.devid}`)!;

    // Ping both ways (the first ARP floods, then the MACs are learned).
    for (const [from, to] of [[a, b], [b, a]] as const) {
      const p = await sh(`${IPC} netns exec ${from.ns} ping -c 3 -W 3 ${to.ip}`);
      console.log(p.out.trim());
      expect(p.out).toMatch(/[23] packets received/);
    }
    expect(fw.bridge.lookup(mac(a.mac))?.name).toBe(portA.name);
    expect(fw.bridge.lookup(mac(b.mac))?.name).toBe(portB.name);

    // A TCP stream a -> b through the firewall: 2 MiB, compared by hash.
    await must("dd if=/dev/urandom of=/tmp/fw-send bs=64k count=32 2>/dev/null && rm -f /tmp/fw-hold /tmp/fw-recv && mkfifo /tmp/fw-hold");
    // The server's stdin is a FIFO it holds open itself: busybox nc half-closes the connection at
    // EOF on stdin, and the client, seeing that, would stop sending.
    const server = Bun.spawn(["sh", "-c", `${IPC} netns exec ${b.ns} timeout 120 nc -l -p 5001 0<>/tmp/fw-hold > /tmp/fw-recv`], { stdout: "ignore", stderr: "pipe" });
    await Bun.sleep(500); // the listener is up
    const t0 = performance.now();
    const client = await sh(`${IPC} netns exec ${a.ns} timeout 120 nc ${b.ip} 5001 < /tmp/fw-send`);
    const serverCode = await server.exited;
    const secs = (performance.now() - t0) / 1000;
    console.log(`tcp stream: 2 MiB in ${secs.toFixed(2)} s (${(16 / secs).toFixed(1)} Mbit/s); client exit ${client.code}, server exit ${serverCode}`);
    const [sent, got] = await Promise.all([must("sha256sum < /tmp/fw-send"), must("sha256sum < /tmp/fw-recv")]);
    expect(got).toBe(sent);

    // TCP to port 7777: the rule drops the SYNs, the connect fails.
    const ruleDrops = portA.counters.droppedRule;
    const hitsBefore = fw.stats().rules[0]!.hits;
    const listener = Bun.spawn(["sh", "-c", `${IPC} netns exec ${b.ns} timeout 15 nc -l -p 7777`], { stdout: "ignore", stderr: "ignore" });
    await Bun.sleep(500);
    const blocked = await sh(`echo hello | ${IPC} netns exec ${a.ns} timeout 8 nc -w 5 ${b.ip} 7777`);
    expect(blocked.code).not.toBe(0);
    expect(portA.counters.droppedRule).toBeGreaterThan(ruleDrops);
    expect(fw.stats().rules[0]!.hits).toBeGreaterThan(hitsBefore);
    listener.kill();
    await listener.exited;

    const s = fw.stats();
    console.log(formatStats(s));
    for (const p of [portA, portB]) {
      expect(p.counters.forwarded).toBeGreaterThan(0);
      expect(p.counters.droppedMalformed).toBe(0);
    }
    // The stream's 2 MiB went a -> b unicast: in about 1450 segments of 1448 bytes, or (the
    // firewall's Netbacks offer GSO, so Linux netfront sends TSO frames) in fewer, larger ones.
    expect(portA.counters.forwarded).toBeGreaterThan(16);
    expect((portB.device as unknown as Netback).stats().txBytes).toBeGreaterThan(2 << 20);
  } finally {
    for (const s of SIDES) await sh(`${IPC} netns del ${s.ns}`);
    await fw.close();
    for (const s of SIDES) await destroyVif(platform.xenstore, 0, 0, s.devid).catch(() => {});
    await unloadModule("xen-netfront").catch(() => {});
    platform.close();
  }
}, 240_000);
