/**
 * A mutex in one Int32 of a SharedArrayBuffer, shared by every thread (Drepper's three-state
 * futex mutex: 0 free, 1 held, 2 held and maybe waited on, so an uncontended release never
 * calls notify). Holders run short synchronous sections and never user code, so a wait longer
 * than `timeoutMs` means a holder died (a terminated worker): fail loudly instead of hanging.
 */
import { PlatformError } from "../types.ts";

const FREE = 0;
const HELD = 1;
const CONTENDED = 2;
const SPINS = 100;

export class SharedLock {
  constructor(
    private readonly words: Int32Array,
    private readonly index: number,
    private readonly timeoutMs = 5000,
  ) {}

  acquire(op: string): void {
    const w = this.words;
    const i = this.index;
    let c = Atomics.compareExchange(w, i, FREE, HELD);
    if (c === FREE) return;
    // Another vCPU may be about to release: spinning is cheaper than a futex round trip.
    for (let n = 0; n < SPINS; n++) {
      c = Atomics.compareExchange(w, i, FREE, HELD);
      if (c === FREE) return;
    }
    const deadline = performance.now() + this.timeoutMs;
    if (c !== CONTENDED) c = Atomics.exchange(w, i, CONTENDED);
    while (c !== FREE) {
      const left = deadline - performance.now();
      if (left <= 0) {
        throw new PlatformError("ETIMEDOUT", op, `the xenstore lock was held for more than ${this.timeoutMs} ms (did a thread die holding it?)`);
      }
      Atomics.wait(w, i, CONTENDED, left);
      c = Atomics.exchange(w, i, CONTENDED);
    }
  }

  release(): void {
    if (Atomics.sub(this.words, this.index, 1) !== HELD) {
      Atomics.store(this.words, this.index, FREE);
      Atomics.notify(this.words, this.index, 1);
    }
  }

  with<T>(op: string, fn: () => T): T {
    this.acquire(op);
    try {
      return fn();
    } finally {
      this.release();
    }
  }
}
