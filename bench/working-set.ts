/**
 * What a frame copy costs as the data it touches grows: a 1514-byte copy (libc's memmove
 * through bun:ffi, as the data path copies) between two buffers cycled through, for working
 * sets from well inside a core's L2 to well beyond it. Many vifs in one process put their
 * frames in such a working set: bench:scale's per-frame cost at 1000 vifs follows from it.
 *
 *   bun run bench/working-set.ts [--runs N]
 *
 * Each figure is the median over N runs (default 5) of mitata's median (32 copies a sample),
 * with min–max.
 */
import { measure } from "mitata";
import { AddressedBytes, copyBetween } from "../src/platform/copy-bytes.ts";
import { median, runsArg } from "./compare.ts";

const FRAME = 1514;
const SLOT = 1536;
const OPS = 32;
const SETS_KIB = [256, 1024, 4096, 16384, 65536];

const runs = runsArg(process.argv.slice(2));
const cases = SETS_KIB.map((kib) => {
  const bytes = kib * 1024;
  const src = new AddressedBytes(new Uint8Array(new SharedArrayBuffer(bytes)).fill(1));
  const dst = new AddressedBytes(new Uint8Array(new SharedArrayBuffer(bytes)).fill(2));
  const slots = Math.floor(bytes / SLOT);
  let i = 0;
  return {
    kib,
    fn: () => {
      for (let k = 0; k < OPS; k++) {
        copyBetween(dst, i * SLOT, src, i * SLOT, FRAME);
        if (++i === slots) i = 0;
      }
    },
  };
});

const results = new Map<number, number[]>();
for (let r = 0; r < runs; r++) {
  for (const c of cases) {
    const s = await measure(c.fn, { min_cpu_time: 200e6 });
    const list = results.get(c.kib) ?? [];
    list.push(s.p50 / OPS);
    results.set(c.kib, list);
  }
}
console.log(`1514-byte copies, source and destination each cycling through the working set; ${runs} runs, median [min–max] ns per copy`);
console.log("| working set (each side) | ns per copy | vs the smallest |");
console.log("|---|---|---|");
const base = median(results.get(SETS_KIB[0]!)!);
for (const kib of SETS_KIB) {
  const v = results.get(kib)!;
  console.log(`| ${kib >= 1024 ? `${kib / 1024} MiB` : `${kib} KiB`} | ${median(v).toFixed(0)} [${Math.min(...v).toFixed(0)}–${Math.max(...v).toFixed(0)}] | ${(median(v) / base).toFixed(1)}× |`);
}
