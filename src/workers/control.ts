/**
 * The control block a ring worker shares with the main thread: run state, the stop request,
 * the "peer is connected, you may transmit" gate, the first fatal error, the count of frames
 * settled, and the counters.
 * Counters have one writer (the worker), so plain Float64 stores suffice; the main thread
 * reads them whenever it likes (a 64-bit aligned store does not tear on the platforms Bun runs on).
 */

const W_STATE = 0;
const W_STOP = 1;
const W_PEER_CONNECTED = 2;
const W_ERROR_LEN = 3;
const W_SETTLED = 4;
const WORDS = 8;
const ERROR_BYTES = 1024;

export const WorkerState = {
  starting: 0,
  running: 1,
  stopped: 2,
  /** The worker stopped on a fatal error (a broken peer, a hypervisor refusal). */
  failed: 3,
} as const;
export type WorkerState = (typeof WorkerState)[keyof typeof WorkerState];

/** How a worker is asked to stop. */
export const StopMode = {
  none: 0,
  /** Stop at once: what is on the ring stays there. */
  now: 1,
  /**
   * Take in what the peer has already put on the ring (responses, requests), send nothing
   * new, then stop: the last frames of a session are read, not left behind.
   */
  drain: 2,
} as const;
export type StopMode = (typeof StopMode)[keyof typeof StopMode];

/** Counter slots; each role uses the ones that apply to it. */
export const Counter = {
  packets: 0,
  bytes: 1,
  /** Frames dropped: refused by the peer, or malformed and dropped by us. */
  drops: 2,
  /** Protocol errors from the peer (each also logged by the main thread). */
  errors: 3,
  /** Event-channel notifications sent. */
  notifies: 4,
  /** Times the worker slept waiting for work. */
  sleeps: 5,
  /** Frames whose extra-info slots we parsed. */
  extras: 6,
  /** Frames that never reached the peer: in flight when the session ended (also in drops). */
  lost: 7,
} as const;
const COUNTERS = 8;

export interface ControlState {
  words: SharedArrayBuffer;
  counters: SharedArrayBuffer;
  error: SharedArrayBuffer;
}

export function createControlState(): ControlState {
  return {
    words: new SharedArrayBuffer(WORDS * 4),
    counters: new SharedArrayBuffer(COUNTERS * 8),
    error: new SharedArrayBuffer(ERROR_BYTES),
  };
}

export class Control {
  readonly words: Int32Array;
  readonly counters: Float64Array;
  private readonly error: Uint8Array;

  constructor(readonly state: ControlState) {
    this.words = new Int32Array(state.words);
    this.counters = new Float64Array(state.counters);
    this.error = new Uint8Array(state.error);
  }

  get runState(): WorkerState {
    return Atomics.load(this.words, W_STATE) as WorkerState;
  }
  setState(s: WorkerState): void {
    Atomics.store(this.words, W_STATE, s);
    Atomics.notify(this.words, W_STATE);
  }

  /**
   * Ready for a new worker on the same counters: not stopping, not failed, peer not yet
   * connected. The settled count goes on: it is compared with what the main thread queued
   * over the device's whole life.
   */
  resetRun(): void {
    Atomics.store(this.words, W_STATE, WorkerState.starting);
    Atomics.store(this.words, W_STOP, StopMode.none);
    Atomics.store(this.words, W_PEER_CONNECTED, 0);
    Atomics.store(this.words, W_ERROR_LEN, 0);
  }

  /** Ask the worker to stop; a later `now` overrides an earlier `drain`, never the reverse. */
  requestStop(mode: StopMode = StopMode.now): void {
    Atomics.compareExchange(this.words, W_STOP, StopMode.none, mode);
    if (mode === StopMode.now) Atomics.store(this.words, W_STOP, StopMode.now);
  }
  get stopMode(): StopMode {
    return Atomics.load(this.words, W_STOP) as StopMode;
  }
  get stopRequested(): boolean {
    return Atomics.load(this.words, W_STOP) !== StopMode.none;
  }

  setPeerConnected(on: boolean): void {
    Atomics.store(this.words, W_PEER_CONNECTED, on ? 1 : 0);
  }
  get peerConnected(): boolean {
    return Atomics.load(this.words, W_PEER_CONNECTED) === 1;
  }

  /** Record the first fatal error (later ones are consequences). */
  fail(message: string): void {
    if (Atomics.load(this.words, W_ERROR_LEN) !== 0) return;
    const bytes = new TextEncoder().encode(message).subarray(0, ERROR_BYTES);
    this.error.set(bytes);
    Atomics.store(this.words, W_ERROR_LEN, bytes.length);
  }
  get failure(): string | null {
    const n = Atomics.load(this.words, W_ERROR_LEN);
    return n === 0 ? null : new TextDecoder().decode(this.error.slice(0, n));
  }

  /**
   * Frames of the sending direction whose fate is final, counted mod 2^32: answered by the
   * peer (front TX), put on the peer's ring and pushed (back RX), or given up as lost. A flush
   * is over when this reaches the number of frames the main thread queued.
   */
  settle(n: number): void {
    Atomics.add(this.words, W_SETTLED, n);
  }
  get settled(): number {
    return Atomics.load(this.words, W_SETTLED) >>> 0;
  }

  add(counter: number, n: number): void {
    this.counters[counter]! += n;
  }
  get(counter: number): number {
    return this.counters[counter]!;
  }
}
