/**
 * A hostile back end against our front end's RX ring. Each round the fake back end answers
 * posted buffers with mostly valid packets, then damages what it published: any field of any
 * response, extra-info slots, rsp_prod (near and far). After each poll, what our FrontRx did
 * is compared with an independent reference model of the rules: the same frames delivered,
 * byte for byte, the same drops, the same slots consumed, a typed RING_OVERFLOW exactly when
 * rsp_prod is impossible, and nothing else ever thrown.
 */
import { expect, test } from "bun:test";
import { EXTRA_TYPE, GSO_TYPE, NETRXF, ProtocolError, encodeExtraInfo, encodeRxResponse } from "../src/protocol/index.ts";
import { Counter } from "../src/workers/control.ts";
import { drainQueue, frontRxHarness } from "./helpers/role-harness.ts";
import { Rng } from "./helpers/prng.ts";
import { isTcpOfType } from "./helpers/tcp-check.ts";

const STATES = Number(process.env.FUZZ_STATES ?? 250_000);
const SEED = Number(process.env.FUZZ_SEED ?? 0xf00d);
const MASK = 255;
const MAX_SLOTS = 18;
const MAX_PACKET = 65549;

interface ModelResult {
  overflow: boolean;
  frames: Uint8Array[];
  drops: number;
  consumed: number;
}

/** What a correct front end does with the responses in `ring` from `cons` (independent of src/). */
function model(ring: DataView, cons: number, pages: readonly Uint8Array[]): ModelResult {
  const prod = ring.getUint32(8, true);
  let n = (prod - cons) >>> 0;
  if (n > 256) return { overflow: true, frames: [], drops: 0, consumed: 0 };
  const frames: Uint8Array[] = [];
  let drops = 0;
  let consumed = 0;
  const slotAt = (k: number) => 64 + ((cons + consumed + k) & MASK) * 8;
  while (n > 0) {
    let used = 0;
    let bad = false;
    const parts: Uint8Array[] = [];
    let unknownEnd = false;
    let gsoType = 0;
    for (;;) {
      const o = slotAt(used);
      const id = ring.getUint16(o, true);
      const offset = ring.getUint16(o + 2, true);
      const flags = ring.getUint16(o + 4, true);
      const status = ring.getInt16(o + 6, true);
      const k = used++;
      if (flags & NETRXF.gsoPrefix) bad = true;
      if (status < 0 || offset + status > 4096) bad = true;
      if (id !== ((cons + consumed + k) & MASK)) bad = true;
      if (status >= 0 && offset + status <= 4096) parts.push(pages[(cons + consumed + k) & MASK]!.subarray(offset, offset + status));
      if (k === 0 && flags & NETRXF.extraInfo) {
        let seen = 0;
        let ended = false;
        for (let j = 0; used < n; j++) {
          const e = slotAt(used);
          used++;
          const type = ring.getUint8(e);
          const more = (ring.getUint8(e + 1) & 1) !== 0;
          const gsoOk = type !== EXTRA_TYPE.gso || ((ring.getUint8(e + 4) === 1 || ring.getUint8(e + 4) === 2) && ring.getUint16(e + 2, true) > 0);
          if (type < 1 || type > 4 || seen & (1 << type) || !gsoOk) bad = true;
          seen |= 1 << type;
          if (type === EXTRA_TYPE.gso) gsoType = ring.getUint8(e + 4);
          if (!more) {
            ended = true;
            break;
          }
        }
        if (!ended) {
          bad = true;
          unknownEnd = true;
          used = n;
          break;
        }
      }
      if (!(flags & NETRXF.moreData)) break;
      if (used >= n) {
        bad = true;
        break;
      }
    }
    const total = parts.reduce((s, p) => s + p.length, 0);
    if (!unknownEnd && (parts.length > MAX_SLOTS || total > MAX_PACKET)) bad = true;
    if (unknownEnd && parts.length > MAX_SLOTS) bad = true;
    if (bad) drops++;
    else {
      const f = new Uint8Array(total);
      let at = 0;
      for (const p of parts) {
        f.set(p, at);
        at += p.length;
      }
      // A GSO frame that is not TCP of its type: dropped (Linux netfront's checksum setup fails).
      if (gsoType !== 0 && !isTcpOfType(f, gsoType)) drops++;
      else frames.push(f);
    }
    consumed += used;
    n -= used;
  }
  return { overflow: false, frames, drops, consumed };
}

test(
  `front-rx: ${STATES} fuzzed ring states from a hostile back end match the reference model`,
  () => {
    const rng = new Rng(SEED);
    const h = frontRxHarness(4 << 20);
    const ring = h.peer;
    const dv = new DataView(ring.page.buffer, ring.page.byteOffset, 4096);
    const snap = new DataView(new ArrayBuffer(4096));
    const snapBytes = new Uint8Array(snap.buffer);
    let delivered = 0;
    let dropped = 0;
    let overflows = 0;
    const kinds = new Map<string, number>();

    for (let state = 0; state < STATES; state++) {
      // The fake back end answers a few packets, mostly well formed, with random content.
      const packets = rng.int(0, 4);
      for (let p = 0; p < packets && ring.unconsumedRequests() > 20; p++) {
        const size = rng.bool(0.1) ? rng.int(4097, 20000) : rng.int(14, 1514);
        const slots = Math.ceil(size / 4096);
        const withExtra = rng.bool(0.15);
        for (let i = 0, left = size; i < slots; i++) {
          const slot = ring.reqCons & MASK;
          const chunk = Math.min(4096, left);
          left -= chunk;
          const page = h.dataPages[slot]!;
          page[0] = rng.u8();
          page[chunk - 1] = rng.u8();
          page[chunk >> 1] = rng.u8();
          const flags = (i < slots - 1 ? NETRXF.moreData : 0) | (i === 0 && withExtra ? NETRXF.extraInfo : 0);
          encodeRxResponse(ring.view, ring.slotOffset(ring.rspProdPvt), { id: slot, offset: 0, flags, status: chunk });
          ring.reqCons++;
          ring.rspProdPvt++;
          if (i === 0 && withExtra) {
            encodeExtraInfo(ring.view, ring.slotOffset(ring.rspProdPvt), { type: EXTRA_TYPE.gso, size: 1448, gsoType: GSO_TYPE.tcpv4, features: 0 }, false);
            ring.reqCons++;
            ring.rspProdPvt++;
          }
        }
      }
      const first = (h.role as unknown as { ring: { rspCons: number } }).ring.rspCons;
      const written = (ring.rspProdPvt - first) >>> 0;
      // ...then damages it.
      const damage = rng.int(0, 3);
      for (let d = 0; d < damage; d++) {
        const kind = rng.pick(["field", "slot", "prod-near", "prod-far", "extra"] as const);
        kinds.set(kind, (kinds.get(kind) ?? 0) + 1);
        const slotOff = ring.slotOffset(first + rng.int(0, Math.max(0, written - 1)));
        if (kind === "field") dv.setUint16(slotOff + 2 * rng.int(0, 3), rng.pick([0, 1, 0xffff, 0x8000, 4096, 4095, rng.u16()]), true);
        else if (kind === "slot") for (let b = 0; b < 8; b++) dv.setUint8(slotOff + b, rng.u8());
        else if (kind === "prod-near") ring.rspProdPvt = (ring.rspProdPvt + rng.int(-3, 3)) >>> 0;
        else if (kind === "prod-far") ring.rspProdPvt = rng.u32();
        else dv.setUint16(slotOff + 4, dv.getUint16(slotOff + 4, true) | NETRXF.extraInfo | (rng.bool() ? NETRXF.moreData : 0), true);
      }
      ring.pushResponses();

      snapBytes.set(ring.page);
      const want = model(snap, first, h.dataPages);
      const drops0 = h.ctl.get(Counter.drops);
      let threw: unknown = null;
      try {
        h.role.poll();
      } catch (e) {
        threw = e;
      }
      if (want.overflow) {
        if (!(threw instanceof ProtocolError) || threw.code !== "RING_OVERFLOW") {
          throw new Error(`state ${state}: expected RING_OVERFLOW, got ${String(threw)}`);
        }
        overflows++;
        drainQueue(h.q);
        h.reset(); // a broken back end: the front end reconnects on a fresh ring
        continue;
      }
      if (threw !== null) throw new Error(`state ${state}: poll threw ${String((threw as Error)?.stack ?? threw)}`);
      const got = drainQueue(h.q).map((f) => f.bytes);
      const dropsNow = h.ctl.get(Counter.drops) - drops0;
      const cons = (h.role as unknown as { ring: { rspCons: number } }).ring.rspCons;
      if (got.length !== want.frames.length || dropsNow !== want.drops || ((cons - first) >>> 0) !== want.consumed) {
        throw new Error(
          `state ${state}: delivered ${got.length}/${want.frames.length}, drops ${dropsNow}/${want.drops}, consumed ${(cons - first) >>> 0}/${want.consumed}`,
        );
      }
      for (let i = 0; i < got.length; i++) {
        if (!Bun.deepEquals(got[i], want.frames[i])) throw new Error(`state ${state}: frame ${i} differs from the model's`);
      }
      delivered += got.length;
      dropped += dropsNow;
      // Resynchronise the fake back end with what was consumed.
      ring.rspProdPvt = cons;
      ring.reqCons = cons;
    }
    console.log(`front-rx fuzz: ${STATES} states, ${delivered} frames delivered, ${dropped} dropped, ${overflows} overflows; damage ${JSON.stringify(Object.fromEntries(kinds))}`);
    expect(delivered).toBeGreaterThan(STATES / 2);
    expect(dropped).toBeGreaterThan(STATES / 20);
    expect(overflows).toBeGreaterThan(100);
    h.close();
  },
  300_000,
);
