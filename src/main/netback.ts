/**
 * Netback: serves a vif to a front-end domain. It offers its features and goes InitWait, waits
 * for the front end's keys, maps the two ring pages (the only mappings: packet data moves by
 * grant copy), binds the event channels, starts the workers and goes Connected. Its own MAC is
 * fe:ff:ff:ff:ff:ff, as Linux netback's; the front end's is `peerMac`.
 *
 * One connection to a front end is a *session*; the queues and counters outlive it. By default
 * the device closes when its front end leaves. With `reconnect`, it does what Linux netback
 * does while the vif stays online: it lets go of everything, offers the vif again (InitWait)
 * and serves the next front end (a rebooted guest), frames written meanwhile waiting for it.
 */
import type { Logger } from "pino";
import { ETH_HLEN, MAX_PACKET_SIZE } from "../protocol/netif.ts";
import { backendDir, FRONT_KEYS, XenbusState } from "../protocol/xenbus.ts";
import type { EventChannels, MappedPages, Platform, XsWatch } from "../platform/types.ts";
import { createControlState, type ControlState } from "../workers/control.ts";
import { createFrameQueueState, type FrameQueueState } from "../workers/frame-queue.ts";
import type { RoleName } from "../workers/role.ts";
import { Cleanup } from "./cleanup.ts";
import { NetDevice } from "./device.ts";
import { NetError } from "./errors.ts";
import { rxFlags, txFlags } from "./flags.ts";
import { loggerFor } from "./logger.ts";
import { defaultPlatform } from "./platform-default.ts";
import { RingWorkerHandle, type RingWorkerEvents } from "./ring-worker-handle.ts";
import { advertiseBackend, awaitFrontend, resetBackendForReconnect, type BackendFeatures, type FrontendInfo } from "./xenbus/backend.ts";
import { readState, setState, waitForState } from "./xenbus/wait.ts";

const DEFAULT_QUEUE_BYTES = 4 << 20;
const DEFAULT_TIMEOUT_MS = 10_000;
const RECONNECT_BACKOFF_MS = 100;
export const NETBACK_MAC = Uint8Array.of(0xfe, 0xff, 0xff, 0xff, 0xff, 0xff);
const FEATURES: BackendFeatures = { sg: true, gsoTcpv4: false, gsoTcpv6: false, splitEventChannels: true, maxQueues: 1 };

export interface NetbackOptions {
  /** The hypervisor; default: real Xen if present, else the embedded simulated one (as domain 0). */
  platform?: Platform;
  /** The front end's domain. */
  frontendDomid: number;
  /** The vif's device id (default 0). */
  devid?: number;
  logger?: Logger;
  /** Bound on each handshake wait and on disconnect (ms, default 10 000). */
  timeoutMs?: number;
  /** Bytes of each queue between the main thread and a worker (default 4 MiB). */
  queueBytes?: number;
  /**
   * When the front end leaves, offer the vif again and serve the next one (default false: the
   * device closes). Frames written meanwhile wait for the next front end.
   */
  reconnect?: boolean;
}

interface Context {
  platform: Platform;
  backPath: string;
  timeoutMs: number;
  log: Logger;
  txQueue: FrameQueueState;
  rxQueue: FrameQueueState;
  txControl: ControlState;
  rxControl: ControlState;
  events: RingWorkerEvents;
  abort: AbortController;
}

interface Session {
  info: FrontendInfo;
  sender: RingWorkerHandle;
  receiver: RingWorkerHandle;
  resources: Cleanup;
  sendMax: number;
}

export class Netback extends NetDevice {
  readonly mac = NETBACK_MAC;
  private session: Session;
  private watch: XsWatch | null = null;
  private closing: Promise<void> | null = null;
  private reconnecting: Promise<void> | null = null;
  private reconnects = 0;

  private constructor(
    private readonly ctx: Context,
    session: Session,
    private readonly reconnect: boolean,
  ) {
    // We send on the front end's RX ring and receive from its TX ring.
    super(session.sender, session.receiver, rxFlags, txFlags, session.sendMax, ctx.log);
    this.session = session;
  }

  /** The front end's MAC, from the back-end directory (written by the toolstack). */
  get peerMac(): Uint8Array {
    return this.session.info.mac;
  }

  get frontendId(): number {
    return this.session.info.frontendId;
  }

  /** The MTU: frames the front end can take without scatter-gather are MTU + 14 bytes. */
  get mtu(): number {
    return this.maxFrameSize - ETH_HLEN;
  }

  /** Front ends served after the first one (with `reconnect`). */
  get reconnectCount(): number {
    return this.reconnects;
  }

  static async serve(opts: NetbackOptions): Promise<Netback> {
    const platform = opts.platform ?? (await defaultPlatform(0));
    const devid = opts.devid ?? 0;
    const log = loggerFor(opts.logger, { end: "netback", domid: platform.domid, frontend: opts.frontendDomid, devid });
    const queueBytes = opts.queueBytes ?? DEFAULT_QUEUE_BYTES;
    let dev: Netback | null = null;
    const ctx: Context = {
      platform,
      backPath: backendDir(platform.domid, opts.frontendDomid, devid),
      timeoutMs: opts.timeoutMs ?? DEFAULT_TIMEOUT_MS,
      log,
      txQueue: createFrameQueueState(queueBytes),
      rxQueue: createFrameQueueState(queueBytes),
      txControl: createControlState(),
      rxControl: createControlState(),
      abort: new AbortController(),
      events: {
        onPeerError: (m) => log.warn({ code: m.code, field: m.field, value: m.value, suppressed: m.suppressed }, `peer error: ${m.message}`),
        onUnexpectedStop: (failure) => {
          log.error({ failure }, "ring worker stopped; disconnecting");
          void dev?.shutdown(new NetError("DISCONNECTED", `ring worker stopped: ${failure}`));
        },
      },
    };
    await advertiseBackend(platform.xenstore, ctx.backPath, FEATURES);
    const session = await openSession(ctx);
    dev = new Netback(ctx, session, opts.reconnect ?? false);
    try {
      await dev.watchFrontend();
    } catch (e) {
      await dev.shutdown(new NetError("DISCONNECTED", "serve failed"));
      throw e;
    }
    return dev;
  }

  /** A front end that goes Closing, Closed or away ends the session. */
  private async watchFrontend(): Promise<void> {
    const xs = this.ctx.platform.xenstore;
    const session = this.session;
    const statePath = `${session.info.frontendPath}/${FRONT_KEYS.state}`;
    this.watch = await xs.watch(statePath, `netback-${this.ctx.backPath}-${this.reconnects}`, () => {
      void readState(xs, statePath).then(
        (s) => {
          if (this.closing !== null || this.reconnecting !== null || this.session !== session) return;
          if (s === XenbusState.Closing || s === XenbusState.Closed || s === XenbusState.Unknown) this.frontendLeft(s);
        },
        (e) => this.log.warn({ err: e }, "cannot read the front end's state"),
      );
    });
  }

  private frontendLeft(state: XenbusState): void {
    if (!this.reconnect) {
      this.log.info({ state }, "front end is closing; disconnecting");
      void this.shutdown(new NetError("DISCONNECTED", `the front end went to state ${state}`));
      return;
    }
    this.log.info({ state }, "front end left; offering the vif again");
    this.reconnecting = this.reconnectLoop().finally(() => (this.reconnecting = null));
  }

  private async reconnectLoop(): Promise<void> {
    this.sender.control.setPeerConnected(false);
    await this.closeSession();
    const xs = this.ctx.platform.xenstore;
    while (this.closing === null) {
      try {
        if (!(await resetBackendForReconnect(xs, this.ctx.backPath, FEATURES))) {
          this.log.info("the vif is no longer online; closing");
          void this.shutdown(new NetError("DISCONNECTED", "the vif went offline"));
          return;
        }
        const s = await openSession(this.ctx);
        if (this.closing !== null) {
          await s.resources.run(this.log);
          return;
        }
        this.session = s;
        this.replaceWorkers(s.sender, s.receiver);
        this.reconnects++;
        await this.watchFrontend();
        return;
      } catch (e) {
        if (this.closing !== null) return;
        this.log.warn({ err: e }, "serving the next front end failed; retrying");
        await Bun.sleep(RECONNECT_BACKOFF_MS);
      }
    }
  }

  /** Stop serving: let go of the front end's pages and ports, go Closing, then Closed. */
  disconnect(): Promise<void> {
    return this.shutdown(new NetError("DISCONNECTED", "the device was disconnected"));
  }

  private shutdown(reason: NetError): Promise<void> {
    if (this.closing === null) {
      this.closing = this.close(reason);
      this.ctx.abort.abort(reason);
    }
    return this.closing;
  }

  private async close(reason: NetError): Promise<void> {
    await this.reconnecting;
    this.closedError ??= reason;
    await this.closeSession();
    await setState(this.ctx.platform.xenstore, this.ctx.backPath, XenbusState.Closed).catch((e) => this.log.warn({ err: e }, "cannot write Closed"));
    await this.stopDataPath(reason);
    this.log.info("disconnected");
  }

  /**
   * End the session: stop the workers and release the front end's pages and ports first (it
   * frees them once it sees us Closing), go Closing, wait for its Closed. Idempotent.
   */
  private async closeSession(): Promise<void> {
    const s = this.session;
    if (s.resources.empty) return;
    const xs = this.ctx.platform.xenstore;
    this.watch?.unwatch();
    this.watch = null;
    await this.stopWorkers();
    const failed = await s.resources.run(this.log);
    if (failed.length > 0) this.log.error({ failed }, "some resources could not be released");
    await setState(xs, this.ctx.backPath, XenbusState.Closing).catch((e) => this.log.warn({ err: e }, "cannot write Closing"));
    const frontState = `${s.info.frontendPath}/${FRONT_KEYS.state}`;
    const done = (st: XenbusState) => st === XenbusState.Closed || st === XenbusState.Unknown;
    await waitForState(xs, frontState, done, { timeoutMs: this.ctx.timeoutMs }).catch((e) => this.log.warn({ err: e }, "the front end did not close"));
    await setState(xs, this.ctx.backPath, XenbusState.Closed).catch((e) => this.log.warn({ err: e }, "cannot write Closed"));
  }
}

/**
 * Serve one front end: wait for its keys (we are in InitWait), map its rings, bind its
 * channels, start the workers on the context's queues, go Connected. On failure everything
 * taken is released and our state is Closed.
 */
async function openSession(ctx: Context): Promise<Session> {
  const { platform, backPath, timeoutMs, log } = ctx;
  const xs = platform.xenstore;
  log.info({ backPath }, "offered the vif (InitWait); waiting for the front end");
  const info = await awaitFrontend(xs, backPath, { timeoutMs, signal: ctx.abort.signal });
  if (!info.eventChannel.split) {
    await setState(xs, backPath, XenbusState.Closed).catch(() => {});
    throw new NetError("UNSUPPORTED", `the front end at ${info.frontendPath} did not use split event channels, which this version needs`);
  }
  // We send on the front end's RX ring, where each fragment carries its own size: with
  // scatter-gather a 64 KiB payload plus its header, without it one page. We receive TX
  // packets, whose size field is a u16.
  const sendMax = info.features.sg ? MAX_PACKET_SIZE + ETH_HLEN : 4096;
  const recvMax = MAX_PACKET_SIZE;
  const res = new Cleanup();
  try {
    const map = (ref: number): MappedPages => {
      const m = platform.gnttab.map(info.frontendId, [ref], true);
      res.add("unmap ring", () => platform.gnttab.unmap(m));
      return m;
    };
    const txRing = map(info.txRingRef);
    const rxRing = map(info.rxRingRef);
    const bind = (remote: number): { h: EventChannels; port: number } => {
      const h = platform.openEventChannels();
      res.add("close event channel", () => h.close());
      return { h, port: h.bindInterdomain(info.frontendId, remote) };
    };
    const tx = bind(info.eventChannel.tx);
    const rx = bind(info.eventChannel.rx);
    const start = async (role: RoleName, ch: { h: EventChannels; port: number }, ring: MappedPages) => {
      const w = await RingWorkerHandle.start(
        {
          role,
          platform: platform.descriptor,
          evtchn: ch.h.descriptor,
          port: ch.port,
          control: role === "back-rx" ? ctx.txControl : ctx.rxControl,
          queue: role === "back-rx" ? ctx.txQueue : ctx.rxQueue,
          ring: ring.descriptor!,
          data: null,
          peer: info.frontendId,
          maxFrame: role === "back-rx" ? sendMax : recvMax,
        },
        ch.h,
        ctx.events,
      );
      res.add(`stop ${role} worker`, () => w.stop());
      return w;
    };
    const receiver = await start("back-tx", tx, txRing);
    const sender = await start("back-rx", rx, rxRing);
    sender.control.setPeerConnected(true);
    await setState(xs, backPath, XenbusState.Connected);
    log.info({ frontend: info.frontendPath, peerMac: info.mac, sendMax, recvMax }, "connected");
    return { info, sender, receiver, resources: res, sendMax };
  } catch (e) {
    await res.run(log);
    await setState(xs, backPath, XenbusState.Closed).catch(() => {});
    throw e;
  }
}
