/**
 * The back end's side of the front end's TX ring: parse each packet's requests, grant-copy its
 * fragments straight into the main thread's queue, answer every slot (OKAY, or ERROR for a
 * dropped packet, NULL for an extra-info slot). A packet that breaks the ring's framing is
 * fatal: the worker stops and the device reports the peer broken, as Linux netback does.
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
import { GNTST, pageViews, type CopySegment, type GrantTable } from "../platform/types.ts";
import { Control, Counter } from "./control.ts";
import { FrameQueue } from "./frame-queue.ts";
import { packMeta } from "./frame-meta.ts";
import { dropPacket, PUBLISH_EVERY, QueueFull, queueBell, type PeerNotifier, type QueueBell, type RingRole, type RingWorkerInit } from "./role.ts";

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
  /** Reused copy segments, one per possible fragment; segsFor[n] holds the first n. */
  private readonly segsFor: CopySegment[][];
  /** Where one-request packets are parsed, and the ids of the packet being answered. */
  private readonly pkt = scratchTxPacket();
  private readonly ids: number[] = [];
  private readonly full: QueueFull;

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
    const segs: CopySegment[] = Array.from({ length: this.limits.fatalSlots }, () => ({
      source: { domid: init.peer, ref: 0, offset: 0 },
      dest: { buf: q.data, offset: 0 },
      len: 0,
    }));
    this.segsFor = segs.map((_, n) => segs.slice(0, n)).concat([segs]);
  }

  poll(): boolean {
    const r = this.ring;
    const q = this.q;
    let avail = r.unconsumedRequests();
    if (avail === 0) return false;
    let packets = 0;
    while (avail > 0) {
      const p = parseTxPacket(r, r.reqCons, avail, this.limits, this.pkt);
      if (isTxParseError(p)) {
        if (p.fatal) throw new PeerBroken(p.error);
        dropPacket(this.ctl, this.onError, p.error);
        this.respond(p.ids, p.slots - p.ids.length, NETIF_RSP.error);
      } else {
        const off = q.reserve(p.size);
        if (off < 0) {
          this.full.block(p.size);
          break;
        }
        const ids = this.ids;
        ids.length = 0;
        for (const f of p.frags) ids.push(f.id);
        const failed = this.copyIn(p.frags, off);
        if (failed < 0) {
          q.commit(off, p.size, packMeta(p.flags, p.extras));
          this.ctl.add(Counter.packets, 1);
          this.ctl.add(Counter.bytes, p.size);
          if (p.extras.length > 0) this.ctl.add(Counter.extras, 1);
          this.respond(ids, p.slots - ids.length, NETIF_RSP.okay);
        } else {
          // A grant the front end never gave us, or gave and took back: drop, answer ERROR.
          const f = p.frags[failed]!;
          const st = this.segsFor[p.frags.length]![failed]!.status;
          dropPacket(this.ctl, this.onError, new ProtocolError("BAD_GREF", `tx_request[${failed}].gref`, f.gref, `grant copy from the front end failed with GNTST ${st}`));
          this.respond(ids, p.slots - ids.length, NETIF_RSP.error);
        }
      }
      r.reqCons = (r.reqCons + p.slots) >>> 0;
      avail -= p.slots;
      if (++packets % PUBLISH_EVERY === 0) this.publish();
    }
    if (packets > 0) this.publish();
    return packets > 0;
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

  /** Grant-copy each fragment into the reserved record; the index of the first that failed, or -1. */
  private copyIn(frags: { gref: number; offset: number; size: number }[], off: number): number {
    const segs = this.segsFor[frags.length]!;
    let pos = off;
    for (let i = 0; i < frags.length; i++) {
      const f = frags[i]!;
      const s = segs[i]!;
      const src = s.source as { domid: number; ref: number; offset: number };
      src.ref = f.gref;
      src.offset = f.offset;
      (s.dest as { buf: Uint8Array; offset: number }).offset = pos;
      s.len = f.size;
      pos += f.size;
    }
    this.gnttab.copy(segs);
    for (let i = 0; i < segs.length; i++) if (segs[i]!.status !== GNTST.okay) return i;
    return -1;
  }

  /** One response per slot: the first data id, NULL for each extra, then the other ids. */
  private respond(ids: number[], extras: number, status: number): void {
    const r = this.ring;
    for (let i = 0; i < ids.length; i++) {
      this.rsp.id = ids[i]!;
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
