/**
 * Our figures for the comparison table, each taken with mitata's `measure` (one measure per
 * run; a run's figure is the median of its samples, beside the process's CPU time per frame
 * over the same calls: bench/per-frame.ts):
 *
 *   single   the ring path, front and back alternating on one thread: protocol core, sim grant
 *            table, pre-shared pages (bench/ring-loop.ts, bench/rx-ring-loop.ts). As C's single,
 *            each (direction, size) in a worker of its own (bench/single-worker.ts), as each C
 *            figure comes from a process of its own.
 *   threads  our ring roles in two workers with the workers' own loop (bench/ring-pair.ts),
 *            spinning 50 µs before they block, as C's threads mode does.
 *   device   Netfront ↔ Netback, everything included: both main threads' queue work and the
 *            pool's workers (bench/device-pair.ts), default settings, tryWrite and listen (a
 *            call per frame). Compared with C's threads.
 *   batch    the same path through the batch API: tryWriteMany and listenBatch.
 *   floor    the two copies per frame with the driver's own copy (copyBetween: libc's memmove
 *            through bun:ffi between buffers addressed once): what our path pays to move bytes.
 */
import { AddressedBytes, copyBetween } from "../src/platform/copy-bytes.ts";
import type { BenchRecord, MeasureOptions } from "./compare.ts";
import { summarize } from "./compare.ts";
import { devicePair, Flow } from "./device-pair.ts";
import { perFrame } from "./per-frame.ts";
import { ringPair } from "./ring-pair.ts";
import type { SingleInit, SingleReply, SingleRequest } from "./single-worker.ts";

/** CPU time mitata spends per measure (its default is 642 ms; the table has ~35 of them per run). */
const MEASURE_NS = 120e6;
const PAIR_BATCH = 20_000;
const DEVICE_BATCH = 2_000;
/** Batches a device path runs before its first timed run (2 M frames: see measureOurs). */
const WARM_BATCHES = 1000;

type Key = Pick<BenchRecord, "size" | "mode" | "impl" | "dir">;

/** A one-thread ring loop in its own worker: measure() gives wall and CPU ns per frame. */
async function singleWorker(init: SingleInit): Promise<{ measure(): Promise<{ ns: number; cpu: number }>; close(): Promise<void> }> {
  const worker = new Worker(new URL("./single-worker.ts", import.meta.url).href);
  let pending: ((r: SingleReply) => void) | null = null;
  worker.onmessage = (e: MessageEvent<SingleReply>) => pending?.(e.data);
  worker.onerror = (e) => pending?.({ error: e.message });
  const ask = (req: SingleInit | SingleRequest) =>
    new Promise<SingleReply>((resolve) => {
      pending = resolve;
      worker.postMessage(req);
    });
  const what = `single ${init.dir} ${init.size} B`;
  const check = (r: SingleReply): SingleReply => {
    if (typeof r === "object" && "error" in r) throw new Error(`${what}: ${r.error}`);
    return r;
  };
  check(await ask(init));
  check(await ask("measure")); // the JIT warms up before anything is timed
  return {
    async measure() {
      const r = check(await ask("measure"));
      if (typeof r !== "object" || !("ns" in r)) throw new Error(`${what}: unexpected reply ${JSON.stringify(r)}`);
      return { ns: r.ns, cpu: r.cpu };
    },
    async close() {
      check(await ask("close"));
      worker.terminate();
    },
  };
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
  const warmed = new Set<string>();
  const device = await devicePair();
  try {
    for (const size of sizes) {
      for (const dir of ["tx", "rx"] as const) {
        const single = await singleWorker({ dir, size, frames: stepFrames(size), measureNs: MEASURE_NS });
        jobs.push({ key: { size, mode: "single", impl: "ours", dir }, ns: [], cpu: [], one: () => single.measure(), close: () => single.close() });
      }
      for (const dir of ["tx", "rx"] as const) {
        const pair = await ringPair(dir, size);
        await pair.run(100_000); // the workers' JIT warms up before anything is timed
        jobs.push({
          key: { size, mode: "threads", impl: "ours", dir },
          ns: [],
          cpu: [],
          one: async () => {
            await gate();
            return perFrame(() => pair.run(PAIR_BATCH), PAIR_BATCH, MEASURE_NS);
          },
          close: () => pair.close(),
        });
      }
      // device: tryWrite → listen, a call per frame; batch: tryWriteMany → listenBatch. Each
      // flow listens only while it is measured, so neither pays for the other's listener.
      for (const [mode, batched] of [["device", false], ["batch", true]] as const) {
        for (const dir of ["tx", "rx"] as const) {
          const [from, to] = dir === "tx" ? [device.front, device.back] : [device.back, device.front];
          jobs.push({
            key: { size, mode, impl: "ours", dir },
            ns: [],
            cpu: [],
            one: async () => {
              await gate();
              const flow = new Flow(from, to, size, undefined, batched);
              try {
                // The JIT settles only after about two million frames through a path (its
                // compiles ran through the first runs and made them slower: bimodal figures):
                // the first round warms each path well, the later ones briefly.
                const warm = warmed.has(`${mode} ${dir}`) ? 20 : WARM_BATCHES;
                warmed.add(`${mode} ${dir}`);
                for (let i = 0; i < warm; i++) await flow.batch(DEVICE_BATCH);
                return await perFrame(() => flow.batch(DEVICE_BATCH), DEVICE_BATCH, MEASURE_NS);
              } finally {
                flow.close();
              }
            },
          });
        }
      }
      const src = new AddressedBytes(new Uint8Array(size).fill(1));
      const pages = Array.from({ length: 8 }, () => new AddressedBytes(new Uint8Array(new SharedArrayBuffer(65536))));
      const out = new AddressedBytes(new Uint8Array(size));
      jobs.push({
        key: { size, mode: "floor", impl: "ours", dir: null },
        ns: [],
        cpu: [],
        one: () =>
          perFrame(() => {
            for (let i = 0; i < 32; i++) {
              copyBetween(pages[i & 7]!, 0, src, 0, size);
              copyBetween(out, 0, pages[i & 7]!, 0, size);
            }
          }, 32, MEASURE_NS),
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
