/**
 * A peer that rewrites the shared ring from another thread while our side reads it: slot bytes
 * and producer indices change under our feet. Every slot is copied out before it is checked, so
 * whatever we read is validated as a whole: poll either works, or fails with a typed error
 * (the peer is broken, the ring is reset); nothing else is ever thrown, nothing hangs, and no
 * delivered frame exceeds the limits.
 */
import { expect, test } from "bun:test";
import { ProtocolError } from "../src/protocol/index.ts";
import { PeerBroken } from "../src/workers/back-tx.ts";
import { Counter } from "../src/workers/control.ts";
import { backTxHarness, drainQueue, frontRxHarness } from "./helpers/role-harness.ts";

const MS = Number(process.env.FUZZ_CONCURRENT_MS ?? 1500);

async function hammer(page: Uint8Array, poll: () => void, reset: () => void, drain: () => number[], maxFrame: number) {
  const w = new Worker(new URL("./fixtures/ring-scribbler.ts", import.meta.url).href);
  const done = new Promise<number>((r) => (w.onmessage = (e) => r(e.data)));
  w.postMessage({ buffer: page.buffer, offset: page.byteOffset, ms: MS, seed: 0xc0ffee });
  let polls = 0;
  let typed = 0;
  let frames = 0;
  const end = performance.now() + MS;
  while (performance.now() < end) {
    try {
      poll();
    } catch (e) {
      if (!(e instanceof ProtocolError || e instanceof PeerBroken)) throw e;
      typed++;
      reset();
    }
    for (const len of drain()) {
      if (len > maxFrame) throw new Error(`a frame of ${len} bytes was delivered`);
      frames++;
    }
    polls++;
    if ((polls & 1023) === 0) await Bun.sleep(0);
  }
  const writes = await done;
  w.terminate();
  return { polls, typed, frames, writes };
}

test("back-tx reads a TX ring that another thread keeps rewriting", async () => {
  const h = backTxHarness(4 << 20);
  const r = await hammer(h.peer.page, () => h.role.poll(), () => h.reset(), () => drainQueue(h.q).map((f) => f.bytes.length), 65535);
  console.log(`back-tx under concurrent rewrites: ${r.polls} polls, ${r.writes} peer writes, ${r.typed} typed fatal errors, ${r.frames} frames`);
  expect(r.polls).toBeGreaterThan(1000);
  expect(r.typed).toBeGreaterThan(10);
  h.close();
}, 30_000);

test("front-rx reads an RX ring that another thread keeps rewriting", async () => {
  const h = frontRxHarness(4 << 20);
  const r = await hammer(h.peer.page, () => h.role.poll(), () => h.reset(), () => drainQueue(h.q).map((f) => f.bytes.length), 65549);
  const drops = h.ctl.get(Counter.drops);
  console.log(`front-rx under concurrent rewrites: ${r.polls} polls, ${r.writes} peer writes, ${r.typed} typed fatal errors, ${drops} malformed packets dropped, ${r.frames} frames`);
  expect(r.polls).toBeGreaterThan(1000);
  // Small steps of rsp_prod are consumed as they come: the garbage they expose is dropped and counted.
  expect(r.typed + drops).toBeGreaterThan(10);
  h.close();
}, 30_000);
