/**
 * One event channel for both rings of a queue, as peers without split channels use it
 * (mirage-net-xen 2.1.8, QEMU's back end, the BSDs): the keys each end writes and reads, frames
 * both ways byte-exact, the one port waking the ring on the other worker (a missed wake is a
 * hang: nothing polls a sleeping ring), multi-queue, a reconnect that changes the form, and the
 * shared port released once.
 */
import { describe, expect, test } from "bun:test";
import { checkFrame, fillFrame, frameSize, type SizePlan } from "./helpers/frames.ts";
import { until } from "./helpers/until.ts";
import { simVif } from "./helpers/vif.ts";
import type { Netback, Netfront } from "../src/main/index.ts";

type Vif = Awaited<ReturnType<typeof simVif>>;

function closeAll(vif: Vif): void {
  vif.frontPlatform.close();
  vif.backPlatform.close();
  vif.dom0.close();
}

const PLAN: SizePlan = { multiPage: 0.1, min: 60, maxSmall: 1514, maxLarge: 9014 };

/**
 * `n` frames each way at once, checked byte for byte, and in order with one queue (with
 * several, frames of different flows may pass each other: each is checked by the sequence
 * number it carries, and every one must arrive once).
 */
async function bothWays(back: Netback, front: Netfront, n: number, seed: number, ordered = true): Promise<void> {
  const scratch = new Uint8Array(65536);
  const got = { up: 0, down: 0, bad: [] as string[] };
  const seen = [new Uint8Array(n), new Uint8Array(n)];
  const check = (f: Uint8Array, s: number, i: number, dir: 0 | 1) => {
    const seq = ordered ? i : (f[0]! | (f[1]! << 8) | (f[2]! << 16) | (f[3]! << 24)) >>> 0;
    const e = seq < n && seen[dir]![seq] === 0 ? checkFrame(f, s, seq, frameSize(s, seq, PLAN), scratch) : -3;
    if (e !== -1) got.bad.push(`${dir === 0 ? "up" : "down"} ${i}: ${e}`);
    else seen[dir]![seq] = 1;
  };
  back.listen((f) => check(f, seed, got.up++, 0));
  front.listen((f) => check(f, seed + 1, got.down++, 1));
  const send = async (dev: Netback | Netfront, s: number) => {
    for (let i = 0; i < n; i++) await dev.writeWith(frameSize(s, i, PLAN), (dst) => fillFrame(dst, s, i));
  };
  await Promise.all([send(front, seed), send(back, seed + 1)]);
  await until(() => got.up === n && got.down === n, 20_000);
  expect(got.bad).toEqual([]);
}

async function keysOf(vif: Vif, dir: string): Promise<Record<string, string | null>> {
  const xs = vif.dom0.xenstore;
  const out: Record<string, string | null> = {};
  for (const k of ["event-channel", "event-channel-tx", "event-channel-rx"]) out[k] = await xs.read(`${dir}/${k}`);
  return out;
}

describe("one event channel", () => {
  test("a Netback that does not offer split channels: our Netfront writes event-channel only, 3000 frames each way byte-exact at once, one port each side, nothing left behind", async () => {
    const vif = await simVif();
    const [back, front] = await Promise.all([vif.serve({ splitEventChannels: false }), vif.connect()]);
    expect(await vif.dom0.xenstore.read(`${vif.paths.backPath}/feature-split-event-channels`)).toBe("0");
    const k = await keysOf(vif, vif.paths.frontPath);
    expect(k["event-channel-tx"]).toBeNull();
    expect(k["event-channel-rx"]).toBeNull();
    expect(Number(k["event-channel"])).toBeGreaterThan(0);
    await bothWays(back, front, 3000, 11);
    await front.disconnect();
    await back.disconnect();
    expect(vif.hv.leaks()).toEqual([]);
    closeAll(vif);
  }, 60_000);

  test("a Netfront told not to use split channels, against a Netback that offers them: the Netback binds the one port, frames both ways", async () => {
    const vif = await simVif();
    const [back, front] = await Promise.all([vif.serve(), vif.connect({ splitEventChannels: false })]);
    expect(await vif.dom0.xenstore.read(`${vif.paths.backPath}/feature-split-event-channels`)).toBe("1");
    const k = await keysOf(vif, vif.paths.frontPath);
    expect([k["event-channel-tx"], k["event-channel-rx"]]).toEqual([null, null]);
    await bothWays(back, front, 2000, 21);
    await front.disconnect();
    await back.disconnect();
    expect(vif.hv.leaks()).toEqual([]);
    closeAll(vif);
  }, 60_000);

  test("the one port wakes the ring on the other worker: after both ends sleep, each lone frame arrives at once, 20 times each way", async () => {
    const vif = await simVif();
    const [back, front] = await Promise.all([vif.serve({ splitEventChannels: false }), vif.connect()]);
    let up = 0;
    let down = 0;
    back.listen(() => up++);
    front.listen(() => down++);
    for (let i = 0; i < 20; i++) {
      // Long enough for every role to arm its ring and sleep.
      await Bun.sleep(30);
      const t0 = performance.now();
      await (i % 2 === 0 ? front : back).write(new Uint8Array(100));
      await until(() => up + down === i + 1, 2000);
      // A wake that went only to the port's own worker would leave the frame until a later
      // event: the sleeping role is never polled on a timer.
      expect(performance.now() - t0).toBeLessThan(1000);
    }
    expect([up, down]).toEqual([10, 10]);
    // The RX rings slept between frames: their wakes came through the port on the TX worker.
    expect(front.stats().rxSleeps).toBeGreaterThan(5);
    expect(back.stats().txSleeps).toBeGreaterThan(5);
    await front.disconnect();
    await back.disconnect();
    expect(vif.hv.leaks()).toEqual([]);
    closeAll(vif);
  }, 60_000);

  test("a burst larger than the ring to a reader that keeps pausing: the back end waits for posted buffers (woken through the shared port) and delivers all 5000", async () => {
    const vif = await simVif();
    const [back, front] = await Promise.all([vif.serve({ splitEventChannels: false }), vif.connect()]);
    let down = 0;
    const reader = (async () => {
      for await (const _ of front.frames()) {
        if (++down % 500 === 0) await Bun.sleep(20);
        if (down === 5000) break;
      }
    })();
    for (let i = 0; i < 5000; i++) await back.write(new Uint8Array(1514));
    await reader;
    expect(down).toBe(5000);
    expect(back.stats().txDrops).toBe(0);
    await front.disconnect();
    await back.disconnect();
    expect(vif.hv.leaks()).toEqual([]);
    closeAll(vif);
  }, 60_000);

  test("two queues, one channel each: queue-N/event-channel, frames both ways", async () => {
    const vif = await simVif();
    const [back, front] = await Promise.all([vif.serve({ maxQueues: 2, splitEventChannels: false }), vif.connect({ queues: 2 })]);
    expect([front.queues, back.queues]).toEqual([2, 2]);
    for (const q of [0, 1]) {
      const k = await keysOf(vif, `${vif.paths.frontPath}/queue-${q}`);
      expect([k["event-channel-tx"], k["event-channel-rx"]]).toEqual([null, null]);
      expect(Number(k["event-channel"])).toBeGreaterThan(0);
    }
    expect(await keysOf(vif, vif.paths.frontPath)).toEqual({ "event-channel": null, "event-channel-tx": null, "event-channel-rx": null });
    await bothWays(back, front, 2000, 31, false);
    await front.disconnect();
    await back.disconnect();
    expect(vif.hv.leaks()).toEqual([]);
    closeAll(vif);
  }, 60_000);

  test("a back end that comes back with split channels: the Netfront reconnects with two ports (the old keys gone), then with one again", async () => {
    const vif = await simVif();
    let up = 0;
    let front: Netfront | null = null;
    for (const [round, split] of [false, true, false].entries()) {
      const serving = vif.serve({ splitEventChannels: split });
      front ??= await vif.connect({ reconnect: true });
      const back = await serving;
      await until(() => front!.reconnectCount === round && back.connected);
      back.listen(() => up++);
      const k = await keysOf(vif, vif.paths.frontPath);
      expect([k["event-channel"] !== null, k["event-channel-tx"] !== null, k["event-channel-rx"] !== null]).toEqual(split ? [false, true, true] : [true, false, false]);
      const before = up;
      for (let i = 0; i < 100; i++) await front.write(new Uint8Array(200));
      await until(() => up === before + 100);
      await back.disconnect();
    }
    expect(front!.reconnectCount).toBe(2);
    await front!.disconnect();
    expect(vif.hv.leaks()).toEqual([]);
    closeAll(vif);
  }, 60_000);
});
