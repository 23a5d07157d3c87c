/**
 * One side of the two-worker ring benchmark (bench/ring-pair.ts): our ring role, run by the
 * ring workers' own loop, with the main thread's part played in this worker: a producing role
 * (front-tx, back-rx) gets frames pushed into its queue here, as the application's write()
 * would; a consuming role (back-tx, front-rx) has its queue drained here, each frame's length
 * and sequence stamp checked. The main thread sets how many frames to send and waits, in
 * shared memory, for the receiving side to count them in.
 */
import { openPlatform } from "../src/platform/open.ts";
import { Control } from "../src/workers/control.ts";
import { FrameQueue } from "../src/workers/frame-queue.ts";
import { PeerNotifier, type RingRole, type RingWorkerInit } from "../src/workers/role.ts";
import { makeRole, runRole } from "../src/workers/role-loop.ts";

export interface PairWorkerInit {
  init: RingWorkerInit;
  size: number;
  /** Int32 words shared by both sides and the main thread (see PAIR). */
  words: SharedArrayBuffer;
}

/** Words of PairWorkerInit.words. */
export const PAIR = {
  /** Frames the producer may have sent in all (the main thread raises it per run). */
  target: 0,
  /** Frames the consumer has received and checked; notified when it reaches target. */
  received: 1,
  /** Frames that arrived with the wrong length or stamp. */
  wrong: 2,
} as const;

declare const self: Worker;

self.onmessage = (e: MessageEvent<PairWorkerInit>) => {
  self.onmessage = null;
  const { init, size, words } = e.data;
  const w = new Int32Array(words);
  const ctl = new Control(init.control);
  const platform = openPlatform(init.platform);
  const evtchn = platform.openEventChannels(init.evtchn);
  const q = new FrameQueue(init.queue);
  const inner = makeRole(init, q, ctl, new PeerNotifier(evtchn, init.port, ctl), platform.gnttab, (err) => {
    throw err;
  });
  const producer = init.role === "front-tx" || init.role === "back-rx";
  const role = producer ? source(inner, q, size, w) : sink(inner, q, size, w);
  self.postMessage("ready");
  try {
    runRole(role, ctl, evtchn, init.spinMicros);
    self.postMessage("stopped");
  } catch (err) {
    self.postMessage(`failed: ${String((err as Error)?.stack ?? err)}`);
  }
};

/** The application writing: frames stamped with their sequence number, queued while there is room. */
function source(inner: RingRole, q: FrameQueue, size: number, w: Int32Array): RingRole {
  const frame = new Uint8Array(size).map((_, i) => i * 7);
  const stamp = new DataView(frame.buffer);
  let sent = 0;
  const topUp = (): boolean => {
    const target = Atomics.load(w, PAIR.target);
    let pushed = false;
    while (sent < target) {
      stamp.setUint32(0, sent, true);
      if (!q.push(frame)) break;
      sent++;
      pushed = true;
    }
    return pushed;
  };
  return {
    poll: () => {
      const pushed = topUp();
      return inner.poll() || pushed;
    },
    prepareSleep: () => inner.prepareSleep() || (sent < Atomics.load(w, PAIR.target) && q.hasRoom(size)),
    woke: () => inner.woke(),
    drain: () => inner.drain(),
    get blocked() {
      return inner.blocked;
    },
    finish: () => inner.finish(),
  };
}

/** The application reading: every frame checked for its length and sequence number, then released. */
function sink(inner: RingRole, q: FrameQueue, size: number, w: Int32Array): RingRole {
  const dv = new DataView(q.data.buffer, q.data.byteOffset, q.data.byteLength);
  let received = 0;
  const drain = (): boolean => {
    let n = 0;
    for (let off = q.peek(); off >= 0; off = q.peek()) {
      if (q.recordLength(off) !== size || dv.getUint32(off, true) !== received) Atomics.add(w, PAIR.wrong, 1);
      q.release(off);
      received++;
      n++;
    }
    if (n > 0) {
      Atomics.store(w, PAIR.received, received);
      if (received >= Atomics.load(w, PAIR.target)) Atomics.notify(w, PAIR.received);
    }
    return n > 0;
  };
  return {
    poll: () => {
      const moved = inner.poll();
      return drain() || moved;
    },
    prepareSleep: () => inner.prepareSleep() || !q.isEmpty(),
    woke: () => inner.woke(),
    drain: () => inner.drain(),
    get blocked() {
      return inner.blocked;
    },
    finish: () => inner.finish(),
  };
}
