/**
 * Received frames handed over many at a time (`listenBatch`): no view, no call and no release
 * per frame. A batch is the frames one drain of a receive queue found, up to CHUNK; each lies
 * in the queue's own bytes (`bytes`, at `offset(i)`, `size(i)` long), so a listener can read
 * them without a Uint8Array being made per frame, or ask for a view with `frame(i)`. It is
 * valid only during the call: the queue reuses the bytes as soon as the listener returns, so
 * a batch kept past it is empty (its length reads 0 and every index is refused).
 */
import { NetError } from "./errors.ts";
import type { FrameInfo } from "./device.ts";

/** Frames per batch at most: the reader gives their room back to the worker after each batch. */
export const CHUNK = 64;

export interface FrameBatch {
  /** Frames in the batch (0 once the call returned). */
  readonly length: number;
  /** The receive queue's bytes: frame `i` is `bytes[offset(i) .. offset(i) + size(i))`. */
  readonly bytes: Uint8Array;
  offset(i: number): number;
  size(i: number): number;
  /** A view of frame `i`, valid only during the call. */
  frame(i: number): Uint8Array;
  /** Frame `i`'s checksum and GSO facts (as a listener's `info`). */
  info(i: number): FrameInfo;
}

export type BatchListener = (batch: FrameBatch) => void;

/** The reader's batch: filled in place, drain after drain. */
export class QueueBatch implements FrameBatch {
  length = 0;
  private readonly offsets = new Int32Array(CHUNK);
  private readonly sizes = new Int32Array(CHUNK);
  private readonly metas = new Uint32Array(CHUNK);

  constructor(
    readonly bytes: Uint8Array,
    private readonly decode: (meta: number) => FrameInfo,
  ) {}

  /** Append a frame (the reader's side; at most CHUNK before `clear`). */
  add(offset: number, size: number, meta: number): void {
    const k = this.length++;
    this.offsets[k] = offset;
    this.sizes[k] = size;
    this.metas[k] = meta;
  }

  get full(): boolean {
    return this.length === CHUNK;
  }

  clear(): void {
    this.length = 0;
  }

  private at(i: number, what: string): number {
    if (!Number.isInteger(i) || i < 0 || i >= this.length) {
      throw new NetError("BAD_ARGUMENT", `batch.${what}(${String(i)}): the batch holds ${this.length} frames${this.length === 0 ? " (it is valid only during the listener's call)" : ""}`);
    }
    return i;
  }

  offset(i: number): number {
    return this.offsets[this.at(i, "offset")]!;
  }

  size(i: number): number {
    return this.sizes[this.at(i, "size")]!;
  }

  frame(i: number): Uint8Array {
    const off = this.offsets[this.at(i, "frame")]!;
    return this.bytes.subarray(off, off + this.sizes[i]!);
  }

  info(i: number): FrameInfo {
    return this.decode(this.metas[this.at(i, "info")]!);
  }
}
