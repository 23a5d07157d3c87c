/**
 * What the two one-thread ring loops (TX: bench/ring-loop.ts, RX: bench/rx-ring-loop.ts) share:
 * the link (bench/sim-link.ts), both halves of the ring, the front's pages, the frame the
 * sender moves, the test hooks and the counters.
 */
import { BackRing, ETH_HLEN, FrontRing, GRANT_PAGE_SIZE, MAX_PACKET_SIZE } from "../src/protocol/index.ts";
import type { GrantTable } from "../src/platform/types.ts";
import { AddressedBytes } from "../src/platform/copy-bytes.ts";
import { simLink, type SimLink } from "./sim-link.ts";

/**
 * Optional per-frame hooks, for tests: `send` may rewrite the frame about to go (frame `seq`,
 * counted from 0), `receive` sees the receiver's copy of each frame as soon as it is complete.
 * Without them the loop moves the same frame over and over, checking nothing per frame.
 */
export interface RingLoopHooks {
  send?: (frame: Uint8Array, seq: number) => void;
  receive?: (bytes: Uint8Array, len: number, seq: number) => void;
}

export abstract class RingLoop {
  /** Ring slots (and data pages) each frame uses. */
  readonly slotsPerFrame: number;
  protected readonly front: FrontRing;
  protected readonly back: BackRing;
  /** dom0's grant table: the back end's copies go through it. */
  protected readonly gnttab: GrantTable;
  /** The front's data pages, one per slot (addressed for native copies, as the driver's roles copy), and their grant references. */
  protected readonly pagesAt: AddressedBytes[];
  protected readonly refs: readonly number[];
  /** The sender's frame. */
  protected readonly frame: Uint8Array;
  /** The frame, addressed for native copies. */
  protected readonly frameAt: AddressedBytes;
  protected readonly sendHook: RingLoopHooks["send"];
  protected readonly receiveHook: RingLoopHooks["receive"];
  private readonly link: SimLink;
  readonly hv: SimLink["hv"];
  checksum = 0;
  /** Frames the sender has put on the ring, and frames the receiver has taken off it. */
  sent = 0;
  received = 0;

  constructor(
    readonly frameSize: number,
    slotSize: number,
    /** RX pages are written into by the back end; TX pages only read. */
    dataWritable: boolean,
    hooks: RingLoopHooks,
  ) {
    if (!Number.isInteger(frameSize) || frameSize < ETH_HLEN || frameSize > MAX_PACKET_SIZE) {
      throw new RangeError(`frame size must be an integer in ${ETH_HLEN}..${MAX_PACKET_SIZE}, got ${frameSize}`);
    }
    this.slotsPerFrame = Math.ceil(frameSize / GRANT_PAGE_SIZE);
    this.sendHook = hooks.send;
    this.receiveHook = hooks.receive;
    this.link = simLink(dataWritable);
    this.hv = this.link.hv;
    this.gnttab = this.hv.platform(0).gnttab;
    this.pagesAt = this.link.data.pages.map((p) => new AddressedBytes(p));
    this.refs = this.link.data.refs;
    this.front = new FrontRing(this.link.ring.pages[0]!, slotSize);
    this.front.init();
    this.back = new BackRing(this.link.mapped.pages[0]!, slotSize);
    this.back.attach();
    if (this.pagesAt.length !== this.front.size) throw new Error(`one data page per slot: ${this.pagesAt.length} pages, ${this.front.size} slots`);
    this.frame = new Uint8Array(frameSize).map((_, i) => i * 7);
    this.frameAt = new AddressedBytes(this.frame);
  }

  /** Move `n` frames (n × slotsPerFrame ≤ 256). */
  abstract step(n: number): void;

  protected checkStep(n: number): void {
    if (n * this.slotsPerFrame > this.front.size) {
      throw new RangeError(`${n} frames of ${this.slotsPerFrame} slot(s) do not fit a ${this.front.size}-slot ring`);
    }
  }

  /** Unmap and end every grant; throws if anything leaked. */
  close(): void {
    this.link.close();
  }
}
