/**
 * Peers without scatter-gather (QEMU's back end, old front ends): what was not offered is never
 * used. One slot per packet each way, the MTU at most 1500 whatever the vif says, maxFrameSize
 * and mtu telling the truth, larger writes refused with FRAME_TOO_LONG, frames queued for an
 * earlier session that allowed more dropped and counted (never sent in several slots), and no
 * TX size that wraps its u16.
 */
import { describe, expect, test } from "bun:test";
import { NetError } from "../src/main/index.ts";
import { createVif } from "../src/main/xenbus/toolstack.ts";
import { until } from "./helpers/until.ts";
import { simVif } from "./helpers/vif.ts";

type Vif = Awaited<ReturnType<typeof simVif>>;

function closeAll(vif: Vif): void {
  vif.frontPlatform.close();
  vif.backPlatform.close();
  vif.dom0.close();
}

/** A vif whose toolstack wrote `mtu`. */
async function vifWithMtu(mtu: number): Promise<Vif> {
  const vif = await simVif({ devid: 3 });
  await createVif(vif.dom0.xenstore, { frontDomid: vif.guest, backDomid: 0, devid: 4, mac: "00:16:3e:00:00:04", mtu });
  return { ...vif, devid: 4, paths: { ...vif.paths, frontPath: vif.paths.frontPath.replace(/3$/, "4"), backPath: vif.paths.backPath.replace(/3$/, "4") } };
}

async function rejection(p: Promise<unknown>): Promise<NetError> {
  try {
    await p;
  } catch (e) {
    if (e instanceof NetError) return e;
    throw e;
  }
  throw new Error("expected a rejection");
}

describe("a back end without feature-sg", () => {
  test("vif MTU 65535: our Netfront's mtu is 1500 and maxFrameSize 1514; a 1515-byte write is FRAME_TOO_LONG; 1514-byte frames arrive whole", async () => {
    const vif = await vifWithMtu(65535);
    const serve = () => vif.serve({ devid: 4, scatterGather: false });
    const [back, front] = await Promise.all([serve(), vif.connect({ devid: 4 })]);
    expect(await vif.dom0.xenstore.read(`${vif.paths.backPath}/feature-sg`)).toBe("0");
    expect([front.mtu, front.maxFrameSize]).toEqual([1500, 1514]);
    expect((await rejection(front.write(new Uint8Array(1515)))).code).toBe("FRAME_TOO_LONG");
    expect(() => front.tryWrite(new Uint8Array(65549))).toThrow(/FRAME_TOO_LONG/);
    const sizes: number[] = [];
    back.listen((f) => sizes.push(f.length));
    for (let i = 0; i < 300; i++) await front.write(new Uint8Array(1514 - (i % 3)));
    await until(() => sizes.length === 300);
    expect(Math.max(...sizes)).toBe(1514);
    expect(front.stats().txDrops).toBe(0);
    await front.disconnect();
    await back.disconnect();
    expect(vif.hv.leaks()).toEqual([]);
    closeAll(vif);
  });

  test("frames queued while a scatter-gather back end was away: those over 1514 bytes are dropped and counted as txLost when the next back end has no feature-sg, the rest arrive in order", async () => {
    const vif = await simVif();
    const [back1, front] = await Promise.all([vif.serve(), vif.connect({ reconnect: true })]);
    expect(front.maxFrameSize).toBe(65535);
    await back1.disconnect();
    // Written while no back end serves the vif: they wait in the queue.
    const writes: Promise<void>[] = [];
    for (let i = 0; i < 20; i++) {
      const f = new Uint8Array(i % 2 === 0 ? 1000 : 9000);
      f[0] = i;
      writes.push(front.write(f));
    }
    const back2 = await vif.serve({ scatterGather: false });
    const got: number[][] = [];
    back2.listen((f) => got.push([f[0]!, f.length]));
    await Promise.all(writes);
    await until(() => got.length === 10 && front.stats().txLost === 10);
    expect(got).toEqual(Array.from({ length: 10 }, (_, i) => [2 * i, 1000]));
    expect(front.maxFrameSize).toBe(1514);
    await front.disconnect();
    await back2.disconnect();
    expect(front.stats().txLost).toBe(10);
    expect(vif.hv.leaks()).toEqual([]);
    closeAll(vif);
  });
});

describe("a front end without feature-sg", () => {
  test("vif MTU 9000: our Netback's mtu is 1500 and maxFrameSize 1514; larger writes are FRAME_TOO_LONG; 1514-byte frames arrive whole", async () => {
    const vif = await vifWithMtu(9000);
    const [back, front] = await Promise.all([vif.serve({ devid: 4 }), vif.connect({ devid: 4, scatterGather: false })]);
    expect(await vif.dom0.xenstore.read(`${vif.paths.frontPath}/feature-sg`)).toBe("0");
    expect([back.mtu, back.maxFrameSize]).toEqual([1500, 1514]);
    // Without scatter-gather offered, it sends one slot per packet too.
    expect([front.mtu, front.maxFrameSize]).toEqual([1500, 1514]);
    expect((await rejection(back.write(new Uint8Array(1515)))).code).toBe("FRAME_TOO_LONG");
    const sizes: number[] = [];
    front.listen((f) => sizes.push(f.length));
    for (let i = 0; i < 600; i++) await back.write(new Uint8Array(1514 - (i % 5)));
    await until(() => sizes.length === 600);
    expect(Math.max(...sizes)).toBe(1514);
    expect(front.stats().rxErrors).toBe(0);
    await front.disconnect();
    await back.disconnect();
    expect(vif.hv.leaks()).toEqual([]);
    closeAll(vif);
  });

  test("frames queued for a scatter-gather front end, and the next one has none: those over 1514 bytes are dropped and counted, the rest arrive", async () => {
    const vif = await simVif();
    const [back, front1] = await Promise.all([vif.serve({ reconnect: true }), vif.connect()]);
    await front1.disconnect();
    const writes: Promise<void>[] = [];
    for (let i = 0; i < 20; i++) {
      const f = new Uint8Array(i % 2 === 0 ? 1200 : 5000);
      f[0] = i;
      writes.push(back.write(f));
    }
    const front2 = await vif.connect({ scatterGather: false });
    const got: number[][] = [];
    front2.listen((f) => got.push([f[0]!, f.length]));
    await Promise.all(writes);
    await until(() => got.length === 10 && back.stats().txLost === 10);
    expect(got).toEqual(Array.from({ length: 10 }, (_, i) => [2 * i, 1200]));
    await front2.disconnect();
    await back.disconnect();
    expect(vif.hv.leaks()).toEqual([]);
    closeAll(vif);
  });
});
