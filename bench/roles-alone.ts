/**
 * The two-worker path's work without the two threads: our real ring roles (front-tx/back-tx,
 * back-rx/front-rx) and the application's queue work (bench/ring-pair-worker.ts does the same
 * in its workers) alternating on one thread, beside the C reference's whole frame (single
 * mode) from the same run. Against `threads` in `bun run bench` it separates what the path
 * costs from what running it on two CPUs adds.
 *
 *   bun run bench/roles-alone.ts [--runs N]
 *
 * Each figure is the median over N runs (default 5) of mitata's median per batch, with min–max.
 */
import { parseArgs } from "node:util";
import { measure } from "mitata";
import { openPlatform } from "../src/platform/open.ts";
import { Control } from "../src/workers/control.ts";
import { FrameQueue } from "../src/workers/frame-queue.ts";
import { makeRole } from "../src/workers/role-loop.ts";
import { PeerNotifier, type RingRole, type RingWorkerInit } from "../src/workers/role.ts";
import { buildCReference, CReferenceUnavailable } from "./c-reference.ts";
import { framesFor, median, runsArg } from "./compare.ts";
import { roleInits, simLink } from "./sim-link.ts";

const BATCH = 10_000;
const SIZES = [64, 1514];

interface Side {
  q: FrameQueue;
  role: RingRole;
}

/** Both roles of one direction on this thread; `batch(n)` moves n frames end to end. */
function rolesAlone(dir: "tx" | "rx", size: number): { batch(n: number): void; close(): void } {
  const link = simLink(dir === "rx", 2048);
  const inits = roleInits(link, dir, 0);
  const side = (init: RingWorkerInit): Side => {
    const ctl = new Control(init.control);
    ctl.setPeerConnected(true);
    const p = openPlatform(init.platform);
    const q = new FrameQueue(init.queue);
    const role = makeRole(init, q, ctl, new PeerNotifier(p.openEventChannels(init.evtchn), init.port, ctl), p.gnttab, (e) => {
      throw e;
    });
    return { q, role };
  };
  const front = side(inits.front);
  const back = side(inits.back);
  const [producer, consumer] = dir === "tx" ? [front, back] : [back, front];
  const frame = new Uint8Array(size).map((_, i) => i * 7);
  const stamp = new DataView(frame.buffer);
  const dv = new DataView(consumer.q.data.buffer, consumer.q.data.byteOffset, consumer.q.data.byteLength);
  let sent = 0;
  let received = 0;
  return {
    batch(n) {
      const target = sent + n;
      while (received < target) {
        while (sent < target) {
          stamp.setUint32(0, sent, true);
          if (!producer.q.push(frame)) break;
          sent++;
        }
        front.role.poll();
        back.role.poll();
        const q = consumer.q;
        for (let off = q.peek(); off >= 0; off = q.peek()) {
          if (q.recordLength(off) !== size || dv.getUint32(off, true) !== received >>> 0) throw new Error(`roles alone ${dir} ${size} B: frame ${received} arrived wrong`);
          q.release(off);
          received++;
        }
      }
    },
    close() {
      link.close();
    },
  };
}

const argv = process.argv.slice(2);
const runs = runsArg(argv);
const oneArg = parseArgs({ args: argv, strict: false, options: { one: { type: "string" } } }).values.one;
if (typeof oneArg === "string") {
  // A child run: one direction and size, in a process of its own (as each C figure is): in one
  // process the four combinations share their JIT profiles and the figures went bimodal.
  const [dir, size] = oneArg.split(",") as ["tx" | "rx", string];
  const pair = rolesAlone(dir, Number(size));
  pair.batch(BATCH * 5); // the JIT warms up before anything is timed
  const ns: number[] = [];
  for (let r = 0; r < runs; r++) ns.push((await measure(() => pair.batch(BATCH), { min_cpu_time: 150e6 })).p50 / BATCH);
  pair.close();
  console.log(JSON.stringify(ns));
  process.exit(0);
}

let runC: Awaited<ReturnType<typeof buildCReference>>["runC"] | null = null;
try {
  runC = (await buildCReference()).runC;
} catch (e) {
  if (!(e instanceof CReferenceUnavailable)) throw e;
  console.log(`no C reference: ${e.message}`);
}
const rows: { name: string; ns: number[] }[] = [];
for (const size of SIZES) {
  for (const dir of ["tx", "rx"] as const) {
    const child = Bun.spawnSync([process.execPath, import.meta.path, "--runs", String(runs), "--one", `${dir},${size}`], { stdout: "pipe", stderr: "inherit" });
    if (child.exitCode !== 0) throw new Error(`roles alone ${dir} ${size} B: the child run exited with ${child.exitCode}`);
    rows.push({ name: `our roles alone, ${dir} ${size} B`, ns: JSON.parse(child.stdout.toString()) as number[] });
    if (runC === null) continue;
    const c: number[] = [];
    for (let r = 0; r < runs; r++) c.push((await runC("single", dir, size, framesFor(size))).ns_per_frame);
    rows.push({ name: `C whole frame, single ${dir} ${size} B`, ns: c });
  }
}
console.log(`one thread, ${runs} runs, ns per frame: median [min-max]`);
for (const { name, ns } of rows) console.log(`${name.padEnd(36)} ${median(ns).toFixed(1).padStart(7)}  [${Math.min(...ns).toFixed(1)}-${Math.max(...ns).toFixed(1)}]`);
process.exit(0);
