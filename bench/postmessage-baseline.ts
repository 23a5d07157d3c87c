/**
 * The naive alternative to our shared-memory queues: pass each frame (a Uint8Array) from the
 * main thread to a Bun Worker with postMessage, the worker acknowledging in batches. The
 * sender keeps at most WINDOW frames unacknowledged — the same bound a 256-slot ring puts on
 * frames in flight — so the figure is a sustained rate, not how fast a message queue grows.
 *
 * Each frame is stamped with its sequence number and posted by structured clone (one copy per
 * frame, like the ring's copy into a slot page), and the worker reads its length and stamp.
 *
 *   const r = await postMessageRate(1514, 200_000);   // { frames_per_s, ns_per_frame, cpu_ns_per_frame }
 *
 * or, for mitata, keep one channel open and time batches:
 *
 *   const ch = await openPostMessageChannel(1514);
 *   bench("postMessage 1514B ×2000", () => ch.send(2000));
 *   ...
 *   await ch.close();
 */

/** Frames in flight at most (as on a 256-slot ring). */
export const WINDOW = 256;
/** The worker acknowledges every ACK_EVERY frames (and on flush). */
export const ACK_EVERY = 64;

/** Main thread → worker control messages (frames themselves go as bare Uint8Arrays). */
export type ToWorker = { type: "start"; size: number; ackEvery: number } | { type: "flush" };
/** Worker → main thread. */
export type ToSender = { type: "ack"; received: number; failure: string | null };

export interface PostMessageChannel {
  /** Post `frames` frames and resolve when the worker has acknowledged all of them. */
  send(frames: number): Promise<void>;
  /** Frames the worker has acknowledged so far. */
  readonly acked: number;
  close(): Promise<void>;
}

export interface ChannelOptions {
  /** Frames in flight at most (default WINDOW). 1 with ackEvery 1 gives a ping-pong. */
  window?: number;
  /** The worker acknowledges every this many frames (default ACK_EVERY). */
  ackEvery?: number;
}

export async function openPostMessageChannel(size: number, opts: ChannelOptions = {}): Promise<PostMessageChannel> {
  if (!Number.isInteger(size) || size < 4) throw new RangeError(`frame size ${size}: need an integer ≥ 4 (the stamp)`);
  const window = opts.window ?? WINDOW;
  const ackEvery = opts.ackEvery ?? ACK_EVERY;
  if (!(window >= 1 && ackEvery >= 1 && ackEvery <= window)) throw new RangeError(`need 1 ≤ ackEvery (${ackEvery}) ≤ window (${window})`);
  const worker = new Worker(new URL("./postmessage-worker.ts", import.meta.url).href);
  const frame = new Uint8Array(size).map((_, i) => i * 7);
  const view = new DataView(frame.buffer);
  let posted = 0;
  let acked = 0;
  let failure: string | null = null;
  // Whoever waits for the next acknowledgement: the window or the end of a batch.
  let waiter: (() => void) | null = null;
  let crashed: Error | null = null;

  worker.onmessage = (e: MessageEvent<ToSender>) => {
    acked = e.data.received;
    failure ??= e.data.failure;
    const w = waiter;
    waiter = null;
    w?.();
  };
  worker.onerror = (e) => {
    crashed = new Error(`postMessage baseline worker failed: ${e.message}`);
    const w = waiter;
    waiter = null;
    w?.();
  };
  const nextAck = () => new Promise<void>((resolve) => (waiter = resolve));
  const check = () => {
    if (crashed !== null) throw crashed;
    if (failure !== null) throw new Error(`postMessage baseline: the worker saw a wrong frame: ${failure}`);
  };

  const started = nextAck();
  worker.postMessage({ type: "start", size, ackEvery } satisfies ToWorker);
  await started;
  check();

  return {
    get acked() {
      return acked;
    },
    async send(frames: number): Promise<void> {
      const target = posted + frames;
      while (posted < target) {
        while (posted < target && posted - acked < window) {
          view.setUint32(0, posted >>> 0, true);
          worker.postMessage(frame); // structured clone: the frame is copied
          posted++;
        }
        if (posted < target) {
          await nextAck();
          check();
        }
      }
      // The tail of a batch may not fill an ACK_EVERY group: ask for the count.
      while (acked < target) {
        const a = nextAck();
        worker.postMessage({ type: "flush" } satisfies ToWorker);
        await a;
        check();
      }
    },
    async close(): Promise<void> {
      await worker.terminate();
    },
  };
}

export interface RateResult {
  size: number;
  frames: number;
  frames_per_s: number;
  ns_per_frame: number;
  /** Process CPU time per frame (both threads). */
  cpu_ns_per_frame: number;
}

/** Frames per second from the main thread to a worker by postMessage (after a warm-up). */
export async function postMessageRate(size: number, frames: number, opts: ChannelOptions = {}): Promise<RateResult> {
  const ch = await openPostMessageChannel(size, opts);
  try {
    await ch.send(Math.min(frames, 20_000)); // warm-up: JIT, worker start, allocator
    const c0 = process.cpuUsage();
    const t0 = Bun.nanoseconds();
    await ch.send(frames);
    const ns = (Bun.nanoseconds() - t0) / frames;
    const c = process.cpuUsage(c0);
    return { size, frames, frames_per_s: 1e9 / ns, ns_per_frame: ns, cpu_ns_per_frame: ((c.user + c.system) * 1e3) / frames };
  } finally {
    await ch.close();
  }
}
