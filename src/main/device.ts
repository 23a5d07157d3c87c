/**
 * What Netfront and Netback share once connected: the send path (a queue to the worker that
 * owns each outgoing ring), the receive path (a queue from the worker that owns each incoming
 * ring), listeners and async iteration, counters, and the order of a clean shutdown. With
 * several queues (multi-queue), a frame goes out on the queue its flow hashes to, so one flow
 * stays in order; what arrives on every queue goes to the same listeners. The two ends differ
 * only in how they connect and which wire flags their directions use.
 */
import type { Logger } from "pino";
import { ETH_HLEN } from "../protocol/netif.ts";
import { queueFor } from "../protocol/flow-hash.ts";
import { Control, Counter, type ControlState } from "../workers/control.ts";
import { NetError } from "./errors.ts";
import { FrameReader, type ReceiveSink } from "./frame-reader.ts";
import type { BatchListener, FrameBatch } from "./frame-batch.ts";
import { ListenerSet } from "./listener-set.ts";
import { FrameWriter } from "./frame-writer.ts";
import type { RoleHandle } from "./role-handle.ts";
import { FrameQueue, type FrameQueueState } from "../workers/frame-queue.ts";
import { describeThrown } from "./thrown.ts";
import { startCapture, type Capture, type CaptureOptions, type CaptureSink, type CaptureTap } from "./capture.ts";
import { checkGso, makePartial, planGso, type CheckedGso, type GsoOption } from "./gso.ts";

/** Checksum state of a frame, as the netif flags carry it. */
export interface FrameInfo {
  /** The checksum is blank (partial): the receiver must complete it. */
  csumBlank: boolean;
  /** The checksum has been validated already. */
  dataValidated: boolean;
  /** What the peer's GSO extra-info slot said: a TCP segment offload (type 1 v4, 2 v6) and its MSS. */
  gso: { type: number; size: number } | null;
}

export type WriteOptions = Partial<Pick<FrameInfo, "csumBlank" | "dataValidated">> & {
  /** Give up the write while it waits for room (rejects with ABORTED; it is not sent). */
  signal?: AbortSignal;
  /**
   * A TCP frame larger than one segment (up to 65535 bytes, 65549 from a Netback): sent as one
   * GSO packet when the peer offered GSO of its type, else cut into `size`-byte segments here.
   * `info.gso` of a received frame may be passed as it is. See gso.ts.
   */
  gso?: GsoOption | { type: number; size: number } | null;
};

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

/** One queue pair of a device: its frame queues and the control blocks of their rings. */
export interface QueuePath {
  send: FrameQueueState;
  recv: FrameQueueState;
  sendControl: ControlState;
  recvControl: ControlState;
}

/**
 * The queues a device's data path uses for its whole life (as many pairs as it may ever
 * negotiate), and how it learns that a worker touched them: `attach` hands the pool's doorbell
 * the writer's and the reader's handlers of pair `i`.
 */
export interface DataPath {
  queues: QueuePath[];
  attach(i: number, onSendBell: () => void, onRecvBell: () => void): void;
  /** The device is closed for good: the bells go. */
  detach(): void;
}

/** Frames an async iterator may buffer before receiving pauses until it catches up. */
const ITERATOR_HIGH_WATER = 4096;

export abstract class NetDevice {
  private readonly writers: FrameWriter[] = [];
  /** The main thread's view of each receive queue, for the queue-depth gauge. */
  private readonly recvQueues: FrameQueue[] = [];
  private readonly readers: FrameReader[] = [];
  /** The rings' control blocks, per queue pair: counters outlive sessions. */
  private readonly txCtl: Control[];
  private readonly rxCtl: Control[];
  /** Scratch for writeWith with several queues: the frame is filled, then hashed, then queued. */
  private scratch = new Uint8Array(0);
  private readonly listeners = new ListenerSet<FrameListener>();
  /** Batch listeners (listenBatch). */
  private readonly batchListeners = new ListenerSet<BatchListener>();
  /** What the readers hand frames to: one object for every queue (no closure per frame). */
  private readonly receiveSink: ReceiveSink = {
    // One by one when anyone takes them so, and when nobody takes batches (frames lost at close are counted there).
    perFrame: () => this.listeners.size > 0 || this.iterators.size > 0 || this.tap !== null || this.batchListeners.size === 0,
    frame: (frame, meta) => this.deliver(frame, meta),
    batched: () => this.batchListeners.size > 0,
    batch: (b) => this.deliverBatch(b),
  };
  /** The frame tryWrite is queueing, for `fillPending` (no closure per frame). */
  private pending: Uint8Array | null = null;
  private readonly fillPending = (dst: Uint8Array, off: number): void => {
    dst.set(this.pending!, off);
  };
  /** The captures running on this device (capture.ts); null when none: then the data path's only cost. */
  private tap: CaptureTap | null = null;
  private readonly tapSlot = { get: () => this.tap, set: (t: CaptureTap | null) => void (this.tap = t), closed: () => this.closedError !== null };
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
    /** The rings we send on, one per queue of this session (replaced when the device reconnects). */
    protected senders: RoleHandle[],
    /** The rings we receive from, one per queue of this session. */
    protected receivers: RoleHandle[],
    private readonly sendFlags: FlagCodec,
    private readonly recvFlags: FlagCodec,
    protected readonly log: Logger,
    private readonly path: DataPath,
  ) {
    // The main thread's ends of the queues live as long as the device: they carry the
    // producer's and consumer's own positions across sessions.
    path.queues.forEach((qp, i) => {
      const w = new FrameWriter(new FrameQueue(qp.send), {
        minFrame: ETH_HLEN,
        maxFrame: () => this.maxFrameSize,
        wake: () => this.senders[i]?.kick(),
        closed: () => this.closedError,
      });
      const recvQueue = new FrameQueue(qp.recv);
      this.recvQueues.push(recvQueue);
      const r = new FrameReader(recvQueue, this.receiveSink, (m) => this.recvFlags.decode(m), () => this.receivers[i]?.kick());
      this.writers.push(w);
      this.readers.push(r);
      path.attach(i, w.onBell, r.onBell);
    });
    this.txCtl = path.queues.map((q) => new Control(q.sendControl));
    this.rxCtl = path.queues.map((q) => new Control(q.recvControl));
  }

  /** Queue pairs of the current session. */
  get queues(): number {
    return this.senders.length;
  }

  /** The writer of the queue `frame`'s flow goes out on. */
  private writerFor(frame: Uint8Array): FrameWriter {
    return this.writers[queueFor(frame, this.senders.length)]!;
  }

  /** Largest frame we may send now, Ethernet header included (it follows the current session). */
  abstract get maxFrameSize(): number;

  /** Send one frame (copied before the promise settles; the buffer may be reused at once). */
  write(frame: Uint8Array, opts?: WriteOptions): Promise<void> {
    if (!(frame instanceof Uint8Array)) return Promise.reject(new NetError("BAD_ARGUMENT", "write takes a Uint8Array"));
    const signal = signalOf(opts);
    if (signal === false) return Promise.reject(new NetError("BAD_ARGUMENT", "write: signal must be an AbortSignal"));
    if (opts?.gso != null) return this.sendGso(frame, opts, signal, "write");
    // The writer runs the fill before it returns (into the queue, or a copy): no closure per frame.
    this.pending = frame;
    try {
      return this.writerFor(frame).write(frame.byteLength, this.sendFlags.encode(opts), this.tap === null ? this.fillPending : this.tap.tx(this.fillPending, frame.byteLength), signal);
    } finally {
      this.pending = null;
    }
  }

  /**
   * Send one frame now if the send queue has room, without a promise; false when it is full
   * (nothing was queued: wait for `writable()` and offer it again). Throws what write() rejects with.
   */
  tryWrite(frame: Uint8Array, opts?: WriteOptions): boolean {
    if (!(frame instanceof Uint8Array)) throw new NetError("BAD_ARGUMENT", "tryWrite takes a Uint8Array");
    if (opts?.gso != null) return this.offerGso(frame, opts);
    this.pending = frame;
    try {
      return this.writerFor(frame).offer(frame.byteLength, this.sendFlags.encode(opts), this.tap === null ? this.fillPending : this.tap.tx(this.fillPending, frame.byteLength));
    } finally {
      this.pending = null;
    }
  }

  /**
   * Send as many of `frames` as the send queues take now, in order, without a promise: returns
   * how many were queued (the first n; offer the rest again after `writable()`). The batch
   * pays one hand-over to the worker and at most one wake-up per queue, not one per frame.
   * Every frame is checked before any is queued: a bad one throws (naming its index) and
   * nothing is sent. `opts` applies to every frame; GSO is per frame (use tryWrite or write).
   */
  tryWriteMany(frames: readonly Uint8Array[], opts?: WriteOptions): number {
    if (!Array.isArray(frames)) throw new NetError("BAD_ARGUMENT", "tryWriteMany takes an array of Uint8Array");
    if (opts?.gso != null) throw new NetError("BAD_ARGUMENT", "tryWriteMany: gso is per frame; use tryWrite or write for GSO frames");
    const first = this.writers[0]!;
    first.assertOpen();
    for (let i = 0; i < frames.length; i++) {
      const f = frames[i];
      if (!(f instanceof Uint8Array)) throw new NetError("BAD_ARGUMENT", `tryWriteMany: frames[${i}] is not a Uint8Array`);
      try {
        first.check(f.byteLength);
      } catch (e) {
        throw e instanceof NetError ? new NetError(e.code, `tryWriteMany: frames[${i}]: ${e.message}`) : e;
      }
    }
    const meta = this.sendFlags.encode(opts);
    let n = 0;
    if (this.tap !== null) {
      // Captures see each frame as it is queued: one at a time.
      while (n < frames.length && this.tryWrite(frames[n]!, opts)) n++;
      return n;
    }
    try {
      for (; n < frames.length; n++) {
        const f = frames[n]!;
        if (!this.writerFor(f).stage(f, meta)) break;
      }
    } finally {
      // A writer with nothing staged does nothing here.
      for (const w of this.writers) w.flush();
    }
    return n;
  }

  /**
   * Resolves when a frame of `len` bytes (default: the largest) would be queued at once,
   * whichever queue its flow takes (with several queues: when every queue has room).
   */
  async writable(len = this.maxFrameSize, opts?: { signal?: AbortSignal }): Promise<void> {
    const signal = signalOf(opts);
    if (signal === false) throw new NetError("BAD_ARGUMENT", "writable: signal must be an AbortSignal");
    const n = this.senders.length;
    if (n <= 1) return this.writers[0]!.writable(len, signal);
    await Promise.all(this.writers.slice(0, n).map((w) => w.writable(len, signal)));
  }

  /** Send one frame gathered from several buffers. */
  writev(parts: readonly Uint8Array[], opts?: WriteOptions): Promise<void> {
    if (!Array.isArray(parts) || parts.some((p) => !(p instanceof Uint8Array))) {
      return Promise.reject(new NetError("BAD_ARGUMENT", "writev takes an array of Uint8Array"));
    }
    const signal = signalOf(opts);
    if (signal === false) return Promise.reject(new NetError("BAD_ARGUMENT", "writev: signal must be an AbortSignal"));
    const len = parts.reduce((n, p) => n + p.byteLength, 0);
    if (opts?.gso != null) return this.sendGso(joined(parts, len), opts, signal, "writev");
    // The flow is in the headers: the first part that holds 64 bytes, or a joined copy.
    const head = parts[0] !== undefined && parts[0].byteLength >= Math.min(64, len) ? parts[0] : joined(parts, Math.min(64, len));
    return this.writerFor(head).write(
      len,
      this.sendFlags.encode(opts),
      this.tapTx((dst, off) => {
        for (const p of parts) {
          dst.set(p, off);
          off += p.byteLength;
        }
      }, len),
      signal,
    );
  }

  /**
   * Send a frame of exactly `len` bytes written in place by `fill`, which gets a zeroed view
   * valid only during the call (straight into the send queue, or a copy when it is full) and
   * runs before writeWith returns.
   */
  writeWith(len: number, fill: (buf: Uint8Array) => void, opts?: WriteOptions): Promise<void> {
    if (typeof fill !== "function") return Promise.reject(new NetError("BAD_ARGUMENT", "writeWith takes a fill callback"));
    const signal = signalOf(opts);
    if (signal === false) return Promise.reject(new NetError("BAD_ARGUMENT", "writeWith: signal must be an AbortSignal"));
    if (opts?.gso != null) {
      // A GSO frame is read whole (to plan it): filled into a buffer of its own.
      if (typeof len !== "number" || !Number.isInteger(len) || len < 0 || len > 0x10000 + ETH_HLEN) return Promise.reject(new NetError("BAD_ARGUMENT", `writeWith: a GSO frame's length must be 0..${0x10000 + ETH_HLEN}, got ${String(len)}`));
      const buf = new Uint8Array(len);
      try {
        fill(buf);
      } catch (e) {
        return Promise.reject(e);
      }
      return this.sendGso(buf, opts, signal, "writeWith");
    }
    const meta = this.sendFlags.encode(opts);
    if (this.senders.length <= 1) {
      return this.writers[0]!.write(
        len,
        meta,
        this.tapTx((dst, off) => {
          const view = dst.subarray(off, off + len);
          view.fill(0);
          fill(view);
        }, len),
        signal,
      );
    }
    // Several queues: the queue depends on what `fill` writes, so it writes into scratch first.
    try {
      this.writers[0]!.check(len);
      if (this.scratch.length < len) this.scratch = new Uint8Array(Math.max(len, 2048));
      const view = this.scratch.subarray(0, len);
      view.fill(0);
      fill(view);
      return this.writerFor(view).write(len, meta, this.tapTx((dst, off) => dst.set(view, off), len), signal);
    } catch (e) {
      return Promise.reject(e);
    }
  }

  /**
   * Capture this device's frames as pcap (see capture.ts): sent ones when a write queues them,
   * received ones when they are delivered. Resolves once the sink is open; on a closed device
   * it rejects with why it closed (nothing more would come).
   */
  capture(sink: CaptureSink, opts?: CaptureOptions): Promise<Capture> {
    if (this.closedError !== null) return Promise.reject(this.closedError);
    return startCapture(this.tapSlot, sink, opts);
  }

  /** Whether the peer takes GSO of `type` (1 tcpv4, 2 tcpv6) in this session; the ends say. */
  protected peerTakesGso(_type: number): boolean {
    return false;
  }

  /** Which ring we send on: a Netfront's TX (its flags), a Netback's RX. */
  protected abstract readonly sendDir: "tx" | "rx";

  /** The GSO plan for a write (see gso.ts); throws NetError naming what is wrong. */
  private gsoPlan(frame: Uint8Array, opts: WriteOptions, method: string): { gso: CheckedGso; plan: ReturnType<typeof planGso> } {
    const gso = checkGso(opts.gso, method)!;
    const plan = planGso(frame, gso, opts.csumBlank === true, { takes: this.peerTakesGso(gso.type), dir: this.sendDir, maxFrame: this.maxFrameSize }, method);
    return { gso, plan };
  }

  /** write/writev/writeWith with a `gso` option: one GSO packet, or its segments in order. */
  private sendGso(frame: Uint8Array, opts: WriteOptions, signal: AbortSignal | undefined, method: string): Promise<void> {
    let plan: ReturnType<typeof planGso>;
    try {
      plan = this.gsoPlan(frame, opts, method).plan;
    } catch (e) {
      return Promise.reject(e);
    }
    const w = this.writerFor(frame);
    if (plan.wire) {
      const len = frame.byteLength;
      const fill = plan.partial ? (dst: Uint8Array, off: number) => (dst.set(frame, off), makePartial(dst, off, len)) : (dst: Uint8Array, off: number) => dst.set(frame, off);
      return w.write(len, plan.meta, this.tapTx(fill, len), signal);
    }
    const meta = plan.meta;
    return Promise.all(plan.segments.map((s) => w.write(s.byteLength, meta, this.tapTx((dst, off) => dst.set(s, off), s.byteLength), signal))).then(() => {});
  }

  /**
   * tryWrite with a `gso` option. Whole: as tryWrite. In segments: true once the first is
   * queued, and the rest are queued behind it in order (waiting for room if they must: a
   * frame is taken whole or not at all).
   */
  private offerGso(frame: Uint8Array, opts: WriteOptions): boolean {
    const { plan } = this.gsoPlan(frame, opts, "tryWrite");
    const w = this.writerFor(frame);
    if (plan.wire) {
      const len = frame.byteLength;
      const fill = (dst: Uint8Array, off: number) => {
        dst.set(frame, off);
        if (plan.partial) makePartial(dst, off, len);
      };
      return w.offer(len, plan.meta, this.tapTx(fill, len));
    }
    const [first, ...rest] = plan.segments;
    if (!w.offer(first!.byteLength, plan.meta, this.tapTx((dst, off) => dst.set(first!, off), first!.byteLength))) return false;
    for (const s of rest) void w.write(s.byteLength, plan.meta, this.tapTx((dst, off) => dst.set(s, off), s.byteLength)).catch(() => {});
    return true;
  }

  /** The fill as given, or followed by a copy to the captures when any runs. */
  private tapTx(fill: (dst: Uint8Array, off: number) => void, len: number): (dst: Uint8Array, off: number) => void {
    return this.tap === null ? fill : this.tap.tx(fill, len);
  }

  /**
   * Call `cb` for every received frame. The frame is a view valid only during the call: copy
   * what you keep. The info is frozen and may be the same object for many frames (it never
   * changes, so it may be kept). Returns a function that removes the listener.
   */
  listen(cb: FrameListener): () => void {
    if (typeof cb !== "function") throw new NetError("BAD_ARGUMENT", "listen takes a callback");
    return this.subscribe(this.listeners, cb);
  }

  /**
   * Call `cb` with the received frames many at a time (up to 64 per call, in order): no view,
   * call or queue release per frame, for listeners that go through frames in a loop. Each
   * frame lies in `batch.bytes` at `batch.offset(i)`, `batch.size(i)` bytes long, or as a view
   * `batch.frame(i)`; its info is `batch.info(i)`. Valid only during the call (copy what you
   * keep). May be used beside `listen()`: both see every frame. Returns a function that
   * removes the listener.
   */
  listenBatch(cb: BatchListener): () => void {
    if (typeof cb !== "function") throw new NetError("BAD_ARGUMENT", "listenBatch takes a callback");
    return this.subscribe(this.batchListeners, cb);
  }

  /** Add a listener and receive; the function returned removes it (and pauses if nobody is left). */
  private subscribe<T>(set: ListenerSet<T>, cb: T): () => void {
    set.add(cb);
    this.startReaders();
    return () => {
      set.delete(cb);
      this.pauseIfUnheard();
    };
  }

  /**
   * Received frames, each a copy the caller owns. Ends when the device closes, or when
   * `signal` aborts (then it ends, as a `break` would). Buffering is bounded: an iterator
   * holds at most ITERATOR_HIGH_WATER frames, and while one is that far behind, receiving
   * pauses for the whole device (listeners too) and frames wait in the queue and the ring,
   * where the peer sees back-pressure: nothing is dropped. An iterator you stop reading must
   * therefore be ended (`break`, `return()`, or the signal).
   */
  frames(opts: { signal?: AbortSignal } = {}): AsyncIterableIterator<Uint8Array> {
    const signal = opts?.signal;
    if (signal !== undefined && !(signal instanceof AbortSignal)) throw new NetError("BAD_ARGUMENT", "frames: signal must be an AbortSignal");
    const onAbort = () => void buf.return();
    const buf = new FrameBuffer(
      () => this.resumeIfRoom(),
      () => {
        signal?.removeEventListener("abort", onAbort);
        this.iterators.delete(buf);
        this.pauseIfUnheard();
        this.resumeIfRoom();
      },
    );
    this.iterators.add(buf);
    if (this.closedError !== null || signal?.aborted) void buf.return();
    else signal?.addEventListener("abort", onAbort, { once: true });
    this.resumeIfRoom();
    return buf;
  }

  /** Receive again unless an iterator is still too far behind (or nobody listens). */
  private resumeIfRoom(): void {
    if (!this.heard()) return;
    for (const it of this.iterators) if (it.full) return;
    this.startReaders();
  }

  [Symbol.asyncIterator](): AsyncIterableIterator<Uint8Array> {
    return this.frames();
  }

  private startReaders(): void {
    for (const r of this.readers) r.start();
  }

  private pauseReaders(): void {
    for (const r of this.readers) r.pause();
  }

  /** With nobody listening, frames stay queued (and the peer waits) instead of being dropped. */
  private pauseIfUnheard(): void {
    if (!this.heard() && !this.receiveForClose) this.pauseReaders();
  }

  /** Whether anyone takes received frames: listeners of either kind, or iterators. */
  private heard(): boolean {
    return this.listeners.size > 0 || this.batchListeners.size > 0 || this.iterators.size > 0;
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
    if (this.tap !== null) this.tap.rx(frame);
    const info = this.recvFlags.decode(meta);
    const listeners = this.listeners.list;
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
      if (listeners.length === 0 && this.batchListeners.size === 0 && this.receiveForClose) this.rxLostAtClose++;
      return;
    }
    let full = false;
    for (const it of this.iterators) full = it.push(frame.slice()) || full;
    // An iterator that is behind holds receiving back (listeners too), rather than buffering
    // without bound: the frames wait in the queue and on the ring. (At close they are delivered
    // regardless: the iterators' buffers then only drain.)
    if (full && !this.receiveForClose) this.pauseReaders();
  }

  private deliverBatch(b: FrameBatch): void {
    const listeners = this.batchListeners.list;
    for (let i = 0; i < listeners.length; i++) {
      try {
        listeners[i]!(b);
      } catch (e) {
        this.listenerThrew(e);
      }
    }
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

  /** Per queue of the current session, what its rings carried (since the device began). */
  queueStats(): { txPackets: number; txBytes: number; rxPackets: number; rxBytes: number }[] {
    return this.senders.map((_, i) => ({
      txPackets: this.txCtl[i]!.get(Counter.packets),
      txBytes: this.txCtl[i]!.get(Counter.bytes),
      rxPackets: this.rxCtl[i]!.get(Counter.packets),
      rxBytes: this.rxCtl[i]!.get(Counter.bytes),
    }));
  }

  /**
   * `stats()` restarts from zero: a view (it subtracts a baseline). What an exporter reads,
   * `totals()`, is never touched by it.
   */
  resetStats(): void {
    this.baseline = this.rawStats();
  }

  /** The counters since the device began: they only go up, whatever resetStats does (for exporters). */
  totals(): NetStats {
    return this.rawStats();
  }

  /** How much waits now, over every queue: what an exporter reports as gauges. */
  depth(): { txUnsettledFrames: number; rxQueuedBytes: number } {
    let rx = 0;
    for (const q of this.recvQueues) rx += q.usedBytes();
    return { txUnsettledFrames: this.unsettled(), rxQueuedBytes: rx };
  }

  private rawStats(): NetStats {
    const s = (c: number) => sum(this.txCtl, c);
    const r = (c: number) => sum(this.rxCtl, c);
    return {
      rxPackets: r(Counter.packets),
      rxBytes: r(Counter.bytes),
      rxDrops: r(Counter.drops) + this.rxLostAtClose,
      rxErrors: r(Counter.errors),
      txPackets: s(Counter.packets),
      txBytes: s(Counter.bytes),
      txDrops: s(Counter.drops) + this.txLostAtClose,
      txErrors: s(Counter.errors),
      txSleeps: s(Counter.sleeps),
      rxSleeps: r(Counter.sleeps),
      txLost: s(Counter.lost) + this.txLostAtClose,
      rxLost: this.rxLostAtClose,
      listenerErrors: this.listenerErrorCount,
    };
  }

  /** Whether the device still moves frames. */
  get connected(): boolean {
    return this.closedError === null;
  }

  /** Frames written whose fate is not yet final (queued, or in flight to the peer), on every queue. */
  protected unsettled(): number {
    let n = 0;
    for (let i = 0; i < this.writers.length; i++) n += (this.writers[i]!.committed - this.txCtl[i]!.settled) >>> 0;
    return n;
  }

  /** Whether the peer lets us send now (the gate every sending ring of a session shares). */
  protected get sendGateOpen(): boolean {
    return this.senders.length > 0 && this.senders.every((s) => s.control.peerConnected);
  }

  /** Open or close the send gate of every sending ring, and wake them. */
  protected setSendGate(open: boolean): void {
    for (const s of this.senders) {
      s.control.setPeerConnected(open);
      if (open) s.kick();
    }
  }

  /**
   * Wait until every frame written has settled (the peer answered it, or it was given up),
   * for at most `ms`; returns how many had not. It stops early when a ring fails or the
   * peer is no longer connected: nothing more would leave then.
   */
  protected async flush(ms: number): Promise<number> {
    const deadline = performance.now() + ms;
    for (;;) {
      const left = this.unsettled();
      if (left === 0 || this.senders.some((s) => s.control.failure !== null) || !this.sendGateOpen || performance.now() >= deadline) return left;
      for (const s of this.senders) s.kick();
      await Bun.sleep(1);
    }
  }

  /** Stop every ring, taking in what the peer left on them first; the queues keep what they hold. */
  protected async stopWorkers(timeoutMs: number): Promise<void> {
    const opts = { drainMs: Math.min(timeoutMs, DRAIN_MS), timeoutMs };
    const failures = await Promise.all([...this.senders, ...this.receivers].map((h) => h.stop(opts)));
    for (const f of failures) if (f !== null) this.log.warn({ failure: f }, "ring worker stopped with an error");
  }

  /**
   * New rings on the same queues and counters (a reconnected device). When the new session
   * has fewer queues, what waits in the ones it does not use moves to those it does (each
   * frame to its flow's), in order: nothing is left behind in a queue no ring reads.
   */
  protected replaceWorkers(senders: RoleHandle[], receivers: RoleHandle[]): void {
    this.senders = senders;
    this.receivers = receivers;
    for (let i = senders.length; i < this.writers.length; i++) this.rehome(i);
  }

  private rehome(i: number): void {
    // No ring consumes this queue now: this thread takes its frames out itself.
    const q = new FrameQueue(this.path.queues[i]!.send);
    const w = this.writers[i]!;
    let moved = 0;
    for (let off = q.peek(); off >= 0; off = q.peek()) {
      const frame = q.data.slice(off, off + q.recordLength(off));
      const meta = q.recordMeta(off);
      q.release(off);
      moved++;
      void this.writerFor(frame).write(frame.byteLength, meta, (dst, at) => dst.set(frame, at)).catch(() => {});
    }
    // They settle where they went now: this queue's count starts even again.
    w.committed = this.txCtl[i]!.settled;
    if (moved > 0) this.log.info({ frames: moved, fromQueue: i, queues: this.senders.length }, "the new session has fewer queues: frames moved to the others");
  }

  /**
   * The device is closing for good: from now on, received frames go to whoever listens and
   * are counted as lost when nobody does, so a worker taking the last frames off the ring is
   * never held back by a full queue.
   */
  protected startClosingReceive(): void {
    this.receiveForClose = true;
    this.startReaders();
  }

  /**
   * Stop the reader after the workers stopped: deliver what was received before the stop,
   * end the iterators, count and report what nobody read and what was written but never
   * settled (`lostInFlight`: the last session's frames in flight, already counted). Idempotent.
   */
  protected async stopDataPath(reason: NetError, lostInFlight = 0): Promise<void> {
    this.closedError ??= reason;
    this.receiveForClose = true;
    for (const r of this.readers) {
      r.drainAll();
      r.stop();
    }
    this.tap?.endAll(); // the last frames are in: captures end, their files close
    for (const w of this.writers) w.closed();
    this.path.detach();
    for (const it of this.iterators) it.end();
    const unsent = this.unsettled();
    if (unsent > 0) {
      this.txLostAtClose += unsent;
      this.writers.forEach((w, i) => (w.committed = this.txCtl[i]!.settled));
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

function sum(ctls: Control[], counter: number): number {
  let n = 0;
  for (const c of ctls) n += c.get(counter);
  return n;
}

/** The signal in `opts`: undefined when none, false when it is not an AbortSignal. */
function signalOf(opts: { signal?: AbortSignal } | undefined): AbortSignal | undefined | false {
  const s = opts?.signal;
  return s === undefined ? undefined : s instanceof AbortSignal ? s : false;
}

/** The first `n` bytes of parts laid end to end. */
function joined(parts: readonly Uint8Array[], n: number): Uint8Array {
  const out = new Uint8Array(n);
  let at = 0;
  for (const p of parts) {
    if (at >= n) break;
    const take = Math.min(p.byteLength, n - at);
    out.set(p.subarray(0, take), at);
    at += take;
  }
  return out;
}

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

  /** At its high-water mark: receiving waits until it has caught up halfway. */
  get full(): boolean {
    return !this.ended && this.paused;
  }
  /** It reported full and has not caught up halfway yet. */
  private paused = false;

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
    if (this.frames.length - this.head >= ITERATOR_HIGH_WATER) this.paused = true;
    return this.paused;
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
      if (this.paused && this.frames.length - this.head < ITERATOR_HIGH_WATER / 2) {
        this.paused = false;
        this.resume();
      }
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
