/**
 * Packet capture on a device: every frame it sends (when a write queues it) and receives (when
 * it is delivered), written as a classic pcap file that tcpdump and Wireshark read.
 *
 * The data path never waits for a capture: a frame is copied into the capture's own buffer on
 * the main thread and written to the sink later, between event-loop turns. The buffer is
 * bounded; when the sink is slower than the traffic, frames that do not fit are not captured
 * and are counted (`stats().dropped`), while the device sends and delivers them as ever. With
 * no capture running, the device pays one null check per frame (its `tap` slot).
 */
import { open } from "node:fs/promises";
import { NetError } from "./errors.ts";
import { DEFAULT_SNAPLEN, encodePcapFileHeader, MAX_SNAPLEN, PCAP_RECORD_HEADER_SIZE, writePcapRecordHeader } from "./pcap.ts";

export type CaptureDirection = "tx" | "rx" | "both";

/**
 * Where capture bytes go. `write` may return a promise (awaited before the next write), or
 * false with an `once("drain")` method (a Node Writable: awaited until it drains); anything
 * else means it took the bytes. The bytes are the sink's to keep. A sink you pass stays open
 * when the capture stops; a file path is opened (truncated) and closed by the capture.
 */
export interface ByteSink {
  write(bytes: Uint8Array): unknown;
}
export type CaptureSink = string | ByteSink;

export interface CaptureOptions {
  /** Which frames: sent ("tx"), received ("rx"), or both (default). */
  direction?: CaptureDirection;
  /** Stop by itself after this many frames are captured. */
  count?: number;
  /** Stop when this aborts (e.g. AbortSignal.timeout(ms)). */
  signal?: AbortSignal;
  /** Bytes kept of each frame (default 65535, at most 262144); longer frames are cut, their length kept. */
  snaplen?: number;
  /** Bytes the capture may hold while the sink is busy (default 4 MiB); beyond, frames are dropped from the capture. */
  bufferBytes?: number;
}

export interface CaptureStats {
  /** Frames in the capture, sent and received. */
  frames: number;
  tx: number;
  rx: number;
  /** Bytes of those frames on the wire (before any cut at snaplen). */
  bytes: number;
  /** Frames left out because the buffer was full (the sink was too slow). The device still carried them. */
  dropped: number;
  /** Frames cut at snaplen. */
  truncated: number;
  /** Bytes handed to the sink so far, file header included. */
  written: number;
}

/** A running capture. `stop()` (or the end of an `await using` scope) flushes and ends it. */
export interface Capture extends AsyncDisposable {
  stats(): CaptureStats;
  /** Stop capturing, write out what is buffered, close a file we opened; resolves with the final counts. */
  stop(): Promise<CaptureStats>;
  /** Settles once the capture has ended (stop, count, signal, the device closed) and everything is written; rejects if the sink failed. */
  readonly done: Promise<CaptureStats>;
  readonly running: boolean;
}

/** The slot on a device where captures hook in; null when none runs. */
export interface TapSlot {
  get(): CaptureTap | null;
  set(tap: CaptureTap | null): void;
  /** The device has closed for good (no frame will come, and endAll has run). */
  closed(): boolean;
}

type Fill = (dst: Uint8Array, offset: number) => void;

const DIRECTIONS: readonly CaptureDirection[] = ["tx", "rx", "both"];
const DEFAULT_BUFFER_BYTES = 4 << 20;
/** Capture bytes are gathered in chunks of this size (or one frame's record, if larger). */
const CHUNK_BYTES = 64 << 10;

/** What a device calls on its data path while at least one capture runs. */
export class CaptureTap {
  private sessions: CaptureSession[] = [];

  /** The fill as given, then a copy of the bytes it wrote for each capture of sent frames. */
  tx(fill: Fill, len: number): Fill {
    return (dst, off) => {
      fill(dst, off);
      const micros = nowMicros();
      for (const s of this.sessions) if (s.wantsTx) s.record(dst, off, len, micros, true);
    };
  }

  /** A frame delivered to the device's receivers. */
  rx(frame: Uint8Array): void {
    const micros = nowMicros();
    for (const s of this.sessions) if (s.wantsRx) s.record(frame, 0, frame.byteLength, micros, false);
  }

  /** The device closed for good: every capture stops (and writes out what it holds). */
  endAll(): void {
    for (const s of this.sessions) void s.stop();
  }

  add(s: CaptureSession): void {
    this.sessions = [...this.sessions, s];
  }

  /** Take a capture off; true when none is left. */
  remove(s: CaptureSession): boolean {
    this.sessions = this.sessions.filter((x) => x !== s);
    return this.sessions.length === 0;
  }
}

/** Start a capture on the device whose tap slot this is (NetDevice.capture). */
export async function startCapture(slot: TapSlot, sink: CaptureSink, opts: CaptureOptions = {}): Promise<Capture> {
  const o = checkOptions(sink, opts);
  const out = typeof sink === "string" ? await openFileSink(sink) : wrapSink(sink);
  const onAbort = () => void session.stop();
  const session = new CaptureSession(o, out, () => {
    o.signal?.removeEventListener("abort", onAbort);
    const tap = slot.get();
    if (tap !== null && tap.remove(session)) slot.set(null);
  });
  // Aborted already, or the device closed while the file was opening: a capture of nothing.
  if (o.signal?.aborted || slot.closed()) {
    void session.stop();
    return session;
  }
  let tap = slot.get();
  if (tap === null) slot.set((tap = new CaptureTap()));
  tap.add(session);
  o.signal?.addEventListener("abort", onAbort, { once: true });
  return session;
}

interface Checked {
  wantsTx: boolean;
  wantsRx: boolean;
  count: number;
  signal: AbortSignal | undefined;
  snaplen: number;
  bufferBytes: number;
}

function checkOptions(sink: CaptureSink, opts: CaptureOptions): Checked {
  const bad = (m: string) => new NetError("BAD_ARGUMENT", `capture: ${m}`);
  if (typeof sink === "string") {
    if (sink === "") throw bad("the sink path is empty");
  } else if (sink === null || typeof sink !== "object" || typeof (sink as ByteSink).write !== "function") {
    throw bad("the sink must be a file path or an object with a write(bytes) method");
  }
  if (opts === null || typeof opts !== "object") throw bad("options must be an object");
  const direction = opts.direction ?? "both";
  if (!DIRECTIONS.includes(direction)) throw bad(`direction must be "tx", "rx" or "both", got ${JSON.stringify(direction)}`);
  const count = opts.count ?? Infinity;
  if (count !== Infinity && !(Number.isInteger(count) && count >= 1)) throw bad(`count must be a positive integer, got ${String(count)}`);
  if (opts.signal !== undefined && !(opts.signal instanceof AbortSignal)) throw bad("signal must be an AbortSignal");
  const snaplen = opts.snaplen ?? DEFAULT_SNAPLEN;
  if (!(Number.isInteger(snaplen) && snaplen >= 1 && snaplen <= MAX_SNAPLEN)) throw bad(`snaplen must be an integer in 1..${MAX_SNAPLEN}, got ${String(snaplen)}`);
  const bufferBytes = opts.bufferBytes ?? DEFAULT_BUFFER_BYTES;
  // The buffer must hold the file header and one whole record, or nothing could ever be captured.
  const least = 24 + PCAP_RECORD_HEADER_SIZE + snaplen;
  if (!(Number.isInteger(bufferBytes) && bufferBytes >= least)) throw bad(`bufferBytes must be an integer of at least ${least} (a file header and one record of snaplen bytes), got ${String(bufferBytes)}`);
  return { wantsTx: direction !== "rx", wantsRx: direction !== "tx", count, signal: opts.signal, snaplen, bufferBytes };
}

/** The sink as one async write of bytes, plus what to do at the end. */
interface Out {
  write(bytes: Uint8Array): Promise<void>;
  close(): Promise<void>;
  /** Whether the bytes may be reused once write resolved (our file: yes; a sink of yours keeps them). */
  reuses: boolean;
}

async function openFileSink(path: string): Promise<Out> {
  const fh = await open(path, "w");
  return {
    async write(bytes) {
      let at = 0;
      while (at < bytes.byteLength) at += (await fh.write(bytes, at, bytes.byteLength - at)).bytesWritten;
    },
    close: () => fh.close(),
    reuses: true,
  };
}

function wrapSink(sink: ByteSink): Out {
  return {
    async write(bytes) {
      const r = sink.write(bytes);
      if (r !== null && typeof r === "object" && typeof (r as PromiseLike<unknown>).then === "function") await r;
      else if (r === false && typeof (sink as { once?: unknown }).once === "function") {
        await new Promise<void>((resolve) => (sink as unknown as { once(e: string, f: () => void): void }).once("drain", resolve));
      }
    },
    close: async () => {},
    reuses: false,
  };
}

class CaptureSession implements Capture {
  readonly wantsTx: boolean;
  readonly wantsRx: boolean;
  private chunk: Uint8Array | null = null;
  private view: DataView | null = null;
  private used = 0;
  /** Filled chunks waiting for the sink, in order. */
  private queue: Uint8Array[] = [];
  /** Bytes held: queued, being written, and in the open chunk. */
  private held = 0;
  /** Chunks written out and free again (file sinks only): a fresh 64 KiB array per chunk costs more than the copies. */
  private spare: Uint8Array[] = [];
  private flushing: Promise<void> | null = null;
  private stopping: Promise<CaptureStats> | null = null;
  private failure: unknown = null;
  private readonly counts: CaptureStats = { frames: 0, tx: 0, rx: 0, bytes: 0, dropped: 0, truncated: 0, written: 0 };
  private settle!: { resolve(s: CaptureStats): void; reject(e: unknown): void };
  readonly done: Promise<CaptureStats>;

  constructor(
    private readonly o: Checked,
    private readonly out: Out,
    private readonly detach: () => void,
  ) {
    this.wantsTx = o.wantsTx;
    this.wantsRx = o.wantsRx;
    this.done = new Promise((resolve, reject) => (this.settle = { resolve, reject }));
    // Whoever never looks at `done` must not get an unhandled rejection from a failed sink.
    this.done.catch(() => {});
    const header = encodePcapFileHeader(o.snaplen);
    this.queue.push(header);
    this.held = header.byteLength;
    this.scheduleFlush();
  }

  get running(): boolean {
    return this.stopping === null;
  }

  stats(): CaptureStats {
    return { ...this.counts };
  }

  /** Copy one frame into the buffer (the data path: no I/O, no await). */
  record(src: Uint8Array, off: number, len: number, micros: number, tx: boolean): void {
    if (this.stopping !== null) return;
    const c = this.counts;
    const incl = len < this.o.snaplen ? len : this.o.snaplen;
    const need = PCAP_RECORD_HEADER_SIZE + incl;
    if (this.held + need > this.o.bufferBytes) {
      c.dropped++;
      return;
    }
    if (this.chunk === null || this.chunk.byteLength - this.used < need) {
      this.seal();
      this.chunk = (need <= CHUNK_BYTES ? this.spare.pop() : undefined) ?? new Uint8Array(Math.max(CHUNK_BYTES, need));
      this.view = new DataView(this.chunk.buffer);
    }
    writePcapRecordHeader(this.view!, this.used, micros, incl, len);
    this.chunk.set(src.subarray(off, off + incl), this.used + PCAP_RECORD_HEADER_SIZE);
    this.used += need;
    this.held += need;
    c.frames++;
    if (tx) c.tx++;
    else c.rx++;
    c.bytes += len;
    if (incl < len) c.truncated++;
    if (c.frames >= this.o.count) void this.stop();
    else this.scheduleFlush();
  }

  stop(): Promise<CaptureStats> {
    if (this.stopping === null) {
      this.stopping = this.finish();
      // Stopped from inside (count, signal, a broken sink): the failure is for `done` and stop() to report.
      this.stopping.catch(() => {});
    }
    return this.stopping;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.stop().catch(() => {});
  }

  private async finish(): Promise<CaptureStats> {
    this.detach();
    try {
      await this.flush();
      if (this.failure !== null) throw this.failure;
    } catch (e) {
      await this.out.close().catch(() => {});
      this.settle.reject(e);
      throw e;
    }
    await this.out.close().then(
      () => this.settle.resolve(this.stats()),
      (e) => this.settle.reject(e),
    );
    return this.done;
  }

  /** The open chunk's records join the queue; the next record starts a new chunk (the sink may keep this one). */
  private seal(): void {
    if (this.chunk !== null && this.used > 0) this.queue.push(this.chunk.subarray(0, this.used));
    this.chunk = null;
    this.view = null;
    this.used = 0;
  }

  /** Write out once per event-loop turn, so a burst of frames becomes one write. */
  private scheduleFlush(): void {
    if (this.flushing !== null) return;
    this.flushing = new Promise<void>((r) => setImmediate(r)).then(() => this.drain());
  }

  private flush(): Promise<void> {
    return (this.flushing ?? Promise.resolve()).then(() => this.drain());
  }

  private async drain(): Promise<void> {
    try {
      for (;;) {
        this.seal();
        const next = this.queue.shift();
        if (next === undefined) return;
        if (this.failure === null) {
          try {
            await this.out.write(next);
            this.counts.written += next.byteLength;
            if (this.out.reuses && next.buffer.byteLength === CHUNK_BYTES && this.spare.length < MAX_SPARE) this.spare.push(new Uint8Array(next.buffer));
          } catch (e) {
            // The sink broke: nothing more can be written; stop capturing, report it at the end.
            this.failure = e;
            void this.stop();
          }
        }
        this.held -= next.byteLength;
      }
    } finally {
      this.flushing = null;
      if (this.held > 0 && this.stopping === null) this.scheduleFlush();
    }
  }
}

/** Free chunks kept for reuse (1 MiB): what a file sink needs to keep up; more would only hold memory. */
const MAX_SPARE = 16;

const TIME_ORIGIN = performance.timeOrigin;

/** Microseconds since the epoch, finer than Date.now(). */
function nowMicros(): number {
  return Math.round((TIME_ORIGIN + performance.now()) * 1000);
}
