/**
 * The back end's side of the front end's TX ring: parse each packet's requests, grant-copy its
 * fragments straight into the main thread's queue, answer every slot (OKAY, or ERROR for a
 * dropped packet, NULL for an extra-info slot). A packet that breaks the ring's framing is
 * fatal: the worker stops and the device reports the peer broken, as Linux netback does.
 *
 * Packets go in batches (copy-batch.ts): up to 64 are parsed, each reserved in the queue, and
 * all their fragments copied with one hypervisor call; then each packet is settled in ring
 * order by its own statuses (a record, or a hole in the queue and ERROR answers), and the
 * batch is published at once.
 */
import {
  BackRing,
  NETIF_RSP,
  ProtocolError,
  TX_REQUEST_SIZE,
  encodeTxResponse,
  isTxParseError,
  parseTxPacket,
  scratchTxPacket,
  type TxLimits,
  type TxResponse,
  DEFAULT_TX_LIMITS,
} from "../protocol/index.ts";
import { pageViews, type GrantTable } from "../platform/types.ts";
import { Control, Counter } from "./control.ts";
import { FrameQueue } from "./frame-queue.ts";
import { COPY_BATCH_PACKETS, CopyBatch, batchBytes } from "./copy-batch.ts";
import { badGsoFrame, packMeta } from "./frame-meta.ts";
import { dropPacket, QueueFull, queueBell, type PeerNotifier, type QueueBell, type RingRole, type RingWorkerInit } from "./role.ts";

/** A fatal peer error: the worker stops on it. */
export class PeerBroken extends Error {
  override readonly name = "PeerBroken";
  constructor(override readonly cause: ProtocolError) {
    super(`peer broken: ${cause.message}`);
  }
}

export class BackTx implements RingRole {
  private readonly ring: BackRing;
  private readonly bell: QueueBell;
  private readonly limits: TxLimits;
  private readonly rsp: TxResponse = { id: 0, status: 0 };
  /** Where one-request packets are parsed (valid until the next parse: fragments go to the batch at once). */
  private readonly pkt = scratchTxPacket();
  private readonly full: QueueFull;
  /** The batch's copy segments: from the front end's grants into the queue. */
  private readonly copies: CopyBatch;
  /**
   * The batch's packets, in ring order. off: the queue reservation, or -1 for a packet the
   * parse dropped (err says why); seg0/segs: its copy segments; id0/ids: its data request ids
   * in `idList`; extras: its extra-info slots (answered NULL).
   */
  private n = 0;
  private readonly off = new Int32Array(COPY_BATCH_PACKETS);
  private readonly size = new Uint32Array(COPY_BATCH_PACKETS);
  private readonly meta = new Uint32Array(COPY_BATCH_PACKETS);
  private readonly seg0 = new Uint16Array(COPY_BATCH_PACKETS);
  private readonly segs = new Uint16Array(COPY_BATCH_PACKETS);
  private readonly id0 = new Uint16Array(COPY_BATCH_PACKETS);
  private readonly ids = new Uint16Array(COPY_BATCH_PACKETS);
  private readonly extras = new Uint16Array(COPY_BATCH_PACKETS);
  private readonly err: (ProtocolError | null)[] = new Array<ProtocolError | null>(COPY_BATCH_PACKETS).fill(null);
  /** Every data request id of the batch (a packet has at most fatalSlots of them). */
  private readonly idList: Uint16Array;
  /** Packet bytes one batch reserves at most (after its first packet). */
  private readonly maxBatchBytes: number;
  /** A packet that broke the ring's framing, met while gathering: thrown once the batch before it is settled. */
  private fatal: ProtocolError | null = null;

  constructor(
    init: RingWorkerInit,
    private readonly q: FrameQueue,
    private readonly ctl: Control,
    private readonly kick: PeerNotifier,
    private readonly gnttab: GrantTable,
    private readonly onError: (e: ProtocolError) => void,
  ) {
    this.bell = queueBell(init, q, FrameQueue.PROD);
    this.ring = new BackRing(pageViews(init.ring)[0]!, TX_REQUEST_SIZE);
    this.ring.attach();
    this.full = new QueueFull(q);
    this.limits = { ...DEFAULT_TX_LIMITS, maxPacketSize: Math.min(init.maxFrame, q.maxRecord, DEFAULT_TX_LIMITS.maxPacketSize) };
    this.maxBatchBytes = batchBytes(q.window);
    this.idList = new Uint16Array(COPY_BATCH_PACKETS * this.limits.fatalSlots);
    this.copies = new CopyBatch(() => ({ source: { domid: init.peer, ref: 0, offset: 0 }, dest: { buf: q.data, offset: 0 }, len: 0 }));
  }

  poll(): boolean {
    let avail = this.ring.unconsumedRequests();
    if (avail === 0) return false;
    let moved = false;
    while (avail > 0) {
      avail -= this.gather(avail);
      const n = this.n;
      this.settle();
      if (n > 0) {
        moved = true;
        this.publish();
      }
      if (this.fatal !== null) {
        const e = this.fatal;
        this.fatal = null;
        throw new PeerBroken(e);
      }
      // Blocked on a full queue (or nothing gathered): the rest waits on the ring.
      if (this.full.blocked || n === 0) break;
    }
    return moved;
  }

  /**
   * Parse up to a batch of packets from `avail` published requests, reserving each valid
   * one in the queue and adding its fragments to the copy batch; the slots consumed. Stops
   * early at a full queue, a packet whose segments or bytes would not fit the batch (the next
   * batch takes it), or a fatal packet (left on the ring, recorded in `fatal`).
   */
  private gather(avail: number): number {
    const r = this.ring;
    const q = this.q;
    const copies = this.copies;
    let used = 0;
    let idn = 0;
    let bytes = 0;
    this.n = 0;
    while (used < avail && this.n < COPY_BATCH_PACKETS) {
      const p = parseTxPacket(r, r.reqCons, avail - used, this.limits, this.pkt);
      const i = this.n;
      this.id0[i] = idn;
      if (isTxParseError(p)) {
        if (p.fatal) {
          this.fatal = p.error;
          break;
        }
        this.off[i] = -1;
        this.err[i] = p.error;
        for (const id of p.ids) this.idList[idn++] = id;
        this.ids[i] = p.ids.length;
        this.extras[i] = p.slots - p.ids.length;
      } else {
        const frags = p.frags;
        if (!copies.fits(frags.length) || (bytes > 0 && bytes + p.size > this.maxBatchBytes)) break;
        const off = q.reserveNext(p.size);
        if (off < 0) {
          this.full.block(p.size);
          break;
        }
        bytes += p.size;
        this.off[i] = off;
        this.size[i] = p.size;
        this.meta[i] = packMeta(p.flags, p.extras);
        this.seg0[i] = copies.count;
        this.segs[i] = frags.length;
        this.ids[i] = frags.length;
        this.extras[i] = p.slots - frags.length;
        let pos = off;
        for (let k = 0; k < frags.length; k++) {
          const f = frags[k]!;
          const s = copies.add();
          const src = s.source as { domid: number; ref: number; offset: number };
          src.ref = f.gref;
          src.offset = f.offset;
          (s.dest as { buf: Uint8Array; offset: number }).offset = pos;
          s.len = f.size;
          pos += f.size;
          this.idList[idn++] = f.id;
        }
      }
      r.reqCons = (r.reqCons + p.slots) >>> 0;
      used += p.slots;
      this.n++;
    }
    return used;
  }

  /**
   * One copy call for the whole batch, then each packet in ring order: a record if every
   * segment copied, else a hole and ERROR answers (a grant the front end never gave us, or
   * gave and took back); the records are published together.
   */
  private settle(): void {
    const q = this.q;
    const copies = this.copies;
    copies.run(this.gnttab);
    for (let i = 0; i < this.n; i++) {
      const off = this.off[i]!;
      const extras = this.extras[i]!;
      if (off < 0) {
        dropPacket(this.ctl, this.onError, this.err[i]!);
        this.err[i] = null;
        this.respond(this.id0[i]!, this.ids[i]!, extras, NETIF_RSP.error);
        continue;
      }
      const size = this.size[i]!;
      const seg0 = this.seg0[i]!;
      const failed = copies.firstFailed(seg0, this.segs[i]!);
      const badGso = failed < 0 ? badGsoFrame(q.data, off, size, this.meta[i]!, "tx_extra_info.gso") : null;
      if (badGso !== null) {
        // Taken from the ring (answered OKAY, as Linux netback answers before its checksum
        // setup drops such a packet) but not delivered: dropped and counted.
        q.dropAt(off, size);
        dropPacket(this.ctl, this.onError, badGso);
        this.respond(this.id0[i]!, this.ids[i]!, extras, NETIF_RSP.okay);
      } else if (failed < 0) {
        q.commitAt(off, size, this.meta[i]!);
        this.ctl.add(Counter.packets, 1);
        this.ctl.add(Counter.bytes, size);
        if (extras > 0) this.ctl.add(Counter.extras, 1);
        this.respond(this.id0[i]!, this.ids[i]!, extras, NETIF_RSP.okay);
      } else {
        q.dropAt(off, size);
        const s = copies.segment(failed);
        const ref = (s.source as { ref: number }).ref;
        dropPacket(this.ctl, this.onError, new ProtocolError("BAD_GREF", `tx_request[${failed - seg0}].gref`, ref, `grant copy from the front end failed with GNTST ${s.status}`));
        this.respond(this.id0[i]!, this.ids[i]!, extras, NETIF_RSP.error);
      }
    }
    q.publish();
    copies.clear();
  }

  /** The session is ending: take in every request already on the ring (as poll does). */
  drain(): boolean {
    return this.poll();
  }

  finish(): void {}

  get blocked(): boolean {
    return this.full.blocked;
  }

  private publish(): void {
    if (this.ring.pushResponses()) this.kick.notify();
    if (this.q.consumerWaiting()) this.bell.ring();
  }

  /** One response per slot: the first data id, NULL for each extra, then the other ids (`n` ids from `idList[at]`). */
  private respond(at: number, n: number, extras: number, status: number): void {
    const r = this.ring;
    for (let i = 0; i < n; i++) {
      this.rsp.id = this.idList[at + i]!;
      this.rsp.status = status;
      encodeTxResponse(r.view, r.slotOffset(r.rspProdPvt), this.rsp);
      r.rspProdPvt = (r.rspProdPvt + 1) >>> 0;
      if (i === 0) {
        for (let e = 0; e < extras; e++) {
          this.rsp.status = NETIF_RSP.null;
          encodeTxResponse(r.view, r.slotOffset(r.rspProdPvt), this.rsp);
          r.rspProdPvt = (r.rspProdPvt + 1) >>> 0;
        }
      }
    }
  }

  prepareSleep(): boolean {
    // Blocked on a full queue: the main thread kicks us when it makes room.
    if (this.full.blocked) return this.full.prepareSleep();
    return this.ring.finalCheckForRequests();
  }

  woke(): void {
    this.full.woke();
  }
}
