/**
 * Our ends against the peers the protocol allows besides Linux: ones that do what
 * mirage-net-xen 2.1.8's front end and back end do (test/helpers/mirage-peers.ts: one event
 * channel, keys in one transaction, a front end that goes Connected without Initialised and
 * sends from 2048-byte blocks, a back end that writes Closed and removes its directory when it
 * closes), a Windows-style front end's close cycle, and a front end without feature-rx-notify.
 * Frames byte-exact both ways.
 */
import { describe, expect, test } from "bun:test";
import { mirageBackend, mirageFrontend, qemuBackend, type MiragePeer } from "./helpers/mirage-peers.ts";
import { NetError, type Netback, type Netfront } from "../src/main/index.ts";
import { scriptedFrontend } from "./helpers/scripted-peers.ts";
import { packet, verifies } from "./helpers/packets.ts";
import { destroyVif } from "../src/main/xenbus/toolstack.ts";
import { until } from "./helpers/until.ts";
import { GUEST_MAC, simVif } from "./helpers/vif.ts";

type Vif = Awaited<ReturnType<typeof simVif>>;

function closeAll(vif: Vif): void {
  vif.frontPlatform.close();
  vif.backPlatform.close();
  vif.dom0.close();
}

/** Frame `i` of a test: its index in the first bytes, then a pattern, `len` bytes. */
function frame(i: number, len: number): Uint8Array {
  const f = new Uint8Array(len);
  for (let j = 0; j < len; j++) f[j] = (i * 31 + j * 7) & 0xff;
  new DataView(f.buffer).setUint32(0, i);
  return f;
}

const sizes = (i: number) => [60, 1514, 2048, 2049, 3000, 4096, 700][i % 7]!;

/**
 * `n` frames each way between our device and a scripted peer, byte-exact and in order: sizes
 * from 60 to 4096 and past (the peer sends one page at most; we send up to 4096 to it).
 */
async function exchange(dev: Netback | Netfront, peer: MiragePeer, n: number): Promise<void> {
  const got: Uint8Array[] = [];
  dev.listen((f) => got.push(f.slice()));
  for (let i = 0; i < n; i++) peer.send(frame(i, Math.min(sizes(i), 4096)));
  for (let i = 0; i < n; i++) await dev.write(frame(i, sizes(i)));
  await until(() => got.length === n && peer.received.length === n, 10_000);
  for (let i = 0; i < n; i++) {
    expect(got[i]).toEqual(frame(i, Math.min(sizes(i), 4096)));
    expect(peer.received[i]).toEqual(frame(i, sizes(i)));
  }
}

/** The toolstack puts the vif's back-end directory back (after the back end removed it). */
async function restoreBackDir(vif: Vif): Promise<void> {
  const xs = vif.dom0.xenstore;
  const b = vif.paths.backPath;
  await xs.mkdir(b);
  await xs.setPerms(b, [{ domid: 0, access: "n" }, { domid: vif.guest, access: "r" }]);
  const keys: Record<string, string> = { frontend: vif.paths.frontPath, "frontend-id": String(vif.guest), handle: String(vif.devid), mac: GUEST_MAC, online: "1", "hotplug-status": "connected", state: "1" };
  for (const [k, v] of Object.entries(keys)) await xs.write(`${b}/${k}`, v);
}

describe("mirage-net-xen's front end against our Netback", () => {
  test("it goes Connected without Initialised and writes one event-channel: served; 700 frames each way byte-exact, from 2048-byte blocks at offsets 0 and 2048 and across two blocks", async () => {
    const vif = await simVif();
    const serving = vif.serve();
    await until(async () => (await vif.dom0.xenstore.read(`${vif.paths.backPath}/state`)) === "2");
    const mirage = await mirageFrontend(vif);
    const back = await serving;
    expect(back.connected).toBe(true);
    await exchange(back, mirage, 700);
    expect(back.stats()).toMatchObject({ rxErrors: 0, rxDrops: 0, txDrops: 0 });
    await mirage.close();
    await until(() => !back.connected);
    await back.disconnect();
    await until(() => vif.hv.leaks().length === 0);
    closeAll(vif);
  }, 30_000);
});

describe("mirage-net-xen's back end against our Netfront", () => {
  test("one channel, no split key: 700 frames each way byte-exact; it writes Closed and removes its directory, and our Netfront connects again when the toolstack brings the vif back", async () => {
    const vif = await simVif();
    const connecting = vif.connect({ reconnect: true });
    let mirage = await mirageBackend(vif);
    const front = await connecting;
    expect(await vif.dom0.xenstore.read(`${vif.paths.frontPath}/event-channel-tx`)).toBeNull();
    expect(Number(await vif.dom0.xenstore.read(`${vif.paths.frontPath}/event-channel`))).toBeGreaterThan(0);
    await exchange(front, mirage, 700);
    expect(front.stats()).toMatchObject({ rxErrors: 0, rxDrops: 0, txDrops: 0, txErrors: 0 });

    // It closes and removes its directory; our Netfront ends the session and waits.
    await mirage.close();
    expect(await vif.dom0.xenstore.read(vif.paths.backPath)).toBeNull();
    await until(async () => (await vif.dom0.xenstore.read(`${vif.paths.frontPath}/state`)) === "1" || (await vif.dom0.xenstore.read(`${vif.paths.frontPath}/state`)) === "6");
    // A frame written meanwhile waits for the next back end.
    const waiting = front.write(frame(9999, 100));
    await restoreBackDir(vif);
    mirage = await mirageBackend(vif);
    await waiting;
    await until(() => mirage.received.length === 1 && front.reconnectCount === 1, 10_000);
    expect(mirage.received[0]).toEqual(frame(9999, 100));
    // Our Closing is answered by its Closed (mirage's back end follows its front end's state).
    const t0 = performance.now();
    await Promise.all([front.disconnect(), until(async () => (await vif.dom0.xenstore.read(`${vif.paths.frontPath}/state`)) === "5").then(() => mirage.close())]);
    expect(performance.now() - t0).toBeLessThan(3000);
    await until(() => vif.hv.leaks().length === 0);
    closeAll(vif);
  }, 30_000);
});

describe("QEMU's userspace back end (xen_nic) against our Netfront", () => {
  test("it offers only rx-copy: one event channel, one queue, one slot per packet, MTU 1500; 600 frames each way byte-exact (its RX frames at offset 2); nothing it would refuse is ever sent", async () => {
    const vif = await simVif();
    const connecting = vif.connect({ queues: 4 });
    const qemu = await qemuBackend(vif);
    const front = await connecting;
    const xs = vif.dom0.xenstore;
    expect(await xs.read(`${vif.paths.frontPath}/event-channel-tx`)).toBeNull();
    expect(Number(await xs.read(`${vif.paths.frontPath}/event-channel`))).toBeGreaterThan(0);
    expect(await xs.read(`${vif.paths.frontPath}/multi-queue-num-queues`)).toBeNull();
    expect([front.queues, front.mtu, front.maxFrameSize]).toEqual([1, 1500, 1514]);
    await expect(front.write(new Uint8Array(1515))).rejects.toThrow(NetError);
    const got: Uint8Array[] = [];
    front.listen((f) => got.push(f.slice()));
    const len = (i: number) => [60, 1514, 800, 1000][i % 4]!;
    for (let i = 0; i < 600; i++) qemu.send(frame(i, len(i)));
    for (let i = 0; i < 600; i++) await front.write(frame(i, len(i)), { csumBlank: i % 2 === 0 });
    await until(() => got.length === 600 && qemu.received.length === 600, 10_000);
    for (let i = 0; i < 600; i++) {
      expect(got[i]).toEqual(frame(i, len(i)));
      expect(qemu.received[i]).toEqual(frame(i, len(i)));
    }
    expect(qemu.refused).toBe(0);
    expect(front.stats()).toMatchObject({ rxErrors: 0, rxDrops: 0, txDrops: 0, txErrors: 0 });
    await Promise.all([front.disconnect(), until(async () => (await xs.read(`${vif.paths.frontPath}/state`)) === "5").then(() => qemu.close())]);
    await until(() => vif.hv.leaks().length === 0);
    closeAll(vif);
  }, 30_000);
});

describe("the close cycle Windows front ends need (mirage-net-xen PR #121)", () => {
  test("a Netback serving with reconnect answers the front end's Closing with Closing, its Closed with Closed, keeps its directory, offers the vif again without spinning, and serves the front end when it comes back, three times", async () => {
    const vif = await simVif();
    const xs = vif.dom0.xenstore;
    const b = vif.paths.backPath;
    // Every state our Netback writes, in order (a watch could miss one that is quickly replaced).
    const states: string[] = [];
    let last: string | null = null;
    const bx = vif.backPlatform.xenstore;
    const write = bx.write.bind(bx);
    bx.write = (path, value, tx) => {
      if (path === `${b}/state` && value !== last) states.push((last = value));
      return write(path, value, tx);
    };
    const serving = vif.serve({ reconnect: true });
    await until(async () => (await xs.read(`${b}/state`)) === "2");
    let front = await scriptedFrontend(vif);
    const back = await serving;
    for (let round = 0; round < 3; round++) {
      await until(() => last === "4");
      states.length = 0;
      await front.setState(5);
      await until(() => last === "5");
      front.release();
      await front.setState(6);
      await until(() => last === "2");
      expect(states).toEqual(["5", "6", "2"]);
      // The directory stays (the toolstack removes it), and nothing moves while the front end is away.
      expect(await xs.read(`${b}/online`)).toBe("1");
      await Bun.sleep(200);
      expect(states).toEqual(["5", "6", "2"]);
      await front.setState(1);
      front = await scriptedFrontend(vif);
      await until(() => last === "4");
      expect(back.reconnectCount).toBe(round + 1);
    }
    // Our disconnect: Closing first, the front end lets go and answers Closed.
    const closing = back.disconnect();
    await until(() => last === "5");
    front.release();
    await front.setState(6);
    await closing;
    expect(last as string | null).toBe("6");
    await until(() => vif.hv.leaks().length === 0);
    closeAll(vif);
  }, 30_000);
});

describe("a front end without feature-rx-notify", () => {
  for (const rxNotify of [false, true]) {
    test(`${rxNotify ? "with" : "without"} feature-rx-notify, buffers posted without a notification: ${rxNotify ? "the frames wait for one (as the protocol says)" : "our Netback finds them by polling and delivers, without being told"}`, async () => {
      const vif = await simVif();
      const serving = vif.serve({ timeoutMs: 3000 });
      const fe = await scriptedFrontend(vif, rxNotify ? {} : { "feature-rx-notify": null });
      const back = await serving;
      for (let i = 0; i < 3; i++) await back.write(new Uint8Array(100).fill(i + 1));
      // Long enough for the RX ring's role to find no buffer and sleep.
      await Bun.sleep(50);
      const bufs = vif.frontPlatform.gnttab.share(0, 3, true);
      const ring = new DataView(fe.rxRing.buffer, fe.rxRing.byteOffset, 4096);
      for (let i = 0; i < 3; i++) {
        ring.setUint16(64 + i * 8, i, true);
        ring.setUint32(64 + i * 8 + 4, bufs.refs[i]!, true);
      }
      Atomics.store(new Uint32Array(fe.rxRing.buffer, fe.rxRing.byteOffset, 1), 0, 3); // req_prod, and no notify
      await Bun.sleep(200);
      const rspProd = ring.getUint32(8, true);
      if (rxNotify) {
        expect(rspProd).toBe(0);
        fe.notifyRx();
        await until(() => ring.getUint32(8, true) === 3);
      } else {
        expect(rspProd).toBe(3);
      }
      expect(bufs.pages.map((p) => p[0])).toEqual([1, 2, 3]);
      const closing = back.disconnect();
      await until(async () => (await vif.dom0.xenstore.read(`${vif.paths.backPath}/state`)) === "5");
      await fe.setState(6);
      await closing;
      fe.release();
      vif.frontPlatform.gnttab.unshare(bufs);
      expect(vif.hv.leaks()).toEqual([]);
      closeAll(vif);
    });
  }
});

describe("checksum offload as the front end offers it", () => {
  /** Frames written with csumBlank by our Netback, as a scripted front end with `keys` receives them. */
  async function receive(keys: Record<string, string | null>, frames: Uint8Array[]): Promise<{ bytes: Uint8Array; flags: number }[]> {
    const vif = await simVif();
    const serving = vif.serve({ timeoutMs: 3000 });
    const fe = await scriptedFrontend(vif, keys);
    const back = await serving;
    const n = frames.length;
    const bufs = vif.frontPlatform.gnttab.share(0, n, true);
    const ring = new DataView(fe.rxRing.buffer, fe.rxRing.byteOffset, 4096);
    for (let i = 0; i < n; i++) {
      ring.setUint16(64 + i * 8, i, true);
      ring.setUint32(64 + i * 8 + 4, bufs.refs[i]!, true);
    }
    ring.setUint32(0, n, true);
    fe.notifyRx();
    for (const f of frames) await back.write(f, { csumBlank: true });
    await until(() => ring.getUint32(8, true) === n);
    const out = frames.map((f, i) => ({ bytes: bufs.pages[i]!.slice(0, f.length), flags: ring.getUint16(64 + i * 8 + 4, true) }));
    const closing = back.disconnect();
    await until(async () => (await vif.dom0.xenstore.read(`${vif.paths.backPath}/state`)) === "5");
    await fe.setState(6);
    await closing;
    fe.release();
    vif.frontPlatform.gnttab.unshare(bufs);
    expect(vif.hv.leaks()).toEqual([]);
    closeAll(vif);
    return out;
  }
  const CSUM_BLANK = 2;
  const DATA_VALIDATED = 1;
  const frames = () => [packet({ tcp: true, payload: 500, seed: 1 }), packet({ payload: 99, seed: 2 }), packet({ v6: true, tcp: true, payload: 700, seed: 3 }), packet({ v6: true, payload: 31, seed: 4 })];

  test("feature-no-csum-offload=1, no IPv6 offload: every blank checksum is filled in before it goes, and the frame says validated", async () => {
    const got = await receive({ "feature-no-csum-offload": "1" }, frames());
    for (const g of got) {
      expect(verifies(g.bytes)).toBe(true);
      expect(g.flags & (CSUM_BLANK | DATA_VALIDATED)).toBe(DATA_VALIDATED);
    }
  });

  test("IPv4 offload (the default) but no feature-ipv6-csum-offload: IPv4 frames go blank and untouched, IPv6 ones are filled", async () => {
    const sent = frames();
    const got = await receive({}, sent);
    expect(got.map((g) => g.flags & (CSUM_BLANK | DATA_VALIDATED))).toEqual([CSUM_BLANK, CSUM_BLANK, DATA_VALIDATED, DATA_VALIDATED]);
    expect([got[0]!.bytes, got[1]!.bytes]).toEqual([sent[0]!, sent[1]!]);
    expect([verifies(got[2]!.bytes), verifies(got[3]!.bytes)]).toEqual([true, true]);
  });

  test("both offloads: every frame goes blank, its bytes as written", async () => {
    const sent = frames();
    const got = await receive({ "feature-ipv6-csum-offload": "1" }, sent);
    expect(got.map((g) => g.flags & (CSUM_BLANK | DATA_VALIDATED))).toEqual([CSUM_BLANK, CSUM_BLANK, CSUM_BLANK, CSUM_BLANK]);
    expect(got.map((g) => g.bytes)).toEqual(sent);
  });
});

describe("the toolstack removes the vif (xl network-detach)", () => {
  test("a Netfront waiting to reconnect ends at once with REMOVED, not at its timeout, and says so in `closed`", async () => {
    const vif = await simVif();
    const [back, front] = await Promise.all([vif.serve(), vif.connect({ reconnect: true, timeoutMs: 20_000 })]);
    await back.disconnect();
    // The Netfront now waits for a back end to offer the vif again; the toolstack takes it away.
    await Bun.sleep(100);
    const t0 = performance.now();
    await destroyVif(vif.dom0.xenstore, vif.guest, 0, vif.devid);
    const why = await front.closed;
    expect(why.code).toBe("REMOVED");
    expect(why.message).toContain("removed the vif");
    expect(performance.now() - t0).toBeLessThan(2000);
    expect(front.connected).toBe(false);
    expect(await vif.dom0.xenstore.read(vif.paths.frontPath)).toBeNull();
    await until(() => vif.hv.leaks().length === 0);
    closeAll(vif);
  });

  test("a Netback serving with reconnect whose vif is removed after its front end left ends with REMOVED, leaving nothing in xenstore", async () => {
    const vif = await simVif();
    const [back, front] = await Promise.all([vif.serve({ reconnect: true, timeoutMs: 20_000 }), vif.connect({ reconnect: false })]);
    await front.disconnect();
    await until(async () => (await vif.dom0.xenstore.read(`${vif.paths.backPath}/state`)) === "2");
    await destroyVif(vif.dom0.xenstore, vif.guest, 0, vif.devid);
    const why = await back.closed;
    expect(why.code).toBe("REMOVED");
    expect(await vif.dom0.xenstore.read(vif.paths.backPath)).toBeNull();
    expect(await vif.dom0.xenstore.read(vif.paths.frontPath)).toBeNull();
    await until(() => vif.hv.leaks().length === 0);
    closeAll(vif);
  });
});
