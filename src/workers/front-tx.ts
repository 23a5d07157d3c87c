/**
 * The front end's TX ring: frames from the main thread go into pre-shared pages (one per ring
 * slot, granted read-only to the back end once, reused for ever) and out as netif_tx_requests.
 * A page's index is the request id, so a response names the page it frees; an id that is not
 * in flight is the back end's error, counted and ignored.
 */
import {
  FrontRing,
  GRANT_PAGE_SIZE,
  MAX_PACKET_SIZE,
  NETIF_RSP,
  NETTXF,
  ProtocolError,
  TX_REQUEST_SIZE,
  EXTRA_TYPE,
  checkTxStatus,
  encodeExtraInfo,
  decodeTxResponse,
  encodeTxRequest,
  type TxRequest,
  type TxResponse,
} from "../protocol/index.ts";
import { AddressedBytes, copyBetween } from "../platform/copy-bytes.ts";
import { pageViews } from "../platform/types.ts";
import { Control, Counter } from "./control.ts";
import { FrameQueue } from "./frame-queue.ts";
import { metaGso } from "./frame-meta.ts";
import { dropOversize, PUBLISH_EVERY, queueBell, type PeerNotifier, type QueueBell, type RingRole, type RingWorkerInit } from "./role.ts";

export class FrontTx implements RingRole {
  private readonly ring: FrontRing;
  private readonly bell: QueueBell;
  /** The data pages and the queue's bytes, addressed once for native copies. */
  private readonly pages: AddressedBytes[];
  private readonly qData: AddressedBytes;
  private readonly refs: number[];
  /** Free page indices (a stack) and which pages are in flight. */
  private readonly free: number[];
  /** Per page: 0 free, 1 in flight, 2 in flight as the first page of its packet. */
  private readonly inFlight: Uint8Array;
  private readonly req: TxRequest = { gref: 0, offset: 0, flags: 0, id: 0, size: 0 };
  private readonly rsp: TxResponse = { id: 0, status: 0 };
  private readonly gsoExtra = { type: EXTRA_TYPE.gso, size: 0, gsoType: 0, features: 0 };
  /** Largest frame this session may send: one page without the back end's feature-sg, never over a u16. */
  private readonly maxFrame: number;

  constructor(
    init: RingWorkerInit,
    private readonly q: FrameQueue,
    private readonly ctl: Control,
    private readonly kick: PeerNotifier,
    private readonly onError: (e: ProtocolError) => void,
  ) {
    if (init.data === null) throw new Error("front-tx needs data pages");
    this.bell = queueBell(init, q, FrameQueue.CONS);
    this.ring = new FrontRing(pageViews(init.ring)[0]!, TX_REQUEST_SIZE);
    this.pages = pageViews(init.data.pages).map((p) => new AddressedBytes(p));
    this.qData = new AddressedBytes(q.data);
    this.refs = init.data.refs;
    this.maxFrame = Math.min(init.maxFrame, MAX_PACKET_SIZE);
    // Every request holds one page, so with no more pages than slots the ring never overflows.
    if (this.pages.length > this.ring.size) throw new Error("more TX pages than ring slots");
    this.free = this.pages.map((_, i) => this.pages.length - 1 - i);
    this.inFlight = new Uint8Array(this.pages.length);
    this.ring.init();
  }

  poll(): boolean {
    const moved = this.collectResponses();
    return (this.ctl.peerConnected && this.sendQueued()) || moved;
  }

  /** The session is ending: collect the answers already on the ring, send nothing new. */
  drain(): boolean {
    return this.collectResponses();
  }

  /**
   * The session is over: packets still in flight will never be answered. They are lost (the
   * peer may or may not have taken them): counted, and settled so a flush does not wait on them.
   */
  finish(): void {
    let heads = 0;
    for (let i = 0; i < this.inFlight.length; i++) if (this.inFlight[i] === 2) heads++;
    if (heads === 0) return;
    this.ctl.add(Counter.lost, heads);
    this.ctl.add(Counter.drops, heads);
    this.ctl.settle(heads);
  }

  private collectResponses(): boolean {
    const r = this.ring;
    let n = r.unconsumedResponses();
    if (n === 0) return false;
    let settled = 0;
    while (n-- > 0) {
      decodeTxResponse(r.view, r.slotOffset(r.rspCons), this.rsp);
      r.rspCons = (r.rspCons + 1) >>> 0;
      const { id, status } = this.rsp;
      if (status === NETIF_RSP.null) continue; // the answer to an extra-info slot
      if (id >= this.inFlight.length || this.inFlight[id] === 0) {
        this.ctl.add(Counter.errors, 1);
        this.onError(new ProtocolError("BAD_ID", "tx_response.id", id, "no request with this id is in flight"));
        continue;
      }
      const head = this.inFlight[id] === 2;
      this.inFlight[id] = 0;
      this.free.push(id);
      // The back end answers every slot of a packet at once: its first page settles it.
      if (head) settled++;
      const bad = checkTxStatus(status);
      if (bad !== null) {
        this.ctl.add(Counter.errors, 1);
        this.onError(bad);
      } else if (status !== NETIF_RSP.okay && head) {
        // Every slot of a dropped packet says so; count the packet once, by its first page.
        this.ctl.add(Counter.drops, 1);
      }
    }
    if (settled > 0) this.ctl.settle(settled);
    return true;
  }

  /** The next queued frame has the pages it needs. */
  private headFits(): boolean {
    const off = this.q.peek();
    if (off < 0) return false;
    const len = this.q.recordLength(off);
    // An oversize frame "fits": the next poll drops it.
    if (len > this.maxFrame) return true;
    const slots = Math.max(1, Math.ceil(len / GRANT_PAGE_SIZE));
    if (this.free.length < slots) return false;
    return this.ring.freeRequests() >= slots + (metaGso(this.q.recordMeta(off)) === null ? 0 : 1);
  }

  /** Move whole frames from the queue onto the ring while pages last. */
  private sendQueued(): boolean {
    const q = this.q;
    const r = this.ring;
    let sent = 0;
    let dropped = 0;
    for (;;) {
      const off = q.peek();
      if (off < 0) break;
      const len = q.recordLength(off);
      if (len > this.maxFrame) {
        dropOversize(q, off, this.ctl);
        dropped++;
        continue;
      }
      const slots = Math.max(1, Math.ceil(len / GRANT_PAGE_SIZE));
      if (this.free.length < slots) break;
      const meta = q.recordMeta(off);
      // A GSO frame (the main thread queued it only for a back end that offered its type):
      // the first request flagged extra_info, then one GSO extra slot, which holds no page
      // but a ring entry, answered NULL.
      const gso = metaGso(meta);
      // Extra slots hold ring entries but no page: pages alone no longer bound the ring.
      if (r.freeRequests() < slots + (gso !== null ? 1 : 0)) break;
      const csum = (meta & (NETTXF.csumBlank | NETTXF.dataValidated)) | (gso !== null ? NETTXF.extraInfo : 0);
      for (let i = 0, pos = 0; i < slots; i++, pos += GRANT_PAGE_SIZE) {
        const page = this.free.pop()!;
        const chunk = Math.min(GRANT_PAGE_SIZE, len - pos);
        copyBetween(this.pages[page]!, 0, this.qData, off + pos, chunk);
        this.inFlight[page] = i === 0 ? 2 : 1;
        const req = this.req;
        req.gref = this.refs[page]!;
        req.offset = 0;
        req.id = page;
        // The first request carries the whole size, later ones their own.
        req.size = i === 0 ? len : chunk;
        req.flags = (i === 0 ? csum : 0) | (i < slots - 1 ? NETTXF.moreData : 0);
        encodeTxRequest(r.view, r.slotOffset(r.reqProdPvt), req);
        r.reqProdPvt = (r.reqProdPvt + 1) >>> 0;
        if (i === 0 && gso !== null) {
          this.gsoExtra.size = gso.size;
          this.gsoExtra.gsoType = gso.type;
          encodeExtraInfo(r.view, r.slotOffset(r.reqProdPvt), this.gsoExtra, false);
          r.reqProdPvt = (r.reqProdPvt + 1) >>> 0;
        }
      }
      if (gso !== null) this.ctl.add(Counter.extras, 1);
      q.release(off);
      this.ctl.add(Counter.packets, 1);
      this.ctl.add(Counter.bytes, len);
      if (++sent % PUBLISH_EVERY === 0) this.publish();
    }
    if (sent === 0 && dropped === 0) return false;
    this.publish();
    return true;
  }

  private publish(): void {
    if (this.ring.pushRequests()) this.kick.notify();
    if (this.q.producerShouldWake()) this.bell.ring();
  }

  get blocked(): boolean {
    return false;
  }

  prepareSleep(): boolean {
    this.q.setConsumerWaiting(true);
    // Responses matter only while requests are out; the queue matters only while we can send.
    const responses = this.ring.finalCheckForResponses();
    return responses || (this.ctl.peerConnected && this.headFits());
  }

  woke(): void {
    this.q.setConsumerWaiting(false);
  }
}
