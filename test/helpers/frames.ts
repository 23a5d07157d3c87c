/**
 * Frames whose size and content follow from a seed and a sequence number, so a sender writes
 * them in place and a receiver checks them byte for byte without keeping a copy: 10^6 frames
 * never sit in memory.
 */
import { mulberry32 } from "./prng.ts";

export interface SizePlan {
  /** Share of frames larger than one page. */
  multiPage: number;
  min: number;
  maxSmall: number;
  maxLarge: number;
}

export function frameSize(seed: number, seq: number, p: SizePlan): number {
  const r = mulberry32((seed ^ Math.imul(seq, 0x9e3779b1)) >>> 0);
  if (r() < p.multiPage) return 4097 + Math.floor(r() * (p.maxLarge - 4097 + 1));
  return p.min + Math.floor(r() * (p.maxSmall - p.min + 1));
}

/** Fill `dst` with frame `seq`'s bytes: its sequence number first, then xorshift32 output. */
export function fillFrame(dst: Uint8Array, seed: number, seq: number): void {
  let x = (seed ^ Math.imul(seq + 1, 0x85ebca6b)) >>> 0 || 1;
  const n = dst.length;
  dst[0] = seq & 0xff;
  dst[1] = (seq >>> 8) & 0xff;
  dst[2] = (seq >>> 16) & 0xff;
  dst[3] = (seq >>> 24) & 0xff;
  let i = 4;
  for (; i + 4 <= n; i += 4) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    dst[i] = x & 0xff;
    dst[i + 1] = (x >>> 8) & 0xff;
    dst[i + 2] = (x >>> 16) & 0xff;
    dst[i + 3] = x >>> 24;
  }
  for (; i < n; i++) dst[i] = (seq * 7 + i) & 0xff;
}

/** The first byte where `got` differs from frame `seq`, or -1 (length included). */
export function checkFrame(got: Uint8Array, seed: number, seq: number, expectLen: number, scratch: Uint8Array): number {
  if (got.length !== expectLen) return -2;
  const want = scratch.subarray(0, expectLen);
  fillFrame(want, seed, seq);
  for (let i = 0; i < expectLen; i++) if (got[i] !== want[i]) return i;
  return -1;
}
