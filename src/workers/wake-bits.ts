/**
 * A set of small integers ("slots") in shared memory that any thread may add to and one thread
 * takes from: how a pool worker hears which of its rings the main thread (or another worker)
 * has news for, and how the main thread hears which of its queues the workers touched.
 *
 * Two levels: a bit per slot, and a summary bit per 32-slot word, so a take costs what was set,
 * not what could be. Setting is Atomics.or, taking Atomics.exchange: no lock, no bit lost, a
 * slot set twice before a take is taken once. A `sleeping` word says whether the taker must be
 * woken: the taker raises it and looks once more before it blocks, a setter reads it after it
 * set its bit, and sequentially consistent atomics order the two, so no wake-up is lost.
 */

const SEQ = 0; // bumped to wake a taker that waits with Atomics.wait / waitAsync
const SLEEPING = 1;
const HEADER = 4;

export interface WakeBitsState {
  buffer: SharedArrayBuffer;
  slots: number;
}

export function createWakeBitsState(slots: number): WakeBitsState {
  if (!Number.isInteger(slots) || slots < 1 || slots > 1 << 20) throw new RangeError(`wake bits: slots must be in 1..${1 << 20}, got ${slots}`);
  const words = Math.ceil(slots / 32);
  const summary = Math.ceil(words / 32);
  return { buffer: new SharedArrayBuffer((HEADER + summary + words) * 4), slots };
}

export class WakeBits {
  readonly words: Int32Array;
  private readonly summaryAt = HEADER;
  private readonly bitsAt: number;
  private readonly summaryWords: number;

  constructor(readonly state: WakeBitsState) {
    this.words = new Int32Array(state.buffer);
    const words = Math.ceil(state.slots / 32);
    this.summaryWords = Math.ceil(words / 32);
    this.bitsAt = HEADER + this.summaryWords;
  }

  /** Add `slot`; true when the taker sleeps and must be woken. */
  set(slot: number): boolean {
    const w = slot >>> 5;
    Atomics.or(this.words, this.bitsAt + w, 1 << (slot & 31));
    Atomics.or(this.words, this.summaryAt + (w >>> 5), 1 << (w & 31));
    return Atomics.load(this.words, SLEEPING) === 1;
  }

  /** Take every slot set since the last take, in no particular order, into `out` (emptied first). */
  take(out: number[]): number[] {
    out.length = 0;
    for (let s = 0; s < this.summaryWords; s++) {
      let sum = Atomics.exchange(this.words, this.summaryAt + s, 0);
      while (sum !== 0) {
        const low = sum & -sum;
        sum ^= low;
        const w = (s << 5) | (31 - Math.clz32(low));
        let bits = Atomics.exchange(this.words, this.bitsAt + w, 0);
        while (bits !== 0) {
          const b = bits & -bits;
          bits ^= b;
          out.push((w << 5) | (31 - Math.clz32(b)));
        }
      }
    }
    return out;
  }

  /** Anything set (a look, not a take). */
  any(): boolean {
    for (let s = 0; s < this.summaryWords; s++) if (Atomics.load(this.words, this.summaryAt + s) !== 0) return true;
    return false;
  }

  /** The taker is about to block (true) or has woken (false). */
  setSleeping(on: boolean): void {
    Atomics.store(this.words, SLEEPING, on ? 1 : 0);
  }

  /** For a taker that blocks on the sequence word: the value to wait on, and the wake. */
  get seq(): number {
    return Atomics.load(this.words, SEQ);
  }
  static readonly SEQ = SEQ;

  /** Wake a taker blocked on the sequence word. */
  wake(): void {
    Atomics.add(this.words, SEQ, 1);
    Atomics.notify(this.words, SEQ);
  }
}
