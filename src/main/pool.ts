/**
 * The ring worker pool: one per machine in this process (real Xen, or each simulated
 * hypervisor), shared by every Netfront and Netback on it. TX rings are owned by TX workers and
 * RX rings by RX workers; a worker owns many rings and blocks on one event-channel handle that
 * all their ports are bound through (see workers/pool-worker.ts). A ring joins a running worker
 * when its device connects and leaves it when it disconnects; nothing restarts.
 *
 * Size: `txWorkers` and `rxWorkers` threads at most each (default: as many as there are CPUs,
 * at most four), started as rings need them: a ring goes to the least loaded worker of its
 * kind (a new one while fewer run than allowed), except that a ring whose other end is served
 * in this process too (a vif looped back inside one machine) joins the worker of that end, so
 * a frame crosses from one end to the other within one thread and its cache. Workers with no
 * ring do not keep the process alive, and a pool with no ring for a while stops its threads.
 */
import { availableParallelism } from "node:os";
import { MessageChannel, type MessagePort } from "node:worker_threads";
import { openPlatform } from "../platform/open.ts";
import type { DomId, EventChannels, EventWaiter, Platform, PlatformDescriptor, Port } from "../platform/types.ts";
import { COMMAND_SLOT, type PoolCommand, type PoolEvent, type PoolWorkerStart } from "../workers/pool-worker.ts";
import type { RingWorkerInit } from "../workers/role.ts";
import { WakeBits, createWakeBitsState } from "../workers/wake-bits.ts";
import { Doorbell } from "./doorbell.ts";
import { NetError } from "./errors.ts";
import { PortLease } from "./port-lease.ts";
import { RoleHandle, type RingWorkerEvents } from "./role-handle.ts";

const THREAD_URL = new URL("../workers/pool-thread.ts", import.meta.url).href;
/** Rings one worker can hold (its WakeBits slots; slot 0 is for commands). */
const SLOTS_PER_WORKER = 1 << 15;
/** A pool with no ring for this long stops its threads. */
const IDLE_STOP_MS = 2000;
/** A stopping worker that has not ended within this long is terminated. */
const EXIT_WAIT_MS = 5000;
/**
 * A worker that does not take a ring within this long is taken for dead. (A worker that died
 * is known at once, by its close event; this bounds one that hangs.) Generous: under software
 * emulation, four threads starting at once took more than 15 s, and a handshake that fails
 * for that is one a Linux netfront does not retry.
 */
const ADD_TIMEOUT_MS = 60_000;

export type RingKind = "tx" | "rx";

export interface PoolOptions {
  /** Most TX-ring workers per machine (default: the CPUs, 1..4). */
  txWorkers?: number;
  /** Most RX-ring workers per machine (default: the CPUs, 1..4). */
  rxWorkers?: number;
}

function defaultWorkers(): number {
  return Math.max(1, Math.min(4, availableParallelism()));
}

let sizes = { tx: defaultWorkers(), rx: defaultWorkers() };

/** Set the pool size for machines whose pool starts after this call (and grow running ones). */
export function configurePool(opts: PoolOptions): void {
  const check = (name: string, v: unknown): number => {
    if (typeof v !== "number" || !Number.isInteger(v) || v < 1 || v > 64) throw new NetError("BAD_ARGUMENT", `option ${name} must be an integer in 1..64, got ${String(v)}`);
    return v;
  };
  if (opts === null || typeof opts !== "object") throw new NetError("BAD_ARGUMENT", "configurePool takes an options object");
  sizes = {
    tx: opts.txWorkers === undefined ? sizes.tx : check("txWorkers", opts.txWorkers),
    rx: opts.rxWorkers === undefined ? sizes.rx : check("rxWorkers", opts.rxWorkers),
  };
}

/** What a device asks of the pool for one ring. */
export interface RoleRequest {
  ring: RingKind;
  /** The role's domain. */
  platform: Platform;
  /** Allocate or bind the role's port on the event channels it is given (the worker's). */
  bindPort(evtchn: EventChannels): Port;
  /** The other end's port, when it is known (a back end binds to it): if it is ours too, we join it. */
  peerPort?: { domid: DomId; port: Port };
  init: Omit<RingWorkerInit, "platform" | "evtchn" | "port" | "partner">;
  events: RingWorkerEvents;
}

/** Where a role on some worker is woken (RingWorkerInit.partner). */
type WakeAddress = NonNullable<RingWorkerInit["partner"]>;

/** The second ring of a queue whose two rings share one port: it binds nothing. */
export type SharedRoleRequest = Omit<RoleRequest, "bindPort" | "peerPort">;

/** The main thread's side of one pool worker. */
export class PoolThread {
  readonly worker: Worker;
  private readonly pending: WakeBits;
  private readonly commands: MessagePort;
  readonly roles = new Map<number, RoleHandle>();
  private readonly views = new Map<DomId, { evtchn: EventChannels; refs: number }>();
  private readonly freeSlots: number[] = [];
  private nextSlot = COMMAND_SLOT + 1;
  dead = false;

  constructor(
    private readonly pool: RingPool,
    readonly kind: RingKind,
    private readonly waiter: EventWaiter,
    machine: PlatformDescriptor,
  ) {
    const state = createWakeBitsState(SLOTS_PER_WORKER);
    this.pending = new WakeBits(state);
    const channel = new MessageChannel();
    this.commands = channel.port1;
    this.worker = new Worker(THREAD_URL);
    this.worker.onmessage = (e: MessageEvent<PoolEvent>) => this.roles.get(e.data.slot)?.onEvent(e.data);
    const died = (why: string) => this.died(why);
    this.worker.addEventListener("close", () => died("the pool worker exited"));
    this.worker.onerror = (e) => died(`the pool worker failed: ${e.message}`);
    const start: PoolWorkerStart = { port: channel.port2, pending: state, platform: machine, waiter: waiter.descriptor };
    this.worker.postMessage(start, [channel.port2]);
    holdsProcess(this.worker, false);
  }

  get load(): number {
    return this.roles.size;
  }

  /** Where another worker wakes one of our roles: our WakeBits and our waiter. */
  wakeAddress(slot: number): WakeAddress {
    return { bits: this.pending.state, index: slot, waiter: this.waiter.descriptor };
  }

  /** Tell the worker about a role: the command, then its bit, then a kick if it sleeps. */
  send(cmd: PoolCommand): void {
    if (this.dead) return;
    this.commands.postMessage(cmd);
    this.kickSlot(COMMAND_SLOT);
  }

  kickSlot(slot: number): void {
    if (this.dead) return;
    if (this.pending.set(slot)) this.waiter.kick();
  }

  allocSlot(): number {
    const s = this.freeSlots.pop() ?? this.nextSlot++;
    if (s >= SLOTS_PER_WORKER) throw new NetError("UNSUPPORTED", `a pool worker holds at most ${SLOTS_PER_WORKER - 1} rings`);
    return s;
  }

  /** A slot allocated and never used. */
  freeSlot(slot: number): void {
    this.freeSlots.push(slot);
  }

  /** `domid`'s event channels through this worker's waiter, shared by its roles of that domain. */
  viewFor(platform: Platform): EventChannels {
    const v = this.views.get(platform.domid);
    if (v !== undefined) {
      v.refs++;
      return v.evtchn;
    }
    const evtchn = platform.eventChannelsVia(this.waiter);
    this.views.set(platform.domid, { evtchn, refs: 1 });
    return evtchn;
  }

  releaseView(domid: DomId): void {
    const v = this.views.get(domid);
    if (v === undefined || --v.refs > 0) return;
    this.views.delete(domid);
  }

  attach(slot: number, h: RoleHandle): void {
    if (this.roles.size === 0) holdsProcess(this.worker, true);
    this.roles.set(slot, h);
  }

  /** The role left (the worker said so): its slot may be used again. */
  detach(slot: number, reuse: boolean): void {
    if (!this.roles.delete(slot)) return;
    if (reuse) this.freeSlots.push(slot);
    if (this.roles.size === 0) holdsProcess(this.worker, false);
    this.pool.roleLeft();
  }

  private died(why: string): void {
    if (this.dead) return;
    this.dead = true;
    this.pool.threadDied(this);
    for (const h of [...this.roles.values()]) h.workerDied(why);
    this.roles.clear();
    // Its waiter stays open until the pool stops: a worker whose role shares a port with one of
    // ours may still kick it, and a closed descriptor's number could be reused meanwhile.
    this.pool.retire(this.waiter);
  }

  /**
   * Stop the thread (the pool is idle): its roles are all gone already. It is asked to leave
   * its loop and woken, and its handle is closed only once it has ended: a worker blocked in
   * poll(2) through bun:ffi cannot be terminated safely (on real Xen, terminating one crashed
   * the process), and its descriptors must not close under it. Terminated after EXIT_WAIT_MS.
   */
  stop(): void {
    if (this.dead) return;
    this.dead = true;
    this.commands.postMessage({ type: "exit" } satisfies PoolCommand);
    this.pending.set(COMMAND_SLOT);
    let closed = false;
    const release = () => {
      if (closed) return;
      closed = true;
      this.commands.close();
      closeQuietly(this.waiter);
    };
    try {
      this.waiter.kick();
    } catch {
      // Its machine is gone: nothing to wake.
    }
    const late = setTimeout(() => {
      this.worker.terminate();
      release();
    }, EXIT_WAIT_MS);
    (late as { unref?: () => void }).unref?.();
    this.worker.addEventListener("close", () => {
      clearTimeout(late);
      release();
    });
  }
}

/** One machine's pool. */
export class RingPool {
  private static readonly pools = new Map<string, RingPool>();

  /** The pool of `platform`'s machine (made on first use). */
  static for(platform: Platform): RingPool {
    const key = machineKey(platform.descriptor);
    let p = RingPool.pools.get(key);
    if (p === undefined) {
      p = new RingPool(key, platform.descriptor);
      RingPool.pools.set(key, p);
    }
    return p;
  }

  readonly doorbell = new Doorbell();
  private readonly threads: Record<RingKind, PoolThread[]> = { tx: [], rx: [] };
  /** The machine, as a domain that always exists (a simulated machine's domain 0). */
  private readonly machine: PlatformDescriptor;
  private home: Platform | null = null;
  private roles = 0;
  /** Handshakes in progress (see prewarm): the threads stay while any is. */
  private holds = 0;
  private idleTimer: ReturnType<typeof setTimeout> | null = null;
  /** Which worker runs the ring whose (domain, port) this is, for the other end to join. */
  private readonly ports = new Map<string, PoolThread>();
  private readonly retired: EventWaiter[] = [];

  private constructor(
    private readonly key: string,
    d: PlatformDescriptor,
  ) {
    this.machine = d.kind === "sim" ? { ...d, domid: 0 } : d;
  }

  /** Threads running now, of each kind. */
  get threadCount(): { tx: number; rx: number } {
    return { tx: this.threads.tx.length, rx: this.threads.rx.length };
  }

  get roleCount(): number {
    return this.roles;
  }

  /**
   * A handshake is starting: make sure a worker of each kind runs, and keep the threads until
   * the returned release. A thread takes its time to start (seconds under emulation, more with
   * guests competing for the CPUs); started while we wait for the peer, it is ready when the
   * peer is, and the session opens at once. (A Linux netfront in a domU sends nothing until we
   * are Connected: the time we took was time its first frames waited.)
   */
  prewarm(): () => void {
    this.cancelIdleStop();
    this.holds++;
    for (const kind of ["tx", "rx"] as const) if (this.threads[kind].length === 0) this.place(kind);
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.holds--;
      this.maybeIdle();
    };
  }

  /** Put a ring on a worker: bind its port through the worker, send the role, wait until it runs. */
  start(req: RoleRequest): Promise<RoleHandle> {
    this.cancelIdleStop();
    return this.startOwner(req, this.threadFor(req), null);
  }

  /**
   * Two rings on one port (a peer with one event channel for both): the first binds the port
   * through its worker, the second uses it through the same channels. The first's worker,
   * when the port fires, wakes the second's role too; it learns where before the port can
   * fire, so no event is missed. The port is unbound once both rings have left.
   */
  async startPair(first: RoleRequest, second: SharedRoleRequest): Promise<[RoleHandle, RoleHandle]> {
    this.cancelIdleStop();
    const firstThread = this.threadFor(first);
    const thread = this.place(second.ring);
    const slot = thread.allocSlot();
    let owner: RoleHandle;
    try {
      owner = await this.startOwner(first, firstThread, thread.wakeAddress(slot));
    } catch (e) {
      thread.freeSlot(slot);
      this.maybeIdle();
      throw e;
    }
    const init: RingWorkerInit = { ...second.init, platform: second.platform.descriptor, evtchn: owner.init.evtchn, port: owner.port, partner: null };
    try {
      return [owner, await this.launch(thread, slot, init, owner.lease.share(), second.events)];
    } catch (e) {
      await owner.stop({ timeoutMs: 1000 });
      throw e;
    }
  }

  private threadFor(req: RoleRequest): PoolThread {
    const near = req.peerPort === undefined ? undefined : this.ports.get(portKey(req.peerPort.domid, req.peerPort.port));
    return near !== undefined && !near.dead && near.kind === req.ring ? near : this.place(req.ring);
  }

  private async startOwner(req: RoleRequest, thread: PoolThread, partner: WakeAddress | null): Promise<RoleHandle> {
    const slot = thread.allocSlot();
    const evtchn = thread.viewFor(req.platform);
    let port: Port;
    try {
      port = req.bindPort(evtchn);
    } catch (e) {
      thread.freeSlot(slot);
      thread.releaseView(req.platform.domid);
      this.maybeIdle();
      throw e;
    }
    const key = portKey(req.platform.domid, port);
    const lease = new PortLease(evtchn, port, () => {
      thread.releaseView(req.platform.domid);
      this.ports.delete(key);
    });
    this.ports.set(key, thread);
    const init: RingWorkerInit = { ...req.init, platform: req.platform.descriptor, evtchn: evtchn.descriptor, port, partner };
    return this.launch(thread, slot, init, lease, req.events);
  }

  /** Send the role to its worker and wait until it runs. */
  private async launch(thread: PoolThread, slot: number, init: RingWorkerInit, lease: PortLease, events: RingWorkerEvents): Promise<RoleHandle> {
    const h = new RoleHandle(thread, slot, init, lease, events);
    thread.attach(slot, h);
    this.roles++;
    thread.send({ type: "add", slot, init });
    await h.running(ADD_TIMEOUT_MS);
    return h;
  }

  /** A dead worker's waiter: closed when the pool stops (see PoolThread.died). */
  retire(w: EventWaiter): void {
    this.retired.push(w);
  }

  /** The least loaded worker of `kind`, or a new one while fewer run than allowed. */
  private place(kind: RingKind): PoolThread {
    const list = this.threads[kind];
    let best: PoolThread | null = null;
    for (const t of list) if (best === null || t.load < best.load) best = t;
    if (best !== null && (best.load === 0 || list.length >= sizes[kind])) return best;
    this.home ??= openPlatform(this.machine);
    const t = new PoolThread(this, kind, this.home.openEventWaiter(), this.machine);
    list.push(t);
    return t;
  }

  /** A role left: when none is left, stop the threads after a while. */
  roleLeft(): void {
    this.roles--;
    this.maybeIdle();
  }

  private maybeIdle(): void {
    if (this.roles > 0 || this.holds > 0 || this.idleTimer !== null) return;
    this.idleTimer = setTimeout(() => this.stopIfIdle(), IDLE_STOP_MS);
    this.idleTimer.unref?.();
  }

  private cancelIdleStop(): void {
    if (this.idleTimer !== null) clearTimeout(this.idleTimer);
    this.idleTimer = null;
  }

  private stopIfIdle(): void {
    this.idleTimer = null;
    if (this.roles > 0 || this.holds > 0) return;
    for (const kind of ["tx", "rx"] as const) for (const t of this.threads[kind].splice(0)) t.stop();
    for (const w of this.retired.splice(0)) closeQuietly(w);
    this.home?.close();
    this.home = null;
    RingPool.pools.delete(this.key);
  }

  threadDied(t: PoolThread): void {
    const list = this.threads[t.kind];
    const i = list.indexOf(t);
    if (i >= 0) list.splice(i, 1);
    this.roles -= t.roles.size;
    this.maybeIdle();
  }
}

/** Close a worker's waiter; one closed with its machine (a simulated hypervisor gone) has nothing left to release. */
function closeQuietly(w: EventWaiter): void {
  try {
    w.close();
  } catch {
    // Closed already.
  }
}

/**
 * Whether the worker keeps the process alive: while it owns a ring. (Bun's Worker has ref and
 * unref; the DOM's Worker type, which a consumer's tsconfig may use, does not declare them.)
 */
function holdsProcess(w: Worker, on: boolean): void {
  const r = w as unknown as { ref?(): void; unref?(): void };
  if (on) r.ref?.();
  else r.unref?.();
}

function portKey(domid: DomId, port: Port): string {
  return `${domid}:${port}`;
}

function machineKey(d: PlatformDescriptor): string {
  return d.kind === "sim" ? `sim:${(d.params as { id: string }).id}` : d.kind;
}
