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
  BackRing,
  DEFAULT_RX_LIMITS,
  ETH_HLEN,
  FrontRing,
  GRANT_PAGE_SIZE,
  MAX_PACKET_SIZE,
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
import { GUEST, simLink, type SimLink } from "./sim-link.ts";
import { copyBytes } from "../src/platform/copy-bytes.ts";
import { GNTST, type CopySegment, type GrantTable } from "../src/platform/types.ts";
import type { RingLoopHooks } from "./ring-loop.ts";


type GrantSide = { domid: number; ref: number; offset: number };

export class RxRingLoop {
  /** Ring slots (posted buffers) each frame uses. */
  readonly slotsPerFrame: number;
  private readonly front: FrontRing;
  private readonly back: BackRing;
  private readonly gnttab: GrantTable;
  /** The front's posted pages, by slot, and their grant references. */
  private readonly pages: Uint8Array[];
  private readonly refs: readonly number[];
  /** The back's outgoing frame, and where the front assembles what it receives. */
  private readonly frame: Uint8Array;
  private readonly sink: Uint8Array;
  /** One grant-copy segment per fragment, source offsets and lengths fixed by the frame size. */
  private readonly segs: CopySegment[];
  private readonly backReq: RxRequest = { id: 0, gref: 0 };
  private readonly frontReq: RxRequest = { id: 0, gref: 0 };
  private readonly rsp: RxResponse = { id: 0, offset: 0, flags: 0, status: 0 };
  /** The front parses every packet into this one, as front-rx does. */
  private readonly pkt = scratchRxPacket();
  private readonly sendHook: RingLoopHooks["send"];
  private readonly receiveHook: RingLoopHooks["receive"];
  private readonly link: SimLink = simLink(true);
  readonly hv = this.link.hv;
  checksum = 0;
  /** Frames the back has put on the ring, frames and bytes the front has taken off it. */
  sent = 0;
  received = 0;
  bytes = 0;

  constructor(
    readonly frameSize: number,
    hooks: RingLoopHooks = {},
  ) {
    if (!Number.isInteger(frameSize) || frameSize < ETH_HLEN || frameSize > MAX_PACKET_SIZE) {
      throw new RangeError(`frame size must be an integer in ${ETH_HLEN}..${MAX_PACKET_SIZE}, got ${frameSize}`);
    }
    this.slotsPerFrame = Math.ceil(frameSize / GRANT_PAGE_SIZE);
    this.sendHook = hooks.send;
    this.receiveHook = hooks.receive;
    this.gnttab = this.hv.platform(0).gnttab;
    this.pages = [...this.link.data.pages];
    this.refs = this.link.data.refs;
    this.front = new FrontRing(this.link.ring.pages[0]!, RX_REQUEST_SIZE);
    this.front.init();
    this.back = new BackRing(this.link.mapped.pages[0]!, RX_REQUEST_SIZE);
    this.back.attach();
    if (this.pages.length !== this.front.size) throw new Error(`one data page per slot: ${this.pages.length} pages, ${this.front.size} slots`);
    for (let i = 0; i < this.front.size; i++) this.post();
    this.front.pushRequests();

    this.frame = new Uint8Array(frameSize).map((_, i) => i * 7);
    this.sink = new Uint8Array(frameSize);
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
    if (n * this.slotsPerFrame > this.front.size) {
      throw new RangeError(`${n} frames of ${this.slotsPerFrame} slot(s) do not fit a ${this.front.size}-slot ring`);
    }
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
    const pages = this.pages;
    const sink = this.sink;
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
        copyBytes(sink, pos, pages[slot]!, frag.offset, frag.size);
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
  close(): void {
    this.link.close();
  }
}
