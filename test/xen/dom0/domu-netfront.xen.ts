/**
 * Runs in dom0 under real Xen, with a SEPARATE domain: a PV domU (build-image.sh's vmlinuz and
 * domu.cpio) whose LINUX xen-netfront uses a vif served by OUR netback in dom0 (a VifServer, as
 * a driver domain runs it). Across domains, domain ids, grant targets and xenstore permissions
 * are what they are in production; with both ends in dom0 a mistake in them can hide. The domU
 * pings a responder behind our back end at MTU 1500 and 9000 and reports what it saw in its own
 * xenstore directory. The first ping must be answered at once: a Linux netfront in a domU once
 * saw none of our frames for its first 5-11 s.
 *
 * Not in CI (`test/xen/run.sh test/xen/domu-test.sh` runs it): the emulated machine crashes dom0
 * processes while a PV domU with a vif boots, with Linux netback as well (test/xen/domu-env.sh;
 * test/xen/README.md). Seen before that was known: in 6 of 8 runs
 * the dom0 Bun process died (SIGSEGV at a reference-count increment, `lock addl $2,(%rax)`, in
 * a thread just started; SIGABRT or SIGILL in others), during the handshake or after the guest
 * went away; never in the dom0-only tests (Linux netback serving the domU looked clean then;
 * domu-env.sh has since shown xl create and md5sum crashing with it). The first
 * ping: the domU's eth0 comes up before our Netback is Connected, and Linux netfront sends
 * nothing until then, so its first frames waited for our handshake (7 s once: the pool's
 * threads started only after the front end was ready; they now start while we wait for it).
 */
import { expect, test } from "bun:test";
import pino from "pino";
import { Netback, type VifEvent } from "../../../src/main/index.ts";
import { createXenPlatform } from "../../../src/platform/xen/platform.ts";
import { respondAny } from "./responder.ts";
import { must, sh, unloadModule, until } from "./shell.ts";

const logger = pino({ level: process.env.XEN_TEST_LOG ?? "info" });
const MAC = "00:16:3e:00:00:61";
const PEER = [10, 99, 7, 1];

test.skipIf(process.env.XEN_RIG_DOMU !== "1")("Linux xen-netfront in a PV domU <-> our netback in dom0: pings at MTU 1500 and 9000, the first one answered at once; the guest destroyed leaves nothing of the vif", async () => {
  for (const m of ["xen-netback", "xen-netfront"]) await unloadModule(m);
  await sh("mkdir -p /var/log/xen/console && xenconsoled --log=guest --log-dir=/var/log/xen/console");
  const platform = await createXenPlatform({ domid: 0 });
  const server = await Netback.serveAll({ platform, logger, timeoutMs: 30_000 });
  const events: VifEvent[] = [];
  let answered = 0;
  // When each frame came in and each answer went out (dom0's clock; the domU reports its own, from the same hypervisor).
  const seen: string[] = [];
  void (async () => {
    for await (const e of server) {
      events.push(e);
      if (e.type === "added") {
        const back = e.netback;
        back.listen((f) => {
          const r = respondAny(f, back.mac, [PEER]);
          if (seen.length < 12) seen.push(`${(Date.now() / 1000).toFixed(3)} in ${f.length}${r !== null ? " answered" : ""}`);
          if (r !== null) {
            answered++;
            void back.write(r);
          }
        });
      }
    }
  })();
  const cfg = [
    'name="domu1"',
    'type="pv"',
    'kernel="/boot/xen-rig/vmlinuz"',
    'ramdisk="/boot/xen-rig/domu.cpio"',
    'extra="console=hvc0 rdinit=/init quiet xenrig.ip=10.99.7.2/24 xenrig.peer=10.99.7.1"',
    "memory=160",
    "vcpus=1",
    `vif=['mac=${MAC},script=/etc/xen/scripts/vif-selfloop']`,
    'on_poweroff="destroy"',
  ].join("\n");
  await Bun.write("/tmp/domu1.cfg", cfg + "\n");
  let domid = -1;
  try {
    const t0 = performance.now();
    await must("timeout 120 xl create /tmp/domu1.cfg");
    domid = Number((await must("xl domid domu1")).trim());
    console.log(`domU ${domid} created in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
    const data = (k: string) => sh(`xenstore-read /local/domain/${domid}/data/${k}`).then((r) => (r.code === 0 ? r.out.trim() : null));
    await until(async () => (await data("done")) !== null, 150_000, "the domU's report");
    const report: Record<string, string | null> = {};
    for (const k of ["booted", "link-up", "link-up-clock", "first-reply", "first-reply-clock", "first-rtt", "rx-after-first", "ping1500", "ping9000", "rx-packets", "tx-packets", "irqs", "error"]) report[k] = await data(k);
    const back = [...server.vifs.values()][0];
    console.log(`domU report ${JSON.stringify(report)}; answered ${answered}; netback stats ${JSON.stringify(back?.stats())}; first frames at dom0: ${seen.join("; ")}`);
    await must(`xenstore-write /local/domain/${domid}/data/ack 1`);
    expect(report.error).toBeNull();
    expect(back?.frontendId).toBe(domid);
    // The first ping, sent right after the link comes up, is answered at once (its ARP too).
    expect(Number(report["first-reply"]) - Number(report["link-up"])).toBeLessThan(2);
    expect(report.ping1500).toBe("3 packets received");
    expect(report.ping9000).toBe("3 packets received");
    // Every frame it received we sent, and the other way round.
    expect(Number(report["rx-packets"])).toBe(back!.stats().txPackets);
    // The guest powers off: the toolstack destroys it and removes the vif; we let go of it.
    await until(async () => (await sh("xl domid domu1")).code !== 0, 60_000, "the domU to be destroyed");
    domid = -1;
    await until(() => server.vifs.size === 0, 30_000, "the VifServer to let go of the vif");
    expect(events.map((e) => e.type)).toEqual(["added", "removed"]);
    const left = await sh(`xenstore-ls -f /local/domain/0/backend/vif 2>/dev/null | grep -v '^/local/domain/0/backend/vif/0' || true`);
    expect(left.out.trim()).toBe("");
  } finally {
    if (domid >= 0) await sh(`xl destroy ${domid}`);
    await server.close();
    await sh("cat /var/log/xen/console/guest-domu1.log 2>/dev/null | tail -20").then((r) => r.out.trim() && console.log(`domU console:\n${r.out}`));
    await sh("pkill xenconsoled");
    platform.close();
  }
}, 300_000);
