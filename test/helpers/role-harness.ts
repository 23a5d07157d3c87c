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
import { PeerNotifier, type RingWorkerInit } from "../../src/workers/role.ts";

function machine() {
  const hv = SimHypervisor.create({ pages: 1024 });
  const guest = hv.createDomain();
  return { hv, guest, front: hv.platform(guest), back: hv.platform(0) };
}

/** Our FrontRx against a scripted back end (which holds the BackRing and may grant-copy). */
export function frontRxHarness() {
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
    queue: createFrameQueueState(1 << 20),
    ring: ring.descriptor,
    data: { pages: data.descriptor, refs: [...data.refs] },
    peer: 0,
    maxFrame: 65549,
  };
  const ctl = new Control(init.control);
  const q = new FrameQueue(init.queue);
  const errors: ProtocolError[] = [];
  const role = new FrontRx(init, q, ctl, new PeerNotifier(fh, port, ctl), (e) => errors.push(e));
  const mapped = back.gnttab.map(guest, ring.refs, true);
  const peer = new BackRing(mapped.pages[0]!, RX_REQUEST_SIZE);
  peer.attach();
  return { hv, guest, back, role, ctl, q, errors, peer, dataPages: data.pages, close: () => { back.gnttab.unmap(mapped); front.close(); back.close(); } };
}

/** Our BackTx against a scripted front end (which holds the FrontRing and shares pages). */
export function backTxHarness() {
  const { hv, guest, front, back } = machine();
  const ring = front.gnttab.share(0, 1, true);
  const data = front.gnttab.share(0, 16, false);
  const fh = front.openEventChannels();
  const fport = fh.allocUnbound(0);
  const bh = back.openEventChannels();
  const port = bh.bindInterdomain(guest, fport);
  const peer = new FrontRing(ring.pages[0]!, TX_REQUEST_SIZE);
  peer.init();
  const mapped = back.gnttab.map(guest, ring.refs, true);
  const init: RingWorkerInit = {
    role: "back-tx",
    platform: back.descriptor,
    evtchn: bh.descriptor,
    port,
    control: createControlState(),
    queue: createFrameQueueState(1 << 20),
    ring: mapped.descriptor!,
    data: null,
    peer: guest,
    maxFrame: 65535,
  };
  const ctl = new Control(init.control);
  const q = new FrameQueue(init.queue);
  const errors: ProtocolError[] = [];
  const role = new BackTx(init, q, ctl, new PeerNotifier(bh, port, ctl), back.gnttab, (e) => errors.push(e));
  return { hv, guest, role, ctl, q, errors, peer, pages: data.pages, refs: data.refs, close: () => { back.gnttab.unmap(mapped); front.close(); back.close(); } };
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
