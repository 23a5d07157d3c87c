/**
 * The main job: our driver on the simulated hypervisor beside the C reference built from Xen's
 * own ring.h/netif.h, the memcpy floor and a postMessage baseline, for 64, 512, 1514, 4096 and
 * 9014-byte frames, as one table with each figure's ratio to C, then the goals met or not.
 *
 *   bun run bench [--json FILE] [--runs N] [--sizes 64,1514] [--no-wait]
 *
 * Without gcc and Xen's headers (libxen-dev) the C column is left out and the table says how
 * to get it. What each mode measures: bench/compare.ts (C, postMessage) and bench/ours.ts.
 */
import { parseArgs as parseCli } from "node:util";
import { cpus, loadavg } from "node:os";
import { buildCReference, CReferenceUnavailable, type CReference } from "./c-reference.ts";
import { DEFAULT_RUNS, SIZES, formatGoals, runsArg, formatTable, jsonRows, measureCReference, measurePostMessage, quietGate, type BenchRecord, type MeasureOptions } from "./compare.ts";
import { measureOurs } from "./ours.ts";

interface Args {
  json: string | null;
  runs: number;
  sizes: number[];
  wait: boolean;
}

const USAGE = "usage: bun run bench [--json FILE] [--runs N] [--sizes 64,1514] [--no-wait]";

function parseArgs(argv: string[]): Args {
  let v: { json?: string; runs?: string; sizes?: string; "no-wait"?: boolean };
  try {
    ({ values: v } = parseCli({
      args: argv,
      strict: true,
      allowPositionals: false,
      options: { json: { type: "string" }, runs: { type: "string" }, sizes: { type: "string" }, "no-wait": { type: "boolean" } },
    }));
  } catch (e) {
    throw new Error(`${(e as Error).message}; ${USAGE}`);
  }
  const a: Args = { json: v.json ?? null, runs: DEFAULT_RUNS, sizes: [...SIZES], wait: v["no-wait"] !== true };
  if (v.runs !== undefined) a.runs = runsArg(["--runs", v.runs]);
  if (v.sizes !== undefined) {
    a.sizes = v.sizes.split(",").map(Number);
    if (a.sizes.some((s) => !Number.isInteger(s) || s < 16 || s > 65535)) throw new Error(`--sizes ${v.sizes}: need integers in 16..65535`);
  }
  return a;
}

async function main(): Promise<void> {
  let args: Args;
  try {
    args = parseArgs(process.argv.slice(2));
  } catch (e) {
    console.error((e as Error).message);
    process.exit(2);
  }
  const t0 = performance.now();
  // A live status line on a terminal; nothing when stderr is a file or pipe.
  const tty = process.stderr.isTTY === true;
  const progress = (s: string) => {
    if (tty) process.stderr.write(`\r\x1b[K${s} (${((performance.now() - t0) / 1000).toFixed(0)} s)`);
  };

  let ref: CReference | null = null;
  let noC = "";
  try {
    ref = await buildCReference();
  } catch (e) {
    if (!(e instanceof CReferenceUnavailable)) throw e;
    noC = e.message;
  }

  const loadBefore = loadavg()[0]!;
  const gate = quietGate();
  const opts: MeasureOptions = { runs: args.runs, progress, ...(args.wait ? { gate } : {}) };
  const records: BenchRecord[] = [
    ...(ref === null ? [] : await measureCReference(ref.runC, args.sizes, opts)),
    ...(await measureOurs(args.sizes, opts)),
    ...(await measurePostMessage(args.sizes, opts)),
  ];
  const seconds = (performance.now() - t0) / 1000;
  if (tty) process.stderr.write("\r\x1b[K");

  console.log(`${cpus()[0]?.model ?? "?"}, ${cpus().length} CPUs, Bun ${Bun.version}; ${args.runs} runs each, median [min–max]; took ${seconds.toFixed(1)} s`);
  if (ref === null) console.log(`no C reference, so no "vs C" column: ${noC}`);
  if (!args.wait) {
    // The 1-minute load average before we started (we add about 1 ourselves while running).
    if (loadBefore > 0.5) console.log(`warning: load average was ${loadBefore.toFixed(2)} before the run: other processes compete for the CPUs, two-thread figures suffer most`);
  } else if (gate.busyStarts > 0) {
    console.log(`warning: ${gate.busyStarts} two-thread runs started with other processes busy (waited 5 s each): those figures are pessimistic`);
  }
  console.log(formatTable(records));
  const goals = formatGoals(records);
  if (goals !== "") console.log(`\nGoals (issue 13):\n${goals}`);
  if (args.json !== null) {
    const rows = jsonRows(records);
    const doc = { machine: `${cpus()[0]?.model ?? "?"}, ${cpus().length} CPUs`, bun: Bun.version, runs: args.runs, rows, records };
    await Bun.write(args.json, `${JSON.stringify(doc, null, 2)}\n`);
    console.log(`wrote ${rows.length} rows (ours beside C) and ${records.length} raw figures to ${args.json}`);
  }
}

await main();
process.exit(0);
