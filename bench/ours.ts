/**
 * Our figures for the comparison table, each taken with mitata's `measure` (one measure per
 * run; a run's figure is the median of its samples):
 *
 *   single   the ring path, front and back alternating on one thread: protocol core, sim grant
 *            table, pre-shared pages (bench/ring-loop.ts, bench/rx-ring-loop.ts). As C's single.
 *   threads  our ring roles in two workers with the workers' own loop (bench/ring-pair.ts),
 *            spinning 50 µs before they block, as C's threads mode does.
 *   device   Netfront ↔ Netback, everything included: both main threads' queue work and four
 *            workers (bench/device-pair.ts), default settings. Compared with C's threads.
 *   floor    the two copies per frame with the driver's own copy (copyBetween: libc's memmove
 *            through bun:ffi between buffers addressed once): what our path pays to move bytes.
 */
import { measure } from "mitata";
import { AddressedBytes, copyBetween } from "../src/platform/copy-bytes.ts";
import type { BenchRecord, MeasureOptions } from "./compare.ts";
import { summarize } from "./compare.ts";
import { devicePair, Flow } from "./device-pair.ts";
import { ringPair } from "./ring-pair.ts";
import { TxRingLoop } from "./ring-loop.ts";
import { RxRingLoop } from "./rx-ring-loop.ts";

/** CPU time mitata spends per measure (its default is 642 ms; the table has ~35 of them per run). */
const MEASURE_NS = 120e6;
const PAIR_BATCH = 20_000;
const DEVICE_BATCH = 2_000;

type Key = Pick<BenchRecord, "size" | "mode" | "impl" | "dir">;

/** ns per frame of one mitata measure of `fn`, which moves `frames` frames per call. */
async function perFrame(fn: () => unknown, frames: number): Promise<number> {
  const stats = await measure(fn, { min_cpu_time: MEASURE_NS });
  return stats.p50 / frames;
}

interface Job {
  key: Key;
  ns: number[];
  cpu: number[];
  one(): Promise<{ ns: number; cpu?: number }>;
  close?(): Promise<void>;
}

/** Frames per one-thread step: 32, or fewer when a frame needs several of the 256 slots. */
function stepFrames(size: number): number {
  return Math.min(32, Math.floor(256 / Math.ceil(size / 4096)));
}

export async function measureOurs(sizes: readonly number[], opts: MeasureOptions): Promise<BenchRecord[]> {
  const { runs, progress = () => {}, gate = async () => {} } = opts;
  const jobs: Job[] = [];
  const device = await devicePair();
  try {
    for (const size of sizes) {
      const n = stepFrames(size);
      const tx = new TxRingLoop(size);
      const rx = new RxRingLoop(size);
      jobs.push(
        { key: { size, mode: "single", impl: "ours", dir: "tx" }, ns: [], cpu: [], one: async () => ({ ns: await perFrame(() => tx.step(n), n) }) },
        { key: { size, mode: "single", impl: "ours", dir: "rx" }, ns: [], cpu: [], one: async () => ({ ns: await perFrame(() => rx.step(n), n) }) },
      );
      for (const dir of ["tx", "rx"] as const) {
        const pair = await ringPair(dir, size);
        await pair.run(100_000); // the workers' JIT warms up before anything is timed
        jobs.push({
          key: { size, mode: "threads", impl: "ours", dir },
          ns: [],
          cpu: [],
          one: async () => {
            await gate();
            let cpu = 0;
            let calls = 0;
            const ns = await perFrame(async () => {
              cpu += (await pair.run(PAIR_BATCH)).cpu_ns_per_frame;
              calls++;
            }, PAIR_BATCH);
            return { ns, cpu: cpu / calls };
          },
          close: () => pair.close(),
        });
      }
      const up = new Flow(device.front, device.back, size);
      const down = new Flow(device.back, device.front, size);
      for (const [dir, flow] of [["tx", up], ["rx", down]] as const) {
        jobs.push({
          key: { size, mode: "device", impl: "ours", dir },
          ns: [],
          cpu: [],
          one: async () => {
            await gate();
            return { ns: await perFrame(() => flow.batch(DEVICE_BATCH), DEVICE_BATCH) };
          },
        });
      }
      const src = new AddressedBytes(new Uint8Array(size).fill(1));
      const pages = Array.from({ length: 8 }, () => new AddressedBytes(new Uint8Array(new SharedArrayBuffer(65536))));
      const out = new AddressedBytes(new Uint8Array(size));
      jobs.push({
        key: { size, mode: "floor", impl: "ours", dir: null },
        ns: [],
        cpu: [],
        one: async () => ({
          ns: await perFrame(() => {
            for (let i = 0; i < 32; i++) {
              copyBetween(pages[i & 7]!, 0, src, 0, size);
              copyBetween(out, 0, pages[i & 7]!, 0, size);
            }
          }, 32),
        }),
      });
    }
    // Round-robin, as for C: a burst of load spreads over all figures instead of spoiling one.
    for (let r = 0; r < runs; r++) {
      progress(`ours, round ${r + 1}/${runs}`);
      for (const j of jobs) {
        const { ns, cpu } = await j.one();
        j.ns.push(ns);
        if (cpu !== undefined) j.cpu.push(cpu);
      }
    }
  } finally {
    for (const j of jobs) await j.close?.();
    await device.close();
  }
  return jobs.map((j) => summarize(j.key, j.ns, j.cpu));
}
