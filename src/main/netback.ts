/**
 * Netback: serves a vif to a front-end domain. It offers its features and goes InitWait, waits
 * for the front end's keys, maps the two ring pages (the only mappings: packet data moves by
 * grant copy), binds the event channels, starts the workers and goes Connected. Its own MAC is
 * fe:ff:ff:ff:ff:ff, as Linux netback's; the front end's is `peerMac`.
 */
import type { Logger } from "pino";
import { ETH_HLEN, MAX_PACKET_SIZE } from "../protocol/netif.ts";
import { backendDir, FRONT_KEYS, XenbusState } from "../protocol/xenbus.ts";
import type { EventChannels, MappedPages, Platform, XsWatch } from "../platform/types.ts";
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
import { advertiseBackend, awaitFrontend, type FrontendInfo } from "./xenbus/backend.ts";
import { readState, setState, waitForState } from "./xenbus/wait.ts";

const DEFAULT_QUEUE_BYTES = 4 << 20;
const DEFAULT_TIMEOUT_MS = 10_000;
export const NETBACK_MAC = Uint8Array.of(0xfe, 0xff, 0xff, 0xff, 0xff, 0xff);

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
}

export class Netback extends NetDevice {
  readonly mac = NETBACK_MAC;
  /** The front end's MAC, from the back-end directory (written by the toolstack). */
  readonly peerMac: Uint8Array;
  readonly frontendId: number;
  private watch: XsWatch | null = null;
  private closing: Promise<void> | null = null;

  private constructor(
    private readonly platform: Platform,
    private readonly backPath: string,
    private readonly info: FrontendInfo,
    sender: RingWorkerHandle,
    receiver: RingWorkerHandle,
    maxFrame: number,
    private readonly resources: Cleanup,
    private readonly timeoutMs: number,
    log: Logger,
  ) {
    // We send on the front end's RX ring and receive from its TX ring.
    super(sender, receiver, rxFlags, txFlags, maxFrame, log);
    this.peerMac = info.mac;
    this.frontendId = info.frontendId;
  }

  /** The MTU: frames the front end can take without scatter-gather are MTU + 14 bytes. */
  get mtu(): number {
    return this.maxFrameSize - ETH_HLEN;
  }

  static async serve(opts: NetbackOptions): Promise<Netback> {
    const platform = opts.platform ?? await defaultPlatform(0);
    const fe = opts.frontendDomid;
    const devid = opts.devid ?? 0;
    const timeoutMs = opts.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    const log = loggerFor(opts.logger, { end: "netback", domid: platform.domid, frontend: fe, devid });
    const xs = platform.xenstore;
    const backPath = backendDir(platform.domid, fe, devid);

    await advertiseBackend(xs, backPath, { sg: true, gsoTcpv4: false, gsoTcpv6: false, splitEventChannels: true, maxQueues: 1 });
    log.info({ backPath }, "offered the vif (InitWait); waiting for the front end");
    const info = await awaitFrontend(xs, backPath, { timeoutMs });
    if (!info.eventChannel.split) {
      await setState(xs, backPath, XenbusState.Closed).catch(() => {});
      throw new NetError("UNSUPPORTED", `the front end at ${info.frontendPath} did not use split event channels, which this version needs`);
    }
    // We send on the front end's RX ring, where each fragment carries its own size: with
    // scatter-gather a 64 KiB payload plus its header, without it one page. We receive TX
    // packets, whose size field is a u16.
    const sendMax = info.features.sg ? MAX_PACKET_SIZE + ETH_HLEN : 4096;
    const recvMax = MAX_PACKET_SIZE;
    const queueBytes = opts.queueBytes ?? DEFAULT_QUEUE_BYTES;
    const res = new Cleanup();
    let dev: Netback | null = null;
    const events: RingWorkerEvents = {
      onPeerError: (m) => log.warn({ code: m.code, field: m.field, value: m.value, suppressed: m.suppressed }, `peer error: ${m.message}`),
      onUnexpectedStop: (failure) => {
        log.error({ failure }, "ring worker stopped; disconnecting");
        void dev?.shutdown(new NetError("DISCONNECTED", `ring worker stopped: ${failure}`));
      },
    };
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
            control: createControlState(),
            queue: createFrameQueueState(queueBytes),
            ring: ring.descriptor!,
            data: null,
            peer: info.frontendId,
            maxFrame: role === "back-rx" ? sendMax : recvMax,
          },
          ch.h,
          events,
        );
        res.add(`stop ${role} worker`, () => w.stop());
        return w;
      };
      const receiver = await start("back-tx", tx, txRing);
      const sender = await start("back-rx", rx, rxRing);
      sender.control.setPeerConnected(true);
      dev = new Netback(platform, backPath, info, sender, receiver, sendMax, res, timeoutMs, log);
      await dev.watchFrontend();
      await setState(xs, backPath, XenbusState.Connected);
      log.info({ frontend: info.frontendPath, peerMac: info.mac, sendMax, recvMax }, "connected");
      return dev;
    } catch (e) {
      if (dev !== null) await dev.shutdown(new NetError("DISCONNECTED", "serve failed"));
      else {
        await res.run(log);
        await setState(xs, backPath, XenbusState.Closed).catch(() => {});
      }
      throw e;
    }
  }

  /** A front end that goes Closing, Closed or away ends the connection. */
  private async watchFrontend(): Promise<void> {
    const xs = this.platform.xenstore;
    const statePath = `${this.info.frontendPath}/${FRONT_KEYS.state}`;
    this.watch = await xs.watch(statePath, `netback-${this.backPath}`, () => {
      void readState(xs, statePath).then(
        (s) => {
          if (this.closing !== null) return;
          if (s === XenbusState.Closing || s === XenbusState.Closed || s === XenbusState.Unknown) {
            this.log.info({ state: s }, "front end is closing; disconnecting");
            void this.shutdown(new NetError("DISCONNECTED", `the front end went to state ${s}`));
          }
        },
        (e) => this.log.warn({ err: e }, "cannot read the front end's state"),
      );
    });
  }

  /** Stop serving: let go of the front end's pages and ports, go Closing, then Closed. */
  disconnect(): Promise<void> {
    return this.shutdown(new NetError("DISCONNECTED", "the device was disconnected"));
  }

  private shutdown(reason: NetError): Promise<void> {
    this.closing ??= this.close(reason);
    return this.closing;
  }

  private async close(reason: NetError): Promise<void> {
    const xs = this.platform.xenstore;
    this.watch?.unwatch();
    // Release first: the front end frees its pages once it sees us Closing.
    await this.stopDataPath(reason);
    const failed = await this.resources.run(this.log);
    await setState(xs, this.backPath, XenbusState.Closing).catch((e) => this.log.warn({ err: e }, "cannot write Closing"));
    const frontState = `${this.info.frontendPath}/${FRONT_KEYS.state}`;
    const done = (s: XenbusState) => s === XenbusState.Closed || s === XenbusState.Unknown;
    await waitForState(xs, frontState, done, { timeoutMs: this.timeoutMs }).catch((e) => this.log.warn({ err: e }, "the front end did not close"));
    await setState(xs, this.backPath, XenbusState.Closed).catch((e) => this.log.warn({ err: e }, "cannot write Closed"));
    this.log.info({ leaked: failed }, "disconnected");
  }
}
