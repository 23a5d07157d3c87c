/**
 * Frames between two threads through our shared-memory frame queue (src/workers/frame-queue.ts),
 * beside the postMessage baseline measured in the same run: the main thread pushes frames
 * stamped with their sequence number, a worker drains and checks them. This is the hop every
 * frame makes between the application and a ring worker, without the rings.
 *
 *   bun run bench/queue-pair.ts [--runs N]
 *
 * Each figure is the median over N runs (default 5) of mitata's median per batch, with min–max.
 */
import { measure } from "mitata";
import { createFrameQueueState, FrameQueue } from "../src/workers/frame-queue.ts";
import { median, runsArg } from "./compare.ts";
import { openPostMessageChannel } from "./postmessage-baseline.ts";
import { QP, type QueuePairInit } from "./queue-pair-worker.ts";
import { QUEUE_BYTES } from "./sim-link.ts";

const BATCH = 20_000;
const SIZES = [64, 1514];

interface QueuePair {
  /** Push `n` frames and spin until the worker has taken them all. */
  batch(n: number): void;
  close(): Promise<void>;
}

async function queuePair(size: number): Promise<QueuePair> {
  const state = createFrameQueueState(QUEUE_BYTES);
  const q = new FrameQueue(state);
  const w = new Int32Array(new SharedArrayBuffer(QP.words * 4));
  const worker = new Worker(new URL("./queue-pair-worker.ts", import.meta.url).href);
  const messages: string[] = [];
  let notify: (() => void) | null = null;
  worker.onmessage = (e: MessageEvent<string>) => {
    messages.push(e.data);
    notify?.();
  };
  const next = (what: string) =>
    new Promise<void>((resolve) => {
      const check = () => (messages.includes(what) ? resolve() : (notify = check));
      check();
    });
  worker.postMessage({ queue: state, size, words: w.buffer } satisfies QueuePairInit);
  await next("ready");
  const frame = new Uint8Array(size).map((_, i) => i * 7);
  const stamp = new DataView(frame.buffer);
  let sent = 0;
  return {
    batch(n) {
      const target = sent + n;
      while (sent < target) {
        stamp.setUint32(0, sent, true);
        if (q.push(frame)) sent++;
      }
      // The worker drains on its own CPU; a worker that died would leave this spinning for ever.
      const deadline = performance.now() + 10_000;
      while (Atomics.load(w, QP.received) !== sent) {
        if (performance.now() > deadline) throw new Error(`queue pair ${size} B: the worker took no frame for 10 s (${Atomics.load(w, QP.received)} of ${sent})`);
      }
      const wrong = Atomics.load(w, QP.wrong);
      if (wrong !== 0) throw new Error(`queue pair ${size} B: ${wrong} frames arrived wrong`);
    },
    async close() {
      Atomics.store(w, QP.stop, 1);
      await next("stopped");
      worker.terminate();
    },
  };
}

const runs = runsArg(process.argv.slice(2));
const rows: { name: string; ns: number[] }[] = [];
for (const size of SIZES) {
  const qp = await queuePair(size);
  const pm = await openPostMessageChannel(size);
  qp.batch(BATCH); // warm up both before timing
  await pm.send(BATCH);
  const ours = { name: `frame queue      ${size} B`, ns: [] as number[] };
  const base = { name: `postMessage      ${size} B`, ns: [] as number[] };
  for (let r = 0; r < runs; r++) {
    ours.ns.push((await measure(() => qp.batch(BATCH), { min_cpu_time: 200e6 })).p50 / BATCH);
    base.ns.push((await measure(() => pm.send(BATCH), { min_cpu_time: 200e6 })).p50 / BATCH);
  }
  rows.push(ours, base);
  await qp.close();
  await pm.close();
}
console.log(`main thread -> worker, ${runs} runs, ns per frame: median [min-max]`);
for (const { name, ns } of rows) {
  console.log(`${name}  ${median(ns).toFixed(1).padStart(7)}  [${Math.min(...ns).toFixed(1)}-${Math.max(...ns).toFixed(1)}]`);
}
process.exit(0);
