/**
 * A ring worker's role run in this thread against a scripted peer: the test plays the other
 * domain, writing whatever it likes into the shared ring, and calls the role's poll() itself.
 * No worker, no timing: every step is deterministic.
 */
import { BackRing, FrontRing, RX_REQUEST_SIZE, TX_REQUEST_SIZE, type ProtocolError } from "../../src/protocol/index.ts";
import { SimHypervisor } from "../../src/platform/sim/index.ts";
import { Control, createControlState } from "../../src/workers/control.ts";
import { FrameQueue, createFrameQueueState } from "../../src/workers/frame-queue.ts";
import { FrontRx } from "../../src/workers/front-rx.ts";
import { BackTx } from "../../src/workers/back-tx.ts";
import { FrontTx } from "../../src/workers/front-tx.ts";
import { BackRx } from "../../src/workers/back-rx.ts";
import { PeerNotifier, type RingWorkerInit } from "../../src/workers/role.ts";

function machine() {
  const hv = SimHypervisor.create({ pages: 1024 });
  const guest = hv.createDomain();
  return { hv, guest, front: hv.platform(guest), back: hv.platform(0) };
}

/** Our FrontRx against a scripted back end (which holds the BackRing and may grant-copy). */
export function frontRxHarness(queueBytes = 1 << 20) {
  const { hv, guest, front, back } = machine();
  const ring = front.gnttab.share(0, 1, true);
  const data = front.gnttab.share(0, 256, true);
  const fh = front.openEventChannels();
  const port = fh.allocUnbound(0);
  const bh = back.openEventChannels();
  bh.bindInterdomain(guest, port);
  const init: RingWorkerInit = {
    role: "front-rx",
    platform: front.descriptor,
    evtchn: fh.descriptor,
    port,
    control: createControlState(),
    queue: createFrameQueueState(queueBytes),
    ring: ring.descriptor,
    data: { pages: data.descriptor, refs: [...data.refs] },
    peer: 0,
    maxFrame: 65549,
  };
  const ctl = new Control(init.control);
  const q = new FrameQueue(init.queue);
  const errors: ProtocolError[] = [];
  const mapped = back.gnttab.map(guest, ring.refs, true);
  const peer = new BackRing(mapped.pages[0]!, RX_REQUEST_SIZE);
  const h = {
    hv,
    guest,
    back,
    role: null as unknown as FrontRx,
    ctl,
    q,
    errors,
    peer,
    dataPages: data.pages,
    /** A fresh FrontRx on the same pages (as after a reconnect): ring re-initialised, buffers posted. */
    reset() {
      h.role = new FrontRx(init, q, ctl, new PeerNotifier(fh, port, ctl), (e) => errors.push(e));
      peer.attach();
    },
    close: () => {
      back.gnttab.unmap(mapped);
      front.close();
      back.close();
    },
  };
  h.reset();
  return h;
}

/** Our BackTx against a scripted front end (which holds the FrontRing and shares pages). */
export function backTxHarness(queueBytes = 1 << 20) {
  const { hv, guest, front, back } = machine();
  const ring = front.gnttab.share(0, 1, true);
  const data = front.gnttab.share(0, 16, false);
  const fh = front.openEventChannels();
  const fport = fh.allocUnbound(0);
  const bh = back.openEventChannels();
  const port = bh.bindInterdomain(guest, fport);
  const peer = new FrontRing(ring.pages[0]!, TX_REQUEST_SIZE);
  const mapped = back.gnttab.map(guest, ring.refs, true);
  const init: RingWorkerInit = {
    role: "back-tx",
    platform: back.descriptor,
    evtchn: bh.descriptor,
    port,
    control: createControlState(),
    queue: createFrameQueueState(queueBytes),
    ring: mapped.descriptor!,
    data: null,
    peer: guest,
    maxFrame: 65535,
  };
  const ctl = new Control(init.control);
  const q = new FrameQueue(init.queue);
  const errors: ProtocolError[] = [];
  const h = {
    hv,
    guest,
    role: null as unknown as BackTx,
    ctl,
    q,
    errors,
    peer,
    pages: data.pages,
    refs: data.refs,
    /** A fresh ring and a fresh BackTx (as after the front end reconnects). */
    reset() {
      peer.init();
      h.role = new BackTx(init, q, ctl, new PeerNotifier(bh, port, ctl), back.gnttab, (e) => errors.push(e));
    },
    close: () => {
      back.gnttab.unmap(mapped);
      front.close();
      back.close();
    },
  };
  h.reset();
  return h;
}

/** Take every frame queued for the main thread: bytes and meta. */
export function drainQueue(q: FrameQueue): { bytes: Uint8Array; meta: number }[] {
  const out: { bytes: Uint8Array; meta: number }[] = [];
  for (let off = q.peek(); off >= 0; off = q.peek()) {
    out.push({ bytes: q.data.slice(off, off + q.recordLength(off)), meta: q.recordMeta(off) });
    q.release(off);
  }
  return out;
}

/** Our FrontTx against a scripted back end that answers (or mangles) its requests. */
export function frontTxHarness() {
  const { hv, guest, front, back } = machine();
  const ring = front.gnttab.share(0, 1, true);
  const data = front.gnttab.share(0, 256, false);
  const fh = front.openEventChannels();
  const port = fh.allocUnbound(0);
  back.openEventChannels().bindInterdomain(guest, port);
  const init: RingWorkerInit = {
    role: "front-tx",
    platform: front.descriptor,
    evtchn: fh.descriptor,
    port,
    control: createControlState(),
    queue: createFrameQueueState(4 << 20),
    ring: ring.descriptor,
    data: { pages: data.descriptor, refs: [...data.refs] },
    peer: 0,
    maxFrame: 65535,
  };
  const ctl = new Control(init.control);
  ctl.setPeerConnected(true);
  const q = new FrameQueue(init.queue);
  const errors: ProtocolError[] = [];
  const mapped = back.gnttab.map(guest, ring.refs, true);
  const peer = new BackRing(mapped.pages[0]!, TX_REQUEST_SIZE);
  const h = {
    role: null as unknown as FrontTx,
    ctl,
    q,
    errors,
    peer,
    reset() {
      h.role = new FrontTx(init, q, ctl, new PeerNotifier(fh, port, ctl), (e) => errors.push(e));
      peer.attach();
    },
    close: () => {
      back.gnttab.unmap(mapped);
      front.close();
      back.close();
    },
  };
  h.reset();
  void hv;
  return h;
}

/** Our BackRx against a scripted front end that posts (or mangles) RX buffers. */
export function backRxHarness() {
  const { hv, guest, front, back } = machine();
  const ring = front.gnttab.share(0, 1, true);
  const data = front.gnttab.share(0, 256, true);
  const fh = front.openEventChannels();
  const fport = fh.allocUnbound(0);
  const bh = back.openEventChannels();
  const port = bh.bindInterdomain(guest, fport);
  const peer = new FrontRing(ring.pages[0]!, RX_REQUEST_SIZE);
  const mapped = back.gnttab.map(guest, ring.refs, true);
  const init: RingWorkerInit = {
    role: "back-rx",
    platform: back.descriptor,
    evtchn: bh.descriptor,
    port,
    control: createControlState(),
    queue: createFrameQueueState(4 << 20),
    ring: mapped.descriptor!,
    data: null,
    peer: guest,
    maxFrame: 65549,
  };
  const ctl = new Control(init.control);
  const q = new FrameQueue(init.queue);
  const errors: ProtocolError[] = [];
  const h = {
    role: null as unknown as BackRx,
    ctl,
    q,
    errors,
    peer,
    pages: data.pages,
    refs: data.refs,
    reset() {
      peer.init();
      h.role = new BackRx(init, q, ctl, new PeerNotifier(bh, port, ctl), back.gnttab, (e) => errors.push(e));
    },
    close: () => {
      back.gnttab.unmap(mapped);
      front.close();
      back.close();
    },
  };
  h.reset();
  void hv;
  return h;
}
