/** The pcap encoder (bytes exact) and capture on a device: both directions, counts, stop, slow and broken sinks. */
import { describe, expect, test } from "bun:test";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Writable } from "node:stream";
import { NetError, type ByteSink } from "../src/main/index.ts";
import { decodePcapFile, encodePcapFileHeader, encodePcapRecord, writePcapRecordHeader } from "../src/main/pcap.ts";
import { simVif, withSimPair } from "./helpers/vif.ts";
import { until } from "./helpers/until.ts";


/** A frame of `len` bytes that says which it is: tag in byte 14, sequence in 15..16, a pattern after. */
function frame(len: number, tag: number, seq: number): Uint8Array {
  const f = new Uint8Array(len);
  f.fill(0xff, 0, 6);
  f.set([0x00, 0x16, 0x3e, 0, 0, tag], 6);
  f[12] = 0x88;
  f[13] = 0xb5; // local experimental ethertype
  f[14] = tag;
  f[15] = seq & 0xff;
  f[16] = seq >> 8;
  for (let i = 17; i < len; i++) f[i] = (i * 31 + seq) & 0xff;
  return f;
}

const hex = (b: Uint8Array) => Buffer.from(b).toString("hex");

/** A sink that keeps every chunk in memory. */
function memorySink(): ByteSink & { bytes(): Uint8Array } {
  const chunks: Uint8Array[] = [];
  return {
    write(b: Uint8Array) {
      chunks.push(b.slice());
    },
    bytes: () => Buffer.concat(chunks),
  };
}

describe("pcap encoder", () => {
  test("file header: magic a1b2c3d4 little-endian, v2.4, zone 0, sigfigs 0, snaplen, LINKTYPE_ETHERNET", () => {
    expect([...encodePcapFileHeader()]).toEqual([0xd4, 0xc3, 0xb2, 0xa1, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0, 0, 1, 0, 0, 0]);
    expect([...encodePcapFileHeader(1514).subarray(16, 20)]).toEqual([0xea, 0x05, 0, 0]);
    expect(() => encodePcapFileHeader(0)).toThrow(/snaplen/);
    expect(() => encodePcapFileHeader(262145)).toThrow(/snaplen/);
  });

  test("record header: seconds, microseconds, included and original length", () => {
    const b = new Uint8Array(16);
    writePcapRecordHeader(new DataView(b.buffer), 0, 1_700_000_000_123_456, 60, 60);
    // 1700000000 = 0x6553f100, 123456 = 0x0001e240, 60 = 0x3c
    expect([...b]).toEqual([0x00, 0xf1, 0x53, 0x65, 0x40, 0xe2, 0x01, 0x00, 0x3c, 0, 0, 0, 0x3c, 0, 0, 0]);
  });

  test("a record longer than snaplen keeps its first snaplen bytes and its original length", () => {
    const f = frame(100, 1, 7);
    const r = encodePcapRecord(f, 2_000_000, 60);
    expect(r.byteLength).toBe(16 + 60);
    const file = decodePcapFile(Buffer.concat([encodePcapFileHeader(60), r]));
    expect(file.header).toMatchObject({ versionMajor: 2, versionMinor: 4, snaplen: 60, linktype: 1 });
    expect(file.records).toHaveLength(1);
    expect(file.records[0]).toMatchObject({ tsSec: 2, tsUsec: 0, inclLen: 60, origLen: 100 });
    expect([...file.records[0]!.data]).toEqual([...f.subarray(0, 60)]);
  });
});

describe("capture on a device", () => {
  test("both directions, every write form, in order and byte for byte; stop ends it and frees the data path", async () => {
    await withSimPair(async ({ front, back }) => {
      const got: Uint8Array[] = [];
      front.listen((f) => got.push(f.slice()));
      let backGot = 0;
      back.listen(() => backGot++);
      const sink = memorySink();
      const cap = await front.capture(sink);
      expect(cap.running).toBe(true);

      const sent: Uint8Array[] = [];
      for (let i = 0; i < 40; i++) {
        const f = frame(60 + i * 37, 1, i);
        sent.push(f);
        switch (i % 4) {
          case 0:
            await front.write(f);
            break;
          case 1:
            while (!front.tryWrite(f)) await front.writable(f.length);
            break;
          case 2:
            await front.writev([f.subarray(0, 20), f.subarray(20)]);
            break;
          default:
            await front.writeWith(f.length, (v) => v.set(f));
        }
      }
      const received: Uint8Array[] = [];
      for (let i = 0; i < 25; i++) {
        const f = frame(1514 - i, 2, i);
        received.push(f);
        await back.write(f);
      }
      await until(() => got.length === 25 && backGot === 40);

      const s = await cap.stop();
      expect(cap.running).toBe(false);
      expect(s).toMatchObject({ frames: 65, tx: 40, rx: 25, dropped: 0, truncated: 0 });
      expect(s.bytes).toBe([...sent, ...received].reduce((n, f) => n + f.length, 0));
      const bytes = sink.bytes();
      expect(s.written).toBe(bytes.byteLength);
      const { records } = decodePcapFile(bytes);
      const tx = records.filter((r) => r.data[14] === 1).map((r) => r.data);
      const rx = records.filter((r) => r.data[14] === 2).map((r) => r.data);
      expect(tx.map((d) => Buffer.from(d).toString("hex"))).toEqual(sent.map((d) => Buffer.from(d).toString("hex")));
      expect(rx.map((d) => Buffer.from(d).toString("hex"))).toEqual(received.map((d) => Buffer.from(d).toString("hex")));
      for (const r of records) expect(r.inclLen).toBe(r.origLen);
      // Timestamps are now-ish and never go backwards.
      const ts = records.map((r) => r.tsSec * 1e6 + r.tsUsec);
      for (let i = 1; i < ts.length; i++) expect(ts[i]!).toBeGreaterThanOrEqual(ts[i - 1]!);
      expect(Math.abs(ts[0]! / 1000 - Date.now())).toBeLessThan(60_000);

      // Stopped: the tap is gone, later frames are not captured, and stop() again answers the same.
      expect((front as unknown as { tap: unknown }).tap).toBeNull();
      await front.write(frame(60, 1, 99));
      expect(await cap.stop()).toEqual(s);
      expect(sink.bytes().byteLength).toBe(bytes.byteLength);
    });
  });

  test("two queues: frames filled in scratch (writeWith) or gathered (writev) are captured as queued", async () => {
    await withSimPair(async ({ front, back }) => {
      expect(front.queues).toBe(2);
      let arrived = 0;
      back.listen(() => arrived++);
      const sink = memorySink();
      const cap = await front.capture(sink, { direction: "tx" });
      const sent: string[] = [];
      for (let i = 0; i < 20; i++) {
        const f = frame(100 + i, 1, i);
        f[11] = i; // a different source MAC, a different flow: both queues carry frames
        sent.push(hex(f));
        if (i % 2 === 0) await front.writeWith(f.length, (v) => v.set(f));
        else await front.writev([f.subarray(0, 10), f.subarray(10)]);
      }
      await until(() => arrived === 20);
      expect(front.queueStats().every((q) => q.txPackets > 0)).toBe(true);
      await cap.stop();
      expect(decodePcapFile(sink.bytes()).records.map((r) => hex(r.data))).toEqual(sent);
    }, { queues: 2 });
  });

  test("direction, count and signal: only what was asked, and it ends by itself", async () => {
    await withSimPair(async ({ front, back }) => {
      front.listen(() => {});
      back.listen(() => {});
      const onlyRx = memorySink();
      const firstThree = memorySink();
      const rxCap = await back.capture(onlyRx, { direction: "rx" });
      const countCap = await back.capture(firstThree, { direction: "tx", count: 3 });
      const ac = new AbortController();
      const aborted = await back.capture(memorySink(), { signal: ac.signal });
      for (let i = 0; i < 5; i++) {
        await front.write(frame(64, 1, i));
        await back.write(frame(80, 2, i));
      }
      const c = await countCap.done;
      expect(countCap.running).toBe(false);
      expect(c).toMatchObject({ frames: 3, tx: 3, rx: 0 });
      expect(decodePcapFile(firstThree.bytes()).records.map((r) => r.data[15])).toEqual([0, 1, 2]);
      ac.abort();
      expect((await aborted.done).tx).toBe(5);
      expect(aborted.running).toBe(false);
      await until(() => rxCap.stats().rx === 5);
      const r = await rxCap.stop();
      expect(r).toMatchObject({ frames: 5, tx: 0, rx: 5 });
      expect(decodePcapFile(onlyRx.bytes()).records.every((x) => x.data[14] === 1 && x.origLen === 64)).toBe(true);
      expect((back as unknown as { tap: unknown }).tap).toBeNull();
    });
  });

  test("a slow sink: frames that do not fit the buffer are left out and counted; the device carries every one", async () => {
    await withSimPair(async ({ front, back }) => {
      let arrived = 0;
      back.listen(() => arrived++);
      const chunks: Uint8Array[] = [];
      const slow: ByteSink = {
        write: (b) => new Promise<void>((r) => setTimeout(() => (chunks.push(b.slice()), r()), 30)),
      };
      const cap = await front.capture(slow, { direction: "tx", snaplen: 128, bufferBytes: 2048 });
      const N = 300;
      for (let i = 0; i < N; i++) {
        const f = frame(1000, 1, i);
        while (!front.tryWrite(f)) await front.writable(f.length);
      }
      await until(() => arrived === N);
      const s = await cap.stop();
      expect(s.dropped).toBeGreaterThan(0);
      expect(s.frames + s.dropped).toBe(N);
      expect(s.truncated).toBe(s.frames);
      const { header, records } = decodePcapFile(Buffer.concat(chunks));
      expect(header.snaplen).toBe(128);
      expect(records).toHaveLength(s.frames);
      const seqs = records.map((r) => r.data[15]! | (r.data[16]! << 8));
      // What was captured is in order (the drops are gaps, never a reordering).
      for (let i = 1; i < seqs.length; i++) expect(seqs[i]!).toBeGreaterThan(seqs[i - 1]!);
      for (const r of records) expect(r).toMatchObject({ inclLen: 128, origLen: 1000 });
      expect(front.stats().txPackets).toBe(N);
    });
  });

  test("a capture ends by itself when its device closes, with the frames delivered before", async () => {
    const vif = await simVif();
    const { front, back } = await vif.pair();
    front.listen(() => {});
    const sink = memorySink();
    const cap = await front.capture(sink);
    for (let i = 0; i < 4; i++) await back.write(frame(70, 2, i));
    await back.disconnect();
    await front.disconnect();
    const s = await cap.done;
    expect(cap.running).toBe(false);
    expect(s.rx).toBe(4);
    expect(decodePcapFile(sink.bytes()).records).toHaveLength(4);
    expect((front as unknown as { tap: unknown }).tap).toBeNull();
    // A capture on a closed device is refused with why it closed.
    expect(await front.capture(memorySink()).then(() => "started", (e: unknown) => (e instanceof NetError ? e.code : String(e)))).toBe("DISCONNECTED");
    vif.frontPlatform.close();
    vif.backPlatform.close();
    vif.dom0.close();
  });

  test("a Node Writable as the sink: its back-pressure (write() false, then drain) is waited for", async () => {
    await withSimPair(async ({ front, back }) => {
      let arrived = 0;
      back.listen(() => arrived++);
      const chunks: Buffer[] = [];
      let falseReturns = 0;
      let maxBuffered = 0;
      const w = new Writable({
        highWaterMark: 1024,
        write(chunk: Buffer, _enc, cb) {
          chunks.push(Buffer.from(chunk));
          setTimeout(cb, 5);
        },
      });
      const write = w.write.bind(w);
      w.write = ((b: Uint8Array) => {
        const ok = write(b);
        maxBuffered = Math.max(maxBuffered, w.writableLength);
        if (!ok) falseReturns++;
        return ok;
      }) as typeof w.write;
      const cap = await front.capture(w, { direction: "tx" });
      const N = 1000;
      for (let i = 0; i < N; i++) {
        const f = frame(500, 1, i);
        while (!front.tryWrite(f)) await front.writable(f.length);
      }
      await until(() => arrived === N);
      const s = await cap.stop();
      expect(s).toMatchObject({ frames: N, dropped: 0 });
      expect(falseReturns).toBeGreaterThan(0);
      // Waiting for drain: beyond its high-water mark the stream holds at most the one write it refused (a chunk, at most 64 KiB).
      expect(maxBuffered).toBeLessThanOrEqual(1024 + (64 << 10));
      await new Promise<void>((r) => w.end(r));
      const { records } = decodePcapFile(Buffer.concat(chunks));
      expect(records.map((r) => r.data[15]! | (r.data[16]! << 8))).toEqual(Array.from({ length: N }, (_, i) => i));
    });
  });

  test("a sink that throws: the capture ends with its error, the device goes on", async () => {
    await withSimPair(async ({ front, back }) => {
      let arrived = 0;
      back.listen(() => arrived++);
      const cap = await front.capture({
        write() {
          throw new Error("disk full");
        },
      });
      await front.write(frame(60, 1, 0));
      expect(await cap.done.then(() => "resolved", (e: Error) => e.message)).toBe("disk full");
      expect(await cap.stop().then(() => "resolved", (e: Error) => e.message)).toBe("disk full");
      expect(cap.running).toBe(false);
      await front.write(frame(60, 1, 1));
      await until(() => arrived === 2);
    });
  });

  test("a file of many chunks (the capture reuses its buffers for a file): every record intact, in order", async () => {
    const dir = mkdtempSync(join(tmpdir(), "capture-"));
    try {
      await withSimPair(async ({ front, back }) => {
        let arrived = 0;
        back.listen(() => arrived++);
        const path = join(dir, "many.pcap");
        const cap = await front.capture(path, { direction: "tx", bufferBytes: 64 << 20 });
        const N = 3000;
        for (let i = 0; i < N; i++) {
          const f = frame(600 + (i % 900), 1, i);
          while (!front.tryWrite(f)) await front.writable(f.length);
          if (i % 500 === 0) await Bun.sleep(5); // let the file writes run between bursts
        }
        await until(() => arrived === N);
        const s = await cap.stop();
        expect(s).toMatchObject({ frames: N, dropped: 0 });
        const { records } = decodePcapFile(readFileSync(path));
        expect(records).toHaveLength(N);
        const bad = records.findIndex((r, i) => Buffer.compare(r.data, frame(600 + (i % 900), 1, i)) !== 0);
        expect(bad).toBe(-1);
      });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test("a file path: the file holds the pcap; bad options are BAD_ARGUMENT naming the option", async () => {
    const dir = mkdtempSync(join(tmpdir(), "capture-"));
    try {
      await withSimPair(async ({ front, back }) => {
        back.listen(() => {});
        const path = join(dir, "x.pcap");
        await using cap = await front.capture(path, { direction: "tx" });
        for (let i = 0; i < 3; i++) await front.write(frame(100, 1, i));
        await cap.stop();
        const { records } = decodePcapFile(readFileSync(path));
        expect(records.map((r) => Buffer.from(r.data).toString("hex"))).toEqual([0, 1, 2].map((i) => Buffer.from(frame(100, 1, i)).toString("hex")));

        const bad = async (p: Promise<unknown>) => p.then(() => "no error", (e: unknown) => (e instanceof NetError ? e.message : String(e)));
        const sink = memorySink();
        expect(await bad(front.capture(sink, { direction: "up" as "tx" }))).toContain("direction");
        expect(await bad(front.capture(sink, { count: 0 }))).toContain("count");
        expect(await bad(front.capture(sink, { snaplen: 0 }))).toContain("snaplen");
        expect(await bad(front.capture(sink, { bufferBytes: 10 }))).toContain("bufferBytes");
        expect(await bad(front.capture(sink, { signal: {} as AbortSignal }))).toContain("signal");
        expect(await bad(front.capture({} as ByteSink))).toContain("sink");
        expect(await bad(front.capture(""))).toContain("sink path");
        expect(await bad(front.capture(join(dir, "no", "such", "dir.pcap")))).toContain("ENOENT");
        expect((front as unknown as { tap: unknown }).tap).toBeNull();
      });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
