/**
 * Netfront: this domain's end of a vif. It waits for the back end's offer, shares the rings and
 * the data pages once (256 pages per direction, reused for every frame), allocates one event
 * channel per ring, starts the TX and RX workers, publishes its keys in one transaction and
 * goes Connected. It transmits only once the back end is Connected: frames written before
 * that wait in the send queue.
 *
 * When the back end goes away (restarts, or its driver domain reboots) the session ends and,
 * with `reconnect` (the default), a new one is opened as soon as a back end offers the vif
 * again; frames written meanwhile wait in the send queue and go out on the new session.
 */
import type { Logger } from "pino";
import { ETH_HLEN, MAX_PACKET_SIZE } from "../protocol/netif.ts";
import { BACK_KEYS, frontendDir, XenbusState } from "../protocol/xenbus.ts";
import { PlatformError, type EventChannels, type Platform, type SharedPages } from "../platform/types.ts";
import type { RoleName } from "../workers/role.ts";
import { Cleanup } from "./cleanup.ts";
import { NetError } from "./errors.ts";
import { rxFlags, txFlags } from "./flags.ts";
import { loggerFor } from "./logger.ts";
import { defaultPlatform } from "./platform-default.ts";
import { RingWorkerHandle } from "./ring-worker-handle.ts";
import { createContext, SessionDevice, type DeviceContext, type Session } from "./session.ts";
import { awaitBackend, awaitBackendConnected, publishFrontend, type BackendInfo } from "./xenbus/frontend.ts";
import { setState, waitForState } from "./xenbus/wait.ts";

/** Data pages per direction: one per ring slot. */
const DATA_PAGES = 256;

export interface NetfrontOptions {
  /** The hypervisor; default: real Xen if present, else the embedded simulated one (as `domid`). */
  platform?: Platform;
  /** This domain's id on the default simulated hypervisor (default 1). */
  domid?: number;
  /** The vif's device id (default 0). */
  devid?: number;
  logger?: Logger;
  /** Bound on each handshake wait and on disconnect (ms, default 10 000). */
  timeoutMs?: number;
  /** Resolve only once the back end is Connected (default true); frames written earlier wait. */
  awaitBackend?: boolean;
  /** Bytes of each queue between the main thread and a worker (default 4 MiB). */
  queueBytes?: number;
  /**
   * How long a ring worker with nothing to do keeps polling before it sleeps, in µs (default 0:
   * 64 polls, a few µs). Tens of µs save the wake-ups when every worker and the main thread
   * have a CPU each; on fewer CPUs the spinning takes time the other threads need.
   */
  spinMicros?: number;
  /**
   * When the back end goes away, wait for it to come back and reconnect (default true);
   * frames written meanwhile are sent then. False: the device closes with it.
   */
  reconnect?: boolean;
}

interface FrontSession extends Session {
  info: BackendInfo;
}

export class Netfront extends SessionDevice<FrontSession> {
  /** Our MAC address, as the toolstack assigned it. */
  readonly mac: Uint8Array;
  readonly mtu: number;

  private constructor(ctx: DeviceContext, session: FrontSession, reconnect: boolean) {
    super(ctx, session, reconnect, txFlags, rxFlags);
    this.mac = session.info.mac;
    this.mtu = session.info.mtu;
  }

  get backendId(): number {
    return this.session.info.backendId;
  }

  static async connect(opts: NetfrontOptions = {}): Promise<Netfront> {
    const platform = opts.platform ?? (await defaultPlatform(opts.domid ?? 1));
    const devid = opts.devid ?? 0;
    const log = loggerFor(opts.logger, { end: "netfront", domid: platform.domid, devid });
    let dev: Netfront | null = null;
    const ctx = createContext(platform, frontendDir(platform.domid, devid), opts, log, (failure) => {
      void dev?.shutdown(new NetError("DISCONNECTED", `ring worker stopped: ${failure}`), false);
    });
    dev = new Netfront(ctx, await openSession(ctx), opts.reconnect ?? true);
    try {
      await dev.followPeer();
      if (opts.awaitBackend !== false) await awaitBackendConnected(platform.xenstore, dev.session.info.backendPath, { timeoutMs: ctx.timeoutMs });
    } catch (e) {
      await dev.shutdown(new NetError("DISCONNECTED", "connect failed"), false);
      throw e;
    }
    return dev;
  }

  /** The back end's state: Connected opens the send gate; Closing or gone ends the session. */
  protected async followPeer(): Promise<void> {
    let seenConnected = false;
    await this.watchPeerState(`${this.session.info.backendPath}/${BACK_KEYS.state}`, (s) => {
      if (s === XenbusState.Connected) {
        seenConnected = true;
        this.sender.control.setPeerConnected(true);
        this.sender.kick();
      } else if (seenConnected || s === XenbusState.Closing || s === XenbusState.Closed) {
        this.peerLeft(s);
      }
    });
  }

  protected openSession(): Promise<FrontSession> {
    return openSession(this.ctx);
  }

  protected async prepareReconnect(): Promise<boolean> {
    await setState(this.ctx.platform.xenstore, this.ctx.dir, XenbusState.Initialising);
    return true;
  }

  /**
   * Close the vif: send what is queued, go Closing, wait for the back end to let go of our
   * pages, stop the workers, release every grant and port, go Closed.
   */
  disconnect(): Promise<void> {
    return this.shutdown(new NetError("DISCONNECTED", "the device was disconnected"), true);
  }

  protected async close(reason: NetError, flush: boolean): Promise<void> {
    // A reconnect in progress sees `closing` and gives up; let it finish first.
    await this.reconnecting;
    if (flush && this.sender.control.peerConnected && !(await this.flush(this.ctx.timeoutMs / 2))) {
      this.log.warn("disconnect: not every queued frame was answered by the back end");
    }
    this.closedError ??= reason;
    await this.closeSession();
    await this.stopDataPath(reason);
    this.log.info("disconnected");
  }

  /**
   * End the current session: Closing, wait for the back end to let go, stop the workers,
   * release grants and ports, Closed. The queues keep their frames.
   */
  protected async closeSession(): Promise<void> {
    const s = this.session;
    if (s.resources.empty) return;
    const xs = this.ctx.platform.xenstore;
    const log = this.log;
    const timeoutMs = this.ctx.timeoutMs;
    const backState = `${s.info.backendPath}/${BACK_KEYS.state}`;
    this.unwatchPeer();
    const gone = (st: XenbusState) => st === XenbusState.Closing || st === XenbusState.Closed || st === XenbusState.Unknown || st === XenbusState.InitWait;
    await setState(xs, this.ctx.dir, XenbusState.Closing).catch((e) => log.warn({ err: e }, "cannot write Closing"));
    await waitForState(xs, backState, gone, { timeoutMs }).catch((e) => log.warn({ err: e }, "the back end did not answer Closing"));
    await this.stopWorkers();
    const failed = await s.resources.run(log);
    if (failed.length > 0) log.error({ failed }, "some resources could not be released");
    await setState(xs, this.ctx.dir, XenbusState.Closed).catch((e) => log.warn({ err: e }, "cannot write Closed"));
    const closed = (st: XenbusState) => st === XenbusState.Closed || st === XenbusState.Unknown || st === XenbusState.InitWait;
    await waitForState(xs, backState, closed, { timeoutMs }).catch((e) => log.warn({ err: e }, "the back end did not answer Closed"));
  }
}

/**
 * Open a session: wait for the back end's offer, share rings and data pages, allocate the
 * channels, start the workers on the context's queues, publish our keys, go Connected.
 * On failure everything taken is released and our state is Closed.
 */
async function openSession(ctx: DeviceContext): Promise<FrontSession> {
  const { platform, dir: frontPath, timeoutMs, log } = ctx;
  const xs = platform.xenstore;
  log.info({ frontPath }, "waiting for the back end");
  const info = await awaitBackend(xs, frontPath, { timeoutMs, signal: ctx.abort.signal });
  if (!info.features.splitEventChannels) {
    throw new NetError("UNSUPPORTED", `the back end at ${info.backendPath} does not offer feature-split-event-channels, which this version needs`);
  }
  const be = info.backendId;
  // A TX request's size is a u16 (XEN_NETIF_MAX_TX_SIZE), so we send at most 65535 bytes;
  // RX responses size each fragment on its own, so we accept a 64 KiB payload plus its header.
  const sendMax = info.features.sg ? MAX_PACKET_SIZE : info.mtu + ETH_HLEN;
  const recvMax = info.features.sg ? MAX_PACKET_SIZE + ETH_HLEN : info.mtu + ETH_HLEN;
  const res = new Cleanup();
  try {
    const share = (count: number, writable: boolean): SharedPages => {
      const s = platform.gnttab.share(be, count, writable);
      res.add("unshare pages", () => unshareWhenFree(platform, s, timeoutMs));
      return s;
    };
    const txRing = share(1, true);
    const rxRing = share(1, true);
    const txData = share(DATA_PAGES, false);
    const rxData = share(DATA_PAGES, true);
    const channel = (): { h: EventChannels; port: number } => {
      const h = platform.openEventChannels();
      res.add("close event channel", () => h.close());
      return { h, port: h.allocUnbound(be) };
    };
    const tx = channel();
    const rx = channel();
    const start = async (role: RoleName, ch: { h: EventChannels; port: number }, ring: SharedPages, data: SharedPages) => {
      const w = await RingWorkerHandle.start(
        {
          role,
          platform: platform.descriptor,
          evtchn: ch.h.descriptor,
          port: ch.port,
          control: role === "front-tx" ? ctx.txControl : ctx.rxControl,
          queue: role === "front-tx" ? ctx.txQueue : ctx.rxQueue,
          ring: ring.descriptor,
          data: { pages: data.descriptor, refs: [...data.refs] },
          peer: be,
          maxFrame: role === "front-tx" ? sendMax : recvMax,
          spinMicros: ctx.spinMicros,
        },
        ch.h,
        ctx.events,
      );
      res.add(`stop ${role} worker`, () => w.stop());
      return w;
    };
    const sender = await start("front-tx", tx, txRing, txData);
    const receiver = await start("front-rx", rx, rxRing, rxData);
    if (ctx.abort.signal.aborted) throw new NetError("DISCONNECTED", "the device was disconnected while connecting");
    await publishFrontend(
      xs,
      frontPath,
      {
        txRingRef: txRing.refs[0]!,
        rxRingRef: rxRing.refs[0]!,
        eventChannel: { tx: tx.port, rx: rx.port },
        features: { sg: true, gsoTcpv4: false, gsoTcpv6: false, rxNotify: true, noCsumOffload: false, ipv6CsumOffload: false },
      },
      { numQueuesKey: info.features.multiQueue },
    );
    log.info({ backend: info.backendPath, mac: info.mac, mtu: info.mtu, sendMax, recvMax }, "connected");
    return { info, sender, receiver, resources: res, sendMax };
  } catch (e) {
    await res.run(log);
    await setState(xs, frontPath, XenbusState.Closed).catch(() => {});
    throw e;
  }
}

/**
 * End access to pages the back end may still map for a moment after it says Closing: retry
 * EBUSY until the timeout. Giving up leaves the grant in place (a leak the leak check reports)
 * rather than reuse memory the back end can still write.
 */
async function unshareWhenFree(platform: Platform, pages: SharedPages, timeoutMs: number): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  for (;;) {
    try {
      platform.gnttab.unshare(pages);
      return;
    } catch (e) {
      if (!(e instanceof PlatformError) || e.code !== "EBUSY" || performance.now() > deadline) throw e;
      await Bun.sleep(5);
    }
  }
}
