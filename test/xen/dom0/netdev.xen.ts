/**
 * Runs in dom0 under real Xen (test/xen/run.sh test/xen/bun-test.sh ./test/xen/dom0/netdev.xen.ts):
 * our Netfront and our Netback, both in domain 0, over real grants (gntalloc/gntdev), real event
 * channels and the real xenstored, with the vif created the toolstack's way.
 */
import { expect, test } from "bun:test";
import pino from "pino";
import { Netback, Netfront, createVif, type FrameBatch } from "../../../src/main/index.ts";
import { destroyVif } from "../../../src/main/xenbus/toolstack.ts";
import { unloadModule } from "./shell.ts";
import { createXenPlatform } from "../../../src/platform/xen/platform.ts";

const logger = pino({ level: process.env.XEN_TEST_LOG ?? "info" });

function frame(len: number, seed: number): Uint8Array {
  const f = new Uint8Array(len);
  for (let i = 0; i < len; i++) f[i] = (seed * 131 + i * 7) & 0xff;
  return f;
}

async function until(cond: () => boolean, ms: number): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error("condition not met in time");
    await Bun.sleep(5);
  }
}

test("our netfront <-> our netback over real Xen: frames both ways byte-exact (per frame and with tryWriteMany/listenBatch), second claims refused, nothing lost at disconnect", async () => {
  // Both ends are ours: the kernel's vif drivers must not claim the device.
  for (const m of ["xen-netback", "xen-netfront"]) await unloadModule(m);
  const backPlatform = await createXenPlatform({ domid: 0 });
  const frontPlatform = await createXenPlatform({ domid: 0 });
  const devid = 7;
  const paths = await createVif(backPlatform.xenstore, { frontDomid: 0, backDomid: 0, devid, mac: "00:16:3e:00:00:77" });
  const t0 = performance.now();
  const [back, front] = await Promise.all([
    Netback.serve({ platform: backPlatform, frontendDomid: 0, devid, logger, timeoutMs: 30_000 }),
    Netfront.connect({ platform: frontPlatform, devid, logger, timeoutMs: 30_000 }),
  ]);
  console.log(`connected in ${(performance.now() - t0).toFixed(0)} ms`);
  expect(await backPlatform.xenstore.read(`${paths.frontPath}/state`)).toBe("4");
  expect(await backPlatform.xenstore.read(`${paths.backPath}/state`)).toBe("4");

  const sizes = [60, 1514, 4096, 4097, 9014, 65535];
  const N = Number(process.env.XEN_TEST_FRAMES ?? 200);
  const up: Uint8Array[] = [];
  const down: Uint8Array[] = [];
  back.listen((f) => up.push(f.slice()));
  front.listen((f) => down.push(f.slice()));
  const t1 = performance.now();
  for (let i = 0; i < N; i++) {
    const n = sizes[i % sizes.length]!;
    await front.write(frame(n, i));
    await back.write(frame(n, i + 1000));
  }
  await until(() => up.length === N && down.length === N, 60_000);
  const secs = (performance.now() - t1) / 1000;
  for (let i = 0; i < N; i++) {
    const n = sizes[i % sizes.length]!;
    if (!Bun.deepEquals(up[i], frame(n, i))) throw new Error(`front -> back frame ${i} (${n} bytes) differs`);
    if (!Bun.deepEquals(down[i], frame(n, i + 1000))) throw new Error(`back -> front frame ${i} (${n} bytes) differs`);
  }
  const bytes = up.reduce((s, f) => s + f.length, 0);
  console.log(`${N} frames each way byte-exact in ${secs.toFixed(2)} s (${((2 * N) / secs).toFixed(0)} frames/s, ${((2 * bytes * 8) / secs / 1e6).toFixed(1)} Mbit/s under emulation)`);
  expect(front.stats()).toMatchObject({ txPackets: N, rxPackets: N, txDrops: 0, rxDrops: 0, txErrors: 0, rxErrors: 0 });
  expect(back.stats()).toMatchObject({ txPackets: N, rxPackets: N, txDrops: 0, rxDrops: 0 });

  // The batch interfaces over the real rings: tryWriteMany one way and the other, listenBatch
  // on both ends beside the listeners above, every frame byte-exact and in order.
  const batched: { up: Uint8Array[]; down: Uint8Array[] } = { up: [], down: [] };
  const take = (into: Uint8Array[]) => (b: FrameBatch) => {
    for (let i = 0; i < b.length; i++) into.push(b.bytes.slice(b.offset(i), b.offset(i) + b.size(i)));
  };
  const stopUp = back.listenBatch(take(batched.up));
  const stopDown = front.listenBatch(take(batched.down));
  const M = 300;
  const many = (base: number) => Array.from({ length: M }, (_, i) => frame(sizes[i % sizes.length]!, base + i));
  for (const [dev, frames] of [[front, many(5000)], [back, many(6000)]] as const) {
    for (let i = 0; i < frames.length; ) {
      const n = dev.tryWriteMany(frames.slice(i, i + 50));
      i += n;
      if (i < frames.length && n < 50) await dev.writable();
    }
  }
  await until(() => batched.up.length === M && batched.down.length === M, 60_000);
  stopUp();
  stopDown();
  for (let i = 0; i < M; i++) {
    if (!Bun.deepEquals(batched.up[i], frame(sizes[i % sizes.length]!, 5000 + i))) throw new Error(`tryWriteMany front -> back frame ${i} differs`);
    if (!Bun.deepEquals(batched.down[i], frame(sizes[i % sizes.length]!, 6000 + i))) throw new Error(`tryWriteMany back -> front frame ${i} differs`);
  }
  expect([up.length, down.length]).toEqual([N + M, N + M]);
  console.log(`${M} frames each way with tryWriteMany -> listenBatch, byte-exact`);

  // A second claim on either end is refused, in this process and from another one; the live
  // connection goes on.
  await expect(Netfront.connect({ platform: frontPlatform, devid, logger, timeoutMs: 2000 })).rejects.toThrow(/IN_USE/);
  await expect(Netback.serve({ platform: backPlatform, frontendDomid: 0, devid, logger, timeoutMs: 2000 })).rejects.toThrow(/IN_USE/);
  const other = Bun.spawn(
    [process.execPath, "-e", `import { Netfront } from "./src/main/index.ts"; Netfront.connect({ devid: ${devid}, timeoutMs: 2000 }).then(() => console.log("connected"), (e) => console.log(e.code))`],
    { cwd: `${import.meta.dir}/../../..`, env: { ...process.env, BUN_XEN_NET_LOG: "silent" }, stdout: "pipe", timeout: 60_000 },
  );
  // The refusal comes at once, and the process exits by itself: nothing of the failed connect stays open.
  expect((await new Response(other.stdout).text()).trim()).toBe("IN_USE");
  expect(await other.exited).toBe(0);
  expect(await backPlatform.xenstore.read(`${paths.frontPath}/state`)).toBe("4");

  // The back end disconnects right after writing: every frame written still reaches the front end.
  const before = down.length;
  for (let i = 0; i < 50; i++) if (!back.tryWrite(frame(1514, i))) await back.write(frame(1514, i));
  await back.disconnect();
  await until(() => down.length === before + 50, 30_000);
  expect(back.stats()).toMatchObject({ txLost: 0 });

  await front.disconnect();
  expect(await backPlatform.xenstore.read(`${paths.frontPath}/state`)).toBe("6");
  expect(await backPlatform.xenstore.read(`${paths.backPath}/state`)).toBe("6");
  // Take the vif away, as the toolstack would: no later test may find it (the VifServer would serve it).
  await destroyVif(backPlatform.xenstore, 0, 0, devid);
  frontPlatform.close();
  backPlatform.close();
}, 180_000);
