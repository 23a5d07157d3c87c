/**
 * Runs in dom0 under real Xen: OUR netfront against QEMU's userspace back end (hw/net/xen_nic.c,
 * the `qnic` back end of Debian's qemu-system-xen, QEMU 7.2), started in dom0 with -xen-attach
 * for a vif of dom0. QEMU offers only rx-copy: one event channel, no scatter-gather, no
 * extra-info. The vif's directories are written the toolstack's way for a qnic device.
 */
import { expect, test } from "bun:test";
import { existsSync } from "node:fs";
import pino from "pino";
import { Netfront } from "../../../src/main/index.ts";
import { createXenPlatform } from "../../../src/platform/xen/platform.ts";
import { must, sh, unloadModule, until } from "./shell.ts";

const QEMU = "/usr/libexec/xen-qemu-system-i386";
const logger = pino({ level: process.env.XEN_TEST_LOG ?? "info" });
const DEVID = 20;
const MAC = "00:16:3e:00:00:51";

test.skipIf(!existsSync(QEMU))("our netfront <-> QEMU's xen_nic back end: one event channel, one slot per packet, frames answered", async () => {
  // Our Netfront must take the device: no kernel netfront (nor netback) may claim it.
  for (const m of ["xen-netfront", "xen-netback"]) await unloadModule(m);
  const front = `/local/domain/0/device/vif/${DEVID}`;
  const back = `/local/domain/0/backend/qnic/0/${DEVID}`;
  const keys: [string, string][] = [
    [`${front}/backend`, back],
    [`${front}/backend-id`, "0"],
    [`${front}/handle`, String(DEVID)],
    [`${front}/mac`, MAC],
    [`${front}/state`, "1"],
    [`${back}/frontend`, front],
    [`${back}/frontend-id`, "0"],
    [`${back}/handle`, String(DEVID)],
    [`${back}/mac`, MAC],
    [`${back}/online`, "1"],
    [`${back}/state`, "1"],
  ];
  for (const [k, v] of keys) await must(`xenstore-write ${k} ${v}`);
  const qemu = Bun.spawn([QEMU, "-xen-domid", "0", "-xen-attach", "-M", "xenpv", "-display", "none", "-nodefaults", "-monitor", "none", "-serial", "none", "-parallel", "none"], {
    stdout: "pipe",
    stderr: "pipe",
  });
  const out = Promise.all([new Response(qemu.stdout).text(), new Response(qemu.stderr).text()]);
  try {
    await until(async () => (await sh(`xenstore-read ${back}/state`)).out.trim() === "2" || qemu.exitCode !== null, 30_000, "QEMU's back end to offer the vif (InitWait)").catch(async (e) => {
      qemu.kill();
      const [o, err] = await out;
      console.log(`QEMU exit ${qemu.exitCode}; stdout: ${o}; stderr: ${err}`);
      console.log((await sh(`xenstore-ls -f /local/domain/0/backend`)).out);
      throw e;
    });
    expect(qemu.exitCode).toBeNull();
    console.log((await sh(`xenstore-ls -f ${back}`)).out);
    const platform = await createXenPlatform({ domid: 0 });
    const dev = await Netfront.connect({ platform, devid: DEVID, logger, timeoutMs: 30_000 });
    expect([dev.queues, dev.mtu, dev.maxFrameSize]).toEqual([1, 1500, 1514]);
    expect((await sh(`xenstore-read ${front}/event-channel`)).code).toBe(0);
    expect((await sh(`xenstore-read ${front}/event-channel-tx`)).code).not.toBe(0);
    const frame = new Uint8Array(1514);
    frame.fill(0xff, 0, 6);
    frame.set(dev.mac, 6);
    frame.set([0x88, 0xb5], 12); // a local experimental ethertype: nobody behind QEMU answers it
    for (let i = 0; i < 50; i++) await dev.write(frame.subarray(0, 60 + ((i * 97) % 1455)), { csumBlank: i % 2 === 0 });
    await until(() => dev.stats().txPackets === 50, 20_000, "our frames sent");
    // Each was answered OKAY: none refused (no more_data, no extra_info, none over a page).
    await dev.disconnect();
    console.log(`qemu: netfront stats ${JSON.stringify(dev.stats())}`);
    expect(dev.stats()).toMatchObject({ txPackets: 50, txErrors: 0, txDrops: 0, txLost: 0 });
    platform.close();
  } finally {
    qemu.kill();
    await sh(`xenstore-rm ${front}; xenstore-rm ${back}`);
  }
}, 120_000);
