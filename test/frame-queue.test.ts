import { describe, expect, test } from "bun:test";
import { FrameQueue, createFrameQueueState } from "../src/workers/frame-queue.ts";
import { Rng } from "./helpers/prng.ts";
import { frame, pop } from "./helpers/queue-records.ts";



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

  test("a window bounds what is queued; one record larger than the window still fits an empty queue", () => {
    const st = createFrameQueueState(1 << 18, 16384);
    const q = new FrameQueue(st);
    let n = 0;
    while (q.push(frame(n, 1000), n)) n++;
    expect(n).toBe(16); // 16 × 1008 bytes within the 16 KiB window, a 17th is refused
    expect(q.hasRoom(1000)).toBe(false);
    for (let r = pop(q); r !== null; r = pop(q));
    expect(q.push(frame(0, 65557), 0)).toBe(true); // alone, past the window
    expect(q.push(frame(1, 100), 1)).toBe(false);
    expect(pop(q)?.bytes.length).toBe(65557);
  });

  test("a queue whose consumer keeps up starts again at the front: 100,000 records touch only its first pages", () => {
    const st = createFrameQueueState(1 << 18, 1 << 16);
    const prod = new FrameQueue(st);
    const cons = new FrameQueue(st);
    let high = 0;
    for (let i = 0; i < 100_000; i++) {
      const len = 60 + (i % 1455);
      const off = prod.reserve(len);
      expect(off).toBeGreaterThanOrEqual(0);
      prod.data.fill(i & 0xff, off, off + len);
      prod.commit(off, len, i);
      high = Math.max(high, off + len);
      if (i % 7 === 6) for (let r = pop(cons); r !== null; r = pop(cons));
    }
    // Resets happen past the first page; 7 records of at most 1528 bytes come after: within
    // 16 KiB of 256.
    expect(high).toBeLessThan(16 * 1024);
  });

  test("after a reset the window is the whole bound: a producer that fills it before the consumer has read anything queues as much as in a new queue", () => {
    for (const len of [60, 1000, 1514, 9000]) {
      const fresh = new FrameQueue(createFrameQueueState(1 << 18, 1 << 16));
      let inFresh = 0;
      while (fresh.push(frame(inFresh, len), inFresh)) inFresh++;
      const st = createFrameQueueState(1 << 18, 1 << 16);
      const prod = new FrameQueue(st);
      const cons = new FrameQueue(st);
      // Past the first page, then drained: the next record starts again at the front.
      let n = 0;
      while (prod.usedBytes() < 20_000) expect(prod.push(frame(n, len), n++)).toBe(true);
      for (let r = pop(cons); r !== null; r = pop(cons));
      let after = 0;
      while (prod.push(frame(n + after, len), n + after)) {
        if (after === 0) expect(prod.recordLength(8)).toBe(len); // at the front
        after++;
      }
      expect(after).toBe(inFresh);
      expect(prod.usedBytes()).toBeLessThanOrEqual(1 << 16);
      expect(prod.hasRoom(len)).toBe(false);
      // Every record comes out, in order, byte-exact; then the queue is empty and whole again.
      for (let i = 0; i < after; i++) expect(pop(cons)).toEqual({ bytes: frame(n + i, len), meta: n + i });
      expect(pop(cons)).toBeNull();
      expect(prod.usedBytes()).toBe(0);
      expect(prod.hasRoom(65000)).toBe(true);
    }
  });

  test("across two threads, a consumer passing resets as they come: a producer far inside its window is never refused room", async () => {
    const st = createFrameQueueState(1 << 18, 1 << 16);
    const q = new FrameQueue(st);
    const counts = new Int32Array(new SharedArrayBuffer(8));
    const w = new Worker(new URL("./fixtures/queue-drainer.ts", import.meta.url).href);
    const stopped = new Promise((resolve) => (w.onmessage = resolve));
    w.postMessage({ state: st, counts });
    // At most 16 records of at most 208 bytes queued: 3.3 KiB of a 64 KiB window, so every
    // reserve must succeed, whatever the consumer is doing (a reset's jump is not queued bytes).
    const RECORDS = 300_000;
    let refused = 0;
    const deadline = Date.now() + 60_000;
    for (let i = 0; i < RECORDS; i++) {
      while (i - Atomics.load(counts, 0) >= 16) if (Date.now() > deadline) throw new Error(`stuck at ${i}`);
      const len = 60 + (i % 141);
      const off = q.reserve(len);
      if (off < 0) {
        refused++;
        i--;
        continue;
      }
      q.commit(off, len, i);
    }
    while (Atomics.load(counts, 0) < RECORDS) if (Date.now() > deadline) throw new Error("not drained");
    Atomics.store(counts, 1, 1);
    await stopped;
    w.terminate();
    expect(refused).toBe(0);
    expect(q.usedBytes()).toBe(0);
  }, 90_000);

  test("random sizes, windows and consumer speeds, with resets and uncommitted reservations: FIFO, every length and byte, never stuck", () => {
    for (const [capacity, window] of [
      [1 << 18, 1 << 16],
      [1 << 18, 1 << 18],
      [1 << 17, 5000],
      [16384, 16384],
    ] as const) {
      const st = createFrameQueueState(capacity, window);
      const prod = new FrameQueue(st);
      const cons = new FrameQueue(st);
      const rng = new Rng(capacity + window);
      const big = Math.min(prod.maxRecord, 65557);
      const lens: number[] = [];
      let sent = 0;
      let got = 0;
      const check = (r: { bytes: Uint8Array; meta: number }) => {
        expect(r.meta).toBe(got);
        expect(r.bytes.length).toBe(lens[got]!);
        const b = r.bytes;
        if (b.some((x) => x !== (got & 0xff))) throw new Error(`record ${got}: bytes differ`);
        got++;
      };
      for (let round = 0; round < 6000; round++) {
        for (let k = rng.int(0, 6); k > 0; k--) {
          const len = rng.int(0, 29) === 0 ? rng.int(1, big) : rng.int(1, 1600);
          const off = prod.reserve(len);
          if (off < 0) {
            expect(prod.hasRoom(len)).toBe(false);
            break;
          }
          // Now and then the fill fails and nothing is committed.
          if (rng.int(0, 19) === 0) continue;
          prod.data.fill(sent & 0xff, off, off + len);
          lens.push(len);
          prod.commit(off, len, sent++);
        }
        const take = rng.int(0, 3) === 0 ? Infinity : rng.int(0, 4);
        for (let k = 0; k < take; k++) {
          const r = pop(cons);
          if (r === null) break;
          check(r);
        }
      }
      for (let r = pop(cons); r !== null; r = pop(cons)) check(r);
      expect(got).toBe(sent);
      // Drained: the largest record fits again.
      expect(prod.hasRoom(big)).toBe(true);
      expect(sent).toBeGreaterThan(5000);
    }
  });
});

