/**
 * A read-only mapping as the driver sees it: there is no method that writes, so a driver cannot
 * write through it by mistake (a Uint8Array would let it; the simulation has no MMU, and on real
 * Xen a write to a PROT_READ mapping is a SIGSEGV, not an error).
 */
import { copyBytes } from "./copy-bytes.ts";
import { PAGE_SIZE, type ReadonlyPage } from "./types.ts";

export class ReadonlyPageView implements ReadonlyPage {
  readonly byteLength = PAGE_SIZE;
  constructor(private readonly bytes: Uint8Array) {}

  at(index: number): number {
    if (!Number.isInteger(index) || index < 0 || index >= PAGE_SIZE) {
      throw new RangeError(`read-only page index ${index} outside 0..${PAGE_SIZE - 1}`);
    }
    return this.bytes[index]!;
  }

  copyTo(offset: number, len: number, dst: Uint8Array, dstOffset: number): void {
    if (!Number.isInteger(offset) || !Number.isInteger(len) || offset < 0 || len < 0 || offset + len > PAGE_SIZE) {
      throw new RangeError(`read-only page copy ${offset}+${len} outside the ${PAGE_SIZE}-byte page`);
    }
    copyBytes(dst, dstOffset, this.bytes, offset, len);
  }
}
