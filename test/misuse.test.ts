/**
 * A user's mistakes: bad options refused up front with BAD_ARGUMENT naming the option, a
 * second claim on a device in use refused without disturbing the live connection, listeners
 * that throw anything at all, sizes that tell the truth.
 */
import { describe, expect, test } from "bun:test";
import { HandshakeError, Netback, Netfront, NetError } from "../src/main/index.ts";
import { captureLog } from "./helpers/log.ts";
import { until } from "./helpers/until.ts";
import { silent, simVif } from "./helpers/vif.ts";
import { createVif } from "../src/main/xenbus/toolstack.ts";

type Vif = Awaited<ReturnType<typeof simVif>>;

function closeAll(vif: Vif): void {
  vif.frontPlatform.close();
  vif.backPlatform.close();
  vif.dom0.close();
}

async function failure(p: Promise<unknown>): Promise<unknown> {
  return p.then(
    () => "no error",
    (e: unknown) => e,
  );
}

/** Frames cross both ways on a pair: the connection is alive and unharmed. */
async function stillWorks(back: Netback, front: Netfront): Promise<void> {
  const up: number[] = [];
  const down: number[] = [];
  const offB = back.listen((f) => up.push(f[0]!));
  const offF = front.listen((f) => down.push(f[0]!));
  await front.write(new Uint8Array(60).fill(5));
  await back.write(new Uint8Array(60).fill(6));
  await until(() => up.length === 1 && down.length === 1);
  expect([up, down]).toEqual([[5], [6]]);
  offB();
  offF();
}

describe("options are checked before anything is set up", () => {
  const bad: [string, Record<string, unknown>][] = [
    ["timeoutMs", { timeoutMs: 0 }],
    ["timeoutMs", { timeoutMs: -1 }],
    ["timeoutMs", { timeoutMs: Number.NaN }],
    ["timeoutMs", { timeoutMs: Number.POSITIVE_INFINITY }],
    ["timeoutMs", { timeoutMs: "100" }],
    ["devid", { devid: -1 }],
    ["devid", { devid: Number.NaN }],
    ["devid", { devid: 2 ** 40 }],
    ["devid", { devid: 1.5 }],
    ["devid", { devid: "0" }],
    ["spinMicros", { spinMicros: -1 }],
    ["spinMicros", { spinMicros: 1e9 }],
    ["queueBytes", { queueBytes: 0 }],
    ["queueBytes", { queueBytes: -4096 }],
    ["queueBytes", { queueBytes: 5000.5 }],
    ["queueBytes", { queueBytes: 2 ** 40 }],
    ["reconnect", { reconnect: "yes" }],
    ["logger", { logger: {} }],
    ["platform", { platform: {} }],
  ];
  for (const [name, opts] of bad) {
    for (const end of ["front", "back"] as const) {
      test(`${end}: ${name} ${typeof opts[name] === "number" ? String(opts[name]) : JSON.stringify(opts[name])} is BAD_ARGUMENT naming it, at once, nothing written or held`, async () => {
        const vif = await simVif();
        const t0 = performance.now();
        const e = await failure(end === "front" ? vif.connect(opts) : vif.serve(opts));
        expect(performance.now() - t0).toBeLessThan(100);
        expect(e).toBeInstanceOf(NetError);
        expect((e as NetError).code).toBe("BAD_ARGUMENT");
        expect((e as Error).message).toContain(name);
        expect([await vif.dom0.xenstore.read(`${vif.paths.frontPath}/state`), await vif.dom0.xenstore.read(`${vif.paths.backPath}/state`)]).toEqual(["1", "1"]);
        expect(vif.hv.leaks()).toEqual([]);
        closeAll(vif);
      });
    }
  }

  test("front: awaitBackend and domid are checked too", async () => {
    for (const [name, opts] of [
      ["awaitBackend", { awaitBackend: 1 }],
      ["domid", { domid: -3 }],
    ] as const) {
      const e = await failure(Netfront.connect({ logger: silent, ...(opts as object) }));
      expect([(e as NetError).code, (e as Error).message.includes(name)]).toEqual(["BAD_ARGUMENT", true]);
    }
  });

  test("back: frontendDomid missing or out of range is BAD_ARGUMENT naming it", async () => {
    for (const v of [undefined, -1, 1.5, 0x7ff0, "1"]) {
      const e = await failure(Netback.serve({ logger: silent, frontendDomid: v } as unknown as Parameters<typeof Netback.serve>[0]));
      expect(e).toBeInstanceOf(NetError);
      expect([(e as NetError).code, (e as Error).message.includes("frontendDomid")]).toEqual(["BAD_ARGUMENT", true]);
    }
    const e = await failure(Netback.serve(undefined as unknown as Parameters<typeof Netback.serve>[0]));
    expect((e as NetError).code).toBe("BAD_ARGUMENT");
  });

  test("a device that does not exist: the timeout says so and lists the vifs that do", async () => {
    const vif = await simVif();
    await createVif(vif.dom0.xenstore, { frontDomid: vif.guest, backDomid: 0, devid: 3, mac: "00:16:3e:00:00:03" });
    const fe = await failure(vif.connect({ devid: 5, timeoutMs: 200 }));
    expect(fe).toBeInstanceOf(HandshakeError);
    expect((fe as HandshakeError).code).toBe("NO_DEVICE");
    expect((fe as Error).message).toMatch(/vif 5 .*not found.*available: \[0, 3\]/);
    const be = await failure(vif.serve({ devid: 5, timeoutMs: 200 }));
    expect((be as HandshakeError).code).toBe("NO_DEVICE");
    expect((be as Error).message).toMatch(/vif 5 .*not found.*available: \[0, 3\]/);
    // A guest with no vif at all.
    const other = vif.hv.createDomain();
    const ne = await failure(Netfront.connect({ platform: vif.hv.platform(other), logger: silent, timeoutMs: 100 }));
    expect((ne as Error).message).toMatch(/available: none/);
    expect(vif.hv.leaks()).toEqual([]);
    closeAll(vif);
  });
});

describe("one user's mistake does not break another's connection", () => {
  test("a second Netfront.connect on a connected vif is refused with IN_USE; the first connection is untouched", async () => {
    const vif = await simVif();
    const { back, front } = await vif.pair();
    const keysBefore = await vif.dom0.xenstore.read(`${vif.paths.frontPath}/tx-ring-ref`);
    const e = await failure(vif.connect({ timeoutMs: 300 }));
    expect(e).toBeInstanceOf(NetError);
    expect((e as NetError).code).toBe("IN_USE");
    expect((e as Error).message).toContain(vif.paths.frontPath);
    expect(await vif.dom0.xenstore.read(`${vif.paths.frontPath}/tx-ring-ref`)).toBe(keysBefore);
    expect([await vif.dom0.xenstore.read(`${vif.paths.frontPath}/state`), await vif.dom0.xenstore.read(`${vif.paths.backPath}/state`)]).toEqual(["4", "4"]);
    await Bun.sleep(50);
    expect(front.reconnectCount).toBe(0);
    await stillWorks(back, front);
    await front.disconnect();
    await back.disconnect();
    // Released: the vif can be used again.
    const again = await vif.pair();
    await stillWorks(again.back, again.front);
    await again.front.disconnect();
    await again.back.disconnect();
    expect(vif.hv.leaks()).toEqual([]);
    closeAll(vif);
  });

  test("a second Netback.serve on a live vif is refused with IN_USE; both live ends are untouched", async () => {
    const vif = await simVif();
    const { back, front } = await vif.pair();
    const e = await failure(vif.serve({ timeoutMs: 300 }));
    expect((e as NetError).code).toBe("IN_USE");
    expect((e as Error).message).toContain(vif.paths.backPath);
    await Bun.sleep(50);
    expect([await vif.dom0.xenstore.read(`${vif.paths.frontPath}/state`), await vif.dom0.xenstore.read(`${vif.paths.backPath}/state`)]).toEqual(["4", "4"]);
    await stillWorks(back, front);
    await front.disconnect();
    await back.disconnect();
    expect(vif.hv.leaks()).toEqual([]);
    closeAll(vif);
  });

  test("a claim is released when connect fails, so a later connect can use the vif", async () => {
    const vif = await simVif();
    await expect(vif.connect({ timeoutMs: 100 })).rejects.toThrow(/TIMEOUT/);
    await expect(vif.serve({ timeoutMs: 100 })).rejects.toThrow(/TIMEOUT/);
    const { back, front } = await vif.pair();
    await stillWorks(back, front);
    await front.disconnect();
    await back.disconnect();
    closeAll(vif);
  });

  test("two vifs of one guest, and the same vif on two simulated machines, are different devices", async () => {
    const a = await simVif();
    const b = await simVif();
    const pa = await a.pair();
    const pb = await b.pair();
    await createVif(a.dom0.xenstore, { frontDomid: a.guest, backDomid: 0, devid: 1, mac: "00:16:3e:00:00:09" });
    const [b1, f1] = await Promise.all([
      Netback.serve({ platform: a.backPlatform, frontendDomid: a.guest, devid: 1, logger: silent }),
      Netfront.connect({ platform: a.frontPlatform, devid: 1, logger: silent }),
    ]);
    for (const [bk, fr] of [[pa.back, pa.front], [pb.back, pb.front], [b1, f1]] as const) {
      await stillWorks(bk, fr);
      await fr.disconnect();
      await bk.disconnect();
    }
    closeAll(a);
    closeAll(b);
  });
});

describe("listeners that throw anything", () => {
  const revoked = Proxy.revocable({}, {});
  revoked.revoke();
  const throws: [string, () => unknown][] = [
    ["an Error", () => new Error("plain")],
    ["an Error whose message getter throws", () => Object.defineProperty(new Error(), "message", { get: () => { throw new Error("getter"); } })],
    ["a Proxy that throws on every trap", () => new Proxy({}, { get: () => { throw new Error("trap"); }, has: () => { throw new Error("trap"); }, ownKeys: () => { throw new Error("trap"); }, getPrototypeOf: () => { throw new Error("trap"); }, getOwnPropertyDescriptor: () => { throw new Error("trap"); } })],
    ["a revoked Proxy", () => revoked.proxy],
    ["null", () => null],
    ["undefined", () => undefined],
    ["a symbol", () => Symbol("s")],
    ["an object whose toString and toJSON throw", () => ({ toString() { throw new Error("ts"); }, toJSON() { throw new Error("tj"); } })],
  ];
  for (const [what, make] of throws) {
    test(`${what}: receiving goes on, every frame still reaches the other listener, the throw is reported`, async () => {
      const vif = await simVif();
      const { logger, lines } = captureLog();
      const [back, front] = await Promise.all([vif.serve({ logger }), vif.connect()]);
      let good = 0;
      back.listen(() => {
        throw make();
      });
      back.listen(() => good++);
      for (let i = 0; i < 20; i++) await front.write(new Uint8Array(60));
      await until(() => good === 20);
      expect(back.stats().listenerErrors).toBe(20);
      expect(lines.filter((l) => /listener threw/.test(l.msg)).length).toBe(1);
      await front.disconnect();
      await back.disconnect();
      closeAll(vif);
    });
  }
});

describe("sizes tell the truth", () => {
  test("a small queueBytes still carries maxFrameSize both ways", async () => {
    const vif = await simVif();
    const [back, front] = await Promise.all([vif.serve({ queueBytes: 4096 }), vif.connect({ queueBytes: 4096 })]);
    expect([front.maxFrameSize, back.maxFrameSize]).toEqual([65535, 65549]);
    const up: number[] = [];
    const down: number[] = [];
    back.listen((f) => up.push(f.length));
    front.listen((f) => down.push(f.length));
    await front.write(new Uint8Array(3000));
    await front.write(new Uint8Array(front.maxFrameSize));
    await back.write(new Uint8Array(back.maxFrameSize));
    await until(() => up.length === 2 && down.length === 1);
    expect([up, down]).toEqual([[3000, 65535], [65549]]);
    expect(front.stats().rxDrops + back.stats().rxDrops).toBe(0);
    await front.disconnect();
    await back.disconnect();
    closeAll(vif);
  });

  test("writeWith: Infinity is FRAME_TOO_LONG, NaN and fractions BAD_ARGUMENT; a fill that throws rejects the promise, even when the queue is full", async () => {
    const vif = await simVif();
    const { back, front } = await vif.pair();
    const code = async (p: Promise<void>) => ((await failure(p)) as NetError).code;
    expect(await code(front.writeWith(Number.POSITIVE_INFINITY, () => {}))).toBe("FRAME_TOO_LONG");
    expect(await code(front.writeWith(Number.NaN, () => {}))).toBe("BAD_ARGUMENT");
    expect(await code(front.writeWith(100.5, () => {}))).toBe("BAD_ARGUMENT");
    expect(await code(front.writeWith("100" as unknown as number, () => {}))).toBe("BAD_ARGUMENT");
    const bug = new Error("fill bug");
    // The call returns a promise (it does not throw), and the promise rejects with the fill's error.
    const call = (): unknown => {
      try {
        return front.writeWith(100, () => {
          throw bug;
        });
      } catch (e) {
        return { threw: e };
      }
    };
    let p = call();
    expect(p).toBeInstanceOf(Promise);
    expect(await failure(p as Promise<void>)).toBe(bug);
    // Fill the send path: nobody reads on the back end.
    while (front.tryWrite(new Uint8Array(8000)));
    p = call();
    expect(p).toBeInstanceOf(Promise);
    expect(await failure(p as Promise<void>)).toBe(bug);
    let got = 0;
    back.listen(() => got++);
    await front.write(new Uint8Array(60));
    await until(() => front.stats().txPackets === got && got > 0);
    await front.disconnect();
    await back.disconnect();
    closeAll(vif);
  });

  test("writable(len) refuses a length no frame may have, as write does, instead of waiting for ever", async () => {
    const vif = await simVif();
    const { back, front } = await vif.pair();
    const code = async (p: Promise<void>) => ((await failure(p)) as NetError).code;
    expect(await code(front.writable(Number.NaN))).toBe("BAD_ARGUMENT");
    expect(await code(front.writable(front.maxFrameSize + 1))).toBe("FRAME_TOO_LONG");
    expect(await code(front.writable(3))).toBe("FRAME_TOO_SHORT");
    await front.writable(front.maxFrameSize);
    await front.disconnect();
    await back.disconnect();
    closeAll(vif);
  });

  for (const mtu of [undefined, 1500, 9000]) {
    test(`mtu ${mtu ?? "(no key)"}: both ends report the vif's MTU`, async () => {
      const vif = await simVif();
      if (mtu !== undefined) {
        await vif.dom0.xenstore.write(`${vif.paths.frontPath}/mtu`, String(mtu));
        await vif.dom0.xenstore.write(`${vif.paths.backPath}/mtu`, String(mtu));
      }
      const { back, front } = await vif.pair();
      expect([front.mtu, back.mtu]).toEqual([mtu ?? 1500, mtu ?? 1500]);
      await front.disconnect();
      await back.disconnect();
      closeAll(vif);
    });
  }
});

describe("a device leaves nothing open behind it", () => {
  test("with the default platform, a failed connect and a closed pair let the process exit by itself", async () => {
    const script = `
      import { Netback, Netfront, createVif, defaultSimHypervisor } from "./src/main/index.ts";
      const e = await Netfront.connect({ devid: 3, timeoutMs: 100 }).catch((e) => e);
      console.log(e.code);
      const hv = defaultSimHypervisor();
      await createVif(hv.platform(0).xenstore, { frontDomid: 1, backDomid: 0, devid: 0, mac: "00:16:3e:00:00:01" });
      const [back, front] = await Promise.all([Netback.serve({ frontendDomid: 1 }), Netfront.connect()]);
      await front.disconnect();
      await back.disconnect();
      console.log("closed");
    `;
    const p = Bun.spawn([process.execPath, "-e", script], {
      cwd: `${import.meta.dir}/..`,
      env: { ...process.env, BUN_XEN_NET_LOG: "silent", BUN_XEN_NET_PLATFORM: "sim" },
      stdout: "pipe",
      timeout: 20_000,
    });
    expect((await new Response(p.stdout).text()).trim().split("\n")).toEqual(["NO_DEVICE", "closed"]);
    expect(await p.exited).toBe(0);
  }, 30_000);
});
