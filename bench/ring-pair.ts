/**
 * Two-worker ring throughput: the counterpart of the C reference's threads mode. One worker
 * runs our front role, the other our back role (front-tx → back-tx, or back-rx → front-rx),
 * over one 256-slot ring, 256 pre-shared pages and split event channels on the simulated
 * hypervisor, with the ring workers' own loop (poll, spin, arm the event index, block). The
 * application's part (queueing frames to send, reading received ones) runs inside each worker
 * (bench/ring-pair-worker.ts), so the figure is the ring path across two threads, as C's is.
 * The whole device, main threads included, is measured separately (bench/device-pair.ts).
 */
import { SimHypervisor } from "../src/platform/sim/index.ts";
import { createControlState, Control, Counter } from "../src/workers/control.ts";
import { createFrameQueueState } from "../src/workers/frame-queue.ts";
import type { RingWorkerInit } from "../src/workers/role.ts";
import { PAIR, type PairWorkerInit } from "./ring-pair-worker.ts";

const QUEUE_BYTES = 4 << 20; // the devices' default

export interface RingPair {
  /** Move `frames` frames; wall time and CPU time (all threads) per frame, in ns. */
  run(frames: number): Promise<{ ns_per_frame: number; cpu_ns_per_frame: number; sleeps_per_1k: number }>;
  close(): Promise<void>;
}

export async function ringPair(dir: "tx" | "rx", size: number): Promise<RingPair> {
  const hv = SimHypervisor.create({ pages: 2048 });
  const guest = hv.createDomain();
  const fe = hv.platform(guest);
  const be = hv.platform(0);
  const ring = fe.gnttab.share(0, 1, true);
  // TX pages are only read by the back end; RX pages are written into by it.
  const data = fe.gnttab.share(0, 256, dir === "rx");
  const fh = fe.openEventChannels();
  const fport = fh.allocUnbound(0);
  const bh = be.openEventChannels();
  const bport = bh.bindInterdomain(guest, fport);
  const mapped = be.gnttab.map(guest, ring.refs, true);
  const maxFrame = dir === "tx" ? 65535 : 65549;
  // As the C reference's threads mode: 50 µs of polling before a side blocks.
  const common = { maxFrame, spinMicros: 50 };
  const frontInit: RingWorkerInit = {
    ...common,
    role: dir === "tx" ? "front-tx" : "front-rx",
    platform: fe.descriptor,
    evtchn: fh.descriptor,
    port: fport,
    control: createControlState(),
    queue: createFrameQueueState(QUEUE_BYTES),
    ring: ring.descriptor,
    data: { pages: data.descriptor, refs: [...data.refs] },
    peer: 0,
  };
  const backInit: RingWorkerInit = {
    ...common,
    role: dir === "tx" ? "back-tx" : "back-rx",
    platform: be.descriptor,
    evtchn: bh.descriptor,
    port: bport,
    control: createControlState(),
    queue: createFrameQueueState(QUEUE_BYTES),
    ring: mapped.descriptor!,
    data: null,
    peer: guest,
  };
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
  const producer = dir === "tx" ? fh : bh;

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
      fh.kick();
      bh.kick();
      await Promise.all(stopped);
      for (const worker of workers) worker.terminate();
      be.gnttab.unmap(mapped);
      fe.gnttab.unshare(data);
      fe.gnttab.unshare(ring);
      fe.close();
      be.close();
      hv.assertNoLeaks([guest]);
      if (failures.length > 0) throw new Error(failures.join("; "));
    },
  };
}
