/**
 * One one-thread ring loop (bench/ring-loop.ts or bench/rx-ring-loop.ts) in a worker of its
 * own, measured on request with mitata. Each (direction, size) gets its own worker, so its
 * JIT profile is its own, as each C figure comes from a process of its own: sharing one
 * thread, the loops for every size and direction (and the device benchmark's code) made the
 * same functions polymorphic and the figures bimodal (60 or 100 ns at 64 bytes from run to run).
 */
import { perFrame } from "./per-frame.ts";
import { TxRingLoop } from "./ring-loop.ts";
import { RxRingLoop } from "./rx-ring-loop.ts";

export interface SingleInit {
  dir: "tx" | "rx";
  size: number;
  /** Frames per step. */
  frames: number;
  /** mitata's CPU time per measure, ns. */
  measureNs: number;
}

/** Main thread → worker: measure once (ns and CPU ns per frame come back), or close. */
export type SingleRequest = "measure" | "close";
export type SingleReply = { ns: number; cpu: number } | { error: string } | "ready" | "closed";

declare const self: Worker;

self.onmessage = (e: MessageEvent<SingleInit>) => {
  const { dir, size, frames, measureNs } = e.data;
  const loop = dir === "tx" ? new TxRingLoop(size) : new RxRingLoop(size);
  self.onmessage = async (m: MessageEvent<SingleRequest>) => {
    try {
      if (m.data === "close") {
        loop.close();
        self.postMessage("closed" satisfies SingleReply);
        return;
      }
      const r = await perFrame(() => loop.step(frames), frames, measureNs);
      self.postMessage({ ns: r.ns, cpu: r.cpu } satisfies SingleReply);
    } catch (err) {
      self.postMessage({ error: String((err as Error)?.stack ?? err) } satisfies SingleReply);
    }
  };
  self.postMessage("ready" satisfies SingleReply);
};
