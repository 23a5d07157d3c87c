/**
 * One domain's view of real Xen: the Platform interface over Linux's devices
 * (/dev/xen/gntalloc, gntdev, evtchn) and xenstore (xenstored's socket or /dev/xen/xenbus).
 *
 * Typechecked and built from the uapi headers and the tested codecs; not yet run on Xen.
 *
 *   const p = await createXenPlatform();            // learns its domid from xenstore
 *   worker.postMessage(p.descriptor);               // the worker: openXenPlatform(descriptor)
 *
 * A worker's view opens its own gntalloc/gntdev descriptors and xenstore connection (lazily);
 * event-channel handles cross as descriptors (fd numbers, valid in every thread).
 */
import { PlatformError, type DeviceClaim, type DomId, type EventChannels, type EventWaiter, type Platform, type PlatformDescriptor } from "../types.ts";
import { claimXenDevice } from "./device-lock.ts";
import { EVTCHN_DEVICE, XenEventChannels, XenEventWaiter } from "./event-channels.ts";
import { GNTALLOC_DEVICE, GNTDEV_DEVICE, XenGrantTable } from "./grant-table.ts";
import { XenStoreClient, type XenStoreClientOptions } from "./xenstore-client.ts";
import { XENBUS_DEVICE, XENSTORED_SOCKETS, connectXenstoredSocket, deferredTransport, openXenbusDevice } from "./xenstore-transport.ts";
import { existsSync } from "node:fs";

export interface XenDevices {
  evtchn: string;
  gntalloc: string;
  gntdev: string;
  xenbus: string;
}

export const DEFAULT_XEN_DEVICES: Readonly<XenDevices> = Object.freeze({
  evtchn: EVTCHN_DEVICE,
  gntalloc: GNTALLOC_DEVICE,
  gntdev: GNTDEV_DEVICE,
  xenbus: XENBUS_DEVICE,
});

/** The `params` of a xen PlatformDescriptor: plain data, postable. */
export interface XenPlatformParams {
  devices: XenDevices;
  /** xenstored's unix socket; null: talk to xenstore through the xenbus device. */
  xenstoreSocket: string | null;
  /** Bound on every xenstore request, ms. */
  xenstoreTimeoutMs: number;
}

export class XenPlatform implements Platform {
  readonly kind = "xen" as const;
  readonly gnttab: XenGrantTable;
  private store: XenStoreClient | null;
  private readonly handles = new Set<XenEventChannels>();

  constructor(
    readonly domid: DomId,
    readonly params: XenPlatformParams,
    xenstore: XenStoreClient | null = null,
  ) {
    if (!Number.isInteger(domid) || domid < 0 || domid > 0x7fef) throw new PlatformError("EINVAL", "platform.open", `not a domain id: ${String(domid)}`);
    this.gnttab = new XenGrantTable(domid, params.devices);
    this.store = xenstore;
  }

  /** Connected on first use. */
  get xenstore(): XenStoreClient {
    this.store ??= connectXenStore(this.params);
    return this.store;
  }

  get descriptor(): PlatformDescriptor {
    return { kind: "xen", domid: this.domid, params: this.params };
  }

  openEventWaiter(descriptor?: unknown): EventWaiter {
    return descriptor === undefined ? XenEventWaiter.open(this.domid, this.params.devices.evtchn) : XenEventWaiter.fromDescriptor(this.domid, descriptor);
  }

  eventChannelsVia(waiter: EventWaiter): EventChannels {
    if (!(waiter instanceof XenEventWaiter)) throw new PlatformError("EINVAL", "evtchn.via", "not a real-Xen event-channel waiter");
    return waiter.view();
  }

  claimDevice(dir: string): DeviceClaim | null {
    return claimXenDevice(dir);
  }

  openEventChannels(descriptor?: unknown): EventChannels {
    if (descriptor !== undefined) return XenEventChannels.fromDescriptor(this.domid, descriptor);
    const h = XenEventChannels.open(this.domid, this.params.devices.evtchn);
    this.handles.add(h);
    return h;
  }

  /** Close the xenstore connection, the event-channel handles this view opened, and the grant devices (live shares and maps are released first). */
  close(): void {
    this.store?.close();
    this.store = null;
    for (const h of this.handles) h.close();
    this.handles.clear();
    this.gnttab.close();
  }
}

function connectXenStore(params: XenPlatformParams, opts: XenStoreClientOptions = {}): XenStoreClient {
  const transport =
    params.xenstoreSocket !== null ? deferredTransport(connectXenstoredSocket(params.xenstoreSocket)) : openXenbusDevice(params.devices.xenbus);
  return new XenStoreClient(transport, { timeoutMs: params.xenstoreTimeoutMs, ...opts });
}

export interface CreateXenPlatformOptions {
  /** Our domain id; by default read from xenstore (the relative key `domid`). */
  domid?: DomId;
  devices?: Partial<XenDevices>;
  /** xenstored's socket path, or null for /dev/xen/xenbus; by default the socket if one exists. */
  xenstoreSocket?: string | null;
  xenstoreTimeoutMs?: number;
}

/** Open this domain's view of Xen (the main thread's entry point). */
export async function createXenPlatform(opts: CreateXenPlatformOptions = {}): Promise<XenPlatform> {
  const params: XenPlatformParams = {
    devices: { ...DEFAULT_XEN_DEVICES, ...opts.devices },
    xenstoreSocket: opts.xenstoreSocket !== undefined ? opts.xenstoreSocket : (XENSTORED_SOCKETS.find((p) => existsSync(p)) ?? null),
    xenstoreTimeoutMs: opts.xenstoreTimeoutMs ?? 10_000,
  };
  const xs = connectXenStore(params);
  let domid = opts.domid;
  if (domid === undefined) {
    try {
      const s = await xs.read("domid");
      domid = s !== null && /^\d+$/.test(s) ? Number(s) : NaN;
      if (!Number.isInteger(domid)) throw new PlatformError("ENOENT", "platform.open", `xenstore has no usable "domid" for this domain (${JSON.stringify(s)}): pass opts.domid`);
    } catch (e) {
      xs.close();
      throw e;
    }
  }
  return new XenPlatform(domid, params, xs);
}

/** Rebuild a domain's view from its descriptor (what openPlatform does for kind "xen"). */
export function openXenPlatform(d: PlatformDescriptor): XenPlatform {
  const p = d.params as Partial<XenPlatformParams> | null;
  const dev = p?.devices;
  if (
    d.kind !== "xen" ||
    typeof dev?.evtchn !== "string" ||
    typeof dev.gntalloc !== "string" ||
    typeof dev.gntdev !== "string" ||
    typeof dev.xenbus !== "string" ||
    (p?.xenstoreSocket !== null && typeof p?.xenstoreSocket !== "string") ||
    typeof p.xenstoreTimeoutMs !== "number"
  ) {
    throw new PlatformError("EINVAL", "platform.open", "not a xen platform descriptor");
  }
  return new XenPlatform(d.domid, { devices: { ...dev }, xenstoreSocket: p.xenstoreSocket, xenstoreTimeoutMs: p.xenstoreTimeoutMs });
}
