/**
 * How the ring workers get the main thread's attention: one WakeBits for the whole machine,
 * a bit per queue end on this thread (a receive queue's reader, a send queue's writer). A
 * worker that commits frames to a queue whose reader waits, or frees room in one whose writer
 * waits, sets the queue's bit and wakes this thread's one waiter (Atomics.waitAsync) if it
 * sleeps. The loop then runs only the handlers whose bits were set: a thousand idle devices
 * cost no timer and no promise each, and a busy machine one wake-up per batch, not per queue.
 *
 * A pending Atomics.waitAsync does not keep the process alive: the devices' workers do.
 */
import { WakeBits, createWakeBitsState, type WakeBitsState } from "../workers/wake-bits.ts";

/** Queue ends per machine and thread: two per queue pair of a device end. */
const BELLS = 1 << 16;

export class Doorbell {
  readonly bits: WakeBits;
  private readonly handlers: ((() => void) | undefined)[] = [];
  private readonly free: number[] = [];
  private count = 0;
  private looping = false;
  private readonly taken: number[] = [];

  constructor() {
    this.bits = new WakeBits(createWakeBitsState(BELLS));
  }

  get state(): WakeBitsState {
    return this.bits.state;
  }

  /** A bell for `handler`; its index goes to the worker role that rings it. */
  register(handler: () => void): number {
    const i = this.free.pop() ?? this.handlers.length;
    if (i >= BELLS) throw new RangeError(`no free doorbell (${BELLS} queue ends on this machine)`);
    this.handlers[i] = handler;
    this.count++;
    if (!this.looping) {
      this.looping = true;
      void this.loop();
    }
    return i;
  }

  unregister(i: number): void {
    if (this.handlers[i] === undefined) return;
    this.handlers[i] = undefined;
    this.free.push(i);
    this.count--;
  }

  private async loop(): Promise<void> {
    const bits = this.bits;
    const words = bits.words;
    while (this.count > 0) {
      bits.setSleeping(true);
      const seq = bits.seq;
      if (!bits.any()) {
        const w = Atomics.waitAsync(words, WakeBits.SEQ, seq);
        if (w.async) await w.value;
      }
      bits.setSleeping(false);
      for (const i of bits.take(this.taken)) {
        try {
          this.handlers[i]?.();
        } catch (e) {
          // A handler's bug must not silence every other queue: report it, go on.
          queueMicrotask(() => {
            throw e;
          });
        }
      }
    }
    this.looping = false;
  }
}
