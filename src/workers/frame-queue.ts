/**
 * A single-producer, single-consumer queue of frames in a SharedArrayBuffer: how frames cross
 * between the main thread and a ring worker without postMessage (which copies, allocates and
 * wakes an event loop per message).
 *
 * Records are 8-byte aligned: a header {len u32, meta u32} and the bytes. A record never wraps;
 * when it does not fit before the end, a skip marker sends the consumer back to the start.
 * Positions are free-running u32 byte counts, so full and empty are told apart without a
 * spare slot. Who wakes whom is the caller's business: each side raises a "waiting" flag
 * before it sleeps, and the other side wakes it only when the flag is up, so a busy queue
 * costs no wake-up at all.
 *
 * Memory: the capacity is virtual (a SharedArrayBuffer's pages are committed when first
 * touched), and two rules keep the touched part small. A `window` bounds what may be queued
 * (the capacity only has to be large enough for the largest record beside it), and a producer
 * that finds the queue empty past its first pages starts again at the front. A queue whose
 * consumer keeps up stays in a few hot pages, whatever its capacity: a thousand devices do
 * not each cost a megabyte.
 */

const PROD = 0; // bytes produced (u32, free-running)
const CONS = 1; // bytes consumed
const PRODUCER_WAITING = 2; // the producer sleeps until space frees
const CONSUMER_WAITING = 3; // the consumer sleeps until a record arrives
const CLOSED = 4; // either side gave up: no more records
const HEADER_WORDS = 16; // a cache line apart from the data

const RECORD_HEADER = 8;
const SKIP = 0xffffffff;

export interface FrameQueueState {
  buffer: SharedArrayBuffer;
  capacity: number;
  /** Bytes (headers included) the queue may hold at once; a record always fits an empty queue. */
  window: number;
}

/**
 * The producer starts again at the front when it finds the queue empty beyond this offset and
 * beyond its window. Until the consumer has read past the skip this leaves behind, the front
 * holds what lay before the skip, so a reset never takes room the window would have allowed.
 */
const RESET_AT = 32768;

export function createFrameQueueState(capacity: number, window = capacity): FrameQueueState {
  if (!Number.isInteger(Math.log2(capacity)) || capacity < 4096) {
    throw new RangeError(`frame queue capacity must be a power of two >= 4096, got ${capacity}`);
  }
  if (!Number.isInteger(window) || window < 1 || window > capacity) {
    throw new RangeError(`frame queue window must be an integer in 1..${capacity}, got ${window}`);
  }
  return { buffer: new SharedArrayBuffer(HEADER_WORDS * 4 + capacity), capacity, window };
}

function align8(n: number): number {
  return (n + 7) & ~7;
}

export class FrameQueue {
  readonly ctl: Int32Array;
  readonly data: Uint8Array;
  private readonly dv: DataView;
  readonly capacity: number;
  readonly window: number;
  private readonly mask: number;
  private readonly resetAt: number;
  /**
   * Producer-private: a reset (the skip written when the queue was empty, back to the front)
   * that the consumer has not passed yet. Until it has, records written since must end
   * before the skip marker at `skipAt`, which it has still to read. -1: none pending.
   */
  private skipAt = -1;
  private skipEnd = 0;
  /** Producer-private: the reserved record starts a reset at this offset (published by commit). */
  private resetFrom = -1;
  /** The largest record that can always be queued once the queue drains. */
  readonly maxRecord: number;
  /**
   * The other side's index as this object last read it. Indices only grow, so a stale one
   * errs on the safe side (less room, fewer records) and is re-read only when it says full or
   * empty: one atomic read per burst instead of two per record. Each object keeps its own, so
   * a new FrameQueue on the same state (a restarted worker) starts from the shared values.
   */
  private seenCons: number;
  private seenProd: number;

  constructor(readonly state: FrameQueueState) {
    this.capacity = state.capacity;
    this.window = state.window ?? state.capacity;
    this.mask = state.capacity - 1;
    this.resetAt = Math.max(Math.min(RESET_AT, state.capacity / 4), this.window);
    this.ctl = new Int32Array(state.buffer, 0, HEADER_WORDS);
    this.data = new Uint8Array(state.buffer, HEADER_WORDS * 4, state.capacity);
    this.dv = new DataView(state.buffer, HEADER_WORDS * 4, state.capacity);
    this.maxRecord = state.capacity / 2 - RECORD_HEADER;
    this.seenCons = Atomics.load(this.ctl, CONS) >>> 0;
    this.seenProd = Atomics.load(this.ctl, PROD) >>> 0;
  }

  // ---- producer side ----

  /**
   * Reserve room for a record of `len` bytes; returns the data offset to write at, or -1 when
   * the queue is full (the producer then waits for space). Finish with `commit`.
   */
  reserve(len: number): number {
    if (len > this.maxRecord) throw new RangeError(`record of ${len} bytes exceeds the queue's ${this.maxRecord}`);
    const prod = this.ctl[PROD]! >>> 0; // only the producer writes it: no atomic read needed
    const need = RECORD_HEADER + align8(len);
    const at = prod & this.mask;
    this.resetFrom = -1;
    if (this.skipAt >= 0) this.checkSkipPassed();
    if (this.skipAt < 0 && at >= this.resetAt && need <= at) {
      // Empty, and past the first pages: start again at the front (see the class comment).
      // The skip is published with the record, by commit: a reservation that is never
      // committed leaves nothing behind.
      this.seenCons = Atomics.load(this.ctl, CONS) >>> 0;
      if (this.seenCons === prod) {
        this.resetFrom = at;
        return RECORD_HEADER;
      }
    }
    const tail = this.capacity - at;
    const total = tail < need ? tail + need : need;
    if (!this.fits(prod, need, total)) return -1;
    if (tail < need) {
      // Skip to the start.
      if (tail >= 4) this.dv.setUint32(at, SKIP, true);
      Atomics.store(this.ctl, PROD, (prod + tail) | 0);
      return RECORD_HEADER;
    }
    return at + RECORD_HEADER;
  }

  /** The consumer has read past the reset skip: the whole queue is ours again. */
  private checkSkipPassed(): void {
    const cons = Atomics.load(this.ctl, CONS) >>> 0;
    if (((cons - this.skipEnd) >>> 0) <= this.capacity) this.skipAt = -1;
  }

  /**
   * Whether `total` bytes (a record of `need`, after a skip to the front if it does not fit
   * before the end) may be queued at `prod`: within the window, or alone in an empty queue;
   * and, while a reset skip is pending, clear of its marker.
   */
  private fits(prod: number, need: number, total: number): boolean {
    if (this.skipAt >= 0) {
      // Written since the reset, from the front (at least the record that made it).
      const since = (prod - this.skipEnd) >>> 0;
      return total === need && since + need <= this.skipAt && since + need <= this.window;
    }
    if (this.room((prod - this.seenCons) >>> 0, total)) return true;
    // Full as far as we last looked: look again (the consumer only ever frees space).
    this.seenCons = Atomics.load(this.ctl, CONS) >>> 0;
    return this.room((prod - this.seenCons) >>> 0, total);
  }

  /** `total` more bytes on top of `used`: within the capacity, and the window unless the queue is empty. */
  private room(used: number, total: number): boolean {
    return used + total <= this.capacity && (used === 0 || used + total <= this.window);
  }

  /** Whether a record of `len` bytes would fit now (producer side; no side effects but a fresh look). */
  hasRoom(len: number): boolean {
    const prod = Atomics.load(this.ctl, PROD) >>> 0;
    if (this.skipAt >= 0) this.checkSkipPassed();
    const need = RECORD_HEADER + align8(len);
    const tail = this.capacity - (prod & this.mask);
    return this.fits(prod, need, tail < need ? tail + need : need);
  }

  /** Publish the record reserved at `offset` (as returned by reserve). */
  commit(offset: number, len: number, meta: number): void {
    const at = offset - RECORD_HEADER;
    this.dv.setUint32(at, len, true);
    this.dv.setUint32(at + 4, meta, true);
    let prod = this.ctl[PROD]! >>> 0;
    if (this.resetFrom >= 0) {
      // The skip marker, then the index past it: the consumer jumps to the front and finds the record.
      this.dv.setUint32(this.resetFrom, SKIP, true);
      this.skipAt = this.resetFrom;
      this.skipEnd = prod = (prod + this.capacity - this.resetFrom) >>> 0;
      this.resetFrom = -1;
    }
    // The store publishes the record: it orders the bytes above before the new index.
    Atomics.store(this.ctl, PROD, (prod + RECORD_HEADER + align8(len)) | 0);
  }

  /** Copy-in convenience: false when full. */
  push(bytes: Uint8Array, meta = 0): boolean {
    const off = this.reserve(bytes.byteLength);
    if (off < 0) return false;
    this.data.set(bytes, off);
    this.commit(off, bytes.byteLength, meta);
    return true;
  }

  // ---- consumer side ----

  /**
   * The next record's data offset, or -1 when empty. `recordLength(off)` and `recordMeta(off)`
   * read its header; `release(off)` gives the space back.
   */
  peek(): number {
    for (;;) {
      const cons = this.ctl[CONS]! >>> 0; // only the consumer writes it
      const ahead = (this.seenProd - cons) >>> 0;
      // Empty as far as we last looked (or behind us: another object on this queue consumed
      // past what this one saw): look again. The atomic read orders the record bytes after
      // the index that covers them.
      if (ahead === 0 || ahead > this.capacity) {
        this.seenProd = Atomics.load(this.ctl, PROD) >>> 0;
        if (this.seenProd === cons) return -1;
      }
      const at = cons & this.mask;
      const tail = this.capacity - at;
      if (tail < RECORD_HEADER || this.dv.getUint32(at, true) === SKIP) {
        Atomics.store(this.ctl, CONS, (cons + tail) | 0);
        continue;
      }
      return at + RECORD_HEADER;
    }
  }

  recordLength(offset: number): number {
    return this.dv.getUint32(offset - RECORD_HEADER, true);
  }

  recordMeta(offset: number): number {
    return this.dv.getUint32(offset - RECORD_HEADER + 4, true);
  }

  release(offset: number): void {
    const len = this.recordLength(offset);
    Atomics.store(this.ctl, CONS, (this.ctl[CONS]! + RECORD_HEADER + align8(len)) | 0);
  }

  isEmpty(): boolean {
    return Atomics.load(this.ctl, PROD) === Atomics.load(this.ctl, CONS);
  }

  /** Bytes queued (headers included). */
  usedBytes(): number {
    return (Atomics.load(this.ctl, PROD) - Atomics.load(this.ctl, CONS)) >>> 0;
  }

  // ---- sleeping and waking ----

  /** Raise the flag before the last check and the sleep; the other side wakes us if it is up. */
  setConsumerWaiting(on: boolean): void {
    Atomics.store(this.ctl, CONSUMER_WAITING, on ? 1 : 0);
  }
  consumerWaiting(): boolean {
    return Atomics.load(this.ctl, CONSUMER_WAITING) === 1;
  }
  setProducerWaiting(on: boolean): void {
    Atomics.store(this.ctl, PRODUCER_WAITING, on ? 1 : 0);
  }
  producerWaiting(): boolean {
    return Atomics.load(this.ctl, PRODUCER_WAITING) === 1;
  }

  /**
   * A waiting producer is worth waking: the queue has drained to half its window. Waking it
   * as soon as one record frees would make a full queue cost one cross-thread wake-up
   * (20–40 µs) per frame.
   */
  producerShouldWake(): boolean {
    return this.producerWaiting() && this.usedBytes() <= this.window / 2;
  }

  /** The words to sleep on with Atomics.wait/waitAsync: PROD for a consumer, CONS for a producer. */
  static readonly PROD = PROD;
  static readonly CONS = CONS;

  /** Wake a sleeper on PROD (consumer) or CONS (producer). */
  wake(word: typeof PROD | typeof CONS): void {
    Atomics.notify(this.ctl, word);
  }

  close(): void {
    Atomics.store(this.ctl, CLOSED, 1);
    Atomics.notify(this.ctl, PROD);
    Atomics.notify(this.ctl, CONS);
  }

  get closed(): boolean {
    return Atomics.load(this.ctl, CLOSED) === 1;
  }
}
