import { describe, expect, test } from "bun:test";
import { AddressedBytes, copyBetween, copyBytes } from "../src/platform/copy-bytes.ts";

describe("copyBytes", () => {
  test("copies exactly the range, between shared and plain buffers, at any offsets", () => {
    const src = new Uint8Array(new SharedArrayBuffer(4096)).map((_, i) => (i * 31 + 7) & 0xff);
    const dst = new Uint8Array(3000).fill(0xee);
    copyBytes(dst, 5, src, 1000, 1514);
    expect(dst[4]).toBe(0xee);
    expect(dst.subarray(5, 5 + 1514)).toEqual(src.subarray(1000, 2514));
    expect(dst[5 + 1514]).toBe(0xee);
  });

  test("views with a byteOffset count from their own start", () => {
    const buf = new SharedArrayBuffer(8192);
    const a = new Uint8Array(buf, 4096, 4096).fill(1);
    const b = new Uint8Array(buf, 0, 4096);
    a[10] = 9;
    copyBytes(b, 100, a, 10, 1);
    expect(b[100]).toBe(9);
    expect(b[99]).toBe(0);
    expect(new Uint8Array(buf)[4096 + 100]).toBe(1);
  });

  test("overlapping ranges in one buffer move as memmove does", () => {
    const u = Uint8Array.from({ length: 16 }, (_, i) => i);
    copyBytes(u, 2, u, 0, 8);
    expect([...u.subarray(0, 12)]).toEqual([0, 1, 0, 1, 2, 3, 4, 5, 6, 7, 10, 11]);
  });

  test("zero bytes is a no-op; anything out of bounds throws rather than clamping", () => {
    const src = new Uint8Array(16).fill(3);
    const dst = new Uint8Array(16);
    copyBytes(dst, 16, src, 16, 0);
    expect(dst.every((x) => x === 0)).toBe(true);
    expect(() => copyBytes(dst, 10, src, 0, 7)).toThrow(RangeError);
    expect(() => copyBytes(dst, 0, src, 10, 7)).toThrow(/out of bounds/);
    expect(() => copyBytes(dst, -1, src, 0, 1)).toThrow(RangeError);
    expect(() => copyBytes(dst, 0, src, 0, -1)).toThrow(RangeError);
    expect(() => copyBytes(dst, 0, src, Number.NaN, 1)).toThrow(RangeError);
    expect(dst.every((x) => x === 0)).toBe(true);
  });
});

describe("copyBetween (libc memmove between addressed buffers)", () => {
  test("it really goes native here (glibc), and copies exactly the range at any offsets", () => {
    const src = new AddressedBytes(new Uint8Array(new SharedArrayBuffer(4096)).map((_, i) => (i * 31 + 7) & 0xff));
    const dst = new AddressedBytes(new Uint8Array(3000).fill(0xee));
    expect(src.addr).toBeGreaterThan(0);
    expect(dst.addr).toBeGreaterThan(0);
    // Often enough for the JIT to compile the call, then check every byte.
    for (let i = 0; i < 200_000; i++) copyBetween(dst, 5 + (i & 7), src, 1000, 1514);
    dst.bytes.fill(0xee);
    copyBetween(dst, 5, src, 1000, 1514);
    expect(dst.bytes[4]).toBe(0xee);
    expect(dst.bytes.subarray(5, 5 + 1514)).toEqual(src.bytes.subarray(1000, 2514));
    expect(dst.bytes[5 + 1514]).toBe(0xee);
  });

  test("a small array's bytes stay where the address points, even once its .buffer is read", () => {
    // Small arrays keep their bytes inline until .buffer is read, which moves them.
    const frame = new Uint8Array(64).map((_, i) => i);
    const at = new AddressedBytes(frame);
    const view = new DataView(frame.buffer);
    view.setUint32(0, 0xdeadbeef, true);
    frame[63] = 0x55;
    const out = new AddressedBytes(new Uint8Array(64));
    copyBetween(out, 0, at, 0, 64);
    expect(out.bytes).toEqual(frame);
  });

  test("overlapping ranges in one buffer move as memmove does", () => {
    const u = new AddressedBytes(Uint8Array.from({ length: 16 }, (_, i) => i));
    copyBetween(u, 2, u, 0, 8);
    expect([...u.bytes.subarray(0, 12)]).toEqual([0, 1, 0, 1, 2, 3, 4, 5, 6, 7, 10, 11]);
  });

  test("out of bounds throws and writes nothing; a detached buffer has no bytes left to copy", () => {
    const src = new AddressedBytes(new Uint8Array(16).fill(3));
    const dst = new AddressedBytes(new Uint8Array(16));
    copyBetween(dst, 16, src, 16, 0);
    expect(() => copyBetween(dst, 10, src, 0, 7)).toThrow(RangeError);
    expect(() => copyBetween(dst, 0, src, 10, 7)).toThrow(/out of bounds/);
    expect(() => copyBetween(dst, -1, src, 0, 1)).toThrow(RangeError);
    expect(() => copyBetween(dst, 0, src, 0, Number.NaN)).toThrow(RangeError);
    expect(dst.bytes.every((x) => x === 0)).toBe(true);
    // Transferring the buffer frees or moves its bytes: the old address must not be written.
    const gone = new Uint8Array(64);
    const goneAt = new AddressedBytes(gone);
    structuredClone(gone.buffer, { transfer: [gone.buffer] });
    expect(() => copyBetween(goneAt, 0, src, 0, 1)).toThrow(RangeError);
  });
});
