/**
 * The front end's RX ring: up to one page per ring slot, granted writable to the back end once
 * and posted with the page's index as its id. A response sits in the slot of the request whose
 * page it filled (Linux netfront's rule), so the slot says which page to read and which buffer
 * to post again; an id that is not the page posted in its slot is the back end's error.
 * Received frames are copied to the main thread's queue; when it is full we stop consuming
 * and the back end waits: nothing is dropped on our side.
 */
import {
  DEFAULT_RX_LIMITS,
  FrontRing,
  ProtocolError,
  RX_REQUEST_SIZE,
  encodeRxRequest,
  isRxParseError,
  parseRxPacket,
  scratchRxPacket,
  type RxLimits,
  type RxRequest,
} from "../protocol/index.ts";
import { AddressedBytes, copyBetween } from "../platform/copy-bytes.ts";
import { pageViews } from "../platform/types.ts";
import { Control, Counter } from "./control.ts";
import { FrameQueue } from "./frame-queue.ts";
import { badGsoFrame, packMeta } from "./frame-meta.ts";
import { dropPacket, PUBLISH_EVERY, QueueFull, queueBell, type PeerNotifier, type QueueBell, type RingRole, type RingWorkerInit } from "./role.ts";

export class FrontRx implements RingRole {
  private readonly ring: FrontRing;
  private readonly bell: QueueBell;
  /** The data pages and the queue's bytes, addressed once for native copies. */
  private readonly pages: AddressedBytes[];
  private readonly qData: AddressedBytes;
  private readonly refs: number[];
  private readonly limits: RxLimits;
  private readonly req: RxRequest = { id: 0, gref: 0 };
  /** Every packet is parsed into this one: valid until the next parse. */
  private readonly pkt = scratchRxPacket();
  private readonly full: QueueFull;
  /** The page posted in each ring slot. */
  private readonly slotPage: Int32Array;
  /** Pages freed by the last consume, to post again. */
  private readonly freed: number[] = [];

  constructor(
    init: RingWorkerInit,
    private readonly q: FrameQueue,
    private readonly ctl: Control,
    private readonly kick: PeerNotifier,
    private readonly onError: (e: ProtocolError) => void,
  ) {
    if (init.data === null) throw new Error("front-rx needs data pages");
    this.bell = queueBell(init, q, FrameQueue.PROD);
    this.ring = new FrontRing(pageViews(init.ring)[0]!, RX_REQUEST_SIZE);
    this.full = new QueueFull(q);
    this.pages = pageViews(init.data.pages).map((p) => new AddressedBytes(p));
    this.qData = new AddressedBytes(q.data);
    this.refs = init.data.refs;
    if (this.pages.length < 1 || this.pages.length > this.ring.size) throw new Error(`front-rx needs 1..${this.ring.size} pages, got ${this.pages.length}`);
    this.slotPage = new Int32Array(this.ring.size);
    this.limits = { ...DEFAULT_RX_LIMITS, maxPacketSize: Math.min(init.maxFrame, q.maxRecord) };
    this.ring.init();
    for (let i = 0; i < this.pages.length; i++) this.post(i);
    if (this.ring.pushRequests()) this.kick.notify();
  }

  /** Post page `page` in the slot the next request lands in. */
  private post(page: number): void {
    const r = this.ring;
    this.slotPage[r.reqProdPvt & r.mask] = page;
    this.req.id = page;
    this.req.gref = this.refs[page]!;
    encodeRxRequest(r.view, r.slotOffset(r.reqProdPvt), this.req);
    r.reqProdPvt = (r.reqProdPvt + 1) >>> 0;
  }

  /** The page posted in the slot of response index `idx`. */
  private pageAt(idx: number): number {
    return this.slotPage[idx & this.ring.mask]!;
  }

  /** Consume `n` response slots and post their pages again. */
  private consume(n: number): void {
    const r = this.ring;
    const freed = this.freed;
    freed.length = 0;
    for (let i = 0; i < n; i++) freed.push(this.pageAt(r.rspCons + i));
    r.rspCons = (r.rspCons + n) >>> 0;
    for (let i = 0; i < n; i++) this.post(freed[i]!);
  }

  poll(): boolean {
    const r = this.ring;
    const q = this.q;
    let avail = r.unconsumedResponses();
    if (avail === 0) return false;
    let packets = 0;
    while (avail > 0) {
      if (packets > 0 && packets % PUBLISH_EVERY === 0) this.publish();
      packets++;
      const start = r.rspCons;
      const p = parseRxPacket(r, start, avail, this.limits, this.pkt);
      if (isRxParseError(p)) {
        dropPacket(this.ctl, this.onError, p.error);
        this.consume(p.slots);
        avail -= p.slots;
        continue;
      }
      const frags = p.frags;
      let bad = -1;
      for (let i = 0; i < frags.length; i++) {
        const f = frags[i]!;
        if (f.id !== this.pageAt(start + f.slot)) {
          bad = i;
          break;
        }
      }
      if (bad >= 0) {
        const f = frags[bad]!;
        dropPacket(this.ctl, this.onError, new ProtocolError("BAD_ID", `rx_response[${f.slot}].id`, f.id, `the buffer in this slot was posted as id ${this.pageAt(start + f.slot)}`));
        this.consume(p.slots);
        avail -= p.slots;
        continue;
      }
      const off = q.reserve(p.size);
      if (off < 0) {
        packets--;
        this.full.block(p.size);
        break;
      }
      let pos = off;
      for (let i = 0; i < frags.length; i++) {
        const f = frags[i]!;
        const page = this.pages[this.pageAt(start + f.slot)]!;
        copyBetween(this.qData, pos, page, f.offset, f.size);
        pos += f.size;
      }
      const meta = packMeta(p.flags, p.extras);
      const badGso = p.extras.length === 0 ? null : badGsoFrame(q.data, off, p.size, meta, "rx_extra_info.gso");
      if (badGso !== null) {
        // Not committed: the next reserve takes the room back.
        dropPacket(this.ctl, this.onError, badGso);
        this.consume(p.slots);
        avail -= p.slots;
        continue;
      }
      q.commit(off, p.size, meta);
      if (p.extras.length > 0) this.ctl.add(Counter.extras, 1);
      this.ctl.add(Counter.packets, 1);
      this.ctl.add(Counter.bytes, p.size);
      this.consume(p.slots);
      avail -= p.slots;
    }
    if (packets > 0) this.publish();
    return packets > 0;
  }

  /** The session is ending: take in every response already on the ring (as poll does). */
  drain(): boolean {
    return this.poll();
  }

  finish(): void {}

  get blocked(): boolean {
    return this.full.blocked;
  }

  /** Repost the consumed buffers to the back end, and wake the main thread if it waits. */
  private publish(): void {
    if (this.ring.pushRequests()) this.kick.notify();
    if (this.q.consumerWaiting()) this.bell.ring();
  }

  prepareSleep(): boolean {
    // Blocked on a full queue: the main thread kicks us when it makes room.
    if (this.full.blocked) return this.full.prepareSleep();
    return this.ring.finalCheckForResponses();
  }

  woke(): void {
    this.full.woke();
  }
}
