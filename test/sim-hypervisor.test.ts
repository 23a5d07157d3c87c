import { describe, expect, test } from "bun:test";
import { SimHypervisor } from "../src/platform/sim/index.ts";
import { openPlatform } from "../src/platform/open.ts";
import { PlatformError } from "../src/platform/types.ts";

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

  test("openPlatform refuses unknown kinds and the unbuilt xen platform with typed errors", () => {
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
