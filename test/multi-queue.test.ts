/**
 * Multi-queue on the simulated hypervisor: the keys as netif.h and Linux lay them out, frames
 * spread over the queues by flow with every flow in order, fewer queues when the other end
 * offers fewer, a refusal when a front end asks for more than offered, and a reconnect to fewer
 * queues that leaves nothing behind.
 */
import { describe, expect, test } from "bun:test";
import { NetError } from "../src/main/index.ts";
import { scriptedFrontend } from "./helpers/scripted-peers.ts";
import { until } from "./helpers/until.ts";
import { simVif } from "./helpers/vif.ts";

type Vif = Awaited<ReturnType<typeof simVif>>;

function closeAll(vif: Vif): void {
  vif.frontPlatform.close();
  vif.backPlatform.close();
  vif.dom0.close();
}

/** A UDP/IPv4 frame of flow `flow`, carrying sequence number `seq`. */
function udp(flow: number, seq: number, len = 200): Uint8Array {
  const f = new Uint8Array(len);
  const dv = new DataView(f.buffer);
  f.set([0, 0x16, 0x3e, 0, 0, 1, 0xfe, 0xff, 0xff, 0xff, 0xff, 0xff]);
  dv.setUint16(12, 0x0800);
  f[14] = 0x45;
  f[14 + 9] = 17;
  dv.setUint32(14 + 12, 0x0a000001);
  dv.setUint32(14 + 16, 0x0a000002);
  dv.setUint16(34, 5000 + flow);
  dv.setUint16(36, 53);
  dv.setUint32(42, seq);
  return f;
}

/** Every flow's sequence numbers in arrival order. */
function flows() {
  const seen = new Map<number, number[]>();
  return {
    see(f: Uint8Array) {
      const dv = new DataView(f.buffer, f.byteOffset, f.byteLength);
      const flow = dv.getUint16(34) - 5000;
      let l = seen.get(flow);
      if (l === undefined) seen.set(flow, (l = []));
      l.push(dv.getUint32(42));
      this.total++;
    },
    seen,
    total: 0,
  };
}

describe("multi-queue", () => {
  test("4 queues: the keys under queue-N/, frames of 64 flows spread over every queue both ways, each flow in order", async () => {
    const vif = await simVif();
    const [back, front] = await Promise.all([vif.serve({ maxQueues: 4 }), vif.connect({ queues: 4 })]);
    expect([front.queues, back.queues]).toEqual([4, 4]);
    const xs = vif.dom0.xenstore;
    const f = vif.paths.frontPath;
    expect(await xs.read(`${vif.paths.backPath}/multi-queue-max-queues`)).toBe("4");
    expect(await xs.read(`${f}/multi-queue-num-queues`)).toBe("4");
    for (const k of ["tx-ring-ref", "rx-ring-ref", "event-channel", "event-channel-tx", "event-channel-rx"]) expect(await xs.read(`${f}/${k}`)).toBeNull();
    for (let q = 0; q < 4; q++) {
      for (const k of ["tx-ring-ref", "rx-ring-ref", "event-channel-tx", "event-channel-rx"]) expect(await xs.read(`${f}/queue-${q}/${k}`)).toMatch(/^\d+$/);
    }
    const up = flows();
    const down = flows();
    back.listen((fr) => up.see(fr));
    front.listen((fr) => down.see(fr));
    const PER = 40;
    for (let seq = 0; seq < PER; seq++) {
      for (let flow = 0; flow < 64; flow++) {
        await front.write(udp(flow, seq));
        await back.write(udp(flow, seq, 1514));
      }
    }
    await until(() => up.total === 64 * PER && down.total === 64 * PER);
    for (const got of [up, down]) {
      expect(got.seen.size).toBe(64);
      for (const seqs of got.seen.values()) expect(seqs).toEqual(Array.from({ length: PER }, (_, i) => i));
    }
    for (const s of [front.queueStats(), back.queueStats()]) {
      expect(s.length).toBe(4);
      for (const q of s) expect(q.txPackets).toBeGreaterThan(64 * PER * 0.1);
    }
    await front.disconnect();
    await back.disconnect();
    expect(vif.hv.leaks()).toEqual([]);
    closeAll(vif);
  });

  test("the front end asks for 4, the back end offers 2: 2 queues; asked for 1: the keys stay flat", async () => {
    for (const [ask, offer, want] of [
      [4, 2, 2],
      [1, 4, 1],
      [3, 3, 3],
    ] as const) {
      const vif = await simVif();
      const [back, front] = await Promise.all([vif.serve({ maxQueues: offer }), vif.connect({ queues: ask })]);
      expect([front.queues, back.queues]).toEqual([want, want]);
      const f = vif.paths.frontPath;
      expect(await vif.dom0.xenstore.read(`${f}/multi-queue-num-queues`)).toBe(String(want));
      const flat = await vif.dom0.xenstore.read(`${f}/tx-ring-ref`);
      if (want === 1) expect(flat).toMatch(/^\d+$/);
      else expect(flat).toBeNull();
      const got: number[] = [];
      back.listen((fr) => got.push(fr.length));
      await front.write(udp(1, 0));
      await until(() => got.length === 1);
      await front.disconnect();
      await back.disconnect();
      expect(vif.hv.leaks()).toEqual([]);
      closeAll(vif);
    }
  });

  test("a front end that asks for more queues than offered is refused, and the back end closes", async () => {
    const vif = await simVif();
    const serving = vif.serve({ maxQueues: 2, timeoutMs: 2000 });
    const fe = await scriptedFrontend(vif, { "multi-queue-num-queues": "3" });
    await expect(serving).rejects.toThrow(/multi-queue-num-queues.*more queues than this backend offered/);
    expect(await vif.dom0.xenstore.read(`${vif.paths.backPath}/state`)).toBe("6");
    fe.release();
    expect(vif.hv.leaks()).toEqual([]);
    closeAll(vif);
  });

  test("queues and maxQueues are checked: BAD_ARGUMENT for 0, 17 or 1.5", async () => {
    const vif = await simVif();
    for (const v of [0, 17, 1.5]) {
      await expect(vif.connect({ queues: v })).rejects.toThrow(NetError);
      await expect(vif.serve({ maxQueues: v })).rejects.toThrow(/option maxQueues/);
    }
    closeAll(vif);
  });

  test("the back end comes back offering fewer queues: the front end reconnects with fewer, and what waited in the others is delivered", async () => {
    const vif = await simVif();
    const [back, front] = await Promise.all([vif.serve({ maxQueues: 4 }), vif.connect({ queues: 4 })]);
    expect(front.queues).toBe(4);
    await back.disconnect();
    // Written while no back end is there: they wait in all four queues.
    const writes = Array.from({ length: 64 }, (_, flow) => front.write(udp(flow, 0)));
    const back2 = await vif.serve({ maxQueues: 1 });
    const got = flows();
    back2.listen((fr) => got.see(fr));
    await until(() => front.reconnectCount === 1 && front.queues === 1);
    await Promise.all(writes);
    await until(() => got.seen.size === 64);
    expect(front.stats().txLost).toBe(0);
    await front.disconnect();
    await back2.disconnect();
    expect(vif.hv.leaks()).toEqual([]);
    closeAll(vif);
  });
});
