/** One domain's view of the simulated hypervisor: the Platform interface, sim flavour. */
import { PlatformError, type DeviceClaim, type DomId, type EventChannels, type EventWaiter, type Platform, type PlatformDescriptor } from "../types.ts";
import { SimEventChannels, SimEventWaiter, type SimEventChannelsDescriptor } from "./event-channels.ts";
import { SimGrantTable } from "./grant-table.ts";
import type { SimHypervisor } from "./hypervisor.ts";
import { SimXenStore } from "./xenstore.ts";

export class SimPlatform implements Platform {
  readonly kind = "sim" as const;
  readonly gnttab: SimGrantTable;
  private store: SimXenStore | null = null;
  private readonly handles = new Set<SimEventChannels>();

  constructor(
    readonly hv: SimHypervisor,
    readonly domid: DomId,
  ) {
    this.gnttab = new SimGrantTable(hv.grants, domid);
  }

  /** Opened on first use: a xenstore connection runs a watch loop only once it has watches. */
  get xenstore(): SimXenStore {
    this.store ??= new SimXenStore(this.hv.xenstore, this.domid);
    return this.store;
  }

  claimDevice(dir: string): DeviceClaim | null {
    return this.hv.claimDevice(dir);
  }

  get descriptor(): PlatformDescriptor {
    return { kind: "sim", domid: this.domid, params: this.hv.state };
  }

  openEventChannels(descriptor?: unknown): EventChannels {
    let h: SimEventChannels;
    if (descriptor === undefined) {
      h = new SimEventChannels(this.hv.evtchn, this.domid, this.hv.evtchn.openHandle(this.domid));
      this.handles.add(h);
    } else {
      const d = descriptor as Partial<SimEventChannelsDescriptor>;
      if (d?.kind !== "sim-evtchn" || d.domid !== this.domid || typeof d.handle !== "number") {
        throw new PlatformError("EINVAL", "evtchn.open", `not a simulated event-channel handle of domain ${this.domid}`);
      }
      // A rewrapped handle belongs to the thread that opened it: closing ours must not close theirs.
      h = new SimEventChannels(this.hv.evtchn, this.domid, d.handle, d.via === true);
    }
    return h;
  }

  openEventWaiter(descriptor?: unknown): EventWaiter {
    return descriptor === undefined ? SimEventWaiter.open(this.hv.evtchn) : SimEventWaiter.fromDescriptor(this.hv.evtchn, descriptor);
  }

  eventChannelsVia(waiter: EventWaiter): EventChannels {
    if (!(waiter instanceof SimEventWaiter)) throw new PlatformError("EINVAL", "evtchn.via", "not a waiter of this simulated machine");
    return waiter.viewFor(this.domid);
  }

  /** Close the xenstore connection and every event-channel handle this view opened. */
  close(): void {
    this.store?.close();
    this.store = null;
    for (const h of this.handles) h.close();
    this.handles.clear();
  }
}
