/**
 * The main thread's end of a send queue. A write copies the frame into the queue and kicks the
 * worker only if it sleeps. When the queue is full, the write waits (Atomics.waitAsync on the
 * consumer index: no busy loop, the event loop stays free) and later writes queue up behind
 * it, so frames leave in the order they were written.
 */
import { NetError } from "./errors.ts";
import { FrameQueue } from "../workers/frame-queue.ts";

export interface FrameWriterOptions {
  minFrame: number;
  /** The largest frame now (it may change with the session: a peer without scatter-gather). */
  maxFrame: () => number;
  /** Wake the consumer (the worker) when it sleeps. */
  wake: () => void;
  /** Non-null once the device can no longer send; writes then fail with it. */
  closed: () => NetError | null;
}

export class FrameWriter {
  /** The last write that had to wait; later writes wait behind it. */
  private tail: Promise<void> | null = null;
  /** Frames committed to the queue over the writer's life, mod 2^32 (as Control.settled). */
  committed = 0;

  constructor(
    private readonly q: FrameQueue,
    private readonly opts: FrameWriterOptions,
  ) {}

  /** Bytes a frame may have, checked before anything is queued. */
  check(len: number): void {
    const max = this.opts.maxFrame();
    if (typeof len !== "number" || Number.isNaN(len) || (Number.isFinite(len) && !Number.isInteger(len))) {
      throw new NetError("BAD_ARGUMENT", `a frame length must be a whole number of bytes, got ${describeLength(len)}`);
    }
    if (len < this.opts.minFrame) {
      throw new NetError("FRAME_TOO_SHORT", `a frame needs at least ${this.opts.minFrame} bytes (an Ethernet header), got ${len}`);
    }
    if (len > max) throw new NetError("FRAME_TOO_LONG", `a frame may have at most ${max} bytes, got ${len}`);
  }

  /**
   * Queue a frame of `len` bytes that `fill` writes at `offset` of the array it is given. `fill`
   * runs before this returns: into the queue, or into a copy when the queue is full.
   */
  write(len: number, meta: number, fill: (dst: Uint8Array, offset: number) => void): Promise<void> {
    const closed = this.opts.closed();
    if (closed !== null) return Promise.reject(closed);
    try {
      this.check(len);
      if (this.tail === null && this.tryWrite(len, meta, fill)) return Promise.resolve();
    } catch (e) {
      return Promise.reject(e);
    }
    // It has to wait: take the bytes now, so the caller may reuse its buffer at once.
    const copy = new Uint8Array(len);
    try {
      fill(copy, 0);
    } catch (e) {
      return Promise.reject(e);
    }
    const later = (dst: Uint8Array, off: number) => dst.set(copy, off);
    const run = (this.tail ?? Promise.resolve()).then(() => this.waitAndWrite(len, meta, later));
    const tail = run.catch(() => {});
    this.tail = tail;
    void tail.then(() => {
      if (this.tail === tail) this.tail = null;
    });
    return run;
  }

  /**
   * Queue the frame now if it fits and no earlier write is waiting; false otherwise (nothing
   * queued). No promise: the fast path for senders that keep the queue busy.
   */
  offer(len: number, meta: number, fill: (dst: Uint8Array, offset: number) => void): boolean {
    const closed = this.opts.closed();
    if (closed !== null) throw closed;
    this.check(len);
    return this.tail === null && this.tryWrite(len, meta, fill);
  }

  /**
   * Resolves once a frame of `len` bytes would fit (or the device closed: then it rejects).
   * A length no frame may have is refused at once, as write() refuses it: it would never fit.
   */
  async writable(len: number): Promise<void> {
    const q = this.q;
    this.check(len);
    for (;;) {
      const closed = this.opts.closed();
      if (closed !== null) throw closed;
      if (this.tail === null && q.hasRoom(len)) return;
      await this.tail;
      q.setProducerWaiting(true);
      const cons = Atomics.load(q.ctl, FrameQueue.CONS);
      if (q.hasRoom(len)) {
        q.setProducerWaiting(false);
        continue;
      }
      this.opts.wake();
      const w = Atomics.waitAsync(q.ctl, FrameQueue.CONS, cons, 1000);
      if (w.async) await w.value;
      q.setProducerWaiting(false);
    }
  }

  private tryWrite(len: number, meta: number, fill: (dst: Uint8Array, offset: number) => void): boolean {
    const q = this.q;
    const off = q.reserve(len);
    if (off < 0) return false;
    // A fill that throws leaves the record uncommitted: nothing is sent.
    fill(q.data, off);
    q.commit(off, len, meta);
    this.committed = (this.committed + 1) >>> 0;
    if (q.consumerWaiting()) this.opts.wake();
    return true;
  }

  private async waitAndWrite(len: number, meta: number, fill: (dst: Uint8Array, offset: number) => void): Promise<void> {
    const q = this.q;
    for (;;) {
      const closed = this.opts.closed();
      if (closed !== null) throw closed;
      q.setProducerWaiting(true);
      const cons = Atomics.load(q.ctl, FrameQueue.CONS);
      if (this.tryWrite(len, meta, fill)) {
        q.setProducerWaiting(false);
        return;
      }
      this.opts.wake(); // the worker may be asleep with work it can now do
      const w = Atomics.waitAsync(q.ctl, FrameQueue.CONS, cons, 1000);
      if (w.async) await w.value;
    }
  }
}

function describeLength(v: unknown): string {
  return typeof v === "string" ? JSON.stringify(v) : typeof v === "number" || typeof v === "bigint" || typeof v === "boolean" || v == null ? String(v) : typeof v;
}
