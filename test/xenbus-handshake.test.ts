/**
 * The xenbus handshake on the simulated hypervisor: frontend and backend run as two
 * independent async flows, each on its own domain's xenstore connection, with dom0 as the
 * toolstack. After every test: no watch left registered, every connection closed.
 */
import { afterEach, describe, expect, test } from "bun:test";
import { SimHypervisor, type SimPlatform } from "../src/platform/sim/index.ts";
import { PlatformError, type DomId, type XenStore, type XsTransaction, type XsWatch } from "../src/platform/types.ts";
import { ProtocolError } from "../src/protocol/errors.ts";
import { XenbusState } from "../src/protocol/xenbus.ts";
import {
  advertiseBackend,
  awaitBackend,
  awaitBackendConnected,
  awaitFrontend,
  closeBackend,
  closeFrontend,
  connectBackend,
  createVif,
  destroyVif,
  HandshakeError,
  publishFrontend,
  readState,
  resetBackendForReconnect,
  setState,
  waitForState,
  waitForValue,
  watchPeerState,
  type BackendFeatures,
  type BackendInfo,
  type CloseResult,
  type FrontendKeys,
  type HandshakeErrorCode,
  type WaitOptions,
} from "../src/main/xenbus/index.ts";
import { checkPathValue, uintKey } from "../src/main/xenbus/wait.ts";

// ---- harness ---------------------------------------------------------------------------------

/** A XenStore that counts the watches it holds, to prove none is left behind. */
class Tracked implements XenStore {
  live = 0;
  constructor(readonly inner: XenStore) {}
  read(p: string, tx?: XsTransaction) {
    return this.inner.read(p, tx);
  }
  write(p: string, v: string, tx?: XsTransaction) {
    return this.inner.write(p, v, tx);
  }
  mkdir(p: string, tx?: XsTransaction) {
    return this.inner.mkdir(p, tx);
  }
  directory(p: string, tx?: XsTransaction) {
    return this.inner.directory(p, tx);
  }
  rm(p: string, tx?: XsTransaction) {
    return this.inner.rm(p, tx);
  }
  getPerms(p: string, tx?: XsTransaction) {
    return this.inner.getPerms(p, tx);
  }
  setPerms(p: string, perms: Parameters<XenStore["setPerms"]>[1], tx?: XsTransaction) {
    return this.inner.setPerms(p, perms, tx);
  }
  async watch(p: string, token: string, cb: (path: string, token: string) => void): Promise<XsWatch> {
    const w = await this.inner.watch(p, token, cb);
    this.live++;
    let on = true;
    return {
      path: w.path,
      token: w.token,
      unwatch: () => {
        if (on) this.live--;
        on = false;
        w.unwatch();
      },
    };
  }
  transactionStart() {
    return this.inner.transactionStart();
  }
  transactionEnd(tx: XsTransaction, commit: boolean) {
    return this.inner.transactionEnd(tx, commit);
  }
  transaction<T>(fn: (tx: XsTransaction) => Promise<T>, maxRetries?: number) {
    return this.inner.transaction(fn, maxRetries);
  }
  close() {
    this.inner.close();
  }
}

const platforms: SimPlatform[] = [];
const stores: Tracked[] = [];

afterEach(() => {
  const leftover = stores.map((s) => s.live);
  for (const p of platforms.splice(0)) p.close();
  stores.splice(0);
  // Every handshake function unwatches before it settles, success or failure.
  expect(leftover.every((n) => n === 0)).toBe(true);
});

const MAC = "00:16:3e:12:34:56";
const FEATURES: BackendFeatures = { sg: true, gsoTcpv4: true, gsoTcpv6: false, splitEventChannels: false, maxQueues: 1 };
const FAST: WaitOptions = { timeoutMs: 3000 };

/** Domain `frontDomid` with a vif to `backDomid` (which is created unless it is dom0). */
async function setup(o: { backDomid?: DomId; split?: boolean; mtu?: number } = {}) {
  const hv = SimHypervisor.create();
  const frontDomid = hv.createDomain(1);
  const backDomid = o.backDomid ?? 0;
  if (backDomid !== 0) hv.createDomain(backDomid);
  const open = (d: DomId) => {
    const p = hv.platform(d);
    platforms.push(p);
    const xs = new Tracked(p.xenstore);
    stores.push(xs);
    return { p, xs };
  };
  const tool = open(0); // the toolstack's connection, also the "as dom0 reads it" view
  const front = open(frontDomid);
  const back = open(backDomid); // its own connection, even when the backend is dom0
  const paths = await createVif(tool.xs, { frontDomid, backDomid, devid: 0, mac: MAC, ...(o.mtu === undefined ? {} : { mtu: o.mtu }) });
  const features = { ...FEATURES, splitEventChannels: o.split ?? false };
  return { hv, frontDomid, backDomid, tool, front, back, features, ...paths };
}

type Env = Awaited<ReturnType<typeof setup>>;

function keysFor(info: BackendInfo, base = 10): FrontendKeys {
  return {
    queues: [{ txRingRef: base, rxRingRef: base + 1, eventChannel: info.features.splitEventChannels ? { tx: base + 2, rx: base + 3 } : base + 2 }],
    features: { sg: true, gsoTcpv4: true, gsoTcpv6: true, rxNotify: true, noCsumOffload: false, ipv6CsumOffload: true },
  };
}

/** netfront: find the backend, publish, wait for its Connected. */
async function frontendFlow(env: Env, base = 10, opts: WaitOptions = FAST) {
  const info = await awaitBackend(env.front.xs, env.frontPath, opts);
  await publishFrontend(env.front.xs, env.frontPath, keysFor(info, base), { numQueuesKey: info.features.multiQueue });
  await awaitBackendConnected(env.front.xs, info.backendPath, opts);
  return info;
}

/** netback: advertise, wait for the frontend's keys, connect. */
async function backendFlow(env: Env, opts: WaitOptions = FAST) {
  await advertiseBackend(env.back.xs, env.backPath, env.features);
  const fi = await awaitFrontend(env.back.xs, env.backPath, opts);
  await connectBackend(env.back.xs, env.backPath);
  return fi;
}

async function statesAsDom0(env: Env): Promise<[string | null, string | null]> {
  return [await env.tool.xs.read(`${env.frontPath}/state`), await env.tool.xs.read(`${env.backPath}/state`)];
}

async function rejection(p: Promise<unknown>): Promise<unknown> {
  try {
    await p;
  } catch (e) {
    return e;
  }
  throw new Error("expected a rejection");
}

async function expectHandshakeError(p: Promise<unknown>, code: HandshakeErrorCode, path?: string, value?: string | null): Promise<HandshakeError> {
  const e = await rejection(p);
  expect(e).toBeInstanceOf(HandshakeError);
  const he = e as HandshakeError;
  expect(he.code).toBe(code);
  if (path !== undefined) expect(he.path).toBe(path);
  if (value !== undefined) expect(he.value).toBe(value);
  return he;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

// ---- toolstack -------------------------------------------------------------------------------

describe("toolstack: createVif / destroyVif", () => {
  test("writes libxl's layout with each end owning its directory and reading the other", async () => {
    const env = await setup({ backDomid: 2, mtu: 9000 });
    const { tool, front, back, frontPath, backPath } = env;
    expect(frontPath).toBe("/local/domain/1/device/vif/0");
    expect(backPath).toBe("/local/domain/2/backend/vif/1/0");
    const dump = env.hv.xenstore.dump();
    expect(dump.get(`${frontPath}/backend`)).toBe(backPath);
    expect(dump.get(`${frontPath}/backend-id`)).toBe("2");
    expect(dump.get(`${frontPath}/mac`)).toBe(MAC);
    expect(dump.get(`${frontPath}/mtu`)).toBe("9000");
    expect(dump.get(`${frontPath}/state`)).toBe("1");
    expect(dump.get(`${backPath}/frontend`)).toBe(frontPath);
    expect(dump.get(`${backPath}/frontend-id`)).toBe("1");
    expect(dump.get(`${backPath}/online`)).toBe("1");
    expect(dump.get(`${backPath}/hotplug-status`)).toBe("connected");
    expect(await tool.xs.getPerms(frontPath)).toEqual([{ domid: 1, access: "n" }, { domid: 2, access: "r" }]);
    expect(await tool.xs.getPerms(`${backPath}/state`)).toEqual([{ domid: 2, access: "n" }, { domid: 1, access: "r" }]);
    // Each end writes its own directory, reads the other's, writes nothing of the other's.
    await front.xs.write(`${frontPath}/tx-ring-ref`, "8");
    await back.xs.write(`${backPath}/feature-sg`, "1");
    expect(await back.xs.read(`${frontPath}/tx-ring-ref`)).toBe("8");
    expect(await front.xs.read(`${backPath}/feature-sg`)).toBe("1");
    await expect(front.xs.write(`${backPath}/state`, "4")).rejects.toThrow(/EACCES/);
    await expect(back.xs.write(`${frontPath}/state`, "4")).rejects.toThrow(/EACCES/);
    // A third domain sees neither.
    env.hv.createDomain(3);
    const other = env.hv.platform(3);
    platforms.push(other);
    await expect(other.xenstore.read(`${frontPath}/mac`)).rejects.toThrow(/EACCES/);
    await expect(other.xenstore.read(`${backPath}/mac`)).rejects.toThrow(/EACCES/);
  });

  test("refuses a domain that does not exist, a bad MAC, a bad MTU", async () => {
    const hv = SimHypervisor.create();
    hv.createDomain(1);
    const p = hv.platform(0);
    platforms.push(p);
    await expect(createVif(p.xenstore, { frontDomid: 1, backDomid: 5, devid: 0, mac: MAC })).rejects.toThrow(/ENOENT.*domain 5/);
    await expect(createVif(p.xenstore, { frontDomid: 1, backDomid: 0, devid: 0, mac: "zz" })).rejects.toThrow(/EINVAL/);
    await expect(createVif(p.xenstore, { frontDomid: 1, backDomid: 0, devid: 0, mac: MAC, mtu: 10 })).rejects.toThrow(/EINVAL/);
    expect(await p.xenstore.read("/local/domain/1/device")).toBeNull();
  });

  test("destroyVif removes both; our state writes then do not re-create the directory", async () => {
    const env = await setup();
    await destroyVif(env.tool.xs, env.frontDomid, env.backDomid, 0);
    expect(await env.tool.xs.read(env.frontPath)).toBeNull();
    expect(await env.tool.xs.read(env.backPath)).toBeNull();
    expect(await setState(env.front.xs, env.frontPath, XenbusState.Closed)).toBe(false);
    await expectHandshakeError(publishFrontend(env.front.xs, env.frontPath, keysFor({ features: { splitEventChannels: false } } as BackendInfo)), "GONE");
    await expectHandshakeError(advertiseBackend(env.back.xs, env.backPath, FEATURES), "GONE");
    expect(await env.tool.xs.read(env.frontPath)).toBeNull();
    expect(await env.tool.xs.read(env.backPath)).toBeNull();
  });
});

// ---- the handshake ---------------------------------------------------------------------------

describe("handshake", () => {
  test("backend first: both ends Connected, every key carried across, with real grants and a channel", async () => {
    const env = await setup();
    await advertiseBackend(env.back.xs, env.backPath, env.features);
    expect(await env.tool.xs.read(`${env.backPath}/state`)).toBe("2");

    const backend = (async () => {
      const fi = await awaitFrontend(env.back.xs, env.backPath, FAST);
      // Map what the frontend shared and bind its port: the keys must be the real ones.
      const q = fi.queues[0]!;
      const mapped = env.back.p.gnttab.map(fi.frontendId, [q.txRingRef, q.rxRingRef], true);
      const ev = env.back.p.openEventChannels();
      const port = ev.bindInterdomain(fi.frontendId, q.eventChannel.tx);
      await connectBackend(env.back.xs, env.backPath);
      return { fi, mapped, ev, port };
    })();
    const frontend = (async () => {
      const info = await awaitBackend(env.front.xs, env.frontPath, FAST);
      const shared = env.front.p.gnttab.share(info.backendId, 2, true);
      const ev = env.front.p.openEventChannels();
      const port = ev.allocUnbound(info.backendId);
      const [tx, rx] = shared.refs as [number, number];
      await publishFrontend(
        env.front.xs,
        env.frontPath,
        { queues: [{ txRingRef: tx, rxRingRef: rx, eventChannel: port }], features: { sg: true, gsoTcpv4: true, gsoTcpv6: false, rxNotify: true, noCsumOffload: false, ipv6CsumOffload: false } },
        { numQueuesKey: info.features.multiQueue },
      );
      await awaitBackendConnected(env.front.xs, info.backendPath, FAST);
      return { info, shared, ev, port };
    })();
    const [b, f] = await Promise.all([backend, frontend]);

    expect(f.info).toEqual({
      backendId: 0,
      backendPath: env.backPath,
      mac: Uint8Array.from([0x00, 0x16, 0x3e, 0x12, 0x34, 0x56]),
      mtu: 1500,
      features: { rxCopy: true, sg: true, gsoTcpv4: true, gsoTcpv6: false, splitEventChannels: false, maxQueues: 1, ctrlRing: false, multiQueue: true },
    });
    expect(b.fi).toEqual({
      frontendId: 1,
      frontendPath: env.frontPath,
      mac: Uint8Array.from([0x00, 0x16, 0x3e, 0x12, 0x34, 0x56]),
      mtu: 1500,
      queues: [{ txRingRef: f.shared.refs[0] as number, rxRingRef: f.shared.refs[1] as number, eventChannel: { tx: f.port, rx: f.port, split: false } }],
      features: { sg: true, gsoTcpv4: true, gsoTcpv6: false, rxNotify: true, noCsumOffload: false, ipv6CsumOffload: false },
    });
    // The page is really shared, the channel really bound.
    f.shared.pages[0]?.set([7, 7]);
    expect(Array.from(b.mapped.pages[0]?.subarray(0, 2) ?? [])).toEqual([7, 7]);
    // Linux netfront writes multi-queue-num-queues because the backend wrote multi-queue-max-queues.
    expect(await env.tool.xs.read(`${env.frontPath}/multi-queue-num-queues`)).toBe("1");
    expect(await env.tool.xs.read(`${env.frontPath}/request-rx-copy`)).toBe("1");
    expect(await statesAsDom0(env)).toEqual(["4", "4"]);

    env.back.p.gnttab.unmap(b.mapped);
    b.ev.close();
    f.ev.close();
    env.front.p.gnttab.unshare(f.shared);
    env.hv.assertNoLeaks();
  });

  test("frontend first: awaitBackend waits for the backend's InitWait", async () => {
    const env = await setup();
    let found = false;
    const frontend = frontendFlow(env).then((i) => ((found = true), i));
    await sleep(40);
    expect(found).toBe(false);
    expect(await env.tool.xs.read(`${env.frontPath}/tx-ring-ref`)).toBeNull();
    const [info] = await Promise.all([frontend, backendFlow(env)]);
    expect(info.backendId).toBe(0);
    expect(await statesAsDom0(env)).toEqual(["4", "4"]);
  });

  test("driver domain (backend in domain 2), split event channels, MTU from the toolstack", async () => {
    const env = await setup({ backDomid: 2, split: true, mtu: 9000 });
    const [info, fi] = await Promise.all([frontendFlow(env, 20), backendFlow(env)]);
    expect(info.backendId).toBe(2);
    expect(info.backendPath).toBe("/local/domain/2/backend/vif/1/0");
    expect(info.mtu).toBe(9000);
    expect(info.features.splitEventChannels).toBe(true);
    expect(fi.queues[0]!.eventChannel).toEqual({ tx: 22, rx: 23, split: true });
    expect(await env.tool.xs.read(`${env.frontPath}/event-channel`)).toBeNull();
    expect(await statesAsDom0(env)).toEqual(["4", "4"]);
  });

  test("split keys are ignored when the backend did not offer split channels", async () => {
    const env = await setup();
    await advertiseBackend(env.back.xs, env.backPath, env.features);
    const w = env.front.xs;
    for (const [k, v] of Object.entries({ "tx-ring-ref": "1", "rx-ring-ref": "2", "event-channel": "5", "event-channel-tx": "6", "event-channel-rx": "7", "request-rx-copy": "1" })) {
      await w.write(`${env.frontPath}/${k}`, v);
    }
    await setState(w, env.frontPath, XenbusState.Initialised);
    const fi = await awaitFrontend(env.back.xs, env.backPath, FAST);
    expect(fi.queues[0]!.eventChannel).toEqual({ tx: 5, rx: 5, split: false });
    // Initialised is enough for the backend; the frontend did not write multi-queue-num-queues: one queue.
    expect(fi.features.sg).toBe(false);
  });

  test("backend-id and backend written late, in either order: resolves only once both exist", async () => {
    for (const order of [["backend-id", "backend"], ["backend", "backend-id"]] as const) {
      const env = await setup();
      const values = { "backend-id": "0", backend: env.backPath };
      await env.tool.xs.rm(`${env.frontPath}/backend-id`);
      await env.tool.xs.rm(`${env.frontPath}/backend`);
      await advertiseBackend(env.back.xs, env.backPath, env.features);
      let at = 0;
      const t0 = performance.now();
      const p = awaitBackend(env.front.xs, env.frontPath, FAST).then((i) => ((at = performance.now() - t0), i));
      await sleep(25);
      await env.tool.xs.write(`${env.frontPath}/${order[0]}`, values[order[0]]);
      await sleep(25);
      expect(at).toBe(0);
      await env.tool.xs.write(`${env.frontPath}/${order[1]}`, values[order[1]]);
      const info = await p;
      expect(at).toBeGreaterThanOrEqual(45);
      expect(info.backendPath).toBe(env.backPath);
      for (const pl of platforms.splice(0)) pl.close();
    }
  });

  test("EAGAIN: publishFrontend retries through 3 conflicts", async () => {
    const env = await setup();
    await advertiseBackend(env.back.xs, env.backPath, env.features);
    const info = await awaitBackend(env.front.xs, env.frontPath, FAST);
    env.hv.xenstore.failNextCommits(3, { domid: 1 });
    await publishFrontend(env.front.xs, env.frontPath, keysFor(info), { maxRetries: 3 });
    expect(await env.tool.xs.read(`${env.frontPath}/tx-ring-ref`)).toBe("10");
    expect(await env.tool.xs.read(`${env.frontPath}/state`)).toBe("4");
  });

  test("EAGAIN: more conflicts than retries → XENSTORE with the EAGAIN as cause, nothing written", async () => {
    const env = await setup();
    await advertiseBackend(env.back.xs, env.backPath, env.features);
    const info = await awaitBackend(env.front.xs, env.frontPath, FAST);
    env.hv.xenstore.failNextCommits(5, { domid: 1 });
    const e = await expectHandshakeError(publishFrontend(env.front.xs, env.frontPath, keysFor(info), { maxRetries: 3 }), "XENSTORE", env.frontPath);
    expect(e.cause).toBeInstanceOf(PlatformError);
    expect((e.cause as PlatformError).code).toBe("EAGAIN");
    env.hv.xenstore.failNextCommits(0);
    expect(await env.tool.xs.read(`${env.frontPath}/tx-ring-ref`)).toBeNull();
    expect(await env.tool.xs.read(`${env.frontPath}/state`)).toBe("1");
  });

  test("a real conflict: dom0 writes into the frontend dir during the transaction, the retry wins", async () => {
    const env = await setup();
    await advertiseBackend(env.back.xs, env.backPath, env.features);
    const info = await awaitBackend(env.front.xs, env.frontPath, FAST);
    // Interpose on the transaction that carries the ring keys: its first attempt meets a
    // concurrent change to a node it read, so its commit conflicts and it must run again.
    let attempts = 0;
    const xs = env.front.xs;
    const orig = xs.transaction.bind(xs);
    xs.transaction = <T>(fn: (tx: XsTransaction) => Promise<T>, maxRetries?: number) =>
      orig(async (tx) => {
        const r = await fn(tx);
        const key = `${env.frontPath}/tx-ring-ref`;
        const carriesKeys = (await xs.read(key, tx)) !== null && (await env.tool.xs.read(key)) === null;
        if (carriesKeys && attempts++ === 0) {
          await env.tool.xs.write(`${env.frontPath}/state`, "1");
        }
        return r;
      }, maxRetries);
    await publishFrontend(xs, env.frontPath, keysFor(info));
    expect(attempts).toBe(2);
    expect(await env.tool.xs.read(`${env.frontPath}/state`)).toBe("4");
  });
});

// ---- refusals --------------------------------------------------------------------------------

describe("handshake refusals", () => {
  test("backend without feature-rx-copy → NO_RX_COPY naming the key", async () => {
    for (const v of [null, "0"]) {
      const env = await setup();
      await advertiseBackend(env.back.xs, env.backPath, env.features);
      const p = `${env.backPath}/feature-rx-copy`;
      if (v === null) await env.back.xs.rm(p);
      else await env.back.xs.write(p, v);
      await expectHandshakeError(awaitBackend(env.front.xs, env.frontPath, FAST), "NO_RX_COPY", p, v);
      for (const pl of platforms.splice(0)) pl.close();
    }
  });

  test("frontend without request-rx-copy → NO_RX_COPY", async () => {
    const env = await setup();
    await advertiseBackend(env.back.xs, env.backPath, env.features);
    const info = await awaitBackend(env.front.xs, env.frontPath, FAST);
    await publishFrontend(env.front.xs, env.frontPath, keysFor(info));
    await env.front.xs.rm(`${env.frontPath}/request-rx-copy`);
    await expectHandshakeError(awaitFrontend(env.back.xs, env.backPath, FAST), "NO_RX_COPY", `${env.frontPath}/request-rx-copy`, null);
  });

  /** Keys the frontend reads: [dir ("front" | "back"), key, value (null = remove), path at fault]. */
  test.each([
    ["front", "mac", "zz", "mac"],
    ["front", "mac", null, "mac"],
    ["front", "mtu", "10", "mtu"],
    ["front", "mtu", "70000", "mtu"],
    ["front", "backend-id", "x", "backend-id"],
    ["front", "backend-id", "2", "backend"], // the backend path is not in domain 2's tree
    ["front", "backend", "relative/path", "backend"],
    ["back", "multi-queue-max-queues", "0", "multi-queue-max-queues"],
    ["back", "state", "9", "state"],
  ] as const)("frontend side: %s/%s = %p → error naming %s", async (dir, key, value, faultKey) => {
    const env = await setup();
    await advertiseBackend(env.back.xs, env.backPath, env.features);
    const base = dir === "front" ? env.frontPath : env.backPath;
    if (value === null) await env.tool.xs.rm(`${base}/${key}`);
    else await env.tool.xs.write(`${base}/${key}`, value);
    const faultPath = `${base}/${faultKey}`;
    const faultValue = faultKey === key ? value : await env.tool.xs.read(faultPath);
    const e = await expectHandshakeError(awaitBackend(env.front.xs, env.frontPath, FAST), key === "state" ? "BAD_STATE" : "BAD_KEY", faultPath, faultValue);
    expect(e.message).toContain(faultPath);
  });

  /** Keys the backend reads from the frontend dir. */
  test.each([
    ["tx-ring-ref", "abc", "tx-ring-ref"],
    ["rx-ring-ref", "-1", "rx-ring-ref"],
    ["rx-ring-ref", "4294967296", "rx-ring-ref"],
    ["event-channel", null, "event-channel"],
    ["event-channel", "0", "event-channel"],
    ["multi-queue-num-queues", "2", "multi-queue-num-queues"],
    ["multi-queue-num-queues", "0", "multi-queue-num-queues"],
  ] as const)("backend side: %s = %p → BAD_KEY naming it", async (key, value, faultKey) => {
    const env = await setup();
    await advertiseBackend(env.back.xs, env.backPath, env.features);
    const info = await awaitBackend(env.front.xs, env.frontPath, FAST);
    await publishFrontend(env.front.xs, env.frontPath, keysFor(info));
    if (value === null) await env.front.xs.rm(`${env.frontPath}/${key}`);
    else await env.front.xs.write(`${env.frontPath}/${key}`, value);
    await expectHandshakeError(awaitFrontend(env.back.xs, env.backPath, FAST), "BAD_KEY", `${env.frontPath}/${faultKey}`, value);
  });

  test("backend side: a frontend path outside the frontend's domain → BAD_KEY", async () => {
    const env = await setup();
    await env.tool.xs.write(`${env.backPath}/frontend`, "/local/domain/7/device/vif/0");
    await expectHandshakeError(awaitFrontend(env.back.xs, env.backPath, FAST), "BAD_KEY", `${env.backPath}/frontend`, "/local/domain/7/device/vif/0");
  });

  test("backend side: a bad mac in the backend dir → BAD_KEY", async () => {
    const env = await setup();
    await env.tool.xs.write(`${env.backPath}/mac`, "00:16:3e:12:34");
    const backend = backendFlow(env);
    const front = frontendFlow(env, 10, { timeoutMs: 300 });
    await expectHandshakeError(backend, "BAD_KEY", `${env.backPath}/mac`, "00:16:3e:12:34");
    // The frontend never sees Connected: it times out, bounded.
    await expectHandshakeError(front, "TIMEOUT");
  });

  test("awaitBackendConnected: a backend that closes instead → PEER_CLOSED", async () => {
    const env = await setup();
    await advertiseBackend(env.back.xs, env.backPath, env.features);
    const info = await awaitBackend(env.front.xs, env.frontPath, FAST);
    await publishFrontend(env.front.xs, env.frontPath, keysFor(info));
    const p = awaitBackendConnected(env.front.xs, env.backPath, FAST);
    await setState(env.back.xs, env.backPath, XenbusState.Closed);
    await expectHandshakeError(p, "PEER_CLOSED", `${env.backPath}/state`, "6");
  });

  test("publishFrontend refuses nonsense from its caller", async () => {
    const env = await setup();
    const k = keysFor({ features: { splitEventChannels: false } } as BackendInfo);
    await expect(publishFrontend(env.front.xs, env.frontPath, { ...k, queues: [{ ...k.queues[0]!, txRingRef: -1 }] })).rejects.toThrow(RangeError);
    await expect(publishFrontend(env.front.xs, env.frontPath, { ...k, queues: [{ ...k.queues[0]!, eventChannel: 0 }] })).rejects.toThrow(RangeError);
    await expect(publishFrontend(env.front.xs, env.frontPath, { ...k, queues: [] })).rejects.toThrow(RangeError);
    await expect(advertiseBackend(env.back.xs, env.backPath, { ...FEATURES, maxQueues: 0 })).rejects.toThrow(RangeError);
    await expect(advertiseBackend(env.back.xs, env.backPath, { ...FEATURES, maxQueues: 65 })).rejects.toThrow(RangeError);
  });
});

// ---- bounds ----------------------------------------------------------------------------------

describe("timeouts and aborts", () => {
  test("awaitBackend with no backend → TIMEOUT within the bound", async () => {
    const env = await setup();
    const t0 = performance.now();
    await expectHandshakeError(awaitBackend(env.front.xs, env.frontPath, { timeoutMs: 150 }), "TIMEOUT", `${env.backPath}/state`);
    const dt = performance.now() - t0;
    expect(dt).toBeGreaterThanOrEqual(140);
    expect(dt).toBeLessThan(1000);
  });

  test("one budget for the whole call: keys late, then no InitWait → TIMEOUT at the bound, not twice it", async () => {
    const env = await setup();
    await env.tool.xs.rm(`${env.frontPath}/backend-id`);
    setTimeout(() => void env.tool.xs.write(`${env.frontPath}/backend-id`, "0"), 100);
    const t0 = performance.now();
    await expectHandshakeError(awaitBackend(env.front.xs, env.frontPath, { timeoutMs: 200 }), "TIMEOUT");
    const dt = performance.now() - t0;
    expect(dt).toBeGreaterThanOrEqual(190);
    expect(dt).toBeLessThan(350);
  });

  test("awaitFrontend with a silent frontend → TIMEOUT; waitForValue → TIMEOUT", async () => {
    const env = await setup();
    await advertiseBackend(env.back.xs, env.backPath, env.features);
    await expectHandshakeError(awaitFrontend(env.back.xs, env.backPath, { timeoutMs: 100 }), "TIMEOUT", `${env.frontPath}/state`);
    await expectHandshakeError(waitForValue(env.front.xs, `${env.frontPath}/nothing`, (v) => v !== null, { timeoutMs: 50 }), "TIMEOUT");
  });

  test("abort while waiting → ABORTED at once; an already aborted signal registers no watch", async () => {
    const env = await setup();
    const ac = new AbortController();
    setTimeout(() => ac.abort(new Error("shutting down")), 30);
    const t0 = performance.now();
    const e = await expectHandshakeError(awaitBackend(env.front.xs, env.frontPath, { timeoutMs: 5000, signal: ac.signal }), "ABORTED");
    expect(performance.now() - t0).toBeLessThan(1000);
    expect((e.cause as Error).message).toBe("shutting down");
    const watched = env.back.xs.live;
    await expectHandshakeError(awaitFrontend(env.back.xs, env.backPath, { signal: ac.signal }), "ABORTED");
    await expectHandshakeError(publishFrontend(env.front.xs, env.frontPath, keysFor({ features: { splitEventChannels: false } } as BackendInfo), { signal: ac.signal }), "ABORTED");
    expect(env.back.xs.live).toBe(watched);
    expect(await env.tool.xs.read(`${env.frontPath}/tx-ring-ref`)).toBeNull();
  });

  test("a bad timeout is the caller's error", async () => {
    const env = await setup();
    await expect(awaitBackend(env.front.xs, env.frontPath, { timeoutMs: -1 })).rejects.toThrow(RangeError);
    await expect(waitForState(env.front.xs, `${env.frontPath}/state`, () => true, { timeoutMs: Number.NaN })).rejects.toThrow(RangeError);
  });
});

// ---- close and reconnect ---------------------------------------------------------------------

/** Connect, then return the environment. */
async function connected(o: Parameters<typeof setup>[0] = {}) {
  const env = await setup(o);
  await Promise.all([frontendFlow(env), backendFlow(env)]);
  return env;
}

/** A netback that follows the frontend as Linux does: its Closing → closeBackend. */
async function backendFollower(env: Env) {
  let closing: Promise<unknown> | null = null;
  const w = await watchPeerState(env.back.xs, `${env.frontPath}/state`, (s) => {
    if ((s === XenbusState.Closing || s === XenbusState.Closed) && closing === null) closing = closeBackend(env.back.xs, env.backPath, FAST);
  });
  return {
    done: async () => {
      while (closing === null) await sleep(1);
      const r = await closing;
      w.unwatch();
      return r;
    },
  };
}

describe("close", () => {
  test("frontend-initiated: both end Closed, both acknowledged", async () => {
    const env = await connected();
    const follower = await backendFollower(env);
    const r = await closeFrontend(env.front.xs, env.frontPath, env.backPath, FAST);
    expect(r).toEqual({ acknowledged: true, peerState: XenbusState.Closed });
    expect(await follower.done()).toEqual({ acknowledged: true, peerState: expect.any(Number) });
    expect(await statesAsDom0(env)).toEqual(["6", "6"]);
  });

  test("backend-initiated: the frontend follows the backend's Closing", async () => {
    const env = await connected({ backDomid: 2 });
    const fclose: { p: Promise<CloseResult> | null } = { p: null };
    const w = await watchPeerState(env.front.xs, `${env.backPath}/state`, (s) => {
      if (s === XenbusState.Closing && fclose.p === null) fclose.p = closeFrontend(env.front.xs, env.frontPath, env.backPath, FAST);
    });
    const r = await closeBackend(env.back.xs, env.backPath, FAST);
    expect(r.acknowledged).toBe(true);
    while (fclose.p === null) await sleep(1);
    expect(await fclose.p).toEqual({ acknowledged: true, peerState: XenbusState.Closed });
    w.unwatch();
    expect(await statesAsDom0(env)).toEqual(["6", "6"]);
  });

  test("a backend that jumps straight to Closed (no Closing)", async () => {
    const env = await connected();
    const w = await watchPeerState(env.back.xs, `${env.frontPath}/state`, (s) => {
      if (s === XenbusState.Closing) void setState(env.back.xs, env.backPath, XenbusState.Closed);
    });
    const t0 = performance.now();
    const r = await closeFrontend(env.front.xs, env.frontPath, env.backPath, FAST);
    w.unwatch();
    expect(r).toEqual({ acknowledged: true, peerState: XenbusState.Closed });
    // Answered at once, not found at the deadline.
    expect(performance.now() - t0).toBeLessThan(1000);
    expect(await statesAsDom0(env)).toEqual(["6", "6"]);
  });

  test("a frontend that jumps straight to Closed: the backend's close completes", async () => {
    const env = await connected();
    await setState(env.front.xs, env.frontPath, XenbusState.Closed);
    const t0 = performance.now();
    const r = await closeBackend(env.back.xs, env.backPath, FAST);
    expect(r).toEqual({ acknowledged: true, peerState: XenbusState.Closed });
    expect(performance.now() - t0).toBeLessThan(1000);
    expect(await statesAsDom0(env)).toEqual(["6", "6"]);
  });

  test("a silent backend: closeFrontend gives up at the bound, leaves Closed, unacknowledged", async () => {
    const env = await connected();
    const t0 = performance.now();
    const r = await closeFrontend(env.front.xs, env.frontPath, env.backPath, { timeoutMs: 150 });
    const dt = performance.now() - t0;
    expect(r).toEqual({ acknowledged: false, peerState: XenbusState.Connected });
    expect(dt).toBeGreaterThanOrEqual(140);
    expect(dt).toBeLessThan(1000);
    expect(await statesAsDom0(env)).toEqual(["6", "4"]);
  });

  test("a backend whose directory vanished counts as gone (Unknown)", async () => {
    const env = await connected();
    await env.tool.xs.rm(env.backPath);
    expect(await closeFrontend(env.front.xs, env.frontPath, env.backPath, FAST)).toEqual({ acknowledged: true, peerState: XenbusState.Unknown });
    expect(await env.tool.xs.read(`${env.frontPath}/state`)).toBe("6");
  });

  test("abort during close: our end is still left Closed, then ABORTED", async () => {
    const env = await connected();
    const ac = new AbortController();
    setTimeout(() => ac.abort(), 30);
    await expectHandshakeError(closeFrontend(env.front.xs, env.frontPath, env.backPath, { signal: ac.signal }), "ABORTED");
    expect(await statesAsDom0(env)).toEqual(["6", "4"]);
  });

  test("a closeBackend with no usable frontend key only switches states", async () => {
    const env = await connected();
    await env.tool.xs.rm(`${env.backPath}/frontend`);
    expect(await closeBackend(env.back.xs, env.backPath, FAST)).toEqual({ acknowledged: false, peerState: null });
    expect(await env.tool.xs.read(`${env.backPath}/state`)).toBe("6");
  });
});

describe("reconnect", () => {
  test("close both, reset the backend, handshake again: Connected with the new keys", async () => {
    const env = await connected({ split: true });
    const follower = await backendFollower(env);
    expect((await closeFrontend(env.front.xs, env.frontPath, env.backPath, FAST)).acknowledged).toBe(true);
    await follower.done();
    expect(await statesAsDom0(env)).toEqual(["6", "6"]);

    expect(await resetBackendForReconnect(env.back.xs, env.backPath, { ...env.features, splitEventChannels: false })).toBe(true);
    expect(await env.tool.xs.read(`${env.backPath}/state`)).toBe("2");
    // The frontend starts over from Initialising, as Linux netfront does on resume.
    await setState(env.front.xs, env.frontPath, XenbusState.Initialising);
    const backend = (async () => {
      const fi = await awaitFrontend(env.back.xs, env.backPath, FAST);
      await connectBackend(env.back.xs, env.backPath);
      return fi;
    })();
    const [info, fi] = await Promise.all([frontendFlow(env, 100), backend]);
    expect(info.features.splitEventChannels).toBe(false);
    expect(fi.queues).toEqual([{ txRingRef: 100, rxRingRef: 101, eventChannel: { tx: 102, rx: 102, split: false } }]);
    // The split keys of the first connection are gone.
    expect(await env.tool.xs.read(`${env.frontPath}/event-channel-tx`)).toBeNull();
    expect(await statesAsDom0(env)).toEqual(["4", "4"]);
  });

  test("no reset when the toolstack took the device offline", async () => {
    const env = await connected();
    await setState(env.front.xs, env.frontPath, XenbusState.Closed);
    await closeBackend(env.back.xs, env.backPath, FAST);
    await env.tool.xs.write(`${env.backPath}/online`, "0");
    expect(await resetBackendForReconnect(env.back.xs, env.backPath, env.features)).toBe(false);
    expect(await env.tool.xs.read(`${env.backPath}/state`)).toBe("6");
  });
});

// ---- watchPeerState and the wait helpers -----------------------------------------------------

describe("watchPeerState", () => {
  test("delivers the current state, then each change once; garbage goes to onError; unwatch stops it", async () => {
    const env = await setup();
    const seen: number[] = [];
    const errors: unknown[] = [];
    const statePath = `${env.frontPath}/state`;
    const w = await watchPeerState(env.back.xs, statePath, (s) => seen.push(s), (e) => errors.push(e));
    const until = async (n: number) => {
      for (let i = 0; i < 300 && seen.length < n; i++) await sleep(2);
    };
    await until(1);
    for (const v of ["1", "1", "3", "3", "3", "4"]) {
      await env.front.xs.write(statePath, v);
      await sleep(5);
    }
    await until(3);
    await env.front.xs.write(statePath, "banana");
    await sleep(20);
    expect(errors).toHaveLength(1);
    expect(errors[0]).toBeInstanceOf(HandshakeError);
    expect((errors[0] as HandshakeError).code).toBe("BAD_STATE");
    w.unwatch();
    await env.front.xs.write(statePath, "5");
    await sleep(20);
    expect(seen).toEqual([1, 3, 4]);
  });
});

describe("parse error paths (unit)", () => {
  test("uintKey: missing, not decimal, too big, too small", () => {
    for (const [v, max, min] of [[null, 10, 0], ["1x", 10, 0], ["11", 10, 0], ["0", 10, 1]] as const) {
      let err: unknown = null;
      try {
        uintKey("/p/k", v, max, min);
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(HandshakeError);
      const he = err as HandshakeError;
      expect([he.code, he.path, he.value]).toEqual(["BAD_KEY", "/p/k", v]);
      expect(he.message).toContain("/p/k");
    }
    expect(uintKey("/p/k", " 7 ", 10)).toBe(7);
  });

  test("a parse helper's ProtocolError is kept as the cause", () => {
    let err: unknown = null;
    try {
      uintKey("/p/k", "abc", 10);
    } catch (e) {
      err = e;
    }
    expect((err as HandshakeError).cause).toBeInstanceOf(ProtocolError);
  });

  test("checkPathValue: missing, relative, trailing slash", () => {
    expect(() => checkPathValue("/p/backend", null)).toThrow(/BAD_KEY: \/p\/backend/);
    expect(() => checkPathValue("/p/backend", "local/domain/0")).toThrow(/BAD_KEY/);
    expect(() => checkPathValue("/p/backend", "/local/domain/0/")).toThrow(/BAD_KEY/);
    expect(checkPathValue("/p/backend", "/local/domain/0/backend/vif/1/0")).toBe("/local/domain/0/backend/vif/1/0");
  });

  test("readState: missing is Unknown, garbage is BAD_STATE with path and value, no waiting", async () => {
    const env = await setup();
    expect(await readState(env.front.xs, `${env.frontPath}/nostate`)).toBe(XenbusState.Unknown);
    await env.front.xs.write(`${env.frontPath}/state`, "12");
    await expectHandshakeError(readState(env.front.xs, `${env.frontPath}/state`), "BAD_STATE", `${env.frontPath}/state`, "12");
    await expectHandshakeError(waitForState(env.front.xs, `${env.frontPath}/state`, () => false, FAST), "BAD_STATE", `${env.frontPath}/state`, "12");
  });

  test("a xenstore refusal while waiting → XENSTORE with the PlatformError", async () => {
    const env = await setup();
    // Domain 1 may not read dom0's private tree.
    const e = await expectHandshakeError(waitForValue(env.front.xs, "/local/domain/0/secret", () => true, FAST), "XENSTORE");
    expect((e.cause as PlatformError).code).toBe("EACCES");
  });
});
