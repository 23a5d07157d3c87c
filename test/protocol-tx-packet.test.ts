/**
 * parseTxPacket: a back end reading a chain of netif_tx_requests (plus extra-info slots) off a
 * real ring page filled with the slot encoders. Checks the verdicts (drop vs fatal), the error
 * code/field/value, slot counts and the ids reported for dropped packets, then fuzzes.
 */
import { describe, expect, test } from "bun:test";
import {
  BackRing,
  decodeExtraInfo,
  decodeTxRequest,
  DEFAULT_TX_LIMITS,
  encodeExtraInfo,
  encodeTxRequest,
  EXTRA_TYPE,
  GSO_TYPE,
  isTxParseError,
  NETTXF,
  PAGE_SIZE,
  parseTxPacket,
  scratchTxPacket,
  ProtocolError,
  TX_REQUEST,
  TX_REQUEST_SIZE,
  type ExtraInfo,
  type ProtocolErrorCode,
  type TxFragment,
  type TxPacket,
  type TxParseError,
  type TxRequest,
} from "../src/protocol/index.ts";
import { Rng } from "./helpers/prng.ts";

// ---------------------------------------------------------------------------------------------
// Building packets on a ring page

type Slot = { req: TxRequest } | { extra: ExtraInfo; more: boolean };

function txRing(): BackRing {
  return new BackRing(new Uint8Array(new SharedArrayBuffer(PAGE_SIZE)), TX_REQUEST_SIZE);
}

function req(r: Partial<TxRequest> & { size: number }): Slot {
  return { req: { gref: 0x100, offset: 0, flags: 0, id: 0, ...r } };
}

function extra(e: ExtraInfo, more = false): Slot {
  return { extra: e, more };
}

function writeSlot(ring: BackRing, idx: number, s: Slot): void {
  if ("req" in s) encodeTxRequest(ring.view, ring.slotOffset(idx), s.req);
  else encodeExtraInfo(ring.view, ring.slotOffset(idx), s.extra, s.more);
}

/** Write `slots` from ring index `start`; returns how many were written. */
function write(ring: BackRing, start: number, slots: Slot[]): number {
  slots.forEach((s, i) => writeSlot(ring, start + i, s));
  return slots.length;
}

const GSO: ExtraInfo = { type: EXTRA_TYPE.gso, size: 1448, gsoType: GSO_TYPE.tcpv4, features: 0 };
const HASH: ExtraInfo = { type: EXTRA_TYPE.hash, hashType: 2, alg: 1, value: 0xcafef00d };
const MCAST_ADD: ExtraInfo = { type: EXTRA_TYPE.mcastAdd, addr: Uint8Array.from([1, 0, 0x5e, 0, 0, 1]) };

const { csumBlank, dataValidated, moreData, extraInfo } = NETTXF;

function expectPacket(r: TxPacket | TxParseError): TxPacket {
  if (isTxParseError(r)) throw new Error(`expected a packet, got ${r.error.message} (fatal=${r.fatal}, slots=${r.slots})`);
  return r;
}

interface WantError {
  code: ProtocolErrorCode;
  field: string;
  value: number | string;
  fatal: boolean;
  slots: number;
  ids: number[];
}

function expectError(r: TxPacket | TxParseError, want: WantError): void {
  if (!isTxParseError(r)) throw new Error(`expected ${want.code}, got a packet of ${r.size} bytes`);
  expect(r.error).toBeInstanceOf(ProtocolError);
  const { code, field, value } = r.error;
  expect({ code, field, value, fatal: r.fatal, slots: r.slots, ids: r.ids }).toEqual(want);
}

/** A chain of `n` data requests of 100 bytes each (first carries the total), ids 100.. */
function chain(n: number, firstFlags = 0): Slot[] {
  const out: Slot[] = [];
  for (let i = 0; i < n; i++) {
    const more = i < n - 1 ? moreData : 0;
    out.push(req({ gref: 1000 + i, offset: 0, flags: (i === 0 ? firstFlags : 0) | more, id: 100 + i, size: i === 0 ? 100 * n : 100 }));
  }
  return out;
}

const range = (from: number, n: number) => Array.from({ length: n }, (_, i) => from + i);

// ---------------------------------------------------------------------------------------------

describe("valid packets", () => {
  test("single slot: size, flags, one fragment; the slot after it is not read", () => {
    const ring = txRing();
    write(ring, 0, [
      req({ gref: 0xffffffff, offset: 100, flags: csumBlank | dataValidated, id: 0xffff, size: 1514 }),
      req({ gref: 1, flags: 0xffff, id: 2, size: 0xffff }), // junk that must not be read
    ]);
    expect(parseTxPacket(ring, 0, 2)).toEqual({
      size: 1514,
      flags: csumBlank | dataValidated,
      frags: [{ gref: 0xffffffff, offset: 100, size: 1514, id: 0xffff }],
      extras: [],
      slots: 1,
    });
  });

  test("multi-fragment: first size is the total, first fragment's own length the remainder", () => {
    const ring = txRing();
    write(ring, 10, [
      req({ gref: 1, offset: 100, flags: csumBlank | moreData, id: 1, size: 5000 }),
      req({ gref: 2, offset: 0, flags: moreData, id: 2, size: 4096 }),
      req({ gref: 3, offset: 3000, flags: 0, id: 3, size: 200 }),
    ]);
    const p = expectPacket(parseTxPacket(ring, 10, 3));
    expect(p.size).toBe(5000);
    expect(p.slots).toBe(3);
    expect(p.extras).toEqual([]);
    expect(p.flags & (csumBlank | dataValidated)).toBe(csumBlank);
    expect(p.frags).toEqual<TxFragment[]>([
      { gref: 1, offset: 100, size: 704, id: 1 }, // 5000 - 4096 - 200
      { gref: 2, offset: 0, size: 4096, id: 2 },
      { gref: 3, offset: 3000, size: 200, id: 3 },
    ]);
  });

  test("the page check applies to the first fragment's own length, not the total", () => {
    // offset 3000 + total 2000 would cross, but the first fragment only holds 500 bytes.
    const ring = txRing();
    write(ring, 0, [req({ offset: 3000, flags: moreData, id: 1, size: 2000 }), req({ offset: 0, id: 2, size: 1500 })]);
    expect(expectPacket(parseTxPacket(ring, 0, 2)).frags.map((f) => [f.offset, f.size])).toEqual([
      [3000, 500],
      [0, 1500],
    ]);
  });

  test("GSO extra: counted in slots, returned in extras, fragments after it", () => {
    const ring = txRing();
    write(ring, 0, [
      req({ gref: 7, offset: 0, flags: csumBlank | extraInfo | moreData, id: 10, size: 3000 }),
      extra(GSO),
      req({ gref: 8, offset: 0, flags: 0, id: 11, size: 1000 }),
    ]);
    const p = expectPacket(parseTxPacket(ring, 0, 3));
    expect(p.slots).toBe(3);
    expect(p.extras).toEqual([GSO]);
    expect(p.frags).toEqual([
      { gref: 7, offset: 0, size: 2000, id: 10 },
      { gref: 8, offset: 0, size: 1000, id: 11 },
    ]);
  });

  test("several extras of distinct types (MORE chain) on a single-fragment packet", () => {
    const ring = txRing();
    write(ring, 0, [req({ flags: extraInfo, id: 5, size: 60 }), extra(HASH, true), extra(MCAST_ADD, true), extra(GSO)]);
    const p = expectPacket(parseTxPacket(ring, 0, 4));
    expect(p.slots).toBe(4);
    expect(p.extras).toEqual([HASH, MCAST_ADD, GSO]);
    expect(p.frags).toEqual([{ gref: 0x100, offset: 0, size: 60, id: 5 }]);
  });

  test("limits: 14 bytes, 18 slots and 65535 bytes are all accepted", () => {
    const ring = txRing();
    write(ring, 0, [req({ id: 1, size: 14 })]);
    expect(expectPacket(parseTxPacket(ring, 0, 1)).size).toBe(14);

    write(ring, 0, chain(18));
    const p18 = expectPacket(parseTxPacket(ring, 0, 18));
    expect(p18.frags.map((f) => f.id)).toEqual(range(100, 18));
    expect(p18.slots).toBe(18);

    // 65535 = 4095 + 15 * 4096, in 16 fragments.
    const big: Slot[] = [req({ offset: 1, flags: moreData, id: 0, size: 0xffff })];
    for (let i = 1; i < 16; i++) big.push(req({ offset: 0, flags: i < 15 ? moreData : 0, id: i, size: 4096 }));
    write(ring, 0, big);
    const p = expectPacket(parseTxPacket(ring, 0, 16));
    expect(p.size).toBe(0xffff);
    expect(p.frags[0]).toEqual({ gref: 0x100, offset: 1, size: 4095, id: 0 });
  });

  test("a packet starting at index 0xFFFFFFFE wraps into slots 254, 255, 0, 1", () => {
    const ring = txRing();
    const v = ring.view;
    // Byte offsets written by hand: 64 + slot * 12.
    encodeTxRequest(v, 64 + 254 * 12, { gref: 1, offset: 0, flags: extraInfo | moreData, id: 21, size: 300 });
    encodeExtraInfo(v, 64 + 255 * 12, GSO, false);
    encodeTxRequest(v, 64 + 0 * 12, { gref: 2, offset: 10, flags: moreData, id: 22, size: 100 });
    encodeTxRequest(v, 64 + 1 * 12, { gref: 3, offset: 20, flags: 0, id: 23, size: 50 });
    expect(parseTxPacket(ring, 0xfffffffe, 4)).toEqual({
      size: 300,
      flags: 0, // framing bits (extra_info, more_data) are masked off
      frags: [
        { gref: 1, offset: 0, size: 150, id: 21 },
        { gref: 2, offset: 10, size: 100, id: 22 },
        { gref: 3, offset: 20, size: 50, id: 23 },
      ],
      extras: [GSO],
      slots: 4,
    });
  });

  test("no published request is a RangeError (caller bug, not peer input)", () => {
    expect(() => parseTxPacket(txRing(), 0, 0)).toThrow(RangeError);
  });
});

describe("dropped packets (the ring goes on)", () => {
  test("SIZE_MISMATCH: a later fragment larger than what the first leaves", () => {
    const ring = txRing();
    write(ring, 0, [req({ flags: moreData, id: 1, size: 100 }), req({ id: 2, size: 200 })]);
    expectError(parseTxPacket(ring, 0, 2), { code: "SIZE_MISMATCH", field: "tx_request[1].size", value: 200, fatal: false, slots: 2, ids: [1, 2] });
  });

  test("SIZE_MISMATCH: cumulative, reported at the fragment that overdraws", () => {
    const ring = txRing();
    write(ring, 0, [req({ flags: moreData | extraInfo, id: 7, size: 300 }), extra(GSO), req({ flags: moreData, id: 8, size: 200 }), req({ id: 9, size: 200 })]);
    expectError(parseTxPacket(ring, 0, 4), { code: "SIZE_MISMATCH", field: "tx_request[2].size", value: 200, fatal: false, slots: 4, ids: [7, 8, 9] });
  });

  test("SIZE_MISMATCH: one byte over is enough", () => {
    const ring = txRing();
    write(ring, 0, [req({ flags: moreData, id: 1, size: 300 }), req({ flags: moreData, id: 2, size: 150 }), req({ id: 3, size: 151 })]);
    expectError(parseTxPacket(ring, 0, 3), { code: "SIZE_MISMATCH", field: "tx_request[2].size", value: 151, fatal: false, slots: 3, ids: [1, 2, 3] });
  });

  test("TOO_MANY_SLOTS: 19 and 20 data slots are dropped, every id reported in order", () => {
    const ring = txRing();
    for (const n of [19, 20]) {
      write(ring, 50, chain(n));
      expectError(parseTxPacket(ring, 50, n + 3), { code: "TOO_MANY_SLOTS", field: "tx_request.flags", value: n, fatal: false, slots: n, ids: range(100, n) });
    }
  });

  test("TOO_MANY_SLOTS: extras do not count as data slots but do count in slots", () => {
    const ring = txRing();
    const slots = chain(19, extraInfo);
    slots.splice(1, 0, extra(GSO));
    write(ring, 0, slots);
    expectError(parseTxPacket(ring, 0, 20), { code: "TOO_MANY_SLOTS", field: "tx_request.flags", value: 19, fatal: false, slots: 20, ids: range(100, 19) });
  });

  test("PACKET_TOO_SHORT: below an Ethernet header", () => {
    const ring = txRing();
    write(ring, 0, [req({ id: 3, size: 13 })]);
    expectError(parseTxPacket(ring, 0, 1), { code: "PACKET_TOO_SHORT", field: "tx_request.size", value: 13, fatal: false, slots: 1, ids: [3] });
    write(ring, 0, [req({ flags: extraInfo, id: 4, size: 0 }), extra(GSO)]);
    expectError(parseTxPacket(ring, 0, 2), { code: "PACKET_TOO_SHORT", field: "tx_request.size", value: 0, fatal: false, slots: 2, ids: [4] });
  });

  test("PACKET_TOO_LONG with a lowered limit", () => {
    const limits = { ...DEFAULT_TX_LIMITS, maxPacketSize: 1514 };
    const ring = txRing();
    write(ring, 0, [req({ flags: moreData, id: 1, size: 1515 }), req({ id: 2, size: 15 })]);
    expectError(parseTxPacket(ring, 0, 2, limits), { code: "PACKET_TOO_LONG", field: "tx_request.size", value: 1515, fatal: false, slots: 2, ids: [1, 2] });
    write(ring, 0, [req({ flags: moreData, id: 1, size: 1514 }), req({ id: 2, size: 14 })]);
    expect(expectPacket(parseTxPacket(ring, 0, 2, limits)).size).toBe(1514);
  });

  test("lowered slot limits are honoured", () => {
    const limits = { ...DEFAULT_TX_LIMITS, maxSlots: 2, fatalSlots: 3 };
    const ring = txRing();
    write(ring, 0, chain(3));
    expectError(parseTxPacket(ring, 0, 3, limits), { code: "TOO_MANY_SLOTS", field: "tx_request.flags", value: 3, fatal: false, slots: 3, ids: [100, 101, 102] });
    write(ring, 0, chain(4));
    expectError(parseTxPacket(ring, 0, 4, limits), { code: "TOO_MANY_SLOTS", field: "tx_request.flags", value: "more_data", fatal: true, slots: 3, ids: [] });
  });
});

describe("fatal errors (the ring is abandoned)", () => {
  test("FRAGMENT_CROSSES_PAGE: single-slot packet", () => {
    const ring = txRing();
    write(ring, 0, [req({ offset: 4000, id: 1, size: 97 })]);
    expectError(parseTxPacket(ring, 0, 1), { code: "FRAGMENT_CROSSES_PAGE", field: "tx_request[0].offset", value: 4000, fatal: true, slots: 1, ids: [] });
    write(ring, 0, [req({ offset: 3999, id: 1, size: 97 })]); // ends exactly at 4096
    expect(expectPacket(parseTxPacket(ring, 0, 1)).frags[0]!.size).toBe(97);
  });

  test("FRAGMENT_CROSSES_PAGE: first fragment's remainder crosses", () => {
    const ring = txRing();
    write(ring, 0, [req({ offset: 3700, flags: moreData, id: 1, size: 2000 }), req({ offset: 0, id: 2, size: 1500 })]);
    expectError(parseTxPacket(ring, 0, 2), { code: "FRAGMENT_CROSSES_PAGE", field: "tx_request[0].offset", value: 3700, fatal: true, slots: 2, ids: [] });
  });

  test("FRAGMENT_CROSSES_PAGE: a later fragment", () => {
    const ring = txRing();
    write(ring, 0, [req({ flags: moreData, id: 1, size: 300 }), req({ flags: moreData, offset: 4000, id: 2, size: 96 }), req({ offset: 4095, id: 3, size: 2 })]);
    expectError(parseTxPacket(ring, 0, 3), { code: "FRAGMENT_CROSSES_PAGE", field: "tx_request[2].offset", value: 4095, fatal: true, slots: 3, ids: [] });
    // An offset beyond the page is caught too, whatever the size.
    write(ring, 0, [req({ flags: moreData, id: 1, size: 300 }), req({ offset: 0xffff, id: 2, size: 0 })]);
    expectError(parseTxPacket(ring, 0, 2), { code: "FRAGMENT_CROSSES_PAGE", field: "tx_request[1].offset", value: 0xffff, fatal: true, slots: 2, ids: [] });
  });

  test("TOO_MANY_SLOTS: 21 or more data slots is fatal, and reading stops at the limit", () => {
    const ring = txRing();
    for (const n of [21, 40]) {
      write(ring, 0, chain(n));
      // The parser gives up when the 20th request still asks for more: 20 slots read.
      expectError(parseTxPacket(ring, 0, n), { code: "TOO_MANY_SLOTS", field: "tx_request.flags", value: "more_data", fatal: true, slots: 20, ids: [] });
    }
  });

  test("CHAIN_NOT_TERMINATED: more_data on the last published request", () => {
    const ring = txRing();
    write(ring, 0, [req({ flags: moreData, id: 1, size: 300 }), req({ flags: moreData, id: 2, size: 100 }), req({ flags: moreData, id: 3, size: 100 })]);
    expectError(parseTxPacket(ring, 0, 3), { code: "CHAIN_NOT_TERMINATED", field: "tx_request.flags", value: "more_data", fatal: true, slots: 3, ids: [] });
    expectError(parseTxPacket(ring, 0, 1), { code: "CHAIN_NOT_TERMINATED", field: "tx_request.flags", value: "more_data", fatal: true, slots: 1, ids: [] });
  });

  test("CHAIN_NOT_TERMINATED after extras", () => {
    const ring = txRing();
    write(ring, 0, [req({ flags: moreData | extraInfo, id: 1, size: 300 }), extra(GSO)]);
    expectError(parseTxPacket(ring, 0, 2), { code: "CHAIN_NOT_TERMINATED", field: "tx_request.flags", value: "more_data", fatal: true, slots: 2, ids: [] });
  });

  test("EXTRA_CHAIN_NOT_TERMINATED: MORE on the last published slot, or no extra slot at all", () => {
    const ring = txRing();
    write(ring, 0, [req({ flags: extraInfo, id: 1, size: 60 }), extra(GSO, true)]);
    const want = { code: "EXTRA_CHAIN_NOT_TERMINATED", field: "tx_extra_info.flags", value: "MORE", fatal: true, slots: 1, ids: [] } as const;
    expectError(parseTxPacket(ring, 0, 2), { ...want, ids: [] });
    expectError(parseTxPacket(ring, 0, 1), { ...want, ids: [] });
  });

  test("BAD_EXTRA_TYPE: a repeated extra type", () => {
    const ring = txRing();
    write(ring, 0, [req({ flags: extraInfo, id: 1, size: 60 }), extra(GSO, true), extra({ ...GSO, size: 9000 })]);
    expectError(parseTxPacket(ring, 0, 3), { code: "BAD_EXTRA_TYPE", field: "tx_extra_info.type", value: EXTRA_TYPE.gso, fatal: true, slots: 1, ids: [] });
    write(ring, 0, [req({ flags: extraInfo, id: 1, size: 60 }), extra(HASH, true), extra(MCAST_ADD, true), extra(HASH)]);
    expectError(parseTxPacket(ring, 0, 4), { code: "BAD_EXTRA_TYPE", field: "tx_extra_info.type", value: EXTRA_TYPE.hash, fatal: true, slots: 1, ids: [] });
  });

  test("BAD_EXTRA_TYPE: an unknown type (NONE) in the chain", () => {
    const ring = txRing();
    write(ring, 0, [req({ flags: extraInfo, id: 1, size: 60 }), extra(GSO, true)]);
    ring.view.setUint8(ring.slotOffset(2), 0); // type NONE
    ring.view.setUint8(ring.slotOffset(2) + 1, 0);
    expectError(parseTxPacket(ring, 0, 3), { code: "BAD_EXTRA_TYPE", field: "tx_extra_info.type", value: 0, fatal: true, slots: 1, ids: [] });
  });

  test("BAD_GSO in the chain", () => {
    const ring = txRing();
    write(ring, 0, [req({ flags: extraInfo, id: 1, size: 60 }), extra({ ...GSO, size: 0 })]);
    expectError(parseTxPacket(ring, 0, 2), { code: "BAD_GSO", field: "tx_extra_info.gso.size", value: 0, fatal: true, slots: 1, ids: [] });
  });
});

// ---------------------------------------------------------------------------------------------
// Randomized: round trip of valid packets, then single-field mutations

/** Edge values are where the bugs are: pick them often. */
function edgy(rng: Rng, min: number, max: number): number {
  const r = rng.float();
  if (r < 0.15) return min;
  if (r < 0.3) return max;
  return rng.int(min, max);
}

function randomExtra(rng: Rng, type: number): ExtraInfo {
  switch (type) {
    case EXTRA_TYPE.gso:
      return { type: EXTRA_TYPE.gso, size: edgy(rng, 1, 0xffff), gsoType: rng.pick([GSO_TYPE.tcpv4, GSO_TYPE.tcpv6]), features: rng.u16() };
    case EXTRA_TYPE.mcastAdd:
    case EXTRA_TYPE.mcastDel:
      return { type, addr: Uint8Array.from({ length: 6 }, () => rng.u8()) };
    default:
      return { type: EXTRA_TYPE.hash, hashType: rng.u8(), alg: rng.u8(), value: rng.u32() };
  }
}

interface Generated {
  slots: Slot[];
  expected: TxPacket;
}

/**
 * A random valid packet: 1..18 fragments, none crossing its page, total 14..65535, 0..4 extras
 * of distinct types. The first fragment's own length is kept >= 14 so the packet stays valid
 * whether or not the parser requires the Ethernet header in the first fragment.
 */
function randomPacket(rng: Rng): Generated {
  for (;;) {
    const n = rng.int(1, 18);
    const frags: TxFragment[] = [];
    for (let i = 0; i < n; i++) {
      const offset = edgy(rng, 0, i === 0 ? PAGE_SIZE - 14 : PAGE_SIZE - 1);
      const size = edgy(rng, i === 0 ? 14 : 1, PAGE_SIZE - offset);
      frags.push({ gref: rng.bool(0.1) ? 0xffffffff : rng.u32(), offset, size, id: rng.u16() });
    }
    const total = frags.reduce((s, f) => s + f.size, 0);
    if (total > 0xffff) continue;

    const types = rng.bool(0.5) ? [] : rng.shuffle([EXTRA_TYPE.gso, EXTRA_TYPE.mcastAdd, EXTRA_TYPE.mcastDel, EXTRA_TYPE.hash]).slice(0, rng.int(1, 4));
    const extras = types.map((t) => randomExtra(rng, t));
    const flags = (rng.u16() & (csumBlank | dataValidated)) | (n > 1 ? moreData : 0) | (extras.length > 0 ? extraInfo : 0);

    const f0 = frags[0]!;
    const slots: Slot[] = [{ req: { gref: f0.gref, offset: f0.offset, flags, id: f0.id, size: total } }];
    extras.forEach((e, i) => slots.push(extra(e, i < extras.length - 1)));
    for (let i = 1; i < n; i++) {
      const f = frags[i]!;
      const fl = (rng.u16() & (csumBlank | dataValidated)) | (i < n - 1 ? moreData : 0);
      slots.push({ req: { gref: f.gref, offset: f.offset, flags: fl, id: f.id, size: f.size } });
    }
    return { slots, expected: { size: total, flags: flags & (csumBlank | dataValidated), frags, extras, slots: slots.length } };
  }
}

/** Start indices: anywhere, and often just before the u32 wrap. */
function randomStart(rng: Rng): number {
  return rng.bool(0.25) ? (0xffffffff - rng.int(0, 24)) >>> 0 : rng.u32();
}

const FIELDS = [
  { off: TX_REQUEST.gref, width: 4 },
  { off: TX_REQUEST.offset, width: 2 },
  { off: TX_REQUEST.flags, width: 2 },
  { off: TX_REQUEST.id, width: 2 },
  { off: TX_REQUEST.size, width: 2 },
] as const;

const DROP_CODES: ProtocolErrorCode[] = ["SIZE_MISMATCH", "TOO_MANY_SLOTS", "PACKET_TOO_SHORT", "PACKET_TOO_LONG"];
const FATAL_CODES: ProtocolErrorCode[] = ["FRAGMENT_CROSSES_PAGE", "TOO_MANY_SLOTS", "CHAIN_NOT_TERMINATED", "EXTRA_CHAIN_NOT_TERMINATED", "BAD_EXTRA_TYPE", "BAD_GSO"];

/**
 * Whatever the parser returns must agree with the ring contents and the rules; returns a
 * description of the first violation, or null.
 */
function violation(ring: BackRing, start: number, available: number, r: TxPacket | TxParseError): string | null {
  const at = (i: number) => decodeTxRequest(ring.view, ring.slotOffset(start + i));
  const first = at(0);
  if (isTxParseError(r)) {
    if (!(r.error instanceof ProtocolError)) return "error is not a ProtocolError";
    if (!(r.fatal ? FATAL_CODES : DROP_CODES).includes(r.error.code)) return `unexpected code ${r.error.code} (fatal=${r.fatal})`;
    if (typeof r.error.field !== "string" || r.error.field === "") return "no field";
    if (typeof r.error.value !== "number" && typeof r.error.value !== "string") return "no value";
    if (!(r.slots >= 1 && r.slots <= available)) return `slots ${r.slots} outside 1..${available}`;
    if (r.fatal) return r.ids.length === 0 ? null : "fatal error with ids";
    // A dropped packet: ids are the data requests, which follow the first request's extras.
    const nExtras = r.slots - r.ids.length;
    if (r.ids.length < 1 || r.ids.length > DEFAULT_TX_LIMITS.fatalSlots) return `${r.ids.length} ids`;
    if (nExtras < 0 || (nExtras > 0) !== ((first.flags & extraInfo) !== 0)) return `${nExtras} extras vs flags ${first.flags}`;
    for (let j = 0; j < r.ids.length; j++) {
      const idx = j === 0 ? 0 : nExtras + j;
      if (at(idx).id !== r.ids[j]) return `ids[${j}]=${r.ids[j]} but slot ${idx} holds id ${at(idx).id}`;
    }
    return null;
  }

  const p = r;
  if (p.size !== first.size || p.flags !== (first.flags & (csumBlank | dataValidated))) return "size/flags differ from the first request";
  if (p.size < 14 || p.size > 0xffff) return `size ${p.size} out of range`;
  if (p.frags.length < 1 || p.frags.length > DEFAULT_TX_LIMITS.maxSlots) return `${p.frags.length} frags`;
  if (p.slots !== p.frags.length + p.extras.length || p.slots > available) return `slots ${p.slots}`;
  if ((p.extras.length > 0) !== ((first.flags & extraInfo) !== 0)) return "extras vs extra_info flag";
  const seen = new Set<number>();
  for (let i = 0; i < p.extras.length; i++) {
    const d = decodeExtraInfo(ring.view, ring.slotOffset(start + 1 + i));
    if (d instanceof ProtocolError || !Bun.deepEquals(d.extra, p.extras[i])) return `extras[${i}] differs from the ring`;
    if (d.more !== i < p.extras.length - 1) return `extras[${i}] MORE flag`;
    if (seen.has(d.extra.type)) return "repeated extra type";
    seen.add(d.extra.type);
  }
  let sum = 0;
  for (let j = 0; j < p.frags.length; j++) {
    const f = p.frags[j]!;
    const q = at(j === 0 ? 0 : p.extras.length + j);
    if (f.gref !== q.gref || f.offset !== q.offset || f.id !== q.id) return `frags[${j}] differs from the ring`;
    if (j > 0 && f.size !== q.size) return `frags[${j}].size`;
    if (((q.flags & moreData) !== 0) !== j < p.frags.length - 1) return `frags[${j}] more_data`;
    if (f.size < 0 || f.offset + f.size > PAGE_SIZE) return `frags[${j}] crosses the page`;
    sum += f.size;
  }
  if (sum !== p.size) return `fragments add up to ${sum}, not ${p.size}`;
  return null;
}

describe("parsing into a scratch packet", () => {
  test("one-request packets and chains in turn: right fields each time, and a chain takes back the fragment objects it had", () => {
    const ring = txRing();
    const into = scratchTxPacket();
    const chain = (id: number) => [req({ size: 5000, flags: NETTXF.moreData, id, gref: 0x200 + id }), req({ size: 904, id: id + 1, gref: 0x300 + id })];
    write(ring, 0, chain(1));
    const a = expectPacket(parseTxPacket(ring, 0, 2, DEFAULT_TX_LIMITS, into));
    expect(a).toBe(into);
    const second = a.frags[1]!;
    write(ring, 2, [req({ size: 60, id: 9, offset: 100 })]);
    const b = expectPacket(parseTxPacket(ring, 2, 1, DEFAULT_TX_LIMITS, into));
    expect(b.frags).toEqual([{ gref: 0x100, offset: 100, size: 60, id: 9 }]);
    write(ring, 3, chain(5));
    const c = expectPacket(parseTxPacket(ring, 3, 2, DEFAULT_TX_LIMITS, into));
    expect(c.frags).toEqual([
      { gref: 0x205, offset: 0, size: 4096, id: 5 },
      { gref: 0x305, offset: 0, size: 904, id: 6 },
    ]);
    expect([c.size, c.slots]).toEqual([5000, 2]);
    expect(c.frags[1]).toBe(second); // not a new object: a mixed stream makes no garbage
  });
});

describe("randomized", () => {
  test("10,000 random valid packets round-trip exactly", () => {
    const rng = new Rng(0x5eed7001);
    const ring = txRing();
    let extrasSeen = 0;
    let wrapped = 0;
    for (let iter = 0; iter < 10_000; iter++) {
      const { slots, expected } = randomPacket(rng);
      const start = randomStart(rng);
      write(ring, start, slots);
      // Junk right after the packet, published: the parser must not read it.
      writeSlot(ring, start + slots.length, req({ gref: rng.u32(), offset: rng.u16(), flags: 0xffff, id: rng.u16(), size: rng.u16() }));
      const available = slots.length + rng.int(0, 4);
      const got = parseTxPacket(ring, start, available);
      if (!Bun.deepEquals(got, expected)) expect({ iter, start, got }).toEqual({ iter, start, got: expected });
      if (expected.extras.length > 0) extrasSeen++;
      if (start + slots.length > 0xffffffff) wrapped++;
    }
    // The generator really covered extras and the index wrap.
    expect(extrasSeen).toBeGreaterThan(3000);
    expect(wrapped).toBeGreaterThan(500);
  });

  test("10,000 single-field mutations: a consistent packet or a ProtocolError, never a throw; the same parsed into a scratch", () => {
    const rng = new Rng(0xbadc0de);
    const ring = txRing();
    const scratch = scratchTxPacket();
    const outcomes = new Map<string, number>();
    for (let iter = 0; iter < 10_000; iter++) {
      const { slots } = randomPacket(rng);
      const start = randomStart(rng);
      write(ring, start, slots);
      // Published junk after the packet: mutations that extend a chain run into it.
      const after = rng.int(0, 3);
      for (let k = 0; k < after; k++) {
        writeSlot(ring, start + slots.length + k, req({ gref: rng.u32(), offset: rng.u16(), flags: rng.u16(), id: rng.u16(), size: rng.u16() }));
      }
      let available = slots.length + after;

      let what: string;
      if (rng.bool(0.1)) {
        available = rng.int(1, slots.length);
        what = `available=${available}`;
      } else {
        const slot = rng.int(0, slots.length - 1);
        const field = rng.pick(FIELDS);
        const off = ring.slotOffset(start + slot) + field.off;
        const max = field.width === 4 ? 0xffffffff : 0xffff;
        const old = field.width === 4 ? ring.view.getUint32(off, true) : ring.view.getUint16(off, true);
        const choice = rng.int(0, 5);
        const value =
          choice === 0 ? rng.int(0, max)
          : choice === 1 ? (old ^ (1 << rng.int(0, field.width * 8 - 1))) >>> 0
          : choice === 2 ? Math.min(max, old + 1)
          : choice === 3 ? Math.max(0, old - 1)
          : choice === 4 ? rng.pick([0, max, 13, 14, 4095, 4096, 4097])
          : rng.int(0, 31); // small values: flag combinations, extra types
        if (field.width === 4) ring.view.setUint32(off, value, true);
        else ring.view.setUint16(off, value, true);
        what = `slot ${slot} byte +${field.off} ${old} -> ${value}`;
      }

      let got: TxPacket | TxParseError;
      try {
        got = parseTxPacket(ring, start, available);
      } catch (e) {
        throw new Error(`iter ${iter} (${what}): parseTxPacket threw ${String(e)}`);
      }
      const bad = violation(ring, start, available, got);
      if (bad !== null) throw new Error(`iter ${iter} (${what}): ${bad}`);
      // Parsed into the one scratch packet every iteration: the same verdict, field for field;
      // a valid packet comes back as the scratch itself.
      const again = parseTxPacket(ring, start, available, DEFAULT_TX_LIMITS, scratch);
      if (!Bun.deepEquals(again, got)) expect({ iter, what, again }).toEqual({ iter, what, again: got });
      if (!isTxParseError(got) && again !== scratch) throw new Error(`iter ${iter}: a valid packet did not come back in the scratch`);
      const key = isTxParseError(got) ? `${got.fatal ? "fatal" : "drop"}:${got.error.code}` : "valid";
      outcomes.set(key, (outcomes.get(key) ?? 0) + 1);
    }
    // The mutations reached the interesting verdicts, not just one of them.
    for (const key of [
      "valid",
      "drop:SIZE_MISMATCH",
      "drop:PACKET_TOO_SHORT",
      "fatal:FRAGMENT_CROSSES_PAGE",
      "fatal:CHAIN_NOT_TERMINATED",
      "fatal:EXTRA_CHAIN_NOT_TERMINATED",
      "fatal:BAD_EXTRA_TYPE",
      "fatal:BAD_GSO",
    ]) {
      expect({ key, seen: (outcomes.get(key) ?? 0) > 0 }).toEqual({ key, seen: true });
    }
  });
});
