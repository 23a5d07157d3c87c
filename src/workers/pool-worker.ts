/**
 * A pool worker: one thread that owns many rings (their roles), of one kind (TX or RX rings).
 * It blocks on one event-channel handle (an EventWaiter) that the ports of all its roles are
 * bound through, and wakes when a port fires or when another thread sets its role's bit in the
 * worker's WakeBits (the main thread: "your queue has frames", "there is room"; bit 0: "read
 * your commands"). On waking it polls only those roles, and each role that runs out of work
 * arms its ring and queue (prepareSleep) and leaves the active list: nothing scans every ring.
 *
 * Roles join and leave with commands over a MessagePort (add, remove with or without a drain),
 * read with receiveMessageOnPort, so the loop never has to return to the event loop. A role
 * that breaks (a fatal peer error, a bug) is finished and reported alone; the others go on.
 * The worker owns no resources: the main thread shared or mapped the pages and bound the ports,
 * and releases them once it hears the role is gone.
 */
import { receiveMessageOnPort, type MessagePort } from "node:worker_threads";
import { openPlatform, platformOpener } from "../platform/open.ts";
import type { EventWaiter, Platform, PlatformDescriptor } from "../platform/types.ts";
import { ProtocolError } from "../protocol/errors.ts";
import { PeerBroken } from "./back-tx.ts";
import { Control, Counter, WorkerState } from "./control.ts";
import { FrameQueue } from "./frame-queue.ts";
import { PeerNotifier, type RingRole, type RingWorkerInit } from "./role.ts";
import { makeRole, MAX_SLEEP_MS, SPIN_POLLS } from "./role-loop.ts";
import { WakeBits, type WakeBitsState } from "./wake-bits.ts";

/** Bit 0 of a worker's WakeBits: commands are waiting on its port. */
export const COMMAND_SLOT = 0;

export interface PoolWorkerStart {
  /** Where the main thread's commands arrive. */
  port: MessagePort;
  pending: WakeBitsState;
  /** The machine (any domain's descriptor) and the waiter the main thread opened for us. */
  platform: PlatformDescriptor;
  waiter: unknown;
}

export type PoolCommand =
  | { type: "add"; slot: number; init: RingWorkerInit }
  | { type: "remove"; slot: number; drain: boolean }
  /** Leave the loop (the pool is idle): the thread then ends by itself. */
  | { type: "exit" };

export type PoolEvent =
  | { type: "added"; slot: number }
  | { type: "add-failed"; slot: number; error: string }
  /** Removed as asked; `failure` if it had failed meanwhile. */
  | { type: "removed"; slot: number; failure: string | null }
  /** Stopped on its own: a fatal peer error or a crash. */
  | { type: "failed"; slot: number; failure: string }
  | { type: "peer-error"; slot: number; code: string; field: string; value: number | string; message: string; suppressed: number };

/** Peer errors reported per role and second at most; the rest are counted, not posted. */
const ERROR_REPORTS_PER_SEC = 10;
/** While the worker is busy, fired ports are collected every this many passes (a read(2) on Xen). */
const PORT_CHECK_EVERY = 8;

interface Slot {
  role: RingRole;
  ctl: Control;
  /** (domid << 16) | port: where its events come from. */
  portKey: number;
  platformKey: string;
  draining: boolean;
  /** Passes in a row that moved nothing. */
  idle: number;
  spinMicros: number;
  /** The role on another worker that shares this role's port (see RingWorkerInit.partner). */
  partner: { bits: WakeBits; index: number; waiter: EventWaiter } | null;
}

type Post = (e: PoolEvent) => void;

export class PoolWorker {
  private readonly slots: (Slot | undefined)[] = [];
  private active: number[] = [];
  private spare: number[] = [];
  private readonly isActive: number[] = [];
  private readonly portSlots = new Map<number, number>();
  private readonly platforms = new Map<string, { platform: Platform; refs: number }>();
  private readonly pending: WakeBits;
  private readonly waiter: EventWaiter;
  private readonly machine: Platform;
  private readonly fired: number[] = [];
  private readonly kicked: number[] = [];
  private spinMicros = 0;
  /** Roles asleep that asked to be polled again at `timedAt` (see RingRole.pollAfterMs). */
  private timed: number[] = [];
  private timedAt = Infinity;
  private passes = 0;
  /** The main thread said exit: the loop ends after this pass. */
  private exiting = false;
  private idleLimit = SPIN_POLLS;
  private readonly open = platformOpener();

  constructor(
    private readonly start: PoolWorkerStart,
    private readonly post: Post,
  ) {
    this.pending = new WakeBits(start.pending);
    this.machine = openPlatform(start.platform);
    this.waiter = this.machine.openEventWaiter(start.waiter);
  }

  /** The worker's life, until the main thread says exit. */
  run(): void {
    while (!this.exiting) this.step(MAX_SLEEP_MS);
  }

  /** One pass: take kicks and events, poll the active roles, or sleep (at most `sleepMs`). */
  step(sleepMs: number): void {
    if (this.timed.length > 0 && performance.now() >= this.timedAt) this.fireTimed();
    this.takeKicks();
    if (this.active.length === 0 || this.passes++ % PORT_CHECK_EVERY === 0) this.takePorts(0);
    if (this.active.length > 0) {
      this.pollActive();
      return;
    }
    if (this.spinMicros > 0) {
      const until = performance.now() + this.spinMicros / 1000;
      while (performance.now() < until && !this.pending.any()) {
        this.takePorts(0);
        if (this.active.length > 0) return;
      }
    }
    const wait = this.timed.length === 0 ? sleepMs : Math.max(0, Math.min(sleepMs, Math.ceil(this.timedAt - performance.now())));
    this.pending.setSleeping(true);
    if (!this.pending.any()) this.takePorts(wait);
    this.pending.setSleeping(false);
  }

  private fireTimed(): void {
    const list = this.timed;
    this.timed = [];
    this.timedAt = Infinity;
    for (const slot of list) this.activate(slot);
  }

  get roles(): number {
    return this.portSlots.size;
  }

  // ---- commands ----------------------------------------------------------------------------

  private takeKicks(): void {
    for (const slot of this.pending.take(this.kicked)) {
      if (slot === COMMAND_SLOT) this.commands();
      else this.activate(slot);
    }
  }

  private commands(): void {
    for (let m = receiveMessageOnPort(this.start.port); m !== undefined; m = receiveMessageOnPort(this.start.port)) {
      const c = m.message as PoolCommand;
      if (c.type === "add") this.add(c.slot, c.init);
      else if (c.type === "remove") this.remove(c.slot, c.drain);
      else this.exiting = true;
    }
  }

  add(slot: number, init: RingWorkerInit): void {
    let platformKey = "";
    try {
      platformKey = this.platformRef(init.platform);
      const platform = this.platforms.get(platformKey)!.platform;
      const evtchn = platform.openEventChannels(init.evtchn);
      const q = new FrameQueue(init.queue);
      const ctl = new Control(init.control);
      const kick = new PeerNotifier(evtchn, init.port, ctl);
      const role = makeRole(init, q, ctl, kick, platform.gnttab, this.reporter(slot));
      const portKey = (init.platform.domid << 16) | init.port;
      const p = init.partner;
      const partner = p === undefined || p === null ? null : { bits: new WakeBits(p.bits), index: p.index, waiter: this.machine.openEventWaiter(p.waiter) };
      this.slots[slot] = { role, ctl, portKey, platformKey, draining: false, idle: 0, spinMicros: init.spinMicros, partner };
      this.portSlots.set(portKey, slot);
      this.spinMicros = Math.max(this.spinMicros, init.spinMicros);
      ctl.setState(WorkerState.running);
      this.post({ type: "added", slot });
      this.activate(slot);
    } catch (e) {
      if (platformKey !== "") this.platformUnref(platformKey);
      this.post({ type: "add-failed", slot, error: describe(e) });
    }
  }

  remove(slot: number, drain: boolean): void {
    const s = this.slots[slot];
    if (s === undefined) {
      // Already gone (it failed on its own, and said so): the answer the main thread waits for.
      this.post({ type: "removed", slot, failure: null });
      return;
    }
    if (drain) {
      s.draining = true;
      this.activate(slot);
    } else {
      this.finish(slot, null);
      this.post({ type: "removed", slot, failure: null });
    }
  }

  // ---- the data path -----------------------------------------------------------------------

  private takePorts(timeoutMs: number): void {
    const f = this.waiter.wait(timeoutMs, this.fired);
    for (let i = 0; i < f.length; i += 2) {
      const domid = f[i]!;
      const port = f[i + 1]!;
      // Events carry no news: re-armed at once, the role re-reads its ring when polled.
      this.waiter.unmask(domid, port);
      const slot = this.portSlots.get((domid << 16) | port);
      if (slot === undefined) continue;
      this.activate(slot);
      const partner = this.slots[slot]?.partner;
      if (partner != null) wakePartner(partner);
    }
  }

  private activate(slot: number): void {
    const s = this.slots[slot];
    if (s === undefined || this.isActive[slot] === 1) return;
    this.isActive[slot] = 1;
    s.idle = 0;
    this.active.push(slot);
    s.role.woke();
  }

  private pollActive(): void {
    const list = this.active;
    this.active = this.spare;
    this.spare = list;
    // A role with nothing to do stays a few passes (its peer may answer within µs) before it is
    // armed: SPIN_POLLS passes shared out among the active roles, since each pass polls them all.
    this.idleLimit = Math.max(1, SPIN_POLLS / list.length);
    for (let i = 0; i < list.length; i++) {
      const slot = list[i]!;
      const s = this.slots[slot];
      if (s === undefined) continue;
      if (this.pollOne(slot, s)) this.active.push(slot);
      else this.isActive[slot] = 0;
    }
    list.length = 0;
  }

  /** Poll one role; true while it stays active. */
  private pollOne(slot: number, s: Slot): boolean {
    const role = s.role;
    try {
      if (s.draining ? role.drain() : role.poll()) {
        s.idle = 0;
        return true;
      }
      if (s.draining && !role.blocked) {
        this.finish(slot, null);
        this.post({ type: "removed", slot, failure: null });
        return false;
      }
      // Idle: a few more passes, then arm it and let it sleep.
      if (++s.idle < this.idleLimit) return true;
      if (role.prepareSleep()) {
        role.woke();
        s.idle = 0;
        return true;
      }
      s.ctl.add(Counter.sleeps, 1);
      const after = role.pollAfterMs ?? 0;
      if (after > 0) {
        this.timed.push(slot);
        this.timedAt = Math.min(this.timedAt, performance.now() + after);
      }
      return false;
    } catch (e) {
      this.failRole(slot, s, e);
      return false;
    }
  }

  private failRole(slot: number, s: Slot, e: unknown): void {
    const broken = e instanceof PeerBroken || e instanceof ProtocolError;
    // A fatal peer error is a peer error too: counted, as the ones that only drop a packet.
    if (broken) s.ctl.add(Counter.errors, 1);
    const failure = broken ? (e as Error).message : `a ring role crashed: ${String((e as Error)?.stack ?? e)}`;
    s.ctl.fail(failure);
    const draining = s.draining;
    this.finish(slot, failure);
    // A role that was being removed answers the removal; otherwise the main thread hears of it now.
    this.post(draining ? { type: "removed", slot, failure } : { type: "failed", slot, failure });
  }

  /** The role leaves: it accounts for what the peer will never answer, and is forgotten. */
  private finish(slot: number, failure: string | null): void {
    const s = this.slots[slot];
    if (s === undefined) return;
    try {
      s.role.finish();
    } catch {
      // Accounting only; the role is gone either way.
    }
    s.ctl.setState(failure === null ? WorkerState.stopped : WorkerState.failed);
    this.slots[slot] = undefined;
    this.isActive[slot] = 0;
    this.portSlots.delete(s.portKey);
    this.platformUnref(s.platformKey);
    if (s.spinMicros >= this.spinMicros) {
      this.spinMicros = 0;
      for (const o of this.slots) if (o !== undefined) this.spinMicros = Math.max(this.spinMicros, o.spinMicros);
    }
  }

  // ---- platforms and reports -----------------------------------------------------------------

  /** A view of the role's domain, shared by the roles of that domain on this worker. */
  private platformRef(d: PlatformDescriptor): string {
    const key = platformKey(d);
    const e = this.platforms.get(key);
    if (e !== undefined) e.refs++;
    else this.platforms.set(key, { platform: this.open(d), refs: 1 });
    return key;
  }

  private platformUnref(key: string): void {
    const e = this.platforms.get(key);
    if (e === undefined || --e.refs > 0) return;
    this.platforms.delete(key);
    e.platform.close();
  }

  /** Post a role's peer errors to the main thread (which logs them), at most ERROR_REPORTS_PER_SEC. */
  private reporter(slot: number): (e: ProtocolError) => void {
    let windowStart = 0;
    let sent = 0;
    let suppressed = 0;
    return (e) => {
      const now = performance.now();
      if (now - windowStart >= 1000) {
        windowStart = now;
        sent = 0;
      }
      if (sent >= ERROR_REPORTS_PER_SEC) {
        suppressed++;
        return;
      }
      sent++;
      this.post({ type: "peer-error", slot, code: e.code, field: e.field, value: e.value, message: e.message, suppressed });
      suppressed = 0;
    };
  }
}

/** The port fired for both rings of a queue: wake the other ring's role on its worker. */
function wakePartner(p: NonNullable<Slot["partner"]>): void {
  try {
    if (p.bits.set(p.index)) p.waiter.kick();
  } catch {
    // Its worker is gone (its waiter closed with its machine): its role went with it.
  }
}

/** Which machine and domain a descriptor views (a simulated machine by its id). */
function platformKey(d: PlatformDescriptor): string {
  return d.kind === "sim" ? `sim:${(d.params as { id: string }).id}:${d.domid}` : `${d.kind}:${d.domid}`;
}

function describe(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}
