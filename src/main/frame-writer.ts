/**
 * The main thread's end of a send queue. A write copies the frame into the queue and kicks the
 * worker only if it sleeps. When the queue is full, the write waits until the worker has
 * drained it to half its window (the pool's doorbell rings `onBell`): no busy loop, the event
 * loop stays free. Later writes queue up behind it, so frames leave in the order they were
 * written.
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

/** Bytes a batch of writes stages before it hands them to the worker (see `stage`). */
const PUBLISH_BYTES = 1024;

/** What a write that queued at once returns: one settled promise for all (it cannot change). */
const QUEUED: Promise<void> = Promise.resolve();

/** A waiting writer looks again this often even without a bell (a safety net, not the mechanism). */
const RECHECK_MS = 1000;

export class FrameWriter {
  /** The last write that had to wait; later writes wait behind it. */
  private tail: Promise<void> | null = null;
  /** Writers waiting for room. */
  private waiters: (() => void)[] = [];
  /** Frames committed to the queue over the writer's life, mod 2^32 (as Control.settled). */
  committed = 0;
  /** Frames staged and not yet flushed, and their bytes. */
  private staged = 0;
  private stagedBytes = 0;

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
  write(len: number, meta: number, fill: (dst: Uint8Array, offset: number) => void, signal?: AbortSignal): Promise<void> {
    const closed = this.opts.closed();
    if (closed !== null) return Promise.reject(closed);
    try {
      this.check(len);
      if (signal?.aborted) throw abortedWrite(signal);
      if (this.tail === null && this.tryWrite(len, meta, fill)) return QUEUED;
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
    const fate = { queued: false };
    const run = (this.tail ?? Promise.resolve()).then(() => this.waitAndWrite(len, meta, later, fate, signal));
    const tail = run.catch(() => {});
    this.tail = tail;
    void tail.then(() => {
      if (this.tail === tail) this.tail = null;
    });
    if (signal === undefined) return run;
    // Aborted while it waits: it rejects at once and is never queued (waitAndWrite looks at
    // the signal before it queues). Once queued, an abort changes nothing: the frame goes.
    return new Promise<void>((resolve, reject) => {
      const onAbort = () => {
        if (!fate.queued) reject(abortedWrite(signal));
        this.wakeWaiters();
      };
      signal.addEventListener("abort", onAbort, { once: true });
      run.then(resolve, reject).finally(() => signal.removeEventListener("abort", onAbort));
    });
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
   * Put a frame (length already checked) in the queue without handing it to the worker yet:
   * false when it does not fit or an earlier write waits (nothing staged). `flush` hands every
   * staged frame over with one store and at most one wake-up: many small frames pay for one.
   * Past PUBLISH_BYTES staged it flushes by itself, so the worker starts on large frames while
   * later ones are still being copied in (holding a whole window back made the two threads
   * take turns: 1514-byte frames cost about twice as much).
   */
  stage(frame: Uint8Array, meta: number): boolean {
    if (this.tail !== null) return false;
    const q = this.q;
    const off = q.reserveNext(frame.byteLength);
    if (off < 0) return false;
    q.data.set(frame, off);
    q.commitAt(off, frame.byteLength, meta);
    this.staged++;
    this.stagedBytes += frame.byteLength;
    if (this.stagedBytes >= PUBLISH_BYTES) this.flush();
    return true;
  }

  /** Hand the staged frames to the worker (see `stage`). */
  flush(): void {
    if (this.staged === 0) return;
    this.q.publish();
    this.committed = (this.committed + this.staged) >>> 0;
    this.staged = 0;
    this.stagedBytes = 0;
    if (this.q.consumerWaiting()) this.opts.wake();
  }

  /** Whether the device may still send (throws why not). */
  assertOpen(): void {
    const closed = this.opts.closed();
    if (closed !== null) throw closed;
  }

  /**
   * Resolves once a frame of `len` bytes would fit (or the device closed: then it rejects).
   * A length no frame may have is refused at once, as write() refuses it: it would never fit.
   */
  async writable(len: number, signal?: AbortSignal): Promise<void> {
    const q = this.q;
    this.check(len);
    if (signal === undefined) {
      for (;;) {
        const closed = this.opts.closed();
        if (closed !== null) throw closed;
        if (this.tail === null && q.hasRoom(len)) return;
        await this.tail;
        await this.roomFor(len);
      }
    }
    if (signal.aborted) throw abortedWrite(signal, "writable");
    let onAbort = () => {};
    const aborted = new Promise<never>((_, reject) => {
      onAbort = () => {
        reject(abortedWrite(signal, "writable"));
        this.wakeWaiters();
      };
      signal.addEventListener("abort", onAbort, { once: true });
    });
    try {
      return await Promise.race([this.writable(len), aborted]);
    } finally {
      signal.removeEventListener("abort", onAbort);
    }
  }

  /** The doorbell rang for this queue: the worker freed room while we waited. */
  readonly onBell = (): void => {
    this.wakeWaiters();
  };

  /** The device closed: waiting writers look again, and fail. */
  closed(): void {
    this.wakeWaiters();
  }

  private wakeWaiters(): void {
    const w = this.waiters;
    if (w.length === 0) return;
    this.waiters = [];
    for (const r of w) r();
  }

  /**
   * Wait until a record of `len` bytes may fit: raise the producer flag, look once more, kick
   * the worker (it may sleep with work it can now do), wait for the bell.
   */
  private async roomFor(len: number): Promise<void> {
    const q = this.q;
    q.setProducerWaiting(true);
    try {
      if (q.hasRoom(len) || this.opts.closed() !== null) return;
      this.opts.wake();
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, RECHECK_MS);
        timer.unref?.();
        this.waiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    } finally {
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

  private async waitAndWrite(len: number, meta: number, fill: (dst: Uint8Array, offset: number) => void, fate: { queued: boolean }, signal?: AbortSignal): Promise<void> {
    for (;;) {
      const closed = this.opts.closed();
      if (closed !== null) throw closed;
      if (signal?.aborted) throw abortedWrite(signal);
      if (this.tryWrite(len, meta, fill)) {
        fate.queued = true;
        return;
      }
      await this.roomFor(len);
    }
  }
}

/** A write (or a wait for room) given up because its signal aborted. */
function abortedWrite(signal: AbortSignal, what = "write"): NetError {
  return new NetError("ABORTED", `the ${what} was aborted before the frame could be queued`, { cause: signal.reason });
}

function describeLength(v: unknown): string {
  return typeof v === "string" ? JSON.stringify(v) : typeof v === "number" || typeof v === "bigint" || typeof v === "boolean" || v == null ? String(v) : typeof v;
}
