/**
 * The batch interfaces: tryWriteMany (many frames per call, one hand-over per queue) and
 * listenBatch (many frames per call, read in place). Bytes in equal bytes out, in order, beside
 * per-frame listeners; every frame checked before any is queued; a batch is unusable once its
 * call returned; a throwing batch listener is counted and receiving goes on; multi-queue keeps
 * each flow in order.
 */
import { describe, expect, test } from "bun:test";
import { NetError, type ByteSink, type FrameBatch, type NetErrorCode } from "../src/main/index.ts";
import { decodePcapFile } from "../src/main/pcap.ts";
import { until } from "./helpers/until.ts";
import { simVif, withSimPair } from "./helpers/vif.ts";

/** Frame `seq` of `len` bytes: broadcast, sequence number at 14, a pattern after. */
function frame(seq: number, len = 60 + (seq % 1400)): Uint8Array {
  const f = new Uint8Array(len);
  f.fill(0xff, 0, 6);
  new DataView(f.buffer).setUint32(14, seq);
  for (let i = 18; i < len; i++) f[i] = (seq + i) & 0xff;
  return f;
}

/** Send every frame with tryWriteMany, `per` at a time, waiting for room when it must. */
async function sendAll(dev: { tryWriteMany(f: readonly Uint8Array[]): number; writable(len?: number): Promise<void> }, frames: Uint8Array[], per: number): Promise<number> {
  let calls = 0;
  for (let i = 0; i < frames.length; ) {
    const n = dev.tryWriteMany(frames.slice(i, i + per));
    calls++;
    i += n;
    if (i < frames.length && n < per) await dev.writable();
  }
  return calls;
}

describe("batch API", () => {
  test("tryWriteMany → listenBatch both ways: 5,000 frames of 60..1459 bytes each, byte-exact and in order; batch sizes within 1..64; listen() beside it sees the same frames", async () => {
    await withSimPair(async ({ front, back }) => {
      for (const [from, to] of [[front, back], [back, front]] as const) {
        const sent = Array.from({ length: 5000 }, (_, i) => frame(i));
        const got: Uint8Array[] = [];
        const viaListen: number[] = [];
        const sizes: number[] = [];
        const stop = to.listenBatch((b) => {
          sizes.push(b.length);
          for (let i = 0; i < b.length; i++) {
            // In place and as a view: the same bytes.
            const inPlace = b.bytes.slice(b.offset(i), b.offset(i) + b.size(i));
            expect(b.frame(i)).toEqual(inPlace);
            expect(b.info(i)).toEqual({ csumBlank: false, dataValidated: false, gso: null });
            got.push(inPlace);
          }
        });
        const stopListen = to.listen((f) => viaListen.push(new DataView(f.buffer, f.byteOffset).getUint32(14)));
        await sendAll(from, sent, 100);
        await until(() => got.length >= sent.length, 10_000);
        stop();
        stopListen();
        expect(got.length).toBe(sent.length);
        for (let i = 0; i < sent.length; i++) expect(got[i]).toEqual(sent[i]!);
        expect(viaListen).toEqual(sent.map((_, i) => i));
        expect(Math.min(...sizes)).toBeGreaterThanOrEqual(1);
        expect(Math.max(...sizes)).toBeLessThanOrEqual(64);
        expect(from.stats().txPackets).toBeGreaterThanOrEqual(sent.length);
      }
      expect(front.stats().txDrops + back.stats().txDrops + front.stats().rxDrops + back.stats().rxDrops).toBe(0);
    });
  });

  test("tryWriteMany returns how many it queued: a full queue takes the first n, the rest go after writable(); nothing is lost or reordered", async () => {
    await withSimPair(async ({ front, back }) => {
      const seqs: number[] = [];
      back.listen((f) => seqs.push(new DataView(f.buffer, f.byteOffset).getUint32(14)));
      const frames = Array.from({ length: 3000 }, (_, i) => frame(i, 1514));
      // 3000 × 1514 bytes is far beyond one queue window: the first call takes only part.
      const n = front.tryWriteMany(frames);
      expect(n).toBeGreaterThan(0);
      expect(n).toBeLessThan(frames.length);
      const calls = await sendAll(front, frames.slice(n), 3000);
      expect(calls).toBeGreaterThan(1);
      await until(() => seqs.length >= 3000, 10_000);
      expect(seqs).toEqual(frames.map((_, i) => i));
    });
  });

  test("every frame is checked before any is queued: a bad one throws naming its index, and nothing of the call is sent", async () => {
    await withSimPair(async ({ front, back }) => {
      let got = 0;
      back.listen(() => got++);
      const ok = frame(1, 100);
      const bad: [unknown[], NetErrorCode, string][] = [
        [[ok, new Uint8Array(10)], "FRAME_TOO_SHORT", "frames[1]"],
        [[ok, ok, new Uint8Array(70000)], "FRAME_TOO_LONG", "frames[2]"],
        [[ok, "not a frame"], "BAD_ARGUMENT", "frames[1] is not a Uint8Array"],
      ];
      for (const [frames, code, text] of bad) {
        let err: unknown;
        try {
          front.tryWriteMany(frames as Uint8Array[]);
        } catch (e) {
          err = e;
        }
        expect(err).toBeInstanceOf(NetError);
        expect((err as NetError).code).toBe(code);
        expect((err as NetError).message).toContain(text);
      }
      expect(() => front.tryWriteMany("x" as unknown as Uint8Array[])).toThrow("tryWriteMany takes an array of Uint8Array");
      expect(() => front.tryWriteMany([ok], { gso: { type: 1, size: 1448 } })).toThrow("gso is per frame");
      expect(front.tryWriteMany([])).toBe(0);
      // What the refused calls held never went out; a good call afterwards does.
      expect(front.tryWriteMany([ok, ok])).toBe(2);
      await until(() => got >= 2, 5000);
      await Bun.sleep(50);
      expect(got).toBe(2);
    });
  });

  test("a batch is valid only during its call: kept, it reads as empty and refuses every index", async () => {
    await withSimPair(async ({ front, back }) => {
      let kept: FrameBatch | null = null;
      let during = -1;
      back.listenBatch((b) => {
        during = b.length;
        expect(() => b.frame(b.length)).toThrow(`holds ${b.length} frames`);
        expect(() => b.offset(-1)).toThrow(NetError);
        expect(() => b.size(0.5)).toThrow(NetError);
        kept = b;
      });
      expect(front.tryWriteMany([frame(1), frame(2)])).toBe(2);
      await until(() => kept !== null, 5000);
      expect(during).toBeGreaterThan(0);
      const b = kept as unknown as FrameBatch;
      expect(b.length).toBe(0);
      expect(() => b.frame(0)).toThrow("valid only during the listener's call");
      expect(() => b.info(0)).toThrow(NetError);
    });
  });

  test("a batch listener that throws is counted (listenerErrors); receiving goes on for it and for others", async () => {
    await withSimPair(async ({ front, back }) => {
      let seen = 0;
      let other = 0;
      back.listenBatch((b) => {
        seen += b.length;
        throw new Error("listener bug");
      });
      back.listenBatch((b) => void (other += b.length));
      for (let i = 0; i < 10; i++) {
        expect(front.tryWriteMany([frame(i)])).toBe(1);
        await until(() => other > i, 5000);
      }
      expect([seen, other]).toEqual([10, 10]);
      expect(back.stats().listenerErrors).toBe(10);
      expect(back.stats().rxDrops).toBe(0);
    });
  });

  test("removing the last batch listener pauses receiving: frames wait in the queue (not dropped) until someone listens again", async () => {
    await withSimPair(async ({ front, back }) => {
      let got = 0;
      const stop = back.listenBatch((b) => void (got += b.length));
      expect(front.tryWriteMany([frame(0)])).toBe(1);
      await until(() => got === 1, 5000);
      stop();
      expect(front.tryWriteMany([frame(1), frame(2), frame(3)])).toBe(3);
      await Bun.sleep(100);
      expect(got).toBe(1);
      const seqs: number[] = [];
      back.listenBatch((b) => {
        for (let i = 0; i < b.length; i++) seqs.push(new DataView(b.bytes.buffer, b.bytes.byteOffset + b.offset(i)).getUint32(14));
      });
      await until(() => seqs.length === 3, 5000);
      expect(seqs).toEqual([1, 2, 3]);
      expect(back.stats().rxDrops).toBe(0);
    });
  });

  test("four queues: tryWriteMany spreads 64 flows over every queue, each flow in order, 256 frames a call", async () => {
    await withSimPair(async ({ front, back }) => {
      const udp = (flow: number, seq: number) => {
        const f = new Uint8Array(120);
        const dv = new DataView(f.buffer);
        f.fill(0xff, 0, 6);
        dv.setUint16(12, 0x0800);
        f[14] = 0x45;
        f[23] = 17;
        dv.setUint32(26, 0x0a000001);
        dv.setUint32(30, 0x0a000002);
        dv.setUint16(34, 5000 + flow);
        dv.setUint16(36, 53);
        dv.setUint32(42, seq);
        return f;
      };
      const frames: Uint8Array[] = [];
      for (let s = 0; s < 40; s++) for (let fl = 0; fl < 64; fl++) frames.push(udp(fl, s));
      const seen = new Map<number, number[]>();
      back.listenBatch((b) => {
        for (let i = 0; i < b.length; i++) {
          const dv = new DataView(b.bytes.buffer, b.bytes.byteOffset + b.offset(i), b.size(i));
          const fl = dv.getUint16(34) - 5000;
          seen.set(fl, [...(seen.get(fl) ?? []), dv.getUint32(42)]);
        }
      });
      await sendAll(front, frames, 256);
      await until(() => [...seen.values()].reduce((n, l) => n + l.length, 0) >= frames.length, 10_000);
      expect(seen.size).toBe(64);
      for (const l of seen.values()) expect(l).toEqual(Array.from({ length: 40 }, (_, i) => i));
      const qs = back.queueStats();
      expect(qs.length).toBe(4);
      for (const q of qs) expect(q.rxPackets).toBeGreaterThan(0);
    }, { queues: 4 }, { maxQueues: 4 });
  });

  test("under a capture: frames sent with tryWriteMany and received only by a batch listener are each captured, in order", async () => {
    await withSimPair(async ({ front, back }) => {
      const chunks: Uint8Array[] = [];
      const sink: ByteSink = { write: (b) => void chunks.push(b.slice()) };
      const txCap = await front.capture(sink, { direction: "tx" });
      const rxChunks: Uint8Array[] = [];
      const rxCap = await back.capture({ write: (b) => void rxChunks.push(b.slice()) }, { direction: "rx" });
      let got = 0;
      back.listenBatch((b) => void (got += b.length));
      const sent = Array.from({ length: 50 }, (_, i) => frame(i));
      await sendAll(front, sent, 8);
      await until(() => got === 50, 5000);
      expect((await txCap.stop()).frames).toBe(50);
      expect((await rxCap.stop()).frames).toBe(50);
      for (const bytes of [Buffer.concat(chunks), Buffer.concat(rxChunks)]) {
        expect(decodePcapFile(bytes).records.map((r) => Buffer.from(r.data).toString("hex"))).toEqual(sent.map((f) => Buffer.from(f).toString("hex")));
      }
    });
  });

  test("after the device closed, tryWriteMany throws why it closed", async () => {
    const vif = await simVif();
    const { front, back } = await vif.pair();
    await front.disconnect();
    expect(() => front.tryWriteMany([frame(1)])).toThrow(NetError);
    await back.disconnect();
    vif.frontPlatform.close();
    vif.backPlatform.close();
    vif.dom0.close();
  });
});
