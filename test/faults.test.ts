/** Faults around the data path: dying workers, exhausted grant tables, xenstore that never commits. */
import { describe, expect, test } from "bun:test";
import { HandshakeError, PlatformError } from "../src/main/index.ts";
import { simVif } from "./helpers/vif.ts";
import { until, hasSettled } from "./helpers/until.ts";


describe("faults", () => {
  for (const which of ["senders", "receivers"] as const) {
    for (const end of ["front", "back"] as const) {
      test(`the ${end} end's ${which === "senders" ? "sender" : "receiver"} worker is killed: the device reports it, both ends close, nothing leaks`, async () => {
        const vif = await simVif();
        const { back, front } = await vif.pair({ reconnect: false });
        const dev = end === "front" ? front : back;
        const handle = (dev as unknown as Record<string, { worker: Worker }[]>)[which]![0]!;
        handle.worker.terminate();
        await until(() => !front.connected && !back.connected);
        await expect(dev.write(new Uint8Array(60))).rejects.toThrow(/DISCONNECTED: ring worker stopped: .*the pool worker exited/);
        await front.disconnect();
        await back.disconnect();
        expect(await vif.dom0.xenstore.read(`${vif.paths.frontPath}/state`)).toBe("6");
        expect(await vif.dom0.xenstore.read(`${vif.paths.backPath}/state`)).toBe("6");
        expect(vif.hv.leaks()).toEqual([]);
        vif.frontPlatform.close();
        vif.backPlatform.close();
        vif.dom0.close();
      });
    }
  }

  test("grant table exhaustion at connect: a clear ENOSPC, nothing half-shared left behind", async () => {
    // The front end needs 2 ring pages + 2 × 120 data pages: give its domain fewer grants.
    const vif = await simVif({ sim: { grantsPerDomain: 200 } });
    const serving = vif.serve({ timeoutMs: 500 });
    let err: unknown;
    try {
      await vif.connect({ timeoutMs: 2000 });
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(PlatformError);
    expect((err as PlatformError).code).toBe("ENOSPC");
    expect((err as Error).message).toMatch(/^gnttab\.share: ENOSPC: domain 1 has no 120 free grant entries \(table of 200\)\. This vif needs 242 grants/);
    expect(await vif.dom0.xenstore.read(`${vif.paths.frontPath}/state`)).toBe("6");
    await expect(serving).rejects.toThrow(HandshakeError);
    expect(vif.hv.leaks()).toEqual([]);
    vif.frontPlatform.close();
    vif.backPlatform.close();
    vif.dom0.close();
  });

  test("xenstore transactions that keep failing with EAGAIN: connect gives up with a typed error and releases everything", async () => {
    const vif = await simVif();
    const serving = vif.serve({ timeoutMs: 500 });
    vif.hv.xenstore.failNextCommits(1000, { domid: vif.guest });
    let err: unknown;
    try {
      await vif.connect({ timeoutMs: 2000 });
    } catch (e) {
      err = e;
    }
    vif.hv.xenstore.failNextCommits(0);
    expect(err).toBeInstanceOf(HandshakeError);
    expect(String(err)).toMatch(/XENSTORE/);
    expect(((err as HandshakeError).cause as PlatformError).code).toBe("EAGAIN");
    await serving.catch(() => {});
    expect(vif.hv.leaks()).toEqual([]);
    vif.frontPlatform.close();
    vif.backPlatform.close();
    vif.dom0.close();
  });

  test("xenstore EAGAIN a few times: connect retries and succeeds", async () => {
    const vif = await simVif();
    vif.hv.xenstore.failNextCommits(5, { domid: vif.guest });
    const { back, front } = await vif.pair();
    expect(front.connected && back.connected).toBe(true);
    await front.disconnect();
    await back.disconnect();
    expect(vif.hv.leaks()).toEqual([]);
    vif.frontPlatform.close();
    vif.backPlatform.close();
    vif.dom0.close();
  });
});

describe("the peer domain disappears", () => {
  test("the guest is destroyed mid-stream: the back end notices, lets go of everything and closes", async () => {
    const vif = await simVif();
    const { back, front } = await vif.pair();
    let got = 0;
    back.listen(() => got++);
    const writing = (async () => {
      for (let i = 0; i < 100_000 && front.connected; i++) await front.write(new Uint8Array(1514)).catch(() => {});
    })();
    await until(() => got > 1000);
    vif.hv.destroyDomain(vif.guest);
    await until(() => !back.connected);
    await back.disconnect();
    expect(await vif.dom0.xenstore.read(`${vif.paths.backPath}/state`)).toBe("6");
    // dom0 holds nothing of the dead guest's: no mapping, no port, no grant in use.
    expect(vif.hv.leaks([0])).toEqual([]);
    // The guest's own objects in this process wind down without a hypervisor to talk to.
    await front.disconnect();
    await writing;
    expect(vif.hv.leaks()).toEqual([]);
    vif.backPlatform.close();
    vif.dom0.close();
  });
});

describe("the back end restarts", () => {
  test("the front end reconnects by itself; frames written during the outage are delivered afterwards, in order", async () => {
    const vif = await simVif();
    const { back, front } = await vif.pair();
    const first: number[] = [];
    back.listen((f) => first.push(f[0]!));
    for (let i = 0; i < 10; i++) await front.write(new Uint8Array(100).fill(i));
    await until(() => first.length === 10);
    await back.disconnect(); // the back end goes away (a driver domain restarting, say)
    // Not connected while no back end serves the vif, but not closed: it waits for one.
    await until(() => !front.connected);
    expect(await hasSettled(front.closed)).toBe(false);
    // Written while there is no back end: they wait, they are not lost.
    const outage = Array.from({ length: 500 }, (_, i) => front.write(new Uint8Array(200).fill((i + 10) & 0xff)));
    await Bun.sleep(50);
    const back2 = await vif.serve();
    const second: number[] = [];
    back2.listen((f) => second.push(f[0]!));
    await Promise.all(outage);
    await until(() => second.length === 500);
    expect(second).toEqual(Array.from({ length: 500 }, (_, i) => (i + 10) & 0xff));
    expect(front.reconnectCount).toBe(1);
    // Counters carry over the reconnect; both directions work on the new session.
    expect(front.stats().txPackets).toBe(510);
    const down: number[] = [];
    front.listen((f) => down.push(f.length));
    await back2.write(new Uint8Array(3000));
    await until(() => down.length === 1);
    expect(await vif.dom0.xenstore.read(`${vif.paths.frontPath}/state`)).toBe("4");
    await front.disconnect();
    await back2.disconnect();
    expect(vif.hv.leaks()).toEqual([]);
    vif.frontPlatform.close();
    vif.backPlatform.close();
    vif.dom0.close();
  });

  test("three restarts in a row, then a disconnect while no back end is there returns promptly", async () => {
    const vif = await simVif();
    const pair = await vif.pair();
    const front = pair.front;
    let back = pair.back;
    const got: number[] = [];
    for (let round = 0; round < 3; round++) {
      await back.disconnect();
      await front.write(new Uint8Array(64).fill(round));
      back = await vif.serve();
      back.listen((f) => got.push(f[0]!));
      await until(() => got.length === round + 1);
    }
    expect(got).toEqual([0, 1, 2]);
    expect(front.reconnectCount).toBe(3);
    await back.disconnect();
    await until(() => front.reconnectCount === 3 && vif.hv.leaks([vif.guest]).length === 0);
    const t0 = performance.now();
    await front.disconnect();
    expect(performance.now() - t0).toBeLessThan(1000);
    await expect(front.write(new Uint8Array(60))).rejects.toThrow(/DISCONNECTED/);
    expect(vif.hv.leaks()).toEqual([]);
    vif.frontPlatform.close();
    vif.backPlatform.close();
    vif.dom0.close();
  });
});

describe("the back end's driver domain is destroyed", () => {
  test("the front end closes its session, gets every page back, and waits; disconnect still works", async () => {
    const { SimHypervisor, Netback, Netfront, createVif } = await import("../src/main/index.ts");
    const { silent } = await import("./helpers/vif.ts");
    const hv = SimHypervisor.create({ pages: 4096 });
    const guest = hv.createDomain();
    const driver = hv.createDomain();
    const dom0 = hv.platform(0);
    const paths = await createVif(dom0.xenstore, { frontDomid: guest, backDomid: driver, devid: 0, mac: "00:16:3e:00:00:07" });
    const backPlatform = hv.platform(driver);
    const frontPlatform = hv.platform(guest);
    const [back, front] = await Promise.all([
      Netback.serve({ platform: backPlatform, frontendDomid: guest, logger: silent, timeoutMs: 1000 }),
      Netfront.connect({ platform: frontPlatform, logger: silent, timeoutMs: 1000 }),
    ]);
    let got = 0;
    back.listen(() => got++);
    for (let i = 0; i < 100; i++) await front.write(new Uint8Array(1514));
    await until(() => got === 100);

    hv.destroyDomain(driver);
    // The front end notices, ends its session and can end access to every page: the dead
    // domain's mappings went with it.
    await until(() => hv.leaks([guest]).length === 0);
    expect(front.connected).toBe(false); // waiting for a back end to come back, not closed
    expect(await hasSettled(front.closed)).toBe(false);
    expect(await dom0.xenstore.read(`${paths.frontPath}/state`)).not.toBe("4");
    const t0 = performance.now();
    await front.disconnect();
    expect(performance.now() - t0).toBeLessThan(1000);
    await back.disconnect(); // the dead domain's objects wind down without a hypervisor
    expect(hv.leaks()).toEqual([]);
    frontPlatform.close();
    backPlatform.close();
    dom0.close();
  });
});

describe("the front end restarts (a guest reboots)", () => {
  test("a netback with reconnect serves the next front end; frames it wrote meanwhile are delivered", async () => {
    const vif = await simVif();
    const [back, front1] = await Promise.all([vif.serve({ reconnect: true }), vif.connect()]);
    const got1: number[] = [];
    front1.listen((f) => got1.push(f[0]!));
    await back.write(new Uint8Array(60).fill(1));
    await until(() => got1.length === 1);
    await front1.disconnect();
    await until(() => !back.connected);
    expect(await hasSettled(back.closed)).toBe(false);
    await until(async () => (await vif.dom0.xenstore.read(`${vif.paths.backPath}/state`)) === "2"); // InitWait again
    // Written with no front end: waits for the next one.
    const waiting = [2, 3, 4].map((i) => back.write(new Uint8Array(60).fill(i)));
    for (let round = 1; round <= 2; round++) {
      const front = await vif.connect();
      const got: number[] = [];
      front.listen((f) => got.push(f[0]!));
      if (round === 1) {
        await Promise.all(waiting);
        await until(() => got.length === 3);
        expect(got).toEqual([2, 3, 4]);
      }
      await front.write(new Uint8Array(60).fill(9));
      const up: number[] = [];
      const off = back.listen((f) => up.push(f[0]!));
      await until(() => up.length === 1);
      off();
      expect(back.reconnectCount).toBe(round);
      await front.disconnect();
    }
    await back.disconnect();
    expect(await vif.dom0.xenstore.read(`${vif.paths.backPath}/state`)).toBe("6");
    expect(vif.hv.leaks()).toEqual([]);
    vif.frontPlatform.close();
    vif.backPlatform.close();
    vif.dom0.close();
  });
});
