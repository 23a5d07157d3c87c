/**
 * Two-worker ring throughput: the counterpart of the C reference's threads mode. One worker
 * runs our front role, the other our back role (front-tx → back-tx, or back-rx → front-rx),
 * over one 256-slot ring, 256 pre-shared pages and split event channels on the simulated
 * hypervisor, with the ring workers' own loop (poll, spin, arm the event index, block). The
 * application's part (queueing frames to send, reading received ones) runs inside each worker
 * (bench/ring-pair-worker.ts), so the figure is the ring path across two threads, as C's is.
 * The whole device, main threads included, is measured separately (bench/device-pair.ts).
 */
import { Control, Counter } from "../src/workers/control.ts";
import type { RingWorkerInit } from "../src/workers/role.ts";
import { PAIR, type PairWorkerInit } from "./ring-pair-worker.ts";
import { roleInits, simLink } from "./sim-link.ts";

export interface RingPair {
  /** Move `frames` frames; wall time and CPU time (all threads) per frame, in ns. */
  run(frames: number): Promise<{ ns_per_frame: number; cpu_ns_per_frame: number; sleeps_per_1k: number }>;
  close(): Promise<void>;
}

export async function ringPair(dir: "tx" | "rx", size: number): Promise<RingPair> {
  const link = simLink(dir === "rx", 2048);
  // As the C reference's threads mode: 50 µs of polling before a side blocks.
  const { front: frontInit, back: backInit } = roleInits(link, dir, 50);
  const ctls = [new Control(frontInit.control), new Control(backInit.control)];
  for (const c of ctls) c.setPeerConnected(true);
  const words = new SharedArrayBuffer(16);
  const w = new Int32Array(words);

  const failures: string[] = [];
  const start = async (init: RingWorkerInit): Promise<Worker> => {
    const worker = new Worker(new URL("./ring-pair-worker.ts", import.meta.url).href);
    const ready = new Promise<void>((resolve, reject) => {
      worker.onmessage = (e: MessageEvent<string>) => {
        if (e.data === "ready") resolve();
        else if (e.data.startsWith("failed")) {
          failures.push(`${init.role}: ${e.data}`);
          reject(new Error(`${init.role} ${e.data}`));
        }
      };
      worker.onerror = (e) => reject(new Error(`${init.role}: ${e.message}`));
    });
    worker.postMessage({ init, size, words } satisfies PairWorkerInit);
    await ready;
    return worker;
  };
  // The front end initialises the ring; the back end attaches to what it finds.
  const workers = [await start(frontInit), await start(backInit)];
  const producer = dir === "tx" ? link.front.h : link.back.h;

  return {
    async run(frames) {
      const target = Atomics.load(w, PAIR.target) + frames;
      const sleeps0 = ctls[0]!.get(Counter.sleeps) + ctls[1]!.get(Counter.sleeps);
      const cpu0 = process.cpuUsage();
      const t0 = performance.now();
      Atomics.store(w, PAIR.target, target);
      producer.kick();
      for (;;) {
        const got = Atomics.load(w, PAIR.received);
        if (got >= target) break;
        if (failures.length > 0) throw new Error(failures.join("; "));
        await Atomics.waitAsync(w, PAIR.received, got, 1000).value;
      }
      const ns = (performance.now() - t0) * 1e6;
      const cpu = process.cpuUsage(cpu0);
      const wrong = Atomics.load(w, PAIR.wrong);
      if (wrong !== 0) throw new Error(`ring pair ${dir} ${size} B: ${wrong} frames arrived wrong`);
      const sleeps = ctls[0]!.get(Counter.sleeps) + ctls[1]!.get(Counter.sleeps) - sleeps0;
      return { ns_per_frame: ns / frames, cpu_ns_per_frame: ((cpu.user + cpu.system) * 1e3) / frames, sleeps_per_1k: (sleeps * 1000) / frames };
    },
    async close() {
      const stopped = workers.map(
        (worker) => new Promise<void>((resolve) => worker.addEventListener("message", (e: MessageEvent<string>) => e.data !== "ready" && resolve())),
      );
      for (const c of ctls) c.requestStop();
      link.front.h.kick();
      link.back.h.kick();
      await Promise.all(stopped);
      for (const worker of workers) worker.terminate();
      link.close();
      if (failures.length > 0) throw new Error(failures.join("; "));
    },
  };
}
