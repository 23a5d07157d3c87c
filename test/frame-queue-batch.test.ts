/**
 * The frame queue's batch operations: a producer holding several reservations (reserveNext,
 * commitAt, dropAt as a hole, publish), a consumer looking past the head with a cursor (next,
 * take, releaseTaken), on one thread and across two.
 */
import { describe, expect, test } from "bun:test";
import { FrameQueue, createFrameQueueState } from "../src/workers/frame-queue.ts";
import { batchRules } from "./fixtures/queue-batch-rules.ts";
import { Rng } from "./helpers/prng.ts";
import { frame, pop } from "./helpers/queue-records.ts";



describe("frame queue batches", () => {
  test("a batch is invisible until published, then its committed records come out in order and its holes not at all", () => {
    const st = createFrameQueueState(1 << 16);
    const prod = new FrameQueue(st);
    const cons = new FrameQueue(st);
    const offs = [100, 200, 300, 400, 500].map((len) => [prod.reserveNext(len), len] as const);
    expect(offs.every(([o]) => o >= 0)).toBe(true);
    offs.forEach(([o, len], i) => {
      if (i === 1 || i === 3) prod.dropAt(o, len);
      else {
        prod.data.set(frame(i, len), o);
        prod.commitAt(o, len, i);
      }
    });
    expect(cons.peek()).toBe(-1);
    expect(cons.usedBytes()).toBe(0);
    // Room is counted for the pending ones: a record as large as the rest of the queue does not fit.
    expect(prod.hasRoom((1 << 16) - 1000)).toBe(false);
    prod.publish();
    expect(cons.usedBytes()).toBe(5 * 8 + 104 + 200 + 304 + 400 + 504);
    const got = [pop(cons), pop(cons), pop(cons), pop(cons)];
    expect(got.map((r) => r?.meta ?? null)).toEqual([0, 2, 4, null]);
    expect(got.slice(0, 3).map((r) => r!.bytes)).toEqual([frame(0, 100), frame(2, 300), frame(4, 500)]);
    expect(cons.usedBytes()).toBe(0); // the holes' room went back with the records around them
  });

  test("reserve (one at a time) gives up a batch never published: nothing of it reaches the consumer", () => {
    const st = createFrameQueueState(1 << 16);
    const prod = new FrameQueue(st);
    const cons = new FrameQueue(st);
    const a = prod.reserveNext(100);
    prod.commitAt(a, 100, 1);
    expect(prod.reserveNext(100)).toBeGreaterThan(a);
    const b = prod.reserve(50); // starts again from what is published
    expect(b).toBe(a);
    prod.data.set(frame(2, 50), b);
    prod.commit(b, 50, 2);
    expect(pop(cons)).toEqual({ bytes: frame(2, 50), meta: 2 });
    expect(pop(cons)).toBeNull();
  });

  test("a consumer cursor looks past the head; releaseTaken gives the room back in one store, and a rewind reads again what was not given back", () => {
    const st = createFrameQueueState(1 << 16);
    const prod = new FrameQueue(st);
    const cons = new FrameQueue(st);
    for (let i = 0; i < 6; i++) expect(prod.push(frame(i, 100 + i), i)).toBe(true);
    const used = prod.usedBytes();
    const seen: number[] = [];
    for (let k = 0; k < 3; k++) {
      const off = cons.next();
      seen.push(cons.recordMeta(off));
      expect(Uint8Array.from(cons.data.subarray(off, off + cons.recordLength(off)))).toEqual(frame(k, 100 + k));
      cons.take(off);
    }
    expect(seen).toEqual([0, 1, 2]);
    // Taken, not released: the producer still counts them.
    expect(prod.usedBytes()).toBe(used);
    // next() without take shows the same record again.
    expect(cons.recordMeta(cons.next())).toBe(3);
    expect(cons.recordMeta(cons.next())).toBe(3);
    cons.releaseTaken();
    expect(prod.usedBytes()).toBe(used - (8 + 104) * 3);
    cons.take(cons.next());
    cons.rewind(); // a role that stopped mid-batch: record 3 is read again
    expect(cons.recordMeta(cons.next())).toBe(3);
    expect([pop(cons)?.meta, pop(cons)?.meta, pop(cons)?.meta, pop(cons)]).toEqual([3, 4, 5, null]);
  });

  test("random batches with holes, resets and wraps against a cursor consumer: FIFO, every byte, holes never seen, never stuck", () => {
    for (const [capacity, window] of [
      [1 << 18, 1 << 16],
      [1 << 18, 1 << 18],
      [1 << 17, 5000],
      [16384, 16384],
    ] as const) {
      const st = createFrameQueueState(capacity, window);
      const prod = new FrameQueue(st);
      const cons = new FrameQueue(st);
      const rng = new Rng(capacity ^ window ^ 0x5a5a);
      const big = Math.min(prod.maxRecord, 65557);
      const lens = new Map<number, number>();
      const expected: number[] = []; // seqs published and committed, in order
      let seq = 0;
      let got = 0;
      let holes = 0;
      let fronts = 0;
      let lastOffset = -1;
      const check = (off: number) => {
        const want = expected[got];
        expect(cons.recordMeta(off)).toBe(want!);
        const len = cons.recordLength(off);
        expect(len).toBe(lens.get(want!)!);
        for (let i = 0; i < len; i += 97) if (cons.data[off + i] !== ((want! + i) & 0xff)) throw new Error(`record ${want}: byte ${i} differs`);
        if (cons.data[off + len - 1] !== ((want! + len - 1) & 0xff)) throw new Error(`record ${want}: last byte differs`);
        got++;
      };
      for (let round = 0; round < 6000; round++) {
        const batch: number[] = [];
        for (let k = rng.int(0, 8); k > 0; k--) {
          const len = rng.int(0, 29) === 0 ? rng.int(1, big) : rng.int(1, 1600);
          const off = prod.reserveNext(len);
          if (off < 0) {
            expect(prod.hasRoom(len)).toBe(false);
            break;
          }
          if (off === 8 && lastOffset > 8) fronts++; // back at the front: a wrap or a reset
          lastOffset = off;
          if (rng.int(0, 6) === 0) {
            prod.dropAt(off, len);
            holes++;
            continue;
          }
          prod.data.fill(0, off, off + len);
          for (let i = 0; i < len; i += 97) prod.data[off + i] = (seq + i) & 0xff;
          prod.data[off + len - 1] = (seq + len - 1) & 0xff;
          prod.commitAt(off, len, seq);
          lens.set(seq, len);
          batch.push(seq++);
        }
        if (rng.int(0, 24) === 0) {
          // Never published (a batch given up): its records do not count.
          prod.abandon();
        } else {
          prod.publish();
          expected.push(...batch);
        }
        // The consumer: a cursor batch, or one at a time.
        if (rng.bool(0.5)) {
          // While the cursor holds records, nothing is given back (markers stepped over included).
          let held = -1;
          for (let k = rng.int(0, 70); k > 0; k--) {
            const off = cons.next();
            if (held >= 0 && cons.usedBytes() !== held) throw new Error(`room given back while ${k} records were held`);
            if (off < 0) break;
            check(off);
            cons.take(off);
            if (held < 0) held = cons.usedBytes();
          }
          cons.releaseTaken();
        } else {
          for (let k = rng.int(0, 4); k > 0; k--) {
            const off = cons.peek();
            if (off < 0) break;
            check(off);
            cons.release(off);
          }
        }
      }
      for (let off = cons.next(); off >= 0; off = cons.next()) {
        check(off);
        cons.take(off);
      }
      cons.releaseTaken();
      expect(got).toBe(expected.length);
      expect(prod.usedBytes()).toBe(0);
      expect(prod.hasRoom(big)).toBe(true);
      expect(got).toBeGreaterThan(5000);
      expect(holes).toBeGreaterThan(500);
      expect(fronts).toBeGreaterThan(10);
    }
  });

  test("across two threads: a producer worker publishing batches with holes, a consumer cursor here; every record in order and byte-exact", async () => {
    const RECORDS = 200_000;
    const SEED = 77;
    const st = createFrameQueueState(1 << 17, 1 << 15);
    const q = new FrameQueue(st);
    const rules = batchRules(SEED);
    const w = new Worker(new URL("./fixtures/queue-batch-producer.ts", import.meta.url).href);
    const done = new Promise<{ done: number; batches: number }>((resolve, reject) => {
      w.onmessage = (e) => resolve(e.data);
      w.onerror = (e) => reject(new Error(e.message));
    });
    w.postMessage({ state: st, records: RECORDS, seed: SEED });
    let expectSeq = 0;
    let got = 0;
    let finished: { done: number; batches: number } | null = null;
    void done.then((d) => (finished = d));
    const deadline = Date.now() + 60_000;
    for (;;) {
      let n = 0;
      for (let off = q.next(); off >= 0 && n < 64; off = q.next()) {
        while (rules.dropped(expectSeq)) expectSeq++;
        const seq = q.recordMeta(off);
        if (seq !== expectSeq) throw new Error(`record ${seq} where ${expectSeq} was due`);
        const len = q.recordLength(off);
        if (len !== rules.length(seq)) throw new Error(`record ${seq}: ${len} bytes, want ${rules.length(seq)}`);
        if (Buffer.compare(q.data.subarray(off, off + len), rules.bytesOf(seq, len)) !== 0) throw new Error(`record ${seq}: bytes differ`);
        q.take(off);
        expectSeq++;
        got++;
        n++;
      }
      q.releaseTaken();
      if (n > 0) q.wake(FrameQueue.CONS); // the producer may wait for room
      if (n === 0) {
        if (finished !== null && q.isEmpty()) break;
        if (Date.now() > deadline) throw new Error(`stuck after ${got} records`);
        await Bun.sleep(0);
      }
    }
    while (expectSeq < RECORDS && rules.dropped(expectSeq)) expectSeq++;
    expect(finished!.done).toBe(RECORDS);
    expect(expectSeq).toBe(RECORDS);
    expect(got).toBe(Array.from({ length: RECORDS }, (_, s) => s).filter((s) => !rules.dropped(s)).length);
    w.terminate();
  }, 90_000);
});
