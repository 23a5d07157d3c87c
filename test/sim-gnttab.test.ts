import { afterEach, describe, expect, test } from "bun:test";
import { SimHypervisor } from "../src/platform/sim/index.ts";
import { GNTST, type CopySegment } from "../src/platform/types.ts";
import { code } from "./helpers/errors.ts";

let hv: SimHypervisor;
function setup(opts = {}) {
  hv = SimHypervisor.create({ pages: 64, ...opts });
  const front = hv.platform(hv.createDomain(1));
  const back = hv.platform(0);
  return { front, back };
}
afterEach(() => hv?.xenstore && undefined);


describe("simulated grant table", () => {
  test("a shared page is seen by the peer that maps it, and writes go both ways", () => {
    const { front, back } = setup();
    const s = front.gnttab.share(0, 2, true);
    expect(s.refs.length).toBe(2);
    expect(new Set(s.refs).size).toBe(2);
    s.pages[1]![100] = 0xab;
    const m = back.gnttab.map(1, s.refs, true);
    expect(m.pages[1]![100]).toBe(0xab);
    m.pages[0]![4095] = 0x5a;
    expect(s.pages[0]![4095]).toBe(0x5a);
    back.gnttab.unmap(m);
    front.gnttab.unshare(s);
    expect(hv.leaks()).toEqual([]);
  });

  test("shared pages start zeroed even when the pool page was used before", () => {
    const { front } = setup();
    const a = front.gnttab.share(0, 1, true);
    a.pages[0]!.fill(0xff);
    front.gnttab.unshare(a);
    const b = front.gnttab.share(0, 64, true); // the whole pool: the dirty page is among them
    expect(b.pages.every((p) => p.every((x) => x === 0))).toBe(true);
    front.gnttab.unshare(b);
  });

  test("only the domain a grant was given to can map it", () => {
    const { front } = setup();
    const other = hv.platform(hv.createDomain(2));
    const s = front.gnttab.share(0, 1, true);
    expect(code(() => other.gnttab.map(1, s.refs, true))).toBe("EPERM");
    front.gnttab.unshare(s);
  });

  test("a read-only grant cannot be mapped writable, and its read-only mapping has no way to write", () => {
    const { front, back } = setup();
    const s = front.gnttab.share(0, 1, false);
    s.pages[0]!.set([1, 2, 3], 10);
    expect(code(() => back.gnttab.map(1, s.refs, true))).toBe("EPERM");
    const ro = back.gnttab.map(1, s.refs, false);
    expect(ro.pages[0]!.at(11)).toBe(2);
    const dst = new Uint8Array(3);
    ro.pages[0]!.copyTo(10, 3, dst, 0);
    expect([...dst]).toEqual([1, 2, 3]);
    expect(ro.descriptor).toBeNull();
    expect("set" in ro.pages[0]!).toBe(false);
    expect(() => ro.pages[0]!.copyTo(4090, 10, dst, 0)).toThrow(RangeError);
    back.gnttab.unmap(ro);
    front.gnttab.unshare(s);
  });

  test("mapping a grant never given, or ref 0, fails with ENOENT", () => {
    const { back } = setup();
    expect(code(() => back.gnttab.map(1, [8], true))).toBe("ENOENT");
    expect(code(() => back.gnttab.map(1, [0], true))).toBe("ENOENT");
    expect(code(() => back.gnttab.map(1, [1 << 30], true))).toBe("ENOENT");
  });

  test("ending access while the peer still maps the page is refused (EBUSY), as Xen does", () => {
    const { front, back } = setup();
    const s = front.gnttab.share(0, 2, true);
    const m = back.gnttab.map(1, [s.refs[1]!], true);
    expect(code(() => front.gnttab.unshare(s))).toBe("EBUSY");
    // Refused as a whole: the unmapped first grant is still active too.
    expect(hv.grants.activeCount(1)).toBe(2);
    back.gnttab.unmap(m);
    front.gnttab.unshare(s);
    expect(hv.grants.activeCount(1)).toBe(0);
    expect(code(() => front.gnttab.unshare(s))).toBe("ENOENT");
  });

  test("a failed multi-page map takes nothing", () => {
    const { front, back } = setup();
    const s = front.gnttab.share(0, 1, true);
    expect(code(() => back.gnttab.map(1, [s.refs[0]!, 999], true))).toBe("ENOENT");
    expect(hv.leaks().filter((l) => l.kind === "mapping")).toEqual([]);
    front.gnttab.unshare(s); // would be EBUSY if the failed map had kept a user
  });

  test("double unmap is an error, not a second release", () => {
    const { front, back } = setup();
    const s = front.gnttab.share(0, 1, true);
    const m1 = back.gnttab.map(1, s.refs, true);
    const m2 = back.gnttab.map(1, s.refs, true);
    back.gnttab.unmap(m1);
    expect(code(() => back.gnttab.unmap(m1))).toBe("EINVAL");
    expect(code(() => front.gnttab.unshare(s))).toBe("EBUSY"); // m2 still holds it
    back.gnttab.unmap(m2);
    front.gnttab.unshare(s);
  });

  test("grant copy moves bytes both ways and enforces the access flags, segment by segment", () => {
    const { front, back } = setup();
    const ro = front.gnttab.share(0, 1, false);
    const rw = front.gnttab.share(0, 1, true);
    ro.pages[0]!.set([9, 8, 7, 6], 100);
    const local = new Uint8Array(16);
    const segs: CopySegment[] = [
      { source: { domid: 1, ref: ro.refs[0]!, offset: 100 }, dest: { buf: local, offset: 2 }, len: 4 },
      { source: { buf: Uint8Array.of(1, 2, 3), offset: 0 }, dest: { domid: 1, ref: rw.refs[0]!, offset: 4093 }, len: 3 },
      { source: { buf: local, offset: 0 }, dest: { domid: 1, ref: ro.refs[0]!, offset: 0 }, len: 1 }, // write to read-only
      { source: { buf: local, offset: 0 }, dest: { domid: 1, ref: rw.refs[0]!, offset: 4094 }, len: 4 }, // crosses the page
      { source: { domid: 1, ref: 4000, offset: 0 }, dest: { buf: local, offset: 0 }, len: 1 }, // never granted
      { source: { domid: 99, ref: ro.refs[0]!, offset: 0 }, dest: { buf: local, offset: 0 }, len: 1 }, // no such domain
      { source: { buf: local, offset: 14 }, dest: { domid: 1, ref: rw.refs[0]!, offset: 0 }, len: 4 }, // local overrun
    ];
    back.gnttab.copy(segs);
    expect(segs.map((s) => s.status)).toEqual([
      GNTST.okay,
      GNTST.okay,
      GNTST.permissionDenied,
      GNTST.badCopyArg,
      GNTST.badGntref,
      GNTST.badDomain,
      GNTST.badCopyArg,
    ]);
    expect([...local.subarray(0, 8)]).toEqual([0, 0, 9, 8, 7, 6, 0, 0]);
    expect([...rw.pages[0]!.subarray(4093)]).toEqual([1, 2, 3]);
    expect(ro.pages[0]![0]).toBe(0);
    // Copies pin only for their duration: nothing is left in use.
    front.gnttab.unshare(ro);
    front.gnttab.unshare(rw);
    expect(hv.leaks()).toEqual([]);
  });

  test("a copy segment that leaves its page or buffer, or is malformed, moves nothing: GNTST_bad_copy_arg", () => {
    const { front, back } = setup();
    // Two granted pages, adjacent in the machine's memory: a copy running off the first one
    // would read or write the second, which was granted too, so only the bounds check stops it.
    const s = front.gnttab.share(0, 2, true);
    s.pages[1]!.fill(0x77);
    const ref = s.refs[0]!;
    const local = new Uint8Array(8).fill(0x11);
    const bad: CopySegment[] = [
      { source: { domid: 1, ref, offset: 4090 }, dest: { buf: local, offset: 0 }, len: 8 }, // grant source crosses its page
      { source: { buf: local, offset: 0 }, dest: { domid: 1, ref, offset: 4090 }, len: 8 }, // grant dest crosses its page
      { source: { buf: local, offset: 4 }, dest: { buf: new Uint8Array(8), offset: 0 }, len: 8 }, // local source overrun
      { source: { domid: 1, ref, offset: 0 }, dest: { buf: local, offset: 1 }, len: 8 }, // local dest overrun
      { source: { domid: 1, ref, offset: -1 }, dest: { buf: local, offset: 0 }, len: 1 },
      { source: { domid: 1, ref, offset: 0.5 }, dest: { buf: local, offset: 0 }, len: 1 },
      { source: { domid: 1, ref, offset: 0 }, dest: { buf: local, offset: -1 }, len: 1 },
      { source: { domid: 1, ref, offset: 0 }, dest: { buf: local, offset: 0 }, len: -1 },
      { source: { domid: 1, ref, offset: 0 }, dest: { buf: new Uint8Array(8192), offset: 0 }, len: 4097 },
      { source: { domid: 1, ref, offset: 0 }, dest: { buf: local, offset: 0 }, len: 1.5 },
    ];
    back.gnttab.copy(bad);
    expect(bad.map((x) => x.status)).toEqual(bad.map(() => GNTST.badCopyArg));
    expect([...local]).toEqual(new Array(8).fill(0x11));
    expect(s.pages[0]!.every((b) => b === 0)).toBe(true);
    expect(s.pages[1]!.every((b) => b === 0x77)).toBe(true);
    // A segment that ends exactly at the page's end is fine, and a zero-length one too.
    const edge: CopySegment[] = [
      { source: { buf: local, offset: 0 }, dest: { domid: 1, ref, offset: 4088 }, len: 8 },
      { source: { domid: 1, ref, offset: 4096 }, dest: { buf: local, offset: 8 }, len: 0 },
    ];
    back.gnttab.copy(edge);
    expect(edge.map((x) => x.status)).toEqual([GNTST.okay, GNTST.okay]);
    expect([...s.pages[0]!.subarray(4088)]).toEqual(new Array(8).fill(0x11));
    expect(s.pages[1]![0]).toBe(0x77);
    front.gnttab.unshare(s);
    expect(hv.leaks()).toEqual([]);
  });

  test("copies to and from different local buffers in turn each use the buffer they name", () => {
    const { front, back } = setup();
    const g = front.gnttab.share(0, 1, true);
    const ref = g.refs[0]!;
    // The copy keeps the last local buffer's address: alternate, and small and shared buffers.
    const bufs = [new Uint8Array(16), new Uint8Array(new SharedArrayBuffer(64)), new Uint8Array(32)];
    for (let round = 0; round < 6; round++) {
      const src = bufs[round % 3]!;
      const dst = bufs[(round + 1) % 3]!;
      src.fill(round + 1);
      dst.fill(0);
      const segs: CopySegment[] = [
        { source: { buf: src, offset: 0 }, dest: { domid: 1, ref, offset: round }, len: 16 },
        { source: { domid: 1, ref, offset: round }, dest: { buf: dst, offset: 0 }, len: 16 },
      ];
      back.gnttab.copy(segs);
      expect(segs.map((x) => x.status)).toEqual([GNTST.okay, GNTST.okay]);
      expect([...dst.subarray(0, 16)]).toEqual(new Array(16).fill(round + 1));
      expect(dst.subarray(16).every((b) => b === 0)).toBe(true);
    }
    front.gnttab.unshare(g);
    expect(hv.leaks()).toEqual([]);
  });

  test("a third domain cannot grant-copy from a grant given to someone else", () => {
    const { front } = setup();
    const eve = hv.platform(hv.createDomain(3));
    const s = front.gnttab.share(0, 1, true);
    const seg: CopySegment = { source: { domid: 1, ref: s.refs[0]!, offset: 0 }, dest: { buf: new Uint8Array(1), offset: 0 }, len: 1 };
    eve.gnttab.copy([seg]);
    expect(seg.status).toBe(GNTST.permissionDenied);
    front.gnttab.unshare(s);
  });

  test("grant exhaustion: ENOSPC, all or nothing, and the pages go back", () => {
    const { front } = setup({ grantsPerDomain: 4 });
    const a = front.gnttab.share(0, 3, true);
    expect(code(() => front.gnttab.share(0, 2, true))).toBe("ENOSPC");
    expect(hv.grants.activeCount(1)).toBe(3);
    expect(hv.leaks().filter((l) => l.kind === "page").length).toBe(3);
    front.gnttab.unshare(a);
    expect(hv.leaks()).toEqual([]);
  });

  test("page exhaustion: ENOSPC with nothing taken", () => {
    const { front } = setup();
    expect(code(() => front.gnttab.share(0, 65, true))).toBe("ENOSPC");
    expect(hv.leaks()).toEqual([]);
  });

  test("bad arguments are typed errors", () => {
    const { front, back } = setup();
    expect(code(() => front.gnttab.share(0, 0, true))).toBe("EINVAL");
    expect(code(() => front.gnttab.share(77, 1, true))).toBe("EINVAL");
    expect(code(() => back.gnttab.map(1, [], true))).toBe("EINVAL");
  });

  test("the leak check names a grant left active and a mapping left mapped", () => {
    const { front, back } = setup();
    const s = front.gnttab.share(0, 1, true);
    back.gnttab.map(1, s.refs, true);
    const kinds = hv.leaks().map((l) => l.kind).sort();
    expect(kinds).toEqual(["grant", "mapping", "page"]);
    expect(() => hv.assertNoLeaks()).toThrow(/grant 8 of domain 1 to domain 0 still active \(1 user\(s\)\).*domain 0 still maps 1 grant/);
  });
});
