/**
 * The link's changes as an application hears them: `connected` (the first session is up),
 * `lost` (the peer left or a ring broke), `reconnecting` (the device waits for the peer to come
 * back), `reconnected` (a later session is up), `closed` (for good, with why). Callbacks
 * (`onLink`) and async iterators (`linkEvents()`) both; an iterator buffers at most
 * LINK_BUFFER events (the oldest go first: the latest state is what matters) and ends after
 * `closed`.
 */
import { NetError } from "./errors.ts";

export type LinkState = "connecting" | "up" | "reconnecting" | "closed";

export type LinkEvent =
  | { type: "connected"; at: number }
  | { type: "lost"; at: number; reason: string }
  | { type: "reconnecting"; at: number; reason: string }
  | { type: "reconnected"; at: number; reconnects: number }
  | { type: "closed"; at: number; reason: NetError };

export type LinkListener = (e: LinkEvent) => void;

/** Events an iterator nobody reads keeps, at most. */
const LINK_BUFFER = 64;

export class Link {
  private stateNow: LinkState = "connecting";
  private readonly listeners = new Set<LinkListener>();
  /** Listener exceptions (they never stop the device). */
  listenerErrors = 0;

  get state(): LinkState {
    return this.stateNow;
  }

  /** The closed event was sent: nothing follows it. */
  private done = false;

  /** Move to `state` and tell everyone; nothing after closed, and no second "up" event while up. */
  emit(state: LinkState, e: Exclude<LinkEvent, { type: "closed" }>): void {
    if (this.done || (state === "up" && this.stateNow === "up")) return;
    this.stateNow = state;
    this.dispatch(e);
  }

  /** The device closed for good: the last event. */
  emitClosed(reason: NetError): void {
    if (this.done) return;
    this.done = true;
    this.stateNow = "closed";
    this.dispatch({ type: "closed", at: Date.now(), reason });
    this.listeners.clear();
  }

  private dispatch(e: LinkEvent): void {
    for (const l of [...this.listeners]) {
      try {
        l(e);
      } catch {
        this.listenerErrors++;
      }
    }
  }

  on(cb: LinkListener): () => void {
    if (typeof cb !== "function") throw new NetError("BAD_ARGUMENT", "onLink takes a callback");
    if (this.done) return () => {};
    this.listeners.add(cb);
    return () => void this.listeners.delete(cb);
  }

  /** The changes from now on; ends after `closed`, or when `signal` aborts. */
  iterate(signal?: AbortSignal): AsyncIterableIterator<LinkEvent> {
    if (signal !== undefined && !(signal instanceof AbortSignal)) throw new NetError("BAD_ARGUMENT", "linkEvents: signal must be an AbortSignal");
    const queue: LinkEvent[] = [];
    let waiter: ((r: IteratorResult<LinkEvent>) => void) | null = null;
    let ended = this.done || signal?.aborted === true;
    const finish = () => {
      ended = true;
      off();
      signal?.removeEventListener("abort", finish);
      if (waiter !== null) {
        const w = waiter;
        waiter = null;
        w({ value: undefined, done: true });
      }
    };
    const off = ended
      ? () => {}
      : this.on((e) => {
          if (waiter !== null) {
            const w = waiter;
            waiter = null;
            w({ value: e, done: false });
          } else {
            queue.push(e);
            if (queue.length > LINK_BUFFER) queue.shift();
          }
          if (e.type === "closed") finish();
        });
    if (!ended) signal?.addEventListener("abort", finish, { once: true });
    const it: AsyncIterableIterator<LinkEvent> = {
      next: () => {
        const e = queue.shift();
        if (e !== undefined) return Promise.resolve({ value: e, done: false });
        if (ended) return Promise.resolve({ value: undefined, done: true });
        return new Promise((r) => (waiter = r));
      },
      return: () => {
        queue.length = 0;
        finish();
        return Promise.resolve({ value: undefined, done: true });
      },
      [Symbol.asyncIterator]: () => it,
    };
    return it;
  }
}
