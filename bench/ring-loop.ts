/**
 * The TX data path over the protocol core and the simulated hypervisor, front and back
 * alternating on one thread: the front copies a frame into a pre-shared page, writes a
 * netif_tx_request and pushes; the back parses the packet, grant-copies the bytes out and
 * answers; the front consumes the response. This is the per-frame work of the real driver
 * minus workers and wake-ups, so its cost is the floor the driver builds on.
 */
import {
  BackRing,
  FrontRing,
  NETIF_RSP,
  TX_REQUEST_SIZE,
  decodeTxResponse,
  encodeTxRequest,
  encodeTxResponse,
  isTxParseError,
  parseTxPacket,
  scratchTxPacket,
  type TxResponse,
} from "../src/protocol/index.ts";
import { SimHypervisor } from "../src/platform/sim/index.ts";
import { GNTST, type CopySegment } from "../src/platform/types.ts";

export class TxRingLoop {
  readonly hv = SimHypervisor.create({ pages: 1024 });
  private readonly front: FrontRing;
  private readonly back: BackRing;
  private readonly pages: Uint8Array[];
  private readonly refs: readonly number[];
  private readonly frame: Uint8Array;
  private readonly sink: Uint8Array;
  private readonly seg: CopySegment;
  private readonly rsp: TxResponse = { id: 0, status: 0 };
  private readonly gnttab;
  private readonly pkt = scratchTxPacket();
  private readonly segs: CopySegment[];
  checksum = 0;

  constructor(readonly frameSize: number) {
    if (frameSize > 4096) throw new RangeError("the ring loop moves single-page frames");
    const fe = this.hv.platform(this.hv.createDomain(1));
    this.gnttab = this.hv.platform(0).gnttab;
    const ring = fe.gnttab.share(0, 1, true);
    // One data page per ring slot, shared once and reused: no grant per packet.
    const data = fe.gnttab.share(0, 256, false);
    this.pages = [...data.pages];
    this.refs = data.refs;
    this.front = new FrontRing(ring.pages[0]!, TX_REQUEST_SIZE);
    this.front.init();
    this.back = new BackRing(this.hv.platform(0).gnttab.map(1, ring.refs, true).pages[0]!, TX_REQUEST_SIZE);
    this.back.attach();
    this.frame = new Uint8Array(frameSize).map((_, i) => i * 7);
    this.sink = new Uint8Array(4096);
    this.seg = { source: { domid: 1, ref: 0, offset: 0 }, dest: { buf: this.sink, offset: 0 }, len: frameSize };
    this.segs = [this.seg];
  }

  /** Move `n` frames (n ≤ 256) through the ring and back. */
  step(n: number): void {
    const f = this.front;
    for (let i = 0; i < n; i++) {
      const slot = f.reqProdPvt & f.mask;
      this.pages[slot]!.set(this.frame);
      encodeTxRequest(f.view, f.slotOffset(f.reqProdPvt), { gref: this.refs[slot]!, offset: 0, flags: 0, id: slot, size: this.frameSize });
      f.reqProdPvt = (f.reqProdPvt + 1) >>> 0;
    }
    f.pushRequests();

    const b = this.back;
    let avail = b.unconsumedRequests();
    while (avail > 0) {
      const p = parseTxPacket(b, b.reqCons, avail, undefined, this.pkt);
      if (isTxParseError(p)) throw p.error;
      const frag = p.frags[0]!;
      const src = this.seg.source as { domid: number; ref: number; offset: number };
      src.ref = frag.gref;
      src.offset = frag.offset;
      this.seg.len = frag.size;
      this.gnttab.copy(this.segs);
      if (this.seg.status !== GNTST.okay) throw new Error(`grant copy failed: ${this.seg.status}`);
      encodeTxResponse(b.view, b.slotOffset(b.rspProdPvt), { id: frag.id, status: NETIF_RSP.okay });
      b.rspProdPvt = (b.rspProdPvt + 1) >>> 0;
      b.reqCons = (b.reqCons + p.slots) >>> 0;
      avail -= p.slots;
    }
    b.pushResponses();

    let done = f.unconsumedResponses();
    while (done-- > 0) {
      decodeTxResponse(f.view, f.slotOffset(f.rspCons), this.rsp);
      if (this.rsp.status !== NETIF_RSP.okay) throw new Error(`frame ${this.rsp.id} failed: ${this.rsp.status}`);
      f.rspCons = (f.rspCons + 1) >>> 0;
    }
    this.checksum = (this.checksum + this.sink[this.frameSize - 1]!) | 0;
  }
}
