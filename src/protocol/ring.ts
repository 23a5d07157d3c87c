/**
 * The io/ring.h shared ring: one page, a 64-byte header of four u32 indices, then the slots.
 *
 * Front and back are separate classes because they own different private indices and must
 * distrust different shared ones: the back end distrusts req_prod, the front end rsp_prod.
 * Shared indices are read and written with Atomics (sequentially consistent), which gives
 * the wmb/mb ordering the C macros ask for on any memory Atomics accept: SharedArrayBuffers
 * and mmapped grant pages alike.
 */
import { ProtocolError } from "./errors.ts";
import { u32sub } from "./u32.ts";

export const PAGE_SIZE = 4096;
export const RING_HEADER_SIZE = 64;

/** u32 word index of each shared header field. */
const REQ_PROD = 0;
const REQ_EVENT = 1;
const RSP_PROD = 2;
const RSP_EVENT = 3;

/** Byte offsets of the shared header fields, for codecs and tests. */
export const RING_HEADER = {
  reqProd: 0,
  reqEvent: 4,
  rspProd: 8,
  rspEvent: 12,
  pvt: 16,
  slots: RING_HEADER_SIZE,
} as const;

/** Slots that fit in a page after the header, rounded down to a power of two (ring.h __RD32). */
export function ringSize(slotSize: number): number {
  if (!Number.isInteger(slotSize) || slotSize <= 0 || slotSize > PAGE_SIZE - RING_HEADER_SIZE) {
    throw new RangeError(`ring slot size must be an integer in 1..${PAGE_SIZE - RING_HEADER_SIZE}, got ${slotSize}`);
  }
  const fit = Math.floor((PAGE_SIZE - RING_HEADER_SIZE) / slotSize);
  return 2 ** Math.floor(Math.log2(fit));
}

/** What both halves share: the page views and slot addressing. */
abstract class RingHalf {
  readonly size: number;
  readonly mask: number;
  /** The ring page as bytes; slot codecs read and write through `view`. */
  readonly page: Uint8Array;
  readonly view: DataView;
  protected readonly hdr: Uint32Array;

  constructor(page: Uint8Array, readonly slotSize: number) {
    if (page.byteLength < PAGE_SIZE) {
      throw new RangeError(`a ring needs a ${PAGE_SIZE}-byte page, got ${page.byteLength} bytes`);
    }
    if (page.byteOffset % 4 !== 0) {
      throw new RangeError(`a ring page must be 4-byte aligned, got byteOffset ${page.byteOffset}`);
    }
    this.size = ringSize(slotSize);
    this.mask = this.size - 1;
    this.page = page.subarray(0, PAGE_SIZE);
    this.view = new DataView(page.buffer, page.byteOffset, PAGE_SIZE);
    this.hdr = new Uint32Array(page.buffer, page.byteOffset, 4);
  }

  /** Byte offset within the page of the slot that free-running index `idx` lands in. */
  slotOffset(idx: number): number {
    return RING_HEADER_SIZE + (idx & this.mask) * this.slotSize;
  }

  get sharedReqProd(): number {
    return Atomics.load(this.hdr, REQ_PROD);
  }
  get sharedReqEvent(): number {
    return Atomics.load(this.hdr, REQ_EVENT);
  }
  get sharedRspProd(): number {
    return Atomics.load(this.hdr, RSP_PROD);
  }
  get sharedRspEvent(): number {
    return Atomics.load(this.hdr, RSP_EVENT);
  }
}

/** The front end: produces requests, consumes responses (SHARED_RING_INIT + FRONT_RING_INIT). */
export class FrontRing extends RingHalf {
  /** Requests written but not yet published (req_prod_pvt). */
  reqProdPvt = 0;
  /** Next response to consume (rsp_cons). */
  rspCons = 0;

  /** Only the front end initialises a ring: producers 0, event indices 1. */
  init(start = 0): void {
    const s = start >>> 0;
    Atomics.store(this.hdr, REQ_PROD, s);
    Atomics.store(this.hdr, RSP_PROD, s);
    Atomics.store(this.hdr, REQ_EVENT, (s + 1) >>> 0);
    Atomics.store(this.hdr, RSP_EVENT, (s + 1) >>> 0);
    this.page.fill(0, RING_HEADER.pvt, PAGE_SIZE);
    this.reqProdPvt = s;
    this.rspCons = s;
  }

  /** Adopt the indices already in the shared page (reattaching to a live ring). */
  attach(): void {
    this.reqProdPvt = this.sharedReqProd;
    this.rspCons = this.sharedRspProd;
  }

  /** Slots the front end may still fill (RING_FREE_REQUESTS). */
  freeRequests(): number {
    return this.size - u32sub(this.reqProdPvt, this.rspCons);
  }

  /** Byte offset of the next request slot to fill; advance `reqProdPvt` by one (mod 2^32) after writing it. */
  nextRequestOffset(): number {
    return this.slotOffset(this.reqProdPvt);
  }

  /** Publish written requests; true when the back end asked to be notified (req_event). */
  pushRequests(): boolean {
    const oldProd = Atomics.load(this.hdr, REQ_PROD);
    const newProd = this.reqProdPvt >>> 0;
    Atomics.store(this.hdr, REQ_PROD, newProd);
    const event = Atomics.load(this.hdr, REQ_EVENT);
    return u32sub(newProd, event) < u32sub(newProd, oldProd);
  }

  /**
   * Responses published and not consumed. The back end writes rsp_prod: one that claims
   * more responses than there are outstanding requests is a broken or hostile peer.
   */
  unconsumedResponses(): number {
    const prod = Atomics.load(this.hdr, RSP_PROD);
    const n = u32sub(prod, this.rspCons);
    if (n > u32sub(this.reqProdPvt, this.rspCons)) {
      throw new ProtocolError(
        "RING_OVERFLOW",
        "rsp_prod",
        prod,
        `${n} responses published but only ${u32sub(this.reqProdPvt, this.rspCons)} requests outstanding (rsp_cons=${this.rspCons})`,
      );
    }
    return n;
  }

  /** RING_FINAL_CHECK_FOR_RESPONSES: arm rsp_event, then look once more before sleeping. */
  finalCheckForResponses(): boolean {
    if (this.unconsumedResponses() > 0) return true;
    Atomics.store(this.hdr, RSP_EVENT, (this.rspCons + 1) >>> 0);
    return this.unconsumedResponses() > 0;
  }
}

/** The back end: consumes requests, produces responses (BACK_RING_ATTACH). */
export class BackRing extends RingHalf {
  /** Next request to consume (req_cons). */
  reqCons = 0;
  /** Responses written but not yet published (rsp_prod_pvt). */
  rspProdPvt = 0;

  /** A back end never initialises the ring; it adopts the indices the front end set. */
  attach(): void {
    this.reqCons = this.sharedRspProd;
    this.rspProdPvt = this.reqCons;
  }

  /** Start both private indices at `start` (tests and benchmarks that start past 0). */
  attachAt(start: number): void {
    this.reqCons = start >>> 0;
    this.rspProdPvt = start >>> 0;
  }

  /**
   * Requests published and not consumed (RING_UNCONSUMED_REQUESTS). The front end writes
   * req_prod: one that claims more outstanding requests than the ring holds is fatal
   * (RING_REQUEST_PROD_OVERFLOW), as Linux netback treats it.
   */
  unconsumedRequests(): number {
    const prod = Atomics.load(this.hdr, REQ_PROD);
    if (u32sub(prod, this.rspProdPvt) > this.size) {
      throw new ProtocolError(
        "RING_OVERFLOW",
        "req_prod",
        prod,
        `claims ${u32sub(prod, this.rspProdPvt)} outstanding requests in a ${this.size}-slot ring (rsp_prod_pvt=${this.rspProdPvt})`,
      );
    }
    const req = u32sub(prod, this.reqCons);
    const rsp = this.size - u32sub(this.reqCons, this.rspProdPvt);
    return req < rsp ? req : rsp;
  }

  /** Byte offset of the next response slot to fill; advance `rspProdPvt` by one (mod 2^32) after writing it. */
  nextResponseOffset(): number {
    return this.slotOffset(this.rspProdPvt);
  }

  /** Publish written responses; true when the front end asked to be notified (rsp_event). */
  pushResponses(): boolean {
    const oldProd = Atomics.load(this.hdr, RSP_PROD);
    const newProd = this.rspProdPvt >>> 0;
    Atomics.store(this.hdr, RSP_PROD, newProd);
    const event = Atomics.load(this.hdr, RSP_EVENT);
    return u32sub(newProd, event) < u32sub(newProd, oldProd);
  }

  /**
   * Sleep until `count` requests are unconsumed (a packet needing that many buffers): arm
   * req_event at req_cons + count, then look again. With the plain final check a back end
   * woken by the first new request would sleep again with req_event already behind, and
   * never hear of the rest. True when enough are there already.
   */
  finalCheckForRequestsAtLeast(count: number): boolean {
    if (this.unconsumedRequests() >= count) return true;
    Atomics.store(this.hdr, REQ_EVENT, (this.reqCons + count) >>> 0);
    return this.unconsumedRequests() >= count;
  }

  /** RING_FINAL_CHECK_FOR_REQUESTS: arm req_event, then look once more before sleeping. */
  finalCheckForRequests(): boolean {
    if (this.unconsumedRequests() > 0) return true;
    Atomics.store(this.hdr, REQ_EVENT, (this.reqCons + 1) >>> 0);
    return this.unconsumedRequests() > 0;
  }
}
