/**
 * A hostile front end against our back end's side of its TX ring. Each round the fake front
 * end publishes mostly valid packets (fragments in its granted pages, extra-info slots), then
 * damages them: any field of any request, grant refs it never gave, extra chains, req_prod
 * near and far. After each poll, what our BackTx did is compared with an independent
 * reference model of Linux netback's rules: the same frames delivered byte for byte, the same
 * answer in every response slot, a typed fatal error (PeerBroken carrying the ProtocolError)
 * exactly when the ring's framing is broken, and nothing else ever thrown.
 */
import { expect, test } from "bun:test";
import { EXTRA_TYPE, GSO_TYPE, NETIF_RSP, NETTXF, ProtocolError, encodeExtraInfo, encodeTxRequest } from "../src/protocol/index.ts";
import { PeerBroken } from "../src/workers/back-tx.ts";
import { drainQueue, backTxHarness } from "./helpers/role-harness.ts";
import { Rng } from "./helpers/prng.ts";
import { isTcpOfType } from "./helpers/tcp-check.ts";

const STATES = Number(process.env.FUZZ_STATES ?? 250_000);
const SEED = Number(process.env.FUZZ_SEED ?? 0xbeef);
const MASK = 255;

/** "taken": answered OKAY but not delivered (a GSO extra on a frame that is not TCP of its type, as Linux drops it after answering). */
type Verdict = { kind: "deliver"; bytes: Uint8Array } | { kind: "drop" } | { kind: "taken" } | { kind: "fatal" };
interface ModelResult {
  overflow: boolean;
  packets: { verdict: Verdict; answers: number[] }[];
  fatal: boolean;
}

/** What Linux-netback rules say about the requests in `ring` from `cons` (independent of src/). */
function model(ring: DataView, cons: number, refs: readonly number[], pages: readonly Uint8Array[]): ModelResult {
  const prod = ring.getUint32(0, true);
  if (((prod - cons) >>> 0) > 256) return { overflow: true, packets: [], fatal: false };
  let n = (prod - cons) >>> 0;
  const packets: ModelResult["packets"] = [];
  let at = cons;
  const slot = (i: number) => 64 + ((at + i) & MASK) * 12;
  while (n > 0) {
    const req = (i: number) => {
      const o = slot(i);
      return { gref: ring.getUint32(o, true), offset: ring.getUint16(o + 4, true), flags: ring.getUint16(o + 6, true), id: ring.getUint16(o + 8, true), size: ring.getUint16(o + 10, true) };
    };
    const first = req(0);
    let used = 1;
    let extras = 0;
    let gsoType = 0;
    if (first.flags & NETTXF.extraInfo) {
      let seen = 0;
      let ok = false;
      while (used < n) {
        const e = slot(used);
        used++;
        extras++;
        const type = ring.getUint8(e);
        const gsoOk = type !== EXTRA_TYPE.gso || ((ring.getUint8(e + 4) === 1 || ring.getUint8(e + 4) === 2) && ring.getUint16(e + 2, true) > 0);
        if (type < 1 || type > 4 || seen & (1 << type) || !gsoOk) return { overflow: false, packets: [...packets, { verdict: { kind: "fatal" }, answers: [] }], fatal: true };
        seen |= 1 << type;
        if (type === EXTRA_TYPE.gso) gsoType = ring.getUint8(e + 4);
        if (!(ring.getUint8(e + 1) & 1)) {
          ok = true;
          break;
        }
      }
      if (!ok) return { overflow: false, packets: [...packets, { verdict: { kind: "fatal" }, answers: [] }], fatal: true };
    }
    const reqs = [first];
    while (reqs[reqs.length - 1]!.flags & NETTXF.moreData) {
      if (reqs.length >= 20 || used >= n) return { overflow: false, packets: [...packets, { verdict: { kind: "fatal" }, answers: [] }], fatal: true };
      reqs.push(req(used));
      used++;
    }
    let verdict: Verdict | null = null;
    let remaining = first.size;
    for (const r of reqs.slice(1)) {
      if (r.size > remaining) {
        verdict = { kind: "drop" };
        break;
      }
      remaining -= r.size;
    }
    const sizes = reqs.map((r, i) => (i === 0 ? remaining : r.size));
    if (verdict === null) {
      for (let i = 0; i < reqs.length; i++) {
        if (reqs[i]!.offset + sizes[i]! > 4096) return { overflow: false, packets: [...packets, { verdict: { kind: "fatal" }, answers: [] }], fatal: true };
      }
      if (reqs.length > 18 || first.size < 14 || first.size > 65535) verdict = { kind: "drop" };
    }
    if (verdict === null) {
      const bytes = new Uint8Array(first.size);
      let pos = 0;
      for (let i = 0; i < reqs.length && verdict === null; i++) {
        const page = refs.indexOf(reqs[i]!.gref);
        if (page < 0) verdict = { kind: "drop" };
        else bytes.set(pages[page]!.subarray(reqs[i]!.offset, reqs[i]!.offset + sizes[i]!), pos);
        pos += sizes[i]!;
      }
      verdict ??= gsoType !== 0 && !isTcpOfType(bytes, gsoType) ? { kind: "taken" } : { kind: "deliver", bytes };
    }
    const status = verdict.kind === "deliver" || verdict.kind === "taken" ? NETIF_RSP.okay : NETIF_RSP.error;
    const answers = [status, ...Array(extras).fill(NETIF_RSP.null), ...reqs.slice(1).map(() => status)];
    packets.push({ verdict, answers });
    at += used;
    n -= used;
  }
  return { overflow: false, packets, fatal: false };
}

test(
  `back-tx: ${STATES} fuzzed ring states from a hostile front end match the reference model`,
  () => {
    const rng = new Rng(SEED);
    const h = backTxHarness(4 << 20);
    for (const p of h.pages) for (let i = 0; i < 4096; i++) p[i] = rng.u8();
    const f = h.peer;
    const dv = f.view;
    const snap = new DataView(new ArrayBuffer(4096));
    const snapBytes = new Uint8Array(snap.buffer);
    let delivered = 0;
    let dropped = 0;
    let fatals = 0;
    let overflows = 0;
    let nextId = 0;

    for (let state = 0; state < STATES; state++) {
      const first = f.reqProdPvt >>> 0;
      const packets = rng.int(0, 4);
      for (let p = 0; p < packets && f.freeRequests() > 24; p++) {
        const frags = rng.bool(0.15) ? rng.int(2, 5) : 1;
        const sizes = Array.from({ length: frags }, () => rng.int(1, 1500));
        if (sizes[0]! < 14) sizes[0] = 14;
        const total = sizes.reduce((a, b) => a + b, 0);
        const extra = rng.bool(0.15);
        for (let i = 0; i < frags; i++) {
          const page = rng.int(0, h.pages.length - 1);
          const offset = rng.int(0, 4096 - sizes[i]!);
          const flags = (i < frags - 1 ? NETTXF.moreData : 0) | (i === 0 && extra ? NETTXF.extraInfo : 0) | (i === 0 ? rng.int(0, 3) : 0);
          encodeTxRequest(dv, f.slotOffset(f.reqProdPvt), { gref: h.refs[page]!, offset, flags, id: nextId++ & 0xffff, size: i === 0 ? total : sizes[i]! });
          f.reqProdPvt = (f.reqProdPvt + 1) >>> 0;
          if (i === 0 && extra) {
            encodeExtraInfo(dv, f.slotOffset(f.reqProdPvt), { type: EXTRA_TYPE.gso, size: 1448, gsoType: GSO_TYPE.tcpv4, features: 0 }, false);
            f.reqProdPvt = (f.reqProdPvt + 1) >>> 0;
          }
        }
      }
      const written = (f.reqProdPvt - first) >>> 0;
      const damage = rng.int(0, 3);
      for (let d = 0; d < damage; d++) {
        const kind = rng.pick(["field", "slot", "gref", "prod-near", "prod-far", "flags"] as const);
        const o = f.slotOffset(first + rng.int(0, Math.max(0, written - 1)));
        if (kind === "field") dv.setUint16(o + 4 + 2 * rng.int(0, 3), rng.pick([0, 1, 13, 14, 0xffff, 4096, 4095, rng.u16()]), true);
        else if (kind === "slot") for (let b = 0; b < 12; b++) dv.setUint8(o + b, rng.u8());
        else if (kind === "gref") dv.setUint32(o, rng.pick([0, 7, 4000, rng.u32()]), true);
        else if (kind === "flags") dv.setUint16(o + 6, rng.pick([NETTXF.moreData, NETTXF.extraInfo, 0xffff, 0]), true);
        else if (kind === "prod-near") f.reqProdPvt = (f.reqProdPvt + rng.int(-3, 3)) >>> 0;
        else f.reqProdPvt = rng.u32();
      }
      f.pushRequests();

      const cons = (h.role as unknown as { ring: { reqCons: number } }).ring.reqCons;
      snapBytes.set(f.page);
      const want = model(snap, cons, h.refs, h.pages);
      let threw: unknown = null;
      try {
        h.role.poll();
      } catch (e) {
        threw = e;
      }
      const got = drainQueue(h.q).map((x) => x.bytes);
      if (want.overflow || want.fatal) {
        const code = threw instanceof PeerBroken ? threw.cause.code : threw instanceof ProtocolError ? threw.code : null;
        if (code === null || (want.overflow && code !== "RING_OVERFLOW")) throw new Error(`state ${state}: expected a typed fatal error, got ${String(threw)}`);
        if (want.overflow) overflows++;
        else fatals++;
        h.reset(); // the peer is broken: the ring is abandoned
        f.reqProdPvt = 0;
        continue;
      }
      if (threw !== null) throw new Error(`state ${state}: poll threw ${String((threw as Error)?.stack ?? threw)}`);
      const wantFrames = want.packets.flatMap((p) => (p.verdict.kind === "deliver" ? [p.verdict.bytes] : []));
      if (got.length !== wantFrames.length) throw new Error(`state ${state}: delivered ${got.length}, model ${wantFrames.length}`);
      for (let i = 0; i < got.length; i++) if (!Bun.deepEquals(got[i], wantFrames[i])) throw new Error(`state ${state}: frame ${i} differs`);
      // Every consumed slot answered, in order, as the model says.
      const answers: number[] = [];
      for (let n = f.unconsumedResponses(); n > 0; n--) {
        answers.push(dv.getInt16(f.slotOffset(f.rspCons) + 2, true));
        f.rspCons = (f.rspCons + 1) >>> 0;
      }
      const wantAnswers = want.packets.flatMap((p) => p.answers);
      if (!Bun.deepEquals(answers, wantAnswers)) throw new Error(`state ${state}: answers ${answers} vs model ${wantAnswers}`);
      delivered += got.length;
      dropped += want.packets.filter((p) => p.verdict.kind === "drop" || p.verdict.kind === "taken").length;
      // A damaged req_prod may have run ahead of what the fake front end wrote: follow it.
      f.reqProdPvt = f.sharedReqProd;
    }
    console.log(`back-tx fuzz: ${STATES} states, ${delivered} frames delivered, ${dropped} dropped, ${fatals} fatal, ${overflows} overflows`);
    expect(delivered).toBeGreaterThan(STATES / 2);
    expect(dropped).toBeGreaterThan(STATES / 50);
    expect(fatals).toBeGreaterThan(100);
    expect(overflows).toBeGreaterThan(100);
    h.close();
  },
  300_000,
);
