/**
 * Wall time and CPU time per frame from one mitata measure: the CPU figure is the process's
 * user + system time (every thread: main, workers, JIT and GC) over every call measure made,
 * warm-up included, divided by the frames those calls moved. Beside the wall time it shows
 * what a path costs the machine: a spinning or multi-threaded path can be fast and expensive.
 */
import { measure } from "mitata";

export interface PerFrame {
  /** Median wall-clock ns per frame over mitata's samples. */
  ns: number;
  /** Process CPU ns per frame over all calls. */
  cpu: number;
}

/** Process CPU time so far, ns (all threads). */
export function cpuNow(): number {
  const c = process.cpuUsage();
  return (c.user + c.system) * 1e3;
}

/** Measure `fn`, which moves `frames` frames per call, for about `minCpuNs` of mitata's time. */
export async function perFrame(fn: () => unknown, frames: number, minCpuNs: number): Promise<PerFrame> {
  let calls = 0;
  const counted = () => {
    calls++;
    return fn();
  };
  const c0 = cpuNow();
  const stats = await measure(counted, { min_cpu_time: minCpuNs });
  const cpu = cpuNow() - c0;
  return { ns: stats.p50 / frames, cpu: cpu / (calls * frames) };
}
