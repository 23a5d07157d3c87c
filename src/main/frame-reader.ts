/**
 * The main thread's end of a receive queue: hands each frame to a sink as a view into the
 * queue, valid only during the call (the sink copies what it keeps). It runs when the pool's
 * doorbell says the worker committed frames while we waited (`onBell`), drains up to a batch,
 * yields to the event loop when there is more, and otherwise raises the queue's "consumer
 * waiting" flag and looks once more before it waits: no timer, no promise per wait.
 */
import { FrameQueue } from "../workers/frame-queue.ts";

/** Frames delivered before yielding to the event loop, so timers and I/O still run under load. */
const BATCH = 256;

export class FrameReader {
  private running = false;
  private scheduled = false;

  constructor(
    private readonly q: FrameQueue,
    private readonly sink: (frame: Uint8Array, meta: number) => void,
    /** Wake the producer (the worker) when it waits for space. */
    private readonly wake: () => void,
  ) {}

  start(): void {
    if (this.running) return;
    this.running = true;
    this.schedule();
  }

  /** Stop delivering (frames stay queued, and the worker stops when the queue fills). */
  pause(): void {
    this.running = false;
  }

  /** Stop after the frame being delivered; frames still queued stay queued. */
  stop(): void {
    this.running = false;
  }

  /** The doorbell rang for this queue: frames arrived while we waited. */
  readonly onBell = (): void => {
    if (this.running) this.run();
  };

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

  private schedule(): void {
    if (this.scheduled) return;
    this.scheduled = true;
    setImmediate(() => {
      this.scheduled = false;
      if (this.running) this.run();
    });
  }

  private run(): void {
    const q = this.q;
    q.setConsumerWaiting(false);
    if (this.drain() === BATCH) {
      this.schedule();
      return;
    }
    // Raise the flag, then look once more: a frame committed in between is not missed, and
    // one committed after makes the worker ring.
    q.setConsumerWaiting(true);
    if (!q.isEmpty()) {
      q.setConsumerWaiting(false);
      this.schedule();
    }
  }
}
