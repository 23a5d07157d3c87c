/**
 * Slot codecs (io/netif.h): each one writes exactly the bytes PROTOCOL.md lists, at the listed
 * offsets, little-endian, and nothing outside its slot. Expected bytes are written out by hand
 * rather than computed, so a swapped field or a wrong endianness fails here.
 */
import { describe, expect, test } from "bun:test";
import {
  checkTxStatus,
  decodeExtraInfo,
  decodeRxRequest,
  decodeRxResponse,
  decodeTxRequest,
  decodeTxResponse,
  emptyRxResponse,
  emptyTxRequest,
  encodeExtraInfo,
  encodeRxRequest,
  encodeRxResponse,
  encodeTxRequest,
  encodeTxResponse,
  EXTRA_INFO_SIZE,
  EXTRA_TYPE,
  EXTRA_TYPE_MAX,
  GSO_TYPE,
  NETIF_RSP,
  NETRXF,
  NETTXF,
  ProtocolError,
  RX_REQUEST_SIZE,
  RX_RESPONSE_SIZE,
  TX_REQUEST_SIZE,
  TX_RESPONSE_SIZE,
  type DecodedExtra,
  type ExtraInfo,
} from "../src/protocol/index.ts";

/** Slots are written at this offset of a sentinel-filled buffer, to catch stray writes. */
const AT = 24;
const SENTINEL = 0xa5;

function buffer(): { bytes: Uint8Array; view: DataView } {
  const bytes = new Uint8Array(64).fill(SENTINEL);
  return { bytes, view: new DataView(bytes.buffer) };
}

/** The slot's bytes, after checking that everything around it is still the sentinel. */
function slotBytes(bytes: Uint8Array, len: number): number[] {
  const outside = [...bytes.subarray(0, AT), ...bytes.subarray(AT + len)];
  expect(outside.every((b) => b === SENTINEL)).toBe(true);
  return Array.from(bytes.subarray(AT, AT + len));
}

/** A view whose slot at AT holds exactly `slot`. */
function viewOf(slot: number[]): DataView {
  const { bytes, view } = buffer();
  bytes.set(slot, AT);
  return view;
}

function expectDecoded(d: DecodedExtra | ProtocolError): DecodedExtra {
  if (d instanceof ProtocolError) throw new Error(`unexpected ${d.message}`);
  return d;
}

describe("constants", () => {
  test("sizes and flag values match io/netif.h", () => {
    expect([TX_REQUEST_SIZE, TX_RESPONSE_SIZE, RX_REQUEST_SIZE, RX_RESPONSE_SIZE, EXTRA_INFO_SIZE]).toEqual([12, 4, 8, 8, 8]);
    expect(NETTXF).toEqual({ csumBlank: 1, dataValidated: 2, moreData: 4, extraInfo: 8 });
    expect(NETRXF).toEqual({ dataValidated: 1, csumBlank: 2, moreData: 4, extraInfo: 8, gsoPrefix: 16 });
    expect(NETIF_RSP).toEqual({ dropped: -2, error: -1, okay: 0, null: 1 });
    expect(EXTRA_TYPE).toEqual({ none: 0, gso: 1, mcastAdd: 2, mcastDel: 3, hash: 4 });
    expect(EXTRA_TYPE_MAX).toBe(5);
    expect(GSO_TYPE).toEqual({ none: 0, tcpv4: 1, tcpv6: 2 });
  });
});

describe("netif_tx_request", () => {
  test("gref @0 u32, offset @4, flags @6, id @8, size @10 (u16), little-endian", () => {
    const { bytes, view } = buffer();
    encodeTxRequest(view, AT, { gref: 0x12345678, offset: 0x0abc, flags: 0x000f, id: 0xbeef, size: 0x1234 });
    expect(slotBytes(bytes, 12)).toEqual([0x78, 0x56, 0x34, 0x12, 0xbc, 0x0a, 0x0f, 0x00, 0xef, 0xbe, 0x34, 0x12]);
    expect(decodeTxRequest(view, AT)).toEqual({ gref: 0x12345678, offset: 0x0abc, flags: 0x000f, id: 0xbeef, size: 0x1234 });
  });

  test("extremes: 0xffffffff gref, 0xffff everywhere else; zeros", () => {
    const { bytes, view } = buffer();
    const max = { gref: 0xffffffff, offset: 0xffff, flags: 0xffff, id: 0xffff, size: 0xffff };
    encodeTxRequest(view, AT, max);
    expect(slotBytes(bytes, 12)).toEqual(new Array(12).fill(0xff));
    expect(decodeTxRequest(view, AT)).toEqual(max); // unsigned, not -1
    encodeTxRequest(view, AT, emptyTxRequest());
    expect(slotBytes(bytes, 12)).toEqual(new Array(12).fill(0));
  });

  test("decodes hand-written bytes", () => {
    const v = viewOf([0x01, 0x00, 0x00, 0x80, 0x00, 0x0f, 0x05, 0x00, 0x2a, 0x00, 0xea, 0x05]);
    expect(decodeTxRequest(v, AT)).toEqual({ gref: 0x80000001, offset: 0x0f00, flags: 5, id: 42, size: 1514 });
  });

  test("decode into a reused object overwrites every field and returns it", () => {
    const { view } = buffer();
    encodeTxRequest(view, 0, { gref: 1, offset: 2, flags: 3, id: 4, size: 5 });
    encodeTxRequest(view, 12, { gref: 10, offset: 20, flags: 30, id: 40, size: 50 });
    const into = emptyTxRequest();
    expect(decodeTxRequest(view, 0, into)).toBe(into);
    expect(into).toEqual({ gref: 1, offset: 2, flags: 3, id: 4, size: 5 });
    expect(decodeTxRequest(view, 12, into)).toBe(into);
    expect(into).toEqual({ gref: 10, offset: 20, flags: 30, id: 40, size: 50 });
  });
});

describe("netif_tx_response", () => {
  test("id @0 u16, status @2 i16; writes only its 4 bytes of the slot", () => {
    const { bytes, view } = buffer();
    encodeTxResponse(view, AT, { id: 0x1234, status: NETIF_RSP.dropped });
    expect(slotBytes(bytes, 4)).toEqual([0x34, 0x12, 0xfe, 0xff]);
    encodeTxResponse(view, AT, { id: 0xffff, status: NETIF_RSP.error });
    expect(slotBytes(bytes, 4)).toEqual([0xff, 0xff, 0xff, 0xff]);
    encodeTxResponse(view, AT, { id: 0, status: NETIF_RSP.null });
    expect(slotBytes(bytes, 4)).toEqual([0, 0, 0x01, 0x00]);
  });

  test("status decodes signed", () => {
    expect(decodeTxResponse(viewOf([0xff, 0xff, 0xfe, 0xff]), AT)).toEqual({ id: 0xffff, status: -2 });
    expect(decodeTxResponse(viewOf([0x01, 0x00, 0x00, 0x80]), AT)).toEqual({ id: 1, status: -32768 });
    expect(decodeTxResponse(viewOf([0x01, 0x00, 0xff, 0x7f]), AT)).toEqual({ id: 1, status: 32767 });
  });

  test("decode into a reused object", () => {
    const into = { id: 9, status: 9 };
    expect(decodeTxResponse(viewOf([7, 0, 0, 0]), AT, into)).toBe(into);
    expect(into).toEqual({ id: 7, status: 0 });
  });
});

describe("checkTxStatus", () => {
  test.each([-2, -1, 0, 1])("status %p is defined", (s) => {
    expect(checkTxStatus(s)).toBeNull();
  });

  test.each([2, -3, 32767, -32768])("status %p is BAD_STATUS naming the field and value", (s) => {
    const e = checkTxStatus(s);
    expect(e).toBeInstanceOf(ProtocolError);
    expect(e).toMatchObject({ code: "BAD_STATUS", field: "tx_response.status", value: s });
  });
});

describe("netif_rx_request", () => {
  test("id @0 u16, pad @2 (zeroed), gref @4 u32", () => {
    const { bytes, view } = buffer();
    encodeRxRequest(view, AT, { id: 0xffff, gref: 0xffffffff });
    expect(slotBytes(bytes, 8)).toEqual([0xff, 0xff, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff]);
    encodeRxRequest(view, AT, { id: 0x0102, gref: 0x0a0b0c0d });
    expect(slotBytes(bytes, 8)).toEqual([0x02, 0x01, 0x00, 0x00, 0x0d, 0x0c, 0x0b, 0x0a]);
  });

  test("decode ignores the pad and reuses the object", () => {
    const into = { id: 1, gref: 1 };
    expect(decodeRxRequest(viewOf([0x34, 0x12, 0xff, 0xff, 0x78, 0x56, 0x34, 0x12]), AT, into)).toBe(into);
    expect(into).toEqual({ id: 0x1234, gref: 0x12345678 });
    expect(decodeRxRequest(viewOf([0xff, 0xff, 0, 0, 0xff, 0xff, 0xff, 0xff]), AT)).toEqual({ id: 0xffff, gref: 0xffffffff });
  });
});

describe("netif_rx_response", () => {
  test("id @0, offset @2, flags @4 (u16), status @6 (i16)", () => {
    const { bytes, view } = buffer();
    encodeRxResponse(view, AT, { id: 7, offset: 0x0ffe, flags: NETRXF.moreData | NETRXF.extraInfo, status: -1 });
    expect(slotBytes(bytes, 8)).toEqual([0x07, 0x00, 0xfe, 0x0f, 0x0c, 0x00, 0xff, 0xff]);
    encodeRxResponse(view, AT, { id: 0xffff, offset: 0, flags: 0xffff, status: 4096 });
    expect(slotBytes(bytes, 8)).toEqual([0xff, 0xff, 0x00, 0x00, 0xff, 0xff, 0x00, 0x10]);
  });

  test("round trip with extremes, into a reused object", () => {
    const { view } = buffer();
    const into = emptyRxResponse();
    for (const r of [
      { id: 0xffff, offset: 0xffff, flags: 0xffff, status: 32767 },
      { id: 0, offset: 0, flags: 0, status: -32768 },
      { id: 1, offset: 2, flags: 3, status: NETIF_RSP.dropped },
    ]) {
      encodeRxResponse(view, AT, r);
      expect(decodeRxResponse(view, AT, into)).toBe(into);
      expect(into).toEqual(r);
    }
    expect(decodeRxResponse(viewOf([0x2a, 0, 0x10, 0, 0x01, 0, 0xea, 0x05]), AT)).toEqual({ id: 42, offset: 16, flags: 1, status: 1514 });
  });
});

describe("netif_extra_info", () => {
  test("GSO: type 1 @0, MORE @1, size @2 u16, gso type @4, pad @5, features @6 u16", () => {
    const { bytes, view } = buffer();
    encodeExtraInfo(view, AT, { type: EXTRA_TYPE.gso, size: 1448, gsoType: GSO_TYPE.tcpv4, features: 0 }, true);
    expect(slotBytes(bytes, 8)).toEqual([0x01, 0x01, 0xa8, 0x05, 0x01, 0x00, 0x00, 0x00]);
    encodeExtraInfo(view, AT, { type: EXTRA_TYPE.gso, size: 0xffff, gsoType: GSO_TYPE.tcpv6, features: 0xabcd }, false);
    expect(slotBytes(bytes, 8)).toEqual([0x01, 0x00, 0xff, 0xff, 0x02, 0x00, 0xcd, 0xab]);
    expect(decodeExtraInfo(view, AT)).toEqual({
      extra: { type: EXTRA_TYPE.gso, size: 0xffff, gsoType: GSO_TYPE.tcpv6, features: 0xabcd },
      more: false,
    });
  });

  test("MCAST_ADD / MCAST_DEL: addr[6] @2", () => {
    const { bytes, view } = buffer();
    const addr = Uint8Array.from([0x01, 0x00, 0x5e, 0x00, 0x00, 0xfb]);
    encodeExtraInfo(view, AT, { type: EXTRA_TYPE.mcastAdd, addr }, false);
    expect(slotBytes(bytes, 8)).toEqual([0x02, 0x00, 0x01, 0x00, 0x5e, 0x00, 0x00, 0xfb]);
    encodeExtraInfo(view, AT, { type: EXTRA_TYPE.mcastDel, addr }, true);
    expect(slotBytes(bytes, 8)).toEqual([0x03, 0x01, 0x01, 0x00, 0x5e, 0x00, 0x00, 0xfb]);
    const d = expectDecoded(decodeExtraInfo(view, AT));
    expect(d).toEqual({ extra: { type: EXTRA_TYPE.mcastDel, addr }, more: true });
    // The address is copied out of the slot: a peer rewriting the slot cannot change it.
    bytes[AT + 2] = 0x33;
    expect((d.extra as { addr: Uint8Array }).addr[0]).toBe(0x01);
  });

  test("HASH: type @2, alg @3, value[4] @4 little-endian", () => {
    const { bytes, view } = buffer();
    encodeExtraInfo(view, AT, { type: EXTRA_TYPE.hash, hashType: 3, alg: 1, value: 0xdeadbeef }, false);
    expect(slotBytes(bytes, 8)).toEqual([0x04, 0x00, 0x03, 0x01, 0xef, 0xbe, 0xad, 0xde]);
    expect(decodeExtraInfo(view, AT)).toEqual({ extra: { type: EXTRA_TYPE.hash, hashType: 3, alg: 1, value: 0xdeadbeef }, more: false });
  });

  test("encode clears the whole slot first (no stale union bytes)", () => {
    const { bytes, view } = buffer();
    bytes.fill(0xff, AT, AT + 8);
    encodeExtraInfo(view, AT, { type: EXTRA_TYPE.gso, size: 1, gsoType: GSO_TYPE.tcpv4, features: 0 }, false);
    expect(slotBytes(bytes, 8)).toEqual([0x01, 0x00, 0x01, 0x00, 0x01, 0x00, 0x00, 0x00]);
  });

  test("round trip of every type, with and without MORE", () => {
    const extras: ExtraInfo[] = [
      { type: EXTRA_TYPE.gso, size: 9000, gsoType: GSO_TYPE.tcpv4, features: 1 },
      { type: EXTRA_TYPE.mcastAdd, addr: Uint8Array.from([0x33, 0x33, 0, 0, 0, 1]) },
      { type: EXTRA_TYPE.mcastDel, addr: Uint8Array.from([0xff, 0xff, 0xff, 0xff, 0xff, 0xff]) },
      { type: EXTRA_TYPE.hash, hashType: 0xff, alg: 0xff, value: 0xffffffff },
    ];
    const { view } = buffer();
    for (const e of extras) {
      for (const more of [false, true]) {
        encodeExtraInfo(view, AT, e, more);
        expect(decodeExtraInfo(view, AT)).toEqual({ extra: e, more });
      }
    }
  });

  test("MORE is bit 0 of the flags byte only", () => {
    const slot = [0x04, 0x00, 0, 0, 0, 0, 0, 0];
    for (const [flags, more] of [[0x00, false], [0x01, true], [0xfe, false], [0x03, true], [0xff, true]] as const) {
      slot[1] = flags;
      expect(expectDecoded(decodeExtraInfo(viewOf(slot), AT)).more).toBe(more);
    }
  });

  test.each([0, 5, 6, 0x80, 0xff])("unknown type %p → BAD_EXTRA_TYPE naming field and value", (type) => {
    const e = decodeExtraInfo(viewOf([type, 0, 1, 0, 1, 0, 0, 0]), AT);
    expect(e).toBeInstanceOf(ProtocolError);
    expect(e).toMatchObject({ code: "BAD_EXTRA_TYPE", field: "extra_info.type", value: type });
  });

  test("the field prefix given by the caller is used", () => {
    expect(decodeExtraInfo(viewOf([9, 0, 0, 0, 0, 0, 0, 0]), AT, "tx_extra_info")).toMatchObject({
      code: "BAD_EXTRA_TYPE",
      field: "tx_extra_info.type",
      value: 9,
    });
  });

  test.each([0, 3, 0xff])("GSO with gso type %p → BAD_GSO on gso.type", (gsoType) => {
    const e = decodeExtraInfo(viewOf([0x01, 0x00, 0xa8, 0x05, gsoType, 0, 0, 0]), AT, "rx_extra_info");
    expect(e).toBeInstanceOf(ProtocolError);
    expect(e).toMatchObject({ code: "BAD_GSO", field: "rx_extra_info.gso.type", value: gsoType });
  });

  test("GSO with segment size 0 → BAD_GSO on gso.size", () => {
    const e = decodeExtraInfo(viewOf([0x01, 0x00, 0x00, 0x00, 0x02, 0, 0, 0]), AT);
    expect(e).toBeInstanceOf(ProtocolError);
    expect(e).toMatchObject({ code: "BAD_GSO", field: "extra_info.gso.size", value: 0 });
    // Segment size 1 is the smallest legal one.
    expect(decodeExtraInfo(viewOf([0x01, 0x00, 0x01, 0x00, 0x02, 0, 0, 0]), AT)).not.toBeInstanceOf(ProtocolError);
  });
});
