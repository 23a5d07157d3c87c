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
import { ETH_DATA_LEN, ETH_HLEN, MAX_PACKET_SIZE } from "../protocol/netif.ts";
import { BACK_KEYS, backendDir, formatMac, FRONT_KEYS, XenbusState } from "../protocol/xenbus.ts";
import type { DeviceClaim, MappedPages, Platform } from "../platform/types.ts";
import type { RingKind, RoleRequest } from "./pool.ts";
import type { RoleHandle } from "./role-handle.ts";
import type { ServeAllOptions, VifServer } from "./vif-server.ts";
import { Cleanup } from "./cleanup.ts";
import { NetError } from "./errors.ts";
import { rxFlags, txFlags } from "./flags.ts";
import { loggerFor } from "./logger.ts";
import { checkBackOptions, DEFAULT_QUEUES } from "./options.ts";
import { defaultPlatform } from "./platform-default.ts";
import { claimDevice, createContext, giveUp, nothingToTell, SessionDevice, startQueue, type DeviceContext, type Session } from "./session.ts";
import { advertiseBackend, awaitFrontend, resetBackendForReconnect, type BackendFeatures, type FrontendInfo } from "./xenbus/backend.ts";
import { awaitPeerKeys, Deadline, setState, waitForState } from "./xenbus/wait.ts";
export const NETBACK_MAC = Uint8Array.of(0xfe, 0xff, 0xff, 0xff, 0xff, 0xff);
/** What we offer; `maxQueues` as asked (multi-queue-max-queues), split channels unless told not to. */
function features(ctx: DeviceContext): BackendFeatures {
  // GSO packets come in several slots: offered with scatter-gather only.
  const gso = ctx.gso && ctx.scatterGather;
  return { sg: ctx.scatterGather, gsoTcpv4: gso, gsoTcpv6: gso, splitEventChannels: ctx.splitEventChannels, maxQueues: ctx.queues.length };
}

export interface NetbackOptions {
  /** The hypervisor; default: real Xen if present, else the embedded simulated one (as domain 0). */
  platform?: Platform;
  /** The front end's domain. */
  frontendDomid: number;
  /** The vif's device id (default 0). */
  devid?: number;
  logger?: Logger;
  /** Bound on the handshake and on disconnect, each as a whole (ms, default 10 000). */
  timeoutMs?: number;
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
   * When the front end leaves or breaks a ring, offer the vif again and serve the next one
   * (default false: the device closes). Frames written meanwhile wait for the next front end.
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
   * Aborts the serve while it is in progress (it rejects with HandshakeError ABORTED, leaving
   * nothing behind); once it has resolved, the signal has no effect.
   */
  signal?: AbortSignal;
  /** Most queues (pairs of rings) to offer, 1..16 (default: the CPUs, at most 8, as Linux netback offers the CPUs). */
  maxQueues?: number;
}

interface BackSession extends Session {
  info: FrontendInfo;
}

export class Netback extends SessionDevice<BackSession> {
  readonly mac = NETBACK_MAC;

  private constructor(ctx: DeviceContext, session: BackSession, reconnect: boolean) {
    // We send on the front end's RX ring and receive from its TX ring.
    super(ctx, session, reconnect, rxFlags, txFlags);
  }

  /** The front end's MAC, from the back-end directory (written by the toolstack). */
  get peerMac(): Uint8Array {
    return this.session.info.mac;
  }

  get frontendId(): number {
    return this.session.info.frontendId;
  }

  protected readonly role = "netback";
  protected readonly sendDir = "rx";
  protected get peerDomid(): number {
    return this.frontendId;
  }

  /**
   * Serve one vif. (`wait`, for VifServer: how long the first handshake may wait for its front
   * end, if not timeoutMs: a driver domain waits for a guest that has not booted yet.)
   */
  static async serve(opts: NetbackOptions, wait?: { handshakeMs: number }): Promise<Netback> {
    const o = checkBackOptions(opts);
    const platform = o.platform ?? (await defaultPlatform(0));
    const dir = backendDir(platform.domid, o.frontendDomid, o.devid);
    const log = loggerFor(o.logger, { end: "netback", domid: platform.domid, frontendDomid: o.frontendDomid, devid: o.devid });
    // A platform we open is ours to close, with the device (or now, if it never comes up).
    const owned = o.platform === undefined;
    let claim: DeviceClaim | null = null;
    let dev: Netback | null = null;
    try {
      claim = claimDevice(platform, dir, "Netback");
      const ctx = createContext(platform, dir, o, o.maxQueues ?? DEFAULT_QUEUES, { claim, ownsPlatform: owned }, log, (failure) => dev?.workerStopped(failure));
      if (wait !== undefined) ctx.handshakeMs = wait.handshakeMs;
      // The toolstack may write the device late: wait for it (NO_DEVICE when it never comes).
      await awaitPeerKeys(platform.xenstore, dir, BACK_KEYS.frontendId, BACK_KEYS.frontend, new Deadline({ timeoutMs: ctx.timeoutMs }));
      await advertiseBackend(platform.xenstore, ctx.dir, features(ctx));
      dev = new Netback(ctx, await openSession(ctx), o.reconnect);
      // From now on the caller's signal and wait have no say: later sessions are the device's.
      ctx.handshakeSignal = ctx.abort.signal;
      ctx.handshakeMs = ctx.timeoutMs;
      await dev.followPeer();
    } catch (e) {
      if (dev === null) {
        claim?.release();
        if (owned) platform.close();
      } else await dev.shutdown(new NetError("DISCONNECTED", "serve failed"), false);
      throw e;
    }
    return dev;
  }

  /**
   * Serve every vif the toolstack creates for this domain, now and to come, each with a
   * Netback of its own (`reconnect` on by default): see VifServer.
   */
  static async serveAll(opts: ServeAllOptions = {}): Promise<VifServer> {
    const { VifServer } = await import("./vif-server.ts");
    return VifServer.start(opts);
  }

  /** A front end that goes Closing, Closed or away ends the session. */
  protected async followPeer(): Promise<void> {
    await this.watchPeerState(`${this.session.info.frontendPath}/${FRONT_KEYS.state}`, (s) => {
      if (s === XenbusState.Closing || s === XenbusState.Closed || s === XenbusState.Unknown) this.peerLeft(s);
    });
  }

  protected openSession(): Promise<BackSession> {
    return openSession(this.ctx);
  }

  /** Offer the vif again (InitWait), as Linux netback does while the vif stays online. */
  protected async prepareReconnect(): Promise<NetError | null> {
    const again = await resetBackendForReconnect(this.ctx.platform.xenstore, this.ctx.dir, features(this.ctx));
    return again ? null : new NetError("DISCONNECTED", "the vif is no longer online (the toolstack set online=0)");
  }

  /**
   * Stop serving: deliver what was written (each frame reaches the front end's ring, or is
   * counted as txLost), take in what the front end already sent, let go of its pages and
   * ports, go Closing, then Closed. All within timeoutMs.
   */
  disconnect(): Promise<void> {
    return this.shutdown(new NetError("DISCONNECTED", "the device was disconnected"), true);
  }

  /**
   * End the session within `d`: stop the workers (the TX worker takes in the requests the
   * front end left on the ring) and release the front end's pages and ports first (it frees
   * them once it sees us Closing), go Closing, wait for its Closed, go Closed. Idempotent.
   */
  protected async closeSession(d: Deadline): Promise<void> {
    const s = this.session;
    if (s.resources.empty) return;
    const xs = this.ctx.platform.xenstore;
    this.unwatchPeer();
    await this.stopWorkers(Math.max(d.remaining(), MIN_STOP_MS));
    const failed = await s.resources.run(this.log);
    if (failed.length > 0) this.log.error({ failed }, "some resources could not be released");
    await setState(xs, this.ctx.dir, XenbusState.Closing).catch((e) => this.log.warn({ err: e }, "cannot write Closing"));
    const frontState = `${s.info.frontendPath}/${FRONT_KEYS.state}`;
    const done = (st: XenbusState) => st === XenbusState.Closed || st === XenbusState.Unknown;
    await waitForState(xs, frontState, done, d.opts()).catch((e) => this.log.warn({ err: e }, "the front end did not close"));
    await setState(xs, this.ctx.dir, XenbusState.Closed).catch((e) => this.log.warn({ err: e }, "cannot write Closed"));
  }
}

/**
 * How often the RX ring of a front end without feature-rx-notify is looked at while frames
 * wait for its buffers (Linux netback polled such front ends on a timer too).
 */
const NO_RX_NOTIFY_POLL_MS = 10;

/** A worker that is asked to stop gets at least this long before it is terminated. */
const MIN_STOP_MS = 50;

/**
 * Serve one front end: wait for its keys (we are in InitWait), map its rings, bind its
 * channels, start the workers on the context's queues, go Connected. On failure everything
 * taken is released, and the front end is told (Closing, Closed) when it had offered us keys.
 */
async function openSession(ctx: DeviceContext): Promise<BackSession> {
  const { platform, dir: backPath, log } = ctx;
  const xs = platform.xenstore;
  log.info({ backPath }, "offered the vif (InitWait); waiting for the front end");
  const res = new Cleanup();
  // The pool's threads start while we wait for the peer, not after it is ready.
  const warm = ctx.pool.prewarm();
  try {
    const info = await awaitFrontend(xs, backPath, { timeoutMs: ctx.handshakeMs, signal: ctx.handshakeSignal });
    // We send on the front end's RX ring, where each fragment carries its own size: when both
    // ends do scatter-gather (it offers it, we were not told not to), a 64 KiB payload plus
    // its header; otherwise one slot per packet (as QEMU's back end) and the MTU at most 1500,
    // as Linux netback caps it. We receive TX packets, whose size field is a u16 (several
    // slots even when we did not offer them: a well-formed packet is taken, as Linux takes it).
    const sg = info.features.sg && ctx.scatterGather;
    const mtu = sg ? info.mtu : Math.min(info.mtu, ETH_DATA_LEN);
    const sendMax = sg ? MAX_PACKET_SIZE + ETH_HLEN : mtu + ETH_HLEN;
    const recvMax = MAX_PACKET_SIZE;
    const map = (ref: number): MappedPages => {
      const m = platform.gnttab.map(info.frontendId, [ref], true);
      res.add("unmap ring", () => platform.gnttab.unmap(m));
      return m;
    };
    // Each ring goes to a pool worker of its kind, its port bound through that worker (one
    // channel for both: bound through the TX ring's worker, shared by the RX ring). We
    // receive on the TX ring and send on the RX ring.
    const request = (q: number, ring: RingKind, page: MappedPages, remotePort: number): RoleRequest => {
      const sends = ring === "rx";
      const cq = ctx.queues[q]!;
      return {
        ring,
        platform,
        bindPort: (evtchn) => evtchn.bindInterdomain(info.frontendId, remotePort),
        peerPort: { domid: info.frontendId, port: remotePort },
        init: {
          role: sends ? "back-rx" : "back-tx",
          control: sends ? cq.sendControl : cq.recvControl,
          queue: sends ? cq.send : cq.recv,
          bell: sends ? cq.sendBell : cq.recvBell,
          ring: page.descriptor!,
          data: null,
          peer: info.frontendId,
          maxFrame: sends ? sendMax : recvMax,
          spinMicros: ctx.spinMicros,
          // A front end without feature-rx-notify never tells us it posted buffers.
          pollMs: sends && !info.features.rxNotify ? NO_RX_NOTIFY_POLL_MS : 0,
          // Blank checksums only where it takes them: IPv4 unless feature-no-csum-offload, IPv6 only with feature-ipv6-csum-offload.
          peerCsumOffload: { ipv4: !info.features.noCsumOffload, ipv6: info.features.ipv6CsumOffload },
        },
        events: ctx.events,
      };
    };
    const senders: RoleHandle[] = [];
    const receivers: RoleHandle[] = [];
    for (const [q, keys] of info.queues.entries()) {
      const ec = keys.eventChannel;
      const txReq = request(q, "tx", map(keys.txRingRef), ec.tx);
      const rxReq = request(q, "rx", map(keys.rxRingRef), ec.rx);
      const [receiver, sender] = await startQueue(ctx, res, q, ec.split, txReq, rxReq);
      receivers.push(receiver);
      senders.push(sender);
    }
    for (const s of senders) s.control.setPeerConnected(true);
    await setState(xs, backPath, XenbusState.Connected);
    const split = info.queues[0]!.eventChannel.split;
    log.info({ frontendPath: info.frontendPath, peerMac: formatMac(info.mac), mtu, sendMax, recvMax, queues: info.queues.length, split, sg: info.features.sg, rxNotify: info.features.rxNotify }, "connected");
    // GSO to the front end only where it offered it (its keys say what it can receive), the
    // packet may take several slots, and it takes the blank checksum a GSO packet carries.
    const gsoOk = ctx.gso && sg;
    const gso = { tcpv4: gsoOk && info.features.gsoTcpv4 && !info.features.noCsumOffload, tcpv6: gsoOk && info.features.gsoTcpv6 && info.features.ipv6CsumOffload };
    return { info, senders, receivers, resources: res, sendMax, mtu, gso };
  } catch (e) {
    await res.run(log);
    if (!nothingToTell(e)) await giveUp(xs, backPath);
    throw e;
  } finally {
    warm();
  }
}
