/**
 * The RX data path over the protocol core and the simulated hypervisor, back and front
 * alternating on one thread, as bench/ring-loop.ts does for TX. The front keeps every slot
 * of the RX ring posted with its own page (id = slot); per frame the back reads one request
 * per 4096 bytes, grant-copies the frame from its buffer into those pages and answers in the
 * same slots (status = fragment bytes, more_data on all but the last); the front parses the
 * responses as our front-rx worker does, copies the bytes out and posts the buffers again.
 * It mirrors `rx_back_send` / `rx_front_receive` of the C reference (bench/c/netif-ref.c).
 */
import {
  DEFAULT_RX_LIMITS,
  GRANT_PAGE_SIZE,
  NETRXF,
  RX_REQUEST_SIZE,
  decodeRxRequest,
  encodeRxRequest,
  encodeRxResponse,
  isRxParseError,
  parseRxPacket,
  scratchRxPacket,
  type RxRequest,
  type RxResponse,
} from "../src/protocol/index.ts";
import { RingLoop, type RingLoopHooks } from "./ring-loop-base.ts";
import { GUEST } from "./sim-link.ts";
import { AddressedBytes, copyBetween } from "../src/platform/copy-bytes.ts";
import { GNTST, type CopySegment } from "../src/platform/types.ts";


type GrantSide = { domid: number; ref: number; offset: number };

export class RxRingLoop extends RingLoop {
  /** Where the front assembles what it receives. */
  private readonly sink: Uint8Array;
  private readonly sinkAt: AddressedBytes;
  /** One grant-copy segment per fragment, source offsets and lengths fixed by the frame size. */
  private readonly segs: CopySegment[];
  private readonly backReq: RxRequest = { id: 0, gref: 0 };
  private readonly frontReq: RxRequest = { id: 0, gref: 0 };
  private readonly rsp: RxResponse = { id: 0, offset: 0, flags: 0, status: 0 };
  /** The front parses every packet into this one, as front-rx does. */
  private readonly pkt = scratchRxPacket();
  /** Bytes the front has taken off the ring. */
  bytes = 0;

  constructor(
    frameSize: number,
    hooks: RingLoopHooks = {},
  ) {
    super(frameSize, RX_REQUEST_SIZE, true, hooks);
    for (let i = 0; i < this.front.size; i++) this.post();
    this.front.pushRequests();
    this.sink = new Uint8Array(frameSize);
    this.sinkAt = new AddressedBytes(this.sink);
    this.segs = Array.from({ length: this.slotsPerFrame }, (_, j) => ({
      source: { buf: this.frame, offset: j * GRANT_PAGE_SIZE },
      dest: { domid: GUEST, ref: 0, offset: 0 },
      len: Math.min(GRANT_PAGE_SIZE, frameSize - j * GRANT_PAGE_SIZE),
    }));
  }

  /** Post the buffer of the slot the next request lands in (id = slot, its own page). */
  private post(): void {
    const f = this.front;
    const slot = f.reqProdPvt & f.mask;
    this.frontReq.id = slot;
    this.frontReq.gref = this.refs[slot]!;
    encodeRxRequest(f.view, f.slotOffset(f.reqProdPvt), this.frontReq);
    f.reqProdPvt = (f.reqProdPvt + 1) >>> 0;
  }

  /** Move `n` frames from the back to the front (n × slotsPerFrame ≤ 256). */
  step(n: number): void {
    this.checkStep(n);
    const b = this.back;
    const nfrag = this.slotsPerFrame;
    const segs = this.segs;
    const req = this.backReq;
    const rsp = this.rsp;
    let avail = b.unconsumedRequests();
    for (let i = 0; i < n; i++) {
      if (avail < nfrag) throw new Error(`the front posted ${avail} buffers, a frame needs ${nfrag}`);
      if (this.sendHook !== undefined) this.sendHook(this.frame, this.sent + i);
      for (let j = 0; j < nfrag; j++) {
        decodeRxRequest(b.view, b.slotOffset(b.reqCons), req);
        b.reqCons = (b.reqCons + 1) >>> 0;
        const s = segs[j]!;
        (s.dest as GrantSide).ref = req.gref;
        rsp.id = req.id;
        rsp.offset = 0;
        rsp.flags = j + 1 < nfrag ? NETRXF.moreData : 0;
        rsp.status = s.len;
        encodeRxResponse(b.view, b.slotOffset(b.rspProdPvt), rsp);
        b.rspProdPvt = (b.rspProdPvt + 1) >>> 0;
      }
      avail -= nfrag;
      this.gnttab.copy(segs);
      for (let j = 0; j < nfrag; j++) {
        if (segs[j]!.status !== GNTST.okay) throw new Error(`grant copy of fragment ${j} failed: ${segs[j]!.status}`);
      }
    }
    this.sent += n;
    b.pushResponses();

    const f = this.front;
    const pages = this.pagesAt;
    const sink = this.sink;
    const sinkAt = this.sinkAt;
    let done = f.unconsumedResponses();
    let got = 0;
    while (done > 0) {
      const start = f.rspCons;
      const p = parseRxPacket(f, start, done, DEFAULT_RX_LIMITS, this.pkt);
      if (isRxParseError(p)) throw p.error;
      let pos = 0;
      for (let j = 0; j < p.frags.length; j++) {
        const frag = p.frags[j]!;
        // The response sits in the slot of the buffer it filled; its id must say the same.
        const slot = (start + frag.slot) & f.mask;
        if (frag.id !== slot) throw new Error(`response in slot ${slot} names buffer ${frag.id}`);
        copyBetween(sinkAt, pos, pages[slot]!, frag.offset, frag.size);
        pos += frag.size;
      }
      if (pos !== this.frameSize) throw new Error(`received a ${pos}-byte frame, sent ${this.frameSize}`);
      if (this.receiveHook !== undefined) this.receiveHook(sink, pos, this.received + got);
      got++;
      this.bytes += pos;
      f.rspCons = (f.rspCons + p.slots) >>> 0;
      for (let j = 0; j < p.slots; j++) this.post();
      done -= p.slots;
    }
    this.received += got;
    f.pushRequests();
    this.checksum = (this.checksum + sink[this.frameSize - 1]!) | 0;
  }

  /** Unmap the ring and end the front's grants; the hypervisor then holds nothing of ours. */
}
