/**
 * The receiving end of the postMessage baseline (bench/postmessage-baseline.ts): counts the
 * frames the main thread posts, checks each one's length and sequence stamp, and acknowledges
 * in batches so the sender can keep a bounded window in flight — what a naive frame queue
 * between threads would do instead of our shared-memory rings.
 */
import type { ToSender, ToWorker } from "./postmessage-baseline.ts";

declare const self: Worker;

let size = 0;
let ackEvery = 1;
let received = 0;
let failure: string | null = null;

self.onmessage = (e: MessageEvent<Uint8Array | ToWorker>) => {
  const m = e.data;
  if (m instanceof Uint8Array) {
    // The per-frame path: read the frame (length and stamp), so receiving means something.
    if (failure === null) {
      const seq = m.length >= 4 ? (m[0]! | (m[1]! << 8) | (m[2]! << 16) | (m[3]! << 24)) >>> 0 : -1;
      if (m.length !== size || seq !== received >>> 0) failure = `frame ${received}: length ${m.length}, stamp ${seq}`;
    }
    received++;
    if (received % ackEvery === 0) self.postMessage({ type: "ack", received, failure } satisfies ToSender);
    return;
  }
  switch (m.type) {
    case "start":
      size = m.size;
      ackEvery = m.ackEvery;
      received = 0;
      failure = null;
      self.postMessage({ type: "ack", received, failure } satisfies ToSender);
      return;
    case "flush":
      self.postMessage({ type: "ack", received, failure } satisfies ToSender);
      return;
  }
};
