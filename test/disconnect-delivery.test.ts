/**
 * What disconnect guarantees about frames in flight (README "Disconnecting"): a write that
 * resolved is delivered if the peer stays up, or counted (txLost, part of txDrops) and
 * reported; frames that arrived and nobody read are counted (rxLost, part of rxDrops) and
 * reported; and `timeoutMs` bounds the whole disconnect, whatever the peer does.
 */
import { describe, expect, test } from "bun:test";
import { DEFAULT_DATA_PAGES } from "../src/main/options.ts";
import { captureLog } from "./helpers/log.ts";
import { scriptedBackend, scriptedFrontend } from "./helpers/scripted-peers.ts";
import { until } from "./helpers/until.ts";
import { simVif } from "./helpers/vif.ts";

type Vif = Awaited<ReturnType<typeof simVif>>;

function closeAll(vif: Vif): void {
  vif.frontPlatform.close();
  vif.backPlatform.close();
  vif.dom0.close();
}

describe("a write that resolved is delivered before disconnect returns", () => {
  test("front end: `await write; await disconnect`, 40 rounds of one frame and of a burst: every frame reaches the back end", async () => {
    let rounds = 0;
    for (let round = 0; round < 40; round++) {
      const vif = await simVif();
      const { back, front } = await vif.pair({ reconnect: round % 2 === 0 });
      let got = 0;
      back.listen(() => got++);
      const n = round < 20 ? 1 : 300;
      for (let i = 0; i < n - 1; i++) if (!front.tryWrite(new Uint8Array(1514))) await front.write(new Uint8Array(1514));
      await front.write(new Uint8Array(1514));
      await front.disconnect();
      await until(() => !back.connected);
      await back.disconnect();
      expect([round, got, front.stats().txLost]).toEqual([round, n, 0]);
      expect(vif.hv.leaks()).toEqual([]);
      closeAll(vif);
      rounds++;
    }
    expect(rounds).toBe(40);
  }, 60_000);

  for (const reconnect of [true, false]) {
    test(`back end: 2000 resolved writes, then disconnect: the front end (reconnect ${reconnect}) gets all 2000, in order`, async () => {
      for (let round = 0; round < 3; round++) {
        const vif = await simVif();
        const { back, front } = await vif.pair({ reconnect });
        const got: number[] = [];
        front.listen((f) => got.push(f[0]! | (f[1]! << 8)));
        const frame = new Uint8Array(1514);
        for (let i = 0; i < 2000; i++) {
          frame[0] = i & 0xff;
          frame[1] = i >> 8;
          if (!back.tryWrite(frame)) await back.write(frame);
        }
        await back.disconnect();
        await until(() => got.length === 2000, 5000);
        expect(got).toEqual(Array.from({ length: 2000 }, (_, i) => i));
        expect(back.stats()).toMatchObject({ txPackets: 2000, txLost: 0, txDrops: 0 });
        expect(front.stats()).toMatchObject({ rxPackets: 2000, rxLost: 0, rxDrops: 0 });
        await front.disconnect();
        expect(vif.hv.leaks()).toEqual([]);
        closeAll(vif);
      }
    }, 60_000);
  }

  test("the front end reads what its back end already put on the RX ring before it ends the session", async () => {
    const vif = await simVif();
    const { back, front } = await vif.pair({ reconnect: false });
    // The back end pushes its last responses and goes Closing at once: the front end takes
    // every one off the ring (rxPackets) before it stops. Nobody listens, so all are rxLost.
    for (let i = 0; i < 100; i++) await back.write(new Uint8Array(60).fill(i));
    await back.disconnect();
    await until(() => !front.connected);
    expect(front.stats()).toMatchObject({ rxPackets: 100, rxLost: 100, rxDrops: 100 });
    await front.disconnect();
    closeAll(vif);
  });
});

describe("disconnect waits for the peer to take what was written (against peers that read nothing once we close)", () => {
  test("front end: Closing only after the back end answered the last frame", async () => {
    const vif = await simVif();
    const be = await scriptedBackend(vif);
    const connecting = vif.connect({ timeoutMs: 3000 });
    await be.accept();
    const front = await connecting;
    await front.write(new Uint8Array(100));
    const ring = new DataView(be.txRing.buffer, be.txRing.byteOffset, 4096);
    await until(() => ring.getUint32(0, true) === 1); // req_prod: the request is on the ring
    const closing = front.disconnect();
    await Bun.sleep(100);
    expect(await vif.dom0.xenstore.read(`${vif.paths.frontPath}/state`)).toBe("4");
    // The back end answers slot 0 (id, OKAY) and pushes the response.
    ring.setUint16(64, ring.getUint16(64 + 8, true), true);
    ring.setInt16(64 + 2, 0, true);
    ring.setUint32(8, 1, true);
    be.notifyTx();
    await until(async () => (await vif.dom0.xenstore.read(`${vif.paths.frontPath}/state`)) === "5");
    be.release();
    await be.setState(6);
    await closing;
    expect(front.stats()).toMatchObject({ txPackets: 1, txLost: 0, txDrops: 0 });
    expect(vif.hv.leaks()).toEqual([]);
    closeAll(vif);
  });

  test("front end: responses its back end pushed just before Closing are read (no notification needed)", async () => {
    const vif = await simVif();
    const be = await scriptedBackend(vif);
    const connecting = vif.connect({ timeoutMs: 2000, reconnect: false });
    await be.accept();
    const front = await connecting;
    const got: number[] = [];
    front.listen((f) => got.push(f[0]!));
    const ring = new DataView(be.rxRing.buffer, be.rxRing.byteOffset, 4096);
    await until(() => ring.getUint32(0, true) === DEFAULT_DATA_PAGES); // all buffers posted
    // Fill five posted buffers and answer them in their own slots, push, and close at once:
    // no event, so only a front end that reads its ring as it stops sees them.
    for (let i = 0; i < 5; i++) {
      const id = ring.getUint16(64 + i * 8, true);
      const m = vif.dom0.gnttab.map(vif.guest, [ring.getUint32(64 + i * 8 + 4, true)], true);
      m.pages[0]!.fill(10 + i, 0, 60);
      vif.dom0.gnttab.unmap(m);
      ring.setUint16(64 + i * 8, id, true);
      ring.setUint16(64 + i * 8 + 2, 0, true); // offset
      ring.setUint16(64 + i * 8 + 4, 0, true); // flags
      ring.setInt16(64 + i * 8 + 6, 60, true); // status: 60 bytes
    }
    ring.setUint32(8, 5, true);
    await be.setState(5);
    await until(() => !front.connected);
    be.release();
    await be.setState(6);
    await front.disconnect();
    expect(got).toEqual([10, 11, 12, 13, 14]);
    expect(front.stats()).toMatchObject({ rxPackets: 5, rxLost: 0 });
    expect(vif.hv.leaks()).toEqual([]);
    closeAll(vif);
  });

  test("back end: requests its front end put on the TX ring just before Closing are read (no notification needed)", async () => {
    const vif = await simVif();
    const serving = vif.serve({ timeoutMs: 2000 });
    const fe = await scriptedFrontend(vif);
    const back = await serving;
    const got: number[] = [];
    back.listen((f) => got.push(f[0]!));
    const pages = vif.frontPlatform.gnttab.share(0, 4, false);
    const ring = new DataView(fe.txRing.buffer, fe.txRing.byteOffset, 4096);
    for (let i = 0; i < 4; i++) {
      pages.pages[i]!.fill(20 + i, 0, 80);
      const at = 64 + i * 12;
      ring.setUint32(at, pages.refs[i]!, true); // gref
      ring.setUint16(at + 4, 0, true); // offset
      ring.setUint16(at + 6, 0, true); // flags
      ring.setUint16(at + 8, i, true); // id
      ring.setUint16(at + 10, 80, true); // size
    }
    ring.setUint32(0, 4, true);
    await fe.setState(5);
    await until(() => !back.connected);
    await fe.setState(6);
    await back.disconnect();
    expect(got).toEqual([20, 21, 22, 23]);
    expect(ring.getUint32(8, true)).toBe(4); // every request answered
    fe.release();
    vif.frontPlatform.gnttab.unshare(pages);
    expect(vif.hv.leaks()).toEqual([]);
    closeAll(vif);
  });

  test("back end: Closing only after the last frames are on the front end's ring, once it posts buffers", async () => {
    const vif = await simVif();
    const serving = vif.serve({ timeoutMs: 3000 });
    const fe = await scriptedFrontend(vif);
    const back = await serving;
    for (let i = 0; i < 3; i++) await back.write(new Uint8Array(100).fill(i + 1));
    const closing = back.disconnect();
    await Bun.sleep(100);
    expect(await vif.dom0.xenstore.read(`${vif.paths.backPath}/state`)).toBe("4");
    // Post three writable buffers: rx requests {id, gref} in slots 0..2.
    const bufs = vif.frontPlatform.gnttab.share(0, 3, true);
    const ring = new DataView(fe.rxRing.buffer, fe.rxRing.byteOffset, 4096);
    for (let i = 0; i < 3; i++) {
      ring.setUint16(64 + i * 8, i, true);
      ring.setUint32(64 + i * 8 + 4, bufs.refs[i]!, true);
    }
    ring.setUint32(0, 3, true);
    fe.notifyRx();
    await until(async () => (await vif.dom0.xenstore.read(`${vif.paths.backPath}/state`)) === "5");
    expect(ring.getUint32(8, true)).toBe(3); // rsp_prod: all three answered before Closing
    expect([0, 1, 2].map((i) => [ring.getInt16(64 + i * 8 + 6, true), bufs.pages[i]![0]])).toEqual([
      [100, 1],
      [100, 2],
      [100, 3],
    ]);
    await fe.setState(6);
    await closing;
    expect(back.stats()).toMatchObject({ txPackets: 3, txLost: 0 });
    fe.release();
    vif.frontPlatform.gnttab.unshare(bufs);
    expect(vif.hv.leaks()).toEqual([]);
    closeAll(vif);
  });
});

describe("what cannot be delivered is counted and reported", () => {
  test("front end: frames in flight to a back end that never answers are txLost, logged once with their number", async () => {
    const vif = await simVif();
    const be = await scriptedBackend(vif);
    const { logger, lines } = captureLog();
    const connecting = vif.connect({ logger, timeoutMs: 600 });
    await be.accept();
    const front = await connecting;
    for (let i = 0; i < 5; i++) await front.write(new Uint8Array(100));
    await front.disconnect();
    expect(front.stats()).toMatchObject({ txPackets: 5, txLost: 5, txDrops: 5 });
    const warned = lines.filter((l) => l.level === 40 && /not delivered/.test(l.msg));
    expect(warned.length).toBe(1);
    expect(warned[0]!.frames).toBe(5);
    be.release();
    expect(vif.hv.leaks()).toEqual([]);
    closeAll(vif);
  });

  test("front end: frames still queued when it closes for good (no back end ever connected) are txLost", async () => {
    const vif = await simVif();
    await scriptedBackend(vif); // an offer, and nobody behind it
    const front = await vif.connect({ awaitBackend: false, timeoutMs: 300 });
    for (let i = 0; i < 7; i++) await front.write(new Uint8Array(100));
    await front.disconnect();
    expect(front.stats()).toMatchObject({ txPackets: 0, txLost: 7, txDrops: 7 });
    expect(vif.hv.leaks()).toEqual([]);
    closeAll(vif);
  });

  test("back end: frames a front end never posted buffers for are txLost when the back end disconnects", async () => {
    const vif = await simVif();
    const { logger, lines } = captureLog();
    const serving = vif.serve({ logger, timeoutMs: 600 });
    const fe = await scriptedFrontend(vif);
    const back = await serving;
    for (let i = 0; i < 9; i++) await back.write(new Uint8Array(100));
    await back.disconnect();
    expect(back.stats()).toMatchObject({ txPackets: 0, txLost: 9, txDrops: 9 });
    expect(lines.some((l) => l.level === 40 && /not delivered/.test(l.msg) && l.frames === 9)).toBe(true);
    fe.release();
    expect(vif.hv.leaks()).toEqual([]);
    closeAll(vif);
  });

  for (const end of ["front", "back"] as const) {
    test(`${end} end: frames received that nobody read when it closes are rxLost, counted in rxDrops and logged`, async () => {
      const vif = await simVif();
      const { logger, lines } = captureLog();
      const [back, front] = await Promise.all([vif.serve(end === "back" ? { logger } : {}), vif.connect(end === "front" ? { logger } : {})]);
      const [sender, receiver] = end === "front" ? [back, front] : [front, back];
      for (let i = 0; i < 5; i++) await sender.write(new Uint8Array(80));
      await until(() => receiver.stats().rxPackets === 5);
      await receiver.disconnect();
      expect(receiver.stats()).toMatchObject({ rxPackets: 5, rxLost: 5, rxDrops: 5 });
      expect(lines.some((l) => l.level === 40 && /nobody read/.test(l.msg) && l.frames === 5)).toBe(true);
      await sender.disconnect();
      expect(vif.hv.leaks()).toEqual([]);
      closeAll(vif);
    });
  }

  test("frames an iterator has buffered are not lost: it yields them after the device closed", async () => {
    const vif = await simVif();
    const { back, front } = await vif.pair();
    const it = front.frames();
    for (let i = 0; i < 5; i++) await back.write(new Uint8Array(80).fill(i));
    await until(() => front.stats().rxPackets === 5);
    await front.disconnect();
    const got: number[] = [];
    for await (const f of it) got.push(f[0]!);
    expect(got).toEqual([0, 1, 2, 3, 4]);
    expect(front.stats().rxLost).toBe(0);
    await back.disconnect();
    closeAll(vif);
  });
});

describe("timeoutMs bounds the whole disconnect", () => {
  test("front end against a back end that maps our rings and never answers anything: disconnect within timeoutMs, nothing leaked once it lets go", async () => {
    const vif = await simVif();
    const be = await scriptedBackend(vif);
    const connecting = vif.connect({ timeoutMs: 800 });
    await be.accept();
    const front = await connecting;
    for (let i = 0; i < 3; i++) await front.write(new Uint8Array(100));
    const t0 = performance.now();
    await front.disconnect();
    const took = performance.now() - t0;
    expect(took).toBeLessThan(800 + 150);
    expect(await vif.dom0.xenstore.read(`${vif.paths.frontPath}/state`)).toBe("6");
    // Its pages are still mapped by the back end: they are freed when it lets go, never reused before.
    expect(vif.hv.leaks([vif.guest]).some((l) => l.kind === "grant")).toBe(true);
    be.release();
    expect(vif.hv.leaks()).toEqual([]);
    closeAll(vif);
  });

  test("back end against a front end that never answers Closing: disconnect within timeoutMs", async () => {
    const vif = await simVif();
    const serving = vif.serve({ timeoutMs: 800 });
    const fe = await scriptedFrontend(vif);
    const back = await serving;
    await back.write(new Uint8Array(100));
    const t0 = performance.now();
    await back.disconnect();
    expect(performance.now() - t0).toBeLessThan(800 + 150);
    expect(await vif.dom0.xenstore.read(`${vif.paths.backPath}/state`)).toBe("6");
    fe.release();
    expect(vif.hv.leaks()).toEqual([]);
    closeAll(vif);
  });
});
