/**
 * The soak: frames of random sizes (mostly up to 1514 bytes, 5 % multi-page) echoed
 * front → back → front with both workers of each end busy; every echo checked byte for byte,
 * the leak check at the end, and the process's resident memory sampled along the way (it must
 * stay within 10 % once warmed up). `bun run soak [frames]` (default 10,000,000).
 */
import { parseArgs } from "node:util";
import { checkFrame, fillFrame, frameSize, type SizePlan } from "../test/helpers/frames.ts";
import { devicePair } from "./device-pair.ts";

const { positionals } = parseArgs({ args: process.argv.slice(2), allowPositionals: true, strict: true, options: {} });
const FRAMES = Number(positionals[0] ?? 10_000_000);
if (!Number.isInteger(FRAMES) || FRAMES < 1) {
  console.error(`usage: bun run ${import.meta.file} [frames] (a positive integer; got ${positionals[0]})`);
  process.exit(2);
}
const WINDOW = 2048; // frames in flight at most
const SEED = 0x50a4;
const PLAN: SizePlan = { multiPage: 0.05, min: 60, maxSmall: 1514, maxLarge: 65535 };

const pair = await devicePair();
const { front, back } = pair;
back.listen((f, info) => void back.write(f, { csumBlank: info.csumBlank, dataValidated: info.dataValidated }));

let echoed = 0;
let bad = 0;
let bytes = 0;
let wake: (() => void) | null = null;
const scratch = new Uint8Array(65535);
front.listen((f) => {
  const seq = echoed++;
  if (checkFrame(f, SEED, seq, frameSize(SEED, seq, PLAN), scratch) !== -1 && bad++ < 5) console.error(`frame ${seq} came back wrong`);
  bytes += f.length;
  if (wake !== null) {
    const w = wake;
    wake = null;
    w();
  }
});

const rss: number[] = [];
const t0 = performance.now();
for (let seq = 0; seq < FRAMES; seq++) {
  while (seq - echoed >= WINDOW) await new Promise<void>((r) => (wake = r));
  const len = frameSize(SEED, seq, PLAN);
  await front.writeWith(len, (b) => fillFrame(b, SEED, seq));
  if (seq % Math.max(1, Math.floor(FRAMES / 20)) === 0) {
    rss.push(process.memoryUsage().rss);
    console.log(`${((100 * seq) / FRAMES).toFixed(0).padStart(3)}%  ${seq} frames  rss ${(process.memoryUsage().rss / 2 ** 20).toFixed(1)} MiB`);
  }
}
while (echoed < FRAMES) await new Promise<void>((r) => (wake = r));
const secs = (performance.now() - t0) / 1000;

const warm = rss.slice(Math.ceil(rss.length / 5));
const lo = Math.min(...warm);
const hi = Math.max(...warm);
const growth = (hi - lo) / lo;
const fs = front.stats();
const bs = back.stats();
await pair.close(); // runs the leak check
const ok = bad === 0 && echoed === FRAMES && fs.txPackets === FRAMES && fs.rxPackets === FRAMES && bs.rxPackets === FRAMES && growth <= 0.1;
console.log(
  `soak: ${FRAMES} frames echoed in ${secs.toFixed(1)} s (${(FRAMES / secs / 1e6).toFixed(2)} M echoes/s, ${((bytes * 8 * 2) / secs / 1e9).toFixed(2)} Gbit/s both ways), ` +
    `${bad} wrong, drops ${fs.txDrops + fs.rxDrops + bs.txDrops + bs.rxDrops}, rss after warm-up ${(lo / 2 ** 20).toFixed(1)}–${(hi / 2 ** 20).toFixed(1)} MiB (${(growth * 100).toFixed(1)} %), leak check clean: ${ok ? "PASS" : "FAIL"}`,
);
process.exit(ok ? 0 : 1);
