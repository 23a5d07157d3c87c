import { describe, expect, test } from "bun:test";
import { FrameQueue, createFrameQueueState } from "../src/workers/frame-queue.ts";
import { Rng } from "./helpers/prng.ts";

function frame(seq: number, len: number): Uint8Array {
  return Uint8Array.from({ length: len }, (_, i) => (seq * 31 + i * 7) & 0xff);
}

/** Take the next record: its bytes (a copy) and meta, or null. */
function pop(q: FrameQueue): { bytes: Uint8Array; meta: number } | null {
  const off = q.peek();
  if (off < 0) return null;
  const out = { bytes: q.data.slice(off, off + q.recordLength(off)), meta: q.recordMeta(off) };
  q.release(off);
  return out;
}

describe("frame queue", () => {
  test("records come out in order, byte-exact, through thousands of wraps and skips", () => {
    const st = createFrameQueueState(4096);
    const prod = new FrameQueue(st);
    const cons = new FrameQueue(st);
    const rng = new Rng(7);
    let sent = 0;
    let got = 0;
    let refused = 0;
    // Bounded, so a queue that stops accepting fails the test instead of hanging it.
    for (let round = 0; round < 100_000 && got < 20_000; round++) {
      for (let k = rng.int(0, 5); k > 0; k--) {
        const len = rng.int(1, 700);
        if (prod.push(frame(sent, len), sent)) sent++;
        else refused++;
      }
      for (let k = rng.int(0, 5); k > 0; k--) {
        const r = pop(cons);
        if (r === null) break;
        expect(r.meta).toBe(got);
        expect(r.bytes).toEqual(frame(got, r.bytes.length));
        got++;
      }
    }
    expect(got).toBeGreaterThanOrEqual(20_000);
    expect(refused).toBeGreaterThan(0); // it did fill up
    // Drain the rest: nothing lost, nothing extra.
    for (let r = pop(cons); r !== null; r = pop(cons)) expect(r.meta).toBe(got++);
    expect(got).toBe(sent);
  });

  test("full: reserve says -1 and hasRoom agrees; a release makes room again", () => {
    const st = createFrameQueueState(4096);
    const q = new FrameQueue(st);
    let n = 0;
    while (q.hasRoom(1000)) {
      expect(q.push(frame(n, 1000), n)).toBe(true);
      n++;
    }
    expect(n).toBe(4); // 4 × (8 + 1000) bytes fit in 4096, a fifth does not
    expect(q.reserve(1000)).toBe(-1);
    expect(pop(q)?.meta).toBe(0);
    expect(q.hasRoom(1000)).toBe(true);
    expect(q.push(frame(n, 1000), n)).toBe(true);
  });

  test("a second consumer object on the same queue (a restarted reader) goes on exactly where the first stopped", () => {
    const st = createFrameQueueState(4096);
    const prod = new FrameQueue(st);
    const late = new FrameQueue(st); // made before anything was queued: its view is empty
    const first = new FrameQueue(st);
    for (let i = 0; i < 3; i++) prod.push(frame(i, 100), i);
    expect(pop(first)?.meta).toBe(0);
    expect(pop(first)?.meta).toBe(1);
    // `late` last saw an empty queue at index 0; the queue moved on without it.
    expect(pop(late)?.meta).toBe(2);
    expect(pop(late)).toBeNull();
    prod.push(frame(3, 100), 3);
    // `first` saw up to record 2, which `late` took: it must not deliver it again.
    expect(pop(first)?.meta).toBe(3);
    expect(pop(first)).toBeNull();
  });

  test("a second producer object (a reconnected writer) sees the room the consumer freed", () => {
    const st = createFrameQueueState(4096);
    const a = new FrameQueue(st);
    const cons = new FrameQueue(st);
    for (let i = 0; i < 4; i++) expect(a.push(frame(i, 1000), i)).toBe(true);
    const b = new FrameQueue(st); // saw a full queue when made
    expect(b.push(frame(4, 1000), 4)).toBe(false);
    for (let i = 0; i < 4; i++) expect(pop(cons)?.meta).toBe(i);
    for (let i = 4; i < 8; i++) expect(b.push(frame(i, 1000), i)).toBe(true);
    for (let i = 4; i < 8; i++) expect(pop(cons)?.bytes).toEqual(frame(i, 1000));
  });
});
