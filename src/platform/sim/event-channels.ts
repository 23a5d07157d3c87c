/**
 * Simulated event channels, modelled on Xen's per-domain port tables and Linux's
 * /dev/xen/evtchn: a handle (one open of the device) owns the ports it bound; when a port
 * fires it is masked and queued on its handle, and stays masked until unmasked. All state is
 * in SharedArrayBuffers, so a notify in one thread wakes a waiter in another (Atomics.notify
 * on the handle's wake word), and a worker can rewrap a handle opened elsewhere.
 *
 * A handle belongs to its home domain. A waiter (SimEventWaiter, for a pool worker) is a
 * handle of domain 0 that other domains bind ports through: the simulation's stand-in for one
 * process per domain, each with its own /dev/xen/evtchn. Its queue entries carry the domain.
 */
import { PlatformError, type DomId, type EventChannels, type EventWaiter, type Port } from "../types.ts";

// Port entry fields (Int32 each).
const P_STATE = 0;
const P_REMOTE_DOM = 1;
const P_REMOTE_PORT = 2;
const P_PENDING = 3;
const P_MASKED = 4;
const P_HANDLE = 5;
const P_FIELDS = 6;

const FREE = 0;
const UNBOUND = 1; // allocated for a remote domain, not (or no longer) connected
const INTERDOMAIN = 2;
const RESERVED = 3; // claimed, being set up

// Handle fields: state, home domain, head, tail, wake sequence, ports bound through it, then
// the queue of fired ports, each entry (domid << 16) | port (port 0 is never valid: 0 = empty).
const H_STATE = 0;
const H_DOMID = 1;
const H_HEAD = 2;
const H_TAIL = 3;
/** Bumped by every enqueue and every kick: the one word a waiter sleeps on. */
const H_WAKE = 4;
const H_COUNT = 5;
const H_QUEUE = 8;
/** Ports per domain are numbered below 2^16, so a queue entry holds its domain too. */
const MAX_PORTS_PER_DOMAIN = 1 << 16;

export interface EventChannelState {
  ports: SharedArrayBuffer;
  handles: SharedArrayBuffer;
  maxDomains: number;
  portsPerDomain: number;
  maxHandles: number;
}

export function createEventChannelState(maxDomains: number, portsPerDomain: number, maxHandles: number): EventChannelState {
  if (!Number.isInteger(portsPerDomain) || portsPerDomain < 2 || portsPerDomain > MAX_PORTS_PER_DOMAIN) {
    throw new RangeError(`portsPerDomain must be an integer in 2..${MAX_PORTS_PER_DOMAIN}, got ${portsPerDomain}`);
  }
  return {
    ports: new SharedArrayBuffer(maxDomains * portsPerDomain * P_FIELDS * 4),
    // A fired port is masked until taken, so each port is queued at most once; a handle holds
    // at most portsPerDomain ports (H_COUNT), so a queue of that many entries never overflows.
    handles: new SharedArrayBuffer(maxHandles * (H_QUEUE + portsPerDomain) * 4),
    maxDomains,
    portsPerDomain,
    maxHandles,
  };
}

export interface PortLeak {
  domid: DomId;
  port: Port;
  state: "unbound" | "interdomain";
  remoteDomid: DomId;
}

/** The hypervisor's side of event channels: every handle of every domain goes through it. */
export class EventChannelTable {
  private readonly p: Int32Array;
  private readonly h: Int32Array;
  readonly perDomain: number;
  readonly maxDomains: number;
  readonly maxHandles: number;
  private readonly hStride: number;

  constructor(readonly state: EventChannelState) {
    this.p = new Int32Array(state.ports);
    this.h = new Int32Array(state.handles);
    this.perDomain = state.portsPerDomain;
    this.maxDomains = state.maxDomains;
    this.maxHandles = state.maxHandles;
    this.hStride = H_QUEUE + state.portsPerDomain;
  }

  private pb(domid: DomId, port: Port): number {
    return (domid * this.perDomain + port) * P_FIELDS;
  }

  validPort(port: number): boolean {
    // Port 0 is never valid in Xen; a driver that uses it has forgotten to bind.
    return Number.isInteger(port) && port >= 1 && port < this.perDomain;
  }

  validDomain(d: number): boolean {
    return Number.isInteger(d) && d >= 0 && d < this.maxDomains;
  }

  openHandle(domid: DomId): number {
    for (let i = 0; i < this.maxHandles; i++) {
      const b = i * this.hStride;
      if (Atomics.compareExchange(this.h, b + H_STATE, 0, 1) === 0) {
        Atomics.store(this.h, b + H_DOMID, domid);
        Atomics.store(this.h, b + H_HEAD, 0);
        Atomics.store(this.h, b + H_TAIL, 0);
        Atomics.store(this.h, b + H_WAKE, 0);
        Atomics.store(this.h, b + H_COUNT, 0);
        this.h.fill(0, b + H_QUEUE, b + this.hStride);
        return i;
      }
    }
    throw new PlatformError("ENOSPC", "evtchn.open", `all ${this.maxHandles} simulated event-channel handles are open`);
  }

  /** The domain is gone: every port it had is closed (remote ends go unbound), every handle shut. */
  closeDomain(domid: DomId): void {
    for (let port = 1; port < this.perDomain; port++) {
      const b = this.pb(domid, port);
      const s = Atomics.load(this.p, b + P_STATE);
      if (s === FREE || s === RESERVED) continue;
      this.unbind(domid, Atomics.load(this.p, b + P_HANDLE), port);
    }
    for (let i = 0; i < this.maxHandles; i++) {
      const hb = i * this.hStride;
      if (Atomics.load(this.h, hb + H_STATE) === 1 && Atomics.load(this.h, hb + H_DOMID) === domid) {
        this.closeHandle(i);
        this.wake(i);
      }
    }
  }

  closeHandle(handle: number): void {
    Atomics.store(this.h, handle * this.hStride + H_STATE, 0);
  }

  /** The handle is open (and, when `domid` is given, is a handle of that home domain). */
  handleOpen(handle: number, domid?: DomId): boolean {
    const b = handle * this.hStride;
    return Atomics.load(this.h, b + H_STATE) === 1 && (domid === undefined || Atomics.load(this.h, b + H_DOMID) === domid);
  }

  /** Claim a free port of `domid` for `handle`, in state `state` towards `remoteDom`. */
  claimPort(domid: DomId, handle: number, remoteDom: DomId, op: string): Port {
    const count = handle * this.hStride + H_COUNT;
    if (Atomics.add(this.h, count, 1) >= this.perDomain) {
      Atomics.sub(this.h, count, 1);
      throw new PlatformError("ENOSPC", op, `event-channel handle ${handle} already holds ${this.perDomain} ports`);
    }
    for (let port = 1; port < this.perDomain; port++) {
      const b = this.pb(domid, port);
      if (Atomics.compareExchange(this.p, b + P_STATE, FREE, RESERVED) !== FREE) continue;
      Atomics.store(this.p, b + P_REMOTE_DOM, remoteDom);
      Atomics.store(this.p, b + P_REMOTE_PORT, 0);
      Atomics.store(this.p, b + P_PENDING, 0);
      Atomics.store(this.p, b + P_MASKED, 0);
      Atomics.store(this.p, b + P_HANDLE, handle);
      return port;
    }
    Atomics.sub(this.h, count, 1);
    throw new PlatformError("ENOSPC", op, `domain ${domid} has no free event-channel port (${this.perDomain - 1} ports)`);
  }

  /** Give a claimed port back (and its place on its handle). */
  private freePort(b: number): void {
    Atomics.sub(this.h, Atomics.load(this.p, b + P_HANDLE) * this.hStride + H_COUNT, 1);
    Atomics.store(this.p, b + P_PENDING, 0);
    Atomics.store(this.p, b + P_STATE, FREE);
  }

  allocUnbound(domid: DomId, handle: number, remoteDom: DomId): Port {
    const port = this.claimPort(domid, handle, remoteDom, "evtchn.allocUnbound");
    Atomics.store(this.p, this.pb(domid, port) + P_STATE, UNBOUND);
    return port;
  }

  bindInterdomain(domid: DomId, handle: number, remoteDom: DomId, remotePort: Port): Port {
    const op = "evtchn.bindInterdomain";
    if (!this.validDomain(remoteDom) || !this.validPort(remotePort)) {
      throw new PlatformError("EINVAL", op, `no port ${remotePort} in domain ${remoteDom}`);
    }
    const rb = this.pb(remoteDom, remotePort);
    if (Atomics.load(this.p, rb + P_STATE) !== UNBOUND || Atomics.load(this.p, rb + P_REMOTE_DOM) !== domid) {
      throw new PlatformError("EINVAL", op, `port ${remotePort} of domain ${remoteDom} is not allocated unbound for domain ${domid}`);
    }
    const port = this.claimPort(domid, handle, remoteDom, op);
    const lb = this.pb(domid, port);
    // Connect the remote end first; if another domain won the race, give our port back.
    if (Atomics.compareExchange(this.p, rb + P_STATE, UNBOUND, RESERVED) !== UNBOUND) {
      this.freePort(lb);
      throw new PlatformError("EINVAL", op, `port ${remotePort} of domain ${remoteDom} was bound concurrently`);
    }
    Atomics.store(this.p, rb + P_REMOTE_PORT, port);
    Atomics.store(this.p, rb + P_STATE, INTERDOMAIN);
    Atomics.store(this.p, lb + P_REMOTE_PORT, remotePort);
    Atomics.store(this.p, lb + P_STATE, INTERDOMAIN);
    // Xen marks the binder's port pending: the first wake-up after a bind carries no news.
    this.raise(domid, port);
    return port;
  }

  /** Signal the remote end of `port`. Unbound (peer gone) is a no-op, as in Xen; a free port is a bug. */
  send(domid: DomId, handle: number, port: Port): void {
    const b = this.checkOwned(domid, handle, port, "evtchn.notify");
    const state = Atomics.load(this.p, b + P_STATE);
    if (state !== INTERDOMAIN) return;
    this.raise(Atomics.load(this.p, b + P_REMOTE_DOM), Atomics.load(this.p, b + P_REMOTE_PORT));
  }

  /** Set pending; if the port was not masked, mask it and queue it on its handle. */
  private raise(domid: DomId, port: Port): void {
    const b = this.pb(domid, port);
    Atomics.store(this.p, b + P_PENDING, 1);
    if (Atomics.compareExchange(this.p, b + P_MASKED, 0, 1) !== 0) return;
    this.enqueue(Atomics.load(this.p, b + P_HANDLE), domid, port);
  }

  private enqueue(handle: number, domid: DomId, port: Port): void {
    const hb = handle * this.hStride;
    const slot = Atomics.add(this.h, hb + H_TAIL, 1);
    // Claimed before written: the consumer waits for the nonzero entry (port 0 is never valid).
    Atomics.store(this.h, hb + H_QUEUE + (slot % this.perDomain), (domid << 16) | port);
    this.wake(handle);
  }

  wake(handle: number): void {
    const w = handle * this.hStride + H_WAKE;
    Atomics.add(this.h, w, 1);
    Atomics.notify(this.h, w);
  }

  unmask(domid: DomId, handle: number, port: Port): void {
    const b = this.checkOwned(domid, handle, port, "evtchn.unmask");
    Atomics.store(this.p, b + P_MASKED, 0);
    // An event that arrived while masked fires now, as a real unmask does.
    if (Atomics.load(this.p, b + P_PENDING) === 1 && Atomics.compareExchange(this.p, b + P_MASKED, 0, 1) === 0) {
      this.enqueue(handle, domid, port);
    }
  }

  unbind(domid: DomId, handle: number, port: Port): void {
    const b = this.checkOwned(domid, handle, port, "evtchn.unbind");
    const state = Atomics.load(this.p, b + P_STATE);
    if (state === INTERDOMAIN) {
      // The remote end stays allocated but goes back to unbound, as EVTCHNOP_close does.
      const rb = this.pb(Atomics.load(this.p, b + P_REMOTE_DOM), Atomics.load(this.p, b + P_REMOTE_PORT));
      Atomics.store(this.p, rb + P_REMOTE_PORT, 0);
      Atomics.compareExchange(this.p, rb + P_STATE, INTERDOMAIN, UNBOUND);
    }
    this.freePort(b);
  }

  /**
   * Take queued ports of `handle` into `out` (emptied first): each is masked until unmasked.
   * `pairs`: as [domid, port] pairs (a waiter, which holds ports of several domains); else
   * ports only (a handle holds its home domain's).
   */
  take(handle: number, out: Port[], pairs = false): Port[] {
    const hb = handle * this.hStride;
    out.length = 0;
    let head = Atomics.load(this.h, hb + H_HEAD);
    const tail = Atomics.load(this.h, hb + H_TAIL);
    while (head !== tail) {
      const q = hb + H_QUEUE + (head % this.perDomain);
      let entry = Atomics.load(this.h, q);
      while (entry === 0) entry = Atomics.load(this.h, q); // a producer between claim and write
      Atomics.store(this.h, q, 0);
      head = (head + 1) | 0;
      const domid = entry >>> 16;
      const port = entry & 0xffff;
      const b = this.pb(domid, port);
      // A port unbound (or rebound elsewhere) after it was queued carries nothing for us.
      if (Atomics.load(this.p, b + P_STATE) !== FREE && Atomics.load(this.p, b + P_HANDLE) === handle) {
        Atomics.store(this.p, b + P_PENDING, 0);
        if (pairs) out.push(domid, port);
        else out.push(port);
      }
    }
    Atomics.store(this.h, hb + H_HEAD, head);
    return out;
  }

  /** The word a waiter sleeps on. */
  wakeWord(handle: number): { array: Int32Array; index: number } {
    return { array: this.h, index: handle * this.hStride + H_WAKE };
  }

  /** Every [domid, port] bound through `handle`, in any domain. */
  portsThrough(handle: number): [DomId, Port][] {
    const out: [DomId, Port][] = [];
    for (let d = 0; d < this.maxDomains; d++) for (const port of this.portsOf(d, handle)) out.push([d, port]);
    return out;
  }

  portsOf(domid: DomId, handle: number): Port[] {
    const out: Port[] = [];
    for (let port = 1; port < this.perDomain; port++) {
      const b = this.pb(domid, port);
      const s = Atomics.load(this.p, b + P_STATE);
      if (s !== FREE && s !== RESERVED && Atomics.load(this.p, b + P_HANDLE) === handle) out.push(port);
    }
    return out;
  }

  /** Every port not free, in every domain. */
  boundPorts(): PortLeak[] {
    const out: PortLeak[] = [];
    for (let d = 0; d < this.maxDomains; d++) {
      for (let port = 1; port < this.perDomain; port++) {
        const b = this.pb(d, port);
        const s = Atomics.load(this.p, b + P_STATE);
        if (s === FREE) continue;
        out.push({ domid: d, port, state: s === INTERDOMAIN ? "interdomain" : "unbound", remoteDomid: Atomics.load(this.p, b + P_REMOTE_DOM) });
      }
    }
    return out;
  }

  private checkOwned(domid: DomId, handle: number, port: Port, op: string): number {
    if (!this.validPort(port)) throw new PlatformError("EINVAL", op, `port ${port} is not a valid port`);
    const b = this.pb(domid, port);
    const s = Atomics.load(this.p, b + P_STATE);
    if (s === FREE || s === RESERVED || Atomics.load(this.p, b + P_HANDLE) !== handle) {
      throw new PlatformError("EINVAL", op, `port ${port} of domain ${domid} is not bound by this handle`);
    }
    return b;
  }
}

export interface SimEventChannelsDescriptor {
  kind: "sim-evtchn";
  state: EventChannelState;
  domid: DomId;
  handle: number;
  /** A domain's view of a waiter's handle (SimEventWaiter). */
  via?: boolean;
}

export interface SimEventWaiterDescriptor {
  kind: "sim-evtchn-waiter";
  state: EventChannelState;
  handle: number;
}

/**
 * A pool worker's handle: a handle of domain 0 (which is never destroyed) that the ports of
 * any domain can be bound through (`viewFor`); `wait` gives [domid, port] pairs.
 */
export class SimEventWaiter implements EventWaiter {
  private closed = false;
  private readonly wakeWord: { array: Int32Array; index: number };
  private seen: number;

  constructor(
    private readonly t: EventChannelTable,
    readonly handle: number,
    private readonly owner: boolean,
  ) {
    this.wakeWord = t.wakeWord(handle);
    this.seen = Atomics.load(this.wakeWord.array, this.wakeWord.index);
  }

  static open(t: EventChannelTable): SimEventWaiter {
    return new SimEventWaiter(t, t.openHandle(0), true);
  }

  static fromDescriptor(t: EventChannelTable, descriptor: unknown): SimEventWaiter {
    const d = descriptor as Partial<SimEventWaiterDescriptor> | null;
    if (d?.kind !== "sim-evtchn-waiter" || typeof d.handle !== "number") {
      throw new PlatformError("EINVAL", "evtchn.openWaiter", "not a simulated event-channel waiter");
    }
    return new SimEventWaiter(t, d.handle, false);
  }

  get descriptor(): SimEventWaiterDescriptor {
    return { kind: "sim-evtchn-waiter", state: this.t.state, handle: this.handle };
  }

  /** Domain `domid`'s event channels, bound through this waiter. */
  viewFor(domid: DomId): SimEventChannels {
    return new SimEventChannels(this.t, domid, this.handle, true);
  }

  private live(op: string): void {
    if (this.closed || !this.t.handleOpen(this.handle, 0)) throw new PlatformError("ECLOSED", op, `event-channel waiter ${this.handle} is closed`);
  }

  wait(timeoutMs: number, out: number[]): number[] {
    this.live("evtchn.wait");
    const deadline = performance.now() + timeoutMs;
    for (;;) {
      // Read the wake word before taking, so an event or kick in between is not lost.
      const seen = Atomics.load(this.wakeWord.array, this.wakeWord.index);
      this.t.take(this.handle, out, true);
      if (out.length > 0 || seen !== this.seen) {
        this.seen = seen;
        return out;
      }
      const left = deadline - performance.now();
      if (left <= 0) return out;
      Atomics.wait(this.wakeWord.array, this.wakeWord.index, seen, left);
      if (this.closed || !this.t.handleOpen(this.handle, 0)) return out;
    }
  }

  unmask(domid: DomId, port: Port): void {
    this.live("evtchn.unmask");
    this.t.unmask(domid, this.handle, port);
  }

  kick(): void {
    this.live("evtchn.kick");
    this.t.wake(this.handle);
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    if (!this.owner) return;
    for (const [d, port] of this.t.portsThrough(this.handle)) this.t.unbind(d, this.handle, port);
    this.t.closeHandle(this.handle);
    this.t.wake(this.handle);
  }
}

/**
 * One open "/dev/xen/evtchn" of a domain; or (`via`) a domain's view of a waiter's handle,
 * whose ports fire into the waiter and which never closes the handle itself.
 */
export class SimEventChannels implements EventChannels {
  private closed = false;
  private readonly wakeWord: { array: Int32Array; index: number };

  constructor(
    private readonly t: EventChannelTable,
    readonly domid: DomId,
    readonly handle: number,
    private readonly via = false,
  ) {
    this.wakeWord = t.wakeWord(handle);
    // A new view (a worker's rewrap) starts level: wake-ups before it existed are not its own.
    this.kicksSeen = Atomics.load(this.wakeWord.array, this.wakeWord.index);
  }

  get descriptor(): SimEventChannelsDescriptor {
    return { kind: "sim-evtchn", state: this.t.state, domid: this.domid, handle: this.handle, via: this.via };
  }

  private live(op: string): void {
    if (this.gone()) {
      throw new PlatformError("ECLOSED", op, `event-channel handle ${this.handle} of domain ${this.domid} is closed`);
    }
  }

  allocUnbound(peer: DomId): Port {
    this.live("evtchn.allocUnbound");
    if (!this.t.validDomain(peer)) throw new PlatformError("EINVAL", "evtchn.allocUnbound", `no domain ${peer}`);
    return this.t.allocUnbound(this.domid, this.handle, peer);
  }

  bindInterdomain(peer: DomId, remotePort: Port): Port {
    this.live("evtchn.bindInterdomain");
    return this.t.bindInterdomain(this.domid, this.handle, peer, remotePort);
  }

  notify(port: Port): void {
    this.live("evtchn.notify");
    this.t.send(this.domid, this.handle, port);
  }

  unmask(port: Port): void {
    this.live("evtchn.unmask");
    this.t.unmask(this.domid, this.handle, port);
  }

  unbind(port: Port): void {
    this.live("evtchn.unbind");
    this.t.unbind(this.domid, this.handle, port);
  }

  pending(): Port[] {
    this.live("evtchn.pending");
    const seen = Atomics.load(this.wakeWord.array, this.wakeWord.index);
    return this.sawKick(seen, this.t.take(this.handle, []));
  }

  wait(timeoutMs = Infinity): Port[] {
    this.live("evtchn.wait");
    const deadline = performance.now() + timeoutMs;
    for (;;) {
      // Read the wake word before taking, so a notify or kick between take and wait changes
      // it and the wait returns at once: no lost wake-up.
      const seen = Atomics.load(this.wakeWord.array, this.wakeWord.index);
      const ports = this.t.take(this.handle, this.fired);
      if (ports.length > 0 || seen !== this.kicksSeen) return this.sawKick(seen, ports);
      const left = deadline - performance.now();
      if (left <= 0) return ports;
      Atomics.wait(this.wakeWord.array, this.wakeWord.index, seen, left);
      if (this.gone()) {
        ports.length = 0;
        return ports;
      }
    }
  }

  /** Closed here, or by another thread holding the same handle. */
  private gone(): boolean {
    return this.closed || !this.t.handleOpen(this.handle, this.via ? undefined : this.domid);
  }

  async waitAsync(timeoutMs = Infinity): Promise<Port[]> {
    this.live("evtchn.waitAsync");
    const deadline = performance.now() + timeoutMs;
    for (;;) {
      const seen = Atomics.load(this.wakeWord.array, this.wakeWord.index);
      const ports = this.t.take(this.handle, []);
      if (ports.length > 0 || seen !== this.kicksSeen) return this.sawKick(seen, ports);
      const left = deadline - performance.now();
      if (left <= 0) return ports;
      const r = Atomics.waitAsync(this.wakeWord.array, this.wakeWord.index, seen, left);
      if (r.async) await r.value;
      if (this.gone()) return [];
    }
  }

  close(): void {
    if (this.closed) return;
    if (!this.gone()) for (const port of this.t.portsOf(this.domid, this.handle)) this.t.unbind(this.domid, this.handle, port);
    this.closed = true;
    if (this.via) return; // the waiter's handle stays open
    this.t.closeHandle(this.handle);
    // Wake any waiter on this handle, in any thread, so it sees the close.
    this.t.wake(this.handle);
  }

  kick(): void {
    this.live("evtchn.kick");
    this.t.wake(this.handle);
  }

  /**
   * The wake word counts events and kicks together. A waiter returns whenever it moved since
   * the last return, so a kick is never lost, even one that came while the waiter was busy.
   */
  private kicksSeen: number;
  /** What wait() returns, reused: a worker waits thousands of times a second. */
  private readonly fired: Port[] = [];
  private sawKick(seen: number, ports: Port[]): Port[] {
    this.kicksSeen = seen;
    return ports;
  }
}
