/**
 * Reading and waiting on xenstore for the handshake, plus the close sequence both ends share.
 *
 * Every wait registers one watch, re-reads on every event (an event carries no news, only
 * "look again"; spurious ones are normal) and ends on the first of: the condition holds, the
 * timeout, the AbortSignal, an error. The watch is gone when the promise settles, whichever
 * way it settles. No polling.
 */
import { PlatformError, type XenStore, type XsTransaction, type XsWatch } from "../../platform/types.ts";
import { parseMac, parseUint, parseXenbusState, XenbusState } from "../../protocol/xenbus.ts";
import { asHandshakeError, HandshakeError } from "./errors.ts";

export interface WaitOptions {
  /** Upper bound for the whole call, in ms (default DEFAULT_TIMEOUT_MS). */
  timeoutMs?: number;
  signal?: AbortSignal;
}

export const DEFAULT_TIMEOUT_MS = 10_000;
/** setTimeout's limit; a longer delay would fire at once. */
const MAX_TIMEOUT_MS = 0x7fffffff;

/** One time budget shared by the consecutive waits of a handshake step. */
export class Deadline {
  private readonly end: number;
  readonly signal: AbortSignal | undefined;

  constructor(opts: WaitOptions = {}) {
    const t = opts.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    if (typeof t !== "number" || !(t >= 0 && t <= MAX_TIMEOUT_MS)) {
      throw new RangeError(`timeoutMs must be a number of ms in 0..${MAX_TIMEOUT_MS}, got ${String(t)}`);
    }
    this.end = performance.now() + t;
    this.signal = opts.signal;
  }

  remaining(): number {
    // Clamped: with the longest budget, end − now can round up past it (2^31 seen in the rig,
    // which the next step's Deadline refused with a RangeError).
    return Math.min(MAX_TIMEOUT_MS, Math.max(0, Math.ceil(this.end - performance.now())));
  }

  /** Options for the next wait: what is left of the budget, the same signal. */
  opts(): WaitOptions {
    return this.signal === undefined ? { timeoutMs: this.remaining() } : { timeoutMs: this.remaining(), signal: this.signal };
  }

  /** Throw ABORTED now if the signal already fired (before starting a step that does not wait). */
  checkAborted(path: string): void {
    if (this.signal?.aborted) throw aborted(path, this.signal);
  }
}

function aborted(path: string, signal: AbortSignal): HandshakeError {
  return new HandshakeError("ABORTED", path, null, "the wait was aborted", { cause: signal.reason });
}

/** A check's verdict: `{ value }` when the wait is over, null to keep waiting. */
export type Found<T> = { value: T } | null;

let nextToken = 0;

/** A fresh watch token: a connection may not watch the same path twice with one token. */
export function watchToken(kind: string): string {
  return `xenbus-${kind}/${++nextToken}`;
}

/**
 * Run `fn` once per trigger, never two at once: triggers that arrive while it runs collapse
 * into one more run. Watch events are "look again" hints, so coalescing them loses nothing,
 * and serial reads cannot deliver states out of order.
 */
export function serialized(fn: () => Promise<void>): () => void {
  let running = false;
  let again = false;
  const run = async () => {
    if (running) {
      again = true;
      return;
    }
    running = true;
    try {
      do {
        again = false;
        await fn();
      } while (again);
    } finally {
      running = false;
    }
  };
  return () => void run();
}

/**
 * Watch `watchPath` and run `check` after every event (serialised: one check at a time, one more
 * if events arrived meanwhile) until it returns `{ value }`. The watch's first event, which
 * xenstore sends on registration, gives the initial check. `what` describes the wait for the
 * TIMEOUT message.
 */
export async function waitUntil<T>(xs: XenStore, watchPath: string, check: () => Promise<Found<T>>, opts: WaitOptions, what: string): Promise<T> {
  const deadline = new Deadline(opts);
  const { signal } = deadline;
  if (signal?.aborted) throw aborted(watchPath, signal);
  const timeoutMs = deadline.remaining();
  return await new Promise<T>((resolve, reject) => {
    let settled = false;
    let watch: XsWatch | null = null;
    const settle = (fn: () => void) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      signal?.removeEventListener("abort", onAbort);
      watch?.unwatch();
      watch = null;
      fn();
    };
    const onAbort = () => settle(() => reject(aborted(watchPath, signal as AbortSignal)));
    // Deliberately ref'd: a pending handshake keeps the process alive until it ends one way or the other.
    const timer = setTimeout(
      () => settle(() => reject(new HandshakeError("TIMEOUT", watchPath, null, `no ${what} within ${timeoutMs} ms`))),
      timeoutMs,
    );
    signal?.addEventListener("abort", onAbort, { once: true });

    const evaluate = serialized(async () => {
      if (settled) return;
      try {
        const r = await check();
        if (r !== null) settle(() => resolve(r.value));
      } catch (e) {
        settle(() => reject(asHandshakeError(e, watchPath)));
      }
    });

    const token = watchToken("wait");
    xs.watch(watchPath, token, evaluate).then(
      (w) => {
        if (settled) w.unwatch(); // timed out or aborted while registering
        else watch = w;
      },
      (e: unknown) => settle(() => reject(asHandshakeError(e, watchPath))),
    );
  });
}

/** Wait until the node at `path` (null = missing) satisfies `accept`; resolves with that value. */
export function waitForValue(xs: XenStore, path: string, accept: (v: string | null) => boolean, opts: WaitOptions = {}): Promise<string | null> {
  return waitUntil(
    xs,
    path,
    async () => {
      const v = await read(xs, path);
      return accept(v) ? { value: v } : null;
    },
    opts,
    "acceptable value",
  );
}

/**
 * Read a `state` node; missing reads as Unknown, and so does EACCES, as in Linux's
 * xenbus_read_driver_state: once the toolstack removes the peer's directory, the node sits under
 * a parent we may not read, and xenstored answers EACCES rather than reveal whether it exists.
 * A value that is not a state fails at once with BAD_STATE: a peer that writes garbage there is
 * broken, and waiting would only turn that into a TIMEOUT that hides the cause.
 */
export async function readState(xs: XenStore, statePath: string): Promise<XenbusState> {
  let v: string | null;
  try {
    v = await xs.read(statePath);
  } catch (e) {
    if (e instanceof PlatformError && e.code === "EACCES") return XenbusState.Unknown;
    throw asHandshakeError(e, statePath);
  }
  const s = parseXenbusState(v, statePath);
  if (typeof s !== "number") throw HandshakeError.fromProtocol(s, statePath, v);
  return s;
}

/** Wait until the state at `statePath` satisfies `accept` (missing = Unknown); BAD_STATE as readState. */
export function waitForState(xs: XenStore, statePath: string, accept: (s: XenbusState) => boolean, opts: WaitOptions = {}): Promise<XenbusState> {
  return waitUntil(
    xs,
    statePath,
    async () => {
      const s = await readState(xs, statePath);
      return accept(s) ? { value: s } : null;
    },
    opts,
    "acceptable state",
  );
}

/**
 * Switch our `<dir>/state`, as Linux's xenbus_switch_state does: in a transaction, and only if
 * the node still exists. Writing it blindly after the toolstack removed the device would
 * re-create the directory. Returns false (nothing written) when it is gone.
 */
export async function setState(xs: XenStore, dir: string, state: XenbusState): Promise<boolean> {
  const path = `${dir}/state`;
  try {
    return await xs.transaction(async (tx) => {
      if ((await xs.read(path, tx)) === null) return false;
      await xs.write(path, String(state), tx);
      return true;
    });
  } catch (e) {
    throw asHandshakeError(e, path);
  }
}

/** setState that treats a vanished directory as an error (for steps that must not go unnoticed). */
export async function switchState(xs: XenStore, dir: string, state: XenbusState): Promise<void> {
  if (!(await setState(xs, dir, state))) {
    throw new HandshakeError("GONE", `${dir}/state`, null, "the device directory is gone (the toolstack removed the vif)");
  }
}

// ---- closing ---------------------------------------------------------------------------------

export interface CloseResult {
  /** The peer reached the state that ends the close before the deadline. */
  acknowledged: boolean;
  /** The peer's state when we stopped looking; null if it could not be read (garbage, xenstore error). */
  peerState: XenbusState | null;
}

const S = XenbusState;
/** Peer states that answer our Closing: it is closing too, already closed, or gone (Unknown). */
const answersClosing = (s: XenbusState) => s === S.Closing || s === S.Closed || s === S.Unknown;
/**
 * Peer states that end the close after our Closed: Closed, gone, or InitWait (Linux netback
 * returns there at once when the device stays online, ready for a reconnect).
 */
const answersClosed = (s: XenbusState) => s === S.Closed || s === S.Unknown || s === S.InitWait;

/**
 * The xenbus close, best effort: Closing, wait (bounded) for the peer's Closing/Closed, Closed,
 * then, if `waitForPeerClosed`, wait for the peer's Closed. A peer that does not answer in time
 * (or writes garbage) does not stop us: our end is left Closed and the result says the peer did
 * not acknowledge. Only an abort or a xenstore failure throws, and even then our end is first
 * switched to Closed if at all possible, so the peer never waits on us.
 */
export async function closeEnd(xs: XenStore, ourDir: string, peerStatePath: string | null, waitForPeerClosed: boolean, opts: WaitOptions): Promise<CloseResult> {
  const d = new Deadline(opts);
  try {
    await setState(xs, ourDir, S.Closing);
    if (peerStatePath === null) {
      await setState(xs, ourDir, S.Closed);
      return { acknowledged: false, peerState: null };
    }
    const closing = await waitOrNull(xs, peerStatePath, answersClosing, d);
    await setState(xs, ourDir, S.Closed);
    const done = waitForPeerClosed ? answersClosed : answersClosing;
    if (closing !== null) {
      const answer = waitForPeerClosed ? await waitOrNull(xs, peerStatePath, answersClosed, d) : closing;
      if (answer !== null) return { acknowledged: true, peerState: answer };
    }
    // Out of time: one last look, so a peer that got there at the deadline still counts.
    const last = await stateOrNull(xs, peerStatePath);
    return { acknowledged: last !== null && done(last), peerState: last };
  } catch (e) {
    await setState(xs, ourDir, S.Closed).catch(() => undefined);
    throw e;
  }
}

/** waitForState, with "no answer" (TIMEOUT, or a peer's garbage state) as null. */
async function waitOrNull(xs: XenStore, path: string, accept: (s: XenbusState) => boolean, d: Deadline): Promise<XenbusState | null> {
  try {
    return await waitForState(xs, path, accept, d.opts());
  } catch (e) {
    if (e instanceof HandshakeError && (e.code === "TIMEOUT" || e.code === "BAD_STATE")) return null;
    throw e;
  }
}

async function stateOrNull(xs: XenStore, path: string): Promise<XenbusState | null> {
  return readState(xs, path).catch(() => null);
}

// ---- reading a peer's keys: parsed, range-checked, every failure names path and value --------

/** xs.read with a xenstore failure turned into HandshakeError XENSTORE naming the path. */
export async function read(xs: XenStore, path: string, tx?: XsTransaction): Promise<string | null> {
  try {
    return await xs.read(path, tx);
  } catch (e) {
    throw asHandshakeError(e, path);
  }
}

export const U32_MAX = 0xffffffff;

/** A required unsigned value in min..max, as read from `path`. */
export function uintKey(path: string, v: string | null, max: number, min = 0): number {
  const n = parseUint(v, path, max);
  if (typeof n !== "number") throw HandshakeError.fromProtocol(n, path, v);
  if (n < min) throw new HandshakeError("BAD_KEY", path, v, `expected a value in ${min}..${max}`);
  return n;
}

export async function readUint(xs: XenStore, path: string, max: number, min = 0): Promise<number> {
  return uintKey(path, await read(xs, path), max, min);
}

/** An optional unsigned key: `dflt` when missing. */
export async function readUintOr(xs: XenStore, path: string, dflt: number, max: number, min = 0): Promise<number> {
  const v = await read(xs, path);
  return v === null ? dflt : uintKey(path, v, max, min);
}

export async function readMac(xs: XenStore, path: string): Promise<Uint8Array> {
  const v = await read(xs, path);
  const m = parseMac(v, path);
  if (m instanceof Error) throw HandshakeError.fromProtocol(m, path, v);
  return m;
}

/** A xenstore path stored as a value (`backend`, `frontend`): absolute, no trailing slash. */
export function checkPathValue(path: string, v: string | null): string {
  if (v === null) throw new HandshakeError("BAD_KEY", path, null, "the key is required");
  if (!/^\/[^\0]*[^/]$/.test(v)) throw new HandshakeError("BAD_KEY", path, v, "expected an absolute xenstore path");
  return v;
}

export const flag = (b: boolean): string => (b ? "1" : "0");

/** Highest domain id; DOMID_FIRST_RESERVED (0x7ff0) and above are not domains. */
export const DOMID_MAX = 0x7fef;

/**
 * Wait until our directory names the peer: its domain id (`idKey`) and its directory
 * (`pathKey`), written late and in either order by the toolstack. Nothing is read until both
 * exist; the directory must lie in the peer domain's tree (a mismatch is a toolstack bug that
 * would otherwise surface later as a confusing EACCES or a grant to the wrong domain).
 */
export async function awaitPeerKeys(xs: XenStore, dir: string, idKey: string, pathKey: string, d: Deadline): Promise<{ id: number; path: string }> {
  const idPath = `${dir}/${idKey}`;
  const pPath = `${dir}/${pathKey}`;
  const budget = d.remaining();
  try {
    return await waitForPeerKeys(xs, dir, idPath, pPath, idKey, pathKey, d);
  } catch (e) {
    if (e instanceof HandshakeError && e.code === "TIMEOUT") throw (await missingDevice(xs, dir, budget)) ?? e;
    throw e;
  }
}

/**
 * After a wait for a device's keys timed out: NO_DEVICE, listing the devices that do exist
 * beside it, when its directory is not there at all (mirage-net-xen: "device 5 not found
 * (available = [0])"); null when it exists and only the keys were missing.
 */
async function missingDevice(xs: XenStore, dir: string, waitedMs: number): Promise<HandshakeError | null> {
  const cut = dir.lastIndexOf("/");
  const parent = dir.slice(0, cut);
  const name = dir.slice(cut + 1);
  let siblings: string[] = [];
  try {
    siblings = await xs.directory(parent);
  } catch {
    // No parent either: no device of this kind at all.
  }
  if (siblings.includes(name)) return null;
  const ids = siblings.filter((n) => /^[0-9]+$/.test(n)).map(Number).sort((a, b) => a - b);
  const m = /^\/local\/domain\/([0-9]+)\/(device|backend)\/([a-z0-9]+)(?:\/([0-9]+))?$/.exec(parent);
  const where = m === null ? `in ${parent}` : m[2] === "device" ? `of domain ${m[1]}` : `served by domain ${m[1]} to domain ${m[4]}`;
  const kind = m?.[3] ?? "device";
  return new HandshakeError(
    "NO_DEVICE",
    dir,
    null,
    `${kind} ${name} ${where} not found within ${waitedMs} ms (available: ${ids.length === 0 ? "none" : `[${ids.join(", ")}]`})`,
  );
}

function waitForPeerKeys(xs: XenStore, dir: string, idPath: string, pPath: string, idKey: string, pathKey: string, d: Deadline): Promise<{ id: number; path: string }> {
  return waitUntil(
    xs,
    dir,
    async () => {
      const rawId = await read(xs, idPath);
      const rawPath = await read(xs, pPath);
      if (rawId === null || rawPath === null) return null;
      const id = uintKey(idPath, rawId, DOMID_MAX);
      const path = checkPathValue(pPath, rawPath);
      if (!path.startsWith(`/local/domain/${id}/`)) {
        throw new HandshakeError("BAD_KEY", pPath, rawPath, `not under /local/domain/${id}/ (${idKey} ${id})`);
      }
      return { value: { id, path } };
    },
    d.opts(),
    `${idKey} and ${pathKey} keys`,
  );
}
