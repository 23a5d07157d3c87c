/**
 * The one-thread ring loops of the benchmarks (bench/ring-loop.ts, bench/rx-ring-loop.ts)
 * move the right bytes: every frame differs from the one before (its sequence number in its
 * first and last 8 bytes, like the C reference, and xorshift bytes between), and the receiver
 * sees each one whole, in order, once, byte for byte, single-page and more_data chains alike,
 * across ring wrap-around. After close() the simulated hypervisor holds nothing.
 */
import { describe, expect, test } from "bun:test";
import { TxRingLoop, type RingLoopHooks } from "../bench/ring-loop.ts";
import { RxRingLoop } from "../bench/rx-ring-loop.ts";
import { fillFrame } from "./helpers/frames.ts";

const SEED = 0x5eed;
const STAMP = 8;

/** Frame `seq`: the seeded xorshift pattern, with seq stamped in the first and last 8 bytes. */
function writeFrame(dst: Uint8Array, seq: number): void {
  fillFrame(dst, SEED, seq);
  if (dst.byteLength < 2 * STAMP) return; // too short for two stamps: fillFrame's own 4-byte seq
  const v = new DataView(dst.buffer, dst.byteOffset, dst.byteLength);
  v.setBigUint64(0, BigInt(seq), true);
  v.setBigUint64(dst.byteLength - STAMP, BigInt(seq), true);
}

/** Hooks that stamp each frame sent and check each frame received against the same frame. */
function checker(size: number) {
  const want = new Uint8Array(size);
  const seen: number[] = [];
  const errors: string[] = [];
  const hooks: RingLoopHooks = {
    send: (frame, seq) => writeFrame(frame, seq),
    receive: (bytes, len, seq) => {
      seen.push(seq);
      if (errors.length >= 5) return;
      if (len !== size) {
        errors.push(`frame ${seq}: ${len} bytes, sent ${size}`);
        return;
      }
      if (len >= 2 * STAMP) {
        const v = new DataView(bytes.buffer, bytes.byteOffset, len);
        const head = v.getBigUint64(0, true);
        const tail = v.getBigUint64(len - STAMP, true);
        if (head !== BigInt(seq) || tail !== BigInt(seq)) errors.push(`frame ${seq}: stamps ${head}/${tail}`);
      }
      writeFrame(want, seq);
      for (let i = 0; i < len; i++) {
        if (bytes[i] !== want[i]) {
          errors.push(`frame ${seq}: byte ${i} is ${bytes[i]}, sent ${want[i]}`);
          break;
        }
      }
    },
  };
  return { hooks, seen, errors };
}

interface Loop {
  readonly slotsPerFrame: number;
  readonly sent: number;
  readonly received: number;
  readonly hv: { leaks(): unknown[] };
  step(n: number): void;
  close(): void;
}

/**
 * Run `frames` frames in uneven batches (so the ring wraps at different places, and a step
 * holds several packets when they fit) and check every one arrived intact, in order.
 */
function exercise(make: (size: number, hooks: RingLoopHooks) => Loop, size: number, frames: number) {
  const c = checker(size);
  const loop = make(size, c.hooks);
  const maxBatch = Math.floor(256 / loop.slotsPerFrame);
  const batches = [1, 3, maxBatch, 7, 32, 2];
  let moved = 0;
  for (let k = 0; moved < frames; k++) {
    const n = Math.max(1, Math.min(batches[k % batches.length]!, maxBatch, frames - moved));
    loop.step(n);
    moved += n;
  }
  expect(c.errors).toEqual([]);
  expect(loop.sent).toBe(frames);
  expect(loop.received).toBe(frames);
  expect(c.seen).toEqual(Array.from({ length: frames }, (_, i) => i));
  loop.close();
  expect(loop.hv.leaks()).toEqual([]);
}

describe("TxRingLoop", () => {
  for (const size of [64, 1514, 4096, 4097, 9014, 65535]) {
    test(`${size}-byte frames arrive whole and in order`, () => {
      exercise((s, h) => new TxRingLoop(s, h), size, size > 9014 ? 300 : 600);
    });
  }

  test("slots per frame and batch limits", () => {
    expect(new TxRingLoop(4096).slotsPerFrame).toBe(1);
    expect(new TxRingLoop(9014).slotsPerFrame).toBe(3);
    const big = new TxRingLoop(65535);
    expect(big.slotsPerFrame).toBe(16);
    expect(() => big.step(17)).toThrow(RangeError);
    big.step(16);
    expect(() => new TxRingLoop(65536)).toThrow(RangeError);
    expect(() => new TxRingLoop(13)).toThrow(RangeError);
  });

  test("without hooks the loop still moves the frame (checksum of the last byte)", () => {
    const loop = new TxRingLoop(9014);
    loop.step(32);
    // The template is byte i = i * 7 (mod 256).
    expect(loop.checksum).toBe((9013 * 7) & 0xff);
  });
});

describe("RxRingLoop", () => {
  for (const size of [14, 64, 1514, 4096, 4097, 9014, 65535]) {
    test(`${size}-byte frames arrive whole and in order`, () => {
      exercise((s, h) => new RxRingLoop(s, h), size, size > 9014 ? 300 : 600);
    });
  }

  test("bytes received and the ring stays full of posted buffers", () => {
    const loop = new RxRingLoop(9014);
    for (let i = 0; i < 100; i++) loop.step(85); // 85 × 3 = 255 slots a step, wrapping every time
    expect(loop.received).toBe(8500);
    expect(loop.bytes).toBe(8500 * 9014);
    expect(loop.checksum).toBe(100 * ((9013 * 7) & 0xff));
    expect(() => loop.step(86)).toThrow(RangeError);
    loop.close();
    expect(loop.hv.leaks()).toEqual([]);
  });
});

describe("the two-worker ring pair (bench/ring-pair.ts)", () => {
  test("moves every frame in order through our roles in two workers, both ways, and leaves nothing behind", async () => {
    const { ringPair } = await import("../bench/ring-pair.ts");
    for (const dir of ["tx", "rx"] as const) {
      for (const size of [60, 9014]) {
        const pair = await ringPair(dir, size);
        try {
          // run() throws when a frame arrives with the wrong length or sequence stamp.
          const r = await pair.run(5000);
          expect(r.ns_per_frame).toBeGreaterThan(0);
          await pair.run(3000);
        } finally {
          await pair.close(); // asserts that no grant, mapping, page or port leaked
        }
      }
    }
  }, 60_000);
});
