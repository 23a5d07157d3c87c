import { describe, expect, test } from "bun:test";
import { SimHypervisor } from "../src/platform/sim/index.ts";
import { code } from "./helpers/errors.ts";

function setup() {
  const hv = SimHypervisor.create({ pages: 16 });
  const front = hv.platform(hv.createDomain(1));
  const back = hv.platform(0);
  return { hv, front, back };
}


/** Bind a channel the way netfront/netback do: the front allocates, the back binds. */
function connect() {
  const s = setup();
  const fe = s.front.openEventChannels();
  const be = s.back.openEventChannels();
  const fport = fe.allocUnbound(0);
  const bport = be.bindInterdomain(1, fport);
  // Binding leaves the binder's own port pending (as real Xen does): a wake-up with no news.
  expect(be.pending()).toEqual([bport]);
  be.unmask(bport);
  return { ...s, fe, be, fport, bport };
}

describe("simulated event channels", () => {
  test("ports start at 1; notify reaches the other end, once, masked until unmasked", () => {
    const { fe, be, fport, bport } = connect();
    expect(fport).toBeGreaterThanOrEqual(1);
    fe.notify(fport);
    fe.notify(fport); // coalesces while pending
    expect(be.pending()).toEqual([bport]);
    expect(be.pending()).toEqual([]);
    fe.notify(fport); // masked: queued as pending, not delivered
    expect(be.pending()).toEqual([]);
    be.unmask(bport); // pending while masked fires on unmask
    expect(be.pending()).toEqual([bport]);
    be.unmask(bport);
    be.notify(bport);
    expect(fe.pending()).toEqual([fport]);
  });

  test("binding needs a port allocated unbound for the binder", () => {
    const { hv, front, back } = setup();
    const eve = hv.platform(hv.createDomain(2)).openEventChannels();
    const fe = front.openEventChannels();
    const be = back.openEventChannels();
    const p = fe.allocUnbound(0);
    expect(code(() => eve.bindInterdomain(1, p))).toBe("EINVAL"); // allocated for domain 0, not 2
    expect(code(() => be.bindInterdomain(1, p + 1))).toBe("EINVAL"); // never allocated
    expect(code(() => be.bindInterdomain(1, 0))).toBe("EINVAL");
    be.bindInterdomain(1, p);
    expect(code(() => be.bindInterdomain(1, p))).toBe("EINVAL"); // already bound
  });

  test("notify, unmask or unbind of a port not bound by this handle is EINVAL", () => {
    const { fe, be, fport } = connect();
    expect(code(() => fe.notify(0))).toBe("EINVAL");
    expect(code(() => fe.notify(200))).toBe("EINVAL");
    const other = fe.allocUnbound(0); // a port of the other domain, a number the back end never bound
    expect(code(() => be.notify(other))).toBe("EINVAL");
    expect(code(() => fe.unmask(55))).toBe("EINVAL");
    fe.unbind(fport);
    expect(code(() => fe.notify(fport))).toBe("EINVAL");
  });

  test("when one end unbinds, the other goes unbound and notifying it is a harmless no-op", () => {
    const { hv, fe, be, fport, bport } = connect();
    be.unbind(bport);
    fe.notify(fport);
    expect(hv.evtchn.boundPorts()).toEqual([{ domid: 1, port: fport, state: "unbound", remoteDomid: 0 }]);
    fe.close();
    expect(hv.leaks()).toEqual([]);
  });

  test("a handle's close unbinds its ports; the leak check lists ports left bound", () => {
    const { hv, fe, be } = connect();
    expect(hv.leaks().filter((l) => l.kind === "port").length).toBe(2);
    expect(() => hv.assertNoLeaks()).toThrow(/port 1 of domain 1 still interdomain/);
    fe.close();
    be.close();
    expect(hv.leaks()).toEqual([]);
    expect(code(() => fe.notify(1))).toBe("ECLOSED");
  });

  test("wait blocks until a notify and times out otherwise", () => {
    const { fe, be, fport, bport } = connect();
    const t0 = performance.now();
    expect(be.wait(30)).toEqual([]);
    expect(performance.now() - t0).toBeGreaterThanOrEqual(25);
    fe.notify(fport);
    expect(be.wait(1000)).toEqual([bport]);
  });

  test("wait hands back the handle's own array each time (a worker waiting makes no garbage); pending a new one", () => {
    const { fe, be, fport, bport } = connect();
    fe.notify(fport);
    const first = be.wait(1000);
    expect(first).toEqual([bport]);
    be.unmask(bport);
    const second = be.wait(0);
    expect(second).toBe(first);
    expect(second).toEqual([]); // emptied for the new result, not appended to
    fe.notify(fport);
    const third = be.wait(1000);
    expect(third).toBe(first);
    expect(third).toEqual([bport]);
    be.unmask(bport);
    fe.notify(fport);
    const p = be.pending();
    expect(p).toEqual([bport]);
    expect(p).not.toBe(first);
  });

  test("waitAsync on the main thread wakes on a notify without blocking the event loop", async () => {
    const { fe, be, fport, bport } = connect();
    let ticks = 0;
    const timer = setInterval(() => ticks++, 1);
    setTimeout(() => fe.notify(fport), 30);
    const ports = await be.waitAsync(5000);
    clearInterval(timer);
    expect(ports).toEqual([bport]);
    expect(ticks).toBeGreaterThan(3); // the loop ran while we waited
  });

  test("a worker blocked in wait() is woken by a notify from the main thread, and its notify wakes us", async () => {
    const { hv, fe, be, fport, bport } = connect();
    const w = new Worker(new URL("./fixtures/evtchn-worker.ts", import.meta.url).href);
    try {
      const ready = new Promise<void>((r) => (w.onmessage = (e) => e.data === "waiting" && r()));
      w.postMessage({ state: hv.state, handle: be.descriptor, port: bport });
      await ready;
      const got = new Promise<unknown>((r) => (w.onmessage = (e) => r(e.data)));
      fe.notify(fport);
      expect(await got).toEqual({ woke: [bport] });
      // The worker notified back after waking.
      expect(await fe.waitAsync(5000)).toEqual([fport]);
    } finally {
      w.terminate();
    }
  });

  test("closing a handle from another thread releases a waiter blocked on it", async () => {
    const { back, be } = connect();
    // A second view of the same handle, as a worker would have.
    const view = back.openEventChannels(be.descriptor);
    setTimeout(() => be.close(), 20);
    const t0 = performance.now();
    expect(await view.waitAsync(5000)).toEqual([]);
    expect(performance.now() - t0).toBeLessThan(2000);
  });
});

describe("kick", () => {
  test("kick wakes a waiter with no port, and a kick that came while busy is not lost", async () => {
    const { be } = connect();
    setTimeout(() => be.kick(), 20);
    const t0 = performance.now();
    expect(await be.waitAsync(5000)).toEqual([]);
    expect(performance.now() - t0).toBeLessThan(2000);
    be.kick(); // nobody waiting now
    expect(be.wait(5000)).toEqual([]); // returns at once
    const t1 = performance.now();
    expect(be.wait(30)).toEqual([]); // and only once
    expect(performance.now() - t1).toBeGreaterThanOrEqual(25);
  });
});
