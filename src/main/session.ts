/**
 * What Netfront and Netback share around their data path: a device holds one *session* at a
 * time (the rings, pages, channels and workers of one connection to its peer) while its queues
 * and counters outlive sessions. When the peer leaves or breaks a ring, the session ends and,
 * if the device reconnects, a new one is opened; otherwise the device closes for good.
 *
 * Closing for good (disconnect, or the peer gone without reconnect) runs under one deadline,
 * `timeoutMs`: flush what was written (at most half of it), end the session, account for
 * every frame that did not make it.
 */
import type { Logger } from "pino";
import { XenbusState, xenbusStateName } from "../protocol/xenbus.ts";
import type { DeviceClaim, Platform, XenStore, XsWatch } from "../platform/types.ts";
import { Counter, createControlState } from "../workers/control.ts";
import { createFrameQueueState } from "../workers/frame-queue.ts";
import type { Cleanup } from "./cleanup.ts";
import { NetDevice, type DataPath, type FlagCodec, type QueuePath } from "./device.ts";
import { NetError } from "./errors.ts";
import type { CheckedOptions } from "./options.ts";
import { RingPool, type RoleRequest } from "./pool.ts";
import type { RingWorkerEvents, RoleHandle } from "./role-handle.ts";
import type { WakeBitsState } from "../workers/wake-bits.ts";
import { HandshakeError } from "./xenbus/errors.ts";
import { Deadline, readState, setState } from "./xenbus/wait.ts";
import { Link, type LinkEvent, type LinkListener, type LinkState } from "./link.ts";
import type { MetricLabels } from "./metrics.ts";

/**
 * What a queue may hold by default (its window): enough for a burst (43 frames of 1514 bytes,
 * a thousand of 64) without each device keeping megabytes busy. The ring behind it holds 256
 * frames more.
 */
export const DEFAULT_QUEUE_BYTES = 64 << 10;
/**
 * The largest record a queue must carry: a back end receives TX packets of up to 65535 bytes,
 * a front end RX packets of a 64 KiB payload plus its header. A record never wraps, so the
 * queue's (virtual) capacity holds at least two of them, and one beside a full window.
 */
const MAX_RECORD = 65536 + 14 + 8;
/** Pause between attempts to reconnect, so a peer that keeps failing is not hammered. */
const RECONNECT_BACKOFF_MS = 100;

/** What outlives a session: where the device is, and the queues and counters its workers use. */
export interface DeviceContext {
  platform: Platform;
  /** Our xenstore directory. */
  dir: string;
  timeoutMs: number;
  log: Logger;
  /** Every queue pair the device may use (a session uses the first `n` it negotiates). */
  queues: ContextQueue[];
  events: RingWorkerEvents;
  /** Aborted when the device closes for good: ends a wait for a peer that is not there. */
  abort: AbortController;
  /**
   * What ends a handshake wait: the device closing, or the caller's signal while connect or
   * serve is in progress (it is dropped once they resolve). Its bound: `handshakeMs`.
   */
  handshakeSignal: AbortSignal;
  handshakeMs: number;
  /** RingWorkerInit.spinMicros for both workers. */
  spinMicros: number;
  /** Split event channels allowed (the option); used only when the peer allows them too. */
  splitEventChannels: boolean;
  /** We offer scatter-gather (the option): the peer may send us packets of several slots. */
  scatterGather: boolean;
  /** We offer GSO and send it where the peer offers it (the option). */
  gso: boolean;
  /** A Netfront's data pages per direction over all queues (NetfrontOptions.dataPages). */
  dataPages: number;
  /** Our hold on the device; released when it closes for good. */
  claim: DeviceClaim;
  /** We opened the platform (none was passed): it closes with the device. */
  ownsPlatform: boolean;
  /** The machine's ring worker pool. */
  pool: RingPool;
  path: DataPath;
}

/** One queue pair as a session's rings need it: queues, control blocks, doorbell bits. */
export interface ContextQueue extends QueuePath {
  sendBell: { bits: WakeBitsState; index: number };
  recvBell: { bits: WakeBitsState; index: number };
}

/** One connection to the peer. */
export interface Session {
  /** Per queue of this session: the ring we send on and the one we receive from. */
  senders: RoleHandle[];
  receivers: RoleHandle[];
  resources: Cleanup;
  /** Largest frame we may send in this session, Ethernet header included. */
  sendMax: number;
  mtu: number;
  /** The peer takes GSO packets of each type from us in this session (it offered them, and we may send them). */
  gso: { tcpv4: boolean; tcpv6: boolean };
}

/**
 * A queue's capacity for a window: a power of two with room for the window plus the largest
 * record, and for two of the largest records, so a queue always carries every frame the device
 * may move. Only the pages a queue uses are ever committed (see FrameQueue).
 */
export function queueCapacity(window = DEFAULT_QUEUE_BYTES): number {
  return 1 << Math.ceil(Math.log2(Math.max(2 * MAX_RECORD, window + MAX_RECORD)));
}

/**
 * Put one queue's two rings on the pool, each stopped with the session's resources: with
 * `split`, each on its own port; otherwise on one port, which the first ring binds. Returns
 * [first, second].
 */
export async function startQueue(ctx: DeviceContext, res: Cleanup, q: number, split: boolean, first: RoleRequest, second: RoleRequest): Promise<[RoleHandle, RoleHandle]> {
  const stopWith = (h: RoleHandle, ring: string) => res.add(`stop the ${ring} ring of queue ${q}`, () => h.stop());
  if (split) {
    const a = await ctx.pool.start(first);
    stopWith(a, first.ring);
    const b = await ctx.pool.start(second);
    stopWith(b, second.ring);
    return [a, b];
  }
  const pair = await ctx.pool.startPair(first, second);
  stopWith(pair[0], first.ring);
  stopWith(pair[1], second.ring);
  return pair;
}

/** Claim the device at `dir` for this device's life: IN_USE when someone else has it. */
export function claimDevice(platform: Platform, dir: string, what: string): DeviceClaim {
  const claim = platform.claimDevice(dir);
  if (claim === null) {
    throw new NetError("IN_USE", `${dir} is in use by another ${what} on this machine; disconnect it first (the live connection was not touched)`);
  }
  return claim;
}

/**
 * A device's context, with `queues` queue pairs (the most it may negotiate); `onWorkerStop`
 * hears of a ring that stopped unasked.
 */
export function createContext(
  platform: Platform,
  dir: string,
  opts: CheckedOptions,
  queues: number,
  hold: { claim: DeviceClaim; ownsPlatform: boolean },
  log: Logger,
  onWorkerStop: (failure: string) => void,
): DeviceContext {
  const window = opts.queueBytes ?? DEFAULT_QUEUE_BYTES;
  const capacity = queueCapacity(window);
  const pool = RingPool.for(platform);
  const bits = pool.doorbell.state;
  const abort = new AbortController();
  // The bells exist before the device does (the first session opens first): they forward to
  // the handlers the device attaches.
  const handlers: { send: () => void; recv: () => void }[] = [];
  const bellIndices: number[] = [];
  const qs: ContextQueue[] = Array.from({ length: queues }, (_, i) => {
    handlers.push({ send: () => {}, recv: () => {} });
    const send = pool.doorbell.register(() => handlers[i]!.send());
    const recv = pool.doorbell.register(() => handlers[i]!.recv());
    bellIndices.push(send, recv);
    return {
      send: createFrameQueueState(capacity, window),
      recv: createFrameQueueState(capacity, window),
      sendControl: createControlState(),
      recvControl: createControlState(),
      sendBell: { bits, index: send },
      recvBell: { bits, index: recv },
    };
  });
  return {
    platform,
    dir,
    timeoutMs: opts.timeoutMs,
    log,
    queues: qs,
    pool,
    path: {
      queues: qs,
      attach(i, s, r) {
        handlers[i] = { send: s, recv: r };
      },
      detach() {
        for (const b of bellIndices) pool.doorbell.unregister(b);
      },
    },
    abort,
    handshakeSignal: opts.signal === undefined ? abort.signal : AbortSignal.any([abort.signal, opts.signal]),
    handshakeMs: opts.timeoutMs,
    spinMicros: opts.spinMicros,
    splitEventChannels: opts.splitEventChannels,
    scatterGather: opts.scatterGather,
    gso: opts.gso,
    dataPages: 0,
    ...hold,
    events: {
      onPeerError: (m) => log.warn({ code: m.code, field: m.field, value: m.value, suppressed: m.suppressed }, `peer error: ${m.message}`),
      onUnexpectedStop: (failure) => {
        log.error({ failure }, "ring worker stopped; ending the session");
        onWorkerStop(failure);
      },
    },
  };
}

/**
 * Tell the peer we give up on this connection attempt, as Linux's xenbus_dev_fatal does:
 * Closing, then Closed, so it learns at once instead of waiting out its own timeout.
 */
export async function giveUp(xs: XenStore, dir: string): Promise<void> {
  await setState(xs, dir, XenbusState.Closing).catch(() => false);
  await setState(xs, dir, XenbusState.Closed).catch(() => false);
}

/** Failures of a connection attempt that say nothing to the peer: nothing was negotiated yet. */
export function nothingToTell(e: unknown): boolean {
  return e instanceof HandshakeError && (e.code === "TIMEOUT" || e.code === "ABORTED" || e.code === "GONE" || e.code === "NO_DEVICE");
}

export abstract class SessionDevice<S extends Session> extends NetDevice {
  protected session: S;
  private watch: XsWatch | null = null;
  /** Set once the device is closing for good. */
  protected closing: Promise<void> | null = null;
  /** A session change in progress (the peer left and we reconnect). */
  protected reconnecting: Promise<void> | null = null;
  private reconnects = 0;
  private settleClosed!: (reason: NetError) => void;
  /** Resolves, with why, once the device has closed for good and released everything. */
  readonly closed: Promise<NetError> = new Promise((r) => (this.settleClosed = r));

  constructor(
    protected readonly ctx: DeviceContext,
    session: S,
    private readonly reconnect: boolean,
    sendFlags: FlagCodec,
    recvFlags: FlagCodec,
  ) {
    super(session.senders, session.receivers, sendFlags, recvFlags, ctx.log, ctx.path);
    this.session = session;
    // A back end's first session is up before the device exists (nobody can hear it yet).
    if (this.sendGateOpen) this.link.emit("up", { type: "connected", at: Date.now() });
  }

  private readonly link = new Link();

  /** Which end this is, and the other end's domain: for the labels of metrics. */
  protected abstract readonly role: "netfront" | "netback";
  protected abstract get peerDomid(): number;

  /** Who this device is, as metrics label it (see prometheusText). */
  get metricLabels(): MetricLabels {
    return { role: this.role, domid: this.ctx.platform.domid, peer: this.peerDomid, devid: Number(this.ctx.dir.slice(this.ctx.dir.lastIndexOf("/") + 1)) };
  }

  /** Where the link is now: connecting (first session not up yet), up, reconnecting, closed. */
  get linkState(): LinkState {
    return this.link.state;
  }

  /**
   * Hear the link's changes from now on: connected, lost (with why), reconnecting,
   * reconnected, closed (with the NetError it closed with). Returns a function that stops it.
   */
  onLink(cb: LinkListener): () => void {
    return this.link.on(cb);
  }

  /** The link's changes from now on, as an async iterator; ends after `closed` or when `signal` aborts. */
  linkEvents(opts: { signal?: AbortSignal } = {}): AsyncIterableIterator<LinkEvent> {
    return this.link.iterate(opts?.signal);
  }

  /** The peer lets us send again: the session is up. */
  protected override setSendGate(open: boolean): void {
    super.setSendGate(open);
    if (open) this.linkUp();
  }

  private linkUp(): void {
    const at = Date.now();
    this.link.emit("up", this.reconnects === 0 ? { type: "connected", at } : { type: "reconnected", at, reconnects: this.reconnects });
  }

  get maxFrameSize(): number {
    return this.session.sendMax;
  }

  protected override peerTakesGso(type: number): boolean {
    return type === 1 ? this.session.gso.tcpv4 : type === 2 && this.session.gso.tcpv6;
  }

  /**
   * Connected to a peer now: not closed, no session change in progress, and the peer's end of
   * this session Connected (false while the peer is gone and we wait to reconnect).
   */
  override get connected(): boolean {
    return super.connected && this.closing === null && this.reconnecting === null && this.sendGateOpen;
  }

  /** The vif's MTU (Ethernet payload), as negotiated for the current session. */
  get mtu(): number {
    return this.session.mtu;
  }

  /** Close the device for good, delivering what was written first (see the subclasses). */
  abstract disconnect(): Promise<void>;

  /** `await using dev = await Netfront.connect(...)`: disconnected when the scope ends. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.disconnect();
  }

  /** Sessions opened after the first one (peer restarts survived). */
  get reconnectCount(): number {
    return this.reconnects;
  }

  /** Open a new session with the (returning) peer. */
  protected abstract openSession(): Promise<S>;
  /** End the current session within `d`, releasing what it holds; idempotent. */
  protected abstract closeSession(d: Deadline): Promise<void>;
  /** Get ready for the next session; an error: do not reconnect after all (the device closes with it). */
  protected abstract prepareReconnect(): Promise<NetError | null>;
  /** Start following the peer's state for the current session. */
  protected abstract followPeer(): Promise<void>;

  /**
   * Watch the peer's state node for this session; `onState` hears each state read after an
   * event, unless the device is closing, reconnecting, or already on another session. A value
   * that is not a state reads as Unknown, as Linux's xenbus_read_driver_state has it.
   */
  protected async watchPeerState(statePath: string, onState: (s: XenbusState) => void): Promise<void> {
    const xs = this.ctx.platform.xenstore;
    const session = this.session;
    this.unwatchPeer();
    this.watch = await xs.watch(statePath, `${this.ctx.dir}#${this.reconnects}`, () => {
      void readState(xs, statePath).then(
        (s) => this.current(session) && onState(s),
        (e) => {
          if (!this.current(session)) return;
          if (e instanceof HandshakeError && e.code === "BAD_STATE") {
            this.log.warn({ path: statePath, value: e.value }, "the peer's state does not parse; taking it as Unknown");
            onState(XenbusState.Unknown);
          } else {
            this.log.warn({ err: e }, "cannot read the peer's state");
          }
        },
      );
    });
  }

  private current(session: S): boolean {
    return this.closing === null && this.reconnecting === null && this.session === session;
  }

  protected unwatchPeer(): void {
    this.watch?.unwatch();
    this.watch = null;
  }

  /** The peer left. */
  protected peerLeft(state: XenbusState): void {
    this.sessionEnded(`the peer went to state ${xenbusStateName(state)}`);
  }

  /** A worker of the current session stopped on its own (a broken ring, a crash). */
  protected workerStopped(failure: string): void {
    this.sessionEnded(`ring worker stopped: ${failure}`);
  }

  /** The session is over: reconnect, or close for good. */
  private sessionEnded(why: string): void {
    if (this.closing !== null || this.reconnecting !== null) return;
    this.link.emit(this.reconnect ? "reconnecting" : "closed", { type: "lost", at: Date.now(), reason: why });
    if (!this.reconnect) {
      this.log.info({ why }, "the session ended; disconnecting");
      void this.shutdown(new NetError("DISCONNECTED", why), false);
      return;
    }
    this.link.emit("reconnecting", { type: "reconnecting", at: Date.now(), reason: why });
    this.log.info({ why }, "the session ended; will reconnect when the peer comes back");
    this.reconnecting = this.reconnectLoop().finally(() => (this.reconnecting = null));
  }

  /** End the session; returns how many frames in flight were lost with it. */
  private async endSession(d: Deadline): Promise<number> {
    const lost = () => this.senders.reduce((n, s) => n + s.control.get(Counter.lost), 0);
    const before = lost();
    await this.closeSession(d);
    return lost() - before;
  }

  /** Our directory is gone: the toolstack removed the vif (we never remove it, and write only into it). */
  protected async removed(): Promise<NetError | null> {
    const statePath = `${this.ctx.dir}/state`;
    const v = await this.ctx.platform.xenstore.read(statePath).catch(() => "");
    return v === null ? new NetError("REMOVED", `the toolstack removed the vif (${statePath} is gone); it will not come back`) : null;
  }

  private async reconnectLoop(): Promise<void> {
    this.setSendGate(false);
    const lost = await this.endSession(new Deadline({ timeoutMs: this.ctx.timeoutMs, signal: this.ctx.abort.signal }));
    if (lost > 0) this.log.warn({ frames: lost }, "frames in flight were not delivered: the session ended before the peer answered them");
    // While we wait for the peer, the toolstack may remove the vif: that ends the wait at once.
    const xs = this.ctx.platform.xenstore;
    const gone = new AbortController();
    const statePath = `${this.ctx.dir}/state`;
    const watch = await xs
      .watch(statePath, `${this.ctx.dir}#removed`, () => {
        void xs.read(statePath).then(
          (v) => v === null && gone.abort(),
          () => {},
        );
      })
      .catch(() => null);
    const handshake = this.ctx.handshakeSignal;
    this.ctx.handshakeSignal = AbortSignal.any([handshake, gone.signal]);
    try {
      await this.reconnectAttempts();
    } finally {
      watch?.unwatch();
      this.ctx.handshakeSignal = handshake;
    }
  }

  private async reconnectAttempts(): Promise<void> {
    while (this.closing === null) {
      try {
        const refused = (await this.removed()) ?? (await this.prepareReconnect());
        if (refused !== null) {
          this.log.info({ why: refused.message }, "not reconnecting; closing");
          void this.shutdown(refused, false);
          return;
        }
        const s = await this.openSession();
        if (this.closing !== null) {
          await s.resources.run(this.log);
          return;
        }
        this.session = s;
        this.replaceWorkers(s.senders, s.receivers);
        this.reconnects++;
        await this.followPeer();
        // A back end's session is up once open; a front end's when its back end is Connected.
        if (this.sendGateOpen) this.linkUp();
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

  /**
   * Close for good, all within timeoutMs: let a reconnect in progress wind down, send what
   * was written (at most half the time), end the session (the workers take in what the peer
   * left on the rings), deliver or count every frame, let go of the device.
   */
  private async close(reason: NetError, flush: boolean): Promise<void> {
    const d = new Deadline({ timeoutMs: this.ctx.timeoutMs });
    // A reconnect in progress sees `closing` (and the abort) and gives up; let it finish first.
    await this.reconnecting;
    if (flush && this.sendGateOpen) await this.flush(d.remaining() / 2);
    this.closedError ??= reason;
    this.startClosingReceive();
    const lost = await this.endSession(d);
    // Closed even when no session was open (a reconnect was waiting for the peer).
    await setState(this.ctx.platform.xenstore, this.ctx.dir, XenbusState.Closed).catch((e) => this.log.warn({ err: e }, "cannot write Closed"));
    await this.stopDataPath(reason, lost);
    this.ctx.claim.release();
    if (this.ctx.ownsPlatform) this.ctx.platform.close();
    this.log.info("disconnected");
    const why = this.closedError ?? reason;
    this.link.emitClosed(why);
    this.settleClosed(why);
  }
}
