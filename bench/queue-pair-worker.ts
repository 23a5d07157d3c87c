/**
 * The consuming end of bench/queue-pair.ts: drains the frame queue as fast as it can, checks
 * each record's length and sequence stamp, and counts them in a word the main thread reads.
 */
import { FrameQueue, type FrameQueueState } from "../src/workers/frame-queue.ts";

export interface QueuePairInit {
  queue: FrameQueueState;
  size: number;
  /** Int32 words: [STOP] and, a cache line on, [RECEIVED] then [WRONG]. */
  words: SharedArrayBuffer;
}

/** Word indices of QueuePairInit.words: the main thread's flag and the worker's counts on separate lines. */
export const QP = { stop: 0, received: 16, wrong: 17, words: 32 } as const;

declare const self: Worker;

self.onmessage = (e: MessageEvent<QueuePairInit>) => {
  const { queue, size, words } = e.data;
  const q = new FrameQueue(queue);
  const w = new Int32Array(words);
  const dv = new DataView(q.data.buffer, q.data.byteOffset, q.data.byteLength);
  let received = 0;
  self.postMessage("ready");
  while (Atomics.load(w, QP.stop) === 0) {
    let n = 0;
    for (let off = q.peek(); off >= 0; off = q.peek()) {
      if (q.recordLength(off) !== size || dv.getUint32(off, true) !== received >>> 0) Atomics.add(w, QP.wrong, 1);
      q.release(off);
      received++;
      n++;
    }
    if (n > 0) Atomics.store(w, QP.received, received);
  }
  self.postMessage("stopped");
};
