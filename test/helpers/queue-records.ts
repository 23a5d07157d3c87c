/** Frames and record reads for the frame-queue tests. */
import type { FrameQueue } from "../../src/workers/frame-queue.ts";

/** A frame of `len` bytes whose contents say which one it is. */
export function frame(seq: number, len: number): Uint8Array<ArrayBuffer> {
  return Uint8Array.from({ length: len }, (_, i) => (seq * 31 + i * 7) & 0xff);
}

/** Take the next record: its bytes (a copy) and meta, or null. */
export function pop(q: FrameQueue): { bytes: Uint8Array; meta: number } | null {
  const off = q.peek();
  if (off < 0) return null;
  const out = { bytes: q.data.slice(off, off + q.recordLength(off)), meta: q.recordMeta(off) };
  q.release(off);
  return out;
}
