/**
 * Copy a byte range between two typed arrays without making a view of either.
 *
 * `dst.set(src.subarray(a, b), at)` allocates a view per call (≈30 ns on Bun, as much as the
 * copy itself for a 1514-byte frame). Buffer's copy takes the source range as numbers, so it
 * moves the same bytes with no allocation, between any two buffers (shared, mapped or not),
 * with memmove semantics when they overlap. It clamps silently where it would run past
 * either end, so the caller checks bounds first; `copyBytes` does, and throws instead.
 */
const bufferCopy = Buffer.prototype.copy;

export function copyBytes(dst: Uint8Array, dstOffset: number, src: Uint8Array, srcOffset: number, len: number): void {
  if (!(len >= 0 && srcOffset >= 0 && dstOffset >= 0 && srcOffset + len <= src.byteLength && dstOffset + len <= dst.byteLength)) {
    throw new RangeError(`copy of ${len} bytes from ${srcOffset} (of ${src.byteLength}) to ${dstOffset} (of ${dst.byteLength}) is out of bounds`);
  }
  copyUnchecked(dst, dstOffset, src, srcOffset, len);
}

/** The copy without the bounds check, for a caller that has checked every bound itself. */
export function copyUnchecked(dst: Uint8Array, dstOffset: number, src: Uint8Array, srcOffset: number, len: number): void {
  bufferCopy.call(src, dst, dstOffset, srcOffset, srcOffset + len);
}
