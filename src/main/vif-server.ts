/**
 * Serving every vif the toolstack creates for this domain, as Linux netback's xenbus probe
 * does: one watch on `backend/vif/` of this domain; each vif that appears there is served by
 * a Netback of its own (waiting as long as it takes for its guest to come up, and serving the
 * guest again after it reboots); each that is removed is let go of. The application hears of
 * vifs coming and going through an async iterator of events (or `vifs`, a live map), each with
 * its Netback. One vif that fails never stops the others: its failure is an event, and it is
 * tried again while it exists.
 */
import type { Logger } from "pino";
import type { Platform, XsWatch } from "../platform/types.ts";
import { NetError } from "./errors.ts";
import { loggerFor } from "./logger.ts";
import { Netback, type NetbackOptions } from "./netback.ts";
import { checkBackOptions } from "./options.ts";
import { defaultPlatform } from "./platform-default.ts";
import { serialized } from "./xenbus/wait.ts";

export type VifEvent =
  /** A vif is served: its front end connected. */
  | { type: "added"; frontendDomid: number; devid: number; netback: Netback }
  /** A served vif went away (the toolstack removed it, or its Netback closed). */
  | { type: "removed"; frontendDomid: number; devid: number; reason: string }
  /** Serving a vif failed (a broken front end, say); it is tried again while it exists. */
  | { type: "failed"; frontendDomid: number; devid: number; error: unknown };

export type ServeAllOptions = Omit<NetbackOptions, "frontendDomid" | "devid"> & {
  /**
   * Which vifs to serve (default: all). A vif refused is left alone, as if it were not there:
   * another back end (or our own Netfront's, for a vif whose back end is this domain) has it.
   */
  accept?: (frontendDomid: number, devid: number) => boolean;
};

/** Events kept for an iterator that is not reading, at most (the oldest go first). */
const EVENT_BUFFER = 1024;
/** How long a failed vif waits before it is served again, at most. */
const RETRY_MAX_MS = 30_000;
/** A vif waits this long for its guest's front end, each try (setTimeout's bound). */
const HANDSHAKE_FOREVER_MS = 0x7fff_ffff;

interface Served {
  frontendDomid: number;
  devid: number;
  /** Ends a serve in progress (the vif was removed, or the server closes). */
  abort: AbortController;
  netback: Netback | null;
  failures: number;
}

export class VifServer implements AsyncIterable<VifEvent> {
  private readonly served = new Map<string, Served>();
  private readonly events: VifEvent[] = [];
  private waiters: ((r: IteratorResult<VifEvent>) => void)[] = [];
  private watch: XsWatch | null = null;
  private closing: Promise<void> | null = null;
  private readonly root: string;

  private constructor(
    private readonly platform: Platform,
    /** What each vif's Netback is given: the options less the server's own (signal, accept). */
    private readonly opts: Omit<ServeAllOptions, "signal" | "accept">,
    private readonly accept: ServeAllOptions["accept"],
    private readonly log: Logger,
    /** We opened the platform (none was given): it closes with the server. */
    private readonly ownsPlatform = false,
  ) {
    this.root = `/local/domain/${platform.domid}/backend/vif`;
  }

  /** Start serving every vif of this domain, now and to come. */
  static async start(opts: ServeAllOptions = {}): Promise<VifServer> {
    // The options every Netback will get, checked now (frontendDomid is each vif's).
    const { accept, signal, ...perVif } = opts;
    checkBackOptions({ ...perVif, signal, frontendDomid: 0 });
    if (accept !== undefined && typeof accept !== "function") throw new NetError("BAD_ARGUMENT", "accept must be a function (frontendDomid, devid) => boolean");
    if (signal?.aborted) throw new NetError("ABORTED", "serveAll was aborted before it started", { cause: signal.reason });
    const platform = opts.platform ?? (await defaultPlatform(0));
    // The signal is the server's, not each vif's: it closes the server (and every vif served).
    const server = new VifServer(platform, perVif, accept, loggerFor(opts.logger, { end: "vif-server", domid: platform.domid }), opts.platform === undefined);
    const rescan = serialized(() => server.rescan());
    try {
      server.watch = await platform.xenstore.watch(server.root, `vif-server#${platform.domid}`, rescan);
    } catch (e) {
      await server.close();
      throw e;
    }
    if (signal !== undefined) {
      const onAbort = () => void server.close();
      signal.addEventListener("abort", onAbort, { once: true });
      server.unlisten = () => signal.removeEventListener("abort", onAbort);
    }
    return server;
  }
  /** Stops listening to the caller's signal. */
  private unlisten = () => {};

  /** The vifs served now, by "frontendDomid/devid". */
  get vifs(): ReadonlyMap<string, Netback> {
    const m = new Map<string, Netback>();
    for (const [k, s] of this.served) if (s.netback !== null) m.set(k, s.netback);
    return m;
  }

  [Symbol.asyncIterator](): AsyncIterator<VifEvent> {
    return {
      next: () => {
        const e = this.events.shift();
        if (e !== undefined) return Promise.resolve({ value: e, done: false });
        if (this.closing !== null) return Promise.resolve({ value: undefined, done: true });
        return new Promise((r) => this.waiters.push(r));
      },
      return: () => Promise.resolve({ value: undefined, done: true }),
    };
  }

  /** `await using server = await Netback.serveAll(...)`: closed when the scope ends. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  /** Stop watching, and disconnect every vif served (each within its timeoutMs). */
  close(): Promise<void> {
    this.closing ??= (async () => {
      this.watch?.unwatch();
      this.watch = null;
      const all = [...this.served.values()];
      this.served.clear();
      for (const s of all) s.abort.abort(new NetError("DISCONNECTED", "the vif server closed"));
      await Promise.allSettled(all.map((s) => s.netback?.disconnect()));
      this.unlisten();
      if (this.ownsPlatform) this.platform.close();
      for (const w of this.waiters.splice(0)) w({ value: undefined, done: true });
    })();
    return this.closing;
  }

  private emit(e: VifEvent): void {
    const w = this.waiters.shift();
    if (w !== undefined) w({ value: e, done: false });
    else {
      // Nobody iterating: keep the latest events only (`vifs` always has the present).
      this.events.push(e);
      if (this.events.length > EVENT_BUFFER) this.events.shift();
    }
  }

  /** What the toolstack has now: start the new vifs, let go of the removed ones. */
  private async rescan(): Promise<void> {
    if (this.closing !== null) return;
    const xs = this.platform.xenstore;
    const present = new Set<string>();
    for (const fe of await list(xs, this.root)) {
      if (!/^\d+$/.test(fe)) continue;
      for (const dev of await list(xs, `${this.root}/${fe}`)) if (/^\d+$/.test(dev) && this.accepts(Number(fe), Number(dev))) present.add(`${fe}/${dev}`);
    }
    for (const [key, s] of this.served) {
      if (present.has(key)) continue;
      // Removed: a serve still waiting ends now, and a Netback serving it lets go.
      this.served.delete(key);
      s.abort.abort(new NetError("DISCONNECTED", "the toolstack removed the vif"));
      void s.netback?.disconnect();
    }
    for (const key of present) {
      if (this.served.has(key)) continue;
      const [fe, dev] = key.split("/").map(Number) as [number, number];
      const s: Served = { frontendDomid: fe, devid: dev, abort: new AbortController(), netback: null, failures: 0 };
      this.served.set(key, s);
      void this.serveOne(key, s);
    }
  }

  /** The application's filter; one that throws refuses the vif (and is logged), never stops the server. */
  private accepts(frontendDomid: number, devid: number): boolean {
    const accept = this.accept;
    if (accept === undefined) return true;
    try {
      return accept(frontendDomid, devid) === true;
    } catch (e) {
      this.log.warn({ err: e, frontendDomid, devid }, "the accept filter threw; not serving the vif");
      return false;
    }
  }

  /** Serve one vif until it is removed: again after each failure, with a growing pause. */
  private async serveOne(key: string, s: Served): Promise<void> {
    const { frontendDomid, devid } = s;
    while (this.served.get(key) === s && !s.abort.signal.aborted) {
      try {
        const netback = await Netback.serve(
          { ...this.opts, platform: this.platform, frontendDomid, devid, reconnect: this.opts.reconnect ?? true, signal: s.abort.signal },
          { handshakeMs: HANDSHAKE_FOREVER_MS },
        );
        if (this.served.get(key) !== s) {
          await netback.disconnect();
          return;
        }
        s.netback = netback;
        s.failures = 0;
        this.emit({ type: "added", frontendDomid, devid, netback });
        const reason = await netback.closed;
        s.netback = null;
        this.emit({ type: "removed", frontendDomid, devid, reason: reason.message });
        // Closed for good (the vif went offline or away): served again only if it is still there.
        if (this.served.get(key) === s) this.served.delete(key);
        return;
      } catch (e) {
        if (s.abort.signal.aborted || this.served.get(key) !== s) return;
        s.failures++;
        this.log.warn({ err: e, frontendDomid, devid, failures: s.failures }, "serving a vif failed; trying again");
        this.emit({ type: "failed", frontendDomid, devid, error: e });
        await Bun.sleep(Math.min(RETRY_MAX_MS, 250 * 2 ** Math.min(s.failures, 7)));
      }
    }
  }
}

async function list(xs: Platform["xenstore"], path: string): Promise<string[]> {
  try {
    return await xs.directory(path);
  } catch {
    return []; // not there (yet)
  }
}
