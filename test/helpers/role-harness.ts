/**
 * A ring worker's role run in this thread against a scripted peer: the test plays the other
 * domain, writing whatever it likes into the shared ring, and calls the role's poll() itself.
 * No worker, no timing: every step is deterministic.
 */
import { BackRing, FrontRing, RX_REQUEST_SIZE, TX_REQUEST_SIZE, type ProtocolError } from "../../src/protocol/index.ts";
import { SimHypervisor } from "../../src/platform/sim/index.ts";
import type { EventChannels, GrantTable } from "../../src/platform/types.ts";
import { Control, createControlState } from "../../src/workers/control.ts";
import { FrameQueue, createFrameQueueState } from "../../src/workers/frame-queue.ts";
import { BackRx } from "../../src/workers/back-rx.ts";
import { BackTx } from "../../src/workers/back-tx.ts";
import { FrontRx } from "../../src/workers/front-rx.ts";
import { FrontTx } from "../../src/workers/front-tx.ts";
import { PeerNotifier, type RingRole, type RingWorkerInit, type RoleName } from "../../src/workers/role.ts";

interface Built<R> {
  hv: SimHypervisor;
  guest: number;
  role: R;
  ctl: Control;
  q: FrameQueue;
  errors: ProtocolError[];
  /** The guest's data pages and their grant refs. */
  pages: readonly Uint8Array[];
  refs: readonly number[];
  /** The grant table our role was given (tests may watch its calls). */
  gnttab: GrantTable;
  close(): void;
}

type MakeRole<R> = (init: RingWorkerInit, q: FrameQueue, ctl: Control, kick: PeerNotifier, gnttab: GrantTable, onError: (e: ProtocolError) => void) => R;

/**
 * A guest (domain 1) shares a ring page and `dataPages` pages with dom0 and allocates the
 * channel; dom0 maps the ring and binds. `ours` says which end runs our role: the guest (a
 * front-end role, the scripted peer gets dom0's mapping) or dom0 (a back-end role).
 */
function build<R extends RingRole>(
  role: RoleName,
  ours: "front" | "back",
  dataPages: number,
  dataWritable: boolean,
  queueBytes: number,
  maxFrame: number,
  make: MakeRole<R>,
): Built<R> & { peerPage: Uint8Array; renew(): void } {
  const hv = SimHypervisor.create({ pages: 1024 });
  const guest = hv.createDomain();
  const front = hv.platform(guest);
  const back = hv.platform(0);
  const ring = front.gnttab.share(0, 1, true);
  const data = front.gnttab.share(0, dataPages, dataWritable);
  const fh = front.openEventChannels();
  const fport = fh.allocUnbound(0);
  const bh = back.openEventChannels();
  const bport = bh.bindInterdomain(guest, fport);
  const mapped = back.gnttab.map(guest, ring.refs, true);
  const mine: { platform: typeof front; h: EventChannels; port: number } = ours === "front" ? { platform: front, h: fh, port: fport } : { platform: back, h: bh, port: bport };
  const init: RingWorkerInit = {
    role,
    platform: mine.platform.descriptor,
    evtchn: mine.h.descriptor,
    port: mine.port,
    control: createControlState(),
    queue: createFrameQueueState(queueBytes),
    ring: ours === "front" ? ring.descriptor : mapped.descriptor!,
    data: ours === "front" ? { pages: data.descriptor, refs: [...data.refs] } : null,
    peer: ours === "front" ? 0 : guest,
    maxFrame,
    spinMicros: 0,
  };
  const ctl = new Control(init.control);
  const q = new FrameQueue(init.queue);
  const errors: ProtocolError[] = [];
  const h = {
    hv,
    guest,
    role: null as unknown as R,
    ctl,
    q,
    errors,
    pages: data.pages,
    refs: data.refs,
    /** The grant table our role was given (tests may watch its calls). */
    gnttab: mine.platform.gnttab,
    /** The ring page as the scripted peer sees it. */
    peerPage: ours === "front" ? mapped.pages[0]! : ring.pages[0]!,
    /** A fresh role on the same pages, as after a reconnect. */
    renew() {
      h.role = make(init, q, ctl, new PeerNotifier(mine.h, mine.port, ctl), mine.platform.gnttab, (e) => errors.push(e));
    },
    close() {
      back.gnttab.unmap(mapped);
      front.close();
      back.close();
    },
  };
  return h;
}

/** Our FrontRx against a scripted back end (which holds the BackRing and fills our pages). */
export function frontRxHarness(queueBytes = 1 << 20) {
  const b = build("front-rx", "front", 256, true, queueBytes, 65549, (i, q, c, k, _g, e) => new FrontRx(i, q, c, k, e));
  const peer = new BackRing(b.peerPage, RX_REQUEST_SIZE);
  const reset = () => {
    b.renew(); // the role initialises the ring and posts its buffers
    peer.attach();
  };
  reset();
  return Object.assign(b, { peer, dataPages: b.pages, reset });
}

/** Our FrontTx against a scripted back end that answers (or mangles) its requests. */
export function frontTxHarness() {
  const b = build("front-tx", "front", 256, false, 4 << 20, 65535, (i, q, c, k, _g, e) => new FrontTx(i, q, c, k, e));
  b.ctl.setPeerConnected(true);
  const peer = new BackRing(b.peerPage, TX_REQUEST_SIZE);
  const reset = () => {
    b.renew();
    peer.attach();
  };
  reset();
  return Object.assign(b, { peer, reset });
}

/** Our BackTx against a scripted front end (which holds the FrontRing and shares pages). */
export function backTxHarness(queueBytes = 1 << 20) {
  const b = build("back-tx", "back", 16, false, queueBytes, 65535, (i, q, c, k, g, e) => new BackTx(i, q, c, k, g, e));
  const peer = new FrontRing(b.peerPage, TX_REQUEST_SIZE);
  const reset = () => {
    peer.init(); // the front end initialises; the role attaches
    b.renew();
  };
  reset();
  return Object.assign(b, { peer, reset });
}

/** Our BackRx against a scripted front end that posts (or mangles) RX buffers, one page per slot. */
export function backRxHarness(queueBytes = 4 << 20) {
  const b = build("back-rx", "back", 256, true, queueBytes, 65549, (i, q, c, k, g, e) => new BackRx(i, q, c, k, g, e));
  const peer = new FrontRing(b.peerPage, RX_REQUEST_SIZE);
  const reset = () => {
    peer.init();
    b.renew();
  };
  reset();
  return Object.assign(b, { peer, reset });
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
