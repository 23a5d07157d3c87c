/**
 * The C reference peer: builds bench/c/netif-ref.c with gcc against Xen's <xen/io/ring.h> and
 * <xen/io/netif.h>, caches the binary, and runs it.
 *
 *   const { runC } = await buildCReference();
 *   const r = await runC("threads", "tx", 1514, 1_000_000);   // r.frames_per_s, r.ns_per_frame
 *
 * The binary lands in bench/.build/ under a name derived from a hash of the source, the
 * compiler flags and gcc's version, so an edit to the C (or a new gcc) rebuilds it and
 * concurrent runs (bench and tests at once) never half-write the same file.
 */
import { existsSync, mkdirSync, renameSync, rmSync } from "node:fs";
import { join } from "node:path";

export const C_SOURCE = join(import.meta.dir, "c", "netif-ref.c");
export const BUILD_DIR = join(import.meta.dir, ".build");
/** What the C program includes from libxen-dev. */
const XEN_HEADERS = ["/usr/include/xen/io/ring.h", "/usr/include/xen/io/netif.h"];
/** gnu11: ring.h's XEN_RING_NR_UNCONSUMED_REQUESTS is a GNU statement expression. */
const CFLAGS = ["-std=gnu11", "-O2", "-Wall", "-Wextra", "-fno-strict-aliasing", "-pthread"];

/** single: one thread, per-frame CPU cost. threads: two pthreads, throughput. memcpy: the floor. */
export type CMode = "single" | "threads" | "memcpy";
/** tx: front → back. rx: back → front. (memcpy ignores it.) */
export type CDir = "tx" | "rx";

/** What one side of a threads run did about notifications (zeros in single and memcpy mode). */
export interface CSideStats {
  /** The ring's notify rule said "notify the peer". */
  kicks: number;
  /** ... and the peer was asleep, so it took a futex wake. */
  wakes: number;
  /** futex waits this side made. */
  sleeps: number;
  /** Sleeps that ran into the 1 s bound: a lost wake-up; must be 0. */
  timeouts: number;
  /** Wall time spent blocked (sleeping plus wake-up latency). */
  blocked_ms: number;
}

/** One run of the C program: the JSON line it prints. */
export interface CResult {
  mode: CMode;
  dir: CDir;
  size: number;
  frames: number;
  /** Wall time per timed frame (single and memcpy modes exclude a 1024-frame warm-up). */
  ns_per_frame: number;
  frames_per_s: number;
  gbit_s: number;
  /** CPU time per frame, both threads summed in threads mode (spinning counts). */
  cpu_ns_per_frame: number;
  timed_frames: number;
  /** The receiver checked every frame's sequence stamps; the program exits non-zero otherwise. */
  checked: true;
  /** Frames compared byte for byte with what was sent (every check_every-th). */
  compared: number;
  /** Frames per turn in single mode; 0 in the others. */
  batch: number;
  /** How long a side polls before blocking in threads mode; 0 otherwise. */
  spin_ns: number;
  front: CSideStats;
  back: CSideStats;
}

export interface RunOptions {
  /** Compare every n-th frame in full (default 64; 1 = every frame). */
  checkEvery?: number;
  /** How long a side polls before blocking in threads mode (NETIF_REF_SPIN_NS; default 50 µs). */
  spinNs?: number;
  /** Frames per turn in single mode (NETIF_REF_BATCH; default 32). */
  batch?: number;
  /** Corrupt this frame in flight (NETIF_REF_FAULT): the run must then fail. For tests. */
  fault?: number;
  /** Kill the run after this long (default 120 s). */
  timeoutMs?: number;
}

export type RunC = (mode: CMode, dir: CDir, size: number, frames: number, opts?: RunOptions) => Promise<CResult>;

export interface CReference {
  /** Path of the built binary. */
  binary: string;
  runC: RunC;
}

/** gcc or the Xen headers are missing: the reference cannot be built here. */
export class CReferenceUnavailable extends Error {
  override readonly name = "CReferenceUnavailable";
  constructor(readonly missing: readonly string[]) {
    super(
      `the C reference (bench/c/netif-ref.c) cannot be built: missing ${missing.join(" and ")}. ` +
        "Install gcc and libxen-dev (Debian/Ubuntu: apt-get install gcc libxen-dev).",
    );
  }
}

/** The prerequisites that are missing on this machine (empty when the reference can be built). */
export function missingPrerequisites(): string[] {
  const missing: string[] = [];
  if (Bun.which("gcc") === null) missing.push("gcc (not on PATH)");
  for (const h of XEN_HEADERS) if (!existsSync(h)) missing.push(h);
  return missing;
}

let cached: Promise<CReference> | null = null;

/** Build (or reuse) the binary; throws CReferenceUnavailable when gcc or the headers are missing. */
export function buildCReference(): Promise<CReference> {
  cached ??= build().catch((e: unknown) => {
    cached = null; // let a later call retry, e.g. after installing the headers
    throw e;
  });
  return cached;
}

async function build(): Promise<CReference> {
  const missing = missingPrerequisites();
  if (missing.length > 0) throw new CReferenceUnavailable(missing);
  const gcc = Bun.which("gcc")!;

  const version = Bun.spawnSync([gcc, "-dumpfullversion"]).stdout.toString().trim();
  const source = await Bun.file(C_SOURCE).text();
  const key = Bun.hash(`${source}\0${CFLAGS.join(" ")}\0${version}`).toString(16);
  const binary = join(BUILD_DIR, `netif-ref-${key}`);

  if (!existsSync(binary)) {
    mkdirSync(BUILD_DIR, { recursive: true });
    // Build under a private name, then rename: a concurrent build of the same key is harmless.
    const tmp = `${binary}.${process.pid}.${Date.now()}.tmp`;
    const cc = Bun.spawnSync([gcc, ...CFLAGS, "-o", tmp, C_SOURCE], { stderr: "pipe", stdout: "pipe" });
    if (cc.exitCode !== 0) {
      rmSync(tmp, { force: true });
      throw new Error(`gcc failed on ${C_SOURCE}:\n${cc.stderr.toString()}`);
    }
    // Warnings do not stop the build (another gcc may warn about things this one does not)
    // but are shown, once, since the binary is cached.
    const diagnostics = cc.stderr.toString().trim();
    if (diagnostics !== "") console.warn(`gcc warnings for ${C_SOURCE}:\n${diagnostics}`);
    renameSync(tmp, binary);
  }
  return { binary, runC: (mode, dir, size, frames, opts) => run(binary, mode, dir, size, frames, opts) };
}

/** Build on first use and run once: the one-liner for scripts. */
export async function runC(mode: CMode, dir: CDir, size: number, frames: number, opts?: RunOptions): Promise<CResult> {
  return (await buildCReference()).runC(mode, dir, size, frames, opts);
}

async function run(binary: string, mode: CMode, dir: CDir, size: number, frames: number, opts: RunOptions = {}): Promise<CResult> {
  const args = [binary, mode, dir, String(size), String(frames)];
  if (opts.checkEvery !== undefined) args.push(String(opts.checkEvery));
  const env: Record<string, string> = { ...process.env } as Record<string, string>;
  if (opts.spinNs !== undefined) env.NETIF_REF_SPIN_NS = String(opts.spinNs);
  if (opts.batch !== undefined) env.NETIF_REF_BATCH = String(opts.batch);
  if (opts.fault !== undefined) env.NETIF_REF_FAULT = String(opts.fault);

  const proc = Bun.spawn(args, { env, stdout: "pipe", stderr: "pipe", timeout: opts.timeoutMs ?? 120_000 });
  const [out, err, code] = await Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text(), proc.exited]);
  const cmd = `netif-ref ${args.slice(1).join(" ")}`;
  if (code !== 0) {
    const why = proc.signalCode !== null ? `was killed (${proc.signalCode})` : code === 1 ? "failed its data check" : `exited with ${code}`;
    throw new Error(`${cmd} ${why}: ${err.trim()}`);
  }
  return parseResult(out, cmd);
}

/** Parse and validate the program's JSON line, so a format drift fails loudly here. */
export function parseResult(out: string, what = "netif-ref"): CResult {
  const lines = out.trim().split("\n");
  if (lines.length !== 1) throw new Error(`${what}: expected one JSON line, got ${lines.length}: ${out}`);
  let v: unknown;
  try {
    v = JSON.parse(lines[0]!);
  } catch {
    throw new Error(`${what}: not JSON: ${out}`);
  }
  const r = v as Record<string, unknown>;
  const bad = (field: string): never => {
    throw new Error(`${what}: bad or missing "${field}" in ${lines[0]}`);
  };
  if (r.mode !== "single" && r.mode !== "threads" && r.mode !== "memcpy") bad("mode");
  if (r.dir !== "tx" && r.dir !== "rx") bad("dir");
  for (const k of ["size", "frames", "ns_per_frame", "frames_per_s", "gbit_s", "cpu_ns_per_frame", "timed_frames", "compared", "batch", "spin_ns"]) {
    if (typeof r[k] !== "number" || !Number.isFinite(r[k]) || (r[k] as number) < 0) bad(k);
  }
  if (r.checked !== true) bad("checked");
  for (const side of ["front", "back"]) {
    const s = r[side] as Record<string, unknown> | undefined;
    if (typeof s !== "object" || s === null) bad(side);
    for (const k of ["kicks", "wakes", "sleeps", "timeouts", "blocked_ms"]) if (typeof s![k] !== "number") bad(`${side}.${k}`);
  }
  return v as CResult;
}
