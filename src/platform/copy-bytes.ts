/**
 * Copy a byte range between two typed arrays without making a view of either.
 *
 * `dst.set(src.subarray(a, b), at)` allocates a view per call (≈30 ns on Bun, as much as the
 * copy itself for a 1514-byte frame). Buffer's copy takes the source range as numbers, so it
 * moves the same bytes with no allocation, between any two buffers (shared, mapped or not),
 * with memmove semantics when they overlap. It clamps silently where it would run past
 * either end, so the caller checks bounds first; `copyBytes` does, and throws instead.
 *
 * Between buffers whose addresses are known (`AddressedBytes`), libc's memmove called through
 * bun:ffi is cheaper still; `copyBetween` uses it, with the same bounds check.
 */
import type { Pointer } from "bun:ffi";
import { addressOf, libcMemmove } from "../ffi/libc.ts";

const bufferCopy = Buffer.prototype.copy;

export function copyBytes(dst: Uint8Array, dstOffset: number, src: Uint8Array, srcOffset: number, len: number): void {
  checkCopy(dst.byteLength, dstOffset, src.byteLength, srcOffset, len);
  bufferCopy.call(src, dst, dstOffset, srcOffset, srcOffset + len);
}

function checkCopy(dstLength: number, dstOffset: number, srcLength: number, srcOffset: number, len: number): void {
  if (!(len >= 0 && srcOffset >= 0 && dstOffset >= 0 && srcOffset + len <= srcLength && dstOffset + len <= dstLength)) {
    throw new RangeError(`copy of ${len} bytes from ${srcOffset} (of ${srcLength}) to ${dstOffset} (of ${dstLength}) is out of bounds`);
  }
}

/**
 * libc's memmove through bun:ffi, or null where it cannot be loaded; opened with the first
 * AddressedBytes, so a thread that never makes one never opens libc.
 */
let memmove: ReturnType<typeof libcMemmove> | undefined;

/**
 * A buffer and its address, taken once. Copies between two of them go through libc's memmove
 * (bench/parts.ts: 8 ns for 64 bytes and 20 ns for 1514, against Buffer's copy at 15 and 26),
 * which needs the addresses: taking one costs about 10 ns, so it is taken here, not per copy.
 * Only for buffers that live as long as this object (it keeps them referenced): shared memory,
 * mapped pages, the queues. Without libc the address is 0 and copies use Buffer's copy.
 */
export class AddressedBytes {
  readonly addr: number;

  constructor(readonly bytes: Uint8Array) {
    // A small array keeps its bytes inline until its `.buffer` is first read, which moves them
    // into an ArrayBuffer of their own: an address taken before that would go stale (a test
    // caught it). Reading it first pins them where they will stay.
    void bytes.buffer;
    memmove ??= libcMemmove();
    this.addr = memmove === null || bytes.byteLength === 0 ? 0 : addressOf(bytes);
  }
}

/**
 * The address of the buffer last asked for, kept: a back end's grant copies go from and to the
 * same local buffer (its queue) frame after frame, and taking an address costs about what the
 * native copy saves.
 */
export class LastAddressed {
  private last = new AddressedBytes(new Uint8Array(0));

  of(bytes: Uint8Array): AddressedBytes {
    if (this.last.bytes !== bytes) this.last = new AddressedBytes(bytes);
    return this.last;
  }
}

/** copyBytes between addressed buffers: the same bounds check (it throws), then a native copy. */
export function copyBetween(dst: AddressedBytes, dstOffset: number, src: AddressedBytes, srcOffset: number, len: number): void {
  checkCopy(dst.bytes.byteLength, dstOffset, src.bytes.byteLength, srcOffset, len);
  copyBetweenUnchecked(dst, dstOffset, src, srcOffset, len);
}

/** The copy without the bounds check, for a caller that has checked every bound itself. */
export function copyBetweenUnchecked(dst: AddressedBytes, dstOffset: number, src: AddressedBytes, srcOffset: number, len: number): void {
  if (dst.addr !== 0 && src.addr !== 0) memmove!((dst.addr + dstOffset) as Pointer, (src.addr + srcOffset) as Pointer, len);
  else bufferCopy.call(src.bytes, dst.bytes, dstOffset, srcOffset, srcOffset + len);
}
