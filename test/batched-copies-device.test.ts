/**
 * Batched grant copies end to end: a Netfront and a Netback on the pool's workers. Every frame
 * is copied exactly once, byte-exact and in order, and a burst goes in fewer copy calls than
 * frames (the counts come from the simulated grant table's shared counters, which every
 * thread's view of dom0 adds to).
 */
import { expect, test } from "bun:test";
import type { SimGrantTable } from "../src/platform/sim/grant-table.ts";
import type { NetDevice } from "../src/main/device.ts";
import { until } from "./helpers/until.ts";
import { withSimPair } from "./helpers/vif.ts";

const N = 2000;

function frame(seq: number, len: number): Uint8Array {
  const f = Uint8Array.from({ length: len }, (_, i) => (seq * 7 + i) & 0xff);
  new DataView(f.buffer).setUint32(14, seq, true);
  return f;
}

/** Send N frames from `from` as fast as the queue takes them; what `to` got, in order. */
async function burst(from: NetDevice, to: NetDevice, len: number): Promise<Uint8Array[]> {
  const got: Uint8Array[] = [];
  const frames = Array.from({ length: N }, (_, i) => frame(i, len));
  const stop = to.listen((f) => got.push(f.slice()));
  for (const f of frames) {
    while (!from.tryWrite(f)) await from.writable(len);
  }
  await until(() => got.length >= N, 20_000);
  stop();
  return got;
}

test(`through the pool, both directions: ${N} frames each copied exactly once, byte-exact and in order, in batches`, async () => {
  await withSimPair(async ({ back, front, vif }) => {
    const g = vif.dom0.gnttab as SimGrantTable;
    for (const [dir, from, to] of [["tx", front, back], ["rx", back, front]] as const) {
      for (const len of [64, 1514]) {
        const before = g.copyCounts();
        const got = await burst(from, to, len);
        const after = g.copyCounts();
        expect(got.length).toBe(N);
        for (let i = 0; i < N; i++) if (!Bun.deepEquals(got[i], frame(i, len))) throw new Error(`${dir} ${len} B: frame ${i} differs`);
        const calls = after.calls - before.calls;
        // One segment per frame (a frame of up to 1514 bytes is one slot), and no copy twice.
        expect(after.segments - before.segments).toBe(N);
        console.log(`${dir} ${len} B: ${N} frames in ${calls} copy calls (${(N / calls).toFixed(1)} a call)`);
        // How many a poll finds depends on the threads' timing; a burst this size always
        // finds some polls with several.
        expect(calls).toBeLessThan(N);
      }
    }
  });
}, 60_000);
