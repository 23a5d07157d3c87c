/**
 * What Bun and TypeScript users expect of a device: bounded buffering whatever mix of listen()
 * and frames() they take, AbortSignal on the calls that wait, link events.
 */
import { describe, expect, test } from "bun:test";
import { NetError, type Netback, type Netfront } from "../src/main/index.ts";
import { simVif, withSimPair } from "./helpers/vif.ts";
import { until } from "./helpers/until.ts";


/** Write `n` numbered frames from `dev` without waiting on each (the writes queue behind each other). */
function sendNumbered(dev: Netback | Netfront, n: number): Promise<void[]> {
  const ws: Promise<void>[] = [];
  for (let i = 0; i < n; i++) {
    const f = new Uint8Array(64);
    new DataView(f.buffer).setUint32(20, i);
    ws.push(dev.write(f));
  }
  return Promise.all(ws);
}

/**
 * Offer frames until nothing more is taken, even after the workers had time to move what they
 * could (into the ring, the peer's queue): the send path is full then. Returns how many were taken.
 */
async function fillUp(dev: Netback | Netfront, frame: (n: number) => Uint8Array): Promise<number> {
  let n = 0;
  for (;;) {
    const before = n;
    while (dev.tryWrite(frame(n))) n++;
    await Bun.sleep(100);
    if (n === before) return n;
  }
}

const seq = (f: Uint8Array) => new DataView(f.buffer, f.byteOffset, f.byteLength).getUint32(20);

describe("bounded buffering", () => {
  test("a listener and an iterator nobody reads: receiving pauses (bounded), nothing is lost, all arrives once read", async () => {
    await withSimPair(async ({ front, back }) => {
      const N = 20_000;
      let heard = 0;
      front.listen(() => heard++);
      const it = front.frames();
      const sent = sendNumbered(back, N);
      // The iterator holds 4096 at most; the queue and the ring a few hundred more.
      await until(() => heard >= 4096);
      await Bun.sleep(300);
      const paused = heard;
      expect(paused).toBeLessThan(4096 + 2000);
      await Bun.sleep(200);
      expect(heard).toBe(paused);
      // Read it all: every frame, in order, and the listener saw each too.
      const got: number[] = [];
      for await (const f of it) {
        got.push(seq(f));
        if (got.length === N) break;
      }
      await sent;
      expect(got).toEqual(Array.from({ length: N }, (_, i) => i));
      expect(heard).toBe(N);
      expect(front.stats().rxDrops).toBe(0);
    });
  }, 30_000);

  test("two iterators, one behind: the other is held back with it, neither loses a frame", async () => {
    await withSimPair(async ({ front, back }) => {
      const N = 12_000;
      const slow = front.frames();
      const fast = front.frames();
      const sent = sendNumbered(back, N);
      const fastGot: number[] = [];
      const reading = (async () => {
        for await (const f of fast) {
          fastGot.push(seq(f));
          if (fastGot.length === N) break;
        }
      })();
      await until(() => fastGot.length >= 4096);
      await Bun.sleep(300);
      expect(fastGot.length).toBeLessThan(4096 + 2000);
      const slowGot: number[] = [];
      for await (const f of slow) {
        slowGot.push(seq(f));
        if (slowGot.length === N) break;
      }
      await reading;
      await sent;
      expect(slowGot).toEqual(Array.from({ length: N }, (_, i) => i));
      expect(fastGot).toEqual(slowGot);
    });
  }, 30_000);

  test("an iterator that is ended no longer holds receiving back", async () => {
    await withSimPair(async ({ front, back }) => {
      const N = 10_000;
      let heard = 0;
      front.listen(() => heard++);
      const it = front.frames();
      const sent = sendNumbered(back, N);
      await until(() => heard >= 4096);
      await it.return!();
      await sent;
      await until(() => heard === N);
      expect(front.stats().rxDrops).toBe(0);
    });
  }, 30_000);
});

describe("AbortSignal", () => {
  test("frames({ signal }) ends the iteration when aborted, and at once when already aborted", async () => {
    await withSimPair(async ({ front, back }) => {
      const ac = new AbortController();
      const got: number[] = [];
      const done = (async () => {
        for await (const f of front.frames({ signal: ac.signal })) got.push(f[0]!);
        return "ended";
      })();
      await back.write(new Uint8Array(60).fill(7));
      await until(() => got.length === 1);
      ac.abort();
      expect(await done).toBe("ended");
      const it = front.frames({ signal: AbortSignal.abort() });
      expect((await it.next()).done).toBe(true);
      expect(() => front.frames({ signal: "no" as unknown as AbortSignal })).toThrow(NetError);
    });
  });

  test("write({ signal }) aborted while it waits for room: rejects with ABORTED and is never sent; earlier and later frames are", async () => {
    await withSimPair(async ({ front, back }) => {
      // Nobody reads at the back end yet: the ring and the queue fill, and writes wait.
      const writes: Promise<void>[] = [];
      let i = 0;
      const frame = (n: number) => {
        const f = new Uint8Array(1514);
        new DataView(f.buffer).setUint32(20, n);
        return f;
      };
      i = await fillUp(front, frame);
      const queued = i;
      const ac = new AbortController();
      const waiting = front.write(frame(1_000_000), { signal: ac.signal });
      const wr = await Promise.race([waiting.then(() => "resolved"), Bun.sleep(100).then(() => "waiting")]);
      expect(wr).toBe("waiting");
      ac.abort(new Error("changed my mind"));
      const e = await waiting.then(() => null, (x: unknown) => x);
      expect(e).toBeInstanceOf(NetError);
      expect((e as NetError).code).toBe("ABORTED");
      expect(((e as NetError).cause as Error).message).toBe("changed my mind");
      // Already aborted: refused at once, even with room.
      const pre = await front.write(frame(2_000_000), { signal: AbortSignal.abort() }).then(() => null, (x: NetError) => x.code);
      expect(pre).toBe("ABORTED");
      writes.push(front.write(frame(queued)));
      const got: number[] = [];
      back.listen((f) => got.push(seq(f)));
      await Promise.all(writes);
      await until(() => got.length === queued + 1);
      await Bun.sleep(50);
      expect(got).toEqual(Array.from({ length: queued + 1 }, (_, n) => n));
      expect(front.stats().txDrops).toBe(0);
    });
  });

  test("writable({ signal }) rejects with ABORTED when aborted while the queue is full", async () => {
    await withSimPair(async ({ front, back }) => {
      await fillUp(front, () => new Uint8Array(1514));
      const ac = new AbortController();
      const w = front.writable(1514, { signal: AbortSignal.any([ac.signal, AbortSignal.timeout(5000)]) });
      setTimeout(() => ac.abort(), 50);
      const code = await w.then(() => "writable", (x: NetError) => x.code);
      expect(code).toBe("ABORTED");
      await expect(front.writable(1514, { signal: 5 as unknown as AbortSignal })).rejects.toThrow("BAD_ARGUMENT");
      // Reading at the back end frees room: writable with a live signal resolves.
      back.listen(() => {});
      await front.writable(1514, { signal: AbortSignal.timeout(5000) });
    });
  });
});

describe("link events", () => {
  test("front end: connected, then lost + reconnecting when its back end leaves, reconnected when one comes back, closed with why", async () => {
    const vif = await simVif();
    const serving = vif.serve();
    const front = await vif.connect({ awaitBackend: false });
    const heard: string[] = [];
    const off = front.onLink((e) => heard.push(e.type));
    const it = front.linkEvents();
    await until(() => front.linkState === "up");
    expect(front.connected).toBe(true);
    await (await serving).disconnect();
    await until(() => front.linkState === "reconnecting");
    expect(front.connected).toBe(false);
    const back2 = await vif.serve();
    await until(() => front.linkState === "up");
    expect(front.reconnectCount).toBe(1);
    await front.disconnect();
    await back2.disconnect();
    expect(front.linkState).toBe("closed");
    const events = [];
    for await (const e of it) events.push(e);
    const types = events.map((e) => e.type);
    // The first "connected" may precede the subscription (awaitBackend: false races it).
    expect(types.filter((t) => t !== "connected")).toEqual(["lost", "reconnecting", "reconnected", "closed"]);
    expect(heard).toEqual(types);
    const lost = events.find((e) => e.type === "lost")!;
    expect(lost.type === "lost" && lost.reason).toContain("state");
    const closed = events.at(-1)!;
    expect(closed.type === "closed" && closed.reason.code).toBe("DISCONNECTED");
    off();
    // After closed: an iterator ends at once, a listener is never called.
    expect((await front.linkEvents().next()).done).toBe(true);
    expect(front.onLink(() => heard.push("late"))).toBeFunction();
    expect(heard.at(-1)).toBe("closed");
    expect(vif.hv.leaks()).toEqual([]);
    vif.frontPlatform.close();
    vif.backPlatform.close();
    vif.dom0.close();
  });

  test("back end without reconnect: lost then closed, with the reason the session ended; a throwing listener does not stop it", async () => {
    const vif = await simVif();
    const [back, front] = await Promise.all([vif.serve({ reconnect: false }), vif.connect()]);
    expect(back.linkState).toBe("up");
    const events: string[] = [];
    back.onLink(() => {
      throw new Error("listener bug");
    });
    back.onLink((e) => events.push(e.type === "closed" ? `closed:${e.reason.code}` : e.type));
    await front.disconnect();
    const why = await back.closed;
    expect(events).toEqual(["lost", `closed:${why.code}`]);
    expect(vif.hv.leaks()).toEqual([]);
    vif.frontPlatform.close();
    vif.backPlatform.close();
    vif.dom0.close();
  });

  test("removed while waiting to reconnect: closed carries REMOVED; linkEvents({ signal }) ends on abort", async () => {
    const vif = await simVif();
    const [back, front] = await Promise.all([vif.serve(), vif.connect({ timeoutMs: 20_000 })]);
    const ac = new AbortController();
    const early = front.linkEvents({ signal: ac.signal });
    ac.abort();
    expect((await early.next()).done).toBe(true);
    const it = front.linkEvents();
    await back.disconnect();
    await until(() => front.linkState === "reconnecting");
    const { destroyVif } = await import("../src/main/index.ts");
    await destroyVif(vif.dom0.xenstore, vif.guest, 0, vif.devid);
    await front.closed;
    const types: string[] = [];
    for await (const e of it) types.push(e.type === "closed" ? `closed:${e.reason.code}` : e.type);
    expect(types).toEqual(["lost", "reconnecting", "closed:REMOVED"]);
    await until(() => vif.hv.leaks().length === 0);
    vif.frontPlatform.close();
    vif.backPlatform.close();
    vif.dom0.close();
  });
});
