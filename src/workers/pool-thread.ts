/**
 * A pool worker thread's entry point: one start message, then PoolWorker runs until told to
 * exit; with its command port closed, nothing is left and the thread ends by itself.
 */
import { PoolWorker, type PoolWorkerStart } from "./pool-worker.ts";

declare const self: Worker;

self.onmessage = (e: MessageEvent<PoolWorkerStart>) => {
  self.onmessage = null;
  new PoolWorker(e.data, (m) => self.postMessage(m)).run();
  e.data.port.close();
};
