/**
 * Simulated event channels, modelled on Xen's per-domain port tables and Linux's
 * /dev/xen/evtchn: a handle (one open of the device) owns the ports it bound; when a port
 * fires it is masked and queued on its handle, and stays masked until unmasked. All state is
 * in SharedArrayBuffers, so a notify in one thread wakes a waiter in another (Atomics.notify
 * on the handle's wake word), and a worker can rewrap a handle opened elsewhere.
 */
import { PlatformError, type DomId, type EventChannels, type Port } from "../types.ts";

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

// Handle fields: state, domid, head, tail, wake sequence, then the queue of fired ports.
const H_STATE = 0;
const H_DOMID = 1;
const H_HEAD = 2;
const H_TAIL = 3;
/** Bumped by every enqueue and every kick: the one word a waiter sleeps on. */
const H_WAKE = 4;
const H_QUEUE = 5;

export interface EventChannelState {
  ports: SharedArrayBuffer;
  handles: SharedArrayBuffer;
  maxDomains: number;
  portsPerDomain: number;
  maxHandles: number;
}

export function createEventChannelState(maxDomains: number, portsPerDomain: number, maxHandles: number): EventChannelState {
  return {
    ports: new SharedArrayBuffer(maxDomains * portsPerDomain * P_FIELDS * 4),
    // A fired port is masked until taken, so each port is queued at most once: a queue of
    // portsPerDomain entries never overflows.
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

  handleOpen(handle: number, domid: DomId): boolean {
    const b = handle * this.hStride;
    return Atomics.load(this.h, b + H_STATE) === 1 && Atomics.load(this.h, b + H_DOMID) === domid;
  }

  /** Claim a free port of `domid` for `handle`, in state `state` towards `remoteDom`. */
  claimPort(domid: DomId, handle: number, remoteDom: DomId, op: string): Port {
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
    throw new PlatformError("ENOSPC", op, `domain ${domid} has no free event-channel port (${this.perDomain - 1} ports)`);
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
      Atomics.store(this.p, lb + P_STATE, FREE);
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
    this.enqueue(Atomics.load(this.p, b + P_HANDLE), port);
  }

  private enqueue(handle: number, port: Port): void {
    const hb = handle * this.hStride;
    const slot = Atomics.add(this.h, hb + H_TAIL, 1);
    // Claimed before written: the consumer waits for the nonzero port (port 0 is never valid).
    Atomics.store(this.h, hb + H_QUEUE + (slot % this.perDomain), port);
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
      this.enqueue(handle, port);
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
    Atomics.store(this.p, b + P_PENDING, 0);
    Atomics.store(this.p, b + P_STATE, FREE);
  }

  /** Take queued ports of `handle` into `out` (emptied first): each is masked until unmasked. */
  take(handle: number, out: Port[]): Port[] {
    const hb = handle * this.hStride;
    out.length = 0;
    let head = Atomics.load(this.h, hb + H_HEAD);
    const tail = Atomics.load(this.h, hb + H_TAIL);
    while (head !== tail) {
      const q = hb + H_QUEUE + (head % this.perDomain);
      let port = Atomics.load(this.h, q);
      while (port === 0) port = Atomics.load(this.h, q); // a producer between claim and write
      Atomics.store(this.h, q, 0);
      head = (head + 1) | 0;
      const domid = Atomics.load(this.h, hb + H_DOMID);
      const b = this.pb(domid, port);
      // A port unbound (or rebound elsewhere) after it was queued carries nothing for us.
      if (Atomics.load(this.p, b + P_STATE) !== FREE && Atomics.load(this.p, b + P_HANDLE) === handle) {
        Atomics.store(this.p, b + P_PENDING, 0);
        out.push(port);
      }
    }
    Atomics.store(this.h, hb + H_HEAD, head);
    return out;
  }

  /** The word a waiter sleeps on. */
  wakeWord(handle: number): { array: Int32Array; index: number } {
    return { array: this.h, index: handle * this.hStride + H_WAKE };
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
}

/** One open "/dev/xen/evtchn" of a domain. */
export class SimEventChannels implements EventChannels {
  private closed = false;
  private readonly wakeWord: { array: Int32Array; index: number };

  constructor(
    private readonly t: EventChannelTable,
    readonly domid: DomId,
    readonly handle: number,
  ) {
    this.wakeWord = t.wakeWord(handle);
    // A new view (a worker's rewrap) starts level: wake-ups before it existed are not its own.
    this.kicksSeen = Atomics.load(this.wakeWord.array, this.wakeWord.index);
  }

  get descriptor(): SimEventChannelsDescriptor {
    return { kind: "sim-evtchn", state: this.t.state, domid: this.domid, handle: this.handle };
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
    return this.closed || !this.t.handleOpen(this.handle, this.domid);
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
    for (const port of this.t.portsOf(this.domid, this.handle)) this.t.unbind(this.domid, this.handle, port);
    this.closed = true;
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
