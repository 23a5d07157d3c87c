/**
 * A peer that breaks the protocol, refuses us, or writes garbage into its state node: the
 * session ends (and a front end reconnects, as the README promises), the peer is told at once
 * by our state going Closing/Closed, and a good peer that comes along later is served.
 */
import { describe, expect, test } from "bun:test";
import { HandshakeError, NetError } from "../src/main/index.ts";
import { scriptedBackend, scriptedFrontend } from "./helpers/scripted-peers.ts";
import { until, hasSettled } from "./helpers/until.ts";
import { simVif } from "./helpers/vif.ts";

type Vif = Awaited<ReturnType<typeof simVif>>;

function closeAll(vif: Vif): void {
  vif.frontPlatform.close();
  vif.backPlatform.close();
  vif.dom0.close();
}

const state = (vif: Vif, end: "front" | "back") => vif.dom0.xenstore.read(`${end === "front" ? vif.paths.frontPath : vif.paths.backPath}/state`);

/** Rewrite a ring's shared rsp_prod (byte 8) far past anything requested. */
function breakRspProd(ring: Uint8Array): void {
  new DataView(ring.buffer, ring.byteOffset, 16).setUint32(8, 100_000, true);
}

describe("a back end that breaks a ring", () => {
  for (const ring of ["rx", "tx"] as const) {
    test(`${ring.toUpperCase()} rsp_prod far ahead: the front end ends the session, tells the back end (Closing), and reconnects to a good back end that comes later`, async () => {
      const vif = await simVif();
      const be = await scriptedBackend(vif);
      const connecting = vif.connect({ timeoutMs: 3000 });
      await be.accept();
      const front = await connecting;
      breakRspProd(ring === "rx" ? be.rxRing : be.txRing);
      if (ring === "rx") be.notifyRx();
      else be.notifyTx();
      await until(async () => (await state(vif, "front")) === "5");
      // The session ended, not the device: not connected, not closed.
      expect(front.connected).toBe(false);
      expect(await hasSettled(front.closed)).toBe(false);
      // Written while there is no good back end: they wait for the next one.
      const outage = [1, 2, 3].map((i) => front.write(new Uint8Array(60).fill(i)));
      // The broken back end goes away; a good one serves the vif.
      be.release();
      await be.setState(6);
      const back = await vif.serve({ timeoutMs: 3000 });
      const got: number[] = [];
      back.listen((f) => got.push(f[0]!));
      await Promise.all(outage);
      await until(() => got.length === 3);
      expect(got).toEqual([1, 2, 3]);
      expect(front.reconnectCount).toBe(1);
      expect(front.stats().rxErrors + front.stats().txErrors).toBeGreaterThan(0);
      const down: number[] = [];
      front.listen((f) => down.push(f.length));
      await back.write(new Uint8Array(99));
      await until(() => down.length === 1);
      await front.disconnect();
      await back.disconnect();
      expect(vif.hv.leaks()).toEqual([]);
      closeAll(vif);
    });
  }

  test("with reconnect off, the same break closes the front end for good and says why", async () => {
    const vif = await simVif();
    const be = await scriptedBackend(vif);
    const connecting = vif.connect({ timeoutMs: 1000, reconnect: false });
    await be.accept();
    const front = await connecting;
    breakRspProd(be.rxRing);
    be.notifyRx();
    await until(() => !front.connected);
    await expect(front.write(new Uint8Array(60))).rejects.toThrow(/DISCONNECTED: .*rsp_prod/);
    be.release();
    await be.setState(6);
    await front.disconnect();
    expect(await state(vif, "front")).toBe("6");
    expect(vif.hv.leaks()).toEqual([]);
    closeAll(vif);
  });
});

describe("the peer is told when we refuse it", () => {
  const offers: [string, Record<string, string | null>, RegExp][] = [
    ["no feature-rx-copy", { "feature-rx-copy": null }, /NO_RX_COPY/],
    ["feature-rx-copy=0", { "feature-rx-copy": "0" }, /NO_RX_COPY/],
    ["a multi-queue-max-queues that does not parse", { "multi-queue-max-queues": "lots" }, /BAD_KEY/],
  ];
  for (const [what, keys, err] of offers) {
    test(`front end refusing a back end's offer (${what}): Closed at once, connect rejects`, async () => {
      const vif = await simVif();
      await scriptedBackend(vif, keys);
      const t0 = performance.now();
      await expect(vif.connect({ timeoutMs: 3000 })).rejects.toThrow(err);
      expect(performance.now() - t0).toBeLessThan(1000);
      expect(await state(vif, "front")).toBe("6");
      expect(vif.hv.leaks()).toEqual([]);
      closeAll(vif);
    });
  }

  for (const [what, key, value] of [
    ["a MAC that does not parse", "mac", "zz:zz"],
    ["an MTU that does not parse", "mtu", "big"],
  ] as const) {
    test(`front end refusing its own vif's ${what}: Closed at once, and a waiting Netback hears it and gives up without waiting out its timeout`, async () => {
      const vif = await simVif();
      await vif.dom0.xenstore.write(`${vif.paths.frontPath}/${key}`, value);
      const serving = vif.serve({ timeoutMs: 5000 }).then(
        () => "served",
        (e: unknown) => e,
      );
      await until(async () => (await state(vif, "back")) === "2");
      const t0 = performance.now();
      await expect(vif.connect({ timeoutMs: 5000 })).rejects.toThrow(/BAD_KEY/);
      const served = await serving;
      expect(performance.now() - t0).toBeLessThan(1500);
      expect(served).toBeInstanceOf(HandshakeError);
      expect((served as HandshakeError).code).toBe("PEER_CLOSED");
      expect([await state(vif, "front"), await state(vif, "back")]).toEqual(["6", "6"]);
      expect(vif.hv.leaks()).toEqual([]);
      closeAll(vif);
    });
  }

  test("back end refusing a front end's keys (no request-rx-copy): Closed at once, serve rejects", async () => {
    const vif = await simVif();
    const serving = vif.serve({ timeoutMs: 3000 });
    const fe = await scriptedFrontend(vif, { "request-rx-copy": "0" });
    await expect(serving).rejects.toThrow(/NO_RX_COPY/);
    expect(await state(vif, "back")).toBe("6");
    fe.release();
    expect(vif.hv.leaks()).toEqual([]);
    closeAll(vif);
  });

  test("back end refusing a ring ref that does not parse: Closed at once, serve rejects naming the key", async () => {
    const vif = await simVif();
    const serving = vif.serve({ timeoutMs: 3000 });
    const fe = await scriptedFrontend(vif, { "tx-ring-ref": "ring" });
    const e = await serving.catch((x: unknown) => x);
    expect(e).toBeInstanceOf(HandshakeError);
    expect(String(e)).toMatch(/tx-ring-ref/);
    expect(await state(vif, "back")).toBe("6");
    fe.release();
    expect(vif.hv.leaks()).toEqual([]);
    closeAll(vif);
  });
});

describe("a peer state that does not parse is Unknown: the session ends", () => {
  for (const garbage of ["abc", "", "9", "-1"]) {
    test(`back end's state ${JSON.stringify(garbage)}: a front end without reconnect closes`, async () => {
      const vif = await simVif();
      const { back, front } = await vif.pair({ reconnect: false });
      await vif.dom0.xenstore.write(`${vif.paths.backPath}/state`, garbage);
      await until(() => !front.connected);
      await expect(front.write(new Uint8Array(60))).rejects.toThrow(NetError);
      await front.disconnect();
      expect(await state(vif, "front")).toBe("6");
      await back.disconnect();
      expect(vif.hv.leaks()).toEqual([]);
      closeAll(vif);
    });

    test(`front end's state ${JSON.stringify(garbage)}: the back end ends the session and closes`, async () => {
      const vif = await simVif();
      const { back, front } = await vif.pair({ reconnect: false });
      await vif.dom0.xenstore.write(`${vif.paths.frontPath}/state`, garbage);
      await until(() => !back.connected);
      await back.disconnect();
      expect(await state(vif, "back")).toBe("6");
      await front.disconnect();
      expect(vif.hv.leaks()).toEqual([]);
      closeAll(vif);
    });
  }
});
