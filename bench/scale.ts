/**
 * Many vifs served from one process (`bun run bench:scale [--vifs 1,10,100,1000] [--json FILE]`):
 * for each N, in a process of its own, N guests on the simulated hypervisor each connect a
 * Netfront to a Netback of domain 0, all in this process; then it measures
 *   - connect time (all N at once) and disconnect time,
 *   - threads of the process, and its resident memory per vif; the back end's share: the front
 *     ends are connected first (each waiting for its back end), then the back ends; what the
 *     process gained from then on, less what the front ends' shared memory gained (their pages
 *     and queues, as mincore(2) finds them resident), is the back ends',
 *   - CPU over 10 s with every vif connected and idle (all threads), from 20 s after the last
 *     connected (the collector's work on what a thousand handshakes left is not what an idle
 *     vif costs; the first 5 s are reported beside it),
 *   - total frames/s with every front end sending 1514-byte frames to its back end at once
 *     (mitata, several samples), its ratio to N = 1 of the same run, CPU time per frame,
 *   - frames lost (written and never received: must be 0), and the leak check.
 */
import { measure } from "mitata";
import { cpus } from "node:os";
import { parseArgs } from "node:util";
import pino from "pino";
import { Netback, Netfront, SimHypervisor, createVif } from "../src/main/index.ts";
import { residentBytes } from "../src/ffi/libc.ts";

const FRAME = 1514;
const IDLE_MS = Number(process.env.SCALE_IDLE_MS ?? 10_000);
const SEND_MS = Number(process.env.SCALE_SEND_MS ?? 1000);
const SAMPLES = Number(process.env.SCALE_SAMPLES ?? 5);
const IDLE_SETTLE_MS = Number(process.env.SCALE_SETTLE_MS ?? 20_000);
const EARLY_MS = 5000;

interface Result {
  vifs: number;
  connectMs: number;
  disconnectMs: number;
  threads: number;
  rssPerVifKiB: number;
  backRssPerVifKiB: number;
  idleCpuPercent: number;
  earlyIdleCpuPercent: number;
  framesPerSec: number;
  framesPerSecMin: number;
  framesPerSecMax: number;
  cpuNsPerFrame: number;
  lost: number;
  leaks: number;
}

function threads(): number {
  let n = 0;
  for (const _ of new Bun.Glob("*").scanSync({ cwd: "/proc/self/task", onlyFiles: false })) n++;
  return n;
}

const rss = () => process.memoryUsage().rss;

/** What the front ends' shared memory holds now: the guests' pages (rings and data) and their queues. */
function frontResident(hv: SimHypervisor, fronts: Netfront[]): number {
  let n = residentBytes(hv.state.pool.memory);
  for (const f of fronts) {
    const ctx = (f as unknown as { ctx: { queues: { send: { buffer: SharedArrayBuffer }; recv: { buffer: SharedArrayBuffer } }[] } }).ctx;
    for (const q of ctx.queues) n += residentBytes(q.send.buffer) + residentBytes(q.recv.buffer);
  }
  return n;
}

async function settledRss(): Promise<number> {
  Bun.gc(true);
  await Bun.sleep(100);
  Bun.gc(true);
  return rss();
}

async function child(n: number): Promise<Result> {
  const logger = pino({ level: "warn" });
  const hv = SimHypervisor.create({ vifs: n });
  const dom0 = hv.platform(0);
  const rss0 = await settledRss();
  const guests: number[] = [];
  for (let i = 0; i < n; i++) {
    const g = hv.createDomain();
    guests.push(g);
    await createVif(dom0.xenstore, { frontDomid: g, backDomid: 0, devid: 0, mac: `00:16:3e:${((g >> 8) & 0xff).toString(16).padStart(2, "0")}:${(g & 0xff).toString(16).padStart(2, "0")}:01` });
  }
  // The front ends first, each waiting for its back end: then what the back ends add is theirs.
  // They need an offer to connect to: written here as a back end writes it (Netback.serve
  // writes it again when it comes).
  for (const g of guests) {
    const b = `/local/domain/0/backend/vif/${g}/0`;
    for (const [k, v] of [["feature-rx-copy", "1"], ["feature-sg", "1"], ["feature-split-event-channels", "1"], ["state", "2"]] as const) await dom0.xenstore.write(`${b}/${k}`, v);
  }
  const t0 = performance.now();
  const fronts = await Promise.all(guests.map((g) => Netfront.connect({ platform: hv.platform(g), logger, timeoutMs: 120_000, awaitBackend: false })));
  const frontMs = performance.now() - t0;
  const rss1 = await settledRss();
  const front1 = frontResident(hv, fronts);
  const t1 = performance.now();
  const backs = await Promise.all(guests.map((g) => Netback.serve({ platform: dom0, frontendDomid: g, logger, timeoutMs: 120_000 })));
  const connectMs = frontMs + (performance.now() - t1);
  const pairs = backs.map((back, i) => ({ back, front: fronts[i]! }));

  // Idle: every vif connected, nothing sent. The first seconds after a thousand handshakes
  // are the collector's (what connecting left behind); then the steady state.
  Bun.gc(true);
  const cpuOver = async (ms: number) => {
    const c0 = process.cpuUsage();
    const t = performance.now();
    await Bun.sleep(ms);
    const c = process.cpuUsage(c0);
    return ((c.user + c.system) / 1000 / (performance.now() - t)) * 100;
  };
  const earlyIdleCpuPercent = await cpuOver(EARLY_MS);
  await Bun.sleep(Math.max(0, IDLE_SETTLE_MS - EARLY_MS));
  const idleCpuPercent = await cpuOver(IDLE_MS);

  // Every front end sends at once.
  let sent = 0;
  let received = 0;
  for (const p of pairs) p.back.listen(() => received++);
  const frame = new Uint8Array(FRAME);
  let sending = false;
  const senders = pairs.map(async ({ front }) => {
    for (;;) {
      while (!sending) await Bun.sleep(1);
      while (sending && front.tryWrite(frame)) sent++;
      if (sending) await front.writable(FRAME);
    }
  });
  void senders;
  const rates: number[] = [];
  let cpuNs = 0;
  let cpuFrames = 0;
  await measure(
    async () => {
      const r0 = received;
      const cu = process.cpuUsage();
      const s0 = performance.now();
      sending = true;
      await Bun.sleep(SEND_MS);
      sending = false;
      const got = received - r0;
      const secs = (performance.now() - s0) / 1000;
      const c = process.cpuUsage(cu);
      rates.push(got / secs);
      cpuNs += (c.user + c.system) * 1000;
      cpuFrames += got;
    },
    { min_samples: SAMPLES, max_samples: SAMPLES, min_cpu_time: 0, warmup_samples: 1, batch_samples: 1, batch_unroll: 1 },
  );
  // Let everything in flight arrive, then count.
  const drainUntil = performance.now() + 30_000;
  while (received < sent && performance.now() < drainUntil) await Bun.sleep(10);
  const lost = sent - received;

  const rssNow = await settledRss();
  const th = threads();
  const perVif = (rssNow - rss0) / n;
  // The back ends' share: all that came after the front ends were up, but what the front ends'
  // own shared memory gained meanwhile (their JS objects were all made before).
  const backPerVif = (rssNow - rss1 - (frontResident(hv, fronts) - front1)) / n;

  const d0 = performance.now();
  await Promise.all(pairs.map(async ({ front, back }) => Promise.all([front.disconnect(), back.disconnect()])));
  const disconnectMs = performance.now() - d0;
  const leaks = hv.leaks().length;
  rates.sort((a, b) => a - b);
  return {
    vifs: n,
    connectMs: Math.round(connectMs),
    disconnectMs: Math.round(disconnectMs),
    threads: th,
    rssPerVifKiB: Math.round(perVif / 1024),
    backRssPerVifKiB: Math.round(backPerVif / 1024),
    idleCpuPercent: Math.round(idleCpuPercent * 100) / 100,
    earlyIdleCpuPercent: Math.round(earlyIdleCpuPercent * 100) / 100,
    framesPerSec: Math.round(rates[Math.floor(rates.length / 2)]!),
    framesPerSecMin: Math.round(rates[0]!),
    framesPerSecMax: Math.round(rates[rates.length - 1]!),
    cpuNsPerFrame: Math.round(cpuNs / Math.max(1, cpuFrames)),
    lost,
    leaks,
  };
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: { vifs: { type: "string", default: "1,10,100,1000" }, json: { type: "string" }, child: { type: "string" } },
    strict: true,
  });
  if (values.child !== undefined) {
    const r = await child(Number(values.child));
    console.log(`RESULT ${JSON.stringify(r)}`);
    process.exit(0);
  }
  const ns = values.vifs!.split(",").map(Number);
  if (ns.some((n) => !Number.isInteger(n) || n < 1 || n > 4000)) throw new Error(`--vifs ${values.vifs}: integers in 1..4000`);
  const results: Result[] = [];
  for (const n of ns) {
    const p = Bun.spawn([process.execPath, import.meta.path, "--child", String(n)], { stdout: "pipe", stderr: "inherit" });
    const out = await new Response(p.stdout).text();
    if ((await p.exited) !== 0) throw new Error(`N = ${n}: the measuring process failed:\n${out}`);
    const line = out.split("\n").find((l) => l.startsWith("RESULT "));
    if (line === undefined) throw new Error(`N = ${n}: no result:\n${out}`);
    const r = JSON.parse(line.slice(7)) as Result;
    results.push(r);
    console.error(`N = ${n}: done`);
  }
  const one = results.find((r) => r.vifs === 1)?.framesPerSec ?? results[0]!.framesPerSec;
  console.log(`${cpus()[0]?.model ?? "?"}, ${cpus().length} CPUs, Bun ${Bun.version}; 1514-byte frames, every front end sending to its back end`);
  console.log(`| vifs | connect s | disconnect s | threads | RSS/vif KiB | back end/vif KiB | idle CPU %, from ${IDLE_SETTLE_MS / 1000} s (first 5 s) | frames/s (min–max) | vs 1 vif | CPU ns/frame | lost | leaks |`);
  console.log("|---|---|---|---|---|---|---|---|---|---|---|---|");
  for (const r of results) {
    console.log(
      `| ${r.vifs} | ${(r.connectMs / 1000).toFixed(2)} | ${(r.disconnectMs / 1000).toFixed(2)} | ${r.threads} | ${r.rssPerVifKiB} | ${r.backRssPerVifKiB} | ${r.idleCpuPercent} (${r.earlyIdleCpuPercent}) | ${r.framesPerSec} (${r.framesPerSecMin}–${r.framesPerSecMax}) | ${(r.framesPerSec / one).toFixed(2)} | ${r.cpuNsPerFrame} | ${r.lost} | ${r.leaks} |`,
    );
  }
  if (values.json !== undefined) await Bun.write(values.json, JSON.stringify({ machine: `${cpus()[0]?.model ?? "?"}, ${cpus().length} CPUs`, bun: Bun.version, results }, null, 2));
}

await main();
