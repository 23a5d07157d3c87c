/**
 * Where the device path's time goes, by thread: Netfront ↔ Netback on the simulated
 * hypervisor, per frame (tryWrite → listen) and batched (tryWriteMany → listenBatch), each
 * direction, after the JIT has settled (2 M frames); then, over a timed stretch, the CPU time
 * per frame of every thread of the process (from /proc/self/task: the main thread, which runs
 * both ends' application side; the pool's ring workers; the JIT and GC helpers), beside wall
 * time per frame. Linux only (/proc); a breakdown to read beside `bun run bench`, not a figure
 * to compare across machines.
 *
 *   bun run bench/device-threads.ts [--sizes 64,1514] [--frames N] [--runs N]
 */
import { readdirSync, readFileSync } from "node:fs";
import { parseArgs } from "node:util";
import { devicePair, Flow } from "./device-pair.ts";
import { median } from "./compare.ts";

const { values } = parseArgs({ options: { sizes: { type: "string", default: "64,1514" }, frames: { type: "string", default: "1000000" }, runs: { type: "string", default: "3" } } });
const SIZES = values.sizes!.split(",").map(Number);
const FRAMES = Number(values.frames);
const RUNS = Number(values.runs);
const BATCH = 2000;
/** Clock ticks per second of /proc's utime/stime (USER_HZ: 100 on every Linux ABI). */
const USER_HZ = 100;

/** CPU ticks so far of every thread, by thread id, with its name. */
function threadTicks(): Map<string, { name: string; ticks: number }> {
  const out = new Map<string, { name: string; ticks: number }>();
  for (const tid of readdirSync("/proc/self/task")) {
    try {
      const stat = readFileSync(`/proc/self/task/${tid}/stat`, "utf8");
      // Fields after the name (which may hold spaces): utime and stime are the 12th and 13th.
      const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      out.set(tid, { name: readFileSync(`/proc/self/task/${tid}/comm`, "utf8").trim(), ticks: Number(f[11]) + Number(f[12]) });
    } catch {
      // The thread ended meanwhile.
    }
  }
  return out;
}

/** Bun names its JS threads: the main thread "bun", each worker "Worker"; the rest are helpers. */
function kind(name: string, tid: string): string {
  if (tid === String(process.pid)) return "main thread";
  if (name === "Worker") return "ring worker";
  if (name.startsWith("JIT")) return "JIT";
  if (name.startsWith("Heap") || name.includes("GC")) return "GC";
  return `other (${name})`;
}

const pair = await devicePair();
console.log("size  api    dir  wall ns/frame  CPU ns/frame by thread (median of runs)");
try {
  for (const size of SIZES) {
    for (const batched of [false, true]) {
      for (const dir of ["tx", "rx"] as const) {
        const [from, to] = dir === "tx" ? [pair.front, pair.back] : [pair.back, pair.front];
        const flow = new Flow(from, to, size, 30_000, batched);
        try {
          for (let i = 0; i < 1000; i++) await flow.batch(BATCH);
          const walls: number[] = [];
          const byKind = new Map<string, number[]>();
          for (let r = 0; r < RUNS; r++) {
            const a = threadTicks();
            const t0 = performance.now();
            for (let n = 0; n < FRAMES; n += BATCH) await flow.batch(BATCH);
            const wall = ((performance.now() - t0) * 1e6) / FRAMES;
            const b = threadTicks();
            walls.push(wall);
            const sums = new Map<string, number>();
            for (const [tid, t] of b) {
              const k = kind(t.name, tid);
              sums.set(k, (sums.get(k) ?? 0) + ((t.ticks - (a.get(tid)?.ticks ?? 0)) / USER_HZ) * 1e9 / FRAMES);
            }
            for (const [k, v] of sums) byKind.set(k, [...(byKind.get(k) ?? []), v]);
          }
          const parts = [...byKind].filter(([, v]) => median(v) > 0).map(([k, v]) => `${k} ${median(v).toFixed(0)}`);
          console.log(`${String(size).padEnd(5)} ${(batched ? "batch" : "frame").padEnd(6)} ${dir}   ${median(walls).toFixed(0).padStart(8)} [${Math.min(...walls).toFixed(0)}–${Math.max(...walls).toFixed(0)}]   ${parts.join(", ")}`);
        } finally {
          flow.close();
        }
      }
    }
  }
} finally {
  await pair.close();
}
