/**
 * Where the one-thread per-frame time goes: each piece of the single-mode ring path measured
 * alone (mitata, 32 operations per sample, ns per operation), beside the C reference's whole
 * per-frame figure from the same run. It answers "why are we N× C": the pieces that cost us
 * most have no counterpart in the C loop, or cost more in JavaScript than in C.
 *
 *   bun run bench/parts.ts [--runs N]
 *
 * Each figure is the median over N runs (default 5) of mitata's median, with min–max.
 */
import { measure } from "mitata";
import {
  BackRing,
  DEFAULT_RX_LIMITS,
  DEFAULT_TX_LIMITS,
  FrontRing,
  RX_REQUEST_SIZE,
  TX_REQUEST_SIZE,
  decodeRxRequest,
  decodeTxResponse,
  encodeRxRequest,
  encodeRxResponse,
  encodeTxRequest,
  encodeTxResponse,
  parseRxPacket,
  parseTxPacket,
  scratchRxPacket,
  scratchTxPacket,
} from "../src/protocol/index.ts";
import { AddressedBytes, copyBetween, copyBytes } from "../src/platform/copy-bytes.ts";
import type { CopySegment } from "../src/platform/types.ts";
import { buildCReference, CReferenceUnavailable } from "./c-reference.ts";
import { framesFor, median, runsArg } from "./compare.ts";
import { GUEST, simLink } from "./sim-link.ts";

const OPS = 32;
const SIZES = [64, 1514];

const runs = runsArg(process.argv.slice(2));
const cases: { name: string; fn: () => void }[] = [];
let sink = 0; // results feed this, so no operation can be optimised away

for (const size of SIZES) {
  const src = new Uint8Array(4096).fill(3);
  const dst = new Uint8Array(4096);
  const srcView = src.subarray(0, size);
  const srcAt = new AddressedBytes(src);
  const dstAt = new AddressedBytes(dst);
  cases.push(
    { name: `Uint8Array.set, ${size} B (a premade view)`, fn: () => { for (let i = 0; i < OPS; i++) dst.set(srcView); } },
    { name: `copyBytes, ${size} B (Buffer copy, no view)`, fn: () => { for (let i = 0; i < OPS; i++) copyBytes(dst, 0, src, 0, size); } },
    { name: `copyBetween, ${size} B (libc memmove)`, fn: () => { for (let i = 0; i < OPS; i++) copyBetween(dstAt, 0, srcAt, 0, size); } },
  );
  // A grant copy out of the guest's page (back-tx) and into it (back-rx), one segment each.
  const out = simLink(false);
  const into = simLink(true);
  const gOut = out.hv.platform(0).gnttab;
  const gIn = into.hv.platform(0).gnttab;
  const segOut: CopySegment[] = [{ source: { domid: GUEST, ref: out.data.refs[0]!, offset: 0 }, dest: { buf: dst, offset: 0 }, len: size }];
  const segIn: CopySegment[] = [{ source: { buf: src, offset: 0 }, dest: { domid: GUEST, ref: into.data.refs[0]!, offset: 0 }, len: size }];
  cases.push(
    { name: `sim grant copy from a grant, ${size} B`, fn: () => { for (let i = 0; i < OPS; i++) gOut.copy(segOut); } },
    { name: `sim grant copy into a grant, ${size} B`, fn: () => { for (let i = 0; i < OPS; i++) gIn.copy(segIn); } },
  );
  if (size === SIZES[0]) {
    const t = out.hv.grants;
    const ref = out.data.refs[0]!;
    cases.push({
      name: "sim grant pin + unpin (what a copy adds)",
      fn: () => {
        for (let i = 0; i < OPS; i++) {
          sink += t.acquire(GUEST, ref, 0, false);
          t.release(GUEST, ref);
        }
      },
    });
  }
}

// Codecs and packet parsing on a ring page full of one-slot packets.
const tx = new FrontRing(new Uint8Array(new SharedArrayBuffer(4096)), TX_REQUEST_SIZE);
tx.init();
const txBack = new BackRing(tx.page, TX_REQUEST_SIZE);
const txReq = { gref: 9, offset: 0, flags: 0, id: 3, size: 1514 };
for (let i = 0; i < OPS; i++) encodeTxRequest(tx.view, tx.slotOffset(i), txReq);
const txPkt = scratchTxPacket();
const txRsp = { id: 3, status: 0 };
const rx = new FrontRing(new Uint8Array(new SharedArrayBuffer(4096)), RX_REQUEST_SIZE);
rx.init();
const rxRsp = { id: 3, offset: 0, flags: 0, status: 1514 };
for (let i = 0; i < OPS; i++) encodeRxResponse(rx.view, rx.slotOffset(i), rxRsp);
const rxPkt = scratchRxPacket();
const rxReq = { id: 3, gref: 9 };
const rxScratch = new FrontRing(new Uint8Array(new SharedArrayBuffer(4096)), RX_REQUEST_SIZE);
cases.push(
  { name: "parseTxPacket, one request", fn: () => { for (let i = 0; i < OPS; i++) sink += (parseTxPacket(txBack, i, OPS - i, DEFAULT_TX_LIMITS, txPkt) as { size: number }).size; } },
  { name: "parseRxPacket, one response", fn: () => { for (let i = 0; i < OPS; i++) sink += (parseRxPacket(rx, i, OPS - i, DEFAULT_RX_LIMITS, rxPkt) as { size: number }).size; } },
  { name: "encode tx request", fn: () => { for (let i = 0; i < OPS; i++) encodeTxRequest(tx.view, tx.slotOffset(i), txReq); } },
  { name: "encode + decode tx response", fn: () => { for (let i = 0; i < OPS; i++) { encodeTxResponse(tx.view, tx.slotOffset(i + OPS), txRsp); sink += decodeTxResponse(tx.view, tx.slotOffset(i + OPS), txRsp).id; } } },
  { name: "encode + decode rx request", fn: () => { for (let i = 0; i < OPS; i++) { encodeRxRequest(rxScratch.view, rxScratch.slotOffset(i), rxReq); sink += decodeRxRequest(rxScratch.view, rxScratch.slotOffset(i), rxReq).gref; } } },
  { name: "encode rx response", fn: () => { for (let i = 0; i < OPS; i++) encodeRxResponse(rxScratch.view, rxScratch.slotOffset(i + OPS), rxRsp); } },
);

const ns = new Map<string, number[]>(cases.map((c) => [c.name, []]));
const cFigures = new Map<string, number[]>();
let noC = "";
let runC: Awaited<ReturnType<typeof buildCReference>>["runC"] | null = null;
try {
  runC = (await buildCReference()).runC;
} catch (e) {
  if (!(e instanceof CReferenceUnavailable)) throw e;
  noC = e.message;
}
for (let r = 0; r < runs; r++) {
  for (const c of cases) ns.get(c.name)!.push((await measure(c.fn, { min_cpu_time: 60e6 })).p50 / OPS);
  if (runC === null) continue;
  for (const size of SIZES) {
    for (const [mode, dir] of [["single", "tx"], ["single", "rx"], ["memcpy", "tx"]] as const) {
      const name = mode === "memcpy" ? `C floor (two memcpys), ${size} B` : `C whole frame, single ${dir}, ${size} B`;
      const list = cFigures.get(name) ?? [];
      list.push((await runC(mode, dir, size, framesFor(size))).ns_per_frame);
      cFigures.set(name, list);
    }
  }
}

const fmt = (name: string, v: number[]) =>
  `${name.padEnd(46)} ${median(v).toFixed(1).padStart(6)}  [${Math.min(...v).toFixed(1)}–${Math.max(...v).toFixed(1)}]`;
console.log(`ns per operation, ${runs} runs: median [min–max]`);
for (const [name, v] of ns) console.log(fmt(name, v));
if (runC === null) console.log(`no C reference: ${noC}`);
for (const [name, v] of cFigures) console.log(fmt(name, v));
if (sink === 0.5) console.log(""); // never: keeps `sink` live
process.exit(0);
