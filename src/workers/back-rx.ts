/**
 * The back end's side of the front end's RX ring: each frame from the main thread is
 * grant-copied into as many posted buffers as it needs (one page each, from offset 0) and
 * answered in the same slots, the first response flagged with the checksum bits, all but the
 * last with more_data. A frame waits in the queue until enough buffers are posted: the guest
 * controls its receive rate, and we lose nothing meanwhile.
 */
import {
  BackRing,
  GRANT_PAGE_SIZE,
  NETIF_RSP,
  NETRXF,
  RX_REQUEST_SIZE,
  RX_RESPONSE,
  decodeRxRequest,
  encodeRxResponse,
  fillChecksum,
  l3Of,
  rxSlotsFor,
  type RxRequest,
  type RxResponse,
  ProtocolError,
} from "../protocol/index.ts";
import { GNTST, pageViews, type CopySegment, type GrantTable } from "../platform/types.ts";
import { Control, Counter } from "./control.ts";
import { FrameQueue } from "./frame-queue.ts";
import { dropOversize, dropPacket, PUBLISH_EVERY, queueBell, type PeerNotifier, type QueueBell, type RingRole, type RingWorkerInit } from "./role.ts";

export class BackRx implements RingRole {
  private readonly ring: BackRing;
  private readonly bell: QueueBell;
  private readonly req: RxRequest = { id: 0, gref: 0 };
  private readonly rsp: RxResponse = { id: 0, offset: 0, flags: 0, status: 0 };
  /** Reused copy segments, one per possible fragment; segsFor[n] holds the first n. */
  private readonly segsFor: CopySegment[][];
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
    const maxSlots = rxSlotsFor(this.maxFrame);
    const segs: CopySegment[] = Array.from({ length: maxSlots }, () => ({
      source: { buf: q.data, offset: 0 },
      dest: { domid: init.peer, ref: 0, offset: 0 },
      len: 0,
    }));
    this.segsFor = segs.map((_, n) => segs.slice(0, n)).concat([segs]);
  }

  poll(): boolean {
    const r = this.ring;
    const q = this.q;
    let packets = 0;
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
      const slots = rxSlotsFor(len);
      if (r.unconsumedRequests() < slots) {
        this.needSlots = slots;
        break;
      }
      const meta = this.checksumFlags(off, len);
      const first = r.rspProdPvt;
      const segs = this.segsFor[slots]!;
      for (let i = 0, pos = 0; i < slots; i++, pos += GRANT_PAGE_SIZE) {
        decodeRxRequest(r.view, r.slotOffset(r.reqCons), this.req);
        r.reqCons = (r.reqCons + 1) >>> 0;
        const s = segs[i]!;
        (s.source as { buf: Uint8Array; offset: number }).offset = off + pos;
        const dst = s.dest as { domid: number; ref: number; offset: number };
        dst.ref = this.req.gref;
        s.len = Math.min(GRANT_PAGE_SIZE, len - pos);
        // Remember the id in the response slot now; the status is known after the copy.
        this.rsp.id = this.req.id;
        this.rsp.offset = 0;
        this.rsp.flags = (i === 0 ? meta : 0) | (i < slots - 1 ? NETRXF.moreData : 0);
        this.rsp.status = s.len;
        encodeRxResponse(r.view, r.slotOffset(r.rspProdPvt), this.rsp);
        r.rspProdPvt = (r.rspProdPvt + 1) >>> 0;
      }
      this.gnttab.copy(segs);
      let failed = -1;
      for (let i = 0; i < slots && failed < 0; i++) if (segs[i]!.status !== GNTST.okay) failed = i;
      if (failed >= 0) {
        // The guest posted a buffer we cannot write: every slot of this frame says ERROR,
        // so the front end drops the frame whole.
        for (let i = 0; i < slots; i++) r.view.setInt16(r.slotOffset(first + i) + RX_RESPONSE.status, NETIF_RSP.error, true);
        const ref = (segs[failed]!.dest as { ref: number }).ref;
        dropPacket(this.ctl, this.onError, new ProtocolError("BAD_GREF", `rx_request.gref`, ref, `grant copy to the front end failed with GNTST ${segs[failed]!.status}`));
      } else {
        this.ctl.add(Counter.packets, 1);
        this.ctl.add(Counter.bytes, len);
      }
      q.release(off);
      this.unpushed++;
      if (++packets % PUBLISH_EVERY === 0) this.publish();
    }
    if (packets > 0 || dropped > 0) this.publish();
    return packets > 0 || dropped > 0;
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
