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
 *
 * Batches (the back end's grant copies, one hypervisor call for many frames): a producer may
 * hold several reservations (`reserveNext`), settle each one (`commitAt`, or `dropAt` for a
 * frame whose copy failed: a hole the consumer steps over), and publish them all with one
 * store (`publish`). A consumer may look past the head with a cursor (`next`, `take`) and
 * give back everything it took with one store (`releaseTaken`).
 *
 * Ordering: each side publishes with one Atomics.store of its index (PROD or CONS), after its
 * plain writes (record bytes, headers, markers) or reads (a consumer done with the bytes); the
 * other side reads that index with Atomics.load before touching what it covers. Atomics are
 * sequentially consistent, so a load that sees the new index also sees every write made
 * before the store (the records), and a producer that sees CONS move past a record knows the
 * consumer has finished reading it before it overwrites it. Nothing below an index is ever
 * written by the other side, and nothing beyond it is ever read. A reset's word (RESET) is
 * stored before the PROD that publishes the records at the front, and cleared after the CONS
 * that takes the consumer past it.
 */

const PROD = 0; // bytes produced (u32, free-running)
const CONS = 1; // bytes consumed
const PRODUCER_WAITING = 2; // the producer sleeps until space frees
const CONSUMER_WAITING = 3; // the consumer sleeps until a record arrives
const CLOSED = 4; // either side gave up: no more records
/**
 * A reset the consumer has not passed yet: 1 + the position where the consumer, on reaching
 * it, goes on at the front (the next multiple of the capacity); 0: none. The producer sets it
 * (before the PROD store that publishes the records after it), the consumer clears it (after
 * the CONS store that takes it past). Out of band, unlike SKIP: the records written at the
 * front after a reset may cover the offset it stands for.
 */
const RESET = 5;
const HEADER_WORDS = 16; // a cache line apart from the data

const RECORD_HEADER = 8;
/** In a header's length word: the rest of the queue up to the end is unused, go to the front. */
const SKIP = 0xffffffff;
/** In a header's length word: a record dropped before it was published; its length is in the meta word. */
const HOLE = 0xfffffffe;

export interface FrameQueueState {
  buffer: SharedArrayBuffer;
  capacity: number;
  /** Bytes (headers included) the queue may hold at once; a record always fits an empty queue. */
  window: number;
}

/**
 * The producer starts again at the front when it finds the queue empty beyond this offset: a
 * queue whose consumer keeps up stays in its first page and one burst. The reset is out of
 * band (RESET), so the window is the whole bound on the records after it.
 */
const RESET_AT = 4096;

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
  /** Producer-private: a pending reservation starts a reset at this position (publish sets RESET); -1: none. */
  private resetFrom = -1;
  /** Producer-private: reservations not yet published, and where the last one ends (valid while pending > 0). */
  private pending = 0;
  private head = 0;
  /** Consumer-private: records taken by the cursor and not released, and where the cursor is (valid while taken > 0). */
  private taken = 0;
  private cur = 0;
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
    this.resetAt = Math.min(RESET_AT, state.capacity / 4);
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
   * the queue is full (the producer then waits for space). Finish with `commit`. Reservations
   * not published yet are given up (their room is reserved again).
   */
  reserve(len: number): number {
    this.abandon();
    return this.reserveNext(len);
  }

  /**
   * Reserve room for one more record after those already reserved and not yet published (a
   * batch); the data offset, or -1 when it does not fit. Each reservation is settled with
   * `commitAt` or `dropAt`, and `publish` hands them all to the consumer at once.
   */
  reserveNext(len: number): number {
    if (len > this.maxRecord) throw new RangeError(`record of ${len} bytes exceeds the queue's ${this.maxRecord}`);
    const first = this.pending === 0;
    // Only the producer writes PROD: no atomic read needed. A batch goes on from its own head.
    const prod = first ? this.ctl[PROD]! >>> 0 : this.head;
    const need = RECORD_HEADER + align8(len);
    const at = prod & this.mask;
    if (first && at >= this.resetAt && this.ctl[RESET] === 0) {
      // Empty, and past the first page: start again at the front (see the class comment).
      // RESET is set by publish; until then the reset is ours alone, and abandon() takes it back.
      // The look at CONS costs no extra miss: the line is the one the PROD store needs.
      this.seenCons = Atomics.load(this.ctl, CONS) >>> 0;
      if (this.seenCons === prod) {
        this.resetFrom = prod;
        this.head = (prod + this.capacity - at + need) >>> 0;
        this.pending = 1;
        return RECORD_HEADER;
      }
    }
    const tail = this.capacity - at;
    const total = tail < need ? tail + need : need;
    if (!this.fits(prod, total)) return -1;
    this.head = (prod + total) >>> 0;
    this.pending++;
    if (tail < need) {
      // Skip to the start. The marker lies beyond PROD: the consumer reads it once published.
      if (tail >= 4) this.dv.setUint32(at, SKIP, true);
      return RECORD_HEADER;
    }
    return at + RECORD_HEADER;
  }

  /** Give up every reservation not yet published: nothing of them reaches the consumer. */
  abandon(): void {
    if (this.pending === 0) return;
    this.pending = 0;
    // A reset that was this batch's: the queue is back as it was (no reset pending).
    this.resetFrom = -1;
  }

  /**
   * Where the consumer goes on after a reset it has not passed (the front, one lap on), ours
   * not yet published or published; -1: none.
   */
  private resetEnd(): number {
    let from = this.resetFrom;
    if (from < 0) {
      const r = this.ctl[RESET]!;
      if (r === 0) return -1;
      from = (r - 1) >>> 0;
    }
    return (from + this.capacity - (from & this.mask)) >>> 0;
  }

  /**
   * Whether `total` bytes (a record, after a skip to the front if it does not fit before the
   * end) may be queued at `prod`: within the window, or alone in an empty queue.
   */
  private fits(prod: number, total: number): boolean {
    const end = this.resetEnd();
    if (end >= 0) {
      // A reset the consumer has not passed: what was written since, from the front (at least
      // the record that made it), is all that is queued. Within the window it never wraps to
      // the front again (that would take the window and more) and overtakes the consumer.
      const since = (prod - end) >>> 0;
      return since + total <= this.window;
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

  /** Whether a record of `len` bytes would fit now, after any pending reservations (producer side; no side effects but a fresh look). */
  hasRoom(len: number): boolean {
    const prod = this.pending > 0 ? this.head : Atomics.load(this.ctl, PROD) >>> 0;
    const need = RECORD_HEADER + align8(len);
    const tail = this.capacity - (prod & this.mask);
    return this.fits(prod, tail < need ? tail + need : need);
  }

  /** Publish the record reserved at `offset` (as returned by reserve). */
  commit(offset: number, len: number, meta: number): void {
    this.commitAt(offset, len, meta);
    this.publish();
  }

  /** Settle a pending reservation as a record of `len` bytes (not visible until publish). */
  commitAt(offset: number, len: number, meta: number): void {
    const at = offset - RECORD_HEADER;
    this.dv.setUint32(at, len, true);
    this.dv.setUint32(at + 4, meta, true);
  }

  /**
   * Settle a pending reservation of `len` bytes as a hole: its frame was not delivered, and
   * the consumer steps over it without seeing it. Later records of the batch stay where they are.
   */
  dropAt(offset: number, len: number): void {
    const at = offset - RECORD_HEADER;
    this.dv.setUint32(at, HOLE, true);
    this.dv.setUint32(at + 4, len, true);
  }

  /** Hand every pending reservation (each settled by commitAt or dropAt) to the consumer. */
  publish(): void {
    if (this.pending === 0) return;
    if (this.resetFrom >= 0) {
      // The reset, then the index past it: the consumer jumps to the front and finds the records.
      Atomics.store(this.ctl, RESET, (this.resetFrom + 1) | 0);
      this.resetFrom = -1;
    }
    this.pending = 0;
    // The store publishes the records: it orders the bytes, headers and markers above before the new index.
    Atomics.store(this.ctl, PROD, this.head | 0);
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
   * read its header; `release(off)` gives the space back. (Not while the cursor holds records.)
   */
  peek(): number {
    const cons = this.ctl[CONS]! >>> 0; // only the consumer writes it
    const pos = this.scan(cons);
    // Markers stepped over: their room goes back now.
    if (pos !== cons) Atomics.store(this.ctl, CONS, pos | 0);
    return pos === this.seenProd ? -1 : (pos & this.mask) + RECORD_HEADER;
  }

  /**
   * The cursor's record: the first one not taken yet (the head, when nothing is taken), or -1
   * when there is none. `take(off)` moves the cursor past it; the record stays queued, its
   * bytes ours to read, until `releaseTaken`.
   */
  next(): number {
    const from = this.taken > 0 ? this.cur : this.ctl[CONS]! >>> 0;
    const pos = this.scan(from);
    // Nothing held: markers stepped over give their room back now.
    if (this.taken === 0 && pos !== from) Atomics.store(this.ctl, CONS, pos | 0);
    this.cur = pos;
    return pos === this.seenProd ? -1 : (pos & this.mask) + RECORD_HEADER;
  }

  /** Move the cursor past the record `next()` returned (at `offset`). */
  take(offset: number): void {
    this.cur = (this.cur + RECORD_HEADER + align8(this.recordLength(offset))) >>> 0;
    this.taken++;
  }

  /** Give back every record taken, with one store; the caller is done with their bytes. */
  releaseTaken(): void {
    if (this.taken === 0) return;
    this.taken = 0;
    // After our reads of the records: a producer that sees the new index may overwrite them.
    Atomics.store(this.ctl, CONS, this.cur | 0);
  }

  /** Forget the cursor: records taken and not given back are read again from the head. */
  rewind(): void {
    this.taken = 0;
  }

  /**
   * The position of the first record at or after `pos`, stepping over a reset, skip markers
   * and holes; `seenProd` (fresh) when there is none.
   */
  private scan(pos: number): number {
    for (;;) {
      const ahead = (this.seenProd - pos) >>> 0;
      // Empty as far as we last looked (or behind us: another object on this queue consumed
      // past what this one saw, or a reset's jump): look again. The atomic read orders the
      // record bytes, and RESET, after the index that covers them.
      if (ahead === 0 || ahead > this.capacity) {
        this.seenProd = Atomics.load(this.ctl, PROD) >>> 0;
        if (this.seenProd === pos) return pos;
      }
      const r = this.ctl[RESET]!;
      if (r !== 0 && ((r - 1) >>> 0) === pos) {
        // A reset: the records go on at the front (which may cover this offset: read nothing
        // here). Nothing is held here (the producer reset an empty queue), so CONS goes past it
        // at once, then RESET is cleared: the producer, which counts from CONS once RESET is
        // clear, never counts the jump as queued bytes (a spurious "full").
        pos = (pos + this.capacity - (pos & this.mask)) >>> 0;
        if (this.taken === 0) Atomics.store(this.ctl, CONS, pos | 0);
        Atomics.store(this.ctl, RESET, 0);
        continue;
      }
      const at = pos & this.mask;
      const tail = this.capacity - at;
      if (tail < RECORD_HEADER) {
        pos = (pos + tail) >>> 0;
        continue;
      }
      const word = this.dv.getUint32(at, true);
      if (word === SKIP) pos = (pos + tail) >>> 0;
      else if (word === HOLE) pos = (pos + RECORD_HEADER + align8(this.dv.getUint32(at + 4, true))) >>> 0;
      else return pos;
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

  /** Bytes queued (headers included; a reset's jump to the front not counted). */
  usedBytes(): number {
    const prod = Atomics.load(this.ctl, PROD) >>> 0;
    const cons = Atomics.load(this.ctl, CONS) >>> 0;
    const r = this.ctl[RESET]!;
    if (r !== 0 && ((r - 1) >>> 0) === cons) {
      const end = (cons + this.capacity - (cons & this.mask)) >>> 0;
      const since = (prod - end) >>> 0;
      // The reset is published a moment before the index past it.
      return since > this.capacity ? 0 : since;
    }
    return (prod - cons) >>> 0;
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
