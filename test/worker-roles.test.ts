/** The ring roles against scripted peers: extras, bad ids, error statuses, impossible indices. */
import { describe, expect, test } from "bun:test";
import {
  EXTRA_TYPE,
  GSO_TYPE,
  NETIF_RSP,
  NETRXF,
  NETTXF,
  ProtocolError,
  decodeRxRequest,
  decodeTxResponse,
  encodeExtraInfo,
  encodeRxResponse,
  encodeTxRequest,
} from "../src/protocol/index.ts";
import { Counter } from "../src/workers/control.ts";
import { metaGso } from "../src/workers/frame-meta.ts";
import { backTxHarness, drainQueue, frontRxHarness } from "./helpers/role-harness.ts";
import { packet } from "./helpers/packets.ts";

describe("front-rx against a scripted back end", () => {
  /** Fill the next posted buffer with `bytes` (as a grant copy would) and answer in its slot. */
  function answer(h: ReturnType<typeof frontRxHarness>, bytes: Uint8Array, flags: number, id?: number, status?: number) {
    const r = h.peer;
    const req = decodeRxRequest(r.view, r.slotOffset(r.reqCons));
    h.dataPages[req.id]!.set(bytes);
    encodeRxResponse(r.view, r.slotOffset(r.rspProdPvt), { id: id ?? req.id, offset: 0, flags, status: status ?? bytes.length });
    r.reqCons++;
    r.rspProdPvt++;
  }
  function extraSlot(h: ReturnType<typeof frontRxHarness>, size: number) {
    const r = h.peer;
    encodeExtraInfo(r.view, r.slotOffset(r.rspProdPvt), { type: EXTRA_TYPE.gso, size, gsoType: GSO_TYPE.tcpv4, features: 0 }, false);
    r.reqCons++; // an extra occupies a posted buffer's slot too
    r.rspProdPvt++;
  }

  test("a GSO extra reaches the frame's info; fragments are joined in order", () => {
    const h = frontRxHarness();
    expect(h.peer.unconsumedRequests()).toBe(256); // every buffer posted at start
    // A GSO frame is a TCP packet of its type (else it is dropped: see gso-hostile.test.ts).
    const frame = packet({ tcp: true, payload: 5000 - 54 });
    answer(h, frame.subarray(0, 4096), NETRXF.extraInfo | NETRXF.moreData | NETRXF.csumBlank);
    extraSlot(h, 1448);
    answer(h, frame.subarray(4096), 0);
    h.peer.pushResponses();
    expect(h.role.poll()).toBe(true);
    const [f] = drainQueue(h.q);
    expect(f!.bytes.length).toBe(5000);
    expect(f!.bytes).toEqual(frame);
    expect(metaGso(f!.meta)).toEqual({ type: GSO_TYPE.tcpv4, size: 1448 });
    expect(f!.meta & NETRXF.csumBlank).toBe(NETRXF.csumBlank);
    expect(h.ctl.get(Counter.extras)).toBe(1);
    // The three consumed slots were posted again: the ring is full of buffers once more.
    expect(h.peer.unconsumedRequests()).toBe(256);
    h.close();
  });

  test("an id that is not the one posted in its slot: BAD_ID, the packet dropped, the next one delivered", () => {
    const h = frontRxHarness();
    answer(h, new Uint8Array(100).fill(5), 0, 77); // slot 0 was posted as id 0
    answer(h, new Uint8Array(60).fill(6), 0);
    h.peer.pushResponses();
    h.role.poll();
    const frames = drainQueue(h.q);
    expect(frames.map((f) => [f.bytes.length, f.bytes[0]])).toEqual([[60, 6]]);
    expect(h.errors.map((e) => [e.code, e.field, e.value])).toEqual([["BAD_ID", "rx_response[0].id", 77]]);
    expect([h.ctl.get(Counter.drops), h.ctl.get(Counter.errors), h.ctl.get(Counter.packets)]).toEqual([1, 1, 1]);
    h.close();
  });

  test("an error status drops the packet and is counted; the ring goes on", () => {
    const h = frontRxHarness();
    answer(h, new Uint8Array(0), 0, undefined, NETIF_RSP.error);
    answer(h, new Uint8Array(70).fill(9), 0);
    h.peer.pushResponses();
    h.role.poll();
    expect(drainQueue(h.q).map((f) => f.bytes.length)).toEqual([70]);
    expect(h.errors[0]!.code).toBe("BAD_STATUS");
    expect(h.ctl.get(Counter.drops)).toBe(1);
    h.close();
  });

  test("rsp_prod claiming more responses than requests: a typed RING_OVERFLOW, nothing delivered", () => {
    const h = frontRxHarness();
    new DataView(h.peer.page.buffer, h.peer.page.byteOffset).setUint32(8, 5000, true);
    let thrown: unknown;
    try {
      h.role.poll();
    } catch (e) {
      thrown = e;
    }
    expect(thrown).toBeInstanceOf(ProtocolError);
    expect([(thrown as ProtocolError).code, (thrown as ProtocolError).field, (thrown as ProtocolError).value]).toEqual(["RING_OVERFLOW", "rsp_prod", 5000]);
    expect(h.q.isEmpty()).toBe(true);
    h.close();
  });
});

describe("back-tx against a scripted front end", () => {
  function request(h: ReturnType<typeof backTxHarness>, r: { page: number; size: number; flags: number; id: number; gref?: number; offset?: number }) {
    const f = h.peer;
    encodeTxRequest(f.view, f.slotOffset(f.reqProdPvt), { gref: r.gref ?? h.refs[r.page]!, offset: r.offset ?? 0, flags: r.flags, id: r.id, size: r.size });
    f.reqProdPvt++;
  }
  function responses(h: ReturnType<typeof backTxHarness>): [number, number][] {
    const f = h.peer;
    const out: [number, number][] = [];
    for (let n = f.unconsumedResponses(); n > 0; n--) {
      const r = decodeTxResponse(f.view, f.slotOffset(f.rspCons));
      out.push([r.id, r.status]);
      f.rspCons++;
    }
    return out;
  }

  test("a GSO extra after the first request: frame info carries it; the extra slot is answered NULL", () => {
    const h = backTxHarness();
    const frame = packet({ v6: true, tcp: true, payload: 5096 - 74 });
    h.pages[0]!.set(frame.subarray(0, 4096));
    h.pages[1]!.set(frame.subarray(4096));
    request(h, { page: 0, size: 5096, flags: NETTXF.extraInfo | NETTXF.moreData | NETTXF.csumBlank, id: 10 });
    encodeExtraInfo(h.peer.view, h.peer.slotOffset(h.peer.reqProdPvt++), { type: EXTRA_TYPE.gso, size: 1460, gsoType: GSO_TYPE.tcpv6, features: 0 }, false);
    request(h, { page: 1, size: 1000, flags: 0, id: 11 });
    h.peer.pushRequests();
    h.role.poll();
    const [f] = drainQueue(h.q);
    expect(f!.bytes).toEqual(frame);
    expect(metaGso(f!.meta)).toEqual({ type: GSO_TYPE.tcpv6, size: 1460 });
    expect(f!.meta & NETTXF.csumBlank).toBe(NETTXF.csumBlank);
    expect(responses(h)).toEqual([[10, NETIF_RSP.okay], [10, NETIF_RSP.null], [11, NETIF_RSP.okay]]);
    h.close();
  });

  test("a long batch is answered as it goes: one copy call and one push of responses per 64 packets within one poll, not only at its end", () => {
    const h = backTxHarness(4 << 20);
    for (let i = 0; i < 200; i++) request(h, { page: i % 16, size: 60, flags: 0, id: i });
    h.peer.pushRequests();
    // What the front end could see of rsp_prod when each batch's grant copy ran, and its size.
    const seen: number[] = [];
    const sizes: number[] = [];
    const copy = h.gnttab.copy.bind(h.gnttab);
    h.gnttab.copy = (segs) => {
      seen.push(h.peer.sharedRspProd);
      sizes.push(segs.length);
      copy(segs);
    };
    h.role.poll();
    // One copy call per batch of 64 packets, each batch answered before the next is copied.
    expect(sizes).toEqual([64, 64, 64, 8]);
    expect(seen).toEqual([0, 64, 128, 192]);
    expect(responses(h).map(([id]) => id)).toEqual(Array.from({ length: 200 }, (_, i) => i));
    expect(drainQueue(h.q).length).toBe(200);
    h.close();
  });

  test("a grant the front end never gave: BAD_GREF, every slot of the packet answered ERROR, nothing delivered", () => {
    const h = backTxHarness();
    request(h, { page: 0, size: 3000, flags: NETTXF.moreData, id: 1 });
    request(h, { page: 0, size: 1000, flags: 0, id: 2, gref: 4000 });
    request(h, { page: 2, size: 60, flags: 0, id: 3 });
    h.peer.pushRequests();
    h.role.poll();
    expect(drainQueue(h.q).map((f) => f.bytes.length)).toEqual([60]);
    expect(responses(h)).toEqual([[1, NETIF_RSP.error], [2, NETIF_RSP.error], [3, NETIF_RSP.okay]]);
    expect([h.errors[0]!.code, h.errors[0]!.field, h.errors[0]!.value]).toEqual(["BAD_GREF", "tx_request[1].gref", 4000]);
    expect(h.ctl.get(Counter.drops)).toBe(1);
    h.close();
  });

  test("a fragment crossing its page is fatal: the role stops with a typed error naming field and value", () => {
    const h = backTxHarness();
    request(h, { page: 0, size: 200, flags: 0, id: 1, offset: 4000 });
    h.peer.pushRequests();
    expect(() => h.role.poll()).toThrow(/FRAGMENT_CROSSES_PAGE: tx_request\[0\]\.offset=4000/);
    h.close();
  });
});
