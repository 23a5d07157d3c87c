/**
 * The main thread's handle on one ring in the pool: its control block and queue, a kick (the
 * role's bit in its worker's WakeBits), and a stop that removes it from the worker (taking in
 * what the peer left on the ring first, when asked) and then unbinds its port. It hears the
 * role's peer errors and its stopping unasked (a broken peer, a crash, the worker gone).
 */
import type { Port } from "../platform/types.ts";
import { Control, WorkerState } from "../workers/control.ts";
import { FrameQueue } from "../workers/frame-queue.ts";
import type { PoolEvent } from "../workers/pool-worker.ts";
import type { RingWorkerInit } from "../workers/role.ts";
import type { PoolThread } from "./pool.ts";
import type { PortLease } from "./port-lease.ts";

export interface RingWorkerEvents {
  onPeerError(e: Extract<PoolEvent, { type: "peer-error" }>): void;
  /** The role stopped without being asked (a broken peer, a crash, its worker gone). */
  onUnexpectedStop(failure: string): void;
}

export class RoleHandle {
  readonly control: Control;
  readonly queue: FrameQueue;
  /** Resolves with the failure (or null) once the role has left its worker. */
  readonly stopped: Promise<string | null>;
  private settle!: (failure: string | null) => void;
  private started!: { resolve: () => void; reject: (e: Error) => void };
  private readonly startedP: Promise<void>;
  private state: "starting" | "running" | "stopping" | "gone" = "starting";
  private released = false;

  constructor(
    private readonly thread: PoolThread,
    private readonly slot: number,
    readonly init: RingWorkerInit,
    /** The role's port: its own, or one it shares with the queue's other ring. */
    readonly lease: PortLease,
    private readonly events: RingWorkerEvents,
  ) {
    this.control = new Control(init.control);
    // The control block may have served an earlier session (a reconnect): its counters go on.
    this.control.resetRun();
    this.queue = new FrameQueue(init.queue);
    this.stopped = new Promise((r) => (this.settle = r));
    this.startedP = new Promise((resolve, reject) => (this.started = { resolve, reject }));
    // A start that fails is reported by running(); keep the rejection from going unhandled meanwhile.
    this.startedP.catch(() => {});
  }

  /** The port the role's events come from (ours: allocated or bound for it). */
  get port(): Port {
    return this.init.port;
  }

  /** The pool worker that runs the role (the fault tests kill it). */
  get worker(): Worker {
    return this.thread.worker;
  }

  /** Resolves once the worker runs the role; rejects if it could not (and releases the port). */
  async running(timeoutMs: number): Promise<void> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const late = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${this.init.role} ring: the pool worker did not take it within ${timeoutMs} ms`)), timeoutMs);
    });
    try {
      await Promise.race([this.startedP, late]);
    } catch (e) {
      await this.stop({ timeoutMs: 1000 });
      throw e;
    } finally {
      clearTimeout(timer);
    }
  }

  /** Wake the role: its queue has work for it, or room. */
  kick(): void {
    if (this.state === "running" || this.state === "stopping") this.thread.kickSlot(this.slot);
  }

  /** What the worker says about this role. */
  onEvent(e: PoolEvent): void {
    switch (e.type) {
      case "added":
        if (this.state === "starting") this.state = "running";
        this.started.resolve();
        break;
      case "add-failed":
        this.control.fail(e.error);
        this.gone(e.error, true);
        this.started.reject(new Error(`${this.init.role} ring did not start: ${e.error}`));
        break;
      case "peer-error":
        this.events.onPeerError(e);
        break;
      case "removed":
        this.gone(e.failure, true);
        break;
      case "failed": {
        const unasked = this.state !== "stopping";
        this.gone(e.failure, true);
        if (unasked) this.events.onUnexpectedStop(e.failure);
        break;
      }
    }
  }

  /** The worker thread is gone, and the role with it. */
  workerDied(why: string): void {
    const failure = `${this.init.role} ring: ${why}`;
    this.control.fail(failure);
    this.control.setState(WorkerState.failed);
    const unasked = this.state !== "stopping";
    this.gone(this.control.failure, false);
    this.started.reject(new Error(failure));
    if (unasked) this.events.onUnexpectedStop(failure);
  }

  private gone(failure: string | null, reuseSlot: boolean): void {
    if (this.state === "gone") return;
    this.state = "gone";
    this.thread.detach(this.slot, reuseSlot);
    this.settle(failure);
  }

  /**
   * Remove the role from its worker and wait for it. With `drainMs`, it first takes in what
   * the peer left on the ring (for up to that long), then stops at once. Past `timeoutMs` in
   * all, it is given up on (a worker that does not answer: its slot is not used again).
   * Then it lets go of its port (unbound once no ring uses it). Returns the role's failure, if it had one.
   */
  async stop(opts: { drainMs?: number; timeoutMs?: number } = {}): Promise<string | null> {
    const timeoutMs = Math.max(opts.timeoutMs ?? 5000, 1);
    const drainMs = Math.min(opts.drainMs ?? 0, timeoutMs);
    let result: string | null;
    if (this.state === "gone") result = await this.stopped;
    else {
      this.state = "stopping";
      this.thread.send({ type: "remove", slot: this.slot, drain: drainMs > 0 });
      let r = await within(this.stopped, drainMs > 0 ? drainMs : timeoutMs);
      if (r === TIMED_OUT && drainMs > 0) {
        this.thread.send({ type: "remove", slot: this.slot, drain: false });
        r = await within(this.stopped, timeoutMs - drainMs);
      }
      if (r === TIMED_OUT) {
        result = `${this.init.role} ring: its pool worker did not let go of it within ${timeoutMs} ms`;
        this.control.fail(result);
        this.gone(result, false);
      } else result = r;
    }
    this.releasePort();
    return result;
  }

  private releasePort(): void {
    if (this.released) return;
    this.released = true;
    this.lease.release();
  }
}

const TIMED_OUT = Symbol("timed out");

/** `p`, or TIMED_OUT if it has not settled within `ms`. */
async function within<T>(p: Promise<T>, ms: number): Promise<T | typeof TIMED_OUT> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const t = new Promise<typeof TIMED_OUT>((r) => (timer = setTimeout(() => r(TIMED_OUT), Math.max(0, ms))));
  try {
    return await Promise.race([p, t]);
  } finally {
    clearTimeout(timer);
  }
}
