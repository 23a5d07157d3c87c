/**
 * A hostile front end posting RX buffers to our back end: grant refs it never gave, ids in any
 * order, req_prod far beyond the ring. Our BackRx must write each frame only into buffers that
 * were really granted (a bad one turns every slot of that frame into ERROR, counted), deliver
 * every other frame byte-exact and in order, never write outside a granted page, and throw
 * only a typed RING_OVERFLOW when req_prod claims more than the ring holds.
 */
import { expect, test } from "bun:test";
import { NETIF_RSP, NETRXF, ProtocolError, decodeRxResponse, encodeRxRequest } from "../src/protocol/index.ts";
import { Counter } from "../src/workers/control.ts";
import { backRxHarness } from "./helpers/role-harness.ts";
import { Rng } from "./helpers/prng.ts";

const STATES = Number(process.env.FUZZ_STATES ?? 250_000);
const SEED = Number(process.env.FUZZ_SEED ?? 0x5eed);

test(
  `back-rx: ${STATES} fuzzed ring states from a hostile front end: frames only into granted buffers, exact`,
  () => {
    const rng = new Rng(SEED);
    const h = backRxHarness();
    const f = h.peer;
    /** Frames queued for the guest, in order; the fake checks each against what lands. */
    const sent: Uint8Array[] = [];
    /** The gref posted at each ring index, as the fake front end wrote it. */
    const posted = new Map<number, number>();
    let delivered = 0;
    let refused = 0;
    let overflows = 0;
    let seq = 0;

    for (let state = 0; state < STATES; state++) {
      for (let i = rng.int(0, 3); i > 0; i--) {
        const len = rng.bool(0.1) ? rng.int(4097, 12000) : rng.int(14, 1514);
        const fr = new Uint8Array(len);
        fr[0] = seq & 0xff;
        fr[len - 1] = (seq * 7) & 0xff;
        fr[len >> 1] = rng.u8();
        seq++;
        if (h.q.push(fr)) sent.push(fr);
      }
      // Post buffers: the page of the ring slot (so no two outstanding buffers share a page), sometimes a ref we never granted.
      for (let i = rng.int(0, 8); i > 0 && f.freeRequests() > 0; i--) {
        const bad = rng.bool(0.03);
        const gref = bad ? rng.pick([0, 7, 5000, rng.u32()]) : h.refs[f.reqProdPvt & 255]!;
        posted.set(f.reqProdPvt >>> 0, gref);
        encodeRxRequest(f.view, f.slotOffset(f.reqProdPvt), { id: rng.u16(), gref });
        f.reqProdPvt = (f.reqProdPvt + 1) >>> 0;
      }
      // Only a back end with a frame to place reads req_prod; give it one so the lie is seen.
      const far = rng.bool(0.005);
      if (far && h.q.isEmpty()) {
        const fr = new Uint8Array(60);
        if (h.q.push(fr)) sent.push(fr);
      }
      if (far) f.reqProdPvt = (f.reqProdPvt + rng.int(300, 100000)) >>> 0;
      f.pushRequests();

      const errors0 = h.ctl.get(Counter.errors);
      let threw: unknown = null;
      try {
        h.role.poll();
      } catch (e) {
        threw = e;
      }
      if (far) {
        if (!(threw instanceof ProtocolError) || threw.code !== "RING_OVERFLOW" || threw.field !== "req_prod") {
          throw new Error(`state ${state}: expected RING_OVERFLOW on req_prod, got ${String(threw)}`);
        }
        overflows++;
        // Frames already answered stay answered; the rest wait for the next ring.
        h.reset();
        posted.clear();
        continue;
      }
      if (threw !== null) throw new Error(`state ${state}: poll threw ${String((threw as Error)?.stack ?? threw)}`);
      // Read the answers, frame by frame, and check them against the frames queued.
      let bad = 0;
      while (f.unconsumedResponses() > 0) {
        const want = sent.shift();
        if (want === undefined) throw new Error(`state ${state}: an answer for a frame never queued`);
        const parts: Uint8Array[] = [];
        let ok = true;
        for (;;) {
          const idx = f.rspCons >>> 0;
          const r = decodeRxResponse(f.view, f.slotOffset(idx));
          f.rspCons = (f.rspCons + 1) >>> 0;
          const gref = posted.get(idx);
          posted.delete(idx);
          if (r.status < 0) {
            if (r.status !== NETIF_RSP.error) throw new Error(`state ${state}: status ${r.status}`);
            ok = false;
          } else {
            const page = h.refs.indexOf(gref ?? -1);
            if (page < 0) throw new Error(`state ${state}: data reported written to a gref we never granted (${gref})`);
            parts.push(h.pages[page]!.slice(r.offset, r.offset + r.status));
          }
          if (!(r.flags & NETRXF.moreData)) break;
        }
        if (!ok) {
          bad++;
          continue;
        }
        const got = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
        let at = 0;
        for (const p of parts) {
          got.set(p, at);
          at += p.length;
        }
        if (!Bun.deepEquals(got, want)) throw new Error(`state ${state}: a frame of ${want.length} bytes arrived as ${got.length} different bytes`);
        delivered++;
      }
      if (h.ctl.get(Counter.errors) - errors0 !== bad) throw new Error(`state ${state}: ${bad} refused frames, ${h.ctl.get(Counter.errors) - errors0} errors counted`);
      refused += bad;
    }
    console.log(`back-rx fuzz: ${STATES} states, ${delivered} frames delivered exact, ${refused} refused (bad grant), ${overflows} overflows`);
    expect(delivered).toBeGreaterThan(STATES / 4);
    expect(refused).toBeGreaterThan(100);
    expect(overflows).toBeGreaterThan(100);
    h.close();
  },
  300_000,
);
