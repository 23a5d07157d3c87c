/**
 * One domain connection's watches, served from the shared change log.
 *
 * While the connection has watches, a loop waits (Atomics.waitAsync, which never keeps the
 * process alive) for the change sequence to move, reads the new records and fires the matching
 * callbacks on this thread. With no watches the loop ends. A connection that fell so far behind
 * that the ring overwrote records fires every watch once: spurious events are allowed in
 * xenstore, lost ones are not.
 */
import { PlatformError, type DomId, type XsWatch } from "../types.ts";
import type { LogCursor, LogRecord } from "./xenstore-log.ts";
import { isAtOrBelow } from "./xenstore-path.ts";
import { accessFor } from "./xenstore-perms.ts";
import type { SharedXenStore } from "./xenstore-state.ts";

const RETRY_MS = 100;

export type WatchCallback = (path: string, token: string) => void;

class Watch implements XsWatch {
  active = true;

  constructor(
    private readonly owner: WatchDispatcher,
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

export class WatchDispatcher {
  private readonly watches: Watch[] = [];
  private cursor: LogCursor = { seq: 0, pos: 0 };
  private queue: Pending[] = [];
  private flushScheduled = false;
  private looping = false;
  private closed = false;

  constructor(
    private readonly store: SharedXenStore,
    private readonly domid: DomId,
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
    // With no watches nothing was read: start from now rather than replay old changes.
    if (this.watches.length === 0) this.cursor = this.store.logCursor(op);
    const w = new Watch(this, path, token, callback, this.store.changeSeq);
    this.watches.push(w);
    // xenstored fires every new watch once, after the reply to the WATCH request.
    this.enqueue({ watch: w, path });
    this.startLoop();
    return w;
  }

  remove(w: Watch): void {
    if (!w.active) return;
    w.active = false;
    this.watches.splice(this.watches.indexOf(w), 1);
    if (this.watches.length === 0) this.store.wakeWatchers(); // let the loop see it is done
  }

  /** Deliver what is pending now, synchronously (for a thread that does not return to its event loop). */
  processPending(): number {
    if (this.watches.length > 0) this.collect();
    return this.flush();
  }

  close(): void {
    this.closed = true;
    for (const w of [...this.watches]) this.remove(w);
    this.queue = [];
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
      while (!this.closed && this.watches.length > 0) {
        const seq = this.store.changeSeq;
        if (seq === this.cursor.seq) {
          const wake = this.store.waitForChange(seq);
          if (wake !== null) await wake;
          continue;
        }
        try {
          this.collect();
        } catch (e) {
          // Only a lock timeout gets here; back off instead of spinning on the same failure.
          this.onError(e);
          await new Promise((r) => setTimeout(r, RETRY_MS).unref());
        }
        this.flush();
      }
    } finally {
      this.looping = false;
    }
  }

  private collect(): void {
    const batch = this.store.readLog("xenstore.watch", this.cursor);
    this.cursor = batch.next;
    if (batch.overrun) {
      for (const w of this.watches) this.enqueue({ watch: w, path: w.path });
      return;
    }
    for (const r of batch.records) {
      for (const w of this.watches) {
        const path = this.match(w, r);
        if (path !== null) this.enqueue({ watch: w, path });
      }
    }
  }

  /** The path to report to `w` for record `r`, or null if `w` does not see it. */
  private match(w: Watch, r: LogRecord): string | null {
    if (((r.seq - w.since) | 0) < 0) return null;
    if (r.path.startsWith("@") || w.path.startsWith("@")) return r.path === w.path ? r.path : null;
    if (isAtOrBelow(r.path, w.path)) return this.mayRead(r) ? r.path : null;
    // A removed ancestor takes the watched node with it; report the watched path.
    if (r.kind === "rm" && isAtOrBelow(w.path, r.path)) return w.path;
    return null;
  }

  private mayRead(r: LogRecord): boolean {
    return r.readers === null || r.readers.some((perms) => accessFor(this.domid, perms).read);
  }

  private enqueue(p: Pending): void {
    this.queue.push(p);
    if (this.flushScheduled) return;
    this.flushScheduled = true;
    setTimeout(() => this.flush(), 0);
  }

  private flush(): number {
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
