/**
 * A hostile back end answering our front end's TX requests: ids never sent, ids answered twice,
 * statuses out of range, rsp_prod jumps. Our FrontTx must count every bad answer, free each page
 * exactly once, never lose track of a page (free + in flight = 256, no duplicates), throw only a
 * typed RING_OVERFLOW when rsp_prod claims more answers than requests, and keep sending.
 */
import { expect, test } from "bun:test";
import { NETIF_RSP, ProtocolError, decodeTxRequest, encodeTxResponse } from "../src/protocol/index.ts";
import { Counter } from "../src/workers/control.ts";
import { frontTxHarness } from "./helpers/role-harness.ts";
import { Rng } from "./helpers/prng.ts";

const STATES = Number(process.env.FUZZ_STATES ?? 250_000);
const SEED = Number(process.env.FUZZ_SEED ?? 0x7e57);

test(
  `front-tx: ${STATES} fuzzed ring states from a hostile back end keep the page accounting exact`,
  () => {
    const rng = new Rng(SEED);
    const h = frontTxHarness();
    const frame = new Uint8Array(9000);
    let overflows = 0;
    let badAnswers = 0;
    type Priv = { free: number[]; inFlight: Uint8Array; ring: { rspCons: number; reqProdPvt: number } };
    const priv = () => h.role as unknown as Priv;

    for (let state = 0; state < STATES; state++) {
      for (let i = rng.int(0, 6); i > 0; i--) h.q.push(frame.subarray(0, rng.bool(0.1) ? rng.int(4097, 9000) : rng.int(14, 1514)));
      const b = h.peer;
      // Answer what was requested, with damage.
      let pending = b.unconsumedRequests();
      const ids: number[] = [];
      while (pending-- > 0) {
        ids.push(decodeTxRequest(b.view, b.slotOffset(b.reqCons)).id);
        b.reqCons = (b.reqCons + 1) >>> 0;
      }
      const answer = rng.int(0, ids.length);
      for (let i = 0; i < answer; i++) {
        let id = ids[i]!;
        let status: number = NETIF_RSP.okay;
        const d = rng.int(0, 9);
        if (d === 0) id = rng.u16(); // an id never sent (or one in flight elsewhere)
        else if (d === 1) status = rng.pick([NETIF_RSP.error, NETIF_RSP.dropped]);
        else if (d === 2) status = rng.pick([-3, 2, 0x7fff, -0x8000]);
        else if (d === 3 && i > 0) id = ids[i - 1]!; // a duplicate answer
        encodeTxResponse(b.view, b.slotOffset(b.rspProdPvt), { id, status });
        b.rspProdPvt = (b.rspProdPvt + 1) >>> 0;
      }
      if (rng.bool(0.02)) b.rspProdPvt = (b.rspProdPvt + rng.int(1, 300)) >>> 0; // claims answers never written
      b.pushResponses();
      // Unanswered requests stay outstanding: give them back to the fake so it answers later.
      b.reqCons = (b.reqCons - (ids.length - answer)) >>> 0;

      const p = priv();
      const outstanding = (p.ring.reqProdPvt - p.ring.rspCons) >>> 0;
      const claimed = (b.sharedRspProd - p.ring.rspCons) >>> 0;
      const errors0 = h.ctl.get(Counter.errors);
      // Expected bad answers: unknown ids (including a second answer for one id) and bad statuses.
      const inFlight = p.inFlight.slice();
      let expectBad = 0;
      if (claimed <= outstanding) {
        for (let k = 0; k < claimed; k++) {
          const o = b.slotOffset(p.ring.rspCons + k);
          const id = b.view.getUint16(o, true);
          const status = b.view.getInt16(o + 2, true);
          if (status === NETIF_RSP.null) continue;
          if (id >= 256 || inFlight[id] === 0) {
            expectBad++;
            continue;
          }
          inFlight[id] = 0;
          if (status < -2 || status > 1) expectBad++;
        }
      }
      let threw: unknown = null;
      try {
        h.role.poll();
      } catch (e) {
        threw = e;
      }
      if (claimed > outstanding) {
        if (!(threw instanceof ProtocolError) || threw.code !== "RING_OVERFLOW" || threw.field !== "rsp_prod") {
          throw new Error(`state ${state}: expected RING_OVERFLOW on rsp_prod, got ${String(threw)}`);
        }
        overflows++;
        h.reset();
        continue;
      }
      if (threw !== null) throw new Error(`state ${state}: poll threw ${String((threw as Error)?.stack ?? threw)}`);
      const got = h.ctl.get(Counter.errors) - errors0;
      if (got !== expectBad) throw new Error(`state ${state}: ${got} errors counted, ${expectBad} bad answers`);
      badAnswers += got;
      const q = priv();
      const busy = q.inFlight.reduce((n, x) => n + (x ? 1 : 0), 0);
      if (q.free.length + busy !== 256 || new Set(q.free).size !== q.free.length || q.free.some((pg) => q.inFlight[pg] !== 0)) {
        throw new Error(`state ${state}: page accounting broken: ${q.free.length} free + ${busy} in flight`);
      }
    }
    console.log(`front-tx fuzz: ${STATES} states, ${badAnswers} bad answers counted, ${overflows} overflows, ${h.ctl.get(Counter.packets)} frames sent`);
    expect(badAnswers).toBeGreaterThan(STATES / 20);
    expect(overflows).toBeGreaterThan(100);
    expect(h.ctl.get(Counter.packets)).toBeGreaterThan(STATES / 2);
    h.close();
  },
  300_000,
);
