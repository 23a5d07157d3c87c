import { describe, expect, test } from "bun:test";
import { copyBytes } from "../src/platform/copy-bytes.ts";

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
