/**
 * The reference figures our driver is judged against, measured in one run:
 *
 *   c/single    the C reference (bench/c/netif-ref.c, Xen's ring.h/netif.h), front and back
 *               alternating on one thread: per-frame CPU cost. tx and rx.
 *   c/threads   the same rings with front and back on two pthreads: throughput. tx and rx.
 *   c/floor     the two memcpys per frame and nothing else.
 *   bun/postMessage  frames passed main thread → Worker by postMessage (window 256, acks every
 *               64): the naive alternative to shared-memory queues.
 *
 * for 64, 512, 1514, 4096 and 9014-byte frames. Every figure is the median of several runs,
 * taken round-robin (run 1 of everything, then run 2, ...) so that a burst of load on this
 * shared, noisy VM spreads over all figures instead of spoiling one; min and max show the
 * spread. Two-thread runs suffer most from other processes (a spinning side then competes
 * with them for the second CPU), so each one first waits, up to 5 s, for the CPUs to be idle;
 * the header says how many runs started on a busy machine anyway (--no-wait: don't wait).
 *
 *   bun run bench/compare.ts [--json FILE] [--runs N] [--sizes 64,1514] [--no-wait]
 *
 * The C side's choices (see bench/c/netif-ref.c): single mode turns round 32 frames per batch
 * (as bench/ring-loop.ts); in threads mode a side spins 50 µs before it blocks, because a
 * futex wake-up costs ~2.5 µs after a short sleep but 20–25 µs once the idle vCPU has halted
 * (guest haltpoll), and a shorter spin makes the pair sleep once per batch, 5–12× slower.
 *
 * Our driver's figures are not measured yet: measureOurs() is the place to add them, as
 * BenchRecords with impl "ours"; the table then shows each one's ratio to the C figure of the
 * same size, mode and direction.
 */
import { cpus, loadavg } from "node:os";
import { buildCReference, CReferenceUnavailable, type CDir, type CMode, type RunC } from "./c-reference.ts";
import { postMessageRate } from "./postmessage-baseline.ts";
import { devicePair, Flow } from "./device-pair.ts";
import { TxRingLoop } from "./ring-loop.ts";

export const SIZES = [64, 512, 1514, 4096, 9014] as const;
export const DEFAULT_RUNS = 7;

/** One figure: the median of `runs` runs of one (size, mode, impl, dir). */
export interface BenchRecord {
  size: number;
  /** single: one thread (CPU cost). threads: two threads or workers (throughput).
   *  floor: the two copies alone. postMessage: the naive worker baseline. */
  mode: "single" | "threads" | "floor" | "postMessage";
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

function median(v: number[]): number {
  const s = [...v].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 === 1 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
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
  for (let r = 0; r < runs; r++) {
    progress(`postMessage baseline, round ${r + 1}/${runs}`);
    for (const size of sizes) {
      await gate();
      ns.get(size)!.push((await postMessageRate(size, 100_000)).ns_per_frame);
    }
  }
  return sizes.map((size) => summarize({ size, mode: "postMessage", impl: "bun", dir: null }, ns.get(size)!));
}

/**
 * Our driver's figures, as BenchRecords with impl "ours". Mode single: the TX ring path on one
 * thread (protocol core, pre-shared page, grant copy; frames up to one page). Mode threads:
 * Netfront ↔ Netback through their worker pairs, each direction, the same gate before each run.
 */
export async function measureOurs(sizes: readonly number[], opts: MeasureOptions): Promise<BenchRecord[]> {
  const { runs, progress = () => {}, gate = async () => {} } = opts;
  const SINGLE_FRAMES = 64_000;
  const THREAD_FRAMES = 50_000;
  const THREAD_BATCH = 2_000;
  const single = new Map<number, number[]>();
  const threads = new Map<string, number[]>();
  const pair = await devicePair();
  try {
    const loops = new Map(sizes.filter((s) => s <= 4096).map((s) => [s, new TxRingLoop(s)] as const));
    const flows = new Map(sizes.flatMap((s) => [[`${s}/tx`, new Flow(pair.front, pair.back, s)], [`${s}/rx`, new Flow(pair.back, pair.front, s)]] as const));
    for (const loop of loops.values()) loop.step(32); // warm up the JIT before timing
    for (let r = 0; r < runs; r++) {
      progress(`ours, round ${r + 1}/${runs}`);
      for (const [size, loop] of loops) {
        const t0 = performance.now();
        for (let i = 0; i < SINGLE_FRAMES; i += 32) loop.step(32);
        push(single, size, ((performance.now() - t0) * 1e6) / SINGLE_FRAMES);
      }
      for (const [key, flow] of flows) {
        await gate();
        // Both ends' main-thread halves share this event loop: batches let the receiving side's
        // reader run between them, as the two domains' event loops would in parallel.
        const t0 = performance.now();
        for (let n = 0; n < THREAD_FRAMES; n += THREAD_BATCH) await flow.batch(THREAD_BATCH);
        push(threads, key, ((performance.now() - t0) * 1e6) / THREAD_FRAMES);
      }
    }
  } finally {
    await pair.close();
  }
  return [
    ...[...single].map(([size, ns]) => summarize({ size, mode: "single", impl: "ours", dir: "tx" }, ns)),
    ...[...threads].map(([key, ns]) => {
      const [size, dir] = key.split("/") as [string, "tx" | "rx"];
      return summarize({ size: Number(size), mode: "threads", impl: "ours", dir }, ns);
    }),
  ];
}

function push<K>(m: Map<K, number[]>, k: K, v: number): void {
  const a = m.get(k);
  if (a) a.push(v);
  else m.set(k, [v]);
}

const MODE_ORDER: Record<BenchRecord["mode"], number> = { single: 0, threads: 1, floor: 2, postMessage: 3 };
const IMPL_ORDER: Record<BenchRecord["impl"], number> = { c: 0, ours: 1, bun: 2 };
const dirOrder = (d: BenchRecord["dir"]) => (d === "tx" ? 0 : d === "rx" ? 1 : 2);

/** The table: one row per record, grouped by size; "vs C" = this ns/frame ÷ C's (same size, mode, dir). */
export function formatTable(records: readonly BenchRecord[]): string {
  const rows = [...records].sort(
    (a, b) => a.size - b.size || MODE_ORDER[a.mode] - MODE_ORDER[b.mode] || dirOrder(a.dir) - dirOrder(b.dir) || IMPL_ORDER[a.impl] - IMPL_ORDER[b.impl],
  );
  const c = (r: BenchRecord) => records.find((x) => x.impl === "c" && x.size === r.size && x.mode === r.mode && x.dir === r.dir);
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

interface Args {
  json: string | null;
  runs: number;
  sizes: number[];
  wait: boolean;
}

function parseArgs(argv: string[]): Args {
  const a: Args = { json: null, runs: DEFAULT_RUNS, sizes: [...SIZES], wait: true };
  for (let i = 0; i < argv.length; i++) {
    const flag = argv[i]!;
    if (flag === "--no-wait") {
      a.wait = false;
      continue;
    }
    const value = argv[i + 1];
    if (value === undefined && flag.startsWith("--")) throw new Error(`${flag} needs a value`);
    switch (flag) {
      case "--json":
        a.json = value!;
        break;
      case "--runs":
        a.runs = Number(value);
        if (!Number.isInteger(a.runs) || a.runs < 1) throw new Error(`--runs ${value}: need a positive integer`);
        break;
      case "--sizes":
        a.sizes = value!.split(",").map(Number);
        if (a.sizes.some((s) => !Number.isInteger(s) || s < 16 || s > 65535)) throw new Error(`--sizes ${value}: need integers in 16..65535`);
        break;
      default:
        throw new Error(`unknown argument ${flag}; usage: bun run bench/compare.ts [--json FILE] [--runs N] [--sizes 64,1514] [--no-wait]`);
    }
    i++;
  }
  return a;
}

async function main(): Promise<void> {
  const args = parseArgs(process.argv.slice(2));
  const t0 = performance.now();
  // A live status line on a terminal; nothing when stderr is a file or pipe.
  const tty = process.stderr.isTTY === true;
  const progress = (s: string) => {
    if (tty) process.stderr.write(`\r\x1b[K${s} (${((performance.now() - t0) / 1000).toFixed(0)} s)`);
  };

  let ref;
  try {
    ref = await buildCReference();
  } catch (e) {
    if (e instanceof CReferenceUnavailable) {
      console.error(e.message);
      process.exit(1);
    }
    throw e;
  }

  const loadBefore = loadavg()[0]!;
  const gate = quietGate();
  const opts: MeasureOptions = { runs: args.runs, progress, ...(args.wait ? { gate } : {}) };
  const records = [
    ...(await measureCReference(ref.runC, args.sizes, opts)),
    ...(await measureOurs(args.sizes, opts)),
    ...(await measurePostMessage(args.sizes, opts)),
  ];
  const seconds = (performance.now() - t0) / 1000;
  if (tty) process.stderr.write("\r\x1b[K");

  console.log(`${cpus()[0]?.model ?? "?"}, ${cpus().length} CPUs, Bun ${Bun.version}; ${args.runs} runs each, median [min–max]; took ${seconds.toFixed(1)} s`);
  if (!args.wait) {
    // The 1-minute load average before we started (we add about 1 ourselves while running).
    if (loadBefore > 0.5) console.log(`warning: load average was ${loadBefore.toFixed(2)} before the run: other processes compete for the CPUs, two-thread figures suffer most`);
  } else if (gate.busyStarts > 0) {
    console.log(`warning: ${gate.busyStarts} two-thread runs started with other processes busy (waited 5 s each): those figures are pessimistic`);
  }
  console.log(formatTable(records));
  if (args.json !== null) {
    await Bun.write(args.json, `${JSON.stringify(records, null, 2)}\n`);
    console.log(`wrote ${records.length} records to ${args.json}`);
  }
}

if (import.meta.main) await main();
