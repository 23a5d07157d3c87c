/**
 * The simulated xenstore's shared state: one tree, one change log, one lock, all in
 * SharedArrayBuffers, so every thread (and every simulated domain) sees the same store.
 *
 * Each thread keeps its own copy of the tree (a Map) and brings it up to date under the lock
 * from a shared log of changed nodes (xenstore-replica.ts): a write costs the nodes it changed,
 * not the size of the tree. The capacity (`bytes`) bounds what the tree takes: a write that
 * would not fit fails with ENOSPC and changes nothing. Watches are served from a second log,
 * of changed paths (xenstore-log.ts).
 */
import { PlatformError, type DomId } from "../types.ts";
import { SharedLock } from "./xenstore-lock.ts";
import { ChangeLog, MIN_LOG_BYTES, type LogBatch, type LogCursor } from "./xenstore-log.ts";
import { xsMkdir, xsRm, xsSetPerms } from "./xenstore-ops.ts";
import { ABSENT, Overlay, type NodeLookup, type XsNode } from "./xenstore-overlay.ts";
import { REPLICA_WORDS, TreeReplica } from "./xenstore-replica.ts";
import { WatchHub } from "./xenstore-watches.ts";

/** Postable: send it to a worker and `SharedXenStore.attach` it there; nothing is copied. */
export interface XenStoreState {
  readonly kind: "sim-xenstore";
  /** Int32 words, see W. */
  readonly control: SharedArrayBuffer;
  /** The tree's latest snapshot. */
  readonly data: SharedArrayBuffer;
  /** The change log ring (paths, for watches). */
  readonly log: SharedArrayBuffer;
  /** The mutation log ring (changed nodes, for each thread's copy of the tree). */
  readonly mutations: SharedArrayBuffer;
}

export interface XenStoreStateOptions {
  /** Bytes the tree may take (default 4 MiB). */
  bytes?: number;
  /** Bytes for the change log ring, a power of two >= 16 KiB (default 1 MiB). */
  logBytes?: number;
  /** Bytes for the mutation log ring, a power of two >= 64 KiB (default 16 MiB). */
  mutationBytes?: number;
}

export const DEFAULT_XENSTORE_BYTES = 4 << 20;
export const DEFAULT_LOG_BYTES = 1 << 20;
export const DEFAULT_MUTATION_BYTES = 16 << 20;

const W = {
  lock: 0,
  /** Bumped by every commit that changes the tree; stamps the nodes it changed. */
  gen: 1,
  logSeq: 3,
  logHead: 4,
  /** Fault injection: this many coming transaction commits fail with EAGAIN. */
  failCommits: 5,
  /** ... only those of this domain (-1: any). */
  failDomid: 6,
  /** The replica's words start here. */
  replica: 8,
} as const;
const CONTROL_WORDS = W.replica + REPLICA_WORDS;

function checkSize(name: string, v: unknown, min: number, pow2: boolean): number {
  const ok = typeof v === "number" && Number.isInteger(v) && v >= min && v <= 1 << 30 && (!pow2 || (v & (v - 1)) === 0);
  if (!ok) throw new PlatformError("EINVAL", "xenstore.create", `${name} must be an integer >= ${min}${pow2 ? ", a power of two" : ""}, got ${String(v)}`);
  return v as number;
}

export function createXenStoreState(opts: XenStoreStateOptions = {}): XenStoreState {
  const bytes = checkSize("bytes", opts.bytes ?? DEFAULT_XENSTORE_BYTES, 1024, false);
  const logBytes = checkSize("logBytes", opts.logBytes ?? DEFAULT_LOG_BYTES, MIN_LOG_BYTES, true);
  const mutationBytes = checkSize("mutationBytes", opts.mutationBytes ?? DEFAULT_MUTATION_BYTES, 65536, true);
  const state: XenStoreState = {
    kind: "sim-xenstore",
    control: new SharedArrayBuffer(CONTROL_WORDS * 4),
    data: new SharedArrayBuffer(bytes + 8),
    log: new SharedArrayBuffer(logBytes),
    mutations: new SharedArrayBuffer(mutationBytes),
  };
  // What a toolstack's xenstored starts with: only dom0 may read or create at the top.
  const dom0Only = [{ domid: 0, access: "n" as const }];
  const tree = new Map<string, XsNode>([
    ["/", { value: "", perms: dom0Only, gen: 1, children: ["local"] }],
    ["/local", { value: "", perms: dom0Only, gen: 1, children: ["domain"] }],
    ["/local/domain", { value: "", perms: dom0Only, gen: 1, children: [] }],
  ]);
  const words = new Int32Array(state.control);
  words[W.gen] = 1;
  words[W.failDomid] = -1;
  new SharedXenStore(state).replica.initialise(tree);
  return state;
}

const attached = new WeakMap<SharedArrayBuffer, SharedXenStore>();

/** One thread's handle on the shared store. Domains in the same thread can share one. */
export class SharedXenStore {
  readonly log: ChangeLog;
  readonly replica: TreeReplica;
  /** This thread's watches, on every domain connection to this store. */
  readonly watches: WatchHub;
  private readonly words: Int32Array;
  private readonly lock: SharedLock;

  constructor(readonly state: XenStoreState) {
    const s = state as Partial<XenStoreState> | null;
    if (
      s?.kind !== "sim-xenstore" ||
      !(s.control instanceof SharedArrayBuffer) ||
      !(s.data instanceof SharedArrayBuffer) ||
      !(s.log instanceof SharedArrayBuffer) ||
      !(s.mutations instanceof SharedArrayBuffer)
    ) {
      throw new PlatformError("EINVAL", "xenstore.attach", "not a simulated xenstore state (use createXenStoreState)");
    }
    this.words = new Int32Array(state.control);
    this.lock = new SharedLock(this.words, W.lock);
    this.log = new ChangeLog(this.words, W.logSeq, W.logHead, new Uint8Array(state.log));
    this.replica = new TreeReplica(this.words, W.replica, new Uint8Array(state.data), new Uint8Array(state.mutations), state.data.byteLength - 8);
    this.watches = new WatchHub(this);
  }

  /** The thread's shared handle for `state` (one decoded copy of the tree per thread). */
  static attach(state: XenStoreState): SharedXenStore {
    let s = attached.get(state.control);
    if (s === undefined) {
      s = new SharedXenStore(state);
      attached.set(state.control, s);
    }
    return s;
  }

  /** The current node at `path`: valid only inside `locked`. */
  readonly node: NodeLookup = (path) => this.replica.tree.get(path);

  /** Run `fn` holding the lock, with this thread's copy of the tree up to date. */
  locked<T>(op: string, fn: () => T): T {
    return this.lock.with(op, () => {
      this.replica.refresh(op);
      return fn();
    });
  }

  /** A plain (non-transaction) operation: runs on an overlay and is applied in one lock hold. */
  run<T>(op: string, domid: DomId, fn: (ov: Overlay) => T): T {
    const ov = new Overlay(this.node);
    const result = this.locked(op, () => {
      const r = fn(ov);
      this.apply(op, domid, ov);
      return r;
    });
    if (ov.changes.length > 0) this.wakeWatchers();
    return result;
  }

  /**
   * Commit a transaction: EAGAIN if any node it accessed has changed since it first did (or
   * an injected failure is pending), else apply all its writes as one generation.
   */
  commit(op: string, domid: DomId, ov: Overlay): void {
    this.locked(op, () => {
      if (this.takeInjectedFailure(domid)) {
        throw new PlatformError("EAGAIN", op, `domain ${domid}: transaction conflict (injected by failNextCommits)`);
      }
      for (const [path, gen] of ov.accessed) {
        if ((this.replica.tree.get(path)?.gen ?? ABSENT) !== gen) {
          throw new PlatformError("EAGAIN", op, `domain ${domid}: transaction conflict: ${path} changed since the transaction read it`);
        }
      }
      this.apply(op, domid, ov);
    });
    if (ov.changes.length > 0) this.wakeWatchers();
  }

  /** Make the next `n` transaction commits (of `domid` only, if given) fail with EAGAIN. */
  failNextCommits(n: number, opts: { domid?: DomId } = {}): void {
    checkSize("n", n, 0, false);
    this.lock.with("xenstore.failNextCommits", () => {
      Atomics.store(this.words, W.failDomid, opts.domid ?? -1);
      Atomics.store(this.words, W.failCommits, n);
    });
  }

  /** As the toolstack does for a new domain: `/local/domain/<id>`, owned by it, private. */
  introduceDomain(domid: DomId): string {
    const op = "xenstore.introduceDomain";
    const path = `/local/domain/${checkDomid(op, domid)}`;
    this.run(op, 0, (ov) => {
      xsMkdir(ov, 0, path);
      xsSetPerms(ov, 0, path, [{ domid, access: "n" }]);
      ov.changes.push({ kind: "write", path: "@introduceDomain", readers: null });
    });
    return path;
  }

  /** As the toolstack does when a domain is gone: its home is removed. */
  releaseDomain(domid: DomId): void {
    const op = "xenstore.releaseDomain";
    const path = `/local/domain/${checkDomid(op, domid)}`;
    this.run(op, 0, (ov) => {
      xsRm(ov, 0, path);
      ov.changes.push({ kind: "write", path: "@releaseDomain", readers: null });
    });
  }

  /** Every node's value, for tests and debugging. */
  dump(): Map<string, string> {
    return this.locked("xenstore.dump", () => new Map([...this.replica.tree].map(([p, n]) => [p, n.value])));
  }

  /** Count of change records so far; watchers wait for it to move. */
  get changeSeq(): number {
    return this.log.seq;
  }

  /** Resolves once the change sequence is no longer `seq` (or on a wakeWatchers). */
  waitForChange(seq: number): Promise<unknown> | null {
    const r = Atomics.waitAsync(this.words, W.logSeq, seq | 0);
    return r.async ? r.value : null;
  }

  /** Wake every thread waiting in waitForChange (they re-check; a spurious wake-up is harmless). */
  wakeWatchers(): void {
    Atomics.notify(this.words, W.logSeq);
  }

  logCursor(op: string): LogCursor {
    return this.lock.with(op, () => this.log.cursor());
  }

  readLog(op: string, from: LogCursor): LogBatch {
    return this.lock.with(op, () => this.log.readSince(from));
  }

  private apply(op: string, domid: DomId, ov: Overlay): void {
    if (ov.writes.size > 0) {
      const gen = (Atomics.load(this.words, W.gen) + 1) | 0;
      this.replica.apply(op, domid, ov.writes, gen);
      Atomics.store(this.words, W.gen, gen);
    }
    for (const c of ov.changes) this.log.append(c);
  }

  private takeInjectedFailure(domid: DomId): boolean {
    const n = Atomics.load(this.words, W.failCommits);
    const who = Atomics.load(this.words, W.failDomid);
    if (n <= 0 || (who !== -1 && who !== domid)) return false;
    Atomics.store(this.words, W.failCommits, n - 1);
    return true;
  }
}

function checkDomid(op: string, domid: unknown): DomId {
  if (typeof domid !== "number" || !Number.isInteger(domid) || domid < 0 || domid > 0x7fef) {
    throw new PlatformError("EINVAL", op, `not a domain id: ${String(domid)}`);
  }
  return domid;
}
