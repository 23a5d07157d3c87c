/**
 * The main job: frames/s and Gbit/s through Netfront and Netback on the simulated hypervisor,
 * both directions, for 64, 512, 1514 and 9014-byte frames (two TX/RX worker pairs plus the main
 * threads' queue work). Measured beside two references from the same run: the TX ring path on
 * one thread with no workers (protocol core + grant copy) and the memcpy floor.
 */
import { bench, do_not_optimize, group, run } from "mitata";
import { devicePair, Flow } from "./device-pair.ts";
import { TxRingLoop } from "./ring-loop.ts";

const SIZES = [64, 512, 1514, 9014];
const BATCH = 2000;
const RING_BATCH = 32;

const pair = await devicePair();
const names: { size: number; kind: "up" | "down" | "ring" | "floor"; per: number }[] = [];

for (const size of SIZES) {
  const up = new Flow(pair.front, pair.back, size);
  const down = new Flow(pair.back, pair.front, size);
  group(`${size}-byte frames`, () => {
    bench(`netfront → netback ${size}B ×${BATCH}`, () => up.batch(BATCH));
    names.push({ size, kind: "up", per: BATCH });
    bench(`netback → netfront ${size}B ×${BATCH}`, () => down.batch(BATCH));
    names.push({ size, kind: "down", per: BATCH });
    if (size <= 4096) {
      const loop = new TxRingLoop(size);
      bench(`reference: TX ring path, one thread ${size}B ×${RING_BATCH}`, () => loop.step(RING_BATCH));
      names.push({ size, kind: "ring", per: RING_BATCH });
    }
    const src = new Uint8Array(size).fill(1);
    const page = new Uint8Array(size);
    const out = new Uint8Array(size);
    bench(`reference: memcpy floor (2 copies) ${size}B ×${RING_BATCH}`, () => {
      for (let i = 0; i < RING_BATCH; i++) {
        page.set(src);
        out.set(page);
      }
      do_not_optimize(out);
    });
    names.push({ size, kind: "floor", per: RING_BATCH });
  });
}

const { benchmarks } = await run();
await pair.close();

const label = { up: "netfront → netback", down: "netback → netfront", ring: "ref: TX ring, 1 thread", floor: "ref: memcpy floor" };
console.log("\nPer frame (median of mitata's samples):");
console.log(`${"frame".padStart(6)}  ${"path".padEnd(24)} ${"ns/frame".padStart(9)} ${"Mframes/s".padStart(10)} ${"Gbit/s".padStart(8)}`);
benchmarks.forEach((b, i) => {
  const n = names[i];
  const st = b.runs[0]?.stats;
  if (!n || !st) return;
  const ns = st.p50 / n.per;
  console.log(`${String(n.size).padStart(6)}  ${label[n.kind].padEnd(24)} ${ns.toFixed(1).padStart(9)} ${(1e3 / ns).toFixed(3).padStart(10)} ${((n.size * 8) / ns).toFixed(2).padStart(8)}`);
});
process.exit(0);
