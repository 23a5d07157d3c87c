/**
 * The back end's grant copies go to the hypervisor in batches: every packet found in one poll
 * (up to 64) in one copy call, on both paths, each packet then settled by its own statuses.
 * Counted by the simulated grant table (copyCounts: calls and segments, from any thread).
 */
import { describe, expect, test } from "bun:test";
import { NETIF_RSP, NETRXF, NETTXF, decodeRxResponse, decodeTxResponse, encodeRxRequest, encodeTxRequest, type ProtocolError } from "../src/protocol/index.ts";
import type { SimGrantTable } from "../src/platform/sim/grant-table.ts";
import { COPY_BATCH_PACKETS } from "../src/workers/copy-batch.ts";
import { Counter } from "../src/workers/control.ts";
import { PeerBroken } from "../src/workers/back-tx.ts";
import { backRxHarness, backTxHarness, drainQueue } from "./helpers/role-harness.ts";

/** A frame whose every byte says which frame it is and where in it (so a misplaced byte shows). */
function frame(seq: number, len: number): Uint8Array {
  return Uint8Array.from({ length: len }, (_, i) => (seq * 37 + i * 11 + (i >> 8)) & 0xff);
}

/** Copy calls and segments the role's grant table made while `run` ran. */
function counting(h: { gnttab: unknown }, run: () => void): { calls: number; segments: number } {
  const g = h.gnttab as SimGrantTable;
  const before = g.copyCounts();
  run();
  const after = g.copyCounts();
  return { calls: after.calls - before.calls, segments: after.segments - before.segments };
}

describe("back-tx: one copy call per poll's batch", () => {
  type H = ReturnType<typeof backTxHarness>;
  /** Put `bytes` in page `page` at `offset` and publish one request for them (more fragments with `more`). */
  function request(h: H, r: { gref: number; offset: number; size: number; flags?: number; id: number }) {
    const f = h.peer;
    encodeTxRequest(f.view, f.slotOffset(f.reqProdPvt), { gref: r.gref, offset: r.offset, flags: r.flags ?? 0, id: r.id, size: r.size });
    f.reqProdPvt++;
  }
  function responses(h: H): [number, number][] {
    const f = h.peer;
    const out: [number, number][] = [];
    for (let n = f.unconsumedResponses(); n > 0; n--) {
      const r = decodeTxResponse(f.view, f.slotOffset(f.rspCons));
      out.push([r.id, r.status]);
      f.rspCons++;
    }
    return out;
  }
  /** Packet `seq` of `len` bytes in one slot, from page seq % 16 at a per-packet offset. */
  function onePacket(h: H, seq: number, len: number, gref?: number) {
    const page = seq % 16;
    const offset = (seq * 64) % (4096 - len + 1);
    h.pages[page]!.set(frame(seq, len), offset);
    request(h, { gref: gref ?? h.refs[page]!, offset, size: len, id: seq });
  }

  for (const n of [1, 17, 64]) {
    test(`${n} packet(s) in one poll: one copy call of ${n} segments, every packet delivered byte-exact and answered in order`, () => {
      const h = backTxHarness();
      const want: Uint8Array[] = [];
      for (let i = 0; i < n; i++) {
        // Fill page and request one at a time, so each packet's bytes are read back before another overwrites its page.
        onePacket(h, i, 60 + i);
        want.push(frame(i, 60 + i));
      }
      h.peer.pushRequests();
      const c = counting(h, () => expect(h.role.poll()).toBe(true));
      expect(c).toEqual({ calls: 1, segments: n });
      const got = drainQueue(h.q).map((x) => x.bytes);
      expect(got.length).toBe(n);
      for (let i = 0; i < n; i++) expect(got[i]!).toEqual(want[i]!);
      expect(responses(h)).toEqual(Array.from({ length: n }, (_, i) => [i, NETIF_RSP.okay]));
      expect(h.ctl.get(Counter.packets)).toBe(n);
      h.close();
    });
  }

  test("bad grants in a batch (never given, given to another domain, taken back): each packet its own status; the good ones byte-exact and in order", () => {
    const h = backTxHarness();
    const guest = h.hv.platform(h.guest);
    const other = h.hv.createDomain();
    const elsewhere = guest.gnttab.share(other, 1, false); // a real grant, but not to dom0
    const revoked = guest.gnttab.share(0, 1, false);
    const revokedRef = revoked.refs[0]!;
    guest.gnttab.unshare(revoked);
    const bad = new Map<number, number>([
      [2, 5000], // never granted
      [5, elsewhere.refs[0]!], // granted to another domain
      [6, revokedRef], // granted, then taken back
    ]);
    const want: (Uint8Array | null)[] = [];
    let id = 0;
    for (let seq = 0; seq < 10; seq++) {
      const len = 100 + seq * 13;
      if (seq === 8) {
        // Two fragments, the second from a grant we never had: the whole packet is dropped.
        h.pages[3]!.set(frame(seq, len).subarray(0, 60), 2000);
        request(h, { gref: h.refs[3]!, offset: 2000, size: len, flags: NETTXF.moreData, id: id++ });
        request(h, { gref: 4000, offset: 0, size: len - 60, id: id++ });
        want.push(null);
        continue;
      }
      if (seq === 9) {
        // Two fragments, both good: delivered joined.
        const f = frame(seq, len);
        h.pages[4]!.set(f.subarray(0, 60), 3000);
        h.pages[5]!.set(f.subarray(60), 3000);
        request(h, { gref: h.refs[4]!, offset: 3000, size: len, flags: NETTXF.moreData, id: id++ });
        request(h, { gref: h.refs[5]!, offset: 3000, size: len - 60, id: id++ });
        want.push(f);
        continue;
      }
      if (seq === 4) {
        // Too short to be a frame: dropped by the parse, in the same batch.
        request(h, { gref: h.refs[0]!, offset: 0, size: 10, id: id++ });
        want.push(null);
        continue;
      }
      const page = seq % 16;
      h.pages[page]!.set(frame(seq, len), 500);
      request(h, { gref: bad.get(seq) ?? h.refs[page]!, offset: 500, size: len, id: id++ });
      want.push(bad.has(seq) ? null : frame(seq, len));
    }
    h.peer.pushRequests();
    const c = counting(h, () => h.role.poll());
    // Every packet's fragments in one call (the short one has none): 7 one-fragment packets, 2 of two.
    expect(c).toEqual({ calls: 1, segments: 11 });
    const got = drainQueue(h.q).map((x) => x.bytes);
    const good = want.filter((w): w is Uint8Array => w !== null);
    expect(got.length).toBe(good.length);
    for (let i = 0; i < good.length; i++) expect(got[i]!).toEqual(good[i]!);
    // One answer per slot, in ring order: ERROR for every slot of a dropped packet.
    const E = NETIF_RSP.error;
    const O = NETIF_RSP.okay;
    expect(responses(h)).toEqual([[0, O], [1, O], [2, E], [3, O], [4, E], [5, E], [6, E], [7, O], [8, E], [9, E], [10, O], [11, O]]);
    expect([h.ctl.get(Counter.packets), h.ctl.get(Counter.drops), h.ctl.get(Counter.errors)]).toEqual([5, 5, 5]);
    expect(h.errors.map((e: ProtocolError) => [e.code, e.field, e.value])).toEqual([
      ["BAD_GREF", "tx_request[0].gref", 5000],
      ["PACKET_TOO_SHORT", "tx_request.size", 10],
      ["BAD_GREF", "tx_request[0].gref", elsewhere.refs[0]!],
      ["BAD_GREF", "tx_request[0].gref", revokedRef],
      ["BAD_GREF", "tx_request[1].gref", 4000],
    ]);
    // The dropped packets left nothing in the queue: a later frame follows the last good one.
    onePacket(h, 20, 90);
    h.peer.pushRequests();
    h.role.poll();
    expect(drainQueue(h.q).map((x) => x.bytes)).toEqual([frame(20, 90)]);
    h.close();
  });

  test("more than 64 packets in one poll: batches of 64, each one call, answered before the next is copied", () => {
    const h = backTxHarness();
    const sizes: number[] = [];
    const pushedBefore: number[] = [];
    const g = h.gnttab;
    const copy = g.copy.bind(g);
    g.copy = (segs) => {
      sizes.push(segs.length);
      pushedBefore.push(h.peer.sharedRspProd);
      copy(segs);
    };
    for (let i = 0; i < 150; i++) {
      h.pages[i % 16]!.fill(i & 0xff, (i >> 4) * 200, (i >> 4) * 200 + 60);
      request(h, { gref: h.refs[i % 16]!, offset: (i >> 4) * 200, size: 60, id: i });
    }
    h.peer.pushRequests();
    const c = counting(h, () => h.role.poll());
    expect(c).toEqual({ calls: 3, segments: 150 });
    expect(sizes).toEqual([COPY_BATCH_PACKETS, COPY_BATCH_PACKETS, 22]);
    expect(pushedBefore).toEqual([0, 64, 128]);
    const got = drainQueue(h.q);
    expect(got.map((x) => x.bytes[0])).toEqual(Array.from({ length: 150 }, (_, i) => i & 0xff));
    expect(got.every((x, i) => x.bytes.every((b) => b === (i & 0xff)))).toBe(true);
    expect(responses(h).map(([i, s]) => (s === NETIF_RSP.okay ? i : -1))).toEqual(Array.from({ length: 150 }, (_, i) => i));
    h.close();
  });

  test("a batch holds at most half the queue's window: the main thread reads one batch while the next is copied", () => {
    const h = backTxHarness(16384); // window 16 KiB: batches of at most 8 KiB
    for (let i = 0; i < 10; i++) {
      h.pages[i]!.set(frame(i, 1500));
      request(h, { gref: h.refs[i]!, offset: 0, size: 1500, id: i });
    }
    h.peer.pushRequests();
    const sizes: number[] = [];
    const copy = h.gnttab.copy.bind(h.gnttab);
    h.gnttab.copy = (segs) => {
      sizes.push(segs.length);
      copy(segs);
    };
    h.role.poll();
    expect(sizes).toEqual([5, 5]);
    expect(drainQueue(h.q).map((x) => x.bytes)).toEqual(Array.from({ length: 10 }, (_, i) => frame(i, 1500)));
    h.close();
  });

  test("a queue that fills: the packets that fit go out, the rest wait on the ring, none lost", () => {
    const h = backTxHarness(4096); // 4 records of 1000 bytes fit; a batch holds 2
    for (let i = 0; i < 10; i++) {
      h.pages[i]!.set(frame(i, 1000));
      request(h, { gref: h.refs[i]!, offset: 0, size: 1000, id: i });
    }
    h.peer.pushRequests();
    let c = counting(h, () => h.role.poll());
    expect(c).toEqual({ calls: 2, segments: 4 });
    expect(h.role.blocked).toBe(true);
    expect(responses(h).map(([i]) => i)).toEqual([0, 1, 2, 3]);
    const got = drainQueue(h.q).map((x) => x.bytes);
    for (const want of [4, 2]) {
      h.role.woke();
      c = counting(h, () => h.role.poll());
      expect(c.segments).toBe(want);
      got.push(...drainQueue(h.q).map((x) => x.bytes));
    }
    expect(got).toEqual(Array.from({ length: 10 }, (_, i) => frame(i, 1000)));
    expect(responses(h).map(([i, s]) => [i, s])).toEqual(Array.from({ length: 6 }, (_, k) => [k + 4, NETIF_RSP.okay]));
    h.close();
  });

  test("a packet that breaks the ring in the middle of a batch: the packets before it are copied, delivered and answered first, then the peer is broken", () => {
    const h = backTxHarness();
    for (let i = 0; i < 5; i++) {
      h.pages[i]!.set(frame(i, 200));
      request(h, { gref: h.refs[i]!, offset: 0, size: 200, id: i });
    }
    request(h, { gref: h.refs[6]!, offset: 4000, size: 200, id: 5 }); // crosses its page: fatal
    h.peer.pushRequests();
    let thrown: unknown = null;
    const c = counting(h, () => {
      try {
        h.role.poll();
      } catch (e) {
        thrown = e;
      }
    });
    expect(thrown).toBeInstanceOf(PeerBroken);
    expect((thrown as PeerBroken).cause.code).toBe("FRAGMENT_CROSSES_PAGE");
    expect(c).toEqual({ calls: 1, segments: 5 });
    expect(drainQueue(h.q).map((x) => x.bytes)).toEqual(Array.from({ length: 5 }, (_, i) => frame(i, 200)));
    expect(responses(h)).toEqual(Array.from({ length: 5 }, (_, i) => [i, NETIF_RSP.okay]));
    h.close();
  });
});

describe("back-rx: one copy call per poll's batch", () => {
  type H = ReturnType<typeof backRxHarness>;
  /** Post one buffer: page `page`'s grant unless `gref` says otherwise; id = the ring index. */
  function post(h: H, page: number, gref?: number) {
    const f = h.peer;
    encodeRxRequest(f.view, f.slotOffset(f.reqProdPvt), { id: f.reqProdPvt & 0xffff, gref: gref ?? h.refs[page]! });
    f.reqProdPvt++;
  }
  /** Read the answers frame by frame: the bytes each good frame put in its buffers, or null for one answered ERROR. */
  function received(h: H): { frames: (Uint8Array | null)[]; ids: number[] } {
    const f = h.peer;
    const frames: (Uint8Array | null)[] = [];
    const ids: number[] = [];
    while (f.unconsumedResponses() > 0) {
      const parts: Uint8Array[] = [];
      let ok = true;
      for (;;) {
        const idx = f.rspCons;
        const r = decodeRxResponse(f.view, f.slotOffset(idx));
        f.rspCons++;
        ids.push(r.id);
        if (r.status < 0) {
          expect(r.status).toBe(NETIF_RSP.error);
          ok = false;
        } else {
          // The buffer posted at this ring index was page (idx % 256).
          parts.push(h.pages[idx & 255]!.slice(r.offset, r.offset + r.status));
        }
        if (!(r.flags & NETRXF.moreData)) break;
      }
      frames.push(ok ? Uint8Array.from(parts.flatMap((p) => [...p])) : null);
    }
    return { frames, ids };
  }

  for (const n of [1, 17, 64]) {
    test(`${n} frame(s) in one poll: one copy call, every frame byte-exact in the guest's buffers`, () => {
      const h = backRxHarness();
      const sent = Array.from({ length: n }, (_, i) => frame(i, 60 + i * 20));
      for (const f of sent) expect(h.q.push(f)).toBe(true);
      for (let i = 0; i < n; i++) post(h, i);
      h.peer.pushRequests();
      const c = counting(h, () => expect(h.role.poll()).toBe(true));
      expect(c).toEqual({ calls: 1, segments: n });
      const r = received(h);
      expect(r.frames).toEqual(sent);
      expect(r.ids).toEqual(Array.from({ length: n }, (_, i) => i));
      expect(h.q.isEmpty()).toBe(true);
      expect(h.ctl.get(Counter.packets)).toBe(n);
      h.close();
    });
  }

  test("bad buffers in a batch (never granted, read-only, granted to another domain): those frames answered ERROR and counted, the others byte-exact and in order", () => {
    const h = backRxHarness();
    const guest = h.hv.platform(h.guest);
    const other = h.hv.createDomain();
    const readOnly = guest.gnttab.share(0, 1, false);
    const elsewhere = guest.gnttab.share(other, 1, true);
    // Frame 3 takes two buffers (5000 bytes) and only its second is bad.
    const sizes = [60, 1514, 200, 5000, 64, 300, 700, 1000];
    const sent = sizes.map((len, i) => frame(i, len));
    for (const f of sent) expect(h.q.push(f)).toBe(true);
    const badAt = new Map<number, number>([
      [2, 5000], // frame 2's buffer: never granted
      [4, 0], // frame 3's second buffer: ref 0, never valid
      [6, readOnly.refs[0]!], // frame 5: granted read-only, we cannot write it
      [7, elsewhere.refs[0]!], // frame 6: granted, but to another domain
    ]);
    for (let slot = 0; slot < 9; slot++) post(h, slot, badAt.get(slot));
    h.peer.pushRequests();
    const c = counting(h, () => h.role.poll());
    expect(c).toEqual({ calls: 1, segments: 9 });
    const r = received(h);
    expect(r.frames).toEqual(sent.map((f, i) => ([2, 3, 5, 6].includes(i) ? null : f)));
    expect(r.ids).toEqual(Array.from({ length: 9 }, (_, i) => i));
    expect([h.ctl.get(Counter.packets), h.ctl.get(Counter.drops), h.ctl.get(Counter.errors)]).toEqual([4, 4, 4]);
    expect(h.errors.map((e: ProtocolError) => [e.code, e.value])).toEqual([
      ["BAD_GREF", 5000],
      ["BAD_GREF", 0],
      ["BAD_GREF", readOnly.refs[0]!],
      ["BAD_GREF", elsewhere.refs[0]!],
    ]);
    // Nothing was written into the buffers we could not use.
    expect(readOnly.pages[0]!.every((b) => b === 0)).toBe(true);
    expect(elsewhere.pages[0]!.every((b) => b === 0)).toBe(true);
    expect(h.q.isEmpty()).toBe(true);
    h.close();
  });

  test("more than 64 frames in one poll: batches of 64, each one call, all delivered in order", () => {
    const h = backRxHarness();
    const sent = Array.from({ length: 150 }, (_, i) => frame(i, 60 + (i % 7) * 100));
    for (const f of sent) expect(h.q.push(f)).toBe(true);
    for (let i = 0; i < 150; i++) post(h, i);
    h.peer.pushRequests();
    const sizes: number[] = [];
    const g = h.gnttab;
    const copy = g.copy.bind(g);
    g.copy = (segs) => {
      sizes.push(segs.length);
      copy(segs);
    };
    const c = counting(h, () => h.role.poll());
    expect(c).toEqual({ calls: 3, segments: 150 });
    expect(sizes).toEqual([64, 64, 22]);
    expect(received(h).frames).toEqual(sent);
    h.close();
  });

  test("a batch holds at most half the queue's window: the main thread refills one half while the other is copied", () => {
    const h = backRxHarness(16384); // window 16 KiB: batches of at most 8 KiB
    const sent = Array.from({ length: 10 }, (_, i) => frame(i, 1500));
    for (const f of sent) expect(h.q.push(f)).toBe(true);
    for (let i = 0; i < 10; i++) post(h, i);
    h.peer.pushRequests();
    const sizes: number[] = [];
    const copy = h.gnttab.copy.bind(h.gnttab);
    h.gnttab.copy = (segs) => {
      sizes.push(segs.length);
      copy(segs);
    };
    h.role.poll();
    expect(sizes).toEqual([5, 5]);
    expect(received(h).frames).toEqual(sent);
    h.close();
  });

  test("fewer buffers than frames: the frames with buffers go in one call, the rest stay queued in order until the guest posts more", () => {
    const h = backRxHarness();
    const sent = Array.from({ length: 50 }, (_, i) => frame(i, i === 20 ? 9000 : 100)); // frame 20 needs 3 buffers
    for (const f of sent) expect(h.q.push(f)).toBe(true);
    for (let i = 0; i < 21; i++) post(h, i); // frames 0..19, and 1 of frame 20's 3
    h.peer.pushRequests();
    let c = counting(h, () => h.role.poll());
    expect(c).toEqual({ calls: 1, segments: 20 });
    const got = received(h).frames;
    expect(got).toEqual(sent.slice(0, 20));
    expect(h.q.isEmpty()).toBe(false);
    h.role.prepareSleep();
    h.role.woke();
    for (let i = 21; i < 21 + 32; i++) post(h, i);
    h.peer.pushRequests();
    c = counting(h, () => h.role.poll());
    expect(c).toEqual({ calls: 1, segments: 32 });
    expect(received(h).frames).toEqual(sent.slice(20));
    expect(h.q.isEmpty()).toBe(true);
    h.close();
  });

  test("a frame too large for the session is taken with the batch and counted lost; the frames around it go in the same call", () => {
    const h = backRxHarness();
    const sent = [frame(0, 100), frame(1, 70000), frame(2, 200)];
    for (const f of sent) expect(h.q.push(f)).toBe(true);
    for (let i = 0; i < 4; i++) post(h, i);
    h.peer.pushRequests();
    const c = counting(h, () => h.role.poll());
    expect(c).toEqual({ calls: 1, segments: 2 });
    expect(received(h).frames).toEqual([sent[0]!, sent[2]!]);
    expect([h.ctl.get(Counter.lost), h.ctl.get(Counter.drops), h.ctl.settled]).toEqual([1, 1, 3]);
    expect(h.q.isEmpty()).toBe(true);
    h.close();
  });
});
