/**
 * Netfront: this domain's end of a vif. It waits for the back end's offer, shares the rings and
 * the data pages once (256 pages per direction, reused for every frame), allocates one event
 * channel per ring, starts the TX and RX workers, publishes its keys in one transaction and
 * goes Connected. It transmits only once the back end is Connected: frames written before
 * that wait in the send queue.
 *
 * When the back end goes away (restarts, or its driver domain reboots) or breaks a ring, the
 * session ends and, with `reconnect` (the default), a new one is opened as soon as a back end
 * offers the vif again; frames written meanwhile wait in the send queue and go out on the new
 * session.
 */
import type { Logger } from "pino";
import { ETH_DATA_LEN, ETH_HLEN, GRANT_PAGE_SIZE, MAX_PACKET_SIZE } from "../protocol/netif.ts";
import { BACK_KEYS, formatMac, frontendDir, XenbusState } from "../protocol/xenbus.ts";
import { PlatformError, type DeviceClaim, type Platform, type SharedPages } from "../platform/types.ts";
import type { RingKind, RoleRequest } from "./pool.ts";
import type { RoleHandle } from "./role-handle.ts";
import { Cleanup } from "./cleanup.ts";
import { NetError } from "./errors.ts";
import { rxFlags, txFlags } from "./flags.ts";
import { loggerFor } from "./logger.ts";
import { checkFrontOptions } from "./options.ts";
import { defaultPlatform } from "./platform-default.ts";
import { claimDevice, createContext, giveUp, nothingToTell, SessionDevice, startQueue, type DeviceContext, type Session } from "./session.ts";
import { awaitBackend, awaitBackendConnected, publishFrontend, type BackendInfo, type QueueKeys } from "./xenbus/frontend.ts";
import { setState, waitForState, type Deadline } from "./xenbus/wait.ts";

/**
 * Data pages per direction and queue: the vif's `dataPages` shared out, at most one per ring
 * slot, at least 16. A page carries one frame of up to a page (one slot), so they bound the
 * frames in flight each way per queue; what they cost is grants, of which a domain has few
 * (Linux's gntalloc allows 1024 by default).
 */
function dataPagesPerQueue(total: number, queues: number): number {
  return Math.min(256, Math.max(16, Math.floor(total / queues)));
}


export interface NetfrontOptions {
  /** The hypervisor; default: real Xen if present, else the embedded simulated one (as `domid`). */
  platform?: Platform;
  /** This domain's id on the default simulated hypervisor (default 1). */
  domid?: number;
  /** The vif's device id (default 0). */
  devid?: number;
  logger?: Logger;
  /** Bound on the handshake and on disconnect, each as a whole (ms, default 10 000). */
  timeoutMs?: number;
  /** Resolve only once the back end is Connected (default true); frames written earlier wait. */
  awaitBackend?: boolean;
  /**
   * Bytes of each queue between the main thread and a worker (default 4 MiB), rounded up to a
   * power of two and to at least 256 KiB, so a queue always holds the largest frame.
   */
  queueBytes?: number;
  /**
   * How long a ring worker with nothing to do keeps polling before it sleeps, in µs (default 0:
   * 64 polls, a few µs). Tens of µs save the wake-ups when every worker and the main thread
   * have a CPU each; on fewer CPUs the spinning takes time the other threads need.
   */
  spinMicros?: number;
  /**
   * When the back end goes away or breaks a ring, end the session and reconnect when a back
   * end offers the vif again (default true); frames written meanwhile are sent then. False:
   * the device closes.
   */
  reconnect?: boolean;
  /**
   * Use split event channels (one per ring) when the peer offers them (default true). False:
   * one channel for both rings, as peers that predate split channels use (mirage-net-xen,
   * QEMU, the BSDs); a peer that does not offer split channels gets one channel either way.
   */
  splitEventChannels?: boolean;
  /**
   * Offer scatter-gather, feature-sg (default true): the peer may send us a packet in several
   * slots, so frames over a page. False: one slot per packet each way, and an MTU of at most
   * 1500, as a peer without scatter-gather has it (QEMU's back end, old front ends).
   */
  scatterGather?: boolean;
  /**
   * GSO (default true): write feature-gso-tcpv4/v6=1, so the peer may send us TCP frames of up to 64 KiB (received with info.gso), and send a write's
   * `gso` frame as one packet where the peer offered that type (else it goes in segments cut
   * here). False: the keys say 0 and no GSO packet is ever sent. Needs scatter-gather.
   */
  gso?: boolean;
  /**
   * Aborts the connect while it is in progress (it rejects with HandshakeError ABORTED, leaving
   * nothing behind); once it has resolved, the signal has no effect.
   */
  signal?: AbortSignal;
  /**
   * Most queues (pairs of rings) to use, 1..16 (default 1); fewer if the back end offers
   * fewer. With several, a frame goes out on the queue its flow hashes to: frames of one flow
   * keep their order, frames of different flows may not (Linux netfront asks for one queue per
   * CPU). With one, every frame keeps its order.
   */
  queues?: number;
  /**
   * Pages shared for frame data per direction, over all queues (default 120, at most 256 per
   * queue): they bound the frames in flight each way. Each is a grant, and a domain's gntalloc
   * allows 1024 by default: a vif takes 2 × dataPages + 2 per queue (242 by default, so four
   * vifs fit). More vifs: fewer pages, or raise the limit (`xen-gntalloc limit=N`).
   */
  dataPages?: number;
}

interface FrontSession extends Session {
  info: BackendInfo;
}

export class Netfront extends SessionDevice<FrontSession> {
  /** Our MAC address, as the toolstack assigned it. */
  readonly mac: Uint8Array;

  private constructor(ctx: DeviceContext, session: FrontSession, reconnect: boolean) {
    super(ctx, session, reconnect, txFlags, rxFlags);
    this.mac = session.info.mac;
  }

  get backendId(): number {
    return this.session.info.backendId;
  }

  protected readonly role = "netfront";
  protected readonly sendDir = "tx";
  protected get peerDomid(): number {
    return this.backendId;
  }

  static async connect(opts: NetfrontOptions = {}): Promise<Netfront> {
    const o = checkFrontOptions(opts);
    const platform = o.platform ?? (await defaultPlatform(o.domid));
    const dir = frontendDir(platform.domid, o.devid);
    const log = loggerFor(o.logger, { end: "netfront", domid: platform.domid, devid: o.devid });
    // A platform we open is ours to close, with the device (or now, if it never comes up).
    const owned = o.platform === undefined;
    let claim: DeviceClaim | null = null;
    let dev: Netfront | null = null;
    try {
      claim = claimDevice(platform, dir, "Netfront");
      const ctx = createContext(platform, dir, o, o.queues ?? 1, { claim, ownsPlatform: owned }, log, (failure) => dev?.workerStopped(failure));
      ctx.dataPages = o.dataPages;
      dev = new Netfront(ctx, await openSession(ctx), o.reconnect);
      await dev.followPeer();
      if (o.awaitBackend) await awaitBackendConnected(platform.xenstore, dev.session.info.backendPath, { timeoutMs: ctx.timeoutMs, signal: ctx.handshakeSignal });
      // From now on the caller's signal has no say: later sessions end only with the device.
      ctx.handshakeSignal = ctx.abort.signal;
    } catch (e) {
      if (dev === null) {
        claim?.release();
        if (owned) platform.close();
      } else await dev.shutdown(new NetError("DISCONNECTED", "connect failed"), false);
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
        this.setSendGate(true);
      } else if (seenConnected || s === XenbusState.Closing || s === XenbusState.Closed) {
        this.peerLeft(s);
      }
    });
  }

  protected openSession(): Promise<FrontSession> {
    return openSession(this.ctx);
  }

  /** The next session starts from Initialising (awaitBackend sees to it). */
  protected async prepareReconnect(): Promise<NetError | null> {
    return null;
  }

  /**
   * Close the vif: send what is queued (every frame written is answered by the back end, or
   * counted as txLost), go Closing, wait for the back end to let go of our pages, stop the
   * workers (the RX worker reads what the back end left on the ring), release every grant and
   * port, go Closed. All within timeoutMs.
   */
  disconnect(): Promise<void> {
    return this.shutdown(new NetError("DISCONNECTED", "the device was disconnected"), true);
  }

  /**
   * End the current session within `d`: Closing, wait for the back end to let go, stop the
   * workers, release grants (ending access once the back end unmaps) and ports, Closed, wait
   * for its Closed. The queues keep their frames.
   */
  protected async closeSession(d: Deadline): Promise<void> {
    const s = this.session;
    if (s.resources.empty) return;
    const xs = this.ctx.platform.xenstore;
    const log = this.log;
    const backState = `${s.info.backendPath}/${BACK_KEYS.state}`;
    this.unwatchPeer();
    const gone = (st: XenbusState) => st === XenbusState.Closing || st === XenbusState.Closed || st === XenbusState.Unknown || st === XenbusState.InitWait;
    await setState(xs, this.ctx.dir, XenbusState.Closing).catch((e) => log.warn({ err: e }, "cannot write Closing"));
    await waitForState(xs, backState, gone, d.opts()).catch((e) => log.warn({ err: e }, "the back end did not answer Closing"));
    await this.stopWorkers(Math.max(d.remaining(), MIN_STOP_MS));
    const failed = await s.resources.run(log);
    if (failed.length > 0) log.error({ failed }, "some resources could not be released");
    await setState(xs, this.ctx.dir, XenbusState.Closed).catch((e) => log.warn({ err: e }, "cannot write Closed"));
    const closed = (st: XenbusState) => st === XenbusState.Closed || st === XenbusState.Unknown || st === XenbusState.InitWait;
    await waitForState(xs, backState, closed, d.opts()).catch((e) => log.warn({ err: e }, "the back end did not answer Closed"));
  }
}

/** A worker that is asked to stop gets at least this long before it is terminated. */
const MIN_STOP_MS = 50;

/**
 * Open a session: wait for the back end's offer, share rings and data pages, allocate the
 * channels, start the workers on the context's queues, publish our keys, go Connected.
 * On failure everything taken is released and our state is Closed.
 */
async function openSession(ctx: DeviceContext): Promise<FrontSession> {
  const { platform, dir: frontPath, log } = ctx;
  const xs = platform.xenstore;
  log.info({ frontPath }, "waiting for the back end");
  const res = new Cleanup();
  // The pool's threads start while we wait for the peer, not after it is ready.
  const warm = ctx.pool.prewarm();
  try {
    const info = await awaitBackend(xs, frontPath, { timeoutMs: ctx.handshakeMs, signal: ctx.handshakeSignal });
    const be = info.backendId;
    // A TX request's size is a u16 (XEN_NETIF_MAX_TX_SIZE), so we send at most 65535 bytes.
    // Unless both ends do scatter-gather (the back end offers it, we were not told not to),
    // we send one slot per packet and the MTU is at most 1500, as Linux netfront caps it. RX
    // responses size each fragment on their own: with our scatter-gather we accept a 64 KiB
    // payload plus its header, without it one slot (a page, as Linux netfront checks it).
    const sg = info.features.sg && ctx.scatterGather;
    const mtu = sg ? info.mtu : Math.min(info.mtu, ETH_DATA_LEN);
    const sendMax = sg ? MAX_PACKET_SIZE : mtu + ETH_HLEN;
    const recvMax = ctx.scatterGather ? MAX_PACKET_SIZE + ETH_HLEN : GRANT_PAGE_SIZE;
    // One channel per ring only if the back end offers it and we were not told otherwise.
    const split = info.features.splitEventChannels && ctx.splitEventChannels;
    const share = (count: number, writable: boolean): SharedPages => {
      let s: SharedPages;
      try {
        s = platform.gnttab.share(be, count, writable);
      } catch (e) {
        if (!(e instanceof PlatformError) || e.code !== "ENOSPC") throw e;
        const grants = queues * (2 + 2 * pages);
        throw new PlatformError("ENOSPC", e.op, `${e.detail}. This vif needs ${grants} grants (${queues} queue(s) of 2 rings and 2 × ${pages} data pages): lower dataPages or queues, or raise the domain's limit (Linux: xen-gntalloc's limit parameter, default 1024)`);
      }
      // Access ends once the back end lets go of the pages, never before: they are not reused under it.
      res.add("unshare pages", () => platform.gnttab.unshare(s, { defer: true }));
      return s;
    };
    // As many queues as we want and the back end offers; each its two rings and data pages.
    const queues = Math.min(ctx.queues.length, info.features.maxQueues);
    const pages = dataPagesPerQueue(ctx.dataPages, queues);
    // Each ring goes to a pool worker of its kind, with a port allocated through that worker
    // (with one channel, through the TX ring's worker, and the RX ring shares it).
    const request = (q: number, ring: RingKind, page: SharedPages, data: SharedPages): RoleRequest => {
      const tx = ring === "tx";
      const cq = ctx.queues[q]!;
      return {
        ring,
        platform,
        bindPort: (evtchn) => evtchn.allocUnbound(be),
        init: {
          role: tx ? "front-tx" : "front-rx",
          control: tx ? cq.sendControl : cq.recvControl,
          queue: tx ? cq.send : cq.recv,
          bell: tx ? cq.sendBell : cq.recvBell,
          ring: page.descriptor,
          data: { pages: data.descriptor, refs: [...data.refs] },
          peer: be,
          maxFrame: tx ? sendMax : recvMax,
          spinMicros: ctx.spinMicros,
        },
        events: ctx.events,
      };
    };
    const senders: RoleHandle[] = [];
    const receivers: RoleHandle[] = [];
    const keys: QueueKeys[] = [];
    for (let q = 0; q < queues; q++) {
      const txRing = share(1, true);
      const rxRing = share(1, true);
      const txReq = request(q, "tx", txRing, share(pages, false));
      const rxReq = request(q, "rx", rxRing, share(pages, true));
      const [sender, receiver] = await startQueue(ctx, res, q, split, txReq, rxReq);
      senders.push(sender);
      receivers.push(receiver);
      keys.push({ txRingRef: txRing.refs[0]!, rxRingRef: rxRing.refs[0]!, eventChannel: split ? { tx: sender.port, rx: receiver.port } : sender.port });
    }
    if (ctx.abort.signal.aborted) throw new NetError("DISCONNECTED", "the device was disconnected while connecting");
    // We take GSO packets (up to 64 KiB, in several slots) unless told not to, or without scatter-gather.
    const receiveGso = ctx.gso && ctx.scatterGather;
    await publishFrontend(
      xs,
      frontPath,
      { queues: keys, features: { sg: ctx.scatterGather, gsoTcpv4: receiveGso, gsoTcpv6: receiveGso, rxNotify: true, noCsumOffload: false, ipv6CsumOffload: true } },
      { numQueuesKey: info.features.multiQueue },
    );
    log.info({ backend: info.backendPath, mac: formatMac(info.mac), mtu, sendMax, recvMax, queues, split, sg: info.features.sg }, "connected");
    // GSO to the back end only where it offered it and the packet may take several slots.
    const gso = { tcpv4: ctx.gso && sg && info.features.gsoTcpv4, tcpv6: ctx.gso && sg && info.features.gsoTcpv6 };
    return { info, senders, receivers, resources: res, sendMax, mtu, gso };
  } catch (e) {
    await res.run(log);
    // Tell the back end, unless nothing was negotiated yet (it would not be listening).
    if (!nothingToTell(e)) await giveUp(xs, frontPath);
    throw e;
  } finally {
    warm();
  }
}

