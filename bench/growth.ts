/**
 * Growth: does per-frame cost or memory grow with the number of frames? Netfront → Netback on the
 * simulated hypervisor, 1514-byte frames, runs of 10^4 .. 10^7 frames on one connection (each run
 * after the previous), mitata's measure() timing each run once; resident memory after each run.
 * `bun run bench/growth.ts [maxExponent]` (default 7).
 */
import { parseArgs } from "node:util";
import { measure } from "mitata";
import { devicePair, Flow } from "./device-pair.ts";

const { positionals } = parseArgs({ args: process.argv.slice(2), allowPositionals: true, strict: true, options: {} });
const MAX_EXP = Number(positionals[0] ?? 7);
if (!Number.isInteger(MAX_EXP) || MAX_EXP < 1) {
  console.error(`usage: bun run ${import.meta.file} [maxExponent] (a positive integer; got ${positionals[0]})`);
  process.exit(2);
}
const SIZE = 1514;
const BATCH = 2000;

const pair = await devicePair();
const flow = new Flow(pair.front, pair.back, SIZE);
await flow.batch(BATCH * 10); // warm up the JIT and the workers

console.log(`frames       ns/frame   Mframes/s   rss MiB   heap MiB`);
for (let exp = 4; exp <= MAX_EXP; exp++) {
  const frames = 10 ** exp;
  const stats = await measure(
    async () => {
      for (let n = 0; n < frames; n += BATCH) await flow.batch(Math.min(BATCH, frames - n));
    },
    { min_samples: 1, max_samples: 1, min_cpu_time: 0, warmup_samples: 0, batch_samples: 1, batch_unroll: 1 },
  );
  const ns = stats.p50 / frames;
  const mem = process.memoryUsage();
  console.log(
    `${String(frames).padEnd(12)} ${ns.toFixed(1).padStart(8)}   ${(1e3 / ns).toFixed(3).padStart(9)}   ${(mem.rss / 2 ** 20).toFixed(1).padStart(7)}   ${(mem.heapUsed / 2 ** 20).toFixed(1).padStart(8)}`,
  );
}
await pair.close();
process.exit(0);
