/**
 * The back end's side of the front end's RX ring: each frame from the main thread is
 * grant-copied into as many posted buffers as it needs (one page each, from offset 0) and
 * answered in the same slots, the first response flagged with the checksum bits, all but the
 * last with more_data. A frame waits in the queue until enough buffers are posted: the guest
 * controls its receive rate, and we lose nothing meanwhile.
 *
 * Frames go in batches (copy-batch.ts): the queue's cursor takes up to 64 frames while buffers
 * last, their copies go to the hypervisor in one call, and each frame is then settled by its
 * own statuses; the frames taken are given back to the queue with one store.
 */
import {
  BackRing,
  GRANT_PAGE_SIZE,
  NETIF_RSP,
  NETRXF,
  RX_REQUEST_SIZE,
  RX_RESPONSE,
  EXTRA_TYPE,
  decodeRxRequest,
  encodeExtraInfo,
  encodeRxResponse,
  fillChecksum,
  l3Of,
  rxSlotsFor,
  type RxRequest,
  type RxResponse,
  ProtocolError,
} from "../protocol/index.ts";
import { pageViews, type GrantTable } from "../platform/types.ts";
import { Control, Counter } from "./control.ts";
import { COPY_BATCH_PACKETS, CopyBatch, batchBytes } from "./copy-batch.ts";
import { FrameQueue } from "./frame-queue.ts";
import { metaGso } from "./frame-meta.ts";
import { countOversize, dropPacket, queueBell, type PeerNotifier, type QueueBell, type RingRole, type RingWorkerInit } from "./role.ts";

export class BackRx implements RingRole {
  private readonly ring: BackRing;
  private readonly bell: QueueBell;
  private readonly req: RxRequest = { id: 0, gref: 0 };
  private readonly rsp: RxResponse = { id: 0, offset: 0, flags: 0, status: 0 };
  /** The batch's copy segments: from the queue into the front end's posted buffers. */
  private readonly copies: CopyBatch;
  /** The batch's frames, in ring order: the first response slot, slots used, first segment. */
  private n = 0;
  private readonly first = new Uint32Array(COPY_BATCH_PACKETS);
  private readonly slots = new Uint8Array(COPY_BATCH_PACKETS);
  private readonly seg0 = new Uint16Array(COPY_BATCH_PACKETS);
  private readonly len = new Uint32Array(COPY_BATCH_PACKETS);
  /** 1 when the frame's second response slot is its GSO extra (the gap slot), else 0. */
  private readonly gap = new Uint8Array(COPY_BATCH_PACKETS);
  private readonly gsoExtra = { type: EXTRA_TYPE.gso, size: 0, gsoType: 0, features: 0 };
  /** Frame bytes one batch takes at most (after its first frame). */
  private readonly maxBatchBytes: number;
  /** The batch stopped with nothing more to take now: the queue is empty, or the buffers ran out. */
  private stopped = false;
  /** The front end's ring broke while gathering (RING_OVERFLOW): thrown once the batch before it is settled. */
  private fatal: unknown = null;
  /** Buffers the queued frame needs, when the guest has posted fewer; else 0. */
  private needSlots = 0;
  /** Frames answered on the ring since the last push: settled once the push is done. */
  private unpushed = 0;
  /** Largest frame this session may send: one slot's worth without the front end's feature-sg. */
  private readonly maxFrame: number;
  /** A front end without feature-rx-notify posts buffers silently: poll this often while frames wait. */
  private readonly pollMs: number;
  /** Which frames the front end takes with a blank checksum (feature-no-csum-offload, feature-ipv6-csum-offload). */
  private readonly blankOk: { ipv4: boolean; ipv6: boolean };

  constructor(
    init: RingWorkerInit,
    private readonly q: FrameQueue,
    private readonly ctl: Control,
    private readonly kick: PeerNotifier,
    private readonly gnttab: GrantTable,
    private readonly onError: (e: ProtocolError) => void,
  ) {
    this.bell = queueBell(init, q, FrameQueue.CONS);
    this.ring = new BackRing(pageViews(init.ring)[0]!, RX_REQUEST_SIZE);
    this.ring.attach();
    this.maxFrame = Math.min(init.maxFrame, q.maxRecord);
    this.pollMs = init.pollMs ?? 0;
    this.blankOk = init.peerCsumOffload ?? { ipv4: true, ipv6: true };
    this.maxBatchBytes = batchBytes(q.window);
    this.copies = new CopyBatch(() => ({ source: { buf: q.data, offset: 0 }, dest: { domid: init.peer, ref: 0, offset: 0 }, len: 0 }));
    // A role before us on this queue object may have stopped in the middle of a batch: what
    // it took and never gave back is still queued, and read again from the head.
    q.rewind();
  }

  poll(): boolean {
    let moved = false;
    for (;;) {
      const taken = this.gather();
      this.settle();
      if (taken > 0) {
        moved = true;
        this.publish();
      }
      if (this.fatal !== null) {
        const e = this.fatal;
        this.fatal = null;
        throw e;
      }
      if (this.stopped || taken === 0) break;
    }
    return moved;
  }

  /**
   * Take up to a batch of frames from the queue while the front end has posted buffers for
   * them: each frame's copy segments go to the batch and its response slots are written (not
   * pushed: the statuses are final once the copy is done). Frames too large for this session
   * are taken and counted. Returns the records taken.
   */
  private gather(): number {
    const r = this.ring;
    const q = this.q;
    const copies = this.copies;
    let taken = 0;
    let bytes = 0;
    this.n = 0;
    this.stopped = false;
    while (taken < COPY_BATCH_PACKETS) {
      const off = q.next();
      if (off < 0) {
        this.stopped = true;
        break;
      }
      const len = q.recordLength(off);
      if (len > this.maxFrame) {
        q.take(off);
        countOversize(this.ctl);
        taken++;
        continue;
      }
      const slots = rxSlotsFor(len);
      // A GSO frame (queued only for a front end that offered its type) takes one more
      // request: the response in that slot is the GSO extra, not data (Linux netback's gap
      // slot), so each data response still sits in the slot of the buffer it filled.
      const gso = metaGso(this.q.recordMeta(off));
      const gap = gso === null ? 0 : 1;
      let posted: number;
      try {
        posted = r.unconsumedRequests();
      } catch (e) {
        // A broken ring (req_prod beyond it): the frames gathered before go out first.
        this.fatal = e;
        break;
      }
      if (posted < slots + gap) {
        this.needSlots = slots + gap;
        this.stopped = true;
        break;
      }
      if (!copies.fits(slots) || (bytes > 0 && bytes + len > this.maxBatchBytes)) break;
      bytes += len;
      const meta = this.checksumFlags(off, len);
      const i = this.n++;
      this.first[i] = r.rspProdPvt;
      this.slots[i] = slots;
      this.seg0[i] = copies.count;
      this.len[i] = len;
      this.gap[i] = gap;
      for (let k = 0, pos = 0; k < slots; k++, pos += GRANT_PAGE_SIZE) {
        decodeRxRequest(r.view, r.slotOffset(r.reqCons), this.req);
        r.reqCons = (r.reqCons + 1) >>> 0;
        const s = copies.add();
        (s.source as { buf: Uint8Array; offset: number }).offset = off + pos;
        (s.dest as { domid: number; ref: number; offset: number }).ref = this.req.gref;
        s.len = Math.min(GRANT_PAGE_SIZE, len - pos);
        // Remember the id in the response slot now; the status is known after the copy.
        this.rsp.id = this.req.id;
        this.rsp.offset = 0;
        this.rsp.flags = (k === 0 ? meta | (gap ? NETRXF.extraInfo : 0) : 0) | (k < slots - 1 ? NETRXF.moreData : 0);
        this.rsp.status = s.len;
        encodeRxResponse(r.view, r.slotOffset(r.rspProdPvt), this.rsp);
        r.rspProdPvt = (r.rspProdPvt + 1) >>> 0;
        if (k === 0 && gso !== null) {
          // The gap slot: its request is consumed, its buffer unused, its response the extra.
          r.reqCons = (r.reqCons + 1) >>> 0;
          this.gsoExtra.size = gso.size;
          this.gsoExtra.gsoType = gso.type;
          encodeExtraInfo(r.view, r.slotOffset(r.rspProdPvt), this.gsoExtra, false);
          r.rspProdPvt = (r.rspProdPvt + 1) >>> 0;
        }
      }
      if (gso !== null) this.ctl.add(Counter.extras, 1);
      q.take(off);
      taken++;
    }
    return taken;
  }

  /** One copy call for the batch, then each frame by its own statuses; the records go back to the queue. */
  private settle(): void {
    const r = this.ring;
    const copies = this.copies;
    copies.run(this.gnttab);
    for (let i = 0; i < this.n; i++) {
      const slots = this.slots[i]!;
      const failed = copies.firstFailed(this.seg0[i]!, slots);
      if (failed >= 0) {
        // The guest posted a buffer we cannot write: every slot of this frame says ERROR,
        // so the front end drops the frame whole.
        const first = this.first[i]!;
        const gap = this.gap[i]!;
        // (The gap slot holds the extra, not a status: it is skipped.)
        for (let k = 0; k < slots; k++) r.view.setInt16(r.slotOffset(first + (k === 0 ? 0 : k + gap)) + RX_RESPONSE.status, NETIF_RSP.error, true);
        const s = copies.segment(failed);
        const ref = (s.dest as { ref: number }).ref;
        dropPacket(this.ctl, this.onError, new ProtocolError("BAD_GREF", `rx_request.gref`, ref, `grant copy to the front end failed with GNTST ${s.status}`));
      } else {
        this.ctl.add(Counter.packets, 1);
        this.ctl.add(Counter.bytes, this.len[i]!);
      }
    }
    this.unpushed += this.n;
    copies.clear();
    // After the copies have read the records: the main thread may write over them now.
    this.q.releaseTaken();
  }

  /**
   * The frame's checksum flags as the front end may see them. A blank checksum it cannot take
   * (it said feature-no-csum-offload, or did not say feature-ipv6-csum-offload for IPv6) is
   * filled in here, in the queued record, and the frame goes out as validated instead.
   */
  private checksumFlags(off: number, len: number): number {
    let meta = this.q.recordMeta(off) & (NETRXF.dataValidated | NETRXF.csumBlank);
    if ((meta & NETRXF.csumBlank) === 0) return meta;
    const { l3 } = l3Of(this.q.data, off, len);
    if (l3 === null ? this.blankOk.ipv4 && this.blankOk.ipv6 : this.blankOk[l3]) return meta;
    // (A frame that is not TCP or UDP over IP has no checksum to fill: the flag only goes.)
    meta &= ~NETRXF.csumBlank;
    if (fillChecksum(this.q.data, off, len)) meta |= NETRXF.dataValidated;
    return meta;
  }

  private publish(): void {
    if (this.ring.pushResponses()) this.kick.notify();
    // Settled only now that the front end can see them: a flush that ends here is followed
    // by our Closing, and the front end reads its ring once it sees that.
    this.ctl.settle(this.unpushed);
    this.unpushed = 0;
    if (this.q.producerShouldWake()) this.bell.ring();
  }

  /** Nothing to take in from the front end: its posted buffers are not frames. */
  drain(): boolean {
    return false;
  }

  /** Frames still queued stay queued: the next session, or the device's close, accounts for them. */
  finish(): void {}

  get blocked(): boolean {
    return false;
  }

  prepareSleep(): boolean {
    this.q.setConsumerWaiting(true);
    if (this.q.isEmpty()) return false;
    // A frame is waiting for buffers: ask the guest to notify us once it has posted enough.
    return this.ring.finalCheckForRequestsAtLeast(Math.max(1, this.needSlots));
  }

  woke(): void {
    this.q.setConsumerWaiting(false);
    this.needSlots = 0;
  }

  get pollAfterMs(): number {
    return this.pollMs > 0 && !this.q.isEmpty() ? this.pollMs : 0;
  }
}
