/**
 * One domain's connection to the simulated xenstore: the XenStore interface with C xenstored's
 * semantics (permissions, watches, optimistic transactions). Open one per domain per thread;
 * all of them, in every thread, share one store.
 */
import { PlatformError, type DomId, type Perm, type XenStore, type XsTransaction, type XsWatch } from "../types.ts";
import { retryTransaction } from "../xenstore-transaction.ts";
import { xsDirectory, xsGetPerms, xsMkdir, xsRead, xsRm, xsSetPerms, xsWrite } from "./xenstore-ops.ts";
import { Overlay } from "./xenstore-overlay.ts";
import { checkPath } from "./xenstore-path.ts";
import { SharedXenStore, type XenStoreState } from "./xenstore-state.ts";
import { WatchDispatcher, type WatchCallback } from "./xenstore-watches.ts";

export interface SimXenStoreOptions {
  /**
   * Where exceptions thrown by watch callbacks go. Default: reportError, which makes them
   * uncaught exceptions, as a throwing event listener's are; other watches still fire.
   */
  onWatchError?: (e: unknown) => void;
}

interface OpenTransaction {
  readonly handle: XsTransaction;
  readonly overlay: Overlay;
}

export const DEFAULT_TX_RETRIES = 16;

export class SimXenStore implements XenStore {
  readonly store: SharedXenStore;
  private readonly watches: WatchDispatcher;
  private readonly txs = new Map<number, OpenTransaction>();
  private nextTxId = 1;
  private closed = false;

  constructor(
    store: SharedXenStore | XenStoreState,
    readonly domid: DomId,
    opts: SimXenStoreOptions = {},
  ) {
    if (!Number.isInteger(domid) || domid < 0 || domid > 0x7fef) {
      throw new PlatformError("EINVAL", "xenstore.open", `not a domain id: ${String(domid)}`);
    }
    this.store = store instanceof SharedXenStore ? store : SharedXenStore.attach(store);
    this.watches = new WatchDispatcher(this.store, domid, opts.onWatchError ?? reportError);
  }

  async read(path: string, tx?: XsTransaction): Promise<string | null> {
    return this.op("xenstore.read", tx, (ov) => xsRead(ov, this.domid, path));
  }

  async write(path: string, value: string, tx?: XsTransaction): Promise<void> {
    this.op("xenstore.write", tx, (ov) => xsWrite(ov, this.domid, path, value));
  }

  async mkdir(path: string, tx?: XsTransaction): Promise<void> {
    this.op("xenstore.mkdir", tx, (ov) => xsMkdir(ov, this.domid, path));
  }

  async directory(path: string, tx?: XsTransaction): Promise<string[]> {
    return this.op("xenstore.directory", tx, (ov) => xsDirectory(ov, this.domid, path));
  }

  async rm(path: string, tx?: XsTransaction): Promise<void> {
    this.op("xenstore.rm", tx, (ov) => xsRm(ov, this.domid, path));
  }

  async getPerms(path: string, tx?: XsTransaction): Promise<Perm[]> {
    return this.op("xenstore.getPerms", tx, (ov) => xsGetPerms(ov, this.domid, path));
  }

  async setPerms(path: string, perms: Perm[], tx?: XsTransaction): Promise<void> {
    this.op("xenstore.setPerms", tx, (ov) => xsSetPerms(ov, this.domid, path, perms));
  }

  async watch(path: string, token: string, onEvent: WatchCallback): Promise<XsWatch> {
    const op = "xenstore.watch";
    this.checkOpen(op);
    checkPath(op, this.domid, path, true);
    if (typeof token !== "string" || token.includes("\0")) {
      throw new PlatformError("EINVAL", op, `domain ${this.domid}: the token for ${path} must be a string without NUL`);
    }
    if (typeof onEvent !== "function") throw new PlatformError("EINVAL", op, `domain ${this.domid}: no callback for ${path}`);
    return this.watches.add(path, token, onEvent);
  }

  /** Fire the watch events that are due now, synchronously; returns how many fired. */
  processWatchEvents(): number {
    return this.closed ? 0 : this.watches.processPending();
  }

  async transactionStart(): Promise<XsTransaction> {
    this.checkOpen("xenstore.transactionStart");
    const handle: XsTransaction = Object.freeze({ id: this.nextTxId++ });
    this.txs.set(handle.id, { handle, overlay: new Overlay(this.store.node) });
    return handle;
  }

  async transactionEnd(tx: XsTransaction, commit: boolean): Promise<void> {
    const op = "xenstore.transactionEnd";
    this.checkOpen(op);
    const t = this.openTx(op, tx);
    this.txs.delete(t.handle.id);
    if (commit) this.store.commit(op, this.domid, t.overlay);
  }

  async transaction<T>(fn: (tx: XsTransaction) => Promise<T>, maxRetries = DEFAULT_TX_RETRIES): Promise<T> {
    return retryTransaction(this, fn, maxRetries, (t) => this.txs.get(t.id)?.handle === t);
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.watches.close();
    this.txs.clear();
  }

  /** Run one operation: alone under the lock, or inside its transaction's overlay. */
  private op<T>(op: string, tx: XsTransaction | undefined, fn: (ov: Overlay) => T): T {
    this.checkOpen(op);
    if (tx === undefined) return this.store.run(op, this.domid, fn);
    const t = this.openTx(op, tx);
    return this.store.locked(op, () => {
      // A refused operation must leave the transaction as it was: run it on a layer of its own.
      const step = new Overlay((p) => t.overlay.get(p));
      const r = fn(step);
      t.overlay.absorb(step);
      return r;
    });
  }

  private openTx(op: string, tx: XsTransaction): OpenTransaction {
    const t = this.txs.get(tx?.id);
    if (t === undefined || t.handle !== tx) {
      throw new PlatformError("ENOENT", op, `domain ${this.domid}: no open transaction ${String(tx?.id)} on this connection`);
    }
    return t;
  }

  private checkOpen(op: string): void {
    if (this.closed) throw new PlatformError("ECLOSED", op, `domain ${this.domid}: this xenstore connection is closed`);
  }
}

