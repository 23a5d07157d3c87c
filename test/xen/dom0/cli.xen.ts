/**
 * Runs in dom0 under real Xen: the `bun-xen-net` command as a user runs it on a Xen host, as a
 * subprocess. `list` reads this domain's xenstore and shows a vif we serve and front (ours ↔
 * ours, both in dom0) as Connected with its MAC and MTU; `bench` creates a vif of this domain
 * to itself, measures both ways and removes it again.
 */
import { expect, test } from "bun:test";
import pino from "pino";
import { Netback, Netfront, createVif, destroyVif } from "../../../src/main/index.ts";
import { createXenPlatform } from "../../../src/platform/xen/platform.ts";
import { unloadModule } from "./shell.ts";

const logger = pino({ level: process.env.XEN_TEST_LOG ?? "warn" });
const cli = `${import.meta.dir}/../../../src/cli/main.ts`;

async function run(args: string[]): Promise<{ code: number; out: string; err: string }> {
  const p = Bun.spawn([process.execPath, cli, ...args], { stdout: "pipe", stderr: "pipe", env: { ...process.env, BUN_XEN_NET_PLATFORM: "xen" } });
  const [out, err] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text()]);
  return { code: await p.exited, out, err };
}

test("bun-xen-net list on Xen: a vif this domain serves and fronts, Connected, with its MAC and MTU; bench over a vif of its own, both ways", async () => {
  for (const m of ["xen-netback", "xen-netfront"]) await unloadModule(m);
  const platform = await createXenPlatform({ domid: 0 });
  const devid = 11;
  const mac = "00:16:3e:00:00:b1";
  await createVif(platform.xenstore, { frontDomid: 0, backDomid: 0, devid, mac, mtu: 9000 });
  try {
    const [back, front] = await Promise.all([
      Netback.serve({ platform, frontendDomid: 0, devid, logger, timeoutMs: 30_000 }),
      Netfront.connect({ platform, devid, logger, timeoutMs: 30_000 }),
    ]);
    const listed = await run(["list", "--json"]);
    expect(listed.code, listed.err).toBe(0);
    const vifs = JSON.parse(listed.out) as { role: string; devid: number; state: string; peerState: string; mac: string; mtu: number }[];
    const ours = vifs.filter((v) => v.devid === devid);
    expect(ours.map((v) => v.role).sort()).toEqual(["back", "front"].sort());
    for (const v of ours) {
      expect([v.state, v.peerState]).toEqual(["Connected", "Connected"]);
      expect(v.mac).toBe(mac);
      expect(v.mtu).toBe(9000);
    }
    const table = await run(["list"]);
    expect(table.code, table.err).toBe(0);
    expect(table.out).toContain(mac);
    await front.disconnect();
    await back.disconnect();
    await destroyVif(platform.xenstore, 0, 0, devid);
    const before = await run(["list", "--json"]);

    const t0 = performance.now();
    const bench = await run(["bench", "--duration", "0.3", "--sizes", "64,1514", "--json"]);
    console.log(`bench on Xen in ${((performance.now() - t0) / 1000).toFixed(1)} s: ${bench.out.trim()}`);
    expect(bench.code, bench.err).toBe(0);
    const doc = JSON.parse(bench.out) as { rows: { direction: string; size: number; framesPerSec: number }[] };
    expect(doc.rows.map((r) => `${r.direction} ${r.size}`).sort()).toEqual(["back->front 1514", "back->front 64", "front->back 1514", "front->back 64"]);
    for (const r of doc.rows) expect(r.framesPerSec).toBeGreaterThan(0);
    // It removed the vif it made for itself.
    const after = await run(["list", "--json"]);
    expect(JSON.parse(after.out)).toEqual(JSON.parse(before.out));
  } finally {
    await destroyVif(platform.xenstore, 0, 0, devid).catch(() => {});
    platform.close();
  }
}, 240_000);
