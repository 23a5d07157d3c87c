/**
 * The TX data path over the protocol core and the simulated hypervisor, front and back
 * alternating on one thread: the front copies a frame into pre-shared pages, writes
 * netif_tx_requests and pushes; the back parses the packet, grant-copies the bytes out and
 * answers every slot; the front consumes the responses. This is the per-frame work of the
 * real driver minus workers and wake-ups, so its cost is the floor the driver builds on. It
 * mirrors `tx_front_send` / `tx_back_receive` of the C reference (bench/c/netif-ref.c): a
 * frame larger than a page goes as a more_data chain over consecutive slots, one page each,
 * the first request's size being the whole frame and the later ones their own length.
 */
import {
  GRANT_PAGE_SIZE,
  NETIF_RSP,
  NETTXF,
  TX_REQUEST_SIZE,
  decodeTxResponse,
  encodeTxRequest,
  encodeTxResponse,
  isTxParseError,
  parseTxPacket,
  scratchTxPacket,
  type TxPacket,
  type TxRequest,
  type TxResponse,
} from "../src/protocol/index.ts";
import { RingLoop, type RingLoopHooks } from "./ring-loop-base.ts";
import { GUEST } from "./sim-link.ts";
import { copyBetween } from "../src/platform/copy-bytes.ts";
import { GNTST, type CopySegment } from "../src/platform/types.ts";

type GrantSide = { domid: number; ref: number; offset: number };
type BufSide = { buf: Uint8Array; offset: number };

export class TxRingLoop extends RingLoop {
  private readonly sink: Uint8Array;
  private readonly seg: CopySegment;
  private readonly rsp: TxResponse = { id: 0, status: 0 };
  private readonly pkt = scratchTxPacket();
  private readonly segs: CopySegment[];
  /** Multi-page frames: one segment per fragment, and the request being written. */
  private readonly chainSegs: CopySegment[];
  private readonly req: TxRequest = { gref: 0, offset: 0, flags: 0, id: 0, size: 0 };

  constructor(
    frameSize: number,
    hooks: RingLoopHooks = {},
  ) {
    super(frameSize, TX_REQUEST_SIZE, false, hooks);
    this.sink = new Uint8Array(Math.max(frameSize, GRANT_PAGE_SIZE));
    this.seg = { source: { domid: GUEST, ref: 0, offset: 0 }, dest: { buf: this.sink, offset: 0 }, len: frameSize };
    this.segs = [this.seg];
    this.chainSegs = Array.from({ length: this.slotsPerFrame }, () => ({
      source: { domid: GUEST, ref: 0, offset: 0 },
      dest: { buf: this.sink, offset: 0 },
      len: 0,
    }));
  }

  /** Move `n` frames through the ring and back (n × slotsPerFrame ≤ 256). */
  step(n: number): void {
    this.checkStep(n);
    const f = this.front;
    if (this.slotsPerFrame === 1) {
      for (let i = 0; i < n; i++) {
        if (this.sendHook !== undefined) this.sendHook(this.frame, this.sent + i);
        const slot = f.reqProdPvt & f.mask;
        copyBetween(this.pagesAt[slot]!, 0, this.frameAt, 0, this.frameSize);
        encodeTxRequest(f.view, f.slotOffset(f.reqProdPvt), { gref: this.refs[slot]!, offset: 0, flags: 0, id: slot, size: this.frameSize });
        f.reqProdPvt = (f.reqProdPvt + 1) >>> 0;
      }
    } else {
      for (let i = 0; i < n; i++) this.sendChain(this.sent + i);
    }
    this.sent += n;
    f.pushRequests();

    const b = this.back;
    let avail = b.unconsumedRequests();
    let got = 0;
    while (avail > 0) {
      const p = parseTxPacket(b, b.reqCons, avail, undefined, this.pkt);
      if (isTxParseError(p)) throw p.error;
      if (p.slots === 1) {
        const frag = p.frags[0]!;
        const src = this.seg.source as GrantSide;
        src.ref = frag.gref;
        src.offset = frag.offset;
        this.seg.len = frag.size;
        this.gnttab.copy(this.segs);
        if (this.seg.status !== GNTST.okay) throw new Error(`grant copy failed: ${this.seg.status}`);
        encodeTxResponse(b.view, b.slotOffset(b.rspProdPvt), { id: frag.id, status: NETIF_RSP.okay });
        b.rspProdPvt = (b.rspProdPvt + 1) >>> 0;
      } else {
        this.receiveChain(p);
      }
      b.reqCons = (b.reqCons + p.slots) >>> 0;
      avail -= p.slots;
      if (this.receiveHook !== undefined) this.receiveHook(this.sink, p.size, this.received + got);
      got++;
    }
    this.received += got;
    b.pushResponses();

    let done = f.unconsumedResponses();
    while (done-- > 0) {
      decodeTxResponse(f.view, f.slotOffset(f.rspCons), this.rsp);
      if (this.rsp.status !== NETIF_RSP.okay) throw new Error(`frame ${this.rsp.id} failed: ${this.rsp.status}`);
      f.rspCons = (f.rspCons + 1) >>> 0;
    }
    this.checksum = (this.checksum + this.sink[this.frameSize - 1]!) | 0;
  }

  /** A multi-page frame: one page and one request per 4096 bytes, more_data on all but the last. */
  private sendChain(seq: number): void {
    const f = this.front;
    const frame = this.frame;
    const nfrag = this.slotsPerFrame;
    const req = this.req;
    if (this.sendHook !== undefined) this.sendHook(frame, seq);
    for (let j = 0, pos = 0; j < nfrag; j++, pos += GRANT_PAGE_SIZE) {
      const slot = f.reqProdPvt & f.mask;
      const len = Math.min(GRANT_PAGE_SIZE, this.frameSize - pos);
      copyBetween(this.pagesAt[slot]!, 0, this.frameAt, pos, len);
      req.gref = this.refs[slot]!;
      req.offset = 0;
      req.flags = j + 1 < nfrag ? NETTXF.moreData : 0;
      req.id = slot;
      req.size = j === 0 ? this.frameSize : len; // the first request carries the whole frame
      encodeTxRequest(f.view, f.slotOffset(f.reqProdPvt), req);
      f.reqProdPvt = (f.reqProdPvt + 1) >>> 0;
    }
  }

  /** Grant-copy every fragment of a chain to its place in the sink, answer every slot. */
  private receiveChain(p: TxPacket): void {
    const b = this.back;
    const frags = p.frags;
    const segs = this.chainSegs;
    if (frags.length !== segs.length) throw new Error(`packet of ${frags.length} fragments, expected ${segs.length}`);
    let pos = 0;
    for (let j = 0; j < frags.length; j++) {
      const frag = frags[j]!;
      const s = segs[j]!;
      const src = s.source as GrantSide;
      src.ref = frag.gref;
      src.offset = frag.offset;
      (s.dest as BufSide).offset = pos;
      s.len = frag.size;
      pos += frag.size;
    }
    if (pos !== p.size) throw new Error(`fragments add up to ${pos} bytes, packet says ${p.size}`);
    this.gnttab.copy(segs);
    const rsp = this.rsp;
    rsp.status = NETIF_RSP.okay;
    for (let j = 0; j < frags.length; j++) {
      if (segs[j]!.status !== GNTST.okay) throw new Error(`grant copy of fragment ${j} failed: ${segs[j]!.status}`);
      rsp.id = frags[j]!.id;
      encodeTxResponse(b.view, b.slotOffset(b.rspProdPvt), rsp);
      b.rspProdPvt = (b.rspProdPvt + 1) >>> 0;
    }
  }

  /** Unmap the ring and end the front's grants; the hypervisor then holds nothing of ours. */
}

export type { RingLoopHooks };
