/**
 * The grant copies of one batch of packets, handed to the hypervisor in one call: on real Xen
 * one IOCTL_GNTDEV_GRANT_COPY (one GNTTABOP_copy hypercall) for up to 64 packets instead of
 * one per packet, as Linux netback batches its copies. The back-end roles fill it while they
 * parse a poll's packets, run it once, then read each packet's statuses back by its range.
 */
import { GNTST, type CopySegment, type GrantTable } from "../platform/types.ts";

/** Packets in one batch at most (Linux netback's NAPI budget, 64). */
export const COPY_BATCH_PACKETS = 64;

/**
 * Segments in one batch at most: what one GRANT_COPY ioctl of the Xen platform carries
 * (src/platform/xen/grant-table.ts splits longer lists), so a batch is one hypercall. A packet
 * whose segments would not fit goes in the next batch.
 */
export const COPY_BATCH_SEGMENTS = 256;

/**
 * Queue bytes one batch may hold at most: half the queue's window. A batch's records reach
 * the consumer only when it is published (TX), or go back to the producer only when it is
 * settled (RX); with half the window per batch, the main thread works on one batch while the
 * worker copies the next, instead of the two taking turns on a full queue.
 */
export function batchBytes(window: number): number {
  return Math.max(1, window >>> 1);
}

export class CopyBatch {
  /** Every segment object this batch may use, made once (the data path allocates nothing). */
  private readonly pool: CopySegment[];
  /**
   * What copy() is given: the pool's first segments, as many as the batch has. Its length
   * changes only when a batch's size does (a steady stream of full batches writes nothing here).
   */
  private readonly list: CopySegment[] = [];
  private n = 0;

  constructor(make: () => CopySegment) {
    this.pool = Array.from({ length: COPY_BATCH_SEGMENTS }, make);
  }

  get count(): number {
    return this.n;
  }

  /** Room for `n` more segments in this batch. */
  fits(n: number): boolean {
    return this.n + n <= COPY_BATCH_SEGMENTS;
  }

  /** The next segment of the batch, to fill in (sides and length). */
  add(): CopySegment {
    return this.pool[this.n++]!;
  }

  segment(i: number): CopySegment {
    return this.pool[i]!;
  }

  /** Every segment in one call; each one's status is set (a bad one never throws). */
  run(gnttab: GrantTable): void {
    const n = this.n;
    if (n === 0) return;
    const list = this.list;
    if (list.length > n) list.length = n;
    else while (list.length < n) list.push(this.pool[list.length]!);
    gnttab.copy(list);
  }

  /** The index of the first segment of `[start, start + n)` that failed, or -1. */
  firstFailed(start: number, n: number): number {
    for (let i = start; i < start + n; i++) if (this.pool[i]!.status !== GNTST.okay) return i;
    return -1;
  }

  /** Empty, for the next batch (the segment objects are kept). */
  clear(): void {
    this.n = 0;
  }
}
