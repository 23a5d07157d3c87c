/**
 * What Netfront and Netback share once connected: the send path (a queue to the worker that
 * owns the outgoing ring), the receive path (a queue from the worker that owns the incoming
 * ring), listeners and async iteration, counters, and the order of a clean shutdown. The two
 * ends differ only in how they connect and which wire flags their directions use.
 */
import type { Logger } from "pino";
import { ETH_HLEN } from "../protocol/netif.ts";
import { Counter } from "../workers/control.ts";
import { NetError } from "./errors.ts";
import { FrameReader } from "./frame-reader.ts";
import { FrameWriter } from "./frame-writer.ts";
import type { RoleHandle } from "./role-handle.ts";
import { FrameQueue, type FrameQueueState } from "../workers/frame-queue.ts";
import { describeThrown } from "./thrown.ts";

/** Checksum state of a frame, as the netif flags carry it. */
export interface FrameInfo {
  /** The checksum is blank (partial): the receiver must complete it. */
  csumBlank: boolean;
  /** The checksum has been validated already. */
  dataValidated: boolean;
  /** What the peer's GSO extra-info slot said: a TCP segment offload (type 1 v4, 2 v6) and its MSS. */
  gso: { type: number; size: number } | null;
}

export type WriteOptions = Partial<Pick<FrameInfo, "csumBlank" | "dataValidated">>;

export interface NetStats {
  rxPackets: number;
  rxBytes: number;
  /** Received frames dropped: malformed from the peer, or reported dropped by it. */
  rxDrops: number;
  /** Protocol errors the peer made on the receive ring. */
  rxErrors: number;
  txPackets: number;
  txBytes: number;
  /** Frames sent that did not arrive: refused by the peer, or lost (txLost). */
  txDrops: number;
  txErrors: number;
  /** Times the sending / receiving worker ran out of work and blocked (see spinMicros). */
  txSleeps: number;
  rxSleeps: number;
  /**
   * Frames whose write resolved but which never reached the peer: in flight when a session
   * ended, or still queued when the device closed. Included in txDrops.
   */
  txLost: number;
  /** Frames received that nobody read before the device closed. Included in rxDrops. */
  rxLost: number;
  /** Exceptions thrown by listeners (each frame still counts as delivered). */
  listenerErrors: number;
}

/** How a direction's wire flags encode FrameInfo (TX and RX use different bits). */
export interface FlagCodec {
  encode(o: WriteOptions | undefined): number;
  /** From the meta word a worker queued with the frame (flags and GSO). */
  decode(meta: number): FrameInfo;
}

export type FrameListener = (frame: Uint8Array, info: FrameInfo) => void;

/**
 * The queues a device's data path uses for its whole life, and how it learns that a worker
 * touched them: `attach` hands the pool's doorbell the writer's and the reader's handlers.
 */
export interface DataPath {
  sendQueue: FrameQueueState;
  recvQueue: FrameQueueState;
  attach(onSendBell: () => void, onRecvBell: () => void): void;
  /** The device is closed for good: the bells go. */
  detach(): void;
}

/** Frames an async iterator may buffer before receiving pauses until it catches up. */
const ITERATOR_HIGH_WATER = 4096;

export abstract class NetDevice {
  private readonly writer: FrameWriter;
  private readonly reader: FrameReader;
  private readonly listeners = new Set<FrameListener>();
  /** The listeners as an array, for the per-frame loop (iterating a Set allocates). */
  private listenerList: FrameListener[] = [];
  /** The frame tryWrite is queueing, for `fillPending` (no closure per frame). */
  private pending: Uint8Array | null = null;
  private readonly fillPending = (dst: Uint8Array, off: number): void => {
    dst.set(this.pending!, off);
  };
  private readonly iterators = new Set<FrameBuffer>();
  private baseline: NetStats = zeroStats();
  /** Set once the device can no longer send or receive. */
  protected closedError: NetError | null = null;
  /** Counted here, not by a worker: frames lost at close, listener exceptions. */
  private txLostAtClose = 0;
  private rxLostAtClose = 0;
  private listenerErrorCount = 0;
  /** The device is closing for good: deliver what is queued to whoever listens, count the rest. */
  private receiveForClose = false;

  constructor(
    /** The ring we send on (replaced when the device reconnects). */
    protected sender: RoleHandle,
    /** The ring we receive from (replaced when the device reconnects). */
    protected receiver: RoleHandle,
    private readonly sendFlags: FlagCodec,
    private readonly recvFlags: FlagCodec,
    protected readonly log: Logger,
    private readonly path: DataPath,
  ) {
    // The main thread's ends of the queues live as long as the device: they carry the
    // producer's and consumer's own positions across sessions.
    this.writer = new FrameWriter(new FrameQueue(path.sendQueue), {
      minFrame: ETH_HLEN,
      maxFrame: () => this.maxFrameSize,
      wake: () => this.sender.kick(),
      closed: () => this.closedError,
    });
    this.reader = new FrameReader(new FrameQueue(path.recvQueue), (frame, meta) => this.deliver(frame, meta), () => this.receiver.kick());
    path.attach(this.writer.onBell, this.reader.onBell);
  }

  /** Largest frame we may send now, Ethernet header included (it follows the current session). */
  abstract get maxFrameSize(): number;

  /** Send one frame (copied before the promise settles; the buffer may be reused at once). */
  write(frame: Uint8Array, opts?: WriteOptions): Promise<void> {
    if (!(frame instanceof Uint8Array)) return Promise.reject(new NetError("BAD_ARGUMENT", "write takes a Uint8Array"));
    return this.writer.write(frame.byteLength, this.sendFlags.encode(opts), (dst, off) => dst.set(frame, off));
  }

  /**
   * Send one frame now if the send queue has room, without a promise; false when it is full
   * (nothing was queued: wait for `writable()` and offer it again). Throws what write() rejects with.
   */
  tryWrite(frame: Uint8Array, opts?: WriteOptions): boolean {
    if (!(frame instanceof Uint8Array)) throw new NetError("BAD_ARGUMENT", "tryWrite takes a Uint8Array");
    this.pending = frame;
    try {
      return this.writer.offer(frame.byteLength, this.sendFlags.encode(opts), this.fillPending);
    } finally {
      this.pending = null;
    }
  }

  /** Resolves when a frame of `len` bytes (default: the largest) would be queued at once. */
  writable(len = this.maxFrameSize): Promise<void> {
    return this.writer.writable(len);
  }

  /** Send one frame gathered from several buffers. */
  writev(parts: readonly Uint8Array[], opts?: WriteOptions): Promise<void> {
    if (!Array.isArray(parts) || parts.some((p) => !(p instanceof Uint8Array))) {
      return Promise.reject(new NetError("BAD_ARGUMENT", "writev takes an array of Uint8Array"));
    }
    const len = parts.reduce((n, p) => n + p.byteLength, 0);
    return this.writer.write(len, this.sendFlags.encode(opts), (dst, off) => {
      for (const p of parts) {
        dst.set(p, off);
        off += p.byteLength;
      }
    });
  }

  /**
   * Send a frame of exactly `len` bytes written in place by `fill`, which gets a zeroed view
   * valid only during the call (straight into the send queue, or a copy when it is full) and
   * runs before writeWith returns.
   */
  writeWith(len: number, fill: (buf: Uint8Array) => void, opts?: WriteOptions): Promise<void> {
    if (typeof fill !== "function") return Promise.reject(new NetError("BAD_ARGUMENT", "writeWith takes a fill callback"));
    return this.writer.write(len, this.sendFlags.encode(opts), (dst, off) => {
      const view = dst.subarray(off, off + len);
      view.fill(0);
      fill(view);
    });
  }

  /**
   * Call `cb` for every received frame. The frame is a view valid only during the call: copy
   * what you keep. The info is frozen and may be the same object for many frames (it never
   * changes, so it may be kept). Returns a function that removes the listener.
   */
  listen(cb: FrameListener): () => void {
    if (typeof cb !== "function") throw new NetError("BAD_ARGUMENT", "listen takes a callback");
    this.listeners.add(cb);
    this.listenerList = [...this.listeners];
    this.reader.start();
    return () => {
      this.listeners.delete(cb);
      this.listenerList = [...this.listeners];
      this.pauseIfUnheard();
    };
  }

  /** Received frames, each a copy the caller owns. Ends when the device disconnects. */
  frames(): AsyncIterableIterator<Uint8Array> {
    const buf = new FrameBuffer(
      () => this.reader.start(),
      () => {
        this.iterators.delete(buf);
        this.pauseIfUnheard();
      },
    );
    this.iterators.add(buf);
    if (this.closedError !== null) buf.end();
    this.reader.start();
    return buf;
  }

  [Symbol.asyncIterator](): AsyncIterableIterator<Uint8Array> {
    return this.frames();
  }

  /** With nobody listening, frames stay queued (and the peer waits) instead of being dropped. */
  private pauseIfUnheard(): void {
    if (this.listeners.size === 0 && this.iterators.size === 0 && !this.receiveForClose) this.reader.pause();
  }

  /**
   * Report a listener's exception: counted always; logged the first time at once, then at
   * most one line a second saying how many were not logged. A listener that throws on every
   * frame (one that writes after a disconnect, say) must not turn into a log line per frame.
   * Whatever was thrown is described without running its code, and a logger that throws is
   * ignored: receiving must go on.
   */
  private listenerThrew(e: unknown): void {
    this.listenerErrorCount++;
    const now = performance.now();
    if (now - this.listenerErrorLoggedAt < 1000) {
      this.listenerErrorsUnlogged++;
      return;
    }
    this.listenerErrorLoggedAt = now;
    const notLogged = this.listenerErrorsUnlogged;
    this.listenerErrorsUnlogged = 0;
    try {
      this.log.error({ thrown: describeThrown(e), notLogged }, "a frame listener threw; the frame still counts as delivered");
    } catch {
      // The logger itself failed: the count above still says it happened.
    }
  }
  private listenerErrorLoggedAt = -Infinity;
  /** Listener exceptions since the last one logged. */
  private listenerErrorsUnlogged = 0;

  private deliver(frame: Uint8Array, meta: number): void {
    const info = this.recvFlags.decode(meta);
    const listeners = this.listenerList;
    for (let i = 0; i < listeners.length; i++) {
      const l = listeners[i]!;
      try {
        l(frame, info);
      } catch (e) {
        this.listenerThrew(e);
      }
    }
    if (this.iterators.size === 0) {
      // Closing with nobody to hand it to: the frame is lost, and counted.
      if (listeners.length === 0 && this.receiveForClose) this.rxLostAtClose++;
      return;
    }
    let full = false;
    for (const it of this.iterators) full = it.push(frame.slice()) || full;
    // Without a listener, an iterator that is behind holds receiving back, rather than buffering without bound.
    if (full && this.listeners.size === 0 && !this.receiveForClose) this.reader.pause();
  }

  stats(): NetStats {
    const now = this.rawStats();
    const b = this.baseline;
    return {
      rxPackets: now.rxPackets - b.rxPackets,
      rxBytes: now.rxBytes - b.rxBytes,
      rxDrops: now.rxDrops - b.rxDrops,
      rxErrors: now.rxErrors - b.rxErrors,
      txPackets: now.txPackets - b.txPackets,
      txBytes: now.txBytes - b.txBytes,
      txDrops: now.txDrops - b.txDrops,
      txErrors: now.txErrors - b.txErrors,
      txSleeps: now.txSleeps - b.txSleeps,
      rxSleeps: now.rxSleeps - b.rxSleeps,
      txLost: now.txLost - b.txLost,
      rxLost: now.rxLost - b.rxLost,
      listenerErrors: now.listenerErrors - b.listenerErrors,
    };
  }

  /** Counters restart from zero (the workers' own counters keep running; we subtract). */
  resetStats(): void {
    this.baseline = this.rawStats();
  }

  private rawStats(): NetStats {
    const s = this.sender.control;
    const r = this.receiver.control;
    return {
      rxPackets: r.get(Counter.packets),
      rxBytes: r.get(Counter.bytes),
      rxDrops: r.get(Counter.drops) + this.rxLostAtClose,
      rxErrors: r.get(Counter.errors),
      txPackets: s.get(Counter.packets),
      txBytes: s.get(Counter.bytes),
      txDrops: s.get(Counter.drops) + this.txLostAtClose,
      txErrors: s.get(Counter.errors),
      txSleeps: s.get(Counter.sleeps),
      rxSleeps: r.get(Counter.sleeps),
      txLost: s.get(Counter.lost) + this.txLostAtClose,
      rxLost: this.rxLostAtClose,
      listenerErrors: this.listenerErrorCount,
    };
  }

  /** Whether the device still moves frames. */
  get connected(): boolean {
    return this.closedError === null;
  }

  /** Frames written whose fate is not yet final (queued, or in flight to the peer). */
  protected unsettled(): number {
    return (this.writer.committed - this.sender.control.settled) >>> 0;
  }

  /**
   * Wait until every frame written has settled (the peer answered it, or it was given up),
   * for at most `ms`; returns how many had not. It stops early when the worker fails or the
   * peer is no longer connected: nothing more would leave then.
   */
  protected async flush(ms: number): Promise<number> {
    const deadline = performance.now() + ms;
    const s = this.sender;
    for (;;) {
      const left = this.unsettled();
      if (left === 0 || s.control.failure !== null || !s.control.peerConnected || performance.now() >= deadline) return left;
      s.kick();
      await Bun.sleep(1);
    }
  }

  /** Stop both workers, taking in what the peer left on the rings first; the queues keep what they hold. */
  protected async stopWorkers(timeoutMs: number): Promise<void> {
    const opts = { drainMs: Math.min(timeoutMs, DRAIN_MS), timeoutMs };
    const failures = await Promise.all([this.sender.stop(opts), this.receiver.stop(opts)]);
    for (const f of failures) if (f !== null) this.log.warn({ failure: f }, "ring worker stopped with an error");
  }

  /** New workers on the same queues and counters (a reconnected device). */
  protected replaceWorkers(sender: RoleHandle, receiver: RoleHandle): void {
    this.sender = sender;
    this.receiver = receiver;
  }

  /**
   * The device is closing for good: from now on, received frames go to whoever listens and
   * are counted as lost when nobody does, so a worker taking the last frames off the ring is
   * never held back by a full queue.
   */
  protected startClosingReceive(): void {
    this.receiveForClose = true;
    this.reader.start();
  }

  /**
   * Stop the reader after the workers stopped: deliver what was received before the stop,
   * end the iterators, count and report what nobody read and what was written but never
   * settled (`lostInFlight`: the last session's frames in flight, already counted). Idempotent.
   */
  protected async stopDataPath(reason: NetError, lostInFlight = 0): Promise<void> {
    this.closedError ??= reason;
    this.receiveForClose = true;
    this.reader.drainAll();
    this.reader.stop();
    this.writer.closed();
    this.path.detach();
    for (const it of this.iterators) it.end();
    const unsent = this.unsettled();
    if (unsent > 0) {
      this.txLostAtClose += unsent;
      this.writer.committed = this.sender.control.settled;
    }
    if (unsent + lostInFlight > 0) {
      this.log.warn({ frames: unsent + lostInFlight, queued: unsent, inFlight: lostInFlight }, "frames written were not delivered: the peer did not take them before the device closed");
    }
    const unread = this.rxLostAtClose - this.rxLostReported;
    if (unread > 0) {
      this.rxLostReported = this.rxLostAtClose;
      this.log.warn({ frames: unread }, "frames received were dropped at close: nobody read them");
    }
  }
  private rxLostReported = 0;
}

/** How long a stopping worker may take to read what the peer left on its ring. */
const DRAIN_MS = 250;

function zeroStats(): NetStats {
  return { rxPackets: 0, rxBytes: 0, rxDrops: 0, rxErrors: 0, txPackets: 0, txBytes: 0, txDrops: 0, txErrors: 0, txSleeps: 0, rxSleeps: 0, txLost: 0, rxLost: 0, listenerErrors: 0 };
}

/** An async iterator's own buffer of received frames. */
class FrameBuffer implements AsyncIterableIterator<Uint8Array> {
  private readonly frames: Uint8Array[] = [];
  private head = 0;
  private waiter: ((r: IteratorResult<Uint8Array>) => void) | null = null;
  private ended = false;

  constructor(
    private readonly resume: () => void,
    private readonly detach: () => void,
  ) {}

  /** Queue a frame; true when the buffer is past its high-water mark. */
  push(frame: Uint8Array): boolean {
    if (this.ended) return false;
    if (this.waiter !== null) {
      const w = this.waiter;
      this.waiter = null;
      w({ value: frame, done: false });
      return false;
    }
    this.frames.push(frame);
    return this.frames.length - this.head >= ITERATOR_HIGH_WATER;
  }

  end(): void {
    this.ended = true;
    if (this.waiter !== null) {
      const w = this.waiter;
      this.waiter = null;
      w({ value: undefined, done: true });
    }
  }

  next(): Promise<IteratorResult<Uint8Array>> {
    if (this.head < this.frames.length) {
      const value = this.frames[this.head++]!;
      if (this.head > 1024 && this.head * 2 > this.frames.length) {
        this.frames.splice(0, this.head);
        this.head = 0;
      }
      if (this.frames.length - this.head < ITERATOR_HIGH_WATER / 2) this.resume();
      return Promise.resolve({ value, done: false });
    }
    if (this.ended) return Promise.resolve({ value: undefined, done: true });
    this.resume();
    return new Promise((r) => (this.waiter = r));
  }

  return(): Promise<IteratorResult<Uint8Array>> {
    this.end();
    this.detach();
    return Promise.resolve({ value: undefined, done: true });
  }

  [Symbol.asyncIterator](): AsyncIterableIterator<Uint8Array> {
    return this;
  }
}
