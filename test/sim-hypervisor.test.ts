import { describe, expect, test } from "bun:test";
import { SimHypervisor } from "../src/platform/sim/index.ts";
import { openPlatform } from "../src/platform/open.ts";
import { PlatformError, type CopySegment } from "../src/platform/types.ts";

describe("simulated hypervisor", () => {
  test("domains: dom0 exists, createDomain gives ids and a xenstore home, duplicates and bad ids are refused", async () => {
    const hv = SimHypervisor.create({ maxDomains: 4, pages: 8 });
    expect(hv.exists(0)).toBe(true);
    expect(hv.createDomain()).toBe(1);
    expect(hv.createDomain(3)).toBe(3);
    expect(hv.createDomain()).toBe(2);
    expect(() => hv.createDomain()).toThrow(PlatformError);
    expect(() => hv.createDomain(3)).toThrow(/EEXIST/);
    expect(() => hv.createDomain(0)).toThrow(/EINVAL/);
    expect(() => hv.platform(9)).toThrow(/ENOENT/);
    const d1 = hv.platform(1);
    await d1.xenstore.write("/local/domain/1/data/x", "y");
    expect(await hv.platform(0).xenstore.read("/local/domain/1/data/x")).toBe("y");
    await expect(d1.xenstore.write("/local/domain/2/data/x", "y")).rejects.toThrow(/EACCES/);
    d1.close();
  });

  test("a worker rebuilds a domain from its descriptor and shares grants, event channels and pages with us", async () => {
    const hv = SimHypervisor.create({ pages: 16 });
    const front = hv.platform(hv.createDomain());
    const back = hv.platform(0);
    const shared = front.gnttab.share(0, 2, true);
    shared.pages[0]!.set([1, 2, 3, 4]);
    const fe = front.openEventChannels();
    const be = back.openEventChannels();
    const fport = fe.allocUnbound(0);
    const bport = be.bindInterdomain(front.domid, fport);
    be.pending();

    const w = new Worker(new URL("./fixtures/domain-worker.ts", import.meta.url).href);
    try {
      const reply = new Promise<{ seen: number[]; denied: string }>((r) => (w.onmessage = (e) => r(e.data)));
      w.postMessage({ platform: back.descriptor, owner: front.domid, refs: shared.refs, write: [9, 8, 7], port: bport, evtchn: be.descriptor });
      const { seen, denied } = await reply;
      expect(seen).toEqual([1, 2, 3, 4]);
      expect([...shared.pages[0]!.subarray(4, 7)]).toEqual([9, 8, 7]);
      expect(denied).toMatch(/gnttab\.map: ENOENT/);
      expect(await fe.waitAsync(5000)).toEqual([fport]);
    } finally {
      w.terminate();
    }
    // The worker unmapped: we can end access; then both ends close and nothing is left.
    front.gnttab.unshare(shared);
    front.close();
    back.close();
    expect(hv.leaks()).toEqual([]);
  });

  test("openPlatform refuses unknown kinds, and a xen descriptor without its parameters, with typed errors", () => {
    expect(() => openPlatform({ kind: "xen", domid: 0, params: null })).toThrow(PlatformError);
    expect(() => openPlatform({ kind: "bogus" as "sim", domid: 0, params: null })).toThrow(/EINVAL/);
  });

  test("the leak check can be narrowed to some domains", () => {
    const hv = SimHypervisor.create({ pages: 8 });
    const d1 = hv.platform(hv.createDomain());
    const d2 = hv.platform(hv.createDomain());
    const s = d1.gnttab.share(0, 1, true);
    d2.openEventChannels().allocUnbound(0);
    expect(hv.leaks([1]).map((l) => l.kind).sort()).toEqual(["grant", "page"]);
    expect(hv.leaks([2]).map((l) => l.kind)).toEqual(["port"]);
    d1.gnttab.unshare(s);
    d2.close();
    hv.assertNoLeaks();
  });
});

describe("destroyDomain", () => {
  test("grants end, a page still mapped elsewhere stays readable until unmapped, ports close, xenstore home goes", async () => {
    const hv = SimHypervisor.create({ pages: 16 });
    const guest = hv.platform(hv.createDomain());
    const dom0 = hv.platform(0);
    const used = guest.gnttab.share(0, 1, true);
    const unused = guest.gnttab.share(0, 2, true);
    used.pages[0]![0] = 42;
    const m = dom0.gnttab.map(1, used.refs, true);
    const gh = guest.openEventChannels();
    const dh = dom0.openEventChannels();
    const gport = gh.allocUnbound(0);
    const dport = dh.bindInterdomain(1, gport);
    await guest.xenstore.write("/local/domain/1/data/x", "1");

    hv.destroyDomain(1);
    expect(hv.exists(1)).toBe(false);
    expect(m.pages[0]![0]).toBe(42); // our mapping still holds the page
    expect(() => dom0.gnttab.map(1, unused.refs, true)).toThrow(/ENOENT/);
    const seg: CopySegment = { source: { domid: 1, ref: used.refs[0]!, offset: 0 }, dest: { buf: new Uint8Array(1), offset: 0 }, len: 1 };
    dom0.gnttab.copy([seg]);
    expect(seg.status!).toBeLessThan(0); // no new users of a dead domain's grant
    dh.notify(dport); // the remote end is gone: a harmless no-op
    expect(hv.evtchn.boundPorts()).toEqual([{ domid: 0, port: dport, state: "unbound", remoteDomid: 1 }]);
    expect(await dom0.xenstore.read("/local/domain/1/data/x")).toBeNull();
    // Only what dom0 holds is left: its mapping (and the page behind it) and its port.
    expect(hv.leaks().map((l) => l.kind).sort()).toEqual(["grant", "mapping", "page", "port"]);
    dom0.gnttab.unmap(m);
    dh.close();
    expect(hv.leaks()).toEqual([]);
    expect(() => hv.destroyDomain(1)).toThrow(/ENOENT/);
    expect(() => hv.destroyDomain(0)).toThrow(/EINVAL/);
    dom0.close();
  });
});
