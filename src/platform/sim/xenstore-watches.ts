/**
 * Watches, served from the shared change log: one hub per store and thread, one dispatcher
 * per domain connection.
 *
 * The hub holds every watch of every connection on this thread, indexed by path. While there
 * is one, a loop waits (Atomics.waitAsync, which never keeps the process alive) for the change
 * sequence to move, reads the new records once, and hands each to the watches at its path and
 * at its ancestors (a changed node fires the watches on it and above it; a removed one also
 * those below it): a change costs the depth of its path, not the number of watches, and wakes
 * this thread once, not once per connection. A hub that fell so far behind that the ring
 * overwrote records fires every watch once: spurious events are allowed in xenstore, lost
 * ones are not.
 *
 * A dispatcher queues its connection's events and fires them on this thread, in order.
 */
import { PlatformError, type DomId, type XsWatch } from "../types.ts";
import type { LogCursor, LogRecord } from "./xenstore-log.ts";
import { isAtOrBelow, parentOf } from "./xenstore-path.ts";
import { accessFor } from "./xenstore-perms.ts";
import type { SharedXenStore } from "./xenstore-state.ts";

const RETRY_MS = 100;

export type WatchCallback = (path: string, token: string) => void;

class Watch implements XsWatch {
  active = true;

  constructor(
    readonly owner: WatchDispatcher,
    readonly path: string,
    readonly token: string,
    readonly callback: WatchCallback,
    /** First change-log sequence number this watch may see. */
    readonly since: number,
  ) {}

  unwatch(): void {
    this.owner.remove(this);
  }
}

interface Pending {
  watch: Watch;
  path: string;
}

export class WatchHub {
  private readonly byPath = new Map<string, Set<Watch>>();
  private count = 0;
  private cursor: LogCursor = { seq: 0, pos: 0 };
  private looping = false;
  /** Dispatchers that got events in the current collect. */
  private readonly dirty = new Set<WatchDispatcher>();

  constructor(private readonly store: SharedXenStore) {}

  add(w: Watch): void {
    // With no watches nothing was read: start from now rather than replay old changes.
    if (this.count === 0) this.cursor = this.store.logCursor("xenstore.watch");
    let set = this.byPath.get(w.path);
    if (set === undefined) this.byPath.set(w.path, (set = new Set()));
    set.add(w);
    this.count++;
    this.startLoop();
  }

  remove(w: Watch): void {
    const set = this.byPath.get(w.path);
    if (set === undefined || !set.delete(w)) return;
    if (set.size === 0) this.byPath.delete(w.path);
    this.count--;
    if (this.count === 0) this.store.wakeWatchers(); // let the loop see it is done
  }

  /** Read what the log holds since we last looked and queue it on the dispatchers; returns them. */
  collect(): Set<WatchDispatcher> {
    this.dirty.clear();
    if (this.count === 0) return this.dirty;
    const batch = this.store.readLog("xenstore.watch", this.cursor);
    this.cursor = batch.next;
    if (batch.overrun) {
      for (const set of this.byPath.values()) for (const w of set) this.fire(w, w.path);
      return this.dirty;
    }
    for (const r of batch.records) this.match(r);
    return this.dirty;
  }

  private match(r: LogRecord): void {
    if (r.path.startsWith("@")) {
      for (const w of this.byPath.get(r.path) ?? []) if (this.sees(w, r)) this.fire(w, r.path);
      return;
    }
    // The watches on the changed node and on each of its ancestors.
    for (let p = r.path; ; p = parentOf(p)) {
      for (const w of this.byPath.get(p) ?? []) if (this.sees(w, r) && this.mayRead(w, r)) this.fire(w, r.path);
      if (p === "/") break;
    }
    // A removed ancestor takes the watched node with it; report the watched path.
    if (r.kind === "rm") {
      for (const [path, set] of this.byPath) {
        if (path === r.path || path.startsWith("@") || !isAtOrBelow(path, r.path)) continue;
        for (const w of set) if (this.sees(w, r)) this.fire(w, path);
      }
    }
  }

  private sees(w: Watch, r: LogRecord): boolean {
    return w.active && ((r.seq - w.since) | 0) >= 0;
  }

  private mayRead(w: Watch, r: LogRecord): boolean {
    return r.readers === null || r.readers.some((perms) => accessFor(w.owner.domid, perms).read);
  }

  private fire(w: Watch, path: string): void {
    w.owner.enqueue({ watch: w, path });
    this.dirty.add(w.owner);
  }

  private startLoop(): void {
    if (this.looping) return;
    this.looping = true;
    void this.loop();
  }

  private async loop(): Promise<void> {
    // The flag drops in the same step as the exit check, so a watch added right after finds
    // no loop running and starts one.
    try {
      while (this.count > 0) {
        const seq = this.store.changeSeq;
        if (seq === this.cursor.seq) {
          const wake = this.store.waitForChange(seq);
          if (wake !== null) await wake;
          continue;
        }
        let dirty: Set<WatchDispatcher>;
        try {
          dirty = this.collect();
        } catch (e) {
          // Only a lock timeout gets here; back off instead of spinning on the same failure.
          const owners = new Set<WatchDispatcher>();
          for (const set of this.byPath.values()) for (const w of set) owners.add(w.owner);
          for (const o of owners) o.reportError(e);
          await new Promise((r) => setTimeout(r, RETRY_MS).unref());
          continue;
        }
        for (const d of [...dirty]) d.flush();
      }
    } finally {
      this.looping = false;
    }
  }
}

/** One domain connection's watches: the EEXIST check, its queue of events, their delivery. */
export class WatchDispatcher {
  private readonly watches: Watch[] = [];
  private queue: Pending[] = [];
  private flushScheduled = false;
  private closed = false;

  constructor(
    private readonly store: SharedXenStore,
    readonly domid: DomId,
    private readonly onError: (e: unknown) => void,
  ) {}

  get size(): number {
    return this.watches.length;
  }

  add(path: string, token: string, callback: WatchCallback): XsWatch {
    const op = "xenstore.watch";
    if (this.watches.some((w) => w.path === path && w.token === token)) {
      throw new PlatformError("EEXIST", op, `domain ${this.domid} already watches ${path} with token ${JSON.stringify(token)}`);
    }
    const hub = this.store.watches;
    const w = new Watch(this, path, token, callback, this.store.changeSeq);
    this.watches.push(w);
    hub.add(w);
    // xenstored fires every new watch once, after the reply to the WATCH request.
    this.enqueue({ watch: w, path });
    return w;
  }

  remove(w: Watch): void {
    if (!w.active) return;
    w.active = false;
    this.watches.splice(this.watches.indexOf(w), 1);
    this.store.watches.remove(w);
  }

  /** Deliver what is pending now, synchronously (for a thread that does not return to its event loop). */
  processPending(): number {
    if (this.watches.length > 0) this.store.watches.collect();
    return this.flush();
  }

  close(): void {
    this.closed = true;
    for (const w of [...this.watches]) this.remove(w);
    this.queue = [];
  }

  reportError(e: unknown): void {
    this.onError(e);
  }

  enqueue(p: Pending): void {
    if (this.closed) return;
    this.queue.push(p);
    if (this.flushScheduled) return;
    this.flushScheduled = true;
    setTimeout(() => this.flush(), 0);
  }

  flush(): number {
    this.flushScheduled = false;
    const q = this.queue;
    this.queue = [];
    let fired = 0;
    for (const { watch, path } of q) {
      if (!watch.active) continue;
      fired++;
      try {
        watch.callback(path, watch.token);
      } catch (e) {
        this.onError(e);
      }
    }
    return fired;
  }
}
