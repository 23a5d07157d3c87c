/**
 * `bun-xen-net bench`: throughput of this host's device path, a Netfront against a Netback in
 * this process (on Xen, a vif of this domain to itself), for each frame size both ways.
 * Each figure is one mitata measure of a batch of frames sent from one end until the other
 * has received all of them (as bench/device-pair.ts does for `bun run bench`).
 */
import { measure } from "mitata";
import { Flow } from "./flow.ts";
import type { Capture, CaptureStats } from "../main/index.ts";
import { cliLogger, hostKind, selfPair } from "./host.ts";
import { formatTable } from "./table.ts";
import { intListOption, parse, secondsOption, UsageError } from "./usage.ts";

export const BENCH_HELP = `usage: bun-xen-net bench [--duration S] [--sizes 64,1514] [--capture FILE] [--json]

Frames per second, ns per frame and MB/s of a Netfront against a Netback in this process,
each way (front->back: the Netfront sends; back->front: the Netback sends), for each size.
Without Xen: on the simulated hypervisor. On Xen (/dev/xen/evtchn present): on a vif this
domain creates to itself (front and back both here), destroyed afterwards.

  --duration S   CPU time mitata spends on each figure, in seconds (default 1)
  --sizes LIST   frame sizes in bytes, 60..1514 (default 64,1514)
  --capture FILE capture the front end's frames, both ways, to a pcap file while measuring
                 (the figures then include what capturing costs; frames the file could not
                 keep up with are left out of it and counted as dropped)
  --json         one JSON document instead of the table
  -h, --help     this text`;

/** A batch that has not arrived by then never will: the bench fails instead of hanging. */
const BATCH_TIMEOUT_MS = 10_000;

/** Frames per measured batch: enough that a batch takes milliseconds, few enough for many samples. */
const BATCH = 2000;

export interface BenchRow {
  direction: "front->back" | "back->front";
  size: number;
  framesPerSec: number;
  nsPerFrame: number;
  mbPerSec: number;
  samples: number;
}

export async function benchCommand(argv: string[]): Promise<number> {
  const o = parse("bench", argv, { duration: { type: "string" }, sizes: { type: "string" }, capture: { type: "string" }, json: { type: "boolean" } });
  if (o.help) {
    console.log(BENCH_HELP);
    return 0;
  }
  const seconds = secondsOption("bench", "duration", o.duration as string | undefined, 1, 600);
  const sizes = intListOption("bench", "sizes", o.sizes as string | undefined, [64, 1514], 60, 1514);
  const capturePath = o.capture as string | undefined;
  if (capturePath === "") throw new UsageError("bench: --capture needs a file name");
  const kind = hostKind();
  const pair = await selfPair(kind, cliLogger());
  const rows: BenchRow[] = [];
  let cap: Capture | null = null;
  let captured: CaptureStats | null = null;
  try {
    if (capturePath !== undefined) cap = await pair.front.capture(capturePath);
    for (const size of sizes) {
      for (const [direction, from, to] of [
        ["front->back", pair.front, pair.back],
        ["back->front", pair.back, pair.front],
      ] as const) {
        const flow = new Flow(from, to, size, BATCH_TIMEOUT_MS);
        await flow.batch(BATCH); // warm up the path before anything is timed
        const stats = await measure(() => flow.batch(BATCH), { min_cpu_time: seconds * 1e9 });
        flow.close();
        const ns = stats.p50 / BATCH;
        rows.push({ direction, size, framesPerSec: 1e9 / ns, nsPerFrame: ns, mbPerSec: (size * 1e9) / ns / 1e6, samples: stats.samples.length });
      }
    }
    if (cap !== null) captured = await cap.stop();
  } finally {
    await cap?.stop().catch(() => {});
    await pair.close();
  }
  if (o.json) {
    console.log(JSON.stringify({ host: kind, where: pair.where, bun: Bun.version, durationSec: seconds, batch: BATCH, rows, ...(captured !== null ? { capture: { file: capturePath, ...captured } } : {}) }, null, 2));
  } else {
    console.log(`${pair.where}; Bun ${Bun.version}; median of ${BATCH}-frame batches, ${seconds} s of CPU time per figure`);
    console.log(
      formatTable(
        ["DIRECTION", "SIZE", "FRAMES/S", "NS/FRAME", "MB/S"],
        rows.map((r) => [r.direction, String(r.size), Math.round(r.framesPerSec).toLocaleString("en-US"), r.nsPerFrame.toFixed(0), r.mbPerSec.toFixed(1)]),
      ),
    );
    if (captured !== null) console.log(`captured ${captured.frames} frames to ${capturePath} while measuring (${captured.dropped} dropped: the file did not keep up)`);
  }
  return 0;
}
