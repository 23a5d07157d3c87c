/**
 * A xenstore client over the wire protocol (xs-wire.ts), on any byte transport: xenstored's
 * unix socket or /dev/xen/xenbus (transports in xenstore-transport.ts), or an in-process fake.
 *
 * - Requests carry their own req_id and many may be in flight; replies are matched by req_id.
 * - Every request is bounded by a timeout (ETIMEDOUT); a reply that comes later is dropped.
 * - Watches: the client registers a unique wire token per watch (`<n>:<token>`), so one token
 *   may serve several watches; WATCH_EVENTs are dispatched by it, whatever their req_id.
 * - Errors: an ERROR reply becomes an ErrnoError (a PlatformError) with the errno name and
 *   `op` and path in the message. read() of a missing node gives null; rm() of one succeeds.
 * - close() (or the transport closing) rejects every pending request with ECLOSED and drops
 *   the watches; xenstored ends the connection's transactions and watches itself.
 */
import { PlatformError, type DomId, type Perm, type XenStore, type XsTransaction, type XsWatch } from "../types.ts";
import { retryTransaction } from "../xenstore-transaction.ts";
import {
  XS,
  XsDecoder,
  encodeRequest,
  errorFromReply,
  parsePerms,
  parseString,
  parseStrings,
  parseTransactionId,
  parseWatchEvent,
  xsTypeName,
  type XsMessage,
  type XsRequest,
} from "./xs-wire.ts";

/** A connection's bytes, both ways. */
export interface XsTransport {
  write(bytes: Uint8Array): void;
  /** Register the receiver (once, before the first request). */
  onData(cb: (chunk: Uint8Array) => void): void;
  /** Optional: called once when the other end goes away (or the transport fails). */
  onClose?(cb: (reason?: unknown) => void): void;
  close(): void;
}

export interface XenStoreClientOptions {
  /** Bound on every request, in ms (default 10 000). */
  timeoutMs?: number;
  /** Where exceptions thrown by watch callbacks go. Default: reportError (an uncaught exception). */
  onWatchError?: (e: unknown) => void;
}

export const DEFAULT_TIMEOUT_MS = 10_000;
export const DEFAULT_TX_RETRIES = 16;

interface Pending {
  readonly type: number;
  readonly op: string;
  readonly detail: string;
  readonly resolve: (m: XsMessage) => void;
  readonly reject: (e: unknown) => void;
  readonly timer: ReturnType<typeof setTimeout>;
}

interface WatchEntry {
  readonly path: string;
  readonly token: string;
  readonly wireToken: string;
  readonly onEvent: (path: string, token: string) => void;
}

export class XenStoreClient implements XenStore {
  private readonly decoder = new XsDecoder();
  private readonly pending = new Map<number, Pending>();
  private readonly watches = new Map<string, WatchEntry>();
  private readonly txs = new Set<number>();
  private readonly timeoutMs: number;
  private readonly onWatchError: (e: unknown) => void;
  private nextReqId = 1;
  private nextWatch = 1;
  private closedBy: PlatformError | null = null;
  /** Replies that matched no pending request (late after a timeout, or bogus). */
  droppedReplies = 0;
  /** Watch events whose token names no live watch (late after unwatch, or bogus). */
  droppedEvents = 0;

  constructor(
    private readonly transport: XsTransport,
    opts: XenStoreClientOptions = {},
  ) {
    const t = opts.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    if (!(t > 0)) throw new PlatformError("EINVAL", "xenstore.open", `timeoutMs must be positive, got ${t}`);
    this.timeoutMs = t;
    this.onWatchError = opts.onWatchError ?? reportError;
    transport.onData((chunk) => this.receive(chunk));
    transport.onClose?.((reason) =>
      this.shutdown(new PlatformError("ECLOSED", "xenstore", `the connection to xenstored closed${reason === undefined ? "" : `: ${String(reason)}`}`)),
    );
  }

  get closed(): boolean {
    return this.closedBy !== null;
  }

  /** Requests awaiting a reply. */
  get inFlight(): number {
    return this.pending.size;
  }

  async read(path: string, tx?: XsTransaction): Promise<string | null> {
    try {
      return parseString((await this.call("xenstore.read", { type: XS.READ, path }, tx, path)).payload);
    } catch (e) {
      if (e instanceof PlatformError && e.code === "ENOENT" && !this.closed) return null;
      throw e;
    }
  }

  async write(path: string, value: string, tx?: XsTransaction): Promise<void> {
    await this.call("xenstore.write", { type: XS.WRITE, path, value }, tx, path);
  }

  async mkdir(path: string, tx?: XsTransaction): Promise<void> {
    await this.call("xenstore.mkdir", { type: XS.MKDIR, path }, tx, path);
  }

  async directory(path: string, tx?: XsTransaction): Promise<string[]> {
    return parseStrings((await this.call("xenstore.directory", { type: XS.DIRECTORY, path }, tx, path)).payload);
  }

  async rm(path: string, tx?: XsTransaction): Promise<void> {
    try {
      await this.call("xenstore.rm", { type: XS.RM, path }, tx, path);
    } catch (e) {
      if (e instanceof PlatformError && e.code === "ENOENT" && !this.closed) return;
      throw e;
    }
  }

  async getPerms(path: string, tx?: XsTransaction): Promise<Perm[]> {
    const op = "xenstore.getPerms";
    return parsePerms(op, (await this.call(op, { type: XS.GET_PERMS, path }, tx, path)).payload);
  }

  async setPerms(path: string, perms: Perm[], tx?: XsTransaction): Promise<void> {
    await this.call("xenstore.setPerms", { type: XS.SET_PERMS, path, perms }, tx, path);
  }

  /** `/local/domain/<domid>` as xenstored names it. */
  async getDomainPath(domid: DomId): Promise<string> {
    return parseString((await this.call("xenstore.getDomainPath", { type: XS.GET_DOMAIN_PATH, domid }, undefined, `domain ${domid}`)).payload);
  }

  async watch(path: string, token: string, onEvent: (path: string, token: string) => void): Promise<XsWatch> {
    const op = "xenstore.watch";
    this.checkOpen(op);
    if (typeof onEvent !== "function") throw new PlatformError("EINVAL", op, `no callback for ${path}`);
    if (typeof token !== "string" || token.includes("\0")) throw new PlatformError("EINVAL", op, `the token for ${path} must be a string without NUL`);
    const entry: WatchEntry = { path, token, wireToken: `${this.nextWatch++}:${token}`, onEvent };
    // Registered before the request: the first event may arrive before the reply.
    this.watches.set(entry.wireToken, entry);
    try {
      await this.call(op, { type: XS.WATCH, path, token: entry.wireToken }, undefined, path);
    } catch (e) {
      this.watches.delete(entry.wireToken);
      throw e;
    }
    return {
      path,
      token,
      unwatch: () => {
        if (!this.watches.delete(entry.wireToken) || this.closed) return;
        // Fire and forget: no more events reach the callback from now on either way.
        this.call("xenstore.unwatch", { type: XS.UNWATCH, path, token: entry.wireToken }, undefined, path).catch(() => {});
      },
    };
  }

  async transactionStart(): Promise<XsTransaction> {
    const op = "xenstore.transactionStart";
    const id = parseTransactionId(op, (await this.call(op, { type: XS.TRANSACTION_START }, undefined, "")).payload);
    this.txs.add(id);
    return Object.freeze({ id });
  }

  async transactionEnd(tx: XsTransaction, commit: boolean): Promise<void> {
    const op = "xenstore.transactionEnd";
    this.checkOpen(op);
    this.checkTx(op, tx);
    // xenstored forgets the transaction whatever the outcome (EAGAIN included).
    this.txs.delete(tx.id);
    await this.call(op, { type: XS.TRANSACTION_END, commit }, tx, `transaction ${tx.id} (${commit ? "commit" : "abort"})`);
  }

  async transaction<T>(fn: (tx: XsTransaction) => Promise<T>, maxRetries = DEFAULT_TX_RETRIES): Promise<T> {
    return retryTransaction(this, fn, maxRetries, (t) => this.txs.has(t.id) && !this.closed);
  }

  close(): void {
    if (this.closed) return;
    this.shutdown(new PlatformError("ECLOSED", "xenstore", "this xenstore connection is closed"));
  }

  // -------------------------------------------------------------------------------------

  private shutdown(reason: PlatformError): void {
    if (this.closedBy !== null) return;
    this.closedBy = reason;
    const pending = [...this.pending.values()];
    this.pending.clear();
    this.watches.clear();
    this.txs.clear();
    for (const p of pending) {
      clearTimeout(p.timer);
      p.reject(new PlatformError("ECLOSED", p.op, `${p.detail}: ${reason.message}`));
    }
    try {
      this.transport.close();
    } catch {
      // Closing a transport that already failed may throw; the connection is gone either way.
    }
  }

  private checkOpen(op: string): void {
    if (this.closedBy !== null) throw new PlatformError("ECLOSED", op, this.closedBy.message);
  }

  private checkTx(op: string, tx: XsTransaction): void {
    if (typeof tx?.id !== "number" || !this.txs.has(tx.id)) {
      throw new PlatformError("ENOENT", op, `no open transaction ${String(tx?.id)} on this connection`);
    }
  }

  private allocReqId(): number {
    // u32, never 0 (xenstored's own events use 0), skipping ids still in flight.
    for (;;) {
      const id = this.nextReqId;
      this.nextReqId = id >= 0xffff_ffff ? 1 : id + 1;
      if (!this.pending.has(id)) return id;
    }
  }

  /** Send one request; resolves with the reply, rejects with its error. */
  private call(op: string, req: XsRequest, tx: XsTransaction | undefined, detail: string): Promise<XsMessage> {
    return new Promise<XsMessage>((resolve, reject) => {
      this.checkOpen(op);
      if (tx !== undefined && req.type !== XS.TRANSACTION_END) this.checkTx(op, tx);
      const reqId = this.allocReqId();
      const bytes = encodeRequest(req, reqId, tx?.id ?? 0, op);
      const timer = setTimeout(() => {
        if (this.pending.get(reqId)?.timer !== timer) return;
        this.pending.delete(reqId);
        reject(new PlatformError("ETIMEDOUT", op, `${detail}: no reply from xenstored within ${this.timeoutMs} ms`));
      }, this.timeoutMs);
      this.pending.set(reqId, { type: req.type, op, detail, resolve, reject, timer });
      try {
        this.transport.write(bytes);
      } catch (e) {
        clearTimeout(timer);
        this.pending.delete(reqId);
        reject(e instanceof PlatformError ? e : new PlatformError("ECLOSED", op, `${detail}: sending failed: ${String(e)}`));
      }
    });
  }

  private receive(chunk: Uint8Array): void {
    if (this.closed) return;
    let messages: XsMessage[];
    try {
      messages = this.decoder.push(chunk);
    } catch (e) {
      // The stream cannot be resynchronised: fail everything.
      this.shutdown(e instanceof PlatformError ? e : new PlatformError("EINVAL", "xenstore.recv", String(e)));
      return;
    }
    for (const m of messages) {
      if (this.closed) return;
      if (m.type === XS.WATCH_EVENT) this.dispatchEvent(m);
      else this.settle(m);
    }
  }

  private settle(m: XsMessage): void {
    const p = this.pending.get(m.reqId);
    if (p === undefined) {
      this.droppedReplies++;
      return;
    }
    this.pending.delete(m.reqId);
    clearTimeout(p.timer);
    if (m.type === XS.ERROR) p.reject(errorFromReply(p.op, p.detail, m.payload));
    else if (m.type !== p.type) {
      p.reject(new PlatformError("EINVAL", p.op, `${p.detail}: ${xsTypeName(m.type)} reply to a ${xsTypeName(p.type)} request`));
    } else p.resolve(m);
  }

  private dispatchEvent(m: XsMessage): void {
    let ev: { path: string; token: string };
    try {
      ev = parseWatchEvent(m.payload);
    } catch {
      this.droppedEvents++;
      return;
    }
    const w = this.watches.get(ev.token);
    if (w === undefined) {
      this.droppedEvents++;
      return;
    }
    try {
      w.onEvent(ev.path, w.token);
    } catch (e) {
      this.onWatchError(e);
    }
  }
}

