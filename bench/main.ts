/**
 * The main job until the driver lands: per-frame cost of the TX ring path on the simulated
 * hypervisor (protocol core + grant copy, one thread), beside the memcpy floor measured in the
 * same run (the two copies every frame needs: into the granted page and out of it).
 */
import { bench, do_not_optimize, group, run } from "mitata";
import { TxRingLoop } from "./ring-loop.ts";

const SIZES = [64, 512, 1514, 4096];
const BATCH = 32;

for (const size of SIZES) {
  const loop = new TxRingLoop(size);
  const a = new Uint8Array(size).fill(1);
  const page = new Uint8Array(4096);
  const out = new Uint8Array(4096);
  group(`${size} B frames, batches of ${BATCH}`, () => {
    bench(`ring ${size}B`, () => loop.step(BATCH));
    bench(`memcpy floor ${size}B`, () => {
      for (let i = 0; i < BATCH; i++) {
        page.set(a);
        out.set(page.subarray(0, size));
      }
      do_not_optimize(out);
    });
  });
}

const { benchmarks } = await run();
console.log(`\nPer frame (batch of ${BATCH}; avg of mitata samples):`);
console.log("frame   ring ns/frame   Mframes/s   Gbit/s   memcpy-floor ns/frame   ring/floor");
for (let i = 0; i < SIZES.length; i++) {
  const ring = benchmarks[2 * i]?.runs[0]?.stats;
  const floor = benchmarks[2 * i + 1]?.runs[0]?.stats;
  if (!ring || !floor) continue;
  const size = SIZES[i]!;
  const ns = ring.p50 / BATCH;
  const fns = floor.p50 / BATCH;
  console.log(
    `${String(size).padStart(5)}   ${ns.toFixed(1).padStart(13)}   ${(1e3 / ns).toFixed(2).padStart(9)}   ${((size * 8) / ns).toFixed(2).padStart(6)}   ${fns.toFixed(1).padStart(21)}   ${(ns / fns).toFixed(2).padStart(10)}`,
  );
}
