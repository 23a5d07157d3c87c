/**
 * What every ring benchmark starts from: a guest and dom0 on a fresh simulated hypervisor,
 * joined as one vif ring is: the guest shares a ring page and one data page per ring slot
 * (256, shared once and reused: no grant per packet), dom0 maps the ring, and an event
 * channel connects them. `close()` takes it all down and checks that nothing leaked.
 */
import { SimHypervisor } from "../src/platform/sim/index.ts";
import type { EventChannels, MappedPages, SharedPages } from "../src/platform/types.ts";
import { createControlState } from "../src/workers/control.ts";
import { createFrameQueueState } from "../src/workers/frame-queue.ts";
import type { RingWorkerInit } from "../src/workers/role.ts";

export const GUEST = 1;

export interface SimLink {
  hv: SimHypervisor;
  /** The guest's (front end's) view of the shared ring page and data pages. */
  ring: SharedPages;
  data: SharedPages;
  /** dom0's (back end's) mapping of the ring page. */
  mapped: MappedPages<Uint8Array>;
  /** The event channel: the guest's end, then dom0's. */
  front: { h: EventChannels; port: number };
  back: { h: EventChannels; port: number };
  close(): void;
}

/** `dataWritable`: TX pages are only read by the back end; RX pages are written into by it. */
export function simLink(dataWritable: boolean, pages = 1024): SimLink {
  const hv = SimHypervisor.create({ pages });
  const fe = hv.platform(hv.createDomain(GUEST));
  const be = hv.platform(0);
  const ring = fe.gnttab.share(0, 1, true);
  const data = fe.gnttab.share(0, 256, dataWritable);
  const fh = fe.openEventChannels();
  const fport = fh.allocUnbound(0);
  const bh = be.openEventChannels();
  const bport = bh.bindInterdomain(GUEST, fport);
  const mapped = be.gnttab.map(GUEST, ring.refs, true);
  let closed = false;
  return {
    hv,
    ring,
    data,
    mapped,
    front: { h: fh, port: fport },
    back: { h: bh, port: bport },
    close() {
      if (closed) return;
      closed = true;
      be.gnttab.unmap(mapped);
      fe.gnttab.unshare(data);
      fe.gnttab.unshare(ring);
      fe.close();
      be.close();
      hv.assertNoLeaks([GUEST]);
    },
  };
}

/** The devices' default frame queue size. */
export const QUEUE_BYTES = 4 << 20;

/**
 * What a ring worker of each end gets for one direction over `link` (a TX link for "tx", an
 * RX link for "rx"): our front role on the guest's side, our back role on dom0's, each with
 * its own control block and frame queue.
 */
export function roleInits(link: SimLink, dir: "tx" | "rx", spinMicros: number): { front: RingWorkerInit; back: RingWorkerInit } {
  const common = { maxFrame: dir === "tx" ? 65535 : 65549, spinMicros };
  return {
    front: {
      ...common,
      role: dir === "tx" ? "front-tx" : "front-rx",
      platform: link.hv.platform(GUEST).descriptor,
      evtchn: link.front.h.descriptor,
      port: link.front.port,
      control: createControlState(),
      queue: createFrameQueueState(QUEUE_BYTES),
      ring: link.ring.descriptor,
      data: { pages: link.data.descriptor, refs: [...link.data.refs] },
      peer: 0,
    },
    back: {
      ...common,
      role: dir === "tx" ? "back-tx" : "back-rx",
      platform: link.hv.platform(0).descriptor,
      evtchn: link.back.h.descriptor,
      port: link.back.port,
      control: createControlState(),
      queue: createFrameQueueState(QUEUE_BYTES),
      ring: link.mapped.descriptor!,
      data: null,
      peer: GUEST,
    },
  };
}
