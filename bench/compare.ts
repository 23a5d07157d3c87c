/**
 * The comparison table's pieces (bench/main.ts puts them together; `bun run bench` prints it):
 *
 *   c/single    the C reference (bench/c/netif-ref.c, Xen's ring.h/netif.h), front and back
 *               alternating on one thread: per-frame CPU cost. tx and rx.
 *   c/threads   the same rings with front and back on two pthreads: throughput. tx and rx.
 *   c/floor     the two memcpys per frame and nothing else.
 *   bun/postMessage  frames passed main thread → Worker by postMessage (window 256, acks every
 *               64): the naive alternative to shared-memory queues.
 *   ours/*      bench/ours.ts: single, threads, device and floor.
 *
 * Every figure is the median of several runs, taken round-robin (run 1 of everything, then
 * run 2, ...) so that a burst of load on this shared, noisy VM spreads over all figures instead
 * of spoiling one; min and max show the spread. Two-thread runs suffer most from other
 * processes (a spinning side then competes with them for the second CPU), so each one first
 * waits, up to 5 s, for the CPUs to be idle (--no-wait: don't wait).
 *
 * The C side's choices (see bench/c/netif-ref.c): single mode turns round 32 frames per batch
 * (as bench/ring-loop.ts); in threads mode a side spins 50 µs before it blocks, because a
 * futex wake-up costs ~2.5 µs after a short sleep but 20–25 µs once the idle vCPU has halted
 * (guest haltpoll), and a shorter spin makes the pair sleep once per batch, 5–12× slower.
 */
import { parseArgs } from "node:util";
import type { CDir, CMode, RunC } from "./c-reference.ts";
import { postMessageRate } from "./postmessage-baseline.ts";

export const SIZES = [64, 512, 1514, 4096, 9014] as const;
export const DEFAULT_RUNS = 5;

/** One figure: the median of `runs` runs of one (size, mode, impl, dir). */
export interface BenchRecord {
  size: number;
  /** single: one thread (CPU cost). threads: two threads or workers (throughput). device: our
   *  whole device, main threads included (compared with C's threads). floor: the two copies
   *  alone. postMessage: the naive worker baseline. */
  mode: "single" | "threads" | "device" | "batch" | "floor" | "postMessage";
  impl: "c" | "ours" | "bun";
  /** tx = front → back, rx = back → front; null where direction means nothing (floor, postMessage). */
  dir: "tx" | "rx" | null;
  /** Median over the runs, wall time per frame. */
  ns_per_frame: number;
  /** 1e9 / ns_per_frame. */
  frames_per_s: number;
  runs: number;
  /** Fastest run, ns per frame. */
  min: number;
  /** Slowest run, ns per frame. */
  max: number;
  /** Median CPU time per frame (all threads), where known: shows what spinning costs. */
  cpu_ns_per_frame?: number;
}

/** A record from per-run samples (ns per frame; cpu optional, same length). */
export function summarize(key: Pick<BenchRecord, "size" | "mode" | "impl" | "dir">, ns: number[], cpu?: number[]): BenchRecord {
  if (ns.length === 0) throw new RangeError("no samples");
  const med = median(ns);
  const rec: BenchRecord = { ...key, ns_per_frame: med, frames_per_s: 1e9 / med, runs: ns.length, min: Math.min(...ns), max: Math.max(...ns) };
  if (cpu !== undefined && cpu.length > 0) rec.cpu_ns_per_frame = median(cpu);
  return rec;
}

export function median(v: number[]): number {
  const s = [...v].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 === 1 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

/** `--runs N` from a benchmark's arguments (N a positive integer), or `fallback` without it. */
export function runsArg(argv: readonly string[], fallback = DEFAULT_RUNS): number {
  // Not strict: each bench script takes its own arguments beside --runs.
  const { values } = parseArgs({ args: [...argv], strict: false, allowPositionals: true, options: { runs: { type: "string" } } });
  const v = values.runs;
  if (v === undefined) return fallback;
  const n = typeof v === "string" ? Number(v) : NaN;
  if (!Number.isInteger(n) || n < 1) throw new Error(`--runs ${typeof v === "string" ? v : ""}: need a positive integer`);
  return n;
}

/** Frames per run: enough for ~30–150 ms per run at the sizes we measure. */
export function framesFor(size: number): number {
  return Math.min(2_000_000, Math.max(100_000, Math.round(1.6e9 / size / 1000) * 1000));
}

/** Before each two-thread run: wait for quiet CPUs (or not). */
export type Gate = () => Promise<void>;

export interface MeasureOptions {
  runs: number;
  progress?: (what: string) => void;
  /** Awaited before every two-thread run (C threads mode, postMessage). */
  gate?: Gate;
}

/** Linux: the share of all CPUs' time spent busy over the next `ms`; null without /proc/stat. */
async function busyShare(ms: number): Promise<number | null> {
  const sample = async () => {
    const f = Bun.file("/proc/stat");
    if (!(await f.exists())) return null;
    const v = (await f.text()).split("\n", 1)[0]!.trim().split(/\s+/).slice(1).map(Number);
    const total = v.reduce((a, b) => a + b, 0);
    return { busy: total - v[3]! - (v[4] ?? 0), total }; // idle and iowait are not busy
  };
  const a = await sample();
  await Bun.sleep(ms);
  const b = await sample();
  if (a === null || b === null || b.total === a.total) return null;
  return (b.busy - a.busy) / (b.total - a.total);
}

/**
 * A gate that waits until the CPUs are idle (under 5% busy over 100 ms, i.e. nobody else is
 * running; we are idle while we wait), for at most maxMs. `busyStarts` counts the runs that
 * had to start anyway.
 */
export function quietGate(maxMs = 5000): Gate & { busyStarts: number } {
  const gate = Object.assign(
    async () => {
      const until = performance.now() + maxMs;
      while (performance.now() < until) {
        const share = await busyShare(100);
        if (share === null || share < 0.05) return;
      }
      gate.busyStarts++;
    },
    { busyStarts: 0 },
  );
  return gate;
}

interface CJob {
  size: number;
  mode: CMode;
  dir: CDir;
  key: Pick<BenchRecord, "size" | "mode" | "impl" | "dir">;
  ns: number[];
  cpu: number[];
}

/** The C figures: single tx/rx, threads tx/rx and the floor for every size. */
export async function measureCReference(runC: RunC, sizes: readonly number[], opts: MeasureOptions): Promise<BenchRecord[]> {
  const { runs, progress = () => {}, gate = async () => {} } = opts;
  const jobs: CJob[] = [];
  for (const size of sizes) {
    for (const [mode, dir] of [["single", "tx"], ["single", "rx"], ["threads", "tx"], ["threads", "rx"], ["memcpy", "tx"]] as const) {
      const key = { size, impl: "c", mode: mode === "memcpy" ? "floor" : mode, dir: mode === "memcpy" ? null : dir } as const;
      jobs.push({ size, mode, dir, key, ns: [], cpu: [] });
    }
  }
  for (let r = 0; r < runs; r++) {
    progress(`C reference, round ${r + 1}/${runs}`);
    for (const j of jobs) {
      if (j.mode === "threads") await gate();
      const res = await runC(j.mode, j.dir, j.size, framesFor(j.size));
      if (res.front.timeouts + res.back.timeouts > 0) throw new Error(`netif-ref ${j.mode} ${j.dir} ${j.size}: a wake-up was lost (sleep timed out)`);
      j.ns.push(res.ns_per_frame);
      j.cpu.push(res.cpu_ns_per_frame);
    }
  }
  return jobs.map((j) => summarize(j.key, j.ns, j.cpu));
}

/** The postMessage baseline for every size. */
export async function measurePostMessage(sizes: readonly number[], opts: MeasureOptions): Promise<BenchRecord[]> {
  const { runs, progress = () => {}, gate = async () => {} } = opts;
  const ns = new Map<number, number[]>(sizes.map((s) => [s, []]));
  const cpu = new Map<number, number[]>(sizes.map((s) => [s, []]));
  for (let r = 0; r < runs; r++) {
    progress(`postMessage baseline, round ${r + 1}/${runs}`);
    for (const size of sizes) {
      await gate();
      const res = await postMessageRate(size, 100_000);
      ns.get(size)!.push(res.ns_per_frame);
      cpu.get(size)!.push(res.cpu_ns_per_frame);
    }
  }
  return sizes.map((size) => summarize({ size, mode: "postMessage", impl: "bun", dir: null }, ns.get(size)!, cpu.get(size)!));
}

const MODE_ORDER: Record<BenchRecord["mode"], number> = { single: 0, threads: 1, device: 2, batch: 3, floor: 4, postMessage: 5 };
const IMPL_ORDER: Record<BenchRecord["impl"], number> = { c: 0, ours: 1, bun: 2 };
const dirOrder = (d: BenchRecord["dir"]) => (d === "tx" ? 0 : d === "rx" ? 1 : 2);

/** The C record an ours/bun record is compared with: same size, mode and direction (device: C's threads). */
export function cFigureFor(records: readonly BenchRecord[], r: BenchRecord): BenchRecord | undefined {
  const mode = r.mode === "device" || r.mode === "batch" ? "threads" : r.mode;
  return records.find((x) => x.impl === "c" && x.size === r.size && x.mode === mode && x.dir === r.dir);
}

/** The table: one row per record, grouped by size; "vs C" = this ns/frame ÷ C's (cFigureFor). */
export function formatTable(records: readonly BenchRecord[]): string {
  const rows = [...records].sort(
    (a, b) => a.size - b.size || MODE_ORDER[a.mode] - MODE_ORDER[b.mode] || dirOrder(a.dir) - dirOrder(b.dir) || IMPL_ORDER[a.impl] - IMPL_ORDER[b.impl],
  );
  const c = (r: BenchRecord) => cFigureFor(records, r);
  const head = ["frame", "impl", "mode", "dir", "ns/frame", "min–max", "Mframes/s", "Gbit/s", "cpu ns", "runs", "vs C"];
  const body = rows.map((r) => {
    const ref = r.impl === "c" ? undefined : c(r);
    return [
      String(r.size),
      r.impl,
      r.mode,
      r.dir ?? "-",
      r.ns_per_frame.toFixed(1),
      `${r.min.toFixed(1)}–${r.max.toFixed(1)}`,
      (r.frames_per_s / 1e6).toFixed(3),
      ((r.frames_per_s * r.size * 8) / 1e9).toFixed(2),
      r.cpu_ns_per_frame === undefined ? "-" : r.cpu_ns_per_frame.toFixed(1),
      String(r.runs),
      ref === undefined ? "" : `${(r.ns_per_frame / ref.ns_per_frame).toFixed(2)}×`,
    ];
  });
  const width = head.map((h, i) => Math.max(h.length, ...body.map((b) => b[i]!.length)));
  const line = (cells: string[]) => cells.map((s, i) => (i <= 3 ? s.padEnd(width[i]!) : s.padStart(width[i]!))).join("  ");
  const out = [line(head), width.map((w) => "-".repeat(w)).join("  ")];
  let last = -1;
  rows.forEach((r, i) => {
    if (last !== -1 && r.size !== last) out.push("");
    last = r.size;
    out.push(line(body[i]!));
  });
  return out.join("\n");
}

/** Issue 6's goals, as bounds on ours ÷ C (ns per frame) in one mode and size. */
export const GOALS = [
  { mode: "device", size: 64, max: 4, text: "device path (write → Netfront → Netback → listen) within 4× of C's two-thread ring at 64 B" },
  { mode: "device", size: 1514, max: 2, text: "device path within 2× of C's two-thread ring at 1514 B" },
  { mode: "batch", size: 64, max: 4, text: "device path with the batch API (tryWriteMany → listenBatch) within 4× of C's two-thread ring at 64 B" },
  { mode: "batch", size: 1514, max: 2, text: "device path with the batch API within 2× of C's two-thread ring at 1514 B" },
  { mode: "single", size: 1514, max: 1.3, text: "one-thread ring path within 1.3× of C at 1514 B" },
  { mode: "single", size: 64, max: 2, text: "one-thread ring path within 2× of C at 64 B" },
] as const;

/**
 * One line per goal and direction: the figure, the bound, met or not. (postMessage stays in
 * the table as a reference row, not a goal: near 0.6 M frames/s pipelined, "100× postMessage"
 * would ask for more than C's own two threads.)
 */
export function formatGoals(records: readonly BenchRecord[]): string {
  const out: string[] = [];
  for (const g of GOALS) {
    for (const r of records.filter((x) => x.impl === "ours" && x.mode === g.mode && x.size === g.size)) {
      const c = cFigureFor(records, r);
      if (c === undefined) continue;
      const ratio = r.ns_per_frame / c.ns_per_frame;
      const cpu = (x: BenchRecord) => (x.cpu_ns_per_frame === undefined ? "" : ` (CPU ${x.cpu_ns_per_frame.toFixed(1)})`);
      out.push(`${ratio <= g.max ? "met    " : "NOT MET"}  ${g.text}, ${r.dir}: ${ratio.toFixed(2)}× C (bound ${g.max.toFixed(2)}×; ours ${r.ns_per_frame.toFixed(1)}${cpu(r)}, C ${c.ns_per_frame.toFixed(1)}${cpu(c)} ns/frame)`);
    }
  }
  return out.join("\n");
}

/** A figure in the JSON file: median, spread and runs. */
export interface JsonFigure {
  ns_per_frame: number;
  frames_per_s: number;
  min: number;
  max: number;
  runs: number;
  cpu_ns_per_frame?: number;
}

/** One JSON record per frame size, mode and direction: ours, C's and the ratio between them. */
export interface JsonRow {
  /** ours, or bun for the postMessage baseline. */
  impl: BenchRecord["impl"];
  size: number;
  mode: BenchRecord["mode"];
  dir: BenchRecord["dir"];
  ours: JsonFigure;
  c: JsonFigure | null;
  /** ours ÷ C in ns per frame (below 1: faster than C); null without a C figure. */
  ratio: number | null;
}

function figure(r: BenchRecord): JsonFigure {
  const { ns_per_frame, frames_per_s, min, max, runs, cpu_ns_per_frame } = r;
  return { ns_per_frame, frames_per_s, min, max, runs, ...(cpu_ns_per_frame === undefined ? {} : { cpu_ns_per_frame }) };
}

/** Our records and the postMessage baseline, each beside its C figure (figure `ours` holds the row's own). */
export function jsonRows(records: readonly BenchRecord[]): JsonRow[] {
  return records
    .filter((r) => r.impl !== "c")
    .map((r) => {
      const c = cFigureFor(records, r);
      return { impl: r.impl, size: r.size, mode: r.mode, dir: r.dir, ours: figure(r), c: c === undefined ? null : figure(c), ratio: c === undefined ? null : r.ns_per_frame / c.ns_per_frame };
    });
}
