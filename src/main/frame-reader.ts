/**
 * The main thread's end of a receive queue: hands each frame to a sink as a view into the
 * queue, valid only during the call (the sink copies what it keeps), and the frames of each
 * chunk of up to CHUNK together as one batch (frame-batch.ts). It runs when the pool's
 * doorbell says the worker committed frames while we waited (`onBell`), drains up to a batch,
 * yields to the event loop when there is more, and otherwise raises the queue's "consumer
 * waiting" flag and looks once more before it waits: no timer, no promise per wait.
 *
 * Room goes back to the worker once per chunk (one atomic store, not one per frame): the
 * records of a chunk stay the sink's to read until it returns. Without batch listeners a
 * chunk ends after RELEASE_BYTES: many small frames share one store, a large frame's room goes
 * back at once, and the worker refills the queue while we read (measured: held for 16 KiB,
 * 1514-byte frames cost about 1.5x as much). For batch listeners a chunk ends at CHUNK frames
 * or a quarter of the queue's window, whichever comes first.
 */
import { FrameQueue } from "../workers/frame-queue.ts";
import type { FrameInfo } from "./device.ts";
import { QueueBatch, type FrameBatch } from "./frame-batch.ts";

/** Where a reader's frames go. */
export interface ReceiveSink {
  /** Whether frames go one by one now (listeners, iterators, captures); else only in batches. */
  perFrame(): boolean;
  frame(frame: Uint8Array, meta: number): void;
  /** Whether anyone takes batches now. */
  batched(): boolean;
  batch(batch: FrameBatch): void;
}

/** Bytes of records read before their room goes back, when no batch listener holds them. */
const RELEASE_BYTES = 1024;

/** Frames delivered before yielding to the event loop, so timers and I/O still run under load. */
const BATCH = 256;

export class FrameReader {
  private running = false;
  private scheduled = false;
  private readonly chunk: QueueBatch;
  /** Bytes of records after which a chunk ends (see the class comment). */
  private readonly chunkBytes: number;

  constructor(
    private readonly q: FrameQueue,
    private readonly sink: ReceiveSink,
    decode: (meta: number) => FrameInfo,
    /** Wake the producer (the worker) when it waits for space. */
    private readonly wake: () => void,
  ) {
    this.chunk = new QueueBatch(q.data, decode);
    this.chunkBytes = Math.max(1, q.window >>> 2);
  }

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
    const sink = this.sink;
    const chunk = this.chunk;
    let n = 0;
    while (n < max && (this.running || force)) {
      const perFrame = sink.perFrame();
      const batched = sink.batched();
      const limit = batched ? this.chunkBytes : RELEASE_BYTES;
      let bytes = 0;
      let empty = false;
      try {
        while (!chunk.full && bytes < limit && n < max && (this.running || force)) {
          const off = q.next();
          if (off < 0) {
            empty = true;
            break;
          }
          // Taken before the sink sees it: a sink that throws still has it counted and released.
          q.take(off);
          n++;
          const len = q.recordLength(off);
          bytes += len;
          const meta = q.recordMeta(off);
          if (batched) chunk.add(off, len, meta);
          if (perFrame) sink.frame(q.data.subarray(off, off + len), meta);
        }
        if (chunk.length > 0) sink.batch(chunk);
      } finally {
        chunk.clear();
        // After the sink is done with the bytes: the worker may overwrite them once it sees this.
        q.releaseTaken();
      }
      // The chunk ended because the queue did: nothing more to look for now.
      if (empty) break;
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
