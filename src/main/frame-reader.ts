/**
 * The main thread's end of a receive queue: drains it without blocking the event loop and
 * hands each frame to a sink as a view into the queue, valid only during the call (the sink
 * copies what it keeps). Sleeps on the producer index with Atomics.waitAsync; the worker
 * wakes it only when it says it is waiting.
 */
import { FrameQueue } from "../workers/frame-queue.ts";

/** Frames delivered before yielding to the event loop, so timers and I/O still run under load. */
const BATCH = 256;

export class FrameReader {
  private running = false;
  private loop: Promise<void> | null = null;

  constructor(
    private readonly q: FrameQueue,
    private readonly sink: (frame: Uint8Array, meta: number) => void,
    /** Wake the producer (the worker) when it waits for space. */
    private readonly wake: () => void,
  ) {}

  start(): void {
    if (this.running) return;
    this.running = true;
    // A loop that is still winding down from a pause sees `running` again and goes on.
    this.loop ??= this.run().finally(() => (this.loop = null));
  }

  /** Stop delivering (frames stay queued, and the worker stops when the queue fills). */
  pause(): void {
    this.running = false;
  }

  /** Stop after the frame being delivered; frames still queued stay queued. */
  async stop(): Promise<void> {
    this.running = false;
    Atomics.notify(this.q.ctl, FrameQueue.PROD);
    await this.loop;
  }

  /** Deliver everything queued now, running or not (the last frames before a shutdown). */
  drainAll(): void {
    while (this.drain(BATCH, true) > 0);
  }

  /** Deliver what is queued now, up to `max` frames; returns how many. */
  drain(max = BATCH, force = false): number {
    const q = this.q;
    let n = 0;
    while (n < max && (this.running || force)) {
      const off = q.peek();
      if (off < 0) break;
      const len = q.recordLength(off);
      try {
        this.sink(q.data.subarray(off, off + len), q.recordMeta(off));
      } finally {
        q.release(off);
        n++;
      }
    }
    if (n > 0 && q.producerShouldWake()) this.wake();
    return n;
  }

  private async run(): Promise<void> {
    const q = this.q;
    while (this.running) {
      if (this.drain() === BATCH) {
        await new Promise((r) => setImmediate(r));
        continue;
      }
      q.setConsumerWaiting(true);
      const prod = Atomics.load(q.ctl, FrameQueue.PROD);
      if (!q.isEmpty()) {
        q.setConsumerWaiting(false);
        continue;
      }
      const w = Atomics.waitAsync(q.ctl, FrameQueue.PROD, prod, 1000);
      if (w.async) await w.value;
      q.setConsumerWaiting(false);
    }
  }
}
