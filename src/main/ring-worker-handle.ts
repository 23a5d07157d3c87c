/**
 * The main thread's handle on one ring worker: start it with its init data, kick it, stop it
 * (stop flag + kick, then wait for its last message; terminate only if it does not answer),
 * and hear of peer errors and of an unexpected stop.
 */
import { PlatformError, type EventChannels } from "../platform/types.ts";
import { Control, StopMode, WorkerState } from "../workers/control.ts";
import { FrameQueue } from "../workers/frame-queue.ts";
import type { RingWorkerInit } from "../workers/role.ts";
import type { RingWorkerMessage } from "../workers/ring-worker.ts";

const WORKER_URL = new URL("../workers/ring-worker.ts", import.meta.url).href;

export interface RingWorkerEvents {
  onPeerError(e: Extract<RingWorkerMessage, { type: "peer-error" }>): void;
  /** The worker stopped without being asked (a broken peer, a crash). */
  onUnexpectedStop(failure: string): void;
}

export class RingWorkerHandle {
  readonly control: Control;
  readonly queue: FrameQueue;
  private readonly worker: Worker;
  private stopping = false;
  /** Resolves with the failure (or null) once the worker has stopped. */
  readonly stopped: Promise<string | null>;

  private constructor(
    readonly init: RingWorkerInit,
    private readonly evtchn: EventChannels,
    events: RingWorkerEvents,
    running: (ok: boolean, failure: string | null) => void,
  ) {
    this.control = new Control(init.control);
    // The control block may have served an earlier worker (a reconnect): its counters go on.
    this.control.resetRun();
    this.queue = new FrameQueue(init.queue);
    this.worker = new Worker(WORKER_URL);
    let settle: (f: string | null) => void = () => {};
    this.stopped = new Promise((r) => (settle = r));
    let finished = false;
    const finish = (failure: string | null) => {
      if (finished) return;
      finished = true;
      settle(failure);
      running(false, failure);
      if (!this.stopping) events.onUnexpectedStop(failure ?? `${init.role} worker stopped unexpectedly`);
      this.worker.terminate();
    };
    this.worker.onmessage = (e: MessageEvent<RingWorkerMessage>) => {
      const m = e.data;
      if (m.type === "running") running(true, null);
      else if (m.type === "peer-error") events.onPeerError(m);
      else finish(m.failure);
    };
    // A worker that exits without its last message (killed, or its thread died) is a failure too.
    this.worker.addEventListener("close", () => {
      if (finished) return;
      this.control.fail(`${init.role} worker exited unexpectedly`);
      this.control.setState(WorkerState.failed);
      finish(this.control.failure);
    });
    this.worker.onerror = (e) => {
      this.control.fail(`${init.role} worker error: ${e.message}`);
      this.control.setState(WorkerState.failed);
      finish(this.control.failure);
    };
    this.worker.postMessage(init);
  }

  /** Start a worker; resolves once it runs, rejects if it stops first. */
  static start(init: RingWorkerInit, evtchn: EventChannels, events: RingWorkerEvents): Promise<RingWorkerHandle> {
    return new Promise((resolve, reject) => {
      let handle: RingWorkerHandle | null = null;
      let done = false;
      handle = new RingWorkerHandle(init, evtchn, events, (ok, failure) => {
        if (done) return;
        done = true;
        if (ok) resolve(handle!);
        else reject(new Error(`${init.role} worker did not start: ${failure ?? "stopped"}`));
      });
    });
  }

  /** Wake the worker: it has new work in its queue, or space to continue. */
  kick(): void {
    try {
      this.evtchn.kick();
    } catch (e) {
      // The handle is gone (its domain was destroyed): the worker fails on its next wait with
      // the same ECLOSED, so there is nobody left to wake.
      if (!(e instanceof PlatformError && e.code === "ECLOSED")) throw e;
    }
  }

  /**
   * Ask the worker to stop and wait for it. With `drainMs`, it first takes in what the peer
   * left on the ring (StopMode.drain) for up to that long, then stops at once. Past
   * `timeoutMs` in all it is terminated.
   */
  async stop(opts: { drainMs?: number; timeoutMs?: number } = {}): Promise<string | null> {
    const timeoutMs = Math.max(opts.timeoutMs ?? 5000, 1);
    const drainMs = Math.min(opts.drainMs ?? 0, timeoutMs);
    this.stopping = true;
    if (drainMs > 0) {
      this.control.requestStop(StopMode.drain);
      this.kick();
      const r = await within(this.stopped, drainMs);
      if (r !== TIMED_OUT) return r;
    }
    this.control.requestStop(StopMode.now);
    this.kick();
    const r = await within(this.stopped, timeoutMs - drainMs);
    if (r !== TIMED_OUT) return r;
    this.worker.terminate();
    return `${this.init.role} worker did not stop within ${timeoutMs} ms and was terminated`;
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
