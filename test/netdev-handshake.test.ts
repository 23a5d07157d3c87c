/** Device-level handshakes on the simulated hypervisor: orders, late keys, abrupt peers, reconnects. */
import { describe, expect, test } from "bun:test";
import { Netback } from "../src/main/index.ts";
import { simVif } from "./helpers/vif.ts";
import { until } from "./helpers/until.ts";

type Vif = Awaited<ReturnType<typeof simVif>>;

async function states(vif: Vif): Promise<[string | null, string | null]> {
  return [await vif.dom0.xenstore.read(`${vif.paths.frontPath}/state`), await vif.dom0.xenstore.read(`${vif.paths.backPath}/state`)];
}


/** One frame each way, checked, then both ends closed and the leak check run. */
async function exchangeAndClose(vif: Vif, back: Netback, front: Awaited<ReturnType<Vif["connect"]>>): Promise<void> {
  const up: number[] = [];
  const down: number[] = [];
  const offB = back.listen((f) => up.push(f[20]!));
  const offF = front.listen((f) => down.push(f[20]!));
  await front.write(new Uint8Array(64).fill(7));
  await back.write(new Uint8Array(64).fill(9));
  await until(() => up.length === 1 && down.length === 1);
  expect([up, down]).toEqual([[7], [9]]);
  offB();
  offF();
  await front.disconnect();
  await back.disconnect();
  expect(await states(vif)).toEqual(["6", "6"]);
  expect(vif.hv.leaks()).toEqual([]);
}

function closeAll(vif: Vif): void {
  vif.frontPlatform.close();
  vif.backPlatform.close();
  vif.dom0.close();
}

describe("device handshake", () => {
  test("backend first: the backend waits in InitWait, then both reach Connected", async () => {
    const vif = await simVif();
    const serving = vif.serve();
    await until(async () => (await states(vif))[1] === "2");
    const front = await vif.connect();
    const back = await serving;
    expect(await states(vif)).toEqual(["4", "4"]);
    expect(front.mac).toEqual(Uint8Array.of(0, 0x16, 0x3e, 0, 0, 1));
    expect(back.peerMac).toEqual(front.mac);
    expect(back.mac).toEqual(Uint8Array.of(0xfe, 0xff, 0xff, 0xff, 0xff, 0xff));
    expect([front.mtu, front.maxFrameSize, back.maxFrameSize]).toEqual([1500, 65535, 65549]);
    await exchangeAndClose(vif, back, front);
    closeAll(vif);
  });

  test("frontend first: it waits for the backend's offer", async () => {
    const vif = await simVif();
    const connecting = vif.connect();
    await Bun.sleep(50);
    expect((await states(vif))[0]).toBe("1");
    const back = await vif.serve();
    const front = await connecting;
    expect(await states(vif)).toEqual(["4", "4"]);
    await exchangeAndClose(vif, back, front);
    closeAll(vif);
  });

  test("backend-id written late: the frontend reads nothing until it exists", async () => {
    const vif = await simVif();
    const id = `${vif.paths.frontPath}/backend-id`;
    await vif.dom0.xenstore.rm(id);
    const serving = vif.serve();
    let settled = false;
    const connecting = vif.connect().finally(() => (settled = true));
    await Bun.sleep(80);
    expect(settled).toBe(false);
    expect((await states(vif))[0]).toBe("1");
    await vif.dom0.xenstore.write(id, "0");
    const [front, back] = await Promise.all([connecting, serving]);
    expect(await states(vif)).toEqual(["4", "4"]);
    await exchangeAndClose(vif, back, front);
    closeAll(vif);
  });

  test("frames written before the backend is Connected wait in the queue, then all arrive in order", async () => {
    const vif = await simVif();
    // A toolstack-written offer with no backend behind it yet: the frontend connects to InitWait.
    const x = vif.dom0.xenstore;
    const b = vif.paths.backPath;
    for (const [k, v] of [["feature-rx-copy", "1"], ["feature-sg", "1"], ["feature-split-event-channels", "1"], ["state", "2"]]) await x.write(`${b}/${k}`, v!);
    const front = await vif.connect({ awaitBackend: false });
    const writes = Array.from({ length: 300 }, (_, i) => front.write(new Uint8Array(100).fill(i & 0xff)));
    await Bun.sleep(50);
    // Nothing may reach the ring before the backend is Connected.
    expect(front.stats().txPackets).toBe(0);
    const back = await vif.serve();
    const got: number[] = [];
    back.listen((f) => got.push(f[0]!));
    await Promise.all(writes);
    await until(() => got.length === 300);
    expect(got).toEqual(Array.from({ length: 300 }, (_, i) => i & 0xff));
    await front.disconnect();
    await back.disconnect();
    expect(vif.hv.leaks()).toEqual([]);
    closeAll(vif);
  });

  test("a backend that jumps straight to Closed: the frontend closes and releases everything", async () => {
    const vif = await simVif();
    const x = vif.dom0.xenstore;
    const b = vif.paths.backPath;
    for (const [k, v] of [["feature-rx-copy", "1"], ["feature-split-event-channels", "1"], ["state", "2"]]) await x.write(`${b}/${k}`, v!);
    const front = await vif.connect({ awaitBackend: false, timeoutMs: 2000, reconnect: false });
    await x.write(`${b}/state`, "6");
    await until(() => !front.connected);
    await front.disconnect(); // returns the same shutdown, now complete
    expect((await states(vif))[0]).toBe("6");
    await expect(front.write(new Uint8Array(60))).rejects.toThrow(/DISCONNECTED/);
    expect(vif.hv.leaks()).toEqual([]);
    closeAll(vif);
  });

  test("a frontend that jumps straight to Closed: the backend lets go and closes", async () => {
    const vif = await simVif();
    const { back, front } = await vif.pair({ reconnect: false });
    await vif.dom0.xenstore.write(`${vif.paths.frontPath}/state`, "6");
    await until(() => !back.connected && !front.connected);
    await back.disconnect();
    await front.disconnect();
    expect(await states(vif)).toEqual(["6", "6"]);
    expect(vif.hv.leaks()).toEqual([]);
    closeAll(vif);
  });

  test("the backend disconnects first: a frontend without reconnect follows, both Closed, nothing leaked", async () => {
    const vif = await simVif();
    const { back, front } = await vif.pair({ reconnect: false });
    await back.disconnect();
    await until(() => !front.connected);
    await front.disconnect();
    expect(await states(vif)).toEqual(["6", "6"]);
    expect(vif.hv.leaks()).toEqual([]);
    closeAll(vif);
  });

  test("disconnect and reconnect of the same vif, three times", async () => {
    const vif = await simVif();
    for (let round = 0; round < 3; round++) {
      const { back, front } = await vif.pair();
      expect(await states(vif)).toEqual(["4", "4"]);
      await exchangeAndClose(vif, back, front);
    }
    closeAll(vif);
  });

  test("no backend at all: connect fails with a timeout and leaves nothing behind", async () => {
    const vif = await simVif();
    await expect(vif.connect({ timeoutMs: 100 })).rejects.toThrow(/TIMEOUT/);
    expect(vif.hv.leaks()).toEqual([]);
    closeAll(vif);
  });
});
