/**
 * Netfront: this domain's end of a vif. It waits for the back end's offer, shares the rings and
 * the data pages once (256 pages per direction, reused for every frame), allocates one event
 * channel per ring, starts the TX and RX workers, publishes its keys in one transaction and
 * goes Connected. It transmits only once the back end is Connected: frames written before
 * that wait in the send queue.
 */
import type { Logger } from "pino";
import { ETH_HLEN, MAX_PACKET_SIZE } from "../protocol/netif.ts";
import { BACK_KEYS, frontendDir, XenbusState } from "../protocol/xenbus.ts";
import { PlatformError, type EventChannels, type Platform, type SharedPages, type XsWatch } from "../platform/types.ts";
import { createControlState } from "../workers/control.ts";
import { createFrameQueueState } from "../workers/frame-queue.ts";
import type { RoleName } from "../workers/role.ts";
import { Cleanup } from "./cleanup.ts";
import { NetDevice } from "./device.ts";
import { NetError } from "./errors.ts";
import { rxFlags, txFlags } from "./flags.ts";
import { loggerFor } from "./logger.ts";
import { defaultPlatform } from "./platform-default.ts";
import { RingWorkerHandle, type RingWorkerEvents } from "./ring-worker-handle.ts";
import { awaitBackend, awaitBackendConnected, publishFrontend, type BackendInfo } from "./xenbus/frontend.ts";
import { readState, setState, waitForState } from "./xenbus/wait.ts";

/** Data pages per direction: one per ring slot. */
const DATA_PAGES = 256;
const DEFAULT_QUEUE_BYTES = 4 << 20;
const DEFAULT_TIMEOUT_MS = 10_000;

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
}

export class Netfront extends NetDevice {
  /** Our MAC address, as the toolstack assigned it. */
  readonly mac: Uint8Array;
  readonly mtu: number;
  readonly backendId: number;
  private watch: XsWatch | null = null;
  private closing: Promise<void> | null = null;

  private constructor(
    private readonly platform: Platform,
    private readonly frontPath: string,
    private readonly info: BackendInfo,
    sender: RingWorkerHandle,
    receiver: RingWorkerHandle,
    maxFrame: number,
    private readonly resources: Cleanup,
    private readonly timeoutMs: number,
    log: Logger,
  ) {
    super(sender, receiver, txFlags, rxFlags, maxFrame, log);
    this.mac = info.mac;
    this.mtu = info.mtu;
    this.backendId = info.backendId;
  }

  static async connect(opts: NetfrontOptions = {}): Promise<Netfront> {
    const platform = opts.platform ?? defaultPlatform(opts.domid ?? 1);
    const devid = opts.devid ?? 0;
    const timeoutMs = opts.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    const log = loggerFor(opts.logger, { end: "netfront", domid: platform.domid, devid });
    const xs = platform.xenstore;
    const frontPath = frontendDir(platform.domid, devid);

    log.info({ frontPath }, "waiting for the back end");
    const info = await awaitBackend(xs, frontPath, { timeoutMs });
    if (!info.features.splitEventChannels) {
      throw new NetError("UNSUPPORTED", `the back end at ${info.backendPath} does not offer feature-split-event-channels, which this version needs`);
    }
    const be = info.backendId;
    // A TX request's size is a u16 (XEN_NETIF_MAX_TX_SIZE), so we send at most 65535 bytes;
    // RX responses size each fragment on its own, so we accept a 64 KiB payload plus its header.
    const sendMax = info.features.sg ? MAX_PACKET_SIZE : info.mtu + ETH_HLEN;
    const recvMax = info.features.sg ? MAX_PACKET_SIZE + ETH_HLEN : info.mtu + ETH_HLEN;
    const queueBytes = opts.queueBytes ?? DEFAULT_QUEUE_BYTES;
    const res = new Cleanup();
    let dev: Netfront | null = null;
    const events: RingWorkerEvents = {
      onPeerError: (m) => log.warn({ code: m.code, field: m.field, value: m.value, suppressed: m.suppressed }, `peer error: ${m.message}`),
      onUnexpectedStop: (failure) => {
        log.error({ failure }, "ring worker stopped; disconnecting");
        void dev?.shutdown(new NetError("DISCONNECTED", `ring worker stopped: ${failure}`), false);
      },
    };
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
            control: createControlState(),
            queue: createFrameQueueState(queueBytes),
            ring: ring.descriptor,
            data: { pages: data.descriptor, refs: [...data.refs] },
            peer: be,
            maxFrame: role === "front-tx" ? sendMax : recvMax,
          },
          ch.h,
          events,
        );
        res.add(`stop ${role} worker`, () => w.stop());
        return w;
      };
      const sender = await start("front-tx", tx, txRing, txData);
      const receiver = await start("front-rx", rx, rxRing, rxData);
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
      dev = new Netfront(platform, frontPath, info, sender, receiver, sendMax, res, timeoutMs, log);
      await dev.watchBackend();
      if (opts.awaitBackend !== false) await awaitBackendConnected(xs, info.backendPath, { timeoutMs });
      log.info({ backend: info.backendPath, mac: info.mac, mtu: info.mtu, sendMax, recvMax }, "connected");
      return dev;
    } catch (e) {
      if (dev !== null) await dev.shutdown(new NetError("DISCONNECTED", "connect failed"), false);
      else {
        await setState(xs, frontPath, XenbusState.Closed).catch(() => {});
        await res.run(log);
      }
      throw e;
    }
  }

  /** Follow the back end's state: Connected opens the send gate; Closing or gone closes us. */
  private async watchBackend(): Promise<void> {
    const xs = this.platform.xenstore;
    const statePath = `${this.info.backendPath}/${BACK_KEYS.state}`;
    let seenConnected = false;
    this.watch = await xs.watch(statePath, `netfront-${this.frontPath}`, () => {
      void readState(xs, statePath).then(
        (s) => {
          if (this.closing !== null) return;
          if (s === XenbusState.Connected) {
            seenConnected = true;
            this.sender.control.setPeerConnected(true);
            this.sender.kick();
          } else if (seenConnected || s === XenbusState.Closing || s === XenbusState.Closed) {
            this.log.info({ state: s }, "back end is going away; disconnecting");
            void this.shutdown(new NetError("DISCONNECTED", `the back end went to state ${s}`), false);
          }
        },
        (e) => this.log.warn({ err: e }, "cannot read the back end's state"),
      );
    });
  }

  /**
   * Close the vif: send what is queued, go Closing, wait for the back end to let go of our
   * pages, stop the workers, release every grant and port, go Closed.
   */
  disconnect(): Promise<void> {
    return this.shutdown(new NetError("DISCONNECTED", "the device was disconnected"), true);
  }

  private shutdown(reason: NetError, flush: boolean): Promise<void> {
    this.closing ??= this.close(reason, flush);
    return this.closing;
  }

  private async close(reason: NetError, flush: boolean): Promise<void> {
    const xs = this.platform.xenstore;
    const backState = `${this.info.backendPath}/${BACK_KEYS.state}`;
    if (flush && !(await this.flush(this.timeoutMs / 2))) this.log.warn("disconnect: not every queued frame was answered by the back end");
    this.closedError ??= reason;
    this.watch?.unwatch();
    const gone = (s: XenbusState) => s === XenbusState.Closing || s === XenbusState.Closed || s === XenbusState.Unknown || s === XenbusState.InitWait;
    await setState(xs, this.frontPath, XenbusState.Closing).catch((e) => this.log.warn({ err: e }, "cannot write Closing"));
    await waitForState(xs, backState, gone, { timeoutMs: this.timeoutMs }).catch((e) => this.log.warn({ err: e }, "the back end did not answer Closing"));
    await this.stopDataPath(reason);
    const failed = await this.resources.run(this.log);
    await setState(xs, this.frontPath, XenbusState.Closed).catch((e) => this.log.warn({ err: e }, "cannot write Closed"));
    const closed = (s: XenbusState) => s === XenbusState.Closed || s === XenbusState.Unknown || s === XenbusState.InitWait;
    await waitForState(xs, backState, closed, { timeoutMs: this.timeoutMs }).catch((e) => this.log.warn({ err: e }, "the back end did not answer Closed"));
    this.log.info({ leaked: failed }, "disconnected");
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
