/**
 * What Netfront and Netback share around their data path: a device holds one *session* at a
 * time (the rings, pages, channels and workers of one connection to its peer) while its queues
 * and counters outlive sessions. When the peer leaves, the session ends and, if the device
 * reconnects, a new one is opened; otherwise the device closes for good.
 */
import type { Logger } from "pino";
import type { XenbusState } from "../protocol/xenbus.ts";
import type { Platform, XsWatch } from "../platform/types.ts";
import { createControlState, type ControlState } from "../workers/control.ts";
import { createFrameQueueState, type FrameQueueState } from "../workers/frame-queue.ts";
import type { Cleanup } from "./cleanup.ts";
import { NetDevice, type FlagCodec } from "./device.ts";
import { NetError } from "./errors.ts";
import type { RingWorkerEvents, RingWorkerHandle } from "./ring-worker-handle.ts";
import { readState } from "./xenbus/wait.ts";

const DEFAULT_QUEUE_BYTES = 4 << 20;
/** A worker that spins longer than this is a busy loop, not a wait. */
const MAX_SPIN_MICROS = 10_000;
export const DEFAULT_TIMEOUT_MS = 10_000;
/** Pause between attempts to reconnect, so a peer that keeps failing is not hammered. */
const RECONNECT_BACKOFF_MS = 100;

/** What outlives a session: where the device is, and the queues and counters its workers use. */
export interface DeviceContext {
  platform: Platform;
  /** Our xenstore directory. */
  dir: string;
  timeoutMs: number;
  log: Logger;
  txQueue: FrameQueueState;
  rxQueue: FrameQueueState;
  txControl: ControlState;
  rxControl: ControlState;
  events: RingWorkerEvents;
  /** Aborted when the device closes for good: ends a wait for a peer that is not there. */
  abort: AbortController;
  /** RingWorkerInit.spinMicros for both workers. */
  spinMicros: number;
}

/** One connection to the peer. */
export interface Session {
  sender: RingWorkerHandle;
  receiver: RingWorkerHandle;
  resources: Cleanup;
  sendMax: number;
}

/** A device's context; `onWorkerStop` hears of a worker that stopped unasked. */
export function createContext(
  platform: Platform,
  dir: string,
  opts: { timeoutMs?: number; queueBytes?: number; spinMicros?: number },
  log: Logger,
  onWorkerStop: (failure: string) => void,
): DeviceContext {
  const queueBytes = opts.queueBytes ?? DEFAULT_QUEUE_BYTES;
  const spinMicros = opts.spinMicros ?? 0;
  if (!(Number.isFinite(spinMicros) && spinMicros >= 0 && spinMicros <= MAX_SPIN_MICROS)) {
    throw new RangeError(`spinMicros must be a number of µs in 0..${MAX_SPIN_MICROS}, got ${spinMicros}`);
  }
  return {
    platform,
    dir,
    timeoutMs: opts.timeoutMs ?? DEFAULT_TIMEOUT_MS,
    log,
    txQueue: createFrameQueueState(queueBytes),
    rxQueue: createFrameQueueState(queueBytes),
    txControl: createControlState(),
    rxControl: createControlState(),
    abort: new AbortController(),
    spinMicros,
    events: {
      onPeerError: (m) => log.warn({ code: m.code, field: m.field, value: m.value, suppressed: m.suppressed }, `peer error: ${m.message}`),
      onUnexpectedStop: (failure) => {
        log.error({ failure }, "ring worker stopped; disconnecting");
        onWorkerStop(failure);
      },
    },
  };
}

export abstract class SessionDevice<S extends Session> extends NetDevice {
  protected session: S;
  private watch: XsWatch | null = null;
  /** Set once the device is closing for good. */
  protected closing: Promise<void> | null = null;
  /** A session change in progress (the peer left and we reconnect). */
  protected reconnecting: Promise<void> | null = null;
  private reconnects = 0;

  constructor(
    protected readonly ctx: DeviceContext,
    session: S,
    private readonly reconnect: boolean,
    sendFlags: FlagCodec,
    recvFlags: FlagCodec,
  ) {
    super(session.sender, session.receiver, sendFlags, recvFlags, session.sendMax, ctx.log);
    this.session = session;
  }

  /** Sessions opened after the first one (peer restarts survived). */
  get reconnectCount(): number {
    return this.reconnects;
  }

  /** Open a new session with the (returning) peer. */
  protected abstract openSession(): Promise<S>;
  /** End the current session, releasing what it holds; idempotent. */
  protected abstract closeSession(): Promise<void>;
  /** Get ready for the next session; false: do not reconnect after all (the device closes). */
  protected abstract prepareReconnect(): Promise<boolean>;
  /** Start following the peer's state for the current session. */
  protected abstract followPeer(): Promise<void>;
  /** Close for good (called once). */
  protected abstract close(reason: NetError, flush: boolean): Promise<void>;

  /**
   * Watch the peer's state node for this session; `onState` hears each state read after an
   * event, unless the device is closing, reconnecting, or already on another session.
   */
  protected async watchPeerState(statePath: string, onState: (s: XenbusState) => void): Promise<void> {
    const xs = this.ctx.platform.xenstore;
    const session = this.session;
    this.unwatchPeer();
    this.watch = await xs.watch(statePath, `${this.ctx.dir}#${this.reconnects}`, () => {
      void readState(xs, statePath).then(
        (s) => {
          if (this.closing === null && this.reconnecting === null && this.session === session) onState(s);
        },
        (e) => this.log.warn({ err: e }, "cannot read the peer's state"),
      );
    });
  }

  protected unwatchPeer(): void {
    this.watch?.unwatch();
    this.watch = null;
  }

  /** The peer left: reconnect, or close for good. */
  protected peerLeft(state: XenbusState): void {
    if (!this.reconnect) {
      this.log.info({ state }, "the peer is going away; disconnecting");
      void this.shutdown(new NetError("DISCONNECTED", `the peer went to state ${state}`), false);
      return;
    }
    this.log.info({ state }, "the peer is going away; will reconnect when it comes back");
    this.reconnecting = this.reconnectLoop().finally(() => (this.reconnecting = null));
  }

  private async reconnectLoop(): Promise<void> {
    this.sender.control.setPeerConnected(false);
    await this.closeSession();
    while (this.closing === null) {
      try {
        if (!(await this.prepareReconnect())) {
          void this.shutdown(new NetError("DISCONNECTED", "the device cannot reconnect"), false);
          return;
        }
        const s = await this.openSession();
        if (this.closing !== null) {
          await s.resources.run(this.log);
          return;
        }
        this.session = s;
        this.replaceWorkers(s.sender, s.receiver);
        this.reconnects++;
        await this.followPeer();
        this.log.info({ reconnects: this.reconnects }, "reconnected");
        return;
      } catch (e) {
        if (this.closing !== null) return;
        this.log.warn({ err: e }, "reconnect attempt failed; retrying");
        await Bun.sleep(RECONNECT_BACKOFF_MS);
      }
    }
  }

  protected shutdown(reason: NetError, flush: boolean): Promise<void> {
    if (this.closing === null) {
      this.closing = this.close(reason, flush);
      this.ctx.abort.abort(reason);
    }
    return this.closing;
  }
}
