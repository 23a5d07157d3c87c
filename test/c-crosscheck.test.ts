/**
 * Byte-exact cross-check of src/protocol against Xen's own C headers.
 *
 * test/c/netif-check.c is compiled with gcc against <xen/io/netif.h> and <xen/io/ring.h>,
 * so its answers come from the official struct definitions and ring macros. This file
 * feeds it inputs and demands identical answers from our TypeScript:
 *
 *  - layout: every size, offset and constant we rely on, plus the raw bytes of each slot
 *    struct filled with the same field values (extremes included), plus the ring header
 *    that initialisation leaves on a dirty page.
 *  - ring:   a seeded pseudo-random sequence of ring operations on a TX and an RX ring,
 *    starting just below 2^32 so the free-running indices wrap, run once through the C
 *    macros and once through FrontRing/BackRing. Every per-operation line (notify
 *    decisions, unconsumed counts, final checks, decoded slots) and every page dump must
 *    agree.
 *
 * Without gcc or the Xen headers the suite is skipped with a warning, except under CI
 * (CI=true), where that is a failure: CI exists to run this.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { compiledC } from "./helpers/compile-c.ts";
import { existsSync } from "node:fs";
import { join } from "node:path";
import {
  BackRing,
  EXTRA_FLAG_MORE,
  EXTRA_INFO,
  EXTRA_INFO_SIZE,
  EXTRA_TYPE,
  EXTRA_TYPE_MAX,
  FrontRing,
  GSO_TYPE,
  MAX_PACKET_SIZE,
  NETIF_RSP,
  NETRXF,
  NETTXF,
  NR_SLOTS_MIN,
  PAGE_SIZE,
  ProtocolError,
  RING_HEADER,
  RING_HEADER_SIZE,
  RX_REQUEST,
  RX_REQUEST_SIZE,
  RX_RESPONSE,
  RX_RESPONSE_SIZE,
  TX_REQUEST,
  TX_REQUEST_SIZE,
  TX_RESPONSE,
  TX_RESPONSE_SIZE,
  decodeExtraInfo,
  decodeRxRequest,
  decodeRxResponse,
  decodeTxRequest,
  decodeTxResponse,
  encodeExtraInfo,
  encodeRxRequest,
  encodeRxResponse,
  encodeTxRequest,
  encodeTxResponse,
  ringSize,
  type ExtraInfo,
  type RxRequest,
  type RxResponse,
  type TxRequest,
  type TxResponse,
} from "../src/protocol/index.ts";

// ---------------------------------------------------------------------------------------
// Prerequisites and the C program
// ---------------------------------------------------------------------------------------

const C_SOURCE = join(import.meta.dir, "c", "netif-check.c");
const NETIF_H = "/usr/include/xen/io/netif.h";
const GCC = Bun.which("gcc");
const missing = [
  GCC === null ? "gcc (not on PATH)" : "",
  existsSync(NETIF_H) ? "" : `${NETIF_H} (apt-get install libxen-dev)`,
].filter((m) => m !== "");
const available = missing.length === 0;
const IN_CI = process.env.CI === "true";

if (!available && !IN_CI) {
  console.warn(
    `c-crosscheck: SKIPPED, missing ${missing.join(" and ")}; the byte-exact check against Xen's C headers did not run`,
  );
}

let binary = "";

/** Run the compiled checker in `mode`, feeding `input` on stdin; return its stdout. */
async function runC(mode: "layout" | "ring", input: string): Promise<string> {
  const proc = Bun.spawn([binary, mode], { stdin: new TextEncoder().encode(input), stdout: "pipe", stderr: "pipe" });
  const [out, err, code] = await Promise.all([
    new Response(proc.stdout).text(),
    new Response(proc.stderr).text(),
    proc.exited,
  ]);
  if (code !== 0) throw new Error(`netif-check ${mode} exited with ${code}: ${err}`);
  return out;
}

/** Lines of program output, without the empty string after the final newline. */
function lines(out: string): string[] {
  const l = out.split("\n");
  if (l[l.length - 1] === "") l.pop();
  return l;
}

function hex(bytes: Uint8Array): string {
  let s = "";
  for (const b of bytes) s += (b < 16 ? "0" : "") + b.toString(16);
  return s;
}

// ---------------------------------------------------------------------------------------
// Slot tokens: the text format netif-check.c reads and prints for one ring slot
// (see the comment above its build_slot). Our side writes and reads the slots through the
// src/protocol codecs only, then formats what it decoded the same way.
// ---------------------------------------------------------------------------------------

type Slot =
  | { t: "q"; v: TxRequest }
  | { t: "s"; v: TxResponse }
  | { t: "Q"; v: RxRequest }
  | { t: "S"; v: RxResponse }
  | { t: "x"; v: ExtraInfo; more: boolean };

function extraToken(e: ExtraInfo, more: boolean): string {
  const m = more ? 1 : 0;
  switch (e.type) {
    case EXTRA_TYPE.gso:
      return `g:${m}:${e.size}:${e.gsoType}:${e.features}`;
    case EXTRA_TYPE.mcastAdd:
    case EXTRA_TYPE.mcastDel:
      return `m:${e.type}:${m}:${Array.from(e.addr.subarray(0, 6)).join(":")}`;
    case EXTRA_TYPE.hash:
      return `h:${m}:${e.hashType}:${e.alg}:${e.value}`;
  }
}

function slotToken(s: Slot): string {
  switch (s.t) {
    case "q":
      return `q:${s.v.gref}:${s.v.offset}:${s.v.flags}:${s.v.id}:${s.v.size}`;
    case "s":
      return `s:${s.v.id}:${s.v.status}`;
    case "Q":
      return `Q:${s.v.id}:${s.v.gref}`;
    case "S":
      return `S:${s.v.id}:${s.v.offset}:${s.v.flags}:${s.v.status}`;
    case "x":
      return extraToken(s.v, s.more);
  }
}

/** Write a slot with our encoder; returns the bytes that encoder owns. */
function encodeSlot(v: DataView, off: number, s: Slot): number {
  switch (s.t) {
    case "q":
      encodeTxRequest(v, off, s.v);
      return TX_REQUEST_SIZE;
    case "s":
      encodeTxResponse(v, off, s.v);
      return TX_RESPONSE_SIZE;
    case "Q":
      encodeRxRequest(v, off, s.v);
      return RX_REQUEST_SIZE;
    case "S":
      encodeRxResponse(v, off, s.v);
      return RX_RESPONSE_SIZE;
    case "x":
      encodeExtraInfo(v, off, s.v, s.more);
      return EXTRA_INFO_SIZE;
  }
}

/** Decode a slot with our decoder, as the struct kind `t` (what its producer wrote). */
function decodeSlotToken(v: DataView, off: number, t: Slot["t"]): string {
  switch (t) {
    case "q":
      return slotToken({ t, v: decodeTxRequest(v, off) });
    case "s":
      return slotToken({ t, v: decodeTxResponse(v, off) });
    case "Q":
      return slotToken({ t, v: decodeRxRequest(v, off) });
    case "S":
      return slotToken({ t, v: decodeRxResponse(v, off) });
    case "x": {
      const d = decodeExtraInfo(v, off);
      return d instanceof ProtocolError ? `err:${d.code}` : extraToken(d.extra, d.more);
    }
  }
}

// ---------------------------------------------------------------------------------------
// Layout: sizes, offsets, constants, byte vectors
// ---------------------------------------------------------------------------------------

/**
 * What our TypeScript says about every key netif-check prints. A few keys have no TS
 * constant (the pvt/pad split inside the header, the u32 width of gref); those carry the
 * PROTOCOL.md value and say so. The key sets must match exactly, so a field added to the
 * C side cannot go unchecked.
 */
function tsLayout(): Record<string, number | string> {
  const sring = (ring: string, slot: number): Record<string, number> => {
    const s = `${ring}_sring`;
    return {
      [`off.${s}.req_prod`]: RING_HEADER.reqProd,
      [`off.${s}.req_event`]: RING_HEADER.reqEvent,
      [`off.${s}.rsp_prod`]: RING_HEADER.rspProd,
      [`off.${s}.rsp_event`]: RING_HEADER.rspEvent,
      [`off.${s}.pvt`]: RING_HEADER.pvt,
      [`fsize.${s}.pvt`]: 4, // PROTOCOL.md; TS treats [pvt, slots) as one zeroed area
      [`off.${s}.pvt.netif.smartpoll_active`]: RING_HEADER.pvt,
      [`off.${s}.__pad`]: RING_HEADER.pvt + 4,
      [`fsize.${s}.__pad`]: RING_HEADER.slots - (RING_HEADER.pvt + 4),
      [`off.${s}.ring`]: RING_HEADER.slots,
      [`fsize.${s}.ring[0]`]: slot,
      [`ringsize.const.${ring}`]: ringSize(slot),
      [`ringsize.live.${ring}`]: new FrontRing(new Uint8Array(new SharedArrayBuffer(PAGE_SIZE)), slot).size,
    };
  };
  // The header FrontRing.init(0) leaves on a page full of garbage (C: XEN_FRONT_RING_INIT).
  const initHeader = (slot: number): string => {
    const page = new Uint8Array(new SharedArrayBuffer(PAGE_SIZE)).fill(0xa5);
    new FrontRing(page, slot).init(0);
    return hex(page.subarray(0, RING_HEADER_SIZE));
  };
  // Slot sizes of the rings: the larger of request and response (ring.h's sring_entry union).
  const txSlot = Math.max(TX_REQUEST_SIZE, TX_RESPONSE_SIZE);
  const rxSlot = Math.max(RX_REQUEST_SIZE, RX_RESPONSE_SIZE);
  return {
    "size.netif_tx_request": TX_REQUEST_SIZE,
    "off.netif_tx_request.gref": TX_REQUEST.gref,
    "off.netif_tx_request.offset": TX_REQUEST.offset,
    "off.netif_tx_request.flags": TX_REQUEST.flags,
    "off.netif_tx_request.id": TX_REQUEST.id,
    "off.netif_tx_request.size": TX_REQUEST.size,
    "size.netif_tx_response": TX_RESPONSE_SIZE,
    "off.netif_tx_response.id": TX_RESPONSE.id,
    "off.netif_tx_response.status": TX_RESPONSE.status,
    "size.netif_rx_request": RX_REQUEST_SIZE,
    "off.netif_rx_request.id": RX_REQUEST.id,
    "off.netif_rx_request.pad": 2, // no TS constant: encodeRxRequest zeroes +2 (the byte vectors check it)
    "off.netif_rx_request.gref": RX_REQUEST.gref,
    "size.netif_rx_response": RX_RESPONSE_SIZE,
    "off.netif_rx_response.id": RX_RESPONSE.id,
    "off.netif_rx_response.offset": RX_RESPONSE.offset,
    "off.netif_rx_response.flags": RX_RESPONSE.flags,
    "off.netif_rx_response.status": RX_RESPONSE.status,
    "size.netif_extra_info": EXTRA_INFO_SIZE,
    "off.netif_extra_info.type": EXTRA_INFO.type,
    "off.netif_extra_info.flags": EXTRA_INFO.flags,
    // The union starts where each of its members does and runs to the end of the struct.
    "off.netif_extra_info.u": EXTRA_INFO.gso.size,
    "fsize.netif_extra_info.u": EXTRA_INFO_SIZE - EXTRA_INFO.gso.size,
    "off.netif_extra_info.u.gso.size": EXTRA_INFO.gso.size,
    "off.netif_extra_info.u.gso.type": EXTRA_INFO.gso.type,
    "off.netif_extra_info.u.gso.pad": EXTRA_INFO.gso.pad,
    "off.netif_extra_info.u.gso.features": EXTRA_INFO.gso.features,
    "off.netif_extra_info.u.mcast.addr": EXTRA_INFO.mcast.addr,
    "fsize.netif_extra_info.u.mcast.addr": 6, // McastExtra.addr: 6 bytes
    "off.netif_extra_info.u.hash.type": EXTRA_INFO.hash.type,
    "off.netif_extra_info.u.hash.algorithm": EXTRA_INFO.hash.alg,
    "off.netif_extra_info.u.hash.value": EXTRA_INFO.hash.value,
    "fsize.netif_extra_info.u.hash.value": 4, // HashExtra.value: a u32
    ...sring("netif_tx", txSlot),
    ...sring("netif_rx", rxSlot),
    "init.netif_tx": initHeader(txSlot),
    "init.netif_rx": initHeader(rxSlot),
    "const.NETTXF_csum_blank": NETTXF.csumBlank,
    "const.NETTXF_data_validated": NETTXF.dataValidated,
    "const.NETTXF_more_data": NETTXF.moreData,
    "const.NETTXF_extra_info": NETTXF.extraInfo,
    "const.NETRXF_data_validated": NETRXF.dataValidated,
    "const.NETRXF_csum_blank": NETRXF.csumBlank,
    "const.NETRXF_more_data": NETRXF.moreData,
    "const.NETRXF_extra_info": NETRXF.extraInfo,
    "const.NETRXF_gso_prefix": NETRXF.gsoPrefix,
    "const.NETIF_RSP_DROPPED": NETIF_RSP.dropped,
    "const.NETIF_RSP_ERROR": NETIF_RSP.error,
    "const.NETIF_RSP_OKAY": NETIF_RSP.okay,
    "const.NETIF_RSP_NULL": NETIF_RSP.null,
    "const.XEN_NETIF_EXTRA_TYPE_NONE": EXTRA_TYPE.none,
    "const.XEN_NETIF_EXTRA_TYPE_GSO": EXTRA_TYPE.gso,
    "const.XEN_NETIF_EXTRA_TYPE_MCAST_ADD": EXTRA_TYPE.mcastAdd,
    "const.XEN_NETIF_EXTRA_TYPE_MCAST_DEL": EXTRA_TYPE.mcastDel,
    "const.XEN_NETIF_EXTRA_TYPE_HASH": EXTRA_TYPE.hash,
    "const.XEN_NETIF_EXTRA_TYPE_MAX": EXTRA_TYPE_MAX,
    "const.XEN_NETIF_EXTRA_FLAG_MORE": EXTRA_FLAG_MORE,
    "const.XEN_NETIF_GSO_TYPE_NONE": GSO_TYPE.none,
    "const.XEN_NETIF_GSO_TYPE_TCPV4": GSO_TYPE.tcpv4,
    "const.XEN_NETIF_GSO_TYPE_TCPV6": GSO_TYPE.tcpv6,
    "const.XEN_NETIF_MAX_TX_SIZE": MAX_PACKET_SIZE,
    "const.XEN_NETIF_NR_SLOTS_MIN": NR_SLOTS_MIN,
  };
}

/**
 * Encode vectors: each struct filled with edge values (all zeros, all ones, sign bits,
 * the most negative and positive statuses, 0xffffffff grefs) and with values whose bytes
 * all differ, so a swapped or shifted field cannot hide.
 */
const VECTORS: Slot[] = [
  { t: "q", v: { gref: 0, offset: 0, flags: 0, id: 0, size: 0 } },
  { t: "q", v: { gref: 0xffffffff, offset: 0xffff, flags: 0xffff, id: 0xffff, size: 0xffff } },
  { t: "q", v: { gref: 0x80000000, offset: 4095, flags: NETTXF.moreData | NETTXF.extraInfo, id: 0x8000, size: 1514 } },
  { t: "q", v: { gref: 0x12345678, offset: 0x9abc, flags: 0xdef0, id: 0x1357, size: 0x2468 } },
  { t: "s", v: { id: 0, status: 0 } },
  { t: "s", v: { id: 0xffff, status: NETIF_RSP.error } },
  { t: "s", v: { id: 1, status: NETIF_RSP.dropped } },
  { t: "s", v: { id: 0x1234, status: NETIF_RSP.null } },
  { t: "s", v: { id: 0xabcd, status: -32768 } },
  { t: "s", v: { id: 0x8001, status: 32767 } },
  { t: "Q", v: { id: 0, gref: 0 } },
  { t: "Q", v: { id: 0xffff, gref: 0xffffffff } },
  { t: "Q", v: { id: 0x1234, gref: 0x89abcdef } },
  { t: "S", v: { id: 0, offset: 0, flags: 0, status: 0 } },
  { t: "S", v: { id: 0xffff, offset: 0xffff, flags: 0xffff, status: -1 } },
  { t: "S", v: { id: 0x1234, offset: 4095, flags: NETRXF.moreData | NETRXF.gsoPrefix, status: NETIF_RSP.dropped } },
  { t: "S", v: { id: 0x5678, offset: 0x9abc, flags: 0xdef0, status: -32768 } },
  { t: "S", v: { id: 1, offset: 2, flags: 3, status: 32767 } },
  { t: "x", more: false, v: { type: EXTRA_TYPE.gso, size: 1, gsoType: GSO_TYPE.tcpv4, features: 0 } },
  { t: "x", more: true, v: { type: EXTRA_TYPE.gso, size: 0xffff, gsoType: GSO_TYPE.tcpv6, features: 0xffff } },
  { t: "x", more: true, v: { type: EXTRA_TYPE.gso, size: 0x05b4, gsoType: GSO_TYPE.tcpv4, features: 0x1234 } },
  { t: "x", more: false, v: { type: EXTRA_TYPE.mcastAdd, addr: new Uint8Array([1, 0, 0x5e, 0, 0, 0xfb]) } },
  { t: "x", more: true, v: { type: EXTRA_TYPE.mcastDel, addr: new Uint8Array([255, 255, 255, 255, 255, 255]) } },
  { t: "x", more: false, v: { type: EXTRA_TYPE.mcastDel, addr: new Uint8Array(6) } },
  { t: "x", more: false, v: { type: EXTRA_TYPE.hash, hashType: 0, alg: 0, value: 0 } },
  { t: "x", more: true, v: { type: EXTRA_TYPE.hash, hashType: 255, alg: 255, value: 0xffffffff } },
  { t: "x", more: false, v: { type: EXTRA_TYPE.hash, hashType: 3, alg: 1, value: 0x12345678 } },
];

// ---------------------------------------------------------------------------------------
// The ring sequence
// ---------------------------------------------------------------------------------------

/** Fixed seed so a failure reproduces; NETIF_CROSSCHECK_SEED overrides it to explore. */
const SEED = Number(process.env.NETIF_CROSSCHECK_SEED ?? 0x5eedc0de) >>> 0;
/** Ring operations in all, each on the TX or the RX ring at random (page dumps come on top). */
const RING_OPS = 200_000;
/** All indices start this far below 2^32, so the sequence crosses the wrap early on. */
const START = (0xffffffff - 50_000) >>> 0;
/** Cadence of page checksums (per ring) and of full page dumps. */
const SUM_EVERY = 10;
const HEX_EVERY = 10_000;

/** mulberry32: a tiny, well-mixed 32-bit PRNG; deterministic across platforms. */
function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (t ^ (t >>> 14)) >>> 0;
  };
}

class Gen {
  private readonly next: () => number;
  constructor(seed: number) {
    this.next = mulberry32(seed);
  }
  /** Uniform in [0, 1). */
  float(): number {
    return this.next() / 2 ** 32;
  }
  /** Uniform integer in [lo, hi]. */
  int(lo: number, hi: number): number {
    return lo + Math.floor(this.float() * (hi - lo + 1));
  }
  pick<T>(xs: readonly T[]): T {
    const x = xs[this.int(0, xs.length - 1)];
    if (x === undefined) throw new Error("pick from an empty list");
    return x;
  }
  /** One time in eight an edge value, otherwise uniform: extremes must show up often. */
  private edgy(edges: readonly number[], lo: number, hi: number): number {
    return this.float() < 0.125 ? this.pick(edges) : this.int(lo, hi);
  }
  u8(): number {
    return this.edgy([0, 1, 0x7f, 0x80, 0xff], 0, 0xff);
  }
  u16(): number {
    return this.edgy([0, 1, 0x7fff, 0x8000, 0xffff], 0, 0xffff);
  }
  u32(): number {
    return this.edgy([0, 1, 0x7fffffff, 0x80000000, 0xffffffff], 0, 0xffffffff);
  }
  i16(): number {
    return this.edgy([-32768, -2, -1, 0, 1, 32767], -32768, 32767);
  }

  /** A random extra that our decoder accepts (GSO needs a known type and a size >= 1). */
  extra(): Slot {
    const more = this.float() < 0.5;
    switch (this.int(0, 2)) {
      case 0:
        const gsoType = this.pick([GSO_TYPE.tcpv4, GSO_TYPE.tcpv6]);
        return { t: "x", more, v: { type: EXTRA_TYPE.gso, size: this.int(1, 0xffff), gsoType, features: this.u16() } };
      case 1: {
        const addr = new Uint8Array(6);
        for (let i = 0; i < 6; i++) addr[i] = this.u8();
        return { t: "x", more, v: { type: this.pick([EXTRA_TYPE.mcastAdd, EXTRA_TYPE.mcastDel]), addr } };
      }
      default:
        return { t: "x", more, v: { type: EXTRA_TYPE.hash, hashType: this.u8(), alg: this.u8(), value: this.u32() } };
    }
  }
  txRequest(): Slot {
    if (this.float() < 0.25) return this.extra();
    return { t: "q", v: { gref: this.u32(), offset: this.u16(), flags: this.u16(), id: this.u16(), size: this.u16() } };
  }
  txResponse(): Slot {
    return { t: "s", v: { id: this.u16(), status: this.i16() } };
  }
  rxRequest(): Slot {
    return { t: "Q", v: { id: this.u16(), gref: this.u32() } };
  }
  rxResponse(): Slot {
    if (this.float() < 0.25) return this.extra();
    return { t: "S", v: { id: this.u16(), offset: this.u16(), flags: this.u16(), status: this.i16() } };
  }
}

type RingName = "t" | "r";
type Op =
  | { ring: RingName; op: "fw" | "bw"; slots: Slot[] }
  | { ring: RingName; op: "bc" | "fc"; k: number }
  | { ring: RingName; op: "re" | "se"; v: number }
  | { ring: RingName; op: "fp" | "bp" | "ff" | "bf" | "sum" | "hex" | "state" };

function opText(o: Op): string {
  switch (o.op) {
    case "fw":
    case "bw":
      return `${o.ring} ${o.op} ${o.slots.length}${o.slots.map((s) => ` ${slotToken(s)}`).join("")}`;
    case "bc":
    case "fc":
      return `${o.ring} ${o.op} ${o.k}`;
    case "re":
    case "se":
      return `${o.ring} ${o.op} ${o.v}`;
    default:
      return `${o.ring} ${o.op}`;
  }
}

/**
 * The generator's own model of one ring: plain counts of entries in each stage, no index
 * arithmetic, so the sequence stays well-formed (never more than the ring size in flight,
 * never a response without a consumed request) independently of the code under test.
 */
interface Model {
  size: number;
  written: number; // requests written, not pushed
  pushed: number; // requests pushed, not consumed by the back end
  consumed: number; // requests consumed, not answered
  answered: number; // responses written, not pushed
  published: number; // responses pushed, not consumed by the front end
  reqProd: number; // shared req_prod as the model expects it (u32)
  rspProd: number; // shared rsp_prod (u32)
  reqTotal: number; // requests ever pushed (not wrapped)
  rspTotal: number; // responses ever pushed (not wrapped)
}

/** Sequence statistics the test asserts on. */
interface GenStats {
  ringOps: number;
  wrapStep: Record<RingName, number>; // step at which both producers had crossed 2^32 (-1: never)
}

function generate(seed: number): { ops: Op[]; models: Record<RingName, Model>; stats: GenStats } {
  const g = new Gen(seed);
  const model = (): Model => ({
    size: 256, // both netif rings: 256 slots in a 4096-byte page (the layout test checks it)
    written: 0,
    pushed: 0,
    consumed: 0,
    answered: 0,
    published: 0,
    reqProd: START,
    rspProd: START,
    reqTotal: 0,
    rspTotal: 0,
  });
  const models: Record<RingName, Model> = { t: model(), r: model() };
  const stats: GenStats = { ringOps: 0, wrapStep: { t: -1, r: -1 } };
  const ops: Op[] = [];
  const toWrap = 2 ** 32 - START;
  // Batch sizes: mostly small, sometimes everything allowed (fills the ring to the brim).
  const batch = (max: number): number => (g.float() < 0.1 ? max : g.int(1, Math.min(max, 16)));
  // Weighted choice of operation; producers slightly favoured so the ring stays busy.
  const table: readonly (readonly [Op["op"], number])[] = [
    ["fw", 5], ["fp", 3], ["bc", 3], ["bw", 5], ["bp", 3], ["fc", 3], ["ff", 1], ["bf", 1], ["re", 2], ["se", 2],
  ];
  const weight = table.reduce((s, [, w]) => s + w, 0);

  for (let step = 0; step < RING_OPS; step++) {
    const ring: RingName = g.float() < 0.5 ? "t" : "r";
    const m = models[ring];
    let r = g.int(0, weight - 1);
    let name: Op["op"] = "fp";
    for (const [n, w] of table) {
      if (r < w) {
        name = n;
        break;
      }
      r -= w;
    }
    const inFlight = m.written + m.pushed + m.consumed + m.answered + m.published;
    switch (name) {
      case "fw": {
        const free = m.size - inFlight;
        const k = free === 0 ? 0 : batch(free);
        const slots: Slot[] = [];
        for (let i = 0; i < k; i++) slots.push(ring === "t" ? g.txRequest() : g.rxRequest());
        ops.push({ ring, op: "fw", slots });
        m.written += k;
        break;
      }
      case "fp":
        m.pushed += m.written;
        m.reqTotal += m.written;
        m.reqProd = (m.reqProd + m.written) >>> 0;
        m.written = 0;
        ops.push({ ring, op: "fp" });
        break;
      case "bc": {
        const k = g.float() < 0.3 ? m.pushed : g.int(0, m.pushed);
        m.pushed -= k;
        m.consumed += k;
        ops.push({ ring, op: "bc", k });
        break;
      }
      case "bw": {
        const k = m.consumed === 0 ? 0 : batch(m.consumed);
        const slots: Slot[] = [];
        for (let i = 0; i < k; i++) slots.push(ring === "t" ? g.txResponse() : g.rxResponse());
        m.consumed -= k;
        m.answered += k;
        ops.push({ ring, op: "bw", slots });
        break;
      }
      case "bp":
        m.published += m.answered;
        m.rspTotal += m.answered;
        m.rspProd = (m.rspProd + m.answered) >>> 0;
        m.answered = 0;
        ops.push({ ring, op: "bp" });
        break;
      case "fc": {
        const k = g.float() < 0.3 ? m.published : g.int(0, m.published);
        m.published -= k;
        ops.push({ ring, op: "fc", k });
        break;
      }
      case "re":
      case "se": {
        // The peer moves an event index to just behind or ahead of the producer, so the
        // next push lands on both sides of it (notify and no notify) often.
        const base = name === "re" ? m.reqProd : m.rspProd;
        ops.push({ ring, op: name, v: (base + g.int(-8, 24)) >>> 0 });
        break;
      }
      default:
        ops.push({ ring, op: name });
    }
    stats.ringOps++;
    if (stats.wrapStep[ring] < 0 && m.reqTotal > toWrap && m.rspTotal > toWrap) stats.wrapStep[ring] = step;
    if (step % SUM_EVERY === SUM_EVERY - 1) ops.push({ ring: "t", op: "sum" }, { ring: "r", op: "sum" });
    if (step % HEX_EVERY === HEX_EVERY - 1) ops.push({ ring: "t", op: "hex" }, { ring: "r", op: "hex" });
  }
  ops.push({ ring: "t", op: "hex" }, { ring: "r", op: "hex" }, { ring: "t", op: "state" }, { ring: "r", op: "state" });
  return { ops, models, stats };
}

function fnv1a(bytes: Uint8Array): number {
  let h = 0x811c9dc5;
  for (const b of bytes) h = Math.imul(h ^ b, 0x01000193) >>> 0;
  return h;
}

/** One ring as our code drives it: both halves on one SharedArrayBuffer page. */
class TsRing {
  readonly page = new Uint8Array(new SharedArrayBuffer(PAGE_SIZE));
  readonly front: FrontRing;
  readonly back: BackRing;
  /** The peer's view of the header words, for the "peer sets an event index" operations. */
  private readonly hdr = new Uint32Array(this.page.buffer, 0, RING_HEADER_SIZE / 4);
  /** Struct kind last written to each slot, per direction (the C side keeps the same record). */
  private readonly reqKind: Slot["t"][] = [];
  private readonly rspKind: Slot["t"][] = [];

  constructor(
    slotSize: number,
    private readonly reqT: Slot["t"],
    private readonly rspT: Slot["t"],
  ) {
    this.front = new FrontRing(this.page, slotSize);
    this.back = new BackRing(this.page, slotSize);
    this.front.init(START);
    this.back.attachAt(START);
  }

  /** Apply one operation; return the line netif-check prints for it. */
  apply(o: Op): string {
    const { front: f, back: b } = this;
    switch (o.op) {
      case "fw": {
        const free = f.freeRequests();
        for (const s of o.slots) {
          encodeSlot(f.view, f.nextRequestOffset(), s);
          this.reqKind[f.reqProdPvt & f.mask] = s.t;
          f.reqProdPvt++; // as documented: the ring wraps the index when it publishes
        }
        return `free=${free}`;
      }
      case "bw":
        for (const s of o.slots) {
          encodeSlot(b.view, b.nextResponseOffset(), s);
          this.rspKind[b.rspProdPvt & b.mask] = s.t;
          b.rspProdPvt++;
        }
        return `pvt=${b.rspProdPvt >>> 0}`;
      case "fp":
        return `notify=${f.pushRequests() ? 1 : 0} req_prod=${f.sharedReqProd}`;
      case "bp":
        return `notify=${b.pushResponses() ? 1 : 0} rsp_prod=${b.sharedRspProd}`;
      case "bc": {
        let line = `n=${b.unconsumedRequests()}`;
        for (let i = 0; i < o.k; i++) {
          line += ` ${decodeSlotToken(b.view, b.slotOffset(b.reqCons), this.reqKind[b.reqCons & b.mask] ?? this.reqT)}`;
          b.reqCons++;
        }
        return line;
      }
      case "fc": {
        let line = `n=${f.unconsumedResponses()}`;
        for (let i = 0; i < o.k; i++) {
          line += ` ${decodeSlotToken(f.view, f.slotOffset(f.rspCons), this.rspKind[f.rspCons & f.mask] ?? this.rspT)}`;
          f.rspCons++;
        }
        return line;
      }
      case "ff":
        return `work=${f.finalCheckForResponses() ? 1 : 0} rsp_event=${f.sharedRspEvent}`;
      case "bf":
        return `work=${b.finalCheckForRequests() ? 1 : 0} req_event=${b.sharedReqEvent}`;
      case "re":
        Atomics.store(this.hdr, RING_HEADER.reqEvent / 4, o.v);
        return "ok";
      case "se":
        Atomics.store(this.hdr, RING_HEADER.rspEvent / 4, o.v);
        return "ok";
      case "sum":
        return `sum=${fnv1a(this.page).toString(16).padStart(8, "0")}`;
      case "hex":
        return hex(this.page);
      case "state":
        return [
          f.reqProdPvt,
          f.rspCons,
          b.rspProdPvt,
          b.reqCons,
          f.sharedReqProd,
          f.sharedReqEvent,
          f.sharedRspProd,
          f.sharedRspEvent,
        ]
          .map((x) => x >>> 0)
          .join(" ");
    }
  }
}

/** Where two page dumps differ, in ring terms (header field or slot number). */
function describePageDiff(a: string, b: string, slotSize: number): string {
  const diffs: string[] = [];
  for (let i = 0; i < a.length && diffs.length < 8; i += 2) {
    if (a.slice(i, i + 2) !== b.slice(i, i + 2)) {
      const byte = i / 2;
      const slot = byte - RING_HEADER_SIZE;
      const where = slot < 0 ? `header+${byte}` : `slot ${Math.floor(slot / slotSize)}+${slot % slotSize}`;
      diffs.push(`byte ${byte} (${where}): C ${a.slice(i, i + 2)} TS ${b.slice(i, i + 2)}`);
    }
  }
  return diffs.join("; ");
}

/** Index of the first line where C and TS disagree, or -1. */
function firstMismatch(c: readonly string[], ts: readonly string[]): number {
  const n = Math.max(c.length, ts.length);
  for (let i = 0; i < n; i++) if (c[i] !== ts[i]) return i;
  return -1;
}

/**
 * Explain the disagreement at output line `i` (line 0 is "start"; line i answers ops[i-1]).
 * A checksum only says that the page differs, so both sides are replayed up to that
 * operation and dumped, which shows the bytes and the slot or header field involved.
 */
async function explainMismatch(
  ops: readonly Op[],
  input: readonly string[],
  c: readonly string[],
  ts: readonly string[],
  i: number,
): Promise<string> {
  const clip = (s: string | undefined) => (s === undefined ? "(no line)" : s.length > 300 ? `${s.slice(0, 300)}...` : s);
  const op = ops[i - 1];
  const context = input.slice(Math.max(1, i - 5), i).map((l) => `    ${clip(l)}`);
  let detail = `C : ${clip(c[i])}\n  TS: ${clip(ts[i])}`;
  if (op !== undefined && (op.op === "sum" || op.op === "hex")) {
    const dump: Op = { ring: op.ring, op: "hex" };
    const upTo = [...ops.slice(0, i - 1), dump];
    const cPage = lines(await runC("ring", `${[input[0], ...upTo.map(opText)].join("\n")}\n`)).at(-1) ?? "";
    const rings = newRings();
    const tsPage = upTo.map((o) => rings[o.ring].apply(o)).at(-1) ?? "";
    detail += `\n  page bytes that differ: ${describePageDiff(cPage, tsPage, op.ring === "t" ? 12 : 8)}`;
  }
  return `C and TS disagree at output line ${i}, op "${clip(input[i])}"\n  ${detail}\n  preceding ops:\n${context.join("\n")}`;
}

/** A fresh TX ring (12-byte slots) and RX ring (8-byte slots), as the sequence starts them. */
function newRings(): Record<RingName, TsRing> {
  return { t: new TsRing(12, "q", "s"), r: new TsRing(8, "Q", "S") };
}

// ---------------------------------------------------------------------------------------
// The tests
// ---------------------------------------------------------------------------------------

if (!available && IN_CI) {
  describe("C cross-check (netif.h / ring.h)", () => {
    test("prerequisites", () => {
      throw new Error(
        `CI=true but the C cross-check cannot run: missing ${missing.join(" and ")}. ` +
          "CI must install gcc and libxen-dev so the TS protocol is checked against Xen's headers.",
      );
    });
  });
} else {
  const suite = available ? describe : describe.skip;
  suite("C cross-check (netif.h / ring.h)", () => {
    // Hooks only when the suite runs: a skipped suite then lists just its tests.
    if (available && GCC !== null) {
      const gcc = GCC;
      const program = compiledC(gcc, C_SOURCE, "netif-check", ["-fno-strict-aliasing"]);
      beforeAll(() => {
        program.build();
        binary = program.binary;
      });
      afterAll(() => program.clean());
    }

    test("struct sizes, field offsets, ring geometry and constants match the C headers", async () => {
      const out = lines(await runC("layout", ""));
      const c: Record<string, number | string> = {};
      for (const line of out) {
        const [key, value] = line.split(" ");
        if (key === undefined || value === undefined) throw new Error(`bad layout line: ${line}`);
        c[key] = key.startsWith("init.") ? value : Number(value);
      }
      expect(c).toEqual(tsLayout());
    });

    test("every slot struct encodes to the same bytes as C, extremes included", async () => {
      const input = VECTORS.map(slotToken);
      const out = lines(await runC("layout", `${input.join("\n")}\n`)).filter((l) => l.startsWith("bytes "));
      const c = out.map((l) => l.split(" ").slice(1).join(" "));
      const encoded = VECTORS.map((slot) => {
        // Dirty buffer: an encoder that leaves one of its bytes (a pad, say) unwritten shows.
        const buf = new DataView(new Uint8Array(16).fill(0xa5).buffer);
        const n = encodeSlot(buf, 0, slot);
        return { slot, buf, bytes: hex(new Uint8Array(buf.buffer, 0, n)) };
      });
      expect(c).toEqual(encoded.map((e, i) => `${input[i]} ${e.bytes}`));
      // And our decoders give back every field that was encoded (the tokens name them all).
      expect(encoded.map((e) => decodeSlotToken(e.buf, 0, e.slot.t))).toEqual(input);
    });

    test("ring operations across the 2^32 wrap agree with the official ring.h macros", async () => {
      const t0 = performance.now();
      const { ops, models, stats } = generate(SEED);
      const input = [`start ${START}`, ...ops.map(opText)];

      const rings = newRings();
      const ts = [`start ${START}`, ...ops.map((o) => rings[o.ring].apply(o))];
      const c = lines(await runC("ring", `${input.join("\n")}\n`));
      const elapsed = performance.now() - t0;

      const bad = firstMismatch(c, ts);
      if (bad >= 0) expect.unreachable(await explainMismatch(ops, input, c, ts, bad));
      expect(c.length).toBe(input.length);

      // How often each decision went each way (both must be common, or the check is weak).
      // A push that publishes nothing never notifies; count those apart, so "false" below
      // means a real push the peer had asked not to hear about (its event index not crossed).
      const tally: Record<string, number> = {};
      const lastProd: Record<string, string> = {};
      ops.forEach((o, i) => {
        const m = /^(notify|work)=([01]) (\w+)=(\d+)/.exec(c[i + 1] ?? "");
        if (m === null) return;
        let outcome = m[2] === "1" ? "true" : "false";
        if (o.op === "fp" || o.op === "bp") {
          if (lastProd[o.ring + o.op] === m[4]) outcome = "empty";
          lastProd[o.ring + o.op] = m[4] ?? "";
        }
        const key = `${o.ring === "t" ? "tx" : "rx"}.${o.op}.${outcome}`;
        tally[key] = (tally[key] ?? 0) + 1;
      });
      const tallyText = Object.keys(tally)
        .sort()
        .map((k) => `${k}=${tally[k]}`)
        .join(" ");
      console.log(
        `c-crosscheck: seed 0x${SEED.toString(16)}, ${stats.ringOps} ring ops (+${ops.length - stats.ringOps} page dumps), ` +
          `start 0x${START.toString(16)}, wrapped at step tx ${stats.wrapStep.t} / rx ${stats.wrapStep.r}, ` +
          `${input.length} lines agreed in ${elapsed.toFixed(0)} ms\n  ${tallyText}`,
      );

      expect(stats.ringOps).toBeGreaterThanOrEqual(100_000);
      for (const ring of ["t", "r"] as const) {
        const name = ring === "t" ? "tx" : "rx";
        // The run crossed 2^32 on both producers, early enough to exercise plenty after it.
        expect(stats.wrapStep[ring]).toBeGreaterThan(0);
        expect(stats.wrapStep[ring]).toBeLessThan(stats.ringOps / 2);
        // The final indices agree with the model and sit past the wrap (small again).
        const state = (c[c.length - (ring === "t" ? 2 : 1)] ?? "").split(" ").map(Number);
        const m = models[ring];
        const [reqProdPvt, rspCons, rspProdPvt, reqCons, reqProd, , rspProd] = state;
        expect(reqProd).toBe(m.reqProd);
        expect(rspProd).toBe(m.rspProd);
        expect(reqProdPvt).toBe((m.reqProd + m.written) >>> 0);
        expect(rspProdPvt).toBe((m.rspProd + m.answered) >>> 0);
        expect(m.reqTotal).toBeGreaterThan(2 ** 32 - START);
        for (const idx of [reqProdPvt, rspCons, rspProdPvt, reqCons, reqProd, rspProd]) expect(idx).toBeLessThan(START);
        for (const op of ["fp", "bp"]) {
          expect(tally[`${name}.${op}.true`] ?? 0).toBeGreaterThan(1000);
          expect(tally[`${name}.${op}.false`] ?? 0).toBeGreaterThan(1000);
          expect(tally[`${name}.${op}.empty`] ?? 0).toBeGreaterThan(100);
        }
        for (const op of ["ff", "bf"]) {
          expect(tally[`${name}.${op}.true`] ?? 0).toBeGreaterThan(100);
          expect(tally[`${name}.${op}.false`] ?? 0).toBeGreaterThan(100);
        }
      }
    }, 60_000); // 240,000 lines through the C program: about 5 s here, more on a loaded machine
  });
}
