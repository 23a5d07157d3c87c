/**
 * parseRxPacket: a front end reading a chain of netif_rx_responses (plus extras) off a ring page.
 * Unlike TX, nothing here is fatal: a bad packet is dropped, its slots and ids reported so the
 * buffers can be reposted, and the next packet must still parse.
 */
import { describe, expect, test } from "bun:test";
import {
  decodeExtraInfo,
  decodeRxResponse,
  DEFAULT_RX_LIMITS,
  encodeExtraInfo,
  encodeRxResponse,
  EXTRA_TYPE,
  FrontRing,
  GSO_TYPE,
  isRxParseError,
  NETRXF,
  PAGE_SIZE,
  parseRxPacket,
  ProtocolError,
  RX_RESPONSE,
  RX_RESPONSE_SIZE,
  rxSlotsFor,
  scratchRxPacket,
  type ExtraInfo,
  type ProtocolErrorCode,
  type RxPacket,
  type RxParseError,
  type RxResponse,
} from "../src/protocol/index.ts";
import { Rng } from "./helpers/prng.ts";

type Slot = { rsp: RxResponse } | { extra: ExtraInfo; more: boolean };

function rxRing(): FrontRing {
  return new FrontRing(new Uint8Array(new SharedArrayBuffer(PAGE_SIZE)), RX_RESPONSE_SIZE);
}

function rsp(r: Partial<RxResponse> & { status: number }): Slot {
  return { rsp: { id: 0, offset: 0, flags: 0, ...r } };
}

function extra(e: ExtraInfo, more = false): Slot {
  return { extra: e, more };
}

function writeSlot(ring: FrontRing, idx: number, s: Slot): void {
  if ("rsp" in s) encodeRxResponse(ring.view, ring.slotOffset(idx), s.rsp);
  else encodeExtraInfo(ring.view, ring.slotOffset(idx), s.extra, s.more);
}

function write(ring: FrontRing, start: number, slots: Slot[]): number {
  slots.forEach((s, i) => writeSlot(ring, start + i, s));
  return slots.length;
}

const GSO: ExtraInfo = { type: EXTRA_TYPE.gso, size: 1448, gsoType: GSO_TYPE.tcpv6, features: 0 };
const HASH: ExtraInfo = { type: EXTRA_TYPE.hash, hashType: 1, alg: 1, value: 0x01020304 };
const { dataValidated, csumBlank, moreData, extraInfo, gsoPrefix } = NETRXF;

function expectPacket(r: RxPacket | RxParseError): RxPacket {
  if (isRxParseError(r)) throw new Error(`expected a packet, got ${r.error.message} (slots=${r.slots})`);
  return r;
}

interface WantError {
  code: ProtocolErrorCode;
  field: string;
  value: number | string;
  slots: number;
  ids: number[];
}

function expectError(r: RxPacket | RxParseError, want: WantError): void {
  if (!isRxParseError(r)) throw new Error(`expected ${want.code}, got a packet of ${r.size} bytes`);
  expect(r.error).toBeInstanceOf(ProtocolError);
  const { code, field, value } = r.error;
  expect({ code, field, value, slots: r.slots, ids: r.ids }).toEqual(want);
}

/** `n` chained 100-byte responses, ids 100.. */
function chain(n: number, size = 100): Slot[] {
  return Array.from({ length: n }, (_, i) => rsp({ id: 100 + i, flags: i < n - 1 ? moreData : 0, status: size }));
}

const range = (from: number, n: number) => Array.from({ length: n }, (_, i) => from + i);

describe("valid packets", () => {
  test("single response", () => {
    const ring = rxRing();
    write(ring, 0, [rsp({ id: 5, offset: 0, flags: dataValidated | csumBlank, status: 60 }), rsp({ id: 6, flags: 0xffff, status: -7 })]);
    expect(parseRxPacket(ring, 0, 2)).toEqual({
      size: 60,
      flags: dataValidated | csumBlank,
      frags: [{ id: 5, offset: 0, size: 60, slot: 0 }],
      extras: [],
      slots: 1,
    });
  });

  test("multi-fragment: size is the sum of every response's own size", () => {
    const ring = rxRing();
    write(ring, 3, [rsp({ id: 1, flags: moreData, status: 4096 }), rsp({ id: 2, offset: 10, flags: moreData, status: 4086 }), rsp({ id: 3, offset: 4000, status: 96 })]);
    const p = expectPacket(parseRxPacket(ring, 3, 3));
    expect(p.size).toBe(4096 + 4086 + 96);
    expect(p.slots).toBe(3);
    expect(p.frags).toEqual([
      { id: 1, offset: 0, size: 4096, slot: 0 },
      { id: 2, offset: 10, size: 4086, slot: 1 },
      { id: 3, offset: 4000, size: 96, slot: 2 },
    ]);
  });

  test("extras follow the first response; fragment slot positions skip them", () => {
    const ring = rxRing();
    write(ring, 0, [
      rsp({ id: 1, flags: extraInfo | moreData | dataValidated, status: 1000 }),
      extra(GSO, true),
      extra(HASH),
      rsp({ id: 2, flags: moreData, status: 2000 }),
      rsp({ id: 3, status: 3 }),
    ]);
    const p = expectPacket(parseRxPacket(ring, 0, 5));
    expect(p.extras).toEqual([GSO, HASH]);
    expect(p.slots).toBe(5);
    expect(p.size).toBe(3003);
    expect(p.frags.map((f) => [f.id, f.slot])).toEqual([
      [1, 0],
      [2, 3],
      [3, 4],
    ]);
    expect(p.flags & (dataValidated | csumBlank)).toBe(dataValidated);
  });

  test("status 0 (an empty fragment) and offset + size == 4096 are legal", () => {
    const ring = rxRing();
    write(ring, 0, [rsp({ id: 1, flags: moreData, status: 0 }), rsp({ id: 2, offset: 4095, status: 1 })]);
    expect(expectPacket(parseRxPacket(ring, 0, 2)).size).toBe(1);
  });

  test("a packet across the index wrap (0xFFFFFFFF → 0x1)", () => {
    const ring = rxRing();
    // Byte offsets by hand: 64 + slot * 8.
    encodeRxResponse(ring.view, 64 + 255 * 8, { id: 9, offset: 0, flags: extraInfo | moreData, status: 1500 });
    encodeExtraInfo(ring.view, 64 + 0 * 8, GSO, false);
    encodeRxResponse(ring.view, 64 + 1 * 8, { id: 10, offset: 0, flags: 0, status: 500 });
    const p = expectPacket(parseRxPacket(ring, 0xffffffff, 3));
    expect(p).toEqual({
      size: 2000,
      flags: 0, // framing bits (extra_info, more_data) are masked off
      frags: [
        { id: 9, offset: 0, size: 1500, slot: 0 },
        { id: 10, offset: 0, size: 500, slot: 2 },
      ],
      extras: [GSO],
      slots: 3,
    });
  });

  test("no published response is a RangeError (caller bug)", () => {
    expect(() => parseRxPacket(rxRing(), 0, 0)).toThrow(RangeError);
  });
});

describe("dropped packets", () => {
  test("negative status → BAD_STATUS, returned not thrown, slots and ids reported", () => {
    const ring = rxRing();
    for (const status of [-1, -2]) {
      write(ring, 0, [rsp({ id: 77, status })]);
      expectError(parseRxPacket(ring, 0, 1), { code: "BAD_STATUS", field: "rx_response[0].status", value: status, slots: 1, ids: [77] });
    }
  });

  test("an error in the middle still consumes the chain to its end", () => {
    const ring = rxRing();
    write(ring, 0, [...chain(3), rsp({ id: 9, status: 60 })]);
    ring.view.setInt16(ring.slotOffset(1) + RX_RESPONSE.status, -1, true);
    expectError(parseRxPacket(ring, 0, 4), { code: "BAD_STATUS", field: "rx_response[1].status", value: -1, slots: 3, ids: [100, 101, 102] });
    expect(expectPacket(parseRxPacket(ring, 3, 1)).frags[0]!.id).toBe(9);
  });

  test.each([-3, -32768])("status %p (below DROPPED) → BAD_STATUS", (status) => {
    const ring = rxRing();
    write(ring, 0, [rsp({ id: 1, flags: moreData, status: 10 }), rsp({ id: 2, status })]);
    expectError(parseRxPacket(ring, 0, 2), { code: "BAD_STATUS", field: "rx_response[1].status", value: status, slots: 2, ids: [1, 2] });
  });

  test("offset + size > 4096 → FRAGMENT_CROSSES_PAGE", () => {
    const ring = rxRing();
    write(ring, 0, [rsp({ id: 1, offset: 4000, status: 97 })]);
    expectError(parseRxPacket(ring, 0, 1), { code: "FRAGMENT_CROSSES_PAGE", field: "rx_response[0].offset", value: 4000, slots: 1, ids: [1] });
    write(ring, 0, [rsp({ id: 1, offset: 0, status: 4097 })]);
    expectError(parseRxPacket(ring, 0, 1), { code: "FRAGMENT_CROSSES_PAGE", field: "rx_response[0].offset", value: 0, slots: 1, ids: [1] });
    write(ring, 0, [rsp({ id: 1, flags: moreData, status: 10 }), rsp({ id: 2, offset: 0xffff, status: 0 })]);
    expectError(parseRxPacket(ring, 0, 2), { code: "FRAGMENT_CROSSES_PAGE", field: "rx_response[1].offset", value: 0xffff, slots: 2, ids: [1, 2] });
  });

  test("gso_prefix → BAD_FLAGS with the whole flags word", () => {
    const ring = rxRing();
    write(ring, 0, [rsp({ id: 1, flags: gsoPrefix | dataValidated, status: 60 })]);
    expectError(parseRxPacket(ring, 0, 1), { code: "BAD_FLAGS", field: "rx_response[0].flags", value: gsoPrefix | dataValidated, slots: 1, ids: [1] });
    write(ring, 0, [rsp({ id: 1, flags: moreData, status: 60 }), rsp({ id: 2, flags: gsoPrefix, status: 60 })]);
    expectError(parseRxPacket(ring, 0, 2), { code: "BAD_FLAGS", field: "rx_response[1].flags", value: gsoPrefix, slots: 2, ids: [1, 2] });
  });

  test("the first error found is the one reported", () => {
    const ring = rxRing();
    write(ring, 0, [rsp({ id: 1, flags: moreData | gsoPrefix, status: 60 }), rsp({ id: 2, status: -1 })]);
    expectError(parseRxPacket(ring, 0, 2), { code: "BAD_FLAGS", field: "rx_response[0].flags", value: moreData | gsoPrefix, slots: 2, ids: [1, 2] });
  });

  test("more_data past the published responses → CHAIN_NOT_TERMINATED, everything published consumed", () => {
    const ring = rxRing();
    write(ring, 0, chain(4));
    expectError(parseRxPacket(ring, 0, 3), { code: "CHAIN_NOT_TERMINATED", field: "rx_response.flags", value: "more_data", slots: 3, ids: [100, 101, 102] });
    expectError(parseRxPacket(ring, 0, 1), { code: "CHAIN_NOT_TERMINATED", field: "rx_response.flags", value: "more_data", slots: 1, ids: [100] });
  });

  test("extras past the published responses → EXTRA_CHAIN_NOT_TERMINATED", () => {
    const ring = rxRing();
    write(ring, 0, [rsp({ id: 4, flags: extraInfo, status: 60 }), extra(GSO, true)]);
    expectError(parseRxPacket(ring, 0, 2), { code: "EXTRA_CHAIN_NOT_TERMINATED", field: "rx_extra_info.flags", value: "MORE", slots: 2, ids: [4] });
    expectError(parseRxPacket(ring, 0, 1), { code: "EXTRA_CHAIN_NOT_TERMINATED", field: "rx_extra_info.flags", value: "MORE", slots: 1, ids: [4] });
  });

  test("too many slots: the chain is read to its end and the next packet is intact", () => {
    const ring = rxRing();
    write(ring, 250, [...chain(19), rsp({ id: 555, status: 70 })]); // also crosses the ring's end
    expectError(parseRxPacket(ring, 250, 20), { code: "TOO_MANY_SLOTS", field: "rx_response.flags", value: 19, slots: 19, ids: range(100, 19) });
    expect(parseRxPacket(ring, 250 + 19, 1)).toEqual({ size: 70, flags: 0, frags: [{ id: 555, offset: 0, size: 70, slot: 0 }], extras: [], slots: 1 });
    // 18 is fine.
    write(ring, 0, chain(18));
    expect(expectPacket(parseRxPacket(ring, 0, 18)).slots).toBe(18);
  });

  test("PACKET_TOO_LONG: default limit is 65535 + 14", () => {
    const ring = rxRing();
    write(ring, 0, chain(17, 4096)); // 69632 bytes in 17 slots
    expectError(parseRxPacket(ring, 0, 17), { code: "PACKET_TOO_LONG", field: "rx_response.status", value: 69632, slots: 17, ids: range(100, 17) });
    // 65549 = 16 * 4096 + 13 is the largest accepted.
    write(ring, 0, [...chain(16, 4096).map((s, i) => (i === 15 ? rsp({ id: 115, flags: moreData, status: 4096 }) : s)), rsp({ id: 116, status: 13 })]);
    expect(expectPacket(parseRxPacket(ring, 0, 17)).size).toBe(65549);
    expect(DEFAULT_RX_LIMITS).toEqual({ maxSlots: 18, maxPacketSize: 65549 });
  });

  test("PACKET_TOO_LONG with a lowered limit", () => {
    const limits = { ...DEFAULT_RX_LIMITS, maxPacketSize: 1514 };
    const ring = rxRing();
    write(ring, 0, [rsp({ id: 1, flags: moreData, status: 1000 }), rsp({ id: 2, status: 515 })]);
    expectError(parseRxPacket(ring, 0, 2, limits), { code: "PACKET_TOO_LONG", field: "rx_response.status", value: 1515, slots: 2, ids: [1, 2] });
    write(ring, 0, [rsp({ id: 1, flags: moreData, status: 1000 }), rsp({ id: 2, status: 514 })]);
    expect(expectPacket(parseRxPacket(ring, 0, 2, limits)).size).toBe(1514);
  });

  test("a bad extra in the chain → BAD_EXTRA_TYPE / BAD_GSO", () => {
    const ring = rxRing();
    write(ring, 0, [rsp({ id: 1, flags: extraInfo, status: 60 }), extra(GSO, true), extra({ ...GSO, size: 9000 })]);
    const dup = parseRxPacket(ring, 0, 3);
    expect(isRxParseError(dup) && dup.error).toMatchObject({ code: "BAD_EXTRA_TYPE", field: "rx_extra_info.type", value: EXTRA_TYPE.gso });
    write(ring, 0, [rsp({ id: 1, flags: extraInfo, status: 60 }), extra({ ...GSO, gsoType: 7 })]);
    const gso = parseRxPacket(ring, 0, 2);
    expect(isRxParseError(gso) && gso.error).toMatchObject({ code: "BAD_GSO", field: "rx_extra_info.gso.type", value: 7 });
  });

  /**
   * REPORTED BUG (src/protocol/rx-packet.ts, the `chain instanceof ProtocolError` branch):
   * any extra-chain error sets `used = available`, so a bad extra *type* (whose chain end is
   * perfectly knowable from the MORE flags) makes the front end discard every packet published
   * after it. Linux netfront (xennet_get_extras) keeps following MORE to the chain's end and
   * drops only the bad packet. Only EXTRA_CHAIN_NOT_TERMINATED should consume everything.
   */
  test("a bad extra type drops only its own packet; the next packet is intact", () => {
    const ring = rxRing();
    write(ring, 0, [
      rsp({ id: 1, flags: extraInfo | moreData, status: 1000 }),
      extra(GSO, true),
      extra({ ...GSO, size: 1 }), // repeated type: BAD_EXTRA_TYPE, but MORE is clear: the chain ends here
      rsp({ id: 2, status: 500 }),
      rsp({ id: 3, status: 60 }), // the next packet
    ]);
    expectError(parseRxPacket(ring, 0, 5), { code: "BAD_EXTRA_TYPE", field: "rx_extra_info.type", value: EXTRA_TYPE.gso, slots: 4, ids: [1, 2] });
    expect(expectPacket(parseRxPacket(ring, 4, 1)).frags[0]!.id).toBe(3);
  });
});

describe("parsing into a scratch packet", () => {
  test("one-slot packets in a row: each fills the scratch, returned as is; chains after them parse right", () => {
    const ring = rxRing();
    const into = scratchRxPacket();
    write(ring, 0, [
      rsp({ id: 5, offset: 0, flags: dataValidated | csumBlank, status: 60 }),
      rsp({ id: 6, offset: 100, flags: csumBlank, status: 1514 }),
      rsp({ id: 7, flags: extraInfo | moreData | dataValidated, status: 1000 }),
      extra(GSO, true),
      extra(HASH),
      rsp({ id: 8, flags: moreData, status: 2000 }),
      rsp({ id: 9, offset: 4000, status: 3 }),
      rsp({ id: 10, offset: 7, status: 14 }),
      rsp({ id: 11, flags: moreData, status: 4096 }),
      rsp({ id: 12, status: 10 }),
      rsp({ id: 13, flags: moreData, status: 4096 }),
      rsp({ id: 14, flags: moreData, status: 4096 }),
      rsp({ id: 15, status: 20 }),
      rsp({ id: 16, flags: moreData, status: 30 }),
      rsp({ id: 17, status: 40 }),
    ]);
    const want: RxPacket[] = [
      { size: 60, flags: dataValidated | csumBlank, frags: [{ id: 5, offset: 0, size: 60, slot: 0 }], extras: [], slots: 1 },
      { size: 1514, flags: csumBlank, frags: [{ id: 6, offset: 100, size: 1514, slot: 0 }], extras: [], slots: 1 },
      {
        size: 3003,
        flags: dataValidated,
        frags: [
          { id: 7, offset: 0, size: 1000, slot: 0 },
          { id: 8, offset: 0, size: 2000, slot: 3 },
          { id: 9, offset: 4000, size: 3, slot: 4 },
        ],
        extras: [GSO, HASH],
        slots: 5,
      },
      { size: 14, flags: 0, frags: [{ id: 10, offset: 7, size: 14, slot: 0 }], extras: [], slots: 1 },
      {
        size: 4106,
        flags: 0,
        frags: [
          { id: 11, offset: 0, size: 4096, slot: 0 },
          { id: 12, offset: 0, size: 10, slot: 1 },
        ],
        extras: [],
        slots: 2,
      },
      {
        size: 8212,
        flags: 0,
        frags: [
          { id: 13, offset: 0, size: 4096, slot: 0 },
          { id: 14, offset: 0, size: 4096, slot: 1 },
          { id: 15, offset: 0, size: 20, slot: 2 },
        ],
        extras: [],
        slots: 3,
      },
      {
        size: 70,
        flags: 0,
        frags: [
          { id: 16, offset: 0, size: 30, slot: 0 },
          { id: 17, offset: 0, size: 40, slot: 1 },
        ],
        extras: [],
        slots: 2,
      },
    ];
    let at = 0;
    for (const w of want) {
      const p = parseRxPacket(ring, at, 15 - at, DEFAULT_RX_LIMITS, into);
      expect(p).toBe(into);
      expect(p).toEqual(w);
      expect(parseRxPacket(ring, at, 15 - at)).toEqual(w);
      at += w.slots;
    }
  });

  test("errors are new objects, the same as without a scratch; the scratch still works after them", () => {
    const ring = rxRing();
    const into = scratchRxPacket();
    write(ring, 0, [
      rsp({ id: 1, flags: gsoPrefix, status: -1 }),
      rsp({ id: 2, offset: 4000, status: 100 }),
      rsp({ id: 3, flags: moreData, status: -2 }),
      rsp({ id: 4, status: 5000 }),
      rsp({ id: 5, status: 60 }),
    ]);
    const want: WantError[] = [
      { code: "BAD_FLAGS", field: "rx_response[0].flags", value: gsoPrefix, slots: 1, ids: [1] },
      { code: "FRAGMENT_CROSSES_PAGE", field: "rx_response[0].offset", value: 4000, slots: 1, ids: [2] },
      { code: "BAD_STATUS", field: "rx_response[0].status", value: -2, slots: 2, ids: [3, 4] },
    ];
    let at = 0;
    for (const w of want) {
      const p = parseRxPacket(ring, at, 5 - at, DEFAULT_RX_LIMITS, into);
      expect(p).not.toBe(into);
      expectError(p, w);
      at += w.slots;
    }
    expect(parseRxPacket(ring, 4, 1, DEFAULT_RX_LIMITS, into)).toEqual({ size: 60, flags: 0, frags: [{ id: 5, offset: 0, size: 60, slot: 0 }], extras: [], slots: 1 });
    const limits = { ...DEFAULT_RX_LIMITS, maxPacketSize: 59 };
    expectError(parseRxPacket(ring, 4, 1, limits, into), { code: "PACKET_TOO_LONG", field: "rx_response.status", value: 60, slots: 1, ids: [5] });
    expectError(parseRxPacket(ring, 4, 1, { ...DEFAULT_RX_LIMITS, maxSlots: 0 }, into), {
      code: "TOO_MANY_SLOTS",
      field: "rx_response.flags",
      value: 1,
      slots: 1,
      ids: [5],
    });
  });

  test("10,000 random packets, one-slot ones often, damaged or not: into one scratch or not, the same result", () => {
    const rng = new Rng(0x5c7a7c4);
    const ring = rxRing();
    const into = scratchRxPacket();
    for (let iter = 0; iter < 10_000; iter++) {
      let a = randomPacket(rng);
      if (rng.bool(0.5)) {
        const offset = edgy(rng, 0, PAGE_SIZE);
        const r = { id: rng.u16(), offset, flags: rng.u16() & (dataValidated | csumBlank), status: edgy(rng, 0, PAGE_SIZE - offset) };
        a = {
          slots: [rsp(r)],
          expected: { size: r.status, flags: r.flags, frags: [{ id: r.id, offset, size: r.status, slot: 0 }], extras: [], slots: 1 },
          dataSlots: [0],
        };
      }
      const start = rng.u32();
      write(ring, start, a.slots);
      if (rng.bool(0.3)) {
        const off = ring.slotOffset(start + rng.int(0, a.slots.length - 1)) + rng.pick([0, 2, 4, 6]);
        ring.view.setUint16(off, rng.pick([rng.u16(), 0xffff, 0x8000, 4096, 4097, gsoPrefix, moreData, extraInfo]), true);
      }
      const fresh = parseRxPacket(ring, start, a.slots.length);
      const got = parseRxPacket(ring, start, a.slots.length, DEFAULT_RX_LIMITS, into);
      if (isRxParseError(fresh) || isRxParseError(got)) {
        const show = (r: RxPacket | RxParseError) =>
          isRxParseError(r) ? { code: r.error.code, field: r.error.field, value: r.error.value, message: r.error.message, slots: r.slots, ids: r.ids } : r;
        if (!Bun.deepEquals(show(got), show(fresh))) expect({ iter, got: show(got) }).toEqual({ iter, got: show(fresh) });
      } else {
        expect(got).toBe(into);
        if (!Bun.deepEquals(got, fresh)) expect({ iter, got }).toEqual({ iter, got: fresh });
      }
    }
  });
});

describe("rxSlotsFor", () => {
  test.each([
    [0, 1],
    [1, 1],
    [4096, 1],
    [4097, 2],
    [8192, 2],
    [65535, 16],
    [65549, 17],
  ])("%p bytes → %p slots", (size, slots) => {
    expect(rxSlotsFor(size)).toBe(slots);
  });
});

// ---------------------------------------------------------------------------------------------
// Randomized

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

function randomPacket(rng: Rng): { slots: Slot[]; expected: RxPacket; dataSlots: number[] } {
  for (;;) {
    const n = rng.int(1, 18);
    const parts = Array.from({ length: n }, () => {
      const offset = edgy(rng, 0, PAGE_SIZE);
      return { id: rng.u16(), offset, status: edgy(rng, 0, PAGE_SIZE - offset) };
    });
    const total = parts.reduce((s, p) => s + p.status, 0);
    if (total > DEFAULT_RX_LIMITS.maxPacketSize) continue;
    const types = rng.bool(0.5) ? [] : rng.shuffle([EXTRA_TYPE.gso, EXTRA_TYPE.mcastAdd, EXTRA_TYPE.mcastDel, EXTRA_TYPE.hash]).slice(0, rng.int(1, 4));
    const extras = types.map((t) => randomExtra(rng, t));
    const slots: Slot[] = [];
    const frags: RxPacket["frags"] = [];
    const dataSlots: number[] = [];
    parts.forEach((p, i) => {
      let flags = (rng.u16() & (dataValidated | csumBlank)) | (i < n - 1 ? moreData : 0);
      if (i === 0 && extras.length > 0) flags |= extraInfo;
      dataSlots.push(slots.length);
      frags.push({ id: p.id, offset: p.offset, size: p.status, slot: slots.length });
      slots.push(rsp({ ...p, flags }));
      if (i === 0) extras.forEach((e, k) => slots.push(extra(e, k < extras.length - 1)));
    });
    const first = slots[0] as { rsp: RxResponse };
    return { slots, expected: { size: total, flags: first.rsp.flags & (dataValidated | csumBlank), frags, extras, slots: slots.length }, dataSlots };
  }
}

const ERROR_CODES: ProtocolErrorCode[] = [
  "BAD_STATUS",
  "FRAGMENT_CROSSES_PAGE",
  "BAD_FLAGS",
  "CHAIN_NOT_TERMINATED",
  "EXTRA_CHAIN_NOT_TERMINATED",
  "BAD_EXTRA_TYPE",
  "BAD_GSO",
  "TOO_MANY_SLOTS",
  "PACKET_TOO_LONG",
];

function violation(ring: FrontRing, start: number, available: number, r: RxPacket | RxParseError): string | null {
  const at = (i: number) => decodeRxResponse(ring.view, ring.slotOffset(start + i));
  if (isRxParseError(r)) {
    if (!(r.error instanceof ProtocolError) || !ERROR_CODES.includes(r.error.code)) return `unexpected error ${String(r.error)}`;
    if (!(r.slots >= 1 && r.slots <= available)) return `slots ${r.slots} outside 1..${available}`;
    if (r.ids.length < 1 || r.ids.length > r.slots || r.ids[0] !== at(0).id) return `ids ${r.ids}`;
    return null;
  }
  const p = r;
  if (p.slots < 1 || p.slots > available || p.slots !== p.frags.length + p.extras.length) return `slots ${p.slots}`;
  if (p.frags.length > DEFAULT_RX_LIMITS.maxSlots || p.size > DEFAULT_RX_LIMITS.maxPacketSize) return "over the limits";
  if (p.flags !== (at(0).flags & (dataValidated | csumBlank))) return "flags";
  let sum = 0;
  for (let j = 0; j < p.frags.length; j++) {
    const f = p.frags[j]!;
    const q = at(f.slot);
    if (f.slot !== (j === 0 ? 0 : p.extras.length + j)) return `frags[${j}].slot ${f.slot}`;
    if (q.id !== f.id || q.offset !== f.offset || q.status !== f.size) return `frags[${j}] differs from the ring`;
    if (f.size < 0 || f.offset + f.size > PAGE_SIZE) return `frags[${j}] crosses the page`;
    if (q.flags & gsoPrefix) return "gso_prefix accepted";
    if (((q.flags & moreData) !== 0) !== j < p.frags.length - 1) return `frags[${j}] more_data`;
    sum += f.size;
  }
  if (sum !== p.size) return `fragments add up to ${sum}, not ${p.size}`;
  for (let i = 0; i < p.extras.length; i++) {
    const d = decodeExtraInfo(ring.view, ring.slotOffset(start + 1 + i));
    if (d instanceof ProtocolError || !Bun.deepEquals(d.extra, p.extras[i])) return `extras[${i}] differs from the ring`;
  }
  return null;
}

describe("randomized", () => {
  test("10,000 random valid packets round-trip, back to back", () => {
    const rng = new Rng(0x0dd5eed);
    const ring = rxRing();
    let start = (0xffffffff - 5000) >>> 0; // the run crosses the u32 wrap
    for (let iter = 0; iter < 10_000; iter++) {
      const a = randomPacket(rng);
      const b = randomPacket(rng);
      write(ring, start, [...a.slots, ...b.slots]);
      const available = a.slots.length + b.slots.length;
      const got = parseRxPacket(ring, start, available);
      if (!Bun.deepEquals(got, a.expected)) expect({ iter, got }).toEqual({ iter, got: a.expected });
      const next = parseRxPacket(ring, start + a.slots.length, b.slots.length);
      if (!Bun.deepEquals(next, b.expected)) expect({ iter, next }).toEqual({ iter, next: b.expected });
      start = (start + a.slots.length) >>> 0;
    }
  });

  test("10,000 single-field mutations: consistent packet or error; damage to data stays in its packet", () => {
    const rng = new Rng(0xfeedbeef);
    const ring = rxRing();
    const FIELDS = [
      { name: "id", off: RX_RESPONSE.id },
      { name: "offset", off: RX_RESPONSE.offset },
      { name: "flags", off: RX_RESPONSE.flags },
      { name: "status", off: RX_RESPONSE.status },
    ] as const;
    const outcomes = new Map<string, number>();
    for (let iter = 0; iter < 10_000; iter++) {
      const a = randomPacket(rng);
      const b = randomPacket(rng);
      const start = rng.u32();
      write(ring, start, [...a.slots, ...b.slots]);
      const available = a.slots.length + b.slots.length;
      const slot = rng.int(0, a.slots.length - 1);
      const field = rng.pick(FIELDS);
      const off = ring.slotOffset(start + slot) + field.off;
      const old = ring.view.getUint16(off, true);
      const choice = rng.int(0, 3);
      const value =
        choice === 0 ? rng.u16()
        : choice === 1 ? old ^ (1 << rng.int(0, 15))
        : choice === 2 ? rng.pick([0, 0xffff, 0xfffe, 0xfffd, 0x8000, 4095, 4096, 4097])
        : rng.int(0, 31);
      ring.view.setUint16(off, value, true);
      const what = `slot ${slot} ${field.name} ${old} -> ${value}`;

      let got: RxPacket | RxParseError;
      try {
        got = parseRxPacket(ring, start, available);
      } catch (e) {
        throw new Error(`iter ${iter} (${what}): parseRxPacket threw ${String(e)}`);
      }
      const bad = violation(ring, start, available, got);
      if (bad !== null) throw new Error(`iter ${iter} (${what}): ${bad}`);
      // A data slot's id/offset/status does not move the packet's end: the next packet must
      // still parse exactly.
      if (a.dataSlots.includes(slot) && field.name !== "flags") {
        if (got.slots !== a.slots.length) throw new Error(`iter ${iter} (${what}): consumed ${got.slots}, packet had ${a.slots.length}`);
        const next = parseRxPacket(ring, start + got.slots, b.slots.length);
        if (!Bun.deepEquals(next, b.expected)) expect({ iter, what, next }).toEqual({ iter, what, next: b.expected });
      }
      const key = isRxParseError(got) ? got.error.code : "valid";
      outcomes.set(key, (outcomes.get(key) ?? 0) + 1);
    }
    for (const key of ["valid", "BAD_STATUS", "FRAGMENT_CROSSES_PAGE", "BAD_FLAGS", "BAD_EXTRA_TYPE", "BAD_GSO"]) {
      expect({ key, seen: (outcomes.get(key) ?? 0) > 0 }).toEqual({ key, seen: true });
    }
  });
});
