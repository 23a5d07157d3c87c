/**
 * Runs in dom0 under real Xen: OUR VifServer (Netback.serveAll) serves every vif the toolstack
 * creates for dom0, with no xen-netback loaded. `xl network-attach` makes two vifs, LINUX's
 * xen-netfront takes both, each pings a responder behind its Netback; one is detached with
 * `xl network-detach` and the other goes on.
 */
import { expect, test } from "bun:test";
import pino from "pino";
import { Netback, type VifEvent } from "../../../src/main/index.ts";
import { createXenPlatform } from "../../../src/platform/xen/platform.ts";
import { must, netdevOf, sh, unloadModule, until } from "./shell.ts";
import { respond } from "./responder.ts";

const logger = pino({ level: process.env.XEN_TEST_LOG ?? "info" });
const IPC = "/usr/sbin/ip";

test("our VifServer serves every vif xl creates: Linux netfront on two, pings through each, one detached and the other goes on", async () => {
  await unloadModule("xen-netback");
  await unloadModule("xen-netfront");
  const platform = await createXenPlatform({ domid: 0 });
  const server = await Netback.serveAll({ platform, logger, timeoutMs: 30_000 });
  const events: VifEvent[] = [];
  void (async () => {
    for await (const e of server) events.push(e);
  })();
  await must("modprobe xen-netfront");
  const macs = ["00:16:3e:00:00:41", "00:16:3e:00:00:42"];
  for (const mac of macs) await must(`timeout 60 xl network-attach 0 mac=${mac} script=/etc/xen/scripts/vif-selfloop`);
  const devids = (await must("xenstore-list /local/domain/0/device/vif")).split(/\s+/).filter(Boolean);
  const byMac = new Map<string, number>();
  for (const d of devids) byMac.set((await must(`xenstore-read /local/domain/0/device/vif/${d}/mac`)).trim(), Number(d));
  const ids = macs.map((m) => byMac.get(m)!);
  await until(() => ids.every((d) => server.vifs.has(`0/${d}`)), 60_000, "both vifs served");
  // (Only these two: a vif an earlier test left behind would be served too, and rightly.)
  const added = events.filter((e) => e.type === "added").map((e) => (e as { devid: number }).devid);
  expect(added.filter((d) => ids.includes(d)).sort()).toEqual([...ids].sort());

  // Each vif: the kernel's netdev in a namespace of its own, pinging a responder behind its Netback.
  for (const [i, mac] of macs.entries()) {
    const back = server.vifs.get(`0/${ids[i]}`)!;
    const ip = [10, 99, 5 + i, 1];
    back.listen((f) => {
      const r = respond(f, back.mac, ip);
      if (r !== null) void back.write(r);
    });
    const dev = await netdevOf(mac);
    await must(`${IPC} netns add sa${i} && ${IPC} link set ${dev} netns sa${i} && ${IPC} -n sa${i} addr add 10.99.${5 + i}.2/24 dev ${dev} && ${IPC} -n sa${i} link set ${dev} up`);
    const p = await sh(`${IPC} netns exec sa${i} ping -c 3 -W 3 10.99.${5 + i}.1`);
    console.log(p.out.trim());
    expect(p.out).toMatch(/[23] packets received/);
  }

  // The first vif goes: the toolstack detaches it; the second goes on.
  await must(`${IPC} netns del sa0`);
  await must(`timeout 60 xl network-detach 0 ${ids[0]}`);
  await until(() => events.some((e) => e.type === "removed" && e.devid === ids[0]), 30_000, "the detached vif to be let go of");
  expect(server.vifs.has(`0/${ids[0]}`)).toBe(false);
  const p = await sh(`${IPC} netns exec sa1 ping -c 3 -W 3 10.99.6.1`);
  console.log(p.out.trim());
  expect(p.out).toMatch(/[23] packets received/);

  await must(`${IPC} netns del sa1`);
  await server.close();
  await sh(`timeout 60 xl network-detach 0 ${ids[1]}`);
  await sh("rmmod xen-netfront");
  platform.close();
}, 240_000);
