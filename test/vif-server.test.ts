/**
 * Serving every vif of a domain (Netback.serveAll), as Linux netback's xenbus probe does: vifs
 * that exist, that come later, that go away, whose guest is late or broken; one failing never
 * stops the others. And the AbortSignal of connect and serve.
 */
import { describe, expect, test } from "bun:test";
import { HandshakeError, Netback, Netfront, SimHypervisor, createVif, destroyVif, type VifEvent, type VifServer } from "../src/main/index.ts";
import { scriptedFrontend } from "./helpers/scripted-peers.ts";
import { until } from "./helpers/until.ts";
import { silent, simVif } from "./helpers/vif.ts";

async function machine(guests: number) {
  const hv = SimHypervisor.create({ vifs: guests + 2 });
  const dom0 = hv.platform(0);
  const ids: number[] = [];
  for (let i = 0; i < guests; i++) ids.push(hv.createDomain());
  const vif = (g: number, devid = 0) => createVif(dom0.xenstore, { frontDomid: g, backDomid: 0, devid, mac: `00:16:3e:00:02:${((g * 8 + devid) & 0xff).toString(16).padStart(2, "0")}` });
  const connect = (g: number, devid = 0) => Netfront.connect({ platform: hv.platform(g), devid, logger: silent, timeoutMs: 5000 });
  return { hv, dom0, ids, vif, connect };
}

/** Events as they come, and a way to wait for one. */
function recorder(server: VifServer) {
  const seen: VifEvent[] = [];
  void (async () => {
    for await (const e of server) seen.push(e);
  })();
  return {
    seen,
    async next(pred: (e: VifEvent) => boolean): Promise<VifEvent> {
      await until(() => seen.some(pred), 5000);
      return seen.find(pred)!;
    },
  };
}

async function pingPong(back: Netback, front: Netfront): Promise<void> {
  const up: number[] = [];
  const down: number[] = [];
  const a = back.listen((f) => up.push(f.length));
  const b = front.listen((f) => down.push(f.length));
  await front.write(new Uint8Array(100));
  await back.write(new Uint8Array(200));
  await until(() => up.length === 1 && down.length === 1);
  a();
  b();
}

describe("serving every vif of a domain", () => {
  test("vifs there at the start, one whose guest comes late, one created later, one removed: each served, the others untouched", async () => {
    const m = await machine(4);
    const [g1, g2, g3, g4] = m.ids as [number, number, number, number];
    await m.vif(g1);
    await m.vif(g2);
    await m.vif(g1, 1); // a second vif of the same guest
    const server = await Netback.serveAll({ platform: m.dom0, logger: silent });
    const r = recorder(server);
    const f1 = await m.connect(g1);
    const f1b = await m.connect(g1, 1);
    await r.next((e) => e.type === "added" && e.frontendDomid === g1 && e.devid === 1);
    // g2's guest boots late: its vif waits, offered, as long as it takes.
    await Bun.sleep(300);
    const f2 = await m.connect(g2);
    // A vif the toolstack creates while we run.
    await m.vif(g3);
    const f3 = await m.connect(g3);
    await until(() => server.vifs.size === 4);
    for (const [key, f] of [[`${g1}/0`, f1], [`${g1}/1`, f1b], [`${g2}/0`, f2], [`${g3}/0`, f3]] as const) await pingPong(server.vifs.get(key)!, f);
    // g2's vif goes away, as xl network-detach does it: the front end closes, the toolstack removes both directories.
    await f2.disconnect();
    await destroyVif(m.dom0.xenstore, g2, 0, 0);
    await r.next((e) => e.type === "removed" && e.frontendDomid === g2);
    expect([...server.vifs.keys()].sort()).toEqual([`${g1}/0`, `${g1}/1`, `${g3}/0`].sort());
    for (const [key, f] of [[`${g1}/0`, f1], [`${g3}/0`, f3]] as const) await pingPong(server.vifs.get(key)!, f);
    // g4 has a vif but no front end ever: close() does not wait for it.
    await m.vif(g4);
    await until(async () => (await m.dom0.xenstore.read(`/local/domain/0/backend/vif/${g4}/0/state`)) === "2");
    await Promise.all([f1.disconnect(), f1b.disconnect(), f3.disconnect()]);
    await server.close();
    expect(r.seen.filter((e) => e.type === "added").length).toBe(4);
    expect(m.hv.leaks()).toEqual([]);
  }, 30_000);

  test("a guest that reboots is served again by the same Netback", async () => {
    const m = await machine(1);
    const g = m.ids[0]!;
    await m.vif(g);
    const server = await Netback.serveAll({ platform: m.dom0, logger: silent });
    const r = recorder(server);
    const f1 = await m.connect(g);
    const added = (await r.next((e) => e.type === "added")) as Extract<VifEvent, { type: "added" }>;
    await pingPong(added.netback, f1);
    await f1.disconnect();
    const f2 = await m.connect(g);
    await until(() => added.netback.reconnectCount === 1);
    await pingPong(added.netback, f2);
    expect(r.seen.filter((e) => e.type === "added").length).toBe(1);
    await f2.disconnect();
    await server.close();
    expect(m.hv.leaks()).toEqual([]);
  }, 30_000);

  test("a broken front end fails its vif only; the vif is served once a good front end comes", async () => {
    const m = await machine(2);
    const [bad, good] = m.ids as [number, number];
    await m.vif(bad);
    await m.vif(good);
    const server = await Netback.serveAll({ platform: m.dom0, logger: silent });
    const r = recorder(server);
    const vif = {
      hv: m.hv,
      guest: bad,
      dom0: m.dom0,
      frontPlatform: m.hv.platform(bad),
      paths: { frontPath: `/local/domain/${bad}/device/vif/0`, backPath: `/local/domain/0/backend/vif/${bad}/0` },
    };
    const fe = await scriptedFrontend(vif as never, { "request-rx-copy": "0" });
    await r.next((e) => e.type === "failed" && e.frontendDomid === bad);
    const fg = await m.connect(good);
    await r.next((e) => e.type === "added" && e.frontendDomid === good);
    await pingPong(server.vifs.get(`${good}/0`)!, fg);
    // The broken guest is replaced by a good one: its vif is served on the next try.
    fe.release();
    await m.dom0.xenstore.write(`/local/domain/${bad}/device/vif/0/state`, "1");
    const fb = await m.connect(bad);
    await r.next((e) => e.type === "added" && e.frontendDomid === bad);
    await pingPong(server.vifs.get(`${bad}/0`)!, fb);
    await Promise.all([fg.disconnect(), fb.disconnect()]);
    await server.close();
    expect(m.hv.leaks()).toEqual([]);
  }, 30_000);
});

describe("AbortSignal", () => {
  for (const end of ["front", "back"] as const) {
    test(`${end}: aborting a connect in progress rejects it at once with ABORTED, and leaves nothing behind`, async () => {
      const vif = await simVif();
      const ac = new AbortController();
      const t0 = performance.now();
      const p = end === "front" ? vif.connect({ signal: ac.signal, timeoutMs: 5000 }) : vif.serve({ signal: ac.signal, timeoutMs: 5000 });
      setTimeout(() => ac.abort(), 100);
      const e = await p.catch((x: unknown) => x);
      expect(performance.now() - t0).toBeLessThan(600);
      expect(e).toBeInstanceOf(HandshakeError);
      expect((e as HandshakeError).code).toBe("ABORTED");
      expect(vif.hv.leaks()).toEqual([]);
      // The vif is free again.
      const { back, front } = await vif.pair();
      await pingPong(back, front);
      await front.disconnect();
      await back.disconnect();
      vif.frontPlatform.close();
      vif.backPlatform.close();
      vif.dom0.close();
    });
  }

  test("an already aborted signal fails at once; a signal aborted after connect resolved changes nothing", async () => {
    const vif = await simVif();
    await expect(vif.connect({ signal: AbortSignal.abort() })).rejects.toThrow(/ABORTED/);
    const ac = new AbortController();
    const [back, front] = await Promise.all([vif.serve({ signal: ac.signal }), vif.connect({ signal: ac.signal })]);
    ac.abort();
    await Bun.sleep(50);
    expect(front.connected && back.connected).toBe(true);
    await pingPong(back, front);
    await front.disconnect();
    await back.disconnect();
    vif.frontPlatform.close();
    vif.backPlatform.close();
    vif.dom0.close();
  });
});

describe("serveAll({ signal })", () => {
  test("aborting the signal closes the server and every vif it serves; an aborted signal refuses to start", async () => {
    const m = await machine(2);
    const [g1, g2] = m.ids as [number, number];
    await m.vif(g1);
    await m.vif(g2);
    const ac = new AbortController();
    const server = await Netback.serveAll({ platform: m.dom0, logger: silent, signal: ac.signal });
    const r = recorder(server);
    const f1 = await m.connect(g1);
    const f2 = await m.connect(g2);
    await r.next((e) => e.type === "added" && e.frontendDomid === g1);
    await r.next((e) => e.type === "added" && e.frontendDomid === g2);
    const b1 = server.vifs.get(`${g1}/0`)!;
    await pingPong(b1, f1);
    ac.abort();
    await b1.closed;
    await until(() => server.vifs.size === 0);
    // Serving stopped: the vif's back end is Closed, and no serve is retried.
    expect(await m.dom0.xenstore.read(`/local/domain/0/backend/vif/${g1}/0/state`)).toBe("6");
    await expect(Netback.serveAll({ platform: m.dom0, logger: silent, signal: AbortSignal.abort() })).rejects.toThrow("ABORTED");
    await f1.disconnect();
    await f2.disconnect();
    await until(() => m.hv.leaks().length === 0);
  });
});

describe("serveAll({ accept })", () => {
  test("only the vifs the filter accepts are served; the others are left alone; a filter that throws refuses, the server goes on", async () => {
    const m = await machine(3);
    const [g1, g2, g3] = m.ids as [number, number, number];
    await m.vif(g1);
    await m.vif(g2);
    await m.vif(g3);
    const server = await Netback.serveAll({
      platform: m.dom0,
      logger: silent,
      accept: (fe) => {
        if (fe === g3) throw new Error("filter bug");
        return fe === g1;
      },
    });
    const r = recorder(server);
    const f1 = await m.connect(g1);
    await r.next((e) => e.type === "added" && e.frontendDomid === g1);
    await Bun.sleep(200);
    expect([...server.vifs.keys()]).toEqual([`${g1}/0`]);
    // Nobody touched the refused vifs: their back ends are still as the toolstack wrote them.
    expect(await m.dom0.xenstore.read(`/local/domain/0/backend/vif/${g2}/0/state`)).toBe("1");
    expect(await m.dom0.xenstore.read(`/local/domain/0/backend/vif/${g3}/0/state`)).toBe("1");
    await pingPong(server.vifs.get(`${g1}/0`)!, f1);
    await expect(Netback.serveAll({ platform: m.dom0, logger: silent, accept: 5 as unknown as () => boolean })).rejects.toThrow("BAD_ARGUMENT");
    await f1.disconnect();
    await server.close();
    await until(() => m.hv.leaks().length === 0);
  });
});
